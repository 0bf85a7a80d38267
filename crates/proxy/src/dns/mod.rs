//! The cluster DNS: what CoreDNS's `kubernetes` and `forward` plugins answer, from the
//! shared caches.
//!
//! Names under the cluster domain (`cluster.local`):
//!
//! | name | answer |
//! |---|---|
//! | `<svc>.<ns>.svc.<domain>` | A: the cluster IP; headless Services: the usable endpoint addresses |
//! | `<host>.<svc>.<ns>.svc.<domain>` | A: the endpoint whose `hostname` is `<host>` (StatefulSet pods), or whose address dashed is `<host>` |
//! | `_<port>._<proto>.<svc>.<ns>.svc.<domain>` | SRV per port (headless: per endpoint), with the targets' A records as additionals |
//! | `<a-b-c-d>.<ns>.pod.<domain>` | A: the address `a.b.c.d` written in the name, unchecked (CoreDNS' `pods insecure`, kubeadm's default) |
//! | ExternalName Services | CNAME to `spec.externalName` |
//! | anything else in the domain | NXDOMAIN, with the zone's SOA |
//!
//! PTR queries for cluster IPs and named endpoints are answered; every other name is
//! forwarded, verbatim, to the node's upstream resolvers (UDP; TCP when a TCP client's
//! answer came back truncated).
//!
//! # Where it listens
//!
//! On the gateway address of the node's pod network, port 53 (UDP and TCP), bound with
//! `IP_FREEBIND` so it can start before the bridge has its address. Pods get the
//! `kube-dns` Service's cluster IP (the tenth of the service CIDR) as nameserver, and the
//! service proxy leads that address to this listener through an EndpointSlice that
//! [`ensure_service`] maintains: cluster DNS is a Service like any other, and nothing
//! needs the cluster IP on an interface.
//!
//! # The UDP hot path
//!
//! One task reads the UDP socket until it would block, up to 32 queries per `recvmmsg`,
//! answers what the records alone answer in place, without a task per query, and sends
//! those answers with one `sendmmsg` (`mmsg.rs`). An answer is encoded once per distinct
//! query (its bytes after the ID, the question name lower-cased) and kept in an answer
//! cache (`cache.rs`) until the records change, so a repeated query costs a hash lookup,
//! a copy, and the ID and the question name written back as asked. Records carry the
//! fixed [`TTL`], so a kept answer is what a fresh one would be; answers that needed the
//! upstreams are never kept. Over UDP an answer longer than the client takes (512 bytes,
//! or its EDNS payload size) keeps the records that fit and sets TC, so the client asks
//! again over TCP.

mod cache;
mod mmsg;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::caches::Caches;
use crate::model::{self, EndpointAddr};

use cache::UdpResponder;

/// Seconds clients may cache answers (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;
/// The name of the cluster DNS Service, in `kube-system`.
pub const SERVICE_NAME: &str = "kube-dns";
/// The `managed-by` of the EndpointSlice [`ensure_service`] writes.
const MANAGER: &str = "skiff-cluster-dns";

/// Errors of the cluster DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be set up.
    #[error("cluster dns: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The `kube-dns` Service or its endpoints could not be written.
    #[error("cluster dns: writing {object}: {source}")]
    Api {
        /// The object.
        object: String,
        /// The API error.
        source: kube::Error,
    },
}

/// How the cluster DNS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// Where other names are forwarded, in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for one upstream.
    pub timeout: Duration,
}

/// One Service, as DNS sees it.
#[derive(Debug, Clone, Default)]
struct ServiceRecord {
    cluster_ip: Option<Ipv4Addr>,
    headless: bool,
    external_name: Option<String>,
    /// `(name, protocol lowercased, port)`.
    ports: Vec<(String, String, u16)>,
    endpoints: Vec<EndpointAddr>,
}

/// The names the cluster DNS knows, rebuilt from the caches on every change.
#[derive(Debug, Default)]
pub struct Records {
    services: HashMap<(String, String), ServiceRecord>,
    reverse: HashMap<Ipv4Addr, String>,
}

