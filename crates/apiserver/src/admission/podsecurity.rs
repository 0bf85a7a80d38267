//! Pod Security Admission: the privileged, baseline and restricted Pod Security Standards,
//! chosen per namespace by its `pod-security.kubernetes.io/*` labels.
//!
//! As kube-apiserver's built-in plugin with its default configuration (everything
//! privileged unless labelled, no exemptions): `enforce` refuses pods, `warn` adds response
//! warnings for pods and for the pod templates of workload resources, `audit` would only
//! annotate audit events, which skiff does not write. Checks run in Kubernetes' order
//! (baseline checks by id, then restricted ones) so messages read the same.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{json, Map, Value};

use super::{list_all, Attributes, Operation, Warnings};
use crate::handlers::Api;
use crate::kinds::{array_at, str_at, REGISTRY};
use crate::status::{ApiError, ApiResult};
use crate::validation::FieldError;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Unrestricted.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Hardened best practice.
    Restricted,
}

impl Level {
    /// The level named by a label value.
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    /// The label value of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The newest policy version: the Kubernetes minor skiff's API corresponds to.
fn latest_minor() -> u32 {
    crate::handlers::KUBERNETES_MINOR
        .parse()
        .unwrap_or(u32::MAX)
}

/// A level at a policy version (`v1.<minor>`; `None` is `latest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LevelVersion {
    level: Level,
    minor: Option<u32>,
}

impl LevelVersion {
    const PRIVILEGED: LevelVersion = LevelVersion {
        level: Level::Privileged,
        minor: None,
    };

    /// The minor version the checks are chosen by.
    fn effective_minor(&self) -> u32 {
        self.minor.unwrap_or(u32::MAX).min(latest_minor())
    }
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(minor) => write!(f, "{}:v1.{minor}", self.level.as_str()),
            None => write!(f, "{}:latest", self.level.as_str()),
        }
    }
}

/// The levels of a namespace's three modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Policy {
    enforce: LevelVersion,
    warn: LevelVersion,
}

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// The policy of a namespace's labels, with the errors of malformed labels. A malformed
/// enforce label enforces `restricted:latest` (failing closed).
fn policy(labels: Option<&Map<String, Value>>) -> (Policy, Vec<FieldError>) {
    let mut errors = Vec::new();
    let empty = Map::new();
    let labels = labels.unwrap_or(&empty);
    let mut mode = |name: &str| {
        let level_key = format!("{LABEL_PREFIX}{name}");
        let version_key = format!("{LABEL_PREFIX}{name}-version");
        let mut lv = LevelVersion::PRIVILEGED;
        let mut invalid = false;
        if let Some(value) = labels.get(&level_key) {
            let text = value.as_str().unwrap_or("");
            match Level::parse(text) {
                Some(level) => lv.level = level,
                None => {
                    invalid = true;
                    errors.push(FieldError::invalid(
                        format!("metadata.labels[{level_key}]"),
                        json!(text),
                        "must be one of privileged, baseline, restricted",
                    ));
                }
            }
        }
        if let Some(value) = labels.get(&version_key) {
            let text = value.as_str().unwrap_or("");
            match parse_version(text) {
                Some(minor) => lv.minor = minor,
                None => {
                    invalid = true;
                    errors.push(FieldError::invalid(
                        format!("metadata.labels[{version_key}]"),
                        json!(text),
                        "must be \"latest\" or \"v1.x\"",
                    ));
                }
            }
        }
        (lv, invalid)
    };
    let (mut enforce, enforce_invalid) = mode("enforce");
    let _ = mode("audit");
    let (warn, _) = mode("warn");
    if enforce_invalid {
        enforce = LevelVersion {
            level: Level::Restricted,
            minor: None,
        };
    }
    (Policy { enforce, warn }, errors)
}

/// `latest` is `Some(None)`, `v1.N` is `Some(Some(N))`; anything else `None`.
fn parse_version(text: &str) -> Option<Option<u32>> {
    if text == "latest" {
        return Some(None);
    }
    let minor = text.strip_prefix("v1.")?;
    let canonical = !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
        && (minor == "0" || !minor.starts_with('0'));
    canonical.then(|| minor.parse().ok()).flatten().map(Some)
}

