//! The CORS filter → Envoy's per-route CorsPolicy (Envoy Gateway's `processCORSFilter`).

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;
use flotilla_model::gateway::HttpCors;

/// A CORS filter as Envoy's per-route CorsPolicy.
pub(super) fn cors(c: &HttpCors) -> CorsPolicy {
    let allow_origin_string_match = c
        .allow_origins
        .iter()
        .map(|o| {
            let pattern = if o.contains('*') {
                string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: wildcard_to_regex(o),
                    engine_type: None,
                })
            } else {
                string_matcher::MatchPattern::Exact(o.clone())
            };
            StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            }
        })
        .collect();
    CorsPolicy {
        allow_origin_string_match,
        allow_methods: c.allow_methods.join(", "),
        allow_headers: c.allow_headers.join(", "),
        expose_headers: c.expose_headers.join(", "),
        max_age: c.max_age.map(|a| a.to_string()).unwrap_or_default(),
        allow_credentials: Some(BoolValue {
            value: c.allow_credentials.unwrap_or(false),
        }),
        // Envoy answers a preflight from an origin not allowed itself (without CORS headers)
        // instead of forwarding it, as Envoy Gateway configures it.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// `*` in a CORS origin matches any run of characters (Envoy Gateway's `wildcard2regex`).
fn wildcard_to_regex(s: &str) -> String {
    let parts: Vec<String> = s.split('*').map(regex::escape).collect();
    format!("^{}$", parts.join(".*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_origins_become_anchored_regexes() {
        assert_eq!(
            wildcard_to_regex("https://*.foo.com"),
            "^https://.*\\.foo\\.com$"
        );
    }
}
