//! `responseOverride`: the local responses and redirects a rule's routes answer matching
//! upstream responses with, checked as Envoy Gateway's CRD and translator check them (a body
//! from a ConfigMap is read from the index).

use super::parser::Parser;
use crate::index::Index;
use crate::ir::route::*;
use flotilla_model::{Kind, Object, ResourceKey};
use serde_json::Value;

/// Gateway API's `PreciseHostname`: a lowercase RFC 1123 subdomain, no wildcard.
fn is_precise_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Parser<'_> {
    pub(super) fn response_overrides(
        &mut self,
        ix: &Index,
        key: &ResourceKey,
    ) -> Vec<ResponseOverride> {
        let Some(list) = self.get("/responseOverride").and_then(Value::as_array) else {
            return vec![];
        };
        let mut out = Vec::new();
        for ro in list {
            let mut o = ResponseOverride::default();
            for s in ro
                .pointer("/match/statusCodes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let code = |p: &str| {
                    s.pointer(p)
                        .and_then(Value::as_u64)
                        .and_then(|c| u32::try_from(c).ok())
                        .filter(|c| (100..=599).contains(c))
                };
                match s.get("type").and_then(Value::as_str).unwrap_or("Value") {
                    "Range" => match (code("/range/start"), code("/range/end")) {
                        (Some(a), Some(b)) if a <= b => o.statuses.push(StatusMatch::Range(a, b)),
                        _ => self.err("ResponseOverride", format!("invalid status range {s}")),
                    },
                    _ => match code("/value") {
                        Some(c) => o.statuses.push(StatusMatch::Value(c)),
                        None => self.err("ResponseOverride", format!("invalid status code {s}")),
                    },
                }
            }
            for h in ro
                .pointer("/match/responseHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
                let value = h
                    .pointer("/value/value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let m = match h.pointer("/value/type").and_then(Value::as_str) {
                    None | Some("Exact") => ValueMatch::Exact(value),
                    Some("Prefix") => ValueMatch::Prefix(value),
                    Some("Suffix") => ValueMatch::Suffix(value),
                    Some("RegularExpression") => {
                        if let Err(e) = crate::values::check_regex(&value) {
                            self.err("ResponseOverride", e);
                            continue;
                        }
                        ValueMatch::Regex(value)
                    }
                    Some(t) => {
                        self.err("ResponseOverride", format!("unsupported match type {t}"));
                        continue;
                    }
                };
                if name.is_empty() {
                    self.err(
                        "ResponseOverride",
                        "a response header match needs a name".into(),
                    );
                    continue;
                }
                o.headers.push((name.to_ascii_lowercase(), m));
            }
            if o.statuses.is_empty() && o.headers.is_empty() {
                continue;
            }
            if let Some(r) = ro.get("redirect").filter(|r| !r.is_null()) {
                if ro.get("response").is_some_and(|r| !r.is_null()) {
                    self.err(
                        "ResponseOverride",
                        "exactly one of response or redirect must be specified".into(),
                    );
                    continue;
                }
                if let Some(r) = self.redirect(r) {
                    o.redirect = Some(r);
                    out.push(o);
                }
                continue;
            }
            o.content_type = ro
                .pointer("/response/contentType")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.status = ro
                .pointer("/response/statusCode")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok());
            if let Some(c) = ro.pointer("/response/statusCode") {
                if !o.status.is_some_and(|c| (200..=599).contains(&c)) {
                    self.err("ResponseOverride", format!("invalid statusCode {c}"));
                }
            }
            if let Some(b) = ro.pointer("/response/body") {
                match b.get("type").and_then(Value::as_str).unwrap_or("Inline") {
                    "ValueRef" => {
                        let name = b
                            .pointer("/valueRef/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let ns = &key.namespace;
                        let cm = ResourceKey::new(&key.cluster, Kind::ConfigMap, ns, name);
                        match ix.resources.get(&cm).map(|r| &r.object) {
                            Some(Object::ConfigMap(c)) => {
                                match c.data.as_ref().and_then(|d| d.get("response.body")) {
                                    Some(v) => o.body = Some(v.clone()),
                                    None => self.err(
                                        "ResponseOverride",
                                        format!(
                                            "can't find the key response.body in the referenced configmap {name}"
                                        ),
                                    ),
                                }
                            }
                            _ => self.err(
                                "ResponseOverride",
                                format!("can't find the referenced configmap {ns}/{name}"),
                            ),
                        }
                    }
                    _ => {
                        o.body = b.get("inline").and_then(Value::as_str).map(str::to_string);
                    }
                }
            }
            out.push(o);
        }
        out
    }

    /// A response override's `redirect`, checked as Envoy Gateway's CRD checks it (scheme
    /// `http` or `https`, a precise hostname, `ReplaceFullPath` only, a port, 301 or 302).
    fn redirect(&mut self, r: &Value) -> Option<Redirect> {
        let mut errs: Vec<String> = Vec::new();
        let text = |f: &str| r.pointer(f).filter(|v| !v.is_null());
        let scheme = match text("/scheme") {
            None => None,
            Some(Value::String(s)) if s == "http" || s == "https" => Some(s.clone()),
            Some(v) => {
                errs.push(format!("unsupported scheme {v}, must be http or https"));
                None
            }
        };
        let hostname = match text("/hostname") {
            None => None,
            Some(Value::String(h)) if is_precise_hostname(h) => Some(h.clone()),
            Some(v) => {
                errs.push(format!("invalid hostname {v}"));
                None
            }
        };
        let path = match text("/path") {
            None => None,
            Some(p) => match (
                p.get("type").and_then(Value::as_str),
                p.get("replaceFullPath").and_then(Value::as_str),
            ) {
                // A path of visible ASCII that starts with `/`: anything else makes no URL.
                (Some("ReplaceFullPath"), Some(f))
                    if f.starts_with('/') && f.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Some(f.to_string())
                }
                (Some("ReplaceFullPath"), f) => {
                    errs.push(format!("invalid replaceFullPath {f:?}"));
                    None
                }
                _ => {
                    errs.push("only ReplaceFullPath is supported for path.type".into());
                    None
                }
            },
        };
        let port = match text("/port") {
            None => None,
            Some(v) => match v.as_u64().filter(|p| (1..=65_535).contains(p)) {
                Some(p) => Some(p as u32),
                None => {
                    errs.push(format!("invalid port {v}"));
                    None
                }
            },
        };
        let status = match text("/statusCode") {
            // Envoy Gateway's CRD default.
            None => 302,
            Some(v) => match v.as_u64().filter(|c| *c == 301 || *c == 302) {
                Some(c) => c as u32,
                None => {
                    errs.push(format!("unsupported statusCode {v}, must be 301 or 302"));
                    302
                }
            },
        };
        if !errs.is_empty() {
            for e in errs {
                self.err("ResponseOverride", format!("redirect: {e}"));
            }
            return None;
        }
        Some(Redirect {
            scheme,
            hostname,
            path,
            port,
            status,
        })
    }
}
