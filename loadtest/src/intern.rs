//! String interning for the recorder: resource names and versions repeat across thousands of
//! proxies, so each distinct string is stored once and proxies keep 4-byte symbols.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// An interned string. `Sym(0)` is the empty string (also "absent" / "removed").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

impl Sym {
    pub const EMPTY: Sym = Sym(0);
}

#[derive(Debug)]
struct Table {
    ids: HashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
}

/// A thread-safe interner. Lookups of known strings take a read lock only.
#[derive(Debug)]
pub struct Interner {
    table: RwLock<Table>,
}

impl Default for Interner {
    fn default() -> Self {
        let empty: Arc<str> = Arc::from("");
        Self {
            table: RwLock::new(Table {
                ids: HashMap::from([(empty.clone(), Sym::EMPTY)]),
                strings: vec![empty],
            }),
        }
    }
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn intern(&self, s: &str) -> Sym {
        if let Some(id) = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .get(s)
        {
            return *id;
        }
        let mut t = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = t.ids.get(s) {
            return *id;
        }
        let id = Sym(u32::try_from(t.strings.len()).unwrap_or(u32::MAX));
        let s: Arc<str> = Arc::from(s);
        t.strings.push(s.clone());
        t.ids.insert(s, id);
        id
    }

    /// The string of `sym` ("" for an unknown symbol).
    pub fn resolve(&self, sym: Sym) -> Arc<str> {
        let t = self.table.read().unwrap_or_else(PoisonError::into_inner);
        t.strings
            .get(sym.0 as usize)
            .cloned()
            .unwrap_or_else(|| t.strings[0].clone())
    }

    /// Distinct strings held (the empty string included).
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .strings
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_resolves() {
        let i = Interner::new();
        assert_eq!(i.intern(""), Sym::EMPTY);
        let a = i.intern("listener-80");
        let b = i.intern("route-80");
        assert_ne!(a, b);
        assert_eq!(i.intern("listener-80"), a);
        assert_eq!(&*i.resolve(a), "listener-80");
        assert_eq!(&*i.resolve(Sym(999)), "");
        assert_eq!(i.len(), 3);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let i = Arc::new(Interner::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let i = i.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .map(|n| i.intern(&format!("v{n}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<Sym>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        assert_eq!(i.len(), 501);
    }
}
