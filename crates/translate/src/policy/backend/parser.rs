//! The reader every part of [`super`] shares: typed values at JSON pointers of the spec, each
//! invalid one recorded, with its Envoy Gateway section, in the policy's [`FieldErrors`] (the
//! one error collection of a translation) rather than returned.

use crate::ir::cluster::Nanos;
use crate::policy::FieldErrors;
use crate::values::{parse_go_duration, parse_quantity};
use serde_json::Value;

/// The spec being read and the errors found so far.
pub(super) struct Parser<'a> {
    pub(super) spec: &'a Value,
    pub(super) e: &'a mut FieldErrors,
}

/// Envoy's `google.protobuf.Duration` must be positive where these durations go.
fn positive(n: i64) -> bool {
    n > 0
}

impl<'a> Parser<'a> {
    pub(super) fn err(&mut self, section: &'static str, msg: String) {
        self.e.add(section, msg);
    }

    pub(super) fn get(&self, pointer: &str) -> Option<&'a Value> {
        let spec: &'a Value = self.spec;
        spec.pointer(pointer).filter(|v| !v.is_null())
    }

    pub(super) fn str(&self, pointer: &str) -> Option<&'a str> {
        self.get(pointer).and_then(Value::as_str)
    }

    pub(super) fn bool(&self, pointer: &str) -> Option<bool> {
        self.get(pointer).and_then(Value::as_bool)
    }

    /// A non-negative integer that fits a u32.
    pub(super) fn u32(&mut self, pointer: &str, section: &'static str, name: &str) -> Option<u32> {
        let v = self.get(pointer)?;
        match v.as_i64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(section, format!("invalid {name} value {v}"));
                None
            }
        }
    }

    /// A Go duration (Envoy Gateway's `invalid <Name> value <v>` when it does not parse).
    pub(super) fn duration(
        &mut self,
        pointer: &str,
        section: &'static str,
        name: &str,
    ) -> Option<Nanos> {
        let v = self.str(pointer)?.to_string();
        match parse_go_duration(&v) {
            Ok(d) if d.as_nanos() >= 0 => Some(d.as_nanos()),
            _ => {
                self.err(section, format!("invalid {name} value {v}"));
                None
            }
        }
    }

    /// A duration that must be above zero (Envoy refuses zero where it goes).
    pub(super) fn positive_duration(
        &mut self,
        pointer: &str,
        section: &'static str,
        name: &str,
    ) -> Option<Nanos> {
        let d = self.duration(pointer, section, name)?;
        if !positive(d) {
            self.err(section, format!("{name} must be greater than zero"));
            return None;
        }
        Some(d)
    }

    /// A Kubernetes quantity that fits a u32 (bytes).
    pub(super) fn quantity_u32(
        &mut self,
        pointer: &str,
        section: &'static str,
        name: &str,
    ) -> Option<u32> {
        let v = self.get(pointer)?;
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        match parse_quantity(&text) {
            Some(q) if q.fract() == 0.0 && (0.0..=4_294_967_295.0).contains(&q) => Some(q as u32),
            Some(q) if q.fract() == 0.0 => {
                self.err(section, format!("{name} value {text} is out of range"));
                None
            }
            _ => {
                self.err(section, format!("invalid {name} value {text}"));
                None
            }
        }
    }

    /// A percentage (0 to 100) as millionths.
    pub(super) fn percent(&mut self, pointer: &str, section: &'static str) -> Option<u32> {
        let v = self.get(pointer)?;
        match v.as_f64() {
            Some(p) if (0.0..=100.0).contains(&p) => Some((p * 10_000.0).round() as u32),
            _ => {
                self.err(section, format!("invalid percentage {v}"));
                None
            }
        }
    }
}
