//! networking.k8s.io (Ingress, IngressClass, NetworkPolicy), discovery.k8s.io
//! (EndpointSlice) and coordination.k8s.io (Lease).

use serde_json::{json, Value};

use super::{array_at, object_mut, or_none, selector_string, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};

/// At most `max` items joined by commas, then `+ N more...`, as kubectl's printers do.
fn at_most(items: &[String], max: usize) -> String {
    if items.len() > max {
        format!("{} + {} more...", items[..max].join(","), items.len() - max)
    } else {
        items.join(",")
    }
}

/// The strategy of `ingresses`.
pub struct IngressStrategy;

impl Strategy for IngressStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn default(&self, obj: &mut Value) {
        if let Some(rules) = obj.pointer_mut("/spec/rules").and_then(Value::as_array_mut) {
            for path in rules
                .iter_mut()
                .filter_map(|r| r.pointer_mut("/http/paths"))
                .filter_map(Value::as_array_mut)
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                set_default(path, "pathType", json!("ImplementationSpecific"));
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "Class",
                "The name of the IngressClass resource that should be used for ingresses.",
            ),
            Column::text(
                "Hosts",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            Column::text(
                "Address",
                "Address is a list containing ingress points for the load-balancer",
            ),
            Column::text("Ports", "Ports of TLS configurations that open"),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let class = match str_at(obj, "/spec/ingressClassName") {
            "" => obj
                .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            c => c.to_owned(),
        };
        let hosts: Vec<String> = array_at(obj, "/spec/rules")
            .iter()
            .map(|r| match str_at(r, "/host") {
                "" => "*".to_owned(),
                h => h.to_owned(),
            })
            .collect();
        let hosts = if hosts.is_empty() {
            "*".to_owned()
        } else {
            at_most(&hosts, 4)
        };
        let addresses: Vec<String> = array_at(obj, "/status/loadBalancer/ingress")
            .iter()
            .map(|i| match str_at(i, "/ip") {
                "" => str_at(i, "/hostname").to_owned(),
                ip => ip.to_owned(),
            })
            .collect();
        let ports = if array_at(obj, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            table::name_cell(obj),
            or_none(class),
            json!(hosts),
            json!(addresses.join(",")),
            json!(ports),
            table::age_cell(obj, now),
        ]
    }
}

/// The strategy of `ingressclasses`.
pub struct IngressClassStrategy;

impl Strategy for IngressClassStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "Controller",
                "Controller that is responsible for handling this class",
            ),
            Column::text(
                "Parameters",
                "A reference to a resource with additional parameters",
            ),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let parameters = match obj.pointer("/spec/parameters") {
            Some(p) if p.is_object() => {
                let kind = match str_at(p, "/apiGroup") {
                    "" => str_at(p, "/kind").to_owned(),
                    g => format!("{}.{g}", str_at(p, "/kind")),
                };
                format!("{kind}/{}", str_at(p, "/name"))
            }
            _ => String::new(),
        };
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/controller")),
            or_none(parameters),
            table::age_cell(obj, now),
        ]
    }
}

/// The strategy of `networkpolicies`.
pub struct NetworkPolicyStrategy;

impl Strategy for NetworkPolicyStrategy {
    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        for rules in ["ingress", "egress"] {
            let ports = spec
                .get_mut(rules)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get_mut("ports"))
                .filter_map(Value::as_array_mut)
                .flatten()
                .filter_map(Value::as_object_mut);
            for port in ports {
                set_default(port, "protocol", json!("TCP"));
            }
        }
        if spec
            .get("policyTypes")
            .and_then(Value::as_array)
            .is_none_or(|t| t.is_empty())
        {
            let mut types = vec![json!("Ingress")];
            if spec
                .get("egress")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty())
            {
                types.push(json!("Egress"));
            }
            spec.insert("policyTypes".into(), json!(types));
        }
        set_default(spec, "podSelector", json!({}));
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "Pod-Selector",
                "Select the pods to which this NetworkPolicy object applies.",
            ),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            or_none(selector_string(obj.pointer("/spec/podSelector"))),
            table::age_cell(obj, now),
        ]
    }
}

/// The strategy of `leases`.
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Holder", "The holder of the lease."),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/holderIdentity")),
            table::age_cell(obj, now),
        ]
    }
}

/// The strategy of `endpointslices`.
pub struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(port, "protocol", json!("TCP"));
                set_default(port, "name", json!(""));
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "AddressType",
                "The type of address carried by this EndpointSlice.",
            ),
            Column::text("Ports", "Ports provided by this EndpointSlice."),
            Column::text("Endpoints", "Endpoints included in this EndpointSlice."),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let ports: Vec<String> = array_at(obj, "/ports")
            .iter()
            .map(|p| {
                p.get("port")
                    .and_then(Value::as_i64)
                    .map_or("<unset>".into(), |p| p.to_string())
            })
            .collect();
        let addresses: Vec<String> = array_at(obj, "/endpoints")
            .iter()
            .flat_map(|e| {
                array_at(e, "/addresses")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/addressType")),
            json!(if ports.is_empty() {
                "<unset>".to_owned()
            } else {
                ports.join(",")
            }),
            json!(if addresses.is_empty() {
                "<unset>".to_owned()
            } else {
                at_most(&addresses, 3)
            }),
            table::age_cell(obj, now),
        ]
    }
}
