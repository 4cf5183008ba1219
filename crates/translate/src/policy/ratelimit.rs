//! BackendTrafficPolicy `rateLimit`, checked once into what the encoders need
//! ([`RateLimit`]): Envoy Gateway's `buildRateLimit`, `buildLocalRateLimit`,
//! `buildGlobalRateLimit` and `buildRateLimitRule` (internal/gatewayapi/backendtrafficpolicy.go),
//! with their error messages. What the checked form becomes in Envoy and in the rate limit
//! service is `crate::ratelimit`'s.

use serde_json::Value;
use std::net::IpAddr;

/// A rate limit window, as Envoy Gateway's `RateLimitUnit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "Second" => Unit::Second,
            "Minute" => Unit::Minute,
            "Hour" => Unit::Hour,
            "Day" => Unit::Day,
            _ => return None,
        })
    }

    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        }
    }

    /// The rate limit service's name of the unit.
    pub fn service_name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    pub requests: u32,
    pub unit: Unit,
}

/// One header selector of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderSelector {
    /// The header equals (`regex: false`) or fully matches (`regex: true`) `value`; `invert`
    /// selects the requests where it does not.
    Match {
        name: String,
        value: String,
        regex: bool,
        invert: bool,
    },
    /// Every distinct value of the header has its own counter.
    Distinct { name: String },
}

/// A source address selector: the client address masked to `prefix_len` is `network`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CidrSelector {
    /// The network, as Envoy prints a masked address (`10.0.0.0/8`).
    pub network: String,
    pub prefix_len: u32,
    pub v6: bool,
    /// Every client address in the network has its own counter.
    pub distinct: bool,
}

/// What a request counts for (Envoy's `hits_addend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cost {
    Number(u64),
    /// A number another filter left in the request's dynamic metadata (Envoy Gateway's
    /// `%DYNAMIC_METADATA(namespace:key)%` format).
    Metadata {
        namespace: String,
        key: String,
    },
}

/// One rule: requests its selectors pick share `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    /// `<policy ns>/<policy name>/rule/<index>`, as Envoy Gateway names it.
    pub name: String,
    pub headers: Vec<HeaderSelector>,
    pub cidr: Option<CidrSelector>,
    pub limit: Limit,
    pub shadow_mode: bool,
    /// `cost.request` / `cost.response`: what one request counts for.
    pub request_cost: Option<Cost>,
    pub response_cost: Option<Cost>,
    /// `limit.fromMetadata` (namespace, key): the limit another filter left in the request's
    /// dynamic metadata overrides `limit` (global rules only; Envoy's local rate limit has no
    /// such override, so a local rule with it is left out).
    pub limit_from_metadata: Option<(String, String)>,
    /// `shared`: one counter for every route the policy applies to (global rules only).
    pub shared: bool,
    /// `<policy ns>/<policy name>`.
    pub policy: String,
    /// The fields of the rule Flotilla does not translate (`limit.fromMetadata` of a local
    /// rule, `clientSelectors[].queryParams`). Envoy Gateway accepts them; such a rule is left out
    /// of Envoy rather than applied to more requests than it names.
    pub unsupported: Vec<String>,
}

impl Rule {
    pub fn has_selector(&self) -> bool {
        !self.headers.is_empty() || self.cidr.is_some()
    }
}

/// `rateLimit.local`: the default (route-wide) limit, and the rules with selectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalRateLimit {
    pub default: Limit,
    pub rules: Vec<Rule>,
}

/// A policy's `rateLimit`, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub local: Option<LocalRateLimit>,
    /// `rateLimit.global.rules`.
    pub global: Option<Vec<Rule>>,
}

