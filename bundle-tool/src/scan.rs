//! One pass over a bundle's entries, in parallel: every byte is read once and fed, as needed,
//! to the tar checker, the SHA-256 and MD5 hashers and the extracted copy.
//!
//! Entries are handed to threads largest first (a bundle is dominated by a 300 MB controller
//! image and seven 40–85 MB AP images), each thread with its own file descriptor and buffer.
//! A failing disk stops every thread and is returned as an error; a damaged entry is recorded in
//! its [`Outcome`] and the others go on, so one run reports every problem.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::report::hex;
use crate::source::{Entry, Handle, IoError, Source, is_corruption};
use crate::tar::{TarChecker, TarError, TarLimits, TarSummary};

/// Bytes read per system call.
const CHUNK: usize = 256 * 1024;
/// Small files whose bytes are kept for later checks (version files, readme).
pub const CAPTURE_MAX: usize = 64 * 1024;

/// What to do with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Index into the entries.
    pub entry: usize,
    /// Check it as a tar archive.
    pub tar: bool,
    /// Keep its bytes (up to [`CAPTURE_MAX`]).
    pub capture: bool,
}

/// How to run the pass.
#[derive(Debug)]
pub struct Options<'a> {
    /// Compute SHA-256 and MD5.
    pub hash: bool,
    /// Write each entry into this (existing, empty) folder.
    pub extract: Option<&'a Path>,
    /// `fsync` each extracted file before returning.
    pub fsync: bool,
    /// Set by a signal handler or by a failing thread: stop soon.
    pub cancel: &'a AtomicBool,
    /// Advanced by the number of bytes read.
    pub progress: &'a indicatif::ProgressBar,
    /// Worker threads (0: one per CPU).
    pub threads: usize,
}

/// What the pass learnt about one entry.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bytes actually read.
    pub read: u64,
    /// Lower-case hex SHA-256, when hashing.
    pub sha256: Option<String>,
    /// Lower-case hex MD5, when hashing.
    pub md5: Option<String>,
    /// The tar check's verdict, when asked.
    pub tar: Option<Result<TarSummary, TarError>>,
    /// The bytes, when asked and small enough.
    pub captured: Option<Vec<u8>>,
    /// The data could not be read: the archive is damaged here (CRC, compressed stream,
    /// truncation, more bytes than declared).
    pub corrupt: Option<String>,
}

/// The pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Reading the source or writing the copy failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Cancelled (a signal).
    #[error("interrupted")]
    Cancelled,
}

/// Runs `jobs` over `entries` of `source`; returns one outcome per job, in the jobs' order.
pub fn run(
    source: &Source,
    entries: &[Entry],
    jobs: &[Job],
    opts: &Options<'_>,
) -> Result<Vec<Outcome>, ScanError> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(entries.get(jobs[j].entry).map_or(0, |e| e.size)));
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let failure: Mutex<Option<ScanError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let fail = |e: ScanError| {
                    opts.cancel.store(true, Ordering::SeqCst);
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                };
                let mut handle = match source.handle() {
                    Ok(h) => h,
                    Err(e) => return fail(e.into()),
                };
                let mut buf = vec![0u8; CHUNK];
                loop {
                    if opts.cancel.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(&j) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let job = jobs[j];
                    let Some(entry) = entries.get(job.entry) else {
                        continue;
                    };
                    match one(&mut handle, source, entry, job, opts, &mut buf) {
                        Ok(outcome) => {
                            if let Ok(mut r) = results.lock() {
                                r[j] = Some(outcome);
                            }
                        }
                        Err(e) => return fail(e),
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    if opts.cancel.load(Ordering::SeqCst) {
        return Err(ScanError::Cancelled);
    }
    let results = results.into_inner().unwrap_or_default();
    Ok(results.into_iter().map(Option::unwrap_or_default).collect())
}

/// Reads one entry through every consumer it needs.
fn one(
    handle: &mut Handle<'_>,
    source: &Source,
    entry: &Entry,
    job: Job,
    opts: &Options<'_>,
    buf: &mut [u8],
) -> Result<Outcome, ScanError> {
    let src_err = |e: io::Error| ScanError::Io(IoError::new(&source.path().join(&entry.name), e));
    let mut out = Outcome::default();
    let mut copy = match opts.extract {
        Some(dir) => Some(Extracted::create(dir, &entry.name)?),
        None => None,
    };
    let mut tar = job.tar.then(|| TarChecker::new(TarLimits::default()));
    let mut tar_result: Option<Result<(), TarError>> = None;
    let mut hashes = opts.hash.then(|| (Sha256::new(), Md5::new()));
    let mut captured = job.capture.then(Vec::new);
    let mut reader = match handle.open(entry) {
        Ok(r) => r,
        Err(e) if is_corruption(&e) => {
            out.corrupt = Some(e.to_string());
            return Ok(out);
        }
        Err(e) => return Err(src_err(e)),
    };
    loop {
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(ScanError::Cancelled);
        }
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_corruption(&e) => {
                out.corrupt = Some(e.to_string());
                break;
            }
            Err(e) => return Err(src_err(e)),
        };
        let data = &buf[..n];
        out.read += n as u64;
        opts.progress.inc(n as u64);
        if out.read > entry.size {
            // A folder's file grew while we read it (a zip's reader stops this itself).
            out.corrupt = Some(format!("more than the {} bytes declared", entry.size));
            break;
        }
        if let Some(c) = &mut tar
            && tar_result.is_none()
            && let Err(e) = c.feed(data)
        {
            tar_result = Some(Err(e));
        }
        if let Some((sha, md)) = &mut hashes {
            sha.update(data);
            md.update(data);
        }
        if let Some(cap) = &mut captured
            && cap.len() < CAPTURE_MAX
        {
            let room = CAPTURE_MAX - cap.len();
            cap.extend_from_slice(&data[..n.min(room)]);
        }
        if let Some(c) = &mut copy {
            c.write(data)?;
        }
    }
    drop(reader);
    if out.corrupt.is_none() && out.read != entry.size {
        out.corrupt = Some(format!(
            "{} bytes where {} were declared",
            out.read, entry.size
        ));
    }
    if out.corrupt.is_none() {
        out.tar = match (tar, tar_result) {
            (_, Some(Err(e))) => Some(Err(e)),
            (Some(c), _) => Some(c.finish()),
            (None, _) => None,
        };
        if let Some((sha, md)) = hashes {
            out.sha256 = Some(hex(&sha.finalize()));
            out.md5 = Some(hex(&md.finalize()));
        }
        out.captured = captured;
    }
    if let Some(c) = copy {
        c.finish(opts.fsync)?;
    }
    Ok(out)
}

/// An extracted file being written.
struct Extracted {
    path: PathBuf,
    file: File,
}

impl Extracted {
    fn create(dir: &Path, name: &str) -> Result<Extracted, IoError> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| IoError::new(&path, e))?;
        // Served files must be world-readable (tftpd's o+r check) whatever the umask says.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| IoError::new(&path, e))?;
        Ok(Extracted { path, file })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), IoError> {
        self.file
            .write_all(data)
            .map_err(|e| IoError::new(&self.path, e))
    }

    fn finish(self, fsync: bool) -> Result<(), IoError> {
        if fsync {
            self.file
                .sync_all()
                .map_err(|e| IoError::new(&self.path, e))?;
        }
        Ok(())
    }
}
