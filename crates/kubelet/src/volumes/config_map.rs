//! `configMap` volumes: the ConfigMap's keys (or the chosen `items`) as files,
//! rewritten atomically when the ConfigMap changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMapProjection, ConfigMapVolumeSource, KeyToPath};

use super::atomic_writer::{self, File, Payload};
use super::{file_mode, HostVolume, SetupContext};

/// The plugin's directory name.
pub const PLUGIN: &str = "kubernetes.io~configmap";

/// Files from `data` for `items` (every key when `None`); `what` names the object kind
/// in the error for a missing key (`config`, `secret`).
pub(crate) fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
    what: &str,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    match items {
        None | Some([]) => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    File {
                        data: v.clone(),
                        mode: file_mode(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    let kind = if what == "secret" { "secret" } else { "config" };
                    return Err(format!(
                        "{what} references non-existent {kind} key: {}",
                        item.key
                    ));
                };
                atomic_writer::validate_path(&item.path)?;
                out.insert(
                    item.path.clone(),
                    File {
                        data: v.clone(),
                        mode: file_mode(item.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// The files of a ConfigMap source (a volume's or a projection's).
pub(crate) fn payload(
    ctx: &SetupContext<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, String> {
    match crate::env::config_map_data(ctx.objects, ctx.namespace(), name)
        .map_err(|e| e.to_string())?
    {
        Some(data) => project(&data, items, default_mode, optional, "configmap"),
        None if optional => Ok(Payload::new()),
        None => Err(format!("configmap {name:?} not found")),
    }
}

/// Writes the ConfigMap's files.
pub fn setup(
    ctx: &SetupContext<'_>,
    volume: &str,
    src: &ConfigMapVolumeSource,
) -> Result<HostVolume, String> {
    let files = payload(
        ctx,
        &src.name,
        src.items.as_deref(),
        src.default_mode,
        src.optional == Some(true),
    )?;
    let dir = ctx.volume_dir(PLUGIN, volume);
    atomic_writer::write(&dir, &files).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    Ok(HostVolume {
        path: dir,
        read_only: true,
        writable: false,
    })
}

/// The files of a projected ConfigMap.
pub(crate) fn projection(
    ctx: &SetupContext<'_>,
    src: &ConfigMapProjection,
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
