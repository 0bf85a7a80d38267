//! Pull and push against Debian's docker-registry on loopback, fed by skopeo.

use crate::common;

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{have, run, store, test_image};
use skiff_images::manifest::{media_type, Descriptor, ImageIndex, Platform};
use skiff_images::registry::Client;
use skiff_images::{
    login, pull, push, Credentials, Digest, NoProgress, Progress, PullOptions, PushOptions,
    Reference, RegistryError,
};

/// A docker-registry process on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = String::new();
        if let Some((user, pass)) = htpasswd {
            let hash = bcrypt::hash_with_result(pass, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoA);
            let file = dir.path().join("htpasswd");
            fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            );
        }
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting docker-registry");
            if wait_ready(&mut child, port) {
                return Registry { child, port, dir };
            }
            // Port taken by a parallel test between bind and spawn: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies the umoci-built busybox into the registry with skopeo.
    fn seed(&self, name: &str) {
        run(Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!(
                "oci:{}:busybox",
                test_image().join("oci").display()
            ))
            .arg(format!("docker://{}/{name}", self.host())));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data/docker/registry/v2")
    }
}

fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools() -> bool {
    have(&["umoci", "skopeo", "docker-registry"])
}

fn insecure() -> PullOptions {
    PullOptions {
        insecure: true,
        ..Default::default()
    }
}

fn skopeo_digest(reference: &str, creds: Option<&str>) -> Digest {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.arg("--creds").arg(c);
    }
    let out = run(cmd.arg(format!("docker://{reference}")));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["Digest"].as_str().unwrap().parse().unwrap()
}

/// Records progress messages.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn started(&self, id: &str, _total: Option<u64>) {
        self.0.lock().unwrap().push(format!("started {id}"));
    }
    fn advanced(&self, _id: &str, _n: u64) {}
    fn finished(&self, id: &str) {
        self.0.lock().unwrap().push(format!("finished {id}"));
    }
    fn message(&self, msg: &str) {
        self.0.lock().unwrap().push(msg.to_owned());
    }
}

