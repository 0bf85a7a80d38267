//! Recording core/v1 Events about objects, as controllers' `EventRecorder` does, without
//! blocking the reconcile that records them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

/// Writes Events on behalf of one component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy)]
pub enum EventType {
    /// Expected operation.
    Normal,
    /// Something went wrong.
    Warning,
}

impl Recorder {
    /// A recorder whose Events name `component` as their source.
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    /// Records an Event about `obj` in the background.
    pub fn record<K>(&self, obj: &K, type_: EventType, reason: &str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let namespace = obj.namespace().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", obj.name_any(), now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into()),
                kind: Some(K::kind(&()).into()),
                name: Some(obj.name_any()),
                namespace: obj.namespace(),
                uid: obj.meta().uid.clone(),
                resource_version: obj.meta().resource_version.clone(),
                field_path: None,
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(format!("{type_:?}")),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!("recording event: {e}");
            }
        });
    }
}
