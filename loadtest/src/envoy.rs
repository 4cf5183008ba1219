//! Real Envoys beside the simulated proxies: bootstrap from `flotilla bootstrap`, and at the
//! end their `/config_dump` (dynamic listeners, clusters, route configurations, endpoints and
//! the version of each) compared with what a simulated proxy of the same gateway holds.

use crate::decode::ResType;
use serde_json::Value;
use std::collections::BTreeMap;

/// name -> version, per type.
pub type Held = BTreeMap<ResType, BTreeMap<String, String>>;

/// What Envoy's `/config_dump?include_eds` says it runs (dynamic resources only).
pub fn parse_config_dump(v: &Value) -> Held {
    let mut out = Held::new();
    for ty in ResType::ALL {
        out.insert(ty, BTreeMap::new());
    }
    for c in v["configs"].as_array().into_iter().flatten() {
        let t = c["@type"].as_str().unwrap_or_default();
        if t.ends_with("ClustersConfigDump") {
            for e in c["dynamic_active_clusters"]
                .as_array()
                .into_iter()
                .flatten()
            {
                insert(
                    &mut out,
                    ResType::Cluster,
                    &e["cluster"]["name"],
                    &e["version_info"],
                );
            }
        } else if t.ends_with("ListenersConfigDump") {
            for e in c["dynamic_listeners"].as_array().into_iter().flatten() {
                // The active state is what serves; a listener still warming is not held yet.
                if e["active_state"].is_object() {
                    insert(
                        &mut out,
                        ResType::Listener,
                        &e["name"],
                        &e["active_state"]["version_info"],
                    );
                }
            }
        } else if t.ends_with("RoutesConfigDump") {
            for e in c["dynamic_route_configs"].as_array().into_iter().flatten() {
                insert(
                    &mut out,
                    ResType::Route,
                    &e["route_config"]["name"],
                    &e["version_info"],
                );
            }
        } else if t.ends_with("EndpointsConfigDump") {
            // Envoy 1.40 does not report EDS versions (`version_info` is not implemented for
            // endpoints): the endpoints themselves stand in for the version.
            for e in c["dynamic_endpoint_configs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let summary = Value::String(endpoints_summary(&e["endpoint_config"]));
                insert(
                    &mut out,
                    ResType::Endpoint,
                    &e["endpoint_config"]["cluster_name"],
                    &summary,
                );
            }
        }
    }
    out
}

/// The same summary as [`crate::decode::Decoded::Endpoints`], from a config dump's JSON.
pub fn endpoints_summary(cla: &Value) -> String {
    let mut eps = Vec::new();
    for l in cla["endpoints"].as_array().into_iter().flatten() {
        let priority = l["priority"].as_u64().unwrap_or(0) as u32;
        for e in l["lb_endpoints"].as_array().into_iter().flatten() {
            let sa = &e["endpoint"]["address"]["socket_address"];
            if let Some(a) = sa["address"].as_str() {
                let port = sa["port_value"].as_u64().unwrap_or(0) as u32;
                eps.push(crate::decode::endpoint_key(priority, a, port));
            }
        }
    }
    eps.sort();
    eps.join(",")
}

/// Versions of one type replaced by "" (for comparisons where one side has none).
pub fn without_versions(h: &Held, ty: ResType) -> Held {
    let mut out = h.clone();
    if let Some(m) = out.get_mut(&ty) {
        for v in m.values_mut() {
            v.clear();
        }
    }
    out
}

fn insert(out: &mut Held, ty: ResType, name: &Value, version: &Value) {
    if let Some(n) = name.as_str() {
        out.entry(ty).or_default().insert(
            n.to_string(),
            version.as_str().unwrap_or_default().to_string(),
        );
    }
}

