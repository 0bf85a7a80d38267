//! VolumeBinding: pods with PersistentVolumeClaims fit only nodes their volumes can be
//! used on. Bound claims pin the pod to their volume's node affinity; claims of a
//! `WaitForFirstConsumer` class still unbound need, on the node, an available volume that
//! fits them or a class that can provision one. On PreBind the choice is written — a
//! matching volume is pre-bound to the claim (`spec.claimRef`), otherwise the claim gets
//! `volume.kubernetes.io/selected-node` for its provisioner — and the pod is bound only
//! once the PV controller has bound every claim (`volumebinding/binder.go`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use super::helpers::{selector_matches, term_matches};
use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, Plugin, PreBindPlugin, PreFilterPlugin,
    ReservePlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "VolumeBinding";
/// A node none of whose available volumes fits an unbound claim (`ErrReasonBindConflict`).
pub const ERR_REASON_BIND_CONFLICT: &str =
    "node(s) didn't find available persistent volumes to bind";
/// A bound volume whose node affinity excludes the node (`ErrReasonNodeConflict`).
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// A bound claim whose volume is gone (`ErrReasonPVNotExist`).
pub const ERR_REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// Claims of an `Immediate` class must be bound before the pod is scheduled.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// How long PreBind waits for the claims to be bound (upstream's `bindTimeoutSeconds`).
const BIND_TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(100);

/// What the plugin reads from and writes to the API: claims, volumes and classes from
/// watch-fed caches; volume and claim updates.
pub trait VolumeApi: Send + Sync + 'static {
    /// A claim from the cache.
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    /// Every volume in the cache.
    fn volumes(&self) -> Vec<Arc<PersistentVolume>>;
    /// A StorageClass from the cache.
    fn class(&self, name: &str) -> Option<Arc<StorageClass>>;
    /// Replaces a volume (optimistic concurrency on its resourceVersion).
    fn update_volume(&self, volume: PersistentVolume) -> BoxFuture<'static, Result<(), String>>;
    /// Replaces a claim (optimistic concurrency on its resourceVersion).
    fn update_claim(&self, claim: PersistentVolumeClaim) -> BoxFuture<'static, Result<(), String>>;
}

/// A [`VolumeApi`] of a cluster without volumes (tests, benchmarks).
pub struct NoVolumes;

impl VolumeApi for NoVolumes {
    fn claim(&self, _: &str, _: &str) -> Option<Arc<PersistentVolumeClaim>> {
        None
    }
    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        Vec::new()
    }
    fn class(&self, _: &str) -> Option<Arc<StorageClass>> {
        None
    }
    fn update_volume(&self, _: PersistentVolume) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("no volume API".to_owned()) })
    }
    fn update_claim(&self, _: PersistentVolumeClaim) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("no volume API".to_owned()) })
    }
}

/// Filters by volumes and writes volume decisions before binding.
pub struct VolumeBinding {
    /// The caches and writes.
    pub api: Arc<dyn VolumeApi>,
    /// Decisions made at Reserve, by pod key, for PreBind; their volumes are not offered to
    /// other pods meanwhile.
    assumed: Arc<Mutex<HashMap<String, Vec<Decision>>>>,
}

impl VolumeBinding {
    /// The plugin over `api`.
    pub fn new(api: Arc<dyn VolumeApi>) -> VolumeBinding {
        VolumeBinding {
            api,
            assumed: Arc::default(),
        }
    }
}

/// What PreBind does for one unbound claim.
#[derive(Debug, Clone)]
enum Decision {
    /// Pre-bind this existing volume to the claim.
    Volume(Arc<PersistentVolumeClaim>, Arc<PersistentVolume>),
    /// Ask the class's provisioner for a volume on the node.
    Provision(Arc<PersistentVolumeClaim>),
}

/// PreFilter's view of the pod's claims.
struct PodVolumes {
    /// Volumes of bound claims (`None` when the volume is missing).
    bound: Vec<Option<Arc<PersistentVolume>>>,
    /// Unbound claims of `WaitForFirstConsumer` classes, with their class.
    delayed: Vec<(Arc<PersistentVolumeClaim>, Option<Arc<StorageClass>>)>,
    /// The volumes in the cache when the cycle began.
    volumes: Vec<Arc<PersistentVolume>>,
}

