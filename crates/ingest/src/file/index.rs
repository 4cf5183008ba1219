//! The file index: which file defines which keys, and what has been published for each key.
//! Synchronous and IO-free: the driver reads files and feeds the results in with
//! [`FileIndex::apply`]; the index answers with the events that make the published state
//! follow the files.
//!
//! Rules:
//! - A file's record is its last *accepted* version. A read where every document parsed
//!   replaces it; a read where some document failed only adds/updates (keys the file
//!   produced before are kept: nothing accepted is lost); an unreadable file keeps it whole.
//! - A key is published once, owned by one file. When a second file defines the key with
//!   different content (or newly), it takes over (the last one read wins, with a warning
//!   naming both files). Re-reading an unchanged file changes nothing.
//! - When a file stops defining a key (edited, deleted, renamed away) the key is deleted only
//!   if no other file defines it; otherwise the other file's version is published.

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
    /// The file exists but could not be read; the message says why.
    Unreadable(String),
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
    /// Every file whose record holds the key (the owner included).
    definers: BTreeMap<ResourceKey, BTreeSet<String>>,
}

impl FileIndex {
    /// Folds one read of `path` in, appending the events to publish to `out`.
    pub(crate) fn apply(&mut self, path: &str, read: FileRead, out: &mut Vec<EventBody>) {
        match read {
            FileRead::Unreadable(_) => {
                // Keep what the file produced before; only remember it is unhealthy.
                self.files.entry(path.to_string()).or_default().healthy = false;
            }
            FileRead::Missing => {
                if let Some(record) = self.files.remove(path) {
                    for key in record.objects.into_keys() {
                        self.undefine(path, &key, out);
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
                for (key, entry) in &new {
                    self.define(path, key, entry, old.get(key), out);
                }
                let mut objects = new;
                if complete {
                    for key in old.into_keys() {
                        if !objects.contains_key(&key) {
                            self.undefine(path, &key, out);
                        }
                    }
                } else {
                    for (key, entry) in old {
                        objects.entry(key).or_insert(entry);
                    }
                }
                self.files.insert(
                    path.to_string(),
                    FileRecord {
                        objects,
                        healthy: complete,
                    },
                );
            }
        }
    }

    fn define(
        &mut self,
        path: &str,
        key: &ResourceKey,
        entry: &Entry,
        before: Option<&Entry>,
        out: &mut Vec<EventBody>,
    ) {
        self.definers
            .entry(key.clone())
            .or_default()
            .insert(path.to_string());
        let unchanged_here = before.is_some_and(|b| b.hash == entry.hash);
        let upsert = || EventBody::Upsert {
            key: key.clone(),
            object: (*entry.object).clone(),
            origin: None,
        };
        match self.published.get_mut(key) {
            None => {
                self.published.insert(
                    key.clone(),
                    Published {
                        owner: path.to_string(),
                        hash: entry.hash,
                    },
                );
                out.push(upsert());
            }
            // This file says what it said before: whoever owns the key keeps it.
            Some(_) if unchanged_here => {}
            Some(p) => {
                if p.owner != path {
                    tracing::warn!(
                        key = %key,
                        file = path,
                        other_file = %p.owner,
                        "object defined in two files; the last one read wins"
                    );
                    p.owner = path.to_string();
                }
                if p.hash != entry.hash {
                    p.hash = entry.hash;
                    out.push(upsert());
                }
            }
        }
    }

    /// `path` no longer defines `key` (its record has already been updated or removed).
    fn undefine(&mut self, path: &str, key: &ResourceKey, out: &mut Vec<EventBody>) {
        let others = match self.definers.get_mut(key) {
            Some(set) => {
                set.remove(path);
                set.clone()
            }
            None => BTreeSet::new(),
        };
        if others.is_empty() {
            self.definers.remove(key);
        }
        let Some(p) = self.published.get_mut(key) else {
            return;
        };
        if p.owner != path {
            return;
        }
        // Deterministic pick among the remaining definers: the last path in order.
        let fallback = others.iter().next_back().and_then(|other| {
            let entry = self.files.get(other)?.objects.get(key)?;
            Some((other.clone(), entry.clone()))
        });
        match fallback {
            Some((other, entry)) => {
                tracing::info!(key = %key, file = path, still_in = %other, "object removed from one file but still defined in another");
                p.owner = other;
                if p.hash != entry.hash {
                    p.hash = entry.hash;
                    out.push(EventBody::Upsert {
                        key: key.clone(),
                        object: (*entry.object).clone(),
                        origin: None,
                    });
                }
            }
            None => {
                self.published.remove(key);
                out.push(EventBody::Delete { key: key.clone() });
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
}
