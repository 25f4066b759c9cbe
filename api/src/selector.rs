//! Kubernetes label selectors as a pure, validated value: `matchLabels` plus `matchExpressions`
//! with `In`, `NotIn`, `Exists`, `DoesNotExist`, exactly as the API server evaluates them.
//!
//! Parsing never panics on user input: an unknown operator, or `In`/`NotIn` without values, is a
//! [`SelectorError`]. An empty selector matches everything (the Kubernetes rule).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement of a selector; all requirements of a [`Selector`] must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    /// `key` is present and its value is one of the set (also how `matchLabels` entries are kept).
    In(String, Vec<String>),
    /// `key` is absent, or present with a value outside the set.
    NotIn(String, Vec<String>),
    /// `key` is present, whatever its value.
    Exists(String),
    /// `key` is absent.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

/// A parsed label selector. `Selector::default()` is the empty selector, which matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Why a `LabelSelector` could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The operator is not one of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error("matchExpressions[{index}]: unknown operator {operator:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator { index: usize, operator: String },
    /// `In`/`NotIn` need at least one value.
    #[error("matchExpressions[{index}]: operator {operator} needs at least one value")]
    MissingValues { index: usize, operator: String },
    /// `Exists`/`DoesNotExist` take no values.
    #[error("matchExpressions[{index}]: operator {operator} takes no values")]
    UnexpectedValues { index: usize, operator: String },
}

impl Selector {
    /// A selector made of the given requirements (all must hold).
    pub fn new(requirements: Vec<Requirement>) -> Self {
        let mut requirements = requirements;
        requirements.sort();
        Self { requirements }
    }

    /// Parses a Kubernetes `LabelSelector`.
    pub fn parse(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let operator = expr.operator.clone();
            let requirement = match operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::MissingValues { index, operator })
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::UnexpectedValues { index, operator })
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => return Err(SelectorError::UnknownOperator { index, operator }),
            };
            requirements.push(requirement);
        }
        Ok(Self::new(requirements))
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the empty selector (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse(&LabelSelector::default()).unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let s = Selector::parse(&LabelSelector {
            match_labels: Some([("team".to_string(), "red".to_string())].into()),
            match_expressions: Some(vec![
                expr("tier", "In", &["web", "api"]),
                expr("env", "NotIn", &["prod"]),
                expr("zone", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        })
        .unwrap();
        assert!(s.matches(&labels(&[("team", "red"), ("tier", "web"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("team", "blue"), ("tier", "web"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("team", "red"), ("tier", "db"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[
            ("team", "red"),
            ("tier", "web"),
            ("zone", "a"),
            ("env", "prod")
        ])));
        assert!(!s.matches(&labels(&[("team", "red"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[
            ("team", "red"),
            ("tier", "web"),
            ("zone", "a"),
            ("legacy", "")
        ])));
    }

    #[test]
    fn not_in_matches_when_the_key_is_absent() {
        let s = Selector::parse(&LabelSelector {
            match_expressions: Some(vec![expr("env", "NotIn", &["prod"])]),
            ..Default::default()
        })
        .unwrap();
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn malformed_expressions_are_errors_not_panics() {
        let bad = |e| {
            Selector::parse(&LabelSelector {
                match_expressions: Some(vec![e]),
                ..Default::default()
            })
        };
        assert!(matches!(
            bad(expr("k", "Equals", &["v"])),
            Err(SelectorError::UnknownOperator { index: 0, .. })
        ));
        assert!(matches!(
            bad(expr("k", "In", &[])),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            bad(expr("k", "Exists", &["v"])),
            Err(SelectorError::UnexpectedValues { .. })
        ));
    }
}
