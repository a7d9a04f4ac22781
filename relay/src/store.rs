//! The image store: content-addressed files on disk, one upstream fetch per image however
//! many ask at once (single flight), readers that follow a fetch while it runs, verification
//! before anything becomes visible, and a size cap with least-recently-used eviction.
//!
//! Layout under the store's root:
//! - `objects/<sha256>`: verified images, named by their SHA-256; only ever created by
//!   `link(2)` to a synced temporary after its bytes matched what was expected (size, hash,
//!   or an AP image's own tar and info), so a corrupt or partial file is never served.
//! - `tmp/`: fetches in progress (emptied when the store opens).
//!
//! A fetch hashes the bytes as they are written. While it runs, [`Store::get`] callers for the
//! same source (fetched with the same login and expectation) share it and can read what has
//! arrived so far through [`Flight::reader`]. The temporary is removed only after the flight
//! is announced done, so a reader opened at any moment finds the temporary or the object; an
//! open reader keeps its descriptor, the same file as the object.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::FetchOptions;
use crate::error::{ErrorKind, FetchError};
use crate::progress::Progress;
use crate::source::Source;
pub use crate::verify::Expected;
use crate::verify::{Verifier, hex};

/// A verified image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its file under `objects/`.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex (also the file name).
    pub sha256: String,
}

/// The state of a fetch, as its followers see it.
#[derive(Debug, Clone)]
pub enum FlightState {
    /// Bytes written so far to the temporary (and the total when known).
    Running(Progress),
    /// Done and verified.
    Done(Object),
    /// Failed; nothing was stored.
    Failed(FetchError),
}

/// A fetch in progress, shared by everyone who asked for the same source.
#[derive(Debug)]
pub struct Flight {
    state: watch::Receiver<FlightState>,
    tmp: PathBuf,
}

impl Flight {
    /// Waits for the end of the fetch.
    pub async fn wait(&self) -> Result<Object, FetchError> {
        let mut rx = self.state.clone();
        loop {
            match &*rx.borrow_and_update() {
                FlightState::Done(o) => return Ok(o.clone()),
                FlightState::Failed(e) => return Err(e.clone()),
                FlightState::Running(_) => {}
            }
            if rx.changed().await.is_err() {
                let last = rx.borrow().clone();
                return match last {
                    FlightState::Done(o) => Ok(o),
                    FlightState::Failed(e) => Err(e),
                    FlightState::Running(_) => Err(FetchError::new(
                        "",
                        ErrorKind::Protocol,
                        "the fetch stopped without a result",
                    )),
                };
            }
        }
    }

    /// The state now.
    pub fn state(&self) -> FlightState {
        self.state.borrow().clone()
    }

