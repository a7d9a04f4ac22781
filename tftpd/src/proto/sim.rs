//! Deterministic simulations of whole transfers: a server and a client state machine joined
//! by a simulated network with loss, duplication, reordering and delay, in simulated time.

#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client::Requested;
use super::options::{Direction, ServerLimits, negotiate};
use super::packet::{ErrorCode, Mode, Packet};
use super::*;

const LISTEN: &str = "127.0.0.1:69";
const SERVER: &str = "127.0.0.1:40000";
const CLIENT: &str = "127.0.0.1:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

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
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

struct Net {
    rng: u64,
    impair: Impair,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    sent: Vec<(Duration, SocketAddr, Vec<u8>)>,
    record: bool,
}

impl Net {
    fn new(seed: u64, impair: Impair) -> Net {
        Net {
            rng: seed | 1,
            impair,
            queue: BinaryHeap::new(),
            seq: 0,
            sent: Vec::new(),
            record: false,
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

    fn send(&mut self, now: Duration, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.record {
            self.sent.push((now, from, bytes.clone()));
        }
        if self.roll(self.impair.loss) {
            return;
        }
        let copies = if self.roll(self.impair.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = now + self.impair.delay;
            if self.roll(self.impair.reorder) {
                at += self.impair.delay * 3 + Duration::from_micros(50);
            }
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                bytes: bytes.clone(),
            }));
        }
    }
}

enum Machine {
    Send(Sender, Vec<u8>),
    Recv(Receiver, Vec<u8>),
}

impl Machine {
    fn flush(&mut self, now: Instant, t: Duration, me: SocketAddr, net: &mut Net) {
        match self {
            Machine::Send(s, src) => {
                while let Some(tx) = s.poll_transmit(now) {
                    let (dest, bytes) = frame(tx, src);
                    net.send(t, me, dest, bytes);
                }
            }
            Machine::Recv(r, _) => {
                while let Some(tx) = r.poll_transmit(now) {
                    let (dest, bytes) = frame(tx, &[]);
                    net.send(t, me, dest, bytes);
                }
            }
        }
    }

