//! The decisions of one Job sync, as pure functions of the Job, its pods and the time:
//! which finished pods to count (through `uncountedTerminatedPods` and the
//! `batch.kubernetes.io/job-tracking` finalizer), which pods to create or delete, the
//! conditions (`SuccessCriteriaMet`/`FailureTarget`, then `Complete`/`Failed` once no pod
//! is left running, as `syncJob` does since Kubernetes 1.31) and the new status.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::events::EventType;
use crate::pod_util::{deletion_rank, has_finalizer, is_ready, is_terminal, phase, until};

/// The finalizer that keeps a Job's finished pods until the Job counted them.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Why a Job failed: the reason and message of its `FailureTarget` and `Failed` conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `BackoffLimitExceeded`, `DeadlineExceeded` or `PodFailurePolicy`.
    pub reason: &'static str,
    /// The human-readable message.
    pub message: Cow<'static, str>,
}

/// `backoffLimit` was passed.
pub const BACKOFF_LIMIT_EXCEEDED: Failure = Failure {
    reason: "BackoffLimitExceeded",
    message: Cow::Borrowed("Job has reached the specified backoff limit"),
};
/// `activeDeadlineSeconds` was passed.
pub const DEADLINE_EXCEEDED: Failure = Failure {
    reason: "DeadlineExceeded",
    message: Cow::Borrowed("Job was active longer than specified deadline"),
};
/// A `podFailurePolicy` rule with the `FailJob` action matched a failed pod.
pub const POD_FAILURE_POLICY: &str = "PodFailurePolicy";

/// What a `podFailurePolicy` rule decides for a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Fail the whole Job, with this message.
    FailJob(String),
    /// Do not count the pod against `backoffLimit`.
    Ignore,
    /// Count it, as without a policy.
    Count,
}

/// The first `podFailurePolicy` rule of `job` matching the failed `pod`, as the Job
/// controller evaluates them (exit codes of terminated containers other than 0, or pod
/// conditions); `None` when no rule matches.
pub fn policy_action(job: &Job, pod: &Pod) -> Option<PolicyAction> {
    let rules = job
        .spec
        .as_ref()?
        .pod_failure_policy
        .as_ref()?
        .rules
        .clone();
    let pod_ref = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    let status = pod.status.clone().unwrap_or_default();
    let containers: Vec<_> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    for (index, rule) in rules.iter().enumerate() {
        let matched = if let Some(codes) = &rule.on_exit_codes {
            containers.iter().find_map(|c| {
                if codes.container_name.as_deref().is_some_and(|n| n != c.name) {
                    return None;
                }
                let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                let listed = codes.values.contains(&code);
                let hit = code != 0
                    && match codes.operator.as_str() {
                        "In" => listed,
                        "NotIn" => !listed,
                        _ => false,
                    };
                hit.then(|| {
                    format!(
                        "Container {} for pod {pod_ref} failed with exit code {code} matching {} rule at index {index}",
                        c.name, rule.action
                    )
                })
            })
        } else {
            rule.on_pod_conditions.iter().flatten().find_map(|pattern| {
                let want = pattern
                    .status
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("True");
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == pattern.type_ && c.status == want)
                    .then(|| {
                        format!(
                            "Pod {pod_ref} has condition {} matching {} rule at index {index}",
                            pattern.type_, rule.action
                        )
                    })
            })
        };
        if let Some(message) = matched {
            return Some(match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(message),
                "Ignore" => PolicyAction::Ignore,
                _ => PolicyAction::Count,
            });
        }
    }
    None
}
const COMPLETIONS_REACHED: (&str, &str) = (
    "CompletionsReached",
    "Reached expected number of succeeded pods",
);

/// What one sync decided.
#[derive(Debug, Default)]
pub struct Decision {
    /// The status to write (before any pod is touched).
    pub status: JobStatus,
    /// Pods whose tracking finalizer may go once `status` is written.
    pub remove_finalizers: Vec<String>,
    /// Pods to create: their completion index for Indexed Jobs, `None` otherwise.
    pub create: Vec<Option<i32>>,
    /// Active pods to delete.
    pub delete: Vec<String>,
    /// Events to record once `status` is written.
    pub events: Vec<(EventType, &'static str, String)>,
    /// When to look again even if nothing changes (deadline, backoff).
    pub requeue: Option<Duration>,
}

/// Tunables of the decision.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Delay before replacing the first failed pod, doubled for each further failure
    /// (`DefaultJobPodFailureBackOff`, 10s).
    pub backoff_base: Duration,
    /// The longest such delay (`MaxJobPodFailureBackOff`, 6 min).
    pub backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(360),
        }
    }
}

