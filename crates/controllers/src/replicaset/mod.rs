//! The ReplicaSet controller (`pkg/controller/replicaset`): keeps `spec.replicas` active
//! pods matching the template, owned through a controller reference, and reports counts in
//! the status. The same loop runs for ReplicationControllers (as Kubernetes' replication
//! manager does, over a conversion to a ReplicaSet): [`run_replication_controllers`].
//!
//! Pods created or deleted are remembered as *expectations* until the pod watch shows them,
//! so a reconcile that runs before the cache caught up does not act twice. Ownerless pods
//! the selector matches are adopted and controlled pods it no longer matches released
//! ([`crate::controller_ref`]); a failed create or delete shows as the `ReplicaFailure`
//! condition until one succeeds.

mod expectations;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use crate::controller_ref;
use crate::events::{EventType, Recorder};
use crate::pod_util::{deletion_rank, is_active, is_available, is_ready, key};
pub use expectations::Expectations;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{kind} {key}: {source}")]
    Api {
        /// `replicaset` or `replicationcontroller`.
        kind: &'static str,
        /// `namespace/name`.
        key: String,
        /// The error.
        source: kube::Error,
    },
}

/// The most pods one reconcile creates (`burstReplicas`).
const BURST_REPLICAS: usize = 500;

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Runs the ReplicaSet controller until the client's watches end.
pub async fn run(client: Client) {
    run_for::<ReplicaSet>(client, "replicaset-controller").await
}

/// Runs the replication manager (ReplicationControllers) until the client's watches end.
pub async fn run_replication_controllers(client: Client) {
    run_for::<ReplicationController>(client, "replication-controller").await
}

/// A kind whose objects keep replicas of a pod template: seen as a ReplicaSet.
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Lower-case kind, for errors.
    const KIND: &'static str;
    /// The object as a ReplicaSet with the same metadata, spec and status.
    fn as_replica_set(&self) -> ReplicaSet;
}

impl Replicated for ReplicaSet {
    const KIND: &'static str = "replicaset";
    fn as_replica_set(&self) -> ReplicaSet {
        self.clone()
    }
}

impl Replicated for ReplicationController {
    const KIND: &'static str = "replicationcontroller";
    /// `spec.selector` is a plain label map (defaulted to the template's labels); every
    /// other field has the same name and meaning.
    fn as_replica_set(&self) -> ReplicaSet {
        let spec = self.spec.as_ref();
        let selector = spec.and_then(|s| s.selector.clone()).or_else(|| {
            spec.and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
        });
        let status = self.status.as_ref().map(|s| ReplicaSetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
            conditions: s.conditions.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| ReplicaSetCondition {
                        type_: Some(c.type_.clone()),
                        status: Some(c.status.clone()),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition_time: c.last_transition_time.clone(),
                    })
                    .collect()
            }),
            terminating_replicas: None,
        });
        ReplicaSet {
            metadata: self.metadata.clone(),
            spec: k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: spec.and_then(|s| s.replicas),
                min_ready_seconds: spec.and_then(|s| s.min_ready_seconds),
                selector: LabelSelector {
                    match_labels: selector,
                    match_expressions: None,
                },
                template: spec.and_then(|s| s.template.clone()),
            },
            status,
        }
    }
}

