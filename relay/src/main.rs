//! `relay`: fetch an image as the controller would, to test a server before any AP joins.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use relay::sftp::{Credential, HostKeyCheck, SftpOptions};
use relay::tftp::TftpOptions;
use relay::{FetchOptions, Progress, Source};

/// Fetch AP images from TFTP and SFTP servers, as the controller does.
#[derive(Debug, Parser)]
#[command(name = "relay", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch one image: exit 0 only when the file is complete.
    Fetch {
        /// tftp://host[:port]/path, sftp://user@host[:port]/path or file:///path.
        url: String,
        /// Where to write it (replaced atomically when complete).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// TFTP block size to ask for (0: do not ask).
        #[arg(long, default_value_t = 1468)]
        blksize: u16,
        /// TFTP window size to ask for (1: lock-step).
        #[arg(long, default_value_t = 16)]
        windowsize: u16,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// SFTP: log in with this private key.
        #[arg(long, value_name = "KEY")]
        identity: Option<PathBuf>,
        /// SFTP: log in with the password in this file (first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// SFTP: trust the host keys in this known_hosts file (default ~/.ssh/known_hosts).
        #[arg(long, value_name = "FILE")]
        known_hosts: Option<PathBuf>,
        /// SFTP: trust only a host key with this SHA256:… fingerprint.
        #[arg(long, value_name = "SHA256:…")]
        host_key_fingerprint: Option<String>,
        /// SFTP: trust an unknown host key and record it in the known_hosts file.
        #[arg(long)]
        accept_new_host_key: bool,
        /// No progress bar.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Fetch {
            url,
            output,
            blksize,
            windowsize,
            timeout,
            identity,
            password_file,
            known_hosts,
            host_key_fingerprint,
            accept_new_host_key,
            quiet,
        } => {
            let source = Source::parse(&url)?;
            let deadline = Duration::from_secs(timeout.max(1));
            let credential = match (identity, password_file) {
                (Some(_), Some(_)) => anyhow::bail!("give --identity or --password-file, not both"),
                (Some(k), None) => Some(Credential::Key(k)),
                (None, Some(f)) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?;
                    Some(Credential::Password(
                        text.lines().next().unwrap_or("").to_owned(),
                    ))
                }
                (None, None) => None,
            };
            let known = known_hosts.unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".ssh/known_hosts")
            });
            let host_key = match (host_key_fingerprint, accept_new_host_key) {
                (Some(fp), _) => HostKeyCheck::Fingerprint(fp),
                (None, true) => HostKeyCheck::AcceptNew(known),
                (None, false) => HostKeyCheck::KnownHosts(known),
            };
            let opts = FetchOptions {
                tftp: TftpOptions {
                    blksize: (blksize > 0).then_some(blksize),
                    windowsize: (windowsize > 1).then_some(windowsize),
                    deadline,
                    ..TftpOptions::default()
                },
                sftp: credential.map(|credential| SftpOptions {
                    credential,
                    host_key,
                    deadline,
                    in_flight: 64,
                }),
            };
            let bar = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            let mut on_progress = |p: Progress| {
                if let Some(b) = &bar {
                    if let Some(t) = p.total {
                        b.set_length(t);
                    }
                    b.set_position(p.done);
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(relay::fetch_to_file(
                &source,
                &output,
                &opts,
                &mut on_progress,
            ));
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            match result {
                Ok(bytes) => {
                    if !quiet {
                        eprintln!("{source}: {bytes} bytes -> {}", output.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
