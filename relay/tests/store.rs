//! The image store with real TFTP fetches from our tftpd (in-process): single flight under
//! 50 concurrent requests, verification, interrupted fetches, readers that follow a running
//! fetch, and LRU eviction.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::net::UdpSocket as StdUdp;
use std::time::Duration;

use bundle_tool::synth::write_image;
use bundle_tool::version::ApVersion;
use common::names;
use relay::store::{Expected, FlightState, Store};
use relay::tftp::TftpOptions;
use relay::{ErrorKind, FetchOptions, Source};
use sha2::{Digest, Sha256};

fn url(port: u16, name: &str) -> Source {
    Source::parse(&format!("tftp://127.0.0.1:{port}/{name}")).expect("url")
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_for_one_image_make_one_upstream_transfer() {
    let served = tempfile::tempdir().expect("tempdir");
    let data = airlift_tests::pseudo_random(4_000_000, 8);
    std::fs::write(served.path().join("ap1g8"), &data).expect("write");
    let server = common::start(served.path());
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let src = url(server.addr.port(), "ap1g8");
    let expected = Expected {
        size: Some(data.len() as u64),
        sha256: Some(sha(&data)),
        image: None,
    };
    let opts = FetchOptions::default();
    let flights: Vec<_> = (0..50)
        .map(|_| store.get(&src, expected.clone(), &opts).expect("get"))
        .collect();
    let mut objects = Vec::new();
    for f in &flights {
        objects.push(f.wait().await.expect("fetched"));
    }
    assert!(objects.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(store.fetches_started(), 1);
    let rrq = server.count_log("RRQ from 127.0.0.1 filename ap1g8");
    assert_eq!(rrq, 1, "upstream transfers");
    assert!(std::fs::read(&objects[0].path).expect("read") == data);
    assert_eq!(
        objects[0].path.file_name().and_then(|n| n.to_str()),
        Some(objects[0].sha256.as_str())
    );
    // Once stored, the same image is not fetched again.
    let again = store
        .get(&src, expected, &opts)
        .expect("get")
        .wait()
        .await
        .expect("stored");
    assert_eq!(again, objects[0]);
    assert_eq!(store.fetches_started(), 1);
    assert!(names(&root.path().join("tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hash_or_an_interrupted_fetch_stores_nothing() {
    let served = tempfile::tempdir().expect("tempdir");
    let data = airlift_tests::pseudo_random(100_000, 9);
    std::fs::write(served.path().join("ap3g3"), &data).expect("write");
    let server = common::start(served.path());
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let wrong = Expected {
        size: Some(data.len() as u64),
        sha256: Some([7u8; 32]),
        image: None,
    };
    let Err(e) = store
        .get(
            &url(server.addr.port(), "ap3g3"),
            wrong,
            &FetchOptions::default(),
        )
        .expect("get")
        .wait()
        .await
    else {
        panic!("a wrong hash was stored")
    };
    assert_eq!(e.kind, ErrorKind::Verification);
    assert!(names(&root.path().join("objects")).is_empty());
    assert!(names(&root.path().join("tmp")).is_empty());
    // A server that sends one block and falls silent: the fetch times out, nothing stays.
    let (port, script) = common::one_block_then_silence(Duration::from_secs(4));
    let opts = FetchOptions {
        tftp: TftpOptions {
            blksize: None,
            windowsize: None,
            retransmit: Duration::from_millis(200),
            deadline: Duration::from_secs(2),
        },
        sftp: None,
    };
    let Err(e) = store
        .get(&url(port, "ap1g6"), Expected::default(), &opts)
        .expect("get")
        .wait()
        .await
    else {
        panic!("an interrupted fetch was stored")
    };
    assert_eq!(e.kind, ErrorKind::TimedOut);
    assert!(names(&root.path().join("objects")).is_empty());
    assert!(names(&root.path().join("tmp")).is_empty());
    script.join().expect("script");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_manifest_images_are_stored_only_if_their_tar_matches_version_info() {
    let served = tempfile::tempdir().expect("tempdir");
    let version: ApVersion = "17.9.4.27".parse().expect("version");
    let mut image = Vec::new();
    write_image(&mut image, "ap1g7", version, 512_000).expect("image");
    std::fs::write(served.path().join("ap1g7"), &image).expect("write");
    // The same image cut short by one tar record.
    std::fs::write(served.path().join("cut"), &image[..image.len() - 10_240]).expect("write");
    let server = common::start(served.path());
    let port = server.addr.port();
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let opts = FetchOptions::default();
    let get = |name: &str, expected: Expected| {
        let flight = store.get(&url(port, name), expected, &opts).expect("get");
        async move { flight.wait().await }
    };

    // Another release than version.info says: refused, nothing stored.
    let newer: ApVersion = "17.9.5.47".parse().expect("version");
    let Err(e) = get("ap1g7", Expected::image("ap1g7", Some(newer))).await else {
        panic!("an image of another version was stored")
    };
    assert_eq!(e.kind, ErrorKind::Verification);
    assert!(e.to_string().contains("version.info says 17.9.5.47"), "{e}");
    // Incomplete: refused.
    let Err(e) = get("cut", Expected::image("ap1g7", Some(version))).await else {
        panic!("a partial image was stored")
    };
    assert!(
        e.to_string().contains("not a well-formed tar archive"),
        "{e}"
    );
    assert!(names(&root.path().join("objects")).is_empty());
    assert!(names(&root.path().join("tmp")).is_empty());

    // The right one is stored under its SHA-256.
    let obj = get("ap1g7", Expected::image("ap1g7", Some(version)))
        .await
        .expect("stored");
    assert_eq!(obj.sha256, hex(&sha(&image)));
    assert_eq!(
        names(&root.path().join("objects")),
        std::slice::from_ref(&obj.sha256)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_follows_the_fetch_while_it_runs() {
    // A scripted lock-step server (it ignores options, so RFC 1350's 512-byte blocks) that
    // holds the transfer after block 100 until the test lets it go on: the reader must get
    // those blocks while the fetch is still running.
    const HELD_AT: usize = 100;
    let data = airlift_tests::pseudo_random(512 * 300 + 100, 10);
    let sock = StdUdp::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    let (go_on, gate) = std::sync::mpsc::channel::<()>();
    let served = data.clone();
    let server = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        let Ok((_, client)) = sock.recv_from(&mut buf) else {
            return;
        };
        for (i, chunk) in served.chunks(512).chain([&[][..]]).enumerate() {
            if chunk.is_empty() && !served.len().is_multiple_of(512) {
                break;
            }
            if i == HELD_AT {
                let _ = gate.recv_timeout(Duration::from_secs(20));
            }
            let block = u16::try_from(i + 1).expect("block");
            let mut d = vec![0, 3];
            d.extend_from_slice(&block.to_be_bytes());
            d.extend_from_slice(chunk);
            // Lock-step: resend until the ACK for this block arrives.
            loop {
                let _ = sock.send_to(&d, client);
                match sock.recv_from(&mut buf) {
                    Ok((4, _)) if buf[..4] == [0, 4, d[2], d[3]] => break,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }
    });
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let flight = store
        .get(
            &url(port, "ap1g7"),
            Expected::default(),
            &FetchOptions::default(),
        )
        .expect("get");
    let mut reader = flight.reader().await.expect("reader");
    let mut got = Vec::new();
    while got.len() < 512 * HELD_AT {
        let chunk = reader
            .next_chunk(256 * 1024)
            .await
            .expect("chunk")
            .expect("more before the end");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(
        got.len(),
        512 * HELD_AT,
        "the server holds after block {HELD_AT}"
    );
    assert!(
        matches!(flight.state(), FlightState::Running(_)),
        "read while running"
    );
    go_on.send(()).expect("let the server go on");
    while let Some(chunk) = reader.next_chunk(256 * 1024).await.expect("chunk") {
        got.extend_from_slice(&chunk);
    }
    assert!(got == data, "streamed content differs");
    let obj = flight.wait().await.expect("done");
    assert_eq!(obj.size, data.len() as u64);
    server.join().expect("server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_image_is_evicted_under_the_cap() {
    let served = tempfile::tempdir().expect("tempdir");
    let a = airlift_tests::pseudo_random(1_000_000, 11);
    let b = airlift_tests::pseudo_random(1_000_000, 12);
    std::fs::write(served.path().join("a"), &a).expect("write");
    std::fs::write(served.path().join("b"), &b).expect("write");
    let server = common::start(served.path());
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1_500_000).expect("store");
    let port = server.addr.port();
    let opts = FetchOptions::default();
    store
        .get(&url(port, "a"), Expected::default(), &opts)
        .expect("get")
        .wait()
        .await
        .expect("a");
    // Make a older than b's fetch will be, whatever the file system's time granularity.
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    let a_path = root.path().join("objects").join(hex(&sha(&a)));
    std::fs::File::options()
        .append(true)
        .open(&a_path)
        .expect("open")
        .set_modified(old)
        .expect("mtime");
    store
        .get(&url(port, "b"), Expected::default(), &opts)
        .expect("get")
        .wait()
        .await
        .expect("b");
    assert_eq!(names(&root.path().join("objects")), vec![hex(&sha(&b))]);
    assert!(store.lookup(&sha(&a)).is_none());
    assert!(store.lookup(&sha(&b)).is_some());

    // A lookup counts as a use: with room for two, b (made old, then looked up) outlives c's
    // arrival, and d's arrival evicts c, the one not used since.
    let store = Store::open(root.path(), 2_500_000).expect("reopen");
    let c = airlift_tests::pseudo_random(1_000_000, 13);
    let d = airlift_tests::pseudo_random(1_000_000, 14);
    std::fs::write(served.path().join("c"), &c).expect("write");
    std::fs::write(served.path().join("d"), &d).expect("write");
    let b_path = root.path().join("objects").join(hex(&sha(&b)));
    let age = |path: &std::path::Path, secs: u64| {
        std::fs::File::options()
            .append(true)
            .open(path)
            .expect("open")
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
            .expect("mtime");
    };
    age(&b_path, 120);
    store
        .get(&url(port, "c"), Expected::default(), &opts)
        .expect("get")
        .wait()
        .await
        .expect("c");
    age(&root.path().join("objects").join(hex(&sha(&c))), 60);
    assert!(store.lookup(&sha(&b)).is_some(), "b is used again");
    store
        .get(&url(port, "d"), Expected::default(), &opts)
        .expect("get")
        .wait()
        .await
        .expect("d");
    let mut want = vec![hex(&sha(&b)), hex(&sha(&d))];
    want.sort();
    assert_eq!(names(&root.path().join("objects")), want);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_with_different_expectations_never_share_a_fetch() {
    let served = tempfile::tempdir().expect("tempdir");
    let data = airlift_tests::pseudo_random(300_000, 15);
    std::fs::write(served.path().join("ap1g8"), &data).expect("write");
    let server = common::start(served.path());
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let src = url(server.addr.port(), "ap1g8");
    let opts = FetchOptions::default();
    let right = Expected {
        sha256: Some(sha(&data)),
        ..Expected::default()
    };
    let wrong = Expected {
        sha256: Some([9u8; 32]),
        ..Expected::default()
    };
    // Started together: the second must not be handed the first one's verdict (or bytes).
    let a = store.get(&src, right, &opts).expect("get");
    let b = store.get(&src, wrong, &opts).expect("get");
    assert_eq!(store.fetches_started(), 2);
    let obj = a.wait().await.expect("right hash");
    let Err(e) = b.wait().await else {
        panic!("a wrong expectation was satisfied by another caller's fetch")
    };
    assert_eq!(e.kind, ErrorKind::Verification);
    assert_eq!(names(&root.path().join("objects")), [obj.sha256]);
    assert!(names(&root.path().join("tmp")).is_empty());
}
