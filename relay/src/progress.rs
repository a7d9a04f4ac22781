//! Progress events, so callers can draw bars and ETAs.

/// Bytes so far, and the total when the server announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes received and written.
    pub done: u64,
    /// The announced size (TFTP tsize, SFTP stat), when known.
    pub total: Option<u64>,
}
