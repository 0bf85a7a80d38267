//! A container's environment as the kubelet builds it (kubelet_pods.go's
//! `makeEnvironmentVariables`): `envFrom` sources first, then `env` entries, each
//! value `$(VAR)`-expanded against what came before; ConfigMap and Secret
//! references are read through [`ObjectSource`]; the downward API's `fieldRef`
//! and `resourceFieldRef` are answered from the pod and the node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::objects::{ObjectError, ObjectSource};

/// Why a container's environment (or a volume's content) cannot be built; the
/// container then waits with reason `CreateContainerConfigError` and this message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A referenced ConfigMap does not exist.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    /// A referenced Secret does not exist.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// A referenced key is not in the ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        /// The key.
        key: String,
        /// The ConfigMap's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A referenced key is not in the Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        /// The key.
        key: String,
        /// The Secret's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A `fieldRef` or `resourceFieldRef` the kubelet cannot answer.
    #[error("{0}")]
    Unsupported(String),
    /// Reading from the API failed.
    #[error(transparent)]
    Api(#[from] ObjectError),
}

/// What the downward API answers from, beside the pod itself.
#[derive(Debug, Clone, Default)]
pub struct Downward {
    /// The pod's IP, once the sandbox has one.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: Option<String>,
    /// The node's allocatable CPUs (what `limits.cpu` is without a limit).
    pub node_cpu: u64,
    /// The node's allocatable memory in bytes.
    pub node_memory: u64,
    /// The node's allocatable ephemeral storage in bytes.
    pub node_ephemeral_storage: u64,
}

/// The data of a ConfigMap or a Secret as strings and bytes, for env and volumes.
pub fn config_map_data(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, ObjectError> {
    Ok(objects.config_map(namespace, name)?.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.unwrap_or_default() {
            data.insert(k, v.0);
        }
        data
    }))
}

/// The `data` of a ConfigMap, without its `binaryData`: what environment variables take
/// (the kubelet reads only `data` for `envFrom` and `configMapKeyRef`).
fn config_map_env_data(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, ObjectError> {
    Ok(objects.config_map(namespace, name)?.map(|cm| {
        cm.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect()
    }))
}

/// A Secret's data (`stringData` is folded into `data` by the API server).
pub fn secret_data(
    objects: &dyn ObjectSource,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, ObjectError> {
    Ok(objects.secret(namespace, name)?.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        data
    }))
}

/// Whether `name` is a valid environment variable name (C_IDENTIFIER-ish, as the
/// kubelet checks keys of `envFrom`: letters, digits, `_`, `-`, `.`, not starting with a digit).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// An ordered environment: a later value of a name replaces the earlier one in place.
#[derive(Debug, Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The container's environment, in order.
pub fn container_env(
    c: &Container,
    pod: &Pod,
    downward: &Downward,
    objects: &dyn ObjectSource,
) -> Result<Vec<(String, String)>, ConfigError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Env::default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    for (name, value) in service_env(objects, namespace, links)? {
        env.set(name, value);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match config_map_env_data(objects, namespace, &r.name)? {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &from.secret_ref {
            match secret_data(objects, namespace, &r.name)? {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            // Invalid names are skipped (the kubelet records an event and goes on).
            if valid_env_name(&name) {
                env.set(name, String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, |name| env.get(name).map(str::to_string))
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match config_map_env_data(objects, namespace, &r.name)? {
                    None if optional => continue,
                    None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::ConfigMapKey {
                                key: r.key.clone(),
                                namespace: namespace.into(),
                                name: r.name.clone(),
                            })
                        }
                    },
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match secret_data(objects, namespace, &r.name)? {
                    None if optional => continue,
                    None => return Err(ConfigError::SecretNotFound(r.name.clone())),
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::SecretKey {
                                key: r.key.clone(),
                                namespace: namespace.into(),
                                name: r.name.clone(),
                            })
                        }
                    },
                }
            } else if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, downward).ok_or_else(|| {
                    ConfigError::Unsupported(format!("unsupported fieldPath: {}", f.field_path))
                })?
            } else if let Some(r) = &from.resource_field_ref {
                let divisor = r.divisor.as_ref().map(|q| q.0.as_str());
                resource_value(c, &r.resource, divisor, downward)?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(e.name.clone(), value);
    }
    Ok(env.0)
}

