//! An upload that fills the disk gets ERROR 3, and loses nothing that was stored: the old
//! file stays as it was and no temporary file is left behind. Needs root (CI runs as root)
//! to mount a 64 KiB tmpfs as the "disk".

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use airlift_tests::{TftpServer, Tmpfs};

const TFTPD: &str = env!("CARGO_BIN_EXE_tftpd");

#[test]
fn upload_that_fills_the_disk_gets_error_3_and_keeps_the_old_file() {
    let top = tempfile::tempdir().unwrap();
    let disk = top.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let _mount = Tmpfs::mount(&disk, "64k", "0777");
    let target = disk.join("config.bin");
    std::fs::write(&target, b"the old, good configuration").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();

    let server = TftpServer::serve(TFTPD, &["-c", "-u", "root", "-vv"], &disk);
    let port = server.addr().port();

    let big = top.path().join("big.bin");
    std::fs::write(&big, vec![0x5a; 200_000]).unwrap();
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "30",
            "tftp",
            "-m",
            "binary",
            "127.0.0.1",
            &port.to_string(),
            "-c",
            "put",
        ])
        .arg(&big)
        .arg("config.bin")
        .output()
        .expect("tftp missing: apt-get install tftp-hpa");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("Error code 3: Disk full or allocation exceeded"),
        "client said: {said:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"the old, good configuration"
    );
    let names: Vec<_> = std::fs::read_dir(&disk)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.bin"], "no temporary file may remain");
}
