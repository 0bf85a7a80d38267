use std::sync::Arc;

use serde_json::json;

use super::*;

fn pod(ns: &str, name: &str, ip: &str, node: &str, labels: serde_json::Value) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": if name == "alt" { 8080 } else { 80 }}]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap(),
    )
}

fn namespace(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap())
}

fn policy(ns: &str, spec: serde_json::Value) -> Arc<NetworkPolicy> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
            .unwrap(),
    )
}

fn world() -> (Vec<Arc<Pod>>, Vec<Arc<Namespace>>) {
    (
        vec![
            pod("default", "server", "10.88.0.2", "a", json!({"app": "web"})),
            pod(
                "default",
                "client",
                "10.88.0.3",
                "a",
                json!({"role": "client"}),
            ),
            pod(
                "default",
                "other",
                "10.88.0.4",
                "a",
                json!({"role": "other"}),
            ),
            pod(
                "team",
                "client",
                "10.88.0.5",
                "b",
                json!({"role": "client"}),
            ),
            pod("team", "alt", "10.88.0.6", "b", json!({"app": "web"})),
        ],
        vec![
            namespace("default", json!({})),
            namespace("team", json!({"team": "blue"})),
        ],
    )
}

fn addrs(list: &[&str]) -> Peer {
    Peer::Addrs(list.iter().map(|a| a.parse().unwrap()).collect())
}

fn tcp(n: u16) -> PortMatch {
    PortMatch {
        protocol: "tcp".into(),
        range: Some((n, n)),
    }
}

#[test]
fn no_policy_or_no_selected_pod_isolates_nothing() {
    let (pods, nss) = world();
    assert!(policy_map("a", &[], &pods, &nss).is_empty());
    let p = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"app": "nothing"}}}),
    );
    assert!(policy_map("a", &[p], &pods, &nss).is_empty());
}

#[test]
fn default_deny_isolates_every_local_pod_of_the_namespace_for_ingress_only() {
    let (pods, nss) = world();
    let p = policy("default", json!({"podSelector": {}}));
    let map = policy_map("a", &[p], &pods, &nss);
    assert_eq!(map.len(), 3);
    let server = &map["default/server"];
    assert_eq!(server.ingress, Some(vec![]));
    assert_eq!(server.egress, None);
    // Pods of other nodes are not enforced here.
    assert!(policy_map(
        "b",
        &[policy("default", json!({"podSelector": {}}))],
        &pods,
        &nss
    )
    .is_empty());
}

#[test]
fn egress_rules_default_the_egress_type_and_explicit_types_win() {
    let (pods, nss) = world();
    let p = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"role": "client"}},
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let map = policy_map("a", &[p], &pods, &nss);
    let client = &map["default/client"];
    assert_eq!(client.ingress, Some(vec![]));
    assert_eq!(
        client.egress,
        Some(vec![Allow {
            peer: addrs(&["10.88.0.2"]),
            ports: vec![]
        }])
    );
    let p = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]}),
    );
    let map = policy_map("a", &[p], &pods, &nss);
    assert_eq!(map["default/client"].ingress, None);
    assert_eq!(map["default/client"].egress, Some(vec![]));
}

#[test]
fn pod_and_namespace_selectors_are_anded_within_a_peer_and_ored_across() {
    let (pods, nss) = world();
    let anded = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}},
                               "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
    );
    let map = policy_map("a", &[anded], &pods, &nss);
    assert_eq!(
        map["default/server"].ingress,
        Some(vec![Allow {
            peer: addrs(&["10.88.0.5"]),
            ports: vec![]
        }])
    );
    let ored = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team"}}},
                              {"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["client"]}]}}]}]}),
    );
    let map = policy_map("a", &[ored], &pods, &nss);
    assert_eq!(
        map["default/server"].ingress,
        Some(vec![
            Allow {
                peer: addrs(&["10.88.0.5", "10.88.0.6"]),
                ports: vec![]
            },
            Allow {
                peer: addrs(&["10.88.0.3"]),
                ports: vec![]
            },
        ])
    );
}

#[test]
fn ip_blocks_ports_end_ports_and_named_ports() {
    let (pods, nss) = world();
    let p = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.88.0.0/24"]}}],
                     "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8080}, {"protocol": "UDP"}, {"port": "http"}, {"port": "nope"}]}]}),
    );
    let map = policy_map("a", &[p], &pods, &nss);
    let block = Peer::Block {
        cidr: "10.0.0.0/8".parse().unwrap(),
        except: vec!["10.88.0.0/24".parse().unwrap()],
    };
    assert_eq!(
        map["default/server"].ingress,
        Some(vec![
            Allow {
                peer: block.clone(),
                ports: vec![
                    PortMatch {
                        protocol: "tcp".into(),
                        range: Some((8000, 8080))
                    },
                    PortMatch {
                        protocol: "udp".into(),
                        range: None
                    },
                ]
            },
            // "http" is port 80 of the server itself; "nope" names nothing and allows nothing.
            Allow {
                peer: block,
                ports: vec![tcp(80)]
            },
        ])
    );
    // Egress: a named port resolves per destination pod.
    let p = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}),
    );
    let map = policy_map("a", &[p], &pods, &nss);
    assert_eq!(
        map["default/client"].egress,
        Some(vec![
            Allow {
                peer: addrs(&["10.88.0.2"]),
                ports: vec![tcp(80)]
            },
            Allow {
                peer: addrs(&["10.88.0.6"]),
                ports: vec![tcp(8080)]
            },
        ])
    );
}

#[test]
fn allow_all_and_policies_are_unioned() {
    let (pods, nss) = world();
    let deny = policy("default", json!({"podSelector": {}}));
    let all = policy(
        "default",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
    );
    let map = policy_map("a", &[deny, all], &pods, &nss);
    assert_eq!(
        map["default/server"].ingress,
        Some(vec![Allow {
            peer: Peer::Any,
            ports: vec![]
        }])
    );
    assert_eq!(map["default/client"].ingress, Some(vec![]));
}
