//! Confinement of TFTP request names to the served directory.
//!
//! This module is the single place where a file name taken from a TFTP
//! request (RRQ or WRQ) becomes an open file descriptor. Everything else in
//! the server must go through [`ServeRoot`]; nothing may join the request name
//! onto the served directory's path and hand that string to `open(2)`.
//!
//! # Threat model
//!
//! The attacker is any network client: it chooses every byte of the request
//! name. Where uploads are enabled, or where local users can write into the
//! served tree, the attacker may also create, rename and replace entries
//! (including symlinks) inside the served directory, concurrently with our
//! lookups. The goals are: no byte outside the served directory is ever read
//! or written, no request can make the server block or touch a device, and
//! every refusal maps to a TFTP error code.
//!
//! * **`..` components.** The name is normalised lexically first
//!   ([`normalize`]): leading `/`s are stripped (a TFTP name is always
//!   relative to the served directory, as with `in.tftpd -s`), empty and `.`
//!   components are dropped, and *any* `..` component is refused outright,
//!   even one that would stay inside (`a/../b`). NUL bytes and names that
//!   normalise to nothing (`/`, `.`) are refused. The result is a
//!   [`RelativeName`], which cannot be constructed any other way.
//! * **Absolute escape.** The served directory is held as a directory file
//!   descriptor opened once at startup, and every lookup is made relative to
//!   it with the `*at` family of system calls. The server can therefore
//!   `chroot(2)` and drop privileges after [`ServeRoot::open`] and keep
//!   working, and the directory's path string is only used for display.
//! * **Symlinks.** A symlink whose target stays inside the served directory is
//!   followed (`current -> EWC/17_9_4a` works, and so does `sub/x -> ../y`).
//!   A symlink that leaves it is refused with [`ConfineError::Escape`]: every
//!   *absolute* target (even one that happens to point back inside, since its
//!   meaning depends on the process root), and every relative target whose
//!   `..` components climb above the served directory. Symlink chains are
//!   limited to [`MAX_SYMLINKS`] (40, the kernel's limit), so loops fail fast
//!   with [`ConfineError::TooManySymlinks`]. procfs "magic links" (such as
//!   `/proc/self/fd/3`, which jump to an object instead of naming a path) are
//!   never followed.
//! * **Non-regular files.** Only regular files are served. Each name is first
//!   resolved to an `O_PATH` descriptor, which opens nothing, and its type is
//!   checked: a fifo (whose `open` would block), a device (whose `open` can
//!   have side effects: think of a `dev/watchdog` node in an NFS-root tree kept
//!   under the TFTP directory) or a directory is refused before anything opens
//!   it. Only then is the file opened for reading, with `O_NONBLOCK|O_NOCTTY`,
//!   and its type is checked again on the opened descriptor, so an object
//!   swapped in between the two steps is never read from and a fifo's open
//!   cannot block. `O_NONBLOCK` is cleared again before the file is returned.
//! * **Races (TOCTOU).** With `openat2(2)` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` the kernel performs the whole
//!   resolution (every component and every symlink expansion) in one system
//!   call and fails with `EXDEV` the moment any step would leave the
//!   descriptor's subtree. The check and the use are the same walk: there is
//!   no window in which a component can be swapped for a symlink between
//!   checking and opening. The kernel also detects a concurrent `rename(2)` or
//!   mount that could move the walk outside while it resolves `..`, and then
//!   fails with `EAGAIN` (which we retry a bounded number of times) rather than
//!   guess. This is the primary resolver.
//!
//! # The fallback resolver, and where it is weaker
//!
//! On kernels without `openat2` (before 5.6), or in sandboxes whose seccomp
//! filter answers it with `ENOSYS` or `EPERM`, [`Resolver::Walk`] is used. It
//! walks the name one component at a time: each component is opened with
//! `openat(dir, component, O_PATH|O_NOFOLLOW)` relative to the descriptor of
//! the directory reached so far; a symlink is read through its own `O_PATH`
//! descriptor with `readlinkat(fd, "")` (no second lookup by name) and its
//! target is spliced into the remaining components; an absolute target is
//! refused; and `..` is never handed to the kernel: the walk keeps its own
//! stack of directory descriptors below the root and `..` pops it, so it can
//! never climb above the root (popping an empty stack is an escape). Each step
//! works on descriptors, so replacing a component after it has been opened
//! does not affect the walk. It is weaker than `openat2` in these ways:
//!
//! * A directory the walk holds can be *renamed out* of the served tree while
//!   the walk is below it; later lookups then happen outside. `openat2`
//!   detects this; the walk cannot. Exploiting it needs write access both
//!   inside the served tree and to the destination outside it on the same
//!   filesystem, i.e. a local attacker, not a network client.
//! * The file is opened for reading by a second lookup of the final entry
//!   name, `openat(parent, name, O_NOFOLLOW|O_NONBLOCK)`. If the entry is
//!   replaced in between, a different file may be opened; `O_NOFOLLOW` and the
//!   re-check of the type on the opened descriptor keep it inside the parent
//!   directory and regular. (The `openat2` resolver also opens twice, for the
//!   same type check, but each open is confined by the kernel.)
//! * The walk holds one descriptor per directory level it is below, and
//!   refuses to go deeper than [`MAX_WALK_DEPTH`] levels (`ENAMETOOLONG`);
//!   `openat2` has no such limit.
//! * It cannot recognise procfs magic links. It never *follows* them (it only
//!   ever resolves a link's text, and the text of a magic link is either an
//!   absolute path, refused, or a pseudo-name such as `pipe:[1234]`, looked up
//!   as an ordinary sibling entry), so where `openat2` answers
//!   [`ConfineError::TooManySymlinks`] the walk may answer
//!   [`ConfineError::NotFound`]. This matters only if a procfs is mounted
//!   inside the served tree.
//!
//! [`Resolver::Auto`] (the default) probes `openat2` once when the root is
//! opened and uses the walk only if the probe fails with `ENOSYS` or `EPERM`;
//! it also redoes a single lookup with the walk if `openat2` starts failing
//! with one of those later (e.g. a seccomp filter installed after startup).
//!
//! # What is not defended against
//!
//! Mount points and bind mounts inside the served tree are crossed (the
//! administrator put them there). A hard link inside the tree to a file
//! outside it is indistinguishable from the file itself and is served; the
//! `fs.protected_hardlinks` sysctl limits who can create such links.
//!
//! # Uploads (WRQ)
//!
//! [`ServeRoot::open_parent`] resolves the directory part of the name with
//! the same confinement and returns a [`Dir`]; every operation on it takes a
//! single validated path component, so nothing it does can leave that
//! directory. Uploads are written to a hidden temporary file created with
//! `O_CREAT|O_EXCL` (which never follows a symlink) and renamed into place with
//! `renameat(2)`, which replaces the directory entry, symlink or not, instead of
//! writing through it.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::raw::{c_int, c_uint};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most symlinks followed while resolving one name, as in the kernel
/// (`MAXSYMLINKS`): a chain of 40 links resolves, a 41st fails with
/// [`ConfineError::TooManySymlinks`].
pub const MAX_SYMLINKS: usize = 40;

/// Deepest directory level the fallback walk descends to below the served
/// directory (it holds one descriptor per level).
pub const MAX_WALK_DEPTH: usize = 255;

/// Longest accepted normalised name, in bytes (`PATH_MAX - 1`).
pub const MAX_NAME_LEN: usize = 4095;

/// Longest single path component (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Request names are cut to this many bytes when stored in an error.
const MAX_LOGGED_NAME: usize = 512;

/// Middle part of every temporary upload name: `.{name}.tftpd-{random}`.
const TEMP_MARKER: &[u8] = b".tftpd-";

/// How many times a lookup is retried when `openat2` reports `EAGAIN` (a
/// concurrent rename or mount while it resolved `..`).
const EAGAIN_RETRIES: usize = 16;

/// The resolution flags every `openat2` call uses. Current kernels already
/// refuse magic links under `RESOLVE_BENEATH` (with `EXDEV`);
/// `RESOLVE_NO_MAGICLINKS` keeps that true should a future kernel relax it.
const RESOLVE_FLAGS: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// Flags of the descriptor used to look at an object without opening it.
const PATH_FLAGS: c_int = libc::O_PATH | libc::O_CLOEXEC;

