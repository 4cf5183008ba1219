//! Which gateways a changed object can affect: the dependency index's question, answered over
//! [`Index`] and the policy modules (a policy's targets, a ClientTrafficPolicy's CA refs). It sits
//! above both so that the index itself imports nothing of the translation.

use crate::index::{Edge, Index};
use flotilla_model::{Kind, Object, Resource, ResourceKey};
use std::collections::BTreeSet;

impl Index {
    /// Gateways an object (in its current or previous form) can affect.
    pub fn affected_gateways(&self, r: &Resource, out: &mut BTreeSet<ResourceKey>) {
        let k = &r.key;
        match &r.object {
            Object::Gateway(_) => {
                out.insert(k.clone());
            }
            Object::HTTPRoute(_)
            | Object::GRPCRoute(_)
            | Object::TLSRoute(_)
            | Object::TCPRoute(_)
            | Object::UDPRoute(_) => {
                for (e, target) in Self::edges(r) {
                    if e == Edge::RouteGateway {
                        out.extend(self.parent_gateway(target));
                    }
                }
            }
            Object::Service(_) => {
                self.gateways_of_service(k, out);
                self.gateways_importing(k, false, out);
            }
            Object::ServiceImport(_) => self.gateways_of_service(k, out),
            Object::Extension(Kind::ServiceExport, _) => self.gateways_importing(k, true, out),
            Object::Backend(b) => {
                self.gateways_of_service(k, out);
                // Its CA references are read through the Backend: nothing else to follow.
                let _ = b;
            }
            Object::BackendTLSPolicy(p) => {
                for t in &p.spec.target_refs {
                    let kind = match t.kind.as_str() {
                        "ServiceImport" => Kind::ServiceImport,
                        "Backend" => Kind::Backend,
                        _ => Kind::Service,
                    };
                    let target = ResourceKey::new(&k.cluster, kind, &k.namespace, &t.name);
                    self.gateways_of_service(&target, out);
                }
            }
            Object::ConfigMap(_) => {
                self.gateways_of_ca_holder(k, out);
                self.gateways_validating_clients_with(k, out);
                self.gateways_of_response_body(k, out);
                crate::policy::client::gateways_trusting(self, k, out);
            }
            Object::EndpointSlice(_) => {
                for (_, svc) in Self::edges(r) {
                    self.gateways_of_service(&svc, out);
                    if svc.kind == Kind::Service {
                        self.gateways_importing(&svc, false, out);
                    }
                }
            }
            // Classes, namespaces (label selectors), secrets and the kinds without a precise
            // dependency edge yet are rare changes with wide reach (or none): recompute every
            // gateway of the cluster. Correct, if not minimal.
            _ => {
                out.extend(self.gateways_in(&k.cluster).cloned());
            }
        }
    }

    /// Gateways affected by a ConfigMap that may hold a response body: those the
    /// BackendTrafficPolicies of its namespace whose `responseOverride` names it configure.
    fn gateways_of_response_body(&self, cm: &ResourceKey, out: &mut BTreeSet<ResourceKey>) {
        let start = ResourceKey::new(&cm.cluster, Kind::BackendTrafficPolicy, &cm.namespace, "");
        for (_, r) in self.resources.range(start..).take_while(|(k, _)| {
            k.cluster == cm.cluster
                && k.kind == Kind::BackendTrafficPolicy
                && k.namespace == cm.namespace
        }) {
            let Object::Extension(_, o) = &r.object else {
                continue;
            };
            let names_it = o.spec["responseOverride"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|ro| {
                    ro.pointer("/response/body/valueRef/name") == Some(&cm.name.as_str().into())
                });
            if names_it {
                crate::policy::affected_gateways(self, r, out);
            }
        }
    }
}
