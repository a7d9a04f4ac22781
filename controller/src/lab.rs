//! `controller lab`: the source document's whole story on one machine, with nothing to set
//! up.
//!
//! 1. A synthetic bundle (`bundle_tool::synth`: the real bundle's layout and file names, its
//!    sizes times `scale`) is staged into a temporary root with `bundle_tool::stage`, under
//!    the folder name the document uses (`EWC_17_9_4a`).
//! 2. Our tftpd, or our sftpd with a one-off account and host key, serves that root on
//!    loopback, in this process ([`crate::testbed`]).
//! 3. The controller ([`crate::daemon`]) starts with a profile pointing at it, written as a
//!    config file and read the way `controller serve` reads one.
//! 4. Simulated APs ([`crate::fleet`]), one model of each family in turn, join over CAPWAP
//!    with datagram loss, download, verify and reset onto the new version.
//! 5. Live progress (a bar per family and the `show ap image` counters) until every AP runs
//!    the network's version, then a summary.
//!
//! Timers are the RFC's divided for loopback (retransmission after 50 ms instead of 3 s),
//! so a lost datagram costs milliseconds, not seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bundle_tool::version::ApVersion;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use relay::store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::{self, Options};
use crate::events::{Event, ap_stamp, stamp};
use crate::fleet::{self, Faults, FleetConfig, FleetReport, FleetStatus, Until};
use crate::images::EventSink;
use crate::server::Status;
use crate::show::{ApImageReport, DownloadState};
use crate::testbed::{
    ImageServer, LAB_FOLDER, LAB_VERSION, lab_config, lab_retransmit, stage_release,
};

/// How the controller reaches the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMode {
    /// Our tftpd.
    Tftp,
    /// Our sftpd.
    Sftp,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Simulated APs.
    pub aps: usize,
    /// Image server.
    pub mode: LabMode,
    /// Datagram loss each way on every AP's CAPWAP link.
    pub loss: f64,
    /// Image sizes against the real bundle's.
    pub scale: f64,
    /// CAPWAP control port (0: any).
    pub capwap_port: u16,
    /// Image bytes per Image Data message.
    pub block_size: u16,
    /// Progress bars on the terminal.
    pub live: bool,
    /// Give up (exit non-zero, with the report) after this long.
    pub timeout: Duration,
}

