//! Short-lived bearer tokens: JWTs signed with HMAC-SHA256 under a key drawn at start, so
//! they are only valid against the process that issued them (which is also the only
//! verifier). The claims follow Docker's token protocol: `sub`, `exp`, `access`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::scope::Scope;

/// How long a token is valid, as Docker's registry token servers default.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// Errors from verifying a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or the claims are not JSON.
    #[error("malformed bearer token")]
    Malformed,
    /// The signature does not match.
    #[error("bearer token signature is invalid")]
    Signature,
    /// The token has expired.
    #[error("bearer token has expired: request a new one")]
    Expired,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The user, empty for anonymous.
    pub sub: String,
    /// The service the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// The access granted.
    pub access: Vec<Scope>,
}

/// Signs and verifies tokens.
pub struct TokenIssuer {
    key: hmac::Key,
    service: String,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenIssuer {
    /// An issuer with a fresh random key.
    pub fn new(service: &str) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
            service: service.to_owned(),
        }
    }

    /// A token for `user` (empty: anonymous) granting `access`, valid for [`TOKEN_TTL`].
    pub fn issue(&self, user: &str, access: Vec<Scope>) -> (String, Claims) {
        let iat = now();
        let claims = Claims {
            iss: "skiff-registry".into(),
            sub: user.to_owned(),
            aud: self.service.clone(),
            exp: iat + TOKEN_TTL.as_secs(),
            iat,
            access,
        };
        let body = serde_json::to_vec(&claims).expect("claims serialise");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(body)
        );
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        (
            format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())),
            claims,
        )
    }

    /// Checks a token's signature and expiry and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (_, body) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signing_input.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let issuer = TokenIssuer::new("svc");
        let (token, claims) = issuer.issue("alice", vec![Scope::catalog()]);
        assert_eq!(issuer.verify(&token).unwrap(), claims);
        let other = TokenIssuer::new("svc");
        assert_eq!(other.verify(&token), Err(TokenError::Signature));
        let mut forged = token.clone();
        forged.insert(forged.len() - 2, 'A');
        assert!(issuer.verify(&forged).is_err());
        assert_eq!(issuer.verify("abc"), Err(TokenError::Malformed));
    }
}
