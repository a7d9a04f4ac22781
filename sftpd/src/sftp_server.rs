//! The SFTP v3 request executor: OpenSSH `sftp-server` / `internal-sftp` (9.2) semantics and
//! log lines, on a [`vfs::Root`] confined file system.
//!
//! Synchronous by design: [`SftpServer::handle`] takes one packet (type byte + payload, as in
//! [`crate::sftp::Frame::packet`]) and appends exactly one complete response packet to the
//! caller's buffer. Blocking system calls are made directly; the caller runs a session on its
//! own thread.
//!
//! Log lines are the ones of OpenSSH's `sftp-server.c` (INFO = `logit`, VERBOSE = `verbose`,
//! ERROR = `error`), with paths printed as the client sent them and handle lines printing the
//! path given at open time. Escaping of unprintable bytes (OpenSSH's `strnvis` in `log.c`) and
//! the 1024-byte message limit are the [`SftpLog`] implementation's business; paths that are
//! not UTF-8 reach it converted lossily.
//!
//! ## Atomic uploads
//!
//! With [`Options::atomic_uploads`], an OPEN for WRITE with CREATE (and without APPEND) whose
//! target does not exist yet, or exists as a regular file and is opened with TRUNCATE, writes
//! into a hidden temporary `.NAME.sftpd-upload-XXXXXX` created with `O_EXCL` in the same
//! directory, with the same mode (the existing file's mode and owner when it is replaced).
//! EXCL is checked against the final name. CLOSE renames the temporary over the final name, so
//! readers never see a partial file; a handle that is never closed (connection dropped) leaves
//! the final name untouched and its temporary is removed by [`SftpServer::finish`] (or on
//! drop). All log lines show the final name. Other opens (no TRUNCATE on an existing file,
//! APPEND, a symlink or special file as target) fall back to writing in place, because their
//! semantics need the existing contents.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Mutex;

use crate::server_args::{LogLevel, ServerArgs, expand_start_dir};
use crate::sftp::{
    self, Attrs, DATA_HEADER_LEN, ExtendedRequest, Limits, NameEntry, Request, Response,
    StatusCode, Statvfs, encode_data_header, encode_users_groups_reply, ext_name, open_flags,
    packet_type, peek_request_id,
};
use crate::vfs::{self, AttrChange, DirReader, Root};

/// Largest READ served (OpenSSH `SFTP_MAX_READ_LENGTH`, 256 KiB − 1024); longer reads are
/// shortened.
pub const MAX_READ_LEN: u32 = 256 * 1024 - 1024;
/// Largest packet accepted (`limits@openssh.com` max-packet-length).
pub const MAX_PACKET_LEN: u64 = 256 * 1024;
/// Entries per READDIR reply (as OpenSSH).
pub const READDIR_BATCH: usize = 100;

/// Where log lines go.
pub trait SftpLog {
    /// Whether lines of `level` are wanted (checked before a line is formatted).
    fn enabled(&self, level: LogLevel) -> bool;
    /// Emits one line (no trailing newline).
    fn log(&self, level: LogLevel, message: &str);
}

/// uid/gid → name lookups (for READDIR long names and `users-groups-by-id@openssh.com`).
pub trait Names {
    /// The user name of `uid`, if known.
    fn user(&self, uid: u32) -> Option<String>;
    /// The group name of `gid`, if known.
    fn group(&self, gid: u32) -> Option<String>;
}

const NAME_CACHE_MAX: usize = 256;

/// [`Names`] from the system databases (`getpwuid_r` / `getgrgid_r`), with a small cache.
/// After a real chroot these read the jail's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Default)]
pub struct SystemNames {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl SystemNames {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

fn cached(
    cache: &Mutex<HashMap<u32, Option<String>>>,
    id: u32,
    lookup: impl FnOnce() -> Option<String>,
) -> Option<String> {
    if let Ok(c) = cache.lock()
        && let Some(v) = c.get(&id)
    {
        return v.clone();
    }
    let v = lookup();
    if let Ok(mut c) = cache.lock() {
        if c.len() >= NAME_CACHE_MAX {
            c.clear();
        }
        c.insert(id, v.clone());
    }
    v
}

impl Names for SystemNames {
    fn user(&self, uid: u32) -> Option<String> {
        cached(&self.users, uid, || {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        })
    }

    fn group(&self, gid: u32) -> Option<String> {
        cached(&self.groups, gid, || {
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name)
        })
    }
}

/// Who the session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Local user name (`session opened for local user %s`).
    pub user: String,
    /// uid of the user (`%U` of `-d`).
    pub uid: u32,
    /// Client address (first word of `SSH_CONNECTION`; `UNKNOWN` if unknown).
    pub client_addr: String,
    /// Home directory as a path inside the root (passwd home after chroot; `/` if missing).
    pub home: String,
}

/// Session options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The `internal-sftp` arguments (`-R`, `-d`, `-P`, `-p`; `-u` is applied by the caller).
    pub args: ServerArgs,
    /// Write uploads to a temporary and rename on close (see the module documentation).
    pub atomic_uploads: bool,
    /// Maximum simultaneously open handles (also sent as `limits@` max-open-handles).
    pub max_handles: u32,
}

/// Errors that end a session (the caller logs them and closes the channel, as OpenSSH's
/// `sftp-server` does with `fatal`).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The packet could not be decoded.
    #[error("parse: {0}")]
    Malformed(#[from] sftp::Error),
    /// A string that OpenSSH reads as a C string contains a NUL byte (OpenSSH: parse error).
    #[error("parse: string contains a NUL byte")]
    EmbeddedNul,
    /// A request other than INIT arrived first.
    #[error("Received {0} request before init")]
    RequestBeforeInit(u8),
    /// An extended request arrived before INIT.
    #[error("Received extended request before init")]
    ExtendedBeforeInit,
}

/// A pending atomic upload: the temporary and the final name in `dir`.
#[derive(Debug)]
struct Upload {
    dir: OwnedFd,
    temp: CString,
    target: CString,
    /// EXCL was requested: the rename must not replace a file created meanwhile.
    excl: bool,
}

#[derive(Debug)]
enum Kind {
    File {
        fd: OwnedFd,
        append: bool,
        upload: Option<Upload>,
    },
    Dir(DirReader),
}

#[derive(Debug)]
struct Handle {
    kind: Kind,
    /// The path as the client gave it at open time.
    name: Vec<u8>,
    read: u64,
    written: u64,
}

/// One SFTP session.
#[derive(Debug)]
pub struct SftpServer<L: SftpLog, N: Names> {
    root: Root,
    info: SessionInfo,
    opts: Options,
    log: L,
    names: N,
    /// Current directory, an in-root absolute path.
    cwd: Vec<u8>,
    handles: Vec<Option<Handle>>,
    open: usize,
    init_done: bool,
    temp_counter: u64,
}

/// OpenSSH's `errno_to_portable`.
pub fn errno_to_status(e: &io::Error) -> StatusCode {
    match e.raw_os_error() {
        Some(0) => StatusCode::Ok,
        Some(libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP) => StatusCode::NoSuchFile,
        Some(libc::EPERM | libc::EACCES | libc::EFAULT) => StatusCode::PermissionDenied,
        Some(libc::ENAMETOOLONG | libc::EINVAL) => StatusCode::BadMessage,
        Some(libc::ENOSYS) => StatusCode::OpUnsupported,
        _ => StatusCode::Failure,
    }
}

/// `strerror` text of an error.
fn strerror(e: &io::Error) -> &'static str {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)).desc()
}

/// The request name used by `-P`/`-p`/`-R` (`None` for INIT and unknown requests).
fn request_name(req: &Request<'_>) -> Option<&'static str> {
    Some(match req {
        Request::Init { .. } => return None,
        Request::Open { .. } => "open",
        Request::Close { .. } => "close",
        Request::Read { .. } => "read",
        Request::Write { .. } => "write",
        Request::Lstat { .. } => "lstat",
        Request::Fstat { .. } => "fstat",
        Request::Setstat { .. } => "setstat",
        Request::Fsetstat { .. } => "fsetstat",
        Request::Opendir { .. } => "opendir",
        Request::Readdir { .. } => "readdir",
        Request::Remove { .. } => "remove",
        Request::Mkdir { .. } => "mkdir",
        Request::Rmdir { .. } => "rmdir",
        Request::Realpath { .. } => "realpath",
        Request::Stat { .. } => "stat",
        Request::Rename { .. } => "rename",
        Request::Readlink { .. } => "readlink",
        Request::Symlink { .. } => "symlink",
        Request::Extended { request, .. } => return ext_request_name(request.name()),
    })
}

fn ext_request_name(wire: &str) -> Option<&'static str> {
    Some(match wire {
        ext_name::POSIX_RENAME => "posix-rename",
        ext_name::STATVFS => "statvfs",
        ext_name::FSTATVFS => "fstatvfs",
        ext_name::HARDLINK => "hardlink",
        ext_name::FSYNC => "fsync",
        ext_name::LSETSTAT => "lsetstat",
        ext_name::LIMITS => "limits",
        ext_name::EXPAND_PATH => "expand-path",
        ext_name::HOME_DIRECTORY => "home-directory",
        ext_name::USERS_GROUPS_BY_ID => "users-groups-by-id",
        _ => return None,
    })
}

fn type_request_name(ty: u8) -> Option<&'static str> {
    use packet_type as t;
    Some(match ty {
        t::OPEN => "open",
        t::CLOSE => "close",
        t::READ => "read",
        t::WRITE => "write",
        t::LSTAT => "lstat",
        t::FSTAT => "fstat",
        t::SETSTAT => "setstat",
        t::FSETSTAT => "fsetstat",
        t::OPENDIR => "opendir",
        t::READDIR => "readdir",
        t::REMOVE => "remove",
        t::MKDIR => "mkdir",
        t::RMDIR => "rmdir",
        t::REALPATH => "realpath",
        t::STAT => "stat",
        t::RENAME => "rename",
        t::READLINK => "readlink",
        t::SYMLINK => "symlink",
        _ => return None,
    })
}

/// Whether a field OpenSSH reads with `sshbuf_get_cstring` contains a NUL.
fn has_nul(req: &Request<'_>) -> bool {
    let nul = |s: &[u8]| s.contains(&0);
    match req {
        Request::Open { filename: p, .. }
        | Request::Lstat { path: p, .. }
        | Request::Setstat { path: p, .. }
        | Request::Opendir { path: p, .. }
        | Request::Remove { filename: p, .. }
        | Request::Mkdir { path: p, .. }
        | Request::Rmdir { path: p, .. }
        | Request::Realpath { path: p, .. }
        | Request::Stat { path: p, .. }
        | Request::Readlink { path: p, .. } => nul(p),
        Request::Rename { old, new, .. } => nul(old) || nul(new),
        Request::Symlink { target, link, .. } => nul(target) || nul(link),
        Request::Extended { request, .. } => match request {
            ExtendedRequest::PosixRename { old, new } | ExtendedRequest::Hardlink { old, new } => {
                nul(old) || nul(new)
            }
            ExtendedRequest::Statvfs { path }
            | ExtendedRequest::Lsetstat { path, .. }
            | ExtendedRequest::ExpandPath { path } => nul(path),
            ExtendedRequest::HomeDirectory { username } => nul(username),
            ExtendedRequest::Unknown { name, .. } => name.contains('\0'),
            _ => false,
        },
        _ => false,
    }
}

fn p(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// `%.100s` of OpenSSH's error lines.
fn p100(b: &[u8]) -> Cow<'_, str> {
    p(&b[..b.len().min(100)])
}

/// OpenSSH's `string_from_portable`.
pub fn flags_string(pflags: u32) -> String {
    let mut s = String::new();
    for (bit, name) in [
        (open_flags::READ, "READ"),
        (open_flags::WRITE, "WRITE"),
        (open_flags::APPEND, "APPEND"),
        (open_flags::CREAT, "CREATE"),
        (open_flags::TRUNC, "TRUNCATE"),
        (open_flags::EXCL, "EXCL"),
    ] {
        if pflags & bit != 0 {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(name);
        }
    }
    s
}

/// OpenSSH's `flags_from_portable`.
fn open_flags_from(pflags: u32) -> i32 {
    let rw = open_flags::READ | open_flags::WRITE;
    let mut f = if pflags & rw == rw {
        libc::O_RDWR
    } else if pflags & open_flags::WRITE != 0 {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    if pflags & open_flags::APPEND != 0 {
        f |= libc::O_APPEND;
    }
    if pflags & open_flags::CREAT != 0 {
        f |= libc::O_CREAT;
    }
    if pflags & open_flags::TRUNC != 0 {
        f |= libc::O_TRUNC;
    }
    if pflags & open_flags::EXCL != 0 {
        f |= libc::O_EXCL;
    }
    f
}

/// `stat_to_attrib`.
fn attrs_of(st: &libc::stat) -> Attrs<'static> {
    Attrs {
        size: Some(st.st_size as u64),
        uid_gid: Some((st.st_uid, st.st_gid)),
        permissions: Some(st.st_mode),
        ac_mod_time: Some((st.st_atime as u32, st.st_mtime as u32)),
        extended: Vec::new(),
    }
}

