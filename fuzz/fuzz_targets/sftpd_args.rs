//! `internal-sftp` arguments as written in sshd_config: splitting and parsing never panic,
//! and a parsed umask is a umask.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftpd::server_args;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = server_args::split_args(text);
    let _ = server_args::split_internal_sftp(text);
    if let Ok(args) = server_args::parse_command(text) {
        assert!(args.umask.is_none_or(|u| u <= 0o777));
        if let Some(dir) = &args.start_dir {
            let _ = server_args::expand_start_dir(dir, "/home/calo", "calo", 1000);
        }
    }
});
