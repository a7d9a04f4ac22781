//! Whole control messages: CAPWAP header, control header, message elements.
//!
//! [`RawMessage::decode`] checks the framing and hands out the elements one at a time
//! without allocating; [`Message::decode`] collects them into a `Vec` (one allocation per
//! message, none per element; variable data stays borrowed from the datagram).
//!
//! # Element-length consistency
//! The control header's Message Element Length is authoritative for where the elements end:
//! - below 3 (it counts itself and the flags) is [`CapwapError::ElementLengthTooSmall`];
//! - more element bytes than the datagram holds is [`CapwapError::ElementsTruncated`] —
//!   nothing is read past the datagram and nothing is guessed;
//! - fewer than the datagram holds: the extra bytes are ignored ([`RawMessage::trailing`]
//!   counts them). actube likewise tolerates peers whose length disagrees with the payload;
//!   trailing bytes are never parsed as elements;
//! - inside the declared region the TLVs must fit exactly: an element running past it is
//!   [`CapwapError::ElementValueTruncated`], a 1–3 byte tail
//!   [`CapwapError::ElementHeaderTruncated`].
//!
//! # The hot path
//! [`encode_image_data_request`] and [`encode_image_data_response`] write the controller's
//! ~70,000 messages per image straight into the caller's buffer: one `reserve`, no
//! intermediate allocation, no `Message` or `Vec<Element>`.

use std::fmt;

use super::control::{CONTROL_HEADER_LEN, ControlHeader, MAX_ELEMENTS_LEN, MessageType};
use super::element::{
    ELEMENT_HEADER_LEN, Element, ElementError, ElementType, ImageData, ImageIdentifier,
    ImageInformation, ResultCode,
};
use super::header::{Header, HeaderError};

/// Why a datagram is not a control message this codec accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapwapError {
    /// The CAPWAP header is malformed (or DTLS, or another version).
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A fragment: it must go through a [`Reassembler`](super::fragment::Reassembler) first.
    #[error("fragment {id} at byte offset {offset}: reassemble it first")]
    Fragment {
        /// Fragment ID.
        id: u16,
        /// Offset in bytes.
        offset: usize,
    },
    /// Fewer than 8 bytes after the CAPWAP header.
    #[error("control header truncated: {len} bytes after the CAPWAP header, 8 needed")]
    ControlHeaderTruncated {
        /// Bytes after the CAPWAP header.
        len: usize,
    },
    /// Control header flags other than zero (§4.5.1.4).
    #[error("control header flags are {flags:#04x}; they must be 0")]
    ControlFlags {
        /// The flags byte.
        flags: u8,
    },
    /// Message Element Length below 3.
    #[error("Message Element Length {declared} is below 3")]
    ElementLengthTooSmall {
        /// The field's value.
        declared: u16,
    },
    /// Message Element Length claims more element bytes than the datagram holds.
    #[error(
        "Message Element Length announces {declared} element bytes but only {available} follow"
    )]
    ElementsTruncated {
        /// Element bytes announced (the field − 3).
        declared: usize,
        /// Element bytes present.
        available: usize,
    },
    /// 1–3 bytes left where an element header (4 bytes) should be.
    #[error("element header at offset {offset} truncated: {remaining} bytes left")]
    ElementHeaderTruncated {
        /// Offset in the element bytes.
        offset: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// An element whose Length runs past the declared element bytes.
    #[error("{element} at offset {offset} is {len} bytes but only {remaining} remain")]
    ElementValueTruncated {
        /// The element's type.
        element: ElementType,
        /// Offset of its TLV in the element bytes.
        offset: usize,
        /// Its Length field.
        len: usize,
        /// Bytes left after its TLV header.
        remaining: usize,
    },
    /// An element's value is malformed.
    #[error("element at offset {offset}: {source}")]
    Element {
        /// Offset of its TLV in the element bytes.
        offset: usize,
        /// What is wrong with it.
        #[source]
        source: ElementError,
    },
}

/// Why a message cannot be encoded. Nothing is left in the output buffer on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The CAPWAP header cannot be encoded.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A whole message with fragment fields; use [`fragment`](super::fragment::fragment).
    #[error("a whole message cannot carry fragment fields; fragment the encoded message")]
    FragmentHeader,
    /// An element breaks a rule of its type.
    #[error("element {index}: {source}")]
    Element {
        /// Its index in the message.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: ElementError,
    },
    /// More element bytes than Message Element Length can count.
    #[error("{len} bytes of elements; a message carries at most 65532")]
    ElementsTooLong {
        /// The element bytes.
        len: usize,
    },
}

