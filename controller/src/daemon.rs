//! The controller as a service: a checked [`Config`] in, CAPWAP served until shutdown.
//!
//! [`run`] reads the release the profile points at (`version.info`, retried every retry
//! interval until it can be read, or the configured `version`), starts [`serve`] on the
//! CAPWAP socket, answers the control socket ([`crate::control`]), and with `mode = "local"`
//! watches the image folder: a version staged there while the controller runs (by
//! `bundle-tool stage`, which renames a complete folder into place) becomes the network's
//! version without a restart, and with `predownload = "auto"` is predownloaded to every AP
//! that needs it. `reload` re-reads the config file's image download profile the same way.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bundle_tool::check::VERSION_INFO;
use bundle_tool::version::ApVersion;
use relay::FetchError;
use relay::store::Store;
use tokio::io::AsyncWriteExt;
use tokio::net::{UdpSocket, UnixListener};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ac::AcConfig;
use crate::capwap::RetransmitConfig;
use crate::config::{Config, Mode, Predownload};
use crate::control::{Request, read_request};
use crate::events::Event;
use crate::images::{EventSink, Images, Release, read_release};
use crate::server::{Admission, Command, Controller, RetryPolicy, Status, serve};
use crate::show::ApImageReport;

/// Quiet time after a change in the watched folder before it is read (a stage renames
/// several entries in a row).
const SETTLE: Duration = Duration::from_millis(300);

/// What [`run`] needs besides its sockets.
pub struct Options {
    /// The checked config.
    pub config: Config,
    /// Its file, for `reload` (none: reload is refused).
    pub config_path: Option<PathBuf>,
    /// Where fetched images are kept.
    pub store: Arc<Store>,
    /// The log.
    pub log: EventSink,
    /// `show ap image` rows (the caller may read them too).
    pub status: Status,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("config", &self.config)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The CAPWAP socket failed.
    #[error("CAPWAP socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The local folder cannot be watched.
    #[error("cannot watch {path}: {message}")]
    Watch {
        /// The folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

struct Shared {
    config: Mutex<Config>,
    config_path: Option<PathBuf>,
    store: Arc<Store>,
    log: EventSink,
    status: Status,
    commands: mpsc::UnboundedSender<Command>,
    /// The network's version now (none until the release has been read).
    version: Mutex<Option<ApVersion>>,
    /// A reload while the release cannot be read: read it again now.
    reread: Notify,
}

/// The session settings a config asks for.
pub fn ac_config(config: &Config, version: ApVersion) -> AcConfig {
    let c = &config.capwap;
    let control_ipv4 = match (c.address, c.listen.ip()) {
        (Some(a), _) => a,
        (None, IpAddr::V4(v4)) if !v4.is_unspecified() => v4,
        (None, _) => host_ipv4().unwrap_or(Ipv4Addr::LOCALHOST),
    };
    AcConfig {
        ac_name: c.ac_name.clone(),
        control_ipv4,
        block_size: c.block_size,
        retransmit: RetransmitConfig {
            interval: Duration::from_secs_f64(c.retransmit_interval_s),
            max_retransmit: c.max_retransmit,
            max_interval: Some(Duration::from_secs_f64(c.retransmit_max_s)),
        },
        version: version.to_string(),
        download_at_join: true,
        dead_interval: crate::ac::DEFAULT_DEAD_INTERVAL,
    }
}

/// This host's first IPv4 address that is up and not loopback (what a controller listening
/// on every address tells its APs when no `address` is configured).
fn host_ipv4() -> Option<Ipv4Addr> {
    use nix::net::if_::InterfaceFlags;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let up = ifa.flags.contains(InterfaceFlags::IFF_UP)
            && !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let v4 = ifa.address?.as_sockaddr_in()?.ip();
        (up && !v4.is_loopback()).then_some(v4)
    })
}

