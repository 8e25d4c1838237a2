//! Per-source rate limits on the doors an anonymous flood knocks on: sign-in (REST
//! `/api/v1/auth/*` and the console's sign-in and password server functions) and the agent
//! endpoint (`/agent/v1/*`). Each source address has a bucket (the `governor` crate, GCRA): a
//! burst of the configured size, refilled at that many per minute. Past it the answer is
//! `429 Too Many Requests` with `Retry-After`, in the REST error envelope, and the refusal is
//! counted (`warden_rate_limited_total`), not audited row by row.
//!
//! The source is the TCP peer; behind a reverse proxy listed in `WARDEN_TRUSTED_PROXIES`, the
//! last `X-Forwarded-For` hop that is not itself a trusted proxy.
//!
//! On PostgreSQL, where several replicas may serve behind one load balancer, the buckets are
//! shared through the database ([`Shared`]: the same GCRA, one row per class and source, one
//! statement per request, in the database's clock), so a source gets the configured rate in
//! all, not once per replica. The in-memory bucket stays in front of it: a flood past the
//! limit is turned away without a database round trip. If the database cannot answer, the
//! request is refused (fail closed).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::api::error::ApiError;
use crate::state::AppState;

/// The limits, from configuration (`0` turns a class off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sign-in attempts per minute and source (`WARDEN_RATE_LIMIT_SIGN_IN`, default 30).
    pub sign_in_per_minute: u32,
    /// Agent endpoint requests per minute and source (`WARDEN_RATE_LIMIT_AGENT`, default 120).
    pub agent_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`WARDEN_TRUSTED_PROXIES`):
    /// addresses, or ranges (an ingress controller's pods change addresses within the pod
    /// network's range).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            sign_in_per_minute: 30,
            agent_per_minute: 120,
            trusted_proxies: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    SignIn,
    Agent,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Class::SignIn => "sign_in",
            Class::Agent => "agent",
        }
    }

    /// Which limit a request falls under, if any.
    pub fn of(path: &str) -> Option<Class> {
        const SIGN_IN: &[&str] = &[
            "/sfn/login",
            "/sfn/verify_mfa",
            "/sfn/set_password",
            "/sfn/change_password",
            // Three password hashes a call: the REST twin of the console's change.
            "/api/v1/me/password",
            // Codes checked (each a database write and an audit event when wrong).
            "/sfn/step_up",
            "/sfn/confirm_totp_enrolment",
            "/api/v1/me/mfa/totp/confirm",
        ];
        if path.starts_with("/api/v1/auth/") || SIGN_IN.contains(&path) {
            Some(Class::SignIn)
        } else if path.starts_with("/agent/v1/") {
            Some(Class::Agent)
        } else {
            None
        }
    }
}

/// Audit live tails one person may have open at once, and all people together (per replica).
pub const AUDIT_TAILS_PER_PERSON: usize = 5;
pub const AUDIT_TAILS_IN_ALL: usize = 200;
/// Audit exports a person runs at once, and all people together: each reads the whole
/// matching log (a free-text filter scans it) page by page while its reader takes it in.
pub const AUDIT_EXPORTS_PER_PERSON: usize = 2;
pub const AUDIT_EXPORTS_IN_ALL: usize = 20;

/// The buckets of every source, per class.
pub struct RateLimits {
    sign_in: Option<DefaultKeyedRateLimiter<IpAddr>>,
    agent: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Vec<ipnet::IpNet>,
    config: RateLimitConfig,
    shared: Option<Shared>,
    /// Audit live tails open at once (each re-reads the log on every audit write).
    pub audit_tails: Arc<Concurrent>,
    /// Audit exports running ([`AUDIT_EXPORTS_PER_PERSON`], [`AUDIT_EXPORTS_IN_ALL`]).
    pub audit_exports: Arc<Concurrent>,
}

/// Long-lived things held at once, per holder and in all: taken with [`Concurrent::acquire`],
/// given back when the guard drops.
pub struct Concurrent {
    per_holder: usize,
    total: usize,
    held: std::sync::Mutex<(usize, std::collections::HashMap<String, usize>)>,
}

/// One held slot of a [`Concurrent`].
pub struct ConcurrentGuard {
    of: Arc<Concurrent>,
    holder: String,
}

impl Concurrent {
    pub fn new(per_holder: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_holder,
            total,
            held: std::sync::Mutex::new((0, Default::default())),
        })
    }

    /// A slot for `holder`, or `None` when they (or everyone together) hold the most allowed.
    pub fn acquire(self: &Arc<Self>, holder: &str) -> Option<ConcurrentGuard> {
        self.acquire_if(holder, |_| true)
    }

    /// A slot for `holder` if, besides the limits, `admit` accepts the number they hold now:
    /// the count and the taking are one step under one lock.
    pub fn acquire_if(
        self: &Arc<Self>,
        holder: &str,
        admit: impl FnOnce(usize) -> bool,
    ) -> Option<ConcurrentGuard> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.1.get(holder).copied().unwrap_or(0);
        if mine >= self.per_holder || held.0 >= self.total || !admit(mine) {
            return None;
        }
        held.0 += 1;
        held.1.insert(holder.to_owned(), mine + 1);
        Some(ConcurrentGuard {
            of: self.clone(),
            holder: holder.to_owned(),
        })
    }
}

