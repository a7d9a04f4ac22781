//! Shared helpers for the end-to-end tests: run a real server binary on a free loopback port,
//! drive real clients (curl, tftp-hpa's `tftp`, atftp) with a deadline, and talk raw TFTP
//! over a std `UdpSocket` when a test needs to see or misbehave on the wire; [`udp_proxy`]
//! puts deterministic loss and duplication between a TFTP client and server.
//!
//! Nothing here builds anything: callers pass the binary's path (for the tftpd crate's
//! integration tests, `env!("CARGO_BIN_EXE_tftpd")`). Every spawned process is killed when its
//! handle is dropped, every wait has a deadline, and a missing client fails loudly with the
//! package to install.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod sftp;
pub mod udp_proxy;

/// How long any client invocation may take before it is killed and the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to answer its first request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for a log line to appear.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// The request name the readiness probe asks for (it should not exist).
pub const PROBE_NAME: &str = "airlift-readiness-probe";

// ---------------------------------------------------------------------------------------------
// Content and hashing

/// `len` deterministic pseudo-random bytes (xorshift64*), different for each `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents (streamed).
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Process identity

/// True when the tests run as root (the server then chroots with `-s` and drops to `-u`).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of `size` (e.g. `"64k"`) mounted at an existing folder for one test, and unmounted
/// when dropped, also when the test fails (lazily if something still holds it). Mounting
/// needs root; the tests that use it are "disk full" cases, and CI runs as root.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it with the folder mode `mode` (octal, e.g. `"0755"`). Panics when not root.
    pub fn mount(at: &Path, size: &str, mode: &str) -> Tmpfs {
        assert!(
            is_root(),
            "this test mounts a tmpfs and must run as root (CI does)"
        );
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode={mode}"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs at {} failed", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// The uid of `user` from /etc/passwd, for permission set-ups.
pub fn uid_of(user: &str) -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// `Uid:` line of /proc/PID/status: (real, effective, saved, fs).
pub fn proc_uids(pid: u32) -> [u32; 4] {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid: line");
    let v: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("uid"))
        .collect();
    [v[0], v[1], v[2], v[3]]
}

// ---------------------------------------------------------------------------------------------
// Served directories

/// A temporary tree: `<tmp>/srv` is the served directory (0755), `<tmp>/outside` a sibling
/// that must never be reachable through the server (0755). Files are written 0644.
#[derive(Debug)]
pub struct ServeDir {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Default for ServeDir {
    fn default() -> Self {
        Self::new()
    }
}

impl ServeDir {
    /// Creates the tree.
    pub fn new() -> ServeDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        // tempfile makes 0700 directories; the server may run as `nobody`.
        chmod(tmp.path(), 0o755);
        let root = tmp.path().join("srv");
        fs::create_dir(&root).expect("mkdir srv");
        chmod(&root, 0o755);
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir outside");
        chmod(&outside, 0o755);
        ServeDir { tmp, root }
    }

    /// The served directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The served directory as an argument.
    pub fn arg(&self) -> OsString {
        self.root.clone().into_os_string()
    }

    /// The temporary directory holding `srv` and `outside`.
    pub fn base(&self) -> &Path {
        self.tmp.path()
    }

    /// The sibling directory outside the served tree.
    pub fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    /// Writes `rel` (under the served directory) with mode 0644, creating parents 0755.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        write_file(&self.root.join(rel), bytes)
    }

    /// Reads `rel` under the served directory.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Names in a directory under the served one (`""` for the root itself), sorted.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join(rel))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Writes a file with mode 0644, creating missing parent directories with mode 0755.
pub fn write_file(path: &Path, bytes: &[u8]) -> PathBuf {
    let missing: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    for dir in missing.into_iter().rev() {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        chmod(dir, 0o755);
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, 0o644);
    path.to_path_buf()
}

/// `chmod(path, mode)`, panicking on failure.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// Permission bits of a file (`& 0o7777`).
pub fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

// ---------------------------------------------------------------------------------------------
// Running processes with a deadline

/// What a client package is called on Debian, for the install hint.
fn package_of(program: &str) -> &'static str {
    match program {
        "curl" => "curl",
        "tftp" => "tftp-hpa",
        "atftp" => "atftp",
        _ => "(unknown package)",
    }
}

/// Runs `cmd` to completion with stdout and stderr captured, killing it and failing the test
/// after `timeout`. A program that is not installed fails with the package to install.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed; the end-to-end tests need it: \
             apt-get install {} (CI: .ci/run installs curl tftp-hpa atftp)",
            package_of(&program)
        ),
        Err(e) => panic!("cannot start `{program}`: {e}"),
    };
    wait_child_output(child, timeout, &format!("{cmd:?}"))
}

