//! The bundle checks: what each file of a bundle is, and what must hold of it.
//!
//! [`inspect`] opens a source ([`crate::source`]), reads every entry once ([`crate::scan`]),
//! and turns what it saw into a [`Report`]: one [`Finding`] per problem, plus a summary of
//! families, versions and sizes. Errors make a bundle invalid; warnings are for formats that
//! are not public (the content of `info` members, `controller_version.info`), where the tool
//! is tolerant and says so.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::info::parse_info;
use crate::models;
use crate::report::{Code, Finding, Severity};
use crate::scan::{self, Job, Outcome};
use crate::source::{Entry, IoError, Limits, Opened, Source};
use crate::tar::{TarError, TarSummary};
use crate::version::{ApVersion, parse_controller_version, parse_version_info};

/// The AP image version file.
pub const VERSION_INFO: &str = "version.info";
/// The controller version file.
pub const CONTROLLER_VERSION_INFO: &str = "controller_version.info";
/// The bundle's readme.
pub const README: &str = "readme.txt";

/// What a file of a bundle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `version.info`.
    VersionInfo,
    /// `controller_version.info`.
    ControllerVersionInfo,
    /// `readme.txt`.
    Readme,
    /// An AP image, named after its family (`ap1g8`).
    Image,
    /// The controller image (`C9800-AP-iosxe-wlc.bin`).
    ControllerImage,
    /// Anything else.
    Other,
}

impl Role {
    /// The role of a file called `name`.
    pub fn of(name: &str) -> Role {
        match name {
            VERSION_INFO => Role::VersionInfo,
            CONTROLLER_VERSION_INFO => Role::ControllerVersionInfo,
            README => Role::Readme,
            n if models::is_image_family_name(n) => Role::Image,
            n if n.starts_with("C9800-") && n.ends_with(".bin") => Role::ControllerImage,
            _ => Role::Other,
        }
    }
}

/// What the report says about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// Its name in the bundle.
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Its size in bytes.
    pub size: u64,
    /// For an AP image: whether the model map knows its family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_family: Option<bool>,
    /// For an AP image: members in its tar archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tar_members: Option<usize>,
    /// For an AP image: the `image_family:` of its info member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_family: Option<String>,
    /// For an AP image: the version of its info member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_version: Option<String>,
    /// Lower-case hex SHA-256, when hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Lower-case hex MD5 (what CAPWAP's Image Information element carries), when hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl FileReport {
    /// A file called `name` of `size` bytes, its role from its name, nothing else known yet.
    pub fn new(name: &str, size: u64) -> FileReport {
        FileReport {
            name: name.to_owned(),
            role: Role::of(name),
            size,
            known_family: None,
            tar_members: None,
            info_family: None,
            info_version: None,
            sha256: None,
            md5: None,
        }
    }
}

/// Everything `validate` has to say about a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The path as given.
    pub bundle: String,
    /// `zip` or `folder`.
    pub kind: &'static str,
    /// No errors.
    pub ok: bool,
    /// From `version.info`.
    pub version: Option<String>,
    /// From `controller_version.info`.
    pub controller_version: Option<String>,
    /// AP image families present, sorted.
    pub families: Vec<String>,
    /// Sum of the files' sizes.
    pub total_bytes: u64,
    /// The files that passed the listing checks, sorted by name.
    pub files: Vec<FileReport>,
    /// Every finding, errors first, then by entry.
    pub findings: Vec<Finding>,
    /// Number of errors.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
}

impl Report {
    /// The parsed AP version, if `version.info` was valid.
    pub fn ap_version(&self) -> Option<ApVersion> {
        self.version.as_deref().and_then(|v| v.parse().ok())
    }
}

/// How to inspect.
#[derive(Debug)]
pub struct InspectOptions<'a> {
    /// Archive limits.
    pub limits: Limits,
    /// Compute SHA-256 and MD5 of every file.
    pub hash: bool,
    /// Also write every file into this existing, empty folder.
    pub extract: Option<&'a Path>,
    /// `fsync` extracted files.
    pub fsync: bool,
    /// Stop when set.
    pub cancel: &'a AtomicBool,
    /// Advanced by bytes read; its length is set here to the bytes to read.
    pub progress: &'a indicatif::ProgressBar,
    /// Worker threads (0: one per CPU).
    pub threads: usize,
}

