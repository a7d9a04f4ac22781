//! Parser for the `info` / `info.ver` member of Cisco AP images.
//!
//! Older IOS images carry a member `info` first and `info.ver` last; newer (COS) images carry
//! `info.ver` (some also `ver`). Their text is lines of `key: value`, for example:
//!
//! ```text
//! image_family: ap1g6a
//! ws_management_version: 17.10.0.181
//! info_end:
//! altboot_fallback: 1
//! ```
//!
//! Cisco does not publish the format, so [`parse_info`] is tolerant: it never fails, keeps
//! every `key: value` line in order, and turns everything it does not understand into a
//! warning instead of an error. What it accepts:
//!
//! - `key: value` and `key:value`; the line is split at its first colon, so values may hold
//!   colons (`built: 12:30:00`); key and value are trimmed of whitespace; a key may not be
//!   empty, a value may (`info_end:`);
//! - LF or CRLF line ends, blank lines (skipped silently), a leading UTF-8 byte-order mark and
//!   trailing NUL bytes (both skipped with a warning);
//! - `info_end:` is an ordinary field with an empty value. Lines after it are parsed the same
//!   way and **not** warned about: the known example above goes on after it, so it does not
//!   end the file.
//!
//! What becomes a warning (the line is then not a field): a line without a colon (a line with
//! `=` but no colon gets its own message, as `key=value` is not a known form), an empty key.
//! Also warned: non-UTF-8 lines (decoded lossily and kept), a key repeated with a different
//! value (both are kept in [`InfoFile::fields`]; the first wins for [`InfoFile::image_family`],
//! [`InfoFile::version`] and [`InfoFile::get`]), an empty `image_family` or version value, and
//! a file without any field. At most [`MAX_WARNINGS`] warnings are kept, then one that counts
//! the rest.
//!
//! Keys are compared ASCII case-insensitively (`Image_Family` is `image_family`); stored keys
//! keep their spelling.

use std::borrow::Cow;
use std::collections::HashMap;

/// Most warnings [`parse_info`] keeps; one more line says how many were left out.
pub const MAX_WARNINGS: usize = 100;

/// The keys [`InfoFile::version`] is taken from, in order of preference.
pub const VERSION_KEYS: [&str; 3] = ["ap_version", "ws_management_version", "version"];

/// A parsed `info` / `info.ver` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InfoFile {
    /// Every `key: value` line, in order, keys and values trimmed.
    pub fields: Vec<(String, String)>,
    /// The first non-empty `image_family:` value.
    pub image_family: Option<String>,
    /// The first non-empty value of `ap_version`, else `ws_management_version`, else
    /// `version` (in that preference order, wherever they are in the file).
    pub version: Option<InfoVersion>,
    /// Lines that are not `key: value`, non-UTF-8 (decoded lossily), duplicate keys with
    /// different values, etc., each naming its line.
    pub warnings: Vec<String>,
}

/// A version value and the key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoVersion {
    /// The key as written in the file.
    pub key: String,
    pub value: String,
}

impl InfoFile {
    /// The first value of `key` (ASCII case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an `info` / `info.ver` file. Never fails and never panics: whatever is not
/// understood becomes a warning (see the module doc). Time and memory are linear in the input.
pub fn parse_info(bytes: &[u8]) -> InfoFile {
    let mut warnings = Warnings::default();
    let mut bytes = bytes;
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        warnings.push(|| "UTF-8 byte-order mark at the start ignored".to_owned());
        bytes = rest;
    }
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end < bytes.len() {
        let nuls = bytes.len() - end;
        warnings.push(|| format!("{nuls} trailing NUL bytes ignored"));
        bytes = &bytes[..end];
    }

