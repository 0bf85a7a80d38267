//! Safe extraction of one layer tar stream into a directory, converting whiteouts for overlayfs.
//!
//! Threat model: the tar stream is hostile; the destination is a fresh directory only this
//! process writes to. Guarantees:
//! - entry paths that are absolute or contain `..` are rejected;
//! - nothing is ever written *through* a symlink: every parent of an entry must be a real
//!   directory inside the destination, and files are created with `O_EXCL | O_NOFOLLOW`
//!   after removing whatever was at the path;
//! - symlink targets are stored verbatim and never followed here (inside a container they
//!   resolve against the container root, as with Docker and containerd);
//! - hardlink targets go through the same path checks and must already exist in the layer;
//! - character and block devices are skipped (containers get their own /dev), except the
//!   whiteouts this module creates itself;
//! - `trusted.overlay.*` xattrs from the stream are dropped so a layer cannot forge
//!   overlayfs metadata (opaque, redirect, metacopy).
//!
//! Whiteouts use the OCI convention in the stream and the overlayfs one on disk:
//! `.wh.NAME` becomes a 0/0 character device `NAME`, `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on its directory.

use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Prefix of whiteout entries in OCI layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker entry.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors from extracting a layer.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Reading the stream (or decompressing it) failed.
    #[error("reading layer stream: {0}")]
    Read(#[source] io::Error),
    /// A filesystem operation on `path` failed.
    #[error("extracting {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An entry has an absolute path.
    #[error("layer entry {0:?} has an absolute path")]
    Absolute(String),
    /// An entry path contains `..`.
    #[error("layer entry {0:?} contains a '..' component")]
    ParentDir(String),
    /// An entry would be written through a symlink.
    #[error("layer entry {entry:?} would be written through symlink {symlink:?}")]
    ThroughSymlink {
        /// The entry path.
        entry: String,
        /// The symlink on its path.
        symlink: String,
    },
    /// A parent of an entry exists and is not a directory.
    #[error("layer entry {entry:?} needs {parent:?} to be a directory, but it is not")]
    NotADirectory {
        /// The entry path.
        entry: String,
        /// The parent that is not a directory.
        parent: String,
    },
    /// A hardlink target is outside the layer or missing.
    #[error("layer hardlink {entry:?} points to {target:?}, which is not a file in this layer")]
    HardlinkTarget {
        /// The entry path.
        entry: String,
        /// The link target.
        target: String,
    },
    /// An entry has a name that cannot be created (e.g. a whiteout of `..`).
    #[error("layer entry {0:?} has an invalid name")]
    InvalidName(String),
    /// The stream uses a compression layers may not use.
    #[error(
        "unsupported layer compression {0}: only gzip, zstd and uncompressed tar are supported"
    )]
    UnsupportedCompression(&'static str),
}

/// What an extraction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Number of tar entries processed.
    pub entries: u64,
    /// Sum of regular file sizes written (what `docker images` counts).
    pub size: u64,
    /// Whiteouts created.
    pub whiteouts: u64,
    /// Device entries skipped.
    pub skipped_devices: Vec<String>,
}

/// Extracts an uncompressed tar stream into `dest` (created if missing).
pub fn unpack_tar<R: Read>(reader: R, dest: &Path) -> Result<ExtractStats, ExtractError> {
    fs::create_dir_all(dest).map_err(|e| io_err(dest, e))?;
    let mut ex = Extractor {
        root: dest.to_path_buf(),
        is_root: nix::unistd::geteuid().is_root(),
        dir_times: Vec::new(),
        stats: ExtractStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(ExtractError::Read)? {
        let entry = entry.map_err(ExtractError::Read)?;
        ex.entry(entry)?;
    }
    // Directory mtimes last, deepest first, since creating children changes them.
    for (path, mtime) in ex.dir_times.iter().rev() {
        let t = TimeSpec::new(*mtime as i64, 0);
        match stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io_err(path, e.into())),
        }
    }
    Ok(ex.stats)
}

struct Extractor {
    root: PathBuf,
    is_root: bool,
    dir_times: Vec<(PathBuf, u64)>,
    stats: ExtractStats,
}

