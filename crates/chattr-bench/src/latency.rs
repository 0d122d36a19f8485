//! Latency histograms (HDR, microseconds, 3 significant digits) and their summary.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency a histogram holds exactly; longer ones count as this.
const MAX_MICROS: u64 = 60_000_000;

/// A latency histogram.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // Constant bounds that hdrhistogram accepts (1 µs to 60 s, 3 digits).
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid constant histogram bounds"))
    }
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_MICROS);
        self.0.saturating_record(micros);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Latency at percentiles from 0 to 99.999, spaced evenly on a log scale of
    /// 1 / (1 - p) (the usual HDR plot: the tail gets as many points as the middle).
    pub fn curve(&self) -> Vec<Point> {
        if self.0.is_empty() {
            return Vec::new();
        }
        (0..=50)
            .map(|i| {
                let percentile = 100.0 * (1.0 - 10f64.powf(-(i as f64) / 10.0));
                let ms = self.0.value_at_quantile(percentile / 100.0) as f64 / 1000.0;
                Point { percentile, ms }
            })
            .collect()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            count: self.0.len(),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// One point of a latency-by-percentile curve.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    pub percentile: f64,
    pub ms: f64,
}

/// What a report shows of a histogram.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut l = Latencies::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        let mut more = Latencies::default();
        more.merge(&l);
        assert_eq!(more.count(), 1000);
        let curve = l.curve();
        assert_eq!(curve.first().map(|p| p.percentile), Some(0.0));
        assert!((curve.last().map_or(0.0, |p| p.percentile) - 99.999).abs() < 1e-9);
        assert!(curve.windows(2).all(|w| w[0].ms <= w[1].ms));
        assert!(Latencies::default().curve().is_empty());
    }
}
