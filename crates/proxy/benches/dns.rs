//! Queries per second of the cluster DNS for in-cluster names: Debian's `dnsperf`
//! against [`ClusterDns`] on 127.0.0.1, the server on one core (a single-thread tokio
//! runtime pinned to CPU 0) and dnsperf pinned to the other (`taskset -c 1`).
//!
//! `cargo bench -p skiff-proxy --bench dns` (needs `dnsperf` and `taskset`; Debian:
//! `apt-get install dnsperf`). `DNS_BENCH_SECS` (default 15), `DNS_BENCH_SERVICES`
//! (default 1000), `DNS_BENCH_CLIENTS` (default 8) and `DNS_BENCH_OUTSTANDING` (default
//! 200) tune the run.
//!
//! Both sides run at nice -10 (as root), and so does the bench's session's autogroup, so
//! that other work on the machine disturbs them less. The server thread's CPU share is printed: queries per CPU-second of that thread
//! tell its capacity when it did not get a whole core.
//!
//! The names: one ClusterIP Service per index (`svc<i>.ns<i % 10>`, port `http` 80) and
//! every tenth one headless with three StatefulSet-style endpoints. The query mix: 70%
//! A of Services, 10% A of headless Services (three answers), 10% SRV
//! (`_http._tcp.<svc>`), 10% PTR of cluster IPs. Every answer must be NOERROR.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_proxy::dns::{ClusterDns, DnsConfig, Records};
use skiff_proxy::model;

const DOMAIN: &str = "cluster.local";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32)
}

fn headless(i: usize) -> bool {
    i % 10 == 9
}

/// The Services and EndpointSlices of the cluster, as the records the server answers.
fn records(count: usize) -> Records {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..count {
        let (name, ns) = (format!("svc{i}"), format!("ns{}", i % 10));
        let ip = if headless(i) {
            "None".to_string()
        } else {
            cluster_ip(i).to_string()
        };
        services.push(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ip,
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }));
        let endpoints: Vec<_> = (0..if headless(i) { 3 } else { 2 })
            .map(|e| {
                json!({
                    "addresses": [Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2))
                        + (i * 3 + e) as u32).to_string()],
                    "hostname": format!("{name}-{e}"),
                    "conditions": {"ready": true},
                })
            })
            .collect();
        slices.push(json!({
            "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }));
    }
    let services: Vec<Service> = serde_json::from_value(json!(services)).unwrap();
    let slices: Vec<EndpointSlice> = serde_json::from_value(json!(slices)).unwrap();
    Records::build(&services, &model::endpoints_by_service(&slices), DOMAIN)
}

/// dnsperf's input: `name type` per line.
fn queries(count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let fqdn = format!("svc{i}.ns{}.svc.{DOMAIN}", i % 10);
        let line = match i % 10 {
            9 => format!("{fqdn} A"),
            3 => format!("_http._tcp.{fqdn} SRV"),
            6 => {
                let [a, b, c, d] = cluster_ip(i).octets();
                format!("{d}.{c}.{b}.{a}.in-addr.arpa PTR")
            }
            _ => format!("{fqdn} A"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// One A query over UDP: the addresses answered.
fn ask(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    let mut query = Message::new();
    query
        .set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("an answer from the cluster dns");
    let answer = Message::from_vec(&buf[..n]).unwrap();
    let mut ips: Vec<Ipv4Addr> = answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// CPU time (user + system) the thread `tid` of this process used, in seconds.
fn thread_cpu(tid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the parenthesised name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

/// Nice -10 for the calling thread (Linux: per thread), so that other work on the
/// machine disturbs the measurement less; ignored when not allowed.
fn raise_priority() {
    // SAFETY: setpriority only changes the scheduling priority of this thread (who = 0).
    unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, -10) };
}

/// Nice -10 for this session's autogroup too: with `kernel.sched_autogroup_enabled` the
/// scheduler shares a core between sessions first and uses a thread's nice only within its
/// session, so without this a build in another terminal gets as much of the server's core
/// as the server. Ignored when there are no autogroups or it is not allowed.
fn raise_autogroup_priority() {
    let _ = std::fs::write("/proc/self/autogroup", "-10");
}

/// CPU time (user + system) of the children waited for, in seconds: dnsperf's.
fn children_cpu() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// `sysconf(_SC_CLK_TCK)`: the unit of those times.
fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// The query file, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A number after `label` in dnsperf's report.
fn field(report: &str, label: &str) -> f64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no '{label}' in dnsperf's report:\n{report}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env("DNS_BENCH_SECS", 15);
    let count = env("DNS_BENCH_SERVICES", 1000) as usize;
    let clients = env("DNS_BENCH_CLIENTS", 8);
    let outstanding = env("DNS_BENCH_OUTSTANDING", 200);

    raise_autogroup_priority();
    // The server: one thread, pinned to CPU 0, running a single-thread runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        raise_priority();
        let mut cpus = nix::sched::CpuSet::new();
        cpus.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)
            .expect("pinning the server thread to cpu 0");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let config = DnsConfig {
                domain: DOMAIN.to_string(),
                upstreams: Vec::new(),
                timeout: Duration::from_secs(1),
            };
            let dns = ClusterDns::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), config).unwrap();
            dns.set_records(records(count));
            tx.send((dns.local_addr().unwrap(), nix::unistd::gettid().as_raw()))
                .unwrap();
            dns.serve(None).await;
        });
    });
    let (server, tid) = rx.recv().unwrap();

    // The answers are right before they are counted.
    assert_eq!(
        ask(server, "svc5.ns5.svc.cluster.local."),
        vec![cluster_ip(5)]
    );
    assert_eq!(ask(server, "svc9.ns9.svc.cluster.local.").len(), 3);

    let file = TempFile(std::env::temp_dir().join(format!(
        "skiff-dnsperf-{}-{}.txt",
        std::process::id(),
        rand_suffix()
    )));
    std::fs::File::create(&file.0)
        .and_then(|mut f| f.write_all(queries(count).as_bytes()))
        .unwrap();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu_before = thread_cpu(tid);
    let started = Instant::now();
    let out = Command::new("nice")
        .args([
            "-n",
            "-10",
            "taskset",
            "-c",
            "1",
            "dnsperf",
            "-s",
            "127.0.0.1",
        ])
        .args(["-p", &server.port().to_string()])
        .arg("-d")
        .arg(&file.0)
        .args(["-l", &secs.to_string()])
        .args(["-c", &clients.to_string()])
        .args(["-q", &outstanding.to_string()])
        .output()
        .expect("running dnsperf (apt-get install dnsperf)");
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = (thread_cpu(tid) - cpu_before) / wall;
    let client_cpu = children_cpu() / wall;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dnsperf failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qps = field(&report, "Queries per second:");
    let latency_ms = field(&report, "Average Latency (s):") * 1e3;
    let sent = field(&report, "Queries sent:");
    let completed = field(&report, "Queries completed:");
    let noerror = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        noerror.trim_start().starts_with("NOERROR") && !noerror.contains(','),
        "answers other than NOERROR: {noerror}"
    );

    println!(
        "cluster dns: dnsperf -c{clients} -q{outstanding} -l{secs}, {count} Services, server on 1 core"
    );
    println!(
        "load average before the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| queries/s | average latency (ms) | completed / sent | server thread CPU | queries per server CPU-second | dnsperf CPU | response codes |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {qps:.0} | {latency_ms:.3} | {completed:.0} / {sent:.0} | {:.0}% | {:.0} | {:.0}% | {} |",
        server_cpu * 100.0,
        completed / (server_cpu * wall),
        client_cpu * 100.0,
        noerror.trim()
    );
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
