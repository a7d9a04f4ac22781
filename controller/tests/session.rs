//! The controller's session (`ac`) and the AP's (`wtp`) speaking to each other, in memory and
//! simulated time: download at join, predownload then activate, and a lossy, duplicating
//! link — the two ends written from `flow.rs` agree on the wire.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bundle_tool::synth::write_image;
use controller::ac::{AcConfig, AcEvent, AcSession, ImageToSend};
use controller::capwap::RetransmitConfig;
use controller::wtp::{CapwapState, ImageSink, Wtp, WtpConfig};
use md5::{Digest, Md5};

const TARGET: &str = "17.9.4.27";

fn retransmit() -> RetransmitConfig {
    RetransmitConfig {
        interval: Duration::from_millis(200),
        max_retransmit: 8,
        max_interval: None,
    }
}

fn ac(block_size: u16, download_at_join: bool) -> AcSession {
    AcSession::new(AcConfig {
        ac_name: "airlift".into(),
        control_ipv4: Ipv4Addr::LOCALHOST,
        block_size,
        retransmit: retransmit(),
        version: TARGET.into(),
        download_at_join,
        dead_interval: Duration::from_secs(90),
    })
}

fn ap(now: Instant) -> Wtp {
    let mut cfg = WtpConfig::new("AP-0001", "C9105AXI-E", "ap1g8");
    cfg.retransmit = retransmit();
    cfg.sink = ImageSink::Memory;
    cfg.reset_delay = Duration::from_millis(50);
    cfg.echo_interval = Duration::from_secs(1);
    let Ok(w) = Wtp::new(cfg, now) else {
        panic!("wtp config")
    };
    w
}

fn image() -> ImageToSend {
    let mut bytes = Vec::new();
    let version = TARGET.parse().unwrap_or_else(|_| panic!("version"));
    write_image(&mut bytes, "ap1g8", version, 92_160).unwrap_or_else(|e| panic!("{e}"));
    ImageToSend {
        family: "ap1g8".into(),
        md5: Md5::digest(&bytes).into(),
        bytes: bytes.into(),
    }
}

/// A link that drops every `drop`-th datagram and duplicates every `dup`-th (0: never).
struct Link {
    drop: u64,
    dup: u64,
    n: u64,
}

impl Link {
    fn carry(&mut self, d: &[u8]) -> Vec<Vec<u8>> {
        self.n += 1;
        if self.drop > 0 && self.n.is_multiple_of(self.drop) {
            return Vec::new();
        }
        if self.dup > 0 && self.n.is_multiple_of(self.dup) {
            return vec![d.to_vec(), d.to_vec()];
        }
        vec![d.to_vec()]
    }
}

struct Run {
    ac_events: Vec<AcEvent>,
    ap_lines: Vec<String>,
}

