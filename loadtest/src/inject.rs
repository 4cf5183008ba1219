//! Fault injection and recovery probes, shared by scheduled faults (scenario `faults:`) and
//! the chaos mode.

use crate::decode::Marker;
use crate::faults::{FaultKind, FaultRecord, Intrusion, Outcome};
use crate::fixtures::{poison, write_atomic};
use crate::harness::{lock, Harness};
use crate::recorder::{ChangeId, ChangeKind};
use anyhow::{anyhow, Result};
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// How long a killed process stays down before it is started again (random in this range).
const DOWN_MS: (u64, u64) = (500, 3000);
/// SIGSTOP of the leader lasts this long: well past the election timeout (300-600 ms), so the
/// others elect a new leader and the stopped one steps down when it wakes up.
const STOP_MS: (u64, u64) = (1500, 3000);
/// A probe that has not converged after this is reported as not recovered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(90);

/// Name of the probe route of each cluster (one per cluster, on its first gateway).
pub const PROBE_ROUTE: &str = "probe";

impl Harness {
    /// Schedules `f` on process `i` after `delay` (kept so settle can wait for it).
    fn later(&self, i: usize, delay: Duration, what: &'static str) {
        let procs = self.procs.clone();
        let h = tokio::spawn(
            async move {
                tokio::time::sleep(delay).await;
                let mut ps = lock(&procs);
                if let Some(p) = ps.get_mut(i) {
                    let r = match what {
                        "resume" => {
                            p.resume();
                            Ok(())
                        }
                        _ => p.start(),
                    };
                    if let Err(e) = r {
                        tracing::error!(process = %p.name, error = %e, "restart failed");
                    }
                }
            }
            .instrument(tracing::info_span!("fault_undo", what)),
        );
        lock(&self.restarts).push(h);
    }

    fn kill_then_start(&self, i: usize, rng: &mut impl Rng) -> String {
        let name = {
            let mut ps = lock(&self.procs);
            ps[i].kill();
            ps[i].name.clone()
        };
        let down = Duration::from_millis(rng.random_range(DOWN_MS.0..=DOWN_MS.1));
        self.later(i, down, "start");
        format!("{name} (down {:.1}s)", down.as_secs_f64())
    }

