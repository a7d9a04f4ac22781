//! The AP's side (WTP) of the image-download conversation [`crate::flow`] fixes, sans-IO: one
//! [`Wtp`] per simulated AP, no sockets, no tokio, no clock (time comes in as `now`).
//!
//! Driven like tftpd's state machines and [`crate::ac::AcSession`]:
//! [`Wtp::handle_datagram`] with each datagram from the AC, [`Wtp::handle_timeout`] when
//! [`Wtp::poll_timeout`] is reached, [`Wtp::poll_transmit`] for the datagrams to send, and
//! [`Wtp::poll_event`] for what happened, each event with the line a real AP logs
//! ([`WtpEvent::line`]: `CAPWAP State: Image Data`, `AP image version 17.3.3.26 backup
//! 8.10.130.0, Controller 17.9.4.27`, `Version does not match.`, `Image Data Request sent to
//! 172.16.4.26, fileName [ap1g8]`, `70512640 bytes, 51208 msgs, 601 last`, `Image transfer
//! completed from WLC, last 1`).
//!
//! # The session
//! ```text
//!  new ─► Join ──(Join Response 0, primary = target)──────────────────────► Run
//!          │  └─(backup = target: swap)──────────────────────────► Reset ─► Join …
//!          │  └─(otherwise)─► Image Data ─(blocks, EOF verified)─► Reset ─► Join …
//!          └─(refused / no answer)─► Reset (retry interval) ─► Join …
//!  Run: Configuration Update(Image Identifier) → predownload into the backup, stay in Run;
//!       Reset Request(Image Identifier) → swap → Reset → Join …
//! ```
//! "Reset" is the RFC's reboot: the session's requests are abandoned, and after a delay a new
//! session starts (fresh [`Responder`] and [`Requester`]; sequence numbers continue). Until
//! then the old [`Responder`] still answers duplicates from its cache, so the AC's
//! retransmitted last block (or Reset Request) is answered even when our answer was lost.
//!
//! # Decisions beyond flow.rs
//! - Blocks that arrive while our Image Data Request is still unanswered (the AC's Image Data
//!   Response was lost) are dropped before the [`Responder`]: our request is retransmitted,
//!   the AC resends its cached answer, and it retransmits the block, which is then taken.
//!   (Our AC also sends the response again with each retransmission of the first block.)
//! - The ImageDataStartTimer (RFC 5415 §4.7.9) runs from the AC's Image Data Response and is
//!   restarted by every new block, so it also catches a transfer that stalls; when it runs
//!   out the AP abandons the download (at join or predownload) and resets, like the real AP's
//!   `Going to restart CAPWAP (reason : image download cannot start)...`.
//! - A refused or failed download at join makes the AP rejoin after the retry interval; a
//!   refused or failed predownload leaves it in Run (the AC decides when to ask again).
//! - Configuration Update for a version that is already the primary or the backup: 17.
//!   Reset Request for the running version: 0 and a plain restart (no swap).
//! - Requests it understands but that make no sense now (Image Data while not receiving,
//!   Configuration Update or Reset before joining, Configuration Update during a download):
//!   18. Requests it does not understand: 19. A missing Image Identifier on a Reset Request, or
//!   a missing Image Data on an Image Data Request: 20.

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bundle_tool::check::{FileReport, check_image};
use bundle_tool::report::{Severity, hex};
use bundle_tool::tar::{TarChecker, TarLimits};
use bundle_tool::version::ApVersion;
use md5::{Digest, Md5};

use crate::capwap::{
    EcnSupport, Element, EncodeError, EncryptionCapability, FrameTunnelMode, Header, ImageData,
    ImageIdentifier, MacType, Message, MessageType, RadioInformation, Reassembler, Reassembly,
    ReassemblyLimits, RequestDisposition, Requester, Responder, ResultCode, RetransmitConfig,
    SubElements, VendorVersion, WtpBoardData, WtpDescriptor, encode_image_data_response,
};
use crate::flow::{CISCO_VENDOR_ID, ECHO_INTERVAL_S};

/// RFC 5415 ImageDataStartTimer default (§4.7.9): 30 s.
pub const DEFAULT_IMAGE_DATA_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wait before rejoining after a failure (join refused, download refused or failed,
/// AC not answering): 30 s, the RFC's SilentInterval.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Default "reboot" time between a reset (new image, swap, Reset Request) and the new Join
/// Request: 5 s, longer than the AC's first retransmission (3 s), so a lost last answer is
/// resent from the cache before the session goes.
pub const DEFAULT_RESET_DELAY: Duration = Duration::from_secs(5);
/// Default largest image the AP accepts (Image Information's size): 1 GiB.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 1 << 30;
/// The WTP Descriptor's hardware version.
const HARDWARE_VERSION: &[u8] = b"1.0";
/// The WTP Descriptor's boot version.
const BOOT_VERSION: &[u8] = b"1.1.2.4";
/// Bytes reserved up front for an image kept in memory; it grows past this as blocks come.
const INITIAL_IMAGE_RESERVE: u64 = 64 << 20;

/// What the AP keeps of a received image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSink {
    /// The bytes, in memory ([`ReceivedImage::bytes`]).
    Memory,
    /// Only size and MD5 (the tar is still checked as it streams): nothing proportional to
    /// the image is held, for simulations of many APs.
    HashOnly,
}

/// One simulated AP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WtpConfig {
    /// WTP Name (`AP-0001`); at most 512 bytes.
    pub name: String,
    /// Model (`C9105AXI-E`), sent in WTP Board Data.
    pub model: String,
    /// Image family (`ap1g8`): the Image Identifier of its Image Data Requests. The caller
    /// derives it from the model with `bundle_tool::models::which`.
    pub family: String,
    /// Serial number (WTP Board Data).
    pub serial: String,
    /// Base MAC address (WTP Board Data).
    pub base_mac: [u8; 6],
    /// Version of the primary (running) image, sent as the active software version.
    pub primary: String,
    /// Version of the backup image, sent as the other software version (empty: none).
    pub backup: String,
    /// CAPWAP Local IPv4 Address.
    pub local_ipv4: Ipv4Addr,
    /// Location Data. Default `airlift lab`.
    pub location: String,
    /// Retransmission of our requests (§4.5.3). Default 3 s doubling, 5 retransmissions.
    pub retransmit: RetransmitConfig,
    /// Echo Request interval in Run and Image Data. Default 30 s (RFC EchoInterval); zero
    /// sends no Echo Requests.
    pub echo_interval: Duration,
    /// ImageDataStartTimer. Default [`DEFAULT_IMAGE_DATA_START_TIMEOUT`].
    pub image_data_start_timeout: Duration,
    /// Wait before rejoining after a failure. Default [`DEFAULT_RETRY_INTERVAL`].
    pub retry_interval: Duration,
    /// Wait between a reset and the new Join Request. Default [`DEFAULT_RESET_DELAY`].
    pub reset_delay: Duration,
    /// What to keep of a received image. Default [`ImageSink::HashOnly`].
    pub sink: ImageSink,
    /// Largest image accepted. Default [`DEFAULT_MAX_IMAGE_SIZE`].
    pub max_image_size: u64,
    /// Fault injection: after receiving this many image bytes (over its lifetime) the AP
    /// dies — it stops answering and never sends again. Default `None`.
    pub crash_after_bytes: Option<u64>,
    /// Sequence number of the first request. Default 0.
    pub first_seq: u8,
}

impl WtpConfig {
    /// An AP called `name` of `model` and `family`, running the source document's versions
    /// (primary 17.3.3.26, backup 8.10.130.0), at 127.0.0.1, with every default above.
    pub fn new(
        name: impl Into<String>,
        model: impl Into<String>,
        family: impl Into<String>,
    ) -> WtpConfig {
        WtpConfig {
            name: name.into(),
            model: model.into(),
            family: family.into(),
            serial: "FGL0000A000".into(),
            base_mac: [0x00, 0x40, 0x96, 0x00, 0x00, 0x01],
            primary: "17.3.3.26".into(),
            backup: "8.10.130.0".into(),
            local_ipv4: Ipv4Addr::LOCALHOST,
            location: "airlift lab".into(),
            retransmit: RetransmitConfig::default(),
            echo_interval: Duration::from_secs(ECHO_INTERVAL_S),
            image_data_start_timeout: DEFAULT_IMAGE_DATA_START_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            reset_delay: DEFAULT_RESET_DELAY,
            sink: ImageSink::HashOnly,
            max_image_size: DEFAULT_MAX_IMAGE_SIZE,
            crash_after_bytes: None,
            first_seq: 0,
        }
    }
}

/// Why a [`Wtp`] cannot be built from its config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WtpError {
    /// The Join Request the config describes cannot be encoded (a name or version too long).
    #[error("the Join Request cannot be encoded: {0}")]
    JoinRequest(#[source] EncodeError),
    /// The Image Data Request cannot be encoded (the family is empty or too long).
    #[error("the Image Data Request for family {family:?} cannot be encoded: {source}")]
    ImageDataRequest {
        /// The family.
        family: String,
        /// Why.
        #[source]
        source: EncodeError,
    },
}

/// Why a received image was not accepted; each maps to the Result Code the AP answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageCheckError {
    /// Result Code 0 without Image Information: nothing to check the image against.
    #[error("the Image Data Response carries no Image Information")]
    NoImageInformation,
    /// The announced size is above [`WtpConfig::max_image_size`].
    #[error("the announced {size} bytes exceed the {limit}-byte limit")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More bytes arrived than announced.
    #[error("{got} bytes received, more than the announced {expected}")]
    Overrun {
        /// Announced size.
        expected: u64,
        /// Bytes received with this block.
        got: u64,
    },
    /// The EOF block came before the announced size was reached.
    #[error("{got} bytes received, {expected} announced")]
    Length {
        /// Announced size.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The MD5 of the bytes is not the announced one.
    #[error("MD5 {} is not the announced {}", hex(got), hex(expected))]
    Checksum {
        /// Announced MD5.
        expected: [u8; 16],
        /// MD5 of what arrived.
        got: [u8; 16],
    },
    /// The tar archive is broken, or its info names another family or version.
    #[error("{0}")]
    Image(String),
}

impl ImageCheckError {
    /// The Result Code answered: 15 for lengths, 14 for the checksum, 16 otherwise.
    pub fn result_code(&self) -> ResultCode {
        match self {
            ImageCheckError::Overrun { .. } | ImageCheckError::Length { .. } => {
                ResultCode::IMAGE_DATA_INVALID_DATA_LENGTH
            }
            ImageCheckError::Checksum { .. } => ResultCode::IMAGE_DATA_INVALID_CHECKSUM,
            ImageCheckError::NoImageInformation
            | ImageCheckError::TooLarge { .. }
            | ImageCheckError::Image(_) => ResultCode::IMAGE_DATA_OTHER_ERROR,
        }
    }
}

/// The CAPWAP state, as a real AP logs it (`CAPWAP State: Image Data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapwapState {
    /// Join Request sent, no answer yet.
    Join,
    /// Downloading at join.
    ImageData,
    /// Joined and running (possibly predownloading).
    Run,
    /// Session over; a new one starts after a delay.
    Reset,
    /// Crashed by fault injection: silent for good.
    Dead,
}

impl fmt::Display for CapwapState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CapwapState::Join => "Join",
            CapwapState::ImageData => "Image Data",
            CapwapState::Run => "Run",
            CapwapState::Reset => "Reset",
            CapwapState::Dead => "Dead",
        })
    }
}

/// Which of the AP's two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The running image.
    Primary,
    /// The other one.
    Backup,
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::Primary => "primary",
            Slot::Backup => "backup",
        })
    }
}

/// Why the AP restarts its CAPWAP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartReason {
    /// A download at join completed: boot the new image.
    NewImage,
    /// The backup is the controller's version: boot it.
    BackupImage,
    /// The AC's Reset Request.
    ResetRequest,
    /// No Image Data arrived within the ImageDataStartTimer after the AC's answer.
    ImageDownloadCannotStart,
    /// Image Data stopped arriving for the ImageDataStartTimer.
    ImageDownloadStalled,
    /// The AC refused the Image Data Request.
    DownloadRefused,
    /// The image failed its checks, or the AC aborted the transfer.
    DownloadFailed,
    /// The AC refused the Join Request.
    JoinRejected,
    /// The AC stopped answering (MaxRetransmit reached).
    PeerDead,
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartReason::NewImage => "image download completed",
            RestartReason::BackupImage => "backup image matches controller",
            RestartReason::ResetRequest => "reset request from controller",
            RestartReason::ImageDownloadCannotStart => "image download cannot start",
            RestartReason::ImageDownloadStalled => "image download stalled",
            RestartReason::DownloadRefused => "image download refused",
            RestartReason::DownloadFailed => "image download failed",
            RestartReason::JoinRejected => "join failed",
            RestartReason::PeerDead => "controller not responding",
        })
    }
}

