//! Logging with tftpd-hpa's formats: to syslog, or to stderr under a supervisor.
//!
//! * [`Logger::syslog`] writes RFC 3164 lines exactly as glibc's `syslog(3)` does for
//!   `openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON)`, which is what `in.tftpd` uses:
//!   `<PRI>Mmm dd HH:MM:SS ident[pid]: message`, PRI = facility daemon (3) × 8 + severity
//!   (so notice is `<29>`), local time, the day padded with a space (`Nov  1`), no newline.
//!   The `/dev/log` socket is connected when the logger is created and the time zone is loaded
//!   then too, so logging keeps working after `chroot`.
//! * It never blocks: the socket is non-blocking and a datagram that cannot be sent (receive
//!   queue full, syslog daemon gone) is dropped and counted ([`Logger::dropped`]); the first
//!   drop is noted once on stderr. If the daemon restarted, one reconnect is tried (this fails
//!   harmlessly inside a chroot).
//! * [`Logger::stderr`] writes just the message and a newline (journald adds its own prefix).
//!   A write to stderr can block if whoever reads it stalls; messages are short and journald
//!   drains promptly.
//! * [`Logger::capture`] records `(Priority, message)` pairs for tests.
//!
//! The logger does not filter: callers compare [`Logger::verbosity`] with the level a message
//! needs (tftpd-hpa: `RRQ from …` at ≥ 1, `sending NAK …` at ≥ 2, `remap: …` at ≥ 3).
//!
//! Not reproduced from glibc: the fallback to a `SOCK_STREAM` `/dev/log`.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The local syslog socket glibc writes to.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// Syslog facility `LOG_DAEMON`, the one `in.tftpd` opens its log with.
pub const FACILITY_DAEMON: u8 = 3;

/// Syslog severities tftpd-hpa uses (RFC 5424 §6.2.1 numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// `LOG_ERR`: startup and usage errors, failed system calls.
    Err = 3,
    /// `LOG_WARNING`: transfer aborted by a socket error, client refused options.
    Warning = 4,
    /// `LOG_NOTICE`: `RRQ from …` / `WRQ from …`.
    Notice = 5,
    /// `LOG_INFO`: `sending NAK …`, `remap: …`.
    Info = 6,
    /// `LOG_DEBUG`.
    Debug = 7,
}

impl Priority {
    /// The severity number (3 for `Err` … 7 for `Debug`).
    pub const fn severity(self) -> u8 {
        self as u8
    }

    /// The `<PRI>` value with facility daemon: `3 * 8 + severity`.
    pub const fn pri(self) -> u8 {
        FACILITY_DAEMON * 8 + self.severity()
    }
}

/// The syslog ident for `argv[0]`, as `in.tftpd` computes it: what follows the last `/`,
/// unless that is empty, in which case the whole of `argv[0]`.
pub fn ident_from_argv0(argv0: &OsStr) -> String {
    let bytes = argv0.as_bytes();
    let ident = match bytes.iter().rposition(|&b| b == b'/') {
        Some(slash) if slash + 1 < bytes.len() => &bytes[slash + 1..],
        _ => bytes,
    };
    String::from_utf8_lossy(ident).into_owned()
}

/// A broken-down local time, as a syslog header needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalTime {
    /// 1 ..= 12.
    pub month: u8,
    /// 1 ..= 31.
    pub day: u8,
    /// 0 ..= 23.
    pub hour: u8,
    /// 0 ..= 59.
    pub minute: u8,
    /// 0 ..= 60.
    pub second: u8,
}

