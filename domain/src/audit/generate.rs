//! `warden audit generate`: fill the audit log with realistic events, to measure it at scale
//! (the `audit` benchmark) or to try the audit page on a busy log.
//!
//! The events are spread over the last `days` days, oldest first, and appended to the chain
//! exactly as the sink appends them (each row's `prev_hash` is the previous row's hash; the
//! head record moves with every transaction), so `warden audit verify` passes afterwards.
//! Speed comes from writing many rows per statement (multi-row `INSERT`) and many statements
//! per transaction, the hashes being computed in memory. The content is deterministic for a
//! given seed (the event ids too), apart from the times, which end at `now`.

use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait};

use super::{
    append, insert_rows, last_row, lock_chain, row_hash, set_head, Actor, AuditEvent, AuditKind,
    Outcome, SessionType,
};
use crate::clock::Timestamp;
use crate::entities::{audit_events, clusters, users};
use crate::error::{DomainError, DomainResult};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub events: u64,
    /// The events span this many days, ending now.
    pub days: u32,
    pub seed: u64,
    /// Rows per transaction.
    pub per_transaction: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            events: 10_000,
            days: 90,
            seed: 0x5741_5244_454e,
            per_transaction: 20_000,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub events: u64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// SplitMix64: small, fast, deterministic; these events need no better randomness.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// One of `items`, each with its weight.
    fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u32 = items.iter().map(|i| i.1).sum();
        let mut r = self.below(u64::from(total)) as u32;
        for (item, w) in items {
            if r < *w {
                return item;
            }
            r -= w;
        }
        &items[items.len() - 1].0
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// 16 bytes from two draws.
    fn bytes(&mut self) -> [u8; 16] {
        (u128::from(self.next()) << 64 | u128::from(self.next())).to_be_bytes()
    }
    pub(crate) fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.bytes())
            .into_uuid()
            .to_string()
    }
    /// An event's id as Warden makes it (UUIDv7, `ids::AuditEventId`): `at`'s milliseconds,
    /// then random bits.
    pub(crate) fn uuid_at(&mut self, at: i64) -> String {
        let mut rest = [0u8; 10];
        rest.copy_from_slice(&self.bytes()[..10]);
        uuid::Builder::from_unix_timestamp_millis(at.max(0) as u64, &rest)
            .into_uuid()
            .to_string()
    }
}

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf", "zoe",
    "amir", "bea", "chen", "dmitri", "elena", "fatima", "goran", "hana", "ines",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "müller", "rossi", "dubois", "tanaka", "kim", "novak", "silva",
    "nguyen", "khan", "larsen", "petrov", "okafor", "cohen", "lopez", "weber", "sato", "brown",
];
const CLUSTERS: &[&str] = &[
    "prod-eu-1",
    "prod-eu-2",
    "prod-us-1",
    "prod-us-2",
    "prod-ap-1",
    "staging-eu",
    "staging-us",
    "dev",
    "ci",
    "edge-paris",
    "edge-tokyo",
    "data-lake",
];
/// Projects and their namespaces.
const PROJECTS: &[(&str, &[&str])] = &[
    ("payments", &["payments", "payments-batch", "ledger"]),
    ("checkout", &["checkout", "cart"]),
    ("search", &["search", "search-indexer", "suggest"]),
    ("identity", &["auth", "sessions", "scim"]),
    (
        "platform",
        &["ingress", "cert-manager", "monitoring", "logging"],
    ),
    ("data", &["etl", "warehouse", "kafka"]),
    ("mobile", &["mobile-api", "push"]),
    ("ml", &["training", "inference", "feature-store"]),
    ("growth", &["experiments", "email"]),
    ("apple", &["apple", "apple-jobs"]),
    ("banana", &["banana"]),
    ("support", &["helpdesk", "chatbot"]),
];
const RESOURCES: &[(&str, u32)] = &[
    ("pods", 40),
    ("deployments", 15),
    ("services", 8),
    ("configmaps", 8),
    ("secrets", 4),
    ("jobs", 4),
    ("events", 6),
    ("ingresses", 3),
    ("statefulsets", 3),
    ("pods/log", 9),
];
const VERBS: &[(&str, u32)] = &[
    ("get", 38),
    ("list", 25),
    ("watch", 10),
    ("create", 4),
    ("update", 3),
    ("patch", 5),
    ("delete", 3),
    ("exec", 6),
    ("attach", 1),
    ("portforward", 2),
];
const APPS: &[&str] = &[
    "api",
    "web",
    "worker",
    "db",
    "cache",
    "gateway",
    "scheduler",
    "indexer",
    "consumer",
    "proxy",
];
const CONSOLE_ACTIONS: &[(&str, &str, &str)] = &[
    ("project.create", "project", "POST"),
    ("project.update", "project", "PATCH"),
    ("binding.create", "binding", "POST"),
    ("binding.delete", "binding", "DELETE"),
    ("kubeconfig.issue", "kubeconfig", "POST"),
    ("kubeconfig.revoke", "kubeconfig", "DELETE"),
    ("user.invite", "user", "POST"),
    ("role.update", "role", "PATCH"),
    ("api_key.create", "api_key", "POST"),
    ("access_request.approved", "access_request", "POST"),
    ("settings.update", "settings", "PATCH"),
];
const AGENT_ACTIONS: &[&str] = &[
    "agent.connect",
    "agent.disconnect",
    "agent.heartbeat_missed",
    "agent.key_rotated",
];
const USER_AGENTS: &[&str] = &[
    "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
    "kubectl/v1.30.4 (darwin/arm64) kubernetes/a51b3b7",
    "k9s/0.32.5",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Gecko/20100101 Firefox/133.0",
    "helm/v3.16.2",
    "argocd-application-controller/v2.13.0",
];
const DENY_REASONS: &[&str] = &[
    "no binding grants this verb on this resource in this namespace",
    "the binding expired",
    "the kubeconfig was revoked",
    "secrets are not readable with the viewer role",
    "exec into pods needs the operator role",
    "the cluster is not part of any of your projects",
    "multi-factor authentication is required for this action",
];

