//! The tokio shell around the sans-IO core: listening sockets in, one task and one socket per
//! transfer, memory-mapped files out.
//!
//! A request is handled in tftpd-hpa's order: decode, mode, remap, log `RRQ from …`,
//! validate and open the file, then negotiate options. Every refusal is a NAK (TFTP ERROR)
//! sent from the transfer's own socket and logged at `-vv` as tftpd-hpa does.

pub mod files;
pub mod mapguard;
pub mod net;
mod transfer;
pub mod udp;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::confine::{ConfineError, RelativeName, ServeRoot};
use crate::proto::options::ServerLimits;
use crate::proto::packet::{DecodeError, ErrorCode, MAX_PACKET_LEN, Mode, Packet, Request};
use crate::remap::{RemapContext, RemapOutcome, RemapRules, RequestKind};
use crate::syslog::{Logger, Priority};
use files::FileCache;
use net::PortRange;

/// Where request names lead.
#[derive(Debug)]
pub enum Roots {
    /// `-s DIR`: every name is relative to one directory (leading `/` stripped).
    Secure(ServeRoot),
    /// Without `-s`: names must be absolute and start with one of these directories; with
    /// none listed, any absolute name is allowed (as tftpd-hpa does).
    Prefixes(Vec<(PathBuf, ServeRoot)>),
}

impl Roots {
    /// The served directories as paths, for the watcher and cache invalidation.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Roots::Secure(r) => vec![r.path().to_path_buf()],
            Roots::Prefixes(list) => list.iter().map(|(p, _)| p.clone()).collect(),
        }
    }

    fn get(&self, id: usize) -> Option<&ServeRoot> {
        match self {
            Roots::Secure(r) => (id == 0).then_some(r),
            Roots::Prefixes(list) => list.get(id).map(|(_, r)| r),
        }
    }

    /// Maps a request name to (root, name inside it), with tftpd-hpa's messages.
    fn resolve(&self, name: &str) -> Result<(usize, RelativeName), Nak> {
        let confined = |e: ConfineError| Nak::from_confine(&e);
        match self {
            Roots::Secure(_) => Ok((0, RelativeName::new(name.as_bytes()).map_err(confined)?)),
            Roots::Prefixes(list) => {
                if !name.starts_with('/') {
                    return Err(Nak::access("Only absolute filenames allowed"));
                }
                if name.contains("/../") || name.ends_with("/..") {
                    return Err(Nak::access("Reverse path not allowed"));
                }
                let path = Path::new(name);
                for (id, (dir, _)) in list.iter().enumerate() {
                    if let Ok(rest) = path.strip_prefix(dir) {
                        let rest = rest.as_os_str().as_bytes();
                        return Ok((id, RelativeName::new(rest).map_err(confined)?));
                    }
                }
                Err(Nak::access("Forbidden directory"))
            }
        }
    }
}

/// Everything a running server needs.
#[derive(Debug)]
pub struct ServerConfig {
    /// Where names lead.
    pub roots: Roots,
    /// `-c`: WRQ may create files.
    pub create: bool,
    /// `-p`: skip the o+r / o+w checks.
    pub permissive: bool,
    /// What options to grant.
    pub limits: ServerLimits,
    /// `-T`: the first retransmission timeout.
    pub retransmit: Duration,
    /// `-R`: transfer ports.
    pub ports: PortRange,
    /// `-m`: remap rules (replaced on SIGHUP).
    pub remap: RwLock<Option<Arc<RemapRules>>>,
    /// The log.
    pub log: Logger,
    /// Mapped files shared by transfers.
    pub cache: Arc<FileCache>,
}

impl ServerConfig {
    /// Replaces the remap rules (SIGHUP).
    pub fn set_remap(&self, rules: Option<RemapRules>) {
        *self.remap.write().unwrap_or_else(PoisonError::into_inner) = rules.map(Arc::new);
    }

