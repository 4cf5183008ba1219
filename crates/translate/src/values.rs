//! Values: the scalar vocabulary of the input (durations, creation timestamps, RE2 patterns),
//! parsed, checked and ordered exactly once, with Envoy Gateway's (that is, Go's) rules.
//!
//! A leaf: it uses nothing else of this crate, and every module may use it.

use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use flotilla_model::ResourceKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use std::cmp::Ordering;

/// Why a duration string was refused. The messages are Go's `time.ParseDuration` errors word
/// for word: Envoy Gateway puts them in status conditions, and so do we.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("time: invalid duration {}", go_quote(.input))]
    Invalid { input: String },
    #[error("time: missing unit in duration {}", go_quote(.input))]
    MissingUnit { input: String },
    #[error("time: unknown unit {} in duration {}", go_quote(.unit), go_quote(.input))]
    UnknownUnit { unit: String, input: String },
    /// Go accepts a sign; Gateway API durations (GEP-2257) have none, and Envoy rejects the
    /// negative timeouts a sign would produce.
    #[error("time: invalid duration {}: Gateway API durations take no sign", go_quote(.input))]
    Signed { input: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A duration as Go's `time.Duration` holds it: signed nanoseconds in an `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(i64);

/// Envoy's bound on `google.protobuf.Duration` (its proto validation, ±10,000 years).
pub const ENVOY_MAX_DURATION_SECONDS: i64 = 315_576_000_000;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

// Go's i64 of nanoseconds (about 292 years) is far inside Envoy's bound, so every duration the
// parser accepts is one Envoy accepts: an overflow is refused by the parser, never wrapped.
const _: () = assert!(i64::MAX / NANOS_PER_SECOND < ENVOY_MAX_DURATION_SECONDS);

impl GoDuration {
    pub fn from_nanos(nanos: i64) -> Self {
        GoDuration(nanos)
    }

    pub fn as_nanos(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The protobuf form: seconds and nanos carry the same sign (Rust's `/` and `%` truncate
    /// toward zero, as the proto requires).
    pub fn to_proto(self) -> ProtoDuration {
        ProtoDuration {
            seconds: self.0 / NANOS_PER_SECOND,
            // |remainder| < 1e9 always fits an i32.
            nanos: i32::try_from(self.0 % NANOS_PER_SECOND).unwrap_or_default(),
        }
    }
}

/// Nanoseconds per unit, Go's `unitMap` (both micro signs included).
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a bare `0`; several
/// components add up (`1h30m`). Envoy Gateway's policies take this full form.
///
/// Go computes a fraction as `float64(f) * (float64(unit) / scale)`; here it is the exact
/// `f * unit / scale` in integers (truncated, as Go's conversion truncates), so `1.005s` is
/// 1,005,000,000 ns. Fraction digits beyond what a u64 holds are ignored, as Go ignores them.
/// A total beyond Go's `i64` nanoseconds is refused.
pub fn parse_go_duration(input: &str) -> Result<GoDuration> {
    let invalid = || Error::Invalid {
        input: input.to_string(),
    };
    let mut s = input.as_bytes();
    let mut neg = false;
    if let Some((&c, rest)) = s.split_first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = rest;
        }
    }
    if s == b"0" {
        return Ok(GoDuration(0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    // Go's bound: the magnitude may reach 1<<63 only for a negative result.
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // [0-9]*
        let (int, rest) = leading_int(s).ok_or_else(invalid)?;
        let had_int = rest.len() != s.len();
        s = rest;
        // (\.[0-9]*)?
        let mut frac = (0u64, 1u64);
        let mut had_frac = false;
        if let Some(rest) = s.strip_prefix(b".") {
            let (f, scale, rest2) = leading_fraction(rest);
            had_frac = rest2.len() != rest.len();
            frac = (f, scale);
            s = rest2;
        }
        if !had_int && !had_frac {
            // No digits: ".s", "-.s".
            return Err(invalid());
        }
        let unit_len = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(Error::MissingUnit {
                input: input.to_string(),
            });
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        // The unit runs up to a digit or a dot, both ASCII, so it is whole UTF-8.
        let unit = String::from_utf8_lossy(unit);
        let per = unit_nanos(&unit).ok_or_else(|| Error::UnknownUnit {
            unit: unit.to_string(),
            input: input.to_string(),
        })?;
        let mut v = int
            .checked_mul(per)
            .filter(|&v| v <= LIMIT)
            .ok_or_else(invalid)?;
        if frac.0 > 0 {
            // f < 2^63 and per < 2^42: the product fits a u128, and the quotient is below
            // `per`, so it fits a u64.
            let part = u128::from(frac.0) * u128::from(per) / u128::from(frac.1);
            let part = u64::try_from(part).map_err(|_| invalid())?;
            v = v
                .checked_add(part)
                .filter(|&v| v <= LIMIT)
                .ok_or_else(invalid)?;
        }
        total = total
            .checked_add(v)
            .filter(|&t| t <= LIMIT)
            .ok_or_else(invalid)?;
    }
    if neg {
        // -(1<<63) is i64::MIN exactly.
        let nanos = 0i64.checked_sub_unsigned(total).ok_or_else(invalid)?;
        return Ok(GoDuration(nanos));
    }
    i64::try_from(total).map(GoDuration).map_err(|_| invalid())
}

/// A Gateway API `Duration` (GEP-2257: timeouts, retry backoff, session timeouts). The
/// documented form is a subset of Go's, and Envoy Gateway parses it with Go's parser, so this
/// is Go's parser, except that a sign is refused: GEP-2257 has none and Envoy rejects the
/// negative durations it would make.
pub fn parse_gateway_duration(input: &str) -> Result<GoDuration> {
    if input.starts_with(['-', '+']) {
        return Err(Error::Signed {
            input: input.to_string(),
        });
    }
    parse_go_duration(input)
}

/// Go's `leadingInt`: the leading `[0-9]*` of `s`; `None` when it passes 1<<63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let mut x: u64 = 0;
    for &c in &s[..end] {
        x = x
            .checked_mul(10)?
            .checked_add(u64::from(c - b'0'))
            .filter(|&x| x <= 1 << 63)?;
    }
    Some((x, &s[end..]))
}

/// Go's `leadingFraction`: the leading `[0-9]*` of `s` as `x / scale`; digits past what fits
/// stop adding precision (they are still consumed).
fn leading_fraction(s: &[u8]) -> (u64, u64, &[u8]) {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let (mut x, mut scale) = (0u64, 1u64);
    let mut overflow = false;
    for &c in &s[..end] {
        if overflow {
            continue;
        }
        let next = x
            .checked_mul(10)
            .and_then(|y| y.checked_add(u64::from(c - b'0')))
            .filter(|&y| y <= 1 << 63);
        // `scale` grows with `x`; once `x` stops, so does it (10^19 < u64::MAX).
        match (next, scale.checked_mul(10)) {
            (Some(y), Some(sc)) => {
                x = y;
                scale = sc;
            }
            _ => overflow = true,
        }
    }
    (x, scale, &s[end..])
}

/// A Kubernetes `resource.Quantity` (`128Ki`, `1G`, `1.5M`, `100m`) as a number: decimal
/// suffixes (k, M, G, T, P, E), binary ones (Ki … Ei), `m` (milli) and exponents (`1e3`).
/// `None` when it is not a quantity. The value is exact for every integer a policy field can
/// hold (f64 holds integers to 2^53; the policy limits are below 2^33).
pub fn parse_quantity(input: &str) -> Option<f64> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Go's `time.quote`: double quotes, `"` and `\` escaped, bytes of non-ASCII or control
/// characters as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c.is_ascii() && c >= ' ' {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push('"');
    out
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z): what a missing `creationTimestamp` is to
/// Envoy Gateway, older than every real timestamp.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// The age of an object for Envoy Gateway's precedence (`Resources.Sort` and the conflict
/// rules built on it): oldest `creationTimestamp` first, compared as instants, never as text
/// (`…:45.5Z` is younger than `…:45Z`); equal times fall back to `"namespace/name"` compared
/// as one string, as Envoy Gateway formats and compares it.
#[derive(Debug, Clone, Copy)]
pub struct Age<'a> {
    created: Timestamp,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> Age<'a> {
    pub fn of(meta: &ObjectMeta, key: &'a ResourceKey) -> Self {
        let created = match &meta.creation_timestamp {
            Some(t) => t.0,
            None => Timestamp::from_second(GO_ZERO_TIME_SECONDS).unwrap_or(Timestamp::MIN),
        };
        Age {
            created,
            namespace: &key.namespace,
            name: &key.name,
        }
    }

    /// `namespace + "/" + name` compared bytewise without building the string: `-` and `.`
    /// sort before `/`, so `a-b/x` comes before `a/x`, unlike a (namespace, name) pair.
    fn cmp_name(&self, other: &Self) -> Ordering {
        let a = self
            .namespace
            .bytes()
            .chain([b'/'])
            .chain(self.name.bytes());
        let b = other
            .namespace
            .bytes()
            .chain([b'/'])
            .chain(other.name.bytes());
        a.cmp(b)
    }
}

