//! Typed resources: one parsed Kubernetes object and its key.

use crate::gateway::{Gateway, GatewayClass, HttpRoute};
use crate::{Kind, ResourceKey};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
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