fn io_err(path: &Path, source: io::Error) -> ExtractError {
    ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Splits a tar path into normal components, rejecting absolute paths and `..`.
fn components(raw: &[u8]) -> Result<Vec<&OsStr>, ExtractError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.first() == Some(&b'/') {
        return Err(ExtractError::Absolute(shown()));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(ExtractError::ParentDir(shown())),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

impl Extractor {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        self.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let comps = components(&raw)?;
        let kind = entry.header().entry_type();

        let Some((name, parents)) = comps.split_last() else {
            // "./": the layer root itself.
            if kind.is_dir() {
                let root = self.root.clone();
                self.apply_metadata(&mut entry, &root, false)?;
                self.dir_times
                    .push((root, entry.header().mtime().unwrap_or(0)));
            }
            return Ok(());
        };
        let parent = self.ensure_parents(parents, &shown)?;
        let name_bytes = name.as_bytes();

        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return set_xattr(&parent, OPAQUE_XATTR, b"y").map_err(|e| io_err(&parent, e));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other ".wh..wh." entries are aufs bookkeeping with no meaning here.
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(ExtractError::InvalidName(shown));
            }
            let path = parent.join(OsStr::from_bytes(hidden));
            remove_existing(&path)?;
            stat::mknod(&path, SFlag::S_IFCHR, Mode::empty(), stat::makedev(0, 0))
                .map_err(|e| io_err(&path, e.into()))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let path = parent.join(name);
        match kind {
            tar::EntryType::Directory => {
                let is_dir = fs::symlink_metadata(&path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    remove_existing(&path)?;
                    fs::create_dir(&path).map_err(|e| io_err(&path, e))?;
                }
                self.apply_metadata(&mut entry, &path, false)?;
                self.dir_times
                    .push((path, entry.header().mtime().unwrap_or(0)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(|e| io_err(&path, e))?;
                let n = io::copy(&mut entry, &mut file).map_err(ExtractError::Read)?;
                self.stats.size += n;
                drop(file);
                self.apply_metadata(&mut entry, &path, false)?;
                self.set_mtime(&entry, &path)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ExtractError::InvalidName(shown.clone()))?
                    .into_owned();
                remove_existing(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| io_err(&path, e))?;
                self.apply_metadata(&mut entry, &path, true)?;
                self.set_mtime(&entry, &path)?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| ExtractError::InvalidName(shown.clone()))?
                    .into_owned();
                let bad_target = || ExtractError::HardlinkTarget {
                    entry: shown.clone(),
                    target: String::from_utf8_lossy(&target_raw).into_owned(),
                };
                let tcomps = components(&target_raw).map_err(|_| bad_target())?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(bad_target());
                };
                let tparent = self
                    .check_parents(tparents, &shown)
                    .map_err(|_| bad_target())?;
                let target = tparent.join(tname);
                match fs::symlink_metadata(&target) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(bad_target()),
                }
                if target != path {
                    remove_existing(&path)?;
                    // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked itself.
                    fs::hard_link(&target, &path).map_err(|e| io_err(&path, e))?;
                }
            }
            tar::EntryType::Fifo => {
                remove_existing(&path)?;
                stat::mknod(&path, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io_err(&path, e.into()))?;
                self.apply_metadata(&mut entry, &path, false)?;
                self.set_mtime(&entry, &path)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::debug!(entry = %shown, "skipping device node in layer");
                self.stats.skipped_devices.push(shown);
            }
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping unsupported tar entry type");
            }
        }
        Ok(())
    }

    /// Makes sure every parent is a real directory (creating missing ones) and returns the last.
    fn ensure_parents(&self, parents: &[&OsStr], entry: &str) -> Result<PathBuf, ExtractError> {
        self.walk_parents(parents, entry, true)
    }

    /// Like [`Self::ensure_parents`] but creates nothing.
    fn check_parents(&self, parents: &[&OsStr], entry: &str) -> Result<PathBuf, ExtractError> {
        self.walk_parents(parents, entry, false)
    }

    fn walk_parents(
        &self,
        parents: &[&OsStr],
        entry: &str,
        create: bool,
    ) -> Result<PathBuf, ExtractError> {
        let mut dir = self.root.clone();
        for c in parents {
            dir.push(c);
            let rel = || {
                dir.strip_prefix(&self.root)
                    .unwrap_or(&dir)
                    .display()
                    .to_string()
            };
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ExtractError::ThroughSymlink {
                        entry: entry.to_owned(),
                        symlink: rel(),
                    })
                }
                Ok(_) => {
                    return Err(ExtractError::NotADirectory {
                        entry: entry.to_owned(),
                        parent: rel(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
                }
                Err(e) => return Err(io_err(&dir, e)),
            }
        }
        Ok(dir)
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown clears capabilities).
    fn apply_metadata<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        symlink: bool,
    ) -> Result<(), ExtractError> {
        let h = entry.header();
        let (uid, gid, mode) = (
            h.uid().unwrap_or(0) as u32,
            h.gid().unwrap_or(0) as u32,
            h.mode().unwrap_or(0o644) & 0o7777,
        );
        if self.is_root {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| io_err(path, e))?;
        }
        if !symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err(path, e))?;
        }
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(ExtractError::Read)? {
            for ext in exts {
                let ext = ext.map_err(ExtractError::Read)?;
                let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if name.starts_with(b"trusted.overlay.") {
                    continue;
                }
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
        for (name, value) in xattrs {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            match set_xattr(path, &name, &value) {
                Ok(()) => {}
                // Filesystems without xattr support, and user.* on symlinks, are not fatal.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOTSUP)
                        || (symlink && e.raw_os_error() == Some(libc::EPERM)) =>
                {
                    tracing::warn!(path = %path.display(), xattr = %name, "cannot set xattr: {e}");
                }
                Err(e) => return Err(io_err(path, e)),
            }
        }
        Ok(())
    }

    fn set_mtime<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<(), ExtractError> {
        let t = TimeSpec::new(entry.header().mtime().unwrap_or(0) as i64, 0);
        stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_err(path, e.into()))
    }
}

/// Removes whatever is at `path` so a new entry can take its place; never follows symlinks.
fn remove_existing(path: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(path) {
        // remove_dir_all does not follow symlinks inside the tree.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| io_err(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| io_err(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Sets an xattr on `path` itself (not on a symlink's target).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let cpath =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: both pointers come from live CStrings (NUL-terminated), and value points to
    // value.len() readable bytes for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an xattr of `path` itself; `None` when absent.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the CStrings are NUL-terminated and buf is writable for buf.len() bytes.
    let rc = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc >= 0 {
        buf.truncate(rc as usize);
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}