    fn remap_rules(&self) -> Option<Arc<RemapRules>> {
        self.remap
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn log(&self, p: Priority, args: fmt::Arguments<'_>) {
        self.log.log(p, args);
    }
}

/// A refusal: TFTP error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nak {
    pub code: ErrorCode,
    pub message: String,
}

impl Nak {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Nak {
        Nak {
            code,
            message: message.into(),
        }
    }

    fn access(message: &str) -> Nak {
        Nak::new(ErrorCode::AccessViolation, message)
    }

    fn from_confine(e: &ConfineError) -> Nak {
        let code = ErrorCode::from_code(e.tftp_error_code());
        match e {
            ConfineError::Io { source, .. } => Nak::new(code, strerror(source)),
            _ => Nak::new(code, code.default_message()),
        }
    }

    pub fn from_io(e: &io::Error) -> Nak {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => {
                Nak::new(ErrorCode::FileNotFound, "File not found")
            }
            Some(libc::EACCES | libc::EPERM) => {
                Nak::new(ErrorCode::AccessViolation, "Access denied")
            }
            Some(libc::ENOSPC | libc::EDQUOT) => {
                Nak::new(ErrorCode::DiskFull, "Disk full or allocation exceeded")
            }
            Some(libc::EEXIST) => Nak::new(ErrorCode::FileExists, "File already exists"),
            _ => Nak::new(ErrorCode::Undefined, strerror(e)),
        }
    }
}

/// The C library's text for an error, as `%m` prints it.
pub fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    // std appends " (os error N)"; `%m` does not.
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Escapes control characters so a hostile filename cannot forge log lines.
pub(crate) struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "\\x{:02x}", u32::from(c))?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// A listening socket and the address it is bound to.
#[derive(Debug)]
pub struct Listener {
    /// The socket (IP_PKTINFO enabled).
    pub socket: UdpSocket,
    /// Its bound address.
    pub addr: SocketAddr,
}

impl Listener {
    /// Wraps an already-bound std socket (non-blocking is set here).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Listener> {
        socket.set_nonblocking(true)?;
        // Best effort: without it, replies come from the listening address.
        let _ = net::enable_pktinfo(&socket);
        let addr = socket.local_addr()?;
        Ok(Listener {
            socket: UdpSocket::from_std(socket)?,
            addr,
        })
    }
}

/// Serves until `shutdown` is cancelled, or, with `idle_exit` (inetd mode), until no request
/// arrived for that long. Transfers in flight are told to stop on shutdown and waited for.
pub async fn serve(
    listeners: Vec<Listener>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
    idle_exit: Option<Duration>,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let active = Arc::new(Mutex::new(HashSet::new()));
    let mut loops = tokio::task::JoinSet::new();
    let sweeper = {
        let cache = Arc::clone(&config.cache);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                cache.sweep_idle();
            }
        })
    };
    for l in listeners {
        loops.spawn(listen(
            l,
            Arc::clone(&config),
            shutdown.clone(),
            tracker.clone(),
            Arc::clone(&active),
            idle_exit,
        ));
    }
    let mut result = Ok(());
    // The first listener to stop (idle exit, shutdown, or a fatal error) stops them all.
    if let Some(done) = loops.join_next().await {
        result = done.unwrap_or_else(|e| Err(io::Error::other(e)));
    }
    loops.abort_all();
    sweeper.abort();
    tracker.close();
    if shutdown.is_cancelled() {
        // Give transfers a moment to send their ERROR to the peer.
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    } else {
        tracker.wait().await;
    }
    result
}

/// One request in flight, so a retransmitted request is not served twice.
type RequestKey = (SocketAddr, u64);

