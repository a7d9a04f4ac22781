//! Fragmentation and reassembly (RFC 5415 §3.4, §4.3).
//!
//! Every fragment is a CAPWAP packet: the message's own header (optional fields included)
//! with F set, the message's Fragment ID, the payload offset in 8-byte units, and L on the
//! last one. All fragments but the last carry a multiple of 8 bytes. The control header
//! travels only in the first fragment's payload.
//!
//! [`Reassembler`] collects fragments per (peer, Fragment ID). It is bounded, so a peer
//! cannot make it hold unbounded memory or panic it:
//! - a message's payload may not exceed [`ReassemblyLimits::max_message_len`] (at least
//!   4096, the RFC's minimum; raise it to what Maximum Message Length advertised);
//! - at most [`ReassemblyLimits::max_partial`] messages are in progress, and at most
//!   [`ReassemblyLimits::max_partial_per_peer`] per peer (a peer's newest set evicts its
//!   oldest: one outstanding request per side means older sets are stale);
//! - a partial message is dropped [`ReassemblyLimits::timeout`] after its first fragment;
//!   time comes in as `now` (the shell sleeps until [`Reassembler::poll_timeout`]).
//!
//! An exact duplicate of a fragment (same range, same bytes) is reported and ignored, so a
//! retransmitted request fills the holes of the first attempt. Anything else that overlaps,
//! ends past the announced end, or announces two ends discards the partial message.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::header::{Fragment, Header, HeaderError, MAX_FRAGMENT_OFFSET};

/// RFC 5415 §4: every implementation must accept a reassembled message of 4096 bytes.
pub const MIN_REASSEMBLED_LEN: usize = 4096;

/// Why a message cannot be fragmented, or a fragment was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The datagram's CAPWAP header is malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// [`Reassembler::push`] got a datagram without the F bit.
    #[error("not a fragment (F bit clear)")]
    NotAFragment,
    /// [`fragment`] got a message that is already a fragment.
    #[error("the message is already a fragment")]
    AlreadyFragment,
    /// The datagram size leaves no room for 8 bytes of payload after the header.
    #[error(
        "a {max_datagram}-byte datagram has no room for 8 payload bytes after a {header_len}-byte header"
    )]
    DatagramTooSmall {
        /// The size asked for.
        max_datagram: usize,
        /// The message's header length.
        header_len: usize,
    },
    /// The last fragment's offset would not fit in 13 bits.
    #[error("a {len}-byte payload needs fragment offsets past 13 bits at this datagram size")]
    MessageTooLarge {
        /// The payload length.
        len: usize,
    },
    /// A fragment with no payload.
    #[error("fragment {id} at byte offset {offset} is empty")]
    EmptyFragment {
        /// Fragment ID.
        id: u16,
        /// Byte offset.
        offset: usize,
    },
    /// A fragment other than the last whose payload is not a multiple of 8 bytes.
    #[error("fragment {id} at byte offset {offset} carries {len} bytes, not a multiple of 8")]
    Misaligned {
        /// Fragment ID.
        id: u16,
        /// Byte offset.
        offset: usize,
        /// Payload length.
        len: usize,
    },
    /// The fragment reaches past the reassembly limit; the partial message is discarded.
    #[error("fragment {id} reaches byte {end}, past the {limit}-byte reassembly limit")]
    TooLarge {
        /// Fragment ID.
        id: u16,
        /// End of the fragment's payload.
        end: usize,
        /// The limit.
        limit: usize,
    },
    /// The fragment overlaps one already received with different bytes or bounds; the
    /// partial message is discarded.
    #[error("fragment {id} at byte offset {offset} ({len} bytes) overlaps another")]
    Overlap {
        /// Fragment ID.
        id: u16,
        /// Byte offset.
        offset: usize,
        /// Payload length.
        len: usize,
    },
    /// The fragment ends past the message's end, or the last fragment ends before bytes
    /// already received; the partial message is discarded.
    #[error("fragment {id} reaches byte {end}, past the message's end at {total}")]
    PastEnd {
        /// Fragment ID.
        id: u16,
        /// End of the offending bytes.
        end: usize,
        /// Where the message ends.
        total: usize,
    },
    /// A second last fragment with a different end; the partial message is discarded.
    #[error("fragment {id}: last fragment ends at {end}, but an earlier one said {total}")]
    ConflictingEnd {
        /// Fragment ID.
        id: u16,
        /// This fragment's end.
        end: usize,
        /// The end announced before.
        total: usize,
    },
    /// Too many messages in progress; the fragment is dropped.
    #[error("{limit} partial messages already in progress")]
    TooManyPartial {
        /// The limit.
        limit: usize,
    },
}

