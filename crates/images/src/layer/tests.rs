//! Extraction tests with hand-built (and deliberately hostile) tar streams.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::extract::{get_xattr, OPAQUE_XATTR};
use super::*;

/// One tar entry: path bytes written raw into the header, so hostile names survive.
struct E<'a> {
    path: &'a str,
    kind: EntryType,
    data: &'a [u8],
    link: Option<&'a str>,
    mode: u32,
    uid: u64,
    pax: Vec<(&'a str, &'a [u8])>,
}

fn e<'a>(path: &'a str, kind: EntryType) -> E<'a> {
    E {
        path,
        kind,
        data: b"",
        link: None,
        mode: if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        pax: Vec::new(),
    }
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        data,
        ..e(path, EntryType::Regular)
    }
}

fn link<'a>(path: &'a str, kind: EntryType, target: &'a str) -> E<'a> {
    E {
        link: Some(target),
        ..e(path, kind)
    }
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for en in entries {
        if !en.pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &en.pax {
                data.extend_from_slice(&pax_record(k, v));
            }
            let mut h = Header::new_ustar();
            h.set_path("PaxHeader").unwrap();
            h.set_entry_type(EntryType::XHeader);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        let mut h = Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..en.path.len()].copy_from_slice(en.path.as_bytes());
        if let Some(l) = en.link {
            gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(en.kind);
        h.set_size(en.data.len() as u64);
        h.set_mode(en.mode);
        h.set_uid(en.uid);
        h.set_gid(en.uid);
        h.set_mtime(1_000_000);
        h.set_cksum();
        b.append(&h, en.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A PAX record: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while format!("{len}").len() + body != len {
        len += 1;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn unpack(entries: &[E<'_>]) -> (tempfile::TempDir, Result<ExtractStats, ExtractError>) {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("outside")).unwrap();
    fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
    let res = unpack_tar(&tar_of(entries)[..], &tmp.path().join("root"));
    (tmp, res)
}

/// Nothing outside `root/` changed: only `outside/secret` with its original content.
fn assert_outside_untouched(tmp: &Path) {
    let mut names: Vec<_> = fs::read_dir(tmp.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["secret"]);
    assert_eq!(fs::read(tmp.join("outside/secret")).unwrap(), b"secret");
    assert_eq!(fs::metadata(tmp.join("outside/secret")).unwrap().nlink(), 1);
    let top: Vec<_> = fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(top.len() <= 2, "unexpected files next to root: {top:?}");
}

#[test]
fn rejects_parent_dir() {
    let (tmp, res) = unpack(&[file("../outside/x", b"pwned")]);
    assert!(matches!(res, Err(ExtractError::ParentDir(_))), "{res:?}");
    let (tmp2, res2) = unpack(&[file("a/../../outside/x", b"pwned")]);
    assert!(matches!(res2, Err(ExtractError::ParentDir(_))), "{res2:?}");
    assert_outside_untouched(tmp.path());
    assert_outside_untouched(tmp2.path());
}

#[test]
fn rejects_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let abs = tmp.path().join("abs-target");
    let abs_s = abs.to_str().unwrap().to_owned();
    let (_t, res) = unpack(&[file(&abs_s, b"pwned")]);
    assert!(matches!(res, Err(ExtractError::Absolute(_))), "{res:?}");
    assert!(!abs.exists());
}

#[test]
fn rejects_writing_through_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("victim");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap().to_owned();
    // Absolute symlink (like `a -> /etc`) then `a/passwd`.
    let (_t, res) = unpack(&[
        link("a", EntryType::Symlink, &target),
        file("a/passwd", b"root::0:0"),
    ]);
    assert!(
        matches!(res, Err(ExtractError::ThroughSymlink { .. })),
        "{res:?}"
    );
    assert!(!outside.join("passwd").exists());
    // Relative escape, and a directory symlink replacing a directory already extracted.
    let (t, res) = unpack(&[
        e("d", EntryType::Directory),
        link("d", EntryType::Symlink, "../outside"),
        file("d/secret", b"pwned"),
    ]);
    assert!(
        matches!(res, Err(ExtractError::ThroughSymlink { .. })),
        "{res:?}"
    );
    assert_outside_untouched(t.path());
    // A file entry on top of a symlink replaces the link, it does not write through it.
    let (t, res) = unpack(&[
        link("f", EntryType::Symlink, "../outside/secret"),
        file("f", b"new"),
    ]);
    res.unwrap();
    assert_outside_untouched(t.path());
    assert_eq!(fs::read(t.path().join("root/f")).unwrap(), b"new");
}

#[test]
fn symlinks_pointing_out_are_stored_not_followed() {
    let (t, res) = unpack(&[
        link("etc-link", EntryType::Symlink, "/etc"),
        link("up", EntryType::Symlink, "../../.."),
    ]);
    res.unwrap();
    assert_eq!(
        fs::read_link(t.path().join("root/etc-link")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(
        fs::read_link(t.path().join("root/up")).unwrap(),
        Path::new("../../..")
    );
}

#[test]
fn rejects_hardlink_escape() {
    let (t, res) = unpack(&[link("h", EntryType::Link, "../outside/secret")]);
    assert!(
        matches!(res, Err(ExtractError::HardlinkTarget { .. })),
        "{res:?}"
    );
    assert_outside_untouched(t.path());
    let (t, res) = unpack(&[
        link("s", EntryType::Symlink, "../outside"),
        link("h", EntryType::Link, "s/secret"),
    ]);
    assert!(
        matches!(res, Err(ExtractError::HardlinkTarget { .. })),
        "{res:?}"
    );
    assert_outside_untouched(t.path());
    let (t, res) = unpack(&[link("h", EntryType::Link, "/etc/passwd")]);
    assert!(
        matches!(res, Err(ExtractError::HardlinkTarget { .. })),
        "{res:?}"
    );
    assert_outside_untouched(t.path());
}

#[test]
fn skips_devices() {
    let (t, res) = unpack(&[
        e("dev", EntryType::Directory),
        e("dev/sda", EntryType::Block),
        e("dev/mem", EntryType::Char),
    ]);
    let stats = res.unwrap();
    assert_eq!(stats.skipped_devices, vec!["dev/sda", "dev/mem"]);
    assert!(!t.path().join("root/dev/sda").exists());
    assert!(fs::symlink_metadata(t.path().join("root/dev/mem")).is_err());
}

#[test]
fn converts_whiteouts_and_opaque_dirs() {
    let (t, res) = unpack(&[
        e("etc", EntryType::Directory),
        file("etc/.wh.motd", b""),
        file("var/cache/.wh..wh..opq", b""),
        file("var/cache/kept", b"k"),
        file(".wh..wh.plnk", b""),
    ]);
    let stats = res.unwrap();
    assert_eq!(stats.whiteouts, 1);
    let root = t.path().join("root");
    let m = fs::symlink_metadata(root.join("etc/motd")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!root.join("etc/.wh.motd").exists());
    assert_eq!(
        get_xattr(&root.join("var/cache"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(get_xattr(&root.join("etc"), OPAQUE_XATTR).unwrap(), None);
    assert!(!root.join("var/cache/.wh..wh..opq").exists());
    assert!(!root.join(".wh..wh.plnk").exists());
    let (_t, res) = unpack(&[file(".wh...", b"")]);
    assert!(matches!(res, Err(ExtractError::InvalidName(_))), "{res:?}");
}

#[test]
fn preserves_metadata_and_hardlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let entries = [
        E {
            mode: 0o4755,
            uid: 1000,
            pax: vec![
                ("SCHILY.xattr.user.note", &b"hi"[..]),
                ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ],
            ..file("bin/tool", b"#!/bin/sh\n")
        },
        link("bin/tool2", EntryType::Link, "bin/tool"),
        E {
            mode: 0o1777,
            ..e("tmp", EntryType::Directory)
        },
        e("p", EntryType::Fifo),
    ];
    let stats = unpack_tar(&tar_of(&entries)[..], tmp.path()).unwrap();
    assert_eq!(stats.size, 10);
    let m = fs::metadata(tmp.path().join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), 1_000_000);
    if nix::unistd::geteuid().is_root() {
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
    }
    assert_eq!(m.nlink(), 2);
    assert_eq!(
        fs::metadata(tmp.path().join("bin/tool2")).unwrap().ino(),
        m.ino()
    );
    let xattr = get_xattr(&tmp.path().join("bin/tool"), "user.note");
    // tmpfs without user xattrs would give ENOTSUP, which extraction tolerates.
    if let Ok(v) = xattr {
        assert_eq!(v.as_deref(), Some(&b"hi"[..]));
    }
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            get_xattr(&tmp.path().join("bin/tool"), "trusted.overlay.redirect").unwrap(),
            None
        );
    }
    assert_eq!(
        fs::metadata(tmp.path().join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(tmp.path().join("tmp")).unwrap().mtime(),
        1_000_000
    );
    assert!(fs::metadata(tmp.path().join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn extract_layer_reports_both_digests() {
    let tar = tar_of(&[file("hello", b"world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = extract_layer(&gz[..], tmp.path()).unwrap();
    assert_eq!(out.compression, Compression::Gzip);
    assert_eq!(out.digest, crate::digest::Digest::of(&gz));
    assert_eq!(out.diff_id, crate::digest::Digest::of(&tar));
    assert_eq!(out.diff_size, tar.len() as u64);
    assert_eq!(fs::read(tmp.path().join("hello")).unwrap(), b"world");
    let xz = b"\xfd7zXZ\x00rest";
    assert!(matches!(
        extract_layer(&xz[..], tmp.path()),
        Err(ExtractError::UnsupportedCompression("xz"))
    ));
}
