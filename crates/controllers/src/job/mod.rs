//! The Job controller (`pkg/controller/job`): runs pods from the template until
//! `completions` of them succeeded (NonIndexed) or every index in `0..completions` has a
//! succeeded pod (Indexed), at most `parallelism` at a time; fails the Job past
//! `backoffLimit` failures or `activeDeadlineSeconds`; tracks finished pods with the
//! `batch.kubernetes.io/job-tracking` finalizer so none is counted twice or lost.
//!
//! The decisions are pure functions in [`sync`]; this module reads the caches and makes
//! the API calls, always writing the status before removing finalizers so a pod is counted
//! before it can disappear.

pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};

use crate::controller_ref;
use crate::events::Recorder;
use crate::pod_util::{
    controller_of, has_finalizer, is_not_found, key, owned, remove_finalizer_patch,
};
use crate::replicaset::{pod_from_template, Expectations};
use sync::{COMPLETION_INDEX, TRACKING_FINALIZER};

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("job {key}: {source}")]
    Api {
        /// `namespace/name`.
        key: String,
        /// The error.
        source: kube::Error,
    },
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
    config: sync::Config,
    /// The resourceVersion of each Job's last status write (by uid): a sync over an older
    /// cached Job would count finished pods from stale counters and create pods twice.
    written: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Runs the Job controller until the client's watches end.
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
        recorder: Recorder::new(client.clone(), "job-controller"),
        config: sync::Config::default(),
        written: Default::default(),
    });
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let jobs = controller.store();
    let owners = jobs.clone();
    let controller = controller.watches_stream(pod_events, move |pod: Pod| {
        controller_ref::pod_owners(&owners, &pod, |j: &Job| {
            j.spec.as_ref().and_then(|s| s.selector.clone())
        })
    });
    let orphans = release_orphans(client, jobs);
    let main = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    futures::future::join(main, orphans).await;
}

