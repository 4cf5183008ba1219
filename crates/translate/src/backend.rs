//! Backend references: validating a backendRef (group and kind, cross-namespace ReferenceGrant,
//! port), resolving it to an Envoy cluster and its endpoints (Service, Multi-Cluster Services
//! ServiceImport, Envoy Gateway Backend), the action of a rule's weighted backends (with Envoy
//! Gateway's 500 share for invalid ones), the Envoy clusters themselves (EDS or STRICT_DNS, with
//! upstream TLS from BackendTLSPolicy), and Backend status.
//!
//! Messages and reasons are Envoy Gateway's, so that statuses read the same after a move.

use crate::backendtls::{transport_socket, CaSource, UpstreamTls};
use crate::envoy::{self, EndpointAddr};
use crate::index::Index;
use crate::ir::cluster::{BackendId, ClusterKey};
use crate::policy::backendtls::{policy_for, TlsTarget};
use crate::traffic::UpstreamHttp;
use crate::XdsResource;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::cluster_config::ClusterImplementationSpecifier as DfpImpl;
use envoy_types::pb::google::protobuf::Duration;
use flotilla_model::gateway::{Condition, HttpBackendRef};
use flotilla_model::refs::Backend;
use flotilla_model::{Kind, Object, ResourceKey, EG_GROUP, GATEWAY_GROUP};
use std::net::IpAddr;
use std::sync::Arc;

/// API group of the Multi-Cluster Services API (ServiceImport).
pub(crate) const MCS_GROUP: &str = "multicluster.x-k8s.io";
/// The cluster the invalid share of a weighted rule goes to. It never exists: with
/// `cluster_not_found_response_code: INTERNAL_SERVER_ERROR` Envoy answers that share with 500,
/// as Envoy Gateway does.
pub(crate) const INVALID_BACKEND_CLUSTER: &str = "invalid-backend-cluster";
/// Reason of a backend that exists but has no ready endpoints (a BackendsAvailable=False
/// condition, not ResolvedRefs).
pub(crate) const ENDPOINTS_NOT_FOUND: &str = "EndpointsNotFound";

/// The kind of object a backendRef names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    Service,
    ServiceImport,
    Backend,
}

fn kind_of(b: &HttpBackendRef) -> Option<BackendKind> {
    match b.kind.as_deref().unwrap_or("Service") {
        "Service" => Some(BackendKind::Service),
        "ServiceImport" => Some(BackendKind::ServiceImport),
        "Backend" => Some(BackendKind::Backend),
        _ => None,
    }
}

/// The key of the object a backendRef names (for the dependency index).
pub(crate) fn backend_key(cluster: &str, route_ns: &str, b: &HttpBackendRef) -> ResourceKey {
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    let kind = match kind_of(b) {
        Some(BackendKind::ServiceImport) => Kind::ServiceImport,
        Some(BackendKind::Backend) => Kind::Backend,
        _ => Kind::Service,
    };
    ResourceKey::new(cluster, kind, ns, &b.name)
}

/// Resolves a backendRef of `route` (whose key kind says which route kind refers) to a cluster
/// name and endpoints, or (reason, message) in Envoy Gateway's words. A backend without ready
/// endpoints fails with [`ENDPOINTS_NOT_FOUND`].
pub(crate) fn resolve_backend(
    ix: &Index,
    route: &ResourceKey,
    b: &HttpBackendRef,
) -> crate::index::Resolution {
    // What the resolution reads of the route and the ref: many routes name the same backend.
    let key = crate::index::ResolveKey {
        cluster: route.cluster.clone(),
        route_kind: route.kind,
        route_namespace: route.namespace.clone(),
        group: b.group.clone(),
        kind: b.kind.clone(),
        namespace: b.namespace.clone(),
        name: b.name.clone(),
        port: b.port,
        weighted: b.weight.unwrap_or(1) != 0,
    };
    ix.resolved.get_or_insert(key, || {
        resolve_inner(ix, route, b, &mut None, true).map(|(id, eps)| (id, eps.into()))
    })
}

