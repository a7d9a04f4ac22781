//! Sockets: the listening socket learns which local address each request arrived on
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), and each transfer gets its own socket bound to that
//! address, on an ephemeral port or one from `-R lo:hi`, as tftpd-hpa does.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::udp::TransferSocket;

/// Asks the kernel to report each datagram's destination address (best effort: without it,
/// transfers bind to the listening address, which is right unless that is a wildcard on a
/// multi-homed host).
pub fn enable_pktinfo(sock: &std::net::UdpSocket) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    // SAFETY: `fd` is the open socket borrowed from `sock` for the duration of the calls.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match sock.local_addr()? {
        SocketAddr::V4(_) => setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?,
        SocketAddr::V6(_) => setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?,
    }
    Ok(())
}

/// One datagram received on a listening socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes received.
    pub len: usize,
    /// The sender.
    pub peer: SocketAddr,
    /// The local address the datagram was sent to, when the kernel said.
    pub local: Option<IpAddr>,
}

/// Receives one datagram with its destination address.
pub async fn recv_with_dest(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    sock.async_io(Interest::READABLE, || {
        let mut iov = [io::IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
        let msg = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(cmsg.as_mut_slice()),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let peer = msg
            .address
            .as_ref()
            .and_then(sockaddr_to_std)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without source"))?;
        let mut local = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            info.ipi_addr.s_addr,
                        ))));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        Ok(Received {
            len: msg.bytes,
            peer,
            local,
        })
    })
    .await
}

fn sockaddr_to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
}

/// Where transfer sockets get their ports.
#[derive(Debug)]
pub struct PortRange {
    range: Option<(u16, u16)>,
    next: AtomicU32,
}

impl PortRange {
    /// Ephemeral ports (`None`) or `lo..=hi` (`-R`).
    pub fn new(range: Option<(u16, u16)>) -> PortRange {
        PortRange {
            range,
            next: AtomicU32::new(0),
        }
    }

    /// Binds a transfer socket on `ip`: port 0, or the next free port of the range.
    pub fn bind(&self, ip: IpAddr) -> io::Result<TransferSocket> {
        let Some((lo, hi)) = self.range else {
            return TransferSocket::new(bind_socket(SocketAddr::new(ip, 0))?);
        };
        let span = u32::from(hi - lo) + 1;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "port range exhausted");
        for i in 0..span {
            let port = lo + ((start.wrapping_add(i)) % span) as u16;
            match bind_socket(SocketAddr::new(ip, port)) {
                Ok(s) => return TransferSocket::new(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// A UDP socket bound to `addr` (IPv6 sockets are v6-only, as tftpd-hpa's).
pub fn bind_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = Domain::for_address(addr);
    let s = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The address a reply to `peer` should come from when the kernel did not report one.
pub fn fallback_local(listen: SocketAddr, peer: SocketAddr) -> IpAddr {
    let ip = listen.ip();
    if !ip.is_unspecified() {
        return ip;
    }
    match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}
