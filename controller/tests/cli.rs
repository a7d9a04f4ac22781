//! The binaries as a user runs them: `controller lab`, `controller serve` with `ap-sim`
//! against it, and `show ap image`, `predownload`, `activate` and `reload` on its control
//! socket — real processes on loopback, their exit statuses, stdout and stderr. The library
//! is called only to set the scene (a staged release, an in-process tftpd).
//!
//! Every process is a [`Proc`], killed when dropped (also when a test panics). No timing is
//! asserted; every wait has a generous deadline.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bundle_tool::version::ApVersion;
use controller::testbed::{ImageServer, LAB_FOLDER, LAB_VERSION, stage_release};
use serde_json::Value;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_controller");
const AP_SIM: &str = env!("CARGO_BIN_EXE_ap-sim");
/// Long enough for a loaded shared machine; a healthy step takes a second or two.
const DEADLINE: Duration = Duration::from_secs(120);
/// The lab gets longer: it synthesizes, stages and serves a bundle first.
const LAB_DEADLINE: Duration = Duration::from_secs(300);
/// The release staged while the controller runs.
const NEXT_VERSION: &str = "17.9.5.47";
/// Tiny images: these tests are about the command line, not the bytes.
const SCALE: f64 = 0.0005;

// ---------------------------------------------------------------------------------------
// Processes

/// A child process with its stdout and stderr collected line by line by two threads;
/// killed (and reaped) when dropped if it is still running.
#[derive(Debug)]
struct Proc {
    what: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// What a finished process left.
#[derive(Debug)]
struct Finished {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "{}: {}\n--- stdout\n{}--- stderr\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }

    /// Asserts exit status 0.
    fn ok(self) -> Finished {
        assert!(self.status.success(), "{}", self.describe());
        self
    }
}

fn collect(stream: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        let mut stream = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stream.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(text.trim_end_matches(['\n', '\r']).to_owned());
                }
            }
        }
    });
    (lines, reader)
}

