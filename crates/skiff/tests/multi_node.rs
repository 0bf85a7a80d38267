//! Two nodes, as users build them: `skiff server` on this host and `skiff agent` joined
//! with a bootstrap token from "another machine", a network namespace of its own linked to
//! this host by a veth pair (the nodes share that link, as two hosts share a LAN). The
//! server assigns the agent's node a pod CIDR from `--cluster-cidr`; each node routes the
//! other's pod subnet through the other's address; pods talk across nodes with their own
//! addresses (no NAT), reach Services and the cluster DNS from the agent's node, and
//! kubectl reaches the agent's kubelet (logs, exec). Needs root.

use crate::common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, Cluster, ServerProcess};
use common::Skiff;

fn sh(script: &str) -> Output {
    Command::new("sh").args(["-c", script]).output().unwrap()
}

/// The "other machine": a network namespace with one veth to this host.
struct OtherHost {
    ns: String,
    host_if: String,
    host_ip: String,
    agent_ip: String,
}

impl OtherHost {
    fn create() -> OtherHost {
        let tag = format!("{:x}{:04x}", std::process::id() % 0xffff, rand_u16());
        let octet = rand_u16() % 250 + 1;
        let host = OtherHost {
            ns: format!("skmn-{tag}"),
            host_if: format!("skmh{}", &tag[..tag.len().min(10)]),
            host_ip: format!("198.18.{octet}.1"),
            agent_ip: format!("198.18.{octet}.2"),
        };
        let peer_if = format!("skmp{}", &tag[..tag.len().min(10)]);
        let (ns, host_if, host_ip, agent_ip) =
            (&host.ns, &host.host_if, &host.host_ip, &host.agent_ip);
        let out = sh(&format!(
            "set -e; ip netns add {ns}; ip link add {host_if} type veth peer name {peer_if}; \
             ip link set {peer_if} netns {ns}; ip addr add {host_ip}/24 dev {host_if}; \
             ip link set {host_if} up; ip -n {ns} addr add {agent_ip}/24 dev {peer_if}; \
             ip -n {ns} link set {peer_if} up; ip -n {ns} link set lo up"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        host
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        // The veth's routes (the host's route to the agent's pods) go with it.
        let _ = sh(&format!(
            "ip link del {} 2>/dev/null; ip netns del {}",
            self.host_if, self.ns
        ));
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u16::from_le_bytes(b)
}

/// A command in network namespace `ns` and nothing else: `ip netns exec` would also
/// mount a sysfs of the namespace over /sys, hiding the cgroup filesystems.
fn in_netns(ns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg("--");
    cmd
}

/// The agent's root and process; its root is reset inside its namespace, where its
/// bridges and tables live.
struct Agent {
    skiff: Skiff,
    ns: String,
    process: Option<ServerProcess>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.process.take();
        let mut reset = in_netns(&self.ns);
        reset
            .arg(common::skiff_bin())
            .arg("--root")
            .arg(self.skiff.root.path())
            .args(["system", "reset", "-f"]);
        let _ = reset.output();
    }
}

/// Polls `check` every 500 ms until it gives a value, at most `secs` seconds; then fails
/// with `what()` (evaluated at the failure, so it can read logs).
fn wait(what: impl Fn() -> String, secs: u64, mut check: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other_services_and_dns() {
    let other = OtherHost::create();
    // A cluster CIDR of this test's own (the host's routes to it are this test's).
    let cluster_cidr = format!("10.{}.0.0/16", 230 + rand_u16() % 20);
    let (c, _server) = Cluster::start_with(
        &[
            "--bind-address",
            "0.0.0.0",
            "--node-ip",
            &other.host_ip,
            "--cluster-cidr",
            &cluster_cidr,
        ],
        &[],
    );
    let join = c.skiff.ok(&["token", "create", "--print-join-command"]);
    let words: Vec<&str> = join.split_whitespace().collect();
    assert_eq!(words[..2], ["skiff", "agent"], "{join}");
    // The admin kubeconfig dials 127.0.0.1; the join command the advertised node address.
    assert!(
        join.contains(&format!("--server https://{}:", other.host_ip)),
        "{join}"
    );

    // The agent, on the other host.
    let agent_root = Skiff::with_busybox();
    let log_path = agent_root.root.path().join("agent.log");
    let kubelet_port = free_port().to_string();
    let cgroup_root = format!(
        "/skiff-test-{}",
        agent_root
            .root
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let mut cmd = in_netns(&other.ns);
    cmd.arg(common::skiff_bin())
        .arg("--root")
        .arg(agent_root.root.path())
        .args(&words[1..])
        .args([
            "--node-name",
            "node-b",
            "--node-ip",
            &other.agent_ip,
            "--kubelet-port",
            &kubelet_port,
        ])
        .env("SKIFF_KUBELET_CGROUP_ROOT", &cgroup_root)
        .env("SKIFF_DEFAULT_SUBNET", agent_root.subnet())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let agent = Agent {
        process: Some(ServerProcess(cmd.spawn().unwrap())),
        ns: other.ns.clone(),
        skiff: agent_root,
    };
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // node-b registers, gets the first block of the cluster CIDR and turns Ready.
    c.wait_until(
        "node/node-b",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        90,
        |s| s == "True",
    );
    let cidr_b = c.jsonpath("node/node-b", "{.spec.podCIDR}");
    assert_eq!(
        cidr_b,
        cluster_cidr.replace("/16", "/24"),
        "{}",
        agent_log()
    );
    assert_eq!(
        c.jsonpath(
            "node/node-b",
            "{.status.addresses[?(@.type==\"InternalIP\")].address}"
        ),
        other.agent_ip
    );
    let cidr_a = c.jsonpath("node/node-a", "{.spec.podCIDR}");
    assert!(!cidr_a.is_empty());

    // node-b acts with its own certificate (system:node:node-b), which NodeRestriction
    // keeps to node-b's own objects.
    let as_node_b = |args: &[&str]| -> Output {
        Command::new(&c.kubectl)
            .arg("--kubeconfig")
            .arg(agent.skiff.root.path().join("agent/kubelet.kubeconfig"))
            .args(args)
            .output()
            .unwrap()
    };
    let whoami = as_node_b(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:node:node-b"
    );
    let own = as_node_b(&["annotate", "node", "node-b", "example.com/checked=yes"]);
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    let refused = as_node_b(&["annotate", "node", "node-a", "example.com/checked=yes"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("node \"node-b\" is not allowed to modify node \"node-a\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The Node authorizer: node-b reads no Secret that none of its pods uses.
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "not-for-node-b",
        "--from-literal=k=v",
    ]);
    let secret = as_node_b(&["get", "secret", "not-for-node-b"]);
    assert!(!secret.status.success());
    assert!(
        String::from_utf8_lossy(&secret.stderr)
            .contains("no relationship found between node 'node-b' and this object"),
        "{}",
        String::from_utf8_lossy(&secret.stderr)
    );

    // Each host routes the other node's pods through its address, as skiff's routes.
    let routes = wait(
        || "the server's route to node-b's pods".into(),
        30,
        || {
            let out = sh(&format!("ip route show {cidr_b}"));
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains(&format!("via {}", other.agent_ip))
                .then_some(text)
        },
    );
    assert!(routes.contains("proto 83"), "{routes}");
    wait(
        || "node-b's route to node-a's pods".into(),
        30,
        || {
            let out = sh(&format!("ip -n {} route show {cidr_a}", other.ns));
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains(&format!("via {}", other.host_ip))
                .then_some(text)
        },
    );

    // A web server on node-a that answers with the client's address, behind a Service;
    // a client pod on node-b.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web-a}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-a}
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"peer=$REMOTE_ADDR\"\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && echo hello-from-a > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-a}
spec:
  selector: {app: web-a}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-b, labels: {app: client-b}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-b}
  containers:
  - name: client
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo client-b-started; mkdir -p /www && echo hello-from-b > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#,
    );
    c.wait_until("pod/web-a", "{.status.phase}", 90, |s| s == "Running");
    wait(
        || format!("client-b never ran; agent log:\n{}", agent_log()),
        90,
        || (c.jsonpath("pod/client-b", "{.status.phase}") == "Running").then_some(String::new()),
    );
    assert_eq!(c.jsonpath("pod/client-b", "{.spec.nodeName}"), "node-b");
    let ip_a = c.jsonpath("pod/web-a", "{.status.podIP}");
    let ip_b = c.jsonpath("pod/client-b", "{.status.podIP}");
    let net_b: ipnet::Ipv4Net = cidr_b.parse().unwrap();
    assert!(
        net_b.contains(&ip_b.parse::<std::net::Ipv4Addr>().unwrap()),
        "client-b's IP {ip_b} is not in node-b's pod CIDR {cidr_b}"
    );

    // kubectl reaches node-b's kubelet: logs and exec.
    let logs = c.kubectl_ok(&["logs", "client-b"]);
    assert!(logs.contains("client-b-started"), "{logs}");
    let exec_b = |cmd: &str| -> (bool, String) {
        let out = c.kubectl(&["exec", "client-b", "--", "sh", "-c", cmd]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let retry = |what: &str, cmd: &str, want: &str| -> String {
        wait(
            || format!("{what}: never saw {want:?}\nagent log:\n{}", agent_log()),
            30,
            || {
                let (ok, out) = exec_b(cmd);
                (ok && out.contains(want)).then_some(out)
            },
        )
    };

    // Pod to pod across nodes, with the client's own address (no NAT on the way).
    let seen = retry(
        "node-b -> node-a pod",
        &format!("timeout 5 wget -qO- http://{ip_a}:8080/cgi-bin/ip"),
        "peer=",
    );
    // busybox httpd shows IPv4 peers as v4-mapped IPv6 addresses.
    assert!(
        seen.contains(&format!("peer={ip_b}\n")) || seen.contains(&format!("peer=[::ffff:{ip_b}]")),
        "web-a saw another address than client-b's {ip_b}: {seen}"
    );
    // The other way round: node-a's pod reaches node-b's.
    let back = c.kubectl(&[
        "exec",
        "web-a",
        "--",
        "sh",
        "-c",
        &format!("timeout 5 wget -qO- http://{ip_b}:8080/"),
    ]);
    assert!(
        String::from_utf8_lossy(&back.stdout).contains("hello-from-b"),
        "node-a -> node-b pod: {}{}",
        String::from_utf8_lossy(&back.stdout),
        String::from_utf8_lossy(&back.stderr)
    );
    // A NetworkPolicy on node-b's pod, enforced by node-b: only pods labelled
    // `role: allowed` may connect, and web-a is not one (its own address is matched).
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-allowed}
spec:
  podSelector: {matchLabels: {app: client-b}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: allowed}}}]
"#,
    );
    // What web-a gets from client-b's web server ("blocked" when nothing).
    let from_a_to_b = || {
        let out = c.kubectl(&[
            "exec",
            "web-a",
            "--",
            "sh",
            "-c",
            &format!("timeout 3 wget -qO- http://{ip_b}:8080/ || echo blocked"),
        ]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait(
        || "web-a could still reach client-b through the NetworkPolicy".into(),
        30,
        || from_a_to_b().contains("blocked").then_some(String::new()),
    );
    c.kubectl_ok(&["label", "pod", "web-a", "role=allowed"]);
    wait(
        || "web-a, now allowed, could not reach client-b".into(),
        30,
        || {
            from_a_to_b()
                .contains("hello-from-b")
                .then_some(String::new())
        },
    );

    // A Service, through node-b's own service proxy, and the cluster DNS from node-b.
    let cluster_ip = c.jsonpath("service/web-a", "{.spec.clusterIP}");
    retry(
        "node-b -> Service cluster IP",
        &format!("timeout 5 wget -qO- http://{cluster_ip}/"),
        "hello-from-a",
    );
    retry(
        "node-b -> Service by name",
        "timeout 5 wget -qO- http://web-a.default.svc.cluster.local/",
        "hello-from-a",
    );
    let resolv = exec_b("cat /etc/resolv.conf").1;
    let dns_ip = c.kubectl_ok(&[
        "get",
        "service",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(
        resolv.contains(&format!("nameserver {dns_ip}")),
        "{dns_ip}: {resolv}"
    );

    // The agent leaving with its node deleted: the server's route goes.
    c.kubectl_ok(&["delete", "pod", "client-b", "--grace-period=1"]);
    drop(agent);
    c.kubectl_ok(&["delete", "node", "node-b"]);
    wait(
        || "the server's route to node-b's pods was not removed".into(),
        30,
        || {
            let out = sh(&format!("ip route show {cidr_b}"));
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(String::new())
        },
    );
}
