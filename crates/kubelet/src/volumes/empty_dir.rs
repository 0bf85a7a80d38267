//! `emptyDir`: a directory of the pod's own, on the node's disk, or a tmpfs with
//! `medium: Memory` (sized by `sizeLimit`).

use std::os::unix::fs::PermissionsExt as _;

use k8s_openapi::api::core::v1::EmptyDirVolumeSource;

use super::{HostVolume, SetupContext};

/// The plugin's directory name.
pub const PLUGIN: &str = "kubernetes.io~empty-dir";

/// Creates the directory (mode 0777, as Kubernetes does), and mounts the tmpfs once.
pub fn setup(
    ctx: &SetupContext<'_>,
    name: &str,
    src: &EmptyDirVolumeSource,
) -> Result<HostVolume, String> {
    let dir = ctx.volume_dir(PLUGIN, name);
    let fresh = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if src.medium.as_deref() == Some("Memory") && !ctx.mounter.is_mount_point(&dir) {
        let size = src
            .size_limit
            .as_ref()
            .and_then(|q| crate::env::parse_quantity(&q.0))
            .map(|b| b as u64)
            .filter(|b| *b > 0);
        ctx.mounter
            .mount_tmpfs(&dir, size)
            .map_err(|e| format!("mounting tmpfs on {}: {e}", dir.display()))?;
    }
    if fresh || src.medium.as_deref() == Some("Memory") {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    }
    Ok(HostVolume {
        path: dir,
        read_only: false,
        writable: true,
    })
}

/// Makes `dir` a tmpfs (secret and projected volumes keep their data in memory).
pub(crate) fn memory_dir(ctx: &SetupContext<'_>, dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if !ctx.mounter.is_mount_point(dir) {
        ctx.mounter
            .mount_tmpfs(dir, None)
            .map_err(|e| format!("mounting tmpfs on {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    Ok(())
}
