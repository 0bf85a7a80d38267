//! The disruption controller (`pkg/controller/disruption`): keeps every
//! PodDisruptionBudget's status current, which the Eviction API (and so `kubectl drain`)
//! reads. For the pods its selector matches in its namespace:
//! - `expectedPods`: with an integer `minAvailable`, the number of those pods; otherwise
//!   the replicas their controllers (ReplicaSet or its Deployment, StatefulSet,
//!   ReplicationController) ask for;
//! - `desiredHealthy`: `minAvailable` (a percentage of expectedPods, rounded up), or
//!   expectedPods less `maxUnavailable` (a percentage rounded up);
//! - `currentHealthy`: the Ready pods not being deleted and not just evicted (the
//!   Eviction API records those in `disruptedPods`; an entry expires after 2 minutes);
//! - `disruptionsAllowed`: currentHealthy less desiredHealthy, at least 0, and the
//!   `DisruptionAllowed` condition (`SufficientPods` / `InsufficientPods`).
//!
//! Level-triggered: any pod change in a namespace re-computes its budgets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};

use crate::pod_util::{controller_of, is_ready, key, selector_matches};

/// How long an eviction's entry in `disruptedPods` holds the pod out of the healthy count.
const DISRUPTED_TIMEOUT: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("disruption budget {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
}

/// Runs the controller until its watches end.
pub async fn run(client: Client) {
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    let ctx = Arc::new(Ctx { client, pods });
    controller
        .watches_stream(pod_events, move |pod: Pod| {
            let namespace = pod.namespace().unwrap_or_default();
            budgets
                .state()
                .iter()
                .filter(|b| b.namespace().as_deref() == Some(namespace.as_str()))
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<PodDisruptionBudget>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(2))
}

/// `value` of `total` (a number, or a percentage rounded up).
fn scaled(value: &IntOrString, total: i32) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((percent * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// What a budget's status should be, for its `pods` (matching, in its namespace) and the
/// replicas their controllers want (`expected_from_controllers`), at `now`.
pub fn compute_status(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    expected_from_controllers: i32,
    now: jiff::Timestamp,
) -> PodDisruptionBudgetStatus {
    let spec = pdb.spec.clone().unwrap_or_default();
    let old = pdb.status.clone().unwrap_or_default();
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = expected_from_controllers;
            (expected, (expected - scaled(max, expected)).max(0))
        }
        (None, Some(IntOrString::Int(min))) => (pods.len() as i32, *min),
        (None, Some(min)) => {
            let expected = expected_from_controllers;
            (expected, scaled(min, expected))
        }
        (None, None) => (0, 0),
    };
    // Evictions of the last two minutes whose pods are still there and not yet deleting.
    let disrupted: BTreeMap<String, Time> = old
        .disrupted_pods
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            now.duration_since(at.0) < DISRUPTED_TIMEOUT
                && pods.iter().any(|p| {
                    p.metadata.name.as_deref() == Some(name.as_str())
                        && p.metadata.deletion_timestamp.is_none()
                })
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or(""))
                && is_ready(p)
        })
        .count() as i32;
    let allowed = (healthy - desired).max(0);
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let transition = old
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodDisruptionBudgetStatus {
        current_healthy: Some(healthy),
        desired_healthy: Some(desired),
        disruptions_allowed: Some(allowed),
        expected_pods: Some(expected),
        observed_generation: pdb.metadata.generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: transition,
            observed_generation: pdb.metadata.generation,
        }]),
    }
}

