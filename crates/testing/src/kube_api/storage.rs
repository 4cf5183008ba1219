//! The object store: every object as JSON under (group, plural, namespace, name), one global
//! strictly increasing resourceVersion (etcd's revision), and a bounded history of changes
//! that watches resume from. A synchronous struct behind the server's lock: every verb runs
//! whole under it, so a write and the watch event it emits are atomic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::discovery::ResourceInfo;
use super::patch::{self, Subresource, Writer};
use super::select::Selectors;
use super::status::{ApiError, Result};

/// Where an object lives. Ordered as etcd keys (`/registry/<resource>/<ns>/<name>`), which is
/// the order lists come in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed write, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: ObjKey,
    pub change: ChangeType,
    /// The object after the write (for a delete: as it was deleted, at the delete's revision).
    pub object: Value,
    /// The object before the write (None for a create); selectors look at both.
    pub old: Option<Value>,
}

/// A write verb's body handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Apply { force: bool },
}

/// The options of one list request.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub selectors: Selectors,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// How a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// `resourceVersion` unset or "0": synthetic ADDED events for the current state first.
    State,
    /// `sendInitialEvents=true`: the current state, then a BOOKMARK marking its end.
    InitialEvents,
    /// Resume after this revision.
    After(u64),
}

/// The beginning of a watch: the events to send first and the feed of later changes.
pub struct WatchOpening {
    pub initial: Vec<Value>,
    pub changes: broadcast::Receiver<Arc<Change>>,
    pub rv: u64,
}

pub struct Store {
    rv: u64,
    resources: Vec<ResourceInfo>,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// The oldest revision a watch or continue token may start from (etcd's compacted
    /// revision): older ones get 410 Expired.
    compacted: u64,
    events: broadcast::Sender<Arc<Change>>,
}

fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_rv(s: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

pub fn rv_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["resourceVersion"].as_str()
}

/// The object without metadata (and without status when that is a subresource): what
/// `metadata.generation` counts changes of.
fn generation_view(obj: &Value, has_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        if has_status {
            map.remove("status");
        }
    }
    v
}

fn set_meta(obj: &mut Value, key: &str, value: Value) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"][key] = value;
}

impl Store {
    pub fn new(history_limit: usize, events: broadcast::Sender<Arc<Change>>) -> Self {
        let mut store = Self {
            rv: 0,
            resources: super::discovery::builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            events,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            // cannot fail: a fresh store, a built-in kind, a well-formed object
            let _ = store
                .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
        store
    }

    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    pub fn revision(&self) -> u64 {
        self.rv
    }

    /// The resource served at (group, version, plural), if any.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural && r.serves(version))
            .cloned()
    }