async fn run_for<K: Replicated>(client: Client, component: &'static str) {
    let (pods, writer) = reflector::store();
    let expectations = Expectations::default();
    let observed = expectations.clone();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                observed.observe_event(event);
            }
        })
        .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        expectations,
        recorder: Recorder::new(client.clone(), component),
    });
    let controller = Controller::new(Api::<K>::all(client), watcher::Config::default());
    let owners = controller.store();
    controller
        .watches_stream(pod_events, move |pod: Pod| {
            controller_ref::pod_owners(&owners, &pod, |o: &K| {
                Some(o.as_replica_set().spec.selector)
            })
        })
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy<K: Replicated>(_: Arc<K>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// A pod for `owner` from `template` (`GetPodFromTemplate`).
pub fn pod_from_template(
    template: Option<&PodTemplateSpec>,
    owner: OwnerReference,
    generate_name: String,
) -> Pod {
    let meta = template.and_then(|t| t.metadata.as_ref());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            labels: meta.and_then(|m| m.labels.clone()),
            annotations: meta.and_then(|m| m.annotations.clone()),
            finalizers: meta.and_then(|m| m.finalizers.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    }
}

async fn reconcile<K: Replicated>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    let rs = obj.as_replica_set();
    let rs_key = key(&rs.metadata);
    let err = |source| Error::Api {
        kind: K::KIND,
        key: rs_key.clone(),
        source,
    };
    let namespace = rs.namespace().unwrap_or_default();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let owner = obj
        .controller_owner_ref(&())
        .expect("a replicated object has a name and uid");
    // Checked before the cache is read: a pod that shows up between the read and the check
    // would satisfy the expectation without being counted.
    let may_manage = ctx.expectations.satisfied(&uid);
    let spec = Some(&rs.spec);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let in_namespace = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()));
    let claim = controller_ref::claim(in_namespace, &uid, spec.map(|s| &s.selector), false);
    let pods = controller_ref::settle_pods(&pods_api, claim, &owner, &uid)
        .await
        .map_err(err)?;
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;

    // The error of creating or deleting, kept for the status (`manageReplicasErr`).
    let mut manage_error: Option<(&str, kube::Error)> = None;
    if may_manage {
        if active.len() < desired {
            let want = (desired - active.len()).min(BURST_REPLICAS);
            let pod = pod_from_template(
                spec.and_then(|s| s.template.as_ref()),
                owner.clone(),
                format!("{}-", rs.name_any()),
            );
            // Slow start: batches of 1, 2, 4, ... stop at the first failure.
            let mut created = 0;
            let mut batch = 1;
            let pp = PostParams::default();
            while created < want {
                let n = batch.min(want - created);
                let results =
                    futures::future::join_all((0..n).map(|_| pods_api.create(&pp, &pod))).await;
                let mut failed = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            ctx.expectations.expect_create(&uid, p.name_any());
                            ctx.recorder.record(
                                obj.as_ref(),
                                EventType::Normal,
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.name_any()),
                            );
                            created += 1;
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                if let Some(e) = failed {
                    ctx.recorder.record(
                        obj.as_ref(),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {}", api_message(&e)),
                    );
                    manage_error = Some(("FailedCreate", e));
                    break;
                }
                batch *= 2;
            }
        } else if active.len() > desired {
            let mut victims = active.clone();
            victims.sort_by_key(|p| deletion_rank(p));
            for pod in victims.into_iter().take(active.len() - desired) {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pods_api.delete(&pod.name_any(), &dp).await {
                    Ok(_) => {
                        ctx.expectations.expect_delete(&uid, pod.name_any());
                        ctx.recorder.record(
                            obj.as_ref(),
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod.name_any()),
                        );
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        manage_error = Some(("FailedDelete", e));
                        break;
                    }
                }
            }
        }
    }

    let now = jiff::Timestamp::now();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    let old_conditions = rs.status.as_ref().and_then(|s| s.conditions.clone());
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: rs.metadata.generation,
        conditions: replica_failure(
            old_conditions,
            manage_error.as_ref().map(|(r, e)| (*r, api_message(e))),
            now,
        ),
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
        // The status fields of ReplicationControllers have the same names.
        let mut patch = json!({"status": status});
        if status.conditions.is_none() {
            patch["status"]["conditions"] = serde_json::Value::Null;
        }
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(err)?;
    }
    if let Some((_, e)) = manage_error {
        return Err(err(e));
    }
    if available < ready && min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    if !ctx.expectations.satisfied(&uid) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    Ok(Action::await_change())
}

/// The API's own message of an error (what `err.Error()` shows in Kubernetes).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// `conditions` with the `ReplicaFailure` condition set while creating or deleting fails
/// (`reason`, message) and removed once it does not.
fn replica_failure(
    conditions: Option<Vec<ReplicaSetCondition>>,
    failure: Option<(&str, String)>,
    now: jiff::Timestamp,
) -> Option<Vec<ReplicaSetCondition>> {
    let mut conditions = conditions.unwrap_or_default();
    let existing = conditions
        .iter()
        .any(|c| c.type_.as_deref() == Some("ReplicaFailure"));
    match failure {
        Some((reason, message)) if !existing => conditions.push(ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(Time(now)),
        }),
        Some(_) => {}
        None => conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure")),
    }
    (!conditions.is_empty()).then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_failure_is_set_once_and_cleared_on_success() {
        let now = jiff::Timestamp::now();
        let set = replica_failure(None, Some(("FailedCreate", "exceeded quota".into())), now)
            .expect("a condition");
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].reason.as_deref(), Some("FailedCreate"));
        let again = replica_failure(Some(set.clone()), Some(("FailedCreate", "x".into())), now);
        assert_eq!(
            again.as_ref(),
            Some(&set),
            "an existing condition is kept as it is"
        );
        assert_eq!(replica_failure(Some(set), None, now), None);
    }

    #[test]
    fn a_replication_controller_is_seen_as_a_replica_set() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "rc", "namespace": "ns", "uid": "u"},
            "spec": {"replicas": 2, "selector": {"app": "web"},
                     "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": 1, "conditions": [{"type": "ReplicaFailure", "status": "True"}]}
        }))
        .unwrap();
        let rs = rc.as_replica_set();
        let spec = rs.spec;
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(
            spec.selector.match_labels,
            Some([("app".to_string(), "web".to_string())].into())
        );
        let status = rs.status.unwrap();
        assert_eq!(status.replicas, 1);
        assert_eq!(
            status.conditions.unwrap()[0].type_.as_deref(),
            Some("ReplicaFailure")
        );
    }
}
