//! The derived state every replica folds from the log, in two forms:
//!
//! - [`State`]: the writer's. Owned by the state machine (no lock): it folds committed batches
//!   into the translator, keeps the stream position, the counters that prove exactly-once, the
//!   rejections, and a bounded history of which gateways changed at which revision.
//! - [`ReadState`]: what everybody else reads. An immutable snapshot published after every
//!   applied run of entries; it shares its maps with the writer (persistent maps), so publishing
//!   costs O(1) and a reader holding one never blocks the fold, nor sees half of one.
//!
//! Both are plain synchronous code: nothing here awaits.

use crate::types::{EventBatch, LogId, StoredMembership, StreamItem};
use flotilla_model::{cluster_of_subject, EventBody, ResourceEvent};
use flotilla_translate::{GatewayXds, Translator, TranslatorView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How many revisions with changes the history keeps. A watcher further behind than this gets
/// the full state instead of a delta. 4096 revisions is seconds to minutes of churn at the
/// target event rates, which covers an edge reconnecting after a blip, while costing only the
/// gateway ids of each change.
pub const HISTORY_LEN: usize = 4096;
/// How many rejections the state remembers (the count is kept forever). Enough to show an
/// operator what went wrong recently; bounded so a flood of garbage cannot grow the state.
pub const MAX_REJECTIONS: usize = 256;
/// How many stream epochs (sequence spaces) the state remembers the position of. A source that
/// comes back to a recent epoch (a store pointed at the wrong NATS for a while) resumes where
/// it was instead of folding the epoch again from its start.
pub const MAX_EPOCHS: usize = 16;

/// Gateways changed by one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
}

/// What a watcher must send to go from revision `since` to the current one.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    pub revision: u64,
    pub full_state: bool,
    pub gateways: Vec<Arc<GatewayXds>>,
    pub removed: Vec<String>,
}

/// A stream position (or run of positions) the state could not fold, and why. Recorded
/// identically on every replica (it is a function of the log), kept in snapshots, shown by the
/// API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// Stream sequence (the first of a run).
    pub seq: u64,
    /// The revision (log index) of the entry that carried it.
    pub revision: u64,
    /// The event's cluster and source, when the payload decoded that far.
    pub cluster: Option<String>,
    pub source: Option<String>,
    /// What it was: `upsert KEY`, `payload of N bytes`, `sequences A..=B`.
    pub what: String,
    pub reason: String,
}

/// Counters that prove exactly-once: compared with the stream's own message count, nothing
/// lost (`events_applied + sequences_missing` = messages) and nothing twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Raft log index of the last entry that consumed stream sequences.
    pub revision: u64,
    /// Stream messages consumed, each sequence once (folded or rejected).
    pub events_applied: u64,
    /// Of those, how many could not be folded (see [`Rejection`]).
    pub events_rejected: u64,
    /// Of the rejected, how many named another cluster in their envelope than the subject they
    /// were published on (the subject is what the NATS server authorized the publisher for).
    pub events_misattributed: u64,
    /// Sequences the stream no longer held when the store reached them.
    pub sequences_missing: u64,
    /// Batches refused whole because they did not continue the state's sequence.
    pub batches_refused: u64,
}

/// Where the state stands in the event stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The current sequence space (empty before the first batch).
    pub epoch: String,
    /// Last stream sequence folded in `epoch`.
    pub last_seq: u64,
    /// Earlier epochs and where they stood, most recent last (at most [`MAX_EPOCHS`] - 1).
    pub earlier: Vec<(String, u64)>,
}

impl Position {
    /// The last folded sequence of `epoch` (0 when never seen).
    pub fn last_seq_of(&self, epoch: &str) -> u64 {
        if epoch == self.epoch {
            return self.last_seq;
        }
        self.earlier
            .iter()
            .rev()
            .find(|(e, _)| e == epoch)
            .map_or(0, |(_, s)| *s)
    }

    /// Makes `epoch` current at `last_seq`, remembering the one it replaces.
    fn switch(&mut self, epoch: &str, last_seq: u64) {
        let old = std::mem::replace(&mut self.epoch, epoch.to_string());
        self.earlier.retain(|(e, _)| e != epoch && *e != old);
        if !old.is_empty() {
            self.earlier.push((old, self.last_seq));
        }
        while self.earlier.len() >= MAX_EPOCHS {
            self.earlier.remove(0);
        }
        self.last_seq = last_seq;
    }
}

