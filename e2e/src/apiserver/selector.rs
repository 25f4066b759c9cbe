//! Label and field selectors as the `labelSelector` / `fieldSelector` query parameters carry
//! them (`k8s.io/apimachinery/pkg/labels` and `pkg/fields` syntax). Parsing and matching only;
//! no IO. Label requirements: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`
//! (`!=` and `notin` match objects without the label, as upstream). Fields: `metadata.name` and
//! `metadata.namespace` with `=`, `==`, `!=`; any other field is refused like upstream refuses a
//! field label the resource does not support.

use std::collections::BTreeSet;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `k` — the label is present.
    Exists(String),
    /// `!k` — the label is absent.
    NotExists(String),
    /// `k=v` / `k==v`.
    Equals(String, String),
    /// `k!=v` — absent or different.
    NotEquals(String, String),
    /// `k in (a,b)`.
    In(String, BTreeSet<String>),
    /// `k notin (a,b)` — absent or not listed.
    NotIn(String, BTreeSet<String>),
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// A conjunction of (field, equal?, value) terms on `metadata.name` / `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(Field, bool, String)>);

/// A selectable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `metadata.name`
    Name,
    /// `metadata.namespace`
    Namespace,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_')
}

fn is_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Split at commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn value(v: &str, whole: &str) -> Result<String, String> {
    let v = v.trim();
    if is_value(v) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "invalid label value: \"{v}\" in selector \"{whole}\""
        ))
    }
}

fn value_set(rest: &str, whole: &str) -> Result<BTreeSet<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value list in \"{whole}\""))?;
    inner.split(',').map(|v| value(v, whole)).collect()
}

impl LabelSelector {
    /// Parse a `labelSelector` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        split_top_level(s)
            .into_iter()
            .map(|part| Self::requirement(part.trim(), s))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn requirement(part: &str, whole: &str) -> Result<Requirement, String> {
        if let Some(key) = part.strip_prefix('!') {
            let key = key.trim();
            if key.is_empty() || !key.chars().all(is_key_char) {
                return Err(format!("invalid label key in selector \"{whole}\""));
            }
            return Ok(Requirement::NotExists(key.to_owned()));
        }
        let end = part.find(|c| !is_key_char(c)).unwrap_or(part.len());
        let (key, rest) = part.split_at(end);
        if key.is_empty() {
            return Err(format!("invalid label key in selector \"{whole}\""));
        }
        let key = key.to_owned();
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(Requirement::Exists(key));
        }
        if let Some(v) = rest.strip_prefix("!=") {
            return Ok(Requirement::NotEquals(key, value(v, whole)?));
        }
        if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            return Ok(Requirement::Equals(key, value(v, whole)?));
        }
        if let Some(v) = rest.strip_prefix("notin") {
            return Ok(Requirement::NotIn(key, value_set(v, whole)?));
        }
        if let Some(v) = rest.strip_prefix("in") {
            return Ok(Requirement::In(key, value_set(v, whole)?));
        }
        Err(format!(
            "unsupported label selector operator in \"{part}\" of \"{whole}\""
        ))
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.contains(x)),
        })
    }
}

impl FieldSelector {
    /// Parse a `fieldSelector` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (field, equal, v) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term \"{part}\""));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            terms.push((field, equal, v.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether an object satisfies every term (a cluster-scoped object's namespace is "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, v)| {
            let actual = match field {
                Field::Name => obj["metadata"]["name"].as_str(),
                Field::Namespace => obj["metadata"]["namespace"].as_str(),
            }
            .unwrap_or("");
            (actual == v) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(labels: &[(&str, &str)]) -> Value {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({"metadata": {"name": "a", "namespace": "ns1", "labels": labels}})
    }

    #[test]
    fn every_operator_matches_like_upstream() {
        let o = obj(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app in(db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app=web,tier in (front,back),!canary", true),
            ("app=web,tier=back", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for sel in ["app in web", "=x", "app=b@d", "app>", "!"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selector_matches_name_and_namespace_and_refuses_other_fields() {
        let o = obj(&[]);
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=ns1"));
        assert!(!m("metadata.namespace!=ns1"));
        assert!(m("metadata.name!=b"));
        assert!(FieldSelector::parse("spec.type=LoadBalancer").is_err());
    }

    proptest! {
        /// A rendered selector parses back to requirements whose matching agrees with a direct
        /// evaluation of the same requirements.
        #[test]
        fn parsed_selector_agrees_with_model(
            labels in proptest::collection::btree_map("[a-c]", "[x-z]", 0..3),
            reqs in proptest::collection::vec((0u8..6, "[a-c]", proptest::collection::btree_set("[x-z]", 1..3)), 0..4),
        ) {
            let o = json!({"metadata": {"labels": labels}});
            let mut text = Vec::new();
            let mut model = true;
            for (op, key, vals) in &reqs {
                let first = vals.iter().next().cloned().unwrap_or_default();
                let list = vals.iter().cloned().collect::<Vec<_>>().join(",");
                let got = labels.get(key);
                let (s, ok) = match op {
                    0 => (key.clone(), got.is_some()),
                    1 => (format!("!{key}"), got.is_none()),
                    2 => (format!("{key}={first}"), got == Some(&first)),
                    3 => (format!("{key}!={first}"), got != Some(&first)),
                    4 => (format!("{key} in ({list})"), got.is_some_and(|g| vals.contains(g))),
                    _ => (format!("{key} notin ({list})"), !got.is_some_and(|g| vals.contains(g))),
                };
                text.push(s);
                model &= ok;
            }
            let sel = LabelSelector::parse(&text.join(",")).unwrap();
            prop_assert_eq!(sel.matches(&o), model);
        }
    }
}
