//! Reliable request/response (RFC 5415 §4.5.3), sans-IO: time is a parameter, and the
//! machines handle encoded datagrams and sequence numbers, never message contents.
//!
//! - [`Requester`]: one outstanding request per side. The request's datagrams (one, or the
//!   fragments of a large message) are stored and retransmitted byte for byte after
//!   RetransmitInterval, the interval doubling each time; after MaxRetransmit
//!   retransmissions go unanswered the peer is dead ([`PeerDead`]). A response with the
//!   outstanding sequence number completes the request; any other is a duplicate or a late
//!   answer and is ignored.
//! - [`Responder`]: hands each new request up once, caches the response to the latest one
//!   and resends it when that request arrives again, and ignores older requests (the
//!   mod-256 comparison of [`seq_is_older`]).
//!
//! With the defaults (3 s, 5 retransmissions) an unanswered request goes out at 0, 3, 9, 21,
//! 45 and 93 s — waits of 3, 6, 12, 24 and 48 s — and the peer is declared dead 96 s after
//! the last retransmission, at 189 s.
//!
//! Both machines reuse their buffers, so steady-state operation does not allocate.

use std::time::{Duration, Instant};

/// RetransmitInterval default (§4.7.12).
pub const DEFAULT_RETRANSMIT_INTERVAL: Duration = Duration::from_secs(3);
/// MaxRetransmit default (§4.8.7).
pub const DEFAULT_MAX_RETRANSMIT: u32 = 5;

/// True when sequence number `s1` is older than `s2` (§4.5.3): `s1 < s2` and `s2 − s1 < 128`,
/// or `s1 > s2` and `s1 − s2 > 128`. Numbers exactly 128 apart are neither older nor newer.
pub fn seq_is_older(s1: u8, s2: u8) -> bool {
    (s1 < s2 && s2 - s1 < 128) || (s1 > s2 && s1 - s2 > 128)
}

/// The retransmission timers. Defaults: 3 s, 5 retransmissions, no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// RetransmitInterval: the wait before the first retransmission; doubled after each.
    pub interval: Duration,
    /// MaxRetransmit: retransmissions before the peer is declared dead.
    pub max_retransmit: u32,
    /// An upper bound on the doubled interval. RFC 5415 §4.7.12 says the interval grows
    /// "no more than half the EchoInterval"; set this to EchoInterval / 2 (15 s by default)
    /// to follow it. `None` keeps doubling.
    pub max_interval: Option<Duration>,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        RetransmitConfig {
            interval: DEFAULT_RETRANSMIT_INTERVAL,
            max_retransmit: DEFAULT_MAX_RETRANSMIT,
            max_interval: None,
        }
    }
}

/// Intervals never grow past a day, so `now + interval` cannot overflow however the timers
/// are configured.
const INTERVAL_CEILING: Duration = Duration::from_secs(86_400);

impl RetransmitConfig {
    fn cap(&self, d: Duration) -> Duration {
        self.max_interval
            .map_or(d, |m| d.min(m))
            .min(INTERVAL_CEILING)
    }
}

/// One or more datagrams stored back to back, in buffers that are reused.
#[derive(Debug, Default)]
struct Datagrams {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Datagrams {
    fn replace<'d>(&mut self, datagrams: impl IntoIterator<Item = &'d [u8]>) {
        self.bytes.clear();
        self.ends.clear();
        for d in datagrams {
            self.bytes.extend_from_slice(d);
            self.ends.push(self.bytes.len());
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)?,
            None => 0,
        };
        self.bytes.get(start..end)
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A request is outstanding: §4.5.3 allows one per side.
    #[error("request {seq} is still outstanding")]
    Busy {
        /// Its sequence number.
        seq: u8,
    },
    /// No datagram was given.
    #[error("a request needs at least one datagram")]
    Empty,
}

/// A request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Its sequence number.
    pub seq: u8,
    /// How many times it was retransmitted.
    pub retransmissions: u32,
    /// Time from sending to the response, when the request was never retransmitted (after a
    /// retransmission it is unknown which copy was answered).
    pub rtt: Option<Duration>,
}

