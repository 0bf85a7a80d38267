//! The namespace's deletion conditions (`namespace_condition_utils.go`): what one pass
//! over the namespace's content found, and the five conditions that report it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Discovery failed for some or all groups.
pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
/// A discovered group version could not be parsed.
pub const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
/// Deleting some resource failed.
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
/// Objects are left in the namespace.
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
/// Objects left in the namespace wait for their finalizers.
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The condition types in the order they are first added to the status.
const TYPES: [&str; 5] = [
    DISCOVERY_FAILURE,
    GROUP_VERSION_PARSING_FAILURE,
    CONTENT_FAILURE,
    CONTENT_REMAINING,
    FINALIZERS_REMAINING,
];

/// What one deletion pass over a namespace found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Why discovery was incomplete.
    pub discovery_failure: Option<String>,
    /// A group version discovery returned that does not parse.
    pub parse_failure: Option<String>,
    /// Why deleting some resources failed, one message per resource.
    pub content_failures: Vec<String>,
    /// Objects left, by `resource.group` (`pods.` for the core group).
    pub remaining: BTreeMap<String, usize>,
    /// Objects left, by each finalizer they carry.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds the remaining content is expected to take to go.
    pub estimate: i64,
}

impl Outcome {
    /// Adds what is left of one resource (`resource.group`) and why its deletion failed.
    pub fn add(&mut self, resource: String, left: super::content::Left, failure: Option<String>) {
        self.estimate = self.estimate.max(left.estimate);
        if left.count > 0 {
            *self.remaining.entry(resource).or_default() += left.count;
            for (finalizer, n) in left.finalizers {
                *self.finalizers.entry(finalizer).or_default() += n;
            }
        }
        self.content_failures.extend(failure);
    }

    /// Everything that went wrong, joined, or `None` when the pass succeeded.
    pub fn error(&self) -> Option<String> {
        let errors: Vec<&str> = self
            .discovery_failure
            .iter()
            .chain(&self.parse_failure)
            .chain(&self.content_failures)
            .map(String::as_str)
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// The reason and message of condition `type_` when this outcome makes it true.
    fn failure(&self, type_: &str) -> Option<(&'static str, String)> {
        let listing = |counts: &BTreeMap<String, usize>, format: fn(&str, usize) -> String| {
            let mut parts: Vec<String> = counts.iter().map(|(k, n)| format(k, *n)).collect();
            parts.sort();
            parts.join(", ")
        };
        match type_ {
            DISCOVERY_FAILURE => self
                .discovery_failure
                .clone()
                .map(|m| ("DiscoveryFailed", m)),
            GROUP_VERSION_PARSING_FAILURE => self
                .parse_failure
                .clone()
                .map(|m| ("GroupVersionParsingFailed", m)),
            CONTENT_FAILURE if !self.content_failures.is_empty() => {
                let mut messages = self.content_failures.clone();
                messages.sort();
                Some((
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        messages.len(),
                        messages.join(", ")
                    ),
                ))
            }
            CONTENT_REMAINING if !self.remaining.is_empty() => Some((
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    listing(&self.remaining, |r, n| format!(
                        "{r} has {n} resource instances"
                    ))
                ),
            )),
            FINALIZERS_REMAINING if !self.finalizers.is_empty() => Some((
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    listing(&self.finalizers, |f, n| format!(
                        "{f} in {n} resource instances"
                    ))
                ),
            )),
            _ => None,
        }
    }
}

