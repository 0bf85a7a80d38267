//! The pod network between nodes on this node (flannel's `host-gw` role): from the Node
//! objects, a route to every other node's pod CIDR through its InternalIP, and no NAT
//! between pod subnets, programmed through `skiff-network`'s [`PodNetwork`].
//!
//! Level-triggered: every change of a Node (and a periodic resync, which repairs a route
//! somebody deleted) recomputes the whole desired set with [`desired`].

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use skiff_network::pod_routes::{PodNetwork, PodRoute};

/// How often the routes are checked when no Node changes.
const RESYNC: Duration = Duration::from_secs(30);

/// Nodes of `skiff agent --simulate`: no host behind their addresses.
const SIMULATED_ANNOTATION: &str = "skiff.dev/simulated";

fn pod_cidrs(node: &Node) -> Vec<Ipv4Net> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .filter_map(|c| c.parse::<Ipv4Net>().ok())
        .map(|c| c.trunc())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

/// This node's pod subnets, and the routes to every other node's: through its
/// InternalIP, for nodes that have both (simulated nodes and nodes at this node's own
/// address have no host to route to).
pub fn desired<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    me: &str,
) -> (Vec<Ipv4Net>, Vec<PodRoute>) {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let this = nodes.iter().find(|n| n.name_any() == me);
    let local = this.map(|n| pod_cidrs(n)).unwrap_or_default();
    let my_ip = this.and_then(|n| internal_ip(n));
    let mut routes = BTreeSet::new();
    for node in &nodes {
        let simulated = node
            .annotations()
            .get(SIMULATED_ANNOTATION)
            .is_some_and(|v| v == "true");
        if node.name_any() == me || simulated || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(via) = internal_ip(node) else {
            continue;
        };
        if Some(via) == my_ip {
            continue;
        }
        for subnet in pod_cidrs(node) {
            // A subnet overlapping this node's own would steal its pods' traffic.
            if local
                .iter()
                .any(|l| l.contains(&subnet.network()) || subnet.contains(&l.network()))
            {
                continue;
            }
            routes.insert(PodRoute { subnet, via });
        }
    }
    (local, routes.into_iter().collect())
}

/// Keeps this node's routes to the other nodes' pods until the runtime stops.
pub async fn run(client: Client, node: String, pods: PodNetwork) {
    let pods = Arc::new(pods);
    let (store, writer): (Store<Node>, _) = reflector::store();
    // The watch runs on its own task (a reflector fills its store only while polled);
    // each event bumps a counter this loop waits on.
    let (changed, mut changes) = tokio::sync::watch::channel(0u64);
    let events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while events.next().await.is_some() {
            changed.send_modify(|n| *n += 1);
        }
    });
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut last_skipped = Vec::new();
    // What the last successful sync programmed, and when: Node heartbeats change nothing
    // here, so only a changed desired set (or the periodic resync, which repairs what
    // someone else removed) reaches the kernel.
    let mut applied: Option<(Vec<Ipv4Net>, Vec<PodRoute>)> = None;
    let mut last_sync = tokio::time::Instant::now();
    loop {
        let want = desired(store.state().iter().map(|n| n.as_ref()), &node);
        let due = last_sync.elapsed() >= RESYNC;
        if due || applied.as_ref() != Some(&want) {
            let worker = pods.clone();
            let (local, wanted) = want.clone();
            let result = tokio::task::spawn_blocking(move || worker.sync(&local, &wanted)).await;
            last_sync = tokio::time::Instant::now();
            match result {
                Ok(Ok(report)) => {
                    applied = Some(want);
                    for r in &report.added {
                        tracing::info!("pod network: route {} via {}", r.subnet, r.via);
                    }
                    for r in &report.deleted {
                        tracing::info!("pod network: removed route {} via {}", r.subnet, r.via);
                    }
                    if report.skipped != last_skipped {
                        for (r, why) in &report.skipped {
                            tracing::warn!(
                                "pod network: no route to {} via {}: {why}",
                                r.subnet,
                                r.via
                            );
                        }
                        last_skipped = report.skipped;
                    }
                }
                Ok(Err(e)) => tracing::warn!("pod network: {e}"),
                Err(e) => tracing::warn!("pod network: {e}"),
            }
        }
        // The next Node change, or the resync.
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(last_sync + RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, cidr: Option<&str>, simulated: bool) -> Node {
        let mut n = json!({
            "metadata": {"name": name},
            "spec": {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        });
        if let Some(c) = cidr {
            n["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
        }
        if simulated {
            n["metadata"]["annotations"] = json!({"skiff.dev/simulated": "true"});
        }
        serde_json::from_value(n).unwrap()
    }

    #[test]
    fn every_other_real_node_with_a_cidr_is_routed_through_its_address() {
        let nodes = [
            node("a", "198.18.0.1", Some("10.91.5.0/24"), false),
            node("b", "198.18.0.2", Some("10.42.0.0/24"), false),
            node("c", "198.18.0.3", None, false),
            node("sim-0", "10.64.0.1", Some("10.64.0.0/24"), true),
            node("same-host", "198.18.0.1", Some("10.42.9.0/24"), false),
            node("overlapping", "198.18.0.4", Some("10.91.0.0/16"), false),
        ];
        let (local, routes) = desired(nodes.iter(), "a");
        assert_eq!(local, vec!["10.91.5.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(
            routes,
            vec![PodRoute {
                subnet: "10.42.0.0/24".parse().unwrap(),
                via: "198.18.0.2".parse().unwrap(),
            }]
        );
        // From b's side: a's subnet through a's address.
        let (local, routes) = desired(nodes.iter(), "b");
        assert_eq!(local, vec!["10.42.0.0/24".parse::<Ipv4Net>().unwrap()]);
        assert!(routes.contains(&PodRoute {
            subnet: "10.91.5.0/24".parse().unwrap(),
            via: "198.18.0.1".parse().unwrap(),
        }));
    }
}