    fn deliver(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match self {
            Machine::Send(s, _) => s.handle_datagram(now, from, bytes),
            Machine::Recv(r, sink) => {
                if let Some(data) = r.handle_datagram(now, from, bytes) {
                    sink.extend_from_slice(data);
                }
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        match self {
            Machine::Send(s, _) => s.handle_timeout(now),
            Machine::Recv(r, _) => r.handle_timeout(now),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Machine::Send(s, _) => s.poll_timeout(),
            Machine::Recv(r, _) => r.poll_timeout(),
        }
    }

    fn finished(&self) -> bool {
        match self {
            Machine::Send(s, _) => s.is_finished(),
            Machine::Recv(r, _) => r.is_finished(),
        }
    }

    fn outcome(&self) -> Option<Outcome> {
        match self {
            Machine::Send(s, _) => s.outcome().cloned(),
            Machine::Recv(r, _) => r.outcome().cloned(),
        }
    }

    fn stats(&self) -> Stats {
        match self {
            Machine::Send(s, _) => s.stats(),
            Machine::Recv(r, _) => r.stats(),
        }
    }
}

fn frame(tx: Transmit<'_>, src: &[u8]) -> (SocketAddr, Vec<u8>) {
    match tx {
        Transmit::Data {
            dest,
            header,
            offset,
            len,
        } => {
            let mut v = header.to_vec();
            let o = offset as usize;
            v.extend_from_slice(&src[o..o + len]);
            (dest, v)
        }
        Transmit::Packet { dest, bytes } => (dest, bytes.to_vec()),
    }
}

/// Server behaviour for a scenario.
#[derive(Clone, Default)]
struct ServerSide {
    limits: ServerLimits,
    retransmit: RetransmitPolicy,
    /// Force a rollover without negotiating it (to test clients against wrap-to-1 servers).
    forced_rollover: Option<u16>,
}

struct Run {
    server: Option<Machine>,
    client: Machine,
    net: Net,
    elapsed: Duration,
}

/// Runs a read (`file` served to the client) or a write (`file` uploaded by the client).
fn run(read: bool, file: &[u8], asked: Requested, side: ServerSide, net: Net) -> Run {
    let base = Instant::now();
    let client_policy = RetransmitPolicy::tftpd_hpa(Duration::from_millis(200));
    let client = if read {
        Machine::Recv(
            Receiver::client(addr(LISTEN), b"ap1g8", Mode::Octet, asked, client_policy),
            Vec::new(),
        )
    } else {
        Machine::Send(
            Sender::client(addr(LISTEN), b"up", asked, client_policy, file.len() as u64),
            file.to_vec(),
        )
    };
    let mut r = Run {
        server: None,
        client,
        net,
        elapsed: Duration::ZERO,
    };
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(steps < 20_000_000, "simulation did not converge");
        let now = base + r.elapsed;
        r.client.flush(now, r.elapsed, addr(CLIENT), &mut r.net);
        if let Some(s) = r.server.as_mut() {
            s.flush(now, r.elapsed, addr(SERVER), &mut r.net);
        }
        let server_done = r.server.as_ref().is_none_or(Machine::finished);
        if r.client.finished() && server_done && r.net.queue.is_empty() {
            break;
        }
        let next_packet = r.net.queue.peek().map(|Reverse(p)| base + p.at);
        let next = [
            next_packet,
            r.client.poll_timeout(),
            r.server.as_ref().and_then(Machine::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        r.elapsed = next.max(now) - base;
        let now = base + r.elapsed;
        while r
            .net
            .queue
            .peek()
            .is_some_and(|Reverse(p)| p.at <= r.elapsed)
        {
            let Reverse(p) = r.net.queue.pop().unwrap();
            if p.to == addr(CLIENT) {
                r.client.deliver(now, p.from, &p.bytes);
            } else if p.to == addr(LISTEN) {
                if r.server.is_none() {
                    r.server = Some(accept(&p.bytes, file, &side));
                }
            } else if let Some(s) = r.server.as_mut() {
                s.deliver(now, p.from, &p.bytes);
            }
        }
        if r.client.poll_timeout().is_some_and(|d| d <= now) {
            r.client.timeout(now);
        }
        if let Some(s) = r.server.as_mut()
            && s.poll_timeout().is_some_and(|d| d <= now)
        {
            s.timeout(now);
        }
    }
    r
}

/// The listener: negotiates and creates the server's machine for a request.
fn accept(request: &[u8], file: &[u8], side: &ServerSide) -> Machine {
    let peer = addr(CLIENT);
    match Packet::decode(request).unwrap() {
        Packet::Rrq(req) => {
            let n = negotiate(
                req.options,
                req.mode,
                Direction::Read {
                    file_size: file.len() as u64,
                },
                &side.limits,
            )
            .unwrap();
            let cfg = SendConfig {
                blksize: n.blksize,
                windowsize: n.windowsize,
                rollover: Rollover::to(side.forced_rollover.unwrap_or(n.rollover)),
                retransmit: side.retransmit,
            };
            Machine::Send(
                Sender::server(peer, cfg, file.len() as u64, Some(&n.oack)),
                file.to_vec(),
            )
        }
        Packet::Wrq(req) => {
            let n = negotiate(req.options, req.mode, Direction::Write, &side.limits).unwrap();
            let cfg = RecvConfig {
                blksize: n.blksize,
                windowsize: n.windowsize,
                rollover: Rollover::to(n.rollover),
                retransmit: side.retransmit,
            };
            Machine::Recv(Receiver::server(peer, cfg, Some(&n.oack)), Vec::new())
        }
        other => panic!("listener got {other:?}"),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 511) as u8).collect()
}

fn fast_server() -> ServerSide {
    ServerSide {
        retransmit: RetransmitPolicy::tftpd_hpa(Duration::from_millis(100)),
        ..Default::default()
    }
}

fn received(r: &Run, read: bool) -> &[u8] {
    let m = if read {
        &r.client
    } else {
        r.server.as_ref().unwrap()
    };
    match m {
        Machine::Recv(_, sink) => sink,
        Machine::Send(..) => panic!("not a receiver"),
    }
}

fn assert_complete(r: &Run, read: bool, file: &[u8]) {
    assert_eq!(r.client.outcome(), Some(Outcome::Complete), "client");
    assert_eq!(
        r.server.as_ref().unwrap().outcome(),
        Some(Outcome::Complete),
        "server"
    );
    let got = received(r, read);
    assert_eq!(got.len(), file.len());
    assert!(got == file, "payload differs");
}

#[test]
fn lockstep_read_of_sizes_around_the_block_boundary() {
    for len in [0, 1, 511, 512, 513, 1024, 5000] {
        let file = pattern(len);
        let r = run(
            true,
            &file,
            Requested::default(),
            fast_server(),
            Net::new(1, Impair::default()),
        );
        assert_complete(&r, true, &file);
        let s = r.server.as_ref().unwrap().stats();
        // len / 512 + 1 blocks, none resent: a multiple of 512 ends with an empty block.
        assert_eq!(s.blocks, len as u64 / 512 + 1, "len {len}");
        assert_eq!(s.retransmitted, 0);
        assert_eq!(s.bytes, len as u64);
    }
}

#[test]
fn read_with_options_goes_through_oack_and_ack_zero() {
    let file = pattern(70_000);
    let asked = Requested {
        blksize: Some(1468),
        tsize: Some(0),
        timeout: Some(1),
        ..Default::default()
    };
    let r = run(
        true,
        &file,
        asked,
        fast_server(),
        Net::new(2, Impair::default()),
    );
    assert_complete(&r, true, &file);
    let Machine::Recv(rx, _) = &r.client else {
        panic!()
    };
    assert_eq!(rx.agreed().blksize, 1468);
    assert_eq!(rx.agreed().tsize, Some(70_000));
    assert_eq!(r.server.as_ref().unwrap().stats().blocks, 70_000 / 1468 + 1);
}

#[test]
fn more_than_65535_blocks_wrap_to_zero() {
    // ap1g8's real size at blksize 512: 137,721 DATA blocks, two wraps.
    let file = pattern(70_512_640);
    let r = run(
        true,
        &file,
        Requested::default(),
        fast_server(),
        Net::new(3, Impair::default()),
    );
    assert_complete(&r, true, &file);
    assert_eq!(r.server.as_ref().unwrap().stats().blocks, 137_721);
}

#[test]
fn rollover_one_when_the_client_asks() {
    let file = pattern(512 * 70_000 + 17);
    let asked = Requested {
        rollover: Some(1),
        ..Default::default()
    };
    let mut net = Net::new(4, Impair::default());
    net.record = true;
    let r = run(true, &file, asked, fast_server(), net);
    assert_complete(&r, true, &file);
    // The block after 65535 went out as 1, not 0, and no DATA 0 was ever sent.
    let data_blocks: Vec<u16> = r
        .net
        .sent
        .iter()
        .filter(|(_, from, _)| *from == addr(SERVER))
        .filter_map(|(_, _, b)| match Packet::decode(b) {
            Ok(Packet::Data { block, .. }) => Some(block),
            _ => None,
        })
        .collect();
    assert_eq!(data_blocks[65534], 65535);
    assert_eq!(data_blocks[65535], 1);
    assert!(!data_blocks.contains(&0));
}

#[test]
fn client_follows_a_server_that_wraps_to_one_unasked() {
    let file = pattern(512 * 66_000);
    let side = ServerSide {
        forced_rollover: Some(1),
        ..fast_server()
    };
    let r = run(
        true,
        &file,
        Requested::default(),
        side,
        Net::new(5, Impair::default()),
    );
    assert_complete(&r, true, &file);
}

#[test]
fn lossy_duplicating_reordering_network_still_delivers_exact_bytes() {
    let impair = Impair {
        loss: 80,
        dup: 80,
        reorder: 80,
        delay: Duration::from_millis(2),
    };
    for (seed, window, blksize) in [(7, 1, 512), (8, 8, 1468), (9, 32, 1024), (10, 64, 512)] {
        let file = pattern(300_000 + seed as usize);
        let asked = Requested {
            blksize: Some(blksize),
            windowsize: Some(window),
            ..Default::default()
        };
        let r = run(true, &file, asked, fast_server(), Net::new(seed, impair));
        assert_complete(&r, true, &file);
        let s = r.server.as_ref().unwrap().stats();
        assert!(s.retransmitted > 0, "loss must have forced resends");
    }
}

#[test]
fn windowed_transfer_needs_one_ack_per_window() {
    let file = pattern(1468 * 320);
    let asked = Requested {
        blksize: Some(1468),
        windowsize: Some(32),
        ..Default::default()
    };
    let mut net = Net::new(11, Impair::default());
    net.record = true;
    let r = run(true, &file, asked, fast_server(), net);
    assert_complete(&r, true, &file);
    let acks = r
        .net
        .sent
        .iter()
        .filter(|(_, from, b)| *from == addr(CLIENT) && b.get(1) == Some(&4))
        .count();
    // ACK 0 for the OACK, one per 32-block window (10), and one for the final empty block.
    assert_eq!(acks, 1 + 10 + 1);
    assert_eq!(r.server.as_ref().unwrap().stats().retransmitted, 0);
}

#[test]
fn duplicated_acks_never_cause_resends() {
    // Every packet duplicated, none lost: the Sorcerer's Apprentice would double the DATA.
    let impair = Impair {
        dup: 1000,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let file = pattern(512 * 200 + 3);
    let r = run(
        true,
        &file,
        Requested::default(),
        fast_server(),
        Net::new(12, impair),
    );
    assert_complete(&r, true, &file);
    let s = r.server.as_ref().unwrap().stats();
    assert_eq!(s.blocks, 201);
    assert_eq!(s.retransmitted, 0);
    assert!(s.duplicates >= 200);
}

/// The ACKs a receiver sends now, as block numbers.
fn acks_now(r: &mut Receiver, now: Instant) -> Vec<u16> {
    let mut acks = Vec::new();
    while let Some(t) = r.poll_transmit(now) {
        if let Transmit::Packet { bytes, .. } = t
            && let Ok(Packet::Ack { block }) = Packet::decode(bytes)
        {
            acks.push(block);
        }
    }
    acks
}

#[test]
fn a_repeated_block_is_acknowledged_again_only_once_acknowledged() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let block = vec![7u8; 512];
    let data = |n: u16| {
        Packet::Data {
            block: n,
            data: &block,
        }
        .to_vec()
    };
    // Lock-step: a repeat of the last block means our ACK was lost: ACK it again.
    let mut r = Receiver::server(peer, RecvConfig::default(), None);
    assert_eq!(acks_now(&mut r, now), [0]);
    r.handle_datagram(now, peer, &data(1));
    assert_eq!(acks_now(&mut r, now), [1]);
    r.handle_datagram(now, peer, &data(1));
    assert_eq!(acks_now(&mut r, now), [1]);
    // Windowed: a repeat of the newest block mid-window was never acknowledged, so it is
    // a network duplicate; an ACK for it would make the sender resend the window.
    let cfg = RecvConfig {
        windowsize: 4,
        ..RecvConfig::default()
    };
    let mut r = Receiver::server(peer, cfg, None);
    assert_eq!(acks_now(&mut r, now), [0]);
    for n in [1, 1, 2, 2, 3] {
        r.handle_datagram(now, peer, &data(n));
        assert_eq!(acks_now(&mut r, now), [0u16; 0], "after DATA {n}");
    }
    r.handle_datagram(now, peer, &data(4));
    assert_eq!(acks_now(&mut r, now), [4]);
    // Block 4 was acknowledged: a repeat of it means that ACK was lost.
    r.handle_datagram(now, peer, &data(4));
    assert_eq!(acks_now(&mut r, now), [4]);
}

#[test]
fn duplicated_data_inside_a_window_never_causes_resends() {
    // A repeat of the newest block mid-window is a network duplicate, not a sign that an
    // ACK was lost: answering it would make the sender go back and resend the window.
    let impair = Impair {
        dup: 1000,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let file = pattern(1468 * 320 + 5);
    let asked = Requested {
        blksize: Some(1468),
        windowsize: Some(16),
        ..Default::default()
    };
    let mut net = Net::new(15, impair);
    net.record = true;
    let r = run(true, &file, asked, fast_server(), net);
    assert_complete(&r, true, &file);
    let data_sent = r
        .net
        .sent
        .iter()
        .filter(|(_, from, b)| *from == addr(SERVER) && b.get(1) == Some(&3))
        .count();
    assert_eq!(data_sent, 321, "each block sent once");
}

#[test]
fn upload_lockstep_and_windowed_with_loss() {
    let impair = Impair {
        loss: 50,
        dup: 50,
        reorder: 50,
        delay: Duration::from_millis(1),
    };
    for (seed, asked) in [
        (13, Requested::default()),
        (
            14,
            Requested {
                blksize: Some(1024),
                windowsize: Some(16),
                tsize: Some(200_000),
                ..Default::default()
            },
        ),
    ] {
        let file = pattern(200_000);
        let r = run(false, &file, asked, fast_server(), Net::new(seed, impair));
        assert_complete(&r, false, &file);
    }
}

#[test]
fn unanswered_data_follows_tftpd_hpa_schedule_then_gives_up() {
    // The client sends its RRQ and then vanishes: DATA 1 goes out at 0, 1, 3, 7, 15, 31 s.
    let base = Instant::now();
    let peer = addr(CLIENT);
    let mut s = Sender::server(peer, SendConfig::default(), 10_000, None);
    let mut sends = Vec::new();
    let mut now = base;
    for _ in 0..100 {
        while let Some(t) = s.poll_transmit(now) {
            assert!(matches!(
                t,
                Transmit::Data {
                    offset: 0,
                    len: 512,
                    ..
                }
            ));
            sends.push((now - base).as_secs());
        }
        match s.poll_timeout() {
            Some(d) => {
                now = d;
                s.handle_timeout(now);
            }
            None => break,
        }
    }
    assert_eq!(sends, [0, 1, 3, 7, 15, 31]);
    assert_eq!((now - base).as_secs(), 63);
    assert_eq!(
        s.outcome(),
        Some(&Outcome::Failed(TransferError::TimedOut { timeouts: 5 }))
    );
    assert!(s.is_finished());
}

#[test]
fn client_error_aborts_at_once_and_is_not_answered() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let mut s = Sender::server(peer, SendConfig::default(), 10_000, None);
    assert!(s.poll_transmit(now).is_some());
    let err = Packet::Error {
        code: ErrorCode::Undefined,
        message: b"user cancelled",
    }
    .to_vec();
    s.handle_datagram(now, peer, &err);
    assert!(matches!(
        s.outcome(),
        Some(Outcome::Failed(TransferError::Peer {
            refused_options: false,
            ..
        }))
    ));
    assert!(s.poll_transmit(now).is_none());
    assert!(s.poll_timeout().is_none());
    assert!(s.is_finished());
}

#[test]
fn error_in_answer_to_oack_means_options_refused() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let n = negotiate(
        Requested {
            tsize: Some(0),
            ..Default::default()
        }
        .to_options()
        .as_list(),
        Mode::Octet,
        Direction::Read { file_size: 9 },
        &ServerLimits::default(),
    )
    .unwrap();
    let mut s = Sender::server(peer, SendConfig::default(), 9, Some(&n.oack));
    let Some(Transmit::Packet { bytes, .. }) = s.poll_transmit(now) else {
        panic!("OACK expected first")
    };
    assert_eq!(bytes, b"\x00\x06tsize\x009\x00");
    // A PXE-style tsize probe: the client reads the size, then says no.
    let err = Packet::Error {
        code: ErrorCode::OptionNegotiation,
        message: b"",
    }
    .to_vec();
    s.handle_datagram(now, peer, &err);
    assert!(matches!(
        s.outcome(),
        Some(Outcome::Failed(TransferError::Peer {
            refused_options: true,
            ..
        }))
    ));
}

#[test]
fn stranger_gets_error_5_and_transfer_continues() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let stranger = addr("127.0.0.1:50001");
    let mut s = Sender::server(peer, SendConfig::default(), 700, None);
    assert!(matches!(s.poll_transmit(now), Some(Transmit::Data { .. })));
    s.handle_datagram(now, stranger, &super::packet::ack(1));
    let Some(Transmit::Packet { dest, bytes }) = s.poll_transmit(now) else {
        panic!("ERROR 5 expected")
    };
    assert_eq!(dest, stranger);
    assert_eq!(bytes, b"\x00\x05\x00\x05Unknown transfer ID\x00");
    assert!(
        s.poll_transmit(now).is_none(),
        "the stranger's ACK moved nothing"
    );
    // An ERROR from a stranger is never answered.
    s.handle_datagram(now, stranger, b"\x00\x05\x00\x00x\x00");
    assert!(s.poll_transmit(now).is_none());
    // The real peer carries on.
    s.handle_datagram(now, peer, &super::packet::ack(1));
    assert!(matches!(
        s.poll_transmit(now),
        Some(Transmit::Data {
            offset: 512,
            len: 188,
            ..
        })
    ));
    s.handle_datagram(now, peer, &super::packet::ack(2));
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
    assert_eq!(s.stats().strangers, 2);
}

