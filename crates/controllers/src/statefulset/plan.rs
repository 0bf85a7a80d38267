//! The decisions of one StatefulSet sync (`updateStatefulSet`), as a pure function: which
//! ordinal to create or which pod to delete next, given the pods, the current and update
//! revisions and the pod management policy, and the status that results.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::history::CONTROLLER_REVISION_HASH;
use crate::pod_util::{is_available, is_ready, phase};

/// One API action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of this ordinal from this revision (by name).
    Create {
        /// The ordinal.
        ordinal: i32,
        /// The revision whose template to use.
        revision: String,
    },
    /// Delete this pod (scale down, failed, or to be recreated at the update revision).
    Delete(String),
}

/// What one sync decided.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The actions, in order.
    pub steps: Vec<Step>,
    /// The new status.
    pub status: StatefulSetStatus,
}

/// The ordinal in a pod's name `<set>-<ordinal>`.
pub fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|o: &i32| *o >= 0)
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Decides one sync of `set` over its `pods`, with revisions named `current` and `update`.
pub fn plan(
    set: &StatefulSet,
    pods: &[&Pod],
    current: &str,
    update: &str,
    now: jiff::Timestamp,
) -> Plan {
    let name = set.metadata.name.clone().unwrap_or_default();
    let spec = &set.spec;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for pod in pods {
        if let Some(o) = ordinal(&name, pod) {
            by_ordinal.insert(o, pod);
        }
    }
    let in_range = |o: i32| o >= start && o < start + replicas;
    let mut p = Plan::default();

    // Status first: it describes the pods as they are.
    let count = |f: &dyn Fn(&Pod) -> bool| by_ordinal.values().filter(|p| f(p)).count() as i32;
    let status_replicas = count(&|_| true);
    let ready = count(&|p| is_ready(p) && p.metadata.deletion_timestamp.is_none());
    let available =
        count(&|p| is_available(p, min_ready, now) && p.metadata.deletion_timestamp.is_none());
    let updated = count(&|p| revision_of(p) == Some(update));
    let mut current_name = current.to_owned();
    let mut current_replicas = count(&|p| revision_of(p) == Some(current));
    if rolling
        && updated == status_replicas
        && ready == status_replicas
        && status_replicas == replicas
    {
        current_name = update.to_owned();
        current_replicas = updated;
    }
    p.status = StatefulSetStatus {
        replicas: status_replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current_replicas),
        updated_replicas: Some(updated),
        current_revision: Some(current_name),
        update_revision: Some(update.to_owned()),
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };

    // Failed pods are replaced.
    for pod in by_ordinal.values() {
        if phase(pod) == "Failed" && pod.metadata.deletion_timestamp.is_none() {
            p.steps
                .push(Step::Delete(pod.metadata.name.clone().unwrap_or_default()));
        }
    }
    if !p.steps.is_empty() && !parallel {
        return p;
    }

    // Scale up, in ordinal order; OrderedReady waits for each pod to be Running and Ready.
    for o in start..start + replicas {
        match by_ordinal.get(&o) {
            None => {
                let revision = if rolling && o < partition {
                    current.to_owned()
                } else {
                    update.to_owned()
                };
                p.steps.push(Step::Create {
                    ordinal: o,
                    revision,
                });
                if !parallel {
                    return p;
                }
            }
            Some(pod) if !parallel && !running_and_ready(pod) => return p,
            Some(_) => {}
        }
    }

    // Scale down, highest ordinal first; OrderedReady one at a time, once all are ready.
    let mut condemned: Vec<&Pod> = by_ordinal
        .iter()
        .filter(|(o, _)| !in_range(**o))
        .map(|(_, p)| *p)
        .collect();
    condemned.reverse();
    for pod in &condemned {
        if pod.metadata.deletion_timestamp.is_some() {
            if !parallel {
                return p;
            }
            continue;
        }
        p.steps
            .push(Step::Delete(pod.metadata.name.clone().unwrap_or_default()));
        if !parallel {
            return p;
        }
    }
    if !p.steps.is_empty() {
        return p;
    }

    // RollingUpdate: from the highest ordinal down to the partition, one pod at a time,
    // each only once the rest are Running and Ready.
    if rolling {
        let all_ready = by_ordinal
            .iter()
            .filter(|(o, _)| in_range(**o))
            .all(|(_, p)| running_and_ready(p));
        if !all_ready {
            return p;
        }
        for (o, pod) in by_ordinal.iter().rev() {
            if !in_range(*o) || *o < partition {
                continue;
            }
            if revision_of(pod) != Some(update) {
                p.steps
                    .push(Step::Delete(pod.metadata.name.clone().unwrap_or_default()));
                return p;
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(replicas: i32, extra: serde_json::Value) -> StatefulSet {
        let mut spec = json!({"replicas": replicas, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 1}, "spec": spec}))
            .unwrap()
    }

    fn pod(ordinal: i32, revision: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{ordinal}"), "labels": {CONTROLLER_REVISION_HASH: revision}},
            "status": {"phase": if ready { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2025-01-01T00:00:00Z".parse().unwrap()
    }

    fn create(ordinal: i32, revision: &str) -> Step {
        Step::Create {
            ordinal,
            revision: revision.into(),
        }
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_waiting_for_readiness() {
        let s = set(3, json!({}));
        assert_eq!(plan(&s, &[], "r1", "r1", now()).steps, [create(0, "r1")]);
        let p0 = pod(0, "r1", false);
        assert!(plan(&s, &[&p0], "r1", "r1", now()).steps.is_empty());
        let p0 = pod(0, "r1", true);
        assert_eq!(plan(&s, &[&p0], "r1", "r1", now()).steps, [create(1, "r1")]);
    }

    #[test]
    fn parallel_creates_all_at_once() {
        let s = set(3, json!({"podManagementPolicy": "Parallel"}));
        assert_eq!(
            plan(&s, &[], "r1", "r1", now()).steps,
            [create(0, "r1"), create(1, "r1"), create(2, "r1")]
        );
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal() {
        let s = set(1, json!({}));
        let pods = [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r1", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            plan(&s, &refs, "r1", "r1", now()).steps,
            [Step::Delete("web-2".into())]
        );
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition() {
        let s = set(
            3,
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
        );
        let pods = [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r2", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&s, &refs, "r1", "r2", now());
        assert_eq!(p.steps, [Step::Delete("web-1".into())]);
        assert_eq!(p.status.updated_replicas, Some(1));
        assert_eq!(p.status.current_revision.as_deref(), Some("r1"));
        let pods = [pod(0, "r1", true), pod(1, "r2", true), pod(2, "r2", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert!(
            plan(&s, &refs, "r1", "r2", now()).steps.is_empty(),
            "ordinal 0 is below the partition"
        );
        // Recreated below the partition: the current revision.
        let refs: Vec<&Pod> = pods[1..].iter().collect();
        assert_eq!(plan(&s, &refs, "r1", "r2", now()).steps, [create(0, "r1")]);
    }

    #[test]
    fn a_finished_rollout_makes_the_update_revision_current() {
        let s = set(2, json!({}));
        let pods = [pod(0, "r2", true), pod(1, "r2", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&s, &refs, "r1", "r2", now());
        assert!(p.steps.is_empty());
        assert_eq!(p.status.current_revision.as_deref(), Some("r2"));
        assert_eq!(p.status.current_replicas, Some(2));
    }

    #[test]
    fn on_delete_never_deletes_for_updates() {
        let s = set(2, json!({"updateStrategy": {"type": "OnDelete"}}));
        let pods = [pod(0, "r1", true), pod(1, "r1", true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert!(plan(&s, &refs, "r1", "r2", now()).steps.is_empty());
    }
}
