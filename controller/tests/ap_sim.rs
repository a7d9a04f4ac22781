//! The AP simulator against a real controller ([`serve`]) over loopback UDP: the `ap-sim`
//! binary's lines, summary, JSON, stored images and exit statuses, and [`fleet::run`] through
//! loss, duplication, a stall and a crash with reboot — every AP still ends on the
//! controller's version. No timing is asserted; every run has a generous deadline.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundle_tool::synth::write_image;
use bundle_tool::version::ApVersion;
use controller::ac::AcConfig;
use controller::capwap::RetransmitConfig;
use controller::events::Event;
use controller::fleet::{self, Faults, FleetConfig, FleetReport, FleetStatus, Stall, Until};
use controller::images::{EventSink, Images, read_release};
use controller::server::{Admission, Command, Controller, RetryPolicy, Status, serve};
use controller::wtp::CapwapState;
use relay::store::Store;
use relay::{FetchOptions, Source};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TARGET: &str = "17.9.4.27";
const MODELS: [&str; 3] = ["C9105AXI-E", "C9120AXI-B", "AIR-AP2802I-B-K9"];
const IMAGE_SIZE: u64 = 61_440;
/// Every run ends by itself well before this (a few seconds on an idle machine).
const DEADLINE: Duration = Duration::from_secs(240);

fn retransmit() -> RetransmitConfig {
    RetransmitConfig {
        interval: Duration::from_millis(300),
        max_retransmit: 6,
        max_interval: None,
    }
}

fn family(model: &str) -> String {
    match bundle_tool::models::which(model) {
        Ok(found) => found.row.family.clone(),
        Err(e) => panic!("{model}: {e}"),
    }
}

/// A controller on 127.0.0.1:0 serving synthetic images of [`MODELS`]' families from a
/// file:// folder, as tests/network.rs sets one up.
struct Lab {
    addr: SocketAddr,
    /// The served bytes, by family.
    images: HashMap<String, Vec<u8>>,
    /// The controller's log lines.
    log: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    /// Kept so the command channel stays open while the controller runs.
    _orders: mpsc::UnboundedSender<Command>,
    _served: tempfile::TempDir,
    _store: tempfile::TempDir,
}

impl Lab {
    async fn start() -> Lab {
        Lab::start_on("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind")
    }

    /// The controller on `bind` (an IPv6 address, for instance); `Err` when it cannot bind.
    async fn start_on(bind: SocketAddr) -> std::io::Result<Lab> {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        let served = tempfile::tempdir().expect("tempdir");
        let folder_path = served.path().join("EWC_17_9_4a");
        std::fs::create_dir_all(&folder_path).expect("mkdir");
        let v: ApVersion = TARGET.parse().expect("version");
        std::fs::write(folder_path.join("version.info"), format!("{v}\n")).expect("version.info");
        let mut images = HashMap::new();
        for model in MODELS {
            let family = family(model);
            let mut bytes = Vec::new();
            write_image(&mut bytes, &family, v, IMAGE_SIZE).expect("image");
            std::fs::write(folder_path.join(&family), &bytes).expect("write image");
            images.insert(family, bytes);
        }
        let folder =
            Source::parse_folder(&format!("file://{}", folder_path.display())).expect("url");
        let opts = FetchOptions::default();
        let release = read_release(&folder, &opts).await.expect("release");
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(store_dir.path(), 1 << 30).expect("store");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        let sink: EventSink = Arc::new(move |e: Event| l.lock().expect("lock").push(e.message()));
        let images_set = Arc::new(Images::new(
            folder,
            opts,
            store,
            release,
            Duration::from_secs(60),
            Arc::clone(&sink),
        ));
        let addr = socket.local_addr().expect("addr");
        let status: Status = Arc::default();
        let (orders, commands) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            socket,
            Controller {
                ac: AcConfig {
                    ac_name: "airlift".into(),
                    control_ipv4: Ipv4Addr::LOCALHOST,
                    block_size: 1377,
                    retransmit: retransmit(),
                    version: TARGET.into(),
                    download_at_join: true,
                    dead_interval: Duration::from_secs(90),
                },
                admission: Admission::Parallel(16),
                retry: RetryPolicy {
                    interval: Duration::from_secs(60),
                    count: 3,
                },
                images: images_set,
                log: sink,
            },
            status,
            commands,
            stop.clone(),
        ));
        Ok(Lab {
            addr,
            images,
            log,
            stop,
            server,
            _orders: orders,
            _served: served,
            _store: store_dir,
        })
    }

    async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        self.server.await.expect("join").expect("serve");
        self.log.lock().expect("lock").clone()
    }

    /// A fleet of `count` APs of [`MODELS`] against this controller, on loopback timers.
    fn fleet(&self, count: usize) -> FleetConfig {
        let mut cfg = FleetConfig::new(self.addr, count);
        cfg.models = MODELS.iter().map(|m| (*m).to_owned()).collect();
        cfg.retransmit = retransmit();
        cfg.reset_delay = Duration::from_millis(20);
        cfg.retry_interval = Duration::from_secs(1);
        cfg
    }
}