/// Something the AP did or saw: for logging and the simulator's report. [`WtpEvent::line`]
/// is the AP's log line (the source document's wording where it shows one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WtpEvent {
    /// The CAPWAP state changed: `CAPWAP State: Image Data`.
    State(CapwapState),
    /// Join Response 0: `AC accepted join request with result code: 0`.
    Joined {
        /// AC Name.
        ac_name: String,
        /// The AC's address (CAPWAP Control IPv4 Address), or its name when absent.
        ac: String,
    },
    /// The AC refused the Join Request, or its Join Response lacks a mandatory element.
    JoinRejected {
        /// Its Result Code.
        result: u32,
        /// The mandatory element missing from a Join Response with Result Code 0.
        missing: Option<String>,
    },
    /// `AP image version 17.3.3.26 backup 8.10.130.0, Controller 17.9.4.27`.
    ImageVersions {
        /// Primary.
        primary: String,
        /// Backup.
        backup: String,
        /// The AC's Image Identifier.
        controller: String,
    },
    /// `Version does not match.`
    VersionMismatch,
    /// The backup is the controller's version; the AP swaps to it.
    BackupMatches {
        /// The version.
        version: String,
    },
    /// `Image Data Request sent to 172.16.4.26, fileName [ap1g8]`.
    ImageDataRequestSent {
        /// The AC.
        ac: String,
        /// The family asked for.
        family: String,
    },
    /// The AC accepted the Image Data Request and announced the image.
    ImageDataResponse {
        /// The AC.
        ac: String,
        /// Announced size.
        size: u64,
        /// Announced MD5.
        md5: [u8; 16],
    },
    /// The AC refused the Image Data Request.
    DownloadRefused {
        /// The AC.
        ac: String,
        /// Its Result Code.
        result: u32,
        /// Predownload (the AP stays in Run) rather than download at join (it rejoins).
        predownload: bool,
    },
    /// Configuration Update Request with an Image Identifier, and the answer.
    PredownloadRequested {
        /// The version to predownload.
        version: String,
        /// Result Code answered (0, 17 or 18).
        result: u32,
    },
    /// The EOF block arrived: `70512640 bytes, 51208 msgs, 601 last`.
    TransferSummary(TransferSummary),
    /// Size, MD5 and tar are right: `Image transfer completed from WLC, last 1`.
    TransferCompleted,
    /// The image was stored.
    ImageStored {
        /// Family.
        family: String,
        /// Version.
        version: String,
        /// Where.
        slot: Slot,
    },
    /// The image (or the AC's announcement of it) was not accepted.
    ImageRejected {
        /// Family.
        family: String,
        /// Why.
        error: ImageCheckError,
        /// The Result Code answered to the AC, if an answer was due.
        answered: Option<u32>,
    },
    /// The AC aborted the transfer (Image Data type 5).
    TransferAborted {
        /// Family.
        family: String,
    },
    /// The ImageDataStartTimer ran out.
    ImageDataTimeout {
        /// How long the AP waited.
        waited: Duration,
        /// Image bytes received before.
        received: u64,
    },
    /// Reset Request, and the answer.
    ResetRequested {
        /// The Image Identifier.
        version: String,
        /// Result Code answered (0, 10, 18 or 20).
        result: u32,
    },
    /// Primary and backup swapped.
    ImagesSwapped {
        /// The new primary's version.
        primary: String,
        /// The new backup's version.
        backup: String,
    },
    /// The AC stopped answering a request.
    PeerDead {
        /// The unanswered request.
        request: MessageType,
        /// Retransmissions made.
        retransmissions: u32,
    },
    /// The session ends and a new Join follows after `after`:
    /// `Going to restart CAPWAP (reason : image download cannot start)...`.
    Restarting {
        /// Why.
        reason: RestartReason,
        /// Delay before the new Join Request.
        after: Duration,
    },
    /// Fault injection: the AP died.
    Crashed {
        /// Image bytes received over its lifetime.
        bytes: u64,
    },
}

impl WtpEvent {
    /// The AP's log text for the event: one line, or two for the Image Data Response (the
    /// AP logs the response, then the AC's verdict).
    pub fn line(&self) -> String {
        self.to_string()
    }

    /// [`WtpEvent::line`] a line at a time, each to be stamped on its own.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().split('\n').map(str::to_owned).collect()
    }
}

fn describe(code: u32) -> &'static str {
    ResultCode(code).description().unwrap_or("unknown")
}

impl fmt::Display for WtpEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WtpEvent::State(s) => write!(f, "CAPWAP State: {s}"),
            WtpEvent::Joined { .. } => f.write_str("AC accepted join request with result code: 0"),
            WtpEvent::JoinRejected {
                result,
                missing: None,
            } => write!(
                f,
                "AC rejected join request with result code: {result} ({})",
                describe(*result)
            ),
            WtpEvent::JoinRejected {
                missing: Some(m), ..
            } => write!(f, "Join Response not usable: {m}"),
            WtpEvent::ImageVersions {
                primary,
                backup,
                controller,
            } => write!(
                f,
                "AP image version {primary} backup {backup}, Controller {controller}"
            ),
            WtpEvent::VersionMismatch => f.write_str("Version does not match."),
            WtpEvent::BackupMatches { version } => write!(
                f,
                "Backup image version {version} matches the controller, swapping images"
            ),
            WtpEvent::ImageDataRequestSent { ac, family } => {
                write!(f, "Image Data Request sent to {ac}, fileName [{family}]")
            }
            WtpEvent::ImageDataResponse { ac, .. } => write!(
                f,
                "Image Data Response from {ac}\nAC accepted previous sent request with result code: 0"
            ),
            WtpEvent::DownloadRefused { ac, result, .. } => write!(
                f,
                "Image Data Response from {ac}\nAC refused previous sent request with result code: {result} ({})",
                describe(*result)
            ),
            WtpEvent::PredownloadRequested { version, result } => write!(
                f,
                "Predownload of image {version} requested, answered result code: {result}"
            ),
            WtpEvent::TransferSummary(s) => write!(f, "{s}"),
            WtpEvent::TransferCompleted => f.write_str("Image transfer completed from WLC, last 1"),
            WtpEvent::ImageStored {
                family,
                version,
                slot,
            } => write!(
                f,
                "Image {family} version {version} written to storage as the {slot} image"
            ),
            WtpEvent::ImageRejected {
                family,
                error,
                answered,
            } => {
                write!(f, "Image {family} rejected: {error}")?;
                if let Some(code) = answered {
                    write!(f, ", answered result code: {code} ({})", describe(*code))?;
                }
                Ok(())
            }
            WtpEvent::TransferAborted { family } => {
                write!(
                    f,
                    "Aborting image download: the controller aborted {family}"
                )
            }
            WtpEvent::ImageDataTimeout { waited, received } => write!(
                f,
                "No Image Data from the controller for {} ms ({received} bytes received)",
                waited.as_millis()
            ),
            WtpEvent::ResetRequested { version, result } => write!(
                f,
                "Reset Request for image {version}, answered result code: {result}"
            ),
            WtpEvent::ImagesSwapped { primary, backup } => {
                write!(f, "Images swapped: primary {primary}, backup {backup}")
            }
            WtpEvent::PeerDead {
                request,
                retransmissions,
            } => write!(
                f,
                "No answer to {request} after {retransmissions} retransmissions"
            ),
            WtpEvent::Restarting { reason, .. } => {
                write!(f, "Going to restart CAPWAP (reason : {reason})...")
            }
            WtpEvent::Crashed { bytes } => {
                write!(f, "AP died after {bytes} image bytes (fault injection)")
            }
        }
    }
}

/// What a transfer amounted to: `70512640 bytes, 51208 msgs, 601 last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSummary {
    /// Image bytes.
    pub bytes: u64,
    /// Image Data messages with data (the EOF one included).
    pub messages: u64,
    /// Bytes in the last (EOF) block.
    pub last: u64,
}

impl TransferSummary {
    /// What a transfer of `size` bytes in `block_size` blocks amounts to, per flow.rs step 6:
    /// `ceil(size / block_size)` messages, the last carrying the remaining 1 to `block_size`
    /// bytes; an empty image is one empty EOF block. A zero block size is taken as 1.
    pub fn expected(size: u64, block_size: u64) -> TransferSummary {
        let block = block_size.max(1);
        let messages = size.div_ceil(block).max(1);
        TransferSummary {
            bytes: size,
            messages,
            last: size - (messages - 1) * block,
        }
    }
}

impl fmt::Display for TransferSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes, {} msgs, {} last",
            self.bytes, self.messages, self.last
        )
    }
}

/// A received, verified image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedImage {
    /// Family.
    pub family: String,
    /// Size in bytes.
    pub size: u64,
    /// MD5.
    pub md5: [u8; 16],
    /// The bytes ([`ImageSink::Memory`] only).
    pub bytes: Option<Vec<u8>>,
}

/// One of the AP's two image slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSlot {
    /// The image's version (empty: none).
    pub version: String,
    /// The image, when it arrived over CAPWAP in this AP's lifetime.
    pub image: Option<ReceivedImage>,
}

/// Progress of the current download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes received.
    pub received: u64,
    /// Announced size (0 until the AC answered).
    pub size: u64,
    /// Predownload (into the backup) rather than download at join.
    pub predownload: bool,
}

/// Counters for the simulator's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WtpStats {
    /// Join Requests sent (sessions started).
    pub joins: u64,
    /// Datagrams that did not decode (or fragments that did not reassemble).
    pub malformed: u64,
    /// Responses to nothing outstanding, of the wrong type, or with an old sequence number.
    pub unexpected_responses: u64,
    /// Duplicate requests answered from the cache.
    pub duplicate_requests: u64,
    /// Requests ignored: older sequence numbers, or new ones while resetting.
    pub ignored_requests: u64,
    /// Requests answered with 19 (or not at all: a type-255 request has no response type).
    pub unknown_requests: u64,
    /// Blocks that came before the AC's Image Data Response, dropped.
    pub early_blocks: u64,
    /// Echo Requests sent.
    pub echoes: u64,
    /// Requests of ours retransmitted.
    pub retransmissions: u64,
    /// Image bytes received over the AP's lifetime (duplicates not counted).
    pub image_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Join Request outstanding.
    Joining,
    /// Joined (Run, or Image Data when a download at join runs).
    Joined,
    /// Session over; the next starts at `at`.
    Down {
        at: Instant,
    },
    Crashed,
}

/// Requests of ours waiting for the Requester (one outstanding per side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    Echo,
    ImageDataRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    AtJoin,
    Predownload,
}

#[derive(Debug)]
struct Download {
    purpose: Purpose,
    /// The version being fetched (the AC's Image Identifier).
    version: String,
    /// `None` until the AC's Image Data Response 0.
    receiving: Option<Box<Receiving>>,
}

#[derive(Debug)]
struct Receiving {
    size: u64,
    md5: [u8; 16],
    received: u64,
    messages: u64,
    last: u64,
    hasher: Md5,
    tar: TarChecker,
    bytes: Option<Vec<u8>>,
    /// ImageDataStartTimer.
    deadline: Instant,
}

/// One simulated AP: see the module doc.
#[derive(Debug)]
pub struct Wtp {
    cfg: WtpConfig,
    phase: Phase,
    primary: ImageSlot,
    backup: ImageSlot,
    requester: Requester,
    responder: Responder,
    reassembler: Reassembler<()>,
    /// Our outstanding request, by type.
    asked: Option<MessageType>,
    queued: VecDeque<Outgoing>,
    download: Option<Download>,
    next_echo: Option<Instant>,
    ac_name: String,
    ac: String,
    events: VecDeque<WtpEvent>,
    buf: Vec<u8>,
    stats: WtpStats,
}

