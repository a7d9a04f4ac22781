//! The `bundle-tool` binary as users run it: synth → validate → stage → verify, diff, which,
//! and golden `--json` documents (regenerate with `UPDATE_GOLDEN=1 cargo test -p bundle-tool`).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bundle-tool"))
}

/// Runs bundle-tool in `dir` with `args`.
fn run(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// A small synthetic bundle `name` in `dir`.
fn synth(dir: &Path, name: &str, version: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "synth",
        "--version",
        version,
        "--scale",
        "0.0005",
        "--out",
        name,
    ];
    args.extend_from_slice(extra);
    let o = run(dir, &args);
    assert_eq!(code(&o), 0, "synth: {}", String::from_utf8_lossy(&o.stderr));
    dir.join(name)
}

/// Compares `actual` with `tests/golden/NAME`, or rewrites it with UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual, want,
        "{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"
    );
}

#[test]
fn synth_is_deterministic_and_validates() {
    let d = tempfile::tempdir().unwrap();
    let a = synth(d.path(), "a.zip", "17.9.4.27", &[]);
    let b = synth(d.path(), "b.zip", "17.9.4.27", &[]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same options, same bytes"
    );
    let o = run(d.path(), &["validate", "a.zip"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("valid: 7 AP image families (ap1g4 ap1g5 ap1g6 ap1g6a ap1g7 ap1g8 ap3g3)"),
        "{text}"
    );
    assert!(text.contains("AP version 17.9.4.27"), "{text}");
    // The readme says what it is.
    let z = zip::ZipArchive::new(std::fs::File::open(&a).unwrap());
    let mut z = z.unwrap();
    let mut readme = String::new();
    std::io::Read::read_to_string(&mut z.by_name("readme.txt").unwrap(), &mut readme).unwrap();
    assert!(
        readme.starts_with("SYNTHETIC BUNDLE - NOT A CISCO IMAGE."),
        "{readme}"
    );
}

#[test]
fn full_scale_sizes_are_the_documents() {
    // At scale 1 every AP image has exactly the size of the source document's listing.
    for (family, size) in bundle_tool::synth::REAL_SIZES.iter().take(7) {
        assert_eq!(
            bundle_tool::synth::image_size(family, 1.0),
            *size,
            "{family}"
        );
    }
}

#[test]
fn validate_json_is_golden() {
    let d = tempfile::tempdir().unwrap();
    synth(
        d.path(),
        "lab.zip",
        "17.9.4.27",
        &["--families", "ap1g7,ap1g8,ap3g3"],
    );
    let o = run(d.path(), &["--json", "validate", "lab.zip"]);
    assert_eq!(code(&o), 0);
    golden("validate-lab.json", &stdout(&o));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["families"],
        serde_json::json!(["ap1g7", "ap1g8", "ap3g3"])
    );
}

