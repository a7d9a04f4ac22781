//! The sending side of a transfer: a server answering an RRQ, or a client that sent a WRQ.
//!
//! Windowed per RFC 7440 (a window of 1 is RFC 1350 lock-step): send up to `windowsize`
//! blocks past the last acknowledged one, then wait. An ACK for the last block sent opens the
//! next window; an ACK for an earlier block of the window means the receiver saw a gap, so
//! sending restarts right after it. A duplicate or stale ACK never causes a retransmission
//! (the Sorcerer's Apprentice rule, RFC 1123 §4.2.3.1): only the timer does, and it resends
//! from the first unacknowledged block. Block numbers past 65535 follow [`Rollover`].
//!
//! The machine never touches the data: it emits [`Transmit::Data`] with an offset and a
//! length, and the shell frames the bytes from wherever they live (a shared memory map).

use std::net::SocketAddr;
use std::time::Instant;

use super::block::Rollover;
use super::client::{Requested, apply_oack};
use super::link::{Fired, Link, Outcome, RetransmitPolicy, Stats, TransferError, Transmit};
use super::packet::{DEFAULT_BLKSIZE, ErrorCode, Mode, OptionListBuf, Packet, data_header};

/// Transfer parameters for a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendConfig {
    /// DATA payload size.
    pub blksize: u16,
    /// Blocks per window (1 = lock-step).
    pub windowsize: u16,
    /// Block numbering after 65535.
    pub rollover: Rollover,
    /// Retransmission schedule.
    pub retransmit: RetransmitPolicy,
}

impl Default for SendConfig {
    fn default() -> Self {
        SendConfig {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            rollover: Rollover::default(),
            retransmit: RetransmitPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Server: OACK sent, waiting for ACK 0.
    AwaitOackAck,
    /// Client: WRQ sent, waiting for ACK 0 or an OACK.
    AwaitRequestAnswer,
    /// Sending DATA.
    Data,
}

/// The sending state machine.
#[derive(Debug)]
pub struct Sender {
    link: Link,
    cfg: SendConfig,
    total_len: u64,
    /// Sequence number of the last block (the short or empty one).
    last_seq: u64,
    /// Highest block acknowledged.
    acked: u64,
    /// Next block to transmit.
    next: u64,
    /// Highest block ever transmitted (to count retransmissions).
    high_water: u64,
    phase: Phase,
    /// The OACK (server) or WRQ (client) to (re)send during the handshake.
    handshake: Vec<u8>,
    handshake_due: bool,
    /// What a client asked for in its WRQ.
    asked: Requested,
}

impl Sender {
    /// A server answering an RRQ from `peer` with `total_len` bytes. With `oack`, the OACK is
    /// sent first and DATA starts once the client acknowledges it with ACK 0.
    pub fn server(
        peer: SocketAddr,
        cfg: SendConfig,
        total_len: u64,
        oack: Option<&OptionListBuf>,
    ) -> Sender {
        let (phase, handshake) = match oack {
            Some(o) if !o.is_empty() => (Phase::AwaitOackAck, Packet::Oack(o.as_list()).to_vec()),
            _ => (Phase::Data, Vec::new()),
        };
        let handshake_due = phase == Phase::AwaitOackAck;
        Self::build(
            Link::new(peer, true, cfg.retransmit),
            cfg,
            total_len,
            phase,
            handshake,
            handshake_due,
        )
    }

    /// A client that sends a WRQ for `filename` asking for `asked`, then `total_len` bytes.
    /// Until the server answers, the RFC 1350 defaults apply; an OACK is checked against
    /// `asked` and refused with ERROR 8 if it grants anything else.
    pub fn client(
        server: SocketAddr,
        filename: &[u8],
        asked: Requested,
        retransmit: RetransmitPolicy,
        total_len: u64,
    ) -> Sender {
        let request = super::client::request(false, filename, Mode::Octet, &asked);
        let cfg = SendConfig {
            retransmit,
            ..SendConfig::default()
        };
        let mut s = Self::build(
            Link::new(server, false, retransmit),
            cfg,
            total_len,
            Phase::AwaitRequestAnswer,
            request,
            true,
        );
        s.asked = asked;
        s
    }

    fn build(
        link: Link,
        cfg: SendConfig,
        total_len: u64,
        phase: Phase,
        handshake: Vec<u8>,
        handshake_due: bool,
    ) -> Sender {
        let mut s = Sender {
            asked: Requested::default(),
            link,
            cfg,
            total_len,
            last_seq: 0,
            acked: 0,
            next: 1,
            high_water: 0,
            phase,
            handshake,
            handshake_due,
        };
        s.set_blksize(cfg.blksize);
        s
    }

    fn set_blksize(&mut self, blksize: u16) {
        let b = u64::from(blksize.max(1));
        self.cfg.blksize = blksize.max(1);
        self.last_seq = self.total_len / b + 1;
    }

    /// Feeds a datagram received on the transfer's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if self.link.is_over() || !self.link.accept_source(from, datagram) {
            return;
        }
        let Ok(packet) = Packet::decode(datagram) else {
            self.link.stats.ignored += 1;
            return;
        };
        match packet {
            Packet::Ack { block } => self.on_ack(now, block),
            Packet::Oack(options) if self.phase == Phase::AwaitRequestAnswer => {
                match apply_oack(options, &self.asked) {
                    Ok(agreed) => {
                        self.cfg.windowsize = agreed.windowsize;
                        self.cfg.rollover = Rollover::to(agreed.rollover);
                        if let Some(t) = agreed.timeout {
                            self.link.set_policy(RetransmitPolicy::tftpd_hpa(t));
                        }
                        self.set_blksize(agreed.blksize);
                        self.start_data();
                    }
                    Err(e) => self
                        .link
                        .abort(ErrorCode::OptionNegotiation, &e.to_string()),
                }
            }
            Packet::Error { code, message } => {
                self.link.finish(Outcome::Failed(TransferError::Peer {
                    code,
                    message: String::from_utf8_lossy(message).into_owned(),
                    refused_options: self.phase == Phase::AwaitOackAck,
                }));
            }
            _ => self.link.stats.ignored += 1,
        }
    }

