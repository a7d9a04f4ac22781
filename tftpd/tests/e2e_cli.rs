//! The real `tftpd`'s command line: in.tftpd's exit codes and messages, `--defaults-file`,
//! and signals.
#![allow(clippy::unwrap_used)]

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use airlift_tests::{
    RawClient, ServeDir, TftpServer, chmod, curl_get, describe, is_root, proc_uids, run_binary,
    tftp_hpa, uid_of, write_file,
};

const BIN: &str = env!("CARGO_BIN_EXE_tftpd");

/// Runs the binary, expecting it to exit by itself with `code` and print `message` on stderr.
fn expect_exit(args: &[&OsStr], code: i32, message: &str) {
    let out = run_binary(BIN, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l == message || l == format!("tftpd: {message}")),
        "{args:?}: expected {message:?} on stderr: {}",
        describe(&out)
    );
}

fn free_port() -> String {
    airlift_tests::free_udp_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_string()
}

#[test]
fn bad_maximum_blocksize_is_a_usage_error() {
    expect_exit(
        &[OsStr::new("-B"), OsStr::new("100")],
        64,
        "Bad maximum blocksize value (range 512-65464): 100",
    );
    expect_exit(
        &[OsStr::new("-L"), OsStr::new("-B"), OsStr::new("65465")],
        64,
        "Bad maximum blocksize value (range 512-65464): 65465",
    );
}

#[test]
fn refusing_an_unknown_option_is_a_usage_error() {
    expect_exit(
        &[OsStr::new("-r"), OsStr::new("windowsize")],
        64,
        "Unknown option: windowsize",
    );
}

#[test]
fn two_secure_directories_are_a_usage_error() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    expect_exit(
        &[
            OsStr::new("-L"),
            OsStr::new("-s"),
            a.path().as_os_str(),
            b.path().as_os_str(),
        ],
        64,
        "too many -s directories",
    );
}

#[test]
fn version_prints_and_exits_0() {
    let out = run_binary(BIN, &["-V"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "tftpd (airlift) {}, with remap, compatible with tftp-hpa 5.2\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    // Options are processed in order, as in.tftpd does: -V first wins over a later error.
    let out = run_binary(BIN, &["-V", "-B", "100"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = run_binary(BIN, &["-B", "100", "-V"]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
}

#[test]
fn unknown_user_exits_67_as_root() {
    let dir = ServeDir::new();
    dir.write("f", b"served");
    let port = free_port();
    let args = [
        OsStr::new("-L"),
        OsStr::new("-a"),
        OsStr::new(&port),
        OsStr::new("-u"),
        OsStr::new("no-such-user-airlift"),
        OsStr::new("-s"),
        dir.path().as_os_str(),
    ];
    if is_root() {
        expect_exit(&args, 67, "no user no-such-user-airlift");
    } else {
        // Documented: without root there is no user to change to, so -u is not looked up.
        let server = TftpServer::start(
            BIN,
            &[
                OsStr::new("-u"),
                OsStr::new("no-such-user-airlift"),
                OsStr::new("-s"),
                dir.path().as_os_str(),
            ],
        );
        assert_eq!(RawClient::new(server.addr()).fetch("f"), b"served");
    }
}

#[test]
fn missing_map_file_exits_66() {
    let dir = ServeDir::new();
    let port = free_port();
    expect_exit(
        &[
            OsStr::new("-L"),
            OsStr::new("-a"),
            OsStr::new(&port),
            OsStr::new("-m"),
            OsStr::new("/nonexistent"),
            OsStr::new("-s"),
            dir.path().as_os_str(),
        ],
        66,
        "Cannot open map file: /nonexistent: No such file or directory",
    );
}

#[test]
fn missing_secure_directory_exits_66() {
    let port = free_port();
    expect_exit(
        &[
            OsStr::new("-L"),
            OsStr::new("-a"),
            OsStr::new(&port),
            OsStr::new("-s"),
            OsStr::new("/nonexistent-airlift-dir"),
        ],
        66,
        "/nonexistent-airlift-dir: No such file or directory",
    );
}

#[test]
fn a_port_in_use_exits_71() {
    let dir = ServeDir::new();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    expect_exit(
        &[
            OsStr::new("-L"),
            OsStr::new("-a"),
            OsStr::new(&addr),
            OsStr::new("-s"),
            dir.path().as_os_str(),
        ],
        71,
        "cannot bind to local IPv4 socket: Address already in use",
    );
}

#[test]
fn debian_defaults_file_with_foreground_serves() {
    let dir = ServeDir::new();
    chmod(dir.path(), 0o777);
    dir.write("f", b"from the defaults file");
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("tftpd-hpa");
    let served = dir.path().to_str().unwrap().to_owned();
    let server = TftpServer::start_with(BIN, IpAddr::V4(Ipv4Addr::LOCALHOST), |addr| {
        let text = format!(
            "# /etc/default/tftpd-hpa\n\nTFTP_USERNAME=\"nobody\"\nTFTP_DIRECTORY=\"{served}\"\n\
             TFTP_ADDRESS=\"{addr}\"\nTFTP_OPTIONS=\"--secure --create --verbose\"\n"
        );
        write_file(&conf, text.as_bytes());
        vec![
            OsString::from("--defaults-file"),
            conf.clone().into_os_string(),
            OsString::from("--foreground"),
        ]
    });
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("f");
    let out = curl_get(server.addr(), "/f", &local, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), b"from the defaults file");
    // --verbose from TFTP_OPTIONS.
    server.wait_for_line("RRQ from 127.0.0.1 filename /f");
    // --create from TFTP_OPTIONS.
    let up = write_file(&tmp.path().join("up"), b"uploaded");
    let out = tftp_hpa(
        server.addr(),
        &[OsStr::new("put"), up.as_os_str(), OsStr::new("new")],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Error"),
        "{}",
        describe(&out)
    );
    assert_eq!(dir.read("new"), b"uploaded");
    // --secure and TFTP_USERNAME.
    if is_root() {
        let pid = server.serving_pid();
        assert_eq!(proc_uids(pid), [uid_of("nobody").unwrap(); 4]);
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }
}

/// Starts a server with `-P` in a root-owned 0755 directory (like /run), sends SIGTERM and
/// checks it exits 0 and removes its pid file, as in.tftpd does.
fn sigterm_removes_pid_file(secure: bool) {
    let dir = ServeDir::new();
    let pid_dir = tempfile::tempdir().unwrap();
    chmod(pid_dir.path(), 0o755);
    let pid_file = pid_dir.path().join("tftpd.pid");
    let mut args = vec![OsStr::new("-P"), pid_file.as_os_str()];
    if secure {
        args.push(OsStr::new("-s"));
    }
    args.push(dir.path().as_os_str());
    let mut server = TftpServer::start(BIN, &args);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", server.pid())
    );
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{:#?}", server.log_lines());
    assert!(
        !Path::new(&pid_file).exists(),
        "pid file left behind (secure: {secure}); log: {:#?}",
        server.log_lines()
    );
}

#[test]
fn sigterm_exits_0_and_removes_the_pid_file() {
    sigterm_removes_pid_file(false);
}

#[test]
fn sigterm_exits_0_and_removes_the_pid_file_with_s() {
    sigterm_removes_pid_file(true);
}
