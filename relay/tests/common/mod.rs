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
