//! A `manifest.json` fetched from a server: parsing never panics, and every entry it yields
//! becomes an expectation (or is refused) without panicking.
#![no_main]

use bundle_tool::manifest::Manifest;
use libfuzzer_sys::fuzz_target;
use relay::Expected;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data, std::path::Path::new("manifest.json")) {
        for f in &m.files {
            if let Some(e) = Expected::from_manifest(&m, &f.name) {
                assert_eq!(e.size, Some(f.size));
            }
        }
    }
});
