//! Flags checked at run time, not just parsed: -R, -B, -r, -U, -4/-6 and Debian's `:PORT`
//! form on wildcard sockets, the reply address chosen with IP_PKTINFO, and netascii both ways.

#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlift_tests::{
    Opcode, Packet, RawClient, ServeDir, TftpServer, encode_data, run_with_timeout,
};

const BIN: &str = env!("CARGO_BIN_EXE_tftpd");

fn oack_of(r: &airlift_tests::Received) -> Vec<(String, String)> {
    match &r.packet {
        Packet::Oack(o) => o.clone(),
        other => panic!("expected an OACK, got {other:?}"),
    }
}

#[test]
fn b_clamps_blksize_and_r_refuses_tsize() {
    let dir = ServeDir::new();
    dir.write("f", &[7u8; 5000]);
    let server = TftpServer::serve(
        BIN,
        &["-B", "1468", "-r", "tsize", "-u", "root"],
        dir.path(),
    );
    let c = RawClient::new(server.addr());
    let first = c.request(
        Opcode::Rrq,
        b"f",
        b"octet",
        &[("blksize", "8192"), ("tsize", "0")],
    );
    // Clamped to -B, and tsize left out as if unknown (tftpd-hpa ignores refused options).
    assert_eq!(
        oack_of(&first),
        [("blksize".to_string(), "1468".to_string())]
    );
    c.send_ack_to(first.from, 0);
    match c.expect_packet(Duration::from_secs(5), "DATA 1").packet {
        Packet::Data { block: 1, payload } => assert_eq!(payload.len(), 1468),
        other => panic!("{other:?}"),
    }
}

#[test]
fn r_transfers_use_ports_from_the_range() {
    let dir = ServeDir::new();
    dir.write("f", b"ranged");
    // A one-port range that is free right now: every transfer must come from it.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let range = format!("{port}:{port}");
    let server = TftpServer::serve(BIN, &["-R", &range, "-u", "root"], dir.path());
    let c = RawClient::new(server.addr());
    // The readiness probe's own transfer used the only port of the range; until its socket
    // is closed a request finds the range busy and gets no answer (as with tftpd-hpa), so
    // ask again a few times.
    let first = (0..5)
        .find_map(|_| {
            c.send_request(Opcode::Rrq, b"f", b"octet", &[]);
            c.recv_within(Duration::from_secs(2))
        })
        .expect("no answer from the one-port range in 5 tries");
    assert_eq!(first.from.port(), port, "transfer ID outside -R {range}");
    assert!(matches!(first.packet, Packet::Data { block: 1, .. }));
    c.send_ack_to(first.from, 1);
}

#[test]
fn u_sets_the_mode_of_created_files() {
    let dir = ServeDir::new();
    airlift_tests::chmod(dir.path(), 0o777);
    let server = TftpServer::serve(BIN, &["-c", "-U", "022", "-u", "root"], dir.path());
    let c = RawClient::new(server.addr());
    let ack0 = c.request(Opcode::Wrq, b"new", b"octet", &[]);
    assert!(
        matches!(ack0.packet, Packet::Ack { block: 0 }),
        "{:?}",
        ack0.packet
    );
    c.send_raw(&encode_data(1, b"hello"), ack0.from);
    let ack1 = c.expect_packet(Duration::from_secs(5), "ACK 1");
    assert!(matches!(ack1.packet, Packet::Ack { block: 1 }));
    let meta = std::fs::metadata(dir.path().join("new")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(dir.read("new"), b"hello");
}

/// Starts the server on a wildcard address: `-a :PORT` (Debian's TFTP_ADDRESS=":69" form).
fn wildcard(extra: &[&str], dir: &Path) -> TftpServer {
    let extra: Vec<OsString> = extra.iter().map(OsString::from).collect();
    let dir = dir.as_os_str().to_owned();
    TftpServer::start_with(BIN, IpAddr::V4(Ipv4Addr::LOCALHOST), |addr| {
        let mut v: Vec<OsString> =
            vec!["-L".into(), "-a".into(), format!(":{}", addr.port()).into()];
        v.extend(extra.iter().cloned());
        v.extend(["-u".into(), "root".into(), "-s".into(), dir.clone()]);
        v
    })
}

fn has_ipv6_loopback() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("00000000000000000000000000000001") && l.ends_with("lo"))
}

