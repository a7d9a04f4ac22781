//! The TFTP packet codec (RFC 1350 §5, RFC 2347 OACK), shared by server and client.
//!
//! Decoding borrows from the datagram and never allocates: a [`Packet`] is a view of the
//! bytes. Every malformation has its own [`DecodeError`] variant, and no input can panic.
//! Encoding writes into a caller's buffer, so the hot path (DATA and ACK) never allocates.

use std::fmt;

/// The largest payload a DATA packet may carry: RFC 2348's blksize ceiling.
pub const MAX_BLKSIZE: u16 = 65464;
/// The smallest blksize RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// RFC 1350's block size, used when no `blksize` option is negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Opcode + block number in front of every DATA payload.
pub const DATA_HEADER_LEN: usize = 4;
/// The largest datagram a TFTP peer can legitimately send us.
pub const MAX_PACKET_LEN: usize = DATA_HEADER_LEN + MAX_BLKSIZE as usize;

/// TFTP opcodes (RFC 1350 §5, RFC 2347 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// Data block.
    Data = 3,
    /// Acknowledgement.
    Ack = 4,
    /// Error.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

/// The transfer mode named in a request (RFC 1350 §5). Matching is case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text, with CR LF line ends and CR NUL for a bare CR.
    Netascii,
    /// Raw bytes.
    Octet,
    /// RFC 1350's obsolete mail mode (servers refuse it with ERROR 4 "Unknown mode").
    Mail,
}

impl Mode {
    /// The mode's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }

    fn parse(raw: &[u8]) -> Option<Mode> {
        [Mode::Netascii, Mode::Octet, Mode::Mail]
            .into_iter()
            .find(|m| raw.eq_ignore_ascii_case(m.as_str().as_bytes()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TFTP error codes (RFC 1350 §5 and RFC 2347 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    Undefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTransferId,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation refused (RFC 2347).
    OptionNegotiation,
    /// Any other value a peer may send.
    Other(u16),
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::Undefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(n) => n,
        }
    }

    /// Maps a wire value to a code.
    pub fn from_code(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::Undefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            n => ErrorCode::Other(n),
        }
    }

    /// The text tftpd-hpa sends with this code when it has nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::Undefined | ErrorCode::Other(_) => "Undefined error code",
            ErrorCode::FileNotFound => "File not found",
            ErrorCode::AccessViolation => "Access denied",
            ErrorCode::DiskFull => "Disk full or allocation exceeded",
            ErrorCode::IllegalOperation => "Illegal TFTP operation",
            ErrorCode::UnknownTransferId => "Unknown transfer ID",
            ErrorCode::FileExists => "File already exists",
            ErrorCode::NoSuchUser => "No such user",
            ErrorCode::OptionNegotiation => "Failure to negotiate RFC2347 options",
        }
    }
}

/// Which NUL-terminated field of a packet was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The request's filename.
    Filename,
    /// The request's mode.
    Mode,
    /// An option's name.
    OptionName,
    /// An option's value.
    OptionValue,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Filename => "filename",
            Field::Mode => "mode",
            Field::OptionName => "option name",
            Field::OptionValue => "option value",
        })
    }
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the opcode (and block number, where one is needed).
    #[error("packet too short: {len} bytes")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// An opcode outside 1..=6.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The opcode received.
        opcode: u16,
    },
    /// A string field without its terminating NUL.
    #[error("{field} is not NUL-terminated")]
    Unterminated {
        /// The field that ran to the end of the packet.
        field: Field,
    },
    /// A request with an empty filename.
    #[error("empty filename")]
    EmptyFilename,
    /// A request whose mode is not netascii, octet or mail.
    #[error("unknown mode {mode:?}")]
    UnknownMode {
        /// The mode as received (lossy UTF-8).
        mode: String,
    },
    /// An option with an empty name.
    #[error("empty option name")]
    EmptyOptionName,
}

/// A validated run of NUL-terminated `name\0value\0` pairs (RFC 2347), as carried by requests
/// and OACKs. Iterating yields `(name, value)` byte strings without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct OptionList<'a> {
    raw: &'a [u8],
}

