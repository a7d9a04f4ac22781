//! `bundle-tool`: flags in, a library call, a report out. Exit 0 = ok, 1 = invalid bundle,
//! 2 = usage or I/O error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use bundle_tool::check::{InspectOptions, Report, inspect};
use bundle_tool::manifest::{self, ManifestError};
use bundle_tool::report::{Finding, Severity, printable};
use bundle_tool::source::Limits;
use bundle_tool::stage::{StageError, StageOptions, stage};
use bundle_tool::synth::{SynthOptions, synth};
use bundle_tool::version::ApVersion;
use bundle_tool::{diff, models};
use clap::{Args, Parser, Subcommand};

/// Unpack, validate, fingerprint and stage Cisco AP image bundles.
#[derive(Debug, Parser)]
#[command(
    name = "bundle-tool",
    version,
    about,
    after_help = "Exit status: 0 ok, 1 invalid bundle (or, for verify, a difference; for which, no answer), 2 usage or I/O error."
)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads for reading and hashing (default: one per CPU).
    #[arg(long, global = true, default_value_t = 0, hide_default_value = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a bundle (zip or folder): one line per finding, then a summary.
    Validate {
        /// The bundle: a .zip or an unpacked folder.
        bundle: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Validate, extract into ROOT/.bundle-tool-staging-*, and rename into place in one step.
    Stage {
        /// The bundle: a .zip or an unpacked folder.
        bundle: PathBuf,
        /// The served folder (e.g. the TFTP root).
        root: PathBuf,
        /// Name under ROOT, e.g. EWC/17_9_4a (default: the version from version.info).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing folder of that name (atomically).
        #[arg(long)]
        force: bool,
        /// Point the `current` link next to the staged folder at it.
        #[arg(long)]
        current: bool,
        /// Skip fsync (faster; only for throwaway folders: a crash may leave empty files).
        #[arg(long)]
        no_fsync: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Write manifest.json, SHA256SUMS and MD5SUMS (size, SHA-256, MD5 of every file) into DIR.
    Manifest {
        /// An unpacked bundle folder.
        dir: PathBuf,
    },
    /// Compare DIR with its manifest.json: every file that differs, is missing or is extra.
    Verify {
        /// A folder with a manifest.json.
        dir: PathBuf,
    },
    /// Families added, removed and changed, and the version change, between two bundles.
    Diff {
        /// The old bundle (zip or folder).
        a: PathBuf,
        /// The new bundle (zip or folder).
        b: PathBuf,
    },
    /// The image family an AP model needs (e.g. C9105AXI-E -> ap1g8).
    Which {
        /// The AP model, as printed on the AP or by `show ap summary`.
        model: String,
        /// Also say whether this bundle (zip or folder) has that family.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Write a synthetic bundle with the real layout (NOT a Cisco image) for tests and labs.
    Synth {
        /// AP image version, four numbers.
        #[arg(long)]
        version: ApVersion,
        /// Output zip.
        #[arg(long)]
        out: PathBuf,
        /// AP image families (comma-separated; default: the seven of the Cisco guide).
        #[arg(long, value_delimiter = ',')]
        families: Vec<String>,
        /// Size factor against the real sizes (1 = about 745 MB).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// controller_version.info content (default: derived from --version).
        #[arg(long)]
        controller_version: Option<String>,
        /// Leave out the 300 MB controller image.
        #[arg(long)]
        no_controller_image: bool,
    },
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Most entries in the archive.
    #[arg(long, default_value_t = Limits::default().max_entries)]
    max_entries: usize,
    /// Most bytes in all entries together.
    #[arg(long, default_value_t = Limits::default().max_total)]
    max_total: u64,
    /// Most bytes in one entry.
    #[arg(long, default_value_t = Limits::default().max_entry)]
    max_entry: u64,
    /// Largest expansion (size / compressed size) of an entry over 1 MiB.
    #[arg(long, default_value_t = Limits::default().max_ratio)]
    max_ratio: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_entries: self.max_entries,
            max_total: self.max_total,
            max_entry: self.max_entry,
            max_ratio: self.max_ratio,
        }
    }
}

/// Exit statuses.
const OK: u8 = 0;
const INVALID: u8 = 1;
const TROUBLE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&cli, &format!("{e:#}"), TROUBLE),
    }
}

/// Reports an error on stderr (and as `{"error": …}` on stdout with `--json`) and returns
/// the exit status.
fn fail(cli: &Cli, message: &str, code: u8) -> ExitCode {
    eprintln!("bundle-tool: {message}");
    if cli.json {
        let _ = print_json(&serde_json::json!({ "ok": false, "error": message, "exit": code }));
    }
    ExitCode::from(code)
}

