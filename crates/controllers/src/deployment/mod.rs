//! The Deployment controller (`pkg/controller/deployment`): one ReplicaSet per template
//! revision; RollingUpdate moves pods from the old ReplicaSets to the new one within
//! maxSurge/maxUnavailable, Recreate scales the old ones to zero first; old ReplicaSets
//! beyond `revisionHistoryLimit` are deleted; the status carries counts and the
//! Progressing/Available conditions `kubectl rollout status` reads.

pub mod rollout;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::pod_util::key;
use rollout::*;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("deployment {key}: {source}")]
    Api {
        /// `namespace/name`.
        key: String,
        /// The error.
        source: kube::Error,
    },
}

struct Ctx {
    client: Client,
    replicasets: Store<ReplicaSet>,
    recorder: Recorder,
}

/// Runs the Deployment controller until the client's watches end.
pub async fn run(client: Client) {
    let (replicasets, writer) = reflector::store();
    let rs_events = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        replicasets,
        recorder: Recorder::new(client.clone(), "deployment-controller"),
    });
    Controller::new(Api::<Deployment>::all(client), watcher::Config::default())
        .owns_stream(rs_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Deployment>, err: &Error, _: Arc<Ctx>) -> Action {
    let Error::Api { source, .. } = err;
    if matches!(source, kube::Error::Api(s) if s.code == 409) {
        // A stale copy: the cache brings the newer one at once.
        tracing::debug!("{err}");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// One reconcile's view and the API calls it makes.
struct Sync<'a> {
    d: &'a Deployment,
    ctx: &'a Ctx,
    rs_api: Api<ReplicaSet>,
    key: String,
}

impl Sync<'_> {
    fn err(&self, source: kube::Error) -> Error {
        Error::Api {
            key: self.key.clone(),
            source,
        }
    }

    /// Scales a ReplicaSet, stamping the desired/max annotations, with an event.
    async fn scale(&self, rs: &ReplicaSet, to: i32) -> Result<(), Error> {
        let from = rs_replicas(rs);
        let desired = replicas(self.d);
        let (surge, _) = fenceposts(self.d);
        let annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let stale = annotations.get(DESIRED_REPLICAS) != Some(&desired.to_string())
            || annotations.get(MAX_REPLICAS) != Some(&(desired + surge).to_string());
        if from == to && !stale {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: desired.to_string(),
                MAX_REPLICAS: (desired + surge).to_string(),
            }},
            "spec": {"replicas": to},
        });
        self.rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| self.err(e))?;
        if from != to {
            let direction = if to > from { "up" } else { "down" };
            self.ctx.recorder.record(
                self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {from} to {to}",
                    rs.name_any()
                ),
            );
        }
        Ok(())
    }

    /// Creates the ReplicaSet for the current template, or brings an existing one (a
    /// rollback target) to the next revision.
    async fn ensure_new_rs(
        &self,
        existing: Option<&Arc<ReplicaSet>>,
        max_old_revision: i64,
        initial_replicas: i32,
    ) -> Result<Arc<ReplicaSet>, Error> {
        let next = max_old_revision + 1;
        let copied: BTreeMap<String, String> = self
            .d
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| copied_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(rs) = existing {
            let current = revision(rs);
            if current >= next || current > max_old_revision {
                return Ok(rs.clone());
            }
            let mut annotations = copied;
            annotations.insert(REVISION.into(), next.to_string());
            if current > 0 {
                let history = rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION_HISTORY))
                    .map(|h| format!("{h},{current}"))
                    .unwrap_or_else(|| current.to_string());
                annotations.insert(REVISION_HISTORY.into(), history);
            }
            let updated = self
                .rs_api
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
                )
                .await
                .map_err(|e| self.err(e))?;
            return Ok(Arc::new(updated));
        }
        let spec = &self.d.spec;
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let mut template: PodTemplateSpec = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        meta.labels = Some(labels.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let desired = replicas(self.d);
        let (surge, _) = fenceposts(self.d);
        let mut annotations = copied;
        annotations.insert(REVISION.into(), next.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
        annotations.insert(MAX_REPLICAS.into(), (desired + surge).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.d.name_any())),
                namespace: self.d.namespace(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![self
                    .d
                    .controller_owner_ref(&())
                    .expect("a Deployment has a name and uid")]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(initial_replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.ctx.recorder.record(
                    self.d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    format!(
                        "Scaled up replica set {} from 0 to {initial_replicas}",
                        created.name_any()
                    ),
                );
                Ok(Arc::new(created))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The ReplicaSet may be this template's, not yet in the cache: then it is
                // the new one (`getNewReplicaSet`'s AlreadyExists check).
                let name = rs.metadata.name.clone().unwrap_or_default();
                if let Some(found) = self.rs_api.get_opt(&name).await.map_err(|e| self.err(e))? {
                    let ours = found.metadata.owner_references.iter().flatten().any(|o| {
                        o.controller == Some(true) && Some(&o.uid) == self.d.metadata.uid.as_ref()
                    });
                    if ours && same_template(found.spec.template.as_ref(), &spec.template) {
                        return Ok(Arc::new(found));
                    }
                }
                // A ReplicaSet of that name with another template: bump the collision
                // count so the next attempt hashes differently.
                let api: Api<Deployment> = Api::namespaced(
                    self.ctx.client.clone(),
                    &self.d.namespace().unwrap_or_default(),
                );
                let count = collision.unwrap_or(0) + 1;
                api.patch_status(
                    &self.d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"collisionCount": count}})),
                )
                .await
                .map_err(|e| self.err(e))?;
                Err(self.err(kube::Error::Api(s)))
            }
            Err(e) => Err(self.err(e)),
        }
    }
}

