//! relay against the real servers an AP site runs, each started by the test on a free
//! 127.0.0.1 port and killed when the test ends: tftpd-hpa (`in.tftpd`), atftpd and OpenSSH's
//! sshd (internal-sftp). Proves block-number rollover, option negotiation with servers that
//! have or lack windowsize, the controller's error lines, host key pinning, both SFTP logins,
//! fetches to ports nobody serves, and exact bytes over a link that drops and duplicates
//! datagrams ([`airlift_tests::udp_proxy`]).
//!
//! Needs root (in.tftpd chroots with `-s`; sshd logs in a test account made with `useradd`),
//! like sftpd's end-to-end tests; CI runs as root. A missing server fails the test with the
//! package to install (`.ci/run` installs them all).
//!
//! Debian's `atftpd` and `tftpd-hpa` packages conflict (both ship `/usr/sbin/in.tftpd`), so
//! `.ci/run` installs tftpd-hpa and unpacks atftpd's package under [`ATFTPD_UNPACKED`];
//! `AIRLIFT_ATFTPD` names another binary.

// The shared in-process tftpd (for the lossy windowed link).
#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlift_tests::sftp::{ClientKey, SystemUser};
use airlift_tests::udp_proxy::{Counts, Faults, Rate, UdpProxy};
use airlift_tests::{
    Opcode, Packet, RawClient, ServeDir, describe, is_root, pseudo_random, run_with_timeout,
    sha256_file, sha256_hex,
};
use relay::sftp::{Credential, HostKeyCheck, SftpOptions};
use relay::tftp::TftpOptions;
use relay::{ErrorKind, FetchError, FetchOptions, Source};

const IN_TFTPD: &str = "/usr/sbin/in.tftpd";
const SSHD: &str = "/usr/sbin/sshd";
/// Where `.ci/run` unpacks Debian's atftpd package (see the crate docs for why).
const ATFTPD_UNPACKED: &str = "/usr/local/lib/airlift/atftpd/usr/sbin/atftpd";
const ATFTPD_INSTALLED: &str = "/usr/sbin/atftpd";

/// How long a server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A generous bound for fetches that succeed (the slowest, 34 MB lock-step at 512-byte
/// blocks, takes a few seconds).
const FETCH_DEADLINE: Duration = Duration::from_secs(120);
const PASSWORD: &str = "relay-Real-s3rver";

// ---------------------------------------------------------------------------------------------
// Processes

/// A server process started in its own process group; the whole group (tftpd-hpa forks a
/// child per transfer) is killed when this is dropped. Its stdout and stderr go to `log`.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(bin: &str, args: &[OsString], log: &Path) -> Daemon {
        let out = File::create(log).expect("create server log");
        let err = out.try_clone().expect("clone log fd");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// `Some(description)` once the process has exited.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().expect("try_wait")?;
        Some(format!("exited with {status}; log:\n{}", self.log_text()))
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The group's id is the leader's pid (process_group(0)); only processes we started
        // (and their children) are in it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test when `bin` is missing, naming the package that installs it.
fn require(bin: &str, package: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install the Debian package {package} (.ci/run installs it)"
    );
}

fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} must run as root (CI does): tftpd-hpa chroots, sshd logs in a test account"
    );
}

/// A port nobody was using on 127.0.0.1 a moment ago (the socket is closed again).
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP socket");
    s.local_addr().expect("local_addr").port()
}

fn free_tcp_port() -> u16 {
    let s = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a TCP socket");
    s.local_addr().expect("local_addr").port()
}

/// A TFTP server on 127.0.0.1.
struct TftpServer {
    addr: SocketAddr,
    _daemon: Daemon,
    _log_dir: tempfile::TempDir,
}

