//! The NetworkPolicy controller of a node: NetworkPolicies, Pods and Namespaces from
//! the API, reduced to what this node's pods may receive and send, programmed through
//! [`skiff_network::network_policy`].
//!
//! Level-triggered: every change of a watched object recomputes the whole
//! [`PolicyMap`] from the caches ([`policy_map`], pure), and
//! [`PolicyEnforcer::sync`] writes only what differs from what it applied. Every
//! [`VERIFY_INTERVAL`] the table is compared with what was applied.
//!
//! Semantics are Kubernetes' (networking.k8s.io/v1): a pod is isolated in a direction
//! only when a policy of its namespace selects it with that policy type; the allowed
//! traffic is the union of the rules of those policies; within a peer, `podSelector`
//! and `namespaceSelector` must both match; named ports resolve against the
//! destination pod's container ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use skiff_network::network_policy::{Allow, Peer, PodPolicy, PolicyEnforcer, PolicyMap, PortMatch};
use tokio::sync::watch;

/// How often the table is checked against what was applied.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(5);

/// Whether `selector` matches `labels` (an empty selector matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or(&[]);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => !value.is_some_and(|v| values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// A pod as policies see it.
#[derive(Debug, Clone)]
struct PodView<'a> {
    pod: &'a Pod,
    namespace: &'a str,
    ip: Ipv4Addr,
    labels: BTreeMap<String, String>,
}

impl PodView<'_> {
    /// The number of a named container port of `protocol`.
    fn named_port(&self, name: &str, protocol: &str) -> Option<u16> {
        self.pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name)
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .and_then(|p| u16::try_from(p.container_port).ok())
    }
}

/// Pods with an address in the pod network (not host-network, not finished).
fn views(pods: &[Arc<Pod>]) -> Vec<PodView<'_>> {
    pods.iter()
        .filter_map(|pod| {
            let spec = pod.spec.as_ref()?;
            if spec.host_network == Some(true) {
                return None;
            }
            let status = pod.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            Some(PodView {
                pod,
                namespace: pod.metadata.namespace.as_deref()?,
                ip: status.pod_ip.as_deref()?.parse().ok()?,
                labels: pod.metadata.labels.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// The policy types of a policy, defaulted as the API server does.
fn policy_types(policy: &NetworkPolicy) -> (bool, bool) {
    let spec = policy.spec.as_ref();
    match spec
        .and_then(|s| s.policy_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (
            true,
            spec.and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty()),
        ),
    }
}

/// Everything the peer stands for, as pods (selectors) or an address block.
enum Resolved<'p> {
    Pods(Vec<&'p PodView<'p>>),
    Block(Peer),
}

fn resolve_peer<'p>(
    peer: &NetworkPolicyPeer,
    policy_ns: &str,
    pods: &'p [PodView<'p>],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Resolved<'p> {
    if let Some(block) = &peer.ip_block {
        let cidr = block.cidr.parse().ok();
        let except = block
            .except
            .iter()
            .flatten()
            .filter_map(|e| e.parse().ok())
            .collect();
        return match cidr {
            Some(cidr) => Resolved::Block(Peer::Block { cidr, except }),
            None => Resolved::Pods(Vec::new()),
        };
    }
    let empty = BTreeMap::new();
    let matched = pods
        .iter()
        .filter(|p| match &peer.namespace_selector {
            None => p.namespace == policy_ns,
            Some(sel) => selector_matches(sel, ns_labels.get(p.namespace).unwrap_or(&empty)),
        })
        .filter(|p| {
            peer.pod_selector
                .as_ref()
                .is_none_or(|sel| selector_matches(sel, &p.labels))
        })
        .collect();
    Resolved::Pods(matched)
}

fn in_block(ip: Ipv4Addr, block: &Peer) -> bool {
    match block {
        Peer::Block { cidr, except } => {
            cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
        }
        Peer::Any => true,
        Peer::Addrs(a) => a.contains(&ip),
    }
}