/// Reads the release `config` points at, once: `version.info` (and `manifest.json`), or the
/// configured `version` when the file cannot be read.
pub async fn read_configured_release(config: &Config) -> Result<Release, FetchError> {
    match read_release(&config.folder, &config.fetch).await {
        Ok(r) => Ok(r),
        Err(e) => match config
            .profile
            .version
            .as_deref()
            .and_then(|v| v.parse::<ApVersion>().ok())
        {
            Some(version) => Ok(Release {
                version,
                manifest: None,
            }),
            None => Err(e),
        },
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(
    opts: Options,
    capwap: UdpSocket,
    control: Option<UnixListener>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let Options {
        config,
        config_path,
        store,
        log,
        status,
    } = opts;
    let (commands, orders) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        config: Mutex::new(config),
        config_path,
        store,
        log: Arc::clone(&log),
        status: Arc::clone(&status),
        commands,
        version: Mutex::new(None),
        reread: Notify::new(),
    });
    let stop = shutdown.child_token();
    // The control socket answers from the start: `show` and `reload` work while the release
    // cannot be read yet (a wrong path is fixed with `reload`, no restart).
    if let Some(listener) = control {
        tokio::spawn(control_loop(listener, Arc::clone(&shared), stop.clone()));
    }
    // The release before CAPWAP: until it is known there is nothing to tell an AP. Joins
    // wait (unanswered, so APs keep trying); every retry interval, or at a reload, the
    // folder is read again and what failed is logged.
    let release = loop {
        let config = shared.config();
        match read_configured_release(&config).await {
            Ok(r) => break r,
            Err(error) => {
                let source = config.folder.join(VERSION_INFO);
                log(Event::InstallStart {
                    source: source.clone(),
                });
                log(Event::InstallFailed { source, error });
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(config.retry_interval()) => {}
                    () = shared.reread.notified() => {}
                }
            }
        }
    };
    let config = shared.config();
    *shared
        .version
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(release.version);
    let images = new_images(&config, &shared.store, release.clone(), &log);
    let controller = Controller {
        ac: ac_config(&config, release.version),
        admission: admission(&config),
        retry: RetryPolicy {
            interval: config.retry_interval(),
            count: config.profile.retry_count,
        },
        images,
        log: Arc::clone(&log),
    };
    // Keep the watcher alive as long as the server runs.
    let _watcher = if config.profile.mode == Mode::Local {
        Some(watch(&config, Arc::clone(&shared), stop.clone())?)
    } else {
        None
    };
    let served = serve(capwap, controller, status, orders, stop.clone()).await;
    stop.cancel();
    Ok(served?)
}

fn admission(config: &Config) -> Admission {
    if config.profile.parallel {
        Admission::Parallel(config.profile.max_concurrent)
    } else {
        Admission::Sets(config.profile.set_size)
    }
}

fn new_images(
    config: &Config,
    store: &Arc<Store>,
    release: Release,
    log: &EventSink,
) -> Arc<Images> {
    Arc::new(Images::new(
        config.folder.clone(),
        config.fetch.clone(),
        Arc::clone(store),
        release,
        config.retry_interval(),
        Arc::clone(log),
    ))
}

impl Shared {
    fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `release` of `config`'s folder the network's, if it is a new version; whether
    /// it was.
    fn adopt(&self, config: &Config, release: Release, force: bool) -> bool {
        {
            let mut current = self.version.lock().unwrap_or_else(PoisonError::into_inner);
            if *current == Some(release.version) && !force {
                return false;
            }
            *current = Some(release.version);
        }
        (self.log)(Event::NewRelease {
            folder: config.folder.clone(),
            version: release.version.to_string(),
        });
        let images = new_images(config, &self.store, release, &self.log);
        let _ = self.commands.send(Command::Release {
            images,
            predownload: config.profile.predownload == Predownload::Auto,
        });
        true
    }

    /// `reload`: the config file again; its image download profile replaces the current one.
    async fn reload(&self) -> Result<String, String> {
        let Some(path) = &self.config_path else {
            return Err("this controller was not started from a config file".into());
        };
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let old = self.config();
        let started = self
            .version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !started {
            // No release yet, so no running profile to keep: take the new one and read it.
            let outcome = read_configured_release(&new).await;
            let folder = new.folder.clone();
            *self.config.lock().unwrap_or_else(PoisonError::into_inner) = new;
            self.reread.notify_one();
            return Ok(match outcome {
                Ok(r) => format!(
                    "reloaded {}: AP version {} from {folder}\n",
                    path.display(),
                    r.version
                ),
                Err(e) => format!(
                    "reloaded {}: still no release: {e} (tried again every retry interval)\n",
                    path.display()
                ),
            });
        }
        let mut note = String::new();
        if new.capwap != old.capwap {
            note = " ([capwap] changes take effect at the next start)".into();
        }
        let release = read_configured_release(&new).await.map_err(|e| {
            format!(
                "{path}: kept the running profile: {e}",
                path = path.display()
            )
        })?;
        let version = release.version;
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = new.clone();
        self.adopt(&new, release, true);
        Ok(format!(
            "reloaded {}: AP version {version} from {}{note}\n",
            path.display(),
            new.folder
        ))
    }

