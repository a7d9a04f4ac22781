//! # relay — fetch AP images from TFTP and SFTP servers, once, verified
//!
//! The fetching half of the controller, and a CLI (`relay fetch | bundle | check`) an
//! administrator runs to test a server before any AP joins.
//! - [`source`]: `tftp://`, `sftp://` and `file://` sources, printed as the controller logs them
//!   (the SFTP user masked: `sftp://*****@172.16.5.62/…`).
//! - [`error`]: errors worded as the controller logs them
//!   (`Failed to download file tftp://…/ap1g6: No such file or directory`) with a kind.
//! - [`tftp`]: the TFTP client on tftpd's sans-IO core (blksize, tsize, timeout, windowsize;
//!   fallback without options after ERROR 8 or without an OACK; rollover; overall deadline),
//!   and [`tftp::probe`], a request ended at the server's first answer.
//! - [`sftp`]: the SFTP client (russh + sftpd's codec), host key checked (known_hosts, pinned
//!   fingerprint, or trust-on-first-use when asked), 64 reads in flight after `limits@`; a
//!   [`sftp::Session`] serves several files over one login.
//! - [`verify`]: what a fetched file must be ([`Expected`]: manifest size and SHA-256, or an AP
//!   image's own tar and info members against `version.info`), checked while it is written.
//! - [`fetch_to_file`] / [`fetch_verified`]: a fetch committed by rename only when complete
//!   (and verified), so a partial image is never left under the target name.
//! - [`folder`], [`bundle`], [`check`]: a bundle folder on a server — fetched, verified by
//!   bundle-tool and put in place in one step, or pre-flighted step by step.
//! - [`store`]: content-addressed images, one upstream fetch per image (single flight),
//!   readers that follow a running fetch, verification before anything is visible, LRU
//!   eviction under a size cap.

pub mod bundle;
pub mod check;
pub mod error;
pub mod folder;
pub mod progress;
pub mod sftp;
pub mod source;
pub mod store;
pub mod tftp;
pub mod verify;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use verify::Verifier;

pub use error::{ErrorKind, FetchError};
pub use progress::Progress;
pub use source::Source;
pub use verify::Expected;

/// Fetches `source` into `sink` with the protocol its scheme names; the one place that
/// dispatches on the scheme ([`fetch_to_file`] and the [`store`] both use it).
pub async fn fetch_into(
    source: &Source,
    opts: &FetchOptions,
    sink: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<u64, FetchError> {
    let local = |e: std::io::Error| FetchError::new(source, ErrorKind::LocalIo, e.to_string());
    match source {
        Source::Tftp { .. } => Ok(tftp::fetch(source, &opts.tftp, sink, progress).await?.bytes),
        Source::Sftp { .. } => {
            let Some(sftp_opts) = &opts.sftp else {
                return Err(FetchError::new(
                    source,
                    ErrorKind::AuthenticationFailed,
                    "no password or key given",
                ));
            };
            Ok(sftp::fetch(source, sftp_opts, sink, progress).await?.bytes)
        }
        Source::File { path } => {
            let mut f = File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => FetchError::new(source, ErrorKind::NotFound, ""),
                std::io::ErrorKind::PermissionDenied => {
                    FetchError::new(source, ErrorKind::PermissionDenied, "")
                }
                _ => local(e),
            })?;
            let total = f.metadata().map(|m| m.len()).ok();
            let n = std::io::copy(&mut f, sink).map_err(local)?;
            progress(Progress { done: n, total });
            Ok(n)
        }
    }
}

/// The addresses of `host`, IPv4 first (what a TFTP server on a dual-stack host most often
/// listens on), looked up within `deadline`.
pub(crate) async fn resolve(
    source: &Source,
    host: &str,
    port: u16,
    deadline: std::time::Instant,
) -> Result<Vec<std::net::SocketAddr>, FetchError> {
    let lookup = tokio::net::lookup_host((host, port));
    let found = tokio::time::timeout_at(deadline.into(), lookup)
        .await
        .map_err(|_| FetchError::new(source, ErrorKind::TimedOut, "name lookup"))?
        .map_err(|_| FetchError::new(source, ErrorKind::UnknownHost, ""))?;
    let mut addrs: Vec<std::net::SocketAddr> = found.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    if addrs.is_empty() {
        return Err(FetchError::new(source, ErrorKind::UnknownHost, ""));
    }
    Ok(addrs)
}

/// How fetches are made, per protocol.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// TFTP options.
    pub tftp: tftp::TftpOptions,
    /// SFTP login and host key trust; `sftp://` sources fail without them.
    pub sftp: Option<sftp::SftpOptions>,
}

/// Fetches `source` into `target`: written to a hidden temporary in the same directory,
/// synced, and renamed over `target` only when the transfer completed (and matched the
/// announced size). On any failure the temporary is removed and `target` is untouched.
pub async fn fetch_to_file(
    source: &Source,
    target: &Path,
    opts: &FetchOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<u64, FetchError> {
    let done = fetch_verified(source, target, opts, Expected::default(), progress).await?;
    Ok(done.size)
}

/// [`fetch_to_file`], and `target` appears only if the bytes are also what `expected` says
/// (size, SHA-256, or an AP image's own tar and info members).
pub async fn fetch_verified(
    source: &Source,
    target: &Path,
    opts: &FetchOptions,
    expected: Expected,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<verify::Verified, FetchError> {
    let local = |e: std::io::Error| FetchError::new(source, ErrorKind::LocalIo, e.to_string());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.relay-"))
        .tempfile_in(dir)
        .map_err(local)?;
    let done = {
        let mut w = Verifier::new(BufWriter::with_capacity(1 << 20, tmp.as_file()), expected);
        fetch_into(source, opts, &mut w, progress).await?;
        w.flush().map_err(local)?;
        w.finish(source)?.0
    };
    tmp.as_file().sync_all().map_err(local)?;
    tmp.persist(target).map_err(|e| local(e.error))?;
    Ok(done)
}
