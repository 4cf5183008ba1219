//! The chaos mode: two agents for two clusters behind NATS, three stores and two edges, plus a
//! standalone instance with its own data dir and cluster; real Envoys and simulated proxies on
//! all of them; a steady random stream of creates/updates/deletes of routes and services while
//! faults are injected at random; then, once churn stops and the system settles, the checks.

use crate::faults::{by_kind, FaultKind, FaultRecord};
use crate::fold::{digest, fold_dir};
use crate::harness::{lock, Harness};
use crate::inject::PROBE_ROUTE;
use crate::proxy::NackMode;
use crate::recorder::ChangeKind;
use crate::report::{ChaosSection, Check, Replica, Report};
use crate::run::{common_checks, envoy_gateways, fill_common, wait_trackers, RunOpts};
use crate::scenario::Scenario;
use crate::ui::Ui;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cluster names of the chaos topology.
pub const AGENT_CLUSTERS: [&str; 2] = ["east", "west"];
pub const SOLO_CLUSTER: &str = "solo";
/// Bounds on the time between two faults (the interval is chosen so that every kind is
/// injected at least once in the run).
const FAULT_GAP_MIN: Duration = Duration::from_secs(3);
const FAULT_GAP_MAX: Duration = Duration::from_secs(15);
/// Extra services churn may create (and delete) per cluster.
const EXTRA_SERVICES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    UpdateRoute,
    CreateRoute,
    DeleteRoute,
    UpdateEndpoints,
    CreateService,
    DeleteService,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::UpdateRoute => "route updates",
            Op::CreateRoute => "route creates",
            Op::DeleteRoute => "route deletes",
            Op::UpdateEndpoints => "endpoint updates",
            Op::CreateService => "service creates",
            Op::DeleteService => "service deletes",
        }
    }

    fn pick(rng: &mut impl Rng) -> Op {
        match rng.random_range(0..100) {
            0..45 => Op::UpdateRoute,
            45..57 => Op::CreateRoute,
            57..67 => Op::DeleteRoute,
            67..87 => Op::UpdateEndpoints,
            87..94 => Op::CreateService,
            _ => Op::DeleteService,
        }
    }
}

