//! `routingType: Service`: a variant of the cluster that reaches the Service's cluster IP.

use super::*;

/// BASE with Service `web`'s cluster IP set to `ip` (`None`: headless).
fn with_cluster_ip(ip: &str, policies: &[String]) -> String {
    let base = BASE.replace(
        "spec: {ports: [{name: http, port: 80}]}",
        &format!("spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}"),
    );
    assert_ne!(base, BASE);
    format!("{base}{}", policies.concat())
}

fn applied(t: &mut Translator, yaml: &str) {
    let (rs, _) = flotilla_model::parse_documents("x.yaml", yaml, "c1");
    for r in rs {
        t.apply(&crate::ResourceEvent {
            cluster: "c1".into(),
            source: "test".into(),
            body: crate::EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        })
        .unwrap();
    }
    t.recompute();
}

fn static_addresses(c: &Cluster) -> Vec<(String, u32)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        )),
        "{} is STATIC",
        c.name
    );
    let la = c.load_assignment.as_ref().expect("inline endpoints");
    la.endpoints
        .iter()
        .flat_map(|g| &g.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match ep.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(sa) => Some((
                    sa.address.clone(),
                    match sa.port_specifier {
                        Some(socket_address::PortSpecifier::PortValue(p)) => p,
                        _ => 0,
                    },
                )),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn routing_type_service_reaches_the_cluster_ip_through_a_variant() {
    let mut t = translate_yaml(&with_cluster_ip(
        "10.96.0.10",
        &[
            policy("svc", Some("a"), "  routingType: Service"),
            policy("ep", Some("b"), "  routingType: Endpoint"),
        ],
    ));
    assert_eq!(accepted(&t, "svc").0, "True");
    assert_eq!(accepted(&t, "ep").0, "True");
    // Rule a: a variant of its own, the cluster IP and the backendRef's (Service) port.
    let a = cluster_of(&route_named(&t, "/a"));
    assert!(a.starts_with("app/web/80/btp-"), "{a}");
    let c = cluster_named(&t, &a);
    assert_eq!(static_addresses(&c), vec![("10.96.0.10".to_string(), 80)]);
    // Rules b (Endpoint, the default, said) and c (no policy) share the EDS cluster.
    assert_eq!(cluster_of(&route_named(&t, "/b")), "app/web/80");
    assert_eq!(cluster_of(&route_named(&t, "/c")), "app/web/80");
    let eds = cluster_named(&t, "app/web/80");
    assert_eq!(
        eds.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    validate(&t);
    // The cluster IP changes (a Service recreated): the variant follows.
    applied(
        &mut t,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\nspec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}\n",
    );
    let a = cluster_of(&route_named(&t, "/a"));
    assert_eq!(
        static_addresses(&cluster_named(&t, &a)),
        vec![("10.96.0.11".to_string(), 80)]
    );
    validate(&t);
}

#[test]
fn routing_type_service_on_a_headless_service_keeps_the_endpoints() {
    // Envoy Gateway routes a headless Service (and one without a cluster IP) to its endpoints
    // even when the policy says Service; the policy is accepted.
    for ip in ["None", "''"] {
        let t = translate_yaml(&with_cluster_ip(
            ip,
            &[policy(
                "svc",
                Some("a"),
                "  routingType: Service\n  timeout: {tcp: {connectTimeout: 3s}}",
            )],
        ));
        assert_eq!(accepted(&t, "svc").0, "True", "{ip}");
        let a = cluster_of(&route_named(&t, "/a"));
        let c = cluster_named(&t, &a);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            )),
            "{ip}: {a} reads the endpoints"
        );
        assert_eq!(
            c.eds_cluster_config.as_ref().unwrap().service_name,
            "app/web/80"
        );
        validate(&t);
    }
}

#[test]
fn an_unknown_routing_type_is_refused_in_status() {
    let t = translate_yaml(&with_cluster_ip(
        "10.96.0.10",
        &[policy("svc", Some("a"), "  routingType: Pod")],
    ));
    let (status, _, msg) = accepted(&t, "svc");
    assert_eq!(status, "False");
    assert_eq!(msg, "RoutingType: unsupported routing type Pod.");
    // As any invalid policy: its rule answers 500.
    match route_named(&t, "/a").action {
        Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 500),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tcp_route_takes_routing_type_service_too() {
    // Envoy Gateway resolves the routing type for every route kind's Service backends.
    let text = with_cluster_ip("10.96.0.10", &[]).replace(
        "  - {name: http, port: 8080, protocol: HTTP}",
        "  - {name: http, port: 8080, protocol: HTTP}\n  - {name: tcp, port: 9000, protocol: TCP}",
    ) + "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: tcp-policy, namespace: app}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: t}]
  routingType: Service
";
    let t = translate_yaml(&text);
    let variant = clusters(&t)
        .into_iter()
        .find(|c| c.name.starts_with("app/web/80/btp-"))
        .expect("the TCP route's cluster variant");
    assert_eq!(
        static_addresses(&variant),
        vec![("10.96.0.10".to_string(), 80)]
    );
    // The HTTP routes, without a policy, keep the endpoints.
    assert_eq!(cluster_of(&route_named(&t, "/a")), "app/web/80");
    validate(&t);
}