/// `strftime(fmt, localtime(t))`.
fn strftime_local(fmt: &CStr, t: i64) -> String {
    let tt = t as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: valid pointers to a time_t and writable tm storage.
    let r = unsafe { libc::localtime_r(&tt, tm.as_mut_ptr()) };
    if r.is_null() {
        return String::new();
    }
    let mut buf = [0u8; 64];
    // SAFETY: buffer of the given length, valid format and tm (filled by localtime_r).
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            fmt.as_ptr(),
            tm.as_ptr(),
        )
    };
    String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
}

/// OpenBSD `strmode`: 10 mode characters and a trailing space.
pub fn strmode(mode: u32) -> [u8; 11] {
    let mut s = [b'-'; 11];
    s[0] = match mode & libc::S_IFMT {
        libc::S_IFDIR => b'd',
        libc::S_IFCHR => b'c',
        libc::S_IFBLK => b'b',
        libc::S_IFREG => b'-',
        libc::S_IFLNK => b'l',
        libc::S_IFSOCK => b's',
        libc::S_IFIFO => b'p',
        _ => b'?',
    };
    let bit = |m: u32, c: u8| if mode & m != 0 { c } else { b'-' };
    s[1] = bit(libc::S_IRUSR, b'r');
    s[2] = bit(libc::S_IWUSR, b'w');
    // Execute bit combined with set-id / sticky: x, s/t when both, S/T when only the special.
    let exec = |x: u32, special: u32, both: u8, only: u8| match (mode & x != 0, mode & special != 0)
    {
        (false, false) => b'-',
        (true, false) => b'x',
        (false, true) => only,
        (true, true) => both,
    };
    s[3] = exec(libc::S_IXUSR, libc::S_ISUID, b's', b'S');
    s[4] = bit(libc::S_IRGRP, b'r');
    s[5] = bit(libc::S_IWGRP, b'w');
    s[6] = exec(libc::S_IXGRP, libc::S_ISGID, b's', b'S');
    s[7] = bit(libc::S_IROTH, b'r');
    s[8] = bit(libc::S_IWOTH, b'w');
    s[9] = exec(libc::S_IXOTH, libc::S_ISVTX, b't', b'T');
    s[10] = b' ';
    s
}

