//! The tokio shells: [`serve`] runs the controller's sessions on one bound UDP socket, and
//! [`run_ap`] runs one simulated AP on its own socket. Both only move datagrams and timers
//! between the socket and the sans-IO state machines ([`AcSession`], [`Wtp`]); all protocol
//! decisions live there.
//!
//! The controller asks [`Images`] for a family's image when an AP wants it (each family is
//! fetched once, whatever the number of APs), lets at most `max_concurrent` transfers run at
//! once (the others wait their turn, as a 9800 sends sets of APs), logs the controller's
//! lines and keeps one [`ApImageRow`] per AP for `show ap image`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ac::{AcConfig, AcEvent, AcSession, ImageToSend};
use crate::capwap::{MessageType, RawMessage};
use crate::events::{ApRef, Event, Mac};
use crate::images::{EventSink, Images};
use crate::show::{ApImageRow, DownloadState, PredownloadState};
use crate::wtp::{Wtp, WtpEvent};

/// What [`serve`] needs.
pub struct Controller {
    /// Session settings.
    pub ac: AcConfig,
    /// Transfers running at once.
    pub max_concurrent: usize,
    /// The release's images.
    pub images: Arc<Images>,
    /// The log.
    pub log: EventSink,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("ac", &self.ac)
            .field("max_concurrent", &self.max_concurrent)
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

/// `show ap image` rows, by AP address.
pub type Status = Arc<Mutex<HashMap<SocketAddr, ApImageRow>>>;

struct Shell {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    c: Controller,
    sessions: HashMap<SocketAddr, AcSession>,
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    active: HashSet<SocketAddr>,
    waiting: VecDeque<(SocketAddr, String)>,
    ready: mpsc::UnboundedSender<(SocketAddr, Result<ImageToSend, String>)>,
    status: Status,
}

/// Serves CAPWAP on `socket` until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    c: Controller,
    status: Status,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let (ready, mut images) = mpsc::unbounded_channel();
    let mut sh = Shell {
        socket: Arc::new(socket),
        local,
        c,
        sessions: HashMap::new(),
        timers: BinaryHeap::new(),
        active: HashSet::new(),
        waiting: VecDeque::new(),
        ready,
        status,
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = sh.timers.peek().map(|Reverse((t, _))| *t);
        let sleep = tokio::time::sleep_until(
            next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .into(),
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            got = sh.socket.recv_from(&mut buf) => {
                // An ICMP error surfacing on the socket is not fatal to the server.
                let Ok((n, peer)) = got else { continue };
                let datagram = &buf[..n];
                // Only a Join Request opens a session: anything else from a stranger (garbage,
                // a late response from a forgotten AP) costs no memory.
                if !sh.sessions.contains_key(&peer) && !opens_session(datagram) {
                    continue;
                }
                let now = Instant::now();
                let s = sh
                    .sessions
                    .entry(peer)
                    .or_insert_with(|| AcSession::new(sh.c.ac.clone()));
                s.handle_datagram(now, datagram);
                sh.process(peer).await;
            }
            Some((peer, image)) = images.recv() => {
                if let Some(s) = sh.sessions.get_mut(&peer) {
                    s.image_ready(Instant::now(), image);
                }
                sh.process(peer).await;
            }
            () = sleep => {
                let now = Instant::now();
                while let Some(Reverse((t, peer))) = sh.timers.peek().copied() {
                    if t > now {
                        break;
                    }
                    sh.timers.pop();
                    if let Some(s) = sh.sessions.get_mut(&peer)
                        && s.poll_timeout().is_some_and(|d| d <= now)
                    {
                        s.handle_timeout(now);
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

impl Shell {
    fn ap_ref(&self, peer: SocketAddr) -> Option<ApRef> {
        let info = self.sessions.get(&peer)?.info()?;
        Some(ApRef {
            name: info.name.clone(),
            mac: Mac(info.mac.unwrap_or_default()),
            ap: peer,
            ac: self.local,
        })
    }

    fn row(&self, peer: SocketAddr, f: impl FnOnce(&mut ApImageRow)) {
        let mut rows = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = rows.get_mut(&peer) {
            f(r);
        }
    }

    /// Starts (or queues) the fetch of `family` for `peer`.
    fn want(&mut self, peer: SocketAddr, family: String) {
        if self.active.len() >= self.c.max_concurrent.max(1) {
            self.waiting.push_back((peer, family));
            return;
        }
        self.active.insert(peer);
        let images = Arc::clone(&self.c.images);
        let ready = self.ready.clone();
        tokio::spawn(async move {
            let result = match images.get(&family).await {
                Ok(img) => Ok(ImageToSend {
                    family: img.family.clone(),
                    bytes: Arc::clone(&img.bytes),
                    md5: img.md5,
                }),
                Err(e) => Err(e.to_string()),
            };
            let _ = ready.send((peer, result));
        });
    }

    fn release(&mut self, peer: SocketAddr) {
        if self.active.remove(&peer)
            && let Some((next, family)) = self.waiting.pop_front()
        {
            self.want(next, family);
        }
    }

    /// Handles a session's events, sends its datagrams and re-arms its timer.
    async fn process(&mut self, peer: SocketAddr) {
        let mut events = Vec::new();
        if let Some(s) = self.sessions.get_mut(&peer) {
            while let Some(e) = s.poll_event() {
                events.push(e);
            }
        }
        for e in events {
            self.on_event(peer, e);
        }
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        while let Some(d) = s.poll_transmit() {
            // A lost send is a lost datagram: the retransmission timers cover it.
            let _ = self.socket.send_to(d, peer).await;
        }
        if let Some(t) = s.poll_timeout() {
            self.timers.push(Reverse((t, peer)));
        }
        let progress = s.progress();
        let gone = s.is_gone();
        if let Some((done, total)) = progress {
            self.row(peer, |r| {
                r.percent = u8::try_from(done * 100 / total.max(1)).ok();
            });
        }
        if gone {
            self.sessions.remove(&peer);
        }
    }

    fn on_event(&mut self, peer: SocketAddr, e: AcEvent) {
        let log = Arc::clone(&self.c.log);
        match e {
            AcEvent::Joined(info) => {
                let row = ApImageRow {
                    name: info.name.clone(),
                    family: String::new(),
                    primary: info.primary.clone(),
                    backup: info.backup.clone().unwrap_or_default(),
                    download: DownloadState::None,
                    predownload: PredownloadState::None,
                    predownload_version: None,
                    next_retry: None,
                    retry_count: 0,
                    method: Some("CAPWAP".into()),
                    eta_s: None,
                    percent: None,
                };
                self.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(peer, row);
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApJoined(ap));
                }
            }
            AcEvent::ImageWanted {
                family,
                predownload,
            } => {
                self.row(peer, |r| {
                    r.family.clone_from(&family);
                    if predownload {
                        r.predownload = PredownloadState::Initiated;
                    } else {
                        r.download = DownloadState::Initiated;
                    }
                });
                self.want(peer, family);
            }
            AcEvent::TransferStarted { .. } => self.row(peer, |r| {
                if r.predownload == PredownloadState::Initiated {
                    r.predownload = PredownloadState::Predownloading;
                } else {
                    r.download = DownloadState::Downloading;
                }
                r.percent = Some(0);
            }),
            AcEvent::TransferDone { .. } => {
                self.row(peer, |r| {
                    if r.predownload == PredownloadState::Predownloading {
                        r.predownload = PredownloadState::Complete;
                    } else {
                        r.download = DownloadState::Completed;
                    }
                    r.percent = Some(100);
                });
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApImageDownload { ap, success: true });
                }
                self.release(peer);
            }
            AcEvent::TransferFailed { .. } => {
                self.row(peer, |r| {
                    if r.predownload == PredownloadState::Initiated
                        || r.predownload == PredownloadState::Predownloading
                    {
                        r.predownload = PredownloadState::Failed;
                    } else {
                        r.download = DownloadState::Failed;
                    }
                    r.retry_count += 1;
                    r.percent = None;
                });
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApImageDownload { ap, success: false });
                }
                self.release(peer);
            }
            AcEvent::Gone => {
                if let Some(ap) = self.ap_ref(peer) {
                    log(Event::ApDisjoined {
                        ap,
                        reason: "Keepalive timeout".into(),
                    });
                }
                self.release(peer);
                self.waiting.retain(|(p, _)| *p != peer);
            }
            AcEvent::JoinRefused { .. }
            | AcEvent::PredownloadAnswered { .. }
            | AcEvent::ResetAnswered { .. } => {}
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
                lines.push(e.line());
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
