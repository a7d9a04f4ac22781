//! The tokio shells: [`serve`] runs the controller's sessions on one bound UDP socket, and
//! [`run_ap`] runs one simulated AP on its own socket. Both only move datagrams and timers
//! between the socket and the sans-IO state machines ([`AcSession`], [`Wtp`]); all protocol
//! decisions live there.
//!
//! The controller asks [`Images`] for a family's image when an AP wants it (each family is
//! fetched once, whatever the number of APs), admits transfers by [`Admission`] (all at once
//! up to a limit, or in sets like the 9800's sets of 16; the others wait their turn), logs
//! the controller's lines and keeps one [`ApImageRow`] per AP name for `show ap image`.
//! [`Command`]s arrive on a channel: predownload, activate, and a new release.
//!
//! Retries: at join, the AP itself comes back after its retry interval (RFC 5415's
//! SilentInterval) and asks again; [`Images`] refetches a failed family only once the retry
//! interval has passed, so the row's Next Retry Time is when the next fetch may happen. A
//! failed predownload is asked again by the controller after the retry interval. Either way,
//! past `retry.count` retries the AP is left failed until the release changes (a reload or a
//! newly staged version starts the count over). The family an AP names is checked to be an
//! image family name before anything is fetched.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use relay::ErrorKind;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ac::{AcConfig, AcEvent, AcSession, ImageToSend, discovery_response};
use crate::capwap::{Header, MessageType, RawMessage, Reassembler, Reassembly, ReassemblyLimits};
use crate::events::{ApRef, Event, Mac};
use crate::images::{EventSink, Images};
use crate::show::{ApImageRow, DownloadState, PredownloadState};
use crate::wtp::{Wtp, WtpEvent};

/// How many transfers run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// All APs at once, at most this many (`parallel = true`, `max_concurrent`).
    Parallel(usize),
    /// In sets of this many: a set starts when the previous one has finished
    /// (`parallel = false`, `set_size`).
    Sets(usize),
}

/// How failed predownloads are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before retrying (and before refetching a family that failed).
    pub interval: Duration,
    /// Retries of a failed predownload.
    pub count: u32,
}

