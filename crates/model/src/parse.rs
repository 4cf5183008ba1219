//! Parsing Kubernetes YAML/JSON into typed resources, with errors that say where: file,
//! document index, kind/name and the field path.
//!
//! Both ends of the pipeline call this: the ingest agent before it publishes, and every store
//! replica on every upsert it folds. So a limit enforced here (size, depth, names, unique
//! keys) holds for everything that reaches the Raft log, whoever sent it.

mod names;
mod yaml;

use crate::resource::{Object, Resource};
use crate::{Kind, ResourceKey};
use serde::de::DeserializeOwned;
use std::fmt;

/// The largest object accepted, as serialized JSON. Kubernetes itself refuses objects over
/// ~1.5 MiB (etcd's request limit); anything this large in a file is a mistake, and holding it
/// would cost every replica and every snapshot.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The deepest object accepted, counting every array and mapping (`{"a": [1]}` is 2 deep).
/// An object travels wrapped: the event envelope (`event.body.object`) and the store's log
/// entry (a batch of sequenced events) add levels around it, and serde_json's decoder refuses
/// anything nested deeper than 128. An object accepted here must stay decodable once wrapped,
/// or the Raft log itself becomes unreadable on every replica; 64 leaves ample room for the
/// wrapping, and real Kubernetes objects nest far less (an HTTPRoute filter is ~10 deep).
pub const MAX_OBJECT_DEPTH: usize = 64;

/// Why one document could not be accepted. Every field that is known is filled, so the
/// message names the object as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub file: Option<String>,
    /// 0-based index of the YAML document within the file.
    pub document: Option<usize>,
    pub kind: Option<String>,
    /// `namespace/name` or `name`.
    pub name: Option<String>,
    /// Path of the offending field, e.g. `spec.rules[0].matches[1].path`.
    pub field: Option<String>,
    pub message: String,
}

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            file: None,
            document: None,
            kind: None,
            name: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            sep = ": ";
        }
        if let Some(doc) = self.document {
            write!(f, "{sep}document {doc}")?;
            sep = ": ";
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k} {n})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            (None, Some(n)) => write!(f, " ({n})")?,
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{sep}field {field}")?;
            sep = ": ";
        }
        write!(f, "{sep}{}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a multi-document YAML (or JSON) text. Returns every document that parsed and an
/// error for each one that did not; one bad document never hides the others. Empty documents
/// are skipped.
///
/// A mapping that repeats a key refuses its document (see [`yaml`]), and so does a document
/// that would be larger than [`MAX_OBJECT_BYTES`] as JSON, checked while it is read so that
/// aliases cannot expand a small text into gigabytes; a UTF-8 byte order mark at the start of
/// the text is skipped.
pub fn parse_documents(file: &str, text: &str, cluster: &str) -> (Vec<Resource>, Vec<ParseError>) {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    // Editors on Windows save with a BOM; the YAML parser would read it as part of the first
    // key (`\u{feff}apiVersion`), and the document would have no apiVersion.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut check = WholeCheck::new(text);
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let located = |mut e: ParseError| {
            e.file = Some(file.to_string());
            e.document = Some(index);
            e
        };
        let value = match yaml::document(doc, MAX_OBJECT_BYTES) {
            Ok(v) => v,
            Err(yaml::DocumentError::TooLarge { budget }) => {
                errors.push(located(ParseError::new(format!(
                    "document is larger than the limit of {budget} bytes (as JSON) once its \
                     YAML aliases are expanded"
                ))));
                match check.loaded_whole(index) {
                    Ok(()) => continue,
                    Err(e) => {
                        errors.push(located(ParseError::new(format!("invalid YAML: {e}"))));
                        break;
                    }
                }
            }
            Err(yaml::DocumentError::Duplicate { duplicate: d, at }) => {
                let at = at
                    .map(|(line, column)| {
                        format!(" (in the mapping at line {line}, column {column})")
                    })
                    .unwrap_or_default();
                errors.push(located(ParseError {
                    file: None,
                    document: None,
                    name: display_name(d.namespace.as_deref(), d.name.as_deref()),
                    kind: d.kind.clone(),
                    field: Some(d.field.clone()),
                    message: format!(
                        "duplicate key {:?}{at}: a key may appear only once in a mapping",
                        d.key
                    ),
                }));
                match check.loaded_whole(index) {
                    Ok(()) => continue,
                    Err(e) => {
                        errors.push(located(ParseError::new(format!("invalid YAML: {e}"))));
                        break;
                    }
                }
            }
            Err(yaml::DocumentError::Yaml(e)) => {
                errors.push(located(ParseError::new(format!("invalid YAML: {e}"))));
                // A syntax error leaves the YAML stream in an unknown place: stop here
                // rather than report a cascade of follow-on errors.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match parse_object(cluster, value) {
            Ok(r) => resources.push(r),
            Err(e) => errors.push(located(e)),
        }
    }
    (resources, errors)
}

/// Whether the YAML parser loaded a document whole, for the documents whose reading stopped
/// at an error of ours (a repeated key, the size budget): only then can the next document be
/// read. The parser loads a document before it is deserialized, but stops inside one that is
/// itself broken (a syntax error, an alias of no anchor) and then starts the next "document"
/// with the rest of this one, on which serde_yaml_ng panics ("unexpected end of mapping").
/// Reading the document to its end would tell, but once our visitor has failed the
/// deserializer is gone; so a second pass over the same text reads documents up to that one,
/// without building anything (and without expanding aliases). It runs only when such an error
/// happens and moves forward only: at most one more read of the text.
struct WholeCheck<'a> {
    docs: serde_yaml_ng::Deserializer<'a>,
    /// Index of the document `docs` yields next.
    next: usize,
}