/// The policy's `rateLimit` (`None` without one), or why it cannot be translated (Envoy
/// Gateway's words). `global_enabled`: a rate limit service is configured.
pub(crate) fn parse(
    spec: &Value,
    namespace: &str,
    name: &str,
    global_enabled: bool,
) -> Result<Option<RateLimit>, String> {
    let Some(rl) = spec.get("rateLimit").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let local = rl.get("local").filter(|v| !v.is_null());
    let global = rl.get("global").filter(|v| !v.is_null());
    let (want_local, want_global) = match rl.get("type").and_then(Value::as_str) {
        Some("Local") if local.is_none() => {
            return Err("local configuration empty for rateLimit".into())
        }
        Some("Global") if global.is_none() => {
            return Err("global configuration empty for rateLimit".into())
        }
        Some("Local") => (true, false),
        Some("Global") => (false, true),
        Some(other) => return Err(format!("invalid rateLimit type: {other}")),
        // Without a type, what is there (Envoy Gateway accepts both at once).
        None => (local.is_some(), global.is_some()),
    };
    let mut out = RateLimit::default();
    if want_global {
        if !global_enabled {
            return Err(
                "enable Ratelimit in the EnvoyGateway config to configure global rateLimit".into(),
            );
        }
        let rules = rules_of(global.unwrap_or(&Value::Null));
        let mut built = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            built.push(rule(r, &format!("{namespace}/{name}"), i)?);
        }
        distinct_selectors(&built)?;
        built.retain(|r| r.unsupported.is_empty());
        out.global = Some(built);
    }
    if want_local {
        out.local = Some(local_rate_limit(
            local.unwrap_or(&Value::Null),
            namespace,
            name,
        )?);
    }
    Ok(Some(out))
}

/// Two rules selecting by the same source CIDR alone would produce the same descriptor, which
/// Envoy's local rate limit refuses and the rate limit service cannot tell apart (header
/// selectors and rules without selectors have keys of their own).
fn distinct_selectors(rules: &[Rule]) -> Result<(), String> {
    let mut seen: Vec<(&CidrSelector, &str)> = Vec::new();
    for r in rules.iter().filter(|r| r.headers.is_empty()) {
        let Some(c) = &r.cidr else { continue };
        if let Some((_, other)) = seen.iter().find(|(s, _)| *s == c) {
            return Err(format!(
                "rateLimit rules {other} and {} select the same clients (sourceCIDR {})",
                r.name, c.network
            ));
        }
        seen.push((c, &r.name));
    }
    Ok(())
}

