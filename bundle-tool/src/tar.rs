//! Strict, streaming tar checker (sans-IO) and a small deterministic ustar writer.
//!
//! A Cisco AP image (`ap1g4`, `ap1g6a`, `ap1g8`, `ap3g3`, …) is a tar archive. [`TarChecker`]
//! takes its bytes in any chunking, checks the archive structure without extracting anything,
//! lists the members and keeps a copy of the small `info`, `info.ver` and `ver` members that
//! describe the image (see [`crate::info`]). [`TarBuilder`] writes the archives the
//! synthetic-bundle generator and the tests need, and [`archive_size`] says in advance how
//! long one will be.
//!
//! ## Format
//!
//! POSIX.1-2017 `pax`, "ustar Interchange Format" (512-byte blocks, a header block per member,
//! data padded to a block, two zero blocks at the end), plus the extensions real archivers
//! write: pax extended headers (`x`, `g`; POSIX.1-2017 `pax`, "pax Extended Header"), GNU long
//! names and link names (`L`, `K`) and GNU base-256 numbers (GNU tar manual, "Basic Tar
//! Format").
//!
//! ## Strict and tolerant
//!
//! Where the format is certain a [`TarError`] stops the check: checksums, numeric fields,
//! member data that runs past the end of the stream, a missing or broken end-of-archive
//! marker, a stream length that is not a whole number of blocks, malformed pax records.
//! Where archivers differ, or the question is about content rather than structure, the check
//! goes on and records a [`TarWarning`]: v7 headers without the `ustar` magic, the historical
//! signed checksum, non-UTF-8 or absolute/`..` names, non-zero bytes after the end of the
//! archive, a length that is not a whole number of 10240-byte records.
//!
//! Decisions where readers disagree (each is documented where it is made):
//! - the ustar `prefix` field is joined to the name only for the POSIX magic `"ustar\0"`: in the
//!   GNU format (`"ustar  \0"`) those bytes hold atime/ctime (libarchive reads it the same way);
//! - a symlink, device, directory or FIFO header with a non-zero size is an error
//!   ([`TarError::SizeOnDataless`]): POSIX says no data follows, some readers skip `size`
//!   bytes anyway, so the archive means different things to different tools;
//! - a pax `size=` record replaces the next member's size (POSIX); `path=` replaces its name;
//!   records of a global (`g`) header are checked for syntax and otherwise ignored;
//! - names (after pax/GNU/prefix assembly) longer than [`MAX_NAME`] bytes are an error, which
//!   bounds the memory a member list can take;
//! - a stream whose length is not a multiple of 512 is an error even when the extra bytes come
//!   after the end-of-archive marker.
//!
//! ## Costs
//!
//! `feed` runs in time linear in its input and copies nothing but header blocks, extension
//! data (at most [`MAX_EXTENSION`] bytes each) and captured members (at most
//! [`TarLimits::max_capture`] bytes each, at most [`MAX_CAPTURED_MEMBERS`] of them). Member data
//! is skipped by counting. Nothing is allocated from a size read from the input.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;

/// Size of a tar block: every header and every data run is a whole number of these.
pub const BLOCK: usize = 512;
/// Size of a tar record (20 blocks, tar's default blocking factor): real images are a whole
/// number of these, and [`TarBuilder`] pads to one.
pub const RECORD: usize = 10240;
/// Largest data of a pax (`x`, `g`) or GNU (`L`, `K`) extension header that is accepted.
pub const MAX_EXTENSION: u64 = 1024 * 1024;
/// Longest member name accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_NAME: usize = 4096;
/// Most members whose contents are captured; later ones get [`TarWarning::CaptureSkipped`].
pub const MAX_CAPTURED_MEMBERS: usize = 16;
/// Base names of the regular-file members whose contents [`TarChecker`] keeps.
pub const CAPTURED_NAMES: [&str; 3] = ["info", "info.ver", "ver"];

const BLOCK_U64: u64 = BLOCK as u64;
const RECORD_U64: u64 = RECORD as u64;

// Header fields (POSIX.1-2017 pax, "ustar Interchange Format", Table: ustar Header Block).
const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
/// `magic` (6 bytes) and `version` (2 bytes) together.
const MAGIC: Range<usize> = 257..265;
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
const PREFIX: Range<usize> = 345..500;

/// Limits a [`TarChecker`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Most members (files, directories, links, …; pax and GNU extension headers do not count)
    /// an archive may have; one more is [`TarError::TooManyMembers`]. Default 100 000.
    pub max_members: usize,
    /// Most bytes kept of each captured member (`info`, `info.ver`, `ver`); a longer member is
    /// kept truncated, with [`TarWarning::CaptureTruncated`]. Default 64 KiB.
    pub max_capture: usize,
}

impl Default for TarLimits {
    fn default() -> Self {
        Self {
            // Each member's name is kept (up to MAX_NAME bytes): this bounds the memory.
            max_members: 10_000,
            max_capture: 64 * 1024,
        }
    }
}

/// One member of an archive (pax and GNU extension headers are folded into the member they
/// describe, not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name after pax `path`, GNU long name and ustar prefix are applied; decoded lossily
    /// (never used as a path by this module).
    pub name: String,
    /// Bytes of data (a pax `size` record wins over the header field).
    pub size: u64,
    pub kind: MemberKind,
    /// Byte offset of the member's own header block (after any extension headers).
    pub header_offset: u64,
}

/// What a member is, from its header's type flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// `'0'` or NUL.
    File,
    /// `'5'`.
    Directory,
    /// `'2'`.
    Symlink,
    /// `'1'`.
    HardLink,
    /// Any other type flag: `'3'` character device, `'4'` block device, `'6'` FIFO, `'7'`
    /// contiguous file, vendor types. Its data, if any, is skipped.
    Other(u8),
}

impl MemberKind {
    fn from_typeflag(flag: u8) -> Self {
        match flag {
            b'0' | 0 => Self::File,
            b'1' => Self::HardLink,
            b'2' => Self::Symlink,
            b'5' => Self::Directory,
            other => Self::Other(other),
        }
    }

    /// Types after whose header POSIX stores no data.
    fn is_dataless(self) -> bool {
        matches!(
            self,
            Self::Symlink | Self::Directory | Self::Other(b'3' | b'4' | b'6')
        )
    }
}

impl fmt::Display for MemberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File => f.write_str("file"),
            Self::Directory => f.write_str("directory"),
            Self::Symlink => f.write_str("symlink"),
            Self::HardLink => f.write_str("hard link"),
            Self::Other(flag) => write!(f, "type {:?}", char::from(*flag)),
        }
    }
}

/// The kept contents of a member named `info`, `info.ver` or `ver` (any directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The member's full name, as in [`Member::name`].
    pub name: String,
    /// Its first [`TarLimits::max_capture`] bytes.
    pub bytes: Vec<u8>,
    /// Whether the member was longer than what was kept.
    pub truncated: bool,
}

/// What a structurally sound archive looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarSummary {
    /// Members in archive order.
    pub members: Vec<Member>,
    /// Contents of members whose base name is `info`, `info.ver` or `ver` (each at most
    /// [`TarLimits::max_capture`] bytes; a larger one is recorded as truncated via a warning).
    pub captured: Vec<Captured>,
    /// Things that are not errors, in stream order (the record-size warning last).
    pub warnings: Vec<TarWarning>,
}

/// Something odd that does not make the archive unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarWarning {
    /// A header without the ustar magic (a v7 archive, or an unknown magic).
    NoUstarMagic { offset: u64, name: String },
    /// A header whose checksum is the historical signed-char sum, not the POSIX one.
    SignedChecksum { offset: u64, name: String },
    /// A name that is not UTF-8 (stored lossily).
    NonUtf8Name { offset: u64, name: String },
    /// An absolute name or one with a `..` component.
    UnsafeName { offset: u64, name: String },
    /// A captured member longer than [`TarLimits::max_capture`]: only `kept` bytes were kept.
    CaptureTruncated {
        name: String,
        size: u64,
        kept: usize,
    },
    /// A member that would be captured, after [`MAX_CAPTURED_MEMBERS`] already were.
    CaptureSkipped { name: String },
    /// A non-zero byte after the end-of-archive marker; nothing after it was inspected.
    TrailingData { offset: u64 },
    /// The stream length is not a multiple of [`RECORD`] (real images are).
    NotRecordMultiple { len: u64 },
}

impl fmt::Display for TarWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoUstarMagic { offset, name } => write!(
                f,
                "header at byte {offset} ({name:?}) has no ustar magic (v7 header)"
            ),
            Self::SignedChecksum { offset, name } => write!(
                f,
                "header at byte {offset} ({name:?}) has the historical signed checksum"
            ),
            Self::NonUtf8Name { offset, name } => write!(
                f,
                "header at byte {offset}: name is not UTF-8 (shown lossily as {name:?})"
            ),
            Self::UnsafeName { offset, name } => write!(
                f,
                "header at byte {offset}: name {name:?} is absolute or contains `..`"
            ),
            Self::CaptureTruncated { name, size, kept } => write!(
                f,
                "member {name:?} has {size} bytes; only the first {kept} were kept"
            ),
            Self::CaptureSkipped { name } => write!(
                f,
                "member {name:?} not captured: more than {MAX_CAPTURED_MEMBERS} info members"
            ),
            Self::TrailingData { offset } => write!(
                f,
                "non-zero byte at {offset}, after the end-of-archive marker (not inspected further)"
            ),
            Self::NotRecordMultiple { len } => write!(
                f,
                "length {len} is not a multiple of the {RECORD}-byte tar record"
            ),
        }
    }
}