/// Why the lab could not run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Setting up (files, servers, sockets).
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The generated profile was refused (a bug).
    #[error("the lab's profile: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The simulated APs could not run.
    #[error("simulated APs: {0}")]
    Fleet(#[from] fleet::FleetError),
    /// The controller stopped.
    #[error("controller: {0}")]
    Daemon(#[from] daemon::DaemonError),
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Setup { what, source }
}

/// How it went.
#[derive(Debug)]
pub struct LabReport {
    /// The APs' side.
    pub fleet: FleetReport,
    /// `show ap image` at the end.
    pub show: ApImageReport,
    /// Image fetches the controller made from the server.
    pub fetches: u64,
    /// Image families served.
    pub families: usize,
}

impl LabReport {
    /// Every AP verified its image and runs the network's version.
    pub fn all_verified(&self) -> bool {
        self.fleet.all_verified
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Runs the lab until every AP verified its image (or `stop`).
pub async fn run(opts: LabOptions, stop: CancellationToken) -> Result<LabReport, LabError> {
    let started = Instant::now();
    let live = opts.live && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if live {
        ProgressDrawTarget::stderr_with_hz(8)
    } else {
        ProgressDrawTarget::hidden()
    });
    let say = {
        let multi = multi.clone();
        move |line: &str| {
            if multi.is_hidden() {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            } else {
                let _ = multi.println(line);
            }
        }
    };
    // The port first: a busy one fails before any work is done.
    let capwap = tokio::net::UdpSocket::bind(("127.0.0.1", opts.capwap_port))
        .await
        .map_err(setup(format!(
            "CAPWAP control port 127.0.0.1:{} (another controller? try --capwap-port 0)",
            opts.capwap_port
        )))?;
    let version: ApVersion = LAB_VERSION
        .parse()
        .map_err(|_| setup("version")(std::io::Error::other(LAB_VERSION)))?;
    let root = tempfile::Builder::new()
        .prefix("airlift-lab-")
        .tempdir()
        .map_err(setup("temporary folder"))?;
    let served = root.path().join("srv");
    std::fs::create_dir_all(&served).map_err(setup("temporary folder"))?;
    let sizes = stage_release(&served, LAB_FOLDER, version, opts.scale, false)
        .map_err(setup("synthesizing and staging the bundle"))?;
    let total: u64 = sizes.iter().map(|(_, s)| s).sum();
    say(&format!(
        "lab: staged a synthetic {LAB_VERSION} bundle ({} AP images, {:.1} MB) in {}",
        sizes.len(),
        total as f64 / 1e6,
        served.join(LAB_FOLDER).display()
    ));
    let (server, folder) = match opts.mode {
        LabMode::Tftp => (
            ImageServer::tftp(&served, 0).map_err(setup("starting tftpd"))?,
            LAB_FOLDER.to_owned(),
        ),
        LabMode::Sftp => (
            ImageServer::sftp(0)
                .await
                .map_err(setup("starting sftpd"))?,
            served.join(LAB_FOLDER).to_string_lossy().into_owned(),
        ),
    };
    let capwap_addr = capwap.local_addr().map_err(setup("CAPWAP socket"))?;
    say(&format!(
        "lab: {} server on {}, controller on {capwap_addr}, {} simulated APs, {:.0}% loss each way",
        match opts.mode {
            LabMode::Tftp => "TFTP",
            LabMode::Sftp => "SFTP",
        },
        server.addr,
        opts.aps,
        opts.loss * 100.0
    ));
    let config_path = root.path().join("controller.toml");
    let text = lab_config(&server, &folder, capwap_addr, opts.block_size);
    std::fs::write(&config_path, &text).map_err(setup("writing the profile"))?;
    let config = Config::load(&config_path)?;
    let store = Store::open(&root.path().join("cache"), 16 << 30).map_err(setup("image cache"))?;
    let status: Status = Arc::default();
    let log: EventSink = {
        let say = say.clone();
        Arc::new(move |e: Event| say(&format!("{}{}", stamp(now_ms()), e.message())))
    };
    let halt = stop.child_token();
    let controller = tokio::spawn(daemon::run(
        Options {
            config,
            config_path: Some(config_path),
            store: Arc::clone(&store),
            log,
            status: Arc::clone(&status),
        },
        capwap,
        None,
        halt.clone(),
    ));

    // The APs: one model of each family in turn.
    let models: Vec<String> = fleet::DEFAULT_MODELS
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
    let mut per_family: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..opts.aps {
        let model = &models[i % models.len()];
        if let Ok(m) = bundle_tool::models::which(model) {
            *per_family.entry(m.row.family.clone()).or_default() += 1;
        }
    }
    let fleet_cfg = FleetConfig {
        controller: capwap_addr,
        count: opts.aps,
        models,
        primary: "17.3.3.26".into(),
        backup: "8.10.130.0".into(),
        name_prefix: "AP".into(),
        store: None,
        faults: Faults {
            loss: opts.loss,
            seed: now_ms(),
            ..Faults::default()
        },
        retransmit: lab_retransmit(),
        retry_interval: Duration::from_secs(1),
        reset_delay: Duration::from_millis(200),
        echo_interval: Duration::from_secs(30),
        image_data_start_timeout: Duration::from_secs(10),
        until: Until::Current,
    };
    let fleet_status = Arc::new(FleetStatus::new(&fleet_cfg)?);
    let first = format!("{}-0001", fleet_cfg.name_prefix);
    let ap_say = say.clone();
    let fleet_stop = halt.clone();
    let fleet = tokio::spawn(fleet::run(
        fleet_cfg,
        Arc::clone(&fleet_status),
        // One AP's lines show what every AP goes through.
        move |name: &str, line: &str| {
            if name == first {
                let us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));
                ap_say(&format!("{name}: {}{line}", ap_stamp(us)));
            }
        },
        fleet_stop,
    ));

    // Live progress: a bar per family (share of its APs' image received), the counters.
    let style = ProgressStyle::with_template("{prefix:>7} [{bar:30}] {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: BTreeMap<String, ProgressBar> = per_family
        .iter()
        .map(|(family, n)| {
            let bar = multi.add(ProgressBar::new(*n as u64 * 1000));
            bar.set_style(style.clone());
            bar.set_prefix(family.clone());
            bar.set_message(format!("{n} APs"));
            (family.clone(), bar)
        })
        .collect();
    let counters = multi.add(ProgressBar::new_spinner());
    let mut fleet = fleet;
    // Past the deadline the APs are stopped and the report says who did not make it.
    let deadline = tokio::time::sleep(opts.timeout);
    tokio::pin!(deadline);
    let fleet_report = loop {
        tokio::select! {
            done = &mut fleet => break done,
            () = &mut deadline, if !halt.is_cancelled() => {
                say(&format!(
                    "lab: not every AP verified within {} s; stopping",
                    opts.timeout.as_secs()
                ));
                halt.cancel();
            }
            () = tokio::time::sleep(Duration::from_millis(150)) => {
                draw(&bars, &counters, &status, LAB_VERSION);
            }
        }
    };
    draw(&bars, &counters, &status, LAB_VERSION);
    for bar in bars.values() {
        bar.finish();
    }
    counters.finish_and_clear();
    halt.cancel();
    let fleet_report = fleet_report
        .map_err(|e| setup("simulated APs")(std::io::Error::other(e.to_string())))??;
    match controller.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(setup("controller")(std::io::Error::other(e.to_string()))),
    }
    let show = ApImageReport::new(
        status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect(),
    );
    let report = LabReport {
        fleet: fleet_report,
        show,
        fetches: store.fetches_started(),
        families: per_family.len(),
    };
    say(&summary(&report, started.elapsed()));
    Ok(report)
}

