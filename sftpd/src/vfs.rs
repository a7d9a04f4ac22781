//! The confined file system an SFTP session works in.
//!
//! A [`Root`] holds an `O_PATH` descriptor of the session's root directory. Every client path
//! is resolved by the kernel with `openat2(2)` and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`
//! relative to that descriptor, so `..` chains, absolute paths and symlinks (even absolute
//! ones planted inside the jail, e.g. `link -> /etc`) are all resolved *inside* the root —
//! atomically, so renames racing with the lookup cannot escape either. When the process has
//! really `chroot(2)`ed the root is simply `/` and everything still works.
//!
//! Operations that act on a final name (mkdir, rmdir, remove, rename, link, symlink) open the
//! *parent* with `openat2(O_PATH | O_DIRECTORY)` and call the `*at()` system call on the last
//! component, which is then a single name (never containing `/`). A last component of `.` or
//! `..` is passed through, so the kernel returns the error it would return to OpenSSH
//! (`EEXIST`, `EINVAL`, `ENOTEMPTY`, `EBUSY`, ...); none of those calls ever acts on the
//! directory named by `..`. A path naming the root itself (`/`) gets the error the kernel
//! gives for `/`.
//!
//! Paths: an absolute client path is relative to the root; a relative one is relative to the
//! session's current directory (an in-root absolute path such as `/` or `/upload`); an empty
//! path means `.`. [`Root::realpath`] has OpenSSH's (OpenBSD `realpath(3)`) semantics: symlinks
//! are resolved, `..` collapsed, and a missing *last* component is allowed and appended.
//! It is computed in user space component by component (no `/proc` needed).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;
/// `fchmodat2(2)` (Linux 6.6); the same number on every architecture using the generic table.
const SYS_FCHMODAT2: libc::c_long = 452;

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn errno_err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| errno_err(libc::EINVAL))
}

/// Retries a system call returning -1/errno on `EINTR`.
fn cvt<T: PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let r = f();
        if r != T::from(-1) {
            return Ok(r);
        }
        let e = last_errno();
        if e != libc::EINTR {
            return Err(errno_err(e));
        }
    }
}

/// `openat2(dirfd, path, how)` confined to `dirfd` (`RESOLVE_IN_ROOT`).
fn openat2_in(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // openat2 rejects flags that O_PATH ignores, so add O_NOCTTY only to real opens.
    let extra = if flags & libc::O_PATH != 0 {
        0
    } else {
        libc::O_NOCTTY
    };
    let how = OpenHow {
        flags: (flags | extra | libc::O_CLOEXEC) as u32 as u64,
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode & 0o7777)
        } else {
            0
        },
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    let mut tries = 0;
    loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how of the
        // size passed; the kernel only reads them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = last_errno();
        // EAGAIN: a concurrent rename raced with a `..` lookup; the kernel asks to retry.
        if e == libc::EINTR || (e == libc::EAGAIN && tries < 64) {
            tries += 1;
            continue;
        }
        return Err(errno_err(e));
    }
}

/// `fstatat(fd, name, flags)`.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid fd/name, `st` is writable storage for a `struct stat`.
    cvt(|| unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded and filled the struct (it was zeroed anyway).
    Ok(unsafe { st.assume_init() })
}

/// `fstat` of any descriptor, including `O_PATH` ones.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    fstatat(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// `fstatvfs` of any descriptor, including `O_PATH` ones.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: valid fd, writable storage.
    cvt(|| unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: filled by the kernel (and zeroed before).
    Ok(unsafe { st.assume_init() })
}

/// `/proc/self/fd` opened before a chroot (see [`keep_proc_fd`]); used only by the chmod
/// fallback for kernels without `fchmodat2(2)` (before 6.6).
static PROC_FD: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// Opens `/proc/self/fd` and keeps it for the rest of the process, so that the chmod fallback
/// for kernels older than 6.6 still works after `chroot(2)` into a tree without `/proc`.
/// Call it in the process that will serve the session, right before chrooting. Idempotent.
pub fn keep_proc_fd() -> io::Result<()> {
    if PROC_FD.get().is_some() {
        return Ok(());
    }
    // SAFETY: valid C string.
    let fd = cvt(|| unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A concurrent caller may have won; its descriptor is as good as ours.
    let _ = PROC_FD.set(fd);
    Ok(())
}

/// Attribute changes of a setstat-like request, applied by [`Root::set_attr`] and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrChange {
    /// Truncate/extend to this size.
    Size(u64),
    /// `chmod` (only the low 12 bits are used).
    Mode(u32),
    /// `(atime, mtime)` in seconds.
    Times(u32, u32),
    /// `chown(uid, gid)`.
    Owner(u32, u32),
}

