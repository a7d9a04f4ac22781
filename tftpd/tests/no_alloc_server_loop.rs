//! "No heap allocation per DATA block", for the real server loop: the library's `serve()`
//! runs in-process on tokio, a raw client downloads lock-step over loopback, and a counting
//! global allocator sees every allocation in the process (server threads included) while
//! blocks 200..3800 go by. The client itself only uses fixed buffers.

#![allow(clippy::unwrap_used)]

use airlift_tests::{CountingAllocator, allocations};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tftpd::proto::options::ServerLimits;
use tftpd::server::files::FileCache;
use tftpd::server::net::PortRange;
use tftpd::server::{Listener, ServerConfig, open_roots, serve};
use tftpd::syslog::Logger;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn server_loop_does_not_allocate_per_block() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file: Vec<u8> = (0..512 * 4000 + 100).map(|i| (i % 241) as u8).collect();
    let path = dir.path().join("ap1g8");
    std::fs::write(&path, &file).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let std_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = std_sock.local_addr().unwrap();
    let config = Arc::new(ServerConfig {
        roots: open_roots(true, &[dir.path().to_path_buf()]).unwrap(),
        create: false,
        permissive: false,
        limits: ServerLimits::default(),
        retransmit: Duration::from_secs(1),
        ports: PortRange::new(None),
        remap: RwLock::new(None),
        log: Logger::stderr(0),
        cache: Arc::new(FileCache::new()),
    });
    let server = {
        let shutdown = shutdown.clone();
        runtime.spawn(async move {
            let listener = Listener::from_std(std_sock).unwrap();
            serve(vec![listener], config, shutdown, None).await
        })
    };

    // A lock-step client with fixed buffers.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(b"\x00\x01ap1g8\x00octet\x00", server_addr)
        .unwrap();
    let mut buf = [0u8; 600];
    let mut ack = [0u8, 4, 0, 0];
    let mut expected: u16 = 1;
    let mut received = 0usize;
    let (mut at_200, mut at_3800) = (0, 0);
    loop {
        let (n, from) = client.recv_from(&mut buf).expect("server went silent");
        assert_eq!(buf[1], 3, "not DATA");
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        if block != expected {
            continue;
        }
        received += n - 4;
        match block {
            200 => at_200 = allocations(),
            3800 => at_3800 = allocations(),
            _ => {}
        }
        ack[2..4].copy_from_slice(&buf[2..4]);
        client.send_to(&ack, from).unwrap();
        if n - 4 < 512 {
            break;
        }
        expected += 1;
    }
    assert_eq!(received, file.len());
    shutdown.cancel();
    runtime.block_on(server).unwrap().unwrap();
    assert_eq!(
        at_3800 - at_200,
        0,
        "the server allocated during 3600 steady-state blocks"
    );
}
