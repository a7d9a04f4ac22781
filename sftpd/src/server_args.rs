//! Arguments of `internal-sftp` / `sftp-server`, parsed as OpenSSH's `sftp-server.c` does.
//!
//! The string after `Subsystem sftp internal-sftp` or `ForceCommand internal-sftp` (or after
//! `/usr/lib/openssh/sftp-server`) is split into words ([`split_args`]) and then walked with
//! the same option string OpenSSH uses, `getopt("d:f:l:P:p:Q:u:cehR")`, with BSD `getopt`
//! semantics (OpenSSH ships its own on Linux): options may be clustered (`-eR`), an option
//! argument may be attached (`-lVERBOSE`) or be the next word (even if it starts with `-`),
//! `--` ends the options, and the first non-option word ends them too (the remaining words
//! are ignored, as in OpenSSH).
//!
//! | flag | meaning | OpenSSH failure |
//! |---|---|---|
//! | `-l LEVEL` | log level, case-insensitive (default `ERROR`) | `Invalid log level "%s"` |
//! | `-f FACILITY` | syslog facility, case-insensitive (default `AUTH`) | `Invalid log facility "%s"` |
//! | `-e` | log to stderr as well | — |
//! | `-R` | read-only: refuse every "does_write" request and writing opens | — |
//! | `-u UMASK` | octal umask, `strtol(…, 8)`, 0..=0777 | `Invalid umask "%s"` |
//! | `-d DIR` | start directory template (`%d` `%u` `%U` `%%`, `~`) | — |
//! | `-P LIST` | comma list of refused requests (deny list) | `Refused requests already set` |
//! | `-p LIST` | comma list of permitted requests (allow list) | `Permitted requests already set` |
//! | `-Q requests` | print the request names and exit | `Invalid query type` |
//! | `-c` | stop reading options: everything after it is ignored (OpenSSH: "ignore all arguments if we are invoked as a shell using `sftp-server -c command`") | — |
//! | `-h` | usage and exit 1 | usage |
//!
//! Differences from OpenSSH, on purpose:
//! * names in `-P`/`-p` are checked against the request table ([`REQUEST_NAMES`]); OpenSSH
//!   accepts any word and simply never matches a misspelt one.
//! * `-Q requests` and `-h`, which make `sftp-server` print and exit, are reported as
//!   [`Invocation::QueryRequests`] / [`ArgsError::Usage`] instead.

use std::fmt;

/// Every request name `sftp-server -Q requests` prints, in its order (protocol requests first,
/// then the extensions, named without their `@openssh.com` suffix).
pub const REQUEST_NAMES: &[&str] = &[
    "open",
    "close",
    "read",
    "write",
    "lstat",
    "fstat",
    "setstat",
    "fsetstat",
    "opendir",
    "readdir",
    "remove",
    "mkdir",
    "rmdir",
    "realpath",
    "stat",
    "rename",
    "readlink",
    "symlink",
    "posix-rename",
    "statvfs",
    "fstatvfs",
    "hardlink",
    "fsync",
    "lsetstat",
    "limits",
    "expand-path",
    "copy-data",
    "home-directory",
    "users-groups-by-id",
];

/// Requests OpenSSH marks `does_write` (refused under `-R` with
/// `Refusing %s request in read-only mode`). `open` is not here: the open handler refuses
/// write/create/truncate/append flags itself (`Refusing open request in read-only mode`).
/// `fsync` *is* here: OpenSSH's table marks `fsync@openssh.com` as writing.
const WRITE_REQUESTS: &[&str] = &[
    "write",
    "setstat",
    "fsetstat",
    "remove",
    "mkdir",
    "rmdir",
    "rename",
    "symlink",
    "posix-rename",
    "hardlink",
    "fsync",
    "lsetstat",
    "copy-data",
];

/// Whether `name` (a [`REQUEST_NAMES`] entry) is in OpenSSH's "does_write" table.
pub fn request_is_write(name: &str) -> bool {
    WRITE_REQUESTS.contains(&name)
}

/// Whether `name` is a request name sftp-server knows (exact, case-sensitive, as `match_list`).
pub fn is_request_name(name: &str) -> bool {
    REQUEST_NAMES.contains(&name)
}

/// The usage text `sftp-server -h` prints (OpenSSH 9.x), with `__progname` = `internal-sftp`.
pub const USAGE: &str = "usage: internal-sftp [-ehR] [-d start_directory] [-f log_facility] \
[-l log_level]\n\t[-P denied_requests] [-p allowed_requests] [-u umask]\n       \
internal-sftp -Q protocol_feature";

