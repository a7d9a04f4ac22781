//! The `tftpd` command line, option for option compatible with tftpd-hpa 5.2's `in.tftpd`.
//!
//! [`parse`] turns `argv` into a [`Config`] the way `in.tftpd` (Debian 12, `tftp-hpa 5.2`)
//! does, quirks included, so that an existing `/etc/default/tftpd-hpa`, inetd line or script
//! keeps working unchanged:
//!
//! * **GNU `getopt_long` semantics.** Short string `46cspvVlLa:B:u:U:r:t:T:R:m:P:`, the long
//!   names of `in.tftpd` plus `--verbosity`; combined flags (`-vvv`, `-sc`), attached
//!   arguments (`-a:69`, `-B1468`), `--name=value` and `--name value`, a required argument is
//!   taken from the next word even when it starts with `-` (`-a -s` binds to `-s`), operands may
//!   come before options (permutation), `--` ends the options, and unambiguous abbreviations of
//!   long names are accepted (`--sec`), with the same ambiguity rule (`--verb` matches both
//!   `--verbose` and `--verbosity`).
//! * **Bad options do not stop the server.** An unknown option, a missing argument or an
//!   argument given to a flag makes `in.tftpd` log `Unknown option: '%c'` (with `getopt`'s
//!   `optopt`, a NUL character for long-only options) and carry on; [`Config::warnings`] carries
//!   that text and [`Config::diagnostics`] what `getopt` printed on stderr.
//! * **Options are processed in order.** `-V` prints the version when it is reached, so
//!   `-V -B 100` prints the version but `-B 100 -V` is a usage error, as in `in.tftpd`.
//! * **Numbers are read like C does.** `-B`/`-T` use `strtoul` (leading blanks and `+` allowed),
//!   `-U` is octal `strtoul` (an empty value is umask 0), `-R` is `sscanf("%u:%u")` (trailing
//!   text ignored), `-t`/`--verbosity` use `atoi` (garbage reads as 0), the port after `-a` is
//!   `strtoul(…, 0)` (so `0x45` is 69) truncated to 16 bits.
//! * **Validation messages and exit codes are `in.tftpd`'s**: every [`UsageError`] carries the
//!   exact text `in.tftpd` logs and the `sysexits.h` code it exits with ([`EX_USAGE`],
//!   [`EX_NOINPUT`]).
//!
//! # Checks left to the caller
//!
//! `in.tftpd` performs, after option parsing and in this order: `chdir` into the `-s`
//! directory (`"%s: %m"`, exit 66), `getpwnam(user)` (`"no user %s: %m"`, exit 67), reading
//! the `-m` file (`"Cannot open map file: %s: %m"`, exit 66), then, in standalone mode,
//! resolving and binding the `-a` address (`"cannot resolve local IPv4 bind address: %s, %s"`,
//! exit 66; [`BindAddress::resolve_port`] gives `"cannot resolve local bind port: %s"`,
//! exit 66; `"cannot bind to local IPv4 socket: %m"`, exit 71). Those touch the system and are
//! the caller's; [`parse`] does the rest. The purely syntactic `-a` checks (`Numeric IPv6
//! addresses need to be enclosed in []`, `Address %s is not in address family AF_INET6`) are
//! done here, so they are reported before the caller's checks rather than after them.
//!
//! # Extensions
//!
//! Long-only options that `in.tftpd` does not have (an abbreviation is matched against
//! `in.tftpd`'s own names first, so `--s` still means `--secure` and `--m` `--map-file`):
//!
//! * `--defaults-file FILE` reads a Debian `/etc/default/tftpd-hpa` and behaves as if the init
//!   script's `--listen --user $TFTP_USERNAME --address $TFTP_ADDRESS $TFTP_OPTIONS
//!   $TFTP_DIRECTORY` had been given before the other arguments (see [`DefaultsArgs::parse`]).
//! * `--max-window N` caps the RFC 7440 windowsize we grant (default 64, 1..=65535).
//! * `--syslog` logs to syslog even in the foreground.
//! * `-h`, `--help` print help (for `in.tftpd`, `-h` is an unknown option).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `sysexits.h` `EX_USAGE`: bad command line (`in.tftpd`'s exit code for every option error).
pub const EX_USAGE: i32 = 64;
/// `sysexits.h` `EX_NOINPUT`: an input file or directory could not be opened or resolved.
pub const EX_NOINPUT: i32 = 66;

/// Largest TFTP block size, RFC 2348 (`MAX_SEGSIZE` in tftp-hpa): the default of `-B`.
pub const MAX_SEGSIZE: u16 = 65464;
/// Default for `--max-window`: the largest RFC 7440 windowsize granted to a client.
pub const DEFAULT_MAX_WINDOW: u16 = 64;
/// Default user transfers run as (`-u`), as in `in.tftpd` (Debian's defaults file says `tftp`).
pub const DEFAULT_USER: &str = "nobody";
/// Default `-t`: seconds an inetd-mode server waits for another request before exiting.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(900);
/// Default `-T`: initial retransmission timeout (1 s).
pub const DEFAULT_RETRANSMIT: Duration = Duration::from_micros(1_000_000);
/// UDP port used when `-a` gives none and `/etc/services` has no `tftp` entry.
pub const TFTP_PORT: u16 = 69;
/// Largest `--defaults-file` we read (a real one is a few hundred bytes).
pub const MAX_DEFAULTS_FILE_SIZE: u64 = 1 << 20;

/// Which address families to listen on (`-4`, `-6`; the last one given wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Family {
    /// Both IPv4 and IPv6 (no `-4`/`-6`).
    #[default]
    Any,
    /// `-4`, or an IPv4 literal in `-a` in standalone mode.
    V4Only,
    /// `-6` (sets `IPV6_V6ONLY`), or a bracketed IPv6 literal in `-a` in standalone mode.
    V6Only,
}

/// How the server runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RunMode {
    /// Neither `-l` nor `-L`: the request socket is stdin, as started by inetd.
    #[default]
    Inetd,
    /// `-l`: standalone, detaches from the terminal (`daemon(3)`).
    Daemon,
    /// `-L`: standalone in the foreground; wins over `-l` whatever the order.
    Foreground,
}

impl RunMode {
    /// True for [`RunMode::Daemon`] and [`RunMode::Foreground`] (`in.tftpd`'s `standalone`).
    pub fn is_standalone(self) -> bool {
        !matches!(self, RunMode::Inetd)
    }
}

/// The host part of `-a`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BindHost {
    /// A numeric address: an IPv4 address in any form `inet_aton` accepts (`127.1`,
    /// `0x7f.0.0.1`) or a bracketed IPv6 address (`[::1]`).
    Ip(IpAddr),
    /// Anything else, to be resolved with `getaddrinfo` by the caller (`in.tftpd` does so once
    /// per socket family and takes the first answer).
    Name(String),
}

/// The port part of `-a`.
///
/// Numbers are decided here; service names are kept for [`PortSpec::resolve`], which looks
/// them up in `/etc/services` when the sockets are set up, as `in.tftpd` does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// A port number, read with C `strtoul(…, 0)` (`69`, `0x45`, `0105`) and truncated to
    /// 16 bits like `htons` does (`70000` is 4464, as with `in.tftpd`).
    Number(u16),
    /// A service name (or any text that is not a non-zero number, e.g. `0`).
    Service(String),
}

impl PortSpec {
    /// The port: a number as is; a service name through `/etc/services` (protocol `udp`),
    /// with `tftp` falling back to 69 when the file lacks it. Unknown names fail with
    /// `cannot resolve local bind port: NAME` and [`EX_NOINPUT`], as in `in.tftpd`.
    pub fn resolve(&self) -> Result<u16, UsageError> {
        match self {
            PortSpec::Number(n) => Ok(*n),
            PortSpec::Service(_) => {
                let services = std::fs::read("/etc/services").unwrap_or_default();
                self.resolve_with_services(&String::from_utf8_lossy(&services))
            }
        }
    }

    /// [`PortSpec::resolve`] with the text of an `/etc/services` file given by the caller.
    pub fn resolve_with_services(&self, services: &str) -> Result<u16, UsageError> {
        match self {
            PortSpec::Number(n) => Ok(*n),
            PortSpec::Service(name) => match lookup_service(services, name, "udp") {
                Some(port) => Ok(port),
                None if name == "tftp" => Ok(TFTP_PORT),
                None => Err(UsageError::new(
                    format!("cannot resolve local bind port: {name}"),
                    EX_NOINPUT,
                )),
            },
        }
    }
}

/// Finds `name` (or an alias) for `proto` in the text of an `/etc/services` file.
fn lookup_service(services: &str, name: &str, proto: &str) -> Option<u16> {
    services.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let primary = fields.next()?;
        let (port, p) = fields.next()?.split_once('/')?;
        if p != proto || !(primary == name || fields.any(|alias| alias == name)) {
            return None;
        }
        port.parse().ok()
    })
}

/// `-a [address][:port]`, already split the way `in.tftpd` splits it.
///
/// Both parts `None` means all addresses, port `tftp`. Only filled in standalone mode:
/// `in.tftpd` ignores `-a` when started by inetd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindAddress {
    /// The address to bind; `None` for the wildcard address(es).
    pub host: Option<BindHost>,
    /// The port; `None` for the `tftp` service (69).
    pub port: Option<PortSpec>,
}

impl BindAddress {
    /// The port to bind: [`PortSpec::resolve`], or the `tftp` service when none was given.
    pub fn resolve_port(&self) -> Result<u16, UsageError> {
        match &self.port {
            Some(port) => port.resolve(),
            None => PortSpec::Service("tftp".to_owned()).resolve(),
        }
    }
}

pub use crate::proto::options::TftpOption;

/// The options `-r` can refuse, in `in.tftpd`'s table order. `windowsize` is not among them:
/// in.tftpd does not know it, so `-r windowsize` is "Unknown option" (exit 64) here too.
pub const REFUSABLE: [TftpOption; 6] = [
    TftpOption::Blksize,
    TftpOption::Blksize2,
    TftpOption::Tsize,
    TftpOption::Timeout,
    TftpOption::Utimeout,
    TftpOption::Rollover,
];

