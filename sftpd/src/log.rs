//! Log lines with OpenSSH's text, to syslog, a file (`-E`) or stderr (`-e`).
//!
//! Two kinds of lines share one destination:
//! * sshd's own lines (auth, session), filtered by `LogLevel`, with syslog ident `sftpd`
//!   and facility `SyslogFacility`;
//! * internal-sftp's lines, filtered by the session's `-l`, with ident `internal-sftp`
//!   and facility `-f` (see [`Log::with`]).
//!
//! The destination is opened before `chroot`, so sessions inside a jail log with no `/dev/log`
//! there, and internal-sftp lines also reach `-E` files and stderr (OpenSSH sends them only to
//! syslog from inside the jail, the best-known complaint about it). The syslog format is
//! glibc's `syslog(3)` (`<PRI>Mmm dd HH:MM:SS ident[pid]: message`); files and stderr get the
//! bare message, as `sshd -E` and `sshd -e` write it. Verbose lines go to syslog at priority
//! INFO, as OpenSSH sends them. Writing never blocks on syslog and never panics.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::server_args::{Facility, LogLevel};

/// The syslog facility number (`LOG_AUTH` is 4).
pub fn facility_code(facility: Facility) -> u8 {
    match facility {
        Facility::User => 1,
        Facility::Daemon => 3,
        Facility::Auth => 4,
        Facility::AuthPriv => 10,
        Facility::Local(n) => 16 + n.min(7),
    }
}

/// The syslog severity OpenSSH uses for a level (VERBOSE lines go out as INFO).
pub fn severity(level: LogLevel) -> u8 {
    match level {
        LogLevel::Quiet | LogLevel::Fatal => 2,
        LogLevel::Error => 3,
        LogLevel::Info | LogLevel::Verbose => 6,
        LogLevel::Debug1 | LogLevel::Debug2 | LogLevel::Debug3 => 7,
    }
}

enum Sink {
    Syslog(UnixDatagram),
    Stderr,
    File(Mutex<File>),
    Capture(Mutex<Vec<String>>),
}

/// A logger: a shared destination plus the ident, facility and level of one kind of line.
#[derive(Clone)]
pub struct Log {
    sink: Arc<Sink>,
    ident: Arc<str>,
    facility: Facility,
    level: LogLevel,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.sink {
            Sink::Syslog(_) => "syslog",
            Sink::Stderr => "stderr",
            Sink::File(_) => "file",
            Sink::Capture(_) => "capture",
        };
        f.debug_struct("Log")
            .field("sink", &kind)
            .field("ident", &self.ident)
            .field("facility", &self.facility)
            .field("level", &self.level)
            .finish()
    }
}

impl Log {
    fn new(sink: Sink, ident: &str, facility: Facility, level: LogLevel) -> Log {
        Log {
            sink: Arc::new(sink),
            ident: ident.into(),
            facility,
            level,
        }
    }

    /// Syslog through `socket` (normally `/dev/log`), connected now.
    pub fn syslog(
        socket: &Path,
        ident: &str,
        facility: Facility,
        level: LogLevel,
    ) -> io::Result<Log> {
        tftpd::syslog::load_time_zone();
        let s = UnixDatagram::unbound()?;
        s.connect(socket)?;
        s.set_nonblocking(true)?;
        Ok(Self::new(Sink::Syslog(s), ident, facility, level))
    }

    /// Bare lines on stderr (`-e`).
    pub fn stderr(ident: &str, facility: Facility, level: LogLevel) -> Log {
        Self::new(Sink::Stderr, ident, facility, level)
    }

