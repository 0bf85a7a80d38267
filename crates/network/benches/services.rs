//! Services benchmarks (root): the time one Service change takes to reach the kernel and
//! the cost of a new connection to a cluster IP, at 10, 1,000 and 10,000 Services, for
//! skiff's service table ([`ServiceProxy`]: verdict and data maps, applied in-process
//! through libnftables as `skiff server` does) against an iptables-style linear chain
//! built here (one `ip daddr . tcp dport` DNAT rule per Service, changed through the
//! `nft` command: a process per change, as `iptables-restore` is).
//!
//! `cargo bench -p skiff-network --bench services`. `SKIFF_BENCH_SIZES` (default
//! `10,1000,10000`), `SKIFF_BENCH_CHANGES` (samples per one-change case, default 15) and
//! `SKIFF_BENCH_CONNS` (connections per latency case, default 2000) tune it;
//! `SKIFF_BENCH_AFFINITY=<seconds>` gives every Service session affinity,
//! `SKIFF_BENCH_NODE_PORTS=1` a node port and a load-balancer IP, and
//! `SKIFF_BENCH_LOCAL=1` (with node ports) both traffic policies Local.
//!
//! Everything happens in two network namespaces made here: `node` holds both tables and
//! the client, `pods` the endpoints (one listener on eight addresses, behind a veth
//! pair). The namespaces, and with them every table, are removed on exit, after a panic
//! too. The client, the endpoints and `nft` run at nice -10 (as root), so that other work
//! on the machine disturbs them less. Prints three markdown tables.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{unique, Netns};
use skiff_network::netns;
use skiff_network::nft::{Nft, NftCli, NftError};
use skiff_network::service_proxy::{ServiceMap, ServicePort, ServiceProxy};
use skiff_network::Protocol;

/// The endpoints' port in `pods`.
const ENDPOINT_PORT: u16 = 8080;
/// The Services' port on their cluster IPs.
const SERVICE_PORT: u16 = 80;
/// How many addresses `pods` answers on.
const POD_ADDRESSES: u32 = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// The `i`th pod address (`10.240.0.2` and up).
fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 240, 0, 2 + (i % POD_ADDRESSES) as u8)
}

/// The cluster IP of Service `i` (`10.96.0.1` and up, inside `10.96.0.0/12`).
fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32)
}

/// Service `i`: one port, one endpoint for even `i`, two for odd ones; with
/// `SKIFF_BENCH_AFFINITY=<seconds>`, `sessionAffinity: ClientIP`; with
/// `SKIFF_BENCH_NODE_PORTS=1`, node port `20000 + i` and load-balancer IP `10.112.0.0 +
/// i` (externalTrafficPolicy Cluster); with `SKIFF_BENCH_LOCAL=1` as well, both traffic
/// policies Local, its first endpoint being this node's.
fn service(i: usize) -> (String, Vec<ServicePort>) {
    let mut port = ServicePort::new("http", Protocol::Tcp, Some(cluster_ip(i)), SERVICE_PORT);
    port.endpoints = (0..1 + i as u32 % 2)
        .map(|e| SocketAddrV4::new(pod_ip(i as u32 + e), ENDPOINT_PORT))
        .collect();
    port.affinity_timeout = std::env::var("SKIFF_BENCH_AFFINITY")
        .ok()
        .and_then(|v| v.parse().ok());
    if env_usize("SKIFF_BENCH_NODE_PORTS", 0) == 1 {
        port.node_port = Some(20000 + i as u16);
        port.load_balancer_ips = vec![Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 112, 0, 0)) + i as u32,
        )];
        if env_usize("SKIFF_BENCH_LOCAL", 0) == 1 {
            port.internal_local = true;
            port.external_local = true;
            port.local_endpoints = vec![port.endpoints[0]];
        }
    }
    (format!("ns{}/svc{i}", i % 10), vec![port])
}

/// The two namespaces and the veth pair between them: `node` reaches the pod addresses
/// directly and routes the cluster IP range towards them (only DNAT makes it answer).
struct Topology {
    node: Netns,
    pods: Netns,
}