/// Moves datagrams both ways and advances simulated time to the next timer when the link is
/// quiet, until `done` or a step limit.
fn run(
    ac: &mut AcSession,
    ap: &mut Wtp,
    now: &mut Instant,
    link: &mut Link,
    img: &ImageToSend,
    done: &dyn Fn(&AcSession, &Wtp, &[AcEvent]) -> bool,
) -> Run {
    let mut out = Run {
        ac_events: Vec::new(),
        ap_lines: Vec::new(),
    };
    for _ in 0..2_000_000 {
        let mut moved = false;
        while let Some(d) = ap.poll_transmit() {
            let d = d.to_vec();
            for c in link.carry(&d) {
                ac.handle_datagram(*now, &c);
            }
            moved = true;
        }
        while let Some(d) = ac.poll_transmit() {
            let d = d.to_vec();
            for c in link.carry(&d) {
                ap.handle_datagram(*now, &c);
            }
            moved = true;
        }
        while let Some(e) = ac.poll_event() {
            if let AcEvent::ImageWanted { family, .. } = &e {
                assert_eq!(family, "ap1g8");
                ac.image_ready(*now, Ok(img.clone()));
            }
            out.ac_events.push(e);
            moved = true;
        }
        while let Some(e) = ap.poll_event() {
            out.ap_lines.extend(e.lines());
        }
        if done(ac, ap, &out.ac_events) {
            return out;
        }
        if !moved {
            let next = [ac.poll_timeout(), ap.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next else {
                panic!("stuck with no timer: {:?}", out.ap_lines)
            };
            *now = t.max(*now);
            ac.handle_timeout(*now);
            ap.handle_timeout(*now);
        }
    }
    panic!("did not finish: {:?}", out.ap_lines)
}

fn finished(ev: &[AcEvent]) -> bool {
    ev.iter().any(|e| matches!(e, AcEvent::TransferDone { .. }))
}

#[test]
fn an_ap_downloads_at_join_then_rejoins_on_the_new_version() {
    for block in [1024u16, 1377] {
        let mut now = Instant::now();
        let mut ac = ac(block, true);
        let mut ap = ap(now);
        let img = image();
        let mut link = Link {
            drop: 0,
            dup: 0,
            n: 0,
        };
        let r = run(&mut ac, &mut ap, &mut now, &mut link, &img, &|_, ap, ev| {
            finished(ev) && ap.state() == CapwapState::Run && ap.primary().version == TARGET
        });
        let msgs = 92_160usize.div_ceil(usize::from(block));
        let last = 92_160 - (msgs - 1) * usize::from(block);
        assert!(
            r.ap_lines
                .iter()
                .any(|l| l == &format!("92160 bytes, {msgs} msgs, {last} last")),
            "{:#?}",
            r.ap_lines
        );
        assert!(r.ap_lines.iter().any(|l| l == "Version does not match."));
        assert!(
            r.ap_lines
                .iter()
                .any(|l| l.starts_with("Image Data Request sent to 127.0.0.1, fileName [ap1g8]"))
        );
        assert_eq!(
            ap.backup().version,
            "17.3.3.26",
            "the old primary is the backup"
        );
        assert!(r.ac_events.contains(&AcEvent::TransferDone {
            family: "ap1g8".into(),
            bytes: 92_160,
            messages: msgs as u64,
            retransmissions: 0
        }));
    }
}

#[test]
fn predownload_stores_the_backup_and_activate_swaps() {
    let mut now = Instant::now();
    let mut ac = ac(1024, false);
    let mut ap = ap(now);
    let img = image();
    let mut link = Link {
        drop: 0,
        dup: 0,
        n: 0,
    };
    // Joined without an image named: the AP runs its old version.
    run(&mut ac, &mut ap, &mut now, &mut link, &img, &|_, ap, _| {
        ap.state() == CapwapState::Run
    });
    assert_eq!(ap.primary().version, "17.3.3.26");
    ac.predownload(now).unwrap_or_else(|e| panic!("{e}"));
    let r = run(&mut ac, &mut ap, &mut now, &mut link, &img, &|_, ap, ev| {
        finished(ev) && ap.backup().version == TARGET
    });
    assert!(r.ac_events.contains(&AcEvent::ImageWanted {
        family: "ap1g8".into(),
        predownload: true
    }));
    assert_eq!(
        ap.primary().version,
        "17.3.3.26",
        "still running the old one"
    );
    ac.activate(now).unwrap_or_else(|e| panic!("{e}"));
    run(&mut ac, &mut ap, &mut now, &mut link, &img, &|_, ap, _| {
        ap.primary().version == TARGET && ap.state() == CapwapState::Run
    });
    assert_eq!(ap.backup().version, "17.3.3.26");
}

#[test]
fn a_lossy_duplicating_link_still_delivers_the_exact_image() {
    let mut now = Instant::now();
    let mut ac = ac(1377, true);
    let mut ap = ap(now);
    let img = image();
    let mut link = Link {
        drop: 17,
        dup: 13,
        n: 0,
    };
    let r = run(&mut ac, &mut ap, &mut now, &mut link, &img, &|_, ap, ev| {
        finished(ev) && ap.primary().version == TARGET && ap.state() == CapwapState::Run
    });
    let Some(got) = ap.primary().image.as_ref() else {
        panic!("no image kept: {:#?}", r.ap_lines)
    };
    assert_eq!(got.md5, img.md5);
    assert_eq!(got.size, 92_160);
    let Some(AcEvent::TransferDone {
        retransmissions, ..
    }) = r
        .ac_events
        .iter()
        .find(|e| matches!(e, AcEvent::TransferDone { .. }))
    else {
        panic!("no transfer")
    };
    assert!(*retransmissions > 0, "the link lost nothing?");
}
