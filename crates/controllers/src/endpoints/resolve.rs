//! What a Service's endpoints are, from its pods: which pods serve it, whether each is
//! ready, and which port each service port reaches on it (a named `targetPort` is looked
//! up among the pod's container ports). Shared by the Endpoints and EndpointSlice
//! controllers (`endpointutil`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pod_util::{is_ready, is_terminal};

/// One port of an endpoint: the service port's name and protocol, the pod's port number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    /// The service port's name (`""` for a single unnamed port).
    pub name: String,
    /// The port on the pod.
    pub port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The service port's `appProtocol`.
    pub app_protocol: Option<String>,
}

/// A pod that serves a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    /// The pod's IP.
    pub ip: String,
    /// Whether it may receive traffic (ready and not terminating, or the Service publishes
    /// not-ready addresses).
    pub ready: bool,
    /// Whether the pod is ready, terminating or not.
    pub serving: bool,
    /// Whether the pod is being deleted.
    pub terminating: bool,
    /// The pod's node.
    pub node_name: Option<String>,
    /// The pod's hostname when its subdomain is the Service's name.
    pub hostname: Option<String>,
    /// A reference to the pod.
    pub target_ref: ObjectReference,
    /// The ports the Service's ports reach on this pod, sorted.
    pub ports: Vec<ResolvedPort>,
}

/// The Service's selector, when the controllers manage its endpoints (a Service without
/// one has endpoints written by hand).
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Whether `pod` is selected by `service`.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = selector(service) else {
        return false;
    };
    pod.metadata.namespace == service.metadata.namespace
        && selector
            .iter()
            .all(|(k, v)| pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
}

/// The port a service port reaches on `pod` (`FindPort`): a number as is, a name among
/// the pod's container ports of the same protocol.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port),
        },
    }
}

/// The endpoint `pod` is of `service`, if it is one: selected, not finished, with an IP;
/// terminating pods only when the Service publishes not-ready addresses... or as
/// terminating endpoints, which only EndpointSlices carry (`include_terminating`).
pub fn pod_endpoint(
    service: &Service,
    pod: &Pod,
    include_terminating: bool,
) -> Option<PodEndpoint> {
    if !selects(service, pod) || is_terminal(pod) {
        return None;
    }
    let ip = pod
        .status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())?;
    let spec = service.spec.as_ref()?;
    let publish = spec.publish_not_ready_addresses == Some(true);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    if terminating && !publish && !include_terminating {
        return None;
    }
    let serving = is_ready(pod);
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let pod_spec = pod.spec.as_ref();
    let hostname = pod_spec
        .filter(|s| s.subdomain.as_deref() == Some(service_name.as_str()))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    let mut ports: Vec<ResolvedPort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ResolvedPort {
                name: p.name.clone().unwrap_or_default(),
                port: find_port(pod, p)?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort();
    Some(PodEndpoint {
        ip,
        ready: publish || (serving && !terminating),
        serving: publish || serving,
        terminating,
        node_name: pod_spec.and_then(|s| s.node_name.clone()),
        hostname,
        target_ref: ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        ports,
    })
}

/// The endpoints of `service` among `pods`, sorted by IP.
pub fn endpoints_of<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
    include_terminating: bool,
) -> Vec<PodEndpoint> {
    let mut out: Vec<PodEndpoint> = pods
        .into_iter()
        .filter_map(|p| pod_endpoint(service, p, include_terminating))
        .collect();
    out.sort_by(|a, b| {
        (ip_key(&a.ip), &a.target_ref.name).cmp(&(ip_key(&b.ip), &b.target_ref.name))
    });
    out
}

fn ip_key(ip: &str) -> (Option<std::net::IpAddr>, &str) {
    (ip.parse().ok(), ip)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn service(extra: serde_json::Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": 9000, "targetPort": 9090, "protocol": "TCP"},
            ]},
        });
        if let Some(spec) = extra.as_object() {
            for (k, val) in spec {
                v["spec"][k] = val.clone();
            }
        }
        serde_json::from_value(v).unwrap()
    }

    pub(crate) fn pod(name: &str, ip: &str, ready: bool, deleting: bool) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn named_target_ports_resolve_to_container_ports() {
        let e = pod_endpoint(
            &service(json!({})),
            &pod("a", "10.0.0.1", true, false),
            false,
        )
        .unwrap();
        let ports: Vec<(String, i32)> = e.ports.iter().map(|p| (p.name.clone(), p.port)).collect();
        assert_eq!(ports, [("http".into(), 8080), ("metrics".into(), 9090)]);
        assert!(e.ready && e.serving && !e.terminating);
    }

    #[test]
    fn readiness_terminating_and_publish_not_ready() {
        let s = service(json!({}));
        let not_ready = pod_endpoint(&s, &pod("a", "10.0.0.1", false, false), false).unwrap();
        assert!(!not_ready.ready);
        assert_eq!(
            pod_endpoint(&s, &pod("b", "10.0.0.2", true, true), false),
            None
        );
        let terminating = pod_endpoint(&s, &pod("b", "10.0.0.2", true, true), true).unwrap();
        assert!(!terminating.ready && terminating.serving && terminating.terminating);
        let publish = service(json!({"publishNotReadyAddresses": true}));
        assert!(
            pod_endpoint(&publish, &pod("a", "10.0.0.1", false, false), false)
                .unwrap()
                .ready
        );
        assert_eq!(pod_endpoint(&s, &pod("c", "", true, false), false), None);
    }

    #[test]
    fn endpoints_sort_by_address() {
        let s = service(json!({}));
        let pods = [
            pod("a", "10.0.0.10", true, false),
            pod("b", "10.0.0.9", true, false),
        ];
        let ips: Vec<String> = endpoints_of(&s, &pods, false)
            .into_iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(ips, ["10.0.0.9", "10.0.0.10"]);
    }
}
