//! Deterministic simulations of the §4.5.3 machines over a network that loses, duplicates,
//! reorders and delays datagrams, in simulated time: whole image transfers (controller
//! Requester → AP Responder, real Image Data messages) and a fragmented Join Request.

#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::element::{
    EcnSupport, EncryptionCapability, FrameTunnelMode, MacType, RadioInformation, SubElements,
    VendorVersion, WtpBoardData, WtpDescriptor,
};
use super::reliable::RetransmitConfig;
use super::*;

/// Network impairments, in parts per thousand.
#[derive(Debug, Clone, Copy, Default)]
struct Impair {
    loss: u32,
    dup: u32,
    reorder: u32,
    delay: Duration,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Duration,
    order: u64,
    to: Side,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    A,
    B,
}

struct Net {
    rng: u64,
    impair: Impair,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    sent: u64,
}

impl Net {
    fn new(seed: u64, impair: Impair) -> Net {
        Net {
            rng: seed | 1,
            impair,
            queue: BinaryHeap::new(),
            order: 0,
            sent: 0,
        }
    }

    fn roll(&mut self, permille: u32) -> bool {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r % 1000) < u64::from(permille)
    }

    fn send(&mut self, now: Duration, to: Side, bytes: Vec<u8>) {
        self.sent += 1;
        if self.roll(self.impair.loss) {
            return;
        }
        let copies = if self.roll(self.impair.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = now + self.impair.delay;
            if self.roll(self.impair.reorder) {
                at += self.impair.delay * 3 + Duration::from_micros(50);
            }
            self.order += 1;
            self.queue.push(Reverse(InFlight {
                at,
                order: self.order,
                to,
                bytes: bytes.clone(),
            }));
        }
    }
}

/// One end of the simulated link.
trait Node {
    fn receive(&mut self, now: Instant, datagram: &[u8]);
    fn transmit(&mut self, out: &mut Vec<Vec<u8>>);
    fn poll_timeout(&self) -> Option<Instant>;
    fn timeout(&mut self, now: Instant);
    fn finished(&self) -> bool;
}

/// Runs until `a` is finished or nothing is left to happen; returns the simulated time.
fn run(base: Instant, a: &mut dyn Node, b: &mut dyn Node, net: &mut Net) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut out = Vec::new();
    for _ in 0..10_000_000 {
        a.transmit(&mut out);
        for d in out.drain(..) {
            net.send(elapsed, Side::B, d);
        }
        b.transmit(&mut out);
        for d in out.drain(..) {
            net.send(elapsed, Side::A, d);
        }
        if a.finished() {
            return elapsed;
        }
        let next_packet = net.queue.peek().map(|Reverse(p)| base + p.at);
        let Some(next) = [next_packet, a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        else {
            return elapsed;
        };
        elapsed = elapsed.max(next - base);
        let now = base + elapsed;
        while net.queue.peek().is_some_and(|Reverse(p)| p.at <= elapsed) {
            let Reverse(p) = net.queue.pop().unwrap();
            match p.to {
                Side::A => a.receive(now, &p.bytes),
                Side::B => b.receive(now, &p.bytes),
            }
        }
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.timeout(now);
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.timeout(now);
        }
    }
    panic!("simulation did not converge");
}

/// The controller's side of an image download: one Image Data Request per block, the next
/// once the previous is answered.
struct Controller<'a> {
    image: &'a [u8],
    block: usize,
    next_block: usize,
    requester: Requester,
    /// The bytes of the outstanding request: every (re)transmission must equal them.
    current: Vec<u8>,
    completed: u64,
    done: bool,
    dead: Option<PeerDead>,
}

impl<'a> Controller<'a> {
    fn new(image: &'a [u8], block: usize, config: RetransmitConfig, now: Instant) -> Self {
        let mut c = Controller {
            image,
            block,
            next_block: 0,
            requester: Requester::new(config, 250),
            current: Vec::new(),
            completed: 0,
            done: false,
            dead: None,
        };
        c.send_next(now);
        c
    }

