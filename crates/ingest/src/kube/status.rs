//! Status write-back: the statuses the store computed for this agent's cluster, read from the
//! NATS KV bucket ([`flotilla_model::status_kv`]), written to each object's `/status`
//! subresource with server-side apply, by the one replica that holds the cluster's Lease.
//!
//! - Only while holding the Lease ([`super::lease`]). Taking it (again) starts a new watch of
//!   the bucket with every current value first: a restart or a takeover resyncs everything.
//! - Only when changed: what was last written per key is kept, and a value equal to it but
//!   for the store revision is not written again.
//! - Under Envoy Gateway's field manager ([`FIELD_MANAGER`]), forced: the status is ours.
//!   `observedGeneration` is in the conditions as the store computed them; a status is
//!   written even when the object's generation moved on since, as Kubernetes controllers do
//!   (the conditions say which generation they describe).
//! - An object that does not exist (404) is skipped, and tried again now and then (it may be
//!   created with a status already published); 409/422 on one object is logged naming
//!   it and does not hold up the others; other errors (5xx, the API unreachable) are retried
//!   with a backoff. A deleted key writes nothing: the object is gone or no longer ours.

use super::lease::{self, LeaseSettings, LeaseTiming};
use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use ::kube::discovery::{self, Scope};
use ::kube::Client;
use async_nats::jetstream::{self, consumer};
use flotilla_model::status_kv::{status_stream, status_subject_prefix, status_subjects_of};
use flotilla_model::StatusValue;
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The field manager of status writes. Envoy Gateway's controller writes statuses through
/// controller-runtime (`Status().Update`), whose field manager defaults to the binary's
/// name, `envoy-gateway`; its server-side applies name `client.FieldOwner("envoy-gateway")`
/// explicitly (`internal/infrastructure/kubernetes/infra_client.go`). Writing under the same
/// name keeps `managedFields` readable for operators moving between the two.
pub const FIELD_MANAGER: &str = "envoy-gateway";
/// First pause after a failed write; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Pause before watching the bucket again after the watch failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// How often the statuses of objects that did not exist are tried again: an object created
/// (again) with a status equal to one already published gets no new value from the bucket.
const GONE_RETRY: Duration = Duration::from_secs(30);

