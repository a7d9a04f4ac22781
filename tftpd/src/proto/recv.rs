//! The receiving side of a transfer: a server accepting a WRQ, or a client that sent an RRQ.
//!
//! Data is delivered strictly in order. With a window (RFC 7440) the receiver acknowledges
//! the last block of each window; when a block arrives past a gap it acknowledges the last
//! good block once, so the sender restarts from there. A repeat of the last block received
//! means our ACK was lost, and it is acknowledged again. The final (short) block completes
//! the transfer; the receiver then lingers one timeout to re-acknowledge a repeated final
//! block, as tftpd-hpa does.
//!
//! A client that did not negotiate `rollover` accepts either convention at the first wrap
//! (0 or 1 after 65535) in lock-step mode, where the two cannot be confused.

use std::net::SocketAddr;
use std::time::Instant;

use super::block::Rollover;
use super::client::{Agreed, Requested, apply_oack};
use super::link::{Fired, Link, Outcome, RetransmitPolicy, Stats, TransferError, Transmit};
use super::packet::{DEFAULT_BLKSIZE, ErrorCode, Mode, OptionListBuf, Packet, ack};

/// Transfer parameters for a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvConfig {
    /// DATA payload size.
    pub blksize: u16,
    /// Blocks per window (1 = lock-step).
    pub windowsize: u16,
    /// Block numbering after 65535.
    pub rollover: Rollover,
    /// Retransmission schedule.
    pub retransmit: RetransmitPolicy,
}

impl Default for RecvConfig {
    fn default() -> Self {
        RecvConfig {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            rollover: Rollover::default(),
            retransmit: RetransmitPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Client: RRQ sent, waiting for an OACK or DATA 1.
    AwaitRequestAnswer,
    /// Receiving DATA (server: after sending its OACK or ACK 0).
    Data,
}

/// The receiving state machine.
#[derive(Debug)]
pub struct Receiver {
    link: Link,
    cfg: RecvConfig,
    phase: Phase,
    /// Highest block received in order.
    received: u64,
    /// Blocks received since the last ACK we sent.
    since_ack: u16,
    /// A gap was already reported with an ACK since the last progress.
    gap_reported: bool,
    /// The handshake packet (server: OACK or ACK 0; client: RRQ) and whether it is due.
    handshake: Vec<u8>,
    handshake_due: bool,
    ack: [u8; 4],
    ack_due: bool,
    /// An ACK has replaced the handshake as the packet to repeat on timeout.
    ack_sent: bool,
    /// After the final block: re-acknowledge repeats until then.
    linger_until: Option<Instant>,
    /// Client only: what the RRQ asked for, and what the server agreed to.
    asked: Requested,
    agreed: Agreed,
    /// The rollover convention is still open (client, not negotiated, lock-step).
    rollover_open: bool,
}

impl Receiver {
    /// A server accepting a WRQ from `peer`; answers with `oack` (acting as ACK 0) when it is
    /// non-empty, else with ACK 0.
    pub fn server(peer: SocketAddr, cfg: RecvConfig, oack: Option<&OptionListBuf>) -> Receiver {
        let handshake = match oack {
            Some(o) if !o.is_empty() => Packet::Oack(o.as_list()).to_vec(),
            _ => ack(0).to_vec(),
        };
        let mut r = Self::build(Link::new(peer, true, cfg.retransmit), cfg, handshake);
        r.phase = Phase::Data;
        r
    }

    /// A client sending an RRQ for `filename` to `server`, asking for `asked`.
    pub fn client(
        server: SocketAddr,
        filename: &[u8],
        mode: Mode,
        asked: Requested,
        retransmit: RetransmitPolicy,
    ) -> Receiver {
        let request = super::client::request(true, filename, mode, &asked);
        let cfg = RecvConfig {
            retransmit,
            ..RecvConfig::default()
        };
        let mut r = Self::build(Link::new(server, false, retransmit), cfg, request);
        r.asked = asked;
        r.rollover_open = asked.rollover.is_none();
        r
    }

    fn build(link: Link, cfg: RecvConfig, handshake: Vec<u8>) -> Receiver {
        Receiver {
            link,
            cfg,
            phase: Phase::AwaitRequestAnswer,
            received: 0,
            since_ack: 0,
            gap_reported: false,
            handshake,
            handshake_due: true,
            ack: ack(0),
            ack_due: false,
            ack_sent: false,
            linger_until: None,
            asked: Requested::default(),
            agreed: Agreed::DEFAULTS,
            rollover_open: false,
        }
    }

    /// Feeds a datagram; returns the payload to append to the file when it is the next block.
    pub fn handle_datagram<'b>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'b [u8],
    ) -> Option<&'b [u8]> {
        let lingering = self.linger_until.is_some();
        if (self.link.is_over() && !lingering) || !self.link.accept_source(from, datagram) {
            return None;
        }
        let Ok(packet) = Packet::decode(datagram) else {
            self.link.stats.ignored += 1;
            return None;
        };
        match packet {
            Packet::Data { block, data } => self.on_data(now, block, data),
            Packet::Oack(options) if self.phase == Phase::AwaitRequestAnswer => {
                match apply_oack(options, &self.asked) {
                    Ok(agreed) => {
                        self.adopt(agreed);
                        self.phase = Phase::Data;
                        self.handshake_due = false;
                        self.link.progress();
                        self.send_ack(now, 0);
                    }
                    Err(e) => self
                        .link
                        .abort(ErrorCode::OptionNegotiation, &e.to_string()),
                }
                None
            }
            Packet::Error { code, message } if !lingering => {
                self.link.finish(Outcome::Failed(TransferError::Peer {
                    code,
                    message: String::from_utf8_lossy(message).into_owned(),
                    refused_options: false,
                }));
                None
            }
            _ => {
                self.link.stats.ignored += 1;
                None
            }
        }
    }

