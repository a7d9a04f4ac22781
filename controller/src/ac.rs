//! The controller's side of one AP's CAPWAP session, sans-IO: join, image data (stop-and-wait
//! blocks of one shared image), predownload and activate, echo — the conversation
//! [`crate::flow`] fixes. Driven like tftpd's state machines: [`AcSession::handle_datagram`],
//! [`AcSession::handle_timeout`], [`AcSession::poll_transmit`], [`AcSession::poll_timeout`];
//! what happened comes out of [`AcSession::poll_event`]. The image itself arrives through
//! [`AcSession::image_ready`] when the shell has it (it asks after
//! [`AcEvent::ImageWanted`]), so a session never waits on I/O.
//!
//! Beyond §4.5.3: while the first block of a transfer is unanswered, each retransmission of
//! it goes after the cached Image Data Response. An AP whose copy of the response was lost
//! drops blocks until it has one, and would ask again only when its own timer runs out —
//! after a long wait in the admission queue, tens of seconds later, by when our timer may
//! have given it up. A response it already has is a stray it ignores.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capwap::{
    AcDescriptor, AcInformation, ControlIpv4Address, EcnSupport, Element, ImageData,
    ImageIdentifier, ImageInformation, Message, MessageType, RadioInformation, RawMessage,
    RequestDisposition, Requester, Responder, ResultCode, RetransmitConfig, SubElements,
    encode_image_data_request,
};
use crate::flow::{CISCO_VENDOR_ID, ECHO_INTERVAL_S};

/// What the controller says and how it sends.
#[derive(Debug, Clone)]
pub struct AcConfig {
    /// AC Name.
    pub ac_name: String,
    /// The address APs reach it at (CAPWAP Control IPv4 Address).
    pub control_ipv4: Ipv4Addr,
    /// Image bytes per Image Data message.
    pub block_size: u16,
    /// Request retransmission.
    pub retransmit: RetransmitConfig,
    /// The version the network runs (`version.info`).
    pub version: String,
    /// Name the version in the Join Response, so an AP on another version downloads it at
    /// join (RFC 5415 §9.1.1); when false APs keep running and get it by predownload.
    pub download_at_join: bool,
    /// Silence after which a joined AP is given up although nothing of ours is outstanding
    /// (it sends an Echo Request every EchoInterval): default [`DEFAULT_DEAD_INTERVAL`].
    pub dead_interval: Duration,
}

/// Default [`AcConfig::dead_interval`]: three EchoIntervals.
pub const DEFAULT_DEAD_INTERVAL: Duration = Duration::from_secs(3 * ECHO_INTERVAL_S);

/// An image to send: shared bytes and the MD5 Image Information carries.
#[derive(Debug, Clone)]
pub struct ImageToSend {
    /// The family (`ap1g8`).
    pub family: String,
    /// The bytes, shared with every other session sending it.
    pub bytes: Arc<[u8]>,
    /// MD5 of the bytes.
    pub md5: [u8; 16],
}

/// What the AP said of itself in its Join Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApInfo {
    /// WTP Name.
    pub name: String,
    /// Model (WTP Board Data).
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Base MAC, when given.
    pub mac: Option<[u8; 6]>,
    /// Active software version (the primary image).
    pub primary: String,
    /// Other software version (the backup image), when given.
    pub backup: Option<String>,
}

/// Something the shell logs, shows or acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcEvent {
    /// The AP joined.
    Joined(ApInfo),
    /// A Join Request lacked a mandatory element; refused with Result Code 20.
    JoinRefused {
        /// What was missing.
        missing: String,
    },
    /// The AP asks for its family's image: call [`AcSession::image_ready`].
    ImageWanted {
        /// The family it named.
        family: String,
        /// Predownload (stored as backup) rather than download at join.
        predownload: bool,
    },
    /// Blocks started going out.
    TransferStarted {
        /// Family.
        family: String,
        /// Image size.
        size: u64,
    },
    /// The AP accepted the last block (it checked size, MD5 and tar).
    TransferDone {
        /// Family.
        family: String,
        /// Bytes sent.
        bytes: u64,
        /// Image Data messages sent.
        messages: u64,
        /// Retransmissions along the way.
        retransmissions: u64,
    },
    /// The transfer ended without the image: refused by the AP, or no image to send.
    TransferFailed {
        /// Family.
        family: String,
        /// Why.
        reason: String,
    },
    /// Configuration Update for predownload answered.
    PredownloadAnswered {
        /// Result Code (17: the AP already has the image as its backup).
        result: u32,
    },
    /// Reset Request (activate) answered.
    ResetAnswered {
        /// Result Code.
        result: u32,
    },
    /// The AP stopped answering (MaxRetransmit reached); the session is over.
    Gone,
}

#[derive(Debug)]
enum Transfer {
    None,
    /// The AP's Image Data Request `seq` waits for the image.
    Awaiting {
        family: String,
        seq: u8,
    },
    Sending {
        image: ImageToSend,
        offset: usize,
        messages: u64,
        /// The outstanding block is the last.
        last: bool,
        /// The AP's Image Data Request this transfer answers.
        request_seq: u8,
    },
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcError {
    /// A request of ours is still outstanding, or a transfer runs.
    #[error("the session is busy")]
    Busy,
    /// The AP has not joined.
    #[error("the AP has not joined")]
    NotJoined,
}

/// One AP's session.
#[derive(Debug)]
pub struct AcSession {
    cfg: AcConfig,
    requester: Requester,
    responder: Responder,
    info: Option<ApInfo>,
    transfer: Transfer,
    /// The outstanding request of ours, by type.
    asked: Option<MessageType>,
    /// A predownload was asked: the next Image Data Request is one.
    predownload_pending: bool,
    events: VecDeque<AcEvent>,
    buf: Vec<u8>,
    gone: bool,
    /// When the AP last sent something.
    last_heard: Option<Instant>,
    /// The Session ID of the AP's current join.
    session_id: Option<[u8; 16]>,
    /// Retransmissions during the current transfer.
    retransmissions: u64,
    /// Datagrams that failed to decode or were unexpected.
    pub ignored: u64,
}

impl AcSession {
    /// A session for an AP that has sent nothing yet.
    pub fn new(cfg: AcConfig) -> AcSession {
        let retransmit = cfg.retransmit;
        AcSession {
            cfg,
            requester: Requester::new(retransmit, 0),
            responder: Responder::new(),
            info: None,
            transfer: Transfer::None,
            asked: None,
            predownload_pending: false,
            events: VecDeque::new(),
            buf: Vec::with_capacity(2048),
            gone: false,
            last_heard: None,
            session_id: None,
            retransmissions: 0,
            ignored: 0,
        }
    }

