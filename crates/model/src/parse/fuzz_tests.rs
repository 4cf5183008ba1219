//! The bounded fuzz pass over YAML/JSON parsing (run alone with `cargo test fuzz_`, longer with
//! `PROPTEST_CASES=100000`). Whatever the text: parsing returns (no panic; a watchdog fails a
//! case that hangs), memory stays bounded by the object size limit even through aliases, every
//! refusal says why, and every accepted object has the identity its text gave it, obeys
//! Kubernetes' name rules and survives the event envelope.

use super::*;
use crate::{EventBody, ResourceEvent};
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::sync::mpsc;
use std::time::Duration;

const CLUSTER: &str = "east";
const FILE: &str = "fuzz.yaml";

/// `cases` unless `PROPTEST_CASES` asks for another number. The defaults keep the whole fuzz
/// pass of the workspace under a minute in a debug build on 2 cores.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// As [`config`], for a property whose cases cost about a second each: one case per 100 that
/// `PROPTEST_CASES` asks for.
fn config_costly(cases: u32) -> Config {
    let mut config = config(cases);
    if std::env::var_os("PROPTEST_CASES").is_some() {
        config.cases = (config.cases / 100).max(cases);
    }
    config
}

/// Far above what any case needs (the slowest, an alias bomb stopped by the size budget, takes
/// about a second in a debug build): a case still running then is a hang.
const HANG: Duration = Duration::from_secs(60);

/// Parses `text` on a thread of its own and fails if that takes longer than [`HANG`].
fn parse_bounded(text: String) -> (Vec<Resource>, Vec<ParseError>) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(parse_documents(FILE, &text, CLUSTER));
    });
    match rx.recv_timeout(HANG) {
        Ok(out) => out,
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the parse thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("parsing did not finish within {HANG:?}: a hang")
        }
    }
}

// ---- oracles, written independently of `names` ----

fn label_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

fn is_label_shape(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(label_char) && !s.starts_with('-') && !s.ends_with('-')
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_label_shape(s)
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_shape)
}

/// Checks one outcome of `parse_documents` on a text of `documents` documents (`None`: not
/// known, the text may hold syntax errors).
fn check_outcome(resources: &[Resource], errors: &[ParseError]) {
    for e in errors {
        assert!(!e.message.is_empty(), "a refusal without a message: {e:?}");
        assert_eq!(e.file.as_deref(), Some(FILE), "{e:?}");
        assert!(
            e.document.is_some(),
            "a refusal without its document: {e:?}"
        );
        assert!(!e.to_string().is_empty());
    }
    for r in resources {
        check_accepted(r);
    }
}

/// What holds of every accepted object, whatever its text was.
fn check_accepted(r: &Resource) {
    let key = &r.key;
    assert_eq!(key.cluster, CLUSTER);
    assert_eq!(r.object.kind(), key.kind);
    assert_eq!(r.raw["kind"].as_str(), Some(key.kind.as_str()));
    let api_version = r.raw["apiVersion"].as_str().unwrap_or_default();
    assert!(key.kind.accepts_api_version(api_version), "{api_version:?}");
    assert_eq!(r.raw["metadata"]["name"].as_str(), Some(key.name.as_str()));
    assert_eq!(r.object.metadata().name.as_deref(), Some(key.name.as_str()));
    match key.kind {
        Kind::Namespace => assert!(is_dns_label(&key.name), "{key}"),
        // `signer:...` names; the generators below never give a signer.
        Kind::ClusterTrustBundle if r.raw.pointer("/spec/signerName").is_some() => {}
        _ => assert!(is_dns_subdomain(&key.name), "{key}"),
    }
    if key.kind.cluster_scoped() {
        assert_eq!(key.namespace, "");
    } else {
        assert!(is_dns_label(&key.namespace), "{key}");
        assert_eq!(
            r.raw["metadata"]["namespace"].as_str(),
            Some(key.namespace.as_str())
        );
        assert_eq!(
            r.object.metadata().namespace.as_deref(),
            Some(key.namespace.as_str())
        );
    }
    assert_eq!(path_beyond_depth(&r.raw, MAX_OBJECT_DEPTH), None);
    let size = serde_json::to_vec(&r.raw).map(|v| v.len()).unwrap_or(0);
    // The defaulted namespace is written back after the size check.
    let slack = key.namespace.len() + r#","namespace":"""#.len();
    assert!(size <= MAX_OBJECT_BYTES + slack, "{size} bytes");
    // Parsing what was accepted accepts it again, as itself.
    let again = parse_object(CLUSTER, r.raw.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.key, r.key);
    assert_eq!(again.raw, r.raw);
    // It travels: the event envelope around it decodes back to the same event.
    let ev = ResourceEvent {
        cluster: CLUSTER.into(),
        source: "fuzz".into(),
        body: EventBody::Upsert {
            key: r.key.clone(),
            object: r.raw.clone(),
            origin: Some(FILE.into()),
        },
    };
    let bytes = serde_json::to_vec(&ev).unwrap_or_default();
    let back: ResourceEvent = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, ev);
}

