//! One YAML document → `serde_json::Value`, refusing a mapping that repeats a key and a
//! document that expands beyond a size budget.
//!
//! serde_json's own `Value` visitor inserts entries one after the other, so a repeated key
//! silently replaces the earlier one (a stray `rules: []` at the end of a route would drop
//! every rule). YAML says keys are unique and `kubectl apply` refuses such a document ("key
//! already set in map"); so do we, naming the key and where it is. Scalars become exactly what
//! serde_json's visitor makes of them.
//!
//! The YAML deserializer expands aliases, and its own limit (jumps ≤ 100 × the document's
//! events) still lets the expansion grow with the square of the document: a 3 KiB "billion
//! laughs" document became 118 MB of JSON, 2 GB of memory and a minute of CPU before the
//! object size limit could refuse it. So the value is charged, while it is built, at least
//! what its compact JSON will weigh, and building stops once the budget is spent.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::{Cell, RefCell};
use std::fmt;

/// A repeated key, with what was known of the object when it was found.
#[derive(Debug, Default)]
pub(super) struct Duplicate {
    /// Path of the repeated key, e.g. `spec.rules`.
    pub field: String,
    pub key: String,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// Why a document did not become a value.
pub(super) enum DocumentError {
    /// The value would serialize to more than the budget (bytes of compact JSON), aliases
    /// expanded.
    TooLarge { budget: usize },
    Duplicate {
        // Boxed: only bad input builds it, and it would make every Ok large.
        duplicate: Box<Duplicate>,
        /// 1-based line and column of the mapping that repeats the key.
        at: Option<(usize, usize)>,
    },
    /// Anything the YAML deserializer reports (syntax, recursion limit, ...).
    Yaml(serde_yaml_ng::Error),
}

/// Deserializes one document of a YAML stream into a value whose compact JSON is at most
/// `budget` bytes.
pub(super) fn document(
    doc: serde_yaml_ng::Deserializer<'_>,
    budget: usize,
) -> Result<Value, DocumentError> {
    let shared = Shared {
        found: RefCell::new(None),
        budget: Cell::new(budget),
        exceeded: Cell::new(false),
    };
    let seed = ValueSeed {
        path: Path::Root,
        shared: &shared,
    };
    seed.deserialize(doc).map_err(|e| {
        if shared.exceeded.get() {
            return DocumentError::TooLarge { budget };
        }
        match shared.found.into_inner() {
            Some(duplicate) => DocumentError::Duplicate {
                duplicate: Box::new(duplicate),
                at: e.location().map(|l| (l.line(), l.column())),
            },
            None => DocumentError::Yaml(e),
        }
    })
}

/// What every visitor of one document shares.
struct Shared {
    /// Set to the first repeated key; the error itself only carries a message.
    found: RefCell<Option<Duplicate>>,
    /// Bytes of compact JSON the rest of the value may still weigh.
    budget: Cell<usize>,
    /// Set when the budget ran out.
    exceeded: Cell<bool>,
}

impl Shared {
    /// Charges `bytes` of JSON. Each value is charged a lower bound of its compact JSON (so
    /// the budget never refuses a value that would fit): a scalar its shortest form (a string
    /// its bytes and quotes, a number 1, `null`/`true`/`false` 4), a list or mapping its two
    /// brackets and a comma per item after the first, an entry its key, quoted, and `:`.
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(bytes) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom(
                    "document too large once its aliases are expanded",
                ))
            }
        }
    }
}

/// Where a value sits in the document, as a linked list through the visitors' stack frames
/// (no allocation unless an error needs the text).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

struct ValueSeed<'a> {
    path: Path<'a>,
    shared: &'a Shared,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.shared.charge(4)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.shared.charge(1)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.shared.charge(1)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        use serde::Deserialize;
        self.shared.charge(1)?;
        Number::deserialize(de::value::I128Deserializer::<E>::new(v)).map(Value::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        use serde::Deserialize;
        self.shared.charge(1)?;
        Number::deserialize(de::value::U128Deserializer::<E>::new(v)).map(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.shared.charge(1)?;
        // As serde_json: NaN and infinities have no JSON form.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.shared.charge(v.len().saturating_add(2))?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.shared.charge(v.len().saturating_add(2))?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.shared.charge(4)?;
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.shared.charge(4)?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.shared.charge(2)?;
        let mut items = Vec::new();
        loop {
            let seed = ValueSeed {
                path: Path::Index(&self.path, items.len()),
                shared: self.shared,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => {
                    // The comma before it.
                    if !items.is_empty() {
                        self.shared.charge(1)?;
                    }
                    items.push(v)
                }
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        self.shared.charge(2)?;
        let mut map = Map::new();
        let result = self.fill(&mut map, &mut access);
        if result.is_err() && matches!(self.path, Path::Root) {
            // The error unwinds through the document's top mapping: what it holds so far
            // (usually kind and metadata, written before spec) names the object.
            if let Some(d) = self.shared.found.borrow_mut().as_mut() {
                let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
                let meta = map.get("metadata");
                d.kind = text(map.get("kind"));
                d.name = text(meta.and_then(|m| m.get("name")));
                d.namespace = text(meta.and_then(|m| m.get("namespace")));
            }
        }
        result.map(|()| Value::Object(map))
    }
}

impl ValueSeed<'_> {
    fn fill<'de, A: MapAccess<'de>>(
        &self,
        map: &mut Map<String, Value>,
        access: &mut A,
    ) -> Result<(), A::Error> {
        while let Some(key) = access.next_key::<String>()? {
            // `"key":`, and the comma before it.
            let comma = usize::from(!map.is_empty());
            self.shared
                .charge(key.len().saturating_add(3).saturating_add(comma))?;
            let path = Path::Key(&self.path, &key);
            if map.contains_key(&key) {
                *self.shared.found.borrow_mut() = Some(Duplicate {
                    field: path.to_string(),
                    key: key.clone(),
                    ..Duplicate::default()
                });
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = access.next_value_seed(ValueSeed {
                path,
                shared: self.shared,
            })?;
            map.insert(key, value);
        }
        Ok(())
    }
}