/// The writer's state: see the module doc.
pub struct State {
    translator: Translator,
    position: Position,
    counters: Counters,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    history: imbl::Vector<Arc<Change>>,
    /// Every change in `(history_floor, revision]` is in `history`.
    history_floor: u64,
    rejections: imbl::Vector<Arc<Rejection>>,
}

impl Default for State {
    fn default() -> Self {
        Self::new(flotilla_translate::TranslateOptions::default())
    }
}

impl State {
    /// An empty state whose translator has `options` (every replica must be given the same).
    pub(crate) fn new(options: flotilla_translate::TranslateOptions) -> Self {
        Self {
            translator: Translator::with_options(options),
            position: Position::default(),
            counters: Counters::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            history: imbl::Vector::new(),
            history_floor: 0,
            rejections: imbl::Vector::new(),
        }
    }
}

/// Keys named by an event, for log lines and rejections.
pub(crate) fn event_keys(ev: &ResourceEvent) -> String {
    match &ev.body {
        EventBody::Upsert { key, .. } => format!("upsert {key}"),
        EventBody::Delete { key } => format!("delete {key}"),
        EventBody::Resync { keys, .. } => format!("resync of {} keys", keys.len()),
    }
}

/// What a snapshot holds besides the resources (see `state_machine`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub position: Position,
    pub counters: Counters,
    pub rejections: Vec<Rejection>,
}

impl State {
    /// Builds the state a snapshot describes: every resource is folded as an upsert (parsed by
    /// the translator like any event), then everything is translated once. A resource that no
    /// longer parses (it was accepted by an older version) is logged and left out, identically
    /// on every replica restoring the same snapshot.
    pub(crate) fn restore(
        last_applied: Option<LogId>,
        last_membership: StoredMembership,
        saved: Saved,
        resources: Vec<(
            flotilla_model::ResourceKey,
            serde_json::Value,
            Option<String>,
        )>,
        options: flotilla_translate::TranslateOptions,
    ) -> Self {
        let mut translator = Translator::with_options(options);
        let any = !resources.is_empty();
        let keys: Vec<String> = resources.iter().map(|(k, _, _)| k.to_string()).collect();
        let events = resources
            .into_iter()
            .map(|(key, raw, origin)| ResourceEvent {
                cluster: key.cluster.clone(),
                source: "snapshot".to_string(),
                body: EventBody::Upsert {
                    key,
                    object: raw,
                    origin,
                },
            })
            .collect();
        // Folded at once: the objects are parsed on every core.
        for (key, r) in keys.iter().zip(translator.apply_all(events)) {
            if let Err(e) = r {
                tracing::error!(%key, error = %e, "snapshot resource rejected on restore");
            }
        }
        if any {
            translator.recompute();
        }
        let revision = saved.counters.revision;
        Self {
            translator,
            position: saved.position,
            counters: saved.counters,
            last_applied,
            last_membership,
            history: imbl::Vector::new(),
            history_floor: revision,
            rejections: saved.rejections.into_iter().map(Arc::new).collect(),
        }
    }

    /// Applies an entry without events (blank or membership): nothing but the applied log id
    /// moves. Blank and membership entries come with every election and change no state, so
    /// the revision stays: a cluster restarted from disk comes back at exactly its revision.
    pub(crate) fn advance(&mut self, log_id: LogId, membership: Option<StoredMembership>) {
        self.last_applied = Some(log_id);
        if let Some(m) = membership {
            self.last_membership = m;
        }
    }

