//! The binder's decisions, without I/O: from the cached claims, volumes and classes, the
//! claims and volumes as they should be (bindings, annotations, phases) and the Events to
//! record — `syncClaim` and `syncVolume` of kube-controller-manager's PV controller.
//!
//! Everything is recomputed from the caches on each sweep, so a binding interrupted
//! between its writes (volume first, then claim, as upstream) is finished by the next.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;

use super::util::*;
use crate::events::EventType;

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A claim, by `namespace/name`.
    Claim(String),
    /// A volume, by name.
    Volume(String),
}

/// An Event to record.
#[derive(Debug, Clone)]
pub struct Event {
    /// What it is about.
    pub subject: Subject,
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// Kubernetes' reason (`WaitForFirstConsumer`, `FailedBinding`, ...).
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// What one sweep should write.
#[derive(Debug, Default)]
pub struct Plan {
    /// Volumes that differ from the cache, as they should be.
    pub volumes: Vec<PersistentVolume>,
    /// Claims that differ from the cache, as they should be.
    pub claims: Vec<PersistentVolumeClaim>,
    /// Events, at most one per subject.
    pub events: Vec<Event>,
}

/// The message of the `ExternalProvisioning` event (upstream's wording).
pub fn external_provisioning_message(provisioner: &str) -> String {
    format!(
        "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
         or manually by the system administrator. If volume creation is delayed, please verify \
         that the provisioner is running and correctly registered."
    )
}

struct Working<'a> {
    claims: BTreeMap<String, PersistentVolumeClaim>,
    volumes: BTreeMap<String, PersistentVolume>,
    classes: BTreeMap<&'a str, &'a StorageClass>,
    events: BTreeMap<Subject, Event>,
}

/// Computes the writes and Events of one sweep.
pub fn plan(
    claims: &[Arc<PersistentVolumeClaim>],
    volumes: &[Arc<PersistentVolume>],
    classes: &[Arc<StorageClass>],
) -> Plan {
    let mut w = Working {
        claims: claims
            .iter()
            .map(|c| (claim_key(c), (**c).clone()))
            .collect(),
        volumes: volumes
            .iter()
            .map(|v| (v.metadata.name.clone().unwrap_or_default(), (**v).clone()))
            .collect(),
        classes: classes
            .iter()
            .map(|c| (c.metadata.name.as_deref().unwrap_or(""), &**c))
            .collect(),
        events: BTreeMap::new(),
    };
    // New volumes become Available before claims look for them.
    for v in w.volumes.values_mut() {
        if phase_of(v) == "Pending" && claim_ref(v).is_none() {
            set_volume_phase(v, "Available", None);
        }
    }
    let mut order: Vec<&Arc<PersistentVolumeClaim>> = claims.iter().collect();
    order.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| claim_key(a).cmp(&claim_key(b)))
    });
    for claim in order {
        sync_claim(&mut w, &claim_key(claim));
    }
    let names: Vec<String> = w.volumes.keys().cloned().collect();
    for name in names {
        sync_volume(&mut w, &name);
    }
    let mut plan = Plan {
        events: w.events.into_values().collect(),
        ..Plan::default()
    };
    for c in claims {
        if let Some(desired) = w.claims.remove(&claim_key(c)) {
            if desired != **c {
                plan.claims.push(desired);
            }
        }
    }
    for v in volumes {
        if let Some(desired) = w.volumes.remove(v.metadata.name.as_deref().unwrap_or("")) {
            if desired != **v {
                plan.volumes.push(desired);
            }
        }
    }
    plan
}

