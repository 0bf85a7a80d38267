//! Requests and limits as cgroup limits, converted as the kubelet does
//! (pkg/kubelet/cm/helpers_linux.go for pod cgroups, kuberuntime for containers):
//! cpu requests become cpu shares, cpu limits a CFS quota, memory limits the memory
//! limit. Values are cgroup v1's; the runtime layer converts them for cgroup v2.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::cri::LinuxContainerResources;
use crate::qos::QosClass;

/// The least cpu shares a cgroup gets (the kernel's minimum).
pub const MIN_SHARES: u64 = 2;
/// The most cpu shares a cgroup gets (the kernel's maximum).
pub const MAX_SHARES: u64 = 262_144;
/// cpu shares per CPU.
pub const SHARES_PER_CPU: u64 = 1024;
/// The CFS period of quotas, in microseconds (the kubelet's default).
pub const QUOTA_PERIOD: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
pub const MIN_QUOTA: i64 = 1000;

/// cpu shares for `milli` millicores of requested cpu: 1024 per CPU, at least
/// [`MIN_SHARES`] (also for no request at all), at most [`MAX_SHARES`].
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = (milli as u128 * SHARES_PER_CPU as u128 / 1000) as u64;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// The CFS quota per `period` microseconds for a limit of `milli` millicores, at
/// least [`MIN_QUOTA`]; `None` without a limit.
pub fn milli_cpu_to_quota(milli: i64, period: u64) -> Option<i64> {
    if milli <= 0 {
        return None;
    }
    let quota = (milli as i128 * period as i128 / 1000).min(i64::MAX as i128) as i64;
    Some(quota.max(MIN_QUOTA))
}

/// cpu in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
}

