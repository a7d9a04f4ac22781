//! The sans-IO CAPWAP core (RFC 5415, with the RFC 5416 radio element), shared by the
//! controller and the AP simulator: one codec for both sides, state machines with time as a
//! parameter, no sockets, no tokio, no clock. Nothing a peer sends can make it panic.
//!
//! # Layout
//! The layers, from the wire up:
//! - [`header`]: the preamble and the CAPWAP header (HLEN, RID, WBID, T F L W M K, fragment
//!   ID and offset, Radio MAC and Wireless Specific Information). A DTLS preamble is told
//!   apart ([`header::preamble`]) and refused with its own error: DTLS is not implemented,
//!   and a DTLS layer would sit in front of this one, handing it the decrypted bytes.
//! - [`fragment`](mod@fragment): splitting an encoded message into datagrams, and a bounded
//!   [`Reassembler`] that turns fragments back into one message.
//! - [`control`]: the control header and the message types.
//! - [`element`]: message elements — TLV framing and a typed [`Element`] that borrows from
//!   the datagram.
//! - [`message`]: whole control messages, the element-length policy, mandatory-element
//!   checks, and the allocation-free Image Data fast path.
//! - [`reliable`]: §4.5.3 — a [`Requester`] (one outstanding request, retransmission with
//!   doubling interval, peer-dead) and a [`Responder`] (new / duplicate / old requests,
//!   cached response). They work on encoded bytes and sequence numbers only.
//!
//! A shell receiving a datagram: [`header::preamble`] (DTLS → later), then
//! [`Header::decode`]: a fragment goes to [`Reassembler::push`], whose complete output and
//! every whole datagram go to [`Message::decode`] (or [`RawMessage::decode`] to walk the
//! elements without allocating). Requests go to the [`Responder`], responses to the
//! [`Requester`].
//!
//! # Example
//! The controller sends one block of an image; the AP decodes it and answers.
//! ```
//! use std::time::Instant;
//! use controller::capwap::{
//!     encode_image_data_request, encode_image_data_response, ImageData, Message,
//!     MessageType, Requester, Responder, RequestDisposition, ResultCode, RetransmitConfig,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::now();
//! let mut ac = Requester::new(RetransmitConfig::default(), 0);
//! let mut buf = Vec::new();
//! encode_image_data_request(ac.next_seq(), ImageData::Data(b"first block"), &mut buf)?;
//! ac.send(now, &buf)?;
//! let wire = ac.poll_transmit().ok_or("nothing to send")?.to_vec();
//!
//! // The AP side.
//! let mut ap = Responder::new();
//! let request = Message::decode(&wire)?;
//! assert_eq!(request.message_type, MessageType::IMAGE_DATA_REQUEST);
//! assert_eq!(request.image_data(), Some(ImageData::Data(b"first block")));
//! assert_eq!(ap.handle_request(request.seq), RequestDisposition::New);
//! let mut answer = Vec::new();
//! encode_image_data_response(request.seq, ResultCode::SUCCESS, &mut answer);
//! ap.respond(request.seq, &answer)?;
//! let wire = ap.poll_transmit().ok_or("nothing to send")?.to_vec();
//!
//! // Back at the controller.
//! let response = Message::decode(&wire)?;
//! assert_eq!(response.result_code(), Some(ResultCode::SUCCESS));
//! assert!(ac.handle_response(now, response.seq).is_some());
//! assert!(ac.is_idle());
//! # Ok(())
//! # }
//! ```

pub mod control;
pub mod element;
pub mod fragment;
pub mod header;
pub mod message;
mod reader;
pub mod reliable;
#[cfg(test)]
mod sim;

pub use control::{ControlHeader, MessageType};
pub use element::{
    AcDescriptor, AcInformation, ControlIpv4Address, EcnSupport, Element, ElementError,
    ElementType, EncryptionCapability, FrameTunnelMode, ImageData, ImageIdentifier,
    ImageInformation, MacType, RadioInformation, ResultCode, SubElements, VendorSpecific,
    VendorVersion, WtpBoardData, WtpDescriptor,
};
pub use fragment::{FragmentError, Reassembler, Reassembly, ReassemblyLimits, fragment};
pub use header::{Fragment, Header, HeaderError, PreambleType, RadioMac};
pub use message::{
    CapwapError, EncodeError, Message, MissingElement, RawMessage, encode_image_data_request,
    encode_image_data_response,
};
pub use reliable::{
    Completed, PeerDead, RequestDisposition, Requester, Responder, RetransmitConfig,
};
