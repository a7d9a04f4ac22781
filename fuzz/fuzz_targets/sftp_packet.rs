//! Arbitrary bytes as an SFTP stream: framing and request/response decoding never panic, and
//! every decoded request re-encodes to a packet that decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftpd::sftp::{Framer, Request, Response};

fuzz_target!(|data: &[u8]| {
    let framer = Framer::default();
    let mut rest = data;
    while let Ok(Some(frame)) = framer.next_packet(rest) {
        if let Ok(req) = Request::decode(frame.packet) {
            let mut out = Vec::new();
            req.encode(&mut out);
            let again = framer
                .next_packet(&out)
                .ok()
                .flatten()
                .map(|f| Request::decode(f.packet));
            assert!(matches!(again, Some(Ok(ref r)) if *r == req), "{req:?}");
        }
        let _ = Response::decode(frame.packet);
        rest = &rest[frame.consumed..];
    }
});
