//! Pods: defaulting of the pod spec (shared with the workload templates), validation of
//! containers, the update rules for a running pod, graceful deletion and the printer.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{array_at, int_at, object_mut, or_none, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::{self, FieldError};

/// The strategy of `pods`.
pub struct PodStrategy;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

impl Strategy for PodStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        let qos = qos_class(obj.get("spec"));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    fn default(&self, obj: &mut Value) {
        default_pod_spec(object_mut(obj, "spec"));
        default_requests_to_limits(object_mut(obj, "spec"));
        // The DefaultTolerationSeconds admission plugin: tolerate a not-ready or unreachable
        // node for five minutes before eviction.
        let spec = object_mut(obj, "spec");
        let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(list) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let present = list.iter().any(|t| {
                    str_at(t, "/key") == key
                        && (str_at(t, "/effect") == "NoExecute" || str_at(t, "/effect").is_empty())
                });
                if !present {
                    list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_pod_spec(obj.get("spec"), "spec")
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        // Ephemeral containers change only through `pods/ephemeralcontainers`.
        copy_ephemeral_containers(old, new);
    }

    fn prepare_for_subresource(&self, subresource: &str, old: &Value, new: &mut Value) {
        if subresource == "ephemeralcontainers" {
            // Only spec.ephemeralContainers of the request counts.
            let mut obj = old.clone();
            copy_ephemeral_containers(new, &mut obj);
            *new = obj;
        }
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let ephemeral = validate_ephemeral_update(new, old);
        if !ephemeral.is_empty() {
            return ephemeral;
        }
        // Only images, activeDeadlineSeconds, tolerations and terminationGracePeriodSeconds
        // of a pod may change (ValidatePodUpdate); ephemeral containers were checked above.
        let mask = |spec: Option<&Value>| {
            let mut spec = spec.cloned().unwrap_or(Value::Null);
            for list in ["containers", "initContainers"] {
                if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
                    for c in containers {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
            if let Some(spec) = spec.as_object_mut() {
                for field in [
                    "activeDeadlineSeconds",
                    "tolerations",
                    "terminationGracePeriodSeconds",
                    "ephemeralContainers",
                ] {
                    spec.remove(field);
                }
            }
            spec
        };
        if mask(new.get("spec")) != mask(old.get("spec")) {
            return vec![FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            )];
        }
        Vec::new()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            Column::text("Status", "The aggregate status of the containers in this pod."),
            Column::text("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            Column::age(),
            Column::wide("IP", "The IP address assigned to the pod"),
            Column::wide("Node", "The name of the node the pod is assigned to"),
            Column::wide("Nominated Node", "The name of the node the pod is nominated to"),
            Column::wide("Readiness Gates", "Pod readiness gates"),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        // Sidecars (init containers with `restartPolicy: Always`) count as containers.
        let init_statuses = array_at(obj, "/status/initContainerStatuses");
        let sidecar_statuses: Vec<&Value> = init_statuses
            .iter()
            .filter(|s| is_sidecar(obj, str_at(s, "/name")))
            .collect();
        let total = array_at(obj, "/spec/containers").len()
            + array_at(obj, "/spec/initContainers")
                .iter()
                .filter(|c| str_at(c, "/restartPolicy") == "Always")
                .count();
        let statuses = array_at(obj, "/status/containerStatuses");
        let is_ready = |s: &&Value| s.get("ready").and_then(Value::as_bool) == Some(true);
        let started = |s: &&Value| s.get("started").and_then(Value::as_bool) == Some(true);
        let ready = statuses.iter().filter(is_ready).count()
            + sidecar_statuses
                .iter()
                .filter(|s| started(s) && is_ready(s))
                .count();
        // While the pod initializes, the restarts shown are its init containers' (as
        // kubectl's printer counts them); after, its sidecars' and app containers'.
        let status = pod_status(obj);
        let counted: Vec<&Value> = if status.starts_with("Init:") {
            init_statuses.iter().collect()
        } else {
            sidecar_statuses.into_iter().chain(statuses).collect()
        };
        let restarts: i64 = counted.iter().map(|s| int_at(s, "/restartCount")).sum();
        let last_restart = counted
            .iter()
            .filter_map(|s| s.pointer("/lastState/terminated/finishedAt"))
            .filter_map(Value::as_str)
            .max();
        let restarts = match last_restart {
            Some(at) if restarts > 0 => {
                format!("{restarts} ({} ago)", table::age_of(Some(&json!(at)), now))
            }
            _ => restarts.to_string(),
        };
        let gates = array_at(obj, "/spec/readinessGates");
        let gates = if gates.is_empty() {
            json!("<none>")
        } else {
            let conditions = array_at(obj, "/status/conditions");
            let passing = gates
                .iter()
                .filter(|g| {
                    let t = str_at(g, "/conditionType");
                    conditions
                        .iter()
                        .any(|c| str_at(c, "/type") == t && str_at(c, "/status") == "True")
                })
                .count();
            json!(format!("{passing}/{}", gates.len()))
        };
        vec![
            table::name_cell(obj),
            json!(format!("{ready}/{total}")),
            json!(status),
            json!(restarts),
            table::age_cell(obj, now),
            or_none(str_at(obj, "/status/podIP")),
            or_none(str_at(obj, "/spec/nodeName")),
            or_none(str_at(obj, "/status/nominatedNodeName")),
            gates,
        ]
    }

    fn graceful_delete(&self, obj: &Value, grace_period: Option<i64>) -> Option<i64> {
        // Unscheduled and finished pods go at once; a pod on a node gets its grace period
        // and the kubelet completes the deletion (pod strategy's CheckGracefulDelete).
        let phase = str_at(obj, "/status/phase");
        if str_at(obj, "/spec/nodeName").is_empty() || phase == "Succeeded" || phase == "Failed" {
            return None;
        }
        let grace = grace_period
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        (grace > 0).then_some(grace)
    }
}

/// Whether `pod`'s init container `name` is a sidecar (`restartPolicy: Always`).
fn is_sidecar(pod: &Value, name: &str) -> bool {
    array_at(pod, "/spec/initContainers")
        .iter()
        .any(|c| str_at(c, "/name") == name && str_at(c, "/restartPolicy") == "Always")
}

/// What the STATUS column says about a pod (kubectl's printPod, simplified).
fn pod_status(obj: &Value) -> String {
    let mut reason = str_at(obj, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = str_at(obj, "/status/phase").to_owned();
    }
    for (i, status) in array_at(obj, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        // A sidecar that has started holds nothing up.
        if is_sidecar(obj, str_at(status, "/name"))
            && status.get("started").and_then(Value::as_bool) == Some(true)
        {
            continue;
        }
        if let Some(t) = status.pointer("/state/terminated") {
            if int_at(t, "/exitCode") == 0 {
                continue;
            }
            reason = format!(
                "Init:{}",
                t.get("reason").and_then(Value::as_str).unwrap_or("Error")
            );
            break;
        }
        if let Some(w) = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
        {
            if w != "PodInitializing" {
                reason = format!("Init:{w}");
                break;
            }
        }
        let total = array_at(obj, "/spec/initContainers").len();
        reason = format!("Init:{i}/{total}");
        break;
    }
    if !reason.starts_with("Init:") {
        for status in array_at(obj, "/status/containerStatuses").iter().rev() {
            if let Some(w) = status
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
            {
                reason = w.to_owned();
            } else if let Some(t) = status.pointer("/state/terminated") {
                reason = match t.get("reason").and_then(Value::as_str) {
                    Some(r) if !r.is_empty() => r.to_owned(),
                    _ if int_at(t, "/signal") != 0 => format!("Signal:{}", int_at(t, "/signal")),
                    _ => format!("ExitCode:{}", int_at(t, "/exitCode")),
                };
            }
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some() && reason != "NodeLost" {
        reason = "Terminating".to_owned();
    }
    reason
}

/// The QoS class of a pod spec, as the kubelet and the API server compute it: BestEffort
/// when no container (init containers included) requests or limits cpu or memory;
/// Guaranteed when every container limits both and the summed requests equal the summed
/// limits (compared as quantities, so `1` equals `1000m`); Burstable otherwise. Zero
/// quantities count as unset; a missing request counts as its limit.
pub(crate) fn qos_class(spec: Option<&Value>) -> &'static str {
    use crate::quantity::Quantity;
    use std::collections::BTreeMap;
    const TRACKED: [&str; 2] = ["cpu", "memory"];
    let containers = ["initContainers", "containers"]
        .into_iter()
        .flat_map(|list| {
            spec.and_then(|s| s.get(list))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        });
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for container in containers {
        let add = |totals: &mut BTreeMap<&'static str, Quantity>, path: &str| {
            let mut found = Vec::new();
            for name in TRACKED {
                // A request left out defaults to the limit (SetDefaults_Pod), which may not
                // have run yet.
                let quantity = container
                    .pointer(&format!("/resources/{path}/{name}"))
                    .or_else(|| {
                        (path == "requests")
                            .then(|| container.pointer(&format!("/resources/limits/{name}")))
                            .flatten()
                    })
                    .and_then(Quantity::from_json)
                    .filter(|q| !q.is_zero());
                if let Some(q) = quantity {
                    let total = totals.entry(name).or_insert(Quantity::ZERO);
                    *total = total.add(&q);
                    found.push(name);
                }
            }
            found
        };
        add(&mut requests, "requests");
        if add(&mut limits, "limits").len() < TRACKED.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    let equal = requests.iter().all(|(name, request)| {
        limits
            .get(name)
            .is_some_and(|l| l.nanos() == request.nanos())
    });
    if guaranteed && equal && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Requests default to limits where only limits are set (`SetDefaults_Pod`; pods only, not
/// pod templates, as in Kubernetes).
fn default_requests_to_limits(spec: &mut serde_json::Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(limits) = container
                .pointer("/resources/limits")
                .and_then(Value::as_object)
                .filter(|l| !l.is_empty())
                .cloned()
            else {
                continue;
            };
            let requests = object_mut(&mut container["resources"], "requests");
            for (name, value) in limits {
                requests.entry(name).or_insert(value);
            }
        }
    }
}

/// Sets `spec.ephemeralContainers` of `to` to those of `from` (removes it when `from` has
/// none).
fn copy_ephemeral_containers(from: &Value, to: &mut Value) {
    let ephemeral = from.pointer("/spec/ephemeralContainers").cloned();
    let spec = object_mut(to, "spec");
    match ephemeral {
        Some(list) => {
            spec.insert("ephemeralContainers".into(), list);
        }
        None => {
            spec.remove("ephemeralContainers");
        }
    }
}

/// The fields an ephemeral container may not set (`validateEphemeralContainers`).
const EPHEMERAL_FORBIDDEN: &[&str] = &[
    "lifecycle",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "startupProbe",
];

/// Checks the ephemeral containers of a pod spec: each forbids ports, probes, lifecycle
/// hooks and resources, and targets a container of the pod. (Names are checked with the
/// other containers', in [`validate_pod_spec`].)
fn validate_ephemeral_containers(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let targets: HashSet<&str> = array_at(spec, "/containers")
        .iter()
        .chain(array_at(spec, "/initContainers").iter())
        .map(|c| str_at(c, "/name"))
        .collect();
    for (i, c) in array_at(spec, "/ephemeralContainers").iter().enumerate() {
        let at = format!("{path}.ephemeralContainers[{i}]");
        for field in EPHEMERAL_FORBIDDEN {
            if c.get(*field).is_some_and(|v| !v.is_null()) {
                errs.push(FieldError::forbidden(
                    format!("{at}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        let resources = c.get("resources").and_then(Value::as_object);
        if resources.is_some_and(|r| {
            r.values()
                .any(|v| v.as_object().is_some_and(|m| !m.is_empty()))
        }) {
            errs.push(FieldError::forbidden(
                format!("{at}.resources"),
                "cannot be set for an Ephemeral Container",
            ));
        }
        let target = str_at(c, "/targetContainerName");
        if !target.is_empty() && !targets.contains(target) {
            errs.push(FieldError::invalid(
                format!("{at}.targetContainerName"),
                json!(target),
                "must be the name of one of the pod's containers",
            ));
        }
    }
    errs
}

/// An update of ephemeral containers only adds (`ValidatePodEphemeralContainersUpdate`):
/// the existing ones are neither changed nor removed.
fn validate_ephemeral_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let new_list = new
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut errs = Vec::new();
    for existing in old
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = str_at(existing, "/name");
        match new_list.iter().find(|c| str_at(c, "/name") == name) {
            None => errs.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers {name:?} may not be removed"),
            )),
            Some(c) if c != existing => errs.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers {name:?} may not be changed"),
            )),
            Some(_) => {}
        }
    }
    errs
}

/// Sets the defaults of a pod spec (`SetDefaults_PodSpec`, `SetDefaults_Container`).
pub(crate) fn default_pod_spec(spec: &mut serde_json::Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    // `priority` and `preemptionPolicy` come from the Priority admission plugin (pods only,
    // not templates).
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(container);
            }
        }
    }
}

