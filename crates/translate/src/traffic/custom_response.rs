//! Response overrides (Envoy Gateway's custom_response.go): the custom response filter's
//! per-route matcher, each override a local response or a redirect.

use super::encode::u32v;
use crate::envoy::any_of;
use crate::ir::route::*;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::custom_response::v3::CustomResponse;

/// The name of a custom response action that redirects (Envoy Gateway's).
const REDIRECT_POLICY: &str =
    "envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy";

/// The custom response filter's per-route config: the first override whose status matches
/// answers with its local response, or redirects.
pub(super) fn custom_response(overrides: &[ResponseOverride]) -> CustomResponse {
    use envoy_types::pb::xds::r#type::matcher::v3::{
        matcher::{
            self,
            matcher_list::{self, predicate},
        },
        string_matcher, Matcher, StringMatcher,
    };
    let status_input = || {
        Some(envoy_types::pb::xds::core::v3::TypedExtensionConfig {
            name: "status_code".into(),
            typed_config: Some(any_of(
                &envoy_types::pb::envoy::r#type::matcher::v3::HttpResponseStatusCodeMatchInput {},
            )),
        })
    };
    let exact = |code: u32| {
        predicate::MatchType::SinglePredicate(predicate::SinglePredicate {
            input: status_input(),
            matcher: Some(predicate::single_predicate::Matcher::ValueMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(code.to_string())),
                    ignore_case: false,
                },
            )),
        })
    };
    let matchers = overrides
        .iter()
        .map(|o| {
            let codes: Vec<u32> = o
                .statuses
                .iter()
                .flat_map(|s| match *s {
                    StatusMatch::Value(c) => c..=c,
                    StatusMatch::Range(a, b) => a..=b,
                })
                .collect();
            let mut all: Vec<predicate::MatchType> = Vec::new();
            match codes.len() {
                0 => {}
                1 => all.push(exact(codes[0])),
                _ => all.push(predicate::MatchType::OrMatcher(predicate::PredicateList {
                    predicate: codes
                        .into_iter()
                        .map(|c| matcher_list::Predicate {
                            match_type: Some(exact(c)),
                        })
                        .collect(),
                })),
            }
            for (name, m) in &o.headers {
                all.push(header_predicate(name, m));
            }
            let match_type = if all.len() == 1 {
                all.remove(0)
            } else {
                predicate::MatchType::AndMatcher(predicate::PredicateList {
                    predicate: all
                        .into_iter()
                        .map(|m| matcher_list::Predicate {
                            match_type: Some(m),
                        })
                        .collect(),
                })
            };
            let action = match &o.redirect {
                Some(r) => redirect_action(r),
                None => local_response_action(o),
            };
            matcher_list::FieldMatcher {
                predicate: Some(matcher_list::Predicate {
                    match_type: Some(match_type),
                }),
                on_match: Some(matcher::OnMatch {
                    on_match: Some(matcher::on_match::OnMatch::Action(action)),
                    keep_matching: false,
                }),
            }
        })
        .collect();
    CustomResponse {
        custom_response_matcher: Some(Matcher {
            matcher_type: Some(matcher::MatcherType::MatcherList(matcher::MatcherList {
                matchers,
            })),
            on_no_match: None,
        }),
    }
}

/// The action of an override that redirects: Envoy's custom response redirect policy, with the
/// parts of the URL the override sets (Envoy Gateway's `buildRedirectAction`).
fn redirect_action(r: &Redirect) -> envoy_types::pb::xds::core::v3::TypedExtensionConfig {
    use envoy_types::pb::envoy::config::route::v3::redirect_action::{
        PathRewriteSpecifier, SchemeRewriteSpecifier,
    };
    use envoy_types::pb::envoy::config::route::v3::RedirectAction;
    use envoy_types::pb::envoy::extensions::http::custom_response::redirect_policy::v3::{
        redirect_policy::RedirectActionSpecifier, RedirectPolicy,
    };
    let action = RedirectAction {
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.unwrap_or_default(),
        path_rewrite_specifier: r.path.clone().map(PathRewriteSpecifier::PathRedirect),
        ..Default::default()
    };
    envoy_types::pb::xds::core::v3::TypedExtensionConfig {
        name: REDIRECT_POLICY.into(),
        typed_config: Some(any_of(&RedirectPolicy {
            redirect_action_specifier: Some(RedirectActionSpecifier::RedirectAction(action)),
            status_code: Some(u32v(r.status)),
            ..Default::default()
        })),
    }
}

/// The action of an override that answers itself: Envoy's local response policy.
fn local_response_action(
    o: &ResponseOverride,
) -> envoy_types::pb::xds::core::v3::TypedExtensionConfig {
    use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
    use envoy_types::pb::envoy::extensions::http::custom_response::local_response_policy::v3::LocalResponsePolicy;
    let policy = LocalResponsePolicy {
                body: o.body.as_ref().map(|b| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(b.clone())),
                    ..Default::default()
                }),
                status_code: o.status.map(u32v),
                response_headers_to_add: o
                    .content_type
                    .iter()
                    .map(|ct| HeaderValueOption {
                        header: Some(HeaderValue {
                            key: "content-type".into(),
                            value: ct.clone(),
                            ..Default::default()
                        }),
                        append_action: envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
    envoy_types::pb::xds::core::v3::TypedExtensionConfig {
        name: "local_response".into(),
        typed_config: Some(any_of(&policy)),
    }
}

/// A custom response matcher's predicate on one response header.
fn header_predicate(
    name: &str,
    m: &ValueMatch,
) -> envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_list::predicate::MatchType {
    use envoy_types::pb::xds::r#type::matcher::v3::{
        matcher::matcher_list::predicate, regex_matcher, string_matcher, RegexMatcher,
        StringMatcher,
    };
    let pattern = match m {
        ValueMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        ValueMatch::Prefix(v) => string_matcher::MatchPattern::Prefix(v.clone()),
        ValueMatch::Suffix(v) => string_matcher::MatchPattern::Suffix(v.clone()),
        ValueMatch::Regex(v) => string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: v.clone(),
            engine_type: Some(regex_matcher::EngineType::GoogleRe2(
                regex_matcher::GoogleRe2 {},
            )),
        }),
    };
    predicate::MatchType::SinglePredicate(predicate::SinglePredicate {
        input: Some(envoy_types::pb::xds::core::v3::TypedExtensionConfig {
            name: "response_header".into(),
            typed_config: Some(any_of(
                &envoy_types::pb::envoy::r#type::matcher::v3::HttpResponseHeaderMatchInput {
                    header_name: name.to_string(),
                },
            )),
        }),
        matcher: Some(predicate::single_predicate::Matcher::ValueMatch(
            StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            },
        )),
    })
}