/// A control message whose framing is checked and whose elements are still bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// The CAPWAP header (never a fragment).
    pub header: Header<'a>,
    /// The control header.
    pub control: ControlHeader,
    /// Exactly the element bytes Message Element Length announces.
    pub elements: &'a [u8],
    /// Bytes after the announced elements, ignored.
    pub trailing: usize,
}

impl<'a> RawMessage<'a> {
    /// Checks the CAPWAP header, the control header and the element length; see the module
    /// doc for the element-length policy.
    pub fn decode(datagram: &'a [u8]) -> Result<RawMessage<'a>, CapwapError> {
        let (header, payload) = Header::decode(datagram)?;
        if let Some(f) = header.fragment {
            return Err(CapwapError::Fragment {
                id: f.id,
                offset: f.byte_offset(),
            });
        }
        let (control, rest) = ControlHeader::decode(payload)?;
        let declared = usize::from(control.elements_len);
        let Some((elements, trailing)) = rest.split_at_checked(declared) else {
            return Err(CapwapError::ElementsTruncated {
                declared,
                available: rest.len(),
            });
        };
        Ok(RawMessage {
            header,
            control,
            elements,
            trailing: trailing.len(),
        })
    }

    /// The elements, decoded one at a time; iteration stops after the first error.
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            all: self.elements,
            rest: self.elements,
            failed: false,
        }
    }
}

/// Iterator over the elements of a [`RawMessage`].
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    all: &'a [u8],
    rest: &'a [u8],
    failed: bool,
}

/// One TLV, not yet decoded.
struct Tlv<'a> {
    offset: usize,
    kind: ElementType,
    value: &'a [u8],
}

impl<'a> Elements<'a> {
    /// Splits the next TLV off without decoding its value.
    fn next_tlv(&mut self) -> Option<Result<Tlv<'a>, CapwapError>> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let offset = self.all.len() - self.rest.len();
        let Some((&[t0, t1, l0, l1], after)) = self.rest.split_first_chunk::<4>() else {
            self.failed = true;
            return Some(Err(CapwapError::ElementHeaderTruncated {
                offset,
                remaining: self.rest.len(),
            }));
        };
        let element = ElementType(u16::from_be_bytes([t0, t1]));
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some((value, after)) = after.split_at_checked(len) else {
            self.failed = true;
            return Some(Err(CapwapError::ElementValueTruncated {
                element,
                offset,
                len,
                remaining: after.len(),
            }));
        };
        self.rest = after;
        Some(Ok(Tlv {
            offset,
            kind: element,
            value,
        }))
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Element<'a>, CapwapError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_tlv()?.and_then(|t| {
            Element::decode(t.kind, t.value).map_err(|source| CapwapError::Element {
                offset: t.offset,
                source,
            })
        });
        self.failed |= item.is_err();
        Some(item)
    }
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The CAPWAP header ([`Header::CONTROL`] for messages this side builds).
    pub header: Header<'a>,
    /// Message Type.
    pub message_type: MessageType,
    /// Sequence Number.
    pub seq: u8,
    /// The elements, in order.
    pub elements: Vec<Element<'a>>,
}

impl<'a> Message<'a> {
    /// A message with the usual control header.
    pub fn new(message_type: MessageType, seq: u8, elements: Vec<Element<'a>>) -> Message<'a> {
        Message {
            header: Header::CONTROL,
            message_type,
            seq,
            elements,
        }
    }

    /// Decodes a whole (unfragmented or reassembled) control message.
    pub fn decode(datagram: &'a [u8]) -> Result<Message<'a>, CapwapError> {
        let raw = RawMessage::decode(datagram)?;
        // Count first so the one allocation is exact.
        let mut count = raw.elements();
        let n = std::iter::from_fn(|| count.next_tlv()).count();
        let mut elements = Vec::with_capacity(n);
        for e in raw.elements() {
            elements.push(e?);
        }
        Ok(Message {
            header: raw.header,
            message_type: raw.control.message_type,
            seq: raw.control.seq,
            elements,
        })
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        self.header.encoded_len() + CONTROL_HEADER_LEN + self.elements_len()
    }

    fn elements_len(&self) -> usize {
        self.elements.iter().map(Element::encoded_len).sum()
    }

    /// Appends the message to `out`; on error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The encoded message in a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    fn encode_unchecked(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.header.fragment.is_some() {
            return Err(EncodeError::FragmentHeader);
        }
        let len = self.elements_len();
        if len > MAX_ELEMENTS_LEN {
            return Err(EncodeError::ElementsTooLong { len });
        }
        out.reserve(self.header.encoded_len() + CONTROL_HEADER_LEN + len);
        self.header.encode(out)?;
        ControlHeader {
            message_type: self.message_type,
            seq: self.seq,
            elements_len: len as u16,
        }
        .encode(out)?;
        for (index, e) in self.elements.iter().enumerate() {
            e.encode(out)
                .map_err(|source| EncodeError::Element { index, source })?;
        }
        Ok(())
    }

