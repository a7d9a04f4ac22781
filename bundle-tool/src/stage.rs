//! `stage`: a bundle into a served folder in one atomic step.
//!
//! 1. Lock `ROOT` (an exclusive `flock` on the folder itself, so nothing is created for it) and
//!    remove staging folders left by a run that was killed.
//! 2. Read, check and extract every file into `ROOT/.bundle-tool-staging-…`, hashing as it
//!    goes, and `fsync` each file.
//! 3. If the bundle is invalid, or anything fails, or a signal arrives: remove the staging
//!    folder (and any parent folder created for the name). `ROOT` is as it was.
//! 4. Write the manifest into the staging folder, `fsync` it, and rename it to its name
//!    (`renameat2(RENAME_NOREPLACE)`; with `--force`, `RENAME_EXCHANGE` with the old version,
//!    which is then removed), then `fsync` the parent. A reader (tftpd) sees the old folder or
//!    the new one, never a mix.
//! 5. Optionally point the `current` symbolic link next to it at the new folder (a new link
//!    renamed over the old one: also atomic).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use nix::fcntl::{AT_FDCWD, Flock, FlockArg, RenameFlags, renameat2};

use crate::check::{InspectOptions, Report, inspect};
use crate::manifest::Manifest;
use crate::names;
use crate::scan::ScanError;
use crate::source::{IoError, Limits};

/// Prefix of staging folders inside `ROOT`.
pub const STAGING_PREFIX: &str = ".bundle-tool-staging-";
/// Name of the link `--current` maintains next to the staged folder.
pub const CURRENT: &str = "current";

/// How to stage.
#[derive(Debug)]
pub struct StageOptions<'a> {
    /// Name under `ROOT` (`EWC/17_9_4a`); default: the version from `version.info`.
    pub name: Option<String>,
    /// Replace an existing folder of that name.
    pub force: bool,
    /// Point `current` (next to the staged folder) at it.
    pub current: bool,
    /// `fsync` files and folders (on by default; off only for throwaway test folders).
    pub fsync: bool,
    /// Archive limits.
    pub limits: Limits,
    /// Stop when set (a signal).
    pub cancel: &'a AtomicBool,
    /// Advanced by the bytes read.
    pub progress: &'a indicatif::ProgressBar,
    /// Worker threads (0: one per CPU).
    pub threads: usize,
}

/// A bundle now in place.
#[derive(Debug)]
pub struct Staged {
    /// The bundle's report (no errors).
    pub report: Report,
    /// Where it now is.
    pub path: PathBuf,
    /// It replaced a folder of the same name (`--force`).
    pub replaced: bool,
    /// The `current` link, when asked for.
    pub current: Option<PathBuf>,
    /// Staging folders of killed runs that were removed.
    pub cleaned: Vec<PathBuf>,
}

/// Staging did not happen; `ROOT` is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The bundle has errors (the report lists them).
    #[error("the bundle is invalid: {} error(s)", .0.errors)]
    Invalid(Box<Report>),
    /// A folder of that name exists and `--force` was not given.
    #[error("{} exists (use --force to replace it)", .0.display())]
    Exists(PathBuf),
    /// The name is not a safe relative name.
    #[error("bad --name {name:?}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        why: names::NameError,
    },
    /// `current` exists and is not a symbolic link.
    #[error("{} exists and is not a symbolic link; not replacing it", .0.display())]
    CurrentNotLink(PathBuf),
    /// Another `bundle-tool stage` holds `ROOT`.
    #[error("{}: another bundle-tool is staging here", .0.display())]
    Busy(PathBuf),
    /// Reading, writing or renaming failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The new folder is in place, but a step after the rename failed (the `current` link,
    /// the final fsync): ROOT has changed.
    #[error("staged into {}, but then: {source}", path.display())]
    AfterCommit {
        /// Where the bundle now is.
        path: PathBuf,
        /// What failed.
        source: IoError,
    },
    /// A signal arrived.
    #[error("interrupted")]
    Cancelled,
}

impl From<ScanError> for StageError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Io(e) => StageError::Io(e),
            ScanError::Cancelled => StageError::Cancelled,
        }
    }
}

