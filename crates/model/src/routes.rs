//! Gateway API route kinds besides HTTPRoute (GRPCRoute, TLSRoute, TCPRoute, UDPRoute) and
//! ListenerSet. Like `gateway.rs`, enum-like fields stay strings so that invalid values reach
//! translation (and a status condition) instead of failing the parse.

use crate::gateway::{
    lenient, HttpBackendRef, HttpHeaderMatch, HttpRouteFilter, Listener, ParentReference,
    SessionPersistence,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// An object whose spec is kept as JSON until its kind is translated in full.
macro_rules! spec_object {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: serde_json::Value,
        }
    )*};
}
pub(crate) use spec_object;

/// gateway.networking.k8s.io GRPCRoute: gRPC methods and headers → weighted backends. Filters
/// and backendRefs have HTTPRoute's shapes (GRPCRoute allows a subset of the filter types).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GrpcRouteSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(default, deserialize_with = "lenient::vec")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(
        default,
        deserialize_with = "lenient::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hostnames: Vec<String>,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub rules: Vec<GrpcRouteRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(
        default,
        deserialize_with = "lenient::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    #[serde(
        default,
        deserialize_with = "lenient::vec",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<HttpHeaderMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    /// "Exact" (default) or "RegularExpression".
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub service: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<String>,
}

/// TLSRoute, TCPRoute and UDPRoute share one shape: parents, (TLS only) hostnames, and rules
/// that are lists of weighted backends.
macro_rules! l4_route {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: L4RouteSpec,
        }
    )*};
}

l4_route!(
    /// gateway.networking.k8s.io TLSRoute: routes TLS connections by SNI.
    TlsRoute,
    /// gateway.networking.k8s.io TCPRoute.
    TcpRoute,
    /// gateway.networking.k8s.io UDPRoute.
    UdpRoute,
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// TLSRoute only: SNI host names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<L4RouteRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Same shape as an HTTPRoute backendRef (the `filters` stay empty).
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
}

/// gateway.networking.k8s.io ListenerSet (experimental): listeners attached to a parent
/// Gateway, translated as part of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ListenerSetSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSetSpec {
    #[serde(default)]
    pub parent_ref: ListenerSetParentRef,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSetParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