// ---- texts: bytes and UTF-8 ----

/// Bytes that mean something to YAML, to make random texts reach past the tokenizer.
const YAML_BYTES: &[u8] = b"-:{}[],&*!|>'\"#%@`?~.\n\n\n\t  0123abcxyz\\";

fn yaml_byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), prop::sample::select(YAML_BYTES)]
}

fn yaml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>(),
        prop::sample::select(YAML_BYTES).prop_map(char::from),
        prop::sample::select(vec!['\u{feff}', '\u{85}', '\u{2028}', '\u{0}', '\r'])
    ]
}

// ---- texts: a YAML grammar ----

/// A YAML node as the generator builds it; rendered in block or flow style.
#[derive(Clone, Debug)]
enum Node {
    /// Written as is: may be a number, a keyword, a tag, or break the syntax.
    Plain(String),
    /// Written double-quoted, every non-ASCII character escaped: the value is exactly this.
    Quoted(String),
    /// A scalar of `n` times `c`, up to past the object size limit.
    Big(char, usize),
    List(Vec<Node>),
    /// Keys may repeat.
    Map(Vec<(String, Node)>),
    /// `&aN node`.
    Anchored(u8, Box<Node>),
    /// `*aN`, defined or not.
    Alias(u8),
}

/// A double-quoted YAML scalar whose value is exactly `s`.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.chars().map(escape).collect::<String>())
}

/// `c` inside a double-quoted YAML scalar: printable ASCII as is, anything else escaped (YAML
/// folds some raw characters, e.g. U+2028, and refuses others).
fn escape(c: char) -> String {
    match c {
        '"' => "\\\"".to_string(),
        '\\' => "\\\\".to_string(),
        ' '..='~' => c.to_string(),
        c if u32::from(c) <= 0xffff => format!("\\u{:04x}", u32::from(c)),
        c => format!("\\U{:08x}", u32::from(c)),
    }
}

