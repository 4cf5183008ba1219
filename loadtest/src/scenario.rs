//! The scenario: what to start, how many proxies where, what churn and which faults. Read from
//! a YAML file or taken from a preset; every error in a file is reported at once.

use crate::proxy::Protocol;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario {path} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
    #[error("unknown preset {0:?} (known: smoke, 1k, 10k)")]
    UnknownPreset(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the control plane runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// nats-server, three `flotilla store` nodes, `edges` edges, one ingest agent per cluster.
    Stores,
    /// One `flotilla standalone` (file ingest, store, edge, API in one process), one cluster.
    Standalone,
}

/// How changes reach the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnVia {
    /// Files written into the ingest agents' directories (the agents publish them).
    Files,
    /// `ResourceEvent`s published to NATS by the harness itself, as an agent does (stores
    /// topology only; the harness replaces the agents).
    Nats,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Churn {
    pub via: ChurnVia,
    /// Route changes per second, spread over all gateways at random.
    pub per_second: f64,
    #[serde(with = "dur")]
    pub duration: Duration,
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            via: ChurnVia::Files,
            per_second: 5.0,
            duration: Duration::from_secs(20),
        }
    }
}

/// A fault at a fixed time of a (non-chaos) run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAt {
    #[serde(with = "dur")]
    pub at: Duration,
    pub kind: crate::faults::FaultKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    /// Cluster names (NATS subject tokens; one ingest agent each).
    pub clusters: Vec<String>,
    pub gateways_per_cluster: u32,
    pub routes_per_gateway: u32,
    pub services_per_cluster: u32,
    pub proxies_per_gateway: u32,
    /// Share of simulated proxies speaking state-of-the-world instead of delta, in percent.
    pub sotw_percent: u32,
    pub edges: u32,
    pub topology: Topology,
    /// Real Envoys started beside the simulated proxies (one per gateway, first gateways).
    pub real_envoys: u32,
    pub churn: Churn,
    /// How long everything may take to start and every proxy to get its first config.
    #[serde(with = "dur")]
    pub warmup_timeout: Duration,
    /// After churn: how long the system may take to converge before the checks fail.
    #[serde(with = "dur")]
    pub settle_timeout: Duration,
    /// Connection attempts in flight at once (connect storms overflow the listen backlog).
    pub max_concurrent_connects: u32,
    /// Every Flotilla part with certificates (`flotilla certs`): Raft and the watch over mTLS,
    /// proxies and the API over TLS.
    pub tls: bool,
    pub faults: Vec<FaultAt>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            clusters: vec!["east".into(), "west".into()],
            gateways_per_cluster: 2,
            routes_per_gateway: 5,
            services_per_cluster: 4,
            proxies_per_gateway: 50,
            sotw_percent: 10,
            edges: 2,
            topology: Topology::Stores,
            real_envoys: 2,
            churn: Churn::default(),
            warmup_timeout: Duration::from_secs(120),
            settle_timeout: Duration::from_secs(60),
            max_concurrent_connects: 256,
            tls: false,
            faults: Vec::new(),
        }
    }
}

