//! An OCI distribution API client bound to one repository, with Basic and Bearer auth.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::auth::{parse_challenge, Challenge, Credentials};
use super::{error_chain, RegistryError};
use crate::digest::Digest;
use crate::manifest::media_type;

/// The host serving the API for a reference's registry (Docker Hub's differs from its name).
pub fn api_host(registry: &str) -> &str {
    if registry == crate::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// A session with one repository of one registry.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    registry: String,
    repository: String,
    actions: &'static str,
    credentials: Option<Credentials>,
    challenge: Option<Challenge>,
    authorization: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Client {
    /// Finds the endpoint (https, or http when `insecure`), and authenticates for `actions`.
    ///
    /// `repository` may be empty (login: only checks the credentials).
    pub async fn connect(
        registry: &str,
        repository: &str,
        actions: &'static str,
        credentials: Option<Credentials>,
        insecure: bool,
    ) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| RegistryError::Http {
                registry: registry.to_owned(),
                detail: error_chain(&e),
            })?;
        let host = api_host(registry);
        let https = Url::parse(&format!("https://{host}/"))
            .map_err(|_| RegistryError::InvalidUrl(host.to_owned()))?;
        let (base, ping) = match http
            .get(https.join("v2/").expect("static path"))
            .send()
            .await
        {
            Ok(resp) => (https, resp),
            Err(e) if insecure => {
                tracing::debug!(
                    registry,
                    "https failed ({}), trying plain http",
                    error_chain(&e)
                );
                let plain = Url::parse(&format!("http://{host}/"))
                    .map_err(|_| RegistryError::InvalidUrl(host.to_owned()))?;
                match http
                    .get(plain.join("v2/").expect("static path"))
                    .send()
                    .await
                {
                    Ok(resp) => (plain, resp),
                    Err(e2) => {
                        return Err(RegistryError::Unreachable {
                            registry: registry.to_owned(),
                            detail: format!(
                                "https: {}; http: {}",
                                error_chain(&e),
                                error_chain(&e2)
                            ),
                            hint: String::new(),
                        })
                    }
                }
            }
            Err(e) => return Err(RegistryError::Unreachable {
                registry: registry.to_owned(),
                detail: error_chain(&e),
                hint:
                    "; if it is a plain-HTTP registry (such as one on 127.0.0.1), pass --insecure"
                        .into(),
            }),
        };
        let challenge = if ping.status() == StatusCode::UNAUTHORIZED {
            ping.headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
        } else {
            None
        };
        let client = Self {
            http,
            base,
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            actions,
            credentials,
            challenge,
            authorization: Mutex::new(None),
        };
        match (&client.challenge, ping.status()) {
            (None, s) if s.is_success() => {}
            (None, StatusCode::UNAUTHORIZED) => return Err(client.auth_required()),
            (None, s) => {
                return Err(RegistryError::Http {
                    registry: registry.to_owned(),
                    detail: format!(
                        "GET /v2/ answered {s}: this does not look like an OCI registry"
                    ),
                })
            }
            (Some(_), _) => {
                client.authenticate().await?;
                // Basic credentials are only checked by using them.
                if matches!(client.challenge, Some(Challenge::Basic)) {
                    let resp = client.send(|| client.request(Method::GET, "v2/")).await?;
                    if resp.status() == StatusCode::UNAUTHORIZED {
                        return Err(client.auth_failed());
                    }
                }
            }
        }
        Ok(client)
    }

    /// The base URL (`https://host/` or `http://host/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn auth_required(&self) -> RegistryError {
        RegistryError::AuthRequired {
            registry: self.registry.clone(),
        }
    }

    fn auth_failed(&self) -> RegistryError {
        RegistryError::AuthFailed {
            registry: self.registry.clone(),
        }
    }

    /// Obtains the Authorization header value for the current challenge.
    async fn authenticate(&self) -> Result<(), RegistryError> {
        let header = match &self.challenge {
            None => return Ok(()),
            Some(Challenge::Basic) => match &self.credentials {
                Some(c) => c.basic_header(),
                None => return Err(self.auth_required()),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let mut url =
                    Url::parse(realm).map_err(|_| RegistryError::InvalidUrl(realm.clone()))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    if !self.repository.is_empty() {
                        q.append_pair(
                            "scope",
                            &format!("repository:{}:{}", self.repository, self.actions),
                        );
                    }
                }
                let mut req = self.http.get(url);
                if let Some(c) = &self.credentials {
                    req = req.header(AUTHORIZATION, c.basic_header());
                }
                let resp = req.send().await.map_err(|e| self.http_err(e))?;
                match resp.status() {
                    s if s.is_success() => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                        if self.credentials.is_some() =>
                    {
                        return Err(self.auth_failed())
                    }
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(self.auth_required())
                    }
                    s => {
                        return Err(RegistryError::Http {
                            registry: self.registry.clone(),
                            detail: format!("token endpoint {realm} answered {s}"),
                        })
                    }
                }
                let token: TokenResponse = resp.json().await.map_err(|e| self.http_err(e))?;
                match token.token.or(token.access_token) {
                    Some(t) if !t.is_empty() => format!("Bearer {t}"),
                    _ => {
                        return Err(RegistryError::Http {
                            registry: self.registry.clone(),
                            detail: format!("token endpoint {realm} returned no token"),
                        })
                    }
                }
            }
        };
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(header);
        Ok(())
    }

    fn http_err(&self, e: reqwest::Error) -> RegistryError {
        RegistryError::Http {
            registry: self.registry.clone(),
            detail: error_chain(&e),
        }
    }

    /// A request to `path` (relative to the base, or absolute) with the current auth.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        self.request_url(method, url)
    }

    pub(crate) fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        let mut req = self.http.request(method, url);
        if let Some(h) = self
            .authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            req = req.header(AUTHORIZATION, h.clone());
        }
        req
    }

    /// Sends a request; on 401 with a bearer challenge (expired token) re-authenticates once.
    pub(crate) async fn send(
        &self,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let resp = make().send().await.map_err(|e| self.http_err(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED
            && matches!(self.challenge, Some(Challenge::Bearer { .. }))
        {
            self.authenticate().await?;
            return make().send().await.map_err(|e| self.http_err(e));
        }
        Ok(resp)
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("v2/{}/{rest}", self.repository)
    }

    /// Turns an error response into a [`RegistryError`], naming `what`.
    pub(crate) async fn error(&self, resp: Response, what: &str) -> RegistryError {
        self.error_for(resp, what, false).await
    }

    /// Like [`Self::error`]; for manifests, "not found" in any spelling is `ManifestUnknown`.
    async fn error_for(&self, resp: Response, what: &str, manifest: bool) -> RegistryError {
        let status = resp.status();
        let body: ErrorBody = resp.json().await.unwrap_or_default();
        let first = body.errors.into_iter().next();
        let code = first.as_ref().map(|e| e.code.as_str()).unwrap_or("");
        match (status, code) {
            (_, "MANIFEST_UNKNOWN") => RegistryError::ManifestUnknown(what.to_owned()),
            (StatusCode::NOT_FOUND, _) if manifest => {
                RegistryError::ManifestUnknown(what.to_owned())
            }
            (_, "NAME_UNKNOWN") => RegistryError::NameUnknown(what.to_owned()),
            (StatusCode::UNAUTHORIZED, _) if self.credentials.is_some() => self.auth_failed(),
            (StatusCode::UNAUTHORIZED, _) | (StatusCode::FORBIDDEN, _) => RegistryError::Denied {
                what: what.to_owned(),
                registry: self.registry.clone(),
            },
            _ => RegistryError::Registry {
                what: what.to_owned(),
                status: status.as_u16(),
                code: code.to_owned(),
                message: first.map(|e| e.message).unwrap_or_default(),
            },
        }
    }

    /// GETs a manifest by tag or digest; returns body, content type and Docker-Content-Digest.
    pub async fn get_manifest(
        &self,
        reference: &str,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<Digest>), RegistryError> {
        let path = self.repo_path(&format!("manifests/{reference}"));
        let resp = self
            .send(|| {
                self.request(Method::GET, &path)
                    .header(ACCEPT, media_type::ACCEPT_MANIFESTS)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.error_for(resp, what, true).await);
        }
        let (ct, digest) = content_headers(resp.headers());
        let body = resp.bytes().await.map_err(|e| self.http_err(e))?;
        if body.len() > 4 << 20 {
            return Err(RegistryError::Registry {
                what: what.to_owned(),
                status: 200,
                code: String::new(),
                message: "manifest larger than 4 MiB".into(),
            });
        }
        Ok((body.to_vec(), ct, digest))
    }

    /// GETs a blob (following redirects to storage backends).
    pub async fn get_blob(&self, digest: &Digest) -> Result<Response, RegistryError> {
        let path = self.repo_path(&format!("blobs/{digest}"));
        let resp = self.send(|| self.request(Method::GET, &path)).await?;
        if !resp.status().is_success() {
            return Err(self.error(resp, &format!("blob {digest}")).await);
        }
        Ok(resp)
    }

    /// HEADs a blob: true when the registry has it.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let path = self.repo_path(&format!("blobs/{digest}"));
        let resp = self.send(|| self.request(Method::HEAD, &path)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error(resp, &format!("blob {digest}")).await),
        }
    }

    /// Starts an upload session (POST) and returns the URL to PUT the blob to.
    pub async fn start_upload(&self, digest: &Digest) -> Result<Url, RegistryError> {
        let path = self.repo_path("blobs/uploads/");
        let resp = self
            .send(|| self.request(Method::POST, &path).header(CONTENT_LENGTH, 0))
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.error(resp, &format!("upload of {digest}")).await);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Registry {
                what: format!("upload of {digest}"),
                status: 202,
                code: String::new(),
                message: "no Location header in upload response".into(),
            })?;
        upload_url(resp.url(), location, digest)
    }

    /// PUTs a whole blob to an upload URL from [`Self::start_upload`].
    pub async fn finish_upload(
        &self,
        url: Url,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let resp = self
            .request_url(Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| self.http_err(e))?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.error(resp, &format!("upload of {digest}")).await);
        }
        Ok(())
    }

    /// PUTs a manifest under a tag or digest; returns the registry's Docker-Content-Digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: &[u8],
        what: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let path = self.repo_path(&format!("manifests/{reference}"));
        let resp = self
            .send(|| {
                self.request(Method::PUT, &path)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.to_vec())
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.error(resp, what).await);
        }
        Ok(content_headers(resp.headers()).1)
    }
}

