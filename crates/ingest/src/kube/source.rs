//! The async shell of the Kubernetes source: discovery, watchers, the CRD watch, and the one
//! loop that feeds [`KubeIndex`] and publishes what it answers, one event at a time, in order.

use super::index::KubeIndex;
use crate::emit::{Emitter, Stopped};
use crate::{validate_cluster, DedupIds, IngestStats, Publisher, Result};
use flotilla_model::{EventBody, Kind};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::discovery::Discovery;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Watcher events waiting for the publishing loop. Small: a watcher blocks (and the API
/// server's watch buffers) while the loop publishes; a relist of thousands of objects flows
/// through it in order without holding them all twice.
const EVENT_CHANNEL: usize = 256;
/// Waits between attempts of the startup discovery (the API server may not be up yet).
const DISCOVERY_BACKOFF_START: Duration = Duration::from_millis(200);
const DISCOVERY_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A CRD that exists but whose kind discovery does not serve yet (not Established) is looked
/// up again after this long, this many times.
const CRD_RETRY: Duration = Duration::from_secs(1);
const CRD_RETRIES: u32 = 60;

/// One watcher event, the object as JSON (apiVersion and kind filled in).
#[derive(Debug)]
enum WatchEvent {
    Apply(Value),
    Delete(Value),
    Init,
    InitApply(Value),
    InitDone,
}

#[derive(Debug)]
enum Msg {
    /// From the watcher of `kind` started as `epoch` (events of a stopped watcher that were
    /// already queued are dropped by their epoch).
    Watch {
        kind: Kind,
        epoch: u64,
        event: WatchEvent,
    },
    /// The CRD of `kind` exists (again).
    CrdPresent { kind: Kind, attempt: u32 },
    /// The CRD of `kind` is gone.
    CrdGone(Kind),
}

/// Watches one cluster's API server and publishes its objects. See the module docs of
/// `kube` and `kube::index` for what is watched and published.
pub struct KubeSource {
    cluster: String,
    client: kube::Client,
    ids: Arc<DedupIds>,
    stats: Arc<IngestStats>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("cluster", &self.cluster)
            .field("agent_id", &self.ids.agent_id())
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    pub fn new(cluster: impl Into<String>, client: kube::Client) -> Self {
        Self {
            cluster: cluster.into(),
            client,
            ids: Arc::new(DedupIds::new()),
            stats: Arc::default(),
        }
    }

    /// Uses these dedup ids (and their agent id as the events' `source`).
    pub fn with_dedup_ids(mut self, ids: DedupIds) -> Self {
        self.ids = Arc::new(ids);
        self
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The client this source watches with; status write-back uses the same one.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The id of this agent: the `source` of its events and the prefix of its dedup ids.
    pub fn agent_id(&self) -> &str {
        self.ids.agent_id()
    }

    /// Counters, readable while `run` runs.
    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled. Returns an error only when it cannot work at all
    /// (an invalid cluster name, a publisher that refuses everything). API errors are logged
    /// and retried with backoff; objects that do not parse are logged and skipped.
    pub async fn run<P: Publisher>(self, publisher: P, shutdown: CancellationToken) -> Result<()> {
        let span = tracing::info_span!("kube_source", cluster = %self.cluster);
        self.run_inner(publisher, shutdown).instrument(span).await
    }

    async fn run_inner<P: Publisher>(
        self,
        publisher: P,
        shutdown: CancellationToken,
    ) -> Result<()> {
        validate_cluster(&self.cluster)?;
        let emitter = Emitter {
            publisher,
            ids: self.ids.clone(),
            cluster: self.cluster.clone(),
            stats: self.stats.clone(),
            shutdown: shutdown.clone(),
        };
        let (tx, mut rx) = mpsc::channel(EVENT_CHANNEL);
        let mut d = Driver {
            client: self.client.clone(),
            index: KubeIndex::new(&self.cluster),
            stats: self.stats.clone(),
            tx: tx.clone(),
            shutdown: shutdown.clone(),
            watchers: BTreeMap::new(),
            missing: BTreeSet::new(),
            epoch: 0,
        };
        let Some(discovery) = discover(&self.client, &shutdown).await else {
            return Ok(());
        };
        let mut out = Vec::new();
        for kind in Kind::ALL {
            match resolve(&discovery, kind) {
                Some(ar) => d.start(kind, ar),
                None => {
                    tracing::warn!(%kind, group = kind.group(), "kind not served by the API server (CRD not installed?): skipped; watched once its CRD is installed");
                    d.missing.insert(kind);
                }
            }
        }
        // What a previous life published of the kinds that are not served now is gone.
        for kind in d.missing.clone() {
            d.index.gone(kind, &self.stats, &mut out);
        }
        d.update_stats();
        tokio::spawn(
            watch_crds(self.client.clone(), tx, shutdown.child_token())
                .instrument(tracing::info_span!("crd_watch")),
        );
        if let Err(stopped) = emitter.emit_all(std::mem::take(&mut out)).await {
            return stopped.into_result();
        }
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => m,
            };
            let Some(msg) = msg else { break };
            d.handle(msg, &mut out).await;
            d.report_rejections();
            d.update_stats();
            if let Err(stopped) = emitter.emit_all(std::mem::take(&mut out)).await {
                return stopped.into_result();
            }
        }
        d.stop_all();
        tracing::info!("kubernetes source stopped");
        Ok(())
    }
}

