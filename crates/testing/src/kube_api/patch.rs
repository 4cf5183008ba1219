//! Patches and field ownership: JSON merge patch (RFC 7386), the `managedFields` bookkeeping
//! of every write, and server-side apply (the merge, the conflict check and `force`).
//!
//! Field sets are leaf paths: a map is descended into, any other value (lists included) is
//! one atomic field. That is coarser than the apiserver's structured-merge-diff, which knows
//! list keys from the schema (`k:{...}` entries); it is exact for maps, which is what
//! Flotilla's status conditions and specs are patched by.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::status::{ApiError, Result};

/// A set of owned fields, each a path of map keys from the object root.
pub type FieldSet = BTreeSet<Vec<String>>;

/// Which part of the object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

impl Subresource {
    fn name(self) -> Option<&'static str> {
        match self {
            Subresource::Main => None,
            Subresource::Status => Some("status"),
        }
    }
}

/// RFC 7386 JSON merge patch, as `application/merge-patch+json` does.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The metadata fields a manager can own (the rest are the server's).
const OWNABLE_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn collect(value: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
    match value {
        // an empty map sets nothing (`spec: {}` in an apply owns no field)
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                collect(v, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The leaf fields an object sets, restricted to `scope` (`.status` only for the status
/// subresource; everything but `.status` for the main resource of a kind that has one).
pub fn leaves(obj: &Value, scope: Subresource, has_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let wanted = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Subresource::Status, key) => key == "status",
            (Subresource::Main, "status") => !has_status,
            (Subresource::Main, _) => true,
        };
        if !wanted {
            continue;
        }
        if k == "metadata" {
            for field in OWNABLE_METADATA {
                if let Some(v) = v.get(field) {
                    collect(v, &mut vec!["metadata".into(), field.into()], &mut out);
                }
            }
        } else {
            collect(v, &mut vec![k.clone()], &mut out);
        }
    }
    out
}

fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k))
}

fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
    }
}

/// Recursive merge of maps; anything else in `from` replaces what `into` has.
fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let next = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            match next.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
    let children: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
        .unwrap_or_default();
    // `k:`/`v:`/`i:` entries are list members: this fake owns lists whole.
    let atomic = children.iter().any(|(k, _)| !k.starts_with("f:"));
    if children.is_empty() || atomic {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in children {
        path.push(k.trim_start_matches("f:").to_string());
        from_fields_v1(child, path, out);
        path.pop();
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, sub: Subresource) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == sub.name()
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.fields),
        });
        if let Some(sub) = &self.subresource {
            v["subresource"] = json!(sub);
        }
        v
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let mut fields = FieldSet::new();
            from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e["subresource"].as_str().map(str::to_string),
                fields,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| e.to_json())
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who wrote, for the `managedFields` entry of a write.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
    pub subresource: Subresource,
}

/// The `Update` bookkeeping of a create, update or merge patch: the fields whose value the
/// write changed move to `writer` (taken from every other manager); fields it removed are
/// owned by no one. `new` gets `old`'s entries, updated.
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer<'_>, has_status: bool) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_leaves = leaves(new, writer.subresource, has_status);
    let old_leaves = old
        .map(|o| leaves(o, writer.subresource, has_status))
        .unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get(o, p)) != get(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_leaves.difference(&new_leaves).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, entries);
        return;
    }
    for e in &mut entries {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    match entries
        .iter_mut()
        .find(|e| e.same_owner(writer.manager, "Update", writer.subresource))
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = writer.time.into();
            e.api_version = writer.api_version.into();
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: writer.manager.into(),
            operation: "Update".into(),
            api_version: writer.api_version.into(),
            time: writer.time.into(),
            subresource: writer.subresource.name().map(str::to_string),
            fields: changed,
        }),
        None => {}
    }
    write_entries(new, entries);
}

fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// Server-side apply of `config` by `writer` onto `live` (`None`: the object is created).
/// Returns the object to store, its `managedFields` updated, or the 409 `Conflict` the
/// apiserver gives when another manager owns a field `config` sets to a different value
/// (unless `force`, which takes those fields over).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer<'_>,
    force: bool,
    has_status: bool,
) -> Result<Value> {
    let sub = writer.subresource;
    let mut entries = live.map(read_entries).unwrap_or_default();
    let applied = leaves(config, sub, has_status);
    let mut base = live.cloned().unwrap_or_else(|| json!({}));

    // Conflicts: another manager owns an overlapping field whose live value differs.
    let mut conflicts: Vec<(String, Vec<String>)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !e.same_owner(writer.manager, "Apply", sub))
    {
        for owned in &e.fields {
            for p in &applied {
                let shorter = if owned.starts_with(p) {
                    p
                } else if p.starts_with(owned) {
                    owned
                } else {
                    continue;
                };
                if get(&base, shorter) != get(config, shorter) {
                    conflicts.push((e.manager.clone(), shorter.clone()));
                }
            }
        }
    }
    conflicts.sort();
    conflicts.dedup();
    if !conflicts.is_empty() && !force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": dotted(p)}))
            .collect();
        let listed: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", dotted(p)))
            .collect();
        let n = conflicts.len();
        let plural = if n == 1 { "" } else { "s" };
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {n} conflict{plural}: {}",
                listed.join("\n")
            ),
        )
        .with_details(json!({"causes": causes})));
    }
    for (m, p) in &conflicts {
        for e in entries.iter_mut().filter(|e| &e.manager == m) {
            e.fields.retain(|f| !f.starts_with(p) && !p.starts_with(f));
        }
    }

    // Fields this manager applied before and no longer applies, and no one else owns, go.
    let previous = entries
        .iter()
        .find(|e| e.same_owner(writer.manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied) {
        let shared = entries
            .iter()
            .filter(|e| !e.same_owner(writer.manager, "Apply", sub))
            .any(|e| {
                e.fields
                    .iter()
                    .any(|f| f.starts_with(p) || p.starts_with(f))
            });
        if !shared {
            remove(&mut base, p);
        }
    }

    let mut scoped = config.clone();
    if let Some(map) = scoped.as_object_mut() {
        match sub {
            Subresource::Status => map.retain(|k, _| k == "status"),
            Subresource::Main if has_status => {
                map.remove("status");
            }
            Subresource::Main => {}
        }
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                OWNABLE_METADATA.contains(&k.as_str())
                    || k == "name"
                    || k == "namespace"
                    || k == "generateName"
            });
        }
    }
    deep_merge(&mut base, &scoped);
    if live.is_none() {
        for k in ["apiVersion", "kind"] {
            if let Some(v) = config.get(k) {
                base[k] = v.clone();
            }
        }
    }

    entries.retain(|e| !e.same_owner(writer.manager, "Apply", sub));
    entries.push(Entry {
        manager: writer.manager.into(),
        operation: "Apply".into(),
        api_version: writer.api_version.into(),
        time: writer.time.into(),
        subresource: sub.name().map(str::to_string),
        fields: applied,
    });
    write_entries(&mut base, entries);
    Ok(base)
}

/// `managedFields` without their timestamps: a write that changes only those is a no-op.
pub fn without_times(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(list) = v["metadata"]["managedFields"].as_array_mut() {
        for e in list {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            time: "t",
            subresource: Subresource::Main,
        }
    }

    #[test]
    fn merge_patch_removes_nulls_and_merges_maps() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn apply_conflicts_then_force_takes_ownership() {
        let live = apply(
            None,
            &json!({"metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}}),
            &writer("one"),
            false,
            true,
        )
        .expect("first apply");
        let err = apply(
            Some(&live),
            &json!({"spec": {"a": 5}}),
            &writer("two"),
            false,
            true,
        )
        .expect_err("conflict");
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert!(err.message.contains(".spec.a"), "{}", err.message);
        // the same value is shared ownership, not a conflict
        assert!(apply(
            Some(&live),
            &json!({"spec": {"a": 1}}),
            &writer("two"),
            false,
            true
        )
        .is_ok());
        let forced = apply(
            Some(&live),
            &json!({"spec": {"a": 5}}),
            &writer("two"),
            true,
            true,
        )
        .expect("forced");
        assert_eq!(forced["spec"], json!({"a": 5, "b": 2}));
        let one = read_entries(&forced)
            .into_iter()
            .find(|e| e.manager == "one")
            .expect("one kept b");
        assert_eq!(
            one.fields,
            FieldSet::from([vec!["spec".to_string(), "b".to_string()]])
        );
        // a field one stops applying, owned by no one else, is removed
        let dropped = apply(
            Some(&forced),
            &json!({"spec": {}}),
            &writer("one"),
            false,
            true,
        )
        .expect("apply");
        assert_eq!(dropped["spec"], json!({"a": 5}));
    }
}