fn resolve_inner(
    ix: &Index,
    route: &ResourceKey,
    b: &HttpBackendRef,
    tls_policy: &mut Option<ResourceKey>,
    with_endpoints: bool,
) -> Result<(BackendId, Vec<EndpointAddr>), (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    if !matches!(group, "" | MCS_GROUP | EG_GROUP) {
        return Err((
            "InvalidKind",
            format!(
                "Group is invalid, only the core API group (specified by omitting the group field \
                 or setting it to an empty string), {MCS_GROUP} and {EG_GROUP} are supported"
            ),
        ));
    }
    let Some(kind) = kind_of(b) else {
        return Err((
            "InvalidKind",
            "Kind is invalid, only Service, MCS ServiceImport and Envoy Gateway Backend are supported"
                .into(),
        ));
    };
    let kind_name = b.kind.as_deref().unwrap_or("Service");
    let ns = b.namespace.as_deref().unwrap_or(&route.namespace);
    if !ix.reference_allowed(
        &route.cluster,
        GATEWAY_GROUP,
        route.kind.as_str(),
        &route.namespace,
        group,
        kind_name,
        ns,
        &b.name,
    ) {
        return Err((
            "RefNotPermitted",
            format!(
                "Backend ref to {kind_name} {ns}/{} not permitted by any ReferenceGrant",
                b.name
            ),
        ));
    }
    let protocol = if route.kind == Kind::UDPRoute {
        "UDP"
    } else {
        "TCP"
    };
    let cluster = &route.cluster;
    let weight = b.weight.unwrap_or(1);
    match kind {
        BackendKind::Service | BackendKind::ServiceImport => {
            let Some(port) = b.port else {
                return Err((
                    "PortNotSpecified",
                    "A valid port number corresponding to a port on the Service must be specified"
                        .into(),
                ));
            };
            let key = backend_key(cluster, &route.namespace, b);
            let (what, ports) = match (kind, ix.resources.get(&key).map(|r| &r.object)) {
                (BackendKind::Service, Some(Object::Service(svc))) => {
                    let spec = svc.spec.as_ref();
                    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
                        return Err((
                            "UnsupportedValue",
                            format!(
                                "Service {ns}/{} is of type ExternalName, which is not supported \
                                 as a backend; use an Envoy Gateway Backend resource with an FQDN \
                                 endpoint instead",
                                b.name
                            ),
                        ));
                    }
                    let ports: Vec<(i32, String, String)> = spec
                        .and_then(|s| s.ports.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            (
                                p.port,
                                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                                p.name.clone().unwrap_or_default(),
                            )
                        })
                        .collect();
                    ("Service", ports)
                }
                (BackendKind::ServiceImport, Some(Object::ServiceImport(si))) => {
                    let ports = si
                        .spec
                        .ports
                        .iter()
                        .map(|p| {
                            (
                                p.port,
                                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                                p.name.clone().unwrap_or_default(),
                            )
                        })
                        .collect();
                    ("ServiceImport", ports)
                }
                (BackendKind::Service, _) => {
                    return Err((
                        "BackendNotFound",
                        format!("service {ns}/{} not found", b.name),
                    ))
                }
                _ => {
                    return Err((
                        "BackendNotFound",
                        format!("service import {ns}/{} not found", b.name),
                    ))
                }
            };
            let Some((_, _, port_name)) = ports
                .iter()
                .find(|(p, proto, _)| *p == port && proto == protocol)
            else {
                return Err((
                    "PortNotFound",
                    format!("{protocol} Port {port} not found on {what} {ns}/{}", b.name),
                ));
            };
            let name = match kind {
                BackendKind::Service => BackendId::Service {
                    namespace: ns.to_string(),
                    name: b.name.clone(),
                    port,
                },
                _ => BackendId::ServiceImport {
                    namespace: ns.to_string(),
                    name: b.name.clone(),
                    port,
                },
            };
            // Envoy Gateway checks neither TLS nor endpoints of a backend of weight 0.
            if weight != 0 {
                let target = TlsTarget {
                    group: group.to_string(),
                    kind: kind_name.to_string(),
                    namespace: ns.to_string(),
                    name: b.name.clone(),
                    section: Some(port_name.clone()).filter(|n| !n.is_empty()),
                };
                check_tls(ix, cluster, &target, None, tls_policy)?;
            }
            if !with_endpoints {
                return Ok((name, vec![]));
            }
            let endpoints = match kind {
                BackendKind::ServiceImport => ix.import_endpoints(&key, port_name, protocol),
                _ => ix.endpoints_of(&key, port_name, protocol),
            };
            if weight == 0 {
                return Ok((name, endpoints));
            }
            let hostnames = endpoints.iter().filter(|e| !is_ip(&e.ip)).count();
            if hostnames > 0 && hostnames < endpoints.len() {
                return Err((
                    "UnsupportedAddressType",
                    "mixed endpointslice address type for the same backendRef is not supported"
                        .into(),
                ));
            }
            if !endpoints.iter().any(|e| e.ready) {
                return Err((
                    ENDPOINTS_NOT_FOUND,
                    format!("no ready endpoints for the related {what} {ns}/{}", b.name),
                ));
            }
            Ok((name, endpoints))
        }
        BackendKind::Backend => {
            if !ix.options.backend {
                return Err((
                    "UnsupportedValue",
                    "Backend is disabled in Envoy Gateway configuration".into(),
                ));
            }
            let key = ResourceKey::new(cluster, Kind::Backend, ns, &b.name);
            let Some(Object::Backend(be)) = ix.resources.get(&key).map(|r| &r.object) else {
                return Err((
                    "BackendNotFound",
                    format!("Backend {ns}/{} not found", b.name),
                ));
            };
            if let Err((reason, msg)) = validate_backend(be, &ix.options) {
                return Err((reason, msg));
            }
            let dynamic = be.spec.type_.as_deref() == Some("DynamicResolver");
            if dynamic && !matches!(route.kind, Kind::HTTPRoute | Kind::GRPCRoute) {
                return Err((
                    "UnsupportedValue",
                    "DynamicResolver backends are supported for HTTPRoute and GRPCRoute only"
                        .into(),
                ));
            }
            if be.spec.endpoints.iter().any(|e| e.unix.is_some()) {
                return Err((
                    "UnsupportedAddressType",
                    "unix domain sockets are not supported in backend references".into(),
                ));
            }
            let fqdn = be
                .spec
                .endpoints
                .iter()
                .filter(|e| e.fqdn.is_some())
                .count();
            if fqdn > 0 && fqdn < be.spec.endpoints.len() {
                return Err((
                    "UnsupportedAddressType",
                    "mixed FQDN and IP or Unix address type for the same backendRef is not supported"
                        .into(),
                ));
            }
            let name = BackendId::Backend {
                namespace: ns.to_string(),
                name: b.name.clone(),
                port: b.port,
            };
            if weight != 0 {
                let target = TlsTarget {
                    group: group.to_string(),
                    kind: kind_name.to_string(),
                    namespace: ns.to_string(),
                    name: b.name.clone(),
                    section: b.port.map(|p| p.to_string()),
                };
                check_tls(ix, cluster, &target, Some((ns, be)), tls_policy)?;
            }
            if !with_endpoints || dynamic {
                // A dynamic resolver has no endpoints: its cluster resolves the request host.
                return Ok((name, vec![]));
            }
            let endpoints: Vec<EndpointAddr> = be
                .spec
                .endpoints
                .iter()
                .filter_map(|e| {
                    let (host, port) = match (&e.ip, &e.fqdn) {
                        (Some(ip), _) => (ip.address.clone(), ip.port),
                        (None, Some(f)) => (f.hostname.clone(), f.port),
                        _ => return None,
                    };
                    Some(EndpointAddr::local(host, u32::try_from(port).ok()?, true))
                })
                .collect();
            // Envoy Gateway reports nothing for a Backend without endpoints (the API requires
            // at least one); its share of traffic fails.
            Ok((name, endpoints))
        }
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Whether a backendRef names an Envoy Gateway Backend of type DynamicResolver.
pub(crate) fn is_dynamic_resolver(ix: &Index, route: &ResourceKey, b: &HttpBackendRef) -> bool {
    if kind_of(b) != Some(BackendKind::Backend) {
        return false;
    }
    let key = backend_key(&route.cluster, &route.namespace, b);
    matches!(ix.resources.get(&key).map(|r| &r.object),
        Some(Object::Backend(be)) if be.spec.type_.as_deref() == Some("DynamicResolver"))
}

