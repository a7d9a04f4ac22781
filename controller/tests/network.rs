//! The controller and simulated APs over real UDP on loopback: every AP of three families
//! ends on the network's version, each family is fetched once, transfers run in sets of 4
//! (like the 9800's sets of 16), and the controller logs each AP's join and download.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bundle_tool::synth::write_image;
use bundle_tool::version::ApVersion;
use controller::ac::AcConfig;
use controller::capwap::{
    Element, ElementType, Message, MessageType, ResultCode, RetransmitConfig, fragment,
};
use controller::events::Event;
use controller::images::{EventSink, Images, read_release};
use controller::server::{Admission, Controller, RetryPolicy, Status, run_ap, serve};
use controller::show::{ApImageReport, DownloadState};
use controller::wtp::{CapwapState, Wtp, WtpConfig};
use relay::store::Store;
use relay::{FetchOptions, Source};
use tokio_util::sync::CancellationToken;

const TARGET: &str = "17.9.4.27";
const MODELS: [&str; 3] = ["C9105AXI-E", "C9120AXI-B", "AIR-AP2802I-B-K9"];

fn retransmit() -> RetransmitConfig {
    RetransmitConfig {
        interval: Duration::from_millis(300),
        max_retransmit: 6,
        max_interval: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aps_of_three_families_get_their_images_each_fetched_once() {
    let families: Vec<&str> = MODELS
        .iter()
        .map(|m| match bundle_tool::models::which(m) {
            Ok(found) => found.row.family.as_str(),
            Err(e) => panic!("{m}: {e}"),
        })
        .collect();
    let served = tempfile::tempdir().expect("tempdir");
    let folder_path = served.path().join("EWC_17_9_4a");
    std::fs::create_dir_all(&folder_path).expect("mkdir");
    let v: ApVersion = TARGET.parse().expect("version");
    std::fs::write(folder_path.join("version.info"), format!("{v}\n")).expect("version.info");
    for family in &families {
        let mut f = std::fs::File::create(folder_path.join(family)).expect("create");
        write_image(&mut f, family, v, 61_440).expect("image");
    }
    let folder = Source::parse_folder(&format!("file://{}", folder_path.display())).expect("url");
    let opts = FetchOptions::default();
    let release = read_release(&folder, &opts).await.expect("release");
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    let log: EventSink = Arc::new(move |e: Event| l.lock().expect("lock").push(e.message()));
    let images = Arc::new(Images::new(
        folder,
        opts,
        Arc::clone(&store),
        release,
        Duration::from_secs(60),
        Arc::clone(&log),
    ));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let status: Status = Arc::default();
    let (_orders, commands) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        socket,
        Controller {
            ac: AcConfig {
                ac_name: "airlift".into(),
                control_ipv4: Ipv4Addr::LOCALHOST,
                block_size: 1377,
                retransmit: retransmit(),
                version: TARGET.into(),
                download_at_join: true,
                dead_interval: Duration::from_secs(90),
            },
            admission: Admission::Sets(4),
            retry: RetryPolicy {
                interval: Duration::from_secs(60),
                count: 3,
            },
            images,
            log,
        },
        Arc::clone(&status),
        commands,
        stop.clone(),
    ));
    // A stranger's garbage and a stray response first: ignored, the server carries on.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for junk in [
        &b"garbage"[..],
        &[0u8; 64][..],
        &[0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 16, 1, 0, 3, 0][..],
    ] {
        stranger.send_to(junk, addr).expect("send");
    }
    // A Join Request in fragments (out of order) is put together and answered; so is a
    // Discovery Request, without a session.
    let fragmented = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    fragmented
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut probe = Wtp::new(
        WtpConfig::new("AP-FRAGMENTED", MODELS[0], families[0]),
        Instant::now(),
    )
    .expect("wtp");
    let join = probe.poll_transmit().expect("join request").to_vec();
    let pieces = fragment(&join, 64, 77).expect("fragments");
    assert!(pieces.len() >= 3, "{}", pieces.len());
    for p in pieces.iter().rev() {
        fragmented.send_to(p, addr).expect("send");
    }
    let mut answer = [0u8; 2048];
    let n = fragmented.recv(&mut answer).expect("a Join Response");
    let reply = Message::decode(&answer[..n]).expect("decodes");
    assert_eq!(reply.message_type, MessageType::JOIN_RESPONSE);
    assert_eq!(reply.result_code(), Some(ResultCode::SUCCESS));
    let discovery = Message::new(
        MessageType::DISCOVERY_REQUEST,
        3,
        Message::decode(&join)
            .expect("join")
            .elements
            .into_iter()
            .filter(|e| !matches!(e, Element::WtpName(_) | Element::SessionId(_)))
            .chain([Element::Unknown {
                kind: ElementType::DISCOVERY_TYPE,
                value: &[1],
            }])
            .collect(),
    )
    .to_vec()
    .expect("discovery request");
    stranger.send_to(&discovery, addr).expect("send");
    stranger
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let n = stranger.recv(&mut answer).expect("a Discovery Response");
    let reply = Message::decode(&answer[..n]).expect("decodes");
    assert_eq!(reply.message_type, MessageType::DISCOVERY_RESPONSE);
    assert!(reply.elements.contains(&Element::AcName(b"airlift")));
    let count = 21;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut aps = Vec::new();
    for i in 0..count {
        let model = MODELS[i % 3];
        let mut cfg = WtpConfig::new(format!("AP-{i:04}"), model, families[i % 3]);
        cfg.base_mac = [0x00, 0xa2, 0xee, 0xb1, 0x00, u8::try_from(i).expect("mac")];
        cfg.retransmit = retransmit();
        cfg.reset_delay = Duration::from_millis(20);
        let ap = Wtp::new(cfg, Instant::now()).expect("wtp");
        aps.push(tokio::spawn(run_ap(ap, addr, deadline, |w: &Wtp| {
            w.primary().version == TARGET && w.state() == CapwapState::Run
        })));
    }
    for t in aps {
        let (ap, ap_lines) = t.await.expect("join").expect("ap socket");
        assert_eq!(ap.primary().version, TARGET, "{ap_lines:#?}");
        assert_eq!(ap.backup().version, "17.3.3.26");
        assert!(
            ap_lines
                .iter()
                .any(|l| l == "61440 bytes, 45 msgs, 852 last"),
            "{ap_lines:#?}"
        );
    }
    stop.cancel();
    server.await.expect("join").expect("serve");
    assert_eq!(
        store.fetches_started(),
        3,
        "one fetch per family for {count} APs"
    );
    let lines = lines.lock().expect("lock").clone();
    let success = lines
        .iter()
        .filter(|l| l.ends_with("AP Image Download Success"))
        .count();
    assert_eq!(success, count, "{lines:#?}");
    // Joined twice each: before the download and after the reset (and the fragmented
    // probe once: it joined, and asked for nothing).
    let joined = lines.iter().filter(|l| l.ends_with("] Joined")).count();
    assert_eq!(joined, 2 * count + 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("AP Name: AP-FRAGMENTED ") && l.ends_with("] Joined"))
    );
    let rows: Vec<_> = status
        .lock()
        .expect("lock")
        .values()
        .filter(|r| r.name != "AP-FRAGMENTED")
        .cloned()
        .collect();
    let report = ApImageReport::new(rows);
    assert_eq!(report.counters.total, count);
    assert!(report.aps.iter().all(|r| r.primary == TARGET), "{report}");
    // The download each AP completed before its reset still shows after it rejoined.
    assert!(
        report
            .aps
            .iter()
            .all(|r| r.download == DownloadState::Completed),
        "{report}"
    );
    assert_eq!(report.counters.completed_downloading, count, "{report}");
}
