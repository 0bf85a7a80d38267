//! The CronJob controller (`pkg/controller/cronjob`, v2): creates the Job of each
//! scheduled time `<cronjob>-<minutes since the epoch>` under the concurrency policy,
//! keeps `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` finished Jobs, and reports
//! `active`, `lastScheduleTime` and `lastSuccessfulTime`. The decisions are pure
//! functions of the time ([`schedule`]); the reconcile requeues itself for the next run.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};

use crate::events::{EventType, Recorder};
use crate::pod_util::{is_not_found, key, owned};

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("cronjob {key}: {source}")]
    Api {
        /// `namespace/name`.
        key: String,
        /// The error.
        source: kube::Error,
    },
}

/// The controller's clock; tests of the decisions pass times to [`schedule::decide`].
pub type Clock = fn() -> jiff::Timestamp;

struct Ctx {
    client: Client,
    jobs: Store<Job>,
    recorder: Recorder,
    clock: Clock,
}

/// Runs the CronJob controller until the client's watches end.
pub async fn run(client: Client) {
    run_with_clock(client, jiff::Timestamp::now).await
}

/// Runs the CronJob controller reading the time from `clock`.
pub async fn run_with_clock(client: Client, clock: Clock) {
    let (jobs, writer) = reflector::store();
    let job_events = watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        jobs,
        recorder: Recorder::new(client.clone(), "cronjob-controller"),
        clock,
    });
    Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .owns_stream(job_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<CronJob>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// The Job of `cronjob` for the time `scheduled` (`getJobFromTemplate2`).
pub fn job_for(cronjob: &CronJob, scheduled: jiff::Timestamp) -> Job {
    let template = &cronjob.spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        schedule::SCHEDULED_TIMESTAMP.into(),
        scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(schedule::job_name(&cronjob.name_any(), scheduled)),
            namespace: cronjob.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![cronjob
                .controller_owner_ref(&())
                .expect("a CronJob has a name and uid")]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

async fn reconcile(cronjob: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.jobs).await;
    let cj_key = key(&cronjob.metadata);
    let err = |source| Error::Api {
        key: cj_key.clone(),
        source,
    };
    let namespace = cronjob.namespace().unwrap_or_default();
    let uid = cronjob.metadata.uid.clone().unwrap_or_default();
    let jobs = owned(&ctx.jobs, &namespace, &uid);
    let job_refs: Vec<&Job> = jobs.iter().map(|j| j.as_ref()).collect();
    let now = (ctx.clock)();
    let mut decision = match schedule::decide(&cronjob, &job_refs, now) {
        Ok(d) => d,
        Err(e) => {
            ctx.recorder.record(
                cronjob.as_ref(),
                EventType::Warning,
                "UnparseableSchedule",
                e.to_string(),
            );
            return Ok(Action::await_change());
        }
    };
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for name in decision.replace.iter().chain(&decision.prune) {
        match jobs_api.delete(name, &background).await {
            Ok(_) => ctx.recorder.record(
                cronjob.as_ref(),
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted job {name}"),
            ),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(err(e)),
        }
    }
    if let Some(scheduled) = decision.create {
        let job = job_for(&cronjob, scheduled);
        let created = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                ctx.recorder.record(
                    cronjob.as_ref(),
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created job {}", created.name_any()),
                );
                Some(created)
            }
            // Made by an earlier sync whose status write was lost.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                jobs_api.get_opt(&job.name_any()).await.map_err(err)?
            }
            Err(e) => {
                ctx.recorder.record(
                    cronjob.as_ref(),
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating job: {e}"),
                );
                return Err(err(e));
            }
        };
        if let Some(created) = created {
            let active = decision.status.active.get_or_insert_with(Vec::new);
            if !active.iter().any(|r| r.uid == created.metadata.uid) {
                active.push(k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("batch/v1".into()),
                    kind: Some("Job".into()),
                    name: created.metadata.name.clone(),
                    namespace: created.metadata.namespace.clone(),
                    uid: created.metadata.uid.clone(),
                    resource_version: created.metadata.resource_version.clone(),
                    field_path: None,
                });
            }
        }
        decision.status.last_schedule_time = Some(Time(scheduled));
    }
    for (type_, reason, message) in decision.events.drain(..) {
        ctx.recorder
            .record(cronjob.as_ref(), type_, reason, message);
    }
    if cronjob.status.as_ref() != Some(&decision.status) {
        let mut updated = (*cronjob).clone();
        updated.status = Some(decision.status.clone());
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
        api.replace_status(&cronjob.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(err)?;
    }
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
