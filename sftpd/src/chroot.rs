//! `ChrootDirectory` checked exactly as sshd's `safely_chroot()` checks it, with the same
//! messages, plus the one command that fixes each problem (what administrators search for
//! after "bad ownership or modes for chroot directory").
//!
//! sshd walks the path from `/` down, one component at a time (`/`, `/home/`, `/home/calo`):
//! each must exist, be owned by root, and not be writable by group or others, and be a
//! directory. Intermediate components are printed with a trailing `/` and the word
//! "component", as sshd prints them. The walk is sans-IO: the caller supplies `stat`
//! ([`std_stat`] for the real file system), which follows symbolic links as `stat(2)` does.

use std::fmt;
use std::io;

/// What [`check`] needs to know about one path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStat {
    /// Owner uid.
    pub uid: u32,
    /// Permission and type bits (`st_mode`).
    pub mode: u32,
    /// It is a directory.
    pub is_dir: bool,
}

/// Longest path sshd accepts (its `component` buffer is `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// Why a chroot directory is refused. `Display` gives sshd's log text; [`ChrootError::fix`]
/// the command that repairs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChrootError {
    /// The path is relative.
    NotAbsolute,
    /// The path is longer than [`MAX_PATH`].
    TooLong,
    /// `stat` failed (usually: it does not exist).
    Stat {
        /// The component, as sshd prints it.
        component: String,
        /// `strerror` text.
        reason: String,
        /// `ENOENT`.
        missing: bool,
    },
    /// Not owned by root, or writable by group or others.
    BadOwnership {
        /// The component, as sshd prints it.
        component: String,
        /// Not the last component.
        intermediate: bool,
        /// Its owner.
        uid: u32,
        /// Its mode.
        mode: u32,
    },
    /// Not a directory.
    NotDirectory {
        /// The component, as sshd prints it.
        component: String,
        /// Not the last component.
        intermediate: bool,
    },
}

impl fmt::Display for ChrootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = |intermediate: bool| if intermediate { "component " } else { "" };
        match self {
            ChrootError::NotAbsolute => f.write_str("chroot path does not begin at root"),
            ChrootError::TooLong => f.write_str("chroot path too long"),
            ChrootError::Stat {
                component, reason, ..
            } => write!(f, "safely_chroot: stat(\"{component}\"): {reason}"),
            ChrootError::BadOwnership {
                component,
                intermediate,
                ..
            } => write!(
                f,
                "bad ownership or modes for chroot directory {}\"{component}\"",
                which(*intermediate)
            ),
            ChrootError::NotDirectory {
                component,
                intermediate,
            } => write!(
                f,
                "chroot path {}\"{component}\" is not a directory",
                which(*intermediate)
            ),
        }
    }
}

impl std::error::Error for ChrootError {}

/// `path` quoted for a POSIX shell.
fn shell_quote(path: &str) -> String {
    format!("'{}'", path.replace('\'', r"'\''"))
}

impl ChrootError {
    /// The command that fixes it, for the administrator (what sshd never says).
    pub fn fix(&self) -> Option<String> {
        match self {
            ChrootError::BadOwnership {
                component,
                uid,
                mode,
                ..
            } => {
                let trimmed = component.trim_end_matches('/');
                let path = if trimmed.is_empty() {
                    "/".to_owned()
                } else {
                    shell_quote(trimmed)
                };
                Some(match (*uid != 0, mode & 0o022 != 0) {
                    (true, true) => format!("chown root:root {path} && chmod go-w {path}"),
                    (true, false) => format!("chown root:root {path}"),
                    _ => format!("chmod go-w {path}"),
                })
            }
            ChrootError::Stat {
                component,
                missing: true,
                ..
            } => {
                let path = shell_quote(component.trim_end_matches('/'));
                Some(format!("install -d -o root -g root -m 0755 {path}"))
            }
            _ => None,
        }
    }
}

/// Checks `path` component by component, as sshd does before `chroot(2)`.
pub fn check(
    path: &str,
    stat: &mut dyn FnMut(&str) -> io::Result<DirStat>,
) -> Result<(), ChrootError> {
    if !path.starts_with('/') {
        return Err(ChrootError::NotAbsolute);
    }
    if path.len() >= MAX_PATH {
        return Err(ChrootError::TooLong);
    }
    // sshd's loop: every prefix ending in '/' (a "component"), then the whole path, even when
    // that repeats the last prefix (a path ending in '/').
    let prefixes = path.match_indices('/').map(|(i, _)| (&path[..=i], true));
    for (component, intermediate) in prefixes.chain(std::iter::once((path, false))) {
        let st = stat(component).map_err(|e| ChrootError::Stat {
            component: component.to_owned(),
            reason: strerror(&e),
            missing: e.kind() == io::ErrorKind::NotFound,
        })?;
        if st.uid != 0 || st.mode & 0o022 != 0 {
            return Err(ChrootError::BadOwnership {
                component: component.to_owned(),
                intermediate,
                uid: st.uid,
                mode: st.mode,
            });
        }
        if !st.is_dir {
            return Err(ChrootError::NotDirectory {
                component: component.to_owned(),
                intermediate,
            });
        }
    }
    Ok(())
}