/// Opens, reads and checks the bundle at `path`.
///
/// I/O failures (unreadable file, full disk) are errors; everything wrong with the bundle
/// itself is in the report. When the listing already found errors nothing is read, and
/// nothing is extracted.
pub fn inspect(path: &Path, opts: &InspectOptions<'_>) -> Result<Report, scan::ScanError> {
    let Opened {
        source,
        entries,
        mut findings,
    } = Source::open(path, &opts.limits)?;
    let listing_failed = findings.iter().any(|f| f.severity == Severity::Error);
    let jobs: Vec<Job> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let role = Role::of(&e.name);
            Job {
                entry: i,
                tar: role == Role::Image && e.size > 0,
                capture: matches!(role, Role::VersionInfo | Role::ControllerVersionInfo),
            }
        })
        .collect();
    let outcomes = if listing_failed {
        Vec::new()
    } else {
        opts.progress
            .set_length(entries.iter().map(|e| e.size).sum());
        let scan_opts = scan::Options {
            hash: opts.hash,
            extract: opts.extract,
            fsync: opts.fsync,
            cancel: opts.cancel,
            progress: opts.progress,
            threads: opts.threads,
        };
        scan::run(&source, &entries, &jobs, &scan_opts)?
    };
    Ok(judge(
        path,
        &source,
        &entries,
        &outcomes,
        !listing_failed,
        &mut findings,
    ))
}

/// Turns the listing and the pass into a report.
fn judge(
    path: &Path,
    source: &Source,
    entries: &[Entry],
    outcomes: &[Outcome],
    read: bool,
    findings: &mut Vec<Finding>,
) -> Report {
    let outcome = |i: usize| outcomes.get(i);
    let mut files = Vec::with_capacity(entries.len());
    let mut version: Option<ApVersion> = None;
    let mut controller_version = None;
    let mut families = Vec::new();

    // The version files first: the images are checked against them.
    for (i, e) in entries.iter().enumerate() {
        let Some(bytes) = outcome(i).and_then(|o| o.captured.as_deref()) else {
            continue;
        };
        match Role::of(&e.name) {
            Role::VersionInfo => match parse_version_info(bytes) {
                Ok(v) => version = Some(v),
                Err(err) => findings.push(Finding::error(
                    Code::BadVersion,
                    Some(&e.name),
                    err.to_string(),
                )),
            },
            Role::ControllerVersionInfo => match parse_controller_version(bytes) {
                Ok(v) => controller_version = Some(v),
                Err(err) => findings.push(Finding::warning(
                    Code::BadControllerVersion,
                    Some(&e.name),
                    err.to_string(),
                )),
            },
            _ => {}
        }
    }

    for (i, e) in entries.iter().enumerate() {
        let mut file = FileReport::new(&e.name, e.size);
        let role = file.role;
        if let Some(o) = outcome(i) {
            file.sha256.clone_from(&o.sha256);
            file.md5.clone_from(&o.md5);
            if let Some(why) = &o.corrupt {
                let code = if why.contains("declared") {
                    Code::SizeMismatch
                } else {
                    Code::CorruptEntry
                };
                findings.push(Finding::error(
                    code,
                    Some(&e.name),
                    format!("cannot be read: {why}"),
                ));
            }
        }
        match role {
            Role::Image => {
                families.push(e.name.clone());
                let known = models::known_families().contains(&e.name.as_str());
                file.known_family = Some(known);
                if !known {
                    findings.push(Finding::warning(
                        Code::UnknownFamily,
                        Some(&e.name),
                        "an image family the model map does not know (no AP model is mapped to it)",
                    ));
                }
                if e.size == 0 {
                    findings.push(Finding::error(
                        Code::EmptyImage,
                        Some(&e.name),
                        "an empty AP image",
                    ));
                } else if let Some(tar) = outcome(i).and_then(|o| o.tar.as_ref()) {
                    check_image(&e.name, tar, version, &mut file, findings);
                }
            }
            Role::Other => findings.push(Finding::warning(
                Code::UnexpectedFile,
                Some(&e.name),
                "not part of a Cisco AP bundle's layout",
            )),
            _ => {}
        }
        files.push(file);
    }

    if read {
        let has = |name: &str| entries.iter().any(|e| e.name == name);
        if !has(VERSION_INFO) {
            findings.push(Finding::error(
                Code::MissingVersion,
                None,
                "no version.info",
            ));
        }
        if !has(CONTROLLER_VERSION_INFO) {
            findings.push(Finding::warning(
                Code::MissingControllerVersion,
                None,
                "no controller_version.info",
            ));
        }
        if !has(README) {
            findings.push(Finding::warning(Code::MissingReadme, None, "no readme.txt"));
        }
        if families.is_empty() {
            findings.push(Finding::error(
                Code::NoImages,
                None,
                "no AP image (ap1g4, ap1g7, ap3g3, …)",
            ));
        }
    }

    findings.sort_by(|a, b| (a.severity, &a.entry, a.code).cmp(&(b.severity, &b.entry, b.code)));
    files.sort_by(|a, b| a.name.cmp(&b.name));
    families.sort();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    Report {
        bundle: path.display().to_string(),
        kind: source.kind(),
        ok: errors == 0,
        version: version.map(|v| v.to_string()),
        controller_version,
        families,
        total_bytes: files.iter().map(|f| f.size).sum(),
        files,
        warnings: findings.len() - errors,
        findings: std::mem::take(findings),
        errors,
    }
}