    /// `plural` or `plural.group`, as kubectl names resources.
    pub fn resource_named(&self, name: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.plural == name || r.qualified() == name)
            .cloned()
    }

    fn resource_for_object(&self, obj: &Value) -> Result<(ResourceInfo, String)> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind && r.serves(version))
            .map(|r| (r.clone(), version.to_string()))
            .ok_or_else(|| {
                ApiError::bad_request(format!("no resource serves {api_version} {kind}"))
            })
    }

    /// Registers a custom resource and creates its CustomResourceDefinition object.
    pub fn install(&mut self, info: ResourceInfo) -> Result<()> {
        self.put(info.crd_object()).map(|_| ())
    }

    fn is_crd(key: &ObjKey) -> bool {
        key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions"
    }

    /// A CRD written (by `install_crd` or through the API, as `kubectl apply -f crd.yaml`)
    /// starts serving its resource; the apiextensions controller's `Established` status is
    /// set in the same write (the apiserver does it a moment later).
    fn register_crd(&mut self, crd: &mut Value) {
        let Some(info) = ResourceInfo::from_crd(crd) else {
            return;
        };
        if crd["status"]["conditions"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            crd["status"] = ResourceInfo::crd_status(crd, &now());
        }
        self.resources
            .retain(|r| !(r.group == info.group && r.plural == info.plural));
        self.resources.push(info);
    }

    /// A deleted CRD stops serving its resource and its objects are deleted (watches see
    /// them DELETED), as the apiextensions finalizer does.
    fn unregister_crd(&mut self, crd: &Value) {
        let Some(info) = ResourceInfo::from_crd(crd) else {
            return;
        };
        let keys: Vec<ObjKey> = self
            .objects
            .keys()
            .filter(|k| k.group == info.group && k.plural == info.plural)
            .cloned()
            .collect();
        for key in keys {
            let version = info.versions.first().cloned().unwrap_or_default();
            let _ = self.delete(&info, &version, &key.namespace, &key.name, None);
        }
        self.resources
            .retain(|r| !(r.group == info.group && r.plural == info.plural));
    }

    pub fn objects(&self, info: &ResourceInfo) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == info.group && k.plural == info.plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn key(info: &ResourceInfo, namespace: &str, name: &str) -> ObjKey {
        ObjKey {
            group: info.group.clone(),
            plural: info.plural.clone(),
            namespace: if info.namespaced {
                namespace.into()
            } else {
                String::new()
            },
            name: name.into(),
        }
    }

    fn present(info: &ResourceInfo, version: &str, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(info.api_version(version));
        obj["kind"] = json!(info.kind);
        obj
    }

    fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::not_found(&info.qualified(), name, &info.group, &info.plural)
    }

    /// Stamps and stores a write, records it and tells the watches. `old` is the stored
    /// object it replaces. A write that changes nothing is not stored (no new revision, no
    /// event), as the apiserver skips no-op updates.
    fn commit(
        &mut self,
        info: &ResourceInfo,
        key: ObjKey,
        old: Option<Value>,
        mut new: Value,
    ) -> Value {
        if let Some(old) = &old {
            for k in [
                "uid",
                "creationTimestamp",
                "name",
                "namespace",
                "generation",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => set_meta(&mut new, k, v.clone()),
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove(k);
                        }
                    }
                }
            }
            set_meta(
                &mut new,
                "resourceVersion",
                old["metadata"]["resourceVersion"].clone(),
            );
            if patch::without_times(&new) == patch::without_times(old) {
                return old.clone();
            }
            if generation_view(&new, info.status_subresource)
                != generation_view(old, info.status_subresource)
            {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                set_meta(&mut new, "generation", json!(generation));
            }
        }
        if Self::is_crd(&key) {
            self.register_crd(&mut new);
        }
        self.rv += 1;
        set_meta(&mut new, "resourceVersion", json!(self.rv.to_string()));
        self.objects.insert(key.clone(), new.clone());
        let change = if old.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            rv: self.rv,
            key,
            change,
            object: new.clone(),
            old,
        });
        new
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // no receivers is fine: no watch is open
        let _ = self.events.send(change);
    }

    /// Drops all history: a watch or continue token from before now gets 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn new_object(
        info: &ResourceInfo,
        version: &str,
        namespace: &str,
        mut obj: Value,
    ) -> Result<(ObjKey, Value)> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if let Some(kind) = obj["kind"].as_str() {
            if kind != info.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind {kind} does not match {}",
                    info.kind
                )));
            }
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = &obj["metadata"];
        if meta
            .get("resourceVersion")
            .is_some_and(|v| !v.is_null() && v != "")
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if info.namespaced {
            match meta["namespace"].as_str() {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => set_meta(&mut obj, "namespace", json!(namespace)),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let name = match (
            obj["metadata"]["name"].as_str(),
            obj["metadata"]["generateName"].as_str(),
        ) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                let suffix: String = uuid::Uuid::new_v4()
                    .simple()
                    .to_string()
                    .chars()
                    .take(5)
                    .collect();
                format!("{prefix}{suffix}")
            }
            _ => {
                return Err(ApiError::invalid(format!(
                "{} is invalid: metadata.name: Required value: name or generateName is required",
                info.kind
            )))
            }
        };
        set_meta(&mut obj, "name", json!(name));
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(now()));
        set_meta(&mut obj, "generation", json!(1));
        if info.status_subresource {
            // the registry strategies reset status on create (PrepareForCreate)
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            if info.kind == "Namespace" {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        obj["apiVersion"] = json!(info.api_version(version));
        obj["kind"] = json!(info.kind);
        let key = Self::key(info, namespace, &name);
        Ok((key, obj))
    }

    /// POST: create; 409 AlreadyExists when the name is taken.
    pub fn create(
        &mut self,
        info: &ResourceInfo,
        version: &str,
        namespace: &str,
        body: Value,
        manager: &str,
    ) -> Result<Value> {
        let (key, mut obj) = Self::new_object(info, version, namespace, body)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(
                &info.qualified(),
                &key.name,
                &info.group,
                &info.plural,
            ));
        }
        let api_version = info.api_version(version);
        let writer = Writer {
            manager,
            api_version: &api_version,
            time: &now(),
            subresource: Subresource::Main,
        };
        patch::record_update(None, &mut obj, &writer, info.status_subresource);
        Ok(Self::present(
            info,
            version,
            self.commit(info, key, None, obj),
        ))
    }

    pub fn get(
        &self,
        info: &ResourceInfo,
        version: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value> {
        self.objects
            .get(&Self::key(info, namespace, name))
            .map(|o| Self::present(info, version, o.clone()))
            .ok_or_else(|| Self::not_found(info, name))
    }

    /// Merges the part of `new` a write to `sub` may change into `old`.
    fn scope(info: &ResourceInfo, sub: Subresource, old: &Value, mut new: Value) -> Value {
        match sub {
            Subresource::Status => {
                let mut merged = old.clone();
                // the write's field ownership is kept (apply computed it on the whole object)
                if let Some(managed) = new["metadata"].get("managedFields") {
                    merged["metadata"]["managedFields"] = managed.clone();
                }
                match new.get("status") {
                    Some(status) => merged["status"] = status.clone(),
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                merged
            }
            Subresource::Main => {
                if info.status_subresource {
                    match old.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                new
            }
        }
    }

    /// PUT (of the object or its status): 409 Conflict when the body's resourceVersion is
    /// stale; 404 when the object does not exist.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        info: &ResourceInfo,
        version: &str,
        namespace: &str,
        name: &str,
        sub: Subresource,
        mut body: Value,
        manager: &str,
    ) -> Result<Value> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let key = Self::key(info, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Self::not_found(info, name))?;
        if let Some(rv) = rv_of(&body).filter(|rv| !rv.is_empty()) {
            if Some(rv) != rv_of(&old) {
                return Err(ApiError::stale(
                    &info.qualified(),
                    name,
                    &info.group,
                    &info.plural,
                ));
            }
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        if let Some(m) = body["metadata"].as_object_mut() {
            // managedFields are the server's bookkeeping here
            m.insert(
                "managedFields".into(),
                old["metadata"]["managedFields"].clone(),
            );
        }
        let mut new = Self::scope(info, sub, &old, body);
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        let api_version = info.api_version(version);
        let writer = Writer {
            manager,
            api_version: &api_version,
            time: &now(),
            subresource: sub,
        };
        patch::record_update(Some(&old), &mut new, &writer, info.status_subresource);
        Ok(Self::present(
            info,
            version,
            self.commit(info, key, Some(old), new),
        ))
    }

    /// PATCH (merge patch or server-side apply) of the object or its status. Apply creates a
    /// missing object; a merge patch of a missing object is 404.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        info: &ResourceInfo,
        version: &str,
        namespace: &str,
        name: &str,
        sub: Subresource,
        kind: PatchType,
        body: Value,
        manager: &str,
    ) -> Result<Value> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the patch was not a JSON object"));
        }
        let key = Self::key(info, namespace, name);
        let old = self.objects.get(&key).cloned();
        let api_version = info.api_version(version);
        let time = now();
        let writer = Writer {
            manager,
            api_version: &api_version,
            time: &time,
            subresource: sub,
        };
        match kind {
            PatchType::Merge => {
                let old = old.ok_or_else(|| Self::not_found(info, name))?;
                let mut patched = old.clone();
                patch::merge_patch(&mut patched, &body);
                if rv_of(&patched) != rv_of(&old) {
                    return Err(ApiError::stale(
                        &info.qualified(),
                        name,
                        &info.group,
                        &info.plural,
                    ));
                }
                if let Some(m) = patched["metadata"].as_object_mut() {
                    m.insert(
                        "managedFields".into(),
                        old["metadata"]["managedFields"].clone(),
                    );
                }
                let mut new = Self::scope(info, sub, &old, patched);
                patch::record_update(Some(&old), &mut new, &writer, info.status_subresource);
                Ok(Self::present(
                    info,
                    version,
                    self.commit(info, key, Some(old), new),
                ))
            }
            PatchType::Apply { force } => {
                if body["metadata"]["name"].as_str() != Some(name) {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                if body["kind"].as_str() != Some(info.kind.as_str())
                    || body["apiVersion"].as_str() != Some(api_version.as_str())
                {
                    return Err(ApiError::bad_request(format!(
                        "apply patches must set apiVersion {api_version} and kind {}",
                        info.kind
                    )));
                }
                match old {
                    Some(old) => {
                        let new = patch::apply(
                            Some(&old),
                            &body,
                            &writer,
                            force,
                            info.status_subresource,
                        )?;
                        let new = Self::scope(info, sub, &old, new);
                        Ok(Self::present(
                            info,
                            version,
                            self.commit(info, key, Some(old), new),
                        ))
                    }
                    None if sub == Subresource::Status => Err(Self::not_found(info, name)),
                    None => {
                        let applied =
                            patch::apply(None, &body, &writer, force, info.status_subresource)?;
                        let managed = applied["metadata"]["managedFields"].clone();
                        let (key, mut obj) = Self::new_object(info, version, namespace, applied)?;
                        set_meta(&mut obj, "managedFields", managed);
                        Ok(Self::present(
                            info,
                            version,
                            self.commit(info, key, None, obj),
                        ))
                    }
                }
            }
        }
    }

    /// DELETE: immediate (no finalizers, no graceful deletion). Answers the object as deleted
    /// where the apiserver's registry does (`ReturnDeletedObject`: custom resources, Services;
    /// Namespaces and CRDs, which the apiserver answers with the object while its finalizers
    /// run), else a `Status` of `Success` with the name, group, resource and uid, as the
    /// generic registry's `finalizeDelete` does.
    pub fn delete(
        &mut self,
        info: &ResourceInfo,
        version: &str,
        namespace: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Value> {
        let key = Self::key(info, namespace, name);
        let Some(old) = self.objects.get(&key) else {
            return Err(Self::not_found(info, name));
        };
        if precondition_rv.is_some_and(|rv| Some(rv) != rv_of(old)) {
            return Err(ApiError::stale(
                &info.qualified(),
                name,
                &info.group,
                &info.plural,
            ));
        }
        let Some(old) = self.objects.remove(&key) else {
            return Err(Self::not_found(info, name));
        };
        self.rv += 1;
        let mut gone = old.clone();
        set_meta(&mut gone, "resourceVersion", json!(self.rv.to_string()));
        let crd = Self::is_crd(&key).then(|| old.clone());
        self.record(Change {
            rv: self.rv,
            key,
            change: ChangeType::Deleted,
            object: gone.clone(),
            old: Some(old),
        });
        if let Some(crd) = crd {
            self.unregister_crd(&crd);
        }
        if info.delete_answers_object() {
            Ok(Self::present(info, version, gone))
        } else {
            Ok(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": info.group,
                    "kind": info.plural,
                    "uid": gone["metadata"]["uid"],
                },
            }))
        }
    }

    /// LIST, in key order, paginated by `limit` with an opaque `continue` token that carries
    /// the list's revision (410 Expired once that revision is compacted).
    pub fn list(
        &self,
        info: &ResourceInfo,
        version: &str,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value> {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Token {
            rv: u64,
            after: (String, String),
        }
        let (list_rv, after) = match &opts.continue_token {
            Some(token) => {
                let bad = || ApiError::bad_request("continue key is not valid");
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .map_err(|_| bad())?;
                let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
                if t.rv < self.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter.",
                    ));
                }
                (t.rv, Some(t.after))
            }
            None => {
                match (
                    opts.resource_version.as_deref().filter(|s| !s.is_empty()),
                    opts.resource_version_match.as_deref(),
                ) {
                    (Some(rv), Some("Exact")) => {
                        let rv = parse_rv(rv)?;
                        if rv != self.rv {
                            // the fake keeps no old states: only the current one is exact
                            return Err(ApiError::expired(format!(
                                "too old resource version: {rv} ({})",
                                self.rv
                            )));
                        }
                    }
                    (Some(rv), _) => {
                        let rv = parse_rv(rv)?;
                        if rv > self.rv {
                            return Err(ApiError::new(504, "Timeout", format!("Too large resource version: {rv}, current: {}", self.rv))
                                .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
                        }
                    }
                    (None, Some(m)) => {
                        return Err(ApiError::bad_request(format!("resourceVersionMatch {m} is forbidden unless resourceVersion is provided")));
                    }
                    (None, None) => {}
                }
                (self.rv, None)
            }
        };
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut next = None;
        let matching = self
            .objects
            .iter()
            .filter(|(k, _)| k.group == info.group && k.plural == info.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(k, _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, n)| (&k.namespace, &k.name) > (ns, n))
            })
            .filter(|(_, v)| opts.selectors.matches(v));
        let mut remaining = 0usize;
        for (k, v) in matching {
            if items.len() < limit {
                items.push(Self::present(info, version, v.clone()));
                next = Some((k.namespace.clone(), k.name.clone()));
            } else {
                remaining += 1;
            }
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0 {
            if let Some(after) = next {
                let token = serde_json::to_vec(&Token { rv: list_rv, after }).unwrap_or_default();
                metadata["continue"] =
                    json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(version),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Opens a watch: the initial events and a subscription taken under the same lock, so no
    /// change is missed or sent twice. `Err` is the 410 of a compacted start revision.
    pub fn watch(&self, filter: &WatchFilter, start: WatchStart) -> Result<WatchOpening> {
        let mut initial = Vec::new();
        match start {
            WatchStart::State | WatchStart::InitialEvents => {
                for (k, v) in &self.objects {
                    if filter.wants_key(k) && filter.selectors.matches(v) {
                        initial.push(filter.line("ADDED", v.clone()));
                    }
                }
                if start == WatchStart::InitialEvents {
                    initial.push(filter.bookmark(self.rv, true));
                }
            }
            WatchStart::After(rv) => {
                if rv < self.compacted {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        self.compacted + 1
                    )));
                }
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    initial.extend(filter.event(change));
                }
            }
        }
        Ok(WatchOpening {
            initial,
            changes: self.events.subscribe(),
            rv: self.rv,
        })
    }

    /// Creates or replaces an object whatever its resourceVersion, status included (a test's
    /// direct write, as an admin's `kubectl replace --force` would).
    pub fn put(&mut self, obj: Value) -> Result<Value> {
        let (info, version) = self.resource_for_object(&obj)?;
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = Self::key(&info, &namespace, &name);
        let api_version = info.api_version(&version);
        let writer = Writer {
            manager: "kubectl",
            api_version: &api_version,
            time: &now(),
            subresource: Subresource::Main,
        };
        let stored = match self.objects.get(&key).cloned() {
            Some(old) => {
                let mut new = obj;
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                    m.insert(
                        "managedFields".into(),
                        old["metadata"]["managedFields"].clone(),
                    );
                }
                patch::record_update(Some(&old), &mut new, &writer, false);
                self.commit(&info, key, Some(old), new)
            }
            None => {
                let status = obj.get("status").cloned();
                let mut body = obj;
                if let Some(m) = body["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let (key, mut new) = Self::new_object(&info, &version, &namespace, body)?;
                if let Some(status) = status {
                    new["status"] = status;
                }
                patch::record_update(None, &mut new, &writer, false);
                self.commit(&info, key, None, new)
            }
        };
        Ok(stored)
    }

    /// Deletes whatever its resourceVersion (a test's direct delete).
    pub fn remove(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let probe = json!({"apiVersion": api_version, "kind": kind});
        let (info, version) = self.resource_for_object(&probe).ok()?;
        self.delete(&info, &version, namespace, name, None).ok()
    }

    pub fn lookup(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let probe = json!({"apiVersion": api_version, "kind": kind});
        let (info, version) = self.resource_for_object(&probe).ok()?;
        self.get(&info, &version, namespace, name).ok()
    }
}

