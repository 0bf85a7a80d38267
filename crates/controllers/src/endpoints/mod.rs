//! The Endpoints controller (`pkg/controller/endpoint`): for every Service with a selector,
//! an Endpoints object of the same name listing the selected pods' IPs, ready ones under
//! `addresses` and the others under `notReadyAddresses`, grouped into subsets by the
//! ports the Service's ports resolve to on each pod.
//!
//! [`resolve`] decides which pods serve a Service and on which ports; the EndpointSlice
//! controller shares it and the Service/pod wiring in [`watch_services`].

pub mod resolve;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};

use crate::pod_util::{is_not_found, key};
use resolve::{PodEndpoint, ResolvedPort};

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("endpoints of service {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

/// Which pods each Service's endpoints listed at its last sync, so a pod that stops
/// matching (its labels changed) still wakes the Services it was in.
#[derive(Clone, Default)]
pub struct Members {
    inner: Arc<Mutex<HashMap<ObjectRef<Service>, HashSet<String>>>>,
}

impl Members {
    /// Records the pods (names) of `service`.
    pub fn set(&self, service: ObjectRef<Service>, pods: HashSet<String>) {
        let mut map = self.inner.lock().expect("members lock");
        if pods.is_empty() {
            map.remove(&service);
        } else {
            map.insert(service, pods);
        }
    }

    /// The Services that listed `pod` in `namespace`.
    fn services_of(&self, namespace: &str, pod: &str) -> Vec<ObjectRef<Service>> {
        let map = self.inner.lock().expect("members lock");
        map.iter()
            .filter(|(s, pods)| s.namespace.as_deref() == Some(namespace) && pods.contains(pod))
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// A Controller over Services that also wakes on changes of the pods they select (or
/// selected), and the pod cache.
pub fn watch_services(client: &Client, members: Members) -> (Controller<Service>, Store<Pod>) {
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let controller = controller.watches_stream(pod_events, move |pod: Pod| {
        let namespace = pod.namespace().unwrap_or_default();
        let mut refs: Vec<ObjectRef<Service>> = services
            .state()
            .iter()
            .filter(|s| resolve::selects(s, &pod))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        for r in members.services_of(&namespace, &pod.name_any()) {
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
        refs
    });
    (controller, pods)
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    members: Members,
}

/// Runs the Endpoints controller until the client's watches end.
pub async fn run(client: Client) {
    let members = Members::default();
    let (controller, pods) = watch_services(&client, members.clone());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        members,
    });
    let main = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    futures::future::join(main, delete_with_services(client)).await;
}

/// Deletes the Endpoints of deleted Services: a deleted Service is not reconciled, and
/// Endpoints carry no owner reference for the garbage collector to follow.
async fn delete_with_services(client: Client) {
    watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .for_each(|event| {
        let client = client.clone();
        async move {
            let Ok(watcher::Event::Delete(service)) = event else {
                return;
            };
            if resolve::selector(&service).is_none() {
                return;
            }
            let api: Api<Endpoints> =
                Api::namespaced(client, &service.namespace().unwrap_or_default());
            if let Err(e) = api
                .delete(&service.name_any(), &DeleteParams::default())
                .await
            {
                if !is_not_found(&e) {
                    tracing::warn!("deleting endpoints of {}: {e}", key(&service.metadata));
                }
            }
        }
    })
    .await;
}

fn error_policy(_: Arc<Service>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

fn address(e: &PodEndpoint) -> EndpointAddress {
    EndpointAddress {
        ip: e.ip.clone(),
        hostname: e.hostname.clone(),
        node_name: e.node_name.clone(),
        target_ref: Some(e.target_ref.clone()),
    }
}

/// The subsets of an Endpoints object: endpoints grouped by their resolved ports, ready
/// ones under `addresses` (`RepackSubsets`), each list sorted.
pub fn subsets(endpoints: &[PodEndpoint]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for e in endpoints {
        let group = groups.entry(e.ports.clone()).or_default();
        if e.ready {
            group.0.push(address(e));
        } else {
            group.1.push(address(e));
        }
    }
    groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: (!p.name.is_empty()).then_some(p.name),
                        port: p.port,
                        protocol: Some(p.protocol),
                        app_protocol: p.app_protocol,
                    })
                    .collect()
            }),
        })
        .collect()
}

/// The labels of the Service's Endpoints: the Service's, and `service.kubernetes.io/headless`
/// for a headless Service.
fn labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let err = |source| Error {
        key: key(&service.metadata),
        source,
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    if resolve::selector(&service).is_none() || service.metadata.deletion_timestamp.is_some() {
        ctx.members
            .set(ObjectRef::from_obj(service.as_ref()), HashSet::new());
        if service.metadata.deletion_timestamp.is_some() {
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                if !is_not_found(&e) {
                    return Err(err(e));
                }
            }
        }
        return Ok(Action::await_change());
    }
    let pods = ctx.pods.state();
    let endpoints = resolve::endpoints_of(&service, pods.iter().map(|p| p.as_ref()), false);
    ctx.members.set(
        ObjectRef::from_obj(service.as_ref()),
        endpoints
            .iter()
            .filter_map(|e| e.target_ref.name.clone())
            .collect(),
    );
    let subsets = subsets(&endpoints);
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels(&service)),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    match api.get_opt(&name).await.map_err(err)? {
        None => match api.create(&PostParams::default(), &desired).await {
            Ok(_) => {}
            // Created meanwhile (or the namespace is going away): the next event retries.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {
                return Ok(Action::requeue(Duration::from_secs(1)))
            }
            Err(e) => return Err(err(e)),
        },
        Some(current) => {
            let same_labels = current.metadata.labels.clone().unwrap_or_default()
                == desired.metadata.labels.clone().unwrap_or_default();
            if current.subsets.clone().unwrap_or_default()
                != desired.subsets.clone().unwrap_or_default()
                || !same_labels
            {
                let mut updated = current.clone();
                updated.subsets = desired.subsets;
                updated.metadata.labels = desired.metadata.labels;
                api.replace(&name, &PostParams::default(), &updated)
                    .await
                    .map_err(err)?;
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::resolve::tests::{pod, service};
    use super::*;

    #[test]
    fn ready_and_not_ready_addresses_share_a_subset_by_ports() {
        let s = service(serde_json::json!({}));
        let pods = [
            pod("a", "10.0.0.1", true, false),
            pod("b", "10.0.0.2", false, false),
        ];
        let subsets = subsets(&resolve::endpoints_of(&s, &pods, false));
        assert_eq!(subsets.len(), 1);
        let ips = |a: &Option<Vec<EndpointAddress>>| {
            a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.2"]);
        let ports: Vec<i32> = subsets[0].ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [8080, 9090]);
    }
}