impl Records {
    /// Indexes `services` and their `endpoints` under `domain`.
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        endpoints: &BTreeMap<(String, String), Vec<EndpointAddr>>,
        domain: &str,
    ) -> Records {
        let mut records = Records::default();
        for svc in services {
            let Some(spec) = &svc.spec else { continue };
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let key = (ns.clone(), name.clone());
            let eps: Vec<EndpointAddr> = endpoints
                .get(&key)
                .map(|e| model::usable(e).into_iter().cloned().collect())
                .unwrap_or_default();
            let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
            let fqdn = format!("{name}.{ns}.svc.{domain}");
            if let Some(ip) = cluster_ip {
                records.reverse.insert(ip, fqdn.clone());
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if headless {
                for e in &eps {
                    if let Some(h) = &e.hostname {
                        records.reverse.insert(e.ip, format!("{h}.{fqdn}"));
                    }
                }
            }
            let external_name = (spec.type_.as_deref() == Some("ExternalName"))
                .then(|| spec.external_name.clone())
                .flatten();
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        u16::try_from(p.port).ok()?,
                    ))
                })
                .collect();
            records.services.insert(
                key,
                ServiceRecord {
                    cluster_ip,
                    headless,
                    external_name,
                    ports,
                    endpoints: eps,
                },
            );
        }
        records
    }
}

/// The current records, and how often they were replaced: answer caches compare that
/// generation to forget what older records said.
#[derive(Debug, Default)]
struct SharedRecords {
    current: RwLock<Arc<Records>>,
    generation: AtomicU64,
}

