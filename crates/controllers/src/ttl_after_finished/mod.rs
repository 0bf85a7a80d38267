//! The TTL-after-finished controller (`pkg/controller/ttlafterfinished`): deletes a
//! finished Job (`Complete` or `Failed`) `ttlSecondsAfterFinished` seconds after it
//! finished, with foreground propagation so its pods go first.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};

use crate::job::sync::{finished_at, is_finished};
use crate::pod_util::{is_not_found, key, until};

/// A failed deletion.
#[derive(Debug, thiserror::Error)]
#[error("deleting expired job {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

/// When a finished Job expires, if it has a TTL and finished.
pub fn expires_at(job: &Job) -> Option<jiff::Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if !is_finished(job) {
        return None;
    }
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref().map(|t| t.0))
        .or_else(|| finished_at(job))?;
    Some(finished + jiff::SignedDuration::from_secs(i64::from(ttl)))
}

/// Runs the controller until the Job watch ends.
pub async fn run(client: Client) {
    Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Job>, err: &Error, _: Arc<Client>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(job: Arc<Job>, client: Arc<Client>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(expiry) = expires_at(&job) else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    if now < expiry {
        return Ok(Action::requeue(until(now, expiry)));
    }
    let api: Api<Job> = Api::namespaced((*client).clone(), &job.namespace().unwrap_or_default());
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: job.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_not_found(&e) => Ok(Action::await_change()),
        Err(source) => Err(Error {
            key: key(&job.metadata),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finished_jobs_expire_ttl_seconds_after_completion() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": 30, "template": {}},
            "status": {"completionTime": "2025-01-01T00:00:00Z", "conditions": [
                {"type": "Complete", "status": "True"}]},
        }))
        .unwrap();
        assert_eq!(
            expires_at(&job).unwrap(),
            "2025-01-01T00:00:30Z".parse::<jiff::Timestamp>().unwrap()
        );
        let mut running = job.clone();
        running.status.as_mut().unwrap().conditions = None;
        assert_eq!(expires_at(&running), None);
    }
}