struct People {
    users: Vec<(String, String)>,
}

impl People {
    fn new(rng: &mut Rng, n: usize) -> Self {
        let users = (0..n)
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i / FIRST.len()) % LAST.len()];
                let suffix = i / (FIRST.len() * LAST.len());
                let name = if suffix == 0 {
                    format!("{first}.{last}@example.com")
                } else {
                    format!("{first}.{last}{suffix}@example.com")
                };
                (rng.uuid(), name)
            })
            .collect();
        Self { users }
    }
}

fn ip(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=5 => format!(
            "10.{}.{}.{}",
            rng.below(4),
            rng.below(64),
            1 + rng.below(250)
        ),
        6..=7 => format!("192.168.{}.{}", rng.below(8), 1 + rng.below(250)),
        8 => format!("203.0.113.{}", 1 + rng.below(250)),
        _ => format!("2001:db8::{:x}", rng.below(4096)),
    }
}

/// One event at `at`, chained to `prev_hash`.
fn event(rng: &mut Rng, people: &People, at: i64, prev_hash: String) -> audit_events::Model {
    let user = rng.pick(&people.users).clone();
    let (project, namespaces) = *rng.pick(PROJECTS);
    let cluster = *rng.pick(CLUSTERS);
    let namespace = *rng.pick(namespaces);
    let source_ip = ip(rng);
    let user_agent = *rng.pick(USER_AGENTS);
    let id = rng.uuid_at(at);
    let kind = *rng.weighted(&[
        (AuditKind::KubeApi, 72),
        (AuditKind::Console, 9),
        (AuditKind::SignIn, 8),
        (AuditKind::Terminal, 5),
        (AuditKind::Agent, 4),
        (AuditKind::System, 2),
    ]);
    let mut m = audit_events::Model {
        seq: 0,
        id: id.clone(),
        at,
        kind: kind.as_str().to_owned(),
        actor_id: Some(user.0.clone()),
        actor_name: user.1.clone(),
        session_type: SessionType::Browser.as_str().to_owned(),
        project: Some(project.to_owned()),
        cluster: Some(cluster.to_owned()),
        namespace: None,
        action: String::new(),
        resource_kind: None,
        resource_name: None,
        outcome: Outcome::Allowed.as_str().to_owned(),
        reason: None,
        http_method: None,
        path: None,
        status: None,
        source_ip: Some(source_ip),
        user_agent: Some(user_agent.to_owned()),
        request_id: None,
        duration_ms: Some(1 + rng.below(400) as i64),
        details: "{}".to_owned(),
        prev_hash,
        hash: String::new(),
    };
    let denied = |rng: &mut Rng, pct: u64| rng.chance(pct);
    match kind {
        AuditKind::KubeApi => {
            let verb = *rng.weighted(VERBS);
            let app = *rng.pick(APPS);
            let pod = format!("{app}-{:x}-{:05x}", rng.below(0xffff), rng.below(0xfffff));
            let (resource, name) = match verb {
                "exec" | "attach" | "portforward" => (format!("pods/{verb}"), Some(pod)),
                "list" | "watch" => (rng.weighted(RESOURCES).to_string(), None),
                _ => {
                    let r = rng.weighted(RESOURCES).to_string();
                    let name = if r.starts_with("pods") {
                        pod
                    } else {
                        app.to_owned()
                    };
                    (r, Some(name))
                }
            };
            let (action, method) = match verb {
                "exec" | "attach" | "portforward" => ("kube.create".to_owned(), "POST"),
                "get" | "list" | "watch" => (format!("kube.{verb}"), "GET"),
                "create" => ("kube.create".to_owned(), "POST"),
                "update" => ("kube.update".to_owned(), "PUT"),
                "patch" => ("kube.patch".to_owned(), "PATCH"),
                _ => ("kube.delete".to_owned(), "DELETE"),
            };
            let (base, sub) = match resource.split_once('/') {
                Some((b, s)) => (b.to_owned(), Some(s.to_owned())),
                None => (resource.clone(), None),
            };
            let group = match base.as_str() {
                "deployments" | "statefulsets" => "/apis/apps/v1",
                "jobs" => "/apis/batch/v1",
                "ingresses" => "/apis/networking.k8s.io/v1",
                _ => "/api/v1",
            };
            let mut path = format!("/clusters/{cluster}{group}/namespaces/{namespace}/{base}");
            if let Some(n) = &name {
                path.push('/');
                path.push_str(n);
            }
            if let Some(s) = &sub {
                path.push('/');
                path.push_str(s);
            }
            if verb == "watch" {
                path.push_str("?watch=true");
            }
            let refused = denied(rng, if verb == "exec" { 25 } else { 6 });
            m.session_type = if rng.chance(8) {
                SessionType::WebShell
            } else {
                SessionType::Cli
            }
            .as_str()
            .to_owned();
            m.actor_id = None;
            m.actor_name = format!("certificate CN={}", user.0);
            if !refused || rng.chance(50) {
                // Most requests carry a credential of a known user.
                m.actor_id = Some(user.0.clone());
                m.actor_name = user.1.clone();
            }
            m.namespace = Some(namespace.to_owned());
            m.action = action;
            m.resource_kind = Some(resource);
            m.resource_name = name;
            m.http_method = Some(method.to_owned());
            m.path = Some(path);
            m.request_id = Some(id.clone());
            m.status = Some(if refused {
                403
            } else {
                *rng.weighted(&[(200, 90), (201, 3), (404, 4), (409, 1), (500, 1), (101, 1)])
            });
            if refused {
                m.outcome = Outcome::Denied.as_str().to_owned();
                m.reason = Some(rng.pick(DENY_REASONS).to_string());
            } else if m.status == Some(500) {
                m.outcome = Outcome::Error.as_str().to_owned();
                m.reason = Some("the cluster's API server answered 500".into());
            }
            m.details = serde_json::json!({
                "verb": verb,
                "resource": base,
                "subresource": sub,
                "serial": format!("{:016x}", rng.next()),
            })
            .to_string();
        }
        AuditKind::Console => {
            let (action, resource, method) = *rng.pick(CONSOLE_ACTIONS);
            m.action = action.to_owned();
            m.resource_kind = Some(resource.to_owned());
            m.resource_name = Some(format!("{project}-{}", rng.below(40)));
            m.http_method = Some(method.to_owned());
            m.path = Some(format!("/api/v1/{resource}s"));
            m.request_id = Some(rng.uuid());
            if denied(rng, 7) {
                m.outcome = Outcome::Denied.as_str().to_owned();
                m.status = Some(403);
                m.reason = Some(format!(
                    "{action} needs a permission {} does not hold in project {project}",
                    user.1
                ));
            } else {
                m.status = Some(if method == "POST" { 201 } else { 200 });
            }
            m.session_type = if rng.chance(20) {
                SessionType::Api
            } else {
                SessionType::Browser
            }
            .as_str()
            .to_owned();
            m.cluster = None;
        }
        AuditKind::SignIn => {
            m.project = None;
            m.cluster = None;
            m.http_method = Some("POST".into());
            m.path = Some("/api/v1/auth/login".into());
            if denied(rng, 18) {
                m.action = "auth.login".into();
                m.outcome = Outcome::Denied.as_str().to_owned();
                m.status = Some(401);
                m.reason = Some(
                    (*rng.pick(&[
                        "wrong password",
                        "unknown email",
                        "the account is locked after repeated failures",
                        "the one-time code is wrong",
                    ]))
                    .to_owned(),
                );
                if rng.chance(40) {
                    m.actor_id = None;
                    m.actor_name = format!(
                        "{}@{}",
                        rng.pick(FIRST),
                        rng.pick(&["example.com", "example.org", "mail.test"])
                    );
                }
            } else {
                m.action = (*rng.pick(&["auth.login", "auth.login", "auth.oidc", "auth.logout"]))
                    .to_owned();
                m.status = Some(200);
            }
        }
        AuditKind::Terminal => {
            let terminal = rng.uuid();
            let pod = format!("{}-{:05x}", rng.pick(APPS), rng.below(0xfffff));
            m.session_type = SessionType::WebShell.as_str().to_owned();
            m.namespace = Some(namespace.to_owned());
            m.resource_kind = Some("pods/exec".into());
            m.resource_name = Some(pod);
            m.action = (*rng.pick(&["terminal.open", "terminal.close", "terminal.resize_limit"]))
                .to_owned();
            if denied(rng, 12) {
                m.outcome = Outcome::Denied.as_str().to_owned();
                m.reason = Some(rng.pick(DENY_REASONS).to_string());
            }
            m.details = serde_json::json!({
                "terminal_id": terminal,
                "recording": format!("rec-{:012x}", rng.next() & 0xffff_ffff_ffff),
                "container": "main",
            })
            .to_string();
        }
        AuditKind::Agent => {
            m.actor_id = None;
            m.actor_name = format!("agent:{cluster}");
            m.session_type = SessionType::Agent.as_str().to_owned();
            m.project = None;
            m.action = (*rng.pick(AGENT_ACTIONS)).to_owned();
            m.user_agent = Some("warden-agent/0.1.0".into());
            if m.action == "agent.heartbeat_missed" {
                m.outcome = Outcome::Error.as_str().to_owned();
                m.reason = Some(format!("no heartbeat from {cluster} for 30 s"));
            } else if denied(rng, 3) {
                m.outcome = Outcome::Denied.as_str().to_owned();
                m.reason = Some("the agent's key is not the cluster's registered key".into());
            }
        }
        _ => {
            m.actor_id = None;
            m.actor_name = "system".into();
            m.session_type = SessionType::System.as_str().to_owned();
            m.project = None;
            m.cluster = None;
            m.source_ip = None;
            m.user_agent = None;
            m.action = (*rng.pick(&["session.expired", "binding.expired", "webhook.delivered"]))
                .to_owned();
        }
    }
    m.hash = row_hash(&m);
    m
}