#[test]
fn garbage_from_the_peer_is_ignored() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let mut s = Sender::server(peer, SendConfig::default(), 100, None);
    assert!(s.poll_transmit(now).is_some());
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09",
        b"\x00\x03\x00\x01data",
        b"\x00\x01x",
    ] {
        s.handle_datagram(now, peer, junk);
    }
    assert!(s.outcome().is_none());
    assert!(s.poll_transmit(now).is_none());
    s.handle_datagram(now, peer, &super::packet::ack(1));
    assert_eq!(s.outcome(), Some(&Outcome::Complete));
}

#[test]
fn receiver_reacknowledges_a_repeated_final_block_while_lingering() {
    let base = Instant::now();
    let peer = addr(CLIENT);
    let mut r = Receiver::server(peer, RecvConfig::default(), None);
    assert_eq!(
        r.poll_transmit(base),
        Some(Transmit::Packet {
            dest: peer,
            bytes: b"\x00\x04\x00\x00"
        })
    );
    let last = b"\x00\x03\x00\x01tail";
    assert_eq!(r.handle_datagram(base, peer, last), Some(&b"tail"[..]));
    assert_eq!(r.outcome(), Some(&Outcome::Complete));
    assert!(matches!(
        r.poll_transmit(base),
        Some(Transmit::Packet {
            bytes: b"\x00\x04\x00\x01",
            ..
        })
    ));
    assert!(!r.is_finished());
    // The ACK was lost; the client repeats the final block and must get the ACK again.
    assert_eq!(r.handle_datagram(base, peer, last), None);
    assert!(matches!(
        r.poll_transmit(base),
        Some(Transmit::Packet {
            bytes: b"\x00\x04\x00\x01",
            ..
        })
    ));
    let end = r.poll_timeout().unwrap();
    r.handle_timeout(end);
    assert!(r.is_finished());
}