impl Topology {
    fn new() -> Topology {
        let node = Netns::new();
        let pods = Netns::new();
        node.ip(&[
            "link", "add", "sv0", "type", "veth", "peer", "name", "eth0", "netns", &pods.name,
        ]);
        node.ip(&["addr", "add", "10.240.0.1/24", "dev", "sv0"]);
        for ns in [&node, &pods] {
            ns.ip(&["link", "set", "lo", "up"]);
        }
        node.ip(&["link", "set", "sv0", "up"]);
        for i in 0..POD_ADDRESSES {
            pods.ip(&["addr", "add", &format!("{}/24", pod_ip(i)), "dev", "eth0"]);
        }
        pods.ip(&["link", "set", "eth0", "up"]);
        node.ip(&["route", "add", "10.96.0.0/12", "dev", "sv0"]);
        Topology { node, pods }
    }

    /// The endpoints: one listener on every pod address that answers one byte with one.
    fn serve_endpoints(&self) {
        let listener = netns::run_in(&self.pods.path(), || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, ENDPOINT_PORT)).unwrap()
        })
        .unwrap();
        std::thread::spawn(move || {
            raise_priority();
            for mut stream in listener.incoming().flatten() {
                let mut b = [0u8; 1];
                if stream.read_exact(&mut b).is_ok() {
                    let _ = stream.write_all(&b);
                }
            }
        });
    }
}

/// Nice -10 for the calling thread (Linux: per thread; the `nft` processes it starts
/// inherit it), so that other work on the machine disturbs the measurement less; ignored
/// when not allowed.
fn raise_priority() {
    // SAFETY: setpriority only changes the scheduling priority of this thread (who = 0).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
}

