//! A loss- and duplicate-injecting UDP proxy for TFTP on loopback.
//!
//! The client talks to the proxy's one listening socket (127.0.0.1, a free port) as if it were
//! the server. For each client address the proxy opens an upstream socket, sends the client's
//! first datagram (the request) to the server's listening address, learns the server's
//! transfer ID from the first reply, and sends the client's later datagrams there. Replies go
//! back to the client from the listening socket, so the client sees one consistent transfer
//! ID. Datagrams from any other server address after the first reply (a second transfer the
//! server started for a duplicated request, say) are not forwarded: they are counted as
//! `stray`.
//!
//! Faults are chosen per direction and per datagram, from that direction's datagram count:
//! every Nth ([`Rate::Every`]), or pseudo-randomly from a seed ([`Rate::PerMille`]), so a run
//! makes the same choices for the same sequence of datagrams. A duplicate is sent right after
//! the original. Everything is counted ([`UdpProxy::counts`]), so a test can prove that faults
//! actually happened.
//!
//! Threads: one reads the listening socket, one per client reads that client's upstream
//! socket. All poll a shutdown flag every [`POLL`]; dropping the proxy stops and joins them.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the proxy's threads look at the shutdown flag.
pub const POLL: Duration = Duration::from_millis(20);

/// Largest datagram forwarded (TFTP's largest blksize plus its header, with room to spare).
const MAX_DATAGRAM: usize = 65_536 + 4;

/// How often a fault hits the datagrams of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rate {
    /// Never.
    #[default]
    Never,
    /// The Nth, 2Nth, 3Nth… datagram of the direction (1-based); `Every(1)` hits all of them,
    /// `Every(0)` none.
    Every(u64),
    /// Each datagram with probability `n`/1000, drawn from a PRNG seeded with
    /// [`Faults::seed`] (each direction and fault has its own stream).
    PerMille(u16),
}

/// Faults for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionFaults {
    /// Datagrams not forwarded.
    pub drop: Rate,
    /// Datagrams forwarded twice (never one that is dropped).
    pub duplicate: Rate,
}

/// What the proxy does to traffic; the default forwards everything unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Client to server.
    pub to_server: DirectionFaults,
    /// Server to client.
    pub to_client: DirectionFaults,
    /// Seed for [`Rate::PerMille`].
    pub seed: u64,
}

impl Faults {
    /// No faults: a plain forwarder.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// The same drop and duplicate rates in both directions.
    pub fn symmetric(drop: Rate, duplicate: Rate, seed: u64) -> Faults {
        let d = DirectionFaults { drop, duplicate };
        Faults {
            to_server: d,
            to_client: d,
            seed,
        }
    }
}

/// Counters of one direction, as read by [`UdpProxy::counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionCounts {
    /// Datagrams received for this direction (stray ones not included).
    pub received: u64,
    /// Datagrams sent on (each once; duplicates are counted in `duplicated`).
    pub forwarded: u64,
    /// Datagrams not sent on. `received == forwarded + dropped`.
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Server datagrams from an address other than the learned transfer ID (not forwarded;
    /// always 0 towards the server).
    pub stray: u64,
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Client to server.
    pub to_server: DirectionCounts,
    /// Server to client.
    pub to_client: DirectionCounts,
}

