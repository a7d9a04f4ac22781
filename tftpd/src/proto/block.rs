//! Block numbering past 65535 blocks.
//!
//! Internally a transfer counts blocks with a 64-bit sequence number (block 1 is the first
//! DATA block). On the wire a block number is 16 bits: after 65535 comes the rollover value,
//! 0 by default (tftpd-hpa, atftpd, dnsmasq and curl all wrap to 0), or whatever the client
//! asked for with tftpd-hpa's `rollover` option (1 is the other convention in the wild).
//! A 70,512,640-byte image at blksize 512 is 137,721 blocks, so this is not a corner case.

/// How wire block numbers continue after 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollover(u16);

impl Rollover {
    /// Wrap to `value` after 65535 (`value` is the first number of each later cycle).
    pub fn to(value: u16) -> Rollover {
        Rollover(value)
    }

    /// The number the block after 65535 gets.
    pub fn value(self) -> u16 {
        self.0
    }

    /// The wire number of sequence number `seq` (0 = the OACK/ACK 0 handshake).
    pub fn wire(self, seq: u64) -> u16 {
        if seq <= 65535 {
            return seq as u16;
        }
        let start = u64::from(self.0);
        // Numbers per cycle after the first wrap: start..=65535.
        let cycle = 65536 - start;
        (start + (seq - 65536) % cycle) as u16
    }

    /// Finds the sequence number in `lo..=hi` whose wire number is `wire`. The range must be
    /// shorter than one cycle for the answer to be unique; the first match is returned.
    pub fn seq_in(self, wire: u16, lo: u64, hi: u64) -> Option<u64> {
        if lo > hi {
            return None;
        }
        let w_lo = self.wire(lo);
        // Distance forward from lo's wire number to `wire`, walking the wire sequence.
        let mut seq = lo;
        let mut w = w_lo;
        // Fast path: same cycle, no wrap in between.
        if wire >= w_lo {
            let candidate = lo + u64::from(wire - w_lo);
            if candidate <= hi && self.wire(candidate) == wire {
                return Some(candidate);
            }
        }
        // Slow path across a wrap: step to the wrap point, then jump.
        let to_wrap = u64::from(65535 - w);
        seq += to_wrap + 1;
        w = self.wire(seq);
        if seq > hi || wire < w {
            return None;
        }
        let candidate = seq + u64::from(wire - w);
        (candidate <= hi && self.wire(candidate) == wire).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_to_zero_by_default() {
        let r = Rollover::default();
        assert_eq!(r.wire(1), 1);
        assert_eq!(r.wire(65535), 65535);
        assert_eq!(r.wire(65536), 0);
        assert_eq!(r.wire(65537), 1);
        assert_eq!(r.wire(131071), 65535);
        assert_eq!(r.wire(131072), 0);
        // The last block of ap1g8 at blksize 512: 70,512,640 / 512 + 1 = 137,721.
        assert_eq!(r.wire(137_721), (137_721 - 2 * 65536) as u16);
    }

    #[test]
    fn wraps_to_one_when_asked() {
        let r = Rollover::to(1);
        assert_eq!(r.wire(65535), 65535);
        assert_eq!(r.wire(65536), 1);
        assert_eq!(r.wire(65536 + 65534), 65535);
        assert_eq!(r.wire(65536 + 65535), 1);
    }

    #[test]
    fn finds_sequence_across_the_wrap() {
        let r = Rollover::default();
        assert_eq!(r.seq_in(0, 65530, 65540), Some(65536));
        assert_eq!(r.seq_in(65533, 65530, 65540), Some(65533));
        assert_eq!(r.seq_in(4, 65530, 65540), Some(65540));
        assert_eq!(r.seq_in(5, 65530, 65540), None);
        assert_eq!(r.seq_in(65529, 65530, 65540), None);
        let one = Rollover::to(1);
        assert_eq!(one.seq_in(0, 65530, 65540), None);
        assert_eq!(one.seq_in(1, 65530, 65540), Some(65536));
    }

    proptest! {
        #[test]
        fn seq_in_inverts_wire(start in 0u64..400_000, len in 0u64..65535, off in 0u64..65535, ro in prop_oneof![Just(0u16), Just(1), any::<u16>()]) {
            let r = Rollover::to(ro);
            let cycle = 65536 - u64::from(ro);
            let len = len.min(cycle - 1);
            let off = off.min(len);
            let lo = start;
            let hi = start + len;
            let seq = lo + off;
            prop_assert_eq!(r.seq_in(r.wire(seq), lo, hi), Some(seq));
        }

        #[test]
        fn seq_in_only_returns_matches(wire in any::<u16>(), lo in 0u64..300_000, len in 0u64..70_000, ro in any::<u16>()) {
            let r = Rollover::to(ro);
            if let Some(s) = r.seq_in(wire, lo, lo + len) {
                prop_assert!(s >= lo && s <= lo + len);
                prop_assert_eq!(r.wire(s), wire);
            }
        }
    }
}