/// Waits for a spawned child's output with a deadline; kills it (SIGKILL) at the deadline.
pub fn wait_child_output(child: Child, timeout: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => {
            let _ = waiter.join();
            r.unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
        }
        Err(_) => {
            // The child is not reaped until wait_with_output returns, so the pid is still ours.
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = waiter.join();
            panic!("{what} did not finish within {timeout:?}; killed");
        }
    }
}

/// Output as text, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A URL authority for `addr` (`127.0.0.1:69`, `[::1]:69`).
pub fn authority(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// `curl -sS -g -o LOCAL [extra…] tftp://ADDR/REMOTE` with the client deadline.
pub fn curl_get(addr: SocketAddr, remote: &str, local: &Path, extra: &[&str]) -> Output {
    let url = format!("tftp://{}/{remote}", authority(addr));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-g", "--max-time", "50", "-o"])
        .arg(local)
        .args(extra)
        .arg(url);
    run_with_timeout(&mut cmd, CLIENT_TIMEOUT)
}

/// tftp-hpa's `tftp -m binary HOST PORT -c ARGS…` (e.g. `["get", "remote", "local"]`).
/// It exits 0 even when the transfer failed: check its output and the files.
pub fn tftp_hpa(addr: SocketAddr, command: &[&OsStr]) -> Output {
    let mut cmd = Command::new("tftp");
    if addr.is_ipv6() {
        cmd.arg("-6");
    }
    cmd.args(["-m", "binary"])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("-c")
        .args(command);
    run_with_timeout(&mut cmd, CLIENT_TIMEOUT)
}

/// `atftp --option "NAME VALUE"… -g -r REMOTE -l LOCAL HOST PORT`.
pub fn atftp_get(addr: SocketAddr, remote: &str, local: &Path, options: &[&str]) -> Output {
    let mut cmd = Command::new("atftp");
    for o in options {
        cmd.arg("--option").arg(o);
    }
    cmd.args(["-g", "-r", remote, "-l"])
        .arg(local)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    run_with_timeout(&mut cmd, CLIENT_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// The server under test

/// A server's stderr lines, shared with the thread that reads them, and the one wait loop
/// every `wait_for_*` helper uses.
#[derive(Debug, Default)]
pub struct LogSink {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl LogSink {
    /// Starts a thread that appends each line of `stream` to a new sink.
    pub fn follow(stream: impl Read + Send + 'static) -> (Arc<LogSink>, JoinHandle<()>) {
        let log = Arc::new(LogSink::default());
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
                sink.grew.notify_all();
            }
        });
        (log, reader)
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (up to `timeout`) until `check` finds what it wants in the lines so far; on
    /// time-out fails the test with `failure(lines)` and the whole log.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> Option<T>,
        failure: impl Fn(&[String]) -> String,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(found) = check(&lines) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                let why = failure(&lines);
                let all = lines.join("\n");
                drop(lines);
                panic!("{why} within {timeout:?}; log:\n{all}");
            }
            lines = self
                .grew
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits (up to `timeout`) for a line matching `pred` and returns it.
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_until(
            timeout,
            |lines| lines.iter().find(|l| pred(l)).cloned(),
            |_| format!("no log line {what}"),
        )
    }

    /// Waits (up to `timeout`) until at least `n` lines match `pred`; returns them.
    pub fn wait_for_count(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let hits = |lines: &[String]| -> Vec<String> {
            lines.iter().filter(|l| pred(l)).cloned().collect()
        };
        self.wait_until(
            timeout,
            |lines| Some(hits(lines)).filter(|h| h.len() >= n),
            |lines| format!("{} of {n} log lines {what}", hits(lines).len()),
        )
    }
}

/// A running server process on a loopback port, killed on drop. Its stderr (the log, in
/// foreground mode) is collected line by line.
#[derive(Debug)]
pub struct TftpServer {
    child: Child,
    addr: SocketAddr,
    log: Arc<LogSink>,
    reader: Option<JoinHandle<()>>,
}

/// How a start attempt went.
enum Attempt {
    Ready(TftpServer),
    PortTaken,
}

impl TftpServer {
    /// Starts `bin -L -a 127.0.0.1:PORT ARGS…` on a free port and waits until it answers.
    pub fn start<S: AsRef<OsStr>>(bin: &str, args: &[S]) -> TftpServer {
        Self::start_on(bin, IpAddr::V4(Ipv4Addr::LOCALHOST), args)
    }