/// Log level of `-l`, ordered from quietest to most verbose (`DEBUG` is `DEBUG1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// `QUIET`
    Quiet,
    /// `FATAL`
    Fatal,
    /// `ERROR` (the default)
    #[default]
    Error,
    /// `INFO` (`logit()` lines)
    Info,
    /// `VERBOSE` (`verbose()` lines)
    Verbose,
    /// `DEBUG` or `DEBUG1`
    Debug1,
    /// `DEBUG2`
    Debug2,
    /// `DEBUG3`
    Debug3,
}

impl LogLevel {
    /// Parse a level name case-insensitively, as OpenSSH's `log_level_number`.
    pub fn from_name(name: &str) -> Option<Self> {
        const TABLE: &[(&str, LogLevel)] = &[
            ("QUIET", LogLevel::Quiet),
            ("FATAL", LogLevel::Fatal),
            ("ERROR", LogLevel::Error),
            ("INFO", LogLevel::Info),
            ("VERBOSE", LogLevel::Verbose),
            ("DEBUG", LogLevel::Debug1),
            ("DEBUG1", LogLevel::Debug1),
            ("DEBUG2", LogLevel::Debug2),
            ("DEBUG3", LogLevel::Debug3),
        ];
        TABLE
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, l)| l)
    }

    /// The canonical name (`DEBUG1` for [`LogLevel::Debug1`]).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Quiet => "QUIET",
            LogLevel::Fatal => "FATAL",
            LogLevel::Error => "ERROR",
            LogLevel::Info => "INFO",
            LogLevel::Verbose => "VERBOSE",
            LogLevel::Debug1 => "DEBUG1",
            LogLevel::Debug2 => "DEBUG2",
            LogLevel::Debug3 => "DEBUG3",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Syslog facility of `-f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Facility {
    /// `DAEMON`
    Daemon,
    /// `USER`
    User,
    /// `AUTH` (the default)
    #[default]
    Auth,
    /// `AUTHPRIV` (accepted by OpenSSH wherever `LOG_AUTHPRIV` exists, e.g. Linux)
    AuthPriv,
    /// `LOCAL0` .. `LOCAL7` (the number, 0..=7)
    Local(u8),
}

impl Facility {
    /// Parse a facility name case-insensitively, as OpenSSH's `log_facility_number`.
    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "DAEMON" => Some(Facility::Daemon),
            "USER" => Some(Facility::User),
            "AUTH" => Some(Facility::Auth),
            "AUTHPRIV" => Some(Facility::AuthPriv),
            _ => {
                let digit = upper.strip_prefix("LOCAL")?;
                match digit.as_bytes() {
                    [d @ b'0'..=b'7'] => Some(Facility::Local(d - b'0')),
                    _ => None,
                }
            }
        }
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Facility::Daemon => f.write_str("DAEMON"),
            Facility::User => f.write_str("USER"),
            Facility::Auth => f.write_str("AUTH"),
            Facility::AuthPriv => f.write_str("AUTHPRIV"),
            Facility::Local(n) => write!(f, "LOCAL{n}"),
        }
    }
}

/// Why the arguments were rejected. Messages follow sftp-server's (`fatal()`/`error()` text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// Unbalanced `'` or `"` in the argument string.
    #[error("unterminated quote in arguments: {0}")]
    UnterminatedQuote(String),
    /// `-l` with a name not in the table.
    #[error("Invalid log level \"{0}\"")]
    InvalidLogLevel(String),
    /// `-f` with a name not in the table.
    #[error("Invalid log facility \"{0}\"")]
    InvalidFacility(String),
    /// `-u` not octal, negative, above 0777 or with trailing junk.
    #[error("Invalid umask \"{0}\"")]
    InvalidUmask(String),
    /// `-Q` with anything but `requests` (case-insensitive).
    #[error("Invalid query type")]
    InvalidQuery(String),
    /// A second `-p`.
    #[error("Permitted requests already set")]
    AllowListAlreadySet,
    /// A second `-P`.
    #[error("Refused requests already set")]
    DenyListAlreadySet,
    /// A name in `-P`/`-p` that is not a request name (sftpd addition, see the module doc).
    #[error("Unknown request \"{name}\" in -{flag} list")]
    UnknownRequest {
        /// `P` or `p`.
        flag: char,
        /// The offending name.
        name: String,
    },
    /// An option that takes an argument came last.
    #[error("option requires an argument -- {0}\n{USAGE}")]
    MissingArgument(char),
    /// A letter not in the option string.
    #[error("unknown option -- {0}\n{USAGE}")]
    UnknownOption(char),
    /// `-h`.
    #[error("{USAGE}")]
    Usage,
    /// `-Q requests` given to [`parse`], which only builds a server configuration
    /// (use [`parse_invocation`] to get the listing).
    #[error("-Q requests only lists the request names; it does not configure a server")]
    QueryNotServing,
    /// `-d` template problems in [`expand_start_dir`].
    #[error("percent_expand: unknown key %{0}")]
    UnknownPercentKey(char),
    /// `-d` template ending in a lone `%`.
    #[error("percent_expand: invalid format")]
    TrailingPercent,
    /// `~otheruser` in a `-d` template (only the session user's home is known here).
    #[error("tilde_expand_filename: No such user {0}")]
    UnknownTildeUser(String),
}