    /// The first element of type `kind`.
    pub fn find(&self, kind: ElementType) -> Option<&Element<'a>> {
        self.elements.iter().find(|e| e.kind() == kind)
    }

    /// The first Result Code.
    pub fn result_code(&self) -> Option<ResultCode> {
        self.elements.iter().find_map(|e| match e {
            Element::ResultCode(c) => Some(*c),
            _ => None,
        })
    }

    /// The first Image Data.
    pub fn image_data(&self) -> Option<ImageData<'a>> {
        self.elements.iter().find_map(|e| match e {
            Element::ImageData(d) => Some(*d),
            _ => None,
        })
    }

    /// The first Image Identifier.
    pub fn image_identifier(&self) -> Option<ImageIdentifier<'a>> {
        self.elements.iter().find_map(|e| match e {
            Element::ImageIdentifier(i) => Some(*i),
            _ => None,
        })
    }

    /// The first Image Information.
    pub fn image_information(&self) -> Option<ImageInformation> {
        self.elements.iter().find_map(|e| match e {
            Element::ImageInformation(i) => Some(*i),
            _ => None,
        })
    }

    /// Types of the elements this codec does not model ([`Element::Unknown`]). RFC 5415
    /// allows answering a request that carries an unrecognised element with Result Code 21;
    /// the controller and the AP simulator ignore such elements instead (Discovery Type, for
    /// one, is read only as present).
    pub fn unknown_elements(&self) -> impl Iterator<Item = ElementType> + '_ {
        self.elements.iter().filter_map(|e| match e {
            Element::Unknown { kind, .. } => Some(*kind),
            _ => None,
        })
    }

    /// Checks the mandatory elements of the message's type ([`mandatory_elements`]); the
    /// first one missing is reported, and the peer answers Result Code 20.
    pub fn check_mandatory(&self) -> Result<(), MissingElement> {
        for &any_of in mandatory_elements(self.message_type) {
            if !self.elements.iter().any(|e| any_of.contains(&e.kind())) {
                return Err(MissingElement {
                    message_type: self.message_type,
                    any_of,
                });
            }
        }
        Ok(())
    }
}

/// A mandatory element (or one of a set of alternatives) that a message lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingElement {
    /// The message.
    pub message_type: MessageType,
    /// One of these was required.
    pub any_of: &'static [ElementType],
}

impl MissingElement {
    /// The Result Code to answer with: 20, Missing Mandatory Message Element.
    pub fn result_code(&self) -> ResultCode {
        ResultCode::MISSING_MANDATORY_ELEMENT
    }
}

impl fmt::Display for MissingElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lacks ", self.message_type)?;
        for (i, kind) in self.any_of.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{kind}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MissingElement {}

use ElementType as E;

/// RFC 5415 §6.1 (and RFC 5416 §6.25 for the radio information).
const JOIN_REQUEST_MANDATORY: &[&[ElementType]] = &[
    &[E::LOCATION_DATA],
    &[E::WTP_BOARD_DATA],
    &[E::WTP_DESCRIPTOR],
    &[E::WTP_NAME],
    &[E::SESSION_ID],
    &[E::WTP_FRAME_TUNNEL_MODE],
    &[E::WTP_MAC_TYPE],
    &[E::WTP_RADIO_INFORMATION],
    &[E::ECN_SUPPORT],
    &[E::CAPWAP_LOCAL_IPV4_ADDRESS, E::CAPWAP_LOCAL_IPV6_ADDRESS],
];

/// RFC 5415 §6.2.
const JOIN_RESPONSE_MANDATORY: &[&[ElementType]] = &[
    &[E::RESULT_CODE],
    &[E::AC_DESCRIPTOR],
    &[E::AC_NAME],
    &[E::WTP_RADIO_INFORMATION],
    &[E::ECN_SUPPORT],
    &[
        E::CAPWAP_CONTROL_IPV4_ADDRESS,
        E::CAPWAP_CONTROL_IPV6_ADDRESS,
    ],
    &[E::CAPWAP_LOCAL_IPV4_ADDRESS, E::CAPWAP_LOCAL_IPV6_ADDRESS],
];