/// Starts `bin` with the arguments `args` gives for a free port, retrying with another port
/// when the process exits before answering (the port was taken in between), and waits until
/// it answers a TFTP request.
fn start_tftp(bin: &str, what: &str, args: impl Fn(u16) -> Vec<OsString>) -> TftpServer {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_udp_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = log_dir.path().join(format!("{what}-{attempt}.log"));
        let mut daemon = Daemon::spawn(bin, &args(port), &log);
        match wait_tftp_ready(&mut daemon, addr) {
            Ok(()) => {
                return TftpServer {
                    addr,
                    _daemon: daemon,
                    _log_dir: log_dir,
                };
            }
            Err(why) => last = why,
        }
    }
    panic!("{what} did not start on a free port in 5 attempts; last: {last}");
}

/// Probes with a request for a name that does not exist until any answer arrives.
fn wait_tftp_ready(daemon: &mut Daemon, addr: SocketAddr) -> Result<(), String> {
    let probe = RawClient::new(addr);
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(why) = daemon.exited() {
            return Err(why);
        }
        probe.send_request(
            Opcode::Rrq,
            airlift_tests::PROBE_NAME.as_bytes(),
            b"octet",
            &[],
        );
        if let Some(reply) = probe.recv_within(Duration::from_millis(100)) {
            if let Packet::Data { .. } | Packet::Oack(_) = reply.packet {
                probe.send_error_to(reply.from, 0, "probe done");
            }
            return Ok(());
        }
    }
    panic!(
        "the server on {addr} did not answer within {READY_TIMEOUT:?}; log:\n{}",
        daemon.log_text()
    );
}

/// tftpd-hpa in the foreground, chrooted into `dir` (`-s`), first retransmission after
/// `retransmit_us` microseconds (`-T`; its default is 1 s).
fn tftpd_hpa(dir: &Path, retransmit_us: u32) -> TftpServer {
    require(IN_TFTPD, "tftpd-hpa");
    require_root("tftpd-hpa's tests");
    let version = run_with_timeout(Command::new(IN_TFTPD).arg("-V"), Duration::from_secs(10));
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        text.contains("tftp-hpa"),
        "{IN_TFTPD} is not tftpd-hpa's (installing the Debian package atftpd replaces it, they \
         conflict): apt-get install tftpd-hpa, and unpack atftpd as .ci/run does; -V said:\n{}",
        describe(&version)
    );
    let dir = dir.as_os_str().to_owned();
    start_tftp(IN_TFTPD, "tftpd-hpa", |port| {
        vec![
            "-L".into(),
            "-a".into(),
            format!("127.0.0.1:{port}").into(),
            "-T".into(),
            retransmit_us.to_string().into(),
            "-s".into(),
            dir.clone(),
        ]
    })
}

/// The atftpd binary: `$AIRLIFT_ATFTPD`, the unpacked package, or an installed one.
fn atftpd_bin() -> String {
    if let Some(p) = std::env::var_os("AIRLIFT_ATFTPD") {
        let p = p.to_string_lossy().into_owned();
        require(&p, "atftpd (AIRLIFT_ATFTPD names it)");
        return p;
    }
    for p in [ATFTPD_UNPACKED, ATFTPD_INSTALLED] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    panic!(
        "atftpd is missing: the Debian package atftpd conflicts with tftpd-hpa, so unpack it \
         as .ci/run does (apt-get download atftpd; dpkg-deb -x atftpd_*.deb \
         /usr/local/lib/airlift/atftpd) or set AIRLIFT_ATFTPD to its binary"
    );
}

