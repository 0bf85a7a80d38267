//! What claims, volumes and classes say about each other: the annotations Kubernetes'
//! volume code uses, and the checks of `pkg/controller/volume/persistentvolume/util`
//! (does a volume satisfy a claim, which class does a claim ask for).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// Set on a claim once the controller finished binding it (`AnnBindCompleted`).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume whose binding the controller (not a user) wrote
/// (`AnnBoundByController`).
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for a WaitForFirstConsumer claim (`AnnSelectedNode`).
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner expected to create a claim's volume (`AnnStorageProvisioner`).
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta spelling of [`ANN_STORAGE_PROVISIONER`], still written for old provisioners.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The provisioner that created a volume (`AnnDynamicallyProvisioned`).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The beta annotation naming a claim's or volume's class.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// Marks the cluster's default StorageClass.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta spelling of [`ANN_DEFAULT_CLASS`].
pub const ANN_BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The provisioner of classes whose volumes are only ever created by hand.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// An annotation of an object, if present.
pub fn annotation<'a>(
    annotations: &'a Option<BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    annotations.as_ref()?.get(key).map(String::as_str)
}

/// The class a claim asks for: `spec.storageClassName`, else the beta annotation, else "".
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(class) = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        return class;
    }
    annotation(&claim.metadata.annotations, ANN_BETA_STORAGE_CLASS).unwrap_or("")
}

/// The class of a volume: `spec.storageClassName`, else the beta annotation, else "".
pub fn volume_class(volume: &PersistentVolume) -> &str {
    if let Some(class) = volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        return class;
    }
    annotation(&volume.metadata.annotations, ANN_BETA_STORAGE_CLASS).unwrap_or("")
}

/// Whether a class is marked as the default.
pub fn is_default_class(class: &StorageClass) -> bool {
    [ANN_DEFAULT_CLASS, ANN_BETA_DEFAULT_CLASS]
        .iter()
        .any(|a| annotation(&class.metadata.annotations, a) == Some("true"))
}

/// Whether the claim's class waits for a pod before binding (`WaitForFirstConsumer`).
pub fn delays_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The storage a claim requests, in bytes (0 when unset or malformed: refused by validation).
pub fn claim_request(claim: &PersistentVolumeClaim) -> f64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| skiff_quantity::parse(&q.0))
        .unwrap_or(0.0)
}

/// A volume's capacity in bytes.
pub fn volume_capacity(volume: &PersistentVolume) -> f64 {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| skiff_quantity::parse(&q.0))
        .unwrap_or(0.0)
}

/// `namespace/name` of a claim.
pub fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether `volume.spec.claimRef` points at `claim` (by namespace and name, and by UID
/// when the reference has one: a reference without one is a user's pre-binding).
pub fn volume_bound_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.namespace == claim.metadata.namespace
        && r.name == claim.metadata.name
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref())
}

/// Why `volume` cannot serve `claim` (`checkVolumeSatisfyClaim`): size, class, volume mode
/// and access modes; `None` when it can.
pub fn unsatisfied(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> Option<String> {
    if volume_capacity(volume) < claim_request(claim) {
        return Some("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Some("storageClassName does not match".into());
    }
    let mode = |m: Option<&String>| m.map(String::as_str).unwrap_or("Filesystem").to_owned();
    let vspec = volume.spec.as_ref();
    let cspec = claim.spec.as_ref();
    if mode(vspec.and_then(|s| s.volume_mode.as_ref()))
        != mode(cspec.and_then(|s| s.volume_mode.as_ref()))
    {
        return Some("incompatible volumeMode".into());
    }
    let offered = vspec.and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    let wanted = cspec.and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    if !wanted.iter().all(|m| offered.contains(m)) {
        return Some("incompatible accessMode".into());
    }
    None
}

/// Whether the claim's label selector (if any) matches the volume's labels.
pub fn selector_matches(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    match claim.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        None => true,
        Some(selector) => {
            crate::pod_util::selector_matches(Some(selector), volume.metadata.labels.as_ref())
        }
    }
}

/// The smallest Available, unclaimed volume that satisfies `claim` and its selector
/// (`findMatchingVolume` without node topology), skipping `taken` volume names.
pub fn best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl Iterator<Item = &'a PersistentVolume>,
    taken: &dyn Fn(&str) -> bool,
) -> Option<&'a PersistentVolume> {
    volumes
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter(|v| v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none())
        .filter(|v| v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"))
        .filter(|v| !taken(v.metadata.name.as_deref().unwrap_or("")))
        .filter(|v| unsatisfied(v, claim).is_none() && selector_matches(v, claim))
        .min_by(|a, b| {
            volume_capacity(a)
                .total_cmp(&volume_capacity(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}
