//! `ap-sim`: N simulated access points against a controller, over UDP on this machine. Each AP
//! joins, compares versions, downloads and checks its family's image, reboots onto it and
//! rejoins, printing the AP-side lines real APs log; faults make the link drop, duplicate and
//! stall, and APs die mid-transfer and reboot. Flags in, `controller::fleet::run`, a summary
//! out.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use controller::capwap::RetransmitConfig;
use controller::fleet::{
    self, DEFAULT_BACKUP, DEFAULT_MODELS, DEFAULT_PRIMARY, Faults, FleetConfig, FleetReport,
    FleetStatus, MAX_APS, Stall, Until,
};
use tokio_util::sync::CancellationToken;

/// Simulated Cisco APs that join a CAPWAP controller and download their images from it.
#[derive(Debug, Parser)]
// No `version` here: `--version` is the APs' image version, as the issue spells it.
#[command(
    name = "ap-sim",
    after_help = "Each AP line is printed as `AP-0003: <line>` (to stderr with --json). \
                  Exit status: 0 every AP runs the controller's version, 1 some do not \
                  (timeout, failures), 2 usage or local error, 130 interrupted."
)]
struct Cli {
    /// The controller's CAPWAP control address, e.g. 127.0.0.1:5246 (an IPv6 one in brackets).
    #[arg(long, value_name = "ADDR:PORT")]
    controller: SocketAddr,
    /// Number of APs, named AP-0001, AP-0002, …
    #[arg(long, value_name = "N", value_parser = parse_count)]
    count: usize,
    /// AP models, cycled over the APs (default: one per family of the guide's bundle:
    /// AIR-AP1832I-B-K9, AIR-AP1815I-B-K9, C9117AXI-B, C9130AXI-B, C9120AXI-B, C9105AXI-E,
    /// AIR-AP2802I-B-K9).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    models: Option<Vec<String>>,
    /// Primary image version the APs start on.
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_PRIMARY)]
    version: String,
    /// Backup image version the APs start with ("" for none).
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_BACKUP)]
    backup: String,
    /// AP names are PREFIX-0001, …
    #[arg(long, value_name = "PREFIX", default_value = "AP")]
    name_prefix: String,
    /// Keep each received image, as DIR/AP-0001/ap1g8 and so on (default: size and MD5 only).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Probability of dropping each datagram, both ways (0 to below 1).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    loss: f64,
    /// Probability of duplicating each datagram, both ways (0 to below 1).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    dup: f64,
    /// Each AP goes silent (drops everything, both ways) once it has received N image bytes…
    #[arg(long, value_name = "N", requires = "stall_secs")]
    stall_after_bytes: Option<u64>,
    /// …for S seconds (fractions allowed).
    #[arg(long, value_name = "S", requires = "stall_after_bytes", value_parser = parse_seconds)]
    stall_secs: Option<Duration>,
    /// Each AP dies after receiving N image bytes, then reboots and rejoins from a new port.
    #[arg(long, value_name = "N")]
    crash_after_bytes: Option<u64>,
    /// Seed of the fault decisions (the same seed decides the same way).
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// RetransmitInterval of the APs' requests, in milliseconds (doubling).
    #[arg(long, value_name = "MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    retransmit_ms: u64,
    /// MaxRetransmit of the APs' requests.
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_retransmit: u32,
    /// Wait before rejoining after a failure, in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    retry_secs: u64,
    /// "Reboot" time after a reset or a crash, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    reset_ms: u64,
    /// Echo Request interval in seconds (0: none).
    #[arg(long, value_name = "S", default_value_t = 30)]
    echo_secs: u64,
    /// ImageDataStartTimer in seconds: give up a download that does not start or stalls.
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    image_timeout_secs: u64,
    /// Stop after S seconds (exit 1 unless every AP verified by then).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Keep the APs running once they are done, until --timeout or a signal.
    #[arg(long)]
    stay: bool,
    /// Do not print the AP lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the report as one JSON document (AP lines go to stderr).
    #[arg(long)]
    json: bool,
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_APS).contains(&n) => Ok(n),
        _ => Err(format!("the AP count is 1 to {MAX_APS}")),
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..1.0).contains(&p) => Ok(p),
        _ => Err("a probability is at least 0 and below 1 (e.g. 0.05)".to_owned()),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .ok_or_else(|| "a duration is a number of seconds, 0 or more (e.g. 2.5)".to_owned())
}