impl Amounts {
    fn plus(self, other: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    fn max(self, other: Amounts) -> Amounts {
        Amounts {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

/// One positive amount of the container's `requests` or `limits` (0 when absent).
fn amount(c: &Container, limits: bool, resource: &str) -> i64 {
    let res = c.resources.as_ref();
    let map = if limits {
        res.and_then(|r| r.limits.as_ref())
    } else {
        res.and_then(|r| r.requests.as_ref())
    };
    let q = map.and_then(|m| m.get(resource)).map(|q| q.0.as_str());
    let v = match (q, resource) {
        (None, _) => 0,
        (Some(q), "cpu") => skiff_quantity::milli(q),
        (Some(q), _) => skiff_quantity::value(q),
    };
    v.max(0)
}

/// The container's limits (0: none).
pub fn limits(c: &Container) -> Amounts {
    Amounts {
        cpu: amount(c, true, "cpu"),
        memory: amount(c, true, "memory"),
    }
}

/// The container's requests, defaulting to its limits as the API server fills them in.
pub fn requests(c: &Container) -> Amounts {
    let l = limits(c);
    let r = |resource, limit| match amount(c, false, resource) {
        0 => limit,
        v => v,
    };
    Amounts {
        cpu: r("cpu", l.cpu),
        memory: r("memory", l.memory),
    }
}

/// Whether an init container is a sidecar (`restartPolicy: Always`): it keeps running
/// beside the app containers.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// What the pod needs of `of` (requests or limits) at its peak: app containers and
/// sidecars run together; each other init container runs alone beside the sidecars
/// started before it (as the scheduler and the kubelet sum a pod's resources).
pub fn pod_amounts(spec: &PodSpec, of: fn(&Container) -> Amounts) -> Amounts {
    let mut sidecars = Amounts::default();
    let mut peak = Amounts::default();
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            sidecars = sidecars.plus(of(c));
            peak = peak.max(sidecars);
        } else {
            peak = peak.max(sidecars.plus(of(c)));
        }
    }
    let running = spec
        .containers
        .iter()
        .fold(sidecars, |sum, c| sum.plus(of(c)));
    peak.max(running)
}

/// The container's cgroup limits: shares from its cpu request (its limit when it has
/// only that; [`MIN_SHARES`] without either), a quota over [`QUOTA_PERIOD`] from its
/// cpu limit, its memory limit, and no swap beyond it.
pub fn container_resources(c: &Container) -> LinuxContainerResources {
    let (request, limit) = (requests(c), limits(c));
    let quota = milli_cpu_to_quota(limit.cpu, QUOTA_PERIOD);
    let memory = (limit.memory > 0).then_some(limit.memory);
    LinuxContainerResources {
        cpu_shares: Some(milli_cpu_to_shares(request.cpu)),
        cpu_quota: quota,
        cpu_period: quota.map(|_| QUOTA_PERIOD),
        memory_limit_in_bytes: memory,
        memory_swap_limit_in_bytes: memory,
    }
}

/// The pod cgroup's limits: shares from the pod's cpu requests; a cpu quota and a
/// memory limit from the pod's limits when every container that runs for the pod's
/// life (app containers, sidecars) has that limit; BestEffort pods get the least
/// shares and nothing else.
pub fn pod_resources(spec: &PodSpec, qos: QosClass) -> skiff_runtime::Resources {
    if qos == QosClass::BestEffort {
        return skiff_runtime::Resources {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        };
    }
    let (request, limit) = (pod_amounts(spec, requests), pod_amounts(spec, limits));
    let lifelong = spec.containers.iter().chain(
        spec.init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c)),
    );
    let (mut cpu_limited, mut memory_limited) = (true, true);
    for c in lifelong {
        let l = limits(c);
        cpu_limited &= l.cpu > 0;
        memory_limited &= l.memory > 0;
    }
    let quota = milli_cpu_to_quota(limit.cpu, QUOTA_PERIOD).filter(|_| cpu_limited);
    skiff_runtime::Resources {
        cpu_shares: Some(milli_cpu_to_shares(request.cpu)),
        cpu_quota: quota,
        cpu_period: quota.map(|_| QUOTA_PERIOD),
        memory: (memory_limited && limit.memory > 0).then_some(limit.memory),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn container(name: &str, requests: serde_json::Value, limits: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": name, "resources": {"requests": requests, "limits": limits}
        }))
        .unwrap()
    }

    #[test]
    fn cpu_converts_to_shares_and_quota() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(250), 256);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
        assert_eq!(milli_cpu_to_quota(0, QUOTA_PERIOD), None);
        assert_eq!(milli_cpu_to_quota(1, QUOTA_PERIOD), Some(1000));
        assert_eq!(milli_cpu_to_quota(250, QUOTA_PERIOD), Some(25_000));
        assert_eq!(milli_cpu_to_quota(1500, QUOTA_PERIOD), Some(150_000));
    }

    #[test]
    fn a_container_gets_shares_quota_and_memory_without_swap() {
        let c = container(
            "c",
            serde_json::json!({"cpu": "250m", "memory": "32Mi"}),
            serde_json::json!({"cpu": "500m", "memory": "64Mi"}),
        );
        assert_eq!(
            container_resources(&c),
            LinuxContainerResources {
                cpu_shares: Some(256),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit_in_bytes: Some(64 << 20),
                memory_swap_limit_in_bytes: Some(64 << 20),
            }
        );
        // Only a limit: shares from it.
        let c = container("c", serde_json::json!({}), serde_json::json!({"cpu": "2"}));
        assert_eq!(container_resources(&c).cpu_shares, Some(2048));
        // Nothing: the least shares, no limits.
        let c = container("c", serde_json::json!({}), serde_json::json!({}));
        assert_eq!(
            container_resources(&c),
            LinuxContainerResources {
                cpu_shares: Some(2),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_pod_sums_its_containers_when_all_are_limited() {
        let s = spec(serde_json::json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}},
        ]}));
        assert_eq!(
            pod_resources(&s, QosClass::Guaranteed),
            skiff_runtime::Resources {
                cpu_shares: Some(768),
                cpu_quota: Some(75_000),
                cpu_period: Some(100_000),
                memory: Some(96 << 20),
                ..Default::default()
            }
        );
        // One container without a cpu limit: no pod quota; memory still limited.
        let s = spec(serde_json::json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}},
        ]}));
        assert_eq!(
            pod_resources(&s, QosClass::Burstable),
            skiff_runtime::Resources {
                cpu_shares: Some(358),
                memory: Some(96 << 20),
                ..Default::default()
            }
        );
        assert_eq!(
            pod_resources(&s, QosClass::BestEffort),
            skiff_runtime::Resources {
                cpu_shares: Some(2),
                ..Default::default()
            }
        );
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_throughout() {
        let s = spec(serde_json::json!({
            "initContainers": [
                {"name": "side", "restartPolicy": "Always",
                 "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}},
                {"name": "big", "resources": {"limits": {"cpu": "2", "memory": "16Mi"}}},
            ],
            "containers": [
                {"name": "app", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
            ],
        }));
        // cpu: the init container beside the sidecar (2.1) beats app + sidecar (0.6);
        // memory: app + sidecar (80Mi) beats init + sidecar (32Mi).
        assert_eq!(
            pod_amounts(&s, limits),
            Amounts {
                cpu: 2100,
                memory: 80 << 20
            }
        );
    }
}
