//! The ReplicaSet controller (`pkg/controller/replicaset`): keeps `spec.replicas` active
//! pods matching the template, owned through a controller reference, and reports counts in
//! the status.
//!
//! Pods created or deleted are remembered as *expectations* until the pod watch shows them,
//! so a reconcile that runs before the cache caught up does not act twice.

mod expectations;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::pod_util::{deletion_rank, is_active, is_available, is_ready, key, owned};
pub use expectations::Expectations;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("replicaset {key}: {source}")]
    Api {
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
        recorder: Recorder::new(client.clone(), "replicaset-controller"),
    });
    Controller::new(Api::<ReplicaSet>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<ReplicaSet>, err: &Error, _: Arc<Ctx>) -> Action {
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

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    let rs_key = key(&rs.metadata);
    let err = |source| Error::Api {
        key: rs_key.clone(),
        source,
    };
    let namespace = rs.namespace().unwrap_or_default();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Checked before the cache is read: a pod that shows up between the read and the check
    // would satisfy the expectation without being counted.
    let may_manage = ctx.expectations.satisfied(&uid);
    let pods = owned(&ctx.pods, &namespace, &uid);
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let spec = Some(&rs.spec);
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    if may_manage {
        if active.len() < desired {
            let want = (desired - active.len()).min(BURST_REPLICAS);
            let owner = rs
                .controller_owner_ref(&())
                .expect("a ReplicaSet has a name and uid");
            let pod = pod_from_template(
                spec.and_then(|s| s.template.as_ref()),
                owner,
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
                                rs.as_ref(),
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
                        rs.as_ref(),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    return Err(err(e));
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
                            rs.as_ref(),
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod.name_any()),
                        );
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(err(e)),
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
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(err)?;
    }
    if available < ready && min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    if !ctx.expectations.satisfied(&uid) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    Ok(Action::await_change())
}
