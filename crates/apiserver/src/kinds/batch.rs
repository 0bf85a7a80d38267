//! batch/v1: Jobs and CronJobs.

use serde_json::{json, Map, Value};

use super::pod::{default_pod_spec, validate_pod_spec};
use super::{
    array_at, containers_and_images, int_at, object_mut, or_none, selector_string, set_default,
    str_at,
};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

fn template_columns() -> [Column; 3] {
    [
        Column::wide("Containers", "Names of each container in the template."),
        Column::wide(
            "Images",
            "Images referenced by each container in the template.",
        ),
        Column::wide(
            "Selector",
            "Query over pods that should match the pod count.",
        ),
    ]
}

fn template_cells(template_spec: Option<&Value>, selector: Option<&Value>) -> [Value; 3] {
    let (containers, images) = containers_and_images(template_spec);
    [
        json!(containers),
        json!(images),
        json!(selector_string(selector)),
    ]
}

/// Defaults of a JobSpec (`SetDefaults_Job`), at `spec`.
fn default_job_spec(spec: &mut Map<String, Value>) {
    let has_completions = spec.get("completions").is_some_and(|v| !v.is_null());
    if !has_completions && spec.get("parallelism").is_none_or(Value::is_null) {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    let template = spec.entry("template").or_insert_with(|| json!({}));
    default_pod_spec(object_mut(template, "spec"));
}

fn validate_job_template(spec: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errs = validate_pod_spec(
        spec.and_then(|s| s.pointer("/template/spec")),
        &format!("{path}.template.spec"),
    );
    let policy = spec
        .map(|s| str_at(s, "/template/spec/restartPolicy"))
        .unwrap_or("");
    if !matches!(policy, "OnFailure" | "Never") {
        errs.push(FieldError::not_supported(
            format!("{path}.template.spec.restartPolicy"),
            json!(policy),
            &["OnFailure", "Never"],
        ));
    }
    errs
}

/// The strategy of `jobs`.
pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn status_writes_metadata(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
        // generateSelector: the Job owns its pods through a label with its uid.
        if obj.pointer("/spec/manualSelector") != Some(&json!(true)) {
            let uid = str_at(obj, "/metadata/uid").to_owned();
            let name = str_at(obj, "/metadata/name").to_owned();
            let spec = object_mut(obj, "spec");
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
            let template = spec.entry("template").or_insert_with(|| json!({}));
            let labels = object_mut(object_mut_value(template, "metadata"), "labels");
            for (key, value) in [
                ("batch.kubernetes.io/controller-uid", &uid),
                ("batch.kubernetes.io/job-name", &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                labels.insert(key.into(), json!(value));
            }
        }
    }

    fn default(&self, obj: &mut Value) {
        default_job_spec(object_mut(obj, "spec"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_job_template(obj.get("spec"), "spec");
        for field in ["parallelism", "completions", "backoffLimit"] {
            let v = int_at(obj, &format!("/spec/{field}"));
            if v < 0 {
                errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    json!(v),
                    "must be greater than or equal to 0",
                ));
            }
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for field in ["selector", "completionMode"] {
            if new.pointer(&format!("/spec/{field}")) != old.pointer(&format!("/spec/{field}")) {
                errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    new.pointer(&format!("/spec/{field}"))
                        .cloned()
                        .unwrap_or_default(),
                    "field is immutable",
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            Column::name(),
            Column::text("Status", "Status of the job."),
            Column::text(
                "Completions",
                "The desired number of successfully finished pods the job should be run with.",
            ),
            Column::text("Duration", "Time required to complete the job."),
            Column::age(),
        ];
        cols.extend(template_columns());
        cols
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let succeeded = int_at(obj, "/status/succeeded");
        let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match int_at(obj, "/spec/parallelism") {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let parse = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        };
        let duration = match parse("/status/startTime") {
            None => String::new(),
            Some(start) => {
                let end = parse("/status/completionTime").unwrap_or(now);
                table::human_duration(end.as_second() - start.as_second())
            }
        };
        let mut cells = vec![
            table::name_cell(obj),
            json!(job_status(obj)),
            json!(completions),
            json!(duration),
            table::age_cell(obj, now),
        ];
        cells.extend(template_cells(
            obj.pointer("/spec/template/spec"),
            obj.pointer("/spec/selector"),
        ));
        cells
    }
}

/// The Status cell of a Job: its last true terminal condition, else Running or Suspended.
fn job_status(obj: &Value) -> &'static str {
    let has = |kind: &str| {
        array_at(obj, "/status/conditions")
            .iter()
            .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
    };
    if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has("Suspended") {
        "Suspended"
    } else if obj.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        "Running"
    }
}

/// The strategy of `cronjobs`.
pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn status_writes_metadata(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
        let template = spec.entry("jobTemplate").or_insert_with(|| json!({}));
        let job_spec = object_mut(template, "spec");
        let pod_template = job_spec.entry("template").or_insert_with(|| json!({}));
        default_pod_spec(object_mut(pod_template, "spec"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_job_template(
            obj.pointer("/spec/jobTemplate/spec"),
            "spec.jobTemplate.spec",
        );
        let schedule = str_at(obj, "/spec/schedule");
        if schedule.is_empty() {
            errs.push(FieldError::required("spec.schedule", ""));
        } else if !schedule.starts_with('@') && schedule.split_whitespace().count() != 5 {
            errs.push(FieldError::invalid(
                "spec.schedule",
                json!(schedule),
                format!(
                    "unparseable schedule: expected exactly 5 fields, found {}: {schedule:?}",
                    schedule.split_whitespace().count()
                ),
            ));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            Column::name(),
            Column::text("Schedule", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            Column::text("Timezone", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
            Column { kind: "boolean", ..Column::text("Suspend", "This flag tells the controller to suspend subsequent executions.") },
            Column::integer("Active", "A list of pointers to currently running jobs."),
            Column::text("Last Schedule", "Information when was the last time the job was successfully scheduled."),
            Column::age(),
        ];
        cols.extend(template_columns());
        cols
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let last = match obj.pointer("/status/lastScheduleTime") {
            Some(t) if !t.is_null() => table::age_of(Some(t), now),
            _ => "<none>".to_owned(),
        };
        let job_spec = obj.pointer("/spec/jobTemplate/spec");
        let mut cells = vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/schedule")),
            or_none(str_at(obj, "/spec/timeZone")),
            json!(obj
                .pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            json!(array_at(obj, "/status/active").len()),
            json!(last),
            table::age_cell(obj, now),
        ];
        cells.extend(template_cells(
            job_spec.and_then(|s| s.pointer("/template/spec")),
            job_spec.and_then(|s| s.get("selector")),
        ));
        cells
    }
}

fn object_mut_value<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    object_mut(obj, key);
    &mut obj[key]
}