/// Refuses (enforce) or warns about (warn) pods violating their namespace's level.
pub(super) async fn validate(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if attrs.operation == Operation::Delete {
        return Ok(());
    }
    match (attrs.def.group, attrs.def.kind) {
        ("", "Namespace") => validate_namespace(api, attrs, obj, warnings).await,
        ("", "Pod") => validate_pod(api, attrs, obj, warnings).await,
        (group, kind) => match template_pointer(group, kind) {
            Some(pointer) => validate_template(api, attrs, obj, pointer, warnings).await,
            None => Ok(()),
        },
    }
}

/// Where a workload resource keeps its pod template.
fn template_pointer(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some("/spec/template"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        ("", "PodTemplate") => Some("/template"),
        _ => None,
    }
}

async fn namespace_policy(api: &Api, namespace: &str) -> ApiResult<(Policy, bool)> {
    let def = REGISTRY
        .by_kind("", "v1", "Namespace")
        .ok_or_else(|| ApiError::internal("namespaces are not served"))?;
    // The mirror first; the store only for a namespace newer than the mirror.
    let ns = match api.reflector().get(def, "", namespace) {
        Some(ns) => Some(ns),
        None => api
            .storage()
            .get(def, "", namespace)
            .await?
            .map(|(ns, _)| std::sync::Arc::new(ns)),
    };
    let labels = ns.and_then(|ns| ns.pointer("/metadata/labels").cloned());
    let (policy, errors) = policy(labels.as_ref().and_then(Value::as_object));
    Ok((policy, errors.is_empty()))
}

async fn validate_pod(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    // Writes through these subresources cannot change what the checks look at.
    if !matches!(attrs.subresource, "" | "ephemeralcontainers") {
        return Ok(());
    }
    let (policy, valid) = namespace_policy(api, attrs.namespace).await?;
    if valid && policy.enforce.level == Level::Privileged && policy.warn.level == Level::Privileged
    {
        return Ok(());
    }
    if let Some(old) = attrs.old {
        if !significant_update(obj, old) {
            return Ok(());
        }
    }
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let violations = evaluate(policy.enforce, meta, spec);
    if !violations.is_empty() {
        return Err(super::forbidden(
            attrs,
            obj,
            &format!(
                "violates PodSecurity \"{}\": {}",
                policy.enforce,
                details(&violations)
            ),
        ));
    }
    warn(policy.warn, meta, spec, warnings);
    Ok(())
}

async fn validate_template(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    pointer: &str,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if !attrs.subresource.is_empty() {
        return Ok(());
    }
    let Some(template) = obj.pointer(pointer) else {
        return Ok(());
    };
    if let Some(old) = attrs.old {
        if old.pointer(pointer) == Some(template) {
            return Ok(());
        }
    }
    let (policy, _) = namespace_policy(api, attrs.namespace).await?;
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let spec = template.get("spec").unwrap_or(&Value::Null);
    warn(policy.warn, meta, spec, warnings);
    Ok(())
}

fn warn(level: LevelVersion, meta: &Value, spec: &Value, warnings: &mut Warnings) {
    let violations = evaluate(level, meta, spec);
    if !violations.is_empty() {
        warnings.push(format!(
            "would violate PodSecurity \"{level}\": {}",
            details(&violations)
        ));
    }
}

/// Whether a pod update can change the outcome of the checks (`isSignificantPodUpdate`):
/// most of a pod spec is immutable, so only images, the set of containers and seccomp
/// annotations matter.
fn significant_update(new: &Value, old: &Value) -> bool {
    let annotation = |pod: &Value, key: &str| -> Option<Value> {
        pod.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .cloned()
    };
    if annotation(new, "seccomp.security.alpha.kubernetes.io/pod")
        != annotation(old, "seccomp.security.alpha.kubernetes.io/pod")
    {
        return true;
    }
    let container_changed = |n: &Value, o: &Value| {
        let key = format!(
            "container.seccomp.security.alpha.kubernetes.io/{}",
            str_at(n, "/name")
        );
        n.get("image") != o.get("image") || annotation(new, &key) != annotation(old, &key)
    };
    for list in ["/spec/containers", "/spec/initContainers"] {
        let (n, o) = (array_at(new, list), array_at(old, list));
        if n.len() != o.len() || n.iter().zip(o).any(|(n, o)| container_changed(n, o)) {
            return true;
        }
    }
    let old_ephemeral = array_at(old, "/spec/ephemeralContainers");
    array_at(new, "/spec/ephemeralContainers").iter().any(|n| {
        match old_ephemeral
            .iter()
            .find(|o| str_at(o, "/name") == str_at(n, "/name"))
        {
            Some(o) => container_changed(n, o),
            None => true,
        }
    })
}

