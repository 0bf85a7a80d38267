//! Services end to end: cluster IPs allocated by the API server, the service proxy's
//! nftables rules, the cluster DNS, and pods' resolv.conf, driven by the real kubectl
//! 1.33 against `skiff server` running busybox pods. Needs root. Traffic goes only to
//! the test's own bridge and 127.0.0.1.

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use ipnet::Ipv4Net;

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox:latest
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "80", "-h", "/var/www"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 8080, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - name: sh
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#;

/// `GET /` over plain HTTP/1.0; the body, or `None` if nothing answered in 3 s.
fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Polls `f` until it returns true, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The service proxy's table of a root: `skiff_<fnv1a(root)>_svc`.
fn service_table(root: &std::path::Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in root.to_string_lossy().as_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("skiff_{hash:08x}_svc")
}

fn table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn services_cluster_ips_node_ports_and_dns() {
    let (c, server) = Cluster::start(&[]);

    // The API server's own Service takes the first address of the range, the cluster
    // DNS the tenth.
    let range: Ipv4Net = c.service_cidr.parse().unwrap();
    let nth = |n: u32| Ipv4Addr::from(u32::from(range.network()) + n).to_string();
    c.wait_for("service/kubernetes", "{.spec.clusterIP}", &nth(1));
    eventually(30, "the kube-dns Service", || {
        let out = c.kubectl(&[
            "get",
            "service",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        String::from_utf8_lossy(&out.stdout) == nth(10)
    });

    c.apply(WEB);
    let ip = c.jsonpath("service/web", "{.spec.clusterIP}");
    assert!(range.contains(&ip.parse::<Ipv4Addr>().unwrap()), "{ip}");
    let node_port: u16 = c
        .jsonpath("service/web-np", "{.spec.ports[0].nodePort}")
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&node_port));
    c.wait_for("pod/client", "{.status.phase}", "Running");
    // Endpoints come from the EndpointSlice controller once the pods run.
    eventually(90, "two endpoints of web", || {
        let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[0]}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
            == 2
    });

    // The pod's resolv.conf points at the cluster DNS.
    let resolv = c.exec("client", "sh", &["cat", "/etc/resolv.conf"]);
    let resolv = String::from_utf8_lossy(&resolv.stdout).to_string();
    assert!(
        resolv.contains(&format!("nameserver {}", nth(10))),
        "{resolv}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    // Services that existed when it started are in its environment, the API server's
    // included (what in-cluster clients read).
    let env = c.kubectl_ok(&["exec", "client", "--", "env"]);
    let api_ip = c.jsonpath("service/kubernetes", "{.spec.clusterIP}");
    for want in [
        format!("WEB_SERVICE_HOST={ip}"),
        "WEB_SERVICE_PORT=80".to_string(),
        format!("WEB_PORT=tcp://{ip}:80"),
        format!("KUBERNETES_SERVICE_HOST={api_ip}"),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "WEB_NP_SERVICE_PORT=8080".to_string(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in {env}");
    }

    // From another pod, by name: DNS through the kube-dns Service, then the ClusterIP.
    let mut last = String::new();
    eventually(60, "wget from the client pod", || {
        let out = c.exec(
            "client",
            "sh",
            &[
                "sh",
                "-c",
                "timeout 5 wget -qO- http://web.default.svc.cluster.local",
            ],
        );
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last.contains("hello from skiff")
    });
    // The short name, through the search list (retried: a UDP query can be lost when
    // the machine is busy, as the full name's above).
    let mut short = String::new();
    eventually(30, "the short name through the search list", || {
        let out = c.exec(
            "client",
            "sh",
            &["sh", "-c", "timeout 5 wget -qO- http://web"],
        );
        short = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        short.contains("hello from skiff")
    });

    // A Service without a selector leads where its hand-written Endpoints say (one of
    // web's pods here): the mirroring controller turns them into an EndpointSlice.
    let backend = c
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
        .trim()
        .to_string();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: external}}
spec:
  ports: [{{name: http, port: 80, targetPort: 80}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: external, labels: {{team: db}}}}
subsets:
- addresses: [{{ip: "{backend}"}}]
  ports: [{{name: http, port: 80}}]
"#
    ));
    eventually(30, "the mirrored EndpointSlice", || {
        c.kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=external,endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io,team=db",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[0]}",
        ]) == backend
    });
    eventually(30, "wget of the selectorless Service", || {
        let out = c.exec(
            "client",
            "sh",
            &["sh", "-c", "timeout 5 wget -qO- http://external"],
        );
        String::from_utf8_lossy(&out.stdout).contains("hello from skiff")
    });
    // Deleting the Endpoints takes the slice with it.
    c.kubectl_ok(&["delete", "endpoints", "external"]);
    eventually(30, "the mirrored slice to go", || {
        c.kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=external",
            "-o",
            "name",
        ])
        .trim()
        .is_empty()
    });

    // From the host: the cluster IP, and the node port on 127.0.0.1.
    let cluster_addr: SocketAddr = format!("{ip}:80").parse().unwrap();
    eventually(30, "the cluster IP from the host", || {
        http_get(cluster_addr).is_some_and(|b| b.contains("hello from skiff"))
    });
    let node_addr: SocketAddr = format!("127.0.0.1:{node_port}").parse().unwrap();
    eventually(30, "the node port on 127.0.0.1", || {
        http_get(node_addr).is_some_and(|b| b.contains("hello from skiff"))
    });

    // A cluster IP that is taken is refused with Kubernetes' 422.
    let out = c.kubectl(&[
        "create",
        "service",
        "clusterip",
        "dup",
        &format!("--clusterip={ip}"),
        "--tcp=80:80",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
        )) && stderr.contains("is invalid"),
        "{stderr}"
    );

    // Deleting the Service stops it answering.
    c.kubectl_ok(&["delete", "service", "web"]);
    // (Not "nothing answers": the address is routed like any other once no rule takes
    // it, and the host's network may answer for any address.)
    eventually(30, "the deleted Service to stop answering", || {
        !http_get(cluster_addr).is_some_and(|b| b.contains("hello from skiff"))
    });
    // And its address is free again.
    c.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "again",
        &format!("--clusterip={ip}"),
        "--tcp=80:80",
    ]);

    // `skiff system reset` removes the service proxy's table.
    let table = service_table(c.skiff.root.path());
    assert!(table_exists(&table), "{table}");
    drop(server);
    c.skiff.ok(&["system", "reset", "-f"]);
    assert!(!table_exists(&table), "{table} survived the reset");
}

/// Two servers on one host and one `--service-cidr` would answer each other's pods (the
/// newest nftables table's DNAT wins): the second says so when it starts.
#[test]
fn a_second_server_on_the_same_service_range_warns() {
    let range = common::unique_service_cidr();
    let (first, _first_server) = Cluster::start_with(&["--service-cidr", &range], &[]);
    let net: Ipv4Net = range.parse().unwrap();
    let dns = Ipv4Addr::from(u32::from(net.network()) + 10).to_string();
    // The first server's proxy has programmed its cluster DNS address.
    eventually(60, "the first server's rules for its DNS address", || {
        let out = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{dns} . udp . 53"))
    });
    assert!(
        !first.server_log().contains("warning"),
        "{}",
        first.server_log()
    );
    let (second, _second_server) = Cluster::start_with(&["--service-cidr", &range], &[]);
    let warned = format!("already route {dns}, this cluster's DNS address");
    eventually(30, "the second server's warning", || {
        second.server_log().contains(&warned)
    });
    assert!(second.server_log().contains("own --service-cidr"));
}
