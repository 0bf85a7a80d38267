//! Networking benchmarks (root): setup+teardown per container against
//! Podman's bridge networking, per-connection latency through a published
//! port with 10 and 5,000 ports, and one-port update time at 5,000 ports,
//! each against an iptables-style linear chain (one nft rule per port).
//!
//! `cargo bench -p skiff-network --bench network`; `SKIFF_BENCH_N` sets the
//! runs per setup case (default 30), `SKIFF_BENCH_CONNS` the connections per
//! latency case (default 2000). Prints a markdown table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{random_port, unique, Env, ExternalHost, Netns};
use skiff_network::nft::{Nft, NftCli, Published, Rules};
use skiff_network::{netns, AttachRequest, PortMapping};

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median milliseconds of skiff attach+detach (and each half), bridge warm.
fn skiff_setup(n: usize, ports: usize) -> (f64, f64, f64) {
    let env = Env::new();
    let net = env.network(true, false);
    let namespaces: Vec<Netns> = (0..n + 1).map(|_| Netns::new()).collect();
    let base = random_port().min(60000);
    let (mut total, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for (i, ns) in namespaces.iter().enumerate() {
        let mut req = AttachRequest::new(&net.name, format!("bench{i}"), ns.path());
        req.ports = (0..ports)
            .map(|p| {
                PortMapping {
                    host_ip: None,
                    host_port: base + p as u16,
                    container_port: 80,
                    protocol: skiff_network::Protocol::Tcp,
                }
                .into()
            })
            .collect();
        let t0 = Instant::now();
        env.net.attach(&req).unwrap();
        let t1 = Instant::now();
        env.net.detach(&net.name, &req.container_id).unwrap();
        let t2 = Instant::now();
        // The first one creates the bridge and the rules.
        if i > 0 {
            up.push(ms(t1 - t0));
            down.push(ms(t2 - t1));
            total.push(ms(t2 - t0));
        }
    }
    (median(total), median(up), median(down))
}

fn podman(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
    c
}

/// Median milliseconds of `podman run --rm` with bridge and with none.
fn podman_setup(n: usize) -> Option<(f64, f64)> {
    let image = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("net-bench-image");
    if !image.join("busybox-docker.tar").exists() {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-image.sh");
        let ok = Command::new("sh")
            .arg(script)
            .arg(&image)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("make-test-image.sh failed; skipping podman");
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let loaded = podman(dir.path())
        .args(["load", "-q", "-i"])
        .arg(image.join("busybox-docker.tar"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !loaded {
        eprintln!("podman load failed; skipping podman");
        return None;
    }
    let run = |network: &str| -> f64 {
        let t = Instant::now();
        // Explicit ulimits: this machine's hard limits are below Podman's defaults.
        let status = podman(dir.path())
            .args([
                "run",
                "--rm",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(["--network", network, "busybox", "/bin/true"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "podman run --network {network}");
        ms(t.elapsed())
    };
    // Warm up (podman creates its bridge and firewall chains on first use).
    run("bridge");
    run("none");
    let (mut bridge, mut none) = (Vec::new(), Vec::new());
    for _ in 0..n {
        bridge.push(run("bridge"));
        none.push(run("none"));
    }
    let _ = podman(dir.path())
        .args(["system", "reset", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Some((median(bridge), median(none)))
}

/// A server in `ns` on port 80 that answers one byte with one byte.
fn byte_server(ns: &Path) {
    let listener = netns::run_in(ns, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap()
    })
    .unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut b = [0u8; 1];
            if stream.read_exact(&mut b).is_ok() {
                let _ = stream.write_all(&b);
            }
        }
    });
}

/// Per-connection latencies (µs) of connect + 1-byte round trip + close from `ns`.
fn connections(ns: &Path, addr: SocketAddr, count: usize) -> Vec<f64> {
    netns::run_in(ns, move || {
        (0..count)
            .map(|_| {
                let t = Instant::now();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                // Close with RST: no TIME_WAIT pile-up across thousands of runs.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: setsockopt on a socket this closure owns, with a
                // pointer to a live linger struct and its size.
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
                s.read_exact(&mut b).unwrap();
                drop(s);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    })
    .unwrap()
}

/// An iptables-style chain in its own table: one DNAT rule per port, the
/// measured port last.
struct LinearChain {
    table: String,
}

impl LinearChain {
    fn new(target: Ipv4Addr, ports: &[u16]) -> LinearChain {
        let chain = LinearChain {
            table: format!("sklin_{}", unique()),
        };
        chain.fill(target, ports);
        chain
    }

    fn script(&self, target: Ipv4Addr, ports: &[u16]) -> String {
        let t = &self.table;
        let mut s = format!(
            "add table ip {t}\n\
             add chain ip {t} prerouting {{ type nat hook prerouting priority -110; policy accept; }}\n\
             add chain ip {t} services\n\
             flush chain ip {t} prerouting\n\
             flush chain ip {t} services\n\
             add rule ip {t} prerouting fib daddr type local jump services\n"
        );
        for p in ports {
            s.push_str(&format!(
                "add rule ip {t} services tcp dport {p} dnat ip to {target}:80\n"
            ));
        }
        s
    }

    fn fill(&self, target: Ipv4Addr, ports: &[u16]) {
        NftCli::default()
            .apply(&self.table, &self.script(target, ports))
            .unwrap();
    }
}

impl Drop for LinearChain {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    ms(t.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("SKIFF_BENCH_N", 30);
    let conns = env_usize("SKIFF_BENCH_CONNS", 2000);
    let mut rows = Vec::new();

    // 1. Setup + teardown per container.
    let (total, up, down) = skiff_setup(n, 0);
    let (total_p, _, _) = skiff_setup(n, 1);
    let podman = podman_setup(n.min(20));
    rows.push(format!(
        "| setup+teardown per container, median ms (attach {up:.2} + detach {down:.2}) | {total:.2} | {} | {} |",
        podman.map_or("n/a".into(), |(b, none)| format!("{:.1} (bridge {b:.1} - none {none:.1})", b - none)),
        podman.map_or("n/a".into(), |(b, none)| format!("podman {:.0}x slower", (b - none) / total)),
    ));
    rows.push(format!(
        "| setup+teardown with one published port, median ms | {total_p:.2} | | |"
    ));

    // 2. Latency through a published port, 10 and 5,000 ports, and 3. one
    // change at that size. The other side's table is absent while one side
    // is measured: a linear chain costs every new connection to the host,
    // whichever port it is for.
    let env = Env::new();
    let net = env.network(true, false);
    let ext = ExternalHost::new();
    let container = Netns::new();
    byte_server(&container.path());
    let ours = 20000u16;
    let theirs = 30000u16;
    let rules = Rules::new(&env.table).unwrap();
    let nft = NftCli::default();
    let mut latency = Vec::new();
    let mut updates = Vec::new();
    for count in [10usize, 5000] {
        let mut req = AttachRequest::new(&net.name, "latency", container.path());
        req.ports = (0..count as u16)
            .map(|p| {
                PortMapping {
                    host_ip: None,
                    host_port: ours + p,
                    container_port: 80,
                    protocol: skiff_network::Protocol::Tcp,
                }
                .into()
            })
            .collect();
        let a = env.net.attach(&req).unwrap();
        let linear_ports: Vec<u16> = (0..count as u16).map(|p| theirs + p).collect();
        let our_addr = SocketAddr::from((ext.host_ip, ours + count as u16 - 1));
        let their_addr = SocketAddr::from((ext.host_ip, theirs + count as u16 - 1));
        let (mut o, mut t) = (Vec::new(), Vec::new());
        for block in 0..10 {
            let warm = if block == 0 { 100 } else { 0 };
            connections(&ext.ns.path(), our_addr, warm);
            o.extend(connections(&ext.ns.path(), our_addr, conns / 10));
            let linear = LinearChain::new(a.ip, &linear_ports);
            connections(&ext.ns.path(), their_addr, warm);
            t.extend(connections(&ext.ns.path(), their_addr, conns / 10));
            drop(linear);
        }
        latency.push((
            count,
            median(o.clone()),
            percentile(o, 0.99),
            median(t.clone()),
            percentile(t, 0.99),
        ));

        let linear = LinearChain::new(a.ip, &linear_ports);
        let (mut add, mut del, mut lin_add, mut lin_rewrite) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..20u16 {
            let p = Published {
                mapping: PortMapping {
                    host_ip: None,
                    host_port: 40000 + i,
                    container_port: 80,
                    protocol: skiff_network::Protocol::Tcp,
                },
                target: a.ip,
            };
            add.push(timed(|| {
                nft.apply(&env.table, &rules.publish(&[p])).unwrap()
            }));
            del.push(timed(|| {
                nft.apply(&env.table, &rules.unpublish(&[p])).unwrap()
            }));
            let rule = format!(
                "add rule ip {} services tcp dport {} dnat ip to {}:80\n",
                linear.table,
                45000 + i,
                a.ip
            );
            lin_add.push(timed(|| nft.apply(&linear.table, &rule).unwrap()));
            let mut all = linear_ports.clone();
            all.push(50000 + i);
            lin_rewrite.push(timed(|| linear.fill(a.ip, &all)));
        }
        updates.push((
            count,
            median(add),
            median(del),
            median(lin_add),
            median(lin_rewrite),
        ));
        drop(linear);
        env.net.detach(&net.name, "latency").unwrap();
    }
    let empty = median(
        (0..20)
            .map(|_| {
                timed(|| {
                    nft.apply(&env.table, &format!("add table ip {}\n", env.table))
                        .unwrap()
                })
            })
            .collect(),
    );
    for (count, om, o99, tm, t99) in latency {
        rows.push(format!(
            "| new connection through a published port, {count} ports: median µs (p99) | {om:.1} ({o99:.1}) | {tm:.1} ({t99:.1}) | {:.2}x |",
            tm / om
        ));
    }
    for (count, add, del, lin_add, lin_rewrite) in updates {
        rows.push(format!(
            "| publish one port at {count} ports, median ms: `create element` vs `add rule` | {add:.2} | {lin_add:.2} | |"
        ));
        rows.push(format!(
            "| unpublish one port at {count} ports, median ms: element `add`+`delete` vs chain rewrite (iptables-restore style) | {del:.2} | {lin_rewrite:.2} | |"
        ));
    }
    rows.push(format!(
        "| an empty `nft -f` transaction (process start: the floor of every change) | {empty:.2} | | |"
    ));

    println!("| case | skiff | comparison | ratio |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
