//! Backend references: resolving a backendRef to an Envoy cluster name and its endpoints.

use crate::envoy::EndpointAddr;
use crate::index::Index;
use flotilla_model::gateway::HttpBackendRef;
use flotilla_model::{Kind, ResourceKey};

pub(crate) fn resolve_backend(
    ix: &Index,
    route: &ResourceKey,
    b: &HttpBackendRef,
) -> Result<(String, Vec<EndpointAddr>), (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("{group}/{kind} is not a supported backend kind (Service)"),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(&route.namespace);
    if ns != route.namespace {
        return Err((
            "RefNotPermitted",
            format!(
                "backendRef {ns}/{} is in another namespace and no ReferenceGrant permits it",
                b.name
            ),
        ));
    }
    let svc_key = ResourceKey::new(&route.cluster, Kind::Service, ns, &b.name);
    let Some(svc) = ix.service(&svc_key) else {
        return Err((
            "BackendNotFound",
            format!("service {ns}/{} not found", b.name),
        ));
    };
    let Some(port) = b.port else {
        return Err((
            "PortNotSpecified",
            "a valid port number corresponding to a port on the Service must be specified"
                .to_string(),
        ));
    };
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    let Some(sp) = ports.and_then(|ps| ps.iter().find(|p| p.port == port)) else {
        return Err((
            "BackendNotFound",
            format!("port {port} not found on service {ns}/{}", b.name),
        ));
    };
    let name = format!("{ns}/{}/{port}", b.name);
    Ok((name, ix.endpoints(&svc_key, sp)))
}
