//! The controller's config file (TOML; unknown keys are errors), modelled on the EWC's
//! `wireless profile image-download default`:
//!
//! ```toml
//! [capwap]
//! listen = "0.0.0.0:5246"          # CAPWAP control port (tests use a high port)
//! block_size = 1024                # image bytes per Image Data message (RFC limit 1024)
//!
//! [image_download]
//! mode = "sftp"                    # "tftp" | "sftp" | "local"
//! server = "172.16.5.62"
//! path = "/Documents/sftp_files/EWC_17_9_4a"
//! username = "calo"
//! password_file = "/etc/airlift/sftp-password"
//! host_key_fingerprint = "SHA256:…"
//! parallel = false                 # false: sets of `set_size` APs, like the 9800's sets of 16
//! retry_interval_s = 60
//! retry_count = 3
//! ```
//!
//! The version the network should run is read from `version.info` at the profile's path;
//! `version = "17.9.4.27"` names it for when that file cannot be read (the EWC knows it from
//! its own image), so APs still learn of it and each family's fetch reports its own error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use relay::sftp::{Credential, HostKeyCheck, SftpOptions};
use relay::tftp::TftpOptions;
use relay::{FetchOptions, Source};

/// The CAPWAP control port (RFC 5415 §3.1).
pub const CAPWAP_CONTROL_PORT: u16 = 5246;
/// RFC 5415's limit of image bytes per Image Data element.
pub const RFC_BLOCK_SIZE: u16 = 1024;

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The values do not make a usable profile.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[capwap]`.
    #[serde(default)]
    pub capwap: CapwapSection,
    /// `[image_download]`.
    pub image_download: ImageDownloadSection,
}

/// `[capwap]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapwapSection {
    /// Address and port to listen on for CAPWAP control (default `0.0.0.0:5246`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Image bytes per Image Data message (default 1024, the RFC's limit; Cisco controllers
    /// send 1377).
    #[serde(default = "default_block_size")]
    pub block_size: u16,
    /// First retransmission of a request, in seconds (RFC 5415 RetransmitInterval, 3).
    #[serde(default = "default_retransmit")]
    pub retransmit_interval_s: f64,
    /// Retransmissions before the AP is considered gone (RFC 5415 MaxRetransmit, 5).
    #[serde(default = "default_max_retransmit")]
    pub max_retransmit: u32,
    /// Longest wait between retransmissions as they double, in seconds (default 15: half
    /// the EchoInterval).
    #[serde(default = "default_retransmit_max")]
    pub retransmit_max_s: f64,
    /// The IPv4 address APs reach the controller at, sent as CAPWAP Control IPv4 Address
    /// (default: the listen address, or with `0.0.0.0` this host's first non-loopback IPv4).
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// Name in the AC Name element and the syslog lines.
    #[serde(default = "default_ac_name")]
    pub ac_name: String,
}

impl Default for CapwapSection {
    fn default() -> Self {
        CapwapSection {
            listen: default_listen(),
            block_size: default_block_size(),
            retransmit_interval_s: default_retransmit(),
            max_retransmit: default_max_retransmit(),
            retransmit_max_s: default_retransmit_max(),
            address: None,
            ac_name: default_ac_name(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], CAPWAP_CONTROL_PORT))
}
fn default_block_size() -> u16 {
    RFC_BLOCK_SIZE
}
fn default_retransmit() -> f64 {
    3.0
}
fn default_retransmit_max() -> f64 {
    15.0
}
fn default_max_retransmit() -> u32 {
    5
}
fn default_ac_name() -> String {
    "airlift".to_owned()
}

/// How images are reached: `image-download-mode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A TFTP server.
    #[default]
    Tftp,
    /// An SFTP server.
    Sftp,
    /// A folder on this machine (watched for newly staged versions).
    Local,
}

/// When APs that run an older version get the new image while they keep running.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Predownload {
    /// Only with `controller predownload`.
    #[default]
    Off,
    /// As soon as a new version is staged (`mode = "local"`).
    Auto,
}