    /// The version the network runs from now on (a new release): named in later Join
    /// Responses, predownloads and activations. A transfer already running goes on.
    pub fn set_version(&mut self, version: &str) {
        version.clone_into(&mut self.cfg.version);
    }

    /// The version the network runs, as this session names it.
    pub fn version(&self) -> &str {
        &self.cfg.version
    }

    /// Whether a transfer is waiting for its image or running.
    pub fn is_transferring(&self) -> bool {
        !matches!(self.transfer, Transfer::None)
    }

    /// The AP joined again from another address (`rejoined` is what it said there): this
    /// session is over. A running transfer ends as on a rejoin here (see
    /// [`AcSession::poll_event`]); nothing more is sent or expected.
    pub fn replaced(&mut self, rejoined: &ApInfo) {
        if self.gone {
            return;
        }
        self.end_transfer(rejoined);
        self.gone = true;
    }

    /// Ends a running transfer for an AP that joined again saying `info`, and cancels our
    /// outstanding request: done if the last block went out and the AP now carries the
    /// version (its answer to the last block was lost, and it reset before our
    /// retransmission), failed otherwise (it rebooted mid-way).
    fn end_transfer(&mut self, info: &ApInfo) {
        self.requester.cancel();
        self.asked = None;
        let carries = info.primary == self.cfg.version
            || info.backup.as_deref() == Some(self.cfg.version.as_str());
        match std::mem::replace(&mut self.transfer, Transfer::None) {
            Transfer::None => {}
            Transfer::Sending {
                image,
                messages,
                last: true,
                ..
            } if carries => self.events.push_back(AcEvent::TransferDone {
                family: image.family.clone(),
                bytes: image.bytes.len() as u64,
                messages,
                retransmissions: self.retransmissions,
            }),
            Transfer::Awaiting { family, .. } => self.events.push_back(AcEvent::TransferFailed {
                family,
                reason: "the AP joined again".into(),
            }),
            Transfer::Sending { image, .. } => self.events.push_back(AcEvent::TransferFailed {
                family: image.family.clone(),
                reason: "the AP joined again".into(),
            }),
        }
    }

    /// What the AP said when it joined.
    pub fn info(&self) -> Option<&ApInfo> {
        self.info.as_ref()
    }

    /// Bytes sent and the size, while a transfer runs.
    pub fn progress(&self) -> Option<(u64, u64)> {
        match &self.transfer {
            Transfer::Sending { image, offset, .. } => {
                Some((*offset as u64, image.bytes.len() as u64))
            }
            _ => None,
        }
    }

    /// The session is over (the AP stopped answering).
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<AcEvent> {
        self.events.pop_front()
    }

