//! Feed arbitrary bytes to the tar checker, split at a position taken from the first byte:
//! it may not panic, the split may not change the outcome, and what it reports stays within
//! its limits.
#![no_main]

use bundle_tool::tar::{TarChecker, TarLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, archive)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) * archive.len() / 255;
    let (head, tail) = archive.split_at(split);
    // Small limits, so inputs of fuzzer size reach them.
    let limits = TarLimits {
        max_members: 64,
        max_capture: 256,
    };

    let mut chunked = TarChecker::new(limits);
    // Errors are sticky: after one, `feed` and `finish` return it again.
    let _ = chunked.feed(head);
    let _ = chunked.feed(tail);
    let chunked = chunked.finish();

    let mut whole = TarChecker::new(limits);
    let _ = whole.feed(archive);
    let whole = whole.finish();
    assert_eq!(chunked, whole);

    if let Ok(summary) = whole {
        assert!(summary.members.len() <= limits.max_members);
        assert!(
            summary
                .captured
                .iter()
                .all(|c| c.bytes.len() <= limits.max_capture)
        );
        assert_eq!(archive.len() % 512, 0);
    }
});
