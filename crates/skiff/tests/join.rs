//! Joining a node with a bootstrap token, as users do: `skiff token create
//! --print-join-command` on the server's root prints a `skiff agent` command, which, run
//! from another root with `--simulate 1`, pins the cluster CA, authenticates with the token
//! and registers a node that turns Ready; `skiff token list` and `delete` manage the token.
//! Needs root (the server runs this host's kubelet).

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ServerProcess};
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
