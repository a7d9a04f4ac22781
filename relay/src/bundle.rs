//! `relay bundle`: a bundle folder fetched from a server, verified, and put in place in one
//! step.
//!
//! 1. Open the folder (one SSH login for SFTP).
//! 2. `manifest.json`, if the server has one (a folder staged by `bundle-tool stage`): it
//!    gives every file's size and SHA-256.
//! 3. `version.info` (required), then `controller_version.info` and `readme.txt` if present.
//! 4. The chosen image families (all the model map knows, or those asked for; with a
//!    manifest, those it lists), each checked as it arrives: against the manifest, else by
//!    its own tar archive and info members against `version.info`.
//! 5. bundle-tool's validation of the whole folder, then its manifest written next to the
//!    files (so `bundle-tool verify` and `sha256sum -c SHA256SUMS` work later).
//! 6. Renamed into place (bundle-tool's `publish`): the target appears complete or not at
//!    all. Everything is fetched into a hidden staging folder beside it, removed on failure.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use bundle_tool::check::{
    CONTROLLER_VERSION_INFO, InspectOptions, README, Report, VERSION_INFO, inspect,
};
use bundle_tool::manifest::{MANIFEST, MAX_MANIFEST, Manifest};
use bundle_tool::models;
use bundle_tool::source::Limits;
use bundle_tool::stage::{publish, unique_name};
use bundle_tool::version::{ApVersion, MAX_VERSION_FILE, parse_version_info};

use crate::FetchOptions;
use crate::error::{ErrorKind, FetchError};
use crate::folder::Folder;
use crate::progress::Progress;
use crate::source::Source;
use crate::verify::{Expected, Verifier};

/// Prefix of the hidden staging folder made beside the target.
pub const STAGING_PREFIX: &str = ".relay-bundle-";

/// What to fetch.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// Only these families (each must be there); default: every family the server has.
    pub families: Option<Vec<String>>,
    /// Replace an existing target folder.
    pub force: bool,
}

/// A bundle now in place.
#[derive(Debug)]
pub struct Bundled {
    /// Where it is.
    pub path: PathBuf,
    /// bundle-tool's report on it (no errors).
    pub report: Report,
    /// Families fetched, with their sizes.
    pub fetched: Vec<(String, u64)>,
    /// Families looked for and not on the server.
    pub absent: Vec<String>,
    /// Images were checked against the server's manifest (else by their own tar and info).
    pub had_manifest: bool,
    /// It replaced an older folder (`force`).
    pub replaced: bool,
}