/// The settings of one `internal-sftp` invocation. `Default` = OpenSSH's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerArgs {
    /// `-l` (default `ERROR`).
    pub level: LogLevel,
    /// `-f` (default `AUTH`).
    pub facility: Facility,
    /// `-e`: also log to stderr.
    pub stderr: bool,
    /// `-R`: read-only.
    pub read_only: bool,
    /// `-u`: umask to set, `None` = inherit.
    pub umask: Option<u32>,
    /// `-d`: start-directory template, unexpanded (see [`expand_start_dir`]).
    pub start_dir: Option<String>,
    /// `-P`: refused request names (empty = none).
    pub deny: Vec<String>,
    /// `-p`: permitted request names (`None` = no allow list, everything passes).
    pub allow: Option<Vec<String>>,
}

/// Which rule refused a request; `Display` gives OpenSSH's VERBOSE line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal<'a> {
    /// `-R` and a "does_write" request.
    ReadOnly(&'a str),
    /// In the `-P` list.
    Denylisted(&'a str),
    /// An allow list exists and the name is not in it.
    NotAllowlisted(&'a str),
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ReadOnly(n) => write!(f, "Refusing {n} request in read-only mode"),
            Refusal::Denylisted(n) => write!(f, "Refusing denylisted {n} request"),
            Refusal::NotAllowlisted(n) => write!(f, "Refusing non-allowlisted {n} request"),
        }
    }
}

impl ServerArgs {
    /// OpenSSH's `-P`/`-p` rule (without `-R`): a name in the deny list is refused; then, if
    /// there is an allow list, only names in it pass; otherwise everything passes.
    pub fn request_allowed(&self, name: &str) -> bool {
        if self.deny.iter().any(|d| d == name) {
            return false;
        }
        match &self.allow {
            Some(allow) => allow.iter().any(|a| a == name),
            None => true,
        }
    }

    /// The whole of OpenSSH's `request_permitted()`: read-only first, then deny, then allow.
    /// `None` = permitted. (`open` under `-R` is decided by its flags, not here.)
    pub fn check_request<'a>(&self, name: &'a str) -> Option<Refusal<'a>> {
        if self.read_only && request_is_write(name) {
            Some(Refusal::ReadOnly(name))
        } else if self.deny.iter().any(|d| d == name) {
            Some(Refusal::Denylisted(name))
        } else if self
            .allow
            .as_ref()
            .is_some_and(|a| !a.iter().any(|x| x == name))
        {
            Some(Refusal::NotAllowlisted(name))
        } else {
            None
        }
    }
}

/// What an argument string asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Run a server with these settings.
    Serve(ServerArgs),
    /// `-Q requests`: list [`REQUEST_NAMES`] and exit (status 0).
    QueryRequests(Vec<&'static str>),
}

/// Split a command line into words as OpenSSH's `argv_split()` (misc.c): words are separated
/// by spaces/tabs; `'…'` and `"…"` quote (quotes are removed, may sit mid-word, `""` gives an
/// empty word); a backslash escapes `'`, `"`, `\` anywhere and a space outside quotes; any
/// other backslash is kept literally. An unclosed quote is an error.
pub fn split_args(s: &str) -> Result<Vec<String>, ArgsError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' || chars[i] == '\t' {
            i += 1;
            continue;
        }
        let mut quote: Option<char> = None;
        let mut arg = String::new();
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                match chars.get(i + 1) {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') =>
                    {
                        arg.push(n);
                        i += 1;
                    }
                    _ => arg.push(c),
                }
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return Err(ArgsError::UnterminatedQuote(s.to_owned()));
        }
        out.push(arg);
    }
    Ok(out)
}

/// Split exactly as sshd's `session.c` does for in-process `internal-sftp`: `strtok(cmd, " ")`
/// — single spaces only, no quotes, no escapes, tabs are part of words. Offered so a caller
/// can choose bug-for-bug behaviour; [`parse`] uses the quote-aware [`split_args`].
pub fn split_internal_sftp(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parse the ARGS of `internal-sftp ARGS` into server settings (quote-aware split, then
/// getopt). `-Q requests` gives [`ArgsError::QueryNotServing`]; see [`parse_invocation`].
pub fn parse(args: &str) -> Result<ServerArgs, ArgsError> {
    match parse_invocation(args)? {
        Invocation::Serve(a) => Ok(a),
        Invocation::QueryRequests(_) => Err(ArgsError::QueryNotServing),
    }
}

/// Like [`parse`] but a whole command (`internal-sftp -l INFO`): the first word is the
/// program name and is skipped. An empty command gives the defaults.
pub fn parse_command(command: &str) -> Result<ServerArgs, ArgsError> {
    let words = split_args(command)?;
    match parse_argv(words.get(1..).unwrap_or(&[]))? {
        Invocation::Serve(a) => Ok(a),
        Invocation::QueryRequests(_) => Err(ArgsError::QueryNotServing),
    }
}

/// Parse the ARGS string, keeping `-Q requests` as its own outcome.
pub fn parse_invocation(args: &str) -> Result<Invocation, ArgsError> {
    parse_argv(&split_args(args)?)
}

fn parse_request_list(flag: char, list: &str) -> Result<Vec<String>, ArgsError> {
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            if is_request_name(n) {
                Ok(n.to_owned())
            } else {
                Err(ArgsError::UnknownRequest {
                    flag,
                    name: n.to_owned(),
                })
            }
        })
        .collect()
}