impl SharedRecords {
    fn replace(&self, records: Records) {
        *self.current.write().unwrap() = Arc::new(records);
        // After the write: a reader that sees the new generation reads the new records.
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The generation, read before the records, so an answer made from them is at least
    /// as new as the generation it is filed under.
    fn snapshot(&self) -> (u64, Arc<Records>) {
        let generation = self.generation();
        (generation, self.current.read().unwrap().clone())
    }
}

/// What to do with a query.
#[derive(Debug)]
pub enum Reply {
    /// Send this answer.
    Answer(Message),
    /// Not ours: forward it.
    Forward,
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", text.trim_end_matches('.'))).ok()
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// Answers `request` from `records`, or says it must be forwarded.
pub fn answer(records: &Records, domain: &str, request: &Message) -> Reply {
    if request.message_type() != MessageType::Query
        || request.op_code() != OpCode::Query
        || request.queries().len() != 1
    {
        return Reply::Forward;
    }
    let query = &request.queries()[0];
    let qname = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let qtype = query.query_type();
    let mut response = Message::new();
    let mut header = Header::response_from_request(request.header());
    header.set_authoritative(true);
    header.set_recursion_available(true);
    response.add_query(query.clone());
    let record = |owner: &str, rdata: RData| name(owner).map(|n| Record::from_rdata(n, TTL, rdata));

    if let Some(ip) = reverse_name(&qname) {
        let Some(target) = records.reverse.get(&ip) else {
            return Reply::Forward;
        };
        if qtype == RecordType::PTR {
            if let Some(t) = name(target) {
                response.add_answers(record(&qname, RData::PTR(PTR(t))));
            }
        }
        response.set_header(header);
        return Reply::Answer(response);
    }
    let Some(rest) = qname
        .strip_suffix(domain)
        .and_then(|r| r.strip_suffix('.').or((r.is_empty()).then_some("")))
    else {
        if qname != domain {
            return Reply::Forward;
        }
        header.set_response_code(ResponseCode::NXDomain);
        response.set_header(header);
        add_soa(&mut response, domain);
        return Reply::Answer(response);
    };
    let labels: Vec<&str> = if rest.is_empty() {
        vec![]
    } else {
        rest.split('.').collect()
    };
    if let [host, _ns, "pod"] = labels.as_slice() {
        // Pod records as CoreDNS' `pods insecure` makes them: the dashed address is the
        // answer, whichever namespace is named.
        match host.replace('-', ".").parse::<Ipv4Addr>() {
            Ok(ip) => {
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    response.add_answers(record(&qname, RData::A(A(ip))));
                }
            }
            _ => {
                header.set_response_code(ResponseCode::NXDomain);
                add_soa(&mut response, domain);
            }
        }
        response.set_header(header);
        return Reply::Answer(response);
    }
    let found = match labels.as_slice() {
        [svc, ns, "svc"] => lookup(records, ns, svc).map(|s| (s, None)),
        [first, svc, ns, "svc"] => lookup(records, ns, svc).map(|s| (s, Some(vec![*first]))),
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            lookup(records, ns, svc).map(|s| (s, Some(vec![*port, *proto])))
        }
        _ => None,
    };
    let Some(((svc_name, ns, svc), sub)) = found else {
        header.set_response_code(ResponseCode::NXDomain);
        response.set_header(header);
        add_soa(&mut response, domain);
        return Reply::Answer(response);
    };
    let fqdn = format!("{svc_name}.{ns}.svc.{domain}");
    let mut ok = true;
    match sub.as_deref() {
        None => {
            if let Some(ext) = &svc.external_name {
                if let Some(target) = name(ext) {
                    response.add_answers(record(&qname, RData::CNAME(CNAME(target))));
                }
            } else if matches!(qtype, RecordType::A | RecordType::ANY) {
                let ips: Vec<Ipv4Addr> = match (svc.headless, svc.cluster_ip) {
                    (false, Some(ip)) => vec![ip],
                    _ => svc.endpoints.iter().map(|e| e.ip).collect(),
                };
                for ip in ips {
                    response.add_answers(record(&qname, RData::A(A(ip))));
                }
            }
        }
        Some([host]) => {
            let hit = svc
                .endpoints
                .iter()
                .find(|e| e.hostname.as_deref() == Some(host) || dashed(e.ip) == *host);
            match hit {
                Some(e) if svc.headless => {
                    if matches!(qtype, RecordType::A | RecordType::ANY) {
                        response.add_answers(record(&qname, RData::A(A(e.ip))));
                    }
                }
                _ => ok = false,
            }
        }
        Some([port, proto]) => {
            let (port, proto) = (&port[1..], &proto[1..]);
            let matched: Vec<&(String, String, u16)> = svc
                .ports
                .iter()
                .filter(|(n, p, _)| n == port && p == proto)
                .collect();
            if matched.is_empty() {
                ok = false;
            }
            if qtype == RecordType::SRV || qtype == RecordType::ANY {
                for (pname, pproto, number) in matched {
                    if svc.headless {
                        for e in &svc.endpoints {
                            let Some(target_port) =
                                e.ports.get(&(pname.clone(), pproto.to_ascii_uppercase()))
                            else {
                                continue;
                            };
                            let host = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
                            let target = format!("{host}.{fqdn}");
                            if let Some(t) = name(&target) {
                                response.add_answers(record(
                                    &qname,
                                    RData::SRV(SRV::new(0, 100, *target_port, t)),
                                ));
                                response.add_additionals(record(&target, RData::A(A(e.ip))));
                            }
                        }
                    } else if let (Some(t), Some(ip)) = (name(&fqdn), svc.cluster_ip) {
                        response
                            .add_answers(record(&qname, RData::SRV(SRV::new(0, 100, *number, t))));
                        response.add_additionals(record(&fqdn, RData::A(A(ip))));
                    }
                }
            }
        }
        Some(_) => ok = false,
    }
    if !ok {
        header.set_response_code(ResponseCode::NXDomain);
        add_soa(&mut response, domain);
    }
    response.set_header(header);
    Reply::Answer(response)
}