    /// Injects one fault; returns (what was hit, clusters whose probe tells the recovery).
    pub async fn inject(
        &mut self,
        kind: FaultKind,
        rng: &mut impl Rng,
        n: u32,
    ) -> Result<(String, Vec<usize>)> {
        let multi = self.multi.clone();
        let m = || {
            multi
                .as_ref()
                .ok_or_else(|| anyhow!("{kind} needs the multi-process plane"))
        };
        let multi_clusters = multi
            .as_ref()
            .map(|m| m.clusters.clone())
            .unwrap_or_default();
        let agent_cluster = |rng: &mut dyn rand::RngCore| -> Result<usize> {
            let m = multi.as_ref().ok_or_else(|| anyhow!("no agents"))?;
            if m.clusters.is_empty() {
                return Err(anyhow!("no clusters"));
            }
            Ok(m.clusters[rng.random_range(0..m.clusters.len())])
        };
        match kind {
            FaultKind::StoreKill => {
                let stores = m()?.stores.clone();
                let i = stores[rng.random_range(0..stores.len())];
                Ok((self.kill_then_start(i, rng), multi_clusters))
            }
            FaultKind::LeaderKill => {
                let l = self
                    .leader()
                    .await
                    .ok_or_else(|| anyhow!("no leader to kill"))?;
                let i = m()?.stores[l];
                Ok((self.kill_then_start(i, rng), multi_clusters))
            }
            FaultKind::LeaderStop => {
                let l = self
                    .leader()
                    .await
                    .ok_or_else(|| anyhow!("no leader to stop"))?;
                let i = m()?.stores[l];
                let name = {
                    let mut ps = lock(&self.procs);
                    ps[i].pause();
                    ps[i].name.clone()
                };
                let d = Duration::from_millis(rng.random_range(STOP_MS.0..=STOP_MS.1));
                self.later(i, d, "resume");
                Ok((
                    format!("{name} (stopped {:.1}s)", d.as_secs_f64()),
                    multi_clusters,
                ))
            }
            FaultKind::EdgeKill => {
                let edges = m()?.edges.clone();
                let i = edges[rng.random_range(0..edges.len())];
                Ok((self.kill_then_start(i, rng), multi_clusters))
            }
            FaultKind::AgentKill => {
                let agents = m()?.agents.clone();
                if agents.is_empty() {
                    return Err(anyhow!("no agents (churn via NATS)"));
                }
                let (ci, i) = agents[rng.random_range(0..agents.len())];
                Ok((self.kill_then_start(i, rng), vec![ci]))
            }
            FaultKind::NatsRestart => {
                let i = m()?.nats;
                let name = {
                    let mut ps = lock(&self.procs);
                    ps[i].terminate(Duration::from_secs(5));
                    ps[i].name.clone()
                };
                let d = Duration::from_millis(rng.random_range(DOWN_MS.0..=DOWN_MS.1));
                self.later(i, d, "start");
                Ok((
                    format!("{name} (down {:.1}s)", d.as_secs_f64()),
                    multi_clusters,
                ))
            }
            FaultKind::StandaloneRestart => {
                let s = self.solo.clone().ok_or_else(|| anyhow!("no standalone"))?;
                Ok((self.kill_then_start(s.proc, rng), vec![s.cluster]))
            }
            FaultKind::IntruderProxy => {
                let (target, token_of, clusters) = {
                    let w = lock(&self.world);
                    if w.gateways.len() < 2 {
                        return Err(anyhow!("an intruder needs two gateways"));
                    }
                    let a = rng.random_range(0..w.gateways.len());
                    let b = (a + rng.random_range(1..w.gateways.len())) % w.gateways.len();
                    (
                        w.gateways[a].id.clone(),
                        w.gateways[b].id.clone(),
                        (0..w.clusters.len()).collect::<Vec<_>>(),
                    )
                };
                let edges: Vec<String> = match (&multi, &self.solo) {
                    (Some(m), _) => m.edge_xds.clone(),
                    (None, Some(s)) => vec![s.xds.clone()],
                    (None, None) => return Err(anyhow!("no xDS server")),
                };
                let edge = edges[rng.random_range(0..edges.len())].clone();
                // Half the intruders bring another gateway's token, half none at all.
                let token = rng
                    .random_bool(0.5)
                    .then(|| self.proxy_key.token(&token_of));
                let outcome = intrude(&self.connector, &edge, &target, token.as_deref()).await;
                let what = format!(
                    "{edge}: names {target} with {}: {outcome}",
                    if token.is_some() {
                        format!("the token of {token_of}")
                    } else {
                        "no token".to_string()
                    }
                );
                lock(&self.intruders).push(Intrusion {
                    what: what.clone(),
                    outcome,
                });
                Ok((what, clusters))
            }
            FaultKind::PoisonGarbage => {
                let ci = agent_cluster(rng)?;
                let name = lock(&self.world).clusters[ci].name.clone();
                let sink = self.ensure_nats_sink().await?;
                let seq = sink.publish_bytes(&name, poison::garbage(n)).await?;
                Ok((format!("garbage to {name} (stream seq {seq})"), vec![ci]))
            }
            poison_kind => {
                let ci = agent_cluster(rng)?;
                let (dir, gw) = {
                    let w = lock(&self.world);
                    let c = &w.clusters[ci];
                    (
                        c.dir.clone(),
                        w.gateways[c.gateways[0] as usize].name.clone(),
                    )
                };
                let text = match poison_kind {
                    FaultKind::PoisonDeepConfigmap => poison::deep_configmap(n),
                    FaultKind::PoisonDuplicateKey => poison::duplicate_key(n),
                    FaultKind::PoisonBom => poison::bom(n),
                    FaultKind::PoisonSlashName => poison::slash_gateway(n),
                    FaultKind::PoisonHuge => poison::huge(n),
                    _ => poison::bad_regex(n, &gw),
                };
                let path = dir
                    .join("poison")
                    .join(format!("{}-{n}.yaml", poison_kind.name()));
                write_atomic(&path, text.as_bytes())?;
                Ok((path.display().to_string(), vec![ci]))
            }
        }
    }

