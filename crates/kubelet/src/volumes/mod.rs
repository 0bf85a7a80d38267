//! Pod volumes, as the kubelet's volume manager sets them up: each volume of the pod
//! becomes a directory on the node, `ROOT/kubelet/pods/<uid>/volumes/<plugin>/<name>`
//! (or a host path for hostPath and claims bound to host-path volumes), which the
//! runtime bind-mounts into the containers that name it. One module per plugin.
//!
//! API-data volumes (configMap, secret, downwardAPI, projected) are rewritten on every
//! volume sync through the [`atomic_writer`]; kernel mounts (tmpfs) go through
//! [`Mounter`]; objects are read through [`ObjectSource`].

pub mod atomic_writer;
pub mod config_map;
pub mod downward_api;
pub mod empty_dir;
pub mod fs_group;
pub mod host_path;
pub mod persistent_claim;
pub mod projected;
pub mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

use crate::cri::Mount;
use crate::env::Downward;
use crate::objects::ObjectSource;

/// Kernel mounts the volume plugins make on the node.
pub trait Mounter: Send + Sync {
    /// Mounts a tmpfs on `dir`, of at most `size` bytes.
    fn mount_tmpfs(&self, dir: &Path, size: Option<u64>) -> std::io::Result<()>;
    /// Whether something is mounted on `dir`.
    fn is_mount_point(&self, dir: &Path) -> bool;
    /// Unmounts `dir` (lazily: a container may still hold it).
    fn unmount(&self, dir: &Path) -> std::io::Result<()>;
    /// Mount points at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
}

/// [`Mounter`] over mount(2), reading `/proc/self/mountinfo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelMounter;

fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Unescapes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Mounter for KernelMounter {
    fn mount_tmpfs(&self, dir: &Path, size: Option<u64>) -> std::io::Result<()> {
        let target = c_path(dir)?;
        let fstype = c"tmpfs";
        let data = match size {
            Some(s) => format!("mode=0777,size={s}"),
            None => "mode=0777".to_string(),
        };
        let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn is_mount_point(&self, dir: &Path) -> bool {
        if let Some(mounted) = skiff_runtime::mounts::is_mount_point(dir) {
            return mounted;
        }
        self.mounts_under(dir).iter().any(|m| m == dir)
    }

    fn unmount(&self, dir: &Path) -> std::io::Result<()> {
        let target = c_path(dir)?;
        // SAFETY: `target` is a NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mountinfo(p)))
            .filter(|p| p.starts_with(dir))
            .collect()
    }
}

/// A volume set up on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    /// Where it is on the node.
    pub path: PathBuf,
    /// Always mounted read-only (API-data volumes, read-only claims).
    pub read_only: bool,
    /// Whether subPaths may be created in it (emptyDir, hostPath, claims).
    pub writable: bool,
}

/// A volume that could not be set up; the pod's containers wait, and the message is a
/// `FailedMount` event.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub struct VolumeError {
    /// The volume's name.
    pub volume: String,
    /// Why.
    pub message: String,
}

/// What setting up a pod's volumes needs.
pub struct SetupContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Downward API values.
    pub downward: &'a Downward,
    /// API reads.
    pub objects: &'a dyn ObjectSource,
    /// Kernel mounts.
    pub mounter: &'a dyn Mounter,
    /// `ROOT/kubelet/pods`.
    pub pods_dir: &'a Path,
}

impl SetupContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The directory of a volume managed by `plugin` (`kubernetes.io~configmap`).
    pub fn volume_dir(&self, plugin: &str, name: &str) -> PathBuf {
        pod_dir(
            self.pods_dir,
            self.pod.metadata.uid.as_deref().unwrap_or_default(),
        )
        .join("volumes")
        .join(plugin)
        .join(name)
    }
}

/// The directory of one pod's state on the node.
pub fn pod_dir(pods_dir: &Path, uid: &str) -> PathBuf {
    pods_dir.join(uid)
}

/// The mode of a file from an item's `mode` or the volume's `defaultMode` (0644).
pub(crate) fn file_mode(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default).unwrap_or(0o644) as u32 & 0o7777
}