/// Resolves the TLS settings of a backend; an invalid policy fails the backendRef with
/// InvalidBackendTLS (Envoy Gateway's `applyBackendTLSSetting`). `tls_policy`: the policy
/// attached to the backend, valid or not.
fn check_tls(
    ix: &Index,
    cluster: &str,
    target: &TlsTarget,
    backend: Option<(&str, &Backend)>,
    tls_policy: &mut Option<ResourceKey>,
) -> Result<Option<UpstreamTls>, (&'static str, String)> {
    let attached = policy_for(ix, cluster, target);
    if let Some(p) = &attached {
        *tls_policy = Some(p.key.clone());
    }
    let policy = attached.as_ref().map(|p| (p.key, p.policy));
    crate::backendtls::upstream_tls(ix, cluster, backend, policy)
        .map_err(|m| ("InvalidBackendTLS", m))
}

/// Envoy Gateway's `validateBackend`: loopback addresses and single-label hostnames are refused
/// unless the data plane runs on the host.
fn validate_backend(
    be: &Backend,
    opts: &crate::TranslateOptions,
) -> Result<(), (&'static str, String)> {
    let host = opts.running_on_host;
    let invalid = |m: String| Err(("InvalidAddress", m));
    if be.spec.type_.as_deref() == Some("DynamicResolver") && !be.spec.endpoints.is_empty() {
        return Err((
            "InvalidBackendRef",
            "DynamicResolver type cannot have endpoints specified".into(),
        ));
    }
    if let Some(t) = &be.spec.tls {
        if !t.insecure_skip_verify.unwrap_or(false)
            && t.well_known_ca_certificates.is_none()
            && t.ca_certificate_refs.is_empty()
        {
            return Err((
                "InvalidBackendRef",
                "must specify either CACertificateRefs or WellKnownCACertificates when \
                 InsecureSkipVerify is unset or false"
                    .into(),
            ));
        }
    }
    for ep in &be.spec.endpoints {
        if let Some(h) = &ep.hostname {
            validate_hostname(h, "hostname", host).or_else(invalid)?;
        }
        if let Some(f) = &ep.fqdn {
            validate_hostname(&f.hostname, "FQDN", host).or_else(invalid)?;
        } else if let Some(ip) = &ep.ip {
            match ip.address.parse::<IpAddr>() {
                Err(_) => return invalid(format!("IP address {} is invalid", ip.address)),
                Ok(a) if a.is_loopback() && !host => {
                    return invalid(format!(
                        "IP address {} in the loopback range is only supported when using the \
                         Host infrastructure",
                        ip.address
                    ))
                }
                Ok(_) => {}
            }
        }
    }
    Ok(())
}

