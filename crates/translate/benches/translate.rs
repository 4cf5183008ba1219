//! Translation speed against ARCHITECTURE.md's targets: 10,000 HTTPRoutes over 1,000 hostnames,
//! a BackendTrafficPolicy on every tenth route, translated in full (<= 500 ms); one route
//! changed (<= 5 ms, aim 2 ms); one EndpointSlice changed (<= 1 ms, only
//! ClusterLoadAssignments change); one Gateway-level policy changed (reported). Two shapes: all
//! routes on one Gateway, and 100 Gateways of 100 routes each.
//! Run: `cargo bench -p flotilla-translate --bench translate`.

use criterion::{criterion_group, criterion_main, Criterion};
use flotilla_model::{EventBody, ResourceEvent};
use flotilla_translate::Translator;
use std::time::Duration;

/// The allocator the `flotilla` binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUTES: usize = 10_000;
const HOSTS: usize = 1_000;
const SERVICES: usize = 500;

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

/// Route `i` on gateway `gw`: one of 1,000 hosts, two path rules, a header match, weighted
/// backends; every tenth route has a BackendTrafficPolicy.
fn route(i: usize, gw: usize, version: usize) -> String {
    let svc = i % SERVICES;
    let host = i % HOSTS;
    let policy = if i.is_multiple_of(10) {
        format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: p{i}, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r{i}}}]
  retry: {{numRetries: 2, retryOn: {{triggers: [connect-failure, retriable-status-codes], httpStatusCodes: [503]}}}}
  timeout: {{http: {{requestTimeout: 5s}}}}
  circuitBreaker: {{maxPendingRequests: 100}}
---
"
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: app}}
spec:
  parentRefs: [{{name: gw{gw}, namespace: infra}}]
  hostnames: [h{host}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/v{version}}}, headers: [{{name: x-tenant, value: t{i}}}]}}]
    backendRefs: [{{name: s{svc}, port: 80, weight: 90}}, {{name: s{}, port: 80, weight: 10}}]
  - matches: [{{path: {{type: Exact, value: /health}}}}]
    backendRefs: [{{name: s{svc}, port: 80}}]
---
{policy}",
        (svc + 1) % SERVICES
    )
}

fn endpoint_slice(s: usize, last_octet: usize) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s{s}-1, namespace: app, labels: {{kubernetes.io/service-name: s{s}}}}}
addressType: IPv4
ports: [{{name: http, port: 9000}}]
endpoints: [{{addresses: [10.0.{}.{}]}}, {{addresses: [10.1.{}.{last_octet}]}}]
---
",
        s / 250,
        s % 250,
        s / 250,
    )
}

/// A Gateway-level BackendTrafficPolicy on gateway `gw`, in one of two versions.
fn gateway_policy(gw: usize, version: usize) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: gw{gw}-policy, namespace: infra}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw{gw}}}]
  timeout: {{http: {{requestTimeout: {}s}}}}
---
",
        10 + version
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
    for s in 0..SERVICES {
        text.push_str(&format!(
            "apiVersion: v1
kind: Service
metadata: {{name: s{s}, namespace: app}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
"
        ));
        text.push_str(&endpoint_slice(s, s % 250));
    }
    for i in 0..ROUTES {
        text.push_str(&route(i, i % gateways, 1));
    }
    events(&text)
}

fn full(world: Vec<ResourceEvent>) -> Translator {
    let mut t = fold(world);
    let changes = t.recompute();
    assert!(!changes.updated.is_empty());
    t
}

/// A translator holding `world`, not yet translated. The events are taken as a store restoring
/// a snapshot takes them: decoded, owned, all at once (parsed on every core).
fn fold(world: Vec<ResourceEvent>) -> Translator {
    let mut t = Translator::new();
    for r in t.apply_all(world) {
        r.expect("apply");
    }
    t
}

