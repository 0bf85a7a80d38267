//! A small subset of Go templates, enough for `--format` as Docker users write it:
//! `{{.Field.Sub}}`, `{{json .Field}}`, `{{.}}`, and a leading `table`.

use serde_json::Value;

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(render_value).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(_) => {
            let inner: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}:{}", render_value(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        other => other.to_string(),
    }
}

/// An error in a template.
#[derive(Debug, thiserror::Error)]
#[error("template parsing error: {0}")]
pub struct TemplateError(String);

/// Renders `template` against `value`.
pub fn render(template: &str, value: &Value) -> Result<String, TemplateError> {
    let template = template
        .strip_prefix("table")
        .unwrap_or(template)
        .trim_start();
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError(format!("unclosed action in {template:?}")))?;
        let action = after[..end].trim();
        let (func, path) = match action.split_once(char::is_whitespace) {
            Some((f, p)) => (Some(f), p.trim()),
            None => (None, action),
        };
        if !path.starts_with('.') {
            return Err(TemplateError(format!(
                "unsupported action {{{{{action}}}}}"
            )));
        }
        let v = lookup(value, path).cloned().unwrap_or(Value::Null);
        match func {
            None => out.push_str(&render_value(&v)),
            Some("json") => out.push_str(&v.to_string()),
            Some("lower") => out.push_str(&render_value(&v).to_lowercase()),
            Some("upper") => out.push_str(&render_value(&v).to_uppercase()),
            Some(f) => return Err(TemplateError(format!("function {f:?} not defined"))),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_json() {
        let v = json!({"State": {"Status": "running", "ExitCode": 0}, "Name": "/web"});
        assert_eq!(render("{{.State.Status}}", &v).unwrap(), "running");
        assert_eq!(
            render("{{.State.ExitCode}} {{.Name}}", &v).unwrap(),
            "0 /web"
        );
        assert_eq!(
            render("{{json .State}}", &v).unwrap(),
            r#"{"ExitCode":0,"Status":"running"}"#
        );
        assert_eq!(render("table {{.Name}}\\t!", &v).unwrap(), "/web\t!");
        assert!(render("{{.Name", &v).is_err());
        assert!(render("{{printf .Name}}", &v).is_err());
    }
}