    /// Bumps the probe route of each cluster; returns the registered changes.
    pub async fn probe(&self, clusters: &[usize]) -> Result<Vec<ChangeId>> {
        let rec = self.recorder()?.clone();
        let mut ids = Vec::new();
        for &ci in clusters {
            let route = {
                let mut w = lock(&self.world);
                let Some(r) = w
                    .routes
                    .iter()
                    .position(|r| r.cluster == ci && r.name == PROBE_ROUTE && r.alive)
                else {
                    return Err(anyhow!("cluster {ci} has no probe route"));
                };
                w.routes[r].seq += 1;
                r as u32
            };
            let (g, marker): (u32, Marker) = {
                let w = lock(&self.world);
                (w.routes[route as usize].gateway, w.marker(route))
            };
            ids.push(rec.expect_change(g, marker, ChangeKind::Probe));
            self.put_route(route).await?;
        }
        Ok(ids)
    }

    /// Injects `kind`, probes, and tracks the recovery in the background into `records`.
    pub async fn fault_and_probe(
        &mut self,
        kind: FaultKind,
        rng: &mut impl Rng,
        n: u32,
        records: &Arc<Mutex<Vec<FaultRecord>>>,
    ) -> Result<String> {
        let at_ms = self.recorder()?.now_ms();
        let (target, clusters) = match self.inject(kind, rng, n).await {
            Ok(x) => x,
            Err(e) => {
                lock(records).push(FaultRecord {
                    kind,
                    target: format!("not injected: {e:#}"),
                    at_ms,
                    injected: false,
                    recovery_ms: None,
                });
                return Err(e);
            }
        };
        let ids = self.probe(&clusters).await?;
        let idx = {
            let mut r = lock(records);
            r.push(FaultRecord {
                kind,
                target: target.clone(),
                at_ms,
                injected: true,
                recovery_ms: None,
            });
            r.len() - 1
        };
        let rec = self.recorder()?.clone();
        let records = records.clone();
        let h = tokio::spawn(
            async move {
                let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
                while tokio::time::Instant::now() < deadline {
                    let done: Option<Vec<f64>> =
                        ids.iter().map(|&id| rec.converged_at(id)).collect();
                    if let Some(t) = done {
                        let last = t.into_iter().fold(at_ms, f64::max);
                        lock(&records)[idx].recovery_ms = Some(last - at_ms);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            .instrument(tracing::info_span!("recovery", fault = %kind)),
        );
        lock(&self.trackers).push(h);
        Ok(target)
    }
}

/// Opens a delta stream to `edge` naming `gateway`, with `token` as its proxy token.
async fn intrude(
    connector: &flotilla_net::Connector,
    edge: &str,
    gateway: &str,
    token: Option<&str>,
) -> Outcome {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use futures::StreamExt;
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{edge}"))
            .map_err(|_| Outcome::Unreachable)?
            .connect_with_connector(connector.clone())
            .await
            .map_err(|_| Outcome::Unreachable)?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let first = DeltaDiscoveryRequest {
            node: Some(Node {
                id: "intruder".into(),
                cluster: gateway.into(),
                ..Default::default()
            }),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        };
        let mut req =
            tonic::Request::new(futures::stream::iter([first]).chain(futures::stream::pending()));
        if let Some(t) = token.and_then(|t| t.parse().ok()) {
            req.metadata_mut()
                .insert(flotilla_net::auth::PROXY_TOKEN_HEADER, t);
        }
        let mut inbound = match client.delta_aggregated_resources(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::PermissionDenied => return Ok(Outcome::Refused),
            Err(s) if s.code() == tonic::Code::Unavailable => return Err(Outcome::Unreachable),
            Err(_) => return Ok(Outcome::Served),
        };
        Ok(match inbound.message().await {
            Err(s) if s.code() == tonic::Code::PermissionDenied => Outcome::Refused,
            Err(s) if s.code() == tonic::Code::Unavailable => Outcome::Unreachable,
            _ => Outcome::Served,
        })
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(o)) | Ok(Err(o)) => o,
        Err(_) => Outcome::Unreachable,
    }
}
