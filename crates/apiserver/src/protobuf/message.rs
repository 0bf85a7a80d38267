//! A generic mapping from k8s-pb messages to Kubernetes JSON.
//!
//! k8s-pb's prost messages have neither serde nor reflection: the one generic view of a
//! decoded message's fields is the `Debug` rendering prost derives for every message
//! (`Name { field: Some(value), list: [..], map: {"k": v} }`, declaration order, no field
//! skipped). [`to_json`] parses that rendering into a [`Shown`] tree and walks it beside the
//! OpenAPI schema of the matching k8s-openapi type, which supplies what the rendering lacks:
//! the JSON field names (`pod_ip` is `podIP`), and which strings are base64 `bytes`.
//!
//! Kubernetes' protobuf cannot tell a Go pointer set to its zero value from a non-pointer
//! field left at zero (both are on the wire). JSON omits the latter, so empty strings,
//! empty lists and maps, zero times and zero `IntOrString`s are dropped, as
//! Go's `omitempty` would; zero numbers and `false` are kept, because for pointer fields
//! (`replicas: 0`, `allowPrivilegeEscalation: false`) they are what the client asked for.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

/// Why a rendering could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The `Debug` rendering did not parse (a prost change this module does not know).
    #[error("unexpected message rendering at offset {offset}: {what}")]
    Syntax {
        /// Byte offset into the rendering.
        offset: usize,
        /// What was expected.
        what: &'static str,
    },
}

/// A parsed `Debug` rendering of a prost message.
#[derive(Clone, Debug, PartialEq)]
pub enum Shown {
    /// `None`.
    Absent,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string.
    Str(String),
    /// A repeated field (or `bytes`, as a list of numbers).
    List(Vec<Shown>),
    /// A map field.
    Map(Vec<(String, Shown)>),
    /// A message: its type name and fields.
    Message(String, Vec<(String, Shown)>),
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> MessageError {
        MessageError::Syntax {
            offset: self.pos,
            what,
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str, what: &'static str) -> Result<(), MessageError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn ident(&mut self) -> String {
        self.skip_space();
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '#'))
            .unwrap_or(self.rest().len());
        let ident = self.rest()[..len].to_owned();
        self.pos += len;
        ident
    }

    fn value(&mut self) -> Result<Shown, MessageError> {
        self.skip_space();
        let text = self.text;
        let rest = &text[self.pos..];
        let first = rest.chars().next().ok_or_else(|| self.err("a value"))?;
        match first {
            '"' => Ok(Shown::Str(self.string()?)),
            '[' => {
                self.pos += 1;
                let mut items = Vec::new();
                while !self.eat("]") {
                    items.push(self.value()?);
                    if !self.eat(",") {
                        self.expect("]", "',' or ']'")?;
                        break;
                    }
                }
                Ok(Shown::List(items))
            }
            '{' => {
                self.pos += 1;
                let mut entries = Vec::new();
                while !self.eat("}") {
                    self.skip_space();
                    let key = self.string()?;
                    self.expect(":", "':' after a map key")?;
                    entries.push((key, self.value()?));
                    if !self.eat(",") {
                        self.expect("}", "',' or '}'")?;
                        break;
                    }
                }
                Ok(Shown::Map(entries))
            }
            c if c == '-' || c.is_ascii_digit() => {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "-+.".contains(c)))
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(Shown::Number(rest[..len].to_owned()))
            }
            _ => {
                let ident = self.ident();
                match ident.as_str() {
                    "" => Err(self.err("a value")),
                    "None" => Ok(Shown::Absent),
                    "true" => Ok(Shown::Bool(true)),
                    "false" => Ok(Shown::Bool(false)),
                    "inf" | "NaN" => Ok(Shown::Number(ident)),
                    "Some" => {
                        self.expect("(", "'(' after Some")?;
                        let inner = self.value()?;
                        self.expect(")", "')' closing Some")?;
                        Ok(inner)
                    }
                    _ => {
                        let mut fields = Vec::new();
                        if self.eat("{") {
                            while !self.eat("}") {
                                let name = self.ident();
                                if name.is_empty() {
                                    return Err(self.err("a field name"));
                                }
                                self.expect(":", "':' after a field name")?;
                                let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
                                fields.push((name, self.value()?));
                                if !self.eat(",") {
                                    self.expect("}", "',' or '}'")?;
                                    break;
                                }
                            }
                        }
                        Ok(Shown::Message(ident, fields))
                    }
                }
            }
        }
    }

    /// A string in Rust's `Debug` escaping.
    fn string(&mut self) -> Result<String, MessageError> {
        if !self.rest().starts_with('"') {
            return Err(self.err("a string"));
        }
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let (_, esc) = chars.next().ok_or_else(|| self.err("an escape"))?;
                    match esc {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'u' => {
                            let mut hex = String::new();
                            for (_, h) in chars.by_ref() {
                                match h {
                                    '{' => {}
                                    '}' => break,
                                    h => hex.push(h),
                                }
                            }
                            let c = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.err("a unicode escape"))?;
                            out.push(c);
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
        Err(self.err("a closing quote"))
    }
}

