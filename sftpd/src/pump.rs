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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

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

/// Bytes from the client not yet taken by the executor, shared by the russh handler
/// (appends) and the executor (swaps the whole buffer out): one copy per byte, no allocation
/// per SSH packet.
#[derive(Debug, Default)]
struct Shared {
    buf: Vec<u8>,
    /// No more input will come (client EOF/close, or the executor ended).
    closed: bool,
}

#[derive(Debug, Default)]
struct InputQueue {
    state: Mutex<Shared>,
    ready: Condvar,
}

impl InputQueue {
    /// Waits for input; swaps it into `into` (which must be empty). False at the end.
    fn take(&self, into: &mut Vec<u8>) -> bool {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while g.buf.is_empty() && !g.closed {
            g = self.ready.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
        if g.buf.is_empty() {
            return false;
        }
        std::mem::swap(&mut g.buf, into);
        true
    }

    fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.ready.notify_one();
    }
}

/// The sending side of a session's input, held by the russh handler.
#[derive(Debug)]
pub struct Input {
    queue: Arc<InputQueue>,
}

/// The input queue is over [`MAX_QUEUED_INPUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Input {
    /// Hands bytes to the executor without blocking (appends to the shared buffer).
    pub fn push(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let mut g = self
            .queue
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if g.closed {
            // The executor ended (malformed packet) or input was closed: discard.
            return Ok(());
        }
        if g.buf.len().saturating_add(data.len()) > MAX_QUEUED_INPUT {
            return Err(Overflow);
        }
        let was_empty = g.buf.is_empty();
        g.buf.extend_from_slice(data);
        drop(g);
        if was_empty {
            self.queue.ready.notify_one();
        }
        Ok(())
    }

    /// End of input (client EOF or close): the executor finishes the session.
    pub fn close(&mut self) {
        self.queue.close();
    }
}

/// A dropped input (the connection ended) ends the session too.
impl Drop for Input {
    fn drop(&mut self) {
        self.queue.close();
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
    let queue = Arc::new(InputQueue::default());
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Bytes>(REPLY_QUEUE);
    let failed = Arc::new(AtomicBool::new(false));
    let failed_in_thread = Arc::clone(&failed);
    let exec_queue = Arc::clone(&queue);
    let thread = std::thread::Builder::new()
        .name("sftp".into())
        .spawn(move || {
            let framer = Framer::new(DEFAULT_MAX_PACKET_LEN);
            // `pending` holds an unfinished packet between takes; `incoming` is swapped with
            // the shared buffer (so both keep their capacity).
            let mut pending: Vec<u8> = Vec::new();
            let mut incoming: Vec<u8> = Vec::new();
            let mut out: Vec<u8> = Vec::with_capacity(BATCH + 64 * 1024);
            let send = |out: &mut Vec<u8>| {
                let full = std::mem::replace(out, Vec::with_capacity(BATCH + 64 * 1024));
                out_tx.blocking_send(Bytes::from(full)).is_ok()
            };
            'session: while exec_queue.take(&mut incoming) {
                let from_pending = !pending.is_empty();
                if from_pending {
                    pending.extend_from_slice(&incoming);
                    incoming.clear();
                }
                let data: &[u8] = if from_pending { &pending } else { &incoming };
                let mut pos = 0;
                loop {
                    match framer.next_packet(&data[pos..]) {
                        Ok(Some(frame)) => {
                            if let Err(e) = server.handle(frame.packet, &mut out) {
                                log.error(format_args!("{e}"));
                                failed_in_thread.store(true, Ordering::Release);
                                break 'session;
                            }
                            pos += frame.consumed;
                            if out.len() >= BATCH && !send(&mut out) {
                                break 'session;
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
                // Keep the unfinished tail for the next take.
                if from_pending {
                    pending.drain(..pos);
                } else {
                    pending.extend_from_slice(&incoming[pos..]);
                    incoming.clear();
                }
                if !out.is_empty() && !send(&mut out) {
                    break;
                }
            }
            // No more input is taken: the handler discards what still arrives.
            exec_queue.close();
            // Replies to the requests before a malformed one still go out.
            if !out.is_empty() {
                send(&mut out);
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
    Ok((Input { queue }, thread))
}

/// A boxed future type for [`start`]'s `on_end`.
pub mod futures_end {
    /// The future `on_end` returns.
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}
