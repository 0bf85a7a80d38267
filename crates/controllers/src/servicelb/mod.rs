//! The service load-balancer controller: addresses for Services of type LoadBalancer, as
//! MetalLB (from a pool) or k3s's servicelb (the nodes' addresses) give them on clusters
//! without a cloud.
//!
//! Every Service of type LoadBalancer without `spec.loadBalancerClass` (or with
//! [`LOAD_BALANCER_CLASS`]) gets `status.loadBalancer.ingress: [{ip, ipMode: VIP}]`,
//! written through the status subresource; the service proxy then routes that address to
//! the Service's endpoints on every node.
//!
//! - With a [`Pool`] (`--service-lb-pool`), each Service holds one address of its own
//!   ([`allocator`]): `spec.loadBalancerIP` or the annotation
//!   `metallb.universe.tf/loadBalancerIPs` (`metallb.io/loadBalancerIPs`) picks it, else
//!   the lowest free one. It is released when the Service is deleted or stops being of
//!   type LoadBalancer. When none is left the status stays empty and a Warning event
//!   `AllocationFailed` says why.
//! - Without one, every such Service shows the InternalIP addresses of the Ready nodes.
//!
//! Level-triggered: each reconcile recomputes the holders from the Service cache
//! ([`allocator::Allocator::sync`]) before deciding, so a restart adopts what the
//! statuses show and a deleted Service's address comes free at the next reconcile.

pub mod allocator;
pub mod pool;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::pod_util::{is_not_found, key};
use allocator::{Allocator, Claim};
pub use pool::{Pool, PoolError};

/// The `spec.loadBalancerClass` this controller serves besides none.
pub const LOAD_BALANCER_CLASS: &str = "skiff.io/service-lb";

/// Annotations asking for an address, MetalLB's (comma-separated; the first IPv4 counts).
const REQUEST_ANNOTATIONS: [&str; 2] = [
    "metallb.universe.tf/loadBalancerIPs",
    "metallb.io/loadBalancerIPs",
];

/// How soon a Service that got no address is looked at again (an address may have come
/// free, or a node become Ready).
const RETRY: Duration = Duration::from_secs(5);

/// The field manager and the events' component.
const COMPONENT: &str = "service-lb-controller";

/// Settings of the service load-balancer controller.
#[derive(Debug, Clone, Default)]
pub struct ServiceLbConfig {
    /// Where addresses come from; `None` gives every Service the Ready nodes'
    /// InternalIPs.
    pub pool: Option<Pool>,
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("load-balancer status of service {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    nodes: Store<Node>,
    allocator: Option<Mutex<Allocator>>,
    recorder: Recorder,
    /// The last failure recorded as an event per Service uid, so a retry that fails the
    /// same way records nothing new.
    failures: Mutex<HashMap<String, String>>,
}

/// Whether this controller gives `service` its address.
pub fn is_served(service: &Service) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && service.metadata.deletion_timestamp.is_none()
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == LOAD_BALANCER_CLASS)
}

/// The IPv4 addresses `service`'s status shows.
fn status_ips(service: &Service) -> Vec<Ipv4Addr> {
    ingress(service)
        .iter()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn ingress(service: &Service) -> &[LoadBalancerIngress] {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

/// The address `service` asks for: `spec.loadBalancerIP`, else the first IPv4 address of
/// MetalLB's annotation.
pub fn requested_ip(service: &Service) -> Option<Ipv4Addr> {
    let spec_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|ip| !ip.is_empty());
    let annotated = || {
        let annotations = service.metadata.annotations.as_ref()?;
        REQUEST_ANNOTATIONS
            .iter()
            .filter_map(|a| annotations.get(*a))
            .flat_map(|v| v.split(','))
            .find_map(|ip| ip.trim().parse::<Ipv4Addr>().ok())
    };
    spec_ip.and_then(|ip| ip.parse().ok()).or_else(annotated)
}

fn claim(service: &Service) -> Claim {
    Claim {
        uid: service.metadata.uid.clone().unwrap_or_default(),
        key: key(&service.metadata),
        current: status_ips(service),
        requested: requested_ip(service),
    }
}

/// The InternalIP addresses of the Ready nodes, sorted (k3s's servicelb without a pool).
pub fn node_addresses<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = nodes
        .into_iter()
        .filter_map(|n| n.status.as_ref())
        .filter(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// The ingress entries of `ips`, in the order given.
fn ingress_of(ips: &[Ipv4Addr]) -> Vec<LoadBalancerIngress> {
    ips.iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            // The address is routed to the endpoints on the nodes themselves.
            ip_mode: Some("VIP".into()),
            ..Default::default()
        })
        .collect()
}

