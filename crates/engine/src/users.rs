//! Resolving `--user name[:group]` against the image's /etc/passwd and /etc/group.

use std::path::Path;

use skiff_runtime::User;

/// Errors resolving a user spec.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The named user is not in the image.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// The named group is not in the image.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

/// Reads a database file of the rootfs, refusing symlinks that could point outside it.
fn read_db(rootfs: &Path, name: &str) -> String {
    let path = rootfs.join("etc").join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Resolves `spec` (empty for the image default root) to numeric ids, with
/// supplementary groups from /etc/group as Docker does.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<User, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(rootfs, "passwd");
    let group = read_db(rootfs, "group");
    let user_entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && pred(f))
    };
    let (uid, mut gid, user_name) = if user_part.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        match user_entry(&|f| f[2] == user_part) {
            Some(f) => (uid, f[3].parse().unwrap_or(0), Some(f[0].to_string())),
            None => (uid, 0, None),
        }
    } else {
        let f = user_entry(&|f| f[0] == user_part)
            .ok_or_else(|| UserError::NoUser(user_part.to_string()))?;
        (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        )
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = user_name {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve() {
        let r = rootfs();
        let u = resolve(r.path(), "app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (1000, 1000, vec![10])
        );
        let u = resolve(r.path(), "1000:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = resolve(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(resolve(r.path(), "").unwrap().uid, 0);
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = rootfs();
        assert!(matches!(
            resolve(r.path(), "ghost"),
            Err(UserError::NoUser(_))
        ));
        assert!(matches!(
            resolve(r.path(), "app:ghosts"),
            Err(UserError::NoGroup(_))
        ));
    }
}
