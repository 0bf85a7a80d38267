//! A pod's quality-of-service class (pkg/apis/core/v1/helper/qos): which level of
//! the kubelet's cgroup hierarchy its cgroup goes in ([`crate::cgroups`]) and, under
//! node pressure, in which order pods are evicted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A QoS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QosClass {
    /// Every container limits cpu and memory, and the pod's requests equal its limits.
    Guaranteed,
    /// Some container requests or limits cpu or memory, short of Guaranteed.
    Burstable,
    /// No container requests or limits cpu or memory.
    BestEffort,
}

impl QosClass {
    /// Every class, from the most to the least protected.
    pub const ALL: [QosClass; 3] = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ];

    /// The API's spelling (`status.qosClass`).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The class spelled `text`.
    pub fn parse(text: &str) -> Option<QosClass> {
        QosClass::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// The pod's class: `status.qosClass` as the API server set it at creation (it never
/// changes), or computed from the spec when absent.
pub fn of_pod(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::parse)
        .unwrap_or_else(|| compute(&pod.spec.clone().unwrap_or_default()))
}

/// The class of a pod spec, from the cpu and memory of all its containers (init
/// containers included): their positive requests (defaulting to the limits) and limits
/// are summed per resource; Guaranteed needs a cpu and a memory limit on every
/// container and summed requests equal to summed limits, BestEffort has nothing at all.
pub fn compute(spec: &PodSpec) -> QosClass {
    const RESOURCES: [&str; 2] = ["cpu", "memory"];
    let mut requests = [None::<i64>; 2];
    let mut limits = [None::<i64>; 2];
    let mut every_container_limited = true;
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    for c in containers {
        let res = c.resources.clone().unwrap_or_default();
        for (i, name) in RESOURCES.iter().enumerate() {
            let positive = |m: &Option<BTreeMap<String, Quantity>>| {
                m.as_ref()
                    .and_then(|m| m.get(*name))
                    .map(|q| skiff_quantity::milli(&q.0))
                    .filter(|v| *v > 0)
            };
            let limit = positive(&res.limits);
            // A request defaults to the limit, as the API server fills it in.
            if let Some(v) = positive(&res.requests).or(limit) {
                *requests[i].get_or_insert(0) += v;
            }
            match limit {
                Some(v) => *limits[i].get_or_insert(0) += v,
                None => every_container_limited = false,
            }
        }
    }
    if requests.iter().chain(&limits).all(Option::is_none) {
        QosClass::BestEffort
    } else if every_container_limited && requests == limits {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(containers: serde_json::Value) -> PodSpec {
        serde_json::from_value(serde_json::json!({ "containers": containers })).unwrap()
    }

    fn container(requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": "c", "resources": {"requests": requests, "limits": limits}})
    }

    #[test]
    fn classes_follow_requests_and_limits() {
        let none = serde_json::json!({});
        assert_eq!(
            compute(&spec(serde_json::json!([{"name": "c"}]))),
            QosClass::BestEffort
        );
        let both = serde_json::json!({"cpu": "500m", "memory": "64Mi"});
        assert_eq!(
            compute(&spec(serde_json::json!([container(
                both.clone(),
                both.clone()
            )]))),
            QosClass::Guaranteed
        );
        // Limits alone: requests default to them.
        assert_eq!(
            compute(&spec(serde_json::json!([container(
                none.clone(),
                both.clone()
            )]))),
            QosClass::Guaranteed
        );
        // Equal amounts in other spellings are equal.
        assert_eq!(
            compute(&spec(serde_json::json!([container(
                serde_json::json!({"cpu": "0.5", "memory": "67108864"}),
                both.clone()
            )]))),
            QosClass::Guaranteed
        );
        assert_eq!(
            compute(&spec(serde_json::json!([container(
                serde_json::json!({"cpu": "100m"}),
                none.clone()
            )]))),
            QosClass::Burstable
        );
        // Only memory limited: Burstable.
        assert_eq!(
            compute(&spec(serde_json::json!([container(
                none.clone(),
                serde_json::json!({"memory": "64Mi"})
            )]))),
            QosClass::Burstable
        );
        // Requests defaulted from limits in one container, given in another.
        assert_eq!(
            compute(&spec(serde_json::json!([
                container(both.clone(), both.clone()),
                container(none.clone(), both.clone())
            ]))),
            QosClass::Guaranteed
        );
        // One container without limits spoils Guaranteed.
        assert_eq!(
            compute(&spec(serde_json::json!([
                container(both.clone(), both.clone()),
                {"name": "d"}
            ]))),
            QosClass::Burstable
        );
        // Zero amounts count as none.
        assert_eq!(
            compute(&spec(serde_json::json!([container(
                serde_json::json!({"cpu": "0"}),
                none
            )]))),
            QosClass::BestEffort
        );
    }

    #[test]
    fn the_api_servers_class_wins() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "c"}]},
            "status": {"qosClass": "Burstable"},
        }))
        .unwrap();
        assert_eq!(of_pod(&pod), QosClass::Burstable);
    }
}