/// `[image_download]`: the image download profile.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageDownloadSection {
    /// `tftp`, `sftp` or `local`.
    pub mode: Mode,
    /// Server name or address (TFTP, SFTP).
    pub server: Option<String>,
    /// Server port (default 69 for TFTP, 22 for SFTP).
    pub port: Option<u16>,
    /// The folder holding `version.info` and the images (for `local`, a folder here).
    pub path: String,
    /// SFTP account.
    pub username: Option<String>,
    /// SFTP password (prefer `password_file`: this file is then secret).
    pub password: Option<String>,
    /// SFTP password, first line of this file.
    pub password_file: Option<PathBuf>,
    /// SFTP private key file, instead of a password.
    pub identity: Option<PathBuf>,
    /// SFTP: trust only this `SHA256:…` host key.
    pub host_key_fingerprint: Option<String>,
    /// SFTP: trust host keys from this known_hosts file (default `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// All APs at once (up to `max_concurrent`), or in sets of `set_size`.
    #[serde(default = "yes")]
    pub parallel: bool,
    /// Most APs downloading at once when `parallel` (default 100, like a 9800's wncd).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// APs per set when not `parallel` (default 16, like the 9800).
    #[serde(default = "default_set_size")]
    pub set_size: usize,
    /// Seconds between retries of a failed AP or image fetch.
    #[serde(default = "default_retry_interval")]
    pub retry_interval_s: u64,
    /// Retries before an AP is left failed.
    #[serde(default = "default_retry_count")]
    pub retry_count: u32,
    /// Predownload new versions to running APs: `off` or `auto`.
    #[serde(default)]
    pub predownload: Predownload,
    /// Per-file fetch deadline, seconds.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_s: u64,
    /// The AP version the network runs, when `version.info` cannot be read at the path (an
    /// embedded controller knows it from its own image). Default: `version.info` only.
    pub version: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_max_concurrent() -> usize {
    100
}
fn default_set_size() -> usize {
    16
}
fn default_retry_interval() -> u64 {
    60
}
fn default_retry_count() -> u32 {
    3
}
fn default_fetch_timeout() -> u64 {
    300
}

