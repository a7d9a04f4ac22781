//! The TFTP client: a thin tokio shell around `tftpd::proto::Receiver` (the same sans-IO core
//! the server uses; no second codec).
//!
//! It asks for blksize, tsize, timeout and windowsize. A server that answers without an OACK
//! (RFC 1350 servers) is followed at the defaults; one that refuses the options with ERROR 8
//! is asked again without any. Block numbers roll over past 65535 whichever way the server
//! wraps. Retransmissions follow the core's doubling schedule, and the whole fetch stops at
//! an overall deadline.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tftpd::proto::client::Requested;
use tftpd::proto::packet::{ErrorCode, Mode};
use tftpd::proto::{Outcome, Receiver, RetransmitPolicy, TransferError, Transmit};
use tokio::net::UdpSocket;

use crate::error::{ErrorKind, FetchError};
use crate::progress::Progress;
use crate::source::Source;

/// How a TFTP fetch is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpOptions {
    /// RFC 2348 blksize to ask for (`None`: do not ask). 1468 fills an Ethernet frame.
    pub blksize: Option<u16>,
    /// RFC 7440 windowsize to ask for (`None`: lock-step).
    pub windowsize: Option<u16>,
    /// First retransmission timeout; also asked for as RFC 2349 `timeout` (whole seconds).
    pub retransmit: Duration,
    /// The whole fetch must end within this.
    pub deadline: Duration,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            blksize: Some(1468),
            windowsize: Some(16),
            retransmit: Duration::from_secs(1),
            deadline: Duration::from_secs(300),
        }
    }
}

impl TftpOptions {
    fn requested(&self) -> Requested {
        let secs = self.retransmit.as_secs();
        Requested {
            blksize: self.blksize,
            windowsize: self.windowsize.filter(|w| *w > 1),
            timeout: (1..=255)
                .contains(&secs)
                .then(|| u8::try_from(secs).unwrap_or(255)),
            tsize: Some(0),
            rollover: None,
        }
    }
}

/// What a successful fetch delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes written.
    pub bytes: u64,
    /// The size the server announced (tsize), if it did.
    pub announced: Option<u64>,
    /// Whether the options were dropped after an ERROR 8.
    pub fell_back: bool,
}

/// Fetches `source` (a `tftp://` source) into `sink`, reporting progress.
pub async fn fetch(
    source: &Source,
    opts: &TftpOptions,
    sink: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Fetched, FetchError> {
    Ok(request(source, opts, sink, progress, false).await?.0)
}

/// Asks for `source` as a fetch would, and ends the transfer as soon as the server answers:
/// `Ok` means the file exists and is readable, with its size when the server sent `tsize`
/// (or the whole file fit in the first block). TFTP has no other way to ask.
pub async fn probe(source: &Source, opts: &TftpOptions) -> Result<Option<u64>, FetchError> {
    let (fetched, complete) =
        request(source, opts, &mut std::io::sink(), &mut |_| {}, true).await?;
    Ok(fetched.announced.or(complete.then_some(fetched.bytes)))
}

async fn request(
    source: &Source,
    opts: &TftpOptions,
    sink: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
    probe: bool,
) -> Result<(Fetched, bool), FetchError> {
    let Source::Tftp { host, port, path } = source else {
        return Err(FetchError::new(
            source,
            ErrorKind::Protocol,
            "not a tftp:// source",
        ));
    };
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let server = crate::resolve(source, host, *port, deadline)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| FetchError::new(source, ErrorKind::UnknownHost, "no address"))?;
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| FetchError::new(source, ErrorKind::LocalIo, e.to_string()))?;
    let asked = opts.requested();
    match transfer(
        source, &socket, server, path, asked, opts, deadline, sink, progress, probe,
    )
    .await
    {
        Err(Retry::WithoutOptions) if !asked.is_empty() => {
            let plain = Requested::default();
            let (mut done, complete) = transfer(
                source, &socket, server, path, plain, opts, deadline, sink, progress, probe,
            )
            .await
            .map_err(Retry::into_error)?;
            done.fell_back = true;
            Ok((done, complete))
        }
        other => other.map_err(Retry::into_error),
    }
}

/// A failed attempt: give up, or ask again without options.
enum Retry {
    Fail(FetchError),
    WithoutOptions,
}