/// Sets up (or refreshes) every volume of the pod; returns them by name.
pub fn setup(ctx: &SetupContext<'_>) -> Result<BTreeMap<String, HostVolume>, VolumeError> {
    let mut out = BTreeMap::new();
    let volumes: Vec<Volume> = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let fs_group = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.fs_group);
    for v in &volumes {
        let fail = |message: String| VolumeError {
            volume: v.name.clone(),
            message,
        };
        let host = if let Some(src) = &v.empty_dir {
            empty_dir::setup(ctx, &v.name, src)
        } else if let Some(src) = &v.config_map {
            config_map::setup(ctx, &v.name, src)
        } else if let Some(src) = &v.secret {
            secret::setup(ctx, &v.name, src)
        } else if let Some(src) = &v.host_path {
            host_path::setup(src)
        } else if let Some(src) = &v.downward_api {
            downward_api::setup(ctx, &v.name, src)
        } else if let Some(src) = &v.projected {
            projected::setup(ctx, &v.name, src)
        } else if let Some(src) = &v.persistent_volume_claim {
            persistent_claim::setup(ctx, src)
        } else {
            Err("volume type not supported by this kubelet (supported: emptyDir, configMap, secret, hostPath, downwardAPI, projected, persistentVolumeClaim)".to_string())
        };
        let host = host.map_err(fail)?;
        // The volumes the kubelet owns become the pod's `fsGroup`'s (hostPath and
        // claims keep their owners, as their plugins do not support ownership).
        if let Some(gid) = fs_group {
            let owned = v.empty_dir.is_some()
                || v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some();
            if owned {
                let gid = u32::try_from(gid).map_err(|_| fail(format!("invalid fsGroup {gid}")))?;
                // emptyDir's content is the pod's: once, when the root is not yet the
                // group's (`fsGroupChangePolicy: OnRootMismatch`); API data on every write.
                let changed = if v.empty_dir.is_some() {
                    fs_group::apply_on_root_mismatch(&host.path, gid, host.read_only)
                } else {
                    fs_group::apply(&host.path, gid, host.read_only)
                };
                changed.map_err(|e| fail(format!("applying fsGroup {gid}: {e}")))?;
            }
        }
        out.insert(v.name.clone(), host);
    }
    Ok(out)
}

/// Unmounts whatever the pod's volumes mounted and removes the pod's directory.
pub fn teardown(pods_dir: &Path, uid: &str, mounter: &dyn Mounter) -> std::io::Result<()> {
    let dir = pod_dir(pods_dir, uid);
    if uid.is_empty() || !dir.exists() {
        return Ok(());
    }
    let mut mounts = mounter.mounts_under(&dir);
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        mounter.unmount(&m)?;
    }
    std::fs::remove_dir_all(&dir)
}

/// Where the kubelet of the node rooted at `root` keeps its pods' directories.
pub fn pods_dir(root: &Path) -> PathBuf {
    root.join("kubelet").join("pods")
}

/// Tears down every pod directory under `pods_dir` (`skiff system reset`).
pub fn teardown_all(pods_dir: &Path, mounter: &dyn Mounter) -> std::io::Result<()> {
    for uid in pod_dirs(pods_dir) {
        teardown(pods_dir, &uid, mounter)?;
    }
    Ok(())
}

/// The pod UIDs that have a directory under `pods_dir`.
pub fn pod_dirs(pods_dir: &Path) -> Vec<String> {
    std::fs::read_dir(pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Checks a subPath: relative, no `..` element.
fn check_sub_path(sub: &str) -> Result<(), String> {
    if Path::new(sub).is_absolute() {
        return Err(format!("subPath {sub:?} must be a relative path"));
    }
    if Path::new(sub)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("subPath {sub:?} must not contain '..'"));
    }
    Ok(())
}

