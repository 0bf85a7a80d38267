//! Nodes: cluster-scoped, written by kubelets; the printer derives STATUS and ROLES.

use serde_json::{json, Value};

use super::{array_at, or_none, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};

/// The strategy of `nodes`.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Status", "The status of the node"),
            Column::text("Roles", "The roles of the node"),
            Column::age(),
            Column::text("Version", "Kubelet Version reported by the node."),
            Column::wide("Internal-IP", "List of internal IPs for the node."),
            Column::wide("External-IP", "List of external IPs for the node."),
            Column::wide("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            Column::wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            Column::wide("Container-Runtime", "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let ready = array_at(obj, "/status/conditions")
            .iter()
            .find(|c| str_at(c, "/type") == "Ready")
            .map(|c| match str_at(c, "/status") {
                "True" => "Ready",
                "False" => "NotReady",
                _ => "Unknown",
            })
            .unwrap_or("Unknown");
        let mut status = ready.to_owned();
        if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
            status.push_str(",SchedulingDisabled");
        }
        let mut roles: Vec<String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        roles.sort();
        let address = |kind: &str| {
            array_at(obj, "/status/addresses")
                .iter()
                .find(|a| str_at(a, "/type") == kind)
                .map(|a| str_at(a, "/address").to_owned())
                .unwrap_or_default()
        };
        vec![
            table::name_cell(obj),
            json!(status),
            or_none(roles.join(",")),
            table::age_cell(obj, now),
            json!(str_at(obj, "/status/nodeInfo/kubeletVersion")),
            or_none(address("InternalIP")),
            or_none(address("ExternalIP")),
            json!(str_at(obj, "/status/nodeInfo/osImage")),
            json!(str_at(obj, "/status/nodeInfo/kernelVersion")),
            json!(str_at(obj, "/status/nodeInfo/containerRuntimeVersion")),
        ]
    }
}