fn phase_of(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn claim_ref(v: &PersistentVolume) -> Option<&ObjectReference> {
    v.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

fn set_volume_phase(v: &mut PersistentVolume, phase: &str, message: Option<String>) {
    let status = v.status.get_or_insert_with(PersistentVolumeStatus::default);
    if status.phase.as_deref() != Some(phase) || status.message != message {
        status.phase = Some(phase.into());
        status.message = message;
        status.reason = None;
    }
}

fn set_claim_pending(c: &mut PersistentVolumeClaim) {
    let status = c
        .status
        .get_or_insert_with(PersistentVolumeClaimStatus::default);
    status.phase = Some("Pending".into());
}

fn annotate(annotations: &mut Option<BTreeMap<String, String>>, key: &str, value: &str) {
    annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

impl Working<'_> {
    fn event(&mut self, subject: Subject, type_: EventType, reason: &'static str, message: String) {
        self.events.entry(subject.clone()).or_insert(Event {
            subject,
            type_,
            reason,
            message,
        });
    }

    /// The default class (the newest when several are marked, as upstream).
    fn default_class(&self) -> Option<&str> {
        self.classes
            .values()
            .filter(|c| is_default_class(c))
            .max_by_key(|c| c.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .and_then(|c| c.metadata.name.as_deref())
    }
}

fn sync_claim(w: &mut Working<'_>, key: &str) {
    let Some(claim) = w.claims.get(key) else {
        return;
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return;
    }
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if volume_name.is_empty() {
        sync_unbound_claim(w, key);
    } else {
        sync_bound_claim(w, key, &volume_name);
    }
}

fn sync_unbound_claim(w: &mut Working<'_>, key: &str) {
    let subject = Subject::Claim(key.to_owned());
    // Retroactive default class: a claim that never named a class gets today's default.
    let unset = {
        let claim = &w.claims[key];
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_ref())
            .is_none()
            && annotation(&claim.metadata.annotations, ANN_BETA_STORAGE_CLASS).is_none()
    };
    if unset {
        if let Some(default) = w.default_class().map(str::to_owned) {
            let claim = w.claims.get_mut(key).expect("claim");
            claim
                .spec
                .get_or_insert_with(Default::default)
                .storage_class_name = Some(default);
        }
    }
    let claim = w.claims[key].clone();
    let class_name = claim_class(&claim).to_owned();
    let class = w.classes.get(class_name.as_str()).copied();
    let delay = delays_binding(class);
    let prebound = w
        .volumes
        .values()
        .find(|v| {
            volume_bound_to(v, &claim)
                && v.metadata.deletion_timestamp.is_none()
                && !matches!(phase_of(v), "Released" | "Failed")
        })
        .map(|v| {
            (
                v.metadata.name.clone().unwrap_or_default(),
                unsatisfied(v, &claim),
            )
        });
    let chosen = match prebound {
        Some((name, None)) => Some(name),
        Some((name, Some(why))) => {
            set_claim_pending(w.claims.get_mut(key).expect("claim"));
            w.event(
                subject,
                EventType::Warning,
                "FailedBinding",
                format!("Cannot bind to requested volume \"{name}\": {why}"),
            );
            return;
        }
        // WaitForFirstConsumer: the scheduler picks the volume with the pod's node.
        None if delay => None,
        None => {
            best_match(&claim, w.volumes.values(), &|_| false).and_then(|v| v.metadata.name.clone())
        }
    };
    if let Some(name) = chosen {
        bind(w, key, &name);
        return;
    }
    set_claim_pending(w.claims.get_mut(key).expect("claim"));
    if class_name.is_empty() {
        w.event(
            subject,
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        );
        return;
    }
    let Some(class) = class else {
        w.event(
            subject,
            EventType::Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        );
        return;
    };
    let selected = annotation(&claim.metadata.annotations, ANN_SELECTED_NODE).is_some();
    if delay && !selected {
        w.event(
            subject,
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        );
        return;
    }
    if class.provisioner == NO_PROVISIONER {
        w.event(
            subject,
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        );
        return;
    }
    // Hand the claim to its provisioner, which creates a volume pre-bound to it.
    let c = w.claims.get_mut(key).expect("claim");
    annotate(
        &mut c.metadata.annotations,
        ANN_STORAGE_PROVISIONER,
        &class.provisioner,
    );
    annotate(
        &mut c.metadata.annotations,
        ANN_BETA_STORAGE_PROVISIONER,
        &class.provisioner,
    );
    w.event(
        subject,
        EventType::Normal,
        "ExternalProvisioning",
        external_provisioning_message(&class.provisioner),
    );
}

fn sync_bound_claim(w: &mut Working<'_>, key: &str, volume_name: &str) {
    let subject = Subject::Claim(key.to_owned());
    let claim = w.claims[key].clone();
    let completed = annotation(&claim.metadata.annotations, ANN_BIND_COMPLETED).is_some();
    let lost = |w: &mut Working<'_>, reason: &'static str, message: &str| {
        let c = w.claims.get_mut(key).expect("claim");
        let status = c.status.get_or_insert_with(Default::default);
        if status.phase.as_deref() != Some("Lost") {
            status.phase = Some("Lost".into());
            w.event(subject.clone(), EventType::Warning, reason, message.into());
        }
    };
    let Some(volume) = w.volumes.get(volume_name) else {
        if completed {
            lost(
                w,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            );
        } else {
            set_claim_pending(w.claims.get_mut(key).expect("claim"));
        }
        return;
    };
    if claim_ref(volume).is_none() {
        // The user named the volume in the claim: bind it if it fits.
        if let Some(why) = unsatisfied(volume, &claim) {
            set_claim_pending(w.claims.get_mut(key).expect("claim"));
            w.event(
                subject,
                EventType::Warning,
                "FailedBinding",
                format!("Cannot bind to requested volume \"{volume_name}\": {why}"),
            );
            return;
        }
        bind(w, key, volume_name);
    } else if volume_bound_to(volume, &claim) {
        bind(w, key, volume_name);
    } else if completed {
        lost(
            w,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
        );
    } else {
        set_claim_pending(w.claims.get_mut(key).expect("claim"));
        w.event(
            subject,
            EventType::Warning,
            "FailedBinding",
            format!("volume \"{volume_name}\" already bound to a different claim."),
        );
    }
}

/// Binds claim and volume both ways (`bind`: volume first, then claim), idempotently.
fn bind(w: &mut Working<'_>, key: &str, volume_name: &str) {
    let claim = w.claims[key].clone();
    let volume = w.volumes.get_mut(volume_name).expect("volume");
    let spec = volume.spec.get_or_insert_with(Default::default);
    let complete_ref = spec
        .claim_ref
        .as_ref()
        .is_some_and(|r| r.uid.as_deref().is_some_and(|u| !u.is_empty()));
    if !complete_ref {
        if spec.claim_ref.is_none() {
            annotate(
                &mut volume.metadata.annotations,
                ANN_BOUND_BY_CONTROLLER,
                "yes",
            );
        }
        let spec = volume.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            ..Default::default()
        });
    }
    set_volume_phase(volume, "Bound", None);
    let (capacity, modes) = {
        let spec = volume.spec.as_ref().expect("spec");
        (spec.capacity.clone(), spec.access_modes.clone())
    };
    let c = w.claims.get_mut(key).expect("claim");
    let cspec = c.spec.get_or_insert_with(Default::default);
    if cspec.volume_name.as_deref().unwrap_or("").is_empty() {
        cspec.volume_name = Some(volume_name.into());
        annotate(&mut c.metadata.annotations, ANN_BOUND_BY_CONTROLLER, "yes");
    }
    annotate(&mut c.metadata.annotations, ANN_BIND_COMPLETED, "yes");
    let status = c.status.get_or_insert_with(Default::default);
    status.phase = Some("Bound".into());
    status.capacity = capacity;
    status.access_modes = modes;
}