#[test]
fn receiver_refuses_oversized_block() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let mut r = Receiver::server(peer, RecvConfig::default(), None);
    let _ = r.poll_transmit(now);
    let mut big = vec![0, 3, 0, 1];
    big.extend_from_slice(&[7; 513]);
    assert_eq!(r.handle_datagram(now, peer, &big), None);
    assert!(matches!(
        r.outcome(),
        Some(Outcome::Failed(TransferError::Aborted {
            code: ErrorCode::IllegalOperation,
            ..
        }))
    ));
    assert!(
        matches!(r.poll_transmit(now), Some(Transmit::Packet { bytes, .. }) if bytes.starts_with(b"\x00\x05\x00\x04"))
    );
}

#[test]
fn receiver_abort_after_final_block_withholds_the_ack() {
    let now = Instant::now();
    let peer = addr(CLIENT);
    let mut r = Receiver::server(peer, RecvConfig::default(), None);
    let _ = r.poll_transmit(now);
    assert_eq!(
        r.handle_datagram(now, peer, b"\x00\x03\x00\x01end"),
        Some(&b"end"[..])
    );
    assert_eq!(r.outcome(), Some(&Outcome::Complete));
    // The shell could not rename the upload into place.
    r.abort(ErrorCode::DiskFull, "Disk full or allocation exceeded");
    let Some(Transmit::Packet { bytes, .. }) = r.poll_transmit(now) else {
        panic!("ERROR expected")
    };
    assert!(bytes.starts_with(b"\x00\x05\x00\x03"));
    assert!(
        r.poll_transmit(now).is_none(),
        "no ACK may follow the ERROR"
    );
    assert!(matches!(
        r.outcome(),
        Some(Outcome::Failed(TransferError::Aborted { .. }))
    ));
    assert!(r.is_finished());
}
