//! "No heap allocation per DATA block": a lock-step and a windowed transfer driven through
//! the sans-IO core exactly as the server's shell drives it (one reused frame buffer, one
//! reused receive buffer) must not allocate at all once the transfer is under way.
//!
//! A counting global allocator sees every allocation in this test binary, so the test
//! runs single-threaded (one `#[test]` here) to keep other threads out of the count.

#![allow(clippy::unwrap_used)]

use airlift_tests::{CountingAllocator, allocations};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tftpd::proto::client::Requested;
use tftpd::proto::packet::Mode;
use tftpd::proto::{Outcome, Receiver, RetransmitPolicy, Rollover, SendConfig, Sender, Transmit};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs a whole transfer; returns allocations counted after the first `warmup` blocks.
fn transfer(blksize: u16, windowsize: u16, blocks: u64, warmup: u64) -> u64 {
    let server: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let len = u64::from(blksize) * blocks + 7;
    let file: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let policy = RetransmitPolicy::tftpd_hpa(Duration::from_secs(1));
    let asked = Requested {
        blksize: Some(blksize),
        windowsize: Some(windowsize),
        ..Default::default()
    };
    let mut rx = Receiver::client(server, b"ap1g8", Mode::Octet, asked, policy);
    // The server's side of negotiation, done by hand: OACK with what was asked.
    let mut oack = tftpd::proto::packet::OptionListBuf::new();
    oack.push(b"blksize", blksize.to_string().as_bytes());
    oack.push(b"windowsize", windowsize.to_string().as_bytes());
    let cfg = SendConfig {
        blksize,
        windowsize,
        rollover: Rollover::default(),
        retransmit: policy,
    };
    let mut tx = Sender::server(client, cfg, len, Some(&oack));
    let now = Instant::now();
    // The client's RRQ goes to the listener, not to the sender.
    while rx.poll_transmit(now).is_some() {}

    let mut frame = vec![0u8; 4 + usize::from(blksize)];
    let mut in_flight: Vec<(usize, [u8; 4])> = Vec::with_capacity(usize::from(windowsize) + 2);
    let mut from_client = [0u8; 16];
    let mut received = 0u64;
    let mut before = None;
    let mut delivered = 0u64;
    loop {
        // Server → client: frame each DATA into the one buffer and deliver it at once.
        in_flight.clear();
        while let Some(t) = tx.poll_transmit(now) {
            match t {
                Transmit::Data {
                    header,
                    offset,
                    len,
                    ..
                } => {
                    let o = offset as usize;
                    frame[..4].copy_from_slice(&header);
                    frame[4..4 + len].copy_from_slice(&file[o..o + len]);
                    if let Some(d) = rx.handle_datagram(now, server, &frame[..4 + len]) {
                        delivered += d.len() as u64;
                        received += 1;
                    }
                }
                Transmit::Packet { bytes, .. } => {
                    let n = bytes.len();
                    frame[..n].copy_from_slice(bytes);
                    rx.handle_datagram(now, server, &frame[..n]);
                }
            }
        }
        // Client → server: ACKs.
        while let Some(t) = rx.poll_transmit(now) {
            if let Transmit::Packet { bytes, .. } = t {
                let n = bytes.len();
                from_client[..n].copy_from_slice(bytes);
                tx.handle_datagram(now, client, &from_client[..n]);
            }
        }
        if before.is_none() && received >= warmup {
            before = Some(allocations());
        }
        if tx.is_finished() {
            break;
        }
    }
    assert_eq!(tx.outcome(), Some(&Outcome::Complete));
    assert_eq!(rx.outcome(), Some(&Outcome::Complete));
    assert_eq!(delivered, len);
    allocations() - before.unwrap()
}

#[test]
fn steady_state_transfers_do_not_allocate() {
    // Past 65535 blocks too, so rollover is on the measured path.
    assert_eq!(transfer(512, 1, 70_000, 10), 0, "lock-step");
    assert_eq!(transfer(1468, 32, 20_000, 64), 0, "windowed");
    // The counter itself works (this test can fail).
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > before);
    drop(v);
}