/// What [`serve`] needs.
pub struct Controller {
    /// Session settings (its `version` is the release's).
    pub ac: AcConfig,
    /// Transfers running at once.
    pub admission: Admission,
    /// Retries.
    pub retry: RetryPolicy,
    /// The release's images.
    pub images: Arc<Images>,
    /// The log.
    pub log: EventSink,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("ac", &self.ac)
            .field("admission", &self.admission)
            .field("retry", &self.retry)
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

/// An order for a running [`serve`].
#[derive(Debug)]
pub enum Command {
    /// Predownload the network's version to every joined AP that has it neither as primary
    /// nor as backup; answers how many were asked.
    Predownload(Option<oneshot::Sender<usize>>),
    /// Activate it (Reset Request) on every joined AP whose backup it is; answers how many
    /// were asked.
    Activate(Option<oneshot::Sender<usize>>),
    /// A new release: the network runs its version from now on (later joins download it);
    /// with `predownload`, running APs are asked to predownload it at once.
    Release {
        /// Its images.
        images: Arc<Images>,
        /// Predownload it now.
        predownload: bool,
    },
}

/// Most AP sessions at once; Join Requests beyond are not answered (the APs try again).
pub const MAX_SESSIONS: usize = 65_536;

/// Datagrams read per wake-up beyond the first, before timers and commands get a turn.
const DRAIN: usize = 64;

/// `show ap image` rows, by AP name.
pub type Status = Arc<Mutex<BTreeMap<String, ApImageRow>>>;

/// An image fetch's outcome, for the AP that waits for it.
struct Fetched {
    peer: SocketAddr,
    image: Result<ImageToSend, String>,
    /// The server has no such file: the family is not supported there.
    missing: bool,
}

struct Shell {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    c: Controller,
    sessions: HashMap<SocketAddr, AcSession>,
    timers: Wakeups,
    /// Predownload retries due.
    retries: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// Who may fetch and send now.
    gate: Gate,
    ready: mpsc::UnboundedSender<Fetched>,
    /// The session whose rows an AP name's row follows (an AP that rebooted joins from a
    /// new address; its old session must not touch the new row).
    owner: HashMap<String, SocketAddr>,
    /// Transfer start times, for the ETA, and the percent the row shows.
    started: HashMap<SocketAddr, (Instant, Option<u8>)>,
    /// The last fetch for the AP found no such file.
    missing: HashSet<SocketAddr>,
    /// When each AP's next failure at join counts as a retry again, by AP name.
    retry_at: HashMap<String, Instant>,
    /// Fragmented messages being put together, by sender.
    reassembler: Reassembler<SocketAddr>,
    status: Status,
}

/// Serves CAPWAP on `socket` until `shutdown`, obeying `commands`.
pub async fn serve(
    socket: UdpSocket,
    c: Controller,
    status: Status,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let (ready, mut images) = mpsc::unbounded_channel();
    let gate = Gate::new(c.admission);
    let mut sh = Shell {
        socket: Arc::new(socket),
        local,
        c,
        sessions: HashMap::new(),
        timers: Wakeups::default(),
        retries: BinaryHeap::new(),
        gate,
        ready,
        owner: HashMap::new(),
        started: HashMap::new(),
        missing: HashSet::new(),
        retry_at: HashMap::new(),
        reassembler: Reassembler::new(ReassemblyLimits {
            max_message_len: usize::from(u16::MAX) + 16,
            max_partial: 256,
            max_partial_per_peer: 2,
            timeout: Duration::from_secs(30),
        }),
        status,
    };
    let mut buf = vec![0u8; 65_536];
    let mut commands_open = true;
    loop {
        let next = [
            sh.timers.next(),
            sh.retries.peek().map(|Reverse((t, _))| *t),
            sh.reassembler.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = tokio::time::sleep_until(
            next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .into(),
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            got = sh.socket.recv_from(&mut buf) => {
                // An ICMP error surfacing on the socket is not fatal to the server.
                if let Ok((n, peer)) = got {
                    sh.datagram(peer, &buf[..n]).await;
                }
                // Then whatever else is already queued, without going back to the reactor
                // for each (a busy controller gets a datagram per block from every AP).
                for _ in 0..DRAIN {
                    match sh.socket.try_recv_from(&mut buf) {
                        Ok((n, peer)) => sh.datagram(peer, &buf[..n]).await,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {}
                    }
                }
            }
            Some(f) = images.recv() => {
                let peer = f.peer;
                match sh.sessions.get_mut(&peer) {
                    Some(s) if s.is_transferring() => {
                        // A late result (the transfer already runs) changes nothing.
                        if s.image_ready(Instant::now(), f.image) {
                            if f.missing {
                                sh.missing.insert(peer);
                            } else {
                                sh.missing.remove(&peer);
                            }
                        }
                    }
                    // The AP left or started over meanwhile: its turn is over.
                    _ => sh.release(peer),
                }
                sh.process(peer).await;
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(cmd) => sh.command(cmd).await,
                None => commands_open = false,
            },
            () = sleep => {
                let now = Instant::now();
                sh.reassembler.handle_timeout(now);
                while let Some(peer) = sh.timers.pop_due(now) {
                    let Some(s) = sh.sessions.get_mut(&peer) else {
                        continue;
                    };
                    match s.poll_timeout() {
                        Some(d) if d <= now => {
                            s.handle_timeout(now);
                            sh.process(peer).await;
                        }
                        // The deadline moved later since this wake-up was set.
                        Some(d) => sh.timers.arm(peer, d),
                        None => {}
                    }
                }
                while let Some(Reverse((t, peer))) = sh.retries.peek().copied() {
                    if t > now {
                        break;
                    }
                    sh.retries.pop();
                    if sh.predownload_one(now, peer) {
                        sh.process(peer).await;
                    }
                }
            }
        }
    }
}

/// Whether a datagram from an unknown address may open a session: a well-framed Join
/// Request.
pub fn opens_session(datagram: &[u8]) -> bool {
    RawMessage::decode(datagram).is_ok_and(|m| m.control.message_type == MessageType::JOIN_REQUEST)
}

/// Whether a datagram is a fragment of a larger message (F bit set).
fn is_fragment(datagram: &[u8]) -> bool {
    matches!(Header::decode(datagram), Ok((h, _)) if h.fragment.is_some())
}

/// `HH:MM:SS` (UTC) of `at`, for Next Retry Time.
fn clock(at: Instant) -> String {
    let wall = SystemTime::now() + at.saturating_duration_since(Instant::now());
    let secs = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Sessions' timer wake-ups, at most one live entry per session. A deadline that moves later
/// (every answered block moves it) keeps the earlier entry, which re-arms at the session's
/// real deadline when it fires; one that moves earlier supersedes it (the old entry is
/// skipped when it comes up). The heap holds about one entry per session, whatever the
/// traffic: not one per datagram.
#[derive(Debug, Default)]
struct Wakeups {
    heap: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    armed: HashMap<SocketAddr, Instant>,
}

impl Wakeups {
    /// Wake up for `peer` at `at`, unless a wake-up at or before it is already set.
    fn arm(&mut self, peer: SocketAddr, at: Instant) {
        if self.armed.get(&peer).is_some_and(|&a| a <= at) {
            return;
        }
        self.armed.insert(peer, at);
        self.heap.push(Reverse((at, peer)));
    }

    /// The earliest entry (possibly a superseded one: an early wake-up costs nothing).
    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next session whose wake-up is due, if any.
    fn pop_due(&mut self, now: Instant) -> Option<SocketAddr> {
        while let Some(Reverse((t, peer))) = self.heap.peek().copied() {
            if t > now {
                return None;
            }
            self.heap.pop();
            if self.armed.get(&peer) == Some(&t) {
                self.armed.remove(&peer);
                return Some(peer);
            }
        }
        None
    }

    /// `peer`'s session is over.
    fn forget(&mut self, peer: SocketAddr) {
        self.armed.remove(&peer);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// The admission policy over the APs that want an image (sans-IO): who fetches and sends
/// now, who waits, in arrival order.
#[derive(Debug)]
struct Gate {
    admission: Admission,
    /// APs whose image is being fetched or sent.
    active: HashSet<SocketAddr>,
    /// Members admitted to the current set ([`Admission::Sets`]).
    set_members: usize,
    waiting: VecDeque<(SocketAddr, String)>,
}

impl Gate {
    fn new(admission: Admission) -> Gate {
        Gate {
            admission,
            active: HashSet::new(),
            set_members: 0,
            waiting: VecDeque::new(),
        }
    }

    fn admits(&self) -> bool {
        match self.admission {
            Admission::Parallel(max) => self.active.len() < max.max(1),
            Admission::Sets(size) => self.set_members < size.max(1),
        }
    }

    /// `peer` wants `family`: returned if it may start now, else queued. An AP that asks
    /// again while it waits (it gave up waiting for an answer and rejoined) keeps its place.
    fn want(&mut self, peer: SocketAddr, family: String) -> Option<(SocketAddr, String)> {
        if let Some(entry) = self.waiting.iter_mut().find(|(p, _)| *p == peer) {
            entry.1 = family;
            return None;
        }
        if self.active.contains(&peer) || !self.admits() {
            self.waiting.push_back((peer, family));
            return None;
        }
        self.active.insert(peer);
        self.set_members += 1;
        Some((peer, family))
    }

    /// `peer`'s turn is over: returns who starts now. In sets, the next set starts when the
    /// last member of the current one is done. A waiting AP keeps its place (when its turn
    /// comes and it no longer wants an image, the shell releases it at once).
    fn release(&mut self, peer: SocketAddr) -> Vec<(SocketAddr, String)> {
        if !self.active.remove(&peer) {
            return Vec::new();
        }
        if self.active.is_empty() {
            self.set_members = 0;
        }
        let mut admitted = Vec::new();
        while self.admits() {
            let Some((next, family)) = self.waiting.pop_front() else {
                break;
            };
            self.active.insert(next);
            self.set_members += 1;
            admitted.push((next, family));
        }
        admitted
    }

    /// Whether `peer` waits for its turn.
    fn is_waiting(&self, peer: SocketAddr) -> bool {
        self.waiting.iter().any(|(p, _)| *p == peer)
    }

    /// `peer` is gone: out of the queue too.
    fn remove(&mut self, peer: SocketAddr) -> Vec<(SocketAddr, String)> {
        self.waiting.retain(|(p, _)| *p != peer);
        self.release(peer)
    }
}

impl Shell {
    /// One datagram from `peer`.
    async fn datagram(&mut self, peer: SocketAddr, bytes: &[u8]) {
        let whole;
        let datagram = if is_fragment(bytes) {
            // Bounded: a few partial messages per peer and in all, each expiring.
            match self.reassembler.push(Instant::now(), &peer, bytes) {
                Ok(Reassembly::Complete(w)) => {
                    whole = w;
                    &whole[..]
                }
                _ => return,
            }
        } else {
            bytes
        };
        // Only a Join Request opens a session: a Discovery Request is answered without one,
        // and anything else from a stranger (garbage, a late response from a forgotten AP)
        // costs no memory.
        if !self.sessions.contains_key(&peer) {
            if !opens_session(datagram) {
                if let Some(reply) = discovery_response(&self.c.ac, datagram) {
                    let _ = self.socket.send_to(&reply, peer).await;
                }
                return;
            }
            if self.sessions.len() >= MAX_SESSIONS {
                return;
            }
        }
        let now = Instant::now();
        let s = self
            .sessions
            .entry(peer)
            .or_insert_with(|| AcSession::new(self.c.ac.clone()));
        s.handle_datagram(now, datagram);
        self.process(peer).await;
    }

    fn ap_ref(&self, peer: SocketAddr) -> Option<ApRef> {
        let info = self.sessions.get(&peer)?.info()?;
        Some(ApRef {
            name: info.name.clone(),
            mac: Mac(info.mac.unwrap_or_default()),
            ap: peer,
            ac: self.local,
        })
    }

    /// The AP name whose row `peer`'s session owns.
    fn owned_name(&self, peer: SocketAddr) -> Option<&str> {
        let name = self.sessions.get(&peer)?.info()?.name.as_str();
        (self.owner.get(name) == Some(&peer)).then_some(name)
    }

    fn row<T>(&self, peer: SocketAddr, f: impl FnOnce(&mut ApImageRow) -> T) -> Option<T> {
        let name = self.owned_name(peer)?;
        let mut rows = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        rows.get_mut(name).map(f)
    }

    fn version(&self) -> &str {
        &self.c.ac.version
    }

    /// Starts the fetch of `family` for `peer`, or queues it as the admission says.
    fn want(&mut self, peer: SocketAddr, family: String) {
        if let Some((peer, family)) = self.gate.want(peer, family) {
            self.fetch(peer, family);
        }
    }

    fn fetch(&self, peer: SocketAddr, family: String) {
        let images = Arc::clone(&self.c.images);
        let ready = self.ready.clone();
        tokio::spawn(async move {
            let (image, missing) = match images.get(&family).await {
                Ok(img) => (
                    Ok(ImageToSend {
                        family: img.family.clone(),
                        bytes: Arc::clone(&img.bytes),
                        md5: img.md5,
                    }),
                    false,
                ),
                Err(e) => (Err(e.to_string()), e.kind == ErrorKind::NotFound),
            };
            let _ = ready.send(Fetched {
                peer,
                image,
                missing,
            });
        });
    }

    /// `peer`'s turn is over: whoever the admission lets in next starts.
    fn release(&mut self, peer: SocketAddr) {
        for (next, family) in self.gate.release(peer) {
            self.fetch(next, family);
        }
    }

    /// `peer` is gone: out of the queue, and whoever is next starts.
    fn remove(&mut self, peer: SocketAddr) {
        for (next, family) in self.gate.remove(peer) {
            self.fetch(next, family);
        }
    }

    async fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Predownload(reply) => {
                let n = self.predownload_all(now).await;
                if let Some(r) = reply {
                    let _ = r.send(n);
                }
            }
            Command::Activate(reply) => {
                let peers: Vec<SocketAddr> = self.sessions.keys().copied().collect();
                let mut n = 0;
                for peer in peers {
                    let version = self.version().to_owned();
                    let eligible = self
                        .row(peer, |r| r.backup == version && r.primary != version)
                        .unwrap_or(false);
                    if eligible
                        && let Some(s) = self.sessions.get_mut(&peer)
                        && s.activate(now).is_ok()
                    {
                        n += 1;
                        self.process(peer).await;
                    }
                }
                if let Some(r) = reply {
                    let _ = r.send(n);
                }
            }
            Command::Release {
                images,
                predownload,
            } => {
                let version = images.version().to_string();
                self.c.ac.version.clone_from(&version);
                self.c.images = images;
                for s in self.sessions.values_mut() {
                    s.set_version(&version);
                }
                {
                    let mut rows = self.status.lock().unwrap_or_else(PoisonError::into_inner);
                    // A new release (or profile) starts the retries over.
                    for r in rows.values_mut() {
                        if r.predownload_version.as_deref() != Some(version.as_str()) {
                            r.predownload = PredownloadState::None;
                            r.predownload_version = None;
                        }
                        r.retry_count = 0;
                        r.next_retry = None;
                    }
                    self.retry_at.clear();
                }
                if predownload {
                    self.predownload_all(now).await;
                }
            }
        }
    }

    async fn predownload_all(&mut self, now: Instant) -> usize {
        let peers: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        let mut n = 0;
        for peer in peers {
            if self.predownload_one(now, peer) {
                n += 1;
                self.process(peer).await;
            }
        }
        n
    }

    /// Asks `peer` to predownload the network's version if it needs it; whether it was asked.
    fn predownload_one(&mut self, now: Instant, peer: SocketAddr) -> bool {
        let version = self.version().to_owned();
        let needs = self
            .row(peer, |r| {
                r.primary != version
                    && r.backup != version
                    && !matches!(
                        r.predownload,
                        PredownloadState::Initiated | PredownloadState::Predownloading
                    )
            })
            .unwrap_or(false);
        let Some(s) = self.sessions.get_mut(&peer) else {
            return false;
        };
        if !needs || s.predownload(now).is_err() {
            return false;
        }
        self.row(peer, |r| {
            r.predownload = PredownloadState::Initiated;
            r.predownload_version = Some(version);
            r.next_retry = None;
        });
        true
    }

    /// Handles a session's events, sends its datagrams and re-arms its timer.
    async fn process(&mut self, peer: SocketAddr) {
        // Handling an event may make more (a refused image request ends its transfer).
        loop {
            let mut events = Vec::new();
            if let Some(s) = self.sessions.get_mut(&peer) {
                while let Some(e) = s.poll_event() {
                    events.push(e);
                }
            }
            if events.is_empty() {
                break;
            }
            for e in events {
                self.on_event(peer, e);
            }
        }
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        while let Some(d) = s.poll_transmit() {
            // A lost send is a lost datagram: the retransmission timers cover it.
            let _ = self.socket.send_to(d, peer).await;
        }
        if let Some(t) = s.poll_timeout() {
            self.timers.arm(peer, t);
        }
        let progress = s.progress();
        let gone = s.is_gone();
        // The row follows each percent (not each block: that would take the rows' lock for
        // every datagram).
        if let Some((done, total)) = progress
            && let Some((since, shown)) = self.started.get_mut(&peer)
        {
            let percent = u8::try_from(done * 100 / total.max(1)).unwrap_or(100);
            if *shown != Some(percent) {
                *shown = Some(percent);
                let spent = since.elapsed().as_secs_f64();
                let eta_s =
                    (done > 0).then(|| (spent * (total - done) as f64 / done as f64).ceil() as u64);
                self.row(peer, |r| {
                    r.percent = Some(percent);
                    r.eta_s = eta_s;
                });
            }
        }
        if gone {
            self.forget_session(peer);
        }
    }

    fn forget_session(&mut self, peer: SocketAddr) {
        self.sessions.remove(&peer);
        self.timers.forget(peer);
        self.started.remove(&peer);
        self.missing.remove(&peer);
    }

    /// Ends `peer`'s session from outside it: forgotten, out of the queue, its turn over.
    fn drop_session(&mut self, peer: SocketAddr) {
        self.forget_session(peer);
        self.remove(peer);
    }

    fn on_event(&mut self, peer: SocketAddr, e: AcEvent) {
        let log = Arc::clone(&self.c.log);
        let now = Instant::now();
        match e {
            AcEvent::Joined(info) => {
                // The same AP (name and base MAC) from a new address rebooted or lost its
                // socket: its old session is over now, not at the old one's keepalive
                // timeout, and a transfer slot it held goes to the next AP at once.
                if let Some(&old_peer) = self.owner.get(&info.name)
                    && old_peer != peer
                    && self
                        .sessions
                        .get(&old_peer)
                        .and_then(AcSession::info)
                        .is_some_and(|old| old.mac.is_some() && old.mac == info.mac)
                {
                    if let Some(ap) = self.ap_ref(old_peer) {
                        log(Event::ApDisjoined {
                            ap,
                            reason: format!("Rejoined from {}[{}]", peer.ip(), peer.port()),
                        });
                    }
                    // Its transfer ends as on a rejoin from the same address: failed
                    // (counted, logged, retried) or done; then the session goes.
                    let mut ended = Vec::new();
                    if let Some(s) = self.sessions.get_mut(&old_peer) {
                        s.replaced(&info);
                        while let Some(e) = s.poll_event() {
                            ended.push(e);
                        }
                    }
                    for e in ended {
                        self.on_event(old_peer, e);
                    }
                    // A predownload retry due for the old address is the new one's.
                    if self.retries.iter().any(|Reverse((_, p))| *p == old_peer) {
                        self.retries = std::mem::take(&mut self.retries)
                            .into_iter()
                            .map(|Reverse((t, p))| {
                                Reverse((t, if p == old_peer { peer } else { p }))
                            })
                            .collect();
                    }
                    self.drop_session(old_peer);
                }
                let version = self.version().to_owned();
                let mut rows = self.status.lock().unwrap_or_else(PoisonError::into_inner);
                let old = rows.remove(&info.name);
                let backup = info.backup.clone().unwrap_or_default();
                // What the AP did before its reset still counts: a download it completed
                // (it now runs the version), a predownload it still holds as backup.
                let download = match &old {
                    Some(o)
                        if o.download == DownloadState::Completed && info.primary == version =>
                    {
                        DownloadState::Completed
                    }
                    _ => DownloadState::None,
                };
                let (predownload, predownload_version) = match &old {
                    Some(o)
                        if o.predownload == PredownloadState::Complete
                            && o.predownload_version.as_deref() == Some(backup.as_str()) =>
                    {
                        (o.predownload, o.predownload_version.clone())
                    }
                    _ => (PredownloadState::None, None),
                };
                let family = old.as_ref().map_or("", |o| o.family.as_str());
                let row = ApImageRow {
                    download,
                    predownload,
                    predownload_version,
                    next_retry: old.as_ref().and_then(|o| o.next_retry.clone()),
                    retry_count: old.as_ref().map_or(0, |o| o.retry_count),
                    ..ApImageRow::new(&info.name, family, &info.primary, &backup)
                };
                rows.insert(info.name.clone(), row);
                drop(rows);
                self.owner.insert(info.name, peer);
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApJoined(ap));
                }
            }
            AcEvent::ImageWanted {
                family,
                predownload,
            } => {
                let retry = self.c.retry;
                let refusal = if !bundle_tool::models::is_image_family_name(&family) {
                    // The name is the AP's: it never reaches a path unchecked.
                    Some(format!("{family:?} is not an AP image family"))
                } else if !predownload
                    && self
                        .row(peer, |r| r.retry_count > retry.count)
                        .unwrap_or(false)
                {
                    Some(format!(
                        "gave up after {} retries (reload the profile to start over)",
                        retry.count
                    ))
                } else {
                    None
                };
                if let Some(why) = refusal {
                    if let Some(s) = self.sessions.get_mut(&peer) {
                        s.image_ready(now, Err(why));
                    }
                    return;
                }
                let version = self.version().to_owned();
                self.row(peer, |r| {
                    r.family.clone_from(&family);
                    if predownload {
                        r.predownload = PredownloadState::Initiated;
                        r.predownload_version = Some(version);
                    } else {
                        r.download = DownloadState::Initiated;
                    }
                });
                self.want(peer, family);
            }
            AcEvent::TransferStarted { .. } => {
                self.started.insert(peer, (now, None));
                self.row(peer, |r| {
                    if r.predownload == PredownloadState::Initiated {
                        r.predownload = PredownloadState::Predownloading;
                    } else {
                        r.download = DownloadState::Downloading;
                    }
                    r.percent = Some(0);
                    r.next_retry = None;
                });
            }
            AcEvent::TransferDone { .. } => {
                self.started.remove(&peer);
                self.row(peer, |r| {
                    if r.predownload == PredownloadState::Predownloading {
                        r.predownload = PredownloadState::Complete;
                        if let Some(v) = &r.predownload_version {
                            r.backup.clone_from(v);
                        }
                    } else {
                        r.download = DownloadState::Completed;
                    }
                    r.percent = Some(100);
                    r.eta_s = None;
                });
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApImageDownload { ap, success: true });
                }
                self.release(peer);
            }
            AcEvent::TransferFailed { .. } => {
                self.started.remove(&peer);
                if self.gate.is_waiting(peer) {
                    // It rejoined while waiting for its turn: not a failure, and it keeps
                    // its place in the queue.
                    return;
                }
                let missing = self.missing.contains(&peer);
                let retry = self.c.retry;
                let next = now + retry.interval;
                // At join the AP comes back by itself, often sooner than the retry
                // interval; only the first failure in each interval counts as a retry.
                let due = self
                    .owned_name(peer)
                    .and_then(|n| self.retry_at.get(n))
                    .is_none_or(|t| now >= *t);
                let outcome = self.row(peer, |r| {
                    let predownloading = matches!(
                        r.predownload,
                        PredownloadState::Initiated | PredownloadState::Predownloading
                    );
                    let (download, predownload) = if missing {
                        (DownloadState::NotSupported, PredownloadState::NotSupported)
                    } else {
                        (DownloadState::Failed, PredownloadState::Failed)
                    };
                    if predownloading {
                        r.predownload = predownload;
                    } else {
                        r.download = download;
                    }
                    r.percent = None;
                    r.eta_s = None;
                    let counted = (predownloading || due) && r.retry_count <= retry.count;
                    if counted {
                        r.retry_count += 1;
                    }
                    // Past `retry_count` retries the AP is left failed until the release
                    // changes (`reload`, a newly staged version).
                    let again = r.retry_count <= retry.count;
                    if counted {
                        r.next_retry = again.then(|| clock(next));
                    }
                    (predownloading && again, counted)
                });
                let (repredownload, counted) = outcome.unwrap_or((false, false));
                if counted && let Some(name) = self.owned_name(peer).map(str::to_owned) {
                    self.retry_at.insert(name, next);
                }
                if repredownload {
                    self.retries.push(Reverse((next, peer)));
                }
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApImageDownload { ap, success: false });
                }
                self.release(peer);
            }
            AcEvent::PredownloadAnswered { result } => {
                // 17: it has the image already (as its backup).
                if result == 17 {
                    self.row(peer, |r| {
                        r.predownload = PredownloadState::Complete;
                    });
                } else if result != 0 {
                    self.row(peer, |r| {
                        r.predownload = PredownloadState::Failed;
                    });
                }
            }
            AcEvent::Gone => {
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApDisjoined {
                        ap,
                        reason: "Keepalive timeout".into(),
                    });
                }
                if let Some(name) = self.owned_name(peer).map(str::to_owned) {
                    self.owner.remove(&name);
                    self.status
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&name);
                }
                self.remove(peer);
            }
            AcEvent::JoinRefused { .. } | AcEvent::ResetAnswered { .. } => {}
        }
    }
}

