//! End-to-end downloads: the real `tftpd` binary against curl, atftp and tftp-hpa's `tftp`,
//! checked byte for byte (sha256 for the large files).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use airlift_tests::{
    CLIENT_TIMEOUT, Opcode, Packet, RawClient, ServeDir, TftpServer, atftp_get, curl_get, describe,
    is_root, proc_uids, pseudo_random, sha256_file, sha256_hex, tftp_hpa, uid_of,
    wait_child_output,
};
use regex::Regex;

const BIN: &str = env!("CARGO_BIN_EXE_tftpd");

/// ap1g8's size in the source document: 137,721 blocks at blksize 512, so block numbers wrap.
const BIG_LEN: usize = 70_512_640;
const BIG_NAME: &str = "EWC/17_9_4a/ap1g8";
/// sha256 of `pseudo_random(BIG_LEN, BIG_SEED)`.
const BIG_SHA256: &str = "dedd247d387cecc8af92854e7f4b78ecbdf97d08408e9d205ef95de5971840e2";
const BIG_SEED: u64 = 0x000a_9168;

/// The big file, generated once and shared by the tests that are running at the same time.
#[derive(Debug)]
struct Big {
    dir: ServeDir,
}

static BIG: Mutex<Weak<Big>> = Mutex::new(Weak::new());

fn big() -> Arc<Big> {
    let mut slot = BIG.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(b) = slot.upgrade() {
        return b;
    }
    let bytes = pseudo_random(BIG_LEN, BIG_SEED);
    assert_eq!(
        sha256_hex(&bytes),
        BIG_SHA256,
        "the content generator changed"
    );
    let dir = ServeDir::new();
    dir.write(BIG_NAME, &bytes);
    let b = Arc::new(Big { dir });
    *slot = Arc::downgrade(&b);
    b
}

/// The end-of-transfer line for a download of `name` of `bytes` bytes.
fn sent_line(name: &str, bytes: u64, blksize: u16, windowsize: u16) -> Regex {
    Regex::new(&format!(
        r"^sent {} to 127\.0\.0\.1: {bytes} bytes in \d+\.\d{{3}} s \(\d+\.\d MB/s\), blksize {blksize}, windowsize {windowsize}, \d+ retransmissions$",
        regex::escape(name)
    ))
    .unwrap()
}

fn wait_sent(server: &TftpServer, re: &Regex) -> String {
    server.wait_for_log(re.as_str(), Duration::from_secs(10), |l| re.is_match(l))
}

fn assert_big(local: &Path, out: &std::process::Output) {
    assert!(out.status.success(), "client failed: {}", describe(out));
    assert_eq!(
        std::fs::metadata(local).unwrap().len(),
        BIG_LEN as u64,
        "{}",
        describe(out)
    );
    assert_eq!(sha256_file(local), BIG_SHA256);
}

