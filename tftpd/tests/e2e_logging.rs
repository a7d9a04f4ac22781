//! The real `tftpd`'s log lines (stderr in the foreground), remapping with `-m`, and SIGHUP.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use airlift_tests::{
    Opcode, Packet, RawClient, ServeDir, TftpServer, chmod, curl_get, describe, pseudo_random,
    tftp_hpa, write_file,
};
use regex::Regex;

const BIN: &str = env!("CARGO_BIN_EXE_tftpd");
const AP: &str = "EWC/17_9_4a/ap1g8";
const RULES: &str =
    "# Cisco EWC images\nri ^/?ewc/ EWC/\nr ^(EWC/17_9_4a/)AP1G8$ \\1ap1g8\na ^secret\n";

fn start(dir: &ServeDir, extra: &[&OsStr]) -> TftpServer {
    let mut args: Vec<&OsStr> = extra.to_vec();
    args.push(OsStr::new("-s"));
    args.push(dir.path().as_os_str());
    TftpServer::start(BIN, &args)
}

/// Lines after the first one equal to `first`, up to and including the first matching `last`.
fn block_from(lines: &[String], first: &str, last: impl Fn(&str) -> bool) -> Vec<String> {
    let at = lines
        .iter()
        .position(|l| l == first)
        .unwrap_or_else(|| panic!("no line {first:?} in {lines:#?}"));
    let mut out = Vec::new();
    for l in &lines[at..] {
        out.push(l.clone());
        if out.len() > 1 && last(l) {
            break;
        }
    }
    out
}

#[test]
fn rrq_line_at_v_nak_lines_only_at_vv_and_nothing_at_v0() {
    let dir = ServeDir::new();
    let ap = pseudo_random(100_000, 61);
    dir.write(AP, &ap);
    let tmp = tempfile::tempdir().unwrap();

    let server = start(&dir, &[OsStr::new("-v")]);
    let local = tmp.path().join("ap1g8");
    let out = tftp_hpa(
        server.addr(),
        &[
            OsStr::new("get"),
            OsStr::new("/EWC/17_9_4a/ap1g8"),
            local.as_os_str(),
        ],
    );
    assert_eq!(std::fs::read(&local).unwrap(), ap, "{}", describe(&out));
    server.wait_for_line("RRQ from 127.0.0.1 filename /EWC/17_9_4a/ap1g8");
    let re = Regex::new(
        r"^sent /EWC/17_9_4a/ap1g8 to 127\.0\.0\.1: 100000 bytes in \d+\.\d{3} s \(\d+\.\d MB/s\), blksize 512, windowsize 1, \d+ retransmissions$",
    )
    .unwrap();
    server.wait_for_log(re.as_str(), Duration::from_secs(5), |l| re.is_match(l));
    let out = curl_get(server.addr(), "missing", &tmp.path().join("m"), &[]);
    assert_eq!(out.status.code(), Some(68));
    server.wait_for_line("RRQ from 127.0.0.1 filename missing");
    log_barrier(&server);
    assert!(
        !server
            .log_lines()
            .iter()
            .any(|l| l.starts_with("sending NAK")),
        "{:#?}",
        server.log_lines()
    );
    drop(server);

    // Without -v nothing is logged for transfers or refusals; warnings still are.
    let server = start(&dir, &[]);
    let out = tftp_hpa(
        server.addr(),
        &[OsStr::new("get"), OsStr::new(AP), local.as_os_str()],
    );
    assert_eq!(std::fs::read(&local).unwrap(), ap, "{}", describe(&out));
    let out = curl_get(server.addr(), "missing", &tmp.path().join("m"), &[]);
    assert_eq!(out.status.code(), Some(68));
    log_barrier(&server);
    assert_eq!(server.log_lines(), [CLIENT_REFUSED_OPTIONS]);
}

const CLIENT_REFUSED_OPTIONS: &str = "tftp: client does not accept options";

/// Makes the server log its always-logged warning and waits for it: every line the server
/// wrote before is then in the log too (one stderr, written in order).
fn log_barrier(server: &TftpServer) {
    let count = |s: &TftpServer| {
        s.log_lines()
            .iter()
            .filter(|l| *l == CLIENT_REFUSED_OPTIONS)
            .count()
    };
    let before = count(server);
    let raw = RawClient::new(server.addr());
    let r = raw.request(Opcode::Rrq, AP.as_bytes(), b"octet", &[("tsize", "0")]);
    assert!(matches!(r.packet, Packet::Oack(_)), "{r:?}");
    raw.send_error_to(r.from, 8, "no options, thanks");
    server.wait_for_count(
        CLIENT_REFUSED_OPTIONS,
        before + 1,
        Duration::from_secs(5),
        |l| l == CLIENT_REFUSED_OPTIONS,
    );
}

