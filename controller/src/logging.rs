//! Where the controller's event lines go ([`EventSink`]s).
//!
//! * [`stdout_sink`]: each line with the embedded controller's stamp
//!   (`*Feb 1 20:29:14.108: %INSTALL-5-…`), one per write, as `controller serve` prints them
//!   by default (under systemd they land in the journal).
//! * [`syslog_sink`]: each line to a local syslog socket (`/dev/log`), as glibc's
//!   `syslog(3)` formats it: `<PRI>Mmm dd HH:MM:SS controller[pid]: %INSTALL-5-…`. The
//!   facility is local7, the one Cisco IOS and the embedded controller log to by default, and
//!   the severity is the number in the line's mnemonic (3 for `%INSTALL-3-…`, else 5), so
//!   `<189>` for a notice and `<187>` for an error. The syslog daemon stamps the line, so the
//!   controller's own stamp is left out. The sending is tftpd's [`Logger`]: it never blocks
//!   (a datagram the daemon cannot take is dropped, the first drop said once on stderr), and
//!   a daemon that restarted is connected to again.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tftpd::syslog::{Logger, Priority};

use crate::events::{Event, stamp};
use crate::images::EventSink;

/// Syslog facility local7 (23), Cisco's default `logging facility`.
pub const FACILITY_LOCAL7: u8 = 23;

/// The syslog ident of `controller serve`.
pub const IDENT: &str = "controller";

/// The `<PRI>` of an event's line: facility local7, the event's severity.
pub fn priority(e: &Event) -> u8 {
    FACILITY_LOCAL7 * 8 + severity(e).severity()
}

/// Lines on stdout with the controller's stamp.
pub fn stdout_sink() -> EventSink {
    Arc::new(|e: Event| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = format!("{}{}\n", stamp(u64::try_from(ms).unwrap_or(0)), e.message());
        let _ = io::stdout().lock().write_all(line.as_bytes());
    })
}

/// The syslog severity of an event's line: error for `%…-3-…`, notice otherwise.
fn severity(e: &Event) -> Priority {
    if e.severity() <= 3 {
        Priority::Err
    } else {
        Priority::Notice
    }
}

/// Lines to the syslog socket at `path` (connected now: an error if nobody listens there),
/// through tftpd's logger (never blocks; a restarted daemon is connected to again).
pub fn syslog_sink(path: &Path) -> io::Result<EventSink> {
    let logger = Logger::syslog_facility(path, IDENT, FACILITY_LOCAL7, 0)?;
    Ok(Arc::new(move |e: Event| {
        logger.log(severity(&e), format_args!("{}", e.message()));
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ApRef, Mac};
    use std::net::SocketAddr;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    fn joined() -> Event {
        Event::ApJoined(ApRef {
            name: "AP-0001".into(),
            mac: Mac([0, 0xa2, 0xee, 0xb1, 0, 1]),
            ap: SocketAddr::from(([127, 0, 0, 1], 40000)),
            ac: SocketAddr::from(([127, 0, 0, 1], 5246)),
        })
    }

    /// A datagram per event, glibc's format, local7 and the mnemonic's severity; nobody
    /// listening any more costs a line on stderr, not a panic or a stall.
    #[test]
    fn syslog_lines_are_local7_with_the_mnemonics_severity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let daemon = UnixDatagram::bind(&path).expect("bind");
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let sink = syslog_sink(&path).expect("sink");
        sink(joined());
        let mut buf = [0u8; 2048];
        let n = daemon.recv(&mut buf).expect("a datagram");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(line.starts_with("<189>"), "{line}");
        let pid = std::process::id();
        assert!(
            line.contains(&format!(
                " controller[{pid}]: %CAPWAPAC_SMGR_TRACE_MESSAGE-5-AP_JOIN_DISJOIN: "
            )),
            "{line}"
        );
        assert!(line.ends_with(" Joined"), "{line}");
        // `<189>Mmm dd HH:MM:SS controller[…` : the daemon's stamp, not the controller's.
        assert_eq!(line.as_bytes().get(20), Some(&b' '), "{line}");
        assert!(!line.contains('*'), "{line}");
        // The daemon restarts (a new socket at the same path): lines reach it again.
        drop(daemon);
        std::fs::remove_file(&path).expect("remove the old socket");
        let daemon = UnixDatagram::bind(&path).expect("bind again");
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        sink(joined());
        let n = daemon.recv(&mut buf).expect("a datagram after the restart");
        assert!(buf[..n].starts_with(b"<189>"));
        // Nobody at all: dropped, no panic, no stall.
        drop(daemon);
        std::fs::remove_file(&path).expect("remove the socket");
        sink(joined());
        sink(joined());
    }

    /// Nothing there, a plain file, a folder, an empty path: each an error at start.
    #[test]
    fn nobody_listening_is_an_error_up_front() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a socket").expect("write");
        for path in [
            dir.path().join("none"),
            file.clone(),
            dir.path().to_path_buf(),
        ] {
            assert!(syslog_sink(&path).is_err(), "{}", path.display());
        }
        assert!(syslog_sink(Path::new("")).is_err());
        assert_eq!(
            std::fs::read(&file).expect("read"),
            b"not a socket",
            "left as it was"
        );
    }

    #[test]
    fn priorities() {
        assert_eq!(priority(&joined()), 189);
        let Ok(source) = relay::Source::parse("tftp://172.16.5.199/EWC/17_9_4a/ap1g6") else {
            panic!("url")
        };
        let failed = Event::InstallFailed {
            error: relay::FetchError::new(&source, relay::ErrorKind::TimedOut, ""),
            source,
        };
        assert_eq!(priority(&failed), 187);
    }
}
