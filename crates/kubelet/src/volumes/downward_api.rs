//! `downwardAPI` volumes: the pod's fields and its containers' resources as files.

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, DownwardAPIVolumeSource};

use super::atomic_writer::{self, File, Payload};
use super::{file_mode, HostVolume, SetupContext};

/// The plugin's directory name.
pub const PLUGIN: &str = "kubernetes.io~downward-api";

/// The files of downward API items.
pub(crate) fn payload(
    ctx: &SetupContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    for item in items {
        atomic_writer::validate_path(&item.path)?;
        let value = if let Some(f) = &item.field_ref {
            crate::env::field_value(ctx.pod, &f.field_path, ctx.downward)
                .ok_or_else(|| format!("unsupported fieldPath: {}", f.field_path))?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = ctx.pod.spec.clone().unwrap_or_default();
            let name = r.container_name.clone().unwrap_or_default();
            let c = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name:?} not found in the pod"))?;
            crate::env::resource_value(
                c,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                ctx.downward,
            )
            .map_err(|e| e.to_string())?
        } else {
            continue;
        };
        out.insert(
            item.path.clone(),
            File {
                data: value.into_bytes(),
                mode: file_mode(item.mode, default_mode),
            },
        );
    }
    Ok(out)
}

/// Writes the items' files.
pub fn setup(
    ctx: &SetupContext<'_>,
    volume: &str,
    src: &DownwardAPIVolumeSource,
) -> Result<HostVolume, String> {
    let files = payload(
        ctx,
        src.items.as_deref().unwrap_or_default(),
        src.default_mode,
    )?;
    let dir = ctx.volume_dir(PLUGIN, volume);
    atomic_writer::write(&dir, &files).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    Ok(HostVolume {
        path: dir,
        read_only: true,
        writable: false,
    })
}
