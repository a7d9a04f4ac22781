//! Entry names, stage names, version files and model strings: the small parsers a bundle's
//! listing and the CLI go through never panic, and an accepted entry name can never leave
//! the folder it is joined to.
#![no_main]

use bundle_tool::{models, names, version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = names::check(data) {
        assert!(!c.name.is_empty());
        assert!(!c.name.starts_with('/'));
        assert!(!c.name.contains('\\'));
        assert!(
            c.name
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
        );
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = names::check_stage_name(s);
        let _ = models::which(s);
        let _ = models::is_image_family_name(s);
    }
    if let Ok(v) = version::parse_version_info(data) {
        // What it prints parses back to itself.
        assert_eq!(v.to_string().parse::<version::ApVersion>().ok(), Some(v));
    }
    let _ = version::parse_controller_version(data);
});
