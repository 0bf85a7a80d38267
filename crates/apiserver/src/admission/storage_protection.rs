//! StorageObjectInUseProtection: every new PersistentVolumeClaim gets the finalizer
//! `kubernetes.io/pvc-protection` and every new PersistentVolume
//! `kubernetes.io/pv-protection`, as kube-apiserver's plugin does. The controllers of the
//! same names (`skiff-controllers`' `storage_protection`) remove them once a deleted claim
//! is used by no pod, and a deleted volume is bound to no claim, so neither disappears
//! from under a running workload.

use serde_json::{json, Value};

use super::{Attributes, Operation};

/// The finalizer of claims.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer of volumes.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Adds the protection finalizer to a new claim or volume.
pub(super) fn mutate(attrs: &Attributes<'_>, obj: &mut Value) {
    if attrs.operation != Operation::Create
        || !attrs.subresource.is_empty()
        || !attrs.def.group.is_empty()
    {
        return;
    }
    let finalizer = match attrs.def.kind {
        "PersistentVolumeClaim" => PVC_PROTECTION,
        "PersistentVolume" => PV_PROTECTION,
        _ => return,
    };
    add_finalizer(obj, finalizer);
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("an array");
    if !list.iter().any(|f| f.as_str() == Some(finalizer)) {
        list.push(json!(finalizer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_is_added_once_next_to_others() {
        let mut claim = json!({"metadata": {"name": "c", "finalizers": ["example.com/keep"]}});
        add_finalizer(&mut claim, PVC_PROTECTION);
        add_finalizer(&mut claim, PVC_PROTECTION);
        assert_eq!(
            claim["metadata"]["finalizers"],
            json!(["example.com/keep", PVC_PROTECTION])
        );
        let mut volume = json!({"metadata": {"name": "v"}});
        add_finalizer(&mut volume, PV_PROTECTION);
        assert_eq!(volume["metadata"]["finalizers"], json!([PV_PROTECTION]));
    }
}
