//! Node registration and heartbeats (pkg/kubelet/kubelet_node_status.go and the
//! node lease controller): the Node object with the host's capacity, conditions
//! and addresses, and a Lease in `kube-node-lease` renewed every 10 seconds.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// How long a Lease stays valid (the kubelet's default `nodeLeaseDurationSeconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Lease is renewed (a quarter of its duration, as the kubelet does).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// How often the full node status is posted (`nodeStatusReportFrequency`).
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpu: u64,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Disk of the state root in KiB.
    pub ephemeral_storage_kib: u64,
    /// Pods this node runs at most.
    pub pods: u32,
}

impl Capacity {
    /// Reads the host: CPUs, `/proc/meminfo`'s MemTotal, the filesystem of `root`.
    pub fn of_host(root: &std::path::Path) -> Capacity {
        let cpu = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total(&m))
            .unwrap_or(0);
        let ephemeral_storage_kib = filesystem_kib(root).unwrap_or(0);
        Capacity {
            cpu,
            memory_kib,
            ephemeral_storage_kib,
            pods: 110,
        }
    }
}

/// Size of the filesystem holding `path`, in KiB.
fn filesystem_kib(path: &std::path::Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_blocks as u64 * st.f_frsize as u64 / 1024)
}

/// `MemTotal` of /proc/meminfo, in KiB.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The host's address toward the outside (the source of its default route), else loopback.
pub fn host_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The Node's status as the kubelet posts it (`port`: the kubelet API's).
pub fn node_status(
    name: &str,
    ip: &str,
    port: u16,
    cap: &Capacity,
    pressure: &crate::eviction::Pressure,
) -> serde_json::Value {
    let now = now();
    let resources = json!({
        "cpu": cap.cpu.to_string(),
        "memory": format!("{}Ki", cap.memory_kib),
        "ephemeral-storage": format!("{}Ki", cap.ephemeral_storage_kib),
        "pods": cap.pods.to_string(),
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let kernel = kernel_release();
    let mut conditions = pressure.conditions_json(&now);
    conditions.push(condition(
        "Ready",
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
    ));
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
            "kernelVersion": kernel,
            "osImage": os_image(),
            "containerRuntimeVersion": format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": "v1.33.0-skiff",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        },
    }})
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The distribution's PRETTY_NAME, as the kubelet reports `osImage`.
fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Creates the Node (or takes over an existing one) and posts its status.
pub async fn register(
    client: &Client,
    name: &str,
    ip: &str,
    port: u16,
    cap: &Capacity,
    pod_cidr: Option<&str>,
    pressure: &crate::eviction::Pressure,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
            },
        },
        "spec": pod_cidr.map(|c| json!({"podCIDR": c, "podCIDRs": [c]})).unwrap_or(json!({})),
    }))
    .expect("a valid node");
    let existing = match api.get_opt(name).await? {
        Some(existing) => Some(existing),
        None => match api.create(&PostParams::default(), &node).await {
            Ok(_) => None,
            Err(kube::Error::Api(s)) if s.code == 409 => api.get_opt(name).await?,
            Err(e) => return Err(e),
        },
    };
    let mut status = node_status(name, ip, port, cap, pressure);
    if let Some(old) = existing.as_ref().and_then(|n| n.status.as_ref()) {
        keep_transition_times(&mut status, old.conditions.as_deref().unwrap_or_default());
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

/// The events a kubelet records about its node when it starts (`kubectl describe node`
/// shows them): `Starting`, then the status of each condition it posted.
pub async fn record_startup_events(client: &Client, name: &str, status: &serde_json::Value) {
    let mut events = vec![("Starting".to_string(), "Starting kubelet.".to_string())];
    for condition in status["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(reason) = condition["reason"].as_str() {
            // The condition's reason names the kubelet, the event's the node:
            // KubeletHasSufficientMemory -> NodeHasSufficientMemory, KubeletReady -> NodeReady.
            let reason = reason.replacen("Kubelet", "Node", 1);
            events.push((
                reason.clone(),
                format!("Node {name} status is now: {reason}"),
            ));
        }
    }
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let now = jiff::Timestamp::now();
    for (i, (reason, message)) in events.into_iter().enumerate() {
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{name}.{:x}{i:x}", now.as_nanosecond()),
                "namespace": "default",
            },
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": name, "uid": name},
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": "kubelet", "host": name},
            "reportingComponent": "kubelet",
            "reportingInstance": name,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "count": 1,
        });
        let event = serde_json::from_value(event).expect("a valid event");
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!("recording event {reason} of node {name}: {e}");
        }
    }
}