fn content_headers(h: &HeaderMap) -> (Option<String>, Option<Digest>) {
    let ct = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
    let digest = h
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    (ct, digest)
}

/// Resolves an upload `Location` (absolute, or relative to the POST URL) and adds `digest=`,
/// keeping any query the registry put there (its upload state).
pub fn upload_url(
    request_url: &Url,
    location: &str,
    digest: &Digest,
) -> Result<Url, RegistryError> {
    let mut url = request_url
        .join(location)
        .map_err(|_| RegistryError::InvalidUrl(location.to_owned()))?;
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations() {
        let d = Digest::of(b"x");
        let post = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        let u = upload_url(&post, "/v2/a/b/blobs/uploads/uuid?_state=abc%3D", &d).unwrap();
        assert_eq!(
            u.as_str(),
            format!(
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid?_state=abc%3D&digest=sha256%3A{}",
                d.hex()
            )
        );
        let u = upload_url(&post, "https://other.example/upload/1", &d).unwrap();
        assert_eq!(
            u.as_str(),
            format!("https://other.example/upload/1?digest=sha256%3A{}", d.hex())
        );
        let u = upload_url(&post, "uuid2", &d).unwrap();
        assert!(u
            .as_str()
            .starts_with("http://127.0.0.1:5000/v2/a/b/blobs/uploads/uuid2?digest="));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("localhost:5000"), "localhost:5000");
    }
}
