//! Where a bundle's files come from: a zip archive or an already unpacked folder.
//!
//! [`Source::open`] lists the entries and checks everything that can be checked without
//! reading data: names (zip-slip), entry types (symlinks, devices), duplicates, counts, sizes
//! and compression ratios against [`Limits`]. Entries that fail are reported as findings and
//! left out of [`Opened::entries`], so nothing later ever reads or writes them.
//!
//! Reading is per thread: [`Source::handle`] opens a private file descriptor, so several
//! threads read different entries of one zip at once.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zip::read::OwnedZipFileEntry;
use zip::result::ZipError;
use zip::{ZipArchive, ZipReadOptions};

use crate::names;
use crate::report::{Code, Finding};

/// Files this tool writes next to staged images; a folder source does not count them as
/// bundle files (see [`crate::manifest`]).
pub const OWN_FILES: [&str; 3] = ["manifest.json", "SHA256SUMS", "MD5SUMS"];

/// Limits that keep a hostile archive from exhausting disk, memory or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in an archive (a real bundle has about a dozen).
    pub max_entries: usize,
    /// Most bytes in all entries together, as declared (a real bundle is about 745 MB).
    pub max_total: u64,
    /// Most bytes in one entry.
    pub max_entry: u64,
    /// Largest expansion of an entry (declared size / compressed size) once it is over 1 MiB.
    /// AP images are compressed tar files and barely shrink; zip bombs expand a thousandfold.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 1000,
            max_total: 8 << 30,
            max_entry: 4 << 30,
            max_ratio: 100,
        }
    }
}

/// Where a finding about a ratio starts to matter.
const RATIO_FLOOR: u64 = 1 << 20;

/// One readable entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name in the bundle (a top folder shared by every entry already removed).
    pub name: String,
    /// Its declared size in bytes (a folder's file: its size).
    pub size: u64,
    /// Bytes it takes in the archive (a folder's file: its size).
    pub stored: u64,
    /// Where the source keeps it.
    index: usize,
}

/// What [`Source::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The source, ready to read.
    pub source: Source,
    /// The entries that passed every check, in archive order.
    pub entries: Vec<Entry>,
    /// What did not pass, and warnings.
    pub findings: Vec<Finding>,
}

/// A bundle's container.
#[derive(Debug)]
pub enum Source {
    /// A zip archive and its central directory.
    Zip {
        /// The archive's path.
        path: PathBuf,
        /// The archive as opened for the listing (threads reopen this very inode, so a file
        /// renamed over `path` meanwhile is never mixed in).
        file: Option<File>,
        /// Central-directory entries, by [`Entry::index`].
        entries: Vec<OwnedZipFileEntry>,
    },
    /// A folder of files.
    Dir {
        /// The folder's path.
        path: PathBuf,
        /// File names, by [`Entry::index`].
        names: Vec<String>,
    },
}

/// Opening a source failed for a reason that is not the bundle's fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    /// The file concerned.
    pub path: PathBuf,
    /// What went wrong (in the message, so not chained again as a source).
    pub source: io::Error,
}

impl IoError {
    pub(crate) fn new(path: &Path, source: io::Error) -> IoError {
        IoError {
            path: path.to_owned(),
            source,
        }
    }
}

/// Is this read error a sign of a damaged archive (exit 1) rather than a failing disk (exit 2)?
pub fn is_corruption(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput
    )
}

impl Source {
    /// Opens `path`: a folder, or else a zip archive.
    pub fn open(path: &Path, limits: &Limits) -> Result<Opened, IoError> {
        let meta = std::fs::metadata(path).map_err(|e| IoError::new(path, e))?;
        if meta.is_dir() {
            open_dir(path, limits)
        } else if meta.is_file() {
            open_zip(path, limits)
        } else {
            // A FIFO or device would block or never end.
            Err(IoError::new(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file or a folder",
                ),
            ))
        }
    }

    /// `"zip"` or `"folder"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Zip { .. } => "zip",
            Source::Dir { .. } => "folder",
        }
    }

    /// The source's path.
    pub fn path(&self) -> &Path {
        match self {
            Source::Zip { path, .. } | Source::Dir { path, .. } => path,
        }
    }

    /// A private reader for one thread.
    pub fn handle(&self) -> Result<Handle<'_>, IoError> {
        let file = match self {
            Source::Zip { path, file, .. } => {
                Some(reopen(path, file.as_ref()).map_err(|e| IoError::new(path, e))?)
            }
            Source::Dir { .. } => None,
        };
        Ok(Handle { source: self, file })
    }
}

