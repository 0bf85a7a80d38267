//! Error responses in the spec's shape: `{"errors":[{"code","message","detail"}]}`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{AuthError, SERVICE};
use crate::core::CoreError;
use crate::errcode::ErrorCode;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    detail: Option<serde_json::Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// Overrides the status.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// A refusal by the access policy, with the challenge that tells the client where to
    /// get a token: `realm` is the token endpoint's URL.
    pub fn auth(e: AuthError, realm: &str) -> Self {
        let mut challenge = format!(r#"Bearer realm="{realm}",service="{SERVICE}""#);
        if let Some(scope) = e.scope() {
            challenge.push_str(&format!(r#",scope="{scope}""#));
        }
        match &e {
            AuthError::Denied(_) => challenge.push_str(r#",error="insufficient_scope""#),
            AuthError::Invalid(_) => challenge.push_str(r#",error="invalid_token""#),
            AuthError::Required { .. } => {}
        }
        Self::new(e.code(), e.to_string()).header(header::WWW_AUTHENTICATE, &challenge)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        if matches!(e.code(), ErrorCode::Unknown) {
            tracing::error!(error = %e, "registry request failed");
        }
        let mut api = Self::new(e.code(), e.to_string());
        api.status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        match &e {
            CoreError::ChunkOutOfOrder { size, .. } => {
                api = api.header(header::RANGE, &super::upload_range(*size));
            }
            CoreError::RangeNotSatisfiable { size } => {
                api = api.header(header::CONTENT_RANGE, &format!("bytes */{size}"));
            }
            CoreError::BlobUnknown { digest, .. } | CoreError::ManifestBlobUnknown(digest) => {
                api.detail = Some(json!({ "digest": digest.to_string() }));
            }
            CoreError::NameUnknown(name) => {
                api.detail = Some(json!({ "name": name.to_string() }));
            }
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut entry = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = self.detail {
            entry["detail"] = d;
        }
        let body = json!({ "errors": [entry] }).to_string();
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}
