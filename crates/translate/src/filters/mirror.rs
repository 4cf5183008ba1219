//! The RequestMirror filter (Envoy Gateway's `processRequestMirrorFilter`): the mirror's
//! backend resolved to a cluster, the fraction of requests it gets, and the filters it cannot
//! go with.

use super::types::{FilterScope, Filtered};
use crate::backend::resolve_backend;
use crate::status::{CondType, StatusError};
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use flotilla_model::gateway::{HttpBackendRef, HttpRequestMirror};

pub(super) const MIRROR_DIRECT_RESPONSE_CONFLICT: &str =
    "RequestMirror filter cannot be used when the rule also configures a DirectResponse filter";
pub(super) const MIRROR_REDIRECT_CONFLICT: &str =
    "RequestMirror filter cannot be used when the rule also configures a RequestRedirect filter";

/// A RequestMirror filter: its backend becomes a cluster of `scope` and a mirror policy.
pub(super) fn mirror(
    scope: &mut FilterScope<'_>,
    f: &mut Filtered,
    _filter_index: usize,
    m: &HttpRequestMirror,
) -> Result<(), StatusError> {
    let b = HttpBackendRef::from_object_ref(&m.backend_ref);
    let wrap = |msg: &str| format!("failed to validate the RequestMirror filter: {msg}");
    match resolve_backend(scope.ix, scope.route, &b) {
        Ok((id, endpoints)) => {
            let empty = endpoints.is_empty();
            let name = id.name();
            scope.clusters.insert(name.clone(), (id, endpoints));
            if empty {
                let ns = b.namespace.as_deref().unwrap_or(&scope.route.namespace);
                return Err(StatusError::new(
                    CondType::BackendsAvailable,
                    "EndpointsNotFound",
                    wrap(&format!(
                        "no ready endpoints for the related Service {ns}/{}",
                        b.name
                    )),
                ));
            }
            let percent = match (&m.fraction, m.percent) {
                (Some(fr), _) => {
                    let den = fr.denominator.unwrap_or(100).max(1) as u64;
                    Some((fr.numerator.max(0) as u64 * 1_000_000 / den).min(1_000_000))
                }
                (None, Some(p)) => Some((p.clamp(0, 100) as u64) * 10_000),
                (None, None) => None,
            };
            f.mirrors.push(RequestMirrorPolicy {
                cluster: name,
                runtime_fraction: percent.map(|millionths| RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: millionths as u32,
                        denominator: DenominatorType::Million as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            Ok(())
        }
        Err((reason, msg)) if reason == "EndpointsNotFound" => Err(StatusError::new(
            CondType::BackendsAvailable,
            reason,
            wrap(&msg),
        )),
        Err((reason, msg)) => Err(StatusError::new(CondType::ResolvedRefs, reason, wrap(&msg))),
    }
}
