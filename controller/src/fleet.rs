//! A fleet of simulated APs against one controller: the library behind `ap-sim` and `lab`.
//!
//! [`run`] gives every AP its own [`Wtp`] (the sans-IO AP of [`crate::wtp`]), its own UDP
//! socket (127.0.0.1:0, or ::1 for an IPv6 controller, connected to the controller) and its
//! own tokio task, which does what [`crate::server::run_ap`] does — datagrams and timers in,
//! datagrams out, event lines to the caller — plus the things a lab needs and the state machine
//! must not know about:
//!
//! - **Faults on the link**, decided per datagram by a seeded [`Prng`] per AP (no `rand`):
//!   [`Faults::loss`] drops and [`Faults::dup`] doubles datagrams in both directions;
//!   [`Faults::stall`] makes the AP deaf and mute for a while once it has received so many
//!   image bytes (then the controller's retransmissions and the AP's ImageDataStartTimer
//!   decide what happens). [`Faults::crash_after_bytes`] is the one fault inside the
//!   [`Wtp`] ([`WtpConfig::crash_after_bytes`]); the shell then *reboots* the AP: after
//!   [`FleetConfig::reset_delay`] a fresh [`Wtp`] with the same identity and images (and no
//!   crash fault) joins from a new socket, so from a new source port, with its sequence
//!   numbers continuing where the dead one stopped (a controller that recognises the AP by
//!   name never takes its first Join Request for a duplicate of the last request it saw).
//! - **What the controller asked for.** The [`Wtp`] does not expose the version a Join
//!   Response names (it only reports a *mismatch*), so the shell reads it off the Join
//!   Response as it passes ([`join_response_version`]: only while the AP is in Join, and only
//!   the control header unless it is a Join Response). An AP is *verified* when it is in Run
//!   and its primary image is that version; under [`Until::Current`] the fleet ends when every
//!   AP is, or when a Join Response named no version (nothing to verify: done, not verified).
//! - **Images.** Without [`FleetConfig::store`] an AP keeps only size and MD5
//!   ([`ImageSink::HashOnly`]): nothing proportional to an image is held, so 1000 APs cost
//!   little more than their sockets. With it, each image is kept in memory until the AP
//!   stores it, then written to `DIR/<AP name>/<family>` through a temporary and a rename.
//! - **Progress** for a caller drawing bars while the fleet runs: [`FleetStatus`], shared
//!   atomics per AP (state, bytes, done) and [`FleetStatus::families`] to sum them.
//!
//! The result is a [`FleetReport`]: one [`ApReport`] per AP, sums per family, and a text
//! table ([`FleetReport`]'s `Display`) that `ap-sim` and `lab` print.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bundle_tool::models::WhichError;
use bundle_tool::version::ApVersion;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::capwap::{Message, MessageType, RawMessage, RetransmitConfig};
use crate::events::Mac;
use crate::flow::ECHO_INTERVAL_S;
use crate::wtp::{
    CapwapState, DEFAULT_IMAGE_DATA_START_TIMEOUT, DEFAULT_RESET_DELAY, DEFAULT_RETRY_INTERVAL,
    ImageSink, Wtp, WtpConfig, WtpError, WtpEvent,
};

/// One model per image family of the source document's bundle, in family order: ap1g4,
/// ap1g5, ap1g6, ap1g6a, ap1g7, ap1g8, ap3g3 (checked by a test against
/// `bundle_tool::models::which`). The fleet cycles over them by default.
pub const DEFAULT_MODELS: [&str; 7] = [
    "AIR-AP1832I-B-K9",
    "AIR-AP1815I-B-K9",
    "C9117AXI-B",
    "C9130AXI-B",
    "C9120AXI-B",
    "C9105AXI-E",
    "AIR-AP2802I-B-K9",
];

/// The primary image the APs start on by default: the source document's APs (17.3.3.26).
pub const DEFAULT_PRIMARY: &str = "17.3.3.26";

/// The backup image the APs start with by default: the source document's (8.10.130.0).
pub const DEFAULT_BACKUP: &str = "8.10.130.0";

/// Most APs in one fleet: each has its own UDP port, names are numbered, and MACs and serials
/// are derived from the number.
pub const MAX_APS: usize = 65_535;

/// The OUI-like prefix of the simulated base MACs: `00:a2:ee:00:00:01` for the first AP.
const MAC_PREFIX: [u8; 3] = [0x00, 0xa2, 0xee];

/// Room for the largest UDP datagram. Reserved, not initialised: only the pages datagrams
/// are written to become resident.
const RECV_BUFFER: usize = 65_536;

/// Unverified APs named one by one under the summary table; the rest are counted.
const LISTED_PROBLEMS: usize = 20;

// ---- the PRNG ----

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast, seedable generator, good enough
/// for deciding which datagram to drop, and the same on every platform. Not for secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prng {
    state: u64,
}

/// SplitMix64's increment (2^64 / φ).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (a 64-bit finaliser: every input bit moves every output bit).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Prng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Prng {
        Prng { state: seed }
    }

    /// The generator of AP number `index` of a fleet seeded with `seed`: the same for the
    /// same pair, and (with overwhelming probability) a stream that never overlaps another
    /// AP's for the length of any run.
    pub fn for_ap(seed: u64, index: usize) -> Prng {
        Prng::new(mix64(seed ^ mix64(index as u64 ^ GOLDEN_GAMMA)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A number in `[0, 1)`, from the top 53 bits (every value a multiple of 2^-53).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (never for `p <= 0`, always for `p >= 1`). Draws one number
    /// whatever `p` is, so a stream does not shift when a probability changes.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

// ---- configuration ----

/// The link goes silent once: see [`Faults::stall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Image bytes the AP receives (over its lifetime, reboots included) before the silence.
    pub after_bytes: u64,
    /// How long nothing passes, either way.
    pub duration: Duration,
}

/// Faults injected by the socket shell (and, for `crash_after_bytes`, by the [`Wtp`]).
/// [`Faults::default`] injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Probability, in `[0, 1)`, that a datagram is dropped, in each direction.
    pub loss: f64,
    /// Probability, in `[0, 1)`, that a datagram not dropped is delivered (or sent) twice.
    pub dup: f64,
    /// Once per AP, go silent for a while after so many image bytes.
    pub stall: Option<Stall>,
    /// Once per AP, die after receiving this many image bytes, then reboot and rejoin.
    pub crash_after_bytes: Option<u64>,
    /// Seed of the per-AP generators ([`Prng::for_ap`]); the same seed makes the same
    /// decisions for the same sequence of datagrams.
    pub seed: u64,
}

/// What happens to one datagram on the simulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Lost.
    Drop,
    /// Passes once.
    Deliver,
    /// Passes twice.
    Twice,
}

impl Faults {
    /// The fate of the next datagram: dropped with probability `loss`, otherwise doubled
    /// with probability `dup`. Draws two numbers from `rng` every time.
    pub fn fate(&self, rng: &mut Prng) -> Fate {
        let lost = rng.chance(self.loss);
        let doubled = rng.chance(self.dup);
        match (lost, doubled) {
            (true, _) => Fate::Drop,
            (false, true) => Fate::Twice,
            (false, false) => Fate::Deliver,
        }
    }
}