fn error_policy(_: Arc<Job>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// The pod for one new pod of `job` (with its completion index for Indexed Jobs).
pub fn job_pod(job: &Job, index: Option<i32>) -> Pod {
    let owner = job
        .controller_owner_ref(&())
        .expect("a Job has a name and uid");
    let template = job.spec.as_ref().map(|s| &s.template);
    let name = job.name_any();
    let prefix = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod = pod_from_template(template, owner, prefix);
    pod.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    if let Some(i) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            if spec.hostname.as_deref().unwrap_or("").is_empty() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == env.name) {
                    vars.push(env.clone());
                }
            }
        }
    }
    pod
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    let job_key = key(&job.metadata);
    let err = |source| Error::Api {
        key: job_key.clone(),
        source,
    };
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // Checked before the cache is read: a pod that shows up after the read but before the
    // check would otherwise satisfy the expectation without being in the decision.
    let may_manage = ctx.expectations.satisfied(&uid);
    let owned_pods = owned(&ctx.pods, &namespace, &uid);
    if job.metadata.deletion_timestamp.is_some() {
        for pod in owned_pods
            .iter()
            .filter(|p| has_finalizer(&p.metadata, TRACKING_FINALIZER))
        {
            release(&pods_api, &pod.name_any()).await.map_err(err)?;
        }
        return Ok(Action::await_change());
    }
    let cached_version = job
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok());
    let written = ctx.written.lock().expect("written lock").get(&uid).copied();
    if let (Some(cached), Some(written)) = (cached_version, written) {
        if cached < written {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
    }
    // Matching orphans are adopted and pods relabelled out of the selector released
    // (`ClaimPods`); a released pod's tracking finalizer goes with the orphans'.
    let in_namespace = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()));
    let selector = job.spec.as_ref().and_then(|s| s.selector.as_ref());
    let claim = controller_ref::claim(in_namespace, &uid, selector, false);
    let owner = job
        .controller_owner_ref(&())
        .expect("a Job has a name and uid");
    let owned_pods = controller_ref::settle_pods(&pods_api, claim, &owner, &uid)
        .await
        .map_err(err)?;
    let pods: Vec<&Pod> = owned_pods.iter().map(|p| p.as_ref()).collect();
    let mut decision = sync::decide(&job, &pods, jiff::Timestamp::now(), ctx.config);

    let old_status = job.status.clone().unwrap_or_default();
    if old_status != decision.status {
        let mut updated = (*job).clone();
        updated.status = Some(decision.status.clone());
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        let stored = api
            .replace_status(&job.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(err)?;
        if let Some(version) = stored
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
        {
            ctx.written
                .lock()
                .expect("written lock")
                .insert(uid.clone(), version);
        }
    }
    for (type_, reason, message) in decision.events.drain(..) {
        ctx.recorder.record(job.as_ref(), type_, reason, message);
    }
    for name in &decision.remove_finalizers {
        release(&pods_api, name).await.map_err(err)?;
    }
    if !may_manage {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    for name in &decision.delete {
        let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
        else {
            continue;
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods_api.delete(name, &dp).await {
            Ok(_) => {
                ctx.expectations.expect_delete(&uid, name.clone());
                ctx.recorder.record(
                    job.as_ref(),
                    crate::events::EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                );
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(err(e)),
        }
    }
    let creates = decision.create.iter().map(|index| {
        let pod = job_pod(&job, *index);
        let api = pods_api.clone();
        async move { api.create(&PostParams::default(), &pod).await }
    });
    for result in futures::future::join_all(creates).await {
        match result {
            Ok(p) => {
                ctx.expectations.expect_create(&uid, p.name_any());
                ctx.recorder.record(
                    job.as_ref(),
                    crate::events::EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
            }
            Err(e) => {
                ctx.recorder.record(
                    job.as_ref(),
                    crate::events::EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                return Err(err(e));
            }
        }
    }
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Removes the tracking finalizer from a pod; a pod already gone is fine.
async fn release(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(remove_finalizer_patch(TRACKING_FINALIZER)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Releases the tracking finalizer of pods whose Job is gone (`cleanupOrphanPods`): the
/// Job controller only reconciles Jobs that exist, so these are watched on their own.
async fn release_orphans(client: Client, jobs: Store<Job>) {
    let config = watcher::Config::default().labels("batch.kubernetes.io/controller-uid");
    let client2 = client.clone();
    watcher(Api::<Pod>::all(client), config)
        .default_backoff()
        .applied_objects()
        .for_each(|pod| {
            let client = client2.clone();
            let jobs = jobs.clone();
            async move {
                let Ok(pod) = pod else { return };
                if !has_finalizer(&pod.metadata, TRACKING_FINALIZER) {
                    return;
                }
                let namespace = pod.namespace().unwrap_or_default();
                // Orphaned (the Job deleted with propagation Orphan): nothing tracks it.
                let exists = match controller_of(&pod.metadata) {
                    None => false,
                    Some(owner) if owner.kind != "Job" => return,
                    Some(owner) => {
                        let cached = jobs
                            .state()
                            .iter()
                            .any(|j| j.metadata.uid.as_deref() == Some(owner.uid.as_str()));
                        // A pod the garbage collector is deleting may still see its Job in
                        // the cache, and no later event of it may come: ask the server then,
                        // as when the cache does not have the Job (it may lag either way).
                        if cached && pod.metadata.deletion_timestamp.is_none() {
                            return;
                        }
                        let api: Api<Job> = Api::namespaced(client.clone(), &namespace);
                        match api.get_opt(&owner.name).await {
                            Ok(job) => job.is_some_and(|j| {
                                j.metadata.uid.as_deref() == Some(&owner.uid)
                                    && j.metadata.deletion_timestamp.is_none()
                            }),
                            Err(_) => true,
                        }
                    }
                };
                if !exists {
                    let pods: Api<Pod> = Api::namespaced(client, &namespace);
                    if let Err(e) = release(&pods, &pod.name_any()).await {
                        tracing::debug!("releasing orphan pod {}: {e}", pod.name_any());
                    }
                }
            }
        })
        .await;
}