/// One thread's access to a [`Source`].
#[derive(Debug)]
pub struct Handle<'s> {
    source: &'s Source,
    file: Option<File>,
}

impl Handle<'_> {
    /// A reader of `entry`'s bytes. For a zip, the reader checks the CRC at the end and fails
    /// with `InvalidData` if the data runs past the declared size.
    pub fn open(&mut self, entry: &Entry) -> io::Result<Box<dyn Read + '_>> {
        match (self.source, &mut self.file) {
            (Source::Zip { entries, .. }, Some(file)) => {
                let raw = entries
                    .get(entry.index)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such entry"))?;
                let reader = raw
                    .as_ref()
                    .with_reader(file, ZipReadOptions::new())
                    .map_err(zip_to_io)?;
                Ok(Box::new(reader))
            }
            (Source::Dir { path, names }, _) => {
                let name = names
                    .get(entry.index)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such entry"))?;
                // O_NONBLOCK: a file swapped for a FIFO since the listing must not block.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(path.join(name))?;
                if !file.metadata()?.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "no longer a regular file",
                    ));
                }
                Ok(Box::new(file))
            }
            (Source::Zip { .. }, None) => Err(io::Error::other("zip handle without a file")),
        }
    }
}

/// A new, independent open file description of `file` (its own offset, unlike `dup`), through
/// `/proc/self/fd`; without `/proc`, the path again.
fn reopen(path: &Path, file: Option<&File>) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    if let Some(f) = file
        && let Ok(again) = File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))
    {
        return Ok(again);
    }
    File::open(path)
}