/// A running proxy; dropping it stops its threads.
#[derive(Debug)]
pub struct UdpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl UdpProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of the server listening at
    /// `server` (which must be a loopback address: the proxy sends nowhere else).
    pub fn start(server: SocketAddr, faults: Faults) -> io::Result<UdpProxy> {
        if !server.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the proxy only forwards to loopback, not {server}"),
            ));
        }
        let listen = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        listen.set_read_timeout(Some(POLL))?;
        let addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            to_server: Direction::new(faults.to_server, faults.seed, 0),
            to_client: Direction::new(faults.to_client, faults.seed, 1),
        });
        let s = Arc::clone(&shared);
        let listener = std::thread::Builder::new()
            .name("udp-proxy".into())
            .spawn(move || listen_loop(listen, server, s))?;
        Ok(UdpProxy {
            addr,
            shared,
            listener: Some(listener),
        })
    }

    /// The address clients send their requests to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters so far.
    pub fn counts(&self) -> Counts {
        Counts {
            to_server: self.shared.to_server.counts(),
            to_client: self.shared.to_client.counts(),
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    to_server: Direction,
    to_client: Direction,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// One direction's fault choices and counters.
#[derive(Debug)]
struct Direction {
    faults: DirectionFaults,
    /// Datagram count and the two PRNG states, advanced together under one lock so the
    /// choices depend only on the datagram's position in the direction.
    state: Mutex<DirectionState>,
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    stray: AtomicU64,
}

#[derive(Debug)]
struct DirectionState {
    seen: u64,
    drop_rng: u64,
    dup_rng: u64,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Drop,
    Forward,
    ForwardTwice,
}

impl Direction {
    fn new(faults: DirectionFaults, seed: u64, salt: u64) -> Direction {
        let mix = |k: u64| splitmix(seed ^ splitmix(salt * 2 + k));
        Direction {
            faults,
            state: Mutex::new(DirectionState {
                seen: 0,
                drop_rng: mix(0) | 1,
                dup_rng: mix(1) | 1,
            }),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            stray: AtomicU64::new(0),
        }
    }

    /// Decides the fate of the next datagram of this direction and counts it.
    fn judge(&self) -> Verdict {
        let verdict = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.seen += 1;
            let n = st.seen;
            let drop = hits(self.faults.drop, n, &mut st.drop_rng);
            let dup = hits(self.faults.duplicate, n, &mut st.dup_rng);
            match (drop, dup) {
                (true, _) => Verdict::Drop,
                (false, true) => Verdict::ForwardTwice,
                (false, false) => Verdict::Forward,
            }
        };
        self.received.fetch_add(1, Ordering::Relaxed);
        match verdict {
            Verdict::Drop => self.dropped.fetch_add(1, Ordering::Relaxed),
            Verdict::Forward => self.forwarded.fetch_add(1, Ordering::Relaxed),
            Verdict::ForwardTwice => {
                self.duplicated.fetch_add(1, Ordering::Relaxed);
                self.forwarded.fetch_add(1, Ordering::Relaxed)
            }
        };
        verdict
    }

    /// Sends `bytes` to `to` as the verdict says.
    fn forward(&self, sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
        let copies = match self.judge() {
            Verdict::Drop => 0,
            Verdict::Forward => 1,
            Verdict::ForwardTwice => 2,
        };
        for _ in 0..copies {
            // A failed send is one more lost datagram; TFTP retransmits.
            let _ = sock.send_to(bytes, to);
        }
    }

    fn counts(&self) -> DirectionCounts {
        DirectionCounts {
            received: self.received.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            stray: self.stray.load(Ordering::Relaxed),
        }
    }
}

/// Whether a fault at `rate` hits the `n`th datagram (1-based).
fn hits(rate: Rate, n: u64, rng: &mut u64) -> bool {
    match rate {
        Rate::Never => false,
        Rate::Every(0) => false,
        Rate::Every(k) => n.is_multiple_of(k),
        Rate::PerMille(p) => {
            // xorshift64*; the top bits are the good ones.
            *rng ^= *rng >> 12;
            *rng ^= *rng << 25;
            *rng ^= *rng >> 27;
            let draw = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % 1000;
            draw < u64::from(p)
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One client's path to the server.
#[derive(Debug)]
struct Session {
    upstream: UdpSocket,
    /// The server's transfer ID, once its first reply arrived.
    tid: Mutex<Option<SocketAddr>>,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads client datagrams and sends them upstream; starts a session per new client.
fn listen_loop(listen: UdpSocket, server: SocketAddr, shared: Arc<Shared>) {
    let listen = Arc::new(listen);
    let mut sessions: HashMap<SocketAddr, Arc<Session>> = HashMap::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stopping() {
        let (n, client) = match listen.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) => continue,
            // ICMP errors from earlier sends to a client that went away: not a datagram.
            Err(_) => continue,
        };
        let session = match sessions.get(&client) {
            Some(s) => Arc::clone(s),
            None => match start_session(client, &listen, &shared) {
                Ok((s, t)) => {
                    threads.push(t);
                    sessions.insert(client, Arc::clone(&s));
                    s
                }
                // No socket for this client: its datagram is lost, as on a real network.
                Err(_) => continue,
            },
        };
        let to = session
            .tid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(server);
        shared.to_server.forward(&session.upstream, &buf[..n], to);
    }
    for t in threads {
        let _ = t.join();
    }
}

fn start_session(
    client: SocketAddr,
    listen: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
) -> io::Result<(Arc<Session>, JoinHandle<()>)> {
    let upstream = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    upstream.set_read_timeout(Some(POLL))?;
    let session = Arc::new(Session {
        upstream,
        tid: Mutex::new(None),
    });
    let (s, l, sh) = (Arc::clone(&session), Arc::clone(listen), Arc::clone(shared));
    let thread = std::thread::Builder::new()
        .name("udp-proxy-session".into())
        .spawn(move || session_loop(&s, &l, client, &sh))?;
    Ok((session, thread))
}

/// Reads the server's datagrams for one client and sends them to it from the listening
/// socket.
fn session_loop(session: &Session, listen: &UdpSocket, client: SocketAddr, shared: &Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stopping() {
        let (n, from) = match session.upstream.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => continue,
        };
        let stray = {
            let mut tid = session.tid.lock().unwrap_or_else(PoisonError::into_inner);
            match *tid {
                None => {
                    // Learned before any fault is applied: a dropped first reply still
                    // names the transfer.
                    *tid = Some(from);
                    false
                }
                Some(t) => t != from,
            }
        };
        if stray {
            shared.to_client.stray.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.to_client.forward(listen, &buf[..n], client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A server on loopback that answers each datagram from a fresh transfer socket the first
    /// time a client writes, then from that socket: `echo:<payload>`.
    struct EchoServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl EchoServer {
        fn start() -> EchoServer {
            let listen = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind server");
            listen.set_read_timeout(Some(POLL)).expect("timeout");
            let addr = listen.local_addr().expect("addr");
            let stop = Arc::new(AtomicBool::new(false));
            let s = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                let transfer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind transfer");
                transfer.set_read_timeout(Some(POLL)).expect("timeout");
                let mut buf = [0u8; 2048];
                while !s.load(Ordering::SeqCst) {
                    // Requests on the listening port, later datagrams on the transfer port;
                    // both are answered from the transfer port, as a TFTP server does.
                    for (sock, is_listen) in [(&listen, true), (&transfer, false)] {
                        if let Ok((n, from)) = sock.recv_from(&mut buf) {
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(&buf[..n]);
                            if is_listen {
                                reply.extend_from_slice(b"@listen");
                            }
                            let _ = transfer.send_to(&reply, from);
                        }
                    }
                }
            });
            EchoServer {
                addr,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for EchoServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind client");
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        c
    }

    fn recv(c: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        c.recv_from(&mut buf)
            .ok()
            .map(|(n, f)| (buf[..n].to_vec(), f))
    }

    #[test]
    fn without_faults_everything_round_trips_through_one_address() {
        let server = EchoServer::start();
        let proxy = UdpProxy::start(server.addr, Faults::none()).expect("proxy");
        let c = client();
        for i in 0..20u32 {
            c.send_to(format!("m{i}").as_bytes(), proxy.addr())
                .expect("send");
            let (reply, from) = recv(&c).expect("a reply");
            assert_eq!(
                from,
                proxy.addr(),
                "replies come from the proxy's one address"
            );
            let want = if i == 0 {
                // The request went to the listening port…
                format!("echo:m{i}@listen")
            } else {
                // …everything after it to the transfer ID learned from the first reply.
                format!("echo:m{i}")
            };
            assert_eq!(String::from_utf8_lossy(&reply), want);
        }
        let counts = proxy.counts();
        let all = DirectionCounts {
            received: 20,
            forwarded: 20,
            ..DirectionCounts::default()
        };
        assert_eq!(counts.to_server, all);
        assert_eq!(counts.to_client, all);
    }

    #[test]
    fn every_nth_datagram_is_dropped_or_duplicated_and_counted() {
        let server = EchoServer::start();
        let faults = Faults {
            to_server: DirectionFaults {
                drop: Rate::Every(3),
                duplicate: Rate::Never,
            },
            to_client: DirectionFaults {
                drop: Rate::Never,
                duplicate: Rate::Every(2),
            },
            seed: 0,
        };
        let proxy = UdpProxy::start(server.addr, faults).expect("proxy");
        let c = client();
        let mut replies = Vec::new();
        for i in 1..=9u32 {
            c.send_to(format!("m{i}").as_bytes(), proxy.addr())
                .expect("send");
            if i % 3 == 0 {
                // Dropped on the way to the server: no answer. (This wait is not a timing
                // assertion: the following sends prove the proxy kept going.)
                assert!(recv(&c).is_none(), "datagram {i} should have been dropped");
                continue;
            }
            replies.push(recv(&c).expect("a reply").0);
            // Every second reply arrives twice.
            let forwarded_to_client = replies.len();
            if forwarded_to_client % 2 == 0 {
                let again = recv(&c).expect("the duplicate").0;
                assert_eq!(Some(&again), replies.last());
            }
        }
        assert_eq!(replies.len(), 6);
        let counts = proxy.counts();
        assert_eq!(
            counts.to_server,
            DirectionCounts {
                received: 9,
                forwarded: 6,
                dropped: 3,
                duplicated: 0,
                stray: 0
            }
        );
        assert_eq!(
            counts.to_client,
            DirectionCounts {
                received: 6,
                forwarded: 6,
                dropped: 0,
                duplicated: 3,
                stray: 0
            }
        );
    }

    #[test]
    fn replies_from_another_server_address_are_not_forwarded() {
        // The "server" answers the request from one socket, then a second socket chimes in
        // (as a second transfer for a duplicated request would).
        let listen = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listen
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let tid = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let proxy =
            UdpProxy::start(listen.local_addr().expect("addr"), Faults::none()).expect("proxy");
        let c = client();
        c.send_to(b"rrq", proxy.addr()).expect("send");
        let mut buf = [0u8; 64];
        let (_, upstream) = listen.recv_from(&mut buf).expect("the request arrives");
        tid.send_to(b"first", upstream).expect("send");
        assert_eq!(recv(&c).expect("first").0, b"first");
        other.send_to(b"stray", upstream).expect("send");
        tid.send_to(b"second", upstream).expect("send");
        assert_eq!(recv(&c).expect("second").0, b"second");
        let counts = proxy.counts();
        assert_eq!(counts.to_client.stray, 1);
        assert_eq!(counts.to_client.forwarded, 2);
    }

    #[test]
    fn per_mille_rates_are_deterministic_and_near_their_rate() {
        let run = |seed| {
            let d = Direction::new(
                DirectionFaults {
                    drop: Rate::PerMille(100),
                    duplicate: Rate::PerMille(50),
                },
                seed,
                0,
            );
            let verdicts: Vec<Verdict> = (0..10_000).map(|_| d.judge()).collect();
            (verdicts, d.counts())
        };
        let (a, ca) = run(7);
        let (b, _) = run(7);
        let (c, _) = run(8);
        assert_eq!(a, b, "same seed, same choices");
        assert_ne!(a, c, "another seed, other choices");
        assert_eq!(ca.received, 10_000);
        assert_eq!(ca.received, ca.forwarded + ca.dropped);
        assert!((800..1200).contains(&ca.dropped), "{ca:?}");
        // Duplicates are drawn for every datagram but only happen to forwarded ones.
        assert!((350..550).contains(&ca.duplicated), "{ca:?}");
        assert!(
            Direction::new(DirectionFaults::default(), 1, 0).judge() == Verdict::Forward,
            "no faults by default"
        );
    }

    #[test]
    fn dropping_the_proxy_stops_its_threads() {
        let server = EchoServer::start();
        let proxy = UdpProxy::start(server.addr, Faults::none()).expect("proxy");
        let c = client();
        c.send_to(b"x", proxy.addr()).expect("send");
        assert!(recv(&c).is_some());
        let addr = proxy.addr();
        let started = Instant::now();
        drop(proxy);
        // Joined: the listening port is free again (bind would fail while the socket lived).
        UdpSocket::bind(addr).expect("the proxy's port is released after drop");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn refuses_to_forward_off_loopback() {
        let Err(e) = UdpProxy::start("192.0.2.1:69".parse().expect("addr"), Faults::none()) else {
            panic!("a non-loopback upstream was accepted")
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