fn rules_of(v: &Value) -> Vec<Value> {
    v.get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn selectors(r: &Value) -> &[Value] {
    r.get("clientSelectors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Envoy's local rate limit needs a route-wide token bucket: the rule without selectors (at
/// most one), else an unlimited one; every rule's unit must be a multiple of its unit.
fn local_rate_limit(v: &Value, namespace: &str, name: &str) -> Result<LocalRateLimit, String> {
    let rules = rules_of(v);
    let mut default = None;
    for r in rules.iter().filter(|r| selectors(r).is_empty()) {
        if default.is_some() {
            return Err(
                "local rateLimit can not have more than one rule without clientSelectors".into(),
            );
        }
        default = Some(limit(r)?);
    }
    let default = default.unwrap_or(Limit {
        requests: u32::MAX,
        unit: Unit::Second,
    });
    let mut built = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let l = limit(r)?;
        if l.unit.seconds() % default.unit.seconds() != 0 {
            return Err(
                "local rateLimit rule limit unit must be a multiple of the default limit unit"
                    .into(),
            );
        }
        // Envoy's token buckets hold at least one token.
        if l.requests == 0 {
            return Err("local rateLimit rule limit requests must be greater than 0".into());
        }
        if !selectors(r).is_empty() {
            let mut b = rule(r, &format!("{namespace}/{name}"), i)?;
            if b.limit_from_metadata.is_some() {
                b.unsupported.push("limit.fromMetadata".into());
            }
            built.push(b);
        }
    }
    distinct_selectors(&built)?;
    built.retain(|r| r.unsupported.is_empty());
    Ok(LocalRateLimit {
        default,
        rules: built,
    })
}

fn limit(r: &Value) -> Result<Limit, String> {
    let l = r.get("limit").unwrap_or(&Value::Null);
    let requests = l.get("requests").and_then(Value::as_u64);
    let unit = l.get("unit").and_then(Value::as_str);
    match (requests.and_then(|n| u32::try_from(n).ok()), unit) {
        (Some(requests), Some(u)) => match Unit::parse(u) {
            Some(unit) => Ok(Limit { requests, unit }),
            None => Err(format!("rateLimit limit unit {u} is not supported")),
        },
        _ => Err("rateLimit limit needs requests (0 to 4294967295) and a unit".into()),
    }
}

fn bool_at(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn rule(r: &Value, policy: &str, i: usize) -> Result<Rule, String> {
    let mut out = Rule {
        name: format!("{policy}/rule/{i}"),
        headers: Vec::new(),
        cidr: None,
        limit: limit(r)?,
        shadow_mode: bool_at(r, "shadowMode"),
        request_cost: None,
        response_cost: None,
        shared: bool_at(r, "shared"),
        limit_from_metadata: None,
        policy: policy.to_string(),
        unsupported: Vec::new(),
    };
    if let Some(md) = r.pointer("/limit/fromMetadata").filter(|v| !v.is_null()) {
        let part = |f: &str| match md.get(f).and_then(Value::as_str) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!(
                "unable to translate rateLimit: limit.fromMetadata needs a {f}"
            )),
        };
        out.limit_from_metadata = Some((part("namespace")?, part("key")?));
    }
    let mut methods = Vec::new();
    let mut path = None;
    for sel in selectors(r) {
        let headers = sel
            .get("headers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let cidr = sel.get("sourceCIDR").filter(|v| !v.is_null());
        let sel_methods = sel
            .get("methods")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let sel_path = sel.get("path").filter(|v| !v.is_null());
        let query = sel.get("queryParams").is_some_and(|v| !v.is_null());
        if query {
            out.unsupported.push("clientSelectors.queryParams".into());
        }
        if headers.is_empty()
            && cidr.is_none()
            && sel_methods.is_empty()
            && sel_path.is_none()
            && !query
        {
            return Err("unable to translate rateLimit. At least one of the header or method or path or sourceCIDR must be specified".into());
        }
        for h in headers {
            out.headers.push(header(h)?);
        }
        for m in sel_methods {
            methods.push(method(m)?);
        }
        if let Some(p) = sel_path {
            // Envoy Gateway keeps the last selector's path.
            path = Some(path_selector(p)?);
        }
        if let Some(c) = cidr {
            let value = c.get("value").and_then(Value::as_str).unwrap_or("");
            let mut m =
                parse_cidr(value).map_err(|e| format!("unable to translate rateLimit: {e}"))?;
            m.distinct = c.get("type").and_then(Value::as_str) == Some("Distinct");
            // Envoy Gateway keeps the last selector's CIDR.
            out.cidr = Some(m);
        }
    }
    // After the headers, in Envoy Gateway's order: methods, then the path.
    out.headers.extend(methods_selector(&methods));
    out.headers.extend(path);
    for (field, slot) in [
        ("request", &mut out.request_cost),
        ("response", &mut out.response_cost),
    ] {
        let Some(c) = r
            .pointer(&format!("/cost/{field}"))
            .filter(|v| !v.is_null())
        else {
            continue;
        };
        *slot = cost(c)?;
    }
    Ok(out)
}

/// `cost.request` or `cost.response`, as Envoy Gateway's `translateRateLimitCost`: the
/// metadata when named, else the number; neither: Envoy's default (1).
fn cost(c: &Value) -> Result<Option<Cost>, String> {
    if let Some(md) = c.get("metadata").filter(|v| !v.is_null()) {
        let part = |f: &str| {
            let v = md.get(f).and_then(Value::as_str).unwrap_or("");
            // The parts go into an Envoy format string: `:` separates keys there, `%` and
            // parentheses end the command, and Envoy refuses the whole route on a bad one.
            if v.is_empty()
                || v.chars()
                    .any(|ch| ch.is_control() || ch.is_whitespace() || "%():".contains(ch))
            {
                return Err(format!(
                    "unable to translate rateLimit: cost metadata {f} {v:?} cannot be used"
                ));
            }
            Ok(v.to_string())
        };
        return Ok(Some(Cost::Metadata {
            namespace: part("namespace")?,
            key: part("key")?,
        }));
    }
    Ok(c.get("number").and_then(Value::as_u64).map(Cost::Number))
}

/// One `methods[]` entry: the method and whether it is inverted.
fn method(m: &Value) -> Result<(String, bool), String> {
    let v = m.get("value").and_then(Value::as_str).unwrap_or("");
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "unable to translate rateLimit: invalid method {v:?}"
        ));
    }
    Ok((v.to_string(), bool_at(m, "invert")))
}

