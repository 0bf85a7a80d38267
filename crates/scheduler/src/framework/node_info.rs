//! A node with the pods assigned to it and what they request (`framework.NodeInfo`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};

use super::quantity;

/// Requests the scheduler uses for a container without them when scoring
/// (`schedutil.DefaultMilliCPURequest`, `DefaultMemoryRequest`), so empty pods still spread.
const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pod count (only meaningful for allocatable).
    pub allowed_pods: i64,
    /// Extended and hugepage resources by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Reads a `ResourceList` (capacity, allocatable, requests).
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity::milli(&q.0),
                "memory" => r.memory = quantity::value(&q.0),
                "ephemeral-storage" => r.ephemeral_storage = quantity::value(&q.0),
                "pods" => r.allowed_pods = quantity::value(&q.0),
                other => {
                    r.scalar.insert(other.to_owned(), quantity::value(&q.0));
                }
            }
        }
        r
    }

    fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

fn container_requests(c: &Container) -> Resource {
    Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// What a pod requests: the sum over its containers, at least the largest init container,
/// plus its overhead (`resourcehelper.PodRequests`).
pub fn pod_requests(pod: &Pod) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut total = Resource::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    let mut sidecars = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            total.add(&r);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            total.max_with(&with_sidecars);
        }
    }
    total.add(&Resource::from_list(spec.overhead.as_ref()));
    total
}

/// Requests with the scoring defaults for containers that set no cpu or memory request.
pub fn non_zero_requests(pod: &Pod) -> Resource {
    let mut r = Resource::default();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let req = container_requests(c);
        let set = |name: &str| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(name))
        };
        r.milli_cpu += if set("cpu") {
            req.milli_cpu
        } else {
            DEFAULT_MILLI_CPU_REQUEST
        };
        r.memory += if set("memory") {
            req.memory
        } else {
            DEFAULT_MEMORY_REQUEST
        };
    }
    r
}

/// A host port in use: (host IP, protocol, port).
pub type HostPort = (String, String, i32);

/// The host ports a pod's containers claim.
pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut ports = Vec::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        for p in c.ports.iter().flatten() {
            if let Some(host_port) = p.host_port.filter(|p| *p > 0) {
                let ip = p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into());
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                ports.push((ip, protocol, host_port));
            }
        }
    }
    ports
}

/// One node as the scheduler sees it: the Node object and the pods assigned to it
/// (bound or assumed). Objects are shared, never mutated.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node (absent while only pods that name it are known).
    pub node: Option<Arc<Node>>,
    /// Pods on the node, keyed by `namespace/name`.
    pub pods: BTreeMap<String, Arc<Pod>>,
    /// Sum of the pods' requests.
    pub requested: Resource,
    /// Sum of the pods' requests with scoring defaults.
    pub non_zero_requested: Resource,
    /// What the node offers (`status.allocatable`).
    pub allocatable: Resource,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// How many pods have pod affinity or anti-affinity terms (InterPodAffinity skips
    /// nodes without any).
    pub pods_with_affinity: usize,
    /// How many pods have required pod anti-affinity terms.
    pub pods_with_required_anti_affinity: usize,
    /// Changes whenever the node or its pods change, and is never reused by any node
    /// (`NodeInfo.Generation`): what a plugin computed from a node stays valid while the
    /// generation is the same.
    pub generation: u64,
}

/// The source of [`NodeInfo::generation`]s, shared by every node so that a number names
/// one state of one node.
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Whether the pod has pod affinity or anti-affinity, and required anti-affinity terms.
fn affinity_kinds(pod: &Pod) -> (bool, bool) {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let any = affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
    let required_anti = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty());
    (any, required_anti)
}

impl NodeInfo {
    /// The node's name ("" when only pods are known).
    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or("")
    }

    /// The node's labels.
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref())
    }

    /// Sets the node object.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable =
            Resource::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        self.node = Some(node);
        self.generation = next_generation();
    }

    /// Adds (or replaces) a pod.
    pub fn add_pod(&mut self, key: &str, pod: Arc<Pod>) {
        self.remove_pod(key);
        self.requested.add(&pod_requests(&pod));
        self.non_zero_requested.add(&non_zero_requests(&pod));
        self.used_ports.extend(pod_host_ports(&pod));
        let (any, required_anti) = affinity_kinds(&pod);
        self.pods_with_affinity += usize::from(any);
        self.pods_with_required_anti_affinity += usize::from(required_anti);
        self.pods.insert(key.to_owned(), pod);
        self.generation = next_generation();
    }

    /// Removes a pod; whether it was there.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(pod) = self.pods.remove(key) else {
            return false;
        };
        self.requested.sub(&pod_requests(&pod));
        self.non_zero_requested.sub(&non_zero_requests(&pod));
        let (any, required_anti) = affinity_kinds(&pod);
        self.pods_with_affinity -= usize::from(any);
        self.pods_with_required_anti_affinity -= usize::from(required_anti);
        for port in pod_host_ports(&pod) {
            if let Some(i) = self.used_ports.iter().position(|p| *p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        self.generation = next_generation();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn requests_sum_containers_and_respect_init_containers() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1"}}}]}}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 64 * 1024 * 1024);
    }

    #[test]
    fn node_info_accounts_and_releases() {
        let p = Arc::new(pod(json!({"spec": {"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
             "resources": {"requests": {"cpu": "500m"}}}]}})));
        let mut info = NodeInfo::default();
        info.add_pod("ns/p", p.clone());
        info.add_pod("ns/p", p);
        assert_eq!(info.requested.milli_cpu, 500);
        assert_eq!(info.non_zero_requested.memory, DEFAULT_MEMORY_REQUEST);
        assert_eq!(info.used_ports.len(), 1);
        assert!(info.remove_pod("ns/p"));
        assert_eq!(info.requested, Resource::default());
        assert!(info.used_ports.is_empty());
    }
}