/// Enforce level changes warn about the namespace's existing pods that would violate the
/// new level (`EvaluatePodsInNamespace`); malformed labels are refused.
async fn validate_namespace(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if !attrs.subresource.is_empty() {
        return Ok(());
    }
    let labels = |o: &Value| {
        o.pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
    };
    let (new_policy, new_errors) = policy(labels(obj).as_ref());
    let invalid = |errors: &[FieldError]| {
        ApiError::invalid("Namespace", "", str_at(obj, "/metadata/name"), errors)
    };
    let Some(old) = attrs.old else {
        if !new_errors.is_empty() {
            return Err(invalid(&new_errors));
        }
        return Ok(());
    };
    let (old_policy, old_errors) = policy(labels(old).as_ref());
    let same_errors = new_errors.len() == old_errors.len()
        && new_errors
            .iter()
            .zip(&old_errors)
            .all(|(a, b)| a.to_string() == b.to_string());
    if !new_errors.is_empty() && (old_errors.is_empty() || !same_errors) {
        return Err(invalid(&new_errors));
    }
    let (new, old) = (new_policy.enforce, old_policy.enforce);
    if new == old
        || new.level == Level::Privileged
        || (new.minor == old.minor && new.level <= old.level)
    {
        return Ok(());
    }
    let Some(pods_def) = REGISTRY.by_kind("", "v1", "Pod") else {
        return Ok(());
    };
    let pods = match list_all(api.storage(), pods_def, attrs.name).await {
        Ok(pods) => pods,
        Err(_) => {
            warnings
                .push("failed to list pods while checking new PodSecurity enforce level".into());
            return Ok(());
        }
    };
    warnings.extend(existing_pod_warnings(attrs.name, new, &pods));
    Ok(())
}

/// At most this many existing pods are checked on an enforce level change.
const MAX_PODS_CHECKED: usize = 3000;

