//! End-to-end refusals: what the real `tftpd` answers (code and text) to bad names, modes,
//! options, permissions and uploads, seen by real clients and a raw socket.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::os::unix::fs::symlink;
use std::time::Duration;

use airlift_tests::{
    Opcode, Packet, RawClient, Received, ServeDir, TftpServer, atftp_get, chmod, curl_get,
    describe, encode_data, is_root, mode_of, pseudo_random, tftp_hpa, uid_of, write_file,
};

const BIN: &str = env!("CARGO_BIN_EXE_tftpd");

fn start(dir: &ServeDir, extra: &[&str]) -> TftpServer {
    let mut flags = vec!["-vv"];
    flags.extend_from_slice(extra);
    TftpServer::serve(BIN, &flags, dir.path())
}

fn error(code: u16, message: &str) -> Packet {
    Packet::Error {
        code,
        message: message.into(),
    }
}

fn rrq(server: &TftpServer, name: &[u8], mode: &[u8], options: &[(&str, &str)]) -> Received {
    rrq_from(server, name, mode, options).1
}

/// Like [`rrq`], also returning the client (to go on with the transfer it started).
fn rrq_from(
    server: &TftpServer,
    name: &[u8],
    mode: &[u8],
    options: &[(&str, &str)],
) -> (RawClient, Received) {
    let raw = RawClient::new(server.addr());
    let r = raw.request(Opcode::Rrq, name, mode, options);
    (raw, r)
}

fn wrq(server: &TftpServer, name: &[u8], options: &[(&str, &str)]) -> Received {
    RawClient::new(server.addr()).request(Opcode::Wrq, name, b"octet", options)
}

fn hpa_ok(out: &std::process::Output) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Error") && !text.contains("rror code"),
        "{}",
        describe(out)
    );
}

