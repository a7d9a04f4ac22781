//! Host keys: loaded from the `HostKey` files, and an ed25519 key generated (mode 0600, with
//! its `.pub`) on first start when none of them exists — what `ssh-keygen -A` does for sshd
//! packages, without a separate step.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};

/// sshd's default `HostKey` list, used when the configuration names none.
pub const DEFAULT_HOST_KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
];

/// Why host keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// A key file exists but cannot be read or parsed.
    #[error("Unable to load host key \"{path}\": {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A new key could not be written.
    #[error("cannot create host key \"{path}\": {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The outcome of [`load_or_generate`].
#[derive(Debug)]
pub struct HostKeys {
    /// Keys in configuration order.
    pub keys: Vec<PrivateKey>,
    /// The file a key was generated in, if one was.
    pub generated: Option<PathBuf>,
}

fn load(path: &Path) -> Result<Option<PrivateKey>, HostKeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes())
            .map(Some)
            .map_err(|e| HostKeyError::Load {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostKeyError::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn random_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        let rest = &mut seed[filled..];
        // SAFETY: the pointer and length describe `rest`, a live mutable buffer.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n.unsigned_abs();
    }
    Ok(seed)
}

/// Writes a new ed25519 key to `path` (mode 0600, refusing to overwrite) and `path.pub`.
pub fn generate(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let err = |source| HostKeyError::Create {
        path: path.to_path_buf(),
        source,
    };
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&random_seed().map_err(err)?));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err(io::Error::other(e)))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| err(io::Error::other(e)))?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    std::fs::write(&pub_path, format!("{public} root@sftpd\n")).map_err(err)?;
    Ok(key)
}

/// The configured keys that exist (sshd's default list when none is configured).
pub fn load_existing(paths: &[String]) -> Result<Vec<PrivateKey>, HostKeyError> {
    let paths: Vec<&str> = if paths.is_empty() {
        DEFAULT_HOST_KEYS.to_vec()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let mut keys = Vec::new();
    for p in &paths {
        if let Some(k) = load(Path::new(p))? {
            keys.push(k);
        }
    }
    Ok(keys)
}

/// Loads every configured key that exists; if none does, generates an ed25519 key at the
/// configured path that names ed25519 (or the last one), as a packaged sshd's first start does.
pub fn load_or_generate(paths: &[String]) -> Result<HostKeys, HostKeyError> {
    let paths: Vec<&str> = if paths.is_empty() {
        DEFAULT_HOST_KEYS.to_vec()
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let keys = load_existing(
        paths
            .iter()
            .map(|p| (*p).to_owned())
            .collect::<Vec<_>>()
            .as_slice(),
    )?;
    if !keys.is_empty() {
        return Ok(HostKeys {
            keys,
            generated: None,
        });
    }
    let target = paths
        .iter()
        .find(|p| p.contains("ed25519"))
        .or(paths.last())
        .map_or_else(|| PathBuf::from(DEFAULT_HOST_KEYS[2]), PathBuf::from);
    let key = generate(&target)?;
    Ok(HostKeys {
        keys: vec![key],
        generated: Some(target),
    })
}

/// `SHA256:…` of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_with_mode_0600_then_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ssh_host_ed25519_key");
        let paths = vec![path.to_string_lossy().into_owned()];
        let first = load_or_generate(&paths).expect("generate");
        assert_eq!(first.generated.as_deref(), Some(path.as_path()));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.path().join("ssh_host_ed25519_key.pub").exists());
        let second = load_or_generate(&paths).expect("load");
        assert!(second.generated.is_none());
        assert_eq!(fingerprint(&first.keys[0]), fingerprint(&second.keys[0]));
        assert!(fingerprint(&second.keys[0]).starts_with("SHA256:"));
    }

    #[test]
    fn a_corrupt_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "not a key").expect("write");
        let Err(err) = load_or_generate(&[path.to_string_lossy().into_owned()]) else {
            panic!("a corrupt key must not load");
        };
        assert!(
            err.to_string().starts_with("Unable to load host key"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "not a key");
    }
}
