//! ExtensionRef filters naming Envoy Gateway's HTTPRouteFilter: its URL rewrites (regex path,
//! host from a header, the backend or the path), direct response (inline or from a ConfigMap),
//! credential injection and cookie matches, checked as Envoy Gateway's
//! `processExtensionRefHTTPFilter` does.

use super::errors::{invalid_filter, unresolved_filter, unsupported};
use super::rewrite::MULTIPLE_REWRITES;
use super::types::{
    CookieMatch, DirectResponse, FilterScope, Filtered, HostRewrite, PathRewrite, UrlRewrite,
};
use crate::ir::route::RouteKind;
use crate::status::StatusError;
use flotilla_model::gateway::LocalObjectReference;
use flotilla_model::{Kind, Object, ResourceKey};
use serde::Deserialize;

/// The spec of Envoy Gateway's HTTPRouteFilter, as far as Flotilla translates it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgFilterSpec {
    #[serde(default)]
    url_rewrite: Option<EgUrlRewrite>,
    #[serde(default)]
    direct_response: Option<EgDirectResponse>,
    #[serde(default)]
    credential_injection: Option<EgCredentialInjection>,
    #[serde(default)]
    matches: Option<Vec<EgMatch>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgMatch {
    #[serde(default)]
    cookies: Option<Vec<CookieMatch>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgUrlRewrite {
    #[serde(default)]
    hostname: Option<EgHostname>,
    #[serde(default)]
    path: Option<EgPath>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgHostname {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    path_regex: Option<EgRegex>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgPath {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    replace_regex_match: Option<EgRegex>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgRegex {
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    substitution: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgDirectResponse {
    #[serde(default)]
    status_code: Option<i64>,
    #[serde(default)]
    body: Option<EgBody>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgBody {
    #[serde(default)]
    inline: Option<String>,
    #[serde(default)]
    value_ref: Option<LocalObjectReference>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgCredentialInjection {
    #[serde(default)]
    credential: EgCredential,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgCredential {
    #[serde(default)]
    value_ref: EgSecretRef,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgSecretRef {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// An ExtensionRef to an HTTPRouteFilter in the route's namespace.
pub(super) fn extension_ref(
    scope: &mut FilterScope<'_>,
    f: &mut Filtered,
    r: &LocalObjectReference,
) -> Result<(), StatusError> {
    let ns = &scope.route.namespace;
    let key = ResourceKey::new(&scope.route.cluster, Kind::HTTPRouteFilter, ns, &r.name);
    let Some(res) = scope.ix.resources.get(&key) else {
        return Err(unresolved_filter(
            f,
            format!("Unable to translate HTTPRouteFilter: {ns}/{}", r.name),
        ));
    };
    let spec: EgFilterSpec = match &res.object {
        Object::Extension(_, o) => serde_json::from_value(o.spec.clone()).unwrap_or_default(),
        _ => EgFilterSpec::default(),
    };
    let matches: Vec<Vec<CookieMatch>> = spec
        .matches
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.cookies.unwrap_or_default())
        .collect();
    if !matches.is_empty() && !f.cookie_matches.is_empty() {
        return Err(unsupported(
            "only one HTTPRouteFilter with matches is supported per HTTPRouteRule",
        ));
    }
    if !matches.is_empty() {
        for m in matches.iter().flatten() {
            if m.type_.as_deref() == Some("RegularExpression") {
                crate::values::check_regex(&m.value).map_err(unsupported)?;
            }
        }
        f.cookie_matches = matches;
    }
    if let Some(rw) = &spec.url_rewrite {
        let wants = rw.hostname.is_some() || rw.path.is_some();
        if let Some(ctx) = &f.url_rewrite {
            let conflicting = (rw.hostname.is_some()
                && matches!(ctx.host, Some(HostRewrite::Literal(_))))
                || (rw.path.is_some()
                    && matches!(
                        ctx.path,
                        Some(PathRewrite::Full(_) | PathRewrite::Prefix(_))
                    ));
            if (ctx.has_extension() && wants) || conflicting {
                return Err(unsupported(MULTIPLE_REWRITES));
            }
        }
        if let Some(p) = &rw.path {
            if p.type_ == "ReplaceRegexMatch" {
                let rm = p
                    .replace_regex_match
                    .as_ref()
                    .filter(|m| !m.pattern.is_empty());
                let Some(rm) = rm else {
                    return Err(unsupported(
                        "ReplaceRegexMatch Pattern must be set when rewrite path type is \"ReplaceRegexMatch\"",
                    ));
                };
                if crate::values::check_regex(&rm.pattern).is_err() {
                    return Err(unsupported(
                        "ReplaceRegexMatch must be a valid RE2 regular expression",
                    ));
                }
                let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
                if ctx.path.is_none() {
                    ctx.path = Some(PathRewrite::Regex(
                        rm.pattern.clone(),
                        rm.substitution.clone(),
                    ));
                }
            }
        }
        if let Some(h) = &rw.hostname {
            let hm = match h.type_.as_str() {
                "Header" => match &h.header {
                    Some(name) => Some(HostRewrite::Header(name.clone())),
                    None => {
                        return Err(unsupported(
                            "Header must be set when rewrite path type is \"Header\"",
                        ))
                    }
                },
                "Backend" => Some(HostRewrite::Backend),
                "PathRegex" => {
                    let pr = h
                        .path_regex
                        .as_ref()
                        .filter(|p| !p.pattern.is_empty() && !p.substitution.is_empty());
                    let Some(pr) = pr else {
                        return Err(unsupported(
                            "PathRegex Pattern and Substitution must be set when rewrite hostname type is \"PathRegex\"",
                        ));
                    };
                    if crate::values::check_regex(&pr.pattern).is_err() {
                        return Err(unsupported(
                            "PathRegex must be a valid RE2 regular expression",
                        ));
                    }
                    Some(HostRewrite::PathRegex(
                        pr.pattern.clone(),
                        pr.substitution.clone(),
                    ))
                }
                _ => None,
            };
            if let Some(hm) = hm {
                let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
                if ctx.host.is_none() {
                    ctx.host = Some(hm);
                }
            }
        }
    }
    if let Some(dr) = &spec.direct_response {
        let status = dr.status_code.unwrap_or(200);
        if scope.kind == RouteKind::Grpc && (200..300).contains(&status) {
            return Err(unsupported(
                "DirectResponse with a 2xx status code is not supported for GRPCRoute: a 2xx status maps to the gRPC OK status, but a direct response cannot carry a gRPC response message, so the client would receive an invalid response. Use a non-2xx status code to deny or block the request instead.",
            ));
        }
        let mut body = None;
        if let Some(b) = &dr.body {
            if let Some(inline) = &b.inline {
                body = Some(inline.clone().into_bytes());
            } else if let Some(vr) = &b.value_ref {
                let cm = ResourceKey::new(&scope.route.cluster, Kind::ConfigMap, ns, &vr.name);
                match scope.ix.resources.get(&cm).map(|r| &r.object) {
                    Some(Object::ConfigMap(c)) => {
                        let text = c
                            .data
                            .as_ref()
                            .and_then(|d| d.get("response.body").or_else(|| d.values().next()))
                            .map(|v| v.clone().into_bytes());
                        let binary = || {
                            c.binary_data
                                .as_ref()
                                .and_then(|d| d.get("response.body").or_else(|| d.values().next()))
                        };
                        body = text.or_else(|| binary().map(|b| b.0.clone()));
                    }
                    _ => {
                        let e = format!("configmap {ns}/{} not found", vr.name);
                        return Err(invalid_filter(f, "HTTPRouteFilter", &e));
                    }
                }
            }
        }
        f.direct_response = Some(DirectResponse {
            status: u32::try_from(status).unwrap_or(200).clamp(200, 599),
            body,
        });
    }
    if let Some(ci) = &spec.credential_injection {
        let sref = &ci.credential.value_ref;
        let sns = sref.namespace.as_deref().unwrap_or(ns);
        let sk = ResourceKey::new(&scope.route.cluster, Kind::Secret, sns, &sref.name);
        if !matches!(
            scope.ix.resources.get(&sk).map(|r| &r.object),
            Some(Object::Secret(_))
        ) {
            let e = format!("secret {sns}/{} does not exist", sref.name);
            return Err(invalid_filter(f, "HTTPRouteFilter", &e));
        }
    }
    Ok(())
}
