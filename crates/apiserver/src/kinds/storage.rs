//! Storage: PersistentVolumes and their claims (core/v1), and storage.k8s.io's
//! StorageClass, VolumeAttachment, CSIDriver and CSINode.

use serde_json::{json, Value};

use super::printers::{joined, scalar_or_none, text_or_none, Printer};
use super::{array_at, object_mut, or_none, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(obj: &Value, pointer: &str) -> Value {
    let modes: Vec<&str> = array_at(obj, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    json!(modes.join(","))
}

/// The storage class of a PV or PVC: the field, else the beta annotation.
fn storage_class(obj: &Value) -> Value {
    let class = str_at(obj, "/spec/storageClassName");
    let class = if class.is_empty() {
        obj.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        class
    };
    or_none(class)
}

/// The strategy of `persistentvolumes`.
pub struct PersistentVolumeStrategy;

impl Strategy for PersistentVolumeStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
        set_default(object_mut(obj, "status"), "phase", json!("Pending"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Capacity", "The storage capacity of the volume."),
            Column::text("Access Modes", "All the ways the volume can be mounted."),
            Column::text("Reclaim Policy", "What happens to a persistent volume when released from its claim."),
            Column::text("Status", "Phase indicates if a volume is available, bound to a claim, or released by a claim."),
            Column::text("Claim", "The claim bound to this volume."),
            Column::text("StorageClass", "StorageClass of the pv"),
            Column::text("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
            Column::text("Reason", "Reason represents the reason why a volume is in its current state."),
            Column::age(),
            Column::wide("VolumeMode", "VolumeMode of the pv"),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let claim = match str_at(obj, "/spec/claimRef/name") {
            "" => String::new(),
            name => format!("{}/{name}", str_at(obj, "/spec/claimRef/namespace")),
        };
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/capacity/storage")),
            access_modes(obj, "/spec/accessModes"),
            json!(str_at(obj, "/spec/persistentVolumeReclaimPolicy")),
            phase_or_terminating(obj),
            json!(claim),
            storage_class(obj),
            text_or_none(obj, "/spec/volumeAttributesClassName"),
            json!(str_at(obj, "/status/reason")),
            table::age_cell(obj, now),
            json!(str_at(obj, "/spec/volumeMode")),
        ]
    }
}

/// The STATUS cell of volumes and claims: `Terminating` once deletion began (a
/// protection finalizer holds it), else the phase, as kubectl shows them.
fn phase_or_terminating(obj: &Value) -> Value {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return json!("Terminating");
    }
    json!(str_at(obj, "/status/phase"))
}

/// The strategy of `persistentvolumeclaims`.
pub struct PersistentVolumeClaimStrategy;

impl Strategy for PersistentVolumeClaimStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn default(&self, obj: &mut Value) {
        set_default(object_mut(obj, "spec"), "volumeMode", json!("Filesystem"));
        set_default(object_mut(obj, "status"), "phase", json!("Pending"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "Status",
                "Phase represents the current phase of PersistentVolumeClaim.",
            ),
            Column::text(
                "Volume",
                "VolumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            Column::text("Capacity", "The storage capacity of the volume."),
            Column::text("Access Modes", "All the ways the volume can be mounted."),
            Column::text("StorageClass", "StorageClass of the pvc"),
            Column::text("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
            Column::age(),
            Column::wide("VolumeMode", "VolumeMode of the pvc"),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let bound = !str_at(obj, "/spec/volumeName").is_empty();
        let (capacity, modes) = if bound {
            (
                json!(str_at(obj, "/status/capacity/storage")),
                access_modes(obj, "/status/accessModes"),
            )
        } else {
            (json!(""), json!(""))
        };
        vec![
            table::name_cell(obj),
            phase_or_terminating(obj),
            json!(str_at(obj, "/spec/volumeName")),
            capacity,
            modes,
            storage_class(obj),
            text_or_none(obj, "/spec/volumeAttributesClassName"),
            table::age_cell(obj, now),
            json!(str_at(obj, "/spec/volumeMode")),
        ]
    }
}

/// The strategy of `storageclasses`.
pub struct StorageClassStrategy;

impl Strategy for StorageClassStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "reclaimPolicy", json!("Delete"));
            set_default(o, "volumeBindingMode", json!("Immediate"));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Provisioner", "Indicates the type of the provisioner."),
            Column::text("ReclaimPolicy", "Indicates the type of the reclaim policy."),
            Column::text(
                "VolumeBindingMode",
                "Indicates when volume binding and dynamic provisioning should occur.",
            ),
            Column {
                kind: "boolean",
                ..Column::text(
                    "AllowVolumeExpansion",
                    "Indicates whether the storage class allow volume expand.",
                )
            },
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let default = [
            "storageclass.kubernetes.io~1is-default-class",
            "storageclass.beta.kubernetes.io~1is-default-class",
        ]
        .iter()
        .any(|a| {
            obj.pointer(&format!("/metadata/annotations/{a}"))
                .and_then(Value::as_str)
                == Some("true")
        });
        let mut name = str_at(obj, "/metadata/name").to_owned();
        if default {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(str_at(obj, "/provisioner")),
            json!(str_at(obj, "/reclaimPolicy")),
            json!(str_at(obj, "/volumeBindingMode")),
            json!(obj
                .get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            table::age_cell(obj, now),
        ]
    }
}

/// The printer of `volumeattachments`.
pub static VOLUME_ATTACHMENT: Printer = Printer {
    columns: &[
        Column::name(),
        Column::text("Attacher", "Attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName()."),
        Column::text("PV", "Name of the persistent volume to attach."),
        Column::text("Node", "The node that the volume should be attached to."),
        Column { kind: "boolean", ..Column::text("Attached", "Indicates the volume is successfully attached.") },
        Column::age(),
    ],
    row: |obj, now| {
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/attacher")),
            json!(str_at(obj, "/spec/source/persistentVolumeName")),
            json!(str_at(obj, "/spec/nodeName")),
            json!(obj.pointer("/status/attached").and_then(Value::as_bool).unwrap_or(false)),
            table::age_cell(obj, now),
        ]
    },
};

