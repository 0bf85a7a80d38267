//! The embedded DNS resolver of a user network (Docker's 127.0.0.11,
//! Podman's aardvark-dns).
//!
//! # Design
//!
//! One small resolver process per network with DNS, listening on the
//! network's gateway address, port 53, UDP and TCP, in the host's namespace.
//! Containers get `nameserver <gateway>` in their resolv.conf
//! ([`resolv_conf`]). This was chosen over Docker's 127.0.0.11 because:
//!
//! * skiff has no daemon: a resolver inside each container's namespace would
//!   need a process (or a DNAT rule and `route_localnet`) per container; one
//!   listener per network on an address the containers already route to
//!   needs neither.
//! * Living in the host's namespace, it can forward to any upstream the host
//!   uses, loopback ones (systemd-resolved's 127.0.0.53) included, which a
//!   container could not reach.
//!
//! The engine starts it on the first attach ([`ensure_running`]): the
//! caller binds the sockets and takes the network's `dns.lock`, then hands
//! all three descriptors to `COMMAND` (the engine's hidden verb, which calls
//! [`serve_inherited`]). Binding in the caller means errors surface in
//! `skiff run` and queries sent before the child is scheduled are queued by
//! the kernel, not lost; the inherited `flock` marks the resolver alive for
//! exactly as long as the process lives. [`stop`] ends it when the last
//! container leaves or the network is removed.
//!
//! Records come from the network's attachment files (container name,
//! aliases, 12-character short id, address), reloaded when the directory
//! changes. Local names are answered only to clients inside the network's
//! subnet, so other networks cannot enumerate its containers. Everything
//! else is forwarded verbatim to the upstreams over UDP (TCP when the answer
//! was truncated).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::attachment::Attachment;
use crate::lock::FileLock;

/// Environment variable carrying the resolver's configuration to the child.
pub const CONFIG_ENV: &str = "SKIFF_DNS_CONFIG";
/// Environment variable carrying the inherited descriptors (`lock,udp,tcp`).
const FDS_ENV: &str = "SKIFF_DNS_FDS";
/// Seconds resolvers may cache skiff's answers; short, as containers come and go.
const TTL: u32 = 10;
/// Forwarded queries in flight at once; beyond this, SERVFAIL.
const MAX_INFLIGHT: usize = 256;

