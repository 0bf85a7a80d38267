//! Services and Endpoints.

pub mod allocator;

use serde_json::{json, Value};

use super::{array_at, int_at, object_mut, or_none, selector_string, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::{self, FieldError};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

/// The strategy of `services`.
pub struct ServiceStrategy;

impl Strategy for ServiceStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let kind = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if kind != "ExternalName" {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if kind == "LoadBalancer" {
            set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
        }
        if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
            let config = spec
                .entry("sessionAffinityConfig")
                .or_insert_with(|| json!({}));
            if let Some(config) = config.as_object_mut() {
                let client_ip = config.entry("clientIP").or_insert_with(|| json!({}));
                if let Some(client_ip) = client_ip.as_object_mut() {
                    // Three hours, as Kubernetes' DefaultClientIPServiceAffinitySeconds.
                    set_default(client_ip, "timeoutSeconds", json!(10800));
                }
            }
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(port, "protocol", json!("TCP"));
                if let Some(number) = port.get("port").cloned() {
                    set_default(port, "targetPort", number);
                }
            }
        }
    }

    fn validate_name(&self, name: &str) -> Vec<String> {
        validation::dns1035_label(name)
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let kind = str_at(obj, "/spec/type");
        if !SERVICE_TYPES.contains(&kind) {
            errs.push(FieldError::not_supported(
                "spec.type",
                json!(kind),
                SERVICE_TYPES,
            ));
        }
        let ports = array_at(obj, "/spec/ports");
        let headless = str_at(obj, "/spec/clusterIP") == "None";
        if ports.is_empty() && kind != "ExternalName" && !headless {
            errs.push(FieldError::required("spec.ports", ""));
        }
        if let Some(timeout) = obj
            .pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
            .and_then(Value::as_i64)
        {
            if !(1..=86400).contains(&timeout) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    json!(timeout),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        for (i, port) in ports.iter().enumerate() {
            let number = int_at(port, "/port");
            if !(1..=65535).contains(&number) {
                errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].port"),
                    json!(number),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if ports.len() > 1 && str_at(port, "/name").is_empty() {
                errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Type", "The type of the service."),
            Column::text("Cluster-IP", "The cluster IP of the service."),
            Column::text("External-IP", "The external IPs of the service."),
            Column::text("Port(s)", "The ports of the service."),
            Column::age(),
            Column::wide("Selector", "The selector of the service."),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let kind = str_at(obj, "/spec/type");
        let external: Vec<String> = match kind {
            "ExternalName" => vec![str_at(obj, "/spec/externalName").to_owned()],
            _ => array_at(obj, "/spec/externalIPs")
                .iter()
                .chain(array_at(obj, "/status/loadBalancer/ingress"))
                .filter_map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .or_else(|| v.get("ip").and_then(Value::as_str).map(str::to_owned))
                })
                .collect(),
        };
        let external = if external.is_empty() && kind == "LoadBalancer" {
            "<pending>".to_owned()
        } else {
            external.join(",")
        };
        let ports: Vec<String> = array_at(obj, "/spec/ports")
            .iter()
            .map(|p| {
                let node_port = int_at(p, "/nodePort");
                if node_port > 0 {
                    format!(
                        "{}:{node_port}/{}",
                        int_at(p, "/port"),
                        str_at(p, "/protocol")
                    )
                } else {
                    format!("{}/{}", int_at(p, "/port"), str_at(p, "/protocol"))
                }
            })
            .collect();
        let selector = obj
            .pointer("/spec/selector")
            .map(|s| selector_string(Some(&json!({"matchLabels": s}))))
            .unwrap_or_default();
        vec![
            table::name_cell(obj),
            json!(kind),
            or_none(str_at(obj, "/spec/clusterIP")),
            or_none(external),
            or_none(ports.join(",")),
            table::age_cell(obj, now),
            or_none(selector),
        ]
    }
}

/// The strategy of `endpoints`.
pub struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Endpoints", "Endpoints of the service"),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut endpoints = Vec::new();
        for subset in array_at(obj, "/subsets") {
            let ports = array_at(subset, "/ports");
            for address in array_at(subset, "/addresses") {
                let ip = str_at(address, "/ip");
                if ports.is_empty() {
                    endpoints.push(ip.to_owned());
                }
                for port in ports {
                    endpoints.push(format!("{ip}:{}", int_at(port, "/port")));
                }
            }
        }
        let shown = if endpoints.len() > 3 {
            format!(
                "{} + {} more...",
                endpoints[..3].join(","),
                endpoints.len() - 3
            )
        } else {
            endpoints.join(",")
        };
        vec![
            table::name_cell(obj),
            or_none(shown),
            table::age_cell(obj, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_defaulted_as_kubernetes_does() {
        let mut lb = json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP",
            "ports": [{"port": 80}]}});
        ServiceStrategy.default(&mut lb);
        let spec = &lb["spec"];
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][0]["protocol"], "TCP");

        let mut plain = json!({"spec": {"ports": [{"port": 80}]}});
        ServiceStrategy.default(&mut plain);
        let spec = plain["spec"].as_object().unwrap();
        assert_eq!(spec["type"], "ClusterIP");
        assert!(!spec.contains_key("externalTrafficPolicy"));
        assert!(!spec.contains_key("allocateLoadBalancerNodePorts"));
        assert!(!spec.contains_key("sessionAffinityConfig"));

        let mut long = json!({"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}],
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 100000}}}});
        ServiceStrategy.default(&mut long);
        let errs = ServiceStrategy.validate(&long);
        assert_eq!(
            errs[0].field,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        );
    }
}
