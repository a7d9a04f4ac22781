//! The controller's image set: each family fetched once through relay however many APs ask
//! at once, checked by the release's manifest or by its own tar against version.info, MD5
//! computed once, failures remembered until the retry interval, the controller's log lines.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bundle_tool::synth::write_image;
use bundle_tool::version::ApVersion;
use controller::events::Event;
use controller::images::{EventSink, Images, read_release};
use md5::{Digest, Md5};
use relay::store::Store;
use relay::{ErrorKind, FetchOptions, Source};

const FAMILIES: [(&str, u64); 3] = [("ap1g7", 307_200), ("ap1g8", 204_800), ("ap3g3", 102_400)];

fn make_bundle(dir: &std::path::Path, version: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let v: ApVersion = version.parse().expect("version");
    std::fs::write(dir.join("version.info"), format!("{v}\n")).expect("version.info");
    for (family, size) in FAMILIES {
        let mut f = std::fs::File::create(dir.join(family)).expect("create");
        write_image(&mut f, family, v, size).expect("image");
    }
}

fn sink() -> (EventSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    let sink: EventSink = Arc::new(move |e: Event| {
        l.lock().expect("lock").push(e.message());
    });
    (sink, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_is_fetched_once_for_any_number_of_aps() {
    let served = tempfile::tempdir().expect("tempdir");
    let folder_path = served.path().join("EWC_17_9_4a");
    make_bundle(&folder_path, "17.9.4.27");
    let folder = Source::parse_folder(&format!("file://{}", folder_path.display())).expect("url");
    let opts = FetchOptions::default();
    let release = read_release(&folder, &opts).await.expect("release");
    assert_eq!(release.version.to_string(), "17.9.4.27");
    assert!(release.manifest.is_none());
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let (log, lines) = sink();
    let images = Arc::new(Images::new(
        folder.clone(),
        opts,
        Arc::clone(&store),
        release,
        Duration::from_secs(60),
        log,
    ));
    // 60 "APs" of three families ask at once.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let images = Arc::clone(&images);
        let family = FAMILIES[i % 3].0;
        tasks.push(tokio::spawn(async move { images.get(family).await }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("join").expect("image"));
    }
    assert_eq!(store.fetches_started(), 3, "one fetch per family");
    for img in &got {
        let want = std::fs::read(folder_path.join(&img.family)).expect("read");
        assert!(img.bytes[..] == want[..], "{}", img.family);
        assert_eq!(img.md5, <[u8; 16]>::from(Md5::digest(&want)));
    }
    // The same bytes are shared, not copied per AP.
    let ap1g7: Vec<_> = got.iter().filter(|i| i.family == "ap1g7").collect();
    assert!(
        ap1g7
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].bytes, &w[1].bytes))
    );
    let lines = lines.lock().expect("lock").clone();
    let started = lines
        .iter()
        .filter(|l| l.starts_with("%INSTALL-5-INSTALL_START_INFO:"))
        .count();
    let completed: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("%INSTALL-5-INSTALL_COMPLETED_INFO:"))
        .collect();
    assert_eq!((started, completed.len()), (3, 3), "{lines:#?}");
    assert!(
        completed.iter().any(|l| l.ends_with(&format!(
            "Completed install add file://{}/ap1g8",
            folder_path.display()
        ))),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_family_fails_with_the_controllers_line_until_the_retry() {
    let served = tempfile::tempdir().expect("tempdir");
    let folder_path = served.path().join("EWC");
    make_bundle(&folder_path, "17.9.4.27");
    let folder = Source::parse_folder(&format!("file://{}", folder_path.display())).expect("url");
    let opts = FetchOptions::default();
    let release = read_release(&folder, &opts).await.expect("release");
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path(), 1 << 30).expect("store");
    let (log, lines) = sink();
    let images = Images::new(
        folder,
        opts,
        Arc::clone(&store),
        release,
        Duration::from_secs(3600),
        log,
    );
    let Err(e) = images.get("ap1g6").await else {
        panic!("a missing family was served")
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
    // Asked again before the retry interval: the same error, no second fetch.
    let Err(again) = images.get("ap1g6").await else {
        panic!("served the second time")
    };
    assert_eq!(again, e);
    assert_eq!(store.fetches_started(), 1);
    let lines = lines.lock().expect("lock").clone();
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("%INSTALL-3-OPERATION_ERROR_MESSAGE:"))
        .collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(
        *failed[0],
        format!(
            "%INSTALL-3-OPERATION_ERROR_MESSAGE: Chassis 1 R0/0: install_engine: Failed to install_add package file://{p}/ap1g6, Error: Failed to download file file://{p}/ap1g6: No such file or directory",
            p = folder_path.display()
        )
    );
    // A wrong image under a family's name is refused by its own tar check.
    std::fs::write(folder_path.join("ap1g5"), b"<html>404</html>").expect("write");
    let Err(e) = images.get("ap1g5").await else {
        panic!("a page was served as an image")
    };
    assert_eq!(e.kind, ErrorKind::Verification);
}