/// Whether a condition of `type_` is True.
pub fn has_condition(status: Option<&JobStatus>, type_: &str) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether the Job finished (`Complete` or `Failed`).
pub fn is_finished(job: &Job) -> bool {
    let s = job.status.as_ref();
    has_condition(s, "Complete") || has_condition(s, "Failed")
}

/// When the Job finished: its `Complete` or `Failed` condition's transition.
pub fn finished_at(job: &Job) -> Option<jiff::Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// The completion index of a pod, from its annotation.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

/// Parses `completedIndexes` (`"1,3-5"`).
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as `completedIndexes` does: ranges of 3 or more as `a-b`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        match end - start {
            0 => parts.push(start.to_string()),
            1 => parts.push(format!("{start},{end}")),
            _ => parts.push(format!("{start}-{end}")),
        }
    }
    parts.join(",")
}

fn condition(type_: &str, reason: &str, message: &str, now: jiff::Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition, keeping its transition time when its status does not change.
fn set_condition(conditions: &mut Vec<JobCondition>, new: JobCondition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status => {
            if c.reason != new.reason || c.message != new.message {
                c.reason = new.reason;
                c.message = new.message;
                c.last_probe_time = new.last_probe_time;
            }
        }
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

fn finished_time(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

/// Decides one sync of `job` over its pods at `now`.
pub fn decide(job: &Job, pods: &[&Pod], now: jiff::Timestamp, config: Config) -> Decision {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let suspended = spec.suspend == Some(true);
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let finished = is_finished(job);
    let has = |conditions: &[JobCondition], t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let failing = has(&conditions, "FailureTarget");
    let succeeding = has(&conditions, "SuccessCriteriaMet");
    let mut d = Decision::default();

    // Counting. A uid in uncountedTerminatedPods whose pod lost its finalizer (or is gone)
    // is counted now; finished pods still holding the finalizer become uncounted first.
    let uncounted = old.uncounted_terminated_pods.clone().unwrap_or_default();
    let tracked: HashSet<&str> = pods
        .iter()
        .filter(|p| has_finalizer(&p.metadata, TRACKING_FINALIZER))
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    let mut succeeded = old.succeeded.unwrap_or(0);
    let mut failed = old.failed.unwrap_or(0);
    let mut pending_succeeded: Vec<String> = Vec::new();
    let mut pending_failed: Vec<String> = Vec::new();
    for uid in uncounted.succeeded.iter().flatten() {
        if tracked.contains(uid.as_str()) {
            pending_succeeded.push(uid.clone());
        } else {
            succeeded += 1;
        }
    }
    for uid in uncounted.failed.iter().flatten() {
        if tracked.contains(uid.as_str()) {
            pending_failed.push(uid.clone());
        } else {
            failed += 1;
        }
    }
    let mut completed: BTreeSet<i32> =
        parse_indexes(old.completed_indexes.as_deref().unwrap_or(""));
    // A pod the Job itself removes (finished, failing, suspended) is not a failure.
    let expected_removal = finished || failing || succeeding || suspended;
    for pod in pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let holds = has_finalizer(&pod.metadata, TRACKING_FINALIZER);
        let in_range = |i: i32| completions.is_none_or(|c| i < c);
        if indexed && phase(pod) == "Succeeded" {
            if let Some(i) = completion_index(pod).filter(|i| in_range(*i)) {
                completed.insert(i);
            }
            if holds {
                d.remove_finalizers.push(name);
            }
            continue;
        }
        if !holds {
            continue;
        }
        if pending_succeeded.contains(&uid) || pending_failed.contains(&uid) {
            d.remove_finalizers.push(name);
            continue;
        }
        if phase(pod) == "Succeeded" {
            pending_succeeded.push(uid);
            d.remove_finalizers.push(name);
        } else if phase(pod) == "Failed" && policy_action(job, pod) == Some(PolicyAction::Ignore) {
            // Not counted against the backoff limit.
            d.remove_finalizers.push(name);
        } else if phase(pod) == "Failed"
            || (pod.metadata.deletion_timestamp.is_some() && !expected_removal)
        {
            pending_failed.push(uid);
            d.remove_finalizers.push(name);
        } else if finished || (pod.metadata.deletion_timestamp.is_some() && expected_removal) {
            // Not counted: the Job let go of it.
            d.remove_finalizers.push(name);
        }
    }
    if indexed {
        succeeded = completed.len() as i32;
    }
    let succeeded_total = succeeded + pending_succeeded.len() as i32;
    let failed_total = failed + pending_failed.len() as i32;

    let active: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_some())
        .count() as i32;
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;

    let mut start_time = old.start_time.clone();
    let mut completion_time = old.completion_time.clone();
    let mut active_count = active.len() as i32;

    if !finished {
        // Suspension.
        if suspended {
            if !has(&conditions, "Suspended") {
                set_condition(
                    &mut conditions,
                    condition("Suspended", "JobSuspended", "Job suspended", now),
                );
                d.events
                    .push((EventType::Normal, "Suspended", "Job suspended".into()));
            }
        } else {
            if has(&conditions, "Suspended") {
                let mut c = condition("Suspended", "JobResumed", "Job resumed", now);
                c.status = "False".into();
                set_condition(&mut conditions, c);
                d.events
                    .push((EventType::Normal, "Resumed", "Job resumed".into()));
                start_time = Some(Time(now));
            }
            if start_time.is_none() {
                start_time = Some(Time(now));
            }
        }

        // Success and failure criteria.
        let success_reached = succeeding
            || match (indexed, completions) {
                (true, Some(c)) => completed.len() as i32 >= c,
                (_, Some(c)) => succeeded_total >= c,
                (_, None) => succeeded_total > 0 && active.is_empty(),
            };
        let mut failure = conditions
            .iter()
            .find(|c| c.type_ == "FailureTarget" && c.status == "True")
            .map(|c| match c.reason.as_deref() {
                Some(r) if r == DEADLINE_EXCEEDED.reason => DEADLINE_EXCEEDED,
                Some(POD_FAILURE_POLICY) => Failure {
                    reason: POD_FAILURE_POLICY,
                    message: Cow::Owned(c.message.clone().unwrap_or_default()),
                },
                _ => BACKOFF_LIMIT_EXCEEDED,
            });
        // A failed pod a FailJob rule matches fails the Job at once.
        let fail_job =
            pods.iter().filter(|p| phase(p) == "Failed").find_map(|p| {
                match policy_action(job, p) {
                    Some(PolicyAction::FailJob(message)) => Some(message),
                    _ => None,
                }
            });
        if failure.is_none() && !success_reached {
            if let Some(message) = fail_job {
                failure = Some(Failure {
                    reason: POD_FAILURE_POLICY,
                    message: Cow::Owned(message),
                });
            } else if failed_total > backoff_limit {
                failure = Some(BACKOFF_LIMIT_EXCEEDED);
            } else if let (Some(ads), Some(start), false) =
                (spec.active_deadline_seconds, &start_time, suspended)
            {
                let deadline = start.0 + jiff::SignedDuration::from_secs(ads);
                if now >= deadline {
                    failure = Some(DEADLINE_EXCEEDED);
                } else {
                    d.requeue = Some(until(now, deadline));
                }
            }
        }
        let settled =
            |d: &Decision| active.is_empty() && terminating == 0 && d.remove_finalizers.is_empty();
        if let Some(failure) = failure {
            if !failing {
                set_condition(
                    &mut conditions,
                    condition("FailureTarget", failure.reason, &failure.message, now),
                );
            }
            d.delete = active
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            active_count = 0;
            if active.is_empty()
                && terminating == 0
                && pending_failed.is_empty()
                && pending_succeeded.is_empty()
            {
                set_condition(
                    &mut conditions,
                    condition("Failed", failure.reason, &failure.message, now),
                );
                d.events.push((
                    EventType::Warning,
                    failure.reason,
                    failure.message.to_string(),
                ));
            }
        } else if success_reached {
            if !succeeding {
                set_condition(
                    &mut conditions,
                    condition(
                        "SuccessCriteriaMet",
                        COMPLETIONS_REACHED.0,
                        COMPLETIONS_REACHED.1,
                        now,
                    ),
                );
            }
            d.delete = active
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            active_count = 0;
            if settled(&d) && pending_failed.is_empty() && pending_succeeded.is_empty() {
                set_condition(
                    &mut conditions,
                    condition(
                        "Complete",
                        COMPLETIONS_REACHED.0,
                        COMPLETIONS_REACHED.1,
                        now,
                    ),
                );
                completion_time = Some(Time(now));
                d.events
                    .push((EventType::Normal, "Completed", "Job completed".into()));
            }
        } else if suspended {
            d.delete = active
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            active_count = 0;
        } else {
            manage_pods(
                &mut d,
                &spec,
                indexed,
                parallelism,
                succeeded_total,
                &completed,
                &active,
            );
            if !d.create.is_empty() && failed_total > 0 {
                // Replacements of failed pods wait out an exponential backoff.
                let delay = config
                    .backoff_base
                    .saturating_mul(1 << (failed_total - 1).clamp(0, 16) as u32)
                    .min(config.backoff_max);
                let last = pods
                    .iter()
                    .filter(|p| phase(p) == "Failed")
                    .filter_map(|p| finished_time(p))
                    .max();
                if let Some(last) = last {
                    let ready_at = last + jiff::SignedDuration::try_from(delay).unwrap_or_default();
                    if now < ready_at {
                        d.create.clear();
                        let wait = until(now, ready_at);
                        d.requeue = Some(d.requeue.map_or(wait, |r| r.min(wait)));
                    }
                }
            }
        }
    }

    let positive = |n: i32| (n > 0).then_some(n);
    d.status = JobStatus {
        active: positive(active_count),
        ready: Some(ready),
        terminating: Some(terminating),
        succeeded: positive(if indexed {
            completed.len() as i32
        } else {
            succeeded
        }),
        failed: positive(failed),
        start_time,
        completion_time,
        completed_indexes: (indexed && !completed.is_empty()).then(|| format_indexes(&completed)),
        failed_indexes: old.failed_indexes.clone(),
        conditions: (!conditions.is_empty()).then_some(conditions),
        uncounted_terminated_pods: Some(UncountedTerminatedPods {
            succeeded: (!pending_succeeded.is_empty()).then_some(pending_succeeded),
            failed: (!pending_failed.is_empty()).then_some(pending_failed),
        }),
    };
    d
}

/// Which pods to create or delete so that `parallelism` (bounded by the completions left)
/// pods run (`manageJob`).
fn manage_pods(
    d: &mut Decision,
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    indexed: bool,
    parallelism: i32,
    succeeded: i32,
    completed: &BTreeSet<i32>,
    active: &[&Pod],
) {
    let active_n = active.len() as i32;
    if indexed {
        let completions = spec.completions.unwrap_or(1);
        let mut seen: HashSet<i32> = HashSet::new();
        let mut keep: Vec<&Pod> = Vec::new();
        let mut ranked: Vec<&Pod> = active.to_vec();
        // Keep the best pod of each index; duplicates and out-of-range indexes go.
        ranked.sort_by_key(|p| std::cmp::Reverse(deletion_rank(p)));
        for pod in ranked {
            match completion_index(pod) {
                Some(i) if i < completions && !completed.contains(&i) && seen.insert(i) => {
                    keep.push(pod)
                }
                _ => d.delete.extend(pod.metadata.name.clone()),
            }
        }
        let remaining = completions - completed.len() as i32;
        let want = parallelism.min(remaining).max(0);
        let kept = keep.len() as i32;
        if kept > want {
            keep.sort_by_key(|p| deletion_rank(p));
            d.delete.extend(
                keep.iter()
                    .take((kept - want) as usize)
                    .filter_map(|p| p.metadata.name.clone()),
            );
        } else {
            let free = (0..completions).filter(|i| !completed.contains(i) && !seen.contains(i));
            d.create = free.take((want - kept) as usize).map(Some).collect();
        }
        return;
    }
    let want = match spec.completions {
        Some(c) => parallelism.min(c - succeeded).max(0),
        None if succeeded > 0 => active_n,
        None => parallelism,
    };
    if active_n > want {
        let mut ranked: Vec<&Pod> = active.to_vec();
        ranked.sort_by_key(|p| deletion_rank(p));
        d.delete = ranked
            .iter()
            .take((active_n - want) as usize)
            .filter_map(|p| p.metadata.name.clone())
            .collect();
    } else {
        d.create = vec![None; (want - active_n) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value, status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "default", "uid": "job-uid"},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str, index: Option<i32>, finalizer: bool) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                "annotations": {}, "finalizers": []},
            "status": {"phase": phase},
        });
        if let Some(i) = index {
            v["metadata"]["annotations"][COMPLETION_INDEX] = json!(i.to_string());
        }
        if finalizer {
            v["metadata"]["finalizers"] = json!([TRACKING_FINALIZER]);
        }
        serde_json::from_value(v).unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2025-01-01T00:00:00Z".parse().unwrap()
    }

    fn types(d: &Decision) -> Vec<String> {
        d.status
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.clone())
            .collect()
    }

    #[test]
    fn creates_up_to_parallelism_bounded_by_remaining_completions() {
        let j = job(json!({"completions": 3, "parallelism": 2}), json!({}));
        let d = decide(&j, &[], now(), Config::default());
        assert_eq!(d.create.len(), 2);
        assert!(d.status.start_time.is_some());
        let done = pod("a", "Succeeded", None, false);
        let running = pod("b", "Running", None, true);
        let j = job(
            json!({"completions": 3, "parallelism": 2}),
            json!({"succeeded": 2}),
        );
        let d = decide(&j, &[&done, &running], now(), Config::default());
        assert_eq!(d.create.len(), 0, "one left to do and one running");
    }

    #[test]
    fn finished_pods_are_counted_through_uncounted_then_complete() {
        let spec = json!({"completions": 1, "parallelism": 1});
        let p = pod("a", "Succeeded", None, true);
        let d = decide(
            &job(spec.clone(), json!({})),
            &[&p],
            now(),
            Config::default(),
        );
        assert_eq!(d.remove_finalizers, ["a"]);
        assert_eq!(
            d.status
                .uncounted_terminated_pods
                .as_ref()
                .unwrap()
                .succeeded,
            Some(vec!["uid-a".to_owned()])
        );
        assert_eq!(
            d.status.succeeded, None,
            "not counted before the finalizer goes"
        );
        assert_eq!(types(&d), ["SuccessCriteriaMet"]);
        // Next sync: the finalizer is gone, the pod is counted and the Job completes.
        let status = serde_json::to_value(&d.status).unwrap();
        let p = pod("a", "Succeeded", None, false);
        let d = decide(&job(spec, status), &[&p], now(), Config::default());
        assert_eq!(d.status.succeeded, Some(1));
        assert_eq!(types(&d), ["SuccessCriteriaMet", "Complete"]);
        assert!(d.status.completion_time.is_some());
        assert_eq!(d.events[0].1, "Completed");
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job() {
        let spec = json!({"completions": 1, "backoffLimit": 1});
        let at_limit = decide(
            &job(spec.clone(), json!({"failed": 1})),
            &[],
            now(),
            Config::default(),
        );
        assert!(
            types(&at_limit).is_empty(),
            "backoffLimit failures are allowed"
        );
        assert_eq!(at_limit.create.len(), 1);
        let a = pod("a", "Failed", None, false);
        let b = pod("b", "Failed", None, true);
        let d = decide(
            &job(spec.clone(), json!({"failed": 1})),
            &[&a, &b],
            now(),
            Config::default(),
        );
        assert_eq!(types(&d), ["FailureTarget"]);
        assert!(d.create.is_empty());
        let status = serde_json::to_value(&d.status).unwrap();
        let b = pod("b", "Failed", None, false);
        let d = decide(&job(spec, status), &[&a, &b], now(), Config::default());
        assert_eq!(d.status.failed, Some(2));
        assert_eq!(types(&d), ["FailureTarget", "Failed"]);
        let failed = d.status.conditions.as_ref().unwrap()[1].clone();
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    }

    #[test]
    fn pod_failure_policy_fails_the_job_or_ignores_the_pod() {
        let spec = json!({"completions": 1, "backoffLimit": 6, "template": {},
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]}});
        let mut exited = pod("a", "Failed", None, true);
        exited.metadata.namespace = Some("default".into());
        exited.status = Some(
            serde_json::from_value(json!({"phase": "Failed",
            "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 42}}}]}))
            .unwrap(),
        );
        let d = decide(
            &job(spec.clone(), json!({})),
            &[&exited],
            now(),
            Config::default(),
        );
        let target = d.status.conditions.as_ref().unwrap()[0].clone();
        assert_eq!(target.type_, "FailureTarget");
        assert_eq!(target.reason.as_deref(), Some(POD_FAILURE_POLICY));
        assert_eq!(
            target.message.as_deref(),
            Some("Container main for pod default/a failed with exit code 42 matching FailJob rule at index 0")
        );
        // Once the pod is counted, the Job fails with the same reason.
        let status = serde_json::to_value(&d.status).unwrap();
        exited.metadata.finalizers = None;
        let d = decide(
            &job(spec.clone(), status),
            &[&exited],
            now(),
            Config::default(),
        );
        assert_eq!(types(&d), ["FailureTarget", "Failed"]);
        assert_eq!(
            d.status.conditions.as_ref().unwrap()[1].reason.as_deref(),
            Some(POD_FAILURE_POLICY)
        );

        // Another exit code: counted against the backoff limit as usual.
        let mut other = exited.clone();
        other.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        other
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .state
            .as_mut()
            .unwrap()
            .terminated
            .as_mut()
            .unwrap()
            .exit_code = 1;
        let d = decide(
            &job(spec.clone(), json!({})),
            &[&other],
            now(),
            Config::default(),
        );
        assert!(types(&d).is_empty());
        assert_eq!(
            d.status
                .uncounted_terminated_pods
                .unwrap()
                .failed
                .unwrap()
                .len(),
            1
        );

        // A disrupted pod is ignored: not a failure at all.
        let mut disrupted = pod("b", "Failed", None, true);
        disrupted.status = Some(
            serde_json::from_value(json!({"phase": "Failed",
            "conditions": [{"type": "DisruptionTarget", "status": "True"}]}))
            .unwrap(),
        );
        let d = decide(
            &job(spec, json!({})),
            &[&disrupted],
            now(),
            Config::default(),
        );
        assert!(types(&d).is_empty());
        assert!(d.status.uncounted_terminated_pods.unwrap().failed.is_none());
        assert_eq!(d.status.failed, None);
        assert_eq!(d.remove_finalizers, vec!["b".to_string()]);
    }

    #[test]
    fn replacements_of_failed_pods_wait_for_the_backoff() {
        let mut a = pod("a", "Failed", None, false);
        a.status = Some(
            serde_json::from_value(json!({"phase": "Failed", "containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "finishedAt": "2024-12-31T23:59:55Z"}}}]}))
            .unwrap(),
        );
        let j = job(
            json!({"completions": 1, "backoffLimit": 3}),
            json!({"failed": 1}),
        );
        let d = decide(&j, &[&a], now(), Config::default());
        assert!(d.create.is_empty());
        assert!(d.requeue.unwrap() <= Duration::from_secs(6));
        let later = now() + jiff::SignedDuration::from_secs(6);
        assert_eq!(decide(&j, &[&a], later, Config::default()).create.len(), 1);
    }

    #[test]
    fn the_active_deadline_fails_the_job_and_deletes_its_pods() {
        let spec = json!({"completions": 1, "activeDeadlineSeconds": 10});
        let p = pod("a", "Running", None, true);
        let d = decide(
            &job(spec.clone(), json!({"startTime": "2024-12-31T23:59:55Z"})),
            &[&p],
            now(),
            Config::default(),
        );
        assert!(d.delete.is_empty());
        assert!(d.requeue.unwrap() <= Duration::from_secs(6));
        let d = decide(
            &job(spec, json!({"startTime": "2024-12-31T23:59:40Z"})),
            &[&p],
            now(),
            Config::default(),
        );
        assert_eq!(d.delete, ["a"]);
        assert_eq!(types(&d), ["FailureTarget"]);
        assert_eq!(
            d.status.conditions.unwrap()[0].reason.as_deref(),
            Some("DeadlineExceeded")
        );
    }

    #[test]
    fn indexed_jobs_create_missing_indexes_and_report_completed_ones() {
        let spec = json!({"completions": 5, "parallelism": 3, "completionMode": "Indexed"});
        let done = pod("a", "Succeeded", Some(0), false);
        let done2 = pod("a2", "Succeeded", Some(2), true);
        let running = pod("b", "Running", Some(1), true);
        let d = decide(
            &job(spec, json!({})),
            &[&done, &done2, &running],
            now(),
            Config::default(),
        );
        assert_eq!(d.create, [Some(3), Some(4)]);
        assert_eq!(d.status.completed_indexes.as_deref(), Some("0,2"));
        assert_eq!(d.status.succeeded, Some(2));
        assert_eq!(d.remove_finalizers, ["a2"]);
    }

    #[test]
    fn suspended_jobs_delete_active_pods() {
        let p = pod("a", "Running", None, true);
        let d = decide(
            &job(json!({"completions": 2, "suspend": true}), json!({})),
            &[&p],
            now(),
            Config::default(),
        );
        assert_eq!(d.delete, ["a"]);
        assert!(d.create.is_empty());
        assert_eq!(types(&d), ["Suspended"]);
        assert!(d.status.start_time.is_none());
    }

    #[test]
    fn indexes_round_trip() {
        let set = parse_indexes("0-2,4,6,7");
        assert_eq!(set.len(), 6);
        assert_eq!(format_indexes(&set), "0-2,4,6,7");
    }
}