impl Ord for Age<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.created
            .cmp(&other.created)
            .then_with(|| self.cmp_name(other))
    }
}

impl PartialOrd for Age<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Age<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Age<'_> {}

/// A route's place in Envoy Gateway's route order, owned: its kind's rank (HTTPRoute before
/// GRPCRoute), then its [`Age`]. It orders the routes' rules among equal matches, and, unlike an
/// index into the sorted list, stays the same when other routes come and go (so a route's
/// translation can be kept while others change).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RouteOrder {
    kind: u8,
    created: Timestamp,
    /// `namespace/name`, compared bytewise as [`Age`] compares it.
    name: String,
}

impl RouteOrder {
    pub fn of(kind: u8, meta: &ObjectMeta, key: &ResourceKey) -> Self {
        RouteOrder {
            kind,
            created: Age::of(meta, key).created,
            name: format!("{}/{}", key.namespace, key.name),
        }
    }
}

/// Validates an RE2 pattern the way Envoy Gateway's `regex.Validate` reports it.
pub(crate) fn check_regex(value: &str) -> Result<(), String> {
    // Envoy evaluates RE2. The `regex` crate accepts the same syntax (both guarantee linear
    // time and reject backreferences/lookaround), so a pattern it rejects would be NACKed.
    if let Some(ops) = nested_repetition(value) {
        return Err(format!(
            "regex {value:?} is invalid: error parsing regexp: invalid nested repetition operator: `{ops}`"
        ));
    }
    match regex::Regex::new(value) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "regex {value:?} is invalid: error parsing regexp: {}",
            go_regex_error(value, &e.to_string())
        )),
    }
}