const STATE_KEY: &str = "PreFilterVolumeBinding";

/// The claim names a pod uses: `persistentVolumeClaim` volumes and the claims of generic
/// ephemeral volumes (`<pod>-<volume>`).
pub fn pod_claims(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| {
            claim
                .metadata
                .annotations
                .as_ref()?
                .get(ANN_BETA_STORAGE_CLASS)
                .map(String::as_str)
        })
        .unwrap_or("")
}

fn storage(
    q: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> f64 {
    q.and_then(|m| m.get("storage"))
        .and_then(|q| skiff_quantity::parse(&q.0))
        .unwrap_or(0.0)
}

/// Whether the volume's required node affinity admits the node (no affinity admits all).
pub fn volume_fits_node(
    volume: &PersistentVolume,
    labels: &BTreeMap<String, String>,
    node: &str,
) -> bool {
    match volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, node)),
    }
}

/// Whether an unbound (or pre-bound to this claim) available volume can serve the claim:
/// class, volume mode, access modes, size and the claim's selector.
fn volume_serves(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let prebound = match &vs.claim_ref {
        None => false,
        Some(r) if r.namespace == claim.metadata.namespace && r.name == claim.metadata.name => {
            if r.uid
                .as_deref()
                .is_some_and(|u| !u.is_empty() && Some(u) != claim.metadata.uid.as_deref())
            {
                return false;
            }
            true
        }
        Some(_) => return false,
    };
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    let class = vs.storage_class_name.as_deref().unwrap_or("");
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    let modes = vs.access_modes.as_deref().unwrap_or(&[]);
    volume.metadata.deletion_timestamp.is_none()
        && (prebound || phase == Some("Available"))
        && class == claim_class(claim)
        && mode(&vs.volume_mode) == mode(&cs.volume_mode)
        && cs.access_modes.iter().flatten().all(|m| modes.contains(m))
        && storage(vs.capacity.as_ref())
            >= storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref()))
        && (prebound
            || cs.selector.is_none()
            || selector_matches(
                cs.selector.as_ref(),
                volume.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            ))
}

impl VolumeBinding {
    /// The decisions for the delayed claims on one node, or why the node does not fit.
    fn decide(
        &self,
        pod_key: &str,
        state: &PodVolumes,
        labels: &BTreeMap<String, String>,
        node: &str,
    ) -> Result<Vec<Decision>, Status> {
        for bound in &state.bound {
            match bound {
                None => return Err(Status::unresolvable(ERR_REASON_PV_NOT_EXIST)),
                Some(v) if !volume_fits_node(v, labels, node) => {
                    return Err(Status::unresolvable(ERR_REASON_NODE_CONFLICT))
                }
                Some(_) => {}
            }
        }
        let taken_by_others: HashSet<String> = self
            .assumed
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_str() != pod_key)
            .flat_map(|(_, ds)| ds.iter())
            .filter_map(|d| match d {
                Decision::Volume(_, v) => v.metadata.name.clone(),
                Decision::Provision(_) => None,
            })
            .collect();
        let mut chosen: HashSet<&str> = HashSet::new();
        let mut decisions = Vec::new();
        for (claim, class) in &state.delayed {
            let best = state
                .volumes
                .iter()
                .filter(|v| {
                    let name = v.metadata.name.as_deref().unwrap_or("");
                    !chosen.contains(name)
                        && !taken_by_others.contains(name)
                        && volume_serves(v, claim)
                        && volume_fits_node(v, labels, node)
                })
                .min_by(|a, b| {
                    let size = |v: &PersistentVolume| {
                        storage(v.spec.as_ref().and_then(|s| s.capacity.as_ref()))
                    };
                    size(a)
                        .total_cmp(&size(b))
                        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
                });
            if let Some(v) = best {
                chosen.insert(v.metadata.name.as_deref().unwrap_or(""));
                decisions.push(Decision::Volume(claim.clone(), v.clone()));
            } else if class
                .as_ref()
                .is_some_and(|c| c.provisioner != NO_PROVISIONER && class_allows_node(c, labels))
            {
                decisions.push(Decision::Provision(claim.clone()));
            } else {
                return Err(Status::unresolvable(ERR_REASON_BIND_CONFLICT));
            }
        }
        Ok(decisions)
    }
}