/// Stops long operations on SIGINT/SIGTERM/SIGHUP so they can clean up.
fn cancel_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // A second signal ends the process at once (the first asked for a clean stop).
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("cannot install a signal handler")?;
    }
    Ok(flag)
}

/// A byte progress bar on a terminal; nothing otherwise.
fn progress(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn out() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut o = out();
    serde_json::to_writer_pretty(&mut o, value)?;
    writeln!(o)?;
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Validate { bundle, limits } => {
            let cancel = cancel_on_signals()?;
            let report = read_bundle(cli, bundle, limits.limits(), false, &cancel)?;
            if cli.json {
                print_json(&report)?;
            } else {
                print_report(&report)?;
            }
            Ok(if report.ok { OK } else { INVALID })
        }
        Command::Stage {
            bundle,
            root,
            name,
            force,
            current,
            no_fsync,
            limits,
        } => {
            let cancel = cancel_on_signals()?;
            let bar = progress("staging");
            let result = stage(
                bundle,
                root,
                &StageOptions {
                    name: name.clone(),
                    force: *force,
                    current: *current,
                    fsync: !no_fsync,
                    limits: limits.limits(),
                    cancel: &cancel,
                    progress: &bar,
                    threads: cli.threads,
                },
            );
            bar.finish_and_clear();
            match result {
                Ok(staged) => {
                    if cli.json {
                        print_json(&serde_json::json!({
                            "staged": staged.path,
                            "replaced": staged.replaced,
                            "current": staged.current,
                            "cleaned": staged.cleaned,
                            "report": staged.report,
                        }))?;
                    } else {
                        let mut o = out();
                        for f in &staged.report.findings {
                            writeln!(o, "{f}")?;
                        }
                        for c in &staged.cleaned {
                            writeln!(o, "removed {} (left by an interrupted run)", c.display())?;
                        }
                        writeln!(
                            o,
                            "staged {} ({}, {} files, {}) into {}{}",
                            staged.report.bundle,
                            staged.report.version.as_deref().unwrap_or("?"),
                            staged.report.files.len(),
                            human_bytes(staged.report.total_bytes),
                            staged.path.display(),
                            if staged.replaced {
                                ", replacing the old one"
                            } else {
                                ""
                            }
                        )?;
                        if let Some(link) = &staged.current {
                            writeln!(o, "{} -> {}", link.display(), staged.path.display())?;
                        }
                    }
                    Ok(OK)
                }
                Err(StageError::Invalid(report)) => {
                    if cli.json {
                        print_json(&report)?;
                    } else {
                        print_report(&report)?;
                        writeln!(out(), "not staged: {} unchanged", root.display())?;
                    }
                    Ok(INVALID)
                }
                Err(e @ StageError::AfterCommit { .. }) => {
                    fail(cli, &e.to_string(), TROUBLE);
                    Ok(TROUBLE)
                }
                Err(e) => {
                    // Exists, CurrentNotLink, BadName, Busy, I/O, a signal: usage or I/O (2).
                    fail(cli, &format!("{e}; {} unchanged", root.display()), TROUBLE);
                    Ok(TROUBLE)
                }
            }
        }
        Command::Manifest { dir } => {
            let cancel = cancel_on_signals()?;
            let bar = progress("hashing");
            let (m, findings) = manifest::fingerprint(dir, &cancel, &bar, cli.threads)?;
            bar.finish_and_clear();
            let refused = findings.iter().any(|f| f.severity == Severity::Error);
            if !refused {
                m.write(dir)?;
            }
            if cli.json {
                print_json(
                    &serde_json::json!({ "dir": dir, "written": !refused, "manifest": m, "findings": findings }),
                )?;
            } else {
                print_findings(&findings)?;
                let mut o = out();
                if refused {
                    writeln!(
                        o,
                        "no manifest written: {} files cannot be fingerprinted safely",
                        findings.len()
                    )?;
                } else {
                    for f in &m.files {
                        writeln!(o, "{}  {}  {:>12}  {}", f.sha256, f.md5, f.size, f.name)?;
                    }
                    writeln!(
                        o,
                        "wrote {}, SHA256SUMS and MD5SUMS in {}",
                        manifest::MANIFEST,
                        dir.display()
                    )?;
                }
            }
            Ok(if refused { INVALID } else { OK })
        }
        Command::Verify { dir } => {
            let cancel = cancel_on_signals()?;
            let bar = progress("verifying");
            let v = manifest::verify(dir, &cancel, &bar, cli.threads)?;
            bar.finish_and_clear();
            let v = match v {
                Ok(v) => v,
                Err(ManifestError::Io(e)) => return Err(e.into()),
                Err(e @ ManifestError::Invalid { .. }) => {
                    eprintln!("bundle-tool: {e}");
                    return Ok(INVALID);
                }
            };
            if cli.json {
                print_json(&v)?;
            } else {
                print_findings(&v.findings)?;
                let mut o = out();
                for d in &v.differs {
                    writeln!(
                        o,
                        "differs: {}: {} is {}, manifest says {}",
                        d.name, d.field, d.found, d.expected
                    )?;
                }
                for m in &v.missing {
                    writeln!(o, "missing: {m}")?;
                }
                for x in &v.extra {
                    writeln!(o, "extra: {x}")?;
                }
                writeln!(
                    o,
                    "{}: {} files checked, {} differ, {} missing, {} extra",
                    if v.ok { "ok" } else { "FAILED" },
                    v.checked,
                    v.differs
                        .iter()
                        .map(|d| &d.name)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len(),
                    v.missing.len(),
                    v.extra.len()
                )?;
            }
            Ok(if v.ok { OK } else { INVALID })
        }
        Command::Diff { a, b } => {
            let cancel = cancel_on_signals()?;
            let hashed = |p: &Path| read_bundle(cli, p, Limits::default(), true, &cancel);
            let (ra, rb) = (hashed(a)?, hashed(b)?);
            let d = diff::diff(&ra, &rb);
            let invalid = !ra.ok || !rb.ok;
            if cli.json {
                print_json(&serde_json::json!({ "diff": d, "a_ok": ra.ok, "b_ok": rb.ok }))?;
            } else {
                print_diff(&d, &ra, &rb)?;
            }
            Ok(if invalid { INVALID } else { OK })
        }
        Command::Which { model, bundle } => which(cli, model, bundle.as_deref()),
        Command::Synth {
            version,
            out: path,
            families,
            scale,
            controller_version,
            no_controller_image,
        } => {
            if !(scale.is_finite() && *scale > 0.0 && *scale <= 16.0) {
                anyhow::bail!("--scale must be in (0, 16], got {scale}");
            }
            let mut opts = SynthOptions::new(*version, *scale);
            if !families.is_empty() {
                for f in families {
                    if !models::is_image_family_name(f) {
                        anyhow::bail!(
                            "--families: {f:?} is not an AP image family name (like ap1g8)"
                        );
                    }
                }
                opts.families.clone_from(families);
            }
            if let Some(cv) = controller_version {
                opts.controller_version.clone_from(cv);
            }
            opts.controller_image = !no_controller_image;
            let written =
                synth(path, &opts).with_context(|| format!("cannot write {}", path.display()))?;
            let total: u64 = written.iter().map(|(_, s)| s).sum();
            if cli.json {
                print_json(&serde_json::json!({
                    "out": path,
                    "version": version,
                    "synthetic": true,
                    "files": written.iter().map(|(n, s)| serde_json::json!({"name": n, "size": s})).collect::<Vec<_>>(),
                    "total_bytes": total,
                }))?;
            } else {
                writeln!(
                    out(),
                    "wrote {} (synthetic, NOT a Cisco image): version {}, {} files, {}",
                    path.display(),
                    version,
                    written.len(),
                    human_bytes(total)
                )?;
            }
            Ok(OK)
        }
    }
}

