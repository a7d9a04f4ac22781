//! relay's TFTP client against our tftpd (in-process, on loopback) and against a scripted
//! server that refuses options: rollover, wrong path, silence, fallback, atomic output.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::Duration;

use common::start;
use relay::tftp::{self, TftpOptions};
use relay::{ErrorKind, Progress, Source};

fn url(addr: SocketAddr, path: &str) -> Source {
    Source::parse(&format!("tftp://127.0.0.1:{}/{path}", addr.port())).expect("url")
}

async fn fetch_vec(
    src: &Source,
    opts: &TftpOptions,
) -> (
    Result<tftp::Fetched, relay::FetchError>,
    Vec<u8>,
    Vec<Progress>,
) {
    let mut out = Vec::new();
    let mut events = Vec::new();
    let r = tftp::fetch(src, opts, &mut out, &mut |p| events.push(p)).await;
    (r, out, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_fetch_is_exact_and_reports_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = airlift_tests::pseudo_random(3_000_001, 1);
    std::fs::write(dir.path().join("ap1g8"), &data).expect("write");
    let server = start(dir.path());
    let (r, out, events) = fetch_vec(&url(server.addr, "ap1g8"), &TftpOptions::default()).await;
    let done = r.expect("fetch");
    assert_eq!(done.bytes, 3_000_001);
    assert_eq!(done.announced, Some(3_000_001));
    assert!(!done.fell_back);
    assert!(out == data, "content differs");
    assert_eq!(
        events.last().map(|p| (p.done, p.total)),
        Some((3_000_001, Some(3_000_001)))
    );
    assert!(events.windows(2).all(|w| w[0].done < w[1].done));
    let rrq = server
        .log
        .lines()
        .into_iter()
        .filter(|(_, l)| l.starts_with("RRQ from 127.0.0.1 filename ap1g8"))
        .count();
    assert_eq!(rrq, 1, "{:?}", server.log.lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_numbers_roll_over_past_65535() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 70,000 blocks of 512 bytes: past 65535.
    let data = airlift_tests::pseudo_random(512 * 70_000 + 17, 2);
    std::fs::write(dir.path().join("big"), &data).expect("write");
    let server = start(dir.path());
    let opts = TftpOptions {
        blksize: None,
        windowsize: Some(32),
        ..TftpOptions::default()
    };
    let (r, out, _) = fetch_vec(&url(server.addr, "big"), &opts).await;
    assert_eq!(r.expect("fetch").bytes, data.len() as u64);
    assert!(out == data, "content differs after rollover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_path_reads_like_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let src = url(server.addr, "Wrong-Path/ap1g6");
    let (r, out, _) = fetch_vec(&src, &TftpOptions::default()).await;
    let Err(e) = r else {
        panic!("a missing file was fetched")
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file tftp://127.0.0.1:{}/Wrong-Path/ap1g6: No such file or directory",
            server.addr.port()
        )
    );
    assert!(out.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_times_out_within_the_deadline() {
    // A bound socket that never answers.
    let silent = StdUdp::bind("127.0.0.1:0").expect("bind");
    let opts = TftpOptions {
        deadline: Duration::from_secs(2),
        retransmit: Duration::from_millis(200),
        ..TftpOptions::default()
    };
    // The outer timeout only keeps a broken deadline from hanging the test run.
    let (r, _, _) = tokio::time::timeout(
        Duration::from_secs(120),
        fetch_vec(&url(silent.local_addr().expect("addr"), "ap1g8"), &opts),
    )
    .await
    .expect("the fetch ignored its deadline");
    let Err(e) = r else {
        panic!("silence produced a file")
    };
    assert_eq!(e.kind, ErrorKind::TimedOut);
    assert!(
        e.to_string()
            .ends_with(": Timed out (deadline of 2 s reached)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_refused_with_error_8_are_dropped_and_asked_again() {
    // A scripted server: ERROR 8 to a request with options; 600 bytes in two blocks otherwise.
    let sock = StdUdp::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    let payload: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
    let body = payload.clone();
    let script = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        let (n, client) = sock.recv_from(&mut buf).expect("first request");
        let first = buf[..n].to_vec();
        sock.send_to(b"\x00\x05\x00\x08options refused\x00", client)
            .expect("error 8");
        let (n, client) = sock.recv_from(&mut buf).expect("second request");
        let second = buf[..n].to_vec();
        for (block, chunk) in [(1u16, &body[..512]), (2, &body[512..])] {
            let mut d = vec![0, 3];
            d.extend_from_slice(&block.to_be_bytes());
            d.extend_from_slice(chunk);
            sock.send_to(&d, client).expect("data");
            let (n, _) = sock.recv_from(&mut buf).expect("ack");
            assert_eq!(&buf[..n], &[0, 4, (block >> 8) as u8, block as u8]);
        }
        (first, second)
    });
    let (r, out, _) = fetch_vec(&url(addr, "ap1g8"), &TftpOptions::default()).await;
    let done = r.expect("fallback fetch");
    assert!(done.fell_back);
    assert_eq!(out, payload);
    let (first, second) = script.join().expect("script");
    assert!(first.windows(7).any(|w| w == b"blksize"), "{first:?}");
    assert_eq!(
        second, b"\x00\x01ap1g8\x00octet\x00",
        "the second request is plain RFC 1350"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_leaves_nothing_under_the_target_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = tempfile::tempdir().expect("tempdir");
    std::fs::write(served.path().join("ap3g3"), b"image").expect("write");
    let server = start(served.path());
    let target = dir.path().join("ap1g6");
    std::fs::write(&target, b"previous image").expect("write");
    let r = relay::fetch_to_file(
        &url(server.addr, "missing"),
        &target,
        &relay::FetchOptions::default(),
        &mut |_| {},
    )
    .await;
    assert!(r.is_err());
    assert_eq!(std::fs::read(&target).expect("read"), b"previous image");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporaries left: {names:?}");
    let n = relay::fetch_to_file(
        &url(server.addr, "ap3g3"),
        &target,
        &relay::FetchOptions::default(),
        &mut |_| {},
    )
    .await
    .expect("fetch");
    assert_eq!(n, 5);
    assert_eq!(std::fs::read(&target).expect("read"), b"image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exits_0_only_for_a_complete_file_and_prints_the_controller_line() {
    const BIN: &str = env!("CARGO_BIN_EXE_relay");
    let served = tempfile::tempdir().expect("tempdir");
    let data = airlift_tests::pseudo_random(200_000, 5);
    std::fs::write(served.path().join("ap3g3"), &data).expect("write");
    let server = start(served.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let target = out_dir.path().join("ap3g3");
    let port = server.addr.port();
    let run = |url: String, target: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            airlift_tests::run_with_timeout(
                std::process::Command::new(BIN)
                    .args(["fetch", &url, "-q", "--timeout", "20", "-o"])
                    .arg(&target),
                Duration::from_secs(60),
            )
        })
    };
    let ok = run(format!("tftp://127.0.0.1:{port}/ap3g3"), target.clone())
        .await
        .expect("join");
    assert!(ok.status.success(), "{}", airlift_tests::describe(&ok));
    assert!(std::fs::read(&target).expect("read") == data);
    let missing = out_dir.path().join("ap1g6");
    let bad = run(
        format!("tftp://127.0.0.1:{port}/Wrong-Path/ap1g6"),
        missing.clone(),
    )
    .await
    .expect("join");
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        airlift_tests::describe(&bad)
    );
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim_end(),
        format!(
            "Failed to download file tftp://127.0.0.1:{port}/Wrong-Path/ap1g6: No such file or directory"
        )
    );
    assert!(!missing.exists());
    let usage = run("http://x/y".into(), missing.clone())
        .await
        .expect("join");
    assert_eq!(
        usage.status.code(),
        Some(2),
        "{}",
        airlift_tests::describe(&usage)
    );
}