impl Cli {
    fn fleet_config(&self) -> FleetConfig {
        let mut cfg = FleetConfig::new(self.controller, self.count);
        cfg.models = match &self.models {
            Some(m) => m.iter().map(|s| s.trim().to_owned()).collect(),
            None => DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect(),
        };
        cfg.primary.clone_from(&self.version);
        cfg.backup.clone_from(&self.backup);
        cfg.name_prefix.clone_from(&self.name_prefix);
        cfg.store.clone_from(&self.store);
        cfg.faults = Faults {
            loss: self.loss,
            dup: self.dup,
            stall: self
                .stall_after_bytes
                .zip(self.stall_secs)
                .map(|(after_bytes, duration)| Stall {
                    after_bytes,
                    duration,
                }),
            crash_after_bytes: self.crash_after_bytes,
            seed: self.seed,
        };
        cfg.retransmit = RetransmitConfig {
            interval: Duration::from_millis(self.retransmit_ms),
            max_retransmit: self.max_retransmit,
            max_interval: None,
        };
        cfg.retry_interval = Duration::from_secs(self.retry_secs);
        cfg.reset_delay = Duration::from_millis(self.reset_ms);
        cfg.echo_interval = Duration::from_secs(self.echo_secs);
        cfg.image_data_start_timeout = Duration::from_secs(self.image_timeout_secs);
        cfg.until = if self.stay {
            Until::Forever
        } else {
            Until::Current
        };
        cfg
    }
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The fleet finished by itself (every AP done).
    Finished,
    /// `--timeout` passed.
    TimedOut,
    /// SIGINT or SIGTERM.
    Interrupted,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Finished => "finished",
            End::TimedOut => "timeout",
            End::Interrupted => "interrupted",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Our errors carry their causes in their own message: no `{e:#}` chain.
            eprintln!("ap-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cfg = cli.fleet_config();
    // Checks the flags (models, names) before anything starts.
    let status = Arc::new(FleetStatus::new(&cfg)?);
    raise_open_file_limit(cfg.count);
    let (quiet, json) = (cli.quiet, cli.json);
    let timeout = cli.timeout.map(Duration::from_secs);
    let lines = move |ap: &str, line: &str| {
        if quiet {
            return;
        }
        // Stamped like the AP's console: `AP-0003: [*07/12/2023 07:41:00.7960] …`.
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));
        let stamp = controller::events::ap_stamp(us);
        // A closed stdout (`| head`) must not stop the simulation.
        let _ = if json {
            writeln!(std::io::stderr().lock(), "{ap}: {stamp}{line}")
        } else {
            writeln!(std::io::stdout().lock(), "{ap}: {stamp}{line}")
        };
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (report, end) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Listening before the first AP starts: a signal from then on is ours.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let shutdown = CancellationToken::new();
        let work = fleet::run(cfg, status, lines, shutdown.clone());
        let mut work = std::pin::pin!(work);
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            report = &mut work => return anyhow::Ok((report?, End::Finished)),
            _ = int.recv() => End::Interrupted,
            _ = term.recv() => End::Interrupted,
            () = deadline => End::TimedOut,
        };
        shutdown.cancel();
        anyhow::Ok((work.await?, end))
    })?;
    print_report(&report, end, json)?;
    Ok(match end {
        End::Interrupted => {
            eprintln!("ap-sim: interrupted");
            ExitCode::from(130)
        }
        _ if report.all_verified => ExitCode::SUCCESS,
        _ => {
            eprintln!(
                "ap-sim: {}{} of {} APs run the controller's version",
                if end == End::TimedOut {
                    "timed out: "
                } else {
                    ""
                },
                report.totals.verified,
                report.totals.aps
            );
            ExitCode::from(1)
        }
    })
}

fn print_report(report: &FleetReport, end: End, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("ok".into(), report.all_verified.into());
            o.insert("end".into(), end.as_str().into());
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "{report}")?;
    }
    out.flush()?;
    Ok(())
}

/// Each AP holds a socket, and 1000 APs pass the usual soft limit of 1024 open files: raise
/// the soft limit towards the hard one when the fleet needs it. Failing is not an error (the
/// socket that cannot be opened will say so).
fn raise_open_file_limit(aps: usize) {
    let want = libc::rlim_t::try_from(aps.saturating_add(256)).unwrap_or(libc::rlim_t::MAX);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_make_the_fleet_config() {
        let cli = Cli::try_parse_from([
            "ap-sim",
            "--controller",
            "127.0.0.1:5246",
            "--count",
            "3",
            "--models",
            "C9105AXI-E, C9120AXI-B",
            "--loss",
            "0.05",
            "--dup",
            "0.01",
            "--crash-after-bytes",
            "70000",
            "--stall-after-bytes",
            "1000",
            "--stall-secs",
            "1.5",
            "--stay",
        ]);
        let Ok(cli) = cli else { panic!("{cli:?}") };
        let cfg = cli.fleet_config();
        assert_eq!(cfg.models, ["C9105AXI-E", "C9120AXI-B"]);
        assert_eq!(cfg.faults.loss, 0.05);
        assert_eq!(cfg.faults.dup, 0.01);
        assert_eq!(cfg.faults.crash_after_bytes, Some(70_000));
        assert_eq!(
            cfg.faults.stall,
            Some(Stall {
                after_bytes: 1000,
                duration: Duration::from_millis(1500)
            })
        );
        assert_eq!(cfg.until, Until::Forever);
        assert_eq!(cfg.primary, DEFAULT_PRIMARY);
        // No fault unless asked for.
        let plain =
            Cli::try_parse_from(["ap-sim", "--controller", "127.0.0.1:5246", "--count", "1"]);
        let Ok(plain) = plain else {
            panic!("{plain:?}")
        };
        let faults = plain.fleet_config().faults;
        assert_eq!(
            (
                faults.loss,
                faults.dup,
                faults.crash_after_bytes,
                faults.stall
            ),
            (0.0, 0.0, None, None)
        );
        for bad in [
            &["--loss", "1"][..],
            &["--dup=-0.1"],
            &["--dup", "1"],
            &["--crash-after-bytes", "x"],
            &["--count", "0"],
            &["--stall-secs", "2"],
            &["--retransmit-ms", "0"],
        ] {
            let mut args = vec!["ap-sim", "--controller", "127.0.0.1:5246"];
            if !bad.contains(&"--count") {
                args.extend(["--count", "1"]);
            }
            args.extend(bad);
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
