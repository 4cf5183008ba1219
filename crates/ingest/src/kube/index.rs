//! The Kubernetes index: what the cluster holds, what has been published, and which Secrets
//! are referenced. Synchronous and IO-free, like the file source's index: the driver feeds
//! it watcher events ([`KubeIndex::apply`], [`KubeIndex::delete`], [`KubeIndex::init`],
//! [`KubeIndex::init_apply`], [`KubeIndex::init_done`], [`KubeIndex::gone`]) and it answers
//! with the events to publish.
//!
//! ## Per-kind resync (how a relist never loses a deletion, nor deletes another kind)
//! Every upsert names its kind as its origin: `kube/<group>/<Kind>` (`core` for the core
//! group, see [`origin`]). When a kind's listing completes (`InitDone`: at start, after a
//! 410 Expired, after any restart of its watch) the index publishes
//! `Resync { keys: the keys of that kind it publishes, keep_origins: every other kind's
//! origin }`. The store deletes each key of the cluster that is not in `keys` unless its origin
//! is kept, so exactly the objects of *that* kind that vanished are deleted, whether this
//! process saw them or a previous life of the agent published them; the objects of every
//! other kind are kept (their origin is listed). Within one life the index also publishes an
//! explicit Delete for each object it had that the relist lacks, so the Secrets those objects
//! referenced are released in the same step.
//!
//! A kind that is not served (its CRD is not installed, or was deleted) is "listed empty":
//! its resync deletes every object of that kind the store still holds.
//!
//! ## Secrets
//! A Secret is published only while some published object of this cluster references it
//! ([`secret_refs`]): Gateway certificateRefs, BackendTLSPolicy/ClientTrafficPolicy CA and
//! client certificate refs, HTTPRouteFilter credential injection, and any ref naming
//! `kind: Secret`. A new reference publishes it (before the referring object, so a listener
//! never sees its certificate missing); the last reference gone deletes it. The Secret kind's
//! resync waits until every other kind's first listing is done, so a restart never deletes a
//! referenced Secret from the store for the time the referrers take to be listed.
//! ConfigMaps are all shipped: they hold no credentials, and several refs to them default
//! their kind (CA bundles, response bodies, Lua/Wasm sources).
//!
//! ## Churn
//! Objects are stripped ([`strip`]) of what changes without changing meaning
//! (`resourceVersion`, `managedFields`, kubectl's last-applied annotation, and the status of
//! kinds whose status Flotilla or other controllers compute), and an object whose stripped
//! form is unchanged publishes nothing: Flotilla's own status write-back never echoes back.

use crate::IngestStats;
use flotilla_model::{parse_object, EventBody, Kind, ResourceKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

type Hash = [u8; 32];

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Fields whose refs name a Secret when they give no `kind` (their API defaults it).
const SECRET_DEFAULT_FIELDS: &[&str] = &[
    "certificateRefs",
    "caCertificateRefs",
    "clientCertificateRef",
    "refs",
    "valueRef",
    "clientSecret",
    "credentialRefs",
    "secretRef",
    "users",
];

/// The origin of every object of `kind` (see the module doc).
pub(crate) fn origin(kind: Kind) -> String {
    let group = match kind.group() {
        "" => "core",
        g => g,
    };
    format!("kube/{group}/{kind}")
}

/// Whether the status of `kind` is computed by Flotilla (Gateway API, Envoy Gateway) or by
/// another controller (the MCS controller), and read by nobody here: it is dropped.
fn status_is_derived(kind: Kind) -> bool {
    matches!(
        kind.group(),
        flotilla_model::GATEWAY_GROUP | flotilla_model::EG_GROUP | "multicluster.x-k8s.io"
    )
}

/// Drops what changes without changing what the translator reads (see the module doc).
pub(crate) fn strip(kind: Kind, obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
        let empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(LAST_APPLIED);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            meta.remove("annotations");
        }
    }
    if status_is_derived(kind) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
}

