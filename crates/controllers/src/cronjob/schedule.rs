//! The decisions of one CronJob sync (`syncCronJob`), as pure functions of the CronJob,
//! its Jobs and the time `now` (the controller's clock, injected): which scheduled time is
//! due, whether the concurrency policy lets it start, which Jobs fall out of the history
//! limits, and the status. Schedules are standard five-field cron expressions (and
//! `@hourly`-style nicknames) parsed by `croner`, read in `spec.timeZone` or UTC.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::events::EventType;
use crate::job::sync::{finished_at, has_condition, is_finished};
use crate::pod_util::until;

/// The annotation with the time a scheduled Job was due (RFC 3339).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// The annotation kubectl puts on a Job made with `kubectl create job --from=cronjob/...`.
pub const INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";
/// Beyond this many missed start times the controller warns (`TooManyMissedTimes`).
const MAX_MISSED: usize = 100;

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("unparseable schedule {schedule:?}: {message}")]
    Schedule {
        /// The expression.
        schedule: String,
        /// The parser's complaint.
        message: String,
    },
    /// The time zone is not known.
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: jiff::tz::TimeZone,
}

impl Schedule {
    /// Parses `schedule` (five fields or a nickname) in `time_zone` (UTC when `None`).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(schedule)
            .map_err(|e| ScheduleError::Schedule {
                schedule: schedule.into(),
                message: e.to_string(),
            })?;
        let tz = match time_zone {
            None | Some("") => jiff::tz::TimeZone::UTC,
            Some(name) => {
                jiff::tz::TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.into()))?
            }
        };
        Ok(Schedule { cron, tz })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The latest scheduled time in `(after, now]`, and how many there were (capped just
    /// past [`MAX_MISSED`]) (`mostRecentScheduleTime`).
    pub fn most_recent(
        &self,
        after: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> (Option<jiff::Timestamp>, usize) {
        let mut latest = None;
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next_after(t).filter(|n| *n <= now) {
            latest = Some(next);
            count += 1;
            t = next;
            if count > MAX_MISSED {
                // Skip ahead: only the most recent one matters.
                let zoned = now.to_zoned(self.tz.clone());
                latest = self
                    .cron
                    .find_previous_occurrence(&zoned, true)
                    .ok()
                    .map(|z| z.timestamp())
                    .or(latest);
                break;
            }
        }
        (latest, count)
    }
}

/// The name of the Job for the time `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: jiff::Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// What one sync decided.
#[derive(Debug, Default)]
pub struct Decision {
    /// Create the Job for this scheduled time.
    pub create: Option<jiff::Timestamp>,
    /// Active Jobs to delete first (`Replace`).
    pub replace: Vec<String>,
    /// Finished Jobs beyond the history limits.
    pub prune: Vec<String>,
    /// The status to write (before the Job is created, its `active` and
    /// `lastScheduleTime` updated by the caller on success).
    pub status: CronJobStatus,
    /// Events to record.
    pub events: Vec<(EventType, &'static str, String)>,
    /// When the next run is due.
    pub requeue: Option<Duration>,
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

fn manual(job: &Job) -> bool {
    job.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(INSTANTIATE).is_some_and(|v| v == "manual"))
}

fn started(job: &Job) -> (Option<jiff::Timestamp>, Option<String>) {
    (
        job.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref().map(|t| t.0))
            .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        job.metadata.name.clone(),
    )
}

/// The finished Jobs beyond `successful_limit` successful and `failed_limit` failed ones,
/// oldest first (`cleanupFinishedJobs`).
pub fn jobs_to_prune(jobs: &[&Job], successful_limit: i32, failed_limit: i32) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, limit) in [("Complete", successful_limit), ("Failed", failed_limit)] {
        let mut finished: Vec<&&Job> = jobs
            .iter()
            .filter(|j| has_condition(j.status.as_ref(), kind))
            .collect();
        finished.sort_by_key(|j| started(j));
        let excess = finished.len().saturating_sub(limit.max(0) as usize);
        out.extend(
            finished[..excess]
                .iter()
                .filter_map(|j| j.metadata.name.clone()),
        );
    }
    out
}

