//! Wire-level behaviour of the real `tftpd`, driven from raw UDP sockets: transfer IDs,
//! client errors, duplicate ACKs and the retransmission schedule.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use airlift_tests::{Opcode, Packet, RawClient, Received, ServeDir, TftpServer, pseudo_random};

const BIN: &str = env!("CARGO_BIN_EXE_tftpd");

/// `-T 10 s`: for tests that count packets, so that a test thread starved by a busy machine
/// does not see legitimate retransmissions.
const SLOW_TIMER: &[&str] = &["-T", "10000000"];

fn start(dir: &ServeDir, extra: &[&str]) -> TftpServer {
    let mut flags = vec!["-v"];
    flags.extend_from_slice(extra);
    TftpServer::serve(BIN, &flags, dir.path())
}

/// Everything that arrives within `window`.
fn drain(raw: &RawClient, window: Duration) -> Vec<Received> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(r) = raw.recv_within(deadline.saturating_duration_since(Instant::now())) {
        got.push(r);
    }
    got
}

fn data(block: u16, payload: &[u8]) -> Packet {
    Packet::Data {
        block,
        payload: payload.to_vec(),
    }
}

#[test]
fn a_stranger_gets_error_5_and_the_transfer_still_completes() {
    let dir = ServeDir::new();
    let want = pseudo_random(512 * 10 + 77, 51);
    dir.write("f", &want);
    let server = start(&dir, SLOW_TIMER);
    let raw = RawClient::new(server.addr());
    let first = raw.request(Opcode::Rrq, b"f", b"octet", &[]);
    let tid = first.from;
    assert_ne!(tid, server.addr(), "DATA must come from a new transfer ID");
    assert_eq!(first.packet, data(1, &want[..512]));

    // Another port on the same host sends an ACK to the transfer's port.
    let stranger = RawClient::new(server.addr());
    stranger.send_ack_to(tid, 1);
    let r = stranger.expect_packet(Duration::from_secs(5), "ERROR 5");
    assert_eq!(
        r.packet,
        Packet::Error {
            code: 5,
            message: "Unknown transfer ID".into()
        }
    );
    assert_eq!(r.from, tid);
    // The stranger's ACK moved nothing: the real client still gets DATA 2 only after its own
    // ACK, and the transfer completes with the right bytes.
    assert!(
        raw.recv_within(Duration::from_millis(200)).is_none(),
        "the stranger's ACK caused a send to the client"
    );
    let mut got = want[..512].to_vec();
    let mut block = 1u16;
    loop {
        raw.send_ack_to(tid, block);
        if got.len() == want.len() {
            break;
        }
        block += 1;
        let r = raw.expect_packet(Duration::from_secs(5), "DATA");
        assert_eq!(r.from, tid);
        match r.packet {
            Packet::Data { block: b, payload } if b == block => got.extend_from_slice(&payload),
            other => panic!("expected DATA {block}, got {other:?}"),
        }
        if block == 5 {
            // A stranger's ERROR is never answered (and does not end the transfer).
            stranger.send_error_to(tid, 0, "not yours");
            assert!(stranger.recv_within(Duration::from_millis(200)).is_none());
        }
    }
    assert!(got == want);
    assert!(stranger.recv_within(Duration::from_millis(100)).is_none());
    server.wait_for_log("sent line", Duration::from_secs(5), |l| {
        l.starts_with("sent f to 127.0.0.1: 5197 bytes in ")
    });
}

