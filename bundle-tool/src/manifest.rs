//! Fingerprints written next to staged images, and their verification.
//!
//! Three files, written atomically (temporary file, `fsync`, rename):
//! - `manifest.json`: version, and size, SHA-256 and MD5 of every file (MD5 because CAPWAP's
//!   Image Information element carries it; the controller reads it from here);
//! - `SHA256SUMS` and `MD5SUMS`: the same hashes in coreutils' format, so `sha256sum -c
//!   SHA256SUMS` works on a machine without this tool.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::check::{CONTROLLER_VERSION_INFO, Report, VERSION_INFO};
use crate::report::{Code, Finding};
use crate::scan::{self, Job, ScanError};
use crate::source::{IoError, Limits, Source};
use crate::version::{parse_controller_version, parse_version_info};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Largest `manifest.json` read (a real one is about 2 KiB).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The manifest format written and understood.
pub const FORMAT: &str = "airlift-manifest/1";

/// One file's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Lower-case hex MD5.
    pub md5: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// From `version.info`, when valid.
    pub version: Option<String>,
    /// From `controller_version.info`, when valid.
    pub controller_version: Option<String>,
    /// Every file, sorted by name.
    pub files: Vec<FileSum>,
}

impl Manifest {
    /// The manifest of an inspected (and hashed) bundle.
    pub fn from_report(report: &Report) -> Manifest {
        let files = report
            .files
            .iter()
            .filter_map(|f| {
                Some(FileSum {
                    name: f.name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone()?,
                    md5: f.md5.clone()?,
                })
            })
            .collect();
        Manifest {
            format: FORMAT.to_owned(),
            version: report.version.clone(),
            controller_version: report.controller_version.clone(),
            files,
        }
    }

    /// Writes the three manifest files into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<(), IoError> {
        let mut json = serde_json::to_string_pretty(self)
            .map_err(|e| IoError::new(&dir.join(MANIFEST), std::io::Error::other(e)))?;
        json.push('\n');
        let sums = |pick: fn(&FileSum) -> &str| -> String {
            self.files
                .iter()
                .map(|f| format!("{}  {}\n", pick(f), f.name))
                .collect()
        };
        write_atomically(dir, MANIFEST, json.as_bytes())?;
        write_atomically(dir, "SHA256SUMS", sums(|f| &f.sha256).as_bytes())?;
        write_atomically(dir, "MD5SUMS", sums(|f| &f.md5).as_bytes())?;
        Ok(())
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        use std::io::Read;
        let path = dir.join(MANIFEST);
        let io = |e| ManifestError::Io(IoError::new(&path, e));
        // Not through a link, not from a FIFO or device, not more than MAX_MANIFEST bytes.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(ManifestError::Invalid {
                path: path.clone(),
                why: "not a regular file".to_owned(),
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Manifest::parse(&bytes, &path)
    }

    /// Parses the bytes of a `manifest.json` (`path` names it in errors); also used by relay
    /// for a manifest fetched from a server.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(ManifestError::Invalid {
                path: path.to_owned(),
                why: format!("larger than {MAX_MANIFEST} bytes"),
            });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        if m.format != FORMAT {
            return Err(ManifestError::Invalid {
                path: path.to_owned(),
                why: format!("format {:?}, expected {FORMAT:?}", m.format),
            });
        }
        Ok(m)
    }
}

/// `manifest.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It cannot be read.
    #[error(transparent)]
    Io(IoError),
    /// It is not a manifest this tool wrote.
    #[error("{}: not a valid manifest: {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Writes `dir/name` through a temporary file, `fsync` and rename, mode 0644.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let path = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        IoError::new(&path, e)
    })
}

