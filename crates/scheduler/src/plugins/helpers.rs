//! Matching rules several plugins share: tolerations against taints, node selector terms
//! against node labels, label selectors against pod labels (`v1helper`, `labels.Selector`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `toleration` tolerates `taint` (`Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

/// Whether `value` (a label's or a field's, if the node has it) meets the requirement.
fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    let listed = |v: &str| values.iter().any(|x| x == v);
    match req.operator.as_str() {
        "In" => value.is_some_and(listed),
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches a node's labels and name (`matchFields` supports
/// `metadata.name`); an empty term matches nothing.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    // Called for every node a pod is filtered against: no allocation here.
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let field = (r.key == "metadata.name").then_some(name);
            requirement_matches(r, field)
        })
}

/// Whether a label selector matches labels; `None` matches nothing, an empty selector
/// everything (`metav1.LabelSelectorAsSelector`).
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let match_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    match_labels
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or(&[]);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => !value.is_some_and(|v| values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn tolerations_match_key_value_effect_and_exists() {
        let t = taint("k", "v", "NoSchedule");
        let equal = Toleration {
            key: Some("k".into()),
            value: Some("v".into()),
            ..Default::default()
        };
        let wrong = Toleration {
            key: Some("k".into()),
            value: Some("w".into()),
            ..Default::default()
        };
        let exists_all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let other_effect = Toleration {
            key: Some("k".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        assert!(tolerates(&equal, &t));
        assert!(!tolerates(&wrong, &t));
        assert!(tolerates(&exists_all, &t));
        assert!(!tolerates(&other_effect, &t));
    }

    #[test]
    fn node_selector_terms_support_set_and_numeric_operators() {
        let labels = BTreeMap::from([
            ("zone".to_owned(), "a".to_owned()),
            ("n".to_owned(), "5".to_owned()),
        ]);
        let term = |op: &str, key: &str, values: &[&str]| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_fields: None,
        };
        assert!(term_matches(
            &term("In", "zone", &["a", "b"]),
            &labels,
            "n1"
        ));
        assert!(!term_matches(&term("NotIn", "zone", &["a"]), &labels, "n1"));
        assert!(term_matches(&term("Gt", "n", &["4"]), &labels, "n1"));
        assert!(term_matches(
            &term("DoesNotExist", "gpu", &[]),
            &labels,
            "n1"
        ));
        assert!(!term_matches(&NodeSelectorTerm::default(), &labels, "n1"));
    }
}