/// OpenSSH's `ls_file` (long name of a READDIR entry), `now` = current time.
// The libc field types differ between targets, so the casts are needed elsewhere.
#[allow(clippy::unnecessary_cast)]
pub fn ls_long_name(
    name: &[u8],
    st: &libc::stat,
    user: Option<String>,
    group: Option<String>,
    now: i64,
) -> Vec<u8> {
    let user = user.unwrap_or_else(|| st.st_uid.to_string());
    let group = group.unwrap_or_else(|| st.st_gid.to_string());
    let mtime = st.st_mtime as i64;
    let tbuf = if now - (365 * 24 * 60 * 60) / 2 < mtime && now >= mtime {
        strftime_local(c"%b %e %H:%M", mtime)
    } else {
        strftime_local(c"%b %e  %Y", mtime)
    };
    let ulen = user.len().max(8);
    let glen = group.len().max(8);
    let mut out = Vec::with_capacity(64 + name.len());
    out.extend_from_slice(&strmode(st.st_mode));
    let head = format!(
        " {:>3} {:<ulen$} {:<glen$} {:>8} {} ",
        st.st_nlink as u32, user, group, st.st_size as u64, tbuf
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(name);
    // snprintf into OpenSSH's 1024-byte buffer.
    out.truncate(1023);
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn handle_bytes(i: usize) -> [u8; 4] {
    (i as u32).to_be_bytes()
}

/// The four attribute changes of a setstat request in OpenSSH's order, with their log lines.
fn changes(attrs: &Attrs<'_>, with_size: bool) -> Vec<AttrChange> {
    let mut v = Vec::with_capacity(4);
    if with_size && let Some(size) = attrs.size {
        v.push(AttrChange::Size(size));
    }
    if let Some(perm) = attrs.permissions {
        v.push(AttrChange::Mode(perm));
    }
    if let Some((a, m)) = attrs.ac_mod_time {
        v.push(AttrChange::Times(a, m));
    }
    if let Some((u, g)) = attrs.uid_gid {
        v.push(AttrChange::Owner(u, g));
    }
    v
}

fn change_line(name: &[u8], c: AttrChange) -> String {
    match c {
        AttrChange::Size(s) => format!("set \"{}\" size {s}", p(name)),
        AttrChange::Mode(m) => format!("set \"{}\" mode {m:04o}", p(name)),
        AttrChange::Times(_, m) => format!(
            "set \"{}\" modtime {}",
            p(name),
            strftime_local(c"%Y%m%d-%H:%M:%S", i64::from(m))
        ),
        AttrChange::Owner(u, g) => format!("set \"{}\" owner {u} group {g}", p(name)),
    }
}

impl<L: SftpLog, N: Names> SftpServer<L, N> {
    /// Starts a session: logs `session opened ...`, sets the current directory to the home
    /// (or `/` if it is not a directory in the root) and then to the `-d` start directory.
    pub fn new(root: Root, info: SessionInfo, opts: Options, log: L, names: N) -> Self {
        let mut s = Self {
            root,
            info,
            opts,
            log,
            names,
            cwd: b"/".to_vec(),
            handles: Vec::new(),
            open: 0,
            init_done: false,
            temp_counter: 0,
        };
        s.logf(LogLevel::Info, || {
            format!(
                "session opened for local user {} from [{}]",
                s.info.user, s.info.client_addr
            )
        });
        let home = vfs::join(b"/", s.info.home.as_bytes());
        if let Ok(dir) = s.chdir_target(&home) {
            s.cwd = dir;
        }
        if let Some(template) = s.opts.args.start_dir.clone() {
            match expand_start_dir(&template, &s.info.home, &s.info.user, s.info.uid) {
                Ok(dir) => match s.chdir_target(&vfs::join(&s.cwd, dir.as_bytes())) {
                    Ok(d) => s.cwd = d,
                    Err(e) => {
                        s.logf(LogLevel::Error, || {
                            format!("chdir to \"{dir}\" failed: {}", strerror(&e))
                        });
                    }
                },
                // OpenSSH exits (fatal) here; we log and stay in the home directory.
                Err(e) => s.logf(LogLevel::Error, || e.to_string()),
            }
        }
        s
    }

    /// The current directory (in-root absolute path).
    pub fn cwd(&self) -> &[u8] {
        &self.cwd
    }

    fn chdir_target(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        drop(
            self.root
                .open_path(path, libc::O_PATH | libc::O_DIRECTORY, 0)?,
        );
        self.root.realpath(path)
    }

    fn logf(&self, level: LogLevel, f: impl FnOnce() -> String) {
        if self.log.enabled(level) {
            self.log.log(level, &f());
        }
    }

    /// The in-root path of a client path. An empty path is `ENOENT`, as the system calls
    /// OpenSSH makes with it (only realpath and expand-path turn "" into ".").
    fn path(&self, client: &[u8]) -> io::Result<Vec<u8>> {
        if client.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(vfs::join(&self.cwd, client))
    }

    /// `send_status`: logs `sent status %s` (INFO) for errors, or for all at DEBUG.
    fn status(&self, out: &mut Vec<u8>, id: u32, code: StatusCode) {
        self.status_msg(out, id, code, code.message());
    }

    fn status_msg(&self, out: &mut Vec<u8>, id: u32, code: StatusCode, message: &str) {
        if (code != StatusCode::Ok && code != StatusCode::Eof) || self.log.enabled(LogLevel::Debug1)
        {
            self.logf(LogLevel::Info, || format!("sent status {}", code.message()));
        }
        Response::Status {
            id,
            code,
            message,
            language: "",
        }
        .encode(out);
    }

    fn result(&self, out: &mut Vec<u8>, id: u32, r: io::Result<()>) {
        let code = match r {
            Ok(()) => StatusCode::Ok,
            Err(e) => errno_to_status(&e),
        };
        self.status(out, id, code);
    }

    fn name_reply(out: &mut Vec<u8>, id: u32, name: &[u8]) {
        Response::Name {
            id,
            entries: vec![NameEntry {
                filename: name,
                longname: name,
                attrs: Attrs::default(),
            }],
        }
        .encode(out);
    }

    fn lookup(&self, handle: &[u8]) -> Option<usize> {
        let b: [u8; 4] = handle.try_into().ok()?;
        let i = u32::from_be_bytes(b) as usize;
        self.handles.get(i)?.as_ref().map(|_| i)
    }

    fn file(&mut self, handle: &[u8]) -> Option<&mut Handle> {
        let i = self.lookup(handle)?;
        let h = self.handles.get_mut(i)?.as_mut()?;
        matches!(h.kind, Kind::File { .. }).then_some(h)
    }

    fn new_handle(&mut self, h: Handle) -> Result<usize, Handle> {
        if self.open >= self.opts.max_handles as usize {
            return Err(h);
        }
        self.open += 1;
        if let Some(i) = self.handles.iter().position(Option::is_none) {
            self.handles[i] = Some(h);
            Ok(i)
        } else {
            self.handles.push(Some(h));
            Ok(self.handles.len() - 1)
        }
    }

    fn take_handle(&mut self, i: usize) -> Option<Handle> {
        let h = self.handles.get_mut(i)?.take()?;
        self.open = self.open.saturating_sub(1);
        Some(h)
    }

    /// Handles one packet (type byte + payload) and appends one response packet to `out`.
    pub fn handle(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        let ty = packet.first().copied().unwrap_or(0);
        if !self.init_done && ty != packet_type::INIT && !packet.is_empty() {
            return Err(if ty == packet_type::EXTENDED {
                SessionError::ExtendedBeforeInit
            } else {
                SessionError::RequestBeforeInit(ty)
            });
        }
        let req = match Request::decode(packet) {
            Ok(r) => r,
            // OpenSSH discards whatever follows the fields a request needs.
            Err(sftp::Error::TrailingBytes { count }) if count < packet.len() => {
                match Request::decode(&packet[..packet.len() - count]) {
                    Ok(r) => r,
                    Err(e) => return self.undecodable(packet, e, out),
                }
            }
            Err(e) => return self.undecodable(packet, e, out),
        };
        // Refusals come first: OpenSSH refuses before parsing the request body.
        if let Some(name) = request_name(&req)
            && let Some(refusal) = self.opts.args.check_request(name)
        {
            self.logf(LogLevel::Verbose, || refusal.to_string());
            let id = req.id().unwrap_or(0);
            self.status(out, id, StatusCode::PermissionDenied);
            return Ok(());
        }
        if has_nul(&req) {
            return Err(SessionError::EmbeddedNul);
        }
        self.dispatch(req, out);
        Ok(())
    }

    /// A packet the codec refused: OpenSSH refuses disallowed requests before parsing their
    /// body and answers unknown types; everything else ends the session.
    fn undecodable(
        &mut self,
        packet: &[u8],
        e: sftp::Error,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        let ty = packet.first().copied().unwrap_or(0);
        if ty == packet_type::INIT
            && let Some(v) = packet.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            // OpenSSH reads only the version of INIT and ignores the rest.
            self.init(u32::from_be_bytes(v), out);
            return Ok(());
        }
        let Some(id) = peek_request_id(packet) else {
            return Err(e.into());
        };
        let name = if ty == packet_type::EXTENDED {
            // string name after the id
            packet
                .get(5..9)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_be_bytes(b) as usize)
                .and_then(|n| packet.get(9..9usize.checked_add(n)?))
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(ext_request_name)
        } else {
            type_request_name(ty)
        };
        if let Some(name) = name
            && let Some(refusal) = self.opts.args.check_request(name)
        {
            self.logf(LogLevel::Verbose, || refusal.to_string());
            self.status(out, id, StatusCode::PermissionDenied);
            return Ok(());
        }
        if matches!(e, sftp::Error::UnknownType(_)) {
            self.logf(LogLevel::Error, || format!("Unknown message {ty}"));
            self.status(out, id, StatusCode::OpUnsupported);
            return Ok(());
        }
        Err(e.into())
    }

    fn dispatch(&mut self, req: Request<'_>, out: &mut Vec<u8>) {
        match req {
            Request::Init { version, .. } => self.init(version, out),
            Request::Open {
                id,
                filename,
                pflags,
                attrs,
            } => self.open(id, filename, pflags, &attrs, out),
            Request::Close { id, handle } => self.close(id, handle, out),
            Request::Read {
                id,
                handle,
                offset,
                len,
            } => self.read(id, handle, offset, len, out),
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => self.write(id, handle, offset, data, out),
            Request::Lstat { id, path } => self.stat(id, path, true, out),
            Request::Stat { id, path } => self.stat(id, path, false, out),
            Request::Fstat { id, handle } => self.fstat(id, handle, out),
            Request::Setstat { id, path, attrs } => self.setstat(id, path, &attrs, out),
            Request::Fsetstat { id, handle, attrs } => self.fsetstat(id, handle, &attrs, out),
            Request::Opendir { id, path } => self.opendir(id, path, out),
            Request::Readdir { id, handle } => self.readdir(id, handle, out),
            Request::Remove { id, filename } => {
                self.logf(LogLevel::Info, || {
                    format!("remove name \"{}\"", p(filename))
                });
                let r = self.path(filename).and_then(|f| self.root.remove(&f));
                self.result(out, id, r);
            }
            Request::Mkdir { id, path, attrs } => {
                let mode = attrs.permissions.map_or(0o777, |m| m & 0o7777);
                self.logf(LogLevel::Info, || {
                    format!("mkdir name \"{}\" mode 0{mode:o}", p(path))
                });
                let r = self.path(path).and_then(|f| self.root.mkdir(&f, mode));
                self.result(out, id, r);
            }
            Request::Rmdir { id, path } => {
                self.logf(LogLevel::Info, || format!("rmdir name \"{}\"", p(path)));
                let r = self.path(path).and_then(|f| self.root.rmdir(&f));
                self.result(out, id, r);
            }
            Request::Realpath { id, path } => {
                let path: &[u8] = if path.is_empty() { b"." } else { path };
                self.logf(LogLevel::Verbose, || format!("realpath \"{}\"", p(path)));
                match self.root.realpath(&vfs::join(&self.cwd, path)) {
                    Ok(r) => Self::name_reply(out, id, &r),
                    Err(e) => self.status(out, id, errno_to_status(&e)),
                }
            }
            Request::Rename { id, old, new } => self.rename(id, old, new, out),
            Request::Readlink { id, path } => {
                self.logf(LogLevel::Verbose, || format!("readlink \"{}\"", p(path)));
                match self.path(path).and_then(|f| self.root.readlink(&f)) {
                    Ok(t) => Self::name_reply(out, id, &t),
                    Err(e) => self.status(out, id, errno_to_status(&e)),
                }
            }
            Request::Symlink { id, target, link } => {
                self.logf(LogLevel::Info, || {
                    format!("symlink old \"{}\" new \"{}\"", p(target), p(link))
                });
                let r = self.path(link).and_then(|f| self.root.symlink(target, &f));
                self.result(out, id, r);
            }
            Request::Extended { id, request } => self.extended(id, request, out),
        }
    }

    fn init(&mut self, version: u32, out: &mut Vec<u8>) {
        self.logf(LogLevel::Verbose, || {
            format!("received client version {version}")
        });
        self.init_done = true;
        Response::Version {
            version: sftp::SFTP_VERSION,
            extensions: vec![
                (ext_name::POSIX_RENAME, b"1"),
                (ext_name::STATVFS, b"2"),
                (ext_name::FSTATVFS, b"2"),
                (ext_name::HARDLINK, b"1"),
                (ext_name::FSYNC, b"1"),
                (ext_name::LSETSTAT, b"1"),
                (ext_name::LIMITS, b"1"),
                (ext_name::EXPAND_PATH, b"1"),
                (ext_name::HOME_DIRECTORY, b"1"),
                (ext_name::USERS_GROUPS_BY_ID, b"1"),
            ],
        }
        .encode(out);
    }

    fn open(
        &mut self,
        id: u32,
        filename: &[u8],
        pflags: u32,
        attrs: &Attrs<'_>,
        out: &mut Vec<u8>,
    ) {
        let mode = attrs.permissions.unwrap_or(0o666);
        self.logf(LogLevel::Info, || {
            format!(
                "open \"{}\" flags {} mode 0{mode:o}",
                p(filename),
                flags_string(pflags)
            )
        });
        let flags = open_flags_from(pflags);
        if self.opts.args.read_only
            && ((flags & libc::O_ACCMODE) != libc::O_RDONLY
                || flags & (libc::O_CREAT | libc::O_TRUNC) != 0)
        {
            self.logf(LogLevel::Verbose, || {
                "Refusing open request in read-only mode".to_owned()
            });
            self.status(out, id, StatusCode::PermissionDenied);
            return;
        }
        let path = match self.path(filename) {
            Ok(p) => p,
            Err(e) => return self.status(out, id, errno_to_status(&e)),
        };
        let atomic = self.opts.atomic_uploads
            && pflags & open_flags::WRITE != 0
            && pflags & open_flags::CREAT != 0
            && pflags & open_flags::APPEND == 0;
        let opened = if atomic {
            match self.open_atomic(&path, flags, mode) {
                Ok(Some((fd, up))) => Ok((fd, Some(up))),
                Ok(None) => self.root.open_path(&path, flags, mode).map(|fd| (fd, None)),
                Err(e) => Err(e),
            }
        } else {
            self.root.open_path(&path, flags, mode).map(|fd| (fd, None))
        };
        match opened {
            Err(e) => self.status(out, id, errno_to_status(&e)),
            Ok((fd, upload)) => {
                let h = Handle {
                    kind: Kind::File {
                        fd,
                        append: flags & libc::O_APPEND != 0,
                        upload,
                    },
                    name: filename.to_vec(),
                    read: 0,
                    written: 0,
                };
                match self.new_handle(h) {
                    Ok(i) => Response::Handle {
                        id,
                        handle: &handle_bytes(i),
                    }
                    .encode(out),
                    Err(h) => {
                        discard(h);
                        self.status(out, id, StatusCode::Failure);
                    }
                }
            }
        }
    }

    /// Opens a temporary for an atomic upload of `path`; `Ok(None)` = write in place.
    fn open_atomic(
        &mut self,
        path: &[u8],
        flags: i32,
        mode: u32,
    ) -> io::Result<Option<(OwnedFd, Upload)>> {
        let e = self.root.entry(path)?;
        let name = e.name.as_bytes();
        if name.is_empty() || name == b"." || name == b".." || e.trailing_slash {
            return Ok(None);
        }
        let mut mode = mode & 0o7777;
        let mut owner = None;
        match vfs::fstatat(e.dir.as_fd(), &e.name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if flags & libc::O_EXCL != 0 {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                if st.st_mode & libc::S_IFMT != libc::S_IFREG || flags & libc::O_TRUNC == 0 {
                    return Ok(None);
                }
                // The replaced file must be writable by us, as open(O_TRUNC) would require.
                drop(Root::open_in(
                    e.dir.as_fd(),
                    &e.name,
                    libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
                    0,
                )?);
                // Like a write into the truncated file (which makes the kernel drop them),
                // never carry set-user/group-ID bits over to the new contents.
                mode = st.st_mode & 0o1777;
                owner = Some((st.st_uid, st.st_gid));
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => return Err(err),
        }
        let base: Vec<u8> = name.iter().copied().take(200).collect();
        let tflags = (flags & libc::O_ACCMODE) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        for _ in 0..100 {
            self.temp_counter = self.temp_counter.wrapping_add(1);
            let mut temp = b".".to_vec();
            temp.extend_from_slice(&base);
            temp.extend_from_slice(b".sftpd-upload-");
            temp.extend_from_slice(temp_suffix(self.temp_counter).as_bytes());
            let temp =
                CString::new(temp).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            match Root::open_in(e.dir.as_fd(), &temp, tflags, mode) {
                Ok(fd) => {
                    if let Some((uid, gid)) = owner {
                        // SAFETY: valid descriptor. Best effort (needs privilege for others).
                        unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) };
                        // SAFETY: valid descriptor; restores bits chown may have cleared.
                        unsafe { libc::fchmod(fd.as_raw_fd(), mode) };
                    }
                    let up = Upload {
                        dir: e.dir,
                        temp,
                        target: e.name,
                        excl: flags & libc::O_EXCL != 0,
                    };
                    return Ok(Some((fd, up)));
                }
                Err(err) if err.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EEXIST))
    }

    fn close(&mut self, id: u32, handle: &[u8], out: &mut Vec<u8>) {
        let Some(i) = self.lookup(handle) else {
            // OpenSSH: handle_log_close() of an invalid handle prints a NULL name, and
            // handle_close() fails with ENOENT.
            self.logf(LogLevel::Info, || "closedir \"(null)\"".to_owned());
            self.status(out, id, StatusCode::NoSuchFile);
            return;
        };
        let Some(h) = self.take_handle(i) else {
            self.status(out, id, StatusCode::NoSuchFile);
            return;
        };
        self.log_close(&h, "");
        let r = match h.kind {
            Kind::Dir(_) => Ok(()),
            Kind::File { fd, upload, .. } => {
                let raw = fd.into_raw_fd();
                // SAFETY: we own `raw` (just released from the OwnedFd).
                let closed = if unsafe { libc::close(raw) } == -1 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                };
                match upload {
                    None => closed,
                    Some(up) => match closed.and_then(|()| finish_upload(&up)) {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            remove_temp(&up);
                            Err(e)
                        }
                    },
                }
            }
        };
        self.result(out, id, r);
    }

    fn log_close(&self, h: &Handle, prefix: &str) {
        self.logf(LogLevel::Info, || match h.kind {
            Kind::File { .. } => format!(
                "{prefix}close \"{}\" bytes read {} written {}",
                p(&h.name),
                h.read,
                h.written
            ),
            Kind::Dir(_) => format!("{prefix}closedir \"{}\"", p(&h.name)),
        });
    }

    fn read(&mut self, id: u32, handle: &[u8], offset: u64, len: u32, out: &mut Vec<u8>) {
        let len = len.min(MAX_READ_LEN);
        let Some(h) = self.file(handle) else {
            self.status(out, id, StatusCode::Failure);
            return;
        };
        let Kind::File { fd, .. } = &h.kind else {
            return;
        };
        let raw = fd.as_raw_fd();
        // OpenSSH seeks first (EINVAL for offsets beyond off_t), then reads.
        let Ok(off) = libc::off_t::try_from(offset) else {
            let name = h.name.clone();
            self.logf(LogLevel::Error, || {
                format!("process_read: seek \"{}\": Invalid argument", p100(&name))
            });
            self.status(out, id, StatusCode::BadMessage);
            return;
        };
        let start = out.len();
        encode_data_header(out, id, len);
        if len == 0 {
            // "weird, but not strictly disallowed": an empty DATA.
            return;
        }
        let want = len as usize;
        out.reserve(want);
        let n = loop {
            let spare = out.spare_capacity_mut();
            // SAFETY: `spare` has at least `want` writable bytes (reserved above); pread
            // writes at most `want` bytes into it.
            let r = unsafe { libc::pread(raw, spare.as_mut_ptr().cast(), want, off) };
            if r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break r;
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            out.truncate(start);
            let name = h.name.clone();
            self.logf(LogLevel::Error, || {
                format!("process_read: read \"{}\": {}", p100(&name), strerror(&e))
            });
            self.status(out, id, errno_to_status(&e));
            return;
        }
        if n == 0 {
            out.truncate(start);
            self.status(out, id, StatusCode::Eof);
            return;
        }
        let n = n as usize;
        h.read += n as u64;
        // SAFETY: pread initialised the first `n` (<= want) spare bytes.
        unsafe { out.set_len(start + DATA_HEADER_LEN + n) };
        // Patch the header for the actual length.
        let n32 = n as u32;
        out[start..start + 4].copy_from_slice(&(9 + n32).to_be_bytes());
        out[start + 9..start + 13].copy_from_slice(&n32.to_be_bytes());
    }

    fn write(&mut self, id: u32, handle: &[u8], offset: u64, data: &[u8], out: &mut Vec<u8>) {
        let Some(h) = self.file(handle) else {
            self.status(out, id, StatusCode::Failure);
            return;
        };
        let Kind::File { fd, append, .. } = &h.kind else {
            return;
        };
        let (raw, append) = (fd.as_raw_fd(), *append);
        let r = if append {
            // SAFETY: valid fd and buffer.
            vfs_cvt(|| unsafe { libc::write(raw, data.as_ptr().cast(), data.len()) })
        } else {
            match libc::off_t::try_from(offset) {
                // SAFETY: valid fd and buffer.
                Ok(off) => {
                    vfs_cvt(|| unsafe { libc::pwrite(raw, data.as_ptr().cast(), data.len(), off) })
                }
                Err(_) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
        };
        let code = match r {
            Ok(n) if n as usize == data.len() => {
                h.written += n as u64;
                StatusCode::Ok
            }
            Ok(_) => StatusCode::Failure,
            Err(e) => {
                let name = h.name.clone();
                self.logf(LogLevel::Error, || {
                    format!("process_write: write \"{}\": {}", p100(&name), strerror(&e))
                });
                errno_to_status(&e)
            }
        };
        self.status(out, id, code);
    }

    fn stat(&mut self, id: u32, path: &[u8], lstat: bool, out: &mut Vec<u8>) {
        self.logf(LogLevel::Verbose, || {
            format!("{}stat name \"{}\"", if lstat { "l" } else { "" }, p(path))
        });
        let full = match self.path(path) {
            Ok(p) => p,
            Err(e) => return self.status(out, id, errno_to_status(&e)),
        };
        let r = if lstat {
            self.root.lstat(&full)
        } else {
            self.root.stat(&full)
        };
        match r {
            Ok(st) => Response::Attrs {
                id,
                attrs: attrs_of(&st),
            }
            .encode(out),
            Err(e) => self.status(out, id, errno_to_status(&e)),
        }
    }

    fn fstat(&mut self, id: u32, handle: &[u8], out: &mut Vec<u8>) {
        let r = match self.file(handle) {
            Some(Handle {
                kind: Kind::File { fd, .. },
                ..
            }) => vfs::fstat(fd.as_fd()),
            _ => {
                self.status(out, id, StatusCode::Failure);
                return;
            }
        };
        match r {
            Ok(st) => Response::Attrs {
                id,
                attrs: attrs_of(&st),
            }
            .encode(out),
            Err(e) => self.status(out, id, errno_to_status(&e)),
        }
    }

    fn setstat(&mut self, id: u32, path: &[u8], attrs: &Attrs<'_>, out: &mut Vec<u8>) {
        self.set_path_attrs(id, path, attrs, true, out);
    }

    fn lsetstat(&mut self, id: u32, path: &[u8], attrs: &Attrs<'_>, out: &mut Vec<u8>) {
        if attrs.size.is_some() {
            // OpenSSH: "nonsensical for links".
            self.status(out, id, StatusCode::BadMessage);
            return;
        }
        self.set_path_attrs(id, path, attrs, false, out);
    }

    /// setstat (`follow`) and lsetstat: one log line per attribute, in OpenSSH's order; the
    /// status is the last failure, if any.
    fn set_path_attrs(
        &mut self,
        id: u32,
        path: &[u8],
        attrs: &Attrs<'_>,
        follow: bool,
        out: &mut Vec<u8>,
    ) {
        let full = match self.path(path) {
            Ok(p) => p,
            Err(e) => return self.status(out, id, errno_to_status(&e)),
        };
        let mut code = StatusCode::Ok;
        for c in changes(attrs, follow) {
            self.logf(LogLevel::Info, || change_line(path, c));
            let r = if follow {
                self.root.set_attr(&full, c)
            } else {
                self.root.lset_attr(&full, c)
            };
            if let Err(e) = r {
                code = errno_to_status(&e);
            }
        }
        self.status(out, id, code);
    }

    fn fsetstat(&mut self, id: u32, handle: &[u8], attrs: &Attrs<'_>, out: &mut Vec<u8>) {
        let Some(i) = self.lookup(handle) else {
            self.status(out, id, StatusCode::Failure);
            return;
        };
        let mut code = StatusCode::Ok;
        if let Some(Some(h)) = self.handles.get(i)
            && let Kind::File { fd, .. } = &h.kind
        {
            for c in changes(attrs, true) {
                self.logf(LogLevel::Info, || change_line(&h.name, c));
                if let Err(e) = vfs::change_open_file(fd.as_fd(), c) {
                    code = errno_to_status(&e);
                }
            }
        } else {
            code = StatusCode::Failure;
        }
        self.status(out, id, code);
    }

    fn opendir(&mut self, id: u32, path: &[u8], out: &mut Vec<u8>) {
        self.logf(LogLevel::Info, || format!("opendir \"{}\"", p(path)));
        match self
            .path(path)
            .and_then(|f| DirReader::open(&self.root, &f))
        {
            Err(e) => self.status(out, id, errno_to_status(&e)),
            Ok(d) => {
                let h = Handle {
                    kind: Kind::Dir(d),
                    name: path.to_vec(),
                    read: 0,
                    written: 0,
                };
                match self.new_handle(h) {
                    Ok(i) => Response::Handle {
                        id,
                        handle: &handle_bytes(i),
                    }
                    .encode(out),
                    Err(_) => self.status(out, id, StatusCode::Failure),
                }
            }
        }
    }

    fn readdir(&mut self, id: u32, handle: &[u8], out: &mut Vec<u8>) {
        let Some(i) = self.lookup(handle) else {
            self.status(out, id, StatusCode::Failure);
            return;
        };
        let mut entries: Vec<(CString, libc::stat)> = Vec::new();
        let mut err = None;
        if let Some(Some(Handle {
            kind: Kind::Dir(d), ..
        })) = self.handles.get_mut(i)
        {
            while entries.len() < READDIR_BATCH {
                match d.next_name() {
                    Ok(Some(name)) => {
                        // Entries that cannot be lstat'ed are skipped, as OpenSSH does.
                        if let Ok(st) = vfs::fstatat(d.fd(), &name, libc::AT_SYMLINK_NOFOLLOW) {
                            entries.push((name, st));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
        } else {
            self.status(out, id, StatusCode::Failure);
            return;
        }
        if entries.is_empty() {
            match err {
                Some(e) => self.status(out, id, errno_to_status(&e)),
                None => self.status(out, id, StatusCode::Eof),
            }
            return;
        }
        let t = now();
        let longnames: Vec<Vec<u8>> = entries
            .iter()
            .map(|(name, st)| {
                ls_long_name(
                    name.as_bytes(),
                    st,
                    self.names.user(st.st_uid),
                    self.names.group(st.st_gid),
                    t,
                )
            })
            .collect();
        Response::Name {
            id,
            entries: entries
                .iter()
                .zip(&longnames)
                .map(|((name, st), long)| NameEntry {
                    filename: name.as_bytes(),
                    longname: long,
                    attrs: attrs_of(st),
                })
                .collect(),
        }
        .encode(out);
    }

    fn rename(&mut self, id: u32, old: &[u8], new: &[u8], out: &mut Vec<u8>) {
        self.logf(LogLevel::Info, || {
            format!("rename old \"{}\" new \"{}\"", p(old), p(new))
        });
        let (o, n) = match (self.path(old), self.path(new)) {
            (Ok(o), Ok(n)) => (o, n),
            (Err(e), _) | (_, Err(e)) => return self.status(out, id, errno_to_status(&e)),
        };
        let code = match self.root.lstat(&o) {
            Err(e) => errno_to_status(&e),
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                // Race-free rename of regular files: link + unlink (never replaces `new`).
                match self.root.hardlink(&o, &n) {
                    Err(e) => match e.raw_os_error() {
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV | libc::EPERM) => {
                            if self.root.stat(&n).is_err() {
                                match self.root.rename(&o, &n) {
                                    Ok(()) => StatusCode::Ok,
                                    Err(e) => errno_to_status(&e),
                                }
                            } else {
                                StatusCode::Failure
                            }
                        }
                        _ => errno_to_status(&e),
                    },
                    Ok(()) => match self.root.remove(&o) {
                        Ok(()) => StatusCode::Ok,
                        Err(e) => {
                            let _ = self.root.remove(&n);
                            errno_to_status(&e)
                        }
                    },
                }
            }
            Ok(_) => {
                if self.root.stat(&n).is_err() {
                    match self.root.rename(&o, &n) {
                        Ok(()) => StatusCode::Ok,
                        Err(e) => errno_to_status(&e),
                    }
                } else {
                    StatusCode::Failure
                }
            }
        };
        self.status(out, id, code);
    }

    fn extended(&mut self, id: u32, request: ExtendedRequest<'_>, out: &mut Vec<u8>) {
        match request {
            ExtendedRequest::PosixRename { old, new } => {
                self.logf(LogLevel::Info, || {
                    format!("posix-rename old \"{}\" new \"{}\"", p(old), p(new))
                });
                let r = self
                    .path(old)
                    .and_then(|o| self.root.rename(&o, &self.path(new)?));
                self.result(out, id, r);
            }
            ExtendedRequest::Statvfs { path } => {
                self.logf(LogLevel::Info, || format!("statvfs \"{}\"", p(path)));
                match self.path(path).and_then(|f| self.root.statvfs(&f)) {
                    Ok(st) => statvfs_reply(&st).encode_reply(out, id),
                    Err(e) => self.status(out, id, errno_to_status(&e)),
                }
            }
            ExtendedRequest::Fstatvfs { handle } => {
                let r = match self.file(handle) {
                    Some(Handle {
                        kind: Kind::File { fd, .. },
                        ..
                    }) => vfs::fstatvfs(fd.as_fd()),
                    _ => {
                        self.status(out, id, StatusCode::Failure);
                        return;
                    }
                };
                match r {
                    Ok(st) => statvfs_reply(&st).encode_reply(out, id),
                    Err(e) => self.status(out, id, errno_to_status(&e)),
                }
            }
            ExtendedRequest::Hardlink { old, new } => {
                self.logf(LogLevel::Info, || {
                    format!("hardlink old \"{}\" new \"{}\"", p(old), p(new))
                });
                let r = self
                    .path(old)
                    .and_then(|o| self.root.hardlink(&o, &self.path(new)?));
                self.result(out, id, r);
            }
            ExtendedRequest::Fsync { handle } => {
                let i = self.lookup(handle);
                let name = i
                    .and_then(|i| self.handles.get(i)?.as_ref())
                    .map(|h| p(&h.name).into_owned());
                self.logf(LogLevel::Verbose, || {
                    format!("fsync \"{}\"", name.as_deref().unwrap_or("(null)"))
                });
                let code = match self.file(handle) {
                    Some(Handle {
                        kind: Kind::File { fd, .. },
                        ..
                    }) => {
                        // SAFETY: valid descriptor.
                        if unsafe { libc::fsync(fd.as_raw_fd()) } == -1 {
                            errno_to_status(&io::Error::last_os_error())
                        } else {
                            StatusCode::Ok
                        }
                    }
                    // OpenSSH: no file descriptor behind the handle → NO_SUCH_FILE.
                    _ => StatusCode::NoSuchFile,
                };
                self.status(out, id, code);
            }
            ExtendedRequest::Lsetstat { path, attrs } => self.lsetstat(id, path, &attrs, out),
            ExtendedRequest::Limits => Limits {
                max_packet_length: MAX_PACKET_LEN,
                max_read_length: u64::from(MAX_READ_LEN),
                max_write_length: u64::from(MAX_READ_LEN),
                max_open_handles: u64::from(self.opts.max_handles),
            }
            .encode_reply(out, id),
            ExtendedRequest::ExpandPath { path } => self.expand_path(id, path, out),
            ExtendedRequest::HomeDirectory { username } => {
                // Only the session's own user is known inside the jail: its home is returned
                // (verbatim, as OpenSSH returns pw_dir); any other name gets FAILURE, which
                // is OpenSSH's answer when getpwnam() does not know the name.
                if username == self.info.user.as_bytes() {
                    let home = self.info.home.clone();
                    self.logf(LogLevel::Verbose, || format!("home-directory \"{home}\""));
                    Self::name_reply(out, id, home.as_bytes());
                } else {
                    self.status(out, id, StatusCode::Failure);
                }
            }
            ExtendedRequest::UsersGroupsById { uids, gids } => {
                self.logf(LogLevel::Verbose, || {
                    format!(
                        "users-groups-by-id: {} users, {} groups",
                        uids.len(),
                        gids.len()
                    )
                });
                let users: Vec<String> = uids
                    .iter()
                    .map(|u| self.names.user(u).unwrap_or_default())
                    .collect();
                let groups: Vec<String> = gids
                    .iter()
                    .map(|g| self.names.group(g).unwrap_or_default())
                    .collect();
                let u: Vec<&[u8]> = users.iter().map(|s| s.as_bytes()).collect();
                let g: Vec<&[u8]> = groups.iter().map(|s| s.as_bytes()).collect();
                encode_users_groups_reply(out, id, &u, &g);
            }
            ExtendedRequest::Unknown { name, .. } => {
                let mut end = name.len().min(100);
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                self.logf(LogLevel::Error, || {
                    format!("Unknown extended request \"{}\"", &name[..end])
                });
                self.status(out, id, StatusCode::OpUnsupported);
            }
        }
    }

    /// `expand-path@openssh.com` as OpenSSH 9.2: `~` and `~/x` are relative to the current
    /// directory (which is the start directory of `-d`, "to respect the homedir flag"),
    /// `~user/x` to the home of the session user, relative paths to the current directory.
    fn expand_path(&mut self, id: u32, path: &[u8], out: &mut Vec<u8>) {
        let cwd = self.cwd.clone();
        let cat = |a: &[u8], b: &[u8]| {
            let mut v = a.to_vec();
            v.push(b'/');
            v.extend_from_slice(b);
            v
        };
        let expanded: Vec<u8> = if path.is_empty() {
            b".".to_vec()
        } else if path == b"~" {
            cwd.clone()
        } else if let Some(rest) = path.strip_prefix(b"~/") {
            cat(&cwd, rest)
        } else if let Some(after) = path.strip_prefix(b"~") {
            let (who, rest) = match after.iter().position(|&b| b == b'/') {
                Some(i) => (&after[..i], Some(&after[i + 1..])),
                None => (after, None),
            };
            if who != self.info.user.as_bytes() {
                self.logf(LogLevel::Error, || {
                    format!("tilde_expand: No such user {}", p(who))
                });
                self.status_msg(out, id, StatusCode::NoSuchFile, "no such user");
                return;
            }
            let home = self.info.home.as_bytes();
            match rest {
                Some(r) => {
                    let sep: &[u8] = if home.ends_with(b"/") { b"" } else { b"/" };
                    [home, sep, r].concat()
                }
                None => home.to_vec(),
            }
        } else if path.first() != Some(&b'/') {
            cat(&cwd, path)
        } else {
            path.to_vec()
        };
        self.logf(LogLevel::Verbose, || format!("expand \"{}\"", p(&expanded)));
        match self.root.realpath(&vfs::join(&self.cwd, &expanded)) {
            Ok(r) => Self::name_reply(out, id, &r),
            Err(e) => self.status(out, id, errno_to_status(&e)),
        }
    }

    /// Ends the session: logs `forced close`/`forced closedir` for handles still open,
    /// removes unfinished atomic-upload temporaries, logs `session closed ...`.
    pub fn finish(mut self) {
        let handles = std::mem::take(&mut self.handles);
        for h in handles.into_iter().flatten() {
            self.log_close(&h, "forced ");
            discard(h);
        }
        self.open = 0;
        self.logf(LogLevel::Info, || {
            format!(
                "session closed for local user {} from [{}]",
                self.info.user, self.info.client_addr
            )
        });
    }
}

impl<L: SftpLog, N: Names> Drop for SftpServer<L, N> {
    fn drop(&mut self) {
        // Without finish(): still never leave temporaries behind.
        for h in std::mem::take(&mut self.handles).into_iter().flatten() {
            discard(h);
        }
    }
}

/// Closes a handle without logging; an unfinished upload's temporary is removed.
fn discard(h: Handle) {
    if let Kind::File {
        upload: Some(up), ..
    } = &h.kind
    {
        remove_temp(up);
    }
}

fn remove_temp(up: &Upload) {
    // SAFETY: valid fd and C string.
    unsafe { libc::unlinkat(up.dir.as_raw_fd(), up.temp.as_ptr(), 0) };
}

fn finish_upload(up: &Upload) -> io::Result<()> {
    let flags: libc::c_uint = if up.excl { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: valid fds and C strings; both names are single components in `dir`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            up.dir.as_raw_fd(),
            up.temp.as_ptr(),
            up.dir.as_raw_fd(),
            up.target.as_ptr(),
            flags,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn temp_suffix(counter: u64) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos)
        ^ (u64::from(std::process::id()) << 32)
        ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut s = String::with_capacity(6);
    for _ in 0..6 {
        s.push(char::from(ALPHA[(x % ALPHA.len() as u64) as usize]));
        x /= ALPHA.len() as u64;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(counter);
    }
    s
}

fn vfs_cvt(mut f: impl FnMut() -> isize) -> io::Result<isize> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

// The libc field types differ between targets, so the casts are needed elsewhere.
#[allow(clippy::unnecessary_cast)]
fn statvfs_reply(st: &libc::statvfs) -> Statvfs {
    let mut flag = 0;
    if st.f_flag & libc::ST_RDONLY != 0 {
        flag |= Statvfs::FLAG_RDONLY;
    }
    if st.f_flag & libc::ST_NOSUID != 0 {
        flag |= Statvfs::FLAG_NOSUID;
    }
    Statvfs {
        bsize: st.f_bsize as u64,
        frsize: st.f_frsize as u64,
        blocks: st.f_blocks as u64,
        bfree: st.f_bfree as u64,
        bavail: st.f_bavail as u64,
        files: st.f_files as u64,
        ffree: st.f_ffree as u64,
        favail: st.f_favail as u64,
        fsid: st.f_fsid as u64,
        flag,
        namemax: st.f_namemax as u64,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sftp::{PackedIds, Response};
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::rc::Rc;

    type Lines = Rc<RefCell<Vec<(LogLevel, String)>>>;

    #[derive(Debug, Clone)]
    struct Cap(Lines, LogLevel);

    impl SftpLog for Cap {
        fn enabled(&self, level: LogLevel) -> bool {
            level <= self.1
        }
        fn log(&self, level: LogLevel, message: &str) {
            assert!(self.enabled(level));
            self.0.borrow_mut().push((level, message.to_owned()));
        }
    }

    #[derive(Debug)]
    struct TestNames;

    impl Names for TestNames {
        fn user(&self, uid: u32) -> Option<String> {
            (uid == 0).then(|| "root".to_owned())
        }
        fn group(&self, gid: u32) -> Option<String> {
            (gid == 0).then(|| "wheel".to_owned())
        }
    }

    struct T {
        srv: Option<SftpServer<Cap, TestNames>>,
        lines: Lines,
        dir: tempfile::TempDir,
        out: Vec<u8>,
        id: u32,
    }

    fn opts() -> Options {
        Options {
            args: ServerArgs {
                level: LogLevel::Verbose,
                ..ServerArgs::default()
            },
            atomic_uploads: false,
            max_handles: 16,
        }
    }

    fn setup_with(o: Options, home: &str) -> T {
        let dir = tempfile::tempdir().unwrap();
        let jail = dir.path().join("jail");
        fs::create_dir(&jail).unwrap();
        fs::create_dir(jail.join("upload")).unwrap();
        fs::create_dir(jail.join("images")).unwrap();
        fs::write(jail.join("images/x.bin"), b"0123456789").unwrap();
        fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("/", jail.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", jail.join("upload/evil2")).unwrap();
        let lines: Lines = Rc::default();
        let root = Root::open(&jail).unwrap();
        let info = SessionInfo {
            user: "bob".into(),
            uid: 1000,
            client_addr: "127.0.0.1".into(),
            home: home.into(),
        };
        let srv = SftpServer::new(
            root,
            info,
            o,
            Cap(lines.clone(), LogLevel::Verbose),
            TestNames,
        );
        let mut t = T {
            srv: Some(srv),
            lines,
            dir,
            out: Vec::new(),
            id: 0,
        };
        let init = t.raw_req(&Request::Init {
            version: 3,
            extensions: vec![],
        });
        assert_eq!(init[0], packet_type::VERSION);
        t
    }

    fn setup() -> T {
        setup_with(opts(), "/")
    }

    impl T {
        fn jail(&self) -> std::path::PathBuf {
            self.dir.path().join("jail")
        }

        fn srv(&mut self) -> &mut SftpServer<Cap, TestNames> {
            self.srv.as_mut().unwrap()
        }

        /// Sends one encoded request; returns the response body (type byte + payload).
        fn raw_req(&mut self, r: &Request<'_>) -> Vec<u8> {
            let mut pkt = Vec::new();
            r.encode(&mut pkt);
            self.raw(&pkt[4..]).unwrap()
        }

        fn raw(&mut self, body: &[u8]) -> Result<Vec<u8>, SessionError> {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            self.srv.as_mut().unwrap().handle(body, &mut out)?;
            let f = sftp::split_packet(&out, u32::MAX).unwrap().unwrap();
            assert_eq!(f.consumed, out.len(), "exactly one response packet");
            let body = f.packet.to_vec();
            self.out = out;
            Ok(body)
        }

        fn next_id(&mut self) -> u32 {
            self.id += 1;
            self.id
        }

        fn status(&mut self, r: &Request<'_>) -> StatusCode {
            let b = self.raw_req(r);
            match Response::decode(&b).unwrap() {
                Response::Status { code, id, .. } => {
                    assert_eq!(Some(id), r.id());
                    code
                }
                other => panic!("expected status, got {other:?}"),
            }
        }

        fn handle(&mut self, r: &Request<'_>) -> Vec<u8> {
            let b = self.raw_req(r);
            match Response::decode(&b).unwrap() {
                Response::Handle { handle, .. } => handle.to_vec(),
                other => panic!("expected handle, got {other:?}"),
            }
        }

        fn open(
            &mut self,
            path: &str,
            pflags: u32,
            perm: Option<u32>,
        ) -> Result<Vec<u8>, StatusCode> {
            let id = self.next_id();
            let b = self.raw_req(&Request::Open {
                id,
                filename: path.as_bytes(),
                pflags,
                attrs: Attrs {
                    permissions: perm,
                    ..Attrs::default()
                },
            });
            match Response::decode(&b).unwrap() {
                Response::Handle { handle, .. } => Ok(handle.to_vec()),
                Response::Status { code, .. } => Err(code),
                other => panic!("{other:?}"),
            }
        }

        fn close(&mut self, h: &[u8]) -> StatusCode {
            let id = self.next_id();
            self.status(&Request::Close { id, handle: h })
        }

        fn write(&mut self, h: &[u8], offset: u64, data: &[u8]) -> StatusCode {
            let id = self.next_id();
            self.status(&Request::Write {
                id,
                handle: h,
                offset,
                data,
            })
        }

        fn read(&mut self, h: &[u8], offset: u64, len: u32) -> Result<Vec<u8>, StatusCode> {
            let id = self.next_id();
            let b = self.raw_req(&Request::Read {
                id,
                handle: h,
                offset,
                len,
            });
            match Response::decode(&b).unwrap() {
                Response::Data { data, id: rid } => {
                    assert_eq!(rid, id);
                    Ok(data.to_vec())
                }
                Response::Status { code, .. } => Err(code),
                other => panic!("{other:?}"),
            }
        }

        fn name(&mut self, r: &Request<'_>) -> Result<Vec<u8>, StatusCode> {
            let b = self.raw_req(r);
            match Response::decode(&b).unwrap() {
                Response::Name { entries, .. } => {
                    assert_eq!(entries.len(), 1);
                    assert_eq!(entries[0].filename, entries[0].longname);
                    assert_eq!(entries[0].attrs, Attrs::default());
                    Ok(entries[0].filename.to_vec())
                }
                Response::Status { code, .. } => Err(code),
                other => panic!("{other:?}"),
            }
        }

        fn realpath(&mut self, path: &str) -> Result<String, StatusCode> {
            let id = self.next_id();
            self.name(&Request::Realpath {
                id,
                path: path.as_bytes(),
            })
            .map(|v| String::from_utf8(v).unwrap())
        }

        fn ext(&mut self, request: ExtendedRequest<'_>) -> Vec<u8> {
            let id = self.next_id();
            self.raw_req(&Request::Extended { id, request })
        }

        fn ext_status(&mut self, request: ExtendedRequest<'_>) -> StatusCode {
            let b = self.ext(request);
            match Response::decode(&b).unwrap() {
                Response::Status { code, .. } => code,
                other => panic!("{other:?}"),
            }
        }

        fn stat(&mut self, path: &str) -> Result<Attrs<'static>, StatusCode> {
            let id = self.next_id();
            let b = self.raw_req(&Request::Stat {
                id,
                path: path.as_bytes(),
            });
            match Response::decode(&b).unwrap() {
                Response::Attrs { attrs, .. } => Ok(Attrs {
                    extended: vec![],
                    ..attrs
                }),
                Response::Status { code, .. } => Err(code),
                other => panic!("{other:?}"),
            }
        }

        fn lines(&self) -> Vec<String> {
            self.lines.borrow().iter().map(|(_, l)| l.clone()).collect()
        }

        fn clear_lines(&self) {
            self.lines.borrow_mut().clear();
        }

        fn finish(&mut self) {
            self.srv.take().unwrap().finish();
        }
    }

    const WCT: u32 = open_flags::WRITE | open_flags::CREAT | open_flags::TRUNC;

    #[test]
    fn init_version_and_extensions() {
        let mut t = setup();
        let b = t.raw_req(&Request::Init {
            version: 3,
            extensions: vec![],
        });
        let Response::Version {
            version,
            extensions,
        } = Response::decode(&b).unwrap()
        else {
            panic!()
        };
        assert_eq!(version, 3);
        let names: Vec<(&str, &[u8])> = extensions;
        assert_eq!(
            names,
            [
                ("posix-rename@openssh.com", &b"1"[..]),
                ("statvfs@openssh.com", b"2"),
                ("fstatvfs@openssh.com", b"2"),
                ("hardlink@openssh.com", b"1"),
                ("fsync@openssh.com", b"1"),
                ("lsetstat@openssh.com", b"1"),
                ("limits@openssh.com", b"1"),
                ("expand-path@openssh.com", b"1"),
                ("home-directory", b"1"),
                ("users-groups-by-id@openssh.com", b"1"),
            ]
        );
        assert_eq!(
            t.lines(),
            [
                "session opened for local user bob from [127.0.0.1]",
                "received client version 3",
                "received client version 3"
            ]
        );
    }

    #[test]
    fn put_get_round_trip_with_log_lines() {
        let mut t = setup();
        t.clear_lines();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let h = t.open("/upload/small.bin", WCT, Some(0o644)).unwrap();
        assert_eq!(h.len(), 4);
        for (i, chunk) in data.chunks(65536).enumerate() {
            assert_eq!(t.write(&h, (i * 65536) as u64, chunk), StatusCode::Ok);
        }
        assert_eq!(t.close(&h), StatusCode::Ok);
        assert_eq!(fs::read(t.jail().join("upload/small.bin")).unwrap(), data);
        let mode = fs::metadata(t.jail().join("upload/small.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644 & !current_umask());

        let h = t.open("/upload/small.bin", open_flags::READ, None).unwrap();
        let mut got = Vec::new();
        loop {
            match t.read(&h, got.len() as u64, 1 << 20) {
                Ok(d) => {
                    assert!(d.len() <= MAX_READ_LEN as usize);
                    assert!(!d.is_empty());
                    got.extend_from_slice(&d);
                }
                Err(StatusCode::Eof) => break,
                Err(c) => panic!("{c:?}"),
            }
        }
        assert_eq!(got, data);
        // Short read at the end, empty read, EOF after the end.
        assert_eq!(t.read(&h, 299_990, 100).unwrap().len(), 10);
        assert_eq!(t.read(&h, 0, 0).unwrap(), b"");
        assert_eq!(t.read(&h, 1 << 40, 10), Err(StatusCode::Eof));
        assert_eq!(t.close(&h), StatusCode::Ok);
        assert_eq!(
            t.lines(),
            [
                "open \"/upload/small.bin\" flags WRITE,CREATE,TRUNCATE mode 0644",
                "close \"/upload/small.bin\" bytes read 0 written 300000",
                "open \"/upload/small.bin\" flags READ mode 0666",
                "close \"/upload/small.bin\" bytes read 300010 written 0",
            ]
        );
    }

    fn current_umask() -> u32 {
        // SAFETY: umask is always safe; restored immediately.
        let m = unsafe { libc::umask(0o022) };
        // SAFETY: as above.
        unsafe { libc::umask(m) };
        m
    }

    #[test]
    fn read_appends_into_spare_capacity_without_reallocating() {
        let mut t = setup();
        let h = t.open("/images/x.bin", open_flags::READ, None).unwrap();
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(b"prefix");
        let ptr = out.as_ptr();
        let mut pkt = Vec::new();
        Request::Read {
            id: 9,
            handle: &h,
            offset: 2,
            len: 4,
        }
        .encode(&mut pkt);
        t.srv().handle(&pkt[4..], &mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr);
        let mut want = b"prefix".to_vec();
        Response::Data {
            id: 9,
            data: b"2345",
        }
        .encode(&mut want);
        assert_eq!(out, want);
    }

    #[test]
    fn append_and_offsets() {
        let mut t = setup();
        fs::write(t.jail().join("upload/a"), b"abc").unwrap();
        let h = t
            .open("/upload/a", open_flags::WRITE | open_flags::APPEND, None)
            .unwrap();
        assert_eq!(t.write(&h, 0, b"def"), StatusCode::Ok);
        t.close(&h);
        assert_eq!(fs::read(t.jail().join("upload/a")).unwrap(), b"abcdef");
        let h = t.open("/upload/a", open_flags::WRITE, None).unwrap();
        assert_eq!(t.write(&h, 1, b"X"), StatusCode::Ok);
        t.close(&h);
        assert_eq!(fs::read(t.jail().join("upload/a")).unwrap(), b"aXcdef");
        // EXCL on an existing file.
        assert_eq!(
            t.open("/upload/a", WCT | open_flags::EXCL, None),
            Err(StatusCode::Failure)
        );
    }

    #[test]
    fn readdir_longnames() {
        let mut t = setup();
        let j = t.jail();
        fs::create_dir(j.join("upload/d")).unwrap();
        fs::write(j.join("upload/d/f"), vec![0u8; 1234]).unwrap();
        fs::set_permissions(j.join("upload/d/f"), fs::Permissions::from_mode(0o4751)).unwrap();
        // mtime: a fixed old date (not within 6 months) -> year format.
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Setstat {
                id,
                path: b"/upload/d/f",
                attrs: Attrs {
                    ac_mod_time: Some((1_000_000_000, 1_000_000_000)),
                    ..Attrs::default()
                },
            }),
            StatusCode::Ok
        );
        t.clear_lines();
        let id = t.next_id();
        let h = t.handle(&Request::Opendir {
            id,
            path: b"/upload/d/",
        });
        let id = t.next_id();
        let b = t.raw_req(&Request::Readdir { id, handle: &h });
        let Response::Name { entries, .. } = Response::decode(&b).unwrap() else {
            panic!()
        };
        let mut names: Vec<&[u8]> = entries.iter().map(|e| e.filename).collect();
        names.sort();
        assert_eq!(names, [&b"."[..], b"..", b"f"]);
        let f = entries.iter().find(|e| e.filename == b"f").unwrap();
        let st = vfs::fstatat(t.srv().root.fd(), c"upload/d/f", libc::AT_SYMLINK_NOFOLLOW).unwrap();
        let user = if st.st_uid == 0 {
            "root".to_owned()
        } else {
            st.st_uid.to_string()
        };
        let group = if st.st_gid == 0 {
            "wheel".to_owned()
        } else {
            st.st_gid.to_string()
        };
        let date = strftime_local(c"%b %e  %Y", 1_000_000_000);
        let expected = format!("-rwsr-x--x    1 {user:<8} {group:<8}     1234 {date} f");
        assert_eq!(String::from_utf8_lossy(f.longname), expected);
        assert_eq!(f.attrs.size, Some(1234));
        assert_eq!(f.attrs.permissions, Some(0o104751));
        let dot = entries.iter().find(|e| e.filename == b".").unwrap();
        assert!(dot.longname.starts_with(b"drwx"), "{:?}", p(dot.longname));
        // A recent mtime uses the time format.
        let now = now();
        let recent = ls_long_name(b"n", &st_with(now - 60), None, None, now);
        let hm = strftime_local(c"%b %e %H:%M", now - 60);
        assert!(
            String::from_utf8(recent)
                .unwrap()
                .ends_with(&format!(" {hm} n"))
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Readdir { id, handle: &h }),
            StatusCode::Eof
        );
        assert_eq!(t.close(&h), StatusCode::Ok);
        assert_eq!(
            t.lines(),
            ["opendir \"/upload/d/\"", "closedir \"/upload/d/\""]
        );
    }

    fn st_with(mtime: i64) -> libc::stat {
        // SAFETY: an all-zero `struct stat` is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | 0o644;
        st.st_nlink = 1;
        st.st_uid = 12345;
        st.st_gid = 0;
        st.st_size = 5;
        st.st_mtime = mtime as libc::time_t;
        st
    }

    #[test]
    fn longname_padding_and_strmode() {
        let st = st_with(0);
        let l = ls_long_name(
            b"name",
            &st,
            Some("averylongusername".into()),
            None,
            10_000_000_000,
        );
        let date = strftime_local(c"%b %e  %Y", 0);
        assert_eq!(
            String::from_utf8(l).unwrap(),
            format!("-rw-r--r--    1 averylongusername 0               5 {date} name")
        );
        assert_eq!(&strmode(libc::S_IFDIR | 0o1777), b"drwxrwxrwt ");
        assert_eq!(&strmode(libc::S_IFLNK | 0o6644), b"lrwSr-Sr-- ");
        assert_eq!(&strmode(libc::S_IFIFO | 0o1000), b"p--------T ");
    }

    #[test]
    fn readdir_batches_of_100() {
        let mut t = setup();
        fs::create_dir(t.jail().join("upload/many")).unwrap();
        for i in 0..250 {
            fs::write(t.jail().join(format!("upload/many/f{i}")), b"").unwrap();
        }
        let id = t.next_id();
        let h = t.handle(&Request::Opendir {
            id,
            path: b"upload/many",
        });
        let mut total = 0;
        let mut sizes = Vec::new();
        loop {
            let id = t.next_id();
            let b = t.raw_req(&Request::Readdir { id, handle: &h });
            match Response::decode(&b).unwrap() {
                Response::Name { entries, .. } => {
                    sizes.push(entries.len());
                    total += entries.len();
                }
                Response::Status { code, .. } => {
                    assert_eq!(code, StatusCode::Eof);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, 252);
        assert_eq!(sizes, [100, 100, 52]);
    }

    #[test]
    fn realpath_and_expand_path() {
        let mut t = setup_with(
            Options {
                args: ServerArgs {
                    start_dir: Some("%d/upload".into()),
                    ..ServerArgs::default()
                },
                ..opts()
            },
            "/",
        );
        assert_eq!(t.srv().cwd(), b"/upload");
        assert_eq!(t.realpath("").unwrap(), "/upload");
        assert_eq!(t.realpath(".").unwrap(), "/upload");
        assert_eq!(t.realpath("..").unwrap(), "/");
        assert_eq!(t.realpath("../../../..").unwrap(), "/");
        assert_eq!(t.realpath("/evil/etc").unwrap(), "/etc");
        assert_eq!(t.realpath("evil2").unwrap(), "/");
        assert_eq!(t.realpath("newfile").unwrap(), "/upload/newfile");
        assert_eq!(t.realpath("/nodir/newfile"), Err(StatusCode::NoSuchFile));
        let lines = t.lines();
        assert!(lines.contains(&"realpath \".\"".to_owned()), "{lines:?}");
        let ex = |t: &mut T, p: &str| {
            let id = t.next_id();
            t.name(&Request::Extended {
                id,
                request: ExtendedRequest::ExpandPath { path: p.as_bytes() },
            })
            .map(|v| String::from_utf8(v).unwrap())
        };
        t.clear_lines();
        assert_eq!(ex(&mut t, "~").unwrap(), "/upload");
        assert_eq!(ex(&mut t, "~/x").unwrap(), "/upload/x");
        assert_eq!(ex(&mut t, "../images").unwrap(), "/images");
        assert_eq!(ex(&mut t, "/images/../..").unwrap(), "/");
        assert_eq!(ex(&mut t, "~bob/images").unwrap(), "/images");
        assert_eq!(ex(&mut t, "~alice/x"), Err(StatusCode::NoSuchFile));
        assert_eq!(
            t.lines(),
            [
                "expand \"/upload\"",
                "expand \"/upload/x\"",
                "expand \"/upload/../images\"",
                "expand \"/images/../..\"",
                "expand \"/images\"",
                "tilde_expand: No such user alice",
                "sent status No such file",
            ]
        );
    }

    #[test]
    fn start_dir_failure_logged_like_openssh() {
        let t = setup_with(
            Options {
                args: ServerArgs {
                    start_dir: Some("/nope/%u".into()),
                    ..ServerArgs::default()
                },
                ..opts()
            },
            "/upload",
        );
        assert_eq!(t.srv.as_ref().unwrap().cwd(), b"/upload");
        assert_eq!(
            t.lines()[..2],
            [
                "session opened for local user bob from [127.0.0.1]",
                "chdir to \"/nope/bob\" failed: No such file or directory",
            ]
        );
    }

    #[test]
    fn escape_attempts_fail_or_stay_inside() {
        let mut t = setup();
        let outside = t.dir.path().to_path_buf();
        for p in [
            "/etc/passwd",
            "../secret",
            "../../../../secret",
            "/../secret",
            "/evil/secret",
            "upload/evil2/secret",
            "/evil/../../secret",
        ] {
            assert_eq!(
                t.open(p, open_flags::READ, None),
                Err(StatusCode::NoSuchFile),
                "{p}"
            );
            assert_eq!(t.stat(p), Err(StatusCode::NoSuchFile), "{p}");
        }
        // Writes through escaping paths land inside the jail.
        let h = t.open("/evil/../../planted", WCT, None).unwrap();
        t.close(&h);
        assert!(t.jail().join("planted").exists());
        assert!(!outside.join("planted").exists());
        let h = t.open("upload/evil2/planted2", WCT, None).unwrap();
        t.close(&h);
        assert!(t.jail().join("planted2").exists());
        // rename / hardlink / symlink with outside targets.
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Rename {
                id,
                old: b"/planted",
                new: b"../../../renamed",
            }),
            StatusCode::Ok
        );
        assert!(t.jail().join("renamed").exists());
        assert!(!outside.join("renamed").exists());
        assert_eq!(
            t.ext_status(ExtendedRequest::Hardlink {
                old: b"/renamed",
                new: b"/evil/../hl",
            }),
            StatusCode::Ok
        );
        assert!(t.jail().join("hl").exists());
        assert_eq!(
            t.ext_status(ExtendedRequest::Hardlink {
                old: b"/../secret",
                new: b"/stolen",
            }),
            StatusCode::NoSuchFile
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Symlink {
                id,
                target: b"/etc/passwd",
                link: b"/upload/pw",
            }),
            StatusCode::Ok
        );
        assert_eq!(
            fs::read_link(t.jail().join("upload/pw"))
                .unwrap()
                .as_os_str(),
            "/etc/passwd"
        );
        assert_eq!(
            t.open("/upload/pw", open_flags::READ, None),
            Err(StatusCode::NoSuchFile)
        );
        let id = t.next_id();
        assert_eq!(
            t.name(&Request::Readlink {
                id,
                path: b"/upload/pw"
            })
            .unwrap(),
            b"/etc/passwd"
        );
        // A symlink to the secret's real absolute path resolves inside the jail.
        let abs = outside.join("secret");
        std::os::unix::fs::symlink(&abs, t.jail().join("abs")).unwrap();
        assert_eq!(
            t.open("/abs", open_flags::READ, None),
            Err(StatusCode::NoSuchFile)
        );
        // setstat through an escaping symlink does not touch the outside.
        let id = t.next_id();
        t.status(&Request::Setstat {
            id,
            path: b"/upload/evil2/../secret",
            attrs: Attrs {
                size: Some(0),
                ..Attrs::default()
            },
        });
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"outside");
        // mkdir/rmdir/remove of .. never act outside.
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Rmdir { id, path: b"/.." }),
            StatusCode::Failure
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Remove {
                id,
                filename: b"/.."
            }),
            StatusCode::Failure
        );
        assert!(outside.join("jail").exists());
        assert_eq!(t.realpath("/evil").unwrap(), "/");
    }

    #[test]
    fn namespace_ops_and_log_lines() {
        let mut t = setup();
        t.clear_lines();
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Mkdir {
                id,
                path: b"/upload/newdir",
                attrs: Attrs::default(),
            }),
            StatusCode::Ok
        );
        let id = t.next_id();
        assert_eq!(t.stat("/upload/small.bin"), Err(StatusCode::NoSuchFile));
        let h = t.open("/upload/small.bin", WCT, Some(0o644)).unwrap();
        t.write(&h, 0, b"x");
        t.close(&h);
        let _ = id;
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Setstat {
                id,
                path: b"/upload/small.bin",
                attrs: Attrs {
                    permissions: Some(0o600),
                    ..Attrs::default()
                },
            }),
            StatusCode::Ok
        );
        assert_eq!(
            t.ext_status(ExtendedRequest::PosixRename {
                old: b"/upload/small.bin",
                new: b"/upload/newdir/renamed.bin",
            }),
            StatusCode::Ok
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Remove {
                id,
                filename: b"/upload/newdir/renamed.bin",
            }),
            StatusCode::Ok
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Rmdir {
                id,
                path: b"/upload/newdir",
            }),
            StatusCode::Ok
        );
        let b = t.ext(ExtendedRequest::Statvfs { path: b"/upload" });
        let Response::ExtendedReply { data, .. } = Response::decode(&b).unwrap() else {
            panic!()
        };
        assert!(Statvfs::decode(data).unwrap().bsize > 0);
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Symlink {
                id,
                target: b"/images/x.bin",
                link: b"/upload/link70",
            }),
            StatusCode::Ok
        );
        let id = t.next_id();
        t.raw_req(&Request::Lstat {
            id,
            path: b"/upload/link70",
        });
        let id = t.next_id();
        t.status(&Request::Rename {
            id,
            old: b"/upload/link70",
            new: b"/images/x.bin",
        });
        assert_eq!(
            t.lines(),
            [
                "mkdir name \"/upload/newdir\" mode 0777",
                "stat name \"/upload/small.bin\"",
                "sent status No such file",
                "open \"/upload/small.bin\" flags WRITE,CREATE,TRUNCATE mode 0644",
                "close \"/upload/small.bin\" bytes read 0 written 1",
                "set \"/upload/small.bin\" mode 0600",
                "posix-rename old \"/upload/small.bin\" new \"/upload/newdir/renamed.bin\"",
                "remove name \"/upload/newdir/renamed.bin\"",
                "rmdir name \"/upload/newdir\"",
                "statvfs \"/upload\"",
                "symlink old \"/images/x.bin\" new \"/upload/link70\"",
                "lstat name \"/upload/link70\"",
                "rename old \"/upload/link70\" new \"/images/x.bin\"",
                "sent status Failure",
            ]
        );
    }

    #[test]
    fn rename_never_replaces_but_posix_rename_does() {
        let mut t = setup();
        let j = t.jail();
        fs::write(j.join("upload/a"), b"A").unwrap();
        fs::write(j.join("upload/b"), b"B").unwrap();
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Rename {
                id,
                old: b"/upload/a",
                new: b"/upload/b"
            }),
            StatusCode::Failure
        );
        assert_eq!(fs::read(j.join("upload/b")).unwrap(), b"B");
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Rename {
                id,
                old: b"/upload/a",
                new: b"/upload/c"
            }),
            StatusCode::Ok
        );
        assert!(!j.join("upload/a").exists());
        assert_eq!(
            t.ext_status(ExtendedRequest::PosixRename {
                old: b"/upload/c",
                new: b"/upload/b"
            }),
            StatusCode::Ok
        );
        assert_eq!(fs::read(j.join("upload/b")).unwrap(), b"A");
    }

    #[test]
    fn setstat_lines_and_order() {
        let mut t = setup();
        fs::write(t.jail().join("upload/f"), b"hello world").unwrap();
        t.clear_lines();
        let id = t.next_id();
        let attrs = Attrs {
            size: Some(5),
            uid_gid: Some((0, 0)),
            permissions: Some(0o100640),
            ac_mod_time: Some((1_700_000_000, 1_700_000_000)),
            extended: vec![],
        };
        // chown to 0:0 needs privilege; the status is whatever the last step gave.
        let _ = t.status(&Request::Setstat {
            id,
            path: b"upload/f",
            attrs: attrs.clone(),
        });
        let when = strftime_local(c"%Y%m%d-%H:%M:%S", 1_700_000_000);
        let l = t.lines();
        assert_eq!(
            l[..4],
            [
                "set \"upload/f\" size 5".to_owned(),
                "set \"upload/f\" mode 100640".to_owned(),
                format!("set \"upload/f\" modtime {when}"),
                "set \"upload/f\" owner 0 group 0".to_owned(),
            ]
        );
        assert_eq!(fs::read(t.jail().join("upload/f")).unwrap(), b"hello");
        let a = t.stat("upload/f").unwrap();
        assert_eq!(a.permissions.unwrap() & 0o7777, 0o640);
        // (atime may have moved: the test read the file above)
        assert_eq!(a.ac_mod_time.map(|t| t.1), Some(1_700_000_000));
        // fsetstat uses the open-time name.
        let h = t.open("upload/f", open_flags::WRITE, None).unwrap();
        t.clear_lines();
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Fsetstat {
                id,
                handle: &h,
                attrs: Attrs {
                    size: Some(1),
                    ..Attrs::default()
                },
            }),
            StatusCode::Ok
        );
        assert_eq!(t.lines(), ["set \"upload/f\" size 1"]);
        // lsetstat: size is nonsensical; chmod on a symlink unsupported on Linux.
        assert_eq!(
            t.ext_status(ExtendedRequest::Lsetstat {
                path: b"/evil",
                attrs: Attrs {
                    size: Some(1),
                    ..Attrs::default()
                },
            }),
            StatusCode::BadMessage
        );
        assert_eq!(
            t.ext_status(ExtendedRequest::Lsetstat {
                path: b"/evil",
                attrs: Attrs {
                    ac_mod_time: Some((7, 8)),
                    ..Attrs::default()
                },
            }),
            StatusCode::Ok
        );
        let id = t.next_id();
        let b = t.raw_req(&Request::Lstat { id, path: b"/evil" });
        let Response::Attrs { attrs, .. } = Response::decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(attrs.ac_mod_time, Some((7, 8)));
        assert_eq!(attrs.permissions.unwrap() & libc::S_IFMT, libc::S_IFLNK);
    }

    #[test]
    fn read_only_refuses_writes() {
        let mut t = setup_with(
            Options {
                args: ServerArgs {
                    read_only: true,
                    ..ServerArgs::default()
                },
                ..opts()
            },
            "/",
        );
        t.clear_lines();
        assert_eq!(
            t.open("/upload/x", WCT, None),
            Err(StatusCode::PermissionDenied)
        );
        assert_eq!(
            t.open("/images/x.bin", open_flags::READ | open_flags::TRUNC, None),
            Err(StatusCode::PermissionDenied)
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Mkdir {
                id,
                path: b"/upload/d",
                attrs: Attrs::default()
            }),
            StatusCode::PermissionDenied
        );
        assert_eq!(
            t.ext_status(ExtendedRequest::PosixRename {
                old: b"/images/x.bin",
                new: b"/y"
            }),
            StatusCode::PermissionDenied
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Remove {
                id,
                filename: b"/images/x.bin"
            }),
            StatusCode::PermissionDenied
        );
        assert!(t.jail().join("images/x.bin").exists());
        assert!(!t.jail().join("upload/x").exists());
        // Reading still works.
        let h = t.open("/images/x.bin", open_flags::READ, None).unwrap();
        assert_eq!(t.read(&h, 0, 100).unwrap(), b"0123456789");
        assert_eq!(
            t.lines()[..9],
            [
                "open \"/upload/x\" flags WRITE,CREATE,TRUNCATE mode 0666",
                "Refusing open request in read-only mode",
                "sent status Permission denied",
                "open \"/images/x.bin\" flags READ,TRUNCATE mode 0666",
                "Refusing open request in read-only mode",
                "sent status Permission denied",
                "Refusing mkdir request in read-only mode",
                "sent status Permission denied",
                "Refusing posix-rename request in read-only mode",
            ]
        );
    }

    #[test]
    fn deny_and_allow_lists() {
        let mut t = setup_with(
            Options {
                args: ServerArgs {
                    deny: vec!["remove".into(), "statvfs".into()],
                    allow: Some(vec![
                        "open".into(),
                        "close".into(),
                        "read".into(),
                        "remove".into(),
                        "realpath".into(),
                    ]),
                    ..ServerArgs::default()
                },
                ..opts()
            },
            "/",
        );
        t.clear_lines();
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Remove {
                id,
                filename: b"/images/x.bin"
            }),
            StatusCode::PermissionDenied
        );
        assert_eq!(
            t.ext_status(ExtendedRequest::Statvfs { path: b"/" }),
            StatusCode::PermissionDenied
        );
        assert_eq!(t.stat("/images/x.bin"), Err(StatusCode::PermissionDenied));
        assert_eq!(t.realpath("/images").unwrap(), "/images");
        assert_eq!(
            t.lines(),
            [
                "Refusing denylisted remove request",
                "sent status Permission denied",
                "Refusing denylisted statvfs request",
                "sent status Permission denied",
                "Refusing non-allowlisted stat request",
                "sent status Permission denied",
                "realpath \"/images\"",
            ]
        );
        // A refused request is answered even if its body would not parse (as OpenSSH,
        // which refuses before parsing).
        let body = [packet_type::STAT, 0, 0, 0, 7, 0, 0];
        let r = t.raw(&body).unwrap();
        assert!(matches!(
            Response::decode(&r).unwrap(),
            Response::Status {
                id: 7,
                code: StatusCode::PermissionDenied,
                ..
            }
        ));
        assert!(t.exists_allowed());
    }

    impl T {
        fn exists_allowed(&self) -> bool {
            self.jail().join("images/x.bin").exists()
        }
    }

    #[test]
    fn atomic_upload_never_exposes_partial_file() {
        let mut t = setup_with(
            Options {
                atomic_uploads: true,
                ..opts()
            },
            "/",
        );
        let j = t.jail();
        fs::write(j.join("upload/f.bin"), b"old contents").unwrap();
        fs::set_permissions(j.join("upload/f.bin"), fs::Permissions::from_mode(0o640)).unwrap();
        t.clear_lines();
        let h = t.open("/upload/f.bin", WCT, Some(0o600)).unwrap();
        assert_eq!(t.write(&h, 0, b"new"), StatusCode::Ok);
        // Not visible yet: the old file is intact, a hidden temporary exists.
        assert_eq!(fs::read(j.join("upload/f.bin")).unwrap(), b"old contents");
        let temps: Vec<String> = fs::read_dir(j.join("upload"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".f.bin.sftpd-upload-"))
            .collect();
        assert_eq!(temps.len(), 1, "{temps:?}");
        // fstat sees the temporary.
        let id = t.next_id();
        let b = t.raw_req(&Request::Fstat { id, handle: &h });
        let Response::Attrs { attrs, .. } = Response::decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(attrs.size, Some(3));
        assert_eq!(t.close(&h), StatusCode::Ok);
        assert_eq!(fs::read(j.join("upload/f.bin")).unwrap(), b"new");
        // Mode of the replaced file kept.
        let mode = fs::metadata(j.join("upload/f.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert!(!j.join("upload").join(&temps[0]).exists());
        assert_eq!(
            t.lines(),
            [
                "open \"/upload/f.bin\" flags WRITE,CREATE,TRUNCATE mode 0600",
                "close \"/upload/f.bin\" bytes read 0 written 3",
            ]
        );
        // EXCL against the final name.
        assert_eq!(
            t.open("/upload/f.bin", WCT | open_flags::EXCL, None),
            Err(StatusCode::Failure)
        );
        // Dropped connection: final name never appears, temporary removed by finish().
        let h = t.open("/upload/g.bin", WCT, None).unwrap();
        t.write(&h, 0, b"partial");
        assert!(!j.join("upload/g.bin").exists());
        let opendir_id = t.next_id();
        let dh = t.handle(&Request::Opendir {
            id: opendir_id,
            path: b"/images",
        });
        let _ = dh;
        t.clear_lines();
        t.finish();
        assert!(!j.join("upload/g.bin").exists());
        let left: Vec<_> = fs::read_dir(j.join("upload"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("sftpd-upload"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            t.lines(),
            [
                "forced close \"/upload/g.bin\" bytes read 0 written 7",
                "forced closedir \"/images\"",
                "session closed for local user bob from [127.0.0.1]",
            ]
        );
    }

    #[test]
    fn atomic_excl_upload_does_not_replace_a_file_created_meanwhile() {
        let mut t = setup_with(
            Options {
                atomic_uploads: true,
                ..opts()
            },
            "/",
        );
        let j = t.jail();
        let h = t
            .open("/upload/e.bin", WCT | open_flags::EXCL, None)
            .unwrap();
        assert_eq!(t.write(&h, 0, b"mine"), StatusCode::Ok);
        fs::write(j.join("upload/e.bin"), b"theirs").unwrap();
        assert_eq!(t.close(&h), StatusCode::Failure);
        assert_eq!(fs::read(j.join("upload/e.bin")).unwrap(), b"theirs");
        let left = fs::read_dir(j.join("upload"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("sftpd-upload")
            })
            .count();
        assert_eq!(left, 0);
        // APPEND opens and non-truncating opens of existing files write in place.
        let h = t
            .open("/upload/e.bin", open_flags::WRITE | open_flags::CREAT, None)
            .unwrap();
        assert_eq!(t.write(&h, 0, b"T"), StatusCode::Ok);
        assert_eq!(fs::read(j.join("upload/e.bin")).unwrap(), b"Theirs");
        t.close(&h);
    }

    #[test]
    fn empty_paths_and_debug_status_lines() {
        let mut t = setup();
        t.srv().log.1 = LogLevel::Debug1;
        t.clear_lines();
        assert_eq!(t.stat(""), Err(StatusCode::NoSuchFile));
        assert_eq!(
            t.open("", open_flags::READ, None),
            Err(StatusCode::NoSuchFile)
        );
        assert_eq!(t.realpath("").unwrap(), "/");
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Mkdir {
                id,
                path: b"/upload/m",
                attrs: Attrs {
                    permissions: Some(0o40755),
                    ..Attrs::default()
                },
            }),
            StatusCode::Ok
        );
        assert_eq!(
            t.lines(),
            [
                "stat name \"\"",
                "sent status No such file",
                "open \"\" flags READ mode 0666",
                "sent status No such file",
                "realpath \".\"",
                "mkdir name \"/upload/m\" mode 0755",
                "sent status Success",
            ]
        );
    }

    #[test]
    fn handles_limits_and_invalid_handles() {
        let mut t = setup_with(
            Options {
                max_handles: 2,
                ..opts()
            },
            "/",
        );
        let a = t.open("/images/x.bin", open_flags::READ, None).unwrap();
        let _b = t.open("/images/x.bin", open_flags::READ, None).unwrap();
        assert_eq!(
            t.open("/images/x.bin", open_flags::READ, None),
            Err(StatusCode::Failure)
        );
        assert_eq!(t.close(&a), StatusCode::Ok);
        let c = t.open("/images/x.bin", open_flags::READ, None).unwrap();
        assert_eq!(c, a, "slot reused");
        assert_eq!(t.read(b"zz", 0, 1), Err(StatusCode::Failure));
        assert_eq!(t.read(&[0, 0, 0, 9], 0, 1), Err(StatusCode::Failure));
        assert_eq!(t.write(&[0, 0, 0, 9], 0, b"x"), StatusCode::Failure);
        t.clear_lines();
        assert_eq!(t.close(&[1, 2, 3, 4]), StatusCode::NoSuchFile);
        assert_eq!(
            t.lines(),
            ["closedir \"(null)\"", "sent status No such file"]
        );
        let b = t.ext(ExtendedRequest::Limits);
        let Response::ExtendedReply { data, .. } = Response::decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(
            Limits::decode(data).unwrap(),
            Limits {
                max_packet_length: 262_144,
                max_read_length: 261_120,
                max_write_length: 261_120,
                max_open_handles: 2,
            }
        );
        // Directory handle used as a file handle, file handle as a directory handle.
        assert_eq!(t.close(&c), StatusCode::Ok);
        let id = t.next_id();
        let d = t.handle(&Request::Opendir { id, path: b"/" });
        assert_eq!(t.read(&d, 0, 1), Err(StatusCode::Failure));
        assert_eq!(t.write(&d, 0, b"x"), StatusCode::Failure);
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Readdir { id, handle: &_b }),
            StatusCode::Failure
        );
        let id = t.next_id();
        assert_eq!(
            t.status(&Request::Fstat { id, handle: &d }),
            StatusCode::Failure
        );
    }

    #[test]
    fn extensions_home_users_groups_fsync() {
        let mut t = setup_with(opts(), "/upload");
        t.clear_lines();
        let id = t.next_id();
        assert_eq!(
            t.name(&Request::Extended {
                id,
                request: ExtendedRequest::HomeDirectory { username: b"bob" },
            })
            .unwrap(),
            b"/upload"
        );
        assert_eq!(
            t.ext_status(ExtendedRequest::HomeDirectory { username: b"root" }),
            StatusCode::Failure
        );
        let uids = PackedIds::pack(&[0, 4242]);
        let gids = PackedIds::pack(&[0]);
        let b = t.ext(ExtendedRequest::UsersGroupsById {
            uids: PackedIds::new(&uids).unwrap(),
            gids: PackedIds::new(&gids).unwrap(),
        });
        let Response::ExtendedReply { data, .. } = Response::decode(&b).unwrap() else {
            panic!()
        };
        let (u, g) = sftp::decode_users_groups_reply(data).unwrap();
        assert_eq!(u, [&b"root"[..], b""]);
        assert_eq!(g, [&b"wheel"[..]]);
        let h = t.open("/upload/s", WCT, None).unwrap();
        assert_eq!(
            t.ext_status(ExtendedRequest::Fsync { handle: &h }),
            StatusCode::Ok
        );
        assert_eq!(
            t.ext_status(ExtendedRequest::Fsync { handle: b"nope" }),
            StatusCode::NoSuchFile
        );
        let b = t.ext(ExtendedRequest::Fstatvfs { handle: &h });
        assert!(matches!(
            Response::decode(&b).unwrap(),
            Response::ExtendedReply { .. }
        ));
        assert_eq!(
            t.ext_status(ExtendedRequest::Unknown {
                name: "copy-data",
                data: b""
            }),
            StatusCode::OpUnsupported
        );
        assert_eq!(
            t.lines(),
            [
                "home-directory \"/upload\"",
                "sent status Failure",
                "users-groups-by-id: 2 users, 1 groups",
                "open \"/upload/s\" flags WRITE,CREATE,TRUNCATE mode 0666",
                "fsync \"/upload/s\"",
                "fsync \"(null)\"",
                "sent status No such file",
                "Unknown extended request \"copy-data\"",
                "sent status Operation unsupported",
            ]
        );
    }

    #[test]
    fn unknown_and_malformed_packets() {
        let mut t = setup();
        t.clear_lines();
        // Unknown type with an id: ERROR line + OP_UNSUPPORTED.
        let r = t.raw(&[99, 0, 0, 0, 5]).unwrap();
        assert!(matches!(
            Response::decode(&r).unwrap(),
            Response::Status {
                id: 5,
                code: StatusCode::OpUnsupported,
                ..
            }
        ));
        assert_eq!(
            t.lines(),
            ["Unknown message 99", "sent status Operation unsupported"]
        );
        assert!(matches!(t.raw(&[]), Err(SessionError::Malformed(_))));
        // Trailing bytes after a complete request are ignored, as OpenSSH does.
        let r = t
            .raw(&[packet_type::STAT, 0, 0, 0, 3, 0, 0, 0, 1, b'/', 0xde, 0xad])
            .unwrap();
        assert!(matches!(
            Response::decode(&r).unwrap(),
            Response::Attrs { id: 3, .. }
        ));
        // INIT: only the version is read.
        let r = t.raw(&[packet_type::INIT, 0, 0, 0, 3, 0xff]).unwrap();
        assert!(matches!(
            Response::decode(&r).unwrap(),
            Response::Version { version: 3, .. }
        ));
        assert!(matches!(
            t.raw(&[packet_type::INIT, 0, 0]),
            Err(SessionError::Malformed(_))
        ));
        assert!(matches!(t.raw(&[99]), Err(SessionError::Malformed(_))));
        assert!(matches!(
            t.raw(&[packet_type::STAT, 0, 0, 0, 1, 0, 0, 0, 9, b'x']),
            Err(SessionError::Malformed(_))
        ));
        // Embedded NUL in a path: OpenSSH's cstring parse fails.
        assert!(matches!(
            t.raw(&[packet_type::STAT, 0, 0, 0, 1, 0, 0, 0, 2, b'x', 0]),
            Err(SessionError::EmbeddedNul)
        ));
        // Before INIT.
        let lines: Lines = Rc::default();
        let root = Root::open(&t.jail()).unwrap();
        let mut s = SftpServer::new(
            root,
            SessionInfo {
                user: "u".into(),
                uid: 1,
                client_addr: "UNKNOWN".into(),
                home: "/".into(),
            },
            opts(),
            Cap(lines, LogLevel::Verbose),
            TestNames,
        );
        let mut out = Vec::new();
        let mut pkt = Vec::new();
        Request::Stat { id: 1, path: b"/" }.encode(&mut pkt);
        assert!(matches!(
            s.handle(&pkt[4..], &mut out),
            Err(SessionError::RequestBeforeInit(17))
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn info_level_hides_verbose_lines() {
        let mut t = setup();
        t.srv().log.1 = LogLevel::Info;
        t.clear_lines();
        assert_eq!(t.stat("/nonexistent.bin"), Err(StatusCode::NoSuchFile));
        let _ = t.realpath(".");
        assert_eq!(t.lines(), ["sent status No such file"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_packets_never_panic(
            ty in prop::sample::select(vec![1u8, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                16, 17, 18, 19, 20, 200, 0, 2, 101, 255]),
            body in prop::collection::vec(any::<u8>(), 0..64),
            raw in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut t = setup();
            let mut p = vec![ty];
            p.extend_from_slice(&body);
            let mut out = Vec::new();
            if let Ok(()) = t.srv().handle(&p, &mut out) {
                let f = sftp::split_packet(&out, u32::MAX).unwrap().unwrap();
                prop_assert_eq!(f.consumed, out.len());
            }
            out.clear();
            let _ = t.srv().handle(&raw, &mut out);
            // The jail's outside was never touched.
            prop_assert_eq!(fs::read(t.dir.path().join("secret")).unwrap(), b"outside");
            t.finish();
        }

        #[test]
        fn fuzz_paths_stay_inside(
            parts in prop::collection::vec(prop::sample::select(vec![
                "..", ".", "evil", "upload", "evil2", "secret", "", "x", "jail"]), 0..8),
            op in 0u8..6,
        ) {
            let mut t = setup();
            let path = parts.join("/");
            let path = path.as_bytes();
            let id = 1;
            let req = match op {
                0 => Request::Open { id, filename: path, pflags: WCT, attrs: Attrs::default() },
                1 => Request::Mkdir { id, path, attrs: Attrs::default() },
                2 => Request::Remove { id, filename: path },
                3 => Request::Rmdir { id, path },
                4 => Request::Setstat { id, path, attrs: Attrs { size: Some(0), ..Attrs::default() } },
                _ => Request::Realpath { id, path },
            };
            let b = t.raw_req(&req);
            if let Response::Name { entries, .. } = Response::decode(&b).unwrap() {
                prop_assert!(entries[0].filename.starts_with(b"/"));
            }
            prop_assert_eq!(fs::read(t.dir.path().join("secret")).unwrap(), b"outside");
            let names: Vec<_> = fs::read_dir(t.dir.path()).unwrap()
                .map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(names.len(), 2, "{:?}", names);
            t.finish();
        }
    }
}