/// The strategy of `csidrivers`.
pub struct CsiDriverStrategy;

impl Strategy for CsiDriverStrategy {
    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        set_default(spec, "attachRequired", json!(true));
        set_default(spec, "podInfoOnMount", json!(false));
        set_default(spec, "storageCapacity", json!(false));
        set_default(spec, "requiresRepublish", json!(false));
        set_default(spec, "seLinuxMount", json!(false));
        set_default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
        set_default(spec, "volumeLifecycleModes", json!(["Persistent"]));
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column { kind: "boolean", ..Column::text("AttachRequired", "Indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting.") },
            Column::text("PodInfoOnMount", "Indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations."),
            Column::text("StorageCapacity", "Indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information."),
            Column::text("TokenRequests", "Indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
            Column::text("RequiresRepublish", "RequiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume."),
            Column::text("Modes", "Defines what kind of volumes this CSI volume driver supports."),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let audiences: Vec<&str> = array_at(obj, "/spec/tokenRequests")
            .iter()
            .map(|t| match str_at(t, "/audience") {
                "" => "<unset>",
                a => a,
            })
            .collect();
        vec![
            table::name_cell(obj),
            json!(obj
                .pointer("/spec/attachRequired")
                .and_then(Value::as_bool)
                .unwrap_or(true)),
            json!(scalar_or_none(obj.pointer("/spec/podInfoOnMount"))),
            json!(scalar_or_none(obj.pointer("/spec/storageCapacity"))),
            or_none(audiences.join(",")),
            json!(scalar_or_none(obj.pointer("/spec/requiresRepublish"))),
            joined(obj, "/spec/volumeLifecycleModes"),
            table::age_cell(obj, now),
        ]
    }
}

/// The printer of `csinodes`.
pub static CSI_NODE: Printer = Printer {
    columns: &[
        Column::name(),
        Column::integer(
            "Drivers",
            "Drivers indicates the number of CSI drivers registered on the node",
        ),
        Column::age(),
    ],
    row: |obj, now| {
        vec![
            table::name_cell(obj),
            json!(array_at(obj, "/spec/drivers").len()),
            table::age_cell(obj, now),
        ]
    },
};
