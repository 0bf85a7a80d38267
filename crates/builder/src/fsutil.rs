//! Filesystem helpers of build steps: overlay views of layer stacks, copying trees into
//! a new layer, and removing the mount points a RUN step's mounts left in its upper dir.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use skiff_engine::rootfs::{KernelMounter, Mounter, Overlay};
use skiff_images::{ImageStore, LayerRecord};

use crate::BuildError;

/// A mounted overlay of layers (bottom first) with a throwaway upper dir; unmounted and
/// removed on drop.
pub struct View {
    overlay: Overlay,
    mounted: bool,
}

impl View {
    /// Mounts `layers` under `base`.
    pub fn mount(
        store: &ImageStore,
        layers: &[LayerRecord],
        base: &Path,
    ) -> Result<View, BuildError> {
        let dirs = layers
            .iter()
            .map(|l| store.layer_dir(&l.diff_id))
            .collect::<Result<Vec<_>, _>>()?;
        View::over(&dirs, base)
    }

    /// Mounts an overlay of `dirs` (bottom first) under `base`: a writable view whose
    /// writes never reach `dirs`.
    pub fn over(dirs: &[PathBuf], base: &Path) -> Result<View, BuildError> {
        let overlay = Overlay {
            base: base.to_path_buf(),
        };
        let mut view = View {
            overlay,
            mounted: false,
        };
        view.overlay
            .mount(&KernelMounter, dirs)
            .map_err(BuildError::io("mounting overlay at", base))?;
        view.mounted = true;
        Ok(view)
    }

    /// The merged root.
    pub fn root(&self) -> PathBuf {
        self.overlay.merged()
    }

    /// The upper dir: what changed.
    pub fn upper(&self) -> PathBuf {
        self.overlay.upper()
    }

    /// Unmounts now (the upper dir stays).
    pub fn unmount(&mut self) -> Result<(), BuildError> {
        if self.mounted {
            KernelMounter
                .unmount(&self.overlay.merged())
                .map_err(BuildError::io("unmounting", self.overlay.merged()))?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = self.unmount();
        let _ = fs::remove_dir_all(&self.overlay.base);
    }
}

/// Bytes of the regular files under `dir` (symlinks not followed).
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Removes a directory tree on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The paths from `target` up to (not including) `/` that do not exist under `root`,
/// deepest first: mount points the runtime will create.
pub fn missing_ancestors(root: &Path, target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = PathBuf::from(target.trim_start_matches('/'));
    loop {
        if p.as_os_str().is_empty() || fs::symlink_metadata(root.join(&p)).is_ok() {
            break;
        }
        out.push(p.clone());
        match p.parent() {
            Some(parent) => p = parent.to_path_buf(),
            None => break,
        }
    }
    out
}

/// Removes mount points the step did not write to: empty files and empty directories.
pub fn remove_mount_points(upper: &Path, paths: &[PathBuf]) {
    let mut paths = paths.to_vec();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    paths.dedup();
    for p in &paths {
        let path = upper.join(p);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir(&path);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// Metadata of `rel` in the image made of `layers`: the top-most layer that has it, unless
/// a whiteout there deleted it.
pub fn image_metadata(
    store: &ImageStore,
    layers: &[LayerRecord],
    rel: &Path,
) -> Option<fs::Metadata> {
    for l in layers.iter().rev() {
        let Ok(dir) = store.layer_dir(&l.diff_id) else {
            continue;
        };
        if let Ok(m) = fs::symlink_metadata(dir.join(rel)) {
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            return Some(m);
        }
    }
    None
}

/// Owner and mode changes COPY applies to what it writes.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    /// Owner of new files and directories.
    pub uid: u32,
    /// Group of new files and directories.
    pub gid: u32,
    /// `--chmod`.
    pub mode: Option<u32>,
}

/// Creates the parents of `rel` inside `staging` with the image's metadata where the image
/// has them, so the layer does not change existing directories' owners or modes.
pub fn ensure_parents(
    store: &ImageStore,
    layers: &[LayerRecord],
    staging: &Path,
    rel: &Path,
    own: Ownership,
) -> Result<(), BuildError> {
    let mut prefix = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        prefix.push(c);
        ensure_dir(store, layers, staging, &prefix, own, false)?;
    }
    Ok(())
}

/// Creates directory `rel` in `staging` if missing: with the image's metadata when the
/// image has it, else owned by `own` (and with `--chmod` when `apply_mode`).
pub fn ensure_dir(
    store: &ImageStore,
    layers: &[LayerRecord],
    staging: &Path,
    rel: &Path,
    own: Ownership,
    apply_mode: bool,
) -> Result<(), BuildError> {
    let path = staging.join(rel);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    fs::create_dir(&path).map_err(BuildError::io("creating", &path))?;
    let (uid, gid, mode, mtime) = match image_metadata(store, layers, rel) {
        Some(m) if m.is_dir() => (m.uid(), m.gid(), m.mode() & 0o7777, Some(m.mtime())),
        _ => (
            own.uid,
            own.gid,
            if apply_mode {
                own.mode.unwrap_or(0o755)
            } else {
                0o755
            },
            None,
        ),
    };
    std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
        .map_err(BuildError::io("chown", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(BuildError::io("chmod", &path))?;
    if let Some(t) = mtime {
        set_mtime(&path, t);
    }
    Ok(())
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    let _ = nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// Copies one file, symlink or (empty) directory `src` to `dest`, owned by `own`.
pub fn copy_entry(src: &Path, dest: &Path, own: Ownership) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(src).map_err(BuildError::io("reading", src))?;
    let ft = meta.file_type();
    if let Ok(existing) = fs::symlink_metadata(dest) {
        if !(existing.is_dir() && ft.is_dir()) {
            if existing.is_dir() {
                fs::remove_dir_all(dest).map_err(BuildError::io("replacing", dest))?;
            } else {
                fs::remove_file(dest).map_err(BuildError::io("replacing", dest))?;
            }
        }
    }
    if ft.is_dir() {
        if !dest.is_dir() {
            fs::create_dir(dest).map_err(BuildError::io("creating", dest))?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(BuildError::io("reading", src))?;
        std::os::unix::fs::symlink(&target, dest).map_err(BuildError::io("creating", dest))?;
        let _ = std::os::unix::fs::lchown(dest, Some(own.uid), Some(own.gid));
        return Ok(());
    } else if ft.is_file() {
        fs::copy(src, dest).map_err(BuildError::io("copying to", dest))?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(dest, Some(own.uid), Some(own.gid))
        .map_err(BuildError::io("chown", dest))?;
    let mode = own.mode.unwrap_or(meta.mode() & 0o7777);
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))
        .map_err(BuildError::io("chmod", dest))?;
    set_mtime(dest, meta.mtime());
    Ok(())
}

/// Paths under `root` matching `pattern` (absolute inside the root, `*?[]` per component).
pub fn glob(root: &Path, pattern: &str) -> io::Result<Vec<PathBuf>> {
    let mut current = vec![PathBuf::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let mut next = Vec::new();
        for base in &current {
            if comp.contains(['*', '?', '[']) {
                let Ok(rd) = fs::read_dir(root.join(base)) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| crate::ignore::fnmatch(comp, n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else if comp == ".." {
                next.push(base.parent().map(Path::to_path_buf).unwrap_or_default());
            } else {
                let p = base.join(comp);
                if fs::symlink_metadata(root.join(&p)).is_ok() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    Ok(current)
}
