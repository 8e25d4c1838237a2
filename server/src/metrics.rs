//! Prometheus metrics: request counts and latencies by route, method and status.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_domain::latency::{LatencyHistogram, REQUEST_BUCKETS};

/// One route and method: its requests by status, and their latency.
struct RouteSeries {
    statuses: BTreeMap<u16, u64>,
    latency: LatencyHistogram,
}

/// Whether this replica holds the background jobs' lease, and the passes of each job.
type JobsView = Box<dyn Fn() -> (bool, Vec<(String, u64)>) + Send + Sync>;

pub struct Metrics {
    /// By route and method.
    requests: Mutex<BTreeMap<(String, String), RouteSeries>>,
    /// Requests refused by a rate limit, by class.
    rate_limited: Mutex<BTreeMap<&'static str, u64>>,
    /// How many audit events wait to be stored, and how many requests were refused because too
    /// many did (set at start-up).
    audit_queue: std::sync::OnceLock<Box<dyn Fn() -> (usize, u64) + Send + Sync>>,
    /// Unauthenticated refusals by action (set at start-up).
    refusals: std::sync::OnceLock<Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>>,
    /// The SIEM stream's counters (set at start-up when a sink is configured).
    siem: std::sync::OnceLock<Arc<crate::siem::SiemStats>>,
    /// The gateway's audit journal (set at start-up).
    journal: std::sync::OnceLock<Arc<warden_domain::audit::journal::AuditJournal>>,
    /// The gateway's audit writer: its transactions and the events they stored (set at start-up).
    audit_writer: std::sync::OnceLock<Arc<warden_domain::audit::WriterStats>>,
    /// The background jobs' lease and passes (set at start-up).
    jobs: std::sync::OnceLock<JobsView>,
    /// Agents' heartbeats: from arrival to stored, and the slowest so far (microseconds).
    heartbeats: LatencyHistogram,
    heartbeat_max_micros: std::sync::atomic::AtomicU64,
    /// Agent tunnels open on this replica.
    agents_connected: std::sync::atomic::AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            rate_limited: Mutex::default(),
            audit_queue: Default::default(),
            refusals: Default::default(),
            siem: Default::default(),
            journal: Default::default(),
            audit_writer: Default::default(),
            jobs: Default::default(),
            heartbeats: LatencyHistogram::new(&REQUEST_BUCKETS),
            heartbeat_max_micros: Default::default(),
            agents_connected: Default::default(),
        }
    }
}

impl Metrics {
    /// Report the depth of the gateway's audit queue as `warden_audit_queue_depth`.
    pub fn watch_audit_queue(&self, depth: impl Fn() -> (usize, u64) + Send + Sync + 'static) {
        let _ = self.audit_queue.set(Box::new(depth));
    }

    /// Report the gateway's audit writer as `warden_audit_write_seconds` (each batch's
    /// transaction) and `warden_audit_written_events_total`.
    pub fn watch_audit_writer(&self, stats: Arc<warden_domain::audit::WriterStats>) {
        let _ = self.audit_writer.set(stats);
    }

    /// Report unauthenticated refusals as `warden_unauthenticated_refusals_total{action}`.
    pub fn watch_refusals(&self, totals: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static) {
        let _ = self.refusals.set(Box::new(totals));
    }

    /// Report the background jobs as `warden_background_jobs_held` (1 on the replica that
    /// runs them) and `warden_background_job_runs_total{job}`.
    pub fn watch_jobs(
        &self,
        jobs: impl Fn() -> (bool, Vec<(String, u64)>) + Send + Sync + 'static,
    ) {
        let _ = self.jobs.set(Box::new(jobs));
    }

    /// Report the audit journal as `warden_audit_journal_*`.
    pub fn watch_audit_journal(&self, journal: Arc<warden_domain::audit::journal::AuditJournal>) {
        let _ = self.journal.set(journal);
    }

    /// Report the SIEM stream as `warden_siem_*`.
    pub fn watch_siem(&self, stats: Arc<crate::siem::SiemStats>) {
        let _ = self.siem.set(stats);
    }

