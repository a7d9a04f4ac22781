//! Served files, memory-mapped once and shared by every concurrent reader.
//!
//! A request names a file relative to a served root. The first reader opens it through
//! [`ServeRoot`] (the one place that confines paths), maps it read-only, and caches the
//! mapping under the request name. Later readers of the same name share that mapping with no
//! open, stat or map of their own. A file replaced while transfers run (a rename over it, or
//! a bundle staged under a `current` link) keeps serving its old bytes to the transfers that
//! hold the old mapping, and new requests get the new file.
//!
//! Staleness: every request resolves the name again (through the same confinement) and reuses
//! the mapping only if device, inode, size, mtime and ctime are unchanged — a few system
//! calls, no new mapping. inotify alone cannot give that guarantee: its events arrive
//! asynchronously, so a request made right after `rename` could otherwise still get the
//! old file. The [`Watcher`] (inotify, through `notify`) drops entries under any changed
//! path, so an old 300 MB image is unmapped as soon as its last transfer ends instead of
//! lingering until the next request for that name.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use memmap2::{Advice, Mmap, MmapOptions};

use super::mapguard::Guard;
use crate::confine::{ConfineError, RelativeName, ServeRoot};

/// The bytes of one served file and what identifies that version of it.
#[derive(Debug)]
pub struct Mapped {
    /// Declared before `map` so it unregisters before the memory is unmapped.
    guard: Option<Guard>,
    map: Option<Mmap>,
    identity: Identity,
    /// Permission bits, for the o+r check.
    pub mode: u32,
    /// Where the file really is (for matching watcher events), when known.
    real_path: Option<PathBuf>,
}

impl Mapped {
    /// The file's contents.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// True once the file was found truncated under the mapping: bytes read from it since
    /// may be zeros, not the file's (see [`super::mapguard`]).
    pub fn is_poisoned(&self) -> bool {
        self.guard.as_ref().is_some_and(Guard::is_poisoned)
    }

    /// The file's size.
    pub fn len(&self) -> u64 {
        self.identity.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.identity.len == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    mapped: Arc<Mapped>,
    last_used: Instant,
}

/// Entries unused for this long are dropped at the next sweep.
const IDLE_EXPIRY: Duration = Duration::from_secs(300);
/// At most this many files stay mapped when idle.
const MAX_ENTRIES: usize = 1024;

/// The shared cache of mapped files for one or more served roots.
#[derive(Debug, Default)]
pub struct FileCache {
    entries: Mutex<HashMap<(usize, Vec<u8>), Entry>>,
}

impl FileCache {
    /// An empty cache.
    pub fn new() -> FileCache {
        FileCache::default()
    }

    /// The mapping for `name` under `root` (`root_id` distinguishes several roots).
    pub fn open(
        &self,
        root_id: usize,
        root: &ServeRoot,
        name: &RelativeName,
    ) -> Result<Arc<Mapped>, ConfineError> {
        let key = (root_id, name.as_bytes().to_vec());
        let now = Instant::now();
        let (file, meta) = root.open_read(name)?;
        let identity = Identity::of(&meta);
        if let Some(hit) = reuse(&mut self.lock(), &key, identity, now) {
            return Ok(hit);
        }
        let mapped =
            Arc::new(
                map_file(&file, &meta, identity).map_err(|source| ConfineError::Io {
                    name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
                    source,
                })?,
            );
        let mut entries = self.lock();
        // Readers that arrived together each mapped the file outside the lock; the first to
        // get here wins and the others share its mapping (theirs is unmapped on return).
        if let Some(hit) = reuse(&mut entries, &key, identity, now) {
            return Ok(hit);
        }
        if entries.len() >= MAX_ENTRIES {
            sweep(&mut entries, now, Duration::ZERO);
        }
        entries.insert(
            key,
            Entry {
                mapped: Arc::clone(&mapped),
                last_used: now,
            },
        );
        Ok(mapped)
    }

    /// Drops every entry whose request path (joined to its root) or real path lies at or
    /// under `changed`.
    pub fn invalidate(&self, roots: &[PathBuf], changed: &Path) {
        self.lock().retain(|(root_id, name), e| {
            let requested = roots
                .get(*root_id)
                .map(|r| r.join(Path::new(std::ffi::OsStr::from_bytes_compat(name))));
            let hit = |p: &Path| p.starts_with(changed);
            // Without a real path (no /proc, e.g. inside a chroot) any event may concern the
            // file through a symlink: drop it, events are rare.
            !(requested.as_deref().is_some_and(hit)
                || e.mapped.real_path.as_deref().is_none_or(hit))
        });
    }

    /// Drops everything (watcher overflow, SIGHUP).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Drops entries idle for a while (the server calls this every minute); mappings still
    /// used by transfers live on in them.
    pub fn sweep_idle(&self) {
        sweep(&mut self.lock(), Instant::now(), IDLE_EXPIRY);
    }