/// The replicas the controllers of `pods` ask for (each controller once): a ReplicaSet's,
/// or its Deployment's when it has one, a StatefulSet's, a ReplicationController's.
async fn expected_replicas(
    client: &Client,
    namespace: &str,
    pods: &[&Pod],
) -> Result<i32, kube::Error> {
    let mut seen = BTreeMap::new();
    for pod in pods {
        if let Some(owner) = controller_of(&pod.metadata) {
            seen.insert(owner.uid.clone(), owner);
        }
    }
    let mut total = 0;
    for owner in seen.values() {
        total += match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await?;
                let deployment = rs.as_ref().and_then(|rs| controller_of(&rs.metadata));
                match deployment.filter(|d| d.kind == "Deployment") {
                    Some(d) => Api::<Deployment>::namespaced(client.clone(), namespace)
                        .get_opt(&d.name)
                        .await?
                        .and_then(|d| d.spec.replicas)
                        .unwrap_or(1),
                    None => rs.and_then(|rs| rs.spec.replicas).unwrap_or(1),
                }
            }
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_opt(&owner.name)
                .await?
                .and_then(|s| s.spec.replicas)
                .unwrap_or(1),
            "ReplicationController" => {
                Api::<ReplicationController>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await?
                    .and_then(|r| r.spec.and_then(|s| s.replicas))
                    .unwrap_or(1)
            }
            _ => 0,
        };
    }
    Ok(total)
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    let err = |source| Error {
        key: key(&pdb.metadata),
        source,
    };
    let namespace = pdb.namespace().unwrap_or_default();
    let selector = pdb.spec.as_ref().and_then(|s| s.selector.clone());
    let all = ctx.pods.state();
    let pods: Vec<&Pod> = all
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && selector_matches(selector.as_ref(), p.metadata.labels.as_ref())
        })
        .collect();
    let by_controllers = match &pdb.spec {
        Some(spec)
            if spec.max_unavailable.is_some()
                || matches!(spec.min_available, Some(IntOrString::String(_))) =>
        {
            expected_replicas(&ctx.client, &namespace, &pods)
                .await
                .map_err(err)?
        }
        _ => 0,
    };
    let now = jiff::Timestamp::now();
    let status = compute_status(&pdb, &pods, by_controllers, now);
    let unchanged = pdb.status.as_ref().is_some_and(|old| {
        let mut old = old.clone();
        let mut new = status.clone();
        // Timestamps alone do not make a write.
        for c in old
            .conditions
            .iter_mut()
            .chain(new.conditions.iter_mut())
            .flatten()
        {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        old == new
    });
    if !unchanged {
        Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &pdb.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await
            .map_err(err)?;
    }
    // Recorded evictions expire on their own: look again when the oldest does.
    let next = status
        .disrupted_pods
        .as_ref()
        .and_then(|d| d.values().map(|t| t.0).min())
        .map(|oldest| {
            let left = DISRUPTED_TIMEOUT - now.duration_since(oldest);
            Duration::from_secs(left.as_secs().max(1) as u64)
        });
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
            "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "b", "namespace": "ns", "generation": 2},
            "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn min_available_counts_matching_pods() {
        let pods = [pod("a", true), pod("b", true), pod("c", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let s = compute_status(
            &pdb(json!({"minAvailable": 1})),
            &refs,
            0,
            jiff::Timestamp::now(),
        );
        assert_eq!(
            (
                s.expected_pods,
                s.desired_healthy,
                s.current_healthy,
                s.disruptions_allowed
            ),
            (Some(3), Some(1), Some(2), Some(1))
        );
        let condition = &s.conditions.unwrap()[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "SufficientPods")
        );
    }

    #[test]
    fn max_unavailable_and_percentages_use_the_controllers_replicas() {
        let pods = [pod("a", true), pod("b", true), pod("c", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let now = jiff::Timestamp::now();
        let s = compute_status(&pdb(json!({"maxUnavailable": 1})), &refs, 3, now);
        assert_eq!(
            (s.desired_healthy, s.disruptions_allowed),
            (Some(2), Some(1))
        );
        let s = compute_status(&pdb(json!({"maxUnavailable": "50%"})), &refs, 3, now);
        assert_eq!(
            (s.desired_healthy, s.disruptions_allowed),
            (Some(1), Some(2))
        );
        let s = compute_status(&pdb(json!({"minAvailable": "100%"})), &refs, 3, now);
        assert_eq!(
            (s.desired_healthy, s.disruptions_allowed),
            (Some(3), Some(0))
        );
        assert_eq!(s.conditions.unwrap()[0].reason, "InsufficientPods");
    }

    #[test]
    fn recent_evictions_are_not_healthy_until_they_expire() {
        let pods = [pod("a", true), pod("b", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let now = jiff::Timestamp::now();
        let mut budget = pdb(json!({"minAvailable": 1}));
        budget.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([("a".to_string(), Time(now))])),
            ..Default::default()
        });
        let s = compute_status(&budget, &refs, 0, now);
        assert_eq!(
            (s.current_healthy, s.disruptions_allowed),
            (Some(1), Some(0))
        );
        let later = now + jiff::SignedDuration::from_secs(121);
        let s = compute_status(&budget, &refs, 0, later);
        assert_eq!(
            (s.current_healthy, s.disruptions_allowed),
            (Some(2), Some(1))
        );
        assert!(s.disrupted_pods.is_none());
    }
}