/// Generated events are backdated and look like real ones: in a log that records what real
/// people did they would be forged history. The command refuses an organization in use (more
/// people than the bootstrap administrator, or any cluster) unless `force`.
pub async fn refuse_organization_in_use<C: ConnectionTrait>(
    db: &C,
    force: bool,
) -> DomainResult<()> {
    if force {
        return Ok(());
    }
    let people = users::Entity::find().count(db).await?;
    let clusters = clusters::Entity::find().count(db).await?;
    if people > 1 || clusters > 0 {
        return Err(DomainError::conflict(
            "audit_log",
            format!(
                "this organization is in use ({people} users, {clusters} clusters): generated events would sit among real ones in its audit log; generate into a database made for measuring (pass --force to do it anyway)"
            ),
        ));
    }
    Ok(())
}

/// Record, at the head of the chain, that the rows `done.first_seq..=done.last_seq` were
/// generated (by `by`, e.g. the command on its host): whoever reads the log later can tell
/// them from real events.
pub async fn record_run(
    db: &DatabaseConnection,
    done: &Generated,
    now: Timestamp,
    by: &str,
) -> DomainResult<()> {
    let event = AuditEvent::new(
        AuditKind::System,
        Actor::System,
        SessionType::System,
        "audit.generated",
        Outcome::Allowed,
    )
    .resource("audit_log", "events")
    .reason(format!(
        "{} synthetic events (seq {} to {}) were generated by {by}; they are not what anyone did",
        done.events, done.first_seq, done.last_seq
    ))
    .details(serde_json::json!({
        "generated": done.events,
        "first_seq": done.first_seq,
        "last_seq": done.last_seq,
        "by": by,
    }));
    let tx = super::begin_change(db).await?;
    append(&tx, now, vec![event]).await?;
    tx.commit().await?;
    Ok(())
}

