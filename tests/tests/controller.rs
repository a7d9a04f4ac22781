//! End-to-end: the controller (`controller::daemon`, as `controller serve` runs it) against
//! our tftpd and sftpd on loopback and simulated APs over CAPWAP — the source document's
//! stories: a wrong path fixed, a server down then up, a version predownloaded then
//! activated, many APs of every family fetched once each, and the one-command lab.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bundle_tool::version::ApVersion;
use controller::control::{self, Request};
use controller::daemon::{self, DaemonError, Options};
use controller::events::Event;
use controller::fleet::{self, FleetConfig, FleetReport, FleetStatus, Until};
use controller::images::EventSink;
use controller::lab::{self, LabMode, LabOptions};
use controller::server::Status;
use controller::show::{DownloadState, PredownloadState};
use controller::testbed::{ImageServer, LAB_FOLDER, LAB_VERSION, lab_retransmit, stage_release};
use relay::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough for a loaded shared machine; a healthy run takes a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);
/// The new version of the predownload story.
const NEXT_VERSION: &str = "17.9.5.47";
/// Tiny images: the stories are about the flow, not the bytes.
const SCALE: f64 = 0.0005;

/// A controller under test, with its log, rows and control socket.
struct Running {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    socket: PathBuf,
    capwap: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    status: Status,
    store: Arc<Store>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Starts the controller with `profile` as its `[image_download]` section.
    async fn start(profile: &str) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("controller.toml");
        write_config(&config_path, profile);
        let config = controller::config::Config::load(&config_path).expect("config");
        let capwap = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = capwap.local_addr().expect("addr");
        let socket = dir.path().join("controller.sock");
        let listener = control::bind(&socket).expect("control socket");
        let store = Store::open(&dir.path().join("cache"), 1 << 30).expect("store");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        let log: EventSink = Arc::new(move |e: Event| {
            l.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.message());
        });
        let status: Status = Arc::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(daemon::run(
            Options {
                config,
                config_path: Some(config_path.clone()),
                store: Arc::clone(&store),
                log,
                status: Arc::clone(&status),
            },
            capwap,
            Some(listener),
            stop.clone(),
        ));
        Running {
            dir,
            config_path,
            socket,
            capwap: addr,
            lines,
            status,
            store,
            stop,
            task,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until a log line satisfies `pred`.
    async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no line {what}; log:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the `show` rows satisfy `pred` (and there are `n` of them).
    async fn wait_rows(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&controller::show::ApImageRow) -> bool,
    ) {
        self.wait_all_rows(what, |rows| rows.len() == n && rows.iter().all(&pred))
            .await;
    }

    /// Waits until the `show` rows, taken together, satisfy `pred`.
    async fn wait_all_rows(
        &self,
        what: &str,
        pred: impl Fn(&[controller::show::ApImageRow]) -> bool,
    ) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let rows: Vec<_> = self
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            if pred(&rows) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rows never {what}: {rows:#?}\nlog:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ask(&self, request: Request) -> String {
        control::ask(&self.socket, request)
            .await
            .expect("control socket")
    }

    async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        let lines = Arc::clone(&self.lines);
        self.task.await.expect("join").expect("controller");
        let lines = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
        drop(self.dir);
        lines
    }
}

fn write_config(path: &Path, profile: &str) {
    let text = format!(
        "[capwap]\nlisten = \"127.0.0.1:5246\"\nblock_size = 1377\nretransmit_interval_s = 0.05\n\
         max_retransmit = 10\n\n[image_download]\n{profile}"
    );
    std::fs::write(path, text).expect("config");
}

/// APs on loopback timers, rejoining quickly after a failure.
fn fleet_config(running: &Running, count: usize, models: &[&str]) -> FleetConfig {
    let mut cfg = FleetConfig::new(running.capwap, count);
    cfg.models = models.iter().map(|m| (*m).to_owned()).collect();
    cfg.retransmit = lab_retransmit();
    cfg.retry_interval = Duration::from_millis(300);
    cfg.reset_delay = Duration::from_millis(50);
    cfg.image_data_start_timeout = Duration::from_secs(10);
    cfg
}

type FleetTask = (
    JoinHandle<Result<FleetReport, fleet::FleetError>>,
    CancellationToken,
    Arc<Mutex<Vec<String>>>,
);