/// What must be undone if staging stops: the staging folder and created parents.
#[derive(Debug, Default)]
struct Undo {
    staging: Option<PathBuf>,
    /// Created parent folders, outermost first.
    parents: Vec<PathBuf>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(s) = self.staging.take() {
            let _ = std::fs::remove_dir_all(s);
        }
        for p in self.parents.drain(..).rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Stages `bundle` into `root`.
pub fn stage(bundle: &Path, root: &Path, opts: &StageOptions<'_>) -> Result<Staged, StageError> {
    let name = match &opts.name {
        Some(n) => Some(
            names::check_stage_name(n)
                .map_err(|why| StageError::BadName {
                    name: n.clone(),
                    why,
                })?
                .to_owned(),
        ),
        None => None,
    };
    let root_dir = File::open(root).map_err(|e| IoError::new(root, e))?;
    if !root_dir
        .metadata()
        .map_err(|e| IoError::new(root, e))?
        .is_dir()
    {
        return Err(IoError::new(
            root,
            io::Error::new(io::ErrorKind::NotADirectory, "not a folder"),
        )
        .into());
    }
    let _lock = Flock::lock(root_dir, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            StageError::Busy(root.to_owned())
        } else {
            StageError::Io(IoError::new(root, errno.into()))
        }
    })?;
    // With the lock held, any staging folder is from a run that died; they are removed only
    // once this stage has succeeded (a failed stage changes nothing).
    let mut stale = Vec::new();
    for item in std::fs::read_dir(root).map_err(|e| IoError::new(root, e))? {
        let item = item.map_err(|e| IoError::new(root, e))?;
        let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
        if is_dir
            && item
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
        {
            stale.push(item.path());
        }
    }
    // Refuse early what can be refused before reading a byte.
    if let Some(n) = &name {
        preflight(root, n, opts)?;
    }

    let mut undo = Undo::default();
    let staging = root.join(unique_name(STAGING_PREFIX));
    std::fs::create_dir(&staging).map_err(|e| IoError::new(&staging, e))?;
    undo.staging = Some(staging.clone());
    set_mode(&staging, 0o755)?;

    let report = inspect(
        bundle,
        &InspectOptions {
            limits: opts.limits,
            hash: true,
            extract: Some(&staging),
            fsync: opts.fsync,
            cancel: opts.cancel,
            progress: opts.progress,
            threads: opts.threads,
        },
    )?;
    if !report.ok {
        return Err(StageError::Invalid(Box::new(report)));
    }
    let name = match name {
        Some(n) => n,
        // A valid report has a version.
        None => report
            .version
            .clone()
            .unwrap_or_else(|| "unversioned".to_owned()),
    };
    preflight(root, &name, opts)?;
    Manifest::from_report(&report).write(&staging)?;
    if opts.fsync {
        fsync_dir(&staging)?;
    }

    // Parents of the name (EWC for EWC/17_9_4a), created as needed and undone on failure.
    let dest = root.join(&name);
    let parent = dest.parent().unwrap_or(root).to_owned();
    let mut missing = Vec::new();
    let mut p = parent.as_path();
    while p != root && !p.exists() {
        missing.push(p.to_owned());
        p = p.parent().unwrap_or(root);
    }
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(&dir).map_err(|e| IoError::new(&dir, e))?;
        undo.parents.push(dir.clone());
        set_mode(&dir, 0o755)?;
    }

    let replaced = publish(&staging, &dest, opts.force)?;
    if !replaced {
        undo.staging = None;
    }
    // In place: nothing below may undo it, and a failure now is reported as such.
    undo.parents.clear();
    drop(undo);
    let after = |source: IoError| StageError::AfterCommit {
        path: dest.clone(),
        source,
    };
    if opts.fsync {
        fsync_dir(&parent).map_err(after)?;
    }

    let current = if opts.current {
        let link = parent.join(CURRENT);
        let target = dest.file_name().map(PathBuf::from).unwrap_or_default();
        let tmp = parent.join(format!(".{CURRENT}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| after(IoError::new(&tmp, e)))?;
        std::fs::rename(&tmp, &link).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            after(IoError::new(&link, e))
        })?;
        if opts.fsync {
            fsync_dir(&parent).map_err(after)?;
        }
        Some(link)
    } else {
        None
    };
    let mut cleaned = Vec::new();
    for dir in stale {
        if std::fs::remove_dir_all(&dir).is_ok() {
            cleaned.push(dir);
        }
    }
    Ok(Staged {
        report,
        path: dest,
        replaced,
        current,
        cleaned,
    })
}

/// `prefix` followed by the process id and the time in nanoseconds: a name for a staging
/// folder that no other run uses (also used by `relay bundle`).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Renames the finished folder `staging` to `dest` in one step: `RENAME_NOREPLACE`, or, when
/// `dest` exists and `force` is given, `RENAME_EXCHANGE` with it. Returns whether it replaced
/// an old folder, which then sits at `staging` for the caller to remove. A reader of `dest`
/// sees the old folder or the new one, never a mix. (Also used by `relay bundle`.)
pub fn publish(staging: &Path, dest: &Path, force: bool) -> Result<bool, StageError> {
    match renameat2(
        AT_FDCWD,
        staging,
        AT_FDCWD,
        dest,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(false),
        Err(nix::errno::Errno::EEXIST) if force => {
            renameat2(
                AT_FDCWD,
                staging,
                AT_FDCWD,
                dest,
                RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|e| IoError::new(dest, e.into()))?;
            Ok(true)
        }
        Err(nix::errno::Errno::EEXIST) => Err(StageError::Exists(dest.to_owned())),
        Err(e) => Err(IoError::new(dest, e.into()).into()),
    }
}

/// Refuses an existing destination (without `--force`) and a `current` that is not a link.
fn preflight(root: &Path, name: &str, opts: &StageOptions<'_>) -> Result<(), StageError> {
    if opts.current && name.rsplit('/').next() == Some(CURRENT) {
        return Err(StageError::BadName {
            name: name.to_owned(),
            why: names::NameError::Reserved,
        });
    }
    let dest = root.join(name);
    match std::fs::symlink_metadata(&dest) {
        Ok(m) if !opts.force || !m.is_dir() => return Err(StageError::Exists(dest)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(IoError::new(&dest, e).into()),
    }
    if opts.current {
        let link = dest.parent().unwrap_or(root).join(CURRENT);
        if let Ok(m) = std::fs::symlink_metadata(&link)
            && !m.file_type().is_symlink()
        {
            return Err(StageError::CurrentNotLink(link));
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), IoError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| IoError::new(path, e))
}

fn fsync_dir(path: &Path) -> Result<(), IoError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| IoError::new(path, e))
}
