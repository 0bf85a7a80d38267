//! The HTTP face of the registry: requests are parsed into a [`Route`], checked against the
//! access policy, and handed to the core; handlers only translate headers and bodies.
//!
//! Repository names contain slashes, so `/v2/...` paths are parsed from the right
//! (`.../manifests/<ref>`, `.../blobs/uploads/<id>`, `.../tags/list`) instead of with
//! router patterns.

mod blobs;
mod error;
mod manifests;
mod referrers;
mod tags;
mod token;
mod uploads;

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::TryStreamExt;
use tokio_util::io::StreamReader;

use crate::auth::{Action, Authenticator};
use crate::core::{parse_repo, Registry};
use crate::errcode::ErrorCode;
use crate::name::RepoName;

pub use error::ApiError;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The protocol core.
    pub registry: Arc<Registry>,
    /// The access policy; `None` when the registry is open to all.
    pub auth: Option<Arc<Authenticator>>,
    /// Whether clients reach us over TLS (for the realm URL).
    pub tls: bool,
}

/// The resource a `/v2/` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/token` or `/v2/token`: the bearer token endpoint.
    Token,
    /// `/v2/<name>/tags/list`.
    Tags(String),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(String, String),
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart(String),
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload(String, String),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(String, String),
}

impl Route {
    /// Parses a request path; `None` for anything the API does not define.
    pub fn parse(path: &str) -> Option<Self> {
        if path == "/token" {
            return Some(Self::Token);
        }
        let rest = path.strip_prefix("/v2")?;
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        match rest {
            "" => return Some(Self::Base),
            "_catalog" => return Some(Self::Catalog),
            "token" => return Some(Self::Token),
            _ => {}
        }
        let trimmed = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(name) = trimmed.strip_suffix("/tags/list") {
            return Some(Self::Tags(name.to_owned()));
        }
        if let Some(name) = trimmed.strip_suffix("/blobs/uploads") {
            return Some(Self::UploadStart(name.to_owned()));
        }
        let (head, last) = trimmed.rsplit_once('/')?;
        let (name, kind) = head.rsplit_once('/')?;
        let (name, last) = (name.to_owned(), last.to_owned());
        match kind {
            "manifests" => Some(Self::Manifest(name, last)),
            "referrers" => Some(Self::Referrers(name, last)),
            "blobs" => Some(Self::Blob(name, last)),
            "uploads" => {
                let name = name.strip_suffix("/blobs")?;
                Some(Self::Upload(name.to_owned(), last))
            }
            _ => None,
        }
    }

    /// The repository and action a request on this route needs; `None` for routes only
    /// needing an authenticated client (`/v2/`) or none at all (the token endpoint).
    fn access(&self, method: &Method) -> Option<(&str, &str, Action)> {
        let write = |m: &Method| {
            if m == Method::DELETE {
                Action::Delete
            } else if m == Method::GET || m == Method::HEAD {
                Action::Pull
            } else {
                Action::Push
            }
        };
        match self {
            Self::Base | Self::Token => None,
            Self::Catalog => Some(("registry", "catalog", Action::Pull)),
            Self::Tags(n) | Self::Referrers(n, _) => Some(("repository", n, Action::Pull)),
            Self::Manifest(n, _) | Self::Blob(n, _) => Some(("repository", n, write(method))),
            // Uploads are push all the way, even their status and cancellation.
            Self::UploadStart(n) | Self::Upload(n, _) => Some(("repository", n, Action::Push)),
        }
    }
}

/// The router: every path goes through [`handle`].
pub fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// The parsed query string.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of `key`.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One request, taken apart.
pub(crate) struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    pub body: Body,
}

impl Req {
    /// A header as a string.
    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as an async reader.
    pub(crate) fn reader(body: Body) -> impl tokio::io::AsyncRead + Send + Unpin {
        StreamReader::new(body.into_data_stream().map_err(io::Error::other))
    }
}

/// The `Range` value of an upload holding `size` bytes, as Docker's registry writes it.
pub(crate) fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn repo(name: &str) -> Result<RepoName, ApiError> {
    parse_repo(name).map_err(ApiError::from)
}

