//! The arithmetic of a rollout, free of I/O (`deployment/util/deployment_util.go`,
//! `rolling.go`): surge and unavailability bounds, how far to scale the new ReplicaSet up
//! and the old ones down, the template hash, revisions.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label that ties pods to the template that made them.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation with a ReplicaSet's (and the Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation listing revisions a ReplicaSet had before a rollback reused it.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Annotation with the Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation with replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations of a Deployment not copied onto its ReplicaSets (`skipCopyAnnotation`).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Whether a Deployment annotation is copied onto its ReplicaSets.
pub fn copied_annotation(key: &str) -> bool {
    !NOT_COPIED.contains(&key)
}

/// Resolves an int-or-percent against `total`, rounding up or down (`GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let v = pct * f64::from(total) / 100.0;
            if round_up {
                v.ceil() as i32
            } else {
                v.floor() as i32
            }
        }
    }
}

/// `(maxSurge, maxUnavailable)` of a rolling update; both zero becomes unavailable 1
/// (`ResolveFenceposts`). Defaults are 25% each.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = replicas(d);
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&quarter);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&quarter);
    let surge = scaled_value(Some(surge), desired, true);
    let unavailable = scaled_value(Some(unavailable), desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// `spec.replicas` of a Deployment (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet.
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The new ReplicaSet's target for this step of a rolling update (`NewRSNewReplicas`).
pub fn new_rs_target(desired: i32, max_surge: i32, new_replicas: i32, all_replicas: i32) -> i32 {
    let max_total = desired + max_surge;
    if all_replicas >= max_total {
        return new_replicas;
    }
    let scale_up = (max_total - all_replicas)
        .min(desired - new_replicas)
        .max(0);
    new_replicas + scale_up
}

/// How many old pods may go now (`reconcileOldReplicaSets`): the total above
/// `desired - maxUnavailable`, less the new ReplicaSet's unavailable pods.
pub fn old_scale_down_budget(
    desired: i32,
    max_unavailable: i32,
    all_replicas: i32,
    new_replicas: i32,
    new_available: i32,
) -> i32 {
    let min_available = desired - max_unavailable;
    let new_unavailable = new_replicas - new_available;
    all_replicas - min_available - new_unavailable
}

/// The hash that names a template's ReplicaSet: FNV-32a over the template (with the
/// collision count), written with the consonant-and-digit alphabet of `SafeEncodeString`.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    crate::history::safe_hash(
        &serde_json::to_vec(template).unwrap_or_default(),
        collision_count,
    )
}

/// Whether a ReplicaSet's template equals the Deployment's, ignoring the hash label
/// (`EqualIgnoreHash`).
pub fn same_template(rs_template: Option<&PodTemplateSpec>, d_template: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        if let Some(meta) = t.metadata.as_mut() {
            if meta.labels.as_ref().is_some_and(|l| l.is_empty()) {
                meta.labels = None;
            }
        }
        t
    };
    rs_template.is_some_and(|rs| strip(rs) == strip(d_template))
}

/// A ReplicaSet's revision annotation as a number (0 when absent).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// An integer annotation of a ReplicaSet (`desired-replicas`, `max-replicas`).
pub fn annotated(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
}

/// Proportional scaling (`scale` of the deployment controller's `sync.go`): the sizes of
/// the active ReplicaSets, given as `(replicas, max-replicas annotation)` largest first,
/// when a Deployment scaled mid-rollout to `desired` may have `desired + surge` pods. Each
/// grows (or shrinks) by its share of what it had under the annotated total, and what
/// rounding leaves goes to the first. `status_replicas` stands in for a missing
/// annotation.
pub fn proportional_sizes(
    active: &[(i32, Option<i32>)],
    desired: i32,
    surge: i32,
    status_replicas: i32,
) -> Vec<i32> {
    let allowed = desired + surge;
    let mut sizes: Vec<i32> = active.iter().map(|a| a.0).collect();
    let to_add = allowed - sizes.iter().sum::<i32>();
    if to_add == 0 {
        return sizes;
    }
    let mut added = 0;
    for (size, &(replicas, max)) in sizes.iter_mut().zip(active) {
        if replicas == 0 || added == to_add {
            continue;
        }
        let fraction = if desired == 0 {
            -replicas
        } else {
            let annotated = max.unwrap_or(status_replicas).max(1);
            (f64::from(replicas) * f64::from(allowed) / f64::from(annotated)).round() as i32
                - replicas
        };
        let left = to_add - added;
        let share = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        *size += share;
        added += share;
    }
    if let Some(first) = sizes.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_mid_rollout_spreads_replicas_proportionally() {
        // deployment.go's proportional scaling: 10 replicas, maxSurge 3, old 8 and new 5
        // (annotated max 13) scaled to 30: the old gets 20, the new 13.
        assert_eq!(
            proportional_sizes(&[(8, Some(13)), (5, Some(13))], 30, 3, 13),
            [20, 13]
        );
        // Down again to 10: back to 8 and 5.
        assert_eq!(
            proportional_sizes(&[(20, Some(33)), (13, Some(33))], 10, 3, 33),
            [8, 5]
        );
        // Rounding leftovers go to the first.
        assert_eq!(
            proportional_sizes(&[(1, Some(3)), (1, Some(3)), (1, Some(3))], 4, 0, 3),
            [2, 1, 1]
        );
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "spec": {"replicas": replicas, "selector": {},
                "template": {},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}))
        .unwrap()
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        let d = deployment(
            10,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        assert_eq!(fenceposts(&d), (3, 2));
        let d = deployment(3, IntOrString::Int(0), IntOrString::String("10%".into()));
        assert_eq!(fenceposts(&d), (0, 1));
        let d = deployment(4, IntOrString::Int(2), IntOrString::Int(0));
        assert_eq!(fenceposts(&d), (2, 0));
    }

    #[test]
    fn rolling_steps_respect_surge_and_availability() {
        // 3 desired, surge 1: the new ReplicaSet may grow to 1 while 3 old pods run.
        assert_eq!(new_rs_target(3, 1, 0, 3), 1);
        assert_eq!(new_rs_target(3, 1, 1, 4), 1);
        assert_eq!(new_rs_target(3, 1, 3, 3), 3);
        // unavailable 0: old pods may go only as new ones become available.
        assert_eq!(old_scale_down_budget(3, 0, 4, 1, 0), 0);
        assert_eq!(old_scale_down_budget(3, 0, 4, 1, 1), 1);
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let a: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        let mut b = a.clone();
        b.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
        assert_eq!(template_hash(&a, None), template_hash(&a, None));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
