//! Translation speed against ARCHITECTURE.md's targets: 10,000 HTTPRoutes translated in full
//! (<= 500 ms) and one route changed incrementally (<= 2 ms). Two shapes: all routes on one
//! Gateway, and 100 Gateways of 100 routes each (the incremental change then touches one).
//! Run: `cargo bench -p flotilla-translate --bench translate`.

use criterion::{criterion_group, criterion_main, Criterion};
use flotilla_model::{EventBody, ResourceEvent};
use flotilla_translate::Translator;
use std::time::Duration;

const ROUTES: usize = 10_000;

fn events(text: &str) -> Vec<ResourceEvent> {
    let (rs, errs) = flotilla_model::parse_documents("bench.yaml", text, "c1");
    assert!(errs.is_empty(), "{errs:?}");
    rs.into_iter()
        .map(|r| ResourceEvent {
            cluster: "c1".into(),
            source: "bench".into(),
            body: EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        })
        .collect()
}

fn gateway(i: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw{i}, namespace: infra}}
spec:
  gatewayClassName: eg
  listeners:
  - {{name: http, port: 8080, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
"
    )
}

/// Route `i` on gateway `gw`: its own host, two path rules, a header match, weighted backends.
fn route(i: usize, gw: usize, version: usize) -> String {
    let svc = i % 500;
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: app}}
spec:
  parentRefs: [{{name: gw{gw}, namespace: infra}}]
  hostnames: [h{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/v{version}}}, headers: [{{name: x-tenant, value: t{i}}}]}}]
    backendRefs: [{{name: s{svc}, port: 80, weight: 90}}, {{name: s{}, port: 80, weight: 10}}]
  - matches: [{{path: {{type: Exact, value: /health}}}}]
    backendRefs: [{{name: s{svc}, port: 80}}]
---
",
        (svc + 1) % 500
    )
}

fn world(gateways: usize) -> Vec<ResourceEvent> {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
",
    );
    for g in 0..gateways {
        text.push_str(&gateway(g));
    }
    for s in 0..500 {
        text.push_str(&format!(
            "apiVersion: v1
kind: Service
metadata: {{name: s{s}, namespace: app}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s{s}-1, namespace: app, labels: {{kubernetes.io/service-name: s{s}}}}}
addressType: IPv4
ports: [{{name: http, port: 9000}}]
endpoints: [{{addresses: [10.0.{}.{}]}}, {{addresses: [10.1.{}.{}]}}]
---
",
            s / 250,
            s % 250,
            s / 250,
            s % 250
        ));
    }
    for i in 0..ROUTES {
        text.push_str(&route(i, i % gateways, 1));
    }
    events(&text)
}

fn full(world: &[ResourceEvent]) -> Translator {
    let mut t = Translator::new();
    for e in world {
        t.apply(e).expect("apply");
    }
    let changes = t.recompute();
    assert!(!changes.updated.is_empty());
    t
}

fn bench(c: &mut Criterion) {
    for gateways in [1, 100] {
        let w = world(gateways);
        let mut g = c.benchmark_group(format!("{ROUTES} routes on {gateways} gateways"));
        g.sample_size(10).measurement_time(Duration::from_secs(20));
        g.bench_function("full translation", |b| b.iter(|| full(&w)));
        // Alternate between two versions of one route, so every iteration changes it.
        let mut t = full(&w);
        let edits: Vec<Vec<ResourceEvent>> =
            (2..4).map(|v| events(&route(7, 7 % gateways, v))).collect();
        let mut n = 0;
        g.bench_function("one route changed", |b| {
            b.iter(|| {
                n += 1;
                for e in &edits[n % edits.len()] {
                    t.apply(e).expect("apply");
                }
                let ch = t.recompute();
                assert_eq!(ch.updated.len(), 1);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