/// The token endpoint's URL as the client reaches us.
fn realm(state: &AppState, headers: &HeaderMap) -> String {
    // The Host the client used (it reached us that way), unless it would break the quoting.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.contains(['"', ',', ' ']))
        .unwrap_or("localhost");
    let scheme = if state.tls { "https" } else { "http" };
    format!("{scheme}://{host}/token")
}

/// Runs the access policy off the async threads (bcrypt is slow by design).
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    need: Option<(&str, &str, Action)>,
) -> Result<(), ApiError> {
    let Some(auth) = state.auth.clone() else {
        return Ok(());
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let need = need.map(|(k, n, a)| (k.to_owned(), n.to_owned(), a));
    let result = tokio::task::spawn_blocking(move || {
        auth.authorize(
            authorization.as_deref(),
            need.as_ref().map(|(k, n, a)| (k.as_str(), n.as_str(), *a)),
        )
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Unknown, e.to_string()))?;
    result.map_err(|e| ApiError::auth(e, &realm(state, headers)))
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let mut resp = match dispatch(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn dispatch(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let route = Route::parse(parts.uri.path()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unsupported,
            "no such endpoint of the distribution API",
        )
        .status(StatusCode::NOT_FOUND)
    })?;
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query: Query::parse(parts.uri.query()),
        body,
    };
    if route != Route::Token {
        authorize(state, &req.headers, route.access(&req.method)).await?;
    }
    let reg = &state.registry;
    let m = req.method.clone();
    match route {
        Route::Base if m == Method::GET || m == Method::HEAD => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        Route::Token if m == Method::GET => token::get(state, req).await,
        Route::Catalog if m == Method::GET => tags::catalog(reg, req).await,
        Route::Tags(n) if m == Method::GET => tags::list(reg, &repo(&n)?, req).await,
        Route::Manifest(n, r) => match m {
            Method::GET | Method::HEAD => manifests::get(reg, &repo(&n)?, &r, req).await,
            Method::PUT => manifests::put(reg, &repo(&n)?, &r, req).await,
            Method::DELETE => manifests::delete(reg, &repo(&n)?, &r).await,
            _ => Err(not_allowed(&m)),
        },
        Route::Blob(n, d) => match m {
            Method::GET | Method::HEAD => blobs::get(reg, &repo(&n)?, &d, req).await,
            Method::DELETE => blobs::delete(reg, &repo(&n)?, &d).await,
            _ => Err(not_allowed(&m)),
        },
        Route::UploadStart(n) if m == Method::POST => uploads::post(state, &repo(&n)?, req).await,
        Route::Upload(n, id) => match m {
            Method::GET => uploads::status(reg, &repo(&n)?, &id).await,
            Method::PATCH => uploads::patch(reg, &repo(&n)?, &id, req).await,
            Method::PUT => uploads::put(reg, &repo(&n)?, &id, req).await,
            Method::DELETE => uploads::delete(reg, &repo(&n)?, &id).await,
            _ => Err(not_allowed(&m)),
        },
        Route::Referrers(n, d) if m == Method::GET => {
            referrers::get(reg, &repo(&n)?, &d, req).await
        }
        _ => Err(not_allowed(&m)),
    }
}

fn not_allowed(m: &Method) -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        format!("method {m} is not supported on this endpoint"),
    )
    .status(StatusCode::METHOD_NOT_ALLOWED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_from_the_right() {
        let p = |s| Route::parse(s);
        assert_eq!(p("/v2/"), Some(Route::Base));
        assert_eq!(p("/v2"), Some(Route::Base));
        assert_eq!(p("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(p("/token"), Some(Route::Token));
        assert_eq!(p("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            p("/v2/x/manifests/y/manifests/latest"),
            Some(Route::Manifest("x/manifests/y".into(), "latest".into()))
        );
        assert_eq!(
            p("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            p("/v2/a/b/blobs/uploads/0123"),
            Some(Route::Upload("a/b".into(), "0123".into()))
        );
        assert_eq!(
            p("/v2/a/blobs/sha256:00"),
            Some(Route::Blob("a".into(), "sha256:00".into()))
        );
        assert_eq!(
            p("/v2/a/referrers/sha256:00"),
            Some(Route::Referrers("a".into(), "sha256:00".into()))
        );
        assert_eq!(p("/v2/a/uploads/x"), None);
        assert_eq!(p("/v2/a"), None);
        assert_eq!(p("/other"), None);
    }
}