pub async fn chaos(s: &Scenario, duration: Duration, opts: &RunOpts) -> Result<Report> {
    let ui = Ui::new(opts.progress);
    ui.line(format!(
        "chaos: seed {} (repeat with --seed {})",
        opts.seed, opts.seed
    ));
    let mut h = Harness::new(opts.bins.clone(), opts.work.clone(), opts.seed, ui.clone())?;
    if s.tls {
        h.enable_tls()?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    h.start_sampler();
    let mut agent_clusters = Vec::new();
    for c in AGENT_CLUSTERS {
        agent_clusters.push(h.add_cluster(
            c,
            s.gateways_per_cluster,
            s.services_per_cluster,
            s.routes_per_gateway,
        )?);
    }
    let solo = h.add_cluster(
        SOLO_CLUSTER,
        s.gateways_per_cluster,
        s.services_per_cluster,
        s.routes_per_gateway,
    )?;
    {
        let mut w = lock(&h.world);
        for ci in agent_clusters.iter().copied().chain([solo]) {
            let g0 = w.clusters[ci].gateways[0];
            w.add_route(ci, g0, PROBE_ROUTE.to_string(), 0);
            w.write_all(ci)?;
        }
    }
    ui.phase(s.warmup_timeout.as_secs(), "starting processes");
    h.start_multi(&agent_clusters, s.edges.max(2), false)
        .await?;
    h.start_solo(solo)?;
    h.wait_ready(s.warmup_timeout).await?;
    h.wait_gateways(s.warmup_timeout).await?;
    let proto = |i| s.protocol_of(i);
    h.start_proxies(
        s.proxies_per_gateway,
        &proto,
        NackMode::Never,
        s.max_concurrent_connects,
    );
    // One real Envoy per cluster (its first gateway), more if the scenario asks.
    let mut envoy_gws: Vec<u32> = {
        let w = lock(&h.world);
        w.clusters.iter().map(|c| c.gateways[0]).collect()
    };
    let total = lock(&h.world).gateways.len() as u32;
    for g in envoy_gateways(total, s.real_envoys) {
        if !envoy_gws.contains(&g) {
            envoy_gws.push(g);
        }
    }
    h.start_envoys(&envoy_gws)?;
    ui.phase(s.warmup_timeout.as_secs(), "warm-up");
    let (bad, ex) = h.wait_proxies_match(s.warmup_timeout, "warm-up").await?;
    if bad != 0 {
        bail!("warm-up: {bad} proxies did not get their gateway's config: {ex:?}");
    }
    ui.line(format!(
        "warm after {:.1}s; chaos for {:?}",
        h.now_ms() / 1000.0,
        duration
    ));

    // Faults: every kind, in a random order, round after round.
    let mut kinds: Vec<FaultKind> = FaultKind::all()
        .filter(|k| !opts.exclude_faults.contains(k))
        .collect();
    if kinds.is_empty() {
        bail!("every fault kind is excluded");
    }
    // A fault that found nothing to hit (no leader during an election) is tried once more at
    // the next slot, so every kind gets its chance.
    let mut retry: Option<FaultKind> = None;
    let gap = (duration / (kinds.len() as u32 + 1)).clamp(FAULT_GAP_MIN, FAULT_GAP_MAX);
    kinds.shuffle(&mut rng);
    let records: Arc<Mutex<Vec<FaultRecord>>> = Arc::default();
    let rec = h.recorder()?.clone();
    let period = if s.churn.per_second > 0.0 {
        Duration::from_secs_f64(1.0 / s.churn.per_second)
    } else {
        duration + Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let applied_before = h.events_applied().await;
    let start = Instant::now();
    let mut next_fault = start + gap / 2;
    let mut fault_i = 0usize;
    let mut n = 0u32;
    let mut garbage = 0u64;
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    ui.phase(duration.as_secs(), "chaos");
    while start.elapsed() < duration {
        tick.tick().await;
        if Instant::now() >= next_fault {
            let was_retry = retry.is_some();
            let kind = match retry.take() {
                Some(k) => k,
                None => {
                    if fault_i == kinds.len() {
                        kinds.shuffle(&mut rng);
                        fault_i = 0;
                    }
                    fault_i += 1;
                    kinds[fault_i - 1]
                }
            };
            n += 1;
            next_fault += gap;
            match h.fault_and_probe(kind, &mut rng, n, &records).await {
                Ok(target) => {
                    if kind == FaultKind::PoisonGarbage {
                        garbage += 1;
                    }
                    ui.line(format!(
                        "{:>6.1}s fault {kind}: {target}",
                        start.elapsed().as_secs_f64()
                    ));
                }
                Err(e) => {
                    if !was_retry {
                        retry = Some(kind);
                    }
                    ui.line(format!(
                        "{:>6.1}s fault {kind} not injected: {e:#}",
                        start.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        let op = Op::pick(&mut rng);
        if let Err(e) = churn_op(&h, op, &mut rng).await {
            ui.line(format!("churn {}: {e:#}", op.name()));
        } else {
            *ops.entry(op.name().to_string()).or_default() += 1;
        }
        ui.progress(
            start.elapsed().as_secs(),
            format!(
                "chaos: {} faults, {} streams, {} changes pending",
                n,
                rec.connected.load(Ordering::Relaxed),
                rec.pending_changes()
            ),
        );
    }

    // Settle: everything back up, then the checks until they pass or time runs out.
    ui.phase(s.settle_timeout.as_secs(), "settle");
    h.bring_everything_up().await;
    let deadline = Instant::now() + s.settle_timeout;
    let settle_start = Instant::now();
    let mut section;
    let mut checks;
    loop {
        (section, checks) = evaluate(&h, &agent_clusters, solo, garbage).await;
        let ok = checks.iter().all(|c| c.ok) && rec.pending_changes() == 0;
        ui.progress(
            settle_start.elapsed().as_secs(),
            format!(
                "settle: {} checks failing",
                checks.iter().filter(|c| !c.ok).count()
            ),
        );
        if ok || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let applied_after = h.events_applied().await;
    let chaos_secs = start.elapsed().as_secs_f64();
    let (mismatched, examples) = match h.expected().await {
        Ok(e) => h.proxy_mismatches(&e)?,
        Err(e) => (usize::MAX, vec![e.to_string()]),
    };
    // The real Envoys reconnect on their own backoff (a restart just before the end can cost
    // them seconds): they get the rest of the settle time, and at least as long as a load run
    // gives them.
    let rest = deadline.saturating_duration_since(Instant::now());
    let envoys = h.wait_envoys_match(rest.max(Duration::from_secs(10))).await;
    wait_trackers(&h, rest.max(Duration::from_secs(5))).await;
    rec.close_pending();

    let mut report = Report {
        name: format!("chaos-{}", s.name),
        mode: "chaos".into(),
        seed: opts.seed,
        scenario: Some(s.clone()),
        ..Report::default()
    };
    fill_common(&mut report, &h).await;
    let applied = applied_after
        .zip(applied_before)
        .map(|(a, b)| a.saturating_sub(b));
    report.store = crate::report::StoreNumbers {
        events_applied_during_churn: applied,
        events_per_second: applied.map(|a| a as f64 / chaos_secs.max(1e-9)),
    };
    section.faults = lock(&records).clone();
    section.faults_by_kind = by_kind(&section.faults);
    section.garbage_published = garbage;
    section.churn_ops = ops;
    report.checks = checks;
    common_checks(&mut report, &h, mismatched, &examples, &envoys);
    // The proxy check of `evaluate` and of `common_checks` are the same question; keep one.
    dedup_checks(&mut report.checks);
    report.chaos = Some(section);
    report.duration_s = h.now_ms() / 1000.0;
    h.shutdown().await;
    ui.finish();
    Ok(report)
}

fn dedup_checks(checks: &mut Vec<Check>) {
    let mut seen = std::collections::BTreeSet::new();
    // Keep the last of each name: the final evaluation.
    let mut out: Vec<Check> = checks
        .iter()
        .rev()
        .filter(|c| seen.insert(c.name.clone()))
        .cloned()
        .collect();
    out.reverse();
    *checks = out;
}

/// One chaos churn operation.
async fn churn_op(h: &Harness, op: Op, rng: &mut impl Rng) -> Result<()> {
    let rec = h.recorder()?.clone();
    let n_clusters = lock(&h.world).clusters.len();
    let ci = rng.random_range(0..n_clusters);
    match op {
        Op::UpdateRoute | Op::DeleteRoute => {
            let route = {
                let w = lock(&h.world);
                let cands: Vec<u32> = w
                    .routes
                    .iter()
                    .filter(|r| r.cluster == ci && r.alive && r.name != PROBE_ROUTE)
                    .map(|r| r.id)
                    .collect();
                if cands.is_empty() {
                    return Ok(());
                }
                cands[rng.random_range(0..cands.len())]
            };
            if op == Op::DeleteRoute {
                let g = lock(&h.world).routes[route as usize].gateway;
                rec.forget_route(g, route);
                h.delete_route(route).await
            } else {
                let (g, marker) = {
                    let mut w = lock(&h.world);
                    w.routes[route as usize].seq += 1;
                    (w.routes[route as usize].gateway, w.marker(route))
                };
                rec.expect_change(g, marker, ChangeKind::Churn);
                h.put_route(route).await
            }
        }
        Op::CreateRoute => {
            let (route, g, marker) = {
                let mut w = lock(&h.world);
                let gws = w.clusters[ci].gateways.clone();
                let g = gws[rng.random_range(0..gws.len())];
                let name = format!("new{}", w.routes.len());
                let svc = rng.random_range(0..w.clusters[ci].services.len());
                let r = w.add_route(ci, g, name, svc);
                (r, g, w.marker(r))
            };
            rec.expect_change(g, marker, ChangeKind::Churn);
            h.put_route(route).await
        }
        Op::UpdateEndpoints => {
            let s = {
                let mut w = lock(&h.world);
                let c = &mut w.clusters[ci];
                let s = rng.random_range(0..c.services.len());
                c.service_gen[s] += 1;
                s
            };
            h.put_service(ci, s).await
        }
        Op::CreateService | Op::DeleteService => {
            // Extra services, referenced by no route: created and deleted freely.
            let k = rng.random_range(0..EXTRA_SERVICES);
            let (dir, name) = {
                let w = lock(&h.world);
                (w.clusters[ci].dir.clone(), format!("extra{k}"))
            };
            let path = dir.join("services").join(format!("{name}.yaml"));
            if op == Op::CreateService {
                let text = format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n",
                    ns = crate::fixtures::NS,
                    port = 40_000 + rng.random_range(0..1000),
                );
                h.put(ci, &path, &text).await
            } else {
                Ok(crate::fixtures::remove_file(&path)?)
            }
        }
    }
}

/// The chaos checks, as of now.
async fn evaluate(
    h: &Harness,
    agent_clusters: &[usize],
    solo: usize,
    garbage: u64,
) -> (ChaosSection, Vec<Check>) {
    let mut sec = ChaosSection::default();
    let mut checks = Vec::new();
    let (dirs, solo_dir) = {
        let w = lock(&h.world);
        (
            agent_clusters
                .iter()
                .map(|&c| (w.clusters[c].dir.clone(), w.clusters[c].name.clone()))
                .collect::<Vec<_>>(),
            (w.clusters[solo].dir.clone(), w.clusters[solo].name.clone()),
        )
    };
    let intruders = lock(&h.intruders).clone();
    let served: Vec<&str> = intruders
        .iter()
        .filter(|i| i.outcome == crate::faults::Outcome::Served)
        .map(|i| i.what.as_str())
        .collect();
    let refused = intruders
        .iter()
        .filter(|i| i.outcome == crate::faults::Outcome::Refused)
        .count();
    checks.push(Check::new(
        "no intruder proxy was served another gateway",
        served.is_empty(),
        if served.is_empty() {
            format!(
                "{refused} of {} intruders refused (the rest found their edge down)",
                intruders.len()
            )
        } else {
            served.join("; ")
        },
    ));
    let mut fold = BTreeMap::new();
    for (d, c) in &dirs {
        fold.extend(fold_dir(d, c));
    }
    let (expected_digest, expected_n) = digest(&fold);
    sec.expected_digest = expected_digest.clone();
    sec.expected_resources = expected_n;

    if let Some(m) = &h.multi {
        match h
            .http
            .stream_state(m.nats_monitor, crate::harness::STREAM)
            .await
        {
            Ok((msgs, last)) => {
                sec.stream_messages = Some(msgs);
                sec.stream_last_seq = Some(last);
            }
            Err(e) => checks.push(Check::new("nats-server reports the event stream", false, e)),
        }
        for (i, api) in m.store_api.iter().enumerate() {
            let mut rp = Replica {
                name: format!("store{}", i + 1),
                ..Replica::default()
            };
            match h.http.revision(api).await {
                Ok(r) => {
                    rp.reachable = true;
                    rp.events_applied = r.events_applied;
                    rp.last_seq = r.last_seq;
                    if let (Some(a), Some(msgs)) = (r.events_applied, sec.stream_messages) {
                        rp.lost = Some((msgs as i64 - a as i64).max(0));
                        rp.applied_twice = Some((a as i64 - msgs as i64).max(0));
                    }
                }
                Err(e) => rp.error = Some(e),
            }
            match h.http.digest(api).await {
                Ok(d) => {
                    rp.digest = Some(d.digest);
                    rp.digest_source = Some(d.source.to_string());
                    rp.resources = Some(d.resources);
                }
                Err(e) => rp.error = Some(rp.error.map_or(e.clone(), |x| format!("{x}; {e}"))),
            }
            sec.replicas.push(rp);
        }
        let lost: Vec<String> = sec
            .replicas
            .iter()
            .filter(|r| r.lost != Some(0) || r.last_seq != sec.stream_last_seq)
            .map(|r| {
                format!(
                    "{}: applied {} of {} messages (lost {}), lastSeq {} vs stream {}",
                    r.name,
                    r.events_applied.map_or("?".into(), |x| x.to_string()),
                    sec.stream_messages.map_or("?".into(), |x| x.to_string()),
                    r.lost.map_or("?".into(), |x| x.to_string()),
                    r.last_seq.map_or("?".into(), |x| x.to_string()),
                    sec.stream_last_seq.map_or("?".into(), |x| x.to_string())
                )
            })
            .collect();
        checks.push(Check::new(
            "no event lost (every replica applied the stream's message count, lastSeq = last sequence)",
            lost.is_empty(),
            if lost.is_empty() {
                format!("3 replicas applied all {} messages", sec.stream_messages.unwrap_or(0))
            } else {
                format!(
                    "{} (the stream holds {} garbage message(s) the harness published)",
                    lost.join("; "),
                    garbage
                )
            },
        ));
        let twice: Vec<String> = sec
            .replicas
            .iter()
            .filter(|r| r.applied_twice.is_some_and(|x| x > 0))
            .map(|r| {
                format!(
                    "{}: {} applied beyond the stream's count",
                    r.name,
                    r.applied_twice.unwrap_or(0)
                )
            })
            .collect();
        checks.push(Check::new(
            "no event applied twice",
            twice.is_empty(),
            if twice.is_empty() {
                "0".to_string()
            } else {
                twice.join("; ")
            },
        ));
        let mut bad: Vec<String> = Vec::new();
        for (i, r) in sec.replicas.iter().enumerate() {
            if r.digest.as_deref() == Some(expected_digest.as_str()) {
                continue;
            }
            let keys = match h.http.resources(&m.store_api[i]).await {
                Ok(held) => {
                    let (n, d) = crate::fold::key_diff(&held, &fold, 4);
                    format!("; {n} keys differ: {}", d.join(", "))
                }
                Err(_) => String::new(),
            };
            bad.push(format!(
                "{}: {} ({} resources) vs expected {} ({} resources){keys}",
                r.name,
                r.digest
                    .as_deref()
                    .map_or("unreachable".to_string(), |d| d.chars().take(12).collect()),
                r.resources.map_or("?".into(), |x| x.to_string()),
                expected_digest.chars().take(12).collect::<String>(),
                expected_n
            ));
        }
        checks.push(Check::new(
            "every replica's state digest equals the fold of the agents' files",
            bad.is_empty(),
            if bad.is_empty() {
                format!(
                    "3 replicas at {} ({expected_n} resources)",
                    expected_digest.chars().take(12).collect::<String>()
                )
            } else {
                bad.join("; ")
            },
        ));
    }
    if let Some(s) = &h.solo {
        let fold = fold_dir(&solo_dir.0, &solo_dir.1);
        let (want, want_n) = digest(&fold);
        sec.standalone_expected_digest = Some(want.clone());
        let mut rp = Replica {
            name: "standalone".into(),
            ..Replica::default()
        };
        match h.http.digest(&s.api).await {
            Ok(d) => {
                rp.reachable = true;
                rp.digest = Some(d.digest);
                rp.digest_source = Some(d.source.to_string());
                rp.resources = Some(d.resources);
            }
            Err(e) => rp.error = Some(e),
        }
        if let Ok(r) = h.http.revision(&s.api).await {
            rp.events_applied = r.events_applied;
            rp.last_seq = r.last_seq;
        }
        let ok = rp.digest.as_deref() == Some(want.as_str());
        let keys = if ok {
            String::new()
        } else {
            match h.http.resources(&s.api).await {
                Ok(held) => {
                    let (n, d) = crate::fold::key_diff(&held, &fold, 4);
                    format!("; {n} keys differ: {}", d.join(", "))
                }
                Err(_) => String::new(),
            }
        };
        checks.push(Check::new(
            "standalone's state digest equals the fold of its files",
            ok,
            format!(
                "standalone {} ({} resources) vs expected {} ({want_n} resources){keys}",
                rp.digest
                    .as_deref()
                    .map_or("unreachable".to_string(), |d| d.chars().take(12).collect()),
                rp.resources.map_or("?".into(), |x| x.to_string()),
                want.chars().take(12).collect::<String>()
            ),
        ));
        sec.standalone = Some(rp);
    }
    let (mismatched, examples) = match h.expected().await {
        Ok(e) => h.proxy_mismatches(&e).unwrap_or((usize::MAX, Vec::new())),
        Err(e) => (usize::MAX, vec![e.to_string()]),
    };
    let total = h.recorder().map(|r| r.proxy_count()).unwrap_or(0);
    checks.push(Check::new(
        "every simulated proxy holds what the store computes",
        mismatched == 0,
        if mismatched == 0 {
            format!("{total} proxies match /api/v1/gateways")
        } else {
            format!(
                "{} of {total} differ: {}",
                if mismatched == usize::MAX {
                    "all?".to_string()
                } else {
                    mismatched.to_string()
                },
                examples.join("; ")
            )
        },
    ));
    (sec, checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_summary_by_kind() {
        let r = |kind, rec| FaultRecord {
            kind,
            target: String::new(),
            at_ms: 0.0,
            injected: true,
            recovery_ms: rec,
        };
        let s = by_kind(&[
            r(FaultKind::EdgeKill, Some(10.0)),
            r(FaultKind::EdgeKill, Some(30.0)),
            r(FaultKind::LeaderStop, None),
        ]);
        assert_eq!(s["edge-kill"].injected, 2);
        assert_eq!(s["edge-kill"].longest_recovery_ms, Some(30.0));
        assert_eq!(s["leader-stop"].recovered, 0);
        assert_eq!(s["leader-stop"].longest_recovery_ms, None);
    }

    #[test]
    fn ops_cover_every_kind() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            seen.insert(Op::pick(&mut rng).name());
        }
        assert_eq!(seen.len(), 6);
    }
}
