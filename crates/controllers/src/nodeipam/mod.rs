//! The node IPAM controller (kube-controller-manager's `nodeipam` with
//! `--allocate-node-cidrs`): every Node without `spec.podCIDR` gets a block of the cluster
//! CIDR (`--cluster-cidr`, blocks of `--node-cidr-mask-size`), which its kubelet turns into
//! the node's pod network and the other nodes route to.
//!
//! A node that registers with a pod CIDR of its own (the server's node brings its engine's
//! pod network) keeps it, and no block overlapping it is handed out. A CIDR once set is
//! never changed. When no block is left the node gets none, and a Warning event
//! `CIDRNotAvailable` says so, as Kubernetes does.
//!
//! Level-triggered: the blocks held are recomputed from the Node cache on every reconcile,
//! plus the ones written but not yet seen in the cache (two nodes registering together
//! never get the same block).

pub mod allocator;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::pod_util::is_not_found;
pub use allocator::{CidrSet, CidrSetError};

/// The field manager and the events' component.
const COMPONENT: &str = "node-ipam-controller";

/// How soon a node that got no block is looked at again (another node may have left).
const RETRY: Duration = Duration::from_secs(10);

/// Settings of the node IPAM controller.
#[derive(Debug, Clone, Default)]
pub struct NodeIpamConfig {
    /// Where node pod CIDRs come from; `None` allocates none (`--allocate-node-cidrs=false`).
    pub cidrs: Option<CidrSet>,
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("pod CIDR of node {node}: {source}")]
pub struct Error {
    node: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    cidrs: CidrSet,
    /// Blocks patched onto nodes whose new spec the cache may not show yet, by node name.
    pending: Mutex<BTreeMap<String, Ipv4Net>>,
    recorder: Recorder,
}

/// The pod CIDRs `node` holds (`spec.podCIDRs`, else `spec.podCIDR`), IPv4 only.
pub fn pod_cidrs(node: &Node) -> Vec<Ipv4Net> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    let listed = spec.pod_cidrs.iter().flatten();
    let single = spec.pod_cidr.iter();
    listed
        .chain(single)
        .filter_map(|c| c.parse::<Ipv4Net>().ok())
        .map(|c| c.trunc())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Runs the controller until its watch ends; does nothing without a cluster CIDR.
pub async fn run(client: Client, config: NodeIpamConfig) {
    let Some(cidrs) = config.cidrs else {
        return std::future::pending().await;
    };
    let controller = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT),
        nodes: controller.store(),
        client,
        cidrs,
        pending: Mutex::new(BTreeMap::new()),
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Node>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// Picks `node`'s block under the pending lock, so that concurrent reconciles of two nodes
/// never pick the same one; `None` when the cluster CIDR is full.
fn choose(node: &str, ctx: &Ctx) -> Option<Ipv4Net> {
    let mut pending = ctx.pending.lock().expect("pending lock");
    let nodes = ctx.nodes.state();
    // Forget blocks the cache now shows, and those of nodes that are gone.
    pending.retain(|name, _| {
        nodes
            .iter()
            .any(|n| n.name_any() == *name && pod_cidrs(n).is_empty())
    });
    if let Some(block) = pending.get(node) {
        return Some(*block);
    }
    let held: BTreeSet<Ipv4Net> = nodes
        .iter()
        .flat_map(|n| pod_cidrs(n))
        .chain(pending.values().copied())
        .collect();
    let block = ctx.cidrs.next_free(&held)?;
    pending.insert(node.to_string(), block);
    Some(block)
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !pod_cidrs(&node).is_empty() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let Some(block) = choose(&name, &ctx) else {
        ctx.recorder.record(
            node.as_ref(),
            EventType::Warning,
            "CIDRNotAvailable",
            format!(
                "Node {name} status is now: CIDRNotAvailable (no pod CIDR is left in {})",
                ctx.cidrs.cluster()
            ),
        );
        return Ok(Action::requeue(RETRY));
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let cidr = block.to_string();
    // The resourceVersion makes the write conditional: a node whose CIDR was set
    // meanwhile is not overwritten (409, and the next reconcile sees it).
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version()},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    });
    let params = PatchParams {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    };
    match api.patch(&name, &params, &Patch::Merge(patch)).await {
        Ok(_) => {
            tracing::info!("node {name}: pod CIDR {cidr}");
            ctx.recorder.record(
                node.as_ref(),
                EventType::Normal,
                "CIDRAssignmentSucceeded",
                format!("Node {name} was assigned pod CIDR {cidr}"),
            );
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::requeue(Duration::from_secs(1))),
        Err(e) if is_not_found(&e) => {
            ctx.pending.lock().expect("pending lock").remove(&name);
            Ok(Action::await_change())
        }
        Err(source) => Err(Error { node: name, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_read_both_fields_once() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24", "fd00::/64"]},
        }))
        .unwrap();
        assert_eq!(
            pod_cidrs(&node),
            vec!["10.42.1.0/24".parse::<Ipv4Net>().unwrap()]
        );
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap();
        assert!(pod_cidrs(&bare).is_empty());
    }
}