/// Reads and checks a bundle without extracting it, with a progress bar on a terminal.
fn read_bundle(
    cli: &Cli,
    path: &Path,
    limits: Limits,
    hash: bool,
    cancel: &AtomicBool,
) -> anyhow::Result<Report> {
    let bar = progress(if hash { "hashing" } else { "checking" });
    let report = inspect(
        path,
        &InspectOptions {
            limits,
            hash,
            extract: None,
            fsync: false,
            cancel,
            progress: &bar,
            threads: cli.threads,
        },
    )?;
    bar.finish_and_clear();
    Ok(report)
}

fn which(cli: &Cli, model: &str, bundle: Option<&Path>) -> anyhow::Result<u8> {
    let m = match models::which(model) {
        Ok(m) => m,
        Err(e) => {
            if cli.json {
                print_json(
                    &serde_json::json!({ "model": model, "family": null, "error": e.to_string() }),
                )?;
            } else {
                writeln!(out(), "{model}: {e}")?;
            }
            return Ok(INVALID);
        }
    };
    let present = match bundle {
        Some(b) => {
            let opened = bundle_tool::source::Source::open(b, &Limits::default())?;
            let errors: Vec<&Finding> = opened
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            if !errors.is_empty() {
                // A damaged listing cannot say what the bundle has.
                if cli.json {
                    print_json(
                        &serde_json::json!({ "model": model, "family": m.row.family, "bundle": b, "present": null, "findings": errors }),
                    )?;
                } else {
                    print_findings(&opened.findings)?;
                    writeln!(
                        out(),
                        "{}\n{}: cannot tell (invalid bundle)",
                        m.row.family,
                        b.display()
                    )?;
                }
                return Ok(INVALID);
            }
            Some(opened.entries.iter().any(|e| e.name == m.row.family))
        }
        None => None,
    };
    if cli.json {
        print_json(&serde_json::json!({
            "model": model,
            "family": m.row.family,
            "series": m.row.series,
            "match": format!("{:?}", m.how).to_lowercase(),
            "status": m.row.status,
            "source": m.row.source,
            "bundle": bundle,
            "present": present,
        }))?;
    } else {
        let mut o = out();
        writeln!(o, "{}", m.row.family)?;
        if let (Some(b), Some(p)) = (bundle, present) {
            writeln!(
                o,
                "{} {} {}",
                b.display(),
                if p { "has" } else { "does NOT have" },
                m.row.family
            )?;
        }
    }
    Ok(if present == Some(false) { INVALID } else { OK })
}

