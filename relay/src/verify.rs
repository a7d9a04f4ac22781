//! What a fetched image must be, and the check made while its bytes are written.
//!
//! An image is trusted only when it matches what is known about it before the fetch:
//! - a bundle manifest (`manifest.json`, written by `bundle-tool stage` or `manifest`) gives
//!   its exact size and SHA-256;
//! - without one, `version.info` gives the version, and the image's own tar archive must be
//!   sound (complete, checksums right, end-of-archive marker) with `info`/`info.ver` members
//!   naming its family and that version — bundle-tool's image check, run on the stream.
//!
//! [`Verifier`] wraps the sink: it hashes and tar-checks the bytes as they pass (no second
//! read of the file), and [`Verifier::finish`] says whether they are what was expected.

use std::io::{self, Write};

use bundle_tool::check::{FileReport, check_image};
use bundle_tool::manifest::Manifest;
use bundle_tool::report::Severity;
use bundle_tool::tar::{TarChecker, TarLimits};
use bundle_tool::version::ApVersion;
use sha2::{Digest, Sha256};

use crate::error::{ErrorKind, FetchError};
use crate::source::Source;

/// An AP image checked by its own content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCheck {
    /// The family the file is named after (`ap1g7`), which its info members must name.
    pub family: String,
    /// The version `version.info` gives, which its info members must say.
    pub version: Option<ApVersion>,
}

/// What a fetched file must be. Every part that is set is checked; the default checks
/// nothing beyond the transfer's own completeness.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: Option<u64>,
    /// SHA-256.
    pub sha256: Option<[u8; 32]>,
    /// Checked as an AP image (tar structure, family, version).
    pub image: Option<ImageCheck>,
}

impl Expected {
    /// The size and SHA-256 the manifest gives for `name`; `None` when it does not list it
    /// (or lists a hash that is not 64 hex digits).
    pub fn from_manifest(manifest: &Manifest, name: &str) -> Option<Expected> {
        let f = manifest.files.iter().find(|f| f.name == name)?;
        Some(Expected {
            size: Some(f.size),
            sha256: Some(parse_sha256(&f.sha256)?),
            image: None,
        })
    }

    /// The AP image `family` of the bundle whose `version.info` says `version`.
    pub fn image(family: &str, version: Option<ApVersion>) -> Expected {
        Expected {
            image: Some(ImageCheck {
                family: family.to_owned(),
                version,
            }),
            ..Expected::default()
        }
    }
}

/// 64 hex digits as 32 bytes.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What [`Verifier::finish`] found in bytes that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Bytes written.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

/// A sink that hashes (and, for [`ImageCheck`], tar-checks) what it writes to `inner`.
#[derive(Debug)]
pub struct Verifier<W> {
    inner: W,
    hash: Sha256,
    len: u64,
    tar: Option<TarChecker>,
    expected: Expected,
}

impl<W: Write> Verifier<W> {
    /// Checks what is written to `inner` against `expected`.
    pub fn new(inner: W, expected: Expected) -> Verifier<W> {
        Verifier {
            inner,
            hash: Sha256::new(),
            len: 0,
            tar: expected
                .image
                .is_some()
                .then(|| TarChecker::new(TarLimits::default())),
            expected,
        }
    }

    /// The sink.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes are what was expected (`source` names them in the error). Returns
    /// the sink too, so the caller can commit it.
    pub fn finish(self, source: &Source) -> Result<(Verified, W), FetchError> {
        let fail = |detail: String| FetchError::new(source, ErrorKind::Verification, detail);
        let sha256: [u8; 32] = self.hash.finalize().into();
        if let Some(size) = self.expected.size
            && size != self.len
        {
            return Err(fail(format!("expected {size} bytes, got {}", self.len)));
        }
        if let Some(want) = self.expected.sha256
            && want != sha256
        {
            return Err(fail(format!(
                "SHA-256 {} is not the expected {}",
                hex(&sha256),
                hex(&want)
            )));
        }
        if let (Some(check), Some(tar)) = (&self.expected.image, self.tar) {
            let mut report = FileReport::new(&check.family, self.len);
            let mut findings = Vec::new();
            check_image(
                &check.family,
                &tar.finish(),
                check.version,
                &mut report,
                &mut findings,
            );
            if let Some(e) = findings.iter().find(|f| f.severity == Severity::Error) {
                return Err(fail(e.message.clone()));
            }
        }
        Ok((
            Verified {
                size: self.len,
                sha256,
            },
            self.inner,
        ))
    }
}

