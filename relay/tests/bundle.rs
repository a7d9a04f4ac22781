//! `relay bundle` and `relay check` against our tftpd and sftpd (in-process, loopback): a
//! bundle folder fetched, verified by bundle-tool and put in place in one step; images
//! checked by their own tar and info members without a manifest, by the manifest with one;
//! bad images, missing families and existing targets refused with nothing left behind; the
//! pre-flight report step by step; the CLI's exit statuses and lines.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bundle_tool::synth::write_image;
use bundle_tool::version::ApVersion;
use common::names;
use relay::bundle::{BundleError, BundleOptions, bundle};
use relay::check::{Status, check};
use relay::sftp::{Credential, HostKeyCheck, SftpOptions};
use relay::tftp::TftpOptions;
use relay::{ErrorKind, FetchOptions, Source};

const VERSION: &str = "17.9.4.27";

/// A bundle folder as Cisco's zip unpacks: version files, readme, one tar image per family.
fn make_bundle(dir: &Path, version: &str, families: &[(&str, u64)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let v: ApVersion = version.parse().expect("version");
    std::fs::write(dir.join("version.info"), format!("{v}\n")).expect("version.info");
    std::fs::write(dir.join("controller_version.info"), "17.9.4a\n").expect("controller");
    std::fs::write(
        dir.join("readme.txt"),
        "synthetic bundle for relay's tests\n",
    )
    .expect("rd");
    for (family, size) in families {
        let mut f = std::fs::File::create(dir.join(family)).expect("image");
        write_image(&mut f, family, v, *size).expect("write image");
    }
}

fn tftp_folder(port: u16, path: &str) -> Source {
    Source::parse_folder(&format!("tftp://127.0.0.1:{port}/{path}")).expect("folder url")
}

fn quick() -> FetchOptions {
    FetchOptions {
        tftp: TftpOptions {
            deadline: Duration::from_secs(60),
            ..TftpOptions::default()
        },
        sftp: None,
    }
}

const FAMILIES: [(&str, u64); 3] = [
    ("ap1g7", 3_072_000),
    ("ap1g8", 2_048_000),
    ("ap3g3", 1_024_000),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_over_tftp_is_verified_and_put_in_place_then_refetched_by_its_manifest() {
    let served = tempfile::tempdir().expect("tempdir");
    make_bundle(&served.path().join("EWC_17_9_4a"), VERSION, &FAMILIES);
    let server = common::start(served.path());
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("EWC");
    let mut events = 0u64;
    let done = bundle(
        &tftp_folder(server.addr.port(), "EWC_17_9_4a"),
        &target,
        &quick(),
        &BundleOptions::default(),
        &mut |_, _| events += 1,
    )
    .await
    .expect("bundle");
    assert!(events > 0, "progress events");
    assert!(!done.had_manifest);
    assert_eq!(
        done.fetched,
        FAMILIES
            .iter()
            .map(|(n, s)| ((*n).to_owned(), *s))
            .collect::<Vec<_>>()
    );
    assert_eq!(done.absent, ["ap1g4", "ap1g5", "ap1g6", "ap1g6a"]);
    assert_eq!(done.report.version.as_deref(), Some(VERSION));
    assert!(done.report.ok);
    for name in ["ap1g7", "ap1g8", "ap3g3", "version.info", "readme.txt"] {
        assert_eq!(
            airlift_tests::sha256_file(&target.join(name)),
            airlift_tests::sha256_file(&served.path().join("EWC_17_9_4a").join(name)),
            "{name}"
        );
    }
    // bundle-tool's manifest is written next to the files; nothing else is left beside it.
    assert!(names(&target).contains(&"manifest.json".to_owned()));
    assert!(names(&target).contains(&"SHA256SUMS".to_owned()));
    assert_eq!(names(out.path()), ["EWC"]);

    // The staged folder, served in turn, has a manifest: the images are checked by it.
    let staged = tempfile::tempdir().expect("tempdir");
    std::fs::rename(&target, staged.path().join("EWC")).expect("move");
    let server2 = common::start(staged.path());
    let again = out.path().join("EWC2");
    let done = bundle(
        &tftp_folder(server2.addr.port(), "EWC"),
        &again,
        &quick(),
        &BundleOptions::default(),
        &mut |_, _| {},
    )
    .await
    .expect("bundle by manifest");
    assert!(done.had_manifest);
    // Only what the manifest lists was asked for: no request for absent families.
    assert!(done.absent.is_empty());
    let asked: Vec<String> = server2
        .log
        .lines()
        .into_iter()
        .filter_map(|(_, l)| {
            l.strip_prefix("RRQ from 127.0.0.1 filename EWC/")
                .map(|r| r.split(' ').next().unwrap_or("").to_owned())
        })
        .collect();
    assert!(!asked.iter().any(|n| n == "ap1g4"), "{asked:?}");
    assert!(asked.iter().any(|n| n == "manifest.json"), "{asked:?}");

    // One byte changed on the server: the manifest's hash refuses it, nothing is created.
    let img = staged.path().join("EWC/ap1g8");
    let mut bytes = std::fs::read(&img).expect("read");
    bytes[100_000] ^= 1;
    std::fs::write(&img, bytes).expect("write");
    let bad = out.path().join("EWC3");
    let Err(e) = bundle(
        &tftp_folder(server2.addr.port(), "EWC"),
        &bad,
        &quick(),
        &BundleOptions::default(),
        &mut |_, _| {},
    )
    .await
    else {
        panic!("a corrupt image was accepted")
    };
    let BundleError::Fetch(f) = &e else {
        panic!("{e}")
    };
    assert_eq!(f.kind, ErrorKind::Verification);
    assert!(
        e.to_string().starts_with(&format!(
            "Failed to download file tftp://127.0.0.1:{}/EWC/ap1g8: Verification failed (SHA-256 ",
            server2.addr.port()
        )),
        "{e}"
    );
    assert_eq!(names(out.path()), ["EWC2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_manifest_images_must_be_whole_tars_of_the_right_family_and_version() {
    let served = tempfile::tempdir().expect("tempdir");
    let server = common::start(served.path());
    let port = server.addr.port();
    let out = tempfile::tempdir().expect("tempdir");
    let run = |folder: &'static str, opts: BundleOptions| {
        let target = out.path().join(folder);
        async move {
            bundle(
                &tftp_folder(port, folder),
                &target,
                &quick(),
                &opts,
                &mut |_, _| {},
            )
            .await
        }
    };

    // Cut short by one tar record: structurally incomplete.
    make_bundle(&served.path().join("CUT"), VERSION, &FAMILIES);
    let f = served.path().join("CUT/ap1g8");
    let len = std::fs::metadata(&f).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .and_then(|h| h.set_len(len - 10_240))
        .expect("truncate");
    let Err(e) = run("CUT", BundleOptions::default()).await else {
        panic!("a truncated image was accepted")
    };
    assert!(
        e.to_string()
            .contains("CUT/ap1g8: Verification failed (not a well-formed tar"),
        "{e}"
    );

    // Images of another release than version.info says.
    make_bundle(&served.path().join("MIXED"), VERSION, &FAMILIES);
    std::fs::write(served.path().join("MIXED/version.info"), "17.9.5.47\n").expect("write");
    let Err(e) = run("MIXED", BundleOptions::default()).await else {
        panic!("images of another version were accepted")
    };
    assert!(
        e.to_string().contains("but version.info says 17.9.5.47"),
        "{e}"
    );

    // An image under another family's name.
    make_bundle(&served.path().join("SWAP"), VERSION, &FAMILIES);
    std::fs::copy(
        served.path().join("SWAP/ap1g7"),
        served.path().join("SWAP/ap1g8"),
    )
    .expect("copy");
    let Err(e) = run("SWAP", BundleOptions::default()).await else {
        panic!("a misnamed image was accepted")
    };
    assert!(
        e.to_string().contains("SWAP/ap1g8: Verification failed"),
        "{e}"
    );
    assert!(e.to_string().contains("image_family"), "{e}");

    // No version.info: the controller's line for it.
    std::fs::create_dir(served.path().join("EMPTY")).expect("mkdir");
    let Err(e) = run("EMPTY", BundleOptions::default()).await else {
        panic!("a folder without version.info was accepted")
    };
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file tftp://127.0.0.1:{port}/EMPTY/version.info: No such file or directory"
        )
    );

    // A family asked for and absent: the controller's line for it; also a bad name.
    make_bundle(&served.path().join("OK"), VERSION, &FAMILIES);
    let ask = |f: &[&str]| BundleOptions {
        families: Some(f.iter().map(|s| (*s).to_owned()).collect()),
        force: false,
    };
    let Err(e) = run("OK", ask(&["ap1g7", "ap1g6"])).await else {
        panic!("a missing family was accepted")
    };
    assert!(matches!(e, BundleError::Missing(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file tftp://127.0.0.1:{port}/OK/ap1g6: No such file or directory"
        )
    );
    let Err(e) = run("OK", ask(&["../etc"])).await else {
        panic!("a bad family name was accepted")
    };
    assert!(matches!(e, BundleError::BadFamily(_)), "{e:?}");

    // Nothing of any failed attempt is left: no target, no staging folder.
    assert!(names(out.path()).is_empty(), "{:?}", names(out.path()));

    // Only the families asked for; then an existing target is refused unless forced.
    let done = run("OK", ask(&["ap3g3"])).await.expect("one family");
    assert_eq!(done.fetched, [("ap3g3".to_owned(), 1_024_000)]);
    assert!(!out.path().join("OK/ap1g7").exists());
    let Err(e) = run("OK", ask(&["ap1g7"])).await else {
        panic!("an existing folder was replaced without force")
    };
    assert!(e.to_string().contains("exists"), "{e}");
    let done = run(
        "OK",
        BundleOptions {
            force: true,
            ..ask(&["ap1g7"])
        },
    )
    .await
    .expect("forced");
    assert!(done.replaced);
    assert!(out.path().join("OK/ap1g7").exists());
    assert!(
        !out.path().join("OK/ap3g3").exists(),
        "the old folder is gone"
    );
    assert_eq!(names(out.path()), ["OK"]);
}

fn sftp_opts(fingerprint: &str, password: &str) -> FetchOptions {
    FetchOptions {
        tftp: TftpOptions::default(),
        sftp: Some(SftpOptions {
            credential: Credential::Password(password.to_owned()),
            host_key: HostKeyCheck::Fingerprint(fingerprint.to_owned()),
            deadline: Duration::from_secs(60),
            in_flight: 64,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_and_check_over_sftp() {
    let served = tempfile::tempdir().expect("tempdir");
    airlift_tests::chmod(served.path(), 0o755);
    let folder = served.path().join("Documents/sftp_files/EWC_17_9_4a");
    make_bundle(&folder, VERSION, &FAMILIES);
    let server = common::sftpd::start().await;
    let url = |path: &Path| {
        Source::parse_folder(&format!(
            "sftp://ap@127.0.0.1:{}{}",
            server.addr.port(),
            path.display()
        ))
        .expect("url")
    };
    let good = sftp_opts(&server.fingerprint, common::sftpd::PASSWORD);

    let report = check(&url(&folder), &good, None).await;
    assert!(report.ok, "{report}");
    assert_eq!(report.version.as_deref(), Some(VERSION));
    let present: Vec<(&str, Option<u64>)> = report
        .families
        .iter()
        .filter(|f| f.present)
        .map(|f| (f.family.as_str(), f.size))
        .collect();
    assert_eq!(
        present,
        [
            ("ap1g7", Some(3_072_000)),
            ("ap1g8", Some(2_048_000)),
            ("ap3g3", Some(1_024_000))
        ]
    );
    assert!(
        report.to_string().contains("sftp://*****@127.0.0.1:"),
        "{report}"
    );
    assert!(
        !report.to_string().contains("ap@"),
        "the user leaked: {report}"
    );

    let out = tempfile::tempdir().expect("tempdir");
    let done = bundle(
        &url(&folder),
        &out.path().join("EWC"),
        &good,
        &BundleOptions::default(),
        &mut |_, _| {},
    )
    .await
    .expect("bundle over sftp");
    assert_eq!(done.fetched.len(), 3);
    assert_eq!(
        airlift_tests::sha256_file(&out.path().join("EWC/ap1g7")),
        airlift_tests::sha256_file(&folder.join("ap1g7"))
    );

    // Wrong password: the login step fails, later steps are skipped.
    let report = check(
        &url(&folder),
        &sftp_opts(&server.fingerprint, "wrong"),
        None,
    )
    .await;
    assert!(!report.ok);
    let by: Vec<(&str, Status)> = report.steps.iter().map(|s| (s.step, s.status)).collect();
    assert_eq!(
        by,
        [
            ("server", Status::Ok),
            ("login", Status::Fail),
            ("folder", Status::Skipped),
            ("version.info", Status::Skipped),
            ("manifest.json", Status::Skipped)
        ]
    );
    assert!(
        report.steps[1].detail.ends_with(": Authentication failed"),
        "{report}"
    );
    assert!(report.families.iter().all(|f| !f.present && !f.checked));
    assert!(
        report.to_string().contains("ap1g7          not checked"),
        "{report}"
    );

    // Wrong host key: the server step fails.
    let report = check(
        &url(&folder),
        &sftp_opts("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x"),
        None,
    )
    .await;
    assert_eq!(report.steps[0].status, Status::Fail, "{report}");
    assert_eq!(report.steps[0].kind, Some("host-key-mismatch"));

    // Wrong path: the folder step fails with the controller's line.
    let wrong = served.path().join("Documents/Wrong-Path");
    let report = check(&url(&wrong), &good, None).await;
    let folder_step = &report.steps[2];
    assert_eq!(
        (folder_step.step, folder_step.status),
        ("folder", Status::Fail)
    );
    assert_eq!(
        folder_step.detail,
        format!(
            "Failed to download file sftp://*****@127.0.0.1:{}{}: No such file or directory",
            server.addr.port(),
            wrong.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_over_tftp_names_the_first_problem() {
    let served = tempfile::tempdir().expect("tempdir");
    make_bundle(&served.path().join("EWC"), VERSION, &FAMILIES[..1]);
    let server = common::start(served.path());
    let port = server.addr.port();
    let opts = FetchOptions {
        tftp: TftpOptions {
            deadline: Duration::from_secs(2),
            retransmit: Duration::from_millis(500),
            ..TftpOptions::default()
        },
        sftp: None,
    };

    let report = check(&tftp_folder(port, "EWC"), &opts, None).await;
    assert!(report.ok, "{report}");
    let ap1g7 = report
        .families
        .iter()
        .find(|f| f.family == "ap1g7")
        .expect("listed");
    // The size comes from the OACK's tsize; the probe downloads nothing.
    assert_eq!((ap1g7.present, ap1g7.size), (true, Some(3_072_000)));
    assert!(
        ap1g7.models.contains(&"9115".to_owned()),
        "{:?}",
        ap1g7.models
    );
    assert!(
        report
            .to_string()
            .ends_with("ok: 1 family (ap1g7), version 17.9.4.27"),
        "{report}"
    );
    assert_eq!(
        server.count_log("RRQ from 127.0.0.1 filename EWC/ap1g7"),
        1,
        "one request for ap1g7"
    );

    // A family that must be there and is not.
    let want = ["ap1g7".to_owned(), "ap1g6".to_owned()];
    let report = check(&tftp_folder(port, "EWC"), &opts, Some(&want)).await;
    assert!(!report.ok);
    assert!(
        report
            .to_string()
            .contains("ap1g6          MISSING (asked for)"),
        "{report}"
    );

    // Wrong path: the folder fails, named by the missing version.info.
    let report = check(&tftp_folder(port, "Wrong-Path"), &opts, None).await;
    assert!(!report.ok);
    let first_fail = report
        .steps
        .iter()
        .find(|s| s.status == Status::Fail)
        .expect("a failure");
    assert_eq!(first_fail.step, "folder");

    // Nobody listening: the server step fails at the deadline, the rest is skipped and no
    // family is looked for (each would wait for the deadline again).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead = silent.local_addr().expect("addr").port();
    let report = check(&tftp_folder(dead, "EWC"), &opts, None).await;
    assert_eq!(report.steps[0].status, Status::Fail, "{report}");
    assert_eq!(report.steps[0].kind, Some("timed-out"));
    assert!(
        report.steps[0]
            .detail
            .ends_with("Timed out (deadline of 2 s reached)"),
        "{report}"
    );
    assert!(report.families.iter().all(|f| !f.checked), "{report}");
    assert!(
        report.steps[1..]
            .iter()
            .all(|s| s.status == Status::Skipped)
    );
    drop(silent);
}

/// Runs the `relay` binary with a deadline, off the runtime's threads.
async fn relay_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        airlift_tests::run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_relay")).args(&args),
            Duration::from_secs(120),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exits_0_only_for_a_verified_bundle_and_a_ready_folder() {
    let served = tempfile::tempdir().expect("tempdir");
    make_bundle(&served.path().join("EWC"), VERSION, &FAMILIES[2..]);
    let server = common::start(served.path());
    let port = server.addr.port();
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("EWC").to_string_lossy().into_owned();

    let ok = relay_cli(vec![
        "bundle".into(),
        format!("tftp://127.0.0.1:{port}/EWC"),
        "-o".into(),
        target.clone(),
    ])
    .await;
    assert!(ok.status.success(), "{}", airlift_tests::describe(&ok));
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(
        err.contains(&format!(
            "tftp://127.0.0.1:{port}/EWC/ap3g3: 1024000 bytes, verified"
        )),
        "{err}"
    );
    // bundle-tool's verify agrees with what relay put in place.
    let verified = bundle_tool::manifest::verify(
        Path::new(&target),
        &std::sync::atomic::AtomicBool::new(false),
        &indicatif::ProgressBar::hidden(),
        1,
    )
    .expect("scan")
    .expect("manifest");
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.checked, 4, "version files, readme, ap3g3");

    let again = relay_cli(vec![
        "bundle".into(),
        format!("tftp://127.0.0.1:{port}/EWC"),
        "-o".into(),
        target.clone(),
    ])
    .await;
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        airlift_tests::describe(&again)
    );

    let missing = relay_cli(vec![
        "bundle".into(),
        format!("tftp://127.0.0.1:{port}/Wrong-Path"),
        "-o".into(),
        format!("{target}-2"),
    ])
    .await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim_end(),
        format!(
            "Failed to download file tftp://127.0.0.1:{port}/Wrong-Path/version.info: No such file or directory"
        )
    );

    let ready = relay_cli(vec!["check".into(), format!("tftp://127.0.0.1:{port}/EWC")]).await;
    assert!(
        ready.status.success(),
        "{}",
        airlift_tests::describe(&ready)
    );
    let json = relay_cli(vec![
        "check".into(),
        "--json".into(),
        "--families".into(),
        "ap3g3,ap1g8".into(),
        format!("tftp://127.0.0.1:{port}/EWC"),
    ])
    .await;
    assert_eq!(
        json.status.code(),
        Some(1),
        "{}",
        airlift_tests::describe(&json)
    );
    let doc = String::from_utf8_lossy(&json.stdout);
    assert!(doc.contains("\"ok\": false"), "{doc}");
    assert!(doc.contains("\"family\": \"ap1g8\""), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_folder_is_checked_and_bundled_like_a_server() {
    // file:// — a bundle unpacked on a USB stick or an NFS mount, say.
    let served = tempfile::tempdir().expect("tempdir");
    let folder = served.path().join("EWC_17_9_4a");
    make_bundle(&folder, VERSION, &FAMILIES[..2]);
    let url = Source::parse_folder(&format!("file://{}", folder.display())).expect("url");
    let report = check(&url, &quick(), None).await;
    assert!(report.ok, "{report}");
    let sizes: Vec<(&str, Option<u64>)> = report
        .families
        .iter()
        .filter(|f| f.present)
        .map(|f| (f.family.as_str(), f.size))
        .collect();
    assert_eq!(
        sizes,
        [("ap1g7", Some(3_072_000)), ("ap1g8", Some(2_048_000))]
    );
    let out = tempfile::tempdir().expect("tempdir");
    let done = bundle(
        &url,
        &out.path().join("EWC"),
        &quick(),
        &BundleOptions::default(),
        &mut |_, _| {},
    )
    .await
    .expect("bundle");
    assert_eq!(done.fetched.len(), 2);
    assert_eq!(
        airlift_tests::sha256_file(&out.path().join("EWC/ap1g8")),
        airlift_tests::sha256_file(&folder.join("ap1g8"))
    );
    // A file, not a folder.
    let not_dir =
        Source::parse_folder(&format!("file://{}", folder.join("ap1g7").display())).expect("url");
    let report = check(&not_dir, &quick(), None).await;
    assert_eq!(report.steps[2].status, Status::Fail, "{report}");
    assert!(
        report.steps[2].detail.ends_with("is a file, not a folder"),
        "{report}"
    );
}