fn validate_hostname(h: &str, what: &str, running_on_host: bool) -> Result<(), String> {
    if !is_dns1123_subdomain(h) {
        return Err(format!("hostname {h} is not a valid {what}"));
    }
    if !running_on_host && h.split('.').count() < 2 {
        return Err(format!(
            "hostname {h} should be a domain with at least two segments separated by dots"
        ));
    }
    if h.parse::<IpAddr>().is_ok() {
        return Err(format!("hostname {h} is an IP address"));
    }
    Ok(())
}

/// Kubernetes' `IsDNS1123Subdomain`.
fn is_dns1123_subdomain(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The status Envoy Gateway writes on a Backend (note its quirk, kept for compatibility: a
/// refused Backend gets type `Invalid` with reason `Accepted`).
pub(crate) fn backend_status(be: &Backend, opts: &crate::TranslateOptions) -> serde_json::Value {
    let gen = be.metadata.generation;
    let checked = if opts.backend {
        validate_backend(be, opts).map_err(|(_, m)| format!("The Backend was not accepted: {m}"))
    } else {
        Err(
            "The Backend was not accepted since Backend is not enabled in Envoy Gateway Config"
                .into(),
        )
    };
    let cond = match checked {
        Ok(()) => Condition::new(
            "Accepted",
            true,
            "Accepted",
            "The Backend was accepted",
            gen,
        ),
        Err(m) => Condition::new("Invalid", false, "Accepted", m, gen),
    };
    serde_json::json!({ "conditions": [cond] })
}

/// The BackendTLSPolicies the backendRefs of a route use (Envoy Gateway consults the policy of
/// every backendRef that passes validation and has a non-zero weight, valid policy or not).
pub(crate) fn tls_policies_of<'a>(
    ix: &Index,
    route: &ResourceKey,
    refs: impl IntoIterator<Item = &'a HttpBackendRef>,
) -> Vec<ResourceKey> {
    let mut out: Vec<ResourceKey> = Vec::new();
    for b in refs {
        let mut p = None;
        let _ = resolve_inner(ix, route, b, &mut p, false);
        if let Some(p) = p {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The Envoy resources of one cluster of `cluster` (a Kubernetes cluster id): a STRICT_DNS
/// cluster with its endpoints inline for an FQDN Backend, otherwise an EDS cluster (and, for the
/// backend's own cluster, its ClusterLoadAssignment: a settings variant reads the base
/// cluster's); with the upstream TLS transport socket when a Backend's `spec.tls` or a
/// BackendTLSPolicy asks for it, HTTP/2 upstream when `http2` (gRPC) or the port's
/// appProtocol says so, and the key's BackendTrafficPolicy settings.
pub(crate) fn cluster_resources(
    ix: &Index,
    cluster: &str,
    key: &ClusterKey,
    endpoints: &[EndpointAddr],
    http2: bool,
) -> Vec<Arc<XdsResource>> {
    let base = key.backend.name();
    let name = key.name();
    let settings = key.settings.as_deref();
    // A gRPC health check means the backend speaks gRPC: HTTP/2 (Envoy requires it).
    let grpc_checked = settings
        .and_then(|s| s.active_health_check.as_ref())
        .is_some_and(|h| matches!(h.kind, crate::ir::cluster::HealthCheckKind::Grpc { .. }));
    let proto = if http2 || grpc_checked || app_protocol_is_http2(ix, cluster, &key.backend) {
        UpstreamHttp::Http2
    } else {
        UpstreamHttp::Http1
    };
    let finish = |mut c: Cluster| {
        if let Some(s) = settings {
            crate::traffic::apply_cluster(&mut c, s);
        }
        crate::traffic::set_protocol_options(
            &mut c,
            crate::traffic::protocol_options(proto, settings),
        );
        envoy::encode(crate::type_url::CLUSTER, &name, &c)
    };
    let own_endpoints = settings.is_none();
    let (kind, ns, bname, port) = match &key.backend {
        BackendId::Service {
            namespace,
            name,
            port,
        } => (
            BackendKind::Service,
            namespace,
            name,
            Some(port.to_string()),
        ),
        BackendId::ServiceImport {
            namespace,
            name,
            port,
        } => (
            BackendKind::ServiceImport,
            namespace,
            name,
            Some(port.to_string()),
        ),
        BackendId::Backend {
            namespace,
            name,
            port,
        } => (
            BackendKind::Backend,
            namespace,
            name,
            port.map(|p| p.to_string()),
        ),
        BackendId::Named(_) => {
            let mut out = vec![finish(envoy::eds_cluster_message(&name, &base))];
            if own_endpoints {
                out.push(envoy::load_assignment(&base, endpoints));
            }
            return out;
        }
    };
    let (ns, bname, port) = (ns.as_str(), bname.as_str(), port.as_deref());
    let (group, kind_name, section, backend) = match kind {
        BackendKind::Service => (
            "",
            "Service",
            service_port_name(ix, cluster, ns, bname, port),
            None,
        ),
        BackendKind::ServiceImport => (
            MCS_GROUP,
            "ServiceImport",
            service_port_name(ix, cluster, ns, bname, port),
            None,
        ),
        BackendKind::Backend => {
            let key = ResourceKey::new(cluster, Kind::Backend, ns, bname);
            let be = match ix.resources.get(&key).map(|r| &r.object) {
                Some(Object::Backend(be)) => Some(be),
                _ => None,
            };
            (EG_GROUP, "Backend", port.map(str::to_string), be)
        }
    };
    let mut tls = None;
    for g in [group, ""] {
        // A backendRef to a ServiceImport may omit the group; the policy lookup uses the
        // group as the backendRef spells it, so try both.
        let target = TlsTarget {
            group: g.to_string(),
            kind: kind_name.to_string(),
            namespace: ns.to_string(),
            name: bname.to_string(),
            section: section.clone(),
        };
        let attached = policy_for(ix, cluster, &target);
        let policy = attached.as_ref().map(|p| (p.key, p.policy));
        if let Ok(Some(t)) =
            crate::backendtls::upstream_tls(ix, cluster, backend.map(|b| (ns, b)), policy)
        {
            tls = Some(t);
            break;
        }
        if kind != BackendKind::ServiceImport {
            break;
        }
    }
    let socket = tls.as_ref().map(transport_socket);
    let service_addresses = settings
        .filter(|s| s.service_routing)
        .and_then(|_| service_addresses(ix, cluster, &key.backend));
    let mut out = if backend.is_some_and(|be| be.spec.type_.as_deref() == Some("DynamicResolver")) {
        vec![finish(dynamic_forward_proxy_cluster(&name, socket))]
    } else if let Some(addresses) = service_addresses {
        // `routingType: Service`: the cluster IP is one address, its own, not the endpoints
        // the backend's other clusters share.
        vec![finish(static_cluster(&name, &addresses, socket))]
    } else if endpoints.iter().any(|e| !is_ip(&e.ip)) {
        // Host names (FQDN Backends, FQDN EndpointSlices) need DNS; EDS takes only addresses.
        vec![finish(strict_dns_cluster(&name, endpoints, socket))]
    } else {
        let mut v = vec![finish(eds_cluster(&name, &base, socket))];
        if own_endpoints {
            v.push(envoy::load_assignment(&base, endpoints));
        }
        v
    };
    // A CA from an SDS server needs the cluster that reaches it (the gateway keeps one copy).
    if let Some(CaSource::Sds(r)) = tls.as_ref().map(|t| &t.ca) {
        out.push(crate::tls::sds_cluster(&r.url));
    }
    out
}

fn service_port_name(
    ix: &Index,
    cluster: &str,
    ns: &str,
    name: &str,
    port: Option<&str>,
) -> Option<String> {
    let port: i32 = port?.parse().ok()?;
    let svc = ResourceKey::new(cluster, Kind::Service, ns, name);
    let si = ResourceKey::new(cluster, Kind::ServiceImport, ns, name);
    let named = match ix.resources.get(&svc).map(|r| &r.object) {
        Some(Object::Service(s)) => s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ps| ps.iter().find(|p| p.port == port))
            .and_then(|p| p.name.clone()),
        _ => match ix.resources.get(&si).map(|r| &r.object) {
            Some(Object::ServiceImport(s)) => s
                .spec
                .ports
                .iter()
                .find(|p| p.port == port)
                .and_then(|p| p.name.clone()),
            _ => None,
        },
    };
    named.filter(|n| !n.is_empty())
}

/// Does the backend of cluster `name` speak HTTP/2 by its port's appProtocol? Envoy Gateway
/// (`serviceAppProtocolToIRAppProtocol`) takes `kubernetes.io/h2c` as HTTP/2 (prior knowledge)
/// and `grpc` as gRPC, for a Service or ServiceImport port.
fn app_protocol_is_http2(ix: &Index, cluster: &str, id: &BackendId) -> bool {
    let (kind, ns, bname, port) = match id {
        BackendId::Service {
            namespace,
            name,
            port,
        } => (BackendKind::Service, namespace, name, *port),
        BackendId::ServiceImport {
            namespace,
            name,
            port,
        } => (BackendKind::ServiceImport, namespace, name, *port),
        _ => return false,
    };
    let (ns, bname) = (ns.as_str(), bname.as_str());
    let app = match kind {
        BackendKind::Service => {
            let key = ResourceKey::new(cluster, Kind::Service, ns, bname);
            match ix.resources.get(&key).map(|r| &r.object) {
                Some(Object::Service(s)) => s
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .and_then(|ps| ps.iter().find(|p| p.port == port))
                    .and_then(|p| p.app_protocol.clone()),
                _ => None,
            }
        }
        BackendKind::ServiceImport => {
            let key = ResourceKey::new(cluster, Kind::ServiceImport, ns, bname);
            match ix.resources.get(&key).map(|r| &r.object) {
                Some(Object::ServiceImport(s)) => s
                    .spec
                    .ports
                    .iter()
                    .find(|p| p.port == port)
                    .and_then(|p| p.app_protocol.clone()),
                _ => None,
            }
        }
        BackendKind::Backend => None,
    };
    matches!(app.as_deref(), Some("kubernetes.io/h2c" | "grpc"))
}

fn base_cluster(name: &str, socket: Option<TransportSocket>) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        transport_socket: socket,
        ..Default::default()
    }
}

/// An EDS cluster named `name` reading the ClusterLoadAssignment `service` (the backend's own
/// cluster name, shared by its settings variants).
fn eds_cluster(name: &str, service: &str, socket: Option<TransportSocket>) -> Cluster {
    let mut c = envoy::eds_cluster_message(name, service);
    c.transport_socket = socket;
    c
}

/// A dynamic forward proxy cluster in sub-cluster mode: one sub-cluster per request host:port,
/// resolved by DNS on demand (Envoy Gateway's DynamicResolver Backend).
/// An `envoy.clusters.dynamic_forward_proxy` cluster: the upstream is the host the request
/// (or the TLS server name) names, resolved as `implementation` says.
fn dfp_cluster(name: &str, socket: Option<TransportSocket>, implementation: DfpImpl) -> Cluster {
    use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::ClusterConfig;
    let mut c = base_cluster(name, socket);
    c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    let cfg = ClusterConfig {
        cluster_implementation_specifier: Some(implementation),
        ..Default::default()
    };
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::ClusterType(
        cluster::CustomClusterType {
            name: "envoy.clusters.dynamic_forward_proxy".into(),
            typed_config: Some(envoy::any(
                "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                &cfg,
            )),
        },
    ));
    c
}

