//! `secret` volumes: like configMap volumes, but kept in memory (a tmpfs), as the
//! kubelet does, so Secret data never reaches the node's disk.

use k8s_openapi::api::core::v1::{KeyToPath, SecretProjection, SecretVolumeSource};

use super::atomic_writer::{self, Payload};
use super::{HostVolume, SetupContext};

/// The plugin's directory name.
pub const PLUGIN: &str = "kubernetes.io~secret";

fn payload(
    ctx: &SetupContext<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, String> {
    match crate::env::secret_data(ctx.objects, ctx.namespace(), name).map_err(|e| e.to_string())? {
        Some(data) => super::config_map::project(&data, items, default_mode, optional, "secret"),
        None if optional => Ok(Payload::new()),
        None => Err(format!("secret {name:?} not found")),
    }
}

/// Writes the Secret's files on a tmpfs.
pub fn setup(
    ctx: &SetupContext<'_>,
    volume: &str,
    src: &SecretVolumeSource,
) -> Result<HostVolume, String> {
    let name = src.secret_name.clone().unwrap_or_default();
    let files = payload(
        ctx,
        &name,
        src.items.as_deref(),
        src.default_mode,
        src.optional == Some(true),
    )?;
    let dir = ctx.volume_dir(PLUGIN, volume);
    super::empty_dir::memory_dir(ctx, &dir)?;
    atomic_writer::write(&dir, &files).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    Ok(HostVolume {
        path: dir,
        read_only: true,
        writable: false,
    })
}

/// The files of a projected Secret.
pub(crate) fn projection(
    ctx: &SetupContext<'_>,
    src: &SecretProjection,
    default_mode: Option<i32>,
) -> Result<Payload, String> {
    payload(
        ctx,
        &src.name,
        src.items.as_deref(),
        default_mode,
        src.optional == Some(true),
    )
}
