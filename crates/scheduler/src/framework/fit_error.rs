//! Why a pod fits nowhere, and the message kube-scheduler writes into the pod's
//! `PodScheduled` condition and its `FailedScheduling` event (`FitError.Error()`).

use std::collections::BTreeMap;

use super::Status;

/// Per-node statuses and plugin messages collected while scheduling one pod.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Each rejected node's status.
    pub node_statuses: Vec<(String, Status)>,
    /// Set when a PreFilter plugin rejected the pod for every node.
    pub pre_filter_msg: String,
    /// The PostFilter (preemption) message.
    pub post_filter_msg: String,
}

/// No node can run the pod.
#[derive(Debug, Clone)]
pub struct FitError {
    /// How many nodes were considered.
    pub num_all_nodes: usize,
    /// Why they were rejected.
    pub diagnosis: Diagnosis,
}

impl FitError {
    /// The plugins that rejected the pod on some node.
    pub fn unschedulable_plugins(&self) -> Vec<&'static str> {
        let mut plugins: Vec<&'static str> = self
            .diagnosis
            .node_statuses
            .iter()
            .map(|(_, s)| s.plugin)
            .filter(|p| !p.is_empty())
            .collect();
        plugins.sort_unstable();
        plugins.dedup();
        plugins
    }
}

/// `"1 reason-a, 2 reason-b"`: a histogram of reasons, sorted as strings as
/// kube-scheduler sorts them.
pub fn reasons_histogram<'a>(statuses: impl Iterator<Item = &'a Status>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses {
        for reason in &status.reasons {
            *counts.entry(reason.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts
        .into_iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    parts.sort();
    parts.join(", ")
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if !self.diagnosis.pre_filter_msg.is_empty() {
            write!(f, " {}.", self.diagnosis.pre_filter_msg)?;
        } else {
            let histogram = reasons_histogram(self.diagnosis.node_statuses.iter().map(|(_, s)| s));
            write!(f, " {histogram}.")?;
        }
        if !self.diagnosis.post_filter_msg.is_empty() {
            write!(f, " {}", self.diagnosis.post_filter_msg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_kube_schedulers_shape() {
        let err = FitError {
            num_all_nodes: 3,
            diagnosis: Diagnosis {
                node_statuses: vec![
                    ("a".into(), Status::unresolvable("node(s) had untolerated taint {k: v}")),
                    ("b".into(), Status::unschedulable("Insufficient cpu")),
                    ("c".into(), Status::unschedulable("Insufficient cpu")),
                ],
                pre_filter_msg: String::new(),
                post_filter_msg: "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.".into(),
            },
        };
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
    }
}
