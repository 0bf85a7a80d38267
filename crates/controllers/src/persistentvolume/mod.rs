//! The PersistentVolume controller (`pkg/controller/volume/persistentvolume`, registered as
//! `persistentvolume-binder`): binds claims to volumes, keeps both sides' phases
//! (claims Pending/Bound/Lost; volumes Available/Bound/Released/Failed), hands claims
//! that need a new volume to their class's provisioner, and releases volumes whose claim
//! is gone.
//!
//! As upstream, it resyncs everything periodically (every 15 s) as well as shortly after
//! any change in its claim, volume or class caches; [`binder`] decides, this module writes.

pub mod binder;
pub mod util;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};

use crate::events::Recorder;
use binder::{Plan, Subject};

/// How often everything is resynced when nothing changes (`--pvclaimbinder-sync-period`).
const RESYNC: Duration = Duration::from_secs(15);
/// How long after a cache change the next sweep runs.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the PV controller until its watches end.
pub async fn run(client: Client) {
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let config = watcher::Config::default;
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
    ]);
    let mut changes = changes.boxed();
    let ready = async {
        let _ = claims.wait_until_ready().await;
        let _ = volumes.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
    };
    if !crate::sweep::until_ready(ready, &mut changes).await {
        return;
    }
    let mut controller = Controller {
        recorder: Recorder::new(client.clone(), "persistentvolume-controller"),
        client,
        recorded: HashMap::new(),
    };
    loop {
        controller.sweep(&claims, &volumes, &classes).await;
        if !crate::sweep::wait_for_next(RESYNC, DEBOUNCE, &mut changes).await {
            return;
        }
    }
}

struct Controller {
    client: Client,
    recorder: Recorder,
    /// The last Event recorded per subject, so a resync does not repeat it.
    recorded: HashMap<Subject, (&'static str, String)>,
}

impl Controller {
    async fn sweep(
        &mut self,
        claims: &Store<PersistentVolumeClaim>,
        volumes: &Store<PersistentVolume>,
        classes: &Store<StorageClass>,
    ) {
        let (claims, volumes, classes) = (claims.state(), volumes.state(), classes.state());
        let Plan {
            volumes: new_volumes,
            claims: new_claims,
            events,
        } = binder::plan(&claims, &volumes, &classes);
        // Volumes first, then claims, as `bind` does: a claim never points at a volume
        // that does not point back.
        for desired in &new_volumes {
            let name = desired.metadata.name.clone().unwrap_or_default();
            let cached = volumes
                .iter()
                .find(|v| v.metadata.name == desired.metadata.name);
            if let Err(e) = self.write_volume(cached.map(|v| &**v), desired).await {
                tracing::debug!("persistentvolume {name}: {e}");
            }
        }
        for desired in &new_claims {
            let cached = claims.iter().find(|c| {
                c.metadata.name == desired.metadata.name
                    && c.metadata.namespace == desired.metadata.namespace
            });
            if let Err(e) = self.write_claim(cached.map(|c| &**c), desired).await {
                tracing::debug!("persistentvolumeclaim {}: {e}", util::claim_key(desired));
            }
        }
        for event in events {
            let last = (event.reason, event.message.clone());
            if self.recorded.get(&event.subject) == Some(&last) {
                continue;
            }
            match &event.subject {
                Subject::Claim(key) => {
                    if let Some(c) = new_claims
                        .iter()
                        .chain(claims.iter().map(|c| &**c))
                        .find(|c| &util::claim_key(c) == key)
                    {
                        self.recorder
                            .record(c, event.type_, event.reason, event.message.clone());
                    }
                }
                Subject::Volume(name) => {
                    if let Some(v) = new_volumes
                        .iter()
                        .chain(volumes.iter().map(|v| &**v))
                        .find(|v| v.metadata.name.as_deref() == Some(name))
                    {
                        self.recorder
                            .record(v, event.type_, event.reason, event.message.clone());
                    }
                }
            }
            self.recorded.insert(event.subject, last);
        }
        // Forget subjects that no longer exist.
        self.recorded.retain(|s, _| match s {
            Subject::Claim(key) => claims.iter().any(|c| &util::claim_key(c) == key),
            Subject::Volume(name) => volumes
                .iter()
                .any(|v| v.metadata.name.as_deref() == Some(name)),
        });
    }

    /// Writes the volume's spec and metadata, then its status, where they changed.
    async fn write_volume(
        &self,
        cached: Option<&PersistentVolume>,
        desired: &PersistentVolume,
    ) -> Result<(), kube::Error> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let name = desired.metadata.name.clone().unwrap_or_default();
        let Some(cached) = cached else { return Ok(()) };
        let releasing = |phase: Option<&str>| matches!(phase, Some("Released" | "Failed"));
        let phase = |v: &PersistentVolume| v.status.as_ref().and_then(|s| s.phase.clone());
        if releasing(phase(desired).as_deref()) && !releasing(phase(cached).as_deref()) {
            // The cache may lag: release only when the API confirms the claim is gone.
            if let Some(r) = desired.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(
                    self.client.clone(),
                    r.namespace.as_deref().unwrap_or("default"),
                );
                if let Some(claim) = claims.get_opt(r.name.as_deref().unwrap_or("")).await? {
                    if claim.metadata.uid == r.uid {
                        return Ok(());
                    }
                }
            }
        }
        write_changes(&api, &name, cached, desired).await
    }

    /// Writes the claim's spec and metadata, then its status, where they changed.
    async fn write_claim(
        &self,
        cached: Option<&PersistentVolumeClaim>,
        desired: &PersistentVolumeClaim,
    ) -> Result<(), kube::Error> {
        let Some(cached) = cached else { return Ok(()) };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            desired.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = desired.metadata.name.clone().unwrap_or_default();
        write_changes(&api, &name, cached, desired).await
    }
}

/// A volume or a claim: what the binder writes of it.
trait Bindable: Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug {
    /// Whether `self` and `other` differ in spec or annotations (the main resource).
    fn main_differs(&self, other: &Self) -> bool;
    /// `self` with `other`'s spec and annotations.
    fn with_main_of(&self, other: &Self) -> Self;
    /// Whether the status differs.
    fn status_differs(&self, other: &Self) -> bool;
    /// Takes `other`'s status.
    fn take_status_of(&mut self, other: &Self);
}

macro_rules! bindable {
    ($kind:ty) => {
        impl Bindable for $kind {
            fn main_differs(&self, other: &Self) -> bool {
                self.spec != other.spec || self.metadata.annotations != other.metadata.annotations
            }
            fn with_main_of(&self, other: &Self) -> Self {
                let mut next = self.clone();
                next.spec = other.spec.clone();
                next.metadata.annotations = other.metadata.annotations.clone();
                next
            }
            fn status_differs(&self, other: &Self) -> bool {
                self.status != other.status
            }
            fn take_status_of(&mut self, other: &Self) {
                self.status = other.status.clone();
            }
        }
    };
}
bindable!(PersistentVolume);
bindable!(PersistentVolumeClaim);

/// Writes `desired`'s spec and annotations over `cached`, then its status, each only when
/// it changed.
async fn write_changes<K: Bindable>(
    api: &Api<K>,
    name: &str,
    cached: &K,
    desired: &K,
) -> Result<(), kube::Error> {
    let mut current = cached.clone();
    if desired.main_differs(cached) {
        current = api
            .replace(name, &PostParams::default(), &cached.with_main_of(desired))
            .await?;
    }
    if desired.status_differs(&current) {
        current.take_status_of(desired);
        api.replace_status(name, &PostParams::default(), &current)
            .await?;
    }
    Ok(())
}
