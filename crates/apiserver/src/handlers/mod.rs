//! The HTTP layer: authenticates and authorizes each request, then routes it to discovery,
//! OpenAPI, health, or the generic resource handlers. Handlers only translate between HTTP
//! and the registry, storage and strategies.

mod discovery;
mod node_proxy;
mod objects;
mod openapi;
mod proxy;
mod reviews;
mod subresources;
mod watch;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::authn::UserInfo;
use crate::authz::{self, Attributes, Authorizer, Decision, ResourceAttributes};
use crate::cache::Reflector;
use crate::impersonation::Impersonation;
use crate::protobuf;
use crate::rbac::Rbac;
use crate::registry::{Registry, ResourceDef};
use crate::request::{negotiate, Query, Representation, RequestInfo};
use crate::schema::Schemas;
use crate::serviceaccount::TokenIssuer;
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

pub use node_proxy::kubelet_client_config;
pub(crate) use node_proxy::kubelet_get;
pub(crate) use objects::{now_rfc3339, random_suffix};

/// The body of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted, as kube-apiserver's 3 MiB limit.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// The Kubernetes version skiff's API level corresponds to (k8s-openapi's `v1_37`).
pub const KUBERNETES_MINOR: &str = "37";

/// Everything a request handler needs: storage, the registry, the authorizer and the
/// lazily generated schemas.
pub struct Api {
    storage: Storage,
    registry: &'static Registry,
    authorizer: Box<dyn Authorizer>,
    rbac: Arc<Rbac>,
    reflector: Arc<Reflector>,
    tokens: Arc<TokenIssuer>,
    /// The definitions of the built-in kinds, generated on first use.
    builtin_schemas: OnceLock<Arc<Schemas>>,
    /// The definitions with those of custom resources, for one registry generation.
    schemas: Mutex<Option<(u64, Arc<Schemas>)>>,
    /// The OpenAPI documents, for one registry generation.
    openapi: Mutex<Option<(u64, Arc<openapi::Documents>)>>,
    /// `host:port` clients reach the server at (discovery's serverAddressByClientCIDRs).
    server_address: String,
    /// Request and storage metrics (`/metrics`).
    metrics: crate::metrics::Metrics,
    /// The TLS toward kubelets (logs, exec, attach, port-forward), when configured.
    kubelet_client: Option<Arc<rustls::ClientConfig>>,
    /// Cluster IPs and node ports of Services.
    services: Arc<crate::kinds::service::allocator::ServiceAllocator>,
    /// What `metrics.k8s.io` serves (filled by [`crate::resource_metrics::run`]).
    resource_metrics: Arc<crate::resource_metrics::MetricsStore>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// The security state an [`Api`] shares with the server's controllers.
#[derive(Clone, Debug)]
pub struct Security {
    /// The RBAC authorizer.
    pub rbac: Arc<Rbac>,
    /// The mirror of what RBAC, authentication and admission read on every request.
    pub reflector: Arc<Reflector>,
    /// The service account token issuer.
    pub tokens: Arc<TokenIssuer>,
}

/// A handler's answer before it becomes an HTTP response.
pub(crate) struct Reply {
    status: StatusCode,
    body: ReplyBody,
    content_type: String,
    warnings: Vec<String>,
}

enum ReplyBody {
    Json(Value),
    Text(String),
    Stream(Body),
    /// A whole response passed through as it is (a kubelet's 101 Switching Protocols).
    Response(Response<Body>),
}

impl Reply {
    fn json(status: StatusCode, value: Value) -> Reply {
        Reply {
            status,
            body: ReplyBody::Json(value),
            content_type: "application/json".into(),
            warnings: Vec::new(),
        }
    }

    fn ok(value: Value) -> Reply {
        Reply::json(StatusCode::OK, value)
    }