fn start_fleet(cfg: FleetConfig) -> FleetTask {
    let status = Arc::new(FleetStatus::new(&cfg).expect("fleet"));
    let stop = CancellationToken::new();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    let task = tokio::spawn(fleet::run(
        cfg,
        status,
        move |name: &str, line: &str| {
            l.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{name}: {line}"));
        },
        stop.clone(),
    ));
    (task, stop, lines)
}

async fn fleet_report(task: FleetTask) -> (FleetReport, Vec<String>) {
    let (handle, stop, lines) = task;
    let report = match tokio::time::timeout(DEADLINE, handle).await {
        Ok(joined) => joined.expect("join").expect("fleet"),
        Err(_) => {
            stop.cancel();
            panic!(
                "the APs did not finish; their lines:\n{}",
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .join("\n")
            );
        }
    };
    let lines = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
    (report, lines)
}

fn version(v: &str) -> ApVersion {
    v.parse().expect("version")
}

fn count(lines: &[String], pred: impl Fn(&str) -> bool) -> usize {
    lines.iter().filter(|l| pred(l)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_fails_with_the_documents_lines_then_succeeds_once_fixed() {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    let server = ImageServer::tftp(srv.path(), 0).expect("tftpd");
    let port = server.addr.port();
    // The source document's mistake: the profile names a folder that is not there. The
    // controller knows the version the network runs (`version`), so each AP's image is what
    // fails, as in the document.
    let extra = format!("version = \"{LAB_VERSION}\"\nretry_interval_s = 1\nfetch_timeout_s = 5\n");
    let running = Running::start(&(server.profile("Wrong-Path") + &extra)).await;
    // C9117AXI: the document's ap1g6.
    let fleet = start_fleet(fleet_config(&running, 2, &["C9117AXI-B"]));
    let url = format!("tftp://127.0.0.1:{port}/Wrong-Path/ap1g6");
    running
        .wait_line("starting the install", |l| {
            l == format!(
                "%INSTALL-5-INSTALL_START_INFO: Chassis 1 R0/0: install_engine: Started install add {url}"
            )
        })
        .await;
    running
        .wait_line("with the document's error", |l| {
            l == format!(
                "%INSTALL-3-OPERATION_ERROR_MESSAGE: Chassis 1 R0/0: install_engine: Failed to install_add package {url}, Error: Failed to download file {url}: No such file or directory"
            )
        })
        .await;
    running
        .wait_line("AP Image Download Failed", |l| {
            l.starts_with("%CAPWAPAC_SMGR_TRACE_MESSAGE-5-AP_JOIN_DISJOIN: Chassis 1 R0/0: wncd: AP Event: AP Name: AP-0001")
                && l.ends_with("AP Image Download Failed")
        })
        .await;
    // `show ap image` says so: the family is not on the server (Not Supported), with a
    // retry count and the next retry time.
    running
        .wait_rows("marked failed", 2, |r| {
            r.download == DownloadState::NotSupported
                && r.retry_count >= 1
                && r.next_retry.is_some()
        })
        .await;
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    assert!(shown.contains("Total number of APs : 2"), "{shown}");
    assert!(
        shown.contains("        Not Supported                 : 2"),
        "{shown}"
    );
    let json = running.ask(Request::ShowApImage { json: true }).await;
    assert!(json.contains("\"download\": \"not-supported\""), "{json}");
    // The fix: the right path, and `controller reload`.
    let fixed = server.profile(LAB_FOLDER) + &extra;
    write_config(&running.config_path, &fixed);
    let answer = running.ask(Request::Reload).await;
    assert!(answer.starts_with("reloaded"), "{answer}");
    let (report, ap_lines) = fleet_report(fleet).await;
    assert!(report.all_verified, "{report:#?}\n{}", ap_lines.join("\n"));
    let lines = running.stop().await;
    let good = format!("tftp://127.0.0.1:{port}/{LAB_FOLDER}/ap1g6");
    assert_eq!(
        count(&lines, |l| l
            == format!(
                "%INSTALL-5-INSTALL_COMPLETED_INFO: Chassis 1 R0/0: install_engine: Completed install add {good}"
            )),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(&lines, |l| l.ends_with("AP Image Download Success")),
        2,
        "{lines:#?}"
    );
    // The AP's side of the failure, as the document's AP logs it.
    assert!(
        ap_lines
            .iter()
            .any(|l| l.contains("AC refused previous sent request with result code: 16")),
        "{ap_lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_without_a_known_version_waits_answering_and_a_reload_fixes_it() {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    let server = ImageServer::tftp(srv.path(), 0).expect("tftpd");
    let port = server.addr.port();
    // No `version`: the controller must read version.info, and the path is wrong.
    let extra = "retry_interval_s = 1\nfetch_timeout_s = 5\n";
    let running = Running::start(&(server.profile("Wrong-Path") + extra)).await;
    let url = format!("tftp://127.0.0.1:{port}/Wrong-Path/version.info");
    running
        .wait_line("about version.info", |l| {
            l == format!(
                "%INSTALL-3-OPERATION_ERROR_MESSAGE: Chassis 1 R0/0: install_engine: Failed to install_add package {url}, Error: Failed to download file {url}: No such file or directory"
            )
        })
        .await;
    // It answers meanwhile: an empty table, a clear refusal of predownload.
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    assert!(shown.contains("Total number of APs : 0"), "{shown}");
    let refused = control::ask(&running.socket, Request::Predownload).await;
    let Err(control::ControlError::Refused(why)) = refused else {
        panic!("predownload before a release: {refused:?}")
    };
    assert!(why.contains("no release yet"), "{why}");
    // APs waiting to join; then the fix and a reload.
    let fleet = start_fleet(fleet_config(&running, 2, &["C9117AXI-B"]));
    write_config(&running.config_path, &(server.profile(LAB_FOLDER) + extra));
    let answer = running.ask(Request::Reload).await;
    assert_eq!(
        answer,
        format!(
            "reloaded {}: AP version {LAB_VERSION} from tftp://127.0.0.1:{port}/{LAB_FOLDER}\n",
            running.config_path.display()
        )
    );
    let (report, ap_lines) = fleet_report(fleet).await;
    assert!(report.all_verified, "{report:#?}\n{}", ap_lines.join("\n"));
    let lines = running.stop().await;
    assert_eq!(
        count(&lines, |l| l.ends_with("AP Image Download Success")),
        2,
        "{lines:#?}"
    );
}

/// What arrives from the network or the socket is checked: an AP naming a path instead of
/// an image family is refused before anything is fetched, and garbage on the control socket
/// gets an error, not a hang or a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_for_a_family_and_garbage_on_the_control_socket_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    let folder = srv.path().join(LAB_FOLDER);
    let profile = format!("mode = \"local\"\npath = {:?}\n", folder.to_string_lossy());
    let running = Running::start(&profile).await;
    let mut cfg = controller::wtp::WtpConfig::new("AP-EVIL", "C9105AXI-E", "../../../etc/passwd");
    cfg.retransmit = lab_retransmit();
    cfg.retry_interval = Duration::from_secs(60);
    let ap = controller::wtp::Wtp::new(cfg, Instant::now()).expect("wtp");
    let (_, ap_lines) = controller::server::run_ap(
        ap,
        running.capwap,
        Instant::now() + DEADLINE,
        |w: &controller::wtp::Wtp| w.state() == controller::wtp::CapwapState::Reset,
    )
    .await
    .expect("ap");
    assert!(
        ap_lines
            .iter()
            .any(|l| l.contains("AC refused previous sent request with result code: 16")),
        "{ap_lines:#?}"
    );
    running
        .wait_line("the failure", |l| l.ends_with("AP Image Download Failed"))
        .await;
    // Garbage, and a line that never ends, on the control socket.
    for junk in [&b"rm -rf /\n"[..], &[b'x'; 4096][..]] {
        let mut stream = tokio::net::UnixStream::connect(&running.socket)
            .await
            .expect("connect");
        stream.write_all(junk).await.expect("write");
        let _ = stream.shutdown().await;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("error: "), "{answer:?}");
    }
    // Still answering.
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    assert!(shown.contains("Total number of APs : 1"), "{shown}");
    let lines = running.stop().await;
    assert!(
        !lines.iter().any(|l| l.contains("INSTALL")),
        "nothing may be fetched for that name: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_times_out_then_the_retry_succeeds_once_it_is_up() {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    // "Down": the port is held by a socket that never answers (a host that drops the
    // requests), so the fetch times out rather than being refused.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let profile = format!(
        "mode = \"tftp\"\nserver = \"127.0.0.1\"\nport = {port}\npath = \"{LAB_FOLDER}\"\n\
         version = \"{LAB_VERSION}\"\nretry_interval_s = 2\nfetch_timeout_s = 1\n"
    );
    let running = Running::start(&profile).await;
    let fleet = start_fleet(fleet_config(&running, 2, &["C9105AXI-E"]));
    let url = format!("tftp://127.0.0.1:{port}/{LAB_FOLDER}/ap1g8");
    let failed = running
        .wait_line("Timed out", |l| {
            l.starts_with(&format!(
                "%INSTALL-3-OPERATION_ERROR_MESSAGE: Chassis 1 R0/0: install_engine: Failed to install_add package {url}, Error: Failed to download file {url}: Timed out"
            ))
        })
        .await;
    assert!(failed.contains(": Timed out"), "{failed}");
    // Up: the server starts on that port; the next retry fetches the image.
    drop(silent);
    let server = ImageServer::tftp(srv.path(), port).expect("tftpd on the same port");
    let (report, ap_lines) = fleet_report(fleet).await;
    assert!(report.all_verified, "{report:#?}\n{}", ap_lines.join("\n"));
    let lines = running.stop().await;
    let completed = lines
        .iter()
        .position(|l| l.ends_with(&format!("Completed install add {url}")))
        .unwrap_or_else(|| panic!("no completion: {lines:#?}"));
    let timed_out = lines
        .iter()
        .position(|l| l.contains(": Timed out"))
        .unwrap_or_else(|| panic!("no time-out: {lines:#?}"));
    assert!(timed_out < completed, "{lines:#?}");
    let rrq = server
        .tftp_log
        .as_ref()
        .expect("tftp log")
        .lines()
        .into_iter()
        .filter(|(_, l)| l.starts_with("RRQ from 127.0.0.1 filename EWC_17_9_4a/ap1g8"))
        .count();
    assert_eq!(rrq, 1, "one fetch once the server is up");
}

/// A new version staged (local mode) is predownloaded to the running APs (automatically,
/// or on `controller predownload`), then activated: each AP swaps to it.
async fn predownload_then_activate(auto: bool) {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), "17_9_4a", version(LAB_VERSION), SCALE, true).expect("stage");
    let current = srv.path().join("current");
    let profile = format!(
        "mode = \"local\"\npath = {:?}\npredownload = \"{}\"\nretry_interval_s = 1\n",
        current.to_string_lossy(),
        if auto { "auto" } else { "off" }
    );
    let running = Running::start(&profile).await;
    let models = ["C9105AXI-E", "C9120AXI-B", "AIR-AP2802I-B-K9"];
    let mut cfg = fleet_config(&running, 3, &models);
    cfg.primary = LAB_VERSION.into();
    cfg.until = Until::Forever;
    // Each AP goes quiet for a while 15 kB into its predownload, so it can be seen.
    cfg.faults.stall = Some(fleet::Stall {
        after_bytes: 15_000,
        duration: Duration::from_secs(2),
    });
    let fleet = start_fleet(cfg);
    running
        .wait_rows("joined on the current version", 3, |r| {
            r.primary == LAB_VERSION
        })
        .await;
    // The administrator stages the next release while the controller runs.
    let staged_dir = srv.path().to_owned();
    tokio::task::spawn_blocking(move || {
        stage_release(&staged_dir, "17_9_5", version(NEXT_VERSION), SCALE, true)
    })
    .await
    .expect("join")
    .expect("stage the next release");
    running
        .wait_line("the new version found", |l| {
            l.starts_with("%INSTALL-5-INSTALL_AP_IMAGE_VERSION: Chassis 1 R0/0: install_engine: AP image version 17.9.5.47 found at file://")
        })
        .await;
    if !auto {
        // Nothing happens until asked.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows: Vec<_> = running
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        assert!(
            rows.iter().all(|r| r.predownload == PredownloadState::None),
            "{rows:#?}"
        );
        let answer = running.ask(Request::Predownload).await;
        assert_eq!(answer, "predownload of 17.9.5.47 started on 3 APs\n");
    }
    running
        .wait_all_rows("one predownloading", |rows| {
            rows.iter().any(|r| {
                r.predownload == PredownloadState::Predownloading
                    && r.percent.is_some_and(|p| p > 0 && p < 100)
            })
        })
        .await;
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    assert!(
        shown.contains("        Predownload in progress       : Yes"),
        "{shown}"
    );
    let predownloading = shown
        .lines()
        .find_map(|l| l.strip_prefix("        Predownloading                : "))
        .and_then(|n| n.parse::<usize>().ok());
    assert!(
        predownloading.is_some_and(|n| (1..=3).contains(&n)),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("AP-000") && l.contains(" Predownloading ")),
        "{shown}"
    );
    running
        .wait_rows("predownloaded", 3, |r| {
            r.predownload == PredownloadState::Complete
                && r.backup == NEXT_VERSION
                && r.primary == LAB_VERSION
                && r.predownload_version.as_deref() == Some(NEXT_VERSION)
        })
        .await;
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    assert!(
        shown.contains("        Completed predownloading      : 3"),
        "{shown}"
    );
    // A second predownload finds nothing to do.
    assert_eq!(
        running.ask(Request::Predownload).await,
        "predownload of 17.9.5.47 started on 0 APs\n"
    );
    let answer = running.ask(Request::Activate).await;
    assert_eq!(answer, "activation of 17.9.5.47 sent to 3 APs\n");
    running
        .wait_rows("activated", 3, |r| {
            r.primary == NEXT_VERSION && r.backup == LAB_VERSION
        })
        .await;
    let (task, stop, ap_lines) = fleet;
    stop.cancel();
    let report = task.await.expect("join").expect("fleet");
    for ap in &report.aps {
        assert_eq!(ap.primary, NEXT_VERSION, "{report:#?}");
        assert_eq!(ap.backup, LAB_VERSION, "{report:#?}");
    }
    let ap_lines = ap_lines
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        ap_lines.iter().any(
            |l| l.contains("Predownload of image 17.9.5.47 requested, answered result code: 0")
        ),
        "{ap_lines:#?}"
    );
    let lines = running.stop().await;
    assert_eq!(
        count(&lines, |l| l.ends_with("AP Image Download Success")),
        3,
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_version_is_predownloaded_automatically_then_activated() {
    predownload_then_activate(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predownload_on_request_then_activate() {
    predownload_then_activate(false).await;
}

/// A predownload whose image is broken on the server fails ("Failed to Predownload"), one
/// whose family is missing is "Not Supported"; each is asked again once (`retry_count = 1`)
/// and then left, while the other AP completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_predownloads_are_retried_retry_count_times_then_left() {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), "17_9_4a", version(LAB_VERSION), SCALE, true).expect("stage");
    let current = srv.path().join("current");
    let profile = format!(
        "mode = \"local\"\npath = {:?}\npredownload = \"auto\"\nretry_interval_s = 1\nretry_count = 1\n",
        current.to_string_lossy()
    );
    let running = Running::start(&profile).await;
    let mut cfg = fleet_config(
        &running,
        3,
        &["C9105AXI-E", "C9120AXI-B", "AIR-AP2802I-B-K9"],
    );
    cfg.primary = LAB_VERSION.into();
    cfg.until = Until::Forever;
    let fleet = start_fleet(cfg);
    running
        .wait_rows("joined", 3, |r| r.primary == LAB_VERSION)
        .await;
    // The next release, with ap1g8 damaged after staging and ap3g3 missing.
    let root = srv.path().to_owned();
    tokio::task::spawn_blocking(move || {
        stage_release(&root, "17_9_5", version(NEXT_VERSION), SCALE, false)
    })
    .await
    .expect("join")
    .expect("stage");
    let next = srv.path().join("17_9_5");
    let ap1g8 = next.join("ap1g8");
    let mut bytes = std::fs::read(&ap1g8).expect("read");
    bytes[600] ^= 0xff;
    std::fs::write(&ap1g8, bytes).expect("damage");
    std::fs::remove_file(next.join("ap3g3")).expect("remove");
    // Point `current` at it, as `bundle-tool stage --current` does: a new link renamed over.
    let link = srv.path().join(".current.new");
    std::os::unix::fs::symlink("17_9_5", &link).expect("symlink");
    std::fs::rename(&link, &current).expect("rename");
    running
        .wait_rows("left after one retry", 3, |r| match r.family.as_str() {
            "ap1g7" => r.predownload == PredownloadState::Complete,
            "ap1g8" => {
                r.predownload == PredownloadState::Failed
                    && r.retry_count == 2
                    && r.next_retry.is_none()
            }
            "ap3g3" => {
                r.predownload == PredownloadState::NotSupported
                    && r.retry_count == 2
                    && r.next_retry.is_none()
            }
            _ => false,
        })
        .await;
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    for line in [
        "        Completed predownloading      : 1",
        "        Not Supported                 : 1",
        "        Failed to Predownload         : 1",
        "        Predownload in progress       : No",
    ] {
        assert!(shown.contains(line), "no {line:?} in\n{shown}");
    }
    let (task, stop, _) = fleet;
    stop.cancel();
    task.await.expect("join").expect("fleet");
    let lines = running.stop().await;
    // Two fetches of each broken family (the first and the one retry), not more.
    let failed = |family: &str| {
        count(&lines, |l| {
            l.starts_with("%INSTALL-3-OPERATION_ERROR_MESSAGE")
                && l.contains(&format!("/{family},"))
        })
    };
    assert_eq!(failed("ap1g8"), 2, "{lines:#?}");
    assert_eq!(failed("ap3g3"), 2, "{lines:#?}");
}

/// While an image is on its way, `show ap image` says so: Downloading, the percent done and
/// an ETA, the method; and an AP waiting for its turn (`max_concurrent = 1`) is Initiated.
/// Each AP stalls for a while after its first 15 kB, so the states can be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_ap_image_reports_a_download_in_progress_and_one_waiting() {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    let server = ImageServer::tftp(srv.path(), 0).expect("tftpd");
    let running = Running::start(&(server.profile(LAB_FOLDER) + "max_concurrent = 1\n")).await;
    let mut cfg = fleet_config(&running, 2, &["C9105AXI-E"]);
    cfg.faults.stall = Some(fleet::Stall {
        after_bytes: 15_000,
        duration: Duration::from_secs(3),
    });
    let fleet = start_fleet(cfg);
    running
        .wait_all_rows("one downloading, one waiting", |rows| {
            let downloading = rows.iter().filter(|r| {
                r.download == DownloadState::Downloading
                    && r.percent.is_some_and(|p| p > 0 && p < 100)
                    && r.eta_s.is_some()
            });
            let waiting = rows
                .iter()
                .filter(|r| r.download == DownloadState::Initiated && r.percent.is_none());
            rows.len() == 2 && downloading.count() == 1 && waiting.count() == 1
        })
        .await;
    let shown = running.ask(Request::ShowApImage { json: false }).await;
    for line in [
        "Total number of APs : 2",
        "        Initiated                     : 1",
        "        Downloading                   : 1",
        "        Completed downloading         : 0",
    ] {
        assert!(shown.contains(line), "no {line:?} in\n{shown}");
    }
    let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("AP-000")).collect();
    assert_eq!(rows.len(), 2, "{shown}");
    // Both on their way over CAPWAP; the ETA / % cell is "<seconds> s / <percent>%" for the
    // one downloading, NA for the one waiting.
    assert!(
        rows.iter().all(|r| r.contains(" CAPWAP ")),
        "method: {shown}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains(" s / ") && r.ends_with('%'))
            .count(),
        1,
        "ETA and percent: {shown}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.ends_with(" NA")).count(),
        1,
        "{shown}"
    );
    let (report, ap_lines) = fleet_report(fleet).await;
    assert!(report.all_verified, "{}", ap_lines.join("\n"));
    running.stop().await;
}