    /// Number of cached files.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, Vec<u8>), Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cached mapping for `key` if it is still this version of the file and intact.
fn reuse(
    entries: &mut HashMap<(usize, Vec<u8>), Entry>,
    key: &(usize, Vec<u8>),
    identity: Identity,
    now: Instant,
) -> Option<Arc<Mapped>> {
    let e = entries.get_mut(key)?;
    if e.mapped.identity != identity || e.mapped.is_poisoned() {
        return None;
    }
    e.last_used = now;
    Some(Arc::clone(&e.mapped))
}

fn sweep(entries: &mut HashMap<(usize, Vec<u8>), Entry>, now: Instant, idle: Duration) {
    entries.retain(|_, e| now.duration_since(e.last_used) < idle);
}

fn map_file(file: &File, meta: &Metadata, identity: Identity) -> std::io::Result<Mapped> {
    let map = if meta.len() == 0 {
        None
    } else {
        // SAFETY: the mapping is read-only. Its contents change only if another process
        // writes the file in place; a truncation makes reads past the new end raise SIGBUS,
        // which the guard registered below turns into zeros plus a poisoned flag.
        let map = unsafe { MmapOptions::new().map(file)? };
        // Sequential readers: let the kernel read ahead aggressively. Advice is a hint only.
        let _ = map.advise(Advice::Sequential);
        Some(map)
    };
    let real_path = std::fs::read_link(format!("/proc/self/fd/{}", raw_fd(file))).ok();
    let guard = map.as_ref().map(|m| Guard::register(m.as_ptr(), m.len()));
    Ok(Mapped {
        guard,
        map,
        identity,
        mode: meta.mode(),
        real_path,
    })
}

fn raw_fd(file: &File) -> i32 {
    use std::os::fd::AsRawFd;
    file.as_raw_fd()
}

/// `OsStr` from bytes (Unix).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// True for events that may change what a name refers to or contains.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Keeps a [`FileCache`] fresh from filesystem events under the served roots.
#[derive(Debug)]
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl Watcher {
    /// Watches `roots` recursively; events invalidate `cache`. Fails where inotify is not
    /// available (the cache then validates every request by itself).
    pub fn start(roots: Vec<PathBuf>, cache: Arc<FileCache>) -> notify::Result<Watcher> {
        use notify::{RecursiveMode, Watcher as _};
        let handler_cache = Arc::clone(&cache);
        let handler_roots = roots.clone();
        let mut w = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(ev) if ev.need_rescan() => handler_cache.clear(),
                // Opens and reads (ours included: inotify reports every open of a served
                // file) change nothing; only a close after writing does.
                Ok(ev) if !changes_content(&ev.kind) => {}
                Ok(ev) => {
                    for p in &ev.paths {
                        handler_cache.invalidate(&handler_roots, p);
                    }
                }
                // An error from the watcher: be safe, forget everything.
                Err(_) => handler_cache.clear(),
            }
        })?;
        for r in &roots {
            w.watch(r, RecursiveMode::Recursive)?;
        }
        Ok(Watcher { _inner: w })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn setup() -> (tempfile::TempDir, ServeRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = ServeRoot::open(dir.path())
            .unwrap()
            .require_world_readable(false);
        (dir, root)
    }

    fn write(path: &Path, bytes: &[u8]) {
        let mut f = File::create(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn readers_share_one_mapping_and_a_replaced_file_keeps_old_bytes_for_them() {
        let (dir, root) = setup();
        let cache = Arc::new(FileCache::new());
        let p = dir.path().join("ap1g8");
        write(&p, b"old image");
        let name = RelativeName::new(b"ap1g8").unwrap();
        let a = cache.open(0, &root, &name).unwrap();
        let b = cache.open(0, &root, &name).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "second reader shares the mapping");
        // Replace by rename, as a staging tool does.
        let tmp = dir.path().join(".ap1g8.new");
        write(&tmp, b"new image, longer");
        std::fs::rename(&tmp, &p).unwrap();
        // Unwatched cache re-validates: a new request sees the new file...
        let c = cache.open(0, &root, &name).unwrap();
        assert_eq!(c.bytes(), b"new image, longer");
        // ...while the running transfer still reads the old bytes.
        assert_eq!(a.bytes(), b"old image");
    }

    #[test]
    fn watched_cache_is_invalidated_by_events() {
        let (dir, root) = setup();
        let cache = Arc::new(FileCache::new());
        let roots = vec![dir.path().to_path_buf()];
        let _w = Watcher::start(roots.clone(), Arc::clone(&cache)).unwrap();
        let sub = dir.path().join("EWC");
        std::fs::create_dir(&sub).unwrap();
        write(&sub.join("f"), b"v1");
        let name = RelativeName::new(b"EWC/f").unwrap();
        assert_eq!(cache.open(0, &root, &name).unwrap().bytes(), b"v1");
        write(&sub.join(".f.tmp"), b"v2");
        std::fs::rename(sub.join(".f.tmp"), sub.join("f")).unwrap();
        // Events arrive asynchronously: wait (bounded) for the entry to go. The watcher is
        // what drops it; requests alone would keep it until the next one for this name.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cache.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            cache.is_empty(),
            "the watcher did not drop the replaced file's mapping"
        );
        assert_eq!(cache.open(0, &root, &name).unwrap().bytes(), b"v2");
    }