/// Runs a fleet in this process until it is done or [`DEADLINE`] passes; returns the report
/// and the AP lines as `AP-0001: line`.
async fn run_fleet(cfg: FleetConfig) -> (FleetReport, Vec<String>) {
    let status = Arc::new(FleetStatus::new(&cfg).expect("status"));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    let shutdown = CancellationToken::new();
    let guard = shutdown.clone();
    let deadline = tokio::spawn(async move {
        tokio::time::sleep(DEADLINE).await;
        guard.cancel();
    });
    let report = fleet::run(
        cfg,
        Arc::clone(&status),
        move |ap: &str, line: &str| l.lock().expect("lock").push(format!("{ap}: {line}")),
        shutdown,
    )
    .await
    .expect("fleet");
    deadline.abort();
    assert_eq!(status.done(), status.aps().len(), "{report}");
    let lines = lines.lock().expect("lock").clone();
    (report, lines)
}

/// Runs the `ap-sim` binary with `args` (stopped at [`DEADLINE`] by its own `--timeout`, or
/// killed past it).
async fn ap_sim(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ap-sim"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(DEADLINE + Duration::from_secs(30), run)
        .await
        .expect("ap-sim stops by itself")
        .expect("ap-sim runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Flags for a lab-speed run against `lab`.
fn lab_flags(lab: &Lab) -> Vec<String> {
    [
        "--controller",
        &lab.addr.to_string(),
        "--models",
        &MODELS.join(","),
        "--retransmit-ms",
        "300",
        "--reset-ms",
        "20",
        "--retry-secs",
        "1",
        "--timeout",
        &DEADLINE.as_secs().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_ap_lines_and_a_summary_and_exits_0() {
    let lab = Lab::start().await;
    let mut args = lab_flags(&lab);
    args.extend(["--count".into(), "6".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ap_sim(&args).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The source document's AP lines, one AP each, in the AP's order.
    for i in 1..=6 {
        let ap = format!("AP-{i:04}");
        let family = family(MODELS[(i - 1) % 3]);
        let expected = [
            format!("{ap}: CAPWAP State: Image Data"),
            format!("{ap}: AP image version 17.3.3.26 backup 8.10.130.0, Controller {TARGET}"),
            format!("{ap}: Version does not match."),
            format!("{ap}: Image Data Request sent to 127.0.0.1, fileName [{family}]"),
            format!("{ap}: Image Data Response from 127.0.0.1"),
            format!("{ap}: AC accepted previous sent request with result code: 0"),
            format!("{ap}: 61440 bytes, 45 msgs, 852 last"),
            format!("{ap}: Image transfer completed from WLC, last 1"),
            format!("{ap}: CAPWAP State: Run"),
        ];
        let mut from = 0;
        for line in &expected {
            match stdout
                .lines()
                .skip(from)
                .position(|l| unstamped(l) == *line)
            {
                Some(at) => from += at + 1,
                None => panic!("{line:?} missing or out of order in:\n{stdout}"),
            }
        }
    }
    // The summary: one row per family, the totals, the verdict.
    for family in MODELS.map(family) {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&family) && l.split_whitespace().nth(1) == Some("2")),
            "{stdout}"
        );
    }
    let total = stdout
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no totals in:\n{stdout}"));
    let cells: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(cells.get(1..4), Some(&["6", "6", "368640"][..]), "{total}");
    assert!(
        stdout.contains("6 of 6 APs verified the controller's version"),
        "{stdout}"
    );
    let log = lab.stop().await;
    let success = log
        .iter()
        .filter(|l| l.ends_with("AP Image Download Success"))
        .count();
    assert_eq!(success, 6, "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_duplicating_link_still_ends_with_every_ap_verified() {
    let lab = Lab::start().await;
    let mut cfg = lab.fleet(6);
    cfg.faults = Faults {
        loss: 0.05,
        dup: 0.02,
        seed: 7,
        ..Faults::default()
    };
    let (report, lines) = run_fleet(cfg).await;
    assert!(report.all_verified, "{report}\n{lines:#?}");
    for ap in &report.aps {
        assert_eq!(ap.primary, TARGET, "{report}");
        assert_eq!(ap.backup, "17.3.3.26", "{report}");
        assert_eq!(ap.controller_version.as_deref(), Some(TARGET));
        assert_eq!(ap.state, "Run");
        assert!(ap.transfers >= 1, "{ap:?}");
    }
    // The faults happened (hundreds of datagrams each way at 5% and 2%).
    assert!(
        report.aps.iter().map(|a| a.dropped).sum::<u64>() > 0,
        "{report:#?}"
    );
    assert!(
        report.aps.iter().map(|a| a.duplicated).sum::<u64>() > 0,
        "{report:#?}"
    );
    assert_eq!(report.totals.aps, 6);
    assert_eq!(report.totals.verified, 6);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ap_that_dies_mid_transfer_reboots_rejoins_and_ends_verified() {
    let lab = Lab::start().await;
    let mut cfg = lab.fleet(3);
    cfg.faults.crash_after_bytes = Some(30_000);
    let (report, lines) = run_fleet(cfg).await;
    assert!(report.all_verified, "{report}\n{lines:#?}");
    for ap in &report.aps {
        assert_eq!(ap.reboots, 1, "{ap:?}");
        assert_eq!(ap.primary, TARGET);
        // The first life died past 30000 bytes; the second received the whole image.
        assert!(ap.bytes >= 30_000 + IMAGE_SIZE, "{ap:?}");
        assert_eq!(ap.transfers, 1, "{ap:?}");
        // Join, then after the crash Join again, then Join on the new image.
        assert!(ap.joins >= 3, "{ap:?}");
        let prefix = format!("{}: ", ap.name);
        let mine: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        let died = mine
            .iter()
            .position(|l| l.starts_with("AP died after"))
            .unwrap_or_else(|| panic!("{mine:#?}"));
        assert!(
            mine[died + 1].starts_with("Rebooting in 20 ms"),
            "{mine:#?}"
        );
        assert!(
            mine[died..].contains(&"Image transfer completed from WLC, last 1"),
            "{mine:#?}"
        );
    }
    assert_eq!(report.totals.reboots, 3, "{report}");
    let log = lab.stop().await;
    let success = log
        .iter()
        .filter(|l| l.ends_with("AP Image Download Success"))
        .count();
    assert_eq!(success, 3, "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_resumes_and_the_download_completes() {
    let lab = Lab::start().await;
    let mut cfg = lab.fleet(2);
    // Silent for a second after 20000 bytes: the controller's retransmissions (300 ms
    // doubling, 6 of them) outlast it.
    cfg.faults.stall = Some(Stall {
        after_bytes: 20_000,
        duration: Duration::from_secs(1),
    });
    let (report, lines) = run_fleet(cfg).await;
    assert!(report.all_verified, "{report}\n{lines:#?}");
    for ap in &report.aps {
        assert_eq!(ap.stalls, 1, "{ap:?}");
        assert!(ap.dropped > 0, "{ap:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{}: Link silent for 1000 ms", ap.name))),
            "{lines:#?}"
        );
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_writes_the_served_images_and_json_reports_them() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("images");
    let mut args = lab_flags(&lab);
    args.extend(
        [
            "--count",
            "3",
            "--store",
            &store.display().to_string(),
            "--json",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ap_sim(&args).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // stdout is one JSON document; the AP lines went to stderr.
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["end"], "finished");
    assert_eq!(v["totals"]["verified"], 3);
    assert_eq!(v["aps"][0]["name"], "AP-0001");
    assert_eq!(v["aps"][0]["mac"], "00a2.ee00.0001");
    assert!(
        stderr
            .lines()
            .any(|l| unstamped(l) == "AP-0001: Version does not match."),
        "{stderr}"
    );
    for (i, model) in MODELS.iter().enumerate() {
        let family = family(model);
        let ap = format!("AP-{:04}", i + 1);
        let path = store.join(&ap).join(&family);
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(got == lab.images[&family], "{} differs", path.display());
        // Only the image: no temporary left behind.
        let names: Vec<_> = std::fs::read_dir(store.join(&ap))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [family.as_str()], "{names:?}");
        assert!(
            stderr.lines().any(
                |l| unstamped(l) == format!("{ap}: Image {family} saved to {}", path.display())
            ),
            "{stderr}"
        );
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_say_what_is_wrong() {
    let base = ["--controller", "127.0.0.1:5246", "--count", "1"];
    let cases: [(&[&str], &str); 5] = [
        (&["--loss", "1.5"], "--loss"),
        (&["--dup=-0.1"], "--dup"),
        (
            &["--models", "C9105AXI-E,AIR-CAP3702I-E-K9"],
            "AIR-CAP3702I-E-K9",
        ),
        (&["--stall-secs", "2"], "--stall-after-bytes"),
        (&["--name-prefix", "../escape"], "../escape"),
    ];
    for (extra, says) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = ap_sim(&args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = ap_sim(&["--controller", "127.0.0.1:5246", "--count", "0"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = ap_sim(&["--count", "1"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_controller_means_a_timeout_exit_1_and_who_never_joined() {
    // A bound socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let out = ap_sim(&[
        "--controller",
        &addr,
        "--count",
        "2",
        "--retransmit-ms",
        "100",
        "--timeout",
        "2",
    ])
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("0 of 2 APs verified"), "{stdout}");
    assert!(
        stdout.contains("AP-0002: never joined the controller"),
        "{stdout}"
    );
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_until_forever_the_aps_stay_joined_until_shutdown() {
    let lab = Lab::start().await;
    let mut cfg = lab.fleet(2);
    cfg.until = Until::Forever;
    let status = Arc::new(FleetStatus::new(&cfg).expect("status"));
    let shutdown = CancellationToken::new();
    let fleet = tokio::spawn(fleet::run(
        cfg,
        Arc::clone(&status),
        |_: &str, _: &str| {},
        shutdown.clone(),
    ));
    // The live status says when both are verified; the fleet keeps running meanwhile.
    let watch = async {
        while status.verified() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, watch)
        .await
        .expect("both APs verified");
    assert!(!fleet.is_finished());
    let families = status.families();
    assert_eq!(families.len(), 2);
    assert!(
        families
            .iter()
            .all(|f| f.done == 1 && f.size == IMAGE_SIZE && f.received == IMAGE_SIZE),
        "{families:?}"
    );
    assert!(
        status
            .aps()
            .iter()
            .all(|a| a.state() == Some(CapwapState::Run) && a.bytes() == IMAGE_SIZE)
    );
    shutdown.cancel();
    let report = fleet.await.expect("join").expect("fleet");
    assert!(report.all_verified, "{report}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_controller_gets_aps_on_ipv6_sockets() {
    let Ok(lab) = Lab::start_on("[::1]:0".parse().expect("address")).await else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let (report, lines) = run_fleet(lab.fleet(3)).await;
    assert!(report.all_verified, "{report}\n{lines:#?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_stop_it_with_a_summary_and_exit_130() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // A bound socket that never answers: the APs keep trying to join.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    for signal in ["-INT", "-TERM"] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ap-sim"))
            .args(["--controller", &addr, "--count", "1", "--timeout"])
            .arg(DEADLINE.as_secs().to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Running (its first line is out) before the signal.
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a line")
            .expect("read");
        assert_eq!(
            first.as_deref().map(unstamped).as_deref(),
            Some("AP-0001: CAPWAP State: Join")
        );
        let pid = child.id().expect("pid").to_string();
        let killed = tokio::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("kill");
        assert!(killed.success());
        let mut rest = Vec::new();
        while let Some(l) = lines.next_line().await.expect("read") {
            rest.push(l);
        }
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("exits")
            .expect("wait");
        assert_eq!(status.code(), Some(130), "{signal}: {rest:#?}");
        assert!(
            rest.iter().any(|l| l.starts_with("0 of 1 APs verified")),
            "{rest:#?}"
        );
        assert!(
            rest.iter()
                .any(|l| l.starts_with("AP-0001: never joined the controller")),
            "{rest:#?}"
        );
    }
}

/// The benchmark's shape in miniature: 1000 APs of three families against one controller,
/// all verified. Slow in a debug build; run with `--ignored` (ideally `--release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1000 APs: minutes in a debug build"]
async fn a_thousand_aps_all_end_verified() {
    let lab = Lab::start().await;
    let mut cfg = lab.fleet(1000);
    cfg.faults.loss = 0.01;
    // Longer than the controller's retransmissions of the last block (300, 600 ms): a lost
    // answer to it is resent from the AP's cache before the AP reboots, so the controller
    // sees every download succeed.
    cfg.reset_delay = Duration::from_secs(2);
    let (report, _lines) = run_fleet(cfg).await;
    eprintln!("{report}");
    assert!(report.all_verified, "{report}");
    let log = lab.stop().await;
    let success = log
        .iter()
        .filter(|l| l.ends_with("AP Image Download Success"))
        .count();
    assert_eq!(success, 1000);
}

/// An ap-sim line without the AP console's timestamp: `AP-0001: [*07/12/2023
/// 07:41:00.7960] Version does not match.` → `AP-0001: Version does not match.` (and the
/// stamp's shape is checked on the way).
fn unstamped(line: &str) -> String {
    let Some((ap, rest)) = line.split_once(": [*") else {
        return line.to_owned();
    };
    let Some((stamp, text)) = rest.split_once("] ") else {
        return line.to_owned();
    };
    assert_eq!(stamp.len(), "07/12/2023 07:41:00.7960".len(), "{line}");
    format!("{ap}: {text}")
}