/// Flags of the descriptor a read is served from. `O_NONBLOCK` makes sure an
/// object swapped in after the type check cannot block the open; it is
/// cleared before the file is returned.
const READ_FLAGS: c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_LARGEFILE;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a request name could not be turned into an open file.
///
/// Every variant carries the request name (lossily decoded, cut to a bounded
/// length) for logging; its `Display` form quotes and escapes the name, so a
/// hostile name cannot forge log lines. Use [`ConfineError::tftp_error_code`]
/// to pick the TFTP ERROR packet's code.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The file, or a directory on the way to it, does not exist (`ENOENT`,
    /// `ENOTDIR`, or a dangling symlink). TFTP error 1.
    #[error("file not found: {name:?}")]
    NotFound {
        /// The offending request name.
        name: String,
    },
    /// The name tries to leave the served directory: a `..` component, an
    /// absolute symlink, or a symlink whose target climbs above the root.
    /// TFTP error 2.
    #[error("refused, leads outside the served directory: {name:?}")]
    Escape {
        /// The offending request name.
        name: String,
    },
    /// The name resolves to a directory, fifo, socket or device. TFTP error 2.
    #[error("refused, not a regular file: {name:?}")]
    NotRegularFile {
        /// The offending request name.
        name: String,
    },
    /// The kernel refused access (`EACCES`, `EPERM`), or the file is not
    /// world-readable while that is required. TFTP error 2.
    #[error("permission denied: {name:?}")]
    PermissionDenied {
        /// The offending request name.
        name: String,
    },
    /// More than [`MAX_SYMLINKS`] symlinks, a symlink loop, or a procfs magic
    /// link (`ELOOP`). TFTP error 2.
    #[error("refused, too many levels of symbolic links: {name:?}")]
    TooManySymlinks {
        /// The offending request name.
        name: String,
    },
    /// The name is malformed: empty after normalisation, contains a NUL byte,
    /// or is too long. TFTP error 2.
    #[error("invalid file name ({reason}): {name:?}")]
    Invalid {
        /// The offending request name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Any other I/O error. TFTP error 3 for `ENOSPC`/`EDQUOT`, 6 for `EEXIST`,
    /// otherwise 0.
    #[error("{name:?}: {source}")]
    Io {
        /// The offending request name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ConfineError {
    /// The TFTP error code (RFC 1350) to send for this error: 1 "File not
    /// found" for [`NotFound`](Self::NotFound); 2 "Access violation" for
    /// `Escape`, `NotRegularFile`, `PermissionDenied`, `TooManySymlinks` and
    /// `Invalid`; for `Io`, 3 "Disk full or allocation exceeded" on
    /// `ENOSPC`/`EDQUOT`, 6 "File already exists" on `EEXIST`, otherwise 0
    /// "Not defined" (the caller supplies the message).
    #[must_use]
    pub fn tftp_error_code(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 1,
            Self::Escape { .. }
            | Self::NotRegularFile { .. }
            | Self::PermissionDenied { .. }
            | Self::TooManySymlinks { .. }
            | Self::Invalid { .. } => 2,
            Self::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT) => 3,
                Some(libc::EEXIST) => 6,
                _ => 0,
            },
        }
    }

    /// The request name this error is about.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::NotFound { name }
            | Self::Escape { name }
            | Self::NotRegularFile { name }
            | Self::PermissionDenied { name }
            | Self::TooManySymlinks { name }
            | Self::Invalid { name, .. }
            | Self::Io { name, .. } => name,
        }
    }

    /// Classifies an I/O error from an operation on `name` (for example one
    /// returned by a [`Dir`] method): `ENOENT`/`ENOTDIR` become `NotFound`,
    /// `EXDEV` `Escape`, `EACCES`/`EPERM` `PermissionDenied`, `ELOOP`
    /// `TooManySymlinks`, and anything else `Io`. An `io::Error` that wraps a
    /// `ConfineError` (as [`Dir::stat_entry`] returns) is unwrapped as is.
    #[must_use]
    pub fn from_io(name: &[u8], err: io::Error) -> Self {
        if err
            .get_ref()
            .is_some_and(|inner| inner.is::<ConfineError>())
        {
            let kind = err.kind();
            return match err
                .into_inner()
                .map(|inner| inner.downcast::<ConfineError>())
            {
                Some(Ok(confine)) => *confine,
                // Unreachable in practice: we just checked the type.
                _ => Self::Io {
                    name: log_name(name),
                    source: io::Error::from(kind),
                },
            };
        }
        let name = log_name(name);
        match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Self::NotFound { name },
            Some(libc::EXDEV) => Self::Escape { name },
            Some(libc::EACCES | libc::EPERM) => Self::PermissionDenied { name },
            Some(libc::ELOOP) => Self::TooManySymlinks { name },
            _ => Self::Io { name, source: err },
        }
    }

    /// Wraps this error into an `io::Error` that [`ConfineError::from_io`]
    /// turns back into it; an `Io` variant yields its source unchanged.
    fn into_io(self) -> io::Error {
        let kind = match &self {
            Self::NotFound { .. } => io::ErrorKind::NotFound,
            Self::Invalid { .. } => io::ErrorKind::InvalidInput,
            Self::Escape { .. }
            | Self::NotRegularFile { .. }
            | Self::PermissionDenied { .. }
            | Self::TooManySymlinks { .. } => io::ErrorKind::PermissionDenied,
            Self::Io { .. } => {
                return match self {
                    Self::Io { source, .. } => source,
                    other => io::Error::other(other),
                };
            }
        };
        io::Error::new(kind, self)
    }
}

/// A request name as stored in errors: lossily decoded and cut to a bounded
/// length on a character boundary.
fn log_name(raw: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(raw).into_owned();
    if s.len() > MAX_LOGGED_NAME {
        let mut cut = MAX_LOGGED_NAME;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn errno(code: c_int) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn is_openat2_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
}

// ---------------------------------------------------------------------------
// Lexical normalisation
// ---------------------------------------------------------------------------

/// A request name that passed [`normalize`]: relative, non-empty, made of
/// components separated by single `/`s, none of which is empty, `.` or `..`,
/// with no NUL byte and at most [`MAX_NAME_LEN`] bytes.
///
/// It can only be obtained from [`normalize`] (also reachable as
/// [`RelativeName::new`] and `TryFrom`), so holding one proves the name was
/// checked. Being lexically clean does not make it safe to open by path: it
/// may still traverse symlinks, which only [`ServeRoot`] resolves safely.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelativeName(CString);

/// Normalises a raw request name (the bytes between the opcode and the NUL of
/// an RRQ/WRQ packet).
///
/// Leading `/`s are stripped; the name is split on `/`; empty and `.`
/// components are dropped. It is refused with [`ConfineError::Escape`] if any
/// component is `..`, and with [`ConfineError::Invalid`] if it contains a NUL
/// byte, is empty after normalisation (`""`, `/`, `.`, `//./`) or is longer
/// than [`MAX_NAME_LEN`]. A pure function: it never touches the filesystem and
/// never panics.
///
/// ```text
/// "//a//b/./c" -> "a/b/c"      "../x", "a/..", "/../../etc/passwd" -> Escape
/// "/"  "."  ""  "a\0b"         -> Invalid
/// ```
pub fn normalize(raw: &[u8]) -> Result<RelativeName, ConfineError> {
    let invalid = |reason| ConfineError::Invalid {
        name: log_name(raw),
        reason,
    };
    if raw.contains(&0) {
        return Err(invalid("contains a NUL byte"));
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(ConfineError::Escape {
                    name: log_name(raw),
                });
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(component);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid("empty"));
    }
    if out.len() > MAX_NAME_LEN {
        return Err(invalid("too long"));
    }
    CString::new(out)
        .map(RelativeName)
        .map_err(|_| invalid("contains a NUL byte"))
}

impl RelativeName {
    /// Same as [`normalize`].
    pub fn new(raw: &[u8]) -> Result<Self, ConfineError> {
        normalize(raw)
    }

    /// The normalised name as bytes, e.g. `a/b/c`.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.to_bytes()
    }

    /// The normalised name as an `OsStr`.
    #[must_use]
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(self.as_bytes())
    }

    /// The normalised name as a relative `Path`.
    #[must_use]
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_os_str())
    }

    /// The components, in order; none is empty, `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> + '_ {
        self.as_bytes().split(|&b| b == b'/').map(OsStr::from_bytes)
    }

    /// The last component.
    #[must_use]
    pub fn file_name(&self) -> &OsStr {
        let bytes = self.as_bytes();
        match bytes.iter().rposition(|&b| b == b'/') {
            Some(slash) => OsStr::from_bytes(bytes.get(slash + 1..).unwrap_or_default()),
            None => self.as_os_str(),
        }
    }

    /// Everything before the last component, or `None` for a single-component
    /// name (whose parent is the served directory itself).
    #[must_use]
    pub fn parent(&self) -> Option<RelativeName> {
        let bytes = self.as_bytes();
        let slash = bytes.iter().rposition(|&b| b == b'/')?;
        // A prefix of a valid name ending before a `/` is itself valid.
        normalize(bytes.get(..slash)?).ok()
    }

    fn as_c_str(&self) -> &CStr {
        &self.0
    }
}

impl fmt::Debug for RelativeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

/// Shows the name with control characters escaped, so it is safe in logs.
impl fmt::Display for RelativeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            String::from_utf8_lossy(self.as_bytes()).escape_debug()
        )
    }
}

impl AsRef<Path> for RelativeName {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl TryFrom<&[u8]> for RelativeName {
    type Error = ConfineError;
    fn try_from(raw: &[u8]) -> Result<Self, ConfineError> {
        normalize(raw)
    }
}

impl TryFrom<&str> for RelativeName {
    type Error = ConfineError;
    fn try_from(raw: &str) -> Result<Self, ConfineError> {
        normalize(raw.as_bytes())
    }
}

impl TryFrom<&OsStr> for RelativeName {
    type Error = ConfineError;
    fn try_from(raw: &OsStr) -> Result<Self, ConfineError> {
        normalize(raw.as_bytes())
    }
}

// ---------------------------------------------------------------------------
// System call wrappers
// ---------------------------------------------------------------------------

/// Takes ownership of a descriptor a system call just returned.
fn owned_fd(ret: c_int) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a non-negative descriptor that the kernel has just
    // allocated for this call; nothing else refers to it, so we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// `openat2(dir, path, {flags, 0, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS})`,
/// retrying `EINTR` and, a bounded number of times, `EAGAIN`.
fn openat2_beneath(dir: BorrowedFd<'_>, path: &CStr, flags: c_int) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is a plain C struct of `u64`s for which all-zero is
    // a valid value; it is `#[non_exhaustive]` in libc, so zeroing is the way
    // to build it, and the kernel requires unused (future) fields to be zero.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::from(flags.cast_unsigned());
    how.resolve = RESOLVE_FLAGS;
    let mut again = 0;
    loop {
        // SAFETY: `path` is a NUL-terminated string and `how` a valid
        // `open_how`, both alive for the duration of the call; the size we
        // pass is exactly that of `how`. The kernel only reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            return owned_fd(c_int::try_from(ret).map_err(|_| errno(libc::EBADF))?);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if again < EAGAIN_RETRIES => again += 1,
            _ => return Err(err),
        }
    }
}