impl<'a> OptionList<'a> {
    /// An empty list.
    pub const EMPTY: OptionList<'static> = OptionList { raw: &[] };

    /// Validates `raw` as a sequence of complete pairs.
    pub fn parse(raw: &'a [u8]) -> Result<OptionList<'a>, DecodeError> {
        let mut rest = raw;
        while !rest.is_empty() {
            let (name, after) = take_cstr(rest, Field::OptionName)?;
            if name.is_empty() {
                return Err(DecodeError::EmptyOptionName);
            }
            let (_, after) = take_cstr(after, Field::OptionValue)?;
            rest = after;
        }
        Ok(OptionList { raw })
    }

    /// The pairs in the order the peer sent them.
    pub fn iter(&self) -> OptionIter<'a> {
        OptionIter { rest: self.raw }
    }

    /// True when there are no options.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The value of the first option named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The encoded pairs.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

impl fmt::Debug for OptionList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// Iterator over an [`OptionList`].
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The list was validated on construction; a malformed tail simply ends iteration.
        let (name, after) = take_cstr(self.rest, Field::OptionName).ok()?;
        let (value, after) = take_cstr(after, Field::OptionValue).ok()?;
        self.rest = after;
        Some((name, value))
    }
}

/// A read or write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The filename exactly as sent (TFTP filenames are byte strings).
    pub filename: &'a [u8],
    /// The transfer mode.
    pub mode: Mode,
    /// RFC 2347 options, possibly empty.
    pub options: OptionList<'a>,
}

