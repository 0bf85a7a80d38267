//! Service traffic end to end: LoadBalancer addresses from `--service-lb-pool` (or the
//! node's address), sessionAffinity ClientIP, the Local traffic policies, only ready
//! endpoints, terminating endpoints draining, fast rejects without endpoints, hairpin
//! traffic, and headless and ExternalName Services by name, driven by the real
//! kubectl (1.33, and 1.27 for one test) against `skiff server` running busybox pods.
//! Needs root. Traffic goes only to the test's own pods and Service addresses; the
//! LoadBalancer pools are /30s of the benchmarking range 198.18.0.0/15, one per test.

use crate::common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ServerProcess};

/// A pool of four addresses for test number `index` of this process, and its addresses.
fn test_pool(index: u8) -> (String, [Ipv4Addr; 4]) {
    let third = (std::process::id() % 250) as u8;
    let base = index * 4;
    let ip = |i: u8| Ipv4Addr::new(198, 18, third, base + i);
    (format!("{}/30", ip(0)), [ip(0), ip(1), ip(2), ip(3)])
}

/// A pod named `name` with `labels` whose httpd on port 80 answers its own name.
fn named_backend(name: &str, labels: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  containers:
  - name: httpd
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"]
{extra}
---
"#
    )
}

const CLIENT: &str = r#"
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

/// The body of `GET /` over HTTP/1.0, trimmed; the error when the connection fails.
fn http_body(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body.trim().to_string())
}

/// Polls `f` until it returns true, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// Waits until `svc` has a cluster IP and `want` ready endpoints; returns the cluster IP.
fn cluster_ip_with_endpoints(c: &Cluster, svc: &str, want: usize) -> String {
    eventually(90, &format!("{want} ready endpoints of {svc}"), || {
        let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={svc}"),
            "-o",
            "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
            == want
    });
    c.jsonpath(&format!("service/{svc}"), "{.spec.clusterIP}")
}

/// The `status.loadBalancer.ingress` addresses of `svc`, once it has `want` of them.
fn wait_for_lb_ip(c: &Cluster, svc: &str, want: &str) {
    c.wait_until(
        &format!("service/{svc}"),
        "{.status.loadBalancer.ingress[*].ip}",
        30,
        |got| got == want,
    );
}

/// The EXTERNAL-IP column of `kubectl get service NAME`.
fn external_ip_column(c: &Cluster, svc: &str) -> String {
    let out = c.kubectl_ok(&["get", "service", svc, "--no-headers"]);
    out.split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string()
}

/// `reason|object|message` of every Event in the default namespace.
fn events(c: &Cluster) -> String {
    c.kubectl_ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.type}|{.reason}|{.involvedObject.name}|{.message}{\"\\n\"}{end}",
    ])
}

/// Which backends answer `n` requests to `target`.
fn backends_seen(target: SocketAddr, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| http_body(target).unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

fn lb_service(name: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, targetPort: 80}}]
{extra_spec}
"#
    )
}

fn start_with_pool(pool: &str) -> (Cluster, ServerProcess) {
    Cluster::start_with(&["--service-lb-pool", pool], &[])
}

