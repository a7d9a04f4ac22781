//! `sshd_config` reader for an SFTP-only server (sans-IO).
//!
//! Reads the `sshd_config` files people already have, with sshd's meaning and defaults for
//! the keywords that matter to an SFTP-only server, and accepts (but reports) the keywords
//! that do not apply. Nothing here touches the filesystem: `Include` files are read through a
//! caller-supplied [`IncludeSource`].
//!
//! Layout:
//! * [`parse`] turns text (+ `-o` overrides) into a [`Config`]: global directives and
//!   `Match` blocks, every value already validated.
//! * [`Config::effective`] evaluates the `Match` blocks for one [`ConnectionSpec`] and gives
//!   the [`Effective`] values (what `sshd -T -C user=..,addr=..,lport=..` shows).
//! * [`Config::dump`] prints an [`Effective`] like `sshd -T`.
//! * [`user_allowed`] applies `DenyUsers`, `AllowUsers`, `DenyGroups`, `AllowGroups` in
//!   OpenSSH's order (auth.c `allowed_user`).
//! * [`expand_tokens`] expands `%h %u %U %%` and a leading `~`.
//!
//! Precedence (sshd's "first value obtained wins"): `-o` overrides, then the matching `Match`
//! blocks in file order, then the global directives in file order, then the default. List
//! keywords accumulate within one of these layers; a higher layer that sets a list replaces
//! the lower layers' list (as sshd's `copy_set_server_options` does for Match blocks).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// Directory relative `Include` paths are resolved against (as sshd does).
pub const SSHD_CONFIG_DIR: &str = "/etc/ssh";

/// Maximum nesting depth of `Include` directives.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Name used for errors in `-o` overrides.
pub const COMMAND_LINE: &str = "command-line";

/// A configuration error, with the file name and line number like sshd's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {kind}")]
pub struct ConfigError {
    /// File the line came from (`command-line` for `-o` overrides).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub kind: LineError,
}

/// What was wrong with one configuration line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Unknown keyword.
    #[error("Bad configuration option: {0}")]
    BadOption(String),
    /// Keyword without its argument.
    #[error("{0} missing argument.")]
    MissingArgument(String),
    /// Keyword with too many arguments.
    #[error("keyword {0} extra arguments at end of line")]
    ExtraArguments(String),
    /// Unbalanced quotes.
    #[error("invalid quotes")]
    InvalidQuotes,
    /// A yes/no keyword got something else.
    #[error("Bad yes/no argument: {0}")]
    BadYesNo(String),
    /// A keyword with a fixed set of values got something else.
    #[error("unsupported option \"{value}\" for {keyword}")]
    BadValue {
        /// The keyword.
        keyword: String,
        /// The value given.
        value: String,
    },
    /// Bad port number.
    #[error("Badly formatted port number: invalid port \"{0}\".")]
    BadPort(String),
    /// Bad integer.
    #[error("invalid {keyword} number: {value}")]
    BadNumber {
        /// The keyword.
        keyword: String,
        /// The value given.
        value: String,
    },
    /// Bad time value (`30`, `2m`, `1h30m`).
    #[error("invalid time value: {0}")]
    BadTime(String),
    /// Bad `MaxStartups` spec.
    #[error("Invalid MaxStartups spec: {0}")]
    BadMaxStartups(String),
    /// Bad `PerSourcePenalties` value.
    #[error("Invalid PerSourcePenalties: {0}")]
    BadPenalties(String),
    /// Bad `ListenAddress`.
    #[error("invalid ListenAddress \"{0}\"")]
    BadListenAddress(String),
    /// Bad `LogLevel`.
    #[error("unsupported log level '{0}'")]
    BadLogLevel(String),
    /// Bad `SyslogFacility`.
    #[error("unsupported log facility '{0}'")]
    BadFacility(String),
    /// A keyword that is not allowed inside a `Match` block.
    #[error("Directive '{0}' is not allowed within a Match block")]
    NotAllowedInMatch(String),
    /// `Match` without criteria.
    #[error("One or more attributes required for Match")]
    MatchEmpty,
    /// `Match All` together with other criteria.
    #[error("'all' cannot be combined with other Match attributes")]
    MatchAllCombined,
    /// Criterion without a value.
    #[error("Missing Match criteria for {0}")]
    MatchMissingValue(String),
    /// Criterion this server does not support.
    #[error("Unsupported Match attribute {0}")]
    MatchUnsupported(String),
    /// Bad address list in `Match Address`.
    #[error("invalid Match address argument {0}")]
    MatchBadAddress(String),
    /// Bad port in `Match LocalPort`.
    #[error("Invalid LocalPort '{0}' on Match line")]
    MatchBadPort(String),
    /// `Match` given with `-o`.
    #[error("Match is not allowed on the command line")]
    MatchOnCommandLine,
    /// Includes nested too deeply.
    #[error("Too many recursive configuration includes (limit {MAX_INCLUDE_DEPTH})")]
    IncludeDepth,
    /// Wildcard outside the last path component of an `Include`.
    #[error("Include {0}: wildcards are only supported in the last path component")]
    IncludeWildcardDir(String),
    /// The include source failed.
    #[error("Include {path}: {message}")]
    IncludeRead {
        /// Path being read.
        path: String,
        /// The reader's message.
        message: String,
    },
}

/// Why a user is refused by `AllowUsers`/`DenyUsers`/`AllowGroups`/`DenyGroups`.
/// `Display` gives sshd's log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// Matched a `DenyUsers` pattern.
    #[error("User {user} from {from} not allowed because listed in DenyUsers")]
    ListedInDenyUsers {
        /// User name.
        user: String,
        /// Client address.
        from: String,
    },
    /// `AllowUsers` is set and nothing matched.
    #[error("User {user} from {from} not allowed because not listed in AllowUsers")]
    NotListedInAllowUsers {
        /// User name.
        user: String,
        /// Client address.
        from: String,
    },
    /// Group lists are set and the user has no groups.
    #[error("User {user} from {from} not allowed because not in any group")]
    NotInAnyGroup {
        /// User name.
        user: String,
        /// Client address.
        from: String,
    },
    /// One of the user's groups matched `DenyGroups`.
    #[error("User {user} from {from} not allowed because a group is listed in DenyGroups")]
    GroupListedInDenyGroups {
        /// User name.
        user: String,
        /// Client address.
        from: String,
    },
    /// `AllowGroups` is set and none of the user's groups matched.
    #[error(
        "User {user} from {from} not allowed because none of user's groups are listed in AllowGroups"
    )]
    NoGroupInAllowGroups {
        /// User name.
        user: String,
        /// Client address.
        from: String,
    },
}

/// Error of [`expand_tokens`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `%x` with an unknown `x`.
    #[error("unknown key %{0}")]
    UnknownToken(char),
    /// `%` at the end of the string.
    #[error("trailing % in \"{0}\"")]
    TrailingPercent(String),
    /// `~user` (needs a passwd lookup; not supported).
    #[error("~user expansion is not supported: \"{0}\"")]
    TildeUser(String),
}

/// Reads `Include`d files for [`parse`]; keeps the parser free of I/O.
pub trait IncludeSource {
    /// File names (not paths) in directory `dir`. A missing directory is `Ok(vec![])`
    /// (sshd silently ignores an `Include` that matches nothing).
    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String>;
    /// Contents of the file at `path`.
    fn read_file(&mut self, path: &str) -> Result<String, String>;
}

/// An [`IncludeSource`] for configurations that must not include anything: every directory
/// is empty.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIncludes;

impl IncludeSource for NoIncludes {
    fn list_dir(&mut self, _dir: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn read_file(&mut self, path: &str) -> Result<String, String> {
        Err(format!("{path}: includes are disabled"))
    }
}

/// `AllowTcpForwarding` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpForwarding {
    /// `yes` / `all` (default).
    Yes,
    /// `no`.
    No,
    /// `local`.
    Local,
    /// `remote`.
    Remote,
}

impl TcpForwarding {
    fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Local => "local",
            Self::Remote => "remote",
        }
    }
}

/// `PermitTunnel` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitTunnel {
    /// `no` (default).
    No,
    /// `yes`.
    Yes,
    /// `point-to-point`.
    PointToPoint,
    /// `ethernet`.
    Ethernet,
}

impl PermitTunnel {
    fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Yes => "yes",
            Self::PointToPoint => "point-to-point",
            Self::Ethernet => "ethernet",
        }
    }
}

// One definition of levels and facilities for sshd_config and internal-sftp's `-l`/`-f`.
pub use crate::server_args::{Facility as SyslogFacility, LogLevel};

/// `MaxStartups start:rate:full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    /// Unauthenticated connections before random early drop starts.
    pub start: u32,
    /// Drop probability in percent once `start` is reached.
    pub rate: u32,
    /// All new unauthenticated connections are dropped from here.
    pub full: u32,
}

/// One `ListenAddress` as written (`host`, `host:port`, `[v6]:port`, bare v6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// Host name or address literal (no brackets).
    pub host: String,
    /// Port, if given; otherwise every `Port` applies.
    pub port: Option<u16>,
}

/// A resolved listen endpoint: host (or address literal) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEndpoint {
    /// Host name or address literal (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for ListenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The connection a configuration is evaluated for (`sshd -T -C user=..,addr=..,lport=..`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSpec<'a> {
    /// User name.
    pub user: &'a str,
    /// Names of all the user's groups (primary and supplementary).
    pub groups: &'a [String],
    /// Client address.
    pub address: IpAddr,
    /// Local port the client connected to.
    pub local_port: u16,
}

/// The values in force for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// `Port` (default 22).
    pub port: Vec<u16>,
    /// `ListenAddress` resolved against `Port` (default `0.0.0.0` and `::` on every port).
    pub listen: Vec<ListenEndpoint>,
    /// `HostKey` paths; empty means "no host keys configured" (caller generates one).
    pub host_keys: Vec<String>,
    /// `PasswordAuthentication` (default yes).
    pub password_authentication: bool,
    /// `PubkeyAuthentication` (default yes).
    pub pubkey_authentication: bool,
    /// `AuthorizedKeysFile` templates, unexpanded (default `.ssh/authorized_keys
    /// .ssh/authorized_keys2`; `none` = empty).
    pub authorized_keys_files: Vec<String>,
    /// `MaxAuthTries` (default 6).
    pub max_auth_tries: u32,
    /// `LoginGraceTime` (default 120 s; zero = no limit).
    pub login_grace_time: Duration,
    /// `MaxStartups` (default 10:30:100).
    pub max_startups: MaxStartups,
    /// `MaxSessions` (default 10).
    pub max_sessions: u32,
    /// `AllowUsers` patterns.
    pub allow_users: Vec<String>,
    /// `DenyUsers` patterns.
    pub deny_users: Vec<String>,
    /// `AllowGroups` patterns.
    pub allow_groups: Vec<String>,
    /// `DenyGroups` patterns.
    pub deny_groups: Vec<String>,
    /// `Subsystem sftp ...` command (`internal-sftp [args]` or a path with args).
    pub subsystem_sftp: Option<String>,
    /// `ForceCommand` (e.g. `internal-sftp -R`).
    pub force_command: Option<String>,
    /// `ChrootDirectory` template, unexpanded (see [`expand_tokens`]).
    pub chroot_directory: Option<String>,
    /// `AllowTcpForwarding` (default yes).
    pub allow_tcp_forwarding: TcpForwarding,
    /// `X11Forwarding` (default no).
    pub x11_forwarding: bool,
    /// `PermitTunnel` (default no).
    pub permit_tunnel: PermitTunnel,
    /// `DisableForwarding` (default no).
    pub disable_forwarding: bool,
    /// `Banner` path (default none).
    pub banner: Option<String>,
    /// `SyslogFacility` (default AUTH).
    pub syslog_facility: SyslogFacility,
    /// `LogLevel` (default INFO).
    pub log_level: LogLevel,
    /// `AcceptEnv` patterns (stored; an SFTP-only server does not use them).
    pub accept_env: Vec<String>,
    /// `UsersFile` (ours): path of the virtual users file.
    pub users_file: Option<String>,
    /// `AtomicUploads` (ours, default no).
    pub atomic_uploads: bool,
    /// `PerSourcePenalties` (OpenSSH 9.8; on by default, `None` = `no`).
    pub per_source_penalties: Option<crate::penalty::Settings>,
    /// `PerSourcePenaltyExemptList` address/CIDR pattern lists (default none).
    pub per_source_penalty_exempt: Vec<String>,
}