    /// Folds one batch entry. Deterministic: the same entries in the same order give the same
    /// state on every replica, refusals and rejections included.
    ///
    /// The stream's sequences are dense, and this is where that is enforced: a batch must
    /// continue the state's sequence (overlap with what is already folded is a redelivery and
    /// is skipped); a batch that starts past `last_seq + 1` is refused whole (nothing folded,
    /// `Some(reason)` returned) so that the leader repositions instead of the state skipping
    /// events.
    pub(crate) fn apply_batch(&mut self, log_id: LogId, batch: &EventBatch) -> Option<String> {
        self.last_applied = Some(log_id);
        if let Some(why) = malformed(batch) {
            return Some(self.refuse(log_id, batch, why));
        }
        let base = self.position.last_seq_of(&batch.epoch);
        if batch.first_seq > base.saturating_add(1) {
            let why = format!(
                "gap: the batch starts at sequence {} of epoch {:?}, the state is at {base}",
                batch.first_seq, batch.epoch
            );
            return Some(self.refuse(log_id, batch, why));
        }
        if batch.last_seq() <= base {
            // Entirely a redelivery: nothing to do (and no reason to switch epochs).
            return None;
        }
        if batch.epoch != self.position.epoch {
            if !self.position.epoch.is_empty() {
                tracing::warn!(
                    from = %self.position.epoch,
                    to = %batch.epoch,
                    resume_after = base,
                    "the event stream changed (a new sequence space); continuing in it"
                );
            }
            self.position.switch(&batch.epoch, base);
        }
        let mut consumed = false;
        // The translator's state before the batch, kept (O(1)) to get back to if translation
        // panics (see `translate_guarded`).
        let before = self.translator.view();
        let mut folded = Vec::new();
        for (seq, item) in batch.sequenced() {
            let last = self.position.last_seq;
            match item {
                StreamItem::Missing(n) => {
                    // `n - 1` first: a run may end at u64::MAX (`malformed` refused empty runs
                    // and batches past it).
                    let end = seq + (n - 1);
                    if end <= last {
                        continue;
                    }
                    let from = seq.max(last + 1);
                    consumed = true;
                    // Saturating: a damaged log may claim runs of 2^63 sequences, in several
                    // epochs.
                    self.counters.sequences_missing = self
                        .counters
                        .sequences_missing
                        .saturating_add(end - from + 1);
                    tracing::error!(
                        from,
                        end,
                        epoch = %batch.epoch,
                        "events lost: the stream no longer holds these sequences"
                    );
                    self.reject(Rejection {
                        seq: from,
                        revision: log_id.index,
                        cluster: None,
                        source: None,
                        what: format!("sequences {from}..={end}"),
                        reason: "no longer in the event stream (deleted or expired before the store consumed them)".into(),
                    });
                    self.position.last_seq = end;
                }
                StreamItem::Event { subject, payload } => {
                    if seq <= last {
                        continue;
                    }
                    consumed = true;
                    self.counters.events_applied += 1;
                    if self.fold(log_id.index, seq, subject, payload) {
                        folded.push((seq, payload.as_ref()));
                    }
                    self.position.last_seq = seq;
                }
            }
        }
        // Nothing consumed means nothing changed: neither the revision nor the translation
        // moves.
        if !consumed {
            return None;
        }
        self.counters.revision = log_id.index;
        let (updated, removed) = self.translate_guarded(log_id.index, &before, &folded);
        if updated.is_empty() && removed.is_empty() {
            return None;
        }
        self.history.push_back(Arc::new(Change {
            revision: log_id.index,
            updated,
            removed,
        }));
        while self.history.len() > HISTORY_LEN {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.revision;
            }
        }
        None
    }

    /// Decodes and folds one event published on `subject`; what cannot be is recorded, never
    /// fatal. Returns whether the event was folded. The translator takes the decoded event
    /// (no copy of its object); the rare paths that need it again (its rejection record, the
    /// isolation of a translation panic) decode the payload again.
    fn fold(&mut self, revision: u64, seq: u64, subject: &str, payload: &[u8]) -> bool {
        let ev: ResourceEvent = match serde_json::from_slice(payload) {
            Ok(ev) => ev,
            Err(e) => {
                self.counters.events_rejected += 1;
                tracing::warn!(seq, bytes = payload.len(), error = %e, "undecodable event rejected");
                self.reject(Rejection {
                    seq,
                    revision,
                    cluster: None,
                    source: None,
                    what: format!("payload of {} bytes", payload.len()),
                    reason: format!("not a valid event: {e}"),
                });
                return false;
            }
        };
        if let Some(reason) = misattribution(subject, &ev) {
            self.counters.events_rejected += 1;
            self.counters.events_misattributed += 1;
            let what = event_keys(&ev);
            tracing::warn!(seq, subject, cluster = %ev.cluster, source = %ev.source, keys = %what, "misattributed event rejected: its envelope names another cluster than its subject");
            self.reject(Rejection {
                seq,
                revision,
                cluster: Some(ev.cluster),
                source: Some(ev.source),
                what,
                reason,
            });
            return false;
        }
        let prior = self.translator.view();
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.translator.apply_owned(ev)
        }));
        let reason = match applied {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => {
                // The translator is half-way through the event: go back to before it.
                self.translator = Translator::rebuild(&prior).0;
                format!(
                    "the translator failed on this event: {}",
                    panic_text(&panic)
                )
            }
        };
        self.counters.events_rejected += 1;
        // The event went into the translator: decode it again to name it (it decoded once).
        let ev: Option<ResourceEvent> = serde_json::from_slice(payload).ok();
        let what = ev.as_ref().map(event_keys).unwrap_or_default();
        let (cluster, source) = ev.map(|e| (e.cluster, e.source)).unzip();
        tracing::warn!(seq, cluster = cluster.as_deref().unwrap_or_default(), source = source.as_deref().unwrap_or_default(), keys = %what, error = %reason, "event rejected");
        self.reject(Rejection {
            seq,
            revision,
            cluster,
            source,
            what,
            reason,
        });
        false
    }

    /// Translates what the batch changed. A translator bug that some input reaches (a panic)
    /// must not stop every replica for good (each would hit it again replaying the log): on a
    /// panic the translator is rebuilt from its state before the batch and the batch's events
    /// are folded again one at a time, each translated on its own; an event whose translation
    /// panics is rejected (recorded, identically everywhere: translation is deterministic) and
    /// the rest applies. Returns the gateways updated and removed.
    fn translate_guarded(
        &mut self,
        revision: u64,
        before: &TranslatorView,
        folded: &[(u64, &[u8])],
    ) -> (Vec<String>, Vec<String>) {
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.translator.recompute()));
        if let Ok(changes) = run {
            return (
                changes.updated.iter().map(|g| g.gateway.clone()).collect(),
                changes.removed,
            );
        }
        tracing::error!(
            revision,
            "translation panicked; isolating the event that causes it"
        );
        self.translator = Translator::rebuild(before).0;
        for &(seq, payload) in folded {
            // Folded once from these bytes, so they decode and apply again, identically.
            let Ok(ev) = serde_json::from_slice::<ResourceEvent>(payload) else {
                tracing::error!(
                    seq,
                    "a folded event no longer decodes; skipped in isolation"
                );
                continue;
            };
            let what = event_keys(&ev);
            let (cluster, source) = (ev.cluster.clone(), ev.source.clone());
            let good = self.translator.view();
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // Already validated and applied once: an error cannot happen the second time.
                let _ = self.translator.apply_owned(ev);
                self.translator.recompute();
            }));
            if let Err(panic) = step {
                self.translator = Translator::rebuild(&good).0;
                let reason = format!("translating this event failed: {}", panic_text(&panic));
                tracing::error!(seq, keys = %what, error = %reason, "event rejected");
                self.counters.events_rejected += 1;
                self.reject(Rejection {
                    seq,
                    revision,
                    cluster: Some(cluster),
                    source: Some(source),
                    what,
                    reason,
                });
            }
        }
        let after = self.translator.view();
        let mut updated = Vec::new();
        let mut removed = Vec::new();
        for d in before.gateways().diff(after.gateways()) {
            match d {
                imbl::ordmap::DiffItem::Add(id, _)
                | imbl::ordmap::DiffItem::Update { new: (id, _), .. } => updated.push(id.clone()),
                imbl::ordmap::DiffItem::Remove(id, _) => removed.push(id.clone()),
            }
        }
        (updated, removed)
    }

    /// Records a rejection (callers count it in the counter it belongs to).
    fn reject(&mut self, r: Rejection) {
        self.rejections.push_back(Arc::new(r));
        while self.rejections.len() > MAX_REJECTIONS {
            self.rejections.pop_front();
        }
    }

    fn refuse(&mut self, log_id: LogId, batch: &EventBatch, why: String) -> String {
        self.counters.batches_refused += 1;
        tracing::error!(
            index = log_id.index,
            epoch = %batch.epoch,
            first_seq = batch.first_seq,
            state_epoch = %self.position.epoch,
            state_last_seq = self.position.last_seq,
            reason = %why,
            "batch refused: it does not continue the event sequence"
        );
        why
    }

    pub fn revision(&self) -> u64 {
        self.counters.revision
    }

    pub fn position(&self) -> &Position {
        &self.position
    }

    /// The immutable view readers get. O(1) in the state's size.
    pub(crate) fn read_state(&self) -> ReadState {
        ReadState {
            view: self.translator.view(),
            position: self.position.clone(),
            counters: self.counters,
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            history: self.history.clone(),
            history_floor: self.history_floor,
            rejections: self.rejections.clone(),
        }
    }

    #[cfg(test)]
    pub(crate) fn translator(&self) -> &Translator {
        &self.translator
    }

    #[cfg(test)]
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    #[cfg(test)]
    pub(crate) fn history(&self) -> &imbl::Vector<Arc<Change>> {
        &self.history
    }
}