/// The Secrets `obj` (of `kind`, in `namespace`) references, as (namespace, name).
pub(crate) fn secret_refs(kind: Kind, namespace: &str, obj: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    if matches!(
        kind,
        Kind::Secret | Kind::ConfigMap | Kind::EndpointSlice | Kind::Namespace | Kind::Service
    ) {
        return out;
    }
    if let Some(spec) = obj.get("spec") {
        walk_refs(spec, None, namespace, &mut out);
    }
    out
}

fn walk_refs(v: &Value, field: Option<&str>, ns: &str, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m.get("name").and_then(Value::as_str) {
                let group = m.get("group").and_then(Value::as_str).unwrap_or("");
                let is_secret = group.is_empty()
                    && match m.get("kind").and_then(Value::as_str) {
                        Some(k) => k == "Secret",
                        None => field.is_some_and(|f| SECRET_DEFAULT_FIELDS.contains(&f)),
                    };
                if is_secret && !name.is_empty() {
                    let rns = m
                        .get("namespace")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .unwrap_or(ns);
                    out.insert((rns.to_string(), name.to_string()));
                }
            }
            for (k, child) in m {
                walk_refs(child, Some(k), ns, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_refs(item, field, ns, out);
            }
        }
        _ => {}
    }
}

fn hash(v: &Value) -> Hash {
    // serde_json's map is ordered, so equal objects serialize to equal bytes.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

/// The key of `obj` of `kind` (before parsing: also for objects that do not parse).
fn key_of(cluster: &str, kind: Kind, obj: &Value) -> Option<ResourceKey> {
    let meta = obj.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = if kind.cluster_scoped() {
        ""
    } else {
        meta.get("namespace").and_then(Value::as_str).unwrap_or("")
    };
    Some(ResourceKey::new(cluster, kind, ns, name))
}

/// An object accepted by the parser, stripped.
#[derive(Clone, Debug)]
struct Accepted {
    object: Value,
    hash: Hash,
}

/// An object of the cluster that does not parse: what its Warning Event says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub key: ResourceKey,
    pub api_version: String,
    pub uid: Option<String>,
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct KubeIndex {
    cluster: String,
    /// Objects that did not parse, to be reported as Warning Events (taken by the source).
    rejections: Vec<Rejection>,
    /// The message last reported for each object that does not parse.
    told: BTreeMap<ResourceKey, String>,
    /// Every object the watchers report, by key: `Some` when it parsed, `None` when not
    /// (then the last accepted version, if any, stays published: better stale than gone).
    seen: BTreeMap<ResourceKey, Option<Accepted>>,
    /// What the store has from this agent: key → hash of the published object.
    published: BTreeMap<ResourceKey, Hash>,
    /// Referrer → the Secrets it references (only objects whose refs are non-empty).
    refs: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Secret → how many referrers.
    referenced: BTreeMap<ResourceKey, usize>,
    /// Kinds in a listing (after `Init`, before `InitDone`): the objects listed so far.
    listing: BTreeMap<Kind, Vec<Value>>,
    /// Kinds whose watcher started and whose first listing is not done yet.
    initial: BTreeSet<Kind>,
    /// The Secret kind's resync waits for the other kinds' first listings.
    secret_resync_due: bool,
}

impl KubeIndex {
    pub(crate) fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            seen: BTreeMap::new(),
            published: BTreeMap::new(),
            refs: BTreeMap::new(),
            referenced: BTreeMap::new(),
            listing: BTreeMap::new(),
            initial: BTreeSet::new(),
            secret_resync_due: false,
            rejections: Vec::new(),
            told: BTreeMap::new(),
        }
    }

    /// The objects found not to parse since the last call, each once per message.
    pub(crate) fn take_rejections(&mut self) -> Vec<Rejection> {
        std::mem::take(&mut self.rejections)
    }

    /// A watcher for `kind` starts: its first listing is awaited before the Secrets' resync.
    pub(crate) fn watch_started(&mut self, kind: Kind) {
        self.initial.insert(kind);
    }

    /// An object was added or changed.
    pub(crate) fn apply(
        &mut self,
        kind: Kind,
        mut obj: Value,
        stats: &IngestStats,
        out: &mut Vec<EventBody>,
    ) {
        strip(kind, &mut obj);
        let Some(key) = key_of(&self.cluster, kind, &obj) else {
            tracing::warn!(%kind, "object without metadata.name skipped");
            stats.add_parse_errors(1);
            return;
        };
        // Named in a Warning Event if it does not parse (read before the parse takes it).
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let uid = obj["metadata"]["uid"].as_str().map(str::to_string);
        let accepted = match parse_object(&self.cluster, obj) {
            Ok(r) if r.key == key => Some(Accepted {
                hash: hash(&r.raw),
                object: r.raw,
            }),
            Ok(r) => {
                tracing::warn!(%kind, expected = %key, parsed = %r.key, "object skipped: its kind or name does not match the watch it came from");
                stats.add_parse_errors(1);
                None
            }
            Err(e) => {
                tracing::warn!(
                    %kind,
                    object = %object_name(&key),
                    field = e.field.as_deref().unwrap_or(""),
                    error = %e.message,
                    "object skipped: it does not parse (the last accepted version, if any, stays)"
                );
                stats.add_parse_errors(1);
                let message = match e.field.as_deref() {
                    Some(f) => format!("not accepted by Flotilla: {f}: {}", e.message),
                    None => format!("not accepted by Flotilla: {}", e.message),
                };
                // Told once per message: a relist of the same bad object says nothing new.
                if self.told.get(&key) != Some(&message) {
                    self.told.insert(key.clone(), message.clone());
                    self.rejections.push(Rejection {
                        key: key.clone(),
                        api_version,
                        uid,
                        message,
                    });
                }
                None
            }
        };
        if accepted.is_some() {
            self.told.remove(&key);
        }
        let Some(acc) = accepted else {
            // Keep the last accepted version (it stays published); remember the object is
            // there either way (a resync keeps its key).
            self.seen.entry(key).or_insert(None);
            return;
        };
        self.seen.insert(key.clone(), Some(acc.clone()));
        if kind == Kind::Secret {
            self.settle_secret(&key, out);
            return;
        }
        let new_refs: BTreeSet<ResourceKey> = secret_refs(kind, &key.namespace, &acc.object)
            .into_iter()
            .map(|(ns, name)| ResourceKey::new(&self.cluster, Kind::Secret, ns, name))
            .collect();
        let old_refs = self.refs.remove(&key).unwrap_or_default();
        // Make before break: Secrets newly referenced go first, then the object, then the
        // Secrets it no longer references.
        for s in new_refs.difference(&old_refs) {
            *self.referenced.entry(s.clone()).or_default() += 1;
            self.settle_secret(s, out);
        }
        self.publish(&key, &acc, out);
        for s in old_refs.difference(&new_refs) {
            self.unref(s, out);
        }
        if !new_refs.is_empty() {
            self.refs.insert(key, new_refs);
        }
    }

    /// An object was deleted.
    pub(crate) fn delete(&mut self, kind: Kind, obj: &Value, out: &mut Vec<EventBody>) {
        if let Some(key) = key_of(&self.cluster, kind, obj) {
            self.delete_key(&key, out);
        }
    }

    fn delete_key(&mut self, key: &ResourceKey, out: &mut Vec<EventBody>) {
        self.seen.remove(key);
        self.told.remove(key);
        if key.kind == Kind::Secret {
            self.settle_secret(key, out);
            return;
        }
        if self.published.remove(key).is_some() {
            out.push(EventBody::Delete { key: key.clone() });
        }
        for s in self.refs.remove(key).unwrap_or_default() {
            self.unref(&s, out);
        }
    }

    /// A listing of `kind` starts (the watcher's `Init`).
    pub(crate) fn init(&mut self, kind: Kind) {
        self.listing.insert(kind, Vec::new());
    }

    /// An object of the listing of `kind`.
    pub(crate) fn init_apply(&mut self, kind: Kind, obj: Value) {
        self.listing.entry(kind).or_default().push(obj);
    }

    /// The listing of `kind` is complete: what it lacks is deleted, then the kind's resync.
    pub(crate) fn init_done(&mut self, kind: Kind, stats: &IngestStats, out: &mut Vec<EventBody>) {
        let listed = self.listing.remove(&kind).unwrap_or_default();
        let mut keys = BTreeSet::new();
        for obj in listed {
            if let Some(k) = key_of(&self.cluster, kind, &obj) {
                keys.insert(k);
            }
            self.apply(kind, obj, stats, out);
        }
        let vanished: Vec<ResourceKey> = self
            .seen
            .keys()
            .filter(|k| k.kind == kind && !keys.contains(k))
            .cloned()
            .collect();
        for k in &vanished {
            self.delete_key(k, out);
        }
        self.initial.remove(&kind);
        if kind == Kind::Secret {
            self.secret_resync_due = true;
        } else {
            out.push(self.resync(kind));
        }
        if self.secret_resync_due && self.initial.iter().all(|k| *k == Kind::Secret) {
            self.secret_resync_due = false;
            out.push(self.resync(Kind::Secret));
        }
    }

    /// `kind` is not served (its CRD is missing or was removed): everything of it goes.
    pub(crate) fn gone(&mut self, kind: Kind, stats: &IngestStats, out: &mut Vec<EventBody>) {
        self.init(kind);
        self.init_done(kind, stats, out);
    }

    /// The resync of one kind (see the module doc).
    fn resync(&self, kind: Kind) -> EventBody {
        let keys: Vec<ResourceKey> = if kind == Kind::Secret {
            self.published
                .keys()
                .filter(|k| k.kind == kind)
                .cloned()
                .collect()
        } else {
            // Published keys, and objects that do not parse now: what a previous life of the
            // agent published for them stays.
            self.seen
                .keys()
                .filter(|k| k.kind == kind)
                .chain(self.published.keys().filter(|k| k.kind == kind))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let keep_origins = Kind::ALL
            .into_iter()
            .filter(|k| *k != kind)
            .map(origin)
            .collect();
        EventBody::Resync { keys, keep_origins }
    }

    fn unref(&mut self, secret: &ResourceKey, out: &mut Vec<EventBody>) {
        if let Some(n) = self.referenced.get_mut(secret) {
            *n -= 1;
            if *n == 0 {
                self.referenced.remove(secret);
            }
        }
        self.settle_secret(secret, out);
    }

    /// Publishes a Secret while it exists and is referenced; deletes it otherwise.
    fn settle_secret(&mut self, key: &ResourceKey, out: &mut Vec<EventBody>) {
        let wanted = match (self.seen.get(key), self.referenced.contains_key(key)) {
            (Some(Some(acc)), true) => Some(acc.clone()),
            _ => None,
        };
        match wanted {
            Some(acc) => self.publish(key, &acc, out),
            None => {
                if self.published.remove(key).is_some() {
                    out.push(EventBody::Delete { key: key.clone() });
                }
            }
        }
    }

    fn publish(&mut self, key: &ResourceKey, acc: &Accepted, out: &mut Vec<EventBody>) {
        if self.published.get(key) == Some(&acc.hash) {
            return;
        }
        self.published.insert(key.clone(), acc.hash);
        out.push(EventBody::Upsert {
            key: key.clone(),
            object: acc.object.clone(),
            origin: Some(origin(key.kind)),
        });
    }

    /// Distinct keys currently published.
    pub(crate) fn object_count(&self) -> usize {
        self.published.len()
    }
}

fn object_name(key: &ResourceKey) -> String {
    if key.namespace.is_empty() {
        key.name.clone()
    } else {
        format!("{}/{}", key.namespace, key.name)
    }
}
