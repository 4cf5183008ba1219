//! A load run: start everything, warm up every proxy, churn routes at a fixed rate (with the
//! scenario's scheduled faults), let it settle, measure and check.

use crate::faults::FaultRecord;
use crate::harness::{lock, Bins, Harness};
use crate::proxy::{NackMode, Protocol};
use crate::recorder::ChangeKind;
use crate::report::{
    Bytes, Check, Convergence, ProcNumbers, ProxyNumbers, RecorderNumbers, Report, StoreNumbers,
};
use crate::scenario::{ChurnVia, Scenario, Topology};
use crate::stats::cdf;
use crate::ui::Ui;
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Points per CDF in the report (enough for a smooth chart, small JSON).
const CDF_POINTS: usize = 200;

/// What every run needs besides its scenario.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub bins: Bins,
    pub work: PathBuf,
    pub seed: u64,
    pub progress: bool,
    /// Chaos: fault kinds not to inject.
    pub exclude_faults: Vec<crate::faults::FaultKind>,
}

/// Gateways that get a real Envoy: spread evenly over all gateways.
pub fn envoy_gateways(total: u32, n: u32) -> Vec<u32> {
    (0..n.min(total)).map(|i| i * total / n.max(1)).collect()
}

pub async fn load(s: &Scenario, opts: &RunOpts) -> Result<Report> {
    let ui = Ui::new(opts.progress);
    let mut h = Harness::new(opts.bins.clone(), opts.work.clone(), opts.seed, ui.clone())?;
    if s.tls {
        h.enable_tls()?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    h.start_sampler();
    let mut clusters = Vec::new();
    for c in &s.clusters {
        clusters.push(h.add_cluster(
            c,
            s.gateways_per_cluster,
            s.services_per_cluster,
            s.routes_per_gateway,
        )?);
    }
    if !s.faults.is_empty() {
        // Scheduled faults measure their recovery with a probe route per cluster.
        let mut w = lock(&h.world);
        for &ci in &clusters {
            let g0 = w.clusters[ci].gateways[0];
            w.add_route(ci, g0, crate::inject::PROBE_ROUTE.to_string(), 0);
        }
    }
    ui.phase(s.warmup_timeout.as_secs(), "starting processes");
    match s.topology {
        Topology::Stores => {
            let via_nats = s.churn.via == ChurnVia::Nats;
            if !via_nats {
                for &ci in &clusters {
                    lock(&h.world).write_all(ci)?;
                }
            }
            h.start_multi(&clusters, s.edges, via_nats).await?;
            if via_nats {
                for &ci in &clusters {
                    h.publish_world(ci).await?;
                }
            }
        }
        Topology::Standalone => {
            lock(&h.world).write_all(clusters[0])?;
            h.start_solo(clusters[0])?;
        }
    }
    h.wait_ready(s.warmup_timeout).await?;
    h.wait_gateways(s.warmup_timeout).await?;
    let proto = |i| s.protocol_of(i);
    h.start_proxies(
        s.proxies_per_gateway,
        &proto,
        NackMode::Never,
        s.max_concurrent_connects,
    );
    h.start_envoys(&envoy_gateways(s.gateway_count(), s.real_envoys))?;
    ui.phase(s.warmup_timeout.as_secs(), "warm-up");
    let (bad, ex) = h.wait_proxies_match(s.warmup_timeout, "warm-up").await?;
    if bad != 0 {
        bail!(
            "warm-up: {bad} proxies did not get their gateway's config within {:?}: {ex:?}",
            s.warmup_timeout
        );
    }
    let warm_ms = h.now_ms();
    ui.line(format!(
        "warm: {} proxies hold their gateways' config after {:.1}s",
        s.proxy_count(),
        warm_ms / 1000.0
    ));

    // Churn.
    let rec = h.recorder()?.clone();
    let bytes_before = rec.bytes_by_proxy();
    let applied_before = h.events_applied().await;
    let t_churn = Instant::now();
    let records: Arc<Mutex<Vec<FaultRecord>>> = Arc::default();
    let mut changes_per_gateway = vec![0u64; rec.gateways().len()];
    let mut faults = s.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut next_fault = 0;
    ui.phase(s.churn.duration.as_secs(), "churn");
    let period = if s.churn.per_second > 0.0 {
        Duration::from_secs_f64(1.0 / s.churn.per_second)
    } else {
        s.churn.duration + Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut n_faults = 0;
    while t_churn.elapsed() < s.churn.duration {
        tick.tick().await;
        while next_fault < faults.len() && t_churn.elapsed() >= faults[next_fault].at {
            let kind = faults[next_fault].kind;
            next_fault += 1;
            n_faults += 1;
            match h.fault_and_probe(kind, &mut rng, n_faults, &records).await {
                Ok(t) => ui.line(format!("fault {kind}: {t}")),
                Err(e) => ui.line(format!("fault {kind} not injected: {e:#}")),
            }
        }
        if s.churn.per_second > 0.0 {
            let route = {
                let mut w = lock(&h.world);
                let alive: Vec<u32> = w
                    .routes
                    .iter()
                    .filter(|r| r.alive && r.name != crate::inject::PROBE_ROUTE)
                    .map(|r| r.id)
                    .collect();
                let r = alive[rng.random_range(0..alive.len())];
                w.routes[r as usize].seq += 1;
                r
            };
            let (g, marker) = {
                let w = lock(&h.world);
                (w.routes[route as usize].gateway, w.marker(route))
            };
            changes_per_gateway[g as usize] += 1;
            rec.expect_change(g, marker, ChangeKind::Churn);
            h.put_route(route).await?;
        }
        ui.progress(
            t_churn.elapsed().as_secs(),
            format!(
                "churn: {} streams, {} changes pending",
                rec.connected.load(Ordering::Relaxed),
                rec.pending_changes()
            ),
        );
    }

    // Settle.
    ui.phase(s.settle_timeout.as_secs(), "settle");
    h.bring_everything_up().await;
    let deadline = Instant::now() + s.settle_timeout;
    while rec.pending_changes() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let churn_secs = t_churn.elapsed().as_secs_f64();
    let applied_after = h.events_applied().await;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (mismatched, examples) = h
        .wait_proxies_match(remaining.max(Duration::from_secs(5)), "settle")
        .await?;
    let envoys = h.wait_envoys_match(Duration::from_secs(10)).await;
    wait_trackers(&h, Duration::from_secs(5)).await;
    rec.close_pending();

    let mut report = Report {
        name: s.name.clone(),
        mode: "load".into(),
        seed: opts.seed,
        scenario: Some(s.clone()),
        ..Report::default()
    };
    fill_common(&mut report, &h).await;
    let bytes_after = rec.bytes_by_proxy();
    report.bytes = bytes_numbers(&h, &bytes_before, &bytes_after, &changes_per_gateway);
    report.store = StoreNumbers {
        events_applied_during_churn: applied_after
            .zip(applied_before)
            .map(|(a, b)| a.saturating_sub(b)),
        events_per_second: applied_after
            .zip(applied_before)
            .map(|(a, b)| a.saturating_sub(b) as f64 / churn_secs.max(1e-9)),
    };
    report.duration_s = h.now_ms() / 1000.0;
    let c = &report.convergence;
    report.checks.push(Check::new(
        "every change converged on every affected proxy",
        c.unconverged == 0,
        format!("{} of {} changes did not", c.unconverged, c.changes),
    ));
    common_checks(&mut report, &h, mismatched, &examples, &envoys);
    let faults = lock(&records).clone();
    if !faults.is_empty() {
        report.chaos = Some(crate::report::ChaosSection {
            faults_by_kind: crate::faults::by_kind(&faults),
            faults,
            ..Default::default()
        });
    }
    h.shutdown().await;
    ui.finish();
    Ok(report)
}

/// Waits (bounded) for recovery trackers, then stops them.
pub async fn wait_trackers(h: &Harness, timeout: Duration) {
    let pending: Vec<_> = std::mem::take(&mut *lock(&h.trackers));
    let deadline = tokio::time::Instant::now() + timeout;
    for t in pending {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            abort.abort();
        }
    }
}

/// Numbers every run reports: proxies, convergence, processes, recorder, revisions.
pub async fn fill_common(r: &mut Report, h: &Harness) {
    let Ok(rec) = h.recorder() else { return };
    let mut p = ProxyNumbers {
        total: rec.proxy_count(),
        delta: h
            .proxy_protocols
            .iter()
            .filter(|&&x| x == Protocol::Delta)
            .count(),
        sotw: h
            .proxy_protocols
            .iter()
            .filter(|&&x| x == Protocol::Sotw)
            .count(),
        connected: rec.connected.load(Ordering::Relaxed),
        edge_streams: h.edge_streams().await,
        ..ProxyNumbers::default()
    };
    for id in 0..rec.proxy_count() as u32 {
        let pr = rec.proxy(id);
        p.reconnects += u64::from(pr.connects.saturating_sub(1));
        p.responses += pr.responses;
        p.nacks += pr.nacks;
    }
    r.proxies = p;
    let (all, per_proxy, unconverged) = rec.convergence();
    let outcomes = rec.outcomes();
    let full: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.kind == ChangeKind::Churn)
        .filter_map(|o| o.converged_ms)
        .collect();
    r.convergence = Convergence {
        changes: outcomes
            .iter()
            .filter(|o| o.kind == ChangeKind::Churn)
            .count(),
        unconverged,
        all_proxies: all,
        per_proxy,
        cdf_all_proxies: cdf(&full, CDF_POINTS),
        cdf_per_proxy: cdf(&rec.proxy_samples(), CDF_POINTS),
    };
    r.processes = h
        .usage()
        .into_iter()
        .map(|(name, role, u)| ProcNumbers {
            name,
            role: role.to_string(),
            cpu_seconds: u.cpu_seconds,
            peak_rss_mib: u.peak_rss_mib,
            starts: u.starts,
        })
        .collect();
    r.harness = crate::procs::own_usage();
    r.recorder = RecorderNumbers {
        history_entries: rec.history_entries(),
        interned_strings: h.cache.interner().len(),
        decoded_versions: h.cache.len(),
    };
    let (n, ex) = rec.violations();
    r.revision_violations = n;
    r.violation_examples = ex;
}

