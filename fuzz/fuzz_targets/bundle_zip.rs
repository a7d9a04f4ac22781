//! Arbitrary bytes as a bundle zip: the listing checks, the parallel scan and the rules never
//! panic, and whatever the verdict, a report comes back (an I/O error only for real I/O).
#![no_main]

use std::sync::atomic::AtomicBool;

use bundle_tool::check::{InspectOptions, inspect};
use bundle_tool::source::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("bundle-zip-fuzz-{}.zip", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let cancel = AtomicBool::new(false);
    let progress = indicatif::ProgressBar::hidden();
    let opts = InspectOptions {
        limits: Limits {
            max_total: 64 << 20,
            max_entry: 16 << 20,
            ..Limits::default()
        },
        hash: true,
        extract: None,
        fsync: false,
        cancel: &cancel,
        progress: &progress,
        threads: 1,
    };
    if let Ok(report) = inspect(&path, &opts) {
        assert_eq!(report.ok, report.errors == 0);
    }
    let _ = std::fs::remove_file(&path);
});
