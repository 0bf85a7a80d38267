//! The scheduler's writes to the API server behind one trait, so the scheduling logic is
//! tested without a server: binding, the `PodScheduled` condition and Events.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, Event, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Binding failed.
    #[error("binding pod {pod} to node {node}: {source}")]
    Bind {
        /// `namespace/name` of the pod.
        pod: String,
        /// The node.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// Deleting a preemption victim failed.
    #[error("preempting pod {pod}: {source}")]
    Preempt {
        /// `namespace/name` of the victim.
        pod: String,
        /// The API error.
        source: kube::Error,
    },
    /// Updating the pod's status failed.
    #[error("updating the status of pod {pod}: {source}")]
    Status {
        /// `namespace/name` of the pod.
        pod: String,
        /// The API error.
        source: kube::Error,
    },
}

/// An Event about a pod, as `EventRecorder.Eventf` takes it.
#[derive(Debug, Clone)]
pub struct PodEvent {
    /// The pod.
    pub pod: Arc<Pod>,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Scheduled`, `FailedScheduling`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// What a failed scheduling attempt does to `status.nominatedNodeName`
/// (`framework.NominatingInfo`'s modes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nomination {
    /// Leave it as it is (`ModeNoop`).
    Keep,
    /// Set it; `""` clears it (`ModeOverride`).
    Set(String),
}

/// What the scheduler writes.
pub trait ClusterApi: Send + Sync + 'static {
    /// Binds the pod to the node.
    fn bind(&self, pod: &Pod, node: &str) -> BoxFuture<'static, Result<(), ApiError>>;
    /// Sets the pod's `PodScheduled` condition and, as `nomination` says, its
    /// `nominatedNodeName`.
    fn set_condition(
        &self,
        pod: &Pod,
        condition: PodCondition,
        nomination: Nomination,
    ) -> BoxFuture<'static, Result<(), ApiError>>;
    /// Preempts `victim` for `preemptor` on `node` (`prepareCandidate`): marks it with a
    /// `DisruptionTarget` condition (reason `PreemptionByScheduler`), deletes it and records
    /// a `Preempted` Event on it.
    fn preempt(
        &self,
        victim: &Pod,
        preemptor: &Pod,
        node: &str,
    ) -> BoxFuture<'static, Result<(), ApiError>>;
    /// Records an Event; never blocks (drops when the recorder is backed up, as
    /// client-go's broadcaster does).
    fn record(&self, event: PodEvent);
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's conditions with `condition` replacing the one of its type (a merge patch
/// replaces the whole list).
fn with_condition(pod: &Pod, condition: PodCondition) -> Vec<PodCondition> {
    let mut conditions: Vec<PodCondition> = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter(|c| c.type_ != condition.type_)
        .cloned()
        .collect();
    conditions.push(condition);
    conditions
}

/// [`ClusterApi`] over a kube client.
pub struct KubeApi {
    client: Client,
    events: mpsc::Sender<PodEvent>,
}

impl KubeApi {
    /// An API writer for `component` (the Events' source); spawns the event writer.
    pub fn new(client: Client, component: String) -> KubeApi {
        let (events, rx) = mpsc::channel(1024);
        tokio::spawn(write_events(client.clone(), component, rx));
        KubeApi { client, events }
    }
}

impl ClusterApi for KubeApi {
    fn bind(&self, pod: &Pod, node: &str) -> BoxFuture<'static, Result<(), ApiError>> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                api_version: Some("v1".into()),
                name: Some(node.to_owned()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let pod_key = key(pod);
        let node = node.to_owned();
        Box::pin(async move {
            let bound: Result<serde_json::Value, _> = api
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            bound.map(drop).map_err(|source| ApiError::Bind {
                pod: pod_key,
                node,
                source,
            })
        })
    }

    fn set_condition(
        &self,
        pod: &Pod,
        condition: PodCondition,
        nomination: Nomination,
    ) -> BoxFuture<'static, Result<(), ApiError>> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut status = json!({"conditions": with_condition(pod, condition)});
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .unwrap_or("");
        match nomination {
            Nomination::Set(node) if node.is_empty() && !current.is_empty() => {
                status["nominatedNodeName"] = serde_json::Value::Null;
            }
            Nomination::Set(node) if !node.is_empty() && node != current => {
                status["nominatedNodeName"] = json!(node);
            }
            _ => {}
        }
        let patch = json!({"status": status});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let pod_key = key(pod);
        Box::pin(async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(|source| ApiError::Status {
                    pod: pod_key,
                    source,
                })
        })
    }

    fn preempt(
        &self,
        victim: &Pod,
        preemptor: &Pod,
        node: &str,
    ) -> BoxFuture<'static, Result<(), ApiError>> {
        let namespace = victim.metadata.namespace.clone().unwrap_or_default();
        let name = victim.metadata.name.clone().unwrap_or_default();
        let scheduler = preemptor
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.into());
        let condition = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("PreemptionByScheduler".into()),
            message: Some(format!(
                "{scheduler}: preempting to accommodate a higher priority pod"
            )),
            last_transition_time: Some(Time(jiff::Timestamp::now())),
            ..Default::default()
        };
        let patch = json!({"status": {"conditions": with_condition(victim, condition)}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let event = PodEvent {
            pod: Arc::new(victim.clone()),
            type_: "Normal",
            reason: "Preempted",
            message: format!(
                "Preempted by pod {} on node {node}",
                preemptor.metadata.uid.as_deref().unwrap_or("")
            ),
        };
        let events = self.events.clone();
        let uid = victim.metadata.uid.clone();
        let pod_key = key(victim);
        Box::pin(async move {
            let fail = |source| ApiError::Preempt {
                pod: pod_key.clone(),
                source,
            };
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(fail(e)),
            }
            let params = kube::api::DeleteParams {
                preconditions: uid.map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(fail(e)),
            }
            if events.try_send(event).is_err() {
                tracing::debug!("event recorder backed up; dropping an event");
            }
            Ok(())
        })
    }

    fn record(&self, event: PodEvent) {
        if self.events.try_send(event).is_err() {
            tracing::debug!("event recorder backed up; dropping an event");
        }
    }
}

/// Writes queued Events as core/v1 Events, a few at a time.
async fn write_events(client: Client, component: String, mut rx: mpsc::Receiver<PodEvent>) {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    while let Some(event) = rx.recv().await {
        let namespace = event.pod.metadata.namespace.clone().unwrap_or_default();
        let name = event.pod.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let stamp = Time(now);
        let object = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                namespace: Some(namespace.clone()),
                name: Some(name),
                uid: event.pod.metadata.uid.clone(),
                resource_version: event.pod.metadata.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(event.reason.into()),
            message: Some(event.message),
            type_: Some(event.type_.into()),
            count: Some(1),
            first_timestamp: Some(stamp.clone()),
            last_timestamp: Some(stamp),
            event_time: Some(MicroTime(now)),
            action: Some(
                match event.reason {
                    "Scheduled" => "Binding",
                    "Preempted" => "Preempting",
                    _ => "Scheduling",
                }
                .into(),
            ),
            reporting_component: Some(component.clone()),
            reporting_instance: Some(format!("{component}-{host}")),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(component.clone()),
                host: None,
            }),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &object).await {
            tracing::debug!("recording event: {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what the scheduler would have written.
    #[derive(Default)]
    pub struct FakeApi {
        /// `(pod key, node)` of each binding.
        pub bindings: Mutex<Vec<(String, String)>>,
        /// `(pod key, condition)` of each status update.
        pub conditions: Mutex<Vec<(String, PodCondition)>>,
        /// `(pod key, nomination)` of each status update.
        pub nominations: Mutex<Vec<(String, Nomination)>>,
        /// `(victim key, preemptor key, node)` of each preemption.
        pub preemptions: Mutex<Vec<(String, String, String)>>,
        /// Recorded events.
        pub events: Mutex<Vec<PodEvent>>,
    }

    impl ClusterApi for FakeApi {
        fn bind(&self, pod: &Pod, node: &str) -> BoxFuture<'static, Result<(), ApiError>> {
            self.bindings
                .lock()
                .unwrap()
                .push((key(pod), node.to_owned()));
            Box::pin(async { Ok(()) })
        }
        fn set_condition(
            &self,
            pod: &Pod,
            condition: PodCondition,
            nomination: Nomination,
        ) -> BoxFuture<'static, Result<(), ApiError>> {
            self.conditions.lock().unwrap().push((key(pod), condition));
            self.nominations
                .lock()
                .unwrap()
                .push((key(pod), nomination));
            Box::pin(async { Ok(()) })
        }
        fn preempt(
            &self,
            victim: &Pod,
            preemptor: &Pod,
            node: &str,
        ) -> BoxFuture<'static, Result<(), ApiError>> {
            self.preemptions
                .lock()
                .unwrap()
                .push((key(victim), key(preemptor), node.to_owned()));
            Box::pin(async { Ok(()) })
        }
        fn record(&self, event: PodEvent) {
            self.events.lock().unwrap().push(event);
        }
    }
}
