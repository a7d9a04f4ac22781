//! Source URLs (files and folders): parsing never panics, and a parsed source — or a file
//! joined to a folder — never prints its SFTP user.
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
    if let Ok(folder) = Source::parse_folder(text) {
        let file = folder.join("ap1g7");
        let shown = file.to_string();
        if let Source::Sftp { .. } = file {
            assert!(shown.starts_with("sftp://*****@"), "{shown}");
        }
        assert_eq!(file.file_name(), "ap1g7");
    }
});