impl Proc {
    fn spawn(program: &str, args: &[&str]) -> Proc {
        let name = Path::new(program)
            .file_name()
            .map_or_else(|| program.to_owned(), |n| n.to_string_lossy().into_owned());
        let what = format!("{name} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (stdout, out_reader) = collect(child.stdout.take().expect("piped stdout"));
        let (stderr, err_reader) = collect(child.stderr.take().expect("piped stderr"));
        Proc {
            what,
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (SIGTERM, SIGINT, SIGHUP…).
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) touches no memory of ours; `pid` is our child, not reaped yet (we
        // hold its `Child` and only reap it in `wait`/`drop`), so it names no other process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits until a stdout line satisfies `pred`; returns it.
    fn wait_stdout(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(what, false, pred)
    }

    /// Waits until a stderr line satisfies `pred`; returns it.
    fn wait_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(what, true, pred)
    }

    fn wait_line(&mut self, what: &str, stderr: bool, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = if stderr { self.stderr() } else { self.stdout() };
            if let Some(l) = lines.into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                self.running(),
                "{} exited before printing {what}\n{}",
                self.what,
                self.describe()
            );
            assert!(
                Instant::now() < deadline,
                "no line {what} after {DEADLINE:?}\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit (killed and a panic past `timeout`), and for the
    /// readers to drain its output.
    fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => panic!("{}: {e}", self.what),
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}\n{}",
                self.what,
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        Finished {
            what: self.what.clone(),
            status,
            stdout: self.stdout().iter().map(|l| format!("{l}\n")).collect(),
            stderr: self.stderr().iter().map(|l| format!("{l}\n")).collect(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `controller ARGS` to the end.
fn controller(args: &[&str]) -> Finished {
    Proc::spawn(CONTROLLER, args).finish(DEADLINE)
}

// ---------------------------------------------------------------------------------------
// The scene

fn version(v: &str) -> ApVersion {
    v.parse().expect("version")
}

/// A CAPWAP port nobody listens on right now (bound, read, released).
fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("local addr").port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// A config file: `[capwap]` on `port` with loopback timers, then `profile` as the
/// `[image_download]` section.
fn write_config(path: &Path, port: u16, profile: &str) {
    let text = format!(
        "[capwap]\nlisten = \"127.0.0.1:{port}\"\nblock_size = 1377\n\
         retransmit_interval_s = 0.05\nmax_retransmit = 10\n\n[image_download]\n{profile}"
    );
    std::fs::write(path, text).expect("write the config");
}

/// `DIR/srv` with the current release staged as `17_9_4a` (and a `current` link to it if
/// `current`); returns `DIR/srv`.
fn staged(dir: &Path, current: bool) -> PathBuf {
    let root = dir.join("srv");
    std::fs::create_dir_all(&root).expect("mkdir");
    stage_release(&root, "17_9_4a", version(LAB_VERSION), SCALE, current).expect("stage");
    root
}

/// The `[image_download]` section of a local folder.
fn local_profile(folder: &Path, predownload: &str) -> String {
    format!(
        "mode = \"local\"\npath = {:?}\npredownload = \"{predownload}\"\nretry_interval_s = 1\n",
        path_str(folder)
    )
}

/// `controller serve` on a temporary folder's config, socket and cache.
#[derive(Debug)]
struct Served {
    config: PathBuf,
    socket: PathBuf,
    capwap: SocketAddr,
    proc: Proc,
}

impl Served {
    /// Writes the config (`profile` in `dir`, CAPWAP on a free port) and starts the
    /// controller; returns once it says it listens.
    fn start(dir: &Path, profile: &str) -> Served {
        Served::start_with(dir, profile, &[])
    }

    /// [`Served::start`] with more flags for `serve`.
    fn start_with(dir: &Path, profile: &str, flags: &[&str]) -> Served {
        let port = free_udp_port();
        let config = dir.join("controller.toml");
        write_config(&config, port, profile);
        let socket = dir.join("run/controller.sock");
        let cache = dir.join("cache");
        let mut args = vec![
            "serve",
            "--config",
            path_str(&config),
            "--socket",
            path_str(&socket),
            "--cache",
            path_str(&cache),
        ];
        args.extend(flags);
        let mut proc = Proc::spawn(CONTROLLER, &args);
        let ready = proc.wait_stderr("saying where it listens", |l| {
            l.starts_with("controller: CAPWAP on ")
        });
        let capwap: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        assert!(
            ready.starts_with(&format!(
                "controller: CAPWAP on {capwap}, control socket {}, images from ",
                socket.display()
            )),
            "{ready}"
        );
        assert!(socket.exists(), "no control socket at {}", socket.display());
        Served {
            config,
            socket,
            capwap,
            proc,
        }
    }

    /// `controller ARGS --socket SOCKET`.
    fn ask(&self, args: &[&str]) -> Finished {
        let mut all = args.to_vec();
        all.extend(["--socket", path_str(&self.socket)]);
        controller(&all)
    }

    /// `show ap image --json`, parsed.
    fn show_json(&self) -> Value {
        let shown = self.ask(&["show", "ap", "image", "--json"]).ok();
        serde_json::from_str(&shown.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", shown.describe()))
    }

    /// Polls `show ap image --json` until its rows satisfy `pred` (and there are `n`).
    fn wait_rows(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let shown = self.show_json();
            let rows = shown["aps"].as_array().cloned().unwrap_or_default();
            if rows.len() == n && rows.iter().all(&pred) {
                return shown;
            }
            assert!(
                self.proc.running(),
                "the controller exited\n{}",
                self.proc.describe()
            );
            assert!(
                Instant::now() < deadline,
                "rows never {what}: {shown:#}\n{}",
                self.proc.describe()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM (or SIGINT): exits 0 and removes its socket; returns its output.
    fn stop(self, signal: libc::c_int) -> Finished {
        self.proc.signal(signal);
        let socket = self.socket.clone();
        let done = self.proc.finish(DEADLINE).ok();
        assert!(
            !socket.exists(),
            "the socket {} is left behind\n{}",
            socket.display(),
            done.describe()
        );
        done
    }
}

/// `ap-sim` with COUNT APs against `capwap`, on loopback timers (retransmission after 50 ms,
/// reboot after 500 ms, retry after 1 s), giving up after 120 s.
fn ap_sim_on_loopback_timers(capwap: SocketAddr, count: usize) -> Proc {
    Proc::spawn(
        AP_SIM,
        &[
            "--controller",
            &capwap.to_string(),
            "--count",
            &count.to_string(),
            "--retransmit-ms",
            "50",
            "--reset-ms",
            "500",
            "--retry-secs",
            "1",
            "--timeout",
            "120",
        ],
    )
}

/// `*Mmm d HH:MM:SS.mmm: ` at the start of `line` (the controller's syslog stamp): the
/// message after it.
fn unstamped(line: &str) -> Option<&str> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rest = line.strip_prefix('*')?;
    let month = rest.get(..3)?;
    let rest = rest.get(3..)?.strip_prefix(' ')?;
    let (day, rest) = rest.split_once(' ')?;
    let (time, message) = rest.split_once(": ")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let day_ok = digits(day) && day.len() <= 2 && (1..=31).contains(&day.parse::<u8>().ok()?);
    let (hms, ms) = time.split_once('.')?;
    let parts: Vec<&str> = hms.split(':').collect();
    let time_ok = parts.len() == 3
        && parts.iter().all(|p| p.len() == 2 && digits(p))
        && ms.len() == 3
        && digits(ms);
    (MONTHS.contains(&month) && day_ok && time_ok).then_some(message)
}

const WNCD: &str =
    "%CAPWAPAC_SMGR_TRACE_MESSAGE-5-AP_JOIN_DISJOIN: Chassis 1 R0/0: wncd: AP Event: AP Name: ";
const NEW_VERSION: &str =
    "%INSTALL-5-INSTALL_AP_IMAGE_VERSION: Chassis 1 R0/0: install_engine: AP image version ";

fn family(model: &str) -> String {
    match bundle_tool::models::which(model) {
        Ok(found) => found.row.family.clone(),
        Err(e) => panic!("{model}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1, 2: the lab

fn lab(mode: &str) {
    let done = Proc::spawn(
        CONTROLLER,
        &[
            "lab",
            "--capwap-port",
            "0",
            "--quiet",
            "--aps",
            "8",
            "--scale",
            "0.002",
            "--mode",
            mode,
        ],
    )
    .finish(LAB_DEADLINE)
    .ok();
    let out = &done.stdout;
    for expected in [
        "lab: 8 of 8 APs verified their image and run 17.9.4.27; \
         7 image fetches from the server for 7 families; ",
        "\nTotal number of APs : 8\n",
        "\n        Completed downloading         : 8\n",
        "\n        Not Supported                 : 0\n",
        "\n        Predownload in progress       : No\n",
        "8 of 8 APs verified the controller's version",
    ] {
        assert!(
            out.contains(expected),
            "no {expected:?}\n{}",
            done.describe()
        );
    }
    let server = if mode == "sftp" { "SFTP" } else { "TFTP" };
    assert!(
        out.contains(&format!("lab: {server} server on 127.0.0.1:")),
        "{}",
        done.describe()
    );
    // The controller's own lines, stamped as the embedded controller stamps them.
    let successes = out
        .lines()
        .filter_map(unstamped)
        .filter(|m| m.starts_with(WNCD) && m.ends_with(" AP Image Download Success"))
        .count();
    assert_eq!(successes, 8, "{}", done.describe());
    // --quiet: no progress bars, no terminal escapes.
    assert!(
        !done.stderr.contains('\u{1b}') && !out.contains('\u{1b}'),
        "{}",
        done.describe()
    );
}

/// `controller lab` over TFTP: exit 0 and the summary.
#[test]
fn lab_over_tftp_exits_0_with_the_summary() {
    lab("tftp");
}

/// `controller lab --mode sftp`: the same through our sftpd.
#[test]
fn lab_over_sftp_exits_0_with_the_summary() {
    lab("sftp");
}

/// The README's first command exactly as a new user types it, on a terminal (script(1)
/// gives it a pseudo-terminal): every default — 24 APs, TFTP, 2% loss, the standard CAPWAP
/// control port 5246 — a bar per family that reaches 100%, the counters while it runs, and
/// the summary.
#[test]
fn the_readme_lab_on_a_terminal_draws_a_bar_per_family_on_port_5246() {
    let free = UdpSocket::bind("127.0.0.1:5246");
    assert!(
        free.is_ok(),
        "this test runs the lab on its default port, 127.0.0.1:5246, which is taken: {free:?}"
    );
    drop(free);
    let done = Proc::spawn(
        "script",
        &["-qec", &format!("{CONTROLLER} lab"), "/dev/null"],
    )
    .finish(LAB_DEADLINE)
    .ok();
    let screen = &done.stdout;
    assert!(
        screen.contains("controller on 127.0.0.1:5246, 24 simulated APs, 2% loss each way"),
        "{}",
        done.describe()
    );
    for family in [
        "ap1g4", "ap1g5", "ap1g6", "ap1g6a", "ap1g7", "ap1g8", "ap3g3",
    ] {
        let full = format!("{family:>7} [{}] 100% ", "=".repeat(30));
        assert!(screen.contains(&full), "no {full:?}\n{}", done.describe());
    }
    assert!(
        screen.contains("APs 24 \u{b7} initiated "),
        "no counters\n{}",
        done.describe()
    );
    assert!(
        screen.contains("lab: 24 of 24 APs verified their image and run 17.9.4.27"),
        "{}",
        done.describe()
    );
    // The terminal got the drawing (cursor movement), which --quiet leaves out.
    assert!(screen.contains("\u{1b}["), "{}", done.describe());
}

/// A lab that cannot finish in time stops by itself: exit 1, the report of who did not.
#[test]
fn a_lab_past_its_timeout_stops_and_exits_1() {
    let done = controller(&[
        "lab",
        "--quiet",
        "--capwap-port",
        "0",
        "--aps",
        "500",
        "--scale",
        "0.05",
        "--timeout",
        "1",
    ]);
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    assert!(
        done.stdout
            .contains("lab: not every AP verified within 1 s; stopping"),
        "{}",
        done.describe()
    );
    assert!(
        done.stdout.contains("of 500 APs verified"),
        "{}",
        done.describe()
    );
}

/// Out-of-range lab flags are refused up front, naming the flag; a CAPWAP port in use
/// says how to pick another.
#[test]
fn lab_usage_errors_exit_non_zero_with_a_clear_message() {
    // Out-of-range values are usage errors, like any other bad flag: exit 2, the flag named.
    for (args, message) in [
        (
            &["--aps", "0"][..],
            "invalid value '0' for '--aps <APS>': 1 to 10000 APs",
        ),
        (
            &["--loss", "0.9"],
            "invalid value '0.9' for '--loss <LOSS>': a loss from 0 to 0.1",
        ),
        (
            &["--scale", "0"],
            "invalid value '0' for '--scale <SCALE>': a scale from 0.0001 to 1",
        ),
        (
            &["--block-size", "10"],
            "invalid value '10' for '--block-size <BLOCK_SIZE>': 64 to 8192 bytes",
        ),
        (
            &["--mode", "ftp"],
            "invalid value 'ftp' for '--mode <MODE>'",
        ),
    ] {
        let mut all = vec!["lab", "--quiet", "--capwap-port", "0"];
        all.extend(args);
        let done = controller(&all);
        assert_eq!(done.status.code(), Some(2), "{}", done.describe());
        assert!(
            done.stderr.contains(message),
            "no {message:?}\n{}",
            done.describe()
        );
        // Refused before anything was staged or served.
        assert!(!done.stdout.contains("lab: "), "{}", done.describe());
    }

    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port().to_string();
    let done = controller(&["lab", "--quiet", "--capwap-port", &port, "--scale", "0.002"]);
    assert!(!done.status.success(), "{}", done.describe());
    assert!(
        done.stderr
            .contains(&format!("CAPWAP control port 127.0.0.1:{port}")),
        "{}",
        done.describe()
    );
    assert!(done.stderr.contains("--capwap-port"), "{}", done.describe());
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// 3: serve, ap-sim, show, SIGTERM

/// `serve --syslog SOCKET`: the event lines go to that syslog socket (glibc's format,
/// facility local7, the mnemonic's severity: `<189>` for a notice) and not to stdout; a
/// socket nobody listens on is refused at start, naming it.
#[test]
fn serve_sends_its_lines_to_syslog_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = staged(dir.path(), true);
    let profile = local_profile(&srv.join("current"), "off");
    let log_path = dir.path().join("log");
    let daemon = UnixDatagram::bind(&log_path).expect("bind the syslog socket");
    daemon
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let served = Served::start_with(dir.path(), &profile, &["--syslog", path_str(&log_path)]);
    let pid = served.proc.child.id();
    let aps = ap_sim_on_loopback_timers(served.capwap, 1).finish(DEADLINE);
    assert_eq!(aps.status.code(), Some(0), "{}", aps.describe());
    let mut lines = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !lines
        .iter()
        .any(|l: &String| l.ends_with(" AP Image Download Success"))
    {
        assert!(Instant::now() < deadline, "syslog got only {lines:#?}");
        let mut buf = [0u8; 4096];
        if let Ok(n) = daemon.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let joined = lines
        .iter()
        .find(|l| l.ends_with(" Joined"))
        .unwrap_or_else(|| panic!("no Joined line in {lines:#?}"));
    assert!(joined.starts_with("<189>"), "{joined}");
    assert!(
        joined.contains(&format!(" controller[{pid}]: {WNCD}AP-0001 Mac: ")),
        "{joined}"
    );
    let done = served.stop(libc::SIGTERM);
    assert!(!done.stdout.contains("%CAPWAPAC"), "{}", done.describe());

    let nobody = dir.path().join("nobody");
    let refused = Proc::spawn(
        CONTROLLER,
        &[
            "serve",
            "--config",
            path_str(&dir.path().join("controller.toml")),
            "--socket",
            path_str(&dir.path().join("run2/controller.sock")),
            "--syslog",
            path_str(&nobody),
        ],
    )
    .finish(DEADLINE);
    assert!(!refused.status.success(), "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains(&format!("syslog socket {}", nobody.display())),
        "{}",
        refused.describe()
    );
}

/// `controller serve` on a release served by our tftpd; `ap-sim` brings 6 APs of 6
/// families to its version; `show ap image` (text and JSON) and the syslog lines say so;
/// SIGTERM stops it cleanly.
#[test]
fn serve_relays_images_to_ap_sim_and_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = dir.path().join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let sizes = stage_release(&srv, LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    assert_eq!(sizes.len(), 7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tftpd = {
        let _in_runtime = rt.enter();
        ImageServer::tftp(&srv, 0).expect("tftpd")
    };
    let tftp_port = tftpd.addr.port();
    let profile = tftpd.profile(LAB_FOLDER) + "retry_interval_s = 1\n";
    let served = Served::start(dir.path(), &profile);

    let aps =
        ap_sim_on_loopback_timers(served.capwap, 6).finish(DEADLINE + Duration::from_secs(30));
    assert_eq!(aps.status.code(), Some(0), "{}", aps.describe());
    // Stamped like the AP's console: `AP-0001: [*11/22/2026 08:41:00.7960] …`.
    assert!(
        aps.stdout.lines().any(|l| l.starts_with("AP-0001: [*")
            && l.ends_with("] Image transfer completed from WLC, last 1")),
        "{}",
        aps.describe()
    );

    let shown = served.ask(&["show", "ap", "image"]).ok();
    for expected in [
        "Total number of APs : 6\n",
        "\n        Completed downloading         : 6\n",
        "\n        Downloading                   : 0\n",
        "\n        Not Supported                 : 0\n",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "no {expected:?}\n{}",
            shown.describe()
        );
    }
    let header = shown
        .stdout
        .lines()
        .find(|l| l.starts_with("AP Name"))
        .unwrap_or_else(|| panic!("no table\n{}", shown.describe()));
    assert!(header.contains("Primary Image"), "{header}");
    for i in 1..=6 {
        assert!(
            shown
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("AP-{i:04} ")) && l.contains(LAB_VERSION)),
            "AP-{i:04}\n{}",
            shown.describe()
        );
    }

    let json = served.show_json();
    let rows = json["aps"].as_array().expect("aps: an array");
    assert_eq!(rows.len(), 6, "{json:#}");
    assert_eq!(json["counters"]["total"], 6, "{json:#}");
    assert_eq!(json["counters"]["completed_downloading"], 6, "{json:#}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["name"], format!("AP-{:04}", i + 1), "{json:#}");
        assert_eq!(row["primary"], LAB_VERSION, "{json:#}");
        assert_eq!(row["download"], "completed", "{json:#}");
    }

    let done = served.stop(libc::SIGTERM);
    let log: Vec<&str> = done.stdout.lines().collect();
    // Every line carries the controller's stamp.
    let messages: Vec<&str> = log
        .iter()
        .map(|l| unstamped(l).unwrap_or_else(|| panic!("unstamped line {l:?}")))
        .collect();
    for i in 1..=6 {
        let ap = format!("{WNCD}AP-{i:04} Mac: ");
        let of_ap = |suffix: &str| {
            messages
                .iter()
                .filter(|m| m.starts_with(&ap) && m.ends_with(suffix))
                .count()
        };
        assert!(of_ap(" Joined") >= 1, "AP-{i:04} never joined: {log:#?}");
        assert_eq!(of_ap(" AP Image Download Success"), 1, "{log:#?}");
    }
    // One fetch per family (the default models: one per family, 6 of the 7 here).
    let families: Vec<String> = controller::fleet::DEFAULT_MODELS[..6]
        .iter()
        .map(|m| family(m))
        .collect();
    for f in &families {
        let url = format!("tftp://127.0.0.1:{tftp_port}/{LAB_FOLDER}/{f}");
        let completed = format!(
            "%INSTALL-5-INSTALL_COMPLETED_INFO: Chassis 1 R0/0: install_engine: Completed install add {url}"
        );
        assert_eq!(
            messages.iter().filter(|m| **m == completed).count(),
            1,
            "{f}: {log:#?}"
        );
    }
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.starts_with("%INSTALL-5-INSTALL_COMPLETED_INFO"))
            .count(),
        families.len(),
        "{log:#?}"
    );
    drop(tftpd);
}

// ---------------------------------------------------------------------------------------
// 4: predownload and activate

/// A version staged into the watched folder while APs run the current one is found,
/// predownloaded on `controller predownload`, and swapped in on `controller activate`.
#[test]
fn predownload_then_activate_through_the_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = staged(dir.path(), true);
    let mut served = Served::start(dir.path(), &local_profile(&root.join("current"), "off"));
    let models = ["C9105AXI-E", "C9120AXI-B", "AIR-AP2802I-B-K9"];
    let mut aps = Proc::spawn(
        AP_SIM,
        &[
            "--controller",
            &served.capwap.to_string(),
            "--count",
            "3",
            "--models",
            &models.join(","),
            "--version",
            LAB_VERSION,
            "--stay",
            "--retransmit-ms",
            "50",
            "--reset-ms",
            "200",
            "--retry-secs",
            "1",
            "--timeout",
            "600",
        ],
    );
    served.wait_rows("joined on the current version", 3, |r| {
        r["primary"] == LAB_VERSION && r["download"] == "none"
    });

    // The administrator stages the next release while everything runs.
    stage_release(&root, "17_9_5", version(NEXT_VERSION), SCALE, true).expect("stage");
    let found = served.proc.wait_stdout("the new version found", |l| {
        unstamped(l).is_some_and(|m| {
            m.starts_with(&format!("{NEW_VERSION}{NEXT_VERSION} found at file://"))
        })
    });
    assert!(found.ends_with("/current"), "{found}");
    // predownload = "off": nothing happens until asked.
    let shown = served.show_json();
    assert_eq!(shown["counters"]["predownloading"], 0, "{shown:#}");

    let answer = served.ask(&["predownload"]).ok();
    assert_eq!(
        answer.stdout,
        format!("predownload of {NEXT_VERSION} started on 3 APs\n"),
        "{}",
        answer.describe()
    );
    let shown = served.wait_rows("predownloaded", 3, |r| {
        r["predownload"] == "complete"
            && r["predownload_version"] == NEXT_VERSION
            && r["backup"] == NEXT_VERSION
            && r["primary"] == LAB_VERSION
    });
    assert_eq!(
        shown["counters"]["completed_predownloading"], 3,
        "{shown:#}"
    );
    let text = served.ask(&["show", "ap", "image"]).ok();
    assert!(
        text.stdout
            .contains("\n        Completed predownloading      : 3\n"),
        "{}",
        text.describe()
    );

    let answer = served.ask(&["activate"]).ok();
    assert_eq!(
        answer.stdout,
        format!("activation of {NEXT_VERSION} sent to 3 APs\n"),
        "{}",
        answer.describe()
    );
    served.wait_rows("activated", 3, |r| {
        r["primary"] == NEXT_VERSION && r["backup"] == LAB_VERSION
    });

    assert!(aps.running(), "{}", aps.describe());
    aps.signal(libc::SIGINT);
    let aps = aps.finish(DEADLINE);
    assert_eq!(aps.status.code(), Some(130), "{}", aps.describe());
    assert!(
        aps.stderr.contains("ap-sim: interrupted"),
        "{}",
        aps.describe()
    );
    assert!(
        aps.stdout.contains(&format!(
            "Predownload of image {NEXT_VERSION} requested, answered result code: 0"
        )),
        "{}",
        aps.describe()
    );
    let done = served.stop(libc::SIGTERM);
    assert_eq!(
        done.stdout
            .lines()
            .filter(|l| l.contains(&format!("{NEW_VERSION}{NEXT_VERSION} found at")))
            .count(),
        1,
        "{}",
        done.describe()
    );
}

// ---------------------------------------------------------------------------------------
// 5: reload

/// SIGHUP and `controller reload` read the config again; a broken config is refused with
/// the file's name and the controller keeps running on the old profile.
#[test]
fn reload_and_sighup_read_the_config_again_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("srv");
    std::fs::create_dir_all(&root).expect("mkdir");
    let (a, b) = (root.join("17_9_4a"), root.join("17_9_5"));
    stage_release(&root, "17_9_4a", version(LAB_VERSION), SCALE, false).expect("stage");
    stage_release(&root, "17_9_5", version(NEXT_VERSION), SCALE, false).expect("stage");
    let mut served = Served::start(dir.path(), &local_profile(&a, "off"));
    let port = served.capwap.port();
    let config = served.config.clone();
    let config_name = config.display().to_string();

    // SIGHUP: the profile now points at the other version.
    write_config(&config, port, &local_profile(&b, "off"));
    served.proc.signal(libc::SIGHUP);
    let line = served.proc.wait_stdout("the SIGHUP's version", |l| {
        unstamped(l)
            .is_some_and(|m| m.starts_with(&format!("{NEW_VERSION}{NEXT_VERSION} found at")))
    });
    assert!(
        line.ends_with(&format!("found at file://{}", b.display())),
        "{line}"
    );

    // `controller reload`: back to the first.
    write_config(&config, port, &local_profile(&a, "off"));
    let answer = served.ask(&["reload"]).ok();
    assert_eq!(
        answer.stdout,
        format!(
            "reloaded {config_name}: AP version {LAB_VERSION} from file://{}\n",
            a.display()
        ),
        "{}",
        answer.describe()
    );
    served.proc.wait_stdout("the reload's version", |l| {
        unstamped(l).is_some_and(|m| {
            m == format!("{NEW_VERSION}{LAB_VERSION} found at file://{}", a.display())
        })
    });

    // A [capwap] change is read but said to wait for the next start.
    write_config(&config, free_udp_port(), &local_profile(&a, "off"));
    let answer = served.ask(&["reload"]).ok();
    assert!(
        answer
            .stdout
            .ends_with(" ([capwap] changes take effect at the next start)\n"),
        "{}",
        answer.describe()
    );

    // A broken file: refused, naming the file and the key; the controller keeps running.
    std::fs::write(
        &config,
        format!(
            "[image_download]\nmode = \"local\"\npath = {:?}\nbogus_key = 1\n",
            path_str(&b)
        ),
    )
    .expect("write");
    let refused = served.ask(&["reload"]);
    assert!(!refused.status.success(), "{}", refused.describe());
    assert!(refused.stdout.is_empty(), "{}", refused.describe());
    assert!(
        refused
            .stderr
            .starts_with(&format!("controller: {config_name}: ")),
        "{}",
        refused.describe()
    );
    assert!(
        refused.stderr.contains("bogus_key"),
        "{}",
        refused.describe()
    );
    // The same by SIGHUP: said on stderr.
    served.proc.signal(libc::SIGHUP);
    served.proc.wait_stderr("the SIGHUP's refusal", |l| {
        l.starts_with(&format!("controller: reload: {config_name}: "))
    });
    let said = served.proc.stderr().join("\n");
    assert!(said.contains("unknown field `bogus_key`"), "{said}");
    // A folder with no release: refused too, the running profile kept.
    write_config(
        &config,
        port,
        &local_profile(&root.join("nothing-here"), "off"),
    );
    let refused = served.ask(&["reload"]);
    assert!(!refused.status.success(), "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains(&format!("{config_name}: kept the running profile: ")),
        "{}",
        refused.describe()
    );
    assert!(served.proc.running(), "{}", served.proc.describe());
    let shown = served.ask(&["show", "ap", "image"]).ok();
    assert!(
        shown.stdout.starts_with("Total number of APs : 0\n"),
        "{}",
        shown.describe()
    );

    // A second controller on the same socket is refused; the first is untouched.
    let second_dir = tempfile::tempdir().expect("tempdir");
    let second_config = second_dir.path().join("controller.toml");
    write_config(&second_config, free_udp_port(), &local_profile(&a, "off"));
    let second = controller(&[
        "serve",
        "--config",
        path_str(&second_config),
        "--socket",
        path_str(&served.socket),
        "--cache",
        path_str(&second_dir.path().join("cache")),
    ]);
    assert!(!second.status.success(), "{}", second.describe());
    assert!(
        second.stderr.contains("a controller already listens on"),
        "{}",
        second.describe()
    );
    served.ask(&["show", "ap", "image"]).ok();

    let done = served.stop(libc::SIGTERM);
    // The adopted profiles were logged (none for the refused reloads): B by SIGHUP, then A
    // by each successful `reload`.
    let adopted: Vec<&str> = done
        .stdout
        .lines()
        .filter_map(unstamped)
        .filter(|m| m.starts_with(NEW_VERSION))
        .collect();
    assert_eq!(
        adopted,
        [
            format!(
                "{NEW_VERSION}{NEXT_VERSION} found at file://{}",
                b.display()
            ),
            format!("{NEW_VERSION}{LAB_VERSION} found at file://{}", a.display()),
            format!("{NEW_VERSION}{LAB_VERSION} found at file://{}", a.display()),
        ],
        "{}",
        done.describe()
    );
}

/// A controller killed outright leaves its socket file; the next one on that path takes
/// it over and answers.
#[test]
fn a_stale_socket_left_by_a_killed_controller_is_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = staged(dir.path(), false);
    let profile = local_profile(&root.join("17_9_4a"), "off");
    let first = Served::start(dir.path(), &profile);
    let socket = first.socket.clone();
    first.proc.signal(libc::SIGKILL);
    let killed = first.proc.finish(DEADLINE);
    assert!(!killed.status.success(), "{}", killed.describe());
    assert!(socket.exists(), "SIGKILL cannot clean up");
    let second = Served::start(dir.path(), &profile);
    assert_eq!(second.socket, socket);
    let shown = second.ask(&["show", "ap", "image"]).ok();
    assert!(
        shown.stdout.starts_with("Total number of APs : 0\n"),
        "{}",
        shown.describe()
    );
    // SIGINT stops it as cleanly as SIGTERM.
    second.stop(libc::SIGINT);
}

// ---------------------------------------------------------------------------------------
// 6, 7: nothing to talk to, a bad config

/// Every control command without a controller says nobody listens there.
#[test]
fn commands_without_a_controller_say_no_controller_is_listening() {
    for command in [
        &["show", "ap", "image"][..],
        &["show", "ap", "image", "--json"],
        &["predownload"],
        &["activate"],
        &["reload"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--socket", "/nonexistent/controller.sock"]);
        let done = controller(&args);
        assert!(!done.status.success(), "{}", done.describe());
        assert!(done.stdout.is_empty(), "{}", done.describe());
        assert!(
            done.stderr.starts_with(
                "controller: no controller is listening on /nonexistent/controller.sock: "
            ),
            "{}",
            done.describe()
        );
    }
}

/// `controller serve` refuses a config with an unknown key, naming the file and the key,
/// before binding anything.
#[test]
fn serve_refuses_an_unknown_key_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("controller.sock");
    let config = dir.path().join("controller.toml");
    for (text, key) in [
        (
            "[image_download]\nmode = \"local\"\npath = \"srv\"\nretry_intervall_s = 5\n",
            "retry_intervall_s",
        ),
        (
            "[capwap]\nlisten = \"127.0.0.1:0\"\nblocksize = 1377\n\n[image_download]\n\
             mode = \"local\"\npath = \"srv\"\n",
            "blocksize",
        ),
        (
            "[image_download]\nmode = \"local\"\npath = \"srv\"\n\n[syslog]\nhost = \"x\"\n",
            "syslog",
        ),
    ] {
        std::fs::write(&config, text).expect("write");
        let done = controller(&[
            "serve",
            "--config",
            path_str(&config),
            "--socket",
            path_str(&socket),
            "--cache",
            path_str(&dir.path().join("cache")),
        ]);
        assert!(!done.status.success(), "{}", done.describe());
        assert!(
            done.stderr
                .starts_with(&format!("controller: {}: ", config.display())),
            "{}",
            done.describe()
        );
        assert!(done.stderr.contains(key), "{key}: {}", done.describe());
        assert!(done.stderr.contains("line "), "{}", done.describe());
        assert!(!socket.exists(), "{}", done.describe());
    }
}

/// Each cause is said once: library errors that quote their source are not followed by the
/// source again (`controller: no controller is listening on …: No such file or directory`).
#[test]
fn errors_print_their_cause_once() {
    let done = controller(&["show", "ap", "image", "--socket", "/nonexistent/c.sock"]);
    assert_eq!(
        done.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        done.describe()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let done = controller(&[
        "serve",
        "--config",
        path_str(&missing),
        "--socket",
        path_str(&dir.path().join("c.sock")),
        "--cache",
        path_str(&dir.path().join("cache")),
    ]);
    assert_eq!(
        done.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        done.describe()
    );
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port().to_string();
    let done = controller(&["lab", "--quiet", "--capwap-port", &port, "--scale", "0.002"]);
    assert_eq!(
        done.stderr.matches("Address already in use").count(),
        1,
        "{}",
        done.describe()
    );
}
