//! The control header (RFC 5415 §4.5.1) and the message types (§4.5.1.1).
//!
//! ```text
//! |                       Message Type (32)                       |
//! |  Seq Num (8)  |     Msg Element Length (16)   |   Flags (8)   |
//! ```
//!
//! Message Element Length counts the bytes after the Sequence Number: itself (2), the flags
//! (1) and the elements, so it is `3 + element bytes` (§4.5.1.3). Flags MUST be zero.

use std::fmt;

use super::message::{CapwapError, EncodeError};
use super::reader::Reader;

/// Bytes of the control header.
pub const CONTROL_HEADER_LEN: usize = 8;
/// The most element bytes one message can carry: Message Element Length is 16 bits and
/// counts 3 bytes of its own.
pub const MAX_ELEMENTS_LEN: usize = u16::MAX as usize - 3;

/// A control message type: IANA enterprise number × 256 + enterprise-specific type
/// (§4.5.1.1). Base CAPWAP messages use enterprise 0. Requests are odd, responses even.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageType(pub u32);

impl MessageType {
    /// Discovery Request (1).
    pub const DISCOVERY_REQUEST: MessageType = MessageType(1);
    /// Discovery Response (2).
    pub const DISCOVERY_RESPONSE: MessageType = MessageType(2);
    /// Join Request (3).
    pub const JOIN_REQUEST: MessageType = MessageType(3);
    /// Join Response (4).
    pub const JOIN_RESPONSE: MessageType = MessageType(4);
    /// Configuration Status Request (5).
    pub const CONFIGURATION_STATUS_REQUEST: MessageType = MessageType(5);
    /// Configuration Status Response (6).
    pub const CONFIGURATION_STATUS_RESPONSE: MessageType = MessageType(6);
    /// Configuration Update Request (7).
    pub const CONFIGURATION_UPDATE_REQUEST: MessageType = MessageType(7);
    /// Configuration Update Response (8).
    pub const CONFIGURATION_UPDATE_RESPONSE: MessageType = MessageType(8);
    /// WTP Event Request (9).
    pub const WTP_EVENT_REQUEST: MessageType = MessageType(9);
    /// WTP Event Response (10).
    pub const WTP_EVENT_RESPONSE: MessageType = MessageType(10);
    /// Change State Event Request (11).
    pub const CHANGE_STATE_EVENT_REQUEST: MessageType = MessageType(11);
    /// Change State Event Response (12).
    pub const CHANGE_STATE_EVENT_RESPONSE: MessageType = MessageType(12);
    /// Echo Request (13).
    pub const ECHO_REQUEST: MessageType = MessageType(13);
    /// Echo Response (14).
    pub const ECHO_RESPONSE: MessageType = MessageType(14);
    /// Image Data Request (15). Not 19: that is Primary Discovery Request.
    pub const IMAGE_DATA_REQUEST: MessageType = MessageType(15);
    /// Image Data Response (16).
    pub const IMAGE_DATA_RESPONSE: MessageType = MessageType(16);
    /// Reset Request (17).
    pub const RESET_REQUEST: MessageType = MessageType(17);
    /// Reset Response (18).
    pub const RESET_RESPONSE: MessageType = MessageType(18);
    /// Primary Discovery Request (19).
    pub const PRIMARY_DISCOVERY_REQUEST: MessageType = MessageType(19);
    /// Primary Discovery Response (20).
    pub const PRIMARY_DISCOVERY_RESPONSE: MessageType = MessageType(20);
    /// Data Transfer Request (21).
    pub const DATA_TRANSFER_REQUEST: MessageType = MessageType(21);
    /// Data Transfer Response (22).
    pub const DATA_TRANSFER_RESPONSE: MessageType = MessageType(22);
    /// Clear Configuration Request (23).
    pub const CLEAR_CONFIGURATION_REQUEST: MessageType = MessageType(23);
    /// Clear Configuration Response (24).
    pub const CLEAR_CONFIGURATION_RESPONSE: MessageType = MessageType(24);
    /// Station Configuration Request (25).
    pub const STATION_CONFIGURATION_REQUEST: MessageType = MessageType(25);
    /// Station Configuration Response (26).
    pub const STATION_CONFIGURATION_RESPONSE: MessageType = MessageType(26);

