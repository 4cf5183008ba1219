//! The report: a table on stdout, a JSON file and an SVG chart (convergence CDF).

use crate::faults::FaultSummary;
use crate::procs::Usage;
use crate::stats::Summary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ProxyNumbers {
    pub total: usize,
    pub delta: usize,
    pub sotw: usize,
    /// Streams the harness holds open at the end.
    pub connected: usize,
    /// Streams the edges report (multi-process plane).
    pub edge_streams: u64,
    pub reconnects: u64,
    pub responses: u64,
    pub nacks: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    pub changes: usize,
    pub unconverged: usize,
    /// Change published → every affected proxy ACKed config containing it (ms).
    pub all_proxies: Summary,
    /// Change published → one proxy ACKed it, over every (change, proxy) pair (ms).
    pub per_proxy: Summary,
    pub cdf_all_proxies: Vec<(f64, f64)>,
    pub cdf_per_proxy: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Bytes {
    /// Bytes received during churn by proxies of changed gateways, per (change × proxy).
    pub per_change_per_affected_proxy: Option<f64>,
    /// Bytes received during churn by proxies whose gateway had no change.
    pub to_unaffected_proxies: u64,
    pub total_during_churn: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreNumbers {
    pub events_applied_during_churn: Option<u64>,
    pub events_per_second: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcNumbers {
    pub name: String,
    pub role: String,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    pub starts: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RecorderNumbers {
    pub history_entries: usize,
    pub interned_strings: usize,
    pub decoded_versions: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Replica {
    pub name: String,
    pub reachable: bool,
    pub events_applied: Option<u64>,
    pub last_seq: Option<u64>,
    pub lost: Option<i64>,
    pub applied_twice: Option<i64>,
    pub digest: Option<String>,
    pub digest_source: Option<String>,
    pub resources: Option<usize>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosSection {
    pub stream_messages: Option<u64>,
    pub stream_last_seq: Option<u64>,
    pub garbage_published: u64,
    pub faults_by_kind: BTreeMap<String, FaultSummary>,
    pub faults: Vec<crate::faults::FaultRecord>,
    pub expected_digest: String,
    pub expected_resources: usize,
    pub replicas: Vec<Replica>,
    pub standalone: Option<Replica>,
    pub standalone_expected_digest: Option<String>,
    pub churn_ops: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub name: String,
    pub mode: String,
    pub seed: u64,
    pub scenario: Option<crate::scenario::Scenario>,
    pub duration_s: f64,
    pub proxies: ProxyNumbers,
    pub convergence: Convergence,
    pub bytes: Bytes,
    pub store: StoreNumbers,
    pub processes: Vec<ProcNumbers>,
    pub harness: Usage,
    pub recorder: RecorderNumbers,
    pub revision_violations: u64,
    pub violation_examples: Vec<crate::recorder::Violation>,
    pub chaos: Option<ChaosSection>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let ms = |x: f64| format!("{x:.1}");
        let _ = writeln!(
            s,
            "== flotilla-loadtest {} ({}), seed {} ==",
            self.name, self.mode, self.seed
        );
        let p = &self.proxies;
        let _ = writeln!(
            s,
            "proxies        {} simulated ({} delta, {} sotw); streams open {} (edges report {}); reconnects {}; responses {}; NACKs {}",
            p.total, p.delta, p.sotw, p.connected, p.edge_streams, p.reconnects, p.responses, p.nacks
        );
        let c = &self.convergence;
        let _ = writeln!(
            s,
            "changes        {} measured, {} not converged",
            c.changes, c.unconverged
        );
        let _ = writeln!(
            s,
            "convergence    {:<22} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "(ms)", "p50", "p90", "p99", "max", "n"
        );
        for (label, x) in [
            ("every proxy ACKed", &c.all_proxies),
            ("one proxy ACKed", &c.per_proxy),
        ] {
            let _ = writeln!(
                s,
                "               {:<22} {:>9} {:>9} {:>9} {:>9} {:>7}",
                label,
                ms(x.p50),
                ms(x.p90),
                ms(x.p99),
                ms(x.max),
                x.count
            );
        }
        let b = &self.bytes;
        let _ = writeln!(
            s,
            "bytes          {} per change per affected proxy; {} to unaffected proxies; {} total during churn",
            b.per_change_per_affected_proxy.map_or("-".into(), |x| format!("{x:.0}")),
            b.to_unaffected_proxies,
            b.total_during_churn
        );
        let _ = writeln!(
            s,
            "store          {} events applied during churn, {} events/s",
            self.store
                .events_applied_during_churn
                .map_or("-".into(), |x| x.to_string()),
            self.store
                .events_per_second
                .map_or("-".into(), |x| format!("{x:.1}"))
        );
        let _ = writeln!(
            s,
            "processes      {:<14} {:>8} {:>10} {:>6}",
            "name", "cpu s", "peak MiB", "starts"
        );
        for pr in &self.processes {
            let _ = writeln!(
                s,
                "               {:<14} {:>8.2} {:>10.1} {:>6}",
                pr.name, pr.cpu_seconds, pr.peak_rss_mib, pr.starts
            );
        }
        let _ = writeln!(
            s,
            "               {:<14} {:>8.2} {:>10.1}",
            "(harness)", self.harness.cpu_seconds, self.harness.peak_rss_mib
        );
        let r = &self.recorder;
        let _ = writeln!(
            s,
            "recorder       {} versions received, {} interned strings, {} distinct versions decoded",
            r.history_entries, r.interned_strings, r.decoded_versions
        );
        let chaos_mode = self.mode == "chaos";
        if let Some(ch) = &self.chaos {
            if chaos_mode {
                let _ = writeln!(
                    s,
                    "events         stream FLOTILLA_EVENTS: {} messages, last seq {} ({} garbage messages published by the harness)",
                    ch.stream_messages.map_or("?".into(), |x| x.to_string()),
                    ch.stream_last_seq.map_or("?".into(), |x| x.to_string()),
                    ch.garbage_published
                );
                let ops: Vec<String> = ch
                    .churn_ops
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let _ = writeln!(s, "churn          {}", ops.join(", "));
            }
            let _ = writeln!(
                s,
                "faults         {:<24} {:>8} {:>10} {:>16} {:>8}",
                "kind", "injected", "recovered", "longest recovery", "skipped"
            );
            for (k, f) in &ch.faults_by_kind {
                let longest = match (f.longest_recovery_ms, f.injected) {
                    (Some(x), _) => format!("{x:.0} ms"),
                    (None, 0) => "-".to_string(),
                    (None, _) => "never".to_string(),
                };
                let _ = writeln!(
                    s,
                    "               {:<24} {:>8} {:>10} {:>16} {:>8}",
                    k, f.injected, f.recovered, longest, f.not_injected
                );
            }
            if chaos_mode {
                let _ = writeln!(
                    s,
                    "replicas       expected digest {} ({} resources)",
                    short(&ch.expected_digest),
                    ch.expected_resources
                );
                for rp in ch.replicas.iter().chain(ch.standalone.iter()) {
                    let _ = writeln!(
                        s,
                        "               {:<10} applied {:>6} lastSeq {:>6} lost {:>4} twice {:>4} digest {} ({} resources, from {}){}",
                        rp.name,
                        opt(rp.events_applied),
                        opt(rp.last_seq),
                        opt(rp.lost),
                        opt(rp.applied_twice),
                        rp.digest.as_deref().map_or("-".into(), short),
                        opt(rp.resources),
                        rp.digest_source.as_deref().unwrap_or("-"),
                        rp.error.as_deref().map_or(String::new(), |e| format!(" error: {e}"))
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "revisions      {} responses carried a revision lower than one the proxy had ACKed",
            self.revision_violations
        );
        let _ = writeln!(s, "checks");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if c.ok { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(
            s,
            "result         {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }

    /// A hand-written SVG: CDFs of per-proxy and every-proxy convergence.
    pub fn svg(&self) -> String {
        let (w, h, left, bottom, top, right) = (720.0, 420.0, 60.0, 50.0, 40.0, 20.0);
        let series = [
            (
                "one proxy ACKed",
                "#1f77b4",
                &self.convergence.cdf_per_proxy,
            ),
            (
                "every proxy ACKed",
                "#d62728",
                &self.convergence.cdf_all_proxies,
            ),
        ];
        let max_x = series
            .iter()
            .flat_map(|(_, _, v)| v.iter().map(|p| p.0))
            .fold(1.0_f64, f64::max);
        let max_x = nice_ceiling(max_x);
        let px = |x: f64| left + (x / max_x) * (w - left - right);
        let py = |y: f64| h - bottom - y * (h - bottom - top);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">flotilla-loadtest {}: change published → proxy ACKed (CDF, {} changes)</text>"#,
            w / 2.0,
            escape(&self.name),
            self.convergence.changes
        );
        for i in 0..=5 {
            let x = max_x * f64::from(i) / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#ddd"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"##,
                px(x),
                py(0.0),
                py(1.0),
                h - bottom + 16.0,
                fmt_ms(x)
            );
            let y = f64::from(i) / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{3:.1}" y="{4:.1}" text-anchor="end">{5:.0}%</text>"##,
                px(0.0),
                py(y),
                px(max_x),
                left - 6.0,
                py(y) + 4.0,
                y * 100.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">milliseconds</text>"#,
            (left + w - right) / 2.0,
            h - 12.0
        );
        for (i, (label, color, pts)) in series.iter().enumerate() {
            if !pts.is_empty() {
                let mut d = format!("{:.1},{:.1}", px(pts[0].0), py(0.0));
                for (x, y) in pts.iter() {
                    let _ = write!(d, " {:.1},{:.1}", px(*x), py(*y));
                }
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>"#
                );
            }
            let ly = top + 10.0 + 16.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{color}" stroke-width="2"/><text x="{3}" y="{4}">{5}</text>"#,
                w - 200.0,
                ly,
                w - 180.0,
                w - 175.0,
                ly + 4.0,
                escape(label)
            );
        }
        let _ = writeln!(s, "</svg>");
        s
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

fn short(d: &str) -> String {
    d.chars().take(12).collect()
}

fn fmt_ms(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// 1, 2, 5 × 10^k at or above `x`.
pub fn nice_ceiling(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let e = x.log10().floor();
    let base = 10f64.powf(e);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= x {
            return m * base;
        }
    }
    10.0 * base
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(47.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn table_json_and_svg_render() {
        let mut r = Report {
            name: "t<1>".into(),
            mode: "load".into(),
            ..Report::default()
        };
        r.convergence.cdf_per_proxy = vec![(1.0, 0.5), (3.0, 1.0)];
        r.convergence.cdf_all_proxies = vec![(3.0, 1.0)];
        r.checks.push(Check::new("x", false, "broken"));
        assert!(!r.passed());
        let t = r.table();
        assert!(t.contains("[FAIL] x: broken"), "{t}");
        assert!(t.contains("result         FAIL"));
        let svg = r.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t&lt;1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["checks"][0]["ok"], false);
    }
}
