//! Load and save against archives made by skopeo/umoci, and Docker's rmi semantics.

use crate::common;

use std::fs::{self, File};
use std::process::Command;

use common::{count, have, run, store, test_image};
use skiff_images::{ArchiveFormat, NoProgress, Reference, RemoveEvent, StoreError};

#[test]
fn loads_both_archive_kinds_and_shares_layers() {
    if !have(&["umoci", "skopeo"]) {
        return;
    }
    let img = test_image();
    let (_t, store) = store();
    let loaded = store
        .load(
            File::open(img.join("busybox-docker.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].to_string(), "Loaded image: busybox:latest");
    let rec = store.resolve("busybox").unwrap();
    assert_eq!(rec.id, loaded[0].id);
    assert_eq!(
        rec.repo_tags,
        vec![Reference::parse("busybox:latest").unwrap()]
    );
    let dirs = store.layer_dirs(&rec).unwrap();
    assert!(!dirs.is_empty());
    assert!(
        dirs.iter().any(|d| d.join("bin/busybox").is_file()),
        "{dirs:?}"
    );
    assert!(dirs.iter().any(|d| d.join("var/www/index.html").is_file()));
    let config = store.config(&rec).unwrap();
    assert_eq!(
        config.config().as_ref().unwrap().cmd().as_deref(),
        Some(&["sh".to_owned()][..])
    );
    assert!(rec.size > 500_000, "busybox is bigger than {}", rec.size);

    let layers_before = count(&store.root().join("layers/sha256"));
    let loaded = store
        .load(
            File::open(img.join("busybox-oci.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, rec.id, "same config, same image ID");
    assert_eq!(
        count(&store.root().join("layers/sha256")),
        layers_before,
        "layers are unpacked once per diff-id"
    );
    assert_eq!(store.list().unwrap().len(), 1);

    // Resolution by every form Docker accepts.
    for name in [
        "busybox:latest".to_owned(),
        "docker.io/library/busybox:latest".to_owned(),
        rec.id.to_string(),
        rec.id.digest().hex().to_owned(),
        rec.id.short().to_owned(),
        format!("sha256:{}", rec.id.short()),
    ] {
        assert_eq!(store.resolve(&name).unwrap().id, rec.id, "{name}");
    }
    assert!(matches!(
        store.resolve("nope"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.resolve("nope").unwrap_err().to_string(),
        "image \"nope\" not found locally"
    );

    let history = store.history(&rec).unwrap();
    assert_eq!(history[0].id.as_ref(), Some(&rec.id));
    assert_eq!(history.iter().map(|h| h.size).sum::<u64>(), rec.size);
}

#[test]
fn saves_archives_skopeo_can_read() {
    if !have(&["umoci", "skopeo"]) {
        return;
    }
    let img = test_image();
    let (t, store) = store();
    store
        .load(
            File::open(img.join("busybox-oci.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    let rec = store.resolve("busybox").unwrap();
    for (format, transport) in [
        (ArchiveFormat::DockerArchive, "docker-archive"),
        (ArchiveFormat::OciArchive, "oci-archive"),
    ] {
        let path = t.path().join(format!("{transport}.tar"));
        store
            .save(
                &["busybox"],
                File::create(&path).unwrap(),
                format,
                &NoProgress,
            )
            .unwrap();
        let out = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("{transport}:{}", path.display())));
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["Architecture"], "amd64", "{transport}: {out}");
        assert_eq!(
            json["Layers"].as_array().unwrap().len(),
            rec.layers.len(),
            "{transport}"
        );
        let config = run(Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("{transport}:{}", path.display())));
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(config["config"]["Cmd"][0], "sh", "{transport}");

        // And back into a fresh store: same image ID, same tag.
        let (_t2, other) = common::store();
        let loaded = other.load(File::open(&path).unwrap(), &NoProgress).unwrap();
        assert_eq!(loaded.len(), 1, "{transport}");
        assert_eq!(loaded[0].id, rec.id, "{transport}");
        assert_eq!(
            loaded[0].reference,
            Some(Reference::parse("busybox").unwrap()),
            "{transport}"
        );
        let back = other.resolve("busybox").unwrap();
        assert!(other
            .layer_dirs(&back)
            .unwrap()
            .iter()
            .any(|d| d.join("bin/busybox").is_file()));
    }
}

#[test]
fn rmi_untags_then_deletes_everything() {
    if !have(&["umoci", "skopeo"]) {
        return;
    }
    let img = test_image();
    let (_t, store) = store();
    store
        .load(
            File::open(img.join("busybox-docker.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    let rec = store.resolve("busybox").unwrap();
    store
        .tag(
            "busybox",
            &Reference::parse("localhost:5000/mine:v1").unwrap(),
        )
        .unwrap();
    assert_eq!(store.resolve("localhost:5000/mine:v1").unwrap().id, rec.id);
    assert!(store
        .tag(
            "busybox",
            &Reference::parse(&format!("x@{}", rec.id)).unwrap()
        )
        .is_err());

    // By ID with tags in two repositories: Docker refuses without force.
    let err = store.remove(rec.id.short(), false).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("must be forced"), "{err}");

    let events = store.remove("busybox", false).unwrap();
    assert_eq!(events, vec![RemoveEvent::Untagged("busybox:latest".into())]);
    assert!(
        !store.untag(&Reference::parse("busybox").unwrap()).unwrap(),
        "already gone"
    );
    assert!(store.resolve("busybox").is_err());
    assert!(
        store.layer_dirs(&rec).is_ok(),
        "still tagged elsewhere, layers stay"
    );

    let events = store.remove("localhost:5000/mine:v1", false).unwrap();
    let lines: Vec<String> = events.iter().map(ToString::to_string).collect();
    assert_eq!(lines[0], "Untagged: localhost:5000/mine:v1");
    assert_eq!(lines[1], format!("Deleted: {}", rec.id));
    assert_eq!(lines.len(), 2 + rec.layers.len(), "{lines:?}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(count(&store.root().join("layers/sha256")), 0);
    assert_eq!(count(&store.root().join("blobs/sha256")), 0);
    assert_eq!(count(&store.root().join("tmp")), 0);
}

#[test]
fn prune_removes_only_dangling_images() {
    if !have(&["umoci", "skopeo"]) {
        return;
    }
    let img = test_image();
    let (_t, store) = store();
    store
        .load(
            File::open(img.join("busybox-docker.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    let rec = store.resolve("busybox").unwrap();
    assert!(store.prune(&[]).unwrap().events.is_empty());
    // Untag by moving the only tag to nothing: load again under no name via an ID-only save.
    let mut archive = Vec::new();
    store
        .save(
            &[rec.id.to_string().as_str()],
            &mut archive,
            ArchiveFormat::DockerArchive,
            &NoProgress,
        )
        .unwrap();
    store.remove("busybox", false).unwrap();
    let loaded = store.load(&archive[..], &NoProgress).unwrap();
    assert_eq!(
        loaded[0].to_string(),
        format!("Loaded image ID: {}", rec.id)
    );
    assert!(store.resolve(rec.id.short()).unwrap().is_dangling());
    assert!(
        store
            .prune(std::slice::from_ref(&rec.id))
            .unwrap()
            .events
            .is_empty(),
        "kept when in use"
    );
    let report = store.prune(&[]).unwrap();
    assert_eq!(
        report.events[0],
        RemoveEvent::Deleted(rec.id.digest().clone())
    );
    assert!(report.reclaimed > 500_000);
    assert!(store.list().unwrap().is_empty());
    assert_eq!(count(&store.root().join("blobs/sha256")), 0);
    fs::metadata(store.root().join("images.json")).unwrap();
}

#[test]
fn concurrent_loads_into_one_store_are_safe() {
    if !have(&["umoci", "skopeo"]) {
        return;
    }
    let img = test_image();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    // Separate ImageStore values (separate lock file descriptions), as separate processes have.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let root = root.clone();
            let archive = img.join(if i % 2 == 0 {
                "busybox-docker.tar"
            } else {
                "busybox-oci.tar"
            });
            std::thread::spawn(move || {
                let store = skiff_images::ImageStore::open(&root).unwrap();
                store
                    .load(File::open(archive).unwrap(), &NoProgress)
                    .unwrap()
            })
        })
        .collect();
    let ids: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().unwrap()[0].id.clone())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let store = skiff_images::ImageStore::open(&root).unwrap();
    let images = store.list().unwrap();
    assert_eq!(images.len(), 1);
    let rec = &images[0];
    assert_eq!(count(&root.join("layers/sha256")), rec.layers.len());
    assert!(store
        .layer_dirs(rec)
        .unwrap()
        .iter()
        .any(|d| d.join("bin/busybox").is_file()));
    assert_eq!(count(&root.join("tmp")), 0, "no staging left behind");
}