/// A decoded TFTP packet, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request (opcode 1).
    Rrq(Request<'a>),
    /// Write request (opcode 2).
    Wrq(Request<'a>),
    /// Data block (opcode 3).
    Data {
        /// The 16-bit block number on the wire.
        block: u16,
        /// The payload.
        data: &'a [u8],
    },
    /// Acknowledgement (opcode 4).
    Ack {
        /// The block number acknowledged.
        block: u16,
    },
    /// Error (opcode 5).
    Error {
        /// The error code.
        code: ErrorCode,
        /// The message (not required to be valid UTF-8 or NUL-terminated).
        message: &'a [u8],
    },
    /// Option acknowledgement (opcode 6).
    Oack(OptionList<'a>),
}

/// Splits a NUL-terminated string off the front of `buf`.
fn take_cstr(buf: &[u8], field: Field) -> Result<(&[u8], &[u8]), DecodeError> {
    match buf.iter().position(|&b| b == 0) {
        Some(nul) => Ok((&buf[..nul], &buf[nul + 1..])),
        None => Err(DecodeError::Unterminated { field }),
    }
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

impl<'a> Packet<'a> {
    /// Decodes one datagram.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let opcode = read_u16(buf, 0).ok_or(DecodeError::TooShort { len: buf.len() })?;
        let body = &buf[2..];
        match opcode {
            1 | 2 => {
                let (filename, rest) = take_cstr(body, Field::Filename)?;
                if filename.is_empty() {
                    return Err(DecodeError::EmptyFilename);
                }
                let (mode, rest) = take_cstr(rest, Field::Mode)?;
                let mode = Mode::parse(mode).ok_or_else(|| DecodeError::UnknownMode {
                    mode: String::from_utf8_lossy(mode).into_owned(),
                })?;
                let request = Request {
                    filename,
                    mode,
                    options: OptionList::parse(rest)?,
                };
                Ok(if opcode == 1 {
                    Packet::Rrq(request)
                } else {
                    Packet::Wrq(request)
                })
            }
            3 => {
                let block = read_u16(buf, 2).ok_or(DecodeError::TooShort { len: buf.len() })?;
                Ok(Packet::Data {
                    block,
                    data: &buf[DATA_HEADER_LEN..],
                })
            }
            // Trailing bytes after an ACK's block number are tolerated (some firmware pads).
            4 => {
                let block = read_u16(buf, 2).ok_or(DecodeError::TooShort { len: buf.len() })?;
                Ok(Packet::Ack { block })
            }
            5 => {
                let code = read_u16(buf, 2).ok_or(DecodeError::TooShort { len: buf.len() })?;
                let text = &buf[4..];
                // The message should end in NUL; a peer that forgets is still understood.
                let message = match text.iter().position(|&b| b == 0) {
                    Some(nul) => &text[..nul],
                    None => text,
                };
                Ok(Packet::Error {
                    code: ErrorCode::from_code(code),
                    message,
                })
            }
            6 => Ok(Packet::Oack(OptionList::parse(body)?)),
            opcode => Err(DecodeError::UnknownOpcode { opcode }),
        }
    }

    /// Encodes into `out`, returning the length, or `None` if `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer { out, at: 0 };
        match *self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                let op = if matches!(self, Packet::Rrq(_)) {
                    Opcode::Rrq
                } else {
                    Opcode::Wrq
                };
                w.u16(op as u16)?;
                w.bytes(r.filename)?;
                w.u8(0)?;
                w.bytes(r.mode.as_str().as_bytes())?;
                w.u8(0)?;
                w.bytes(r.options.as_bytes())?;
            }
            Packet::Data { block, data } => {
                w.u16(Opcode::Data as u16)?;
                w.u16(block)?;
                w.bytes(data)?;
            }
            Packet::Ack { block } => {
                w.u16(Opcode::Ack as u16)?;
                w.u16(block)?;
            }
            Packet::Error { code, message } => {
                w.u16(Opcode::Error as u16)?;
                w.u16(code.code())?;
                // A NUL inside the message would truncate it for the peer: stop there.
                let end = message
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(message.len());
                w.bytes(&message[..end])?;
                w.u8(0)?;
            }
            Packet::Oack(options) => {
                w.u16(Opcode::Oack as u16)?;
                w.bytes(options.as_bytes())?;
            }
        }
        Some(w.at)
    }

    /// Encodes into a new vector (for tests and rare control packets).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = vec![0; self.encoded_len()];
        let n = self.encode(&mut buf).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    /// The exact encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                2 + r.filename.len() + 1 + r.mode.as_str().len() + 1 + r.options.as_bytes().len()
            }
            Packet::Data { data, .. } => DATA_HEADER_LEN + data.len(),
            Packet::Ack { .. } => 4,
            Packet::Error { message, .. } => {
                4 + message
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(message.len())
                    + 1
            }
            Packet::Oack(o) => 2 + o.as_bytes().len(),
        }
    }
}

/// The four header bytes of a DATA packet.
pub fn data_header(block: u16) -> [u8; DATA_HEADER_LEN] {
    let [hi, lo] = block.to_be_bytes();
    [0, Opcode::Data as u8, hi, lo]
}

/// An ACK packet.
pub fn ack(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, Opcode::Ack as u8, hi, lo]
}

struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Option<()> {
        let end = self.at.checked_add(b.len())?;
        self.out.get_mut(self.at..end)?.copy_from_slice(b);
        self.at = end;
        Some(())
    }
    fn u8(&mut self, v: u8) -> Option<()> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }
}

/// Builds an encoded option list (for OACKs and client requests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionListBuf {
    raw: Vec<u8>,
}

