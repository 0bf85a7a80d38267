//! Whether a path is a mount point, asked of the kernel for that one path.
//!
//! Reading `/proc/self/mountinfo` costs the kernel a line per mount (overlay lines
//! carry every lower dir), so a node with a hundred pods paid for several hundred lines
//! at every check of a container's root or a pod's volume.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// Whether `path` is the root of a mount, from `statx`'s `STATX_ATTR_MOUNT_ROOT`
/// (Linux 5.8); a missing path is not one. `None` when the kernel does not tell, and
/// the caller reads the mount table instead.
pub fn is_mount_point(path: &Path) -> Option<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c_path` is NUL-terminated and `stat` is a writable statx buffer, both
    // alive for the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            stat.as_mut_ptr(),
        )
    };
    if rc != 0 {
        let missing = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT);
        return missing.then_some(false);
    }
    // SAFETY: statx succeeded, so it filled the buffer (zeroed before anyway).
    let stat = unsafe { stat.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (stat.stx_attributes_mask & bit != 0).then_some(stat.stx_attributes & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_and_proc_are_mount_points_and_their_subdirectories_are_not() {
        let Some(root) = is_mount_point(Path::new("/")) else {
            return; // a kernel before 5.8
        };
        assert!(root);
        assert_eq!(is_mount_point(Path::new("/proc")), Some(true));
        assert_eq!(is_mount_point(Path::new("/proc/self/fd")), Some(false));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(is_mount_point(dir.path()), Some(false));
        assert_eq!(is_mount_point(&dir.path().join("missing")), Some(false));
    }
}