impl Effective {
    /// True when no `HostKey` is configured (the caller must generate one).
    pub fn no_host_keys(&self) -> bool {
        self.host_keys.is_empty()
    }

    /// `ChrootDirectory` expanded for a user, `None` if not set.
    pub fn chroot_for(
        &self,
        home: &str,
        user: &str,
        uid: u32,
    ) -> Option<Result<String, TokenError>> {
        self.chroot_directory
            .as_deref()
            .map(|t| expand_tokens(t, home, user, uid))
    }

    /// `AuthorizedKeysFile` entries expanded for a user; relative paths are made relative to
    /// `home`.
    pub fn authorized_keys_for(
        &self,
        home: &str,
        user: &str,
        uid: u32,
    ) -> Result<Vec<String>, TokenError> {
        self.authorized_keys_files
            .iter()
            .map(|t| {
                let p = expand_tokens(t, home, user, uid)?;
                Ok(if p.starts_with('/') {
                    p
                } else {
                    format!("{}/{}", home.trim_end_matches('/'), p)
                })
            })
            .collect()
    }
}

/// A keyword accepted for compatibility but without effect here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredDirective {
    /// Keyword as written.
    pub keyword: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// File it came from.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

/// A parsed configuration: global directives, `Match` blocks and `-o` overrides.
#[derive(Debug, Clone, Default)]
pub struct Config {
    overrides: Vec<Setting>,
    entries: Vec<Entry>,
    blocks: Vec<MatchLine>,
    ignored: Vec<IgnoredDirective>,
    ignored_conds: Vec<Option<Vec<usize>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: global. `Some(blocks)`: all these match lines must match.
    cond: Option<Vec<usize>>,
    setting: Setting,
}

#[derive(Debug, Clone)]
enum Setting {
    Port(u16),
    ListenAddress(ListenAddress),
    HostKey(String),
    PasswordAuthentication(bool),
    PubkeyAuthentication(bool),
    AuthorizedKeysFile(Vec<String>),
    MaxAuthTries(u32),
    LoginGraceTime(Duration),
    MaxStartups(MaxStartups),
    PerSourcePenalties(Option<crate::penalty::Settings>),
    PerSourcePenaltyExemptList(Vec<String>),
    MaxSessions(u32),
    AllowUsers(Vec<String>),
    DenyUsers(Vec<String>),
    AllowGroups(Vec<String>),
    DenyGroups(Vec<String>),
    AcceptEnv(Vec<String>),
    SubsystemSftp(String),
    ForceCommand(Option<String>),
    ChrootDirectory(Option<String>),
    AllowTcpForwarding(TcpForwarding),
    X11Forwarding(bool),
    PermitTunnel(PermitTunnel),
    DisableForwarding(bool),
    Banner(Option<String>),
    SyslogFacility(SyslogFacility),
    LogLevel(LogLevel),
    UsersFile(String),
    AtomicUploads(bool),
    /// `Subsystem` for a name other than sftp: accepted, no effect.
    OtherSubsystem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Criterion {
    All,
    User(String),
    Group(String),
    Address(String),
    LocalPort(u16),
}

#[derive(Debug, Clone)]
struct MatchLine {
    criteria: Vec<Criterion>,
}

impl MatchLine {
    fn matches(&self, conn: &ConnectionSpec<'_>) -> bool {
        self.criteria.iter().all(|c| match c {
            Criterion::All => true,
            Criterion::User(list) => match_pattern_list(conn.user, list) == Some(true),
            Criterion::Group(list) => {
                let mut found = false;
                for g in conn.groups {
                    match match_pattern_list(g, list) {
                        None => return false,
                        Some(true) => found = true,
                        Some(false) => {}
                    }
                }
                found
            }
            Criterion::Address(list) => addr_match_list(conn.address, list) == Ok(Some(true)),
            Criterion::LocalPort(p) => *p == conn.local_port,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Keyword table

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    Port,
    ListenAddress,
    HostKey,
    PasswordAuthentication,
    PubkeyAuthentication,
    AuthorizedKeysFile,
    MaxAuthTries,
    LoginGraceTime,
    MaxStartups,
    PerSourcePenalties,
    PerSourcePenaltyExemptList,
    MaxSessions,
    AllowUsers,
    DenyUsers,
    AllowGroups,
    DenyGroups,
    AcceptEnv,
    Subsystem,
    ForceCommand,
    ChrootDirectory,
    AllowTcpForwarding,
    X11Forwarding,
    PermitTunnel,
    DisableForwarding,
    Banner,
    SyslogFacility,
    LogLevel,
    UsersFile,
    AtomicUploads,
    Match,
    Include,
    /// Accepted, no effect; the flag says whether OpenSSH allows it inside `Match`.
    Ignored(bool),
}

/// (lower-case keyword, kind, allowed in Match)
const KEYWORDS: &[(&str, Kw, bool)] = &[
    ("port", Kw::Port, false),
    ("listenaddress", Kw::ListenAddress, false),
    ("hostkey", Kw::HostKey, false),
    ("passwordauthentication", Kw::PasswordAuthentication, true),
    ("pubkeyauthentication", Kw::PubkeyAuthentication, true),
    ("authorizedkeysfile", Kw::AuthorizedKeysFile, true),
    ("authorizedkeysfile2", Kw::AuthorizedKeysFile, true),
    ("maxauthtries", Kw::MaxAuthTries, true),
    ("logingracetime", Kw::LoginGraceTime, false),
    ("maxstartups", Kw::MaxStartups, false),
    ("maxsessions", Kw::MaxSessions, true),
    ("allowusers", Kw::AllowUsers, true),
    ("denyusers", Kw::DenyUsers, true),
    ("allowgroups", Kw::AllowGroups, true),
    ("denygroups", Kw::DenyGroups, true),
    ("acceptenv", Kw::AcceptEnv, true),
    ("subsystem", Kw::Subsystem, false),
    ("forcecommand", Kw::ForceCommand, true),
    ("chrootdirectory", Kw::ChrootDirectory, true),
    ("allowtcpforwarding", Kw::AllowTcpForwarding, true),
    ("x11forwarding", Kw::X11Forwarding, true),
    ("permittunnel", Kw::PermitTunnel, true),
    ("disableforwarding", Kw::DisableForwarding, true),
    ("banner", Kw::Banner, true),
    ("syslogfacility", Kw::SyslogFacility, false),
    ("loglevel", Kw::LogLevel, true),
    ("usersfile", Kw::UsersFile, false),
    ("atomicuploads", Kw::AtomicUploads, true),
    ("match", Kw::Match, true),
    ("include", Kw::Include, true),
    // Accepted and ignored; allowed in Match as in OpenSSH's servconf.c (SSHCFG_ALL).
    ("allowagentforwarding", Kw::Ignored(true), true),
    ("allowstreamlocalforwarding", Kw::Ignored(true), true),
    ("authenticationmethods", Kw::Ignored(true), true),
    ("authorizedkeyscommand", Kw::Ignored(true), true),
    ("authorizedkeyscommanduser", Kw::Ignored(true), true),
    ("authorizedprincipalscommand", Kw::Ignored(true), true),
    ("authorizedprincipalscommanduser", Kw::Ignored(true), true),
    ("authorizedprincipalsfile", Kw::Ignored(true), true),
    ("channeltimeout", Kw::Ignored(true), true),
    ("clientalivecountmax", Kw::Ignored(true), true),
    ("clientaliveinterval", Kw::Ignored(true), true),
    ("exposeauthinfo", Kw::Ignored(true), true),
    ("gatewayports", Kw::Ignored(true), true),
    ("gssapiauthentication", Kw::Ignored(true), true),
    ("hostbasedacceptedalgorithms", Kw::Ignored(true), true),
    ("hostbasedacceptedkeytypes", Kw::Ignored(true), true),
    ("hostbasedauthentication", Kw::Ignored(true), true),
    ("hostbasedusesnamefrompacketonly", Kw::Ignored(true), true),
    ("ipqos", Kw::Ignored(true), true),
    ("kbdinteractiveauthentication", Kw::Ignored(true), true),
    ("challengeresponseauthentication", Kw::Ignored(true), true),
    ("kerberosauthentication", Kw::Ignored(true), true),
    ("logverbose", Kw::Ignored(true), true),
    ("permitemptypasswords", Kw::Ignored(true), true),
    ("permitlisten", Kw::Ignored(true), true),
    ("permitopen", Kw::Ignored(true), true),
    ("permitrootlogin", Kw::Ignored(true), true),
    ("permittty", Kw::Ignored(true), true),
    ("permituserrc", Kw::Ignored(true), true),
    ("pubkeyacceptedalgorithms", Kw::Ignored(true), true),
    ("pubkeyacceptedkeytypes", Kw::Ignored(true), true),
    ("pubkeyauthoptions", Kw::Ignored(true), true),
    ("rdomain", Kw::Ignored(true), true),
    ("rekeylimit", Kw::Ignored(true), true),
    ("revokedkeys", Kw::Ignored(true), true),
    ("setenv", Kw::Ignored(true), true),
    ("streamlocalbindmask", Kw::Ignored(true), true),
    ("streamlocalbindunlink", Kw::Ignored(true), true),
    ("trustedusercakeys", Kw::Ignored(true), true),
    ("unusedconnectiontimeout", Kw::Ignored(true), true),
    ("x11displayoffset", Kw::Ignored(true), true),
    ("x11uselocalhost", Kw::Ignored(true), true),
    // Accepted and ignored; global only.
    ("addressfamily", Kw::Ignored(false), false),
    ("casignaturealgorithms", Kw::Ignored(false), false),
    ("ciphers", Kw::Ignored(false), false),
    ("compression", Kw::Ignored(false), false),
    ("debianbanner", Kw::Ignored(false), false),
    ("fingerprinthash", Kw::Ignored(false), false),
    ("gssapicleanupcredentials", Kw::Ignored(false), false),
    ("gssapikeyexchange", Kw::Ignored(false), false),
    ("gssapistrictacceptorcheck", Kw::Ignored(false), false),
    ("hostcertificate", Kw::Ignored(false), false),
    ("hostkeyagent", Kw::Ignored(false), false),
    ("hostkeyalgorithms", Kw::Ignored(false), false),
    ("kerberosgetafstoken", Kw::Ignored(false), false),
    ("kerberosorlocalpasswd", Kw::Ignored(false), false),
    ("kerberosticketcleanup", Kw::Ignored(false), false),
    ("kexalgorithms", Kw::Ignored(false), false),
    ("macs", Kw::Ignored(false), false),
    ("modulifile", Kw::Ignored(false), false),
    ("permituserenvironment", Kw::Ignored(false), false),
    ("persourcemaxstartups", Kw::Ignored(false), false),
    ("persourcenetblocksize", Kw::Ignored(false), false),
    ("persourcepenalties", Kw::PerSourcePenalties, false),
    (
        "persourcepenaltyexemptlist",
        Kw::PerSourcePenaltyExemptList,
        false,
    ),
    ("pidfile", Kw::Ignored(false), false),
    ("printlastlog", Kw::Ignored(false), false),
    ("printmotd", Kw::Ignored(false), false),
    ("protocol", Kw::Ignored(false), false),
    ("requiredrsasize", Kw::Ignored(false), false),
    ("securitykeyprovider", Kw::Ignored(false), false),
    ("strictmodes", Kw::Ignored(false), false),
    ("tcpkeepalive", Kw::Ignored(false), false),
    ("usedns", Kw::Ignored(false), false),
    ("usepam", Kw::Ignored(false), false),
    ("useprivilegeseparation", Kw::Ignored(false), false),
    ("versionaddendum", Kw::Ignored(false), false),
];

fn lookup(keyword: &str) -> Option<(Kw, bool)> {
    let lower = keyword.to_ascii_lowercase();
    KEYWORDS
        .iter()
        .find(|(name, _, _)| *name == lower)
        .map(|&(_, kw, in_match)| (kw, in_match))
}

// ---------------------------------------------------------------------------------------
// Line splitting

/// Splits one line into keyword and arguments (sshd's `strdelim` + `argv_split`): arguments
/// separated by whitespace, one `=` allowed between keyword and first argument, `"`/`'`
/// quoting, `\` escapes, `#` at the start of an argument starts a comment.
/// Returns `Ok(None)` for blank and comment lines.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>, LineError> {
    let s = line.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return Ok(None);
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(s.len());
    let keyword = &s[..end];
    let mut rest = s[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    if keyword.is_empty() {
        return Err(LineError::BadOption(String::new()));
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            if quote.is_none() && c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\\' => match chars.peek() {
                    Some(&n) if n == '\\' || n == '"' || n == '\'' || n.is_whitespace() => {
                        arg.push(n);
                        chars.next();
                    }
                    _ => arg.push('\\'),
                },
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c2 if Some(c2) == quote => quote = None,
                _ => arg.push(c),
            }
        }
        if quote.is_some() {
            return Err(LineError::InvalidQuotes);
        }
        args.push(arg);
    }
    Ok(Some((keyword.to_string(), args)))
}

// ---------------------------------------------------------------------------------------
// Value parsers

fn one_arg<'a>(keyword: &str, args: &'a [String]) -> Result<&'a str, LineError> {
    match args {
        [] => Err(LineError::MissingArgument(keyword.to_string())),
        [a] => Ok(a),
        _ => Err(LineError::ExtraArguments(keyword.to_string())),
    }
}

