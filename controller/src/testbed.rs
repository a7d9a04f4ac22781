//! What the lab and the end-to-end tests stand up: a synthetic release staged the way an
//! administrator stages one, and our tftpd or sftpd serving it on loopback in this process.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundle_tool::stage::{StageOptions, stage};
use bundle_tool::synth::{SynthOptions, image_size, synth};
use bundle_tool::version::ApVersion;
use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;

use crate::capwap::RetransmitConfig;

/// The AP version of the lab's release (the source document's 17.9.4a bundle).
pub const LAB_VERSION: &str = "17.9.4.27";
/// The folder it is staged as.
pub const LAB_FOLDER: &str = "EWC_17_9_4a";
/// The SFTP account.
pub const LAB_USER: &str = "calo";

/// An image server on loopback in this process, stopped when dropped.
#[derive(Debug)]
pub struct ImageServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// SFTP: the account's password.
    pub password: Option<String>,
    /// SFTP: the host key's `SHA256:…` fingerprint.
    pub fingerprint: Option<String>,
    /// TFTP: the server's log at verbosity 1 (`RRQ from 127.0.0.1 filename …`).
    pub tftp_log: Option<tftpd::syslog::Captured>,
    stop: CancellationToken,
    _keys: Option<tempfile::TempDir>,
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ImageServer {
    /// Our tftpd serving `root` (like `in.tftpd -s root`) on 127.0.0.1 at `port` (0: any).
    pub fn tftp(root: &Path, port: u16) -> std::io::Result<ImageServer> {
        use tftpd::server::{Listener, ServerConfig, files::FileCache, net::PortRange};
        let (log, captured) = tftpd::syslog::Logger::capture(1);
        let sock = std::net::UdpSocket::bind(("127.0.0.1", port))?;
        let listener = Listener::from_std(sock)?;
        let addr = listener.addr;
        let config = Arc::new(ServerConfig {
            roots: tftpd::server::open_roots(true, &[root.to_path_buf()])?,
            create: false,
            permissive: true,
            limits: tftpd::proto::options::ServerLimits::default(),
            retransmit: Duration::from_millis(200),
            ports: PortRange::new(None),
            remap: Default::default(),
            log,
            cache: Arc::new(FileCache::new()),
        });
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = tftpd::server::serve(vec![listener], config, token, None).await;
        });
        Ok(ImageServer {
            addr,
            password: None,
            fingerprint: None,
            tftp_log: Some(captured),
            stop,
            _keys: None,
        })
    }

    /// Our sftpd on 127.0.0.1 at `port` (0: any), one virtual account [`LAB_USER`] with a
    /// fresh random password, and a fresh host key. Unprivileged: paths are the host's.
    pub async fn sftp(port: u16) -> std::io::Result<ImageServer> {
        use sha_crypt::{PasswordHasher, ShaCrypt};
        let keys_dir = tempfile::tempdir()?;
        let key_path = keys_dir.path().join("ssh_host_ed25519_key");
        let keys = sftpd::hostkey::load_or_generate(&[key_path.to_string_lossy().into_owned()])
            .map_err(std::io::Error::other)?;
        let fingerprint = keys
            .keys
            .first()
            .map(sftpd::hostkey::fingerprint)
            .ok_or_else(|| std::io::Error::other("no host key"))?;
        let mut random = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))?;
        let password: String = random[..12].iter().map(|b| format!("{b:02x}")).collect();
        let hash = ShaCrypt::SHA512
            .hash_password_with_salt(password.as_bytes(), &random[12..])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let users_text = format!("{LAB_USER}:{}:65534:65534:/::\n", hash.as_str());
        let users = sftpd::users::UsersFile::parse(&users_text, "lab users")
            .map_err(std::io::Error::other)?;
        let config = sftpd::config::parse(
            "sshd_config",
            "ForceCommand internal-sftp\n",
            &[],
            &mut sftpd::config::NoIncludes,
        )
        .map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let host_keys = keys.keys;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let Ok(std) = stream.into_std() else { continue };
                let Ok(local) = std.local_addr() else {
                    continue;
                };
                let shared = Arc::new(sftpd::connection::Shared {
                    config: config.clone(),
                    log: sftpd::log::Log::capture(sftpd::server_args::LogLevel::Info),
                    users_file: Some(users.clone()),
                    users_file_path: Some("lab users".into()),
                    peer,
                    local,
                    privileged: false,
                    root_login: sftpd::setup::RootLogin::NoPassword,
                    status: Mutex::new(None),
                    sessions: Mutex::new(Vec::new()),
                });
                let keys = host_keys.clone();
                tokio::spawn(async move {
                    sftpd::connection::run(shared, std::os::fd::OwnedFd::from(std), keys).await;
                });
            }
        });
        Ok(ImageServer {
            addr,
            password: Some(password),
            fingerprint: Some(fingerprint),
            tftp_log: None,
            stop,
            _keys: Some(keys_dir),
        })
    }

    /// The `[image_download]` section of a profile for the folder `path` on this server
    /// (`path`: under the TFTP root, or absolute for SFTP).
    pub fn profile(&self, path: &str) -> String {
        let mut s = String::new();
        match (&self.password, &self.fingerprint) {
            (Some(pw), Some(fp)) => {
                let _ = write!(
                    s,
                    "mode = \"sftp\"\nserver = \"127.0.0.1\"\nport = {}\npath = {path:?}\n\
                     username = \"{LAB_USER}\"\npassword = \"{pw}\"\nhost_key_fingerprint = \"{fp}\"\n",
                    self.addr.port()
                );
            }
            _ => {
                let _ = write!(
                    s,
                    "mode = \"tftp\"\nserver = \"127.0.0.1\"\nport = {}\npath = {path:?}\n",
                    self.addr.port()
                );
            }
        }
        s
    }
}