fn default_container(c: &mut serde_json::Map<String, Value>) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // `:latest` (or no tag) pulls always; a tag or digest pulls if not present.
    let last = image.rsplit('/').next().unwrap_or("");
    let pull = if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    set_default(c, "imagePullPolicy", json!(pull));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

/// Validates a pod spec found at `path` (`spec`, `spec.template.spec`).
pub(crate) fn validate_pod_spec(spec: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = spec.cloned().unwrap_or(Value::Null);
    let containers = array_at(&spec, "/containers");
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    errs.extend(validate_ephemeral_containers(&spec, path));
    for (list, field) in [
        (array_at(&spec, "/initContainers"), "initContainers"),
        (containers, "containers"),
        (
            array_at(&spec, "/ephemeralContainers"),
            "ephemeralContainers",
        ),
    ] {
        for (i, c) in list.iter().enumerate() {
            let at = format!("{path}.{field}[{i}]");
            let name = str_at(c, "/name");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{at}.name"), ""));
            } else {
                errs.extend(validation::errors_for(
                    &format!("{at}.name"),
                    name,
                    validation::dns1123_label(name),
                ));
                if !names.insert(name.to_owned()) {
                    errs.push(FieldError::duplicate(format!("{at}.name"), json!(name)));
                }
            }
            if str_at(c, "/image").trim().is_empty() {
                errs.push(FieldError::required(format!("{at}.image"), ""));
            }
            let pull = str_at(c, "/imagePullPolicy");
            if !pull.is_empty() && !PULL_POLICIES.contains(&pull) {
                errs.push(FieldError::not_supported(
                    format!("{at}.imagePullPolicy"),
                    json!(pull),
                    PULL_POLICIES,
                ));
            }
            for (j, port) in array_at(c, "/ports").iter().enumerate() {
                let port_path = format!("{at}.ports[{j}]");
                let number = int_at(port, "/containerPort");
                if !(1..=65535).contains(&number) {
                    errs.push(FieldError::invalid(
                        format!("{port_path}.containerPort"),
                        json!(number),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                let protocol = str_at(port, "/protocol");
                if !protocol.is_empty() && !PROTOCOLS.contains(&protocol) {
                    errs.push(FieldError::not_supported(
                        format!("{port_path}.protocol"),
                        json!(protocol),
                        PROTOCOLS,
                    ));
                }
            }
        }
    }
    let restart = str_at(&spec, "/restartPolicy");
    if !restart.is_empty() && !RESTART_POLICIES.contains(&restart) {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            json!(restart),
            RESTART_POLICIES,
        ));
    }
    let dns = str_at(&spec, "/dnsPolicy");
    if !dns.is_empty() && !DNS_POLICIES.contains(&dns) {
        errs.push(FieldError::not_supported(
            format!("{path}.dnsPolicy"),
            json!(dns),
            DNS_POLICIES,
        ));
    }
    errs.extend(validate_sysctls(
        array_at(&spec, "/securityContext/sysctls"),
        &format!("{path}.securityContext.sysctls"),
    ));
    errs
}