impl LocalTime {
    /// The current local time, through `localtime_r` (UTC fields if it fails).
    pub fn now() -> LocalTime {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let time = libc::time_t::try_from(seconds).unwrap_or(libc::time_t::MAX);
        // SAFETY: `tm` is plain data (integers and a pointer that may be null), so the
        // all-zero value is valid.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers refer to live, properly aligned locals; localtime_r is
        // thread-safe and only writes into `tm`.
        let result = unsafe { libc::localtime_r(&time, &mut tm) };
        if result.is_null() {
            let day_seconds = seconds % 86_400;
            return LocalTime {
                month: 1,
                day: 1,
                hour: (day_seconds / 3600) as u8,
                minute: (day_seconds / 60 % 60) as u8,
                second: (day_seconds % 60) as u8,
            };
        }
        let field = |value: libc::c_int| u8::try_from(value).unwrap_or(0);
        LocalTime {
            month: field(tm.tm_mon.saturating_add(1)),
            day: field(tm.tm_mday),
            hour: field(tm.tm_hour),
            minute: field(tm.tm_min),
            second: field(tm.tm_sec),
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One syslog datagram as glibc formats it:
/// `<PRI>Mmm dd HH:MM:SS ident[pid]: message` (facility daemon, no trailing newline).
pub fn format_line(
    priority: Priority,
    ident: &str,
    pid: u32,
    time: LocalTime,
    message: &str,
) -> Vec<u8> {
    format_datagram(priority.pri(), ident, pid, time, message)
}

/// [`format_line`] with any `<PRI>` value (facility × 8 + severity), for daemons that log
/// to other facilities (sftpd: AUTH by default).
pub fn format_datagram(pri: u8, ident: &str, pid: u32, time: LocalTime, message: &str) -> Vec<u8> {
    let month = MONTHS
        .get(usize::from(time.month).wrapping_sub(1))
        .copied()
        .unwrap_or("???");
    format!(
        "<{pri}>{month} {:>2} {:02}:{:02}:{:02} {ident}[{pid}]: {message}",
        time.day, time.hour, time.minute, time.second,
    )
    .into_bytes()
}

unsafe extern "C" {
    /// POSIX `tzset(3)` (not declared by the `libc` crate for Linux).
    fn tzset();
}

/// Loads the time zone now, so `localtime_r` keeps local time after `chroot`.
pub fn load_time_zone() {
    // SAFETY: tzset only reads TZ and /etc/localtime into libc's own state; it is called
    // while the logger is being set up, before transfers run.
    unsafe { tzset() };
}

/// A cheap-to-clone, thread-safe logger; see the module documentation.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<Inner>,
}

struct Inner {
    verbosity: u32,
    sink: Sink,
}

enum Sink {
    Syslog(SyslogSink),
    Stderr,
    Capture(Arc<Mutex<Vec<(Priority, String)>>>),
}

struct SyslogSink {
    socket: UnixDatagram,
    path: PathBuf,
    ident: String,
    facility: u8,
    dropped: AtomicU64,
    noted: AtomicBool,
}

impl SyslogSink {
    fn send(&self, priority: Priority, message: &str) {
        let line = format_datagram(
            self.facility * 8 + priority.severity(),
            &self.ident,
            std::process::id(),
            LocalTime::now(),
            message,
        );
        let mut reconnected = false;
        loop {
            match self.socket.send(&line) {
                Ok(_) => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error)
                    if !reconnected
                        && matches!(
                            error.raw_os_error(),
                            Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ECONNRESET)
                        ) =>
                {
                    // The syslog daemon was restarted: its new socket needs a new connect.
                    reconnected = true;
                    if self.socket.connect(&self.path).is_err() {
                        return self.drop_message(&error);
                    }
                }
                Err(error) => return self.drop_message(&error),
            }
        }
    }

    fn drop_message(&self, error: &io::Error) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.noted.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                io::stderr(),
                "{}: cannot log to {}: {error}; dropping syslog messages (counted, not reported again)",
                self.ident,
                self.path.display()
            );
        }
    }
}

impl Logger {
    /// Logs to syslog through [`DEFAULT_SOCKET`] (`/dev/log`), connected now.
    ///
    /// Fails if the socket does not exist or nobody listens on it; the caller decides what to
    /// do then (e.g. fall back to [`Logger::stderr`]).
    pub fn syslog(ident: &str, verbosity: u32) -> io::Result<Logger> {
        Self::syslog_to(Path::new(DEFAULT_SOCKET), ident, verbosity)
    }

    /// [`Logger::syslog`] through another socket path (tests, containers).
    pub fn syslog_to(socket_path: &Path, ident: &str, verbosity: u32) -> io::Result<Logger> {
        Self::syslog_facility(socket_path, ident, FACILITY_DAEMON, verbosity)
    }