/// Why nothing was put in place.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be fetched, or was not what was expected.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A family name that is not one (`ap1g7`, `ap3g3`, …).
    #[error("{0:?} is not an AP image family (like ap1g7 or ap3g3)")]
    BadFamily(String),
    /// The server's `manifest.json` or `version.info` cannot be used.
    #[error("{0}")]
    BadMetadata(String),
    /// Families asked for (or listed in the server's manifest) are not on the server.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Missing(Vec<FetchError>),
    /// The server has no image of any known family.
    #[error("no AP image (looked for {}) in {folder}", .looked.join(", "))]
    NoImages {
        /// The families looked for.
        looked: Vec<String>,
        /// The folder (redacted).
        folder: String,
    },
    /// bundle-tool found errors in the fetched bundle.
    #[error("the fetched bundle is invalid: {} error(s)", .0.errors)]
    Invalid(Box<Report>),
    /// The target exists (and `force` was not given), or staging failed locally.
    #[error(transparent)]
    Stage(#[from] bundle_tool::stage::StageError),
    /// A local file or folder could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Removes the staging folder unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Fetches the bundle in `folder` into `out` (see the module doc). `progress` gets each
/// file's name and progress.
pub async fn bundle(
    folder: &Source,
    out: &Path,
    opts: &FetchOptions,
    bopts: &BundleOptions,
    progress: &mut (dyn FnMut(&str, Progress) + Send),
) -> Result<Bundled, BundleError> {
    if let Some(fams) = &bopts.families
        && let Some(bad) = fams.iter().find(|f| !models::is_image_family_name(f))
    {
        return Err(BundleError::BadFamily(bad.clone()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    if !bopts.force && fs::symlink_metadata(out).is_ok() {
        return Err(bundle_tool::stage::StageError::Exists(out.to_owned()).into());
    }
    let staging = parent.join(unique_name(STAGING_PREFIX));
    fs::create_dir(&staging).map_err(io_at(&staging))?;
    let mut cleanup = Cleanup(Some(staging.clone()));

    let mut dir = Folder::open(folder, opts).await?;
    let fetched = fill(&mut dir, &staging, bopts, progress).await;
    dir.close().await;
    let (version, manifest, fetched, absent) = fetched?;

    // bundle-tool's verdict on the whole folder, as `bundle-tool validate` gives it.
    let report = {
        let dir = staging.clone();
        tokio::task::spawn_blocking(move || {
            let cancel = AtomicBool::new(false);
            let bar = indicatif::ProgressBar::hidden();
            inspect(
                &dir,
                &InspectOptions {
                    limits: Limits::default(),
                    hash: true,
                    extract: None,
                    fsync: false,
                    cancel: &cancel,
                    progress: &bar,
                    threads: 0,
                },
            )
        })
        .await
        .map_err(|e| BundleError::Io {
            path: staging.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|e| BundleError::Io {
            path: staging.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
    };
    if !report.ok {
        return Err(BundleError::Invalid(Box::new(report)));
    }
    if report.ap_version() != Some(version) {
        return Err(BundleError::BadMetadata(format!(
            "version.info changed while fetching: {version}, then {:?}",
            report.version
        )));
    }
    Manifest::from_report(&report)
        .write(&staging)
        .map_err(|e| BundleError::Io {
            path: staging.join(MANIFEST),
            source: std::io::Error::other(e.to_string()),
        })?;
    File::open(&staging)
        .and_then(|d| d.sync_all())
        .map_err(io_at(&staging))?;
    let replaced = publish(&staging, out, bopts.force)?;
    if !replaced {
        cleanup.0 = None;
    }
    // (When replaced, the old folder now sits at the staging path and is removed.)
    drop(cleanup);
    if let Ok(d) = File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(Bundled {
        path: out.to_owned(),
        report,
        fetched,
        absent,
        had_manifest: manifest.is_some(),
        replaced,
    })
}

type Filled = (ApVersion, Option<Manifest>, Vec<(String, u64)>, Vec<String>);

/// Steps 2–4: everything fetched into `staging`.
async fn fill(
    dir: &mut Folder,
    staging: &Path,
    bopts: &BundleOptions,
    progress: &mut (dyn FnMut(&str, Progress) + Send),
) -> Result<Filled, BundleError> {
    let manifest = match dir.read_small(MANIFEST, MAX_MANIFEST as usize).await {
        Ok(bytes) => Some(
            Manifest::parse(&bytes, Path::new(&dir.file(MANIFEST).to_string()))
                .map_err(|e| BundleError::BadMetadata(e.to_string()))?,
        ),
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let expect = |name: &str| -> Result<Expected, BundleError> {
        match &manifest {
            Some(m) => Expected::from_manifest(m, name).ok_or_else(|| {
                BundleError::BadMetadata(format!("{MANIFEST} on the server does not list {name}"))
            }),
            None => Ok(Expected::default()),
        }
    };

    let version_bytes = dir.read_small(VERSION_INFO, MAX_VERSION_FILE).await?;
    let version = parse_version_info(&version_bytes)
        .map_err(|e| BundleError::BadMetadata(format!("{}: {e}", dir.file(VERSION_INFO))))?;
    write_checked(
        dir,
        staging,
        VERSION_INFO,
        &version_bytes,
        expect(VERSION_INFO)?,
    )?;
    for name in [CONTROLLER_VERSION_INFO, README] {
        let listed = manifest
            .as_ref()
            .is_none_or(|m| m.files.iter().any(|f| f.name == name));
        if !listed {
            continue;
        }
        match dir.read_small(name, 1 << 20).await {
            Ok(bytes) => write_checked(dir, staging, name, &bytes, expect(name)?)?,
            Err(e) if e.kind == ErrorKind::NotFound && manifest.is_none() => {}
            Err(e) => return Err(e.into()),
        }
    }

    let (wanted, required): (Vec<String>, bool) = match (&bopts.families, &manifest) {
        (Some(f), _) => (f.clone(), true),
        (None, Some(m)) => (
            m.files
                .iter()
                .map(|f| f.name.clone())
                .filter(|n| models::is_image_family_name(n))
                .collect(),
            true,
        ),
        (None, None) => (
            models::known_families()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            false,
        ),
    };
    let mut fetched = Vec::new();
    let mut absent = Vec::new();
    let mut missing = Vec::new();
    for family in &wanted {
        let expected = match &manifest {
            Some(_) => expect(family)?,
            None => Expected::image(family, Some(version)),
        };
        match fetch_checked(dir, staging, family, expected, progress).await {
            Ok(size) => fetched.push((family.clone(), size)),
            Err(BundleError::Fetch(e)) if e.kind == ErrorKind::NotFound => {
                absent.push(family.clone());
                missing.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    if required && !missing.is_empty() {
        return Err(BundleError::Missing(missing));
    }
    if fetched.is_empty() {
        return Err(BundleError::NoImages {
            looked: wanted,
            folder: dir.base().to_string(),
        });
    }
    Ok((version, manifest, fetched, absent))
}

/// Writes a small file already in memory, checked against `expected`.
fn write_checked(
    dir: &Folder,
    staging: &Path,
    name: &str,
    bytes: &[u8],
    expected: Expected,
) -> Result<(), BundleError> {
    let path = staging.join(name);
    let mut v = Verifier::new(File::create(&path).map_err(io_at(&path))?, expected);
    v.write_all(bytes).map_err(io_at(&path))?;
    let (_, file) = v.finish(&dir.file(name))?;
    file.sync_all().map_err(io_at(&path))?;
    Ok(())
}

/// Fetches an image into `staging`, checked as it arrives; a file that fails is removed.
async fn fetch_checked(
    dir: &mut Folder,
    staging: &Path,
    name: &str,
    expected: Expected,
    progress: &mut (dyn FnMut(&str, Progress) + Send),
) -> Result<u64, BundleError> {
    let path = staging.join(name);
    let file = File::create(&path).map_err(io_at(&path))?;
    let result = async {
        let mut v = Verifier::new(BufWriter::with_capacity(1 << 20, file), expected);
        dir.fetch(name, &mut v, &mut |p| progress(name, p)).await?;
        v.flush().map_err(io_at(&path))?;
        let (done, w) = v.finish(&dir.file(name))?;
        let file = w.into_inner().map_err(|e| BundleError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_at(&path))?;
        Ok(done.size)
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result
}
