//! The SFTP client: russh for SSH, sftpd's SFTP v3 codec (one codec for server and client),
//! and many reads in flight.
//!
//! The host key is checked before anything else is sent: against a known_hosts file, a
//! pinned `SHA256:` fingerprint, or — only when asked — trusted on first use and recorded.
//! After `limits@openssh.com` the client reads in the server's largest chunks (256 KiB from
//! OpenSSH and sftpd), keeping up to `in_flight` READs outstanding; replies are written in
//! offset order and short reads are asked again for the rest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use sftpd::sftp::{
    self, Attrs, ExtendedRequest, Framer, Limits, Request, Response, StatusCode, open_flags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ErrorKind, FetchError};
use crate::progress::Progress;
use crate::source::Source;

/// How the server's host key is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// The key must be recorded for the host in this known_hosts file.
    KnownHosts(PathBuf),
    /// The key's `SHA256:…` fingerprint must be this.
    Fingerprint(String),
    /// Trust on first use: a key recorded in the file must match; an unknown one is
    /// accepted and appended.
    AcceptNew(PathBuf),
}

/// How the client logs in. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A password.
    Password(String),
    /// An OpenSSH private key file (unencrypted).
    Key(PathBuf),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(*****)"),
            Credential::Key(p) => write!(f, "Key({})", p.display()),
        }
    }
}

/// How an SFTP fetch is made.
#[derive(Debug, Clone)]
pub struct SftpOptions {
    /// Login.
    pub credential: Credential,
    /// Host key trust.
    pub host_key: HostKeyCheck,
    /// The whole fetch must end within this.
    pub deadline: Duration,
    /// READ requests kept outstanding (OpenSSH's client keeps 64).
    pub in_flight: usize,
}

/// What a successful fetch delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes written.
    pub bytes: u64,
    /// The size the server reported (FSTAT), if it did.
    pub announced: Option<u64>,
    /// The READ length used.
    pub chunk: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Trusted,
    Mismatch(String),
    Unknown(String),
}

struct Client {
    check: HostKeyCheck,
    host: String,
    port: u16,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl Client {
    fn judge(&self, key: &PublicKey) -> Verdict {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        match &self.check {
            HostKeyCheck::Fingerprint(want) => {
                if *want == fp {
                    Verdict::Trusted
                } else {
                    Verdict::Mismatch(format!("server key {fp}, expected {want}"))
                }
            }
            HostKeyCheck::KnownHosts(path) | HostKeyCheck::AcceptNew(path) => {
                match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                    Ok(true) => Verdict::Trusted,
                    Ok(false) => {
                        if let HostKeyCheck::AcceptNew(p) = &self.check {
                            match russh::keys::known_hosts::learn_known_hosts_path(
                                &self.host, self.port, key, p,
                            ) {
                                Ok(()) => Verdict::Trusted,
                                Err(e) => Verdict::Unknown(format!("cannot record {fp}: {e}")),
                            }
                        } else {
                            Verdict::Unknown(format!(
                                "no key for the host in {}; server key {fp}",
                                path.display()
                            ))
                        }
                    }
                    Err(russh::keys::Error::KeyChanged { line }) => Verdict::Mismatch(format!(
                        "server key {fp} differs from {}:{line}",
                        path.display()
                    )),
                    Err(e) => Verdict::Unknown(format!("{}: {e}", path.display())),
                }
            }
        }
    }
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => self.judge(key),
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                Verdict::Unknown("host certificates are not supported".into())
            }
        };
        let ok = verdict == Verdict::Trusted;
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
        Ok(ok)
    }
}

/// Fetches `source` (an `sftp://` source) into `sink`, reporting progress: one session,
/// one file, all within `opts.deadline`.
pub async fn fetch(
    source: &Source,
    opts: &SftpOptions,
    sink: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Fetched, FetchError> {
    let deadline = Instant::now() + opts.deadline;
    let work = async {
        let mut session = Session::open(source, opts).await?;
        let fetched = session.fetch(source, sink, progress).await?;
        session.close().await;
        Ok(fetched)
    };
    within(source, opts.deadline, deadline, work).await
}

/// Runs `work`, failing with "Timed out" at `deadline`.
pub(crate) async fn within<T>(
    source: &Source,
    budget: Duration,
    deadline: Instant,
    work: impl Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::new(
            source,
            ErrorKind::TimedOut,
            format!("deadline of {} s reached", budget.as_secs()),
        )),
    }
}

/// File type bits of SFTP's `permissions` (POSIX values, as draft-ietf-secsh-filexfer-02
/// carries them).
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;

