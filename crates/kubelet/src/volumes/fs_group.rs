//! `fsGroup`: a volume's files become the group's, group-readable (and writable when the
//! volume is), directories setgid so new files inherit the group; as the kubelet's
//! `SetVolumeOwnership` does.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

/// Group bits added to files of writable volumes.
const RW_FILE: u32 = 0o660;
/// Group bits added to files of read-only volumes.
const RO_FILE: u32 = 0o440;
/// Added to directories of writable volumes (with setgid).
const RW_DIR: u32 = 0o2770;
/// Added to directories of read-only volumes (with setgid).
const RO_DIR: u32 = 0o2550;

/// Gives everything below `root` (not following symlinks) to group `gid`.
pub fn apply(root: &Path, gid: u32, read_only: bool) -> std::io::Result<()> {
    walk(root, &mut |path, meta| {
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, None, Some(gid))?;
        let add = match (meta.is_dir(), read_only) {
            (true, false) => RW_DIR,
            (true, true) => RO_DIR,
            (false, false) => RW_FILE,
            (false, true) => RO_FILE,
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode | add != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | add))?;
        }
        Ok(())
    })
}

/// [`apply`], unless `root` already belongs to `gid` with the setgid bit.
pub fn apply_on_root_mismatch(root: &Path, gid: u32, read_only: bool) -> std::io::Result<()> {
    let meta = std::fs::metadata(root)?;
    if meta.gid() == gid && meta.permissions().mode() & 0o2000 != 0 {
        return Ok(());
    }
    apply(root, gid, read_only)
}

fn walk(
    path: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    visit(path, &meta)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_get_the_group_and_setgid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("link")).unwrap();
        // Our own primary group: chown to it needs no privilege.
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        apply(&root, gid, false).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("sub/f"), 0o660);
        assert_eq!(mode("sub") & 0o2070, 0o2070);
        assert_eq!(std::fs::metadata(root.join("sub/f")).unwrap().gid(), gid);
        apply_on_root_mismatch(&root, gid, false).unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::write(ro.join("k"), "v").unwrap();
        std::fs::set_permissions(ro.join("k"), std::fs::Permissions::from_mode(0o400)).unwrap();
        apply(&ro, gid, true).unwrap();
        assert_eq!(
            std::fs::metadata(ro.join("k"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o440
        );
    }
}