/// Checks every run makes at its end.
pub fn common_checks(
    r: &mut Report,
    h: &Harness,
    mismatched: usize,
    examples: &[String],
    envoys: &[(String, Vec<String>)],
) {
    r.checks.push(Check::new(
        "every simulated proxy holds what the store computes",
        mismatched == 0,
        if mismatched == 0 {
            format!("{} proxies match /api/v1/gateways", r.proxies.total)
        } else {
            format!(
                "{mismatched} of {} differ: {}",
                r.proxies.total,
                examples.join("; ")
            )
        },
    ));
    let bad: Vec<String> = envoys
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(g, d)| {
            format!(
                "{g}: {} ({} differences)",
                d.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
                d.len()
            )
        })
        .collect();
    r.checks.push(Check::new(
        "real Envoys agree with the simulated proxies of their gateway",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} Envoys: same listeners, clusters, routes, endpoints and versions",
                envoys.len()
            )
        } else {
            bad.join("; ")
        },
    ));
    let v = &r.violation_examples;
    r.checks.push(Check::new(
        "no proxy was sent a revision lower than one it had ACKed",
        r.revision_violations == 0,
        if r.revision_violations == 0 {
            "0 violations".to_string()
        } else {
            format!(
                "{} violations, e.g. {}",
                r.revision_violations,
                v.iter()
                    .take(3)
                    .map(|x| format!(
                        "proxy {} ({}) sent {} after ACKing {} at {:.1}s",
                        x.proxy,
                        x.gateway,
                        x.sent,
                        x.acked_before,
                        f64::from(x.at_ms) / 1000.0
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    ));
    r.checks.push(Check::new(
        "every response decoded (no NACK from a simulated proxy)",
        r.proxies.nacks == 0,
        format!("{} NACKs", r.proxies.nacks),
    ));
    let crashes = h.crashes();
    r.checks.push(Check::new(
        "no process exited on its own",
        crashes.is_empty(),
        if crashes.is_empty() {
            "none".to_string()
        } else {
            crashes.join("; ")
        },
    ));
}

fn bytes_numbers(h: &Harness, before: &[u64], after: &[u64], changes: &[u64]) -> Bytes {
    let Ok(rec) = h.recorder() else {
        return Bytes::default();
    };
    let mut affected_bytes = 0u64;
    let mut unaffected = 0u64;
    let mut total = 0u64;
    for (id, (&a, &b)) in after.iter().zip(before).enumerate() {
        let d = a.saturating_sub(b);
        total += d;
        let g = rec.gateway_of(id as u32) as usize;
        if changes.get(g).copied().unwrap_or(0) > 0 {
            affected_bytes += d;
        } else {
            unaffected += d;
        }
    }
    let pairs: u64 = changes
        .iter()
        .enumerate()
        .map(|(g, &c)| c * rec.proxies_of(g as u32) as u64)
        .sum();
    Bytes {
        per_change_per_affected_proxy: (pairs > 0).then(|| affected_bytes as f64 / pairs as f64),
        to_unaffected_proxies: unaffected,
        total_during_churn: total,
    }
}