    /// A type from an enterprise number (24 bits; higher bits are dropped) and the
    /// enterprise-specific type.
    pub const fn new(enterprise: u32, kind: u8) -> MessageType {
        MessageType((enterprise & 0x00ff_ffff) << 8 | kind as u32)
    }

    /// The IANA enterprise number (0 for base CAPWAP).
    pub const fn enterprise(self) -> u32 {
        self.0 >> 8
    }

    /// The enterprise-specific type (the low byte).
    pub const fn kind(self) -> u8 {
        self.0 as u8
    }

    /// Requests have odd types.
    pub const fn is_request(self) -> bool {
        self.0 & 1 == 1
    }

    /// Responses have even types.
    pub const fn is_response(self) -> bool {
        !self.is_request()
    }

    /// The response to this request (type + 1), or `None` for a response or for kind 255
    /// (whose "response" would cross into the next enterprise number).
    pub const fn response(self) -> Option<MessageType> {
        if self.is_request() && self.kind() != u8::MAX {
            Some(MessageType(self.0 + 1))
        } else {
            None
        }
    }

    /// The request this response answers (type − 1), or `None` for a request or kind 0.
    pub const fn request(self) -> Option<MessageType> {
        if self.is_response() && self.kind() != 0 {
            Some(MessageType(self.0 - 1))
        } else {
            None
        }
    }

    /// The RFC 5415 name of a base message type.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 26] = [
            "Discovery Request",
            "Discovery Response",
            "Join Request",
            "Join Response",
            "Configuration Status Request",
            "Configuration Status Response",
            "Configuration Update Request",
            "Configuration Update Response",
            "WTP Event Request",
            "WTP Event Response",
            "Change State Event Request",
            "Change State Event Response",
            "Echo Request",
            "Echo Response",
            "Image Data Request",
            "Image Data Response",
            "Reset Request",
            "Reset Response",
            "Primary Discovery Request",
            "Primary Discovery Response",
            "Data Transfer Request",
            "Data Transfer Response",
            "Clear Configuration Request",
            "Clear Configuration Response",
            "Station Configuration Request",
            "Station Configuration Response",
        ];
        let i = usize::try_from(self.0).ok()?.checked_sub(1)?;
        NAMES.get(i).copied()
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(
                f,
                "message type {} (enterprise {}, type {})",
                self.0,
                self.enterprise(),
                self.kind()
            ),
        }
    }
}

/// A decoded control header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlHeader {
    /// Message Type.
    pub message_type: MessageType,
    /// Sequence Number: chosen by the requester, copied into the response.
    pub seq: u8,
    /// The element bytes announced: Message Element Length − 3.
    pub elements_len: u16,
}

impl ControlHeader {
    /// Decodes the control header at the start of `payload` (the bytes after the CAPWAP
    /// header); returns it and the bytes after it.
    pub fn decode(payload: &[u8]) -> Result<(ControlHeader, &[u8]), CapwapError> {
        let mut r = Reader::new(payload);
        let (Some(message_type), Some(seq), Some(declared), Some(flags)) =
            (r.u32(), r.u8(), r.u16(), r.u8())
        else {
            return Err(CapwapError::ControlHeaderTruncated { len: payload.len() });
        };
        if flags != 0 {
            return Err(CapwapError::ControlFlags { flags });
        }
        let Some(elements_len) = declared.checked_sub(3) else {
            return Err(CapwapError::ElementLengthTooSmall { declared });
        };
        let header = ControlHeader {
            message_type: MessageType(message_type),
            seq,
            elements_len,
        };
        Ok((header, r.rest()))
    }