/// RE2 (and Go) reject a repetition operator applied to a repetition (`a**`, `a*+`), which the
/// `regex` crate accepts; a single `?` after one is the lazy form and is fine. Returns the
/// offending operators.
fn nested_repetition(p: &str) -> Option<String> {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    // The previous quantifier (its text) when the last token was one.
    let mut prev: Option<String> = None;
    let mut lazy_allowed = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            prev = None;
            continue;
        }
        if in_class {
            if c == ']' {
                in_class = false;
            }
            i += 1;
            continue;
        }
        let op: Option<String> = match c {
            '*' | '+' | '?' => Some(c.to_string()),
            '{' => {
                let close = chars[i..].iter().position(|&x| x == '}').map(|j| i + j);
                close
                    .map(|j| chars[i..=j].iter().collect::<String>())
                    .filter(|s| {
                        let inner = &s[1..s.len() - 1];
                        !inner.is_empty()
                            && inner.chars().all(|x| x.is_ascii_digit() || x == ',')
                            && inner.chars().next().is_some_and(|x| x.is_ascii_digit())
                            && inner.matches(',').count() <= 1
                    })
            }
            _ => None,
        };
        match op {
            Some(op) => {
                if let Some(pv) = &prev {
                    if op == "?" && lazy_allowed {
                        lazy_allowed = false;
                        i += 1;
                        continue;
                    }
                    return Some(format!("{pv}{op}"));
                }
                i += op.chars().count();
                prev = Some(op);
                lazy_allowed = true;
            }
            None => {
                if c == '[' {
                    in_class = true;
                    // A `]` right after `[` or `[^` is a literal.
                    if chars.get(i + 1) == Some(&'^') {
                        i += 1;
                    }
                    if chars.get(i + 1) == Some(&']') {
                        i += 1;
                    }
                }
                prev = None;
                i += 1;
            }
        }
    }
    None
}

/// Words a `regex` crate syntax error as Go's `regexp/syntax` does (Envoy Gateway validates
/// with Go's RE2 implementation), using the error's span to quote the offending part.
fn go_regex_error(pattern: &str, rust: &str) -> String {
    let lines: Vec<&str> = rust.lines().collect();
    let what = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(rust)
        .trim();
    let span = lines
        .iter()
        .find(|l| l.contains('^') && l.chars().all(|c| c == ' ' || c == '^'))
        .and_then(|l| {
            let start = l.find('^')?.checked_sub(4)?;
            let len = l.matches('^').count();
            pattern.get(start..start + len)
        })
        .unwrap_or(pattern);
    let from_span = || {
        let start = pattern.find(span).unwrap_or(0);
        &pattern[start..]
    };
    match what {
        "repetition operator missing expression" => {
            format!("missing argument to repetition operator: `{span}`")
        }
        "unclosed group" => format!("missing closing ): `{pattern}`"),
        "unopened group" => format!("unexpected ): `{pattern}`"),
        "unclosed character class" => format!("missing closing ]: `{}`", from_span()),
        w if w.starts_with("invalid character class range") => {
            format!("invalid character class range: `{span}`")
        }
        w if w.starts_with("incomplete escape sequence") => {
            "trailing backslash at end of expression: ``".to_string()
        }
        w if w.contains("escape") => format!("invalid escape sequence: `{span}`"),
        w if w.starts_with("invalid repetition count range") => {
            format!("invalid repeat count: `{span}`")
        }
        w => w.to_string(),
    }
}

#[cfg(test)]
mod tests;
