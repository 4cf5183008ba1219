//! Typed resources: one parsed Kubernetes object and its key.

use crate::gateway::{Gateway, GatewayClass, HttpRoute};
use crate::refs::{
    Backend, BackendTlsPolicy, ClusterTrustBundle, ExtensionObject, ReferenceGrant, ServiceImport,
};
use crate::routes::{GrpcRoute, ListenerSet, TcpRoute, TlsRoute, UdpRoute};
use crate::{Kind, ResourceKey};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A parsed object of one of the kinds Flotilla understands.
// Variants differ in size, but every Object lives once inside an `Arc<Resource>`; boxing the
// variants would add an allocation and an indirection for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HTTPRoute(HttpRoute),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Namespace(Namespace),
    Secret(Secret),
    GRPCRoute(GrpcRoute),
    TLSRoute(TlsRoute),
    TCPRoute(TcpRoute),
    UDPRoute(UdpRoute),
    ListenerSet(ListenerSet),
    ReferenceGrant(ReferenceGrant),
    BackendTLSPolicy(BackendTlsPolicy),
    Backend(Backend),
    ServiceImport(ServiceImport),
    ConfigMap(ConfigMap),
    ClusterTrustBundle(ClusterTrustBundle),
    /// Envoy Gateway policy/extension kinds (ClientTrafficPolicy, BackendTrafficPolicy,
    /// SecurityPolicy, EnvoyExtensionPolicy, EnvoyPatchPolicy, HTTPRouteFilter, EnvoyProxy),
    /// stored as objects; and ServiceExport, whose presence alone counts.
    Extension(Kind, ExtensionObject),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HTTPRoute(_) => Kind::HTTPRoute,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Namespace(_) => Kind::Namespace,
            Object::Secret(_) => Kind::Secret,
            Object::GRPCRoute(_) => Kind::GRPCRoute,
            Object::TLSRoute(_) => Kind::TLSRoute,
            Object::TCPRoute(_) => Kind::TCPRoute,
            Object::UDPRoute(_) => Kind::UDPRoute,
            Object::ListenerSet(_) => Kind::ListenerSet,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::BackendTLSPolicy(_) => Kind::BackendTLSPolicy,
            Object::Backend(_) => Kind::Backend,
            Object::ServiceImport(_) => Kind::ServiceImport,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::ClusterTrustBundle(_) => Kind::ClusterTrustBundle,
            Object::Extension(k, _) => *k,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HTTPRoute(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::GRPCRoute(o) => &o.metadata,
            Object::TLSRoute(o) => &o.metadata,
            Object::TCPRoute(o) => &o.metadata,
            Object::UDPRoute(o) => &o.metadata,
            Object::ListenerSet(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::BackendTLSPolicy(o) => &o.metadata,
            Object::Backend(o) => &o.metadata,
            Object::ServiceImport(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::ClusterTrustBundle(o) => &o.metadata,
            Object::Extension(_, o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::GatewayClass(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::HTTPRoute(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::GRPCRoute(o) => &mut o.metadata,
            Object::TLSRoute(o) => &mut o.metadata,
            Object::TCPRoute(o) => &mut o.metadata,
            Object::UDPRoute(o) => &mut o.metadata,
            Object::ListenerSet(o) => &mut o.metadata,
            Object::ReferenceGrant(o) => &mut o.metadata,
            Object::BackendTLSPolicy(o) => &mut o.metadata,
            Object::Backend(o) => &mut o.metadata,
            Object::ServiceImport(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::ClusterTrustBundle(o) => &mut o.metadata,
            Object::Extension(_, o) => &mut o.metadata,
        }
    }

    /// Sets the namespace of a namespaced object (the key's namespace is authoritative).
    pub(crate) fn set_namespace(&mut self, namespace: &str) {
        if !self.kind().cluster_scoped() {
            self.metadata_mut().namespace = Some(namespace.to_string());
        }
    }
}

/// One object with its key and the JSON it was parsed from (kept so the API can show the
/// object exactly as the user wrote it, and so snapshots store the source, not our types).
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub key: ResourceKey,
    pub object: Object,
    pub raw: serde_json::Value,
}

impl Resource {
    pub fn generation(&self) -> Option<i64> {
        self.object.metadata().generation
    }
}
