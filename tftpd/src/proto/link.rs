//! What the sending and receiving state machines share: the peer's transfer ID, the
//! retransmission timer, a small queue of control packets, statistics and the outcome.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::{ErrorCode, Packet};

/// tftpd-hpa gives up once it has waited 63 × the base timeout without progress: with the
/// default 1 s that is transmissions at 0, 1, 3, 7, 15 and 31 s and silence at 63 s.
pub const GIVE_UP_FACTOR: u32 = 63;

/// The retransmission schedule: start at `initial`, double after every timeout, give up when
/// the time waited since the last progress reaches `give_up_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// The first timeout (tftpd-hpa's `-T`, or the client's `timeout`/`utimeout`).
    pub initial: Duration,
    /// Total silence after which the transfer is abandoned.
    pub give_up_after: Duration,
}

impl RetransmitPolicy {
    /// tftpd-hpa's schedule for a base timeout.
    pub fn tftpd_hpa(initial: Duration) -> Self {
        RetransmitPolicy {
            initial,
            give_up_after: initial.saturating_mul(GIVE_UP_FACTOR),
        }
    }
}

impl Default for RetransmitPolicy {
    fn default() -> Self {
        Self::tftpd_hpa(Duration::from_secs(1))
    }
}

/// Why a transfer ended without completing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The peer fell silent for the whole retransmission schedule.
    #[error("timed out after {timeouts} retransmissions")]
    TimedOut {
        /// How many times the timer fired.
        timeouts: u32,
    },
    /// The peer sent an ERROR packet.
    #[error("peer sent error {}: {message}", code.code())]
    Peer {
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's message (lossy UTF-8).
        message: String,
        /// True when the ERROR answered our OACK: the peer refused the options.
        refused_options: bool,
    },
    /// We stopped the transfer and sent the peer this ERROR.
    #[error("aborted with error {}: {message}", code.code())]
    Aborted {
        /// The error code sent.
        code: ErrorCode,
        /// The message sent.
        message: String,
    },
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte was delivered and acknowledged.
    Complete,
    /// The transfer failed.
    Failed(TransferError),
}

/// Counters for the end-of-transfer log line and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payload bytes delivered (receiver) or acknowledged (sender).
    pub bytes: u64,
    /// DATA packets transmitted (sender) or accepted (receiver).
    pub blocks: u64,
    /// Timer expiries that led to a retransmission.
    pub timeouts: u32,
    /// DATA blocks (or ACKs) sent more than once.
    pub retransmitted: u64,
    /// ACKs (sender) or DATA (receiver) that were duplicates or out of window.
    pub duplicates: u64,
    /// Datagrams from other transfer IDs, answered with ERROR 5.
    pub strangers: u64,
    /// Datagrams from the peer that did not decode or made no sense here; ignored.
    pub ignored: u64,
}

/// A datagram the shell must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// A DATA packet: `header`, then `len` bytes of the source starting at `offset`.
    Data {
        /// Where to send it.
        dest: SocketAddr,
        /// Opcode and wire block number.
        header: [u8; 4],
        /// Offset of the payload in the source.
        offset: u64,
        /// Payload length (0 for the final empty block).
        len: usize,
    },
    /// A packet encoded by the state machine.
    Packet {
        /// Where to send it.
        dest: SocketAddr,
        /// The datagram.
        bytes: &'a [u8],
    },
}

/// At most this many ERROR 5 answers wait to be sent; beyond that strangers are only counted,
/// so a flood of foreign datagrams cannot grow memory.
const MAX_QUEUED_CONTROL: usize = 8;

/// The shared half of a transfer.
#[derive(Debug)]
pub(crate) struct Link {
    /// The peer's address once known; a client learns the server's TID from its first reply.
    pub peer: SocketAddr,
    pub peer_locked: bool,
    policy: RetransmitPolicy,
    current: Duration,
    waited: Duration,
    deadline: Option<Instant>,
    control: VecDeque<(SocketAddr, Vec<u8>)>,
    sending: Option<(SocketAddr, Vec<u8>)>,
    pub outcome: Option<Outcome>,
    pub stats: Stats,
}