    fn text(text: impl Into<String>) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: ReplyBody::Text(text.into()),
            content_type: "text/plain; charset=utf-8".into(),
            warnings: Vec::new(),
        }
    }

    fn with_content_type(mut self, content_type: impl Into<String>) -> Reply {
        self.content_type = content_type.into();
        self
    }

    /// Adds warnings (decoding's come after admission's of an update: both are kept).
    fn with_warnings(mut self, warnings: Vec<String>) -> Reply {
        self.warnings.extend(warnings);
        self
    }

    fn into_response(self) -> Response<Body> {
        let body = match self.body {
            ReplyBody::Json(v) => full(serde_json::to_vec(&v).unwrap_or_default()),
            ReplyBody::Text(t) => full(t.into_bytes()),
            ReplyBody::Stream(b) => b,
            ReplyBody::Response(response) => return response,
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            headers.insert(CONTENT_TYPE, v);
        }
        headers.insert(
            "cache-control",
            HeaderValue::from_static("no-cache, private"),
        );
        for warning in self.warnings {
            // RFC 7234 warning format kube-apiserver uses: 299 - "<text>".
            let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                headers.append("warning", v);
            }
        }
        response
    }
}

impl From<ApiError> for Reply {
    fn from(err: ApiError) -> Reply {
        let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reply::json(status, err.to_status())
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

impl Api {
    /// An API over `storage`, serving `registry`, reachable at `server_address`; `rbac`
    /// (also a link of `authorizer`) answers rules reviews, `reflector` mirrors the objects
    /// authentication needs (service accounts), `tokens` signs service account tokens.
    pub fn new(
        storage: Storage,
        registry: &'static Registry,
        authorizer: Box<dyn Authorizer>,
        security: Security,
        server_address: String,
    ) -> Api {
        Api {
            storage,
            registry,
            authorizer,
            rbac: security.rbac,
            reflector: security.reflector,
            tokens: security.tokens,
            builtin_schemas: OnceLock::new(),
            schemas: Mutex::new(None),
            openapi: Mutex::new(None),
            server_address,
            metrics: crate::metrics::Metrics::new(),
            kubelet_client: None,
            services: Arc::default(),
            resource_metrics: Arc::default(),
        }
    }

    /// The same API, allocating Services' cluster IPs and node ports from `ranges`.
    pub fn with_service_ranges(
        mut self,
        ranges: crate::kinds::service::allocator::ServiceRanges,
    ) -> Api {
        self.services = Arc::new(crate::kinds::service::allocator::ServiceAllocator::new(
            ranges,
        ));
        self
    }

    /// The same API, proxying pods' logs, exec, attach and port-forward to kubelets over
    /// `tls` (see [`kubelet_client_config`]).
    pub fn with_kubelet_client(mut self, tls: Arc<rustls::ClientConfig>) -> Api {
        self.kubelet_client = Some(tls);
        self
    }

    /// The same API, serving `metrics.k8s.io` from `store`.
    pub fn with_resource_metrics(
        mut self,
        store: Arc<crate::resource_metrics::MetricsStore>,
    ) -> Api {
        self.resource_metrics = store;
        self
    }

    /// The schemas, generated on first use (they are not needed to become ready) and again
    /// whenever the custom resources served change.
    pub(crate) fn schemas(&self) -> Arc<Schemas> {
        let builtin = self
            .builtin_schemas
            .get_or_init(|| Arc::new(Schemas::generate(self.registry)));
        let generation = self.registry.generation();
        let mut cached = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some((g, schemas)) if *g == generation => schemas.clone(),
            _ => {
                let custom = self.registry.custom().clone();
                let schemas = if custom.is_empty() {
                    builtin.clone()
                } else {
                    Arc::new(builtin.with_custom(&custom))
                };
                *cached = Some((generation, schemas.clone()));
                schemas
            }
        }
    }

    /// The `/metrics` document, with stored object counts refreshed.
    async fn metrics_text(&self) -> Reply {
        for def in self.registry.all() {
            if def.verbs == crate::registry::CREATE_ONLY {
                continue;
            }
            if let Ok(count) = self.storage.count(&Storage::prefix(def, None)).await {
                self.metrics.set_stored_objects(&def.qualified(), count);
            }
        }
        Reply::text(self.metrics.render())
            .with_content_type("text/plain; version=0.0.4; charset=utf-8")
    }

    /// The mirror of the objects the server itself reads often (namespaces, service
    /// accounts, RBAC).
    pub fn reflector(&self) -> &Reflector {
        &self.reflector
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The served resources, custom ones included (admission policies' `paramKind`).
    pub(crate) fn registry(&self) -> &'static Registry {
        self.registry
    }

    /// The server's authorizer's answer (for admission plugins that check extra verbs).
    pub(crate) fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        self.authorizer.authorize(attributes)
    }

    /// The user of a bearer token: a bootstrap token's (see [`crate::bootstrap_token`]), or
    /// the service account a JWT was issued to, if the token verifies and the account still
    /// exists with the same uid (Kubernetes' bound-token check).
    pub async fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        if let Ok(token) = token.parse() {
            return crate::bootstrap_token::authenticate(&self.storage, &token).await;
        }
        let claims = self.tokens.verify(token).ok()?;
        let def = self.registry.by_kind("", "v1", "ServiceAccount")?;
        let sa = self.reflector.get(def, &claims.namespace, &claims.name)?;
        (crate::kinds::str_at(&sa, "/metadata/uid") == claims.uid).then(|| claims.user())
    }