fn set_condition(conditions: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    let now = Time(jiff::Timestamp::now());
    if let Some(current) = conditions.iter().find(|x| x.type_ == c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        c.last_transition_time = if current.status == c.status {
            current.last_transition_time.clone()
        } else {
            Some(now.clone())
        };
    } else {
        c.last_transition_time = Some(now.clone());
    }
    c.last_update_time = Some(now);
    conditions.retain(|x| x.type_ != c.type_);
    conditions.push(c);
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
        last_update_time: None,
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.replicasets).await;
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let sync = Sync {
        d: &d,
        ctx: &ctx,
        rs_api: Api::namespaced(ctx.client.clone(), &namespace),
        key: key(&d.metadata),
    };
    let spec = &d.spec;
    // Ownerless ReplicaSets the selector matches are adopted (`ClaimReplicaSets`), so a
    // rollout replaces them too.
    let in_namespace = ctx
        .replicasets
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(namespace.as_str()));
    let claim = crate::controller_ref::claim(in_namespace, &uid, Some(&spec.selector), false);
    let mut all: Vec<Arc<ReplicaSet>> = claim.owned;
    all.extend(claim.release);
    for rs in &claim.adopt {
        let owner = d
            .controller_owner_ref(&())
            .expect("a Deployment has a name and uid");
        match crate::controller_ref::adopt(&sync.rs_api, rs.as_ref(), owner).await {
            Ok(adopted) => all.push(Arc::new(adopted)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(sync.err(e)),
        }
    }
    all.retain(|rs| rs.metadata.deletion_timestamp.is_none());
    all.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rs.name_any(),
        )
    });
    let existing_new = all
        .iter()
        .filter(|rs| same_template(rs.spec.template.as_ref(), &spec.template))
        .max_by_key(|rs| revision(rs))
        .cloned();
    let old: Vec<Arc<ReplicaSet>> = all
        .iter()
        .filter(|rs| {
            existing_new
                .as_ref()
                .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
        })
        .cloned()
        .collect();
    let max_old_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let desired = replicas(&d);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (surge, unavailable) = fenceposts(&d);
    let mut created_new = false;

    // Scaled mid-rollout (an active ReplicaSet was last sized for other replicas), with
    // more than one active and the new one not saturated: every active ReplicaSet takes
    // its share of the change (`isScalingEvent`, `scale`).
    let active: Vec<&Arc<ReplicaSet>> = all.iter().filter(|rs| rs_replicas(rs) > 0).collect();
    let scaling_event = active
        .iter()
        .any(|rs| annotated(rs, DESIRED_REPLICAS).is_some_and(|r| r != desired));
    let saturated = existing_new.as_ref().is_some_and(|rs| {
        rs_replicas(rs) == desired
            && annotated(rs, DESIRED_REPLICAS) == Some(desired)
            && rs_available(rs) == desired
    });
    if !recreate && scaling_event && active.len() > 1 && !saturated {
        let growing = desired + surge > active.iter().map(|rs| rs_replicas(rs)).sum::<i32>();
        let mut ordered = active.clone();
        // Largest first; ties to the newest when growing, the oldest when shrinking.
        ordered.sort_by(|a, b| {
            let by_age = a
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0));
            rs_replicas(b).cmp(&rs_replicas(a)).then(if growing {
                by_age.reverse()
            } else {
                by_age
            })
        });
        let shape: Vec<(i32, Option<i32>)> = ordered
            .iter()
            .map(|rs| (rs_replicas(rs), annotated(rs, MAX_REPLICAS)))
            .collect();
        let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let sizes = proportional_sizes(&shape, desired, surge, status_replicas);
        for (rs, size) in ordered.into_iter().zip(sizes) {
            sync.scale(rs, size).await?;
        }
        return sync_status(&sync, &all, existing_new.as_ref(), false, paused).await;
    }

    if paused {
        // Paused: only scaling, no rollout (`sync`).
        if let Some(new) = &existing_new {
            if old.iter().all(|rs| rs_replicas(rs) == 0) {
                sync.scale(new, desired).await?;
            }
        }
    } else if recreate {
        let active_old: Vec<&Arc<ReplicaSet>> =
            old.iter().filter(|rs| rs_replicas(rs) > 0).collect();
        for rs in &active_old {
            sync.scale(rs, 0).await?;
        }
        let old_pods_running = old
            .iter()
            .any(|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) > 0);
        if active_old.is_empty() && !old_pods_running {
            created_new = existing_new.is_none();
            let new = sync
                .ensure_new_rs(existing_new.as_ref(), max_old_revision, 0)
                .await?;
            sync.scale(&new, desired).await?;
        }
    } else {
        created_new = existing_new.is_none();
        let all_replicas: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let new_current = existing_new.as_ref().map(|rs| rs_replicas(rs)).unwrap_or(0);
        let target = if new_current > desired {
            desired
        } else {
            new_rs_target(desired, surge, new_current, all_replicas)
        };
        let new = sync
            .ensure_new_rs(existing_new.as_ref(), max_old_revision, target)
            .await?;
        if !created_new {
            sync.scale(&new, target).await?;
        }
        let mut budget = old_scale_down_budget(
            desired,
            unavailable,
            all_replicas - new_current + target,
            target,
            rs_available(&new),
        );
        // Unhealthy old pods go first, then the oldest ReplicaSets' available ones, never
        // below desired - maxUnavailable available pods in total.
        let min_available = desired - unavailable;
        let mut available_total: i32 = all.iter().map(|rs| rs_available(rs)).sum();
        for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
            if budget <= 0 {
                break;
            }
            let current = rs_replicas(rs);
            let unhealthy = (current - rs_available(rs)).max(0);
            let mut down = unhealthy.min(budget);
            let spare_available = (available_total - min_available).max(0);
            down += (current - down).min(spare_available).min(budget - down);
            if down > 0 {
                sync.scale(rs, current - down).await?;
                budget -= down;
                available_total -= (down - unhealthy).max(0);
            }
        }
    }

    // Old ReplicaSets beyond the history limit go, oldest first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut idle: Vec<&Arc<ReplicaSet>> = old
        .iter()
        .filter(|rs| {
            rs_replicas(rs) == 0 && rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0
        })
        .collect();
    idle.sort_by_key(|rs| revision(rs));
    if idle.len() > limit {
        for rs in &idle[..idle.len() - limit] {
            match sync
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(sync.err(e)),
            }
        }
    }

    sync_status(&sync, &all, existing_new.as_ref(), created_new, paused).await
}