/// Why an event may not be folded as published on `subject`, if it may not: its envelope must
/// name the cluster of the subject, which is what the NATS server authorized its publisher for
/// (every key of the event belongs to the envelope's cluster: the translator checks that).
fn misattribution(subject: &str, ev: &ResourceEvent) -> Option<String> {
    match cluster_of_subject(subject) {
        Some(c) if c == ev.cluster => None,
        Some(c) => Some(format!(
            "misattributed: published on {subject} (cluster {c:?}) but the event names cluster {:?}",
            ev.cluster
        )),
        None => Some(format!(
            "misattributed: published on {subject:?}, which names no cluster (expected {}.<cluster>), but the event names cluster {:?}",
            flotilla_model::EVENTS_SUBJECT_PREFIX,
            ev.cluster
        )),
    }
}

/// The message of a caught panic.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

/// What a batch decoded from the log may hold that [`EventBatch::new`] would refuse (the log
/// comes from disk and from peers: the fold checks it again).
fn malformed(batch: &EventBatch) -> Option<String> {
    if batch.items.is_empty() {
        Some("an empty batch".into())
    } else if batch.first_seq == 0 {
        Some("a batch at sequence 0".into())
    } else if batch.items.iter().any(StreamItem::is_empty) {
        Some("a batch with an empty missing run".into())
    } else if batch.checked_last_seq().is_none() {
        // Its sequences would wrap around: folding it would count them wrongly (or panic).
        Some("a batch that runs past the largest stream sequence".into())
    } else {
        None
    }
}

