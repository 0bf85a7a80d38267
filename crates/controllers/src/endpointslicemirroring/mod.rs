//! The EndpointSlice mirroring controller (`pkg/controller/endpointslicemirroring`): a
//! Service without a selector gets its endpoints from an Endpoints object its user writes
//! (an external database, a hand-picked backend); this controller mirrors that object into
//! EndpointSlices, which is what service proxies read. The slices are labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//! endpointslicemirroring-controller.k8s.io`, owned by the Endpoints, and carry the
//! Endpoints' labels.
//!
//! Mirrored: each subset, by address type, at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints
//! per slice; `addresses` as ready endpoints, `notReadyAddresses` as not ready. Not
//! mirrored: Endpoints of Services with a selector (the EndpointSlice controller makes
//! those Services' slices), of no Service, or labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"`; their mirrored slices are deleted.
//!
//! Level-triggered: [`desired_slices`] computes the whole set from the Endpoints and its
//! Service; each reconcile creates, replaces and deletes slices to match it. Slice names
//! are derived from their content's key (address type, ports, chunk), so a repeated
//! reconcile finds the same names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};

use crate::endpointslice::{MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE, SERVICE_NAME_LABEL};
use crate::pod_util::{delete_if_present, key};

/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// The label that keeps an Endpoints object from being mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Annotations of an Endpoints object that are not copied to its slices.
const NOT_COPIED: [&str; 1] = ["endpoints.kubernetes.io/last-change-trigger-time"];

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("mirrored endpoint slices of {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    services: Store<Service>,
    /// The slices this controller made, from their watch.
    slices: Store<EndpointSlice>,
}

/// Whether `endpoints` should be mirrored, given its Service (if any).
pub fn mirrored(endpoints: &Endpoints, service: Option<&Service>) -> bool {
    let Some(service) = service else {
        return false;
    };
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    let skip = endpoints
        .labels()
        .get(SKIP_MIRROR_LABEL)
        .is_some_and(|v| v == "true");
    !selector && !skip && endpoints.metadata.deletion_timestamp.is_none()
}

fn endpoint(address: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        hostname: address.hostname.clone(),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Default::default()
    }
}

/// The slices mirroring `endpoints`, by name (`<endpoints>-<key hash>`), without owner,
/// labels or annotations.
pub fn desired_slices(endpoints: &Endpoints) -> BTreeMap<String, EndpointSlice> {
    // (address type, ports) -> endpoints, in the order of the subsets.
    let mut groups: BTreeMap<(String, String), (Vec<EndpointPort>, Vec<Endpoint>)> =
        BTreeMap::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let ports_key = serde_json::to_string(&ports).unwrap_or_default();
        let all = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        for (address, ready) in all {
            let family = if address.ip.contains(':') {
                "IPv6"
            } else {
                "IPv4"
            };
            groups
                .entry((family.to_string(), ports_key.clone()))
                .or_insert_with(|| (ports.clone(), Vec::new()))
                .1
                .push(endpoint(address, ready));
        }
    }
    let mut out = BTreeMap::new();
    for ((family, ports_key), (ports, list)) in groups {
        for (i, chunk) in list.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            let name = format!(
                "{}-{}",
                endpoints.name_any(),
                short_hash(&format!("{family}/{ports_key}/{i}"))
            );
            out.insert(
                name.clone(),
                EndpointSlice {
                    metadata: ObjectMeta {
                        name: Some(name),
                        ..Default::default()
                    },
                    address_type: family.clone(),
                    endpoints: Some(chunk.to_vec()),
                    ports: Some(ports.clone()),
                },
            );
        }
    }
    out
}