impl Stopped {
    fn into_result(self) -> Result<()> {
        match self {
            Stopped::Shutdown => Ok(()),
            Stopped::Fatal(e) => Err(e),
        }
    }
}

struct Driver {
    client: kube::Client,
    index: KubeIndex,
    stats: Arc<IngestStats>,
    tx: mpsc::Sender<Msg>,
    shutdown: CancellationToken,
    /// Running watchers: their epoch and their stop token.
    watchers: BTreeMap<Kind, (u64, CancellationToken)>,
    /// Kinds not served by the API server.
    missing: BTreeSet<Kind>,
    epoch: u64,
}

impl Driver {
    fn start(&mut self, kind: Kind, ar: ApiResource) {
        self.epoch += 1;
        let token = self.shutdown.child_token();
        tracing::info!(%kind, version = %ar.version, plural = %ar.plural, "watching");
        self.index.watch_started(kind);
        self.missing.remove(&kind);
        tokio::spawn(
            watch_kind(
                self.client.clone(),
                ar,
                kind,
                self.epoch,
                self.tx.clone(),
                token.clone(),
            )
            .instrument(tracing::info_span!("watch", %kind)),
        );
        self.watchers.insert(kind, (self.epoch, token));
    }

    fn stop_all(&mut self) {
        for (_, (_, token)) in std::mem::take(&mut self.watchers) {
            token.cancel();
        }
    }