    fn blocks(&self) -> usize {
        self.image.len().div_ceil(self.block).max(1)
    }

    fn send_next(&mut self, now: Instant) {
        let i = self.next_block;
        let start = (i * self.block).min(self.image.len());
        let end = (start + self.block).min(self.image.len());
        let chunk = &self.image[start..end];
        let data = if i + 1 == self.blocks() {
            ImageData::Eof(chunk)
        } else {
            ImageData::Data(chunk)
        };
        self.current.clear();
        encode_image_data_request(self.requester.next_seq(), data, &mut self.current).unwrap();
        self.requester.send(now, &self.current).unwrap();
        self.next_block += 1;
    }
}

impl Node for Controller<'_> {
    fn receive(&mut self, now: Instant, datagram: &[u8]) {
        let m = Message::decode(datagram).unwrap();
        assert_eq!(m.message_type, MessageType::IMAGE_DATA_RESPONSE);
        assert_eq!(m.result_code(), Some(ResultCode::SUCCESS));
        if self.requester.handle_response(now, m.seq).is_some() {
            self.completed += 1;
            if self.next_block == self.blocks() {
                self.done = true;
            } else {
                self.send_next(now);
            }
        }
    }

    fn transmit(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(d) = self.requester.poll_transmit() {
            assert_eq!(d, self.current, "a request was altered");
            out.push(d.to_vec());
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.requester.poll_timeout()
    }

    fn timeout(&mut self, now: Instant) {
        if let Some(dead) = self.requester.handle_timeout(now) {
            self.dead = Some(dead);
        }
    }

    fn finished(&self) -> bool {
        self.done || self.dead.is_some()
    }
}

/// The AP's side: stores each new block once, answers duplicates from the cache.
#[derive(Default)]
struct AccessPoint {
    responder: Responder,
    image: Vec<u8>,
    blocks: u64,
    eof: bool,
    buf: Vec<u8>,
}

impl Node for AccessPoint {
    fn receive(&mut self, _now: Instant, datagram: &[u8]) {
        let m = Message::decode(datagram).unwrap();
        assert_eq!(m.message_type, MessageType::IMAGE_DATA_REQUEST);
        if self.responder.handle_request(m.seq) != RequestDisposition::New {
            return;
        }
        let data = m.image_data().unwrap();
        assert!(!self.eof, "data after EOF");
        self.image.extend_from_slice(data.data());
        self.blocks += 1;
        self.eof = matches!(data, ImageData::Eof(_));
        self.buf.clear();
        encode_image_data_response(m.seq, ResultCode::SUCCESS, &mut self.buf);
        self.responder.respond(m.seq, &self.buf).unwrap();
    }

