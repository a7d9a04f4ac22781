//! `relay check`: the pre-flight an administrator wants before pressing "Save & Download" —
//! is the server reachable, are the credentials right, is the path a bundle folder, which
//! image families does it hold — in one report, without downloading any image.
//!
//! Each step runs only if the one before it could; a step that cannot run is `skipped`, so
//! the first `fail` is the problem to fix.

use serde::Serialize;

use bundle_tool::check::VERSION_INFO;
use bundle_tool::manifest::{MANIFEST, MAX_MANIFEST, Manifest};
use bundle_tool::models;
use bundle_tool::version::{MAX_VERSION_FILE, parse_version_info};

use crate::FetchOptions;
use crate::error::{ErrorKind, FetchError};
use crate::folder::Folder;
use crate::source::Source;

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// The problem to fix.
    Fail,
    /// Not a problem, worth knowing (no manifest; TFTP has no login).
    Note,
    /// Not run: an earlier step failed.
    Skipped,
}

impl Status {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Note => "note",
            Status::Skipped => "skipped",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `server`, `login`, `folder`, `version.info`, `manifest.json`.
    pub step: &'static str,
    /// How it went.
    pub status: Status,
    /// What was found, or the error line (`Failed to download file …: …`).
    pub detail: String,
    /// The error's kind (`not-found`, `timed-out`, …) when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

/// One image family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Family {
    /// `ap1g7`.
    pub family: String,
    /// On the server.
    pub present: bool,
    /// Its size, when the server says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Model numbers that need it (from bundle-tool's model map).
    pub models: Vec<String>,
    /// Asked for with `--families`.
    pub required: bool,
    /// Looked for (false when an earlier step failed).
    pub checked: bool,
    /// Why it could not be looked at (other than being absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The folder, as the controller prints it (SFTP user masked).
    pub folder: String,
    /// Every step passed, and every required family (at least one family) is there.
    pub ok: bool,
    /// From `version.info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The families looked for.
    pub families: Vec<Family>,
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.folder)?;
        for s in &self.steps {
            writeln!(f, "  {:<14} {:<7} {}", s.step, s.status.as_str(), s.detail)?;
        }
        for fam in &self.families {
            let state = match (&fam.error, fam.present) {
                _ if !fam.checked => "not checked".to_owned(),
                (Some(e), _) => format!("FAIL    {e}"),
                (None, true) => match fam.size {
                    Some(n) => format!("present {n} bytes"),
                    None => "present".to_owned(),
                },
                (None, false) if fam.required => "MISSING (asked for)".to_owned(),
                (None, false) => "absent".to_owned(),
            };
            let models = if fam.models.is_empty() {
                String::new()
            } else {
                format!("  [{}]", fam.models.join(" "))
            };
            writeln!(f, "  {:<14} {state}{models}", fam.family)?;
        }
        let present: Vec<&str> = self
            .families
            .iter()
            .filter(|f| f.present)
            .map(|f| f.family.as_str())
            .collect();
        if self.ok {
            write!(
                f,
                "ok: {} {} ({})",
                present.len(),
                if present.len() == 1 {
                    "family"
                } else {
                    "families"
                },
                present.join(", ")
            )?;
            if let Some(v) = &self.version {
                write!(f, ", version {v}")?;
            }
            Ok(())
        } else {
            f.write_str("NOT READY: fix the first FAIL above")
        }
    }
}

