//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several agent replicas
//! of one cluster exactly one writes statuses.
//!
//! As client-go's `leaderelection`: a candidate takes the Lease when it does not exist, has
//! no holder, or has not been renewed for `leaseDurationSeconds`; the holder renews it every
//! [`LeaseTiming::renew_every`]. Every write carries the resourceVersion that was read, so of
//! two candidates only one wins (the other gets 409 Conflict). Expiry is judged on the
//! candidate's own clock, from when it last saw the Lease change, never by comparing the
//! holder's `renewTime` with local time: clocks of different nodes need not agree. A holder
//! whose renewals keep failing steps down after [`LeaseTiming::renew_deadline`], before any
//! other candidate may consider the Lease expired.

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which Lease, and who this replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity: its pod name, or hostname and pid ([`default_identity`]).
    pub identity: String,
}

/// The election's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// `leaseDurationSeconds`: a Lease not renewed for this long is free.
    pub duration: Duration,
    /// How often the holder renews, and how often a candidate looks again.
    pub renew_every: Duration,
    /// A holder that could not renew for this long stops acting as the holder. Shorter than
    /// `duration`, so it has stopped before anyone else may take over.
    pub renew_deadline: Duration,
}

impl Default for LeaseTiming {
    /// 15 s / 5 s / 10 s (client-go's defaults are 15 / 2 / 10; renewing every 5 s is a
    /// third of the API writes and still three chances per duration).
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// `POD_NAME` if set (the downward API), otherwise `<hostname>-<pid>`.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.is_empty() {
            return pod;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "agent".to_string());
    format!("{host}-{}", std::process::id())
}

/// What a candidate last saw of the Lease: to judge expiry on its own clock.
struct Observed {
    /// holder, renewTime, resourceVersion: a change of any means the holder is alive.
    record: (Option<String>, Option<String>, Option<String>),
    at: Instant,
}

/// The outcome of one round.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    Holding,
    NotHolding,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn record_of(l: &Lease) -> (Option<String>, Option<String>, Option<String>) {
    let spec = l.spec.clone().unwrap_or_default();
    (
        spec.holder_identity,
        spec.renew_time.map(|t| t.0.to_string()),
        l.metadata.resource_version.clone(),
    )
}

struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    timing: LeaseTiming,
    observed: Option<Observed>,
}

impl Elector {
    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.timing.duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One try to acquire or renew. `Err` only for errors that say nothing about who holds
    /// the Lease (the API unreachable, 5xx).
    async fn round(&mut self) -> Result<Round, ::kube::Error> {
        let name = self.settings.name.clone();
        let current = match self.api.get_opt(&name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(Some(now()), 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Holding),
                    Err(::kube::Error::Api(s)) if s.code == 409 => Ok(Round::NotHolding),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let record = record_of(&current);
        let mine = spec.holder_identity.as_deref() == Some(self.settings.identity.as_str());
        let unheld = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !mine && !unheld {
            let changed = self.observed.as_ref().is_none_or(|o| o.record != record);
            if changed {
                self.observed = Some(Observed {
                    record,
                    at: Instant::now(),
                });
                return Ok(Round::NotHolding);
            }
            let held_for = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(self.timing.duration);
            let expired = self
                .observed
                .as_ref()
                .is_some_and(|o| o.at.elapsed() >= held_for);
            if !expired {
                return Ok(Round::NotHolding);
            }
        }
        // Renew ours, or take a free or expired one, on the resourceVersion read.
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if mine {
            LeaseSpec {
                renew_time: Some(now()),
                lease_duration_seconds: Some(self.timing.duration.as_secs().max(1) as i32),
                ..spec
            }
        } else {
            self.spec(Some(now()), transitions + 1)
        };
        let mut lease = current;
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !mine {
                    tracing::info!(lease = %name, identity = %self.settings.identity, "lease acquired");
                }
                Ok(Round::Holding)
            }
            // Someone else wrote it first: they hold it (or renewed it).
            Err(::kube::Error::Api(s)) if s.code == 409 => {
                self.observed = None;
                Ok(Round::NotHolding)
            }
            Err(e) => Err(e),
        }
    }

    /// Clears the holder, so another replica need not wait for expiry (client-go's
    /// `ReleaseOnCancel`). Best effort.
    async fn release(&self) {
        let name = &self.settings.name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        if let Err(e) = self.api.replace(name, &PostParams::default(), &lease).await {
            tracing::debug!(lease = %name, error = %e, "releasing the lease");
        }
    }
}

/// Runs the election until `shutdown`, keeping `holding` true exactly while this replica
/// holds the Lease. On shutdown it steps down and, if it held the Lease, releases it.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    timing: LeaseTiming,
    holding: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let api = Api::namespaced(client, &settings.namespace);
    let mut e = Elector {
        api,
        settings,
        timing,
        observed: None,
    };
    let mut last_renewed: Option<Instant> = None;
    loop {
        let round = tokio::select! {
            r = e.round() => r,
            _ = shutdown.cancelled() => break,
        };
        match round {
            Ok(Round::Holding) => {
                last_renewed = Some(Instant::now());
                holding.send_if_modified(|h| !std::mem::replace(h, true));
            }
            Ok(Round::NotHolding) => {
                last_renewed = None;
                if holding.send_if_modified(|h| std::mem::replace(h, false)) {
                    tracing::warn!(lease = %e.settings.name, "lease lost to another replica");
                }
            }
            Err(err) => {
                tracing::warn!(lease = %e.settings.name, error = %err, "lease round failed");
                if last_renewed.is_some_and(|t| t.elapsed() >= timing.renew_deadline) {
                    last_renewed = None;
                    holding.send_replace(false);
                    tracing::warn!(lease = %e.settings.name, "could not renew the lease in time: stepping down");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.renew_every) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    let held = holding.send_replace(false);
    if held {
        e.release().await;
    }
}
