//! Netascii conversion (RFC 1350 mode "netascii", RFC 764's NVT rules as tftpd-hpa applies
//! them): on the wire a line ends in CR LF and a bare CR is sent as CR NUL.

/// Converts local text to netascii (LF → CR LF, CR → CR NUL).
pub fn encode(input: &[u8]) -> Vec<u8> {
    let extra = input.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let mut out = Vec::with_capacity(input.len() + extra);
    for &b in input {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    out
}

/// Converts netascii to local text, one chunk at a time: a CR at the end of a chunk is held
/// until the next chunk shows what follows it.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    pending_cr: bool,
}

impl Decoder {
    /// A decoder at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `input`, appending to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                match b {
                    b'\n' => {
                        out.push(b'\n');
                        continue;
                    }
                    0 => {
                        out.push(b'\r');
                        continue;
                    }
                    // A CR followed by anything else is kept as it is.
                    _ => out.push(b'\r'),
                }
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
    }

    /// Flushes a CR left at the very end of the file.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_line_ends_and_bare_cr() {
        assert_eq!(encode(b"a\nb\rc"), b"a\r\nb\r\0c");
        assert_eq!(encode(b""), b"");
    }

    #[test]
    fn decodes_across_chunk_boundaries() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.decode(b"line1\r", &mut out);
        d.decode(b"\nbare\r", &mut out);
        d.decode(b"\0x\ry", &mut out);
        d.decode(b"\r", &mut out);
        d.finish(&mut out);
        assert_eq!(out, b"line1\nbare\rx\ry\r");
    }

    proptest! {
        #[test]
        fn round_trip_in_any_chunking(data in proptest::collection::vec(any::<u8>(), 0..400), cut in 1usize..50) {
            let wire = encode(&data);
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(cut) { d.decode(chunk, &mut out); }
            d.finish(&mut out);
            prop_assert_eq!(out, data);
        }
    }
}