fn reassembly_limits() -> ReassemblyLimits {
    ReassemblyLimits {
        max_message_len: usize::from(u16::MAX) + 16,
        max_partial: 2,
        max_partial_per_peer: 2,
        timeout: Duration::from_secs(30),
    }
}

fn cisco(value: &[u8]) -> VendorVersion<'_> {
    VendorVersion {
        vendor_id: CISCO_VENDOR_ID,
        value,
    }
}

/// Versions are equal when both parse as four numbers and the numbers agree (so `17.09.4.27`
/// is `17.9.4.27`), or else when the trimmed strings agree.
fn same_version(a: &str, b: &str) -> bool {
    match (a.parse::<ApVersion>(), b.parse::<ApVersion>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Wtp {
    /// An AP that sends its first Join Request at `now`. Fails when the config cannot be put
    /// on the wire (an empty family, a name over 512 bytes, …).
    pub fn new(cfg: WtpConfig, now: Instant) -> Result<Wtp, WtpError> {
        let mut wtp = Wtp {
            phase: Phase::Down { at: now },
            primary: ImageSlot {
                version: cfg.primary.clone(),
                image: None,
            },
            backup: ImageSlot {
                version: cfg.backup.clone(),
                image: None,
            },
            requester: Requester::new(cfg.retransmit, cfg.first_seq),
            responder: Responder::new(),
            reassembler: Reassembler::new(reassembly_limits()),
            asked: None,
            queued: VecDeque::new(),
            download: None,
            next_echo: None,
            ac_name: String::new(),
            ac: String::new(),
            events: VecDeque::new(),
            buf: Vec::with_capacity(2048),
            stats: WtpStats::default(),
            cfg,
        };
        let mut probe = Vec::new();
        wtp.encode_join_request(0, &mut probe)
            .map_err(WtpError::JoinRequest)?;
        probe.clear();
        wtp.encode_image_data_request(0, &mut probe)
            .map_err(|source| WtpError::ImageDataRequest {
                family: wtp.cfg.family.clone(),
                source,
            })?;
        wtp.start_session(now);
        Ok(wtp)
    }

    /// The config it was built from.
    pub fn config(&self) -> &WtpConfig {
        &self.cfg
    }

    /// The CAPWAP state.
    pub fn state(&self) -> CapwapState {
        match self.phase {
            Phase::Joining => CapwapState::Join,
            Phase::Joined => match &self.download {
                Some(d) if d.purpose == Purpose::AtJoin => CapwapState::ImageData,
                _ => CapwapState::Run,
            },
            Phase::Down { .. } => CapwapState::Reset,
            Phase::Crashed => CapwapState::Dead,
        }
    }

    /// The running image.
    pub fn primary(&self) -> &ImageSlot {
        &self.primary
    }

    /// The other image.
    pub fn backup(&self) -> &ImageSlot {
        &self.backup
    }

    /// Takes the bytes of the image in `slot` (kept with [`ImageSink::Memory`]), e.g. to
    /// write them to a folder; size and MD5 stay.
    pub fn take_image_bytes(&mut self, slot: Slot) -> Option<Vec<u8>> {
        let s = match slot {
            Slot::Primary => &mut self.primary,
            Slot::Backup => &mut self.backup,
        };
        s.image.as_mut().and_then(|i| i.bytes.take())
    }

    /// The current download, if one runs.
    pub fn progress(&self) -> Option<Progress> {
        self.download.as_ref().map(|d| Progress {
            received: d.receiving.as_ref().map_or(0, |r| r.received),
            size: d.receiving.as_ref().map_or(0, |r| r.size),
            predownload: d.purpose == Purpose::Predownload,
        })
    }

    /// Crashed by [`WtpConfig::crash_after_bytes`].
    pub fn is_crashed(&self) -> bool {
        self.phase == Phase::Crashed
    }

    /// Counters.
    pub fn stats(&self) -> WtpStats {
        self.stats
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<WtpEvent> {
        self.events.pop_front()
    }

    /// The next datagram for the AC: cached responses first, then our request.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.phase == Phase::Crashed {
            return None;
        }
        if self.responder.has_transmit() {
            return self.responder.poll_transmit();
        }
        self.requester.poll_transmit()
    }

    /// When [`Wtp::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match self.phase {
            Phase::Crashed => return None,
            Phase::Down { at } => Some(at),
            Phase::Joining => self.requester.poll_timeout(),
            Phase::Joined => [
                self.requester.poll_timeout(),
                self.next_echo,
                self.download
                    .as_ref()
                    .and_then(|d| d.receiving.as_ref())
                    .map(|r| r.deadline),
            ]
            .into_iter()
            .flatten()
            .min(),
        };
        [own, self.reassembler.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers due at `now`: retransmission or peer-dead, the ImageDataStartTimer,
    /// the echo interval, the restart after a reset. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Crashed {
            return;
        }
        self.reassembler.handle_timeout(now);
        if let Phase::Down { at } = self.phase {
            if now >= at {
                self.start_session(now);
            }
            return;
        }
        let before = self.requester.stats().retransmissions;
        let dead = self.requester.handle_timeout(now);
        self.stats.retransmissions += self.requester.stats().retransmissions - before;
        if let Some(dead) = dead {
            let request = self.asked.take().unwrap_or(MessageType::ECHO_REQUEST);
            self.events.push_back(WtpEvent::PeerDead {
                request,
                retransmissions: dead.retransmissions,
            });
            self.restart(now, RestartReason::PeerDead, self.cfg.retry_interval);
            return;
        }
        if self.phase != Phase::Joined {
            return;
        }
        if let Some(r) = self.download.as_ref().and_then(|d| d.receiving.as_ref())
            && now >= r.deadline
        {
            let received = r.received;
            self.events.push_back(WtpEvent::ImageDataTimeout {
                waited: self.cfg.image_data_start_timeout,
                received,
            });
            let reason = if received == 0 {
                RestartReason::ImageDownloadCannotStart
            } else {
                RestartReason::ImageDownloadStalled
            };
            self.restart(now, reason, self.cfg.reset_delay);
            return;
        }
        if let Some(at) = self.next_echo
            && now >= at
        {
            self.queue_echo();
            self.next_echo = Some(now + self.cfg.echo_interval);
        }
        self.pump(now);
    }

    /// A datagram from the AC. Anything malformed is counted and ignored.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.phase == Phase::Crashed {
            return;
        }
        let is_fragment = matches!(Header::decode(datagram), Ok((h, _)) if h.fragment.is_some());
        if is_fragment {
            match self.reassembler.push(now, &(), datagram) {
                Ok(Reassembly::Complete(whole)) => self.handle_message(now, &whole),
                Ok(Reassembly::Incomplete | Reassembly::Duplicate) => {}
                Err(_) => self.stats.malformed += 1,
            }
        } else {
            self.handle_message(now, datagram);
        }
    }

    fn handle_message(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(msg) = Message::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if msg.message_type.is_request() {
            self.on_request(now, &msg);
        } else {
            self.on_response(now, &msg);
        }
        self.pump(now);
    }

    // ---- sessions ----

    fn start_session(&mut self, now: Instant) {
        self.responder = Responder::new();
        self.reassembler = Reassembler::new(reassembly_limits());
        self.requester = Requester::new(self.cfg.retransmit, self.requester.next_seq());
        self.asked = None;
        self.queued.clear();
        self.download = None;
        self.next_echo = None;
        self.ac_name.clear();
        self.ac.clear();
        self.stats.joins += 1;
        let seq = self.requester.next_seq();
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        // The config was checked by `new`, and swaps only exchange versions it held.
        if self.encode_join_request(seq, &mut out).is_ok() && self.requester.send(now, &out).is_ok()
        {
            self.asked = Some(MessageType::JOIN_REQUEST);
        }
        self.buf = out;
        self.phase = Phase::Joining;
        self.events.push_back(WtpEvent::State(CapwapState::Join));
    }

    /// Ends the session; a new one starts after `after`. The responder stays until then so
    /// duplicates of the last request are still answered.
    fn restart(&mut self, now: Instant, reason: RestartReason, after: Duration) {
        self.requester.cancel();
        self.asked = None;
        self.queued.clear();
        self.download = None;
        self.next_echo = None;
        self.phase = Phase::Down { at: now + after };
        self.events
            .push_back(WtpEvent::Restarting { reason, after });
        self.events.push_back(WtpEvent::State(CapwapState::Reset));
    }

    fn session_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&self.cfg.base_mac);
        id[6..14].copy_from_slice(&self.stats.joins.to_be_bytes());
        id[14] = self.cfg.first_seq;
        id[15] = 0x5a;
        id
    }

    fn encode_join_request(&self, seq: u8, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let c = &self.cfg;
        let encryption = [EncryptionCapability {
            wbid: 1,
            capabilities: 0,
        }];
        let backup = self.backup.version.as_bytes();
        Message::new(
            MessageType::JOIN_REQUEST,
            seq,
            vec![
                Element::LocationData(c.location.as_bytes()),
                Element::WtpBoardData(WtpBoardData {
                    vendor_id: CISCO_VENDOR_ID,
                    model: c.model.as_bytes(),
                    serial: c.serial.as_bytes(),
                    board_id: None,
                    board_revision: None,
                    base_mac: Some(&c.base_mac),
                }),
                Element::WtpDescriptor(WtpDescriptor {
                    max_radios: 2,
                    radios_in_use: 2,
                    encryption: SubElements::new(&encryption),
                    hardware_version: cisco(HARDWARE_VERSION),
                    active_software_version: cisco(self.primary.version.as_bytes()),
                    boot_version: cisco(BOOT_VERSION),
                    other_software_version: (!backup.is_empty()).then(|| cisco(backup)),
                }),
                Element::WtpName(c.name.as_bytes()),
                Element::SessionId(self.session_id()),
                Element::WtpFrameTunnelMode(FrameTunnelMode(FrameTunnelMode::LOCAL_BRIDGING)),
                Element::WtpMacType(MacType::Split),
                Element::WtpRadioInformation(RadioInformation {
                    radio_id: 1,
                    radio_type: RadioInformation::TYPE_B
                        | RadioInformation::TYPE_G
                        | RadioInformation::TYPE_N,
                }),
                Element::WtpRadioInformation(RadioInformation {
                    radio_id: 2,
                    radio_type: RadioInformation::TYPE_A | RadioInformation::TYPE_N,
                }),
                Element::EcnSupport(EcnSupport::Limited),
                Element::LocalIpv4Address(c.local_ipv4),
            ],
        )
        .encode(out)
    }

    fn encode_image_data_request(&self, seq: u8, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Message::new(
            MessageType::IMAGE_DATA_REQUEST,
            seq,
            vec![
                Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: CISCO_VENDOR_ID,
                    data: &self.cfg.family,
                }),
                Element::InitiateDownload,
            ],
        )
        .encode(out)
    }

    // ---- our requests ----

    fn queue_echo(&mut self) {
        if self.cfg.echo_interval.is_zero()
            || self.asked == Some(MessageType::ECHO_REQUEST)
            || self.queued.contains(&Outgoing::Echo)
        {
            return;
        }
        self.queued.push_back(Outgoing::Echo);
    }

    /// Sends the next queued request when none is outstanding.
    fn pump(&mut self, now: Instant) {
        if self.phase != Phase::Joined || !self.requester.is_idle() {
            return;
        }
        let Some(next) = self.queued.pop_front() else {
            return;
        };
        let seq = self.requester.next_seq();
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        let (kind, encoded) = match next {
            Outgoing::Echo => (
                MessageType::ECHO_REQUEST,
                Message::new(MessageType::ECHO_REQUEST, seq, Vec::new()).encode(&mut out),
            ),
            Outgoing::ImageDataRequest => (
                MessageType::IMAGE_DATA_REQUEST,
                self.encode_image_data_request(seq, &mut out),
            ),
        };
        if encoded.is_ok() && self.requester.send(now, &out).is_ok() {
            self.asked = Some(kind);
            match next {
                Outgoing::Echo => self.stats.echoes += 1,
                Outgoing::ImageDataRequest => {
                    self.events.push_back(WtpEvent::ImageDataRequestSent {
                        ac: self.ac.clone(),
                        family: self.cfg.family.clone(),
                    })
                }
            }
        }
        self.buf = out;
    }

    // ---- responses from the AC ----

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(asked) = self.asked else {
            self.stats.unexpected_responses += 1;
            return;
        };
        if Some(msg.message_type) != asked.response()
            || self.requester.handle_response(now, msg.seq).is_none()
        {
            self.stats.unexpected_responses += 1;
            return;
        }
        self.asked = None;
        match asked {
            MessageType::JOIN_REQUEST => self.on_join_response(now, msg),
            MessageType::IMAGE_DATA_REQUEST => self.on_image_data_response(now, msg),
            _ => {}
        }
    }

    fn on_join_response(&mut self, now: Instant, msg: &Message<'_>) {
        let result = msg
            .result_code()
            .unwrap_or(ResultCode::MISSING_MANDATORY_ELEMENT);
        let missing = msg.check_mandatory().err().map(|m| m.to_string());
        if !result.is_success() || missing.is_some() {
            self.events.push_back(WtpEvent::JoinRejected {
                result: result.0,
                missing: missing.filter(|_| result.is_success()),
            });
            self.restart(now, RestartReason::JoinRejected, self.cfg.retry_interval);
            return;
        }
        let mut target = None;
        for e in &msg.elements {
            match e {
                Element::AcName(n) => self.ac_name = text(n),
                Element::ControlIpv4Address(c) if self.ac.is_empty() => {
                    self.ac = c.address.to_string()
                }
                Element::ImageIdentifier(i) if target.is_none() => target = Some(i.data.to_owned()),
                _ => {}
            }
        }
        if self.ac.is_empty() {
            self.ac = self.ac_name.clone();
        }
        self.phase = Phase::Joined;
        if !self.cfg.echo_interval.is_zero() {
            self.next_echo = Some(now + self.cfg.echo_interval);
        }
        self.events.push_back(WtpEvent::Joined {
            ac_name: self.ac_name.clone(),
            ac: self.ac.clone(),
        });
        let Some(target) = target.filter(|t| !same_version(&self.primary.version, t)) else {
            self.events.push_back(WtpEvent::State(CapwapState::Run));
            return;
        };
        // flow.rs step 3: the primary is not the network's version.
        self.events
            .push_back(WtpEvent::State(CapwapState::ImageData));
        self.events.push_back(WtpEvent::ImageVersions {
            primary: self.primary.version.clone(),
            backup: self.backup.version.clone(),
            controller: target.clone(),
        });
        self.events.push_back(WtpEvent::VersionMismatch);
        if same_version(&self.backup.version, &target) {
            self.events
                .push_back(WtpEvent::BackupMatches { version: target });
            self.swap();
            self.restart(now, RestartReason::BackupImage, self.cfg.reset_delay);
            return;
        }
        self.download = Some(Download {
            purpose: Purpose::AtJoin,
            version: target,
            receiving: None,
        });
        self.queued.push_front(Outgoing::ImageDataRequest);
    }

    fn on_image_data_response(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(download) = self.download.as_mut().filter(|d| d.receiving.is_none()) else {
            return;
        };
        let purpose = download.purpose;
        let result = msg
            .result_code()
            .unwrap_or(ResultCode::MISSING_MANDATORY_ELEMENT);
        if !result.is_success() {
            self.events.push_back(WtpEvent::DownloadRefused {
                ac: self.ac.clone(),
                result: result.0,
                predownload: purpose == Purpose::Predownload,
            });
            self.end_download(now, RestartReason::DownloadRefused);
            return;
        }
        let Some(info) = msg.image_information() else {
            self.reject(now, ImageCheckError::NoImageInformation, None);
            return;
        };
        let size = u64::from(info.file_size);
        if size > self.cfg.max_image_size {
            let limit = self.cfg.max_image_size;
            self.reject(now, ImageCheckError::TooLarge { size, limit }, None);
            return;
        }
        let bytes = (self.cfg.sink == ImageSink::Memory).then(|| {
            let reserve = size.min(INITIAL_IMAGE_RESERVE);
            Vec::with_capacity(usize::try_from(reserve).unwrap_or(0))
        });
        download.receiving = Some(Box::new(Receiving {
            size,
            md5: info.md5,
            received: 0,
            messages: 0,
            last: 0,
            hasher: Md5::new(),
            tar: TarChecker::new(TarLimits::default()),
            bytes,
            deadline: now + self.cfg.image_data_start_timeout,
        }));
        self.events.push_back(WtpEvent::ImageDataResponse {
            ac: self.ac.clone(),
            size,
            md5: info.md5,
        });
    }

    /// The download is over without an image: at join the AP rejoins after the retry
    /// interval, a predownload just ends.
    fn end_download(&mut self, now: Instant, reason: RestartReason) {
        match self.download.take().map(|d| d.purpose) {
            Some(Purpose::AtJoin) => self.restart(now, reason, self.cfg.retry_interval),
            Some(Purpose::Predownload) | None => {}
        }
    }

    fn reject(&mut self, now: Instant, error: ImageCheckError, answered: Option<ResultCode>) {
        self.events.push_back(WtpEvent::ImageRejected {
            family: self.cfg.family.clone(),
            error,
            answered: answered.map(|c| c.0),
        });
        self.end_download(now, RestartReason::DownloadFailed);
    }

    // ---- requests from the AC ----

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
        if kind == MessageType::IMAGE_DATA_RESPONSE {
            self.buf.clear();
            encode_image_data_response(request.seq, code, &mut self.buf);
            let _ = self.responder.respond(request.seq, &self.buf);
        } else {
            self.respond(&Message::new(
                kind,
                request.seq,
                vec![Element::ResultCode(code)],
            ));
        }
    }

    fn on_request(&mut self, now: Instant, msg: &Message<'_>) {
        let awaiting_answer = self
            .download
            .as_ref()
            .is_some_and(|d| d.receiving.is_none());
        if msg.message_type == MessageType::IMAGE_DATA_REQUEST && awaiting_answer {
            // The AC's Image Data Response was lost: see the module doc.
            self.stats.early_blocks += 1;
            return;
        }
        match self.responder.handle_request(msg.seq) {
            RequestDisposition::New => {}
            RequestDisposition::Duplicate => {
                self.stats.duplicate_requests += 1;
                return;
            }
            RequestDisposition::InProgress | RequestDisposition::Old => {
                self.stats.ignored_requests += 1;
                return;
            }
        }
        if matches!(self.phase, Phase::Down { .. }) {
            self.stats.ignored_requests += 1;
            return;
        }
        match msg.message_type {
            MessageType::ECHO_REQUEST => {
                self.respond(&Message::new(
                    MessageType::ECHO_RESPONSE,
                    msg.seq,
                    Vec::new(),
                ));
            }
            MessageType::IMAGE_DATA_REQUEST => self.on_image_data(now, msg),
            MessageType::CONFIGURATION_UPDATE_REQUEST => self.on_configuration_update(msg),
            MessageType::RESET_REQUEST => self.on_reset(now, msg),
            _ => {
                self.stats.unknown_requests += 1;
                self.respond_result(msg, ResultCode::UNRECOGNIZED_REQUEST);
            }
        }
    }

    fn on_configuration_update(&mut self, msg: &Message<'_>) {
        let Some(id) = msg.image_identifier() else {
            // A configuration change this AP has nothing to apply for: accepted.
            let code = if self.phase == Phase::Joined {
                ResultCode::SUCCESS
            } else {
                ResultCode::INVALID_IN_CURRENT_STATE
            };
            self.respond_result(msg, code);
            return;
        };
        let version = id.data.to_owned();
        let code = if self.phase != Phase::Joined || self.download.is_some() {
            ResultCode::INVALID_IN_CURRENT_STATE
        } else if same_version(&self.backup.version, &version)
            || same_version(&self.primary.version, &version)
        {
            ResultCode::IMAGE_DATA_ALREADY_PRESENT
        } else {
            ResultCode::SUCCESS
        };
        self.respond_result(msg, code);
        self.events.push_back(WtpEvent::PredownloadRequested {
            version: version.clone(),
            result: code.0,
        });
        if code == ResultCode::SUCCESS {
            self.download = Some(Download {
                purpose: Purpose::Predownload,
                version,
                receiving: None,
            });
            self.queued.push_front(Outgoing::ImageDataRequest);
        }
    }

    fn on_reset(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(id) = msg.image_identifier() else {
            self.respond_result(msg, ResultCode::MISSING_MANDATORY_ELEMENT);
            self.events.push_back(WtpEvent::ResetRequested {
                version: String::new(),
                result: ResultCode::MISSING_MANDATORY_ELEMENT.0,
            });
            return;
        };
        let version = id.data.to_owned();
        let (code, swap) = if self.phase != Phase::Joined {
            (ResultCode::INVALID_IN_CURRENT_STATE, false)
        } else if same_version(&self.primary.version, &version) {
            (ResultCode::SUCCESS, false)
        } else if same_version(&self.backup.version, &version) {
            (ResultCode::SUCCESS, true)
        } else {
            (ResultCode::RESET_FAILURE_UNABLE_TO_RESET, false)
        };
        self.respond_result(msg, code);
        self.events.push_back(WtpEvent::ResetRequested {
            version,
            result: code.0,
        });
        if code == ResultCode::SUCCESS {
            if swap {
                self.swap();
            }
            self.restart(now, RestartReason::ResetRequest, self.cfg.reset_delay);
        }
    }

    fn swap(&mut self) {
        std::mem::swap(&mut self.primary, &mut self.backup);
        self.events.push_back(WtpEvent::ImagesSwapped {
            primary: self.primary.version.clone(),
            backup: self.backup.version.clone(),
        });
    }

    fn on_image_data(&mut self, now: Instant, msg: &Message<'_>) {
        let receiving = self.phase == Phase::Joined
            && self
                .download
                .as_ref()
                .is_some_and(|d| d.receiving.is_some());
        if !receiving {
            self.respond_result(msg, ResultCode::INVALID_IN_CURRENT_STATE);
            return;
        }
        let Some(data) = msg.image_data() else {
            self.respond_result(msg, ResultCode::MISSING_MANDATORY_ELEMENT);
            return;
        };
        let block = match data {
            ImageData::Error => {
                self.respond_result(msg, ResultCode::SUCCESS);
                self.events.push_back(WtpEvent::TransferAborted {
                    family: self.cfg.family.clone(),
                });
                self.end_download(now, RestartReason::DownloadFailed);
                return;
            }
            ImageData::Data(d) | ImageData::Eof(d) => d,
        };
        let Some(r) = self.download.as_mut().and_then(|d| d.receiving.as_mut()) else {
            return;
        };
        let len = block.len() as u64;
        if r.received + len > r.size {
            let error = ImageCheckError::Overrun {
                expected: r.size,
                got: r.received + len,
            };
            let code = error.result_code();
            self.respond_result(msg, code);
            self.reject(now, error, Some(code));
            return;
        }
        r.hasher.update(block);
        // A structural error is kept by the checker and reported by `finish`.
        let _ = r.tar.feed(block);
        if let Some(bytes) = &mut r.bytes {
            bytes.extend_from_slice(block);
        }
        r.received += len;
        r.messages += 1;
        r.last = len;
        r.deadline = now + self.cfg.image_data_start_timeout;
        self.stats.image_bytes += len;
        if self
            .cfg
            .crash_after_bytes
            .is_some_and(|n| self.stats.image_bytes >= n)
        {
            self.crash();
            return;
        }
        match data {
            ImageData::Eof(_) => self.finish_download(now, msg),
            _ => self.respond_result(msg, ResultCode::SUCCESS),
        }
    }

    fn crash(&mut self) {
        self.phase = Phase::Crashed;
        self.download = None;
        self.queued.clear();
        self.requester.cancel();
        self.events.push_back(WtpEvent::Crashed {
            bytes: self.stats.image_bytes,
        });
    }

    /// The EOF block is in: checks size, MD5 and the tar, answers, stores.
    fn finish_download(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(Download {
            purpose,
            version,
            receiving: Some(r),
        }) = self.download.take()
        else {
            return;
        };
        let Receiving {
            size,
            md5,
            received,
            messages,
            last,
            hasher,
            tar,
            bytes,
            ..
        } = *r;
        self.events
            .push_back(WtpEvent::TransferSummary(TransferSummary {
                bytes: received,
                messages,
                last,
            }));
        let got: [u8; 16] = hasher.finalize().into();
        let verdict = if received != size {
            Err(ImageCheckError::Length {
                expected: size,
                got: received,
            })
        } else if got != md5 {
            Err(ImageCheckError::Checksum { expected: md5, got })
        } else {
            let mut report = FileReport::new(&self.cfg.family, received);
            let mut findings = Vec::new();
            check_image(
                &self.cfg.family,
                &tar.finish(),
                version.parse::<ApVersion>().ok(),
                &mut report,
                &mut findings,
            );
            match findings.into_iter().find(|f| f.severity == Severity::Error) {
                Some(f) => Err(ImageCheckError::Image(f.message)),
                None => Ok(()),
            }
        };
        if let Err(error) = verdict {
            let code = error.result_code();
            self.respond_result(msg, code);
            // Put the download back so `reject` knows its purpose.
            self.download = Some(Download {
                purpose,
                version,
                receiving: None,
            });
            self.reject(now, error, Some(code));
            return;
        }
        self.respond_result(msg, ResultCode::SUCCESS);
        self.events.push_back(WtpEvent::TransferCompleted);
        let slot = ImageSlot {
            version: version.clone(),
            image: Some(ReceivedImage {
                family: self.cfg.family.clone(),
                size,
                md5,
                bytes,
            }),
        };
        let stored_in = match purpose {
            Purpose::AtJoin => {
                self.backup = std::mem::replace(&mut self.primary, slot);
                Slot::Primary
            }
            Purpose::Predownload => {
                self.backup = slot;
                Slot::Backup
            }
        };
        self.events.push_back(WtpEvent::ImageStored {
            family: self.cfg.family.clone(),
            version,
            slot: stored_in,
        });
        if purpose == Purpose::AtJoin {
            self.restart(now, RestartReason::NewImage, self.cfg.reset_delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bundle_tool::synth::write_image;
    use bundle_tool::tar::RECORD;
    use proptest::prelude::*;

    use super::*;
    use crate::capwap::{
        AcDescriptor, AcInformation, ControlIpv4Address, ElementType, ImageInformation,
        encode_image_data_request, fragment,
    };

    const TARGET: &str = "17.9.4.27";
    const OLD: &str = "17.3.3.26";
    const AC_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 4, 26);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> WtpConfig {
        WtpConfig {
            retransmit: RetransmitConfig {
                interval: ms(100),
                max_retransmit: 2,
                max_interval: None,
            },
            echo_interval: Duration::from_secs(10),
            image_data_start_timeout: Duration::from_secs(1),
            retry_interval: Duration::from_secs(2),
            reset_delay: ms(500),
            sink: ImageSink::Memory,
            ..WtpConfig::new("AP-0001", "C9105AXI-E", "ap1g8")
        }
    }

    fn decode(d: &[u8]) -> Message<'_> {
        Message::decode(d).expect("the WTP sends only valid messages")
    }

    fn encode(m: &Message<'_>) -> Vec<u8> {
        m.to_vec().expect("the scripted AC encodes valid messages")
    }

    /// A synthetic ap1g8 image of `records` tar records whose info says `version`.
    fn image(family: &str, version: &str, records: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let v = version.parse().expect("a version");
        write_image(&mut out, family, v, records * RECORD as u64).expect("write to a Vec");
        out
    }

    fn md5_of(bytes: &[u8]) -> [u8; 16] {
        Md5::digest(bytes).into()
    }

    // ---- the scripted AC's messages ----

    fn join_response(seq: u8, result: ResultCode, version: Option<&str>) -> Vec<u8> {
        if !result.is_success() {
            return encode(&Message::new(
                MessageType::JOIN_RESPONSE,
                seq,
                vec![Element::ResultCode(result)],
            ));
        }
        let info = [AcInformation {
            vendor_id: CISCO_VENDOR_ID,
            kind: AcInformation::SOFTWARE_VERSION,
            data: TARGET.as_bytes(),
        }];
        let mut elements = vec![
            Element::ResultCode(result),
            Element::AcDescriptor(AcDescriptor {
                stations: 0,
                station_limit: 0,
                active_wtps: 1,
                max_wtps: 100,
                security: 0x04,
                r_mac: 2,
                dtls_policy: 0x02,
                info: SubElements::new(&info),
            }),
            Element::AcName(b"9120-EWC"),
            Element::WtpRadioInformation(RadioInformation {
                radio_id: 1,
                radio_type: RadioInformation::TYPE_G,
            }),
            Element::EcnSupport(EcnSupport::Limited),
            Element::ControlIpv4Address(ControlIpv4Address {
                address: AC_ADDR,
                wtp_count: 1,
            }),
            Element::LocalIpv4Address(AC_ADDR),
        ];
        if let Some(data) = version {
            elements.push(Element::ImageIdentifier(ImageIdentifier {
                vendor_id: CISCO_VENDOR_ID,
                data,
            }));
        }
        encode(&Message::new(MessageType::JOIN_RESPONSE, seq, elements))
    }

    fn image_data_response(
        seq: u8,
        result: ResultCode,
        info: Option<(usize, [u8; 16])>,
    ) -> Vec<u8> {
        let mut elements = vec![Element::ResultCode(result)];
        if let Some((size, md5)) = info {
            elements.push(Element::ImageInformation(ImageInformation {
                file_size: u32::try_from(size).expect("a small image"),
                md5,
            }));
        }
        encode(&Message::new(
            MessageType::IMAGE_DATA_RESPONSE,
            seq,
            elements,
        ))
    }

    fn block(seq: u8, data: ImageData<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_image_data_request(seq, data, &mut out).expect("a block fits");
        out
    }

    fn with_identifier(kind: MessageType, seq: u8, version: Option<&str>) -> Vec<u8> {
        let elements = version
            .map(|data| {
                Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: CISCO_VENDOR_ID,
                    data,
                })
            })
            .into_iter()
            .collect();
        encode(&Message::new(kind, seq, elements))
    }

    /// The test's side of the link: what the WTP sent, the clock, the AC's sequence numbers.
    struct Lab {
        wtp: Wtp,
        now: Instant,
        ac_seq: u8,
        outbox: VecDeque<Vec<u8>>,
    }

    impl Lab {
        fn new(cfg: WtpConfig) -> Lab {
            let now = Instant::now();
            let mut lab = Lab {
                wtp: Wtp::new(cfg, now).expect("a valid config"),
                now,
                ac_seq: 100,
                outbox: VecDeque::new(),
            };
            lab.collect();
            lab
        }

        fn collect(&mut self) {
            while let Some(d) = self.wtp.poll_transmit() {
                self.outbox.push_back(d.to_vec());
            }
        }

        fn deliver(&mut self, datagram: &[u8]) {
            self.wtp.handle_datagram(self.now, datagram);
            self.collect();
        }

        /// Runs every timer due up to `now + d`.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            for _ in 0..10_000 {
                match self.wtp.poll_timeout() {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        self.wtp.handle_timeout(self.now);
                        self.collect();
                    }
                    _ => {
                        self.now = end;
                        return;
                    }
                }
            }
            panic!("timers do not settle");
        }

        fn events(&mut self) -> Vec<WtpEvent> {
            std::iter::from_fn(|| self.wtp.poll_event()).collect()
        }

        fn lines(&mut self) -> Vec<String> {
            self.events().iter().flat_map(WtpEvent::lines).collect()
        }

        fn pop(&mut self) -> Vec<u8> {
            self.outbox.pop_front().expect("the WTP sent a datagram")
        }

        fn expect_message(&mut self, kind: MessageType) -> Vec<u8> {
            let d = self.pop();
            assert_eq!(decode(&d).message_type, kind);
            d
        }

        fn expect_result(&mut self, kind: MessageType, seq: u8) -> ResultCode {
            let d = self.expect_message(kind);
            let m = decode(&d);
            assert_eq!(m.seq, seq);
            m.result_code().expect("a Result Code")
        }

        fn assert_quiet(&mut self) {
            let pending: Vec<_> = self.outbox.iter().map(|d| decode(d).message_type).collect();
            assert!(pending.is_empty(), "unexpected datagrams: {pending:?}");
        }

        fn next_ac_seq(&mut self) -> u8 {
            let s = self.ac_seq;
            self.ac_seq = s.wrapping_add(1);
            s
        }

        /// Answers the pending Join Request with Result Code 0 and `version`.
        fn join(&mut self, version: Option<&str>) {
            let d = self.expect_message(MessageType::JOIN_REQUEST);
            let seq = decode(&d).seq;
            self.deliver(&join_response(seq, ResultCode::SUCCESS, version));
        }

        /// Answers the pending Image Data Request with Result Code 0 and Image Information.
        fn accept_image_request(&mut self, size: usize, md5: [u8; 16]) {
            let d = self.expect_message(MessageType::IMAGE_DATA_REQUEST);
            let m = decode(&d);
            assert_eq!(
                m.image_identifier().map(|i| (i.vendor_id, i.data)),
                Some((CISCO_VENDOR_ID, "ap1g8"))
            );
            assert!(m.find(ElementType::INITIATE_DOWNLOAD).is_some());
            self.deliver(&image_data_response(
                m.seq,
                ResultCode::SUCCESS,
                Some((size, md5)),
            ));
        }

        /// Sends `image` in blocks (each twice when `duplicate`), checking every answer;
        /// stops at the first non-zero one. Returns the answers.
        fn send_image(&mut self, image: &[u8], block_size: usize, duplicate: bool) -> Vec<u32> {
            let chunks: Vec<&[u8]> = if image.is_empty() {
                vec![&[]]
            } else {
                image.chunks(block_size).collect()
            };
            let mut codes = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let data = if i + 1 == chunks.len() {
                    ImageData::Eof(chunk)
                } else {
                    ImageData::Data(chunk)
                };
                let seq = self.next_ac_seq();
                let wire = block(seq, data);
                self.deliver(&wire);
                let code = self.expect_result(MessageType::IMAGE_DATA_RESPONSE, seq);
                if duplicate {
                    self.deliver(&wire);
                    let again = self.expect_result(MessageType::IMAGE_DATA_RESPONSE, seq);
                    assert_eq!(again, code, "the cached answer is resent");
                }
                codes.push(code.0);
                if code != ResultCode::SUCCESS {
                    break;
                }
            }
            codes
        }
    }

    fn versions_in_join_request(d: &[u8]) -> (String, Option<String>) {
        let m = decode(d);
        let Some(Element::WtpDescriptor(desc)) = m.find(ElementType::WTP_DESCRIPTOR) else {
            panic!("no WTP Descriptor");
        };
        (
            text(desc.active_software_version.value),
            desc.other_software_version.map(|v| text(v.value)),
        )
    }

    #[test]
    fn join_request_carries_every_mandatory_element() {
        let family = bundle_tool::models::which("C9105AXI-E").expect("a known model");
        assert_eq!(family.row.family, "ap1g8");
        let mut lab = Lab::new(config());
        assert_eq!(lab.events(), [WtpEvent::State(CapwapState::Join)]);
        assert_eq!(lab.wtp.state(), CapwapState::Join);
        let d = lab.expect_message(MessageType::JOIN_REQUEST);
        lab.assert_quiet();
        let m = decode(&d);
        assert_eq!(m.check_mandatory(), Ok(()));
        assert_eq!(m.seq, 0);
        let Some(Element::WtpBoardData(board)) = m.find(ElementType::WTP_BOARD_DATA) else {
            panic!("no WTP Board Data");
        };
        assert_eq!(board.vendor_id, CISCO_VENDOR_ID);
        assert_eq!(board.model, b"C9105AXI-E");
        assert_eq!(board.base_mac, Some(&config().base_mac[..]));
        assert_eq!(
            m.find(ElementType::WTP_NAME),
            Some(&Element::WtpName(b"AP-0001"))
        );
        assert_eq!(
            versions_in_join_request(&d),
            (OLD.to_owned(), Some("8.10.130.0".to_owned()))
        );
        assert_eq!(
            m.find(ElementType::CAPWAP_LOCAL_IPV4_ADDRESS),
            Some(&Element::LocalIpv4Address(Ipv4Addr::LOCALHOST))
        );

        // A config that cannot go on the wire is refused up front.
        let now = Instant::now();
        let no_family = WtpConfig::new("AP", "C9105AXI-E", "");
        assert!(matches!(
            Wtp::new(no_family, now),
            Err(WtpError::ImageDataRequest { .. })
        ));
        let long_name = WtpConfig::new("A".repeat(513), "C9105AXI-E", "ap1g8");
        assert!(matches!(
            Wtp::new(long_name, now),
            Err(WtpError::JoinRequest(_))
        ));
    }

    /// Join, download at join in `block_size` blocks, reset, rejoin on the new image.
    fn download_at_join(block_size: usize) {
        let img = image("ap1g8", TARGET, 3);
        assert_eq!(img.len(), 30_720);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        assert_eq!(lab.wtp.state(), CapwapState::ImageData);
        assert_eq!(
            lab.lines(),
            [
                "CAPWAP State: Join",
                "AC accepted join request with result code: 0",
                "CAPWAP State: Image Data",
                "AP image version 17.3.3.26 backup 8.10.130.0, Controller 17.9.4.27",
                "Version does not match.",
                "Image Data Request sent to 172.16.4.26, fileName [ap1g8]",
            ]
        );
        lab.accept_image_request(img.len(), md5_of(&img));
        assert_eq!(
            lab.events(),
            [WtpEvent::ImageDataResponse {
                ac: "172.16.4.26".into(),
                size: 30_720,
                md5: md5_of(&img)
            }]
        );
        let codes = lab.send_image(&img, block_size, false);
        assert!(codes.iter().all(|&c| c == 0));
        let expected = TransferSummary::expected(img.len() as u64, block_size as u64);
        assert_eq!(codes.len() as u64, expected.messages);
        assert_eq!(
            lab.events(),
            [
                WtpEvent::TransferSummary(expected),
                WtpEvent::TransferCompleted,
                WtpEvent::ImageStored {
                    family: "ap1g8".into(),
                    version: TARGET.into(),
                    slot: Slot::Primary
                },
                WtpEvent::Restarting {
                    reason: RestartReason::NewImage,
                    after: ms(500)
                },
                WtpEvent::State(CapwapState::Reset),
            ]
        );
        assert_eq!(lab.wtp.primary().version, TARGET);
        assert_eq!(lab.wtp.backup().version, OLD);
        let stored = lab.wtp.primary().image.as_ref().expect("the new image");
        assert_eq!((stored.size, stored.md5), (30_720, md5_of(&img)));
        assert_eq!(stored.bytes.as_deref(), Some(&img[..]));
        assert_eq!(lab.wtp.stats().image_bytes, 30_720);

        // The "reboot": a new Join Request after the reset delay, on the new image.
        lab.advance(ms(499));
        lab.assert_quiet();
        lab.advance(ms(1));
        let d = lab.outbox.front().cloned().expect("a Join Request");
        assert_eq!(
            versions_in_join_request(&d),
            (TARGET.to_owned(), Some(OLD.to_owned()))
        );
        assert_eq!(decode(&d).seq, 2, "sequence numbers continue");
        lab.join(Some(TARGET));
        lab.assert_quiet();
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        assert_eq!(
            lab.lines(),
            [
                "CAPWAP State: Join",
                "AC accepted join request with result code: 0",
                "CAPWAP State: Run"
            ]
        );
        assert_eq!(lab.wtp.take_image_bytes(Slot::Primary), Some(img));
        assert_eq!(lab.wtp.take_image_bytes(Slot::Primary), None);
    }

    #[test]
    fn download_at_join_with_1024_byte_blocks() {
        download_at_join(1024);
    }

    #[test]
    fn download_at_join_with_1377_byte_blocks() {
        download_at_join(1377);
    }

    #[test]
    fn transfer_summary_arithmetic() {
        let doc = TransferSummary::expected(70_512_640, 1377);
        assert_eq!((doc.messages, doc.last), (51_208, 601));
        assert_eq!(doc.to_string(), "70512640 bytes, 51208 msgs, 601 last");
        assert_eq!(
            WtpEvent::TransferSummary(doc).line(),
            "70512640 bytes, 51208 msgs, 601 last"
        );
        // A size that is a multiple of the block: the last block is full.
        let rfc = TransferSummary::expected(70_512_640, 1024);
        assert_eq!((rfc.messages, rfc.last), (68_860, 1024));
        let cases = [
            (30_720, 1024, 30, 1024),
            (30_720, 1377, 23, 426),
            (2048, 1024, 2, 1024),
            (2049, 1024, 3, 1),
            (1, 1024, 1, 1),
            (0, 1024, 1, 0),
            (5, 0, 5, 1),
        ];
        for (size, block, messages, last) in cases {
            let s = TransferSummary::expected(size, block);
            assert_eq!(
                (s.bytes, s.messages, s.last),
                (size, messages, last),
                "{size}/{block}"
            );
        }
    }

    #[test]
    fn primary_on_target_goes_straight_to_run() {
        let mut lab = Lab::new(WtpConfig {
            primary: TARGET.into(),
            ..config()
        });
        lab.join(Some("17.09.04.27"));
        lab.assert_quiet();
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        assert_eq!(
            lab.events(),
            [
                WtpEvent::State(CapwapState::Join),
                WtpEvent::Joined {
                    ac_name: "9120-EWC".into(),
                    ac: "172.16.4.26".into()
                },
                WtpEvent::State(CapwapState::Run),
            ]
        );
        // Without an Image Identifier there is nothing to compare: Run.
        let mut lab = Lab::new(config());
        lab.join(None);
        lab.assert_quiet();
        assert_eq!(lab.wtp.state(), CapwapState::Run);
    }

    #[test]
    fn backup_on_target_swaps_and_rejoins() {
        let mut lab = Lab::new(WtpConfig {
            backup: TARGET.into(),
            ..config()
        });
        lab.join(Some(TARGET));
        lab.assert_quiet();
        let lines = lab.lines();
        assert_eq!(
            lines[2..],
            [
                "CAPWAP State: Image Data",
                "AP image version 17.3.3.26 backup 17.9.4.27, Controller 17.9.4.27",
                "Version does not match.",
                "Backup image version 17.9.4.27 matches the controller, swapping images",
                "Images swapped: primary 17.9.4.27, backup 17.3.3.26",
                "Going to restart CAPWAP (reason : backup image matches controller)...",
                "CAPWAP State: Reset",
            ]
        );
        assert_eq!(lab.wtp.state(), CapwapState::Reset);
        lab.advance(ms(500));
        let d = lab.outbox.front().cloned().expect("a Join Request");
        assert_eq!(
            versions_in_join_request(&d),
            (TARGET.to_owned(), Some(OLD.to_owned()))
        );
        lab.join(Some(TARGET));
        assert_eq!(lab.wtp.state(), CapwapState::Run);
    }

    #[test]
    fn join_rejected_retries_after_the_interval() {
        let mut lab = Lab::new(config());
        let d = lab.expect_message(MessageType::JOIN_REQUEST);
        let seq = decode(&d).seq;
        lab.deliver(&join_response(
            seq,
            ResultCode::JOIN_FAILURE_RESOURCE_DEPLETION,
            None,
        ));
        lab.assert_quiet();
        assert_eq!(
            lab.lines()[1..],
            [
                "AC rejected join request with result code: 4 (Join Failure (Resource Depletion))",
                "Going to restart CAPWAP (reason : join failed)...",
                "CAPWAP State: Reset",
            ]
        );
        assert_eq!(
            lab.wtp.poll_timeout(),
            Some(lab.now + Duration::from_secs(2))
        );
        lab.advance(ms(1999));
        lab.assert_quiet();
        lab.advance(ms(1));
        let d = lab.expect_message(MessageType::JOIN_REQUEST);
        assert_eq!(decode(&d).seq, seq.wrapping_add(1));

        // Result 0 but no AC Descriptor: not a usable Join Response.
        let full = join_response(decode(&d).seq, ResultCode::SUCCESS, Some(TARGET));
        let mut m = Message::decode(&full).expect("decodes").elements;
        m.retain(|e| e.kind() != ElementType::AC_DESCRIPTOR);
        let wire = encode(&Message::new(MessageType::JOIN_RESPONSE, decode(&d).seq, m));
        lab.events();
        lab.deliver(&wire);
        assert_eq!(
            lab.events()[0],
            WtpEvent::JoinRejected {
                result: 0,
                missing: Some("Join Response (4) lacks AC Descriptor (1)".into())
            }
        );
        assert_eq!(lab.wtp.stats().joins, 2);
    }

    #[test]
    fn duplicate_blocks_are_not_counted_twice() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        lab.accept_image_request(img.len(), md5_of(&img));
        let codes = lab.send_image(&img, 1024, true);
        assert_eq!(codes.len(), 20);
        assert!(codes.iter().all(|&c| c == 0));
        let stats = lab.wtp.stats();
        assert_eq!(stats.duplicate_requests, 20);
        assert_eq!(stats.image_bytes, 20_480);
        let events = lab.events();
        assert!(events.contains(&WtpEvent::TransferSummary(TransferSummary {
            bytes: 20_480,
            messages: 20,
            last: 1024
        })));
        assert!(events.contains(&WtpEvent::TransferCompleted));
        let stored = lab.wtp.primary().image.as_ref().expect("stored");
        assert_eq!(stored.bytes.as_deref(), Some(&img[..]));

        // An older block (sequence number before the latest) is ignored without an answer.
        let old = block(lab.ac_seq.wrapping_sub(3), ImageData::Data(&img[..1024]));
        lab.deliver(&old);
        lab.assert_quiet();
        assert_eq!(lab.wtp.stats().ignored_requests, 1);
    }

    #[test]
    fn a_lost_last_answer_is_resent_until_the_new_session() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        lab.accept_image_request(img.len(), md5_of(&img));
        lab.send_image(&img, 4096, false);
        assert_eq!(lab.wtp.state(), CapwapState::Reset);
        let eof_seq = lab.ac_seq.wrapping_sub(1);
        let eof = block(eof_seq, ImageData::Eof(&img[16_384..]));
        lab.advance(ms(300));
        lab.deliver(&eof);
        assert_eq!(
            lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, eof_seq),
            ResultCode::SUCCESS
        );
        // A new request while resetting is not answered.
        lab.deliver(&with_identifier(
            MessageType::RESET_REQUEST,
            eof_seq.wrapping_add(1),
            Some(TARGET),
        ));
        lab.assert_quiet();
        // After the reboot the old session is gone: the block makes no sense any more.
        lab.advance(ms(200));
        lab.expect_message(MessageType::JOIN_REQUEST);
        lab.deliver(&eof);
        assert_eq!(
            lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, eof_seq),
            ResultCode::INVALID_IN_CURRENT_STATE
        );
        assert_eq!(lab.wtp.stats().image_bytes, 20_480);
    }

    #[test]
    fn bad_md5_answers_14_and_keeps_the_old_images() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        let mut wrong = md5_of(&img);
        wrong[0] ^= 1;
        lab.accept_image_request(img.len(), wrong);
        lab.events();
        let codes = lab.send_image(&img, 1377, false);
        assert_eq!(codes.last(), Some(&14));
        assert!(codes[..codes.len() - 1].iter().all(|&c| c == 0));
        let events = lab.events();
        assert!(matches!(
            &events[1],
            WtpEvent::ImageRejected {
                error: ImageCheckError::Checksum { .. },
                answered: Some(14),
                ..
            }
        ));
        assert!(events[1].line().starts_with("Image ap1g8 rejected: MD5 "));
        assert!(
            events[1]
                .line()
                .ends_with("answered result code: 14 (Image Data Error (Invalid Checksum))")
        );
        assert_eq!(
            events[2],
            WtpEvent::Restarting {
                reason: RestartReason::DownloadFailed,
                after: Duration::from_secs(2)
            }
        );
        assert_eq!(
            (
                lab.wtp.primary().version.as_str(),
                lab.wtp.backup().version.as_str()
            ),
            (OLD, "8.10.130.0")
        );
        assert!(lab.wtp.primary().image.is_none());
        lab.advance(Duration::from_secs(2));
        let d = lab.expect_message(MessageType::JOIN_REQUEST);
        assert_eq!(versions_in_join_request(&d).0, OLD);
    }

    /// Downloads `img` announced as `size` bytes; returns the answers and the rejection.
    fn rejected(img: &[u8], size: usize) -> (Vec<u32>, Option<ImageCheckError>) {
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        lab.accept_image_request(size, md5_of(img));
        let codes = lab.send_image(img, 1024, false);
        let error = lab.events().into_iter().find_map(|e| match e {
            WtpEvent::ImageRejected { error, .. } => Some(error),
            _ => None,
        });
        (codes, error)
    }

    #[test]
    fn wrong_lengths_answer_15_and_a_wrong_tar_16() {
        let img = image("ap1g8", TARGET, 2);
        // EOF before the announced size.
        let (codes, error) = rejected(&img, img.len() + 10);
        assert_eq!(codes.last(), Some(&15));
        assert_eq!(
            error,
            Some(ImageCheckError::Length {
                expected: 20_490,
                got: 20_480
            })
        );
        // More than announced: refused at the block that overruns.
        let (codes, error) = rejected(&img, img.len() - 10);
        assert_eq!(codes.len(), 20);
        assert_eq!(codes.last(), Some(&15));
        assert_eq!(
            error,
            Some(ImageCheckError::Overrun {
                expected: 20_470,
                got: 20_480
            })
        );
        // Right size and MD5, but the image's info names another version or family.
        for wrong in [image("ap1g8", "17.9.4.28", 2), image("ap1g7", TARGET, 2)] {
            let (codes, error) = rejected(&wrong, wrong.len());
            assert_eq!(codes.last(), Some(&16));
            assert!(
                matches!(error, Some(ImageCheckError::Image(_))),
                "{error:?}"
            );
        }
        // Not a tar at all.
        let junk = vec![0x5a; 3000];
        let (codes, error) = rejected(&junk, junk.len());
        assert_eq!(codes.last(), Some(&16));
        assert!(matches!(error, Some(ImageCheckError::Image(_))));
    }

    #[test]
    fn an_aborted_transfer_and_a_refused_download_rejoin_later() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        lab.accept_image_request(img.len(), md5_of(&img));
        lab.events();
        let seq = lab.next_ac_seq();
        lab.deliver(&block(seq, ImageData::Error));
        assert_eq!(
            lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, seq),
            ResultCode::SUCCESS
        );
        assert_eq!(
            lab.lines(),
            [
                "Aborting image download: the controller aborted ap1g8",
                "Going to restart CAPWAP (reason : image download failed)...",
                "CAPWAP State: Reset",
            ]
        );

        // The AC cannot get the image: 16, and the AP comes back after the retry interval.
        lab.advance(Duration::from_secs(2));
        lab.join(Some(TARGET));
        let d = lab.expect_message(MessageType::IMAGE_DATA_REQUEST);
        lab.events();
        lab.deliver(&image_data_response(
            decode(&d).seq,
            ResultCode::IMAGE_DATA_OTHER_ERROR,
            None,
        ));
        lab.assert_quiet();
        assert_eq!(
            lab.lines(),
            [
                "Image Data Response from 172.16.4.26",
                "AC refused previous sent request with result code: 16 \
                 (Image Data Error (Other Error))",
                "Going to restart CAPWAP (reason : image download refused)...",
                "CAPWAP State: Reset",
            ]
        );
        lab.advance(Duration::from_secs(2));
        lab.join(Some(TARGET));
        lab.expect_message(MessageType::IMAGE_DATA_REQUEST);

        // Result 0 without Image Information cannot be checked: abandoned too.
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        let d = lab.expect_message(MessageType::IMAGE_DATA_REQUEST);
        lab.events();
        lab.deliver(&image_data_response(
            decode(&d).seq,
            ResultCode::SUCCESS,
            None,
        ));
        assert!(matches!(
            &lab.events()[0],
            WtpEvent::ImageRejected {
                error: ImageCheckError::NoImageInformation,
                answered: None,
                ..
            }
        ));
        assert_eq!(lab.wtp.state(), CapwapState::Reset);
    }

    #[test]
    fn blocks_before_the_image_data_response_are_dropped() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        let request = lab.expect_message(MessageType::IMAGE_DATA_REQUEST);
        let seq = decode(&request).seq;
        // The AC's answer is lost; its first block arrives.
        let first = block(lab.next_ac_seq(), ImageData::Data(&img[..1024]));
        lab.deliver(&first);
        lab.assert_quiet();
        assert_eq!(lab.wtp.stats().early_blocks, 1);
        // Our request is retransmitted unaltered; the cached answer comes back.
        lab.advance(ms(100));
        assert_eq!(lab.pop(), request);
        lab.deliver(&image_data_response(
            seq,
            ResultCode::SUCCESS,
            Some((img.len(), md5_of(&img))),
        ));
        // The AC retransmits the block, which is now taken.
        lab.deliver(&first);
        assert_eq!(
            lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, lab.ac_seq - 1),
            ResultCode::SUCCESS
        );
        assert_eq!(
            lab.wtp.progress().map(|p| (p.received, p.size)),
            Some((1024, 20_480))
        );
        assert_eq!(lab.wtp.stats().retransmissions, 1);
    }

    #[test]
    fn predownload_stores_the_backup_and_reset_swaps() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(WtpConfig {
            sink: ImageSink::HashOnly,
            ..config()
        });
        lab.join(Some(OLD));
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        lab.events();

        // Configuration Update with the Image Identifier: 0, then the AP asks for its family.
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::CONFIGURATION_UPDATE_REQUEST,
            seq,
            Some(TARGET),
        ));
        assert_eq!(
            lab.expect_result(MessageType::CONFIGURATION_UPDATE_RESPONSE, seq),
            ResultCode::SUCCESS
        );
        lab.accept_image_request(img.len(), md5_of(&img));
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        assert_eq!(
            lab.wtp.progress(),
            Some(Progress {
                received: 0,
                size: 20_480,
                predownload: true
            })
        );
        let codes = lab.send_image(&img, 1377, false);
        assert!(codes.iter().all(|&c| c == 0));
        lab.assert_quiet();
        assert_eq!(
            lab.wtp.state(),
            CapwapState::Run,
            "no reset after a predownload"
        );
        assert_eq!(
            lab.lines(),
            [
                "Predownload of image 17.9.4.27 requested, answered result code: 0",
                "Image Data Request sent to 172.16.4.26, fileName [ap1g8]",
                "Image Data Response from 172.16.4.26",
                "AC accepted previous sent request with result code: 0",
                "20480 bytes, 15 msgs, 1202 last",
                "Image transfer completed from WLC, last 1",
                "Image ap1g8 version 17.9.4.27 written to storage as the backup image",
            ]
        );
        assert_eq!(lab.wtp.primary().version, OLD);
        assert_eq!(lab.wtp.backup().version, TARGET);
        let backup = lab
            .wtp
            .backup()
            .image
            .as_ref()
            .expect("the predownloaded image");
        assert_eq!(
            (backup.size, backup.md5, backup.bytes.is_none()),
            (20_480, md5_of(&img), true)
        );

        // Asked again: already present.
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::CONFIGURATION_UPDATE_REQUEST,
            seq,
            Some(TARGET),
        ));
        assert_eq!(
            lab.expect_result(MessageType::CONFIGURATION_UPDATE_RESPONSE, seq),
            ResultCode::IMAGE_DATA_ALREADY_PRESENT
        );
        // A Configuration Update without an image is just accepted.
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::CONFIGURATION_UPDATE_REQUEST,
            seq,
            None,
        ));
        assert_eq!(
            lab.expect_result(MessageType::CONFIGURATION_UPDATE_RESPONSE, seq),
            ResultCode::SUCCESS
        );
        lab.assert_quiet();

        // Reset to a version it does not have: 10; without an identifier: 20.
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::RESET_REQUEST,
            seq,
            Some("17.12.4.213"),
        ));
        assert_eq!(
            lab.expect_result(MessageType::RESET_RESPONSE, seq),
            ResultCode::RESET_FAILURE_UNABLE_TO_RESET
        );
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(MessageType::RESET_REQUEST, seq, None));
        assert_eq!(
            lab.expect_result(MessageType::RESET_RESPONSE, seq),
            ResultCode::MISSING_MANDATORY_ELEMENT
        );
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        lab.events();

        // Activate: 0, swap, reset, rejoin on the new image.
        let seq = lab.next_ac_seq();
        let reset = with_identifier(MessageType::RESET_REQUEST, seq, Some(TARGET));
        lab.deliver(&reset);
        assert_eq!(
            lab.expect_result(MessageType::RESET_RESPONSE, seq),
            ResultCode::SUCCESS
        );
        assert_eq!(
            lab.lines(),
            [
                "Reset Request for image 17.9.4.27, answered result code: 0",
                "Images swapped: primary 17.9.4.27, backup 17.3.3.26",
                "Going to restart CAPWAP (reason : reset request from controller)...",
                "CAPWAP State: Reset",
            ]
        );
        // A lost Reset Response is resent while the AP reboots.
        lab.deliver(&reset);
        assert_eq!(
            lab.expect_result(MessageType::RESET_RESPONSE, seq),
            ResultCode::SUCCESS
        );
        lab.advance(ms(500));
        let d = lab.outbox.front().cloned().expect("a Join Request");
        assert_eq!(
            versions_in_join_request(&d),
            (TARGET.to_owned(), Some(OLD.to_owned()))
        );
        lab.join(Some(TARGET));
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        lab.assert_quiet();
    }

    #[test]
    fn configuration_update_and_reset_before_joining_answer_18() {
        let mut lab = Lab::new(config());
        lab.expect_message(MessageType::JOIN_REQUEST);
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::CONFIGURATION_UPDATE_REQUEST,
            seq,
            Some(TARGET),
        ));
        assert_eq!(
            lab.expect_result(MessageType::CONFIGURATION_UPDATE_RESPONSE, seq),
            ResultCode::INVALID_IN_CURRENT_STATE
        );
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(MessageType::RESET_REQUEST, seq, Some(OLD)));
        assert_eq!(
            lab.expect_result(MessageType::RESET_RESPONSE, seq),
            ResultCode::INVALID_IN_CURRENT_STATE
        );
        // And a predownload while a download at join runs.
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        lab.accept_image_request(100, [0; 16]);
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::CONFIGURATION_UPDATE_REQUEST,
            seq,
            Some("17.12.4.213"),
        ));
        assert_eq!(
            lab.expect_result(MessageType::CONFIGURATION_UPDATE_RESPONSE, seq),
            ResultCode::INVALID_IN_CURRENT_STATE
        );
        assert_eq!(lab.wtp.state(), CapwapState::ImageData);
    }

    #[test]
    fn image_data_start_timeout_abandons_and_rejoins() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(config());
        lab.join(Some(TARGET));
        lab.accept_image_request(img.len(), md5_of(&img));
        lab.events();
        assert_eq!(
            lab.wtp.poll_timeout(),
            Some(lab.now + Duration::from_secs(1))
        );
        lab.advance(ms(999));
        lab.assert_quiet();
        assert_eq!(lab.wtp.state(), CapwapState::ImageData);
        lab.advance(ms(1));
        assert_eq!(
            lab.lines(),
            [
                "No Image Data from the controller for 1000 ms (0 bytes received)",
                "Going to restart CAPWAP (reason : image download cannot start)...",
                "CAPWAP State: Reset",
            ]
        );
        lab.advance(ms(500));
        lab.join(Some(TARGET));
        lab.accept_image_request(img.len(), md5_of(&img));
        lab.events();

        // Each block restarts the timer; silence after one is a stall.
        lab.advance(ms(900));
        let seq = lab.next_ac_seq();
        lab.deliver(&block(seq, ImageData::Data(&img[..1024])));
        lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, seq);
        lab.advance(ms(999));
        assert_eq!(lab.wtp.state(), CapwapState::ImageData);
        lab.advance(ms(1));
        assert_eq!(
            lab.events()[1],
            WtpEvent::Restarting {
                reason: RestartReason::ImageDownloadStalled,
                after: ms(500)
            }
        );
    }

    #[test]
    fn echo_requests_follow_the_interval_and_queue_behind_requests() {
        let mut lab = Lab::new(WtpConfig {
            echo_interval: Duration::from_secs(1),
            retransmit: RetransmitConfig::default(),
            ..config()
        });
        lab.join(Some(OLD));
        lab.assert_quiet();
        let joined = lab.now;
        assert_eq!(
            lab.wtp.poll_timeout(),
            Some(joined + Duration::from_secs(1))
        );
        lab.advance(Duration::from_secs(1));
        let echo = lab.expect_message(MessageType::ECHO_REQUEST);
        assert!(decode(&echo).elements.is_empty());
        lab.assert_quiet();
        lab.deliver(&encode(&Message::new(
            MessageType::ECHO_RESPONSE,
            decode(&echo).seq,
            Vec::new(),
        )));
        lab.advance(ms(999));
        lab.assert_quiet();
        lab.advance(ms(1));
        let echo = lab.expect_message(MessageType::ECHO_REQUEST);
        lab.deliver(&encode(&Message::new(
            MessageType::ECHO_RESPONSE,
            decode(&echo).seq,
            Vec::new(),
        )));

        // A predownload's Image Data Request is outstanding when the next echo is due: the
        // echo waits for it instead of being dropped.
        let seq = lab.next_ac_seq();
        lab.deliver(&with_identifier(
            MessageType::CONFIGURATION_UPDATE_REQUEST,
            seq,
            Some(TARGET),
        ));
        lab.expect_result(MessageType::CONFIGURATION_UPDATE_RESPONSE, seq);
        let request = lab.expect_message(MessageType::IMAGE_DATA_REQUEST);
        lab.advance(Duration::from_secs(1));
        lab.assert_quiet();
        lab.deliver(&image_data_response(
            decode(&request).seq,
            ResultCode::IMAGE_DATA_OTHER_ERROR,
            None,
        ));
        lab.expect_message(MessageType::ECHO_REQUEST);
        assert_eq!(
            lab.wtp.state(),
            CapwapState::Run,
            "a refused predownload stays in Run"
        );
        assert_eq!(lab.wtp.stats().echoes, 3);
        assert!(lab.events().contains(&WtpEvent::DownloadRefused {
            ac: "172.16.4.26".into(),
            result: 16,
            predownload: true
        }));
    }

    #[test]
    fn an_unanswered_echo_means_the_ac_is_gone() {
        let mut lab = Lab::new(config());
        lab.join(Some(OLD));
        lab.advance(Duration::from_secs(10));
        let echo = lab.expect_message(MessageType::ECHO_REQUEST);
        lab.advance(ms(100));
        assert_eq!(lab.pop(), echo, "retransmitted unaltered");
        lab.advance(ms(200));
        assert_eq!(lab.pop(), echo);
        lab.events();
        lab.advance(ms(400));
        lab.assert_quiet();
        assert_eq!(
            lab.events(),
            [
                WtpEvent::PeerDead {
                    request: MessageType::ECHO_REQUEST,
                    retransmissions: 2
                },
                WtpEvent::Restarting {
                    reason: RestartReason::PeerDead,
                    after: Duration::from_secs(2)
                },
                WtpEvent::State(CapwapState::Reset),
            ]
        );
        lab.advance(Duration::from_secs(2));
        lab.expect_message(MessageType::JOIN_REQUEST);
        // An unanswered Join Request likewise.
        lab.advance(ms(700));
        assert_eq!(lab.wtp.state(), CapwapState::Reset);
    }

    #[test]
    fn unknown_requests_are_answered_19_and_stray_responses_counted() {
        let mut lab = Lab::new(config());
        lab.join(Some(OLD));
        for kind in [
            MessageType::DATA_TRANSFER_REQUEST,
            MessageType::DISCOVERY_REQUEST,
            MessageType::new(CISCO_VENDOR_ID >> 8, 3),
        ] {
            let seq = lab.next_ac_seq();
            lab.deliver(&encode(&Message::new(kind, seq, Vec::new())));
            let response = kind.response().expect("a request type");
            assert_eq!(
                lab.expect_result(response, seq),
                ResultCode::UNRECOGNIZED_REQUEST
            );
        }
        // Kind 255 has no response type: nothing to answer with.
        let seq = lab.next_ac_seq();
        lab.deliver(&encode(&Message::new(MessageType(255), seq, Vec::new())));
        lab.assert_quiet();
        assert_eq!(lab.wtp.stats().unknown_requests, 4);
        // Image Data while not downloading: 18.
        let seq = lab.next_ac_seq();
        lab.deliver(&block(seq, ImageData::Data(b"stray")));
        assert_eq!(
            lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, seq),
            ResultCode::INVALID_IN_CURRENT_STATE
        );
        // An Echo Request from the AC is answered.
        let seq = lab.next_ac_seq();
        lab.deliver(&encode(&Message::new(
            MessageType::ECHO_REQUEST,
            seq,
            Vec::new(),
        )));
        let d = lab.expect_message(MessageType::ECHO_RESPONSE);
        assert_eq!(decode(&d).seq, seq);
        // Responses nobody asked for, and garbage.
        lab.deliver(&encode(&Message::new(
            MessageType::ECHO_RESPONSE,
            9,
            Vec::new(),
        )));
        lab.deliver(&join_response(0, ResultCode::SUCCESS, Some(TARGET)));
        lab.deliver(&[0xff; 3]);
        lab.deliver(&[]);
        lab.assert_quiet();
        let stats = lab.wtp.stats();
        assert_eq!((stats.unexpected_responses, stats.malformed), (2, 2));
        assert_eq!(lab.wtp.state(), CapwapState::Run);
    }

    #[test]
    fn fragmented_messages_are_reassembled() {
        let mut lab = Lab::new(config());
        let d = lab.expect_message(MessageType::JOIN_REQUEST);
        let wire = join_response(decode(&d).seq, ResultCode::SUCCESS, Some(OLD));
        let pieces = fragment(&wire, 40, 7).expect("fragments");
        assert!(pieces.len() > 2);
        for p in pieces.iter().rev() {
            lab.deliver(p);
        }
        assert_eq!(lab.wtp.state(), CapwapState::Run);
        // A broken fragment is counted, not fatal.
        let mut bad = pieces[0].clone();
        bad.truncate(9);
        bad[3] |= 0x80;
        lab.deliver(&bad);
        lab.deliver(&bad);
        assert!(lab.wtp.stats().malformed >= 1);
    }

    #[test]
    fn crash_after_bytes_stops_answering() {
        let img = image("ap1g8", TARGET, 2);
        let mut lab = Lab::new(WtpConfig {
            crash_after_bytes: Some(2500),
            ..config()
        });
        lab.join(Some(TARGET));
        lab.accept_image_request(img.len(), md5_of(&img));
        lab.events();
        for i in 0..2 {
            let seq = lab.next_ac_seq();
            lab.deliver(&block(seq, ImageData::Data(&img[i * 1024..(i + 1) * 1024])));
            lab.expect_result(MessageType::IMAGE_DATA_RESPONSE, seq);
        }
        let seq = lab.next_ac_seq();
        let third = block(seq, ImageData::Data(&img[2048..3072]));
        lab.deliver(&third);
        lab.assert_quiet();
        assert!(lab.wtp.is_crashed());
        assert_eq!(lab.wtp.state(), CapwapState::Dead);
        assert_eq!(lab.events(), [WtpEvent::Crashed { bytes: 3072 }]);
        assert_eq!(lab.wtp.poll_timeout(), None);
        assert_eq!(lab.wtp.progress(), None);
        // Dead for good: retransmissions, echoes, timers, nothing gets an answer.
        lab.deliver(&third);
        lab.deliver(&encode(&Message::new(
            MessageType::ECHO_REQUEST,
            1,
            Vec::new(),
        )));
        lab.wtp.handle_timeout(lab.now + Duration::from_secs(3600));
        lab.collect();
        lab.assert_quiet();
        assert!(lab.events().is_empty());
    }

    #[test]
    fn event_lines_match_the_source_document() {
        let cases = [
            (
                WtpEvent::State(CapwapState::ImageData),
                "CAPWAP State: Image Data",
            ),
            (
                WtpEvent::ImageVersions {
                    primary: OLD.into(),
                    backup: "8.10.130.0".into(),
                    controller: TARGET.into(),
                },
                "AP image version 17.3.3.26 backup 8.10.130.0, Controller 17.9.4.27",
            ),
            (WtpEvent::VersionMismatch, "Version does not match."),
            (
                WtpEvent::ImageDataRequestSent {
                    ac: "172.16.4.26".into(),
                    family: "ap1g8".into(),
                },
                "Image Data Request sent to 172.16.4.26, fileName [ap1g8]",
            ),
            (
                WtpEvent::TransferSummary(TransferSummary::expected(70_512_640, 1377)),
                "70512640 bytes, 51208 msgs, 601 last",
            ),
            (
                WtpEvent::TransferCompleted,
                "Image transfer completed from WLC, last 1",
            ),
            (
                WtpEvent::Restarting {
                    reason: RestartReason::ImageDownloadCannotStart,
                    after: Duration::ZERO,
                },
                "Going to restart CAPWAP (reason : image download cannot start)...",
            ),
        ];
        for (event, line) in cases {
            assert_eq!(event.line(), line);
        }
    }

    /// A WTP in stage 0 (joining), 1 (Run) or 2 (receiving a 3000-byte image at join).
    fn staged(stage: u8) -> Lab {
        let mut lab = Lab::new(config());
        if stage >= 1 {
            lab.join(Some(if stage == 1 { OLD } else { TARGET }));
        }
        if stage >= 2 {
            lab.accept_image_request(3000, [7; 16]);
        }
        lab.outbox.clear();
        lab
    }

    /// An element with owned data, for generated messages.
    #[derive(Debug, Clone)]
    enum Gen {
        Result(u32),
        Identifier(&'static str),
        Information(u32, [u8; 16]),
        Data(Vec<u8>),
        Eof(Vec<u8>),
        Abort,
        Initiate,
        Unknown(u16, Vec<u8>),
    }

    impl Gen {
        fn element(&self) -> Element<'_> {
            match self {
                Gen::Result(c) => Element::ResultCode(ResultCode(*c)),
                Gen::Identifier(s) => Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: CISCO_VENDOR_ID,
                    data: s,
                }),
                Gen::Information(size, md5) => Element::ImageInformation(ImageInformation {
                    file_size: *size,
                    md5: *md5,
                }),
                Gen::Data(d) => Element::ImageData(ImageData::Data(d)),
                Gen::Eof(d) => Element::ImageData(ImageData::Eof(d)),
                Gen::Abort => Element::ImageData(ImageData::Error),
                Gen::Initiate => Element::InitiateDownload,
                Gen::Unknown(kind, value) => Element::Unknown {
                    kind: ElementType(*kind),
                    value,
                },
            }
        }
    }

    fn any_gen() -> impl Strategy<Value = Gen> {
        prop_oneof![
            (0..25u32).prop_map(Gen::Result),
            proptest::sample::select(vec![TARGET, OLD, "8.10.130.0", "ap1g8", "x"])
                .prop_map(Gen::Identifier),
            (0..4000u32, any::<[u8; 16]>()).prop_map(|(s, m)| Gen::Information(s, m)),
            proptest::collection::vec(any::<u8>(), 0..1500).prop_map(Gen::Data),
            proptest::collection::vec(any::<u8>(), 0..1500).prop_map(Gen::Eof),
            Just(Gen::Abort),
            Just(Gen::Initiate),
            (2000..3000u16, proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(k, v)| Gen::Unknown(k, v)),
        ]
    }

    fn check_output(lab: &mut Lab) -> Result<(), TestCaseError> {
        for d in lab.outbox.drain(..) {
            prop_assert!(Message::decode(&d).is_ok(), "the WTP sent {d:?}");
        }
        lab.events();
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(
            stage in 0..3u8,
            datagrams in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..200), 0..30),
            gaps in proptest::collection::vec(0..3000u64, 0..30),
        ) {
            let mut lab = staged(stage);
            for (i, d) in datagrams.iter().enumerate() {
                lab.deliver(d);
                // The same bytes behind a valid CAPWAP and control header.
                let mut framed = vec![0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0];
                framed.extend_from_slice(d);
                lab.deliver(&framed);
                if let Some(&gap) = gaps.get(i) {
                    lab.advance(ms(gap));
                }
                check_output(&mut lab)?;
            }
        }

        #[test]
        fn plausible_messages_never_panic(
            stage in 0..3u8,
            messages in proptest::collection::vec(
                (
                    prop_oneof![0..30u32, Just(255u32), any::<u32>()],
                    any::<u8>(),
                    proptest::collection::vec(any_gen(), 0..4),
                    0..1500u64,
                ),
                0..40,
            ),
        ) {
            let mut lab = staged(stage);
            for (kind, seq, elements, gap) in &messages {
                let m = Message::new(
                    MessageType(*kind),
                    *seq,
                    elements.iter().map(Gen::element).collect(),
                );
                if let Ok(wire) = m.to_vec() {
                    lab.deliver(&wire);
                }
                lab.advance(ms(*gap));
                check_output(&mut lab)?;
            }
            // Whatever happened, the machine is still driveable.
            lab.advance(Duration::from_secs(60));
            check_output(&mut lab)?;
        }
    }
}
