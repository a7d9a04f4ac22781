//! Moves one SFTP session's bytes between russh and the request executor, with bounded
//! queues on both sides and no way to deadlock.
//!
//! ```text
//! russh session loop ──Handler::data──► Input (never blocks; bytes counted)
//!     ──► executor thread: frame → SftpServer::handle → batch replies (≤ 256 KiB)
//!     ──► bounded reply queue (8 batches) ──► writer task: ChannelWriteHalf::data_bytes
//!         (waits for the client's window, so at most window + 8 batches are buffered)
//! ```
//!
//! The russh session loop is never blocked by us: input is handed over without awaiting, so
//! it keeps reading the client's WINDOW_ADJUST messages while the writer waits for window
//! (the trap that stalls a plain russh + russh-sftp server partway through a large
//! download). The executor stops taking requests while the reply queue is full, so replies
//! never pile up in memory (paramiko's prefetch sends thousands of READs at once); requests
//! the client sends meanwhile wait as bytes, capped at [`MAX_QUEUED_INPUT`], beyond which
//! the session is closed as abusive (OpenSSH's client keeps at most 64 × 256 KiB in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use russh::ChannelId;
use russh::server::{Handle, Msg};

use crate::log::Log;
use crate::server_args::LogLevel;
use crate::sftp::{DEFAULT_MAX_PACKET_LEN, Framer};
use crate::sftp_server::{Names, SftpLog, SftpServer};

/// Unprocessed request bytes a session may have queued before it is closed.
pub const MAX_QUEUED_INPUT: usize = 64 * 1024 * 1024;
/// Reply bytes gathered before they are handed to the writer.
const BATCH: usize = 256 * 1024;
/// Reply batches waiting for the client's window.
const REPLY_QUEUE: usize = 8;

impl SftpLog for Log {
    fn enabled(&self, level: LogLevel) -> bool {
        Log::enabled(self, level)
    }
    fn log(&self, level: LogLevel, message: &str) {
        Log::log(self, level, message);
    }
}

/// The sending side of a session's input, held by the russh handler.
#[derive(Debug)]
pub struct Input {
    tx: Option<mpsc::Sender<Bytes>>,
    queued: Arc<AtomicUsize>,
}

/// The input queue is over [`MAX_QUEUED_INPUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Input {
    /// Hands bytes to the executor without blocking.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let before = self.queued.fetch_add(data.len(), Ordering::AcqRel);
        if before.saturating_add(data.len()) > MAX_QUEUED_INPUT {
            return Err(Overflow);
        }
        if tx.send(Bytes::copy_from_slice(data)).is_err() {
            // The executor ended (malformed packet); further input is discarded.
            self.tx = None;
        }
        Ok(())
    }

    /// End of input (client EOF or close): the executor finishes the session.
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// Starts the executor thread and the writer task for one SFTP channel.
///
/// `on_end` runs on the runtime after the last reply is sent, with the exit status (0, or 255
/// after a malformed packet, as OpenSSH's sftp-server exits); it sends exit-status, EOF and
/// CLOSE. Must be called inside a tokio runtime.
pub fn start<L, N, F>(
    mut server: SftpServer<L, N>,
    channel: ChannelId,
    handle: Handle,
    write: russh::ChannelWriteHalf<Msg>,
    log: Log,
    on_end: F,
) -> std::io::Result<(Input, std::thread::JoinHandle<()>)>
where
    L: SftpLog + Send + 'static,
    N: Names + Send + 'static,
    F: FnOnce(Handle, ChannelId, russh::ChannelWriteHalf<Msg>, u32) -> futures_end::BoxFuture
        + Send
        + 'static,
{
    let (in_tx, in_rx) = mpsc::channel::<Bytes>();
    let queued = Arc::new(AtomicUsize::new(0));
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Bytes>(REPLY_QUEUE);
    let counter = Arc::clone(&queued);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_in_thread = Arc::clone(&failed);
    let thread = std::thread::Builder::new()
        .name("sftp".into())
        .spawn(move || {
            let framer = Framer::new(DEFAULT_MAX_PACKET_LEN);
            let mut buf: Vec<u8> = Vec::new();
            let mut out: Vec<u8> = Vec::with_capacity(BATCH + 64 * 1024);
            'session: while let Ok(first) = in_rx.recv() {
                let mut chunk = Some(first);
                while let Some(c) = chunk.take() {
                    counter.fetch_sub(c.len(), Ordering::AcqRel);
                    buf.extend_from_slice(&c);
                    let mut pos = 0;
                    loop {
                        match framer.next_packet(&buf[pos..]) {
                            Ok(Some(frame)) => {
                                if let Err(e) = server.handle(frame.packet, &mut out) {
                                    log.error(format_args!("{e}"));
                                    failed_in_thread.store(true, Ordering::Release);
                                    break 'session;
                                }
                                pos += frame.consumed;
                                if out.len() >= BATCH {
                                    let full = std::mem::replace(
                                        &mut out,
                                        Vec::with_capacity(BATCH + 64 * 1024),
                                    );
                                    if out_tx.blocking_send(Bytes::from(full)).is_err() {
                                        break 'session;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                log.error(format_args!("bad sftp packet: {e}"));
                                failed_in_thread.store(true, Ordering::Release);
                                break 'session;
                            }
                        }
                    }
                    buf.drain(..pos);
                    chunk = in_rx.try_recv().ok();
                }
                if !out.is_empty() {
                    let full = std::mem::replace(&mut out, Vec::with_capacity(BATCH + 64 * 1024));
                    if out_tx.blocking_send(Bytes::from(full)).is_err() {
                        break;
                    }
                }
            }
            // Replies to the requests before a malformed one still go out.
            if !out.is_empty() {
                let _ = out_tx.blocking_send(Bytes::from(out));
            }
            drop(out_tx);
            server.finish();
        })?;
    tokio::spawn(async move {
        let mut ok = true;
        while let Some(bytes) = out_rx.recv().await {
            if ok && write.data_bytes(bytes).await.is_err() {
                // The channel is gone; keep draining so the executor can finish its log lines.
                ok = false;
            }
        }
        let status = if failed.load(Ordering::Acquire) {
            255
        } else {
            0
        };
        on_end(handle, channel, write, status).await;
    });
    Ok((
        Input {
            tx: Some(in_tx),
            queued,
        },
        thread,
    ))
}

/// A boxed future type for [`start`]'s `on_end`.
pub mod futures_end {
    /// The future `on_end` returns.
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}