fn lookup<'a>(
    records: &'a Records,
    ns: &'a str,
    svc: &'a str,
) -> Option<(&'a str, &'a str, &'a ServiceRecord)> {
    records
        .services
        .get(&(ns.to_string(), svc.to_string()))
        .map(|s| (svc, ns, s))
}

/// The zone's SOA in the authority section, so resolvers cache the negative answer.
fn add_soa(response: &mut Message, domain: &str) {
    let (Some(zone), Some(mname), Some(rname)) = (
        name(domain),
        name(&format!("ns.dns.{domain}")),
        name(&format!("hostmaster.{domain}")),
    ) else {
        return;
    };
    let soa = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
    response.add_name_server(Record::from_rdata(zone, TTL, RData::SOA(soa)));
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
    response.add_queries(request.queries().to_vec());
    response.to_vec().ok()
}

/// `response` in wire form, at most `limit` bytes: records that do not fit are left out
/// and TC is set (hickory's encoder counts what it wrote).
fn encode(response: &Message, limit: u16) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(limit);
    response.emit(&mut encoder).ok()?;
    Some(bytes)
}

/// The longest answer `request` may get: 512 bytes over UDP, or its EDNS payload size.
fn answer_limit(request: &Message, over_tcp: bool) -> u16 {
    if over_tcp {
        u16::MAX
    } else {
        request.max_payload()
    }
}

/// The query for the CNAME target `response` ends in, when it answers an address query
/// with one (an ExternalName Service) and the target's addresses should be added.
fn cname_target_query(response: &Message) -> Option<Message> {
    let qtype = response.queries().first()?.query_type();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return None;
    }
    let RData::CNAME(CNAME(target)) = response.answers().last()?.data() else {
        return None;
    };
    let mut request = Message::new();
    request.set_id(response.id().wrapping_add(1));
    request.set_recursion_desired(true);
    request.add_query(hickory_proto::op::Query::query(target.clone(), qtype));
    Some(request)
}

/// The answer to `request` from the records alone, CNAMEs followed as [`chase_cname`]
/// does; `None` when any of it needs the upstreams.
fn answer_from_records(records: &Records, domain: &str, request: &Message) -> Option<Message> {
    let Reply::Answer(mut response) = answer(records, domain, request) else {
        return None;
    };
    for _ in 0..MAX_CNAME_CHAIN {
        let Some(next) = cname_target_query(&response) else {
            break;
        };
        let Reply::Answer(found) = answer(records, domain, &next) else {
            return None;
        };
        if found.answers().is_empty() {
            break;
        }
        response.add_answers(found.answers().iter().cloned());
    }
    Some(response)
}

/// The records' answer to `normalized` (a query whose question name is lower-case, ending
/// at `name_end`), encoded; its question starts at byte 12 exactly as in the query, so the
/// asked case can be written back over it. `None` when it needs the upstreams.
fn answer_normalized(
    normalized: &[u8],
    name_end: usize,
    records: &Records,
    domain: &str,
    over_tcp: bool,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(normalized).ok()?;
    let response = answer_from_records(records, domain, &request)?;
    let bytes = encode(&response, answer_limit(&request, over_tcp))?;
    (bytes.get(12..name_end) == normalized.get(12..name_end)).then_some(bytes)
}

/// The records' answer to `query` with its ID and question name as asked, or `None` when
/// it needs the upstreams (or is not one plain query).
fn local_answer(query: &[u8], records: &Records, domain: &str, over_tcp: bool) -> Option<Vec<u8>> {
    let name_end = cache::question_end(query)?;
    let mut normalized = query.to_vec();
    normalized[12..name_end].make_ascii_lowercase();
    let mut bytes = answer_normalized(&normalized, name_end, records, domain, over_tcp)?;
    cache::echo_question(&mut bytes, query, name_end);
    Some(bytes)
}

/// Most batches of UDP queries read before other tasks get the thread.
const UDP_BATCHES: usize = 8;

/// The cluster DNS with its sockets bound.
pub struct ClusterDns {
    udp: UdpSocket,
    tcp: TcpListener,
    config: Arc<DnsConfig>,
    records: Arc<SharedRecords>,
}