/// Which numeric header field was bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericField {
    Size,
    Mode,
    Mtime,
    Checksum,
}

impl fmt::Display for NumericField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size => "size",
            Self::Mode => "mode",
            Self::Mtime => "mtime",
            Self::Checksum => "checksum",
        })
    }
}

/// What was wrong with a numeric header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberProblem {
    /// A byte that is neither an octal digit nor a terminator (NUL or space), at `index` in the
    /// field.
    BadDigit { index: usize, byte: u8 },
    /// The value does not fit 64 bits.
    Overflow,
    /// A negative base-256 value where only non-negative ones make sense.
    Negative,
}

impl fmt::Display for NumberProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadDigit { index, byte } => write!(
                f,
                "has byte {:?} at index {index} where an octal digit or terminator belongs",
                char::from(*byte)
            ),
            Self::Overflow => f.write_str("does not fit 64 bits"),
            Self::Negative => f.write_str("is negative"),
        }
    }
}

/// A pax or GNU extension header type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionKind {
    /// `'x'`: pax extended header for the next member.
    Pax,
    /// `'g'`: pax global extended header.
    PaxGlobal,
    /// `'L'`: GNU long name of the next member.
    GnuLongName,
    /// `'K'`: GNU long link target of the next member.
    GnuLongLink,
}

impl ExtensionKind {
    fn from_typeflag(flag: u8) -> Option<Self> {
        match flag {
            b'x' => Some(Self::Pax),
            b'g' => Some(Self::PaxGlobal),
            b'L' => Some(Self::GnuLongName),
            b'K' => Some(Self::GnuLongLink),
            _ => None,
        }
    }
}

impl fmt::Display for ExtensionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pax => "pax header",
            Self::PaxGlobal => "pax global header",
            Self::GnuLongName => "GNU long name",
            Self::GnuLongLink => "GNU long link name",
        })
    }
}

/// Why a stream is not a sound tar archive. Offsets are byte offsets in the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("empty stream: not a tar archive")]
    Empty,
    #[error(
        "header at byte {offset} ({name:?}): checksum field says {stored}, the header sums to {computed}"
    )]
    BadChecksum {
        offset: u64,
        name: String,
        stored: u64,
        /// The POSIX (unsigned) sum.
        computed: u64,
    },
    #[error("header at byte {offset} ({name:?}): {field} field {problem}")]
    BadNumber {
        offset: u64,
        name: String,
        field: NumericField,
        problem: NumberProblem,
    },
    /// The stream ends inside a member's data or padding. `expected` counts the data plus
    /// the padding to the next block the header announces, `got` what the stream holds.
    #[error(
        "member {member:?} (header at byte {offset}): the stream ends after {got} of its {expected} bytes of data and padding"
    )]
    Truncated {
        member: String,
        offset: u64,
        expected: u64,
        got: u64,
    },
    #[error("the stream ends at byte {offset} without the end-of-archive marker (two zero blocks)")]
    NoEndOfArchive { offset: u64 },
    #[error("lone zero block at byte {offset}: a header follows it instead of a second zero block")]
    LoneZeroBlock { offset: u64 },
    #[error("stream length {len} is not a multiple of 512 bytes")]
    NotBlockMultiple { len: u64 },
    #[error("header at byte {offset}: more than {limit} members")]
    TooManyMembers { offset: u64, limit: usize },
    #[error("{kind} at byte {offset} has {size} bytes of data, more than the {limit} accepted")]
    ExtensionTooLarge {
        offset: u64,
        kind: ExtensionKind,
        size: u64,
        limit: u64,
    },
    #[error("pax header at byte {offset}: {reason}")]
    BadPaxRecord { offset: u64, reason: &'static str },
    #[error("extension header at byte {offset} is not followed by a member")]
    DanglingExtension { offset: u64 },
    /// A symlink, directory, device or FIFO header with a non-zero size (see the module doc).
    #[error("header at byte {offset} ({name:?}): a {kind} carries no data, yet its size is {size}")]
    SizeOnDataless {
        offset: u64,
        name: String,
        kind: MemberKind,
        size: u64,
    },
    #[error("header at byte {offset}: a name of {len} bytes is longer than the {limit} accepted")]
    NameTooLong {
        offset: u64,
        len: usize,
        limit: usize,
    },
}

/// Streaming checker: feed any chunking of the archive's bytes, then [`finish`](Self::finish).
///
/// The result does not depend on how the stream is cut into `feed` calls.
#[derive(Debug)]
pub struct TarChecker {
    limits: TarLimits,
    state: State,
    /// Bytes consumed so far.
    offset: u64,
    /// A header block being assembled across `feed` calls.
    block: [u8; BLOCK],
    block_len: usize,
    /// What extension headers said about the next member.
    pending: Option<Pending>,
    members: Vec<Member>,
    captured: Vec<Captured>,
    warnings: Vec<TarWarning>,
    /// The first error; every later call returns it again.
    failed: Option<TarError>,
}

#[derive(Debug)]
enum State {
    /// Expecting a header block.
    Header,
    /// Inside a member's (or an extension header's) data or padding.
    Data(DataState),
    /// One zero block seen at `offset`; the next block must be zero too.
    OneZero { offset: u64 },
    /// After the end-of-archive marker: zero bytes (record padding) only.
    End,
    /// A non-zero byte followed the end-of-archive marker; the rest is only counted.
    Ignoring,
}

#[derive(Debug)]
struct DataState {
    header_offset: u64,
    name: String,
    size: u64,
    pad: u64,
    data_left: u64,
    pad_left: u64,
    sink: Sink,
}

/// Where the data of the current member goes.
#[derive(Debug)]
enum Sink {
    Skip,
    /// Into `captured[index]`.
    Capture(usize),
    /// Into a buffer parsed when complete (at most [`MAX_EXTENSION`] bytes).
    Extension {
        kind: ExtensionKind,
        buf: Vec<u8>,
    },
}

/// What `x`, `L` and `K` headers said about the member that follows them.
#[derive(Debug)]
struct Pending {
    /// Offset of the first of these extension headers.
    offset: u64,
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    /// `"ustar\0"`: POSIX ustar/pax, with a `prefix` field.
    Ustar,
    /// `"ustar  \0"`: GNU, whose bytes 345.. are atime, ctime and sparse data.
    Gnu,
    /// Anything else: a v7 header.
    V7,
}

impl Magic {
    fn of(block: &[u8; BLOCK]) -> Self {
        let magic = &block[MAGIC];
        if magic == b"ustar  \0" {
            Self::Gnu
        } else if magic.starts_with(b"ustar\0") {
            Self::Ustar
        } else {
            Self::V7
        }
    }
}