/// A DynamicResolver Backend of an HTTP route: one sub-cluster per requested host:port.
fn dynamic_forward_proxy_cluster(name: &str, socket: Option<TransportSocket>) -> Cluster {
    use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::SubClustersConfig;
    let mut c = dfp_cluster(
        name,
        socket,
        DfpImpl::SubClustersConfig(SubClustersConfig {
            lb_policy: cluster::LbPolicy::RoundRobin as i32,
            ..Default::default()
        }),
    );
    // Sub-clusters inherit this: prefer IPv4, fall back to IPv6.
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    c
}

/// The DNS cache a TLSRoute's dynamic forward proxy cluster and its listener's SNI filter share.
pub(crate) fn dfp_dns_cache(
    name: &str,
) -> envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig {
    envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig {
        name: name.to_string(),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        ..Default::default()
    }
}

/// A dynamic forward proxy cluster over the DNS cache `name` (filled by the SNI filter): a
/// TLS passthrough to whatever host the client named.
pub(crate) fn dns_cache_dfp_cluster(name: &str) -> Arc<XdsResource> {
    let c = dfp_cluster(name, None, DfpImpl::DnsCacheConfig(dfp_dns_cache(name)));
    envoy::encode(crate::type_url::CLUSTER, name, &c)
}

