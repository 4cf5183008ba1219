//! The Flotilla data model: resource keys (which carry their cluster), the event envelope that
//! ingest agents publish and the store folds, and the typed resources parsed from Kubernetes
//! YAML. No IO lives here.

pub mod digest;
pub mod event;
pub mod gateway;
pub mod key;
pub mod parse;
pub mod refs;
pub mod resource;
pub mod routes;
pub mod status_kv;

pub use digest::state_digest;
pub use event::{
    cluster_of_subject, events_subject, EventBody, ResourceEvent, EVENTS_SUBJECT_PREFIX,
};
pub use key::{Kind, ResourceKey};
pub use parse::{parse_documents, parse_object, ParseError};
pub use resource::{Object, Resource};
pub use status_kv::{status_key, StatusValue, STATUS_BUCKET};

/// Group of the Kubernetes Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Group of the Envoy Gateway extension resources.
pub const EG_GROUP: &str = "gateway.envoyproxy.io";
