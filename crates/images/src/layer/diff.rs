//! Layers from directories: an overlayfs upper dir (or any directory of new files) as an
//! OCI layer tar stream, the inverse of [`super::extract`].
//!
//! On disk overlayfs marks a deleted path with a 0/0 character device and an opaque
//! directory with `trusted.overlay.opaque=y`; in the stream the OCI convention is a
//! `.wh.NAME` entry and a `.wh..wh..opq` entry. The stream is deterministic for equal
//! trees (entries sorted by name, numeric owners, no user or group names), so rebuilding
//! the same content yields the same diff-id.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::extract::{get_xattr, OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Errors from writing a layer tar of a directory.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Reading the tree failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the tar stream failed.
    #[error("writing layer tar: {0}")]
    Write(#[source] io::Error),
}

/// Writes the tree under `dir` as an uncompressed OCI layer tar to `out`.
///
/// Character devices 0/0 become whiteouts and opaque directories get their marker entry;
/// other device nodes are skipped, as extraction skips them too. Hardlinks inside the
/// tree are kept as hardlink entries.
pub fn write_layer_tar<W: Write>(dir: &Path, out: W) -> Result<W, DiffError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut links = std::collections::HashMap::new();
    walk(dir, Path::new(""), &mut builder, &mut links)?;
    builder.into_inner().map_err(DiffError::Write)
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn header_for(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn walk<W: Write>(
    root: &Path,
    rel: &Path,
    builder: &mut tar::Builder<W>,
    links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> Result<(), DiffError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(read_err(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_err(&dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let entry_rel = rel.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let ft = meta.file_type();
        let w = DiffError::Write;
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut wh = std::ffi::OsString::from(WHITEOUT_PREFIX);
            wh.push(&name);
            let mut h = header_for(&meta, tar::EntryType::Regular);
            h.set_mode(0o600);
            builder
                .append_data(&mut h, rel.join(wh), io::empty())
                .map_err(w)?;
        } else if ft.is_dir() {
            let mut h = header_for(&meta, tar::EntryType::Directory);
            builder
                .append_data(&mut h, &entry_rel, io::empty())
                .map_err(w)?;
            if get_xattr(&path, OPAQUE_XATTR).ok().flatten().as_deref() == Some(b"y") {
                let mut h = header_for(&meta, tar::EntryType::Regular);
                h.set_mode(0o600);
                builder
                    .append_data(&mut h, entry_rel.join(OPAQUE_MARKER), io::empty())
                    .map_err(w)?;
            }
            walk(root, &entry_rel, builder, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(read_err(&path))?;
            let mut h = header_for(&meta, tar::EntryType::Symlink);
            builder
                .append_link(&mut h, &entry_rel, &target)
                .map_err(w)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut h = header_for(&meta, tar::EntryType::Link);
                    builder.append_link(&mut h, &entry_rel, first).map_err(w)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), entry_rel.clone());
            }
            let mut h = header_for(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let file = fs::File::open(&path).map_err(read_err(&path))?;
            builder.append_data(&mut h, &entry_rel, file).map_err(w)?;
        } else if ft.is_fifo() {
            let mut h = header_for(&meta, tar::EntryType::Fifo);
            builder
                .append_data(&mut h, &entry_rel, io::empty())
                .map_err(w)?;
        }
        // Sockets and other devices have no place in a layer.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::unpack_tar;

    #[test]
    fn whiteouts_and_opaque_dirs_round_trip() {
        if !nix::unistd::geteuid().is_root() {
            return; // mknod and trusted.* xattrs need root
        }
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("etc/opaque")).unwrap();
        fs::write(upper.join("etc/new"), b"hello").unwrap();
        fs::hard_link(upper.join("etc/new"), upper.join("etc/again")).unwrap();
        std::os::unix::fs::symlink("new", upper.join("etc/link")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        super::super::extract::set_xattr(&upper.join("etc/opaque"), OPAQUE_XATTR, b"y").unwrap();

        let tar_bytes = write_layer_tar(&upper, Vec::new()).unwrap();
        let names: Vec<String> = tar::Archive::new(&tar_bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
        assert!(
            names.contains(&"etc/opaque/.wh..wh..opq".to_string()),
            "{names:?}"
        );
        assert_eq!(write_layer_tar(&upper, Vec::new()).unwrap(), tar_bytes);

        let out = tmp.path().join("out");
        unpack_tar(&tar_bytes[..], &out).unwrap();
        assert_eq!(fs::read(out.join("etc/again")).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(out.join("etc/link")).unwrap(),
            Path::new("new")
        );
        let gone = fs::symlink_metadata(out.join("etc/gone")).unwrap();
        assert!(gone.file_type().is_char_device());
        assert_eq!(
            get_xattr(&out.join("etc/opaque"), OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
    }
}