/// When [`run`] returns (besides its shutdown token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// When every AP has joined and runs the version the controller named in its latest Join
    /// Response, in Run (or the Join Response named none).
    Current,
    /// Only at shutdown: the APs keep running (echoes, predownloads, resets).
    Forever,
}

/// A fleet: how many APs, what they are, what they start on, how they behave.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The controller's CAPWAP control address.
    pub controller: SocketAddr,
    /// Number of APs, 1 to [`MAX_APS`].
    pub count: usize,
    /// Models, cycled over the APs (AP 1 gets the first). Default [`DEFAULT_MODELS`].
    pub models: Vec<String>,
    /// Version of every AP's primary image at start. Default [`DEFAULT_PRIMARY`].
    pub primary: String,
    /// Version of every AP's backup image at start (empty: none). Default [`DEFAULT_BACKUP`].
    pub backup: String,
    /// AP names are `<prefix>-0001`, … (letters, digits, `-`, `_`, `.`; not starting with
    /// `.`; empty: `0001`, …). Default `AP`.
    pub name_prefix: String,
    /// Keep the images, in `DIR/<AP name>/<family>`. Default `None`: size and MD5 only.
    pub store: Option<PathBuf>,
    /// Faults. Default none.
    pub faults: Faults,
    /// The APs' request retransmission (§4.5.3). Default 3 s doubling, 5 retransmissions.
    pub retransmit: RetransmitConfig,
    /// Wait before rejoining after a failure. Default 30 s.
    pub retry_interval: Duration,
    /// "Reboot" time after a reset or a crash. Default 5 s.
    pub reset_delay: Duration,
    /// Echo Request interval (zero: none). Default 30 s.
    pub echo_interval: Duration,
    /// ImageDataStartTimer. Default 30 s.
    pub image_data_start_timeout: Duration,
    /// When [`run`] returns. Default [`Until::Current`].
    pub until: Until,
}

impl FleetConfig {
    /// `count` APs of [`DEFAULT_MODELS`] on the source document's versions, against
    /// `controller`, with every default above.
    pub fn new(controller: SocketAddr, count: usize) -> FleetConfig {
        FleetConfig {
            controller,
            count,
            models: DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect(),
            primary: DEFAULT_PRIMARY.into(),
            backup: DEFAULT_BACKUP.into(),
            name_prefix: "AP".into(),
            store: None,
            faults: Faults::default(),
            retransmit: RetransmitConfig::default(),
            retry_interval: DEFAULT_RETRY_INTERVAL,
            reset_delay: DEFAULT_RESET_DELAY,
            echo_interval: Duration::from_secs(ECHO_INTERVAL_S),
            image_data_start_timeout: DEFAULT_IMAGE_DATA_START_TIMEOUT,
            until: Until::Current,
        }
    }

    /// Checks the config and names every AP: [`ApIdentity`] `i` is AP number `i + 1`.
    pub fn plan(&self) -> Result<Vec<ApIdentity>, FleetError> {
        if self.count == 0 || self.count > MAX_APS {
            return Err(FleetError::Count { count: self.count });
        }
        for (what, value) in [("loss", self.faults.loss), ("dup", self.faults.dup)] {
            if !(0.0..1.0).contains(&value) {
                return Err(FleetError::Probability { what, value });
            }
        }
        if !valid_prefix(&self.name_prefix) {
            return Err(FleetError::NamePrefix(self.name_prefix.clone()));
        }
        if self.models.is_empty() {
            return Err(FleetError::NoModels);
        }
        let mut families = Vec::with_capacity(self.models.len());
        for model in &self.models {
            let found =
                bundle_tool::models::which(model).map_err(|source| FleetError::UnknownModel {
                    model: model.clone(),
                    source,
                })?;
            families.push(found.row.family.clone());
        }
        Ok((0..self.count)
            .map(|index| {
                let k = index % self.models.len();
                ApIdentity::new(
                    index,
                    &self.name_prefix,
                    self.models[k].clone(),
                    families[k].clone(),
                )
            })
            .collect())
    }
}

/// Letters, digits, `-`, `_` and `.`, not starting with `.`: safe as a folder name.
fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 64
        && !prefix.starts_with('.')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Who one simulated AP is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApIdentity {
    /// Position in the fleet, from 0.
    pub index: usize,
    /// WTP Name: `AP-0001` for index 0.
    pub name: String,
    /// Model (`C9105AXI-E`).
    pub model: String,
    /// Its image family (`ap1g8`).
    pub family: String,
    /// Serial number: `FGL2401` and the AP number in 4 hex digits (`FGL24010001`).
    pub serial: String,
    /// Base MAC: `00:a2:ee` and the AP number in 3 bytes.
    pub mac: [u8; 6],
}

impl ApIdentity {
    fn new(index: usize, prefix: &str, model: String, family: String) -> ApIdentity {
        let n = index + 1;
        let name = if prefix.is_empty() {
            format!("{n:04}")
        } else {
            format!("{prefix}-{n:04}")
        };
        let b = (n as u32).to_be_bytes();
        ApIdentity {
            index,
            name,
            model,
            family,
            serial: format!("FGL2401{n:04X}"),
            mac: [
                MAC_PREFIX[0],
                MAC_PREFIX[1],
                MAC_PREFIX[2],
                b[1],
                b[2],
                b[3],
            ],
        }
    }
}

/// Why a fleet cannot run.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The AP count is 0 or above [`MAX_APS`].
    #[error("the AP count must be 1 to {MAX_APS}, not {count}")]
    Count {
        /// The count asked for.
        count: usize,
    },
    /// A fault probability is outside `[0, 1)`.
    #[error("the {what} probability must be at least 0 and below 1, not {value}")]
    Probability {
        /// `loss` or `dup`.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// The name prefix cannot be an AP name and a folder name.
    #[error(
        "the AP name prefix {0:?} may use only letters, digits, '-', '_' and '.' (at most 64, not starting with '.')"
    )]
    NamePrefix(String),
    /// No models to cycle over.
    #[error("no AP models given")]
    NoModels,
    /// A model no image family is known for.
    #[error("AP model {model:?}: {source}")]
    UnknownModel {
        /// The model given.
        model: String,
        /// Why `bundle_tool::models::which` has no family for it.
        #[source]
        source: WhichError,
    },
    /// The [`FleetStatus`] passed to [`run`] was made for another config.
    #[error("the fleet status was made for another fleet (other AP count or names)")]
    StatusMismatch,
    /// An AP's Join or Image Data Request cannot be encoded (a version too long, …).
    #[error("{ap}: {source}")]
    Ap {
        /// The AP.
        ap: String,
        /// Why.
        #[source]
        source: WtpError,
    },
    /// An AP's socket could not be opened (too many open files: raise `ulimit -n`).
    #[error("{ap}: cannot open a UDP socket to {controller}: {source}")]
    Socket {
        /// The AP.
        ap: String,
        /// The controller.
        controller: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image folder, or an image in it, could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Store {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An AP's task ended without a report (a bug: it panicked).
    #[error("{ap}: the simulation task failed")]
    Task {
        /// The AP.
        ap: String,
    },
}

// ---- live status ----

/// One AP's live state, updated by its task as it goes (relaxed atomics: a progress display
/// may see a moment's mix of old and new values, never a torn one).
#[derive(Debug)]
pub struct ApStatus {
    name: String,
    model: String,
    family: String,
    state: AtomicU8,
    received: AtomicU64,
    size: AtomicU64,
    bytes: AtomicU64,
    reboots: AtomicU32,
    done: AtomicBool,
    verified: AtomicBool,
}

fn state_code(s: CapwapState) -> u8 {
    match s {
        CapwapState::Join => 1,
        CapwapState::ImageData => 2,
        CapwapState::Run => 3,
        CapwapState::Reset => 4,
        CapwapState::Dead => 5,
    }
}

fn state_from_code(c: u8) -> Option<CapwapState> {
    Some(match c {
        1 => CapwapState::Join,
        2 => CapwapState::ImageData,
        3 => CapwapState::Run,
        4 => CapwapState::Reset,
        5 => CapwapState::Dead,
        _ => return None,
    })
}

impl ApStatus {
    /// The AP's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Its image family.
    pub fn family(&self) -> &str {
        &self.family
    }

    /// Its CAPWAP state (`None` before it started).
    pub fn state(&self) -> Option<CapwapState> {
        state_from_code(self.state.load(Ordering::Relaxed))
    }

    /// Bytes received of the current (or latest) download.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Size of the current (or latest) download (0 until the controller announced one).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Image bytes received over its lifetime, failed and repeated downloads included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Reboots after a crash.
    pub fn reboots(&self) -> u32 {
        self.reboots.load(Ordering::Relaxed)
    }

    /// Done by [`Until::Current`]'s rule.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// In Run on the version the controller named.
    pub fn is_verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }
}

