//! Tag listing and the catalog, both paginated with `n` and `last` in lexical order.

use super::{CoreError, Registry};
use crate::name::RepoName;

/// The `n` and `last` query parameters of a paginated list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// At most this many entries; all when `None`.
    pub n: Option<usize>,
    /// Only entries sorting after this one.
    pub last: Option<String>,
}

impl Page {
    /// Reads `n` and `last` from raw query values.
    pub fn parse(n: Option<&str>, last: Option<&str>) -> Result<Self, CoreError> {
        let n = n
            .map(|v| v.parse().map_err(|_| CoreError::Pagination(v.to_owned())))
            .transpose()?;
        Ok(Self {
            n,
            last: last.filter(|l| !l.is_empty()).map(str::to_owned),
        })
    }

    /// Applies the page to a list.
    fn apply(&self, mut all: Vec<String>) -> Paged {
        all.sort();
        all.dedup();
        if let Some(last) = &self.last {
            all.retain(|x| x > last);
        }
        let more = self.n.is_some_and(|n| all.len() > n);
        if let Some(n) = self.n {
            all.truncate(n);
        }
        let next = if more { all.last().cloned() } else { None };
        Paged { items: all, next }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged {
    /// The entries, sorted.
    pub items: Vec<String>,
    /// The `last` of the next page, when there is one (the `Link` header).
    pub next: Option<String>,
}

impl Registry {
    /// The tags of a repository (`/v2/<name>/tags/list`).
    pub async fn list_tags(&self, repo: &RepoName, page: &Page) -> Result<Paged, CoreError> {
        let tags = self
            .storage
            .tags(repo)
            .await?
            .ok_or_else(|| CoreError::NameUnknown(repo.clone()))?;
        Ok(page.apply(tags.into_iter().map(|(t, _)| t.to_string()).collect()))
    }

    /// The repositories (`/v2/_catalog`).
    pub async fn catalog(&self, page: &Page) -> Result<Paged, CoreError> {
        let repos = self.storage.repositories().await?;
        Ok(page.apply(repos.iter().map(ToString::to_string).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = names(&["c", "a", "b", "d"]);
        let p = Page::parse(Some("2"), None).unwrap().apply(all.clone());
        assert_eq!(p.items, names(&["a", "b"]));
        assert_eq!(p.next.as_deref(), Some("b"));
        let p = Page::parse(Some("2"), Some("b"))
            .unwrap()
            .apply(all.clone());
        assert_eq!(p.items, names(&["c", "d"]));
        assert_eq!(p.next, None);
        let p = Page::parse(Some("0"), None).unwrap().apply(all.clone());
        assert!(p.items.is_empty());
        assert_eq!(Page::default().apply(all).items.len(), 4);
        assert!(Page::parse(Some("x"), None).is_err());
    }
}