/// MaxRetransmit retransmissions went unanswered: the peer is dead (§4.5.3); the CAPWAP
/// session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerDead {
    /// The unanswered request's sequence number.
    pub seq: u8,
    /// Retransmissions made.
    pub retransmissions: u32,
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequesterStats {
    /// Requests sent.
    pub requests: u64,
    /// Retransmissions (of whole requests, not datagrams).
    pub retransmissions: u64,
    /// Responses that matched no outstanding request.
    pub ignored_responses: u64,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    seq: u8,
    sent_at: Instant,
    deadline: Instant,
    interval: Duration,
    retransmissions: u32,
}

/// The requesting side of §4.5.3.
///
/// ```text
/// let seq = r.next_seq();                  // encode the request with it
/// r.send(now, &bytes)?;
/// loop {
///     while let Some(d) = r.poll_transmit() { socket.send(d) }
///     select { response(seq) => r.handle_response(now, seq),
///              sleep_until(r.poll_timeout()) => r.handle_timeout(now) }
/// }
/// ```
#[derive(Debug)]
pub struct Requester {
    config: RetransmitConfig,
    next_seq: u8,
    outstanding: Option<Outstanding>,
    datagrams: Datagrams,
    /// Index of the next datagram to hand out; `datagrams.len()` when none is due.
    cursor: usize,
    stats: RequesterStats,
}

impl Requester {
    /// A requester whose first request will carry `first_seq`.
    pub fn new(config: RetransmitConfig, first_seq: u8) -> Requester {
        Requester {
            config,
            next_seq: first_seq,
            outstanding: None,
            datagrams: Datagrams::default(),
            cursor: 0,
            stats: RequesterStats::default(),
        }
    }

    /// The sequence number the next request must carry.
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// The outstanding request's sequence number.
    pub fn outstanding(&self) -> Option<u8> {
        self.outstanding.map(|o| o.seq)
    }

    /// True when a new request may be sent.
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_none()
    }

    /// Counters.
    pub fn stats(&self) -> RequesterStats {
        self.stats
    }

    /// Sends a request encoded with [`Requester::next_seq`] in one datagram; returns that
    /// sequence number.
    pub fn send(&mut self, now: Instant, datagram: &[u8]) -> Result<u8, SendError> {
        self.send_fragments(now, [datagram])
    }

    /// Sends a request as several datagrams (the fragments of one message), all
    /// retransmitted together.
    pub fn send_fragments<'d>(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = &'d [u8]>,
    ) -> Result<u8, SendError> {
        if let Some(o) = self.outstanding {
            return Err(SendError::Busy { seq: o.seq });
        }
        self.datagrams.replace(datagrams);
        if self.datagrams.len() == 0 {
            return Err(SendError::Empty);
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let interval = self.config.cap(self.config.interval);
        self.outstanding = Some(Outstanding {
            seq,
            sent_at: now,
            deadline: now + interval,
            interval,
            retransmissions: 0,
        });
        self.cursor = 0;
        self.stats.requests += 1;
        Ok(seq)
    }

    /// Whether [`Requester::poll_transmit`] has a datagram now (lets a caller with several
    /// sources choose without holding a borrow).
    pub fn has_transmit(&self) -> bool {
        self.outstanding.is_some() && self.cursor < self.datagrams.len()
    }

    /// The next datagram to put on the wire, if one is due.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        self.outstanding?;
        let d = self.datagrams.get(self.cursor)?;
        self.cursor += 1;
        Some(d)
    }

    /// When [`Requester::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding.map(|o| o.deadline)
    }

    /// Retransmits the request whose timer has run out, or gives up on the peer.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<PeerDead> {
        let o = self.outstanding.as_mut()?;
        if now < o.deadline {
            return None;
        }
        if o.retransmissions >= self.config.max_retransmit {
            let dead = PeerDead {
                seq: o.seq,
                retransmissions: o.retransmissions,
            };
            self.outstanding = None;
            return Some(dead);
        }
        o.retransmissions += 1;
        o.interval = self.config.cap(o.interval.saturating_mul(2));
        o.deadline = now + o.interval;
        self.cursor = 0;
        self.stats.retransmissions += 1;
        None
    }

    /// A response with sequence number `seq` arrived at `now`. Completes the outstanding
    /// request when the numbers match; otherwise it is a duplicate or late response, counted
    /// and ignored. (Checking that the response's type answers the request is the caller's.)
    pub fn handle_response(&mut self, now: Instant, seq: u8) -> Option<Completed> {
        match self.outstanding {
            Some(o) if o.seq == seq => {
                self.outstanding = None;
                Some(Completed {
                    seq,
                    retransmissions: o.retransmissions,
                    rtt: (o.retransmissions == 0).then(|| now.saturating_duration_since(o.sent_at)),
                })
            }
            _ => {
                self.stats.ignored_responses += 1;
                None
            }
        }
    }

    /// Abandons the outstanding request (the session is going away).
    pub fn cancel(&mut self) {
        self.outstanding = None;
    }
}