    /// Like [`TftpServer::start`] on `[::1]`.
    pub fn start_v6<S: AsRef<OsStr>>(bin: &str, args: &[S]) -> TftpServer {
        Self::start_on(bin, IpAddr::V6(Ipv6Addr::LOCALHOST), args)
    }

    /// Starts `bin -L -a 127.0.0.1:PORT FLAGS… -s DIR`: the usual secure-mode server.
    pub fn serve(bin: &str, flags: &[&str], dir: &Path) -> TftpServer {
        Self::start(bin, &secure_args(flags, dir))
    }

    /// Like [`TftpServer::serve`] on `[::1]`.
    pub fn serve_v6(bin: &str, flags: &[&str], dir: &Path) -> TftpServer {
        Self::start_v6(bin, &secure_args(flags, dir))
    }

    fn start_on<S: AsRef<OsStr>>(bin: &str, host: IpAddr, args: &[S]) -> TftpServer {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        Self::start_with(bin, host, |addr| {
            let mut v: Vec<OsString> = vec!["-L".into(), "-a".into(), authority(addr).into()];
            v.extend(args.iter().cloned());
            v
        })
    }

    /// Starts `bin` with the arguments `make_args` gives for a free port on `host` (so the
    /// port can go into a defaults file, say), retrying with another port when the chosen
    /// one was taken in between.
    pub fn start_with(
        bin: &str,
        host: IpAddr,
        mut make_args: impl FnMut(SocketAddr) -> Vec<OsString>,
    ) -> TftpServer {
        for _ in 0..10 {
            let addr = free_udp_port(host);
            match Self::try_start(bin, addr, make_args(addr)) {
                Attempt::Ready(s) => return s,
                Attempt::PortTaken => continue,
            }
        }
        panic!("could not bind a free port on {host} after 10 attempts");
    }

    fn try_start(bin: &str, addr: SocketAddr, args: Vec<OsString>) -> Attempt {
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (log, reader) = LogSink::follow(stderr);
        let mut server = TftpServer {
            child,
            addr,
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let probe = RawClient::new(addr);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait().expect("try_wait") {
                server.join_reader();
                let log = server.log_lines().join("\n");
                if log.contains("cannot bind") && log.contains("Address already in use") {
                    return Attempt::PortTaken;
                }
                panic!("server {bin} {args:?} exited with {status} before answering:\n{log}");
            }
            probe.send_request(Opcode::Rrq, PROBE_NAME.as_bytes(), b"octet", &[]);
            if let Some(reply) = probe.recv_within(Duration::from_millis(100)) {
                if let Packet::Data { .. } | Packet::Oack(_) = reply.packet {
                    // The probe name exists: do not leave a transfer running.
                    probe.send_error_to(reply.from, 0, "probe done");
                }
                return Attempt::Ready(server);
            }
        }
        let log = server.log_lines().join("\n");
        panic!("server {bin} {args:?} did not answer within {READY_TIMEOUT:?}; log:\n{log}");
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process that serves. Started as root in standalone mode, tftpd splits into a
    /// root monitor (the process we started, see `tftpd::monitor`) and one unprivileged
    /// server child; otherwise the process we started serves itself.
    pub fn serving_pid(&self) -> u32 {
        let pid = self.pid();
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let kids: Vec<u32> = children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        match kids.as_slice() {
            [only] => *only,
            [] => pid,
            many => panic!("expected at most one server child of {pid}, found {many:?}"),
        }
    }

    /// True while the started process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `"HUP"`) with `kill -SIG PID`.
    pub fn signal(&self, signal: &str) {
        let out = run_with_timeout(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(self.pid().to_string()),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "kill -{signal}: {}", describe(&out));
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Log lines so far that do not name the readiness probe. (At `-vv` the probe's
    /// `sending NAK (1, File not found) to …` line remains: it carries no name.)
    pub fn log_lines_without_probe(&self) -> Vec<String> {
        self.log_lines()
            .into_iter()
            .filter(|l| !l.contains(PROBE_NAME))
            .collect()
    }

    /// Waits (up to `timeout`) for a log line matching `pred` and returns it; fails the test
    /// with the whole log otherwise.
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.log.wait_for_log(what, timeout, pred)
    }

    /// Waits (up to `timeout`) until at least `n` log lines match `pred`; returns them.
    pub fn wait_for_count(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.log.wait_for_count(what, n, timeout, pred)
    }

    /// Waits for a line exactly equal to `first` to be followed by another line that does
    /// not name the readiness probe, and returns that next line.
    pub fn wait_for_line_after(&self, first: &str, timeout: Duration) -> String {
        self.log.wait_until(
            timeout,
            |lines| {
                let at = lines.iter().position(|l| l == first)?;
                lines[at + 1..]
                    .iter()
                    .find(|l| !l.contains(PROBE_NAME))
                    .cloned()
            },
            |_| format!("no line after {first:?}"),
        )
    }

    /// Waits for a line exactly equal to `line`.
    pub fn wait_for_line(&self, line: &str) -> String {
        self.wait_for_log(&format!("{line:?}"), LOG_TIMEOUT, |l| l == line)
    }

    /// Waits for the process to exit by itself (within `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.join_reader();
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TftpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
    }
}

fn secure_args(flags: &[&str], dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = flags.iter().map(OsString::from).collect();
    v.push("-s".into());
    v.push(dir.as_os_str().to_owned());
    v
}

/// A port that was free on `host` a moment ago.
pub fn free_udp_port(host: IpAddr) -> SocketAddr {
    let s = UdpSocket::bind(SocketAddr::new(host, 0))
        .unwrap_or_else(|e| panic!("cannot bind a UDP socket on {host}: {e}"));
    s.local_addr().expect("local_addr")
}

/// Runs the binary once with `args` (no server expected) and returns its output.
pub fn run_binary<S: AsRef<OsStr>>(bin: &str, args: &[S]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(20))
}

