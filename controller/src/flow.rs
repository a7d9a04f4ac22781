//! The image-download conversation between the controller (AC) and an AP (WTP), as both
//! sides of this crate speak it: RFC 5415 §9.1 with the choices below. `ac` and
//! `wtp` implement the two ends; this module fixes what they agree on.
//!
//! ## Join (download at join, RFC 5415 §9.1.1)
//! 1. WTP → AC **Join Request** with the mandatory elements (§6.1): Location Data, WTP Board
//!    Data (vendor [`CISCO_VENDOR_ID`], model e.g. `C9105AXI-E`, serial, base MAC), WTP
//!    Descriptor (hardware version, **active software** = the primary image's version,
//!    **boot version**, and **other software** = the backup image's version), WTP Name,
//!    Session ID, WTP Frame Tunnel Mode, WTP MAC Type, WTP Radio Information, ECN Support,
//!    CAPWAP Local IPv4 Address.
//! 2. AC → WTP **Join Response**: Result Code 0, AC Descriptor, AC Name, WTP Radio
//!    Information, ECN Support, CAPWAP Control IPv4 Address, CAPWAP Local IPv4 Address, and
//!    **Image Identifier** (vendor [`CISCO_VENDOR_ID`], data = the network's version,
//!    `17.9.4.27`). A Join Request missing an element gets Result Code 20 and no session.
//! 3. The WTP compares: primary = version → joined, runs. Backup = version → swaps primary
//!    and backup, "resets" (rejoins with a new Join Request). Otherwise it downloads:
//! 4. WTP → AC **Image Data Request** with Image Identifier (vendor, data = its image
//!    **family**, `ap1g8`, as real APs log `fileName [ap1g8]`) and Initiate Download.
//! 5. AC → WTP **Image Data Response**: Result Code 0 and Image Information (size, MD5) when
//!    the family's image is available; Result Code 16 (Image Data Error, Other Error) when it
//!    is not (the fetch failed or the release lacks the family — the AC logs the install
//!    error and retries later). The AC answers once the image is loaded; a WTP retransmits
//!    its request meanwhile and gets the cached response when it is a duplicate.
//! 6. AC → WTP **Image Data Request**s, stop-and-wait (one outstanding, §4.5.3): Image Data
//!    type 1 with `block_size` bytes each, the final block type 2 (EOF) carrying the remaining
//!    1 to `block_size` bytes (so `ceil(size / block_size)` messages; an empty image is one
//!    empty EOF block). WTP → AC Image Data Response,
//!    Result Code 0 each. On the EOF block the WTP checks size, MD5 and the tar (bundle-tool's
//!    image check against its family and the announced version) and answers 0, or 14
//!    (Invalid Checksum) / 15 (Invalid Data Length) / 16.
//! 7. Join-time download: the WTP stores the image as primary, the old primary becomes the
//!    backup, and it rejoins. The AC logs `AP Image Download Success` (or `Failed`).
//!
//! ## Predownload (RFC 5415 §9.1.3, "download in Run state")
//! 1. AC → WTP **Configuration Update Request** with Image Identifier (vendor, data =
//!    version). WTP → AC Configuration Update Response: 0, or 17 (Image Already Present)
//!    when its backup already is that version.
//! 2. Then as steps 4–6 above; the WTP stores the image as its **backup** and keeps running.
//! 3. Activate: AC → WTP **Reset Request** with Image Identifier (version); WTP → AC Reset
//!    Response 0 (10 when it has no such image), swaps primary and backup, and rejoins.
//!
//! ## Liveness
//! The WTP sends an **Echo Request** every echo interval while joined (also during image
//! data); the AC answers with an Echo Response. Requests use the §4.5.3 rules on both sides
//! ([`crate::capwap::Requester`] / [`crate::capwap::Responder`]): each side has its own
//! sequence numbers; a side that retransmits `max_retransmit` times without an answer
//! considers the peer gone (the AP rejoins; the AC drops the session and logs a disjoin).

/// The vendor identifier Cisco APs use in CAPWAP (the Aironet OUI 00:40:96).
pub const CISCO_VENDOR_ID: u32 = 0x0040_9600;

/// Default seconds between a WTP's Echo Requests (RFC 5415 EchoInterval).
pub const ECHO_INTERVAL_S: u64 = 30;
