//! The derived state every replica folds from the log: the translator (resources, statuses,
//! per-gateway xDS), the last applied stream sequence, the revision, and a bounded history of
//! which gateways changed at which revision (for watch deltas).
//!
//! This is a plain synchronous struct: it never awaits. The state machine holds it behind a
//! `std::sync::RwLock`, writes it in `apply`, and readers (watch streams, the API) take short
//! read locks and clone `Arc`s out.

use crate::types::{EventBatch, LogId, StoredMembership};
use flotilla_model::{EventBody, ResourceEvent};
use flotilla_translate::{GatewayXds, Translator};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// How many revisions with changes the history keeps. A watcher further behind than this gets
/// the full state instead of a delta. 4096 revisions is seconds to minutes of churn at the
/// target event rates, which covers an edge reconnecting after a blip, while costing only the
/// gateway ids of each change.
pub const HISTORY_LEN: usize = 4096;

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

/// The state machine's derived state at one revision.
pub struct StateView {
    translator: Translator,
    last_seq: u64,
    /// Events folded (each stream sequence at most once): compared with the stream's message
    /// count, it proves nothing was lost or applied twice.
    events_applied: u64,
    revision: u64,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    history: VecDeque<Change>,
    /// Every change in `(history_floor, revision]` is in `history`.
    history_floor: u64,
}

impl Default for StateView {
    fn default() -> Self {
        Self {
            translator: Translator::new(),
            last_seq: 0,
            events_applied: 0,
            revision: 0,
            last_applied: None,
            last_membership: StoredMembership::default(),
            history: VecDeque::new(),
            history_floor: 0,
        }
    }
}

/// Counters kept in snapshots besides the resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoredCounters {
    pub revision: u64,
    pub events_applied: u64,
}

/// Keys named by an event, for log lines.
pub(crate) fn event_keys(ev: &ResourceEvent) -> String {
    match &ev.body {
        EventBody::Upsert { key, .. } => format!("upsert {key}"),
        EventBody::Delete { key } => format!("delete {key}"),
        EventBody::Resync { keys, .. } => format!("resync of {} keys", keys.len()),
    }
}

impl StateView {
    /// The resource index and translated output.
    pub fn translator(&self) -> &Translator {
        &self.translator
    }

    /// The last stream sequence folded into this state.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Raft log index of the last applied entry that folded events. Blank and membership
    /// entries (one per leader election) change no state, so they do not move the revision: a
    /// cluster restarted from disk comes back at exactly the revision it had.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many events were folded into this state (duplicates by stream sequence excluded).
    pub fn events_applied(&self) -> u64 {
        self.events_applied
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    pub fn last_membership(&self) -> &StoredMembership {
        &self.last_membership
    }

    /// The oldest `since` revision a delta can be computed from.
    pub fn history_floor(&self) -> u64 {
        self.history_floor
    }

    /// Builds the state a snapshot describes. `resources` are `(cluster, raw object)`; each is
    /// folded as an upsert (the translator parses it with `flotilla_model::parse_object`), then
    /// everything is translated once.
    pub(crate) fn restore(
        last_applied: Option<LogId>,
        last_membership: StoredMembership,
        last_seq: u64,
        counters: RestoredCounters,
        resources: Vec<(flotilla_model::ResourceKey, serde_json::Value)>,
    ) -> Self {
        let mut translator = Translator::new();
        let any = !resources.is_empty();
        for (key, raw) in resources {
            let ev = ResourceEvent {
                cluster: key.cluster.clone(),
                source: "snapshot".to_string(),
                body: EventBody::Upsert {
                    key,
                    object: raw,
                    origin: None,
                },
            };
            if let Err(e) = translator.apply(&ev) {
                tracing::error!(keys = %event_keys(&ev), error = %e, "snapshot resource rejected on restore");
            }
        }
        if any {
            translator.recompute();
        }
        let revision = counters.revision;
        Self {
            translator,
            last_seq,
            events_applied: counters.events_applied,
            revision,
            last_applied,
            last_membership,
            history: VecDeque::new(),
            history_floor: revision,
        }
    }

    /// Applies an entry without events (blank or membership): nothing but the applied log id
    /// moves (see [`StateView::revision`]).
    pub(crate) fn advance(&mut self, log_id: LogId, membership: Option<StoredMembership>) {
        self.last_applied = Some(log_id);
        if let Some(m) = membership {
            self.last_membership = m;
        }
    }

    /// Folds one batch entry. Deterministic: same batches in the same order give the same
    /// state on every replica.
    pub(crate) fn apply_batch(&mut self, log_id: LogId, batch: &EventBatch) {
        let mut applied = 0usize;
        for (seq, ev) in &batch.events {
            // A new leader may re-read events an old leader already committed (it was acked
            // late or not at all): those are no-ops.
            if *seq <= self.last_seq {
                continue;
            }
            applied += 1;
            if let Err(e) = self.translator.apply(ev) {
                tracing::warn!(
                    seq,
                    cluster = %ev.cluster,
                    source = %ev.source,
                    keys = %event_keys(ev),
                    error = %e,
                    "event rejected"
                );
            }
        }
        self.last_seq = self.last_seq.max(batch.last_seq);
        self.last_applied = Some(log_id);
        // Nothing folded means nothing changed: neither the revision nor the translation moves.
        if applied == 0 {
            return;
        }
        self.events_applied += applied as u64;
        self.revision = log_id.index;
        let changes = self.translator.recompute();
        if changes.updated.is_empty() && changes.removed.is_empty() {
            return;
        }
        self.history.push_back(Change {
            revision: log_id.index,
            updated: changes.updated.iter().map(|g| g.gateway.clone()).collect(),
            removed: changes.removed,
        });
        while self.history.len() > HISTORY_LEN {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.revision;
            }
        }
    }

    /// Everything as of now.
    pub fn full_state(&self) -> Delta {
        Delta {
            revision: self.revision,
            full_state: true,
            gateways: self.translator.gateways().values().cloned().collect(),
            removed: Vec::new(),
        }
    }

    /// The gateways changed after `since`, each with its complete current resource set, or the
    /// full state when `since` is 0 or older than the history. `None` when nothing changed.
    pub fn delta_since(&self, since: u64) -> Option<Delta> {
        if since == 0 || since < self.history_floor {
            return Some(self.full_state());
        }
        if since >= self.revision {
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
        let gateways: &BTreeMap<String, Arc<GatewayXds>> = self.translator.gateways();
        let mut delta = Delta {
            revision: self.revision,
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

    #[cfg(test)]
    pub(crate) fn history(&self) -> &VecDeque<Change> {
        &self.history
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