/// What the timer said.
pub(crate) enum Fired {
    NotYet,
    Retransmit,
    GiveUp,
}

impl Link {
    pub fn new(peer: SocketAddr, peer_locked: bool, policy: RetransmitPolicy) -> Link {
        Link {
            peer,
            peer_locked,
            policy,
            current: policy.initial,
            waited: Duration::ZERO,
            deadline: None,
            control: VecDeque::new(),
            sending: None,
            outcome: None,
            stats: Stats::default(),
        }
    }

    pub fn set_policy(&mut self, policy: RetransmitPolicy) {
        self.policy = policy;
        self.current = policy.initial;
        self.waited = Duration::ZERO;
    }

    pub fn policy(&self) -> RetransmitPolicy {
        self.policy
    }

    /// Checks the source of a datagram. A stranger gets ERROR 5 (unless it sent an ERROR
    /// itself: errors are never answered) and the transfer is not disturbed.
    pub fn accept_source(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        if from == self.peer {
            return true;
        }
        if !self.peer_locked && from.ip() == self.peer.ip() {
            self.peer = from;
            self.peer_locked = true;
            return true;
        }
        self.stats.strangers += 1;
        let is_error = datagram.get(..2) == Some(&[0, 5][..]);
        if !is_error && self.control.len() < MAX_QUEUED_CONTROL {
            let code = ErrorCode::UnknownTransferId;
            let pkt = Packet::Error {
                code,
                message: code.default_message().as_bytes(),
            };
            self.control.push_back((from, pkt.to_vec()));
        }
        false
    }

    /// Queues an ERROR to the peer and ends the transfer.
    /// Also overrides a `Complete` outcome (a receiver that got every byte but could not
    /// commit them); a transfer that already failed stays failed as it was.
    pub fn abort(&mut self, code: ErrorCode, message: &str) {
        if matches!(self.outcome, Some(Outcome::Failed(_))) {
            return;
        }
        let pkt = Packet::Error {
            code,
            message: message.as_bytes(),
        };
        self.control.push_back((self.peer, pkt.to_vec()));
        self.outcome = Some(Outcome::Failed(TransferError::Aborted {
            code,
            message: message.to_owned(),
        }));
        self.deadline = None;
    }

    pub fn finish(&mut self, outcome: Outcome) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
        self.deadline = None;
    }

    pub fn is_over(&self) -> bool {
        self.outcome.is_some()
    }

    /// Progress was made: the schedule starts again from the beginning.
    pub fn progress(&mut self) {
        self.current = self.policy.initial;
        self.waited = Duration::ZERO;
    }

    /// Something was sent that expects an answer: (re)arm the timer.
    pub fn arm(&mut self, now: Instant) {
        self.deadline = Some(now + self.current);
    }

    pub fn disarm(&mut self) {
        self.deadline = None;
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Timer check: doubles the timeout, or says to give up once the schedule is spent.
    pub fn fire(&mut self, now: Instant) -> Fired {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return Fired::NotYet,
        }
        self.deadline = None;
        self.waited += self.current;
        if self.waited >= self.policy.give_up_after {
            return Fired::GiveUp;
        }
        self.current = self.current.saturating_mul(2);
        self.stats.timeouts += 1;
        Fired::Retransmit
    }

    /// Current timeout (for lingering after the last ACK).
    pub fn current_timeout(&self) -> Duration {
        self.current
    }

    /// Pops the next control packet into the sending slot and lends it out.
    pub fn poll_control(&mut self) -> Option<Transmit<'_>> {
        self.sending = self.control.pop_front();
        self.sending
            .as_ref()
            .map(|(dest, bytes)| Transmit::Packet { dest: *dest, bytes })
    }

    pub fn has_control(&self) -> bool {
        !self.control.is_empty()
    }
}