/// Progress of the APs of one family, summed from [`ApStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyProgress {
    /// The family.
    pub family: String,
    /// Its APs.
    pub aps: usize,
    /// Of which done.
    pub done: usize,
    /// Bytes received of their current downloads.
    pub received: u64,
    /// Sizes of their current downloads (announced so far).
    pub size: u64,
}

/// The live state of a fleet, shared between [`run`] and whoever shows progress.
#[derive(Debug)]
pub struct FleetStatus {
    aps: Vec<ApStatus>,
    done: AtomicUsize,
    changed: Notify,
}

impl FleetStatus {
    /// The status of the fleet `cfg` describes (every AP not started yet); fails as
    /// [`FleetConfig::plan`] does.
    pub fn new(cfg: &FleetConfig) -> Result<FleetStatus, FleetError> {
        Ok(FleetStatus::from_plan(&cfg.plan()?))
    }

    fn from_plan(plan: &[ApIdentity]) -> FleetStatus {
        FleetStatus {
            aps: plan
                .iter()
                .map(|id| ApStatus {
                    name: id.name.clone(),
                    model: id.model.clone(),
                    family: id.family.clone(),
                    state: AtomicU8::new(0),
                    received: AtomicU64::new(0),
                    size: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    reboots: AtomicU32::new(0),
                    done: AtomicBool::new(false),
                    verified: AtomicBool::new(false),
                })
                .collect(),
            done: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn matches(&self, plan: &[ApIdentity]) -> bool {
        self.aps.len() == plan.len()
            && self
                .aps
                .iter()
                .zip(plan)
                .all(|(s, id)| s.name == id.name && s.family == id.family)
    }

    /// Every AP, in fleet order.
    pub fn aps(&self) -> &[ApStatus] {
        &self.aps
    }

    /// APs done by [`Until::Current`]'s rule.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// APs verified (in Run on the controller's version).
    pub fn verified(&self) -> usize {
        self.aps.iter().filter(|a| a.is_verified()).count()
    }

    /// Progress per family, sorted by family.
    pub fn families(&self) -> Vec<FamilyProgress> {
        let mut by: BTreeMap<&str, FamilyProgress> = BTreeMap::new();
        for a in &self.aps {
            let p = by.entry(&a.family).or_insert_with(|| FamilyProgress {
                family: a.family.clone(),
                aps: 0,
                done: 0,
                received: 0,
                size: 0,
            });
            p.aps += 1;
            p.done += usize::from(a.is_done());
            p.received += a.received();
            p.size += a.size();
        }
        by.into_values().collect()
    }

    fn set_done(&self, index: usize, done: bool, verified: bool) {
        let Some(a) = self.aps.get(index) else {
            return;
        };
        a.verified.store(verified, Ordering::Relaxed);
        if a.done.swap(done, Ordering::AcqRel) != done {
            if done {
                self.done.fetch_add(1, Ordering::AcqRel);
            } else {
                self.done.fetch_sub(1, Ordering::AcqRel);
            }
            self.changed.notify_waiters();
        }
    }

    /// Returns when every AP is done, or when `stop` is cancelled.
    async fn all_done(&self, stop: &CancellationToken) {
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if self.done.load(Ordering::Acquire) >= self.aps.len() {
                return;
            }
            tokio::select! {
                () = changed => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

// ---- the report ----

/// One AP at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApReport {
    /// WTP Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Image family.
    pub family: String,
    /// Base MAC, as the controller prints it (`00a2.ee00.0001`).
    pub mac: String,
    /// Serial number.
    pub serial: String,
    /// Primary image version at the end.
    pub primary: String,
    /// Backup image version at the end.
    pub backup: String,
    /// The version the latest accepted Join Response named (`None`: no join, or none named).
    pub controller_version: Option<String>,
    /// CAPWAP state at the end (`Run`, `Image Data`, …; `Dead` when stopped while rebooting).
    pub state: String,
    /// In Run, primary image = `controller_version`.
    pub verified: bool,
    /// Why not verified (`None` when verified).
    pub problem: Option<String>,
    /// Image bytes received, over every download and reboot.
    pub bytes: u64,
    /// Image Data messages of the transfers that reached their EOF block.
    pub messages: u64,
    /// Downloads that completed (image checked and stored).
    pub transfers: u64,
    /// The AP's requests retransmitted (Join, Image Data, Echo).
    pub retransmissions: u64,
    /// Join Requests sent (sessions started).
    pub joins: u64,
    /// Crashes, each followed by a reboot (unless the run ended first).
    pub reboots: u32,
    /// Stalls injected (0 or 1).
    pub stalls: u32,
    /// Datagrams put on the wire (duplicates included).
    pub datagrams_sent: u64,
    /// Datagrams handed to the AP (duplicates included).
    pub datagrams_received: u64,
    /// Datagrams dropped by `loss` or during a stall, both ways.
    pub dropped: u64,
    /// Datagrams doubled by `dup`, both ways.
    pub duplicated: u64,
    /// The last completed image transfer, from the controller's Image Data Response (the
    /// image announced) to the EOF block checked: the CAPWAP part alone. `None`: none
    /// completed.
    #[serde(rename = "transfer_s", serialize_with = "optional_seconds")]
    pub transfer: Option<Duration>,
    /// Before that transfer, from its Image Data Request to the Image Data Response: the
    /// wait for the controller's admission (`max_concurrent`, sets) and its upstream fetch.
    #[serde(rename = "wait_s", serialize_with = "optional_seconds")]
    pub wait: Option<Duration>,
    /// From the first accepted Join Response to the first moment the AP was verified (in Run
    /// on the controller's version). `None`: never both.
    #[serde(rename = "joined_to_verified_s", serialize_with = "optional_seconds")]
    pub joined_to_verified: Option<Duration>,
}

/// Sums over a set of APs (one family, or all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FamilySummary {
    /// The family (`total` for the whole fleet).
    pub family: String,
    /// APs.
    pub aps: usize,
    /// Of which verified.
    pub verified: usize,
    /// Image bytes received.
    pub bytes: u64,
    /// Image Data messages of completed transfers.
    pub messages: u64,
    /// The APs' retransmissions.
    pub retransmissions: u64,
    /// Reboots after crashes.
    pub reboots: u64,
}

impl FamilySummary {
    fn add(&mut self, a: &ApReport) {
        self.aps += 1;
        self.verified += usize::from(a.verified);
        self.bytes += a.bytes;
        self.messages += a.messages;
        self.retransmissions += a.retransmissions;
        self.reboots += u64::from(a.reboots);
    }
}

/// What a fleet did: see the module doc. `Display` is the summary table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetReport {
    /// Every AP, in fleet order.
    pub aps: Vec<ApReport>,
    /// Sums per family, sorted by family.
    pub families: Vec<FamilySummary>,
    /// Sums over the fleet.
    pub totals: FamilySummary,
    /// Every AP verified.
    pub all_verified: bool,
    /// From the start of [`run`] to its end.
    #[serde(rename = "elapsed_s", serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn optional_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl FleetReport {
    /// The report of these APs.
    pub fn new(aps: Vec<ApReport>, elapsed: Duration) -> FleetReport {
        let mut by: BTreeMap<String, FamilySummary> = BTreeMap::new();
        let mut totals = FamilySummary {
            family: "total".into(),
            ..FamilySummary::default()
        };
        for a in &aps {
            by.entry(a.family.clone())
                .or_insert_with(|| FamilySummary {
                    family: a.family.clone(),
                    ..FamilySummary::default()
                })
                .add(a);
            totals.add(a);
        }
        FleetReport {
            all_verified: !aps.is_empty() && aps.iter().all(|a| a.verified),
            aps,
            families: by.into_values().collect(),
            totals,
            elapsed,
        }
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>6} {:>9} {:>14} {:>10} {:>16} {:>8}",
            "family", "APs", "verified", "bytes", "msgs", "retransmissions", "reboots"
        )?;
        for s in self.families.iter().chain(std::iter::once(&self.totals)) {
            writeln!(
                f,
                "{:<8} {:>6} {:>9} {:>14} {:>10} {:>16} {:>8}",
                s.family, s.aps, s.verified, s.bytes, s.messages, s.retransmissions, s.reboots
            )?;
        }
        write!(
            f,
            "{} of {} APs verified the controller's version in {:.1} s",
            self.totals.verified,
            self.totals.aps,
            self.elapsed.as_secs_f64()
        )?;
        let problems: Vec<&ApReport> = self.aps.iter().filter(|a| !a.verified).collect();
        for a in problems.iter().take(LISTED_PROBLEMS) {
            write!(
                f,
                "\n{}: {}",
                a.name,
                a.problem.as_deref().unwrap_or("not verified")
            )?;
        }
        if problems.len() > LISTED_PROBLEMS {
            write!(
                f,
                "\n… and {} more not verified",
                problems.len() - LISTED_PROBLEMS
            )?;
        }
        Ok(())
    }
}