/// A numeric port of a rule; `None` for a named one.
fn numeric_port(port: &NetworkPolicyPort) -> Option<PortMatch> {
    let protocol = port
        .protocol
        .as_deref()
        .unwrap_or("TCP")
        .to_ascii_lowercase();
    let range = match &port.port {
        None => None,
        Some(IntOrString::Int(n)) => {
            let a = u16::try_from(*n).ok()?;
            let b = port
                .end_port
                .and_then(|e| u16::try_from(e).ok())
                .unwrap_or(a);
            Some((a, b))
        }
        Some(IntOrString::String(_)) => return None,
    };
    Some(PortMatch { protocol, range })
}

fn port_name(port: &NetworkPolicyPort) -> Option<&str> {
    match &port.port {
        Some(IntOrString::String(s)) => Some(s),
        _ => None,
    }
}

/// The allows of one rule (`from`/`to` peers and ports) as seen by `me` in `direction`.
fn rule_allows<'p>(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
    ingress: bool,
    me: &PodView<'_>,
    policy_ns: &str,
    pods: &'p [PodView<'p>],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Allow> {
    let ports: &[NetworkPolicyPort] = ports.map(Vec::as_slice).unwrap_or_default();
    let numeric: Vec<PortMatch> = ports.iter().filter_map(numeric_port).collect();
    let named: Vec<(&str, String)> = ports
        .iter()
        .filter_map(|p| {
            Some((
                port_name(p)?,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ))
        })
        .collect();
    let peers: Vec<Resolved> = match peers.filter(|p| !p.is_empty()) {
        None => vec![Resolved::Block(Peer::Any)],
        Some(list) => list
            .iter()
            .map(|p| resolve_peer(p, policy_ns, pods, ns_labels))
            .collect(),
    };
    let mut out = Vec::new();
    for resolved in peers {
        let (peer, candidates): (Peer, Vec<&PodView>) = match resolved {
            Resolved::Pods(list) => (Peer::Addrs(list.iter().map(|p| p.ip).collect()), list),
            Resolved::Block(block) => {
                let inside = pods.iter().filter(|p| in_block(p.ip, &block)).collect();
                (block, inside)
            }
        };
        if ports.is_empty() {
            out.push(Allow {
                peer,
                ports: vec![],
            });
            continue;
        }
        if !numeric.is_empty() {
            out.push(Allow {
                peer: peer.clone(),
                ports: numeric.clone(),
            });
        }
        for (name, protocol) in &named {
            let proto = protocol.to_ascii_lowercase();
            if ingress {
                // The destination is this pod: its own container ports name the number.
                if let Some(n) = me.named_port(name, protocol) {
                    out.push(Allow {
                        peer: peer.clone(),
                        ports: vec![PortMatch {
                            protocol: proto.clone(),
                            range: Some((n, n)),
                        }],
                    });
                }
                continue;
            }
            // Egress: each destination pod names its own number.
            let mut by_number: BTreeMap<u16, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            for p in &candidates {
                if let Some(n) = p.named_port(name, protocol) {
                    by_number.entry(n).or_default().insert(p.ip);
                }
            }
            for (n, addrs) in by_number {
                out.push(Allow {
                    peer: Peer::Addrs(addrs),
                    ports: vec![PortMatch {
                        protocol: proto.clone(),
                        range: Some((n, n)),
                    }],
                });
            }
        }
    }
    out
}

