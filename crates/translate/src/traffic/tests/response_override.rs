//! Response overrides: local responses (a body from a ConfigMap among them) and redirects
//! through the custom response filter.

use super::*;

#[test]
fn a_response_body_from_a_configmap_follows_the_configmap() {
    let cm = |body: &str| {
        format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: page, namespace: app}}\ndata: {{response.body: {body}}}\n")
    };
    let p = policy(
        "p",
        Some("a"),
        "  responseOverride:\n  - match: {statusCodes: [{value: 500}]}\n    response: {body: {type: ValueRef, valueRef: {group: '', kind: ConfigMap, name: page}}}",
    );
    let body_has = |t: &Translator, text: &str| {
        let r = route_named(t, "/a");
        let v = &r.typed_per_filter_config["envoy.filters.http.custom_response"].value;
        v.windows(text.len()).any(|w| w == text.as_bytes())
    };
    let mut t = translate(&[p, cm("first-page")]);
    assert!(body_has(&t, "first-page"));
    crate::tests::apply_all(&mut t, &crate::tests::events("c1", &cm("second-page")));
    assert!(
        body_has(&t, "second-page"),
        "the gateway follows the ConfigMap"
    );
    validate(&t);
}

/// `responseOverride[].redirect`: the custom response filter's matcher takes Envoy's redirect
/// policy for that override (each part of the URL the policy sets, the status Envoy Gateway
/// defaults to 302) next to a local response, and Envoy accepts the result.
#[test]
fn a_response_override_redirect_becomes_envoys_redirect_policy() {
    use envoy_types::pb::envoy::config::route::v3::redirect_action::{
        PathRewriteSpecifier, SchemeRewriteSpecifier,
    };
    use envoy_types::pb::envoy::extensions::filters::http::custom_response::v3::CustomResponse;
    use envoy_types::pb::envoy::extensions::http::custom_response::redirect_policy::v3::{
        redirect_policy::RedirectActionSpecifier, RedirectPolicy,
    };
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::{on_match, MatcherType};
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  responseOverride:
  - match: {statusCodes: [{value: 500}]}
    redirect:
      scheme: https
      hostname: www.example.com
      port: 8443
      statusCode: 301
      path: {type: ReplaceFullPath, replaceFullPath: /sorry}
  - match: {statusCodes: [{value: 503}]}
    redirect: {path: {type: ReplaceFullPath, replaceFullPath: /later}}
  - match: {statusCodes: [{value: 404}]}
    response: {body: {inline: gone}}",
    )]);
    assert_eq!(accepted(&t, "p").0, "True");
    let a = route_named(&t, "/a");
    let cr = CustomResponse::decode(
        a.typed_per_filter_config[crate::traffic::CUSTOM_RESPONSE_FILTER]
            .value
            .as_slice(),
    )
    .unwrap();
    let Some(MatcherType::MatcherList(list)) = cr.custom_response_matcher.unwrap().matcher_type
    else {
        panic!("a matcher list");
    };
    let actions: Vec<_> = list
        .matchers
        .iter()
        .map(|m| match &m.on_match.as_ref().unwrap().on_match {
            Some(on_match::OnMatch::Action(a)) => a.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(actions.len(), 3);
    let redirect = |i: usize| {
        let any = actions[i].typed_config.as_ref().unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy"
        );
        RedirectPolicy::decode(any.value.as_slice()).unwrap()
    };
    let full = redirect(0);
    assert_eq!(full.status_code.unwrap().value, 301);
    let Some(RedirectActionSpecifier::RedirectAction(ra)) = full.redirect_action_specifier else {
        panic!("a redirect action");
    };
    assert_eq!(
        ra.scheme_rewrite_specifier,
        Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
    assert_eq!(ra.host_redirect, "www.example.com");
    assert_eq!(ra.port_redirect, 8443);
    assert_eq!(
        ra.path_rewrite_specifier,
        Some(PathRewriteSpecifier::PathRedirect("/sorry".into()))
    );
    // Only the path: the rest of the URL is the request's, the status Envoy Gateway's default.
    let path_only = redirect(1);
    assert_eq!(path_only.status_code.unwrap().value, 302);
    let Some(RedirectActionSpecifier::RedirectAction(ra)) = path_only.redirect_action_specifier
    else {
        panic!("a redirect action");
    };
    assert_eq!((ra.host_redirect.as_str(), ra.port_redirect), ("", 0));
    assert!(ra.scheme_rewrite_specifier.is_none());
    assert!(actions[2]
        .typed_config
        .as_ref()
        .unwrap()
        .type_url
        .ends_with("LocalResponsePolicy"));
    validate(&t);
}

/// A redirect Envoy Gateway's CRD would refuse is refused in status, naming what is wrong.
#[test]
fn an_invalid_response_override_redirect_is_refused_in_status() {
    for (redirect, wanted) in [
        ("{scheme: ftp}", "unsupported scheme \"ftp\""),
        ("{hostname: '*.example.com'}", "invalid hostname"),
        ("{hostname: Example.com}", "invalid hostname"),
        (
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}",
            "only ReplaceFullPath is supported for path.type",
        ),
        (
            "{path: {type: ReplaceFullPath, replaceFullPath: nope}}",
            "invalid replaceFullPath",
        ),
        ("{port: 0}", "invalid port 0"),
        ("{statusCode: 307}", "unsupported statusCode 307"),
    ] {
        let t = translate(&[policy(
            "p",
            Some("a"),
            &format!(
                "  responseOverride:\n  - match: {{statusCodes: [{{value: 500}}]}}\n    redirect: {redirect}"
            ),
        )]);
        let (status, reason, message) = accepted(&t, "p");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
        assert!(
            message.starts_with("ResponseOverride: redirect: ") && message.contains(wanted),
            "{redirect}: {message}"
        );
        assert!(route_named(&t, "/a").typed_per_filter_config.is_empty());
    }
    let both = translate(&[policy(
        "p",
        Some("a"),
        "  responseOverride:\n  - match: {statusCodes: [{value: 500}]}\n    redirect: {statusCode: 302}\n    response: {body: {inline: x}}",
    )]);
    assert_eq!(
        accepted(&both, "p").2,
        "ResponseOverride: exactly one of response or redirect must be specified."
    );
}
