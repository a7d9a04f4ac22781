//! `controller`: serve AP images over CAPWAP, ask a running controller what it is doing,
//! and run the whole story on one machine (`lab`). Flags are parsed here; the work is in the
//! library (`daemon`, `control`, `lab`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use controller::config::Config;
use controller::control::{self, Request, default_socket_path};
use controller::daemon::{self, Options};
use controller::lab::{self, LabMode, LabOptions};
use controller::logging;
use relay::store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "controller",
    version,
    about = "Relay Cisco AP images to access points over CAPWAP (the embedded controller's role)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the controller with a config file (the image download profile).
    Serve {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Control socket (default: /run/airlift/controller.sock for root, else
        /// $XDG_RUNTIME_DIR/airlift-controller.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Where fetched images are kept (default: /var/cache/airlift/controller for root,
        /// else ~/.cache/airlift/controller).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Largest size of the image cache, MiB.
        #[arg(long, default_value_t = 8192)]
        cache_mib: u64,
        /// Send the event lines (%INSTALL-…, %CAPWAPAC_SMGR_TRACE_MESSAGE-…) to syslog,
        /// facility local7, instead of stdout; SOCKET defaults to /dev/log.
        #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = "/dev/log")]
        syslog: Option<PathBuf>,
    },
    /// Ask a running controller.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
        /// Control socket.
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
    },
    /// Predownload the network's version to every AP that needs it (stored as backup).
    Predownload {
        /// Control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Activate the predownloaded version (Reset Request to each AP holding it as backup).
    Activate {
        /// Control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Read the config file again (the image download profile), like SIGHUP.
    Reload {
        /// Control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// The whole story on this machine: a synthetic bundle staged, a TFTP or SFTP server,
    /// the controller and simulated APs of every family, until each verified its image.
    Lab {
        /// Simulated APs.
        #[arg(long, default_value_t = 24, value_parser = in_range(1..=10_000usize, "1 to 10000 APs"))]
        aps: usize,
        /// How the controller reaches the image server.
        #[arg(long, value_enum, default_value_t = ModeArg::Tftp)]
        mode: ModeArg,
        /// Datagram loss on the CAPWAP link, each direction (0 to 0.1).
        #[arg(long, default_value_t = 0.02, value_parser = in_range(0.0..=0.1f64, "a loss from 0 to 0.1"))]
        loss: f64,
        /// Image size against the real bundle's (1.0: about 440 MB of AP images).
        #[arg(long, default_value_t = 0.02, value_parser = in_range(0.0001..=1.0f64, "a scale from 0.0001 to 1"))]
        scale: f64,
        /// CAPWAP control port (0: any free port).
        #[arg(long, default_value_t = controller::config::CAPWAP_CONTROL_PORT)]
        capwap_port: u16,
        /// Image bytes per Image Data message (the source document's controller sends 1377).
        #[arg(long, default_value_t = 1377, value_parser = in_range(64..=8192u16, "64 to 8192 bytes"))]
        block_size: u16,
        /// No live progress, only the lines and the summary.
        #[arg(long)]
        quiet: bool,
        /// Stop and exit 1 if not every AP verified within this many seconds.
        #[arg(long, default_value_t = 300, value_parser = in_range(1..=86_400u64, "1 to 86400 seconds"))]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ShowWhat {
    /// `show ap image`.
    Ap {
        #[command(subcommand)]
        what: ShowAp,
    },
}

#[derive(Debug, Subcommand)]
enum ShowAp {
    /// The image status of every AP.
    Image {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Tftp,
    Sftp,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("controller: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once (a library error that already quotes its
/// source is not followed by the source again).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A value parser for a number in `range` (clap then reports a usage error, exit 2).
fn in_range<T>(
    range: std::ops::RangeInclusive<T>,
    what: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let v: T = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(what.to_owned())
        }
    }
}

fn cache_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/airlift/controller");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("airlift/controller")
}

/// SIGINT or SIGTERM cancels `stop`; SIGHUP calls `hup`.
fn signals(stop: CancellationToken, hup: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hang = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hang.recv() => hup(),
            }
        }
        stop.cancel();
    });
    Ok(())
}

async fn ask(socket: Option<PathBuf>, request: Request) -> anyhow::Result<ExitCode> {
    let path = socket.unwrap_or_else(default_socket_path);
    let answer = control::ask(&path, request).await?;
    let _ = std::io::stdout().lock().write_all(answer.as_bytes());
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Serve {
            config,
            socket,
            cache,
            cache_mib,
            syslog,
        } => {
            let cfg = Config::load(&config)?;
            let log = match &syslog {
                Some(path) => logging::syslog_sink(path)
                    .with_context(|| format!("syslog socket {}", path.display()))?,
                None => logging::stdout_sink(),
            };
            let listen: SocketAddr = cfg.capwap.listen;
            let capwap = tokio::net::UdpSocket::bind(listen)
                .await
                .with_context(|| format!("CAPWAP control port {listen}"))?;
            let socket_path = socket.unwrap_or_else(default_socket_path);
            let control = control::bind(&socket_path)
                .with_context(|| format!("control socket {}", socket_path.display()))?;
            let cache = cache.unwrap_or_else(cache_dir);
            let store = Store::open(&cache, cache_mib << 20)
                .with_context(|| format!("image cache {}", cache.display()))?;
            let stop = CancellationToken::new();
            let hup_socket = socket_path.clone();
            signals(stop.clone(), move || {
                let path = hup_socket.clone();
                tokio::spawn(async move {
                    if let Err(e) = control::ask(&path, Request::Reload).await {
                        eprintln!("controller: reload: {e}");
                    }
                });
            })?;
            eprintln!(
                "controller: CAPWAP on {}, control socket {}, images from {}",
                capwap.local_addr()?,
                socket_path.display(),
                cfg.folder
            );
            let result = daemon::run(
                Options {
                    config: cfg,
                    config_path: Some(config),
                    store,
                    log,
                    status: Arc::default(),
                },
                capwap,
                Some(control),
                stop,
            )
            .await;
            let _ = std::fs::remove_file(&socket_path);
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { what, socket } => {
            let ShowWhat::Ap {
                what: ShowAp::Image { json },
            } = what;
            ask(socket, Request::ShowApImage { json }).await
        }
        Cmd::Predownload { socket } => ask(socket, Request::Predownload).await,
        Cmd::Activate { socket } => ask(socket, Request::Activate).await,
        Cmd::Reload { socket } => ask(socket, Request::Reload).await,
        Cmd::Lab {
            aps,
            mode,
            loss,
            scale,
            capwap_port,
            block_size,
            quiet,
            timeout,
        } => {
            let stop = CancellationToken::new();
            signals(stop.clone(), || {})?;
            let report = lab::run(
                LabOptions {
                    aps,
                    mode: match mode {
                        ModeArg::Tftp => LabMode::Tftp,
                        ModeArg::Sftp => LabMode::Sftp,
                    },
                    loss,
                    scale,
                    capwap_port,
                    block_size,
                    live: !quiet,
                    timeout: std::time::Duration::from_secs(timeout),
                },
                stop.clone(),
            )
            .await?;
            Ok(if stop.is_cancelled() {
                ExitCode::from(130)
            } else if report.all_verified() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