/// Plain `openat(2)`, retrying `EINTR`.
fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: c_int, mode: u32) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `path` is a NUL-terminated string alive for the call; the
        // variadic mode argument is passed as an unsigned int, as the C ABI
        // promotes `mode_t` for variadic calls.
        let ret =
            unsafe { libc::openat(dir.as_raw_fd(), path.as_ptr(), flags, c_uint::from(mode)) };
        match owned_fd(ret) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            other => return other,
        }
    }
}

/// Reads the target of the symlink an `O_PATH|O_NOFOLLOW` descriptor refers
/// to, without looking anything up by name.
fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // A symlink target is at most PATH_MAX - 1 bytes.
    let mut buf = vec![0u8; MAX_NAME_LEN + 1];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and outlives the
    // call; `c""` is a valid empty C string, which with an O_PATH symlink
    // descriptor makes readlinkat operate on that symlink.
    let ret = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(ret).map_err(|_| io::Error::last_os_error())?;
    if len >= buf.len() {
        return Err(errno(libc::ENAMETOOLONG));
    }
    buf.truncate(len);
    Ok(buf)
}

fn renameat(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated strings alive for the call.
    let ret =
        unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears `O_NONBLOCK` on an open descriptor.
fn clear_nonblock(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: F_SETFL takes an int argument, which we pass.
        let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `fstat` of a descriptor (an `O_PATH` one is fine), giving it back.
fn metadata_of(fd: OwnedFd) -> io::Result<(OwnedFd, Metadata)> {
    let file = File::from(fd);
    let meta = file.metadata()?;
    Ok((OwnedFd::from(file), meta))
}

/// Validates a single path component for the [`Dir`] methods.
fn component(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    let bad = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{msg}: {name:?}"));
    if bytes.is_empty() || bytes == b"." || bytes == b".." {
        return Err(bad("not a file name"));
    }
    if bytes.contains(&b'/') {
        return Err(bad("not a single path component"));
    }
    if bytes.len() > NAME_MAX {
        return Err(bad("file name too long"));
    }
    CString::new(bytes).map_err(|_| bad("file name contains a NUL byte"))
}

fn is_temp_name(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'.') && bytes.windows(TEMP_MARKER.len()).any(|w| w == TEMP_MARKER)
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's random source once per thread and
    // perturbed on every construction; the counter and clock make successive
    // values distinct regardless. Unpredictability is not a security
    // property here: `O_EXCL` is what makes creation safe.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

// ---------------------------------------------------------------------------
// Resolution engines
// ---------------------------------------------------------------------------

/// Which path resolver a [`ServeRoot`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolver {
    /// Probe `openat2` when the root is opened; use it if it works, else the
    /// walk. A lookup that later fails with `ENOSYS`/`EPERM` from `openat2`
    /// is redone with the walk.
    #[default]
    Auto,
    /// Only `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`; opening
    /// the root fails if the kernel does not provide it.
    Openat2,
    /// Only the userspace component-by-component walk (see the module docs
    /// for where it is weaker).
    Walk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Openat2 { fallback: bool },
    Walk,
}

/// How to open, for reading, the object a resolution reached.
enum Reopen {
    /// Resolve the name again with `openat2`.
    Openat2,
    /// Open this entry of this directory (`None` is the root) without
    /// following a symlink.
    Entry(Option<OwnedFd>, CString),
    /// The object was reached as a directory (through `.`/`..`): there is no
    /// entry to open it by, and it is not a regular file anyway.
    Directory,
}

/// The object a name resolved to, as an `O_PATH` descriptor.
struct Resolved {
    target: OwnedFd,
    reopen: Reopen,
}

/// Resolves `name` below `root` to an `O_PATH` descriptor, following
/// symlinks that stay inside, with the given engine.
fn resolve(engine: Engine, root: BorrowedFd<'_>, name: &RelativeName) -> io::Result<Resolved> {
    match engine {
        Engine::Walk => walk(root, name),
        Engine::Openat2 { fallback } => match openat2_beneath(root, name.as_c_str(), PATH_FLAGS) {
            Ok(target) => Ok(Resolved {
                target,
                reopen: Reopen::Openat2,
            }),
            Err(e) if fallback && is_openat2_unsupported(&e) => walk(root, name),
            Err(e) => Err(e),
        },
    }
}

/// The fallback resolver: a component-by-component walk below `root`.
///
/// Errors use the same errno values `openat2` would: `EXDEV` for an escape,
/// `ELOOP` for too many symlinks, `ENOENT`/`ENOTDIR` for missing components.
fn walk(root: BorrowedFd<'_>, name: &RelativeName) -> io::Result<Resolved> {
    // Directories entered below the root; the last one is the current
    // directory, and an empty stack means the root itself. `..` pops it: the
    // kernel is never asked for `..`, so the walk cannot climb above `root`.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = name
        .as_bytes()
        .split(|&b| b == b'/')
        .map(<[u8]>::to_vec)
        .collect();
    let mut links = 0usize;

    while let Some(comp) = pending.pop_front() {
        match comp.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Err(errno(libc::EXDEV));
                }
                continue;
            }
            _ => {}
        }
        // Nothing after it (not even an empty component from a trailing `/`
        // in a symlink target, which demands a directory, as in the kernel).
        let is_last = pending.is_empty();
        let cname = CString::new(comp).map_err(|_| errno(libc::EINVAL))?;
        let current = stack.last().map_or(root, AsFd::as_fd);
        let fd = openat(current, &cname, PATH_FLAGS | libc::O_NOFOLLOW, 0)?;
        let (fd, meta) = metadata_of(fd)?;
        let file_type = meta.file_type();

        if file_type.is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(errno(libc::ELOOP));
            }
            let target = readlink_fd(fd.as_fd())?;
            if target.first() == Some(&b'/') {
                return Err(errno(libc::EXDEV));
            }
            if target.is_empty() {
                return Err(errno(libc::ENOENT));
            }
            // The target's components are resolved relative to the directory
            // that holds the link, i.e. the current directory.
            for part in target.split(|&b| b == b'/').rev() {
                pending.push_front(part.to_vec());
            }
            continue;
        }
        if is_last {
            return Ok(Resolved {
                target: fd,
                reopen: Reopen::Entry(stack.pop(), cname),
            });
        }
        if !file_type.is_dir() {
            return Err(errno(libc::ENOTDIR));
        }
        if stack.len() >= MAX_WALK_DEPTH {
            return Err(errno(libc::ENAMETOOLONG));
        }
        stack.push(fd);
    }

    // The name ended on `.`/`..` (from a symlink target): the result is the
    // current directory itself.
    let target = match stack.pop() {
        Some(fd) => fd,
        None => openat(root, c".", PATH_FLAGS, 0)?,
    };
    Ok(Resolved {
        target,
        reopen: Reopen::Directory,
    })
}

/// Opens the object `resolved` refers to for reading, confined as before.
fn reopen_for_read(
    root: BorrowedFd<'_>,
    name: &RelativeName,
    reopen: Reopen,
) -> io::Result<OwnedFd> {
    match reopen {
        Reopen::Openat2 => openat2_beneath(root, name.as_c_str(), READ_FLAGS),
        Reopen::Entry(parent, entry) => {
            let dir = parent.as_ref().map_or(root, AsFd::as_fd);
            openat(dir, &entry, READ_FLAGS | libc::O_NOFOLLOW, 0)
        }
        Reopen::Directory => Err(errno(libc::EISDIR)),
    }
}

// ---------------------------------------------------------------------------
// ServeRoot
// ---------------------------------------------------------------------------

/// The served directory, held open, and the only way to open files in it.
///
/// Cheap to clone (the descriptor is shared). Opened once at startup, it keeps
/// working after the process chroots or drops privileges.
#[derive(Debug, Clone)]
pub struct ServeRoot {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    engine: Engine,
    require_world_readable: bool,
}

impl ServeRoot {
    /// Opens `dir` (`O_RDONLY|O_DIRECTORY|O_CLOEXEC`) with [`Resolver::Auto`].
    ///
    /// World-readability is required for reads, as `in.tftpd` does unless it
    /// is given `-p`; see [`ServeRoot::require_world_readable`].
    pub fn open(dir: &Path) -> io::Result<ServeRoot> {
        Self::open_with(dir, Resolver::Auto)
    }