/// A checked profile, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[capwap]`, checked.
    pub capwap: CapwapSection,
    /// The image folder, as relay reaches it.
    pub folder: Source,
    /// How relay fetches from it.
    pub fetch: FetchOptions,
    /// The profile as written.
    pub profile: ImageDownloadSection,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Checks the text of a config file (`path` names it in errors and anchors relative
    /// file names).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Config::check(file, path)
    }

    /// The retry interval.
    pub fn retry_interval(&self) -> Duration {
        Duration::from_secs(self.profile.retry_interval_s)
    }

    fn check(file: File, path: &Path) -> Result<Config, ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let c = &file.capwap;
        if !(64..=8192).contains(&c.block_size) {
            return Err(bad(format!(
                "capwap.block_size = {}: 64 to 8192 (RFC 5415 says at most 1024)",
                c.block_size
            )));
        }
        if !(c.retransmit_interval_s > 0.0 && c.retransmit_interval_s <= 60.0) {
            return Err(bad(
                "capwap.retransmit_interval_s: more than 0, at most 60".into()
            ));
        }
        if !(c.retransmit_max_s >= c.retransmit_interval_s && c.retransmit_max_s <= 600.0) {
            return Err(bad(
                "capwap.retransmit_max_s: at least retransmit_interval_s, at most 600".into(),
            ));
        }
        if c.max_retransmit == 0 || c.max_retransmit > 20 {
            return Err(bad("capwap.max_retransmit: 1 to 20".into()));
        }
        let p = &file.image_download;
        if p.path.is_empty() {
            return Err(bad("image_download.path is empty".into()));
        }
        if p.max_concurrent == 0 || p.set_size == 0 {
            return Err(bad(
                "image_download.max_concurrent and set_size must be at least 1".into(),
            ));
        }
        if let Some(v) = &p.version
            && v.parse::<bundle_tool::version::ApVersion>().is_err()
        {
            return Err(bad(format!(
                "image_download.version = {v:?} is not an AP version (like 17.9.4.27)"
            )));
        }
        for (key, value) in [
            ("retry_interval_s", p.retry_interval_s),
            ("fetch_timeout_s", p.fetch_timeout_s),
        ] {
            if !(1..=86_400).contains(&value) {
                return Err(bad(format!(
                    "image_download.{key} = {value}: 1 to 86400 (a day)"
                )));
            }
        }
        let only_for = |what: &str, set: bool, mode: &str| -> Result<(), ConfigError> {
            if set {
                Err(bad(format!(
                    "image_download.{what} applies to mode = \"{mode}\" only"
                )))
            } else {
                Ok(())
            }
        };
        let sftp_keys = p.username.is_some()
            || p.password.is_some()
            || p.password_file.is_some()
            || p.identity.is_some()
            || p.host_key_fingerprint.is_some()
            || p.known_hosts.is_some();
        let deadline = Duration::from_secs(p.fetch_timeout_s.max(1));
        let (folder, fetch) = match p.mode {
            Mode::Local => {
                only_for("server", p.server.is_some(), "tftp or sftp")?;
                only_for("port", p.port.is_some(), "tftp or sftp")?;
                only_for("username/password/identity/host key", sftp_keys, "sftp")?;
                let dir = path.parent().unwrap_or(Path::new(".")).join(&p.path);
                (
                    Source::File { path: dir },
                    FetchOptions {
                        tftp: TftpOptions::default(),
                        sftp: None,
                    },
                )
            }
            Mode::Tftp | Mode::Sftp => {
                let Some(server) = p.server.as_deref().filter(|s| !s.is_empty()) else {
                    return Err(bad("image_download.server is missing".into()));
                };
                let host = if server.contains(':') && !server.starts_with('[') {
                    format!("[{server}]")
                } else {
                    server.to_owned()
                };
                let port = p.port.map(|n| format!(":{n}")).unwrap_or_default();
                let folder_path = p.path.trim_start_matches('/');
                if p.mode == Mode::Tftp {
                    only_for("username/password/identity/host key", sftp_keys, "sftp")?;
                    let url = format!("tftp://{host}{port}/{folder_path}");
                    let folder = Source::parse_folder(&url)
                        .map_err(|e| bad(format!("image_download: {e}")))?;
                    let tftp = TftpOptions {
                        deadline,
                        ..TftpOptions::default()
                    };
                    (folder, FetchOptions { tftp, sftp: None })
                } else {
                    let Some(user) = p.username.as_deref().filter(|u| !u.is_empty()) else {
                        return Err(bad(
                            "image_download.username is missing (mode = \"sftp\")".into()
                        ));
                    };
                    let credential = match (&p.password, &p.password_file, &p.identity) {
                        (Some(pw), None, None) => Credential::Password(pw.clone()),
                        (None, Some(f), None) => {
                            let f = path.parent().unwrap_or(Path::new(".")).join(f);
                            let text = std::fs::read_to_string(&f).map_err(|e| {
                                bad(format!("image_download.password_file {}: {e}", f.display()))
                            })?;
                            Credential::Password(text.lines().next().unwrap_or("").to_owned())
                        }
                        (None, None, Some(k)) => {
                            Credential::Key(path.parent().unwrap_or(Path::new(".")).join(k))
                        }
                        _ => {
                            return Err(bad(
                                "image_download: give exactly one of password, password_file, identity"
                                    .into(),
                            ));
                        }
                    };
                    let host_key = match (&p.host_key_fingerprint, &p.known_hosts) {
                        (Some(fp), None) => HostKeyCheck::Fingerprint(fp.clone()),
                        (None, Some(k)) => HostKeyCheck::KnownHosts(k.clone()),
                        (None, None) => HostKeyCheck::KnownHosts(
                            std::env::var_os("HOME")
                                .map(PathBuf::from)
                                .unwrap_or_default()
                                .join(".ssh/known_hosts"),
                        ),
                        (Some(_), Some(_)) => {
                            return Err(bad(
                                "image_download: host_key_fingerprint or known_hosts, not both"
                                    .into(),
                            ));
                        }
                    };
                    let user = percent_encode_user(user);
                    let url = format!("sftp://{user}@{host}{port}/{folder_path}");
                    let folder = Source::parse_folder(&url)
                        .map_err(|e| bad(format!("image_download: {e}")))?;
                    (
                        folder,
                        FetchOptions {
                            tftp: TftpOptions::default(),
                            sftp: Some(SftpOptions {
                                credential,
                                host_key,
                                deadline,
                                in_flight: 64,
                            }),
                        },
                    )
                }
            }
        };
        Ok(Config {
            capwap: file.capwap,
            folder,
            fetch,
            profile: file.image_download,
        })
    }
}

