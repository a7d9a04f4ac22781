//! sftpd's connection handler in this process, on accepted loopback sockets, for relay's
//! SFTP tests: unprivileged (no chroot, confinement by openat2), one virtual user `ap`.
#![allow(dead_code)] // not every test binary uses every helper

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sftpd::connection::{self, Shared};
use sftpd::server_args::LogLevel;

/// The user `ap`'s password.
pub const PASSWORD: &str = "relay-test-pw";

pub struct Server {
    pub addr: SocketAddr,
    /// `SHA256:…` of its host key.
    pub fingerprint: String,
    /// Its host key, OpenSSH public format.
    pub public_key: String,
    _dir: tempfile::TempDir,
}

fn sha512_crypt(password: &str) -> String {
    let out = airlift_tests::run_with_timeout(
        std::process::Command::new("openssl").args(["passwd", "-6", password]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", airlift_tests::describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts a server (on the current tokio runtime) that lives as long as the runtime.
pub async fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = sftpd::hostkey::load_or_generate(&[dir
        .path()
        .join("hostkey")
        .to_string_lossy()
        .into_owned()])
    .expect("host key");
    let fingerprint = sftpd::hostkey::fingerprint(&keys.keys[0]);
    let public_key = keys.keys[0].public_key().to_openssh().expect("public key");
    // A virtual user acting as nobody (no chroot: /tmp cannot be one; unprivileged, so the
    // session acts as this process and paths are absolute on the host).
    let users_text = format!("ap:{}:65534:65534:/::\n", sha512_crypt(PASSWORD));
    let users = sftpd::users::UsersFile::parse(&users_text, "users").expect("users");
    let config = sftpd::config::parse(
        "sshd_config",
        "ForceCommand internal-sftp\n",
        &[],
        &mut sftpd::config::NoIncludes,
    )
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let host_keys = keys.keys;
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let std = stream.into_std().expect("std");
            let local = std.local_addr().expect("local");
            let shared = Arc::new(Shared {
                config: config.clone(),
                log: sftpd::log::Log::capture(LogLevel::Info),
                users_file: Some(users.clone()),
                users_file_path: Some("users".into()),
                peer,
                local,
                privileged: false,
                root_login: sftpd::setup::RootLogin::NoPassword,
                status: Mutex::new(None),
                sessions: Mutex::new(Vec::new()),
            });
            let keys = host_keys.clone();
            tokio::spawn(async move {
                connection::run(shared, OwnedFd::from(std), keys).await;
            });
        }
    });
    Server {
        addr,
        fingerprint,
        public_key,
        _dir: dir,
    }
}