    /// Appends the control header; `elements_len` must be at most [`MAX_ELEMENTS_LEN`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let Some(declared) = self.elements_len.checked_add(3) else {
            return Err(EncodeError::ElementsTooLong {
                len: usize::from(self.elements_len),
            });
        };
        out.extend_from_slice(&self.message_type.0.to_be_bytes());
        out.push(self.seq);
        out.extend_from_slice(&declared.to_be_bytes());
        out.push(0);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_odd_and_answered_by_the_next_type() {
        let pairs = [
            (
                MessageType::DISCOVERY_REQUEST,
                MessageType::DISCOVERY_RESPONSE,
            ),
            (MessageType::JOIN_REQUEST, MessageType::JOIN_RESPONSE),
            (
                MessageType::CONFIGURATION_UPDATE_REQUEST,
                MessageType::CONFIGURATION_UPDATE_RESPONSE,
            ),
            (MessageType::ECHO_REQUEST, MessageType::ECHO_RESPONSE),
            (
                MessageType::IMAGE_DATA_REQUEST,
                MessageType::IMAGE_DATA_RESPONSE,
            ),
            (MessageType::RESET_REQUEST, MessageType::RESET_RESPONSE),
        ];
        for (req, resp) in pairs {
            assert!(req.is_request() && resp.is_response());
            assert_eq!(req.response(), Some(resp));
            assert_eq!(resp.request(), Some(req));
            assert_eq!(req.enterprise(), 0);
        }
        assert_eq!(MessageType::IMAGE_DATA_REQUEST.0, 15);
        assert_eq!(MessageType::IMAGE_DATA_RESPONSE.0, 16);
        assert_eq!(MessageType::PRIMARY_DISCOVERY_REQUEST.0, 19);
        assert_eq!(MessageType::STATION_CONFIGURATION_RESPONSE.0, 26);
        assert_eq!(MessageType::JOIN_RESPONSE.response(), None);
        assert_eq!(MessageType::new(0, 255).response(), None);
        assert_eq!(MessageType::new(1, 0).request(), None);
    }

    #[test]
    fn enterprise_types_split_into_number_and_kind() {
        // RFC 5416's IEEE 802.11 WLAN Configuration Request: 13277 × 256 + 1.
        let wlan = MessageType::new(13277, 1);
        assert_eq!(wlan.0, 3_398_913);
        assert_eq!((wlan.enterprise(), wlan.kind()), (13277, 1));
        assert_eq!(wlan.response(), Some(MessageType(3_398_914)));
        assert_eq!(wlan.name(), None);
        assert_eq!(
            wlan.to_string(),
            "message type 3398913 (enterprise 13277, type 1)"
        );
        assert_eq!(
            MessageType::IMAGE_DATA_REQUEST.to_string(),
            "Image Data Request (15)"
        );
        assert_eq!(MessageType(0).name(), None);
        assert_eq!(MessageType(27).name(), None);
    }

    #[test]
    fn control_header_bytes() {
        let h = ControlHeader {
            message_type: MessageType::IMAGE_DATA_REQUEST,
            seq: 0x2a,
            elements_len: 9,
        };
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0x0f, 0x2a, 0, 12, 0]);
        let too_long = ControlHeader {
            elements_len: 65533,
            ..h
        };
        assert_eq!(
            too_long.encode(&mut Vec::new()),
            Err(EncodeError::ElementsTooLong { len: 65533 })
        );
        out.push(0xee);
        let (back, rest) = ControlHeader::decode(&out).unwrap();
        assert_eq!(back, h);
        assert_eq!(rest, [0xee]);
        assert_eq!(
            ControlHeader::decode(&[0, 0, 0, 15, 1, 0, 3, 1]),
            Err(CapwapError::ControlFlags { flags: 1 })
        );
        assert_eq!(
            ControlHeader::decode(&[0, 0, 0, 15, 1, 0, 2, 0]),
            Err(CapwapError::ElementLengthTooSmall { declared: 2 })
        );
        assert_eq!(
            ControlHeader::decode(&[0, 0, 0, 15, 1, 0, 3]),
            Err(CapwapError::ControlHeaderTruncated { len: 7 })
        );
    }
}
