//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`/`last` pagination and a
//! `Link: <...>; rel="next"` header when more entries follow.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, Req};
use crate::core::{Page, Paged, Registry};
use crate::name::RepoName;

fn page(req: &Req) -> Result<Page, ApiError> {
    Ok(Page::parse(req.query.get("n"), req.query.get("last"))?)
}

/// The JSON body, plus the `Link` to the next page (the spec's relative form).
fn respond(body: serde_json::Value, paged: &Paged, path: &str, page: &Page) -> Response {
    let mut resp = Json(body).into_response();
    if let (Some(next), Some(n)) = (&paged.next, page.n) {
        let link = format!(r#"<{path}?n={n}&last={next}>; rel="next""#);
        resp.headers_mut().insert(
            header::LINK,
            link.parse().expect("names and tags are ascii"),
        );
    }
    resp
}

/// Lists a repository's tags.
pub(super) async fn list(reg: &Registry, repo: &RepoName, req: Req) -> Result<Response, ApiError> {
    let page = page(&req)?;
    let paged = reg.list_tags(repo, &page).await?;
    let body = json!({ "name": repo.to_string(), "tags": paged.items });
    Ok(respond(
        body,
        &paged,
        &format!("/v2/{repo}/tags/list"),
        &page,
    ))
}

/// Lists repositories.
pub(super) async fn catalog(reg: &Registry, req: Req) -> Result<Response, ApiError> {
    let page = page(&req)?;
    let paged = reg.catalog(&page).await?;
    let body = json!({ "repositories": paged.items });
    Ok(respond(body, &paged, "/v2/_catalog", &page))
}
