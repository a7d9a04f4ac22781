//! sftpd's defences and its own keywords, with real clients on loopback: a burst of 50
//! logins under the default MaxStartups, per-source penalties, MaxAuthTries,
//! LoginGraceTime, UsersFile virtual users, AtomicUploads, and `-E` logs from a chroot.
//! Runs as root (CI does): it creates root-owned chroots under `/srv`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use airlift_tests::sftp::{ClientKey, Jail, Login, Sftpd, sftp_batch};
use airlift_tests::{CLIENT_TIMEOUT, describe, pseudo_random, sha256_file};

const BIN: &str = env!("CARGO_BIN_EXE_sftpd");
const PASSWORD: &str = "virtual-pw";

/// A virtual user (UsersFile) acting as `nobody`, jailed with `images/` and `upload/`.
struct Virtual {
    jail: Jail,
    key: ClientKey,
    users: Jail,
    config: String,
}

fn nobody() -> (u32, u32) {
    let uid = airlift_tests::uid_of("nobody").expect("nobody exists");
    (uid, 65534)
}

impl Virtual {
    fn new(name: &str, extra: &str) -> Virtual {
        let (uid, gid) = nobody();
        let jail = Jail::new(name);
        jail.dir("images", 0o755, 0, 0);
        jail.dir("upload", 0o755, uid, gid);
        let key = ClientKey::new();
        let users = Jail::new(&format!("{name}-users"));
        let hash = sha512_crypt(PASSWORD);
        let file = users.path().join("users");
        fs::write(
            &file,
            format!(
                "# name:hash:uid:gid:home:chroot:keys\nap-fetch:{hash}:{uid}:{gid}:/upload:{}:{}\n",
                jail.path().display(),
                key.public
            ),
        )
        .expect("write users");
        airlift_tests::chmod(&file, 0o600);
        let config = format!(
            "UsersFile {}\nForceCommand internal-sftp -l VERBOSE\nLogLevel VERBOSE\n{extra}",
            file.display()
        );
        Virtual {
            jail,
            key,
            users,
            config,
        }
    }
}

