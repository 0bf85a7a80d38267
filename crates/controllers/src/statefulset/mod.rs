//! The StatefulSet controller (`pkg/controller/statefulset`): pods with stable identities
//! `<set>-<ordinal>` (hostname, and subdomain from `serviceName`), each with its own
//! PersistentVolumeClaims `<template>-<set>-<ordinal>` from `volumeClaimTemplates`, kept
//! when the set scales down (retention `Retain`). [`plan`] decides the order (OrderedReady
//! or Parallel) and the rolling update (highest ordinal first, down to `partition`);
//! templates are kept as ControllerRevisions named in the pods' `controller-revision-hash`.

pub mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};

use crate::events::{EventType, Recorder};
use crate::history::{self, CONTROLLER_REVISION_HASH};
use crate::pod_util::{is_not_found, key, owned};
use crate::replicaset::{pod_from_template, Expectations};
use plan::Step;

/// The label with a StatefulSet pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("statefulset {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Runs the StatefulSet controller until the client's watches end.
pub async fn run(client: Client) {
    let (pods, pod_writer) = reflector::store();
    let expectations = Expectations::default();
    let observed = expectations.clone();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                observed.observe_event(event);
            }
        })
        .touched_objects();
    let (revisions, rev_writer) = reflector::store();
    let revision_events = watcher(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rev_writer)
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        revisions,
        expectations,
        recorder: Recorder::new(client.clone(), "statefulset-controller"),
    });
    Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .owns_stream(revision_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<StatefulSet>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// The claim name of `template` for the pod of `ordinal`.
pub fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    format!("{}-{set}-{ordinal}", template.name_any())
}

/// The template a revision stores (its data is `{"spec": {"template": ...}}`).
fn revision_template(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.0.pointer("/spec/template")?.clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

/// The pod of `ordinal` (`newVersionedStatefulSetPod`): identity labels, hostname and
/// subdomain, and volumes for its claims.
pub fn stateful_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    revision: &str,
    ordinal: i32,
) -> Pod {
    let name = set.name_any();
    let owner = set
        .controller_owner_ref(&())
        .expect("a StatefulSet has a name and uid");
    let pod_name = format!("{name}-{ordinal}");
    let mut pod = pod_from_template(Some(template), owner, String::new());
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(pod_name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(CONTROLLER_REVISION_HASH.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = Some(pod_name.clone());
        if let Some(service) = set.spec.service_name.as_ref().filter(|s| !s.is_empty()) {
            spec.subdomain = Some(service.clone());
        }
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for claim in set.spec.volume_claim_templates.iter().flatten() {
            let volume = Volume {
                name: claim.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(claim, &name, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            };
            volumes.retain(|v| v.name != volume.name);
            volumes.push(volume);
        }
    }
    pod
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    crate::cache_sync::cache_synced(&ctx.revisions).await;
    let set_key = key(&set.metadata);
    let err = |source| Error {
        key: set_key.clone(),
        source,
    };
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let name = set.name_any();
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let revisions = owned(&ctx.revisions, &namespace, &uid);
    let collision = set.status.as_ref().and_then(|s| s.collision_count);
    let update = history::ensure_revision(
        &revisions_api,
        set.controller_owner_ref(&())
            .expect("a StatefulSet has a name and uid"),
        &name,
        set.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        history::revision_data(&set.spec.template),
        &revisions,
        collision,
    )
    .await
    .map_err(err)?;
    let update_name = update.name_any();
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|c| {
            revisions
                .iter()
                .any(|r| r.metadata.name.as_ref() == Some(c))
        })
        .unwrap_or_else(|| update_name.clone());

    // Checked before the cache is read: a pod that shows up between the read and the check
    // would satisfy the expectation without being in the plan.
    let may_manage = ctx.expectations.satisfied(&uid);
    let pods = owned(&ctx.pods, &namespace, &uid);
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let plan = plan::plan(
        &set,
        &pod_refs,
        &current_name,
        &update_name,
        jiff::Timestamp::now(),
    );
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);

    if may_manage {
        for step in &plan.steps {
            match step {
                Step::Create { ordinal, revision } => {
                    let template = if *revision == update_name {
                        Some(set.spec.template.clone())
                    } else {
                        revisions
                            .iter()
                            .find(|r| r.metadata.name.as_ref() == Some(revision))
                            .and_then(|r| revision_template(r))
                    }
                    .unwrap_or_else(|| set.spec.template.clone());
                    let pod = stateful_pod(&set, &template, revision, *ordinal);
                    let pod_name = pod.name_any();
                    for claim in set.spec.volume_claim_templates.iter().flatten() {
                        let claim_name = claim_name(claim, &name, *ordinal);
                        let pvc = PersistentVolumeClaim {
                            metadata: ObjectMeta {
                                name: Some(claim_name.clone()),
                                namespace: Some(namespace.clone()),
                                labels: set.spec.selector.match_labels.clone(),
                                annotations: claim.metadata.annotations.clone(),
                                ..Default::default()
                            },
                            spec: claim.spec.clone(),
                            status: None,
                        };
                        match claims_api.create(&PostParams::default(), &pvc).await {
                            Ok(_) => ctx.recorder.record(
                                set.as_ref(),
                                EventType::Normal,
                                "SuccessfulCreate",
                                format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {name} success"),
                            ),
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(e) => {
                                ctx.recorder.record(
                                    set.as_ref(),
                                    EventType::Warning,
                                    "FailedCreate",
                                    format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {name} failed error: {e}"),
                                );
                                return Err(err(e));
                            }
                        }
                    }
                    match pods_api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {
                            ctx.expectations.expect_create(&uid, pod_name.clone());
                            ctx.recorder.record(
                                set.as_ref(),
                                EventType::Normal,
                                "SuccessfulCreate",
                                format!("create Pod {pod_name} in StatefulSet {name} successful"),
                            );
                        }
                        // The old pod of this name is still being deleted.
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => {
                            ctx.recorder.record(
                                set.as_ref(),
                                EventType::Warning,
                                "FailedCreate",
                                format!(
                                    "create Pod {pod_name} in StatefulSet {name} failed error: {e}"
                                ),
                            );
                            return Err(err(e));
                        }
                    }
                }
                Step::Delete(pod_name) => {
                    let uid_of = pod_refs
                        .iter()
                        .find(|p| p.metadata.name.as_ref() == Some(pod_name))
                        .and_then(|p| p.metadata.uid.clone());
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: uid_of,
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match pods_api.delete(pod_name, &dp).await {
                        Ok(_) => {
                            ctx.expectations.expect_delete(&uid, pod_name.clone());
                            ctx.recorder.record(
                                set.as_ref(),
                                EventType::Normal,
                                "SuccessfulDelete",
                                format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                            );
                        }
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(err(e)),
                    }
                }
            }
        }
    }

    if set.status.as_ref() != Some(&plan.status) {
        let mut updated = (*set).clone();
        updated.status = Some(plan.status.clone());
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
        api.replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(err)?;
    }
    let mut live: HashSet<String> = pod_refs
        .iter()
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(CONTROLLER_REVISION_HASH)
                .cloned()
        })
        .collect();
    live.insert(update_name);
    live.insert(current_name);
    history::truncate(
        &revisions_api,
        &revisions,
        &live,
        set.spec.revision_history_limit.unwrap_or(10),
    )
    .await
    .map_err(err)?;
    if !ctx.expectations.satisfied(&uid) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && plan.status.available_replicas < plan.status.ready_replicas {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}
