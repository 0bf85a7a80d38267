//! CEL expressions, as the API server evaluates them in CustomResourceDefinition rules
//! (`crd/rules.rs`), admission webhooks' `matchConditions` and ValidatingAdmissionPolicies
//! (`admission/validating_policy.rs`): compiled once per source text (the `cel` crate),
//! JSON values bound as CEL values typed by their schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::objects::{Key, Map};
use cel::{Context, Program, Value as Cel};
use serde_json::Value;

/// Compiled expressions kept for reuse (by source text); cleared when it grows past this.
const CACHE_MAX: usize = 1024;

pub fn compiled(rule: &str) -> Result<Arc<Program>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Program>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(program) = cache.lock().unwrap().get(rule) {
        return Ok(program.clone());
    }
    let program = Arc::new(Program::compile(rule).map_err(|e| e.to_string())?);
    let mut cache = cache.lock().unwrap();
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(rule.to_owned(), program.clone());
    Ok(program)
}

/// Evaluates `expr` with `variables` bound (untyped JSON); whether it is true, or why it
/// could not be evaluated (including a result that is not a boolean).
pub fn evaluate_bool(expr: &str, variables: &[(&str, &Value)]) -> Result<bool, String> {
    let program = compiled(expr)?;
    let mut context = Context::default();
    for (name, value) in variables {
        context.add_variable_from_value(*name, to_cel(value, None));
    }
    match program.execute(&context).map_err(|e| e.to_string())? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!(
            "expression did not evaluate to a boolean: {other:?}"
        )),
    }
}

/// A JSON value as CEL sees it, typed by its schema where known: integers are `int`,
/// `number` fields are `double` even when written without a fraction.
pub fn to_cel(value: &Value, schema: Option<&Value>) -> Cel {
    let schema_type = schema
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (schema_type, n.as_i64()) {
            ("number", _) | (_, None) => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
            (_, Some(i)) => Cel::Int(i),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            Cel::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_schema)).collect(),
            ))
        }
        Value::Object(map) => {
            let properties = schema
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object);
            let additional = schema.and_then(|s| s.get("additionalProperties"));
            let entries: HashMap<Key, Cel> = map
                .iter()
                .map(|(k, v)| {
                    let s = properties.and_then(|p| p.get(k)).or(additional);
                    (Key::String(Arc::new(k.clone())), to_cel(v, s))
                })
                .collect();
            Cel::Map(Map {
                map: Arc::new(entries),
            })
        }
    }
}
