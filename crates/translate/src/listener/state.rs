//! The state of one gateway listener while it is checked ([`ListenerState`]), the
//! ListenerSets attached to the gateway ([`SetInfo`]), and the condition helpers the checks
//! share.

use crate::index::Index;
use crate::ir::client::ClientSettings;
use crate::tls::{CertPair, ClientValidation, SdsRef, ServingCerts};
use flotilla_model::gateway::{Condition, Listener};
use flotilla_model::routes::ListenerSet;
use flotilla_model::ResourceKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::sync::Arc;

/// A ListenerSet whose parentRef names the gateway being translated.
pub(crate) struct SetInfo<'a> {
    pub key: ResourceKey,
    pub ls: &'a ListenerSet,
    /// The Gateway's allowedListeners admit it.
    pub allowed: bool,
}

pub(crate) struct ListenerState<'a> {
    pub spec: &'a Listener,
    /// Index into the gateway's ListenerSets; `None` for the Gateway's own listeners.
    pub set: Option<usize>,
    /// Namespace and name of the owner (Gateway or ListenerSet).
    pub owner_ns: String,
    pub owner_name: String,
    /// Ready to be programmed into Envoy.
    pub valid: bool,
    pub conditions: Vec<Condition>,
    /// Route kinds the listener supports, as reported in status.
    pub supported: Vec<(Option<String>, String)>,
    pub attached: u32,
    /// Certificates for HTTPS and TLS Terminate listeners.
    pub certs: Vec<CertPair>,
    /// The DNS subjectAltNames of `certs`.
    pub sans: Vec<String>,
    /// Certificates from SDS reference secrets (their names cannot be inspected).
    pub sds: Vec<SdsRef>,
    /// Client certificate validation (Gateway `spec.tls.frontend`), HTTPS only.
    pub client: Option<ClientValidation>,
    /// The settings of the ClientTrafficPolicy that configures the listener, if any.
    pub ctp: Option<Arc<ClientSettings>>,
    /// The listener's ClientTrafficPolicy cannot be used (its status says why): as Envoy
    /// Gateway, the listener serves nothing rather than serve without it (HTTP routes answer
    /// 500, TCP and TLS routes are dropped).
    pub ctp_invalid: bool,
    /// Generation of the owner, for the conditions' observedGeneration.
    pub gen: Option<i64>,
}

impl ListenerState<'_> {
    /// `<owner ns>/<owner name>/<listener>`: Envoy Gateway's IR listener name.
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}/{}", self.owner_ns, self.owner_name, self.spec.name)
    }

    pub(crate) fn protocol(&self) -> &str {
        self.spec.protocol.as_str()
    }

    /// The certificates a TLS-terminating listener serves (inline and through SDS).
    pub(crate) fn serving_certs(&self) -> ServingCerts {
        ServingCerts {
            inline: self.certs.clone(),
            sds: self.sds.clone(),
        }
    }

    /// HTTP or HTTPS: served through the HTTP connection manager.
    pub(crate) fn is_http(&self) -> bool {
        matches!(self.protocol(), "HTTP" | "HTTPS")
    }

    pub(crate) fn tls_mode(&self) -> &str {
        self.spec
            .tls
            .as_ref()
            .and_then(|t| t.mode.as_deref())
            .unwrap_or("Terminate")
    }

    /// Whether a route of `route_kind` in the route's namespace may attach (allowedRoutes).
    pub(crate) fn allows(&self, ix: &Index, route_kind: &str, route_key: &ResourceKey) -> bool {
        if !self.supported.iter().any(|(_, k)| k == route_kind) {
            return false;
        }
        if !ix.namespace_exists(&route_key.cluster, &route_key.namespace) {
            return false;
        }
        let ns = self
            .spec
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
            "All" => true,
            "Same" => route_key.namespace == self.owner_ns,
            "Selector" => ns.and_then(|n| n.selector.as_ref()).is_some_and(|sel| {
                selector_valid(sel)
                    && ix.namespace_matches(&route_key.cluster, &route_key.namespace, sel)
            }),
            _ => false,
        }
    }
}

pub(crate) fn port_of(l: &Listener) -> u32 {
    u32::try_from(l.port).unwrap_or(0)
}

/// The RDS route configuration that serves an HTTP or HTTPS listener: one per port for HTTP
/// listeners (a plain connection says nothing about the host), one per listener for HTTPS, whose
/// SNI filter chain then answers only its own hosts (and 421 for other listeners').
pub(crate) fn route_config_name(l: &ListenerState) -> String {
    if l.protocol() == "HTTPS" {
        format!("https-{}/{}", port_of(l.spec), l.full_name())
    } else {
        format!("http-{}", port_of(l.spec))
    }
}

pub(crate) fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    msg: impl Into<String>,
    gen: Option<i64>,
) -> Condition {
    Condition::new(type_, ok, reason, msg, gen)
}

/// Sets a condition, replacing one of the same type in place (Envoy Gateway's
/// `SetGatewayListenerStatusCondition`).
pub(crate) fn set_cond(conds: &mut Vec<Condition>, c: Condition) {
    match conds.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

pub(crate) fn has(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_)
}

pub(crate) fn selector_valid(sel: &LabelSelector) -> bool {
    sel.match_expressions.iter().flatten().all(|e| {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            _ => false,
        }
    })
}