/// The reason and message of a condition type that reports nothing wrong.
fn ok_variant(type_: &str) -> (&'static str, &'static str) {
    match type_ {
        DISCOVERY_FAILURE => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        GROUP_VERSION_PARSING_FAILURE => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        CONTENT_FAILURE => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        CONTENT_REMAINING => ("ContentRemoved", "All content successfully removed"),
        _ => (
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
    }
}

/// The namespace's conditions after `outcome`, or `None` when they would not change.
/// Conditions of other types are kept; a condition's transition time moves only when its
/// status does.
pub fn update(
    current: &[NamespaceCondition],
    outcome: &Outcome,
    now: jiff::Timestamp,
) -> Option<Vec<NamespaceCondition>> {
    let mut conditions = current.to_vec();
    let mut changed = false;
    for type_ in TYPES {
        let (status, reason, message) = match outcome.failure(type_) {
            Some((reason, message)) => ("True", reason.to_owned(), message),
            None => {
                let (reason, message) = ok_variant(type_);
                ("False", reason.to_owned(), message.to_owned())
            }
        };
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: type_.to_owned(),
                    status: status.to_owned(),
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status
                    || c.reason.as_deref() != Some(&reason)
                    || c.message.as_deref() != Some(&message)
                {
                    if c.status != status {
                        c.last_transition_time = Some(Time(now));
                    }
                    c.status = status.to_owned();
                    c.reason = Some(reason);
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::content::Left;

    fn find<'a>(conditions: &'a [NamespaceCondition], type_: &str) -> &'a NamespaceCondition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn remaining_content_and_finalizers_are_reported_as_kubernetes_words_them() {
        let mut outcome = Outcome::default();
        outcome.add(
            "pods.".into(),
            Left {
                count: 2,
                ..Default::default()
            },
            None,
        );
        outcome.add(
            "configmaps.".into(),
            Left {
                count: 1,
                finalizers: [("example.com/hold".to_owned(), 1)].into(),
                estimate: 15,
            },
            None,
        );
        outcome.add(
            "widgets.example.com".into(),
            Left {
                count: 3,
                finalizers: [("example.com/hold".to_owned(), 3)].into(),
                estimate: 15,
            },
            None,
        );
        let now = jiff::Timestamp::UNIX_EPOCH;
        let conditions = update(&[], &outcome, now).unwrap();
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, TYPES);
        let remaining = find(&conditions, CONTENT_REMAINING);
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: configmaps. has 1 resource instances, \
                 pods. has 2 resource instances, widgets.example.com has 3 resource instances"
            )
        );
        let finalizers = find(&conditions, FINALIZERS_REMAINING);
        assert_eq!(finalizers.reason.as_deref(), Some("SomeFinalizersRemain"));
        assert_eq!(
            finalizers.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: \
                 example.com/hold in 4 resource instances"
            )
        );
        let discovery = find(&conditions, DISCOVERY_FAILURE);
        assert_eq!(discovery.status, "False");
        assert_eq!(discovery.reason.as_deref(), Some("ResourcesDiscovered"));
        assert_eq!(outcome.estimate, 15);
        assert_eq!(outcome.error(), None);
    }

    #[test]
    fn content_failures_are_sorted_and_counted() {
        let mut outcome = Outcome::default();
        outcome.add("b.".into(), Left::default(), Some("second".into()));
        outcome.add("a.".into(), Left::default(), Some("first".into()));
        let conditions = update(&[], &outcome, jiff::Timestamp::UNIX_EPOCH).unwrap();
        let failure = find(&conditions, CONTENT_FAILURE);
        assert_eq!(failure.status, "True");
        assert_eq!(failure.reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            failure.message.as_deref(),
            Some("Failed to delete all resource types, 2 remaining: first, second")
        );
        assert!(outcome.error().is_some());
    }

    #[test]
    fn unchanged_conditions_are_not_rewritten_and_transitions_keep_their_time() {
        let then = jiff::Timestamp::UNIX_EPOCH;
        let later = then + jiff::SignedDuration::from_secs(60);
        let mut outcome = Outcome::default();
        outcome.add(
            "pods.".into(),
            Left {
                count: 1,
                ..Default::default()
            },
            None,
        );
        let first = update(&[], &outcome, then).unwrap();
        assert_eq!(update(&first, &outcome, later), None);
        let done = update(&first, &Outcome::default(), later).unwrap();
        let remaining = find(&done, CONTENT_REMAINING);
        assert_eq!(remaining.status, "False");
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
        assert_eq!(remaining.last_transition_time, Some(Time(later)));
        let discovery = find(&done, DISCOVERY_FAILURE);
        assert_eq!(discovery.last_transition_time, Some(Time(then)));
    }
}