impl Scenario {
    pub fn preset(name: &str) -> Result<Scenario> {
        let base = Scenario::default();
        let s = match name {
            "smoke" => Scenario {
                name: "smoke".into(),
                churn: Churn {
                    per_second: 4.0,
                    duration: Duration::from_secs(15),
                    ..Churn::default()
                },
                ..base
            },
            "1k" => Scenario {
                name: "1k".into(),
                gateways_per_cluster: 10,
                routes_per_gateway: 20,
                services_per_cluster: 10,
                proxies_per_gateway: 50,
                churn: Churn {
                    per_second: 10.0,
                    duration: Duration::from_secs(30),
                    ..Churn::default()
                },
                ..base
            },
            "10k" => Scenario {
                name: "10k".into(),
                gateways_per_cluster: 50,
                routes_per_gateway: 20,
                services_per_cluster: 20,
                proxies_per_gateway: 100,
                churn: Churn {
                    per_second: 10.0,
                    duration: Duration::from_secs(60),
                    ..Churn::default()
                },
                warmup_timeout: Duration::from_secs(300),
                settle_timeout: Duration::from_secs(120),
                ..base
            },
            other => return Err(Error::UnknownPreset(other.to_string())),
        };
        Ok(s)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Scenario> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: p.clone(),
            source,
        })?;
        Scenario::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Scenario> {
        let s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| Error::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let problems = s.problems();
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(Error::Invalid {
                path: path.to_string(),
                problems,
            })
        }
    }

    /// Every problem, not just the first.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.clusters.is_empty() {
            p.push("clusters: at least one cluster is needed".to_string());
        }
        for c in &self.clusters {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                p.push(format!(
                    "clusters: {c:?} must be letters, digits, '-' or '_' (a NATS subject token)"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.clusters {
            if !seen.insert(c) {
                p.push(format!("clusters: {c:?} is listed twice"));
            }
        }
        if self.gateways_per_cluster == 0 {
            p.push("gateways_per_cluster must be at least 1".into());
        }
        if self.routes_per_gateway == 0 {
            p.push("routes_per_gateway must be at least 1 (churn changes routes)".into());
        }
        if self.services_per_cluster == 0 {
            p.push("services_per_cluster must be at least 1".into());
        }
        if self.sotw_percent > 100 {
            p.push(format!("sotw_percent {} is over 100", self.sotw_percent));
        }
        if self.topology == Topology::Stores && self.edges == 0 {
            p.push("edges must be at least 1 with topology: stores".into());
        }
        if self.topology == Topology::Standalone && self.clusters.len() != 1 {
            p.push("topology: standalone serves exactly one cluster".into());
        }
        if self.topology == Topology::Standalone && self.churn.via == ChurnVia::Nats {
            p.push("churn.via: nats needs topology: stores (standalone has no NATS)".into());
        }
        if !(self.churn.per_second.is_finite() && self.churn.per_second >= 0.0) {
            p.push("churn.per_second must be a number >= 0".into());
        }
        if self.real_envoys > self.gateway_count() {
            p.push(format!(
                "real_envoys {} is more than the {} gateways (one Envoy per gateway)",
                self.real_envoys,
                self.gateway_count()
            ));
        }
        if self.max_concurrent_connects == 0 {
            p.push("max_concurrent_connects must be at least 1".into());
        }
        p
    }

    pub fn gateway_count(&self) -> u32 {
        self.clusters.len() as u32 * self.gateways_per_cluster
    }

    pub fn proxy_count(&self) -> u32 {
        self.gateway_count() * self.proxies_per_gateway
    }

    /// Protocol of proxy `i` of a gateway: the SotW share spread evenly.
    pub fn protocol_of(&self, i: u32) -> Protocol {
        if (i * self.sotw_percent) % 100 + self.sotw_percent >= 100 && self.sotw_percent > 0 {
            Protocol::Sotw
        } else {
            Protocol::Delta
        }
    }
}

/// Durations as `500ms`, `30s`, `2m`, `1h` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 2m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod dur {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => super::parse_duration(&n.to_string()),
            Raw::Str(s) => super::parse_duration(&s),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn presets_are_valid_and_sized() {
        for (name, proxies) in [("smoke", 200), ("1k", 1000), ("10k", 10_000)] {
            let s = Scenario::preset(name).unwrap();
            assert!(s.problems().is_empty(), "{name}: {:?}", s.problems());
            assert_eq!(s.proxy_count(), proxies, "{name}");
        }
        assert!(Scenario::preset("huge").is_err());
    }

    #[test]
    fn file_round_trips_and_defaults_apply() {
        let text = "
name: mine
clusters: [a, b, c]
gateways_per_cluster: 3
proxies_per_gateway: 7
topology: stores
churn: {via: nats, per_second: 2.5, duration: 1m}
faults:
  - {at: 10s, kind: edge-kill}
  - {at: 20s, kind: leader-stop}
";
        let s = Scenario::parse("mine.yaml", text).unwrap();
        assert_eq!(s.proxy_count(), 3 * 3 * 7);
        assert_eq!(s.churn.via, ChurnVia::Nats);
        assert_eq!(s.churn.duration, Duration::from_secs(60));
        assert_eq!(s.routes_per_gateway, Scenario::default().routes_per_gateway);
        assert_eq!(s.faults.len(), 2);
        let again = Scenario::parse("x", &serde_yaml_ng::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "
clusters: [east, east, 'a.b']
gateways_per_cluster: 0
sotw_percent: 150
real_envoys: 5
topology: standalone
churn: {via: nats}
";
        let err = Scenario::parse("bad.yaml", text).unwrap_err().to_string();
        for needle in [
            "listed twice",
            "NATS subject token",
            "gateways_per_cluster",
            "over 100",
            "exactly one cluster",
            "needs topology: stores",
            "real_envoys",
        ] {
            assert!(err.contains(needle), "{needle} missing in {err}");
        }
        let unknown = Scenario::parse("u.yaml", "proxies: 5")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field"), "{unknown}");
    }

    #[test]
    fn example_scenarios_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            Scenario::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn sotw_share_is_spread() {
        let s = Scenario {
            sotw_percent: 10,
            ..Scenario::default()
        };
        let n = (0..100)
            .filter(|&i| s.protocol_of(i) == Protocol::Sotw)
            .count();
        assert_eq!(n, 10);
        let none = Scenario {
            sotw_percent: 0,
            ..Scenario::default()
        };
        assert!((0..100).all(|i| none.protocol_of(i) == Protocol::Delta));
        let all = Scenario {
            sotw_percent: 100,
            ..Scenario::default()
        };
        assert!((0..100).all(|i| all.protocol_of(i) == Protocol::Sotw));
    }
}