/// The longest sysctl name.
const SYSCTL_MAX_LENGTH: usize = 253;
/// A sysctl name: segments separated by `.` or `/` (`ValidateSysctls`).
const SYSCTL_NAME_FORMAT: &str =
    r"([a-z0-9]([-_a-z0-9\/]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9\/]*[a-z0-9])?";

/// Validates `securityContext.sysctls`: each name present, well-formed and once.
fn validate_sysctls(sysctls: &[Value], path: &str) -> Vec<FieldError> {
    static NAME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(&format!("^{SYSCTL_NAME_FORMAT}$")).expect("sysctl name regex")
    });
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for (i, sysctl) in sysctls.iter().enumerate() {
        let at = format!("{path}[{i}].name");
        let name = str_at(sysctl, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(at, ""));
        } else if name.len() > SYSCTL_MAX_LENGTH || !NAME.is_match(name) {
            errs.push(FieldError::invalid(
                at,
                json!(name),
                format!(
                    "must have at most {SYSCTL_MAX_LENGTH} characters and match regex {SYSCTL_NAME_FORMAT}"
                ),
            ));
        } else if !names.insert(name) {
            errs.push(FieldError::duplicate(at, json!(name)));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::qos_class;

    fn spec(containers: serde_json::Value, init: serde_json::Value) -> serde_json::Value {
        json!({"containers": containers, "initContainers": init})
    }

    #[test]
    fn ephemeral_containers_change_only_through_their_subresource_and_only_by_additions() {
        use crate::registry::Strategy as _;
        let strategy = super::PodStrategy;
        let old = json!({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {
            "containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}});
        // Through the main resource: kept as they were.
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"] = json!(null);
        strategy.prepare_for_update(&old, &mut new);
        assert_eq!(new, old);
        // Through the subresource: only they change.
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"x": "y"});
        new["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "more", "image": "busybox", "targetContainerName": "app"}));
        strategy.prepare_for_subresource("ephemeralcontainers", &old, &mut new);
        assert_eq!(new["metadata"]["labels"], json!({"a": "b"}));
        assert!(strategy.validate(&new).is_empty());
        assert!(strategy.validate_update(&new, &old).is_empty());
        let messages = |errs: Vec<crate::validation::FieldError>| -> Vec<String> {
            errs.iter().map(|e| e.to_string()).collect()
        };
        let mut removed = old.clone();
        removed["spec"]["ephemeralContainers"] = json!([]);
        assert_eq!(
            messages(strategy.validate_update(&removed, &old)),
            ["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed"]
        );
        let mut changed = old.clone();
        changed["spec"]["ephemeralContainers"][0]["image"] = json!("alpine");
        assert!(
            messages(strategy.validate_update(&changed, &old))[0].contains("may not be changed")
        );
        // Fields an ephemeral container may not have, an unknown target, a taken name.
        let bad = json!({"spec": {"containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [
                {"name": "e", "image": "busybox", "ports": [{"containerPort": 80}],
                 "startupProbe": {}, "resources": {"requests": {"cpu": "1"}}, "targetContainerName": "x"},
                {"name": "app", "image": "busybox", "resources": {}}]}});
        let errs = messages(strategy.validate(&bad));
        assert_eq!(
            errs,
            [
                "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[0].startupProbe: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[0].resources: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[0].targetContainerName: Invalid value: \"x\": must be the name of one of the pod's containers",
                "spec.ephemeralContainers[1].name: Duplicate value: \"app\"",
            ]
        );
    }

    #[test]
    fn invalid_sysctl_names_are_refused_by_name() {
        let spec = json!({"containers": [{"name": "c", "image": "busybox"}],
            "securityContext": {"sysctls": [
                {"name": "foo-", "value": "bar"}, {"name": "kernel.shmmax", "value": "1"},
                {"name": "safe-and-unsafe", "value": "1"}, {"name": "bar..", "value": "42"},
                {"name": "net/ipv4/conf/eth0.1/forwarding", "value": "1"},
                {"name": "kernel.shmmax", "value": "2"}]}});
        let errs: Vec<String> = super::validate_pod_spec(Some(&spec), "spec")
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with(
            "spec.securityContext.sysctls[0].name: Invalid value: \"foo-\": must have at most 253 characters"
        ), "{errs:?}");
        assert!(
            errs[1].starts_with("spec.securityContext.sysctls[3].name: Invalid value: \"bar..\"")
        );
        assert_eq!(
            errs[2],
            "spec.securityContext.sysctls[5].name: Duplicate value: \"kernel.shmmax\""
        );
    }

    #[test]
    fn an_initializing_pod_shows_its_init_containers_restarts() {
        use crate::registry::Strategy as _;
        let now = jiff::Timestamp::now();
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending",
                "initContainerStatuses": [{"name": "i", "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                "containerStatuses": [{"name": "c", "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        let row = super::PodStrategy.row(&pod, now);
        assert_eq!(row[2], json!("Init:CrashLoopBackOff"));
        assert_eq!(row[3], json!("2"));
    }

    #[test]
    fn sidecars_count_as_containers_once_started() {
        use crate::registry::Strategy as _;
        let now = jiff::Timestamp::now();
        let pod = |started: bool| {
            json!({"metadata": {"name": "p"}, "spec": {
                "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "c"}]},
                "status": {"phase": if started { "Running" } else { "Pending" },
                    "initContainerStatuses": [
                        {"name": "setup", "restartCount": 0, "ready": false,
                         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "proxy", "restartCount": 1, "ready": started, "started": started,
                         "state": {"running": {}}}],
                    "containerStatuses": [{"name": "c", "restartCount": 0, "ready": started,
                        "state": if started { json!({"running": {}}) }
                                 else { json!({"waiting": {"reason": "PodInitializing"}}) }}]}})
        };
        let row = super::PodStrategy.row(&pod(false), now);
        assert_eq!(row[1], json!("0/2"));
        assert_eq!(row[2], json!("Init:1/2"));
        let row = super::PodStrategy.row(&pod(true), now);
        assert_eq!(row[1], json!("2/2"));
        assert_eq!(row[2], json!("Running"));
        assert_eq!(row[3], json!("1"));
    }

    #[test]
    fn quantities_compare_by_value_not_text() {
        let c = json!([{"name": "a", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1000m", "memory": "1073741824"}}}]);
        assert_eq!(qos_class(Some(&spec(c, json!([])))), "Guaranteed");
    }

    #[test]
    fn init_containers_count() {
        let limited = json!({"requests": {"cpu": "1", "memory": "1Gi"},
                             "limits": {"cpu": "1", "memory": "1Gi"}});
        let c = json!([{"name": "a", "resources": limited}]);
        assert_eq!(qos_class(Some(&spec(c.clone(), json!([])))), "Guaranteed");
        let init = json!([{"name": "i", "resources": {"requests": {"cpu": "100m"}}}]);
        assert_eq!(qos_class(Some(&spec(c, init))), "Burstable");
        let init_only = json!([{"name": "i", "resources": {"limits": {"memory": "1Mi"}}}]);
        assert_eq!(
            qos_class(Some(&spec(json!([{"name": "a"}]), init_only))),
            "Burstable"
        );
    }

    #[test]
    fn zero_and_missing_quantities_are_best_effort() {
        let c = json!([{"name": "a", "resources": {"requests": {"cpu": "0"}}}, {"name": "b"}]);
        assert_eq!(qos_class(Some(&spec(c, json!([])))), "BestEffort");
        assert_eq!(qos_class(None), "BestEffort");
    }

    #[test]
    fn limits_alone_are_guaranteed() {
        let c = json!([{"name": "a", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]);
        assert_eq!(qos_class(Some(&spec(c, json!([])))), "Guaranteed");
    }

    #[test]
    fn a_missing_limit_is_burstable() {
        let c = json!([{"name": "a", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1"}}}]);
        assert_eq!(qos_class(Some(&spec(c, json!([])))), "Burstable");
    }
}