fn sha512_crypt(password: &str) -> String {
    let out = airlift_tests::run_with_timeout(
        std::process::Command::new("openssl").args(["passwd", "-6", password]),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success(), "openssl passwd: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `n` connections that each try one wrong password for ap-fetch.
fn wrong_passwords(server: &Sftpd, n: usize) {
    for _ in 0..n {
        let out = sftp_batch(
            server.addr(),
            "ap-fetch",
            Login::Password("wrong"),
            "pwd\n",
            &["-o", "NumberOfPasswordPrompts=1"],
        );
        assert!(!out.status.success(), "a wrong password was accepted");
    }
}

#[test]
fn fifty_simultaneous_logins_all_succeed_under_default_maxstartups() {
    let v = Virtual::new("burst", "");
    fs::write(v.jail.path().join("images/version.info"), b"17.9.4.27\n").expect("write");
    let server = Sftpd::start(BIN, &v.config, &[]);
    let addr = server.addr();
    let key = v.key.private.clone();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let key = key.clone();
            std::thread::spawn(move || {
                sftp_batch(addr, "ap-fetch", Login::Key(&key), "ls /images\n", &[])
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let out = h.join().expect("client thread");
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("version.info") {
            failures.push(describe(&out));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 logins failed (default MaxStartups 10:30:100): {:#?}\nserver log:\n{}",
        failures.len(),
        failures,
        server.log().lines().join("\n")
    );
    assert!(
        !server
            .log()
            .lines()
            .iter()
            .any(|l| l.contains("past MaxStartups")),
        "a connection was dropped"
    );
}

#[test]
fn repeated_failures_from_one_source_are_penalised() {
    let v = Virtual::new("penalty", "");
    let server = Sftpd::start(BIN, &v.config, &[]);
    wrong_passwords(&server, 4);
    // OpenSSH 9.8's lines: a deferred penalty, then its activation past `min` (15 s).
    server.wait_for_line(
        "srclimit_penalise: ipv4: new 127.0.0.1/32 deferred penalty of 5 seconds for penalty: failed authentication",
    );
    // (the seconds are those remaining, a little under 4 × 5)
    server
        .log()
        .wait_for_log("penalty activation", CLIENT_TIMEOUT, |l| {
            l.starts_with("srclimit_penalise: 127.0.0.1/32: activating ipv4 penalty of ")
                && l.ends_with(" seconds for penalty: failed authentication")
        });
    // Now even the right password is refused at the door.
    let out = sftp_batch(
        server.addr(),
        "ap-fetch",
        Login::Password(PASSWORD),
        "pwd\n",
        &[],
    );
    assert!(!out.status.success(), "penalised source was served");
    server
        .log()
        .wait_for_log("drop connection", CLIENT_TIMEOUT, |l| {
            l.starts_with("drop connection #")
                && l.contains(" from [127.0.0.1]:")
                && l.ends_with(" penalty: failed authentication")
        });
}

#[test]
fn max_auth_tries_and_login_grace_time() {
    let v = Virtual::new("limits", "MaxAuthTries 2\nLoginGraceTime 2\n");
    let server = Sftpd::start(BIN, &v.config, &[]);
    // Three unknown keys offered on one connection: each refusal counts, as in sshd.
    let keys = [ClientKey::new(), ClientKey::new(), ClientKey::new()];
    let mut cmd = std::process::Command::new("sftp");
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-P",
        &server.addr().port().to_string(),
    ]);
    for k in &keys {
        cmd.arg("-i").arg(&k.private);
    }
    cmd.args(["-b", "-", "ap-fetch@127.0.0.1"]);
    let out = airlift_tests::sftp::run_with_stdin(cmd, b"pwd\n");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Too many authentication failures"),
        "{}",
        describe(&out)
    );
    server
        .log()
        .wait_for_log("maximum authentication attempts", CLIENT_TIMEOUT, |l| {
            l.starts_with(
                "maximum authentication attempts exceeded for ap-fetch from 127.0.0.1 port ",
            ) && l.ends_with(" ssh2")
        });
    // A client that connects and says nothing is cut off after LoginGraceTime.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut banner = [0u8; 64];
    let n = s.read(&mut banner).expect("banner");
    assert!(banner[..n].starts_with(b"SSH-2.0-"), "{:?}", &banner[..n]);
    server
        .log()
        .wait_for_log("Timeout before authentication", CLIENT_TIMEOUT, |l| {
            l.starts_with("Timeout before authentication for 127.0.0.1 port ")
        });
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let _ = s.write_all(b"late");
}

#[test]
fn virtual_user_atomic_uploads_and_logs_to_file_from_the_jail() {
    let v = Virtual::new("atomic", "AtomicUploads yes\n");
    let image = v.jail.path().join("images/apig7");
    fs::write(&image, pseudo_random(3_000_000, 7)).expect("write");
    let logdir = tempfile::tempdir().expect("tempdir");
    let logfile = logdir.path().join("sftpd.log");
    let logarg = logfile.to_string_lossy().into_owned();
    let server = Sftpd::start(BIN, &v.config, &["-E", &logarg]);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let src = out_dir.path().join("up.bin");
    fs::write(&src, pseudo_random(2_000_000, 9)).expect("write");
    let out = sftp_batch(
        server.addr(),
        "ap-fetch",
        Login::Password(PASSWORD),
        &format!(
            "pwd\nput {} new.bin\nget /images/apig7 {}/apig7\n",
            src.display(),
            out_dir.path().display()
        ),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Remote working directory: /upload"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        sha256_file(&v.jail.path().join("upload/new.bin")),
        sha256_file(&src)
    );
    assert_eq!(
        sha256_file(&out_dir.path().join("apig7")),
        sha256_file(&image)
    );
    // No temporary left behind, and the file belongs to the user the virtual account acts as.
    let names: Vec<String> = fs::read_dir(v.jail.path().join("upload"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["new.bin"]);
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(v.jail.path().join("upload/new.bin")).expect("stat");
    assert_eq!(meta.uid(), nobody().0);
    // The chrooted session's internal-sftp lines reached the -E file (no /dev/log in the jail).
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    loop {
        let text = fs::read_to_string(&logfile).unwrap_or_default();
        if text.contains("session closed for local user ap-fetch from [127.0.0.1]") {
            assert!(
                text.contains("open \"/upload/new.bin\" flags WRITE,CREATE,TRUNCATE mode 0644"),
                "{text}"
            );
            assert!(
                text.contains("close \"/upload/new.bin\" bytes read 0 written 2000000"),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "Changed root directory to \"{}\"",
                    v.jail.path().display()
                )),
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "log file:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(v.users);
}

#[test]
fn malformed_packets_close_only_their_session_and_forwarding_is_refused() {
    let v = Virtual::new("malformed", "");
    fs::write(v.jail.path().join("images/version.info"), b"17.9.4.27\n").expect("write");
    let server = Sftpd::start(BIN, &v.config, &[]);
    let port = server.addr().port();
    // SSH level: a valid version line, then a packet announcing 4 GiB.
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut banner = [0u8; 64];
    let _ = s.read(&mut banner).expect("banner");
    s.write_all(b"SSH-2.0-garbage_1.0\r\n").expect("version");
    s.write_all(&[0xff; 64]).expect("garbage");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    server
        .log()
        .wait_for_log("a fatal protocol error", CLIENT_TIMEOUT, |l| {
            l.starts_with("ssh_dispatch_run_fatal: Connection from 127.0.0.1 port ")
                && l.ends_with(": Bad packet size: 4294967295")
        });
    // SFTP level: INIT, then a packet announcing 4 GiB. That session ends with status 255;
    // a new SFTP session on the same connection works.
    let script = format!(
        "import paramiko, struct\n\
         t = paramiko.Transport(('127.0.0.1', {port}))\n\
         t.connect(username='ap-fetch', password='{PASSWORD}')\n\
         ch = t.open_session()\n\
         ch.invoke_subsystem('sftp')\n\
         ch.sendall(struct.pack('>IBI', 5, 1, 3))\n\
         n = struct.unpack('>I', ch.recv(4))[0]\n\
         got = b''\n\
         while len(got) < n:\n\
         \x20   got += ch.recv(n - len(got))\n\
         assert got[0] == 2, got\n\
         ch.sendall(struct.pack('>I', 0xffffffff) + b'junk')\n\
         print('exit', ch.recv_exit_status())\n\
         s = paramiko.SFTPClient.from_transport(t)\n\
         print(sorted(s.listdir('/images')))\n\
         t.close()\n"
    );
    let mut py = std::process::Command::new("/usr/bin/python3");
    py.arg("-");
    let out = airlift_tests::sftp::run_with_stdin(py, script.as_bytes());
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exit 255"), "{text}");
    assert!(text.contains("['version.info']"), "{text}");
    server
        .log()
        .wait_for_log("bad sftp packet", CLIENT_TIMEOUT, |l| {
            l.starts_with("bad sftp packet: ")
        });
    // Forwarding: refused with sshd's line, whatever the configuration says.
    let out = airlift_tests::run_with_timeout(
        airlift_tests::sftp::key_command("ssh", &v.key.private).args([
            "-p",
            &port.to_string(),
            "-W",
            "127.0.0.1:9",
            "ap-fetch@127.0.0.1",
        ]),
        CLIENT_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));
    server
        .log()
        .wait_for_log("refused local port forward", CLIENT_TIMEOUT, |l| {
            l.starts_with("refused local port forward: originator ")
                && l.ends_with(", target 127.0.0.1 port 9")
        });
    // And the server still serves.
    let out = sftp_batch(
        server.addr(),
        "ap-fetch",
        Login::Key(&v.key.private),
        "ls /images\n",
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn exempt_sources_are_never_penalised() {
    let v = Virtual::new(
        "exempt",
        "PerSourcePenalties authfail:10s\nPerSourcePenaltyExemptList 10.0.0.0/8,127.0.0.0/8\n",
    );
    let server = Sftpd::start(BIN, &v.config, &[]);
    wrong_passwords(&server, 5);
    server
        .log()
        .wait_for_count("failed logins", 5, CLIENT_TIMEOUT, |l| {
            l.starts_with("Connection closed by authenticating user ap-fetch 127.0.0.1 port ")
        });
    let out = sftp_batch(
        server.addr(),
        "ap-fetch",
        Login::Password(PASSWORD),
        "pwd\n",
        &[],
    );
    assert!(
        out.status.success(),
        "exempt source refused: {}",
        describe(&out)
    );
    assert!(
        !server.log().lines().iter().any(|l| l.contains("penalty")),
        "{:#?}",
        server.log().lines()
    );
}

#[test]
fn detached_daemon_writes_its_pid_file_serves_and_stops_on_sigterm() {
    let v = Virtual::new("daemon", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sshd_config");
    let pid_path = dir.path().join("sftpd.pid");
    let log_path = dir.path().join("sftpd.log");
    fs::write(
        &cfg,
        format!(
            "{}ListenAddress 127.0.0.1\nPort 0\nPidFile {}\n",
            v.config,
            pid_path.display()
        ),
    )
    .expect("config");
    // No -D: the started process detaches and exits at once.
    let out = airlift_tests::run_with_timeout(
        std::process::Command::new(BIN)
            .arg("-f")
            .arg(&cfg)
            .arg("-h")
            .arg(dir.path().join("hostkey"))
            .arg("-E")
            .arg(&log_path),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    let (pid, port) = loop {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let port = log
            .lines()
            .find_map(|l| l.strip_prefix("Server listening on 127.0.0.1 port "))
            .and_then(|p| p.trim_end_matches('.').parse::<u16>().ok());
        let pid = fs::read_to_string(&pid_path)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let (Some(pid), Some(port)) = (pid, port) {
            break (pid, port);
        }
        assert!(std::time::Instant::now() < deadline, "log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
    let stop = |pid: i32| {
        // SAFETY: sends SIGTERM to the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    };
    let out = sftp_batch(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "ap-fetch",
        Login::Key(&v.key.private),
        "pwd\n",
        &[],
    );
    if !out.status.success() {
        stop(pid);
        panic!("{}", describe(&out));
    }
    stop(pid);
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    while alive(pid) || pid_path.exists() {
        assert!(std::time::Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("Received signal 15; terminating."), "{log}");
}

#[test]
fn syslog_gets_sshd_and_internal_sftp_lines_from_a_jail_without_dev_log() {
    use std::os::unix::net::UnixDatagram;
    let v = Virtual::new("syslog", "");
    assert!(!v.jail.path().join("dev/log").exists());
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind syslog socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let cfg = dir.path().join("sshd_config");
    fs::write(
        &cfg,
        format!("{}ListenAddress 127.0.0.1\nPort 0\n", v.config),
    )
    .expect("cfg");
    let mut child = std::process::Command::new(BIN)
        .arg("-D")
        .arg("-f")
        .arg(&cfg)
        .arg("-h")
        .arg(dir.path().join("hostkey"))
        .env("SFTPD_SYSLOG_SOCKET", &sock_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sftpd");
    let mut lines: Vec<String> = Vec::new();
    let read_until = |lines: &mut Vec<String>, want: &dyn Fn(&str) -> bool| -> bool {
        let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let l = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = want(&l);
                lines.push(l);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    let ready = read_until(&mut lines, &|l| {
        l.contains("Server listening on 127.0.0.1 port ")
    });
    let port: Option<u16> = lines.iter().find_map(|l| {
        l.split("Server listening on 127.0.0.1 port ")
            .nth(1)
            .and_then(|p| p.trim_end_matches('.').parse().ok())
    });
    let Some(port) = port.filter(|_| ready) else {
        let _ = child.kill();
        panic!("no listening line in syslog: {lines:#?}");
    };
    let out = sftp_batch(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "ap-fetch",
        Login::Key(&v.key.private),
        "pwd\n",
        &[],
    );
    let closed = read_until(&mut lines, &|l| {
        l.contains("internal-sftp[")
            && l.ends_with("]: session closed for local user ap-fetch from [127.0.0.1]")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(closed, "{lines:#?}");
    // AUTH.INFO (<38>) for both kinds, as OpenSSH sends them; the sftp lines come from the
    // chrooted session process.
    assert!(
        lines.iter().any(|l| l.starts_with("<38>")
            && l.contains(" sftpd[")
            && l.contains("]: Accepted publickey for ap-fetch from 127.0.0.1 port ")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<38>")
            && l.ends_with("]: session opened for local user ap-fetch from [127.0.0.1]")),
        "{lines:#?}"
    );
}

#[test]
fn banner_is_shown_and_max_sessions_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let banner = dir.path().join("banner");
    fs::write(&banner, "Authorized access only: AP image server\n").expect("banner");
    let v = Virtual::new(
        "sessions",
        &format!("Banner {}\nMaxSessions 2\n", banner.display()),
    );
    let server = Sftpd::start(BIN, &v.config, &[]);
    // OpenSSH prints the banner at LogLevel INFO (the sftp helper runs at ERROR).
    let out = airlift_tests::run_with_timeout(
        airlift_tests::sftp::key_command("ssh", &v.key.private).args([
            "-o",
            "LogLevel=INFO",
            "-p",
            &server.addr().port().to_string(),
            "-s",
            "ap-fetch@127.0.0.1",
            "sftp",
        ]),
        CLIENT_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Authorized access only: AP image server"),
        "{}",
        describe(&out)
    );
    // Three session channels on one connection: the third is refused.
    let script = format!(
        "import paramiko\n\
         t = paramiko.Transport(('127.0.0.1', {port}))\n\
         t.connect(username='ap-fetch', password='{PASSWORD}')\n\
         chans = [t.open_session(), t.open_session()]\n\
         try:\n\
         \x20   t.open_session()\n\
         \x20   print('third: opened')\n\
         except paramiko.ChannelException as e:\n\
         \x20   print('third: refused', e.code)\n\
         t.close()\n",
        port = server.addr().port()
    );
    let mut py = std::process::Command::new("/usr/bin/python3");
    py.arg("-");
    let out = airlift_tests::sftp::run_with_stdin(py, script.as_bytes());
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("third: refused"),
        "{}",
        describe(&out)
    );
}

#[test]
fn force_command_umask_start_dir_and_denylist_are_honoured() {
    let v = Virtual::new("serverargs", "");
    let config = v.config.replace(
        "ForceCommand internal-sftp -l VERBOSE",
        "ForceCommand internal-sftp -l VERBOSE -u 077 -d /images -P remove",
    );
    assert_ne!(config, v.config);
    fs::write(v.jail.path().join("images/version.info"), b"17.9.4.27\n").expect("write");
    let server = Sftpd::start(BIN, &config, &[]);
    let src = tempfile::NamedTempFile::new().expect("tmp");
    fs::write(src.path(), b"payload").expect("write");
    airlift_tests::chmod(src.path(), 0o644);
    let out = sftp_batch(
        server.addr(),
        "ap-fetch",
        Login::Key(&v.key.private),
        &format!(
            "pwd\nput {} /upload/new.bin\n-rm /upload/new.bin\n",
            src.path().display()
        ),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // -d: the session starts in /images (not the account's home, /upload).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Remote working directory: /images"),
        "{}",
        describe(&out)
    );
    // -u 077: created 0600 although the client asked for 0644.
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(v.jail.path().join("upload/new.bin")).expect("uploaded");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // -P remove: the file is still there, with sftp-server's refusal line.
    server.wait_for_line("Refusing denylisted remove request");
}

#[test]
fn dump_with_conditions_and_bind_errors() {
    let v = Virtual::new(
        "dump",
        "Match Address 10.0.0.0/8\nForceCommand internal-sftp -R\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sshd_config");
    fs::write(&cfg, &v.config).expect("config");
    let key = dir.path().join("hostkey");
    let dump = |spec: &str| {
        let out = airlift_tests::run_with_timeout(
            std::process::Command::new(BIN)
                .arg("-T")
                .arg("-f")
                .arg(&cfg)
                .arg("-h")
                .arg(&key)
                .args(["-C", spec]),
            CLIENT_TIMEOUT,
        );
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // First match wins: the global ForceCommand comes before the Match block in the file.
    let local = dump("user=ap-fetch,addr=127.0.0.1,lport=22");
    assert!(
        local.contains("forcecommand internal-sftp -l VERBOSE\n"),
        "{local}"
    );
    assert!(local.contains("usersfile "), "{local}");
    // A port already in use: non-zero exit and sshd's words.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = airlift_tests::run_with_timeout(
        std::process::Command::new(BIN)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .arg("-h")
            .arg(&key)
            .args(["-o", "ListenAddress=127.0.0.1", "-p", &port.to_string()]),
        CLIENT_TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("Bind to port {port} on 127.0.0.1 failed")),
        "{err}"
    );
    // -C without an address is refused.
    let out = airlift_tests::run_with_timeout(
        std::process::Command::new(BIN)
            .arg("-T")
            .arg("-f")
            .arg(&cfg)
            .args(["-C", "user=x"]),
        CLIENT_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));
}