fn models_of(family: &str) -> Vec<String> {
    let mut v: Vec<String> = models::rows()
        .iter()
        .filter(|r| r.family == family)
        .map(|r| r.series.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn failed(step: &'static str, e: &FetchError) -> Step {
    Step {
        step,
        status: Status::Fail,
        detail: e.to_string(),
        kind: Some(e.kind.name()),
    }
}

fn step(step: &'static str, status: Status, detail: impl Into<String>) -> Step {
    Step {
        step,
        status,
        detail: detail.into(),
        kind: None,
    }
}

/// Checks the bundle folder `folder`. `families`: the ones that must be there (default: look
/// for every family the model map knows, and want at least one).
pub async fn check(
    folder: &Source,
    opts: &FetchOptions,
    families: Option<&[String]>,
) -> CheckReport {
    let mut steps = Vec::new();
    let mut version = None;
    let wanted: Vec<(String, bool)> = match families {
        Some(f) => f.iter().map(|n| (n.clone(), true)).collect(),
        None => models::known_families()
            .into_iter()
            .map(|n| (n.to_owned(), false))
            .collect(),
    };
    let mut fams: Vec<Family> = wanted
        .iter()
        .map(|(name, required)| Family {
            family: name.clone(),
            present: false,
            size: None,
            models: models_of(name),
            required: *required,
            checked: false,
            error: None,
        })
        .collect();
    let ready = run(folder, opts, &mut steps, &mut version, &mut fams).await;
    let families_ok = fams
        .iter()
        .all(|f| f.error.is_none() && (f.present || !f.required))
        && fams.iter().any(|f| f.present);
    CheckReport {
        folder: folder.to_string(),
        ok: ready && families_ok && steps.iter().all(|s| s.status != Status::Fail),
        version,
        steps,
        families: fams,
    }
}

/// The steps; false when one failed and the families were not looked at.
async fn run(
    folder: &Source,
    opts: &FetchOptions,
    steps: &mut Vec<Step>,
    version: &mut Option<String>,
    fams: &mut [Family],
) -> bool {
    let skip_rest = |steps: &mut Vec<Step>, from: usize| {
        const ALL: [&str; 5] = ["server", "login", "folder", VERSION_INFO, MANIFEST];
        for name in &ALL[from..] {
            steps.push(step(name, Status::Skipped, ""));
        }
    };
    if matches!(folder, Source::Sftp { .. }) && opts.sftp.is_none() {
        steps.push(step("server", Status::Skipped, ""));
        steps.push(step("login", Status::Fail, "no password or key given"));
        skip_rest(steps, 2);
        return false;
    }
    // Server and login: SFTP logs in here; TFTP has neither a connection nor a login.
    let mut dir = match Folder::open(folder, opts).await {
        Ok(d) => d,
        Err(e) => {
            let (at, rest) = match e.kind {
                ErrorKind::AuthenticationFailed => {
                    steps.push(step("server", Status::Ok, "answers; host key trusted"));
                    ("login", 2)
                }
                _ => ("server", 1),
            };
            steps.push(failed(at, &e));
            skip_rest(steps, rest);
            return false;
        }
    };
    let tftp = matches!(folder, Source::Tftp { .. });
    match folder {
        Source::Sftp { .. } => {
            steps.push(step("server", Status::Ok, "answers; host key trusted"));
            steps.push(step("login", Status::Ok, "accepted"));
        }
        Source::Tftp { .. } => {}
        Source::File { .. } => {
            steps.push(step("server", Status::Note, "a local folder"));
            steps.push(step("login", Status::Note, "none"));
        }
    }
    // Folder.
    if !tftp {
        match dir.is_dir().await {
            Ok(Some(true)) | Ok(None) => steps.push(step("folder", Status::Ok, "exists")),
            Ok(Some(false)) => {
                steps.push(step(
                    "folder",
                    Status::Fail,
                    format!("{folder} is a file, not a folder"),
                ));
                skip_rest(steps, 3);
                dir.close().await;
                return false;
            }
            Err(e) => {
                steps.push(failed("folder", &e));
                skip_rest(steps, 3);
                dir.close().await;
                return false;
            }
        }
    }
    // version.info: over TFTP, also the proof that the server answers at all.
    let info = dir.read_small(VERSION_INFO, MAX_VERSION_FILE).await;
    if tftp {
        match &info {
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::TimedOut | ErrorKind::UnknownHost | ErrorKind::Unreachable
                ) =>
            {
                steps.push(failed("server", e));
                skip_rest(steps, 1);
                return false;
            }
            _ => {
                steps.push(step("server", Status::Ok, "answers"));
                steps.push(step("login", Status::Note, "none (TFTP)"));
            }
        }
    }
    let mut ok = true;
    match info {
        Ok(bytes) => {
            if tftp {
                steps.push(step("folder", Status::Ok, "holds version.info"));
            }
            match parse_version_info(&bytes) {
                Ok(v) => {
                    steps.push(step(VERSION_INFO, Status::Ok, v.to_string()));
                    *version = Some(v.to_string());
                }
                Err(e) => {
                    ok = false;
                    steps.push(step(VERSION_INFO, Status::Fail, e.to_string()));
                }
            }
        }
        Err(e) => {
            ok = false;
            if tftp && e.kind == ErrorKind::NotFound {
                // TFTP cannot list a folder: a missing version.info is the path's symptom.
                steps.push(step(
                    "folder",
                    Status::Fail,
                    "no version.info there: wrong path, or not a bundle folder",
                ));
            }
            steps.push(failed(VERSION_INFO, &e));
        }
    }
    // manifest.json (optional).
    let mut manifest = None;
    match dir.read_small(MANIFEST, MAX_MANIFEST as usize).await {
        Ok(bytes) => match Manifest::parse(&bytes, std::path::Path::new(MANIFEST)) {
            Ok(m) => {
                steps.push(step(
                    MANIFEST,
                    Status::Ok,
                    format!("{} files with SHA-256", m.files.len()),
                ));
                manifest = Some(m);
            }
            Err(e) => {
                ok = false;
                steps.push(step(MANIFEST, Status::Fail, e.to_string()));
            }
        },
        Err(e) if e.kind == ErrorKind::NotFound => steps.push(step(
            MANIFEST,
            Status::Note,
            "none: images will be checked by their own tar and info members",
        )),
        Err(e) => {
            ok = false;
            steps.push(failed(MANIFEST, &e));
        }
    }
    // Families.
    for fam in fams.iter_mut() {
        fam.checked = true;
        match dir.probe(&fam.family).await {
            Ok(size) => {
                fam.present = true;
                fam.size = size;
                let listed = manifest
                    .as_ref()
                    .and_then(|m| m.files.iter().find(|f| f.name == fam.family));
                match (listed, size) {
                    (Some(f), Some(n)) if f.size != n => {
                        fam.error = Some(format!(
                            "{n} bytes on the server, but its manifest.json says {}",
                            f.size
                        ));
                    }
                    (None, _) if manifest.is_some() => {
                        fam.error = Some("not listed in the server's manifest.json".into());
                    }
                    _ => {}
                }
            }
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => fam.error = Some(e.to_string()),
        }
    }
    dir.close().await;
    ok
}