    /// Bare lines appended to a file (`-E`), opened now.
    pub fn file(path: &Path, ident: &str, facility: Facility, level: LogLevel) -> io::Result<Log> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Self::new(
            Sink::File(Mutex::new(file)),
            ident,
            facility,
            level,
        ))
    }

    /// Lines kept in memory, for tests ([`Log::captured`]).
    pub fn capture(level: LogLevel) -> Log {
        Self::new(
            Sink::Capture(Mutex::new(Vec::new())),
            "capture",
            Facility::Auth,
            level,
        )
    }

    /// What a [`Log::capture`] logger holds.
    pub fn captured(&self) -> Vec<String> {
        match &*self.sink {
            Sink::Capture(lines) => lines.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            _ => Vec::new(),
        }
    }

    /// The same destination with another ident, facility and level (internal-sftp lines).
    pub fn with(&self, ident: &str, facility: Facility, level: LogLevel) -> Log {
        Log {
            sink: Arc::clone(&self.sink),
            ident: ident.into(),
            facility,
            level,
        }
    }

    /// The level lines are filtered with.
    pub fn level(&self) -> LogLevel {
        self.level
    }

    /// True when a line at `level` would be written (`QUIET` writes nothing).
    pub fn enabled(&self, level: LogLevel) -> bool {
        level != LogLevel::Quiet && level <= self.level
    }

    /// Writes `message` if `level` is enabled.
    pub fn log(&self, level: LogLevel, message: &str) {
        if !self.enabled(level) {
            return;
        }
        match &*self.sink {
            Sink::Syslog(socket) => {
                let pri = facility_code(self.facility) * 8 + severity(level);
                let line = tftpd::syslog::format_datagram(
                    pri,
                    &self.ident,
                    std::process::id(),
                    tftpd::syslog::LocalTime::now(),
                    message,
                );
                // Non-blocking: a full syslog queue drops the line rather than stall a session.
                let _ = socket.send(&line);
            }
            Sink::Stderr => {
                let _ = writeln!(io::stderr().lock(), "{message}");
            }
            Sink::File(file) => {
                let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
                // One write per line: O_APPEND keeps lines of concurrent sessions whole.
                let _ = f.write_all(format!("{message}\n").as_bytes());
            }
            Sink::Capture(lines) => lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(message.to_owned()),
        }
    }

    /// `logit()`: INFO.
    pub fn info(&self, message: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Info) {
            self.log(LogLevel::Info, &message.to_string());
        }
    }

    /// `verbose()`: VERBOSE.
    pub fn verbose(&self, message: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Verbose) {
            self.log(LogLevel::Verbose, &message.to_string());
        }
    }

    /// `error()`: ERROR.
    pub fn error(&self, message: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Error) {
            self.log(LogLevel::Error, &message.to_string());
        }
    }

    /// `debug()`: DEBUG1.
    pub fn debug(&self, message: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Debug1) {
            self.log(LogLevel::Debug1, &message.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_filter_like_openssh() {
        let log = Log::capture(LogLevel::Info);
        log.verbose(format_args!("hidden"));
        log.info(format_args!("shown {}", 1));
        log.error(format_args!("error"));
        assert_eq!(log.captured(), ["shown 1", "error"]);
        let quiet = Log::capture(LogLevel::Quiet);
        quiet.log(LogLevel::Fatal, "nothing");
        assert!(quiet.captured().is_empty());
        assert!(!quiet.enabled(LogLevel::Quiet));
    }

    #[test]
    fn with_shares_the_destination() {
        let log = Log::capture(LogLevel::Info);
        let sftp = log.with("internal-sftp", Facility::Local(3), LogLevel::Verbose);
        sftp.verbose(format_args!("realpath \".\""));
        log.verbose(format_args!("not at INFO"));
        assert_eq!(log.captured(), ["realpath \".\""]);
    }

    #[test]
    fn syslog_datagram_has_openssh_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let log = Log::syslog(&path, "internal-sftp", Facility::Auth, LogLevel::Verbose)
            .expect("connect");
        log.verbose(format_args!("received client version 3"));
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        // AUTH (4) * 8 + INFO (6) = 38, as captured from OpenSSH in the reference log.
        assert!(text.starts_with("<38>"), "{text}");
        assert!(
            text.ends_with(&format!(
                " internal-sftp[{}]: received client version 3",
                std::process::id()
            )),
            "{text}"
        );
        assert_eq!(facility_code(Facility::Local(7)), 23);
        assert_eq!(severity(LogLevel::Error), 3);
    }

    #[test]
    fn file_lines_are_bare_and_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sftpd.log");
        std::fs::write(&path, "old\n").expect("write");
        let log = Log::file(&path, "sftpd", Facility::Auth, LogLevel::Info).expect("open");
        log.info(format_args!("Server listening on 127.0.0.1 port 2222."));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "old\nServer listening on 127.0.0.1 port 2222.\n");
    }
}