    /// Serves one request from `user` (`None` when no client certificate was presented).
    pub async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        user: Option<UserInfo>,
    ) -> Response<Body> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let query = Query::parse(request.uri().query());
        let started = std::time::Instant::now();
        let inflight = self
            .metrics
            .start(!matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS"));
        let reply = match self
            .clone()
            .route(request, &method, &path, &query, user)
            .await
        {
            Ok(reply) => reply,
            Err(err) => Reply::from(err),
        };
        drop(inflight);
        self.metrics.observe(
            &RequestInfo::parse(&method, &path, &query),
            reply.status.as_u16(),
            started.elapsed(),
        );
        tracing::debug!(%method, %path, status = reply.status.as_u16(), "request");
        let mut response = reply.into_response();
        if method == "HEAD" {
            *response.body_mut() = full(Bytes::new());
        }
        response
    }

    async fn route(
        self: Arc<Self>,
        request: Request<Incoming>,
        method: &str,
        path: &str,
        query: &Query,
        user: Option<UserInfo>,
    ) -> ApiResult<Reply> {
        // Anonymous requests may only reach the public health and version endpoints
        // (kube-apiserver's anonymous authenticator restricted to those paths); elsewhere
        // they are unauthenticated.
        let bearer = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let user = match (user, bearer) {
            (Some(user), _) => user,
            (None, Some(token)) => self
                .authenticate_token(token)
                .await
                .ok_or_else(ApiError::unauthorized)?,
            (None, None) if authz::is_public_path(path) => UserInfo::anonymous(),
            (None, None) => return Err(ApiError::unauthorized()),
        };
        // From here on the request acts as whom it impersonates, if it may.
        let user = match Impersonation::from_headers(request.headers())? {
            Some(impersonation) => impersonation.authorize(&user, &*self.authorizer, path)?,
            None => user,
        };
        let info = RequestInfo::parse(method, path, query);
        let selected_name = match info.verb.as_str() {
            "list" | "watch" if info.name.is_empty() => query
                .get("fieldSelector")
                .and_then(authz::name_from_field_selector),
            _ => None,
        };
        let resource_attributes = info.is_resource.then(|| ResourceAttributes {
            group: &info.group,
            resource: &info.resource,
            subresource: &info.subresource,
            namespace: &info.namespace,
            name: selected_name.unwrap_or(&info.name),
        });
        let verb = if info.is_resource {
            info.verb.clone()
        } else {
            method.to_ascii_lowercase().replace("head", "get")
        };
        let attributes = Attributes {
            user: &user,
            verb: &verb,
            resource: resource_attributes,
            path,
        };
        match self.authorizer.authorize(&attributes) {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return Err(ApiError::forbidden(authz::forbidden_message(
                    &attributes,
                    &reason,
                )))
            }
            Decision::NoOpinion => {
                return Err(ApiError::forbidden(authz::forbidden_message(
                    &attributes,
                    "",
                )))
            }
        }

        let accept = request
            .headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !info.is_resource {
            if method != "GET" && method != "HEAD" {
                return Err(ApiError::method_not_supported());
            }
            if path == "/metrics" {
                return Ok(self.metrics_text().await);
            }
            return self.non_resource(path, query, accept.as_deref());
        }
        if info.group == crate::resource_metrics::GROUP {
            let served =
                crate::resource_metrics::serve(&self.resource_metrics, &self.storage, &info, query)
                    .await?;
            return Ok(Reply::ok(served));
        }
        let def = self
            .registry
            .lookup(&info.group, &info.version, &info.resource)
            .ok_or_else(ApiError::path_not_found)?;
        if node_proxy::serves(&info) {
            return node_proxy::proxy(&self, request, &info, &user).await;
        }
        if proxy::serves(&info) {
            return proxy::proxy(&self, request, &info).await;
        }
        check_scope(def, &info)?;
        let representation =
            negotiate(accept.as_deref(), false).ok_or_else(ApiError::not_acceptable)?;
        // Kubernetes' default field manager: the User-Agent up to its first '/'.
        let manager: String = match query.non_empty("fieldManager") {
            Some(m) => m.to_owned(),
            None => request
                .headers()
                .get(hyper::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .unwrap_or("")
                .chars()
                .take(128)
                .collect(),
        };
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let mut body = if matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") {
            read_body(request.into_body()).await?
        } else {
            Bytes::new()
        };
        if content_type.split(';').next().unwrap_or("").trim() == protobuf::KUBERNETES_PROTOBUF
            && matches!(method, "POST" | "PUT" | "DELETE")
            && !body.is_empty()
        {
            let registry = self.registry;
            let decoder = |api_version: &str, kind: &str| {
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                registry.by_kind(group, version, kind).map(|d| d.protobuf)
            };
            let obj = protobuf::decode_object(&body, decoder).map_err(|e| match e {
                protobuf::ProtobufError::Unsupported(_) => {
                    ApiError::unsupported_media_type(&content_type, &["application/json"])
                }
                other => ApiError::bad_request(other.to_string()),
            })?;
            body = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
        }
        let ctx = objects::Ctx {
            api: &self,
            def,
            info: &info,
            query,
            user: &user,
            representation,
            manager,
        };
        if def.verbs == crate::registry::CREATE_ONLY {
            return match method {
                "POST" if info.name.is_empty() => {
                    reviews::review(&self, def, &info, &user, &body).await
                }
                _ => Err(ApiError::method_not_supported()),
            };
        }
        match (info.subresource.as_str(), method) {
            ("scale", _) => {
                return subresources::scale(&ctx, method, &body, &content_type).await;
            }
            ("binding", "POST") => return subresources::bind(&ctx, &body).await,
            ("eviction", "POST") => return subresources::evict(&ctx, &body).await,
            ("token", "POST") => return subresources::token_request(&ctx, &body).await,
            ("finalize", "PUT") => return subresources::finalize(&ctx, &body).await,
            _ => {}
        }
        match info.verb.as_str() {
            "get" => ctx.get().await,
            "list" => ctx.list().await,
            "watch" => {
                watch::watch(
                    self.clone(),
                    def,
                    info.clone(),
                    query.clone(),
                    ctx.representation.clone(),
                )
                .await
            }
            "create" => ctx.create(&body).await,
            "update" => ctx.update(&body).await,
            "patch" => ctx.patch(&body, &content_type).await,
            "delete" => ctx.delete(&body).await,
            "deletecollection" => ctx.delete_collection(&body).await,
            _ => Err(ApiError::method_not_supported()),
        }
    }

    fn non_resource(&self, path: &str, query: &Query, accept: Option<&str>) -> ApiResult<Reply> {
        let trimmed = path.trim_end_matches('/');
        let parts: Vec<&str> = trimmed.split('/').filter(|p| !p.is_empty()).collect();
        match parts.as_slice() {
            ["healthz" | "livez" | "readyz", ..] => {
                Ok(health(parts[0], parts.get(1).copied(), query))
            }
            ["version"] => Ok(Reply::ok(version_info())),
            [".well-known", "openid-configuration"] => {
                Ok(Reply::ok(self.tokens.openid_configuration()))
            }
            ["openid", "v1", "jwks"] => {
                Ok(Reply::ok(self.tokens.jwks()).with_content_type("application/jwk-set+json"))
            }
            ["openapi", "v2"] => openapi::v2(self, accept),
            ["openapi", "v3"] => Ok(openapi::v3_index(self)),
            ["openapi", "v3", rest @ ..] => openapi::v3_group_version(self, &rest.join("/")),
            ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => {
                discovery::serve(self, &parts, accept)
            }
            _ => Err(ApiError::path_not_found()),
        }
    }
}

