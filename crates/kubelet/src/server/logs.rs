//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's CRI log, read and followed
//! the way the kubelet does (pkg/kubelet/kuberuntime/logs): `tailLines` first, then
//! `sinceSeconds`/`sinceTime`, `timestamps` in Go's RFC 3339 with nanoseconds,
//! `limitBytes`, and `follow` until the container stops.

use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use k8s_openapi::api::core::v1::{ContainerStatus as ApiContainerStatus, Pod};
use skiff_runtime::crilog::{self, Record};

use super::{Body, HttpError, Query, State};
use crate::cri::ContainerState;

/// How often a followed log is read again.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// What `kubectl logs` asked for (`PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// The previous instance of the container.
    pub previous: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Prefix each record with its time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the options from the query (`now` anchors `sinceSeconds`).
    pub fn from_query(query: &Query, now: DateTime<Utc>) -> Result<LogOptions, HttpError> {
        let number = |key: &str| -> Result<Option<i64>, HttpError> {
            query
                .get(key)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| HttpError::bad_request(format!("invalid {key}: {v:?}")))
                })
                .transpose()
        };
        let since = match (number("sinceSeconds")?, query.get("sinceTime")) {
            (Some(seconds), _) => Some(now - chrono::Duration::seconds(seconds.max(0))),
            (None, Some(time)) => Some(
                DateTime::parse_from_rfc3339(time)
                    .map_err(|_| HttpError::bad_request(format!("invalid sinceTime: {time:?}")))?
                    .with_timezone(&Utc),
            ),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: query.flag("follow"),
            previous: query.flag("previous"),
            tail_lines: number("tailLines")?.map(|n| n.max(0) as usize),
            since,
            timestamps: query.flag("timestamps"),
            limit_bytes: number("limitBytes")?.map(|n| n.max(0) as u64),
        })
    }
}

/// Serves one container's log.
pub async fn serve(
    state: &Arc<State>,
    namespace: &str,
    name: &str,
    container: &str,
    query: &Query,
) -> Result<Response<Body>, HttpError> {
    let opts = LogOptions::from_query(query, Utc::now())?;
    let pod = state.pod(namespace, name).await?;
    let id = container_for_logs(&pod, container, opts.previous)?;
    let path = state
        .runtime
        .container_log_path(&id)
        .map_err(|e| HttpError::internal(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let runtime = state.runtime.clone();
    tokio::task::spawn_blocking(move || {
        let running = || {
            runtime
                .container_status(&id)
                .map(|s| s.state == ContainerState::Running)
                .unwrap_or(false)
        };
        copy_log(&path, &opts, &running, &mut |chunk| {
            tx.blocking_send(chunk).is_ok()
        });
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

/// The runtime id of the container instance whose log is wanted, by the kubelet's rules
/// (`validateContainerLogStatus`): the current instance, or the last terminated one for
/// `previous` (and for a container waiting to restart).
pub fn container_for_logs(pod: &Pod, container: &str, previous: bool) -> Result<String, HttpError> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.as_ref();
    let statuses = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .chain(s.init_container_statuses.iter())
                .chain(s.ephemeral_container_statuses.iter())
                .flatten()
        })
        .collect::<Vec<&ApiContainerStatus>>();
    let in_spec = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == container)
    });
    let Some(cs) = statuses.into_iter().find(|c| c.name == container) else {
        if in_spec {
            // No status yet: the pod worker has not created it.
            return Err(HttpError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )));
        }
        return Err(HttpError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is not available"
        )));
    };
    let last_terminated = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref());
    let state = cs.state.as_ref();
    let id = if previous {
        last_terminated.ok_or_else(|| {
            HttpError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ))
        })?
    } else if state.is_some_and(|s| s.running.is_some() || s.terminated.is_some()) {
        cs.container_id.as_deref().unwrap_or("")
    } else if let Some(id) = last_terminated {
        // Waiting to restart: the last instance's log.
        id
    } else {
        let reason = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            .unwrap_or("ContainerCreating");
        return Err(HttpError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    };
    match id.split_once("://") {
        Some((_, id)) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(HttpError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is not available"
        ))),
    }
}

/// Go's `time.RFC3339Nano`: nanoseconds without trailing zeros, as the kubelet prefixes
/// `--timestamps`.
pub fn go_rfc3339_nano(time: &DateTime<Utc>) -> String {
    let base = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = format!("{:09}", time.timestamp_subsec_nanos());
    let nanos = nanos.trim_end_matches('0');
    if nanos.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{nanos}Z")
    }
}

/// Writes records to `sink` under the options' filters; false once the limit is reached or
/// the sink is gone.
struct Emitter<'a> {
    opts: &'a LogOptions,
    written: u64,
    sink: &'a mut dyn FnMut(Bytes) -> bool,
}