#[test]
fn load_balancer_addresses_come_from_the_pool_and_answer_from_the_host() {
    let (pool, ips) = test_pool(0);
    let ip = |i: usize| ips[i].to_string();
    let (c, server) = start_with_pool(&pool);

    c.apply(&named_backend("web", "app: web", ""));
    // A requested address first, so the lowest-free choice cannot take it.
    c.apply(&lb_service(
        "lb-req",
        &format!("  loadBalancerIP: {}", ip(3)),
    ));
    wait_for_lb_ip(&c, "lb-req", &ip(3));
    c.apply(&lb_service("lb-a", ""));
    wait_for_lb_ip(&c, "lb-a", &ip(0));
    assert_eq!(
        c.jsonpath("service/lb-a", "{.status.loadBalancer.ingress[0].ipMode}"),
        "VIP"
    );
    // kubectl shows it, 1.33 and 1.27 alike.
    assert_eq!(external_ip_column(&c, "lb-a"), ip(0));
    let kubectl_127 = c.kubectl.with_file_name("kubectl.1.27");
    let out = Command::new(&kubectl_127)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["get", "services", "lb-a", "lb-req", "--no-headers"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let columns: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(columns.len(), 2, "{table}");
    assert_eq!(
        (columns[0][3], columns[1][3]),
        (ip(0).as_str(), ip(3).as_str()),
        "{table}"
    );

    // The address answers from the host, on the Service's port.
    cluster_ip_with_endpoints(&c, "lb-a", 1);
    eventually(30, "the LoadBalancer address from the host", || {
        http_body(addr(&ip(0), 8080)).is_ok_and(|b| b == "web")
    });
    assert_eq!(http_body(addr(&ip(3), 8080)).unwrap(), "web");

    // One address per Service until the pool runs out.
    c.apply(&lb_service("lb-b", ""));
    wait_for_lb_ip(&c, "lb-b", &ip(1));
    c.apply(&lb_service("lb-c", ""));
    wait_for_lb_ip(&c, "lb-c", &ip(2));
    c.apply(&lb_service("lb-d", ""));
    eventually(30, "an AllocationFailed event for lb-d", || {
        events(&c).lines().any(|l| {
            l.starts_with("Warning|AllocationFailed|lb-d|")
                && l.contains("Failed to allocate IP for \"default/lb-d\": no available IPs")
        })
    });
    assert_eq!(external_ip_column(&c, "lb-d"), "<pending>");
    assert!(
        events(&c)
            .lines()
            .any(|l| l == format!("Normal|IPAllocated|lb-a|Assigned IP [\"{}\"]", ip(0))),
        "{}",
        events(&c)
    );

    // A deleted Service's address goes to the one waiting.
    c.kubectl_ok(&["delete", "service", "lb-b"]);
    wait_for_lb_ip(&c, "lb-d", &ip(1));

    // A Service that stops being a LoadBalancer loses its address, which comes free.
    c.kubectl_ok(&[
        "patch",
        "service",
        "lb-c",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    wait_for_lb_ip(&c, "lb-c", "");
    assert_eq!(external_ip_column(&c, "lb-c"), "<none>");
    c.apply(&lb_service("lb-e", ""));
    wait_for_lb_ip(&c, "lb-e", &ip(2));

    // Services of another load-balancer class are left alone.
    c.apply(&lb_service(
        "lb-other",
        "  loadBalancerClass: example.com/other",
    ));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(external_ip_column(&c, "lb-other"), "<pending>");

    // Deleting the Service stops the address answering.
    c.kubectl_ok(&["delete", "service", "lb-a"]);
    eventually(
        30,
        "the deleted Service's address to stop answering",
        || !http_body(addr(&ip(0), 8080)).is_ok_and(|b| b == "web"),
    );

    drop(server);
}

#[test]
fn without_a_pool_load_balancers_show_the_nodes_address_kubectl_127() {
    let (mut c, server) = Cluster::start(&[]);
    c.kubectl = c.kubectl.with_file_name("kubectl.1.27");
    let node_ip = c.jsonpath(
        "node/node-a",
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    );
    assert!(node_ip.parse::<Ipv4Addr>().is_ok(), "{node_ip:?}");
    c.apply(&lb_service("lb", ""));
    wait_for_lb_ip(&c, "lb", &node_ip);
    assert_eq!(external_ip_column(&c, "lb"), node_ip);
    // A requested address cannot be honoured without a pool, and is not.
    c.apply(&lb_service("lb-req", "  loadBalancerIP: 198.18.255.1"));
    wait_for_lb_ip(&c, "lb-req", &node_ip);
    drop(server);
}

#[test]
fn session_affinity_client_ip_and_hairpin() {
    let (c, server) = Cluster::start(&[]);
    let mut yaml = named_backend("web-a", "app: web, name: web-a", "");
    yaml.push_str(&named_backend("web-b", "app: web, name: web-b", ""));
    yaml.push_str(
        r#"
apiVersion: v1
kind: Service
metadata: {name: spread}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: only-a}
spec:
  selector: {name: web-a}
  ports: [{name: http, port: 80}]
"#,
    );
    c.apply(&yaml);
    let spread = cluster_ip_with_endpoints(&c, "spread", 2);
    let sticky = cluster_ip_with_endpoints(&c, "sticky", 2);
    let only_a = cluster_ip_with_endpoints(&c, "only-a", 1);
    let both: BTreeSet<String> = ["web-a".to_string(), "web-b".to_string()].into();

    // Without affinity both backends answer (the chance that 30 random picks all land on
    // one of two is 2^-29).
    let mut seen = BTreeSet::new();
    eventually(30, "both backends behind the spread Service", || {
        seen = backends_seen(addr(&spread, 80), 30);
        seen == both
    });
    // With ClientIP affinity one client always gets the same backend.
    let seen = backends_seen(addr(&sticky, 80), 30);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(both.is_superset(&seen), "{seen:?}");

    // Hairpin: web-a reaches its own Service's cluster IP and answers itself.
    let mut last = String::new();
    eventually(30, "web-a through its own Service", || {
        let out = c.exec(
            "web-a",
            "httpd",
            &["sh", "-c", &format!("timeout 5 wget -qO- http://{only_a}/")],
        );
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last.trim() == "web-a"
    });
    drop(server);
}

/// A Service without selector and its hand-written EndpointSlice: `ip` on `node`.
fn manual_service(name: &str, spec: &str, ip: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: http, port: 80}}]
{spec}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
  nodeName: {node}