    /// Reports the objects found not to parse as Warning Events on them (what `kubectl
    /// describe` shows beside the agent's log line), best effort: an Event that cannot be
    /// written is logged, and nothing waits for it.
    fn report_rejections(&mut self) {
        for r in self.index.take_rejections() {
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = warning_event(client, &r).await {
                    tracing::warn!(object = %r.key, error = %e, "could not write the Warning Event of an object that does not parse");
                }
            });
        }
    }

    fn update_stats(&self) {
        self.stats
            .set_kinds(self.watchers.len(), self.missing.len());
        self.stats.set_objects(self.index.object_count());
    }

    async fn handle(&mut self, msg: Msg, out: &mut Vec<EventBody>) {
        match msg {
            Msg::Watch { kind, epoch, event } => {
                if self.watchers.get(&kind).map(|(e, _)| *e) != Some(epoch) {
                    return;
                }
                let stats = &self.stats;
                match event {
                    WatchEvent::Apply(obj) => self.index.apply(kind, obj, stats, out),
                    WatchEvent::Delete(obj) => self.index.delete(kind, &obj, out),
                    WatchEvent::Init => self.index.init(kind),
                    WatchEvent::InitApply(obj) => self.index.init_apply(kind, obj),
                    WatchEvent::InitDone => {
                        self.index.init_done(kind, stats, out);
                        tracing::info!(%kind, "listing complete, kind resynced");
                    }
                }
            }
            Msg::CrdPresent { kind, attempt } => {
                if self.watchers.contains_key(&kind) {
                    return;
                }
                // One attempt: a failure is retried below, without holding up the events
                // of the other kinds for a retry loop.
                let ar = match Discovery::new(self.client.clone())
                    .filter(&[kind.group()])
                    .run()
                    .await
                {
                    Ok(d) => resolve(&d, kind),
                    Err(e) => {
                        tracing::warn!(%kind, error = %e, "discovery of a new CRD's kind failed; retrying");
                        None
                    }
                };
                match ar {
                    Some(ar) => {
                        tracing::info!(%kind, "CRD installed: kind picked up");
                        self.start(kind, ar);
                    }
                    None if attempt < CRD_RETRIES => {
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(CRD_RETRY).await;
                            let _ = tx
                                .send(Msg::CrdPresent {
                                    kind,
                                    attempt: attempt + 1,
                                })
                                .await;
                        });
                    }
                    None => {
                        tracing::warn!(%kind, "the CRD exists but discovery does not serve the kind; giving up until the CRD changes");
                    }
                }
            }
            Msg::CrdGone(kind) => {
                let Some((_, token)) = self.watchers.remove(&kind) else {
                    return;
                };
                token.cancel();
                self.missing.insert(kind);
                tracing::warn!(%kind, "CRD removed: kind no longer watched, its objects deleted");
                self.index.gone(kind, &self.stats, out);
            }
        }
    }
}

/// Legacy discovery of every group, retried with backoff until it works or shutdown (`None`).
async fn discover(client: &kube::Client, shutdown: &CancellationToken) -> Option<Discovery> {
    let mut backoff = DISCOVERY_BACKOFF_START;
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => return Some(d),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "API discovery failed, retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(DISCOVERY_BACKOFF_MAX);
    }
}

/// The served version of `kind` (the group's preferred version that serves it).
fn resolve(d: &Discovery, kind: Kind) -> Option<ApiResource> {
    d.get(kind.group())
        .and_then(|g| g.recommended_kind(kind.as_str()))
        .map(|(ar, _)| ar)
}

/// Kinds that come from CRDs (the others are built into the API server).
fn crd_managed(kind: Kind) -> bool {
    !matches!(
        kind.group(),
        "" | "discovery.k8s.io" | "certificates.k8s.io"
    )
}

/// The kind a CustomResourceDefinition defines, if the translator reads it.
fn crd_kind(crd: &Value) -> Option<Kind> {
    let group = crd.pointer("/spec/group")?.as_str()?;
    let name = crd.pointer("/spec/names/kind")?.as_str()?;
    Kind::ALL
        .into_iter()
        .find(|k| crd_managed(*k) && k.group() == group && k.as_str() == name)
}

fn to_value(obj: DynamicObject, ar: &ApiResource) -> Option<Value> {
    match serde_json::to_value(&obj) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.entry("apiVersion")
                    .or_insert_with(|| Value::String(ar.api_version.clone()));
                o.entry("kind")
                    .or_insert_with(|| Value::String(ar.kind.clone()));
            }
            Some(v)
        }
        Err(e) => {
            tracing::warn!(kind = %ar.kind, error = %e, "object could not be encoded, skipped");
            None
        }
    }
}