/// A synthetic bundle of `version` staged into `root` as `name` (replacing a folder of that
/// name; with `current`, the `current` link next to it points at it); returns the family
/// sizes.
pub fn stage_release(
    root: &Path,
    name: &str,
    version: ApVersion,
    scale: f64,
    current: bool,
) -> std::io::Result<Vec<(String, u64)>> {
    let work = tempfile::tempdir_in(root)?;
    let zip = work.path().join(format!("C9800-AP-univ-k9.{version}.zip"));
    let mut opts = SynthOptions::new(version, scale);
    opts.controller_image = false;
    synth(&zip, &opts)?;
    let cancel = AtomicBool::new(false);
    let progress = ProgressBar::hidden();
    stage(
        &zip,
        root,
        &StageOptions {
            name: Some(name.into()),
            force: true,
            current,
            fsync: false,
            limits: Default::default(),
            cancel: &cancel,
            progress: &progress,
            threads: 0,
        },
    )
    .map_err(std::io::Error::other)?;
    Ok(opts
        .families
        .iter()
        .map(|f| (f.clone(), image_size(f, scale)))
        .collect())
}

/// The profile text the lab's controller reads.
pub fn lab_config(
    server: &ImageServer,
    folder: &str,
    capwap: SocketAddr,
    block_size: u16,
) -> String {
    format!(
        "[capwap]\nlisten = \"{capwap}\"\nblock_size = {block_size}\nretransmit_interval_s = 0.05\n\
         retransmit_max_s = 0.8\nmax_retransmit = 10\nac_name = \"airlift-lab\"\n\n[image_download]\n{}\
         parallel = true\nmax_concurrent = 100\nretry_interval_s = 2\nretry_count = 3\n",
        server.profile(folder)
    )
}

/// The AP side's timers for loopback.
pub fn lab_retransmit() -> RetransmitConfig {
    RetransmitConfig {
        interval: Duration::from_millis(50),
        max_retransmit: 10,
        max_interval: Some(Duration::from_millis(800)),
    }
}