/// Rejects namespaced paths for cluster-scoped resources and subresources not served.
fn check_scope(def: &ResourceDef, info: &RequestInfo) -> ApiResult<()> {
    if !def.namespaced && !info.namespace.is_empty() {
        return Err(ApiError::path_not_found());
    }
    if def.namespaced
        && info.namespace.is_empty()
        && !matches!(info.verb.as_str(), "list" | "watch")
    {
        return Err(ApiError::path_not_found());
    }
    match info.subresource.as_str() {
        "" => Ok(()),
        "status" if def.status_subresource && !info.name.is_empty() => {
            if matches!(info.verb.as_str(), "get" | "update" | "patch") {
                Ok(())
            } else {
                Err(ApiError::method_not_supported())
            }
        }
        "scale" if def.scale_subresource && !info.name.is_empty() => {
            if matches!(info.verb.as_str(), "get" | "update" | "patch") {
                Ok(())
            } else {
                Err(ApiError::method_not_supported())
            }
        }
        sub if !info.name.is_empty() => match subresources::verbs_of(def.group, def.plural, sub) {
            Some(verbs) if verbs.contains(&info.verb.as_str()) => Ok(()),
            Some(_) => Err(ApiError::method_not_supported()),
            None => Err(ApiError::path_not_found()),
        },
        _ => Err(ApiError::path_not_found()),
    }
}