/// Runs `kube::runtime::watcher` on one kind (list, then watch; relists after 410 Expired;
/// the default backoff on errors) and forwards its events.
async fn watch_kind(
    client: kube::Client,
    ar: ApiResource,
    kind: Kind,
    epoch: u64,
    tx: mpsc::Sender<Msg>,
    token: CancellationToken,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let item = tokio::select! {
            _ = token.cancelled() => return,
            i = stream.next() => i,
        };
        let event = match item {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
                continue;
            }
            Some(Ok(watcher::Event::Apply(o))) => to_value(o, &ar).map(WatchEvent::Apply),
            Some(Ok(watcher::Event::Delete(o))) => to_value(o, &ar).map(WatchEvent::Delete),
            Some(Ok(watcher::Event::Init)) => Some(WatchEvent::Init),
            Some(Ok(watcher::Event::InitApply(o))) => to_value(o, &ar).map(WatchEvent::InitApply),
            Some(Ok(watcher::Event::InitDone)) => Some(WatchEvent::InitDone),
        };
        let Some(event) = event else { continue };
        if tx.send(Msg::Watch { kind, epoch, event }).await.is_err() {
            return;
        }
    }
}

/// Watches CustomResourceDefinitions: a CRD of a kind the translator reads appearing starts
/// that kind's watcher, its deletion stops it (also when a relist no longer shows it).
async fn watch_crds(client: kube::Client, tx: mpsc::Sender<Msg>, token: CancellationToken) {
    let ar = ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed = BTreeSet::new();
    loop {
        let item = tokio::select! {
            _ = token.cancelled() => return,
            i = stream.next() => i,
        };
        let msgs: Vec<Msg> = match item {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "CRD watch failed; retrying with backoff");
                continue;
            }
            Some(Ok(watcher::Event::Init)) => {
                listed.clear();
                continue;
            }
            Some(Ok(watcher::Event::InitApply(o))) => {
                let Some(kind) = to_value(o, &ar).as_ref().and_then(crd_kind) else {
                    continue;
                };
                listed.insert(kind);
                vec![Msg::CrdPresent { kind, attempt: 0 }]
            }
            Some(Ok(watcher::Event::InitDone)) => Kind::ALL
                .into_iter()
                .filter(|k| crd_managed(*k) && !listed.contains(k))
                .map(Msg::CrdGone)
                .collect(),
            Some(Ok(watcher::Event::Apply(o))) => {
                match to_value(o, &ar).as_ref().and_then(crd_kind) {
                    Some(kind) => vec![Msg::CrdPresent { kind, attempt: 0 }],
                    None => continue,
                }
            }
            Some(Ok(watcher::Event::Delete(o))) => {
                match to_value(o, &ar).as_ref().and_then(crd_kind) {
                    Some(kind) => vec![Msg::CrdGone(kind)],
                    None => continue,
                }
            }
        };
        for m in msgs {
            if tx.send(m).await.is_err() {
                return;
            }
        }
    }
}

/// Writes a Warning Event (core v1, reason `Invalid`) on an object that does not parse. Events
/// of cluster-scoped objects go to `default`, as the API server's own do.
async fn warning_event(client: kube::Client, r: &super::index::Rejection) -> kube::Result<()> {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let ns = if r.key.namespace.is_empty() {
        "default"
    } else {
        r.key.namespace.as_str()
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            // Unique per report, as the API server's generated names are.
            name: Some(format!("{}.flotilla.{:x}", r.key.name, now.as_nanosecond())),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(r.api_version.clone()),
            kind: Some(r.key.kind.as_str().to_string()),
            name: Some(r.key.name.clone()),
            namespace: (!r.key.namespace.is_empty()).then(|| r.key.namespace.clone()),
            uid: r.uid.clone(),
            ..Default::default()
        },
        reason: Some("Invalid".into()),
        message: Some(r.message.chars().take(1024).collect()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("flotilla-ingest".into()),
            host: None,
        }),
        reporting_component: Some("flotilla-ingest".into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    kube::Api::<Event>::namespaced(client, ns)
        .create(&Default::default(), &event)
        .await
        .map(|_| ())
}