/// The state at one applied entry, as readers see it: see the module doc. Cheap to clone.
#[derive(Clone, Default)]
pub struct ReadState {
    view: TranslatorView,
    position: Position,
    counters: Counters,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    history: imbl::Vector<Arc<Change>>,
    history_floor: u64,
    rejections: imbl::Vector<Arc<Rejection>>,
}

impl ReadState {
    /// Resources, statuses and translated gateways.
    pub fn view(&self) -> &TranslatorView {
        &self.view
    }

    /// Raft log index of the last applied entry that consumed stream sequences.
    pub fn revision(&self) -> u64 {
        self.counters.revision
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn position(&self) -> &Position {
        &self.position
    }

    /// The last stream sequence folded, in the current epoch.
    pub fn last_seq(&self) -> u64 {
        self.position.last_seq
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    pub fn last_membership(&self) -> &StoredMembership {
        &self.last_membership
    }

    /// The most recent rejections, oldest first.
    pub fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.rejections.iter().map(|r| &**r)
    }

    /// The oldest `since` revision a delta can be computed from.
    pub fn history_floor(&self) -> u64 {
        self.history_floor
    }

    pub(crate) fn saved(&self) -> Saved {
        Saved {
            position: self.position.clone(),
            counters: self.counters,
            rejections: self.rejections().cloned().collect(),
        }
    }

    /// Everything as of now.
    pub fn full_state(&self) -> Delta {
        Delta {
            revision: self.revision(),
            full_state: true,
            gateways: self.view.gateways().values().cloned().collect(),
            removed: Vec::new(),
        }
    }

    /// The gateways changed after `since`, each with its complete current resource set, or the
    /// full state when `since` is 0 or older than the history. `None` when nothing changed.
    pub fn delta_since(&self, since: u64) -> Option<Delta> {
        if since == 0 || since < self.history_floor {
            return Some(self.full_state());
        }
        if since >= self.revision() {
            return None;
        }
        let mut touched = BTreeSet::new();
        // History is sorted by revision: walk back from the newest.
        for change in self.history.iter().rev() {
            if change.revision <= since {
                break;
            }
            touched.extend(change.updated.iter().map(String::as_str));
            touched.extend(change.removed.iter().map(String::as_str));
        }
        if touched.is_empty() {
            return None;
        }
        let gateways = self.view.gateways();
        let mut delta = Delta {
            revision: self.revision(),
            ..Delta::default()
        };
        for id in touched {
            match gateways.get(id) {
                Some(g) => delta.gateways.push(g.clone()),
                None => delta.removed.push(id.to_string()),
            }
        }
        Some(delta)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