fn existing_pod_warnings(namespace: &str, level: LevelVersion, pods: &[Value]) -> Vec<String> {
    // Reason summary -> (first pod name, count), in first-seen order.
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    let checked = &pods[..pods.len().min(MAX_PODS_CHECKED)];
    for pod in checked {
        let violations = evaluate(
            level,
            pod.get("metadata").unwrap_or(&Value::Null),
            pod.get("spec").unwrap_or(&Value::Null),
        );
        if violations.is_empty() {
            continue;
        }
        let reasons: Vec<&str> = violations.iter().map(|(r, _)| r.as_str()).collect();
        let reasons = reasons.join(", ");
        let name = str_at(pod, "/metadata/name").to_owned();
        match seen.iter_mut().find(|(r, _, _)| *r == reasons) {
            Some((_, first, count)) => {
                *count += 1;
                if name < *first {
                    *first = name;
                }
            }
            None => seen.push((reasons, name, 1)),
        }
    }
    let mut warnings = Vec::new();
    if checked.len() < pods.len() {
        warnings.push(format!(
            "new PodSecurity enforce level only checked against the first {} of {} existing pods",
            checked.len(),
            pods.len()
        ));
    }
    if !seen.is_empty() {
        warnings.push(format!(
            "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{level}\""
        ));
    }
    let mut per_pod: Vec<String> = seen
        .into_iter()
        .map(|(reasons, first, count)| match count {
            1 => format!("{first}: {reasons}"),
            2 => format!("{first} (and 1 other pod): {reasons}"),
            n => format!("{first} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    per_pod.sort();
    warnings.extend(per_pod);
    warnings
}

/// A failed check: its reason and detail.
type Violation = (String, String);

/// `reason (detail), reason (detail)`, as `ForbiddenDetail` of the aggregate.
fn details(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|(reason, detail)| {
            if detail.is_empty() {
                reason.clone()
            } else {
                format!("{reason} ({detail})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the checks of a level over a pod's metadata and spec (or a template's).
fn evaluate(lv: LevelVersion, meta: &Value, spec: &Value) -> Vec<Violation> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let minor = lv.effective_minor();
    let restricted = lv.level == Level::Restricted;
    let pod = Pod { meta, spec };
    // Baseline checks by id, then restricted ones by id; a restricted check replaces the
    // baseline check it overrides (from the version it exists in).
    let mut results = vec![
        app_armor(&pod),
        if restricted && minor >= 22 {
            None
        } else {
            capabilities_baseline(&pod)
        },
        host_namespaces(&pod),
        if restricted {
            None
        } else {
            host_path_volumes(&pod)
        },
        host_ports(&pod),
        privileged(&pod),
        proc_mount(&pod),
        se_linux_options(&pod, minor),
        if restricted && minor >= 19 {
            None
        } else {
            seccomp_baseline(&pod)
        },
        sysctls(&pod, minor),
        windows_host_process(&pod),
    ];
    if restricted {
        let windows = minor >= 25 && str_at(spec, "/os/name") == "windows";
        results.extend([
            if minor >= 8 && !windows {
                allow_privilege_escalation(&pod)
            } else {
                None
            },
            if minor >= 22 && !windows {
                capabilities_restricted(&pod)
            } else {
                None
            },
            restricted_volumes(&pod),
            run_as_non_root(&pod),
            if minor >= 23 { run_as_user(&pod) } else { None },
            if minor >= 19 && !windows {
                seccomp_restricted(&pod)
            } else {
                None
            },
        ]);
    }
    results.into_iter().flatten().collect()
}

/// The parts of a pod the checks read.
struct Pod<'a> {
    meta: &'a Value,
    spec: &'a Value,
}

impl<'a> Pod<'a> {
    /// Init containers, containers, then ephemeral containers (`visitContainers`).
    fn containers(&self) -> impl Iterator<Item = &'a Value> {
        let spec = self.spec;
        ["/initContainers", "/containers", "/ephemeralContainers"]
            .into_iter()
            .flat_map(move |list| array_at(spec, list).iter())
    }

    /// The pod's security context field at `pointer` (`/seccompProfile/type`).
    fn pod_context(&self, pointer: &str) -> Option<&'a Value> {
        self.spec
            .pointer(&format!("/securityContext{pointer}"))
            .filter(|v| !v.is_null())
    }
}

/// A container's security context field at `pointer`.
fn context<'a>(container: &'a Value, pointer: &str) -> Option<&'a Value> {
    container
        .pointer(&format!("/securityContext{pointer}"))
        .filter(|v| !v.is_null())
}

fn name(container: &Value) -> String {
    str_at(container, "/name").to_owned()
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| quote(s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Go `%q` of ordinary text.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some((reason.into(), detail.into()))
}

fn app_armor(pod: &Pod<'_>) -> Option<Violation> {
    let allowed = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut setters = Vec::new();
    let mut bad_values = BTreeSet::new();
    if let Some(t) = pod.pod_context("/appArmorProfile/type") {
        let t = t.as_str().unwrap_or("");
        if !allowed(t) {
            setters.push("pod".to_owned());
            bad_values.insert(t.to_owned());
        }
    }
    let mut bad = Vec::new();
    for c in pod.containers() {
        if let Some(t) = context(c, "/appArmorProfile/type") {
            let t = t.as_str().unwrap_or("");
            if !allowed(t) {
                bad.push(name(c));
                bad_values.insert(t.to_owned());
            }
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    let mut values: Vec<String> = bad_values.into_iter().collect();
    let mut annotations: Vec<String> = pod
        .meta
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, v)| {
            let v = v.as_str().unwrap_or("");
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={}", quote(v.as_str().unwrap_or(""))))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_owned());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(c: &Value) -> impl Iterator<Item = &str> {
    context(c, "/capabilities/add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn capabilities_baseline(pod: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in pod.containers() {
        let mut valid = true;
        for cap in added_capabilities(c) {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                valid = false;
                caps.insert(cap.to_owned());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&caps)
        ),
    )
}

fn host_namespaces(pod: &Pod<'_>) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| pod.spec.get(*f) == Some(&json!(true)))
        .map(|f| format!("{f}=true"))
        .collect();
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set.join(", "))
}

fn host_path_volumes(pod: &Pod<'_>) -> Option<Violation> {
    let volumes: Vec<String> = array_at(pod.spec, "/volumes")
        .iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(name)
        .collect();
    if volumes.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", volumes.len()),
            join_quote(&volumes)
        ),
    )
}

