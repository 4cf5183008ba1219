//! `labelSelector` and `fieldSelector` query parameters, parsed as the apiserver does
//! (k8s.io/apimachinery `labels.Parse` and `fields.ParseSelector`), for list and watch.

use serde_json::Value;

use super::status::{ApiError, Result};

#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, PartialEq)]
enum FieldReq {
    Eq(String, String),
    NotEq(String, String),
}

/// The selectors of one list or watch request; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Splits on commas outside parentheses (`a in (x,y),b`).
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
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
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_set(key: &str, rest: &str) -> Result<(String, Vec<String>)> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!("unable to parse requirement: {key} {rest}"))
        })?;
    let values = inner.split(',').map(|v| v.trim().to_string()).collect();
    Ok((key.to_string(), values))
}

fn parse_label(term: &str) -> Result<LabelReq> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key.trim().to_string()));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(LabelReq::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Ok(LabelReq::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once('=') {
        return Ok(LabelReq::Eq(k.trim().into(), v.trim().into()));
    }
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        if key.contains(['(', ')', ' ']) {
            return Err(ApiError::bad_request(format!(
                "unable to parse requirement: {term}"
            )));
        }
        return Ok(LabelReq::Exists(key.into()));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        let (k, vs) = parse_set(key, set)?;
        return Ok(LabelReq::NotIn(k, vs));
    }
    if let Some(set) = rest.strip_prefix("in") {
        let (k, vs) = parse_set(key, set)?;
        return Ok(LabelReq::In(k, vs));
    }
    Err(ApiError::bad_request(format!(
        "unable to parse requirement: {term}"
    )))
}

fn parse_field(term: &str) -> Result<FieldReq> {
    let (key, value, eq) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, v, true)
    } else {
        return Err(ApiError::bad_request(format!(
            "invalid selector: '{term}'; can't understand '{term}'"
        )));
    };
    let key = key.trim();
    if key != "metadata.name" && key != "metadata.namespace" {
        return Err(ApiError::bad_request(format!(
            "field label not supported: {key}"
        )));
    }
    let (key, value) = (key.to_string(), value.trim().to_string());
    Ok(if eq {
        FieldReq::Eq(key, value)
    } else {
        FieldReq::NotEq(key, value)
    })
}

impl Selectors {
    pub fn parse(label_selector: Option<&str>, field_selector: Option<&str>) -> Result<Self> {
        let labels = split_top(label_selector.unwrap_or_default())
            .into_iter()
            .map(parse_label)
            .collect::<Result<_>>()?;
        let fields = split_top(field_selector.unwrap_or_default())
            .into_iter()
            .map(parse_field)
            .collect::<Result<_>>()?;
        Ok(Self { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        let label = |k: &str| meta["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        let field = |k: &str| {
            let name = k.strip_prefix("metadata.").unwrap_or(k);
            meta[name].as_str().unwrap_or_default().to_string()
        };
        labels_ok
            && self.fields.iter().all(|req| match req {
                FieldReq::Eq(k, v) => field(k) == *v,
                FieldReq::NotEq(k, v) => field(k) != *v,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_and_equality_terms() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "x"}}});
        let sel = |l: &str, f: &str| Selectors::parse(Some(l), Some(f)).expect("parses");
        assert!(sel("app=web,tier in (x, y)", "metadata.name=a").matches(&obj));
        assert!(!sel("app notin (web)", "").matches(&obj));
        assert!(!sel("!tier", "").matches(&obj));
        assert!(sel("tier,app!=db", "metadata.namespace!=other").matches(&obj));
        assert!(Selectors::parse(None, Some("spec.x=1")).is_err());
    }
}
