//! The namespace controller (`pkg/controller/namespace`): empties a namespace being
//! deleted, then releases it.
//!
//! Each pass discovers every namespaced resource the server serves (custom resources
//! too), deletes its objects in the namespace, and reports what is left in the
//! namespace's conditions. While content remains (pods in their grace period, objects
//! waiting on finalizers) the namespace is looked at again later; once nothing is left,
//! the `kubernetes` finalizer is removed through the `finalize` subresource and the API
//! server removes the namespace. Every pass starts from the namespace's current state.

mod conditions;
mod content;
mod discovery;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use conditions::Outcome;

/// The finalizer the namespace controller owns (`FinalizerKubernetes`).
pub const FINALIZER: &str = "kubernetes";

/// The field manager of the controller's status changes.
const FIELD_MANAGER: &str = "namespace-controller";

/// How many resources are emptied at once.
const CONCURRENCY: usize = 8;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call about the namespace itself failed.
    #[error("namespace {name}: {source}")]
    Api {
        /// The namespace.
        name: String,
        /// The error.
        source: kube::Error,
    },
    /// Some content could not be deleted or discovered.
    #[error("deleting the content of namespace {name}: {message}")]
    Content {
        /// The namespace.
        name: String,
        /// What failed.
        message: String,
    },
}

/// Runs the namespace controller until its watches end.
pub async fn run(client: Client) {
    // Pods leaving a terminating namespace may be the last content it waits for.
    let pods = Api::<Pod>::all(client.clone());
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(pods, watcher::Config::default(), |pod| {
        pod.namespace().map(|ns| ObjectRef::new(&ns))
    })
    .run(reconcile, error_policy, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

fn error_policy(_: Arc<Namespace>, err: &Error, _: Arc<Client>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(5))
}

/// The message of an API error: the server's own for a Status.
fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Whether `ns` is being deleted and still waits for this controller.
fn awaits_controller(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        && ns
            .spec
            .iter()
            .flat_map(|s| s.finalizers.iter().flatten())
            .any(|f| f == FINALIZER)
}

async fn reconcile(cached: Arc<Namespace>, client: Arc<Client>) -> Result<Action, Error> {
    if !awaits_controller(&cached) {
        return Ok(Action::await_change());
    }
    let name = cached.name_any();
    let api_err = |source| Error::Api {
        name: name.clone(),
        source,
    };
    let api: Api<Namespace> = Api::all((*client).clone());
    // Other controllers edit a namespace while it terminates: act on the latest.
    let Some(mut ns) = api.get_opt(&name).await.map_err(api_err)? else {
        return Ok(Action::await_change());
    };
    let Some(deleted_at) = ns
        .metadata
        .deletion_timestamp
        .clone()
        .filter(|_| awaits_controller(&ns))
    else {
        return Ok(Action::await_change());
    };
    let outcome = delete_content(&client, &name, deleted_at.0).await;
    let current = ns.status.as_ref().and_then(|s| s.conditions.clone());
    let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
    let updated = conditions::update(
        current.as_deref().unwrap_or_default(),
        &outcome,
        jiff::Timestamp::now(),
    );
    if updated.is_some() || phase != Some("Terminating") {
        let conditions = updated.or(current).unwrap_or_default();
        let patch = json!({"status": {"phase": "Terminating", "conditions": conditions}});
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
            Ok(patched) => ns = patched,
            // Reported again by the next pass.
            Err(e) => tracing::debug!("updating the conditions of namespace {name}: {e}"),
        }
    }
    if let Some(message) = outcome.error() {
        return Err(Error::Content { name, message });
    }
    if outcome.estimate > 0 {
        let secs = u64::try_from(outcome.estimate / 2 + 1).unwrap_or(1);
        return Ok(Action::requeue(Duration::from_secs(secs)));
    }
    finalize(&api, &ns).await.map_err(api_err)?;
    Ok(Action::await_change())
}

/// Deletes everything in namespace `name`, resource by resource, and reports the outcome.
async fn delete_content(client: &Client, name: &str, deleted_at: jiff::Timestamp) -> Outcome {
    let discovered = discovery::discover(client).await;
    let mut outcome = Outcome {
        discovery_failure: discovered.failure,
        parse_failure: discovered.parse_failure,
        ..Default::default()
    };
    let results: Vec<_> = futures::stream::iter(discovered.resources)
        .map(|resource| async move {
            let (left, failure) = content::delete_all(client, &resource, name, deleted_at).await;
            (resource.qualified(), left, failure)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (resource, left, failure) in results {
        outcome.add(resource, left, failure);
    }
    outcome
}

/// Removes [`FINALIZER`] through the `finalize` subresource; the API server deletes the
/// namespace when no finalizer is left. A conflict or a namespace already gone is left to
/// the next pass.
async fn finalize(api: &Api<Namespace>, ns: &Namespace) -> Result<(), kube::Error> {
    let finalizers: Vec<String> = ns
        .spec
        .iter()
        .flat_map(|s| s.finalizers.iter().flatten())
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let request = Namespace {
        metadata: ObjectMeta {
            name: ns.metadata.name.clone(),
            resource_version: ns.metadata.resource_version.clone(),
            uid: ns.metadata.uid.clone(),
            ..Default::default()
        },
        spec: Some(NamespaceSpec {
            finalizers: Some(finalizers),
        }),
        status: None,
    };
    match api
        .replace_subresource("finalize", &ns.name_any(), &PostParams::default(), &request)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