/// Whether the class's `allowedTopologies` (if any) admit the node.
fn class_allows_node(class: &StorageClass, labels: &BTreeMap<String, String>) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    terms.iter().any(|t| {
        t.match_label_expressions
            .iter()
            .flatten()
            .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
    })
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        Some(self)
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status {
        let names = pod_claims(pod);
        if names.is_empty() {
            return Status::skip();
        }
        let labels = nodes
            .iter()
            .map(|n| (n.name().to_owned(), n.labels().cloned().unwrap_or_default()))
            .collect();
        state.write(NODE_LABELS_KEY, NodeLabels(labels));
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let mut volumes = PodVolumes {
            bound: Vec::new(),
            delayed: Vec::new(),
            volumes: self.api.volumes(),
        };
        let mut unbound_immediate = false;
        for name in names {
            let Some(claim) = self.api.claim(namespace, &name) else {
                return Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Status::unresolvable(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                ));
            }
            let bound_to = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or("");
            if !bound_to.is_empty() {
                let volume = volumes
                    .volumes
                    .iter()
                    .find(|v| v.metadata.name.as_deref() == Some(bound_to))
                    .cloned();
                volumes.bound.push(volume);
                continue;
            }
            let class = Some(claim_class(&claim))
                .filter(|c| !c.is_empty())
                .and_then(|c| self.api.class(c));
            let delayed = class
                .as_ref()
                .and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer");
            if delayed {
                volumes.delayed.push((claim, class));
            } else {
                unbound_immediate = true;
            }
        }
        if unbound_immediate {
            return Status::unresolvable(ERR_UNBOUND_IMMEDIATE);
        }
        state.write(STATE_KEY, Arc::new(volumes));
        Status::success()
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(volumes) = state.read::<Arc<PodVolumes>>(STATE_KEY) else {
            return Status::success();
        };
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        match self.decide(&pod_key(pod), volumes, labels, node.name()) {
            Ok(_) => Status::success(),
            Err(status) => status,
        }
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(&self, state: &CycleState, pod: &Pod, node: &str) -> Status {
        let Some(volumes) = state.read::<Arc<PodVolumes>>(STATE_KEY) else {
            return Status::success();
        };
        if volumes.delayed.is_empty() {
            return Status::success();
        }
        // Decide again for the chosen node, now holding the decision against other pods.
        let labels = self.node_labels(state, node);
        match self.decide(&pod_key(pod), volumes, &labels, node) {
            Ok(decisions) => {
                self.assumed.lock().unwrap().insert(pod_key(pod), decisions);
                Status::success()
            }
            Err(status) => status,
        }
    }

    fn unreserve(&self, _: &CycleState, pod: &Pod, _: &str) {
        self.assumed.lock().unwrap().remove(&pod_key(pod));
    }
}

impl VolumeBinding {
    fn node_labels(&self, state: &CycleState, node: &str) -> BTreeMap<String, String> {
        state
            .read::<NodeLabels>(NODE_LABELS_KEY)
            .and_then(|l| l.0.get(node).cloned())
            .unwrap_or_else(|| BTreeMap::from([(HOSTNAME_LABEL.to_owned(), node.to_owned())]))
    }
}

/// The node label every kubelet sets to its node's name.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
const NODE_LABELS_KEY: &str = "VolumeBindingNodeLabels";
/// Node labels by node name, recorded at PreFilter for Reserve (which gets only a name).
struct NodeLabels(HashMap<String, BTreeMap<String, String>>);