/// `strtol(s, &end, 8)` accepted only when the whole string is consumed and 0 ≤ v ≤ 0777.
fn parse_umask(s: &str) -> Option<u32> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let mut v: u64 = 0;
    for b in digits.bytes() {
        v = v.saturating_mul(8).saturating_add(u64::from(b - b'0'));
    }
    if (neg && v != 0) || v > 0o777 {
        return None;
    }
    u32::try_from(v).ok()
}

/// Walk already-split words (ARGS only, no program name) with BSD `getopt("d:f:l:P:p:Q:u:cehR")`.
pub fn parse_argv<S: AsRef<str>>(argv: &[S]) -> Result<Invocation, ArgsError> {
    let mut out = ServerArgs::default();
    let mut deny_set = false;
    let mut idx = 0;
    'words: while idx < argv.len() {
        let word = argv[idx].as_ref();
        idx += 1;
        if word == "--" {
            break;
        }
        let Some(cluster) = word.strip_prefix('-') else {
            break; // first non-option ends option parsing; the rest is ignored
        };
        if cluster.is_empty() {
            break; // a lone "-" is a non-option
        }
        for (pos, opt) in cluster.char_indices() {
            let takes_arg = matches!(opt, 'd' | 'f' | 'l' | 'P' | 'p' | 'Q' | 'u');
            let optarg: Option<String> = if takes_arg {
                let rest = &cluster[pos + opt.len_utf8()..];
                if !rest.is_empty() {
                    Some(rest.to_owned())
                } else if idx < argv.len() {
                    idx += 1;
                    Some(argv[idx - 1].as_ref().to_owned())
                } else {
                    return Err(ArgsError::MissingArgument(opt));
                }
            } else {
                None
            };
            match (opt, optarg) {
                ('Q', Some(q)) => {
                    if q.eq_ignore_ascii_case("requests") {
                        return Ok(Invocation::QueryRequests(REQUEST_NAMES.to_vec()));
                    }
                    return Err(ArgsError::InvalidQuery(q));
                }
                ('R', _) => out.read_only = true,
                ('c', _) => break 'words,
                ('e', _) => out.stderr = true,
                ('l', Some(l)) => {
                    out.level = LogLevel::from_name(&l).ok_or(ArgsError::InvalidLogLevel(l))?;
                }
                ('f', Some(f)) => {
                    out.facility = Facility::from_name(&f).ok_or(ArgsError::InvalidFacility(f))?;
                }
                ('d', Some(d)) => out.start_dir = Some(d),
                ('p', Some(p)) => {
                    if out.allow.is_some() {
                        return Err(ArgsError::AllowListAlreadySet);
                    }
                    out.allow = Some(parse_request_list('p', &p)?);
                }
                ('P', Some(p)) => {
                    if deny_set {
                        return Err(ArgsError::DenyListAlreadySet);
                    }
                    deny_set = true;
                    out.deny = parse_request_list('P', &p)?;
                }
                ('u', Some(u)) => {
                    out.umask = Some(parse_umask(&u).ok_or(ArgsError::InvalidUmask(u))?);
                }
                ('h', _) => return Err(ArgsError::Usage),
                (other, _) => return Err(ArgsError::UnknownOption(other)),
            }
            if takes_arg {
                continue 'words; // the argument used up the rest of this word
            }
        }
    }
    Ok(Invocation::Serve(out))
}

