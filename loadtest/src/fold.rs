//! What the state should be: the fold of the agents' files (parsed exactly as an agent parses
//! them: `flotilla_model::parse_documents`; objects that fail to parse are not part of it),
//! its digest, and the digest a store reports (`/api/v1/digest`, or computed from
//! `/api/v1/resources` on stores that do not have that endpoint yet).

use flotilla_model::{parse_documents, state_digest, Kind, ResourceKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Files an agent reads: `.yaml`/`.yml`/`.json`, not hidden, not editor temp/backup files.
fn is_resource_file(name: &str) -> bool {
    if name.starts_with('.')
        || name.starts_with('#')
        || name.starts_with('~')
        || name.ends_with('~')
    {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => {
            !stem.is_empty()
                && ["yaml", "yml", "json"]
                    .iter()
                    .any(|e| ext.eq_ignore_ascii_case(e))
        }
        None => false,
    }
}

/// The ingest agent's limit on one file (larger files are refused).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Every object the files under `dir` define for `cluster`, by key. Walks in path order, so
/// when two files define one key the later path wins (the agent's rule is "last read wins";
/// the harness never writes such duplicates).
pub fn fold_dir(dir: &Path, cluster: &str) -> BTreeMap<ResourceKey, Value> {
    let mut files = Vec::new();
    walk(dir, "", &mut files);
    files.sort();
    let mut out = BTreeMap::new();
    for (rel, abs) in files {
        let Ok(meta) = std::fs::metadata(&abs) else {
            continue;
        };
        if meta.len() > MAX_FILE_BYTES {
            continue;
        }
        let Ok(bytes) = std::fs::read(&abs) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let (resources, _errors) = parse_documents(&rel, &text, cluster);
        for r in resources {
            out.insert(r.key, r.raw);
        }
    }
    out
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, std::path::PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), &child, out);
        } else if is_resource_file(&name) {
            out.push((child, e.path()));
        }
    }
}

/// (digest, resource count) of a key-ordered map.
pub fn digest(map: &BTreeMap<ResourceKey, Value>) -> (String, usize) {
    (state_digest(map.iter()), map.len())
}

/// A store's digest and where it came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoreDigest {
    pub revision: u64,
    pub digest: String,
    pub resources: usize,
    /// `digest` (the store's own endpoint) or `resources` (computed by the harness).
    pub source: &'static str,
}

/// The resource map a store's `/api/v1/resources` answer describes (computed status removed).
pub fn resources_from_list(v: &Value) -> Result<BTreeMap<ResourceKey, Value>, String> {
    let items = v["items"]
        .as_array()
        .ok_or_else(|| "no items in /api/v1/resources".to_string())?;
    let mut out = BTreeMap::new();
    for it in items {
        let cluster = it["cluster"].as_str().unwrap_or_default();
        let mut obj = it["object"].clone();
        let kind_s = obj["kind"].as_str().unwrap_or_default();
        let kind = Kind::parse(kind_s).ok_or_else(|| format!("unknown kind {kind_s:?}"))?;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = if kind.cluster_scoped() {
            String::new()
        } else {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        out.insert(ResourceKey::new(cluster, kind, namespace, name), obj);
    }
    Ok(out)
}

/// Keys that differ between what a replica holds and the expected fold: up to `max` named,
/// as `missing KEY` (expected, not held), `extra KEY` (held, not expected), `differs KEY`.
pub fn key_diff(
    held: &BTreeMap<ResourceKey, Value>,
    expected: &BTreeMap<ResourceKey, Value>,
    max: usize,
) -> (usize, Vec<String>) {
    let mut out = Vec::new();
    let mut n = 0;
    let mut note = |s: String| {
        n += 1;
        if out.len() < max {
            out.push(s);
        }
    };
    for (k, v) in expected {
        match held.get(k) {
            None => note(format!("missing {k}")),
            Some(h) if h != v => note(format!("differs {k}")),
            _ => {}
        }
    }
    for k in held.keys() {
        if !expected.contains_key(k) {
            note(format!("extra {k}"));
        }
    }
    (n, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fold_follows_the_agent_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("sub")).unwrap();
        std::fs::write(
            p.join("a.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap();
        // Hidden, backup, wrong extension, not UTF-8: ignored.
        std::fs::write(
            p.join(".h.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: h}\n",
        )
        .unwrap();
        std::fs::write(
            p.join("b.yaml~"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            p.join("c.txt"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: c}\n",
        )
        .unwrap();
        std::fs::write(p.join("d.yaml"), b"\xff\xfe").unwrap();
        // One good and one bad document: the good one counts.
        std::fs::write(
            p.join("sub/e.yml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e, namespace: x}\n---\nkind: Nope\n",
        )
        .unwrap();
        let m = fold_dir(p, "east");
        let keys: Vec<String> = m.keys().map(ToString::to_string).collect();
        assert_eq!(keys, vec!["east/Service/default/s", "east/ConfigMap/x/e"]);
        // The namespace the key got is written back into the object, as the agent does.
        let svc = m.values().next().unwrap();
        assert_eq!(svc["metadata"]["namespace"], "default");
        let (d1, n) = digest(&m);
        assert_eq!(n, 2);
        assert_eq!(d1.len(), 64);
    }

    #[test]
    fn store_listing_maps_back_to_the_fold() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\nspec: {controllerName: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap();
        let fold = fold_dir(d.path(), "east");
        let items: Vec<Value> = fold
            .iter()
            .map(|(k, v)| {
                let mut o = v.clone();
                o["status"] = json!({"conditions": []});
                json!({"cluster": k.cluster, "object": o})
            })
            .collect();
        let back = resources_from_list(&json!({"revision": 3, "items": items})).unwrap();
        assert_eq!(digest(&back), digest(&fold));
        assert_eq!(key_diff(&back, &fold, 5), (0, vec![]));
        let mut less = back.clone();
        let first = less.keys().next().cloned().unwrap();
        less.remove(&first);
        let (n, d) = key_diff(&less, &fold, 5);
        assert_eq!((n, d), (1, vec![format!("missing {first}")]));
    }
}