/// The rule's methods (ORed, as the API says, across every selector as Envoy Gateway gathers
/// them) as one condition on `:method`, or none when it holds for every request. A descriptor
/// entry's matchers are ANDed, so the OR is folded here: methods `P` and inverted methods
/// `N` hold for "in `P`" when `N` is empty, "not `n`" when `N` is `{n}` and `n` is not in
/// `P`, and always otherwise (two different "not"s, or "`n` or not `n`").
fn methods_selector(methods: &[(String, bool)]) -> Option<HeaderSelector> {
    if methods.is_empty() {
        return None;
    }
    let mut pos: Vec<&str> = methods
        .iter()
        .filter(|(_, inv)| !inv)
        .map(|(m, _)| m.as_str())
        .collect();
    let mut neg: Vec<&str> = methods
        .iter()
        .filter(|(_, inv)| *inv)
        .map(|(m, _)| m.as_str())
        .collect();
    pos.sort_unstable();
    pos.dedup();
    neg.sort_unstable();
    neg.dedup();
    let name = ":method".to_string();
    match neg.as_slice() {
        [] if pos.len() == 1 => Some(HeaderSelector::Match {
            name,
            value: pos[0].to_string(),
            regex: false,
            invert: false,
        }),
        // Methods are upper-case letters only (checked): nothing to escape.
        [] => Some(HeaderSelector::Match {
            name,
            value: pos.join("|"),
            regex: true,
            invert: false,
        }),
        [n] if !pos.contains(n) => Some(HeaderSelector::Match {
            name,
            value: n.to_string(),
            regex: false,
            invert: true,
        }),
        _ => None,
    }
}

/// `clientSelectors[].path` as a condition on `:path`. Envoy's `:path` carries the query, so
/// every form allows one after the path (Envoy Gateway's matchers would miss `/a?x=1` for an
/// exact `/a`); a prefix is path-separated (`/a` holds for `/a`, `/a/b`, not `/ab`), as in a
/// route match and in Envoy Gateway (a header matcher has no path-separated prefix, hence a
/// regex).
fn path_selector(p: &Value) -> Result<HeaderSelector, String> {
    let value = p.get("value").and_then(Value::as_str).unwrap_or("/");
    let invert = bool_at(p, "invert");
    let query = r"(?:\?.*)?";
    let regex = match p
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("PathPrefix")
    {
        "PathPrefix" if value == "/" => "/.*".to_string(),
        "PathPrefix" => {
            let trimmed = value.trim_end_matches('/');
            format!(r"{}(?:[/?].*)?", regex::escape(trimmed))
        }
        "Exact" => format!("{}{query}", regex::escape(value)),
        "RegularExpression" => {
            crate::values::check_regex(value)?;
            format!("(?:{value}){query}")
        }
        _ => return Err("unable to translate rateLimit: invalid path type.".into()),
    };
    if !value.starts_with('/') && p.get("type").and_then(Value::as_str) != Some("RegularExpression")
    {
        return Err(format!(
            "unable to translate rateLimit: path {value:?} must start with /"
        ));
    }
    Ok(HeaderSelector::Match {
        name: ":path".into(),
        value: regex,
        regex: true,
        invert,
    })
}

