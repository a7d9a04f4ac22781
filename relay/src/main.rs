//! `relay`: fetch images as the controller would, to test a server before any AP joins.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use relay::bundle::{BundleError, BundleOptions};
use relay::sftp::{Credential, HostKeyCheck, SftpOptions};
use relay::tftp::TftpOptions;
use relay::{FetchOptions, Progress, Source};

/// Fetch AP images from TFTP and SFTP servers, as the controller does.
#[derive(Debug, Parser)]
#[command(
    name = "relay",
    version,
    after_help = "Exit status: 0 ok, 1 the fetch or check failed (the line says why), 2 usage or local error."
)]
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
        #[command(flatten)]
        conn: Connection,
        /// No progress bar.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Fetch a bundle folder (version.info and the images), verify it with bundle-tool's
    /// checks, and put it in place as DIR in one step.
    Bundle {
        /// The folder: tftp://host[:port]/path, sftp://user@host[:port]/path or file:///path.
        url: String,
        /// The folder to create (must not exist, unless --force).
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
        /// Only these families (each must be there), e.g. ap1g7,ap1g8.
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        families: Option<Vec<String>>,
        /// Replace DIR if it exists (atomically: readers see the old folder or the new one).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: Connection,
        /// No progress bar.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Pre-flight a bundle folder on a server: reachable, credentials, path, which families
    /// are there. Downloads no image.
    Check {
        /// The folder: tftp://host[:port]/path, sftp://user@host[:port]/path or file:///path.
        url: String,
        /// These families must be there (default: at least one of those the model map knows).
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        families: Option<Vec<String>>,
        #[command(flatten)]
        conn: Connection,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach the server (every subcommand).
#[derive(Debug, Args)]
struct Connection {
    /// TFTP block size to ask for (0: do not ask).
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    /// TFTP window size to ask for (1: lock-step).
    #[arg(long, default_value_t = 16)]
    windowsize: u16,
    /// Give up on a file after this many seconds (default: 300; for check, 10).
    #[arg(long, value_name = "S")]
    timeout: Option<u64>,
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
}

impl Connection {
    fn options(self, default_timeout: u64) -> Result<FetchOptions> {
        let deadline = Duration::from_secs(self.timeout.unwrap_or(default_timeout).max(1));
        let credential = match (self.identity, self.password_file) {
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
        let known = self.known_hosts.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".ssh/known_hosts")
        });
        let host_key = match (self.host_key_fingerprint, self.accept_new_host_key) {
            (Some(fp), _) => HostKeyCheck::Fingerprint(fp),
            (None, true) => HostKeyCheck::AcceptNew(known),
            (None, false) => HostKeyCheck::KnownHosts(known),
        };
        Ok(FetchOptions {
            tftp: TftpOptions {
                blksize: (self.blksize > 0).then_some(self.blksize),
                windowsize: (self.windowsize > 1).then_some(self.windowsize),
                deadline,
                ..TftpOptions::default()
            },
            sftp: credential.map(|credential| SftpOptions {
                credential,
                host_key,
                deadline,
                in_flight: 64,
            }),
        })
    }
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

/// A progress bar on stderr when it is a terminal and not `quiet`.
fn bar(quiet: bool) -> Option<indicatif::ProgressBar> {
    (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

fn show(bar: Option<&indicatif::ProgressBar>, p: Progress) {
    if let Some(b) = bar {
        if let Some(t) = p.total {
            b.set_length(t);
        }
        b.set_position(p.done);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Fetch {
            url,
            output,
            conn,
            quiet,
        } => {
            let source = Source::parse(&url)?;
            let opts = conn.options(300)?;
            let bar = bar(quiet);
            let mut on_progress = |p: Progress| show(bar.as_ref(), p);
            let result = runtime()?.block_on(relay::fetch_to_file(
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
        Command::Bundle {
            url,
            output,
            families,
            force,
            conn,
            quiet,
        } => {
            let folder = Source::parse_folder(&url)?;
            let opts = conn.options(300)?;
            let bar = bar(quiet);
            let mut on_progress = |name: &str, p: Progress| {
                if let Some(b) = &bar
                    && b.message() != name
                {
                    b.set_message(name.to_owned());
                }
                show(bar.as_ref(), p);
            };
            let bopts = BundleOptions { families, force };
            let result = runtime()?.block_on(relay::bundle::bundle(
                &folder,
                &output,
                &opts,
                &bopts,
                &mut on_progress,
            ));
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            match result {
                Ok(done) => {
                    if !quiet {
                        for (name, size) in &done.fetched {
                            eprintln!("{}: {size} bytes, verified", folder.join(name));
                        }
                        let how = if done.had_manifest {
                            "checked against the server's manifest.json"
                        } else {
                            "checked by their own tar and info members against version.info"
                        };
                        eprintln!(
                            "{}: version {}, {} ({how}); bundle-tool: {} warning(s)",
                            done.path.display(),
                            done.report.version.as_deref().unwrap_or("?"),
                            done.fetched
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            done.report.warnings,
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(BundleError::Invalid(report)) => {
                    for f in report.findings.iter() {
                        eprintln!(
                            "{}: {}: {}",
                            f.entry.as_deref().unwrap_or("bundle"),
                            f.code.as_str(),
                            f.message
                        );
                    }
                    eprintln!(
                        "relay: the fetched bundle is invalid ({} error(s)); {} was not created",
                        report.errors,
                        output.display()
                    );
                    Ok(ExitCode::from(1))
                }
                Err(
                    e
                    @ (BundleError::BadFamily(_) | BundleError::Stage(_) | BundleError::Io { .. }),
                ) => Err(e.into()),
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Check {
            url,
            families,
            conn,
            json,
        } => {
            let folder = Source::parse_folder(&url)?;
            if let Some(f) = &families
                && let Some(bad) = f
                    .iter()
                    .find(|n| !bundle_tool::models::is_image_family_name(n))
            {
                anyhow::bail!("{bad:?} is not an AP image family (like ap1g7 or ap3g3)");
            }
            let opts = conn.options(10)?;
            let report =
                runtime()?.block_on(relay::check::check(&folder, &opts, families.as_deref()));
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                writeln!(out, "{report}")?;
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