/// Applies `edit` and recomputes, returning what changed.
fn step(t: &mut Translator, edit: &[ResourceEvent]) -> flotilla_translate::Changes {
    for e in edit {
        t.apply(e).expect("apply");
    }
    t.recompute()
}

/// The process's resident memory (VmRSS), in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    for gateways in [1, 100] {
        let w = world(gateways);
        // What a translator holding this world (objects, memo, outputs) keeps resident, on
        // the first world only (later ones reuse memory the allocator kept).
        if gateways == 1 {
            let before = resident_kib();
            let held = full(w.clone());
            eprintln!(
                "a translator holding {} events keeps {} MiB resident",
                w.len(),
                resident_kib().saturating_sub(before) / 1024
            );
            drop(held);
        }
        let mut g = c.benchmark_group(format!(
            "{ROUTES} routes over {HOSTS} hosts on {gateways} gateways"
        ));
        g.sample_size(10).measurement_time(Duration::from_secs(20));
        // The events are copied and the translator dropped outside the timing (the store
        // decodes its events from its log; freeing 10,000 routes is not translating them).
        g.bench_function("full translation", |b| {
            b.iter_batched(|| w.clone(), full, criterion::BatchSize::PerIteration)
        });
        // Its two halves: folding the events into the index (parsing each object), and
        // translating the folded world.
        g.bench_function("full: fold events", |b| {
            b.iter_batched(|| w.clone(), fold, criterion::BatchSize::PerIteration)
        });
        g.bench_function("full: translate", |b| {
            b.iter_batched(
                || fold(w.clone()),
                |mut t| {
                    assert!(!t.recompute().updated.is_empty());
                    t
                },
                criterion::BatchSize::PerIteration,
            )
        });
        // Each case alternates between two versions of one object, so every iteration changes
        // it.
        let mut t = full(w.clone());
        let edits: Vec<Vec<ResourceEvent>> =
            (2..4).map(|v| events(&route(7, 7 % gateways, v))).collect();
        let mut n = 0;
        g.bench_function("one route changed", |b| {
            b.iter(|| {
                n += 1;
                let ch = step(&mut t, &edits[n % edits.len()]);
                assert_eq!(ch.updated.len(), 1);
            })
        });
        let edits: Vec<Vec<ResourceEvent>> = (0..2)
            .map(|v| events(&endpoint_slice(7, 251 + v)))
            .collect();
        // Checked once, outside the timing: an EndpointSlice changes ClusterLoadAssignments only.
        let before = t.gateways().clone();
        let ch = step(&mut t, &edits[0]);
        for gx in &ch.updated {
            let old: std::collections::BTreeMap<_, _> = before[&gx.gateway]
                .resources
                .iter()
                .map(|r| ((&r.type_url, &r.name), &r.version))
                .collect();
            for r in &gx.resources {
                if old.get(&(&r.type_url, &r.name)) != Some(&&r.version) {
                    assert_eq!(
                        r.type_url,
                        flotilla_translate::type_url::ENDPOINT,
                        "{} changed",
                        r.name
                    );
                }
            }
        }
        // The check left edits[0] applied: the first iteration applies edits[1].
        let mut v = 0;
        g.bench_function("one EndpointSlice changed", |b| {
            b.iter(|| {
                v ^= 1;
                let ch = step(&mut t, &edits[v]);
                assert!(!ch.updated.is_empty());
            })
        });
        // A gateway whose routes have no policy of their own (on 100 gateways, gw0's routes
        // are all tenth routes, whose own policies would take precedence).
        let gw = gateways.min(2) - 1;
        let edits: Vec<Vec<ResourceEvent>> =
            (0..2).map(|v| events(&gateway_policy(gw, v))).collect();
        g.bench_function("one Gateway policy changed", |b| {
            b.iter(|| {
                n += 1;
                let ch = step(&mut t, &edits[n % edits.len()]);
                assert!(!ch.updated.is_empty());
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
