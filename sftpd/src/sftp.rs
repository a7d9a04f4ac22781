//! Sans-IO codec for SFTP protocol version 3.
//!
//! Implements draft-ietf-secsh-filexfer-02 (SFTP v3) plus the OpenSSH
//! extensions described in OpenSSH's `PROTOCOL` file. The same codec serves
//! the server (decode [`Request`], encode [`Response`]) and a client or test
//! harness (encode [`Request`], decode [`Response`]).
//!
//! * Framing: every packet is `uint32 length | byte type | payload`, where
//!   `length` counts the type byte and the payload. [`Framer`] /
//!   [`split_packet`] find the next complete packet in a byte buffer and
//!   reject oversized lengths before anything is allocated.
//! * Decoding is zero-copy: decoded values borrow paths, handles and data from
//!   the input buffer. SFTP paths are raw bytes and are kept as `&[u8]`.
//!   Decoding never panics and runs in time linear in the input.
//! * Encoding appends a complete packet (length prefix included) to a
//!   caller-supplied `Vec<u8>`, so buffers can be reused. For DATA responses
//!   [`encode_data_header`] writes only the header so file bytes can be sent
//!   without copying them into the packet buffer.
//!
//! All integers are big-endian. A `string` is `uint32 length | bytes`.

use thiserror::Error;

/// The protocol version this codec speaks.
pub const SFTP_VERSION: u32 = 3;

/// Default maximum packet length (the value of the `uint32 length` field).
///
/// OpenSSH's `sftp-server` accepts packets up to `SFTP_MAX_MSG_LENGTH`
/// (256 KiB); the extra 1 KiB leaves room for the header of a maximal WRITE.
pub const DEFAULT_MAX_PACKET_LEN: u32 = 256 * 1024 + 1024;

/// Packet type numbers.
pub mod packet_type {
    /// SSH_FXP_INIT
    pub const INIT: u8 = 1;
    /// SSH_FXP_VERSION
    pub const VERSION: u8 = 2;
    /// SSH_FXP_OPEN
    pub const OPEN: u8 = 3;
    /// SSH_FXP_CLOSE
    pub const CLOSE: u8 = 4;
    /// SSH_FXP_READ
    pub const READ: u8 = 5;
    /// SSH_FXP_WRITE
    pub const WRITE: u8 = 6;
    /// SSH_FXP_LSTAT
    pub const LSTAT: u8 = 7;
    /// SSH_FXP_FSTAT
    pub const FSTAT: u8 = 8;
    /// SSH_FXP_SETSTAT
    pub const SETSTAT: u8 = 9;
    /// SSH_FXP_FSETSTAT
    pub const FSETSTAT: u8 = 10;
    /// SSH_FXP_OPENDIR
    pub const OPENDIR: u8 = 11;
    /// SSH_FXP_READDIR
    pub const READDIR: u8 = 12;
    /// SSH_FXP_REMOVE
    pub const REMOVE: u8 = 13;
    /// SSH_FXP_MKDIR
    pub const MKDIR: u8 = 14;
    /// SSH_FXP_RMDIR
    pub const RMDIR: u8 = 15;
    /// SSH_FXP_REALPATH
    pub const REALPATH: u8 = 16;
    /// SSH_FXP_STAT
    pub const STAT: u8 = 17;
    /// SSH_FXP_RENAME
    pub const RENAME: u8 = 18;
    /// SSH_FXP_READLINK
    pub const READLINK: u8 = 19;
    /// SSH_FXP_SYMLINK
    pub const SYMLINK: u8 = 20;
    /// SSH_FXP_STATUS
    pub const STATUS: u8 = 101;
    /// SSH_FXP_HANDLE
    pub const HANDLE: u8 = 102;
    /// SSH_FXP_DATA
    pub const DATA: u8 = 103;
    /// SSH_FXP_NAME
    pub const NAME: u8 = 104;
    /// SSH_FXP_ATTRS
    pub const ATTRS: u8 = 105;
    /// SSH_FXP_EXTENDED
    pub const EXTENDED: u8 = 200;
    /// SSH_FXP_EXTENDED_REPLY
    pub const EXTENDED_REPLY: u8 = 201;
}

/// `pflags` bits of SSH_FXP_OPEN.
pub mod open_flags {
    /// SSH_FXF_READ
    pub const READ: u32 = 0x0000_0001;
    /// SSH_FXF_WRITE
    pub const WRITE: u32 = 0x0000_0002;
    /// SSH_FXF_APPEND
    pub const APPEND: u32 = 0x0000_0004;
    /// SSH_FXF_CREAT
    pub const CREAT: u32 = 0x0000_0008;
    /// SSH_FXF_TRUNC
    pub const TRUNC: u32 = 0x0000_0010;
    /// SSH_FXF_EXCL
    pub const EXCL: u32 = 0x0000_0020;
}

/// Attribute flag bits (`SSH_FILEXFER_ATTR_*`).
pub mod attr_flags {
    /// SSH_FILEXFER_ATTR_SIZE
    pub const SIZE: u32 = 0x0000_0001;
    /// SSH_FILEXFER_ATTR_UIDGID
    pub const UIDGID: u32 = 0x0000_0002;
    /// SSH_FILEXFER_ATTR_PERMISSIONS
    pub const PERMISSIONS: u32 = 0x0000_0004;
    /// SSH_FILEXFER_ATTR_ACMODTIME
    pub const ACMODTIME: u32 = 0x0000_0008;
    /// SSH_FILEXFER_ATTR_EXTENDED
    pub const EXTENDED: u32 = 0x8000_0000;
    /// All bits defined for protocol version 3.
    pub const ALL: u32 = SIZE | UIDGID | PERMISSIONS | ACMODTIME | EXTENDED;
}

/// Names of the OpenSSH extended requests this codec decodes.
pub mod ext_name {
    /// `posix-rename@openssh.com`
    pub const POSIX_RENAME: &str = "posix-rename@openssh.com";
    /// `statvfs@openssh.com`
    pub const STATVFS: &str = "statvfs@openssh.com";
    /// `fstatvfs@openssh.com`
    pub const FSTATVFS: &str = "fstatvfs@openssh.com";
    /// `hardlink@openssh.com`
    pub const HARDLINK: &str = "hardlink@openssh.com";
    /// `fsync@openssh.com`
    pub const FSYNC: &str = "fsync@openssh.com";
    /// `lsetstat@openssh.com`
    pub const LSETSTAT: &str = "lsetstat@openssh.com";
    /// `limits@openssh.com`
    pub const LIMITS: &str = "limits@openssh.com";
    /// `expand-path@openssh.com`
    pub const EXPAND_PATH: &str = "expand-path@openssh.com";
    /// `home-directory`
    pub const HOME_DIRECTORY: &str = "home-directory";
    /// `users-groups-by-id@openssh.com`
    pub const USERS_GROUPS_BY_ID: &str = "users-groups-by-id@openssh.com";
}

/// Errors from framing and decoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The input ended in the middle of a field.
    #[error("truncated packet: missing {what}")]
    Truncated {
        /// The field that could not be read.
        what: &'static str,
    },
    /// The packet length field exceeds the configured maximum.
    #[error("packet length {len} exceeds maximum {max}")]
    TooLong {
        /// The length announced by the peer.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The packet length field is zero, so there is no type byte.
    #[error("packet length is zero")]
    EmptyPacket,
    /// Unknown or unexpected packet type (e.g. a response type where a
    /// request was expected).
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// The attribute flags contain bits not defined by SFTP v3.
    #[error("unknown attribute flags {0:#010x}")]
    BadAttrFlags(u32),
    /// A status code outside 0..=8.
    #[error("unknown status code {0}")]
    UnknownStatus(u32),
    /// Bytes left over after the last field of the packet.
    #[error("{count} trailing bytes after packet")]
    TrailingBytes {
        /// Number of unused bytes.
        count: usize,
    },
    /// A field that must be UTF-8 text is not.
    #[error("{what} is not valid UTF-8")]
    BadUtf8 {
        /// The offending field.
        what: &'static str,
    },
    /// A packed uint32 id list whose length is not a multiple of four.
    #[error("packed id list length {0} is not a multiple of 4")]
    BadIdList(usize),
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// A complete packet found by [`split_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The packet body: type byte followed by the payload (length prefix
    /// removed). Pass this to [`Request::decode`] or [`Response::decode`].
    pub packet: &'a [u8],
    /// Bytes of the input consumed by this packet (4 + body length).
    pub consumed: usize,
}

/// Finds the next complete packet at the start of `buf`.
///
/// Returns `Ok(None)` if more input is needed. The length field is checked
/// against `max_len` as soon as its four bytes are available, before the
/// body arrives, so an oversized announcement is rejected immediately.
pub fn split_packet(buf: &[u8], max_len: u32) -> Result<Option<Frame<'_>>> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len > max_len {
        return Err(Error::TooLong { len, max: max_len });
    }
    if len == 0 {
        return Err(Error::EmptyPacket);
    }
    let total = 4usize.saturating_add(len as usize);
    match buf.get(4..total) {
        Some(packet) => Ok(Some(Frame {
            packet,
            consumed: total,
        })),
        None => Ok(None),
    }
}