fn at_least_one(keyword: &str, args: &[String]) -> Result<(), LineError> {
    if args.is_empty() || args.iter().all(String::is_empty) {
        Err(LineError::MissingArgument(keyword.to_string()))
    } else {
        Ok(())
    }
}

fn parse_yes_no(keyword: &str, args: &[String]) -> Result<bool, LineError> {
    let a = one_arg(keyword, args)?;
    match a.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(LineError::BadYesNo(a.to_string())),
    }
}

/// `0` is accepted (sshd refuses it) and means "any free port": the listener logs the port it
/// got, which tests and labs read back.
fn parse_port(s: &str) -> Result<u16, LineError> {
    match s.parse::<u16>() {
        Ok(p) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(LineError::BadPort(s.to_string())),
    }
}

fn parse_u32(keyword: &str, s: &str) -> Result<u32, LineError> {
    if !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = s.parse::<u32>()
    {
        return Ok(n);
    }
    Err(LineError::BadNumber {
        keyword: keyword.to_string(),
        value: s.to_string(),
    })
}

/// sshd's `convtime`: `90`, `90s`, `2m`, `1h30m`, units s m h d w (case-insensitive).
pub fn parse_time(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
        } else {
            let mult: u64 = match c.to_ascii_lowercase() {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return None,
            };
            total = total.checked_add(num?.checked_mul(mult)?)?;
            num = None;
        }
    }
    if let Some(n) = num {
        total = total.checked_add(n)?;
    }
    // sshd keeps times in an int.
    if total > i32::MAX as u64 {
        return None;
    }
    Some(Duration::from_secs(total))
}

fn parse_max_startups(s: &str) -> Result<MaxStartups, LineError> {
    let bad = || LineError::BadMaxStartups(s.to_string());
    let nums: Vec<&str> = s.split(':').collect();
    let num = |x: &str| -> Result<u32, LineError> {
        if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
            x.parse::<u32>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let ms = match nums.as_slice() {
        [n] => {
            let n = num(n)?;
            MaxStartups {
                start: n,
                rate: 100,
                full: n,
            }
        }
        [a, b, c] => MaxStartups {
            start: num(a)?,
            rate: num(b)?,
            full: num(c)?,
        },
        _ => return Err(bad()),
    };
    if ms.start > ms.full || ms.full < 1 || ms.rate < 1 || ms.rate > 100 {
        return Err(bad());
    }
    Ok(ms)
}

fn parse_listen_address(s: &str) -> Result<ListenAddress, LineError> {
    let bad = || LineError::BadListenAddress(s.to_string());
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(bad)?)?),
        };
        (host, port)
    } else {
        let colons = s.matches(':').count();
        if colons == 1 {
            let (h, p) = s.split_once(':').ok_or_else(bad)?;
            (h, Some(parse_port(p)?))
        } else {
            if colons > 1 && s.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad());
            }
            (s, None)
        }
    };
    // A host name or an address literal (`%` for an IPv6 scope), nothing else: a stray or
    // unclosed bracket is refused by OpenSSH too ("bad address:port usage"), and a blank,
    // `=`, `#` or quote would make `-T` print a line that does not parse back.
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%');
    if host.is_empty() || !host.chars().all(host_char) {
        return Err(bad());
    }
    Ok(ListenAddress {
        host: host.to_string(),
        port,
    })
}

fn none_or(s: &str) -> Option<String> {
    if s.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(s.to_string())
    }
}

fn parse_match(args: &[String]) -> Result<MatchLine, LineError> {
    if args.is_empty() {
        return Err(LineError::MatchEmpty);
    }
    let mut criteria = Vec::new();
    let mut it = args.iter();
    while let Some(attr) = it.next() {
        let lower = attr.to_ascii_lowercase();
        if lower == "all" {
            if args.len() != 1 {
                return Err(LineError::MatchAllCombined);
            }
            criteria.push(Criterion::All);
            continue;
        }
        let known = matches!(lower.as_str(), "user" | "group" | "address" | "localport");
        if !known {
            return Err(LineError::MatchUnsupported(attr.clone()));
        }
        let value = match it.next() {
            Some(v) if !v.is_empty() => v.clone(),
            _ => return Err(LineError::MatchMissingValue(attr.clone())),
        };
        criteria.push(match lower.as_str() {
            "user" => Criterion::User(value),
            "group" => Criterion::Group(value),
            "address" => {
                if addr_match_list(
                    "0.0.0.0".parse().map_err(|_| LineError::MatchEmpty)?,
                    &value,
                )
                .is_err()
                {
                    return Err(LineError::MatchBadAddress(value));
                }
                Criterion::Address(value)
            }
            _ => Criterion::LocalPort(
                parse_port(&value).map_err(|_| LineError::MatchBadPort(value.clone()))?,
            ),
        });
    }
    Ok(MatchLine { criteria })
}