async fn read_body(body: Incoming) -> ApiResult<Bytes> {
    match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(MAX_REQUEST_BYTES))
        }
        Err(err) => Err(ApiError::bad_request(format!(
            "reading the request body: {err}"
        ))),
    }
}

/// `/healthz`, `/livez`, `/readyz` and their `/ping`-style checks; `?verbose` lists checks.
fn health(endpoint: &str, check: Option<&str>, query: &Query) -> Reply {
    const CHECKS: &[&str] = &["ping", "log", "etcd", "poststarthook/start-apiserver"];
    if let Some(check) = check {
        if !CHECKS.contains(&check) {
            return ApiError::path_not_found().into();
        }
        return Reply::text("ok");
    }
    if query.get("verbose").is_some() {
        let mut text: String = CHECKS.iter().map(|c| format!("[+]{c} ok\n")).collect();
        text.push_str(&format!("{endpoint} check passed\n"));
        return Reply::text(text);
    }
    Reply::text("ok")
}

/// `/version`: the Kubernetes API level served, with skiff's own version in gitVersion's
/// build metadata.
fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+skiff-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }),
    })
}

/// The negotiated representation for non-resource requests that only serve JSON.
fn reply_with(representation: Option<Representation>, value: Value) -> ApiResult<Reply> {
    match representation {
        Some(_) => Ok(Reply::ok(value)),
        None => Err(ApiError::not_acceptable()),
    }
}
