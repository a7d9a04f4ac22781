//! Entry names from an archive, checked before anything is written: a bundle is a flat set of
//! files, and a name is only ever used relative to a staging folder we created.
//!
//! Refused: empty names, absolute paths (`/x`), drive letters (`C:x`), backslashes (Windows
//! separators, which a Windows unzip would honour), `.` and `..` components, empty components
//! (`a//b`), NUL and other control characters, and names that are not UTF-8. These are the
//! "zip-slip" family of tricks; refusing them outright is simpler and safer than normalising.

/// Why an entry name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("empty name")]
    Empty,
    /// The name starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// The name starts with a drive letter such as `C:`.
    #[error("drive letter")]
    DriveLetter,
    /// The name contains `\`.
    #[error("backslash in name")]
    Backslash,
    /// A component is `..`.
    #[error("`..` component")]
    ParentDir,
    /// A component is `.` or empty.
    #[error("empty or `.` component")]
    EmptyComponent,
    /// A NUL or other control character.
    #[error("control character in name")]
    ControlChar,
    /// Not valid UTF-8.
    #[error("name is not UTF-8")]
    NotUtf8,
    /// Longer than [`MAX_NAME`] bytes.
    #[error("name longer than {MAX_NAME} bytes")]
    TooLong,
    /// A name the tool uses itself (`current` with `--current`).
    #[error("reserved: `stage --current` maintains a link of that name")]
    Reserved,
}

/// Longest accepted entry name, in bytes (Linux's `PATH_MAX` is 4096; bundle names are short).
pub const MAX_NAME: usize = 1024;

/// A checked entry name: relative, `/`-separated, no `.`/`..`/empty components. A directory
/// entry's trailing `/` is removed and reported in [`Checked::is_dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The name without a trailing `/`.
    pub name: &'a str,
    /// The raw name ended in `/` (a directory entry).
    pub is_dir: bool,
}

/// Checks a raw entry name.
pub fn check(raw: &[u8]) -> Result<Checked<'_>, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    let name = std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlChar);
    }
    if name.contains('\\') {
        return Err(NameError::Backslash);
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(NameError::DriveLetter);
    }
    let (name, is_dir) = match name.strip_suffix('/') {
        Some(stripped) => (stripped, true),
        None => (name, false),
    };
    for component in name.split('/') {
        match component {
            ".." => return Err(NameError::ParentDir),
            "" | "." => return Err(NameError::EmptyComponent),
            _ => {}
        }
    }
    Ok(Checked { name, is_dir })
}

/// Checks a staging name such as `EWC/17_9_4a` (given on the command line): the same rules as
/// an entry name, and no component may start with `.` (those are ours: staging folders).
pub fn check_stage_name(name: &str) -> Result<&str, NameError> {
    let checked = check(name.as_bytes())?;
    if checked.name.split('/').any(|c| c.starts_with('.')) {
        return Err(NameError::EmptyComponent);
    }
    Ok(checked.name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_pass() {
        assert_eq!(
            check(b"ap1g8").unwrap(),
            Checked {
                name: "ap1g8",
                is_dir: false
            }
        );
        assert_eq!(
            check(b"C9800-AP-iosxe-wlc.bin").unwrap().name,
            "C9800-AP-iosxe-wlc.bin"
        );
        assert_eq!(check(b"top/ap1g8").unwrap().name, "top/ap1g8");
        assert_eq!(
            check(b"top/").unwrap(),
            Checked {
                name: "top",
                is_dir: true
            }
        );
        assert_eq!(
            check(b"..foo").unwrap().name,
            "..foo",
            "a dotted name is not `..`"
        );
    }

    #[test]
    fn every_trick_is_refused() {
        let cases: &[(&[u8], NameError)] = &[
            (b"", NameError::Empty),
            (b"/etc/passwd", NameError::Absolute),
            (b"C:evil", NameError::DriveLetter),
            (b"c:/evil", NameError::DriveLetter),
            (b"..\\evil", NameError::Backslash),
            (b"a\\b", NameError::Backslash),
            (b"../evil", NameError::ParentDir),
            (b"a/../../evil", NameError::ParentDir),
            (b"a/..", NameError::ParentDir),
            (b"..", NameError::ParentDir),
            (b"./a", NameError::EmptyComponent),
            (b"a//b", NameError::EmptyComponent),
            (b"/", NameError::Absolute),
            (b"a\0b", NameError::ControlChar),
            (b"a\nb", NameError::ControlChar),
            (b"\xff\xfe", NameError::NotUtf8),
        ];
        for (raw, want) in cases {
            assert_eq!(check(raw), Err(*want), "{:?}", String::from_utf8_lossy(raw));
        }
        assert_eq!(check(&[b'a'; MAX_NAME + 1]), Err(NameError::TooLong));
    }

    #[test]
    fn stage_names() {
        assert_eq!(check_stage_name("EWC/17_9_4a").unwrap(), "EWC/17_9_4a");
        assert_eq!(check_stage_name("17.9.4.27").unwrap(), "17.9.4.27");
        assert!(check_stage_name(".bundle-tool-staging").is_err());
        assert!(check_stage_name("EWC/.x").is_err());
        assert!(check_stage_name("../x").is_err());
        assert!(check_stage_name("/srv/tftp").is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_stay_inside(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(c) = check(&raw) {
                let p = std::path::Path::new(c.name);
                prop_assert!(p.is_relative());
                for comp in p.components() {
                    prop_assert!(matches!(comp, std::path::Component::Normal(_)), "{:?}", c.name);
                }
            }
        }

        #[test]
        fn stringy_names_never_escape(s in "[a-zA-Z0-9./\\\\:]{0,20}") {
            if let Ok(c) = check(s.as_bytes()) {
                prop_assert!(!c.name.split('/').any(|x| x == ".." || x.is_empty()));
            }
        }
    }
}