/// Validates one non-Match, non-Include directive into a [`Setting`]; `Ok(None)` for
/// accepted-but-ignored keywords.
fn parse_setting(kw: Kw, keyword: &str, args: &[String]) -> Result<Option<Setting>, LineError> {
    let s = match kw {
        Kw::Port => Setting::Port(parse_port(one_arg(keyword, args)?)?),
        Kw::ListenAddress => {
            // `ListenAddress addr [rdomain name]`: the rdomain part is not supported.
            Setting::ListenAddress(parse_listen_address(one_arg(keyword, args)?)?)
        }
        Kw::HostKey => Setting::HostKey(one_arg(keyword, args)?.to_string()),
        Kw::PasswordAuthentication => Setting::PasswordAuthentication(parse_yes_no(keyword, args)?),
        Kw::PubkeyAuthentication => Setting::PubkeyAuthentication(parse_yes_no(keyword, args)?),
        Kw::AuthorizedKeysFile => {
            at_least_one(keyword, args)?;
            if args.len() == 1 && args[0].eq_ignore_ascii_case("none") {
                Setting::AuthorizedKeysFile(Vec::new())
            } else {
                Setting::AuthorizedKeysFile(args.to_vec())
            }
        }
        Kw::MaxAuthTries => Setting::MaxAuthTries(parse_u32(keyword, one_arg(keyword, args)?)?),
        Kw::MaxSessions => Setting::MaxSessions(parse_u32(keyword, one_arg(keyword, args)?)?),
        Kw::LoginGraceTime => {
            let a = one_arg(keyword, args)?;
            Setting::LoginGraceTime(parse_time(a).ok_or_else(|| LineError::BadTime(a.to_string()))?)
        }
        Kw::MaxStartups => Setting::MaxStartups(parse_max_startups(one_arg(keyword, args)?)?),
        Kw::PerSourcePenalties => {
            at_least_one(keyword, args)?;
            Setting::PerSourcePenalties(
                crate::penalty::Settings::parse(args).map_err(LineError::BadPenalties)?,
            )
        }
        Kw::PerSourcePenaltyExemptList => {
            let list = one_arg(keyword, args)?;
            if addr_match_list(
                "127.0.0.1"
                    .parse()
                    .map_err(|_| LineError::BadPenalties(list.into()))?,
                list,
            )
            .is_err()
            {
                return Err(LineError::BadPenalties(format!(
                    "bad exempt list \"{list}\""
                )));
            }
            Setting::PerSourcePenaltyExemptList(vec![list.to_string()])
        }
        Kw::AllowUsers | Kw::DenyUsers | Kw::AllowGroups | Kw::DenyGroups | Kw::AcceptEnv => {
            at_least_one(keyword, args)?;
            let v: Vec<String> = args.iter().filter(|a| !a.is_empty()).cloned().collect();
            match kw {
                Kw::AllowUsers => Setting::AllowUsers(v),
                Kw::DenyUsers => Setting::DenyUsers(v),
                Kw::AllowGroups => Setting::AllowGroups(v),
                Kw::DenyGroups => Setting::DenyGroups(v),
                _ => Setting::AcceptEnv(v),
            }
        }
        Kw::Subsystem => {
            let (name, cmd) = match args {
                [] => return Err(LineError::MissingArgument(keyword.to_string())),
                [_] => return Err(LineError::MissingArgument(keyword.to_string())),
                [name, cmd @ ..] => (name, cmd),
            };
            if name == "sftp" {
                Setting::SubsystemSftp(cmd.join(" "))
            } else {
                Setting::OtherSubsystem
            }
        }
        Kw::ForceCommand => {
            at_least_one(keyword, args)?;
            Setting::ForceCommand(none_or(&args.join(" ")))
        }
        Kw::ChrootDirectory => Setting::ChrootDirectory(none_or(one_arg(keyword, args)?)),
        Kw::Banner => Setting::Banner(none_or(one_arg(keyword, args)?)),
        Kw::AllowTcpForwarding => {
            let a = one_arg(keyword, args)?;
            Setting::AllowTcpForwarding(match a.to_ascii_lowercase().as_str() {
                "yes" | "all" => TcpForwarding::Yes,
                "no" => TcpForwarding::No,
                "local" => TcpForwarding::Local,
                "remote" => TcpForwarding::Remote,
                _ => {
                    return Err(LineError::BadValue {
                        keyword: keyword.to_string(),
                        value: a.to_string(),
                    });
                }
            })
        }
        Kw::PermitTunnel => {
            let a = one_arg(keyword, args)?;
            Setting::PermitTunnel(match a.to_ascii_lowercase().as_str() {
                "yes" => PermitTunnel::Yes,
                "no" => PermitTunnel::No,
                "point-to-point" => PermitTunnel::PointToPoint,
                "ethernet" => PermitTunnel::Ethernet,
                _ => {
                    return Err(LineError::BadValue {
                        keyword: keyword.to_string(),
                        value: a.to_string(),
                    });
                }
            })
        }
        Kw::X11Forwarding => Setting::X11Forwarding(parse_yes_no(keyword, args)?),
        Kw::DisableForwarding => Setting::DisableForwarding(parse_yes_no(keyword, args)?),
        Kw::AtomicUploads => Setting::AtomicUploads(parse_yes_no(keyword, args)?),
        Kw::SyslogFacility => {
            let a = one_arg(keyword, args)?;
            Setting::SyslogFacility(
                SyslogFacility::from_name(a)
                    .ok_or_else(|| LineError::BadFacility(a.to_string()))?,
            )
        }
        Kw::LogLevel => {
            let a = one_arg(keyword, args)?;
            Setting::LogLevel(
                LogLevel::from_name(a).ok_or_else(|| LineError::BadLogLevel(a.to_string()))?,
            )
        }
        Kw::UsersFile => Setting::UsersFile(one_arg(keyword, args)?.to_string()),
        Kw::Ignored(_) => return Ok(None),
        Kw::Match | Kw::Include => return Ok(None),
    };
    Ok(Some(s))
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser<'s> {
    cfg: Config,
    source: &'s mut dyn IncludeSource,
}