/// Errors of the embedded resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket, file or process operation failed.
    #[error("dns resolver: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The resolver was started without its inherited configuration.
    #[error("dns resolver: {0}")]
    Config(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> DnsError {
    let context = context.into();
    move |source| DnsError::Io { context, source }
}

/// What a resolver serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverConfig {
    /// Directory of the network's attachment records.
    pub attachments_dir: PathBuf,
    /// Only clients in this subnet get local answers.
    pub subnet: Ipv4Net,
    /// Where other queries go, in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for one upstream.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Nameservers in a resolv.conf text, as socket addresses on port 53.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The resolv.conf for a container on a network with DNS: the resolver on
/// the gateway, and the host's `search` and `options` lines.
pub fn resolv_conf(dns_server: Ipv4Addr, host_resolv_conf: &str) -> String {
    let mut out = format!("nameserver {dns_server}\n");
    for line in host_resolv_conf.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search") | Some("options")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

/// Name and address records of a network.
#[derive(Debug, Default)]
struct Records {
    stamp: Option<SystemTime>,
    forward: HashMap<String, Vec<Ipv4Addr>>,
    reverse: HashMap<Ipv4Addr, String>,
}

impl Records {
    fn load(dir: &Path) -> Records {
        let mut records = Records {
            stamp: std::fs::metadata(dir).and_then(|m| m.modified()).ok(),
            ..Default::default()
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return records;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let Ok(a) = serde_json::from_slice::<Attachment>(&data) else {
                continue;
            };
            let mut names: Vec<String> = a.name.iter().cloned().collect();
            names.extend(a.aliases.iter().cloned());
            names.push(a.container_id.chars().take(12).collect());
            for n in &names {
                let key = n.trim_end_matches('.').to_ascii_lowercase();
                let ips = records.forward.entry(key).or_default();
                if !ips.contains(&a.ip) {
                    ips.push(a.ip);
                }
            }
            if let Some(name) = a.name.as_ref().or(names.first()) {
                records.reverse.insert(a.ip, name.clone());
            }
        }
        records
    }
}

struct Shared {
    config: ResolverConfig,
    records: Mutex<Records>,
    inflight: AtomicUsize,
}

impl Shared {
    /// Reloads the records when the attachments directory changed.
    fn refresh(&self) {
        let stamp = std::fs::metadata(&self.config.attachments_dir)
            .and_then(|m| m.modified())
            .ok();
        let mut records = self.records.lock().unwrap();
        if records.stamp != stamp || stamp.is_none() {
            *records = Records::load(&self.config.attachments_dir);
        }
    }

    /// A local answer to `query`, or `None` if it must be forwarded.
    fn answer(&self, query: &[u8], client: IpAddr) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return None,
        };
        if request.message_type() != MessageType::Query
            || request.op_code() != OpCode::Query
            || request.queries().len() != 1
        {
            return None;
        }
        let local_client = match client {
            IpAddr::V4(ip) => self.config.subnet.contains(&ip) || ip.is_loopback(),
            IpAddr::V6(_) => false,
        };
        if !local_client {
            return None;
        }
        let q = &request.queries()[0];
        let qname = q.name().to_ascii();
        let key = qname.trim_end_matches('.').to_ascii_lowercase();
        self.refresh();
        let records = self.records.lock().unwrap();
        let mut answers = Vec::new();
        if let Some(ips) = records.forward.get(&key) {
            if q.query_type() == RecordType::A || q.query_type() == RecordType::ANY {
                for ip in ips {
                    answers.push(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*ip))));
                }
            }
            // Known name, no record of the type (AAAA...): NOERROR, no answer.
        } else if let Some(ip) = reverse_name(&key) {
            let name = records.reverse.get(&ip)?;
            if q.query_type() == RecordType::PTR {
                let target = Name::from_ascii(format!("{name}.")).ok()?;
                answers.push(Record::from_rdata(
                    q.name().clone(),
                    TTL,
                    RData::PTR(PTR(target)),
                ));
            }
        } else {
            return None;
        }
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        header.set_recursion_available(true);
        header.set_response_code(ResponseCode::NoError);
        let mut response = Message::new();
        response.set_header(header);
        response.add_query(q.clone());
        for a in answers {
            response.add_answer(a);
        }
        response.to_vec().ok()
    }
}

/// `4.3.2.1.in-addr.arpa` to `1.2.3.4`.
fn reverse_name(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [d, c, b, a] = parts.as_slice() else {
        return None;
    };
    Some(Ipv4Addr::new(*a, *b, *c, *d))
}

/// A SERVFAIL answer to `query`, if it parses.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut header = Header::response_from_request(request.header());
    header.set_response_code(ResponseCode::ServFail);
    let mut response = Message::new();
    response.set_header(header);
    for q in request.queries() {
        response.add_query(q.clone());
    }
    response.to_vec().ok()
}