    fn transmit(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(d) = self.responder.poll_transmit() {
            out.push(d.to_vec());
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn timeout(&mut self, _now: Instant) {}

    fn finished(&self) -> bool {
        self.eof
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[test]
fn image_arrives_intact_over_a_lossy_duplicating_reordering_link() {
    let impair = Impair {
        loss: 50,
        dup: 50,
        reorder: 50,
        delay: Duration::from_millis(2),
    };
    // 1024 is the RFC's block; 1377 is what real controllers send. 300 blocks pass the
    // 256 sequence numbers.
    for (seed, block, len) in [
        (1, 1024, 300 * 1024 + 17),
        (2, 1377, 200_000),
        (3, 1024, 1024),
    ] {
        let image = pattern(len);
        let base = Instant::now();
        let mut ac = Controller::new(&image, block, RetransmitConfig::default(), base);
        let mut ap = AccessPoint::default();
        let mut net = Net::new(seed, impair);
        run(base, &mut ac, &mut ap, &mut net);
        assert!(ac.done, "seed {seed}: {:?}", ac.dead);
        assert!(ap.eof);
        assert!(ap.image == image, "seed {seed}: image differs");
        let blocks = len.div_ceil(block) as u64;
        assert_eq!(ap.blocks, blocks, "each block handed up once");
        assert_eq!(ac.completed, blocks);
        if blocks > 100 {
            assert!(
                ac.requester.stats().retransmissions > 0,
                "loss forced resends"
            );
            assert!(
                ap.responder.stats().resent > 0,
                "duplicates answered from the cache"
            );
        }
    }
}

#[test]
fn heavy_loss_with_short_timers() {
    // Tests shorten the timers: 50 ms instead of 3 s, and more patience for 20 % loss.
    let impair = Impair {
        loss: 200,
        dup: 100,
        reorder: 100,
        delay: Duration::from_millis(1),
    };
    let config = RetransmitConfig {
        interval: Duration::from_millis(50),
        max_retransmit: 12,
        max_interval: Some(Duration::from_millis(400)),
    };
    let image = pattern(100 * 1024);
    let base = Instant::now();
    let mut ac = Controller::new(&image, 1024, config, base);
    let mut ap = AccessPoint::default();
    let mut net = Net::new(4, impair);
    let took = run(base, &mut ac, &mut ap, &mut net);
    assert!(ac.done, "{:?}", ac.dead);
    assert!(ap.image == image);
    assert_eq!(ap.blocks, 100);
    assert!(ac.requester.stats().retransmissions > 20);
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[test]
fn every_datagram_duplicated_still_hands_each_block_up_once() {
    let impair = Impair {
        dup: 1000,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let image = pattern(64 * 1024);
    let base = Instant::now();
    let mut ac = Controller::new(&image, 1024, RetransmitConfig::default(), base);
    let mut ap = AccessPoint::default();
    let mut net = Net::new(5, impair);
    run(base, &mut ac, &mut ap, &mut net);
    assert!(ac.done && ap.image == image);
    assert_eq!(ap.blocks, 64);
    let rs = ap.responder.stats();
    assert_eq!(rs.requests, 64);
    assert_eq!(
        rs.resent, 64,
        "the second copy of each request got the cached response"
    );
    let qs = ac.requester.stats();
    assert_eq!(qs.retransmissions, 0, "no timer fired");
    assert!(
        qs.ignored_responses >= 64,
        "duplicate responses were ignored"
    );
}

#[test]
fn a_silent_ap_is_declared_dead_on_the_default_schedule() {
    let impair = Impair {
        loss: 1000,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let image = pattern(4096);
    let base = Instant::now();
    let mut ac = Controller::new(&image, 1024, RetransmitConfig::default(), base);
    let mut ap = AccessPoint::default();
    let mut net = Net::new(6, impair);
    let took = run(base, &mut ac, &mut ap, &mut net);
    assert_eq!(
        ac.dead,
        Some(PeerDead {
            seq: 250,
            retransmissions: 5
        })
    );
    assert_eq!(took, Duration::from_secs(189));
    assert_eq!(net.sent, 6, "the request and its 5 retransmissions");
}

/// The WTP side of a Join whose request is too big for one datagram.
struct Wtp {
    requester: Requester,
    fragments: Vec<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    joined: Option<ResultCode>,
    dead: bool,
}

impl Node for Wtp {
    fn receive(&mut self, now: Instant, datagram: &[u8]) {
        let m = Message::decode(datagram).unwrap();
        assert_eq!(m.message_type, MessageType::JOIN_RESPONSE);
        if self.requester.handle_response(now, m.seq).is_some() {
            self.joined = m.result_code();
        }
    }

    fn transmit(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(d) = self.requester.poll_transmit() {
            assert!(
                self.fragments.iter().any(|f| f == d),
                "a fragment was altered"
            );
            self.sent.push(d.to_vec());
            out.push(d.to_vec());
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.requester.poll_timeout()
    }

    fn timeout(&mut self, now: Instant) {
        self.dead |= self.requester.handle_timeout(now).is_some();
    }

    fn finished(&self) -> bool {
        self.joined.is_some() || self.dead
    }
}

/// The controller side: reassembles, checks the mandatory elements, answers.
struct Ac {
    reassembler: Reassembler<u8>,
    responder: Responder,
    joins: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl Node for Ac {
    fn receive(&mut self, now: Instant, datagram: &[u8]) {
        let Reassembly::Complete(message) = self.reassembler.push(now, &1, datagram).unwrap()
        else {
            return;
        };
        let m = Message::decode(&message).unwrap();
        if self.responder.handle_request(m.seq) != RequestDisposition::New {
            return;
        }
        let result = match m.check_mandatory() {
            Ok(()) => ResultCode::SUCCESS,
            Err(missing) => missing.result_code(),
        };
        self.joins.push(message.clone());
        self.buf = Message::new(
            MessageType::JOIN_RESPONSE,
            m.seq,
            vec![Element::ResultCode(result)],
        )
        .to_vec()
        .unwrap();
        self.responder.respond(m.seq, &self.buf).unwrap();
    }

    fn transmit(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(d) = self.responder.poll_transmit() {
            out.push(d.to_vec());
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.reassembler.poll_timeout()
    }

    fn timeout(&mut self, now: Instant) {
        self.reassembler.handle_timeout(now);
    }

    fn finished(&self) -> bool {
        false
    }
}

#[test]
fn fragmented_join_request_survives_loss_and_retransmission_fills_the_holes() {
    let encryption = [EncryptionCapability {
        wbid: 1,
        capabilities: 0,
    }];
    let cisco = |value| VendorVersion {
        vendor_id: 4_232_704,
        value,
    };
    let location = [b'L'; 900];
    let join = Message::new(
        MessageType::JOIN_REQUEST,
        17,
        vec![
            Element::LocationData(&location),
            Element::WtpBoardData(WtpBoardData {
                vendor_id: 4_232_704,
                model: b"C9105AXI",
                serial: b"FGL2345ABCD",
                board_id: None,
                board_revision: None,
                base_mac: Some(&[0, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]),
            }),
            Element::WtpDescriptor(WtpDescriptor {
                max_radios: 2,
                radios_in_use: 2,
                encryption: SubElements::new(&encryption),
                hardware_version: cisco(b"1.0"),
                active_software_version: cisco(b"17.3.3.26"),
                boot_version: cisco(b"1.1"),
                other_software_version: Some(cisco(b"8.10.130.0")),
            }),
            Element::WtpName(b"AP-lobby"),
            Element::SessionId([9; 16]),
            Element::WtpFrameTunnelMode(FrameTunnelMode(FrameTunnelMode::LOCAL_BRIDGING)),
            Element::WtpMacType(MacType::Local),
            Element::WtpRadioInformation(RadioInformation {
                radio_id: 1,
                radio_type: RadioInformation::TYPE_N,
            }),
            Element::EcnSupport(EcnSupport::Limited),
            Element::LocalIpv4Address(Ipv4Addr::new(10, 0, 0, 5)),
        ],
    );
    let wire = join.to_vec().unwrap();
    let fragments = fragment(&wire, 200, 0x0101).unwrap();
    assert!(fragments.len() >= 5);
    let mut retransmitted = 0;
    for seed in 7..12 {
        let base = Instant::now();
        let mut requester = Requester::new(RetransmitConfig::default(), 17);
        requester
            .send_fragments(base, fragments.iter().map(Vec::as_slice))
            .unwrap();
        let mut wtp = Wtp {
            requester,
            fragments: fragments.clone(),
            sent: Vec::new(),
            joined: None,
            dead: false,
        };
        let mut ac = Ac {
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            responder: Responder::new(),
            joins: Vec::new(),
            buf: Vec::new(),
        };
        let impair = Impair {
            loss: 150,
            dup: 100,
            reorder: 100,
            delay: Duration::from_millis(3),
        };
        run(base, &mut wtp, &mut ac, &mut Net::new(seed, impair));
        assert_eq!(wtp.joined, Some(ResultCode::SUCCESS), "seed {seed}");
        assert_eq!(ac.joins.len(), 1, "handed up once");
        assert!(ac.joins[0] == wire, "reassembled exactly");
        assert_eq!(wtp.sent.len() % fragments.len(), 0, "resent whole");
        retransmitted += wtp.requester.stats().retransmissions;
    }
    assert!(
        retransmitted > 0,
        "some seed lost a fragment or the response"
    );
}