/// Applies an attribute change to an entry opened with `O_PATH` (or a real descriptor).
/// `nofollow`: the descriptor may be a symlink itself (lsetstat); chmod then fails with
/// `EOPNOTSUPP` as Linux's `fchmodat(AT_SYMLINK_NOFOLLOW)` does.
fn change_fd(fd: BorrowedFd<'_>, change: AttrChange, nofollow: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    match change {
        // Size needs a writable descriptor: callers open one (see `Root::set_attr`).
        AttrChange::Size(_) => Err(errno_err(libc::EINVAL)),
        AttrChange::Mode(mode) => {
            let flags = libc::AT_EMPTY_PATH
                | if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
            // SAFETY: valid fd and C string; the kernel only reads them.
            let r = cvt(|| unsafe {
                libc::syscall(SYS_FCHMODAT2, raw, c"".as_ptr(), mode & 0o7777, flags)
            });
            match r {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    // Kernels before 6.6: chmod through /proc, refusing symlinks first.
                    let st = fstat(fd)?;
                    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                        return Err(errno_err(libc::EOPNOTSUPP));
                    }
                    if let Some(dir) = PROC_FD.get() {
                        let name = cstr(raw.to_string().as_bytes())?;
                        // SAFETY: valid directory fd and C string.
                        cvt(|| unsafe {
                            libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777, 0)
                        })?;
                        return Ok(());
                    }
                    let link = cstr(format!("/proc/self/fd/{raw}").as_bytes())?;
                    // SAFETY: valid C string.
                    cvt(|| unsafe { libc::chmod(link.as_ptr(), mode & 0o7777) })?;
                    Ok(())
                }
                Err(e) => Err(e),
                Ok(_) => Ok(()),
            }
        }
        AttrChange::Times(atime, mtime) => {
            let ts = [
                libc::timespec {
                    tv_sec: libc::time_t::from(atime),
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: libc::time_t::from(mtime),
                    tv_nsec: 0,
                },
            ];
            let flags = libc::AT_EMPTY_PATH
                | if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
            // SAFETY: valid fd, C string and timespec array.
            cvt(|| unsafe { libc::utimensat(raw, c"".as_ptr(), ts.as_ptr(), flags) })?;
            Ok(())
        }
        AttrChange::Owner(uid, gid) => {
            let flags = libc::AT_EMPTY_PATH
                | if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
            // SAFETY: valid fd and C string.
            cvt(|| unsafe { libc::fchownat(raw, c"".as_ptr(), uid, gid, flags) })?;
            Ok(())
        }
    }
}

/// Applies an attribute change to an open file descriptor (fsetstat).
pub fn change_open_file(fd: BorrowedFd<'_>, change: AttrChange) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    match change {
        AttrChange::Size(size) => {
            let len = libc::off_t::try_from(size).map_err(|_| errno_err(libc::EINVAL))?;
            // SAFETY: valid descriptor.
            cvt(|| unsafe { libc::ftruncate(raw, len) })?;
            Ok(())
        }
        AttrChange::Mode(mode) => {
            // SAFETY: valid descriptor.
            cvt(|| unsafe { libc::fchmod(raw, mode & 0o7777) })?;
            Ok(())
        }
        AttrChange::Owner(uid, gid) => {
            // SAFETY: valid descriptor.
            cvt(|| unsafe { libc::fchown(raw, uid, gid) })?;
            Ok(())
        }
        AttrChange::Times(..) => change_fd(fd, change, false),
    }
}

/// A path split into its parent directory (opened) and last component.
#[derive(Debug)]
pub struct Entry {
    /// The parent directory, `O_PATH | O_DIRECTORY`.
    pub dir: OwnedFd,
    /// The last component: a single name, or `.`/`..`, or empty for the root itself.
    pub name: CString,
    /// The client path ended in `/`.
    pub trailing_slash: bool,
}

impl Entry {
    fn is_root(&self) -> bool {
        self.name.as_bytes().is_empty()
    }
}