#[test]
fn invalid_bundle_json_is_golden() {
    let d = tempfile::tempdir().unwrap();
    // A bundle with an image whose info says another family, and no version.info.
    let path = d.path().join("bad.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::from_date_and_time(2024, 1, 31, 12, 0, 0).unwrap());
    let mut image = Vec::new();
    bundle_tool::synth::write_image(&mut image, "ap1g7", "17.9.4.27".parse().unwrap(), 20480)
        .unwrap();
    zip.start_file("ap1g8", opts).unwrap();
    std::io::Write::write_all(&mut zip, &image).unwrap();
    zip.start_file("notes.doc", opts).unwrap();
    std::io::Write::write_all(&mut zip, b"hello").unwrap();
    zip.finish().unwrap();
    let o = run(d.path(), &["--json", "validate", "bad.zip"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    golden("validate-bad.json", &stdout(&o));
    let v = json(&o);
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"info-family-mismatch"), "{codes:?}");
    assert!(codes.contains(&"missing-version"), "{codes:?}");
    assert!(codes.contains(&"unexpected-file"), "{codes:?}");
}

/// Every path under `root` with its type, size or link target: what "untouched" means.
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if m.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(e.path()).unwrap().display()
                ));
            } else if m.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(e.path());
            } else {
                out.push(format!(
                    "{rel} {} {:o}",
                    m.len(),
                    m.permissions().mode() & 0o777
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn stage_verify_and_replace() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("srv");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("keep.txt"), b"mine").unwrap();
    synth(d.path(), "old.zip", "17.9.4.27", &[]);
    synth(
        d.path(),
        "new.zip",
        "17.12.4.213",
        &["--families", "ap1g7,ap1g8"],
    );

    let o = run(
        d.path(),
        &[
            "stage",
            "old.zip",
            "srv",
            "--name",
            "EWC/17_9_4a",
            "--current",
        ],
    );
    assert_eq!(
        code(&o),
        0,
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let staged = root.join("EWC/17_9_4a");
    for f in [
        "ap1g4",
        "ap1g8",
        "ap3g3",
        "version.info",
        "manifest.json",
        "SHA256SUMS",
        "MD5SUMS",
    ] {
        let m = std::fs::metadata(staged.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(
            m.permissions().mode() & 0o777,
            0o644,
            "{f} must be world-readable for tftpd"
        );
    }
    assert_eq!(
        std::fs::read_link(root.join("EWC/current")).unwrap(),
        Path::new("17_9_4a")
    );
    assert!(
        !snapshot(&root)
            .iter()
            .any(|p| p.contains(".bundle-tool-staging"))
    );
    // coreutils can check what we wrote.
    for (tool, file) in [("sha256sum", "SHA256SUMS"), ("md5sum", "MD5SUMS")] {
        let c = Command::new(tool)
            .arg("-c")
            .arg("--quiet")
            .arg(file)
            .current_dir(&staged)
            .status()
            .unwrap();
        assert!(c.success(), "{tool} -c {file}");
    }
    // The manifest's MD5 is the file's (CAPWAP Image Information carries it).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(staged.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["version"], "17.9.4.27");
    assert_eq!(manifest["files"].as_array().unwrap().len(), 11);

    let o = run(d.path(), &["verify", "srv/EWC/17_9_4a"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("ok: 11 files checked, 0 differ, 0 missing, 0 extra"),
        "{}",
        stdout(&o)
    );

    // Staging the same name again is refused and changes nothing.
    let before = snapshot(&root);
    let o = run(
        d.path(),
        &["stage", "new.zip", "srv", "--name", "EWC/17_9_4a"],
    );
    assert_eq!(code(&o), 2, "an existing name is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists (use --force to replace it)"));
    assert_eq!(snapshot(&root), before);

    // --force swaps it in one step; the old files are gone, the new ones verify.
    let o = run(
        d.path(),
        &[
            "--json",
            "stage",
            "new.zip",
            "srv",
            "--name",
            "EWC/17_9_4a",
            "--force",
            "--current",
        ],
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["replaced"], true);
    assert!(!staged.join("ap1g4").exists());
    assert_eq!(
        std::fs::read_to_string(staged.join("version.info")).unwrap(),
        "17.12.4.213\n"
    );
    assert_eq!(std::fs::read(root.join("keep.txt")).unwrap(), b"mine");
    assert!(
        !snapshot(&root)
            .iter()
            .any(|p| p.contains(".bundle-tool-staging"))
    );

    // Default name: the version.
    let o = run(d.path(), &["stage", "old.zip", "srv"]);
    assert_eq!(code(&o), 0);
    assert!(root.join("17.9.4.27/ap1g8").is_file());

    // verify finds every kind of difference.
    std::fs::write(staged.join("ap1g8"), b"tampered").unwrap();
    std::fs::remove_file(staged.join("ap1g7")).unwrap();
    std::fs::write(staged.join("stray.bin"), b"x").unwrap();
    let o = run(d.path(), &["--json", "verify", "srv/EWC/17_9_4a"]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["missing"], serde_json::json!(["ap1g7"]));
    assert_eq!(v["extra"], serde_json::json!(["stray.bin"]));
    let fields: Vec<(&str, &str)> = v["differs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [("ap1g8", "size"), ("ap1g8", "sha256"), ("ap1g8", "md5")]
    );
}

#[test]
fn a_folder_validates_like_its_zip() {
    let d = tempfile::tempdir().unwrap();
    synth(d.path(), "lab.zip", "17.9.4.27", &[]);
    let root = d.path().join("srv");
    std::fs::create_dir(&root).unwrap();
    assert_eq!(
        code(&run(d.path(), &["stage", "lab.zip", "srv", "--name", "x"])),
        0
    );
    let o = run(d.path(), &["--json", "validate", "srv/x"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v = json(&o);
    assert_eq!(v["kind"], "folder");
    assert_eq!(
        v["files"].as_array().unwrap().len(),
        11,
        "manifest files are not bundle files"
    );
    // And `manifest` rewrites the same manifest.
    let before = std::fs::read(root.join("x/manifest.json")).unwrap();
    assert_eq!(code(&run(d.path(), &["manifest", "srv/x"])), 0);
    assert_eq!(std::fs::read(root.join("x/manifest.json")).unwrap(), before);
}

#[test]
fn diff_reports_families_and_versions() {
    let d = tempfile::tempdir().unwrap();
    synth(
        d.path(),
        "a.zip",
        "17.9.4.27",
        &["--families", "ap1g4,ap1g7,ap1g8"],
    );
    synth(
        d.path(),
        "b.zip",
        "17.12.4.213",
        &["--families", "ap1g7,ap1g8,ap3g3"],
    );
    let o = run(d.path(), &["--json", "diff", "a.zip", "b.zip"]);
    assert_eq!(code(&o), 0);
    golden("diff.json", &stdout(&o));
    let v = json(&o);
    assert_eq!(v["diff"]["families"]["added"], serde_json::json!(["ap3g3"]));
    assert_eq!(
        v["diff"]["families"]["removed"],
        serde_json::json!(["ap1g4"])
    );
    // The version is inside every image's info, so both kept images changed.
    let changed: Vec<&str> = v["diff"]["families"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["ap1g7", "ap1g8"]);
    assert_eq!(v["diff"]["version"]["changed"], true);
    let text = stdout(&run(d.path(), &["diff", "a.zip", "a.zip"]));
    assert!(
        text.contains("identical: families 0 added, 0 removed, 0 changed, 3 unchanged"),
        "{text}"
    );
}

#[test]
fn which_answers_models() {
    let d = tempfile::tempdir().unwrap();
    let o = run(d.path(), &["which", "C9105AXI-E"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "ap1g8\n"));
    let o = run(d.path(), &["--json", "which", "AIR-AP1832I-B-K9"]);
    golden("which-1832.json", &stdout(&o));
    assert_eq!(json(&o)["family"], "ap1g4");
    let o = run(d.path(), &["which", "AIR-CAP3702I-E-K9"]);
    assert_eq!(
        code(&o),
        1,
        "a Wave-1 AP has no family in these bundles: {}",
        stdout(&o)
    );
    synth(d.path(), "lab.zip", "17.9.4.27", &["--families", "ap1g7"]);
    let o = run(d.path(), &["which", "C9120AXE-A", "--bundle", "lab.zip"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), "ap1g7\nlab.zip has ap1g7\n");
    let o = run(d.path(), &["which", "C9105AXI-E", "--bundle", "lab.zip"]);
    assert_eq!(code(&o), 1);
    assert_eq!(stdout(&o), "ap1g8\nlab.zip does NOT have ap1g8\n");
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(code(&run(d.path(), &["validate"])), 2);
    assert_eq!(
        code(&run(
            d.path(),
            &["synth", "--version", "17.9.4", "--out", "x.zip"]
        )),
        2
    );
    assert_eq!(code(&run(d.path(), &["validate", "no-such.zip"])), 2);
    let o = run(d.path(), &["stage", "no-such.zip", "."]);
    assert_eq!(code(&o), 2);
    let o = run(d.path(), &["stage", "x.zip", ".", "--name", "../up"]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn progress_only_on_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    synth(d.path(), "p.zip", "17.9.4.27", &[]);
    // script(1) runs the command on a pseudo-terminal: the bar is drawn on it (stderr).
    let cmd = format!(
        "{} validate p.zip >/dev/null",
        env!("CARGO_BIN_EXE_bundle-tool")
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "script: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(
        tty.contains("checking ["),
        "no progress bar on a terminal: {tty:?}"
    );
    // Not a terminal: nothing on stderr.
    let o = run(d.path(), &["validate", "p.zip"]);
    assert_eq!(code(&o), 0);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_bare_ver_member_is_compared_with_version_info() {
    let d = tempfile::tempdir().unwrap();
    let build = |ver: &str| -> serde_json::Value {
        let mut image = Vec::new();
        let mut tar = bundle_tool::tar::TarBuilder::new(&mut image);
        let info = "image_family: ap1g8\n";
        tar.append("info", info.len() as u64, &mut info.as_bytes())
            .unwrap();
        tar.append("ver", ver.len() as u64, &mut ver.as_bytes())
            .unwrap();
        tar.finish().unwrap();
        let path = d.path().join("v.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, bytes) in [
            ("version.info", b"17.9.4.27\n".as_slice()),
            ("ap1g8", &image),
        ] {
            zip.start_file(name, opts).unwrap();
            std::io::Write::write_all(&mut zip, bytes).unwrap();
        }
        zip.finish().unwrap();
        json(&run(d.path(), &["--json", "validate", "v.zip"]))
    };
    let codes = |v: &serde_json::Value| -> Vec<String> {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let good = build("17.9.4.27\n");
    assert_eq!(good["ok"], true, "{good}");
    assert!(
        !codes(&good).iter().any(|c| c.starts_with("info-warning")),
        "{good}"
    );
    let bad = build("17.9.4.26\n");
    assert_eq!(bad["ok"], false);
    assert!(
        codes(&bad).contains(&"info-version-mismatch".to_owned()),
        "{bad}"
    );
}

/// A zip of `(name, bytes)` entries, stored.
fn zip_of(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(*name, opts).unwrap();
        std::io::Write::write_all(&mut zip, bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn image(family: &str) -> Vec<u8> {
    let mut v = Vec::new();
    bundle_tool::synth::write_image(&mut v, family, "17.9.4.27".parse().unwrap(), 20480).unwrap();
    v
}

/// `(severity, code, entry)` of every finding.
fn findings(v: &serde_json::Value) -> Vec<(String, String, Option<String>)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
                f["entry"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn has(v: &serde_json::Value, severity: &str, code: &str, entry: Option<&str>) -> bool {
    findings(v)
        .iter()
        .any(|(s, c, e)| s == severity && c == code && e.as_deref() == entry)
}

#[test]
fn every_layout_finding_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let version = ("version.info", b"17.9.4.27\n".to_vec());
    let validate = |entries: &[(&str, Vec<u8>)]| -> (i32, serde_json::Value) {
        zip_of(&d.path().join("t.zip"), entries);
        let o = run(d.path(), &["--json", "validate", "t.zip"]);
        (code(&o), json(&o))
    };
    // An unknown family is reported, not fatal.
    let (c, v) = validate(&[version.clone(), ("ap1g9", image("ap1g9"))]);
    assert_eq!(c, 0, "{v}");
    assert!(has(&v, "warning", "unknown-family", Some("ap1g9")), "{v}");
    // An image without info members: a warning.
    let mut bare = Vec::new();
    let mut tar = bundle_tool::tar::TarBuilder::new(&mut bare);
    tar.append("payload.bin", 4, &mut &b"data"[..]).unwrap();
    tar.finish().unwrap();
    let (c, v) = validate(&[version.clone(), ("ap1g8", bare)]);
    assert_eq!(c, 0, "{v}");
    assert!(has(&v, "warning", "info-missing", Some("ap1g8")), "{v}");
    // No image at all; a bad version.info; an empty image.
    let (c, v) = validate(std::slice::from_ref(&version));
    assert_eq!(c, 1);
    assert!(has(&v, "error", "no-images", None), "{v}");
    let (c, v) = validate(&[
        ("version.info", b"17.9\n".to_vec()),
        ("ap1g8", image("ap1g8")),
    ]);
    assert_eq!(c, 1);
    assert!(has(&v, "error", "bad-version", Some("version.info")), "{v}");
    let (c, v) = validate(&[version.clone(), ("ap1g8", Vec::new())]);
    assert_eq!(c, 1);
    assert!(has(&v, "error", "empty-image", Some("ap1g8")), "{v}");
    // A file in a sub-folder is skipped with a warning; one top folder is removed.
    let (c, v) = validate(&[
        version.clone(),
        ("ap1g8", image("ap1g8")),
        ("extra/notes.txt", b"x".to_vec()),
    ]);
    assert_eq!(c, 0, "{v}");
    assert!(
        has(&v, "warning", "nested-entry", Some("extra/notes.txt")),
        "{v}"
    );
    let (c, v) = validate(&[
        ("b/version.info", version.1.clone()),
        ("b/ap1g8", image("ap1g8")),
    ]);
    assert_eq!(c, 0, "{v}");
    assert!(has(&v, "warning", "top-folder-stripped", Some("b")), "{v}");
    assert_eq!(v["families"], serde_json::json!(["ap1g8"]));
}

#[test]
fn unreadable_files_are_io_errors() {
    // As root every file is readable, so read as nobody.
    assert!(
        airlift_tests::is_root(),
        "this test drops to uid 65534 and must run as root (CI does)"
    );
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let folder = d.path().join("b");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(folder.join("version.info"), "17.9.4.27\n").unwrap();
    std::fs::write(folder.join("ap1g8"), image("ap1g8")).unwrap();
    std::fs::set_permissions(
        folder.join("version.info"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(folder.join("ap1g8"), std::fs::Permissions::from_mode(0o000)).unwrap();
    zip_of(
        &d.path().join("z.zip"),
        &[("version.info", b"17.9.4.27\n".to_vec())],
    );
    std::fs::set_permissions(
        d.path().join("z.zip"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    for (target, name) in [("b", "ap1g8"), ("z.zip", "z.zip")] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_bundle-tool"))
            .args(["validate", target])
            .current_dir(d.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 2, "{target}: {err}");
        assert!(
            err.contains(name) && err.contains("Permission denied"),
            "{target}: {err}"
        );
    }
}

#[test]
fn stage_refusals_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("srv");
    std::fs::create_dir_all(root.join("EWC/current")).unwrap();
    // Debris of a killed run, and a file that merely shares the prefix.
    std::fs::create_dir(root.join(".bundle-tool-staging-1-2")).unwrap();
    std::fs::write(root.join(".bundle-tool-staging-note"), b"not ours").unwrap();
    synth(d.path(), "lab.zip", "17.9.4.27", &["--families", "ap1g8"]);
    std::fs::write(d.path().join("junk.zip"), b"not a zip at all").unwrap();
    let before = snapshot(&root);
    let refused = |args: &[&str], expect: i32, says: &str| {
        let o = run(d.path(), args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned() + &stdout(&o);
        assert_eq!(code(&o), expect, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(snapshot(&root), before, "{args:?} changed ROOT");
    };
    refused(
        &["stage", "junk.zip", "srv"],
        1,
        "not staged: srv unchanged",
    );
    // `current` is a real folder here: not replaced.
    refused(
        &["stage", "lab.zip", "srv", "--name", "EWC/x", "--current"],
        2,
        "is not a symbolic link",
    );
    refused(
        &["stage", "lab.zip", "srv", "--name", "current", "--current"],
        2,
        "reserved",
    );
    // Another stage holds the lock.
    // -o: flock(1) holds the lock itself, so killing it releases it (its child keeps no fd).
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&root)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    refused(
        &["stage", "lab.zip", "srv", "--name", "x"],
        2,
        "another bundle-tool is staging here",
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    // --json failures are one JSON document too.
    let o = run(
        d.path(),
        &[
            "--json",
            "stage",
            "lab.zip",
            "srv",
            "--name",
            "current",
            "--current",
        ],
    );
    let v = json(&o);
    assert_eq!(
        (v["ok"].as_bool(), v["exit"].as_i64()),
        (Some(false), Some(2)),
        "{v}"
    );
    // A success removes the killed run's folder, and only that.
    let o = run(d.path(), &["stage", "lab.zip", "srv", "--name", "x"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("left by an interrupted run"),
        "{}",
        stdout(&o)
    );
    assert!(!root.join(".bundle-tool-staging-1-2").exists());
    assert_eq!(
        std::fs::read(root.join(".bundle-tool-staging-note")).unwrap(),
        b"not ours"
    );
}

#[test]
fn verify_checks_what_it_can_and_which_refuses_damaged_bundles() {
    let d = tempfile::tempdir().unwrap();
    synth(
        d.path(),
        "lab.zip",
        "17.9.4.27",
        &["--families", "ap1g7,ap1g8"],
    );
    std::fs::create_dir(d.path().join("srv")).unwrap();
    assert_eq!(
        code(&run(d.path(), &["stage", "lab.zip", "srv", "--name", "x"])),
        0
    );
    let dir = d.path().join("srv/x");
    std::fs::remove_file(dir.join("ap1g7")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("ap1g7")).unwrap();
    let o = run(d.path(), &["--json", "verify", "srv/x"]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["checked"], 5, "every other file is still checked: {v}");
    assert_eq!(v["missing"], serde_json::json!(["ap1g7"]));
    assert!(has(&v, "error", "symlink", Some("ap1g7")), "{v}");
    // A JSON error for a missing manifest too.
    let o = run(d.path(), &["--json", "verify", "srv"]);
    assert_eq!(code(&o), 2);
    assert_eq!(json(&o)["ok"], false);
    // which: a damaged bundle cannot answer "does not have".
    std::fs::write(d.path().join("junk.zip"), b"PK\x03\x04 truncated").unwrap();
    let o = run(d.path(), &["which", "C9105AXI-E", "--bundle", "junk.zip"]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("cannot tell (invalid bundle)"),
        "{}",
        stdout(&o)
    );
}