---
"#
    )
}

#[test]
fn local_traffic_policies_use_only_this_nodes_endpoints() {
    let (pool, ips) = test_pool(1);
    let (c, server) = start_with_pool(&pool);
    let mut yaml = named_backend("web", "app: backend", "");
    yaml.push_str(CLIENT);
    c.apply(&yaml);
    c.wait_for("pod/web", "{.status.phase}", "Running");
    c.wait_for("pod/client", "{.status.phase}", "Running");
    let web = c.jsonpath("pod/web", "{.status.podIP}");

    // The same pod behind each Service; the slices say which node it is on. node-b does
    // not exist: for node-a's proxy, an endpoint there is on another node.
    let mut yaml = String::new();
    for (name, spec, node) in [
        ("itp-here", "  internalTrafficPolicy: Local", "node-a"),
        ("itp-elsewhere", "  internalTrafficPolicy: Local", "node-b"),
        ("itp-cluster", "  internalTrafficPolicy: Cluster", "node-b"),
        (
            "etp-here",
            "  type: LoadBalancer\n  externalTrafficPolicy: Local",
            "node-a",
        ),
        (
            "etp-elsewhere",
            "  type: LoadBalancer\n  externalTrafficPolicy: Local",
            "node-b",
        ),
        (
            "etp-cluster",
            "  type: LoadBalancer\n  externalTrafficPolicy: Cluster",
            "node-b",
        ),
    ] {
        yaml.push_str(&manual_service(name, spec, &web, node));
    }
    c.apply(&yaml);
    let cluster_ip = |svc: &str| c.jsonpath(&format!("service/{svc}"), "{.spec.clusterIP}");
    let lb_ip = |svc: &str| {
        c.wait_until(
            &format!("service/{svc}"),
            "{.status.loadBalancer.ingress[0].ip}",
            30,
            |ip| ips.iter().any(|p| p.to_string() == ip),
        )
    };

    // internalTrafficPolicy Local: the cluster IP leads to this node's endpoints only,
    // for the host as for pods.
    let here = cluster_ip("itp-here");
    eventually(30, "itp-here from the host", || {
        http_body(addr(&here, 80)).is_ok_and(|b| b == "web")
    });
    eventually(30, "itp-cluster from the host", || {
        http_body(addr(&cluster_ip("itp-cluster"), 80)).is_ok_and(|b| b == "web")
    });
    let elsewhere = cluster_ip("itp-elsewhere");
    let got = http_body(addr(&elsewhere, 80));
    assert!(got.is_err(), "itp-elsewhere answered: {got:?}");
    let wget = |target: &str| {
        let out = c.exec(
            "client",
            "sh",
            &["sh", "-c", &format!("timeout 4 wget -qO- http://{target}/")],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(wget(&here), "web");
    assert_eq!(
        wget(&elsewhere),
        "",
        "itp-elsewhere answered the client pod"
    );

    // externalTrafficPolicy Local: traffic from outside this node (here: a pod) to the
    // load-balancer address reaches this node's endpoints only; the Cluster policy
    // reaches any.
    let (etp_here, etp_elsewhere, etp_cluster) = (
        lb_ip("etp-here"),
        lb_ip("etp-elsewhere"),
        lb_ip("etp-cluster"),
    );
    eventually(30, "etp-here from the client pod", || {
        wget(&etp_here) == "web"
    });
    assert_eq!(wget(&etp_cluster), "web");
    assert_eq!(
        wget(&etp_elsewhere),
        "",
        "etp-elsewhere answered the client pod"
    );
    // The node itself still reaches every endpoint (kube-proxy's short cut for
    // node-local clients).
    assert_eq!(http_body(addr(&etp_elsewhere, 80)).unwrap(), "web");
    drop(server);
}

#[test]
fn only_ready_endpoints_serve_and_none_rejects_at_once() {
    let (pool, ips) = test_pool(2);
    let (c, server) = start_with_pool(&pool);
    let mut yaml = named_backend("ready", "app: web", "");
    yaml.push_str(&named_backend(
        "unready",
        "app: web",
        "    readinessProbe:\n      exec: {command: [\"false\"]}\n      periodSeconds: 1",
    ));
    yaml.push_str(
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  type: LoadBalancer
  selector: {app: nothing}
  ports: [{name: http, port: 80}]
"#,
    );
    c.apply(&yaml);
    c.wait_for("pod/unready", "{.status.phase}", "Running");
    let web = cluster_ip_with_endpoints(&c, "web", 1);
    // The unready pod is listed, not ready.
    eventually(30, "the unready endpoint in the slice", || {
        c.kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ])
        .split_whitespace()
        .count()
            == 2
    });
    let seen = backends_seen(addr(&web, 80), 20);
    assert_eq!(seen, BTreeSet::from(["ready".to_string()]));

    // No endpoint at all: refused at once, not left to time out.
    let nothing = c.jsonpath("service/nothing", "{.spec.clusterIP}");
    let lb = c.wait_until(
        "service/nothing",
        "{.status.loadBalancer.ingress[0].ip}",
        30,
        |ip| ip == ips[0].to_string(),
    );
    for target in [addr(&nothing, 80), addr(&lb, 80)] {
        eventually(30, &format!("{target} to refuse"), || {
            let start = Instant::now();
            let err = TcpStream::connect_timeout(&target, Duration::from_secs(3)).err();
            err.is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused)
                && start.elapsed() < Duration::from_secs(1)
        });
    }
    // The only ready pod goes: the Service has an unready endpoint only, and refuses.
    c.kubectl_ok(&["delete", "pod", "ready", "--grace-period=1"]);
    eventually(
        60,
        "the web Service to refuse without ready endpoints",
        || {
            let err = TcpStream::connect_timeout(&addr(&web, 80), Duration::from_secs(3)).err();
            err.is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        },
    );
    drop(server);
}

