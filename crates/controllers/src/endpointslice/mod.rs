//! The EndpointSlice controller (`pkg/controller/endpointslice`): for every Service with a
//! selector, EndpointSlices (`discovery.k8s.io/v1`) of at most 100 endpoints each, one set
//! per address type and per mapping of ports, labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io` and owned by
//! the Service. Unlike Endpoints, slices keep terminating pods, with `terminating: true`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};

use crate::endpoints::resolve::{self, PodEndpoint, ResolvedPort};
use crate::endpoints::{watch_services, Members};
use crate::pod_util::{controller_of, delete_if_present, key};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The most endpoints in one slice (`--max-endpoints-per-slice`, default 100).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("endpoint slices of service {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    pods: Store<k8s_openapi::api::core::v1::Pod>,
    slices: Store<EndpointSlice>,
    members: Members,
    /// Slices created per Service uid that the slice cache has not shown yet, and when
    /// (the role of `endpointSliceTracker`): until it does, a sync would create them again.
    created: Mutex<HashMap<String, (HashSet<String>, Instant)>>,
}

/// Runs the EndpointSlice controller until the client's watches end.
pub async fn run(client: Client) {
    let members = Members::default();
    let (controller, pods) = watch_services(&client, members.clone());
    let (slices, writer) = reflector::store();
    let slice_events = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client,
        pods,
        slices,
        members,
        created: Mutex::default(),
    });
    controller
        .owns_stream(slice_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Service>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// The content of one desired slice.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSlice {
    /// `IPv4` or `IPv6`.
    pub address_type: &'static str,
    /// The ports, `None` for the placeholder slice of a Service without endpoints.
    pub ports: Option<Vec<EndpointPort>>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

fn slice_endpoint(e: &PodEndpoint) -> Endpoint {
    Endpoint {
        addresses: vec![e.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(e.ready),
            serving: Some(e.serving),
            terminating: Some(e.terminating),
        }),
        hostname: e.hostname.clone(),
        node_name: e.node_name.clone(),
        target_ref: Some(e.target_ref.clone()),
        ..Default::default()
    }
}

fn slice_ports(ports: &[ResolvedPort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// The slices `endpoints` need: grouped by address type and ports, at most
/// [`MAX_ENDPOINTS_PER_SLICE`] each; one empty placeholder when there are none.
pub fn desired_slices(endpoints: &[PodEndpoint]) -> Vec<DesiredSlice> {
    let mut groups: BTreeMap<(&'static str, Vec<ResolvedPort>), Vec<Endpoint>> = BTreeMap::new();
    for e in endpoints {
        let family = if e.ip.contains(':') { "IPv6" } else { "IPv4" };
        groups
            .entry((family, e.ports.clone()))
            .or_default()
            .push(slice_endpoint(e));
    }
    let mut out = Vec::new();
    for ((family, ports), endpoints) in groups {
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push(DesiredSlice {
                address_type: family,
                ports: Some(slice_ports(&ports)),
                endpoints: chunk.to_vec(),
            });
        }
    }
    if out.is_empty() {
        out.push(DesiredSlice {
            address_type: "IPv4",
            ports: None,
            endpoints: Vec::new(),
        });
    }
    out
}

fn matches(slice: &EndpointSlice, desired: &DesiredSlice) -> bool {
    slice.address_type == desired.address_type
        && slice.ports.clone().filter(|p| !p.is_empty())
            == desired.ports.clone().filter(|p| !p.is_empty())
}

fn labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), service.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    crate::cache_sync::cache_synced(&ctx.slices).await;
    let namespace = service.namespace().unwrap_or_default();
    let err = |source| Error {
        key: key(&service.metadata),
        source,
    };
    let uid = service.metadata.uid.clone().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace.as_str())
                && controller_of(&s.metadata).is_some_and(|o| o.uid == uid)
        })
        .collect();
    existing.sort_by_key(|s| s.metadata.name.clone());
    {
        let mut created = ctx.created.lock().expect("created lock");
        if let Some((names, since)) = created.get_mut(&uid) {
            names.retain(|n| !existing.iter().any(|s| s.metadata.name.as_ref() == Some(n)));
            if names.is_empty() || since.elapsed() > Duration::from_secs(10) {
                created.remove(&uid);
            } else {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
        }
    }
    let desired = if resolve::selector(&service).is_some() {
        let pods = ctx.pods.state();
        let endpoints = resolve::endpoints_of(&service, pods.iter().map(|p| p.as_ref()), true);
        ctx.members.set(
            ObjectRef::from_obj(service.as_ref()),
            endpoints
                .iter()
                .filter_map(|e| e.target_ref.name.clone())
                .collect(),
        );
        desired_slices(&endpoints)
    } else {
        Vec::new()
    };
    let labels = labels(&service);
    let mut unused: Vec<Arc<EndpointSlice>> = existing;
    for want in desired {
        let endpoints = (!want.endpoints.is_empty()).then(|| want.endpoints.clone());
        match unused.iter().position(|s| matches(s, &want)) {
            Some(i) => {
                let current = unused.remove(i);
                let same = current.endpoints.clone().unwrap_or_default() == want.endpoints
                    && current.metadata.labels.as_ref() == Some(&labels);
                if !same {
                    let mut updated = (*current).clone();
                    updated.endpoints = endpoints;
                    updated.metadata.labels = Some(labels.clone());
                    api.replace(&current.name_any(), &PostParams::default(), &updated)
                        .await
                        .map_err(err)?;
                }
            }
            None => {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", service.name_any())),
                        namespace: Some(namespace.clone()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![service
                            .controller_owner_ref(&())
                            .expect("a Service has a name and uid")]),
                        ..Default::default()
                    },
                    address_type: want.address_type.into(),
                    endpoints,
                    ports: want.ports.clone(),
                };
                match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => {
                        let mut map = ctx.created.lock().expect("created lock");
                        let entry = map
                            .entry(uid.clone())
                            .or_insert_with(|| (HashSet::new(), Instant::now()));
                        entry.0.insert(created.name_any());
                    }
                    Err(kube::Error::Api(s)) if s.code == 403 => {}
                    Err(e) => return Err(err(e)),
                }
            }
        }
    }
    for stale in unused {
        delete_if_present(&api, &stale.name_any())
            .await
            .map_err(err)?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::resolve::tests::{pod, service};

    #[test]
    fn slices_hold_at_most_100_endpoints_with_conditions() {
        let s = service(serde_json::json!({}));
        let pods: Vec<_> = (0..150)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    i % 2 == 0,
                    false,
                )
            })
            .collect();
        let slices = desired_slices(&resolve::endpoints_of(&s, &pods, true));
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 50]);
        let ports: Vec<i32> = slices[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port)
            .collect();
        assert_eq!(ports, [8080, 9090]);
        let ready = slices[0]
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().unwrap().ready == Some(true))
            .count();
        assert_eq!(ready, 50);
    }

    #[test]
    fn no_endpoints_leaves_one_placeholder_slice() {
        let slices = desired_slices(&[]);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].ports, None);
        assert!(slices[0].endpoints.is_empty());
    }

    #[test]
    fn terminating_pods_stay_as_terminating_endpoints() {
        let s = service(serde_json::json!({}));
        let pods = [pod("a", "10.0.0.1", true, true)];
        let slices = desired_slices(&resolve::endpoints_of(&s, &pods, true));
        let c = slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }
}
