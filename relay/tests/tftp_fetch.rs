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
    let version = "17.9.4.27".parse().expect("version");
    let mut image = Vec::new();
    bundle_tool::synth::write_image(&mut image, "ap3g3", version, 204_800).expect("image");
    std::fs::write(served.path().join("ap3g3"), &image).expect("write");
    // Not an image, under an image's name (an HTML error page saved by mistake, say).
    std::fs::write(served.path().join("ap1g8"), b"<html>404</html>").expect("write");
    let data = airlift_tests::pseudo_random(200_000, 5);
    std::fs::write(served.path().join("notes.bin"), &data).expect("write");
    let server = start(served.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let port = server.addr.port();
    let run = |url: String, target: std::path::PathBuf, extra: &[&str]| {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            airlift_tests::run_with_timeout(
                std::process::Command::new(BIN)
                    .args(["fetch", &url, "--timeout", "20"])
                    .args(extra)
                    .arg("-o")
                    .arg(&target),
                Duration::from_secs(60),
            )
        })
    };
    let url = |name: &str| format!("tftp://127.0.0.1:{port}/{name}");
    let code = |o: &std::process::Output| o.status.code();

    // An image: complete, a sound tar of its family and of the version asked for.
    let target = out_dir.path().join("ap3g3");
    let ok = run(url("ap3g3"), target.clone(), &["--ap-version", "17.9.4.27"])
        .await
        .expect("join");
    assert_eq!(code(&ok), Some(0), "{}", airlift_tests::describe(&ok));
    assert!(std::fs::read(&target).expect("read") == image);
    assert_eq!(
        String::from_utf8_lossy(&ok.stderr).trim_end(),
        format!(
            "{}: 204800 bytes, SHA-256 {}, a complete image -> {}",
            url("ap3g3"),
            airlift_tests::sha256_hex(&image),
            target.display()
        )
    );
    let newer = run(
        url("ap3g3"),
        out_dir.path().join("x"),
        &["--ap-version", "17.9.5.47"],
    )
    .await
    .expect("join");
    assert_eq!(code(&newer), Some(1), "{}", airlift_tests::describe(&newer));

    // Not an image: refused, nothing written; accepted only when told not to check.
    let page = out_dir.path().join("ap1g8");
    let bad = run(url("ap1g8"), page.clone(), &[]).await.expect("join");
    assert_eq!(code(&bad), Some(1), "{}", airlift_tests::describe(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).starts_with(&format!(
            "Failed to download file {}: Verification failed (",
            url("ap1g8")
        )),
        "{}",
        airlift_tests::describe(&bad)
    );
    assert!(!page.exists());
    let raw = run(url("ap1g8"), page.clone(), &["--no-image-check", "-q"])
        .await
        .expect("join");
    assert_eq!(code(&raw), Some(0), "{}", airlift_tests::describe(&raw));

    // Any file, checked against a SHA-256 given on the command line.
    let notes = out_dir.path().join("notes.bin");
    let sum = airlift_tests::sha256_hex(&data);
    let right = run(url("notes.bin"), notes.clone(), &["--sha256", &sum])
        .await
        .expect("join");
    assert_eq!(code(&right), Some(0), "{}", airlift_tests::describe(&right));
    assert!(std::fs::read(&notes).expect("read") == data);
    let zeros = "0".repeat(64);
    let wrong = run(
        url("notes.bin"),
        out_dir.path().join("n2"),
        &["--sha256", &zeros],
    )
    .await
    .expect("join");
    assert_eq!(code(&wrong), Some(1), "{}", airlift_tests::describe(&wrong));
    assert!(!out_dir.path().join("n2").exists());

    // The controller's line for a wrong path; usage errors exit 2.
    let missing = out_dir.path().join("ap1g6");
    let bad = run(url("Wrong-Path/ap1g6"), missing.clone(), &[])
        .await
        .expect("join");
    assert_eq!(code(&bad), Some(1), "{}", airlift_tests::describe(&bad));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim_end(),
        format!(
            "Failed to download file tftp://127.0.0.1:{port}/Wrong-Path/ap1g6: No such file or directory"
        )
    );
    assert!(!missing.exists());
    for (url, extra) in [
        ("http://x/y".to_owned(), &[][..]),
        (url("notes.bin"), &["--blksize", "65465"][..]),
        (url("notes.bin"), &["--sha256", "beef"][..]),
        (url("notes.bin"), &["--ap-version", "17.9.4.27"][..]),
        ("sftp://ap@127.0.0.1:1/x".to_owned(), &[][..]),
    ] {
        let usage = run(url.clone(), missing.clone(), extra)
            .await
            .expect("join");
        assert_eq!(
            code(&usage),
            Some(2),
            "{url} {extra:?}: {}",
            airlift_tests::describe(&usage)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_draws_a_progress_bar_only_on_a_terminal() {
    const BIN: &str = env!("CARGO_BIN_EXE_relay");
    let served = tempfile::tempdir().expect("tempdir");
    let mut data = Vec::new();
    let version = "17.9.4.27".parse().expect("version");
    bundle_tool::synth::write_image(&mut data, "ap1g8", version, 8_192_000).expect("image");
    std::fs::write(served.path().join("ap1g8"), &data).expect("write");
    let server = start(served.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let target = out_dir.path().join("ap1g8");
    let url = format!("tftp://127.0.0.1:{}/ap1g8", server.addr.port());
    // script(1) runs the command on a pseudo-terminal: the bar is drawn there (stderr).
    let cmd = format!("{BIN} fetch --windowsize 1 -o {} {url}", target.display());
    let tty = tokio::task::spawn_blocking(move || {
        airlift_tests::run_with_timeout(
            std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]),
            Duration::from_secs(60),
        )
    })
    .await
    .expect("join");
    assert!(tty.status.success(), "{}", airlift_tests::describe(&tty));
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        screen.contains("/7.81 MiB"),
        "no bar with the total: {screen:?}"
    );
    assert!(
        screen.contains(&format!("{url}: 8192000 bytes, SHA-256 ")),
        "{screen:?}"
    );
    assert!(std::fs::read(&target).expect("read") == data);
    // Not a terminal: only the result line.
    let plain = tokio::task::spawn_blocking(move || {
        airlift_tests::run_with_timeout(
            std::process::Command::new(BIN)
                .args(["fetch", "-o"])
                .arg(&target)
                .arg(&url),
            Duration::from_secs(60),
        )
    })
    .await
    .expect("join");
    assert!(
        plain.status.success(),
        "{}",
        airlift_tests::describe(&plain)
    );
    let err = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains("MiB"), "{err:?}");
}

