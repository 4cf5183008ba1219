//! The file index: which file defines which keys, and what has been published for each key.
//! Synchronous and IO-free: the driver reads files and feeds the results in with
//! [`FileIndex::apply`]; the index answers with the events that make the published state
//! follow the files.
//!
//! Rules:
//! - A file's record is its last *accepted* version. A read where every document parsed
//!   replaces it; a read where some document failed only adds/updates (keys the file
//!   produced before are kept: nothing accepted is lost); an unreadable file keeps it whole.
//! - A key is published once, owned by one file: among the files whose records define it, the
//!   first path in lexicographic order ('/'-separated, relative). The owner depends only on
//!   which files define the key, never on the order they were read in, so a restart, a
//!   rescan or an edit of the other file never flips the served object. While more than one
//!   file defines a key, a warning names the key and the files (once per change of that set)
//!   and [`FileIndex::conflict_count`] counts it. Re-reading an unchanged file changes nothing.
//! - When the owner stops defining a key (edited, deleted, renamed away) the next file in
//!   order takes over and its version is published; the key is deleted only when no file
//!   defines it any more.
//! - Every upsert names its owner as the object's origin, so the store knows which file an
//!   object came from (a resync keeps the objects of files that are not fully accepted). An
//!   owner change alone therefore publishes an upsert, even when the content is the same.

use flotilla_model::{EventBody, ParseError, Resource, ResourceKey};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What reading one file produced.
#[derive(Debug)]
pub(crate) enum FileRead {
    /// The file was read; `errors` lists the documents that did not parse.
    Parsed {
        resources: Vec<Resource>,
        errors: Vec<ParseError>,
    },
    /// The file is gone (deleted, renamed away, no longer a YAML/JSON file).
    Missing,
    /// The file exists but could not be read (an IO error: permissions, too many open
    /// files...); the message says why. It may work next time: the driver retries it.
    Unreadable(String),
    /// The file was read but cannot be accepted as a whole (too large, not UTF-8); the
    /// message says why. Only a change of the file can help.
    Refused(String),
}

type Hash = [u8; 32];

#[derive(Clone, Debug)]
struct Entry {
    hash: Hash,
    /// Kept so that when the owning file drops a key, another file's version can be
    /// published without reading that file again.
    object: Arc<serde_json::Value>,
}

impl Entry {
    fn new(object: serde_json::Value) -> Self {
        // serde_json's map is ordered, so equal objects serialize to equal bytes.
        let bytes = serde_json::to_vec(&object).unwrap_or_default();
        Self {
            hash: Sha256::digest(&bytes).into(),
            object: Arc::new(object),
        }
    }
}

#[derive(Debug, Default)]
struct FileRecord {
    objects: BTreeMap<ResourceKey, Entry>,
    /// The last read was fully accepted (readable, every document parsed).
    healthy: bool,
}

#[derive(Debug)]
struct Published {
    owner: String,
    hash: Hash,
}

#[derive(Debug, Default)]
pub(crate) struct FileIndex {
    /// Keyed by the path relative to the watched directory, '/'-separated.
    files: BTreeMap<String, FileRecord>,
    published: BTreeMap<ResourceKey, Published>,
    /// Every file whose record holds the key; the first one owns it.
    definers: BTreeMap<ResourceKey, BTreeSet<String>>,
    /// Keys with more than one definer.
    conflicts: usize,
}

/// One warning per change of a contested key's definers (not per read): names the key, the
/// file that wins and the ones that are ignored.
fn warn_conflict(key: &ResourceKey, definers: &BTreeSet<String>) {
    let mut files = definers.iter();
    let Some(winner) = files.next() else {
        return;
    };
    let ignored: Vec<&str> = files.map(String::as_str).collect();
    if !ignored.is_empty() {
        tracing::warn!(
            key = %key,
            file = %winner,
            ignored = ?ignored,
            "object defined in more than one file; the first path in order is published"
        );
    }
}