/// A cluster of fixed addresses (IPs), given inline.
fn static_cluster(
    name: &str,
    endpoints: &[EndpointAddr],
    socket: Option<TransportSocket>,
) -> Cluster {
    let mut c = base_cluster(name, socket);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::Static as i32,
    ));
    c.load_assignment = Some(envoy::cluster_load_assignment(name, endpoints, false));
    c
}

/// A Service or ServiceImport backend's kind, namespace, name and port (`None` for the
/// others).
fn service_like(id: &BackendId) -> Option<(Kind, &str, &str, i32)> {
    match id {
        BackendId::Service {
            namespace,
            name,
            port,
        } => Some((Kind::Service, namespace, name, *port)),
        BackendId::ServiceImport {
            namespace,
            name,
            port,
        } => Some((Kind::ServiceImport, namespace, name, *port)),
        _ => None,
    }
}

/// The addresses `routingType: Service` reaches a backend through (Envoy Gateway's
/// `processServiceDestinationSetting` and `processServiceImportDestinationSetting`): a
/// Service's cluster IP, or a ServiceImport's IPs, each with the backendRef's port. `None` for
/// a headless one (cluster IP `None`, or none at all), which Envoy Gateway reaches through its
/// endpoints still, and for other backends. An address that is not an IP counts as none: Envoy
/// would refuse it.
pub(crate) fn service_addresses(
    ix: &Index,
    cluster: &str,
    id: &BackendId,
) -> Option<Vec<EndpointAddr>> {
    let (kind, namespace, name, port) = service_like(id)?;
    let port = u32::try_from(port).ok()?;
    let key = ResourceKey::new(cluster, kind, namespace, name);
    let ips: Vec<&str> = match ix.resources.get(&key).map(|r| &r.object) {
        Some(Object::Service(s)) => s
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .into_iter()
            .collect(),
        Some(Object::ServiceImport(s)) => s.spec.ips.iter().map(String::as_str).collect(),
        _ => return None,
    };
    let addresses: Vec<EndpointAddr> = ips
        .into_iter()
        .filter(|ip| is_ip(ip))
        .map(|ip| EndpointAddr::local(ip, port, true))
        .collect();
    (!addresses.is_empty()).then_some(addresses)
}