    let mut fields: Vec<(String, String)> = Vec::new();
    // lower-cased key → index of its first occurrence in `fields`
    let mut first: HashMap<String, usize> = HashMap::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = index + 1;
        let line = match std::str::from_utf8(raw) {
            Ok(line) => Cow::Borrowed(line),
            Err(_) => {
                warnings.push(|| format!("line {n}: not UTF-8, decoded lossily"));
                String::from_utf8_lossy(raw)
            }
        };
        // Trimming also drops the `\r` of a CRLF line end.
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            if text.contains('=') {
                warnings.push(|| {
                    format!(
                        "line {n}: `key=value` is not a known form, only `key: value`: {}",
                        excerpt(text)
                    )
                });
            } else {
                warnings.push(|| format!("line {n}: not `key: value`: {}", excerpt(text)));
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            warnings.push(|| format!("line {n}: empty key: {}", excerpt(text)));
            continue;
        }
        let lower = key.to_ascii_lowercase();
        match first.get(&lower).and_then(|&i| fields.get(i)) {
            Some((_, earlier)) if earlier != value => {
                warnings.push(|| {
                    format!(
                        "line {n}: {key:?} again with a different value {} (the first, {}, is used)",
                        excerpt(value),
                        excerpt(earlier)
                    )
                });
            }
            Some(_) => {}
            None => {
                first.insert(lower, fields.len());
            }
        }
        fields.push((key.to_owned(), value.to_owned()));
    }

    let mut info = InfoFile {
        fields,
        ..InfoFile::default()
    };
    match info.get("image_family") {
        Some("") => warnings.push(|| "image_family is empty".to_owned()),
        Some(family) => info.image_family = Some(family.to_owned()),
        None => {}
    }
    for wanted in VERSION_KEYS {
        let found = info
            .fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(wanted));
        match found {
            Some((key, value)) if value.is_empty() => {
                warnings.push(|| format!("{key} is empty"));
            }
            Some((key, value)) => {
                info.version = Some(InfoVersion {
                    key: key.clone(),
                    value: value.clone(),
                });
                break;
            }
            None => {}
        }
    }
    if info.fields.is_empty() {
        warnings.push(|| "no `key: value` lines".to_owned());
    }
    info.warnings = warnings.finish();
    info
}

/// Warnings up to [`MAX_WARNINGS`], then a count.
#[derive(Debug, Default)]
struct Warnings {
    kept: Vec<String>,
    dropped: usize,
}

impl Warnings {
    fn push(&mut self, message: impl FnOnce() -> String) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(message());
        } else {
            self.dropped += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("… and {} more warnings", self.dropped));
        }
        self.kept
    }
}