/// Splits an encoded, unfragmented message into datagrams of at most `max_datagram` bytes
/// with Fragment ID `id`. A message that fits is returned as it is, in one datagram.
pub fn fragment(
    message: &[u8],
    max_datagram: usize,
    id: u16,
) -> Result<Vec<Vec<u8>>, FragmentError> {
    let (header, payload) = Header::decode(message)?;
    if header.fragment.is_some() {
        return Err(FragmentError::AlreadyFragment);
    }
    if message.len() <= max_datagram {
        return Ok(vec![message.to_vec()]);
    }
    let header_len = message.len() - payload.len();
    let chunk = max_datagram.saturating_sub(header_len) / 8 * 8;
    if chunk == 0 {
        return Err(FragmentError::DatagramTooSmall {
            max_datagram,
            header_len,
        });
    }
    // The payload is not empty here: message.len() > max_datagram >= header_len + 8.
    let last_start = payload.len().saturating_sub(1) / chunk * chunk;
    if last_start / 8 > usize::from(MAX_FRAGMENT_OFFSET) {
        return Err(FragmentError::MessageTooLarge { len: payload.len() });
    }
    let mut out = Vec::with_capacity(payload.len().div_ceil(chunk));
    for (i, piece) in payload.chunks(chunk).enumerate() {
        let start = i * chunk;
        let h = Header {
            fragment: Some(Fragment {
                id,
                offset: (start / 8) as u16,
                last: start + piece.len() == payload.len(),
            }),
            ..header
        };
        let mut datagram = Vec::with_capacity(header_len + piece.len());
        h.encode(&mut datagram)?;
        datagram.extend_from_slice(piece);
        out.push(datagram);
    }
    Ok(out)
}

/// Bounds on reassembly. Defaults: 4096-byte messages, 256 partial messages in all, 4 per
/// peer, 30 s to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// The largest reassembled payload (bytes after the CAPWAP header). Values below 4096
    /// are raised to 4096.
    pub max_message_len: usize,
    /// Partial messages held at once, all peers together.
    pub max_partial: usize,
    /// Partial messages held per peer.
    pub max_partial_per_peer: usize,
    /// How long a partial message may wait for its missing fragments (at most a day).
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_message_len: MIN_REASSEMBLED_LEN,
            max_partial: 256,
            max_partial_per_peer: 4,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What [`Reassembler::push`] did with a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembly {
    /// Stored; the message is not complete yet.
    Incomplete,
    /// An exact duplicate of a fragment already held; ignored.
    Duplicate,
    /// The message is complete: its first fragment's header without fragment fields,
    /// followed by the whole payload — ready for [`Message::decode`](super::message::Message::decode).
    Complete(Vec<u8>),
}

#[derive(Debug)]
struct Partial {
    deadline: Instant,
    /// The first fragment's header, with F clear.
    header: Option<Vec<u8>>,
    /// The payload so far (holes are zero).
    data: Vec<u8>,
    /// Received ranges, start → end, never overlapping.
    pieces: BTreeMap<usize, usize>,
    received: usize,
    /// Set by the last fragment.
    total: Option<usize>,
}