/// What to do with an arriving request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDisposition {
    /// A new request: process it and [`Responder::respond`].
    New,
    /// The latest request again: its cached response is queued for resending.
    Duplicate,
    /// The latest request again, not yet answered: ignore it.
    InProgress,
    /// An older request: ignore it.
    Old,
}

/// Why a response was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// The sequence number is not the latest request's.
    #[error("request {seq} is not the latest one ({latest:?})")]
    NotLatest {
        /// The sequence number given.
        seq: u8,
        /// The latest request's.
        latest: Option<u8>,
    },
    /// The latest request was already answered.
    #[error("request {seq} was already answered")]
    AlreadyAnswered {
        /// Its sequence number.
        seq: u8,
    },
    /// No datagram was given.
    #[error("a response needs at least one datagram")]
    Empty,
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// New requests handed up.
    pub requests: u64,
    /// Responses sent again from the cache: to duplicates, and unasked ([`Responder::resend`]).
    pub resent: u64,
    /// Duplicates of an unanswered request, and older requests, ignored.
    pub ignored: u64,
}

/// The responding side of §4.5.3.
#[derive(Debug, Default)]
pub struct Responder {
    latest: Option<u8>,
    answered: bool,
    datagrams: Datagrams,
    cursor: usize,
    stats: ResponderStats,
}

impl Responder {
    /// A responder that has seen no request.
    pub fn new() -> Responder {
        Responder::default()
    }

    /// The latest request's sequence number.
    pub fn latest(&self) -> Option<u8> {
        self.latest
    }

    /// Counters.
    pub fn stats(&self) -> ResponderStats {
        self.stats
    }

    /// Classifies a request with sequence number `seq`.
    pub fn handle_request(&mut self, seq: u8) -> RequestDisposition {
        match self.latest {
            Some(latest) if latest == seq => {
                if self.answered {
                    self.cursor = 0;
                    self.stats.resent += 1;
                    RequestDisposition::Duplicate
                } else {
                    self.stats.ignored += 1;
                    RequestDisposition::InProgress
                }
            }
            Some(latest) if seq_is_older(seq, latest) => {
                self.stats.ignored += 1;
                RequestDisposition::Old
            }
            _ => {
                self.latest = Some(seq);
                self.answered = false;
                self.datagrams.replace([]);
                self.cursor = 0;
                self.stats.requests += 1;
                RequestDisposition::New
            }
        }
    }

    /// Sends (and caches) the response to the latest request, in one datagram.
    pub fn respond(&mut self, seq: u8, datagram: &[u8]) -> Result<(), RespondError> {
        self.respond_fragments(seq, [datagram])
    }