/// Append `opts.events` generated events to the chain, the newest at `now`. `progress` is
/// told the number written after each transaction.
pub async fn generate(
    db: &DatabaseConnection,
    opts: &GenerateOptions,
    now: Timestamp,
    mut progress: impl FnMut(u64),
) -> DomainResult<Generated> {
    let mut rng = Rng(opts.seed);
    let people = People::new(&mut rng, 600);
    let span = i64::from(opts.days.max(1)) * 86_400_000;
    let start = now.millis() - span;
    let n = opts.events;
    let step = (span as f64) / (n.max(1) as f64);
    let per_tx = opts.per_transaction.max(1) as u64;
    let mut written = 0u64;
    let mut first_seq = None;
    let mut last_seq = 0;
    while written < n {
        let count = per_tx.min(n - written);
        let tx = db.begin().await?;
        lock_chain(&tx).await?;
        let (_, mut prev) = last_row(&tx).await?;
        let mut rows = Vec::with_capacity(count as usize);
        for i in written..written + count {
            // Evenly spread, jittered within the slot: times never go backwards.
            let jitter = (rng.below(1_000_000) as f64 / 1_000_000.0) * step;
            let at = start + (i as f64 * step + jitter) as i64;
            let m = event(&mut rng, &people, at.min(now.millis()), prev);
            prev = m.hash.clone();
            rows.push(m);
        }
        let last_hash = prev;
        // The rows' seqs: the chain is locked, so the newest row is the last one written.
        let seq = insert_rows(&tx, rows).await?;
        first_seq.get_or_insert(seq - count as i64 + 1);
        last_seq = seq;
        set_head(&tx, seq, last_hash).await?;
        tx.commit().await?;
        written += count;
        progress(written);
    }
    // The rollup counts the new events (as the background catch-up would).
    while super::rollup::catch_up(db, 200_000).await? > 0 {}
    // Fresh statistics for the planner after a bulk load (PostgreSQL; SQLite's planner reads
    // `sqlite_stat1`, which ANALYZE writes too).
    let analyze = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => "ANALYZE audit_events",
        _ => "ANALYZE",
    };
    db.execute_unprepared(analyze).await?;
    Ok(Generated {
        events: written,
        first_seq: first_seq.unwrap_or(0),
        last_seq,
    })
}

#[cfg(test)]
mod tests {
    /// Generated events carry ids like Warden's own (UUIDv7 at the event's time).
    #[test]
    fn generated_event_ids_start_with_their_time() {
        let mut rng = super::Rng(7);
        let at = 1_764_000_000_123_i64;
        let id = uuid::Uuid::parse_str(&rng.uuid_at(at)).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64 * 1000 + i64::from(nanos / 1_000_000), at);
        assert!(rng.uuid_at(at) < rng.uuid_at(at + 1));
    }
}
