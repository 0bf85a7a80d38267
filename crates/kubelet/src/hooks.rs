//! Container lifecycle hooks: `postStart` right after a container starts (a failure
//! kills it), `preStop` before it is sent its stop signal, within the pod's grace
//! period. Handlers: `exec` (ExecSync), `httpGet`, `sleep`; `tcpSocket` is accepted
//! and does nothing, as in Kubernetes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{LifecycleHandler, Pod};

use crate::probes::handler::{self, Outcome, Target};

/// Runs `h` against the container; the error is the message events show.
pub fn run(
    h: &LifecycleHandler,
    target: &Target<'_>,
    pod: &Pod,
    timeout: Duration,
) -> Result<(), String> {
    let pod_id = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    let container = &target.container.name;
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match handler::exec(target, &cmd, timeout) {
            Outcome::Success(_) => Ok(()),
            Outcome::Failure(output) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container {container:?} in Pod {pod_id:?} failed - error: command '{}' exited with a failure, message: {output:?}",
                cmd.join(" ")
            )),
        };
    }
    if let Some(g) = &h.http_get {
        return match handler::http_get(target, g, timeout) {
            Outcome::Success(_) => Ok(()),
            Outcome::Failure(message) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod_id:?} failed - error: {message}",
                g.path.as_deref().unwrap_or("/")
            )),
        };
    }
    if let Some(s) = &h.sleep {
        std::thread::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout));
        return Ok(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerConfig, PodSandboxConfig, RuntimeService as _};
    use crate::fake::FakeRuntime;

    #[test]
    fn exec_hooks_fail_on_a_nonzero_exit() {
        let rt = FakeRuntime::default();
        let sandbox = rt.run_pod_sandbox(&PodSandboxConfig::default()).unwrap();
        let id = rt
            .create_container(
                &sandbox,
                &ContainerConfig {
                    name: "app".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        rt.start_container(&id).unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "app"}]}}))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let target = Target {
            runtime: &rt,
            container_id: &id,
            container: &c,
            pod_ip: None,
        };
        let h: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"exec": {"command": ["sh", "-c", "x"]}}))
                .unwrap();
        run(&h, &target, &pod, Duration::from_secs(1)).unwrap();
        rt.set_exec_result("app", 2, "boom");
        let err = run(&h, &target, &pod, Duration::from_secs(1)).unwrap_err();
        assert!(err.starts_with("Exec lifecycle hook ([\"sh\", \"-c\", \"x\"]) for Container \"app\" in Pod \"p_ns(u)\" failed"), "{err}");
        assert!(err.contains("boom"));
        let sleep: LifecycleHandler =
            serde_json::from_value(serde_json::json!({"sleep": {"seconds": 0}})).unwrap();
        run(&sleep, &target, &pod, Duration::from_secs(1)).unwrap();
        assert!(rt.calls().contains(&"exec_sync app sh -c x".to_string()));
    }
}