fn key_text(k: &str) -> String {
    if k.starts_with(|c: char| c.is_ascii_alphanumeric())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

fn flow(n: &Node) -> String {
    match n {
        Node::Plain(s) => s.clone(),
        Node::Quoted(s) => quote(s),
        Node::Big(c, len) => format!("\"{}\"", escape(*c).repeat(*len)),
        Node::List(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Node::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", key_text(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Node::Anchored(a, inner) => format!("&a{a} {}", flow(inner)),
        Node::Alias(a) => format!("*a{a}"),
    }
}

/// Appends the lines of one entry: `head` (`  key:` or `  -`) then `n`, its children indented
/// to `indent`.
fn block_lines(n: &Node, indent: usize, head: String, lines: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    match n {
        Node::Map(entries) if !entries.is_empty() => {
            lines.push(head);
            for (k, v) in entries {
                block_lines(v, indent + 2, format!("{pad}{}:", key_text(k)), lines);
            }
        }
        Node::List(items) if !items.is_empty() => {
            lines.push(head);
            for v in items {
                block_lines(v, indent + 2, format!("{pad}-"), lines);
            }
        }
        Node::Anchored(a, inner)
            if matches!(&**inner, Node::Map(e) if !e.is_empty())
                || matches!(&**inner, Node::List(i) if !i.is_empty()) =>
        {
            block_lines(inner, indent, format!("{head} &a{a}"), lines)
        }
        _ => lines.push(format!("{head} {}", flow(n))),
    }
}

/// One document in block style (a top-level mapping as `key: value` lines).
fn block(n: &Node) -> String {
    match n {
        Node::Map(entries) if !entries.is_empty() => {
            let mut lines = Vec::new();
            for (k, v) in entries {
                block_lines(v, 2, format!("{}:", key_text(k)), &mut lines);
            }
            lines.join("\n") + "\n"
        }
        _ => flow(n) + "\n",
    }
}

fn render(n: &Node, block_style: bool) -> String {
    if block_style {
        block(n)
    } else {
        flow(n) + "\n"
    }
}

/// Plain scalars that YAML reads as something else than a plain string, or not at all.
const TRICKY_PLAIN: &[&str] = &[
    "~",
    "null",
    "Null",
    "true",
    "False",
    "yes",
    "off",
    "0x1F",
    "0o17",
    "1e400",
    "-1e-400",
    "-.inf",
    ".NaN",
    "12:30:00",
    "2001-12-14",
    "123456789012345678901234567890",
    "-0",
    "0.",
    "-",
    "?",
    "a: b",
    "#c",
    "!!str 1",
    "!!binary aGk=",
    "!tag x",
    "!!int x",
    "&x",
    "*x",
    "|",
    ">",
    "%",
    "@",
    "`",
    "<<",
    "'",
    "\"",
    "a #b",
    "x\ty",
];

/// Scalars; `tricky` adds plain ones that may not be strings, or not YAML, and scalars past
/// the object size limit (slow to scan in a debug build: kept rare).
fn scalar(tricky: bool) -> BoxedStrategy<Node> {
    let tricky_weight = if tricky { 2 } else { 0 };
    let huge_weight = if tricky { 1 } else { 0 };
    prop_oneof![
        6 => "[a-z][a-z0-9-]{0,12}".prop_map(Node::Plain),
        tricky_weight => prop::sample::select(TRICKY_PLAIN).prop_map(|s| Node::Plain(s.to_string())),
        3 => ".{0,24}".prop_map(Node::Quoted),
        1 => (
            prop::sample::select(vec!['x', 'é', '"', '\n']),
            prop_oneof![
                16 => 0usize..200,
                3 => 60_000usize..70_000,
                huge_weight => (MAX_OBJECT_BYTES - 64)..(MAX_OBJECT_BYTES + 64),
            ]
        )
            .prop_map(|(c, n)| Node::Big(c, n)),
    ]
    .boxed()
}

fn map_key() -> impl Strategy<Value = String> {
    prop_oneof![
        // Few names: repeats are common.
        4 => prop::sample::select(vec!["a", "b", "kind", "metadata", "name", "<<", "spec"])
            .prop_map(str::to_string),
        1 => ".{0,10}",
    ]
}

/// A tree of nodes; `aliases` adds anchors and aliases, `tricky` scalars that may break the
/// syntax (see [`scalar`]).
fn node(aliases: bool, tricky: bool) -> impl Strategy<Value = Node> {
    let leaf = if aliases {
        prop_oneof![4 => scalar(tricky), 1 => (0u8..4).prop_map(Node::Alias)].boxed()
    } else {
        scalar(tricky)
    };
    leaf.prop_recursive(6, 48, 6, move |inner| {
        let containers = prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Node::List),
            prop::collection::vec((map_key(), inner.clone()), 0..6).prop_map(Node::Map),
        ];
        if aliases {
            prop_oneof![
                3 => containers,
                1 => (0u8..4, inner).prop_map(|(a, n)| Node::Anchored(a, Box::new(n))),
            ]
            .boxed()
        } else {
            containers.boxed()
        }
    })
}