/// Everything the command line (and `--defaults-file`) configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `-4` / `-6`; also narrowed by an IP literal in `-a` in standalone mode.
    pub family: Family,
    /// Inetd (default), `-l` or `-L`.
    pub mode: RunMode,
    /// `-a`, split; default when not standalone.
    pub address: BindAddress,
    /// `-c`: a WRQ may create new files.
    pub create: bool,
    /// `-s`: chroot into the single directory in [`Config::dirs`].
    pub secure: bool,
    /// `-u`: user transfers run as (default `nobody`). Not looked up here.
    pub user: String,
    /// `-U`: umask for created files, as given (octal), masked to `0o777` like `umask(2)`.
    /// See [`Config::effective_umask`].
    pub umask: Option<u32>,
    /// `-p`: only normal Unix permissions apply (no o+r / o+w checks).
    pub permissive: bool,
    /// `-P`: PID file (standalone only; dropped with a warning otherwise).
    pub pidfile: Option<PathBuf>,
    /// `-t` (inetd mode only): exit after this long without a request. `atoi` semantics;
    /// negative values read as 0.
    pub idle_timeout: Duration,
    /// `-T`: initial retransmission timeout, 10 ms ..= 255 s, default 1 s.
    pub retransmit: Duration,
    /// `-m`: filename remapping rules.
    pub map_file: Option<PathBuf>,
    /// `-v` (each adds one) and `--verbosity N` (sets), processed in order, floored at 0.
    pub verbosity: u32,
    /// `-r`: options never accepted, in the order given.
    pub refuse: Vec<TftpOption>,
    /// `-B`: largest blksize granted, 512 ..= 65464.
    pub max_blksize: u16,
    /// `-R from:to`: local ports for transfers (`to` < 65535).
    pub port_range: Option<(u16, u16)>,
    /// Operands: the `-s` root, or the allowed path prefixes without `-s`.
    pub dirs: Vec<PathBuf>,
    /// `--max-window`: largest RFC 7440 windowsize granted.
    pub max_window: u16,
    /// `--syslog`: log to syslog even in the foreground.
    pub force_syslog: bool,
    /// Messages `in.tftpd` would log and carry on after, in order: `--defaults-file`
    /// warnings, then `Unknown option: 'x'` (logged at `err` by `in.tftpd`, the character may
    /// be NUL), then `not in standalone mode, ignoring pid file` (logged at `warning`).
    pub warnings: Vec<String>,
    /// What `getopt_long` printed on stderr for bad options, e.g.
    /// `/usr/sbin/in.tftpd: invalid option -- 'x'` (prefixed with the full `argv[0]`).
    pub diagnostics: Vec<String>,
    /// `--defaults-file` that was read, if any.
    pub defaults_file: Option<PathBuf>,
}

impl Default for Config {
    /// `in.tftpd`'s defaults (inetd mode, user `nobody`, `-t 900`, `-T 1000000`, `-B 65464`).
    fn default() -> Self {
        Config {
            family: Family::Any,
            mode: RunMode::Inetd,
            address: BindAddress::default(),
            create: false,
            secure: false,
            user: DEFAULT_USER.to_owned(),
            umask: None,
            permissive: false,
            pidfile: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            retransmit: DEFAULT_RETRANSMIT,
            map_file: None,
            verbosity: 0,
            refuse: Vec::new(),
            max_blksize: MAX_SEGSIZE,
            port_range: None,
            dirs: Vec::new(),
            max_window: DEFAULT_MAX_WINDOW,
            force_syslog: false,
            warnings: Vec::new(),
            diagnostics: Vec::new(),
            defaults_file: None,
        }
    }
}