impl TarChecker {
    pub fn new(limits: TarLimits) -> Self {
        Self {
            limits,
            state: State::Header,
            offset: 0,
            block: [0; BLOCK],
            block_len: 0,
            pending: None,
            members: Vec::new(),
            captured: Vec::new(),
            warnings: Vec::new(),
            failed: None,
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Feeds the next bytes of the stream. Fails at the first structural error; after an
    /// error every further call returns that error again (never panics).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(data);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Ends the stream: checks that it ended where an archive may end.
    pub fn finish(self) -> Result<TarSummary, TarError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.offset == 0 {
            return Err(TarError::Empty);
        }
        match self.state {
            State::Data(d) => {
                return Err(TarError::Truncated {
                    member: d.name,
                    offset: d.header_offset,
                    expected: d.size.saturating_add(d.pad),
                    got: (d.size - d.data_left).saturating_add(d.pad - d.pad_left),
                });
            }
            _ if !self.offset.is_multiple_of(BLOCK_U64) => {
                return Err(TarError::NotBlockMultiple { len: self.offset });
            }
            State::Header | State::OneZero { .. } => {
                return Err(TarError::NoEndOfArchive {
                    offset: self.offset,
                });
            }
            State::End | State::Ignoring => {}
        }
        let mut warnings = self.warnings;
        if !self.offset.is_multiple_of(RECORD_U64) {
            warnings.push(TarWarning::NotRecordMultiple { len: self.offset });
        }
        Ok(TarSummary {
            members: self.members,
            captured: self.captured,
            warnings,
        })
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        while !data.is_empty() {
            match self.state {
                State::Data(_) => data = self.on_data(data)?,
                State::Header | State::OneZero { .. } => data = self.on_block_bytes(data)?,
                State::End => {
                    // Record padding after the marker must be zero; anything else is a
                    // warning and ends the inspection.
                    if let Some(i) = data.iter().position(|&b| b != 0) {
                        self.warnings.push(TarWarning::TrailingData {
                            offset: self.offset + i as u64,
                        });
                        self.state = State::Ignoring;
                    }
                    self.offset += data.len() as u64;
                    return Ok(());
                }
                State::Ignoring => {
                    self.offset += data.len() as u64;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Assembles a block (without copying when one lies whole in `data`) and handles it.
    fn on_block_bytes<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], TarError> {
        if self.block_len == 0
            && let Some((block, rest)) = data.split_first_chunk::<BLOCK>()
        {
            let offset = self.offset;
            self.offset += BLOCK_U64;
            self.on_block(block, offset)?;
            return Ok(rest);
        }
        let n = (BLOCK - self.block_len).min(data.len());
        let (head, rest) = data.split_at(n);
        self.block[self.block_len..self.block_len + n].copy_from_slice(head);
        self.block_len += n;
        self.offset += n as u64;
        if self.block_len == BLOCK {
            self.block_len = 0;
            let block = self.block;
            self.on_block(&block, self.offset - BLOCK_U64)?;
        }
        Ok(rest)
    }

    fn on_block(&mut self, block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
        let zero = block.iter().all(|&b| b == 0);
        if let State::OneZero { offset: first } = self.state {
            // POSIX: the archive ends with two consecutive zero blocks.
            if zero {
                self.state = State::End;
                return Ok(());
            }
            return Err(TarError::LoneZeroBlock { offset: first });
        }
        if zero {
            if let Some(p) = &self.pending {
                return Err(TarError::DanglingExtension { offset: p.offset });
            }
            self.state = State::OneZero { offset };
            return Ok(());
        }
        self.on_header(block, offset)
    }

    fn on_header(&mut self, block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
        let raw_name = cstr(&block[NAME]);
        let lossy_name = || String::from_utf8_lossy(raw_name).into_owned();
        let bad_number = |field, problem| TarError::BadNumber {
            offset,
            name: lossy_name(),
            field,
            problem,
        };

        // The checksum: the sum of all header bytes with the checksum field taken as eight
        // spaces; POSIX sums unsigned bytes, some historical tars summed signed chars.
        let stored =
            parse_octal(&block[CHKSUM]).map_err(|p| bad_number(NumericField::Checksum, p))?;
        let (unsigned, signed) = checksums(block);
        let signed_checksum = stored != unsigned;
        if signed_checksum && i64::try_from(stored).ok() != Some(signed) {
            return Err(TarError::BadChecksum {
                offset,
                name: lossy_name(),
                stored,
                computed: unsigned,
            });
        }

        let header_size =
            parse_number(&block[SIZE]).map_err(|p| bad_number(NumericField::Size, p))?;
        parse_number(&block[MODE]).map_err(|p| bad_number(NumericField::Mode, p))?;
        match parse_number(&block[MTIME]) {
            // GNU writes times before 1970 as negative base-256 numbers.
            Ok(_) | Err(NumberProblem::Negative) => {}
            Err(p) => return Err(bad_number(NumericField::Mtime, p)),
        }

        let magic = Magic::of(block);
        let typeflag = block[TYPEFLAG];
        if let Some(kind) = ExtensionKind::from_typeflag(typeflag) {
            return self.start_extension(kind, offset, header_size, lossy_name());
        }

        let pending = self.pending.take();
        let (pending_path, pending_size) = pending.map_or((None, None), |p| (p.path, p.size));
        let size = pending_size.unwrap_or(header_size);
        let name_bytes = match pending_path {
            Some(path) => path,
            None => {
                let prefix = cstr(&block[PREFIX]);
                // POSIX ustar: a non-empty prefix, a slash, then the name. GNU headers keep
                // atime/ctime in these bytes, so the prefix is read for the POSIX magic only.
                if magic == Magic::Ustar && !prefix.is_empty() {
                    [prefix, &b"/"[..], raw_name].concat()
                } else {
                    raw_name.to_vec()
                }
            }
        };
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let kind = MemberKind::from_typeflag(typeflag);
        if size > 0 && kind.is_dataless() {
            return Err(TarError::SizeOnDataless {
                offset,
                name,
                kind,
                size,
            });
        }
        if self.members.len() >= self.limits.max_members {
            return Err(TarError::TooManyMembers {
                offset,
                limit: self.limits.max_members,
            });
        }

        if magic == Magic::V7 {
            self.warnings.push(TarWarning::NoUstarMagic {
                offset,
                name: name.clone(),
            });
        }
        if signed_checksum {
            self.warnings.push(TarWarning::SignedChecksum {
                offset,
                name: name.clone(),
            });
        }
        if std::str::from_utf8(&name_bytes).is_err() {
            self.warnings.push(TarWarning::NonUtf8Name {
                offset,
                name: name.clone(),
            });
        }
        if is_unsafe_name(&name_bytes) {
            self.warnings.push(TarWarning::UnsafeName {
                offset,
                name: name.clone(),
            });
        }

        let base = name
            .rsplit_once('/')
            .map_or(name.as_str(), |(_, base)| base);
        let sink = if kind == MemberKind::File && CAPTURED_NAMES.contains(&base) {
            if self.captured.len() >= MAX_CAPTURED_MEMBERS {
                self.warnings
                    .push(TarWarning::CaptureSkipped { name: name.clone() });
                Sink::Skip
            } else {
                let kept = self.limits.max_capture;
                let truncated = size > kept as u64;
                if truncated {
                    self.warnings.push(TarWarning::CaptureTruncated {
                        name: name.clone(),
                        size,
                        kept,
                    });
                }
                self.captured.push(Captured {
                    name: name.clone(),
                    bytes: Vec::new(),
                    truncated,
                });
                Sink::Capture(self.captured.len() - 1)
            }
        } else {
            Sink::Skip
        };

        self.members.push(Member {
            name: name.clone(),
            size,
            kind,
            header_offset: offset,
        });
        self.start_data(offset, name, size, sink);
        Ok(())
    }

    fn start_extension(
        &mut self,
        kind: ExtensionKind,
        offset: u64,
        size: u64,
        name: String,
    ) -> Result<(), TarError> {
        if size > MAX_EXTENSION {
            return Err(TarError::ExtensionTooLarge {
                offset,
                kind,
                size,
                limit: MAX_EXTENSION,
            });
        }
        // A global header describes the whole archive, not the next member.
        if kind != ExtensionKind::PaxGlobal && self.pending.is_none() {
            self.pending = Some(Pending {
                offset,
                path: None,
                size: None,
            });
        }
        if size == 0 {
            return self.apply_extension(kind, offset, &[]);
        }
        let sink = Sink::Extension {
            kind,
            buf: Vec::new(),
        };
        self.start_data(offset, name, size, sink);
        Ok(())
    }

    fn start_data(&mut self, header_offset: u64, name: String, size: u64, sink: Sink) {
        if size == 0 {
            self.state = State::Header;
            return;
        }
        let pad = padding(size);
        self.state = State::Data(DataState {
            header_offset,
            name,
            size,
            pad,
            data_left: size,
            pad_left: pad,
            sink,
        });
    }

    /// Counts (or keeps, for captures and extensions) member data and skips its padding.
    fn on_data<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], TarError> {
        let State::Data(d) = &mut self.state else {
            return Ok(data);
        };
        let mut rest = data;
        let mut completed = None;
        if d.data_left > 0 {
            let n = take_len(d.data_left, rest.len());
            let (chunk, after) = rest.split_at(n);
            match &mut d.sink {
                Sink::Skip => {}
                Sink::Capture(index) => {
                    if let Some(c) = self.captured.get_mut(*index) {
                        let room = self.limits.max_capture.saturating_sub(c.bytes.len());
                        c.bytes.extend_from_slice(&chunk[..room.min(n)]);
                    }
                }
                Sink::Extension { buf, .. } => buf.extend_from_slice(chunk),
            }
            d.data_left -= n as u64;
            self.offset += n as u64;
            rest = after;
            if d.data_left == 0 && matches!(d.sink, Sink::Extension { .. }) {
                completed = Some((d.header_offset, std::mem::replace(&mut d.sink, Sink::Skip)));
            }
        }
        if d.data_left == 0 && d.pad_left > 0 {
            let n = take_len(d.pad_left, rest.len());
            d.pad_left -= n as u64;
            self.offset += n as u64;
            rest = &rest[n..];
        }
        if d.data_left == 0 && d.pad_left == 0 {
            self.state = State::Header;
        }
        if let Some((offset, Sink::Extension { kind, buf })) = completed {
            self.apply_extension(kind, offset, &buf)?;
        }
        Ok(rest)
    }

    /// Applies a complete extension header's data to the pending member description.
    fn apply_extension(
        &mut self,
        kind: ExtensionKind,
        offset: u64,
        data: &[u8],
    ) -> Result<(), TarError> {
        let bad_pax = |reason| TarError::BadPaxRecord { offset, reason };
        let check_name = |name: &[u8]| {
            if name.len() > MAX_NAME {
                Err(TarError::NameTooLong {
                    offset,
                    len: name.len(),
                    limit: MAX_NAME,
                })
            } else {
                Ok(())
            }
        };
        match kind {
            ExtensionKind::Pax | ExtensionKind::PaxGlobal => {
                let mut path = None;
                let mut size = None;
                for record in PaxRecords::new(data) {
                    let (key, value) = record.map_err(bad_pax)?;
                    // An empty value undoes the keyword (POSIX pax, "pax Extended Header").
                    match key {
                        b"path" => path = Some((!value.is_empty()).then_some(value)),
                        b"size" if value.is_empty() => size = Some(None),
                        b"size" => {
                            let n = parse_decimal(value)
                                .ok_or_else(|| bad_pax("size record is not a decimal number"))?;
                            size = Some(Some(n));
                        }
                        _ => {}
                    }
                }
                if kind == ExtensionKind::PaxGlobal {
                    return Ok(());
                }
                if let Some(Some(p)) = path {
                    check_name(p)?;
                }
                let pending = self.pending.get_or_insert(Pending {
                    offset,
                    path: None,
                    size: None,
                });
                if let Some(p) = path {
                    pending.path = p.map(<[u8]>::to_vec);
                }
                if let Some(s) = size {
                    pending.size = s;
                }
            }
            ExtensionKind::GnuLongName => {
                let name = cstr(data);
                check_name(name)?;
                let pending = self.pending.get_or_insert(Pending {
                    offset,
                    path: None,
                    size: None,
                });
                pending.path = Some(name.to_vec());
            }
            // Link targets are not recorded.
            ExtensionKind::GnuLongLink => {}
        }
        Ok(())
    }
}

/// Records of pax extended header data: `"%d %s=%s\n"`, the length counting the whole record
/// (POSIX.1-2017 pax, "pax Extended Header"). Trailing NUL bytes after the last record are
/// tolerated. Stops after the first error.
#[derive(Debug)]
struct PaxRecords<'a> {
    rest: &'a [u8],
}

impl<'a> PaxRecords<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    fn next_record(&mut self) -> Result<(&'a [u8], &'a [u8]), &'static str> {
        let rest = self.rest;
        let space = rest
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or("record does not start with a length and a space")?;
        let len = parse_decimal(&rest[..space]).ok_or("record length is not a decimal number")?;
        let len = usize::try_from(len).map_err(|_| "record length too large")?;
        let record = rest
            .get(..len)
            .ok_or("record is longer than the header data")?;
        let body = record
            .get(space + 1..)
            .ok_or("record length is shorter than its own prefix")?;
        let Some((&b'\n', body)) = body.split_last() else {
            return Err("record does not end with a newline");
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record has no `=`")?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        if key.is_empty() {
            return Err("record has an empty keyword");
        }
        self.rest = &rest[len..];
        Ok((key, value))
    }
}

impl<'a> Iterator for PaxRecords<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.first().is_none_or(|&b| b == 0) {
            let only_nuls = self.rest.iter().all(|&b| b == 0);
            self.rest = &[];
            return (!only_nuls).then_some(Err("bytes after a NUL in the header data"));
        }
        let record = self.next_record();
        if record.is_err() {
            self.rest = &[];
        }
        Some(record)
    }
}

