//! `.dockerignore` and the path patterns COPY sources use.
//!
//! Docker's rules: one pattern per line, `#` comments, patterns cleaned and taken
//! relative to the context root (a leading `/` is dropped); `*`, `?` and `[...]` match
//! within one path component, `**` matches any number of components; a pattern that
//! matches a directory matches everything below it; `!pattern` re-includes; the last
//! matching line decides.

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    components: Vec<String>,
    /// `!` lines re-include what earlier lines excluded.
    pub exception: bool,
}

impl Pattern {
    /// Compiles `text` (without the `!`), cleaning `.`, `..` and duplicate slashes.
    pub fn new(text: &str, exception: bool) -> Self {
        Pattern {
            components: clean(text),
            exception,
        }
    }

    /// True when the pattern matches `path` itself (components separated by `/`).
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        match_components(&self.components, &parts)
    }

    /// True when the pattern matches `path` or one of its parent directories.
    pub fn matches_or_parent(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        (1..=parts.len()).any(|n| match_components(&self.components, &parts[..n]))
    }

    /// True when the pattern has no wildcard (a plain path).
    pub fn is_literal(&self) -> bool {
        self.components
            .iter()
            .all(|c| !c.contains(['*', '?', '[', '\\']))
    }
}

fn clean(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in text.trim().split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

/// The rules of one `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

impl IgnoreRules {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (body, exception) = match l.strip_prefix('!') {
                    Some(b) => (b.trim(), true),
                    None => (l, false),
                };
                let p = Pattern::new(body, exception);
                (!p.components.is_empty()).then_some(p)
            })
            .collect();
        IgnoreRules { patterns }
    }

    /// True when `path` (relative to the context) is left out of the context.
    pub fn is_excluded(&self, path: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            if p.exception == excluded && p.matches_or_parent(path) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// True when some `!` line could re-include something inside an excluded directory.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

fn match_components(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => fnmatch(first, p) && match_components(rest, prest),
            None => false,
        },
    }
}

/// Shell-style matching of one path component: `*`, `?`, `[a-z]`, `[!x]`, `\x`.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('!' | '^'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (first || p[i] != ']') {
                    first = false;
                    let lo = p[i];
                    if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                        let hi = p[i + 2];
                        matched |= lo <= *c && *c <= hi;
                        i += 3;
                    } else {
                        matched |= lo == *c;
                        i += 1;
                    }
                }
                if i >= p.len() {
                    // No closing bracket: a literal '['.
                    return *c == '[' && go(&p[1..], &n[1..]);
                }
                matched != negate && go(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch("*.go", "main.go"));
        assert!(!fnmatch("*.go", "main.rs"));
        assert!(fnmatch("file?.txt", "file1.txt"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(!fnmatch("[!a-c]x", "bx"));
        assert!(fnmatch("\\*", "*"));
    }

    #[test]
    fn dockerignore_semantics() {
        let r = IgnoreRules::parse(
            "# comment\nnode_modules\n*.log\n!keep.log\n**/*.tmp\n/build/\nsecret*\ndocs/**\n!docs/README.md\n",
        );
        assert!(r.is_excluded("node_modules"));
        assert!(r.is_excluded("node_modules/a/b.js"));
        assert!(r.is_excluded("debug.log"));
        assert!(!r.is_excluded("keep.log"));
        assert!(
            !r.is_excluded("sub/debug.log"),
            "*.log is anchored at the root"
        );
        assert!(r.is_excluded("a/b/c.tmp"));
        assert!(r.is_excluded("x.tmp"));
        assert!(r.is_excluded("build/out.o"));
        assert!(r.is_excluded("secret.txt"));
        assert!(r.is_excluded("docs/guide.md"));
        assert!(!r.is_excluded("docs/README.md"));
        assert!(!r.is_excluded("src/main.rs"));
        assert!(r.has_exceptions());
    }

    #[test]
    fn later_lines_win() {
        let r = IgnoreRules::parse("!a.txt\n*.txt\n");
        assert!(r.is_excluded("a.txt"));
        let r = IgnoreRules::parse("*\n!src\n");
        assert!(!r.is_excluded("src/main.c"));
        assert!(r.is_excluded("Makefile"));
    }

    #[test]
    fn patterns_clean() {
        assert!(Pattern::new("./a/../b/*.c", false).matches("b/x.c"));
        assert!(Pattern::new("/abs/path", false).matches("abs/path"));
        assert!(Pattern::new("src", false).is_literal());
    }
}
