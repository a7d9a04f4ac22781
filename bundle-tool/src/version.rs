//! The two version files of a bundle.
//!
//! `version.info` holds the AP image version, four dot-separated numbers (`17.9.4.27`; the file
//! is 10 bytes in the source document, so with a newline). `controller_version.info` holds the
//! controller's version as Cisco writes it (`17.09.04a.0.6`, 13 bytes, no newline): its format
//! is not documented, so it is only checked loosely (printable, no spaces, short).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// An AP image version: four numbers, as in `17.9.4.27`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApVersion(pub [u32; 4]);

/// Why a version does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The file is empty (or only whitespace).
    #[error("empty")]
    Empty,
    /// Not four dot-separated numbers.
    #[error("{0:?} is not four dot-separated numbers (like 17.9.4.27)")]
    Malformed(String),
    /// Not UTF-8 text.
    #[error("not text")]
    NotText,
    /// Longer than a version file can reasonably be.
    #[error("{0} bytes is too long for a version file")]
    TooLong(usize),
}

impl FromStr for ApVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, VersionError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        let mut parts = [0u32; 4];
        let mut n = 0;
        for part in s.split('.') {
            let ok = n < 4
                && !part.is_empty()
                && part.len() <= 9
                && part.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(VersionError::Malformed(s.to_owned()));
            }
            parts[n] = part
                .parse()
                .map_err(|_| VersionError::Malformed(s.to_owned()))?;
            n += 1;
        }
        if n != 4 {
            return Err(VersionError::Malformed(s.to_owned()));
        }
        Ok(ApVersion(parts))
    }
}

impl fmt::Display for ApVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

impl Serialize for ApVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Longest version file accepted, in bytes.
pub const MAX_VERSION_FILE: usize = 256;

/// Parses the bytes of `version.info`.
pub fn parse_version_info(bytes: &[u8]) -> Result<ApVersion, VersionError> {
    if bytes.len() > MAX_VERSION_FILE {
        return Err(VersionError::TooLong(bytes.len()));
    }
    std::str::from_utf8(bytes)
        .map_err(|_| VersionError::NotText)?
        .parse()
}

/// Parses the bytes of `controller_version.info`: one token of printable ASCII.
pub fn parse_controller_version(bytes: &[u8]) -> Result<String, VersionError> {
    if bytes.len() > MAX_VERSION_FILE {
        return Err(VersionError::TooLong(bytes.len()));
    }
    let s = std::str::from_utf8(bytes)
        .map_err(|_| VersionError::NotText)?
        .trim();
    if s.is_empty() {
        return Err(VersionError::Empty);
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VersionError::Malformed(s.to_owned()));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_files_parse() {
        // 10 bytes, as in the source document's listing.
        assert_eq!(b"17.9.4.27\n".len(), 10);
        let v = parse_version_info(b"17.9.4.27\n").unwrap();
        assert_eq!(v, ApVersion([17, 9, 4, 27]));
        assert_eq!(v.to_string(), "17.9.4.27");
        assert_eq!(b"17.09.04a.0.6".len(), 13);
        assert_eq!(
            parse_controller_version(b"17.09.04a.0.6").unwrap(),
            "17.09.04a.0.6"
        );
        assert_eq!(
            parse_version_info(b"\r\n 8.10.185.0 \r\n")
                .unwrap()
                .to_string(),
            "8.10.185.0"
        );
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in [
            "",
            "17.9.4",
            "17.9.4.27.1",
            "17.9.4a.27",
            "17..4.27",
            "a.b.c.d",
            "17.9.4.-1",
            "1 7.9.4.27",
            "9999999999.1.1.1",
        ] {
            assert!(parse_version_info(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_version_info(b"\xff"), Err(VersionError::NotText));
        assert!(matches!(
            parse_version_info(&[b'1'; 300]),
            Err(VersionError::TooLong(300))
        ));
        assert!(parse_controller_version(b"17.9 4").is_err());
        assert_eq!(parse_controller_version(b"  \n"), Err(VersionError::Empty));
    }

    #[test]
    fn versions_order_numerically() {
        let a: ApVersion = "17.9.4.27".parse().unwrap();
        let b: ApVersion = "17.12.4.213".parse().unwrap();
        assert!(a < b);
    }
}