/// Why the write-back stopped. Only setup errors end it; everything else is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster {0:?} cannot name status keys (see flotilla_ingest::validate_cluster)")]
    Cluster(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes this cluster's statuses back while holding the Lease; until `shutdown`. See the
/// module doc.
pub async fn run(
    client: Client,
    nats: async_nats::Client,
    cluster: String,
    lease: LeaseSettings,
    shutdown: CancellationToken,
) -> Result<()> {
    run_with(
        client,
        nats,
        cluster,
        lease,
        LeaseTiming::default(),
        shutdown,
    )
    .await
}

/// [`run`] with the election's clock (tests shorten it).
pub async fn run_with(
    client: Client,
    nats: async_nats::Client,
    cluster: String,
    lease: LeaseSettings,
    timing: LeaseTiming,
    shutdown: CancellationToken,
) -> Result<()> {
    crate::validate_cluster(&cluster).map_err(|_| Error::Cluster(cluster.clone()))?;
    let (holding_tx, mut holding) = watch::channel(false);
    let identity = lease.identity.clone();
    // The election runs in this future, not a task of its own: whoever drops (or aborts)
    // `run` stops renewing the Lease too.
    let election = lease::run(client.clone(), lease, timing, holding_tx, shutdown.clone())
        .instrument(tracing::info_span!("lease", %identity));
    let js = jetstream::new(nats);
    let mut writer = Writer::new(client);
    let work = async {
        loop {
            tokio::select! {
                r = holding.wait_for(|h| *h) => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            tracing::info!(%cluster, %identity, "holding the lease: writing statuses back");
            // A new term: everything is read again, and what another replica wrote meanwhile
            // is not known, so nothing counts as written.
            writer.written.clear();
            tokio::select! {
                _ = writer.follow(&js, &cluster, &shutdown) => {}
                _ = holding.wait_for(|h| !*h) => {
                    tracing::info!(%cluster, %identity, "lease lost: status write-back paused");
                }
                _ = shutdown.cancelled() => return,
            }
        }
    };
    // On shutdown the election steps down and releases the Lease, so the next holder need
    // not wait for it to expire.
    tokio::join!(election, work);
    Ok(())
}

/// One update of a key, as read from the bucket.
#[derive(Debug)]
enum Update {
    Put(StatusValue),
    Deleted,
}

/// Reads `cluster`'s keys through an ordered consumer created with the subject form that
/// carries its filter (what the agent's NATS user is allowed; see
/// `flotilla_ingest::natsconf::status_reader`), every current value first.
pub async fn watch_cluster(
    js: &jetstream::Context,
    cluster: &str,
) -> Result<consumer::push::Ordered, String> {
    let stream = js
        .get_stream(status_stream())
        .await
        .map_err(|e| format!("status bucket: {e}"))?;
    let name = format!(
        "flotilla-status-{cluster}-{}",
        uuid::Uuid::new_v4().simple()
    );
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            name: Some(name),
            deliver_subject: js.client().new_inbox(),
            filter_subject: status_subjects_of(cluster),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("watching {}: {e}", status_subjects_of(cluster)))?;
    consumer
        .messages()
        .await
        .map_err(|e| format!("watching {}: {e}", status_subjects_of(cluster)))
}

fn parse(m: &async_nats::Message) -> Option<(String, Update)> {
    let key = m.subject.strip_prefix(status_subject_prefix().as_str())?;
    let deleted = m
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
    if deleted {
        return Some((key.to_string(), Update::Deleted));
    }
    match serde_json::from_slice::<StatusValue>(&m.payload) {
        Ok(v) => Some((key.to_string(), Update::Put(v))),
        Err(e) => {
            tracing::warn!(key, error = %e, "status value does not parse: skipped");
            None
        }
    }
}

/// What happened to one write.
enum Outcome {
    Written,
    /// Nothing to retry (the API refused the value, the kind is not served).
    Dropped,
    /// The object does not exist (now): tried again after [`GONE_RETRY`].
    Gone,
    Retry(String),
}

struct Writer {
    client: Client,
    /// Last value written, by key.
    written: HashMap<String, StatusValue>,
    /// Resources by (apiVersion, kind), from discovery.
    resources: HashMap<(String, String), (ApiResource, Scope)>,
}

impl Writer {
    fn new(client: Client) -> Self {
        Self {
            client,
            written: HashMap::new(),
            resources: HashMap::new(),
        }
    }

    /// Follows the bucket and writes, until the watch fails for good (then it is opened
    /// again after a pause). Returns never; the caller's select ends it.
    async fn follow(
        &mut self,
        js: &jetstream::Context,
        cluster: &str,
        shutdown: &CancellationToken,
    ) {
        loop {
            match watch_cluster(js, cluster).await {
                Ok(mut messages) => {
                    let mut pending: BTreeMap<String, StatusValue> = BTreeMap::new();
                    let mut gone: BTreeMap<String, StatusValue> = BTreeMap::new();
                    let mut gone_at = tokio::time::Instant::now() + GONE_RETRY;
                    let mut backoff = MIN_BACKOFF;
                    loop {
                        let first = tokio::select! {
                            m = messages.next() => Some(m),
                            _ = tokio::time::sleep(backoff), if !pending.is_empty() => None,
                            _ = tokio::time::sleep_until(gone_at), if !gone.is_empty() => {
                                pending.extend(std::mem::take(&mut gone));
                                None
                            }
                            _ = shutdown.cancelled() => return,
                        };
                        let mut batch = Vec::new();
                        match first {
                            Some(None) => break,
                            Some(Some(Err(e))) => {
                                tracing::warn!(error = %e, "status watch failed");
                                break;
                            }
                            Some(Some(Ok(m))) => batch.push(m),
                            None => {}
                        }
                        // Take what is already here too: one pass writes the latest of each.
                        while let Some(Some(Ok(m))) = messages.next().now_or_never() {
                            batch.push(m);
                        }
                        for m in &batch {
                            let Some((key, update)) = parse(m) else {
                                continue;
                            };
                            match update {
                                Update::Put(v) => {
                                    gone.remove(&key);
                                    pending.insert(key, v);
                                }
                                Update::Deleted => {
                                    gone.remove(&key);
                                    pending.remove(&key);
                                    self.written.remove(&key);
                                }
                            }
                        }
                        let mut failed = false;
                        for (key, value) in std::mem::take(&mut pending) {
                            if self.written.get(&key).is_some_and(|w| w.same_as(&value)) {
                                continue;
                            }
                            match self.write(&value).await {
                                Outcome::Written => {
                                    self.written.insert(key, value);
                                }
                                Outcome::Dropped => {
                                    self.written.remove(&key);
                                }
                                Outcome::Gone => {
                                    self.written.remove(&key);
                                    if gone.is_empty() {
                                        gone_at = tokio::time::Instant::now() + GONE_RETRY;
                                    }
                                    gone.insert(key, value);
                                }
                                Outcome::Retry(why) => {
                                    tracing::warn!(key, error = %why, "status write failed; retrying");
                                    failed = true;
                                    pending.insert(key, value);
                                }
                            }
                        }
                        backoff = if failed {
                            (backoff * 2).min(MAX_BACKOFF)
                        } else {
                            MIN_BACKOFF
                        };
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the status bucket"),
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_RETRY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn resource(&mut self, v: &StatusValue) -> Result<(ApiResource, Scope), ::kube::Error> {
        let k = (v.api_version.clone(), v.kind.clone());
        if let Some(r) = self.resources.get(&k) {
            return Ok(r.clone());
        }
        let (group, version) = match v.api_version.rsplit_once('/') {
            Some((g, ver)) => (g, ver),
            None => ("", v.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &v.kind);
        let (ar, caps) = discovery::pinned_kind(&self.client, &gvk).await?;
        self.resources.insert(k, (ar.clone(), caps.scope.clone()));
        Ok((ar, caps.scope))
    }

    async fn write(&mut self, v: &StatusValue) -> Outcome {
        let what = if v.namespace.is_empty() {
            format!("{} {}", v.kind, v.name)
        } else {
            format!("{} {}/{}", v.kind, v.namespace, v.name)
        };
        let (ar, scope) = match self.resource(v).await {
            Ok(r) => r,
            // Not served (a CRD not installed): not retried until the value changes.
            Err(e @ ::kube::Error::Discovery(_)) => {
                tracing::warn!(object = %what, error = %e, "status not written: kind not served");
                return Outcome::Dropped;
            }
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                let e = format!("{} {}", s.code, s.message);
                tracing::warn!(object = %what, error = %e, "status not written: kind not served");
                return Outcome::Dropped;
            }
            Err(e) => {
                return Outcome::Retry(format!("discovering {}/{}: {e}", v.api_version, v.kind))
            }
        };
        let api: Api<DynamicObject> = match scope {
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), &v.namespace, &ar),
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
        };
        let mut metadata = serde_json::json!({"name": v.name});
        if matches!(scope, Scope::Namespaced) {
            metadata["namespace"] = v.namespace.clone().into();
        }
        let body = serde_json::json!({
            "apiVersion": v.api_version,
            "kind": v.kind,
            "metadata": metadata,
            "status": v.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&v.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                tracing::debug!(object = %what, revision = v.revision, "status written");
                Outcome::Written
            }
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                tracing::debug!(object = %what, "status not written: the object does not exist");
                Outcome::Gone
            }
            Err(::kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                tracing::warn!(object = %what, code = s.code, reason = %s.reason, message = %s.message, "status refused");
                Outcome::Dropped
            }
            Err(e) => Outcome::Retry(format!("{what}: {e}")),
        }
    }
}