    /// Sends (and caches) the response to the latest request as several datagrams.
    pub fn respond_fragments<'d>(
        &mut self,
        seq: u8,
        datagrams: impl IntoIterator<Item = &'d [u8]>,
    ) -> Result<(), RespondError> {
        if self.latest != Some(seq) {
            return Err(RespondError::NotLatest {
                seq,
                latest: self.latest,
            });
        }
        if self.answered {
            return Err(RespondError::AlreadyAnswered { seq });
        }
        self.datagrams.replace(datagrams);
        if self.datagrams.len() == 0 {
            return Err(RespondError::Empty);
        }
        self.answered = true;
        self.cursor = 0;
        Ok(())
    }

    /// Queues the cached response to the latest request again, unasked: for a peer that
    /// acts as if it never got it (see `AcSession`). Whether there was one to resend.
    pub fn resend(&mut self) -> bool {
        if !self.answered || self.datagrams.len() == 0 {
            return false;
        }
        self.cursor = 0;
        self.stats.resent += 1;
        true
    }

    /// Whether [`Responder::poll_transmit`] has a datagram now.
    pub fn has_transmit(&self) -> bool {
        self.cursor < self.datagrams.len()
    }

    /// The next datagram to put on the wire, if one is due.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        let d = self.datagrams.get(self.cursor)?;
        self.cursor += 1;
        Some(d)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seq_comparison_follows_the_rfc_formula_across_the_wrap() {
        assert!(seq_is_older(1, 2));
        assert!(!seq_is_older(2, 1));
        assert!(!seq_is_older(7, 7));
        assert!(seq_is_older(255, 0), "0 follows 255");
        assert!(!seq_is_older(0, 255));
        assert!(seq_is_older(0, 127));
        assert!(seq_is_older(200, 10), "10 is 66 past 200");
        assert!(!seq_is_older(10, 200));
        // Exactly 128 apart: neither is older.
        assert!(!seq_is_older(0, 128) && !seq_is_older(128, 0));
        assert!(!seq_is_older(100, 228) && !seq_is_older(228, 100));
    }

    /// Drives an unanswered request; returns the transmission times and the give-up time.
    fn unanswered(config: RetransmitConfig) -> (Vec<u64>, u64, PeerDead) {
        let t0 = Instant::now();
        let mut r = Requester::new(config, 42);
        let request = [0xca, 0xfe, 0x42];
        r.send(t0, &request).unwrap();
        let mut sent = Vec::new();
        let mut now = t0;
        loop {
            while let Some(d) = r.poll_transmit() {
                assert_eq!(d, request, "retransmissions are never altered");
                sent.push((now - t0).as_secs());
            }
            let deadline = r.poll_timeout().unwrap();
            // Early timer wake-ups do nothing.
            assert_eq!(r.handle_timeout(deadline - Duration::from_millis(1)), None);
            assert!(r.poll_transmit().is_none());
            now = deadline;
            if let Some(dead) = r.handle_timeout(now) {
                assert!(r.is_idle() && r.poll_timeout().is_none() && r.poll_transmit().is_none());
                return (sent, (now - t0).as_secs(), dead);
            }
        }
    }

    #[test]
    fn default_schedule_is_3_6_12_24_48_then_peer_dead() {
        let (sent, dead_at, dead) = unanswered(RetransmitConfig::default());
        assert_eq!(sent, [0, 3, 9, 21, 45, 93]);
        let waits: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(waits, [3, 6, 12, 24, 48]);
        assert_eq!(dead_at, 189);
        assert_eq!(
            dead,
            PeerDead {
                seq: 42,
                retransmissions: 5
            }
        );
    }

    #[test]
    fn the_timers_are_configurable() {
        let (sent, dead_at, _) = unanswered(RetransmitConfig {
            max_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        assert_eq!(sent, [0, 3, 9, 21, 36, 51]);
        assert_eq!(dead_at, 66);
        let (sent, dead_at, dead) = unanswered(RetransmitConfig {
            interval: Duration::from_secs(1),
            max_retransmit: 2,
            max_interval: None,
        });
        assert_eq!((sent, dead_at, dead.retransmissions), (vec![0, 1, 3], 7, 2));
    }

    #[test]
    fn absurd_timers_do_not_overflow() {
        let t0 = Instant::now();
        let mut r = Requester::new(
            RetransmitConfig {
                interval: Duration::MAX,
                max_retransmit: 100,
                max_interval: None,
            },
            0,
        );
        r.send(t0, b"x").unwrap();
        for _ in 0..100 {
            let deadline = r.poll_timeout().unwrap();
            assert!(deadline - t0 <= Duration::from_secs(86_400 * 100));
            assert_eq!(r.handle_timeout(deadline), None);
        }
        let deadline = r.poll_timeout().unwrap();
        assert!(r.handle_timeout(deadline).is_some());
    }

    #[test]
    fn only_the_outstanding_seq_completes_a_request() {
        let t0 = Instant::now();
        let mut r = Requester::new(RetransmitConfig::default(), 255);
        assert_eq!(r.next_seq(), 255);
        assert_eq!(r.send(t0, b"req"), Ok(255));
        assert_eq!(r.next_seq(), 0, "wraps");
        assert_eq!(r.send(t0, b"another"), Err(SendError::Busy { seq: 255 }));
        assert_eq!(r.poll_transmit(), Some(&b"req"[..]));
        let later = t0 + Duration::from_millis(40);
        assert_eq!(
            r.handle_response(later, 254),
            None,
            "late answer to an older one"
        );
        assert_eq!(r.handle_response(later, 0), None, "not sent yet");
        assert_eq!(
            r.handle_response(later, 255),
            Some(Completed {
                seq: 255,
                retransmissions: 0,
                rtt: Some(Duration::from_millis(40))
            })
        );
        assert_eq!(r.handle_response(later, 255), None, "duplicate response");
        assert_eq!(r.stats().ignored_responses, 3);
        assert!(r.is_idle() && r.poll_timeout().is_none());

        // After a retransmission the round trip is unknown (which copy was answered?).
        assert_eq!(r.send(t0, b"next"), Ok(0));
        assert_eq!(r.poll_transmit(), Some(&b"next"[..]));
        let deadline = r.poll_timeout().unwrap();
        assert_eq!(r.handle_timeout(deadline), None);
        assert_eq!(r.poll_transmit(), Some(&b"next"[..]));
        assert_eq!(r.poll_transmit(), None);
        let done = r.handle_response(deadline, 0).unwrap();
        assert_eq!((done.retransmissions, done.rtt), (1, None));
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(
            r.stats(),
            RequesterStats {
                requests: 2,
                retransmissions: 1,
                ignored_responses: 3
            }
        );
        assert_eq!(
            r.send(t0, &[]),
            Ok(1),
            "an empty datagram is still a datagram"
        );
        r.cancel();
        assert_eq!(r.send_fragments(t0, []), Err(SendError::Empty));
    }

    #[test]
    fn a_fragmented_request_is_retransmitted_whole() {
        let t0 = Instant::now();
        let mut r = Requester::new(RetransmitConfig::default(), 0);
        let frags: [&[u8]; 3] = [b"one", b"two", b"three"];
        r.send_fragments(t0, frags).unwrap();
        let mut first = Vec::new();
        while let Some(d) = r.poll_transmit() {
            first.push(d.to_vec());
        }
        assert_eq!(first, frags);
        r.handle_timeout(t0 + DEFAULT_RETRANSMIT_INTERVAL);
        let mut again = Vec::new();
        while let Some(d) = r.poll_transmit() {
            again.push(d.to_vec());
        }
        assert_eq!(again, first);
    }

    #[test]
    fn responder_hands_up_new_requests_once_and_resends_the_cached_response() {
        let mut r = Responder::new();
        assert_eq!(r.handle_request(10), RequestDisposition::New);
        assert_eq!(r.handle_request(10), RequestDisposition::InProgress);
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(
            r.respond(9, b"x"),
            Err(RespondError::NotLatest {
                seq: 9,
                latest: Some(10)
            })
        );
        r.respond(10, b"answer 10").unwrap();
        assert_eq!(
            r.respond(10, b"again"),
            Err(RespondError::AlreadyAnswered { seq: 10 })
        );
        assert_eq!(r.poll_transmit(), Some(&b"answer 10"[..]));
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(r.handle_request(10), RequestDisposition::Duplicate);
        assert_eq!(r.poll_transmit(), Some(&b"answer 10"[..]));
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(r.handle_request(9), RequestDisposition::Old);
        assert_eq!(
            r.handle_request(200),
            RequestDisposition::Old,
            "10 is 66 past 200"
        );
        assert_eq!(r.poll_transmit(), None);
        assert_eq!(r.handle_request(11), RequestDisposition::New);
        assert_eq!(
            r.poll_transmit(),
            None,
            "the old response is not resent for 11"
        );
        r.respond_fragments(11, [&b"a"[..], b"b"]).unwrap();
        assert_eq!(r.poll_transmit(), Some(&b"a"[..]));
        assert_eq!(r.handle_request(11), RequestDisposition::Duplicate);
        assert_eq!(r.poll_transmit(), Some(&b"a"[..]), "resent from the start");
        assert_eq!(r.poll_transmit(), Some(&b"b"[..]));
        assert_eq!(
            r.handle_request(139),
            RequestDisposition::New,
            "128 apart counts as new"
        );
        assert_eq!(
            r.stats(),
            ResponderStats {
                requests: 3,
                resent: 2,
                ignored: 3
            }
        );
    }

    #[test]
    fn responder_follows_the_wrap() {
        let mut r = Responder::new();
        assert_eq!(r.latest(), None);
        assert_eq!(r.handle_request(254), RequestDisposition::New);
        assert_eq!(r.handle_request(255), RequestDisposition::New);
        assert_eq!(r.handle_request(0), RequestDisposition::New);
        assert_eq!(r.handle_request(255), RequestDisposition::Old);
        assert_eq!(r.handle_request(254), RequestDisposition::Old);
        assert_eq!(r.latest(), Some(0));
    }
}