/// Fingerprints every file of the folder `dir` (flat; the manifest files themselves are left
/// out). Files that cannot be fingerprinted safely (symbolic links, devices, unsafe names) are
/// findings with severity error and are left out; the others are hashed.
pub fn fingerprint(
    dir: &Path,
    cancel: &AtomicBool,
    progress: &indicatif::ProgressBar,
    threads: usize,
) -> Result<(Manifest, Vec<Finding>), ScanError> {
    let opened = Source::open(dir, &Limits::default())?;
    if !matches!(opened.source, Source::Dir { .. }) {
        return Err(ScanError::Io(IoError::new(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
        )));
    }
    let mut findings = opened.findings;
    let mut manifest = Manifest {
        format: FORMAT.to_owned(),
        version: None,
        controller_version: None,
        files: Vec::new(),
    };
    let jobs: Vec<Job> = (0..opened.entries.len())
        .map(|i| Job {
            entry: i,
            tar: false,
            capture: [VERSION_INFO, CONTROLLER_VERSION_INFO]
                .contains(&opened.entries[i].name.as_str()),
        })
        .collect();
    progress.set_length(opened.entries.iter().map(|e| e.size).sum());
    let opts = scan::Options {
        hash: true,
        extract: None,
        fsync: false,
        cancel,
        progress,
        threads,
    };
    let outcomes = scan::run(&opened.source, &opened.entries, &jobs, &opts)?;
    for (e, o) in opened.entries.iter().zip(outcomes) {
        if let Some(why) = o.corrupt {
            findings.push(Finding::error(
                Code::SizeMismatch,
                Some(&e.name),
                format!("changed while being read: {why}"),
            ));
            continue;
        }
        match (e.name.as_str(), o.captured.as_deref()) {
            (VERSION_INFO, Some(b)) => {
                manifest.version = parse_version_info(b).ok().map(|v| v.to_string())
            }
            (CONTROLLER_VERSION_INFO, Some(b)) => {
                manifest.controller_version = parse_controller_version(b).ok()
            }
            _ => {}
        }
        if let (Some(sha256), Some(md5)) = (o.sha256, o.md5) {
            manifest.files.push(FileSum {
                name: e.name.clone(),
                size: o.read,
                sha256,
                md5,
            });
        }
    }
    manifest.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((manifest, findings))
}

/// One difference `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The file.
    pub name: String,
    /// `size`, `sha256` or `md5`.
    pub field: &'static str,
    /// What the manifest says.
    pub expected: String,
    /// What the file has.
    pub found: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The folder.
    pub dir: String,
    /// Nothing differs, is missing or is extra.
    pub ok: bool,
    /// Files compared.
    pub checked: usize,
    /// Files whose size or hashes differ.
    pub differs: Vec<Mismatch>,
    /// In the manifest, not in the folder.
    pub missing: Vec<String>,
    /// In the folder, not in the manifest.
    pub extra: Vec<String>,
    /// Files that could not be checked (symbolic links, devices, …).
    pub findings: Vec<Finding>,
}

/// Compares the folder `dir` with its `manifest.json`.
pub fn verify(
    dir: &Path,
    cancel: &AtomicBool,
    progress: &indicatif::ProgressBar,
    threads: usize,
) -> Result<Result<Verification, ManifestError>, ScanError> {
    let expected = match Manifest::read(dir) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let (found, findings) = fingerprint(dir, cancel, progress, threads)?;
    let want: BTreeMap<&str, &FileSum> = expected
        .files
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    let have: BTreeMap<&str, &FileSum> = found.files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut differs = Vec::new();
    for (name, w) in &want {
        let Some(h) = have.get(name) else { continue };
        let fields: [(&'static str, String, String); 3] = [
            ("size", w.size.to_string(), h.size.to_string()),
            ("sha256", w.sha256.clone(), h.sha256.clone()),
            ("md5", w.md5.clone(), h.md5.clone()),
        ];
        for (field, expected, found) in fields {
            if expected != found {
                differs.push(Mismatch {
                    name: (*name).to_owned(),
                    field,
                    expected,
                    found,
                });
            }
        }
    }
    let missing: Vec<String> = want
        .keys()
        .filter(|n| !have.contains_key(*n))
        .map(|n| (*n).to_owned())
        .collect();
    let extra: Vec<String> = have
        .keys()
        .filter(|n| !want.contains_key(*n))
        .map(|n| (*n).to_owned())
        .collect();
    let ok = differs.is_empty() && missing.is_empty() && extra.is_empty() && findings.is_empty();
    Ok(Ok(Verification {
        dir: dir.display().to_string(),
        ok,
        checked: want.len() - missing.len(),
        differs,
        missing,
        extra,
        findings,
    }))
}
