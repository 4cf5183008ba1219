//! Gateway API route kinds besides HTTPRoute (GRPCRoute, TLSRoute, TCPRoute, UDPRoute) and
//! ListenerSet. Like `gateway.rs`, enum-like fields stay strings so that invalid values reach
//! translation (and a status condition) instead of failing the parse.

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

spec_object!(GrpcRoute, TlsRoute, TcpRoute, UdpRoute, ListenerSet);
