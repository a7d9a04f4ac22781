//! `cp new.img ap1g8` truncates `ap1g8` in place while APs may be downloading it. A server
//! reading it through a memory map would die of SIGBUS; ours must abort that one transfer
//! with an ERROR (never sending zeros as image bytes) and keep serving everyone else.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use airlift_tests::TftpServer;

const TFTPD: &str = env!("CARGO_BIN_EXE_tftpd");

fn rrq(name: &str) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b"\0octet\0");
    v
}

#[test]
fn file_truncated_under_a_transfer_aborts_it_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = dir.path().join("ap1g8");
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&image, &content).unwrap();
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut server = TftpServer::serve(TFTPD, &["-u", "root", "-T", "100000"], dir.path());
    let port = server.addr().port();

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(&rrq("ap1g8"), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 600];
    let mut next = 1u16;
    let mut error = None;
    for _ in 0..5000 {
        let (n, from) = client.recv_from(&mut buf).expect("server went silent");
        match (buf[1], u16::from_be_bytes([buf[2], buf[3]])) {
            (3, block) => {
                if block == next {
                    // Every byte ever sent is the file's real content: never zeros.
                    let off = (usize::from(block) - 1) * 512;
                    assert_eq!(&buf[4..n], &content[off..off + (n - 4)], "block {block}");
                    next += 1;
                }
                if block == 20 {
                    // Someone copies a shorter image over it, in place.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&image)
                        .unwrap()
                        .set_len(4096)
                        .unwrap();
                }
                client.send_to(&[0, 4, buf[2], buf[3]], from).unwrap();
            }
            (5, _) => {
                error = Some(String::from_utf8_lossy(&buf[4..n - 1]).into_owned());
                break;
            }
            other => panic!("unexpected packet {other:?}"),
        }
    }
    assert_eq!(error.as_deref(), Some("File changed during transfer"));
    assert!(server.is_running(), "server died");

    // The server keeps serving: the new (short) file in full.
    let out = dir.path().join("got");
    let ok = Command::new("timeout")
        .args(["20", "curl", "-s", "-o"])
        .arg(&out)
        .arg(format!("tftp://127.0.0.1:{port}/ap1g8"))
        .status()
        .expect("curl missing: apt-get install curl")
        .success();
    assert!(ok);
    assert_eq!(std::fs::read(&out).unwrap(), &content[..4096]);
}