#[test]
fn colon_port_listens_on_both_families_and_replies_from_the_address_asked() {
    assert!(has_ipv6_loopback(), "this machine has no ::1 on lo");
    let dir = ServeDir::new();
    dir.write("f", b"both families");
    let server = wildcard(&[], dir.path());
    let port = server.addr().port();
    for target in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        // Another loopback address: on a wildcard socket the reply must come from the address
        // the request was sent to (IP_PKTINFO), or the client would drop it.
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let c = RawClient::new(SocketAddr::new(target, port));
        let first = c.request(Opcode::Rrq, b"f", b"octet", &[]);
        assert_eq!(first.from.ip(), target, "reply from the wrong address");
        match first.packet {
            Packet::Data { block: 1, payload } => assert_eq!(payload, b"both families"),
            other => panic!("{other:?}"),
        }
        c.send_ack_to(first.from, 1);
    }
}

#[test]
fn minus_4_and_minus_6_limit_a_wildcard_listener_to_one_family() {
    assert!(has_ipv6_loopback(), "this machine has no ::1 on lo");
    let dir = ServeDir::new();
    dir.write("f", b"x");
    let v4 = wildcard(&["-4"], dir.path());
    let p = v4.addr().port();
    let c = RawClient::new(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), p));
    c.send_request(Opcode::Rrq, b"f", b"octet", &[]);
    assert!(
        c.recv_within(Duration::from_millis(700)).is_none(),
        "-4 answered on IPv6"
    );
    drop(v4);
    // -6: the readiness probe goes to 127.0.0.1, so start by hand and probe ::1.
    let port = UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args(["-L", "-6", "-a", &format!(":{port}"), "-u", "root", "-s"])
        .arg(dir.path())
        .spawn()
        .unwrap();
    let six = RawClient::new(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port));
    let mut answered = false;
    for _ in 0..25 {
        six.send_request(Opcode::Rrq, b"f", b"octet", &[]);
        if let Some(r) = six.recv_within(Duration::from_millis(200)) {
            answered = matches!(r.packet, Packet::Data { .. });
            six.send_ack_to(r.from, 1);
            break;
        }
    }
    let four = RawClient::new(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    four.send_request(Opcode::Rrq, b"f", b"octet", &[]);
    let v4_answer = four.recv_within(Duration::from_millis(700));
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "-6 did not answer on IPv6");
    assert!(v4_answer.is_none(), "-6 answered on IPv4");
}

#[test]
fn netascii_read_converts_line_ends_on_the_wire() {
    let dir = ServeDir::new();
    dir.write("cfg.txt", b"line1\nline2\r\nbare\rend");
    let server = TftpServer::serve(BIN, &["-u", "root"], dir.path());
    let c = RawClient::new(server.addr());
    let first = c.request(Opcode::Rrq, b"cfg.txt", b"netascii", &[]);
    match first.packet {
        Packet::Data { block: 1, payload } => {
            assert_eq!(payload, b"line1\r\nline2\r\0\r\nbare\r\0end");
        }
        other => panic!("{other:?}"),
    }
    c.send_ack_to(first.from, 1);
}

#[test]
fn netascii_round_trip_with_tftp_hpa_in_ascii_mode() {
    let dir = ServeDir::new();
    airlift_tests::chmod(dir.path(), 0o777);
    // Long enough to cross block boundaries, with CR LF, bare CR and LF everywhere.
    let text: Vec<u8> = (0..3000)
        .flat_map(|i| match i % 7 {
            0 => b"\n".to_vec(),
            3 => b"\r".to_vec(),
            5 => b"\r\n".to_vec(),
            _ => format!("{i}").into_bytes(),
        })
        .collect();
    dir.write("cfg.txt", &text);
    let server = TftpServer::serve(BIN, &["-c", "-u", "root"], dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let got = tmp.path().join("got.txt");
    let port = server.addr().port().to_string();
    let get = run_with_timeout(
        Command::new("tftp")
            .args(["-m", "netascii", "127.0.0.1", &port, "-c", "get", "cfg.txt"])
            .arg(&got),
        Duration::from_secs(60),
    );
    assert!(got.exists(), "{get:?}");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        text,
        "netascii RRQ did not round-trip"
    );
    let put = run_with_timeout(
        Command::new("tftp")
            .args(["-m", "netascii", "127.0.0.1", &port, "-c", "put"])
            .arg(&got)
            .arg("up.txt"),
        Duration::from_secs(60),
    );
    assert!(
        !String::from_utf8_lossy(&put.stdout).contains("Error"),
        "{put:?}"
    );
    assert_eq!(dir.read("up.txt"), text, "netascii WRQ did not round-trip");
}