/// The bytes of a NUL-terminated field before its first NUL (all of it when there is none).
fn cstr(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |end| &field[..end])
}

/// POSIX unsigned and historical signed header sums, the checksum field counted as spaces.
fn checksums(block: &[u8; BLOCK]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

/// An octal field: optional leading spaces, digits, then a NUL or a space (or the field's
/// end); what follows the terminator is not read, as GNU tar does. No digits reads as 0.
fn parse_octal(field: &[u8]) -> Result<u64, NumberProblem> {
    let mut value = 0u64;
    let digits = field.iter().enumerate().skip_while(|&(_, &b)| b == b' ');
    for (index, &byte) in digits {
        match byte {
            b'0'..=b'7' => {
                value = value
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(byte - b'0')))
                    .ok_or(NumberProblem::Overflow)?;
            }
            0 | b' ' => return Ok(value),
            _ => return Err(NumberProblem::BadDigit { index, byte }),
        }
    }
    Ok(value)
}

/// An octal field, or GNU base-256 when the first byte has its high bit set (the next bit is
/// the sign of a two's-complement number).
fn parse_number(field: &[u8]) -> Result<u64, NumberProblem> {
    match field.split_first() {
        Some((&first, rest)) if first & 0x80 != 0 => {
            if first & 0x40 != 0 {
                return Err(NumberProblem::Negative);
            }
            rest.iter()
                .try_fold(u64::from(first & 0x3f), |acc, &b| {
                    acc.checked_mul(256).map(|v| v | u64::from(b))
                })
                .ok_or(NumberProblem::Overflow)
        }
        _ => parse_octal(field),
    }
}

/// ASCII decimal digits only, at least one.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn is_unsafe_name(name: &[u8]) -> bool {
    name.first() == Some(&b'/') || name.split(|&b| b == b'/').any(|part| part == b"..")
}

/// Zero bytes after `size` bytes of data, up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK_U64 - size % BLOCK_U64) % BLOCK_U64
}