// ---- running ----

/// Where the AP lines go: `(AP name, line)`.
type Lines = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Runs the fleet `cfg` describes until [`FleetConfig::until`] says so or `shutdown` is
/// cancelled, updating `status` (made by [`FleetStatus::new`] from the same config) as it
/// goes and passing every AP line to `lines(ap_name, line)`. The report then says which APs
/// were verified. Errors are the config's ([`FleetConfig::plan`]) and the environment's
/// (sockets, the image folder): one of them stops the whole fleet.
pub async fn run(
    cfg: FleetConfig,
    status: Arc<FleetStatus>,
    lines: impl Fn(&str, &str) + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> Result<FleetReport, FleetError> {
    let plan = cfg.plan()?;
    if !status.matches(&plan) {
        return Err(FleetError::StatusMismatch);
    }
    if let Some(dir) = &cfg.store {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| FleetError::Store {
                path: dir.clone(),
                source,
            })?;
    }
    let started = Instant::now();
    let cfg = Arc::new(cfg);
    let lines: Lines = Arc::new(lines);
    let stop = shutdown.child_token();
    let mut tasks = Vec::with_capacity(plan.len());
    for id in plan {
        let name = id.name.clone();
        let ap = ApRunner::new(
            id,
            Arc::clone(&cfg),
            Arc::clone(&status),
            Arc::clone(&lines),
            stop.clone(),
        );
        tasks.push((name, tokio::spawn(ap.run())));
    }
    match cfg.until {
        Until::Current => status.all_done(&stop).await,
        Until::Forever => stop.cancelled().await,
    }
    stop.cancel();
    let mut aps = Vec::with_capacity(tasks.len());
    let mut failed = None;
    for (ap, task) in tasks {
        match task.await {
            Ok(Ok(report)) => aps.push(report),
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(_) => {
                failed.get_or_insert(FleetError::Task { ap });
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(FleetReport::new(aps, started.elapsed())),
    }
}

/// The version a successful Join Response names in its Image Identifier: `Some(None)` when
/// it names none, `None` when `datagram` is not a successful Join Response. Only the control
/// header is decoded for other messages. A Join Response in fragments is not read (they are
/// a few hundred bytes, and ours never fragments them).
pub fn join_response_version(datagram: &[u8]) -> Option<Option<String>> {
    let raw = RawMessage::decode(datagram).ok()?;
    if raw.control.message_type != MessageType::JOIN_RESPONSE {
        return None;
    }
    let msg = Message::decode(datagram).ok()?;
    if !msg.result_code()?.is_success() {
        return None;
    }
    Some(msg.image_identifier().map(|i| i.data.to_owned()))
}

/// Versions are equal when both parse as four numbers and the numbers agree (`17.09.4.27`
/// is `17.9.4.27`), or else when the trimmed strings agree — as the [`Wtp`] compares them.
pub fn same_version(a: &str, b: &str) -> bool {
    match (a.parse::<ApVersion>(), b.parse::<ApVersion>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// The sequence number after `sent` requests starting at `first` (it wraps, §4.5.3).
fn seq_after(first: u8, sent: u64) -> u8 {
    first.wrapping_add((sent % 256) as u8)
}

/// Counters kept across an AP's reboots.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// Image bytes, retransmissions and joins of earlier lives.
    bytes_before: u64,
    retransmissions_before: u64,
    joins_before: u64,
    messages: u64,
    transfers: u64,
    reboots: u32,
    stalls: u32,
    sent: u64,
    received: u64,
    dropped: u64,
    duplicated: u64,
    /// Image Data Requests sent in the current life (for the sequence numbers).
    image_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StallPhase {
    /// No stall configured, or it is over.
    Off,
    /// Waiting for the byte count.
    Armed(Stall),
    /// Silent until then.
    Silent(Instant),
}

/// When things happened to one AP, across its reboots, for [`ApReport`]'s durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Timing {
    /// The first accepted Join Response.
    first_joined: Option<Instant>,
    /// The first moment the AP was verified.
    verified: Option<Instant>,
    /// The latest Image Data Request sent.
    requested: Option<Instant>,
    /// Its Image Data Response: the running transfer's start.
    responded: Option<Instant>,
    /// Wait and duration of the last completed transfer.
    wait: Option<Duration>,
    transfer: Option<Duration>,
}

impl Timing {
    /// Notes the AP event `e`, seen at `now`.
    fn on_event(&mut self, now: Instant, e: &WtpEvent) {
        match e {
            WtpEvent::Joined { .. } => {
                self.first_joined.get_or_insert(now);
            }
            WtpEvent::ImageDataRequestSent { .. } => {
                self.requested = Some(now);
                self.responded = None;
            }
            WtpEvent::ImageDataResponse { .. } => self.responded = Some(now),
            WtpEvent::TransferCompleted => {
                if let Some(start) = self.responded.take() {
                    self.transfer = Some(now.saturating_duration_since(start));
                    self.wait = self
                        .requested
                        .take()
                        .map(|asked| start.saturating_duration_since(asked));
                }
            }
            _ => {}
        }
    }

    /// The AP is verified at `now` (only the first time counts).
    fn on_verified(&mut self, now: Instant) {
        self.verified.get_or_insert(now);
    }

    fn joined_to_verified(&self) -> Option<Duration> {
        Some(self.verified?.saturating_duration_since(self.first_joined?))
    }
}

/// How one life of an AP ended.
enum LifeEnd {
    Stopped,
    Crashed,
}

/// What woke the loop.
enum Wake {
    Stop,
    Datagram,
    Timer,
}

/// One AP's task: its lives, its faults, its counters.
struct ApRunner {
    id: ApIdentity,
    cfg: Arc<FleetConfig>,
    status: Arc<FleetStatus>,
    lines: Lines,
    stop: CancellationToken,
    rng: Prng,
    stall: StallPhase,
    /// What the latest accepted Join Response named (outer `None`: not joined yet).
    announced: Option<Option<String>>,
    /// What the latest successful Join Response seen in Join named, until the [`Wtp`] says
    /// whether it took it.
    peeked: Option<Option<String>>,
    /// The latest State line printed.
    last_state: Option<CapwapState>,
    c: Counters,
    timing: Timing,
}

impl ApRunner {
    fn new(
        id: ApIdentity,
        cfg: Arc<FleetConfig>,
        status: Arc<FleetStatus>,
        lines: Lines,
        stop: CancellationToken,
    ) -> ApRunner {
        let rng = Prng::for_ap(cfg.faults.seed, id.index);
        let stall = cfg.faults.stall.map_or(StallPhase::Off, StallPhase::Armed);
        ApRunner {
            id,
            cfg,
            status,
            lines,
            stop,
            rng,
            stall,
            announced: None,
            peeked: None,
            last_state: None,
            c: Counters::default(),
            timing: Timing::default(),
        }
    }

    fn line(&self, line: &str) {
        (self.lines)(&self.id.name, line);
    }

    fn ap_status(&self) -> Option<&ApStatus> {
        self.status.aps.get(self.id.index)
    }

    fn wtp_config(
        &self,
        primary: &str,
        backup: &str,
        first_seq: u8,
        crash: Option<u64>,
    ) -> WtpConfig {
        let cfg = &self.cfg;
        let mut w = WtpConfig::new(&self.id.name, &self.id.model, &self.id.family);
        w.serial.clone_from(&self.id.serial);
        w.base_mac = self.id.mac;
        w.primary = primary.to_owned();
        w.backup = backup.to_owned();
        w.retransmit = cfg.retransmit;
        w.echo_interval = cfg.echo_interval;
        w.image_data_start_timeout = cfg.image_data_start_timeout;
        w.retry_interval = cfg.retry_interval;
        w.reset_delay = cfg.reset_delay;
        w.sink = if cfg.store.is_some() {
            ImageSink::Memory
        } else {
            ImageSink::HashOnly
        };
        w.crash_after_bytes = crash;
        w.first_seq = first_seq;
        w
    }

    async fn bind(&self) -> Result<UdpSocket, FleetError> {
        let controller = self.cfg.controller;
        let local: SocketAddr = if controller.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let socket = UdpSocket::bind(local).await;
        let socket = match socket {
            Ok(s) => s.connect(controller).await.map(|()| s),
            Err(e) => Err(e),
        };
        socket.map_err(|source| FleetError::Socket {
            ap: self.id.name.clone(),
            controller,
            source,
        })
    }

    /// Runs lives until stopped: each crash is followed by a reboot on a new socket.
    async fn run(mut self) -> Result<ApReport, FleetError> {
        // However this task ends (an error, a panic), the fleet stops rather than wait for
        // an AP that will never be done.
        let _stop_fleet = self.stop.clone().drop_guard();
        let mut primary = self.cfg.primary.clone();
        let mut backup = self.cfg.backup.clone();
        // Real APs do not all start at 0: a per-AP number exercises the controller's
        // handling of every value and of the wrap (it is the same for the same seed).
        let mut first_seq = (self.rng.next_u64() >> 56) as u8;
        let mut crash = self.cfg.faults.crash_after_bytes;
        loop {
            let socket = self.bind().await?;
            let cfg = self.wtp_config(&primary, &backup, first_seq, crash.take());
            let mut wtp = Wtp::new(cfg, Instant::now()).map_err(|source| FleetError::Ap {
                ap: self.id.name.clone(),
                source,
            })?;
            self.c.image_requests = 0;
            let end = self.drive(&mut wtp, &socket).await?;
            drop(socket);
            let stats = wtp.stats();
            if matches!(end, LifeEnd::Stopped) {
                return Ok(self.report(&wtp));
            }
            // Crashed: count it, wait for the "reboot", then a new life continues the
            // sequence numbers and keeps the images.
            self.c.reboots += 1;
            if let Some(s) = self.ap_status() {
                s.reboots.fetch_add(1, Ordering::Relaxed);
            }
            self.line(&format!(
                "Rebooting in {} ms, then joining from a new socket (fault injection)",
                self.cfg.reset_delay.as_millis()
            ));
            let stop = self.stop.clone();
            tokio::select! {
                () = stop.cancelled() => return Ok(self.report(&wtp)),
                () = tokio::time::sleep(self.cfg.reset_delay) => {}
            }
            first_seq = seq_after(
                first_seq,
                stats.joins + stats.echoes + self.c.image_requests,
            );
            self.c.bytes_before += stats.image_bytes;
            self.c.retransmissions_before += stats.retransmissions;
            self.c.joins_before += stats.joins;
            primary.clone_from(&wtp.primary().version);
            backup.clone_from(&wtp.backup().version);
            self.last_state = None;
        }
    }

    /// One life: until stopped or crashed.
    async fn drive(&mut self, wtp: &mut Wtp, socket: &UdpSocket) -> Result<LifeEnd, FleetError> {
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        let stop = self.stop.clone();
        loop {
            self.flush(wtp, socket).await;
            self.drain_events(wtp).await?;
            self.publish(wtp);
            if self.timing.verified.is_none() && self.is_verified(wtp) {
                self.timing.on_verified(Instant::now());
            }
            if wtp.is_crashed() {
                return Ok(LifeEnd::Crashed);
            }
            let wake = match self.stall {
                StallPhase::Silent(until) => {
                    Some(wtp.poll_timeout().map_or(until, |t| t.min(until)))
                }
                StallPhase::Off | StallPhase::Armed(_) => wtp.poll_timeout(),
            };
            buf.clear();
            let woke = tokio::select! {
                () = stop.cancelled() => Wake::Stop,
                got = socket.recv_buf(&mut buf) => match got {
                    Ok(_) => Wake::Datagram,
                    // An ICMP error (nothing listening yet): the timers retry.
                    Err(_) => continue,
                },
                () = sleep_until(wake) => Wake::Timer,
            };
            let now = Instant::now();
            if let StallPhase::Silent(until) = self.stall
                && now >= until
            {
                self.stall = StallPhase::Off;
                self.line("Link back after the stall (fault injection)");
            }
            match woke {
                Wake::Stop => return Ok(LifeEnd::Stopped),
                Wake::Datagram => self.on_datagram(wtp, now, &buf),
                Wake::Timer => wtp.handle_timeout(now),
            }
        }
    }

    fn silent(&self) -> bool {
        matches!(self.stall, StallPhase::Silent(_))
    }

    fn on_datagram(&mut self, wtp: &mut Wtp, now: Instant, datagram: &[u8]) {
        if self.silent() {
            self.c.dropped += 1;
            return;
        }
        let fate = self.cfg.faults.fate(&mut self.rng);
        if fate == Fate::Drop {
            self.c.dropped += 1;
            return;
        }
        if wtp.state() == CapwapState::Join
            && let Some(version) = join_response_version(datagram)
        {
            self.peeked = Some(version);
        }
        wtp.handle_datagram(now, datagram);
        self.c.received += 1;
        if fate == Fate::Twice {
            wtp.handle_datagram(now, datagram);
            self.c.received += 1;
            self.c.duplicated += 1;
        }
        if let StallPhase::Armed(stall) = self.stall
            && self.c.bytes_before + wtp.stats().image_bytes >= stall.after_bytes
        {
            self.stall = StallPhase::Silent(now + stall.duration);
            self.c.stalls += 1;
            self.line(&format!(
                "Link silent for {} ms after {} image bytes (fault injection)",
                stall.duration.as_millis(),
                self.c.bytes_before + wtp.stats().image_bytes
            ));
        }
    }

    /// Sends what the AP has to send, through the faults.
    async fn flush(&mut self, wtp: &mut Wtp, socket: &UdpSocket) {
        let silent = self.silent();
        while let Some(d) = wtp.poll_transmit() {
            if silent {
                self.c.dropped += 1;
                continue;
            }
            let times = match self.cfg.faults.fate(&mut self.rng) {
                Fate::Drop => {
                    self.c.dropped += 1;
                    continue;
                }
                Fate::Deliver => 1,
                Fate::Twice => {
                    self.c.duplicated += 1;
                    2
                }
            };
            for _ in 0..times {
                // A failed send is a lost datagram: the retransmission timers cover it.
                if socket.send(d).await.is_ok() {
                    self.c.sent += 1;
                }
            }
        }
    }

    /// Passes the AP's events on as lines (a State line only when the state changed) and
    /// acts on the few the shell cares about.
    async fn drain_events(&mut self, wtp: &mut Wtp) -> Result<(), FleetError> {
        while let Some(e) = wtp.poll_event() {
            self.timing.on_event(Instant::now(), &e);
            match &e {
                WtpEvent::State(s) => {
                    if self.last_state == Some(*s) {
                        continue;
                    }
                    self.last_state = Some(*s);
                }
                WtpEvent::Joined { .. } => self.announced = Some(self.peeked.take().flatten()),
                WtpEvent::ImageDataRequestSent { .. } => self.c.image_requests += 1,
                WtpEvent::TransferSummary(s) => self.c.messages += s.messages,
                WtpEvent::TransferCompleted => {
                    self.c.transfers += 1;
                    if let Some(s) = self.ap_status() {
                        s.received.store(s.size(), Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            for line in e.lines() {
                self.line(&line);
            }
            if let WtpEvent::ImageStored { family, slot, .. } = &e
                && let Some(dir) = &self.cfg.store
                && let Some(bytes) = wtp.take_image_bytes(*slot)
            {
                let path = store_image(dir, &self.id.name, family, bytes).await?;
                self.line(&format!("Image {family} saved to {}", path.display()));
            }
        }
        Ok(())
    }

    /// In Run on the version the controller named (cheap: called after every datagram).
    fn is_verified(&self, wtp: &Wtp) -> bool {
        wtp.state() == CapwapState::Run
            && matches!(&self.announced, Some(Some(v)) if same_version(&wtp.primary().version, v))
    }

    /// Why the AP is not verified, or `None` when it is.
    fn problem(&self, wtp: &Wtp) -> Option<String> {
        let state = wtp.state();
        let primary = &wtp.primary().version;
        match &self.announced {
            None => Some(format!(
                "never joined the controller (CAPWAP state {state})"
            )),
            Some(None) => Some(format!(
                "the controller named no version in its Join Response (running {primary})"
            )),
            Some(Some(v)) if !same_version(primary, v) => Some(match wtp.progress() {
                Some(p) if p.size > 0 => format!(
                    "running {primary}, the controller named {v}: {} of {} bytes received (CAPWAP state {state})",
                    p.received, p.size
                ),
                _ => format!("running {primary}, the controller named {v} (CAPWAP state {state})"),
            }),
            Some(Some(_)) if state != CapwapState::Run => Some(format!(
                "on the controller's version but in CAPWAP state {state}"
            )),
            Some(Some(_)) => None,
        }
    }

    fn publish(&self, wtp: &Wtp) {
        let Some(s) = self.ap_status() else {
            return;
        };
        s.state.store(state_code(wtp.state()), Ordering::Relaxed);
        if let Some(p) = wtp.progress()
            && p.size > 0
        {
            s.size.store(p.size, Ordering::Relaxed);
            s.received.store(p.received, Ordering::Relaxed);
        }
        s.bytes.store(
            self.c.bytes_before + wtp.stats().image_bytes,
            Ordering::Relaxed,
        );
        let verified = self.is_verified(wtp);
        let nothing_named = wtp.state() == CapwapState::Run && self.announced == Some(None);
        self.status
            .set_done(self.id.index, verified || nothing_named, verified);
    }

    fn report(&self, wtp: &Wtp) -> ApReport {
        let stats = wtp.stats();
        let problem = self.problem(wtp);
        ApReport {
            name: self.id.name.clone(),
            model: self.id.model.clone(),
            family: self.id.family.clone(),
            mac: Mac(self.id.mac).to_string(),
            serial: self.id.serial.clone(),
            primary: wtp.primary().version.clone(),
            backup: wtp.backup().version.clone(),
            controller_version: self.announced.clone().flatten(),
            state: wtp.state().to_string(),
            verified: problem.is_none(),
            problem,
            bytes: self.c.bytes_before + stats.image_bytes,
            messages: self.c.messages,
            transfers: self.c.transfers,
            retransmissions: self.c.retransmissions_before + stats.retransmissions,
            joins: self.c.joins_before + stats.joins,
            reboots: self.c.reboots,
            stalls: self.c.stalls,
            datagrams_sent: self.c.sent,
            datagrams_received: self.c.received,
            dropped: self.c.dropped,
            duplicated: self.c.duplicated,
            transfer: self.timing.transfer,
            wait: self.timing.wait,
            joined_to_verified: self.timing.joined_to_verified(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes `bytes` to `dir/ap/family` through a temporary in the same folder and a rename,
/// so the file is either absent or whole.
async fn store_image(
    dir: &Path,
    ap: &str,
    family: &str,
    bytes: Vec<u8>,
) -> Result<PathBuf, FleetError> {
    let folder = dir.join(ap);
    let path = folder.join(family);
    let temporary = folder.join(format!(".{family}.partial"));
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || -> io::Result<()> {
        std::fs::create_dir_all(&folder)?;
        std::fs::write(&temporary, &bytes)?;
        std::fs::rename(&temporary, &target)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    match written {
        Ok(()) => Ok(path),
        Err(source) => Err(FleetError::Store { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::capwap::{Element, ImageIdentifier, ResultCode};
    use crate::flow::CISCO_VENDOR_ID;

    fn cfg(count: usize) -> FleetConfig {
        FleetConfig::new(([127, 0, 0, 1], 5246).into(), count)
    }

    #[test]
    fn the_generator_is_a_function_of_its_seed() {
        let draw = |mut p: Prng| (0..64).map(|_| p.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(Prng::new(7)), draw(Prng::new(7)));
        assert_ne!(draw(Prng::new(7)), draw(Prng::new(8)));
        assert_eq!(draw(Prng::for_ap(7, 3)), draw(Prng::for_ap(7, 3)));
        // Neighbouring APs, and the same AP under neighbouring seeds, get unrelated streams.
        let firsts: HashSet<u64> = (0..1000)
            .map(|i| Prng::for_ap(7, i).next_u64())
            .chain((0..1000).map(|s| Prng::for_ap(s, 0).next_u64()))
            .collect();
        assert_eq!(firsts.len(), 1999, "for_ap(7, 0) is in both halves");
        // SplitMix64's published first output for seed 0 (the reference implementation).
        assert_eq!(Prng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn floats_are_in_the_unit_interval_and_chance_honours_its_bounds() {
        let mut p = Prng::new(42);
        for _ in 0..10_000 {
            let x = p.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
        assert!((0..1000).all(|_| !p.chance(0.0)));
        assert!((0..1000).all(|_| p.chance(1.0)));
        assert!((0..1000).all(|_| !p.chance(f64::NAN)));
    }

    #[test]
    fn fates_follow_the_probabilities() {
        let faults = Faults {
            loss: 0.05,
            dup: 0.02,
            seed: 1,
            ..Faults::default()
        };
        let mut rng = Prng::for_ap(1, 0);
        let n = 200_000;
        let (mut dropped, mut twice) = (0u32, 0u32);
        for _ in 0..n {
            match faults.fate(&mut rng) {
                Fate::Drop => dropped += 1,
                Fate::Twice => twice += 1,
                Fate::Deliver => {}
            }
        }
        // Deterministic (fixed seed); the bounds are ±10 standard deviations anyway.
        let loss = f64::from(dropped) / f64::from(n);
        let dup = f64::from(twice) / f64::from(n);
        assert!((loss - 0.05).abs() < 0.005, "{loss}");
        assert!((dup - 0.95 * 0.02).abs() < 0.004, "{dup}");
        // Same seed, same decisions.
        let run = || {
            let mut rng = Prng::for_ap(1, 5);
            (0..1000).map(|_| faults.fate(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        // No faults: every datagram passes once.
        let none = Faults::default();
        let mut rng = Prng::new(3);
        assert!((0..10_000).all(|_| none.fate(&mut rng) == Fate::Deliver));
    }

    #[test]
    fn default_models_cover_the_seven_families_in_order() {
        let families: Vec<String> = DEFAULT_MODELS
            .iter()
            .map(|m| match bundle_tool::models::which(m) {
                Ok(found) => found.row.family.clone(),
                Err(e) => panic!("{m}: {e}"),
            })
            .collect();
        assert_eq!(
            families,
            [
                "ap1g4", "ap1g5", "ap1g6", "ap1g6a", "ap1g7", "ap1g8", "ap3g3"
            ]
        );
    }

    #[test]
    fn the_plan_names_numbers_and_cycles() {
        let mut c = cfg(1000);
        c.models = vec![
            "C9105AXI-E".into(),
            "C9120AXI-B".into(),
            "AIR-AP2802I-B-K9".into(),
        ];
        let Ok(plan) = c.plan() else { panic!("plan") };
        assert_eq!(plan.len(), 1000);
        assert_eq!(plan[0].name, "AP-0001");
        assert_eq!(plan[999].name, "AP-1000");
        assert_eq!(plan[0].mac, [0x00, 0xa2, 0xee, 0x00, 0x00, 0x01]);
        assert_eq!(Mac(plan[0].mac).to_string(), "00a2.ee00.0001");
        assert_eq!(plan[0].serial, "FGL24010001");
        let fam: Vec<&str> = plan[..4].iter().map(|a| a.family.as_str()).collect();
        assert_eq!(fam, ["ap1g8", "ap1g7", "ap3g3", "ap1g8"]);
        assert_eq!(plan[4].model, "C9120AXI-B");
        let unique =
            |f: fn(&ApIdentity) -> String| plan.iter().map(f).collect::<HashSet<_>>().len();
        assert_eq!(unique(|a| a.name.clone()), 1000);
        assert_eq!(unique(|a| format!("{:?}", a.mac)), 1000);
        assert_eq!(unique(|a| a.serial.clone()), 1000);
        // The largest fleet still has distinct identities at its end.
        let mut big = cfg(MAX_APS);
        big.name_prefix = String::new();
        let Ok(plan) = big.plan() else { panic!("plan") };
        let last = &plan[MAX_APS - 1];
        assert_eq!(last.name, "65535");
        assert_eq!(last.serial, "FGL2401FFFF");
        assert_eq!(last.mac, [0x00, 0xa2, 0xee, 0x00, 0xff, 0xff]);
    }

    #[test]
    fn bad_configs_are_refused_with_what_is_wrong() {
        assert!(matches!(cfg(0).plan(), Err(FleetError::Count { count: 0 })));
        assert!(matches!(
            cfg(MAX_APS + 1).plan(),
            Err(FleetError::Count { .. })
        ));
        for bad in [1.0, -0.1, f64::NAN, f64::INFINITY] {
            let mut c = cfg(1);
            c.faults.loss = bad;
            assert!(
                matches!(c.plan(), Err(FleetError::Probability { what: "loss", .. })),
                "{bad}"
            );
            let mut c = cfg(1);
            c.faults.dup = bad;
            assert!(matches!(
                c.plan(),
                Err(FleetError::Probability { what: "dup", .. })
            ));
        }
        let mut c = cfg(1);
        c.models = vec!["C9105AXI-E".into(), "AIR-CAP3702I-E-K9".into()];
        match c.plan() {
            Err(e @ FleetError::UnknownModel { .. }) => {
                assert!(e.to_string().contains("AIR-CAP3702I-E-K9"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let mut c = cfg(1);
        c.models.clear();
        assert!(matches!(c.plan(), Err(FleetError::NoModels)));
        for prefix in ["../x", "a/b", ".hidden", "AP 1", "é"] {
            let mut c = cfg(1);
            c.name_prefix = prefix.into();
            assert!(
                matches!(c.plan(), Err(FleetError::NamePrefix(_))),
                "{prefix}"
            );
        }
    }

    #[test]
    fn the_join_responses_version_is_read_and_nothing_else() {
        let with = |result: ResultCode, version: Option<&str>| {
            let mut elements = vec![Element::ResultCode(result)];
            if let Some(v) = version {
                elements.push(Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: CISCO_VENDOR_ID,
                    data: v,
                }));
            }
            match Message::new(MessageType::JOIN_RESPONSE, 9, elements).to_vec() {
                Ok(d) => d,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            join_response_version(&with(ResultCode::SUCCESS, Some("17.9.4.27"))),
            Some(Some("17.9.4.27".into()))
        );
        assert_eq!(
            join_response_version(&with(ResultCode::SUCCESS, None)),
            Some(None)
        );
        assert_eq!(
            join_response_version(&with(
                ResultCode::JOIN_FAILURE_RESOURCE_DEPLETION,
                Some("17.9.4.27")
            )),
            None
        );
        let Ok(echo) = Message::new(MessageType::ECHO_RESPONSE, 9, Vec::new()).to_vec() else {
            panic!("echo")
        };
        assert_eq!(join_response_version(&echo), None);
        assert_eq!(join_response_version(b""), None);
        assert_eq!(join_response_version(&[0xff; 64]), None);
    }

    #[test]
    fn versions_compare_as_numbers_and_sequences_wrap() {
        assert!(same_version("17.09.4.27", "17.9.4.27"));
        assert!(!same_version("17.9.4.27", "17.3.3.26"));
        assert!(same_version(" lab ", "lab"));
        assert_eq!(seq_after(250, 10), 4);
        assert_eq!(seq_after(0, 256), 0);
        assert_eq!(seq_after(7, 0), 7);
    }

    #[test]
    fn status_counts_done_aps_per_family() {
        let mut c = cfg(4);
        c.models = vec!["C9105AXI-E".into(), "C9120AXI-B".into()];
        let Ok(status) = FleetStatus::new(&c) else {
            panic!("status")
        };
        let Ok(plan) = c.plan() else { panic!("plan") };
        assert!(status.matches(&plan));
        assert!(!status.matches(&plan[..3]));
        status.set_done(0, true, true);
        status.set_done(0, true, true);
        status.set_done(2, true, false);
        status.set_done(3, false, false);
        assert_eq!(status.done(), 2);
        assert_eq!(status.verified(), 1);
        status.set_done(2, false, false);
        assert_eq!(status.done(), 1);
        status.set_done(99, true, true);
        assert_eq!(status.done(), 1);
        let f = status.families();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].family.as_str(), f[0].aps, f[0].done), ("ap1g7", 2, 0));
        assert_eq!((f[1].family.as_str(), f[1].aps, f[1].done), ("ap1g8", 2, 1));
        assert_eq!(status.aps()[0].state(), None);
        assert_eq!(
            state_from_code(state_code(CapwapState::ImageData)),
            Some(CapwapState::ImageData)
        );
    }

    #[test]
    fn timing_measures_the_last_completed_transfer_and_join_to_verified() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let joined = WtpEvent::Joined {
            ac_name: "airlift".into(),
            ac: "127.0.0.1".into(),
        };
        let asked = WtpEvent::ImageDataRequestSent {
            ac: "127.0.0.1".into(),
            family: "ap1g8".into(),
        };
        let announced = WtpEvent::ImageDataResponse {
            ac: "127.0.0.1".into(),
            size: 1000,
            md5: [0; 16],
        };
        let mut t = Timing::default();
        assert_eq!(t.joined_to_verified(), None);
        t.on_event(at(100), &joined);
        t.on_event(at(110), &asked);
        t.on_event(at(400), &announced);
        // A transfer that did not complete (the AP rejoined) leaves nothing behind…
        t.on_event(at(900), &joined);
        t.on_event(at(1000), &asked);
        assert_eq!((t.transfer, t.wait), (None, None));
        // …and a completion without an announced transfer is not one.
        t.on_event(at(1100), &WtpEvent::TransferCompleted);
        assert_eq!(t.transfer, None);
        t.on_event(at(1000), &asked);
        t.on_event(at(1250), &announced);
        t.on_event(at(3250), &WtpEvent::TransferCompleted);
        assert_eq!(t.transfer, Some(Duration::from_millis(2000)));
        assert_eq!(t.wait, Some(Duration::from_millis(250)));
        // Verified after the reboot onto the new image: counted from the first join, once.
        t.on_event(at(3800), &joined);
        t.on_verified(at(3900));
        t.on_verified(at(5000));
        assert_eq!(t.joined_to_verified(), Some(Duration::from_millis(3800)));
        // A later predownload replaces the last transfer's numbers.
        t.on_event(at(6000), &asked);
        t.on_event(at(6010), &announced);
        t.on_event(at(6510), &WtpEvent::TransferCompleted);
        assert_eq!(t.transfer, Some(Duration::from_millis(500)));
        assert_eq!(t.wait, Some(Duration::from_millis(10)));
        // Verified without ever joining (cannot happen) gives no duration.
        let mut never = Timing::default();
        never.on_verified(at(1));
        assert_eq!(never.joined_to_verified(), None);
    }

    #[test]
    fn the_summary_sums_families_and_names_who_is_not_verified() {
        let ap = |name: &str, family: &str, verified: bool| ApReport {
            name: name.into(),
            model: "m".into(),
            family: family.into(),
            mac: String::new(),
            serial: String::new(),
            primary: "17.9.4.27".into(),
            backup: DEFAULT_PRIMARY.into(),
            controller_version: Some("17.9.4.27".into()),
            state: "Run".into(),
            verified,
            problem: (!verified).then(|| "never joined the controller".into()),
            bytes: 100,
            messages: 2,
            transfers: 1,
            retransmissions: 1,
            joins: 2,
            reboots: 1,
            stalls: 0,
            datagrams_sent: 0,
            datagrams_received: 0,
            dropped: 0,
            duplicated: 0,
            transfer: verified.then_some(Duration::from_millis(250)),
            wait: None,
            joined_to_verified: None,
        };
        let r = FleetReport::new(
            vec![
                ap("AP-0001", "ap1g8", true),
                ap("AP-0002", "ap1g7", true),
                ap("AP-0003", "ap1g8", false),
            ],
            Duration::from_millis(1500),
        );
        assert!(!r.all_verified);
        assert_eq!(r.families[1].family, "ap1g8");
        assert_eq!((r.families[1].aps, r.families[1].verified), (2, 1));
        assert_eq!(r.totals.bytes, 300);
        assert_eq!(r.totals.reboots, 3);
        let text = r.to_string();
        assert!(
            text.contains("2 of 3 APs verified the controller's version in 1.5 s"),
            "{text}"
        );
        assert!(
            text.contains("AP-0003: never joined the controller"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("total") && l.contains("300")),
            "{text}"
        );
        let Ok(json) = serde_json::to_value(&r) else {
            panic!("json")
        };
        assert_eq!(json["elapsed_s"], 1.5);
        assert_eq!(json["aps"][0]["transfer_s"], 0.25);
        assert!(json["aps"][2]["transfer_s"].is_null());
        assert!(json["aps"][0]["wait_s"].is_null());
        assert_eq!(json["totals"]["aps"], 3);
        assert!(!FleetReport::new(Vec::new(), Duration::ZERO).all_verified);
    }
}
