//! Arbitrary text as an sshd_config (with `-o` overrides taken from its first line): parsing,
//! evaluation for a connection and the `-T` dump never panic, and what `-T` prints parses.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use sftpd::config::{self, ConnectionSpec, NoIncludes};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, rest) = text.split_once('\n').unwrap_or(("", text));
    let overrides: Vec<String> = first
        .split('|')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let Ok(cfg) = config::parse("fuzz", rest, &overrides, &mut NoIncludes) else {
        return;
    };
    let groups = vec!["sftp".to_owned()];
    let spec = ConnectionSpec {
        user: "calo",
        groups: &groups,
        address: IpAddr::V4(Ipv4Addr::new(172, 16, 4, 26)),
        local_port: 22,
    };
    let eff = cfg.effective(&spec);
    let _ = config::user_allowed(&eff, "calo", &groups, spec.address);
    let dump = cfg.dump(&eff, Some(&spec));
    assert!(
        config::parse("dump", &dump, &[], &mut NoIncludes).is_ok(),
        "-T output must parse:\n{dump}"
    );
});