impl FileIndex {
    /// Folds one read of `path` in, appending the events to publish to `out`.
    pub(crate) fn apply(&mut self, path: &str, read: FileRead, out: &mut Vec<EventBody>) {
        match read {
            FileRead::Unreadable(_) | FileRead::Refused(_) => {
                // Keep what the file produced before; only remember it is unhealthy.
                self.files.entry(path.to_string()).or_default().healthy = false;
            }
            FileRead::Missing => {
                if let Some(record) = self.files.remove(path) {
                    for key in record.objects.into_keys() {
                        self.remove_definer(path, &key);
                        self.settle(&key, out);
                    }
                }
            }
            FileRead::Parsed { resources, errors } => {
                let complete = errors.is_empty();
                let mut new: BTreeMap<ResourceKey, Entry> = BTreeMap::new();
                for r in resources {
                    let entry = Entry::new(r.raw);
                    if new.insert(r.key.clone(), entry).is_some() {
                        tracing::warn!(file = path, key = %r.key, "object defined twice in the same file; the later document wins");
                    }
                }
                let old = self
                    .files
                    .remove(path)
                    .map(|r| r.objects)
                    .unwrap_or_default();
                let defined: Vec<ResourceKey> = new.keys().cloned().collect();
                let mut dropped = Vec::new();
                let mut objects = new;
                for (key, entry) in old {
                    if objects.contains_key(&key) {
                        continue;
                    }
                    if complete {
                        dropped.push(key);
                    } else {
                        objects.insert(key, entry);
                    }
                }
                // The record goes in first: settling a key reads every definer's entry,
                // this file's included.
                self.files.insert(
                    path.to_string(),
                    FileRecord {
                        objects,
                        healthy: complete,
                    },
                );
                for key in &defined {
                    self.add_definer(path, key);
                    self.settle(key, out);
                }
                for key in &dropped {
                    self.remove_definer(path, key);
                    self.settle(key, out);
                }
            }
        }
    }

    fn add_definer(&mut self, path: &str, key: &ResourceKey) {
        let set = self.definers.entry(key.clone()).or_default();
        if set.insert(path.to_string()) {
            if set.len() == 2 {
                self.conflicts += 1;
            }
            warn_conflict(key, set);
        }
    }

    fn remove_definer(&mut self, path: &str, key: &ResourceKey) {
        let Some(set) = self.definers.get_mut(key) else {
            return;
        };
        if !set.remove(path) {
            return;
        }
        match set.len() {
            0 => {
                self.definers.remove(key);
            }
            1 => {
                self.conflicts -= 1;
                let only = set.first().map(String::as_str).unwrap_or_default();
                tracing::info!(key = %key, file = only, gone_from = path, "object now defined in one file only");
            }
            _ => warn_conflict(key, set),
        }
    }

    /// Publishes what the definers of `key` now say: the first file's version, or a delete
    /// when none is left. Nothing when that is what was published last.
    fn settle(&mut self, key: &ResourceKey, out: &mut Vec<EventBody>) {
        let winner = self.definers.get(key).and_then(|set| {
            let owner = set.first()?;
            let entry = self.files.get(owner)?.objects.get(key)?;
            Some((owner.clone(), entry.clone()))
        });
        match winner {
            None => {
                if self.published.remove(key).is_some() {
                    out.push(EventBody::Delete { key: key.clone() });
                }
            }
            Some((owner, entry)) => {
                let current = self.published.get(key);
                if current.is_some_and(|p| p.owner == owner && p.hash == entry.hash) {
                    return;
                }
                out.push(EventBody::Upsert {
                    key: key.clone(),
                    object: (*entry.object).clone(),
                    origin: Some(owner.clone()),
                });
                self.published.insert(
                    key.clone(),
                    Published {
                        owner,
                        hash: entry.hash,
                    },
                );
            }
        }
    }

    /// Every published key, in order: the body of a resync.
    pub(crate) fn keys(&self) -> Vec<ResourceKey> {
        self.published.keys().cloned().collect()
    }

    /// Files whose last read was not fully accepted.
    pub(crate) fn unhealthy_files(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .filter(|(_, r)| !r.healthy)
            .map(|(p, _)| p.as_str())
    }

    /// Tracked paths equal to `prefix` or below it (`prefix` = "" means all).
    pub(crate) fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.files
            .range(prefix.to_string()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(prefix))
            .filter(|p| {
                prefix.is_empty() || p.len() == prefix.len() || p[prefix.len()..].starts_with('/')
            })
            .cloned()
            .collect()
    }

    pub(crate) fn file_count(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn object_count(&self) -> usize {
        self.published.len()
    }

    /// The file whose version of `key` is published.
    #[cfg(test)]
    pub(crate) fn published_owner(&self, key: &ResourceKey) -> Option<&str> {
        self.published.get(key).map(|p| p.owner.as_str())
    }

    /// Keys defined by more than one file.
    pub(crate) fn conflict_count(&self) -> usize {
        self.conflicts
    }
}