    /// The next datagram for the AP: cached responses first, then our request.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.responder.has_transmit() {
            return self.responder.poll_transmit();
        }
        self.requester.poll_transmit()
    }

    /// When [`AcSession::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.gone {
            return None;
        }
        let silence = self.last_heard.map(|t| t + self.cfg.dead_interval);
        [self.requester.poll_timeout(), silence]
            .into_iter()
            .flatten()
            .min()
    }

    /// Retransmits our outstanding request, or gives the AP up (our request unanswered, or
    /// nothing heard for the dead interval).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.gone {
            return;
        }
        let silent = self
            .last_heard
            .is_some_and(|t| now >= t + self.cfg.dead_interval);
        if self.requester.handle_timeout(now).is_some() || silent {
            self.gone = true;
            self.transfer = Transfer::None;
            self.events.push_back(AcEvent::Gone);
            return;
        }
        // The first block unanswered: perhaps our Image Data Response was lost, and the AP
        // drops blocks until it has it. It would ask again, but only when its own timer runs
        // out, and after a long wait in the queue that timer is at its longest (tens of
        // seconds) while ours gives up sooner. So the response goes again with the block.
        if let Transfer::Sending {
            messages: 1,
            request_seq,
            ..
        } = self.transfer
            && self.requester.has_transmit()
            && self.responder.latest() == Some(request_seq)
        {
            self.responder.resend();
        }
    }

    /// A datagram from the AP (a whole message: fragments are reassembled before).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.gone {
            return;
        }
        // Responses (one per image block: the hot path) are read without building a Message.
        let Ok(raw) = RawMessage::decode(datagram) else {
            self.ignored += 1;
            return;
        };
        self.last_heard = Some(now);
        let (kind, seq) = (raw.control.message_type, raw.control.seq);
        if !kind.is_request() {
            let mut result = Some(ResultCode::SUCCESS);
            for e in raw.elements() {
                match e {
                    Ok(Element::ResultCode(c)) => result = Some(c),
                    Ok(_) => {}
                    Err(_) => result = None,
                }
            }
            match result {
                Some(result) => self.on_response(now, kind, seq, result),
                None => self.ignored += 1,
            }
            return;
        }
        let Ok(msg) = Message::decode(datagram) else {
            self.ignored += 1;
            return;
        };
        // A Join Request with a new Session ID starts a new session: an AP that rebooted on
        // the same address may start its sequence numbers over, and its Join must not be
        // taken for a duplicate of an old request. (A retransmitted or late copy of the
        // current Join carries the current Session ID and is handled as before.)
        if kind == MessageType::JOIN_REQUEST {
            let id = msg.elements.iter().find_map(|e| match e {
                Element::SessionId(id) => Some(*id),
                _ => None,
            });
            if id.is_some() && id != self.session_id {
                self.responder = Responder::new();
                self.session_id = id;
            }
        }
        match self.responder.handle_request(seq) {
            RequestDisposition::New => self.on_request(now, &msg),
            RequestDisposition::Duplicate
            | RequestDisposition::InProgress
            | RequestDisposition::Old => {}
        }
    }

    fn respond(&mut self, msg: &Message<'_>) {
        self.buf.clear();
        if msg.encode(&mut self.buf).is_ok() {
            let _ = self.responder.respond(msg.seq, &self.buf);
        }
    }

    fn respond_result(&mut self, request: &Message<'_>, code: ResultCode) {
        let Some(kind) = request.message_type.response() else {
            return;
        };
        let reply = Message::new(kind, request.seq, vec![Element::ResultCode(code)]);
        self.respond(&reply);
    }

    fn on_request(&mut self, now: Instant, msg: &Message<'_>) {
        match msg.message_type {
            MessageType::JOIN_REQUEST => self.on_join(msg),
            MessageType::ECHO_REQUEST => {
                let reply = Message::new(MessageType::ECHO_RESPONSE, msg.seq, Vec::new());
                self.respond(&reply);
            }
            MessageType::IMAGE_DATA_REQUEST => {
                let family = msg.image_identifier().map(|i| i.data.to_owned());
                match (family, &self.info) {
                    (Some(family), Some(_)) if matches!(self.transfer, Transfer::None) => {
                        let predownload = std::mem::take(&mut self.predownload_pending);
                        self.transfer = Transfer::Awaiting {
                            family: family.clone(),
                            seq: msg.seq,
                        };
                        self.events.push_back(AcEvent::ImageWanted {
                            family,
                            predownload,
                        });
                    }
                    _ => self.respond_result(msg, ResultCode::INVALID_IN_CURRENT_STATE),
                }
                let _ = now;
            }
            t if t.is_request() => self.respond_result(msg, ResultCode::UNRECOGNIZED_REQUEST),
            _ => self.ignored += 1,
        }
    }

    fn on_join(&mut self, msg: &Message<'_>) {
        if let Err(missing) = msg.check_mandatory() {
            self.respond_result(msg, missing.result_code());
            self.events.push_back(AcEvent::JoinRefused {
                missing: missing.to_string(),
            });
            // Nothing to keep for an AP that never joined: the answer goes out, then the
            // session ends (a corrected Join Request opens a new one).
            if self.info.is_none() {
                self.gone = true;
            }
            return;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut info = ApInfo {
            name: String::new(),
            model: String::new(),
            serial: String::new(),
            mac: None,
            primary: String::new(),
            backup: None,
        };
        let mut radio = RadioInformation {
            radio_id: 1,
            radio_type: RadioInformation::TYPE_B,
        };
        for e in &msg.elements {
            match e {
                Element::WtpName(n) => info.name = text(n),
                Element::WtpBoardData(b) => {
                    info.model = text(b.model);
                    info.serial = text(b.serial);
                    info.mac = b.base_mac.and_then(|m| <[u8; 6]>::try_from(m).ok());
                }
                Element::WtpDescriptor(d) => {
                    info.primary = text(d.active_software_version.value);
                    info.backup = d.other_software_version.map(|v| text(v.value));
                }
                Element::WtpRadioInformation(r) => radio = *r,
                _ => {}
            }
        }
        // A new join is a new session: our own requests start over.
        self.end_transfer(&info);
        self.retransmissions = 0;
        self.predownload_pending = false;
        let ac_info = ac_information(&self.cfg);
        let reply = Message::new(
            MessageType::JOIN_RESPONSE,
            msg.seq,
            vec![
                Element::ResultCode(ResultCode::SUCCESS),
                Element::AcDescriptor(ac_descriptor(&ac_info)),
                Element::AcName(self.cfg.ac_name.as_bytes()),
                Element::WtpRadioInformation(radio),
                Element::EcnSupport(EcnSupport::Limited),
                Element::ControlIpv4Address(ControlIpv4Address {
                    address: self.cfg.control_ipv4,
                    wtp_count: 0,
                }),
                Element::LocalIpv4Address(self.cfg.control_ipv4),
            ],
        );
        let mut reply = reply;
        if self.cfg.download_at_join {
            reply
                .elements
                .push(Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: CISCO_VENDOR_ID,
                    data: &self.cfg.version,
                }));
        }
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        if reply.encode(&mut out).is_ok() {
            let _ = self.responder.respond(msg.seq, &out);
        }
        self.buf = out;
        self.info = Some(info.clone());
        self.events.push_back(AcEvent::Joined(info));
    }

    /// The image the AP asked for (after [`AcEvent::ImageWanted`]), or why there is none.
    /// Answers its Image Data Request and starts the blocks. Whether it was awaited: a
    /// result that comes late (the transfer already runs, or none does) changes nothing.
    pub fn image_ready(&mut self, now: Instant, image: Result<ImageToSend, String>) -> bool {
        if !matches!(self.transfer, Transfer::Awaiting { .. }) {
            return false;
        }
        let Transfer::Awaiting { family, seq } =
            std::mem::replace(&mut self.transfer, Transfer::None)
        else {
            return false;
        };
        let image = match image {
            Ok(i) if i.family != family => {
                self.refuse(seq, &family, format!("got the image of {}", i.family));
                return true;
            }
            Ok(i) if u32::try_from(i.bytes.len()).is_err() => {
                self.refuse(seq, &family, "larger than Image Information can say".into());
                return true;
            }
            Ok(i) => i,
            Err(reason) => {
                self.refuse(seq, &family, reason);
                return true;
            }
        };
        let info = ImageInformation {
            file_size: u32::try_from(image.bytes.len()).unwrap_or(u32::MAX),
            md5: image.md5,
        };
        let reply = Message::new(
            MessageType::IMAGE_DATA_RESPONSE,
            seq,
            vec![
                Element::ResultCode(ResultCode::SUCCESS),
                Element::ImageInformation(info),
            ],
        );
        self.respond(&reply);
        self.events.push_back(AcEvent::TransferStarted {
            family: image.family.clone(),
            size: image.bytes.len() as u64,
        });
        self.transfer = Transfer::Sending {
            image,
            offset: 0,
            messages: 0,
            last: false,
            request_seq: seq,
        };
        self.send_block(now);
        true
    }

    fn refuse(&mut self, seq: u8, family: &str, reason: String) {
        let reply = Message::new(
            MessageType::IMAGE_DATA_RESPONSE,
            seq,
            vec![Element::ResultCode(ResultCode::IMAGE_DATA_OTHER_ERROR)],
        );
        self.respond(&reply);
        self.events.push_back(AcEvent::TransferFailed {
            family: family.to_owned(),
            reason,
        });
    }

    /// Sends the block at the current offset (the last one as EOF).
    fn send_block(&mut self, now: Instant) {
        let Transfer::Sending {
            image,
            offset,
            messages,
            last,
            ..
        } = &mut self.transfer
        else {
            return;
        };
        let size = image.bytes.len();
        let n = usize::from(self.cfg.block_size).min(size - *offset);
        let chunk = &image.bytes[*offset..*offset + n];
        *last = *offset + n == size;
        let data = if *last {
            ImageData::Eof(chunk)
        } else {
            ImageData::Data(chunk)
        };
        let seq = self.requester.next_seq();
        self.buf.clear();
        if encode_image_data_request(seq, data, &mut self.buf).is_ok()
            && self.requester.send(now, &self.buf).is_ok()
        {
            *messages += 1;
            self.asked = Some(MessageType::IMAGE_DATA_REQUEST);
        }
    }

    fn on_response(&mut self, now: Instant, kind: MessageType, seq: u8, result: ResultCode) {
        let Some(asked) = self.asked else {
            self.ignored += 1;
            return;
        };
        if Some(kind) != asked.response() {
            self.ignored += 1;
            return;
        }
        let Some(done) = self.requester.handle_response(now, seq) else {
            return;
        };
        self.asked = None;
        match asked {
            MessageType::IMAGE_DATA_REQUEST => {
                self.on_block_answered(now, result, done.retransmissions)
            }
            MessageType::CONFIGURATION_UPDATE_REQUEST => {
                self.predownload_pending = result.is_success();
                self.events
                    .push_back(AcEvent::PredownloadAnswered { result: result.0 });
            }
            MessageType::RESET_REQUEST => {
                self.events
                    .push_back(AcEvent::ResetAnswered { result: result.0 });
            }
            _ => {}
        }
    }

    fn on_block_answered(&mut self, now: Instant, result: ResultCode, retransmissions: u32) {
        let Transfer::Sending {
            image,
            offset,
            messages,
            last,
            ..
        } = &mut self.transfer
        else {
            return;
        };
        if !result.is_success() {
            let family = image.family.clone();
            self.transfer = Transfer::None;
            self.events.push_back(AcEvent::TransferFailed {
                family,
                reason: format!(
                    "the AP answered {}",
                    result.description().unwrap_or("an unknown Result Code")
                ),
            });
            return;
        }
        self.retransmissions += u64::from(retransmissions);
        let n = usize::from(self.cfg.block_size).min(image.bytes.len() - *offset);
        *offset += n;
        if *last {
            let event = AcEvent::TransferDone {
                family: image.family.clone(),
                bytes: *offset as u64,
                messages: *messages,
                retransmissions: self.retransmissions,
            };
            self.transfer = Transfer::None;
            self.retransmissions = 0;
            self.events.push_back(event);
        } else {
            self.send_block(now);
        }
    }

    /// Asks a joined AP to predownload the network's version (Configuration Update Request
    /// with the Image Identifier).
    pub fn predownload(&mut self, now: Instant) -> Result<(), AcError> {
        self.ask(now, MessageType::CONFIGURATION_UPDATE_REQUEST)
    }

    /// Asks a joined AP to activate the predownloaded version (Reset Request).
    pub fn activate(&mut self, now: Instant) -> Result<(), AcError> {
        self.ask(now, MessageType::RESET_REQUEST)
    }

    fn ask(&mut self, now: Instant, kind: MessageType) -> Result<(), AcError> {
        if self.info.is_none() {
            return Err(AcError::NotJoined);
        }
        if self.asked.is_some() || !matches!(self.transfer, Transfer::None) {
            return Err(AcError::Busy);
        }
        let msg = Message::new(
            kind,
            self.requester.next_seq(),
            vec![Element::ImageIdentifier(ImageIdentifier {
                vendor_id: CISCO_VENDOR_ID,
                data: &self.cfg.version,
            })],
        );
        let mut out = Vec::new();
        msg.encode(&mut out).map_err(|_| AcError::Busy)?;
        self.requester.send(now, &out).map_err(|_| AcError::Busy)?;
        self.asked = Some(kind);
        Ok(())
    }
}