fn forward_udp(query: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(bind) else {
            continue;
        };
        if socket.connect(upstream).is_err()
            || socket.set_read_timeout(Some(timeout)).is_err()
            || socket.send(query).is_err()
        {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        loop {
            match socket.recv(&mut buf) {
                // Only accept the answer to this query's id.
                Ok(n) if n >= 2 && buf[..2] == query[..2] => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    None
}

fn forward_tcp(query: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = || -> io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(upstream, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            write_frame(&mut stream, query)?;
            read_frame(&mut stream)
        };
        if let Ok(answer) = attempt() {
            return Some(answer);
        }
    }
    None
}

/// Whether a DNS message has the TC (truncated) bit.
fn truncated(message: &[u8]) -> bool {
    message.get(2).is_some_and(|b| b & 0x02 != 0)
}

fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_frame(stream: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| io::Error::other("message too long"))?;
    let mut frame = Vec::with_capacity(data.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(data);
    stream.write_all(&frame)
}

/// A resolver with bound sockets, ready to [`Resolver::serve`].
pub struct Resolver {
    udp: UdpSocket,
    tcp: TcpListener,
    shared: Arc<Shared>,
}

impl Resolver {
    /// Binds UDP and TCP on `addr` (port 0 picks a free port, for tests).
    pub fn bind(addr: SocketAddr, config: ResolverConfig) -> Result<Resolver, DnsError> {
        let udp = UdpSocket::bind(addr).map_err(io_err(format!("binding udp {addr}")))?;
        let addr = udp
            .local_addr()
            .map_err(io_err("reading the bound address"))?;
        let tcp = TcpListener::bind(addr).map_err(io_err(format!("binding tcp {addr}")))?;
        Ok(Resolver::from_sockets(udp, tcp, config))
    }

    /// A resolver on sockets bound elsewhere (inherited from the engine).
    pub fn from_sockets(udp: UdpSocket, tcp: TcpListener, config: ResolverConfig) -> Resolver {
        Resolver {
            udp,
            tcp,
            shared: Arc::new(Shared {
                records: Mutex::new(Records::load(&config.attachments_dir)),
                config,
                inflight: AtomicUsize::new(0),
            }),
        }
    }

    /// The UDP address it answers on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Answers queries until a socket fails: UDP on this thread, TCP on one
    /// more, forwarded queries on a thread each (at most 256 at once).
    pub fn serve(self) -> Result<(), DnsError> {
        let shared = self.shared.clone();
        let tcp = self.tcp;
        std::thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve_tcp(stream, &shared));
            }
        });
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, client) = match self.udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("receiving a query")(e)),
            };
            let query = buf[..n].to_vec();
            if let Some(answer) = self.shared.answer(&query, client.ip()) {
                let _ = self.udp.send_to(&answer, client);
                continue;
            }
            if self.shared.inflight.fetch_add(1, Ordering::SeqCst) >= MAX_INFLIGHT {
                self.shared.inflight.fetch_sub(1, Ordering::SeqCst);
                if let Some(answer) = servfail(&query) {
                    let _ = self.udp.send_to(&answer, client);
                }
                continue;
            }
            let socket = self
                .udp
                .try_clone()
                .map_err(io_err("cloning the udp socket"))?;
            let shared = self.shared.clone();
            std::thread::spawn(move || {
                let answer = forward_udp(&query, &shared.config.upstreams, shared.config.timeout)
                    .or_else(|| servfail(&query));
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, client);
                }
                shared.inflight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn serve_tcp(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let client = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    while let Ok(query) = read_frame(&mut stream) {
        let (upstreams, timeout) = (&shared.config.upstreams, shared.config.timeout);
        // Upstreams are asked over UDP first (they may not serve TCP), and
        // over TCP when the answer did not fit.
        let answer = shared
            .answer(&query, client)
            .or_else(|| forward_udp(&query, upstreams, timeout).filter(|a| !truncated(a)))
            .or_else(|| forward_tcp(&query, upstreams, timeout))
            .or_else(|| servfail(&query));
        match answer {
            Some(a) if write_frame(&mut stream, &a).is_ok() => {}
            _ => return,
        }
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join("dns.lock")
}

fn pid_path(dir: &Path) -> PathBuf {
    dir.join("dns.pid")
}

/// Whether the resolver of the network whose state directory is `dir` runs.
pub fn is_running(dir: &Path) -> Result<bool, DnsError> {
    let path = lock_path(dir);
    Ok(FileLock::try_exclusive(&path)
        .map_err(io_err(format!("locking {}", path.display())))?
        .is_none())
}

/// Starts the resolver of the network whose state directory is `dir` unless
/// it runs: binds `listen` (UDP and TCP), then runs `command` (program and
/// arguments; it must call [`serve_inherited`]) detached, handing it the
/// sockets and the lock. Returns whether it started one.
pub fn ensure_running(
    dir: &Path,
    listen: SocketAddr,
    config: &ResolverConfig,
    command: &[String],
) -> Result<bool, DnsError> {
    let path = lock_path(dir);
    let Some(lock) =
        FileLock::try_exclusive(&path).map_err(io_err(format!("locking {}", path.display())))?
    else {
        return Ok(false);
    };
    let (program, args) = command
        .split_first()
        .ok_or_else(|| DnsError::Config("empty resolver command".into()))?;
    let udp = UdpSocket::bind(listen).map_err(io_err(format!("binding udp {listen}")))?;
    let tcp = TcpListener::bind(listen).map_err(io_err(format!("binding tcp {listen}")))?;
    let fds = [lock.file().as_raw_fd(), udp.as_raw_fd(), tcp.as_raw_fd()];
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dns.log"))
        .map_err(io_err(format!("opening {}", dir.join("dns.log").display())))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(
            CONFIG_ENV,
            serde_json::to_string(config).expect("resolver config serialises"),
        )
        .env(FDS_ENV, format!("{},{},{}", fds[0], fds[1], fds[2]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: the closure only calls setsid and fcntl on descriptors this
    // process owns, both async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::setsid();
            for fd in fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(io_err(format!("starting resolver {program}")))?;
    std::fs::write(pid_path(dir), child.id().to_string())
        .map_err(io_err(format!("writing {}", pid_path(dir).display())))?;
    // The child holds the lock and the sockets now.
    Ok(true)
}

/// Stops the resolver of the network whose state directory is `dir`, and
/// waits for it to exit. Returns whether one ran.
pub fn stop(dir: &Path) -> Result<bool, DnsError> {
    if !is_running(dir)? {
        let _ = std::fs::remove_file(pid_path(dir));
        return Ok(false);
    }
    let pid: i32 = std::fs::read_to_string(pid_path(dir))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| DnsError::Config(format!("no pid in {}", pid_path(dir).display())))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    // SAFETY: pid and signal are plain integers.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if raw >= 0 {
        // SAFETY: `raw` is a fresh descriptor from pidfd_open that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 2000) };
        // Reap it if it is our child (the engine process that started it).
        // SAFETY: waitpid with WNOHANG on a pid; no memory is passed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
    let _ = std::fs::remove_file(pid_path(dir));
    Ok(true)
}

/// Entry point of the resolver process started by [`ensure_running`]:
/// serves on the inherited sockets until killed.
pub fn serve_inherited() -> Result<(), DnsError> {
    let config: ResolverConfig = std::env::var(CONFIG_ENV)
        .ok()
        .and_then(|c| serde_json::from_str(&c).ok())
        .ok_or_else(|| DnsError::Config(format!("{CONFIG_ENV} is missing or invalid")))?;
    let fds: Vec<RawFd> = std::env::var(FDS_ENV)
        .ok()
        .map(|v| v.split(',').filter_map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    let [lock, udp, tcp] = fds[..] else {
        return Err(DnsError::Config(format!("{FDS_ENV} is missing or invalid")));
    };
    // SAFETY: the engine passed these descriptors to us for this purpose
    // (see ensure_running) and nothing else in this process owns them.
    let (_lock, udp, tcp) = unsafe {
        (
            OwnedFd::from_raw_fd(lock),
            UdpSocket::from_raw_fd(udp),
            TcpListener::from_raw_fd(tcp),
        )
    };
    for fd in [lock, udp.as_raw_fd(), tcp.as_raw_fd()] {
        // Keep them away from anything this process might run.
        // SAFETY: fcntl on descriptors owned above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Resolver::from_sockets(udp, tcp, config).serve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resolv_conf() {
        let text = "# c\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch example.com\noptions ndots:2\nnameserver bogus\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            resolv_conf(Ipv4Addr::new(10, 89, 0, 1), text),
            "nameserver 10.89.0.1\nsearch example.com\noptions ndots:2\n"
        );
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(reverse_name("example.com"), None);
        assert_eq!(reverse_name("1.in-addr.arpa"), None);
    }
}