/// The container's bind mounts from its `volumeMounts`; `env` expands `subPathExpr`.
pub fn container_mounts(
    c: &Container,
    volumes: &BTreeMap<String, HostVolume>,
    env: &[(String, String)],
) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes.get(&m.name).ok_or_else(|| {
            format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            )
        })?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => {
                Some(crate::env::expand_all(std::slice::from_ref(e), env).remove(0))
            }
            _ => None,
        };
        let host_path = match sub {
            None => v.path.clone(),
            Some(sub) => {
                check_sub_path(&sub)?;
                let p = v.path.join(&sub);
                if std::fs::symlink_metadata(&p).is_err() && v.writable {
                    // The kubelet creates a missing subPath as a directory.
                    std::fs::create_dir_all(&p).map_err(|e| {
                        format!("failed to create subPath directory for volumeMount {:?} of container {:?}: {e}", m.name, c.name)
                    })?;
                    let _ = std::fs::set_permissions(
                        &p,
                        std::os::unix::fs::PermissionsExt::from_mode(0o777),
                    );
                }
                // Symlinks may not lead out of the volume.
                let real = std::fs::canonicalize(&p).map_err(|e| {
                    format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}: {e}",
                        m.name, c.name
                    )
                })?;
                let base = std::fs::canonicalize(&v.path).unwrap_or_else(|_| v.path.clone());
                if !real.starts_with(&base) {
                    return Err(format!(
                        "subpath {:?} not within volume path {:?}",
                        real.display().to_string(),
                        base.display().to_string()
                    ));
                }
                real
            }
        };
        out.push(Mount {
            container_path: m.mount_path.clone(),
            host_path,
            readonly: m.read_only == Some(true) || v.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeMounter, FakeObjects};

    pub(crate) fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-1",
                         "labels": {"app": "web", "tier": "db"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn config_map_secret_and_empty_dir_volumes_land_under_the_pod_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = FakeObjects::default();
        objects.put_config_map("ns", "cfg", &[("a", "1"), ("b", "2")]);
        objects.put_secret("ns", "sec", &[("pw", "x")]);
        let p = pod(serde_json::json!({
        "volumes": [
            {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "dir/b.txt", "mode": 0o600}]}},
            {"name": "s", "secret": {"secretName": "sec", "defaultMode": 0o400}},
            {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "d", "emptyDir": {}},
            {"name": "o", "configMap": {"name": "absent", "optional": true}},
        ],
        "containers": [{"name": "app", "volumeMounts": [
            {"name": "c", "mountPath": "/etc/c"},
            {"name": "d", "mountPath": "/data", "subPathExpr": "$(POD)"},
            {"name": "s", "mountPath": "/etc/pw", "subPath": "pw"},
        ]}]}));
        let mounter = FakeMounter::default();
        let ctx = SetupContext {
            pod: &p,
            downward: &Downward::default(),
            objects: &objects,
            mounter: &mounter,
            pods_dir: tmp.path(),
        };
        let vols = setup(&ctx).unwrap();
        let base = tmp.path().join("uid-1/volumes");
        assert_eq!(vols["c"].path, base.join("kubernetes.io~configmap/c"));
        assert_eq!(read(&vols["c"].path.join("dir/b.txt")), "2");
        assert!(!vols["c"].path.join("a").exists());
        assert_eq!(read(&vols["s"].path.join("pw")), "x");
        let m = base.join("kubernetes.io~empty-dir/m");
        assert_eq!(vols["m"].path, m);
        assert_eq!(mounter.mounts.lock().unwrap().get(&m), Some(&Some(1 << 20)));
        // Secrets live in memory too.
        assert!(mounter.is_mount_point(&vols["s"].path));
        assert!(vols["o"].path.is_dir());

        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = vec![("POD".to_string(), "p".to_string())];
        let mounts = container_mounts(c, &vols, &env).unwrap();
        assert_eq!(mounts[0].host_path, vols["c"].path);
        assert!(mounts[0].readonly, "configMap volumes are read-only");
        assert_eq!(
            mounts[1].host_path,
            std::fs::canonicalize(base.join("kubernetes.io~empty-dir/d/p")).unwrap()
        );
        assert!(!mounts[1].readonly);
        assert!(mounts[2].host_path.ends_with("pw"));
        assert!(mounts[2]
            .host_path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("..20"));

        // A changed ConfigMap is rewritten in place at the next sync.
        objects.put_config_map("ns", "cfg", &[("a", "1"), ("b", "3")]);
        setup(&ctx).unwrap();
        assert_eq!(read(&vols["c"].path.join("dir/b.txt")), "3");

        teardown(tmp.path(), "uid-1", &mounter).unwrap();
        assert!(!tmp.path().join("uid-1").exists());
        assert!(mounter.mounts.lock().unwrap().is_empty());
    }

    #[test]
    fn missing_sources_fail_with_the_volume_named() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = FakeObjects::default();
        let p = pod(
            serde_json::json!({"volumes": [{"name": "c", "configMap": {"name": "cfg"}}],
            "containers": [{"name": "app"}]}),
        );
        let mounter = FakeMounter::default();
        let ctx = SetupContext {
            pod: &p,
            downward: &Downward::default(),
            objects: &objects,
            mounter: &mounter,
            pods_dir: tmp.path(),
        };
        assert_eq!(
            setup(&ctx).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"c\" : configmap \"cfg\" not found"
        );
        objects.put_config_map("ns", "cfg", &[]);
        let p = pod(
            serde_json::json!({"volumes": [{"name": "c", "configMap": {"name": "cfg", "items": [{"key": "k", "path": "k"}]}}],
            "containers": [{"name": "app"}]}),
        );
        let ctx = SetupContext { pod: &p, ..ctx };
        assert_eq!(
            setup(&ctx).unwrap_err().message,
            "configmap references non-existent config key: k"
        );
    }

    #[test]
    fn sub_paths_may_not_escape() {
        let vols = BTreeMap::from([(
            "v".to_string(),
            HostVolume {
                path: PathBuf::from("/nonexistent"),
                read_only: false,
                writable: false,
            },
        )]);
        let c: Container = serde_json::from_value(serde_json::json!({"name": "app",
            "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "../etc"}]}))
        .unwrap();
        assert!(container_mounts(&c, &vols, &[])
            .unwrap_err()
            .contains("'..'"));
    }
}