/// The namespace whose `kubernetes` Service every pod learns about.
const MASTER_SERVICE_NAMESPACE: &str = "default";

/// The Services' environment variables of a container, as the kubelet sets them before
/// the container's own (which may override or refer to them): `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT[_<PORT NAME>]` and the Docker-link style `<NAME>_PORT...`, for
/// the Services of the pod's namespace with a cluster IP (when `enableServiceLinks`, the
/// default) and always for the `kubernetes` Service, which in-cluster clients use to find
/// the API server.
pub fn service_env(
    objects: &dyn ObjectSource,
    namespace: &str,
    links: bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let read = |ns: &str| {
        objects
            .services(ns)
            .map_err(|e| ConfigError::Unsupported(format!("listing services: {e}")))
    };
    let mut services = Vec::new();
    if links {
        services.extend(read(namespace)?);
    }
    if namespace != MASTER_SERVICE_NAMESPACE || !links {
        services.extend(
            read(MASTER_SERVICE_NAMESPACE)?
                .into_iter()
                .filter(|s| s.metadata.name.as_deref() == Some("kubernetes")),
        );
    }
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for service in &services {
        let Some(spec) = &service.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = service
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase()
            .replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        port_name.to_ascii_uppercase().replace('-', "_")
                    ),
                    port.port.to_string(),
                ));
            }
        }
        let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_string()
        };
        out.push((
            format!("{name}_PORT"),
            format!(
                "{}://{ip}:{}",
                protocol(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for port in ports {
            let proto = protocol(port);
            let prefix = format!("{name}_PORT_{}_{}", port.port, proto.to_ascii_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto.to_ascii_lowercase(), port.port),
            ));
            out.push((format!("{prefix}_PROTO"), proto.to_ascii_lowercase()));
            out.push((format!("{prefix}_PORT"), port.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    Ok(out)
}

/// `$(VAR)` expansion as Kubernetes does it for env values, command and args:
/// a defined `$(VAR)` is replaced, an undefined one kept as written; `$$` is an
/// escaped `$`; any other `$` stays.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    // An unclosed reference is kept as written.
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Expands `$(VAR)` in each of `words` against `env` (command and args).
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    words.iter().map(|w| expand(w, lookup)).collect()
}

fn keyed<'a>(
    path: &str,
    prefix: &str,
    map: &'a Option<BTreeMap<String, String>>,
) -> Option<&'a String> {
    let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
    map.as_ref()?.get(key)
}

/// A `fieldRef` path's value, as the downward API defines them for env.
pub fn field_value(pod: &Pod, path: &str, downward: &Downward) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.hostIPs" => downward.host_ip.clone(),
        "status.podIP" | "status.podIPs" => downward.pod_ip.clone(),
        "metadata.labels" => Some(format_map(&meta.labels)),
        "metadata.annotations" => Some(format_map(&meta.annotations)),
        _ if path.starts_with("metadata.labels['") => Some(
            keyed(path, "metadata.labels['", &meta.labels)
                .cloned()
                .unwrap_or_default(),
        ),
        _ if path.starts_with("metadata.annotations['") => Some(
            keyed(path, "metadata.annotations['", &meta.annotations)
                .cloned()
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// Labels or annotations as downwardAPI volume files show them: `key="value"` lines,
/// sorted, values quoted as Go's `%q` would.
pub fn format_map(map: &Option<BTreeMap<String, String>>) -> String {
    map.iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}\n", serde_json::Value::String(v.clone())))
        .collect::<String>()
        .trim_end_matches('\n')
        .to_string()
}

/// A quantity in its base unit (cores, bytes) from Kubernetes' notation
/// (`500m`, `2`, `1Gi`, `128M`, `1e3`).
pub fn parse_quantity(text: &str) -> Option<f64> {
    skiff_quantity::parse(text)
}

/// A `resourceFieldRef`'s value: the container's limit (the node's allocatable when it
/// has none) or request, divided by `divisor` and rounded up, as the kubelet does.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    downward: &Downward,
) -> Result<String, ConfigError> {
    let unsupported =
        || ConfigError::Unsupported(format!("unsupported container resource : {resource}"));
    let (kind, name) = resource.split_once('.').ok_or_else(unsupported)?;
    let res = c.resources.clone().unwrap_or_default();
    let set = match kind {
        "limits" => res.limits.clone().unwrap_or_default(),
        "requests" => res.requests.clone().unwrap_or_default(),
        _ => return Err(unsupported()),
    };
    let declared = set.get(name).and_then(|q| parse_quantity(&q.0));
    let node = match name {
        "cpu" => downward.node_cpu as f64,
        "memory" => downward.node_memory as f64,
        "ephemeral-storage" => downward.node_ephemeral_storage as f64,
        _ => return Err(unsupported()),
    };
    let value = match (kind, declared) {
        (_, Some(v)) => v,
        ("limits", None) => node,
        // A missing request is the limit (API defaulting), else nothing.
        _ => res
            .limits
            .as_ref()
            .and_then(|l| l.get(name))
            .and_then(|q| parse_quantity(&q.0))
            .unwrap_or(0.0),
    };
    let divisor = divisor
        .and_then(parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Round to a milli-unit first so 0.5/0.001 is 500, not 500.0000001 -> 501.
    let ratio = ((value / divisor) * 1e6).round() / 1e6;
    Ok(format!("{}", ratio.ceil() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeObjects;

    fn pod(yaml: serde_json::Value) -> Pod {
        let mut pod: Pod = serde_json::from_value(yaml).unwrap();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.uid = Some("uid-1".into());
        pod
    }

    fn env_of(p: &Pod, objects: &FakeObjects) -> Result<Vec<String>, ConfigError> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        let downward = Downward {
            pod_ip: Some("10.0.0.9".into()),
            host_ip: Some("192.168.0.1".into()),
            node_cpu: 4,
            node_memory: 8 << 30,
            node_ephemeral_storage: 0,
        };
        Ok(container_env(c, p, &downward, objects)?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect())
    }

    #[test]
    fn values_field_refs_and_expansion() {
        let p = pod(serde_json::json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [{"name": "app", "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(NOPE)-$$(A)-$"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ]}]}}));
        assert_eq!(
            env_of(&p, &FakeObjects::default()).unwrap(),
            [
                "A=1",
                "B=1-$(NOPE)-$(A)-$",
                "POD=p",
                "IP=10.0.0.9",
                "HOST=192.168.0.1",
                "NODE=n1",
                "SA=sa",
                "APP=web"
            ]
        );
    }

    #[test]
    fn binary_data_of_a_config_map_is_no_environment() {
        let objects = FakeObjects::default();
        objects.put_config_map("ns", "cfg", &[("color", "blue")]);
        objects.put_config_map_binary("ns", "cfg", "dump", &[0xde, 0xad]);
        let p = pod(serde_json::json!({"spec": {"containers": [{"name": "app",
            "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}}));
        assert_eq!(env_of(&p, &objects).unwrap(), ["color=blue"]);
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "env": [
            {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "dump"}}}]}]}}),
        );
        assert!(env_of(&p, &objects).is_err());
    }

    #[test]
    fn config_maps_secrets_and_env_from_with_prefix() {
        let objects = FakeObjects::default();
        objects.put_config_map("ns", "cfg", &[("color", "blue"), ("1bad", "x")]);
        objects.put_secret("ns", "sec", &[("password", "hunter2")]);
        let p = pod(serde_json::json!({"spec": {"containers": [{"name": "app",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "sec"}},
                    {"configMapRef": {"name": "absent", "optional": true}}],
        "env": [
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}},
            {"name": "MSG", "value": "$(COLOR) $(password)"},
        ]}]}}));
        assert_eq!(
            env_of(&p, &objects).unwrap(),
            [
                "CFG_1bad=x",
                "CFG_color=blue",
                "password=hunter2",
                "COLOR=blue",
                "PW=hunter2",
                "MSG=blue hunter2"
            ]
        );
    }

    #[test]
    fn missing_references_give_kubernetes_messages() {
        let objects = FakeObjects::default();
        let refer = |r: serde_json::Value| {
            pod(serde_json::json!({"spec": {"containers": [{"name": "app",
                "env": [{"name": "X", "valueFrom": r}]}]}}))
        };
        let p = refer(serde_json::json!({"configMapKeyRef": {"name": "x", "key": "k"}}));
        assert_eq!(
            env_of(&p, &objects).unwrap_err().to_string(),
            "configmap \"x\" not found"
        );
        objects.put_config_map("ns", "x", &[]);
        assert_eq!(
            env_of(&p, &objects).unwrap_err().to_string(),
            "couldn't find key k in ConfigMap ns/x"
        );
        let p = refer(serde_json::json!({"secretKeyRef": {"name": "s", "key": "k"}}));
        assert_eq!(
            env_of(&p, &objects).unwrap_err().to_string(),
            "secret \"s\" not found"
        );
        let p = refer(
            serde_json::json!({"configMapKeyRef": {"name": "y", "key": "k", "optional": true}}),
        );
        assert_eq!(env_of(&p, &objects).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn resource_field_refs_divide_and_round_up() {
        let p = pod(serde_json::json!({"spec": {"containers": [{"name": "app",
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MCPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "MEMB", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
        ]}]}}));
        assert_eq!(
            env_of(&p, &FakeObjects::default()).unwrap(),
            ["CPU=1", "MCPU=500", "REQ=250", "MEM=64", "MEMB=67108864"]
        );
        // Without a limit: the node's allocatable.
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]}]}}),
        );
        assert_eq!(env_of(&p, &FakeObjects::default()).unwrap(), ["CPU=4"]);
    }

    #[test]
    fn expansion_of_command_and_args() {
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        assert_eq!(
            expand_all(
                &["echo".into(), "$(GREETING) $(X) $$(GREETING)".into()],
                &env
            ),
            ["echo", "hi $(X) $(GREETING)"]
        );
        assert_eq!(expand("$(unclosed", |_| None), "$(unclosed");
    }

    #[test]
    fn services_become_environment_variables() {
        let objects = FakeObjects::default();
        objects.put_service(
            "default",
            "kubernetes",
            serde_json::json!({"metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}),
        );
        objects.put_service(
            "ns",
            "redis-main",
            serde_json::json!({"metadata": {"name": "redis-main", "namespace": "ns"},
                "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 6379, "protocol": "TCP"}]}}),
        );
        objects.put_service(
            "ns",
            "headless",
            serde_json::json!({"metadata": {"name": "headless", "namespace": "ns"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "env": [{"name": "URL", "value": "redis://$(REDIS_MAIN_SERVICE_HOST):6379"}]}]}}),
        );
        let env = env_of(&p, &objects).unwrap();
        for want in [
            "KUBERNETES_SERVICE_HOST=10.43.0.1",
            "KUBERNETES_SERVICE_PORT=443",
            "KUBERNETES_SERVICE_PORT_HTTPS=443",
            "KUBERNETES_PORT=tcp://10.43.0.1:443",
            "KUBERNETES_PORT_443_TCP_ADDR=10.43.0.1",
            "REDIS_MAIN_SERVICE_HOST=10.43.0.9",
            "REDIS_MAIN_PORT_6379_TCP=tcp://10.43.0.9:6379",
            "URL=redis://10.43.0.9:6379",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("HEADLESS_")));
        // enableServiceLinks: false keeps only the API server's.
        let mut quiet = p.clone();
        quiet.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env = env_of(&quiet, &objects).unwrap();
        assert!(env.iter().any(|e| e == "KUBERNETES_SERVICE_HOST=10.43.0.1"));
        assert!(!env.iter().any(|e| e.starts_with("REDIS_MAIN_")));
    }
}