fn sync_volume(w: &mut Working<'_>, name: &str) {
    let volume = w.volumes[name].clone();
    if volume.metadata.deletion_timestamp.is_some() {
        return;
    }
    let subject = Subject::Volume(name.to_owned());
    let Some(r) = claim_ref(&volume).cloned() else {
        set_volume_phase(w.volumes.get_mut(name).expect("volume"), "Available", None);
        return;
    };
    if r.uid.as_deref().unwrap_or("").is_empty() {
        // Pre-bound by a user to a claim not bound yet.
        set_volume_phase(w.volumes.get_mut(name).expect("volume"), "Available", None);
        return;
    }
    let key = format!(
        "{}/{}",
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or("")
    );
    let claim = w
        .claims
        .get(&key)
        .filter(|c| c.metadata.uid == r.uid)
        .cloned();
    let policy = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Retain".into());
    let provisioned = annotation(&volume.metadata.annotations, ANN_PROVISIONED_BY).is_some();
    let Some(claim) = claim else {
        // The claim is gone: release the volume and reclaim it by its policy.
        let v = w.volumes.get_mut(name).expect("volume");
        if matches!(phase_of(v), "Released" | "Failed") {
            return;
        }
        match policy.as_str() {
            "Delete" if !provisioned => {
                let message = format!(
                    "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                );
                set_volume_phase(v, "Failed", Some(message.clone()));
                w.event(subject, EventType::Warning, "VolumeFailedDelete", message);
            }
            "Recycle" => {
                let message = "No recycler plugin found for the volume!".to_owned();
                set_volume_phase(v, "Failed", Some(message.clone()));
                w.event(subject, EventType::Warning, "VolumeFailedRecycle", message);
            }
            // Retain keeps the data; a provisioner deletes its own volumes once Released.
            _ => set_volume_phase(v, "Released", None),
        }
        return;
    };
    let bound_to = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    let v = w.volumes.get_mut(name).expect("volume");
    if bound_to.is_empty() || bound_to == name {
        // Bound, or about to be (the claim's sync finishes it).
        set_volume_phase(v, "Bound", None);
    } else if provisioned && policy == "Delete" {
        // Provisioned for a claim that got another volume: not needed.
        set_volume_phase(v, "Released", None);
    } else if annotation(&v.metadata.annotations, ANN_BOUND_BY_CONTROLLER).is_some() {
        // Our pre-binding lost the race to another volume: undo it.
        v.spec.get_or_insert_with(Default::default).claim_ref = None;
        if let Some(a) = v.metadata.annotations.as_mut() {
            a.remove(ANN_BOUND_BY_CONTROLLER);
        }
        set_volume_phase(v, "Available", None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(value: serde_json::Value) -> Arc<PersistentVolume> {
        Arc::new(serde_json::from_value(value).unwrap())
    }
    fn pvc(value: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        Arc::new(serde_json::from_value(value).unwrap())
    }
    fn class(name: &str, mode: &str, default: bool) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": {ANN_DEFAULT_CLASS: default.to_string()}},
                "provisioner": "rancher.io/local-path",
                "volumeBindingMode": mode,
            }))
            .unwrap(),
        )
    }
    fn volume(name: &str, size: &str, class: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
               "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                        "storageClassName": class, "hostPath": {"path": "/tmp/x"},
                        "persistentVolumeReclaimPolicy": "Retain"},
               "status": {"phase": "Available"}})
    }
    fn claim(name: &str, size: &str, class: Option<&str>) -> serde_json::Value {
        let mut c = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
               "status": {"phase": "Pending"}});
        if let Some(class) = class {
            c["spec"]["storageClassName"] = json!(class);
        }
        c
    }
    fn find<'a>(plan: &'a Plan, name: &str) -> &'a PersistentVolume {
        plan.volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
            .unwrap()
    }

    #[test]
    fn binds_the_smallest_fitting_volume_both_ways() {
        let volumes = [
            pv(volume("big", "10Gi", "manual")),
            pv(volume("small", "1Gi", "manual")),
            pv(volume("tiny", "100Mi", "manual")),
            pv(volume("other-class", "1Gi", "slow")),
        ];
        let claims = [pvc(claim("c", "500Mi", Some("manual")))];
        let plan = plan(&claims, &volumes, &[]);
        assert_eq!(plan.volumes.len(), 1);
        let v = find(&plan, "small");
        let r = v.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!(r.uid.as_deref(), Some("uid-c"));
        assert_eq!(v.status.as_ref().unwrap().phase.as_deref(), Some("Bound"));
        assert_eq!(
            annotation(&v.metadata.annotations, ANN_BOUND_BY_CONTROLLER),
            Some("yes")
        );
        let c = &plan.claims[0];
        assert_eq!(
            c.spec.as_ref().unwrap().volume_name.as_deref(),
            Some("small")
        );
        assert_eq!(
            annotation(&c.metadata.annotations, ANN_BIND_COMPLETED),
            Some("yes")
        );
        let status = c.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Bound"));
        assert_eq!(status.capacity.as_ref().unwrap()["storage"].0, "1Gi");

        // Applying the plan leaves nothing to do: the sweep is idempotent.
        let volumes: Vec<_> = volumes
            .iter()
            .map(|v| match v.metadata.name.as_deref() {
                Some("small") => Arc::new(find(&plan, "small").clone()),
                _ => v.clone(),
            })
            .collect();
        let claims = [Arc::new(plan.claims[0].clone())];
        let again = super::plan(&claims, &volumes, &[]);
        assert!(
            again.volumes.is_empty() && again.claims.is_empty(),
            "{again:?}"
        );
    }

    #[test]
    fn selector_access_modes_and_size_must_all_fit() {
        let volumes = [pv(volume("v", "1Gi", "manual"))];
        let mut wrong_label = claim("a", "1Gi", Some("manual"));
        wrong_label["spec"]["selector"] = json!({"matchLabels": {"tier": "slow"}});
        let mut many = claim("b", "1Gi", Some("manual"));
        many["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let too_big = claim("c", "2Gi", Some("manual"));
        let claims = [pvc(wrong_label), pvc(many), pvc(too_big)];
        let plan = plan(&claims, &volumes, &[]);
        assert!(plan.volumes.is_empty(), "{:?}", plan.volumes);
        assert!(plan.claims.is_empty());
        assert!(plan.events.iter().all(
            |e| e.reason == "ProvisioningFailed" && e.message.contains("\"manual\" not found")
        ));
    }

    #[test]
    fn two_claims_never_get_the_same_volume() {
        let volumes = [pv(volume("v", "1Gi", ""))];
        let claims = [
            pvc(claim("a", "1Gi", Some(""))),
            pvc(claim("b", "1Gi", Some(""))),
        ];
        let plan = plan(&claims, &volumes, &[]);
        let bound: Vec<_> = plan
            .claims
            .iter()
            .filter(|c| c.spec.as_ref().unwrap().volume_name.is_some())
            .collect();
        assert_eq!(bound.len(), 1);
        let other = plan
            .events
            .iter()
            .find(|e| e.reason == "FailedBinding")
            .unwrap();
        assert_eq!(
            other.message,
            "no persistent volumes available for this claim and no storage class is set"
        );
    }

    #[test]
    fn a_volume_named_by_the_claim_or_pre_bound_to_it_is_used() {
        let mut named = claim("a", "1Gi", Some("manual"));
        named["spec"]["volumeName"] = json!("second");
        let mut prebound = volume("third", "5Gi", "manual");
        prebound["spec"]["claimRef"] = json!({"namespace": "ns", "name": "b"});
        let volumes = [
            pv(volume("first", "1Gi", "manual")),
            pv(volume("second", "1Gi", "manual")),
            pv(prebound),
        ];
        let claims = [pvc(named), pvc(claim("b", "1Gi", Some("manual")))];
        let plan = plan(&claims, &volumes, &[]);
        let second = find(&plan, "second");
        assert_eq!(
            second
                .spec
                .as_ref()
                .unwrap()
                .claim_ref
                .as_ref()
                .unwrap()
                .name
                .as_deref(),
            Some("a")
        );
        let third = find(&plan, "third");
        let r = third.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!(r.uid.as_deref(), Some("uid-b"));
        // A user's pre-binding is not the controller's.
        assert_eq!(
            annotation(&third.metadata.annotations, ANN_BOUND_BY_CONTROLLER),
            None
        );
        assert!(plan
            .volumes
            .iter()
            .all(|v| v.metadata.name.as_deref() != Some("first")));
    }

    #[test]
    fn wait_for_first_consumer_waits_then_hands_over_to_the_provisioner() {
        let classes = [class("local-path", "WaitForFirstConsumer", true)];
        // No class named: the default is filled in; no node selected yet: wait.
        let claims = [pvc(claim("c", "1Gi", None))];
        let volumes = [pv(volume("v", "1Gi", "local-path"))];
        let first = plan(&claims, &volumes, &classes);
        let c = &first.claims[0];
        assert_eq!(
            c.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("local-path")
        );
        assert_eq!(c.spec.as_ref().unwrap().volume_name, None);
        assert_eq!(first.events[0].reason, "WaitForFirstConsumer");
        // The scheduler selected a node and no volume was pre-bound: provision.
        let mut selected = claim("c", "1Gi", Some("local-path"));
        selected["metadata"]["annotations"] = json!({ANN_SELECTED_NODE: "n1"});
        let second = plan(&[pvc(selected)], &[], &classes);
        let c = &second.claims[0];
        assert_eq!(
            annotation(&c.metadata.annotations, ANN_STORAGE_PROVISIONER),
            Some("rancher.io/local-path")
        );
        assert_eq!(second.events[0].reason, "ExternalProvisioning");
    }

    #[test]
    fn a_deleted_claim_releases_or_fails_its_volume_by_policy() {
        let bound = |name: &str, policy: &str, provisioned: bool| {
            let mut v = volume(name, "1Gi", "");
            v["spec"]["persistentVolumeReclaimPolicy"] = json!(policy);
            v["spec"]["claimRef"] = json!({"namespace": "ns", "name": "gone", "uid": "u1"});
            v["status"]["phase"] = json!("Bound");
            if provisioned {
                v["metadata"]["annotations"] = json!({ANN_PROVISIONED_BY: "rancher.io/local-path"});
            }
            pv(v)
        };
        let volumes = [
            bound("retain", "Retain", false),
            bound("delete-manual", "Delete", false),
            bound("delete-provisioned", "Delete", true),
        ];
        // A claim of the same name but another UID is a new claim, not the bound one.
        let mut newer = claim("gone", "1Gi", Some("nothing-here"));
        newer["metadata"]["uid"] = json!("u2");
        let plan = plan(&[pvc(newer)], &volumes, &[]);
        let phase = |n: &str| {
            find(&plan, n)
                .status
                .as_ref()
                .unwrap()
                .phase
                .clone()
                .unwrap()
        };
        assert_eq!(phase("retain"), "Released");
        assert_eq!(phase("delete-manual"), "Failed");
        assert_eq!(phase("delete-provisioned"), "Released");
        assert!(plan.events.iter().any(|e| e.reason == "VolumeFailedDelete"));
    }

    #[test]
    fn a_bound_claim_whose_volume_vanished_is_lost() {
        let mut c = claim("c", "1Gi", Some(""));
        c["spec"]["volumeName"] = json!("gone");
        c["metadata"]["annotations"] = json!({ANN_BIND_COMPLETED: "yes"});
        c["status"]["phase"] = json!("Bound");
        let plan = plan(&[pvc(c)], &[], &[]);
        assert_eq!(
            plan.claims[0].status.as_ref().unwrap().phase.as_deref(),
            Some("Lost")
        );
        assert_eq!(plan.events[0].reason, "ClaimLost");
    }

    #[test]
    fn new_volumes_become_available() {
        let mut v = volume("v", "1Gi", "");
        v["status"]["phase"] = json!("Pending");
        let plan = plan(&[], &[pv(v)], &[]);
        assert_eq!(
            find(&plan, "v").status.as_ref().unwrap().phase.as_deref(),
            Some("Available")
        );
    }
}
