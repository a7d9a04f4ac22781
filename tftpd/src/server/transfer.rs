//! One transfer: open and check the file, negotiate, then pump the state machine between
//! its socket and its timer. DATA is framed from the shared mapping into one reused buffer
//! (no allocation per block); uploads go to a hidden temporary file that is renamed into
//! place only once the last block has arrived.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::files::Mapped;
use super::udp::{DataPacket, MAX_BATCH, SendError, TransferSocket};
use super::{Job, Nak, Printable, ServerConfig, strerror};
use crate::confine::{ConfineError, Dir, RelativeName, ServeRoot};
use crate::proto::options::{Direction, Negotiated, negotiate};
use crate::proto::packet::{ErrorCode, MAX_PACKET_LEN, Mode, Request};
use crate::proto::{
    Outcome, Receiver, RecvConfig, RetransmitPolicy, Rollover, SendConfig, Sender, Stats,
    TransferError, Transmit, netascii,
};
use crate::syslog::Priority;

/// The bytes an RRQ serves.
pub(crate) enum Source {
    /// Octet mode: the shared mapping.
    Mapped(Arc<Mapped>),
    /// Netascii mode: the converted text (netascii files are small configuration files).
    Converted(Vec<u8>),
}

impl Source {
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Mapped(m) => m.bytes(),
            Source::Converted(v) => v,
        }
    }
}

/// Where a WRQ's bytes go until they are complete.
pub(crate) struct Upload {
    dir: Dir,
    final_name: OsString,
    temp_name: OsString,
    file: Option<io::BufWriter<File>>,
}

impl Upload {
    fn discard(&mut self) {
        self.file = None;
        let _ = self.dir.remove_temp(&self.temp_name);
    }

    fn commit(&mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already closed"))?;
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_data()?;
        drop(file);
        self.dir
            .rename_into_place(&self.temp_name, &self.final_name)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.discard();
        }
    }
}

fn confine_nak(e: &ConfineError) -> Nak {
    Nak::from_confine(e)
}

/// Opens the file for an RRQ, checks it, and negotiates.
pub(crate) fn prepare_read(
    config: &ServerConfig,
    root_id: usize,
    root: &ServeRoot,
    rel: &RelativeName,
    name: String,
    request: &Request<'_>,
) -> Result<Job, Nak> {
    let mapped = config
        .cache
        .open(root_id, root, rel)
        .map_err(|e| confine_nak(&e))?;
    if !config.permissive && mapped.mode & 0o004 == 0 {
        return Err(Nak::new(
            ErrorCode::AccessViolation,
            "File must have global read permissions",
        ));
    }
    let source = match request.mode {
        Mode::Netascii => Source::Converted(netascii::encode(mapped.bytes())),
        _ => Source::Mapped(mapped),
    };
    let file_size = source.bytes().len() as u64;
    let options = negotiate(
        request.options,
        request.mode,
        Direction::Read { file_size },
        &config.limits,
    )
    .map_err(|e| Nak::new(ErrorCode::OptionNegotiation, e.wire_message()))?;
    Ok(Job::Read {
        name,
        source,
        options,
    })
}