impl Drop for ConcurrentGuard {
    fn drop(&mut self) {
        let mut held = self.of.held.lock().unwrap_or_else(|p| p.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.holder) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.holder);
            }
        }
    }
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Past the limit: wait this long.
    Wait(std::time::Duration),
    /// The shared buckets could not be read: refused rather than let through.
    Unavailable,
}

/// Buckets shared by the replicas, in PostgreSQL (`rate_limit_buckets`).
pub struct Shared {
    db: sea_orm::DatabaseConnection,
}

/// The database's clock, in milliseconds (one clock for every replica).
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";

impl Shared {
    pub fn new(db: sea_orm::DatabaseConnection) -> Self {
        Self { db }
    }

    /// One request from `source` in `class` at `per_minute`: GCRA with a burst of
    /// `per_minute`, in one statement (the row is only moved when the request is admitted).
    pub async fn check(
        &self,
        class: Class,
        source: IpAddr,
        per_minute: u32,
    ) -> Result<(), Refusal> {
        use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
        let key = format!("{}:{source}", class.label());
        let interval = (60_000 / i64::from(per_minute.max(1))).max(1);
        let window = interval * i64::from(per_minute.max(1));
        let admit = Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "INSERT INTO rate_limit_buckets AS b (key, tat) VALUES ($1, {DB_NOW_MS} + $2) \
                 ON CONFLICT (key) DO UPDATE SET tat = GREATEST(b.tat, {DB_NOW_MS}) + $2 \
                 WHERE GREATEST(b.tat, {DB_NOW_MS}) + $2 - {DB_NOW_MS} <= $3 \
                 RETURNING tat"
            ),
            [key.clone().into(), interval.into(), window.into()],
        );
        match self.db.query_one_raw(admit).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "the shared rate limit could not be read");
                return Err(Refusal::Unavailable);
            }
        }
        // Refused: how long until one more fits.
        let wait = Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "SELECT GREATEST(tat, {DB_NOW_MS}) + $2 - {DB_NOW_MS} - $3 AS wait \
                 FROM rate_limit_buckets WHERE key = $1"
            ),
            [key.into(), interval.into(), window.into()],
        );
        let ms = match self.db.query_one_raw(wait).await {
            Ok(Some(row)) => row.try_get::<i64>("", "wait").unwrap_or(interval),
            _ => interval,
        };
        Err(Refusal::Wait(std::time::Duration::from_millis(
            ms.clamp(1, 3_600_000) as u64,
        )))
    }

    /// Forget full buckets (their time has passed). Returns how many rows went.
    pub async fn sweep(&self) -> Result<u64, sea_orm::DbErr> {
        use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
        Ok(self
            .db
            .execute_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!("DELETE FROM rate_limit_buckets WHERE tat < {DB_NOW_MS}"),
            ))
            .await?
            .rows_affected())
    }
}

