//! `tftpd`: parses in.tftpd's flags and wires the pieces together. See the library docs.

use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use tftpd::cli::{self, Parsed, RunMode};
use tftpd::monitor::{self, Role};
use tftpd::proto::options::ServerLimits;
use tftpd::server::files::{FileCache, Watcher};
use tftpd::server::net::PortRange;
use tftpd::server::{self, Listener, ServerConfig};
use tftpd::setup::{self, MapFile, PidFile, RunAs, SetupError};
use tftpd::syslog::{Logger, Priority, ident_from_argv0};

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_else(|| "tftpd".into());
    let ident = ident_from_argv0(&argv0);
    let config = match cli::parse(std::env::args_os()) {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::PrintVersion(line)) | Ok(Parsed::PrintHelp(line)) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{line}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // tftpd-hpa logs usage errors to syslog only; a person at a terminal wants them too.
            eprintln!("{ident}: {}", e.message);
            if let Ok(log) = Logger::syslog(&ident, 0) {
                log.log(Priority::Err, format_args!("{}", e.message));
            }
            return ExitCode::from(e.exit_code as u8);
        }
    };
    let log = if config.mode == RunMode::Foreground && !config.force_syslog {
        Logger::stderr(config.verbosity)
    } else {
        Logger::syslog(&ident, config.verbosity)
            .unwrap_or_else(|_| Logger::stderr(config.verbosity))
    };
    for d in &config.diagnostics {
        eprintln!("{d}");
    }
    for w in &config.warnings {
        log.log(Priority::Warning, format_args!("{w}"));
    }
    match run(config, log.clone()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => match e.downcast_ref::<SetupError>() {
            Some(s) => {
                log.log(Priority::Err, format_args!("{}", s.message));
                ExitCode::from(s.code as u8)
            }
            None => {
                log.log(Priority::Err, format_args!("{e:#}"));
                ExitCode::from(setup::exit::OSERR as u8)
            }
        },
    }
}

/// Sets up and serves; returns the exit code (the monitor's is the server's).
fn run(config: cli::Config, log: Logger) -> anyhow::Result<u8> {
    if let Some(mask) = config.effective_umask() {
        setup::set_umask(mask);
    }
    // Sockets first, while we may still bind port 69.
    let sockets = if config.mode.is_standalone() {
        let (sockets, warnings) = setup::bind_listeners(&config)?;
        for w in warnings {
            log.log(Priority::Warning, format_args!("{w}"));
        }
        sockets
    } else {
        vec![setup::inetd_socket()?]
    };
    let roots = server::open_roots(config.secure, &config.dirs).map_err(|e| SetupError {
        message: format!(
            "{}: {}",
            config
                .dirs
                .first()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            server::strerror(&e)
        ),
        code: setup::exit::NOINPUT,
    })?;
    let mut watch_paths: Vec<_> = roots
        .paths()
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    let map = match &config.map_file {
        Some(path) => Some(MapFile::load(path)?),
        None => None,
    };
    let run_as = if setup::is_root() {
        Some(RunAs::lookup(&config.user)?)
    } else {
        None
    };
    if config.mode == RunMode::Daemon {
        setup::daemonize(config.secure)?;
    }
    // (The parser already dropped -P outside standalone mode, with tftpd-hpa's warning.)
    let pidfile = config.pidfile.as_deref().map(PidFile::write).transpose()?;
    let has_map = map.is_some();
    let (map_file, rules) = match map {
        Some((f, r)) => (Some(f), Some(Arc::new(r))),
        None => (None, None),
    };
    // As root in standalone mode, split: a root monitor keeps the pid file and re-reads the
    // map file on SIGHUP; the server below chroots and drops privileges.
    let mut control = None;
    let _pidfile = if run_as.is_some() && config.mode.is_standalone() {
        match monitor::split()? {
            Role::Monitor(m) => {
                // The monitor keeps no network: only the server uses the listening sockets.
                drop(sockets);
                let code = m.run(map_file, pidfile, &log);
                return Ok(u8::try_from(code).unwrap_or(u8::MAX));
            }
            Role::Server(server) => {
                control = Some(server);
                if let Some(p) = pidfile {
                    p.leave_to_monitor();
                }
                None
            }
        }
    } else {
        pidfile
    };
    if let Some(run_as) = &run_as {
        if config.secure {
            let dir = config.dirs.first().context("no -s directory")?;
            setup::chroot(dir)?;
            watch_paths = vec!["/".into()];
        }
        run_as.apply()?;
    }
    if let Some(server) = &control {
        server.follow_monitor()?;
    }

    let cache = Arc::new(FileCache::new());
    let refused = config.refuse.clone();
    let server_config = Arc::new(ServerConfig {
        roots,
        create: config.create,
        permissive: config.permissive,
        limits: ServerLimits {
            max_blksize: config.max_blksize,
            max_window: config.max_window,
            refused,
            ..ServerLimits::default()
        },
        retransmit: config.retransmit,
        ports: PortRange::new(config.port_range),
        remap: RwLock::new(rules),
        log: log.clone(),
        cache: Arc::clone(&cache),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tftpd")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let _watcher = match Watcher::start(watch_paths, Arc::clone(&cache)) {
            Ok(w) => Some(w),
            Err(e) => {
                log.log(
                    Priority::Warning,
                    format_args!(
                        "cannot watch served directories ({e}); checking files on every request"
                    ),
                );
                None
            }
        };
        let listeners = sockets
            .into_iter()
            .map(Listener::from_std)
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot register sockets")?;
        if let Some(server) = control {
            spawn_reload_listener(server.channel, Arc::clone(&server_config), has_map)?;
        }
        let shutdown = CancellationToken::new();
        spawn_signal_handlers(shutdown.clone(), Arc::clone(&server_config), map_file)?;
        let idle = (!config.mode.is_standalone()).then_some(config.idle_timeout);
        server::serve(listeners, server_config, shutdown, idle)
            .await
            .context("select loop")
    })?;
    Ok(0)
}

/// Applies the reloads the root monitor passes down (SIGHUP sent to the monitor).
fn spawn_reload_listener(
    mut channel: std::os::unix::net::UnixStream,
    config: Arc<ServerConfig>,
    has_map: bool,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            while let Ok(Some(frame)) = monitor::read_frame(&mut channel) {
                config.cache.clear();
                if !has_map {
                    continue;
                }
                let text = String::from_utf8_lossy(&frame);
                match setup::parse_rules(&text) {
                    Ok(rules) => config.set_remap(Some(rules)),
                    Err(e) => config.log.log(Priority::Err, format_args!("{}", e.message)),
                }
            }
        })
        .context("cannot start the reload listener")?;
    Ok(())
}

fn spawn_signal_handlers(
    shutdown: CancellationToken,
    config: Arc<ServerConfig>,
    map_file: Option<MapFile>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    // SIGHUP: re-read the remap rules and forget cached file mappings.
                    config.cache.clear();
                    if let Some(map) = &map_file {
                        match map.reload() {
                            Ok(rules) => config.set_remap(Some(rules)),
                            Err(e) => config.log.log(Priority::Err, format_args!("{}", e.message)),
                        }
                    }
                }
            }
        }
        shutdown.cancel();
    });
    Ok(())
}