/// Recomputes the status and conditions; requeues for the progress deadline.
async fn sync_status(
    sync: &Sync<'_>,
    all: &[Arc<ReplicaSet>],
    new: Option<&Arc<ReplicaSet>>,
    created_new: bool,
    paused: bool,
) -> Result<Action, Error> {
    let d = sync.d;
    let desired = replicas(d);
    let (_, unavailable) = fenceposts(d);
    let count = |f: fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let replicas_total = count(|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = count(|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let available = count(rs_available);
    let updated = new
        .and_then(|rs| rs.status.as_ref())
        .map(|s| s.replicas)
        .unwrap_or(0);
    let old_status = d.status.clone().unwrap_or_default();
    let mut conditions = old_status.conditions.clone().unwrap_or_default();
    let min_available = desired - unavailable;
    if available >= min_available {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    let generation_seen = d.metadata.generation;
    let new_name = new.map(|rs| rs.name_any()).unwrap_or_default();
    let complete = updated == desired && replicas_total == desired && available == desired;
    let deadline = d.spec.progress_deadline_seconds;
    let mut requeue = None;
    let progressing = conditions
        .iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .cloned();
    if paused {
        set_condition(
            &mut conditions,
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            ),
        );
    } else if progressing.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused") {
        set_condition(
            &mut conditions,
            condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            ),
        );
    } else if created_new {
        set_condition(
            &mut conditions,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{new_name}\""),
            ),
        );
    } else if complete {
        set_condition(
            &mut conditions,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            ),
        );
    } else {
        let was_complete = progressing.as_ref().and_then(|c| c.reason.as_deref())
            == Some("NewReplicaSetAvailable")
            && replicas_total == updated;
        let moved = updated > old_status.updated_replicas.unwrap_or(0)
            || replicas_total - updated
                < old_status.replicas.unwrap_or(0) - old_status.updated_replicas.unwrap_or(0)
            || ready > old_status.ready_replicas.unwrap_or(0)
            || available > old_status.available_replicas.unwrap_or(0);
        if !was_complete && moved {
            let mut c = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            );
            // Progress renews lastUpdateTime, which the deadline counts from.
            conditions.retain(|x| x.type_.as_deref() != Some("Progressing"));
            let now = Time(jiff::Timestamp::now());
            c.last_transition_time = match &progressing {
                Some(p) if p.status.as_deref() == Some("True") => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            c.last_update_time = Some(now);
            conditions.push(c);
        } else if let (Some(deadline), Some(p)) = (deadline, progressing.as_ref()) {
            let since = p
                .last_update_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(jiff::Timestamp::now());
            let expires = since + jiff::SignedDuration::from_secs(i64::from(deadline));
            let now = jiff::Timestamp::now();
            if !was_complete && p.reason.as_deref() != Some("ProgressDeadlineExceeded") {
                if expires <= now {
                    set_condition(
                        &mut conditions,
                        condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        ),
                    );
                } else {
                    requeue =
                        Some(now.duration_until(expires).unsigned_abs() + Duration::from_secs(1));
                }
            }
        }
    }
    let status = DeploymentStatus {
        observed_generation: generation_seen,
        replicas: Some(replicas_total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        collision_count: old_status.collision_count,
        conditions: Some(conditions),
        terminating_replicas: None,
    };
    let api: Api<Deployment> =
        Api::namespaced(sync.ctx.client.clone(), &d.namespace().unwrap_or_default());
    if d.status.as_ref() != Some(&status) {
        // On the version this status was computed from: a reconcile of a stale copy
        // (the cache lagging behind this controller's own last write) gets a conflict and
        // runs again, instead of putting back conditions already replaced, such as a
        // timed-out rollout's after a new one began.
        api.patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": d.metadata.resource_version},
                "status": status,
            })),
        )
        .await
        .map_err(|e| sync.err(e))?;
    }
    let revision_now = new.map(|rs| revision(rs).to_string());
    let annotated = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .cloned();
    if revision_now.is_some() && revision_now != annotated {
        api.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REVISION: revision_now}}})),
        )
        .await
        .map_err(|e| sync.err(e))?;
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