/// RFC 5415 §5.1 (and RFC 5416 §6.25 for the radio information).
const DISCOVERY_REQUEST_MANDATORY: &[&[ElementType]] = &[
    &[E::DISCOVERY_TYPE],
    &[E::WTP_BOARD_DATA],
    &[E::WTP_DESCRIPTOR],
    &[E::WTP_FRAME_TUNNEL_MODE],
    &[E::WTP_MAC_TYPE],
    &[E::WTP_RADIO_INFORMATION],
];

/// RFC 5415 §5.2.
const DISCOVERY_RESPONSE_MANDATORY: &[&[ElementType]] = &[
    &[E::AC_DESCRIPTOR],
    &[E::AC_NAME],
    &[E::WTP_RADIO_INFORMATION],
    &[
        E::CAPWAP_CONTROL_IPV4_ADDRESS,
        E::CAPWAP_CONTROL_IPV6_ADDRESS,
    ],
];

/// RFC 5415 §9.1 (firmware management): the Image Data Response MUST carry a Result Code.
const IMAGE_DATA_RESPONSE_MANDATORY: &[&[ElementType]] = &[&[E::RESULT_CODE]];

/// RFC 5415 §9 (Reset Request): the Image Identifier MUST be included.
const RESET_REQUEST_MANDATORY: &[&[ElementType]] = &[&[E::IMAGE_IDENTIFIER]];

/// The mandatory elements of a message type, each entry a set of alternatives. Known for
/// Discovery and Join Request/Response, Image Data Response and Reset Request; empty for the
/// others.
pub fn mandatory_elements(message_type: MessageType) -> &'static [&'static [ElementType]] {
    match message_type {
        MessageType::DISCOVERY_REQUEST => DISCOVERY_REQUEST_MANDATORY,
        MessageType::DISCOVERY_RESPONSE => DISCOVERY_RESPONSE_MANDATORY,
        MessageType::JOIN_REQUEST => JOIN_REQUEST_MANDATORY,
        MessageType::JOIN_RESPONSE => JOIN_RESPONSE_MANDATORY,
        MessageType::IMAGE_DATA_RESPONSE => IMAGE_DATA_RESPONSE_MANDATORY,
        MessageType::RESET_REQUEST => RESET_REQUEST_MANDATORY,
        _ => &[],
    }
}

/// [`Header::CONTROL`] encoded.
const CONTROL_HEADER_BYTES: [u8; 8] = [0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0];

/// Bytes an Image Data Request adds to its data: CAPWAP header (8), control header (8),
/// element header (4) and Data Type (1).
pub const IMAGE_DATA_REQUEST_OVERHEAD: usize = 8 + CONTROL_HEADER_LEN + ELEMENT_HEADER_LEN + 1;