impl Config {
    /// The umask `in.tftpd` sets: `-U` if given, else 0 unless `-p` is given, in which case the
    /// inherited umask is kept (`None`).
    pub fn effective_umask(&self) -> Option<u32> {
        match (self.umask, self.permissive) {
            (Some(mask), _) => Some(mask),
            (None, false) => Some(0),
            (None, true) => None,
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // made once at startup; `Run(Config)` is the API
pub enum Parsed {
    /// Run the server.
    Run(Config),
    /// `-V`: print this line (no trailing newline) on stdout and exit 0.
    PrintVersion(String),
    /// `-h`/`--help`: print this text on stdout and exit 0.
    PrintHelp(String),
}

/// A command line `in.tftpd` would refuse: log `message` (at `err`) and exit with `exit_code`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    /// The text `in.tftpd` logs, e.g. `Bad timeout value: 5`.
    pub message: String,
    /// The process exit code, e.g. [`EX_USAGE`].
    pub exit_code: i32,
}

impl UsageError {
    fn new(message: impl Into<String>, exit_code: i32) -> Self {
        UsageError {
            message: message.into(),
            exit_code,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Self::new(message, EX_USAGE)
    }
}

/// The `-V` line.
pub fn version_line() -> String {
    format!(
        "tftpd (airlift) {}, with remap, compatible with tftp-hpa 5.2",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses a command line; `args[0]` is the program name.
///
/// Never panics. Reads a file only for `--defaults-file`.
pub fn parse<I, T>(args: I) -> Result<Parsed, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // The kernel hands C programs NUL-terminated strings: a NUL ends the argument.
    let mut args = args.into_iter().map(|a| c_string(a.into().into_vec()));
    let argv0 = args.next().unwrap_or_else(|| b"tftpd".to_vec());
    let argv0 = lossy(&argv0);
    let cmdline: Vec<Vec<u8>> = args.collect();

    // Find --defaults-file on the real command line first; its words go in front.
    let mut defaults_paths = scan(&argv0, &cmdline, 0)
        .events
        .into_iter()
        .filter_map(|event| match event {
            Event::Opt {
                opt: Opt::DefaultsFile,
                value,
                ..
            } => Some(value.unwrap_or_default()),
            _ => None,
        });
    let defaults_path = defaults_paths.next();
    if defaults_paths.next().is_some() {
        return Err(UsageError::usage("Multiple --defaults-file options"));
    }

    let mut config = Config::default();
    let mut argv = Vec::new();
    if let Some(path) = defaults_path {
        let path = PathBuf::from(OsString::from_vec(path));
        let text = read_defaults_file(&path)?;
        let defaults = DefaultsArgs::parse(&text, &path.display().to_string());
        argv.extend(defaults.args.into_iter().map(|a| c_string(a.into_vec())));
        config.warnings = defaults.warnings;
        config.defaults_file = Some(path);
    }
    let from_file = argv.len();
    argv.extend(cmdline);
    interpret(config, scan(&argv0, &argv, from_file))
}

/// The help text (`-h`, `--help`), rendered by clap from the option table.
pub fn help_text() -> String {
    command().render_help().to_string()
}

// ---------------------------------------------------------------------------------------------
// The option table.

/// Option identities (the `val` of `getopt_long`'s table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Ipv4,
    Ipv6,
    Create,
    Secure,
    Permissive,
    Verbose,
    Verbosity,
    Version,
    Listen,
    Foreground,
    Address,
    Blocksize,
    User,
    Umask,
    Refuse,
    Timeout,
    Retransmit,
    PortRange,
    MapFile,
    Pidfile,
    DefaultsFile,
    MaxWindow,
    Syslog,
    Help,
}

/// One option: its letter, long name, argument and help.
struct OptSpec {
    opt: Opt,
    short: Option<u8>,
    long: &'static str,
    /// `Some(value name)` if the option takes an argument.
    value: Option<&'static str>,
    /// `in.tftpd`'s own option (matched first when abbreviated) or one of ours.
    hpa: bool,
    help: &'static str,
}

const fn spec(
    opt: Opt,
    short: Option<u8>,
    long: &'static str,
    value: Option<&'static str>,
    hpa: bool,
    help: &'static str,
) -> OptSpec {
    OptSpec {
        opt,
        short,
        long,
        value,
        hpa,
        help,
    }
}

/// `in.tftpd`'s `long_options` in its order (which decides the order `getopt_long` lists
/// ambiguous candidates in), then our extensions.
#[rustfmt::skip]
const OPTIONS: &[OptSpec] = &[
    spec(Opt::Ipv4,         Some(b'4'), "ipv4",          None,                  true,  "Listen on IPv4 only"),
    spec(Opt::Ipv6,         Some(b'6'), "ipv6",          None,                  true,  "Listen on IPv6 only"),
    spec(Opt::Create,       Some(b'c'), "create",        None,                  true,  "Allow WRQ to create new files"),
    spec(Opt::Secure,       Some(b's'), "secure",        None,                  true,  "Chroot into the (single) DIRECTORY"),
    spec(Opt::Permissive,   Some(b'p'), "permissive",    None,                  true,  "Skip the world-readable/-writable checks"),
    spec(Opt::Verbose,      Some(b'v'), "verbose",       None,                  true,  "Log more (repeatable)"),
    spec(Opt::Verbosity,    None,       "verbosity",     Some("N"),             true,  "Set the verbosity level"),
    spec(Opt::Version,      Some(b'V'), "version",       None,                  true,  "Print the version and exit"),
    spec(Opt::Listen,       Some(b'l'), "listen",        None,                  true,  "Run standalone and detach"),
    spec(Opt::Foreground,   Some(b'L'), "foreground",    None,                  true,  "Run standalone in the foreground"),
    spec(Opt::Address,      Some(b'a'), "address",       Some("[ADDR][:PORT]"), true,  "Address and port to listen on (IPv6 literals in [])"),
    spec(Opt::Blocksize,    Some(b'B'), "blocksize",     Some("SIZE"),          true,  "Largest blksize granted (512-65464)"),
    spec(Opt::User,         Some(b'u'), "user",          Some("USER"),          true,  "Run transfers as USER [nobody]"),
    spec(Opt::Umask,        Some(b'U'), "umask",         Some("UMASK"),         true,  "Umask for created files (octal)"),
    spec(Opt::Refuse,       Some(b'r'), "refuse",        Some("OPTION"),        true,  "Never accept this TFTP option (blksize, tsize, timeout, …)"),
    spec(Opt::Timeout,      Some(b't'), "timeout",       Some("SECONDS"),       true,  "Inetd mode: exit after this idle time [900]"),
    spec(Opt::Retransmit,   Some(b'T'), "retransmit",    Some("MICROSECONDS"),  true,  "Initial retransmit timeout (10000-255000000) [1000000]"),
    spec(Opt::PortRange,    Some(b'R'), "port-range",    Some("FROM:TO"),       true,  "Local ports for transfers"),
    spec(Opt::MapFile,      Some(b'm'), "map-file",      Some("FILE"),          true,  "Filename remapping rules"),
    spec(Opt::Pidfile,      Some(b'P'), "pidfile",       Some("FILE"),          true,  "Write the PID here (standalone)"),
    spec(Opt::DefaultsFile, None,       "defaults-file", Some("FILE"),          false, "Read a Debian /etc/default/tftpd-hpa first, as its init script would"),
    spec(Opt::MaxWindow,    None,       "max-window",    Some("N"),             false, "Largest RFC 7440 windowsize granted (1-65535) [64]"),
    spec(Opt::Syslog,       None,       "syslog",        None,                  false, "Log to syslog even in the foreground"),
    spec(Opt::Help,         Some(b'h'), "help",          None,                  false, "Print this help and exit"),
];

/// The clap view of [`OPTIONS`], used to render `--help`.
///
/// Parsing itself is done by [`scan`], which reproduces GNU `getopt_long` exactly (clap
/// rejects unknown options instead of skipping them, and reports neither `optopt` nor the
/// argument order `in.tftpd` depends on).
fn command() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let mut cmd = Command::new("tftpd")
        .about("TFTP server, a drop-in replacement for tftpd-hpa's in.tftpd")
        .override_usage("tftpd [OPTION]... [DIRECTORY]...")
        .disable_help_flag(true)
        .disable_version_flag(true);
    for spec in OPTIONS {
        let mut arg = Arg::new(spec.long)
            .long(spec.long)
            .help(spec.help)
            .help_heading(if spec.hpa {
                "Options (as in.tftpd)"
            } else {
                "Options (airlift)"
            });
        if let Some(short) = spec.short {
            arg = arg.short(char::from(short));
        }
        arg = match spec.value {
            Some(name) => arg.value_name(name).action(ArgAction::Append),
            None if spec.opt == Opt::Verbose => arg.action(ArgAction::Count),
            None => arg.action(ArgAction::SetTrue),
        };
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        Arg::new("directory")
            .value_name("DIRECTORY")
            .num_args(0..)
            .action(ArgAction::Append)
            .help("With -s: the root to chroot into; without: allowed path prefixes"),
    )
}

// ---------------------------------------------------------------------------------------------
// getopt_long.

/// One result of `getopt_long`, in command-line order.
#[derive(Debug)]
enum Event {
    /// A recognised option with its argument, if it takes one.
    Opt {
        opt: Opt,
        value: Option<Vec<u8>>,
        /// The option word came from `--defaults-file`.
        from_file: bool,
    },
    /// `getopt_long` returned `'?'`: `optopt` and what it printed on stderr.
    Bad { optopt: u8, diagnostic: String },
}

/// `getopt_long`'s results: options in order, and the operands.
#[derive(Debug)]
struct Scanned {
    events: Vec<Event>,
    operands: Vec<Vec<u8>>,
}

enum LongMatch {
    Found(&'static OptSpec),
    Ambiguous(Vec<&'static OptSpec>),
    Unknown,
}

/// Long-name lookup: exact match, else a unique prefix among `in.tftpd`'s names, else a unique
/// prefix among ours. Two or more candidates are ambiguous (no two options share a `val`).
fn lookup_long(name: &[u8]) -> LongMatch {
    if let Some(spec) = OPTIONS.iter().find(|s| s.long.as_bytes() == name) {
        return LongMatch::Found(spec);
    }
    for hpa in [true, false] {
        let candidates: Vec<&'static OptSpec> = OPTIONS
            .iter()
            .filter(|s| s.hpa == hpa && s.long.as_bytes().starts_with(name))
            .collect();
        match candidates.len() {
            0 => continue,
            1 => return LongMatch::Found(candidates[0]),
            _ => return LongMatch::Ambiguous(candidates),
        }
    }
    LongMatch::Unknown
}

/// `getopt_long`'s `optopt` for an option: its letter, or 0 for a long-only option (whose
/// `val` is 256 or more and prints as NUL through `'%c'`).
fn optopt(spec: &OptSpec) -> u8 {
    spec.short.unwrap_or(0)
}

/// GNU `getopt_long` over `args` (without `argv[0]`), permuting operands to the end; the first
/// `from_file` words came from `--defaults-file`.
fn scan(argv0: &str, args: &[Vec<u8>], from_file: usize) -> Scanned {
    let mut events = Vec::new();
    let mut operands = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let in_file = i < from_file;
        i += 1;
        if arg.as_slice() == b"--" {
            operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix(b"--") {
            let (name, inline) = match body.iter().position(|&b| b == b'=') {
                Some(eq) => (&body[..eq], Some(body[eq + 1..].to_vec())),
                None => (body, None),
            };
            match lookup_long(name) {
                LongMatch::Unknown => events.push(Event::Bad {
                    optopt: 0,
                    diagnostic: format!("{argv0}: unrecognized option '--{}'", lossy(body)),
                }),
                LongMatch::Ambiguous(candidates) => {
                    let mut diagnostic = format!(
                        "{argv0}: option '--{}' is ambiguous; possibilities:",
                        lossy(body)
                    );
                    for candidate in candidates {
                        diagnostic.push_str(&format!(" '--{}'", candidate.long));
                    }
                    events.push(Event::Bad {
                        optopt: 0,
                        diagnostic,
                    });
                }
                LongMatch::Found(spec) => match (spec.value, inline) {
                    (None, None) => events.push(Event::Opt {
                        opt: spec.opt,
                        value: None,
                        from_file: in_file,
                    }),
                    (None, Some(_)) => events.push(Event::Bad {
                        optopt: optopt(spec),
                        diagnostic: format!(
                            "{argv0}: option '--{}' doesn't allow an argument",
                            spec.long
                        ),
                    }),
                    (Some(_), Some(value)) => events.push(Event::Opt {
                        opt: spec.opt,
                        value: Some(value),
                        from_file: in_file,
                    }),
                    (Some(_), None) => match args.get(i) {
                        Some(value) => {
                            i += 1;
                            events.push(Event::Opt {
                                opt: spec.opt,
                                value: Some(value.clone()),
                                from_file: in_file,
                            });
                        }
                        None => events.push(Event::Bad {
                            optopt: optopt(spec),
                            diagnostic: format!(
                                "{argv0}: option '--{}' requires an argument",
                                spec.long
                            ),
                        }),
                    },
                },
            }
            continue;
        }
        if arg.len() < 2 || arg[0] != b'-' {
            operands.push(arg.clone());
            continue;
        }
        // A cluster of short options: "-sc", "-vvv", "-a:69", "-sa:69".
        let mut j = 1;
        while j < arg.len() {
            let letter = arg[j];
            j += 1;
            let Some(spec) = OPTIONS.iter().find(|s| s.short == Some(letter)) else {
                events.push(Event::Bad {
                    optopt: letter,
                    diagnostic: format!("{argv0}: invalid option -- '{}'", char::from(letter)),
                });
                continue;
            };
            if spec.value.is_none() {
                events.push(Event::Opt {
                    opt: spec.opt,
                    value: None,
                    from_file: in_file,
                });
                continue;
            }
            let value = if j < arg.len() {
                Some(arg[j..].to_vec())
            } else if let Some(next) = args.get(i) {
                i += 1;
                Some(next.clone())
            } else {
                None
            };
            match value {
                Some(value) => events.push(Event::Opt {
                    opt: spec.opt,
                    value: Some(value),
                    from_file: in_file,
                }),
                None => events.push(Event::Bad {
                    optopt: letter,
                    diagnostic: format!(
                        "{argv0}: option requires an argument -- '{}'",
                        char::from(letter)
                    ),
                }),
            }
            break;
        }
    }
    Scanned { events, operands }
}

// ---------------------------------------------------------------------------------------------
// in.tftpd's option switch.

/// `in.tftpd`'s `-r` table: a refused option's name is blanked, so refusing it again fails.
struct RefuseTable {
    names: [&'static str; 6],
}

impl RefuseTable {
    fn new() -> Self {
        RefuseTable {
            names: REFUSABLE.map(TftpOption::name),
        }
    }

    /// The `strcasecmp` loop of `-r`: the first entry whose current name matches.
    fn refuse(&mut self, value: &[u8]) -> Option<TftpOption> {
        let index = self
            .names
            .iter()
            .position(|name| name.as_bytes().eq_ignore_ascii_case(value))?;
        self.names[index] = "";
        REFUSABLE.get(index).copied()
    }
}

/// Applies the options in order, then the post-parse checks, like `in.tftpd`'s `main`.
fn interpret(mut config: Config, scanned: Scanned) -> Result<Parsed, UsageError> {
    let mut standalone = false;
    let mut foreground = false;
    let mut address: Option<Vec<u8>> = None;
    let mut verbosity: i64 = 0;
    let mut refuse = RefuseTable::new();

    for event in scanned.events {
        let (opt, value, from_file) = match event {
            Event::Bad { optopt, diagnostic } => {
                config.diagnostics.push(diagnostic);
                config
                    .warnings
                    .push(format!("Unknown option: '{}'", char::from(optopt)));
                continue;
            }
            Event::Opt {
                opt,
                value,
                from_file,
            } => (opt, value.unwrap_or_default(), from_file),
        };
        let text = lossy(&value);
        match opt {
            Opt::Ipv4 => config.family = Family::V4Only,
            Opt::Ipv6 => config.family = Family::V6Only,
            Opt::Create => config.create = true,
            Opt::Secure => config.secure = true,
            Opt::Permissive => config.permissive = true,
            Opt::Listen => standalone = true,
            Opt::Foreground => {
                standalone = true;
                foreground = true;
            }
            Opt::Address => address = Some(value),
            Opt::Timeout => {
                let seconds = c_atoi(&value);
                config.idle_timeout = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
            }
            Opt::Blocksize => {
                let (number, end) = c_strtoul(&value, 10);
                // in.tftpd stores strtoul's result in an unsigned int before checking it.
                let number = number as u32;
                match u16::try_from(number) {
                    Ok(size) if (512..=MAX_SEGSIZE).contains(&size) && end == value.len() => {
                        config.max_blksize = size;
                    }
                    _ => {
                        return Err(UsageError::usage(format!(
                            "Bad maximum blocksize value (range 512-{MAX_SEGSIZE}): {text}"
                        )));
                    }
                }
            }
            Opt::Retransmit => {
                let (micros, end) = c_strtoul(&value, 10);
                if !(10_000..=255_000_000).contains(&micros) || end != value.len() {
                    return Err(UsageError::usage(format!("Bad timeout value: {text}")));
                }
                config.retransmit = Duration::from_micros(micros);
            }
            Opt::PortRange => match scanf_port_range(&value) {
                Some((from, to)) if from <= to && to < 65535 => {
                    // to < 65535 and from <= to, so both fit.
                    config.port_range = Some((from as u16, to as u16));
                }
                _ => return Err(UsageError::usage(format!("Bad port range: {text}"))),
            },
            Opt::User => config.user = text,
            Opt::Umask => {
                let (mask, end) = c_strtoul(&value, 8);
                if end != value.len() {
                    return Err(UsageError::usage(format!("Invalid umask: {text}")));
                }
                config.umask = Some((mask as u32) & 0o777);
            }
            Opt::Refuse => match refuse.refuse(&value) {
                Some(option) => {
                    if !config.refuse.contains(&option) {
                        config.refuse.push(option);
                    }
                }
                None => return Err(UsageError::usage(format!("Unknown option: {text}"))),
            },
            Opt::MapFile => {
                if config.map_file.is_some() {
                    return Err(UsageError::usage("Multiple -m options"));
                }
                config.map_file = Some(PathBuf::from(OsString::from_vec(value)));
            }
            Opt::Verbose => verbosity = verbosity.saturating_add(1),
            Opt::Verbosity => verbosity = i64::from(c_atoi(&value)),
            Opt::Version => return Ok(Parsed::PrintVersion(version_line())),
            Opt::Pidfile => config.pidfile = Some(PathBuf::from(OsString::from_vec(value))),
            Opt::DefaultsFile => {
                if from_file {
                    config.warnings.push(
                        "--defaults-file inside a defaults file is not supported; ignored"
                            .to_owned(),
                    );
                }
            }
            Opt::MaxWindow => {
                let (window, end) = c_strtoul(&value, 10);
                match u16::try_from(window) {
                    Ok(window) if window >= 1 && end == value.len() => config.max_window = window,
                    _ => {
                        return Err(UsageError::usage(format!(
                            "Bad maximum window size (range 1-65535): {text}"
                        )));
                    }
                }
            }
            Opt::Syslog => config.force_syslog = true,
            Opt::Help => return Ok(Parsed::PrintHelp(help_text())),
        }
    }

    config.verbosity = u32::try_from(verbosity.max(0)).unwrap_or(u32::MAX);
    config.mode = match (standalone, foreground) {
        (_, true) => RunMode::Foreground,
        (true, false) => RunMode::Daemon,
        (false, false) => RunMode::Inetd,
    };
    config.dirs = scanned
        .operands
        .into_iter()
        .map(|dir| PathBuf::from(OsString::from_vec(dir)))
        .collect();

    if config.secure {
        match config.dirs.len() {
            0 => return Err(UsageError::usage("no -s directory")),
            1 => {}
            _ => return Err(UsageError::usage("too many -s directories")),
        }
    }
    if config.pidfile.is_some() && !standalone {
        config
            .warnings
            .push("not in standalone mode, ignoring pid file".to_owned());
        config.pidfile = None;
    }
    if standalone && let Some(address) = address {
        config.address = parse_address(&address, &mut config.family)?;
    }
    Ok(Parsed::Run(config))
}

/// `in.tftpd`'s handling of `-a` in standalone mode (`split_port`, the family checks, the
/// port's number-or-service decision).
fn parse_address(raw: &[u8], family: &mut Family) -> Result<BindAddress, UsageError> {
    #[derive(PartialEq)]
    enum Kind {
        V4,
        V6,
        Unspec,
    }
    const NEED_BRACKETS: &str = "Numeric IPv6 addresses need to be enclosed in []";

    let (kind, host, port) = if is_numeric_ipv6(raw) {
        let Some(inner) = raw.strip_prefix(b"[") else {
            return Err(UsageError::usage(NEED_BRACKETS));
        };
        let Some(close) = inner.iter().rposition(|&b| b == b']') else {
            return Err(UsageError::usage(NEED_BRACKETS));
        };
        let rest = &inner[close + 1..];
        let port = rest
            .iter()
            .rposition(|&b| b == b':')
            .map(|colon| &rest[colon + 1..]);
        (Kind::V6, &inner[..close], port)
    } else {
        let (host, port) = match raw.iter().rposition(|&b| b == b':') {
            Some(colon) => (&raw[..colon], Some(&raw[colon + 1..])),
            None => (raw, None),
        };
        let kind = if inet_aton(host).is_some() {
            Kind::V4
        } else {
            Kind::Unspec
        };
        (kind, host, port)
    };

    match kind {
        Kind::V4 if *family == Family::V6Only => {
            return Err(UsageError::usage(format!(
                "Address {} is not in address family AF_INET6",
                lossy(host)
            )));
        }
        Kind::V6 if *family == Family::V4Only => {
            return Err(UsageError::usage(format!(
                "Address {} is not in address family AF_INET",
                lossy(host)
            )));
        }
        Kind::V4 => *family = Family::V4Only,
        Kind::V6 => *family = Family::V6Only,
        Kind::Unspec => {}
    }

    let host = if host.is_empty() {
        None
    } else {
        let text = lossy(host);
        let ip = match kind {
            Kind::V4 => inet_aton_exact(host).map(IpAddr::V4),
            Kind::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            Kind::Unspec => None,
        };
        Some(ip.map_or(BindHost::Name(text), BindHost::Ip))
    };
    let port = match port {
        None | Some(b"") => None,
        Some(port) => {
            let (number, end) = c_strtoul(port, 0);
            Some(if number != 0 && end == port.len() {
                // htons() keeps the low 16 bits.
                PortSpec::Number(number as u16)
            } else {
                PortSpec::Service(lossy(port))
            })
        }
    };
    Ok(BindAddress { host, port })
}

/// tftp-hpa's `is_numeric_ipv6`: 2..=7 colons, hex digits, an IPv4 tail with exactly 3 dots,
/// brackets either balanced or absent. Does not validate the address.
fn is_numeric_ipv6(text: &[u8]) -> bool {
    let (bracket, body) = match text.strip_prefix(b"[") {
        Some(body) => (true, body),
        None => (false, text),
    };
    let mut colons = 0;
    let mut dots = 0;
    let mut closed = false;
    for &c in body {
        match c {
            b']' => {
                closed = true;
                break;
            }
            b':' => colons += 1,
            b'.' => dots += 1,
            c if c.is_ascii_hexdigit() => {}
            _ => return false,
        }
    }
    if !(2..=7).contains(&colons) {
        return false;
    }
    if dots != 0 && (dots != 3 || colons > 6) {
        return false;
    }
    bracket == closed
}

/// glibc `inet_aton`: 1 to 4 parts in C notation (`0x` hex, `0` octal), the last part filling
/// the remaining bytes; trailing text is allowed after a blank.
fn inet_aton(text: &[u8]) -> Option<Ipv4Addr> {
    inet_aton_end(text).map(|(addr, _)| addr)
}

/// `inet_aton` without trailing text: what `getaddrinfo` accepts as a numeric IPv4 address.
fn inet_aton_exact(text: &[u8]) -> Option<Ipv4Addr> {
    match inet_aton_end(text) {
        Some((addr, end)) if end == text.len() => Some(addr),
        _ => None,
    }
}

fn inet_aton_end(text: &[u8]) -> Option<(Ipv4Addr, usize)> {
    const MAX: [u64; 4] = [0xffff_ffff, 0x00ff_ffff, 0xffff, 0xff];
    let mut parts: Vec<u8> = Vec::with_capacity(3);
    let mut pos = 0;
    loop {
        if !text.get(pos).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (value, used) = c_strtoul(&text[pos..], 0);
        if value > 0xffff_ffff {
            return None;
        }
        pos += used;
        if text.get(pos) == Some(&b'.') {
            if parts.len() > 2 || value > 0xff {
                return None;
            }
            parts.push(value as u8);
            pos += 1;
        } else {
            match text.get(pos) {
                None => {}
                Some(&c) if c.is_ascii_whitespace() || c == 0x0b => {}
                Some(_) => return None,
            }
            if value > MAX[parts.len()] {
                return None;
            }
            let mut word = value as u32;
            for (index, part) in parts.iter().enumerate() {
                word |= u32::from(*part) << (24 - 8 * index);
            }
            return Some((Ipv4Addr::from(word), pos));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// C number parsing.

/// C `isspace` in the C locale.
fn c_isspace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C `strtoul` on a 64-bit system: returns the value and the index `endptr` points at (0 when
/// no digits were read). Leading blanks and a sign are accepted (a `-` negates, wrapping);
/// overflow gives `ULONG_MAX`; base 0 detects `0x` and `0`.
fn c_strtoul(text: &[u8], base: u32) -> (u64, usize) {
    let mut pos = 0;
    while text.get(pos).copied().is_some_and(c_isspace) {
        pos += 1;
    }
    let negative = match text.get(pos) {
        Some(b'-') => {
            pos += 1;
            true
        }
        Some(b'+') => {
            pos += 1;
            false
        }
        _ => false,
    };
    let mut base = base;
    let has_hex_prefix = text.get(pos) == Some(&b'0')
        && matches!(text.get(pos + 1), Some(b'x' | b'X'))
        && text.get(pos + 2).is_some_and(u8::is_ascii_hexdigit);
    if (base == 0 || base == 16) && has_hex_prefix {
        pos += 2;
        base = 16;
    } else if base == 0 {
        base = if text.get(pos) == Some(&b'0') { 8 } else { 10 };
    }
    let start = pos;
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(digit) = text.get(pos).and_then(|&c| char::from(c).to_digit(base)) {
        match value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(digit)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        pos += 1;
    }
    if pos == start {
        return (0, 0);
    }
    if overflow {
        (u64::MAX, pos)
    } else if negative {
        (value.wrapping_neg(), pos)
    } else {
        (value, pos)
    }
}

/// C `atoi` (`(int)strtol(text, NULL, 10)`): garbage reads as 0, out-of-range values clamp to
/// `long` and are then truncated to `int`.
fn c_atoi(text: &[u8]) -> i32 {
    let mut pos = 0;
    while text.get(pos).copied().is_some_and(c_isspace) {
        pos += 1;
    }
    let negative = match text.get(pos) {
        Some(b'-') => {
            pos += 1;
            true
        }
        Some(b'+') => {
            pos += 1;
            false
        }
        _ => false,
    };
    let mut magnitude: u64 = 0;
    while let Some(digit) = text.get(pos).filter(|c| c.is_ascii_digit()) {
        magnitude = magnitude
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'));
        pos += 1;
    }
    let long: i64 = if negative {
        if magnitude > i64::MAX as u64 {
            i64::MIN
        } else {
            -(magnitude as i64)
        }
    } else {
        i64::try_from(magnitude).unwrap_or(i64::MAX)
    };
    long as i32
}

/// `sscanf(text, "%u:%u", &from, &to) == 2`: each `%u` skips blanks, takes an optional sign
/// and at least one digit (values truncated to 32 bits); anything after the second number is
/// ignored.
fn scanf_port_range(text: &[u8]) -> Option<(u32, u32)> {
    fn scanf_u(text: &[u8]) -> Option<(u32, usize)> {
        let mut pos = 0;
        while text.get(pos).copied().is_some_and(c_isspace) {
            pos += 1;
        }
        let digits_at = pos + usize::from(matches!(text.get(pos), Some(b'+' | b'-')));
        if !text.get(digits_at).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (value, used) = c_strtoul(&text[pos..], 10);
        Some((value as u32, pos + used))
    }
    let (from, used) = scanf_u(text)?;
    let rest = text.get(used..)?.strip_prefix(b":")?;
    let (to, _) = scanf_u(rest)?;
    Some((from, to))
}

// ---------------------------------------------------------------------------------------------
// --defaults-file.

/// Reads a defaults file, at most [`MAX_DEFAULTS_FILE_SIZE`] bytes; failures are
/// [`EX_NOINPUT`].
fn read_defaults_file(path: &Path) -> Result<Vec<u8>, UsageError> {
    let fail = |reason: String| {
        UsageError::new(
            format!("Cannot open defaults file: {}: {reason}", path.display()),
            EX_NOINPUT,
        )
    };
    let file = std::fs::File::open(path).map_err(|e| fail(os_error_text(&e)))?;
    let mut text = Vec::new();
    file.take(MAX_DEFAULTS_FILE_SIZE + 1)
        .read_to_end(&mut text)
        .map_err(|e| fail(os_error_text(&e)))?;
    if text.len() as u64 > MAX_DEFAULTS_FILE_SIZE {
        return Err(fail(format!("larger than {MAX_DEFAULTS_FILE_SIZE} bytes")));
    }
    Ok(text)
}

/// The `strerror` text of an I/O error (without Rust's ` (os error N)` suffix).
fn os_error_text(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// The variables of a Debian `/etc/default/tftpd-hpa` that its init script uses.
const DEFAULTS_VARIABLES: [&str; 4] = [
    "TFTP_USERNAME",
    "TFTP_DIRECTORY",
    "TFTP_ADDRESS",
    "TFTP_OPTIONS",
];

/// The arguments a Debian `/etc/default/tftpd-hpa` stands for, and what was wrong with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultsArgs {
    /// `--listen [--user U…] [--address A…] OPTIONS… DIRECTORY…`.
    pub args: Vec<OsString>,
    /// `FILE:LINE: …` notes about lines that were skipped.
    pub warnings: Vec<String>,
}

impl DefaultsArgs {
    /// Evaluates the file the way the init script's `. /etc/default/tftpd-hpa` would, for the
    /// simple shell it contains, and builds its command line
    /// `--listen --user $TFTP_USERNAME --address $TFTP_ADDRESS $TFTP_OPTIONS $TFTP_DIRECTORY`.
    ///
    /// * Understood: `NAME=value`, several per line, optionally after `export`; values
    ///   unquoted, `'…'`, `"…"` (with `\"`, `\\`, `\$`, `` \` `` escapes) or a mix, across
    ///   lines; `$NAME` and `${NAME}` of variables set earlier in the file (unset: empty);
    ///   backslash-newline; `#` comments; `;` between statements; a UTF-8 BOM and CRLF line
    ///   ends.
    /// * Any other line (a command, `$(…)`, `${NAME:-…}`, an unterminated quote) is skipped
    ///   with a warning, and so is an assignment to an unknown `TFTP_*` variable.
    /// * The values are split on blanks like the script's unquoted expansions (no globbing).
    ///   An unset or empty `TFTP_USERNAME` / `TFTP_ADDRESS` drops `--user` / `--address`
    ///   as well (the init script would pass a dangling `--user`, which then swallows the next
    ///   word).
    ///
    /// `origin` names the file in warnings.
    pub fn parse(text: &[u8], origin: &str) -> DefaultsArgs {
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        let mut shell = ShellReader {
            text,
            pos: 0,
            line: 1,
        };
        let mut vars: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut warnings = Vec::new();

        loop {
            shell.skip_blanks();
            match shell.peek() {
                None => break,
                Some(b'\n' | b';') => {
                    shell.advance();
                    continue;
                }
                Some(b'#') => {
                    shell.skip_line();
                    continue;
                }
                Some(_) => {}
            }
            let line = shell.line;
            let line_start = shell.line_start();
            match shell.statement(&vars) {
                Ok(assignments) => {
                    for (name, value) in assignments {
                        let known = DEFAULTS_VARIABLES.iter().any(|v| v.as_bytes() == name);
                        if !known && name.starts_with(b"TFTP_") {
                            warnings.push(format!(
                                "{origin}:{line}: unknown variable {} ignored",
                                lossy(&name)
                            ));
                        }
                        vars.insert(name, value);
                    }
                }
                Err(reason) => {
                    warnings.push(format!(
                        "{origin}:{line}: {reason}, line ignored: {}",
                        shell.excerpt(line_start)
                    ));
                    shell.skip_line();
                }
            }
        }

        let words = |name: &str| -> Vec<OsString> {
            vars.get(name.as_bytes())
                .map(|value| {
                    value
                        .split(|&b| matches!(b, b' ' | b'\t' | b'\n'))
                        .filter(|word| !word.is_empty())
                        .map(|word| OsString::from_vec(word.to_vec()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut args = vec![OsString::from("--listen")];
        for (flag, variable) in [("--user", "TFTP_USERNAME"), ("--address", "TFTP_ADDRESS")] {
            let values = words(variable);
            if !values.is_empty() {
                args.push(OsString::from(flag));
                args.extend(values);
            }
        }
        args.extend(words("TFTP_OPTIONS"));
        args.extend(words("TFTP_DIRECTORY"));
        DefaultsArgs { args, warnings }
    }
}

/// `NAME=value`, as bytes.
type Assignment = (Vec<u8>, Vec<u8>);

/// A tiny reader for the assignments found in `/etc/default` files.
struct ShellReader<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

impl ShellReader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn advance(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Skips to just before the next newline.
    fn skip_line(&mut self) {
        while !matches!(self.peek(), None | Some(b'\n')) {
            self.pos += 1;
        }
    }

    fn line_start(&self) -> usize {
        self.text[..self.pos]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1)
    }

    /// The physical line starting at `start`, shortened for a warning.
    fn excerpt(&self, start: usize) -> String {
        let rest = self.text.get(start..).unwrap_or_default();
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = lossy(line);
        let line = line.trim();
        if line.chars().count() > 80 {
            format!("{}…", line.chars().take(80).collect::<String>())
        } else {
            line.to_owned()
        }
    }

    /// `NAME=` at the current position: returns NAME and moves past the `=`.
    fn assignment_name(&mut self) -> Option<Vec<u8>> {
        let rest = &self.text[self.pos..];
        let first = *rest.first()?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let len = rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(rest.len());
        if rest.get(len) != Some(&b'=') {
            return None;
        }
        self.pos += len + 1;
        Some(rest[..len].to_vec())
    }

    /// One simple command up to a newline, `;`, comment or the end: the assignments it makes,
    /// or why it is not a plain list of assignments.
    fn statement(&mut self, vars: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Vec<Assignment>, String> {
        let mut assignments = Vec::new();
        let mut first = true;
        let mut export = false;
        loop {
            self.skip_blanks();
            match self.peek() {
                None | Some(b'\n' | b';') => return Ok(assignments),
                Some(b'#') => {
                    self.skip_line();
                    return Ok(assignments);
                }
                Some(_) => {}
            }
            if let Some(name) = self.assignment_name() {
                let value = self.word(vars)?;
                assignments.push((name, value));
            } else {
                let start = self.pos;
                let word = self.word(vars)?;
                let bare = &self.text[start..self.pos];
                let is_name = !word.is_empty()
                    && word.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
                    && !word[0].is_ascii_digit();
                if first && bare == b"export" {
                    export = true;
                } else if !(export && is_name && bare == word.as_slice()) {
                    return Err("not a variable assignment".to_owned());
                }
            }
            first = false;
        }
    }

    /// One shell word (quotes removed, `$NAME` expanded), up to an unquoted blank, newline or
    /// `;`.
    fn word(&mut self, vars: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b' ' | b'\t' | b'\r' | b'\n' | b';') => return Ok(out),
                Some(b'&' | b'|' | b'<' | b'>' | b'(' | b')') => {
                    return Err("shell operators are not supported".to_owned());
                }
                Some(b'`') => return Err("command substitution is not supported".to_owned()),
                Some(b'\'') => {
                    self.advance();
                    loop {
                        match self.advance() {
                            None => return Err("unterminated quote".to_owned()),
                            Some(b'\'') => break,
                            Some(c) => out.push(c),
                        }
                    }
                }
                Some(b'"') => {
                    self.advance();
                    loop {
                        match self.advance() {
                            None => return Err("unterminated quote".to_owned()),
                            Some(b'"') => break,
                            Some(b'\\') => match self.peek() {
                                Some(b'\n') => {
                                    self.advance();
                                }
                                Some(c @ (b'$' | b'`' | b'"' | b'\\')) => {
                                    self.advance();
                                    out.push(c);
                                }
                                _ => out.push(b'\\'),
                            },
                            Some(b'$') => self.expand(vars, &mut out)?,
                            Some(b'`') => {
                                return Err("command substitution is not supported".to_owned());
                            }
                            Some(c) => out.push(c),
                        }
                    }
                }
                Some(b'\\') => {
                    self.advance();
                    match self.advance() {
                        None | Some(b'\n') => {}
                        Some(c) => out.push(c),
                    }
                }
                Some(b'$') => {
                    self.advance();
                    self.expand(vars, &mut out)?;
                }
                Some(c) => {
                    self.advance();
                    out.push(c);
                }
            }
        }
    }

    /// After a `$`: `NAME` or `{NAME}`; a `$` before anything else is kept literally.
    fn expand(
        &mut self,
        vars: &HashMap<Vec<u8>, Vec<u8>>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let braced = self.peek() == Some(b'{');
        if braced {
            self.advance();
        }
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {}
            Some(b'(') => return Err("command substitution is not supported".to_owned()),
            Some(c) if braced || c.is_ascii_digit() || b"@*#?$!-".contains(&c) => {
                return Err("this parameter expansion is not supported".to_owned());
            }
            _ => {
                out.push(b'$');
                return Ok(());
            }
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        let name = &self.text[start..self.pos];
        if braced && self.advance() != Some(b'}') {
            return Err("this parameter expansion is not supported".to_owned());
        }
        if let Some(value) = vars.get(name) {
            out.extend_from_slice(value);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Truncates at the first NUL, as a C program sees its arguments.
fn c_string(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    bytes
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stdout)]

    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    const PROG: &str = "/usr/sbin/in.tftpd";

    fn parse_args(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(std::iter::once(PROG).chain(args.iter().copied()))
    }

    fn run(args: &[&str]) -> Config {
        match parse_args(args) {
            Ok(Parsed::Run(config)) => config,
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    fn fail(args: &[&str]) -> UsageError {
        match parse_args(args) {
            Err(error) => error,
            other => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    fn usage(args: &[&str], message: &str) {
        assert_eq!(
            fail(args),
            UsageError {
                message: message.to_owned(),
                exit_code: EX_USAGE
            },
            "{args:?}"
        );
    }

    fn path(p: &str) -> PathBuf {
        PathBuf::from(p)
    }

    #[test]
    fn no_arguments_gives_in_tftpd_defaults() {
        let config = run(&[]);
        assert_eq!(config, Config::default());
        assert_eq!(config.mode, RunMode::Inetd);
        assert_eq!(config.user, "nobody");
        assert_eq!(config.idle_timeout, Duration::from_secs(900));
        assert_eq!(config.retransmit, Duration::from_secs(1));
        assert_eq!(config.max_blksize, 65464);
        assert_eq!(config.max_window, 64);
        assert_eq!(config.family, Family::Any);
        assert!(config.warnings.is_empty() && config.diagnostics.is_empty());
        assert_eq!(config.effective_umask(), Some(0));
    }

    #[test]
    fn empty_argv_does_not_panic() {
        let none: [&str; 0] = [];
        assert_eq!(parse(none).unwrap(), Parsed::Run(Config::default()));
    }

    #[test]
    fn every_flag_short_and_long() {
        type Check = fn(&Config) -> bool;
        let cases: [(&str, &str, Check); 8] = [
            ("-4", "--ipv4", |c| c.family == Family::V4Only),
            ("-6", "--ipv6", |c| c.family == Family::V6Only),
            ("-c", "--create", |c| c.create),
            ("-p", "--permissive", |c| c.permissive),
            ("-v", "--verbose", |c| c.verbosity == 1),
            ("-l", "--listen", |c| c.mode == RunMode::Daemon),
            ("-L", "--foreground", |c| c.mode == RunMode::Foreground),
            ("-s", "--secure", |c| c.secure && c.dirs == [path("/srv")]),
        ];
        for (short, long, check) in cases {
            let from_short = run(&[short, "/srv"]);
            assert!(check(&from_short), "{short}");
            assert_eq!(from_short, run(&[long, "/srv"]), "{short} vs {long}");
            // Nothing else changed.
            let mut rest = from_short.clone();
            rest.family = Family::Any;
            rest.create = false;
            rest.permissive = false;
            rest.verbosity = 0;
            rest.mode = RunMode::Inetd;
            rest.secure = false;
            assert_eq!(
                rest,
                Config {
                    dirs: vec![path("/srv")],
                    ..Config::default()
                }
            );
        }
        assert!(run(&["--syslog"]).force_syslog);
        assert!(!run(&[]).force_syslog);
    }

    #[test]
    fn every_option_with_an_argument_short_and_long() {
        type Check = fn(&Config) -> bool;
        let cases: [(&str, &str, &str, Check); 10] = [
            ("-u", "--user", "tftp", |c| c.user == "tftp"),
            ("-U", "--umask", "022", |c| c.umask == Some(0o22)),
            ("-r", "--refuse", "tsize", |c| {
                c.refuse == [TftpOption::Tsize]
            }),
            ("-t", "--timeout", "30", |c| {
                c.idle_timeout == Duration::from_secs(30)
            }),
            ("-T", "--retransmit", "250000", |c| {
                c.retransmit == Duration::from_millis(250)
            }),
            ("-B", "--blocksize", "1468", |c| c.max_blksize == 1468),
            ("-R", "--port-range", "40000:40010", |c| {
                c.port_range == Some((40000, 40010))
            }),
            ("-m", "--map-file", "/etc/tftp.remap", |c| {
                c.map_file == Some(path("/etc/tftp.remap"))
            }),
            ("-P", "--pidfile", "/run/tftpd.pid", |c| {
                c.pidfile == Some(path("/run/tftpd.pid"))
            }),
            ("-a", "--address", "127.0.0.1:16969", |c| {
                c.address.host == Some(BindHost::Ip(IpAddr::from([127, 0, 0, 1])))
                    && c.address.port == Some(PortSpec::Number(16969))
            }),
        ];
        for (short, long, value, check) in cases {
            let attached_long = format!("{long}={value}");
            let attached_short = format!("{short}{value}");
            let forms = [
                run(&["-L", short, value]),
                run(&["-L", &attached_short]),
                run(&["-L", long, value]),
                run(&["-L", &attached_long]),
            ];
            for config in &forms {
                assert!(check(config), "{short}/{long} {value}: {config:?}");
                assert!(config.warnings.is_empty(), "{:?}", config.warnings);
                assert_eq!(config, &forms[0]);
            }
        }
        let config = run(&["--verbosity", "3"]);
        assert_eq!(config.verbosity, 3);
        assert_eq!(run(&["--verbosity=4"]).verbosity, 4);
        assert_eq!(run(&["--max-window", "8"]).max_window, 8);
        assert_eq!(run(&["--max-window=1"]).max_window, 1);
    }

    #[test]
    fn combined_short_flags() {
        assert_eq!(run(&["-vvv"]).verbosity, 3);
        let config = run(&["-sc", "/srv/tftp"]);
        assert!(config.secure && config.create);
        let config = run(&["-Lvsc4", "/srv/tftp"]);
        assert!(config.secure && config.create);
        assert_eq!(config.verbosity, 1);
        assert_eq!(config.family, Family::V4Only);
        assert_eq!(config.mode, RunMode::Foreground);
        // An option taking an argument ends the cluster and takes the rest of it.
        let config = run(&["-Lsa:16969", "/srv"]);
        assert!(config.secure);
        assert_eq!(config.address.port, Some(PortSpec::Number(16969)));
        assert_eq!(config.address.host, None);
        // ...or the next word when it is last in the cluster.
        let config = run(&["-Lsu", "tftp", "/srv"]);
        assert_eq!(config.user, "tftp");
        assert_eq!(run(&["-vuv"]).user, "v");
    }

    #[test]
    fn attached_and_separate_arguments() {
        let config = run(&["-L", "-a:69"]);
        assert_eq!(
            config.address,
            BindAddress {
                host: None,
                port: Some(PortSpec::Number(69))
            }
        );
        assert_eq!(run(&["-L", "--address=:69"]).address, config.address);
        assert_eq!(run(&["-L", "--address", ":69"]).address, config.address);
        assert_eq!(run(&["-B1024"]).max_blksize, 1024);
        // A required argument is taken even if it looks like an option.
        let config = run(&["-u", "-s"]);
        assert_eq!(config.user, "-s");
        assert!(!config.secure);
        assert_eq!(run(&["--user", "--secure"]).user, "--secure");
        // `--name=` gives an empty argument.
        assert_eq!(run(&["--user="]).user, "");
        // The value may itself contain '='.
        assert_eq!(run(&["--user=a=b"]).user, "a=b");
    }

    #[test]
    fn long_option_abbreviations() {
        assert!(run(&["--sec", "/srv"]).secure);
        assert_eq!(run(&["--fore"]).mode, RunMode::Foreground);
        assert_eq!(run(&["--verbosi", "2"]).verbosity, 2);
        assert!(matches!(
            parse_args(&["--vers"]),
            Ok(Parsed::PrintVersion(_))
        ));
        // in.tftpd's own names win over our extensions when abbreviated.
        assert!(run(&["--s", "/srv"]).secure);
        let config = run(&["--m", "/etc/remap"]);
        assert_eq!(config.map_file, Some(path("/etc/remap")));
        assert_eq!(run(&["--ma", "/x"]).map_file, Some(path("/x")));
        // Our extensions are reachable by their own prefixes.
        assert_eq!(run(&["--max", "9"]).max_window, 9);
        assert!(run(&["--sys"]).force_syslog);
        // An exact match beats a longer name it prefixes.
        assert_eq!(run(&["--verbose"]).verbosity, 1);
    }

    #[test]
    fn ambiguous_long_option_is_a_warning() {
        let config = run(&["--verb"]);
        assert_eq!(config.verbosity, 0);
        assert_eq!(config.warnings, ["Unknown option: '\0'"]);
        assert_eq!(
            config.diagnostics,
            [format!(
                "{PROG}: option '--verb' is ambiguous; possibilities: '--verbose' '--verbosity'"
            )]
        );
        let config = run(&["--re=x"]);
        assert_eq!(
            config.diagnostics,
            [format!(
                "{PROG}: option '--re=x' is ambiguous; possibilities: '--refuse' '--retransmit'"
            )]
        );
    }

    #[test]
    fn unknown_short_option_is_a_warning_and_parsing_continues() {
        let config = run(&["-L", "-x", "-s", "/srv"]);
        assert!(config.secure);
        assert_eq!(config.mode, RunMode::Foreground);
        assert_eq!(config.warnings, ["Unknown option: 'x'"]);
        assert_eq!(
            config.diagnostics,
            [format!("{PROG}: invalid option -- 'x'")]
        );
        // In a cluster, the letters after the bad one still count.
        let config = run(&["-sxc", "/srv"]);
        assert!(config.secure && config.create);
        assert_eq!(config.warnings, ["Unknown option: 'x'"]);
        // ':' is not an option letter even though it is in the short string.
        let config = run(&["-:"]);
        assert_eq!(config.warnings, ["Unknown option: ':'"]);
        assert_eq!(
            config.diagnostics,
            [format!("{PROG}: invalid option -- ':'")]
        );
    }

    #[test]
    fn unknown_long_option_is_a_warning_with_a_nul() {
        let config = run(&["--foo", "-c"]);
        assert!(config.create);
        assert_eq!(config.warnings, ["Unknown option: '\0'"]);
        assert_eq!(
            config.diagnostics,
            [format!("{PROG}: unrecognized option '--foo'")]
        );
        let config = run(&["--foo=bar"]);
        assert_eq!(
            config.diagnostics,
            [format!("{PROG}: unrecognized option '--foo=bar'")]
        );
    }

    #[test]
    fn argument_to_a_flag_is_a_warning() {
        let config = run(&["--secure=yes"]);
        assert!(!config.secure);
        assert_eq!(config.warnings, ["Unknown option: 's'"]);
        assert_eq!(
            config.diagnostics,
            [format!(
                "{PROG}: option '--secure' doesn't allow an argument"
            )]
        );
        let config = run(&["--syslog=1"]);
        assert!(!config.force_syslog);
        assert_eq!(config.warnings, ["Unknown option: '\0'"]);
    }

    #[test]
    fn missing_argument_is_a_warning() {
        let config = run(&["-L", "-a"]);
        assert_eq!(config.address, BindAddress::default());
        assert_eq!(config.warnings, ["Unknown option: 'a'"]);
        assert_eq!(
            config.diagnostics,
            [format!("{PROG}: option requires an argument -- 'a'")]
        );
        let config = run(&["--verbosity"]);
        assert_eq!(config.warnings, ["Unknown option: '\0'"]);
        assert_eq!(
            config.diagnostics,
            [format!("{PROG}: option '--verbosity' requires an argument")]
        );
        let config = run(&["--address"]);
        assert_eq!(config.warnings, ["Unknown option: 'a'"]);
    }

    #[test]
    fn operands_and_double_dash() {
        // Permutation: operands may come first.
        let config = run(&["/srv/tftp", "-s"]);
        assert!(config.secure);
        assert_eq!(config.dirs, [path("/srv/tftp")]);
        let config = run(&["/a", "-c", "/b"]);
        assert_eq!(config.dirs, [path("/a"), path("/b")]);
        // `--` ends options; `-` alone is an operand.
        let config = run(&["-c", "--", "-s", "/x"]);
        assert!(!config.secure && config.create);
        assert_eq!(config.dirs, [path("-s"), path("/x")]);
        assert_eq!(run(&["-"]).dirs, [path("-")]);
        // A required argument may be `--` itself.
        let config = run(&["-u", "--", "-c"]);
        assert_eq!(config.user, "--");
        assert!(config.create);
    }

    #[test]
    fn foreground_wins_over_listen() {
        assert_eq!(run(&["-l"]).mode, RunMode::Daemon);
        assert_eq!(run(&["-L"]).mode, RunMode::Foreground);
        assert_eq!(run(&["-l", "-L"]).mode, RunMode::Foreground);
        assert_eq!(run(&["-L", "-l"]).mode, RunMode::Foreground);
        assert_eq!(run(&["-lL"]).mode, RunMode::Foreground);
        assert_eq!(run(&["--foreground", "--listen"]).mode, RunMode::Foreground);
        assert!(run(&["-l"]).mode.is_standalone());
        assert!(!run(&[]).mode.is_standalone());
    }

    #[test]
    fn last_family_wins() {
        assert_eq!(run(&["-4", "-6"]).family, Family::V6Only);
        assert_eq!(run(&["-6", "-4"]).family, Family::V4Only);
    }

    #[test]
    fn version_is_printed_where_it_is_reached() {
        let expected = format!(
            "tftpd (airlift) {}, with remap, compatible with tftp-hpa 5.2",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            parse_args(&["-V"]),
            Ok(Parsed::PrintVersion(expected.clone()))
        );
        assert_eq!(
            parse_args(&["--version"]),
            Ok(Parsed::PrintVersion(expected.clone()))
        );
        assert_eq!(
            parse_args(&["-V", "-B", "100"]),
            Ok(Parsed::PrintVersion(expected.clone()))
        );
        assert_eq!(
            parse_args(&["-s", "-V"]),
            Ok(Parsed::PrintVersion(expected))
        );
        usage(
            &["-B", "100", "-V"],
            "Bad maximum blocksize value (range 512-65464): 100",
        );
    }

    #[test]
    fn help() {
        for args in [["-h"], ["--help"]] {
            let Ok(Parsed::PrintHelp(text)) = parse_args(&args) else {
                panic!("{args:?}");
            };
            for needle in [
                "--foreground",
                "-L",
                "--defaults-file <FILE>",
                "--max-window <N>",
                "--port-range <FROM:TO>",
                "[DIRECTORY]",
            ] {
                assert!(text.contains(needle), "{needle} not in\n{text}");
            }
        }
        command().debug_assert();
    }

    #[test]
    fn blocksize_validation() {
        for bad in ["100", "511", "65465", "", "600x", "-1", "abc", " "] {
            usage(
                &["-B", bad],
                &format!("Bad maximum blocksize value (range 512-65464): {bad}"),
            );
        }
        assert_eq!(run(&["-B", "512"]).max_blksize, 512);
        assert_eq!(run(&["-B", "65464"]).max_blksize, 65464);
        assert_eq!(run(&["-B", " +600"]).max_blksize, 600);
        // in.tftpd truncates strtoul's result to 32 bits before checking it.
        assert_eq!(run(&["-B", "4294967808"]).max_blksize, 512);
    }

    #[test]
    fn retransmit_validation() {
        for bad in ["5", "9999", "255000001", "", "10000us", "-10000"] {
            usage(&["-T", bad], &format!("Bad timeout value: {bad}"));
        }
        assert_eq!(run(&["-T", "10000"]).retransmit, Duration::from_millis(10));
        assert_eq!(
            run(&["-T", "255000000"]).retransmit,
            Duration::from_secs(255)
        );
    }

    #[test]
    fn umask_validation() {
        for bad in ["999", "8", "022x", " "] {
            usage(&["-U", bad], &format!("Invalid umask: {bad}"));
        }
        assert_eq!(run(&["-U", "0777"]).umask, Some(0o777));
        assert_eq!(run(&["-U", "2"]).umask, Some(0o2));
        // strtoul("") reads nothing and *endptr is the NUL: in.tftpd accepts umask 0.
        assert_eq!(run(&["-U", ""]).umask, Some(0));
        // Only the permission bits reach umask(2).
        assert_eq!(run(&["-U", "17777"]).umask, Some(0o777));
        assert_eq!(run(&["-U", "-1"]).umask, Some(0o777));
    }

    #[test]
    fn effective_umask_follows_in_tftpd() {
        assert_eq!(run(&[]).effective_umask(), Some(0));
        assert_eq!(run(&["-p"]).effective_umask(), None);
        assert_eq!(run(&["-p", "-U", "022"]).effective_umask(), Some(0o22));
        assert_eq!(run(&["-U", "027"]).effective_umask(), Some(0o27));
    }

    #[test]
    fn port_range_validation() {
        for bad in [
            "9:8", "1:65535", "-1:5", "5", "a:b", ":5", "5:", "0x10:20", "1;2",
        ] {
            usage(&["-R", bad], &format!("Bad port range: {bad}"));
        }
        assert_eq!(run(&["-R", "1:65534"]).port_range, Some((1, 65534)));
        assert_eq!(run(&["-R", "0:0"]).port_range, Some((0, 0)));
        // sscanf ignores what follows the second number and skips blanks before each.
        assert_eq!(run(&["-R", "1:2xyz"]).port_range, Some((1, 2)));
        assert_eq!(run(&["-R", " 1: 2"]).port_range, Some((1, 2)));
        assert_eq!(run(&["-R", "+7:8"]).port_range, Some((7, 8)));
    }

    #[test]
    fn refuse_validation() {
        for option in REFUSABLE {
            assert_eq!(run(&["-r", option.name()]).refuse, [option]);
        }
        assert_eq!(run(&["-r", "BLKSIZE"]).refuse, [TftpOption::Blksize]);
        let config = run(&["-r", "tsize", "-r", "rollover", "-r", "blksize2"]);
        assert_eq!(
            config.refuse,
            [
                TftpOption::Tsize,
                TftpOption::Rollover,
                TftpOption::Blksize2
            ]
        );
        usage(&["-r", "windowsize"], "Unknown option: windowsize");
        usage(&["-r", ""], "Unknown option: ");
        // in.tftpd blanks a refused option's name, so it cannot be refused twice...
        usage(
            &["-r", "blksize", "-r", "blksize"],
            "Unknown option: blksize",
        );
        usage(&["-r", "tsize", "-r", "TSIZE"], "Unknown option: TSIZE");
        // ...but then the empty name matches the blanked entry.
        assert_eq!(
            run(&["-r", "BLKSIZE", "-r", ""]).refuse,
            [TftpOption::Blksize]
        );
    }

    #[test]
    fn map_file_only_once() {
        usage(&["-m", "/a", "-m", "/b"], "Multiple -m options");
        usage(&["-m", "", "--map-file", "/b"], "Multiple -m options");
    }

    #[test]
    fn timeout_is_atoi() {
        assert_eq!(run(&["-t", "abc"]).idle_timeout, Duration::ZERO);
        assert_eq!(run(&["-t", "-5"]).idle_timeout, Duration::ZERO);
        assert_eq!(run(&["-t", " 12s"]).idle_timeout, Duration::from_secs(12));
        assert_eq!(run(&["-t", "0"]).idle_timeout, Duration::ZERO);
        // atoi: strtol clamps to LONG_MAX, the cast to int keeps the low 32 bits (-1).
        assert_eq!(
            run(&["-t", "99999999999999999999"]).idle_timeout,
            Duration::ZERO
        );
    }

    #[test]
    fn verbosity_in_order() {
        assert_eq!(run(&["-vv", "--verbosity", "0"]).verbosity, 0);
        assert_eq!(run(&["--verbosity", "5", "-v"]).verbosity, 6);
        assert_eq!(run(&["--verbosity=-2", "-vvv"]).verbosity, 1);
        assert_eq!(run(&["--verbosity", "-2"]).verbosity, 0);
        assert_eq!(run(&["--verbosity", "x"]).verbosity, 0);
    }

    #[test]
    fn max_window_validation() {
        for bad in ["0", "65536", "", "x", "8x", "-1"] {
            usage(
                &["--max-window", bad],
                &format!("Bad maximum window size (range 1-65535): {bad}"),
            );
        }
        assert_eq!(run(&["--max-window", "65535"]).max_window, 65535);
    }

    #[test]
    fn secure_needs_exactly_one_directory() {
        usage(&["-s"], "no -s directory");
        usage(&["-L", "-s"], "no -s directory");
        usage(&["-s", "/tmp", "/var"], "too many -s directories");
        let config = run(&["-s", "/srv/tftp"]);
        assert_eq!(config.dirs, [path("/srv/tftp")]);
        // Without -s any number of prefixes is fine.
        assert_eq!(run(&["/a", "/b", "/c"]).dirs.len(), 3);
    }

    #[test]
    fn pidfile_only_when_standalone() {
        let config = run(&["-P", "/run/x.pid"]);
        assert_eq!(config.pidfile, None);
        assert_eq!(
            config.warnings,
            ["not in standalone mode, ignoring pid file"]
        );
        let config = run(&["-l", "-P", "/run/x.pid"]);
        assert_eq!(config.pidfile, Some(path("/run/x.pid")));
        assert!(config.warnings.is_empty());
        // Unknown-option warnings come first, as in.tftpd logs them first.
        let config = run(&["-P", "/p", "-x"]);
        assert_eq!(
            config.warnings,
            [
                "Unknown option: 'x'",
                "not in standalone mode, ignoring pid file"
            ]
        );
    }

    fn address(raw: &str) -> (BindAddress, Family) {
        let config = run(&["-L", "-a", raw]);
        (config.address, config.family)
    }

    fn ip(text: &str) -> Option<BindHost> {
        Some(BindHost::Ip(text.parse().unwrap()))
    }

    #[test]
    fn address_forms() {
        let number = |n| Some(PortSpec::Number(n));
        let cases: Vec<(&str, Option<BindHost>, Option<PortSpec>, Family)> = vec![
            (":69", None, number(69), Family::Any),
            ("", None, None, Family::Any),
            (
                "127.0.0.1:16969",
                ip("127.0.0.1"),
                number(16969),
                Family::V4Only,
            ),
            ("127.0.0.1", ip("127.0.0.1"), None, Family::V4Only),
            ("127.0.0.1:", ip("127.0.0.1"), None, Family::V4Only),
            ("127.1:69", ip("127.0.0.1"), number(69), Family::V4Only),
            ("0x7f.0.0.1", ip("127.0.0.1"), None, Family::V4Only),
            ("[::1]:69", ip("::1"), number(69), Family::V6Only),
            ("[::]", ip("::"), None, Family::V6Only),
            (
                "[::ffff:1.2.3.4]:69",
                ip("::ffff:1.2.3.4"),
                number(69),
                Family::V6Only,
            ),
            // Whatever sits between ']' and the last ':' is ignored.
            ("[::1]x:16969", ip("::1"), number(16969), Family::V6Only),
            (
                "localhost:tftp",
                Some(BindHost::Name("localhost".into())),
                Some(PortSpec::Service("tftp".into())),
                Family::Any,
            ),
            // Not numeric IPv6 (no closing bracket): split at the last ':' like a name.
            (
                "[::1",
                Some(BindHost::Name("[:".into())),
                number(1),
                Family::Any,
            ),
            // Port numbers: strtoul base 0, truncated to 16 bits.
            (":0x45", None, number(69), Family::Any),
            (":0105", None, number(69), Family::Any),
            (":70000", None, number(4464), Family::Any),
            (":0", None, Some(PortSpec::Service("0".into())), Family::Any),
            (
                ":69x",
                None,
                Some(PortSpec::Service("69x".into())),
                Family::Any,
            ),
        ];
        for (raw, host, port, family) in cases {
            assert_eq!(address(raw), (BindAddress { host, port }, family), "{raw}");
        }
    }

    #[test]
    fn address_errors() {
        for raw in ["::1", "::1:69", "::ffff:1.2.3.4", "fe80::1"] {
            usage(
                &["-L", "-a", raw],
                "Numeric IPv6 addresses need to be enclosed in []",
            );
        }
        usage(
            &["-6", "-L", "-a", "127.0.0.1:16969"],
            "Address 127.0.0.1 is not in address family AF_INET6",
        );
        usage(
            &["-4", "-L", "-a", "[::1]:16969"],
            "Address ::1 is not in address family AF_INET",
        );
        // A name does not narrow the family.
        let config = run(&["-6", "-L", "-a", "localhost"]);
        assert_eq!(config.family, Family::V6Only);
    }

    #[test]
    fn address_ignored_in_inetd_mode() {
        let config = run(&["-a", "::1"]);
        assert_eq!(config.address, BindAddress::default());
        assert_eq!(config.family, Family::Any);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn port_resolution() {
        let services = "# comment\ntftp\t\t69/udp\nfoo 1234/tcp\nfoo 4321/udp bar # x\n";
        let service = |name: &str| PortSpec::Service(name.to_owned());
        assert_eq!(service("tftp").resolve_with_services(services), Ok(69));
        assert_eq!(service("foo").resolve_with_services(services), Ok(4321));
        assert_eq!(service("bar").resolve_with_services(services), Ok(4321));
        assert_eq!(service("tftp").resolve_with_services(""), Ok(69));
        assert_eq!(PortSpec::Number(7).resolve_with_services(""), Ok(7));
        for name in ["bogus", "0", "tcp-only"] {
            assert_eq!(
                service(name).resolve_with_services("tcp-only 1/tcp"),
                Err(UsageError {
                    message: format!("cannot resolve local bind port: {name}"),
                    exit_code: EX_NOINPUT
                })
            );
        }
        assert_eq!(BindAddress::default().resolve_port(), Ok(69));
        let (bind, _) = address("127.0.0.1:16969");
        assert_eq!(bind.resolve_port(), Ok(16969));
    }

    #[test]
    fn c_number_helpers() {
        assert_eq!(c_strtoul(b"  +42x", 10), (42, 5));
        assert_eq!(c_strtoul(b"x", 10), (0, 0));
        assert_eq!(c_strtoul(b"", 10), (0, 0));
        assert_eq!(c_strtoul(b"0x", 0), (0, 1));
        assert_eq!(c_strtoul(b"0x1f", 0), (31, 4));
        assert_eq!(c_strtoul(b"017", 0), (15, 3));
        assert_eq!(c_strtoul(b"-1", 10), (u64::MAX, 2));
        assert_eq!(c_strtoul(b"99999999999999999999999", 10), (u64::MAX, 23));
        assert_eq!(c_atoi(b"-7abc"), -7);
        assert_eq!(c_atoi(b"4294967296"), 0);
        assert_eq!(inet_aton(b"1.2.3.4 junk"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(inet_aton_exact(b"1.2.3.4 junk"), None);
        assert_eq!(inet_aton(b"10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton(b"2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton(b"1.2.3.256"), None);
        assert_eq!(inet_aton(b"08.1.1.1"), None);
        assert_eq!(inet_aton(b"1.2.3.4.5"), None);
        assert_eq!(inet_aton(b""), None);
        assert!(is_numeric_ipv6(b"[::1]"));
        assert!(is_numeric_ipv6(b"::1"));
        assert!(!is_numeric_ipv6(b"[::1"));
        assert!(!is_numeric_ipv6(b"::1]"));
        assert!(!is_numeric_ipv6(b"1:2"));
        assert!(!is_numeric_ipv6(b"fe80::1%eth0"));
    }

    #[test]
    fn nul_ends_an_argument_and_non_utf8_paths_survive() {
        let config = run(&["-u", "tftp\0junk"]);
        assert_eq!(config.user, "tftp");
        let raw = OsStr::from_bytes(b"/srv/\xff\xfe");
        let config = match parse([OsStr::new(PROG), OsStr::new("-s"), raw]) {
            Ok(Parsed::Run(config)) => config,
            other => panic!("{other:?}"),
        };
        assert_eq!(config.dirs, [PathBuf::from(raw)]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let tokens = [
            "-",
            "--",
            "-a",
            "-B",
            "--=",
            "--=x",
            "-:",
            "-\u{e9}",
            "--address=",
            "[",
            "]",
            "[::1]:",
            "::",
            "-R",
            ":",
            "-U",
            "--verbosity",
            "--defaults-file",
            "-Lsa",
            "\u{0}",
            "--max-window",
            "-r",
            "",
            "-V",
            "-vvvvvvvv",
        ];
        for a in tokens {
            for b in tokens {
                for c in tokens {
                    let _ = parse([PROG, a, b, c]);
                    let _ = parse([PROG, "-L", a, b, c]);
                }
            }
        }
    }

    // --- --defaults-file -------------------------------------------------------------------

    /// §1.2 of the reference: the file Debian 12 ships.
    const REFERENCE_DEFAULTS: &str = "TFTP_USERNAME=\"tftp\"\nTFTP_DIRECTORY=\"/srv/tftp\"\n\
                                      TFTP_ADDRESS=\":69\"\nTFTP_OPTIONS=\"--secure\"\n";

    /// The file quoted in /work/shared/seeds/000_ed7478cca1df4c39.txt (a Cisco EWC guide).
    const SEED_DEFAULTS: &str = "# /etc/default/tftpd-hpa\n\nTFTP_USERNAME=\"tftp\"\n\
                                 TFTP_DIRECTORY=\"/home/calor/Documents/tftp_files\"\n\
                                 TFTP_ADDRESS=\":69\"\n\
                                 TFTP_OPTIONS=\"--secure --create --verbose\"\n";

    fn defaults(text: &str) -> DefaultsArgs {
        DefaultsArgs::parse(text.as_bytes(), "F")
    }

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn reference_defaults_file() {
        let parsed = defaults(REFERENCE_DEFAULTS);
        assert_eq!(
            parsed.args,
            os(&[
                "--listen",
                "--user",
                "tftp",
                "--address",
                ":69",
                "--secure",
                "/srv/tftp"
            ])
        );
        assert!(parsed.warnings.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let file = write_file(&dir, "tftpd-hpa", REFERENCE_DEFAULTS);
        let file_arg = file.to_str().unwrap();
        let config = run(&["--defaults-file", file_arg, "--foreground"]);
        assert_eq!(
            config,
            Config {
                family: Family::Any,
                mode: RunMode::Foreground,
                address: BindAddress {
                    host: None,
                    port: Some(PortSpec::Number(69))
                },
                secure: true,
                user: "tftp".into(),
                dirs: vec![path("/srv/tftp")],
                defaults_file: Some(file.clone()),
                ..Config::default()
            }
        );
        // Without --foreground it is the init script's daemon mode.
        assert_eq!(run(&["--defaults-file", file_arg]).mode, RunMode::Daemon);
        assert_eq!(run(&[&format!("--defaults-file={file_arg}")]).user, "tftp");
        assert_eq!(run(&["--defaults", file_arg]).user, "tftp");
    }

    #[test]
    fn seed_defaults_file() {
        let parsed = defaults(SEED_DEFAULTS);
        assert_eq!(
            parsed.args,
            os(&[
                "--listen",
                "--user",
                "tftp",
                "--address",
                ":69",
                "--secure",
                "--create",
                "--verbose",
                "/home/calor/Documents/tftp_files",
            ])
        );
        assert!(parsed.warnings.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let file = write_file(&dir, "tftpd-hpa", SEED_DEFAULTS);
        let config = run(&["--defaults-file", file.to_str().unwrap(), "--foreground"]);
        assert!(config.secure && config.create);
        assert_eq!(config.verbosity, 1);
        assert_eq!(config.user, "tftp");
        assert_eq!(config.dirs, [path("/home/calor/Documents/tftp_files")]);
        assert_eq!(config.mode, RunMode::Foreground);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn defaults_file_shell_syntax() {
        let text = "\u{feff}# comment\n\
                    export TFTP_USERNAME='tf tp'\r\n\
                    \tTFTP_ADDRESS=127.0.0.1:69   # trailing comment\n\
                    BASE=/srv; TFTP_DIRECTORY=\"$BASE/tftp\" \n\
                    TFTP_OPTIONS=\"-v\n  --create\"'  -B '1468\n\
                    export TFTP_OPTIONS\n\
                    OTHER=1 TFTP_OPTIONS=\"${TFTP_OPTIONS} -p \\\"\\$x\\\"\"\n\
                    RUN_DAEMON=\"yes\"\n";
        let parsed = defaults(text);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert_eq!(
            parsed.args,
            os(&[
                "--listen",
                "--user",
                "tf",
                "tp",
                "--address",
                "127.0.0.1:69",
                "-v",
                "--create",
                "-B",
                "1468",
                "-p",
                "\"$x\"",
                "/srv/tftp",
            ])
        );
        // Backslash-newline continues a line; a `#` inside a word is literal.
        let parsed = defaults("TFTP_OPTIONS=-v\\\n-c\nTFTP_DIRECTORY=/a#b\n");
        assert_eq!(parsed.args, os(&["--listen", "-v-c", "/a#b"]));
    }

    #[test]
    fn defaults_file_warnings() {
        let text = "TFTP_USERNAME=tftp\n\
                    TFTP_OPTION=\"--secure\"\n\
                    calo@host:~$ cat /etc/default/tftpd-hpa\n\
                    TFTP_DIRECTORY=$(echo /srv)\n\
                    TFTP_ADDRESS=${ADDR:-:69}\n\
                    TFTP_OPTIONS=\"--create\" run-something\n\
                    [ -r /etc/x ] && . /etc/x\n\
                    TFTP_DIRECTORY=\"/srv/tftp\n";
        let parsed = defaults(text);
        assert_eq!(
            parsed.warnings,
            [
                "F:2: unknown variable TFTP_OPTION ignored",
                "F:3: not a variable assignment, line ignored: calo@host:~$ cat /etc/default/tftpd-hpa",
                "F:4: command substitution is not supported, line ignored: TFTP_DIRECTORY=$(echo /srv)",
                "F:5: this parameter expansion is not supported, line ignored: TFTP_ADDRESS=${ADDR:-:69}",
                "F:6: not a variable assignment, line ignored: TFTP_OPTIONS=\"--create\" run-something",
                "F:7: not a variable assignment, line ignored: [ -r /etc/x ] && . /etc/x",
                "F:8: unterminated quote, line ignored: TFTP_DIRECTORY=\"/srv/tftp",
            ]
        );
        assert_eq!(parsed.args, os(&["--listen", "--user", "tftp"]));
    }

    #[test]
    fn defaults_file_missing_variables_are_omitted() {
        assert_eq!(defaults("").args, os(&["--listen"]));
        let parsed = defaults("TFTP_USERNAME=\"\"\nTFTP_DIRECTORY=\"/a /b\"\n");
        assert_eq!(parsed.args, os(&["--listen", "/a", "/b"]));
        // The script's check: --secure with two directories.
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(
            &dir,
            "d",
            "TFTP_DIRECTORY=\"/a /b\"\nTFTP_OPTIONS=--secure\n",
        );
        usage(
            &["--defaults-file", file.to_str().unwrap()],
            "too many -s directories",
        );
    }

    #[test]
    fn defaults_file_then_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(&dir, "d", REFERENCE_DEFAULTS);
        let file = file.to_str().unwrap();
        // Later options override the file's.
        let config = run(&[
            "--defaults-file",
            file,
            "-L",
            "-u",
            "root",
            "-a",
            "127.0.0.1:16969",
        ]);
        assert_eq!(config.user, "root");
        assert_eq!(config.address.port, Some(PortSpec::Number(16969)));
        assert_eq!(config.family, Family::V4Only);
        // Options may come before --defaults-file too: the file still goes first.
        let config = run(&["-vv", "--defaults-file", file]);
        assert_eq!(config.verbosity, 2);
        assert!(config.secure);
        // A directory on the command line is a second -s directory.
        usage(
            &["--defaults-file", file, "/other"],
            "too many -s directories",
        );
        // -m in both places.
        let file2 = write_file(&dir, "m", "TFTP_OPTIONS=\"-m /a\"\n");
        usage(
            &["--defaults-file", file2.to_str().unwrap(), "-m", "/b"],
            "Multiple -m options",
        );
        usage(
            &["--defaults-file", file, "--defaults-file", file],
            "Multiple --defaults-file options",
        );
        let nested = write_file(&dir, "n", "TFTP_OPTIONS=\"--defaults-file /x\"\n");
        let config = run(&["--defaults-file", nested.to_str().unwrap()]);
        assert_eq!(
            config.warnings,
            ["--defaults-file inside a defaults file is not supported; ignored"]
        );
        // Warnings from the file come before option warnings.
        let noisy = write_file(&dir, "w", "TFTP_FOO=1\n");
        let config = run(&["--defaults-file", noisy.to_str().unwrap(), "-x"]);
        assert_eq!(
            config.warnings,
            [
                format!("{}:1: unknown variable TFTP_FOO ignored", noisy.display()),
                "Unknown option: 'x'".to_owned(),
            ]
        );
    }

    #[test]
    fn unreadable_defaults_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            fail(&["--defaults-file", missing.to_str().unwrap()]),
            UsageError {
                message: format!(
                    "Cannot open defaults file: {}: No such file or directory",
                    missing.display()
                ),
                exit_code: EX_NOINPUT
            }
        );
        let error = fail(&["--defaults-file", dir.path().to_str().unwrap()]);
        assert_eq!(error.exit_code, EX_NOINPUT);
        assert_eq!(
            error.message,
            format!(
                "Cannot open defaults file: {}: Is a directory",
                dir.path().display()
            )
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; (MAX_DEFAULTS_FILE_SIZE + 1) as usize]).unwrap();
        let error = fail(&["--defaults-file", big.to_str().unwrap()]);
        assert_eq!(error.exit_code, EX_NOINPUT);
        assert!(
            error.message.ends_with("larger than 1048576 bytes"),
            "{error}"
        );
        // The version is not printed when the file cannot be read: the file comes first.
        assert_eq!(
            fail(&["-V", "--defaults-file", missing.to_str().unwrap()]).exit_code,
            EX_NOINPUT
        );
    }
}