/// A user name as a URL's userinfo (`@`, `:`, `/` and `%` escaped).
fn percent_encode_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/airlift/controller.toml"))
    }

    #[test]
    fn the_documents_profiles_read_as_relay_sources() {
        let Ok(c) = parse(
            "[image_download]\nmode = \"tftp\"\nserver = \"172.16.5.27\"\npath = \"/Wrong-Path\"\n",
        ) else {
            panic!("tftp profile refused")
        };
        assert_eq!(
            c.folder.join("ap1g6").to_string(),
            "tftp://172.16.5.27/Wrong-Path/ap1g6"
        );
        assert_eq!(c.capwap.listen.port(), 5246);
        assert_eq!(c.capwap.block_size, 1024);
        assert!(c.profile.parallel);
        let Ok(c) = parse(
            "[capwap]\nlisten = \"127.0.0.1:15246\"\nblock_size = 1377\n\
             [image_download]\nmode = \"sftp\"\nserver = \"172.16.5.62\"\n\
             path = \"/Documents/sftp_files/EWC_17_9_4a\"\nusername = \"calo\"\n\
             password = \"x\"\nhost_key_fingerprint = \"SHA256:abc\"\nparallel = false\n",
        ) else {
            panic!("sftp profile refused")
        };
        assert_eq!(
            c.folder.join("ap3g3").to_string(),
            "sftp://*****@172.16.5.62/Documents/sftp_files/EWC_17_9_4a/ap3g3"
        );
        assert_eq!(c.capwap.block_size, 1377);
        assert!(!c.profile.parallel);
        assert_eq!(c.profile.set_size, 16);
        let Some(sftp) = &c.fetch.sftp else {
            panic!("no sftp options")
        };
        assert_eq!(
            sftp.host_key,
            HostKeyCheck::Fingerprint("SHA256:abc".into())
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_key_named() {
        let cases = [
            (
                "[image_download]\nmode = \"tftp\"\npath = \"x\"\n",
                "server is missing",
            ),
            (
                "[image_download]\nmode = \"ftp\"\npath = \"x\"\n",
                "unknown variant",
            ),
            (
                "[image_download]\nmode = \"tftp\"\nserver = \"h\"\npath = \"x\"\nsevrer = \"h\"\n",
                "unknown field",
            ),
            (
                "[image_download]\nmode = \"sftp\"\nserver = \"h\"\npath = \"x\"\n",
                "username is missing",
            ),
            (
                "[image_download]\nmode = \"sftp\"\nserver = \"h\"\npath = \"x\"\nusername = \"u\"\n",
                "exactly one of password",
            ),
            (
                "[image_download]\nmode = \"tftp\"\nserver = \"h\"\npath = \"x\"\nusername = \"u\"\n",
                "applies to mode = \"sftp\" only",
            ),
            (
                "[capwap]\nblock_size = 9000\n[image_download]\nmode = \"local\"\npath = \"x\"\n",
                "block_size",
            ),
            (
                "[image_download]\nmode = \"local\"\npath = \"\"\n",
                "path is empty",
            ),
            (
                "[image_download]\nmode = \"local\"\npath = \"x\"\nfetch_timeout_s = 9223372036854775807\n",
                "fetch_timeout_s = 9223372036854775807: 1 to 86400",
            ),
            (
                "[image_download]\nmode = \"local\"\npath = \"x\"\nretry_interval_s = 0\n",
                "retry_interval_s = 0: 1 to 86400",
            ),
            (
                "[image_download]\nmode = \"local\"\npath = \"x\"\nversion = \"17.x\"\n",
                "is not an AP version",
            ),
        ];
        for (text, want) in cases {
            let Err(e) = parse(text) else {
                panic!("accepted: {text}")
            };
            assert!(e.to_string().contains(want), "{text}: {e}");
            assert!(
                e.to_string().starts_with("/etc/airlift/controller.toml"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_password_file_next_to_the_config_gives_its_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sftp-password"), "s3cret\nignored\n").expect("write");
        let text = "[image_download]\nmode = \"sftp\"\nserver = \"172.16.5.62\"\npath = \"/i\"\n\
                    username = \"calo\"\npassword_file = \"sftp-password\"\n\
                    host_key_fingerprint = \"SHA256:abc\"\n";
        let c = Config::parse(text, &dir.path().join("controller.toml")).expect("config");
        let Some(sftp) = &c.fetch.sftp else {
            panic!("no sftp options")
        };
        assert_eq!(sftp.credential, Credential::Password("s3cret".into()));
        // A missing file names itself.
        let Err(e) = Config::parse(text, &dir.path().join("sub/controller.toml")) else {
            panic!("a missing password file was accepted")
        };
        assert!(e.to_string().contains("password_file"), "{e}");
    }

    #[test]
    fn local_paths_are_relative_to_the_config_file() {
        let Ok(c) = parse("[image_download]\nmode = \"local\"\npath = \"images/EWC\"\n") else {
            panic!("local refused")
        };
        assert_eq!(
            c.folder,
            Source::File {
                path: PathBuf::from("/etc/airlift/images/EWC")
            }
        );
    }

    #[test]
    fn user_names_are_escaped_in_the_url() {
        assert_eq!(percent_encode_user("ap@lab"), "ap%40lab");
        let Ok(c) = parse(
            "[image_download]\nmode = \"sftp\"\nserver = \"::1\"\nport = 2222\npath = \"/i\"\n\
             username = \"a@b\"\npassword = \"x\"\n",
        ) else {
            panic!("refused")
        };
        let Source::Sftp {
            user, host, port, ..
        } = &c.folder
        else {
            panic!("not sftp")
        };
        assert_eq!((user.as_str(), host.as_str(), *port), ("a@b", "::1", 2222));
    }
}