#[test]
fn missing_file_is_error_1_for_curl_and_logged_at_vv() {
    let dir = ServeDir::new();
    let server = start(&dir, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let out = curl_get(server.addr(), "no-such-file", &tmp.path().join("x"), &[]);
    // curl: 68 is CURLE_TFTP_NOTFOUND.
    assert_eq!(out.status.code(), Some(68), "{}", describe(&out));
    // The RRQ line, then the NAK for it.
    assert_eq!(
        server.wait_for_line_after(
            "RRQ from 127.0.0.1 filename no-such-file",
            Duration::from_secs(5)
        ),
        "sending NAK (1, File not found) to 127.0.0.1"
    );
    assert_eq!(
        rrq(&server, b"no-such-file", b"octet", &[]).packet,
        error(1, "File not found")
    );
    assert_eq!(
        rrq(&server, b"no-dir/file", b"octet", &[]).packet,
        error(1, "File not found")
    );
}

#[test]
fn dotdot_escapes_are_refused_with_error_2() {
    let dir = ServeDir::new();
    dir.write("f", b"inside");
    dir.write("sub/g", b"g");
    write_file(&dir.outside().join("secret"), b"secret");
    let server = start(&dir, &[]);
    for name in [
        "../outside/secret",
        "/../outside/secret",
        "sub/../../outside/secret",
        "./../outside/secret",
        "sub/../f",
        "..",
    ] {
        assert_eq!(
            rrq(&server, name.as_bytes(), b"octet", &[]).packet,
            error(2, "Access denied"),
            "{name}"
        );
    }
    // A real client that keeps `..` as typed (curl normalises it away).
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("secret");
    let out = atftp_get(server.addr(), "../outside/secret", &local, &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_ne!(std::fs::read(&local).unwrap_or_default(), b"secret");
    server.wait_for_line("sending NAK (2, Access denied) to 127.0.0.1");
    // What stays inside is served.
    assert_eq!(RawClient::new(server.addr()).fetch("sub/g"), b"g");
    assert_eq!(RawClient::new(server.addr()).fetch("/f"), b"inside");
}

#[test]
fn without_s_names_must_be_absolute_under_a_listed_directory() {
    let dir = ServeDir::new();
    dir.write("f", b"listed");
    write_file(&dir.outside().join("secret"), b"secret");
    let server = TftpServer::start(BIN, &[OsStr::new("-vv"), dir.path().as_os_str()]);
    let srv = dir.path().to_str().unwrap();
    let outside = dir.outside();
    let cases = [
        ("f".to_owned(), "Only absolute filenames allowed"),
        (
            format!("{srv}/../outside/secret"),
            "Reverse path not allowed",
        ),
        (
            outside.join("secret").to_str().unwrap().to_owned(),
            "Forbidden directory",
        ),
        (format!("{srv}x/f"), "Forbidden directory"),
        ("/etc/passwd".to_owned(), "Forbidden directory"),
    ];
    for (name, message) in cases {
        assert_eq!(
            rrq(&server, name.as_bytes(), b"octet", &[]).packet,
            error(2, message),
            "{name}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("f");
    let out = curl_get(server.addr(), &format!("{srv}/f"), &local, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), b"listed");
}

#[test]
fn symlinks_out_of_the_root_are_refused_and_inside_are_followed() {
    let dir = ServeDir::new();
    let payload = pseudo_random(3000, 5);
    dir.write("real", &payload);
    dir.write("sub/g", b"in sub");
    let secret = write_file(&dir.outside().join("secret"), b"secret");
    symlink(&secret, dir.path().join("abs-out")).unwrap();
    symlink("../outside/secret", dir.path().join("rel-out")).unwrap();
    symlink("../../outside/secret", dir.path().join("sub/rel-out")).unwrap();
    symlink(dir.outside(), dir.path().join("dir-out")).unwrap();
    symlink("real", dir.path().join("in-link")).unwrap();
    symlink("../real", dir.path().join("sub/up-link")).unwrap();
    symlink("sub", dir.path().join("current")).unwrap();
    let server = start(&dir, &[]);
    for name in ["abs-out", "rel-out", "sub/rel-out", "dir-out/secret"] {
        assert_eq!(
            rrq(&server, name.as_bytes(), b"octet", &[]).packet,
            error(2, "Access denied"),
            "{name}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, want) in [
        ("in-link", &payload[..]),
        ("sub/up-link", &payload[..]),
        ("current/g", b"in sub"),
    ] {
        let local = tmp.path().join(name.replace('/', "_"));
        let out = curl_get(server.addr(), name, &local, &[]);
        assert!(out.status.success(), "{name}: {}", describe(&out));
        assert_eq!(std::fs::read(&local).unwrap(), want, "{name}");
    }
}

#[test]
fn unknown_modes_get_error_4() {
    let dir = ServeDir::new();
    dir.write("m", b"mode test");
    dir.write("ok", b"mode test");
    let server = start(&dir, &[]);
    for mode in ["mail", "binary", "octets", ""] {
        assert_eq!(
            rrq(&server, b"m", mode.as_bytes(), &[]).packet,
            error(4, "Unknown mode"),
            "mode {mode:?}"
        );
    }
    assert_eq!(
        RawClient::new(server.addr())
            .request(Opcode::Wrq, b"m", b"mail", &[])
            .packet,
        error(4, "Unknown mode")
    );
    // Five refusals (four RRQs, one WRQ), each logged at -vv.
    let naks = server.wait_for_count("NAK 4", 5, Duration::from_secs(5), |l| {
        l == "sending NAK (4, Unknown mode) to 127.0.0.1"
    });
    assert_eq!(naks.len(), 5);
    // As in tftpd-hpa, a request with a bad mode is refused before it is logged.
    assert!(
        !server.log_lines().iter().any(|l| l.contains("filename m")),
        "{:#?}",
        server.log_lines()
    );
    // Modes are case-insensitive.
    for mode in ["OCTET", "Octet", "NetAscii"] {
        let (raw, r) = rrq_from(&server, b"ok", mode.as_bytes(), &[]);
        assert_eq!(
            r.packet,
            Packet::Data {
                block: 1,
                payload: b"mode test".to_vec()
            },
            "mode {mode}"
        );
        raw.send_ack_to(r.from, 1);
    }
}

#[test]
fn bad_options_get_error_8() {
    let dir = ServeDir::new();
    dir.write("f", &pseudo_random(2000, 8));
    let server = start(&dir, &[]);
    let unsupported = error(8, "Unsupported option(s) requested");
    assert_eq!(
        rrq(&server, b"f", b"octet", &[("blksize", "4")]).packet,
        unsupported
    );
    assert_eq!(
        rrq(&server, b"f", b"netascii", &[("tsize", "0")]).packet,
        unsupported
    );
    assert_eq!(
        rrq(&server, b"f", b"octet", &[("timeout", "0")]).packet,
        unsupported
    );
    server.wait_for_line("sending NAK (8, Unsupported option(s) requested) to 127.0.0.1");
    // The edges that are accepted.
    let (raw, r) = rrq_from(&server, b"f", b"octet", &[("blksize", "8"), ("tsize", "0")]);
    assert_eq!(
        r.packet,
        Packet::Oack(vec![
            ("blksize".into(), "8".into()),
            ("tsize".into(), "2000".into())
        ])
    );
    raw.send_error_to(r.from, 0, "done");
    let (raw, r) = rrq_from(&server, b"f", b"octet", &[("blksize", "99999")]);
    assert_eq!(
        r.packet,
        Packet::Oack(vec![("blksize".into(), "65464".into())])
    );
    raw.send_error_to(r.from, 0, "done");
}

#[test]
fn wrq_without_c_for_a_new_file_is_error_1_and_with_c_creates_it() {
    let dir = ServeDir::new();
    chmod(dir.path(), 0o777);
    let tmp = tempfile::tempdir().unwrap();
    let upload = pseudo_random(200_000, 9);
    let local = write_file(&tmp.path().join("up.bin"), &upload);

    let server = start(&dir, &[]);
    assert_eq!(
        wrq(&server, b"new.bin", &[]).packet,
        error(1, "File not found")
    );
    let out = tftp_hpa(
        server.addr(),
        &[OsStr::new("put"), local.as_os_str(), OsStr::new("new.bin")],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Error code 1: File not found"),
        "{}",
        describe(&out)
    );
    assert_eq!(dir.list(""), Vec::<String>::new(), "something was created");
    server.wait_for_line("WRQ from 127.0.0.1 filename new.bin");
    drop(server);

    let server = start(&dir, &["-c"]);
    let out = tftp_hpa(
        server.addr(),
        &[OsStr::new("put"), local.as_os_str(), OsStr::new("new.bin")],
    );
    hpa_ok(&out);
    assert!(dir.read("new.bin") == upload, "tftp-hpa upload differs");
    // umask 0 without -p, as tftpd-hpa: a created file is 0666.
    assert_eq!(mode_of(&dir.path().join("new.bin")), 0o666);
    let mut cmd = std::process::Command::new("atftp");
    cmd.args(["--option", "blksize 1468", "-p", "-l"])
        .arg(&local)
        .args(["-r", "sub-less.bin", "127.0.0.1"])
        .arg(server.addr().port().to_string());
    let out = airlift_tests::run_with_timeout(&mut cmd, airlift_tests::CLIENT_TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(dir.read("sub-less.bin") == upload, "atftp upload differs");
    assert_eq!(
        dir.list(""),
        ["new.bin", "sub-less.bin"],
        "stray files left"
    );
    server.wait_for_log("received line", Duration::from_secs(5), |l| {
        l.starts_with("received sub-less.bin from 127.0.0.1: 200000 bytes in ")
            && l.contains("blksize 1468, windowsize 1,")
    });
}

#[test]
fn wrq_over_an_existing_file_needs_world_write_unless_p() {
    let dir = ServeDir::new();
    chmod(dir.path(), 0o777);
    let p = dir.write("ro.bin", b"original");
    let tmp = tempfile::tempdir().unwrap();
    let local = write_file(&tmp.path().join("up"), b"replacement");
    let server = start(&dir, &["-c"]);
    assert_eq!(
        wrq(&server, b"ro.bin", &[]).packet,
        error(2, "File must have global write permissions")
    );
    assert_eq!(dir.read("ro.bin"), b"original");
    chmod(&p, 0o646);
    let out = tftp_hpa(
        server.addr(),
        &[OsStr::new("put"), local.as_os_str(), OsStr::new("ro.bin")],
    );
    hpa_ok(&out);
    assert_eq!(dir.read("ro.bin"), b"replacement");
    assert_eq!(mode_of(&p), 0o646, "the replaced file keeps its mode");
    assert_eq!(dir.list(""), ["ro.bin"]);
}

/// Sends a WRQ for `name` and three full DATA blocks, checking each ACK; returns the TID.
/// A repeated earlier ACK (the server's timer, if this thread was slow) is skipped.
fn start_upload(raw: &RawClient, name: &str) -> std::net::SocketAddr {
    let first = raw.request(Opcode::Wrq, name.as_bytes(), b"octet", &[]);
    assert_eq!(first.packet, Packet::Ack { block: 0 });
    let tid = first.from;
    for block in 1..=3u16 {
        raw.send_raw(&encode_data(block, &[b'N'; 512]), tid);
        loop {
            let ack = raw.expect_packet(Duration::from_secs(5), "ACK");
            assert_eq!(ack.from, tid);
            match ack.packet {
                Packet::Ack { block: b } if b == block => break,
                Packet::Ack { block: b } if b + 1 == block => continue,
                other => panic!("expected ACK {block}, got {other:?}"),
            }
        }
    }
    tid
}

#[test]
fn aborted_wrq_leaves_the_existing_file_intact_and_no_temporary_file() {
    let dir = ServeDir::new();
    chmod(dir.path(), 0o777);
    let original = pseudo_random(10_000, 10);
    let p = dir.write("fw.bin", &original);
    chmod(&p, 0o666);
    // -T 50000: a silent client is given up on after 63 × 50 ms = 3.15 s.
    let server = start(&dir, &["-T", "50000"]);

    // 1. The client sends an ERROR after three blocks.
    let raw = RawClient::new(server.addr());
    let tid = start_upload(&raw, "fw.bin");
    raw.send_error_to(tid, 0, "client gave up");
    server.wait_for_log("failed upload", Duration::from_secs(5), |l| {
        l.starts_with("received fw.bin from 127.0.0.1 failed after 1536 bytes")
    });
    assert!(
        dir.read("fw.bin") == original,
        "file changed by an aborted upload"
    );
    assert_eq!(dir.list(""), ["fw.bin"], "temporary file left behind");

    // 2. The client just stops.
    let raw = RawClient::new(server.addr());
    start_upload(&raw, "fw.bin");
    server.wait_for_log("timed-out upload", Duration::from_secs(10), |l| {
        l.starts_with("received fw.bin from 127.0.0.1 failed after 1536 bytes")
            && l.contains("timed out")
    });
    assert!(
        dir.read("fw.bin") == original,
        "file changed by an abandoned upload"
    );
    assert_eq!(dir.list(""), ["fw.bin"], "temporary file left behind");
    assert_eq!(mode_of(&p), 0o666);

    // 3. A new file abandoned half-way is not created at all (-c).
    drop(server);
    let server = start(&dir, &["-c", "-T", "50000"]);
    let raw = RawClient::new(server.addr());
    let tid = start_upload(&raw, "partial.bin");
    raw.send_error_to(tid, 0, "client gave up");
    server.wait_for_log("failed upload", Duration::from_secs(5), |l| {
        l.starts_with("received partial.bin from 127.0.0.1 failed after 1536 bytes")
    });
    assert_eq!(dir.list(""), ["fw.bin"], "partial upload left a file");
}

#[test]
fn file_without_world_read_is_refused_unless_p() {
    let dir = ServeDir::new();
    let p = dir.write("private", b"private bytes");
    chmod(&p, 0o640);
    if is_root() {
        // The server runs as nobody: with -p only normal permissions apply, so let nobody
        // own it (still not o+r).
        let nobody = uid_of("nobody").unwrap();
        std::os::unix::fs::chown(&p, Some(nobody), None).unwrap();
    }
    let server = start(&dir, &[]);
    assert_eq!(
        rrq(&server, b"private", b"octet", &[]).packet,
        error(2, "File must have global read permissions")
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = curl_get(server.addr(), "private", &tmp.path().join("x"), &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    server.wait_for_line("sending NAK (2, File must have global read permissions) to 127.0.0.1");
    drop(server);

    let server = start(&dir, &["-p"]);
    let local = tmp.path().join("private");
    let out = curl_get(server.addr(), "private", &local, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), b"private bytes");
}