/// Latency (µs) of connect + one-byte round trip + close to each of `targets`, from the
/// calling thread's namespace.
fn connections(targets: impl Iterator<Item = SocketAddr>) -> Vec<f64> {
    targets
        .map(|addr| {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            // Close with RST: no TIME_WAIT pile-up across thousands of runs.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket this closure owns, with a pointer to a
            // live linger struct and its size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
            drop(s);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// nftables as the service proxy of `skiff server` runs it (in-process, libnftables),
/// remembering how long the last transaction took (the share of a sync spent in
/// libnftables and the kernel).
struct TimedNft {
    nft: NftCli,
    last_ms: Mutex<f64>,
}

impl Default for TimedNft {
    fn default() -> Self {
        TimedNft {
            nft: NftCli::in_process(),
            last_ms: Mutex::new(0.0),
        }
    }
}

impl TimedNft {
    fn last(&self) -> f64 {
        *self.last_ms.lock().unwrap()
    }
}

impl Nft for TimedNft {
    fn apply(&self, table: &str, script: &str) -> Result<(), NftError> {
        let t = Instant::now();
        let result = self.nft.apply(table, script);
        *self.last_ms.lock().unwrap() = t.elapsed().as_secs_f64() * 1e3;
        result
    }

    fn list_table(&self, table: &str) -> Result<Option<serde_json::Value>, NftError> {
        self.nft.list_table(table)
    }

    fn list_chains_and_map(
        &self,
        table: &str,
        map: &str,
    ) -> Result<Option<serde_json::Value>, NftError> {
        self.nft.list_chains_and_map(table, map)
    }
}

/// skiff's service table, deleted on drop (the namespace's removal would too).
struct SkiffTable {
    proxy: ServiceProxy,
}

impl Drop for SkiffTable {
    fn drop(&mut self) {
        if let Err(e) = self.proxy.remove() {
            eprintln!("removing table {}: {e}", self.proxy.table());
        }
    }
}

/// An iptables-style table: one chain with one DNAT rule per Service, matched in order,
/// hooked into `output` before skiff's table (priority -120 against -110) while on.
/// Deleted on drop.
struct LinearChain {
    table: String,
    nft: NftCli,
}

impl LinearChain {
    fn new() -> LinearChain {
        LinearChain {
            table: format!("sklin_{}", unique()),
            nft: NftCli::default(),
        }
    }

    fn rule(&self, (_, ports): &(String, Vec<ServicePort>)) -> String {
        let port = &ports[0];
        // The first endpoint only: no random pick, which only makes the chain cheaper.
        let ep = port.endpoints[0];
        format!(
            "add rule ip {} services ip daddr {} tcp dport {} dnat ip to {}:{}\n",
            self.table,
            port.cluster_ip.unwrap(),
            port.port,
            ep.ip(),
            ep.port()
        )
    }

    /// Replaces the whole chain with one rule per Service, in one transaction (what an
    /// `iptables-restore` of the chain does).
    fn load(&self, services: &[(String, Vec<ServicePort>)]) {
        let t = &self.table;
        let mut s =
            format!("add table ip {t}\nadd chain ip {t} services\nflush chain ip {t} services\n");
        for svc in services {
            s.push_str(&self.rule(svc));
        }
        self.nft.apply(t, &s).unwrap();
    }

    /// Appends one Service's rule (`nft add rule`, `iptables -A`).
    fn append(&self, svc: &(String, Vec<ServicePort>)) {
        self.nft.apply(&self.table, &self.rule(svc)).unwrap();
    }

    /// Hooks the chain into `output`, or unhooks it.
    fn hook(&self, on: bool) {
        let t = &self.table;
        let mut script = format!(
            "add chain ip {t} output {{ type nat hook output priority -120; policy accept; }}\n\
             flush chain ip {t} output\n"
        );
        if on {
            script.push_str(&format!("add rule ip {t} output jump services\n"));
        } else {
            script.push_str(&format!("delete chain ip {t} output\n"));
        }
        self.nft.apply(t, &script).unwrap();
    }
}

impl Drop for LinearChain {
    fn drop(&mut self) {
        let t = &self.table;
        let _ = self
            .nft
            .apply(t, &format!("add table ip {t}\ndelete table ip {t}\n"));
    }
}

/// What one size measured; times in ms, latencies in µs.
struct Measured {
    services: usize,
    skiff_full: f64,
    linear_full: f64,
    skiff_add: f64,
    skiff_modify: f64,
    skiff_remove: f64,
    skiff_noop: f64,
    skiff_modify_nft: f64,
    skiff_verify: f64,
    empty_nft: f64,
    empty_lib: f64,
    linear_append: f64,
    linear_reload: f64,
    skiff_p50: f64,
    skiff_p99: f64,
    linear_p50: f64,
    linear_p99: f64,
}

/// One size, run on a thread inside the node namespace.
fn measure(n: usize, changes: usize, conns: usize) -> Measured {
    let nft = Arc::new(TimedNft::default());
    let mut map: ServiceMap = (0..n).map(service).collect();
    let mut skiff = SkiffTable {
        proxy: ServiceProxy::new(&format!("sksvc_{}", unique()), nft.clone()).unwrap(),
    };
    let skiff_full = timed(|| assert!(skiff.proxy.sync(&map).unwrap().rebuilt));

    // One change at a time: add a Service, change one's endpoints, remove the added one.
    let (mut add, mut modify, mut remove, mut noop) = (vec![], vec![], vec![], vec![]);
    let mut modify_nft = Vec::new();
    for k in 0..changes {
        let (key, ports) = service(n + k);
        map.insert(key.clone(), ports);
        add.push(timed(|| {
            assert_eq!(skiff.proxy.sync(&map).unwrap().services_changed, 1)
        }));
        let (key_m, _) = service(rand::random::<usize>() % n);
        let moved = map[&key_m]
            .iter()
            .map(|p| {
                let mut p = p.clone();
                for ep in &mut p.endpoints {
                    let next = u32::from(*ep.ip()) - u32::from(pod_ip(0)) + 1;
                    *ep = SocketAddrV4::new(pod_ip(next), ENDPOINT_PORT);
                }
                if !p.local_endpoints.is_empty() {
                    p.local_endpoints = vec![p.endpoints[0]];
                }
                p
            })
            .collect();
        map.insert(key_m, moved);
        modify.push(timed(|| {
            assert_eq!(skiff.proxy.sync(&map).unwrap().services_changed, 1)
        }));
        modify_nft.push(nft.last());
        map.remove(&key);
        remove.push(timed(|| {
            assert_eq!(skiff.proxy.sync(&map).unwrap().services_changed, 1)
        }));
        noop.push(timed(|| {
            assert_eq!(skiff.proxy.sync(&map).unwrap().services_changed, 0)
        }));
    }
    let skiff_verify = timed(|| assert!(skiff.proxy.verify().unwrap()));
    let table = skiff.proxy.table().to_string();
    // An empty transaction: through the `nft` command (a process each), and in-process.
    let empty = |via: &dyn Nft| {
        median(
            (0..changes)
                .map(|_| {
                    timed(|| {
                        via.apply(&table, &format!("add table ip {table}\n"))
                            .unwrap()
                    })
                })
                .collect(),
        )
    };
    let empty_nft = empty(&NftCli::default());
    let empty_lib = empty(&*nft);

    // The linear chain over the same Services (as they are now).
    let current: Vec<(String, Vec<ServicePort>)> =
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let linear = LinearChain::new();
    let linear_full = timed(|| linear.load(&current));

    // Connections to cluster IPs picked at random, the same ones on both sides, in
    // alternating blocks; the linear chain is hooked in (ahead of skiff's) only during
    // its own blocks.
    let targets: Vec<SocketAddr> = (0..conns)
        .map(|_| {
            let port = &current[rand::random::<usize>() % current.len()].1[0];
            SocketAddr::from((port.cluster_ip.unwrap(), port.port))
        })
        .collect();
    let blocks = 10;
    let per_block = conns.div_ceil(blocks);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for (b, chunk) in targets.chunks(per_block).enumerate() {
        let warm = if b == 0 { 100 } else { 0 };
        connections(targets.iter().copied().cycle().take(warm));
        ours.extend(connections(chunk.iter().copied()));
        linear.hook(true);
        connections(targets.iter().copied().cycle().take(warm));
        theirs.extend(connections(chunk.iter().copied()));
        linear.hook(false);
    }

    // One change of the linear chain: append a rule, or reload the chain whole.
    let mut grown = current.clone();
    let (mut append, mut reload) = (Vec::new(), Vec::new());
    for k in 0..changes {
        let svc = service(n + changes + k);
        append.push(timed(|| linear.append(&svc)));
        grown.push(svc);
    }
    // A reload costs seconds at 10,000 rules: fewer samples there.
    for k in 0..changes.min(if n > 2000 { 5 } else { changes }) {
        grown.push(service(n + 2 * changes + k));
        reload.push(timed(|| linear.load(&grown)));
    }
    drop(linear);
    drop(skiff);

    Measured {
        services: n,
        skiff_full,
        linear_full,
        skiff_add: median(add),
        skiff_modify: median(modify),
        skiff_remove: median(remove),
        skiff_noop: median(noop),
        skiff_modify_nft: median(modify_nft),
        skiff_verify,
        empty_nft,
        empty_lib,
        linear_append: median(append),
        linear_reload: median(reload),
        skiff_p50: median(ours.clone()),
        skiff_p99: percentile(ours, 0.99),
        linear_p50: median(theirs.clone()),
        linear_p99: percentile(theirs, 0.99),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("SKIFF_BENCH_SIZES")
        .unwrap_or_else(|_| "10,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let changes = env_usize("SKIFF_BENCH_CHANGES", 15).max(1);
    let conns = env_usize("SKIFF_BENCH_CONNS", 2000).max(10);

    let topology = Topology::new();
    topology.serve_endpoints();
    let results: Vec<Measured> = netns::run_in(&topology.node.path(), || {
        raise_priority();
        sizes.iter().map(|&n| measure(n, changes, conns)).collect()
    })
    .expect("the benchmark thread in the node namespace");

    println!("One Service change, median ms:");
    println!();
    println!("| Services | skiff add | skiff modify (in libnftables) | skiff remove | linear: append a rule | linear: reload the chain | skiff modify / linear reload | skiff add / linear append |");
    println!("|---|---|---|---|---|---|---|---|");
    for m in &results {
        println!(
            "| {} | {:.2} | {:.2} ({:.2}) | {:.2} | {:.2} | {:.2} | {:.3} | {:.2} |",
            m.services,
            m.skiff_add,
            m.skiff_modify,
            m.skiff_modify_nft,
            m.skiff_remove,
            m.linear_append,
            m.linear_reload,
            m.skiff_modify / m.linear_reload,
            m.skiff_add / m.linear_append,
        );
    }
    println!();
    println!("Whole table and housekeeping, ms:");
    println!();
    println!("| Services | program all: skiff | program all: linear | skiff verify (chains and `endpoints` map) | skiff no-op sync | empty `nft -f` | empty transaction in-process |");
    println!("|---|---|---|---|---|---|---|");
    for m in &results {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.3} | {:.2} | {:.2} |",
            m.services,
            m.skiff_full,
            m.linear_full,
            m.skiff_verify,
            m.skiff_noop,
            m.empty_nft,
            m.empty_lib,
        );
    }
    println!();
    println!("New connection (connect, 1-byte round trip, close) to a random cluster IP, µs:");
    println!();
    println!("| Services | new connection, skiff: median µs (p99) | linear chain: median µs (p99) | skiff / linear (median) |");
    println!("|---|---|---|---|");
    for m in &results {
        println!(
            "| {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2} |",
            m.services,
            m.skiff_p50,
            m.skiff_p99,
            m.linear_p50,
            m.linear_p99,
            m.skiff_p50 / m.linear_p50
        );
    }
}
