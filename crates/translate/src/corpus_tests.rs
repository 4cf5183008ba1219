//! The tests that read Envoy Gateway's translator corpus, which lives outside this repository
//! (`shared/conformance/eg-translate` beside it, or `$FLOTILLA_SHARED/conformance/eg-translate`).
//! Every such test lives here, behind the `corpus` feature, so that `cargo test --workspace`
//! needs nothing but the repository; `scripts/conformance.sh` runs them
//! (`cargo test -p flotilla-translate --features corpus --lib corpus_tests::`).
//! Without the corpus they fail, saying where they looked: a check that cannot run is not
//! a check that passed.

use crate::Translator;
use flotilla_model::{EventBody, ResourceEvent};

/// `$FLOTILLA_SHARED/conformance/eg-translate`, else `../shared/conformance/eg-translate`
/// beside the repository.
fn corpus_dir() -> String {
    let shared = std::env::var("FLOTILLA_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared").to_string());
    let dir = format!("{shared}/conformance/eg-translate");
    assert!(
        std::path::Path::new(&dir).is_dir(),
        "Envoy Gateway's translator corpus is not at {dir}: put the shared/conformance directory \
         beside the repository, or set FLOTILLA_SHARED to the directory that holds conformance/"
    );
    dir
}

/// Envoy accepts what every HTTPRoute/GRPCRoute/BackendTrafficPolicy/ClientTrafficPolicy case of
/// Envoy Gateway's
/// corpus translates to.
#[test]
fn envoy_accepts_the_route_corpus() {
    let corpus = corpus_dir();
    let mut failures = Vec::new();
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("httproute-")
                || n.starts_with("grpcroute-")
                || n.starts_with("backendtrafficpolicy-")
                || n.starts_with("clienttrafficpolicy-")
        })
        .collect();
    cases.sort();
    for case in cases {
        let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let (rs, _) = flotilla_model::parse_documents("input.yaml", &text, "c1");
        let mut t = Translator::new();
        for r in rs {
            let _ = t.apply(&ResourceEvent {
                cluster: "c1".into(),
                source: "test".into(),
                body: EventBody::Upsert {
                    key: r.key,
                    object: r.raw,
                    origin: None,
                },
            });
        }
        t.recompute();
        for (id, g) in t.gateways() {
            if let Err(e) = crate::tests::envoy_validate(&crate::route_tests::bootstrap_of(g), id) {
                failures.push(format!("{} {id}: {e}", case.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Envoy accepts what every rate limit case of the corpus translates to, with a rate limit
/// service configured (so that global limits reach Envoy too).
#[test]
fn envoy_accepts_the_rate_limit_corpus() {
    let corpus = corpus_dir();
    let mut failures = Vec::new();
    let mut limited = 0;
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("ratelimit")
        })
        .collect();
    cases.sort();
    for case in cases {
        let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let (rs, _) = flotilla_model::parse_documents("input.yaml", &text, "c1");
        let mut t = Translator::with_options(crate::TranslateOptions {
            rate_limit_service: vec!["127.0.0.1:18090".into()],
            ..Default::default()
        });
        for r in rs {
            let _ = t.apply(&ResourceEvent {
                cluster: "c1".into(),
                source: "test".into(),
                body: EventBody::Upsert {
                    key: r.key,
                    object: r.raw,
                    origin: None,
                },
            });
        }
        t.recompute();
        for (id, g) in t.gateways() {
            limited += usize::from(g.rate_limits.is_some());
            if let Err(e) = crate::tests::envoy_validate(&crate::route_tests::bootstrap_of(g), id) {
                failures.push(format!("{} {id}: {e}", case.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(limited > 0, "no case had a global rate limit");
}