/// atftpd in the foreground serving `dir`, logging to its log file.
fn atftpd(dir: &Path) -> TftpServer {
    let bin = atftpd_bin();
    require_root("atftpd's tests");
    let dir = dir.as_os_str().to_owned();
    start_tftp(&bin, "atftpd", |port| {
        vec![
            "--daemon".into(),
            "--no-fork".into(),
            "--logfile".into(),
            "-".into(),
            "--port".into(),
            port.to_string().into(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--no-multicast".into(),
            dir.clone(),
        ]
    })
}

/// OpenSSH's sshd on 127.0.0.1 with internal-sftp, password and key logins for one account.
struct Sshd {
    port: u16,
    fingerprint: String,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

fn sshd(user: &SystemUser, key: &ClientKey) -> Sshd {
    require(SSHD, "openssh-server");
    require_root("sshd's tests");
    // sshd's privilege separation directory; Debian's service makes it at start, which no
    // test machine does. Left in place (it is where the package expects it).
    let privsep = Path::new("/run/sshd");
    if !privsep.exists() {
        let _ = fs::create_dir(privsep);
        airlift_tests::chmod(privsep, 0o755);
    }
    // Under /run (root's, 0755), not /tmp: StrictModes refuses an AuthorizedKeysFile below a
    // world-writable directory.
    let dir = tempfile::Builder::new()
        .prefix("airlift-relay-sshd-")
        .tempdir_in("/run")
        .expect("tempdir in /run");
    airlift_tests::chmod(dir.path(), 0o755);
    let host_key = dir.path().join("ssh_host_ed25519_key");
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "relay test host",
                "-f",
            ])
            .arg(&host_key),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "ssh-keygen: {}", describe(&out));
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(host_key.with_extension("pub")),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "ssh-keygen -l: {}", describe(&out));
    let fingerprint = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned();
    let keys = dir.path().join("authorized_keys");
    fs::create_dir(&keys).expect("mkdir authorized_keys");
    airlift_tests::chmod(&keys, 0o755);
    airlift_tests::write_file(
        &keys.join(&user.name),
        format!("{}\n", key.public).as_bytes(),
    );
    let config = dir.path().join("sshd_config");
    fs::write(
        &config,
        format!(
            "# relay/tests/real_servers.rs: the port and address are given on the command line\n\
             PidFile none\n\
             PasswordAuthentication yes\n\
             PubkeyAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             AuthorizedKeysFile {keys}/%u\n\
             UsePAM no\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            keys = keys.display()
        ),
    )
    .expect("write sshd_config");
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_tcp_port();
        let log = dir.path().join(format!("sshd-{attempt}.log"));
        let args: Vec<OsString> = vec![
            "-D".into(),
            "-e".into(),
            "-f".into(),
            config.clone().into(),
            "-p".into(),
            port.to_string().into(),
            "-o".into(),
            "ListenAddress=127.0.0.1".into(),
            "-h".into(),
            host_key.clone().into(),
        ];
        let mut daemon = Daemon::spawn(SSHD, &args, &log);
        let ready = format!("Server listening on 127.0.0.1 port {port}.");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if daemon.log_text().lines().any(|l| l == ready) {
                return Sshd {
                    port,
                    fingerprint,
                    _daemon: daemon,
                    _dir: dir,
                };
            }
            if let Some(why) = daemon.exited() {
                last = why;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not print {ready:?} within {READY_TIMEOUT:?}; log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("sshd did not start on a free port in 5 attempts; last: {last}");
}

// ---------------------------------------------------------------------------------------------
// Fetching

fn tftp_url(addr: SocketAddr, path: &str) -> Source {
    Source::parse(&format!("tftp://127.0.0.1:{}/{path}", addr.port())).expect("tftp url")
}

fn sftp_url(user: &str, port: u16, path: &Path) -> Source {
    Source::parse(&format!("sftp://{user}@127.0.0.1:{port}{}", path.display())).expect("sftp url")
}

fn tftp_options(tftp: TftpOptions) -> FetchOptions {
    FetchOptions { tftp, sftp: None }
}

fn sftp_options(credential: Credential, host_key: HostKeyCheck) -> FetchOptions {
    FetchOptions {
        tftp: TftpOptions::default(),
        sftp: Some(SftpOptions {
            credential,
            host_key,
            deadline: FETCH_DEADLINE,
            in_flight: 64,
        }),
    }
}

/// Lock-step at 512-byte blocks, as RFC 1350 clients fetch (no blksize, no windowsize).
fn rfc1350() -> TftpOptions {
    TftpOptions {
        blksize: None,
        windowsize: None,
        deadline: FETCH_DEADLINE,
        ..TftpOptions::default()
    }
}

