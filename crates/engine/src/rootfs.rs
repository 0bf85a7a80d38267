//! A container's root filesystem: image layers as overlayfs lower dirs plus
//! the container's own upper dir.

use std::path::{Path, PathBuf};

/// Mount operations, behind a trait so create/remove logic tests run without root.
pub trait Mounter: Send + Sync {
    /// Mounts an overlay of `lower` (top first) and `upper`/`work` at `target`.
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> std::io::Result<()>;
    /// Unmounts `target` (lazily; a gone mount is fine).
    fn unmount(&self, target: &Path) -> std::io::Result<()>;
    /// True when something is mounted at `target`.
    fn is_mounted(&self, target: &Path) -> bool;
}

/// The real kernel mounts.
pub struct KernelMounter;

/// Largest mount option string the kernel accepts in one page.
const MAX_MOUNT_DATA: usize = 4095;

impl Mounter for KernelMounter {
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> std::io::Result<()> {
        let lowerdir = lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        if data.len() > MAX_MOUNT_DATA {
            return Err(std::io::Error::other(format!(
                "image has too many layers ({}) for one overlay mount",
                lower.len()
            )));
        }
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| {
            std::io::Error::other(format!("mounting overlay at {}: {e}", target.display()))
        })
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn is_mounted(&self, target: &Path) -> bool {
        if let Some(mounted) = skiff_runtime::mounts::is_mount_point(target) {
            return mounted;
        }
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let target = target.display().to_string();
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(target.as_str()))
    }
}

/// The overlay directories of one container.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Base directory (`<data>/overlay/<id>`).
    pub base: PathBuf,
}

impl Overlay {
    /// The writable layer.
    pub fn upper(&self) -> PathBuf {
        self.base.join("upper")
    }
    /// overlayfs work dir.
    pub fn work(&self) -> PathBuf {
        self.base.join("work")
    }
    /// The mount point, the container's root.
    pub fn merged(&self) -> PathBuf {
        self.base.join("merged")
    }
    /// An empty lower dir for images without layers.
    fn empty(&self) -> PathBuf {
        self.base.join("empty")
    }

    /// Creates the directories.
    pub fn prepare(&self) -> std::io::Result<()> {
        for d in [self.upper(), self.work(), self.merged(), self.empty()] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// Mounts the rootfs unless already mounted; `layers` are bottom-first.
    pub fn mount(&self, mounter: &dyn Mounter, layers: &[PathBuf]) -> std::io::Result<PathBuf> {
        let merged = self.merged();
        if mounter.is_mounted(&merged) {
            return Ok(merged);
        }
        self.prepare()?;
        // Top first. overlayfs refuses a directory twice (ELOOP), and images repeat
        // layers (two RUN steps that change nothing share the empty layer): the top-most
        // copy alone gives the same tree, as it applies the same files and whiteouts
        // over everything below.
        let mut lower: Vec<PathBuf> = Vec::new();
        for l in layers.iter().rev() {
            if !lower.contains(l) {
                lower.push(l.clone());
            }
        }
        if lower.is_empty() {
            lower.push(self.empty());
        }
        mounter.mount_overlay(&lower, &self.upper(), &self.work(), &merged)?;
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the lower dirs it was asked to mount.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<PathBuf>>);

    impl Mounter for Recorder {
        fn mount_overlay(
            &self,
            lower: &[PathBuf],
            _: &Path,
            _: &Path,
            _: &Path,
        ) -> std::io::Result<()> {
            *self.0.lock().unwrap() = lower.to_vec();
            Ok(())
        }
        fn unmount(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn is_mounted(&self, _: &Path) -> bool {
            false
        }
    }

    #[test]
    fn a_repeated_layer_is_mounted_once_at_its_top_most_place() {
        let tmp = tempfile::tempdir().unwrap();
        let overlay = Overlay {
            base: tmp.path().join("o"),
        };
        let m = Recorder::default();
        let [a, empty, b] = ["a", "empty", "b"].map(PathBuf::from);
        let layers = [a.clone(), empty.clone(), b.clone(), empty.clone()];
        overlay.mount(&m, &layers).unwrap();
        assert_eq!(*m.0.lock().unwrap(), vec![empty, b, a]);
    }
}