impl<'a> WholeCheck<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            docs: serde_yaml_ng::Deserializer::from_str(text),
            next: 0,
        }
    }

    /// `Ok` if document `index` was loaded whole, else the YAML error that stopped it.
    /// `index` must be at least the last one asked about, plus one.
    fn loaded_whole(&mut self, index: usize) -> Result<(), serde_yaml_ng::Error> {
        use serde::de::{Deserialize, IgnoredAny};
        for doc in self.docs.by_ref() {
            let at = self.next;
            self.next += 1;
            // An error in an earlier document stopped the main pass there already.
            IgnoredAny::deserialize(doc)?;
            if at == index {
                return Ok(());
            }
        }
        Err(serde::de::Error::custom("the document was not found again"))
    }
}

fn display_name(namespace: Option<&str>, name: Option<&str>) -> Option<String> {
    match (namespace, name) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        (None, Some(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses one Kubernetes object (as JSON) of cluster `cluster` into a typed resource.
///
/// Refused: anything but a mapping, a missing or unknown kind, an apiVersion outside the
/// kind's group, a name or namespace Kubernetes would refuse, an object nested deeper than
/// [`MAX_OBJECT_DEPTH`] or larger than [`MAX_OBJECT_BYTES`], and fields of the wrong type.
/// The depth is checked first and without recursion, so even a value nested far deeper than
/// any decoder allows is refused (and dropped) without exhausting the stack.
// The error is large (it names file, document, kind, name and field) but is built only on
// bad input, never on the hot path, so boxing it would only add noise to every caller.
#[allow(clippy::result_large_err)]
pub fn parse_object(cluster: &str, value: serde_json::Value) -> Result<Resource, ParseError> {
    let str_at = |ptr: &str| {
        value
            .pointer(ptr)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let kind_name = str_at("/kind");
    let api_version = str_at("/apiVersion");
    let name = str_at("/metadata/name");
    let namespace = str_at("/metadata/namespace");
    let display_name = display_name(namespace.as_deref(), name.as_deref());
    let err = |field: Option<&str>, message: String| ParseError {
        file: None,
        document: None,
        kind: kind_name.clone(),
        name: display_name.clone(),
        field: field.map(str::to_string),
        message,
    };

    if !value.is_object() {
        return Err(err(
            None,
            "a document must be a mapping (a Kubernetes object)".into(),
        ));
    }
    if let Some(path) = path_beyond_depth(&value, MAX_OBJECT_DEPTH) {
        let e = err(
            Some(path.as_str()),
            format!("object nested deeper than {MAX_OBJECT_DEPTH} levels of mappings and lists"),
        );
        drop_iteratively(value);
        return Err(e);
    }
    let Some(kind_str) = kind_name.as_deref() else {
        return Err(err(Some("kind"), "missing kind".into()));
    };
    let Some(api_version) = api_version else {
        return Err(err(Some("apiVersion"), "missing apiVersion".into()));
    };
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_str) else {
        return Err(err(
            Some("kind"),
            format!(
                "unknown kind {kind_str:?} (known: {})",
                Kind::ALL.map(Kind::as_str).join(", ")
            ),
        ));
    };
    if !kind.accepts_api_version(&api_version) {
        return Err(err(
            Some("apiVersion"),
            format!(
                "apiVersion {api_version:?} is not in group {:?} of kind {kind}",
                kind.group()
            ),
        ));
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(err(Some("metadata.name"), "missing metadata.name".into()));
    };
    let name_rule = match kind {
        Kind::ClusterTrustBundle => {
            names::cluster_trust_bundle_error(&name, str_at("/spec/signerName").as_deref())
        }
        // A Namespace's name is what namespaced objects carry as their namespace.
        Kind::Namespace => names::label_error(&name).map(str::to_string),
        _ => names::subdomain_error(&name).map(str::to_string),
    };
    if let Some(rule) = name_rule {
        return Err(err(
            Some("metadata.name"),
            format!("invalid metadata.name {name:?}: {rule}"),
        ));
    }
    if !kind.cluster_scoped() {
        if let Some(rule) = namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .and_then(names::label_error)
        {
            return Err(err(
                Some("metadata.namespace"),
                format!(
                    "invalid metadata.namespace {:?}: {rule}",
                    namespace.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    let size = encoded_len(&value);
    if size > MAX_OBJECT_BYTES {
        return Err(err(
            None,
            format!("object is {size} bytes, over the limit of {MAX_OBJECT_BYTES}"),
        ));
    }

    let typed_err = |(f, m): (Option<String>, String)| err(f.as_deref(), m);
    let object = match kind {
        Kind::GatewayClass => Object::GatewayClass(typed(&value).map_err(typed_err)?),
        Kind::Gateway => Object::Gateway(typed(&value).map_err(typed_err)?),
        Kind::HTTPRoute => Object::HTTPRoute(typed(&value).map_err(typed_err)?),
        Kind::Service => Object::Service(typed(&value).map_err(typed_err)?),
        Kind::EndpointSlice => Object::EndpointSlice(typed(&value).map_err(typed_err)?),
        Kind::Namespace => Object::Namespace(typed(&value).map_err(typed_err)?),
        Kind::Secret => Object::Secret(typed(&value).map_err(typed_err)?),
        Kind::GRPCRoute => Object::GRPCRoute(typed(&value).map_err(typed_err)?),
        Kind::TLSRoute => Object::TLSRoute(typed(&value).map_err(typed_err)?),
        Kind::TCPRoute => Object::TCPRoute(typed(&value).map_err(typed_err)?),
        Kind::UDPRoute => Object::UDPRoute(typed(&value).map_err(typed_err)?),
        Kind::ListenerSet => Object::ListenerSet(typed(&value).map_err(typed_err)?),
        Kind::ReferenceGrant => Object::ReferenceGrant(typed(&value).map_err(typed_err)?),
        Kind::BackendTLSPolicy => Object::BackendTLSPolicy(typed(&value).map_err(typed_err)?),
        Kind::Backend => Object::Backend(typed(&value).map_err(typed_err)?),
        Kind::ServiceImport => Object::ServiceImport(typed(&value).map_err(typed_err)?),
        Kind::ConfigMap => Object::ConfigMap(typed(&value).map_err(typed_err)?),
        Kind::ClusterTrustBundle => Object::ClusterTrustBundle(typed(&value).map_err(typed_err)?),
        Kind::ClientTrafficPolicy
        | Kind::BackendTrafficPolicy
        | Kind::SecurityPolicy
        | Kind::EnvoyExtensionPolicy
        | Kind::EnvoyPatchPolicy
        | Kind::HTTPRouteFilter
        | Kind::EnvoyProxy
        // Multi-Cluster Services: its presence is what counts (it has no spec).
        | Kind::ServiceExport => Object::Extension(kind, typed(&value).map_err(typed_err)?),
    };
    let namespace = if kind.cluster_scoped() {
        String::new()
    } else {
        namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string())
    };
    let mut raw = value;
    // The key's namespace is authoritative: write the defaulted namespace back so the stored
    // object agrees with its key.
    if !kind.cluster_scoped() {
        if let Some(meta) = raw.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert(
                "namespace".into(),
                serde_json::Value::String(namespace.clone()),
            );
        }
    }
    let mut object = object;
    object.set_namespace(&namespace);
    Ok(Resource {
        key: ResourceKey::new(cluster, kind, namespace, name),
        object,
        raw,
    })
}

/// The path of the first array or mapping found below `max` levels (the top level is 1), or
/// `None` if `value` is at most `max` deep. Iterative: its stack holds at most `max` frames
/// whatever the input.
fn path_beyond_depth(value: &serde_json::Value, max: usize) -> Option<String> {
    use serde_json::Value;
    enum Frame<'a> {
        List(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
        Map(serde_json::map::Iter<'a>),
    }
    /// Where a frame is in its parent: rendered into a path only when one is reported, so
    /// that the walk over a valid object allocates nothing but its stack.
    #[derive(Clone, Copy)]
    enum Segment<'a> {
        Root,
        Index(usize),
        Key(&'a str),
    }
    fn frame(v: &Value) -> Option<Frame<'_>> {
        match v {
            Value::Array(a) => Some(Frame::List(a.iter().enumerate())),
            Value::Object(m) => Some(Frame::Map(m.iter())),
            _ => None,
        }
    }
    // Each frame with the segment of the child it is visiting.
    let mut stack: Vec<(Frame<'_>, Segment<'_>)> = Vec::with_capacity(max.min(16));
    stack.push((frame(value)?, Segment::Root));
    while let Some((top, segment)) = stack.last_mut() {
        let child = match top {
            Frame::List(items) => items.next().map(|(i, v)| (Segment::Index(i), v)),
            Frame::Map(entries) => entries.next().map(|(k, v)| (Segment::Key(k.as_str()), v)),
        };
        let Some((child_segment, child)) = child else {
            stack.pop();
            continue;
        };
        *segment = child_segment;
        if let Some(f) = frame(child) {
            if stack.len() >= max {
                let mut path = String::new();
                for (_, s) in &stack {
                    match s {
                        Segment::Root => {}
                        Segment::Index(i) => path.push_str(&format!("[{i}]")),
                        Segment::Key(k) => {
                            if !path.is_empty() {
                                path.push('.');
                            }
                            path.push_str(k);
                        }
                    }
                }
                return Some(path);
            }
            stack.push((f, Segment::Root));
        }
    }
    None
}

/// Drops `value` one level at a time. serde_json's `Value` drops recursively, one stack frame
/// per level: a value nested thousands deep (possible when built in memory rather than decoded)
/// would overflow the stack on drop.
fn drop_iteratively(value: serde_json::Value) {
    use serde_json::Value;
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => pending.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// The length of `value` encoded as JSON, counted without building the encoding.
fn encoded_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, value) {
        Ok(()) => c.0,
        Err(_) => usize::MAX,
    }
}

/// `value` as a `T`. Most objects are valid: they are read once, directly; the slower reading
/// that tracks where it is runs only for an object that fails, to name the field.
fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, (Option<String>, String)> {
    if let Ok(t) = T::deserialize(value) {
        return Ok(t);
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        ((path != ".").then_some(path), inner)
    })
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