/// Edits made to a rendered text: `(where, as a fraction of its length, what)`.
#[derive(Clone, Debug)]
enum Edit {
    Insert(f64, &'static str),
    Delete(f64, usize),
    Truncate(f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let junk = prop::sample::select(vec![
        "\t",
        "\u{feff}",
        "\n---\n",
        "\n...\n",
        "#",
        ":",
        " ",
        "\r\n",
        "\0",
        "%YAML 1.2\n---\n",
        "- ",
        "{",
        "]",
        "&a0 ",
        "*a0",
        "\n  ",
    ]);
    prop_oneof![
        4 => (0.0..1.0f64, junk).prop_map(|(at, s)| Edit::Insert(at, s)),
        2 => (0.0..1.0f64, 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (0.0..1.0f64).prop_map(Edit::Truncate),
    ]
}

/// The char boundary nearest below `frac` of `text`'s length.
fn boundary(text: &str, frac: f64) -> usize {
    let mut at = ((text.len() as f64) * frac) as usize;
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply_edit(text: &mut String, e: &Edit) {
    match e {
        Edit::Insert(frac, s) => {
            let at = boundary(text, *frac);
            text.insert_str(at, s);
        }
        Edit::Delete(frac, n) => {
            let at = boundary(text, *frac);
            let end = text[at..]
                .char_indices()
                .nth(*n)
                .map_or(text.len(), |(i, _)| at + i);
            text.replace_range(at..end, "");
        }
        Edit::Truncate(frac) => {
            let at = boundary(text, *frac);
            text.truncate(at);
        }
    }
}

// ---- texts: Kubernetes-like objects ----

/// One object as generated, with what its text says.
#[derive(Clone, Debug)]
struct K8s {
    api_version: String,
    kind: String,
    name: Option<String>,
    namespace: Option<String>,
    spec: Option<Node>,
    /// A top-level key written twice.
    duplicate: bool,
}

impl K8s {
    fn known_kind(&self) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == self.kind)
    }

    fn text(&self, block_style: bool) -> String {
        // A name YAML reads as a plain string is sometimes written plain.
        let scalar = |s: &str| {
            let plain = s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.bytes().all(|b| label_char(b) || b == b'.')
                && !matches!(s, "null" | "true" | "false");
            if plain {
                Node::Plain(s.to_string())
            } else {
                Node::Quoted(s.to_string())
            }
        };
        let mut meta = Vec::new();
        if let Some(n) = &self.name {
            meta.push(("name".to_string(), scalar(n)));
        }
        if let Some(ns) = &self.namespace {
            meta.push(("namespace".to_string(), scalar(ns)));
        }
        let mut root = vec![
            ("apiVersion".to_string(), scalar(&self.api_version)),
            ("kind".to_string(), scalar(&self.kind)),
            ("metadata".to_string(), Node::Map(meta)),
        ];
        if let Some(spec) = &self.spec {
            root.push(("spec".to_string(), spec.clone()));
        }
        if self.duplicate {
            root.push(("kind".to_string(), scalar(&self.kind)));
        }
        render(&Node::Map(root), block_style)
    }
}

fn object_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?",
        1 => "[a-z0-9]{60,66}",
        1 => (240usize..=260).prop_map(|n| "a".repeat(n)),
        1 => (120usize..=130).prop_map(|n| "a.".repeat(n) + "b"),
        1 => "[a-zA-Z0-9./:_ -]{0,20}",
        1 => ".{0,12}",
        1 => Just(String::new()),
    ]
}