// ---------------------------------------------------------------------------------------------
// Raw TFTP

/// TFTP opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
}

/// A decoded TFTP packet (only what the tests need to look at).
#[derive(Clone, PartialEq, Eq)]
pub enum Packet {
    /// RRQ or WRQ (never sent by a server).
    Request(Vec<u8>),
    /// DATA.
    Data {
        /// Block number on the wire.
        block: u16,
        /// Payload.
        payload: Vec<u8>,
    },
    /// ACK.
    Ack {
        /// Block number.
        block: u16,
    },
    /// ERROR.
    Error {
        /// Error code.
        code: u16,
        /// Message (lossy UTF-8).
        message: String,
    },
    /// OACK: (name, value) pairs.
    Oack(Vec<(String, String)>),
    /// Anything else.
    Garbage(Vec<u8>),
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Packet::Request(b) => write!(f, "Request({:?})", String::from_utf8_lossy(b)),
            Packet::Data { block, payload } => {
                write!(f, "Data(block {block}, {} bytes)", payload.len())
            }
            Packet::Ack { block } => write!(f, "Ack({block})"),
            Packet::Error { code, message } => write!(f, "Error({code}, {message:?})"),
            Packet::Oack(o) => write!(f, "Oack({o:?})"),
            Packet::Garbage(b) => write!(f, "Garbage({b:?})"),
        }
    }
}

impl Packet {
    /// Decodes a datagram.
    pub fn decode(d: &[u8]) -> Packet {
        let be = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        if d.len() < 4 {
            return Packet::Garbage(d.to_vec());
        }
        match be(0) {
            1 | 2 => Packet::Request(d.to_vec()),
            3 => Packet::Data {
                block: be(2),
                payload: d[4..].to_vec(),
            },
            4 => Packet::Ack { block: be(2) },
            5 => {
                let msg = &d[4..];
                let msg = msg.split(|&b| b == 0).next().unwrap_or(&[]);
                Packet::Error {
                    code: be(2),
                    message: String::from_utf8_lossy(msg).into_owned(),
                }
            }
            6 => {
                let mut parts: Vec<String> = d[2..]
                    .split(|&b| b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                // The list ends with a NUL, so the last split part is empty.
                if parts.last().is_some_and(String::is_empty) {
                    parts.pop();
                }
                Packet::Oack(
                    parts
                        .chunks(2)
                        .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
                        .collect(),
                )
            }
            _ => Packet::Garbage(d.to_vec()),
        }
    }
}

/// Encodes an RRQ/WRQ: opcode, name, NUL, mode, NUL, then option name/value pairs.
pub fn encode_request(op: Opcode, name: &[u8], mode: &[u8], options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, op as u8];
    v.extend_from_slice(name);
    v.push(0);
    v.extend_from_slice(mode);
    v.push(0);
    for (n, val) in options {
        v.extend_from_slice(n.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// Encodes an ACK.
pub fn encode_ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, 4, b[0], b[1]]
}

/// Encodes a DATA packet.
pub fn encode_data(block: u16, payload: &[u8]) -> Vec<u8> {
    let b = block.to_be_bytes();
    let mut v = vec![0, 3, b[0], b[1]];
    v.extend_from_slice(payload);
    v
}

/// Encodes an ERROR packet.
pub fn encode_error(code: u16, message: &str) -> Vec<u8> {
    let c = code.to_be_bytes();
    let mut v = vec![0, 5, c[0], c[1]];
    v.extend_from_slice(message.as_bytes());
    v.push(0);
    v
}

/// A received datagram.
#[derive(Debug, Clone)]
pub struct Received {
    /// Decoded.
    pub packet: Packet,
    /// Who sent it (the server's transfer ID).
    pub from: SocketAddr,
    /// When it arrived.
    pub at: Instant,
}

/// A UDP socket on the loopback address of the server's family, talking raw TFTP.
#[derive(Debug)]
pub struct RawClient {
    /// The socket.
    pub sock: UdpSocket,
    /// The server's listening address.
    pub server: SocketAddr,
}

impl RawClient {
    /// A new client socket for `server`.
    pub fn new(server: SocketAddr) -> RawClient {
        let local = match server {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
        };
        let sock = UdpSocket::bind(local).expect("bind client socket");
        RawClient { sock, server }
    }