    #[test]
    fn rename_is_seen_by_the_very_next_request_even_with_a_watcher() {
        let (dir, root) = setup();
        let cache = Arc::new(FileCache::new());
        let _w = Watcher::start(vec![dir.path().to_path_buf()], Arc::clone(&cache)).unwrap();
        let name = RelativeName::new(b"ap").unwrap();
        write(&dir.path().join("ap"), b"v0");
        for i in 1..200 {
            assert_eq!(
                cache.open(0, &root, &name).unwrap().bytes(),
                format!("v{}", i - 1).as_bytes()
            );
            let tmp = dir.path().join(".ap.new");
            write(&tmp, format!("v{i}").as_bytes());
            std::fs::rename(&tmp, dir.path().join("ap")).unwrap();
        }
    }

    #[test]
    fn reading_a_file_does_not_drop_its_mapping() {
        // Inside a chroot there is no /proc, so entries have no real path and any event that
        // reaches `invalidate` drops them: opens and reads must not reach it.
        use notify::event::{AccessKind, AccessMode, CreateKind};
        assert!(!changes_content(&notify::EventKind::Access(
            AccessKind::Open(AccessMode::Any)
        )));
        assert!(!changes_content(&notify::EventKind::Access(
            AccessKind::Close(AccessMode::Read)
        )));
        assert!(!changes_content(&notify::EventKind::Access(
            AccessKind::Read
        )));
        assert!(changes_content(&notify::EventKind::Access(
            AccessKind::Close(AccessMode::Write)
        )));
        assert!(changes_content(&notify::EventKind::Create(
            CreateKind::File
        )));
        let (dir, root) = setup();
        let cache = Arc::new(FileCache::new());
        let _w = Watcher::start(vec![dir.path().to_path_buf()], Arc::clone(&cache)).unwrap();
        write(&dir.path().join("ap"), &[1u8; 8192]);
        std::thread::sleep(Duration::from_millis(100));
        let name = RelativeName::new(b"ap").unwrap();
        let first = cache.open(0, &root, &name).unwrap();
        for _ in 0..50 {
            // Each open is itself an inotify event; the mapping must survive them all.
            let again = cache.open(0, &root, &name).unwrap();
            assert!(Arc::ptr_eq(&first, &again));
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn invalidation_matches_request_and_real_paths() {
        let (dir, root) = setup();
        let cache = FileCache::new();
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        write(&dir.path().join("v1/ap"), b"x");
        std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
        let roots = vec![dir.path().to_path_buf()];
        cache
            .open(0, &root, &RelativeName::new(b"current/ap").unwrap())
            .unwrap();
        cache.invalidate(&roots, &dir.path().join("other"));
        assert_eq!(cache.len(), 1);
        // An event on the real file (reached through the link) drops it.
        cache.invalidate(&roots, &dir.path().canonicalize().unwrap().join("v1/ap"));
        assert_eq!(cache.len(), 0);
        cache
            .open(0, &root, &RelativeName::new(b"current/ap").unwrap())
            .unwrap();
        // So does an event on the link itself.
        cache.invalidate(&roots, &dir.path().join("current"));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn truncated_file_is_poisoned_and_not_served_again() {
        let (dir, root) = setup();
        let p = dir.path().join("ap3g3");
        write(&p, &vec![7u8; 64 * 1024]);
        let cache = FileCache::new();
        let name = RelativeName::new(b"ap3g3").unwrap();
        let m = cache.open(0, &root, &name).unwrap();
        // In-place copy of a shorter image: truncate, then write.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let tail = m.bytes()[60 * 1024..].to_vec();
        assert!(m.is_poisoned());
        assert!(tail.iter().all(|&b| b == 0));
        let again = cache.open(0, &root, &name).unwrap();
        assert!(!Arc::ptr_eq(&m, &again));
        assert_eq!(again.len(), 4096);
    }

    #[test]
    fn concurrent_first_readers_end_up_with_one_mapping() {
        let (dir, root) = setup();
        write(&dir.path().join("ap"), &[3u8; 1 << 20]);
        let cache = Arc::new(FileCache::new());
        let name = RelativeName::new(b"ap").unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let maps: Vec<Arc<Mapped>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (cache, root, name, barrier) = (
                        Arc::clone(&cache),
                        root.clone(),
                        name.clone(),
                        Arc::clone(&barrier),
                    );
                    s.spawn(move || {
                        barrier.wait();
                        cache.open(0, &root, &name).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Whoever lost the race shares the winner's mapping: after their open returns,
        // the cached mapping is the only one any later reader will get.
        let cached = cache.open(0, &root, &name).unwrap();
        let distinct = maps.iter().filter(|m| !Arc::ptr_eq(m, &cached)).count();
        assert_eq!(distinct, 0, "{distinct} readers kept a private mapping");
    }

    #[test]
    fn empty_file_maps_to_no_bytes() {
        let (dir, root) = setup();
        write(&dir.path().join("empty"), b"");
        let m = FileCache::new()
            .open(0, &root, &RelativeName::new(b"empty").unwrap())
            .unwrap();
        assert!(m.is_empty());
        assert_eq!(m.bytes(), b"");
    }
}