/// The tar and info checks of one AP image called `name`, from the streaming tar check's
/// verdict on its bytes: the archive is sound, and its `info`/`info.ver`/`ver` members name
/// the family the file is named after and the version `version.info` says. Fills `file`'s
/// tar and info fields and appends the findings. Also used by relay to verify an image it
/// fetched when no manifest gives its hash.
pub fn check_image(
    name: &str,
    tar: &Result<TarSummary, TarError>,
    version: Option<ApVersion>,
    file: &mut FileReport,
    findings: &mut Vec<Finding>,
) {
    let summary = match tar {
        Ok(s) => s,
        Err(err) => {
            findings.push(Finding::error(
                Code::BadTar,
                Some(name),
                format!("not a well-formed tar archive: {err}"),
            ));
            return;
        }
    };
    file.tar_members = Some(summary.members.len());
    for w in &summary.warnings {
        findings.push(Finding::warning(
            Code::TarWarning,
            Some(name),
            w.to_string(),
        ));
    }
    if summary.captured.is_empty() {
        findings.push(Finding::warning(
            Code::InfoMissing,
            Some(name),
            "no info or info.ver member: family and version cannot be cross-checked",
        ));
        return;
    }
    for cap in &summary.captured {
        let member = &cap.name;
        let base = member.rsplit('/').next().unwrap_or(member);
        // A `ver` member may hold just the version, not `key: value` lines.
        if base == "ver" && !cap.bytes.contains(&b':') {
            let text = String::from_utf8_lossy(&cap.bytes).trim().to_owned();
            match (text.parse::<ApVersion>(), version) {
                (Ok(found), Some(want)) if found != want => findings.push(Finding::error(
                    Code::InfoVersionMismatch,
                    Some(name),
                    format!("{member} says {found}, but version.info says {want}"),
                )),
                (Ok(_), _) => {}
                (Err(_), _) => findings.push(Finding::warning(
                    Code::InfoWarning,
                    Some(name),
                    format!("{member} holds {text:?}, not a version; not compared"),
                )),
            }
            continue;
        }
        let info = parse_info(&cap.bytes);
        for w in &info.warnings {
            findings.push(Finding::warning(
                Code::InfoWarning,
                Some(name),
                format!("{member}: {w}"),
            ));
        }
        match &info.image_family {
            Some(fam) if fam != name => findings.push(Finding::error(
                Code::InfoFamilyMismatch,
                Some(name),
                format!("{member} says image_family {fam:?}, but the file is named {name:?}"),
            )),
            Some(fam) => {
                file.info_family.get_or_insert_with(|| fam.clone());
            }
            None => findings.push(Finding::warning(
                Code::InfoNoFamily,
                Some(name),
                format!("{member} has no image_family: line"),
            )),
        }
        match &info.version {
            Some(v) => {
                file.info_version.get_or_insert_with(|| v.value.clone());
                match (v.value.parse::<ApVersion>(), version) {
                    (Ok(found), Some(want)) if found != want => findings.push(Finding::error(
                        Code::InfoVersionMismatch,
                        Some(name),
                        format!("{member} says {}: {found}, but version.info says {want}", v.key),
                    )),
                    (Err(_), _) => findings.push(Finding::warning(
                        Code::InfoWarning,
                        Some(name),
                        format!(
                            "{member} says {}: {:?}, not four numbers; not compared with version.info",
                            v.key, v.value
                        ),
                    )),
                    _ => {}
                }
            }
            None => findings.push(Finding::warning(
                Code::InfoNoVersion,
                Some(name),
                format!("{member} has no version line"),
            )),
        }
    }
}

/// Reads nothing: the listing checks alone (used by tests and `which`).
pub fn list(path: &Path, limits: &Limits) -> Result<Opened, IoError> {
    Source::open(path, limits)
}
