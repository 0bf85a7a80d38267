//! Scaffolding of the integration tests: namespaces, bridges, subnets and
//! nftables tables unique to each test, removed on drop even when the test
//! fails, and tiny TCP/UDP/DNS peers. Traffic only goes to loopback and to
//! namespaces the tests create.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use skiff_network::{netns, Network, NetworkOptions, Networking, NetworkingConfig};

/// A short random suffix for names.
pub fn unique() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// A random /24 in 10.200.0.0-10.250.255.0.
pub fn random_subnet() -> Ipv4Net {
    let b = 200 + rand::random::<u8>() % 51;
    let c = rand::random::<u8>();
    Ipv4Net::new(Ipv4Addr::new(10, b, c, 0), 24).unwrap()
}

/// A random unprivileged port for publishing.
/// A random TCP port that is free right now, below the kernel's ephemeral range
/// (32768-60999), so that no client connection of a test running beside this one takes it.
pub fn random_port() -> u16 {
    loop {
        let port = 20000 + rand::random::<u16>() % 12000;
        if std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("skt-{}", unique());
        sh(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A namespace standing in for another machine, joined to the host by a veth
/// pair on its own /24: the host side is `.1`, the test host `.2`.
pub struct ExternalHost {
    pub ns: Netns,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
}

impl ExternalHost {
    pub fn new() -> ExternalHost {
        let ns = Netns::new();
        let subnet = random_subnet();
        let base = u32::from(subnet.network());
        let host_ip = Ipv4Addr::from(base + 1);
        let ip = Ipv4Addr::from(base + 2);
        let host_if = format!("sx{}", unique());
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ExternalHost {
            ns,
            host_if,
            host_ip,
            ip,
        }
    }
}

impl Drop for ExternalHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

/// A `Networking` on a private state root and nftables table; on drop every
/// attachment, resolver, bridge and the table go away.
pub struct Env {
    pub net: Networking,
    pub dir: tempfile::TempDir,
    pub table: String,
}

impl Env {
    pub fn new() -> Env {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut NetworkingConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let table = format!("skt_{}", unique());
        let mut config = NetworkingConfig::new(dir.path().join("networks"));
        config.table = table.clone();
        configure(&mut config);
        Env {
            net: Networking::new(config).unwrap(),
            dir,
            table,
        }
    }

    /// A network with a random subnet and a unique bridge name.
    pub fn network(&self, isolated: bool, dns: bool) -> Network {
        let name = format!("n{}", unique());
        let options = NetworkOptions {
            subnet: Some(random_subnet()),
            bridge: Some(format!("skt{}", unique())),
            isolated,
            dns,
            gateway: None,
            internal: false,
        };
        self.net.create_network(&name, &options).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let none: [&str; 0] = [];
        if let Err(e) = self.net.gc(&none) {
            eprintln!("cleanup gc: {e}");
        }
        for n in self.net.networks().unwrap_or_default() {
            if let Err(e) = self.net.remove_network(&n.name) {
                eprintln!("cleanup of network {}: {e}", n.name);
                let _ = Command::new("ip").args(["link", "del", &n.bridge]).status();
            }
        }
        let _ = self.net.remove_rules();
    }
}

/// A TCP server that answers each line with `<peer ip> <line>`, listening
/// on `port` (0: any) inside `ns` (the host when `None`).
pub fn tcp_server(ns: Option<&Path>, port: u16) -> SocketAddr {
    let bind = move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
    let listener = match ns {
        Some(ns) => netns::run_in(ns, bind).unwrap(),
        None => bind(),
    };
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let peer = stream.peer_addr().unwrap().ip();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let _ = (&stream).write_all(format!("{peer} {line}").as_bytes());
                    line.clear();
                }
            });
        }
    });
    addr
}

/// Connects to `addr` from `ns` (the host when `None`), sends a line and
/// returns the server's answer: the address it saw us come from.
pub fn tcp_request(ns: Option<&Path>, addr: SocketAddr) -> std::io::Result<String> {
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    let stream = match ns {
        Some(ns) => netns::run_in(ns, connect).unwrap()?,
        None => connect()?,
    };
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    (&stream).write_all(b"ping\n")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let seen = line
        .strip_suffix(" ping\n")
        .ok_or_else(|| std::io::Error::other(format!("unexpected answer {line:?}")))?;
    Ok(seen.to_string())
}

/// A UDP server in `ns` answering each datagram with the sender's address.
pub fn udp_server(ns: &Path, port: u16) -> SocketAddr {
    let socket = netns::run_in(ns, move || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap()
    })
    .unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(peer.ip().to_string().as_bytes(), peer);
        }
    });
    addr
}

/// Sends a datagram to `addr` from the host and returns the answer.
pub fn udp_request(addr: SocketAddr) -> std::io::Result<String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(b"ping", addr)?;
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `ping -c1` from `ns` (busybox).
pub fn ping(ns: &Netns, ip: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "busybox", "ping", "-c", "1", "-W", "2",
        ])
        .arg(ip.to_string())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// An upstream DNS server on loopback answering every A query with `answer`.
pub fn upstream_dns(answer: Ipv4Addr) -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut response = Message::new();
            response
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_available(true);
            for q in query.queries() {
                response.add_query(q.clone());
                if q.query_type() == RecordType::A {
                    response.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(answer)),
                    ));
                }
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer);
        }
    });
    addr
}

/// An A query for `name` to `server` over UDP from `ns`: the response code
/// and the addresses.
pub fn dns_query(
    ns: &Path,
    server: SocketAddr,
    name: &str,
    tcp: bool,
) -> std::io::Result<(ResponseCode, Vec<Ipv4Addr>)> {
    let mut query = Message::new();
    query
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let answer = netns::run_in(ns, move || -> std::io::Result<Vec<u8>> {
        if tcp {
            use std::io::Read;
            let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(&bytes);
            stream.write_all(&frame)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut buf)?;
            Ok(buf)
        } else {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.set_read_timeout(Some(Duration::from_secs(3)))?;
            socket.send_to(&bytes, server)?;
            let mut buf = vec![0u8; 4096];
            let (n, _) = socket.recv_from(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        }
    })
    .unwrap()?;
    let message = Message::from_vec(&answer).map_err(std::io::Error::other)?;
    let ips = message
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    Ok((message.response_code(), ips))
}

/// Links whose master is `bridge`.
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    sh(&["ip", "-o", "link", "show", "master", bridge])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}