/// Checks a WRQ, creates its temporary file, and negotiates.
pub(crate) fn prepare_write(
    config: &ServerConfig,
    root: &ServeRoot,
    rel: &RelativeName,
    name: String,
    request: &Request<'_>,
) -> Result<Job, Nak> {
    let (dir, final_name) = root.open_parent(rel).map_err(|e| confine_nak(&e))?;
    let existing = dir
        .stat_entry(&final_name)
        .map_err(|e| confine_nak(&ConfineError::from_io(rel.as_bytes(), e)))?;
    let keep_mode = match &existing {
        Some(meta) if !meta.is_file() => {
            return Err(Nak::new(ErrorCode::AccessViolation, "Access denied"));
        }
        Some(meta) => {
            if !config.permissive && meta.permissions().mode() & 0o002 == 0 {
                return Err(Nak::new(
                    ErrorCode::AccessViolation,
                    "File must have global write permissions",
                ));
            }
            Some(meta.permissions().mode() & 0o7777)
        }
        None if !config.create => {
            return Err(Nak::new(ErrorCode::FileNotFound, "File not found"));
        }
        None => None,
    };
    let options = negotiate(
        request.options,
        request.mode,
        Direction::Write,
        &config.limits,
    )
    .map_err(|e| Nak::new(ErrorCode::OptionNegotiation, e.wire_message()))?;
    let (file, temp_name) = dir
        .create_temp(&final_name, 0o666)
        .map_err(|e| Nak::from_io(&e))?;
    if let Some(mode) = keep_mode {
        // The replacement keeps the permissions of the file it replaces.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    }
    Ok(Job::Write {
        name,
        upload: Upload {
            dir,
            final_name,
            temp_name,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
        },
        mode: request.mode,
        options,
    })
}

fn policy(config: &ServerConfig, n: &Negotiated) -> RetransmitPolicy {
    RetransmitPolicy::tftpd_hpa(n.timeout.unwrap_or(config.retransmit))
}

/// Runs a prepared job to its end and logs the summary line.
pub(crate) async fn run(
    config: &ServerConfig,
    sock: TransferSocket,
    peer: SocketAddr,
    job: Job,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    match job {
        Job::Read {
            name,
            source,
            options,
        } => {
            let cfg = SendConfig {
                blksize: options.blksize,
                windowsize: options.windowsize,
                rollover: Rollover::to(options.rollover),
                retransmit: policy(config, &options),
            };
            let len = source.bytes().len() as u64;
            let mut m = Sender::server(peer, cfg, len, Some(&options.oack));
            let io_result = drive_send(&sock, &mut m, &source, &shutdown).await;
            let outcome = settle(config, io_result, m.outcome().cloned(), "read(ack)");
            report(
                config,
                "sent",
                "to",
                &name,
                peer,
                &outcome,
                m.stats(),
                started,
                &options,
            );
        }
        Job::Write {
            name,
            mut upload,
            mode,
            options,
        } => {
            let cfg = RecvConfig {
                blksize: options.blksize,
                windowsize: options.windowsize,
                rollover: Rollover::to(options.rollover),
                retransmit: policy(config, &options),
            };
            let mut m = Receiver::server(peer, cfg, Some(&options.oack));
            let io_result = drive_recv(&sock, &mut m, &mut upload, mode, &shutdown).await;
            let outcome = settle(config, io_result, m.outcome().cloned(), "read");
            if outcome != Some(Outcome::Complete) {
                upload.discard();
            }
            report(
                config,
                "received",
                "from",
                &name,
                peer,
                &outcome,
                m.stats(),
                started,
                &options,
            );
        }
    }
}

/// Folds a socket error into the outcome, logging it as tftpd-hpa does.
fn settle(
    config: &ServerConfig,
    io_result: io::Result<()>,
    outcome: Option<Outcome>,
    what: &str,
) -> Option<Outcome> {
    match io_result {
        Ok(()) => outcome,
        Err(e) => {
            config.log.log(
                Priority::Warning,
                format_args!("tftpd: {what}: {}", strerror(&e)),
            );
            Some(Outcome::Failed(TransferError::Aborted {
                code: ErrorCode::Undefined,
                message: strerror(&e),
            }))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    config: &ServerConfig,
    verb: &str,
    dir: &str,
    name: &str,
    peer: SocketAddr,
    outcome: &Option<Outcome>,
    stats: Stats,
    started: Instant,
    options: &Negotiated,
) {
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Some(Outcome::Failed(TransferError::Peer {
            refused_options: true,
            ..
        })) => {
            // tftpd-hpa logs this one whatever the verbosity.
            config.log.log(
                Priority::Warning,
                format_args!("tftp: client does not accept options"),
            );
        }
        Some(Outcome::Complete) if config.log.verbosity() >= 1 => {
            let mbps = if secs > 0.0 {
                stats.bytes as f64 / secs / 1e6
            } else {
                0.0
            };
            config.log.log(
                Priority::Notice,
                format_args!(
                    "{verb} {} {dir} {}: {} bytes in {secs:.3} s ({mbps:.1} MB/s), blksize {}, windowsize {}, {} retransmissions",
                    Printable(name),
                    peer.ip(),
                    stats.bytes,
                    options.blksize,
                    options.windowsize,
                    stats.retransmitted,
                ),
            );
        }
        Some(Outcome::Failed(e)) if config.log.verbosity() >= 1 => {
            config.log.log(
                Priority::Notice,
                format_args!(
                    "{verb} {} {dir} {} failed after {} bytes in {secs:.3} s: {e}",
                    Printable(name),
                    peer.ip(),
                    stats.bytes,
                ),
            );
        }
        _ => {}
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The transfer's timer. Progress pushes the state machine's deadline later on every block;
/// re-arming a tokio timer per block costs more than the block's system calls, so the timer
/// is only moved earlier, never later: when it fires before the machine's real deadline,
/// `handle_timeout` does nothing and the timer is re-armed. About one re-arm per second.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(far_future())),
            armed: None,
        }
    }

    fn want(&mut self, deadline: Option<Instant>) {
        let Some(d) = deadline else { return };
        if self.armed.is_none_or(|a| d < a) {
            self.sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            self.armed = Some(d);
        }
    }

    async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

/// What one round of `poll_transmit` produced, in order.
enum Out<'a> {
    Data(SocketAddr, DataPacket<'a>),
    Control(SocketAddr, Vec<u8>),
}

async fn drive_send(
    sock: &TransferSocket,
    m: &mut Sender,
    source: &Source,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let bytes = source.bytes();
    let window = usize::from(m.config().windowsize).clamp(1, MAX_BATCH);
    // Reused every round: after the first window nothing here allocates.
    let mut outs: Vec<Out<'_>> = Vec::with_capacity(window + 1);
    let mut batch: Vec<DataPacket<'_>> = Vec::with_capacity(window);
    // ACKs are 4 bytes; room for a stray DATA or ERROR is enough to classify it.
    let mut inbuf = vec![0u8; 1024];
    let mut timer = Timer::new();
    loop {
        let now = Instant::now();
        outs.clear();
        while let Some(t) = m.poll_transmit(now) {
            outs.push(match t {
                Transmit::Data {
                    dest,
                    header,
                    offset,
                    len,
                } => {
                    let start = usize::try_from(offset).unwrap_or(usize::MAX);
                    let payload = start
                        .checked_add(len)
                        .and_then(|end| bytes.get(start..end))
                        .ok_or_else(|| io::Error::other("block outside the file"))?;
                    Out::Data(dest, DataPacket { header, payload })
                }
                // Control packets (OACK, ERROR) are rare: copying them is fine.
                Transmit::Packet { dest, bytes } => Out::Control(dest, bytes.to_vec()),
            });
        }
        // Send in order: runs of DATA to one peer go out in one system call.
        let mut changed = false;
        let mut i = 0;
        while i < outs.len() {
            match &outs[i] {
                Out::Control(dest, pkt) => {
                    sock.send_to(pkt, *dest).await?;
                    i += 1;
                }
                Out::Data(dest, _) => {
                    let dest = *dest;
                    batch.clear();
                    while let Some(Out::Data(d, p)) = outs.get(i)
                        && *d == dest
                    {
                        batch.push(*p);
                        i += 1;
                    }
                    match sock.send_data(dest, &batch).await {
                        Ok(()) => {}
                        Err(SendError::SourceChanged) => changed = true,
                        Err(SendError::Io(e)) => return Err(e),
                    }
                }
            }
        }
        if changed {
            // Truncated in place under us: the kernel refused to read the vanished pages.
            m.abort(ErrorCode::Undefined, "File changed during transfer");
            continue;
        }
        if m.is_finished() {
            return Ok(());
        }
        match next_event(sock, &mut inbuf, &mut timer, m.poll_timeout(), shutdown).await? {
            Event::Datagram(n, from) => m.handle_datagram(Instant::now(), from, &inbuf[..n]),
            Event::Timer => m.handle_timeout(Instant::now()),
            Event::Shutdown => m.abort(ErrorCode::Undefined, "Server shutting down"),
        }
    }
}

/// What a transfer loop wakes up for.
enum Event {
    /// A datagram of this length, from this address, is in the buffer.
    Datagram(usize, SocketAddr),
    /// The timer fired (maybe early; the state machine decides).
    Timer,
    /// The server is shutting down.
    Shutdown,
}

/// Waits for the next datagram, the state machine's deadline, or shutdown.
async fn next_event(
    sock: &TransferSocket,
    inbuf: &mut [u8],
    timer: &mut Timer,
    deadline: Option<Instant>,
    shutdown: &CancellationToken,
) -> io::Result<Event> {
    timer.want(deadline);
    tokio::select! {
        r = sock.recv_from(inbuf) => r.map(|(n, from)| Event::Datagram(n, from)),
        () = timer.fired() => Ok(Event::Timer),
        () = shutdown.cancelled() => Ok(Event::Shutdown),
    }
}

async fn drive_recv(
    sock: &TransferSocket,
    m: &mut Receiver,
    upload: &mut Upload,
    mode: Mode,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    // One byte more than the largest legal DATA, so an oversized block is seen as such.
    let mut inbuf = vec![0u8; (4 + usize::from(m.config().blksize) + 1).min(MAX_PACKET_LEN + 1)];
    let mut decoded = Vec::new();
    let mut decoder = netascii::Decoder::new();
    let mut committed = false;
    let mut timer = Timer::new();
    loop {
        let now = Instant::now();
        while let Some(t) = m.poll_transmit(now) {
            if let Transmit::Packet { dest, bytes } = t {
                sock.send_to(bytes, dest).await?;
            }
        }
        if m.is_finished() {
            return Ok(());
        }
        let (n, from) =
            match next_event(sock, &mut inbuf, &mut timer, m.poll_timeout(), shutdown).await? {
                Event::Datagram(n, from) => (n, from),
                Event::Timer => {
                    m.handle_timeout(Instant::now());
                    continue;
                }
                Event::Shutdown => {
                    m.abort(ErrorCode::Undefined, "Server shutting down");
                    continue;
                }
            };
        if let Some(data) = m.handle_datagram(Instant::now(), from, &inbuf[..n]) {
            let written = match (mode, upload.file.as_mut()) {
                (Mode::Netascii, Some(f)) => {
                    decoded.clear();
                    decoder.decode(data, &mut decoded);
                    if m.outcome() == Some(&Outcome::Complete) {
                        decoder.finish(&mut decoded);
                    }
                    f.write_all(&decoded)
                }
                (_, Some(f)) => f.write_all(data),
                (_, None) => Ok(()),
            };
            if let Err(e) = written {
                // Remove the temporary before the ERROR leaves: when the client learns of
                // the failure, nothing of the upload is left behind.
                upload.discard();
                let nak = Nak::from_io(&e);
                m.abort(nak.code, &nak.message);
            }
        }
        if m.outcome() == Some(&Outcome::Complete) && !committed {
            committed = true;
            // Commit before the final ACK leaves: the client's success means the file is
            // in place.
            if let Err(e) = upload.commit() {
                upload.discard();
                let nak = Nak::from_io(&e);
                m.abort(nak.code, &nak.message);
            }
        }
    }
}
