//! Bad input gets a clear error and changes nothing.
//!
//! Every test builds its own hostile or broken bundle in a temporary folder (with the `zip`
//! crate's writer, patching bytes where the writer refuses: duplicate names, `../` names, lying
//! sizes), then runs the real `bundle-tool` binary twice: `--json validate BUNDLE` and
//! `--json stage BUNDLE ROOT --name EWC/17_9_4a --no-fsync`. Each asserts the exit status
//! (1 invalid bundle, 2 I/O error), the exact error findings (`findings[].code` and
//! `findings[].entry`), and that `ROOT` — which already holds a file, an older staged folder and
//! a `current` link — is exactly as it was: same names, types, modes, sizes, contents, mtimes and
//! link targets, and no `.bundle-tool-staging-*` left behind.
//!
//! The full-disk test mounts a 256 KiB tmpfs and therefore needs root (CI runs as root).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Cursor, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use airlift_tests::{Tmpfs, describe, run_with_timeout, sha256_file};
use bundle_tool::tar::TarBuilder;
use bundle_tool::version::ApVersion;
use serde_json::Value;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

const BIN: &str = env!("CARGO_BIN_EXE_bundle-tool");
/// The AP version every test bundle carries in `version.info`.
const VERSION: &str = "17.9.4.27";
/// The `--name` every stage uses.
const NAME: &str = "EWC/17_9_4a";
/// Deadline of one `bundle-tool` run.
const DEADLINE: Duration = Duration::from_secs(30);
/// Size of the synthetic AP images (two tar records).
const IMAGE_SIZE: u64 = 20_480;

const STORED: CompressionMethod = CompressionMethod::Stored;
const DEFLATED: CompressionMethod = CompressionMethod::Deflated;

// ---------------------------------------------------------------------------------------------
// Building bundles

fn version() -> ApVersion {
    VERSION.parse().unwrap()
}

/// A synthetic AP image of `family` that passes every check.
fn image(family: &str) -> Vec<u8> {
    let mut out = Vec::new();
    bundle_tool::synth::write_image(&mut out, family, version(), IMAGE_SIZE).unwrap();
    assert_eq!(out.len() as u64, IMAGE_SIZE);
    out
}

/// A tar image whose only `info` member says `info` (plus a payload member).
fn image_with_info(info: &str) -> Vec<u8> {
    let payload = airlift_tests::pseudo_random(4096, 7);
    let mut tar = TarBuilder::new(Vec::new());
    tar.append("info", info.len() as u64, &mut info.as_bytes())
        .unwrap();
    tar.append("payload.bin", payload.len() as u64, &mut payload.as_slice())
        .unwrap();
    tar.finish().unwrap()
}

/// One zip entry to write.
struct Item {
    name: String,
    data: Vec<u8>,
    method: CompressionMethod,
}

fn item(name: &str, data: impl Into<Vec<u8>>, method: CompressionMethod) -> Item {
    Item {
        name: name.to_owned(),
        data: data.into(),
        method,
    }
}

/// A valid bundle's files: readme, both version files and one AP image (`ap1g8`), all stored.
fn base_items() -> Vec<Item> {
    vec![
        item("readme.txt", "a test bundle\n", STORED),
        item("version.info", format!("{VERSION}\n"), STORED),
        item("controller_version.info", "17.09.04a.0.6", STORED),
        item("ap1g8", image("ap1g8"), STORED),
    ]
}

fn options(method: CompressionMethod) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(method)
        .unix_permissions(0o644)
}

