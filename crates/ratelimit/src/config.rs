//! The rate limit rules: the serde form a translator produces ([`RateLimitConfig`]), its
//! validated and indexed form ([`Rules`]) and the matching of a request's descriptor against it.
//!
//! # Semantics (those of envoyproxy/ratelimit)
//! A request descriptor is an ordered list of `(key, value)` entries. A rule matches it when it
//! has exactly as many entries, with the same keys in the same order, and each rule value
//! matches (`value` absent: any value, a counter per distinct value; `value: "abc*"`: prefix;
//! otherwise exact). Among the matching rules the most specific applies: position by position
//! from the first entry, exact beats prefix beats any (the reference service walks its
//! descriptor tree the same way, trying `key_value` before `key` at every level).
//!
//! # Mapping from BackendTrafficPolicy `rateLimit.global.rules[]` (what the translator emits)
//! `flotilla-translate` (`ratelimit.rs`) produces these rules (its `RateLimitRules`, the same
//! serde form) from the BackendTrafficPolicies, following Envoy Gateway
//! (`internal/xds/translator/ratelimit.go`, `buildRouteRateLimits` and
//! `buildRateLimitServiceDescriptors`). The domain is the gateway's id
//! (`<cluster>/<namespace>/<name>`); each limited route gives Envoy's `rate_limits` one entry
//! per rule `i`, whose actions produce, in this order:
//! 1. `generic_key` with key and value `<listener>/<route name>/<host>` (the listener as
//!    `<ns>/<owner>/<name>`, the host with `.` as `_` and `*` as `all`); for a `shared` rule,
//!    `backendtrafficpolicy/<policy ns>/<policy name>` (one counter for all the policy's routes
//!    in the gateway);
//! 2. per `clientSelectors[].headers[m]`: `distinct` → `request_headers` with key
//!    `rule-<i>-match-<m>` (rule entry: that key, any value); otherwise `header_value_match`
//!    with key and value `rule-<i>-match-<m>` (rule entry: exact value); `methods` and `path`
//!    follow the headers as `header_value_match` on `:method` and `:path`, numbered on;
//! 3. per `sourceCIDR`: `masked_remote_address` (entry `masked_remote_address` = the CIDR,
//!    exact) and, if `distinct`, `remote_address` (entry `remote_address`, any value);
//! 4. no selector at all: `generic_key` with key and value `rule-<i>-match--1`.
//!
//! The rule's `limit {requests, unit}` becomes [`Limit`]; `shadowMode` → `shadow_mode`;
//! `cost.request` (a number, or a `%DYNAMIC_METADATA(..)%` format) is Envoy's `hits_addend`
//! and needs nothing here. A store serves these
//! rules at `GET /api/v1/ratelimit`; `flotilla standalone` hands them to its embedded service.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest domain, key or value a rule may name (bytes); requests are held to
/// [`crate::service::Limits`].
pub const MAX_RULE_STRING: usize = 1024;
/// Most entries in one rule or request descriptor: Envoy Gateway's bounds allow the route's
/// entry and 8 client selectors of 16 headers, a method, a path and a source CIDR (2 entries).
pub const MAX_RULE_ENTRIES: usize = 1 + 8 * (16 + 1 + 1 + 2);

/// Every domain's rules. This is what the translator produces and what a file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default)]
    pub domains: Vec<DomainConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub domain: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The descriptor this rule matches, entry by entry.
    pub descriptor: Vec<EntryMatch>,
    pub limit: Limit,
    /// Count and report, but never answer OVER_LIMIT for this rule.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Shown in logs and in the `current_limit.name` of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMatch {
    pub key: String,
    /// Absent: any value (one counter per distinct value). Ending in `*`: a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests_per_unit: u32,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        }
    }

    /// The fixed window holding `now` (unix seconds): `[start, start + seconds)`. Windows are
    /// aligned to the unix epoch, as in the reference service, so that every instance agrees on
    /// them without talking to the others.
    pub fn window(self, now: u64) -> Window {
        let len = self.seconds();
        let start = now - now % len;
        Window {
            start,
            end: start + len,
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as P;
        match self {
            Unit::Second => P::Second as i32,
            Unit::Minute => P::Minute as i32,
            Unit::Hour => P::Hour as i32,
            Unit::Day => P::Day as i32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    pub fn remaining(&self, now: u64) -> u64 {
        self.end.saturating_sub(now)
    }
}

/// One problem in a [`RateLimitConfig`], naming where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct ConfigError {
    pub at: String,
    pub problem: String,
}

/// All the problems of a configuration, reported at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error(s) in the rate limit configuration",
            self.0.len()
        )?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ValueMatch {
    // Order: most specific first (the derived Ord sorts rules by specificity).
    Exact(String),
    Prefix(String),
    Any,
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(x) => x == v,
            ValueMatch::Prefix(p) => v.starts_with(p.as_str()),
            ValueMatch::Any => true,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            ValueMatch::Exact(_) => 0,
            ValueMatch::Prefix(_) => 1,
            ValueMatch::Any => 2,
        }
    }
}