fn header(h: &Value) -> Result<HeaderSelector, String> {
    let name = h.get("name").and_then(Value::as_str).unwrap_or("");
    if !is_header_name(name) {
        return Err(format!(
            "unable to translate rateLimit: invalid header name {name:?}"
        ));
    }
    let value = h.get("value").and_then(Value::as_str);
    let invert = bool_at(h, "invert");
    match (h.get("type").and_then(Value::as_str), value) {
        (None | Some("Exact"), Some(v)) => Ok(HeaderSelector::Match {
            name: name.to_string(),
            value: v.to_string(),
            regex: false,
            invert,
        }),
        (Some("RegularExpression"), Some(v)) => {
            crate::values::check_regex(v)?;
            Ok(HeaderSelector::Match {
                name: name.to_string(),
                value: v.to_string(),
                regex: true,
                invert,
            })
        }
        (Some("Distinct"), None) => {
            if invert {
                return Err("unable to translate rateLimit.Invert is not applicable for distinct header match type".into());
            }
            Ok(HeaderSelector::Distinct {
                name: name.to_string(),
            })
        }
        _ => Err("unable to translate rateLimit. Either the header.Type is not valid or the header is missing a value".into()),
    }
}

/// An HTTP field name (RFC 9110 token, lower or upper case): what Envoy's header matchers
/// and `request_headers` action accept.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `addr/len` → the network it names, as Go's `net.ParseCIDR` (and Envoy's
/// `masked_remote_address`) print it.
fn parse_cidr(s: &str) -> Result<CidrSelector, String> {
    let bad = || format!("invalid CIDR address: {s}");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return Err(bad());
    }
    let len: u32 = len.parse().map_err(|_| bad())?;
    let network = match ip {
        IpAddr::V4(v4) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        _ => return Err(bad()),
    };
    Ok(CidrSelector {
        network: format!("{network}/{len}"),
        prefix_len: len,
        v6: ip.is_ipv6(),
        distinct: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(rl: Value) -> Result<Option<RateLimit>, String> {
        parse(&json!({ "rateLimit": rl }), "ns", "pol", true)
    }

    #[test]
    fn cidrs_are_masked_as_envoy_prints_them() {
        let c = parse_cidr("192.168.7.9/16").unwrap();
        assert_eq!(c.network, "192.168.0.0/16");
        assert_eq!((c.prefix_len, c.v6), (16, false));
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().network, "0.0.0.0/0");
        assert_eq!(
            parse_cidr("2001:db8::1/32").unwrap().network,
            "2001:db8::/32"
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/-1", "::/129"] {
            assert_eq!(
                parse_cidr(bad).unwrap_err(),
                format!("invalid CIDR address: {bad}")
            );
        }
    }

    #[test]
    fn local_takes_the_rule_without_selectors_as_its_default() {
        let rl = p(json!({"type": "Local", "local": {"rules": [
            {"limit": {"requests": 10, "unit": "Minute"}},
            {"clientSelectors": [{"headers": [{"name": "x-user", "type": "Distinct"}]}],
             "limit": {"requests": 2, "unit": "Hour"}},
        ]}}))
        .unwrap()
        .unwrap();
        let local = rl.local.unwrap();
        assert_eq!(
            local.default,
            Limit {
                requests: 10,
                unit: Unit::Minute
            }
        );
        assert_eq!(local.rules.len(), 1);
        assert_eq!(local.rules[0].name, "ns/pol/rule/1");
        assert!(rl.global.is_none());
    }

    #[test]
    fn envoy_gateway_refusals() {
        let sel = |h: Value| json!({"clientSelectors": [{"headers": [h]}], "limit": {"requests": 1, "unit": "Hour"}});
        for (rl, msg) in [
            (json!({"type": "Local"}), "local configuration empty for rateLimit"),
            (json!({"type": "Global"}), "global configuration empty for rateLimit"),
            (json!({"type": "Other", "local": {}}), "invalid rateLimit type: Other"),
            (
                json!({"type": "Local", "local": {"rules": [
                    {"limit": {"requests": 1, "unit": "Hour"}},
                    {"clientSelectors": [{"sourceCIDR": {"value": "10.0.0.0/8"}}], "limit": {"requests": 1, "unit": "Minute"}}]}}),
                "local rateLimit rule limit unit must be a multiple of the default limit unit",
            ),
            (
                json!({"type": "Local", "local": {"rules": [
                    {"limit": {"requests": 1, "unit": "Hour"}}, {"limit": {"requests": 2, "unit": "Hour"}}]}}),
                "local rateLimit can not have more than one rule without clientSelectors",
            ),
            (
                json!({"type": "Global", "global": {"rules": [sel(json!({"name": "x", "type": "Distinct", "invert": true}))]}}),
                "unable to translate rateLimit.Invert is not applicable for distinct header match type",
            ),
            (
                json!({"type": "Global", "global": {"rules": [sel(json!({"name": "x", "type": "Exact"}))]}}),
                "unable to translate rateLimit. Either the header.Type is not valid or the header is missing a value",
            ),
            (
                json!({"type": "Global", "global": {"rules": [{"clientSelectors": [{}], "limit": {"requests": 1, "unit": "Hour"}}]}}),
                "unable to translate rateLimit. At least one of the header or method or path or sourceCIDR must be specified",
            ),
            (
                json!({"type": "Global", "global": {"rules": [{"clientSelectors": [{"sourceCIDR": {"value": "10.0.0.0/40"}}], "limit": {"requests": 1, "unit": "Hour"}}]}}),
                "unable to translate rateLimit: invalid CIDR address: 10.0.0.0/40",
            ),
            (
                json!({"type": "Local", "local": {"rules": [{"limit": {"requests": 0, "unit": "Hour"}}]}}),
                "local rateLimit rule limit requests must be greater than 0",
            ),
            (
                json!({"type": "Global", "global": {"rules": [{"limit": {"requests": 1, "unit": "Month"}}]}}),
                "rateLimit limit unit Month is not supported",
            ),
        ] {
            assert_eq!(p(rl.clone()).unwrap_err(), msg, "{rl}");
        }
        let global = json!({"rateLimit": {"type": "Global", "global": {"rules": []}}});
        assert_eq!(
            parse(&global, "ns", "pol", false).unwrap_err(),
            "enable Ratelimit in the EnvoyGateway config to configure global rateLimit"
        );
    }

    #[test]
    fn rules_with_fields_flotilla_does_not_translate_are_left_out() {
        let rl = p(json!({"global": {"rules": [
            {"clientSelectors": [{"queryParams": [{"name": "q", "value": "1"}]}],
             "limit": {"requests": 1, "unit": "Hour"}},
            {"limit": {"requests": 3, "unit": "Hour"}, "shared": true},
        ]}, "local": {"rules": [
            {"clientSelectors": [{"headers": [{"name": "x", "value": "1"}]}],
             "limit": {"requests": 2, "unit": "Hour", "fromMetadata": {"namespace": "n", "key": "k"}}},
        ]}}))
        .unwrap()
        .unwrap();
        let rules = rl.global.unwrap();
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0].name, "ns/pol/rule/1");
        assert!(rules[0].shared);
        assert!(rl.local.unwrap().rules.is_empty());
    }

    fn cond(name: &str, value: &str, regex: bool, invert: bool) -> HeaderSelector {
        HeaderSelector::Match {
            name: name.into(),
            value: value.into(),
            regex,
            invert,
        }
    }

    /// The conditions on `:method` and `:path` a rule's selectors become (after its headers).
    fn conditions(selectors: Value) -> Vec<HeaderSelector> {
        let rl = p(json!({"type": "Global", "global": {"rules": [
            {"clientSelectors": selectors, "limit": {"requests": 1, "unit": "Hour"}}]}}))
        .unwrap()
        .unwrap();
        rl.global.unwrap().remove(0).headers
    }

    #[test]
    fn methods_are_one_condition_on_the_method() {
        let m = |v: &str, invert: bool| json!({"value": v, "invert": invert});
        assert_eq!(
            conditions(json!([{"methods": [m("GET", false)]}])),
            [cond(":method", "GET", false, false)]
        );
        // ORed, across selectors too.
        assert_eq!(
            conditions(json!([{"methods": [m("POST", false)]}, {"methods": [m("GET", false)]}])),
            [cond(":method", "GET|POST", true, false)]
        );
        assert_eq!(
            conditions(json!([{"methods": [m("GET", true), m("POST", false)]}])),
            [cond(":method", "GET", false, true)]
        );
        // Always true: the rule selects every request.
        let always = conditions(json!([{"methods": [m("GET", true), m("PUT", true)]}]));
        assert!(always.is_empty(), "{always:?}");
        assert_eq!(
            p(json!({"type": "Global", "global": {"rules": [
                {"clientSelectors": [{"methods": [m("get", false)]}], "limit": {"requests": 1, "unit": "Hour"}}]}}))
            .unwrap_err(),
            "unable to translate rateLimit: invalid method \"get\""
        );
    }

    #[test]
    fn paths_are_a_condition_on_the_path_that_allows_a_query() {
        let path = |t: &str, v: &str| json!([{"path": {"type": t, "value": v}}]);
        let one = |sel: Value| match conditions(sel).as_slice() {
            [HeaderSelector::Match {
                name,
                value,
                regex: true,
                invert: false,
            }] if name == ":path" => value.clone(),
            other => panic!("{other:?}"),
        };
        let holds = |re: &str, p: &str| {
            regex::Regex::new(&format!("^(?:{re})$"))
                .unwrap()
                .is_match(p)
        };
        let exact = one(path("Exact", "/a.b"));
        assert!(holds(&exact, "/a.b") && holds(&exact, "/a.b?x=1"));
        assert!(!holds(&exact, "/axb") && !holds(&exact, "/a.b/c"));
        let prefix = one(path("PathPrefix", "/api/"));
        for ok in ["/api", "/api/", "/api/v1", "/api?x"] {
            assert!(holds(&prefix, ok), "{ok}");
        }
        assert!(!holds(&prefix, "/apix"));
        assert!(holds(&one(path("PathPrefix", "/")), "/anything"));
        let re = one(path("RegularExpression", "/v[0-9]+"));
        assert!(holds(&re, "/v2?x=1") && !holds(&re, "/v2/x"));
        // Headers first, then methods, then the path (the last selector's).
        let all = conditions(json!([
            {"path": {"type": "Exact", "value": "/x"}, "methods": [{"value": "GET"}]},
            {"headers": [{"name": "x-a", "value": "1"}], "path": {"type": "Exact", "value": "/y"}}
        ]));
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], cond("x-a", "1", false, false));
        assert_eq!(all[1], cond(":method", "GET", false, false));
        assert!(matches!(&all[2], HeaderSelector::Match { value, .. } if value.starts_with("/y")));
        let invert =
            conditions(json!([{"path": {"type": "Exact", "value": "/x", "invert": true}}]));
        assert!(matches!(
            &invert[0],
            HeaderSelector::Match { invert: true, .. }
        ));
    }

    #[test]
    fn global_rules_keep_every_selector() {
        let rl = p(json!({"type": "Global", "global": {"rules": [
            {"clientSelectors": [
                {"headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "type": "Distinct"}]},
                {"sourceCIDR": {"type": "Distinct", "value": "10.1.2.3/8"}}],
             "limit": {"requests": 5, "unit": "Second"}, "shadowMode": true,
             "cost": {"request": {"from": "Number", "number": 2}}},
        ]}}))
        .unwrap()
        .unwrap();
        let r = &rl.global.unwrap()[0];
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.cidr.as_ref().unwrap().network, "10.0.0.0/8");
        assert!(r.cidr.as_ref().unwrap().distinct);
        assert!(r.shadow_mode);
        assert_eq!(r.request_cost, Some(Cost::Number(2)));
    }
}
