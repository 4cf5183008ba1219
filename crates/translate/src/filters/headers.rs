//! The RequestHeaderModifier and ResponseHeaderModifier filters (Envoy Gateway's
//! `processRequestHeaderModifierFilter` / `processResponseHeaderModifierFilter`): which header
//! names and values may be added, set or removed.

use super::errors::unsupported;
use crate::status::StatusError;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use flotilla_model::gateway::HttpHeaderFilter;

/// Gateway API's header value pattern (RFC 7230): visible characters, single inner spaces or
/// tabs, no leading or trailing whitespace.
fn valid_header_value(v: &str) -> bool {
    let visible = |c: char| ('!'..='~').contains(&c);
    if v.is_empty()
        || !v.chars().next().is_some_and(visible)
        || !v.chars().last().is_some_and(visible)
    {
        return false;
    }
    let mut prev_ws = false;
    for c in v.chars() {
        if c == ' ' || c == '\t' {
            if prev_ws {
                return false;
            }
            prev_ws = true;
        } else if visible(c) {
            prev_ws = false;
        } else {
            return false;
        }
    }
    true
}

fn modifiable(name: &str) -> bool {
    !name.contains('/') && !name.contains(':') && !name.eq_ignore_ascii_case("host")
}

/// Is `name` a token Envoy accepts as a header name (RFC 7230 tchar)?
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_option(name: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: if append {
            HeaderAppendAction::AppendIfExistsOrAdd as i32
        } else {
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        },
        ..Default::default()
    }
}

/// A Request- or ResponseHeaderModifier filter (`which`) into the rule's add and remove lists.
pub(super) fn header_modifier(
    h: &HttpHeaderFilter,
    which: &str,
    add: &mut Vec<HeaderValueOption>,
    remove: &mut Vec<String>,
) -> Result<(), StatusError> {
    let request = which == "RequestHeaderModifier";
    let mut empty = true;
    let mut errs: Vec<String> = Vec::new();
    let has = |add: &Vec<HeaderValueOption>, n: &str| {
        add.iter().any(|o| {
            o.header
                .as_ref()
                .is_some_and(|h| h.key.eq_ignore_ascii_case(n))
        })
    };
    for (verb, list, append) in [("add", &h.add, true), ("set", &h.set, false)] {
        if !list.is_empty() {
            empty = false;
        }
        for hd in list {
            if hd.name.is_empty() {
                errs.push(format!(
                    "{which} Filter cannot {verb} a header with an empty name"
                ));
                continue;
            }
            if !modifiable(&hd.name) {
                // Envoy Gateway words the response case as "set" for both verbs.
                let verb = if request { verb } else { "set" };
                let tail = if request {
                    " To modify the Host header use the URLRewrite or the HTTPRouteFilter filter."
                } else {
                    ""
                };
                errs.push(format!(
                    "Header: {:?}. The {which} filter cannot {verb} the Host header or headers with a '/' or ':' character in them.{tail}",
                    hd.name
                ));
                continue;
            }
            if !valid_header_value(&hd.value) {
                errs.push(format!(
                    "Header: {:?}. {which} Filter cannot {verb} a header with an invalid value.",
                    hd.name
                ));
                continue;
            }
            if !valid_header_name(&hd.name) || has(add, &hd.name) {
                // Envoy would reject the name; a duplicate is ignored as Envoy Gateway does.
                continue;
            }
            add.push(header_option(&hd.name, &hd.value, append));
        }
    }
    if !h.remove.is_empty() {
        empty = false;
    }
    for r in &h.remove {
        if r.is_empty() {
            errs.push(format!(
                "{which} Filter cannot remove a header with an empty name"
            ));
            continue;
        }
        if !modifiable(r) {
            errs.push(format!(
                "Header: {r:?}. The {which} filter cannot remove the Host header or headers with a '/' or ':' character in them."
            ));
            continue;
        }
        if valid_header_name(r) && !remove.iter().any(|x| x.eq_ignore_ascii_case(r)) {
            remove.push(r.clone());
        }
    }
    if add.is_empty() && remove.is_empty() && !empty {
        let what = if request {
            "add/set/remove"
        } else {
            "add/remove"
        };
        return Err(unsupported(format!(
            "{which} Filter did not provide valid configuration to {what} any headers"
        )));
    }
    if !errs.is_empty() {
        return Err(unsupported(errs.join("\n")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc7230() {
        assert!(valid_header_value("a b"));
        assert!(valid_header_value("x"));
        assert!(!valid_header_value(""));
        assert!(!valid_header_value(" a"));
        assert!(!valid_header_value("a  b"));
        assert!(!valid_header_value("a\nb"));
    }
}
