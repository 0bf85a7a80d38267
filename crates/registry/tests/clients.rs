//! Real clients nobody here wrote: skopeo against skiff's registry (plain, TLS, bearer
//! auth, anonymous pull), and skiff's own client and Debian's docker-registry at the two
//! ends of a round trip through skiff's registry.

use crate::common;

use common::{
    fixture_dir, skopeo, skopeo_digest, skopeo_ok, DockerRegistry, Options, Registry, PASSWORD,
};
use skiff_images::registry::{pull, push};
use skiff_images::{ImageStore, NoProgress, PullOptions, PushOptions, Reference};

fn oci_fixture() -> String {
    format!("oci:{}:busybox", fixture_dir().join("oci").display())
}

#[test]
fn skopeo_copy_inspect_list_tags_delete() {
    let reg = Registry::start();
    let source_digest = skopeo_digest(&oci_fixture(), true);
    for tag in ["1.0", "1.1"] {
        let dest = format!("docker://{}/tools/busybox:{tag}", reg.host);
        skopeo_ok(&["copy", "--dest-tls-verify=false", &oci_fixture(), &dest]);
    }
    let image = format!("docker://{}/tools/busybox:1.0", reg.host);
    assert_eq!(skopeo_digest(&image, false), source_digest);

    let tags: serde_json::Value = serde_json::from_str(&skopeo_ok(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/tools/busybox", reg.host),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1.0", "1.1"]));

    // Back out into an OCI layout: the same manifest, and every blob verified by skopeo.
    let out = tempfile::tempdir().unwrap();
    let back = format!("oci:{}:back", out.path().join("layout").display());
    skopeo_ok(&["copy", "--src-tls-verify=false", &image, &back]);
    assert_eq!(skopeo_digest(&back, true), source_digest);

    // A docker-archive source becomes a Docker schema 2 manifest, stored as such.
    let archive = format!(
        "docker-archive:{}",
        fixture_dir().join("busybox-docker.tar").display()
    );
    let docker_image = format!("docker://{}/tools/from-archive:latest", reg.host);
    skopeo_ok(&["copy", "--dest-tls-verify=false", &archive, &docker_image]);
    let raw = skopeo_ok(&["inspect", "--raw", "--tls-verify=false", &docker_image]);
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );

    skopeo_ok(&["delete", "--tls-verify=false", &image]);
    let gone = skopeo(&["inspect", "--tls-verify=false", &image]);
    assert!(!gone.status.success());
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("manifest unknown"), "{err}");
}

#[test]
fn skopeo_bearer_auth_over_tls() {
    let reg = Registry::with(Options {
        auth: true,
        tls: true,
        ..Options::default()
    });
    let dest = format!("docker://{}/secure/busybox:1.0", reg.host);
    let creds = format!("alice:{PASSWORD}");

    // Refused without credentials and with wrong ones, nothing stored.
    for extra in [vec![], vec!["--dest-creds", "alice:wrong"]] {
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        args.extend(extra);
        let src = oci_fixture();
        args.extend([src.as_str(), dest.as_str()]);
        let out = skopeo(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("unauthorized") || err.contains("authentication required"),
            "{err}"
        );
    }
    assert!(!reg.root.join("repositories/secure").exists());

    skopeo_ok(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &oci_fixture(),
        &dest,
    ]);
    let inspect = skopeo_ok(&["inspect", "--tls-verify=false", "--creds", &creds, &dest]);
    assert!(inspect.contains(&skopeo_digest(&oci_fixture(), true)));
    let anonymous = skopeo(&["inspect", "--tls-verify=false", &dest]);
    assert!(!anonymous.status.success());
}

#[test]
fn skopeo_anonymous_pull_authenticated_push() {
    let reg = Registry::with(Options {
        auth: true,
        anonymous_pull: true,
        ..Options::default()
    });
    let dest = format!("docker://{}/public/busybox:1.0", reg.host);
    let push_anonymously = skopeo(&["copy", "--dest-tls-verify=false", &oci_fixture(), &dest]);
    assert!(!push_anonymously.status.success());
    skopeo_ok(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("alice:{PASSWORD}"),
        &oci_fixture(),
        &dest,
    ]);
    assert_eq!(
        skopeo_digest(&dest, false),
        skopeo_digest(&oci_fixture(), true)
    );
    let out = tempfile::tempdir().unwrap();
    let back = format!("oci:{}:x", out.path().join("layout").display());
    skopeo_ok(&["copy", "--src-tls-verify=false", &dest, &back]);
}

#[tokio::test]
async fn skiff_client_and_docker_registry_round_trip() {
    let reg = Registry::start();
    let docker = DockerRegistry::start();
    let tmp = tempfile::tempdir().unwrap();

    // skiff's client pushes what it loaded from the docker-archive.
    let publisher = ImageStore::open(&tmp.path().join("publisher")).unwrap();
    let archive = std::fs::File::open(fixture_dir().join("busybox-docker.tar")).unwrap();
    publisher.load(archive, &NoProgress).unwrap();
    let image = publisher.resolve("busybox:latest").unwrap();
    let target = Reference::parse(&format!("{}/skiff/busybox:1.0", reg.host)).unwrap();
    let opts = PushOptions {
        insecure: true,
        ..PushOptions::default()
    };
    let pushed = push(&publisher, &image, &target, &opts, &NoProgress)
        .await
        .unwrap();
    assert_eq!(pushed, image.manifest.digest);

    // skopeo carries it to Debian's docker-registry and back into another repository.
    let ours = format!("docker://{}/skiff/busybox:1.0", reg.host);
    let theirs = format!("docker://{}/mirror/busybox:1.0", docker.host);
    let back = format!("docker://{}/back/busybox:2.0", reg.host);
    // skopeo would gzip skiff's uncompressed layers on the way to a registry (a new
    // manifest); --preserve-digests makes it copy byte for byte or fail.
    let flags = [
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
    ];
    skopeo_ok(&["copy", flags[0], flags[1], flags[2], &ours, &theirs]);
    assert_eq!(skopeo_digest(&theirs, false), pushed.to_string());
    skopeo_ok(&["copy", flags[0], flags[1], flags[2], &theirs, &back]);
    assert_eq!(skopeo_digest(&back, false), pushed.to_string());

    // skiff's client pulls the returned copy into a fresh store.
    let user = ImageStore::open(&tmp.path().join("user")).unwrap();
    let source = Reference::parse(&format!("{}/back/busybox:2.0", reg.host)).unwrap();
    let opts = PullOptions {
        insecure: true,
        ..PullOptions::default()
    };
    let record = pull(&user, &source, &opts, &NoProgress).await.unwrap();
    assert_eq!(record.manifest.digest, pushed);
    assert_eq!(record.id, image.id);
}