    fn adopt(&mut self, agreed: Agreed) {
        self.agreed = agreed;
        self.cfg.blksize = agreed.blksize;
        self.cfg.windowsize = agreed.windowsize;
        self.cfg.rollover = Rollover::to(agreed.rollover);
        if self.asked.rollover.is_some() || agreed.windowsize > 1 {
            self.rollover_open = false;
        }
        if let Some(t) = agreed.timeout {
            self.link.set_policy(RetransmitPolicy::tftpd_hpa(t));
        }
    }

    fn on_data<'b>(&mut self, now: Instant, block: u16, data: &'b [u8]) -> Option<&'b [u8]> {
        if self.phase == Phase::AwaitRequestAnswer {
            // No OACK: the server ignored our options, RFC 1350 defaults apply.
            self.adopt(Agreed::DEFAULTS);
            self.phase = Phase::Data;
            self.handshake_due = false;
        }
        let expected = self.received + 1;
        let mut matches = self.cfg.rollover.wire(expected) == block;
        if !matches && self.rollover_open && expected == 65536 && (block == 0 || block == 1) {
            self.cfg.rollover = Rollover::to(block);
            matches = true;
        }
        if matches && self.linger_until.is_none() {
            if expected > 65536 {
                self.rollover_open = false;
            }
            if data.len() > usize::from(self.cfg.blksize) {
                self.link
                    .abort(ErrorCode::IllegalOperation, "Block larger than blksize");
                return None;
            }
            self.received = expected;
            self.since_ack += 1;
            self.gap_reported = false;
            self.link.stats.blocks += 1;
            self.link.stats.bytes += data.len() as u64;
            self.link.progress();
            if data.len() < usize::from(self.cfg.blksize) {
                self.send_ack(now, self.received);
                self.link.finish(Outcome::Complete);
                self.linger_until = Some(now + self.link.current_timeout());
            } else if self.since_ack >= self.cfg.windowsize.max(1) {
                self.send_ack(now, self.received);
            } else {
                self.link.arm(now);
            }
            return Some(data);
        }
        self.link.stats.duplicates += 1;
        if block == self.cfg.rollover.wire(self.received) {
            // A repeat of the newest block. Once acknowledged, it means our ACK was lost and
            // the sender repeated it: acknowledge it again. Mid-window it was never
            // acknowledged, so it is a network duplicate; an ACK now would read as a gap
            // report and make the sender resend the rest of the window.
            if self.since_ack == 0 {
                self.link.stats.retransmitted += 1;
                self.send_ack(now, self.received);
            }
        } else if !self.gap_reported
            && self.linger_until.is_none()
            && self
                .cfg
                .rollover
                .seq_in(
                    block,
                    expected + 1,
                    expected + u64::from(self.cfg.windowsize),
                )
                .is_some()
        {
            // A block past a gap: tell the sender where to restart (RFC 7440 §4).
            self.gap_reported = true;
            self.send_ack(now, self.received);
        }
        None
    }

    fn send_ack(&mut self, now: Instant, seq: u64) {
        self.ack = ack(self.cfg.rollover.wire(seq));
        self.ack_due = true;
        self.ack_sent = true;
        self.since_ack = 0;
        if self.linger_until.is_none() {
            self.link.arm(now);
        }
    }

    /// Feeds the passage of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(until) = self.linger_until {
            if now >= until {
                self.linger_until = None;
            }
            return;
        }
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
            Fired::Retransmit => {
                // Repeat whatever we sent last: the handshake, or the latest ACK.
                if self.ack_sent {
                    self.link.stats.retransmitted += 1;
                    self.ack_due = true;
                } else {
                    self.handshake_due = true;
                }
                self.link.arm(now);
            }
        }
    }

    /// The next datagram to send, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if self.link.has_control() {
            return self.link.poll_control();
        }
        if self.link.is_over() && self.linger_until.is_none() && !self.ack_due {
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
        if self.ack_due {
            self.ack_due = false;
            return Some(Transmit::Packet {
                dest: self.link.peer,
                bytes: &self.ack,
            });
        }
        None
    }

    /// When [`Receiver::handle_timeout`] next wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.linger_until.or(if self.link.is_over() {
            None
        } else {
            self.link.deadline()
        })
    }

    /// Ends the transfer with an ERROR to the peer (e.g. the disk is full, or the upload
    /// could not be committed). Also valid right after the final block was delivered: the
    /// final ACK is then withheld, so the client learns of the failure.
    pub fn abort(&mut self, code: ErrorCode, message: &str) {
        // An ACK still waiting to go out must not: the peer would take it for success.
        self.ack_due = false;
        self.handshake_due = false;
        self.linger_until = None;
        self.link.abort(code, message);
    }

    /// How the transfer ended, once it has. `Complete` arrives with the final block, while
    /// the machine still lingers to re-acknowledge repeats.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.link.outcome.as_ref()
    }

    /// True when nothing remains to send or wait for.
    pub fn is_finished(&self) -> bool {
        self.link.is_over()
            && self.linger_until.is_none()
            && !self.ack_due
            && !self.link.has_control()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.link.stats
    }

    /// The parameters in force.
    pub fn config(&self) -> RecvConfig {
        let mut c = self.cfg;
        c.retransmit = self.link.policy();
        c
    }

    /// Client: whether the server has answered the request (with an OACK or the first DATA).
    pub fn answered(&self) -> bool {
        self.phase != Phase::AwaitRequestAnswer
    }

    /// Client: what the server agreed to (RFC 1350 defaults until an OACK arrives).
    pub fn agreed(&self) -> Agreed {
        self.agreed
    }

    /// The peer's address (its transfer ID once known).
    pub fn peer(&self) -> SocketAddr {
        self.link.peer
    }
}
