//! Process wiring shared by the listener and the per-connection session process: flags,
//! reading `sshd_config` (with `Include`), the log destination, and russh's configuration.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet, Preferred, cipher};

use crate::config::{self, Config, ConfigError, Effective, IncludeSource};
use crate::log::Log;
use crate::server_args::{Facility, LogLevel};

/// sshd's flags that sftpd honours (`sshd -D -e -f FILE -p PORT -o K=V -h KEY -E FILE -t -T`).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `-f`: configuration file.
    pub config_file: PathBuf,
    /// `-o` values, then `-p` as `Port N`: they win over the file.
    pub overrides: Vec<String>,
    /// `-h`: host key files (replace `HostKey`).
    pub host_keys: Vec<String>,
    /// `-D`: do not detach.
    pub foreground: bool,
    /// `-e`: log to stderr.
    pub log_stderr: bool,
    /// `-E`: append log lines to this file.
    pub log_file: Option<PathBuf>,
}

/// sshd's default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";

/// Reads `Include`d files from the file system.
#[derive(Debug, Default)]
pub struct FsIncludes;

impl IncludeSource for FsIncludes {
    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn read_file(&mut self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The main file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A line is wrong (the message carries file and line number).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads and parses the configuration named by the flags.
pub fn load_config(flags: &Flags) -> Result<Config, SetupError> {
    let name = flags.config_file.to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&flags.config_file).map_err(|source| SetupError::Read {
        path: name.clone(),
        source,
    })?;
    let mut overrides = flags.overrides.clone();
    for key in &flags.host_keys {
        overrides.push(format!("HostKey {key}"));
    }
    Ok(config::parse(&name, &text, &overrides, &mut FsIncludes)?)
}

/// The log destination: `-E` file, else stderr with `-e`, else syslog through `/dev/log`
/// (stderr if that is missing, as sshd falls back). `ident` is `sftpd` for sshd's lines.
pub fn open_log(flags: &Flags, eff: &Effective) -> std::io::Result<Log> {
    let (facility, level) = (eff.syslog_facility, eff.log_level);
    open_log_with(flags, "sftpd", facility, level)
}

fn open_log_with(
    flags: &Flags,
    ident: &str,
    facility: Facility,
    level: LogLevel,
) -> std::io::Result<Log> {
    if let Some(path) = &flags.log_file {
        return Log::file(path, ident, facility, level);
    }
    if flags.log_stderr {
        return Ok(Log::stderr(ident, facility, level));
    }
    // SFTPD_SYSLOG_SOCKET replaces /dev/log (tests, containers with the socket elsewhere).
    let socket = std::env::var_os("SFTPD_SYSLOG_SOCKET")
        .map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from);
    Log::syslog(&socket, ident, facility, level)
        .or_else(|_| Ok(Log::stderr(ident, facility, level)))
}

/// `PermitRootLogin`, read from the accepted-but-ignored directives: the strictest value
/// anywhere in the file applies (Match conditions are not evaluated for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootLogin {
    /// `yes`.
    Yes,
    /// `prohibit-password` (sshd's default), `without-password`, `forced-commands-only`.
    NoPassword,
    /// `no`.
    No,
}

/// Directives that are accepted for compatibility but would make access looser if ignored.
/// `AuthenticationMethods` (other than `any`) is refused: it would let in methods the
/// administrator meant to forbid. Returns the `PermitRootLogin` policy.
pub fn access_policy(config: &Config) -> Result<RootLogin, String> {
    let mut root = None;
    for d in config.ignored() {
        let first = d.args.first().map(|a| a.to_ascii_lowercase());
        match d.keyword.to_ascii_lowercase().as_str() {
            "authenticationmethods" if first.as_deref() != Some("any") => {
                return Err(format!(
                    "{}: line {}: AuthenticationMethods is not supported by sftpd; use \
                     PasswordAuthentication and PubkeyAuthentication (in Match blocks) instead",
                    d.file, d.line
                ));
            }
            "permitrootlogin" => {
                let v = match first.as_deref() {
                    Some("yes") => RootLogin::Yes,
                    Some("no") => RootLogin::No,
                    _ => RootLogin::NoPassword,
                };
                root = Some(match (root, v) {
                    (Some(RootLogin::No), _) | (_, RootLogin::No) => RootLogin::No,
                    (Some(RootLogin::NoPassword), _) | (_, RootLogin::NoPassword) => {
                        RootLogin::NoPassword
                    }
                    _ => RootLogin::Yes,
                });
            }
            _ => {}
        }
    }
    Ok(root.unwrap_or(RootLogin::NoPassword))
}