/// Redraws the bars from the `show` rows.
fn draw(
    bars: &BTreeMap<String, ProgressBar>,
    counters: &ProgressBar,
    status: &Status,
    version: &str,
) {
    let rows: Vec<_> = status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    let mut done: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &rows {
        let share = if r.primary == version || r.download == DownloadState::Completed {
            1000
        } else {
            u64::from(r.percent.unwrap_or(0)) * 10
        };
        *done.entry(r.family.as_str()).or_default() += share;
    }
    for (family, bar) in bars {
        bar.set_position(done.get(family.as_str()).copied().unwrap_or(0));
    }
    let c = ApImageReport::new(rows).counters;
    counters.set_message(format!(
        "APs {} · initiated {} · downloading {} · completed {} · not supported {}",
        c.total, c.initiated, c.downloading, c.completed_downloading, c.not_supported
    ));
    counters.tick();
}

/// The closing table: `show ap image`, the APs' side by family, and the verdict.
pub fn summary(report: &LabReport, elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", report.show);
    let _ = writeln!(s, "{}", report.fleet);
    let _ = write!(
        s,
        "\nlab: {} of {} APs verified their image and run {LAB_VERSION}; {} image fetches from the server for {} families; {:.1} s in all",
        report.fleet.totals.verified,
        report.fleet.totals.aps,
        report.fetches,
        report.families,
        elapsed.as_secs_f64()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::show::ApImageRow;

    fn row(name: &str, family: &str, primary: &str, download: DownloadState) -> ApImageRow {
        ApImageRow {
            download,
            ..ApImageRow::new(name, family, primary, "8.10.130.0")
        }
    }

    /// Each family's bar is the share of its APs' images received (an AP done, or already
    /// on the version, counts whole); the spinner carries the `show ap image` counters.
    #[test]
    fn bars_follow_the_rows_and_the_spinner_the_counters() {
        let family_bar = |aps: u64| {
            let bar = ProgressBar::hidden();
            bar.set_length(aps * 1000);
            bar
        };
        let bars: BTreeMap<String, ProgressBar> = [
            ("ap1g7".to_owned(), family_bar(3)),
            ("ap1g8".to_owned(), family_bar(1)),
            ("ap3g3".to_owned(), family_bar(1)),
        ]
        .into();
        let counters = ProgressBar::hidden();
        let status: Status = Arc::default();
        {
            let mut rows = status.lock().unwrap_or_else(PoisonError::into_inner);
            let mut downloading = row("AP-2", "ap1g7", "17.3.3.26", DownloadState::Downloading);
            downloading.percent = Some(40);
            let waiting = row("AP-3", "ap1g7", "17.3.3.26", DownloadState::Initiated);
            for r in [
                row("AP-1", "ap1g7", "17.3.3.26", DownloadState::Completed),
                downloading,
                waiting,
                row("AP-4", "ap1g8", LAB_VERSION, DownloadState::None),
                row("AP-5", "ap3g3", "17.3.3.26", DownloadState::NotSupported),
            ] {
                rows.insert(r.name.clone(), r);
            }
        }
        draw(&bars, &counters, &status, LAB_VERSION);
        let positions: Vec<(&str, u64)> = bars
            .iter()
            .map(|(f, b)| (f.as_str(), b.position()))
            .collect();
        assert_eq!(
            positions,
            [("ap1g7", 1400), ("ap1g8", 1000), ("ap3g3", 0)],
            "AP-1 whole, AP-2 40%, AP-3 nothing; AP-4 already on the version"
        );
        assert_eq!(
            counters.message(),
            "APs 5 · initiated 1 · downloading 1 · completed 1 · not supported 1"
        );
    }
}