impl<W: Write> Write for Verifier<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = &buf[..n];
        self.hash.update(done);
        self.len += n as u64;
        if let Some(t) = &mut self.tar {
            // The first structural error is kept and reported by `finish`.
            let _ = t.feed(done);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle_tool::synth::write_image;

    fn source() -> Source {
        Source::File {
            path: "/srv/tftp/ap1g7".into(),
        }
    }

    fn image(family: &str, version: &str) -> Vec<u8> {
        let v: ApVersion = version.parse().expect("version");
        let mut out = Vec::new();
        write_image(&mut out, family, v, 50_000).expect("image");
        out
    }

    fn run(bytes: &[u8], expected: Expected) -> Result<Verified, FetchError> {
        let mut v = Verifier::new(Vec::new(), expected);
        // In uneven pieces, as a transfer delivers them.
        for piece in bytes.chunks(1468) {
            v.write_all(piece).expect("write");
        }
        v.finish(&source()).map(|(ok, _)| ok)
    }

    #[test]
    fn size_and_hash_from_a_manifest() {
        let data = b"abc".repeat(1000);
        let sum: [u8; 32] = Sha256::digest(&data).into();
        let good = Expected {
            size: Some(3000),
            sha256: Some(sum),
            image: None,
        };
        assert_eq!(
            run(&data, good.clone()).expect("good"),
            Verified {
                size: 3000,
                sha256: sum
            }
        );
        let Err(e) = run(&data[..2999], good.clone()) else {
            panic!("short accepted")
        };
        assert_eq!(e.kind, ErrorKind::Verification);
        assert!(
            e.to_string().contains("expected 3000 bytes, got 2999"),
            "{e}"
        );
        let mut flipped = data.clone();
        flipped[7] ^= 1;
        let Err(e) = run(&flipped, good) else {
            panic!("corrupt accepted")
        };
        assert!(e.to_string().contains("is not the expected"), "{e}");
    }

    #[test]
    fn an_image_is_checked_by_its_own_tar_and_info() {
        let img = image("ap1g7", "17.9.4.27");
        let want = |v: &str| Expected::image("ap1g7", Some(v.parse().expect("version")));
        run(&img, want("17.9.4.27")).expect("sound image");
        let Err(e) = run(&img, want("17.9.5.47")) else {
            panic!("wrong version accepted")
        };
        assert!(e.to_string().contains("version.info says 17.9.5.47"), "{e}");
        let Err(e) = run(&img, Expected::image("ap1g8", None)) else {
            panic!("wrong family accepted")
        };
        assert!(e.to_string().contains("image_family"), "{e}");
        // Cut short: a partial image is never accepted, even with the right info.
        let Err(e) = run(&img[..img.len() - 10240], want("17.9.4.27")) else {
            panic!("partial image accepted")
        };
        assert!(
            e.to_string().contains("not a well-formed tar archive"),
            "{e}"
        );
        let Err(e) = run(b"<html>404</html>", want("17.9.4.27")) else {
            panic!("an error page accepted")
        };
        assert_eq!(e.kind, ErrorKind::Verification);
    }

    #[test]
    fn manifest_entries_become_expectations() {
        let m = Manifest {
            format: bundle_tool::manifest::FORMAT.to_owned(),
            version: Some("17.9.4.27".into()),
            controller_version: None,
            files: vec![bundle_tool::manifest::FileSum {
                name: "ap1g7".into(),
                size: 3,
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                md5: "900150983cd24fb0d6963f7d28e17f72".into(),
            }],
        };
        let e = Expected::from_manifest(&m, "ap1g7").expect("listed");
        assert_eq!(e.size, Some(3));
        run(b"abc", e).expect("abc matches");
        assert!(Expected::from_manifest(&m, "ap1g8").is_none());
        assert_eq!(parse_sha256("zz"), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }
}
