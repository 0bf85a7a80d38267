//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::{ApiError, Req};
use crate::core::{parse_digest, ByteRange, Registry};
use crate::name::RepoName;

/// Read size when streaming a blob out.
const READ_CHUNK: usize = 256 << 10;

/// Serves a blob, or the `Range` asked for (206); HEAD answers with headers only.
pub(super) async fn get(
    reg: &Registry,
    repo: &RepoName,
    digest: &str,
    req: Req,
) -> Result<Response, ApiError> {
    let digest = parse_digest(digest)?;
    let common = |b: axum::http::response::Builder, len: u64| {
        b.header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .header(header::ACCEPT_RANGES, "bytes")
            .header("docker-content-digest", digest.to_string())
            .header(header::ETAG, format!("\"{digest}\""))
    };
    if req.method == Method::HEAD {
        let size = reg.stat_blob(repo, &digest).await?;
        return Ok(common(Response::builder(), size)
            .body(Body::empty())
            .expect("valid headers"));
    }
    let range = req.header(header::RANGE).and_then(ByteRange::parse);
    let blob = reg.get_blob(repo, &digest, range).await?;
    let body = Body::from_stream(ReaderStream::with_capacity(blob.reader, READ_CHUNK));
    let resp = match blob.range {
        None => common(Response::builder().status(StatusCode::OK), blob.size),
        Some((offset, len)) => common(Response::builder().status(StatusCode::PARTIAL_CONTENT), len)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {offset}-{}/{}", offset + len - 1, blob.size),
            ),
    };
    Ok(resp.body(body).expect("valid headers"))
}

/// Removes the blob from the repository (202).
pub(super) async fn delete(
    reg: &Registry,
    repo: &RepoName,
    digest: &str,
) -> Result<Response, ApiError> {
    reg.delete_blob(repo, &parse_digest(digest)?).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
