//! Our tftpd, in-process on loopback, for relay's tests (and [`sftpd`]: our sftpd).

pub mod sftpd;

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tftpd::proto::options::ServerLimits;
use tftpd::server::files::FileCache;
use tftpd::server::net::PortRange;
use tftpd::server::{Listener, ServerConfig, open_roots, serve};
use tftpd::syslog::{Captured, Logger};
use tokio_util::sync::CancellationToken;

/// Our tftpd serving `dir` on 127.0.0.1, stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// The server's log at verbosity 1 (`RRQ from …` lines).
    pub log: Captured,
    stop: CancellationToken,
}

/// Entries of `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A scripted server on 127.0.0.1 that answers the first request with one full 512-byte block
/// and then stays silent for `hold` (keeping its port, so no ICMP error reaches the client):
/// a fetch that starts and stalls. Returns its port and the thread to join.
pub fn one_block_then_silence(hold: Duration) -> (u16, std::thread::JoinHandle<()>) {
    let sock = StdUdp::bind("127.0.0.1:0").expect("bind");
    let port = sock.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        if let Ok((_, client)) = sock.recv_from(&mut buf) {
            let mut d = vec![0, 3, 0, 1];
            d.extend_from_slice(&[0xAB; 512]);
            let _ = sock.send_to(&d, client);
        }
        std::thread::sleep(hold);
    });
    (port, thread)
}

impl Server {
    /// Log lines (at verbosity 1) that start with `prefix`: `RRQ from 127.0.0.1 filename ap1g8`
    /// counts the requests for ap1g8.
    pub fn count_log(&self, prefix: &str) -> usize {
        self.log
            .lines()
            .into_iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn start(dir: &Path) -> Server {
    start_with_retransmit(dir, Duration::from_secs(1))
}

/// Like [`start`], with the server's first retransmission after `retransmit` instead of 1 s
/// (a lossy-link test shortens it so that each loss costs little time).
pub fn start_with_retransmit(dir: &Path, retransmit: Duration) -> Server {
    let (logger, log) = Logger::capture(1);
    let sock = StdUdp::bind("127.0.0.1:0").expect("bind");
    let listener = Listener::from_std(sock).expect("listener");
    let addr = listener.addr;
    let config = Arc::new(ServerConfig {
        roots: open_roots(true, &[dir.to_path_buf()]).expect("roots"),
        create: false,
        permissive: true,
        limits: ServerLimits::default(),
        retransmit,
        ports: PortRange::new(None),
        remap: Default::default(),
        log: logger,
        cache: Arc::new(FileCache::new()),
    });
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = serve(vec![listener], config, token, None).await;
    });
    Server { addr, log, stop }
}