#[test]
fn a_client_error_stops_retransmissions() {
    let dir = ServeDir::new();
    dir.write("f", &pseudo_random(512 * 20, 52));
    let server = start(&dir, &["-T", "200000"]);
    let raw = RawClient::new(server.addr());
    let first = raw.request(Opcode::Rrq, b"f", b"octet", &[]);
    let tid = first.from;
    raw.send_ack_to(tid, 1);
    // DATA 2 (a busy machine may have us see a retransmitted DATA 1 first).
    loop {
        let r = raw.expect_packet(Duration::from_secs(5), "DATA 2");
        match r.packet {
            Packet::Data { block: 2, .. } => break,
            Packet::Data { block: 1, .. } => continue,
            other => panic!("expected DATA 2, got {other:?}"),
        }
    }
    raw.send_error_to(tid, 0, "client abort");
    // With -T 200000 the schedule would resend DATA 2 at 0.2, 0.6, 1.4 and 3.0 s. One
    // retransmission may already have been on its way when the ERROR arrived (if this thread
    // was slow to send it); anything more means the ERROR did not stop the transfer.
    let after = drain(&raw, Duration::from_secs(3));
    assert!(
        after.len() <= 1
            && after
                .iter()
                .all(|r| matches!(r.packet, Packet::Data { block: 2, .. })),
        "packets after the client's ERROR: {after:?}"
    );
    server.wait_for_log("failed line", Duration::from_secs(5), |l| {
        l.starts_with("sent f to 127.0.0.1 failed after 512 bytes")
    });
}

#[test]
fn duplicate_acks_do_not_cause_duplicate_data() {
    let dir = ServeDir::new();
    let blocks = 40u16;
    let want = pseudo_random(512 * (usize::from(blocks) - 1) + 100, 53);
    dir.write("f", &want);
    let server = start(&dir, SLOW_TIMER);
    let raw = RawClient::new(server.addr());
    raw.send_request(Opcode::Rrq, b"f", b"octet", &[]);
    let mut seen: Vec<u16> = Vec::new();
    let mut got = Vec::new();
    let mut tid = None;
    // Every DATA is ACKed twice; everything that arrives is recorded.
    while let Some(r) = raw.recv_within(Duration::from_secs(5)) {
        let Packet::Data { block, payload } = r.packet else {
            panic!("unexpected {:?}", r.packet);
        };
        assert_eq!(*tid.get_or_insert(r.from), r.from);
        seen.push(block);
        if seen.iter().filter(|&&b| b == block).count() == 1 {
            got.extend_from_slice(&payload);
        }
        raw.send_ack_to(r.from, block);
        raw.send_ack_to(r.from, block);
        if payload.len() < 512 {
            // Stay a little to catch anything sent after the end.
            let late = drain(&raw, Duration::from_millis(500));
            assert!(late.is_empty(), "sent after the last ACK: {late:?}");
            break;
        }
    }
    let expected: Vec<u16> = (1..=blocks).collect();
    assert_eq!(seen, expected, "DATA blocks received, in order");
    assert!(got == want);
    let line = server.wait_for_log("sent line", Duration::from_secs(5), |l| {
        l.starts_with("sent f to 127.0.0.1: ")
    });
    assert!(line.ends_with(", 0 retransmissions"), "{line}");
}

/// What the server sends to a client that never answers: up to 7 packets (one more than
/// the schedule has) within 15 s, and then, after the 6th, nothing for 4.5 s (the schedule
/// gives up 3.2 s after the 6th send).
fn never_ack(server: &TftpServer, options: &[(&str, &str)]) -> Vec<Received> {
    let raw = RawClient::new(server.addr());
    raw.send_request(Opcode::Rrq, b"f", b"octet", options);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    while got.len() < 6 {
        match raw.recv_within(deadline.saturating_duration_since(Instant::now())) {
            Some(r) => got.push(r),
            None => break,
        }
    }
    if got.len() == 6 {
        got.extend(drain(&raw, Duration::from_millis(4500)));
    }
    got
}

/// `-T 100000`: sends at about 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s. Timers can fire late on a
/// busy machine but never early, so each gap is checked against 80 % of its nominal value
/// (which also proves the doubling), and the whole only loosely from above.
fn assert_doubling_schedule(got: &[Received], first: &Packet) {
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert_eq!(got.len(), 6, "transmissions (gaps {gaps:?}): {got:?}");
    for r in got {
        assert_eq!(&r.packet, first);
        assert_eq!(r.from, got[0].from);
    }
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = Duration::from_millis(100) * (1 << i);
        assert!(
            *gap >= nominal * 8 / 10,
            "gap {i} is {gap:?}, nominal {nominal:?}: {gaps:?}"
        );
    }
    let span = got[5].at - got[0].at;
    assert!(
        span < Duration::from_secs(10),
        "schedule spans {span:?}: {gaps:?}"
    );
}