/// Packet framer with a configurable maximum packet length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framer {
    max_len: u32,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET_LEN)
    }
}

impl Framer {
    /// Creates a framer that refuses packets whose length field exceeds
    /// `max_len`.
    pub fn new(max_len: u32) -> Self {
        Self { max_len }
    }

    /// The configured maximum packet length.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// See [`split_packet`].
    pub fn next_packet<'a>(&self, buf: &'a [u8]) -> Result<Option<Frame<'a>>> {
        split_packet(buf, self.max_len)
    }
}

/// Returns the request id of a packet body (type byte + payload) if it has
/// one, so a server can answer an undecodable request with a STATUS.
pub fn peek_request_id(packet: &[u8]) -> Option<u32> {
    match packet.first() {
        None | Some(&packet_type::INIT) | Some(&packet_type::VERSION) => None,
        Some(_) => packet
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes),
    }
}

// ---------------------------------------------------------------------------
// Primitive reader / writer
// ---------------------------------------------------------------------------

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let hi = self.u32(what)?;
        let lo = self.u32(what)?;
        Ok((u64::from(hi) << 32) | u64::from(lo))
    }

    fn string(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let len = self.u32(what)?;
        // `len` is checked against the remaining input by `take` before any
        // use, so an untrusted length never drives an allocation.
        self.take(len as usize, what)
    }

    fn text(&mut self, what: &'static str) -> Result<&'a str> {
        std::str::from_utf8(self.string(what)?).map_err(|_| Error::BadUtf8 { what })
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                count: self.buf.len(),
            })
        }
    }
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// # Panics
/// If `s` is longer than `u32::MAX` bytes (cannot fit an SFTP packet).
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let len = u32::try_from(s.len()).expect("SFTP string longer than u32::MAX");
    put_u32(out, len);
    out.extend_from_slice(s);
}

/// Starts a packet: reserves the length prefix and writes the type byte.
/// Returns the offset of the length prefix for [`end_packet`].
fn begin_packet(out: &mut Vec<u8>, ty: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(ty);
    start
}

/// Patches the length prefix written by [`begin_packet`].
fn end_packet(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start - 4).expect("SFTP packet longer than u32::MAX");
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------

/// File attributes (SFTP v3 `ATTRS`).
///
/// The flags word is derived from which fields are present; the EXTENDED flag
/// is written iff `extended` is non-empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs<'a> {
    /// SSH_FILEXFER_ATTR_SIZE
    pub size: Option<u64>,
    /// SSH_FILEXFER_ATTR_UIDGID: `(uid, gid)`
    pub uid_gid: Option<(u32, u32)>,
    /// SSH_FILEXFER_ATTR_PERMISSIONS (includes the file type bits)
    pub permissions: Option<u32>,
    /// SSH_FILEXFER_ATTR_ACMODTIME: `(atime, mtime)`
    pub ac_mod_time: Option<(u32, u32)>,
    /// SSH_FILEXFER_ATTR_EXTENDED: `(type, data)` pairs
    pub extended: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Attrs<'a> {
    /// The flags word this value encodes with.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if self.size.is_some() {
            f |= attr_flags::SIZE;
        }
        if self.uid_gid.is_some() {
            f |= attr_flags::UIDGID;
        }
        if self.permissions.is_some() {
            f |= attr_flags::PERMISSIONS;
        }
        if self.ac_mod_time.is_some() {
            f |= attr_flags::ACMODTIME;
        }
        if !self.extended.is_empty() {
            f |= attr_flags::EXTENDED;
        }
        f
    }

    /// Appends the wire form of these attributes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.flags());
        if let Some(size) = self.size {
            put_u64(out, size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            put_u32(out, uid);
            put_u32(out, gid);
        }
        if let Some(perm) = self.permissions {
            put_u32(out, perm);
        }
        if let Some((atime, mtime)) = self.ac_mod_time {
            put_u32(out, atime);
            put_u32(out, mtime);
        }
        if !self.extended.is_empty() {
            let n = u32::try_from(self.extended.len()).expect("too many extended attributes");
            put_u32(out, n);
            for (ty, data) in &self.extended {
                put_string(out, ty);
                put_string(out, data);
            }
        }
    }

    fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let flags = r.u32("attrs flags")?;
        if flags & !attr_flags::ALL != 0 {
            return Err(Error::BadAttrFlags(flags));
        }
        let mut a = Attrs::default();
        if flags & attr_flags::SIZE != 0 {
            a.size = Some(r.u64("attrs size")?);
        }
        if flags & attr_flags::UIDGID != 0 {
            let uid = r.u32("attrs uid")?;
            let gid = r.u32("attrs gid")?;
            a.uid_gid = Some((uid, gid));
        }
        if flags & attr_flags::PERMISSIONS != 0 {
            a.permissions = Some(r.u32("attrs permissions")?);
        }
        if flags & attr_flags::ACMODTIME != 0 {
            let atime = r.u32("attrs atime")?;
            let mtime = r.u32("attrs mtime")?;
            a.ac_mod_time = Some((atime, mtime));
        }
        if flags & attr_flags::EXTENDED != 0 {
            let count = r.u32("attrs extended count")?;
            // No pre-allocation from `count`: each pair consumes at least
            // 8 input bytes, so the loop is bounded by the input length.
            for _ in 0..count {
                let ty = r.string("attrs extended type")?;
                let data = r.string("attrs extended data")?;
                a.extended.push((ty, data));
            }
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------
// Status codes
// ---------------------------------------------------------------------------

/// SSH_FX_* status codes of SFTP v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StatusCode {
    /// SSH_FX_OK
    Ok = 0,
    /// SSH_FX_EOF
    Eof = 1,
    /// SSH_FX_NO_SUCH_FILE
    NoSuchFile = 2,
    /// SSH_FX_PERMISSION_DENIED
    PermissionDenied = 3,
    /// SSH_FX_FAILURE
    Failure = 4,
    /// SSH_FX_BAD_MESSAGE
    BadMessage = 5,
    /// SSH_FX_NO_CONNECTION
    NoConnection = 6,
    /// SSH_FX_CONNECTION_LOST
    ConnectionLost = 7,
    /// SSH_FX_OP_UNSUPPORTED
    OpUnsupported = 8,
}

impl StatusCode {
    /// All codes, in numeric order.
    pub const ALL: [StatusCode; 9] = [
        Self::Ok,
        Self::Eof,
        Self::NoSuchFile,
        Self::PermissionDenied,
        Self::Failure,
        Self::BadMessage,
        Self::NoConnection,
        Self::ConnectionLost,
        Self::OpUnsupported,
    ];

