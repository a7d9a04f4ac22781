//! `sftpd`: flags as sshd's; wires the listener or, with `--session`, one connection.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Parser;

use sftpd::config::ConnectionSpec;
use sftpd::connection::{self, Shared};
use sftpd::hostkey;
use sftpd::listener::{self, ListenerConfig};
use sftpd::setup::{self, Flags};
use sftpd::users::UsersFile;

/// An SFTP-only SSH server that reads sshd_config and logs like OpenSSH.
#[derive(Debug, Parser)]
#[command(name = "sftpd", version, disable_help_flag = true)]
struct Cli {
    /// Do not detach (run in the foreground).
    #[arg(short = 'D')]
    foreground: bool,
    /// Log to stderr instead of syslog.
    #[arg(short = 'e')]
    log_stderr: bool,
    /// Append log lines to this file instead of syslog.
    #[arg(short = 'E', value_name = "log_file")]
    log_file: Option<PathBuf>,
    /// Configuration file.
    #[arg(short = 'f', value_name = "config_file", default_value = setup::DEFAULT_CONFIG)]
    config_file: PathBuf,
    /// Host key file (repeatable; replaces HostKey).
    #[arg(short = 'h', value_name = "host_key_file")]
    host_keys: Vec<String>,
    /// Option as in the configuration file, e.g. `-o LogLevel=VERBOSE` (repeatable).
    #[arg(short = 'o', value_name = "option")]
    options: Vec<String>,
    /// Port to listen on (repeatable; replaces Port).
    #[arg(short = 'p', value_name = "port")]
    ports: Vec<u16>,
    /// Check the configuration and host keys, then exit.
    #[arg(short = 't')]
    test: bool,
    /// Print the effective configuration, then exit.
    #[arg(short = 'T')]
    dump: bool,
    /// With -T: evaluate Match for `user=NAME,addr=ADDR,lport=PORT`.
    #[arg(short = 'C', value_name = "connection_spec")]
    conditions: Option<String>,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Internal: serve the connection on fd 0, report on fd 1.
    #[arg(long = "session", hide = true)]
    session: bool,
}

