//! The scheduler cache (`internal/cache/cache.go`): nodes and the pods assigned to them,
//! fed by watches, plus pods the scheduler *assumed* onto a node before the binding is
//! confirmed, so the next cycle already counts their resources.
//!
//! Objects are shared `Arc`s exactly as the watch delivered them; an assumed pod is a new
//! object (a copy with `spec.nodeName` set), never a mutation of the watched one.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::NodeInfo;

/// How the cache knows a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PodState {
    /// The scheduler chose the node; no watch event confirmed the binding yet.
    Assumed {
        /// The node.
        node: String,
        /// Whether the binding call returned.
        binding_finished: bool,
    },
    /// A watch event showed the pod bound to the node.
    Bound { node: String },
}

impl PodState {
    fn node(&self) -> &str {
        match self {
            PodState::Assumed { node, .. } | PodState::Bound { node } => node,
        }
    }
}

/// Nodes and their pods.
#[derive(Default)]
pub struct Cache {
    infos: Vec<NodeInfo>,
    /// The node name of each entry of `infos` (placeholders have no Node object to ask).
    names: Vec<String>,
    index: HashMap<String, usize>,
    pods: HashMap<String, PodState>,
}

/// Whether a node update may make pending pods schedulable (labels, taints, allocatable,
/// unschedulable changed), as the scheduler's node update handler checks.
pub fn node_changed_for_scheduling(old: &Node, new: &Node) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
            != new.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
        || old.status.as_ref().map(|s| &s.allocatable)
            != new.status.as_ref().map(|s| &s.allocatable)
}

impl Cache {
    fn info_mut(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.infos.push(NodeInfo::default());
                self.names.push(name.to_owned());
                self.index.insert(name.to_owned(), self.infos.len() - 1);
                self.infos.len() - 1
            }
        };
        &mut self.infos[i]
    }

    /// Adds or updates a node; the previous object, if any.
    pub fn set_node(&mut self, node: Arc<Node>) -> Option<Arc<Node>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.info_mut(&name);
        let old = info.node.take();
        info.set_node(node);
        old
    }

    /// Removes a node (its pods stay accounted under the name until they go).
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if !self.infos[i].pods.is_empty() {
            self.infos[i].node = None;
            return;
        }
        self.infos.swap_remove(i);
        self.names.swap_remove(i);
        self.index.remove(name);
        if let Some(moved) = self.names.get(i) {
            self.index.insert(moved.clone(), i);
        }
    }

    /// The nodes, in a stable order.
    pub fn nodes(&self) -> Vec<&NodeInfo> {
        self.infos.iter().filter(|i| i.node.is_some()).collect()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.infos[i])
    }

    /// A pod a watch event shows bound to `spec.nodeName`; confirms an assumed pod.
    pub fn add_pod(&mut self, key: &str, pod: Arc<Pod>) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        self.remove_pod(key);
        self.info_mut(&node).add_pod(key, pod);
        self.pods.insert(key.to_owned(), PodState::Bound { node });
    }

    /// Removes a pod (deleted, or finished).
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(state) = self.pods.remove(key) else {
            return false;
        };
        let node = state.node().to_owned();
        self.info_mut(&node).remove_pod(key);
        if self
            .node(&node)
            .is_some_and(|i| i.node.is_none() && i.pods.is_empty())
        {
            self.remove_node(&node);
        }
        true
    }

    /// Counts `pod` (a copy with `spec.nodeName` set) on its node before the binding.
    pub fn assume(&mut self, key: &str, pod: Arc<Pod>) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        self.remove_pod(key);
        self.info_mut(&node).add_pod(key, pod);
        self.pods.insert(
            key.to_owned(),
            PodState::Assumed {
                node,
                binding_finished: false,
            },
        );
    }

    /// Notes that the binding call for an assumed pod returned successfully.
    pub fn finish_binding(&mut self, key: &str) {
        if let Some(PodState::Assumed {
            binding_finished, ..
        }) = self.pods.get_mut(key)
        {
            *binding_finished = true;
        }
    }

    /// Whether the pod is assumed and its binding call has not returned yet.
    pub fn is_binding(&self, key: &str) -> bool {
        matches!(
            self.pods.get(key),
            Some(PodState::Assumed {
                binding_finished: false,
                ..
            })
        )
    }

    /// Drops an assumed pod whose binding failed.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_pod(key);
        }
    }

    /// Whether the pod is assumed and not yet confirmed.
    pub fn is_assumed(&self, key: &str) -> bool {
        matches!(self.pods.get(key), Some(PodState::Assumed { .. }))
    }

    /// The pod as the cache holds it (assumed or bound).
    pub fn pod(&self, key: &str) -> Option<&Arc<Pod>> {
        let node = self.pods.get(key)?.node();
        self.node(node)?.pods.get(key)
    }

    /// Whether the cache holds the pod (assumed or bound).
    pub fn contains_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Every pod key the cache holds.
    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Every node name the cache holds.
    pub fn node_names(&self) -> Vec<String> {
        self.infos
            .iter()
            .filter(|i| i.node.is_some())
            .map(|i| i.name().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
            .unwrap(),
        )
    }

    fn pod(node: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"},
                "spec": {"nodeName": node, "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_are_confirmed_by_watch() {
        let mut cache = Cache::default();
        cache.set_node(node("a"));
        cache.set_node(node("b"));
        cache.assume("d/p", pod("a"));
        assert_eq!(cache.node("a").unwrap().requested.milli_cpu, 1000);
        cache.forget("d/p");
        assert_eq!(cache.node("a").unwrap().requested.milli_cpu, 0);
        cache.assume("d/p", pod("b"));
        cache.add_pod("d/p", pod("b"));
        assert!(!cache.is_assumed("d/p"));
        cache.forget("d/p");
        assert_eq!(cache.node("b").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn removing_nodes_keeps_the_index_consistent() {
        let mut cache = Cache::default();
        for n in ["a", "b", "c"] {
            cache.set_node(node(n));
        }
        cache.remove_node("a");
        assert_eq!(cache.node("c").unwrap().name(), "c");
        assert_eq!(cache.node("b").unwrap().name(), "b");
        assert!(cache.node("a").is_none());
        assert_eq!(cache.nodes().len(), 2);
    }
}