/// Human-readable differences between two holdings (empty: equal).
pub fn diff(left_name: &str, left: &Held, right_name: &str, right: &Held) -> Vec<String> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for ty in ResType::ALL {
        let l = left.get(&ty).unwrap_or(&empty);
        let r = right.get(&ty).unwrap_or(&empty);
        for (n, v) in l {
            match r.get(n) {
                None => out.push(format!(
                    "{} {n}: {left_name} has {v}, {right_name} has none",
                    ty.short()
                )),
                Some(w) if w != v => out.push(format!(
                    "{} {n}: {left_name} has {v}, {right_name} has {w}",
                    ty.short()
                )),
                _ => {}
            }
        }
        for (n, w) in r {
            if !l.contains_key(n) {
                out.push(format!(
                    "{} {n}: {left_name} has none, {right_name} has {w}",
                    ty.short()
                ));
            }
        }
    }
    out
}

/// The holding a gateway's resources (from `/api/v1/gateways`) describe.
pub fn expected(resources: &[(String, String, String)]) -> Held {
    let mut out = Held::new();
    for ty in ResType::ALL {
        out.insert(ty, BTreeMap::new());
    }
    for (t, n, v) in resources {
        if let Some(ty) = ResType::from_url(t) {
            out.entry(ty).or_default().insert(n.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_dump_dynamic_resources() {
        let dump = json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "static_clusters": [{"cluster": {"name": "flotilla_xds"}}],
             "dynamic_active_clusters": [{"version_info": "c1", "cluster": {"name": "east/lt/svc0"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
             "dynamic_listeners": [
                {"name": "l80", "active_state": {"version_info": "l1", "listener": {}}},
                {"name": "warming", "warming_state": {"version_info": "w"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
             "dynamic_route_configs": [{"version_info": "r1", "route_config": {"name": "http-80"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
             "dynamic_endpoint_configs": [{"version_info": "", "endpoint_config": {"cluster_name": "east/lt/svc0",
                "endpoints": [{"priority": 1, "lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 80}}}}]},
                              {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8080}}}}]}]}}]}
        ]});
        let h = parse_config_dump(&dump);
        assert_eq!(h[&ResType::Cluster].len(), 1);
        assert_eq!(
            h[&ResType::Listener].get("l80").map(String::as_str),
            Some("l1")
        );
        assert!(!h[&ResType::Listener].contains_key("warming"));
        assert_eq!(h[&ResType::Route]["http-80"], "r1");
        assert_eq!(
            h[&ResType::Endpoint]["east/lt/svc0"],
            "p0 10.0.0.1:8080,p1 10.0.0.2:80"
        );
        let exp = expected(&[
            (
                crate::decode::CDS.into(),
                "east/lt/svc0".into(),
                "c1".into(),
            ),
            (crate::decode::LDS.into(), "l80".into(), "l1".into()),
            (crate::decode::RDS.into(), "http-80".into(), "r2".into()),
            (
                crate::decode::EDS.into(),
                "east/lt/svc0".into(),
                "e1".into(),
            ),
        ]);
        let d = diff(
            "envoy",
            &without_versions(&h, ResType::Endpoint),
            "store",
            &without_versions(&exp, ResType::Endpoint),
        );
        assert_eq!(
            d,
            vec!["RDS http-80: envoy has r1, store has r2".to_string()]
        );
        assert!(diff("a", &exp, "b", &exp).is_empty());
    }

    #[test]
    fn endpoint_summary_of_the_proto_matches_the_config_dump() {
        use envoy_types::pb::envoy::config::core::v3::{
            address, socket_address, Address, SocketAddress,
        };
        use envoy_types::pb::envoy::config::endpoint::v3::{
            lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint,
            LocalityLbEndpoints,
        };
        use prost::Message;
        let ep = |a: &str, p: u32| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: a.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(p)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                LocalityLbEndpoints {
                    priority: 1,
                    lb_endpoints: vec![ep("10.0.0.2", 80)],
                    ..Default::default()
                },
                LocalityLbEndpoints {
                    lb_endpoints: vec![ep("10.0.0.1", 8080)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let i = crate::intern::Interner::new();
        let d = crate::decode::decode(ResType::Endpoint, &cla.encode_to_vec(), &i);
        let crate::decode::Decoded::Endpoints { summary } = d else {
            panic!("{d:?}")
        };
        let dump = json!({"cluster_name": "c", "endpoints": [
            {"priority": 1, "lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 80}}}}]},
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8080}}}}]}]});
        assert_eq!(&*i.resolve(summary), endpoints_summary(&dump));
    }
}
