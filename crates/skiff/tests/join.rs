//! Joining a node with a bootstrap token, as users do: `skiff token create
//! --print-join-command` on the server's root prints a `skiff agent` command, which, run
//! from another root with `--simulate 1`, pins the cluster CA, authenticates with the token
//! and registers a node that turns Ready; `skiff token list` and `delete` manage the token.
//! A real agent trades the token for a client certificate of its node (the TLS bootstrap:
//! a CertificateSigningRequest the csrapproving controller approves) and keeps working
//! with it once the token is deleted; a requester without the `nodeclient` permission
//! is not approved. Needs root (the server runs this host's kubelet).

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{free_port, kubectl_133, Cluster, ServerProcess};
use common::Skiff;

#[test]
fn a_bootstrap_token_joins_a_simulated_node() {
    let (c, _server) = Cluster::start(&[]);
    let join = c.skiff.ok(&[
        "token",
        "create",
        "--print-join-command",
        "--description",
        "e2e join",
    ]);
    let words: Vec<&str> = join.split_whitespace().collect();
    assert_eq!(words[..2], ["skiff", "agent"], "{join}");
    let token = words[words.iter().position(|w| *w == "--token").unwrap() + 1];
    let pin = words[words
        .iter()
        .position(|w| *w == "--discovery-token-ca-cert-hash")
        .unwrap()
        + 1];
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{join}");

    // The token is listed with its description and the node group.
    let list = c.skiff.ok(&["token", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with(token))
        .unwrap_or_else(|| panic!("{token} not listed:\n{list}"));
    assert!(row.contains("e2e join"), "{row}");
    assert!(
        row.contains("system:bootstrappers:skiff:default-node-token"),
        "{row}"
    );

    // Another root, which has no admin kubeconfig: only the join command's credentials.
    let agent_root = Skiff::new();
    let log = agent_root.root.path().join("agent.log");
    let agent = agent_root
        .cmd(&words[1..])
        .args(["--simulate", "1", "--node-name-prefix", "joined-"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _agent = ServerProcess(agent);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.jsonpath(
        "node/joined-0",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    ) != "True"
    {
        assert!(
            Instant::now() < deadline,
            "joined-0 never became Ready; agent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let nodes = c.kubectl_ok(&["get", "nodes"]);
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("joined-0") && l.contains(" Ready ")),
        "{nodes}"
    );

    // A wrong pin is refused before the token is sent.
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let mut args: Vec<&str> = words[1..].to_vec();
    let at = args.iter().position(|w| *w == pin).unwrap();
    args[at] = &wrong_pin;
    args.extend(["--simulate", "1", "--node-name-prefix", "never-"]);
    let out = agent_root.run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("presented no CA certificate with public key"),
        "{err}"
    );

    // Deleted, the token is gone from the list.
    let deleted = c.skiff.ok(&["token", "delete", token]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let list = c.skiff.ok(&["token", "list"]);
    assert!(!list.contains(token), "{list}");
}

/// The `skiff agent` of a join command, on `root`, as node `node`, logging to `log`.
fn start_agent(root: &Skiff, join: &[&str], node: &str, port: &str, log: &str) -> ServerProcess {
    let name = root.root.path().file_name().unwrap().to_string_lossy();
    let child = root
        .cmd(join)
        .args(["--node-name", node, "--kubelet-port", port])
        .env("SKIFF_KUBELET_CGROUP_ROOT", format!("/skiff-test-{name}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.root.path().join(log)).unwrap())
        .spawn()
        .unwrap();
    ServerProcess(child)
}

/// A kubelet client request for node `node` (a P-256 key by openssl) as a manifest named
/// `name`, written under `dir`.
fn kubelet_request_manifest(dir: &std::path::Path, name: &str, node: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-subj",
            &format!("/CN=system:node:{node}/O=system:nodes"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {out:?}");
    let pem = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr).unwrap());
    let manifest = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\n\
             metadata:\n  name: {name}\nspec:\n  request: {pem}\n\
             \x20 signerName: kubernetes.io/kube-apiserver-client-kubelet\n\
             \x20 usages: [digital signature, client auth]\n"
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn a_joined_agent_trades_its_token_for_a_node_certificate() {
    let (c, _server) = Cluster::start(&[]);
    let join = c.skiff.ok(&["token", "create", "--print-join-command"]);
    let words: Vec<&str> = join.split_whitespace().collect();
    let arg = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
    let (token, server) = (arg("--token"), arg("--server"));
    let token_id = token.split('.').next().unwrap();

    // A requester that may create requests but not `certificatesigningrequests/nodeclient`:
    // its kubelet client request is left for an administrator.
    c.kubectl_ok(&["create", "serviceaccount", "requester"]);
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "requester-bootstrapper",
        "--clusterrole=system:node-bootstrapper",
        "--serviceaccount=default:requester",
    ]);
    let sa_token = c.kubectl_ok(&["create", "token", "requester"]);
    let manifest = kubelet_request_manifest(c.skiff.root.path(), "sa-request", "elsewhere");
    let as_requester = std::process::Command::new(kubectl_133())
        .args(["--kubeconfig", "/dev/null", "--insecure-skip-tls-verify"])
        .args([
            "--server",
            server,
            "--token",
            sa_token.trim(),
            "create",
            "-f",
        ])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(as_requester.status.success(), "{as_requester:?}");
    let pending = || c.jsonpath("csr/sa-request", "{.status.conditions}");

    let agent_root = Skiff::with_busybox();
    let node = format!(
        "tls-{}",
        agent_root
            .root
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
    );
    let port = free_port().to_string();
    let log =
        |file: &str| std::fs::read_to_string(agent_root.root.path().join(file)).unwrap_or_default();
    let agent = start_agent(&agent_root, &words[1..], &node, &port, "agent.log");
    let ready = || {
        c.jsonpath(
            &format!("node/{node}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{node} never became Ready; agent log:\n{}",
            log("agent.log")
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The request, made with the token, approved by the controller and issued.
    let csrs = c.kubectl_ok(&["get", "csr"]);
    let row = csrs
        .lines()
        .find(|l| l.contains(&format!("system:bootstrap:{token_id}")))
        .unwrap_or_else(|| panic!("no request of the token:\n{csrs}\n{}", log("agent.log")));
    assert!(row.starts_with("node-csr-"), "{row}");
    assert!(
        row.contains("kubernetes.io/kube-apiserver-client-kubelet"),
        "{row}"
    );
    assert!(row.contains("Approved,Issued"), "{row}");
    let name = row.split_whitespace().next().unwrap();
    assert_eq!(
        c.jsonpath(
            &format!("csr/{name}"),
            "{.status.conditions[?(@.type==\"Approved\")].reason}"
        ),
        "AutoApproved"
    );

    assert_eq!(pending(), "", "{}", c.kubectl_ok(&["get", "csr"]));

    // The agent's kubeconfig, private, is the node's identity.
    let kubeconfig = agent_root.root.path().join("agent/kubelet.kubeconfig");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&kubeconfig)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", kubeconfig.display(), log("agent.log")))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let whoami = |config: &std::path::Path| {
        std::process::Command::new(kubectl_133())
            .arg("--kubeconfig")
            .arg(config)
            .args(["auth", "whoami"])
            .output()
            .unwrap()
    };
    let out = whoami(&kubeconfig);
    let me = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{me}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(me.contains(&format!("system:node:{node}")), "{me}");
    assert!(me.contains("system:nodes"), "{me}");
    assert!(!me.contains("system:bootstrappers"), "{me}");

    // With the token deleted (and refused), the node keeps renewing its Lease and stays
    // Ready: its heartbeats use the certificate.
    c.skiff.ok(&["token", "delete", token]);
    let with_token = std::process::Command::new(kubectl_133())
        .args(["--kubeconfig", "/dev/null", "--insecure-skip-tls-verify"])
        .args(["--server", server, "--token", token, "get", "nodes"])
        .output()
        .unwrap();
    assert!(
        !with_token.status.success(),
        "the deleted token still works"
    );
    let lease = format!("lease/{node}");
    let renew_time = || {
        c.kubectl_ok(&[
            "get",
            &lease,
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = renew_time();
    let deadline = Instant::now() + Duration::from_secs(60);
    while renew_time() == before {
        assert!(
            Instant::now() < deadline,
            "the lease was not renewed after the token was deleted:\n{}",
            log("agent.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(ready(), "{}", log("agent.log"));

    // A pod on the node, deleted while the agent is down, is cleaned up when it returns:
    // its containers stopped and removed, and the pod object finally gone.
    c.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: orphaned}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}}
"
    ));
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/orphaned",
        "--timeout=60s",
    ]);
    let on_node = || agent_root.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(on_node().contains("_orphaned_"), "{}", on_node());

    // Restarted with the same (now deleted) token, the agent uses its certificate.
    drop(agent);
    c.kubectl_ok(&["delete", "pod", "orphaned", "--wait=false"]);
    let _agent = start_agent(&agent_root, &words[1..], &node, &port, "agent2.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log("agent2.log").contains(&format!("kubelet of node {node}")) {
        assert!(Instant::now() < deadline, "restart: {}", log("agent2.log"));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !log("agent2.log").contains("requesting a client certificate"),
        "{}",
        log("agent2.log")
    );
    let before = renew_time();
    let deadline = Instant::now() + Duration::from_secs(60);
    while renew_time() == before {
        assert!(Instant::now() < deadline, "restart: {}", log("agent2.log"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(pending(), "", "{}", c.kubectl_ok(&["get", "csr"]));

    let deadline = Instant::now() + Duration::from_secs(60);
    while c.kubectl(&["get", "pod", "orphaned"]).status.success()
        || on_node().contains("_orphaned_")
    {
        assert!(
            Instant::now() < deadline,
            "the pod deleted while the agent was down is still there: {}\n{}",
            on_node(),
            log("agent2.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
