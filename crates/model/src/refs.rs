//! Reference and backend kinds: ReferenceGrant, BackendTLSPolicy, Envoy Gateway's Backend,
//! ServiceImport (Multi-Cluster Services), and the Envoy Gateway policy kinds that are stored
//! (so nothing accepted is lost) but not translated yet.

use crate::routes::spec_object;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

spec_object!(
    ReferenceGrant,
    BackendTlsPolicy,
    Backend,
    ServiceImport,
    ClusterTrustBundle,
    /// Envoy Gateway policy and extension kinds, stored as written.
    ExtensionObject,
);