    /// [`Logger::syslog_to`] with another facility (`<PRI>` = `facility` × 8 + severity),
    /// for daemons that do not log as tftpd-hpa does (the controller: local7, 23).
    pub fn syslog_facility(
        socket_path: &Path,
        ident: &str,
        facility: u8,
        verbosity: u32,
    ) -> io::Result<Logger> {
        load_time_zone();
        let socket = UnixDatagram::unbound()?;
        socket.connect(socket_path)?;
        socket.set_nonblocking(true)?;
        Ok(Self::with_sink(
            verbosity,
            Sink::Syslog(SyslogSink {
                socket,
                path: socket_path.to_path_buf(),
                ident: ident.to_owned(),
                facility,
                dropped: AtomicU64::new(0),
                noted: AtomicBool::new(false),
            }),
        ))
    }

    /// Logs each message as one line on stderr, without priority or prefix.
    pub fn stderr(verbosity: u32) -> Logger {
        Self::with_sink(verbosity, Sink::Stderr)
    }

    /// Records messages in memory; the [`Captured`] handle reads them back.
    pub fn capture(verbosity: u32) -> (Logger, Captured) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let logger = Self::with_sink(verbosity, Sink::Capture(Arc::clone(&lines)));
        (logger, Captured { lines })
    }

    fn with_sink(verbosity: u32, sink: Sink) -> Logger {
        Logger {
            inner: Arc::new(Inner { verbosity, sink }),
        }
    }

    /// The verbosity (`-v` count / `--verbosity`) the server was started with.
    pub fn verbosity(&self) -> u32 {
        self.inner.verbosity
    }

    /// Syslog messages dropped so far (always 0 for the other kinds).
    pub fn dropped(&self) -> u64 {
        match &self.inner.sink {
            Sink::Syslog(sink) => sink.dropped.load(Ordering::Relaxed),
            Sink::Stderr | Sink::Capture(_) => 0,
        }
    }

    /// Logs one message, e.g.
    /// `logger.log(Priority::Notice, format_args!("RRQ from {addr} filename {name}"))`.
    /// Never blocks on syslog; never panics.
    pub fn log(&self, priority: Priority, message: fmt::Arguments<'_>) {
        match &self.inner.sink {
            Sink::Syslog(sink) => sink.send(priority, &fmt::format(message)),
            Sink::Stderr => {
                let mut line = fmt::format(message);
                line.push('\n');
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Capture(lines) => lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((priority, fmt::format(message))),
        }
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner.sink {
            Sink::Syslog(sink) => format!("syslog({}, {})", sink.path.display(), sink.ident),
            Sink::Stderr => "stderr".to_owned(),
            Sink::Capture(_) => "capture".to_owned(),
        };
        f.debug_struct("Logger")
            .field("sink", &kind)
            .field("verbosity", &self.inner.verbosity)
            .finish()
    }
}

/// Read access to the messages of a [`Logger::capture`] logger.
#[derive(Clone, Debug)]
pub struct Captured {
    lines: Arc<Mutex<Vec<(Priority, String)>>>,
}

impl Captured {
    /// Everything logged so far, in order.
    pub fn lines(&self) -> Vec<(Priority, String)> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything logged so far, emptying the record.
    pub fn take(&self) -> Vec<(Priority, String)> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    const NOV_1: LocalTime = LocalTime {
        month: 11,
        day: 1,
        hour: 9,
        minute: 5,
        second: 3,
    };

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn priorities_and_pri_values() {
        let expected = [
            (Priority::Err, 3, 27),
            (Priority::Warning, 4, 28),
            (Priority::Notice, 5, 29),
            (Priority::Info, 6, 30),
            (Priority::Debug, 7, 31),
        ];
        for (priority, severity, pri) in expected {
            assert_eq!(priority.severity(), severity);
            assert_eq!(priority as u8, severity);
            assert_eq!(priority.pri(), pri);
        }
    }