#[test]
fn remap_rewrites_the_name_and_logs_like_tftpd_hpa() {
    let dir = ServeDir::new();
    let ap = pseudo_random(40_000, 62);
    dir.write(AP, &ap);
    dir.write("secretfile", b"no");
    let rules = write_file(&dir.base().join("remap.rules"), RULES.as_bytes());
    let server = start(
        &dir,
        &[OsStr::new("-vvv"), OsStr::new("-m"), rules.as_os_str()],
    );
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("ap");
    let out = curl_get(server.addr(), "ewc/17_9_4a/AP1G8", &local, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), ap);
    server.wait_for_line(
        "RRQ from 127.0.0.1 filename ewc/17_9_4a/AP1G8 remapped to EWC/17_9_4a/ap1g8",
    );
    let re = Regex::new(r"^sent EWC/17_9_4a/ap1g8 to 127\.0\.0\.1: 40000 bytes in ").unwrap();
    server.wait_for_log(re.as_str(), Duration::from_secs(5), |l| re.is_match(l));
    let lines = server.log_lines();
    assert_eq!(
        block_from(&lines, "remap: input: ewc/17_9_4a/AP1G8", |l| l
            .starts_with("RRQ")),
        [
            "remap: input: ewc/17_9_4a/AP1G8",
            "remap: rule 0: rewrite: EWC/17_9_4a/AP1G8",
            "remap: rule 1: rewrite: EWC/17_9_4a/ap1g8",
            "remap: done",
            "RRQ from 127.0.0.1 filename ewc/17_9_4a/AP1G8 remapped to EWC/17_9_4a/ap1g8",
        ]
    );

    // The `a` rule refuses, with no RRQ line (as in tftpd-hpa) and the NAK at -vv.
    let r = RawClient::new(server.addr()).request(Opcode::Rrq, b"secretfile", b"octet", &[]);
    assert_eq!(
        r.packet,
        Packet::Error {
            code: 2,
            message: "Access denied".into()
        }
    );
    server.wait_for_line("sending NAK (2, Access denied) to 127.0.0.1");
    let lines = server.log_lines();
    assert_eq!(
        block_from(&lines, "remap: input: secretfile", |l| l
            .starts_with("sending NAK")),
        [
            "remap: input: secretfile",
            "remap: rule 2: abort: secretfile",
            "sending NAK (2, Access denied) to 127.0.0.1",
        ]
    );
    assert!(
        !lines.iter().any(|l| l.contains("filename secretfile")),
        "{lines:#?}"
    );
}

#[test]
fn remap_trace_lines_only_at_vvv() {
    let dir = ServeDir::new();
    dir.write(AP, b"ap");
    let rules = write_file(&dir.base().join("remap.rules"), RULES.as_bytes());
    let server = start(
        &dir,
        &[OsStr::new("-vv"), OsStr::new("-m"), rules.as_os_str()],
    );
    assert_eq!(
        RawClient::new(server.addr()).fetch("EWC/17_9_4a/AP1G8"),
        b"ap"
    );
    server.wait_for_line(
        "RRQ from 127.0.0.1 filename EWC/17_9_4a/AP1G8 remapped to EWC/17_9_4a/ap1g8",
    );
    assert!(
        !server.log_lines().iter().any(|l| l.starts_with("remap:")),
        "{:#?}",
        server.log_lines()
    );
}

/// Fetches `name` until it yields `want` (bounded), for changes that apply asynchronously.
fn eventually_serves(server: &TftpServer, name: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let raw = RawClient::new(server.addr());
        let r = raw.request(Opcode::Rrq, name.as_bytes(), b"octet", &[]);
        if let Packet::Data { payload, .. } = &r.packet {
            raw.send_error_to(r.from, 0, "enough");
            if payload == want {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} never served {:?}; last answer {:?}; log:\n{}",
            String::from_utf8_lossy(want),
            r.packet,
            server.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sighup_reload(rules_dir_mode: u32, rules_mode: u32) {
    let dir = ServeDir::new();
    dir.write("one", b"first target");
    dir.write("two", b"second target");
    let rules_dir = dir.base().join("etc");
    let rules = write_file(&rules_dir.join("remap.rules"), b"r ^alias$ one\n");
    chmod(&rules, rules_mode);
    chmod(&rules_dir, rules_dir_mode);
    let server = start(
        &dir,
        &[
            OsStr::new("-v"),
            OsStr::new("-u"),
            OsStr::new("nobody"),
            OsStr::new("-m"),
            rules.as_os_str(),
        ],
    );
    assert_eq!(
        RawClient::new(server.addr()).fetch("alias"),
        b"first target"
    );
    server.wait_for_line("RRQ from 127.0.0.1 filename alias remapped to one");
    std::fs::write(&rules, b"r ^alias$ two\n").unwrap();
    server.signal("HUP");
    eventually_serves(&server, "alias", b"second target");
    server.wait_for_line("RRQ from 127.0.0.1 filename alias remapped to two");
    assert!(
        !server.log_lines().iter().any(|l| l.contains("map file")),
        "{:#?}",
        server.log_lines()
    );
}

#[test]
fn sighup_reloads_the_map_file() {
    sighup_reload(0o755, 0o644);
}

/// tftpd-hpa reads the map file in the listener, which keeps root, so a root-only rules file
/// (0600 in a 0700 directory) reloads on SIGHUP too. As root the server here has dropped to
/// `nobody` by then, which must not break the reload.
#[test]
fn sighup_reloads_a_root_only_map_file() {
    sighup_reload(0o700, 0o600);
}

#[test]
fn upload_end_line_and_wrq_line() {
    let dir = ServeDir::new();
    chmod(dir.path(), 0o777);
    let server = start(&dir, &[OsStr::new("-v"), OsStr::new("-c")]);
    let tmp = tempfile::tempdir().unwrap();
    let local = write_file(&tmp.path().join("cfg"), &pseudo_random(3000, 63));
    let out = tftp_hpa(
        server.addr(),
        &[
            OsStr::new("put"),
            local.as_os_str(),
            OsStr::new("uploaded.cfg"),
        ],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Error"),
        "{}",
        describe(&out)
    );
    server.wait_for_line("WRQ from 127.0.0.1 filename uploaded.cfg");
    let re = Regex::new(
        r"^received uploaded\.cfg from 127\.0\.0\.1: 3000 bytes in \d+\.\d{3} s \(\d+\.\d MB/s\), blksize 512, windowsize 1, \d+ retransmissions$",
    )
    .unwrap();
    server.wait_for_log(re.as_str(), Duration::from_secs(5), |l| re.is_match(l));
    assert_eq!(
        std::fs::read(dir.path().join("uploaded.cfg")).unwrap(),
        std::fs::read(&local).unwrap()
    );
}