/// Runs the controller until its watches end.
pub async fn run(client: Client, config: ServiceLbConfig) {
    let (nodes, writer) = reflector::store();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let by_nodes = services.clone();
    let pooled = config.pool.is_some();
    // Without a pool the addresses are the nodes': a node changing wakes every Service
    // this controller serves.
    let controller = controller.watches_stream(node_events, move |_: Node| {
        if pooled {
            return Vec::new();
        }
        by_nodes
            .state()
            .iter()
            .filter(|s| is_served(s))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    });
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT),
        client,
        services,
        nodes,
        allocator: config.pool.map(|p| Mutex::new(Allocator::new(p))),
        failures: Mutex::new(HashMap::new()),
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Service>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// What a served Service's status should show, or why it shows nothing.
fn desired(service: &Service, ctx: &Ctx) -> Result<Vec<Ipv4Addr>, String> {
    match &ctx.allocator {
        Some(allocator) => {
            let claims: Vec<Claim> = ctx
                .services
                .state()
                .iter()
                .filter(|s| is_served(s))
                .map(|s| claim(s))
                .collect();
            let mut allocator = allocator.lock().expect("allocator lock");
            allocator.sync(&claims);
            allocator
                .assign(&claim(service))
                .map(|ip| vec![ip])
                .map_err(|e| {
                    format!(
                        "Failed to allocate IP for \"{}\": {e}",
                        key(&service.metadata)
                    )
                })
        }
        None => {
            let ips = node_addresses(ctx.nodes.state().iter().map(|n| n.as_ref()));
            if ips.is_empty() {
                return Err(format!(
                    "Failed to allocate IP for \"{}\": no Ready node has an InternalIP address (and no --service-lb-pool is set)",
                    key(&service.metadata)
                ));
            }
            Ok(ips)
        }
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.services).await;
    crate::cache_sync::cache_synced(&ctx.nodes).await;
    let uid = service.metadata.uid.clone().unwrap_or_default();
    let served = is_served(&service);
    let (ips, failure) = if served {
        match desired(&service, &ctx) {
            Ok(ips) => (ips, None),
            Err(message) => (Vec::new(), Some(message)),
        }
    } else {
        if let Some(allocator) = &ctx.allocator {
            allocator.lock().expect("allocator lock").release(&uid);
        }
        // A Service of another class is its controller's; one that is no longer of
        // type LoadBalancer loses the address it showed.
        let other_class = service
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_some_and(|c| c != LOAD_BALANCER_CLASS);
        if other_class
            || service.metadata.deletion_timestamp.is_some()
            || ingress(&service).is_empty()
        {
            return Ok(Action::await_change());
        }
        (Vec::new(), None)
    };
    let want = ingress_of(&ips);
    if ingress(&service) != want.as_slice() {
        let api: Api<Service> =
            Api::namespaced(ctx.client.clone(), &service.namespace().unwrap_or_default());
        let ingress = if want.is_empty() {
            serde_json::Value::Null
        } else {
            json!(want)
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        match api
            .patch_status(
                &service.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: its address comes free at the next sync.
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error {
                    key: key(&service.metadata),
                    source,
                })
            }
        }
        if !ips.is_empty() {
            let shown: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
            ctx.recorder.record(
                service.as_ref(),
                EventType::Normal,
                "IPAllocated",
                format!("Assigned IP [{}]", shown.join(" ")),
            );
        }
    }
    let mut failures = ctx.failures.lock().expect("failures lock");
    match failure {
        Some(message) => {
            if failures.get(&uid) != Some(&message) {
                tracing::info!("{message}");
                ctx.recorder.record(
                    service.as_ref(),
                    EventType::Warning,
                    "AllocationFailed",
                    message.clone(),
                );
                failures.insert(uid, message);
            }
            Ok(Action::requeue(RETRY))
        }
        None => {
            failures.remove(&uid);
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn served_services() {
        let lb = |extra: serde_json::Value| {
            let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            service(json!({"metadata": {"name": "a", "namespace": "default"}, "spec": spec}))
        };
        assert!(is_served(&lb(json!({}))));
        assert!(is_served(&lb(
            json!({"loadBalancerClass": LOAD_BALANCER_CLASS})
        )));
        assert!(!is_served(&lb(
            json!({"loadBalancerClass": "example.com/other"})
        )));
        assert!(!is_served(&lb(json!({"type": "NodePort"}))));
    }

    #[test]
    fn requested_from_the_spec_or_metallb_annotations() {
        let s = service(json!({
            "metadata": {"name": "a", "annotations": {
                "metallb.universe.tf/loadBalancerIPs": "fd00::1, 198.18.0.9"}},
            "spec": {"type": "LoadBalancer"}
        }));
        assert_eq!(requested_ip(&s), Some(Ipv4Addr::new(198, 18, 0, 9)));
        let s = service(json!({
            "metadata": {"name": "a", "annotations": {
                "metallb.io/loadBalancerIPs": "198.18.0.9"}},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "198.18.0.7"}
        }));
        assert_eq!(requested_ip(&s), Some(Ipv4Addr::new(198, 18, 0, 7)));
        let s = service(json!({"metadata": {"name": "a"}, "spec": {"type": "LoadBalancer"}}));
        assert_eq!(requested_ip(&s), None);
    }

    #[test]
    fn node_addresses_are_the_ready_nodes_internal_ips() {
        let node = |name: &str, ready: &str, ip: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {
                    "conditions": [{"type": "Ready", "status": ready}],
                    "addresses": [
                        {"type": "Hostname", "address": name},
                        {"type": "InternalIP", "address": ip},
                        {"type": "ExternalIP", "address": "203.0.113.1"}
                    ]
                }
            }))
            .unwrap()
        };
        let nodes = [
            node("b", "True", "192.0.2.20"),
            node("a", "True", "192.0.2.10"),
            node("c", "Unknown", "192.0.2.30"),
        ];
        assert_eq!(
            node_addresses(&nodes),
            vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)]
        );
    }

    #[test]
    fn ingress_entries_are_vips() {
        let want = ingress_of(&[Ipv4Addr::new(198, 18, 0, 1)]);
        assert_eq!(
            serde_json::to_value(&want).unwrap(),
            json!([{"ip": "198.18.0.1", "ipMode": "VIP"}])
        );
    }
}