#[tokio::test]
async fn pulls_from_registry_and_reports_errors_clearly() {
    if !tools() {
        return;
    }
    let reg = Registry::start(None);
    reg.seed("busybox:latest");
    let (_t, store) = store();
    let r = Reference::parse(&format!("{}/busybox", reg.host())).unwrap();
    let rec = pull(&store, &r, &insecure(), &NoProgress).await.unwrap();
    assert!(store
        .layer_dirs(&rec)
        .unwrap()
        .iter()
        .any(|d| d.join("bin/busybox").is_file()));
    let digest = skopeo_digest(&format!("{}/busybox:latest", reg.host()), None);
    assert_eq!(rec.repo_digests, vec![r.with_digest(digest.clone())]);
    assert_eq!(
        store
            .resolve(&format!("{}/busybox@{digest}", reg.host()))
            .unwrap()
            .id,
        rec.id
    );

    // Second pull: nothing downloaded again.
    let rec2 = Recorder::default();
    pull(&store, &r, &insecure(), &rec2).await.unwrap();
    let msgs = rec2.0.lock().unwrap().clone();
    assert!(
        msgs.iter().any(|m| m.ends_with("Already exists")),
        "{msgs:?}"
    );
    assert!(!msgs.iter().any(|m| m.starts_with("started")), "{msgs:?}");

    // By digest.
    let (_t2, other) = common::store();
    let by_digest = r.with_digest(digest.clone());
    let rec3 = pull(&other, &by_digest, &insecure(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(rec3.id, rec.id);
    assert!(rec3.repo_tags.is_empty());

    let missing = Reference::parse(&format!("{}/busybox:nope", reg.host())).unwrap();
    let err = pull(&store, &missing, &insecure(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("manifest unknown: {}/busybox:nope", reg.host())
    );
    let err = pull(&store, &r, &PullOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("pass --insecure"), "{err}");
}

#[tokio::test]
async fn corrupt_blob_leaves_nothing_behind() {
    if !tools() {
        return;
    }
    let reg = Registry::start(None);
    reg.seed("busybox:latest");
    let (_t, store) = store();
    let r = Reference::parse(&format!("{}/busybox", reg.host())).unwrap();
    // Overwrite the largest blob (the layer) in the registry's storage, same size.
    let mut biggest: Option<(u64, PathBuf)> = None;
    for e in walk(&reg.data().join("blobs")) {
        let len = fs::metadata(&e).unwrap().len();
        if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
            biggest = Some((len, e));
        }
    }
    let (len, path) = biggest.unwrap();
    fs::write(&path, vec![0x42u8; len as usize]).unwrap();
    let err = pull(&store, &r, &insecure(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(common::count(&store.root().join("layers/sha256")), 0);
    assert_eq!(common::count(&store.root().join("tmp")), 0);
    let bad = Digest::from_hex(
        path.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert!(!store.blobs().has(&bad));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn pushes_images_skopeo_can_read_and_pull_back() {
    if !tools() {
        return;
    }
    let reg = Registry::start(None);
    let (_t, store) = store();
    store
        .load(
            File::open(test_image().join("busybox-docker.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    let image = store.resolve("busybox").unwrap();
    let target = Reference::parse(&format!("{}/pushed/busybox:v1", reg.host())).unwrap();
    let opts = PushOptions {
        insecure: true,
        ..Default::default()
    };
    let digest = push(&store, &image, &target, &opts, &NoProgress)
        .await
        .unwrap();
    assert_eq!(skopeo_digest(&target.to_string(), None), digest);
    assert!(store
        .resolve("busybox")
        .unwrap()
        .repo_digests
        .contains(&target.with_digest(digest.clone())));

    // Again: every blob is already there.
    let rec = Recorder::default();
    let again = push(&store, &image, &target, &opts, &rec).await.unwrap();
    assert_eq!(again, digest);
    let msgs = rec.0.lock().unwrap().clone();
    assert_eq!(
        msgs.iter()
            .filter(|m| m.ends_with("Layer already exists"))
            .count(),
        image.layers.len() + 1
    );

    let (_t2, other) = common::store();
    let pulled = pull(&other, &target, &insecure(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(pulled.id, image.id);
}

#[tokio::test]
async fn pulls_index_with_platform_selection_and_zstd_layers() {
    if !tools() {
        return;
    }
    let reg = Registry::start(None);
    let (_t, store) = store();
    store
        .load(
            File::open(test_image().join("busybox-oci.tar")).unwrap(),
            &NoProgress,
        )
        .unwrap();
    let image = store.resolve("busybox").unwrap();
    let client = Client::connect(&reg.host(), "multi", "pull,push", None, true)
        .await
        .unwrap();

    // Re-encode the layers as zstd and upload an OCI manifest using them.
    let mut manifest_layers = Vec::new();
    for l in &image.layers {
        let mut tar = Vec::new();
        let blob = store.blobs().read(&l.blob.digest).unwrap();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut tar).unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let d = Digest::of(&zst);
        let url = client.start_upload(&d).await.unwrap();
        client
            .finish_upload(url, &d, zst.len() as u64, zst.clone().into())
            .await
            .unwrap();
        manifest_layers.push(Descriptor::new(
            media_type::OCI_LAYER_ZSTD,
            d,
            zst.len() as u64,
        ));
    }
    let config = store.blobs().read(&image.config.digest).unwrap();
    let url = client.start_upload(&image.config.digest).await.unwrap();
    client
        .finish_upload(
            url,
            &image.config.digest,
            config.len() as u64,
            config.clone().into(),
        )
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": Descriptor::new(media_type::OCI_CONFIG, image.config.digest.clone(), config.len() as u64),
        "layers": manifest_layers,
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let mdigest = Digest::of(&mbytes);
    client
        .put_manifest(&mdigest.to_string(), media_type::OCI_MANIFEST, &mbytes, "m")
        .await
        .unwrap();

    let entry = |arch: &str| {
        let mut d = Descriptor::new(
            media_type::OCI_MANIFEST,
            mdigest.clone(),
            mbytes.len() as u64,
        );
        d.platform = Some(format!("linux/{arch}").parse::<Platform>().unwrap());
        d
    };
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![entry("arm64"), entry("amd64")],
        annotations: Default::default(),
    };
    let ibytes = serde_json::to_vec(&index).unwrap();
    client
        .put_manifest("latest", media_type::OCI_INDEX, &ibytes, "i")
        .await
        .unwrap();

    let r = Reference::parse(&format!("{}/multi:latest", reg.host())).unwrap();
    let (_t2, other) = common::store();
    let rec = pull(&other, &r, &insecure(), &NoProgress).await.unwrap();
    assert_eq!(rec.id, image.id);
    assert_eq!(rec.manifest.digest, mdigest);
    assert_eq!(rec.layers[0].blob.media_type, media_type::OCI_LAYER_ZSTD);
    assert_eq!(
        rec.repo_digests,
        vec![r.with_digest(Digest::of(&ibytes))],
        "repo digest is the index's"
    );
    assert!(other
        .layer_dirs(&rec)
        .unwrap()
        .iter()
        .any(|d| d.join("bin/busybox").is_file()));

    let opts = PullOptions {
        platform: Some("linux/s390x".parse().unwrap()),
        ..insecure()
    };
    let err = pull(&other, &r, &opts, &NoProgress).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("linux/arm64, linux/amd64"),
        "{err}"
    );
}

#[tokio::test]
async fn basic_auth_with_login_and_clear_errors() {
    if !tools() {
        return;
    }
    let reg = Registry::start(Some(("alice", "wonderland")));
    run(Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:wonderland",
        ])
        .arg(format!(
            "oci:{}:busybox",
            test_image().join("oci").display()
        ))
        .arg(format!("docker://{}/busybox:latest", reg.host())));
    let (t, store) = store();
    let r = Reference::parse(&format!("{}/busybox", reg.host())).unwrap();

    let err = pull(&store, &r, &insecure(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::AuthRequired { .. }), "{err}");
    assert!(err.to_string().contains("skiff login"), "{err}");

    let wrong = PullOptions {
        credentials: Some(Credentials::new("alice", "nope")),
        ..insecure()
    };
    let err = pull(&store, &r, &wrong, &NoProgress).await.unwrap_err();
    assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("invalid username or password"),
        "{err}"
    );
    let auth_file = store.auth_file();
    assert_eq!(auth_file, t.path().join("auth.json"));
    let err = login(
        &auth_file,
        &reg.host(),
        &Credentials::new("alice", "nope"),
        true,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err}");
    assert!(!auth_file.exists(), "failed login writes nothing");

    login(
        &auth_file,
        &reg.host(),
        &Credentials::new("alice", "wonderland"),
        true,
    )
    .await
    .unwrap();
    let rec = pull(&store, &r, &insecure(), &NoProgress).await.unwrap();
    let target = Reference::parse(&format!("{}/copy:v2", reg.host())).unwrap();
    let opts = PushOptions {
        insecure: true,
        ..Default::default()
    };
    let digest = push(&store, &rec, &target, &opts, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        skopeo_digest(&target.to_string(), Some("alice:wonderland")),
        digest
    );
}

#[test]
fn pull_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let store = skiff_images::ImageStore::open(tmp.path()).unwrap();
    let r = Reference::parse("busybox").unwrap();
    let opts = PullOptions::default();
    let fut = pull(&store, &r, &opts, &NoProgress);
    assert_send(&fut);
    let rec_opts = PushOptions::default();
    let image = skiff_images::ImageRecord {
        id: skiff_images::ImageId(Digest::of(b"")),
        repo_tags: vec![],
        repo_digests: vec![],
        manifest: Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b""), 0),
        config: Descriptor::new(media_type::OCI_CONFIG, Digest::of(b""), 0),
        layers: vec![],
        size: 0,
        created: None,
        platform: String::new(),
        added: chrono::Utc::now(),
    };
    let fut2 = push(&store, &image, &r, &rec_opts, &NoProgress);
    assert_send(&fut2);
}

/// A minimal registry front that demands a bearer token from its own token endpoint,
/// which in turn wants Basic `alice:pw` (docker-registry's token auth needs a JWT issuer,
/// so the flow is checked against this stand-in).
async fn bearer_mock() -> (u16, std::sync::Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 || !chunk[0].is_ascii_alphabetic() && buf.is_empty() {
                        return; // closed, or a TLS hello: plain HTTP only here
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .unwrap_or("")
                    .to_owned();
                let basic = format!("Basic {}", base64_encode("alice:pw"));
                let (status, extra, body) = if target.starts_with("/token") {
                    seen.lock().unwrap().push(target.clone());
                    if auth == basic {
                        ("200 OK", String::new(), r#"{"token":"tok"}"#.to_owned())
                    } else {
                        ("401 Unauthorized", String::new(), String::new())
                    }
                } else if auth == "Bearer tok" {
                    ("200 OK", String::new(), "{}".to_owned())
                } else {
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"mock\"\r\n"),
                        String::new(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn bearer_token_flow() {
    let (port, seen) = bearer_mock().await;
    let host = format!("127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let auth_file = tmp.path().join("auth.json");

    let err = Client::connect(&host, "lib/x", "pull", None, true)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::AuthRequired { .. }), "{err}");
    let err = login(&auth_file, &host, &Credentials::new("alice", "bad"), true)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::AuthFailed { .. }), "{err}");
    assert!(!auth_file.exists());

    login(&auth_file, &host, &Credentials::new("alice", "pw"), true)
        .await
        .unwrap();
    let saved = skiff_images::registry::AuthFile::read(&auth_file).unwrap();
    assert_eq!(saved.get(&host), Some(Credentials::new("alice", "pw")));

    seen.lock().unwrap().clear();
    let creds = skiff_images::registry::auth::find_credentials(&host, None, Some(&auth_file));
    let client = Client::connect(&host, "lib/x", "pull,push", creds, true)
        .await
        .unwrap();
    assert_eq!(client.base().scheme(), "http");
    let queries = seen.lock().unwrap().clone();
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert!(queries[0].contains("service=mock"), "{queries:?}");
    assert!(
        queries[0].contains("scope=repository%3Alib%2Fx%3Apull%2Cpush"),
        "{queries:?}"
    );
}