impl Emitter<'_> {
    fn emit(&mut self, records: &[Record]) -> bool {
        let mut out = Vec::new();
        for r in records {
            if self.opts.since.is_some_and(|since| r.time < since) {
                continue;
            }
            if self.opts.timestamps {
                out.extend_from_slice(go_rfc3339_nano(&r.time).as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&r.content);
            if !r.partial {
                out.push(b'\n');
            }
        }
        if let Some(limit) = self.opts.limit_bytes {
            let left = limit.saturating_sub(self.written) as usize;
            out.truncate(left);
        }
        self.written += out.len() as u64;
        if !out.is_empty() && !(self.sink)(Bytes::from(out)) {
            return false;
        }
        self.opts
            .limit_bytes
            .is_none_or(|limit| self.written < limit)
    }
}

/// Reads the complete records after `position`, advancing it.
fn read_records(path: &PathBuf, position: &mut u64) -> Vec<Record> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(*position)).is_err() {
        return Vec::new();
    }
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            // An incomplete last line is read again next time.
            Ok(n) if n > 0 && line.ends_with(b"\n") => {
                *position += n as u64;
                records.extend(crilog::parse_line(&line));
            }
            _ => return records,
        }
    }
}

/// Copies the log at `path` to `sink`: what is there (its last `tail_lines`), then, when
/// following, what is appended until `running` turns false.
pub fn copy_log(
    path: &PathBuf,
    opts: &LogOptions,
    running: &dyn Fn() -> bool,
    sink: &mut dyn FnMut(Bytes) -> bool,
) {
    let mut emitter = Emitter {
        opts,
        written: 0,
        sink,
    };
    let mut position = 0;
    let records = read_records(path, &mut position);
    let start = opts
        .tail_lines
        .map(|n| crilog::tail_start(&records, n))
        .unwrap_or(0);
    if !emitter.emit(&records[start..]) || !opts.follow {
        return;
    }
    loop {
        // Whether it ran is read first, so that what it wrote before stopping is still copied.
        let was_running = running();
        let records = read_records(path, &mut position);
        if !emitter.emit(&records) || !was_running {
            return;
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::crilog::{Stream, Writer};

    fn log_file(lines: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = Writer::new(std::fs::File::create(&path).unwrap());
        for l in lines {
            w.write(Stream::Stdout, format!("{l}\n").as_bytes())
                .unwrap();
        }
        w.flush().unwrap();
        (dir, path)
    }

    fn read(path: &PathBuf, opts: &LogOptions) -> String {
        let mut out = Vec::new();
        copy_log(path, opts, &|| false, &mut |b| {
            out.extend_from_slice(&b);
            true
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tail_and_limit() {
        let (_d, path) = log_file(&["one", "two", "three"]);
        assert_eq!(read(&path, &LogOptions::default()), "one\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(read(&path, &tail), "two\nthree\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(&path, &limit), "one\ntw");
    }

    #[test]
    fn since_and_timestamps() {
        let (_d, path) = log_file(&["old"]);
        let future = LogOptions {
            since: Some(Utc::now() + chrono::Duration::seconds(60)),
            ..Default::default()
        };
        assert_eq!(read(&path, &future), "");
        let stamped = read(
            &path,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let (time, rest) = stamped.split_once(' ').unwrap();
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert_eq!(rest, "old\n");
    }

    #[test]
    fn go_time_format_trims_zeros() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.120000000Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(go_rfc3339_nano(&t), "2024-01-02T03:04:05.12Z");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(go_rfc3339_nano(&t), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn options_from_query() {
        let now = Utc::now();
        let q = Query::parse(Some("follow=true&tailLines=5&sinceSeconds=10&limitBytes=3"));
        let o = LogOptions::from_query(&q, now).unwrap();
        assert!(o.follow && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.since, Some(now - chrono::Duration::seconds(10)));
        assert_eq!(o.limit_bytes, Some(3));
        assert!(LogOptions::from_query(&Query::parse(Some("tailLines=x")), now).is_err());
    }

    #[test]
    fn previous_without_a_terminated_instance_is_refused() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}, {"name": "w"}]},
            "status": {"containerStatuses": [
                {"name": "c", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                 "containerID": "skiff://abc", "state": {"running": {}}},
                {"name": "w", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                 "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]},
        }))
        .unwrap();
        assert_eq!(container_for_logs(&pod, "c", false).unwrap(), "abc");
        assert_eq!(
            container_for_logs(&pod, "c", true).unwrap_err().message,
            "previous terminated container \"c\" in pod \"p\" not found"
        );
        assert_eq!(
            container_for_logs(&pod, "w", false).unwrap_err().message,
            "container \"w\" in pod \"p\" is waiting to start: ContainerCreating"
        );
    }
}