impl PreBindPlugin for VolumeBinding {
    fn pre_bind(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Status> {
        let decisions = self
            .assumed
            .lock()
            .unwrap()
            .get(&pod_key(&pod))
            .cloned()
            .unwrap_or_default();
        let api = self.api.clone();
        let assumed = self.assumed.clone();
        Box::pin(async move {
            let status = bind_volumes(api.as_ref(), &pod, &node, decisions).await;
            assumed.lock().unwrap().remove(&pod_key(&pod));
            status
        })
    }
}

/// Writes the decisions, then waits until every claim of the pod is bound.
async fn bind_volumes(
    api: &dyn VolumeApi,
    pod: &Pod,
    node: &str,
    decisions: Vec<Decision>,
) -> Status {
    for decision in &decisions {
        let written = match decision {
            Decision::Volume(claim, volume) => {
                let mut v = (**volume).clone();
                let spec = v.spec.get_or_insert_with(Default::default);
                if spec.claim_ref.as_ref().is_some_and(|r| r.uid.is_some()) {
                    continue;
                }
                spec.claim_ref = Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: claim.metadata.namespace.clone(),
                    name: claim.metadata.name.clone(),
                    uid: claim.metadata.uid.clone(),
                    ..Default::default()
                });
                v.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
                api.update_volume(v).await
            }
            Decision::Provision(claim) => {
                let annotations = claim.metadata.annotations.as_ref();
                if annotations
                    .and_then(|a| a.get(ANN_SELECTED_NODE))
                    .map(String::as_str)
                    == Some(node)
                {
                    continue;
                }
                let mut c = (**claim).clone();
                c.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ANN_SELECTED_NODE.into(), node.to_owned());
                api.update_claim(c).await
            }
        };
        if let Err(e) = written {
            return Status::new(Code::Error, format!("binding volumes: {e}"));
        }
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
    loop {
        let mut pending = None;
        for name in pod_claims(pod) {
            let Some(claim) = api.claim(namespace, &name) else {
                return Status::new(
                    Code::Error,
                    format!("persistentvolumeclaim \"{name}\" not found"),
                );
            };
            let bound = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty())
                && claim
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED));
            if !bound {
                pending = Some(name);
                break;
            }
        }
        let Some(name) = pending else {
            return Status::success();
        };
        if tokio::time::Instant::now() >= deadline {
            return Status::new(
                Code::Error,
                format!("binding volumes: timed out waiting for the condition (persistentvolumeclaim \"{name}\" is not bound)"),
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`VolumeApi`] over watch-fed caches of claims, volumes and classes.
pub struct CachedVolumes {
    client: kube::Client,
    claims: kube::runtime::reflector::Store<PersistentVolumeClaim>,
    volumes: kube::runtime::reflector::Store<PersistentVolume>,
    classes: kube::runtime::reflector::Store<StorageClass>,
}

impl CachedVolumes {
    /// Starts the caches; the stream yields after every change in them (the scheduler
    /// retries unschedulable pods then) and must be polled to keep them current.
    pub fn start(
        client: kube::Client,
    ) -> (Arc<CachedVolumes>, futures::stream::BoxStream<'static, ()>) {
        use futures::StreamExt as _;
        use kube::runtime::{reflector, watcher, WatchStreamExt as _};
        use kube::Api;
        let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
        let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
        let (classes, class_writer) = reflector::store::<StorageClass>();
        let config = || watcher::Config::default().any_semantic();
        let changes = futures::stream::select_all([
            watcher(Api::<PersistentVolumeClaim>::all(client.clone()), config())
                .default_backoff()
                .reflect(claim_writer)
                .map(drop)
                .boxed(),
            watcher(Api::<PersistentVolume>::all(client.clone()), config())
                .default_backoff()
                .reflect(volume_writer)
                .map(drop)
                .boxed(),
            watcher(Api::<StorageClass>::all(client.clone()), config())
                .default_backoff()
                .reflect(class_writer)
                .map(drop)
                .boxed(),
        ])
        .boxed();
        let cached = CachedVolumes {
            client,
            claims,
            volumes,
            classes,
        };
        (Arc::new(cached), changes)
    }
}

impl VolumeApi for CachedVolumes {
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }
    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.state()
    }
    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes
            .get(&kube::runtime::reflector::ObjectRef::new(name))
    }
    fn update_volume(&self, volume: PersistentVolume) -> BoxFuture<'static, Result<(), String>> {
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        Box::pin(async move {
            let name = volume.metadata.name.clone().unwrap_or_default();
            api.replace(&name, &Default::default(), &volume)
                .await
                .map(drop)
                .map_err(|e| format!("updating persistentvolume {name}: {e}"))
        })
    }
    fn update_claim(&self, claim: PersistentVolumeClaim) -> BoxFuture<'static, Result<(), String>> {
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let api: kube::Api<PersistentVolumeClaim> =
            kube::Api::namespaced(self.client.clone(), &namespace);
        Box::pin(async move {
            let name = claim.metadata.name.clone().unwrap_or_default();
            api.replace(&name, &Default::default(), &claim)
                .await
                .map(drop)
                .map_err(|e| format!("updating persistentvolumeclaim {namespace}/{name}: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Fake {
        claims: Mutex<Vec<Arc<PersistentVolumeClaim>>>,
        volumes: Vec<Arc<PersistentVolume>>,
        classes: Vec<Arc<StorageClass>>,
        writes: Mutex<Vec<String>>,
    }

    impl VolumeApi for Fake {
        fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
            self.claims
                .lock()
                .unwrap()
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(namespace)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }
        fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
            self.volumes.clone()
        }
        fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
            self.classes
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
                .cloned()
        }
        fn update_volume(&self, v: PersistentVolume) -> BoxFuture<'static, Result<(), String>> {
            let r = v.spec.unwrap().claim_ref.unwrap();
            self.writes.lock().unwrap().push(format!(
                "pv {} -> {}",
                v.metadata.name.unwrap(),
                r.name.unwrap()
            ));
            Box::pin(async { Ok(()) })
        }
        fn update_claim(&self, c: PersistentVolumeClaim) -> BoxFuture<'static, Result<(), String>> {
            let node = c.metadata.annotations.as_ref().unwrap()[ANN_SELECTED_NODE].clone();
            self.writes.lock().unwrap().push(format!(
                "pvc {} on {node}",
                c.metadata.name.clone().unwrap()
            ));
            // The PV controller and the provisioner answer by binding the claim.
            let mut bound = c;
            bound.spec.as_mut().unwrap().volume_name = Some("pvc-new".into());
            bound
                .metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(ANN_BIND_COMPLETED.into(), "yes".into());
            let mut claims = self.claims.lock().unwrap();
            claims.retain(|x| x.metadata.name != bound.metadata.name);
            claims.push(Arc::new(bound));
            Box::pin(async { Ok(()) })
        }
    }

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }
    fn node(name: &str) -> NodeInfo {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {HOSTNAME_LABEL: name}}}),
        )
        .unwrap();
        let mut info = NodeInfo::default();
        info.set_node(Arc::new(node));
        info
    }
    fn pod(claims: &[&str]) -> Pod {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}], "volumes": volumes}}))
        .unwrap()
    }
    fn claim(name: &str, class: &str, volume: Option<&str>) -> Arc<PersistentVolumeClaim> {
        obj(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"storageClassName": class, "volumeName": volume, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}),
        )
    }
    fn volume(name: &str, node: &str, class: &str) -> Arc<PersistentVolume> {
        obj(json!({"metadata": {"name": name},
            "spec": {"storageClassName": class, "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/x"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": "Available"}}))
    }
    fn class(name: &str, mode: &str, provisioner: &str) -> Arc<StorageClass> {
        obj(
            json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode}),
        )
    }

    fn run(fake: Fake, pod: &Pod, nodes: &[&NodeInfo]) -> (Status, Vec<Status>, VolumeBinding) {
        let plugin = VolumeBinding::new(Arc::new(fake));
        let mut state = CycleState::default();
        let pre = plugin.pre_filter(&mut state, pod, nodes);
        let filtered = if pre.is_success() {
            nodes
                .iter()
                .map(|n| plugin.filter(&state, pod, n))
                .collect()
        } else {
            Vec::new()
        };
        (pre, filtered, plugin)
    }

    #[test]
    fn missing_claims_and_unbound_immediate_claims_are_unschedulable() {
        let (n1,) = (node("n1"),);
        let (pre, _, _) = run(Fake::default(), &pod(&["x"]), &[&n1]);
        assert_eq!(pre.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(pre.message(), "persistentvolumeclaim \"x\" not found");
        let fake = Fake {
            claims: Mutex::new(vec![claim("c", "fast", None)]),
            classes: vec![class("fast", "Immediate", "x.io/p")],
            ..Fake::default()
        };
        let (pre, _, _) = run(fake, &pod(&["c"]), &[&n1]);
        assert_eq!(pre.message(), ERR_UNBOUND_IMMEDIATE);
        let (pre, _, _) = run(Fake::default(), &pod(&[]), &[&n1]);
        assert_eq!(pre.code, Code::Skip);
    }

    #[test]
    fn bound_volumes_pin_the_pod_to_their_node() {
        let (n1, n2) = (node("n1"), node("n2"));
        let fake = Fake {
            claims: Mutex::new(vec![claim("c", "", Some("v"))]),
            volumes: vec![volume("v", "n2", "")],
            ..Fake::default()
        };
        let (_, filtered, _) = run(fake, &pod(&["c"]), &[&n1, &n2]);
        assert_eq!(filtered[0].message(), ERR_REASON_NODE_CONFLICT);
        assert!(filtered[1].is_success());
    }

    #[test]
    fn delayed_claims_need_a_volume_on_the_node_or_a_provisioner() {
        let (n1, n2) = (node("n1"), node("n2"));
        let fake = Fake {
            claims: Mutex::new(vec![claim("c", "manual", None)]),
            volumes: vec![volume("v", "n2", "manual")],
            classes: vec![class("manual", "WaitForFirstConsumer", NO_PROVISIONER)],
            ..Fake::default()
        };
        let (_, filtered, _) = run(fake, &pod(&["c"]), &[&n1, &n2]);
        assert_eq!(filtered[0].message(), ERR_REASON_BIND_CONFLICT);
        assert!(filtered[1].is_success());

        let fake = Fake {
            claims: Mutex::new(vec![claim("c", "local-path", None)]),
            classes: vec![class(
                "local-path",
                "WaitForFirstConsumer",
                "rancher.io/local-path",
            )],
            ..Fake::default()
        };
        let (_, filtered, _) = run(fake, &pod(&["c"]), &[&n1, &n2]);
        assert!(filtered.iter().all(Status::is_success));
    }

    #[tokio::test]
    async fn pre_bind_writes_the_choice_and_waits_for_the_binding() {
        let n1 = node("n1");
        let fake = Arc::new(Fake {
            claims: Mutex::new(vec![claim("c", "local-path", None)]),
            classes: vec![class(
                "local-path",
                "WaitForFirstConsumer",
                "rancher.io/local-path",
            )],
            ..Fake::default()
        });
        let plugin = VolumeBinding::new(fake.clone());
        let pod = pod(&["c"]);
        let mut state = CycleState::default();
        assert!(plugin.pre_filter(&mut state, &pod, &[&n1]).is_success());
        assert!(plugin.reserve(&state, &pod, "n1").is_success());
        let status = plugin.pre_bind(Arc::new(pod), "n1".into()).await;
        assert!(status.is_success(), "{status:?}");
        assert_eq!(*fake.writes.lock().unwrap(), ["pvc c on n1"]);
        assert!(plugin.assumed.lock().unwrap().is_empty());
    }

    #[test]
    fn a_volume_reserved_for_one_pod_is_not_offered_to_another() {
        let n1 = node("n1");
        let fake = Fake {
            claims: Mutex::new(vec![claim("a", "manual", None), claim("b", "manual", None)]),
            volumes: vec![volume("v", "n1", "manual")],
            classes: vec![class("manual", "WaitForFirstConsumer", NO_PROVISIONER)],
            ..Fake::default()
        };
        let plugin = VolumeBinding::new(Arc::new(fake));
        let first = pod(&["a"]);
        let mut state = CycleState::default();
        assert!(plugin.pre_filter(&mut state, &first, &[&n1]).is_success());
        assert!(plugin.reserve(&state, &first, "n1").is_success());
        let mut second = pod(&["b"]);
        second.metadata.name = Some("q".into());
        let mut state = CycleState::default();
        assert!(plugin.pre_filter(&mut state, &second, &[&n1]).is_success());
        assert_eq!(
            plugin.filter(&state, &second, &n1).message(),
            ERR_REASON_BIND_CONFLICT
        );
        plugin.unreserve(&state, &first, "n1");
        assert!(plugin.filter(&state, &second, &n1).is_success());
    }
}