#[test]
fn big_curl_blksize_512_rolls_block_numbers_over_on_70_mb() {
    let big = big();
    let server = TftpServer::serve(BIN, &["-v", "-u", "nobody"], big.dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("ap1g8");
    let out = curl_get(server.addr(), BIG_NAME, &local, &["--tftp-blksize", "512"]);
    assert_big(&local, &out);
    wait_sent(&server, &sent_line(BIG_NAME, BIG_LEN as u64, 512, 1));
}

#[test]
fn big_curl_blksize_1468_on_70_mb() {
    let big = big();
    let server = TftpServer::serve(BIN, &["-v", "-p"], big.dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("ap1g8");
    let out = curl_get(server.addr(), BIG_NAME, &local, &["--tftp-blksize", "1468"]);
    assert_big(&local, &out);
    wait_sent(&server, &sent_line(BIG_NAME, BIG_LEN as u64, 1468, 1));
}

#[test]
fn big_atftp_blksize_1468_windowsize_32_tsize_on_70_mb() {
    let big = big();
    let server = TftpServer::serve(BIN, &["-v", "-p"], big.dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("ap1g8");
    let out = atftp_get(
        server.addr(),
        BIG_NAME,
        &local,
        &["blksize 1468", "windowsize 32", "tsize enable"],
    );
    assert_big(&local, &out);
    wait_sent(&server, &sent_line(BIG_NAME, BIG_LEN as u64, 1468, 32));
}

#[test]
fn big_tftp_hpa_plain_rfc1350_on_70_mb() {
    let big = big();
    let server = TftpServer::serve(BIN, &["-v", "-p"], big.dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("ap1g8");
    let out = tftp_hpa(
        server.addr(),
        &["get".as_ref(), BIG_NAME.as_ref(), local.as_os_str()],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Error") && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
    assert_big(&local, &out);
    wait_sent(&server, &sent_line(BIG_NAME, BIG_LEN as u64, 512, 1));
}

#[test]
fn small_files_with_curl_tftp_hpa_and_atftp() {
    let dir = ServeDir::new();
    let sizes = [1usize, 511, 512, 513, 1024, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        dir.write(&format!("f{n}"), &pseudo_random(n, 100 + i as u64));
    }
    let server = TftpServer::serve(BIN, &["-v"], dir.path());
    let tmp = tempfile::tempdir().unwrap();
    for &n in &sizes {
        let name = format!("f{n}");
        let want = dir.read(&name);

        let local = tmp.path().join(format!("curl-{n}"));
        let out = curl_get(server.addr(), &name, &local, &[]);
        assert!(out.status.success(), "curl {name}: {}", describe(&out));
        assert_eq!(std::fs::read(&local).unwrap(), want, "curl {name}");

        let local = tmp.path().join(format!("hpa-{n}"));
        let out = tftp_hpa(
            server.addr(),
            &["get".as_ref(), name.as_ref(), local.as_os_str()],
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("Error"),
            "{}",
            describe(&out)
        );
        assert_eq!(
            std::fs::read(&local).unwrap(),
            want,
            "tftp-hpa {name}: {}",
            describe(&out)
        );

        let local = tmp.path().join(format!("atftp-{n}"));
        let out = atftp_get(server.addr(), &name, &local, &["tsize enable"]);
        assert!(out.status.success(), "atftp {name}: {}", describe(&out));
        assert_eq!(std::fs::read(&local).unwrap(), want, "atftp {name}");

        // Three complete transfers of exactly n bytes were logged.
        let re = Regex::new(&format!(
            r"^sent {name} to 127\.0\.0\.1: {n} bytes in .*, blksize 512, windowsize 1, \d+ retransmissions$"
        ))
        .unwrap();
        let done =
            server.wait_for_count(re.as_str(), 3, Duration::from_secs(5), |l| re.is_match(l));
        assert_eq!(done.len(), 3, "{done:#?}");
    }
}

#[test]
fn empty_file_with_tftp_hpa_and_raw() {
    let dir = ServeDir::new();
    dir.write("empty", b"");
    // -T 10 s: the raw exchange below expects no retransmitted OACK, even on a busy machine.
    let server = TftpServer::serve(BIN, &["-v", "-T", "10000000"], dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("empty");
    let out = tftp_hpa(
        server.addr(),
        &["get".as_ref(), "empty".as_ref(), local.as_os_str()],
    );
    // tftp-hpa creates the local file even when the server refuses, so the server's own
    // account of a complete 0-byte transfer is what proves success.
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Error") && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read(&local).unwrap(), b"");
    wait_sent(&server, &sent_line("empty", 0, 512, 1));

    // On the wire: one empty DATA 1 without options; OACK tsize 0 first with tsize.
    let raw = RawClient::new(server.addr());
    let first = raw.request(Opcode::Rrq, b"empty", b"octet", &[]);
    assert_eq!(
        first.packet,
        Packet::Data {
            block: 1,
            payload: vec![]
        }
    );
    raw.send_ack_to(first.from, 1);
    let raw = RawClient::new(server.addr());
    let first = raw.request(Opcode::Rrq, b"empty", b"octet", &[("tsize", "0")]);
    assert_eq!(
        first.packet,
        Packet::Oack(vec![("tsize".into(), "0".into())])
    );
    raw.send_ack_to(first.from, 0);
    let data = raw.expect_packet(Duration::from_secs(5), "DATA 1");
    assert_eq!(
        data.packet,
        Packet::Data {
            block: 1,
            payload: vec![]
        }
    );
    assert_eq!(data.from, first.from);
    raw.send_ack_to(first.from, 1);
}

#[test]
fn ipv6_loopback() {
    let inet6 = std::fs::read_to_string("/proc/net/if_inet6")
        .expect("/proc/net/if_inet6 is missing: this machine has no IPv6; the IPv6 test needs ::1");
    assert!(
        inet6
            .lines()
            .any(|l| l.starts_with("00000000000000000000000000000001") && l.ends_with(" lo")),
        "no ::1 on lo in /proc/net/if_inet6; the IPv6 test needs it:\n{inet6}"
    );
    let dir = ServeDir::new();
    let want = pseudo_random(300_000, 6);
    dir.write("v6file", &want);
    let server = TftpServer::serve_v6(BIN, &["-vv"], dir.path());
    assert!(server.addr().is_ipv6());
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("v6file");
    let out = curl_get(server.addr(), "v6file", &local, &["--tftp-blksize", "1468"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&local), sha256_hex(&want));
    server.wait_for_line("RRQ from ::1 filename v6file");
    let local = tmp.path().join("v6file-hpa");
    let out = tftp_hpa(
        server.addr(),
        &["get".as_ref(), "v6file".as_ref(), local.as_os_str()],
    );
    assert_eq!(std::fs::read(&local).unwrap(), want, "{}", describe(&out));
    let re = Regex::new(
        r"^sent v6file to ::1: 300000 bytes in .*, blksize 512, windowsize 1, \d+ retransmissions$",
    )
    .unwrap();
    server.wait_for_log(re.as_str(), Duration::from_secs(5), |l| re.is_match(l));
    // A missing file over IPv6: the NAK names the IPv6 peer.
    let out = curl_get(server.addr(), "missing", &tmp.path().join("m"), &[]);
    assert_eq!(out.status.code(), Some(68), "{}", describe(&out));
    assert_eq!(
        server.wait_for_line_after("RRQ from ::1 filename missing", Duration::from_secs(5)),
        "sending NAK (1, File not found) to ::1"
    );
}

#[test]
fn twenty_concurrent_curl_downloads_of_2_mb() {
    let dir = ServeDir::new();
    let want = pseudo_random(2 << 20, 20);
    dir.write("two", &want);
    let want = sha256_hex(&want);
    let server = TftpServer::serve(BIN, &["-v"], dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("tftp://127.0.0.1:{}/two", server.addr().port());
    let children: Vec<_> = (0..20)
        .map(|i| {
            let local = tmp.path().join(format!("two-{i}"));
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "50", "-o"])
                .arg(&local)
                .arg(&url)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if i % 2 == 1 {
                cmd.args(["--tftp-blksize", "1468"]);
            }
            (local, cmd.spawn().expect("curl (apt-get install curl)"))
        })
        .collect();
    for (local, child) in children {
        let out = wait_child_output(child, CLIENT_TIMEOUT, "curl");
        assert!(
            out.status.success(),
            "{}: {}",
            local.display(),
            describe(&out)
        );
        assert_eq!(sha256_file(&local), want, "{}", local.display());
    }
    let re = Regex::new(r"^sent two to 127\.0\.0\.1: 2097152 bytes in ").unwrap();
    let done = server.wait_for_count(re.as_str(), 20, Duration::from_secs(5), |l| re.is_match(l));
    assert_eq!(done.len(), 20, "{done:#?}");
}

/// A lock-step raw download that stops after `pause_after` blocks, lets `during` run, then
/// finishes. Returns the bytes.
fn fetch_with_pause(
    raw: &RawClient,
    name: &str,
    pause_after: u16,
    during: impl FnOnce(),
) -> Vec<u8> {
    let first = raw.request(Opcode::Rrq, name.as_bytes(), b"octet", &[]);
    let tid = first.from;
    let mut out = Vec::new();
    let mut expect: u16 = 1;
    let mut pkt = first.packet;
    let mut during = Some(during);
    loop {
        match pkt {
            Packet::Data { block, payload } if block == expect => {
                out.extend_from_slice(&payload);
                if block == pause_after
                    && let Some(f) = during.take()
                {
                    f();
                }
                raw.send_ack_to(tid, block);
                if payload.len() < 512 {
                    return out;
                }
                expect += 1;
            }
            // A retransmission of the block we already have (the pause can outlast -T).
            Packet::Data { block, .. } if block + 1 == expect => {}
            other => panic!("unexpected {other:?} while expecting DATA {expect}"),
        }
        pkt = raw.expect_packet(Duration::from_secs(5), "DATA").packet;
    }
}

#[test]
fn replaced_file_running_transfer_keeps_old_bytes_new_request_gets_new() {
    let dir = ServeDir::new();
    let old = pseudo_random(300_000, 81);
    let new = pseudo_random(200_000, 82);
    dir.write("ap", &old);
    let server = TftpServer::serve(BIN, &["-v"], dir.path());
    let raw = RawClient::new(server.addr());
    let got = fetch_with_pause(&raw, "ap", 100, || {
        // Stage the new version and rename it over the served file, as a deploy tool does.
        dir.write(".ap.new", &new);
        std::fs::rename(dir.path().join(".ap.new"), dir.path().join("ap")).unwrap();
    });
    assert_eq!(got.len(), old.len());
    assert!(
        got == old,
        "the running transfer did not yield the old bytes"
    );
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("ap");
    let out = curl_get(server.addr(), "ap", &local, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        sha256_file(&local),
        sha256_hex(&new),
        "a new request did not get the new file"
    );
}

#[test]
fn replaced_file_is_served_new_to_a_request_made_right_after_the_rename() {
    // Stricter than the above: tftpd-hpa opens the file per request, so a request sent right
    // after the rename sees the new file; a cache must not serve the old one. A stale answer
    // depends on timing (the rename's inotify event racing the request), so the swap is
    // repeated: 1000 rounds take about a second against a correct server.
    let dir = ServeDir::new();
    let old = pseudo_random(3000, 91);
    let new = pseudo_random(2000, 92);
    dir.write("ap", &old);
    let server = TftpServer::serve(BIN, &[], dir.path());
    let raw = RawClient::new(server.addr());
    assert!(raw.fetch("ap") == old);
    for round in 0..1000u64 {
        let next = if round % 2 == 0 { &new } else { &old };
        dir.write(".ap.new", next);
        std::fs::rename(dir.path().join(".ap.new"), dir.path().join("ap")).unwrap();
        let got = RawClient::new(server.addr()).fetch("ap");
        assert!(
            &got == next,
            "round {round}: a request right after the rename got the previous version"
        );
    }
}

#[test]
fn root_chroots_with_s_and_drops_to_the_u_user() {
    let dir = ServeDir::new();
    dir.write("f", b"hello");
    let server = TftpServer::serve(BIN, &["-u", "nobody"], dir.path());
    let pid = server.serving_pid();
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    if is_root() {
        // Privilege separation: the process we started is the root monitor, and it serves
        // nothing; its one child is the server, chrooted and running as nobody.
        assert_ne!(pid, server.pid(), "no server child split off as root");
        assert_eq!(proc_uids(server.pid()), [0; 4]);
        let nobody = uid_of("nobody").expect("a nobody user");
        assert_eq!(proc_uids(pid), [nobody; 4], "not running as nobody");
        assert_eq!(
            root,
            dir.path().canonicalize().unwrap(),
            "not chrooted into the -s directory"
        );
    } else {
        // Unprivileged: no chroot and no change of user (documented: -u needs root).
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        assert_eq!(proc_uids(pid)[1], me);
        assert_eq!(root, Path::new("/"));
    }
    assert_eq!(RawClient::new(server.addr()).fetch("f"), b"hello");
}

/// The server started without privileges (as `nobody` through setpriv when the tests run as
/// root): no chroot, no setuid, and `-s` confinement still holds without the chroot.
#[test]
fn serves_when_started_unprivileged() {
    let dir = ServeDir::new();
    let want = pseudo_random(5000, 3);
    dir.write("f", &want);
    dir.write("sub/g", b"inside");
    std::os::unix::fs::symlink("sub/g", dir.path().join("sub-link")).unwrap();
    airlift_tests::write_file(&dir.outside().join("secret"), b"secret");
    std::os::unix::fs::symlink(dir.outside().join("secret"), dir.path().join("abs-link")).unwrap();
    let (bin, prefix): (&str, Vec<String>) = if is_root() {
        let setpriv = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN];
        ("setpriv", setpriv.iter().map(|s| s.to_string()).collect())
    } else {
        (BIN, Vec::new())
    };
    let served = dir.arg();
    let server = TftpServer::start_with(bin, IpAddr::V4(Ipv4Addr::LOCALHOST), |addr| {
        let mut v: Vec<std::ffi::OsString> = prefix.iter().map(Into::into).collect();
        v.extend([
            "-L".into(),
            "-a".into(),
            addr.to_string().into(),
            "-vv".into(),
            "-s".into(),
        ]);
        v.push(served.clone());
        v
    });
    let pid = server.serving_pid();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        Path::new("/")
    );
    if is_root() {
        assert_eq!(proc_uids(pid), [uid_of("nobody").unwrap(); 4]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("f");
    let out = curl_get(server.addr(), "f", &local, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), want);
    let raw = RawClient::new(server.addr());
    assert_eq!(raw.fetch("sub-link"), b"inside");
    for name in ["../outside/secret", "abs-link", "/../outside/secret"] {
        let r = RawClient::new(server.addr()).request(Opcode::Rrq, name.as_bytes(), b"octet", &[]);
        assert_eq!(
            r.packet,
            Packet::Error {
                code: 2,
                message: "Access denied".into()
            },
            "{name}"
        );
    }
}