    /// Sends a request to the server's listening port.
    pub fn send_request(&self, op: Opcode, name: &[u8], mode: &[u8], options: &[(&str, &str)]) {
        self.send_raw(&encode_request(op, name, mode, options), self.server);
    }

    /// Sends raw bytes to `to`.
    pub fn send_raw(&self, bytes: &[u8], to: SocketAddr) {
        self.sock.send_to(bytes, to).expect("send_to");
    }

    /// Sends an ACK to `tid`.
    pub fn send_ack_to(&self, tid: SocketAddr, block: u16) {
        self.send_raw(&encode_ack(block), tid);
    }

    /// Sends an ERROR to `tid`.
    pub fn send_error_to(&self, tid: SocketAddr, code: u16, message: &str) {
        self.send_raw(&encode_error(code, message), tid);
    }

    /// The next datagram within `timeout`, or `None`.
    pub fn recv_within(&self, timeout: Duration) -> Option<Received> {
        let mut buf = vec![0u8; 70_000];
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    return Some(Received {
                        packet: Packet::decode(&buf[..n]),
                        from,
                        at: Instant::now(),
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable from an earlier send: not an answer.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }

    /// The next datagram, failing the test if none arrives within `timeout`.
    pub fn expect_packet(&self, timeout: Duration, what: &str) -> Received {
        self.recv_within(timeout)
            .unwrap_or_else(|| panic!("no packet within {timeout:?} while waiting for {what}"))
    }

    /// Sends an RRQ and returns the server's first answer (within 5 s).
    pub fn request(
        &self,
        op: Opcode,
        name: &[u8],
        mode: &[u8],
        options: &[(&str, &str)],
    ) -> Received {
        self.send_request(op, name, mode, options);
        self.expect_packet(Duration::from_secs(5), "the answer to a request")
    }

    /// Fetches `name` in octet mode, lock-step with no options, ACKing every block once.
    /// Returns the bytes; fails the test on any ERROR or timeout.
    pub fn fetch(&self, name: &str) -> Vec<u8> {
        let first = self.request(Opcode::Rrq, name.as_bytes(), b"octet", &[]);
        let tid = first.from;
        let mut out = Vec::new();
        let mut expect: u16 = 1;
        let mut pkt = first.packet;
        loop {
            match pkt {
                Packet::Data { block, payload } if block == expect => {
                    out.extend_from_slice(&payload);
                    self.send_ack_to(tid, block);
                    if payload.len() < 512 {
                        return out;
                    }
                    expect = expect.wrapping_add(1);
                }
                Packet::Data { .. } => {}
                other => panic!("fetch {name}: unexpected {other:?}"),
            }
            pkt = self.expect_packet(Duration::from_secs(5), "DATA").packet;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation counting

/// A global allocator that counts allocations (and reallocations), for tests that prove a
/// hot path allocates nothing. Each test binary installs it with
/// `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;` and reads
/// [`allocations`].
#[derive(Debug)]
pub struct CountingAllocator;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Allocations counted so far in this process (all threads).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(std::sync::atomic::Ordering::SeqCst)
}

// SAFETY: forwards every call to the system allocator, only counting them.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}