/// A condition whose status did not change keeps the time it last changed (the node's
/// posted conditions), as the kubelet's setters do; only the heartbeat time moves.
fn keep_transition_times(
    status: &mut serde_json::Value,
    posted: &[k8s_openapi::api::core::v1::NodeCondition],
) {
    let Some(conditions) = status
        .pointer_mut("/status/conditions")
        .and_then(|c| c.as_array_mut())
    else {
        return;
    };
    for condition in conditions {
        let before = posted.iter().find(|p| {
            Some(p.type_.as_str()) == condition["type"].as_str()
                && Some(p.status.as_str()) == condition["status"].as_str()
        });
        if let Some(time) = before.and_then(|p| p.last_transition_time.as_ref()) {
            condition["lastTransitionTime"] = json!(time.0);
        }
    }
}

/// Waits until node `name` has a `spec.podCIDR` (assigned by the node IPAM controller)
/// and returns it.
pub async fn wait_for_pod_cidr(client: &Client, name: &str) -> String {
    let api: Api<Node> = Api::all(client.clone());
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        match api.get(name).await {
            Ok(node) => {
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    tracing::info!("node {name}: pod CIDR {cidr}");
                    return cidr;
                }
            }
            Err(e) => tracing::debug!("reading node {name}: {e}"),
        }
        if !warned && started.elapsed() > std::time::Duration::from_secs(30) {
            tracing::warn!(
                "node {name} has no spec.podCIDR yet; pods wait for one (is the server's \
                 --allocate-node-cidrs off? then give this node --pod-cidr)"
            );
            warned = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Renews (or creates) the node's Lease, owned by its Node.
pub async fn renew_lease(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew_time = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": renew_time});
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let nodes: Api<Node> = Api::all(client.clone());
            let owner = nodes.get(name).await.ok().and_then(|n| n.metadata.uid);
            let mut lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec});
            if let Some(uid) = owner {
                lease["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node",
                    "name": name, "uid": uid}]);
            }
            let lease: Lease = serde_json::from_value(lease).expect("a valid lease");
            api.create(&PostParams::default(), &lease).await.map(drop)
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_in_kib() {
        assert_eq!(
            parse_mem_total("MemTotal:       16318012 kB\nMemFree: 1 kB\n"),
            Some(16318012)
        );
    }

    #[test]
    fn status_has_capacity_and_ready() {
        let cap = Capacity {
            cpu: 2,
            memory_kib: 1024,
            ephemeral_storage_kib: 2048,
            pods: 110,
        };
        let s = node_status(
            "n1",
            "10.0.0.1",
            10250,
            &cap,
            &crate::eviction::Pressure::default(),
        );
        assert_eq!(s["status"]["capacity"]["memory"], "1024Ki");
        assert_eq!(s["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(s["status"]["addresses"][0]["address"], "10.0.0.1");
        assert_eq!(
            s["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let cap = Capacity {
            cpu: 2,
            memory_kib: 1024,
            ephemeral_storage_kib: 2048,
            pods: 110,
        };
        let mut s = node_status("n1", "10.0.0.1", 10250, &cap, &Default::default());
        let posted: Vec<k8s_openapi::api::core::v1::NodeCondition> = serde_json::from_value(json!([
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "MemoryPressure", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]))
        .unwrap();
        keep_transition_times(&mut s, &posted);
        let time_of = |type_: &str| {
            s["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == type_)
                .unwrap()["lastTransitionTime"]
                .clone()
        };
        assert_eq!(time_of("Ready"), "2026-01-01T00:00:00Z");
        // MemoryPressure went from True to False: it transitions now.
        assert_ne!(time_of("MemoryPressure"), "2026-01-01T00:00:00Z");
        assert_ne!(time_of("DiskPressure"), serde_json::Value::Null);
    }
}