    fn start_data(&mut self) {
        self.phase = Phase::Data;
        self.handshake_due = false;
        self.link.progress();
        self.link.disarm();
    }

    fn on_ack(&mut self, _now: Instant, block: u16) {
        match self.phase {
            Phase::AwaitOackAck if block == 0 => self.start_data(),
            Phase::AwaitRequestAnswer if block == 0 => {
                // The server ignored our options: RFC 1350 defaults.
                self.cfg.windowsize = 1;
                self.cfg.rollover = Rollover::default();
                self.set_blksize(DEFAULT_BLKSIZE);
                self.start_data();
            }
            Phase::Data => {
                let sent_top = self.next - 1;
                match self.cfg.rollover.seq_in(block, self.acked + 1, sent_top) {
                    Some(seq) => {
                        self.link.stats.bytes += self.bytes_between(self.acked, seq);
                        self.acked = seq;
                        self.link.progress();
                        self.link.disarm();
                        if seq == self.last_seq {
                            self.link.finish(Outcome::Complete);
                        } else if seq < sent_top {
                            // The receiver reported a gap: go back to the block after it.
                            self.next = seq + 1;
                        }
                    }
                    None => self.link.stats.duplicates += 1,
                }
            }
            _ => self.link.stats.duplicates += 1,
        }
    }

    fn bytes_between(&self, from_seq: u64, to_seq: u64) -> u64 {
        let b = u64::from(self.cfg.blksize);
        let end = (to_seq * b).min(self.total_len);
        let start = (from_seq * b).min(self.total_len);
        end - start
    }

    /// Feeds the passage of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.link.is_over() {
            return;
        }
        match self.link.fire(now) {
            Fired::NotYet => {}
            Fired::GiveUp => {
                let timeouts = self.link.stats.timeouts;
                self.link
                    .finish(Outcome::Failed(TransferError::TimedOut { timeouts }));
            }
            Fired::Retransmit => match self.phase {
                Phase::AwaitOackAck | Phase::AwaitRequestAnswer => self.handshake_due = true,
                Phase::Data => self.next = self.acked + 1,
            },
        }
    }

    /// The next datagram to send, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if self.link.has_control() {
            return self.link.poll_control();
        }
        if self.link.is_over() {
            return None;
        }
        if self.handshake_due {
            self.handshake_due = false;
            self.link.arm(now);
            return Some(Transmit::Packet {
                dest: self.link.peer,
                bytes: &self.handshake,
            });
        }
        if self.phase != Phase::Data {
            return None;
        }
        let window_end = self.acked + u64::from(self.cfg.windowsize.max(1));
        if self.next > self.last_seq || self.next > window_end {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let b = u64::from(self.cfg.blksize);
        let offset = (seq - 1) * b;
        let len = self.total_len.saturating_sub(offset).min(b) as usize;
        self.link.stats.blocks += 1;
        if seq <= self.high_water {
            self.link.stats.retransmitted += 1;
        } else {
            self.high_water = seq;
        }
        self.link.arm(now);
        Some(Transmit::Data {
            dest: self.link.peer,
            header: data_header(self.cfg.rollover.wire(seq)),
            offset,
            len,
        })
    }

    /// When [`Sender::handle_timeout`] next wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.link.is_over() {
            None
        } else {
            self.link.deadline()
        }
    }

    /// Ends the transfer with an ERROR to the peer (e.g. the file could not be read).
    pub fn abort(&mut self, code: ErrorCode, message: &str) {
        self.link.abort(code, message);
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.link.outcome.as_ref()
    }

    /// True when nothing remains to send or wait for.
    pub fn is_finished(&self) -> bool {
        self.link.is_over() && !self.link.has_control()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.link.stats
    }

    /// The parameters in force (after any OACK).
    pub fn config(&self) -> SendConfig {
        let mut c = self.cfg;
        c.retransmit = self.link.policy();
        c
    }

    /// The peer's address (its transfer ID once known).
    pub fn peer(&self) -> SocketAddr {
        self.link.peer
    }
}