    #[test]
    fn line_format_matches_glibc() {
        assert_eq!(
            text(format_line(
                Priority::Notice,
                "in.tftpd",
                7927,
                NOV_1,
                "RRQ from 127.0.0.1 filename ewc/AP1G8"
            )),
            "<29>Nov  1 09:05:03 in.tftpd[7927]: RRQ from 127.0.0.1 filename ewc/AP1G8"
        );
        // The capture in the reference (§1.5), rebuilt field by field.
        let nov_21 = LocalTime {
            month: 11,
            day: 21,
            hour: 19,
            minute: 26,
            second: 29,
        };
        assert_eq!(
            text(format_line(
                Priority::Err,
                "in.tftpd",
                32080,
                nov_21,
                "Bad maximum blocksize value (range 512-65464): 100"
            )),
            "<27>Nov 21 19:26:29 in.tftpd[32080]: Bad maximum blocksize value (range 512-65464): 100"
        );
        assert_eq!(
            text(format_line(
                Priority::Info,
                "x",
                1,
                nov_21,
                "sending NAK (1, File not found) to ::1"
            )),
            "<30>Nov 21 19:26:29 x[1]: sending NAK (1, File not found) to ::1"
        );
        let january = LocalTime {
            month: 1,
            day: 9,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert_eq!(
            text(format_line(Priority::Warning, "t", 2, january, "m")),
            "<28>Jan  9 00:00:00 t[2]: m"
        );
        // Out-of-range fields never panic.
        let bogus = LocalTime {
            month: 0,
            day: 99,
            hour: 99,
            minute: 99,
            second: 99,
        };
        assert_eq!(
            text(format_line(Priority::Debug, "t", 3, bogus, "")),
            "<31>??? 99 99:99:99 t[3]: "
        );
    }

    #[test]
    fn ident_is_the_basename_of_argv0() {
        let cases = [
            ("/usr/sbin/in.tftpd", "in.tftpd"),
            ("in.tftpd", "in.tftpd"),
            ("./tftpd", "tftpd"),
            ("/usr/sbin/", "/usr/sbin/"),
            ("/", "/"),
            ("", ""),
        ];
        for (argv0, ident) in cases {
            assert_eq!(ident_from_argv0(OsStr::new(argv0)), ident, "{argv0}");
        }
        assert_eq!(
            ident_from_argv0(OsStr::from_bytes(b"/x/t\xfftp")),
            "t\u{fffd}tp"
        );
    }

    #[test]
    fn local_time_is_plausible() {
        load_time_zone();
        let now = LocalTime::now();
        assert!((1..=12).contains(&now.month), "{now:?}");
        assert!((1..=31).contains(&now.day), "{now:?}");
        assert!(
            now.hour < 24 && now.minute < 60 && now.second <= 60,
            "{now:?}"
        );
    }

    /// Checks `<PRI>Mmm dd HH:MM:SS ident[pid]: message` and returns the timestamp part.
    fn check_wire_line(line: &str, pri: &str, ident: &str, message: &str) -> String {
        let rest = line.strip_prefix(pri).unwrap_or_else(|| panic!("{line}"));
        let (stamp, rest) = rest.split_at(15);
        assert_eq!(rest, format!(" {ident}[{}]: {message}", std::process::id()));
        let bytes = stamp.as_bytes();
        assert!(MONTHS.contains(&&stamp[..3]), "{stamp}");
        assert_eq!(bytes[3], b' ');
        assert!(bytes[4] == b' ' || bytes[4].is_ascii_digit(), "{stamp}");
        assert!(bytes[5].is_ascii_digit(), "{stamp}");
        assert_eq!(&stamp[6..7], " ");
        assert_eq!((bytes[9], bytes[12]), (b':', b':'), "{stamp}");
        stamp.to_owned()
    }

    #[test]
    fn round_trip_through_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let logger = Logger::syslog_to(&path, "in.tftpd", 2).unwrap();
        assert_eq!(logger.verbosity(), 2);
        let clone = logger.clone();
        logger.log(
            Priority::Notice,
            format_args!("RRQ from {} filename {}", "127.0.0.1", "pxelinux.0"),
        );
        std::thread::spawn(move || {
            clone.log(
                Priority::Info,
                format_args!("sending NAK ({}, {}) to {}", 1, "File not found", "::1"),
            );
        })
        .join()
        .unwrap();
        logger.log(Priority::Err, format_args!("no -s directory"));

        let mut buffer = [0u8; 1024];
        let mut received = Vec::new();
        for _ in 0..3 {
            let n = server.recv(&mut buffer).unwrap();
            received.push(String::from_utf8(buffer[..n].to_vec()).unwrap());
        }
        check_wire_line(
            &received[0],
            "<29>",
            "in.tftpd",
            "RRQ from 127.0.0.1 filename pxelinux.0",
        );
        check_wire_line(
            &received[1],
            "<30>",
            "in.tftpd",
            "sending NAK (1, File not found) to ::1",
        );
        check_wire_line(&received[2], "<27>", "in.tftpd", "no -s directory");
        assert_eq!(logger.dropped(), 0);
    }

