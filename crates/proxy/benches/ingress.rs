//! The ingress proxy's overhead: wrk against a small HTTP backend directly, then
//! against the same backend through the ingress's [`Proxy`] (routing by Host header,
//! pooled keep-alive client), printing requests/s, p99 latency and the ratio.
//!
//! `cargo bench -p skiff-proxy --bench ingress` (needs `wrk`; Debian's package).
//! `INGRESS_BENCH_SECS` (default 10) and `INGRESS_BENCH_CONNECTIONS` (default 64) tune
//! the runs. Backend, proxy and wrk share the machine, as on a single node.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use skiff_proxy::ingress::routes::{Backend, PathType, RoutingTable};
use skiff_proxy::ingress::server::Proxy;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from the backend\n";

/// A keep-alive HTTP/1.1 server answering every request with [`BODY`].
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// wrk's requests/s and p99 latency (ms) for `url` with `host` as Host header.
fn wrk(url: &str, host: &str, secs: u64, connections: u64) -> (f64, f64) {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s")])
        .args(["--latency", "-H", &format!("Host: {host}"), url])
        .output()
        .expect("running wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| millis(v.trim()))
        .unwrap_or(0.0);
    let non_2xx = text.lines().find(|l| l.contains("Non-2xx"));
    assert!(non_2xx.is_none(), "errors from {url}: {text}");
    (rps, p99)
}

/// wrk's latency (`812.00us`, `1.20ms`, `1.01s`) in milliseconds.
fn millis(v: &str) -> f64 {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => n,
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env("INGRESS_BENCH_SECS", 10);
    let connections = env("INGRESS_BENCH_CONNECTIONS", 64);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend_addr, ingress_addr) = runtime.block_on(async {
        let backend_addr = backend().await;
        let mut table = RoutingTable::default();
        table.host_mut("bench.example.test").add(
            "/",
            PathType::Prefix,
            Arc::new(Backend::new("bench/web:80", vec![backend_addr])),
        );
        let proxy = Proxy::new();
        proxy.set_routes(table);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingress_addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve_http(listener));
        (backend_addr, ingress_addr)
    });
    let host = "bench.example.test";
    let (direct_rps, direct_p99) = wrk(&format!("http://{backend_addr}/"), host, secs, connections);
    let (ingress_rps, ingress_p99) =
        wrk(&format!("http://{ingress_addr}/"), host, secs, connections);
    println!("ingress bench: wrk -t2 -c{connections} -d{secs}s");
    println!("  direct:  {direct_rps:>10.0} req/s  p99 {direct_p99:.2} ms");
    println!("  ingress: {ingress_rps:>10.0} req/s  p99 {ingress_p99:.2} ms");
    println!(
        "  ratio (ingress/direct): {:.2} req/s, {:.2} p99",
        ingress_rps / direct_rps.max(1.0),
        ingress_p99 / direct_p99.max(0.001)
    );
}