/// Expand a `-d` template as sftp-server does: first `tilde_expand_filename` (`~` or `~/…` →
/// `home` + `/` + rest; `~user/…` only for the session user), then `percent_expand` with `%d`
/// = home, `%u` = user, `%U` = uid, `%%` = `%`. Unknown `%x` or a trailing `%` is an error.
pub fn expand_start_dir(
    template: &str,
    home: &str,
    user: &str,
    uid: u32,
) -> Result<String, ArgsError> {
    let tilded = if let Some(after) = template.strip_prefix('~') {
        let (who, path) = match after.find('/') {
            Some(slash) => (&after[..slash], &after[slash + 1..]),
            None => (after, ""),
        };
        if !who.is_empty() && who != user {
            return Err(ArgsError::UnknownTildeUser(who.to_owned()));
        }
        let sep = if home.ends_with('/') { "" } else { "/" };
        format!("{home}{sep}{path}")
    } else {
        template.to_owned()
    };
    let mut out = String::with_capacity(tilded.len());
    let mut chars = tilded.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('d') => out.push_str(home),
            Some('u') => out.push_str(user),
            Some('U') => out.push_str(&uid.to_string()),
            Some(k) => return Err(ArgsError::UnknownPercentKey(k)),
            None => return Err(ArgsError::TrailingPercent),
        }
    }
    Ok(out)
}