/// What one watch sees: a resource (in one namespace or all), its selectors, the version it
/// presents objects at.
#[derive(Clone, Debug)]
pub struct WatchFilter {
    pub info: ResourceInfo,
    pub version: String,
    pub namespace: Option<String>,
    pub selectors: Selectors,
}

impl WatchFilter {
    fn wants_key(&self, k: &ObjKey) -> bool {
        k.group == self.info.group
            && k.plural == self.info.plural
            && self.namespace.as_ref().is_none_or(|ns| &k.namespace == ns)
    }

    pub fn line(&self, kind: &str, obj: Value) -> Value {
        json!({"type": kind, "object": Store::present(&self.info, &self.version, obj)})
    }

    /// A BOOKMARK: only kind, apiVersion and the revision, plus the annotation that ends the
    /// initial events of a streaming list.
    pub fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {
            "kind": self.info.kind,
            "apiVersion": self.info.api_version(&self.version),
            "metadata": metadata,
        }})
    }

    /// The event a change is for this watch: an object that starts matching the selectors is
    /// ADDED, one that stops matching is DELETED (as the watch cache does).
    pub fn event(&self, change: &Change) -> Option<Value> {
        if !self.wants_key(&change.key) {
            return None;
        }
        let new_matches = self.selectors.matches(&change.object);
        let old_matches = change
            .old
            .as_ref()
            .is_some_and(|o| self.selectors.matches(o));
        let kind = match change.change {
            ChangeType::Added if new_matches => "ADDED",
            ChangeType::Deleted if old_matches || new_matches => "DELETED",
            ChangeType::Modified => match (old_matches, new_matches) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            },
            _ => return None,
        };
        Some(self.line(kind, change.object.clone()))
    }
}