    /// Opens `dir` with the given resolver. With [`Resolver::Openat2`] this
    /// fails (with `ENOSYS` or `EPERM`) where `openat2` is unavailable.
    pub fn open_with(dir: &Path, resolver: Resolver) -> io::Result<ServeRoot> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)?;
        let fd = OwnedFd::from(file);
        let engine = match resolver {
            Resolver::Walk => Engine::Walk,
            Resolver::Openat2 => {
                openat2_beneath(fd.as_fd(), c".", PATH_FLAGS)?;
                Engine::Openat2 { fallback: false }
            }
            Resolver::Auto => match openat2_beneath(fd.as_fd(), c".", PATH_FLAGS) {
                Ok(_) => Engine::Openat2 { fallback: true },
                Err(e) if is_openat2_unsupported(&e) => Engine::Walk,
                Err(e) => return Err(e),
            },
        };
        Ok(ServeRoot {
            fd: Arc::new(fd),
            path: dir.to_path_buf(),
            engine,
            require_world_readable: true,
        })
    }

    /// Whether [`open_read`](Self::open_read) refuses files without the
    /// "others may read" bit (`S_IROTH`) with
    /// [`ConfineError::PermissionDenied`], on top of the kernel's own
    /// permission check. On by default, matching `in.tftpd`; `false`
    /// corresponds to its `-p`/`--permissive`.
    #[must_use]
    pub fn require_world_readable(mut self, required: bool) -> ServeRoot {
        self.require_world_readable = required;
        self
    }

    /// The served directory's path as given to [`open`](Self::open), for
    /// display only; lookups never use it.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The resolver in effect: [`Resolver::Openat2`] or [`Resolver::Walk`]
    /// ([`Resolver::Auto`] has been decided by then).
    #[must_use]
    pub fn resolver(&self) -> Resolver {
        match self.engine {
            Engine::Openat2 { .. } => Resolver::Openat2,
            Engine::Walk => Resolver::Walk,
        }
    }

    /// Opens `name` for reading, confined to the served directory.
    ///
    /// Symlinks whose targets stay inside are followed; any that leads
    /// outside is refused. Only a regular file is opened; its type is checked
    /// before it is opened and again on the opened descriptor, so the call
    /// never blocks and never opens a device or fifo in the absence of a
    /// race (see the module docs). Returns the file (blocking mode, positioned
    /// at 0, close-on-exec) and its metadata.
    pub fn open_read(&self, name: &RelativeName) -> Result<(File, Metadata), ConfineError> {
        let fail = |e: io::Error| ConfineError::from_io(name.as_bytes(), e);
        let not_regular = || ConfineError::NotRegularFile {
            name: log_name(name.as_bytes()),
        };
        let root = self.fd.as_fd();

        let Resolved { target, reopen } = resolve(self.engine, root, name).map_err(fail)?;
        let (_, probe) = metadata_of(target).map_err(fail)?;
        if !probe.is_file() {
            return Err(not_regular());
        }
        #[cfg(test)]
        tests::RACE_HOOK.with_borrow_mut(|hook| {
            if let Some(hook) = hook {
                hook();
            }
        });

        let file = File::from(reopen_for_read(root, name, reopen).map_err(fail)?);
        let meta = file.metadata().map_err(fail)?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        if self.require_world_readable && meta.mode() & libc::S_IROTH == 0 {
            return Err(ConfineError::PermissionDenied {
                name: log_name(name.as_bytes()),
            });
        }
        clear_nonblock(file.as_fd()).map_err(fail)?;
        Ok((file, meta))
    }

    /// For an upload: resolves the directory part of `name` (following
    /// symlinks that stay inside, refusing any that leads outside) and returns
    /// it with the final component, which is never empty, `.` or `..`.
    ///
    /// A missing directory, or one component that is not a directory, is
    /// [`ConfineError::NotFound`]. `name` itself is not looked at; use
    /// [`Dir::stat_entry`].
    pub fn open_parent(&self, name: &RelativeName) -> Result<(Dir, OsString), ConfineError> {
        let fail = |e: io::Error| ConfineError::from_io(name.as_bytes(), e);
        let root = self.fd.as_fd();
        let parent = name.parent();
        let fd = match &parent {
            None => openat(root, c".", PATH_FLAGS | libc::O_DIRECTORY, 0).map_err(fail)?,
            Some(dir) => {
                let Resolved { target, .. } = resolve(self.engine, root, dir).map_err(fail)?;
                let (fd, meta) = metadata_of(target).map_err(fail)?;
                if !meta.is_dir() {
                    return Err(fail(errno(libc::ENOTDIR)));
                }
                fd
            }
        };
        let dir = Dir {
            fd,
            root: Arc::clone(&self.fd),
            engine: self.engine,
            path: parent,
        };
        Ok((dir, name.file_name().to_os_string()))
    }
}

impl AsFd for ServeRoot {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// ---------------------------------------------------------------------------
// Dir
// ---------------------------------------------------------------------------

/// A directory inside the served tree, reached with the same confinement as
/// reads, in which an upload is created and renamed into place.
///
/// Holds an `O_PATH` descriptor, so it works in a directory the server may
/// write to but not list. Every method takes a single path component (no
/// `/`, not empty, `.` or `..`, no NUL, at most 255 bytes) and fails with
/// `ErrorKind::InvalidInput` otherwise, so nothing it does leaves this
/// directory. Errors can be classified with [`ConfineError::from_io`].
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    root: Arc<OwnedFd>,
    engine: Engine,
    path: Option<RelativeName>,
}

impl Dir {
    /// This directory's name below the served directory (`None` for the
    /// served directory itself), for logging.
    #[must_use]
    pub fn path(&self) -> Option<&RelativeName> {
        self.path.as_ref()
    }