/// A validated rule, as matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule {
    keys: Vec<String>,
    values: Vec<ValueMatch>,
    pub limit: Limit,
    pub shadow_mode: bool,
    pub name: String,
}

impl CompiledRule {
    /// Specificity, smaller is more specific: exact < prefix < any, earlier entries first; a
    /// longer prefix is more specific than a shorter one.
    fn specificity(&self) -> Vec<(u8, usize)> {
        self.values
            .iter()
            .map(|v| match v {
                ValueMatch::Prefix(p) => (v.rank(), usize::MAX - p.len()),
                _ => (v.rank(), 0),
            })
            .collect()
    }

    fn matches(&self, entries: &[(&str, &str)]) -> bool {
        entries.len() == self.keys.len()
            && entries
                .iter()
                .zip(self.keys.iter().zip(&self.values))
                .all(|((k, v), (rk, rv))| k == rk && rv.matches(v))
    }
}

/// The validated rules of every domain, indexed for matching: per domain, per
/// (entry count, first key), the candidate rules sorted most specific first, so the first match
/// is the one that applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    domains: HashMap<String, HashMap<(usize, String), Vec<CompiledRule>>>,
}

impl Rules {
    /// Validates `cfg`, reporting every problem at once.
    pub fn compile(cfg: &RateLimitConfig) -> Result<Rules, ConfigErrors> {
        let mut errors = Vec::new();
        let mut out = Rules::default();
        let mut err = |at: String, problem: &str| {
            errors.push(ConfigError {
                at,
                problem: problem.to_string(),
            })
        };
        for (d, dom) in cfg.domains.iter().enumerate() {
            let dat = format!("domains[{d}]");
            if dom.domain.is_empty() || dom.domain.len() > MAX_RULE_STRING {
                err(dat.clone(), "domain must be 1..=1024 bytes");
                continue;
            }
            if out.domains.contains_key(&dom.domain) {
                err(
                    dat.clone(),
                    &format!("domain {:?} listed twice", dom.domain),
                );
                continue;
            }
            let index = out.domains.entry(dom.domain.clone()).or_default();
            for (r, rule) in dom.rules.iter().enumerate() {
                let at = format!("{dat}({}).rules[{r}]", dom.domain);
                let n = rule.descriptor.len();
                if n == 0 || n > MAX_RULE_ENTRIES {
                    err(
                        at,
                        &format!("descriptor must have 1..={MAX_RULE_ENTRIES} entries"),
                    );
                    continue;
                }
                let mut ok = true;
                let mut keys = Vec::with_capacity(n);
                let mut values = Vec::with_capacity(n);
                for (e, m) in rule.descriptor.iter().enumerate() {
                    if m.key.is_empty() || m.key.len() > MAX_RULE_STRING {
                        err(
                            format!("{at}.descriptor[{e}]"),
                            "key must be 1..=1024 bytes",
                        );
                        ok = false;
                    }
                    let v = match &m.value {
                        None => ValueMatch::Any,
                        Some(v) if v.len() > MAX_RULE_STRING => {
                            err(
                                format!("{at}.descriptor[{e}]"),
                                "value longer than 1024 bytes",
                            );
                            ok = false;
                            ValueMatch::Any
                        }
                        Some(v) => match v.strip_suffix('*') {
                            Some(p) => ValueMatch::Prefix(p.to_string()),
                            None => ValueMatch::Exact(v.clone()),
                        },
                    };
                    keys.push(m.key.clone());
                    values.push(v);
                }
                if !ok {
                    continue;
                }
                let compiled = CompiledRule {
                    name: rule
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}#{r}", dom.domain)),
                    keys,
                    values,
                    limit: rule.limit,
                    shadow_mode: rule.shadow_mode,
                };
                let bucket = index.entry((n, compiled.keys[0].clone())).or_default();
                if bucket
                    .iter()
                    .any(|o| o.keys == compiled.keys && o.values == compiled.values)
                {
                    err(at, "another rule of this domain has the same descriptor");
                    continue;
                }
                bucket.push(compiled);
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        for index in out.domains.values_mut() {
            for bucket in index.values_mut() {
                bucket.sort_by_cached_key(|r| r.specificity());
            }
        }
        Ok(out)
    }

    /// The rule that applies to a descriptor of `domain`, if any.
    pub fn find(&self, domain: &str, entries: &[(&str, &str)]) -> Option<&CompiledRule> {
        let first = entries.first()?.0;
        self.domains
            .get(domain)?
            .get(&(entries.len(), first.to_string()))?
            .iter()
            .find(|r| r.matches(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

#[cfg(test)]
mod tests;