#[test]
fn an_interrupted_cli_fetch_leaves_nothing_behind() {
    // A server that sends one block and falls silent: relay is mid-fetch, with its hidden
    // temporary next to the target, when SIGTERM arrives.
    let (port, server) = common::one_block_then_silence(Duration::from_secs(5));
    let out_dir = tempfile::tempdir().expect("tempdir");
    let target = out_dir.path().join("ap1g6");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["fetch", "-q", "--timeout", "60", "-o"])
        .arg(&target)
        .arg(format!("tftp://127.0.0.1:{port}/ap1g6"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn relay");
    let listed = || -> Vec<String> {
        std::fs::read_dir(out_dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut waited = 0;
    while !listed().iter().any(|n| n.starts_with(".ap1g6.relay-")) {
        assert!(waited < 200, "no temporary appeared: {:?}", listed());
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    let kill = airlift_tests::run_with_timeout(
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]),
        Duration::from_secs(10),
    );
    assert!(kill.status.success(), "{}", airlift_tests::describe(&kill));
    let out = airlift_tests::wait_child_output(child, Duration::from_secs(30), "relay");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        airlift_tests::describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted; nothing was left behind"),
        "{}",
        airlift_tests::describe(&out)
    );
    assert!(listed().is_empty(), "left behind: {:?}", listed());
    server.join().expect("server");
}
