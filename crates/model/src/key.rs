//! Resource keys. Every key carries its cluster: two clusters may hold objects with the same
//! kind/namespace/name and they never collide.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds Flotilla understands. Anything else is rejected at parse time with a clear error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HTTPRoute,
    Service,
    EndpointSlice,
    Namespace,
    Secret,
    GRPCRoute,
    TLSRoute,
    TCPRoute,
    UDPRoute,
    ListenerSet,
    ReferenceGrant,
    BackendTLSPolicy,
    Backend,
    ClientTrafficPolicy,
    BackendTrafficPolicy,
    SecurityPolicy,
    EnvoyExtensionPolicy,
    EnvoyPatchPolicy,
    HTTPRouteFilter,
    EnvoyProxy,
    ServiceImport,
    ConfigMap,
    ClusterTrustBundle,
    ServiceExport,
}

impl Kind {
    pub const ALL: [Kind; 26] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HTTPRoute,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::Secret,
        Kind::GRPCRoute,
        Kind::TLSRoute,
        Kind::TCPRoute,
        Kind::UDPRoute,
        Kind::ListenerSet,
        Kind::ReferenceGrant,
        Kind::BackendTLSPolicy,
        Kind::Backend,
        Kind::ClientTrafficPolicy,
        Kind::BackendTrafficPolicy,
        Kind::SecurityPolicy,
        Kind::EnvoyExtensionPolicy,
        Kind::EnvoyPatchPolicy,
        Kind::HTTPRouteFilter,
        Kind::EnvoyProxy,
        Kind::ServiceImport,
        Kind::ConfigMap,
        Kind::ClusterTrustBundle,
        Kind::ServiceExport,
    ];

    /// The API group of the kind ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::GatewayClass | Kind::Gateway | Kind::HTTPRoute => crate::GATEWAY_GROUP,
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::Service | Kind::Namespace | Kind::Secret => "",
            Kind::GRPCRoute
            | Kind::TLSRoute
            | Kind::TCPRoute
            | Kind::UDPRoute
            | Kind::ListenerSet
            | Kind::ReferenceGrant
            | Kind::BackendTLSPolicy => crate::GATEWAY_GROUP,
            Kind::Backend
            | Kind::ClientTrafficPolicy
            | Kind::BackendTrafficPolicy
            | Kind::SecurityPolicy
            | Kind::EnvoyExtensionPolicy
            | Kind::EnvoyPatchPolicy
            | Kind::HTTPRouteFilter
            | Kind::EnvoyProxy => crate::EG_GROUP,
            Kind::ServiceImport | Kind::ServiceExport => "multicluster.x-k8s.io",
            Kind::ConfigMap => "",
            Kind::ClusterTrustBundle => "certificates.k8s.io",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::TLSRoute => "TLSRoute",
            Kind::TCPRoute => "TCPRoute",
            Kind::UDPRoute => "UDPRoute",
            Kind::ListenerSet => "ListenerSet",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTLSPolicy => "BackendTLSPolicy",
            Kind::Backend => "Backend",
            Kind::ClientTrafficPolicy => "ClientTrafficPolicy",
            Kind::BackendTrafficPolicy => "BackendTrafficPolicy",
            Kind::SecurityPolicy => "SecurityPolicy",
            Kind::EnvoyExtensionPolicy => "EnvoyExtensionPolicy",
            Kind::EnvoyPatchPolicy => "EnvoyPatchPolicy",
            Kind::HTTPRouteFilter => "HTTPRouteFilter",
            Kind::EnvoyProxy => "EnvoyProxy",
            Kind::ServiceImport => "ServiceImport",
            Kind::ConfigMap => "ConfigMap",
            Kind::ClusterTrustBundle => "ClusterTrustBundle",
            Kind::ServiceExport => "ServiceExport",
        }
    }

    /// Cluster-scoped kinds have an empty namespace in their key.
    pub fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::GatewayClass | Kind::Namespace | Kind::ClusterTrustBundle
        )
    }

    /// Parses a kind name, case-insensitively (as `kubectl get` accepts them).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether `apiVersion` names a group this kind lives in.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        group == self.group()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object in one cluster. Ordered (cluster, kind, namespace, name) so that
/// iteration over a `BTreeMap` of keys is deterministic on every replica.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    pub cluster: String,
    pub kind: Kind,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(
        cluster: impl Into<String>,
        kind: Kind,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn group(&self) -> &'static str {
        self.kind.group()
    }

    /// `cluster/namespace/name`: the id a proxy names in `node.cluster` for a Gateway.
    pub fn gateway_id(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}/{}", self.cluster, self.kind, self.name)
        } else {
            write!(
                f,
                "{}/{}/{}/{}",
                self.cluster, self.kind, self.namespace, self.name
            )
        }
    }
}