impl Partial {
    fn add(
        &mut self,
        header: &Header<'_>,
        f: Fragment,
        payload: &[u8],
    ) -> Result<bool, FragmentError> {
        let (id, start) = (f.id, f.byte_offset());
        let end = start + payload.len();
        let overlap = FragmentError::Overlap {
            id,
            offset: start,
            len: payload.len(),
        };
        if let Some((&s, &e)) = self.pieces.range(..=start).next_back()
            && e > start
        {
            let same = s == start
                && e == end
                && self.data.get(start..end) == Some(payload)
                && (!f.last || self.total == Some(end));
            return if same { Ok(false) } else { Err(overlap) };
        }
        if let Some((&s, _)) = self.pieces.range(start + 1..).next()
            && s < end
        {
            return Err(overlap);
        }
        match (self.total, f.last) {
            (Some(total), true) if total != end => {
                return Err(FragmentError::ConflictingEnd { id, end, total });
            }
            (Some(total), false) if end > total => {
                return Err(FragmentError::PastEnd { id, end, total });
            }
            (None, true) => {
                let high = self.pieces.values().next_back().copied().unwrap_or(0);
                if high > end {
                    return Err(FragmentError::PastEnd {
                        id,
                        end: high,
                        total: end,
                    });
                }
                self.total = Some(end);
            }
            _ => {}
        }
        if start == 0 {
            let mut h = Vec::with_capacity(header.encoded_len());
            Header {
                fragment: None,
                ..*header
            }
            .encode(&mut h)?;
            self.header = Some(h);
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        if let Some(slot) = self.data.get_mut(start..end) {
            slot.copy_from_slice(payload);
        }
        self.pieces.insert(start, end);
        self.received += payload.len();
        Ok(true)
    }

    fn take_if_complete(&mut self) -> Option<Vec<u8>> {
        let total = self.total?;
        if self.received != total {
            return None;
        }
        let header = self.header.take()?;
        let mut out = header;
        self.data.truncate(total);
        out.extend_from_slice(&self.data);
        Some(out)
    }
}

/// Reassembles fragmented messages per peer. `K` identifies the peer (its address, or
/// anything the shell keys sessions by).
#[derive(Debug)]
pub struct Reassembler<K> {
    limits: ReassemblyLimits,
    partial: HashMap<(K, u16), Partial>,
}

impl<K: Eq + Hash + Clone> Reassembler<K> {
    /// An empty reassembler.
    pub fn new(limits: ReassemblyLimits) -> Reassembler<K> {
        let limits = ReassemblyLimits {
            max_message_len: limits.max_message_len.max(MIN_REASSEMBLED_LEN),
            ..limits
        };
        Reassembler {
            limits,
            partial: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ReassemblyLimits {
        &self.limits
    }

    /// Partial messages held.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// True when no partial message is held.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// Takes one fragment from `peer` received at `now`.
    pub fn push(
        &mut self,
        now: Instant,
        peer: &K,
        datagram: &[u8],
    ) -> Result<Reassembly, FragmentError> {
        self.handle_timeout(now);
        let (header, payload) = Header::decode(datagram)?;
        let Some(f) = header.fragment else {
            return Err(FragmentError::NotAFragment);
        };
        let (id, start) = (f.id, f.byte_offset());
        if payload.is_empty() {
            return Err(FragmentError::EmptyFragment { id, offset: start });
        }
        if !f.last && payload.len() % 8 != 0 {
            return Err(FragmentError::Misaligned {
                id,
                offset: start,
                len: payload.len(),
            });
        }
        let key = (peer.clone(), id);
        let end = start + payload.len();
        let limit = self.limits.max_message_len;
        if end > limit {
            self.partial.remove(&key);
            return Err(FragmentError::TooLarge { id, end, limit });
        }
        if !self.partial.contains_key(&key) {
            self.make_room(peer)?;
            self.partial.insert(
                key.clone(),
                Partial {
                    deadline: now + self.limits.timeout.min(Duration::from_secs(86_400)),
                    header: None,
                    data: Vec::new(),
                    pieces: BTreeMap::new(),
                    received: 0,
                    total: None,
                },
            );
        }
        let Some(p) = self.partial.get_mut(&key) else {
            return Ok(Reassembly::Incomplete);
        };
        match p.add(&header, f, payload) {
            Ok(false) => Ok(Reassembly::Duplicate),
            Ok(true) => match p.take_if_complete() {
                Some(message) => {
                    self.partial.remove(&key);
                    Ok(Reassembly::Complete(message))
                }
                None => Ok(Reassembly::Incomplete),
            },
            Err(e) => {
                self.partial.remove(&key);
                Err(e)
            }
        }
    }

    /// Evicts `peer`'s oldest partial message when it holds its limit; refuses when all
    /// peers together hold theirs.
    fn make_room(&mut self, peer: &K) -> Result<(), FragmentError> {
        let mut held = 0;
        let mut oldest: Option<(&(K, u16), Instant)> = None;
        for (k, p) in &self.partial {
            if &k.0 == peer {
                held += 1;
                if oldest.is_none_or(|(_, d)| p.deadline < d) {
                    oldest = Some((k, p.deadline));
                }
            }
        }
        if held >= self.limits.max_partial_per_peer
            && let Some((k, _)) = oldest
        {
            let k = k.clone();
            self.partial.remove(&k);
        }
        if self.partial.len() >= self.limits.max_partial || self.limits.max_partial_per_peer == 0 {
            return Err(FragmentError::TooManyPartial {
                limit: self
                    .limits
                    .max_partial
                    .min(self.limits.max_partial_per_peer),
            });
        }
        Ok(())
    }

    /// When the oldest partial message expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial.values().map(|p| p.deadline).min()
    }

    /// Drops the partial messages whose time is up; returns how many.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let before = self.partial.len();
        self.partial.retain(|_, p| p.deadline > now);
        before - self.partial.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::capwap::header::tests::any_header;
    use crate::capwap::header::{MAX_FRAGMENT_OFFSET, RadioMac};
    use crate::capwap::message::{CapwapError, Message};
    use proptest::prelude::*;

    /// A control-header-like payload of `len` bytes after the usual header.
    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0];
        m.extend((0..len).map(|i| (i * 7 + 1) as u8));
        m
    }

