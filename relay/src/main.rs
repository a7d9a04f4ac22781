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
use relay::{Expected, FetchOptions, Progress, Source};

/// Fetch AP images from TFTP and SFTP servers, as the controller does.
#[derive(Debug, Parser)]
#[command(
    name = "relay",
    version,
    after_help = "Exit status: 0 ok, 1 the fetch or check failed (the line says why), 2 usage or local error, 130 interrupted (temporaries removed)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch one image: exit 0 only when the file is complete and verified. A file named
    /// after an image family (ap1g8) must be a complete tar archive whose info members name
    /// that family (and --ap-version, when given).
    Fetch {
        /// tftp://host[:port]/path, sftp://user@host[:port]/path or file:///path.
        url: String,
        /// Where to write it (replaced atomically when complete and verified).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// The SHA-256 it must have (64 hex digits).
        #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
        sha256: Option<[u8; 32]>,
        /// The AP version (four numbers, as version.info says) an image's info must give.
        #[arg(long, value_name = "VERSION")]
        ap_version: Option<bundle_tool::version::ApVersion>,
        /// Do not check an image-named file as an AP image.
        #[arg(long)]
        no_image_check: bool,
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
    /// TFTP block size to ask for, 8 to 65464 (0: do not ask).
    #[arg(long, default_value_t = 1468, value_parser = parse_blksize)]
    blksize: u16,
    /// TFTP window size to ask for (1: lock-step).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
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

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    relay::verify::parse_sha256(&s.to_ascii_lowercase())
        .ok_or_else(|| "a SHA-256 is 64 hex digits".to_owned())
}

/// RFC 2348: 8 to 65464 octets; 0 means "do not ask".
fn parse_blksize(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n == 0 || (8..=65464).contains(&n) => Ok(n),
        _ => Err("a block size is 8 to 65464 (RFC 2348), or 0 not to ask".to_owned()),
    }
}

impl Connection {
    /// The fetch options; an `sftp://` source needs a password or key.
    fn options(self, source: &Source, default_timeout: u64) -> Result<FetchOptions> {
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
            (None, None) => {
                if matches!(source, Source::Sftp { .. }) {
                    anyhow::bail!("an sftp:// URL needs --password-file FILE or --identity KEY");
                }
                None
            }
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

/// Runs `work` to its end, or until SIGINT or SIGTERM: then `work` is dropped, which removes
/// its temporary file or staging folder, and `None` is returned.
fn run_until_signal<T>(work: impl Future<Output = T>) -> Result<Option<T>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            done = work => Ok(Some(done)),
            _ = tokio::signal::ctrl_c() => Ok(None),
            _ = term.recv() => Ok(None),
        }
    })
}

/// [`run_until_signal`] with a progress bar cleared at the end; `Err(status)` when a signal
/// interrupted the work.
fn with_bar<T>(
    bar: Option<&indicatif::ProgressBar>,
    work: impl Future<Output = T>,
) -> Result<Result<T, ExitCode>> {
    let result = run_until_signal(work)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(result.ok_or_else(interrupted))
}

/// Exit status after a signal, as shells report SIGINT.
fn interrupted() -> ExitCode {
    eprintln!("relay: interrupted; nothing was left behind");
    ExitCode::from(130)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Fetch {
            url,
            output,
            sha256,
            ap_version,
            no_image_check,
            conn,
            quiet,
        } => {
            let source = Source::parse(&url)?;
            let opts = conn.options(&source, 300)?;
            let family = source.file_name();
            let image = !no_image_check && bundle_tool::models::is_image_family_name(family);
            if ap_version.is_some() && !image {
                anyhow::bail!("--ap-version checks an AP image; {family:?} is not named like one");
            }
            let expected = Expected {
                sha256,
                image: image.then(|| relay::verify::ImageCheck {
                    family: family.to_owned(),
                    version: ap_version,
                }),
                ..Expected::default()
            };
            let bar = bar(quiet);
            let mut on_progress = |p: Progress| show(bar.as_ref(), p);
            let work = relay::fetch_verified(&source, &output, &opts, expected, &mut on_progress);
            let result = match with_bar(bar.as_ref(), work)? {
                Ok(r) => r,
                Err(status) => return Ok(status),
            };
            match result {
                Ok(done) => {
                    if !quiet {
                        eprintln!(
                            "{source}: {} bytes, SHA-256 {}{} -> {}",
                            done.size,
                            relay::verify::hex(&done.sha256),
                            if image { ", a complete image" } else { "" },
                            output.display()
                        );
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
            let opts = conn.options(&folder, 300)?;
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
            let work = relay::bundle::bundle(&folder, &output, &opts, &bopts, &mut on_progress);
            let result = match with_bar(bar.as_ref(), work)? {
                Ok(r) => r,
                Err(status) => return Ok(status),
            };
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
            let opts = conn.options(&folder, 10)?;
            let work = relay::check::check(&folder, &opts, families.as_deref());
            let report = match with_bar(None, work)? {
                Ok(r) => r,
                Err(status) => return Ok(status),
            };
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