/// Fetches `source` into the file `out` with relay's library call.
async fn fetch(source: &Source, opts: &FetchOptions, out: &Path) -> Result<u64, FetchError> {
    relay::fetch_to_file(source, out, opts, &mut |_| {}).await
}

/// Fetches and asserts the file is exactly `data`.
async fn fetch_exact(source: &Source, opts: &FetchOptions, data: &[u8]) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("image");
    let n = fetch(source, opts, &out)
        .await
        .unwrap_or_else(|e| panic!("fetch {source}: {e}"));
    assert_eq!(n, data.len() as u64, "bytes reported for {source}");
    assert_eq!(
        sha256_file(&out),
        sha256_hex(data),
        "content of {source} differs"
    );
}

/// Fetches a source that must fail; asserts nothing was left under the target name.
async fn fetch_err(source: &Source, opts: &FetchOptions) -> FetchError {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("image");
    let Err(e) = fetch(source, opts, &out).await else {
        panic!("fetching {source} succeeded")
    };
    let left: Vec<_> = fs::read_dir(out_dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "a failed fetch left {left:?}");
    e
}

/// A file past 65535 blocks of 512 bytes (33,553,920 bytes): block numbers must roll over.
const ROLLOVER_SIZE: usize = 34_000_000;
const _: () = assert!(ROLLOVER_SIZE > 65_535 * 512);