/// What every pod of `node` that some policy isolates may receive and send.
pub fn policy_map(
    node: &str,
    policies: &[Arc<NetworkPolicy>],
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
) -> PolicyMap {
    let ns_labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let mut labels = n.metadata.labels.clone().unwrap_or_default();
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.clone());
            Some((name, labels))
        })
        .collect();
    let all = views(pods);
    let mut out = PolicyMap::new();
    for me in all
        .iter()
        .filter(|p| p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
    {
        let mut ingress: Option<Vec<Allow>> = None;
        let mut egress: Option<Vec<Allow>> = None;
        for policy in policies {
            let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
            let Some(spec) = policy.spec.as_ref() else {
                continue;
            };
            if ns != me.namespace
                || !selector_matches(
                    spec.pod_selector
                        .as_ref()
                        .unwrap_or(&LabelSelector::default()),
                    &me.labels,
                )
            {
                continue;
            }
            let (is_ingress, is_egress) = policy_types(policy);
            if is_ingress {
                let list = ingress.get_or_insert_with(Vec::new);
                for rule in spec.ingress.iter().flatten() {
                    list.extend(rule_allows(
                        rule.from.as_ref(),
                        rule.ports.as_ref(),
                        true,
                        me,
                        ns,
                        &all,
                        &ns_labels,
                    ));
                }
            }
            if is_egress {
                let list = egress.get_or_insert_with(Vec::new);
                for rule in spec.egress.iter().flatten() {
                    list.extend(rule_allows(
                        rule.to.as_ref(),
                        rule.ports.as_ref(),
                        false,
                        me,
                        ns,
                        &all,
                        &ns_labels,
                    ));
                }
            }
        }
        if ingress.is_some() || egress.is_some() {
            let name = me.pod.metadata.name.as_deref().unwrap_or_default();
            out.insert(
                format!("{}/{name}", me.namespace),
                PodPolicy {
                    ip: Some(me.ip),
                    ingress,
                    egress,
                },
            );
        }
    }
    out
}

fn reflect<K>(api: Api<K>, tx: watch::Sender<u64>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, Default::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while events.next().await.is_some() {
            tx.send_modify(|n| *n += 1);
        }
    });
    store
}

/// Runs until the runtime stops: watches NetworkPolicies, Pods and Namespaces, and
/// syncs `enforcer` for the pods of `node` on every change and every
/// [`VERIFY_INTERVAL`].
pub async fn run(client: Client, node: String, enforcer: PolicyEnforcer) {
    let (tx, mut changes) = watch::channel(0u64);
    let policies = reflect(Api::<NetworkPolicy>::all(client.clone()), tx.clone());
    let pods = reflect(Api::<Pod>::all(client.clone()), tx.clone());
    let namespaces = reflect(Api::<Namespace>::all(client), tx);
    for ready in [
        policies.wait_until_ready().await.is_ok(),
        pods.wait_until_ready().await.is_ok(),
        namespaces.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return;
        }
    }
    let enforcer = Arc::new(Mutex::new(enforcer));
    let mut verify = tokio::time::interval(VERIFY_INTERVAL);
    loop {
        let desired = policy_map(&node, &policies.state(), &pods.state(), &namespaces.state());
        let syncing = enforcer.clone();
        match tokio::task::spawn_blocking(move || syncing.lock().unwrap().sync(&desired)).await {
            Ok(Ok(r)) if r.rebuilt => {
                tracing::info!(
                    "network policy: table rebuilt ({} pods isolated)",
                    r.pods_changed
                )
            }
            Ok(Ok(r)) if r.pods_changed > 0 => {
                tracing::debug!("network policy: {} pods changed", r.pods_changed)
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("network policy: {e}"),
            Err(e) => tracing::warn!("network policy: {e}"),
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = verify.tick() => {
                let checking = enforcer.clone();
                let started = std::time::Instant::now();
                let checked = tokio::task::spawn_blocking(move || checking.lock().unwrap().verify()).await;
                if let Ok(Ok(false)) = checked {
                    tracing::info!("network policy: the policy table differs from what was applied; rebuilding");
                }
                verify.reset_after(crate::proxy::verify_interval(started.elapsed()));
            }
        }
    }
}

#[cfg(test)]
#[path = "network_policy_tests.rs"]
mod tests;
