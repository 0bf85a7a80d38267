//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use skiff_images::manifest::{is_index_type, is_manifest_type};

use super::{ApiError, Req};
use crate::core::{parse_reference, CoreError, Registry, MAX_MANIFEST_SIZE};
use crate::name::RepoName;

/// True when the client's `Accept` rules out `media_type`.
///
/// Only an `Accept` that names manifest types is a negotiation; a client sending none, or
/// only generic types, gets what was pushed. An OCI index asked for by a client that only
/// knows Docker types is then MANIFEST_UNKNOWN, as Docker's registry answers.
fn refused_by_accept(req: &Req, media_type: &str) -> bool {
    let accepted: Vec<&str> = req
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    let negotiating = accepted
        .iter()
        .any(|t| is_manifest_type(t) || is_index_type(t));
    negotiating && !accepted.iter().any(|t| *t == media_type || *t == "*/*")
}

/// Serves a manifest with its media type and digest; HEAD without the body.
pub(super) async fn get(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
    req: Req,
) -> Result<Response, ApiError> {
    let reference = parse_reference(reference)?;
    let m = reg.get_manifest(repo, &reference).await?;
    if refused_by_accept(&req, &m.media_type) {
        return Err(CoreError::ManifestUnknown {
            repo: repo.clone(),
            reference: format!(
                "{reference} (stored as {}, which the Accept header excludes)",
                m.media_type
            ),
        }
        .into());
    }
    let len = m.bytes.len();
    let body = if req.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(m.bytes)
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, len)
        .header("docker-content-digest", m.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", m.digest))
        .body(body)
        .expect("valid headers"))
}

/// Stores a manifest (201 with its digest, and `OCI-Subject` for referrers).
pub(super) async fn put(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
    req: Req,
) -> Result<Response, ApiError> {
    let reference = parse_reference(reference)?;
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_owned);
    let bytes = axum::body::to_bytes(req.body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|e| {
            CoreError::SizeInvalid(format!(
                "reading the manifest failed ({e}); manifests are limited to {MAX_MANIFEST_SIZE} bytes"
            ))
        })?;
    let pushed = reg
        .put_manifest(repo, &reference, content_type.as_deref(), &bytes)
        .await?;
    let mut resp = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION.as_str(),
                format!("/v2/{repo}/manifests/{}", pushed.digest),
            ),
            ("docker-content-digest", pushed.digest.to_string()),
        ],
    )
        .into_response();
    if let Some(subject) = pushed.subject {
        resp.headers_mut().insert(
            "oci-subject",
            subject.to_string().parse().expect("digests are ascii"),
        );
    }
    Ok(resp)
}

/// Deletes a manifest by digest, or a tag (202).
pub(super) async fn delete(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
) -> Result<Response, ApiError> {
    reg.delete_manifest(repo, &parse_reference(reference)?)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