/// `min(left, available)` as a `usize`.
fn take_len(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

/// Exact archive size for members of these sizes, as [`TarBuilder`] writes it (names do not
/// matter: long ones go to the ustar prefix, not to extra headers). Saturates at `u64::MAX`.
pub fn archive_size(member_sizes: &[u64]) -> u64 {
    let body = member_sizes.iter().fold(0u64, |acc, &size| {
        acc.saturating_add(BLOCK_U64)
            .saturating_add(size.saturating_add(padding(size)))
    });
    body.saturating_add(2 * BLOCK_U64)
        .div_ceil(RECORD_U64)
        .saturating_mul(RECORD_U64)
}

/// The mtime [`TarBuilder::new`] writes: 0 (1970-01-01), so output is deterministic.
pub const DEFAULT_MTIME: u64 = 0;

/// Writes a ustar archive of regular files; [`finish`](Self::finish) writes the two zero blocks
/// and pads to a multiple of [`RECORD`].
///
/// Every member gets mode 0644, uid/gid 0, empty user/group names and the builder's mtime, so
/// equal inputs give equal bytes. Names longer than 100 bytes are split into the ustar
/// `prefix` (at most 155 bytes) and `name` (at most 100 bytes) at a `/`; a name that cannot be
/// split that way, an empty name or one containing NUL is refused with
/// [`io::ErrorKind::InvalidInput`] before anything is written. Sizes up to 8 GiB − 1 are
/// written in octal, larger ones in GNU base-256. After an I/O error the archive is incomplete
/// and the builder should be dropped.
pub struct TarBuilder<W: Write> {
    out: W,
    mtime: u64,
    written: u64,
}

impl<W: Write> fmt::Debug for TarBuilder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarBuilder")
            .field("mtime", &self.mtime)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<W: Write> TarBuilder<W> {
    /// A builder writing to `out`, with mtime [`DEFAULT_MTIME`].
    pub fn new(out: W) -> Self {
        Self {
            out,
            mtime: DEFAULT_MTIME,
            written: 0,
        }
    }

    /// Sets the mtime (seconds since the epoch) written for every later member.
    pub fn with_mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Appends a regular file; `data` yields exactly `size` bytes (fewer is an
    /// [`io::ErrorKind::UnexpectedEof`] error; more are not read).
    pub fn append(&mut self, name: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let header = header_block(name, size, self.mtime, b'0')?;
        self.out.write_all(&header)?;
        self.written += BLOCK_U64;
        let copied = io::copy(&mut Read::take(&mut *data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("tar member {name:?}: data ended after {copied} of {size} bytes"),
            ));
        }
        self.written += size;
        let pad = padding(size);
        write_zeros(&mut self.out, pad)?;
        self.written += pad;
        Ok(())
    }

    /// Writes the end-of-archive marker and the record padding, flushes, and returns the
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        let end = self.written + 2 * BLOCK_U64;
        let total = end.div_ceil(RECORD_U64) * RECORD_U64;
        write_zeros(&mut self.out, total - self.written)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_zeros<W: Write + ?Sized>(out: &mut W, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; RECORD] = [0; RECORD];
    while n > 0 {
        let k = take_len(n, RECORD);
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// A ustar header block for a member without link name or device numbers.
fn header_block(name: &str, size: u64, mtime: u64, typeflag: u8) -> io::Result<[u8; BLOCK]> {
    let (prefix, name) = split_name(name)?;
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    put_octal(&mut h[MODE], 0o644);
    put_octal(&mut h[UID], 0);
    put_octal(&mut h[GID], 0);
    put_number(&mut h[SIZE], size);
    put_number(&mut h[MTIME], mtime);
    h[TYPEFLAG] = typeflag;
    h[MAGIC].copy_from_slice(b"ustar\x0000");
    put_octal(&mut h[DEVMAJOR], 0);
    put_octal(&mut h[DEVMINOR], 0);
    h[PREFIX.start..PREFIX.start + prefix.len()].copy_from_slice(prefix);
    set_checksum(&mut h);
    Ok(h)
}

/// Splits a name into ustar `prefix` and `name` fields (the shortest prefix that works).
fn split_name(name: &str) -> io::Result<(&[u8], &[u8])> {
    let bytes = name.as_bytes();
    let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    if bytes.is_empty() {
        return invalid("empty tar member name".to_owned());
    }
    if bytes.contains(&0) {
        return invalid(format!("tar member name {name:?} contains NUL"));
    }
    if bytes.len() <= NAME.len() {
        return Ok((&[], bytes));
    }
    for (i, _) in bytes.iter().enumerate().filter(|&(_, &b)| b == b'/') {
        let (prefix, rest) = (&bytes[..i], &bytes[i + 1..]);
        if prefix.len() > PREFIX.len() {
            break;
        }
        if !prefix.is_empty() && !rest.is_empty() && rest.len() <= NAME.len() {
            return Ok((prefix, rest));
        }
    }
    invalid(format!(
        "tar member name of {} bytes cannot be split into a ustar prefix of at most {} bytes \
         and a name of at most {} bytes at a `/`",
        bytes.len(),
        PREFIX.len(),
        NAME.len()
    ))
}

/// Zero-padded octal digits and a NUL; `value` must fit `field.len() - 1` digits.
fn put_octal(field: &mut [u8], mut value: u64) {
    let Some((last, digits)) = field.split_last_mut() else {
        return;
    };
    *last = 0;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value % 8) as u8;
        value /= 8;
    }
}

/// Octal when it fits, else GNU base-256 (for the 12-byte size and mtime fields).
fn put_number(field: &mut [u8], value: u64) {
    let octal_digits = field.len().saturating_sub(1);
    if octal_digits >= 21 || value < 1u64 << (3 * octal_digits) {
        put_octal(field, value);
        return;
    }
    field.fill(0);
    let bytes = value.to_be_bytes();
    let len = field.len();
    let start = len.saturating_sub(bytes.len());
    field[start..].copy_from_slice(&bytes[bytes.len() - (len - start)..]);
    if let Some(first) = field.first_mut() {
        *first |= 0x80;
    }
}

/// Writes the POSIX checksum: six octal digits, NUL, space (as GNU tar does).
fn set_checksum(h: &mut [u8; BLOCK]) {
    h[CHKSUM].fill(b' ');
    let (sum, _) = checksums(h);
    put_octal(&mut h[CHKSUM.start..CHKSUM.end - 1], sum);
    h[CHKSUM.end - 1] = b' ';
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic non-zero-ish content.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    fn build(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = TarBuilder::new(Vec::new());
        for (name, data) in members {
            b.append(name, data.len() as u64, &mut &data[..]).unwrap();
        }
        b.finish().unwrap()
    }

    /// Feeds `bytes` in pieces of `chunk`; checks that an error sticks.
    fn check_with(bytes: &[u8], chunk: usize, limits: TarLimits) -> Result<TarSummary, TarError> {
        let mut c = TarChecker::new(limits);
        for piece in bytes.chunks(chunk.max(1)) {
            if let Err(e) = c.feed(piece) {
                assert_eq!(c.feed(b"more"), Err(e.clone()), "errors are sticky");
                assert_eq!(c.finish(), Err(e.clone()), "finish repeats the error");
                return Err(e);
            }
        }
        assert_eq!(c.position(), bytes.len() as u64);
        c.finish()
    }

    fn check(bytes: &[u8]) -> Result<TarSummary, TarError> {
        check_with(bytes, usize::MAX, TarLimits::default())
    }

    /// Feeds `bytes` cut at the given positions.
    fn check_cut(bytes: &[u8], cuts: &[usize]) -> Result<TarSummary, TarError> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut c = TarChecker::new(TarLimits::default());
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            // Errors are sticky, so later feeds after an error change nothing.
            let _ = c.feed(&bytes[start..cut]);
            start = cut;
        }
        c.finish()
    }

    fn raw(name: &str, size: u64, typeflag: u8) -> [u8; BLOCK] {
        header_block(name, size, 0, typeflag).unwrap()
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    /// The parts, then the end-of-archive marker and record padding.
    fn archive(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = parts.concat();
        v.resize((v.len() + 2 * BLOCK).div_ceil(RECORD) * RECORD, 0);
        v
    }

    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        loop {
            let record = format!("{len}{body}");
            if record.len() == len {
                return record;
            }
            len = record.len();
        }
    }

    fn pax_header(records: &[u8], typeflag: u8) -> Vec<u8> {
        let mut v = raw("PaxHeaders/x", records.len() as u64, typeflag).to_vec();
        v.extend(padded(records));
        v
    }

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = raw(name, data.len() as u64, b'0').to_vec();
        v.extend(padded(data));
        v
    }

    fn names(s: &TarSummary) -> Vec<&str> {
        s.members.iter().map(|m| m.name.as_str()).collect()
    }

    // ---- round trips ----

    #[test]
    fn empty_archive_is_one_zero_record() {
        let a = build(&[]);
        assert_eq!(a, vec![0; RECORD]);
        assert_eq!(archive_size(&[]), RECORD as u64);
        let s = check(&a).unwrap();
        assert!(s.members.is_empty() && s.captured.is_empty() && s.warnings.is_empty());
    }

    #[test]
    fn one_empty_member() {
        let a = build(&[("empty", b"")]);
        assert_eq!(a.len() as u64, archive_size(&[0]));
        let s = check(&a).unwrap();
        assert_eq!(
            s.members,
            vec![Member {
                name: "empty".into(),
                size: 0,
                kind: MemberKind::File,
                header_offset: 0,
            }]
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn info_first_and_info_ver_last_are_captured() {
        let info = b"image_family: ap1g6a\nws_management_version: 17.10.0.181\ninfo_end:\n";
        let rootfs = pattern(70_001, 3);
        let info_ver = b"ap_version: 17.10.0.181\n";
        let a = build(&[
            ("info", info),
            ("ap1g6a-k9w8/rootfs.img", &rootfs),
            ("info.ver", info_ver),
        ]);
        assert_eq!(
            a.len() as u64,
            archive_size(&[info.len() as u64, 70_001, info_ver.len() as u64])
        );
        for chunk in [1, 7, 512, 513, 65536, usize::MAX] {
            let s = check_with(&a, chunk, TarLimits::default()).unwrap();
            assert_eq!(names(&s), ["info", "ap1g6a-k9w8/rootfs.img", "info.ver"]);
            let offsets: Vec<u64> = s.members.iter().map(|m| m.header_offset).collect();
            assert_eq!(offsets, [0, 1024, 1024 + 512 + 70_144]);
            assert_eq!(
                s.captured,
                vec![
                    Captured {
                        name: "info".into(),
                        bytes: info.to_vec(),
                        truncated: false,
                    },
                    Captured {
                        name: "info.ver".into(),
                        bytes: info_ver.to_vec(),
                        truncated: false,
                    },
                ]
            );
            assert!(s.warnings.is_empty());
        }
    }

    #[test]
    fn big_member_in_odd_chunks() {
        let data = pattern(300_001, 7);
        let a = build(&[("ap1g8/rootfs", &data), ("ver", b"1.2.3")]);
        let whole = check(&a).unwrap();
        assert_eq!(whole.members[0].size, 300_001);
        assert_eq!(whole.members[1].header_offset, 512 + 300_032);
        assert_eq!(whole.captured[0].bytes, b"1.2.3");
        for chunk in [1, 7, 512, 513, 65536] {
            assert_eq!(
                check_with(&a, chunk, TarLimits::default()),
                Ok(whole.clone())
            );
        }
    }

    #[test]
    fn archive_size_matches_the_builder() {
        for sizes in [
            vec![],
            vec![0],
            vec![1],
            vec![511, 512, 513],
            vec![10240 - 1536],
            vec![10240 - 1535],
            vec![20480],
        ] {
            let datas: Vec<Vec<u8>> = sizes.iter().map(|&s| pattern(s as usize, 1)).collect();
            let names: Vec<String> = (0..sizes.len()).map(|i| format!("m{i}")).collect();
            let members: Vec<(&str, &[u8])> = names
                .iter()
                .zip(&datas)
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect();
            assert_eq!(
                build(&members).len() as u64,
                archive_size(&sizes),
                "{sizes:?}"
            );
        }
        // header + data (20480) + end marker (1024) = 22016 → three records
        assert_eq!(archive_size(&[20480]), 30720);
        assert_eq!(archive_size(&[u64::MAX]), u64::MAX);
    }

    #[test]
    fn long_names_use_the_ustar_prefix() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let a = build(&[(&long, b"x")]);
        assert_eq!(
            &a[PREFIX.start..PREFIX.start + 120],
            "d".repeat(120).as_bytes()
        );
        assert_eq!(cstr(&a[NAME]), "f".repeat(90).as_bytes());
        assert_eq!(names(&check(&a).unwrap()), [long.as_str()]);
        // exactly 100 bytes: the name field only, without a NUL
        let hundred = "n".repeat(100);
        let a = build(&[(&hundred, b"")]);
        assert_eq!(a[PREFIX.start], 0);
        assert_eq!(names(&check(&a).unwrap()), [hundred.as_str()]);
    }

    #[test]
    fn unsplittable_names_are_refused() {
        let mut b = TarBuilder::new(Vec::new());
        for name in [
            "x".repeat(101),
            format!("{}/{}", "d".repeat(156), "f"),
            format!("{}/{}", "d".repeat(10), "f".repeat(101)),
            "a\0b".to_owned(),
            String::new(),
        ] {
            let err = b.append(&name, 0, &mut io::empty()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        // nothing was written
        assert_eq!(b.finish().unwrap(), vec![0; RECORD]);
    }

    #[test]
    fn builder_is_deterministic_and_takes_the_mtime() {
        let members: &[(&str, &[u8])] = &[("a", b"hello"), ("b/c", b"")];
        assert_eq!(build(members), build(members));
        let mut b = TarBuilder::new(Vec::new()).with_mtime(1_700_000_000);
        b.append("a", 5, &mut &b"hello"[..]).unwrap();
        let a = b.finish().unwrap();
        assert_eq!(parse_number(&a[MTIME]), Ok(1_700_000_000));
        assert_ne!(a, build(&members[..1]));
        assert_eq!(check(&a).unwrap().members[0].size, 5);
    }

    #[test]
    fn builder_refuses_short_data() {
        let mut b = TarBuilder::new(Vec::new());
        let err = b.append("a", 10, &mut &b"short"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn huge_sizes_are_written_in_base_256() {
        let below = header_block("a", (8 << 30) - 1, 0, b'0').unwrap();
        assert_eq!(&below[SIZE], b"77777777777\0");
        let h = header_block("a", 8 << 30, 0, b'0').unwrap();
        assert_eq!(h[SIZE.start], 0x80);
        assert_eq!(parse_number(&h[SIZE]), Ok(8 << 30));
        let h = header_block("a", u64::MAX, u64::MAX, b'0').unwrap();
        assert_eq!(parse_number(&h[SIZE]), Ok(u64::MAX));
        assert_eq!(parse_number(&h[MTIME]), Ok(u64::MAX));
        // a header alone checks out up to the truncated data
        let err = check(&h).unwrap_err();
        assert!(
            matches!(
                err,
                TarError::Truncated {
                    offset: 0,
                    got: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    // ---- checksums ----

    #[test]
    fn flipped_header_byte_is_a_bad_checksum() {
        let a = build(&[("a", b"hello"), ("second", b"world")]);
        let good = check(&a).unwrap();
        assert_eq!(good.members[1].header_offset, 1024);
        let stored = parse_octal(&a[1024 + CHKSUM.start..1024 + CHKSUM.end]).unwrap();

        let mut bad = a.clone();
        bad[1024 + 1] ^= 0x01; // "second" → "sdcond": the sum drops by one
        assert_eq!(
            check(&bad),
            Err(TarError::BadChecksum {
                offset: 1024,
                name: "sdcond".into(),
                stored,
                computed: stored - 1,
            })
        );

        let mut bad = a;
        bad[1024 + CHKSUM.start + 3] ^= 0x01; // a digit of the stored sum
        assert!(matches!(
            check(&bad),
            Err(TarError::BadChecksum { offset: 1024, computed, .. }) if computed == stored
        ));
    }

    #[test]
    fn signed_checksum_is_accepted_with_a_warning() {
        let mut h = raw("x", 0, b'0');
        h[0] = 0xE9; // 'é' in Latin-1: not UTF-8 either
        let (_, signed) = checksums(&h);
        assert_ne!(u64::try_from(signed).unwrap(), checksums(&h).0);
        put_octal(&mut h[CHKSUM.start..CHKSUM.end - 1], signed as u64);
        h[CHKSUM.end - 1] = b' ';
        let s = check(&archive(&[&h])).unwrap();
        assert_eq!(s.members[0].name, "\u{FFFD}");
        assert_eq!(
            s.warnings,
            [
                TarWarning::SignedChecksum {
                    offset: 0,
                    name: "\u{FFFD}".into()
                },
                TarWarning::NonUtf8Name {
                    offset: 0,
                    name: "\u{FFFD}".into()
                },
            ]
        );
    }

    #[test]
    fn unparsable_checksum_field() {
        let mut h = raw("x", 0, b'0');
        h[CHKSUM].copy_from_slice(b"12x456\0 ");
        assert_eq!(
            check(&archive(&[&h])),
            Err(TarError::BadNumber {
                offset: 0,
                name: "x".into(),
                field: NumericField::Checksum,
                problem: NumberProblem::BadDigit {
                    index: 2,
                    byte: b'x'
                },
            })
        );
    }

    // ---- numeric fields ----

    fn with_field(range: Range<usize>, value: &[u8], data_len: usize) -> Vec<u8> {
        let mut h = raw("n", data_len as u64, b'0');
        h[range].copy_from_slice(value);
        set_checksum(&mut h);
        archive(&[&h, &padded(&pattern(data_len, 5))])
    }

    #[test]
    fn octal_forms_that_are_accepted() {
        for (field, want) in [
            (b"00000000012\0", 10),
            (b"00000000012 ", 10),
            (b"000000000012", 10),
            (b"         12 ", 10),
            (b"     12\0    ", 10),
            (b"12\0garbage!!", 10),
            (b"\0\0\0\0\0\0\0\0\0\0\0\0", 0),
        ] {
            let a = with_field(SIZE, field, want);
            let s = check(&a).unwrap();
            assert_eq!(s.members[0].size, want as u64, "{field:?}");
        }
    }

    #[test]
    fn bad_octal_digits_are_named() {
        for (range, value, field, index, byte) in [
            (SIZE, &b"0000000001x\0"[..], NumericField::Size, 10, b'x'),
            (SIZE, &b"00000000018\0"[..], NumericField::Size, 10, b'8'),
            (SIZE, &b" -1         "[..], NumericField::Size, 1, b'-'),
            (MODE, &b"0006x4\0\0"[..], NumericField::Mode, 4, b'x'),
            (MTIME, &b"0123456701z\0"[..], NumericField::Mtime, 10, b'z'),
        ] {
            assert_eq!(
                check(&with_field(range, value, 0)),
                Err(TarError::BadNumber {
                    offset: 0,
                    name: "n".into(),
                    field,
                    problem: NumberProblem::BadDigit { index, byte },
                })
            );
        }
    }

    #[test]
    fn base_256_sizes() {
        let mut size = [0u8; 12];
        size[0] = 0x80;
        size[10] = 0x03;
        size[11] = 0xE8; // 1000
        let s = check(&with_field(SIZE, &size, 1000)).unwrap();
        assert_eq!(s.members[0].size, 1000);

        let negative = [0xFF; 12];
        assert!(matches!(
            check(&with_field(SIZE, &negative, 0)),
            Err(TarError::BadNumber {
                field: NumericField::Size,
                problem: NumberProblem::Negative,
                ..
            })
        ));
        let mut huge = [0u8; 12];
        huge[0] = 0x80;
        huge[1] = 1; // 256^10
        assert!(matches!(
            check(&with_field(SIZE, &huge, 0)),
            Err(TarError::BadNumber {
                field: NumericField::Size,
                problem: NumberProblem::Overflow,
                ..
            })
        ));
        // a negative base-256 mtime (before 1970) is fine
        let s = check(&with_field(MTIME, &negative, 0)).unwrap();
        assert_eq!(s.members.len(), 1);
    }

    #[test]
    fn octal_overflow() {
        assert_eq!(
            parse_octal(b"7777777777777777777777"),
            Err(NumberProblem::Overflow)
        );
        assert_eq!(parse_octal(b"1777777777777777777777"), Ok(u64::MAX));
    }

    // ---- truncation and the end of the archive ----

    #[test]
    fn truncated_in_data_or_padding() {
        let a = build(&[("info", &pattern(700, 1))]);
        // header 0..512, data 512..1212, padding to 1536
        for (cut, got) in [(1000, 488), (1024, 512), (1212, 700), (1300, 788), (513, 1)] {
            assert_eq!(
                check(&a[..cut]),
                Err(TarError::Truncated {
                    member: "info".into(),
                    offset: 0,
                    expected: 1024,
                    got,
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn missing_end_of_archive() {
        let a = build(&[("a", &pattern(700, 1))]);
        assert_eq!(
            check(&a[..1536]),
            Err(TarError::NoEndOfArchive { offset: 1536 })
        );
        assert_eq!(
            check(&a[..2048]),
            Err(TarError::NoEndOfArchive { offset: 2048 })
        );
        assert_eq!(
            check(&a[..512]),
            Err(TarError::Truncated {
                member: "a".into(),
                offset: 0,
                expected: 1024,
                got: 0,
            })
        );
        // two zero blocks are enough; the record padding is not required
        let s = check(&a[..2560]).unwrap();
        assert_eq!(s.warnings, [TarWarning::NotRecordMultiple { len: 2560 }]);
        // one zero block alone is not an archive
        assert_eq!(
            check(&[0; 512]),
            Err(TarError::NoEndOfArchive { offset: 512 })
        );
    }

    #[test]
    fn lone_zero_block_in_the_middle() {
        let a = archive(&[&member("a", b"x"), &[0; BLOCK], &member("b", b"y")]);
        assert_eq!(check(&a), Err(TarError::LoneZeroBlock { offset: 1024 }));
    }

    #[test]
    fn trailing_bytes_after_the_end() {
        let mut a = build(&[("a", b"hello")]);
        // marker at 1024..2048, zero record padding after it
        a[5000] = 0x42;
        a[9000] = 0x43;
        let s = check(&a).unwrap();
        assert_eq!(s.warnings, [TarWarning::TrailingData { offset: 5000 }]);
        // nothing after the first trailing byte is inspected, not even a broken "header"
        let mut more = a.clone();
        more.extend_from_slice(&raw("junk", 3, b'0'));
        more[a.len() + CHKSUM.start] = b'9';
        let s = check(&more).unwrap();
        assert_eq!(
            s.warnings,
            [
                TarWarning::TrailingData { offset: 5000 },
                TarWarning::NotRecordMultiple {
                    len: RECORD as u64 + 512
                },
            ]
        );
        // extra zero blocks are fine
        let mut zeros = build(&[("a", b"hello")]);
        zeros.extend_from_slice(&[0; RECORD]);
        assert!(check(&zeros).unwrap().warnings.is_empty());
    }

    #[test]
    fn length_not_a_block_multiple() {
        let mut a = build(&[("a", b"hello")]);
        a.extend_from_slice(&[0; 100]);
        assert_eq!(
            check(&a),
            Err(TarError::NotBlockMultiple {
                len: RECORD as u64 + 100
            })
        );
        let a = build(&[("a", b"hello")]);
        assert_eq!(
            check(&a[..10000]),
            Err(TarError::NotBlockMultiple { len: 10000 })
        );
        // a partial header
        assert_eq!(
            check(&a[..100]),
            Err(TarError::NotBlockMultiple { len: 100 })
        );
        // after trailing garbage too
        let mut g = a.clone();
        g[3000] = 1;
        assert_eq!(
            check(&g[..3001]),
            Err(TarError::NotBlockMultiple { len: 3001 })
        );
    }

    #[test]
    fn empty_stream() {
        assert_eq!(check(b""), Err(TarError::Empty));
        assert_eq!(
            TarChecker::new(TarLimits::default()).finish(),
            Err(TarError::Empty)
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut c = TarChecker::new(TarLimits::default());
        let mut h = raw("x", 0, b'0');
        h[0] = b'y';
        let e = c.feed(&h).unwrap_err();
        assert!(matches!(e, TarError::BadChecksum { .. }));
        assert_eq!(c.feed(&build(&[])), Err(e.clone()));
        assert_eq!(c.feed(b""), Err(e.clone()));
        assert_eq!(c.finish(), Err(e));
    }

    // ---- limits ----

    #[test]
    fn too_many_members() {
        let a = build(&[("a", b""), ("b", b""), ("c", b"")]);
        let limits = TarLimits {
            max_members: 2,
            ..TarLimits::default()
        };
        assert_eq!(
            check_with(&a, 512, limits),
            Err(TarError::TooManyMembers {
                offset: 1024,
                limit: 2
            })
        );
        let limits = TarLimits {
            max_members: 3,
            ..TarLimits::default()
        };
        assert_eq!(check_with(&a, 512, limits).unwrap().members.len(), 3);
    }

    #[test]
    fn captured_member_longer_than_the_limit() {
        let info = pattern(20, 9);
        let a = build(&[("x/info", &info)]);
        let limits = TarLimits {
            max_capture: 10,
            ..TarLimits::default()
        };
        for chunk in [1, 3, 512, usize::MAX] {
            let s = check_with(&a, chunk, limits).unwrap();
            assert_eq!(
                s.captured,
                [Captured {
                    name: "x/info".into(),
                    bytes: info[..10].to_vec(),
                    truncated: true,
                }]
            );
            assert_eq!(
                s.warnings,
                [TarWarning::CaptureTruncated {
                    name: "x/info".into(),
                    size: 20,
                    kept: 10,
                }]
            );
        }
    }

    #[test]
    fn only_regular_files_with_the_right_base_name_are_captured() {
        let dir = raw("info", 0, b'5');
        let a = archive(&[
            &member("dir/info", b"1"),
            &member("information", b"2"),
            &member("info.ver.bak", b"3"),
            &member("ver", b"4"),
            &member("./info.ver", b"5"),
            &dir,
        ]);
        let s = check(&a).unwrap();
        let captured: Vec<(&str, &[u8])> = s
            .captured
            .iter()
            .map(|c| (c.name.as_str(), c.bytes.as_slice()))
            .collect();
        assert_eq!(
            captured,
            [
                ("dir/info", &b"1"[..]),
                ("ver", &b"4"[..]),
                ("./info.ver", &b"5"[..])
            ]
        );
        assert_eq!(s.members[5].kind, MemberKind::Directory);
    }

    #[test]
    fn at_most_sixteen_captures() {
        let parts: Vec<Vec<u8>> = (0..MAX_CAPTURED_MEMBERS + 1)
            .map(|i| member(&format!("{i}/info"), b"x"))
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let s = check(&archive(&refs)).unwrap();
        assert_eq!(s.captured.len(), MAX_CAPTURED_MEMBERS);
        assert_eq!(
            s.warnings,
            [TarWarning::CaptureSkipped {
                name: format!("{MAX_CAPTURED_MEMBERS}/info")
            }]
        );
    }

    // ---- names and header kinds ----

    #[test]
    fn unsafe_and_non_utf8_names_are_warnings() {
        let mut odd = raw("ab", 0, b'0');
        odd[1] = 0xFF;
        set_checksum(&mut odd);
        let a = archive(&[
            &member("/etc/passwd", b""),
            &member("a/../b", b""),
            &member("..", b""),
            &member("a..b/..c", b""),
            &odd,
        ]);
        let s = check(&a).unwrap();
        assert_eq!(
            s.warnings,
            [
                TarWarning::UnsafeName {
                    offset: 0,
                    name: "/etc/passwd".into()
                },
                TarWarning::UnsafeName {
                    offset: 512,
                    name: "a/../b".into()
                },
                TarWarning::UnsafeName {
                    offset: 1024,
                    name: "..".into()
                },
                TarWarning::NonUtf8Name {
                    offset: 2048,
                    name: "a\u{FFFD}".into()
                },
            ]
        );
    }

    #[test]
    fn v7_header_without_magic() {
        let mut h = raw("old", 3, b'0');
        h[MAGIC].fill(0);
        h[PREFIX.start] = b'p'; // not a prefix in a v7 header
        set_checksum(&mut h);
        let s = check(&archive(&[&h, &padded(b"abc")])).unwrap();
        assert_eq!(names(&s), ["old"]);
        assert_eq!(
            s.warnings,
            [TarWarning::NoUstarMagic {
                offset: 0,
                name: "old".into()
            }]
        );
    }

    #[test]
    fn gnu_magic_does_not_join_the_prefix() {
        let mut h = raw("name", 0, b'0');
        h[MAGIC].copy_from_slice(b"ustar  \0");
        h[PREFIX.start..PREFIX.start + 11].copy_from_slice(b"14712345670"); // GNU atime
        set_checksum(&mut h);
        let s = check(&archive(&[&h])).unwrap();
        assert_eq!(names(&s), ["name"]);
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn member_kinds() {
        let a = archive(&[
            &raw("d/", 0, b'5'),
            &raw("l", 0, b'2'),
            &raw("h", 0, b'1'),
            &raw("f", 0, b'6'),
            &member("plain", b""),
            &raw("c", 3, b'7'),
            &padded(b"abc"),
            &raw("h2", 2, b'1'),
            &padded(b"hl"),
        ]);
        let s = check(&a).unwrap();
        let kinds: Vec<MemberKind> = s.members.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MemberKind::Directory,
                MemberKind::Symlink,
                MemberKind::HardLink,
                MemberKind::Other(b'6'),
                MemberKind::File,
                MemberKind::Other(b'7'),
                MemberKind::HardLink,
            ]
        );
        assert_eq!(s.members[5].size, 3);
        assert_eq!(s.members[6].header_offset, 7 * 512);

        let mut nul_flag = raw("v7file", 1, 0);
        set_checksum(&mut nul_flag);
        let s = check(&archive(&[&nul_flag, &padded(b"z")])).unwrap();
        assert_eq!(s.members[0].kind, MemberKind::File);
    }

    #[test]
    fn dataless_types_must_have_size_zero() {
        for flag in [b'2', b'3', b'4', b'5', b'6'] {
            let a = archive(&[&raw("x", 5, flag), &padded(b"12345")]);
            assert_eq!(
                check(&a),
                Err(TarError::SizeOnDataless {
                    offset: 0,
                    name: "x".into(),
                    kind: MemberKind::from_typeflag(flag),
                    size: 5,
                })
            );
        }
    }

    // ---- pax and GNU extensions ----

    #[test]
    fn pax_path_replaces_the_name() {
        let long = format!("{}/info.ver", "deep/".repeat(60));
        let records = pax_record("path", &long) + &pax_record("mtime", "1700000000.5");
        let pax = pax_header(records.as_bytes(), b'x');
        let a = archive(&[&pax, &member("short", b"hello"), &member("next", b"")]);
        let s = check(&a).unwrap();
        assert_eq!(names(&s), [long.as_str(), "next"]);
        assert_eq!(s.members[0].header_offset, pax.len() as u64);
        assert_eq!(s.members[0].size, 5);
        assert_eq!(s.captured[0].name, long);
        assert_eq!(s.captured[0].bytes, b"hello");
        for chunk in [1, 100, 513] {
            assert_eq!(check_with(&a, chunk, TarLimits::default()), Ok(s.clone()));
        }
    }

    #[test]
    fn empty_pax_path_keeps_the_header_name() {
        let records = pax_record("path", "gone") + &pax_record("path", "");
        let pax = pax_header(records.as_bytes(), b'x');
        let s = check(&archive(&[&pax, &member("kept", b"")])).unwrap();
        assert_eq!(names(&s), ["kept"]);
    }

    #[test]
    fn pax_size_replaces_the_size() {
        let pax = pax_header(pax_record("size", "600").as_bytes(), b'x');
        let data = pattern(600, 2);
        let mut h = raw("big", 0, b'0');
        h[SIZE].copy_from_slice(b"00000000005\0"); // overridden
        set_checksum(&mut h);
        let a = archive(&[&pax, &h, &padded(&data), &member("after", b"")]);
        let s = check(&a).unwrap();
        assert_eq!(s.members[0].size, 600);
        assert_eq!(names(&s), ["big", "after"]);
        // an empty size record undoes the override
        let records = pax_record("size", "600") + &pax_record("size", "");
        let pax = pax_header(records.as_bytes(), b'x');
        let s = check(&archive(&[&pax, &member("small", b"12345")])).unwrap();
        assert_eq!(s.members[0].size, 5);
    }

    #[test]
    fn pax_global_header_is_checked_and_ignored() {
        let g = pax_header(pax_record("path", "zzz").as_bytes(), b'g');
        let s = check(&archive(&[&g, &member("a", b"1")])).unwrap();
        assert_eq!(names(&s), ["a"]);
        // a global header alone is an empty archive, not a dangling extension
        assert!(check(&archive(&[&g])).unwrap().members.is_empty());
        let bad = pax_header(b"3 a\n", b'g');
        assert!(matches!(
            check(&archive(&[&bad, &member("a", b"1")])),
            Err(TarError::BadPaxRecord { offset: 0, .. })
        ));
    }

    #[test]
    fn bad_pax_records() {
        for records in [
            &b"x"[..],
            b"99 path=a\n",
            b"3 a\n",
            b"7 path\n",
            b"6 =ab\n",
            b"0 \n",
            b"1 ",
            b"12 size=abc\n",
            b"8 a=bcd\nxx",
            b"8 a=bcd\n\0\0x",
            b"8 a=bcd\r",
            b"18446744073709551616 a=b\n",
            b"123456789012345678901234 a=b\n",
        ] {
            let pax = pax_header(records, b'x');
            let err = check(&archive(&[&pax, &member("a", b"")])).unwrap_err();
            assert!(
                matches!(err, TarError::BadPaxRecord { offset: 0, .. }),
                "{:?}: {err:?}",
                String::from_utf8_lossy(records)
            );
        }
        // accepted forms: leading zeros in the length, trailing NULs, `=` in the value
        for records in [&b"07 a=b\n"[..], b"8 a=bcd\n\0\0\0", b"10 a=b=c=\n"] {
            let pax = pax_header(records, b'x');
            let s = check(&archive(&[&pax, &member("a", b"")])).unwrap();
            assert_eq!(names(&s), ["a"]);
        }
    }

    #[test]
    fn oversized_extension() {
        let h = raw("PaxHeaders/x", MAX_EXTENSION + 1, b'x');
        assert_eq!(
            check(&h),
            Err(TarError::ExtensionTooLarge {
                offset: 0,
                kind: ExtensionKind::Pax,
                size: MAX_EXTENSION + 1,
                limit: MAX_EXTENSION,
            })
        );
    }

    #[test]
    fn overlong_names() {
        let pax = pax_header(
            pax_record("path", &"p".repeat(MAX_NAME + 1)).as_bytes(),
            b'x',
        );
        assert_eq!(
            check(&archive(&[&pax, &member("a", b"")])),
            Err(TarError::NameTooLong {
                offset: 0,
                len: MAX_NAME + 1,
                limit: MAX_NAME
            })
        );
        let pax = pax_header(pax_record("path", &"p".repeat(MAX_NAME)).as_bytes(), b'x');
        assert!(check(&archive(&[&pax, &member("a", b"")])).is_ok());
    }

    #[test]
    fn dangling_extension() {
        let pax = pax_header(pax_record("path", "x").as_bytes(), b'x');
        assert_eq!(
            check(&archive(&[&pax])),
            Err(TarError::DanglingExtension { offset: 0 })
        );
        let empty = raw("PaxHeaders/x", 0, b'x');
        assert_eq!(
            check(&archive(&[&member("a", b""), &empty])),
            Err(TarError::DanglingExtension { offset: 512 })
        );
        // the stream ends right after the extension data
        assert_eq!(
            check(&pax),
            Err(TarError::NoEndOfArchive {
                offset: pax.len() as u64
            })
        );
    }

    fn gnu(name: &str, size: u64, flag: u8) -> [u8; BLOCK] {
        let mut h = raw(name, size, flag);
        h[MAGIC].copy_from_slice(b"ustar  \0");
        set_checksum(&mut h);
        h
    }

    #[test]
    fn gnu_long_name_and_link() {
        let long = "L".repeat(200) + "/ver";
        let mut name_data = long.as_bytes().to_vec();
        name_data.push(0);
        let target = b"some/long/target\0";
        let a = archive(&[
            &gnu("././@LongLink", name_data.len() as u64, b'L'),
            &padded(&name_data),
            &gnu("truncated-name", 3, b'0'),
            &padded(b"1.0"),
            &gnu("././@LongLink", target.len() as u64, b'K'),
            &padded(target),
            &gnu("link", 0, b'1'),
        ]);
        let s = check(&a).unwrap();
        assert_eq!(names(&s), [long.as_str(), "link"]);
        assert_eq!(s.members[0].header_offset, 1024);
        assert_eq!(s.members[1].kind, MemberKind::HardLink);
        assert_eq!(s.captured[0].bytes, b"1.0");
        for chunk in [1, 511, 1000] {
            assert_eq!(check_with(&a, chunk, TarLimits::default()), Ok(s.clone()));
        }
        // a pax header and a GNU long name for the same member: the later one wins
        let pax = pax_header(pax_record("path", "from-pax").as_bytes(), b'x');
        let a = archive(&[
            &pax,
            &gnu("././@LongLink", name_data.len() as u64, b'L'),
            &padded(&name_data),
            &gnu("x", 0, b'0'),
        ]);
        assert_eq!(names(&check(&a).unwrap()), [long.as_str()]);
    }

    #[test]
    fn errors_and_warnings_display_where() {
        let e = TarError::BadChecksum {
            offset: 1024,
            name: "b".into(),
            stored: 1,
            computed: 2,
        };
        assert!(e.to_string().contains("1024"), "{e}");
        let e = TarError::BadNumber {
            offset: 7,
            name: "n".into(),
            field: NumericField::Size,
            problem: NumberProblem::BadDigit {
                index: 3,
                byte: b'x',
            },
        };
        let text = e.to_string();
        assert!(
            text.contains("size") && text.contains("'x'") && text.contains('7'),
            "{text}"
        );
        let w = TarWarning::TrailingData { offset: 5000 };
        assert!(w.to_string().contains("5000"));
    }

    // ---- properties ----

    fn small_archive() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((0usize..4, 0usize..1200), 0..4).prop_map(|specs| {
            let mut parts = Vec::new();
            for (i, (shape, len)) in specs.into_iter().enumerate() {
                let data = pattern(len, i as u8);
                match shape {
                    0 => parts.push(member(&format!("m{i}/info"), &data)),
                    1 => {
                        let path = pax_record("path", &format!("pax{i}/{}", "x".repeat(len % 150)));
                        parts.push(pax_header(path.as_bytes(), b'x'));
                        parts.push(member("short", &data));
                    }
                    2 => {
                        let mut name = format!("gnu{i}/ver").into_bytes();
                        name.push(0);
                        parts.push(gnu("././@LongLink", name.len() as u64, b'L').to_vec());
                        parts.push(padded(&name));
                        parts.push(gnu("x", data.len() as u64, b'0').to_vec());
                        parts.push(padded(&data));
                    }
                    _ => parts.push(raw(&format!("d{i}"), 0, b'5').to_vec()),
                }
            }
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            archive(&refs)
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_chunking_is_invisible(
            bytes in prop::collection::vec(any::<u8>(), 0..3000),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            prop_assert_eq!(check_cut(&bytes, &cuts), check(&bytes));
        }

        #[test]
        fn mutated_archives_chunking_is_invisible(
            archive in small_archive(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 0..4),
            cut in prop::option::of(any::<usize>()),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut a = archive;
            prop_assert!(check(&a).is_ok());
            for (at, byte, fix) in edits {
                let at = at % a.len();
                a[at] = byte;
                if fix {
                    // repair the checksum of the block, whatever it is, so that number and
                    // type handling get exercised and not only the checksum
                    let start = at / BLOCK * BLOCK;
                    let block: &mut [u8; BLOCK] = (&mut a[start..start + BLOCK]).try_into().unwrap();
                    set_checksum(block);
                }
            }
            if let Some(cut) = cut {
                a.truncate(cut % (a.len() + 1));
            }
            let whole = check(&a);
            prop_assert_eq!(check_cut(&a, &cuts), whole.clone());
            if let Ok(s) = whole {
                prop_assert!(s.captured.iter().all(|c| c.bytes.len() <= 64 * 1024));
            }
        }

        #[test]
        fn builder_round_trip(
            members in prop::collection::vec(
                ("[a-z0-9_][a-z0-9_.]{0,19}(/[a-z0-9_][a-z0-9_.]{0,59}){0,3}", 0usize..3000),
                0..8,
            ),
            chunk in 1usize..2000,
        ) {
            prop_assume!(members.iter().all(|(n, _)| split_name(n).is_ok()));
            let datas: Vec<Vec<u8>> =
                members.iter().enumerate().map(|(i, (_, len))| pattern(*len, i as u8)).collect();
            let list: Vec<(&str, &[u8])> =
                members.iter().zip(&datas).map(|((n, _), d)| (n.as_str(), d.as_slice())).collect();
            let a = build(&list);
            let sizes: Vec<u64> = datas.iter().map(|d| d.len() as u64).collect();
            prop_assert_eq!(a.len() as u64, archive_size(&sizes));

            let s = check_with(&a, chunk, TarLimits::default()).unwrap();
            prop_assert!(s.warnings.is_empty(), "{:?}", s.warnings);
            let mut offset = 0u64;
            let mut captured = Vec::new();
            for (m, (name, data)) in s.members.iter().zip(&list) {
                prop_assert_eq!(&m.name, name);
                prop_assert_eq!(m.size, data.len() as u64);
                prop_assert_eq!(m.kind, MemberKind::File);
                prop_assert_eq!(m.header_offset, offset);
                offset += BLOCK_U64 + data.len().div_ceil(BLOCK) as u64 * BLOCK_U64;
                let base = name.rsplit('/').next().unwrap();
                if CAPTURED_NAMES.contains(&base) {
                    captured.push(Captured {
                        name: name.to_string(),
                        bytes: data.to_vec(),
                        truncated: false,
                    });
                }
            }
            prop_assert_eq!(s.members.len(), list.len());
            prop_assert_eq!(s.captured, captured);
        }
    }
}