/// Forget idle sources once this many are tracked (a spoofed-address flood cannot grow
/// memory without bound).
const MAX_TRACKED: usize = 10_000;

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            sign_in: limiter(config.sign_in_per_minute),
            agent: limiter(config.agent_per_minute),
            trusted_proxies: config.trusted_proxies.clone(),
            config: config.clone(),
            shared: None,
            audit_tails: Concurrent::new(AUDIT_TAILS_PER_PERSON, AUDIT_TAILS_IN_ALL),
            audit_exports: Concurrent::new(AUDIT_EXPORTS_PER_PERSON, AUDIT_EXPORTS_IN_ALL),
        }
    }

    /// Share the buckets with the other replicas through PostgreSQL.
    pub fn shared(mut self, shared: Shared) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The buckets shared with the other replicas, if any.
    pub fn shared_buckets(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// The client's address: the peer, or behind trusted proxies the last untrusted hop.
    pub fn source(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else {
            return peer;
        };
        chain
            .rsplit(',')
            .map(str::trim)
            .filter_map(|hop| hop.parse::<IpAddr>().ok())
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }

    /// `Ok` to go on, or why not: this replica's bucket first, then (on PostgreSQL) the one
    /// shared by every replica.
    pub async fn check(&self, class: Class, source: IpAddr) -> Result<(), Refusal> {
        self.check_local(class, source).map_err(Refusal::Wait)?;
        let per_minute = match class {
            Class::SignIn => self.config.sign_in_per_minute,
            Class::Agent => self.config.agent_per_minute,
        };
        match &self.shared {
            Some(shared) if per_minute > 0 => shared.check(class, source, per_minute).await,
            _ => Ok(()),
        }
    }

    /// `Ok` to go on, or how long to wait, by this replica's bucket.
    pub fn check_local(&self, class: Class, source: IpAddr) -> Result<(), std::time::Duration> {
        let limiter = match class {
            Class::SignIn => &self.sign_in,
            Class::Agent => &self.agent,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED {
            limiter.retain_recent();
        }
        limiter
            .check_key(&source)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Every `X-Forwarded-For` line, in order, as one list: a proxy may add a line of its own
/// rather than extend the client's, and the hop it adds is then on the last line, not the
/// first. A line that is not text makes the whole list unbelievable (`None`: the peer counts).
pub fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<String> {
    let mut lines = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        lines.push(v.to_str().ok()?);
    }
    (!lines.is_empty()).then(|| lines.join(","))
}

/// Middleware: name the client's address for every request (behind a trusted proxy, the one
/// it forwards: every audit event records it), and apply the limit of the request's class.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = forwarded_for(req.headers());
    let source = state.rate_limits.source(peer, forwarded.as_deref());
    req.extensions_mut()
        .insert(warden_domain::audit::ClientIp(source));
    let Some(class) = Class::of(req.uri().path()) else {
        return next.run(req).await;
    };
    // Counted by network: an IPv6 host holds its whole /64.
    let network = warden_domain::identity::login::network_of(source);
    match state.rate_limits.check(class, network).await {
        Ok(()) => next.run(req).await,
        Err(Refusal::Unavailable) => {
            state.metrics.rate_limited(class.label());
            let mut res = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                "Warden cannot check its rate limits right now; try again shortly",
            )
            .into_response();
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(5u64));
            res
        }
        Err(Refusal::Wait(wait)) => {
            state.metrics.rate_limited(class.label());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut res = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from your address; try again in {secs} s"),
            )
            .into_response();
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(secs.max(1)),
            );
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(Class::of("/api/v1/auth/login"), Some(Class::SignIn));
        // Single sign-on's start and callback are sign-in doors too.
        assert_eq!(
            Class::of("/api/v1/auth/oidc/corp/callback"),
            Some(Class::SignIn)
        );
        assert_eq!(Class::of("/sfn/login"), Some(Class::SignIn));
        assert_eq!(Class::of("/api/v1/me/password"), Some(Class::SignIn));
        // Second-factor codes, whichever door they come through.
        for p in [
            "/sfn/step_up",
            "/sfn/confirm_totp_enrolment",
            "/api/v1/me/mfa/totp/confirm",
            "/api/v1/auth/step-up",
        ] {
            assert_eq!(Class::of(p), Some(Class::SignIn), "{p}");
        }
        assert_eq!(Class::of("/agent/v1/connect"), Some(Class::Agent));
        assert_eq!(Class::of("/api/v1/projects"), None);
        assert_eq!(Class::of("/sfn/me"), None);
    }

    #[test]
    fn a_burst_is_cut_and_sources_are_separate() {
        let l = RateLimits::new(&RateLimitConfig {
            sign_in_per_minute: 3,
            ..Default::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check_local(Class::SignIn, a).is_ok());
        }
        let wait = l.check_local(Class::SignIn, a).unwrap_err();
        assert!(wait.as_secs() <= 20, "{wait:?}");
        assert!(l.check_local(Class::SignIn, b).is_ok());
        // Agents are limited separately (default 120).
        assert!(l.check_local(Class::Agent, a).is_ok());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let l = RateLimits::new(&RateLimitConfig {
            trusted_proxies: vec![proxy.into()],
            ..Default::default()
        });
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // A client cannot choose its bucket by sending the header itself.
        let direct: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(l.source(Some(direct), Some("203.0.113.7")), direct);
        // Through the proxy: the last hop the proxy saw, not what the client wrote first.
        assert_eq!(l.source(Some(proxy), Some("1.2.3.4, 203.0.113.7")), client);
        assert_eq!(l.source(Some(proxy), None), proxy);
        // A range: every ingress pod of the pod network is believed, and the hops they add.
        let l = RateLimits::new(&RateLimitConfig {
            trusted_proxies: vec!["10.42.0.0/16".parse().unwrap()],
            ..Default::default()
        });
        let pod: IpAddr = "10.42.7.3".parse().unwrap();
        assert_eq!(l.source(Some(pod), Some("203.0.113.7, 10.42.1.1")), client);
        let outside: IpAddr = "10.43.0.1".parse().unwrap();
        assert_eq!(l.source(Some(outside), Some("203.0.113.7")), outside);
    }

    /// A proxy that adds its own header line (HAProxy's `option forwardfor`) rather than
    /// extending the client's: the client's line comes first and is not what counts.
    #[test]
    fn every_forwarded_for_line_is_read_in_order() {
        use axum::http::{HeaderMap, HeaderValue};
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let l = RateLimits::new(&RateLimitConfig {
            trusted_proxies: vec![proxy.into()],
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.77"));
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        let joined = forwarded_for(&h);
        assert_eq!(
            l.source(Some(proxy), joined.as_deref()),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(forwarded_for(&HeaderMap::new()), None);
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff203.0.113.8").unwrap(),
        );
        assert_eq!(forwarded_for(&h), None);
        assert_eq!(l.source(Some(proxy), forwarded_for(&h).as_deref()), proxy);
    }
}
