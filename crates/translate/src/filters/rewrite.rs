//! The Gateway API's URLRewrite and RequestRedirect filters (Envoy Gateway's
//! `processURLRewriteFilter` / `processRedirectFilter`), with the hostname check they share.

use super::errors::unsupported;
use super::types::{Filtered, HostRewrite, PathRewrite, Redirect, UrlRewrite};
use crate::status::StatusError;
use envoy_types::pb::google::protobuf::BoolValue;
use flotilla_model::gateway::{HttpRequestRedirect, HttpUrlRewrite};

pub(super) const MULTIPLE_REWRITES: &str =
    "cannot configure multiple urlRewrite filters for a single HTTPRouteRule";

/// A URLRewrite filter; it conflicts with an earlier one setting the same part.
pub(super) fn url_rewrite(f: &mut Filtered, r: &HttpUrlRewrite) -> Result<(), StatusError> {
    let wants = r.hostname.is_some() || r.path.is_some();
    if let Some(ctx) = &f.url_rewrite {
        let conflicting = (r.hostname.is_some()
            && matches!(
                ctx.host,
                Some(HostRewrite::Header(_) | HostRewrite::Backend | HostRewrite::PathRegex(..))
            ))
            || (r.path.is_some() && matches!(ctx.path, Some(PathRewrite::Regex(..))));
        if (ctx.has_core() && wants) || conflicting {
            return Err(unsupported(MULTIPLE_REWRITES));
        }
    }
    if let Some(h) = &r.hostname {
        validate_hostname(h).map_err(unsupported)?;
        let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
        if ctx.host.is_none() {
            ctx.host = Some(HostRewrite::Literal(h.clone()));
        }
    }
    if let Some(p) = &r.path {
        let modifier = match p.type_.as_str() {
            "ReplaceFullPath" => {
                if p.replace_prefix_match.is_some() {
                    return Err(unsupported(
                        "ReplacePrefixMatch cannot be set when rewrite path type is \"ReplaceFullPath\"",
                    ));
                }
                let Some(v) = &p.replace_full_path else {
                    return Err(unsupported(
                        "ReplaceFullPath must be set when rewrite path type is \"ReplaceFullPath\"",
                    ));
                };
                PathRewrite::Full(v.clone())
            }
            "ReplacePrefixMatch" => {
                if p.replace_full_path.is_some() {
                    return Err(unsupported(
                        "ReplaceFullPath cannot be set when rewrite path type is \"ReplacePrefixMatch\"",
                    ));
                }
                let Some(v) = &p.replace_prefix_match else {
                    return Err(unsupported(
                        "ReplacePrefixMatch must be set when rewrite path type is \"ReplacePrefixMatch\"",
                    ));
                };
                PathRewrite::Prefix(v.clone())
            }
            other => {
                return Err(unsupported(format!(
                    "rewrite path type: {other} is invalid, only \"ReplaceFullPath\" and \"ReplacePrefixMatch\" are supported"
                )))
            }
        };
        let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
        if ctx.path.is_none() {
            ctx.path = Some(modifier);
        }
    }
    Ok(())
}

/// A RequestRedirect filter (at most one per rule).
pub(super) fn redirect(
    f: &mut Filtered,
    r: Option<&HttpRequestRedirect>,
) -> Result<(), StatusError> {
    if f.redirect.is_some() {
        return Err(unsupported(
            "cannot configure multiple requestRedirect filters for a single HTTPRouteRule",
        ));
    }
    let Some(r) = r else { return Ok(()) };
    let mut out = Redirect::default();
    if let Some(s) = &r.scheme {
        if s != "http" && s != "https" {
            return Err(unsupported(format!(
                "scheme: {s} is unsupported, only 'https' and 'http' are supported"
            )));
        }
        out.scheme = Some(s.clone());
    }
    if let Some(h) = &r.hostname {
        validate_hostname(h).map_err(unsupported)?;
        out.hostname = Some(h.clone());
    }
    if let Some(p) = &r.path {
        match p.type_.as_str() {
            "ReplaceFullPath" => out.path = p.replace_full_path.clone().map(PathRewrite::Full),
            "ReplacePrefixMatch" => {
                out.path = p.replace_prefix_match.clone().map(PathRewrite::Prefix)
            }
            other => {
                return Err(unsupported(format!(
                    "redirect path type: {other} is invalid, only \"ReplaceFullPath\" and \"ReplacePrefixMatch\" are supported"
                )))
            }
        }
    }
    if let Some(code) = r.status_code {
        // Every code Envoy's RedirectResponseCode has (the Gateway API enum: 301, 302, 303, 307,
        // 308); the message for any other is Envoy Gateway's.
        if !matches!(code, 301 | 302 | 303 | 307 | 308) {
            return Err(unsupported(format!(
                "status code {code} is invalid, only 302 and 301 are supported"
            )));
        }
        out.status_code = Some(code);
    }
    if let Some(port) = r.port {
        out.port = u32::try_from(port).ok().filter(|p| (1..=65535).contains(p));
    }
    f.redirect = Some(out);
    Ok(())
}

/// Kubernetes' RFC 1123 subdomain check, worded as Envoy Gateway's `validateHostname` reports it.
fn validate_hostname(h: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if h.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !h.split('.').all(label_ok) {
        errs.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("hostname {h:?} is invalid: [{}]", errs.join(" ")))
    }
}

/// Envoy's `auto_host_rewrite: true` (the host of the backend chosen).
pub(crate) fn auto_host_rewrite() -> BoolValue {
    BoolValue { value: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_rfc1123() {
        assert!(validate_hostname("rewrite.example.com").is_ok());
        let e = validate_hostname("-rewrite.com").unwrap_err();
        assert!(e.starts_with("hostname \"-rewrite.com\" is invalid: [a lowercase RFC 1123"));
    }
}