/// `strerror` text of an I/O error, without Rust's " (os error N)" suffix.
fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// `stat(2)` of the real file system (follows symbolic links, as sshd's `stat` does).
pub fn std_stat(path: &str) -> io::Result<DirStat> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(DirStat {
        uid: m.uid(),
        mode: m.mode(),
        is_dir: m.is_dir(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fs(entries: &[(&str, u32, u32, bool)]) -> HashMap<String, DirStat> {
        entries
            .iter()
            .map(|&(p, uid, mode, is_dir)| (p.to_owned(), DirStat { uid, mode, is_dir }))
            .collect()
    }

    fn run(path: &str, fs: &HashMap<String, DirStat>) -> Result<(), ChrootError> {
        let mut seen = Vec::new();
        let r = check(path, &mut |p| {
            seen.push(p.to_owned());
            // ENOENT, so the message carries strerror's "No such file or directory".
            fs.get(p)
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(2))
        });
        // Every component is visited in order, from "/" down.
        for pair in seen.windows(2) {
            assert!(pair[1].starts_with(&pair[0]), "{seen:?}");
        }
        r
    }

    fn good() -> HashMap<String, DirStat> {
        fs(&[
            ("/", 0, 0o40755, true),
            ("/home/", 0, 0o40755, true),
            ("/home/calo", 0, 0o40755, true),
            ("/home/calo/", 0, 0o40755, true),
        ])
    }

    #[test]
    fn a_root_owned_path_passes() {
        assert_eq!(run("/home/calo", &good()), Ok(()));
        assert_eq!(run("/home/calo/", &good()), Ok(()));
        assert_eq!(run("/", &good()), Ok(()));
    }

    #[test]
    fn the_final_directory_owned_by_the_user_is_the_classic_trap() {
        let mut f = good();
        f.insert(
            "/home/calo".into(),
            DirStat {
                uid: 1000,
                mode: 0o40755,
                is_dir: true,
            },
        );
        let e = run("/home/calo", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad ownership or modes for chroot directory \"/home/calo\""
        );
        assert_eq!(e.fix().unwrap(), "chown root:root '/home/calo'");
    }

    #[test]
    fn an_intermediate_component_is_named_with_its_slash() {
        let mut f = good();
        f.insert(
            "/home/".into(),
            DirStat {
                uid: 0,
                mode: 0o41777,
                is_dir: true,
            },
        );
        let e = run("/home/calo", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad ownership or modes for chroot directory component \"/home/\""
        );
        assert_eq!(e.fix().unwrap(), "chmod go-w '/home'");
        // /tmp-based chroots always fail this way (/tmp is 1777).
        let tmp = fs(&[("/", 0, 0o40755, true), ("/tmp/", 0, 0o41777, true)]);
        assert!(matches!(
            run("/tmp/jail", &tmp),
            Err(ChrootError::BadOwnership {
                intermediate: true,
                ..
            })
        ));
    }

    #[test]
    fn a_trailing_slash_makes_the_last_directory_a_component_as_in_sshd() {
        let mut f = good();
        f.insert(
            "/home/calo/".into(),
            DirStat {
                uid: 1000,
                mode: 0o40755,
                is_dir: true,
            },
        );
        assert_eq!(
            run("/home/calo/", &f).unwrap_err().to_string(),
            "bad ownership or modes for chroot directory component \"/home/calo/\""
        );
    }

    #[test]
    fn group_writable_and_foreign_owner_together() {
        let mut f = good();
        f.insert(
            "/home/calo".into(),
            DirStat {
                uid: 1000,
                mode: 0o40775,
                is_dir: true,
            },
        );
        let e = run("/home/calo", &f).unwrap_err();
        assert_eq!(
            e.fix().unwrap(),
            "chown root:root '/home/calo' && chmod go-w '/home/calo'"
        );
    }

    #[test]
    fn missing_and_not_a_directory() {
        let e = run("/srv/sftp", &good()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "safely_chroot: stat(\"/srv/\"): No such file or directory"
        );
        assert_eq!(
            e.fix().unwrap(),
            "install -d -o root -g root -m 0755 '/srv'"
        );
        let mut f = good();
        f.insert(
            "/home/calo".into(),
            DirStat {
                uid: 0,
                mode: 0o100644,
                is_dir: false,
            },
        );
        assert_eq!(
            run("/home/calo", &f).unwrap_err().to_string(),
            "chroot path \"/home/calo\" is not a directory"
        );
    }

    #[test]
    fn relative_and_overlong_paths() {
        assert_eq!(run("home/calo", &good()), Err(ChrootError::NotAbsolute));
        assert_eq!(run("", &good()), Err(ChrootError::NotAbsolute));
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert_eq!(run(&long, &good()), Err(ChrootError::TooLong));
    }

    #[test]
    fn quotes_survive_the_fix_command() {
        let f = fs(&[("/", 0, 0o40755, true), ("/it's", 5, 0o40755, true)]);
        let e = run("/it's", &f).unwrap_err();
        assert_eq!(e.fix().unwrap(), r"chown root:root '/it'\''s'");
    }

    #[test]
    fn the_real_root_passes_with_std_stat() {
        // "/" is root-owned and not group/other-writable on any sane system.
        assert_eq!(check("/", &mut std_stat), Ok(()));
        let e = check("/no/such/dir/for/sure", &mut std_stat).unwrap_err();
        assert!(matches!(e, ChrootError::Stat { missing: true, .. }), "{e}");
    }
}
