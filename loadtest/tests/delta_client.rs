//! The simulated proxies against a real edge (`flotilla standalone`): wildcard CDS/LDS, RDS
//! and EDS by name, ACKs, NACK mode, SotW, failover past a dead edge, and reconnection with
//! `initial_resource_versions` (nothing resent that the proxy already holds).

mod common;

use flotilla_loadtest::decode::{ResType, RDS};
use flotilla_loadtest::envoy;
use flotilla_loadtest::harness::{lock, Bins, Harness, ProxyPlan};
use flotilla_loadtest::proxy::{NackMode, Protocol};
use flotilla_loadtest::recorder::ChangeKind;
use flotilla_loadtest::ui::Ui;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

async fn until<F: FnMut() -> Option<String>>(what: &str, mut f: F) {
    let deadline = Instant::now() + T;
    let mut last = None;
    while Instant::now() < deadline {
        last = f();
        if last.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}: {last:?}");
}

/// Differences between what proxy `id` holds and what the store computes for its gateway.
async fn diff_of(h: &Harness, id: u32, gateway: &str) -> Vec<String> {
    let exp = h.expected().await.expect("expected state");
    let want = envoy::expected(exp.get(gateway).map(Vec::as_slice).unwrap_or(&[]));
    envoy::diff("proxy", &h.held_of(id).expect("held"), "store", &want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_proxies_speak_xds_like_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = Bins {
        flotilla: common::flotilla_bin(),
        nats_server: common::nats_bin(),
        envoy: None,
    };
    let mut h = Harness::new(bins, dir.path().join("work"), 1, Ui::new(false)).expect("harness");
    let ci = h.add_cluster("solo", 2, 2, 2).expect("cluster");
    lock(&h.world).write_all(ci).expect("files");
    h.start_solo(ci).expect("standalone");
    h.wait_ready(T).await.expect("ready");
    h.wait_gateways(T).await.expect("gateways");
    let xds = h.solo.as_ref().expect("solo").xds.clone();
    // A dead edge first: the proxy must move on to the next one.
    let dead = "127.0.0.1:1".to_string();
    h.start_proxy_plans(
        vec![
            ProxyPlan {
                gateway: 0,
                protocol: Protocol::Delta,
                nack: NackMode::Never,
                edges: Some(vec![dead.clone(), xds.clone()]),
            },
            ProxyPlan {
                gateway: 0,
                protocol: Protocol::Sotw,
                nack: NackMode::Never,
                edges: None,
            },
            ProxyPlan {
                gateway: 1,
                protocol: Protocol::Delta,
                nack: NackMode::Types(vec![ResType::Route]),
                edges: None,
            },
        ],
        8,
    );
    let rec = h.recorder().expect("recorder").clone();
    let (g0, g1) = {
        let w = lock(&h.world);
        (w.gateways[0].id.clone(), w.gateways[1].id.clone())
    };

    // Delta and SotW proxies hold exactly the gateway's resources, RDS and EDS included.
    for id in [0, 1] {
        let deadline = Instant::now() + T;
        loop {
            let d = diff_of(&h, id, &g0).await;
            if d.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "proxy {id}: {d:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let held = h.held_of(id).expect("held");
        for ty in ResType::ALL {
            assert!(!held[&ty].is_empty(), "proxy {id} holds no {}", ty.short());
        }
    }

    // The NACKing proxy keeps no route configuration, but everything else.
    until(
        "the NACK proxy to hold clusters and listeners and to have NACKed",
        || {
            let held = h.held_of(2).ok()?;
            let nacks = rec.proxy(2).nacks;
            (held[&ResType::Route].is_empty()
                && !held[&ResType::Listener].is_empty()
                && !held[&ResType::Cluster].is_empty()
                && nacks > 0)
                .then_some(())
                .map_or(Some(format!("nacks {nacks}, held {held:?}")), |()| None)
        },
    )
    .await;
    let d = diff_of(&h, 2, &g1).await;
    assert!(
        !d.is_empty() && d.iter().all(|x| x.starts_with("RDS")),
        "only RDS may differ for the NACK proxy: {d:?}"
    );

    // A route change reaches both proxies of gateway 0 and is recorded as converged.
    let route = {
        let mut w = lock(&h.world);
        let r = w
            .routes
            .iter()
            .position(|r| r.gateway == 0)
            .expect("a route") as u32;
        w.routes[r as usize].seq += 1;
        r
    };
    let marker = lock(&h.world).marker(route);
    let change = rec.expect_change(0, marker, ChangeKind::Churn);
    h.put_route(route).await.expect("write route");
    until("the change to converge on both proxies", || {
        rec.converged_at(change)
            .map_or(Some("pending".to_string()), |_| None)
    })
    .await;
    assert_eq!(rec.proxy_samples().len(), 2);
    assert!(rec.proxy(0).connects >= 1 && rec.proxy(0).acks > 0);

    // Stream loss: standalone restarts on its data dir; the delta proxy reconnects announcing
    // what it holds, so unchanged resources are not sent again.
    let cds_before = count_received(&h, 0, ResType::Cluster);
    let connects_before = rec.proxy(0).connects;
    {
        let i = h.solo.as_ref().expect("solo").proc;
        let mut procs = lock(&h.procs);
        procs[i].restart().expect("restart standalone");
    }
    until("the delta proxy to reconnect", || {
        (rec.proxy(0).connects > connects_before)
            .then_some(())
            .map_or(Some("not yet".to_string()), |()| None)
    })
    .await;
    let deadline = Instant::now() + T;
    loop {
        let d = diff_of(&h, 0, &g0).await;
        if d.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "after reconnect: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_received(&h, 0, ResType::Cluster),
        cds_before,
        "clusters the proxy held were sent again after reconnecting"
    );
    // The proxy really held RDS by name (it is no wildcard type).
    assert!(h.held_of(0).expect("held")[&ResType::Route]
        .keys()
        .all(|n| !n.is_empty()));
    assert_eq!(ResType::from_url(RDS), Some(ResType::Route));
    h.shutdown().await;
}

fn count_received(h: &Harness, id: u32, ty: ResType) -> usize {
    let rec = h.recorder().expect("recorder");
    let n = rec.proxy(id).history.iter().filter(|r| r.ty == ty).count();
    n
}
