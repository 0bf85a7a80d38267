//! Who may do what: Basic credentials checked against an htpasswd file, bearer tokens
//! issued by the registry's own token endpoint, and optional anonymous pull.
//!
//! The flow is Docker's: an unauthenticated request gets 401 with
//! `WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the client asks the realm for
//! a token with its credentials in Basic form and retries with `Authorization: Bearer`.
//! Clients that send Basic credentials directly are served too.

pub mod htpasswd;
pub mod scope;
pub mod token;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::errcode::ErrorCode;
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use scope::{Action, Scope, ScopeError};
pub use token::{Claims, TokenError, TokenIssuer, TOKEN_TTL};

/// The `service` the registry names in challenges and tokens.
pub const SERVICE: &str = "skiff-registry";

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: authenticate (401 with a challenge for `scope`).
    #[error("authentication required")]
    Required {
        /// The access the request needs, for the challenge.
        scope: Option<Scope>,
    },
    /// Credentials or token were presented and are wrong.
    #[error("authentication failed: {0}")]
    Invalid(String),
    /// Authenticated, but the token does not grant the access (403).
    #[error("access to {0} denied: request a token for this scope")]
    Denied(Scope),
}

impl AuthError {
    /// The distribution error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Required { .. } | Self::Invalid(_) => ErrorCode::Unauthorized,
            Self::Denied(_) => ErrorCode::Denied,
        }
    }

    /// The scope to name in the challenge.
    pub fn scope(&self) -> Option<&Scope> {
        match self {
            Self::Required { scope } => scope.as_ref(),
            Self::Denied(s) => Some(s),
            Self::Invalid(_) => None,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// An htpasswd user.
    User(String),
}

/// A token as the token endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The bearer token.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

/// The access policy of a registry started with `--htpasswd`.
pub struct Authenticator {
    users: Htpasswd,
    tokens: TokenIssuer,
    anonymous_pull: bool,
}

impl Authenticator {
    /// A policy over `users`; `anonymous_pull` lets requests without credentials pull.
    pub fn new(users: Htpasswd, anonymous_pull: bool) -> Self {
        Self {
            users,
            tokens: TokenIssuer::new(SERVICE),
            anonymous_pull,
        }
    }

    /// What `principal` may do of what `wanted` asks: users everything, anonymous clients
    /// pull (and list) with `--anonymous-pull`, nothing otherwise.
    pub fn grant(&self, principal: &Principal, wanted: &Scope) -> Scope {
        match principal {
            Principal::User(_) => wanted.clone(),
            Principal::Anonymous if self.anonymous_pull => {
                wanted.restrict(|a| a == Action::Pull || wanted.kind == "registry")
            }
            Principal::Anonymous => wanted.restrict(|_| false),
        }
    }

    /// Checks Basic credentials (`Authorization: Basic ...`). Blocking: bcrypt.
    fn basic(&self, encoded: &str) -> Result<Principal, AuthError> {
        let invalid = || AuthError::Invalid("invalid username or password".into());
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
        if self.users.verify(user, password) {
            Ok(Principal::User(user.to_owned()))
        } else {
            Err(invalid())
        }
    }

    /// Allows or refuses a request needing `action` on `kind`/`name` (`None`: only that the
    /// client is authenticated, for `GET /v2/`). Blocking on a bcrypt cache miss.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        need: Option<(&str, &str, Action)>,
    ) -> Result<(), AuthError> {
        let wanted = need.map(|(kind, name, action)| match kind {
            "registry" => Scope::catalog(),
            _ => Scope::repository(name, action),
        });
        let required = || AuthError::Required {
            scope: wanted.clone(),
        };
        let allowed = |granted: &Scope| {
            need.is_none_or(|(kind, name, action)| granted.allows(kind, name, action))
        };
        match authorization.and_then(|h| h.split_once(' ')) {
            None => match &wanted {
                Some(w) if allowed(&self.grant(&Principal::Anonymous, w)) => Ok(()),
                _ => Err(required()),
            },
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => {
                let user = self.basic(value)?;
                match &wanted {
                    Some(w) if !allowed(&self.grant(&user, w)) => Err(AuthError::Denied(w.clone())),
                    _ => Ok(()),
                }
            }
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("bearer") => {
                let claims = self
                    .tokens
                    .verify(value.trim())
                    .map_err(|e| AuthError::Invalid(e.to_string()))?;
                if claims.access.iter().any(allowed) || need.is_none() {
                    return Ok(());
                }
                match (&wanted, claims.sub.is_empty()) {
                    (Some(w), false) => Err(AuthError::Denied(w.clone())),
                    _ => Err(required()),
                }
            }
            Some(_) => Err(required()),
        }
    }

    /// The token endpoint: authenticates the caller (Basic, or anonymous) and issues a
    /// token for what it may have of `scopes`. Blocking on a bcrypt cache miss.
    pub fn issue_token(
        &self,
        authorization: Option<&str>,
        scopes: &[Scope],
    ) -> Result<IssuedToken, AuthError> {
        let principal = match authorization.and_then(|h| h.split_once(' ')) {
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => self.basic(value)?,
            Some(_) => {
                return Err(AuthError::Invalid(
                    "the token endpoint takes Basic credentials".into(),
                ))
            }
            // Nothing to hand out: tell the client to log in rather than issue an empty token.
            None if !self.anonymous_pull => return Err(AuthError::Required { scope: None }),
            None => Principal::Anonymous,
        };
        let access: Vec<Scope> = scopes
            .iter()
            .map(|s| self.grant(&principal, s))
            .filter(|s| !s.actions.is_empty())
            .collect();
        let user = match &principal {
            Principal::User(u) => u.as_str(),
            Principal::Anonymous => "",
        };
        let (token, claims) = self.tokens.issue(user, access);
        Ok(IssuedToken { token, claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(anonymous_pull: bool) -> Authenticator {
        let hash = bcrypt::hash("pw", 4).unwrap();
        Authenticator::new(
            Htpasswd::parse(&format!("u:{hash}")).unwrap(),
            anonymous_pull,
        )
    }

    fn basic(user: &str, pw: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pw}")))
    }

    #[test]
    fn anonymous_pull_only_when_enabled() {
        let need = Some(("repository", "a", Action::Pull));
        let push = Some(("repository", "a", Action::Push));
        assert!(auth(true).authorize(None, need).is_ok());
        assert!(matches!(
            auth(true).authorize(None, push),
            Err(AuthError::Required { scope: Some(_) })
        ));
        assert!(auth(false).authorize(None, need).is_err());
        assert!(
            auth(true).authorize(None, None).is_err(),
            "/v2/ still challenges"
        );
    }

    #[test]
    fn basic_and_bearer() {
        let a = auth(false);
        let push = Some(("repository", "a", Action::Push));
        assert!(a.authorize(Some(&basic("u", "pw")), push).is_ok());
        assert!(matches!(
            a.authorize(Some(&basic("u", "nope")), push),
            Err(AuthError::Invalid(_))
        ));
        let t = a
            .issue_token(
                Some(&basic("u", "pw")),
                &[Scope::parse("repository:a:pull,push").unwrap()],
            )
            .unwrap();
        let bearer = format!("Bearer {}", t.token);
        assert!(a.authorize(Some(&bearer), push).is_ok());
        assert!(matches!(
            a.authorize(Some(&bearer), Some(("repository", "b", Action::Pull))),
            Err(AuthError::Denied(_))
        ));
        assert!(a.issue_token(Some(&basic("u", "x")), &[]).is_err());
        assert!(a.issue_token(None, &[]).is_err());
        let anon = auth(true)
            .issue_token(None, &[Scope::parse("repository:a:pull,push").unwrap()])
            .unwrap();
        assert_eq!(anon.claims.access[0].actions, ["pull"]);
    }
}
