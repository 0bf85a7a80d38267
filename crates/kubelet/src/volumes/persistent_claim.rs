//! `persistentVolumeClaim`: the claim's bound PersistentVolume, when it is a
//! `hostPath` or `local` volume of this node — made by hand or by the local-path
//! provisioner, whose `DirectoryOrCreate` directories are created here on first mount on
//! nodes other than the server's (no attach/detach here).

use k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource;

use super::{HostVolume, SetupContext};

/// Resolves the claim to its volume's path on the node.
pub fn setup(
    ctx: &SetupContext<'_>,
    src: &PersistentVolumeClaimVolumeSource,
) -> Result<HostVolume, String> {
    let name = &src.claim_name;
    let claim = ctx
        .objects
        .claim(ctx.namespace(), name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim {name:?} not found"))?;
    let bound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
        .filter(|_| {
            claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Pending")
        })
        .ok_or_else(|| format!("persistentvolumeclaim {name:?} is not bound to a volume yet (the PV controller binds it to a matching PersistentVolume, or to one its StorageClass's provisioner creates)"))?;
    let pv = ctx
        .objects
        .volume(&bound)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume {bound:?} not found"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = if let Some(h) = &spec.host_path {
        super::host_path::check(
            std::path::Path::new(&h.path),
            h.type_.as_deref().unwrap_or(""),
        )?;
        h.path.clone()
    } else if let Some(l) = &spec.local {
        l.path.clone()
    } else {
        return Err(format!(
            "persistentvolume {bound:?} is neither hostPath nor local, the only kinds this kubelet mounts"
        ));
    };
    Ok(HostVolume {
        path: path.into(),
        read_only: src.read_only == Some(true),
        writable: true,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::pod;
    use super::super::*;
    use crate::fake::{FakeMounter, FakeObjects};

    #[test]
    fn a_bound_claim_mounts_its_host_path_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = FakeObjects::default();
        let p = pod(
            serde_json::json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}],
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
        assert!(setup(&ctx).unwrap_err().message.contains("not found"));
        objects.put_claim(
            "ns",
            "c",
            serde_json::json!({"spec": {}, "status": {"phase": "Pending"}}),
        );
        assert!(setup(&ctx).unwrap_err().message.contains("not bound"));
        objects.put_claim(
            "ns",
            "c",
            serde_json::json!({"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}),
        );
        objects.put_volume("pv1", serde_json::json!({"spec": {"hostPath": {"path": tmp.path().join("pv").to_str().unwrap(), "type": "DirectoryOrCreate"}}}));
        let vols = setup(&ctx).unwrap();
        assert_eq!(vols["data"].path, tmp.path().join("pv"));
        assert!(tmp.path().join("pv").is_dir());
    }
}