/// Runs one simulated AP against the controller at `controller` until `done` says so (or
/// `deadline` passes); returns the AP and its log lines.
pub async fn run_ap(
    mut ap: Wtp,
    controller: SocketAddr,
    deadline: Instant,
    done: impl Fn(&Wtp) -> bool,
) -> std::io::Result<(Wtp, Vec<String>)> {
    let bind: SocketAddr = if controller.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(controller).await?;
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        while let Some(d) = ap.poll_transmit() {
            let _ = socket.send(d).await;
        }
        while let Some(e) = ap.poll_event() {
            if !matches!(e, WtpEvent::State(_)) || lines.len() < 10_000 {
                lines.extend(e.lines());
            }
        }
        if done(&ap) || Instant::now() >= deadline {
            return Ok((ap, lines));
        }
        let wake = ap.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            got = socket.recv(&mut buf) => {
                if let Ok(n) = got {
                    ap.handle_datagram(Instant::now(), &buf[..n]);
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                ap.handle_timeout(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capwap::Message;

    fn ap(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    fn peers(v: Vec<(SocketAddr, String)>) -> Vec<u16> {
        v.into_iter().map(|(p, _)| p.port()).collect()
    }

    #[test]
    fn wake_ups_stay_one_per_session_whatever_the_traffic() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = Wakeups::default();
        // Ten thousand answered blocks, each moving the deadline later: one entry.
        for i in 0..10_000 {
            w.arm(ap(1), ms(3000 + i));
        }
        assert_eq!(w.len(), 1);
        // The entry fires at the first deadline; the shell then re-arms at the real one.
        assert_eq!(w.pop_due(ms(2999)), None);
        assert_eq!(w.pop_due(ms(3000)), Some(ap(1)));
        assert_eq!(w.pop_due(ms(3000)), None);
        w.arm(ap(1), ms(12_999));
        // An earlier deadline supersedes; the later entry is skipped when it comes up.
        w.arm(ap(1), ms(5000));
        w.arm(ap(2), ms(4000));
        assert_eq!(w.next(), Some(ms(4000)));
        assert_eq!(w.pop_due(ms(20_000)), Some(ap(2)));
        assert_eq!(w.pop_due(ms(20_000)), Some(ap(1)));
        assert_eq!(
            w.pop_due(ms(20_000)),
            None,
            "the superseded entry is not a wake-up"
        );
        // A forgotten session never wakes.
        w.arm(ap(3), ms(100));
        w.forget(ap(3));
        assert_eq!(w.pop_due(ms(20_000)), None);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn sets_start_when_the_whole_previous_set_is_done() {
        let mut g = Gate::new(Admission::Sets(2));
        let started: Vec<u16> = (1..=5)
            .filter_map(|n| g.want(ap(n), "ap1g8".into()))
            .map(|(p, _)| p.port())
            .collect();
        assert_eq!(started, [1, 2]);
        // One member done: the set is still running, nobody new starts.
        assert!(g.release(ap(1)).is_empty());
        // The set is done: the next two start together.
        assert_eq!(peers(g.release(ap(2))), [3, 4]);
        assert!(g.release(ap(3)).is_empty());
        assert_eq!(peers(g.release(ap(4))), [5]);
        // A set of one that drains lets the next AP straight in.
        assert_eq!(peers(g.release(ap(5))), Vec::<u16>::new());
        assert!(g.want(ap(6), "ap1g8".into()).is_some());
    }

    #[test]
    fn parallel_admits_the_next_as_soon_as_one_is_done() {
        let mut g = Gate::new(Admission::Parallel(2));
        for n in 1..=4 {
            let _ = g.want(ap(n), "ap3g3".into());
        }
        assert_eq!(peers(g.release(ap(1))), [3]);
        // A waiting AP that is gone gives up its place; that admits nobody.
        assert!(g.remove(ap(4)).is_empty());
        assert_eq!(peers(g.release(ap(2))), Vec::<u16>::new());
        assert_eq!(peers(g.release(ap(3))), Vec::<u16>::new());
        // Releasing an AP that never started changes nothing.
        assert!(g.release(ap(9)).is_empty());
        assert!(g.want(ap(5), "ap3g3".into()).is_some());
    }

    #[test]
    fn an_ap_that_asks_again_while_waiting_keeps_its_place() {
        let mut g = Gate::new(Admission::Parallel(1));
        assert!(g.want(ap(1), "a".into()).is_some());
        assert!(g.want(ap(2), "a".into()).is_none());
        assert!(g.want(ap(3), "a".into()).is_none());
        // AP 2 gave up waiting for an answer and rejoined: its failed request releases
        // nothing, and asking again keeps its place ahead of AP 3 (one entry, not two).
        assert!(g.release(ap(2)).is_empty());
        assert!(g.want(ap(2), "b".into()).is_none());
        assert_eq!(g.release(ap(1)), vec![(ap(2), "b".to_owned())]);
        assert_eq!(peers(g.release(ap(2))), [3]);
        assert!(g.release(ap(3)).is_empty());
        // A gone AP leaves the queue.
        assert!(g.want(ap(4), "a".into()).is_some());
        assert!(g.want(ap(5), "a".into()).is_none());
        assert!(g.remove(ap(5)).is_empty());
        assert!(g.release(ap(4)).is_empty());
    }

    #[test]
    fn only_a_join_request_opens_a_session() {
        let join = Message::new(MessageType::JOIN_REQUEST, 1, Vec::new()).to_vec();
        let echo = Message::new(MessageType::ECHO_REQUEST, 1, Vec::new()).to_vec();
        let (Ok(join), Ok(echo)) = (join, echo) else {
            panic!("encode")
        };
        assert!(opens_session(&join));
        assert!(!opens_session(&echo));
        assert!(!opens_session(b""));
        assert!(!opens_session(&[0xff; 40]));
        // A Join Request cut short is not one.
        assert!(!opens_session(&join[..join.len() - 1]));
    }
}