/// A quoted, shortened copy of a line or value for a warning.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        short.push('…');
    }
    format!("{short:?}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(info: &InfoFile) -> Vec<(&str, &str)> {
        info.fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn documented_example() {
        let info = parse_info(
            b"image_family: ap1g6a\nws_management_version: 17.10.0.181\ninfo_end:\naltboot_fallback: 1\n",
        );
        assert_eq!(
            pairs(&info),
            [
                ("image_family", "ap1g6a"),
                ("ws_management_version", "17.10.0.181"),
                ("info_end", ""),
                ("altboot_fallback", "1"),
            ]
        );
        assert_eq!(info.image_family.as_deref(), Some("ap1g6a"));
        assert_eq!(
            info.version,
            Some(InfoVersion {
                key: "ws_management_version".into(),
                value: "17.10.0.181".into(),
            })
        );
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.get("ALTBOOT_FALLBACK"), Some("1"));
        assert_eq!(info.get("missing"), None);
    }

    #[test]
    fn ap_version_is_preferred_wherever_it_is() {
        let info = parse_info(
            b"version: 1.0\nws_management_version: 17.9.4.27\nimage_family: ap1g8\nap_version: 17.9.4.27\n",
        );
        assert_eq!(
            info.version,
            Some(InfoVersion {
                key: "ap_version".into(),
                value: "17.9.4.27".into(),
            })
        );
        let info = parse_info(b"version: 1.0\nws_management_version: 17.9\n");
        assert_eq!(info.version.unwrap().key, "ws_management_version");
        let info = parse_info(b"Version: 8.10.185.0\n");
        assert_eq!(
            info.version,
            Some(InfoVersion {
                key: "Version".into(),
                value: "8.10.185.0".into(),
            })
        );
        let info = parse_info(b"image_family: ap3g3\n");
        assert_eq!(info.version, None);
        assert!(info.warnings.is_empty());
    }

    #[test]
    fn empty_version_falls_through_with_a_warning() {
        let info = parse_info(b"ap_version:\nws_management_version: 17.10.0.181\n");
        assert_eq!(info.version.unwrap().key, "ws_management_version");
        assert_eq!(info.warnings, ["ap_version is empty"]);
        let info = parse_info(b"image_family:   \n");
        assert_eq!(info.image_family, None);
        assert_eq!(info.warnings, ["image_family is empty"]);
    }

    #[test]
    fn crlf_blank_lines_and_spacing() {
        let info = parse_info(
            b"\r\n  image_family:ap1g4\r\n\r\n\tws_management_version :  8.5.1.0 \r\n\n   \nlast:x",
        );
        assert_eq!(
            pairs(&info),
            [
                ("image_family", "ap1g4"),
                ("ws_management_version", "8.5.1.0"),
                ("last", "x"),
            ]
        );
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn values_keep_their_colons() {
        let info = parse_info(b"build_time: 2023-01-02 12:30:00\nurl: tftp://10.0.0.1/x\n");
        assert_eq!(
            pairs(&info),
            [
                ("build_time", "2023-01-02 12:30:00"),
                ("url", "tftp://10.0.0.1/x")
            ]
        );
    }

    #[test]
    fn equals_and_other_lines_are_warnings() {
        let info = parse_info(b"image_family=ap1g6\nimage_family: ap1g6\ngarbage line\n: orphan\n");
        assert_eq!(pairs(&info), [("image_family", "ap1g6")]);
        assert_eq!(
            info.warnings,
            [
                "line 1: `key=value` is not a known form, only `key: value`: \"image_family=ap1g6\"",
                "line 3: not `key: value`: \"garbage line\"",
                "line 4: empty key: \": orphan\"",
            ]
        );
    }

    #[test]
    fn non_utf8_is_decoded_lossily() {
        let info = parse_info(b"image_family: ap1g7\nbuilder: caf\xE9\n");
        assert_eq!(info.get("builder"), Some("caf\u{FFFD}"));
        assert_eq!(info.warnings, ["line 2: not UTF-8, decoded lossily"]);
    }

    #[test]
    fn duplicates() {
        let info =
            parse_info(b"image_family: ap1g6a\nimage_family: ap1g6a\nIMAGE_FAMILY: ap1g7\nx: 1\n");
        assert_eq!(info.fields.len(), 4);
        assert_eq!(info.image_family.as_deref(), Some("ap1g6a"));
        assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
        assert!(info.warnings[0].starts_with("line 3: \"IMAGE_FAMILY\" again"));
        assert!(info.warnings[0].contains("\"ap1g7\""));
    }

    #[test]
    fn info_end_does_not_end_parsing() {
        let info = parse_info(b"info_end:\nimage_family: ap1g5\n");
        assert_eq!(pairs(&info), [("info_end", ""), ("image_family", "ap1g5")]);
        assert_eq!(info.image_family.as_deref(), Some("ap1g5"));
        assert!(info.warnings.is_empty());
    }

    #[test]
    fn empty_and_blank_input() {
        for input in [&b""[..], b"\n\n", b"   \r\n"] {
            let info = parse_info(input);
            assert!(info.fields.is_empty());
            assert_eq!(info.warnings, ["no `key: value` lines"]);
        }
    }

    #[test]
    fn byte_order_mark_and_trailing_nuls() {
        let info = parse_info(b"\xEF\xBB\xBFimage_family: ap1g8\n\0\0\0");
        assert_eq!(pairs(&info), [("image_family", "ap1g8")]);
        assert_eq!(
            info.warnings,
            [
                "UTF-8 byte-order mark at the start ignored",
                "3 trailing NUL bytes ignored"
            ]
        );
    }

    #[test]
    fn warnings_are_capped() {
        let input = "junk\n".repeat(MAX_WARNINGS + 5);
        let info = parse_info(input.as_bytes());
        assert_eq!(info.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(info.warnings[MAX_WARNINGS], "… and 6 more warnings");
    }

    #[test]
    fn long_lines_are_shortened_in_warnings() {
        let line = "y".repeat(500);
        let info = parse_info(line.as_bytes());
        assert_eq!(
            info.warnings[0],
            format!("line 1: not `key: value`: \"{}…\"", "y".repeat(60))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let info = parse_info(&bytes);
            for (k, v) in &info.fields {
                prop_assert!(!k.is_empty());
                prop_assert_eq!(k.trim(), k.as_str());
                prop_assert_eq!(v.trim(), v.as_str());
            }
            prop_assert!(info.warnings.len() <= MAX_WARNINGS + 1);
        }

        #[test]
        fn well_formed_lines_round_trip(
            lines in prop::collection::vec(("[a-z_]{1,20}", "[ -~]{0,30}", any::<bool>()), 0..20),
        ) {
            let mut text = String::new();
            for (key, value, crlf) in &lines {
                text.push_str(&format!("{key}: {value}{}", if *crlf { "\r\n" } else { "\n" }));
            }
            let info = parse_info(text.as_bytes());
            let want: Vec<(String, String)> =
                lines.iter().map(|(k, v, _)| (k.clone(), v.trim().to_owned())).collect();
            prop_assert_eq!(&info.fields, &want);
            let family = want.iter().find(|(k, _)| k == "image_family").map(|(_, v)| v);
            prop_assert_eq!(
                info.image_family.as_ref(),
                family.filter(|v| !v.is_empty())
            );
        }
    }
}
