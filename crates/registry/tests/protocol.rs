//! The distribution protocol's edge cases, spoken in raw HTTP with reqwest.

use crate::common;

use std::io::{Read, Write};

use common::{Options, Registry, PASSWORD};
use reqwest::{header, Client, Response, StatusCode};
use serde_json::{json, Value};
use skiff_images::manifest::media_type;
use skiff_images::Digest;

/// The first error code of a spec-shaped error body.
async fn code(resp: Response) -> String {
    let body: Value = resp.json().await.expect("error bodies are JSON");
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

/// Uploads a blob in one POST and returns its digest.
async fn push_blob(reg: &Registry, c: &Client, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    let resp = c
        .post(reg.v2(&format!("{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    d
}

/// An OCI image manifest over a config and one layer.
fn image_manifest(config: &Digest, layer: &Digest, extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": media_type::OCI_CONFIG, "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer.to_string(), "size": 5}],
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::to_vec(&m).unwrap()
}

async fn put_manifest(
    reg: &Registry,
    c: &Client,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> Response {
    c.put(reg.v2(&format!("{repo}/manifests/{reference}")))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes a small image tagged `tag` and returns its manifest digest.
async fn push_image(reg: &Registry, c: &Client, repo: &str, tag: &str) -> Digest {
    let config = push_blob(reg, c, repo, b"{}").await;
    let layer = push_blob(reg, c, repo, format!("layer of {tag}").as_bytes()).await;
    let m = image_manifest(&config, &layer, json!({}));
    let resp = put_manifest(reg, c, repo, tag, media_type::OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Digest::of(&m)
}

fn header_of(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn base_endpoint_and_error_codes() {
    let reg = Registry::start();
    let c = reg.client();
    let resp = c.get(reg.v2("")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header_of(&resp, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let d = Digest::of(b"nothing");
    let cases = [
        (
            format!("a/blobs/{d}"),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            format!("A/blobs/{d}"),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            "a/blobs/sha256:zz".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            "a/manifests/-bad".into(),
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
        ),
        (
            "a/manifests/latest".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        ("a/tags/list".into(), StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        (
            "a/blobs/uploads/0123456789abcdef0123456789abcdef".into(),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ];
    for (path, status, want) in cases {
        let resp = c.get(reg.v2(&path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(code(resp).await, want, "{path}");
    }
    push_image(&reg, &c, "a", "v1").await;
    let resp = c.get(reg.v2("a/manifests/v2")).send().await.unwrap();
    assert_eq!(code(resp).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn chunked_upload_with_out_of_order_chunk() {
    let reg = Registry::start();
    let c = reg.client();
    let resp = c.post(reg.v2("app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = header_of(&resp, "location");
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");
    let url = format!("{}{location}", reg.url);

    let chunk = |body: &'static [u8], range: &str| {
        c.patch(&url)
            .header(header::CONTENT_RANGE, range)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
    };
    let resp = chunk(b"hello", "0-4").await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header_of(&resp, "range"), "0-4");

    // A chunk that skips ahead is refused with the range the registry holds.
    let resp = chunk(b"XXXXX", "10-14").await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header_of(&resp, "range"), "0-4");
    // So is one that overlaps what was sent.
    let resp = chunk(b"XXXXX", "2-6").await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let resp = chunk(b" chunked", "5-12").await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header_of(&resp, "range"), "0-12");

    let d = Digest::of(b"hello chunked world");
    let resp = c
        .put(format!("{url}?digest={d}"))
        .body(&b" world"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header_of(&resp, "docker-content-digest"), d.to_string());
    assert_eq!(header_of(&resp, "location"), format!("/v2/app/blobs/{d}"));

    let resp = c
        .head(reg.v2(&format!("app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "content-length"), "19");
    let got = c
        .get(reg.v2(&format!("app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), &b"hello chunked world"[..]);
    // The session is gone once finished.
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(code(resp).await, "BLOB_UPLOAD_UNKNOWN");
}

/// Files under the storage's `blobs/` directory.
fn stored_blobs(reg: &Registry) -> Vec<String> {
    std::fs::read_dir(reg.root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[tokio::test]
async fn digest_mismatch_is_refused_and_nothing_stored() {
    let reg = Registry::start();
    let c = reg.client();
    let claimed = Digest::of(b"what the client says");
    let resp = c
        .post(reg.v2(&format!("app/blobs/uploads/?digest={claimed}")))
        .body("what it sends")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(resp).await, "DIGEST_INVALID");

    // The same through a session.
    let resp = c.post(reg.v2("app/blobs/uploads/")).send().await.unwrap();
    let url = format!("{}{}", reg.url, header_of(&resp, "location"));
    c.patch(&url).body("what it sends").send().await.unwrap();
    let resp = c
        .put(format!("{url}?digest={claimed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(resp).await, "DIGEST_INVALID");
    let resp = c.put(&url).send().await.unwrap();
    assert_eq!(
        code(resp).await,
        "BLOB_UPLOAD_UNKNOWN",
        "discarded on mismatch"
    );

    for d in [claimed, Digest::of(b"what it sends")] {
        let resp = c
            .head(reg.v2(&format!("app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert!(stored_blobs(&reg).is_empty(), "{:?}", stored_blobs(&reg));
}

#[tokio::test]
async fn range_requests() {
    let reg = Registry::start();
    let c = reg.client();
    let d = push_blob(&reg, &c, "app", b"0123456789").await;
    let url = reg.v2(&format!("app/blobs/{d}"));
    let get = |range: &'static str| c.get(&url).header(header::RANGE, range).send();

    let resp = get("bytes=2-5").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header_of(&resp, "content-range"), "bytes 2-5/10");
    assert_eq!(resp.bytes().await.unwrap(), &b"2345"[..]);
    let resp = get("bytes=-3").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), &b"789"[..]);
    let resp = get("bytes=7-").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), &b"789"[..]);
    let resp = get("bytes=10-").await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header_of(&resp, "content-range"), "bytes */10");
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "accept-ranges"), "bytes");
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = Registry::start();
    let c = reg.client();
    let d = push_blob(&reg, &c, "base/image", b"shared layer").await;
    let resp = c
        .post(reg.v2(&format!("app/blobs/uploads/?mount={d}&from=base/image")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header_of(&resp, "location"), format!("/v2/app/blobs/{d}"));
    let resp = c
        .head(reg.v2(&format!("app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A blob the source does not hold: an ordinary upload session instead.
    let missing = Digest::of(b"elsewhere");
    let resp = c
        .post(reg.v2(&format!(
            "app/blobs/uploads/?mount={missing}&from=base/image"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(header_of(&resp, "location").contains("/blobs/uploads/"));
    // A blob pushed to one repository is not visible in another without a mount.
    let resp = c
        .head(reg.v2(&format!("other/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tags_and_catalog_paginate_with_link_headers() {
    let reg = Registry::start();
    let c = reg.client();
    for tag in ["v3", "v1", "v5", "v2", "v4"] {
        push_image(&reg, &c, "paged", tag).await;
    }
    let mut url = reg.v2("paged/tags/list?n=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let link = resp
            .headers()
            .get(header::LINK)
            .map(|l| l.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["name"], "paged");
        for t in body["tags"].as_array().unwrap() {
            seen.push(t.as_str().unwrap().to_owned());
        }
        pages += 1;
        let Some(link) = link else { break };
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .unwrap()
            .0;
        url = format!("{}{target}", reg.url);
    }
    assert_eq!(seen, ["v1", "v2", "v3", "v4", "v5"]);
    assert_eq!(pages, 3);
    let resp = c
        .get(reg.v2("paged/tags/list?n=2&last=v4"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get(header::LINK).is_none());
    assert_eq!(resp.json::<Value>().await.unwrap()["tags"], json!(["v5"]));

    for repo in ["zeta", "alpha/one", "alpha/two"] {
        push_image(&reg, &c, repo, "latest").await;
    }
    let resp = c.get(reg.v2("_catalog?n=2")).send().await.unwrap();
    assert_eq!(
        header_of(&resp, "link"),
        r#"</v2/_catalog?n=2&last=alpha/two>; rel="next""#
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap()["repositories"],
        json!(["alpha/one", "alpha/two"])
    );
    let resp = c
        .get(reg.v2("_catalog?n=2&last=alpha/two"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["repositories"],
        json!(["paged", "zeta"])
    );
    let resp = c.get(reg.v2("_catalog?n=x")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn manifests_need_their_blobs_and_negotiate_types() {
    let reg = Registry::start();
    let c = reg.client();
    let config = push_blob(&reg, &c, "app", b"{}").await;
    let missing = Digest::of(b"never pushed");
    let m = image_manifest(&config, &missing, json!({}));
    let resp = put_manifest(&reg, &c, "app", "v1", media_type::OCI_MANIFEST, &m).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digest"], missing.to_string());

    // An index whose child manifest is missing is refused the same way.
    let child = push_image(&reg, &c, "app", "child").await;
    let index = |children: &[&Digest]| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": children.iter().map(|d| json!({
                "mediaType": media_type::OCI_MANIFEST, "digest": d.to_string(), "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"}
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    };
    let bad = index(&[&child, &missing]);
    let resp = put_manifest(&reg, &c, "app", "multi", media_type::OCI_INDEX, &bad).await;
    assert_eq!(code(resp).await, "MANIFEST_BLOB_UNKNOWN");
    let good = index(&[&child]);
    let resp = put_manifest(&reg, &c, "app", "multi", media_type::OCI_INDEX, &good).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let digest = Digest::of(&good);
    assert_eq!(
        header_of(&resp, "docker-content-digest"),
        digest.to_string()
    );

    // Content negotiation: an OCI index is not served to a Docker-types-only client.
    let get = |accept: &'static str| {
        c.get(reg.v2("app/manifests/multi"))
            .header(header::ACCEPT, accept)
            .send()
    };
    let resp = get(media_type::DOCKER_MANIFEST_LIST).await.unwrap();
    assert_eq!(code(resp).await, "MANIFEST_UNKNOWN");
    let resp = get(media_type::ACCEPT_MANIFESTS).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "content-type"), media_type::OCI_INDEX);
    assert_eq!(resp.bytes().await.unwrap(), good);
    let resp = c
        .head(reg.v2(&format!("app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "content-length"), good.len().to_string());
    assert_eq!(
        header_of(&resp, "docker-content-digest"),
        digest.to_string()
    );

    // Docker schema 2 keeps its media type.
    let docker = String::from_utf8(image_manifest(&config, &config, json!({})))
        .unwrap()
        .replace(media_type::OCI_MANIFEST, media_type::DOCKER_MANIFEST);
    let resp = put_manifest(
        &reg,
        &c,
        "app",
        "docker",
        media_type::DOCKER_MANIFEST,
        docker.as_bytes(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = c.get(reg.v2("app/manifests/docker")).send().await.unwrap();
    assert_eq!(
        header_of(&resp, "content-type"),
        media_type::DOCKER_MANIFEST
    );

    // A body that is not what the digest in the URL says.
    let resp = put_manifest(
        &reg,
        &c,
        "app",
        &missing.to_string(),
        media_type::OCI_INDEX,
        &good,
    )
    .await;
    assert_eq!(code(resp).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn deletes() {
    let reg = Registry::start();
    let c = reg.client();
    let digest = push_image(&reg, &c, "app", "v1").await;
    let url = reg.v2(&format!("app/manifests/{digest}"));
    c.put(reg.v2("app/manifests/v2"))
        .header(header::CONTENT_TYPE, media_type::OCI_MANIFEST)
        .body(c.get(&url).send().await.unwrap().bytes().await.unwrap())
        .send()
        .await
        .unwrap();
    // Deleting a tag keeps the manifest.
    let resp = c.delete(reg.v2("app/manifests/v2")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(c.get(&url).send().await.unwrap().status(), StatusCode::OK);
    // Deleting the manifest takes its tags.
    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c.get(reg.v2("app/manifests/v1")).send().await.unwrap();
    assert_eq!(code(resp).await, "MANIFEST_UNKNOWN");
    let tags: Value = c
        .get(reg.v2("app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!([]));
    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(code(resp).await, "MANIFEST_UNKNOWN");

    let blob = push_blob(&reg, &c, "app", b"to delete").await;
    let blob_url = reg.v2(&format!("app/blobs/{blob}"));
    assert_eq!(
        c.delete(&blob_url).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.head(&blob_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn referrers_list_and_filter() {
    let reg = Registry::start();
    let c = reg.client();
    let subject = push_image(&reg, &c, "app", "v1").await;
    let empty = push_blob(&reg, &c, "app", b"{}").await;
    let artifact = |kind: &str, note: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2}],
            "subject": {"mediaType": media_type::OCI_MANIFEST, "digest": subject.to_string(), "size": 300},
            "annotations": {"note": note},
        }))
        .unwrap()
    };
    let mut digests = Vec::new();
    for (kind, note) in [
        ("application/vnd.example.signature", "sig"),
        ("application/vnd.example.sbom", "sbom"),
    ] {
        let m = artifact(kind, note);
        let d = Digest::of(&m);
        let resp = put_manifest(
            &reg,
            &c,
            "app",
            &d.to_string(),
            media_type::OCI_MANIFEST,
            &m,
        )
        .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(header_of(&resp, "oci-subject"), subject.to_string());
        digests.push(d);
    }
    let resp = c
        .get(reg.v2(&format!("app/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, "content-type"), media_type::OCI_INDEX);
    assert!(resp.headers().get("oci-filters-applied").is_none());
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);

    let resp = c
        .get(reg.v2(&format!(
            "app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(header_of(&resp, "oci-filters-applied"), "artifactType");
    let index: Value = resp.json().await.unwrap();
    let only = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(only["digest"], digests[1].to_string());
    assert_eq!(only["artifactType"], "application/vnd.example.sbom");
    assert_eq!(only["annotations"]["note"], "sbom");
    assert_eq!(only["mediaType"], media_type::OCI_MANIFEST);

    // A digest nobody refers to: an empty index, not an error.
    let resp = c
        .get(reg.v2(&format!("app/referrers/{}", Digest::of(b"x"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["manifests"], json!([]));
}

#[tokio::test]
async fn abandoned_and_cut_uploads_leave_no_blob() {
    let reg = Registry::start();
    let c = reg.client();
    let content = vec![7u8; 300_000];
    let digest = Digest::of(&content);

    // A session that received half the blob and was never finished.
    let resp = c.post(reg.v2("app/blobs/uploads/")).send().await.unwrap();
    let location = header_of(&resp, "location");
    c.patch(format!("{}{location}", reg.url))
        .body(content[..150_000].to_vec())
        .send()
        .await
        .unwrap();

    // A PATCH cut mid-body: the client announces 300000 bytes and dies after 100000.
    let resp = c.post(reg.v2("app/blobs/uploads/")).send().await.unwrap();
    let cut_location = header_of(&resp, "location");
    let mut tcp = std::net::TcpStream::connect(&reg.host).unwrap();
    write!(
        tcp,
        "PATCH {cut_location} HTTP/1.1\r\nHost: {}\r\nContent-Length: 300000\r\n\r\n",
        reg.host
    )
    .unwrap();
    tcp.write_all(&content[..100_000]).unwrap();
    tcp.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(tcp);

    // The process dies (its runtime is torn down mid-flight) and starts again.
    let reg = reg.restart();
    let c = reg.client();
    let resp = c
        .head(reg.v2(&format!("app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(stored_blobs(&reg).is_empty(), "{:?}", stored_blobs(&reg));

    // The first session is still there, resumable, and the cut one holds only what
    // arrived; both finish with digest verification (the hash recomputed from disk).
    let url = format!("{}{location}", reg.url);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(header_of(&resp, "range"), "0-149999");
    let resp = c
        .put(format!("{url}?digest={digest}"))
        .body(content[150_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cut = format!("{}{cut_location}", reg.url);
    let resp = c.get(&cut).send().await.unwrap();
    let held: u64 = header_of(&resp, "range")
        .split_once('-')
        .unwrap()
        .1
        .parse::<u64>()
        .unwrap()
        + 1;
    assert!(held <= 100_000, "{held}");
    let resp = c
        .put(format!("{cut}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(resp).await, "DIGEST_INVALID");
    assert_eq!(stored_blobs(&reg), [digest.hex().to_owned()]);
    let mut file = std::fs::File::open(reg.root.join("blobs/sha256").join(digest.hex())).unwrap();
    let mut on_disk = Vec::new();
    file.read_to_end(&mut on_disk).unwrap();
    assert_eq!(on_disk, content);
}

#[tokio::test]
async fn basic_and_bearer_auth() {
    let reg = Registry::with(Options {
        auth: true,
        ..Options::default()
    });
    let c = reg.client();
    let resp = c.get(reg.v2("")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = header_of(&resp, "www-authenticate");
    assert_eq!(
        challenge,
        format!(
            r#"Bearer realm="{}/token",service="skiff-registry""#,
            reg.url
        )
    );
    assert_eq!(code(resp).await, "UNAUTHORIZED");
    let resp = c.get(reg.v2("app/tags/list")).send().await.unwrap();
    assert!(header_of(&resp, "www-authenticate").ends_with(r#"scope="repository:app:pull""#));

    // The token flow, as docker and skopeo do it.
    let token_url = format!(
        "{}/token?service=skiff-registry&scope=repository:app:pull,push",
        reg.url
    );
    let resp = c
        .get(&token_url)
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c.get(&token_url).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "no anonymous tokens"
    );
    let resp = c
        .get(&token_url)
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["access_token"], token);
    assert_eq!(body["expires_in"], 300);

    let d = Digest::of(b"x");
    let resp = c
        .post(reg.v2(&format!("app/blobs/uploads/?digest={d}")))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The token is for `app` only.
    let resp = c
        .get(reg.v2("other/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(resp).await, "DENIED");
    let resp = c
        .get(reg.v2(""))
        .bearer_auth("forged.token.here")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Basic credentials straight to the API work too.
    let resp = c
        .head(reg.v2(&format!("app/blobs/{d}")))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c
        .head(reg.v2(&format!("app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn anonymous_pull_but_authenticated_push() {
    let reg = Registry::with(Options {
        auth: true,
        anonymous_pull: true,
        tls: true,
    });
    assert!(reg.url.starts_with("https://"));
    let c = reg.client();
    let d = Digest::of(b"public");
    let resp = c
        .post(reg.v2(&format!("app/blobs/uploads/?digest={d}")))
        .body("public")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(header_of(&resp, "www-authenticate").contains(&format!("realm=\"{}/token\"", reg.url)));
    let resp = c
        .post(reg.v2(&format!("app/blobs/uploads/?digest={d}")))
        .basic_auth("alice", Some(PASSWORD))
        .body("public")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = c
        .get(reg.v2(&format!("app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), &b"public"[..]);
    // An anonymous token carries pull only.
    let resp = c
        .get(format!("{}/token?scope=repository:app:pull,push", reg.url))
        .send()
        .await
        .unwrap();
    let token = resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = c
        .post(reg.v2("app/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
