//! A latency histogram kept in atomics (no lock on the measured path), rendered in
//! Prometheus' text format: the audit journal's group commits, the audit writer's
//! transactions, agents' heartbeats and the HTTP requests by route.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Storage-fast bounds, in seconds (from a tenth of a millisecond, an `fsync` on fast storage,
/// to a second, a database write under duress): the default.
pub const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Request-sized bounds, in seconds (5 ms to 10 s): HTTP requests and agents' heartbeats.
pub const REQUEST_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct LatencyHistogram {
    /// The buckets' upper bounds, ascending.
    bounds: &'static [f64],
    /// Cumulative: each bucket counts the observations at or under its bound.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new(&BUCKETS)
    }
}

impl LatencyHistogram {
    /// A histogram over these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, n) in self.bounds.iter().zip(self.buckets.iter()) {
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
        self.render_series(out, name, "");
    }

    /// This histogram's lines as the series of `name` with these labels (`route="/x"`, or
    /// empty), for a metric whose `HELP` and `TYPE` lines the caller wrote once.
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in self.bounds.iter().zip(self.buckets.iter()) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                n.load(Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum().as_secs_f64();
        if labels.is_empty() {
            let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        } else {
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
            );
        }
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

    #[test]
    fn a_bucket_set_of_its_own_and_labelled_series() {
        let h = LatencyHistogram::new(&REQUEST_BUCKETS);
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.render_series(&mut out, "r_seconds", "route=\"/a\",method=\"GET\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), REQUEST_BUCKETS.len() + 3, "{out}");
        assert_eq!(
            lines[0],
            "r_seconds_bucket{route=\"/a\",method=\"GET\",le=\"0.005\"} 0"
        );
        assert_eq!(
            lines[1],
            "r_seconds_bucket{route=\"/a\",method=\"GET\",le=\"0.01\"} 1"
        );
        assert_eq!(
            lines[10],
            "r_seconds_bucket{route=\"/a\",method=\"GET\",le=\"10\"} 1"
        );
        assert_eq!(
            lines[11],
            "r_seconds_bucket{route=\"/a\",method=\"GET\",le=\"+Inf\"} 2"
        );
        assert_eq!(
            lines[12],
            "r_seconds_sum{route=\"/a\",method=\"GET\"} 20.007"
        );
        assert_eq!(lines[13], "r_seconds_count{route=\"/a\",method=\"GET\"} 2");
    }
}