/// FNV-1a as 10 hex digits: names only need to differ.
fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// Runs the controller until its watches end.
pub async fn run(client: Client) {
    let controller = Controller::new(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    );
    let (services, writer) = kube::runtime::reflector::store();
    let service_events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let (slices, slice_writer) = kube::runtime::reflector::store();
    let slice_events = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .reflect(slice_writer)
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client,
        services,
        slices,
    });
    controller
        // A Service gaining or losing its selector, or coming and going, changes whether
        // its Endpoints are mirrored.
        .watches_stream(service_events, |service: Service| {
            let namespace = service.namespace().unwrap_or_default();
            Some(ObjectRef::<Endpoints>::new(&service.name_any()).within(&namespace))
        })
        .owns_stream(slice_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Endpoints>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(endpoints: Arc<Endpoints>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.services).await;
    crate::cache_sync::cache_synced(&ctx.slices).await;
    let namespace = endpoints.namespace().unwrap_or_default();
    let name = endpoints.name_any();
    let err = |source| Error {
        key: key(&endpoints.metadata),
        source,
    };
    let service = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    let want = if mirrored(&endpoints, service.as_deref()) {
        desired_slices(&endpoints)
    } else {
        BTreeMap::new()
    };
    // The slices this controller made for this Service, from the watch cache (a create the
    // cache does not show yet answers 409, and the reconcile runs again).
    let have: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
        })
        .collect();
    // Most Endpoints belong to Services with a selector: nothing to mirror, nothing to
    // remove, no API call.
    if want.is_empty() && have.is_empty() {
        return Ok(Action::await_change());
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut labels = endpoints.labels().clone();
    labels.remove(SKIP_MIRROR_LABEL);
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut annotations = endpoints.annotations().clone();
    for a in NOT_COPIED {
        annotations.remove(a);
    }
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: name.clone(),
        uid: endpoints.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    for (slice_name, mut slice) in want.clone() {
        slice.metadata.namespace = Some(namespace.clone());
        slice.metadata.labels = Some(labels.clone());
        slice.metadata.annotations = (!annotations.is_empty()).then(|| annotations.clone());
        slice.metadata.owner_references = Some(vec![owner.clone()]);
        match have.iter().find(|s| s.name_any() == slice_name) {
            None => match api.create(&PostParams::default(), &slice).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)))
                }
                Err(e) => return Err(err(e)),
            },
            Some(current) => {
                let same = current.address_type == slice.address_type
                    && current.endpoints == slice.endpoints
                    && current.ports == slice.ports
                    && current.metadata.labels == slice.metadata.labels
                    && current.metadata.annotations.clone().unwrap_or_default()
                        == slice.metadata.annotations.clone().unwrap_or_default();
                if !same {
                    slice.metadata.resource_version = current.metadata.resource_version.clone();
                    api.replace(&slice_name, &PostParams::default(), &slice)
                        .await
                        .map_err(err)?;
                }
            }
        }
    }
    for stale in have.iter().filter(|s| !want.contains_key(&s.name_any())) {
        delete_if_present(&api, &stale.name_any())
            .await
            .map_err(err)?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(labels: serde_json::Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default", "labels": labels},
            "subsets": [
                {"addresses": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11", "hostname": "b"}],
                 "notReadyAddresses": [{"ip": "192.0.2.12"}],
                 "ports": [{"name": "pg", "port": 5432}]},
                {"addresses": [{"ip": "fd00::1"}], "ports": [{"name": "pg", "port": 5432}]},
                {"addresses": [{"ip": "192.0.2.20"}], "ports": [{"port": 80, "protocol": "TCP"}]},
            ],
        }))
        .unwrap()
    }

    fn service(selector: Option<serde_json::Value>) -> Service {
        let mut spec = json!({"ports": [{"port": 5432}]});
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": spec})).unwrap()
    }

    #[test]
    fn subsets_become_slices_by_family_and_ports() {
        let slices = desired_slices(&endpoints(json!({})));
        assert_eq!(slices.len(), 3, "{slices:?}");
        let pg4 = slices
            .values()
            .find(|s| s.address_type == "IPv4" && s.endpoints.iter().flatten().count() == 3)
            .expect("the IPv4 postgres slice");
        let pg4_endpoints = pg4.endpoints.clone().unwrap_or_default();
        let ready: Vec<(String, Option<bool>)> = pg4_endpoints
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready))
            .collect();
        assert_eq!(
            ready,
            [
                ("192.0.2.10".to_string(), Some(true)),
                ("192.0.2.11".to_string(), Some(true)),
                ("192.0.2.12".to_string(), Some(false))
            ]
        );
        assert_eq!(pg4_endpoints[1].hostname.as_deref(), Some("b"));
        assert_eq!(
            pg4.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        assert!(slices.values().any(|s| s.address_type == "IPv6"));
        // Names are stable.
        assert_eq!(
            slices.keys().collect::<Vec<_>>(),
            desired_slices(&endpoints(json!({})))
                .keys()
                .collect::<Vec<_>>()
        );
        assert!(slices.keys().all(|n| n.starts_with("db-")));
    }

    #[test]
    fn only_endpoints_of_selectorless_services_are_mirrored() {
        let plain = endpoints(json!({}));
        assert!(mirrored(&plain, Some(&service(None))));
        assert!(mirrored(&plain, Some(&service(Some(json!({}))))));
        assert!(!mirrored(
            &plain,
            Some(&service(Some(json!({"app": "db"}))))
        ));
        assert!(!mirrored(&plain, None));
        let skipped = endpoints(json!({SKIP_MIRROR_LABEL: "true"}));
        assert!(!mirrored(&skipped, Some(&service(None))));
    }
}