/// The confined root of a session.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// Joins a client path onto the in-root current directory `cwd` (absolute paths are taken
/// as they are; empty means `.`). The result is an in-root path for `RESOLVE_IN_ROOT`.
pub fn join(cwd: &[u8], path: &[u8]) -> Vec<u8> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    let mut out = Vec::with_capacity(cwd.len() + 1 + path.len());
    out.extend_from_slice(cwd);
    if out.last() != Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out
}

/// Splits an in-root path into (parent, last component, trailing slash). The parent of a
/// single name is `.`... relative to the root: `/`.
fn split_last(path: &[u8]) -> (&[u8], &[u8], bool) {
    let mut end = path.len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    let trailing = end < path.len();
    let trimmed = &path[..end];
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => {
            let parent = if i == 0 { &b"/"[..] } else { &trimmed[..i] };
            (parent, &trimmed[i + 1..], trailing)
        }
        None if trimmed.is_empty() => (&b"/"[..], &b""[..], trailing),
        None => (&b"."[..], trimmed, trailing),
    }
}

impl Root {
    /// Opens `path` as the root of a session.
    pub fn open(path: &Path) -> io::Result<Self> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: valid C string.
        let fd = cvt(|| unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: fresh descriptor.
        Self::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Uses an already open directory descriptor as the root.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let st = fstat(fd.as_fd_ref())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(errno_err(libc::ENOTDIR));
        }
        Ok(Self { fd })
    }

    /// The root directory descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd_ref()
    }

    /// Opens an in-root path (`flags` as for `open(2)`, `mode` for `O_CREAT`).
    pub fn open_path(&self, path: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let c = cstr(if path.is_empty() { b"." } else { path })?;
        openat2_in(self.fd(), &c, flags, mode)
    }

    /// Opens `name` (a single component) inside an already opened directory of the root.
    pub fn open_in(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        openat2_in(dir, name, flags, mode)
    }

    /// Opens the parent of an in-root path and returns it with the last component.
    pub fn entry(&self, path: &[u8]) -> io::Result<Entry> {
        let (parent, name, trailing_slash) = split_last(path);
        let dir = self.open_path(parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(Entry {
            dir,
            name: cstr(name)?,
            trailing_slash,
        })
    }

    /// `stat(2)` (symlinks followed, inside the root).
    pub fn stat(&self, path: &[u8]) -> io::Result<libc::stat> {
        let fd = self.open_path(path, libc::O_PATH, 0)?;
        fstat(fd.as_fd_ref())
    }

    /// `lstat(2)`: a final symlink is not followed.
    pub fn lstat(&self, path: &[u8]) -> io::Result<libc::stat> {
        let fd = self.open_path(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        fstat(fd.as_fd_ref())
    }

    /// `statvfs(2)`.
    pub fn statvfs(&self, path: &[u8]) -> io::Result<libc::statvfs> {
        let fd = self.open_path(path, libc::O_PATH, 0)?;
        fstatvfs(fd.as_fd_ref())
    }

    /// setstat (symlinks followed).
    pub fn set_attr(&self, path: &[u8], change: AttrChange) -> io::Result<()> {
        if let AttrChange::Size(_) = change {
            // truncate(2): needs write permission, EISDIR for directories.
            let w = self.open_path(path, libc::O_WRONLY | libc::O_NONBLOCK, 0)?;
            return change_open_file(w.as_fd_ref(), change);
        }
        let fd = self.open_path(path, libc::O_PATH, 0)?;
        change_fd(fd.as_fd_ref(), change, false)
    }

    /// lsetstat (a final symlink is changed itself; chmod of a symlink is `EOPNOTSUPP`).
    pub fn lset_attr(&self, path: &[u8], change: AttrChange) -> io::Result<()> {
        let fd = self.open_path(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        change_fd(fd.as_fd_ref(), change, true)
    }

    /// `readlink(2)`; the target text is returned verbatim (at most 4095 bytes, as OpenSSH's
    /// `PATH_MAX` buffer).
    pub fn readlink(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        let fd = self.open_path(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        readlinkat(fd.as_fd_ref(), c"")
    }

    /// `mkdir(2)`.
    pub fn mkdir(&self, path: &[u8], mode: u32) -> io::Result<()> {
        let e = self.entry(path)?;
        if e.is_root() {
            return Err(errno_err(libc::EEXIST));
        }
        // SAFETY: valid fd and C string.
        cvt(|| unsafe { libc::mkdirat(e.dir.as_raw_fd(), e.name.as_ptr(), mode & 0o7777) })?;
        Ok(())
    }

    /// `rmdir(2)`.
    pub fn rmdir(&self, path: &[u8]) -> io::Result<()> {
        let e = self.entry(path)?;
        if e.is_root() {
            return Err(errno_err(libc::EBUSY));
        }
        // SAFETY: valid fd and C string.
        cvt(|| unsafe { libc::unlinkat(e.dir.as_raw_fd(), e.name.as_ptr(), libc::AT_REMOVEDIR) })?;
        Ok(())
    }

    /// `unlink(2)`.
    pub fn remove(&self, path: &[u8]) -> io::Result<()> {
        let e = self.entry(path)?;
        if e.is_root() {
            return Err(errno_err(libc::EISDIR));
        }
        if e.trailing_slash {
            // unlink("x/"): ENOTDIR for a non-directory, EISDIR for a directory.
            let st = fstatat(e.dir.as_fd_ref(), &e.name, 0)?;
            return Err(errno_err(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                libc::EISDIR
            } else {
                libc::ENOTDIR
            }));
        }
        // SAFETY: valid fd and C string.
        cvt(|| unsafe { libc::unlinkat(e.dir.as_raw_fd(), e.name.as_ptr(), 0) })?;
        Ok(())
    }

    fn check_trailing(e: &Entry) -> io::Result<()> {
        if e.trailing_slash && !e.is_root() {
            let st = fstatat(e.dir.as_fd_ref(), &e.name, libc::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(errno_err(libc::ENOTDIR));
            }
        }
        Ok(())
    }

    /// `rename(2)` (replaces an existing target; `renameat2` without flags).
    pub fn rename(&self, old: &[u8], new: &[u8]) -> io::Result<()> {
        let o = self.entry(old)?;
        let n = self.entry(new)?;
        if o.is_root() || n.is_root() {
            return Err(errno_err(libc::EBUSY));
        }
        Self::check_trailing(&o)?;
        if n.trailing_slash {
            let st = fstatat(o.dir.as_fd_ref(), &o.name, libc::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(errno_err(libc::ENOTDIR));
            }
        }
        Self::rename_entries(&o, &n)
    }

    /// `renameat` between two opened entries.
    pub fn rename_entries(o: &Entry, n: &Entry) -> io::Result<()> {
        // SAFETY: valid fds and C strings.
        cvt(|| unsafe {
            libc::renameat(
                o.dir.as_raw_fd(),
                o.name.as_ptr(),
                n.dir.as_raw_fd(),
                n.name.as_ptr(),
            )
        })?;
        Ok(())
    }

    /// `link(2)` (a symlink `old` is linked itself, as Linux `link` does).
    pub fn hardlink(&self, old: &[u8], new: &[u8]) -> io::Result<()> {
        let o = self.entry(old)?;
        let n = self.entry(new)?;
        if o.is_root() {
            return Err(errno_err(libc::EPERM));
        }
        if n.is_root() {
            return Err(errno_err(libc::EEXIST));
        }
        Self::check_trailing(&o)?;
        if n.trailing_slash {
            return Err(errno_err(libc::ENOENT));
        }
        // SAFETY: valid fds and C strings. Flags 0: `old` is not followed, so it is the
        // entry inside the root (`..` as last component names a directory: EPERM).
        cvt(|| unsafe {
            libc::linkat(
                o.dir.as_raw_fd(),
                o.name.as_ptr(),
                n.dir.as_raw_fd(),
                n.name.as_ptr(),
                0,
            )
        })?;
        Ok(())
    }

    /// `symlink(2)`: `target` is stored verbatim (it is resolved inside the root whenever it
    /// is followed through this module).
    pub fn symlink(&self, target: &[u8], link: &[u8]) -> io::Result<()> {
        let t = cstr(target)?;
        let n = self.entry(link)?;
        if n.is_root() {
            return Err(errno_err(libc::EEXIST));
        }
        if n.trailing_slash {
            return Err(errno_err(libc::ENOENT));
        }
        // SAFETY: valid fd and C strings.
        cvt(|| unsafe { libc::symlinkat(t.as_ptr(), n.dir.as_raw_fd(), n.name.as_ptr()) })?;
        Ok(())
    }

    /// OpenSSH `realpath` (OpenBSD `realpath(3)` as in OpenSSH's `sftp-realpath.c`): the
    /// canonical in-root absolute path of `path` (already joined with the current directory;
    /// a relative path is taken from the root). Symlinks are resolved (absolute targets from
    /// the root), `..` is collapsed and never goes above the root, a missing *last* component
    /// is allowed and appended, a missing earlier one is `ENOENT`, a non-directory followed by
    /// `/` is `ENOTDIR`, more than 32 symlinks is `ELOOP`.
    ///
    /// The walk is done in user space, one `fstatat`/`readlinkat` per component on
    /// directories opened with `openat2(RESOLVE_IN_ROOT)`, so it needs no `/proc` and works
    /// after a real chroot; every lookup stays inside the root even if the tree changes
    /// concurrently.
    pub fn realpath(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        const SYMLOOP_MAX: u32 = 32;
        const PATH_MAX: usize = 4096;
        let mut resolved: Vec<u8> = b"/".to_vec();
        let mut left: Vec<u8> = path.to_vec();
        let mut links = 0;
        let mut dir = self.open_path(b"/", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let mut pos = 0;
        loop {
            while left.get(pos) == Some(&b'/') {
                pos += 1;
            }
            if pos >= left.len() {
                break;
            }
            let end = left[pos..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(left.len(), |i| pos + i);
            let comp = left[pos..end].to_vec();
            // A `/` follows the component (possibly only trailing slashes).
            let more = end < left.len();
            pos = end;
            if comp == b"." {
                continue;
            }
            if comp == b".." {
                if resolved.len() > 1 {
                    let cut = resolved.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    resolved.truncate(cut.max(1));
                    dir = self.open_path(&resolved, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                }
                continue;
            }
            let name = cstr(&comp)?;
            let push = |resolved: &mut Vec<u8>| -> io::Result<()> {
                if resolved.last() != Some(&b'/') {
                    resolved.push(b'/');
                }
                resolved.extend_from_slice(&comp);
                if resolved.len() >= PATH_MAX {
                    return Err(errno_err(libc::ENAMETOOLONG));
                }
                Ok(())
            };
            let st = match fstatat(dir.as_fd_ref(), &name, libc::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !more => {
                    push(&mut resolved)?;
                    return Ok(resolved);
                }
                Err(e) => return Err(e),
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    links += 1;
                    if links > SYMLOOP_MAX {
                        return Err(errno_err(libc::ELOOP));
                    }
                    let target = readlinkat(dir.as_fd_ref(), &name)?;
                    if target.first() == Some(&b'/') {
                        resolved.truncate(1);
                        dir = self.open_path(b"/", libc::O_PATH | libc::O_DIRECTORY, 0)?;
                    }
                    let mut next = target;
                    if more {
                        next.push(b'/');
                        next.extend_from_slice(&left[pos..]);
                    }
                    left = next;
                    pos = 0;
                }
                libc::S_IFDIR => {
                    push(&mut resolved)?;
                    dir = openat2_in(
                        dir.as_fd_ref(),
                        &name,
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )?;
                }
                _ if more => return Err(errno_err(libc::ENOTDIR)),
                _ => push(&mut resolved)?,
            }
        }
        Ok(resolved)
    }
}

/// `readlinkat(dir, name)` into a `PATH_MAX` buffer (at most 4095 bytes, as OpenSSH).
fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid fd, C string and buffer of the given length.
    let n = cvt(|| unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len() - 1,
        )
    })?;
    buf.truncate(usize::try_from(n).map_err(|_| errno_err(libc::EIO))?);
    Ok(buf)
}

/// Small helper so `OwnedFd` / `BorrowedFd` conversions read well.
trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

// ---------------------------------------------------------------------------
// Directory reading
// ---------------------------------------------------------------------------

/// An open directory read with `getdents64(2)`; entries left over from one READDIR reply are
/// kept for the next.
#[derive(Debug)]
pub struct DirReader {
    fd: OwnedFd,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
}

impl DirReader {
    /// Opens an in-root directory.
    pub fn open(root: &Root, path: &[u8]) -> io::Result<Self> {
        let fd = root.open_path(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(Self {
            fd,
            buf: vec![0; 32 * 1024],
            pos: 0,
            len: 0,
            eof: false,
        })
    }

    /// The directory descriptor (for `fstatat` of entries).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd_ref()
    }

    /// The next entry name, or `None` at the end.
    pub fn next_name(&mut self) -> io::Result<Option<CString>> {
        loop {
            if self.pos < self.len {
                let rec = &self.buf[self.pos..self.len];
                // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name...
                let reclen = match rec.get(16..18) {
                    Some(b) => usize::from(u16::from_ne_bytes([b[0], b[1]])),
                    None => return Err(errno_err(libc::EIO)),
                };
                if reclen < 19 || reclen > rec.len() {
                    return Err(errno_err(libc::EIO));
                }
                let name_bytes = &rec[19..reclen];
                let nul = name_bytes
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(name_bytes.len());
                self.pos += reclen;
                return Ok(Some(cstr(&name_bytes[..nul])?));
            }
            if self.eof {
                return Ok(None);
            }
            // SAFETY: valid fd and buffer of the given length.
            let n = cvt(|| unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                )
            })?;
            let n = usize::try_from(n).map_err(|_| errno_err(libc::EIO))?;
            if n == 0 {
                self.eof = true;
            }
            self.pos = 0;
            self.len = n;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    fn setup() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let jail = t.path().join("jail");
        fs::create_dir(&jail).unwrap();
        fs::create_dir(jail.join("upload")).unwrap();
        fs::write(jail.join("upload/a.txt"), b"hello").unwrap();
        fs::write(t.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("/", jail.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", jail.join("upload/evil2")).unwrap();
        std::os::unix::fs::symlink("/upload/a.txt", jail.join("abs")).unwrap();
        let root = Root::open(&jail).unwrap();
        (t, root)
    }

    #[test]
    fn join_and_split() {
        assert_eq!(join(b"/", b""), b"/.");
        assert_eq!(join(b"/upload", b"x"), b"/upload/x");
        assert_eq!(join(b"/upload", b"/x"), b"/x");
        assert_eq!(split_last(b"/a/b"), (&b"/a"[..], &b"b"[..], false));
        assert_eq!(split_last(b"/a/"), (&b"/"[..], &b"a"[..], true));
        assert_eq!(split_last(b"/"), (&b"/"[..], &b""[..], true));
        assert_eq!(split_last(b"x"), (&b"."[..], &b"x"[..], false));
    }

    #[test]
    fn realpath_stays_inside() {
        let (_t, root) = setup();
        assert_eq!(root.realpath(b"/").unwrap(), b"/");
        assert_eq!(root.realpath(b"/../../..").unwrap(), b"/");
        assert_eq!(root.realpath(b"/evil").unwrap(), b"/");
        assert_eq!(root.realpath(b"/evil/upload").unwrap(), b"/upload");
        assert_eq!(root.realpath(b"/upload/evil2").unwrap(), b"/");
        assert_eq!(root.realpath(b"/abs").unwrap(), b"/upload/a.txt");
        assert_eq!(root.realpath(b"/upload/new").unwrap(), b"/upload/new");
        assert_eq!(
            root.realpath(b"/nodir/new").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
    }

    #[test]
    fn realpath_openbsd_semantics() {
        let (t, root) = setup();
        let j = t.path().join("jail");
        std::os::unix::fs::symlink("missing", j.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop2", j.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", j.join("loop2")).unwrap();
        std::os::unix::fs::symlink("upload/../upload/./a.txt", j.join("rel")).unwrap();
        let err = |r: io::Result<Vec<u8>>| r.unwrap_err().raw_os_error();
        // A dangling symlink as last component: its target's missing last component is kept.
        assert_eq!(root.realpath(b"/dangling").unwrap(), b"/missing");
        assert_eq!(root.realpath(b"/rel").unwrap(), b"/upload/a.txt");
        assert_eq!(
            root.realpath(b"//upload///./a.txt").unwrap(),
            b"/upload/a.txt"
        );
        assert_eq!(
            root.realpath(b"/upload/a.txt/..")
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert_eq!(err(root.realpath(b"/upload/a.txt/")), Some(libc::ENOTDIR));
        assert_eq!(err(root.realpath(b"/missing/")), Some(libc::ENOENT));
        assert_eq!(err(root.realpath(b"/loop1")), Some(libc::ELOOP));
        assert_eq!(root.realpath(b"/upload/").unwrap(), b"/upload");
        assert_eq!(root.realpath(b"upload/evil2/upload").unwrap(), b"/upload");
    }

    #[test]
    fn escapes_fail_or_stay_inside() {
        let (t, root) = setup();
        // ../secret from the root is clamped to the root, where there is no "secret".
        assert!(root.stat(b"/../secret").is_err());
        assert!(root.stat(b"/evil/../secret").is_err());
        assert!(root.stat(b"/upload/evil2/secret").is_err());
        // /etc/passwd does not exist inside the jail.
        assert!(root.open_path(b"/etc/passwd", libc::O_RDONLY, 0).is_err());
        assert!(
            root.open_path(b"/evil/etc/passwd", libc::O_RDONLY, 0)
                .is_err()
        );
        // Creating through a symlink lands inside the jail.
        root.open_path(b"/upload/evil2/made", libc::O_WRONLY | libc::O_CREAT, 0o644)
            .unwrap();
        assert!(t.path().join("jail/made").exists());
        assert!(!t.path().join("made").exists());
        // mkdir of .. in the root fails without touching the parent.
        assert_eq!(
            root.mkdir(b"/..", 0o755).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert_eq!(
            root.rmdir(b"/upload/..").unwrap_err().raw_os_error(),
            Some(libc::ENOTEMPTY)
        );
        assert_eq!(
            root.rmdir(b"/upload/.").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        assert_eq!(
            root.rmdir(b"/").unwrap_err().raw_os_error(),
            Some(libc::EBUSY)
        );
        // Symlink with an outside target is stored verbatim and resolves inside.
        root.symlink(b"/etc", b"/upload/etc").unwrap();
        assert_eq!(root.readlink(b"/upload/etc").unwrap(), b"/etc");
        assert!(root.stat(b"/upload/etc/passwd").is_err());
        // Hardlink/rename with an outside name stay inside.
        root.hardlink(b"/upload/a.txt", b"/../../linked").unwrap();
        assert!(t.path().join("jail/linked").exists());
        root.rename(b"/linked", b"/evil/../../renamed").unwrap();
        assert!(t.path().join("jail/renamed").exists());
        assert!(!t.path().join("renamed").exists());
        // lstat does not follow; stat follows inside.
        let l = root.lstat(b"/evil").unwrap();
        assert_eq!(l.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let s = root.stat(b"/evil").unwrap();
        let r = fstat(root.fd()).unwrap();
        assert_eq!((s.st_dev, s.st_ino), (r.st_dev, r.st_ino));
    }

    #[test]
    fn remove_trailing_slash_and_dir_reader() {
        let (_t, root) = setup();
        assert_eq!(
            root.remove(b"/upload/a.txt/").unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert_eq!(
            root.remove(b"/upload").unwrap_err().raw_os_error(),
            Some(libc::EISDIR)
        );
        let mut d = DirReader::open(&root, b"/upload").unwrap();
        let mut names = Vec::new();
        while let Some(n) = d.next_name().unwrap() {
            names.push(n.into_bytes());
        }
        names.sort();
        assert_eq!(names, [&b"."[..], b"..", b"a.txt", b"evil2"]);
        root.remove(b"/upload/a.txt").unwrap();
        assert!(root.stat(b"/upload/a.txt").is_err());
    }

    #[test]
    fn set_attrs() {
        let (t, root) = setup();
        root.set_attr(b"/abs", AttrChange::Mode(0o600)).unwrap();
        let st = root.stat(b"/upload/a.txt").unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o600);
        root.set_attr(b"/upload/a.txt", AttrChange::Size(2))
            .unwrap();
        assert_eq!(fs::read(t.path().join("jail/upload/a.txt")).unwrap(), b"he");
        root.set_attr(b"/upload/a.txt", AttrChange::Times(1000, 2000))
            .unwrap();
        assert_eq!(root.stat(b"/upload/a.txt").unwrap().st_mtime, 2000);
        assert_eq!(
            root.lset_attr(b"/abs", AttrChange::Mode(0o600))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
        root.lset_attr(b"/abs", AttrChange::Times(5, 6)).unwrap();
        assert_eq!(root.lstat(b"/abs").unwrap().st_mtime, 6);
        let sv = root.statvfs(b"/upload").unwrap();
        assert!(sv.f_bsize > 0);
    }
}