fn print_findings(findings: &[Finding]) -> anyhow::Result<()> {
    let mut o = out();
    for f in findings {
        writeln!(o, "{f}")?;
    }
    Ok(())
}

fn print_report(r: &Report) -> anyhow::Result<()> {
    print_findings(&r.findings)?;
    let mut o = out();
    writeln!(
        o,
        "{}: {}, AP version {}, controller version {}",
        r.bundle,
        r.kind,
        r.version.as_deref().unwrap_or("?"),
        r.controller_version.as_deref().unwrap_or("?")
    )?;
    for f in &r.files {
        let extra = match (&f.info_family, &f.info_version) {
            (Some(fam), Some(v)) => format!("  info: {} {}", printable(fam), printable(v)),
            (Some(fam), None) => format!("  info: {}", printable(fam)),
            _ => String::new(),
        };
        writeln!(
            o,
            "  {:<26} {:>12}  {}{}",
            f.name,
            f.size,
            role_name(f.role),
            extra
        )?;
    }
    writeln!(
        o,
        "{}: {} AP image families ({}), {} files, {}; {} error(s), {} warning(s)",
        if r.ok { "valid" } else { "INVALID" },
        r.families.len(),
        r.families.join(" "),
        r.files.len(),
        human_bytes(r.total_bytes),
        r.errors,
        r.warnings
    )?;
    Ok(())
}

fn role_name(role: bundle_tool::check::Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_diff(d: &diff::Diff, a: &Report, b: &Report) -> anyhow::Result<()> {
    let mut o = out();
    for (label, r) in [("A", a), ("B", b)] {
        if !r.ok {
            writeln!(
                o,
                "note: {label} ({}) is not a valid bundle ({} errors; run validate)",
                r.bundle, r.errors
            )?;
        }
    }
    for (label, pair) in [
        ("version", &d.version),
        ("controller version", &d.controller_version),
    ] {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "?".to_owned());
        let same = if pair.changed { "" } else { " (unchanged)" };
        writeln!(o, "{label}: {} -> {}{same}", v(&pair.a), v(&pair.b))?;
    }
    for (what, c) in [("family", &d.families), ("file", &d.other_files)] {
        for n in &c.added {
            writeln!(o, "+ {what} {n}")?;
        }
        for n in &c.removed {
            writeln!(o, "- {what} {n}")?;
        }
        for ch in &c.changed {
            writeln!(
                o,
                "~ {what} {} ({} -> {} bytes)",
                ch.name, ch.size_a, ch.size_b
            )?;
        }
    }
    writeln!(
        o,
        "{}: families {} added, {} removed, {} changed, {} unchanged",
        if d.identical {
            "identical"
        } else {
            "different"
        },
        d.families.added.len(),
        d.families.removed.len(),
        d.families.changed.len(),
        d.families.unchanged.len()
    )?;
    Ok(())
}

fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{n} bytes")
    }
}
