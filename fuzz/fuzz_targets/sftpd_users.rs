//! `UsersFile` lines and `authorized_keys` lines (with options): parsing never panics, and a
//! parsed file only holds users with names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftpd::users;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = users::UsersFile::parse(text, "fuzz") {
        assert!(file.accounts().iter().all(|a| !a.name.is_empty()));
    }
    for key in users::parse_authorized_keys(text) {
        assert!(key.line >= 1);
    }
    let _ = users::from_matches("192.0.2.7".parse().expect("addr"), text);
});
