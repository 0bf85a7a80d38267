//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`: an OCI index of the manifests
//! whose `subject` is the digest.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use skiff_images::manifest::media_type::OCI_INDEX;

use super::{ApiError, Req};
use crate::core::{parse_digest, Registry};
use crate::name::RepoName;

/// Lists referrers, filtered by `artifactType` when given.
pub(super) async fn get(
    reg: &Registry,
    repo: &RepoName,
    digest: &str,
    req: Req,
) -> Result<Response, ApiError> {
    let subject = parse_digest(digest)?;
    let artifact_type = req.query.get("artifactType").filter(|t| !t.is_empty());
    let found = reg.referrers(repo, &subject, artifact_type).await?;
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": found.manifests,
    });
    let mut resp = ([(header::CONTENT_TYPE, OCI_INDEX)], body.to_string()).into_response();
    if found.filtered {
        resp.headers_mut().insert(
            "oci-filters-applied",
            header::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
