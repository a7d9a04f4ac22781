//! The images the network needs, one per AP family: each fetched once through relay (however
//! many APs need it), verified, loaded into memory once and shared by every transfer, with
//! the MD5 that CAPWAP's Image Information element carries computed once.
//!
//! What an image must be comes from the profile's folder: its `manifest.json` (size and
//! SHA-256, and the MD5 reused as is) when it has one, else `version.info` and the image's
//! own tar and info members. A family whose fetch failed is not asked for again until the
//! retry interval has passed; APs that need it meanwhile get the same error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bundle_tool::check::VERSION_INFO;
use bundle_tool::manifest::{MANIFEST, MAX_MANIFEST, Manifest};
use bundle_tool::version::{ApVersion, MAX_VERSION_FILE, parse_version_info};
use md5::{Digest, Md5};
use relay::folder::Folder;
use relay::store::Store;
use relay::{ErrorKind, Expected, FetchError, FetchOptions, Source};

use crate::events::Event;

/// Most image families one release serves (the source document's bundle has 7).
pub const MAX_FAMILIES: usize = 64;

/// Where events go (the controller's log).
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// One family's image, in memory.
#[derive(Debug)]
pub struct Image {
    /// `ap1g8`.
    pub family: String,
    /// The version it is (from `version.info`).
    pub version: ApVersion,
    /// Its bytes, shared by every transfer.
    pub bytes: Arc<[u8]>,
    /// MD5, for Image Information.
    pub md5: [u8; 16],
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// What the profile's folder says of the release.
#[derive(Debug, Clone)]
pub struct Release {
    /// From `version.info`.
    pub version: ApVersion,
    /// `manifest.json`, when the folder has one.
    pub manifest: Option<Manifest>,
}

/// A family's fetch, shared by whoever asks while it runs.
type Slot = Arc<tokio::sync::Mutex<Option<Loaded>>>;

#[derive(Debug, Clone)]
enum Loaded {
    Ready(Arc<Image>),
    Failed { error: FetchError, at: Instant },
}

/// The images of one release.
pub struct Images {
    folder: Source,
    opts: FetchOptions,
    store: Arc<Store>,
    release: Release,
    retry: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    log: EventSink,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("folder", &self.folder)
            .field("version", &self.release.version)
            .finish_non_exhaustive()
    }
}

/// Reads `version.info` (required) and `manifest.json` (optional) from `folder`.
pub async fn read_release(folder: &Source, opts: &FetchOptions) -> Result<Release, FetchError> {
    let mut dir = Folder::open(folder, opts).await?;
    let release = async {
        let bytes = dir.read_small(VERSION_INFO, MAX_VERSION_FILE).await?;
        let version = parse_version_info(&bytes).map_err(|e| {
            FetchError::new(
                dir.file(VERSION_INFO),
                ErrorKind::Verification,
                e.to_string(),
            )
        })?;
        let manifest = match dir.read_small(MANIFEST, MAX_MANIFEST as usize).await {
            Ok(bytes) => Some(
                Manifest::parse(&bytes, std::path::Path::new(MANIFEST)).map_err(|e| {
                    FetchError::new(dir.file(MANIFEST), ErrorKind::Verification, e.to_string())
                })?,
            ),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Release { version, manifest })
    }
    .await;
    dir.close().await;
    release
}

impl Images {
    /// The images of `release` in `folder`, fetched through `store`; a failed family is
    /// tried again after `retry`.
    pub fn new(
        folder: Source,
        opts: FetchOptions,
        store: Arc<Store>,
        release: Release,
        retry: Duration,
        log: EventSink,
    ) -> Images {
        Images {
            folder,
            opts,
            store,
            release,
            retry,
            slots: Mutex::new(HashMap::new()),
            log,
        }
    }

    /// The version the network should run.
    pub fn version(&self) -> ApVersion {
        self.release.version
    }

    /// The folder the images come from.
    pub fn folder(&self) -> &Source {
        &self.folder
    }

