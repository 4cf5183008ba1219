//! Pure translation: the folded resource set of every cluster → per-gateway Envoy xDS
//! resources and status conditions. No IO, no clocks, no randomness: every store replica
//! computes the same bytes at the same revision.
//!
//! [`Translator`] owns the resource index. Events are folded with [`Translator::apply`], which
//! records (through the dependency index) which gateways they can affect; [`Translator::recompute`]
//! retranslates only those and reports what changed.

use bytes::Bytes;
use flotilla_model::{ResourceEvent, ResourceKey};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Type URLs of the resources Flotilla serves.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str =
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
}

/// One encoded Envoy resource. Encoded once per version and shared (behind `Arc`) by every
/// edge stream that sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsResource {
    pub type_url: String,
    pub name: String,
    /// Hex content hash of `body`: the same bytes always carry the same version.
    pub version: String,
    /// The encoded resource message (not wrapped in `Any`).
    pub body: Bytes,
}

/// Every xDS resource of one gateway, sorted by (type_url, name).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GatewayXds {
    /// `cluster/namespace/name`.
    pub gateway: String,
    pub resources: Vec<Arc<XdsResource>>,
}

/// What one [`Translator::recompute`] changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Gateways whose xDS resources changed (new content in full).
    pub updated: Vec<Arc<GatewayXds>>,
    /// Gateway ids that no longer exist.
    pub removed: Vec<String>,
    /// Resources whose computed status changed.
    pub status_changed: Vec<ResourceKey>,
}

/// Why an event could not be folded. The event is skipped; the rest of the batch applies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid event from {source_id} for cluster {cluster}: {message}")]
    InvalidEvent {
        source_id: String,
        cluster: String,
        message: String,
    },
    #[error("invalid object {key}: {source}")]
    InvalidObject {
        key: ResourceKey,
        #[source]
        source: flotilla_model::ParseError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The resource index plus the translated output of every gateway.
#[derive(Default)]
pub struct Translator {
    resources: BTreeMap<ResourceKey, Arc<flotilla_model::Resource>>,
    gateways: BTreeMap<String, Arc<GatewayXds>>,
    statuses: BTreeMap<ResourceKey, serde_json::Value>,
}

impl Translator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event into the index and marks the gateways it can affect.
    pub fn apply(&mut self, event: &ResourceEvent) -> Result<()> {
        let _ = event;
        todo!("translate: apply")
    }

    /// Retranslates every gateway marked since the last call.
    pub fn recompute(&mut self) -> Changes {
        todo!("translate: recompute")
    }

    /// Every stored resource, in key order (for snapshots and queries).
    pub fn resources(&self) -> impl Iterator<Item = &Arc<flotilla_model::Resource>> {
        self.resources.values()
    }

    pub fn resource(&self, key: &ResourceKey) -> Option<&Arc<flotilla_model::Resource>> {
        self.resources.get(key)
    }

    /// The computed `status` of a resource (Gateway, HTTPRoute, GatewayClass), as Kubernetes
    /// would show it.
    pub fn status(&self, key: &ResourceKey) -> Option<&serde_json::Value> {
        self.statuses.get(key)
    }

    /// The translated output of every gateway, by gateway id.
    pub fn gateways(&self) -> &BTreeMap<String, Arc<GatewayXds>> {
        &self.gateways
    }
}