/// Parses a prost message's `Debug` rendering.
pub fn parse(rendering: &str) -> Result<Shown, MessageError> {
    let mut parser = Parser {
        text: rendering,
        pos: 0,
    };
    let value = parser.value()?;
    parser.skip_space();
    if parser.pos != rendering.len() {
        return Err(parser.err("the end of the rendering"));
    }
    Ok(value)
}

/// Resolves `$ref`s (bare or in a one-element `allOf`) against `definitions`.
fn resolve<'a>(definitions: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let target = schema
            .get("$ref")
            .or_else(|| {
                schema
                    .get("allOf")
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 1)
                    .and_then(|a| a[0].get("$ref"))
            })
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .and_then(|name| definitions.get(name));
        match target {
            Some(next) => schema = next,
            None => break,
        }
    }
    schema
}

/// `pod_ip`, `podIP` and `PodIp` all normalize to `podip`.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Maps a parsed message to Kubernetes JSON, guided by `schema` (resolved against
/// `definitions`). Returns `None` for values JSON would omit.
pub fn to_json(shown: &Shown, schema: &Value, definitions: &Map<String, Value>) -> Option<Value> {
    let schema = resolve(definitions, schema);
    match shown {
        Shown::Absent => None,
        Shown::Bool(b) => Some(json!(b)),
        Shown::Number(n) => Some(number(n)),
        Shown::Str(s) if s.is_empty() => None,
        Shown::Str(s) => Some(json!(s)),
        Shown::List(items) if items.is_empty() => None,
        Shown::List(items) => {
            let is_bytes = schema.get("format").and_then(Value::as_str) == Some("byte")
                || schema.get("type").and_then(Value::as_str) == Some("string");
            if is_bytes {
                return Some(json!(BASE64.encode(bytes(items))));
            }
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            Some(Value::Array(
                items
                    .iter()
                    .map(|item| element(item, item_schema, definitions))
                    .collect(),
            ))
        }
        Shown::Map(entries) if entries.is_empty() => None,
        Shown::Map(entries) => {
            let value_schema = schema.get("additionalProperties").unwrap_or(&Value::Null);
            Some(Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), element(v, value_schema, definitions)))
                    .collect(),
            ))
        }
        Shown::Message(name, fields) => message(name, fields, schema, definitions),
    }
}

/// A list element or map value: kept even when empty (`[""]`, `{"k": ""}`).
fn element(shown: &Shown, schema: &Value, definitions: &Map<String, Value>) -> Value {
    match shown {
        Shown::Str(s) => json!(s),
        Shown::List(items) if items.is_empty() => {
            let resolved = resolve(definitions, schema);
            if resolved.get("type").and_then(Value::as_str) == Some("string") {
                json!("")
            } else {
                json!([])
            }
        }
        Shown::Map(entries) if entries.is_empty() => json!({}),
        other => to_json(other, schema, definitions).unwrap_or_else(|| json!({})),
    }
}

fn number(n: &str) -> Value {
    if let Ok(i) = n.parse::<i64>() {
        json!(i)
    } else if let Ok(f) = n.parse::<f64>() {
        json!(f)
    } else {
        json!(n)
    }
}

