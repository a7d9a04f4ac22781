//! The three ways in.tftpd runs: from inetd (the socket on stdin, exit after `-t` idle
//! seconds), `-l` (detach, pid file), and `-L` (foreground, exercised by every other test).

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TFTPD: &str = env!("CARGO_BIN_EXE_tftpd");

fn served_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("version.info");
    std::fs::write(&f, "17.9.4.27\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir
}

fn curl(port: u16, name: &str, out: &Path) -> bool {
    Command::new("timeout")
        .args(["20", "curl", "-s", "-o"])
        .arg(out)
        .arg(format!("tftp://127.0.0.1:{port}/{name}"))
        .status()
        .expect("curl missing: apt-get install curl")
        .success()
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn inetd_mode_serves_from_stdin_and_exits_when_idle() {
    let dir = served_dir();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut child = Command::new(TFTPD)
        .args(["-s", "-t", "1", "-u", "root"])
        .arg(dir.path())
        .stdin(Stdio::from(OwnedFd::from(sock)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("got");
    assert!(curl(port, "version.info", &out));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "17.9.4.27\n");
    // With no request for a second it exits on its own, successfully.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("inetd-mode tftpd did not exit after -t 1");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn inetd_mode_refuses_a_terminal_or_file_on_stdin() {
    let out = Command::new(TFTPD)
        .args(["-s", "/tmp"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a UDP socket"));
}

#[test]
fn listen_detaches_writes_pid_file_and_removes_it_on_sigterm() {
    let dir = served_dir();
    let pidfile = dir.path().join("tftpd.pid");
    let port = free_port();
    // Debian's init-script line, with a loopback high port.
    let status = Command::new(TFTPD)
        .args(["--listen", "--user", "root", "--address"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--secure")
        .arg(dir.path())
        .status()
        .unwrap();
    // The command returns at once; the server lives on in the background.
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pidfile.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = dir.path().join("got");
    let served = curl(port, "version.info", &out);
    // SAFETY: kill(2) on the daemon's pid read from its own pid file.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    assert!(served, "the detached server did not answer");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "17.9.4.27\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pidfile.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pidfile.exists(), "pid file must be removed on SIGTERM");
}
