//! When a simulated container exits, and with which code. Nothing runs on a simulated
//! node, so a pod says how its containers would end, in one of two ways:
//!
//! - the annotation `skiff.dev/simulate-exit-code: "N"` (with an optional
//!   `skiff.dev/simulate-duration: "5s"`, default 1s): every container exits with `N`
//!   that long after it started;
//! - a container whose command and args are a shell script of only simple finite
//!   commands (`sh -c "echo done; sleep 2; exit 3"`: `echo`, `printf`, `date`, `true`,
//!   `false`, `sleep N`, `exit N`, joined by `;`, `&&` or newlines) exits as that script
//!   would, after its `sleep`s (at least 1s); `sleep N` alone exits 0 after N seconds.
//!
//! Anything else (no command, loops, servers) runs until deleted. A running pod is
//! reported ready unless annotated `skiff.dev/simulate-ready: "false"`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The annotation with the exit code of every container of the pod.
pub const EXIT_CODE_ANNOTATION: &str = "skiff.dev/simulate-exit-code";
/// The annotation with how long the containers run before exiting (`"500ms"`, `"3s"`).
pub const DURATION_ANNOTATION: &str = "skiff.dev/simulate-duration";

/// The annotation that keeps a running pod not ready when `"false"`, as a failing
/// readiness probe would.
pub const READY_ANNOTATION: &str = "skiff.dev/simulate-ready";

/// The least time a simulated container runs, so that it is seen Running first.
const MIN_RUN: Duration = Duration::from_secs(1);

/// How a container ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code.
    pub code: i32,
    /// How long after starting.
    pub after: Duration,
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(m) = s.strip_suffix('m') {
        return m
            .parse::<f64>()
            .ok()
            .map(|m| Duration::from_secs_f64(m * 60.0));
    }
    s.strip_suffix('s')
        .unwrap_or(s)
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(Duration::from_secs_f64)
}

/// How a finite shell script ends, if it is one.
fn script_exit(script: &str) -> Option<Exit> {
    let mut code = 0;
    let mut after = Duration::ZERO;
    let commands = script
        .split(['\n', ';'])
        .flat_map(|s| s.split("&&"))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    for command in commands {
        let mut words = command.split_whitespace();
        match words.next()? {
            "echo" | "printf" | "date" | "true" | ":" => code = 0,
            "false" => code = 1,
            "sleep" => {
                after += parse_duration(words.next()?)?;
                code = 0;
            }
            "exit" => {
                code = words.next().map_or(Some(code), |w| w.parse().ok())?;
                return Some(Exit { code, after });
            }
            _ => return None,
        }
    }
    Some(Exit { code, after })
}

/// How the container ends, from its command and args.
fn container_exit(container: &Container) -> Option<Exit> {
    let argv: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let shell = |s: &str| matches!(s, "sh" | "/bin/sh" | "bash" | "/bin/bash" | "ash");
    match argv.as_slice() {
        [sh, "-c", script, ..] if shell(sh) => script_exit(script),
        ["sleep" | "/bin/sleep", n] => parse_duration(n).map(|after| Exit { code: 0, after }),
        _ => None,
    }
}

/// How each container of the pod ends, in order; `None` if any of them runs forever.
pub fn pod_exits(pod: &Pod) -> Option<Vec<Exit>> {
    let containers = &pod.spec.as_ref()?.containers;
    let annotations = pod.metadata.annotations.as_ref();
    if let Some(code) = annotations
        .and_then(|a| a.get(EXIT_CODE_ANNOTATION))
        .and_then(|c| c.trim().parse::<i32>().ok())
    {
        let after = annotations
            .and_then(|a| a.get(DURATION_ANNOTATION))
            .and_then(|d| parse_duration(d))
            .unwrap_or(MIN_RUN);
        return Some(vec![
            Exit {
                code,
                after: after.max(MIN_RUN)
            };
            containers.len()
        ]);
    }
    containers
        .iter()
        .map(|c| {
            container_exit(c).map(|e| Exit {
                after: e.after.max(MIN_RUN),
                ..e
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(command: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": command}]},
        }))
        .unwrap()
    }

    #[test]
    fn finite_scripts_exit_with_their_code_after_their_sleeps() {
        let exits = pod_exits(&pod(
            json!(["sh", "-c", "echo hi; sleep 2 && exit 3"]),
            json!({}),
        ));
        assert_eq!(
            exits,
            Some(vec![Exit {
                code: 3,
                after: Duration::from_secs(2)
            }])
        );
        let ok = pod_exits(&pod(json!(["sh", "-c", "exit 0"]), json!({}))).unwrap();
        assert_eq!(
            ok[0],
            Exit {
                code: 0,
                after: MIN_RUN
            }
        );
        let fails = pod_exits(&pod(json!(["/bin/sh", "-c", "false"]), json!({}))).unwrap();
        assert_eq!(fails[0].code, 1);
    }

    #[test]
    fn loops_servers_and_no_command_run_forever() {
        assert_eq!(
            pod_exits(&pod(
                json!(["sh", "-c", "while true; do sleep 1; done"]),
                json!({})
            )),
            None
        );
        assert_eq!(pod_exits(&pod(json!(null), json!({}))), None);
        assert_eq!(pod_exits(&pod(json!(["nginx"]), json!({}))), None);
    }

    #[test]
    fn the_annotation_overrides_the_command() {
        let exits = pod_exits(&pod(
            json!(null),
            json!({EXIT_CODE_ANNOTATION: "2", DURATION_ANNOTATION: "3s"}),
        ))
        .unwrap();
        assert_eq!(
            exits[0],
            Exit {
                code: 2,
                after: Duration::from_secs(3)
            }
        );
    }
}