#[test]
fn terminating_endpoints_serve_only_while_no_other_is_ready() {
    let (c, server) = Cluster::start(&[]);
    // `old` ignores SIGTERM (httpd inherits the ignored signal), so it keeps serving
    // through its grace period after the delete.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: old, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: httpd
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap '' TERM; mkdir -p /www && echo old > /www/index.html && httpd -f -p 80 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"#,
    );
    let web = cluster_ip_with_endpoints(&c, "web", 1);
    eventually(30, "old behind the Service", || {
        http_body(addr(&web, 80)).is_ok_and(|b| b == "old")
    });
    c.kubectl_ok(&["delete", "pod", "old", "--wait=false"]);
    c.wait_until(
        "endpointslices",
        "{.items[*].endpoints[*].conditions}",
        30,
        |got| got.contains("\"terminating\":true") && got.contains("\"serving\":true"),
    );
    // No endpoint is ready: the serving terminating one still gets the traffic.
    let seen = backends_seen(addr(&web, 80), 10);
    assert_eq!(seen, BTreeSet::from(["old".to_string()]));
    // Once another is ready, new connections go to it alone.
    c.apply(&named_backend("new", "app: web", ""));
    cluster_ip_with_endpoints(&c, "web", 1);
    eventually(30, "new behind the Service", || {
        http_body(addr(&web, 80)).is_ok_and(|b| b == "new")
    });
    let seen = backends_seen(addr(&web, 80), 20);
    assert_eq!(seen, BTreeSet::from(["new".to_string()]));
    assert_eq!(c.jsonpath("pod/old", "{.status.phase}"), "Running");
    drop(server);
}

#[test]
fn headless_and_external_name_services_reach_the_pod_by_name() {
    let (c, server) = Cluster::start(&[]);
    let mut yaml = named_backend("web", "app: web", "");
    yaml.push_str(CLIENT);
    yaml.push_str(
        r#"
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: direct}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: alias}
spec:
  type: ExternalName
  externalName: web.default.svc.cluster.local
"#,
    );
    c.apply(&yaml);
    c.wait_for("pod/client", "{.status.phase}", "Running");
    cluster_ip_with_endpoints(&c, "direct", 1);
    let pod_ip = c.jsonpath("pod/web", "{.status.podIP}");
    assert_eq!(c.jsonpath("service/direct", "{.spec.clusterIP}"), "None");
    let run = |script: &str| {
        let out = c.exec("client", "sh", &["sh", "-c", script]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Headless: the name is the pod's address, and the pod answers on it.
    let mut last;
    let named = || {
        let out = run("nslookup direct.default.svc.cluster.local");
        let found = out.contains(&pod_ip);
        (found, out)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (found, out) = named();
        last = out.clone();
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the headless Service's name never resolved to {pod_ip}: {out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        run("timeout 5 wget -qO- http://direct/").trim(),
        "web",
        "{last}"
    );
    // ExternalName: a CNAME to the other Service's name.
    eventually(30, "the ExternalName Service's name", || {
        last = run("nslookup alias.default.svc.cluster.local");
        last.contains("web.default.svc.cluster.local")
    });
    // (Reaching the pod through `alias` needs the target's A records in the same answer,
    // as CoreDNS adds for names in the cluster domain: busybox's resolver does not chase
    // CNAMEs, and the cluster DNS does not add them yet.)
    assert_eq!(
        c.jsonpath("service/alias", "{.spec.clusterIP}"),
        "",
        "an ExternalName Service has no cluster IP"
    );
    drop(server);
}
