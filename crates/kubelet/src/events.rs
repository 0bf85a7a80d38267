//! Events the kubelet records about pods (`Killing`, `Unhealthy`, `FailedMount`,
//! `Failed`, `FailedPostStartHook` ...), behind [`EventSink`] so syncs and probes
//! unit-test with a recorder. The API sink aggregates repeats into one Event with
//! a growing `count`, as the kubelet's event recorder does.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event about a pod (or one of its containers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodEvent {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID.
    pub uid: String,
    /// `spec.containers{name}` when about a container.
    pub field_path: Option<String>,
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl PodEvent {
    /// An event about `pod`, or about its container `container`.
    pub fn new(
        pod: &Pod,
        container: Option<&str>,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) -> PodEvent {
        let spec = pod.spec.as_ref();
        // Init containers are addressed as such.
        let field_path = container.map(|c| {
            let init = spec
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|i| i.iter().any(|x| x.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        PodEvent {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path,
            type_,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Where events go.
pub trait EventSink: Send + Sync {
    /// Records `event` (without waiting for the API).
    fn emit(&self, event: PodEvent);
}

/// Events that go nowhere.
#[derive(Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: PodEvent) {}
}

/// [`EventSink`] writing core/v1 Events to the API.
pub struct ApiEvents {
    client: kube::Client,
    handle: tokio::runtime::Handle,
    node: String,
    /// Event names and counts of events already written.
    seen: Mutex<HashMap<PodEvent, (String, i32)>>,
}

impl ApiEvents {
    /// Events from the kubelet of `node`, written on `handle`'s runtime.
    pub fn new(client: kube::Client, handle: tokio::runtime::Handle, node: String) -> ApiEvents {
        ApiEvents {
            client,
            handle,
            node,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl EventSink for ApiEvents {
    fn emit(&self, event: PodEvent) {
        tracing::info!(pod = %event.pod, reason = %event.reason, "{}", event.message);
        let (name, count) = {
            let mut seen = self.seen.lock().unwrap();
            if seen.len() > 10_000 {
                seen.clear();
            }
            let n = seen.len();
            let entry = seen.entry(event.clone()).or_insert_with(|| {
                let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                (format!("{}.{:x}{:x}", event.pod, nanos, n), 0)
            });
            entry.1 += 1;
            entry.clone()
        };
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &event.namespace);
        let now = jiff::Timestamp::now();
        let node = self.node.clone();
        self.handle.spawn(async move {
            let result = if count == 1 {
                let e = Event {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(event.namespace.clone()),
                        ..Default::default()
                    },
                    involved_object: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(event.pod.clone()),
                        namespace: Some(event.namespace.clone()),
                        uid: Some(event.uid.clone()),
                        field_path: event.field_path.clone(),
                        ..Default::default()
                    },
                    reason: Some(event.reason.clone()),
                    message: Some(event.message.clone()),
                    type_: Some(event.type_.as_str().into()),
                    source: Some(EventSource {
                        component: Some("kubelet".into()),
                        host: Some(node.clone()),
                    }),
                    reporting_component: Some("kubelet".into()),
                    reporting_instance: Some(node),
                    first_timestamp: Some(Time(now)),
                    last_timestamp: Some(Time(now)),
                    event_time: None::<MicroTime>,
                    count: Some(1),
                    ..Default::default()
                };
                api.create(&Default::default(), &e).await.map(drop)
            } else {
                let patch = serde_json::json!({"count": count, "lastTimestamp": Time(now)});
                api.patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
                    .await
                    .map(drop)
            };
            if let Err(e) = result {
                tracing::debug!("recording event {}: {e}", event.reason);
            }
        });
    }
}