// ---------------------------------------------------------------------------------------------
// TFTP: rollover, option negotiation, wrong path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftpd_hpa_rollover_with_512_byte_blocks() {
    let dir = ServeDir::new();
    let data = pseudo_random(ROLLOVER_SIZE, 31);
    dir.write("ap3g3", &data);
    let server = tftpd_hpa(dir.path(), 1_000_000);
    fetch_exact(
        &tftp_url(server.addr, "ap3g3"),
        &tftp_options(rfc1350()),
        &data,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftpd_rollover_with_512_byte_blocks() {
    let dir = ServeDir::new();
    let data = pseudo_random(ROLLOVER_SIZE, 32);
    dir.write("ap3g3", &data);
    let server = atftpd(dir.path());
    fetch_exact(
        &tftp_url(server.addr, "ap3g3"),
        &tftp_options(rfc1350()),
        &data,
    )
    .await;
}

/// Fetches `len` bytes with relay's default options (blksize 1468, windowsize 16) through a
/// proxy that only counts, and returns the proxy's counts and the number of blocks.
async fn default_options_fetch(server: SocketAddr, dir: &ServeDir, seed: u64) -> (Counts, u64) {
    let len = 5_000_000;
    let data = pseudo_random(len, seed);
    dir.write("ap1g8", &data);
    let proxy = UdpProxy::start(server, Faults::none()).expect("proxy");
    let opts = TftpOptions {
        deadline: FETCH_DEADLINE,
        ..TftpOptions::default()
    };
    assert_eq!((opts.blksize, opts.windowsize), (Some(1468), Some(16)));
    // relay::tftp::fetch (what fetch_to_file runs) also says whether options were dropped.
    let mut out = Vec::new();
    let done = relay::tftp::fetch(
        &tftp_url(proxy.addr(), "ap1g8"),
        &opts,
        &mut out,
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out == data, "content differs");
    assert_eq!(done.announced, Some(len as u64), "tsize answered");
    assert!(!done.fell_back, "the options were accepted, not refused");
    (proxy.counts(), len.div_ceil(1468) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftpd_hpa_default_options_proceed_lock_step_without_windowsize() {
    let dir = ServeDir::new();
    let server = tftpd_hpa(dir.path(), 1_000_000);
    let (counts, blocks) = default_options_fetch(server.addr, &dir, 33).await;
    // tftpd-hpa ignores windowsize: one ACK per block (plus the RRQ and the OACK's ACK 0).
    assert!(
        counts.to_server.received > blocks,
        "{blocks} blocks, {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftpd_default_options_use_windowsize_16() {
    let dir = ServeDir::new();
    let server = atftpd(dir.path());
    let (counts, blocks) = default_options_fetch(server.addr, &dir, 34).await;
    // One ACK per window of 16 (plus the RRQ and ACK 0; a few more if a window was resent).
    assert!(
        counts.to_server.received <= blocks / 16 + 10,
        "{blocks} blocks, {counts:?}"
    );
}

async fn assert_wrong_path(server: SocketAddr) {
    let src = tftp_url(server, "Wrong-Path/ap1g6");
    let e = fetch_err(&src, &tftp_options(rfc1350())).await;
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file tftp://127.0.0.1:{}/Wrong-Path/ap1g6: No such file or directory",
            server.port()
        )
    );
    // The same with options asked for (the server answers the RRQ with ERROR 1 either way).
    let e = fetch_err(&src, &tftp_options(TftpOptions::default())).await;
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

/// A root-owned file of mode 0600, which the server's unprivileged user cannot read: what
/// relay reports is what the server said (`kind`).
async fn assert_unreadable(server: SocketAddr, dir: &ServeDir, kind: ErrorKind) {
    let path = dir.write("ap1g5", &pseudo_random(1000, 40));
    airlift_tests::chmod(&path, 0o600);
    let e = fetch_err(
        &tftp_url(server, "ap1g5"),
        &tftp_options(TftpOptions::default()),
    )
    .await;
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file tftp://127.0.0.1:{}/ap1g5: {}",
            server.port(),
            kind.text()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftpd_hpa_wrong_path_reads_like_the_controller() {
    let dir = ServeDir::new();
    let server = tftpd_hpa(dir.path(), 1_000_000);
    assert_wrong_path(server.addr).await;
    // tftpd-hpa (as nobody after its chroot) answers ERROR 0 "Permission denied".
    assert_unreadable(server.addr, &dir, ErrorKind::PermissionDenied).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftpd_wrong_path_reads_like_the_controller() {
    let dir = ServeDir::new();
    let server = atftpd(dir.path());
    assert_wrong_path(server.addr).await;
    // atftpd (as nobody) answers any open failure with ERROR 1 "File not found".
    assert_unreadable(server.addr, &dir, ErrorKind::NotFound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_fetch_from_tftpd_hpa_exits_0_and_1_with_the_controller_line() {
    let dir = ServeDir::new();
    // A synthetic AP image (a tar with info members): the CLI checks image-named files.
    let mut data = Vec::new();
    let version = "17.9.4.27".parse().expect("version");
    bundle_tool::synth::write_image(&mut data, "ap1g7", version, 1_024_000).expect("image");
    dir.write("ap1g7", &data);
    let server = tftpd_hpa(dir.path(), 1_000_000);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let target = out_dir.path().join("ap1g7");
    let url = |p: &str| format!("tftp://127.0.0.1:{}/{p}", server.addr.port());
    let run = |url: String| {
        run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_relay"))
                .args(["fetch", &url, "--timeout", "60", "-o"])
                .arg(&target),
            Duration::from_secs(90),
        )
    };
    let ok = run(url("ap1g7"));
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    assert_eq!(sha256_file(&target), sha256_hex(&data));
    let bad = run(url("Wrong-Path/ap1g6"));
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim_end(),
        format!(
            "Failed to download file {}: No such file or directory",
            url("Wrong-Path/ap1g6")
        )
    );
    assert_eq!(
        sha256_file(&target),
        sha256_hex(&data),
        "a failed fetch to another URL left the earlier file alone"
    );
}

// ---------------------------------------------------------------------------------------------
// SFTP from OpenSSH's sshd

/// A test account, a key for it, sshd, and a served folder readable by the account.
struct SshScene {
    user: SystemUser,
    key: ClientKey,
    server: Sshd,
    dir: ServeDir,
}

impl SshScene {
    fn new(tag: &str) -> SshScene {
        require(SSHD, "openssh-server");
        require_root("sshd's tests");
        let user = SystemUser::new(
            &format!("relay-{tag}-{}", std::process::id()),
            PASSWORD,
            &[],
        );
        let key = ClientKey::new();
        let server = sshd(&user, &key);
        SshScene {
            user,
            key,
            server,
            dir: ServeDir::new(),
        }
    }

    fn url(&self, rel: &str) -> Source {
        sftp_url(
            &self.user.name,
            self.server.port,
            &self.dir.path().join(rel),
        )
    }

    fn pinned(&self) -> HostKeyCheck {
        HostKeyCheck::Fingerprint(self.server.fingerprint.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_password_and_key_logins_fetch_exact_bytes() {
    let scene = SshScene::new("ok");
    let data = pseudo_random(12_345_678, 36);
    scene.dir.write("EWC/17_9_4a/ap3g3", &data);
    let src = scene.url("EWC/17_9_4a/ap3g3");
    let by_password = sftp_options(Credential::Password(PASSWORD.into()), scene.pinned());
    fetch_exact(&src, &by_password, &data).await;
    let by_key = sftp_options(Credential::Key(scene.key.private.clone()), scene.pinned());
    fetch_exact(&src, &by_key, &data).await;
    // The CLI, as an administrator would test the server: key login, pinned host key.
    let out_dir = tempfile::tempdir().expect("tempdir");
    let target = out_dir.path().join("ap3g3");
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["fetch", "-q", "--no-image-check", "--timeout", "60"])
            .arg("--identity")
            .arg(&scene.key.private)
            .args(["--host-key-fingerprint", &scene.server.fingerprint])
            .arg(format!(
                "sftp://{}@127.0.0.1:{}{}",
                scene.user.name,
                scene.server.port,
                scene.dir.path().join("EWC/17_9_4a/ap3g3").display()
            ))
            .arg("-o")
            .arg(&target),
        Duration::from_secs(90),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(sha256_file(&target), sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_failures_read_like_the_controller() {
    let scene = SshScene::new("bad");
    scene.dir.write("ap3g3", &pseudo_random(1000, 37));
    let port = scene.server.port;
    let good = || Credential::Password(PASSWORD.into());

    let missing = scene.dir.path().join("Wrong-Path/ap1g6");
    let e = fetch_err(
        &scene.url("Wrong-Path/ap1g6"),
        &sftp_options(good(), scene.pinned()),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file sftp://*****@127.0.0.1:{port}{}: No such file or directory",
            missing.display()
        )
    );

    let e = fetch_err(
        &scene.url("ap3g3"),
        &sftp_options(
            Credential::Password("not-the-password".into()),
            scene.pinned(),
        ),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::AuthenticationFailed, "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "Failed to download file sftp://*****@127.0.0.1:{port}{}: Authentication failed",
            scene.dir.path().join("ap3g3").display()
        )),
        "{e}"
    );

    // A file the account may not read.
    let locked = scene.dir.write("ap1g5", &pseudo_random(1000, 41));
    airlift_tests::chmod(&locked, 0o600);
    let e = fetch_err(&scene.url("ap1g5"), &sftp_options(good(), scene.pinned())).await;
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file sftp://*****@127.0.0.1:{port}{}: Permission denied",
            locked.display()
        )
    );

    // Another key than the one in authorized_keys.
    let stranger = ClientKey::new();
    let e = fetch_err(
        &scene.url("ap3g3"),
        &sftp_options(Credential::Key(stranger.private.clone()), scene.pinned()),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::AuthenticationFailed, "{e}");

    // A pinned fingerprint that is not sshd's: refused before any credential is sent.
    let wrong_pin = HostKeyCheck::Fingerprint(format!("SHA256:{}", "A".repeat(43)));
    assert_ne!(wrong_pin, scene.pinned());
    let e = fetch_err(&scene.url("ap3g3"), &sftp_options(good(), wrong_pin)).await;
    assert_eq!(e.kind, ErrorKind::HostKeyMismatch, "{e}");
    assert!(e.to_string().contains(": Host key mismatch"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Nobody serving

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_to_a_silent_port_times_out_within_the_deadline() {
    // relay's socket is not connected (the server answers from a new port), so Linux does not
    // report ICMP port-unreachable to it: relay retransmits until its deadline, then reports
    // TimedOut.
    let port = free_udp_port();
    let src = Source::parse(&format!("tftp://127.0.0.1:{port}/ap1g6")).expect("url");
    let deadline = Duration::from_secs(3);
    let opts = tftp_options(TftpOptions {
        deadline,
        ..TftpOptions::default()
    });
    let e = fetch_err(&src, &opts).await;
    assert_eq!(e.kind, ErrorKind::TimedOut, "{e}");
    // The deadline ended it, not the retransmission schedule (which gives up after 63 s
    // and says "no answer after N retransmissions").
    assert_eq!(
        e.to_string(),
        format!("Failed to download file {src}: Timed out (deadline of 3 s reached)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_to_a_closed_port_is_unreachable() {
    let port = free_tcp_port();
    let src = Source::parse(&format!("sftp://ap@127.0.0.1:{port}/images/ap1g6")).expect("url");
    let opts = sftp_options(
        Credential::Password("unused".into()),
        HostKeyCheck::Fingerprint(format!("SHA256:{}", "A".repeat(43))),
    );
    // Refused, not TimedOut: reported at once rather than at the deadline.
    let e = fetch_err(&src, &opts).await;
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file sftp://*****@127.0.0.1:{port}/images/ap1g6: Connection refused"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// A lossy link

/// 1% of datagrams dropped and 1% duplicated, each way.
fn lossy(seed: u64) -> Faults {
    Faults::symmetric(Rate::PerMille(10), Rate::PerMille(10), seed)
}

fn assert_faults_happened(counts: &Counts) {
    for (way, c) in [
        ("to the server", counts.to_server),
        ("to the client", counts.to_client),
    ] {
        assert!(c.dropped > 0, "nothing was dropped {way}: {counts:?}");
        assert!(c.duplicated > 0, "nothing was duplicated {way}: {counts:?}");
        assert_eq!(c.received, c.forwarded + c.dropped, "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_link_lock_step_from_tftpd_hpa_is_exact() {
    let dir = ServeDir::new();
    let data = pseudo_random(2_000_000, 38);
    dir.write("ap1g8", &data);
    // tftpd-hpa retransmits after 100 ms, relay after 200 ms: each loss costs little.
    let server = tftpd_hpa(dir.path(), 100_000);
    let proxy = UdpProxy::start(server.addr, lossy(1)).expect("proxy");
    let opts = tftp_options(TftpOptions {
        retransmit: Duration::from_millis(200),
        deadline: FETCH_DEADLINE,
        ..TftpOptions::default()
    });
    fetch_exact(&tftp_url(proxy.addr(), "ap1g8"), &opts, &data).await;
    assert_faults_happened(&proxy.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_link_windowed_from_our_tftpd_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pseudo_random(4_000_000, 39);
    fs::write(dir.path().join("ap1g8"), &data).expect("write");
    let server = common::start_with_retransmit(dir.path(), Duration::from_millis(200));
    let proxy = UdpProxy::start(server.addr, lossy(2)).expect("proxy");
    let opts = tftp_options(TftpOptions {
        blksize: Some(1468),
        windowsize: Some(16),
        retransmit: Duration::from_millis(200),
        deadline: FETCH_DEADLINE,
    });
    fetch_exact(&tftp_url(proxy.addr(), "ap1g8"), &opts, &data).await;
    let counts = proxy.counts();
    assert_faults_happened(&counts);
    // Windowed: far fewer ACKs than DATA.
    assert!(
        counts.to_server.received * 4 < counts.to_client.received,
        "{counts:?}"
    );
    // A duplicated DATA must not make the receiver ACK mid-window (which the sender reads as
    // a gap and answers by resending the window): with 1% faults the server sends well under
    // twice the blocks. (Before the fix, 1% duplicates made it send five times as many.)
    let blocks = data.len().div_ceil(1468) as u64 + 1;
    assert!(
        counts.to_client.received < blocks * 2,
        "{} DATA for {blocks} blocks: {counts:?}",
        counts.to_client.received
    );
}