/// What [`Session::stat`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes, when the server says.
    pub size: Option<u64>,
    /// A folder.
    pub is_dir: bool,
}

/// A logged-in SFTP session: several files fetched (or looked at) over one SSH connection,
/// as `relay bundle` and `relay check` do for a bundle folder. Callers bound its calls with
/// a deadline (a session has none of its own).
pub struct Session {
    handle: russh::client::Handle<Client>,
    stream: russh::ChannelStream<russh::client::Msg>,
    conn: Conn,
    /// READ length (from `limits@`, else 32 KiB).
    chunk: u32,
    /// Next request id.
    id: u32,
    in_flight: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("chunk", &self.chunk)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects to `source`'s server, checks its host key, logs in and starts SFTP. Errors
    /// name `source`.
    pub async fn open(source: &Source, opts: &SftpOptions) -> Result<Session, FetchError> {
        let Source::Sftp {
            user, host, port, ..
        } = source
        else {
            return Err(FetchError::new(
                source,
                ErrorKind::Protocol,
                "not an sftp:// source",
            ));
        };
        let err = |kind, detail: String| FetchError::new(source, kind, detail);
        // Callers bound the whole session with their deadline (`within`).
        let far = Instant::now() + Duration::from_secs(3600);
        let addrs = crate::resolve(source, host, *port, far).await?;
        let tcp = tokio::net::TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => err(ErrorKind::Refused, String::new()),
                std::io::ErrorKind::TimedOut => err(ErrorKind::TimedOut, e.to_string()),
                _ => err(ErrorKind::Unreachable, e.to_string()),
            })?;
        let _ = tcp.set_nodelay(true);
        let verdict = Arc::new(Mutex::new(None));
        let client = Client {
            check: opts.host_key.clone(),
            host: host.clone(),
            port: *port,
            verdict: Arc::clone(&verdict),
        };
        let config = Arc::new(russh::client::Config {
            // Room for the server to keep 64 replies of 256 KiB in flight.
            window_size: 16 * 1024 * 1024,
            channel_buffer_size: 1024,
            inactivity_timeout: None,
            nodelay: true,
            ..russh::client::Config::default()
        });
        let mut handle = match russh::client::connect_stream(config, tcp, client).await {
            Ok(h) => h,
            Err(e) => {
                let v = verdict
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                return Err(match v {
                    Some(Verdict::Mismatch(d)) | Some(Verdict::Unknown(d)) => {
                        err(ErrorKind::HostKeyMismatch, d)
                    }
                    _ => err(ErrorKind::Protocol, e.to_string()),
                });
            }
        };
        let auth = match &opts.credential {
            Credential::Password(pw) => {
                handle.authenticate_password(user.clone(), pw.clone()).await
            }
            Credential::Key(file) => {
                let key = russh::keys::load_secret_key(file, None)
                    .map_err(|e| err(ErrorKind::LocalIo, format!("{}: {e}", file.display())))?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten();
                handle
                    .authenticate_publickey(
                        user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
            }
        }
        .map_err(|e| err(ErrorKind::Protocol, e.to_string()))?;
        if !auth.success() {
            return Err(err(ErrorKind::AuthenticationFailed, String::new()));
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| err(ErrorKind::Protocol, e.to_string()))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| err(ErrorKind::Protocol, e.to_string()))?;
        let mut session = Session {
            handle,
            stream: channel.into_stream(),
            conn: Conn {
                buf: Vec::with_capacity(2 << 20),
                start: 0,
                framer: Framer::default(),
                out: Vec::with_capacity(4096),
            },
            chunk: 32 * 1024,
            id: 1,
            in_flight: opts.in_flight.max(1),
        };
        session
            .init()
            .await
            .map_err(|e| err(ErrorKind::Protocol, e))?;
        Ok(session)
    }

    /// INIT → VERSION, then the read length from `limits@openssh.com` when offered.
    async fn init(&mut self) -> Result<(), String> {
        self.send(&Request::Init {
            version: sftp::SFTP_VERSION,
            extensions: Vec::new(),
        })
        .await?;
        let has_limits = {
            let packet = self.conn.next(&mut self.stream).await?;
            match Response::decode(&packet) {
                Ok(Response::Version { extensions, .. }) => {
                    extensions.iter().any(|(n, _)| *n == sftp::ext_name::LIMITS)
                }
                other => return Err(format!("expected VERSION, got {other:?}")),
            }
        };
        if has_limits {
            let id = self.next_id();
            self.send(&Request::Extended {
                id,
                request: ExtendedRequest::Limits,
            })
            .await?;
            let packet = self.conn.next(&mut self.stream).await?;
            if let Ok(Response::ExtendedReply { data, .. }) = Response::decode(&packet)
                && let Ok(l) = Limits::decode(data)
            {
                // At most what the framer accepts (256 KiB of data plus headers).
                let max = l
                    .max_read_length
                    .min(u64::from(sftp::DEFAULT_MAX_PACKET_LEN - 1024));
                if max >= 1024 {
                    self.chunk = u32::try_from(max).unwrap_or(self.chunk);
                }
            }
        }
        Ok(())
    }

    fn next_id(&mut self) -> u32 {
        let id = self.id;
        self.id = self.id.wrapping_add(1);
        id
    }

    async fn send(&mut self, r: &Request<'_>) -> Result<(), String> {
        self.conn.send(&mut self.stream, r).await
    }

    /// What STAT (following links) says of `source`'s path. A missing path is
    /// [`ErrorKind::NotFound`].
    pub async fn stat(&mut self, source: &Source) -> Result<Stat, FetchError> {
        let path = sftp_path(source)?;
        let proto = |e: String| FetchError::new(source, ErrorKind::Protocol, e);
        let id = self.next_id();
        self.send(&Request::Stat {
            id,
            path: path.as_bytes(),
        })
        .await
        .map_err(proto)?;
        let packet = self.conn.next(&mut self.stream).await.map_err(proto)?;
        match Response::decode(&packet) {
            Ok(Response::Attrs { attrs, .. }) => Ok(Stat {
                size: attrs.size,
                is_dir: attrs.permissions.is_some_and(|p| p & S_IFMT == S_IFDIR),
            }),
            Ok(Response::Status { code, message, .. }) => Err(status_error(source, code, message)),
            other => Err(proto(format!("expected ATTRS, got {other:?}"))),
        }
    }

    /// Fetches `source`'s path (on this session's server) into `sink`: OPEN, FSTAT for the
    /// size, then READs kept in flight, written in offset order.
    pub async fn fetch(
        &mut self,
        source: &Source,
        sink: &mut (dyn Write + Send),
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Fetched, FetchError> {
        let path = sftp_path(source)?;
        let err = |kind, detail: String| FetchError::new(source, kind, detail);
        let proto = |e: String| err(ErrorKind::Protocol, e);
        let id = self.next_id();
        self.send(&Request::Open {
            id,
            filename: path.as_bytes(),
            pflags: open_flags::READ,
            attrs: Attrs::default(),
        })
        .await
        .map_err(proto)?;
        let handle_bytes = {
            let packet = self.conn.next(&mut self.stream).await.map_err(proto)?;
            match Response::decode(&packet) {
                Ok(Response::Handle { handle, .. }) => handle.to_vec(),
                Ok(Response::Status { code, message, .. }) => {
                    return Err(status_error(source, code, message));
                }
                other => return Err(proto(format!("expected HANDLE, got {other:?}"))),
            }
        };
        // FSTAT for the size (progress, and the completeness check).
        let id = self.next_id();
        self.send(&Request::Fstat {
            id,
            handle: &handle_bytes,
        })
        .await
        .map_err(proto)?;
        let announced = {
            let packet = self.conn.next(&mut self.stream).await.map_err(proto)?;
            match Response::decode(&packet) {
                Ok(Response::Attrs { attrs, .. }) => attrs.size,
                _ => None,
            }
        };
        let read = self
            .read_all(source, &handle_bytes, announced, sink, progress)
            .await;
        // Closed whatever the outcome, so a failed file does not leak a handle.
        let id = self.next_id();
        let closed = self
            .send(&Request::Close {
                id,
                handle: &handle_bytes,
            })
            .await;
        let written = read?;
        closed.map_err(proto)?;
        let _ = self.conn.next(&mut self.stream).await;
        if let Some(size) = announced
            && size != written
        {
            return Err(err(
                ErrorKind::Verification,
                format!("server reported {size} bytes, sent {written}"),
            ));
        }
        Ok(Fetched {
            bytes: written,
            announced,
            chunk: self.chunk,
        })
    }

    /// Pipelined READs of an open handle until EOF; returns the bytes written.
    async fn read_all(
        &mut self,
        source: &Source,
        handle: &[u8],
        announced: Option<u64>,
        sink: &mut (dyn Write + Send),
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<u64, FetchError> {
        let err = |kind, detail: String| FetchError::new(source, kind, detail);
        let proto = |e: String| err(ErrorKind::Protocol, e);
        let chunk = self.chunk;
        let mut pending: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
        let mut early: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut next_offset: u64 = 0;
        let mut written: u64 = 0;
        let mut eof = false;
        loop {
            while !eof
                && pending.len() < self.in_flight
                && announced.is_none_or(|s| next_offset < s)
            {
                let id = self.next_id();
                self.conn.queue(&Request::Read {
                    id,
                    handle,
                    offset: next_offset,
                    len: chunk,
                });
                pending.insert(id, (next_offset, chunk));
                next_offset += u64::from(chunk);
            }
            self.conn.flush(&mut self.stream).await.map_err(proto)?;
            if pending.is_empty() {
                break;
            }
            let packet = self.conn.next(&mut self.stream).await.map_err(proto)?;
            let (rid, data) = match Response::decode(&packet) {
                Ok(Response::Data { id, data }) => (id, Some(data)),
                Ok(Response::Status {
                    id, code, message, ..
                }) => {
                    if code != StatusCode::Eof {
                        return Err(status_error(source, code, message));
                    }
                    (id, None)
                }
                other => return Err(proto(format!("unexpected reply {other:?}"))),
            };
            let Some((offset, asked)) = pending.remove(&rid) else {
                return Err(proto(format!("reply to unknown request {rid}")));
            };
            let Some(data) = data else {
                // EOF: nothing at or past `offset`; stop asking for more.
                eof = true;
                next_offset = next_offset.min(offset);
                continue;
            };
            let got = u32::try_from(data.len()).unwrap_or(u32::MAX);
            if got < asked && !data.is_empty() {
                // A short read: ask for the rest of this range.
                let id = self.next_id();
                self.conn.queue(&Request::Read {
                    id,
                    handle,
                    offset: offset + u64::from(got),
                    len: asked - got,
                });
                pending.insert(id, (offset + u64::from(got), asked - got));
            }
            if offset == written {
                sink.write_all(data)
                    .map_err(|e| err(ErrorKind::LocalIo, e.to_string()))?;
                written += data.len() as u64;
                while let Some(bytes) = early.remove(&written) {
                    sink.write_all(&bytes)
                        .map_err(|e| err(ErrorKind::LocalIo, e.to_string()))?;
                    written += bytes.len() as u64;
                }
                progress(Progress {
                    done: written,
                    total: announced,
                });
            } else if offset > written {
                early.insert(offset, data.to_vec());
            }
        }
        if !early.is_empty() {
            return Err(proto("the server's replies left a gap in the file".into()));
        }
        Ok(written)
    }

    /// Ends the SFTP channel and the SSH connection.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
    }
}

