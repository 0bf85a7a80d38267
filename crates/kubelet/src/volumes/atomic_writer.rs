//! Atomic updates of API-data volumes (configMap, secret, downwardAPI, projected),
//! in the layout Kubernetes' atomic writer uses, so readers never see a half-written
//! set of files:
//!
//! ```text
//! dir/..2025_01_02_03_04_05.123456789/key   the payload of one version
//! dir/..data -> ..2025_01_02_03_04_05.123456789
//! dir/key -> ..data/key                     one symlink per top-level name
//! ```
//!
//! A new version is written beside the old one, then `..data` is swapped by renaming a
//! new symlink over it (one atomic step), then the old version is removed.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path};

/// The symlink naming the current version.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its content.
    pub data: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
}

/// Files by relative path.
pub type Payload = BTreeMap<String, File>;

/// Checks a payload path: relative, no `..` element, not starting with `..`.
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("invalid path: must not be empty".into());
    }
    if path.starts_with("..") {
        return Err(format!("invalid path {path:?}: must not start with '..'"));
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            _ => {
                return Err(format!(
                    "invalid path {path:?}: must be relative and may not contain '..'"
                ))
            }
        }
    }
    Ok(())
}

fn read_version(dir: &Path, prefix: &str, out: &mut Payload) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            read_version(&entry.path(), &rel, out)?;
        } else {
            out.insert(
                rel,
                File {
                    data: std::fs::read(entry.path())?,
                    mode: meta.permissions().mode() & 0o7777,
                },
            );
        }
    }
    Ok(())
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Makes `dir` hold exactly `payload`; returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    for path in payload.keys() {
        validate_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join(DATA_DIR);
    let old = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old {
        let mut current = Payload::new();
        if read_version(&dir.join(old), "", &mut current).is_ok() && &current == payload {
            return Ok(false);
        }
    }
    let now = chrono::Utc::now();
    let version = format!("..{}", now.format("%Y_%m_%d_%H_%M_%S.%9f"));
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir)?;
    std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755))?;
    for (path, file) in payload {
        let target = version_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
    }
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    // User-visible names point through ..data, so they follow the swap.
    let wanted: std::collections::BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        if old.as_os_str() != version.as_str() {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> File {
        File {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_versions_behind_the_data_symlink_and_swaps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let mut p = Payload::new();
        p.insert("a".into(), file("1", 0o644));
        p.insert("sub/b".into(), file("2", 0o400));
        assert!(write(&dir, &p).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let first = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        // The same payload again changes nothing.
        assert!(!write(&dir, &p).unwrap());
        // A new payload: a new version; removed names go, the old version goes.
        p.remove("sub/b");
        p.insert("a".into(), file("3", 0o644));
        assert!(write(&dir, &p).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err());
        assert!(!dir.join(&first).exists());
        let entries = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(entries, 3, "a, ..data and one version");
    }

    #[test]
    fn rejects_paths_that_escape() {
        assert!(validate_path("../x").is_err());
        assert!(validate_path("/etc/x").is_err());
        assert!(validate_path("a/../../x").is_err());
        assert!(validate_path("..data").is_err());
        assert!(validate_path("a/b").is_ok());
    }
}
