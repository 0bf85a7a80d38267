//! Ephemeral containers (`kubectl debug`): containers added to a running pod through
//! the `pods/ephemeralcontainers` subresource. As kuberuntime does, the pod worker starts
//! each once in the pod's sandbox (sharing its network, IPC and UTS namespaces; with
//! `targetContainerName`, the target's PID namespace too), never restarts it, and
//! reports it in `status.ephemeralContainerStatuses`; it counts for neither the pod's
//! phase nor its readiness.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, PodSpec};

use crate::cri::ContainerState;
use crate::status::Observed;

/// The ephemeral container as a container: the same fields, without the target.
pub fn as_container(e: &EphemeralContainer) -> Container {
    let mut value = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.remove("targetContainerName");
    }
    serde_json::from_value(value).unwrap_or_else(|_| Container {
        name: e.name.clone(),
        image: e.image.clone(),
        ..Default::default()
    })
}

/// The pod's ephemeral containers, as containers.
pub fn containers(spec: &PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(as_container)
        .collect()
}

/// The ephemeral containers to start now: those never started (an ephemeral container
/// runs once), with the id of the running target whose PID namespace each joins.
/// One whose target is named but not running waits.
pub fn to_start(spec: &PodSpec, observed: &Observed) -> Vec<(Container, Option<String>)> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter(|e| observed.instances(&e.name).0.is_none())
        .filter_map(|e| {
            let target = match e.target_container_name.as_deref().filter(|t| !t.is_empty()) {
                None => None,
                Some(t) => {
                    let running = observed
                        .instances(t)
                        .0
                        .filter(|c| c.state == ContainerState::Running)?;
                    Some(running.id.clone())
                }
            };
            Some((as_container(e), target))
        })
        .collect()
}

/// The PID-namespace targets of `to_start`, by ephemeral container name.
pub fn targets(to_start: &[(Container, Option<String>)]) -> BTreeMap<String, String> {
    to_start
        .iter()
        .filter_map(|(c, t)| Some((c.name.clone(), t.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri;

    fn spec() -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [
                {"name": "debugger", "image": "busybox", "command": ["sh"], "stdin": true, "tty": true,
                 "targetContainerName": "app"},
                {"name": "plain", "image": "busybox"}]}))
        .unwrap()
    }

    fn instance(name: &str, id: &str, state: ContainerState) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: id.into(),
            state,
            image: "busybox".into(),
            image_ref: "sha256:1".into(),
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            labels: BTreeMap::from([(cri::CONTAINER_NAME_LABEL.to_string(), name.to_string())]),
        }
    }

    #[test]
    fn an_ephemeral_container_is_a_container_without_its_target() {
        let c = &containers(&spec())[0];
        assert_eq!(c.name, "debugger");
        assert_eq!(c.command.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!((c.stdin, c.tty), (Some(true), Some(true)));
    }

    #[test]
    fn a_target_must_run_and_an_ephemeral_container_starts_once() {
        let mut observed = Observed::default();
        // The target is not running: only the untargeted one starts.
        let start = to_start(&spec(), &observed);
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].0.name, "plain");
        observed
            .containers
            .push(instance("app", "c1", ContainerState::Running));
        let start = to_start(&spec(), &observed);
        assert_eq!(
            targets(&start),
            BTreeMap::from([("debugger".to_string(), "c1".to_string())])
        );
        // Started once, even if it exited: never again.
        observed
            .containers
            .push(instance("debugger", "d1", ContainerState::Exited));
        observed
            .containers
            .push(instance("plain", "p1", ContainerState::Exited));
        assert!(to_start(&spec(), &observed).is_empty());
    }
}