/// Decides one sync of `cronjob` over the Jobs it owns at `now`.
pub fn decide(
    cronjob: &CronJob,
    jobs: &[&Job],
    now: jiff::Timestamp,
) -> Result<Decision, ScheduleError> {
    let spec = &cronjob.spec;
    let name = cronjob.metadata.name.clone().unwrap_or_default();
    let old = cronjob.status.clone().unwrap_or_default();
    let mut d = Decision::default();

    // Status from the Jobs: active ones, the last success.
    let was_active = |j: &Job| {
        old.active
            .iter()
            .flatten()
            .any(|r| r.uid.is_some() && r.uid == j.metadata.uid)
    };
    let mut active: Vec<&Job> = Vec::new();
    for job in jobs {
        if is_finished(job) {
            if was_active(job) {
                let kind = if has_condition(job.status.as_ref(), "Complete") {
                    "Complete"
                } else {
                    "Failed"
                };
                d.events.push((
                    EventType::Normal,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, condition: {kind}",
                        job.metadata.name.as_deref().unwrap_or("")
                    ),
                ));
            }
        } else if job.metadata.deletion_timestamp.is_none() && (!manual(job) || was_active(job)) {
            active.push(job);
        }
    }
    active.sort_by_key(|j| started(j));
    let last_successful = jobs
        .iter()
        .filter(|j| has_condition(j.status.as_ref(), "Complete"))
        .filter_map(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref().map(|t| t.0))
                .or_else(|| finished_at(j))
        })
        .chain(old.last_successful_time.as_ref().map(|t| t.0))
        .max();
    d.status = CronJobStatus {
        active: (!active.is_empty()).then(|| active.iter().map(|j| reference(j)).collect()),
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: last_successful.map(Time),
    };
    d.prune = jobs_to_prune(
        jobs,
        spec.successful_jobs_history_limit.unwrap_or(3),
        spec.failed_jobs_history_limit.unwrap_or(1),
    );

    if spec.suspend == Some(true) || cronjob.metadata.deletion_timestamp.is_some() {
        return Ok(d);
    }
    let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())?;
    let created = cronjob
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let mut earliest = old.last_schedule_time.as_ref().map_or(created, |t| t.0);
    if let Some(sds) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - jiff::SignedDuration::from_secs(sds));
    }
    let (due, missed) = schedule.most_recent(earliest, now);
    d.requeue = schedule.next_after(now).map(|next| until(now, next));
    let Some(due) = due else {
        return Ok(d);
    };
    if missed > MAX_MISSED {
        d.events.push((
            EventType::Warning,
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        ));
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if due + jiff::SignedDuration::from_secs(sds) < now {
            d.events.push((
                EventType::Warning,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    due.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
            return Ok(d);
        }
    }
    let job_name = job_name(&name, due);
    let exists = jobs
        .iter()
        .any(|j| j.metadata.name.as_deref() == Some(job_name.as_str()));
    if exists || old.last_schedule_time.as_ref().is_some_and(|t| t.0 >= due) {
        return Ok(d);
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            d.events.push((
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return Ok(d);
        }
        "Replace" => {
            d.replace = active
                .iter()
                .filter_map(|j| j.metadata.name.clone())
                .collect();
            d.status.active = None;
        }
        _ => {}
    }
    d.create = Some(due);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(spec: serde_json::Value, status: serde_json::Value) -> CronJob {
        let mut full =
            json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {}}}});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "cj", "namespace": "default", "uid": "cj-uid",
                "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": full, "status": status,
        }))
        .unwrap()
    }

    fn job(name: &str, condition: Option<&str>, start: &str) -> Job {
        let conditions = condition.map_or(json!([]), |c| json!([{"type": c, "status": "True"}]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "status": {"startTime": start, "conditions": conditions,
                "completionTime": if condition == Some("Complete") { json!(start) } else { json!(null) }},
        }))
        .unwrap()
    }

    #[test]
    fn schedules_nicknames_and_time_zones() {
        let s = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            s.next_after(t("2025-01-01T10:20:00Z")),
            Some(t("2025-01-01T11:00:00Z"))
        );
        let s = Schedule::parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.next_after(t("2025-01-01T00:00:00Z")),
            Some(t("2025-01-01T14:00:00Z"))
        );
        assert!(Schedule::parse("* * * *", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn job_names_are_minutes_since_the_epoch() {
        assert_eq!(job_name("cj", t("2025-01-01T00:05:00Z")), "cj-28928165");
    }

    #[test]
    fn the_most_recent_due_time_starts_a_job_once() {
        let cj = cronjob(json!({}), json!({}));
        let d = decide(&cj, &[], t("2025-01-01T00:11:00Z")).unwrap();
        assert_eq!(d.create, Some(t("2025-01-01T00:10:00Z")));
        assert_eq!(d.requeue, Some(Duration::from_millis(4 * 60_000 + 50)));
        let cj = cronjob(
            json!({}),
            json!({"lastScheduleTime": "2025-01-01T00:10:00Z"}),
        );
        assert_eq!(
            decide(&cj, &[], t("2025-01-01T00:11:00Z")).unwrap().create,
            None
        );
        let d = decide(&cj, &[], t("2025-01-01T00:15:00Z")).unwrap();
        assert_eq!(d.create, Some(t("2025-01-01T00:15:00Z")));
    }

    #[test]
    fn starting_deadline_and_suspend_skip_runs() {
        let cj = cronjob(json!({"startingDeadlineSeconds": 30}), json!({}));
        assert_eq!(
            decide(&cj, &[], t("2025-01-01T00:11:00Z")).unwrap().create,
            None
        );
        assert_eq!(
            decide(&cj, &[], t("2025-01-01T00:10:20Z")).unwrap().create,
            Some(t("2025-01-01T00:10:00Z"))
        );
        let cj = cronjob(json!({"suspend": true}), json!({}));
        assert_eq!(
            decide(&cj, &[], t("2025-01-01T00:11:00Z")).unwrap().create,
            None
        );
    }

    #[test]
    fn concurrency_policies() {
        let running = job("cj-1", None, "2025-01-01T00:05:00Z");
        let now = t("2025-01-01T00:10:30Z");
        let forbid = cronjob(
            json!({"concurrencyPolicy": "Forbid"}),
            json!({"lastScheduleTime": "2025-01-01T00:05:00Z"}),
        );
        let d = decide(&forbid, &[&running], now).unwrap();
        assert_eq!(d.create, None);
        assert_eq!(d.events[0].1, "JobAlreadyActive");
        let replace = cronjob(
            json!({"concurrencyPolicy": "Replace"}),
            json!({"lastScheduleTime": "2025-01-01T00:05:00Z"}),
        );
        let d = decide(&replace, &[&running], now).unwrap();
        assert_eq!(d.replace, ["cj-1"]);
        assert!(d.create.is_some());
        let allow = cronjob(
            json!({}),
            json!({"lastScheduleTime": "2025-01-01T00:05:00Z"}),
        );
        let d = decide(&allow, &[&running], now).unwrap();
        assert!(d.replace.is_empty() && d.create.is_some());
        assert_eq!(d.status.active.unwrap().len(), 1);
    }

    #[test]
    fn history_limits_prune_the_oldest_finished_jobs() {
        let jobs = [
            job("ok1", Some("Complete"), "2025-01-01T00:01:00Z"),
            job("ok2", Some("Complete"), "2025-01-01T00:02:00Z"),
            job("ok3", Some("Complete"), "2025-01-01T00:03:00Z"),
            job("bad1", Some("Failed"), "2025-01-01T00:04:00Z"),
            job("bad2", Some("Failed"), "2025-01-01T00:05:00Z"),
            job("run", None, "2025-01-01T00:06:00Z"),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        assert_eq!(jobs_to_prune(&refs, 2, 1), ["ok1", "bad1"]);
        assert_eq!(
            jobs_to_prune(&refs, 0, 0),
            ["ok1", "ok2", "ok3", "bad1", "bad2"]
        );
        let cj = cronjob(json!({"successfulJobsHistoryLimit": 1}), json!({}));
        let d = decide(&cj, &refs, t("2025-01-01T00:06:30Z")).unwrap();
        assert_eq!(d.prune, ["ok1", "ok2", "bad1"]);
        assert_eq!(
            d.status.last_successful_time.unwrap().0,
            t("2025-01-01T00:03:00Z")
        );
    }
}