fn k8s_object() -> impl Strategy<Value = K8s> {
    let kind = prop_oneof![
        6 => prop::sample::select(Kind::ALL.to_vec()).prop_map(|k| k.as_str().to_string()),
        1 => "[A-Za-z]{0,16}",
    ];
    // 0: right for the kind; 1: core group; 2: anything.
    let api = prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    let spec = prop_oneof![1 => Just(None), 1 => node(false, false).prop_map(Some)];
    (
        kind,
        api,
        "[a-z./0-9]{0,24}",
        prop::option::weighted(0.95, object_name()),
        prop::option::of(
            prop_oneof![4 => "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1 => object_name()],
        ),
        spec,
        prop::bool::weighted(0.05),
    )
        .prop_map(|(kind, api, junk_api, name, namespace, spec, duplicate)| {
            let api_version = match (api, Kind::ALL.into_iter().find(|k| k.as_str() == kind)) {
                (0, Some(k)) if k.group().is_empty() => "v1".to_string(),
                (0, Some(k)) => format!("{}/v1", k.group()),
                (1, _) => "v1".to_string(),
                _ => junk_api,
            };
            K8s {
                api_version,
                kind,
                name,
                namespace,
                spec,
                duplicate,
            }
        })
}

/// Whether `n` holds a mapping that repeats a key.
fn repeats_a_key(n: &Node) -> bool {
    match n {
        Node::Map(entries) => {
            let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            keys.windows(2).any(|w| w[0] == w[1]) || entries.iter().any(|(_, v)| repeats_a_key(v))
        }
        Node::List(items) => items.iter().any(repeats_a_key),
        Node::Anchored(_, inner) => repeats_a_key(inner),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn fuzz_parse_arbitrary_bytes(bytes in prop::collection::vec(yaml_byte(), 0..1024)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (resources, errors) = parse_bounded(text);
        check_outcome(&resources, &errors);
    }

    #[test]
    fn fuzz_parse_arbitrary_utf8(chars in prop::collection::vec(yaml_char(), 0..512)) {
        let text: String = chars.into_iter().collect();
        let (resources, errors) = parse_bounded(text);
        check_outcome(&resources, &errors);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn fuzz_parse_yaml_grammar(
        docs in prop::collection::vec(node(true, true), 1..4),
        block_style in any::<bool>(),
        bom in prop::bool::weighted(0.2),
        edits in prop::collection::vec(edit(), 0..3),
    ) {
        let mut text = if bom { "\u{feff}".to_string() } else { String::new() };
        text += &docs.iter().map(|d| render(d, block_style)).collect::<Vec<_>>().join("---\n");
        for e in &edits {
            apply_edit(&mut text, e);
        }
        let (resources, errors) = parse_bounded(text);
        check_outcome(&resources, &errors);
    }

    /// Whole objects: the outcome of each document is the one its identity calls for.
    #[test]
    fn fuzz_parse_k8s_objects(
        objects in prop::collection::vec(k8s_object(), 1..5),
        block_style in any::<bool>(),
        bom in any::<bool>(),
    ) {
        let mut text = if bom { "\u{feff}".to_string() } else { String::new() };
        text += &objects.iter().map(|o| o.text(block_style)).collect::<Vec<_>>().join("---\n");
        let (resources, errors) = parse_bounded(text);
        check_outcome(&resources, &errors);
        // Every document is valid YAML: each has exactly one outcome, in order.
        prop_assert_eq!(resources.len() + errors.len(), objects.len(), "{:?}", errors);
        let mut accepted = resources.iter();
        for (i, o) in objects.iter().enumerate() {
            let refusal = errors.iter().find(|e| e.document == Some(i));
            let kind = o.known_kind();
            let name = o.name.clone().unwrap_or_default();
            let namespace_ok = o.namespace.as_deref().is_none_or(|ns| ns.is_empty() || is_dns_label(ns));
            let name_ok = match kind {
                Some(Kind::Namespace) => is_dns_label(&name),
                _ => is_dns_subdomain(&name),
            };
            if o.duplicate || o.spec.as_ref().is_some_and(repeats_a_key) {
                let e = refusal.expect("a repeated key is refused");
                // Unless the spec, read before the repeat, is already too large.
                prop_assert!(
                    e.message.contains("duplicate key") || e.message.contains("aliases are expanded"),
                    "{}", e
                );
                continue;
            }
            let must_accept = name_ok
                && matches!(kind, Some(Kind::ConfigMap | Kind::Namespace))
                && o.api_version == "v1"
                && (namespace_ok || kind == Some(Kind::Namespace))
                && o.spec.is_none();
            if must_accept {
                prop_assert!(refusal.is_none(), "{:?} refused: {:?}", o, refusal);
            }
            if !name_ok || kind.is_none() {
                prop_assert!(refusal.is_some(), "{:?} accepted", o);
            }
            if let (None, Some(k)) = (refusal, kind) {
                let r = accepted.next().expect("one resource per accepted document");
                let namespace = match o.namespace.as_deref() {
                    _ if k.cluster_scoped() => "",
                    None | Some("") => "default",
                    Some(ns) => ns,
                };
                prop_assert_eq!(&r.key, &ResourceKey::new(CLUSTER, k, namespace, name));
            }
        }
    }
}

/// JSON values as an event carries them (no YAML in between): any type where a string is
/// expected.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        object_name().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(map_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(2000))]

    /// `parse_object` on values as the store folds them from events: the identity fields of any
    /// JSON type, and arbitrary fields beside them.
    #[test]
    fn fuzz_parse_object_json_values(
        kind in prop_oneof![
            4 => prop::sample::select(Kind::ALL.to_vec()).prop_map(|k| serde_json::Value::from(k.as_str())),
            1 => json_value(),
        ],
        right_api in prop::bool::weighted(0.8),
        api in json_value(),
        name in prop_oneof![4 => object_name().prop_map(serde_json::Value::from), 1 => json_value()],
        namespace in prop::option::of(json_value()),
        metadata_extra in prop::collection::btree_map(map_key(), json_value(), 0..3),
        extra in prop::collection::btree_map(map_key(), json_value(), 0..4),
    ) {
        let api_version = match kind.as_str().and_then(Kind::parse) {
            Some(k) if right_api && k.group().is_empty() => serde_json::Value::from("v1"),
            Some(k) if right_api => serde_json::Value::from(format!("{}/v1", k.group())),
            _ => api,
        };
        let mut metadata: serde_json::Map<String, serde_json::Value> =
            metadata_extra.into_iter().collect();
        metadata.insert("name".into(), name.clone());
        if let Some(ns) = namespace {
            metadata.insert("namespace".into(), ns);
        }
        let mut object: serde_json::Map<String, serde_json::Value> = extra.into_iter().collect();
        object.insert("apiVersion".into(), api_version);
        object.insert("kind".into(), kind);
        object.insert("metadata".into(), metadata.into());
        match parse_object(CLUSTER, object.into()) {
            Ok(r) => {
                check_accepted(&r);
                prop_assert_eq!(Some(r.key.name.as_str()), name.as_str());
            }
            Err(e) => prop_assert!(!e.message.is_empty(), "{:?}", e),
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// Nesting around [`MAX_OBJECT_DEPTH`], any mix of lists and mappings, either style.
    #[test]
    fn fuzz_parse_depth_limit(
        shape in prop::collection::vec(any::<bool>(), 55..76),
        block_style in any::<bool>(),
    ) {
        let mut extra = Node::Plain("x".into());
        for &list in shape.iter().rev() {
            extra = if list {
                Node::List(vec![extra])
            } else {
                Node::Map(vec![("k".into(), extra)])
            };
        }
        let root = Node::Map(vec![
            ("apiVersion".into(), Node::Plain("v1".into())),
            ("kind".into(), Node::Plain("ConfigMap".into())),
            ("metadata".into(), Node::Map(vec![("name".into(), Node::Plain("deep".into()))])),
            ("extra".into(), extra),
        ]);
        let (resources, errors) = parse_bounded(render(&root, block_style));
        check_outcome(&resources, &errors);
        // The top mapping is level 1.
        let depth = 1 + shape.len();
        if depth <= MAX_OBJECT_DEPTH {
            prop_assert!(errors.is_empty(), "{:?}", errors);
            prop_assert_eq!(resources.len(), 1);
        } else {
            prop_assert!(resources.is_empty());
            prop_assert_eq!(errors.len(), 1);
            prop_assert!(errors[0].message.contains("nested deeper than 64"), "{}", errors[0]);
            prop_assert!(errors[0].field.as_deref().is_some_and(|f| f.starts_with("extra")));
        }
    }

    /// The size budget charges no more than the JSON weighs: a budget of exactly the value's
    /// size accepts it, whatever the value.
    #[test]
    fn fuzz_yaml_budget_never_refuses_what_fits(
        doc in node(true, true),
        block_style in any::<bool>(),
        more in 0usize..4,
    ) {
        let text = render(&doc, block_style);
        let read = |budget| {
            serde_yaml_ng::Deserializer::from_str(&text)
                .next()
                .map(|d| yaml::document(d, budget))
        };
        if let Some(Ok(value)) = read(usize::MAX) {
            let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
            match read(size + more) {
                Some(Ok(v)) => prop_assert_eq!(v, value),
                Some(Err(yaml::DocumentError::TooLarge { budget })) => {
                    prop_assert!(false, "{size} bytes refused with a budget of {budget}")
                }
                _ => prop_assert!(false, "the second read failed otherwise"),
            }
        }
    }
}

proptest! {
    #![proptest_config(config_costly(8))]

    /// "Billion laughs": `levels` anchors, each a list of `fan` aliases of the one before, the
    /// first a list of `width` scalars of `scalar` bytes. Small texts that expand past the
    /// object size limit are refused while being read, and the document after still parses.
    #[test]
    fn fuzz_parse_alias_bombs(
        levels in 2usize..9,
        fan in 2usize..12,
        width in 1usize..400,
        scalar in 1usize..64,
    ) {
        let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\nlol:\n");
        text += &format!("  a0: &a0 [{}]\n", vec!["x".repeat(scalar); width].join(","));
        for l in 1..levels {
            text += &format!("  a{l}: &a{l} [{}]\n", vec![format!("*a{}", l - 1); fan].join(","));
        }
        text += "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\n";
        // Scalars alone, without quotes, brackets or commas: below what the JSON weighs.
        let expanded = (0..levels).map(|l| fan.saturating_pow(l as u32)).sum::<usize>()
            .saturating_mul(width)
            .saturating_mul(scalar);
        let (resources, errors) = parse_bounded(text);
        check_outcome(&resources, &errors);
        if expanded > MAX_OBJECT_BYTES {
            prop_assert!(resources.iter().all(|r| r.key.name != "lol"));
            prop_assert_eq!(errors.len(), 1);
            let e = &errors[0];
            prop_assert_eq!(e.document, Some(0));
            prop_assert!(
                e.message.contains("once its YAML aliases are expanded")
                    || e.message.contains("repetition limit exceeded")
                    || e.message.contains("over the limit of"),
                "{}", e
            );
        }
        let syntax_stop = errors.iter().any(|e| e.message.starts_with("invalid YAML"));
        if !syntax_stop {
            prop_assert!(resources.iter().any(|r| r.key.name == "after"), "{:?}", errors);
        }
    }
}