fn sftp_path(source: &Source) -> Result<&str, FetchError> {
    match source {
        Source::Sftp { path, .. } => Ok(path),
        _ => Err(FetchError::new(
            source,
            ErrorKind::Protocol,
            "not an sftp:// source",
        )),
    }
}

fn status_error(source: &Source, code: StatusCode, message: &str) -> FetchError {
    let kind = match code {
        StatusCode::NoSuchFile => ErrorKind::NotFound,
        StatusCode::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Protocol,
    };
    let detail = if kind == ErrorKind::Protocol {
        message.to_owned()
    } else {
        String::new()
    };
    FetchError::new(source, kind, detail)
}

/// Framing over the channel stream: bytes are read straight into `buf`, packets are found
/// from `start`, and the buffer is compacted only when the consumed head grows large (no
/// memmove per packet).
struct Conn {
    buf: Vec<u8>,
    start: usize,
    framer: Framer,
    out: Vec<u8>,
}

impl Conn {
    fn queue(&mut self, r: &Request<'_>) {
        r.encode(&mut self.out);
    }

    async fn flush<S: tokio::io::AsyncWrite + Unpin>(&mut self, s: &mut S) -> Result<(), String> {
        if !self.out.is_empty() {
            s.write_all(&self.out).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())?;
            self.out.clear();
        }
        Ok(())
    }

    async fn send<S: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        s: &mut S,
        r: &Request<'_>,
    ) -> Result<(), String> {
        self.queue(r);
        self.flush(s).await
    }

    /// The next complete packet (type byte + payload).
    async fn next<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
    ) -> Result<Vec<u8>, String> {
        loop {
            match self.framer.next_packet(&self.buf[self.start..]) {
                Ok(Some(frame)) => {
                    let packet = frame.packet.to_vec();
                    self.start += frame.consumed;
                    return Ok(packet);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad SFTP packet from the server: {e}")),
            }
            if self.start > 0 && (self.start == self.buf.len() || self.start >= 1 << 20) {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(64 * 1024);
            let n = s.read_buf(&mut self.buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the SFTP channel".into());
            }
        }
    }
}