fn bytes(items: &[Shown]) -> Vec<u8> {
    items
        .iter()
        .filter_map(|i| match i {
            Shown::Number(n) => n.parse::<u8>().ok(),
            _ => None,
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, Shown)], name: &str) -> Option<&'a Shown> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn int_field(fields: &[(String, Shown)], name: &str) -> i64 {
    match field(fields, name) {
        Some(Shown::Number(n)) => n.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The Go zero `time.Time` in Unix seconds (0001-01-01T00:00:00Z).
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn message(
    name: &str,
    fields: &[(String, Shown)],
    schema: &Value,
    definitions: &Map<String, Value>,
) -> Option<Value> {
    // The apimachinery types whose JSON form is not an object of their fields.
    match name {
        "IntOrString" => {
            return match (field(fields, "type"), field(fields, "str_val")) {
                (Some(Shown::Number(t)), Some(Shown::Str(s))) if t == "1" => Some(json!(s)),
                _ => match int_field(fields, "int_val") {
                    0 => None,
                    i => Some(json!(i)),
                },
            };
        }
        "Quantity" => {
            return match field(fields, "string") {
                Some(Shown::Str(s)) if !s.is_empty() => Some(json!(s)),
                _ => None,
            };
        }
        "Time" | "MicroTime" => {
            let seconds = int_field(fields, "seconds");
            let nanos = int_field(fields, "nanos");
            if seconds <= GO_ZERO_TIME || (seconds == 0 && nanos == 0) {
                return None;
            }
            let t = jiff::Timestamp::new(seconds, nanos as i32).ok()?;
            let format = if name == "Time" {
                "%Y-%m-%dT%H:%M:%SZ"
            } else {
                "%Y-%m-%dT%H:%M:%S.%6fZ"
            };
            return Some(json!(t.strftime(format).to_string()));
        }
        "Duration" if fields.len() == 1 => {
            let nanos = int_field(fields, "duration");
            return Some(json!(go_duration(nanos)));
        }
        "RawExtension" | "FieldsV1" | "Json" | "JSON" => {
            return match field(fields, "raw") {
                Some(Shown::List(items)) if !items.is_empty() => {
                    serde_json::from_slice(&bytes(items)).ok()
                }
                _ => None,
            };
        }
        _ => {}
    }
    // Castable types (`ExtraValue`, a message of `items`) are arrays in JSON.
    if schema.get("type").and_then(Value::as_str) == Some("array") {
        return match fields {
            [(_, inner)] => to_json(inner, schema, definitions),
            _ => None,
        };
    }
    let mut out = Map::new();
    fields_into(fields, schema, definitions, &mut out);
    Some(Value::Object(out))
}

/// Maps the fields of a message into `out`. A message field the schema does not name is a
/// Go struct embedded with `json:",inline"` (IngressRule's `ingressRuleValue`): its fields
/// belong to the enclosing object.
fn fields_into(
    fields: &[(String, Shown)],
    schema: &Value,
    definitions: &Map<String, Value>,
    out: &mut Map<String, Value>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for (field_name, value) in fields {
        let wanted = normalized(field_name);
        let property = properties.and_then(|p| p.iter().find(|(k, _)| normalized(k) == wanted));
        match (property, value) {
            (Some((json_name, property_schema)), _) => {
                if let Some(v) = to_json(value, property_schema, definitions) {
                    out.insert(json_name.clone(), v);
                }
            }
            (None, Shown::Message(_, inner)) => fields_into(inner, schema, definitions, out),
            (None, _) => {
                if let Some(v) = to_json(value, &Value::Null, definitions) {
                    out.insert(field_name.clone(), v);
                }
            }
        }
    }
}

/// Go's `time.Duration` string (`1h2m3s`, `1.5s`, `0s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    let (hours, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = rest as f64 / 1e9;
    let mut out = sign.to_owned();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prost_renderings() {
        let shown = parse(
            r#"Pod { metadata: Some(ObjectMeta { name: Some("a\"b\u{7}"), labels: {"k": ""} }), spec: None, ids: [1, -2], empty: Unit }"#,
        )
        .unwrap();
        let Shown::Message(name, fields) = shown else {
            panic!("not a message")
        };
        assert_eq!(name, "Pod");
        assert_eq!(fields[0].0, "metadata");
        let Shown::Message(_, meta) = &fields[0].1 else {
            panic!("metadata")
        };
        assert_eq!(meta[0].1, Shown::Str("a\"b\u{7}".into()));
        assert_eq!(
            meta[1].1,
            Shown::Map(vec![("k".into(), Shown::Str(String::new()))])
        );
        assert_eq!(fields[1].1, Shown::Absent);
        assert_eq!(
            fields[2].1,
            Shown::List(vec![Shown::Number("1".into()), Shown::Number("-2".into())])
        );
        assert_eq!(fields[3].1, Shown::Message("Unit".into(), vec![]));
    }

    #[test]
    fn formats_go_durations() {
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
    }
}
