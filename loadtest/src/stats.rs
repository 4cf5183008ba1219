//! Percentiles and distributions of latency samples.

use serde::Serialize;

/// Summary of a set of samples (milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The `q`-quantile (0..=1) of sorted samples by the nearest-rank method: the smallest sample
/// such that at least `q` of all samples are at or below it. `None` for no samples.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    // Nearest rank: ceil(q * n), 1-based; q = 0 is the minimum.
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Summary of unsorted samples; NaNs are ignored.
pub fn summarize(samples: &[f64]) -> Summary {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Summary::default();
    }
    let q = |p| quantile_sorted(&v, p).unwrap_or(0.0);
    Summary {
        count: v.len(),
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

/// Points of the empirical CDF, at most `points` of them (evenly spaced in rank): (value,
/// fraction of samples at or below it).
pub fn cdf(samples: &[f64], points: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 || points == 0 {
        return Vec::new();
    }
    let step = (n as f64 / points as f64).max(1.0);
    let mut out = Vec::new();
    let mut i = 0.0_f64;
    while (i as usize) < n {
        let idx = i as usize;
        out.push((v[idx], (idx + 1) as f64 / n as f64));
        i += step;
    }
    if out.last().map(|p| p.1) != Some(1.0) {
        out.push((v[n - 1], 1.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile_sorted(&v, 0.5), Some(50.0));
        assert_eq!(quantile_sorted(&v, 0.9), Some(90.0));
        assert_eq!(quantile_sorted(&v, 0.99), Some(99.0));
        assert_eq!(quantile_sorted(&v, 1.0), Some(100.0));
        assert_eq!(quantile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
        // Small sets: p99 of 10 samples is the maximum, p50 the 5th.
        let w: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile_sorted(&w, 0.99), Some(10.0));
        assert_eq!(quantile_sorted(&w, 0.5), Some(5.0));
        assert_eq!(quantile_sorted(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let s = summarize(&[5.0, 1.0, f64::NAN, 3.0, 2.0, 4.0]);
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.mean, 3.0);
        assert_eq!(summarize(&[]), Summary::default());
    }

    #[test]
    fn cdf_ends_at_one_and_is_monotonic() {
        let v: Vec<f64> = (0..1000).rev().map(f64::from).collect();
        let c = cdf(&v, 50);
        assert!(c.len() <= 52 && c.len() >= 50, "{}", c.len());
        assert_eq!(c.last(), Some(&(999.0, 1.0)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf(&[], 10), Vec::new());
        assert_eq!(cdf(&[3.0], 10), vec![(3.0, 1.0)]);
    }
}
