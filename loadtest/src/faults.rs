//! Fault kinds: process faults (kill -9 and restart, SIGSTOP/SIGCONT) and poison inputs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of a random store node (possibly the leader), restarted after a pause.
    StoreKill,
    /// kill -9 of the current Raft leader, restarted after a pause.
    LeaderKill,
    /// SIGSTOP of the leader past the election timeout, then SIGCONT (a clean step-down).
    LeaderStop,
    /// kill -9 of an edge, restarted after a pause (its proxies move to another edge).
    EdgeKill,
    /// kill -9 of an ingest agent, restarted after a pause (it resyncs).
    AgentKill,
    /// nats-server stopped and started again on the same data dir.
    NatsRestart,
    /// `flotilla standalone` killed and started again with its data dir.
    StandaloneRestart,
    /// A ConfigMap nested 122 `[` deep.
    PoisonDeepConfigmap,
    /// A YAML mapping with a duplicate key.
    PoisonDuplicateKey,
    /// A file starting with a UTF-8 byte order mark.
    PoisonBom,
    /// A Gateway named `a/b`.
    PoisonSlashName,
    /// An object over 1.5 MiB.
    PoisonHuge,
    /// An HTTPRoute whose path regex does not compile.
    PoisonBadRegex,
    /// Garbage bytes published straight to `flotilla.events.<cluster>`.
    PoisonGarbage,
    /// A delta xDS client naming a gateway with another gateway's token (or none): the edge
    /// must refuse it (`PERMISSION_DENIED`) and serve everyone else as before.
    IntruderProxy,
}

impl FaultKind {
    pub const PROCESS: [FaultKind; 7] = [
        FaultKind::StoreKill,
        FaultKind::LeaderKill,
        FaultKind::LeaderStop,
        FaultKind::EdgeKill,
        FaultKind::AgentKill,
        FaultKind::NatsRestart,
        FaultKind::StandaloneRestart,
    ];
    pub const POISON: [FaultKind; 7] = [
        FaultKind::PoisonDeepConfigmap,
        FaultKind::PoisonDuplicateKey,
        FaultKind::PoisonBom,
        FaultKind::PoisonSlashName,
        FaultKind::PoisonHuge,
        FaultKind::PoisonBadRegex,
        FaultKind::PoisonGarbage,
    ];
    /// Hostile clients (they must be refused; nothing else may notice).
    pub const ATTACK: [FaultKind; 1] = [FaultKind::IntruderProxy];

    /// Every kind: process faults, poison inputs, attacks.
    pub fn all() -> impl Iterator<Item = FaultKind> {
        Self::PROCESS
            .into_iter()
            .chain(Self::POISON)
            .chain(Self::ATTACK)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::StoreKill => "store-kill",
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::LeaderStop => "leader-stop",
            FaultKind::EdgeKill => "edge-kill",
            FaultKind::AgentKill => "agent-kill",
            FaultKind::NatsRestart => "nats-restart",
            FaultKind::StandaloneRestart => "standalone-restart",
            FaultKind::PoisonDeepConfigmap => "poison-deep-configmap",
            FaultKind::PoisonDuplicateKey => "poison-duplicate-key",
            FaultKind::PoisonBom => "poison-bom",
            FaultKind::PoisonSlashName => "poison-slash-name",
            FaultKind::PoisonHuge => "poison-huge",
            FaultKind::PoisonBadRegex => "poison-bad-regex",
            FaultKind::PoisonGarbage => "poison-garbage",
            FaultKind::IntruderProxy => "intruder-proxy",
        }
    }

    pub fn is_poison(self) -> bool {
        FaultKind::POISON.contains(&self)
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::all().find(|k| k.name() == s).ok_or_else(|| {
            let all: Vec<&str> = FaultKind::all().map(FaultKind::name).collect();
            format!("unknown fault {s:?} (known: {})", all.join(", "))
        })
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One injected fault and how long the system took to serve a change again after it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub target: String,
    pub at_ms: f64,
    /// False when the fault could not be injected (e.g. no leader to kill); `target` says why.
    pub injected: bool,
    /// Fault → the next probe change converged on every proxy of the probed gateways.
    pub recovery_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for k in FaultKind::all() {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.name()));
            assert_eq!(k.is_poison(), k.name().starts_with("poison"));
            assert_eq!(k.name().parse::<FaultKind>(), Ok(k));
        }
    }
}

/// What the faults of one kind did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultSummary {
    pub injected: usize,
    /// Attempts that found nothing to hit (e.g. no leader during a quorum loss).
    pub not_injected: usize,
    pub recovered: usize,
    pub longest_recovery_ms: Option<f64>,
}

/// Fault summary per kind.
pub fn by_kind(records: &[FaultRecord]) -> BTreeMap<String, FaultSummary> {
    let mut out: BTreeMap<String, FaultSummary> = BTreeMap::new();
    for r in records {
        let e = out.entry(r.kind.name().to_string()).or_default();
        if !r.injected {
            e.not_injected += 1;
            continue;
        }
        e.injected += 1;
        if let Some(ms) = r.recovery_ms {
            e.recovered += 1;
            e.longest_recovery_ms = Some(e.longest_recovery_ms.map_or(ms, |m: f64| m.max(ms)));
        }
    }
    out
}

/// How an intruder fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `PERMISSION_DENIED`, as it must be.
    Refused,
    /// The edge was down (another fault) or did not answer: nothing learned.
    Unreachable,
    /// The edge sent it a response or ended it otherwise: a violation.
    Served,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Refused => "refused",
            Outcome::Unreachable => "edge unreachable",
            Outcome::Served => "SERVED",
        })
    }
}

/// One intruder fault.
#[derive(Clone, Debug)]
pub struct Intrusion {
    pub what: String,
    pub outcome: Outcome,
}