    /// The wire value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Parses a wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// The message text OpenSSH's `sftp-server` sends with this code.
    pub fn message(self) -> &'static str {
        match self {
            Self::Ok => "Success",
            Self::Eof => "End of file",
            Self::NoSuchFile => "No such file",
            Self::PermissionDenied => "Permission denied",
            Self::Failure => "Failure",
            Self::BadMessage => "Bad message",
            Self::NoConnection => "No connection",
            Self::ConnectionLost => "Connection lost",
            Self::OpUnsupported => "Operation unsupported",
        }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// A packed list of `uint32` ids (as in `users-groups-by-id@openssh.com`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackedIds<'a>(&'a [u8]);

impl<'a> PackedIds<'a> {
    /// Wraps packed big-endian `uint32`s; the length must be a multiple of 4.
    pub fn new(bytes: &'a [u8]) -> Result<Self> {
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::BadIdList(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// Packs `ids` into bytes suitable for [`PackedIds::new`].
    pub fn pack(ids: &[u32]) -> Vec<u8> {
        ids.iter().flat_map(|id| id.to_be_bytes()).collect()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the ids.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Payload of an SSH_FXP_EXTENDED request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendedRequest<'a> {
    /// `posix-rename@openssh.com`: `string oldpath, string newpath`
    PosixRename {
        /// Existing path.
        old: &'a [u8],
        /// New path (replaced if it exists).
        new: &'a [u8],
    },
    /// `statvfs@openssh.com`: `string path`
    Statvfs {
        /// Path on the file system to query.
        path: &'a [u8],
    },
    /// `fstatvfs@openssh.com`: `string handle`
    Fstatvfs {
        /// Open handle.
        handle: &'a [u8],
    },
    /// `hardlink@openssh.com`: `string oldpath, string newpath`
    Hardlink {
        /// Existing file.
        old: &'a [u8],
        /// New link name.
        new: &'a [u8],
    },
    /// `fsync@openssh.com`: `string handle`
    Fsync {
        /// Open file handle.
        handle: &'a [u8],
    },
    /// `lsetstat@openssh.com`: `string path, ATTRS attrs`
    Lsetstat {
        /// Path (symlinks not followed).
        path: &'a [u8],
        /// Attributes to set.
        attrs: Attrs<'a>,
    },
    /// `limits@openssh.com`: no payload.
    Limits,
    /// `expand-path@openssh.com`: `string path`
    ExpandPath {
        /// Path, possibly starting with `~` or `~user`.
        path: &'a [u8],
    },
    /// `home-directory`: `string username`
    HomeDirectory {
        /// User name.
        username: &'a [u8],
    },
    /// `users-groups-by-id@openssh.com`: `string uids, string gids`, each
    /// a packed sequence of `uint32`.
    UsersGroupsById {
        /// Requested uids.
        uids: PackedIds<'a>,
        /// Requested gids.
        gids: PackedIds<'a>,
    },
    /// Any other extended request; `data` is everything after the name.
    Unknown {
        /// Request name.
        name: &'a str,
        /// Raw request-specific data.
        data: &'a [u8],
    },
}

impl<'a> ExtendedRequest<'a> {
    /// The request name as sent on the wire.
    pub fn name(&self) -> &'a str {
        match self {
            Self::PosixRename { .. } => ext_name::POSIX_RENAME,
            Self::Statvfs { .. } => ext_name::STATVFS,
            Self::Fstatvfs { .. } => ext_name::FSTATVFS,
            Self::Hardlink { .. } => ext_name::HARDLINK,
            Self::Fsync { .. } => ext_name::FSYNC,
            Self::Lsetstat { .. } => ext_name::LSETSTAT,
            Self::Limits => ext_name::LIMITS,
            Self::ExpandPath { .. } => ext_name::EXPAND_PATH,
            Self::HomeDirectory { .. } => ext_name::HOME_DIRECTORY,
            Self::UsersGroupsById { .. } => ext_name::USERS_GROUPS_BY_ID,
            Self::Unknown { name, .. } => name,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::PosixRename { old, new } | Self::Hardlink { old, new } => {
                put_string(out, old);
                put_string(out, new);
            }
            Self::Statvfs { path: s }
            | Self::Fstatvfs { handle: s }
            | Self::Fsync { handle: s }
            | Self::ExpandPath { path: s }
            | Self::HomeDirectory { username: s } => put_string(out, s),
            Self::Lsetstat { path, attrs } => {
                put_string(out, path);
                attrs.encode(out);
            }
            Self::Limits => {}
            Self::UsersGroupsById { uids, gids } => {
                put_string(out, uids.as_bytes());
                put_string(out, gids.as_bytes());
            }
            Self::Unknown { data, .. } => out.extend_from_slice(data),
        }
    }

    fn decode(name: &'a str, r: &mut Reader<'a>) -> Result<Self> {
        Ok(match name {
            ext_name::POSIX_RENAME => Self::PosixRename {
                old: r.string("oldpath")?,
                new: r.string("newpath")?,
            },
            ext_name::STATVFS => Self::Statvfs {
                path: r.string("path")?,
            },
            ext_name::FSTATVFS => Self::Fstatvfs {
                handle: r.string("handle")?,
            },
            ext_name::HARDLINK => Self::Hardlink {
                old: r.string("oldpath")?,
                new: r.string("newpath")?,
            },
            ext_name::FSYNC => Self::Fsync {
                handle: r.string("handle")?,
            },
            ext_name::LSETSTAT => Self::Lsetstat {
                path: r.string("path")?,
                attrs: Attrs::decode(r)?,
            },
            ext_name::LIMITS => Self::Limits,
            ext_name::EXPAND_PATH => Self::ExpandPath {
                path: r.string("path")?,
            },
            ext_name::HOME_DIRECTORY => Self::HomeDirectory {
                username: r.string("username")?,
            },
            ext_name::USERS_GROUPS_BY_ID => Self::UsersGroupsById {
                uids: PackedIds::new(r.string("uids")?)?,
                gids: PackedIds::new(r.string("gids")?)?,
            },
            _ => Self::Unknown {
                name,
                data: r.rest(),
            },
        })
    }
}

/// A client → server packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// SSH_FXP_INIT: `uint32 version`, then `string name, string data`
    /// extension pairs until the end of the packet. No request id.
    Init {
        /// Client protocol version.
        version: u32,
        /// Extension pairs.
        extensions: Vec<(&'a str, &'a [u8])>,
    },
    /// SSH_FXP_OPEN: `uint32 id, string filename, uint32 pflags, ATTRS attrs`
    Open {
        /// Request id.
        id: u32,
        /// File name.
        filename: &'a [u8],
        /// [`open_flags`] bits.
        pflags: u32,
        /// Initial attributes.
        attrs: Attrs<'a>,
    },
    /// SSH_FXP_CLOSE: `uint32 id, string handle`
    Close {
        /// Request id.
        id: u32,
        /// Handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_READ: `uint32 id, string handle, uint64 offset, uint32 len`
    Read {
        /// Request id.
        id: u32,
        /// Handle.
        handle: &'a [u8],
        /// File offset.
        offset: u64,
        /// Maximum number of bytes to read.
        len: u32,
    },
    /// SSH_FXP_WRITE: `uint32 id, string handle, uint64 offset, string data`
    Write {
        /// Request id.
        id: u32,
        /// Handle.
        handle: &'a [u8],
        /// File offset.
        offset: u64,
        /// Bytes to write.
        data: &'a [u8],
    },
    /// SSH_FXP_LSTAT: `uint32 id, string path`
    Lstat {
        /// Request id.
        id: u32,
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_FSTAT: `uint32 id, string handle`
    Fstat {
        /// Request id.
        id: u32,
        /// Handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_SETSTAT: `uint32 id, string path, ATTRS attrs`
    Setstat {
        /// Request id.
        id: u32,
        /// Path.
        path: &'a [u8],
        /// Attributes to set.
        attrs: Attrs<'a>,
    },
    /// SSH_FXP_FSETSTAT: `uint32 id, string handle, ATTRS attrs`
    Fsetstat {
        /// Request id.
        id: u32,
        /// Handle.
        handle: &'a [u8],
        /// Attributes to set.
        attrs: Attrs<'a>,
    },
    /// SSH_FXP_OPENDIR: `uint32 id, string path`
    Opendir {
        /// Request id.
        id: u32,
        /// Directory path.
        path: &'a [u8],
    },
    /// SSH_FXP_READDIR: `uint32 id, string handle`
    Readdir {
        /// Request id.
        id: u32,
        /// Directory handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_REMOVE: `uint32 id, string filename`
    Remove {
        /// Request id.
        id: u32,
        /// File name.
        filename: &'a [u8],
    },
    /// SSH_FXP_MKDIR: `uint32 id, string path, ATTRS attrs`
    Mkdir {
        /// Request id.
        id: u32,
        /// Directory path.
        path: &'a [u8],
        /// Initial attributes.
        attrs: Attrs<'a>,
    },
    /// SSH_FXP_RMDIR: `uint32 id, string path`
    Rmdir {
        /// Request id.
        id: u32,
        /// Directory path.
        path: &'a [u8],
    },
    /// SSH_FXP_REALPATH: `uint32 id, string path`
    Realpath {
        /// Request id.
        id: u32,
        /// Path to canonicalise.
        path: &'a [u8],
    },
    /// SSH_FXP_STAT: `uint32 id, string path`
    Stat {
        /// Request id.
        id: u32,
        /// Path.
        path: &'a [u8],
    },
    /// SSH_FXP_RENAME: `uint32 id, string oldpath, string newpath`
    Rename {
        /// Request id.
        id: u32,
        /// Old path.
        old: &'a [u8],
        /// New path.
        new: &'a [u8],
    },
    /// SSH_FXP_READLINK: `uint32 id, string path`
    Readlink {
        /// Request id.
        id: u32,
        /// Symlink path.
        path: &'a [u8],
    },
    /// SSH_FXP_SYMLINK.
    ///
    /// **Argument order quirk:** draft-ietf-secsh-filexfer-02 specifies
    /// `uint32 id, string linkpath, string targetpath`, but OpenSSH's client
    /// and server have always used the reverse,
    /// `uint32 id, string targetpath, string linkpath` (see OpenSSH
    /// `PROTOCOL` §4.1), and every widely deployed client follows OpenSSH.
    /// This codec follows OpenSSH: the first string on the wire is
    /// [`target`](Self::Symlink::target) and the second is
    /// [`link`](Self::Symlink::link); the server should perform
    /// `symlink(target, link)`.
    Symlink {
        /// Request id.
        id: u32,
        /// Contents of the new symlink (first string on the wire).
        target: &'a [u8],
        /// Path of the symlink to create (second string on the wire).
        link: &'a [u8],
    },
    /// SSH_FXP_EXTENDED: `uint32 id, string extended-request, ...`
    Extended {
        /// Request id.
        id: u32,
        /// The decoded request.
        request: ExtendedRequest<'a>,
    },
}

impl<'a> Request<'a> {
    /// The request id (`None` for INIT).
    pub fn id(&self) -> Option<u32> {
        match self {
            Self::Init { .. } => None,
            Self::Open { id, .. }
            | Self::Close { id, .. }
            | Self::Read { id, .. }
            | Self::Write { id, .. }
            | Self::Lstat { id, .. }
            | Self::Fstat { id, .. }
            | Self::Setstat { id, .. }
            | Self::Fsetstat { id, .. }
            | Self::Opendir { id, .. }
            | Self::Readdir { id, .. }
            | Self::Remove { id, .. }
            | Self::Mkdir { id, .. }
            | Self::Rmdir { id, .. }
            | Self::Realpath { id, .. }
            | Self::Stat { id, .. }
            | Self::Rename { id, .. }
            | Self::Readlink { id, .. }
            | Self::Symlink { id, .. }
            | Self::Extended { id, .. } => Some(*id),
        }
    }

    /// The packet type byte.
    pub fn packet_type(&self) -> u8 {
        use packet_type as t;
        match self {
            Self::Init { .. } => t::INIT,
            Self::Open { .. } => t::OPEN,
            Self::Close { .. } => t::CLOSE,
            Self::Read { .. } => t::READ,
            Self::Write { .. } => t::WRITE,
            Self::Lstat { .. } => t::LSTAT,
            Self::Fstat { .. } => t::FSTAT,
            Self::Setstat { .. } => t::SETSTAT,
            Self::Fsetstat { .. } => t::FSETSTAT,
            Self::Opendir { .. } => t::OPENDIR,
            Self::Readdir { .. } => t::READDIR,
            Self::Remove { .. } => t::REMOVE,
            Self::Mkdir { .. } => t::MKDIR,
            Self::Rmdir { .. } => t::RMDIR,
            Self::Realpath { .. } => t::REALPATH,
            Self::Stat { .. } => t::STAT,
            Self::Rename { .. } => t::RENAME,
            Self::Readlink { .. } => t::READLINK,
            Self::Symlink { .. } => t::SYMLINK,
            Self::Extended { .. } => t::EXTENDED,
        }
    }

    /// Appends the complete packet (length prefix included) to `out`.
    ///
    /// # Panics
    /// If a field is longer than `u32::MAX` bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_packet(out, self.packet_type());
        if let Some(id) = self.id() {
            put_u32(out, id);
        }
        match self {
            Self::Init {
                version,
                extensions,
            } => {
                put_u32(out, *version);
                for (name, data) in extensions {
                    put_string(out, name.as_bytes());
                    put_string(out, data);
                }
            }
            Self::Open {
                filename,
                pflags,
                attrs,
                ..
            } => {
                put_string(out, filename);
                put_u32(out, *pflags);
                attrs.encode(out);
            }
            Self::Read {
                handle,
                offset,
                len,
                ..
            } => {
                put_string(out, handle);
                put_u64(out, *offset);
                put_u32(out, *len);
            }
            Self::Write {
                handle,
                offset,
                data,
                ..
            } => {
                put_string(out, handle);
                put_u64(out, *offset);
                put_string(out, data);
            }
            Self::Close { handle: s, .. }
            | Self::Lstat { path: s, .. }
            | Self::Fstat { handle: s, .. }
            | Self::Opendir { path: s, .. }
            | Self::Readdir { handle: s, .. }
            | Self::Remove { filename: s, .. }
            | Self::Rmdir { path: s, .. }
            | Self::Realpath { path: s, .. }
            | Self::Stat { path: s, .. }
            | Self::Readlink { path: s, .. } => put_string(out, s),
            Self::Setstat { path: s, attrs, .. }
            | Self::Fsetstat {
                handle: s, attrs, ..
            }
            | Self::Mkdir { path: s, attrs, .. } => {
                put_string(out, s);
                attrs.encode(out);
            }
            Self::Rename { old, new, .. } => {
                put_string(out, old);
                put_string(out, new);
            }
            Self::Symlink { target, link, .. } => {
                put_string(out, target);
                put_string(out, link);
            }
            Self::Extended { request, .. } => {
                put_string(out, request.name().as_bytes());
                request.encode_body(out);
            }
        }
        end_packet(out, start);
    }

    /// Decodes a packet body (type byte + payload, as in [`Frame::packet`]).
    ///
    /// Trailing bytes after the last field are an error, except in
    /// extended requests this codec does not know (their data is opaque).
    pub fn decode(packet: &'a [u8]) -> Result<Self> {
        use packet_type as t;
        let mut r = Reader::new(packet);
        let ty = r.u8("packet type")?;
        if ty == t::INIT {
            let version = r.u32("version")?;
            let mut extensions = Vec::new();
            while !r.is_empty() {
                let name = r.text("extension name")?;
                let data = r.string("extension data")?;
                extensions.push((name, data));
            }
            return Ok(Self::Init {
                version,
                extensions,
            });
        }
        if !matches!(ty, t::OPEN..=t::SYMLINK | t::EXTENDED) {
            return Err(Error::UnknownType(ty));
        }
        let id = r.u32("request id")?;
        let req = match ty {
            t::OPEN => Self::Open {
                id,
                filename: r.string("filename")?,
                pflags: r.u32("pflags")?,
                attrs: Attrs::decode(&mut r)?,
            },
            t::CLOSE => Self::Close {
                id,
                handle: r.string("handle")?,
            },
            t::READ => Self::Read {
                id,
                handle: r.string("handle")?,
                offset: r.u64("offset")?,
                len: r.u32("length")?,
            },
            t::WRITE => Self::Write {
                id,
                handle: r.string("handle")?,
                offset: r.u64("offset")?,
                data: r.string("data")?,
            },
            t::LSTAT => Self::Lstat {
                id,
                path: r.string("path")?,
            },
            t::FSTAT => Self::Fstat {
                id,
                handle: r.string("handle")?,
            },
            t::SETSTAT => Self::Setstat {
                id,
                path: r.string("path")?,
                attrs: Attrs::decode(&mut r)?,
            },
            t::FSETSTAT => Self::Fsetstat {
                id,
                handle: r.string("handle")?,
                attrs: Attrs::decode(&mut r)?,
            },
            t::OPENDIR => Self::Opendir {
                id,
                path: r.string("path")?,
            },
            t::READDIR => Self::Readdir {
                id,
                handle: r.string("handle")?,
            },
            t::REMOVE => Self::Remove {
                id,
                filename: r.string("filename")?,
            },
            t::MKDIR => Self::Mkdir {
                id,
                path: r.string("path")?,
                attrs: Attrs::decode(&mut r)?,
            },
            t::RMDIR => Self::Rmdir {
                id,
                path: r.string("path")?,
            },
            t::REALPATH => Self::Realpath {
                id,
                path: r.string("path")?,
            },
            t::STAT => Self::Stat {
                id,
                path: r.string("path")?,
            },
            t::RENAME => Self::Rename {
                id,
                old: r.string("oldpath")?,
                new: r.string("newpath")?,
            },
            t::READLINK => Self::Readlink {
                id,
                path: r.string("path")?,
            },
            t::SYMLINK => Self::Symlink {
                id,
                target: r.string("targetpath")?,
                link: r.string("linkpath")?,
            },
            _ => {
                // t::EXTENDED (checked above)
                let name = r.text("extended request name")?;
                Self::Extended {
                    id,
                    request: ExtendedRequest::decode(name, &mut r)?,
                }
            }
        };
        r.finish()?;
        Ok(req)
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// One entry of an SSH_FXP_NAME response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameEntry<'a> {
    /// File name (relative for READDIR, absolute for REALPATH).
    pub filename: &'a [u8],
    /// `ls -l`-style line for READDIR; OpenSSH's `sftp-server` repeats the
    /// filename here for REALPATH-style replies.
    pub longname: &'a [u8],
    /// Attributes.
    pub attrs: Attrs<'a>,
}

/// A server → client packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// SSH_FXP_VERSION: `uint32 version`, then `string name, string data`
    /// extension pairs until the end of the packet. No request id.
    Version {
        /// Server protocol version.
        version: u32,
        /// Extension pairs.
        extensions: Vec<(&'a str, &'a [u8])>,
    },
    /// SSH_FXP_STATUS: `uint32 id, uint32 code, string message,
    /// string language-tag`
    Status {
        /// Request id.
        id: u32,
        /// Status code.
        code: StatusCode,
        /// Human-readable message (UTF-8).
        message: &'a str,
        /// Language tag (OpenSSH sends `""`).
        language: &'a str,
    },
    /// SSH_FXP_HANDLE: `uint32 id, string handle`
    Handle {
        /// Request id.
        id: u32,
        /// Handle.
        handle: &'a [u8],
    },
    /// SSH_FXP_DATA: `uint32 id, string data`
    Data {
        /// Request id.
        id: u32,
        /// Data.
        data: &'a [u8],
    },
    /// SSH_FXP_NAME: `uint32 id, uint32 count`, then per entry
    /// `string filename, string longname, ATTRS attrs`
    Name {
        /// Request id.
        id: u32,
        /// Entries.
        entries: Vec<NameEntry<'a>>,
    },
    /// SSH_FXP_ATTRS: `uint32 id, ATTRS attrs`
    Attrs {
        /// Request id.
        id: u32,
        /// Attributes.
        attrs: Attrs<'a>,
    },
    /// SSH_FXP_EXTENDED_REPLY: `uint32 id`, then request-specific data to
    /// the end of the packet. See [`Limits`], [`Statvfs`] and
    /// [`encode_users_groups_reply`] for typed payloads.
    ExtendedReply {
        /// Request id.
        id: u32,
        /// Raw reply data.
        data: &'a [u8],
    },
}

impl<'a> Response<'a> {
    /// A STATUS response with OpenSSH's message text for `code` and an empty
    /// language tag.
    pub fn status(id: u32, code: StatusCode) -> Self {
        Self::Status {
            id,
            code,
            message: code.message(),
            language: "",
        }
    }

    /// The packet type byte.
    pub fn packet_type(&self) -> u8 {
        use packet_type as t;
        match self {
            Self::Version { .. } => t::VERSION,
            Self::Status { .. } => t::STATUS,
            Self::Handle { .. } => t::HANDLE,
            Self::Data { .. } => t::DATA,
            Self::Name { .. } => t::NAME,
            Self::Attrs { .. } => t::ATTRS,
            Self::ExtendedReply { .. } => t::EXTENDED_REPLY,
        }
    }

    /// Appends the complete packet (length prefix included) to `out`.
    ///
    /// # Panics
    /// If a field is longer than `u32::MAX` bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_packet(out, self.packet_type());
        match self {
            Self::Version {
                version,
                extensions,
            } => {
                put_u32(out, *version);
                for (name, data) in extensions {
                    put_string(out, name.as_bytes());
                    put_string(out, data);
                }
            }
            Self::Status {
                id,
                code,
                message,
                language,
            } => {
                put_u32(out, *id);
                put_u32(out, code.as_u32());
                put_string(out, message.as_bytes());
                put_string(out, language.as_bytes());
            }
            Self::Handle { id, handle: s } | Self::Data { id, data: s } => {
                put_u32(out, *id);
                put_string(out, s);
            }
            Self::Name { id, entries } => {
                put_u32(out, *id);
                let n = u32::try_from(entries.len()).expect("too many NAME entries");
                put_u32(out, n);
                for e in entries {
                    put_string(out, e.filename);
                    put_string(out, e.longname);
                    e.attrs.encode(out);
                }
            }
            Self::Attrs { id, attrs } => {
                put_u32(out, *id);
                attrs.encode(out);
            }
            Self::ExtendedReply { id, data } => {
                put_u32(out, *id);
                out.extend_from_slice(data);
            }
        }
        end_packet(out, start);
    }

    /// Decodes a packet body (type byte + payload, as in [`Frame::packet`]).
    pub fn decode(packet: &'a [u8]) -> Result<Self> {
        use packet_type as t;
        let mut r = Reader::new(packet);
        let ty = r.u8("packet type")?;
        let resp = match ty {
            t::VERSION => {
                let version = r.u32("version")?;
                let mut extensions = Vec::new();
                while !r.is_empty() {
                    let name = r.text("extension name")?;
                    let data = r.string("extension data")?;
                    extensions.push((name, data));
                }
                Self::Version {
                    version,
                    extensions,
                }
            }
            t::STATUS => {
                let id = r.u32("request id")?;
                let raw = r.u32("status code")?;
                let code = StatusCode::from_u32(raw).ok_or(Error::UnknownStatus(raw))?;
                Self::Status {
                    id,
                    code,
                    message: r.text("status message")?,
                    language: r.text("language tag")?,
                }
            }
            t::HANDLE => Self::Handle {
                id: r.u32("request id")?,
                handle: r.string("handle")?,
            },
            t::DATA => Self::Data {
                id: r.u32("request id")?,
                data: r.string("data")?,
            },
            t::NAME => {
                let id = r.u32("request id")?;
                let count = r.u32("name count")?;
                // Each entry consumes at least 12 bytes: bounded by input.
                let mut entries = Vec::new();
                for _ in 0..count {
                    entries.push(NameEntry {
                        filename: r.string("filename")?,
                        longname: r.string("longname")?,
                        attrs: Attrs::decode(&mut r)?,
                    });
                }
                Self::Name { id, entries }
            }
            t::ATTRS => Self::Attrs {
                id: r.u32("request id")?,
                attrs: Attrs::decode(&mut r)?,
            },
            t::EXTENDED_REPLY => Self::ExtendedReply {
                id: r.u32("request id")?,
                data: r.rest(),
            },
            other => return Err(Error::UnknownType(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}

/// Appends the header of an SSH_FXP_DATA packet carrying `len` data bytes:
/// `uint32 length, byte 103, uint32 id, uint32 len`. The caller must send
/// exactly `len` data bytes right after it.
pub fn encode_data_header(out: &mut Vec<u8>, id: u32, len: u32) {
    // length = type(1) + id(4) + string length(4) + data
    put_u32(out, 9u32.saturating_add(len));
    put_u8(out, packet_type::DATA);
    put_u32(out, id);
    put_u32(out, len);
}

/// Size of the header written by [`encode_data_header`].
pub const DATA_HEADER_LEN: usize = 13;

// ---------------------------------------------------------------------------
// Typed extended replies
// ---------------------------------------------------------------------------

/// Reply to `limits@openssh.com`: four `uint64`s in this order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Maximum packet length the server accepts.
    pub max_packet_length: u64,
    /// Maximum READ length the server honours.
    pub max_read_length: u64,
    /// Maximum WRITE length the server accepts.
    pub max_write_length: u64,
    /// Maximum number of open handles (0 = unknown/unlimited).
    pub max_open_handles: u64,
}

impl Limits {
    /// Appends a complete SSH_FXP_EXTENDED_REPLY packet.
    pub fn encode_reply(&self, out: &mut Vec<u8>, id: u32) {
        let start = begin_packet(out, packet_type::EXTENDED_REPLY);
        put_u32(out, id);
        put_u64(out, self.max_packet_length);
        put_u64(out, self.max_read_length);
        put_u64(out, self.max_write_length);
        put_u64(out, self.max_open_handles);
        end_packet(out, start);
    }

    /// Decodes the `data` of an [`Response::ExtendedReply`].
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        let v = Self {
            max_packet_length: r.u64("max-packet-length")?,
            max_read_length: r.u64("max-read-length")?,
            max_write_length: r.u64("max-write-length")?,
            max_open_handles: r.u64("max-open-handles")?,
        };
        r.finish()?;
        Ok(v)
    }
}

/// Reply to `statvfs@openssh.com` / `fstatvfs@openssh.com`: eleven
/// `uint64`s in this order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statvfs {
    /// f_bsize: file system block size
    pub bsize: u64,
    /// f_frsize: fundamental fs block size
    pub frsize: u64,
    /// f_blocks: number of blocks (unit f_frsize)
    pub blocks: u64,
    /// f_bfree: free blocks in file system
    pub bfree: u64,
    /// f_bavail: free blocks for non-root
    pub bavail: u64,
    /// f_files: total file inodes
    pub files: u64,
    /// f_ffree: free file inodes
    pub ffree: u64,
    /// f_favail: free file inodes for non-root
    pub favail: u64,
    /// f_fsid: file system id
    pub fsid: u64,
    /// f_flag: bit mask of f_flag values ([`Statvfs::FLAG_RDONLY`],
    /// [`Statvfs::FLAG_NOSUID`])
    pub flag: u64,
    /// f_namemax: maximum filename length
    pub namemax: u64,
}

impl Statvfs {
    /// SSH_FXE_STATVFS_ST_RDONLY
    pub const FLAG_RDONLY: u64 = 0x1;
    /// SSH_FXE_STATVFS_ST_NOSUID
    pub const FLAG_NOSUID: u64 = 0x2;

    fn fields(&self) -> [u64; 11] {
        [
            self.bsize,
            self.frsize,
            self.blocks,
            self.bfree,
            self.bavail,
            self.files,
            self.ffree,
            self.favail,
            self.fsid,
            self.flag,
            self.namemax,
        ]
    }

    /// Appends a complete SSH_FXP_EXTENDED_REPLY packet.
    pub fn encode_reply(&self, out: &mut Vec<u8>, id: u32) {
        let start = begin_packet(out, packet_type::EXTENDED_REPLY);
        put_u32(out, id);
        for v in self.fields() {
            put_u64(out, v);
        }
        end_packet(out, start);
    }

    /// Decodes the `data` of an [`Response::ExtendedReply`].
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        let v = Self {
            bsize: r.u64("f_bsize")?,
            frsize: r.u64("f_frsize")?,
            blocks: r.u64("f_blocks")?,
            bfree: r.u64("f_bfree")?,
            bavail: r.u64("f_bavail")?,
            files: r.u64("f_files")?,
            ffree: r.u64("f_ffree")?,
            favail: r.u64("f_favail")?,
            fsid: r.u64("f_fsid")?,
            flag: r.u64("f_flag")?,
            namemax: r.u64("f_namemax")?,
        };
        r.finish()?;
        Ok(v)
    }
}

/// Appends a complete SSH_FXP_EXTENDED_REPLY to
/// `users-groups-by-id@openssh.com`: `uint32 id, string usernames,
/// string groupnames`, where each outer string holds a packed sequence of
/// strings, one per requested id in request order (empty if unknown).
pub fn encode_users_groups_reply(
    out: &mut Vec<u8>,
    id: u32,
    usernames: &[&[u8]],
    groupnames: &[&[u8]],
) {
    let start = begin_packet(out, packet_type::EXTENDED_REPLY);
    put_u32(out, id);
    for names in [usernames, groupnames] {
        let len_at = out.len();
        put_u32(out, 0);
        for n in names {
            put_string(out, n);
        }
        let len = u32::try_from(out.len() - len_at - 4).expect("name list longer than u32::MAX");
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
    end_packet(out, start);
}

/// A list of user or group names borrowed from a reply.
pub type NameList<'a> = Vec<&'a [u8]>;

/// Decodes the `data` of a `users-groups-by-id@openssh.com` reply into
/// `(usernames, groupnames)`.
pub fn decode_users_groups_reply(data: &[u8]) -> Result<(NameList<'_>, NameList<'_>)> {
    fn unpack<'a>(packed: &'a [u8], what: &'static str) -> Result<Vec<&'a [u8]>> {
        let mut r = Reader::new(packed);
        let mut v = Vec::new();
        while !r.is_empty() {
            v.push(r.string(what)?);
        }
        Ok(v)
    }
    let mut r = Reader::new(data);
    let users = unpack(r.string("usernames")?, "username")?;
    let groups = unpack(r.string("groupnames")?, "groupname")?;
    r.finish()?;
    Ok((users, groups))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames and decodes exactly one request from `bytes`.
    fn decode_req(bytes: &[u8]) -> Request<'_> {
        let f = split_packet(bytes, DEFAULT_MAX_PACKET_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(f.consumed, bytes.len());
        Request::decode(f.packet).unwrap()
    }

    fn decode_resp(bytes: &[u8]) -> Response<'_> {
        let f = split_packet(bytes, DEFAULT_MAX_PACKET_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(f.consumed, bytes.len());
        Response::decode(f.packet).unwrap()
    }

    /// Builds a packet from body parts, with the length computed here.
    fn pkt(body: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = body.concat();
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&body);
        v
    }

    // ---- hand-written packets -------------------------------------------

    #[test]
    fn init_literal() {
        let bytes = [
            0, 0, 0, 0x19, // length 25 = 1 + 4 + (4 + 12) + (4 + 0)
            1,    // SSH_FXP_INIT
            0, 0, 0, 3, // version
            0, 0, 0, 0x0c, b'f', b'o', b'o', b'@', b'e', b'x', b'.', b'c', b'o', b'm', b'x',
            b'y', // name "foo@ex.comxy" (12)
            0, 0, 0, 0, // data ""
        ];
        let req = decode_req(&bytes);
        assert_eq!(
            req,
            Request::Init {
                version: 3,
                extensions: vec![("foo@ex.comxy", &b""[..])]
            }
        );
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn open_with_attrs_literal() {
        let bytes = pkt(&[
            &[3],                      // SSH_FXP_OPEN
            &[0, 0, 0, 7],             // id
            &[0, 0, 0, 3],             // filename length
            b"a/b",                    // filename
            &[0, 0, 0, 0x1a],          // pflags WRITE|CREAT|TRUNC
            &[0, 0, 0, 0x0d],          // attrs flags SIZE|PERMISSIONS|ACMODTIME
            &[0, 0, 0, 1, 0, 0, 0, 2], // size 2^32 + 2
            &[0, 0, 0x81, 0xa4],       // perms 0o100644
            &[0, 0, 0, 10],            // atime
            &[0, 0, 0, 11],            // mtime
        ]);
        let req = decode_req(&bytes);
        assert_eq!(
            req,
            Request::Open {
                id: 7,
                filename: b"a/b",
                pflags: open_flags::WRITE | open_flags::CREAT | open_flags::TRUNC,
                attrs: Attrs {
                    size: Some((1 << 32) + 2),
                    uid_gid: None,
                    permissions: Some(0o100644),
                    ac_mod_time: Some((10, 11)),
                    extended: vec![],
                }
            }
        );
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn attrs_uidgid_and_extended_literal() {
        let bytes = pkt(&[
            &[9],
            &[0, 0, 0, 1],
            &[0, 0, 0, 1],
            b"p",
            &[0x80, 0, 0, 0x02],
            &[0, 0, 3, 0xe8], // uid 1000
            &[0, 0, 3, 0xe9], // gid 1001
            &[0, 0, 0, 1],    // 1 extended pair
            &[0, 0, 0, 1],
            b"t",
            &[0, 0, 0, 2],
            b"dd",
        ]);
        let req = decode_req(&bytes);
        assert_eq!(
            req,
            Request::Setstat {
                id: 1,
                path: b"p",
                attrs: Attrs {
                    uid_gid: Some((1000, 1001)),
                    extended: vec![(&b"t"[..], &b"dd"[..])],
                    ..Attrs::default()
                }
            }
        );
    }

    #[test]
    fn read_literal() {
        let bytes = pkt(&[
            &[5],
            &[0xde, 0xad, 0xbe, 0xef],
            &[0, 0, 0, 2],
            b"h1",
            &[0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a],
            &[0, 0, 0x80, 0],
        ]);
        assert_eq!(
            decode_req(&bytes),
            Request::Read {
                id: 0xdead_beef,
                handle: b"h1",
                offset: 0x12_3456_789a,
                len: 32768
            }
        );
    }

    #[test]
    fn symlink_uses_openssh_order() {
        let bytes = pkt(&[
            &[20],
            &[0, 0, 0, 5],
            &[0, 0, 0, 6],
            b"target",
            &[0, 0, 0, 4],
            b"link",
        ]);
        assert_eq!(
            decode_req(&bytes),
            Request::Symlink {
                id: 5,
                target: b"target",
                link: b"link"
            }
        );
    }

    #[test]
    fn status_literal() {
        let bytes = pkt(&[
            &[101],
            &[0, 0, 0, 9],
            &[0, 0, 0, 2],
            &[0, 0, 0, 12],
            b"No such file",
            &[0, 0, 0, 0],
        ]);
        assert_eq!(
            decode_resp(&bytes),
            Response::Status {
                id: 9,
                code: StatusCode::NoSuchFile,
                message: "No such file",
                language: ""
            }
        );
        let mut out = Vec::new();
        Response::status(9, StatusCode::NoSuchFile).encode(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn name_literal() {
        let bytes = pkt(&[
            &[104],
            &[0, 0, 0, 3],
            &[0, 0, 0, 2], // count
            &[0, 0, 0, 1],
            b"a",
            &[0, 0, 0, 2],
            b"la",
            &[0, 0, 0, 1], // SIZE
            &[0, 0, 0, 0, 0, 0, 0, 5],
            &[0, 0, 0, 1],
            b"b",
            &[0, 0, 0, 0],
            &[0, 0, 0, 0], // no attrs
        ]);
        assert_eq!(
            decode_resp(&bytes),
            Response::Name {
                id: 3,
                entries: vec![
                    NameEntry {
                        filename: b"a",
                        longname: b"la",
                        attrs: Attrs {
                            size: Some(5),
                            ..Attrs::default()
                        }
                    },
                    NameEntry {
                        filename: b"b",
                        longname: b"",
                        attrs: Attrs::default()
                    }
                ]
            }
        );
    }

    #[test]
    fn version_literal() {
        let bytes = pkt(&[
            &[2],
            &[0, 0, 0, 3],
            &[0, 0, 0, 24],
            b"posix-rename@openssh.com",
            &[0, 0, 0, 1],
            b"1",
        ]);
        assert_eq!(
            decode_resp(&bytes),
            Response::Version {
                version: 3,
                extensions: vec![("posix-rename@openssh.com", &b"1"[..])]
            }
        );
    }

    #[test]
    fn status_texts() {
        let texts: Vec<_> = StatusCode::ALL.iter().map(|c| c.message()).collect();
        assert_eq!(
            texts,
            [
                "Success",
                "End of file",
                "No such file",
                "Permission denied",
                "Failure",
                "Bad message",
                "No connection",
                "Connection lost",
                "Operation unsupported"
            ]
        );
        for (i, c) in StatusCode::ALL.iter().enumerate() {
            assert_eq!(c.as_u32(), i as u32);
            assert_eq!(StatusCode::from_u32(i as u32), Some(*c));
        }
        assert_eq!(StatusCode::from_u32(9), None);
    }

    // ---- extended ---------------------------------------------------------

    #[test]
    fn extended_posix_rename_literal() {
        let bytes = pkt(&[
            &[200],
            &[0, 0, 0, 4],
            &[0, 0, 0, 24],
            b"posix-rename@openssh.com",
            &[0, 0, 0, 1],
            b"o",
            &[0, 0, 0, 1],
            b"n",
        ]);
        assert_eq!(
            decode_req(&bytes),
            Request::Extended {
                id: 4,
                request: ExtendedRequest::PosixRename {
                    old: b"o",
                    new: b"n"
                }
            }
        );
    }

    #[test]
    fn extended_users_groups_literal() {
        let bytes = pkt(&[
            &[200],
            &[0, 0, 0, 4],
            &[0, 0, 0, 30],
            b"users-groups-by-id@openssh.com",
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 3, 0xe8],
            &[0, 0, 0, 0],
        ]);
        let req = decode_req(&bytes);
        let Request::Extended {
            request: ExtendedRequest::UsersGroupsById { uids, gids },
            ..
        } = req
        else {
            panic!("{req:?}")
        };
        assert_eq!(uids.iter().collect::<Vec<_>>(), [0, 1000]);
        assert!(gids.is_empty());

        // Bad id list length.
        let bytes = pkt(&[
            &[200],
            &[0, 0, 0, 4],
            &[0, 0, 0, 30],
            b"users-groups-by-id@openssh.com",
            &[0, 0, 0, 3, 0, 0, 0],
            &[0, 0, 0, 0],
        ]);
        assert_eq!(Request::decode(&bytes[4..]), Err(Error::BadIdList(3)));
    }

    #[test]
    fn extended_limits_and_unknown() {
        let bytes = pkt(&[&[200], &[0, 0, 0, 1], &[0, 0, 0, 18], b"limits@openssh.com"]);
        assert_eq!(
            decode_req(&bytes),
            Request::Extended {
                id: 1,
                request: ExtendedRequest::Limits
            }
        );
        let bytes = pkt(&[&[200], &[0, 0, 0, 1], &[0, 0, 0, 3], b"x@y", b"raw"]);
        assert_eq!(
            decode_req(&bytes),
            Request::Extended {
                id: 1,
                request: ExtendedRequest::Unknown {
                    name: "x@y",
                    data: b"raw"
                }
            }
        );
        // Non-UTF-8 name.
        let bytes = pkt(&[&[200], &[0, 0, 0, 1], &[0, 0, 0, 1], &[0xff]]);
        assert_eq!(
            Request::decode(&bytes[4..]),
            Err(Error::BadUtf8 {
                what: "extended request name"
            })
        );
        // Known request with trailing garbage.
        let bytes = pkt(&[
            &[200],
            &[0, 0, 0, 1],
            &[0, 0, 0, 18],
            b"limits@openssh.com",
            b"z",
        ]);
        assert_eq!(
            Request::decode(&bytes[4..]),
            Err(Error::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn limits_reply_literal() {
        let mut out = Vec::new();
        Limits {
            max_packet_length: 1,
            max_read_length: 2,
            max_write_length: 3,
            max_open_handles: 4,
        }
        .encode_reply(&mut out, 7);
        let expected = pkt(&[
            &[201],
            &[0, 0, 0, 7],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 0, 0, 0, 0, 2],
            &[0, 0, 0, 0, 0, 0, 0, 3],
            &[0, 0, 0, 0, 0, 0, 0, 4],
        ]);
        assert_eq!(out, expected);
        let Response::ExtendedReply { id: 7, data } = decode_resp(&out) else {
            panic!()
        };
        assert_eq!(Limits::decode(data).unwrap().max_open_handles, 4);
    }

    #[test]
    fn statvfs_reply_order() {
        let s = Statvfs {
            bsize: 1,
            frsize: 2,
            blocks: 3,
            bfree: 4,
            bavail: 5,
            files: 6,
            ffree: 7,
            favail: 8,
            fsid: 9,
            flag: 10,
            namemax: 11,
        };
        let mut out = Vec::new();
        s.encode_reply(&mut out, 1);
        assert_eq!(out.len(), 4 + 1 + 4 + 88);
        for i in 0..11 {
            let at = 9 + i * 8;
            assert_eq!(out[at..at + 8], (i as u64 + 1).to_be_bytes());
        }
        let Response::ExtendedReply { data, .. } = decode_resp(&out) else {
            panic!()
        };
        assert_eq!(Statvfs::decode(data).unwrap(), s);
    }

    #[test]
    fn users_groups_reply_literal() {
        let mut out = Vec::new();
        encode_users_groups_reply(&mut out, 2, &[b"root", b""], &[b"wheel"]);
        let expected = pkt(&[
            &[201],
            &[0, 0, 0, 2],
            &[0, 0, 0, 12],
            &[0, 0, 0, 4],
            b"root",
            &[0, 0, 0, 0],
            &[0, 0, 0, 9],
            &[0, 0, 0, 5],
            b"wheel",
        ]);
        assert_eq!(out, expected);
        let Response::ExtendedReply { data, .. } = decode_resp(&out) else {
            panic!()
        };
        let (u, g) = decode_users_groups_reply(data).unwrap();
        assert_eq!(u, [&b"root"[..], b""]);
        assert_eq!(g, [&b"wheel"[..]]);
    }

    // ---- framing and errors ----------------------------------------------

    #[test]
    fn framing_split_input() {
        let mut buf = Vec::new();
        Request::Stat { id: 1, path: b"/x" }.encode(&mut buf);
        Request::Close {
            id: 2,
            handle: b"h",
        }
        .encode(&mut buf);
        let first_len = 4 + 1 + 4 + 4 + 2;
        for cut in 0..first_len {
            assert_eq!(split_packet(&buf[..cut], DEFAULT_MAX_PACKET_LEN), Ok(None));
        }
        let framer = Framer::default();
        let f = framer.next_packet(&buf).unwrap().unwrap();
        assert_eq!(f.consumed, first_len);
        assert_eq!(
            Request::decode(f.packet).unwrap(),
            Request::Stat { id: 1, path: b"/x" }
        );
        let rest = &buf[f.consumed..];
        let f2 = framer.next_packet(rest).unwrap().unwrap();
        assert_eq!(f2.consumed, rest.len());
        assert_eq!(peek_request_id(f2.packet), Some(2));
    }

    #[test]
    fn framing_oversize_and_empty() {
        let framer = Framer::new(100);
        // Rejected as soon as the length is visible, before the body.
        assert_eq!(
            framer.next_packet(&[0, 0, 0, 101]),
            Err(Error::TooLong { len: 101, max: 100 })
        );
        assert_eq!(
            split_packet(&[0xff, 0xff, 0xff, 0xff], DEFAULT_MAX_PACKET_LEN),
            Err(Error::TooLong {
                len: u32::MAX,
                max: DEFAULT_MAX_PACKET_LEN
            })
        );
        assert!(matches!(framer.next_packet(&[0, 0, 0, 100]), Ok(None)));
        assert_eq!(framer.next_packet(&[0, 0, 0, 0]), Err(Error::EmptyPacket));
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            Request::decode(&[]),
            Err(Error::Truncated {
                what: "packet type"
            })
        );
        assert_eq!(
            Request::decode(&[101, 0, 0, 0, 0]),
            Err(Error::UnknownType(101))
        );
        assert_eq!(Response::decode(&[3]), Err(Error::UnknownType(3)));
        assert_eq!(
            Request::decode(&[17, 0, 0, 0, 1, 0, 0, 0, 5, b'a']),
            Err(Error::Truncated { what: "path" })
        );
        assert_eq!(
            Request::decode(&[8, 0, 0, 0, 1, 0, 0, 0, 0, 9]),
            Err(Error::TrailingBytes { count: 1 })
        );
        assert_eq!(
            Request::decode(&[10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10]),
            Err(Error::BadAttrFlags(0x10))
        );
        assert_eq!(
            Response::decode(&[101, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::UnknownStatus(9))
        );
        // A huge NAME count with no entries fails fast without allocating.
        assert_eq!(
            Response::decode(&[104, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::Truncated { what: "filename" })
        );
        assert_eq!(peek_request_id(&[1, 0, 0, 0, 3]), None);
        assert_eq!(peek_request_id(&[5, 0, 0]), None);
    }

    #[test]
    fn data_header_matches_full_encoding() {
        let data = b"hello world";
        let mut full = Vec::new();
        Response::Data { id: 42, data }.encode(&mut full);
        let mut hdr = Vec::new();
        encode_data_header(&mut hdr, 42, data.len() as u32);
        assert_eq!(hdr.len(), DATA_HEADER_LEN);
        hdr.extend_from_slice(data);
        assert_eq!(hdr, full);
    }

    // ---- property tests ---------------------------------------------------

    type AttrsSeed = (
        Option<u64>,
        Option<(u32, u32)>,
        Option<u32>,
        Option<(u32, u32)>,
        Vec<(Vec<u8>, Vec<u8>)>,
    );

    fn attrs_seed() -> impl Strategy<Value = AttrsSeed> {
        (
            any::<Option<u64>>(),
            any::<Option<(u32, u32)>>(),
            any::<Option<u32>>(),
            any::<Option<(u32, u32)>>(),
            prop::collection::vec((bytes(), bytes()), 0..3),
        )
    }

    fn attrs_of(s: &AttrsSeed) -> Attrs<'_> {
        Attrs {
            size: s.0,
            uid_gid: s.1,
            permissions: s.2,
            ac_mod_time: s.3,
            extended: s.4.iter().map(|(a, b)| (&a[..], &b[..])).collect(),
        }
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..40)
    }

    #[derive(Debug, Clone)]
    struct Seed {
        id: u32,
        a: Vec<u8>,
        b: Vec<u8>,
        n64: u64,
        n32: u32,
        text: String,
        attrs: AttrsSeed,
        exts: Vec<(String, Vec<u8>)>,
        ids: (Vec<u32>, Vec<u32>),
        names: Vec<(Vec<u8>, Vec<u8>, AttrsSeed)>,
    }

    fn seed() -> impl Strategy<Value = Seed> {
        (
            any::<u32>(),
            bytes(),
            bytes(),
            any::<u64>(),
            any::<u32>(),
            ".{0,20}",
            attrs_seed(),
            prop::collection::vec((".{0,10}", bytes()), 0..3),
            (
                prop::collection::vec(any::<u32>(), 0..4),
                prop::collection::vec(any::<u32>(), 0..4),
            ),
            prop::collection::vec((bytes(), bytes(), attrs_seed()), 0..3),
        )
            .prop_map(|(id, a, b, n64, n32, text, attrs, exts, ids, names)| Seed {
                id,
                a,
                b,
                n64,
                n32,
                text,
                attrs,
                exts,
                ids,
                names,
            })
    }

    const REQUEST_KINDS: u8 = 30;

    fn build_request<'a>(kind: u8, s: &'a Seed, packed: &'a (Vec<u8>, Vec<u8>)) -> Request<'a> {
        let id = s.id;
        let (a, b) = (&s.a[..], &s.b[..]);
        let attrs = attrs_of(&s.attrs);
        let ext = |request| Request::Extended { id, request };
        match kind {
            0 => Request::Init {
                version: s.n32,
                extensions: s.exts.iter().map(|(n, d)| (n.as_str(), &d[..])).collect(),
            },
            1 => Request::Open {
                id,
                filename: a,
                pflags: s.n32,
                attrs,
            },
            2 => Request::Close { id, handle: a },
            3 => Request::Read {
                id,
                handle: a,
                offset: s.n64,
                len: s.n32,
            },
            4 => Request::Write {
                id,
                handle: a,
                offset: s.n64,
                data: b,
            },
            5 => Request::Lstat { id, path: a },
            6 => Request::Fstat { id, handle: a },
            7 => Request::Setstat { id, path: a, attrs },
            8 => Request::Fsetstat {
                id,
                handle: a,
                attrs,
            },
            9 => Request::Opendir { id, path: a },
            10 => Request::Readdir { id, handle: a },
            11 => Request::Remove { id, filename: a },
            12 => Request::Mkdir { id, path: a, attrs },
            13 => Request::Rmdir { id, path: a },
            14 => Request::Realpath { id, path: a },
            15 => Request::Stat { id, path: a },
            16 => Request::Rename { id, old: a, new: b },
            17 => Request::Readlink { id, path: a },
            18 => Request::Symlink {
                id,
                target: a,
                link: b,
            },
            19 => ext(ExtendedRequest::PosixRename { old: a, new: b }),
            20 => ext(ExtendedRequest::Statvfs { path: a }),
            21 => ext(ExtendedRequest::Fstatvfs { handle: a }),
            22 => ext(ExtendedRequest::Hardlink { old: a, new: b }),
            23 => ext(ExtendedRequest::Fsync { handle: a }),
            24 => ext(ExtendedRequest::Lsetstat { path: a, attrs }),
            25 => ext(ExtendedRequest::Limits),
            26 => ext(ExtendedRequest::ExpandPath { path: a }),
            27 => ext(ExtendedRequest::HomeDirectory { username: a }),
            28 => ext(ExtendedRequest::UsersGroupsById {
                uids: PackedIds::new(&packed.0).unwrap(),
                gids: PackedIds::new(&packed.1).unwrap(),
            }),
            _ => ext(ExtendedRequest::Unknown {
                // Known names are replaced by the round-trip test.
                name: if s.text.is_empty() { "x" } else { &s.text },
                data: b,
            }),
        }
    }

    const RESPONSE_KINDS: u8 = 7;

    fn build_response(kind: u8, s: &Seed) -> Response<'_> {
        let id = s.id;
        match kind {
            0 => Response::Version {
                version: s.n32,
                extensions: s.exts.iter().map(|(n, d)| (n.as_str(), &d[..])).collect(),
            },
            1 => Response::Status {
                id,
                code: StatusCode::ALL[(s.n32 % 9) as usize],
                message: &s.text,
                language: s.exts.first().map_or("", |e| e.0.as_str()),
            },
            2 => Response::Handle { id, handle: &s.a },
            3 => Response::Data { id, data: &s.a },
            4 => Response::Name {
                id,
                entries: s
                    .names
                    .iter()
                    .map(|(f, l, a)| NameEntry {
                        filename: f,
                        longname: l,
                        attrs: attrs_of(a),
                    })
                    .collect(),
            },
            5 => Response::Attrs {
                id,
                attrs: attrs_of(&s.attrs),
            },
            _ => Response::ExtendedReply { id, data: &s.a },
        }
    }

    proptest! {
        #[test]
        fn request_round_trip(kind in 0..REQUEST_KINDS, s in seed(), junk in bytes()) {
            let packed = (PackedIds::pack(&s.ids.0), PackedIds::pack(&s.ids.1));
            let mut req = build_request(kind, &s, &packed);
            if let Request::Extended { request: ExtendedRequest::Unknown { name, .. }, .. } = &mut req
                && [ext_name::POSIX_RENAME, ext_name::STATVFS, ext_name::FSTATVFS,
                    ext_name::HARDLINK, ext_name::FSYNC, ext_name::LSETSTAT, ext_name::LIMITS,
                    ext_name::EXPAND_PATH, ext_name::HOME_DIRECTORY,
                    ext_name::USERS_GROUPS_BY_ID].contains(name)
            {
                *name = "x";
            }
            // Encoding appends to existing content.
            let mut out = junk.clone();
            req.encode(&mut out);
            prop_assert_eq!(&out[..junk.len()], &junk[..]);
            let wire = &out[junk.len()..];
            let f = split_packet(wire, u32::MAX).unwrap().unwrap();
            prop_assert_eq!(f.consumed, wire.len());
            prop_assert_eq!(peek_request_id(f.packet), req.id());
            let back = Request::decode(f.packet).unwrap();
            prop_assert_eq!(back, req);
        }

        #[test]
        fn response_round_trip(kind in 0..RESPONSE_KINDS, s in seed(), junk in bytes()) {
            let resp = build_response(kind, &s);
            let mut out = junk.clone();
            resp.encode(&mut out);
            let wire = &out[junk.len()..];
            let f = split_packet(wire, u32::MAX).unwrap().unwrap();
            prop_assert_eq!(f.consumed, wire.len());
            prop_assert_eq!(Response::decode(f.packet).unwrap(), resp);
        }

        #[test]
        fn typed_extended_replies_round_trip(
            v in prop::array::uniform11(any::<u64>()),
            id in any::<u32>(),
            users in prop::collection::vec(bytes(), 0..4),
            groups in prop::collection::vec(bytes(), 0..4),
        ) {
            let st = Statvfs { bsize: v[0], frsize: v[1], blocks: v[2], bfree: v[3],
                bavail: v[4], files: v[5], ffree: v[6], favail: v[7], fsid: v[8],
                flag: v[9], namemax: v[10] };
            let lim = Limits { max_packet_length: v[0], max_read_length: v[1],
                max_write_length: v[2], max_open_handles: v[3] };
            let mut out = Vec::new();
            st.encode_reply(&mut out, id);
            let Response::ExtendedReply { id: rid, data } = decode_resp(&out) else { panic!() };
            prop_assert_eq!(rid, id);
            prop_assert_eq!(Statvfs::decode(data).unwrap(), st);

            out.clear();
            lim.encode_reply(&mut out, id);
            let Response::ExtendedReply { data, .. } = decode_resp(&out) else { panic!() };
            prop_assert_eq!(Limits::decode(data).unwrap(), lim);

            out.clear();
            let u: Vec<&[u8]> = users.iter().map(|x| &x[..]).collect();
            let g: Vec<&[u8]> = groups.iter().map(|x| &x[..]).collect();
            encode_users_groups_reply(&mut out, id, &u, &g);
            let Response::ExtendedReply { data, .. } = decode_resp(&out) else { panic!() };
            let (du, dg) = decode_users_groups_reply(data).unwrap();
            prop_assert_eq!(du, u);
            prop_assert_eq!(dg, g);
        }

        #[test]
        fn split_input_framing(kind in 0..REQUEST_KINDS, s in seed(), cut in any::<prop::sample::Index>()) {
            let packed = (PackedIds::pack(&s.ids.0), PackedIds::pack(&s.ids.1));
            let mut out = Vec::new();
            build_request(kind, &s, &packed).encode(&mut out);
            let cut = cut.index(out.len());
            prop_assert_eq!(split_packet(&out[..cut], u32::MAX), Ok(None));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = split_packet(&data, DEFAULT_MAX_PACKET_LEN);
            let _ = Request::decode(&data);
            let _ = Response::decode(&data);
            let _ = peek_request_id(&data);
            let _ = Limits::decode(&data);
            let _ = Statvfs::decode(&data);
            let _ = decode_users_groups_reply(&data);
        }

        #[test]
        fn typed_prefix_bytes_never_panic(
            ty in prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                15, 16, 17, 18, 19, 20, 101, 102, 103, 104, 105, 200, 201]),
            data in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut p = vec![ty];
            p.extend_from_slice(&data);
            let _ = Request::decode(&p);
            let _ = Response::decode(&p);
        }
    }
}