/// The bytes of a zip archive holding `items`, in order.
fn zip_of(items: &[Item]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for it in items {
        zip.start_file(it.name.as_str(), options(it.method))
            .unwrap();
        zip.write_all(&it.data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Offsets of every occurrence of `needle`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Replaces every occurrence of `from` by `to` (same length); returns how many there were.
fn replace_all(hay: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len(), "patches keep lengths");
    let at = find_all(hay, from);
    for &i in &at {
        hay[i..i + to.len()].copy_from_slice(to);
    }
    at.len()
}

fn le16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The offsets of `name`'s local header (`PK\3\4`) and central-directory header (`PK\1\2`).
fn headers(zip: &[u8], name: &str) -> (usize, usize) {
    let n = name.as_bytes();
    let local: Vec<usize> = find_all(zip, b"PK\x03\x04")
        .into_iter()
        .filter(|&p| le16(zip, p + 26) == n.len() && zip.get(p + 30..p + 30 + n.len()) == Some(n))
        .collect();
    let central: Vec<usize> = find_all(zip, b"PK\x01\x02")
        .into_iter()
        .filter(|&p| le16(zip, p + 28) == n.len() && zip.get(p + 46..p + 46 + n.len()) == Some(n))
        .collect();
    assert_eq!((local.len(), central.len()), (1, 1), "headers of {name}");
    (local[0], central[0])
}

/// Where `name`'s (compressed) data lies in the archive.
fn data_range(zip: &[u8], name: &str) -> std::ops::Range<usize> {
    let (local, central) = headers(zip, name);
    let start = local + 30 + le16(zip, local + 26) + le16(zip, local + 28);
    let len = le32(zip, central + 20) as usize;
    start..start + len
}

/// Makes `name` declare `size` uncompressed bytes in both headers; nothing else changes (the
/// CRC still matches the real data).
fn declare_size(zip: &mut [u8], name: &str, size: u32) {
    let (local, central) = headers(zip, name);
    zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
}

/// A zip of the base bundle plus an entry whose name is `evil` (written under a placeholder of
/// the same length, then patched in both headers).
fn zip_with_name(evil: &str) -> Vec<u8> {
    let placeholder = "Q".repeat(evil.len());
    let mut items = base_items();
    items.push(item(&placeholder, "pwned\n", STORED));
    let mut zip = zip_of(&items);
    assert_eq!(
        replace_all(&mut zip, placeholder.as_bytes(), evil.as_bytes()),
        2,
        "the placeholder for {evil:?} occurs in the local and central header only"
    );
    zip
}

// ---------------------------------------------------------------------------------------------
// The served folder and its snapshot

/// A temporary tree: `in/` for bundles, `srv/tftp` as ROOT, pre-populated like a served folder
/// that already holds an older bundle.
struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("in")).unwrap();
        let root = tmp.path().join("srv").join("tftp");
        std::fs::create_dir_all(&root).unwrap();
        populate(&root);
        Fixture { tmp, root }
    }

    /// Writes a bundle file into `in/`.
    fn bundle(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.tmp.path().join("in").join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

/// What a served folder holds before a test stages into it.
fn populate(root: &Path) {
    std::fs::write(root.join("preexisting.cfg"), b"keep me as I am\n").unwrap();
    let old = root.join("EWC").join("17_9_3");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("version.info"), b"17.9.3.50\n").unwrap();
    std::fs::write(old.join("ap1g8"), airlift_tests::pseudo_random(3000, 1)).unwrap();
    std::fs::set_permissions(old.join("ap1g8"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("17_9_3", root.join("EWC").join("current")).unwrap();
}

/// Everything under `root` (not `root` itself, whose mtime a refused stage may touch): for
/// each path its type, mode, size, content hash, mtime, or link target.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for item in std::fs::read_dir(dir).unwrap() {
            let p = item.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let times = format!("mtime {}.{:09}", m.mtime(), m.mtime_nsec());
            let mode = m.mode() & 0o7777;
            let desc = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                format!("dir {mode:o} {times}")
            } else if ft.is_file() {
                format!(
                    "file {mode:o} {} bytes sha256 {} {times}",
                    m.len(),
                    sha256_file(&p)
                )
            } else {
                format!("other {ft:?}")
            };
            out.insert(rel, desc);
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Names of staging folders left in `root`.
fn leftovers(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bundle-tool-staging-"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running the tool

struct Run {
    code: Option<i32>,
    out: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(&self.out)))
    }

    /// The error findings as (code, entry), sorted.
    fn errors(&self) -> Vec<(String, Option<String>)> {
        let json = self.json();
        let findings = json["findings"]
            .as_array()
            .unwrap_or_else(|| panic!("no findings array:\n{}", describe(&self.out)));
        let mut errors: Vec<(String, Option<String>)> = findings
            .iter()
            .filter(|f| f["severity"] == "error")
            .map(|f| {
                (
                    f["code"].as_str().unwrap().to_owned(),
                    f["entry"].as_str().map(str::to_owned),
                )
            })
            .collect();
        errors.sort();
        errors
    }

    /// The message of the first finding with `code`.
    fn message(&self, code: &str) -> String {
        self.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == code)
            .and_then(|f| f["message"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

fn run_tool<S: AsRef<OsStr>>(args: &[S], deadline: Duration) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let out = run_with_timeout(&mut cmd, deadline);
    Run {
        code: out.status.code(),
        out,
    }
}

fn validate(bundle: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec!["--json".as_ref(), "validate".as_ref(), bundle.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    run_tool(&args, DEADLINE)
}

fn stage(bundle: &Path, root: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        "--json".as_ref(),
        "stage".as_ref(),
        bundle.as_os_str(),
        root.as_os_str(),
        "--name".as_ref(),
        NAME.as_ref(),
        "--no-fsync".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    run_tool(&args, DEADLINE)
}

type Want<'a> = &'a [(&'a str, Option<&'a str>)];

fn owned(want: Want<'_>) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = want
        .iter()
        .map(|(c, e)| ((*c).to_owned(), e.map(str::to_owned)))
        .collect();
    v.sort();
    v
}

/// `validate` and `stage` both refuse `bundle` with exit 1 and exactly the errors `want`, and
/// the stage leaves ROOT as it was. Returns the validate run for further checks.
fn assert_refused(fx: &Fixture, bundle: &Path, extra: &[&str], want: Want<'_>) -> Run {
    let v = validate(bundle, extra);
    assert_eq!(
        v.code,
        Some(1),
        "validate exit status:\n{}",
        describe(&v.out)
    );
    assert_eq!(v.json()["ok"], false, "{}", v.stdout());
    assert_eq!(v.errors(), owned(want), "validate errors:\n{}", v.stdout());

    let before = snapshot(&fx.root);
    let s = stage(bundle, &fx.root, extra);
    assert_eq!(s.code, Some(1), "stage exit status:\n{}", describe(&s.out));
    assert_eq!(s.errors(), owned(want), "stage errors:\n{}", s.stdout());
    assert_eq!(
        snapshot(&fx.root),
        before,
        "ROOT changed by a refused stage"
    );
    assert!(
        leftovers(&fx.root).is_empty(),
        "staging folder left: {:?}",
        leftovers(&fx.root)
    );
    assert!(!fx.root.join(NAME).exists());
    v
}

/// The bundle is valid: validate says so with no errors (the control for a patched variant).
fn assert_valid(bundle: &Path) {
    let v = validate(bundle, &[]);
    assert_eq!(v.code, Some(0), "{}", describe(&v.out));
    assert_eq!(v.errors(), owned(&[]), "{}", v.stdout());
}

// ---------------------------------------------------------------------------------------------
// The cases

#[test]
fn the_unpatched_base_bundle_is_valid() {
    let fx = Fixture::new();
    let base = fx.bundle("base.zip", &zip_of(&base_items()));
    let v = validate(&base, &[]);
    assert_eq!(v.code, Some(0), "{}", describe(&v.out));
    let json = v.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["version"], VERSION);
    assert_eq!(json["families"], serde_json::json!(["ap1g8"]));
    assert_eq!(json["errors"], 0, "{}", v.stdout());
}

#[test]
fn zip_slip_names_are_refused_and_nothing_escapes() {
    let fx = Fixture::new();
    for (i, evil) in ["../evil", "a/../../evil", "/etc/evil", "C:evil", "a\\evil"]
        .into_iter()
        .enumerate()
    {
        let bundle = fx.bundle(&format!("slip{i}.zip"), &zip_with_name(evil));
        let v = assert_refused(&fx, &bundle, &[], &[("unsafe-name", Some(evil))]);
        assert!(
            v.message("unsafe-name").starts_with("refused name"),
            "{}",
            v.stdout()
        );
    }
    // Nothing called *evil* anywhere in the temporary tree (ROOT, its parents, the bundles'
    // folder), nor at the absolute path.
    let mut found = Vec::new();
    let mut stack = vec![fx.tmp.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().contains("evil") {
                found.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(found.is_empty(), "written: {found:?}");
    assert!(!Path::new("/etc/evil").exists());
    assert!(!fx.tmp.path().join("srv").join("evil").exists());
}

#[test]
fn a_symlink_entry_is_refused() {
    let fx = Fixture::new();
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for it in base_items() {
        zip.start_file(it.name.as_str(), options(it.method))
            .unwrap();
        zip.write_all(&it.data).unwrap();
    }
    zip.add_symlink("ap1g7", "../../../etc/shadow", SimpleFileOptions::default())
        .unwrap();
    let bundle = fx.bundle("symlink.zip", &zip.finish().unwrap().into_inner());
    assert_refused(&fx, &bundle, &[], &[("symlink", Some("ap1g7"))]);

    // The same in an unpacked folder.
    let dir = fx.tmp.path().join("in").join("folder");
    std::fs::create_dir(&dir).unwrap();
    for it in base_items() {
        std::fs::write(dir.join(&it.name), &it.data).unwrap();
    }
    std::os::unix::fs::symlink("/etc/shadow", dir.join("ap1g7")).unwrap();
    assert_refused(&fx, &dir, &[], &[("symlink", Some("ap1g7"))]);
}

#[test]
fn duplicate_names_are_refused() {
    let fx = Fixture::new();
    let mut items = base_items();
    items.push(item("ap1g7", image("ap1g7"), STORED));
    let clean = zip_of(&items);
    assert_valid(&fx.bundle("clean.zip", &clean));
    let mut zip = clean;
    // Both the entry names and the `image_family: ap1g8` inside the stored image.
    assert!(replace_all(&mut zip, b"ap1g8", b"ap1g7") >= 2);
    let bundle = fx.bundle("dup.zip", &zip);
    assert_refused(&fx, &bundle, &[], &[("duplicate-name", Some("ap1g7"))]);
}

#[test]
fn too_many_entries_are_refused() {
    let fx = Fixture::new();
    let mut items = base_items();
    for fam in ["ap1g4", "ap1g5", "ap1g6", "ap1g7"] {
        items.push(item(fam, image(fam), STORED));
    }
    assert_eq!(items.len(), 8);
    let bundle = fx.bundle("many.zip", &zip_of(&items));
    assert_valid(&bundle);
    let v = assert_refused(
        &fx,
        &bundle,
        &["--max-entries", "5"],
        &[("too-many-entries", None)],
    );
    assert!(
        v.message("too-many-entries").contains('5'),
        "{}",
        v.stdout()
    );
    // Exactly at the limit is fine.
    let ok = validate(&bundle, &["--max-entries", "8"]);
    assert_eq!(ok.code, Some(0), "{}", describe(&ok.out));
}

#[test]
fn an_entry_longer_than_declared_is_refused() {
    let fx = Fixture::new();
    for (label, method) in [("stored", STORED), ("deflated", DEFLATED)] {
        let mut items = base_items();
        items[3].method = method;
        let mut zip = zip_of(&items);
        declare_size(&mut zip, "ap1g8", (IMAGE_SIZE / 2) as u32);
        let bundle = fx.bundle(&format!("short-{label}.zip"), &zip);
        // The zip reader stops once it has read more than declared ("File is larger than its
        // declared uncompressed size"): size-mismatch, not corrupt-entry.
        let v = assert_refused(&fx, &bundle, &[], &[("size-mismatch", Some("ap1g8"))]);
        assert!(
            v.message("size-mismatch").contains("declared"),
            "{label}: {}",
            v.stdout()
        );
    }
}

#[test]
fn an_entry_shorter_than_declared_is_refused() {
    let fx = Fixture::new();
    for (label, method) in [("stored", STORED), ("deflated", DEFLATED)] {
        let mut items = base_items();
        items[3].method = method;
        let mut zip = zip_of(&items);
        declare_size(&mut zip, "ap1g8", (IMAGE_SIZE + 512) as u32);
        let bundle = fx.bundle(&format!("long-{label}.zip"), &zip);
        // The data ends (CRC intact) before the declared size: "N bytes where M were declared".
        let v = assert_refused(&fx, &bundle, &[], &[("size-mismatch", Some("ap1g8"))]);
        let message = v.message("size-mismatch");
        assert!(
            message.contains("20480") && message.contains("20992"),
            "{label}: {}",
            v.stdout()
        );
    }
}

#[test]
fn a_zip_bomb_by_ratio_is_refused() {
    let fx = Fixture::new();
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for it in base_items() {
        zip.start_file(it.name.as_str(), options(it.method))
            .unwrap();
        zip.write_all(&it.data).unwrap();
    }
    zip.start_file("ap1g6", options(DEFLATED).compression_level(Some(1)))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        zip.write_all(&zeros).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    assert!(
        bytes.len() < 1 << 20,
        "64 MiB of zeros deflate to {} bytes",
        bytes.len()
    );
    let bundle = fx.bundle("bomb.zip", &bytes);
    let v = assert_refused(&fx, &bundle, &[], &[("compression-ratio", Some("ap1g6"))]);
    assert!(
        v.message("compression-ratio").contains("67108864"),
        "{}",
        v.stdout()
    );
}

#[test]
fn a_total_over_the_limit_is_refused() {
    let fx = Fixture::new();
    let bundle = fx.bundle("base.zip", &zip_of(&base_items()));
    let v = assert_refused(
        &fx,
        &bundle,
        &["--max-total", "1000"],
        &[("too-large", None)],
    );
    assert!(
        v.message("too-large").contains("--max-total"),
        "{}",
        v.stdout()
    );
    // And one entry over --max-entry names the entry.
    assert_refused(
        &fx,
        &bundle,
        &["--max-entry", "10000"],
        &[("too-large", Some("ap1g8"))],
    );
}

#[test]
fn a_truncated_archive_is_refused() {
    let fx = Fixture::new();
    let zip = zip_of(&base_items());
    let bundle = fx.bundle("half.zip", &zip[..zip.len() / 2]);
    assert_refused(&fx, &bundle, &[], &[("corrupt-archive", None)]);
    // Not a zip at all.
    let junk = fx.bundle("junk.zip", &airlift_tests::pseudo_random(5000, 3));
    assert_refused(&fx, &junk, &[], &[("corrupt-archive", None)]);
}

#[test]
fn corrupt_entry_data_is_refused() {
    let fx = Fixture::new();
    for (label, method) in [("stored", STORED), ("deflated", DEFLATED)] {
        let mut items = base_items();
        items[3].method = method;
        let mut zip = zip_of(&items);
        let data = data_range(&zip, "ap1g8");
        let mid = data.start + data.len() / 2;
        for b in &mut zip[mid..mid + 4] {
            *b ^= 0x55;
        }
        let bundle = fx.bundle(&format!("corrupt-{label}.zip"), &zip);
        assert_refused(&fx, &bundle, &[], &[("corrupt-entry", Some("ap1g8"))]);
    }
}

#[test]
fn an_image_that_is_not_a_tar_is_refused() {
    let fx = Fixture::new();
    let mut items = base_items();
    items[3].data = airlift_tests::pseudo_random(IMAGE_SIZE as usize, 9);
    let bundle = fx.bundle("random.zip", &zip_of(&items));
    assert_refused(&fx, &bundle, &[], &[("bad-tar", Some("ap1g8"))]);
}

#[test]
fn an_image_with_a_broken_tar_checksum_is_refused() {
    let fx = Fixture::new();
    let mut items = base_items();
    // `info` -> `Info` in the first header, checksum unchanged.
    assert_eq!(&items[3].data[..5], b"info\0");
    items[3].data[0] = b'I';
    let bundle = fx.bundle("checksum.zip", &zip_of(&items));
    let v = assert_refused(&fx, &bundle, &[], &[("bad-tar", Some("ap1g8"))]);
    assert!(v.message("bad-tar").contains("checksum"), "{}", v.stdout());
}

#[test]
fn an_image_whose_info_names_another_family_is_refused() {
    let fx = Fixture::new();
    let mut items = base_items();
    items[3].data = image_with_info(&format!("image_family: ap1g7\nap_version: {VERSION}\n"));
    let bundle = fx.bundle("family.zip", &zip_of(&items));
    let v = assert_refused(
        &fx,
        &bundle,
        &[],
        &[("info-family-mismatch", Some("ap1g8"))],
    );
    let message = v.message("info-family-mismatch");
    assert!(
        message.starts_with("info says") && message.contains("ap1g7"),
        "{}",
        v.stdout()
    );
}

#[test]
fn an_image_whose_info_has_another_version_is_refused() {
    let fx = Fixture::new();
    let mut items = base_items();
    items[3].data = image_with_info("image_family: ap1g8\nap_version: 17.9.4.26\n");
    let bundle = fx.bundle("version.zip", &zip_of(&items));
    let v = assert_refused(
        &fx,
        &bundle,
        &[],
        &[("info-version-mismatch", Some("ap1g8"))],
    );
    let message = v.message("info-version-mismatch");
    assert!(
        message.starts_with("info says") && message.contains("17.9.4.26"),
        "{}",
        v.stdout()
    );
}

#[test]
fn a_missing_bundle_is_an_io_error_naming_it() {
    let fx = Fixture::new();
    let missing = fx.tmp.path().join("in").join("no-such-bundle.zip");
    let v = validate(&missing, &[]);
    assert_eq!(v.code, Some(2), "{}", describe(&v.out));
    assert!(
        v.stderr().contains(&missing.display().to_string()),
        "{}",
        describe(&v.out)
    );
    assert!(v.stderr().contains("No such file"), "{}", describe(&v.out));

    let before = snapshot(&fx.root);
    let s = stage(&missing, &fx.root, &[]);
    assert_eq!(s.code, Some(2), "{}", describe(&s.out));
    assert!(
        s.stderr().contains(&missing.display().to_string()),
        "{}",
        describe(&s.out)
    );
    assert!(s.stderr().contains("unchanged"), "{}", describe(&s.out));
    assert_eq!(snapshot(&fx.root), before);
    assert!(leftovers(&fx.root).is_empty());
}

#[test]
fn a_folder_bundle_holding_a_fifo_is_refused() {
    let fx = Fixture::new();
    let dir = fx.tmp.path().join("in").join("folder");
    std::fs::create_dir(&dir).unwrap();
    for it in base_items() {
        std::fs::write(dir.join(&it.name), &it.data).unwrap();
    }
    assert_valid(&dir);
    nix::unistd::mkfifo(
        &dir.join("ap1g7"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // Nothing opens the FIFO (it would block): refused from the listing.
    assert_refused(&fx, &dir, &[], &[("not-a-file", Some("ap1g7"))]);
}

#[test]
fn a_bundle_path_that_is_a_fifo_is_an_error_not_a_hang() {
    let fx = Fixture::new();
    let fifo = fx.tmp.path().join("in").join("bundle.zip");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let v = run_tool(
        &["--json".as_ref(), "validate".as_ref(), fifo.as_os_str()],
        Duration::from_secs(5),
    );
    assert_eq!(v.code, Some(2), "{}", describe(&v.out));
    assert!(
        v.stderr().contains(&fifo.display().to_string()),
        "{}",
        describe(&v.out)
    );

    let before = snapshot(&fx.root);
    let s = run_tool(
        &[
            "--json".as_ref(),
            "stage".as_ref(),
            fifo.as_os_str(),
            fx.root.as_os_str(),
            "--name".as_ref(),
            NAME.as_ref(),
            "--no-fsync".as_ref(),
        ],
        Duration::from_secs(5),
    );
    assert_eq!(s.code, Some(2), "{}", describe(&s.out));
    assert!(
        s.stderr().contains(&fifo.display().to_string()),
        "{}",
        describe(&s.out)
    );
    assert_eq!(snapshot(&fx.root), before);
    assert!(leftovers(&fx.root).is_empty());
}

#[test]
fn a_full_disk_is_an_io_error_and_root_is_unchanged() {
    let top = tempfile::tempdir().unwrap();
    let bundle = top.path().join("big.zip");
    let synth = run_tool(
        &[
            "synth".as_ref(),
            "--version".as_ref(),
            VERSION.as_ref(),
            "--scale".as_ref(),
            "0.003".as_ref(),
            "--no-controller-image".as_ref(),
            "--out".as_ref(),
            bundle.as_os_str(),
        ],
        DEADLINE,
    );
    assert_eq!(synth.code, Some(0), "{}", describe(&synth.out));
    assert_valid(&bundle);

    let root = top.path().join("disk");
    std::fs::create_dir(&root).unwrap();
    let _mount = Tmpfs::mount(&root, "256k", "0755");
    populate(&root);
    let before = snapshot(&root);

    let s = stage(&bundle, &root, &[]);
    assert_eq!(s.code, Some(2), "{}", describe(&s.out));
    assert!(
        s.stderr().contains("No space left on device"),
        "{}",
        describe(&s.out)
    );
    assert!(s.stderr().contains("unchanged"), "{}", describe(&s.out));
    assert_eq!(
        snapshot(&root),
        before,
        "the full disk must hold what it held"
    );
    assert!(
        leftovers(&root).is_empty(),
        "staging left: {:?}",
        leftovers(&root)
    );
    assert!(!root.join(NAME).exists());
}

#[test]
fn a_valid_bundle_stages_and_a_second_stage_needs_force() {
    let fx = Fixture::new();
    let items = base_items();
    let bundle = fx.bundle("good.zip", &zip_of(&items));
    let s = stage(&bundle, &fx.root, &[]);
    assert_eq!(s.code, Some(0), "{}", describe(&s.out));
    let json = s.json();
    let dest = fx.root.join(NAME);
    assert_eq!(json["staged"], dest.display().to_string());
    assert_eq!(json["replaced"], false);
    assert_eq!(json["report"]["ok"], true);

    let img = dest.join("ap1g8");
    assert_eq!(std::fs::read(&img).unwrap(), items[3].data);
    assert_eq!(
        std::fs::metadata(&img).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    for it in &items {
        assert_eq!(
            std::fs::read(dest.join(&it.name)).unwrap(),
            it.data,
            "{}",
            it.name
        );
    }
    assert!(dest.join("manifest.json").is_file());
    let sums = std::fs::read_to_string(dest.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), items.len(), "{sums}");
    let check = run_with_timeout(
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&dest),
        DEADLINE,
    );
    assert!(check.status.success(), "{}", describe(&check));
    // The older bundle and the other files are untouched.
    assert_eq!(
        std::fs::read(fx.root.join("preexisting.cfg")).unwrap(),
        b"keep me as I am\n"
    );
    assert_eq!(
        std::fs::read_link(fx.root.join("EWC").join("current")).unwrap(),
        Path::new("17_9_3")
    );
    assert!(leftovers(&fx.root).is_empty());

    // Again without --force: refused, nothing changes.
    let before = snapshot(&fx.root);
    let again = stage(&bundle, &fx.root, &[]);
    assert_eq!(
        again.code,
        Some(2),
        "an existing name is a usage error: {}",
        describe(&again.out)
    );
    assert!(
        again.stderr().contains("exists"),
        "{}",
        describe(&again.out)
    );
    assert_eq!(snapshot(&fx.root), before);
    assert!(leftovers(&fx.root).is_empty());

    // With --force: replaced.
    let forced = stage(&bundle, &fx.root, &["--force"]);
    assert_eq!(forced.code, Some(0), "{}", describe(&forced.out));
    assert_eq!(forced.json()["replaced"], true);
    assert_eq!(std::fs::read(&img).unwrap(), items[3].data);
    let check = run_with_timeout(
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&dest),
        DEADLINE,
    );
    assert!(check.status.success(), "{}", describe(&check));
    assert!(leftovers(&fx.root).is_empty());
    assert!(fx.root.join("EWC").join("17_9_3").join("ap1g8").is_file());
}

#[test]
fn zip_entries_named_like_the_tools_own_files_do_not_corrupt_the_manifest() {
    // A folder bundle skips manifest.json, SHA256SUMS and MD5SUMS (source::OWN_FILES); a zip
    // bundle carrying them must not end up with a staged folder that fails its own checksums.
    let fx = Fixture::new();
    let mut items = base_items();
    items.push(item("SHA256SUMS", "0000  ap1g8\n", STORED));
    items.push(item("manifest.json", "{\"format\": \"forged\"}\n", STORED));
    let bundle = fx.bundle("own-files.zip", &zip_of(&items));
    // The archived copies are skipped with a warning; the staged folder gets fresh ones.
    let s = stage(&bundle, &fx.root, &[]);
    assert_eq!(s.code, Some(0), "{}", describe(&s.out));
    let warned: Vec<(String, String)> = s.json()["report"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "reserved-name")
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_owned(),
                f["entry"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        warned,
        [
            ("warning".to_owned(), "SHA256SUMS".to_owned()),
            ("warning".to_owned(), "manifest.json".to_owned())
        ]
    );
    let dest = fx.root.join(NAME);
    let verify = run_tool(&["verify".as_ref(), dest.as_os_str()], DEADLINE);
    assert_eq!(verify.code, Some(0), "{}", describe(&verify.out));
    let check = run_with_timeout(
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&dest),
        DEADLINE,
    );
    assert!(check.status.success(), "{}", describe(&check));
}
