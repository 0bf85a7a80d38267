//! `GET /token` (also `/v2/token`): the bearer token endpoint of Docker's token protocol.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{TimeZone, Utc};
use serde_json::json;

use super::{realm, ApiError, AppState, Req};
use crate::auth::{AuthError, Scope, TOKEN_TTL};
use crate::errcode::ErrorCode;

/// Issues a token for the `scope` parameters (repeated, or space-separated as OAuth2 has
/// it) to the caller of the Basic credentials, or to anonymous.
pub(super) async fn get(state: &AppState, req: Req) -> Result<Response, ApiError> {
    let Some(auth) = state.auth.clone() else {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "this registry has no authentication: no token is needed",
        )
        .status(StatusCode::NOT_FOUND));
    };
    let scopes = req
        .query
        .all("scope")
        .flat_map(str::split_whitespace)
        .map(Scope::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ApiError::new(ErrorCode::Unsupported, e.to_string()).status(StatusCode::BAD_REQUEST)
        })?;
    let authorization = req.header(header::AUTHORIZATION).map(str::to_owned);
    let issued =
        tokio::task::spawn_blocking(move || auth.issue_token(authorization.as_deref(), &scopes))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Unknown, e.to_string()))?;
    let issued = match issued {
        Ok(t) => t,
        Err(e @ AuthError::Invalid(_)) => {
            // Wrong credentials: a Basic challenge, since that is what this endpoint takes.
            return Err(ApiError::new(e.code(), e.to_string()).header(
                header::WWW_AUTHENTICATE,
                &format!(r#"Basic realm="{}""#, realm(state, &req.headers)),
            ));
        }
        Err(e) => return Err(ApiError::auth(e, &realm(state, &req.headers))),
    };
    let issued_at = Utc
        .timestamp_opt(issued.claims.iat as i64, 0)
        .single()
        .unwrap_or_default()
        .to_rfc3339();
    Ok(Json(json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": TOKEN_TTL.as_secs(),
        "issued_at": issued_at,
    }))
    .into_response())
}