    /// An agent's heartbeat was handled (arrival to stored) in `took`.
    pub fn heartbeat(&self, took: Duration) {
        self.heartbeats.observe(took);
        self.heartbeat_max_micros.fetch_max(
            took.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// An agent tunnel opened (`+1`) or closed (`-1`) on this replica.
    pub fn agent_tunnels(&self, delta: i64) {
        self.agents_connected
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn rate_limited(&self, class: &'static str) {
        if let Ok(mut m) = self.rate_limited.lock() {
            *m.entry(class).or_default() += 1;
        }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let Ok(mut map) = self.requests.lock() else {
            return;
        };
        let s = map
            .entry((route.to_owned(), method.to_owned()))
            .or_insert_with(|| RouteSeries {
                statuses: BTreeMap::new(),
                latency: LatencyHistogram::new(&REQUEST_BUCKETS),
            });
        *s.statuses.entry(status).or_default() += 1;
        s.latency.observe(took);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        {
            use std::sync::atomic::Ordering::Relaxed;
            out.push_str("# HELP warden_agents_connected Agent tunnels open on this replica.\n");
            out.push_str("# TYPE warden_agents_connected gauge\n");
            let _ = writeln!(
                out,
                "warden_agents_connected {}",
                self.agents_connected.load(Relaxed)
            );
            self.heartbeats.render(
                &mut out,
                "warden_agent_heartbeat_seconds",
                "How long an agent's heartbeat took from its arrival to its record in the database.",
            );
            out.push_str("# HELP warden_agent_heartbeat_max_seconds The slowest agent heartbeat since start (arrival to stored).\n");
            out.push_str("# TYPE warden_agent_heartbeat_max_seconds gauge\n");
            let _ = writeln!(
                out,
                "warden_agent_heartbeat_max_seconds {}",
                self.heartbeat_max_micros.load(Relaxed) as f64 / 1e6
            );
        }
        if let Ok(limited) = self.rate_limited.lock() {
            out.push_str("# HELP warden_rate_limited_total Requests refused by a per-source rate limit, by class.\n");
            out.push_str("# TYPE warden_rate_limited_total counter\n");
            for class in ["sign_in", "agent"] {
                let n = limited.get(class).copied().unwrap_or(0);
                let _ = writeln!(out, "warden_rate_limited_total{{class=\"{class}\"}} {n}");
            }
        }
        if let Some(depth) = self.audit_queue.get() {
            out.push_str(
                "# HELP warden_audit_queue_depth Audit events of the gateway not yet stored.\n",
            );
            out.push_str("# TYPE warden_audit_queue_depth gauge\n");
            let (depth, refused) = depth();
            let _ = writeln!(out, "warden_audit_queue_depth {depth}");
            out.push_str("# HELP warden_audit_backpressure_refusals_total Gateway requests refused because the audit queue was past its bound.\n");
            out.push_str("# TYPE warden_audit_backpressure_refusals_total counter\n");
            let _ = writeln!(out, "warden_audit_backpressure_refusals_total {refused}");
        }
        if let Some(w) = self.audit_writer.get() {
            w.writes.render(
                &mut out,
                "warden_audit_write_seconds",
                "How long each batch of the gateway's audit events took to store (one transaction).",
            );
            out.push_str("# HELP warden_audit_written_events_total Audit events of the gateway stored in the database.\n");
            out.push_str("# TYPE warden_audit_written_events_total counter\n");
            let _ = writeln!(
                out,
                "warden_audit_written_events_total {}",
                w.events.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        if let Some(j) = self.journal.get() {
            j.stats.fsync.render(
                &mut out,
                "warden_audit_journal_fsync_seconds",
                "How long each group commit of the audit journal (write and fsync) took.",
            );
            out.push_str("# HELP warden_audit_journal_pending Audit events in the journal not yet in the database (answers still streaming, events the writer has not stored yet).\n");
            out.push_str("# TYPE warden_audit_journal_pending gauge\n");
            let _ = writeln!(out, "warden_audit_journal_pending {}", j.pending());
        }
        if let Some(siem) = self.siem.get() {
            use std::sync::atomic::Ordering::Relaxed;
            for (name, kind, help, v) in [
                ("warden_siem_events_total", "counter", "Audit events delivered to the SIEM sink.", siem.delivered.load(Relaxed) as i64),
                ("warden_siem_dropped_total", "counter", "Audit events retention deleted before the SIEM stream delivered them (at most).", siem.dropped.load(Relaxed) as i64),
                ("warden_siem_failures_total", "counter", "Failed deliveries to the SIEM sink (each is retried).", siem.failures.load(Relaxed) as i64),
                ("warden_siem_cursor", "gauge", "The audit seq the SIEM stream delivered last.", siem.cursor.load(Relaxed)),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
            }
        }
        if let Some(jobs) = self.jobs.get() {
            let (held, runs) = jobs();
            out.push_str("# HELP warden_background_jobs_held 1 when this replica runs the background jobs (one replica at a time does).
");
            out.push_str(
                "# TYPE warden_background_jobs_held gauge
",
            );
            let _ = writeln!(out, "warden_background_jobs_held {}", u8::from(held));
            out.push_str("# HELP warden_background_job_runs_total Passes of each background job run by this replica.
");
            out.push_str(
                "# TYPE warden_background_job_runs_total counter
",
            );
            for (job, n) in runs {
                let _ = writeln!(
                    out,
                    "warden_background_job_runs_total{{job=\"{}\"}} {n}",
                    esc(&job)
                );
            }
        }
        if let Some(totals) = self.refusals.get() {
            out.push_str("# HELP warden_unauthenticated_refusals_total Refusals of clients Warden did not authenticate, by action (sampled into the audit log).\n");
            out.push_str("# TYPE warden_unauthenticated_refusals_total counter\n");
            for (action, n) in totals() {
                let _ = writeln!(
                    out,
                    "warden_unauthenticated_refusals_total{{action=\"{}\"}} {n}",
                    esc(&action)
                );
            }
        }
        let Ok(map) = self.requests.lock() else {
            return out;
        };
        out.push_str(
            "# HELP warden_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE warden_http_requests_total counter\n");
        for ((route, method), s) in map.iter() {
            for (status, n) in &s.statuses {
                let _ = writeln!(out, "warden_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}", esc(route));
            }
        }
        out.push_str("# HELP warden_http_request_duration_seconds HTTP request latency by route and method.\n");
        out.push_str("# TYPE warden_http_request_duration_seconds histogram\n");
        for ((route, method), s) in map.iter() {
            let labels = format!("route=\"{}\",method=\"{method}\"", esc(route));
            s.latency
                .render_series(&mut out, "warden_http_request_duration_seconds", &labels);
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Middleware: time every request. Unmatched paths share one label so that scanning cannot
/// blow up the number of series.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| {
            if req.uri().path().starts_with("/pkg/") {
                "/pkg/{file}".into()
            } else {
                "unmatched".into()
            }
        });
    let method = method_label(req.method()).to_owned();
    let start = Instant::now();
    let res = next.run(req).await;
    metrics.observe(&route, &method, res.status().as_u16(), start.elapsed());
    res
}

/// The method as a label: the standard ones by name, anything else `OTHER` (an arbitrary
/// method must not create a series).
fn method_label(m: &http::Method) -> &'static str {
    use http::Method as M;
    match *m {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "OTHER",
    }
}

pub async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Why `/metrics` is refused to a caller at `peer` when no token is set: only a scraper on
/// Warden's own host (loopback: a sidecar, `kubectl port-forward`, `./x run`) that reached it
/// directly is answered. A request that came through a reverse proxy (it carries
/// `X-Forwarded-For` or `Forwarded`, as an Ingress adds) or from anywhere else on the network
/// (any pod can reach a Service) is refused, so the metrics (fleet size, refusal and rate-limit
/// counts) are not published to whoever reaches the console.
pub fn refused_without_token(
    peer: Option<std::net::IpAddr>,
    headers: &http::HeaderMap,
) -> Option<&'static str> {
    if headers.contains_key("x-forwarded-for") || headers.contains_key(http::header::FORWARDED) {
        return Some("the metrics are served through a proxy only with a bearer token (WARDEN_METRICS_TOKEN); set one");
    }
    if !peer.is_some_and(|p| p.is_loopback() || p.to_canonical().is_loopback()) {
        return Some("without a bearer token (WARDEN_METRICS_TOKEN) the metrics are served on Warden's own host only; set one for a scraper elsewhere");
    }
    None
}

/// `GET /metrics`: with `WARDEN_METRICS_TOKEN` set, only for `Authorization: Bearer <token>`
/// (compared in constant time); without it, see [`refused_without_token`].
pub async fn render_protected(
    State(state): State<crate::state::AppState>,
    peer: Option<axum::Extension<warden_domain::audit::ClientIp>>,
    headers: http::HeaderMap,
) -> Response {
    if state.config.metrics_token.is_none() {
        if let Some(why) = refused_without_token(peer.map(|p| p.0 .0), &headers) {
            return crate::api::error::ApiError::new(http::StatusCode::FORBIDDEN, "forbidden", why)
                .into_response();
        }
    }
    if let Some(token) = &state.config.metrics_token {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim();
        if !same_secret(given, token.expose()) {
            let mut res = crate::api::error::ApiError::new(
                http::StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the metrics need the bearer token set in WARDEN_METRICS_TOKEN",
            )
            .into_response();
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"warden-metrics\""),
            );
            return res;
        }
    }
    render(State(state.metrics.clone())).await.into_response()
}

/// Equal secrets, without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

#[cfg(test)]
mod access_tests {
    /// Without a token: this host's scraper only, reaching Warden directly.
    #[test]
    fn without_a_token_only_this_host_is_answered() {
        let none = http::HeaderMap::new();
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(super::refused_without_token(ip("127.0.0.1"), &none), None);
        assert_eq!(super::refused_without_token(ip("::1"), &none), None);
        assert_eq!(
            super::refused_without_token(ip("::ffff:127.0.0.1"), &none),
            None
        );
        for elsewhere in ["10.42.0.7", "192.168.1.20", "203.0.113.9", "fd00::1"] {
            assert!(
                super::refused_without_token(ip(elsewhere), &none).is_some(),
                "{elsewhere}"
            );
        }
        assert!(super::refused_without_token(None, &none).is_some());
        let mut proxied = http::HeaderMap::new();
        proxied.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert!(super::refused_without_token(ip("127.0.0.1"), &proxied).is_some());
    }
}

#[cfg(test)]
mod method_tests {
    #[test]
    fn unknown_methods_share_one_label() {
        let m = |s: &str| super::method_label(&http::Method::from_bytes(s.as_bytes()).unwrap());
        assert_eq!(m("GET"), "GET");
        assert_eq!(m("DELETE"), "DELETE");
        assert_eq!(m("FOO123"), "OTHER");
        assert_eq!(m("PROPFIND"), "OTHER");
    }
}