fn zip_to_io(e: ZipError) -> io::Error {
    match e {
        ZipError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// Collects entries while enforcing counts, duplicates and sizes.
struct Lister<'l> {
    limits: &'l Limits,
    seen: HashSet<String>,
    total: u64,
    count: usize,
    findings: Vec<Finding>,
    entries: Vec<Entry>,
    /// Files inside a folder: (entry, index in `entries`).
    nested: Vec<usize>,
    stop: bool,
}

impl<'l> Lister<'l> {
    fn new(limits: &'l Limits) -> Self {
        Lister {
            limits,
            seen: HashSet::new(),
            total: 0,
            count: 0,
            findings: Vec::new(),
            entries: Vec::new(),
            nested: Vec::new(),
            stop: false,
        }
    }

    fn error(&mut self, code: Code, entry: &str, message: impl Into<String>) {
        self.findings
            .push(Finding::error(code, Some(entry), message));
    }

    /// Counts one listed entry (of any kind); false once over the limit.
    fn count_one(&mut self) -> bool {
        self.count += 1;
        if self.count > self.limits.max_entries {
            self.findings.push(Finding::error(
                Code::TooManyEntries,
                None,
                format!(
                    "more than {} entries (--max-entries)",
                    self.limits.max_entries
                ),
            ));
            self.stop = true;
        }
        !self.stop
    }

    /// A regular file: checks its name's uniqueness, size and ratio.
    fn file(&mut self, name: &str, size: u64, stored: u64, index: usize) {
        if !self.seen.insert(name.to_owned()) {
            self.error(Code::DuplicateName, name, "a second entry with this name");
            return;
        }
        if size > self.limits.max_entry {
            self.error(
                Code::TooLarge,
                name,
                format!(
                    "declares {size} bytes, over the {} limit (--max-entry)",
                    self.limits.max_entry
                ),
            );
            return;
        }
        self.total = self.total.saturating_add(size);
        if size > RATIO_FLOOR && size / stored.max(1) > self.limits.max_ratio {
            self.error(
                Code::CompressionRatio,
                name,
                format!(
                    "expands {stored} stored bytes to {size} (more than {}x, --max-ratio): a zip bomb?",
                    self.limits.max_ratio
                ),
            );
            return;
        }
        if name.contains('/') {
            self.nested.push(self.entries.len());
        }
        self.entries.push(Entry {
            name: name.to_owned(),
            size,
            stored,
            index,
        });
    }

    fn finish(mut self) -> (Vec<Entry>, Vec<Finding>) {
        if self.total > self.limits.max_total {
            self.findings.push(Finding::error(
                Code::TooLarge,
                None,
                format!(
                    "entries declare {} bytes in all, over the {} limit (--max-total)",
                    self.total, self.limits.max_total
                ),
            ));
        }
        // One top folder holding everything (a re-zipped bundle) is removed; anything else in
        // a sub-folder is not part of a bundle.
        if !self.nested.is_empty() {
            let first = self.entries[self.nested[0]]
                .name
                .split_once('/')
                .map(|(t, _)| t.to_owned());
            let all_under_one = self.nested.len() == self.entries.len()
                && self.entries.iter().all(|e| match e.name.split_once('/') {
                    Some((top, rest)) => Some(top) == first.as_deref() && !rest.contains('/'),
                    None => false,
                });
            if let (true, Some(t)) = (all_under_one, first) {
                self.findings.push(Finding::warning(
                    Code::TopFolderStripped,
                    Some(&t),
                    "every entry sits in this folder; it is left out of the names",
                ));
                for e in &mut self.entries {
                    e.name = e.name[t.len() + 1..].to_owned();
                }
            } else {
                let nested: HashSet<usize> = self.nested.iter().copied().collect();
                let mut kept = Vec::with_capacity(self.entries.len());
                for (i, e) in self.entries.into_iter().enumerate() {
                    if nested.contains(&i) {
                        self.findings.push(Finding::warning(
                            Code::NestedEntry,
                            Some(&e.name),
                            "in a sub-folder: not part of a bundle's flat layout, skipped",
                        ));
                    } else {
                        kept.push(e);
                    }
                }
                self.entries = kept;
            }
        }
        // Our manifest files are written by `stage`; an archived copy would be overwritten.
        let (reserved, kept): (Vec<Entry>, Vec<Entry>) = self
            .entries
            .into_iter()
            .partition(|e| OWN_FILES.contains(&e.name.as_str()));
        for e in reserved {
            self.findings.push(Finding::warning(
                Code::ReservedName,
                Some(&e.name),
                "bundle-tool writes this file itself when staging; the archived copy is skipped",
            ));
        }
        (kept, self.findings)
    }
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

fn open_zip(path: &Path, limits: &Limits) -> Result<Opened, IoError> {
    let file = File::open(path).map_err(|e| IoError::new(path, e))?;
    let keep = file.try_clone().map_err(|e| IoError::new(path, e))?;
    let corrupt = |message: String| Opened {
        source: Source::Zip {
            path: path.to_owned(),
            file: None,
            entries: Vec::new(),
        },
        entries: Vec::new(),
        findings: vec![Finding::error(Code::CorruptArchive, None, message)],
    };
    let archive = match ZipArchive::new(file) {
        Ok(a) => a,
        Err(ZipError::Io(e)) if !is_corruption(&e) => return Err(IoError::new(path, e)),
        Err(e) => return Ok(corrupt(format!("not a readable zip archive: {e}"))),
    };
    let mut raw_entries: Vec<OwnedZipFileEntry> = Vec::new();
    let mut lister = Lister::new(limits);
    // The archive keeps one entry per name; name the duplicates from the raw directory.
    if archive.has_duplicate_names() {
        match duplicate_names(path, archive.central_directory_start()) {
            Ok(dups) if !dups.is_empty() => {
                for d in dups {
                    lister.error(
                        Code::DuplicateName,
                        &d,
                        "more than one entry with this name",
                    );
                }
            }
            Ok(_) => lister.findings.push(Finding::error(
                Code::DuplicateName,
                None,
                "the central directory lists the same name more than once",
            )),
            Err(e) => return Err(IoError::new(path, e)),
        }
    }
    for i in 0..archive.len() {
        let entry: OwnedZipFileEntry = match archive.by_index_data(i) {
            Ok(e) => e.into(),
            Err(e) => {
                lister.findings.push(Finding::error(
                    Code::CorruptArchive,
                    None,
                    format!("central directory entry {i} unreadable: {e}"),
                ));
                break;
            }
        };
        if !lister.count_one() {
            break;
        }
        let raw_name = entry.name_raw().to_vec();
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        let checked = match names::check(&raw_name) {
            Ok(c) => c,
            Err(e) => {
                lister.error(Code::UnsafeName, &shown, format!("refused name: {e}"));
                continue;
            }
        };
        let mode = entry.unix_mode().map(|m| m & S_IFMT);
        if entry.is_symlink() || mode == Some(S_IFLNK) {
            lister.error(
                Code::Symlink,
                checked.name,
                "a symbolic link entry (bundles hold files only)",
            );
            continue;
        }
        if checked.is_dir || entry.is_dir() || mode == Some(S_IFDIR) {
            if entry.size() > 0 {
                lister.error(
                    Code::NotAFile,
                    checked.name,
                    format!("marked as a folder but holds {} bytes", entry.size()),
                );
            }
            continue;
        }
        if let Some(m) = mode.filter(|m| *m != 0 && *m != S_IFREG) {
            lister.error(
                Code::NotAFile,
                checked.name,
                format!("not a regular file (mode {m:o})"),
            );
            continue;
        }
        if entry.encrypted() {
            lister.error(Code::Encrypted, checked.name, "an encrypted entry");
            continue;
        }
        let method = entry.compression();
        if !zip::SUPPORTED_COMPRESSION_METHODS.contains(&method) {
            lister.error(
                Code::UnsupportedCompression,
                checked.name,
                format!("compression method {method} is not supported"),
            );
            continue;
        }
        let name = checked.name.to_owned();
        let (size, stored) = (entry.size(), entry.compressed_size());
        let index = raw_entries.len();
        raw_entries.push(entry);
        lister.file(&name, size, stored, index);
    }
    let (entries, findings) = lister.finish();
    Ok(Opened {
        source: Source::Zip {
            path: path.to_owned(),
            file: Some(keep),
            entries: raw_entries,
        },
        entries,
        findings,
    })
}

/// Names that occur more than once in the central directory, read straight from its bytes
/// (the zip crate keeps one entry per name). Stops quietly at anything unexpected.
fn duplicate_names(path: &Path, start: u64) -> io::Result<Vec<String>> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    let end = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(start))?;
    let mut dir = Vec::new();
    file.take(end.saturating_sub(start).min(64 << 20))
        .read_to_end(&mut dir)?;
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    let mut at = 0usize;
    while let Some(h) = dir.get(at..at + 46) {
        if h[..4] != *b"PK\x01\x02" {
            break;
        }
        let le16 = |o: usize| usize::from(u16::from_le_bytes([h[o], h[o + 1]]));
        let (name_len, extra_len, comment_len) = (le16(28), le16(30), le16(32));
        let Some(name) = dir.get(at + 46..at + 46 + name_len) else {
            break;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        if !seen.insert(name.clone()) && !dups.contains(&name) {
            dups.push(name);
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(dups)
}

fn open_dir(path: &Path, limits: &Limits) -> Result<Opened, IoError> {
    let mut listed: Vec<(std::ffi::OsString, std::fs::FileType, u64)> = Vec::new();
    for item in std::fs::read_dir(path).map_err(|e| IoError::new(path, e))? {
        let item = item.map_err(|e| IoError::new(path, e))?;
        let meta = item.metadata().map_err(|e| IoError::new(&item.path(), e))?;
        listed.push((item.file_name(), meta.file_type(), meta.len()));
    }
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names = Vec::new();
    let mut lister = Lister::new(limits);
    for (os_name, ft, len) in listed {
        let shown = os_name.to_string_lossy().into_owned();
        if OWN_FILES.contains(&shown.as_str()) {
            continue;
        }
        if !lister.count_one() {
            break;
        }
        let name = match names::check(os_name.as_encoded_bytes()) {
            Ok(c) => c.name.to_owned(),
            Err(e) => {
                lister.error(Code::UnsafeName, &shown, format!("refused name: {e}"));
                continue;
            }
        };
        if ft.is_symlink() {
            lister.error(
                Code::Symlink,
                &name,
                "a symbolic link (bundles hold files only)",
            );
        } else if ft.is_dir() {
            lister.findings.push(Finding::warning(
                Code::NestedEntry,
                Some(&name),
                "a sub-folder: not part of a bundle's flat layout, skipped",
            ));
        } else if ft.is_file() {
            lister.file(&name, len, len, names.len());
            names.push(name);
        } else {
            let what = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            lister.error(Code::NotAFile, &name, format!("{what}, not a regular file"));
        }
    }
    let (entries, findings) = lister.finish();
    Ok(Opened {
        source: Source::Dir {
            path: path.to_owned(),
            names,
        },
        entries,
        findings,
    })
}