impl OptionListBuf {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `name\0value\0`. Names and values must not contain NUL; a NUL is cut off there.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let cut = |s: &[u8]| s.iter().position(|&b| b == 0).unwrap_or(s.len());
        let name = &name[..cut(name)];
        if name.is_empty() {
            return;
        }
        self.raw.extend_from_slice(name);
        self.raw.push(0);
        self.raw.extend_from_slice(&value[..cut(value)]);
        self.raw.push(0);
    }

    /// Borrows the list.
    pub fn as_list(&self) -> OptionList<'_> {
        OptionList { raw: &self.raw }
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_rrq_with_options_byte_literal() {
        let wire = b"\x00\x01/EWC/17_9_4a/ap1g8\x00OcTeT\x00blksize\x001468\x00tsize\x000\x00";
        let p = Packet::decode(wire).unwrap();
        let Packet::Rrq(r) = p else {
            panic!("not an RRQ: {p:?}")
        };
        assert_eq!(r.filename, b"/EWC/17_9_4a/ap1g8");
        assert_eq!(r.mode, Mode::Octet);
        let opts: Vec<_> = r.options.iter().collect();
        assert_eq!(
            opts,
            vec![(&b"blksize"[..], &b"1468"[..]), (&b"tsize"[..], &b"0"[..])]
        );
        assert_eq!(r.options.get("BLKSIZE"), Some(&b"1468"[..]));
        assert_eq!(p.to_vec(), wire.replace_mode(b"OcTeT", b"octet"));
    }

    trait ReplaceMode {
        fn replace_mode(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }
    impl<const N: usize> ReplaceMode for [u8; N] {
        fn replace_mode(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let pos = self.windows(from.len()).position(|w| w == from).unwrap();
            let mut v = self[..pos].to_vec();
            v.extend_from_slice(to);
            v.extend_from_slice(&self[pos + from.len()..]);
            v
        }
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            Packet::decode(b"\x00\x03\x01\x02abc").unwrap(),
            Packet::Data {
                block: 0x0102,
                data: b"abc"
            }
        );
        assert_eq!(
            Packet::decode(b"\x00\x03\xff\xff").unwrap(),
            Packet::Data {
                block: 65535,
                data: b""
            }
        );
        assert_eq!(
            Packet::decode(b"\x00\x04\x00\x00").unwrap(),
            Packet::Ack { block: 0 }
        );
        assert_eq!(
            Packet::decode(b"\x00\x05\x00\x01File not found\x00").unwrap(),
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: b"File not found"
            }
        );
        let Packet::Oack(o) = Packet::decode(b"\x00\x06blksize\x001468\x00").unwrap() else {
            panic!()
        };
        assert_eq!(o.get("blksize"), Some(&b"1468"[..]));
        let Packet::Wrq(w) = Packet::decode(b"\x00\x02f\x00netascii\x00").unwrap() else {
            panic!()
        };
        assert_eq!((w.filename, w.mode), (&b"f"[..], Mode::Netascii));
        assert!(w.options.is_empty());
    }

    #[test]
    fn precise_decode_errors() {
        use DecodeError::*;
        let cases: &[(&[u8], DecodeError)] = &[
            (b"", TooShort { len: 0 }),
            (b"\x00", TooShort { len: 1 }),
            (b"\x00\x03\x00", TooShort { len: 3 }),
            (b"\x00\x04\x01", TooShort { len: 3 }),
            (b"\x00\x05\x00", TooShort { len: 3 }),
            (b"\x00\x07", UnknownOpcode { opcode: 7 }),
            (b"\x00\x00abc", UnknownOpcode { opcode: 0 }),
            (
                b"\x00\x01file",
                Unterminated {
                    field: Field::Filename,
                },
            ),
            (
                b"\x00\x01file\x00octet",
                Unterminated { field: Field::Mode },
            ),
            (b"\x00\x01\x00octet\x00", EmptyFilename),
            (
                b"\x00\x01f\x00binary\x00",
                UnknownMode {
                    mode: "binary".into(),
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize",
                Unterminated {
                    field: Field::OptionName,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x001468",
                Unterminated {
                    field: Field::OptionValue,
                },
            ),
            (b"\x00\x01f\x00octet\x00\x001\x00", EmptyOptionName),
            (
                b"\x00\x06tsize",
                Unterminated {
                    field: Field::OptionName,
                },
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(Packet::decode(wire).as_ref(), Err(want), "{wire:?}");
        }
    }

    #[test]
    fn error_without_nul_and_ack_with_padding_are_tolerated() {
        assert_eq!(
            Packet::decode(b"\x00\x05\x00\x08no options").unwrap(),
            Packet::Error {
                code: ErrorCode::OptionNegotiation,
                message: b"no options"
            }
        );
        assert_eq!(
            Packet::decode(b"\x00\x04\x00\x07\x00\x00").unwrap(),
            Packet::Ack { block: 7 }
        );
    }

    #[test]
    fn encode_refuses_small_buffer_and_cuts_nul_in_message() {
        let p = Packet::Data {
            block: 1,
            data: &[1, 2, 3],
        };
        assert_eq!(p.encode(&mut [0; 6]), None);
        assert_eq!(p.encode(&mut [0; 7]), Some(7));
        let e = Packet::Error {
            code: ErrorCode::AccessViolation,
            message: b"no\0way",
        };
        assert_eq!(e.to_vec(), b"\x00\x05\x00\x02no\x00");
        assert_eq!(e.encoded_len(), e.to_vec().len());
        assert_eq!(data_header(0xabcd), [0, 3, 0xab, 0xcd]);
        assert_eq!(ack(65535), [0, 4, 0xff, 0xff]);
    }

    #[test]
    fn option_list_buf_skips_empty_names() {
        let mut b = OptionListBuf::new();
        b.push(b"", b"x");
        b.push(b"tsize", b"70512640");
        assert_eq!(b.as_list().as_bytes(), b"tsize\x0070512640\x00");
        assert_eq!(
            OptionList::parse(b.as_list().as_bytes()).unwrap(),
            b.as_list()
        );
    }

    fn cstr() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..40)
    }

    /// An owned packet description, so proptest can generate packets.
    #[derive(Debug, Clone)]
    enum Owned {
        Req(bool, Vec<u8>, Mode, Vec<(Vec<u8>, Vec<u8>)>),
        Data(u16, Vec<u8>),
        Ack(u16),
        Error(u16, Vec<u8>),
        Oack(Vec<(Vec<u8>, Vec<u8>)>),
    }

    fn owned() -> impl Strategy<Value = Owned> {
        let mode = prop_oneof![Just(Mode::Netascii), Just(Mode::Octet), Just(Mode::Mail)];
        let opts = || {
            proptest::collection::vec((proptest::collection::vec(1u8..=255, 1..12), cstr()), 0..5)
        };
        prop_oneof![
            (
                any::<bool>(),
                proptest::collection::vec(1u8..=255, 1..60),
                mode,
                opts()
            )
                .prop_map(|(r, f, m, o)| Owned::Req(r, f, m, o)),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..600))
                .prop_map(|(b, d)| Owned::Data(b, d)),
            any::<u16>().prop_map(Owned::Ack),
            (any::<u16>(), cstr()).prop_map(|(c, m)| Owned::Error(c, m)),
            opts().prop_map(Owned::Oack),
        ]
    }

    fn list(opts: &[(Vec<u8>, Vec<u8>)]) -> OptionListBuf {
        let mut b = OptionListBuf::new();
        for (n, v) in opts {
            b.push(n, v);
        }
        b
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Packet::decode(&bytes);
        }

        #[test]
        fn decode_encode_decode_is_stable(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(p) = Packet::decode(&bytes) {
                let again = p.to_vec();
                prop_assert_eq!(Packet::decode(&again), Ok(p));
            }
        }

        #[test]
        fn encode_decode_round_trip(o in owned()) {
            let opts_buf;
            let p = match &o {
                Owned::Req(rrq, f, m, opts) => {
                    opts_buf = list(opts);
                    let r = Request { filename: f, mode: *m, options: opts_buf.as_list() };
                    if *rrq { Packet::Rrq(r) } else { Packet::Wrq(r) }
                }
                Owned::Data(b, d) => Packet::Data { block: *b, data: d },
                Owned::Ack(b) => Packet::Ack { block: *b },
                Owned::Error(c, m) => Packet::Error { code: ErrorCode::from_code(*c), message: m },
                Owned::Oack(opts) => {
                    opts_buf = list(opts);
                    Packet::Oack(opts_buf.as_list())
                }
            };
            let wire = p.to_vec();
            prop_assert_eq!(wire.len(), p.encoded_len());
            prop_assert_eq!(Packet::decode(&wire), Ok(p));
        }
    }
}