    async fn answer(&self, request: Request) -> Result<String, String> {
        match request {
            Request::ShowApImage { json } => {
                let rows = self
                    .status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .cloned()
                    .collect();
                let report = ApImageReport::new(rows);
                if json {
                    serde_json::to_string_pretty(&report)
                        .map(|s| s + "\n")
                        .map_err(|e| e.to_string())
                } else {
                    Ok(report.to_string())
                }
            }
            Request::Predownload | Request::Activate => {
                let Some(version) = *self.version.lock().unwrap_or_else(PoisonError::into_inner)
                else {
                    return Err(
                        "no release yet: version.info could not be read (see the log)".into(),
                    );
                };
                let (tx, rx) = oneshot::channel();
                let cmd = if request == Request::Predownload {
                    Command::Predownload(Some(tx))
                } else {
                    Command::Activate(Some(tx))
                };
                self.commands
                    .send(cmd)
                    .map_err(|_| "the controller is stopping".to_owned())?;
                let n = rx
                    .await
                    .map_err(|_| "the controller is stopping".to_owned())?;
                Ok(if request == Request::Predownload {
                    format!("predownload of {version} started on {n} APs\n")
                } else {
                    format!("activation of {version} sent to {n} APs\n")
                })
            }
            Request::Reload => self.reload().await,
        }
    }
}

async fn control_loop(listener: UnixListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let answer = match read_request(&mut stream).await {
                Ok(Some(request)) => shared.answer(request).await,
                Ok(None) => Err(
                    "unknown request (show ap image [json], predownload, activate, reload)".into(),
                ),
                Err(e) => Err(e.to_string()),
            };
            let text = answer.unwrap_or_else(|e| format!("error: {e}\n"));
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Watches the local folder (and the folder holding it, where `bundle-tool stage` renames
/// new versions and the `current` link into place).
fn watch(
    config: &Config,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    use notify::Watcher;
    let relay::Source::File { path } = &config.folder else {
        return Err(DaemonError::Watch {
            path: PathBuf::new(),
            message: "not a local folder".into(),
        });
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(|e| DaemonError::Watch {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    for dir in [parent, path.as_path()] {
        if dir.is_dir() {
            watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .map_err(|e| DaemonError::Watch {
                    path: dir.to_owned(),
                    message: e.to_string(),
                })?;
        }
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = rx.recv() => if got.is_none() { return },
            }
            // Let the burst of a stage settle, then read what is there.
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(SETTLE) => break,
                    got = rx.recv() => if got.is_none() { return },
                }
            }
            let config = shared.config();
            if let Ok(release) = read_release(&config.folder, &config.fetch).await {
                shared.adopt(&config, release, false);
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capwap: &str) -> Config {
        let text =
            format!("[capwap]\n{capwap}\n[image_download]\nmode = \"local\"\npath = \"x\"\n");
        match Config::parse(&text, Path::new("/etc/airlift/controller.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_advertised_address_is_the_configured_one_or_the_listen_one_or_this_hosts() {
        let v = ApVersion([17, 9, 4, 27]);
        let ac = ac_config(&config("listen = \"127.0.0.2:5246\""), v);
        assert_eq!(ac.control_ipv4, Ipv4Addr::new(127, 0, 0, 2));
        let ac = ac_config(
            &config("listen = \"0.0.0.0:5246\"\naddress = \"192.0.2.10\""),
            v,
        );
        assert_eq!(ac.control_ipv4, Ipv4Addr::new(192, 0, 2, 10));
        // Listening everywhere: never 0.0.0.0, which no AP can reach.
        let ac = ac_config(&config("listen = \"0.0.0.0:5246\""), v);
        assert!(!ac.control_ipv4.is_unspecified());
        assert_eq!(ac.version, "17.9.4.27");
        assert_eq!(ac.retransmit.max_interval, Some(Duration::from_secs(15)));
    }
}