async fn listen(
    listener: Listener,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    active: Arc<Mutex<HashSet<RequestKey>>>,
    idle_exit: Option<Duration>,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    loop {
        let received = tokio::select! {
            r = net::recv_with_dest(&listener.socket, &mut buf) => r,
            () = shutdown.cancelled() => return Ok(()),
            () = idle(idle_exit) => return Ok(()),
        };
        let got = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors and the like: log and keep listening, as tftpd-hpa does.
                config.log(Priority::Err, format_args!("recvfrom: {}", strerror(&e)));
                continue;
            }
        };
        let datagram = buf[..got.len].to_vec();
        let key = (got.peer, hash(&datagram));
        if !active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key)
        {
            continue;
        }
        let local = got
            .local
            .unwrap_or_else(|| net::fallback_local(listener.addr, got.peer));
        let config = Arc::clone(&config);
        let shutdown = shutdown.child_token();
        let active = Arc::clone(&active);
        tracker.spawn(async move {
            handle_request(&config, local, got.peer, &datagram, shutdown).await;
            active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
    }
}

async fn idle(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Handles one request end to end.
async fn handle_request(
    config: &ServerConfig,
    local: IpAddr,
    peer: SocketAddr,
    datagram: &[u8],
    shutdown: CancellationToken,
) {
    let sock = match config.ports.bind(local) {
        Ok(s) => s,
        Err(e) => {
            config.log(Priority::Err, format_args!("bind: {}", strerror(&e)));
            return;
        }
    };
    // Only RRQ and WRQ in netascii or octet mode go further; everything else is a NAK.
    let illegal = |msg: String| Nak::new(ErrorCode::IllegalOperation, msg);
    let request = match Packet::decode(datagram) {
        Ok(Packet::Rrq(r) | Packet::Wrq(r)) if r.mode == Mode::Mail => {
            Err(illegal("Unknown mode".into()))
        }
        Ok(Packet::Rrq(r)) => Ok((RequestKind::Read, r)),
        Ok(Packet::Wrq(r)) => Ok((RequestKind::Write, r)),
        Ok(_) => Err(illegal("Illegal TFTP operation".into())),
        Err(DecodeError::UnknownMode { .. }) => Err(illegal("Unknown mode".into())),
        Err(e) => Err(illegal(format!("Malformed request: {e}"))),
    };
    match request.and_then(|(kind, r)| prepare(config, kind, &r, peer)) {
        Ok(job) => transfer::run(config, sock, peer, job, shutdown).await,
        Err(n) => nak(config, &sock, peer, &n).await,
    }
}

/// What a validated request will do.
pub(crate) enum Job {
    Read {
        name: String,
        source: transfer::Source,
        options: crate::proto::options::Negotiated,
    },
    Write {
        name: String,
        upload: transfer::Upload,
        mode: Mode,
        options: crate::proto::options::Negotiated,
    },
}

/// Remap, log, validate, open and negotiate: everything before the first packet goes out.
fn prepare(
    config: &ServerConfig,
    kind: RequestKind,
    request: &Request<'_>,
    peer: SocketAddr,
) -> Result<Job, Nak> {
    let Ok(original) = std::str::from_utf8(request.filename) else {
        return Err(Nak::access("Filename is not valid UTF-8"));
    };
    let verbosity = config.log.verbosity();
    let mut name = original.to_owned();
    if let Some(rules) = config.remap_rules() {
        let ctx = RemapContext {
            kind,
            client: peer.ip(),
        };
        let outcome = rules.apply(original, &ctx, &mut |t| {
            if t.is_warning() {
                config.log(Priority::Warning, format_args!("{t}"));
            } else if verbosity >= t.min_verbosity() {
                config.log(Priority::Info, format_args!("{t}"));
            }
        });
        match outcome {
            RemapOutcome::Mapped(n) => name = n,
            refused => {
                let msg = refused.error_message().unwrap_or("Access denied");
                return Err(Nak::access(msg));
            }
        }
    }
    if verbosity >= 1 {
        let verb = match kind {
            RequestKind::Read => "RRQ",
            RequestKind::Write => "WRQ",
        };
        if name == original {
            config.log(
                Priority::Notice,
                format_args!("{verb} from {} filename {}", peer.ip(), Printable(original)),
            );
        } else {
            config.log(
                Priority::Notice,
                format_args!(
                    "{verb} from {} filename {} remapped to {}",
                    peer.ip(),
                    Printable(original),
                    Printable(&name)
                ),
            );
        }
    }
    let (root_id, rel) = config.roots.resolve(&name)?;
    let root = config
        .roots
        .get(root_id)
        .ok_or_else(|| Nak::access("Forbidden directory"))?;
    match kind {
        RequestKind::Read => transfer::prepare_read(config, root_id, root, &rel, name, request),
        RequestKind::Write => transfer::prepare_write(config, root, &rel, name, request),
    }
}

/// Sends an ERROR and logs it at `-vv` as tftpd-hpa does.
async fn nak(config: &ServerConfig, sock: &udp::TransferSocket, peer: SocketAddr, n: &Nak) {
    if config.log.verbosity() >= 2 {
        config.log(
            Priority::Info,
            format_args!(
                "sending NAK ({}, {}) to {}",
                n.code.code(),
                n.message,
                peer.ip()
            ),
        );
    }
    let pkt = Packet::Error {
        code: n.code,
        message: n.message.as_bytes(),
    };
    if let Err(e) = sock.send_to(&pkt.to_vec(), peer).await {
        config.log(Priority::Warning, format_args!("nak: {}", strerror(&e)));
    }
}

/// Canonicalises and opens the served directories (before any chroot).
pub fn open_roots(secure: bool, dirs: &[PathBuf]) -> io::Result<Roots> {
    if secure {
        let dir = dirs
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no -s directory"))?;
        let root = ServeRoot::open(dir)?.require_world_readable(false);
        return Ok(Roots::Secure(root));
    }
    let dirs: Vec<PathBuf> = if dirs.is_empty() {
        vec![PathBuf::from("/")]
    } else {
        dirs.to_vec()
    };
    dirs.iter()
        .map(|d| {
            let root = ServeRoot::open(d)?.require_world_readable(false);
            Ok((clean_prefix(d), root))
        })
        .collect::<io::Result<_>>()
        .map(Roots::Prefixes)
}

/// A prefix compared component by component (so `/srv/tftp` does not match `/srv/tftpx`).
fn clean_prefix(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect::<PathBuf>()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rules_match_tftpd_hpa_messages() {
        let dir = tempfile::tempdir().unwrap();
        let roots = open_roots(false, &[dir.path().to_path_buf()]).unwrap();
        let base = dir.path().to_str().unwrap();
        assert_eq!(
            roots.resolve("relative").unwrap_err().message,
            "Only absolute filenames allowed"
        );
        assert_eq!(
            roots
                .resolve(&format!("{base}/a/../b"))
                .unwrap_err()
                .message,
            "Reverse path not allowed"
        );
        assert_eq!(
            roots.resolve("/etc/passwd").unwrap_err().message,
            "Forbidden directory"
        );
        assert_eq!(
            roots.resolve(&format!("{base}x/f")).unwrap_err().message,
            "Forbidden directory"
        );
        let (id, rel) = roots.resolve(&format!("{base}/EWC/ap1g8")).unwrap();
        assert_eq!((id, rel.as_bytes()), (0, &b"EWC/ap1g8"[..]));
    }

    #[test]
    fn secure_names_are_relative_and_dotdot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let roots = open_roots(true, &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            roots.resolve("/EWC/ap1g8").unwrap().1.as_bytes(),
            b"EWC/ap1g8"
        );
        assert_eq!(
            roots.resolve("EWC/ap1g8").unwrap().1.as_bytes(),
            b"EWC/ap1g8"
        );
        let n = roots.resolve("../etc/passwd").unwrap_err();
        assert_eq!(n.code, ErrorCode::AccessViolation);
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(Printable("a\nb\x1b").to_string(), "a\\x0ab\\x1b");
        assert_eq!(
            Printable("/EWC/17_9_4a/ap1g8").to_string(),
            "/EWC/17_9_4a/ap1g8"
        );
    }

    #[test]
    fn strerror_drops_rust_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(strerror(&e), "No space left on device");
    }
}
