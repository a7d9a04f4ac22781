//! Arbitrary bytes as CAPWAP control messages and as fragments: decoding never panics,
//! whatever decodes re-encodes to bytes that decode equal (decode → encode → decode), the
//! reassembler stays within its limits, and a decodable message split into fragments and
//! fed back in reverse order reassembles to the same payload and message.
#![no_main]

use std::time::{Duration, Instant};

use controller::capwap::{
    Header, Message, RawMessage, Reassembler, Reassembly, ReassemblyLimits, fragment,
};
use libfuzzer_sys::fuzz_target;

fn round_trip(bytes: &[u8]) {
    if let Ok(raw) = RawMessage::decode(bytes) {
        // The allocation-free walk and the collecting decoder agree.
        let walked: Result<Vec<_>, _> = raw.elements().collect();
        let collected = Message::decode(bytes).map(|m| m.elements);
        assert_eq!(walked, collected);
    }
    if let Ok(m) = Message::decode(bytes) {
        let _ = m.check_mandatory();
        let wire = m.to_vec().expect("a decoded message re-encodes");
        assert_eq!(wire.len(), m.encoded_len());
        assert_eq!(Message::decode(&wire), Ok(m));
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);

    // The input as a stream of length-prefixed datagrams from three peers, 300 ms apart.
    let limits = ReassemblyLimits {
        max_partial: 8,
        max_partial_per_peer: 2,
        timeout: Duration::from_secs(2),
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    let base = Instant::now();
    let mut rest = data;
    let mut i = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let (datagram, after) = tail.split_at(usize::from(len).min(tail.len()));
        rest = after;
        let now = base + Duration::from_millis(i * 300);
        if let Ok(Reassembly::Complete(message)) = r.push(now, &(i % 3), datagram) {
            round_trip(&message);
        }
        assert!(r.len() <= 8);
        i += 1;
    }

    // A decodable message survives fragmentation and reassembly byte for byte.
    if Message::decode(data).is_ok()
        && let Ok(frags) = fragment(data, 64, 0xbeef)
        && frags.len() > 1
    {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_message_len: 1 << 17,
            ..ReassemblyLimits::default()
        });
        let mut done = None;
        for f in frags.iter().rev() {
            match r
                .push(base, &0u8, f)
                .expect("our own fragments are accepted")
            {
                Reassembly::Complete(m) => done = Some(m),
                Reassembly::Incomplete => {}
                Reassembly::Duplicate => panic!("no duplicate was sent"),
            }
        }
        // Reserved and unused header bits are normalised on the way; the payload is not.
        let done = done.expect("the first fragment completes the message");
        let (_, payload) = Header::decode(data).expect("decoded above");
        assert!(done.ends_with(payload));
        assert_eq!(Message::decode(&done), Message::decode(data));
    }
});
