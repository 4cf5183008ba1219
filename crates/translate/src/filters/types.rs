//! The vocabulary the filter modules share: what a rule's filters amount to ([`Filtered`] and
//! its parts: rewrites, redirect, direct response, cookie matches) and the [`FilterScope`]
//! they are processed in. A leaf: it uses no other filter module.

use crate::index::Index;
use crate::ir::route::RouteKind;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use flotilla_model::ResourceKey;
use serde::Deserialize;

/// Where a URL rewrite takes the new host from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HostRewrite {
    Literal(String),
    Header(String),
    Backend,
    PathRegex(String, String),
}

/// How a URL rewrite or a redirect replaces the path.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PathRewrite {
    Full(String),
    Prefix(String),
    Regex(String, String),
}

/// A rule's URL rewrite: the Gateway API's URLRewrite and an HTTPRouteFilter's, merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UrlRewrite {
    pub host: Option<HostRewrite>,
    pub path: Option<PathRewrite>,
}

impl UrlRewrite {
    /// Set by the Gateway API's URLRewrite filter.
    pub(super) fn has_core(&self) -> bool {
        matches!(
            self.path,
            Some(PathRewrite::Full(_) | PathRewrite::Prefix(_))
        ) || matches!(self.host, Some(HostRewrite::Literal(_)))
    }
    /// Set by an HTTPRouteFilter's urlRewrite.
    pub(super) fn has_extension(&self) -> bool {
        matches!(self.path, Some(PathRewrite::Regex(..)))
            || matches!(
                self.host,
                Some(HostRewrite::Header(_) | HostRewrite::Backend | HostRewrite::PathRegex(..))
            )
    }
}

/// A RequestRedirect filter, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
    pub port: Option<u32>,
    pub status_code: Option<i32>,
}

/// A response Envoy answers itself (an HTTPRouteFilter's, or 500 for an invalid filter).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DirectResponse {
    pub status: u32,
    pub body: Option<Vec<u8>>,
}

/// A cookie match contributed by an Envoy Gateway HTTPRouteFilter's `matches`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CookieMatch {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// What a rule's filters amount to.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Filtered {
    pub direct_response: Option<DirectResponse>,
    pub redirect: Option<Redirect>,
    pub url_rewrite: Option<UrlRewrite>,
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    pub mirrors: Vec<RequestMirrorPolicy>,
    pub cors: Option<CorsPolicy>,
    /// Cookie matches of an HTTPRouteFilter, ANDed with the rule's matches (one set per
    /// filter match).
    pub cookie_matches: Vec<Vec<CookieMatch>>,
}

/// Everything the filters of one rule need from outside.
pub(crate) struct FilterScope<'a> {
    pub ix: &'a Index,
    pub route: &'a ResourceKey,
    pub kind: RouteKind,
    pub clusters: &'a mut crate::ir::cluster::Backends,
}
