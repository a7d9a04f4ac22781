//! Feed arbitrary requests through the server's option negotiation and arbitrary OACKs
//! through the client's check: neither may panic, and what is granted stays in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftpd::proto::client::{Requested, apply_oack};
use tftpd::proto::options::{Direction, ServerLimits, negotiate};
use tftpd::proto::packet::{OptionList, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Rrq(r) | Packet::Wrq(r)) = Packet::decode(data) {
        let limits = ServerLimits::default();
        if let Ok(n) = negotiate(
            r.options,
            r.mode,
            Direction::Read { file_size: 1 << 20 },
            &limits,
        ) {
            assert!(n.blksize >= 8 && n.blksize <= limits.max_blksize);
            assert!(n.windowsize >= 1 && n.windowsize <= limits.max_window);
        }
    }
    if let Ok(list) = OptionList::parse(data) {
        let asked = Requested {
            blksize: Some(1468),
            windowsize: Some(32),
            timeout: Some(6),
            tsize: Some(0),
            rollover: Some(1),
        };
        if let Ok(a) = apply_oack(list, &asked) {
            assert!(a.blksize <= 1468 && a.windowsize <= 32);
        }
    }
});