    #[test]
    fn missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = Logger::syslog_to(&dir.path().join("nope"), "t", 0).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        // A socket file nobody listens on is refused.
        let path = dir.path().join("stale");
        drop(UnixDatagram::bind(&path).unwrap());
        let error = Logger::syslog_to(&path, "t", 0).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap(); // never read
        let logger = Logger::syslog_to(&path, "t", 0).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let writer = logger.clone();
        // A blocking send would hang this thread; the deadline below turns that into a failure.
        std::thread::spawn(move || {
            let padding = "x".repeat(1000);
            for i in 0..20_000 {
                writer.log(Priority::Info, format_args!("{i} {padding}"));
                if writer.dropped() > 0 {
                    break;
                }
            }
            let before = writer.dropped();
            writer.log(Priority::Info, format_args!("one more"));
            let _ = done.send((before, writer.dropped()));
        });
        let (before, after) = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("logging blocked on a full syslog socket");
        assert!(before > 0);
        assert_eq!(after, before + 1);
        drop(server);
    }

    #[test]
    fn vanished_daemon_drops_and_restarted_daemon_is_reconnected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let logger = Logger::syslog_to(&path, "t", 0).unwrap();
        drop(server);
        std::fs::remove_file(&path).unwrap();
        logger.log(Priority::Err, format_args!("lost"));
        logger.log(Priority::Err, format_args!("lost too"));
        assert_eq!(logger.dropped(), 2);

        // The daemon comes back on the same path: the next message gets through.
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        logger.log(Priority::Notice, format_args!("back"));
        let mut buffer = [0u8; 256];
        let n = server.recv(&mut buffer).unwrap();
        let line = String::from_utf8(buffer[..n].to_vec()).unwrap();
        check_wire_line(&line, "<29>", "t", "back");
        assert_eq!(logger.dropped(), 2);
    }

    #[test]
    fn capture_records_priority_and_text() {
        let (logger, captured) = Logger::capture(3);
        assert_eq!(logger.verbosity(), 3);
        logger.log(
            Priority::Notice,
            format_args!("WRQ from {} filename {}", "::1", "new"),
        );
        logger.clone().log(
            Priority::Warning,
            format_args!("tftp: client does not accept options"),
        );
        assert_eq!(
            captured.lines(),
            [
                (Priority::Notice, "WRQ from ::1 filename new".to_owned()),
                (
                    Priority::Warning,
                    "tftp: client does not accept options".to_owned()
                ),
            ]
        );
        assert_eq!(captured.take().len(), 2);
        assert!(captured.lines().is_empty());
        assert_eq!(logger.dropped(), 0);
    }

    #[test]
    fn stderr_logger_and_debug() {
        let logger = Logger::stderr(1);
        assert_eq!(logger.verbosity(), 1);
        logger.log(Priority::Debug, format_args!("stderr logger test line"));
        assert_eq!(logger.dropped(), 0);
        assert_eq!(
            format!("{logger:?}"),
            "Logger { sink: \"stderr\", verbosity: 1 }"
        );
    }

    #[test]
    fn logger_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Logger>();
        check::<Captured>();
    }
}
