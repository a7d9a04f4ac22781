//! Findings: what a check says about one entry of a bundle, and how bad it is.

use std::fmt;

use serde::Serialize;

/// How bad a finding is: an error makes the bundle invalid (exit 1), a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The bundle must not be staged.
    Error,
    /// Worth a look; the bundle is still usable.
    Warning,
}

/// What a finding is about, as a stable machine-readable code (`--json` prints it in
/// kebab-case: `unsafe-name`, `info-version-mismatch`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The archive itself cannot be read (not a zip, truncated, bad central directory).
    CorruptArchive,
    /// An entry's data cannot be read (bad CRC, bad compressed stream, truncated).
    CorruptEntry,
    /// An entry's name would escape the staging folder (zip-slip) or is otherwise unusable.
    UnsafeName,
    /// A symbolic link entry.
    Symlink,
    /// A device, FIFO or other non-regular entry.
    NotAFile,
    /// Two entries with the same name.
    DuplicateName,
    /// More entries than the limit.
    TooManyEntries,
    /// An entry or the whole bundle is larger than the limit.
    TooLarge,
    /// An entry expands far more than real images do (a zip bomb).
    CompressionRatio,
    /// An entry's data is longer or shorter than its declared size.
    SizeMismatch,
    /// An encrypted entry (bundles are never encrypted).
    Encrypted,
    /// A compression method this tool does not read.
    UnsupportedCompression,
    /// All entries sat in one top folder, which was removed.
    TopFolderStripped,
    /// An entry inside a sub-folder: not part of a bundle's flat layout, skipped.
    NestedEntry,
    /// An entry named like a file bundle-tool writes (`manifest.json`, `SHA256SUMS`,
    /// `MD5SUMS`): skipped, the staged folder gets fresh ones.
    ReservedName,
    /// `version.info` is missing.
    MissingVersion,
    /// `version.info` does not hold four dot-separated numbers.
    BadVersion,
    /// `controller_version.info` is missing.
    MissingControllerVersion,
    /// `controller_version.info` is not a single printable token.
    BadControllerVersion,
    /// `readme.txt` is missing.
    MissingReadme,
    /// No AP image at all.
    NoImages,
    /// An AP image family this tool does not know (reported, not fatal).
    UnknownFamily,
    /// A file that is not part of a bundle's layout.
    UnexpectedFile,
    /// An empty AP image.
    EmptyImage,
    /// An AP image is not a well-formed tar archive.
    BadTar,
    /// A tar-level oddity that is not an error.
    TarWarning,
    /// An AP image carries no `info`/`info.ver` member.
    InfoMissing,
    /// The image's info names another family than its file name.
    InfoFamilyMismatch,
    /// The image's info carries another version than `version.info`.
    InfoVersionMismatch,
    /// The image's info has no `image_family:` line.
    InfoNoFamily,
    /// The image's info has no version line.
    InfoNoVersion,
    /// The image's info has lines this tool does not understand.
    InfoWarning,
}

impl Code {
    /// The kebab-case name `--json` uses.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One finding about a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of problem.
    pub code: Code,
    /// The entry concerned (its name as stored, lossily decoded), if any.
    pub entry: Option<String>,
    /// A sentence for people.
    pub message: String,
}

impl Finding {
    /// An error about `entry`.
    pub fn error(code: Code, entry: Option<&str>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            code,
            entry: entry.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A warning about `entry`.
    pub fn warning(code: Code, entry: Option<&str>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, entry, message)
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Names and texts come from the archive: never let them drive the terminal.
        let message = printable(&self.message);
        match &self.entry {
            Some(e) => write!(
                f,
                "{sev}: {}: {message} [{}]",
                printable(e),
                self.code.as_str()
            ),
            None => write!(f, "{sev}: {message} [{}]", self.code.as_str()),
        }
    }
}

/// `s` with control characters (escape sequences, carriage returns, …) written as Rust
/// escapes, for printing text that came from an archive on a terminal or in a CI log.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_print_for_people_and_machines() {
        let f = Finding::error(Code::UnsafeName, Some("../x"), "`..` component");
        assert_eq!(f.to_string(), "error: ../x: `..` component [unsafe-name]");
        let w = Finding::warning(Code::MissingReadme, None, "no readme.txt");
        assert_eq!(w.to_string(), "warning: no readme.txt [missing-readme]");
        assert_eq!(Code::InfoVersionMismatch.as_str(), "info-version-mismatch");
    }

    #[test]
    fn archive_text_cannot_drive_the_terminal() {
        assert_eq!(printable("ap1g8"), "ap1g8");
        assert_eq!(
            printable("\u{1b}[2J\rfake: valid"),
            "\\u{1b}[2J\\rfake: valid"
        );
        let f = Finding::error(Code::UnsafeName, Some("a\u{1b}]0;x\u{7}"), "bad\nline");
        assert!(!f.to_string().chars().any(char::is_control), "{f}");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }
}