impl Retry {
    fn into_error(self) -> FetchError {
        match self {
            Retry::Fail(e) => e,
            Retry::WithoutOptions => FetchError::new("", ErrorKind::Protocol, "options refused"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn transfer(
    source: &Source,
    socket: &UdpSocket,
    server: SocketAddr,
    path: &str,
    asked: Requested,
    opts: &TftpOptions,
    deadline: Instant,
    sink: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
    probe: bool,
) -> Result<(Fetched, bool), Retry> {
    let fail = |kind, detail: String| Retry::Fail(FetchError::new(source, kind, detail));
    let policy = RetransmitPolicy::tftpd_hpa(opts.retransmit);
    let mut r = Receiver::client(server, path.as_bytes(), Mode::Octet, asked, policy);
    let mut buf = vec![0u8; 65_536 + 4];
    let mut written: u64 = 0;
    let mut announced = None;
    loop {
        let now = Instant::now();
        while let Some(t) = r.poll_transmit(now) {
            if let Transmit::Packet { dest, bytes } = t {
                // A lost send is a lost datagram: the retransmission timer covers it.
                let _ = socket.send_to(bytes, dest).await;
            }
        }
        if let Some(outcome) = r.outcome() {
            // Complete arrives with the final block; its ACK was just sent. A client has no
            // reason to linger for duplicates (tftp-hpa and curl do not either).
            return match outcome {
                Outcome::Complete => {
                    sink.flush()
                        .map_err(|e| fail(ErrorKind::LocalIo, e.to_string()))?;
                    if let Some(size) = announced
                        && size != written
                    {
                        return Err(fail(
                            ErrorKind::Verification,
                            format!("server announced {size} bytes, sent {written}"),
                        ));
                    }
                    Ok((
                        Fetched {
                            bytes: written,
                            announced,
                            fell_back: false,
                        },
                        true,
                    ))
                }
                Outcome::Failed(e) => Err(classify(source, e, &asked, written)),
            };
        }
        if Instant::now() >= deadline {
            r.abort(ErrorCode::Undefined, "Timed out");
            while let Some(Transmit::Packet { dest, bytes }) = r.poll_transmit(Instant::now()) {
                let _ = socket.send_to(bytes, dest).await;
            }
            return Err(fail(
                ErrorKind::TimedOut,
                format!("deadline of {} s reached", opts.deadline.as_secs()),
            ));
        }
        let wake = r.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let now = Instant::now();
                if let Some(payload) = r.handle_datagram(now, from, &buf[..n]) {
                    if written == 0 && announced.is_none() {
                        announced = r.agreed().tsize;
                    }
                    if let Err(e) = sink.write_all(payload) {
                        r.abort(ErrorCode::DiskFull, "Disk full or allocation exceeded");
                        while let Some(Transmit::Packet { dest, bytes }) = r.poll_transmit(Instant::now()) {
                            let _ = socket.send_to(bytes, dest).await;
                        }
                        return Err(fail(ErrorKind::LocalIo, e.to_string()));
                    }
                    written += payload.len() as u64;
                    progress(Progress { done: written, total: announced });
                } else if announced.is_none() {
                    announced = r.agreed().tsize;
                }
                if probe && r.answered() && r.outcome().is_none() {
                    // The file is there: end the transfer (RFC 2347 lets a client end it
                    // after the OACK with ERROR 8; after DATA, ERROR 0).
                    let code = if written == 0 { ErrorCode::OptionNegotiation } else { ErrorCode::Undefined };
                    r.abort(code, "probe only");
                    while let Some(Transmit::Packet { dest, bytes }) = r.poll_transmit(Instant::now()) {
                        let _ = socket.send_to(bytes, dest).await;
                    }
                    let fetched = Fetched { bytes: written, announced, fell_back: false };
                    return Ok((fetched, false));
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                r.handle_timeout(Instant::now());
            }
        }
    }
}

fn classify(source: &Source, e: &TransferError, asked: &Requested, written: u64) -> Retry {
    match e {
        TransferError::Peer { code, message, .. } => {
            if *code == ErrorCode::OptionNegotiation && !asked.is_empty() && written == 0 {
                return Retry::WithoutOptions;
            }
            // tftpd-hpa answers an errno it has no code for with ERROR 0 and strerror's text
            // (`Permission denied` when its unprivileged user cannot open the file).
            let kind = match (code, message.as_str()) {
                (ErrorCode::FileNotFound, _) => ErrorKind::NotFound,
                (ErrorCode::AccessViolation, _) => ErrorKind::PermissionDenied,
                (ErrorCode::Undefined, "Permission denied") => ErrorKind::PermissionDenied,
                (ErrorCode::Undefined, "No such file or directory") => ErrorKind::NotFound,
                _ => ErrorKind::Protocol,
            };
            let detail = if kind == ErrorKind::Protocol {
                format!("server error {}: {message}", code.code())
            } else {
                String::new()
            };
            Retry::Fail(FetchError::new(source, kind, detail))
        }
        TransferError::TimedOut { timeouts } => Retry::Fail(FetchError::new(
            source,
            ErrorKind::TimedOut,
            format!("no answer after {timeouts} retransmissions"),
        )),
        TransferError::Aborted { message, .. } => Retry::Fail(FetchError::new(
            source,
            ErrorKind::Protocol,
            message.clone(),
        )),
    }
}