impl Cli {
    fn flags(&self) -> Flags {
        let mut overrides = self.options.clone();
        for p in &self.ports {
            overrides.push(format!("Port {p}"));
        }
        Flags {
            config_file: self.config_file.clone(),
            overrides,
            host_keys: self.host_keys.clone(),
            foreground: self.foreground,
            log_stderr: self.log_stderr,
            log_file: self.log_file.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = if cli.session {
        session(&cli)
    } else {
        daemon(&cli)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sftpd: {e:#}");
            ExitCode::from(255)
        }
    }
}

fn parse_conditions(spec: &str) -> Result<(String, std::net::IpAddr, u16)> {
    let (mut user, mut addr, mut lport) = (String::new(), None, 22u16);
    for kv in spec.split(',') {
        match kv.split_once('=') {
            Some(("user", v)) => user = v.to_owned(),
            Some(("addr", v)) => addr = Some(v.parse().context("-C addr")?),
            Some(("lport", v)) => lport = v.parse().context("-C lport")?,
            Some(("host" | "laddr" | "rdomain", _)) => {}
            _ => anyhow::bail!("Invalid test mode specification {kv}"),
        }
    }
    let addr = addr.context("-C needs addr=")?;
    Ok((user, addr, lport))
}

fn daemon(cli: &Cli) -> Result<ExitCode> {
    let flags = cli.flags();
    let config = setup::load_config(&flags)?;
    let global = config.global();
    if cli.dump {
        let text = match &cli.conditions {
            Some(spec) => {
                let (user, address, local_port) = parse_conditions(spec)?;
                let groups = sftpd::users::system_account(&user)
                    .ok()
                    .flatten()
                    .map(|a| a.groups)
                    .unwrap_or_default();
                let conn = ConnectionSpec {
                    user: &user,
                    groups: &groups,
                    address,
                    local_port,
                };
                config.dump(&config.effective(&conn), Some(&conn))
            }
            None => config.dump(&global, None),
        };
        use std::io::Write;
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    setup::access_policy(&config).map_err(anyhow::Error::msg)?;
    if let Some(path) = &global.users_file {
        UsersFile::load(std::path::Path::new(path))?;
    }
    if cli.test {
        // Like `sshd -t`: check, change nothing (a missing key is generated on start).
        let keys = hostkey::load_existing(&global.host_keys)?;
        if keys.is_empty() {
            eprintln!("sftpd: no host key yet; an ed25519 key will be generated on start");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = hostkey::load_or_generate(&global.host_keys)?;
    let log = setup::open_log(&flags, &global)?;
    if let Some(path) = &keys.generated {
        log.info(format_args!(
            "generated ed25519 host key {} ({})",
            path.display(),
            hostkey::fingerprint(&keys.keys[0])
        ));
    }
    let mut std_listeners = Vec::new();
    for ep in &global.listen {
        let addr = (ep.host.as_str(), ep.port);
        let l = std::net::TcpListener::bind(addr)
            .with_context(|| format!("Bind to port {} on {} failed", ep.port, ep.host))?;
        l.set_nonblocking(true)?;
        let port = l.local_addr().map_or(ep.port, |a| a.port());
        log.info(format_args!("Server listening on {} port {port}.", ep.host));
        std_listeners.push(l);
    }
    if !cli.foreground {
        // Keep the working directory: connections re-execute sftpd with these same
        // arguments, so relative -f/-h/-E paths must keep meaning the same files.
        nix::unistd::daemon(true, flags.log_stderr).context("daemon")?;
    }
    let pid_file = setup::pid_file(&config);
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("Couldn't create pid file \"{}\"", path.display()))?;
    }
    let mut session_command: Vec<OsString> = vec!["/proc/self/exe".into()];
    session_command.extend(std::env::args_os().skip(1));
    let cfg = ListenerConfig {
        max_startups: global.max_startups,
        penalties: global.per_source_penalties,
        penalty_exempt: global.per_source_penalty_exempt.clone(),
        session_command,
        log: log.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for l in std_listeners {
            listeners.push(tokio::net::TcpListener::from_std(l)?);
        }
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).ok();
            let mut int = signal(SignalKind::interrupt()).ok();
            let n = tokio::select! {
                _ = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => 15,
                _ = async { match int.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => 2,
            };
            log.info(format_args!("Received signal {n}; terminating."));
        };
        listener::serve(listeners, cfg, shutdown).await;
        Ok::<_, std::io::Error>(())
    })?;
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

fn session(cli: &Cli) -> Result<ExitCode> {
    // SAFETY: the listener started this process with the accepted socket as fd 0 and the
    // report pipe as fd 1; nothing else in this process owns them.
    let (socket, status) = unsafe { (OwnedFd::from_raw_fd(0), OwnedFd::from_raw_fd(1)) };
    let flags = cli.flags();
    let config = setup::load_config(&flags)?;
    let global = config.global();
    let log = setup::open_log(&flags, &global)?;
    let keys = hostkey::load_or_generate(&global.host_keys)?;
    let users_file = match &global.users_file {
        Some(p) => Some(UsersFile::load(std::path::Path::new(p))?),
        None => None,
    };
    let root_login = setup::access_policy(&config).map_err(anyhow::Error::msg)?;
    let tcp = std::net::TcpStream::from(socket);
    let peer = tcp.peer_addr()?;
    let local = tcp.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        log,
        users_file,
        users_file_path: global.users_file.clone(),
        peer,
        local,
        privileged: nix::unistd::geteuid().is_root(),
        root_login,
        status: Mutex::new(Some(std::fs::File::from(status))),
        sessions: Mutex::new(Vec::new()),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(connection::run(
        Arc::clone(&shared),
        OwnedFd::from(tcp),
        keys.keys,
    ));
    // Dropping the runtime drops the writer tasks, so an executor blocked on a full reply
    // queue returns; then each executor writes its last lines ("session closed …").
    drop(rt);
    shared.join_sessions();
    if code != connection::report::AUTHENTICATED {
        shared.finish_status(code);
    }
    Ok(ExitCode::SUCCESS)
}