impl Parser<'_> {
    /// Parses one file. `outer` is the Match context the file is included from.
    fn parse_file(
        &mut self,
        file: &str,
        text: &str,
        outer: &Option<Vec<usize>>,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut cond = outer.clone();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let err = |kind| ConfigError {
                file: file.to_string(),
                line,
                kind,
            };
            let Some((keyword, args)) = split_line(raw).map_err(err)? else {
                continue;
            };
            let Some((kw, in_match_ok)) = lookup(&keyword) else {
                return Err(err(LineError::BadOption(keyword)));
            };
            let in_match = cond.is_some();
            match kw {
                Kw::Match => {
                    let m = parse_match(&args).map_err(err)?;
                    self.cfg.blocks.push(m);
                    let mut c = outer.clone().unwrap_or_default();
                    c.push(self.cfg.blocks.len() - 1);
                    cond = Some(c);
                }
                Kw::Include => {
                    at_least_one(&keyword, &args).map_err(err)?;
                    for pattern in &args {
                        self.include(pattern, &cond, depth).map_err(|e| match e {
                            IncludeErr::Line(k) => err(k),
                            IncludeErr::Nested(e) => e,
                        })?;
                    }
                }
                _ => {
                    if in_match && !in_match_ok {
                        return Err(err(LineError::NotAllowedInMatch(keyword)));
                    }
                    match parse_setting(kw, &keyword, &args).map_err(err)? {
                        Some(setting) => self.cfg.entries.push(Entry {
                            cond: cond.clone(),
                            setting,
                        }),
                        None => {
                            self.cfg.ignored.push(IgnoredDirective {
                                keyword: keyword.clone(),
                                args: args.clone(),
                                file: file.to_string(),
                                line,
                            });
                            self.cfg.ignored_conds.push(cond.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn include(
        &mut self,
        pattern: &str,
        cond: &Option<Vec<usize>>,
        depth: usize,
    ) -> Result<(), IncludeErr> {
        if depth + 1 > MAX_INCLUDE_DEPTH {
            return Err(IncludeErr::Line(LineError::IncludeDepth));
        }
        let path = if pattern.starts_with('/') {
            pattern.to_string()
        } else if let Some(rest) = pattern.strip_prefix("~/") {
            // sshd expands ~ to root's home only for the server; keep it explicit.
            format!("/root/{rest}")
        } else {
            format!("{SSHD_CONFIG_DIR}/{pattern}")
        };
        let (dir, last) = match path.rsplit_once('/') {
            Some((d, l)) => (if d.is_empty() { "/" } else { d }, l),
            None => ("/", path.as_str()),
        };
        if dir.contains(['*', '?', '[']) {
            return Err(IncludeErr::Line(LineError::IncludeWildcardDir(
                pattern.to_string(),
            )));
        }
        let read_err = |p: &str, message: String| {
            IncludeErr::Line(LineError::IncludeRead {
                path: p.to_string(),
                message,
            })
        };
        let mut names: Vec<String> = self
            .source
            .list_dir(dir)
            .map_err(|m| read_err(dir, m))?
            .into_iter()
            .filter(|n| (!n.starts_with('.') || last.starts_with('.')) && wildcard_match(n, last))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let full = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            let text = self
                .source
                .read_file(&full)
                .map_err(|m| read_err(&full, m))?;
            self.parse_file(&full, &text, cond, depth + 1)
                .map_err(IncludeErr::Nested)?;
        }
        Ok(())
    }
}

enum IncludeErr {
    Line(LineError),
    Nested(ConfigError),
}

/// Parses a configuration.
///
/// `name` is used in error messages (`/etc/ssh/sshd_config`), `overrides` are `-o` values
/// (`Keyword=value` or `Keyword value`; they win over the file and over `Match` blocks),
/// `source` reads `Include`d files.
pub fn parse(
    name: &str,
    text: &str,
    overrides: &[String],
    source: &mut dyn IncludeSource,
) -> Result<Config, ConfigError> {
    let mut p = Parser {
        cfg: Config::default(),
        source,
    };
    for (i, o) in overrides.iter().enumerate() {
        let err = |kind| ConfigError {
            file: COMMAND_LINE.to_string(),
            line: i + 1,
            kind,
        };
        let Some((keyword, args)) = split_line(o).map_err(err)? else {
            continue;
        };
        let Some((kw, _)) = lookup(&keyword) else {
            return Err(err(LineError::BadOption(keyword)));
        };
        match kw {
            Kw::Match => return Err(err(LineError::MatchOnCommandLine)),
            Kw::Include => return Err(err(LineError::BadOption(keyword))),
            _ => {
                if let Some(s) = parse_setting(kw, &keyword, &args).map_err(err)? {
                    p.cfg.overrides.push(s);
                }
            }
        }
    }
    p.parse_file(name, text, &None, 0)?;
    Ok(p.cfg)
}

// ---------------------------------------------------------------------------------------
// Evaluation

#[derive(Default)]
struct Builder {
    layer: u8,
    port: (Vec<u16>, Option<u8>),
    listen: (Vec<ListenAddress>, Option<u8>),
    host_keys: (Vec<String>, Option<u8>),
    allow_users: (Vec<String>, Option<u8>),
    deny_users: (Vec<String>, Option<u8>),
    allow_groups: (Vec<String>, Option<u8>),
    deny_groups: (Vec<String>, Option<u8>),
    accept_env: (Vec<String>, Option<u8>),
    password_authentication: Option<bool>,
    pubkey_authentication: Option<bool>,
    authorized_keys_files: Option<Vec<String>>,
    max_auth_tries: Option<u32>,
    login_grace_time: Option<Duration>,
    max_startups: Option<MaxStartups>,
    max_sessions: Option<u32>,
    subsystem_sftp: Option<String>,
    force_command: Option<Option<String>>,
    chroot_directory: Option<Option<String>>,
    allow_tcp_forwarding: Option<TcpForwarding>,
    x11_forwarding: Option<bool>,
    permit_tunnel: Option<PermitTunnel>,
    disable_forwarding: Option<bool>,
    banner: Option<Option<String>>,
    syslog_facility: Option<SyslogFacility>,
    log_level: Option<LogLevel>,
    users_file: Option<String>,
    atomic_uploads: Option<bool>,
    per_source_penalties: Option<Option<crate::penalty::Settings>>,
    per_source_penalty_exempt: Option<Vec<String>>,
}

fn first<T: Clone>(slot: &mut Option<T>, v: &T) {
    if slot.is_none() {
        *slot = Some(v.clone());
    }
}

fn accumulate<T: Clone>(slot: &mut (Vec<T>, Option<u8>), layer: u8, v: &[T]) {
    match slot.1 {
        Some(l) if l != layer => {}
        _ => {
            slot.0.extend_from_slice(v);
            slot.1 = Some(layer);
        }
    }
}

impl Builder {
    fn apply(&mut self, s: &Setting) {
        let l = self.layer;
        match s {
            Setting::Port(p) => accumulate(&mut self.port, l, &[*p]),
            Setting::ListenAddress(a) => accumulate(&mut self.listen, l, std::slice::from_ref(a)),
            Setting::HostKey(k) => accumulate(&mut self.host_keys, l, std::slice::from_ref(k)),
            Setting::AllowUsers(v) => accumulate(&mut self.allow_users, l, v),
            Setting::DenyUsers(v) => accumulate(&mut self.deny_users, l, v),
            Setting::AllowGroups(v) => accumulate(&mut self.allow_groups, l, v),
            Setting::DenyGroups(v) => accumulate(&mut self.deny_groups, l, v),
            Setting::AcceptEnv(v) => accumulate(&mut self.accept_env, l, v),
            Setting::PasswordAuthentication(b) => first(&mut self.password_authentication, b),
            Setting::PubkeyAuthentication(b) => first(&mut self.pubkey_authentication, b),
            Setting::AuthorizedKeysFile(v) => first(&mut self.authorized_keys_files, v),
            Setting::MaxAuthTries(n) => first(&mut self.max_auth_tries, n),
            Setting::LoginGraceTime(d) => first(&mut self.login_grace_time, d),
            Setting::MaxStartups(m) => first(&mut self.max_startups, m),
            Setting::MaxSessions(n) => first(&mut self.max_sessions, n),
            Setting::SubsystemSftp(c) => first(&mut self.subsystem_sftp, c),
            Setting::ForceCommand(c) => first(&mut self.force_command, c),
            Setting::ChrootDirectory(c) => first(&mut self.chroot_directory, c),
            Setting::AllowTcpForwarding(t) => first(&mut self.allow_tcp_forwarding, t),
            Setting::X11Forwarding(b) => first(&mut self.x11_forwarding, b),
            Setting::PermitTunnel(t) => first(&mut self.permit_tunnel, t),
            Setting::DisableForwarding(b) => first(&mut self.disable_forwarding, b),
            Setting::Banner(b) => first(&mut self.banner, b),
            Setting::SyslogFacility(f) => first(&mut self.syslog_facility, f),
            Setting::LogLevel(v) => first(&mut self.log_level, v),
            Setting::UsersFile(f) => first(&mut self.users_file, f),
            Setting::AtomicUploads(b) => first(&mut self.atomic_uploads, b),
            Setting::PerSourcePenalties(p) => first(&mut self.per_source_penalties, p),
            Setting::PerSourcePenaltyExemptList(v) => first(&mut self.per_source_penalty_exempt, v),
            Setting::OtherSubsystem => {}
        }
    }

    fn finish(self) -> Effective {
        let port = if self.port.0.is_empty() {
            vec![22]
        } else {
            self.port.0
        };
        let listen_spec = if self.listen.0.is_empty() {
            vec![
                ListenAddress {
                    host: "0.0.0.0".into(),
                    port: None,
                },
                ListenAddress {
                    host: "::".into(),
                    port: None,
                },
            ]
        } else {
            self.listen.0
        };
        let mut listen = Vec::new();
        for a in listen_spec {
            match a.port {
                Some(p) => listen.push(ListenEndpoint {
                    host: a.host,
                    port: p,
                }),
                None => {
                    for &p in &port {
                        listen.push(ListenEndpoint {
                            host: a.host.clone(),
                            port: p,
                        });
                    }
                }
            }
        }
        Effective {
            port,
            listen,
            host_keys: self.host_keys.0,
            password_authentication: self.password_authentication.unwrap_or(true),
            pubkey_authentication: self.pubkey_authentication.unwrap_or(true),
            authorized_keys_files: self.authorized_keys_files.unwrap_or_else(|| {
                vec![
                    ".ssh/authorized_keys".into(),
                    ".ssh/authorized_keys2".into(),
                ]
            }),
            max_auth_tries: self.max_auth_tries.unwrap_or(6),
            login_grace_time: self.login_grace_time.unwrap_or(Duration::from_secs(120)),
            max_startups: self.max_startups.unwrap_or(MaxStartups {
                start: 10,
                rate: 30,
                full: 100,
            }),
            max_sessions: self.max_sessions.unwrap_or(10),
            allow_users: self.allow_users.0,
            deny_users: self.deny_users.0,
            allow_groups: self.allow_groups.0,
            deny_groups: self.deny_groups.0,
            subsystem_sftp: self.subsystem_sftp,
            force_command: self.force_command.flatten(),
            chroot_directory: self.chroot_directory.flatten(),
            allow_tcp_forwarding: self.allow_tcp_forwarding.unwrap_or(TcpForwarding::Yes),
            x11_forwarding: self.x11_forwarding.unwrap_or(false),
            permit_tunnel: self.permit_tunnel.unwrap_or(PermitTunnel::No),
            disable_forwarding: self.disable_forwarding.unwrap_or(false),
            banner: self.banner.flatten(),
            syslog_facility: self.syslog_facility.unwrap_or(SyslogFacility::Auth),
            log_level: self.log_level.unwrap_or(LogLevel::Info),
            accept_env: self.accept_env.0,
            users_file: self.users_file,
            atomic_uploads: self.atomic_uploads.unwrap_or(false),
            per_source_penalties: self
                .per_source_penalties
                .unwrap_or_else(|| Some(crate::penalty::Settings::default())),
            per_source_penalty_exempt: self.per_source_penalty_exempt.unwrap_or_default(),
        }
    }
}

impl Config {
    fn cond_matches(&self, cond: &[usize], conn: &ConnectionSpec<'_>) -> bool {
        cond.iter()
            .all(|&i| self.blocks.get(i).is_some_and(|m| m.matches(conn)))
    }

    /// Values in force for a connection (`Match` blocks evaluated).
    pub fn effective(&self, conn: &ConnectionSpec<'_>) -> Effective {
        self.build(Some(conn))
    }

    /// Values outside any `Match` block (what `sshd -T` shows without `-C`).
    pub fn global(&self) -> Effective {
        self.build(None)
    }

    fn build(&self, conn: Option<&ConnectionSpec<'_>>) -> Effective {
        let mut b = Builder::default();
        for s in &self.overrides {
            b.apply(s);
        }
        b.layer = 1;
        if let Some(conn) = conn {
            for e in &self.entries {
                if let Some(c) = &e.cond
                    && self.cond_matches(c, conn)
                {
                    b.apply(&e.setting);
                }
            }
        }
        b.layer = 2;
        for e in self.entries.iter().filter(|e| e.cond.is_none()) {
            b.apply(&e.setting);
        }
        b.finish()
    }

    /// Keywords accepted for compatibility that have no effect here, in file order.
    pub fn ignored(&self) -> &[IgnoredDirective] {
        &self.ignored
    }

    /// Prints `eff` like `sshd -T`: lower-case keywords, one per line, then the accepted but
    /// ignored directives that apply to `conn` (global ones when `conn` is `None`).
    pub fn dump(&self, eff: &Effective, conn: Option<&ConnectionSpec<'_>>) -> String {
        let mut o = String::new();
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(o, "{k} {v}");
        };
        let yn = |b: bool| if b { "yes" } else { "no" };
        for p in &eff.port {
            line("port", &p.to_string());
        }
        for l in &eff.listen {
            line("listenaddress", &l.to_string());
        }
        for k in &eff.host_keys {
            line("hostkey", &quote(k));
        }
        line("passwordauthentication", yn(eff.password_authentication));
        line("pubkeyauthentication", yn(eff.pubkey_authentication));
        if eff.authorized_keys_files.is_empty() {
            line("authorizedkeysfile", "none");
        } else {
            let v: Vec<String> = eff.authorized_keys_files.iter().map(|s| quote(s)).collect();
            line("authorizedkeysfile", &v.join(" "));
        }
        line("maxauthtries", &eff.max_auth_tries.to_string());
        line(
            "logingracetime",
            &eff.login_grace_time.as_secs().to_string(),
        );
        let m = eff.max_startups;
        line("maxstartups", &format!("{}:{}:{}", m.start, m.rate, m.full));
        line("maxsessions", &eff.max_sessions.to_string());
        for (k, v) in [
            ("allowusers", &eff.allow_users),
            ("denyusers", &eff.deny_users),
            ("allowgroups", &eff.allow_groups),
            ("denygroups", &eff.deny_groups),
            ("acceptenv", &eff.accept_env),
        ] {
            for p in v {
                line(k, &quote(p));
            }
        }
        if let Some(s) = &eff.subsystem_sftp {
            line("subsystem", &format!("sftp {}", quote_cmd(s)));
        }
        line(
            "forcecommand",
            &eff.force_command
                .as_deref()
                .map_or("none".into(), quote_cmd),
        );
        line(
            "chrootdirectory",
            &eff.chroot_directory.as_deref().map_or("none".into(), quote),
        );
        line("allowtcpforwarding", eff.allow_tcp_forwarding.as_str());
        line("x11forwarding", yn(eff.x11_forwarding));
        line("permittunnel", eff.permit_tunnel.as_str());
        line("disableforwarding", yn(eff.disable_forwarding));
        line(
            "banner",
            &eff.banner.as_deref().map_or("none".into(), quote),
        );
        line("syslogfacility", &eff.syslog_facility.to_string());
        line("loglevel", eff.log_level.name());
        if let Some(u) = &eff.users_file {
            line("usersfile", &quote(u));
        }
        line("atomicuploads", yn(eff.atomic_uploads));
        match &eff.per_source_penalties {
            Some(p) => line("persourcepenalties", &p.to_string()),
            None => line("persourcepenalties", "no"),
        }
        for l in &eff.per_source_penalty_exempt {
            line("persourcepenaltyexemptlist", l);
        }
        for (d, cond) in self.ignored.iter().zip(&self.ignored_conds) {
            let applies = match (cond, conn) {
                (None, _) => true,
                (Some(c), Some(conn)) => self.cond_matches(c, conn),
                (Some(_), None) => false,
            };
            if applies {
                let args: Vec<String> = d.args.iter().map(|s| quote(s)).collect();
                line(&d.keyword.to_ascii_lowercase(), &args.join(" "));
            }
        }
        o
    }
}

/// Prints a command (ForceCommand, Subsystem) unquoted when re-parsing gives it back.
fn quote_cmd(s: &str) -> String {
    if s.contains(|c: char| "\"'\\#=".contains(c)) {
        quote(s)
    } else {
        s.to_string()
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || "\"'\\#=".contains(c)) {
        return s.to_string();
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

// ---------------------------------------------------------------------------------------
// Access lists

/// Applies `DenyUsers`, `AllowUsers`, `DenyGroups`, `AllowGroups` in OpenSSH's order.
/// `user@host` patterns in the user lists also match the client address (CIDR or
/// wildcards).
pub fn user_allowed(
    eff: &Effective,
    user: &str,
    groups: &[String],
    address: IpAddr,
) -> Result<(), DenyReason> {
    let from = address.to_string();
    let who = || (user.to_string(), from.clone());
    let user_matches = |pat: &str| -> bool {
        match pat.split_once('@') {
            Some((u, h)) => {
                wildcard_match(user, u) && addr_match_list(address, h) == Ok(Some(true))
            }
            None => wildcard_match(user, pat),
        }
    };
    if eff.deny_users.iter().any(|p| user_matches(p)) {
        let (user, from) = who();
        return Err(DenyReason::ListedInDenyUsers { user, from });
    }
    if !eff.allow_users.is_empty() && !eff.allow_users.iter().any(|p| user_matches(p)) {
        let (user, from) = who();
        return Err(DenyReason::NotListedInAllowUsers { user, from });
    }
    if !eff.deny_groups.is_empty() || !eff.allow_groups.is_empty() {
        if groups.is_empty() {
            let (user, from) = who();
            return Err(DenyReason::NotInAnyGroup { user, from });
        }
        let any = |pats: &[String]| {
            groups
                .iter()
                .any(|g| pats.iter().any(|p| wildcard_match(g, p)))
        };
        if any(&eff.deny_groups) {
            let (user, from) = who();
            return Err(DenyReason::GroupListedInDenyGroups { user, from });
        }
        if !eff.allow_groups.is_empty() && !any(&eff.allow_groups) {
            let (user, from) = who();
            return Err(DenyReason::NoGroupInAllowGroups { user, from });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Pattern matching

/// `*` and `?` wildcard match (OpenSSH `match_pattern`), linear-time backtracking.
pub fn wildcard_match(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// OpenSSH `match_pattern_list`: `Some(true)` if a positive pattern matched and no negated
/// one did, `None` if a negated pattern matched, `Some(false)` otherwise.
fn match_pattern_list(s: &str, list: &str) -> Option<bool> {
    let mut positive = false;
    for pat in list.split(',') {
        let (neg, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        if wildcard_match(s, pat) {
            if neg {
                return None;
            }
            positive = true;
        }
    }
    Some(positive)
}

/// A CIDR block `addr/len` (or a bare address).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && l.len() <= 3 => {
            l.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => max,
    };
    (len <= max).then_some((addr, len))
}

fn cidr_contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(a)) => a
            .to_ipv4_mapped()
            .is_some_and(|a4| cidr_contains(net, len, IpAddr::V4(a4))),
        _ => false,
    }
}

/// OpenSSH `addr_match_list`: entries are CIDR blocks or wildcard patterns, `!` negates.
/// `Err(())` for a malformed entry.
#[allow(clippy::result_unit_err)]
/// OpenSSH's `addr_match_list`: `Ok(Some(true))` if `addr` matches a positive entry and no
/// negated one, `Ok(None)` if a negated entry matched, `Err` for a malformed list.
pub fn addr_match_list(addr: IpAddr, list: &str) -> Result<Option<bool>, ()> {
    let text = addr.to_string();
    let mut positive = false;
    let mut negated_hit = false;
    for entry in list.split(',') {
        let (neg, e) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        if e.is_empty()
            || !e
                .chars()
                .all(|c| c.is_ascii_hexdigit() || ".:/*?".contains(c))
        {
            return Err(());
        }
        let hit = if e.contains(['*', '?']) {
            if e.contains('/') {
                return Err(());
            }
            wildcard_match(&text, e)
        } else {
            let (net, len) = parse_cidr(e).ok_or(())?;
            cidr_contains(net, len, addr)
        };
        if hit {
            if neg {
                negated_hit = true;
            } else {
                positive = true;
            }
        }
    }
    Ok(if negated_hit { None } else { Some(positive) })
}

// ---------------------------------------------------------------------------------------
// Tokens

/// Expands `%h` (home), `%u` (user), `%U` (uid), `%%`, and a leading `~` / `~/` (home), as
/// sshd does for `ChrootDirectory` and `AuthorizedKeysFile`.
pub fn expand_tokens(
    template: &str,
    home: &str,
    user: &str,
    uid: u32,
) -> Result<String, TokenError> {
    let mut out = String::new();
    let mut rest = template;
    if let Some(r) = template.strip_prefix('~') {
        if r.is_empty() || r.starts_with('/') {
            out.push_str(home.trim_end_matches('/'));
            if r.is_empty() && home.trim_end_matches('/').is_empty() {
                out.push('/');
            }
            rest = r;
        } else {
            return Err(TokenError::TildeUser(template.to_string()));
        }
    }
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(home),
            Some('u') => out.push_str(user),
            Some('U') => out.push_str(&uid.to_string()),
            Some('%') => out.push('%'),
            Some(other) => return Err(TokenError::UnknownToken(other)),
            None => return Err(TokenError::TrailingPercent(template.to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const DEBIAN: &str = r#"
# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#AddressFamily any
#ListenAddress 0.0.0.0
#ListenAddress ::

#HostKey /etc/ssh/ssh_host_rsa_key
#HostKey /etc/ssh/ssh_host_ecdsa_key
#HostKey /etc/ssh/ssh_host_ed25519_key

#LoginGraceTime 2m
#PermitRootLogin prohibit-password
#StrictModes yes
#MaxAuthTries 6
#MaxSessions 10

#PubkeyAuthentication yes
#AuthorizedKeysFile	.ssh/authorized_keys .ssh/authorized_keys2

#PasswordAuthentication yes
#PermitEmptyPasswords no

KbdInteractiveAuthentication no

UsePAM yes

#AllowAgentForwarding yes
#AllowTcpForwarding yes
#GatewayPorts no
X11Forwarding yes
#X11DisplayOffset 10
PrintMotd no
#PrintLastLog yes
#TCPKeepAlive yes
#UseDNS no
#PidFile /run/sshd.pid
#MaxStartups 10:30:100
#PermitTunnel no
#ChrootDirectory none
#VersionAddendum none

#Banner none

# Allow client to pass locale environment variables
AcceptEnv LANG LC_*

# override default of no subsystems
Subsystem	sftp	/usr/lib/openssh/sftp-server

Match group sftp
        ChrootDirectory /home/%u
        X11Forwarding no
        AllowTcpForwarding no
        ForceCommand internal-sftp
"#;

    #[derive(Default)]
    struct Fs(BTreeMap<String, String>);

    impl IncludeSource for Fs {
        fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            Ok(self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|n| !n.contains('/'))
                .map(str::to_string)
                .collect())
        }
        fn read_file(&mut self, path: &str) -> Result<String, String> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| format!("{path}: not found"))
        }
    }

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse("/etc/ssh/sshd_config", text, &[], &mut NoIncludes)
    }

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    fn conn<'a>(user: &'a str, groups: &'a [String], addr: &str, port: u16) -> ConnectionSpec<'a> {
        ConnectionSpec {
            user,
            groups,
            address: addr.parse().unwrap(),
            local_port: port,
        }
    }

    fn err(text: &str) -> (usize, String) {
        let e = p(text).unwrap_err();
        (e.line, e.to_string())
    }

    #[test]
    fn debian_default_with_sftp_match() {
        let mut fs = Fs::default();
        fs.0.insert(
            "/etc/ssh/sshd_config.d/10-local.conf".into(),
            "PasswordAuthentication no\n".into(),
        );
        let cfg = parse("/etc/ssh/sshd_config", DEBIAN, &[], &mut fs).unwrap();
        let g = groups(&["calo", "sftp"]);
        let eff = cfg.effective(&conn("calo", &g, "172.16.4.26", 22));
        assert_eq!(eff.chroot_directory.as_deref(), Some("/home/%u"));
        assert_eq!(
            eff.chroot_for("/home/calo", "calo", 1000),
            Some(Ok("/home/calo".to_string()))
        );
        assert_eq!(eff.force_command.as_deref(), Some("internal-sftp"));
        assert!(!eff.x11_forwarding);
        assert_eq!(eff.allow_tcp_forwarding, TcpForwarding::No);
        assert!(!eff.password_authentication, "from the included file");
        assert_eq!(
            eff.subsystem_sftp.as_deref(),
            Some("/usr/lib/openssh/sftp-server")
        );
        assert_eq!(eff.accept_env, vec!["LANG", "LC_*"]);
        assert!(eff.no_host_keys());
        assert_eq!(eff.port, vec![22]);
        assert_eq!(eff.listen.len(), 2);

        let g2 = groups(&["users"]);
        let other = cfg.effective(&conn("bob", &g2, "10.0.0.1", 22));
        assert_eq!(other.chroot_directory, None);
        assert_eq!(other.force_command, None);
        assert!(other.x11_forwarding);
        assert_eq!(other.allow_tcp_forwarding, TcpForwarding::Yes);

        let ign: Vec<&str> = cfg.ignored().iter().map(|d| d.keyword.as_str()).collect();
        assert_eq!(
            ign,
            vec!["KbdInteractiveAuthentication", "UsePAM", "PrintMotd"]
        );
        assert_eq!(cfg.ignored()[1].line, 30);
    }

    #[test]
    fn defaults() {
        let eff = p("").unwrap().global();
        assert_eq!(eff.port, vec![22]);
        assert_eq!(
            eff.listen,
            vec![
                ListenEndpoint {
                    host: "0.0.0.0".into(),
                    port: 22
                },
                ListenEndpoint {
                    host: "::".into(),
                    port: 22
                }
            ]
        );
        assert!(eff.password_authentication && eff.pubkey_authentication);
        assert_eq!(
            eff.authorized_keys_files,
            vec![".ssh/authorized_keys", ".ssh/authorized_keys2"]
        );
        assert_eq!(eff.max_auth_tries, 6);
        assert_eq!(eff.login_grace_time, Duration::from_secs(120));
        assert_eq!(
            eff.max_startups,
            MaxStartups {
                start: 10,
                rate: 30,
                full: 100
            }
        );
        assert_eq!(eff.max_sessions, 10);
        assert_eq!(eff.allow_tcp_forwarding, TcpForwarding::Yes);
        assert!(!eff.x11_forwarding && !eff.disable_forwarding && !eff.atomic_uploads);
        assert_eq!(eff.permit_tunnel, PermitTunnel::No);
        assert_eq!(eff.banner, None);
        assert_eq!(eff.syslog_facility, SyslogFacility::Auth);
        assert_eq!(eff.log_level, LogLevel::Info);
        assert_eq!(eff.subsystem_sftp, None);
        assert_eq!(eff.users_file, None);
    }

    #[test]
    fn values_and_syntax() {
        let cfg = p(concat!(
            "port=2222\n",
            "PORT 2223\n",
            "ListenAddress 127.0.0.1\n",
            "ListenAddress [::1]:2200\n",
            "ListenAddress 10.0.0.1:23\n",
            "ListenAddress fe80::1\n",
            "LoginGraceTime 1h30m\n",
            "MaxStartups 5\n",
            "Banner \"/etc/my banner\" # comment\n",
            "AuthorizedKeysFile none\n",
            "LogLevel debug\n",
            "SyslogFacility local5\n",
            "UsersFile /etc/sftpd/users\n",
            "AtomicUploads yes\n",
            "AllowTcpForwarding local\n",
            "PermitTunnel point-to-point\n",
            "HostKey /etc/ssh/ssh_host_ed25519_key\n",
        ))
        .unwrap();
        let e = cfg.global();
        assert_eq!(e.port, vec![2222, 2223]);
        let l: Vec<String> = e.listen.iter().map(ToString::to_string).collect();
        assert_eq!(
            l,
            vec![
                "127.0.0.1:2222",
                "127.0.0.1:2223",
                "[::1]:2200",
                "10.0.0.1:23",
                "[fe80::1]:2222",
                "[fe80::1]:2223"
            ]
        );
        assert_eq!(e.login_grace_time, Duration::from_secs(5400));
        assert_eq!(
            e.max_startups,
            MaxStartups {
                start: 5,
                rate: 100,
                full: 5
            }
        );
        assert_eq!(e.banner.as_deref(), Some("/etc/my banner"));
        assert!(e.authorized_keys_files.is_empty());
        assert_eq!(e.log_level, LogLevel::Debug1);
        assert_eq!(e.syslog_facility, SyslogFacility::Local(5));
        assert_eq!(e.users_file.as_deref(), Some("/etc/sftpd/users"));
        assert!(e.atomic_uploads);
        assert_eq!(e.allow_tcp_forwarding, TcpForwarding::Local);
        assert_eq!(e.permit_tunnel, PermitTunnel::PointToPoint);
        assert!(!e.no_host_keys());
        assert_eq!(parse_time("0"), Some(Duration::ZERO));
        assert_eq!(parse_time("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_time("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_time("m"), None);
        assert_eq!(parse_time("99999999999999999999"), None);
    }

    #[test]
    fn first_value_wins_globally() {
        let e = p("MaxAuthTries 3\nMaxAuthTries 9\nX11Forwarding yes\nX11Forwarding no\n")
            .unwrap()
            .global();
        assert_eq!(e.max_auth_tries, 3);
        assert!(e.x11_forwarding);
    }

    #[test]
    fn first_match_wins_across_blocks() {
        let cfg = p(concat!(
            "ChrootDirectory /srv/global\n",
            "Match User calo\n",
            "  ChrootDirectory /srv/calo\n",
            "  AllowUsers calo\n",
            "Match Address 172.16.0.0/12\n",
            "  ChrootDirectory /srv/net\n",
            "  MaxSessions 2\n",
            "  AllowUsers other\n",
        ))
        .unwrap();
        let g = groups(&[]);
        let e = cfg.effective(&conn("calo", &g, "172.16.4.26", 22));
        assert_eq!(e.chroot_directory.as_deref(), Some("/srv/calo"));
        assert_eq!(e.max_sessions, 2);
        assert_eq!(e.allow_users, vec!["calo", "other"], "lists accumulate");
        let e = cfg.effective(&conn("bob", &g, "172.16.4.26", 22));
        assert_eq!(e.chroot_directory.as_deref(), Some("/srv/net"));
        let e = cfg.effective(&conn("bob", &g, "192.168.1.1", 22));
        assert_eq!(e.chroot_directory.as_deref(), Some("/srv/global"));
        assert_eq!(e.max_sessions, 10);
    }

    #[test]
    fn match_block_list_replaces_global_list() {
        let cfg = p("AllowUsers a b\nMatch User x\n AllowUsers x\n").unwrap();
        let g = groups(&[]);
        assert_eq!(
            cfg.effective(&conn("x", &g, "10.0.0.1", 22)).allow_users,
            vec!["x"]
        );
        assert_eq!(
            cfg.effective(&conn("y", &g, "10.0.0.1", 22)).allow_users,
            vec!["a", "b"]
        );
    }

    #[test]
    fn match_all_and_none_override() {
        let cfg = p(concat!(
            "Match User calo\n",
            "  ChrootDirectory none\n",
            "Match All\n",
            "  ChrootDirectory /srv/%u\n",
            "  ForceCommand internal-sftp -R\n",
        ))
        .unwrap();
        let g = groups(&[]);
        let e = cfg.effective(&conn("calo", &g, "10.0.0.1", 22));
        assert_eq!(e.chroot_directory, None, "explicit none wins first");
        assert_eq!(e.force_command.as_deref(), Some("internal-sftp -R"));
        let e = cfg.effective(&conn("bob", &g, "10.0.0.1", 22));
        assert_eq!(e.chroot_directory.as_deref(), Some("/srv/%u"));
        assert_eq!(cfg.global().force_command, None);
    }

    #[test]
    fn negation_and_wildcards() {
        let cfg = p("Match User !root,*\n  ForceCommand internal-sftp\n").unwrap();
        let g = groups(&[]);
        assert_eq!(
            cfg.effective(&conn("calo", &g, "10.0.0.1", 22))
                .force_command
                .as_deref(),
            Some("internal-sftp")
        );
        assert_eq!(
            cfg.effective(&conn("root", &g, "10.0.0.1", 22))
                .force_command,
            None
        );
        // Only negative patterns never match.
        let cfg = p("Match User !root\n  ForceCommand x\n").unwrap();
        assert_eq!(
            cfg.effective(&conn("calo", &g, "10.0.0.1", 22))
                .force_command,
            None
        );
        let cfg = p("Match User ca?o,j*\n  ForceCommand x\n").unwrap();
        assert!(
            cfg.effective(&conn("calo", &g, "10.0.0.1", 22))
                .force_command
                .is_some()
        );
        assert!(
            cfg.effective(&conn("jo", &g, "10.0.0.1", 22))
                .force_command
                .is_some()
        );
        assert!(
            cfg.effective(&conn("caloo", &g, "10.0.0.1", 22))
                .force_command
                .is_none()
        );
        // Group: any group matches; a negated group fails the criterion.
        let cfg = p("Match Group sftp*,!wheel\n  ForceCommand x\n").unwrap();
        let g1 = groups(&["users", "sftpusers"]);
        let g2 = groups(&["sftpusers", "wheel"]);
        assert!(
            cfg.effective(&conn("a", &g1, "10.0.0.1", 22))
                .force_command
                .is_some()
        );
        assert!(
            cfg.effective(&conn("a", &g2, "10.0.0.1", 22))
                .force_command
                .is_none()
        );
    }

    #[test]
    fn address_cidr_wildcards_and_localport() {
        let cfg = p(concat!(
            "Match Address 172.16.0.0/12,!172.16.9.0/24,::1/128,192.168.1.*\n",
            "  ForceCommand net\n",
            "Match LocalPort 2222 User calo\n",
            "  ForceCommand port\n",
        ))
        .unwrap();
        let g = groups(&[]);
        let fc =
            |a: &str, port: u16, user: &str| cfg.effective(&conn(user, &g, a, port)).force_command;
        assert_eq!(fc("172.16.4.26", 22, "x").as_deref(), Some("net"));
        assert_eq!(fc("172.31.255.255", 22, "x").as_deref(), Some("net"));
        assert_eq!(fc("172.32.0.1", 22, "x"), None);
        assert_eq!(fc("172.16.9.5", 22, "x"), None);
        assert_eq!(fc("::1", 22, "x").as_deref(), Some("net"));
        assert_eq!(fc("::2", 22, "x"), None);
        assert_eq!(fc("192.168.1.77", 22, "x").as_deref(), Some("net"));
        assert_eq!(fc("10.0.0.1", 2222, "calo").as_deref(), Some("port"));
        assert_eq!(fc("10.0.0.1", 2222, "bob"), None);
        assert_eq!(fc("10.0.0.1", 22, "calo"), None);
    }

    #[test]
    fn overrides_win() {
        let text = "MaxAuthTries 3\nPort 22\nMatch User calo\n  MaxAuthTries 4\n";
        let ov = vec!["MaxAuthTries=9".to_string(), "Port 2022".to_string()];
        let cfg = parse("f", text, &ov, &mut NoIncludes).unwrap();
        let g = groups(&[]);
        let e = cfg.effective(&conn("calo", &g, "10.0.0.1", 22));
        assert_eq!(e.max_auth_tries, 9);
        assert_eq!(e.port, vec![2022], "list overrides replace the file's list");
        let e = parse("f", "", &["Foo=1".into()], &mut NoIncludes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "command-line line 1: Bad configuration option: Foo"
        );
        let e = parse("f", "", &["Match=all".into()], &mut NoIncludes).unwrap_err();
        assert_eq!(e.kind, LineError::MatchOnCommandLine);
    }

    #[test]
    fn errors_with_line_numbers() {
        let f = "/etc/ssh/sshd_config";
        let cases: &[(&str, usize, &str)] = &[
            ("\n\nFoo bar\n", 3, "Bad configuration option: Foo"),
            ("Port\n", 1, "Port missing argument."),
            (
                "#x\nPasswordAuthentication maybe\n",
                2,
                "Bad yes/no argument: maybe",
            ),
            (
                "Port 70000\n",
                1,
                "Badly formatted port number: invalid port \"70000\".",
            ),
            (
                "Port -1\n",
                1,
                "Badly formatted port number: invalid port \"-1\".",
            ),
            (
                "Port 22 23\n",
                1,
                "keyword Port extra arguments at end of line",
            ),
            ("Banner \"abc\n", 1, "invalid quotes"),
            ("MaxAuthTries -1\n", 1, "invalid MaxAuthTries number: -1"),
            ("LoginGraceTime 2x\n", 1, "invalid time value: 2x"),
            ("MaxStartups 30:10\n", 1, "Invalid MaxStartups spec: 30:10"),
            (
                "MaxStartups 100:30:10\n",
                1,
                "Invalid MaxStartups spec: 100:30:10",
            ),
            ("ListenAddress [::1\n", 1, "invalid ListenAddress \"[::1\""),
            ("ListenAddress [st\n", 1, "invalid ListenAddress \"[st\""),
            (
                "ListenAddress a]b:22\n",
                1,
                "invalid ListenAddress \"a]b:22\"",
            ),
            (
                "ListenAddress [[x]:22\n",
                1,
                "invalid ListenAddress \"[[x]:22\"",
            ),
            ("ListenAddress ==\n", 1, "invalid ListenAddress \"=\""),
            (
                "ListenAddress \"a#b\"\n",
                1,
                "invalid ListenAddress \"a#b\"",
            ),
            (
                "ListenAddress \"[a b]:22\"\n",
                1,
                "invalid ListenAddress \"[a b]:22\"",
            ),
            ("LogLevel LOUD\n", 1, "unsupported log level 'LOUD'"),
            (
                "SyslogFacility LOCAL8\n",
                1,
                "unsupported log facility 'LOCAL8'",
            ),
            (
                "AllowTcpForwarding sometimes\n",
                1,
                "unsupported option \"sometimes\" for AllowTcpForwarding",
            ),
            (
                "Match User x\n\n  Port 22\n",
                3,
                "Directive 'Port' is not allowed within a Match block",
            ),
            (
                "Match User x\nUsePAM yes\n",
                2,
                "Directive 'UsePAM' is not allowed within a Match block",
            ),
            ("Match\n", 1, "One or more attributes required for Match"),
            (
                "Match All User x\n",
                1,
                "'all' cannot be combined with other Match attributes",
            ),
            ("Match User\n", 1, "Missing Match criteria for User"),
            ("Match Host foo\n", 1, "Unsupported Match attribute Host"),
            (
                "Match Address 10.0.0.0/33\n",
                1,
                "invalid Match address argument 10.0.0.0/33",
            ),
            (
                "Match Address example.com\n",
                1,
                "invalid Match address argument example.com",
            ),
            (
                "Match LocalPort abc\n",
                1,
                "Invalid LocalPort 'abc' on Match line",
            ),
            ("=yes\n", 1, "Bad configuration option: "),
        ];
        for (text, line, msg) in cases {
            let (l, m) = err(text);
            assert_eq!(l, *line, "{text:?}");
            assert_eq!(m, format!("{f} line {line}: {msg}"), "{text:?}");
        }
    }

    #[test]
    fn allowed_in_match() {
        let cfg = p(concat!(
            "Match Group sftp\n",
            " PermitTTY no\n AcceptEnv X\n PasswordAuthentication no\n",
            " PubkeyAuthentication yes\n MaxAuthTries 2\n MaxSessions 1\n",
            " AllowTcpForwarding no\n X11Forwarding no\n PermitTunnel no\n",
            " DisableForwarding yes\n Banner /b\n AllowUsers a\n DenyUsers b\n",
            " AllowGroups c\n DenyGroups d\n LogLevel VERBOSE\n",
            " AuthorizedKeysFile /k/%u\n",
        ))
        .unwrap();
        let g = groups(&["sftp"]);
        let e = cfg.effective(&conn("a", &g, "10.0.0.1", 22));
        assert!(e.disable_forwarding);
        assert_eq!(e.log_level, LogLevel::Verbose);
        assert_eq!(
            e.authorized_keys_for("/home/a", "a", 5).unwrap(),
            vec!["/k/a"]
        );
        assert_eq!(cfg.ignored()[0].keyword, "PermitTTY");
    }

    #[test]
    fn tokens() {
        assert_eq!(
            expand_tokens("/home/%u/%h/%U/%%", "/home/calo", "calo", 1000).unwrap(),
            "/home/calo//home/calo/1000/%"
        );
        assert_eq!(
            expand_tokens("~/x", "/home/c/", "c", 1).unwrap(),
            "/home/c/x"
        );
        assert_eq!(expand_tokens("~", "/home/c", "c", 1).unwrap(), "/home/c");
        assert_eq!(
            expand_tokens("/%x", "/h", "u", 1),
            Err(TokenError::UnknownToken('x'))
        );
        assert!(matches!(
            expand_tokens("/a%", "/h", "u", 1),
            Err(TokenError::TrailingPercent(_))
        ));
        assert!(matches!(
            expand_tokens("~bob/x", "/h", "u", 1),
            Err(TokenError::TildeUser(_))
        ));
        let e = p("").unwrap().global();
        assert_eq!(
            e.authorized_keys_for("/home/c", "c", 1).unwrap(),
            vec![
                "/home/c/.ssh/authorized_keys",
                "/home/c/.ssh/authorized_keys2"
            ]
        );
    }

    #[test]
    fn dump_for_spec() {
        let cfg = parse("/etc/ssh/sshd_config", DEBIAN, &[], &mut NoIncludes).unwrap();
        let g = groups(&["sftp"]);
        let c = conn("calo", &g, "172.16.4.26", 22);
        let out = cfg.dump(&cfg.effective(&c), Some(&c));
        for l in [
            "port 22\n",
            "listenaddress 0.0.0.0:22\n",
            "listenaddress [::]:22\n",
            "passwordauthentication yes\n",
            "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2\n",
            "maxstartups 10:30:100\n",
            "logingracetime 120\n",
            "subsystem sftp /usr/lib/openssh/sftp-server\n",
            "forcecommand internal-sftp\n",
            "chrootdirectory /home/%u\n",
            "x11forwarding no\n",
            "allowtcpforwarding no\n",
            "syslogfacility AUTH\n",
            "loglevel INFO\n",
            "acceptenv LANG\n",
            "acceptenv LC_*\n",
            "usepam yes\n",
            "printmotd no\n",
            "kbdinteractiveauthentication no\n",
        ] {
            assert!(out.contains(l), "missing {l:?} in\n{out}");
        }
        assert!(out.lines().all(|l| {
            let k = l.split(' ').next().unwrap();
            k == k.to_ascii_lowercase()
        }));
        let plain = cfg.dump(&cfg.global(), None);
        assert!(plain.contains("chrootdirectory none\n"));
        assert!(plain.contains("x11forwarding yes\n"));
    }

    #[test]
    fn dump_round_trip() {
        let text = concat!(
            "Port 2222\nListenAddress 10.1.1.1\nBanner \"/etc/a b\"\nAllowUsers a@10.0.0.0/8 b\n",
            "UsersFile /u\nAtomicUploads yes\nMaxStartups 1:2:3\nLoginGraceTime 1m\n",
            "Subsystem sftp internal-sftp -l VERBOSE\nHostKey /k\nUsePAM yes\n",
        );
        let cfg = p(text).unwrap();
        let e = cfg.global();
        let again = p(&cfg.dump(&e, None)).unwrap().global();
        assert_eq!(e, again);
    }

    #[test]
    fn include_glob_order_and_match_context() {
        let mut fs = Fs::default();
        fs.0.insert("/etc/ssh/d/20-b.conf".into(), "MaxAuthTries 2\n".into());
        fs.0.insert("/etc/ssh/d/10-a.conf".into(), "MaxAuthTries 1\n".into());
        fs.0.insert("/etc/ssh/d/.hidden.conf".into(), "MaxAuthTries 7\n".into());
        fs.0.insert("/etc/ssh/d/x.txt".into(), "Bogus\n".into());
        fs.0.insert(
            "/etc/ssh/m.conf".into(),
            "ForceCommand inc\nMatch User z\nForceCommand z\n".into(),
        );
        let text = "Include d/*.conf\nMatch User calo\nInclude /etc/ssh/m.conf\nMaxSessions 3\nInclude /nonexistent/*.conf\n";
        let cfg = parse("main", text, &[], &mut fs).unwrap();
        let g = groups(&[]);
        let e = cfg.effective(&conn("calo", &g, "10.0.0.1", 22));
        assert_eq!(e.max_auth_tries, 1);
        assert_eq!(e.force_command.as_deref(), Some("inc"));
        assert_eq!(e.max_sessions, 3, "context continues after the include");
        let e = cfg.effective(&conn("z", &g, "10.0.0.1", 22));
        assert_eq!(
            e.force_command, None,
            "nested Match is ANDed with the outer one"
        );
        assert_eq!(e.max_sessions, 10);

        // Errors in included files name that file and line.
        fs.0.insert("/etc/ssh/bad.conf".into(), "\nNope\n".into());
        let e = parse("main", "Include bad.conf\n", &[], &mut fs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/ssh/bad.conf line 2: Bad configuration option: Nope"
        );
        let e = parse("main", "Include /a/*/x.conf\n", &[], &mut fs).unwrap_err();
        assert!(matches!(e.kind, LineError::IncludeWildcardDir(_)));
    }

    #[test]
    fn include_depth_limit() {
        let mut fs = Fs::default();
        fs.0.insert("/etc/ssh/loop.conf".into(), "Include loop.conf\n".into());
        let e = parse("main", "Include loop.conf\n", &[], &mut fs).unwrap_err();
        assert_eq!(e.kind, LineError::IncludeDepth);
        assert_eq!(e.file, "/etc/ssh/loop.conf");
        // 15 levels are fine.
        let mut fs = Fs::default();
        for i in 0..15 {
            fs.0.insert(
                format!("/etc/ssh/l{i}.conf"),
                format!("Include l{}.conf\n", i + 1),
            );
        }
        fs.0.insert("/etc/ssh/l15.conf".into(), "MaxSessions 4\n".into());
        let cfg = parse("main", "Include l0.conf\n", &[], &mut fs).unwrap();
        assert_eq!(cfg.global().max_sessions, 4);
    }

    #[test]
    fn access_lists() {
        let a: IpAddr = "172.16.4.26".parse().unwrap();
        let mk = |t: &str| p(t).unwrap().global();
        let g = groups(&["staff", "sftp"]);
        let none: Vec<String> = Vec::new();
        assert_eq!(user_allowed(&mk(""), "calo", &none, a), Ok(()));
        assert_eq!(
            user_allowed(&mk("AllowUsers bob\n"), "calo", &g, a)
                .unwrap_err()
                .to_string(),
            "User calo from 172.16.4.26 not allowed because not listed in AllowUsers"
        );
        assert_eq!(
            user_allowed(&mk("AllowUsers calo\nDenyUsers c*\n"), "calo", &g, a)
                .unwrap_err()
                .to_string(),
            "User calo from 172.16.4.26 not allowed because listed in DenyUsers"
        );
        assert_eq!(
            user_allowed(&mk("AllowUsers calo@172.16.0.0/12\n"), "calo", &g, a),
            Ok(())
        );
        assert!(user_allowed(&mk("AllowUsers calo@10.0.0.0/8\n"), "calo", &g, a).is_err());
        assert_eq!(
            user_allowed(&mk("AllowGroups wheel\n"), "calo", &g, a)
                .unwrap_err()
                .to_string(),
            "User calo from 172.16.4.26 not allowed because none of user's groups are listed in AllowGroups"
        );
        assert_eq!(
            user_allowed(&mk("AllowGroups sftp\nDenyGroups staff\n"), "calo", &g, a)
                .unwrap_err()
                .to_string(),
            "User calo from 172.16.4.26 not allowed because a group is listed in DenyGroups"
        );
        assert_eq!(
            user_allowed(&mk("AllowGroups sf*\n"), "calo", &g, a),
            Ok(())
        );
        // DenyUsers is checked before group lists.
        assert!(matches!(
            user_allowed(&mk("DenyUsers calo\nDenyGroups staff\n"), "calo", &g, a),
            Err(DenyReason::ListedInDenyUsers { .. })
        ));
        assert!(matches!(
            user_allowed(&mk("AllowGroups sftp\n"), "calo", &none, a),
            Err(DenyReason::NotInAnyGroup { .. })
        ));
    }

    #[test]
    fn wildcard_edge_cases() {
        assert!(wildcard_match("", "*"));
        assert!(wildcard_match("abc", "a*c"));
        assert!(wildcard_match("abc", "*b*"));
        assert!(!wildcard_match("abc", "a?"));
        assert!(wildcard_match(
            "aaaaaaaaaaaaaaaaaaaaaaaab",
            "*a*a*a*a*a*a*b"
        ));
        assert!(!wildcard_match(
            "aaaaaaaaaaaaaaaaaaaaaaaaa",
            "*a*a*a*a*a*a*b"
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*", ov in proptest::collection::vec("\\PC*", 0..3)) {
            let mut fs = Fs::default();
            fs.0.insert("/etc/ssh/x.conf".into(), text.clone());
            if let Ok(cfg) = parse("f", &text, &ov, &mut fs) {
                let g = groups(&["g"]);
                let e = cfg.effective(&conn("u", &g, "10.0.0.1", 22));
                let _ = cfg.dump(&e, None);
            }
        }

        #[test]
        fn keyword_lines_never_panic(
            kw in proptest::sample::select(KEYWORDS.iter().map(|k| k.0).collect::<Vec<_>>()),
            args in "[ a-zA-Z0-9:/\\[\\]%.*!,=\"#-]{0,30}",
            in_match in proptest::bool::ANY,
        ) {
            let text = if in_match { format!("Match All\n{kw} {args}\n") } else { format!("{kw} {args}\n") };
            if let Ok(cfg) = p(&text) {
                let e = cfg.global();
                // Round trip: what -T prints parses back to the same values.
                let again = p(&cfg.dump(&e, None)).unwrap().global();
                proptest::prop_assert_eq!(e, again);
            }
        }
    }
}