/// `PidFile` from the configuration (accepted as an sshd keyword); `none` or absent gives
/// `None`. sftpd has no default pid file, so it never clashes with sshd's `/run/sshd.pid`.
pub fn pid_file(config: &Config) -> Option<PathBuf> {
    config
        .ignored()
        .iter()
        .find(|d| d.keyword.eq_ignore_ascii_case("pidfile"))
        .and_then(|d| d.args.first())
        .filter(|p| !p.eq_ignore_ascii_case("none"))
        .map(PathBuf::from)
}

/// Largest SSH packet we accept (RFC 4253 requires at least 32768 of payload).
pub const MAX_PACKET: u32 = 32_768;
/// The receive window we give each channel: 64 packets, as OpenSSH's 2 MiB, doubled so an
/// uploader with 64 × 256 KiB writes in flight never waits on us.
pub const WINDOW: u32 = 4 * 1024 * 1024;

/// russh's configuration for one connection.
pub fn russh_config(eff: &Effective, keys: Vec<PrivateKey>) -> Arc<russh::server::Config> {
    let mut methods = vec![MethodKind::None];
    if eff.password_authentication {
        methods.push(MethodKind::Password);
    }
    if eff.pubkey_authentication {
        methods.push(MethodKind::PublicKey);
    }
    const CIPHERS: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::AES_128_CTR,
        cipher::AES_192_CTR,
        cipher::AES_256_CTR,
    ];
    Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-sftpd_0.1")),
        methods: MethodSet::from(methods.as_slice()),
        // Rejections are padded to this (so an unknown user and a wrong password look the
        // same), except the `none` probe every OpenSSH client opens with.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        window_size: WINDOW,
        maximum_packet_size: MAX_PACKET,
        channel_buffer_size: 1024,
        event_buffer_size: 64,
        preferred: Preferred {
            cipher: Cow::Borrowed(CIPHERS),
            ..Preferred::default()
        },
        // MaxAuthTries is enforced by the handler, with sshd's log line.
        max_auth_attempts: 0,
        inactivity_timeout: None,
        nodelay: true,
        ..russh::server::Config::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoIncludes;

    fn policy(text: &str) -> Result<RootLogin, String> {
        let cfg = config::parse("sshd_config", text, &[], &mut NoIncludes).expect("parse");
        access_policy(&cfg)
    }

    #[test]
    fn root_login_defaults_to_no_password_and_takes_the_strictest() {
        assert_eq!(policy(""), Ok(RootLogin::NoPassword));
        assert_eq!(policy("PermitRootLogin yes\n"), Ok(RootLogin::Yes));
        assert_eq!(
            policy("PermitRootLogin without-password\n"),
            Ok(RootLogin::NoPassword)
        );
        assert_eq!(
            policy("PermitRootLogin yes\nMatch User x\nPermitRootLogin no\n"),
            Ok(RootLogin::No)
        );
    }

    #[test]
    fn authentication_methods_other_than_any_is_refused_with_its_line() {
        assert_eq!(
            policy("AuthenticationMethods any\n"),
            Ok(RootLogin::NoPassword)
        );
        let Err(err) = policy("Port 22\nAuthenticationMethods publickey,password\n") else {
            panic!("AuthenticationMethods publickey must be refused");
        };
        assert!(err.contains("line 2"), "{err}");
    }
}
