//! kube-controller-manager's `pvc-protection` and `pv-protection` controllers: the API
//! server gives every new claim the finalizer [`PVC_PROTECTION`] and every new volume
//! [`PV_PROTECTION`]; these loops remove them once a deleted claim is used by no pod (so
//! `kubectl delete pvc` of a claim a pod mounts waits, Terminating, until the pod is
//! gone), and a deleted volume is no longer bound.
//!
//! Level-triggered: a claim is re-examined when it changes and whenever a pod that names
//! it changes; the decision ([`claim_in_use`], [`volume_in_use`]) reads only the caches.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde_json::json;

use crate::pod_util::{is_not_found, key, phase};

/// The finalizer of claims.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer of volumes.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("removing the protection finalizer of {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

/// The claims `pod` names in its volumes (with its namespace).
fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(claim) = &v.persistent_volume_claim {
                return Some(claim.claim_name.clone());
            }
            // A generic ephemeral volume's claim is `<pod>-<volume>`.
            v.ephemeral
                .as_ref()
                .map(|_| format!("{}-{}", pod.name_any(), v.name))
        })
        .collect()
}

/// Whether a pod still uses `claim` (in `namespace`): a pod that names it, was scheduled
/// (a kubelet may be mounting it) and has not finished (the pvc-protection controller's
/// `podUsesPVC`).
pub fn claim_in_use<'a>(
    namespace: &str,
    claim: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> bool {
    pods.into_iter().any(|pod| {
        pod.namespace().as_deref() == Some(namespace)
            && pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
            && !matches!(phase(pod), "Succeeded" | "Failed")
            && claims_of(pod).iter().any(|c| c == claim)
    })
}

/// Whether `volume` is still bound to a claim (the pv-protection controller's check).
pub fn volume_in_use(volume: &PersistentVolume) -> bool {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Bound")
}

fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta()
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer)
}

/// Removes `finalizer` from `obj` through `api`, conditional on the object's
/// resourceVersion (a concurrent change is retried by the next reconcile).
async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let rest: Vec<&String> = obj
        .meta()
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch =
        json!({"metadata": {"resourceVersion": obj.meta().resource_version, "finalizers": rest}});
    match api
        .patch(
            &obj.meta().name.clone().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
}

/// Runs both controllers until their watches end.
pub async fn run(client: Client) {
    futures::join!(run_claims(client.clone()), run_volumes(client));
}

async fn run_claims(client: Client) {
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
    });
    Controller::new(
        Api::<PersistentVolumeClaim>::all(client),
        watcher::Config::default(),
    )
    // A pod that names claims wakes them: it may have just finished or gone.
    .watches_stream(pod_events, |pod: Pod| {
        let namespace = pod.namespace().unwrap_or_default();
        claims_of(&pod)
            .into_iter()
            .map(|c| ObjectRef::new(&c).within(&namespace))
            .collect::<Vec<_>>()
    })
    .run(reconcile_claim, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

async fn run_volumes(client: Client) {
    Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_volume, error_policy, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

fn error_policy<K, C>(_: Arc<K>, err: &Error, _: Arc<C>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Ctx>,
) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    if claim.metadata.deletion_timestamp.is_none() || !has_finalizer(claim.as_ref(), PVC_PROTECTION)
    {
        return Ok(Action::await_change());
    }
    let namespace = claim.namespace().unwrap_or_default();
    let pods = ctx.pods.state();
    if claim_in_use(
        &namespace,
        &claim.name_any(),
        pods.iter().map(|p| p.as_ref()),
    ) {
        // The pod's change wakes the claim again.
        return Ok(Action::await_change());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    remove_finalizer(&api, claim.as_ref(), PVC_PROTECTION)
        .await
        .map_err(|source| Error {
            key: key(&claim.metadata),
            source,
        })?;
    Ok(Action::await_change())
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    client: Arc<Client>,
) -> Result<Action, Error> {
    if volume.metadata.deletion_timestamp.is_none()
        || !has_finalizer(volume.as_ref(), PV_PROTECTION)
        || volume_in_use(&volume)
    {
        return Ok(Action::await_change());
    }
    let api: Api<PersistentVolume> = Api::all(client.as_ref().clone());
    remove_finalizer(&api, volume.as_ref(), PV_PROTECTION)
        .await
        .map_err(|source| Error {
            key: volume.name_any(),
            source,
        })?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, claim: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn a_claim_is_in_use_while_a_scheduled_unfinished_pod_names_it() {
        let running = pod("web", "node-a", "Running", "data");
        assert!(claim_in_use("default", "data", [&running]));
        // Its generic ephemeral volume's claim too.
        assert!(claim_in_use("default", "web-scratch", [&running]));
        assert!(!claim_in_use("default", "other", [&running]));
        assert!(!claim_in_use("elsewhere", "data", [&running]));
        // Finished or never scheduled pods do not hold it.
        let done = pod("job", "node-a", "Succeeded", "data");
        let pending = pod("wait", "", "Pending", "data");
        assert!(!claim_in_use("default", "data", [&done, &pending]));
    }

    #[test]
    fn a_volume_is_in_use_while_bound() {
        let volume = |phase: &str| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "v"}, "status": {"phase": phase}}))
                .unwrap()
        };
        assert!(volume_in_use(&volume("Bound")));
        assert!(!volume_in_use(&volume("Released")));
        assert!(!volume_in_use(&volume("Available")));
    }
}
