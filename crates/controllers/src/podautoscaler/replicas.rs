//! The replica calculator (`pkg/controller/podautoscaler/replica_calculator.go`'s
//! semantics): from the target's pods, their resource requests and their metrics, how
//! many replicas bring the average to the target,
//! `desired = ceil(current * currentMetric / desiredMetric)`, unless the ratio is within
//! the tolerance.
//!
//! Pods are grouped first: deleted and failed pods are ignored; for cpu, pods that are
//! not ready yet (pending, or just started and not ready) are unready; pods without a
//! metric are missing. Both are then counted conservatively: when scaling up, unready
//! and missing pods are assumed to use nothing; when scaling down, missing pods are
//! assumed to use exactly their target. If that assumption changes the direction, or
//! brings the ratio within the tolerance, the scale stays as it is.

use std::collections::BTreeMap;

/// The default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// How long after a pod starts its cpu may still be initializing
/// (`--horizontal-pod-autoscaler-cpu-initialization-period`).
pub const CPU_INITIALIZATION_PERIOD_SECS: i64 = 300;
/// How long after a pod starts a not-ready pod counts as never having been ready
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`).
pub const INITIAL_READINESS_DELAY_SECS: i64 = 30;

/// A pod of the target, as the calculation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// The pod's name.
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: String,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Its Ready condition: status and last transition (seconds since the epoch).
    pub ready: Option<(bool, Option<i64>)>,
    /// When it started (seconds since the epoch).
    pub start_time: Option<i64>,
    /// The sum of its containers' requests of the resource (milli-units); `Err` names the
    /// first container without one.
    pub request: Result<i64, String>,
}

/// A pod's metric: the sum over its containers (milli-units), when it was measured
/// (seconds since the epoch) and over which window (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// The value, in milli-units.
    pub value: i64,
    /// When measured.
    pub timestamp: i64,
    /// The measuring window.
    pub window: i64,
}

/// What a calculation found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// Replicas proposed.
    pub replicas: i32,
    /// The current utilization (percent of requests), for utilization targets.
    pub utilization: Option<i32>,
    /// The current average value over the pods with metrics (milli-units).
    pub average_value: i64,
    /// When the metrics were taken (the oldest timestamp).
    pub timestamp: i64,
}

/// Why no replica count could be calculated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// The selector found no pods.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// No pod has a metric.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// A container has no request for the resource (utilization targets need them).
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        /// The resource.
        resource: String,
        /// The container.
        container: String,
        /// The pod.
        pod: String,
    },
}

/// How the pods fall for one metric.
#[derive(Debug, Default)]
struct Groups {
    ready: BTreeMap<String, i64>,
    unready: Vec<String>,
    missing: Vec<String>,
}

/// Groups the pods (`groupPods`); `now` in seconds since the epoch.
fn group(pods: &[PodInfo], metrics: &BTreeMap<String, PodMetric>, cpu: bool, now: i64) -> Groups {
    let mut groups = Groups::default();
    for pod in pods {
        if pod.deleting || pod.phase == "Failed" {
            continue;
        }
        if pod.phase == "Pending" {
            groups.unready.push(pod.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&pod.name) else {
            groups.missing.push(pod.name.clone());
            continue;
        };
        if cpu {
            let unready = match (pod.ready, pod.start_time) {
                (None, _) | (_, None) => true,
                (Some((ready, transition)), Some(start)) => {
                    let transition = transition.unwrap_or(start);
                    if start + CPU_INITIALIZATION_PERIOD_SECS > now {
                        // Still initializing: only a sample taken a full window after it
                        // became ready counts.
                        !ready || metric.timestamp < transition + metric.window
                    } else {
                        // Never ready since shortly after it started.
                        !ready && transition < start + INITIAL_READINESS_DELAY_SECS
                    }
                }
            };
            if unready {
                groups.unready.push(pod.name.clone());
                continue;
            }
        }
        groups.ready.insert(pod.name.clone(), metric.value);
    }
    groups
}

/// The rebalanced decision shared by utilization and value targets.
fn decide(
    current_replicas: i32,
    ratio: f64,
    groups: &Groups,
    rebalanced_ratio: impl Fn(&BTreeMap<String, i64>) -> f64,
    assume_missing_down: impl Fn(&str) -> i64,
    tolerance: f64,
) -> i32 {
    if groups.missing.is_empty() && (groups.unready.is_empty() || ratio <= 1.0) {
        if (1.0 - ratio).abs() <= tolerance {
            return current_replicas;
        }
        return (ratio * groups.ready.len() as f64).ceil() as i32;
    }
    let mut values = groups.ready.clone();
    for pod in &groups.missing {
        let assumed = if ratio < 1.0 {
            assume_missing_down(pod)
        } else {
            0
        };
        values.insert(pod.clone(), assumed);
    }
    if ratio > 1.0 {
        for pod in &groups.unready {
            values.insert(pod.clone(), 0);
        }
    }
    let new_ratio = rebalanced_ratio(&values);
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return current_replicas;
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current_replicas)
        || (new_ratio > 1.0 && replicas < current_replicas)
    {
        return current_replicas;
    }
    replicas
}

fn oldest(metrics: &BTreeMap<String, PodMetric>) -> i64 {
    metrics.values().map(|m| m.timestamp).min().unwrap_or(0)
}

/// Replicas for a target utilization (percent of the pods' requests) of `resource`.
pub fn for_utilization(
    resource: &str,
    current_replicas: i32,
    target_utilization: i32,
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    tolerance: f64,
    now: i64,
) -> Result<Recommendation, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let groups = group(pods, metrics, resource == "cpu", now);
    let mut requests = BTreeMap::new();
    for pod in pods {
        match &pod.request {
            Ok(r) => {
                requests.insert(pod.name.clone(), *r);
            }
            Err(container) => {
                return Err(CalcError::MissingRequest {
                    resource: resource.into(),
                    container: container.clone(),
                    pod: pod.name.clone(),
                })
            }
        }
    }
    if groups.ready.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let utilization = |values: &BTreeMap<String, i64>| -> (f64, i64) {
        let used: i64 = values.values().sum();
        let requested: i64 = values
            .keys()
            .map(|p| requests.get(p).copied().unwrap_or(0))
            .sum();
        let percent = if requested > 0 {
            used as f64 * 100.0 / requested as f64
        } else {
            0.0
        };
        (percent, used / values.len().max(1) as i64)
    };
    let (percent, average) = utilization(&groups.ready);
    if requests.values().all(|r| *r == 0) {
        return Err(CalcError::MissingRequest {
            resource: resource.into(),
            container: String::new(),
            pod: pods[0].name.clone(),
        });
    }
    let target = f64::from(target_utilization.max(1));
    let ratio = percent / target;
    let replicas = decide(
        current_replicas,
        ratio,
        &groups,
        |values| utilization(values).0 / target,
        |pod| requests.get(pod).copied().unwrap_or(0) * i64::from(target_utilization) / 100,
        tolerance,
    );
    Ok(Recommendation {
        replicas,
        utilization: Some(percent as i32),
        average_value: average,
        timestamp: oldest(metrics),
    })
}

/// Replicas for a target average value (milli-units per pod) of a pod metric.
pub fn for_average_value(
    resource: &str,
    current_replicas: i32,
    target_average: i64,
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    tolerance: f64,
    now: i64,
) -> Result<Recommendation, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let groups = group(pods, metrics, resource == "cpu", now);
    if groups.ready.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let target = target_average.max(1) as f64;
    let average = |values: &BTreeMap<String, i64>| {
        values.values().sum::<i64>() as f64 / values.len().max(1) as f64
    };
    let current = average(&groups.ready);
    let replicas = decide(
        current_replicas,
        current / target,
        &groups,
        |values| average(values) / target,
        |_| target_average,
        tolerance,
    );
    Ok(Recommendation {
        replicas,
        utilization: None,
        average_value: current as i64,
        timestamp: oldest(metrics),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100_000;

    /// A running pod, ready since long ago, requesting `request` millicores.
    fn pod(name: &str, request: i64) -> PodInfo {
        PodInfo {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            ready: Some((true, Some(NOW - 1000))),
            start_time: Some(NOW - 1000),
            request: Ok(request),
        }
    }

    fn metrics(values: &[(&str, i64)]) -> BTreeMap<String, PodMetric> {
        values
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PodMetric {
                        value: *v,
                        timestamp: NOW - 5,
                        window: 15,
                    },
                )
            })
            .collect()
    }

    fn utilization(current: i32, target: i32, pods: &[PodInfo], m: &[(&str, i64)]) -> i32 {
        for_utilization("cpu", current, target, pods, &metrics(m), TOLERANCE, NOW)
            .unwrap()
            .replicas
    }

    #[test]
    fn desired_is_current_times_the_ratio_rounded_up() {
        // One pod at 250% of its request against a 50% target: ceil(1 * 5) = 5.
        let r = for_utilization(
            "cpu",
            1,
            50,
            &[pod("a", 100)],
            &metrics(&[("a", 250)]),
            TOLERANCE,
            NOW,
        )
        .unwrap();
        assert_eq!(r.replicas, 5);
        assert_eq!(r.utilization, Some(250));
        assert_eq!(r.average_value, 250);
        // Three pods at 20% against 50%: ceil(3 * 0.4) = 2.
        let pods = [pod("a", 100), pod("b", 100), pod("c", 100)];
        assert_eq!(
            utilization(3, 50, &pods, &[("a", 20), ("b", 20), ("c", 20)]),
            2
        );
    }

    #[test]
    fn within_the_tolerance_nothing_changes() {
        let pods = [pod("a", 1000), pod("b", 1000)];
        // 54% against 50%: ratio 1.08, within 0.1.
        assert_eq!(utilization(2, 50, &pods, &[("a", 540), ("b", 540)]), 2);
        // 56% against 50%: ratio 1.12, outside: ceil(2 * 1.12) = 3.
        assert_eq!(utilization(2, 50, &pods, &[("a", 560), ("b", 560)]), 3);
        // 46% against 50%: 0.92, within.
        assert_eq!(utilization(2, 50, &pods, &[("a", 460), ("b", 460)]), 2);
    }

    #[test]
    fn missing_metrics_count_as_nothing_when_scaling_up() {
        let pods = [pod("a", 100), pod("b", 100)];
        // a at 200% (ratio 4), b missing -> assumed 0: (200+0)/200 = 100% -> ratio 2,
        // ceil(2 * 2) = 4.
        assert_eq!(utilization(2, 50, &pods, &[("a", 200)]), 4);
    }

    #[test]
    fn missing_metrics_count_as_the_target_when_scaling_down() {
        let pods = [pod("a", 100), pod("b", 100), pod("c", 100), pod("d", 100)];
        // Three at 10% (ratio 0.2), one missing -> assumed at 50%:
        // (10+10+10+50)/400 = 20% -> ratio 0.4, ceil(4 * 0.4) = 2.
        assert_eq!(
            utilization(4, 50, &pods, &[("a", 10), ("b", 10), ("c", 10)]),
            2
        );
        // One at 40% (0.8) and one missing: (40+50)/200 = 45%, ratio 0.9: within the
        // tolerance after rebalancing, so no change.
        assert_eq!(
            utilization(2, 50, &[pod("a", 100), pod("b", 100)], &[("a", 40)]),
            2
        );
    }

    #[test]
    fn unready_pods_hold_back_a_scale_up() {
        let mut starting = pod("b", 100);
        starting.phase = "Pending".into();
        let pods = [pod("a", 100), starting];
        // a at 100% (ratio 2); b pending, assumed 0: 50% -> ratio 1, no change.
        assert_eq!(utilization(2, 50, &pods, &[("a", 100)]), 2);
        // Scaling down, unready pods are simply left out: a at 10% -> ceil(1 * 0.2) = 1.
        assert_eq!(utilization(2, 50, &pods, &[("a", 10)]), 1);
        // A pod that became ready less than a window before its sample is unready for cpu.
        let mut fresh = pod("c", 100);
        fresh.start_time = Some(NOW - 60);
        fresh.ready = Some((true, Some(NOW - 10)));
        let pods = [pod("a", 100), fresh];
        assert_eq!(utilization(2, 50, &pods, &[("a", 100), ("c", 300)]), 2);
        // For memory, readiness does not matter.
        let r = for_utilization(
            "memory",
            2,
            50,
            &pods,
            &metrics(&[("a", 100), ("c", 300)]),
            TOLERANCE,
            NOW,
        )
        .unwrap();
        assert_eq!(r.replicas, 8);
    }

    #[test]
    fn deleted_and_failed_pods_are_ignored() {
        let mut gone = pod("b", 100);
        gone.deleting = true;
        let mut failed = pod("c", 100);
        failed.phase = "Failed".into();
        assert_eq!(
            utilization(3, 50, &[pod("a", 100), gone, failed], &[("a", 100)]),
            2
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        let mut no_request = pod("a", 0);
        no_request.request = Err("app".into());
        let err = for_utilization(
            "cpu",
            1,
            50,
            &[no_request],
            &metrics(&[("a", 1)]),
            TOLERANCE,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing request for cpu in container app of Pod a"
        );
        assert_eq!(
            for_utilization("cpu", 1, 50, &[], &BTreeMap::new(), TOLERANCE, NOW),
            Err(CalcError::NoPods)
        );
        assert_eq!(
            for_utilization(
                "cpu",
                1,
                50,
                &[pod("a", 1)],
                &BTreeMap::new(),
                TOLERANCE,
                NOW
            ),
            Err(CalcError::NoMetrics)
        );
    }

    #[test]
    fn average_values_compare_per_pod() {
        let pods = [pod("a", 0), pod("b", 0)];
        // 300Mi-ish average against 100: ratio 3 -> 6 replicas.
        let r = for_average_value(
            "memory",
            2,
            100,
            &pods,
            &metrics(&[("a", 200), ("b", 400)]),
            TOLERANCE,
            NOW,
        )
        .unwrap();
        assert_eq!((r.replicas, r.average_value), (6, 300));
        // Within the tolerance: no change.
        let r = for_average_value(
            "memory",
            2,
            100,
            &pods,
            &metrics(&[("a", 105), ("b", 100)]),
            TOLERANCE,
            NOW,
        )
        .unwrap();
        assert_eq!(r.replicas, 2);
    }
}
