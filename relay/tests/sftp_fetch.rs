//! relay's SFTP client against sftpd running in this process (its connection handler on
//! accepted loopback sockets, unprivileged: no chroot, confinement by openat2): pipelined
//! download, pinned and known_hosts host keys, trust on first use, wrong password, wrong key,
//! missing file.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay::sftp::{self, Credential, HostKeyCheck, SftpOptions};
use relay::{ErrorKind, Source};

use common::sftpd::{PASSWORD, Server, start};

fn source(server: &Server, path: &Path) -> Source {
    Source::parse(&format!(
        "sftp://ap@127.0.0.1:{}{}",
        server.addr.port(),
        path.display()
    ))
    .expect("url")
}

fn options(credential: Credential, host_key: HostKeyCheck) -> SftpOptions {
    SftpOptions {
        credential,
        host_key,
        deadline: Duration::from_secs(60),
        in_flight: 64,
    }
}

async fn get(
    src: &Source,
    opts: &SftpOptions,
) -> (Result<sftp::Fetched, relay::FetchError>, Vec<u8>) {
    let mut out = Vec::new();
    let r = sftp::fetch(src, opts, &mut out, &mut |_| {}).await;
    (r, out)
}

fn image(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    airlift_tests::chmod(dir.path(), 0o755);
    let data = airlift_tests::pseudo_random(len, 77);
    let path = dir.path().join("ap3g3");
    std::fs::write(&path, &data).expect("write");
    airlift_tests::chmod(&path, 0o644);
    (dir, path, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_download_with_a_pinned_host_key() {
    let server = start().await;
    let (_d, path, data) = image(5_915_648);
    let opts = options(
        Credential::Password(PASSWORD.into()),
        HostKeyCheck::Fingerprint(server.fingerprint.clone()),
    );
    let (r, out) = get(&source(&server, &path), &opts).await;
    let done = r.expect("fetch");
    assert_eq!(done.bytes, data.len() as u64);
    assert_eq!(done.announced, Some(data.len() as u64));
    assert_eq!(
        done.chunk, 261_120,
        "limits@openssh.com raises the read size"
    );
    assert!(out == data, "content differs");
    // Progress: in order, with the total from FSTAT, ending at the size.
    let mut events = Vec::new();
    let mut sink = Vec::new();
    sftp::fetch(&source(&server, &path), &opts, &mut sink, &mut |p| {
        events.push(p)
    })
    .await
    .expect("fetch again");
    assert!(events.len() > 2, "{} events", events.len());
    assert!(events.windows(2).all(|w| w[0].done < w[1].done));
    assert!(events.iter().all(|p| p.total == Some(data.len() as u64)));
    assert_eq!(events.last().map(|p| p.done), Some(data.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_read_like_the_controller() {
    let server = start().await;
    let (_d, path, _) = image(1000);
    let port = server.addr.port();
    let good_key = HostKeyCheck::Fingerprint(server.fingerprint.clone());
    // Wrong password.
    let (r, _) = get(
        &source(&server, &path),
        &options(Credential::Password("wrong".into()), good_key.clone()),
    )
    .await;
    let Err(e) = r else {
        panic!("a wrong password got in")
    };
    assert_eq!(e.kind, ErrorKind::AuthenticationFailed);
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to download file sftp://*****@127.0.0.1:{port}{}: Authentication failed",
            path.display()
        )
    );
    // Missing file.
    let missing = path.with_file_name("ap1g6");
    let (r, _) = get(
        &source(&server, &missing),
        &options(Credential::Password(PASSWORD.into()), good_key),
    )
    .await;
    let Err(e) = r else {
        panic!("a missing file was fetched")
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.to_string().ends_with("/ap1g6: No such file or directory"),
        "{e}"
    );
    // A pinned fingerprint that is not the server's.
    let (r, _) = get(
        &source(&server, &path),
        &options(
            Credential::Password(PASSWORD.into()),
            HostKeyCheck::Fingerprint("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
    )
    .await;
    let Err(e) = r else {
        panic!("a wrong host key was trusted")
    };
    assert_eq!(e.kind, ErrorKind::HostKeyMismatch);
    assert!(e.to_string().contains(": Host key mismatch"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_first_use_then_mismatch() {
    let server = start().await;
    let other = start().await;
    let (_d, path, data) = image(70_000);
    let kh_dir = tempfile::tempdir().expect("tempdir");
    let known = kh_dir.path().join("known_hosts");
    let login = || Credential::Password(PASSWORD.into());
    // Unknown host without --accept-new-host-key: refused.
    let (r, _) = get(
        &source(&server, &path),
        &options(login(), HostKeyCheck::KnownHosts(known.clone())),
    )
    .await;
    let Err(e) = r else {
        panic!("an unknown host key was trusted")
    };
    assert_eq!(e.kind, ErrorKind::HostKeyMismatch);
    // Trust on first use records it; then it is known.
    let (r, out) = get(
        &source(&server, &path),
        &options(login(), HostKeyCheck::AcceptNew(known.clone())),
    )
    .await;
    r.expect("first use");
    assert!(out == data);
    let (r, _) = get(
        &source(&server, &path),
        &options(login(), HostKeyCheck::KnownHosts(known.clone())),
    )
    .await;
    r.expect("known now");
    // The other server's key recorded for this server's address: a mismatch.
    let port = server.addr.port();
    std::fs::write(&known, format!("[127.0.0.1]:{port} {}\n", other.public_key)).expect("write");
    let (r, _) = get(
        &source(&server, &path),
        &options(login(), HostKeyCheck::AcceptNew(known.clone())),
    )
    .await;
    let Err(e) = r else {
        panic!("a changed host key was trusted")
    };
    assert_eq!(e.kind, ErrorKind::HostKeyMismatch);
}
