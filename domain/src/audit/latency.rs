//! A latency histogram kept in atomics (no lock on the measured path), rendered in
//! Prometheus' text format: the audit journal's group commits and the audit writer's
//! transactions.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds (from a tenth of a millisecond, an `fsync` on
/// fast storage, to a second, a database write under duress).
pub const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

#[derive(Default)]
pub struct LatencyHistogram {
    /// Cumulative: each bucket counts the observations at or under its bound.
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                n.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// How many were observed.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Their total.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.micros.load(Relaxed))
    }

    /// Their mean (zero before the first).
    pub fn mean(&self) -> Duration {
        match self.count() {
            0 => Duration::ZERO,
            n => Duration::from_micros(self.micros.load(Relaxed) / n),
        }
    }

    /// `name` as a Prometheus histogram in seconds, with its `HELP` and `TYPE` lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", n.load(Relaxed));
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum().as_secs_f64());
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_text_is_prometheus() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(80));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.count(), 3);
        assert_eq!(
            h.mean(),
            Duration::from_micros((80 + 3_000 + 2_000_000) / 3)
        );
        assert_eq!(LatencyHistogram::default().mean(), Duration::ZERO);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "What x took.");
        assert!(out.starts_with("# HELP x_seconds What x took.\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 2.00308\n"), "{out}");
        assert!(out.ends_with("x_seconds_count 3\n"), "{out}");
    }
}