    /// The metadata of entry `name`, or `None` if it does not exist.
    ///
    /// If the entry is a symlink, it is **resolved through the same
    /// confinement as reads**, from the served directory (so `x -> ../y` is
    /// fine while `y` stays inside), and the target's metadata is returned; a
    /// dangling symlink (target missing inside) gives `None`. A symlink that
    /// leads outside, or a loop, is an error of kind `PermissionDenied` that
    /// [`ConfineError::from_io`] turns back into [`ConfineError::Escape`] or
    /// [`ConfineError::TooManySymlinks`]. Note that
    /// [`rename_into_place`](Self::rename_into_place) replaces such a symlink
    /// itself; it never writes through it.
    pub fn stat_entry(&self, name: &OsStr) -> io::Result<Option<Metadata>> {
        let cname = component(name)?;
        let fd = match openat(self.fd.as_fd(), &cname, PATH_FLAGS | libc::O_NOFOLLOW, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (_, meta) = metadata_of(fd)?;
        if !meta.file_type().is_symlink() {
            return Ok(Some(meta));
        }
        let mut full = match &self.path {
            Some(parent) => {
                let mut bytes = parent.as_bytes().to_vec();
                bytes.push(b'/');
                bytes
            }
            None => Vec::new(),
        };
        full.extend_from_slice(name.as_bytes());
        let full = normalize(&full).map_err(ConfineError::into_io)?;
        match resolve(self.engine, self.root.as_fd(), &full) {
            Ok(Resolved { target, .. }) => Ok(Some(metadata_of(target)?.1)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(ConfineError::from_io(full.as_bytes(), e).into_io()),
        }
    }

    /// Creates a new, empty, hidden temporary file for an upload of `name`
    /// in this directory: `.{name}.tftpd-{16 hex digits}` (the `name` part cut
    /// so the whole fits in 255 bytes), opened
    /// `O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC|O_NOCTTY` with permission bits
    /// `mode & 0o777` (less the umask). `O_EXCL` never follows or reuses an
    /// existing entry; a name collision is retried with a new random suffix.
    /// Returns the file and the temporary name, for
    /// [`rename_into_place`](Self::rename_into_place) or
    /// [`remove_temp`](Self::remove_temp).
    pub fn create_temp(&self, name: &OsStr, mode: u32) -> io::Result<(File, OsString)> {
        component(name)?;
        const SUFFIX_LEN: usize = 16;
        let keep = NAME_MAX - 1 - TEMP_MARKER.len() - SUFFIX_LEN;
        let bytes = name.as_bytes();
        let stem = bytes.get(..keep).unwrap_or(bytes);
        let flags = libc::O_CREAT
            | libc::O_EXCL
            | libc::O_WRONLY
            | libc::O_CLOEXEC
            | libc::O_NOCTTY
            | libc::O_LARGEFILE;
        for _ in 0..16 {
            let mut temp = Vec::with_capacity(NAME_MAX);
            temp.push(b'.');
            temp.extend_from_slice(stem);
            temp.extend_from_slice(TEMP_MARKER);
            temp.extend_from_slice(format!("{:016x}", random_u64()).as_bytes());
            let ctemp = component(OsStr::from_bytes(&temp))?;
            match openat(self.fd.as_fd(), &ctemp, flags, mode & 0o777) {
                Ok(fd) => return Ok((File::from(fd), OsString::from_vec(temp))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not find a free temporary file name",
        ))
    }

    /// Atomically renames temporary file `temp` (a name returned by
    /// [`create_temp`](Self::create_temp)) to `name` in this directory with
    /// `renameat(2)`: readers see either the old file or the complete new
    /// one. An existing entry `name` is replaced, a symlink included (the
    /// link is replaced, its target untouched); a directory is not (`EISDIR`).
    pub fn rename_into_place(&self, temp: &OsStr, name: &OsStr) -> io::Result<()> {
        let ctemp = self.temp_component(temp)?;
        let cname = component(name)?;
        renameat(self.fd.as_fd(), &ctemp, &cname)
    }

    /// Removes temporary file `temp` (a name returned by
    /// [`create_temp`](Self::create_temp)), e.g. after a failed upload. Names
    /// that do not look like temporary names are refused (`InvalidInput`), so
    /// this cannot delete served files.
    pub fn remove_temp(&self, temp: &OsStr) -> io::Result<()> {
        let ctemp = self.temp_component(temp)?;
        unlinkat(self.fd.as_fd(), &ctemp)
    }

    fn temp_component(&self, temp: &OsStr) -> io::Result<CString> {
        let ctemp = component(temp)?;
        if !is_temp_name(temp.as_bytes()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a temporary upload name: {temp:?}"),
            ));
        }
        Ok(ctemp)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::{Read, Write};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;
    use tempfile::TempDir;

    // ----- helpers ---------------------------------------------------------

    thread_local! {
        /// Run by `open_read` between the type probe and the real open, so a
        /// test can swap the entry at exactly that point of a race.
        pub(super) static RACE_HOOK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            const { std::cell::RefCell::new(None) };
    }

    fn rel(s: &str) -> RelativeName {
        RelativeName::new(s.as_bytes()).unwrap()
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Runs `f` on another thread and fails the test if it has not finished
    /// within `secs` seconds (instead of hanging the whole test run).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("operation blocked or hung")
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        let ret = unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
        assert_eq!(ret, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    /// A served directory `root` and, beside it, `outside/secret`: a file that
    /// really exists outside the root.
    struct Fixture {
        _tmp: TempDir,
        base: PathBuf,
        root: PathBuf,
    }

    const SECRET: &str = "TOP SECRET outside the served root\n";

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), SECRET).unwrap();

        let w = |p: &str, s: &str| {
            let path = root.join(p);
            fs::write(&path, s).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        };
        let l = |target: &str, link: &str| symlink(target, root.join(link)).unwrap();

        w("hello.txt", "hello\n");
        fs::create_dir_all(root.join("sub")).unwrap();
        w("sub/file", "sub file\n");
        fs::create_dir_all(root.join("EWC/17_9_4a")).unwrap();
        w("EWC/17_9_4a/boot.img", "boot image\n");
        fs::create_dir_all(root.join("a/b")).unwrap();
        w("a/b/c", "abc\n");

        l("EWC/17_9_4a", "current"); // directory symlink inside
        l("chain2", "chain1"); // relative chain that stays inside
        l("sub/file", "chain2");
        l("../hello.txt", "sub/up"); // `..` that stays inside
        l("../sub/../hello.txt", "sub/deep");
        l("..", "sub/parent_link");
        l(".", "sub/dotlink");
        l("/etc/passwd", "link_passwd"); // absolute
        l(root.join("hello.txt").to_str().unwrap(), "abs_inside"); // absolute, even if inside
        l("../outside/secret", "link_outside"); // relative escape
        l("sub/esc2", "esc1"); // escapes on the second hop
        l("../../outside/secret", "sub/esc2");
        l("loop2", "loop1"); // loop
        l("loop1", "loop2");
        l("selfloop", "selfloop");
        l("../outside", "dirlink_out"); // directory symlink to outside
        l("/etc", "dirlink_abs");
        l("..", "dotdot_link");
        l("does-not-exist", "dangling");
        l("hello.txt/", "slash_file"); // a file named as a directory
        l("/proc/self/root", "magic");
        mkfifo(&root.join("fifo"));

        Fixture {
            _tmp: tmp,
            base,
            root,
        }
    }

    fn serve(fx: &Fixture, r: Resolver) -> ServeRoot {
        ServeRoot::open_with(&fx.root, r)
            .unwrap_or_else(|e| panic!("opening the root with {r:?} failed: {e}"))
    }

    fn read(sr: &ServeRoot, name: &str) -> Result<String, ConfineError> {
        let (mut f, meta) = sr.open_read(&rel(name))?;
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(meta.len(), s.len() as u64, "metadata of {name}");
        Ok(s)
    }

    #[track_caller]
    fn assert_escape(sr: &ServeRoot, name: &str) {
        match sr.open_read(&rel(name)) {
            Err(e @ ConfineError::Escape { .. }) => assert_eq!(e.tftp_error_code(), 2),
            Err(e) => panic!("{name}: expected Escape, got {e:?}"),
            Ok(_) => panic!("{name}: opened, expected Escape"),
        }
    }

    #[track_caller]
    fn assert_not_found(sr: &ServeRoot, name: &str) {
        match sr.open_read(&rel(name)) {
            Err(e @ ConfineError::NotFound { .. }) => assert_eq!(e.tftp_error_code(), 1),
            Err(e) => panic!("{name}: expected NotFound, got {e:?}"),
            Ok(_) => panic!("{name}: opened, expected NotFound"),
        }
    }

    #[track_caller]
    fn assert_not_regular(sr: &ServeRoot, name: &str) {
        match sr.open_read(&rel(name)) {
            Err(e @ ConfineError::NotRegularFile { .. }) => assert_eq!(e.tftp_error_code(), 2),
            Err(e) => panic!("{name}: expected NotRegularFile, got {e:?}"),
            Ok(_) => panic!("{name}: opened, expected NotRegularFile"),
        }
    }

    // ----- normalisation (pure) ---------------------------------------------

    #[test]
    fn normalize_collapses_separators_and_dots() {
        for (input, want) in [
            ("a", "a"),
            ("/a", "a"),
            ("//a//b/./c", "a/b/c"),
            ("a/./b/", "a/b"),
            ("./a", "a"),
            ("/pxelinux.cfg/01-aa-bb", "pxelinux.cfg/01-aa-bb"),
            ("a..b", "a..b"),
            ("...", "..."),
            ("..a/b..", "..a/b.."),
            (".hidden", ".hidden"),
            ("back\\slash", "back\\slash"),
        ] {
            let n = normalize(input.as_bytes()).unwrap();
            assert_eq!(n.as_bytes(), want.as_bytes(), "input {input:?}");
        }
        assert_eq!(
            normalize(b"x/\xff\xfe").unwrap().as_bytes(),
            b"x/\xff\xfe",
            "non-UTF-8 bytes are kept"
        );
    }

    #[test]
    fn normalize_refuses_dotdot_anywhere() {
        for input in [
            "../x",
            "a/../../x",
            "/../../etc/passwd",
            "..",
            "a/..",
            "a/../b",
            "/..",
            "./..",
            "a//..//b",
        ] {
            match normalize(input.as_bytes()) {
                Err(e @ ConfineError::Escape { .. }) => {
                    assert_eq!(e.tftp_error_code(), 2);
                    assert_eq!(e.name(), input);
                }
                other => panic!("{input:?}: expected Escape, got {other:?}"),
            }
        }
    }

    #[test]
    fn normalize_refuses_empty_and_nul() {
        for input in [
            &b""[..],
            b"/",
            b".",
            b"//",
            b"./",
            b"/./.",
            b"a\0b",
            b"\0",
            b"../\0",
        ] {
            match normalize(input) {
                Err(e @ ConfineError::Invalid { .. }) => assert_eq!(e.tftp_error_code(), 2),
                other => panic!("{input:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn normalize_refuses_overlong() {
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(normalize(ok.as_bytes()).is_ok());
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            normalize(long.as_bytes()),
            Err(ConfineError::Invalid { .. })
        ));
    }

    #[test]
    fn relative_name_parts() {
        let n = rel("/a//b/c.txt");
        assert_eq!(n.file_name(), "c.txt");
        assert_eq!(n.parent().unwrap().as_bytes(), b"a/b");
        assert_eq!(n.components().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
        assert_eq!(n.as_path(), Path::new("a/b/c.txt"));
        let single = rel("x");
        assert!(single.parent().is_none());
        assert_eq!(single.file_name(), "x");
        assert_eq!(rel("a\nb").to_string(), "a\\nb", "Display escapes");
    }

    #[test]
    fn error_messages_escape_and_bound_the_name() {
        let e = normalize(b"../evil\nFAKE LOG LINE").unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("evil\\nFAKE"), "{shown}");
        let long = [b'.', b'.', b'/'].repeat(2000);
        let e = normalize(&long).unwrap_err();
        assert!(e.name().len() <= MAX_LOGGED_NAME + '…'.len_utf8());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Normalisation never panics and only returns clean relative names,
        /// and accepts exactly the inputs that should be accepted.
        #[test]
        fn normalize_is_total_and_clean(
            raw in proptest::prop_oneof![
                proptest::collection::vec(proptest::sample::select(
                    vec![b'/', b'.', b'a', b'b', 0u8, b'\\', 0xff]), 0..40),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            ]
        ) {
            let result = normalize(&raw);
            let comps: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
            let has_dotdot = comps.iter().any(|c| *c == b"..");
            let kept: Vec<&[u8]> = comps
                .iter()
                .copied()
                .filter(|c| !c.is_empty() && *c != b".")
                .collect();
            match result {
                Ok(name) => {
                    let b = name.as_bytes();
                    proptest::prop_assert!(!b.starts_with(b"/"));
                    proptest::prop_assert!(!b.ends_with(b"/"));
                    proptest::prop_assert!(!b.contains(&0));
                    for c in b.split(|&x| x == b'/') {
                        proptest::prop_assert!(c != b".." && c != b"." && !c.is_empty());
                    }
                    proptest::prop_assert!(!raw.contains(&0) && !has_dotdot);
                    let expected = kept.join(&b'/');
                    proptest::prop_assert_eq!(b, expected.as_slice());
                    // Idempotent.
                    let again = normalize(b).unwrap();
                    proptest::prop_assert_eq!(again.as_bytes(), b);
                }
                Err(ConfineError::Escape { .. }) => proptest::prop_assert!(has_dotdot),
                Err(ConfineError::Invalid { .. }) => {
                    proptest::prop_assert!(raw.contains(&0) || kept.is_empty());
                }
                Err(other) => proptest::prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    // ----- error mapping ------------------------------------------------------

    #[test]
    fn tftp_error_codes() {
        let n = || "x".to_string();
        let io_err = |code| ConfineError::Io {
            name: n(),
            source: errno(code),
        };
        assert_eq!(ConfineError::NotFound { name: n() }.tftp_error_code(), 1);
        assert_eq!(ConfineError::Escape { name: n() }.tftp_error_code(), 2);
        assert_eq!(
            ConfineError::NotRegularFile { name: n() }.tftp_error_code(),
            2
        );
        assert_eq!(
            ConfineError::PermissionDenied { name: n() }.tftp_error_code(),
            2
        );
        assert_eq!(
            ConfineError::TooManySymlinks { name: n() }.tftp_error_code(),
            2
        );
        let invalid = ConfineError::Invalid {
            name: n(),
            reason: "empty",
        };
        assert_eq!(invalid.tftp_error_code(), 2);
        assert_eq!(io_err(libc::ENOSPC).tftp_error_code(), 3);
        assert_eq!(io_err(libc::EDQUOT).tftp_error_code(), 3);
        assert_eq!(io_err(libc::EEXIST).tftp_error_code(), 6);
        assert_eq!(io_err(libc::EIO).tftp_error_code(), 0);
    }

    #[test]
    fn from_io_classifies_errno() {
        let c = |code| ConfineError::from_io(b"n", errno(code));
        assert!(matches!(c(libc::ENOENT), ConfineError::NotFound { .. }));
        assert!(matches!(c(libc::ENOTDIR), ConfineError::NotFound { .. }));
        assert!(matches!(c(libc::EXDEV), ConfineError::Escape { .. }));
        assert!(matches!(
            c(libc::EACCES),
            ConfineError::PermissionDenied { .. }
        ));
        assert!(matches!(
            c(libc::EPERM),
            ConfineError::PermissionDenied { .. }
        ));
        assert!(matches!(
            c(libc::ELOOP),
            ConfineError::TooManySymlinks { .. }
        ));
        assert!(matches!(c(libc::EIO), ConfineError::Io { .. }));
        assert_eq!(c(libc::ENOENT).name(), "n");
        // A wrapped ConfineError comes back as itself, with its own name.
        let wrapped = ConfineError::Escape {
            name: "inner".into(),
        }
        .into_io();
        assert_eq!(wrapped.kind(), io::ErrorKind::PermissionDenied);
        match ConfineError::from_io(b"outer", wrapped) {
            ConfineError::Escape { name } => assert_eq!(name, "inner"),
            other => panic!("{other:?}"),
        }
    }

    // ----- the adversarial suite, run through both resolvers ------------------

    fn reads_plain_files(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_eq!(read(&sr, "hello.txt").unwrap(), "hello\n");
        assert_eq!(read(&sr, "/hello.txt").unwrap(), "hello\n");
        assert_eq!(read(&sr, "sub/file").unwrap(), "sub file\n");
        assert_eq!(read(&sr, "//a//b/./c").unwrap(), "abc\n");
    }

    fn reads_through_inner_directory_symlink(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_eq!(read(&sr, "current/boot.img").unwrap(), "boot image\n");
        assert_eq!(read(&sr, "sub/dotlink/file").unwrap(), "sub file\n");
        assert_eq!(read(&sr, "sub/parent_link/hello.txt").unwrap(), "hello\n");
    }

    fn reads_relative_chain_inside(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_eq!(read(&sr, "chain1").unwrap(), "sub file\n");
        assert_eq!(read(&sr, "sub/up").unwrap(), "hello\n");
        assert_eq!(read(&sr, "sub/deep").unwrap(), "hello\n");
    }

    fn refuses_absolute_symlinks(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_escape(&sr, "link_passwd");
        assert_escape(&sr, "abs_inside");
        assert_escape(&sr, "magic");
        assert_escape(&sr, "magic/etc/passwd");
    }

    fn refuses_relative_escape(r: Resolver) {
        let fx = fixture();
        assert!(fx.base.join("outside/secret").is_file());
        let sr = serve(&fx, r);
        assert_escape(&sr, "link_outside");
        assert_escape(&sr, "dotdot_link");
        assert_escape(&sr, "dotdot_link/outside/secret");
    }

    fn refuses_escape_on_second_hop(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_escape(&sr, "esc1");
        assert_escape(&sr, "sub/esc2");
    }

    fn refuses_directory_symlink_to_outside(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_escape(&sr, "dirlink_out/secret");
        assert_escape(&sr, "dirlink_out");
        assert_escape(&sr, "dirlink_abs/passwd");
    }

    fn symlink_loops_fail_fast(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        within(10, move || {
            for name in ["loop1", "selfloop", "loop2/x"] {
                match sr.open_read(&rel(name)) {
                    Err(e @ ConfineError::TooManySymlinks { .. }) => {
                        assert_eq!(e.tftp_error_code(), 2);
                    }
                    other => panic!("{name}: expected TooManySymlinks, got {other:?}"),
                }
            }
        });
    }

    fn symlink_limit_is_forty(r: Resolver) {
        let fx = fixture();
        // hop0 -> hop1 -> ... -> hopN -> hello.txt: following hop0 takes N+1 links.
        for n in 0..=40 {
            let target = if n == 40 {
                "hello.txt".to_string()
            } else {
                format!("hop{}", n + 1)
            };
            symlink(target, fx.root.join(format!("hop{n}"))).unwrap();
        }
        let sr = serve(&fx, r);
        assert_eq!(read(&sr, "hop1").unwrap(), "hello\n", "40 links resolve");
        assert!(
            matches!(
                sr.open_read(&rel("hop0")),
                Err(ConfineError::TooManySymlinks { .. })
            ),
            "41 links do not"
        );
    }

    fn refuses_directories(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_not_regular(&sr, "sub");
        assert_not_regular(&sr, "current");
        assert_not_regular(&sr, "sub/dotlink");
        assert_not_regular(&sr, "sub/parent_link");
    }

    fn refuses_fifo_without_blocking(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        within(10, move || assert_not_regular(&sr, "fifo"));
    }

    fn refuses_device_nodes(r: Resolver) {
        let fx = fixture();
        let path = CString::new(fx.root.join("null").as_os_str().as_bytes()).unwrap();
        // SAFETY: `path` is a valid NUL-terminated path.
        let ret = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        if ret != 0 {
            let err = io::Error::last_os_error();
            assert!(
                !is_root() || err.raw_os_error() == Some(libc::EPERM),
                "{err}"
            );
            eprintln!("skipped: cannot create a device node here (needs CAP_MKNOD)");
            return;
        }
        let sr = serve(&fx, r);
        assert_not_regular(&sr, "null");
    }

    /// The file passes the type probe and is then replaced before the real
    /// open (a simulated race): the open must not block, must not serve the
    /// replacement, and must not follow a symlink swapped in.
    fn race_after_probe_is_caught(r: Resolver) {
        let fx = fixture();
        let root = fx.root.clone();
        fs::write(root.join("swap_fifo"), "regular at probe time").unwrap();
        fs::write(root.join("swap_link"), "regular at probe time").unwrap();
        mkfifo(&root.join("new_fifo"));
        symlink("../outside/secret", root.join("new_link")).unwrap();
        let sr = serve(&fx, r);
        within(10, move || {
            let swap = |from: &'static str, to: &'static str| {
                let root = root.clone();
                RACE_HOOK.with_borrow_mut(|hook| {
                    *hook = Some(Box::new(move || {
                        fs::rename(root.join(from), root.join(to)).unwrap()
                    }));
                });
            };
            swap("new_fifo", "swap_fifo");
            let got = sr.open_read(&rel("swap_fifo"));
            assert!(
                matches!(got, Err(ConfineError::NotRegularFile { .. })),
                "{got:?}"
            );

            swap("new_link", "swap_link");
            match sr.open_read(&rel("swap_link")) {
                // openat2 re-resolves the name (EXDEV); the walk opens the
                // entry with O_NOFOLLOW (ELOOP).
                Err(ConfineError::Escape { .. } | ConfineError::TooManySymlinks { .. }) => {}
                other => panic!("swapped-in symlink: {other:?}"),
            }
            RACE_HOOK.with_borrow_mut(|hook| *hook = None);
        });
    }

    fn not_found(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        assert_not_found(&sr, "nope");
        assert_not_found(&sr, "sub/nope");
        assert_not_found(&sr, "nope/x");
        assert_not_found(&sr, "hello.txt/x");
        assert_not_found(&sr, "dangling");
        assert_not_found(&sr, "slash_file");
    }

    fn world_readable_policy(r: Resolver) {
        let fx = fixture();
        let secret = fx.root.join("mode000");
        fs::write(&secret, "x").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
        let owner_only = fx.root.join("mode600");
        fs::write(&owner_only, "y").unwrap();
        fs::set_permissions(&owner_only, fs::Permissions::from_mode(0o600)).unwrap();

        // Meaningful as root too: the mode bits are checked, not only the
        // kernel's access decision.
        let sr = serve(&fx, r);
        for name in ["mode000", "mode600"] {
            match sr.open_read(&rel(name)) {
                Err(e @ ConfineError::PermissionDenied { .. }) => {
                    assert_eq!(e.tftp_error_code(), 2);
                }
                other => panic!("{name}: expected PermissionDenied, got {other:?}"),
            }
        }
        assert_eq!(read(&sr, "hello.txt").unwrap(), "hello\n");

        // Permissive (`in.tftpd -p`): only the kernel decides.
        let permissive = serve(&fx, r).require_world_readable(false);
        if is_root() {
            assert!(permissive.open_read(&rel("mode000")).is_ok());
        } else {
            assert!(matches!(
                permissive.open_read(&rel("mode000")),
                Err(ConfineError::PermissionDenied { .. })
            ));
        }
        assert_eq!(read(&permissive, "mode600").unwrap(), "y");
    }

    /// EACCES from the kernel must become PermissionDenied. As root the
    /// kernel never says EACCES, so the check runs in a child process of this
    /// test binary with the uid and gid of `nobody`.
    fn kernel_eacces_is_permission_denied(r: Resolver) {
        let fx = fixture();
        let secret = fx.root.join("mode000");
        fs::write(&secret, "x").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
        if !is_root() {
            eacces_check(&fx.root, r);
            return;
        }
        for dir in [&fx.base, &fx.root] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let resolver = match r {
            Resolver::Walk => "walk",
            _ => "openat2",
        };
        let test_path = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let exe = std::env::current_exe().unwrap();
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            &format!("{test_path}::eacces_child"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CONFINE_EACCES_ROOT", &fx.root)
        .env("CONFINE_EACCES_RESOLVER", resolver);
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("skipped: the test binary is not executable by nobody: {e}");
                return;
            }
            Err(e) => panic!("spawning the unprivileged child: {e}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed: {}\n{stdout}\n{stderr}",
            out.status
        );
    }

    fn eacces_check(root: &Path, r: Resolver) {
        let sr = ServeRoot::open_with(root, r)
            .unwrap()
            .require_world_readable(false);
        assert_eq!(
            read(&sr, "hello.txt").unwrap(),
            "hello\n",
            "root is reachable"
        );
        match sr.open_read(&rel("mode000")) {
            Err(e @ ConfineError::PermissionDenied { .. }) => assert_eq!(e.tftp_error_code(), 2),
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    /// Run only by `kernel_eacces_is_permission_denied`, as an unprivileged
    /// child process.
    #[test]
    #[ignore = "helper run by kernel_eacces_is_permission_denied in a child process"]
    fn eacces_child() {
        let root = std::env::var_os("CONFINE_EACCES_ROOT").expect("run by the parent test");
        let r = match std::env::var("CONFINE_EACCES_RESOLVER").as_deref() {
            Ok("walk") => Resolver::Walk,
            _ => Resolver::Openat2,
        };
        assert!(!is_root(), "must run unprivileged");
        eacces_check(Path::new(&root), r);
    }

    /// procfs "magic links" (`/proc/self/root`, `cwd`, `exe`, `fd/N`) jump
    /// anywhere; serving `/proc/self` itself puts real ones inside the root.
    fn refuses_procfs_magic_links(r: Resolver) {
        let Ok(sr) = ServeRoot::open_with(Path::new("/proc/self"), r) else {
            eprintln!("skipped: /proc/self is not available");
            return;
        };
        let sr = sr.require_world_readable(false);
        // Their text is an absolute path: refused by both resolvers.
        for name in ["root/etc/passwd", "root", "cwd", "exe", "cwd/x"] {
            match sr.open_read(&rel(name)) {
                Err(ConfineError::Escape { .. } | ConfineError::TooManySymlinks { .. }) => {}
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
        // A pipe's or socket's link text is a pseudo-name like `pipe:[123]`:
        // openat2 refuses the magic link, the walk looks the text up as a
        // sibling entry and finds nothing. Either way nothing is opened.
        for fd in 0..3 {
            let name = format!("fd/{fd}");
            match sr.open_read(&rel(&name)) {
                Err(ConfineError::Escape { .. } | ConfineError::TooManySymlinks { .. }) => {}
                Err(ConfineError::NotFound { .. }) if r == Resolver::Walk => {}
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
        // An ordinary file in the same tree is served, so the refusals above
        // are about the links, not about procfs.
        let (_, meta) = sr.open_read(&rel("status")).unwrap();
        assert!(meta.is_file());
    }

    fn keeps_working_when_the_root_path_moves(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        let moved = fx.base.join("moved");
        fs::rename(&fx.root, &moved).unwrap();
        assert_eq!(sr.path(), fx.root.as_path(), "display path unchanged");
        assert_eq!(read(&sr, "current/boot.img").unwrap(), "boot image\n");
        assert_escape(&sr, "link_outside");
    }

    fn wrq_temp_is_hidden_in_the_right_directory(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        let (dir, file_name) = sr.open_parent(&rel("/sub//new.bin")).unwrap();
        assert_eq!(file_name, "new.bin");
        assert_eq!(dir.path().unwrap().as_bytes(), b"sub");
        let (mut f, temp) = dir.create_temp(&file_name, 0o644).unwrap();
        let t = temp.as_bytes();
        assert!(t.starts_with(b".new.bin.tftpd-"), "{temp:?}");
        assert_eq!(t.len(), ".new.bin.tftpd-".len() + 16);
        assert!(fx.root.join("sub").join(&temp).is_file(), "temp is in sub/");
        assert!(!fx.root.join(&temp).exists(), "temp is not in the root");
        assert!(!fx.root.join("sub/new.bin").exists());
        f.write_all(b"uploaded").unwrap();
        drop(f);
        dir.rename_into_place(&temp, &file_name).unwrap();
        assert_eq!(fs::read(fx.root.join("sub/new.bin")).unwrap(), b"uploaded");
        assert!(!fx.root.join("sub").join(&temp).exists(), "temp is gone");
        assert_eq!(read(&sr, "sub/new.bin").unwrap(), "uploaded");

        // A second temp for the same name gets a different name.
        let (_, t1) = dir.create_temp(&file_name, 0o600).unwrap();
        let (_, t2) = dir.create_temp(&file_name, 0o600).unwrap();
        assert_ne!(t1, t2);
        let mode = fs::metadata(fx.root.join("sub").join(&t1))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode is honoured: {mode:o}");
    }

    fn wrq_rename_is_atomic_replacement(r: Resolver) {
        let fx = fixture();
        let target = fx.root.join("sub/target");
        fs::write(&target, "old").unwrap();
        let old_ino = fs::metadata(&target).unwrap().ino();
        let mut old_reader = File::open(&target).unwrap();

        let sr = serve(&fx, r);
        let (dir, file_name) = sr.open_parent(&rel("sub/target")).unwrap();
        let before = dir.stat_entry(&file_name).unwrap().unwrap();
        assert_eq!(before.ino(), old_ino);
        let (mut f, temp) = dir.create_temp(&file_name, 0o644).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(
            fs::read(&target).unwrap(),
            b"old",
            "untouched until the rename"
        );
        dir.rename_into_place(&temp, &file_name).unwrap();

        let after = fs::metadata(&target).unwrap();
        assert_ne!(after.ino(), old_ino, "a new inode replaced the old one");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let mut s = String::new();
        old_reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "old", "an open reader keeps the complete old file");
        assert!(!fx.root.join("sub").join(&temp).exists());
    }

    fn wrq_rename_replaces_a_symlink_instead_of_writing_through_it(r: Resolver) {
        let fx = fixture();
        symlink("../../outside/secret", fx.root.join("sub/victim")).unwrap();
        let sr = serve(&fx, r);
        let (dir, file_name) = sr.open_parent(&rel("sub/victim")).unwrap();
        let (mut f, temp) = dir.create_temp(&file_name, 0o644).unwrap();
        f.write_all(b"payload").unwrap();
        drop(f);
        dir.rename_into_place(&temp, &file_name).unwrap();
        assert_eq!(
            fs::read_to_string(fx.base.join("outside/secret")).unwrap(),
            SECRET
        );
        let victim = fs::symlink_metadata(fx.root.join("sub/victim")).unwrap();
        assert!(victim.is_file());
        assert_eq!(fs::read(fx.root.join("sub/victim")).unwrap(), b"payload");
    }

    fn wrq_parent_through_escaping_symlink_is_refused(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        for name in [
            "dirlink_out/x",
            "dirlink_abs/x",
            "dotdot_link/x",
            "link_passwd/x",
            "esc1/x",
            "sub/parent_link/dotdot_link/x",
        ] {
            match sr.open_parent(&rel(name)) {
                Err(e @ ConfineError::Escape { .. }) => assert_eq!(e.tftp_error_code(), 2),
                Err(e) => panic!("{name}: expected Escape, got {e:?}"),
                Ok(_) => panic!("{name}: expected Escape, got a directory"),
            }
        }
        for name in ["nope/x", "hello.txt/x", "dangling/x"] {
            assert!(
                matches!(
                    sr.open_parent(&rel(name)),
                    Err(ConfineError::NotFound { .. })
                ),
                "{name}"
            );
        }
        assert!(matches!(
            sr.open_parent(&rel("loop1/x")),
            Err(ConfineError::TooManySymlinks { .. })
        ));
    }

    fn wrq_parent_through_inner_symlink(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        let (dir, file_name) = sr.open_parent(&rel("current/new.img")).unwrap();
        let (_, temp) = dir.create_temp(&file_name, 0o644).unwrap();
        dir.rename_into_place(&temp, &file_name).unwrap();
        assert!(fx.root.join("EWC/17_9_4a/new.img").is_file());

        let (top, top_name) = sr.open_parent(&rel("/top.bin")).unwrap();
        assert!(top.path().is_none());
        let (_, temp) = top.create_temp(&top_name, 0o644).unwrap();
        assert!(
            fx.root.join(&temp).is_file(),
            "temp of a top-level name is in the root"
        );
        top.remove_temp(&temp).unwrap();
        assert!(!fx.root.join(&temp).exists());
    }

    fn wrq_stat_entry(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        let (root_dir, _) = sr.open_parent(&rel("x")).unwrap();
        let (sub_dir, _) = sr.open_parent(&rel("sub/x")).unwrap();
        let st = |d: &Dir, n: &str| d.stat_entry(OsStr::new(n));

        let hello = st(&root_dir, "hello.txt").unwrap().unwrap();
        assert!(hello.is_file());
        assert_eq!(hello.len(), 6);
        assert!(st(&root_dir, "nope").unwrap().is_none());
        assert!(st(&root_dir, "sub").unwrap().unwrap().is_dir());
        // A symlink that stays inside is resolved to its target.
        let chained = st(&root_dir, "chain1").unwrap().unwrap();
        assert!(chained.is_file());
        assert_eq!(chained.len(), "sub file\n".len() as u64);
        let up = st(&sub_dir, "up").unwrap().unwrap();
        assert_eq!(
            up.ino(),
            hello.ino(),
            "`..` inside a link, relative to the served root"
        );
        // A dangling symlink inside: nothing there.
        assert!(st(&root_dir, "dangling").unwrap().is_none());
        // Symlinks leading outside are refused, never stat'ed.
        for (d, n) in [
            (&root_dir, "link_outside"),
            (&root_dir, "link_passwd"),
            (&root_dir, "dirlink_out"),
            (&sub_dir, "esc2"),
        ] {
            let err = st(d, n).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{n}");
            let ce = ConfineError::from_io(n.as_bytes(), err);
            assert!(matches!(ce, ConfineError::Escape { .. }), "{n}: {ce:?}");
        }
        let err = within(10, move || st(&root_dir, "loop1").unwrap_err());
        assert!(matches!(
            ConfineError::from_io(b"loop1", err),
            ConfineError::TooManySymlinks { .. }
        ));
    }

    fn wrq_dir_rejects_bad_components(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        let (dir, _) = sr.open_parent(&rel("sub/x")).unwrap();
        let long = "n".repeat(256);
        for bad in ["", ".", "..", "a/b", "../hello.txt", "x\0y", long.as_str()] {
            let b = OsStr::new(bad);
            let kind = |res: io::Result<()>| res.unwrap_err().kind();
            assert_eq!(
                kind(dir.stat_entry(b).map(drop)),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
            assert_eq!(
                kind(dir.create_temp(b, 0o644).map(drop)),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(kind(dir.remove_temp(b)), io::ErrorKind::InvalidInput);
            assert_eq!(
                kind(dir.rename_into_place(OsStr::new(".f.tftpd-0"), b)),
                io::ErrorKind::InvalidInput
            );
        }
        // The temp helpers only touch temp-looking names.
        let err = dir.remove_temp(OsStr::new("file")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(fx.root.join("sub/file").is_file());
        let err = dir
            .rename_into_place(OsStr::new("file"), OsStr::new("other"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(fx.root.join("sub/file").is_file());
    }

    fn wrq_long_names(r: Resolver) {
        let fx = fixture();
        let sr = serve(&fx, r);
        let name = "L".repeat(NAME_MAX);
        let (dir, file_name) = sr.open_parent(&rel(&format!("sub/{name}"))).unwrap();
        let (_, temp) = dir.create_temp(&file_name, 0o644).unwrap();
        assert!(temp.len() <= NAME_MAX);
        assert!(is_temp_name(temp.as_bytes()));
        dir.rename_into_place(&temp, &file_name).unwrap();
        assert!(fx.root.join("sub").join(&name).is_file());
    }

    macro_rules! suite {
        ($($case:ident),* $(,)?) => {
            mod via_openat2 {
                $(#[test] fn $case() { super::$case(super::Resolver::Openat2) })*
            }
            mod via_walk {
                $(#[test] fn $case() { super::$case(super::Resolver::Walk) })*
            }
        };
    }

    suite!(
        reads_plain_files,
        reads_through_inner_directory_symlink,
        reads_relative_chain_inside,
        refuses_absolute_symlinks,
        refuses_relative_escape,
        refuses_escape_on_second_hop,
        refuses_directory_symlink_to_outside,
        symlink_loops_fail_fast,
        symlink_limit_is_forty,
        refuses_directories,
        refuses_fifo_without_blocking,
        refuses_device_nodes,
        refuses_procfs_magic_links,
        race_after_probe_is_caught,
        not_found,
        world_readable_policy,
        kernel_eacces_is_permission_denied,
        keeps_working_when_the_root_path_moves,
        wrq_temp_is_hidden_in_the_right_directory,
        wrq_rename_is_atomic_replacement,
        wrq_rename_replaces_a_symlink_instead_of_writing_through_it,
        wrq_parent_through_escaping_symlink_is_refused,
        wrq_parent_through_inner_symlink,
        wrq_stat_entry,
        wrq_dir_rejects_bad_components,
        wrq_long_names,
    );

    #[test]
    fn auto_prefers_openat2_and_walk_can_be_forced() {
        let fx = fixture();
        let auto = ServeRoot::open(&fx.root).unwrap();
        let probe = ServeRoot::open_with(&fx.root, Resolver::Openat2);
        match probe {
            Ok(_) => assert_eq!(auto.resolver(), Resolver::Openat2),
            Err(e) => {
                assert!(is_openat2_unsupported(&e), "{e}");
                assert_eq!(auto.resolver(), Resolver::Walk);
            }
        }
        assert_eq!(
            ServeRoot::open_with(&fx.root, Resolver::Walk)
                .unwrap()
                .resolver(),
            Resolver::Walk
        );
        assert_eq!(read(&auto, "current/boot.img").unwrap(), "boot image\n");
        assert_escape(&auto, "link_outside");
    }

    #[test]
    fn open_root_that_is_not_a_directory_fails() {
        let fx = fixture();
        let err = ServeRoot::open(&fx.root.join("hello.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        assert!(ServeRoot::open(&fx.base.join("missing")).is_err());
    }

    /// Differential test: for random names built from the fixture's entries,
    /// `..` and `.`, both resolvers agree, and neither ever opens a file
    /// outside the root.
    #[test]
    fn resolvers_agree_and_never_escape() {
        // On a thread with a time limit: a regression that blocks on the
        // fifo must fail the test, not hang the run.
        within(300, differential);
    }

    fn differential() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let fx = fixture();
        let kernel = serve(&fx, Resolver::Openat2);
        let walker = serve(&fx, Resolver::Walk);
        let outside_ino = fs::metadata(fx.base.join("outside/secret")).unwrap().ino();

        let parts = vec![
            "hello.txt",
            "sub",
            "file",
            "up",
            "deep",
            "current",
            "EWC",
            "17_9_4a",
            "boot.img",
            "chain1",
            "chain2",
            "link_passwd",
            "abs_inside",
            "link_outside",
            "esc1",
            "esc2",
            "dirlink_out",
            "dirlink_abs",
            "dotdot_link",
            "parent_link",
            "dotlink",
            "secret",
            "outside",
            "loop1",
            "selfloop",
            "dangling",
            "slash_file",
            "magic",
            "fifo",
            "a",
            "b",
            "c",
            "nope",
            ".",
            "..",
            "",
        ];
        let strategy = (
            any::<bool>(),
            proptest::collection::vec(proptest::sample::select(parts), 1..6),
        );
        let mut runner = TestRunner::new(Config::with_cases(1500));
        runner
            .run(&strategy, |(lead, comps)| {
                let raw = format!("{}{}", if lead { "/" } else { "" }, comps.join("/"));
                let Ok(name) = normalize(raw.as_bytes()) else {
                    return Ok(());
                };
                let a = kernel.open_read(&name);
                let b = walker.open_read(&name);
                match (&a, &b) {
                    (Ok((_, ma)), Ok((_, mb))) => {
                        prop_assert_eq!(ma.ino(), mb.ino(), "{}", raw);
                        prop_assert_ne!(ma.ino(), outside_ino, "{}", raw);
                    }
                    (Err(ea), Err(eb)) => prop_assert_eq!(
                        std::mem::discriminant(ea),
                        std::mem::discriminant(eb),
                        "{}: openat2 {:?} vs walk {:?}",
                        raw,
                        ea,
                        eb
                    ),
                    _ => prop_assert!(false, "{}: openat2 {:?} vs walk {:?}", raw, a, b),
                }
                let pa = kernel.open_parent(&name).map(|(d, _)| fs_ino(&d));
                let pb = walker.open_parent(&name).map(|(d, _)| fs_ino(&d));
                match (&pa, &pb) {
                    (Ok(x), Ok(y)) => prop_assert_eq!(x, y, "{}", raw),
                    (Err(ea), Err(eb)) => prop_assert_eq!(
                        std::mem::discriminant(ea),
                        std::mem::discriminant(eb),
                        "{}: parent openat2 {:?} vs walk {:?}",
                        raw,
                        ea,
                        eb
                    ),
                    _ => prop_assert!(false, "{}: parent openat2 {:?} vs walk {:?}", raw, pa, pb),
                }
                Ok(())
            })
            .unwrap();
    }

    fn fs_ino(dir: &Dir) -> u64 {
        let fd = dir.as_fd().try_clone_to_owned().unwrap();
        metadata_of(fd).unwrap().1.ino()
    }
}
