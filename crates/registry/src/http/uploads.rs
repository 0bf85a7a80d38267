//! `POST /v2/<name>/blobs/uploads/` (session, monolithic, mount) and
//! `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{authorize, upload_range, ApiError, AppState, Req};
use crate::auth::Action;
use crate::core::{parse_digest, parse_repo, CoreError, Registry, UploadStatus};
use crate::name::RepoName;

/// 202 with where the upload stands.
fn accepted(repo: &RepoName, status: &UploadStatus) -> Response {
    let mut h = HeaderMap::new();
    let location = format!("/v2/{repo}/blobs/uploads/{}", status.id);
    for (k, v) in [
        (header::LOCATION.as_str(), location),
        (header::RANGE.as_str(), upload_range(status.size)),
        ("docker-upload-uuid", status.id.clone()),
    ] {
        h.insert(
            header::HeaderName::from_static(k),
            v.parse().expect("ascii header"),
        );
    }
    (StatusCode::ACCEPTED, h).into_response()
}

/// 201 for a blob now in the repository.
fn created(repo: &RepoName, digest: &skiff_images::Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION.as_str(),
                format!("/v2/{repo}/blobs/{digest}"),
            ),
            ("docker-content-digest", digest.to_string()),
        ],
    )
        .into_response()
}

/// Starts an upload; with `digest=` takes the whole blob now; with `mount=&from=` links
/// it from another repository the client may pull, starting a session when it cannot.
pub(super) async fn post(
    state: &AppState,
    repo: &RepoName,
    req: Req,
) -> Result<Response, ApiError> {
    let reg = &state.registry;
    if let (Some(mount), Some(from)) = (req.query.get("mount"), req.query.get("from")) {
        let digest = parse_digest(mount)?;
        if let Ok(from) = parse_repo(from) {
            let may_pull = authorize(
                state,
                &req.headers,
                Some(("repository", from.as_str(), Action::Pull)),
            )
            .await
            .is_ok();
            if may_pull && reg.mount_blob(repo, &digest, &from).await? {
                return Ok(created(repo, &digest));
            }
        }
    } else if let Some(digest) = req.query.get("digest") {
        let digest = digest.to_owned();
        let mut body = Req::reader(req.body);
        let stored = reg.upload_monolithic(repo, &digest, &mut body).await?;
        return Ok(created(repo, &stored));
    }
    let status = reg.start_upload(repo).await?;
    Ok(accepted(repo, &status))
}

/// Where the chunk starts per `Content-Range` (`<start>-<end>`, optionally with a `bytes`
/// unit as some clients send it).
fn chunk_start(req: &Req) -> Result<Option<u64>, CoreError> {
    let Some(v) = req.header(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let v = v.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    v.split_once('-')
        .and_then(|(start, _)| start.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| CoreError::UploadInvalid(format!("invalid Content-Range {v:?}")))
}

/// Upload status (204 with `Range`).
pub(super) async fn status(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
) -> Result<Response, ApiError> {
    let status = reg.upload_status(repo, id).await?;
    let mut resp = accepted(repo, &status);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// Appends a chunk (202); 416 when it does not start where the upload ends.
pub(super) async fn patch(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    req: Req,
) -> Result<Response, ApiError> {
    let start = chunk_start(&req)?;
    let mut body = Req::reader(req.body);
    let status = reg.patch_upload(repo, id, start, &mut body).await?;
    Ok(accepted(repo, &status))
}

/// Finishes an upload with the digest the client claims (201), or 400 DIGEST_INVALID.
pub(super) async fn put(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    req: Req,
) -> Result<Response, ApiError> {
    let digest = req.query.get("digest").map(str::to_owned);
    // The last chunk may be empty; appending nothing keeps the running hash as it is.
    let mut body = Req::reader(req.body);
    let stored = reg
        .finish_upload(repo, id, digest.as_deref(), Some(&mut body))
        .await?;
    Ok(created(repo, &stored))
}

/// Cancels an upload (204).
pub(super) async fn delete(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
) -> Result<Response, ApiError> {
    reg.cancel_upload(repo, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
