//! `hostPath`: a path of the node itself, checked (or created) by its `type`.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;

use k8s_openapi::api::core::v1::HostPathVolumeSource;

use super::HostVolume;

/// Checks (or creates) the path as `type` asks.
pub fn setup(src: &HostPathVolumeSource) -> Result<HostVolume, String> {
    let path = Path::new(&src.path);
    check(path, src.type_.as_deref().unwrap_or(""))?;
    Ok(HostVolume {
        path: path.to_path_buf(),
        read_only: false,
        writable: true,
    })
}

/// The type check of one `hostPath`, with Kubernetes' messages.
pub fn check(path: &Path, type_: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let shown = path.display();
    let fail = |what: &str| Err(format!("hostPath type check failed: {shown} is not {what}"));
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("a directory"),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(|e| format!("creating {shown}: {e}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("chmod {shown}: {e}"))
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("a directory"),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("a file"),
            Err(_) => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|e| format!("creating {shown}: {e}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| format!("chmod {shown}: {e}"))
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("a file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(format!("hostPath type {other:?} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked_and_created() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        assert_eq!(
            check(&d, "Directory").unwrap_err(),
            format!(
                "hostPath type check failed: {} is not a directory",
                d.display()
            )
        );
        check(&d, "DirectoryOrCreate").unwrap();
        assert!(d.is_dir());
        check(&d, "Directory").unwrap();
        assert!(check(&d, "File").is_err());
        let f = tmp.path().join("f");
        check(&f, "FileOrCreate").unwrap();
        assert!(f.is_file());
        check(&f, "File").unwrap();
        assert!(check(&f, "Socket").is_err());
        assert!(check(&tmp.path().join("nothing"), "").is_ok());
    }
}