/// The AC Information sub-elements of our AC Descriptor: hardware and software version.
fn ac_information(cfg: &AcConfig) -> [AcInformation<'_>; 2] {
    [
        AcInformation {
            vendor_id: CISCO_VENDOR_ID,
            kind: 4,
            data: b"airlift",
        },
        AcInformation {
            vendor_id: CISCO_VENDOR_ID,
            kind: 5,
            data: cfg.version.as_bytes(),
        },
    ]
}

/// Our AC Descriptor (RFC 5415 §4.6.1): no stations, any number of WTPs, local MAC, plain
/// UDP (DTLS not enabled).
fn ac_descriptor<'a>(info: &'a [AcInformation<'a>]) -> AcDescriptor<'a> {
    AcDescriptor {
        stations: 0,
        station_limit: 0,
        active_wtps: 0,
        max_wtps: u16::MAX,
        security: 0x04,
        r_mac: 2,
        dtls_policy: 0x02,
        info: SubElements::new(info),
    }
}

/// The answer to a Discovery Request (RFC 5415 §5.1/5.2), which needs no session: AC
/// Descriptor, AC Name, the WTP's radios echoed, and the CAPWAP Control IPv4 Address. `None`
/// when `datagram` is not a well-formed Discovery Request with its mandatory elements.
pub fn discovery_response(cfg: &AcConfig, datagram: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::decode(datagram).ok()?;
    if msg.message_type != MessageType::DISCOVERY_REQUEST || msg.check_mandatory().is_err() {
        return None;
    }
    let ac_info = ac_information(cfg);
    let mut elements = vec![
        Element::AcDescriptor(ac_descriptor(&ac_info)),
        Element::AcName(cfg.ac_name.as_bytes()),
    ];
    elements.extend(
        msg.elements
            .iter()
            .filter(|e| matches!(e, Element::WtpRadioInformation(_)))
            .cloned(),
    );
    elements.push(Element::ControlIpv4Address(ControlIpv4Address {
        address: cfg.control_ipv4,
        wtp_count: 0,
    }));
    Message::new(MessageType::DISCOVERY_RESPONSE, msg.seq, elements)
        .to_vec()
        .ok()
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::capwap::{
        EncryptionCapability, FrameTunnelMode, MacType, VendorVersion, WtpBoardData, WtpDescriptor,
        encode_image_data_response,
    };

    fn config(block_size: u16) -> AcConfig {
        AcConfig {
            ac_name: "airlift".into(),
            control_ipv4: Ipv4Addr::LOCALHOST,
            block_size,
            retransmit: RetransmitConfig {
                interval: Duration::from_millis(100),
                max_retransmit: 2,
                max_interval: None,
            },
            version: "17.9.4.27".into(),
            download_at_join: true,
            dead_interval: Duration::from_secs(90),
        }
    }

    fn join_request(seq: u8) -> Vec<u8> {
        join_request_on(seq, "17.3.3.26")
    }

    fn join_request_on(seq: u8, primary: &str) -> Vec<u8> {
        join_request_in(seq, primary, [7; 16])
    }

    fn join_request_in(seq: u8, primary: &str, session: [u8; 16]) -> Vec<u8> {
        let enc = [EncryptionCapability {
            wbid: 1,
            capabilities: 0,
        }];
        let mac = [0x00, 0xa2, 0xee, 0xb1, 0x00, 0x01];
        let cisco = |value| VendorVersion {
            vendor_id: CISCO_VENDOR_ID,
            value,
        };
        let msg = Message::new(
            MessageType::JOIN_REQUEST,
            seq,
            vec![
                Element::LocationData(b"lab"),
                Element::WtpBoardData(WtpBoardData {
                    vendor_id: CISCO_VENDOR_ID,
                    model: b"C9105AXI-E",
                    serial: b"FOC0001",
                    board_id: None,
                    board_revision: None,
                    base_mac: Some(&mac),
                }),
                Element::WtpDescriptor(WtpDescriptor {
                    max_radios: 2,
                    radios_in_use: 2,
                    encryption: SubElements::new(&enc),
                    hardware_version: cisco(b"1.0"),
                    active_software_version: cisco(primary.as_bytes()),
                    boot_version: cisco(b"1.1"),
                    other_software_version: Some(cisco(b"8.10.130.0")),
                }),
                Element::WtpName(b"AP-0001"),
                Element::SessionId(session),
                Element::WtpFrameTunnelMode(FrameTunnelMode(FrameTunnelMode::LOCAL_BRIDGING)),
                Element::WtpMacType(MacType::Local),
                Element::WtpRadioInformation(RadioInformation {
                    radio_id: 1,
                    radio_type: RadioInformation::TYPE_G,
                }),
                Element::EcnSupport(EcnSupport::Limited),
                Element::LocalIpv4Address(Ipv4Addr::LOCALHOST),
            ],
        );
        msg.to_vec().unwrap_or_default()
    }

    fn image_request(seq: u8, family: &str) -> Vec<u8> {
        Message::new(
            MessageType::IMAGE_DATA_REQUEST,
            seq,
            vec![
                Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: CISCO_VENDOR_ID,
                    data: family,
                }),
                Element::InitiateDownload,
            ],
        )
        .to_vec()
        .unwrap_or_default()
    }

    fn drain(s: &mut AcSession) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(d) = s.poll_transmit() {
            out.push(d.to_vec());
        }
        out
    }

    fn events(s: &mut AcSession) -> Vec<AcEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn image(len: usize) -> ImageToSend {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ImageToSend {
            family: "ap1g8".into(),
            bytes: bytes.into(),
            md5: [9; 16],
        }
    }

    /// Joins, asks for ap1g8 and receives every block, answering each; returns the blocks.
    fn download(block_size: u16, len: usize, duplicate_every: usize) -> (AcSession, Vec<u8>, u64) {
        let now = Instant::now();
        let mut s = AcSession::new(config(block_size));
        s.handle_datagram(now, &join_request(1));
        let replies = drain(&mut s);
        let Ok(join) = Message::decode(&replies[0]) else {
            panic!("join response")
        };
        assert_eq!(join.message_type, MessageType::JOIN_RESPONSE);
        assert_eq!(join.result_code(), Some(ResultCode::SUCCESS));
        assert_eq!(join.image_identifier().map(|i| i.data), Some("17.9.4.27"));
        assert!(join.check_mandatory().is_ok(), "{join:?}");
        s.handle_datagram(now, &image_request(2, "ap1g8"));
        assert!(
            drain(&mut s).is_empty(),
            "answered before the image is there"
        );
        let evs = events(&mut s);
        assert!(evs.contains(&AcEvent::ImageWanted {
            family: "ap1g8".into(),
            predownload: false
        }));
        // The AP repeats its request while it waits: nothing yet.
        s.handle_datagram(now, &image_request(2, "ap1g8"));
        assert!(drain(&mut s).is_empty());
        let img = image(len);
        s.image_ready(now, Ok(img.clone()));
        let mut got = Vec::new();
        let mut messages = 0u64;
        let mut first = true;
        loop {
            let out = drain(&mut s);
            let mut block = None;
            for d in &out {
                let Ok(m) = Message::decode(d) else {
                    panic!("undecodable")
                };
                if m.message_type == MessageType::IMAGE_DATA_RESPONSE {
                    assert!(first, "one Image Data Response");
                    first = false;
                    let Some(info) = m.image_information() else {
                        panic!("no Image Information")
                    };
                    assert_eq!(info.file_size as usize, len);
                    assert_eq!(info.md5, [9; 16]);
                } else {
                    assert_eq!(m.message_type, MessageType::IMAGE_DATA_REQUEST);
                    block = Some((
                        m.seq,
                        m.image_data().map(|d| (d.data().to_vec(), d.data_type())),
                    ));
                }
            }
            let Some((seq, Some((data, kind)))) = block else {
                break;
            };
            assert!(data.len() <= usize::from(block_size));
            got.extend_from_slice(&data);
            messages += 1;
            let mut ack = Vec::new();
            encode_image_data_response(seq, ResultCode::SUCCESS, &mut ack);
            s.handle_datagram(now, &ack);
            if duplicate_every > 0 && (messages as usize).is_multiple_of(duplicate_every) {
                // A duplicated answer must not skip a block.
                s.handle_datagram(now, &ack);
            }
            if kind == 2 {
                break;
            }
        }
        (s, got, messages)
    }

    #[test]
    fn a_joining_ap_gets_the_version_then_every_block_once() {
        for (block, len) in [
            (1024u16, 10_000usize),
            (1377, 70_512_640 / 4096),
            (1024, 4096),
        ] {
            let (mut s, got, messages) = download(block, len, 7);
            assert_eq!(got.len(), len);
            assert!(got == image(len).bytes[..].to_vec());
            assert_eq!(messages, len.div_ceil(usize::from(block)) as u64);
            let evs = events(&mut s);
            assert!(
                evs.contains(&AcEvent::TransferDone {
                    family: "ap1g8".into(),
                    bytes: len as u64,
                    messages,
                    retransmissions: 0
                }),
                "{evs:?}"
            );
            assert_eq!(s.progress(), None);
            let Some(info) = s.info() else {
                panic!("no info")
            };
            assert_eq!(
                (
                    info.name.as_str(),
                    info.model.as_str(),
                    info.primary.as_str()
                ),
                ("AP-0001", "C9105AXI-E", "17.3.3.26")
            );
            assert_eq!(info.backup.as_deref(), Some("8.10.130.0"));
        }
    }

    /// A joined AP's transfer of a 5000-byte image just started: the session and what it
    /// sent (the Image Data Response, the first block).
    fn sending(now: Instant) -> (AcSession, Vec<Vec<u8>>) {
        let mut s = AcSession::new(config(1024));
        s.handle_datagram(now, &join_request(1));
        drain(&mut s);
        s.handle_datagram(now, &image_request(2, "ap1g8"));
        s.image_ready(now, Ok(image(5000)));
        let sent = drain(&mut s);
        (s, sent)
    }

    /// A lost block goes again, byte for byte; while the first block is unanswered, the
    /// Image Data Response goes with it (the AP drops blocks until it has the response, and
    /// after a long wait in the queue its own retransmission could be tens of seconds off);
    /// a silent AP is given up.
    #[test]
    fn lost_blocks_are_resent_unchanged_and_a_silent_ap_is_given_up() {
        let now = Instant::now();
        let (mut s, first) = sending(now);
        assert_eq!(first.len(), 2, "the response, then the first block");
        let (response, block) = (first[0].clone(), first[1].clone());
        let Some(t) = s.poll_timeout() else {
            panic!("no timer")
        };
        s.handle_timeout(t);
        assert_eq!(
            drain(&mut s),
            vec![response.clone(), block.clone()],
            "the same bytes again, the response first"
        );
        let Some(t) = s.poll_timeout() else {
            panic!("no timer")
        };
        s.handle_timeout(t);
        assert_eq!(drain(&mut s), vec![response, block]);
        let Some(t) = s.poll_timeout() else {
            panic!("no timer")
        };
        s.handle_timeout(t);
        assert!(s.is_gone());
        assert!(events(&mut s).contains(&AcEvent::Gone));

        // Once the AP answered a block it has the response: later blocks go alone.
        let (mut s, first) = sending(now);
        let Ok(block) = Message::decode(&first[1]) else {
            panic!("block")
        };
        let mut ack = Vec::new();
        encode_image_data_response(block.seq, ResultCode::SUCCESS, &mut ack);
        s.handle_datagram(now, &ack);
        let second = drain(&mut s);
        assert_eq!(second.len(), 1, "the second block alone");
        let Some(t) = s.poll_timeout() else {
            panic!("no timer")
        };
        s.handle_timeout(t);
        assert_eq!(drain(&mut s), second, "the second block again, alone");
    }

    /// A fetch result that comes late (the transfer already runs) changes nothing; an AP
    /// that joined again elsewhere ends this session: its transfer failed (or done, if the
    /// last block went out and it now runs the version), nothing more sent.
    #[test]
    fn a_late_image_is_ignored_and_a_replaced_session_ends_its_transfer() {
        let now = Instant::now();
        let (mut s, _) = sending(now);
        events(&mut s);
        assert!(!s.image_ready(now, Ok(image(5000))), "not awaited");
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.progress(), Some((0, 5000)), "the transfer still runs");

        let Some(joined) = s.info().cloned() else {
            panic!("no info")
        };
        s.replaced(&joined);
        assert!(s.is_gone());
        assert_eq!(
            events(&mut s),
            [AcEvent::TransferFailed {
                family: "ap1g8".into(),
                reason: "the AP joined again".into()
            }]
        );
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), None, "nothing outstanding");
    }

    #[test]
    fn a_discovery_request_gets_the_acs_descriptor_name_and_address() {
        let enc = [EncryptionCapability {
            wbid: 1,
            capabilities: 0,
        }];
        let cisco = |value| VendorVersion {
            vendor_id: CISCO_VENDOR_ID,
            value,
        };
        let radio = RadioInformation {
            radio_id: 2,
            radio_type: RadioInformation::TYPE_G,
        };
        let mut elements = vec![
            Element::Unknown {
                kind: crate::capwap::ElementType::DISCOVERY_TYPE,
                value: &[1],
            },
            Element::WtpBoardData(WtpBoardData {
                vendor_id: CISCO_VENDOR_ID,
                model: b"C9105AXI-E",
                serial: b"FOC0001",
                board_id: None,
                board_revision: None,
                base_mac: None,
            }),
            Element::WtpDescriptor(WtpDescriptor {
                max_radios: 2,
                radios_in_use: 2,
                encryption: SubElements::new(&enc),
                hardware_version: cisco(b"1.0"),
                active_software_version: cisco(b"17.3.3.26"),
                boot_version: cisco(b"1.1"),
                other_software_version: None,
            }),
            Element::WtpFrameTunnelMode(FrameTunnelMode(FrameTunnelMode::LOCAL_BRIDGING)),
            Element::WtpMacType(MacType::Local),
            Element::WtpRadioInformation(radio),
        ];
        let request = Message::new(MessageType::DISCOVERY_REQUEST, 9, elements.clone())
            .to_vec()
            .unwrap_or_default();
        let cfg = config(1024);
        let Some(reply) = discovery_response(&cfg, &request) else {
            panic!("no answer")
        };
        let Ok(m) = Message::decode(&reply) else {
            panic!("undecodable answer")
        };
        assert_eq!(m.message_type, MessageType::DISCOVERY_RESPONSE);
        assert_eq!(m.seq, 9);
        assert_eq!(m.check_mandatory(), Ok(()));
        assert!(m.elements.contains(&Element::AcName(b"airlift")));
        assert!(m.elements.contains(&Element::WtpRadioInformation(radio)));
        assert!(
            m.elements
                .contains(&Element::ControlIpv4Address(ControlIpv4Address {
                    address: Ipv4Addr::LOCALHOST,
                    wtp_count: 0
                }))
        );
        // Without its Discovery Type, or another message: no answer.
        elements.remove(0);
        let partial = Message::new(MessageType::DISCOVERY_REQUEST, 9, elements)
            .to_vec()
            .unwrap_or_default();
        assert_eq!(discovery_response(&cfg, &partial), None);
        assert_eq!(discovery_response(&cfg, &join_request(1)), None);
        assert_eq!(discovery_response(&cfg, b"junk"), None);
    }

    #[test]
    fn a_silent_ap_is_given_up_after_the_dead_interval_and_a_refused_join_ends_at_once() {
        let now = Instant::now();
        let mut s = AcSession::new(config(1024));
        s.handle_datagram(now, &join_request(1));
        drain(&mut s);
        events(&mut s);
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(90)));
        // Anything it sends keeps it alive.
        let later = now + Duration::from_secs(60);
        let echo = Message::new(MessageType::ECHO_REQUEST, 2, Vec::new())
            .to_vec()
            .unwrap_or_default();
        s.handle_datagram(later, &echo);
        s.handle_timeout(now + Duration::from_secs(90));
        assert!(!s.is_gone());
        s.handle_timeout(later + Duration::from_secs(90));
        assert!(s.is_gone());
        assert_eq!(events(&mut s), [AcEvent::Gone]);
        assert_eq!(s.poll_timeout(), None);
        // A Join Request without its mandatory elements: answered 20, and the session ends.
        let mut s = AcSession::new(config(1024));
        let bare = Message::new(MessageType::JOIN_REQUEST, 1, Vec::new())
            .to_vec()
            .unwrap_or_default();
        s.handle_datagram(now, &bare);
        let out = drain(&mut s);
        let Some(Ok(m)) = out.first().map(|d| Message::decode(d)) else {
            panic!("no answer")
        };
        assert_eq!(m.result_code(), Some(ResultCode::MISSING_MANDATORY_ELEMENT));
        assert!(s.is_gone());
    }

    #[test]
    fn an_ap_that_rebooted_on_the_same_address_is_heard_despite_its_sequence_numbers() {
        let now = Instant::now();
        let mut s = AcSession::new(config(1024));
        s.handle_datagram(now, &join_request(5));
        s.handle_datagram(now, &image_request(6, "ap1g8"));
        drain(&mut s);
        events(&mut s);
        // A late copy of the current Join (its Session ID) is a duplicate: no second join.
        s.handle_datagram(now, &join_request(5));
        assert!(
            !events(&mut s)
                .iter()
                .any(|e| matches!(e, AcEvent::Joined(_)))
        );
        // Rebooted: a new Session ID, and numbers that start over, even on one the old
        // session used.
        for (seq, id) in [(0, 1u8), (6, 2)] {
            s.handle_datagram(now, &join_request_in(seq, "17.3.3.26", [id; 16]));
            let out = drain(&mut s);
            let Some(Ok(m)) = out.last().map(|d| Message::decode(d)) else {
                panic!("no Join Response for seq {seq}")
            };
            assert_eq!((m.message_type, m.seq), (MessageType::JOIN_RESPONSE, seq));
            assert!(
                events(&mut s)
                    .iter()
                    .any(|e| matches!(e, AcEvent::Joined(_)))
            );
        }
    }

    #[test]
    fn a_rejoin_ends_a_running_transfer() {
        let now = Instant::now();
        // The last block went out, its answer was lost, and the AP rejoins on the new
        // version: it got the image.
        let mut s = AcSession::new(config(1024));
        s.handle_datagram(now, &join_request(1));
        s.handle_datagram(now, &image_request(2, "ap1g8"));
        s.image_ready(now, Ok(image(100)));
        drain(&mut s);
        events(&mut s);
        s.handle_datagram(now, &join_request_on(3, "17.9.4.27"));
        let evs = events(&mut s);
        assert!(
            evs.iter()
                .any(|e| matches!(e, AcEvent::TransferDone { bytes: 100, .. })),
            "{evs:?}"
        );
        assert!(!s.is_transferring());
        // Mid-way, on the old version: it rebooted, the transfer failed.
        let mut s = AcSession::new(config(1024));
        s.handle_datagram(now, &join_request(1));
        s.handle_datagram(now, &image_request(2, "ap1g8"));
        s.image_ready(now, Ok(image(5000)));
        drain(&mut s);
        events(&mut s);
        s.handle_datagram(now, &join_request(3));
        let evs = events(&mut s);
        assert!(
            evs.iter().any(|e| matches!(e, AcEvent::TransferFailed { reason, .. } if reason == "the AP joined again")),
            "{evs:?}"
        );
        assert!(matches!(evs.last(), Some(AcEvent::Joined(_))), "{evs:?}");
        // Waiting for its image, same.
        s.handle_datagram(now, &image_request(4, "ap1g8"));
        events(&mut s);
        assert!(s.is_transferring());
        s.handle_datagram(now, &join_request(5));
        assert!(
            events(&mut s)
                .iter()
                .any(|e| matches!(e, AcEvent::TransferFailed { .. }))
        );
        assert!(!s.is_transferring());
    }

    #[test]
    fn no_image_and_refusals_end_the_transfer_with_the_reason() {
        let now = Instant::now();
        let mut s = AcSession::new(config(1024));
        s.handle_datagram(now, &join_request(1));
        drain(&mut s);
        s.handle_datagram(now, &image_request(2, "ap1g6"));
        s.image_ready(
            now,
            Err("Failed to download file tftp://h/x/ap1g6: No such file or directory".into()),
        );
        let out = drain(&mut s);
        let Ok(m) = Message::decode(&out[0]) else {
            panic!("response")
        };
        assert_eq!(m.result_code(), Some(ResultCode::IMAGE_DATA_OTHER_ERROR));
        assert!(events(&mut s).iter().any(|e| matches!(e, AcEvent::TransferFailed { reason, .. } if reason.ends_with("No such file or directory"))));
        // The AP refuses the last block (bad MD5 on its side).
        s.handle_datagram(now, &image_request(3, "ap1g8"));
        s.image_ready(now, Ok(image(100)));
        let out = drain(&mut s);
        let Some(Ok(block)) = out.last().map(|d| Message::decode(d)) else {
            panic!("block")
        };
        let mut nak = Vec::new();
        encode_image_data_response(block.seq, ResultCode::IMAGE_DATA_INVALID_CHECKSUM, &mut nak);
        s.handle_datagram(now, &nak);
        assert!(events(&mut s).iter().any(|e| matches!(e, AcEvent::TransferFailed { reason, .. } if reason.contains("Invalid Checksum"))));
    }

    #[test]
    fn predownload_activate_echo_and_unknown_requests() {
        let now = Instant::now();
        let mut s = AcSession::new(config(1024));
        assert_eq!(s.predownload(now), Err(AcError::NotJoined));
        s.handle_datagram(now, &join_request(1));
        drain(&mut s);
        s.predownload(now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.activate(now), Err(AcError::Busy));
        let out = drain(&mut s);
        let Ok(cu) = Message::decode(&out[0]) else {
            panic!("config update")
        };
        assert_eq!(cu.message_type, MessageType::CONFIGURATION_UPDATE_REQUEST);
        assert_eq!(cu.image_identifier().map(|i| i.data), Some("17.9.4.27"));
        let answer = Message::new(
            MessageType::CONFIGURATION_UPDATE_RESPONSE,
            cu.seq,
            vec![Element::ResultCode(ResultCode::SUCCESS)],
        )
        .to_vec()
        .unwrap_or_default();
        s.handle_datagram(now, &answer);
        assert!(events(&mut s).contains(&AcEvent::PredownloadAnswered { result: 0 }));
        s.handle_datagram(now, &image_request(2, "ap1g8"));
        assert!(events(&mut s).contains(&AcEvent::ImageWanted {
            family: "ap1g8".into(),
            predownload: true
        }));
        s.image_ready(now, Err("later".into()));
        drain(&mut s);
        s.activate(now).unwrap_or_else(|e| panic!("{e}"));
        let out = drain(&mut s);
        let Ok(reset) = Message::decode(&out[0]) else {
            panic!("reset")
        };
        assert_eq!(reset.message_type, MessageType::RESET_REQUEST);
        assert!(reset.check_mandatory().is_ok());
        // Echo.
        let echo = Message::new(MessageType::ECHO_REQUEST, 9, Vec::new())
            .to_vec()
            .unwrap_or_default();
        s.handle_datagram(now, &echo);
        let out = drain(&mut s);
        let Ok(e) = Message::decode(&out[0]) else {
            panic!("echo")
        };
        assert_eq!((e.message_type, e.seq), (MessageType::ECHO_RESPONSE, 9));
        // An unknown request: Result Code 19.
        let odd = Message::new(MessageType::new(0, 23), 10, Vec::new())
            .to_vec()
            .unwrap_or_default();
        s.handle_datagram(now, &odd);
        let out = drain(&mut s);
        let Ok(r) = Message::decode(&out[0]) else {
            panic!("reply")
        };
        assert_eq!(r.result_code(), Some(ResultCode::UNRECOGNIZED_REQUEST));
        // A join without its mandatory elements: 20, no session.
        let mut bare = AcSession::new(config(1024));
        let empty = Message::new(MessageType::JOIN_REQUEST, 1, Vec::new())
            .to_vec()
            .unwrap_or_default();
        bare.handle_datagram(now, &empty);
        let out = drain(&mut bare);
        let Ok(r) = Message::decode(&out[0]) else {
            panic!("reply")
        };
        assert_eq!(r.result_code(), Some(ResultCode::MISSING_MANDATORY_ELEMENT));
        assert!(bare.info().is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let now = Instant::now();
            let mut s = AcSession::new(config(1024));
            s.handle_datagram(now, &join_request(1));
            s.handle_datagram(now, &data);
            drain(&mut s);
        }
    }
}
