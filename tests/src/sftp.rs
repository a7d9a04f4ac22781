//! Helpers for sftpd's end-to-end tests: start the real binary (`-D -e`, port 0) on loopback
//! with a configuration written for the test, and drive real clients (OpenSSH `sftp` and
//! `scp`, `sshpass`, `curl sftp://`, paramiko) with a deadline.

use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{CLIENT_TIMEOUT, LogSink, chmod, describe, run_with_timeout};

/// How long the server may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sftpd, killed on drop; its stderr (the log) is collected.
#[derive(Debug)]
pub struct Sftpd {
    child: Child,
    addr: SocketAddr,
    log: Arc<LogSink>,
    reader: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Sftpd {
    /// Writes `config` (sshd_config text) and starts `bin -D -e -f CONFIG -h KEY -p 0 ARGS`
    /// on 127.0.0.1, waiting for `Server listening on 127.0.0.1 port N.`.
    pub fn start(bin: &str, config: &str, args: &[&str]) -> Sftpd {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("sshd_config");
        fs::write(&cfg, config).expect("write config");
        let key = dir.path().join("ssh_host_ed25519_key");
        let mut argv: Vec<OsString> = vec![
            "-D".into(),
            "-e".into(),
            "-f".into(),
            cfg.into(),
            "-h".into(),
            key.into(),
            "-p".into(),
            "0".into(),
            "-o".into(),
            "ListenAddress=127.0.0.1".into(),
        ];
        argv.extend(args.iter().map(OsString::from));
        let mut child = Command::new(bin)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (log, reader) = LogSink::follow(stderr);
        let is_ready = |l: &str| l.starts_with("Server listening on 127.0.0.1 port ");
        // With `-E FILE` the log goes to the file: poll it for the listening line.
        let log_file = args
            .iter()
            .position(|a| *a == "-E")
            .and_then(|i| args.get(i + 1));
        let line = match log_file {
            Some(path) => {
                let deadline = std::time::Instant::now() + START_TIMEOUT;
                loop {
                    let text = fs::read_to_string(path).unwrap_or_default();
                    if let Some(l) = text.lines().find(|l| is_ready(l)) {
                        break l.to_owned();
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no listening line in {path} within {START_TIMEOUT:?}:\n{text}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => log.wait_for_log("Server listening", START_TIMEOUT, is_ready),
        };
        let port: u16 = line
            .trim_start_matches("Server listening on 127.0.0.1 port ")
            .trim_end_matches('.')
            .parse()
            .expect("port in the listening line");
        Sftpd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            reader: Some(reader),
            dir,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's collected log.
    pub fn log(&self) -> &LogSink {
        &self.log
    }

    /// The folder holding the configuration and host key.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for a line exactly equal to `line`.
    pub fn wait_for_line(&self, line: &str) {
        self.log
            .wait_for_log(&format!("{line:?}"), crate::LOG_TIMEOUT, |l| l == line);
    }
}

impl Drop for Sftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A client key pair made with `ssh-keygen` (ed25519, no passphrase).
#[derive(Debug)]
pub struct ClientKey {
    /// Private key file.
    pub private: PathBuf,
    /// The `.pub` line.
    pub public: String,
    _dir: tempfile::TempDir,
}

impl ClientKey {
    /// Generates a key.
    pub fn new() -> ClientKey {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("id_ed25519");
        let out = run_with_timeout(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@airlift", "-f"])
                .arg(&private),
            CLIENT_TIMEOUT,
        );
        assert!(out.status.success(), "ssh-keygen: {}", describe(&out));
        let public = fs::read_to_string(dir.path().join("id_ed25519.pub"))
            .expect("read .pub")
            .trim()
            .to_owned();
        ClientKey {
            private,
            public,
            _dir: dir,
        }
    }

    /// `SHA256:…` as sshd logs it.
    pub fn fingerprint(&self) -> String {
        let out = run_with_timeout(
            Command::new("ssh-keygen").arg("-lf").arg(&self.private),
            CLIENT_TIMEOUT,
        );
        assert!(out.status.success(), "ssh-keygen -l: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("fingerprint field")
            .to_owned()
    }
}

impl Default for ClientKey {
    fn default() -> Self {
        Self::new()
    }
}

fn ssh_options(addr: SocketAddr) -> Vec<String> {
    [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
    ]
    .iter()
    .map(ToString::to_string)
    .chain(["-P".to_string(), addr.port().to_string()])
    .collect()
}

/// `program` (`ssh`, `scp`, `sftp`) with non-interactive key login options: no host key
/// checks or records, batch mode, only `key`.
pub fn key_command(program: &str, key: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
    ])
    .arg(key);
    cmd
}

/// How a client authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Login<'a> {
    /// Public key from this file.
    Key(&'a Path),
    /// Password through `sshpass`.
    Password(&'a str),
}

/// Runs OpenSSH `sftp -b -` with `batch` commands as `user`; `extra` are more `sftp` flags.
pub fn sftp_batch(
    addr: SocketAddr,
    user: &str,
    login: Login<'_>,
    batch: &str,
    extra: &[&str],
) -> Output {
    let mut cmd = match login {
        Login::Key(_) => Command::new("sftp"),
        Login::Password(pw) => {
            let mut c = Command::new("sshpass");
            c.args(["-p", pw, "sftp"]);
            c
        }
    };
    cmd.args(ssh_options(addr));
    match login {
        Login::Key(k) => {
            cmd.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
                .arg(k);
        }
        Login::Password(_) => {
            // `sftp -b` turns BatchMode on, which disables passwords; the first value wins.
            cmd.args([
                "-o",
                "BatchMode=no",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
            ]);
        }
    }
    cmd.args(extra)
        .arg("-b")
        .arg("-")
        .arg(format!("{user}@127.0.0.1"));
    run_with_stdin(cmd, batch.as_bytes())
}

/// Runs `cmd` with `input` on stdin, under [`CLIENT_TIMEOUT`].
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    crate::wait_child_output(child, CLIENT_TIMEOUT, "client")
}

/// A chroot tree under `/srv` (root-owned, 0755, as sshd requires), removed on drop. Needs
/// root; `/tmp` cannot hold a chroot because it is world-writable.
#[derive(Debug)]
pub struct Jail {
    path: PathBuf,
}

impl Jail {
    /// Creates `/srv/airlift-sftpd-<name>-<pid>` (mode 0755).
    pub fn new(name: &str) -> Jail {
        assert!(
            crate::is_root(),
            "this test builds a root-owned chroot and must run as root (CI does)"
        );
        let path = PathBuf::from(format!("/srv/airlift-sftpd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("mkdir jail");
        chmod(&path, 0o755);
        Jail { path }
    }

    /// The jail's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `rel` (mode `mode`, owned by `uid:gid`) inside the jail.
    pub fn dir(&self, rel: &str, mode: u32, uid: u32, gid: u32) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).expect("mkdir in jail");
        chmod(&p, mode);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
        p
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A system account made with `useradd` for one test, removed (with `userdel`) on drop.
#[derive(Debug)]
pub struct SystemUser {
    /// Name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

impl SystemUser {
    /// `useradd -M -s /usr/sbin/nologin NAME` and `chpasswd` with `password`.
    pub fn new(name: &str, password: &str, groups: &[&str]) -> SystemUser {
        assert!(
            crate::is_root(),
            "creating accounts needs root (CI runs as root)"
        );
        let _ = Command::new("userdel").arg(name).output();
        for g in groups {
            let _ = Command::new("groupadd").arg(g).output();
        }
        let mut cmd = Command::new("useradd");
        cmd.args(["-M", "-d", "/upload", "-s", "/usr/sbin/nologin"]);
        if !groups.is_empty() {
            cmd.args(["-G", &groups.join(",")]);
        }
        let out = run_with_timeout(cmd.arg(name), CLIENT_TIMEOUT);
        assert!(out.status.success(), "useradd: {}", describe(&out));
        let out = run_with_stdin(
            Command::new("chpasswd"),
            format!("{name}:{password}\n").as_bytes(),
        );
        assert!(out.status.success(), "chpasswd: {}", describe(&out));
        let uid = crate::uid_of(name).expect("uid of new user");
        let gid = id_g(name);
        SystemUser {
            name: name.to_owned(),
            uid,
            gid,
        }
    }
}

fn id_g(name: &str) -> u32 {
    let out = run_with_timeout(Command::new("id").args(["-g", name]), CLIENT_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("gid")
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
