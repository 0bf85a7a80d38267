//! The in-tree plugins, one module each, and the registry table that names them
//! (kube-scheduler's `plugins/registry.go` and the default profile of
//! `apis/config/v1/default_plugins.go`).

mod balanced_allocation;
mod default_binder;
pub mod default_preemption;
pub mod helpers;
pub mod inter_pod_affinity;
pub mod node_affinity;
mod node_name;
mod node_ports;
pub mod node_resources_fit;
mod node_unschedulable;
pub mod pod_topology_spread;
mod queue_sort;
mod scheduling_gates;
mod taint_toleration;
pub mod volume_binding;

use std::sync::Arc;

use crate::api::ClusterApi;
use crate::framework::{Enabled, Framework, Plugin, MAX_NODE_SCORE};
pub use node_resources_fit::ScoringStrategy;

/// What plugin constructors may use.
#[derive(Clone)]
pub struct Handle {
    /// The API, for plugins with side effects (binding).
    pub api: Arc<dyn ClusterApi>,
    /// NodeResourcesFit's scoring strategy.
    pub scoring: ScoringStrategy,
    /// Claims, volumes and classes, for VolumeBinding.
    pub volumes: Arc<dyn volume_binding::VolumeApi>,
    /// PodDisruptionBudgets, for DefaultPreemption.
    pub budgets: Arc<dyn default_preemption::DisruptionBudgets>,
    /// Namespaces and their labels, for InterPodAffinity's `namespaceSelector`.
    pub namespaces: Arc<dyn inter_pod_affinity::Namespaces>,
}

/// Builds a plugin.
pub type Factory = fn(&Handle) -> Arc<dyn Plugin>;

/// Every plugin skiff knows, by name.
pub static REGISTRY: &[(&str, Factory)] = &[
    (scheduling_gates::NAME, |_| {
        Arc::new(scheduling_gates::SchedulingGates)
    }),
    (queue_sort::NAME, |_| Arc::new(queue_sort::PrioritySort)),
    (node_unschedulable::NAME, |_| {
        Arc::new(node_unschedulable::NodeUnschedulable)
    }),
    (node_name::NAME, |_| Arc::new(node_name::NodeName)),
    (taint_toleration::NAME, |_| {
        Arc::new(taint_toleration::TaintToleration)
    }),
    (node_affinity::NAME, |_| {
        Arc::new(node_affinity::NodeAffinity)
    }),
    (node_ports::NAME, |_| Arc::new(node_ports::NodePorts)),
    (node_resources_fit::NAME, |h| {
        Arc::new(node_resources_fit::NodeResourcesFit {
            strategy: h.scoring,
        })
    }),
    (pod_topology_spread::NAME, |_| {
        Arc::new(pod_topology_spread::PodTopologySpread::default())
    }),
    (inter_pod_affinity::NAME, |h| {
        Arc::new(inter_pod_affinity::InterPodAffinity {
            namespaces: h.namespaces.clone(),
        })
    }),
    (volume_binding::NAME, |h| {
        Arc::new(volume_binding::VolumeBinding::new(h.volumes.clone()))
    }),
    (default_preemption::NAME, |h| {
        Arc::new(default_preemption::DefaultPreemption {
            filters: framework_of(h, |name| name != default_preemption::NAME),
            api: h.api.clone(),
            budgets: h.budgets.clone(),
        })
    }),
    (balanced_allocation::NAME, |_| {
        Arc::new(balanced_allocation::BalancedAllocation)
    }),
    (default_binder::NAME, |h| {
        Arc::new(default_binder::DefaultBinder { api: h.api.clone() })
    }),
];

/// The default profile: plugins in the order they run, with their score weights.
pub const DEFAULT_PROFILE: &[(&str, i64)] = &[
    (scheduling_gates::NAME, 0),
    (queue_sort::NAME, 0),
    (node_unschedulable::NAME, 0),
    (node_name::NAME, 0),
    (taint_toleration::NAME, 3),
    (node_affinity::NAME, 2),
    (node_ports::NAME, 0),
    (node_resources_fit::NAME, 1),
    (pod_topology_spread::NAME, 2),
    (inter_pod_affinity::NAME, 2),
    (volume_binding::NAME, 0),
    (default_preemption::NAME, 0),
    (balanced_allocation::NAME, 1),
    (default_binder::NAME, 0),
];

fn framework_of(handle: &Handle, keep: impl Fn(&str) -> bool) -> Framework {
    let plugins = DEFAULT_PROFILE
        .iter()
        .filter(|(name, _)| keep(name))
        .filter_map(|(name, weight)| {
            let (_, factory) = REGISTRY.iter().find(|(n, _)| n == name)?;
            Some(Enabled {
                plugin: factory(handle),
                weight: *weight,
            })
        })
        .collect();
    Framework::new(plugins)
}

/// The framework of the default profile.
pub fn default_framework(handle: &Handle) -> Framework {
    framework_of(handle, |_| true)
}

/// Scales scores into `[0, MAX_NODE_SCORE]` by the highest one, reversed when lower raw
/// scores are better (`helper.DefaultNormalizeScore`).
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_plugin_is_registered_and_names_match() {
        for (name, _) in DEFAULT_PROFILE {
            assert!(REGISTRY.iter().any(|(n, _)| n == name), "{name}");
        }
    }

    #[test]
    fn normalize_scales_and_reverses() {
        let mut s = [0, 5, 10];
        normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
    }
}
