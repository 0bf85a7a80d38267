//! Words of Dockerfile arguments: quotes, the escape character and variable substitution.
//!
//! The same rules Docker's shell lexer applies to ENV, LABEL, COPY, WORKDIR and friends
//! (not to RUN, whose shell does its own): single quotes are literal, double quotes
//! allow `$` expansion, the escape character (`\` or the `escape=` directive's) makes the
//! next character literal, and `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`,
//! `${VAR:+word}`, `${VAR+word}` and `${VAR:?message}` expand from the build's variables.

/// Errors from expanding a word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A quote is not closed.
    #[error("unterminated {0} quote in {1:?}")]
    UnterminatedQuote(&'static str, String),
    /// A `${` is not closed.
    #[error("missing '}}' in {0:?}")]
    UnterminatedBrace(String),
    /// A `${...}` form we do not know.
    #[error("unsupported modifier {0:?} in {1:?}")]
    BadModifier(String, String),
    /// `${VAR:?message}` with VAR unset.
    #[error("{0}: {1}")]
    Required(String, String),
}

/// Looks a variable up; `None` when unset.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands one word: removes quotes and escapes and substitutes variables.
pub fn expand(word: &str, escape: char, lookup: Lookup<'_>) -> Result<String, ShellError> {
    let chars: Vec<char> = word.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        pos: 0,
        escape,
        lookup,
        source: word,
    };
    lexer.word(None)
}

/// Expands each word of `words`.
pub fn expand_all(
    words: &[String],
    escape: char,
    lookup: Lookup<'_>,
) -> Result<Vec<String>, ShellError> {
    words.iter().map(|w| expand(w, escape, lookup)).collect()
}

/// Splits `text` at unquoted, unescaped whitespace; quotes and escapes stay in the words.
pub fn split_words(text: &str, escape: char) -> Result<Vec<String>, ShellError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                cur.push(c);
                if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    if let Some(q) = quote {
        let kind = if q == '\'' { "single" } else { "double" };
        return Err(ShellError::UnterminatedQuote(kind, text.to_string()));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    escape: char,
    lookup: Lookup<'a>,
    source: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Reads until the end, or until an unnested `stop` (the `}` ending a `${...}` word).
    fn word(&mut self, stop: Option<char>) -> Result<String, ShellError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                return Ok(out);
            }
            self.pos += 1;
            if c == self.escape {
                if let Some(n) = self.peek() {
                    self.pos += 1;
                    out.push(n);
                } else {
                    out.push(c);
                }
            } else if c == '\'' {
                loop {
                    match self.peek() {
                        None => {
                            return Err(ShellError::UnterminatedQuote(
                                "single",
                                self.source.to_string(),
                            ))
                        }
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(n) => {
                            self.pos += 1;
                            out.push(n);
                        }
                    }
                }
            } else if c == '"' {
                loop {
                    match self.peek() {
                        None => {
                            return Err(ShellError::UnterminatedQuote(
                                "double",
                                self.source.to_string(),
                            ))
                        }
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some('$') => {
                            self.pos += 1;
                            out.push_str(&self.dollar()?);
                        }
                        Some(n) if n == self.escape => {
                            self.pos += 1;
                            match self.peek() {
                                Some(e @ ('"' | '$')) => {
                                    self.pos += 1;
                                    out.push(e);
                                }
                                Some(e) if e == self.escape => {
                                    self.pos += 1;
                                    out.push(e);
                                }
                                _ => out.push(n),
                            }
                        }
                        Some(n) => {
                            self.pos += 1;
                            out.push(n);
                        }
                    }
                }
            } else if c == '$' {
                out.push_str(&self.dollar()?);
            } else {
                out.push(c);
            }
        }
        if stop.is_some() {
            return Err(ShellError::UnterminatedBrace(self.source.to_string()));
        }
        Ok(out)
    }

    /// After a `$`: `NAME`, `{NAME}`, `{NAME<op>word}`, or a literal `$`.
    fn dollar(&mut self) -> Result<String, ShellError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                match self.peek() {
                    Some('}') => {
                        self.pos += 1;
                        Ok((self.lookup)(&name).unwrap_or_default())
                    }
                    Some(':') | Some('-') | Some('+') | Some('?') => {
                        let colon = self.peek() == Some(':');
                        if colon {
                            self.pos += 1;
                        }
                        let op = self
                            .peek()
                            .ok_or_else(|| ShellError::UnterminatedBrace(self.source.into()))?;
                        self.pos += 1;
                        let word = self.word(Some('}'))?;
                        self.pos += 1;
                        let value = (self.lookup)(&name);
                        let set = match (&value, colon) {
                            (Some(v), true) => !v.is_empty(),
                            (Some(_), false) => true,
                            (None, _) => false,
                        };
                        match op {
                            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                            '+' => Ok(if set { word } else { String::new() }),
                            '?' if set => Ok(value.unwrap_or_default()),
                            '?' => Err(ShellError::Required(
                                name,
                                if word.is_empty() {
                                    "is not allowed to be unset".into()
                                } else {
                                    word
                                },
                            )),
                            other => Err(ShellError::BadModifier(
                                format!("{}{other}", if colon { ":" } else { "" }),
                                self.source.to_string(),
                            )),
                        }
                    }
                    None => Err(ShellError::UnterminatedBrace(self.source.to_string())),
                    Some(other) => Err(ShellError::BadModifier(
                        other.to_string(),
                        self.source.to_string(),
                    )),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                Ok((self.lookup)(&name).unwrap_or_default())
            }
            _ => Ok("$".to_string()),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("a b".into()),
            _ => None,
        }
    }

    fn x(word: &str) -> String {
        expand(word, '\\', &env).unwrap()
    }

    #[test]
    fn substitution_forms() {
        assert_eq!(x("$A"), "alpha");
        assert_eq!(x("${A}x"), "alphax");
        assert_eq!(x("$Ax"), "");
        assert_eq!(x("${B:-def}"), "def");
        assert_eq!(x("${EMPTY:-def}"), "def");
        assert_eq!(x("${EMPTY-def}"), "");
        assert_eq!(x("${A:-def}"), "alpha");
        assert_eq!(x("${A:+set}"), "set");
        assert_eq!(x("${B:+set}"), "");
        assert_eq!(x("${EMPTY+set}"), "set");
        assert_eq!(x("${B:-${A}-x}"), "alpha-x");
        assert_eq!(x("cost $5"), "cost $5");
        assert!(matches!(
            expand("${B:?need B}", '\\', &env),
            Err(ShellError::Required(..))
        ));
        assert!(expand("${A", '\\', &env).is_err());
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A b\""), "alpha b");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("\"a\\\"b\""), "a\"b");
        assert_eq!(expand("`$A", '`', &env).unwrap(), "$A");
        assert!(expand("'open", '\\', &env).is_err());
    }

    #[test]
    fn words_split_outside_quotes() {
        assert_eq!(
            split_words("a \"b c\" d\\ e  'f g'", '\\').unwrap(),
            vec!["a", "\"b c\"", "d\\ e", "'f g'"]
        );
        assert!(split_words("a \"b", '\\').is_err());
    }
}