#[test]
fn retransmission_schedule_doubles_from_t_and_gives_up_after_six_sends() {
    let dir = ServeDir::new();
    let want = pseudo_random(700, 54);
    dir.write("f", &want);
    let server = start(&dir, &["-T", "100000"]);
    let got = never_ack(&server, &[]);
    assert_doubling_schedule(&got, &data(1, &want[..512]));
}

#[test]
fn an_unacknowledged_oack_follows_the_same_schedule() {
    let dir = ServeDir::new();
    dir.write("f", &pseudo_random(700, 55));
    let server = start(&dir, &["-T", "100000"]);
    let got = never_ack(&server, &[("tsize", "0")]);
    assert_doubling_schedule(&got, &Packet::Oack(vec![("tsize".into(), "700".into())]));
}

#[test]
fn a_retransmitted_request_is_served_once() {
    let dir = ServeDir::new();
    let want = pseudo_random(600, 56);
    dir.write("f", &want);
    let server = start(&dir, SLOW_TIMER);
    let raw = RawClient::new(server.addr());
    // The same RRQ twice from the same port, as a client whose first answer was slow.
    raw.send_request(Opcode::Rrq, b"f", b"octet", &[]);
    raw.send_request(Opcode::Rrq, b"f", b"octet", &[]);
    let got = drain(&raw, Duration::from_millis(500));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].packet, data(1, &want[..512]));
    raw.send_ack_to(got[0].from, 1);
    let r = raw.expect_packet(Duration::from_secs(5), "DATA 2");
    assert_eq!(r.packet, data(2, &want[512..]));
    raw.send_ack_to(got[0].from, 2);
}

#[test]
fn block_numbers_roll_over_to_0_by_default_and_to_the_rollover_option() {
    // 65,536 full blocks at blksize 8 is too slow for a raw lock-step client in a debug
    // build; blksize 8 with a window of 64 keeps it quick. 65,537 blocks: 1..=65535, then 0, 1.
    let dir = ServeDir::new();
    let len = 8 * 65_537 - 3;
    let want = pseudo_random(len, 57);
    dir.write("f", &want);
    let server = start(&dir, SLOW_TIMER);
    for (rollover, after) in [(None, 0u16), (Some("1"), 1u16)] {
        let raw = RawClient::new(server.addr());
        let mut options = vec![("blksize", "8"), ("windowsize", "64")];
        if let Some(r) = rollover {
            options.push(("rollover", r));
        }
        let first = raw.request(Opcode::Rrq, b"f", b"octet", &options);
        let Packet::Oack(granted) = &first.packet else {
            panic!("{first:?}")
        };
        assert!(
            granted.contains(&("windowsize".into(), "64".into())),
            "{granted:?}"
        );
        let tid = first.from;
        raw.send_ack_to(tid, 0);
        let mut got = Vec::with_capacity(len);
        let mut seq: u64 = 0;
        let mut blocks_after_65535 = Vec::new();
        'outer: loop {
            // One window: 64 DATA (or fewer at the end), then ACK the last one.
            let mut last = None;
            for _ in 0..64 {
                let r = raw.expect_packet(Duration::from_secs(5), "DATA");
                let Packet::Data { block, payload } = r.packet else {
                    panic!("{:?}", r.packet)
                };
                // This block's 1-based sequence number and what it must be called on the wire.
                seq += 1;
                let wire = if seq <= 65_535 {
                    seq as u16
                } else {
                    (u64::from(after) + (seq - 65_536)) as u16
                };
                assert_eq!(block, wire, "block number of the block with sequence {seq}");
                if seq > 65_535 {
                    blocks_after_65535.push(block);
                }
                got.extend_from_slice(&payload);
                last = Some(block);
                if payload.len() < 8 {
                    raw.send_ack_to(tid, block);
                    break 'outer;
                }
            }
            raw.send_ack_to(tid, last.unwrap());
        }
        assert_eq!(seq, 65_537);
        assert_eq!(
            blocks_after_65535,
            [after, after + 1],
            "rollover {rollover:?}"
        );
        assert!(got == want);
    }
}
