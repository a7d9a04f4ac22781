//! Decode arbitrary datagrams; whatever decodes must re-encode to bytes that decode to the
//! same packet (decode → encode → decode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftpd::proto::packet::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let wire = p.to_vec();
        assert_eq!(wire.len(), p.encoded_len());
        assert_eq!(Packet::decode(&wire), Ok(p));
    }
});