    /// Reads the image from the start while it is still arriving: each call to
    /// [`FlightReader::next_chunk`] returns what arrived since the last one, waiting for more,
    /// and ends when the fetch is done. Only a fetch that then verifies should be trusted:
    /// [`FlightReader::next_chunk`] returns the fetch's error if it fails.
    pub async fn reader(&self) -> io::Result<FlightReader> {
        let mut state = self.state.clone();
        let file = loop {
            match File::open(&self.tmp) {
                Ok(f) => break f,
                // The temporary is gone: the fetch is ending. Once it is announced done, read
                // the stored object (the same bytes).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let done = match &*state.borrow_and_update() {
                        FlightState::Done(o) => Some(o.path.clone()),
                        FlightState::Failed(_) => return Err(e),
                        FlightState::Running(_) => None,
                    };
                    match done {
                        Some(path) => break File::open(path)?,
                        None => {
                            if state.changed().await.is_err() {
                                return Err(e);
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        };
        Ok(FlightReader {
            file,
            read: 0,
            state: self.state.clone(),
        })
    }
}

/// See [`Flight::reader`].
#[derive(Debug)]
pub struct FlightReader {
    file: File,
    read: u64,
    state: watch::Receiver<FlightState>,
}

impl FlightReader {
    /// The next bytes (up to `max`), or `None` at the end of a verified image.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, FetchError> {
        loop {
            let available = match &*self.state.borrow_and_update() {
                FlightState::Running(p) => p.done,
                FlightState::Done(o) => o.size,
                FlightState::Failed(e) => return Err(e.clone()),
            };
            if available > self.read {
                let n = usize::try_from(available - self.read)
                    .unwrap_or(max)
                    .min(max);
                let mut buf = vec![0u8; n];
                self.file
                    .read_exact(&mut buf)
                    .map_err(|e| FetchError::new("", ErrorKind::LocalIo, e.to_string()))?;
                self.read += n as u64;
                return Ok(Some(buf));
            }
            if matches!(&*self.state.borrow(), FlightState::Done(_)) {
                return Ok(None);
            }
            if self.state.changed().await.is_err() {
                return Err(FetchError::new(
                    "",
                    ErrorKind::Protocol,
                    "the fetch stopped without a result",
                ));
            }
        }
    }
}

/// How `opts` logs in and trusts the server, for the single-flight key (in memory only; the
/// password enters only as a SHA-256).
fn access_key(opts: &FetchOptions) -> String {
    use sha2::{Digest, Sha256};
    match &opts.sftp {
        None => String::new(),
        Some(o) => {
            let secret = match &o.credential {
                crate::sftp::Credential::Password(p) => format!("password\0{p}"),
                crate::sftp::Credential::Key(k) => format!("key\0{}", k.display()),
            };
            format!(
                "{}\0{:?}",
                hex(&Sha256::digest(secret.as_bytes())),
                o.host_key
            )
        }
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    cap: u64,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (creating) a store under `root` holding at most `cap` bytes of images. Leftover
    /// temporaries of an earlier run are removed.
    pub fn open(root: &Path, cap: u64) -> io::Result<Arc<Store>> {
        fs::create_dir_all(root.join("objects"))?;
        let _ = fs::remove_dir_all(root.join("tmp"));
        fs::create_dir_all(root.join("tmp"))?;
        Ok(Arc::new(Store {
            root: root.to_path_buf(),
            cap,
            flights: Mutex::new(HashMap::new()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Upstream fetches started so far (for tests and metrics).
    pub fn fetches_started(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The verified object for `sha256` if the store has it (and marks it used).
    pub fn lookup(&self, sha256: &[u8; 32]) -> Option<Object> {
        let path = self.root.join("objects").join(hex(sha256));
        let meta = fs::metadata(&path).ok()?;
        let _ = File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(Object {
            path,
            size: meta.len(),
            sha256: hex(sha256),
        })
    }

    /// Starts (or joins) the fetch of `source`. Requests for the same source while a fetch
    /// runs share it; an image already stored with the expected hash is not fetched again.
    pub fn get(
        self: &Arc<Self>,
        source: &Source,
        expected: Expected,
        opts: &FetchOptions,
    ) -> io::Result<Arc<Flight>> {
        // The source with its user, the login and host key trust it is fetched with (a caller
        // never gets bytes fetched under another caller's credentials), and what is expected
        // (nor checked against another caller's expectation).
        let key = format!("{}\0{}\0{expected:?}", source.identity(), access_key(opts));
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = flights.get(&key) {
            return Ok(Arc::clone(f));
        }
        if let Some(sum) = expected.sha256
            && let Some(obj) = self.lookup(&sum)
            && expected.size.is_none_or(|s| s == obj.size)
        {
            let (_tx, rx) = watch::channel(FlightState::Done(obj.clone()));
            return Ok(Arc::new(Flight {
                state: rx,
                tmp: obj.path,
            }));
        }
        let tmp = tempfile::Builder::new()
            .prefix("fetch-")
            .tempfile_in(self.root.join("tmp"))?;
        let (tmp_file, tmp_path) = tmp.keep().map_err(|e| e.error)?;
        let total = expected.size;
        let (tx, rx) = watch::channel(FlightState::Running(Progress { done: 0, total }));
        let flight = Arc::new(Flight {
            state: rx,
            tmp: tmp_path.clone(),
        });
        flights.insert(key.clone(), Arc::clone(&flight));
        drop(flights);
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = Arc::clone(self);
        let source = source.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let result = store
                .run(&source, expected, &opts, tmp_file, &tmp_path, &tx)
                .await;
            // The object (a hard link to the temporary) exists before the temporary goes; a
            // reader that finds neither waits for Done and opens the object. Everything is
            // cleaned up before the outcome is announced, so a caller that saw it finds the
            // store settled.
            let _ = fs::remove_file(&tmp_path);
            store
                .flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            let _ = tx.send(match result {
                Ok(o) => FlightState::Done(o),
                Err(e) => FlightState::Failed(e),
            });
        });
        Ok(flight)
    }

    async fn run(
        &self,
        source: &Source,
        expected: Expected,
        opts: &FetchOptions,
        file: File,
        tmp: &Path,
        tx: &watch::Sender<FlightState>,
    ) -> Result<Object, FetchError> {
        let local = |e: io::Error| FetchError::new(source, ErrorKind::LocalIo, e.to_string());
        let known = expected.size;
        let mut sink = Verifier::new(file, expected);
        {
            let mut progress = |p: Progress| {
                let _ = tx.send(FlightState::Running(Progress {
                    done: p.done,
                    total: known.or(p.total),
                }));
            };
            crate::fetch_into(source, opts, &mut sink, &mut progress).await?;
        }
        let (done, file) = sink.finish(source)?;
        file.sync_all().map_err(local)?;
        let final_path = self.root.join("objects").join(hex(&done.sha256));
        // A second name for the verified temporary (removed once Done is announced). The
        // same bytes may already be stored, fetched from another source: keep those.
        match fs::hard_link(tmp, &final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(local(e)),
        }
        self.evict(&final_path);
        Ok(Object {
            path: final_path,
            size: done.size,
            sha256: hex(&done.sha256),
        })
    }

    /// Removes least recently used objects (by modification time, refreshed on lookup) until
    /// the store is within its cap; `keep` is never removed.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = fs::read_dir(self.root.join("objects")) else {
            return;
        };
        let mut objects: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = objects.iter().map(|o| o.1).sum();
        objects.sort();
        for (_, len, path) in objects {
            if total <= self.cap {
                break;
            }
            if path != keep && fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}