    /// `family`'s image: fetched (once) and loaded, or the reason it is not available.
    pub async fn get(&self, family: &str) -> Result<Arc<Image>, FetchError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            // Names come from APs: a bounded number of them is remembered.
            if slots.len() >= MAX_FAMILIES && !slots.contains_key(family) {
                return Err(FetchError::new(
                    self.folder.join(family),
                    ErrorKind::NotFound,
                    format!("more than {MAX_FAMILIES} image families asked for"),
                ));
            }
            Arc::clone(slots.entry(family.to_owned()).or_default())
        };
        let mut loaded = slot.lock().await;
        match &*loaded {
            Some(Loaded::Ready(img)) => return Ok(Arc::clone(img)),
            Some(Loaded::Failed { error, at }) if at.elapsed() < self.retry => {
                return Err(error.clone());
            }
            _ => {}
        }
        let result = self.load(family).await;
        *loaded = Some(match &result {
            Ok(img) => Loaded::Ready(Arc::clone(img)),
            Err(e) => Loaded::Failed {
                error: e.clone(),
                at: Instant::now(),
            },
        });
        result
    }

    /// Families fetched so far (ready or failed), for tests and `show`.
    pub fn loaded(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn load(&self, family: &str) -> Result<Arc<Image>, FetchError> {
        let source = self.folder.join(family);
        let listed = self
            .release
            .manifest
            .as_ref()
            .and_then(|m| m.files.iter().find(|f| f.name == family));
        let expected = match (&self.release.manifest, listed) {
            (Some(m), Some(_)) => Expected::from_manifest(m, family).unwrap_or_default(),
            (Some(_), None) => {
                // The release has no image for this family: the AP is not supported.
                let error = FetchError::new(&source, ErrorKind::NotFound, "");
                (self.log)(Event::InstallStart {
                    source: source.clone(),
                });
                (self.log)(Event::InstallFailed {
                    source,
                    error: error.clone(),
                });
                return Err(error);
            }
            (None, _) => Expected::image(family, Some(self.release.version)),
        };
        (self.log)(Event::InstallStart {
            source: source.clone(),
        });
        let result: Result<Arc<Image>, FetchError> = async {
            let flight = self
                .store
                .get(&source, expected, &self.opts)
                .map_err(|e| FetchError::new(&source, ErrorKind::LocalIo, e.to_string()))?;
            let object = flight.wait().await?;
            let path = object.path.clone();
            let bytes: Arc<[u8]> = tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .map_err(|e| FetchError::new(&source, ErrorKind::LocalIo, e.to_string()))?
                .map_err(|e| FetchError::new(&source, ErrorKind::LocalIo, e.to_string()))?
                .into();
            let md5 = match listed.and_then(|f| parse_md5(&f.md5)) {
                Some(m) => m,
                None => {
                    let b = Arc::clone(&bytes);
                    tokio::task::spawn_blocking(move || Md5::digest(&b[..]).into())
                        .await
                        .map_err(|e| FetchError::new(&source, ErrorKind::LocalIo, e.to_string()))?
                }
            };
            Ok(Arc::new(Image {
                family: family.to_owned(),
                version: self.release.version,
                bytes,
                md5,
                sha256: object.sha256,
            }))
        }
        .await;
        match &result {
            Ok(_) => (self.log)(Event::InstallCompleted {
                source: self.folder.join(family),
            }),
            Err(error) => (self.log)(Event::InstallFailed {
                source: self.folder.join(family),
                error: error.clone(),
            }),
        }
        result
    }
}

fn parse_md5(hex: &str) -> Option<[u8; 16]> {
    let b = hex.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hex_parses() {
        assert_eq!(
            parse_md5("900150983cd24fb0d6963f7d28e17f72"),
            Some(Md5::digest(b"abc").into())
        );
        assert_eq!(parse_md5("90"), None);
        assert_eq!(parse_md5(&"z".repeat(32)), None);
    }
}