/// The settings a session runs with. In OpenSSH, `ForceCommand internal-sftp ARGS` makes sshd
/// run the ForceCommand string *instead of* the requested subsystem's command, so its
/// arguments replace the Subsystem's entirely — nothing is merged (a ForceCommand without
/// `-l` runs at the default level even if the Subsystem line said `-l VERBOSE`).
pub fn overlay(subsystem: &ServerArgs, force_command: Option<&ServerArgs>) -> ServerArgs {
    force_command.unwrap_or(subsystem).clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> ServerArgs {
        parse(s).unwrap()
    }

    #[test]
    fn defaults() {
        let d = ServerArgs::default();
        assert_eq!(d.level, LogLevel::Error);
        assert_eq!(d.facility, Facility::Auth);
        assert!(!d.stderr && !d.read_only);
        assert_eq!(d.umask, None);
        assert_eq!(d.start_dir, None);
        assert!(d.deny.is_empty());
        assert_eq!(d.allow, None);
        assert_eq!(p(""), d);
        assert_eq!(p("   \t "), d);
    }

    #[test]
    fn log_levels() {
        for (s, l) in [
            ("QUIET", LogLevel::Quiet),
            ("fatal", LogLevel::Fatal),
            ("Error", LogLevel::Error),
            ("INFO", LogLevel::Info),
            ("verbose", LogLevel::Verbose),
            ("DEBUG", LogLevel::Debug1),
            ("debug1", LogLevel::Debug1),
            ("DEBUG2", LogLevel::Debug2),
            ("DEBUG3", LogLevel::Debug3),
        ] {
            assert_eq!(p(&format!("-l {s}")).level, l, "{s}");
            assert_eq!(p(&format!("-l{s}")).level, l, "attached {s}");
        }
        assert!(LogLevel::Quiet < LogLevel::Fatal);
        assert!(LogLevel::Error < LogLevel::Info);
        assert!(LogLevel::Info < LogLevel::Verbose);
        assert!(LogLevel::Verbose < LogLevel::Debug1);
        assert!(LogLevel::Debug2 < LogLevel::Debug3);
        assert_eq!(LogLevel::Verbose.to_string(), "VERBOSE");
        assert_eq!(p("-l INFO -l DEBUG3").level, LogLevel::Debug3); // last wins
        let e = parse("-l LOUD").unwrap_err();
        assert_eq!(e, ArgsError::InvalidLogLevel("LOUD".into()));
        assert_eq!(e.to_string(), "Invalid log level \"LOUD\"");
        // BSD getopt takes the next word as the argument even if it looks like an option
        assert_eq!(
            parse("-l -e").unwrap_err(),
            ArgsError::InvalidLogLevel("-e".into())
        );
        assert_eq!(
            parse("-l DEBUG4").unwrap_err(),
            ArgsError::InvalidLogLevel("DEBUG4".into())
        );
    }

    #[test]
    fn facilities() {
        assert_eq!(p("-f DAEMON").facility, Facility::Daemon);
        assert_eq!(p("-f user").facility, Facility::User);
        assert_eq!(p("-f Auth").facility, Facility::Auth);
        assert_eq!(p("-f AUTHPRIV").facility, Facility::AuthPriv);
        for n in 0..=7u8 {
            assert_eq!(p(&format!("-f local{n}")).facility, Facility::Local(n));
            assert_eq!(Facility::Local(n).to_string(), format!("LOCAL{n}"));
        }
        for bad in ["LOCAL8", "LOCAL", "LOCAL00", "KERN", "syslog"] {
            let e = parse(&format!("-f {bad}")).unwrap_err();
            assert_eq!(e, ArgsError::InvalidFacility(bad.into()));
            assert_eq!(e.to_string(), format!("Invalid log facility \"{bad}\""));
        }
    }

    #[test]
    fn boolean_flags_and_clusters() {
        assert!(p("-e").stderr);
        assert!(p("-R").read_only);
        let a = p("-eR");
        assert!(a.stderr && a.read_only);
        let a = p("-eRlVERBOSE -f LOCAL3");
        assert!(a.stderr && a.read_only);
        assert_eq!(a.level, LogLevel::Verbose);
        assert_eq!(a.facility, Facility::Local(3));
        // cluster ending in an option that takes its argument from the next word
        assert_eq!(p("-Rl INFO").level, LogLevel::Info);
    }

    #[test]
    fn dash_c_stops_option_parsing() {
        let a = p("-e -c -R -l DEBUG3 -Z");
        assert!(a.stderr);
        assert!(!a.read_only);
        assert_eq!(a.level, LogLevel::Error);
        // rest of the cluster after c is ignored too
        assert!(!p("-cR").read_only);
    }

    #[test]
    fn non_options_end_parsing() {
        let a = p("-e foo -R");
        assert!(a.stderr && !a.read_only);
        assert!(!p("-- -R").read_only);
        assert!(!p("- -R").read_only);
        assert!(p("-R -- -h").read_only);
    }

    #[test]
    fn help_and_unknown_and_missing() {
        assert_eq!(parse("-h").unwrap_err(), ArgsError::Usage);
        assert!(
            parse("-h")
                .unwrap_err()
                .to_string()
                .starts_with("usage: internal-sftp")
        );
        assert_eq!(parse("-x").unwrap_err(), ArgsError::UnknownOption('x'));
        assert_eq!(parse("-eX").unwrap_err(), ArgsError::UnknownOption('X'));
        for o in ['d', 'f', 'l', 'P', 'p', 'Q', 'u'] {
            let e = parse(&format!("-e -{o}")).unwrap_err();
            assert_eq!(e, ArgsError::MissingArgument(o));
            assert!(
                e.to_string()
                    .starts_with(&format!("option requires an argument -- {o}"))
            );
        }
        // errors are reported in order, like the getopt loop
        assert_eq!(parse("-h -x").unwrap_err(), ArgsError::Usage);
        assert_eq!(parse("-x -h").unwrap_err(), ArgsError::UnknownOption('x'));
    }

    #[test]
    fn umask() {
        for (s, v) in [
            ("022", 0o22),
            ("0", 0),
            ("777", 0o777),
            ("0777", 0o777),
            ("00002", 0o2),
            ("+7", 7),
            ("-0", 0),
            (" 027", 0o27),
        ] {
            assert_eq!(p(&format!("-u '{s}'")).umask, Some(v), "{s}");
        }
        assert_eq!(p("-u077").umask, Some(0o77));
        for bad in [
            "1000",
            "0778",
            "8",
            "-1",
            "",
            "22x",
            "0x1f",
            "abc",
            "99999999999999999999999",
            "022 ",
        ] {
            let e = parse(&format!("-u '{bad}'")).unwrap_err();
            assert_eq!(e, ArgsError::InvalidUmask(bad.into()), "{bad}");
            assert_eq!(e.to_string(), format!("Invalid umask \"{bad}\""));
        }
    }

    #[test]
    fn start_dir_kept_as_template() {
        assert_eq!(
            p("-d /home/%u/in").start_dir.as_deref(),
            Some("/home/%u/in")
        );
        assert_eq!(
            p("-d '/srv/my dir'").start_dir.as_deref(),
            Some("/srv/my dir")
        );
        assert_eq!(p("-d /a -d /b").start_dir.as_deref(), Some("/b"));
        assert_eq!(p("-d/x").start_dir.as_deref(), Some("/x"));
    }

    #[test]
    fn start_dir_tokens() {
        let e = |t: &str| expand_start_dir(t, "/home/alice", "alice", 1001);
        assert_eq!(e("/upload").unwrap(), "/upload");
        assert_eq!(e("%d/in").unwrap(), "/home/alice/in");
        assert_eq!(e("/srv/%u").unwrap(), "/srv/alice");
        assert_eq!(e("/srv/%U").unwrap(), "/srv/1001");
        assert_eq!(e("/a%%b").unwrap(), "/a%b");
        assert_eq!(e("%%u").unwrap(), "%u");
        assert_eq!(e("~/up").unwrap(), "/home/alice/up");
        assert_eq!(e("~").unwrap(), "/home/alice/");
        assert_eq!(e("~alice/x").unwrap(), "/home/alice/x");
        assert_eq!(e("~/%u").unwrap(), "/home/alice/alice");
        assert_eq!(expand_start_dir("~/x", "/", "root", 0).unwrap(), "/x");
        // tilde only at the start
        assert_eq!(e("/a/~").unwrap(), "/a/~");
        // OpenSSH order: tilde expansion first, then percent expansion over the result.
        assert_eq!(e("%x").unwrap_err(), ArgsError::UnknownPercentKey('x'));
        assert_eq!(e("/a%").unwrap_err(), ArgsError::TrailingPercent);
        assert_eq!(
            e("~bob/x").unwrap_err(),
            ArgsError::UnknownTildeUser("bob".into())
        );
    }

    #[test]
    fn request_lists() {
        let a = p("-P write,remove");
        assert_eq!(a.deny, vec!["write", "remove"]);
        assert_eq!(a.allow, None);
        let a = p("-p open,read,close,stat");
        assert_eq!(
            a.allow.as_deref().unwrap(),
            ["open", "read", "close", "stat"]
        );
        assert_eq!(p("-P ''").deny, Vec::<String>::new());
        assert_eq!(p("-p ''").allow, Some(vec![]));
        assert_eq!(p("-P ,write,").deny, vec!["write"]);
        for name in REQUEST_NAMES {
            assert!(p(&format!("-P {name}")).deny == vec![name.to_string()]);
        }
        let e = parse("-P write,frobnicate").unwrap_err();
        assert_eq!(
            e,
            ArgsError::UnknownRequest {
                flag: 'P',
                name: "frobnicate".into()
            }
        );
        assert!(e.to_string().contains("frobnicate"));
        // exact names only: no case folding, no @openssh.com suffix
        assert!(parse("-p WRITE").is_err());
        assert!(parse("-p posix-rename@openssh.com").is_err());
        assert_eq!(
            parse("-p open -p read").unwrap_err(),
            ArgsError::AllowListAlreadySet
        );
        assert_eq!(
            parse("-P open -P read").unwrap_err(),
            ArgsError::DenyListAlreadySet
        );
        assert_eq!(
            ArgsError::AllowListAlreadySet.to_string(),
            "Permitted requests already set"
        );
        assert_eq!(
            ArgsError::DenyListAlreadySet.to_string(),
            "Refused requests already set"
        );
    }

    #[test]
    fn allow_deny_rules() {
        let none = ServerArgs::default();
        assert!(REQUEST_NAMES.iter().all(|n| none.request_allowed(n)));

        let deny = p("-P remove,rmdir");
        assert!(!deny.request_allowed("remove"));
        assert!(!deny.request_allowed("rmdir"));
        assert!(deny.request_allowed("open"));

        let allow = p("-p open,read,close");
        assert!(allow.request_allowed("read"));
        assert!(!allow.request_allowed("write"));
        assert_eq!(
            allow.check_request("write"),
            Some(Refusal::NotAllowlisted("write"))
        );

        // deny wins over allow
        let both = p("-p open,read,close -P read");
        assert!(!both.request_allowed("read"));
        assert!(both.request_allowed("open"));
        assert!(!both.request_allowed("stat"));
        assert_eq!(
            both.check_request("read"),
            Some(Refusal::Denylisted("read"))
        );

        // empty allow list refuses everything
        let empty = p("-p ''");
        assert!(REQUEST_NAMES.iter().all(|n| !empty.request_allowed(n)));

        let ro = p("-R -p write,read");
        assert!(ro.request_allowed("write")); // request_allowed ignores -R
        assert_eq!(ro.check_request("write"), Some(Refusal::ReadOnly("write")));
        assert_eq!(ro.check_request("read"), None);
        assert_eq!(
            ro.check_request("open"),
            Some(Refusal::NotAllowlisted("open"))
        );
        // open is never refused by -R here: its handler checks the flags
        assert_eq!(p("-R").check_request("open"), None);

        assert_eq!(
            Refusal::ReadOnly("mkdir").to_string(),
            "Refusing mkdir request in read-only mode"
        );
        assert_eq!(
            Refusal::Denylisted("read").to_string(),
            "Refusing denylisted read request"
        );
        assert_eq!(
            Refusal::NotAllowlisted("stat").to_string(),
            "Refusing non-allowlisted stat request"
        );
    }

    #[test]
    fn read_only_table() {
        let writes = [
            "write",
            "setstat",
            "fsetstat",
            "remove",
            "mkdir",
            "rmdir",
            "rename",
            "symlink",
            "posix-rename",
            "hardlink",
            "fsync",
            "lsetstat",
            "copy-data",
        ];
        for name in REQUEST_NAMES {
            assert_eq!(request_is_write(name), writes.contains(name), "{name}");
        }
        assert!(!request_is_write("open"));
        assert!(!request_is_write("nonsense"));
        assert!(writes.iter().all(|w| is_request_name(w)));
    }

    #[test]
    fn query() {
        assert_eq!(
            parse_invocation("-Q requests").unwrap(),
            Invocation::QueryRequests(REQUEST_NAMES.to_vec())
        );
        assert!(matches!(
            parse_invocation("-QREQUESTS").unwrap(),
            Invocation::QueryRequests(_)
        ));
        // -Q exits as soon as it is seen: later junk is never looked at
        assert!(matches!(
            parse_invocation("-e -Q requests -x").unwrap(),
            Invocation::QueryRequests(_)
        ));
        assert_eq!(
            parse("-Q requests").unwrap_err(),
            ArgsError::QueryNotServing
        );
        let e = parse("-Q cipher").unwrap_err();
        assert_eq!(e, ArgsError::InvalidQuery("cipher".into()));
        assert_eq!(e.to_string(), "Invalid query type");
        assert_eq!(REQUEST_NAMES.len(), 29);
        assert_eq!(REQUEST_NAMES[0], "open");
        assert_eq!(REQUEST_NAMES[28], "users-groups-by-id");
        assert!(matches!(parse_invocation("-R").unwrap(), Invocation::Serve(a) if a.read_only));
    }

    #[test]
    fn splitting() {
        let s = |x: &str| split_args(x).unwrap();
        assert_eq!(s("a b\tc"), ["a", "b", "c"]);
        assert_eq!(s("  a   b  "), ["a", "b"]);
        assert!(s("").is_empty());
        assert_eq!(s("'a b' \"c d\""), ["a b", "c d"]);
        assert_eq!(s("x'a b'y"), ["xa by"]);
        assert_eq!(s("\"it's\""), ["it's"]);
        assert_eq!(s("'say \"hi\"'"), ["say \"hi\""]);
        assert_eq!(s("''"), [""]);
        assert_eq!(s("a\\ b"), ["a b"]);
        assert_eq!(s("'a\\ b'"), ["a\\ b"]); // \<space> only escaped outside quotes
        assert_eq!(s("\\'x\\\""), ["'x\""]);
        assert_eq!(s("a\\\\b"), ["a\\b"]);
        assert_eq!(s("a\\nb"), ["a\\nb"]); // unknown escape kept
        assert_eq!(s("'a\\'b'"), ["a'b"]); // \' works inside single quotes too (argv_split)
        assert_eq!(s("tail\\"), ["tail\\"]);
        assert_eq!(s("a\nb"), ["a\nb"]); // only space/tab separate
        for bad in ["'abc", "\"abc", "a 'b c", "'a\\'", "\"x'"] {
            assert_eq!(
                split_args(bad).unwrap_err(),
                ArgsError::UnterminatedQuote(bad.into()),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("-d 'unclosed").unwrap_err(),
            ArgsError::UnterminatedQuote(_)
        ));
        assert_eq!(split_internal_sftp("-d  \"/a b\""), ["-d", "\"/a", "b\""]);
    }

    #[test]
    fn full_lines() {
        let a = p("-l VERBOSE -f AUTHPRIV -u 0002 -d /upload -P remove,rmdir -e");
        assert_eq!(a.level, LogLevel::Verbose);
        assert_eq!(a.facility, Facility::AuthPriv);
        assert_eq!(a.umask, Some(0o2));
        assert_eq!(a.start_dir.as_deref(), Some("/upload"));
        assert_eq!(a.deny, vec!["remove", "rmdir"]);
        assert!(a.stderr);
        let c = parse_command("internal-sftp -R -l INFO").unwrap();
        assert!(c.read_only);
        assert_eq!(c.level, LogLevel::Info);
        assert_eq!(parse_command("").unwrap(), ServerArgs::default());
        assert_eq!(
            parse_command("/usr/lib/openssh/sftp-server").unwrap(),
            ServerArgs::default()
        );
    }

    #[test]
    fn overlay_replaces() {
        let sub = p("-l VERBOSE -R -u 022");
        let fc = p("-d /in");
        assert_eq!(overlay(&sub, None), sub);
        let o = overlay(&sub, Some(&fc));
        assert_eq!(o, fc);
        assert_eq!(o.level, LogLevel::Error);
        assert!(!o.read_only);
        assert_eq!(o.umask, None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
            let _ = parse_command(&s);
            let _ = split_args(&s);
            let _ = split_internal_sftp(&s);
            let _ = expand_start_dir(&s, "/home/u", "u", 1);
        }

        #[test]
        fn parse_never_panics_optionish(
            words in proptest::collection::vec(
                "(-[dflPpQucehRx]{0,3}|[A-Za-z0-9 ,'\"\\\\%~é-]{0,8})", 0..8)
        ) {
            let line = words.join(" ");
            let _ = parse(&line);
            let _ = parse_invocation(&line);
        }

        #[test]
        fn split_roundtrips_simple_words(words in proptest::collection::vec("[a-zA-Z0-9/_.,-]{1,10}", 0..6)) {
            let line = words.join(" ");
            prop_assert_eq!(split_args(&line).unwrap(), words);
        }

        #[test]
        fn quoted_word_survives(w in "[^'\\\\]{0,20}") {
            let line = format!("'{w}'");
            prop_assert_eq!(split_args(&line).unwrap(), vec![w]);
        }

        #[test]
        fn umask_in_range_accepted(v in 0u32..=0o777) {
            prop_assert_eq!(parse(&format!("-u {v:o}")).unwrap().umask, Some(v));
            prop_assert_eq!(parse(&format!("-u 0{v:o}")).unwrap().umask, Some(v));
        }
    }
}