    fn peer() -> &'static str {
        "ap-1"
    }

    #[test]
    fn fragments_carry_f_l_id_and_offsets_in_8_byte_units() {
        let m = message(20);
        let frags = fragment(&m, 16, 0x1234).unwrap();
        assert_eq!(frags.len(), 3);
        #[rustfmt::skip]
        let heads: [[u8; 8]; 3] = [
            [0x00, 0x10, 0x02, 0x80, 0x12, 0x34, 0x00, 0x00], // F, offset 0
            [0x00, 0x10, 0x02, 0x80, 0x12, 0x34, 0x00, 0x08], // F, offset 1 unit
            [0x00, 0x10, 0x02, 0xc0, 0x12, 0x34, 0x00, 0x10], // F L, offset 2 units
        ];
        for (i, (f, head)) in frags.iter().zip(heads).enumerate() {
            assert_eq!(f[..8], head, "fragment {i}");
        }
        assert_eq!(frags[0][8..], m[8..16]);
        assert_eq!(frags[1][8..], m[16..24]);
        assert_eq!(frags[2][8..], m[24..28]);
        // Each is refused by the message decoder until reassembled.
        assert_eq!(
            Message::decode(&frags[1]),
            Err(CapwapError::Fragment {
                id: 0x1234,
                offset: 8
            })
        );
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        assert_eq!(r.push(now, &peer(), &frags[2]), Ok(Reassembly::Incomplete));
        assert_eq!(r.push(now, &peer(), &frags[0]), Ok(Reassembly::Incomplete));
        assert_eq!(r.push(now, &peer(), &frags[1]), Ok(Reassembly::Complete(m)));
        assert!(r.is_empty());
    }

    #[test]
    fn every_fragment_repeats_the_optional_header_fields() {
        let h = Header {
            radio_mac: Some(RadioMac::Eui48([1, 2, 3, 4, 5, 6])),
            wireless_info: Some(&[9, 9, 9]),
            ..Header::CONTROL
        };
        let mut m = Vec::new();
        h.encode(&mut m).unwrap();
        m.extend_from_slice(&[0xab; 100]);
        let frags = fragment(&m, 60, 7).unwrap();
        assert_eq!(frags.len(), 3, "60 - 16 = 44 → 40-byte chunks");
        for f in &frags {
            let (fh, payload) = Header::decode(f).unwrap();
            assert_eq!(fh.radio_mac, h.radio_mac);
            assert_eq!(fh.wireless_info, h.wireless_info);
            assert!(payload.len() <= 40 && f.len() <= 60);
        }
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        let mut done = None;
        for f in frags.iter().rev() {
            if let Reassembly::Complete(b) = r.push(now, &1u32, f).unwrap() {
                done = Some(b);
            }
        }
        assert_eq!(done, Some(m));
    }

    #[test]
    fn small_messages_and_impossible_sizes() {
        let m = message(20);
        assert_eq!(fragment(&m, 28, 1), Ok(vec![m.clone()]));
        assert_eq!(
            fragment(&m, 15, 1),
            Err(FragmentError::DatagramTooSmall {
                max_datagram: 15,
                header_len: 8
            })
        );
        let frags = fragment(&m, 16, 1).unwrap();
        assert_eq!(
            fragment(&frags[0], 16, 2),
            Err(FragmentError::AlreadyFragment)
        );
        // 8-byte chunks reach offset 8191 units at 65 536 bytes of payload.
        let big = message(8 * (usize::from(MAX_FRAGMENT_OFFSET) + 1) + 1);
        assert!(matches!(
            fragment(&big, 16, 1),
            Err(FragmentError::MessageTooLarge { .. })
        ));
        assert!(fragment(&big, 1500, 1).is_ok());
    }

    /// A fragment with id 1 at `offset` units carrying `payload`.
    fn frag(offset: u16, last: bool, payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        Header {
            fragment: Some(Fragment {
                id: 1,
                offset,
                last,
            }),
            ..Header::CONTROL
        }
        .encode(&mut d)
        .unwrap();
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn duplicates_are_ignored_overlaps_discard_the_message() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let p = peer();
        assert_eq!(
            r.push(now, &p, &frag(0, false, &[1; 16])),
            Ok(Reassembly::Incomplete)
        );
        assert_eq!(
            r.push(now, &p, &frag(0, false, &[1; 16])),
            Ok(Reassembly::Duplicate)
        );
        // Same range, different bytes.
        assert_eq!(
            r.push(now, &p, &frag(0, false, &[2; 16])),
            Err(FragmentError::Overlap {
                id: 1,
                offset: 0,
                len: 16
            })
        );
        assert!(r.is_empty(), "the partial message is gone");

        assert_eq!(
            r.push(now, &p, &frag(0, false, &[1; 16])),
            Ok(Reassembly::Incomplete)
        );
        // Starts inside the first fragment.
        assert_eq!(
            r.push(now, &p, &frag(1, false, &[1; 16])),
            Err(FragmentError::Overlap {
                id: 1,
                offset: 8,
                len: 16
            })
        );
        assert_eq!(
            r.push(now, &p, &frag(2, true, &[3; 5])),
            Ok(Reassembly::Incomplete)
        );
        // Ends inside the next fragment.
        assert_eq!(
            r.push(now, &p, &frag(1, false, &[4; 16])),
            Err(FragmentError::Overlap {
                id: 1,
                offset: 8,
                len: 16
            })
        );
        assert!(
            r.is_empty(),
            "an overlap with a later fragment discards too"
        );
    }

    #[test]
    fn malformed_fragments_are_rejected() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let p = peer();
        assert_eq!(
            r.push(now, &p, &message(8)),
            Err(FragmentError::NotAFragment)
        );
        assert_eq!(
            r.push(now, &p, &frag(0, false, &[])),
            Err(FragmentError::EmptyFragment { id: 1, offset: 0 })
        );
        assert_eq!(
            r.push(now, &p, &frag(0, false, &[0; 12])),
            Err(FragmentError::Misaligned {
                id: 1,
                offset: 0,
                len: 12
            })
        );
        assert!(matches!(
            r.push(now, &p, &[0x01, 0, 0, 0]),
            Err(FragmentError::Header(HeaderError::Dtls))
        ));
        // Past the 4096-byte limit.
        assert_eq!(
            r.push(now, &p, &frag(511, true, &[0; 9])),
            Err(FragmentError::TooLarge {
                id: 1,
                end: 4097,
                limit: 4096
            })
        );
        assert_eq!(
            r.push(now, &p, &frag(511, true, &[0; 8])),
            Ok(Reassembly::Incomplete)
        );
        // A second last fragment with another end.
        assert_eq!(
            r.push(now, &p, &frag(1, true, &[0; 8])),
            Err(FragmentError::ConflictingEnd {
                id: 1,
                end: 16,
                total: 4096
            })
        );
        // A last fragment before bytes already held.
        assert_eq!(
            r.push(now, &p, &frag(4, false, &[0; 8])),
            Ok(Reassembly::Incomplete)
        );
        assert_eq!(
            r.push(now, &p, &frag(1, true, &[0; 3])),
            Err(FragmentError::PastEnd {
                id: 1,
                end: 40,
                total: 11
            })
        );
        // A middle fragment after the announced end.
        assert_eq!(
            r.push(now, &p, &frag(1, true, &[0; 3])),
            Ok(Reassembly::Incomplete)
        );
        assert_eq!(
            r.push(now, &p, &frag(4, false, &[0; 8])),
            Err(FragmentError::PastEnd {
                id: 1,
                end: 40,
                total: 11
            })
        );
        // The limit can be raised for peers that announced a larger Maximum Message Length,
        // but never below the RFC's 4096.
        let r = Reassembler::<u8>::new(ReassemblyLimits {
            max_message_len: 100,
            ..Default::default()
        });
        assert_eq!(r.limits().max_message_len, 4096);
    }

    #[test]
    fn partial_messages_are_bounded_per_peer_and_in_all() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits {
            max_partial: 5,
            max_partial_per_peer: 2,
            ..Default::default()
        });
        let with_id = |id: u16| {
            let mut d = frag(0, false, &[0; 8]);
            d[4..6].copy_from_slice(&id.to_be_bytes());
            d
        };
        // A peer's third set evicts its oldest.
        for (i, id) in [10, 11, 12].into_iter().enumerate() {
            let t = now + Duration::from_millis(i as u64);
            assert_eq!(r.push(t, &"a", &with_id(id)), Ok(Reassembly::Incomplete));
        }
        assert_eq!(r.len(), 2);
        assert!(!r.partial.contains_key(&("a", 10)));
        for p in ["b", "c"] {
            for id in [1, 2] {
                let _ = r.push(now, &p, &with_id(id));
            }
        }
        assert_eq!(r.len(), 5, "a: 2, b: 2, c: 1 — c's second was refused");
        assert_eq!(
            r.push(now, &"d", &with_id(1)),
            Err(FragmentError::TooManyPartial { limit: 2 })
        );
    }

    #[test]
    fn partial_messages_expire_on_the_time_passed_in() {
        let t0 = Instant::now();
        let limits = ReassemblyLimits {
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        let frags = fragment(&message(40), 24, 9).unwrap();
        assert_eq!(r.push(t0, &peer(), &frags[0]), Ok(Reassembly::Incomplete));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(4)), 0);
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(5)), 1);
        assert_eq!(r.poll_timeout(), None);
        // The rest arrives late: it starts over and never completes from the lost part.
        for f in &frags[1..] {
            assert_eq!(
                r.push(t0 + Duration::from_secs(6), &peer(), f),
                Ok(Reassembly::Incomplete)
            );
        }
        // A retransmission of the first fragment in time completes it.
        assert!(matches!(
            r.push(t0 + Duration::from_secs(7), &peer(), &frags[0]),
            Ok(Reassembly::Complete(_))
        ));
    }

    /// Fisher–Yates with xorshift, seeded by proptest.
    fn shuffle<T>(v: &mut [T], mut seed: u64) {
        seed |= 1;
        for i in (1..v.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }

    proptest! {
        #[test]
        fn fragments_reassemble_in_any_order_with_duplicates(
            header in any_header(false),
            payload in proptest::collection::vec(any::<u8>(), 1..4000),
            max_datagram in 140usize..1500,
            id in any::<u16>(),
            dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
            seed in any::<u64>(),
        ) {
            let mut m = Vec::new();
            header.header().encode(&mut m).unwrap();
            m.extend_from_slice(&payload);
            let frags = fragment(&m, max_datagram, id).unwrap();
            if m.len() > max_datagram {
                for f in &frags {
                    prop_assert!(f.len() <= max_datagram);
                }
            }
            if frags.len() == 1 {
                prop_assert_eq!(&frags[0], &m);
                return Ok(());
            }
            let mut order: Vec<&Vec<u8>> = frags.iter().collect();
            order.extend(dups.iter().map(|i| &frags[i.index(frags.len())]));
            shuffle(&mut order, seed);
            let mut r = Reassembler::new(ReassemblyLimits::default());
            let now = Instant::now();
            let mut complete = 0;
            for f in order {
                match r.push(now, &7u8, f).unwrap() {
                    Reassembly::Complete(got) => {
                        prop_assert_eq!(&got, &m);
                        complete += 1;
                    }
                    Reassembly::Incomplete | Reassembly::Duplicate => {}
                }
            }
            prop_assert!(complete >= 1);
        }

        #[test]
        fn arbitrary_fragments_never_panic_the_reassembler(
            datagrams in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..64), 0..20),
            headers in proptest::collection::vec((0..4u16, 0..600u16, any::<bool>()), 0..20),
        ) {
            let mut r = Reassembler::new(ReassemblyLimits::default());
            let now = Instant::now();
            for (i, d) in datagrams.iter().enumerate() {
                let _ = r.push(now, &(i % 3), d);
                // The same bytes behind a valid fragment header.
                if let Some(&(id, offset, last)) = headers.get(i) {
                    let mut f = Vec::new();
                    Header {
                        fragment: Some(Fragment { id, offset: offset % 8, last }),
                        ..Header::CONTROL
                    }
                    .encode(&mut f)
                    .unwrap();
                    f.extend_from_slice(d);
                    if let Ok(Reassembly::Complete(m)) = r.push(now, &(i % 3), &f) {
                        let _ = Message::decode(&m);
                    }
                }
            }
        }
    }
}
