//! Source URLs: parsing never panics, and a parsed source never prints its SFTP user.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(source) = Source::parse(text) {
        let shown = source.to_string();
        if let Source::Sftp { .. } = source {
            assert!(shown.starts_with("sftp://*****@"), "{shown}");
        }
        let _ = source.file_name();
    }
});