fn host_ports(pod: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = BTreeSet::new();
    for c in pod.containers() {
        let mut valid = true;
        for port in array_at(c, "/ports") {
            let host = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if host != 0 {
                valid = false;
                ports.insert(host.to_string());
            }
        }
        if !valid {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn privileged(pod: &Pod<'_>) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "/privileged") == Some(&json!(true)))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

fn proc_mount(pod: &Pod<'_>) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in pod.containers() {
        if let Some(t) = context(c, "/procMount").and_then(Value::as_str) {
            if t != "Default" {
                bad.push(name(c));
                types.insert(t.to_owned());
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&types)
        ),
    )
}

fn se_linux_options(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut check = |opts: &Value| {
        let mut valid = true;
        let t = str_at(opts, "/type");
        let allowed = matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) || (minor >= 31 && t == "container_engine_t");
        if !allowed {
            valid = false;
            types.insert(t.to_owned());
        }
        if !str_at(opts, "/user").is_empty() {
            valid = false;
            user = true;
        }
        if !str_at(opts, "/role").is_empty() {
            valid = false;
            role = true;
        }
        valid
    };
    let mut setters = Vec::new();
    if let Some(opts) = pod.pod_context("/seLinuxOptions") {
        if !check(opts) {
            setters.push("pod".to_owned());
        }
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "/seLinuxOptions").is_some_and(|o| !check(o)))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if user {
        data.push("user may not be set".to_owned());
    }
    if role {
        data.push("role may not be set".to_owned());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

/// The seccomp checks: `explicit_bad` says which explicitly set types are refused;
/// `require` makes an unset profile (without a valid pod-level one) a violation too.
fn seccomp(pod: &Pod<'_>, explicit_bad: fn(&str) -> bool, require: bool) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(t) = pod.pod_context("/seccompProfile/type") {
        let t = t.as_str().unwrap_or("");
        if explicit_bad(t) {
            setters.push("pod".to_owned());
            values.insert(t.to_owned());
        } else {
            pod_set = true;
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in pod.containers() {
        match context(c, "/seccompProfile/type") {
            Some(t) => {
                let t = t.as_str().unwrap_or("");
                if explicit_bad(t) {
                    explicit.push(name(c));
                    values.insert(t.to_owned());
                }
            }
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        );
    }
    if require && !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn seccomp_baseline(pod: &Pod<'_>) -> Option<Violation> {
    seccomp(pod, |t| t == "Unconfined", false)
}

fn seccomp_restricted(pod: &Pod<'_>) -> Option<Violation> {
    seccomp(pod, |t| !matches!(t, "RuntimeDefault" | "Localhost"), true)
}

/// The sysctls baseline allows at a policy version.
fn safe_sysctl(name: &str, minor: u32) -> bool {
    match name {
        "kernel.shm_rmid_forced"
        | "net.ipv4.ip_local_port_range"
        | "net.ipv4.tcp_syncookies"
        | "net.ipv4.ping_group_range"
        | "net.ipv4.ip_unprivileged_port_start" => true,
        "net.ipv4.ip_local_reserved_ports" => minor >= 27,
        "net.ipv4.tcp_keepalive_time"
        | "net.ipv4.tcp_fin_timeout"
        | "net.ipv4.tcp_keepalive_intvl"
        | "net.ipv4.tcp_keepalive_probes" => minor >= 29,
        "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem" => minor >= 32,
        _ => false,
    }
}

fn sysctls(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    let bad: Vec<&str> = pod
        .pod_context("/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| str_at(s, "/name"))
        .filter(|n| !safe_sysctl(n, minor))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

fn windows_host_process(pod: &Pod<'_>) -> Option<Violation> {
    let on = |v: Option<&Value>| v == Some(&json!(true));
    let containers: Vec<String> = pod
        .containers()
        .filter(|c| on(context(c, "/windowsOptions/hostProcess")))
        .map(name)
        .collect();
    let mut subjects = Vec::new();
    if on(pod.pod_context("/windowsOptions/hostProcess")) {
        subjects.push("pod".to_owned());
    }
    if !containers.is_empty() {
        subjects.push(containers_phrase(&containers));
    }
    if subjects.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            subjects.join(" and ")
        ),
    )
}

fn allow_privilege_escalation(pod: &Pod<'_>) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "/allowPrivilegeEscalation") != Some(&json!(false)))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

fn capabilities_restricted(pod: &Pod<'_>) -> Option<Violation> {
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in pod.containers() {
        if context(c, "/capabilities").is_none() {
            missing_drop.push(name(c));
            continue;
        }
        let drops_all = context(c, "/capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            missing_drop.push(name(c));
        }
        let mut forbidden = false;
        for cap in added_capabilities(c) {
            if cap != "NET_BIND_SERVICE" {
                forbidden = true;
                caps.insert(cap.to_owned());
            }
        }
        if forbidden {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

fn restricted_volumes(pod: &Pod<'_>) -> Option<Violation> {
    const ALLOWED: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for volume in array_at(pod.spec, "/volumes") {
        let Some(fields) = volume.as_object() else {
            continue;
        };
        let source: Vec<&String> = fields
            .iter()
            .filter(|(k, v)| k.as_str() != "name" && !v.is_null())
            .map(|(k, _)| k)
            .collect();
        if source.iter().any(|k| ALLOWED.contains(&k.as_str())) {
            continue;
        }
        bad.push(name(volume));
        types.insert(
            source
                .first()
                .map_or_else(|| "unknown".to_owned(), |k| (*k).clone()),
        );
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
    )
}

fn run_as_non_root(pod: &Pod<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match pod.pod_context("/runAsNonRoot") {
        Some(v) if v == &json!(false) => setters.push("pod".to_owned()),
        Some(_) => pod_non_root = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in pod.containers() {
        match context(c, "/runAsNonRoot") {
            Some(v) if v == &json!(false) => explicit.push(name(c)),
            Some(_) => {}
            None if !pod_non_root => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn run_as_user(pod: &Pod<'_>) -> Option<Violation> {
    let root = |v: Option<&Value>| v == Some(&json!(0));
    let mut setters = Vec::new();
    if root(pod.pod_context("/runAsUser")) {
        setters.push("pod".to_owned());
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| root(context(c, "/runAsUser")))
        .map(name)
        .collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTRICTED: LevelVersion = LevelVersion {
        level: Level::Restricted,
        minor: None,
    };
    const BASELINE: LevelVersion = LevelVersion {
        level: Level::Baseline,
        minor: None,
    };

    fn check(lv: LevelVersion, spec: Value) -> String {
        details(&evaluate(lv, &json!({}), &spec))
    }

    fn restricted_container(name: &str) -> Value {
        json!({"name": name, "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}})
    }

    #[test]
    fn a_plain_pod_violates_restricted_as_kubernetes_says() {
        let spec = json!({"containers": [{"name": "c", "image": "nginx"}]});
        assert_eq!(
            check(RESTRICTED, spec.clone()),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert_eq!(check(BASELINE, spec.clone()), "");
        assert_eq!(check(LevelVersion::PRIVILEGED, spec), "");
    }

    #[test]
    fn a_hardened_pod_passes_restricted() {
        let spec = json!({"containers": [restricted_container("a")],
            "volumes": [{"name": "data", "emptyDir": {}}]});
        assert_eq!(check(RESTRICTED, spec), "");
        let pod_level = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost"}},
            "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]});
        assert_eq!(check(RESTRICTED, pod_level), "");
    }

    #[test]
    fn baseline_refuses_host_access_and_privilege() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true,
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}],
                "seccompProfile": {"type": "Unconfined"}},
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
            "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 443}],
                 "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN", "CHOWN"]}, "procMount": "Unmasked",
                    "seLinuxOptions": {"type": "spc_t", "user": "root"}, "appArmorProfile": {"type": "Unconfined"}}},
                {"name": "b", "securityContext": {"privileged": true, "windowsOptions": {"hostProcess": true}}},
            ],
        });
        assert_eq!(
            check(BASELINE, spec),
            [
                "forbidden AppArmor profile (container \"a\" must not set AppArmor profile type to \"Unconfined\")",
                "non-default capabilities (container \"a\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "host namespaces (hostNetwork=true, hostPID=true)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"a\" uses hostPorts 443, 8080)",
                "privileged (containers \"i\", \"b\" must not set securityContext.privileged=true)",
                "procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\")",
                "seLinuxOptions (container \"a\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set)",
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
                "forbidden sysctls (kernel.msgmax)",
                "hostProcess (container \"b\" must not set securityContext.windowsOptions.hostProcess=true)",
            ]
            .join(", ")
        );
    }

    #[test]
    fn restricted_refuses_volumes_root_and_extra_capabilities() {
        let mut c = restricted_container("a");
        c["securityContext"]["capabilities"]["add"] = json!(["SYS_TIME"]);
        c["securityContext"]["runAsUser"] = json!(0);
        let mut d = restricted_container("b");
        d["securityContext"]["runAsNonRoot"] = json!(false);
        let spec = json!({"containers": [c, d],
            "volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}, {"name": "ok", "secret": {"secretName": "s"}}]});
        assert_eq!(
            check(RESTRICTED, spec),
            "unrestricted capabilities (container \"a\" must not include \"SYS_TIME\" in securityContext.capabilities.add), \
             restricted volume types (volume \"n\" uses restricted volume type \"nfs\"), \
             runAsNonRoot != true (container \"b\" must not set securityContext.runAsNonRoot=false), \
             runAsUser=0 (container \"a\" must not set runAsUser=0)"
        );
    }

    #[test]
    fn versions_choose_the_checks() {
        let spec = json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem"}]},
            "containers": [{"name": "c"}]});
        let old = LevelVersion {
            level: Level::Baseline,
            minor: Some(31),
        };
        assert_eq!(
            check(old, spec.clone()),
            "forbidden sysctls (net.ipv4.tcp_rmem)"
        );
        assert_eq!(check(BASELINE, spec), "");
        assert_eq!(old.to_string(), "baseline:v1.31");
        assert_eq!(RESTRICTED.to_string(), "restricted:latest");
    }

    #[test]
    fn labels_choose_the_policy_and_malformed_ones_fail_closed() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "v1.29",
            "pod-security.kubernetes.io/warn": "restricted"});
        let (p, errors) = policy(labels.as_object());
        assert!(errors.is_empty());
        assert_eq!(p.enforce.to_string(), "baseline:v1.29");
        assert_eq!(p.warn.to_string(), "restricted:latest");
        let bad = json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn-version": "1.29"});
        let (p, errors) = policy(bad.as_object());
        assert_eq!(p.enforce, RESTRICTED);
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.29\": must be \"latest\" or \"v1.x\"",
            ]
        );
        assert_eq!(parse_version("v1.01"), None);
        assert_eq!(parse_version("v1.0"), Some(Some(0)));
    }

    #[test]
    fn only_image_and_container_changes_are_significant_updates() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut new = old.clone();
        new["spec"]["activeDeadlineSeconds"] = json!(5);
        assert!(!significant_update(&new, &old));
        new["spec"]["containers"][0]["image"] = json!("b");
        assert!(significant_update(&new, &old));
        let mut ephemeral = old.clone();
        ephemeral["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
        assert!(significant_update(&ephemeral, &old));
    }

    #[test]
    fn existing_pods_are_summarised_per_reason() {
        let plain =
            |n: &str| json!({"metadata": {"name": n}, "spec": {"containers": [{"name": "c"}]}});
        let host = json!({"metadata": {"name": "h"}, "spec": {"hostNetwork": true, "containers": [{"name": "c"}]}});
        let pods = [plain("b"), plain("a"), plain("c"), host];
        let warnings = existing_pod_warnings("ns", BASELINE, &pods);
        assert_eq!(
            warnings,
            [
                "existing pods in namespace \"ns\" violate the new PodSecurity enforce level \"baseline:latest\"",
                "h: host namespaces",
            ]
        );
        let warnings = existing_pod_warnings("ns", RESTRICTED, &pods[..3]);
        assert_eq!(
            warnings[1],
            "a (and 2 other pods): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
    }
}