fn strict_dns_cluster(
    name: &str,
    endpoints: &[EndpointAddr],
    socket: Option<TransportSocket>,
) -> Cluster {
    let mut c = base_cluster(name, socket);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    c.load_assignment = Some(envoy::cluster_load_assignment(name, endpoints, false));
    c
}

/// The endpoints a Service or ServiceImport backend of a gateway of `cluster` has now, as
/// resolution computes them (the TCP port of that number, by its name); `None` for other
/// backends, or when the port is gone (a change resolution must look at again).
pub(crate) fn current_endpoints(
    ix: &Index,
    cluster: &str,
    id: &BackendId,
) -> Option<Vec<EndpointAddr>> {
    let (kind, namespace, name, port) = service_like(id)?;
    let key = ResourceKey::new(cluster, kind, namespace, name);
    let ports: Vec<(i32, Option<&str>, Option<&str>)> =
        match ix.resources.get(&key).map(|r| &r.object) {
            Some(Object::Service(s)) => s
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| (p.port, p.protocol.as_deref(), p.name.as_deref()))
                .collect(),
            Some(Object::ServiceImport(s)) => s
                .spec
                .ports
                .iter()
                .map(|p| (p.port, p.protocol.as_deref(), p.name.as_deref()))
                .collect(),
            _ => return None,
        };
    let (_, _, port_name) = ports
        .into_iter()
        .find(|(p, proto, _)| *p == port && proto.unwrap_or("TCP") == "TCP")?;
    let port_name = port_name.unwrap_or("");
    Some(match kind {
        Kind::ServiceImport => ix.import_endpoints(&key, port_name, "TCP"),
        _ => ix.endpoints_of(&key, port_name, "TCP"),
    })
}

#[cfg(test)]
pub(crate) mod tests;
