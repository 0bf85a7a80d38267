//! `projected` volumes: ServiceAccount tokens (TokenRequest), ConfigMaps, Secrets and
//! downward API items merged into one directory, on a tmpfs. Every pod has one: the
//! ServiceAccount admission plugin adds `kube-api-access-*` (token, ca.crt, namespace).

use k8s_openapi::api::core::v1::ProjectedVolumeSource;

use super::atomic_writer::{self, File, Payload};
use super::{file_mode, HostVolume, SetupContext};
use crate::objects::TokenSpec;

/// The plugin's directory name.
pub const PLUGIN: &str = "kubernetes.io~projected";

/// A token's lifetime when the source names none (the API's default).
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;

/// Writes the merged files of every source.
pub fn setup(
    ctx: &SetupContext<'_>,
    volume: &str,
    src: &ProjectedVolumeSource,
) -> Result<HostVolume, String> {
    let mode = src.default_mode;
    let mut files = Payload::new();
    for s in src.sources.iter().flatten() {
        let part = if let Some(t) = &s.service_account_token {
            atomic_writer::validate_path(&t.path)?;
            let spec = ctx.pod.spec.clone().unwrap_or_default();
            let token = ctx
                .objects
                .token(&TokenSpec {
                    namespace: ctx.namespace().to_string(),
                    service_account: spec
                        .service_account_name
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_EXPIRATION),
                    pod_name: ctx.pod.metadata.name.clone().unwrap_or_default(),
                    pod_uid: ctx.pod.metadata.uid.clone().unwrap_or_default(),
                })
                .map_err(|e| format!("failed to fetch token: {e}"))?;
            Payload::from([(
                t.path.clone(),
                File {
                    data: token.token.into_bytes(),
                    mode: file_mode(None, mode),
                },
            )])
        } else if let Some(c) = &s.config_map {
            super::config_map::projection(ctx, c, mode)?
        } else if let Some(c) = &s.secret {
            super::secret::projection(ctx, c, mode)?
        } else if let Some(d) = &s.downward_api {
            super::downward_api::payload(ctx, d.items.as_deref().unwrap_or_default(), mode)?
        } else {
            continue;
        };
        files.extend(part);
    }
    let dir = ctx.volume_dir(PLUGIN, volume);
    super::empty_dir::memory_dir(ctx, &dir)?;
    atomic_writer::write(&dir, &files).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    Ok(HostVolume {
        path: dir,
        read_only: true,
        writable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::pod;
    use super::super::*;
    use crate::fake::{FakeMounter, FakeObjects};

    #[test]
    fn the_service_account_volume_has_token_ca_and_namespace() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = FakeObjects::default();
        objects.put_config_map("ns", "kube-root-ca.crt", &[("ca.crt", "PEM")]);
        let p = pod(serde_json::json!({
            "serviceAccountName": "robot",
            "volumes": [{"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [
                    {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}]}},
            ]}}],
            "containers": [{"name": "app", "resources": {"limits": {"memory": "32Mi"}}}]}));
        let mounter = FakeMounter::default();
        let ctx = SetupContext {
            pod: &p,
            downward: &Downward::default(),
            objects: &objects,
            mounter: &mounter,
            pods_dir: tmp.path(),
        };
        let vols = setup(&ctx).unwrap();
        let dir = &vols["kube-api-access-x"].path;
        assert!(dir.ends_with("uid-1/volumes/kubernetes.io~projected/kube-api-access-x"));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("token"), "token-robot-api-1");
        assert_eq!(read("ca.crt"), "PEM");
        assert_eq!(read("namespace"), "ns");
        assert_eq!(read("labels"), "app=\"web\"\ntier=\"db\"");
        assert_eq!(read("mem"), "32");
        assert!(mounter.is_mount_point(dir));
    }
}
