//! Access scopes as Docker's token protocol spells them: `repository:NAME:pull,push`,
//! `registry:catalog:*`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Errors from parsing a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The scope is not `TYPE:NAME:ACTIONS`.
    #[error(
        "invalid scope {0:?}: expected TYPE:NAME:ACTIONS, e.g. repository:library/busybox:pull"
    )]
    Syntax(String),
}

/// An action on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs and tags.
    Pull,
    /// Upload blobs and manifests.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// Every action (`*`).
    All,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pull" => Self::Pull,
            "push" => Self::Push,
            "delete" => Self::Delete,
            "*" => Self::All,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
            Self::All => "*",
        }
    }
}

/// A resource and the actions wanted on (or granted for) it; the `access` entry of a
/// token's claims has this JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A repository name, or `catalog`.
    pub name: String,
    /// The actions (`pull`, `push`, `delete`, `*`).
    pub actions: Vec<String>,
}

impl Scope {
    /// `repository:NAME:ACTION`.
    pub fn repository(name: &str, action: Action) -> Self {
        Self {
            kind: "repository".into(),
            name: name.into(),
            actions: vec![action.as_str().into()],
        }
    }

    /// `registry:catalog:*`, which listing repositories needs.
    pub fn catalog() -> Self {
        Self {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }

    /// Parses `TYPE:NAME:ACTIONS`; unknown actions are dropped, as they cannot be granted.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let err = || ScopeError::Syntax(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(err)?;
        if kind.is_empty() || name.is_empty() {
            return Err(err());
        }
        Ok(Self {
            kind: kind.into(),
            name: name.into(),
            actions: actions
                .split(',')
                .filter(|a| Action::parse(a).is_some())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// True when this grant allows `action` on the resource `kind`/`name`.
    pub fn allows(&self, kind: &str, name: &str, action: Action) -> bool {
        self.kind == kind
            && self.name == name
            && self
                .actions
                .iter()
                .any(|a| Action::parse(a).is_some_and(|a| a == action || a == Action::All))
    }

    /// The scope with only the actions `keep` accepts.
    pub fn restrict(&self, keep: impl Fn(Action) -> bool) -> Self {
        Self {
            actions: self
                .actions
                .iter()
                .filter(|a| Action::parse(a).is_some_and(&keep))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The first action listed, for challenges.
    pub fn first_action(&self) -> Option<Action> {
        self.actions.iter().find_map(|a| Action::parse(a))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_allow_restrict() {
        let s = Scope::parse("repository:a/b:pull,push,bogus").unwrap();
        assert_eq!(s.to_string(), "repository:a/b:pull,push");
        assert!(s.allows("repository", "a/b", Action::Push));
        assert!(!s.allows("repository", "a/b", Action::Delete));
        assert!(!s.allows("repository", "a", Action::Pull));
        let pull = s.restrict(|a| a == Action::Pull);
        assert!(!pull.allows("repository", "a/b", Action::Push));
        assert!(Scope::catalog().allows("registry", "catalog", Action::Pull));
        assert!(Scope::parse("repository").is_err());
        assert!(Scope::parse("repository::pull").is_err());
    }
}