/// An AP that dies mid-transfer and rejoins from a new port is the same AP: its old session
/// ends at the new Join (logged as a disjoin), not at the keepalive timeout, so the one
/// transfer slot (`max_concurrent = 1`) is not held by a dead session meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ap_that_rejoins_from_a_new_port_replaces_its_old_session() {
    let srv = tempfile::tempdir().expect("tempdir");
    stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    let server = ImageServer::tftp(srv.path(), 0).expect("tftpd");
    let running = Running::start(&(server.profile(LAB_FOLDER) + "max_concurrent = 1\n")).await;
    let mut cfg = fleet_config(&running, 2, &["C9105AXI-E", "C9120AXI-B"]);
    cfg.faults.crash_after_bytes = Some(5_000);
    let (report, ap_lines) = fleet_report(start_fleet(cfg)).await;
    assert!(report.all_verified, "{}", ap_lines.join("\n"));
    let lines = running.stop().await;
    for ap in ["AP-0001", "AP-0002"] {
        let rejoined = count(&lines, |l| {
            l.contains(&format!("AP Name: {ap} "))
                && l.contains(" Disjoined Rejoined from 127.0.0.1[")
        });
        assert_eq!(rejoined, 1, "{ap}: {lines:#?}");
    }
    assert_eq!(
        count(&lines, |l| l.ends_with("Disjoined Keepalive timeout")),
        0,
        "{lines:#?}"
    );
    // Each crash ended a transfer: failed, like a rejoin from the same address; then each AP
    // downloaded it all.
    assert_eq!(
        count(&lines, |l| l.ends_with("AP Image Download Failed")),
        2,
        "{lines:#?}"
    );
    assert_eq!(
        count(&lines, |l| l.ends_with("AP Image Download Success")),
        2,
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_aps_of_seven_families_cause_exactly_seven_fetches() {
    let srv = tempfile::tempdir().expect("tempdir");
    let sizes =
        stage_release(srv.path(), LAB_FOLDER, version(LAB_VERSION), SCALE, false).expect("stage");
    assert_eq!(sizes.len(), 7);
    let server = ImageServer::tftp(srv.path(), 0).expect("tftpd");
    let running = Running::start(&(server.profile(LAB_FOLDER) + "max_concurrent = 50\n")).await;
    let cfg = fleet_config(&running, 200, &fleet::DEFAULT_MODELS);
    let (report, ap_lines) = fleet_report(start_fleet(cfg)).await;
    assert!(report.all_verified, "{}", ap_lines.join("\n"));
    assert_eq!(report.aps.len(), 200);
    assert_eq!(report.families.len(), 7, "{report:#?}");
    assert_eq!(running.store.fetches_started(), 7);
    let log = server.tftp_log.as_ref().expect("tftp log").lines();
    for (family, _) in &sizes {
        let rrq = log
            .iter()
            .filter(|(_, l)| {
                let rrq = format!("RRQ from 127.0.0.1 filename {LAB_FOLDER}/{family}");
                l == &rrq || l.starts_with(&format!("{rrq} "))
            })
            .count();
        assert_eq!(rrq, 1, "{family}: {log:#?}");
    }
    let lines = running.stop().await;
    assert_eq!(
        count(&lines, |l| l.ends_with("AP Image Download Success")),
        200
    );
    assert_eq!(
        count(&lines, |l| l.contains("%INSTALL-5-INSTALL_COMPLETED_INFO")),
        7
    );
}

async fn lab_with_loss(mode: LabMode) {
    let report = lab::run(
        LabOptions {
            aps: 14,
            mode,
            loss: 0.02,
            scale: 0.002,
            capwap_port: 0,
            block_size: 1377,
            live: false,
            timeout: DEADLINE,
        },
        CancellationToken::new(),
    )
    .await
    .expect("lab");
    assert!(report.all_verified(), "{report:#?}");
    assert_eq!(report.fetches, 7, "{report:#?}");
    assert_eq!(report.show.counters.total, 14, "{report:#?}");
    assert_eq!(
        report.show.counters.completed_downloading, 14,
        "{report:#?}"
    );
    // The loss was real: datagrams were dropped, and every AP verified all the same.
    let dropped: u64 = report.fleet.aps.iter().map(|a| a.dropped).sum();
    assert!(dropped > 0, "2% loss each way dropped nothing: {report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_over_tftp_with_loss() {
    lab_with_loss(LabMode::Tftp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_over_sftp_with_loss() {
    lab_with_loss(LabMode::Sftp).await;
}