impl std::fmt::Debug for ClusterDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDns")
            .field("udp", &self.udp.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Binds UDP and TCP on `addr`, with `IP_FREEBIND` (the address may not exist yet).
fn bind(addr: SocketAddrV4) -> Result<(UdpSocket, TcpListener), DnsError> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let err = |context: String| {
        move |e: nix::Error| DnsError::Io {
            context,
            source: io::Error::from(e),
        }
    };
    let open = |kind: SockType, port: u16| -> Result<std::os::fd::OwnedFd, DnsError> {
        let fd = socket::socket(
            AddressFamily::Inet,
            kind,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(err(format!("opening a socket for {addr}")))?;
        socket::setsockopt(&fd, sockopt::IpFreebind, &true).map_err(err("IP_FREEBIND".into()))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err("SO_REUSEADDR".into()))?;
        let at = SocketAddrV4::new(*addr.ip(), port);
        socket::bind(fd.as_raw_fd(), &SockaddrIn::from(at))
            .map_err(err(format!("binding {at}")))?;
        Ok(fd)
    };
    // Port 0 (tests): TCP takes the port UDP got. Another process may hold that
    // TCP port already, so a few fresh UDP ports are tried.
    let mut attempts = if addr.port() == 0 { 16 } else { 1 };
    let (udp, tcp_fd) = loop {
        attempts -= 1;
        let udp = std::net::UdpSocket::from(open(SockType::Datagram, addr.port())?);
        let port = udp
            .local_addr()
            .map_err(|source| DnsError::Io {
                context: "reading the bound address".into(),
                source,
            })?
            .port();
        let listening = open(SockType::Stream, port).and_then(|fd| {
            socket::listen(
                &fd,
                socket::Backlog::new(128).unwrap_or(socket::Backlog::MAXCONN),
            )
            .map_err(err(format!("listening on {addr}")))?;
            Ok(fd)
        });
        match listening {
            Ok(tcp_fd) => break (udp, tcp_fd),
            Err(DnsError::Io { source, .. })
                if attempts > 0 && source.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    };
    let tcp = std::net::TcpListener::from(tcp_fd);
    let io = |context: &str| {
        let context = context.to_string();
        move |source| DnsError::Io { context, source }
    };
    Ok((
        UdpSocket::from_std(udp).map_err(io("registering the udp socket"))?,
        TcpListener::from_std(tcp).map_err(io("registering the tcp socket"))?,
    ))
}

impl ClusterDns {
    /// Binds on `addr` (port 0 picks one, for tests). Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddrV4, config: DnsConfig) -> Result<ClusterDns, DnsError> {
        let (udp, tcp) = bind(addr)?;
        Ok(ClusterDns {
            udp,
            tcp,
            config: Arc::new(config),
            records: Arc::default(),
        })
    }

    /// The UDP (and TCP) address it answers on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Replaces the records (tests; [`ClusterDns::serve`] keeps them current itself).
    pub fn set_records(&self, records: Records) {
        self.records.replace(records);
    }

    /// Keeps the records in step with `caches` and answers queries until the runtime stops.
    pub async fn serve(self, caches: Option<Caches>) {
        if let Some(caches) = caches {
            let (records, domain) = (self.records.clone(), self.config.domain.clone());
            tokio::spawn(async move {
                let mut changes = caches.changes();
                caches.ready().await;
                loop {
                    let built = Records::build(
                        caches.services().iter().map(|s| s.as_ref()),
                        &caches.endpoints(),
                        &domain,
                    );
                    records.replace(built);
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        let udp = Arc::new(self.udp);
        let (config, records) = (self.config, self.records);
        let tcp = self.tcp;
        {
            let (config, records) = (config.clone(), records.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = tcp.accept().await {
                    tokio::spawn(serve_tcp(stream, config.clone(), records.clone()));
                }
            });
        }
        let mut responder = UdpResponder::new(records.clone(), config.domain.clone());
        let (mut received, mut answers) = (mmsg::Received::new(), mmsg::Answers::new());
        let fd = udp.as_raw_fd();
        loop {
            // Read until the socket would block, a batch per system call: the queries that
            // arrived together are answered in one go, with no task per query, and their
            // answers sent with one system call.
            if udp.readable().await.is_err() {
                continue;
            }
            let mut drained = false;
            for _ in 0..UDP_BATCHES {
                match udp.try_io(Interest::READABLE, || received.recv(fd)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(_) => continue,
                }
                answers.clear();
                for (query, client) in received.iter() {
                    if responder.respond(query, answers.next_buf()) {
                        answers.commit(client);
                        continue;
                    }
                    let query = query.to_vec();
                    let (udp, config, records) = (udp.clone(), config.clone(), records.clone());
                    tokio::spawn(async move {
                        let current = records.snapshot().1;
                        if let Some(answer) =
                            resolve_upstream(&query, &config, &current, false).await
                        {
                            let _ = udp.send_to(&answer, client).await;
                        }
                    });
                }
                let mut at = 0;
                while at < answers.len() {
                    match udp.try_io(Interest::WRITABLE, || answers.send(fd, at)) {
                        Ok(sent) => at += sent,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // The socket's buffer is full: the rest wait for room.
                            for rest in at..answers.len() {
                                let (answer, client) = answers.get(rest);
                                let (udp, answer) = (udp.clone(), answer.to_vec());
                                tokio::spawn(async move {
                                    let _ = udp.send_to(&answer, client).await;
                                });
                            }
                            break;
                        }
                        // This answer cannot be sent (its client is gone): the next ones.
                        Err(_) => at += 1,
                    }
                }
            }
            if !drained {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The answer to one query: ours, or the upstreams'.
async fn resolve(
    query: &[u8],
    config: &DnsConfig,
    records: &SharedRecords,
    over_tcp: bool,
) -> Option<Vec<u8>> {
    let current = records.snapshot().1;
    if let Some(answer) = local_answer(query, &current, &config.domain, over_tcp) {
        return Some(answer);
    }
    resolve_upstream(query, config, &current, over_tcp).await
}

/// The answer to a query the records alone do not answer: forwarded, or a CNAME chased
/// through the upstreams.
async fn resolve_upstream(
    query: &[u8],
    config: &DnsConfig,
    current: &Records,
    over_tcp: bool,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    match answer(current, &config.domain, &request) {
        Reply::Answer(m) => encode(
            &chase_cname(m, config, current).await,
            answer_limit(&request, over_tcp),
        ),
        Reply::Forward => {
            let mut answer = forward_udp(query, config).await;
            let truncated = answer
                .as_ref()
                .is_some_and(|a| a.get(2).is_some_and(|b| b & 0x02 != 0));
            if over_tcp && (answer.is_none() || truncated) {
                answer = forward_tcp(query, config).await.or(answer);
            }
            answer.or_else(|| servfail(query))
        }
    }
}

/// Most CNAMEs followed for one answer.
const MAX_CNAME_CHAIN: usize = 8;

/// An answer ending in a CNAME (an ExternalName Service) for an address query gets the
/// target's addresses too, as CoreDNS adds them: from the cluster's own records for a name
/// in the cluster domain, otherwise from the upstreams. Stub resolvers that do not chase
/// CNAMEs themselves (musl's, busybox's) then reach the target by the Service's name.
async fn chase_cname(mut response: Message, config: &DnsConfig, records: &Records) -> Message {
    for _ in 0..MAX_CNAME_CHAIN {
        let Some(request) = cname_target_query(&response) else {
            return response;
        };
        let found = match answer(records, &config.domain, &request) {
            Reply::Answer(m) => m,
            Reply::Forward => {
                let Some(bytes) = request.to_vec().ok() else {
                    return response;
                };
                match forward_udp(&bytes, config)
                    .await
                    .and_then(|b| Message::from_vec(&b).ok())
                {
                    Some(m) => m,
                    None => return response,
                }
            }
        };
        if found.answers().is_empty() {
            return response;
        }
        response.add_answers(found.answers().iter().cloned());
    }
    response
}

async fn forward_udp(query: &[u8], config: &DnsConfig) -> Option<Vec<u8>> {
    for upstream in &config.upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let wait = async {
            loop {
                match socket.recv(&mut buf).await {
                    // Only the answer to this query's id.
                    Ok(n) if n >= 2 && buf[..2] == query[..2] => return Some(buf[..n].to_vec()),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        };
        if let Ok(Some(answer)) = tokio::time::timeout(config.timeout, wait).await {
            return Some(answer);
        }
    }
    None
}

async fn forward_tcp(query: &[u8], config: &DnsConfig) -> Option<Vec<u8>> {
    for upstream in &config.upstreams {
        let attempt = async {
            let mut stream = TcpStream::connect(upstream).await?;
            write_frame(&mut stream, query).await?;
            read_frame(&mut stream).await
        };
        if let Ok(Ok(answer)) = tokio::time::timeout(config.timeout, attempt).await {
            return Some(answer);
        }
    }
    None
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| io::Error::other("message too long"))?;
    let mut frame = Vec::with_capacity(data.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(data);
    stream.write_all(&frame).await
}

async fn serve_tcp(mut stream: TcpStream, config: Arc<DnsConfig>, records: Arc<SharedRecords>) {
    loop {
        let Ok(Ok(query)) =
            tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await
        else {
            return;
        };
        let Some(answer) = resolve(&query, &config, &records, true).await else {
            return;
        };
        if write_frame(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

/// Makes the `kube-dns` Service (cluster IP `cluster_ip`, port 53 UDP and TCP, no
/// selector) and its EndpointSlice (`listen`) exist, so the service proxy leads the
/// cluster IP to this server. Idempotent: created when missing, otherwise their ports
/// and addresses are put back with a merge patch (which replaces lists whole; a
/// server-side apply would merge Service ports by port number alone).
pub async fn ensure_service(
    client: &Client,
    cluster_ip: Ipv4Addr,
    listen: SocketAddrV4,
) -> Result<(), DnsError> {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": listen.port()},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": listen.port()},
        ]},
    });
    let slice_name = format!("{SERVICE_NAME}-skiff");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": "kube-system", "labels": {
            model::SERVICE_NAME_LABEL: SERVICE_NAME,
            "endpointslice.kubernetes.io/managed-by": MANAGER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [listen.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "port": listen.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": listen.port(), "protocol": "TCP"},
        ],
    });
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let err = |object: String| move |source| DnsError::Api { object, source };
    let svc_object = format!("service kube-system/{SERVICE_NAME}");
    if services
        .get_opt(SERVICE_NAME)
        .await
        .map_err(err(svc_object.clone()))?
        .is_some()
    {
        let ports = json!({"spec": {"ports": svc["spec"]["ports"]}});
        services
            .patch(SERVICE_NAME, &PatchParams::default(), &Patch::Merge(&ports))
            .await
            .map_err(err(svc_object))?;
    } else {
        let svc: Service = serde_json::from_value(svc).expect("a valid Service");
        services
            .create(&PostParams::default(), &svc)
            .await
            .map_err(err(svc_object))?;
    }
    let slice_object = format!("endpointslice kube-system/{slice_name}");
    if slices
        .get_opt(&slice_name)
        .await
        .map_err(err(slice_object.clone()))?
        .is_some()
    {
        slices
            .patch(&slice_name, &PatchParams::default(), &Patch::Merge(&slice))
            .await
            .map_err(err(slice_object))?;
    } else {
        let slice: EndpointSlice = serde_json::from_value(slice).expect("a valid EndpointSlice");
        slices
            .create(&PostParams::default(), &slice)
            .await
            .map_err(err(slice_object))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