/// Appends an Image Data Request carrying one Image Data element, with the usual control
/// header — byte for byte what [`Message::encode`] makes of the same message, without
/// building one. Fails only when the data is longer than a message can carry (65527 bytes).
pub fn encode_image_data_request(
    seq: u8,
    data: ImageData<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let bytes = data.data();
    let value_len = 1 + bytes.len();
    let elements_len = ELEMENT_HEADER_LEN + value_len;
    if elements_len > MAX_ELEMENTS_LEN {
        return Err(EncodeError::ElementsTooLong { len: elements_len });
    }
    out.reserve(IMAGE_DATA_REQUEST_OVERHEAD + bytes.len());
    out.extend_from_slice(&CONTROL_HEADER_BYTES);
    out.extend_from_slice(&MessageType::IMAGE_DATA_REQUEST.0.to_be_bytes());
    out.push(seq);
    out.extend_from_slice(&((elements_len + 3) as u16).to_be_bytes());
    out.push(0);
    out.extend_from_slice(&ElementType::IMAGE_DATA.0.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(data.data_type());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends an Image Data Response carrying only a Result Code.
pub fn encode_image_data_response(seq: u8, result: ResultCode, out: &mut Vec<u8>) {
    out.reserve(8 + CONTROL_HEADER_LEN + ELEMENT_HEADER_LEN + 4);
    out.extend_from_slice(&CONTROL_HEADER_BYTES);
    out.extend_from_slice(&MessageType::IMAGE_DATA_RESPONSE.0.to_be_bytes());
    out.push(seq);
    out.extend_from_slice(&(3 + 8u16).to_be_bytes());
    out.push(0);
    out.extend_from_slice(&ElementType::RESULT_CODE.0.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&result.0.to_be_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::capwap::element::tests::{Owned, any_element};
    use crate::capwap::element::{
        EcnSupport, EncryptionCapability, FrameTunnelMode, MacType, RadioInformation, SubElements,
        VendorVersion, WtpBoardData, WtpDescriptor,
    };
    use crate::capwap::header::tests::any_header;
    use crate::capwap::header::{Fragment, PreambleType, preamble};
    use proptest::prelude::*;

    #[rustfmt::skip]
    const IMAGE_DATA_REQUEST: [u8; 26] = [
        0x00, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // HLEN 2, RID 0, WBID 1
        0x00, 0x00, 0x00, 0x0f,                         // Image Data Request
        0x2a, 0x00, 0x0d, 0x00,                         // seq, 3 + (4 + 1 + 5), flags
        0x00, 0x18, 0x00, 0x06, 0x01,                   // Image Data, 1 + 5, type 1
        b'h', b'e', b'l', b'l', b'o',
    ];

    #[rustfmt::skip]
    const IMAGE_DATA_RESPONSE: [u8; 24] = [
        0x00, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x10,                         // Image Data Response
        0x2a, 0x00, 0x0b, 0x00,                         // seq, 3 + 8, flags
        0x00, 0x21, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // Result Code 0
    ];

    #[test]
    fn image_data_request_is_the_reference_bytes() {
        let mut fast = Vec::new();
        encode_image_data_request(0x2a, ImageData::Data(b"hello"), &mut fast).unwrap();
        assert_eq!(fast, IMAGE_DATA_REQUEST);
        let m = Message::new(
            MessageType::IMAGE_DATA_REQUEST,
            0x2a,
            vec![Element::ImageData(ImageData::Data(b"hello"))],
        );
        assert_eq!(m.to_vec().unwrap(), IMAGE_DATA_REQUEST);
        assert_eq!(m.encoded_len(), IMAGE_DATA_REQUEST.len());
        assert_eq!(Message::decode(&IMAGE_DATA_REQUEST).unwrap(), m);
        assert_eq!(preamble(&IMAGE_DATA_REQUEST), Ok(PreambleType::Capwap));

        // The last block: Data Type 2.
        let mut eof = Vec::new();
        encode_image_data_request(7, ImageData::Eof(b"tail"), &mut eof).unwrap();
        assert_eq!(
            eof[12..],
            [7, 0, 12, 0, 0, 0x18, 0, 5, 2, b't', b'a', b'i', b'l']
        );
        // An abort: Data Type 5, no data.
        let mut abort = Vec::new();
        encode_image_data_request(8, ImageData::Error, &mut abort).unwrap();
        assert_eq!(abort[12..], [8, 0, 8, 0, 0, 0x18, 0, 1, 5]);
        assert_eq!(
            Message::decode(&abort).unwrap().image_data(),
            Some(ImageData::Error)
        );
    }

    #[test]
    fn image_data_response_is_the_reference_bytes() {
        let mut fast = Vec::new();
        encode_image_data_response(0x2a, ResultCode::SUCCESS, &mut fast);
        assert_eq!(fast, IMAGE_DATA_RESPONSE);
        let m = Message::decode(&IMAGE_DATA_RESPONSE).unwrap();
        assert_eq!(m.message_type, MessageType::IMAGE_DATA_RESPONSE);
        assert_eq!(m.seq, 0x2a);
        assert_eq!(m.result_code(), Some(ResultCode::SUCCESS));
        assert_eq!(m.check_mandatory(), Ok(()));
        assert_eq!(m.to_vec().unwrap(), IMAGE_DATA_RESPONSE);
    }

    #[test]
    fn the_fast_path_writes_into_out_without_reallocating() {
        let block = vec![0x33u8; 1377];
        let mut out = Vec::with_capacity(IMAGE_DATA_REQUEST_OVERHEAD + block.len());
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        for seq in 0..=255u8 {
            out.clear();
            encode_image_data_request(seq, ImageData::Data(&block), &mut out).unwrap();
            assert_eq!(out.len(), IMAGE_DATA_REQUEST_OVERHEAD + block.len());
            assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
        }
        // Decoding borrows the block from the datagram.
        let raw = RawMessage::decode(&out).unwrap();
        let Some(Ok(Element::ImageData(ImageData::Data(data)))) = raw.elements().next() else {
            panic!("no image data")
        };
        assert!(std::ptr::eq(
            data.as_ptr(),
            out[IMAGE_DATA_REQUEST_OVERHEAD..].as_ptr()
        ));

        let too_big = vec![0u8; 65_528];
        assert_eq!(
            encode_image_data_request(0, ImageData::Data(&too_big), &mut out),
            Err(EncodeError::ElementsTooLong { len: 65_533 })
        );
        assert!(encode_image_data_request(0, ImageData::Data(&too_big[1..]), &mut out).is_ok());
    }

    #[test]
    fn element_length_is_authoritative_and_trailing_bytes_are_ignored() {
        // Three bytes beyond the declared elements: ignored, and counted.
        let mut wire = IMAGE_DATA_REQUEST.to_vec();
        wire.extend_from_slice(&[0xde, 0xad, 0x00]);
        let raw = RawMessage::decode(&wire).unwrap();
        assert_eq!(raw.trailing, 3);
        assert_eq!(
            Message::decode(&wire).unwrap(),
            Message::decode(&IMAGE_DATA_REQUEST).unwrap()
        );

        // Declared longer than the datagram.
        let cut = &IMAGE_DATA_REQUEST[..IMAGE_DATA_REQUEST.len() - 1];
        assert_eq!(
            Message::decode(cut),
            Err(CapwapError::ElementsTruncated {
                declared: 10,
                available: 9
            })
        );

        // Declared shorter than the element inside it: the TLV runs past the region.
        let mut short = IMAGE_DATA_REQUEST;
        short[14] = 0x0c;
        assert_eq!(
            Message::decode(&short),
            Err(CapwapError::ElementValueTruncated {
                element: ElementType::IMAGE_DATA,
                offset: 0,
                len: 6,
                remaining: 5
            })
        );

        // A 2-byte tail inside the region.
        let mut tail = IMAGE_DATA_RESPONSE.to_vec();
        tail[14] = 0x0d;
        tail.extend_from_slice(&[0, 0x21]);
        assert_eq!(
            Message::decode(&tail),
            Err(CapwapError::ElementHeaderTruncated {
                offset: 8,
                remaining: 2
            })
        );

        // Below 3.
        let mut tiny = IMAGE_DATA_RESPONSE;
        tiny[14] = 2;
        assert_eq!(
            Message::decode(&tiny),
            Err(CapwapError::ElementLengthTooSmall { declared: 2 })
        );

        // Exactly 3: no elements.
        let echo = [0, 0x10, 2, 0, 0, 0, 0, 0, 0, 0, 0, 13, 9, 0, 3, 0];
        let m = Message::decode(&echo).unwrap();
        assert_eq!((m.message_type, m.seq), (MessageType::ECHO_REQUEST, 9));
        assert!(m.elements.is_empty());
    }

    #[test]
    fn element_errors_carry_their_offset() {
        let mut wire = IMAGE_DATA_RESPONSE.to_vec();
        wire[14] = 3 + 8 + 6;
        wire.extend_from_slice(&[0, 0x18, 0, 2, 9, 0]); // Image Data of type 9
        assert_eq!(
            Message::decode(&wire),
            Err(CapwapError::Element {
                offset: 8,
                source: ElementError::UnknownImageDataType { data_type: 9 }
            })
        );
        let raw = RawMessage::decode(&wire).unwrap();
        let items: Vec<_> = raw.elements().collect();
        assert_eq!(items.len(), 2, "iteration stops after the error");
        assert!(items[0].is_ok() && items[1].is_err());
    }

    #[test]
    fn fragments_and_dtls_are_refused_with_their_own_errors() {
        let mut frag = IMAGE_DATA_REQUEST;
        frag[3] = 0x80; // F
        frag[4..6].copy_from_slice(&[0x12, 0x34]);
        frag[7] = 2 << 3;
        assert_eq!(
            Message::decode(&frag),
            Err(CapwapError::Fragment {
                id: 0x1234,
                offset: 16
            })
        );
        let dtls = [0x01, 0, 0, 0, 0x17, 0xfe, 0xfd, 0, 1];
        assert_eq!(
            Message::decode(&dtls),
            Err(CapwapError::Header(HeaderError::Dtls))
        );
        let mut flags = IMAGE_DATA_RESPONSE;
        flags[15] = 0x80;
        assert_eq!(
            Message::decode(&flags),
            Err(CapwapError::ControlFlags { flags: 0x80 })
        );
    }

    #[test]
    fn encode_errors_leave_the_buffer_as_it_was() {
        let mut out = vec![1, 2, 3];
        let mut m = Message::new(
            MessageType::RESET_REQUEST,
            1,
            vec![
                Element::ResultCode(ResultCode::SUCCESS),
                Element::WtpRadioInformation(RadioInformation {
                    radio_id: 0,
                    radio_type: 0,
                }),
            ],
        );
        assert_eq!(
            m.encode(&mut out),
            Err(EncodeError::Element {
                index: 1,
                source: ElementError::RadioIdOutOfRange { radio_id: 0 }
            })
        );
        assert_eq!(out, [1, 2, 3]);
        let big = vec![0u8; 40_000];
        m.elements = vec![
            Element::LocationData(&big[..1000]),
            Element::Unknown {
                kind: ElementType(4000),
                value: &big,
            },
            Element::Unknown {
                kind: ElementType(4000),
                value: &big[..30_000],
            },
        ];
        assert_eq!(
            m.encode(&mut out),
            Err(EncodeError::ElementsTooLong { len: 71_012 })
        );
        m.elements.clear();
        m.header.fragment = Some(Fragment {
            id: 1,
            offset: 0,
            last: true,
        });
        assert_eq!(m.encode(&mut out), Err(EncodeError::FragmentHeader));
        assert_eq!(out, [1, 2, 3]);
    }

    fn join_request<'a>(encryption: &'a [EncryptionCapability], mac: &'a [u8; 6]) -> Message<'a> {
        let cisco = |value| VendorVersion {
            vendor_id: 4_232_704,
            value,
        };
        Message::new(
            MessageType::JOIN_REQUEST,
            1,
            vec![
                Element::LocationData(b"lab"),
                Element::WtpBoardData(WtpBoardData {
                    vendor_id: 4_232_704,
                    model: b"C9120AXI",
                    serial: b"FOC1234X",
                    board_id: None,
                    board_revision: None,
                    base_mac: Some(mac),
                }),
                Element::WtpDescriptor(WtpDescriptor {
                    max_radios: 2,
                    radios_in_use: 2,
                    encryption: SubElements::new(encryption),
                    hardware_version: cisco(b"1.0"),
                    active_software_version: cisco(b"17.3.3.26"),
                    boot_version: cisco(b"1.1"),
                    other_software_version: Some(cisco(b"8.10.130.0")),
                }),
                Element::WtpName(b"AP-01"),
                Element::SessionId([1; 16]),
                Element::WtpFrameTunnelMode(FrameTunnelMode(FrameTunnelMode::LOCAL_BRIDGING)),
                Element::WtpMacType(MacType::Local),
                Element::WtpRadioInformation(RadioInformation {
                    radio_id: 1,
                    radio_type: RadioInformation::TYPE_G | RadioInformation::TYPE_N,
                }),
                Element::EcnSupport(EcnSupport::Limited),
                Element::LocalIpv4Address(Ipv4Addr::LOCALHOST),
            ],
        )
    }

    #[test]
    fn join_request_mandatory_elements_are_checked_one_by_one() {
        let encryption = [EncryptionCapability {
            wbid: 1,
            capabilities: 0,
        }];
        let mac = [0, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f];
        let full = join_request(&encryption, &mac);
        let wire = full.to_vec().unwrap();
        let decoded = Message::decode(&wire).unwrap();
        assert_eq!(decoded, full);
        assert_eq!(decoded.check_mandatory(), Ok(()));
        for i in 0..full.elements.len() {
            let mut m = full.clone();
            let gone = m.elements.remove(i).kind();
            let missing = m.check_mandatory().unwrap_err();
            assert!(missing.any_of.contains(&gone), "{gone}");
            assert_eq!(missing.result_code(), ResultCode::MISSING_MANDATORY_ELEMENT);
        }
        // The IPv6 local address satisfies the "one of" (it decodes as Unknown type 50).
        let mut v6 = full.clone();
        v6.elements.pop();
        v6.elements.push(Element::Unknown {
            kind: ElementType::CAPWAP_LOCAL_IPV6_ADDRESS,
            value: &[0; 16],
        });
        let wire = v6.to_vec().unwrap();
        let decoded = Message::decode(&wire).unwrap();
        assert_eq!(decoded.check_mandatory(), Ok(()));
        assert_eq!(
            decoded.unknown_elements().collect::<Vec<_>>(),
            [ElementType::CAPWAP_LOCAL_IPV6_ADDRESS]
        );
        let mut m = full.clone();
        m.elements.pop();
        assert_eq!(
            m.check_mandatory().unwrap_err().to_string(),
            "Join Request (3) lacks CAPWAP Local IPv4 Address (30) or \
             CAPWAP Local IPv6 Address (50)"
        );
    }

    #[test]
    fn join_response_and_reset_request_mandatory_elements() {
        let resp = Message::new(
            MessageType::JOIN_RESPONSE,
            1,
            vec![
                Element::ResultCode(ResultCode::SUCCESS),
                Element::AcName(b"ewc"),
                Element::WtpRadioInformation(RadioInformation {
                    radio_id: 1,
                    radio_type: RadioInformation::TYPE_A,
                }),
                Element::EcnSupport(EcnSupport::Limited),
                Element::ControlIpv4Address(crate::capwap::ControlIpv4Address {
                    address: Ipv4Addr::LOCALHOST,
                    wtp_count: 0,
                }),
                Element::LocalIpv4Address(Ipv4Addr::LOCALHOST),
            ],
        );
        let missing = resp.check_mandatory().unwrap_err();
        assert_eq!(missing.any_of, [ElementType::AC_DESCRIPTOR]);
        assert_eq!(
            missing.to_string(),
            "Join Response (4) lacks AC Descriptor (1)"
        );

        let reset = Message::new(MessageType::RESET_REQUEST, 3, vec![]);
        let missing = reset.check_mandatory().unwrap_err();
        assert_eq!(missing.any_of, [ElementType::IMAGE_IDENTIFIER]);
        assert_eq!(missing.result_code().0, 20);
        let reset = Message::new(
            MessageType::RESET_REQUEST,
            3,
            vec![Element::ImageIdentifier(ImageIdentifier {
                vendor_id: 9,
                data: "17.9.4.27",
            })],
        );
        assert_eq!(reset.check_mandatory(), Ok(()));
        assert_eq!(
            Message::new(MessageType::ECHO_REQUEST, 0, vec![]).check_mandatory(),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn every_message_round_trips(
            header in any_header(false),
            message_type in any::<u32>(),
            seq in any::<u8>(),
            owned in proptest::collection::vec(any_element(), 0..6),
        ) {
            let lists: Vec<_> = owned.iter().map(Owned::lists).collect();
            let elements = owned.iter().zip(&lists).map(|(o, l)| o.element(l)).collect();
            let m = Message {
                header: header.header(),
                message_type: MessageType(message_type),
                seq,
                elements,
            };
            let wire = m.to_vec().unwrap();
            prop_assert_eq!(wire.len(), m.encoded_len());
            prop_assert_eq!(Message::decode(&wire).unwrap(), m);
        }

        #[test]
        fn fast_path_equals_the_general_encoder(
            seq in any::<u8>(),
            kind in 0..3u8,
            data in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let d = match kind {
                0 => ImageData::Data(&data),
                1 => ImageData::Eof(&data),
                _ => ImageData::Error,
            };
            let mut fast = Vec::new();
            encode_image_data_request(seq, d, &mut fast).unwrap();
            let m = Message::new(MessageType::IMAGE_DATA_REQUEST, seq, vec![Element::ImageData(d)]);
            prop_assert_eq!(&fast, &m.to_vec().unwrap());
            let mut resp = Vec::new();
            encode_image_data_response(seq, ResultCode(u32::from(kind)), &mut resp);
            let m = Message::new(
                MessageType::IMAGE_DATA_RESPONSE,
                seq,
                vec![Element::ResultCode(ResultCode(u32::from(kind)))],
            );
            prop_assert_eq!(resp, m.to_vec().unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(m) = Message::decode(&bytes) {
                let wire = m.to_vec().unwrap();
                prop_assert_eq!(Message::decode(&wire).unwrap(), m);
            }
        }

        #[test]
        fn plausible_messages_never_panic_and_re_encode(
            seq in any::<u8>(),
            tlvs in proptest::collection::vec(
                (
                    prop_oneof![
                        proptest::sample::select(
                            crate::capwap::element::tests::MODELED.to_vec()
                        ),
                        any::<u16>()
                    ],
                    proptest::collection::vec(any::<u8>(), 0..60),
                    0..3usize,
                ),
                0..6,
            ),
        ) {
            // A valid header and control header, then TLVs whose lengths are sometimes off.
            let mut elements = Vec::new();
            for (kind, value, skew) in &tlvs {
                elements.extend_from_slice(&kind.to_be_bytes());
                elements.extend_from_slice(&((value.len() + skew / 2) as u16).to_be_bytes());
                elements.extend_from_slice(value);
            }
            let mut wire = CONTROL_HEADER_BYTES.to_vec();
            wire.extend_from_slice(&[0, 0, 0, 3, seq]);
            wire.extend_from_slice(&((elements.len() + 3) as u16).to_be_bytes());
            wire.push(0);
            wire.extend_from_slice(&elements);
            if let Ok(m) = Message::decode(&wire) {
                let again = m.to_vec().unwrap();
                prop_assert_eq!(Message::decode(&again).unwrap(), m);
            }
        }
    }
}
