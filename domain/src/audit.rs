//! The audit log: typed rows written through one [`AuditSink`], chained by hashes so that an
//! edited or deleted row is detected by [`verify_chain`] (`warden audit verify`).

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::clock::{SharedClock, Timestamp};
use crate::entities::{audit_events, audit_head};
use crate::error::DomainResult;
use crate::ids::{AuditEventId, UserId};

pub mod export;
pub mod generate;
pub mod journal;
pub mod retention;
pub mod rollup;
pub mod seals;
pub mod siem;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use crate::dto::{AuditKind, Outcome, SessionType};

/// Who did it.
#[derive(Debug, Clone)]
pub enum Actor {
    User {
        id: UserId,
        name: String,
    },
    /// Someone not (yet) identified, e.g. a failed sign-in: the name they gave.
    Anonymous {
        claimed: String,
    },
    System,
    Agent {
        cluster: String,
    },
}

/// The client's address as Warden resolved it (through `WARDEN_TRUSTED_PROXIES`' forwarding
/// header when the peer is a trusted proxy), set as a request extension by the rate limiter
/// on the routes it limits (sign-in among them): what [`RequestMeta::source_ip`] records, and
/// what sign-in throttling counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

/// Where the request came from, for events caused by an HTTP request.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub method: Option<String>,
    pub path: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// One audit event, as data. Build it with [`AuditEvent::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub kind: AuditKind,
    pub actor: Actor,
    pub session_type: SessionType,
    pub action: String,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub project: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub resource_kind: Option<String>,
    pub resource_name: Option<String>,
    pub status: Option<i32>,
    pub duration_ms: Option<i64>,
    pub request: RequestMeta,
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(
        kind: AuditKind,
        actor: Actor,
        session_type: SessionType,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            id: AuditEventId::new(),
            kind,
            actor,
            session_type,
            action: action.into(),
            outcome,
            reason: None,
            project: None,
            cluster: None,
            namespace: None,
            resource_kind: None,
            resource_name: None,
            status: None,
            duration_ms: None,
            request: RequestMeta::default(),
            details: serde_json::Value::Object(Default::default()),
        }
    }
    /// An event of what a signed-in person did: who they are, through what session, and the
    /// request it came with.
    pub fn by(
        who: &crate::access::Principal,
        kind: AuditKind,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self::new(kind, who.actor(), who.session_type, action, outcome).request(who.request.clone())
    }
    /// [`Self::by`] a person, or, without one, Warden itself (the operator's command line).
    pub fn by_or_system(
        who: Option<&crate::access::Principal>,
        kind: AuditKind,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        match who {
            Some(p) => Self::by(p, kind, action, outcome),
            None => Self::new(kind, Actor::System, SessionType::System, action, outcome),
        }
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn resource(mut self, kind: &str, name: impl Into<String>) -> Self {
        self.resource_kind = Some(kind.to_owned());
        self.resource_name = Some(name.into());
        self
    }
    pub fn project(mut self, p: impl Into<String>) -> Self {
        self.project = Some(p.into());
        self
    }
    pub fn request(mut self, meta: RequestMeta) -> Self {
        self.request = meta;
        self
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status as i32);
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Everything that writes to the audit log goes through this.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync {
    async fn record(&self, event: AuditEvent) -> DomainResult<()>;

    /// Record several events, in order. Sinks that can write them at once override this.
    async fn record_many(&self, events: Vec<AuditEvent>) -> DomainResult<()> {
        for e in events {
            self.record(e).await?;
        }
        Ok(())
    }

    /// Wait until every event recorded so far is stored (a no-op for synchronous sinks).
    async fn flush(&self) {}
}

pub type SharedAuditSink = Arc<dyn AuditSink>;

/// The hashed content of a row: every column but `seq` and `hash`, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    id: &'a str,
    at: i64,
    kind: &'a str,
    actor_id: Option<&'a str>,
    actor_name: &'a str,
    session_type: &'a str,
    project: Option<&'a str>,
    cluster: Option<&'a str>,
    namespace: Option<&'a str>,
    action: &'a str,
    resource_kind: Option<&'a str>,
    resource_name: Option<&'a str>,
    outcome: &'a str,
    reason: Option<&'a str>,
    http_method: Option<&'a str>,
    path: Option<&'a str>,
    status: Option<i32>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    duration_ms: Option<i64>,
    details: &'a str,
    prev_hash: &'a str,
}

impl<'a> From<&'a audit_events::Model> for Hashed<'a> {
    fn from(m: &'a audit_events::Model) -> Self {
        Hashed {
            id: &m.id,
            at: m.at,
            kind: &m.kind,
            actor_id: m.actor_id.as_deref(),
            actor_name: &m.actor_name,
            session_type: &m.session_type,
            project: m.project.as_deref(),
            cluster: m.cluster.as_deref(),
            namespace: m.namespace.as_deref(),
            action: &m.action,
            resource_kind: m.resource_kind.as_deref(),
            resource_name: m.resource_name.as_deref(),
            outcome: &m.outcome,
            reason: m.reason.as_deref(),
            http_method: m.http_method.as_deref(),
            path: m.path.as_deref(),
            status: m.status,
            source_ip: m.source_ip.as_deref(),
            user_agent: m.user_agent.as_deref(),
            request_id: m.request_id.as_deref(),
            duration_ms: m.duration_ms,
            details: &m.details,
            prev_hash: &m.prev_hash,
        }
    }
}

/// A row's hash: SHA-256 of its content and the previous row's hash (unkeyed; the seals make
/// the chain unforgeable, see [`seals`]).
pub fn row_hash(m: &audit_events::Model) -> String {
    let h = Hashed::from(m);
    let bytes = serde_json::to_vec(&h).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// The database audit sink: each call is one transaction through [`append`].
pub struct DbAuditSink {
    db: DatabaseConnection,
    clock: SharedClock,
}

impl DbAuditSink {
    pub fn new(db: DatabaseConnection, clock: SharedClock) -> Self {
        Self { db, clock }
    }
}

/// A key for PostgreSQL's transaction-scoped advisory lock that guards the chain's head.
const CHAIN_LOCK_KEY: i64 = 0x5741_5244_454e_4155; // "WARDENAU"

/// Lock the chain's head for the rest of the transaction `tx`: whoever appends next (this
/// process, another replica, the `warden admin` CLI) waits until this transaction ends, so two
/// writers can never chain to the same row. PostgreSQL: an advisory lock released at commit or
/// rollback. SQLite: a write to the head table takes the database's single write lock now
/// (rather than at the first insert, after the head was read).
async fn lock_chain<C: ConnectionTrait>(tx: &C) -> DomainResult<()> {
    use sea_orm::DbBackend;
    let sql = match tx.get_database_backend() {
        DbBackend::Postgres => format!("SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})"),
        DbBackend::Sqlite => "UPDATE audit_head SET seq = seq WHERE id = 1".to_owned(),
        // Warden runs on PostgreSQL and SQLite only (`startup` refuses any other URL).
        other => {
            return Err(crate::DomainError::Internal(format!(
                "the audit chain cannot be locked on {other:?}"
            )))
        }
    };
    tx.execute_unprepared(&sql).await?;
    Ok(())
}

/// Begin a transaction for a change that will be audited with [`append`]: the chain is locked
/// first, so on SQLite the transaction holds the write lock from its first statement (a
/// deferred transaction that reads first fails when another writer commits before its first
/// write), and on PostgreSQL the change and its audit row take their place in the chain
/// together.
pub async fn begin_change(db: &DatabaseConnection) -> DomainResult<ChangeTx> {
    let tx = db.begin().await?;
    lock_chain(&tx).await?;
    Ok(ChangeTx(tx))
}

/// Commits that stored audit events in this process: a counter bumped after each, which the
/// live tails wait on (`GET /api/v1/audit/tail` reads the log when it moves, not on a timer).
/// Process-wide because audited changes commit in plain functions that hold only a
/// connection; a tail of another database in the same process (tests) just reads once more.
static COMMITTED: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(0));

/// Wait on this to learn that audit events were committed (see [`COMMITTED`]).
pub fn committed() -> tokio::sync::watch::Receiver<u64> {
    COMMITTED.subscribe()
}

/// Tell the followers of the log that audit events were committed. Every path that commits
/// audit rows calls it after its commit: [`DbAuditSink`] (and so the gateway's batching
/// writer), [`ChangeTx::commit`] (changes audited with [`append`], retention, the replay of
/// the audit journal).
pub fn notify_committed() {
    COMMITTED.send_modify(|n| *n = n.wrapping_add(1));
}

/// The transaction of an audited change ([`begin_change`]): a `DatabaseTransaction` whose
/// [`commit`](ChangeTx::commit) also tells the log's followers ([`notify_committed`]).
pub struct ChangeTx(sea_orm::DatabaseTransaction);

impl ChangeTx {
    pub async fn commit(self) -> Result<(), sea_orm::DbErr> {
        self.0.commit().await?;
        notify_committed();
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sea_orm::DbErr> {
        self.0.rollback().await
    }
}

impl std::ops::Deref for ChangeTx {
    type Target = sea_orm::DatabaseTransaction;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for ChangeTx {
    fn get_database_backend(&self) -> sea_orm::DbBackend {
        self.0.get_database_backend()
    }
    async fn execute_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        self.0.execute_raw(stmt).await
    }
    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        self.0.execute_unprepared(sql).await
    }
    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, sea_orm::DbErr> {
        self.0.query_one_raw(stmt).await
    }
    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr> {
        self.0.query_all_raw(stmt).await
    }
}

/// The chain's newest row: its `seq` (0 for an empty log) and hash.
pub(crate) async fn last_row<C: ConnectionTrait>(db: &C) -> DomainResult<(i64, String)> {
    let last: Option<(i64, String)> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .column(audit_events::Column::Hash)
        .order_by_desc(audit_events::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(last.unwrap_or_else(|| (0, GENESIS_HASH.to_owned())))
}

/// Append `events`, in order, to the chain inside the transaction `tx`: the head is locked
/// and read inside it, each row chains to the one before, the head record is updated once.
/// A change and its audit event written through the same `tx` are stored together or not
/// at all.
pub async fn append<C: ConnectionTrait>(
    tx: &C,
    at: Timestamp,
    events: Vec<AuditEvent>,
) -> DomainResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    lock_chain(tx).await?;
    let (_, mut prev) = last_row(tx).await?;
    let n = events.len();
    let mut models = Vec::with_capacity(n);
    for event in events {
        let model = to_model(event, at, prev);
        prev = model.hash.clone();
        models.push(model);
    }
    if n == 1 {
        // One row (most changes): inserted with its `seq` returned.
        let mut active: audit_events::ActiveModel = models.remove(0).into();
        active.seq = sea_orm::ActiveValue::NotSet;
        let row = active.insert(tx).await?;
        return set_head(tx, row.seq, row.hash).await;
    }
    // A batch (the gateway's writer): all rows at once, in order, so `seq` follows the chain.
    // (The rollup counts them later: `rollup::catch_up`.)
    let seq = insert_rows(tx, models).await?;
    set_head(tx, seq, prev).await
}

/// The columns of a stored row (all but `seq`), in the table's order.
const ROW_COLUMNS: &str = "id, at, kind, actor_id, actor_name, session_type, project, cluster, \
     namespace, action, resource_kind, resource_name, outcome, reason, http_method, path, \
     status, source_ip, user_agent, request_id, duration_ms, details, prev_hash, hash";

/// A row as one object of the JSON array that PostgreSQL's `json_to_recordset` reads
/// ([`insert_rows`]); `n`: its place in the batch.
#[derive(Serialize)]
struct JsonRow<'a> {
    n: usize,
    #[serde(flatten)]
    content: Hashed<'a>,
    hash: &'a str,
}

/// Insert chained rows (their hashes computed already), in order, inside the transaction that
/// locked the chain; answers the `seq` of the last one.
///
/// PostgreSQL: one statement whatever the batch's size, its rows sent as one JSON array
/// parameter and unpacked by `json_to_recordset`, sorted by their place in the batch so that
/// `seq` follows the chain. One parameter instead of 24 a row: nothing for the client to bind
/// row by row and a statement PostgreSQL parses and plans once, the server's time going to
/// the rows and their indexes. Other databases: multi-row `INSERT`s of powers of two rows
/// ([`insert_chunk`]).
pub(crate) async fn insert_rows<C: ConnectionTrait>(
    tx: &C,
    models: Vec<audit_events::Model>,
) -> DomainResult<i64> {
    if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
        let rows: Vec<JsonRow<'_>> = models
            .iter()
            .enumerate()
            .map(|(n, m)| JsonRow {
                n,
                content: Hashed::from(m),
                hash: &m.hash,
            })
            .collect();
        let json = serde_json::to_string(&rows)
            .map_err(|e| crate::DomainError::Internal(format!("encoding audit rows: {e}")))?;
        let sql = format!(
            "WITH ins AS (INSERT INTO audit_events ({ROW_COLUMNS}) \
             SELECT {ROW_COLUMNS} FROM json_to_recordset($1::text::json) AS r(n int, id text, \
             at bigint, kind text, actor_id text, actor_name text, session_type text, \
             project text, cluster text, namespace text, action text, resource_kind text, \
             resource_name text, outcome text, reason text, http_method text, path text, \
             status int, source_ip text, user_agent text, request_id text, duration_ms bigint, \
             details text, prev_hash text, hash text) ORDER BY n RETURNING seq) \
             SELECT MAX(seq) AS seq, COUNT(*) AS rows FROM ins"
        );
        let row = tx
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                [json.into()],
            ))
            .await?
            .ok_or_else(|| crate::DomainError::Internal("appended audit rows vanished".into()))?;
        let inserted: i64 = row.try_get("", "rows")?;
        if inserted != models.len() as i64 {
            return Err(crate::DomainError::Internal(format!(
                "{} audit rows to append, {inserted} inserted",
                models.len()
            )));
        }
        return Ok(row.try_get("", "seq")?);
    }
    // The rows move into the statements: a batch's text is not copied again.
    let mut left = models.len();
    let mut rows = models.into_iter();
    while left > 0 {
        let chunk = insert_chunk(left);
        left -= chunk;
        let statement = audit_events::Entity::insert_many(rows.by_ref().take(chunk).map(|m| {
            let mut a: audit_events::ActiveModel = m.into();
            a.seq = sea_orm::ActiveValue::NotSet;
            a
        }));
        statement.exec_without_returning(tx).await?;
    }
    // The chain is locked: the newest row is the last one inserted.
    let seq: i64 = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .order_by_desc(audit_events::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(tx)
        .await?
        .ok_or_else(|| crate::DomainError::Internal("appended audit rows vanished".into()))?;
    Ok(seq)
}

/// The most rows in one multi-row `INSERT`: within SQLite's limit of 32,766 bound parameters,
/// at 24 columns a row.
pub(crate) const ROWS_PER_INSERT: usize = 512;

/// How many of `left` rows the next multi-row `INSERT` takes: the largest power of two that
/// fits (at most [`ROWS_PER_INSERT`]). A statement's text depends on its number of rows, and
/// the connection keeps each prepared statement it ran (each one of hundreds of rows is a
/// large program): with batches of any size those are as many statements to compile and keep
/// (measured: 75 MiB more resident memory once batches of hundreds came), with powers of two
/// ten at most, each compiled once.
fn insert_chunk(left: usize) -> usize {
    if left >= ROWS_PER_INSERT {
        ROWS_PER_INSERT
    } else {
        1 << left.max(1).ilog2()
    }
}

/// Record the chain's newest row in the head (same transaction as the rows).
async fn set_head<C: ConnectionTrait>(tx: &C, seq: i64, hash: String) -> DomainResult<()> {
    audit_head::Entity::insert(audit_head::ActiveModel::from(audit_head::Model {
        id: 1,
        seq,
        hash,
    }))
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(audit_head::Column::Id)
            .update_columns([audit_head::Column::Seq, audit_head::Column::Hash])
            .to_owned(),
    )
    .exec(tx)
    .await?;
    Ok(())
}

/// Bounds of a stored event's fields. Much of an event comes from outside (headers, paths,
/// names typed at sign-in, an agent's self-description): each field is cut to a length no
/// honest request needs, so no request, refused or not, can store megabytes in the log.
pub mod bounds {
    /// Names: Kubernetes names and namespaces (253), emails (254), projects, clusters.
    pub const NAME: usize = 256;
    pub const ACTION: usize = 128;
    pub const REASON: usize = 2048;
    pub const PATH: usize = 2048;
    pub const SOURCE_IP: usize = 64;
    pub const REQUEST_ID: usize = 128;
    pub const USER_AGENT: usize = 512;
    /// The details' JSON; past it, a preview is kept with the size it had.
    pub const DETAILS: usize = 64 * 1024;
    pub const DETAILS_PREVIEW: usize = 4 * 1024;
}

/// `s` cut to `max` characters, marked with `…` when cut.
fn bounded(s: String, max: usize) -> String {
    if s.len() <= max || s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn bounded_opt(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| bounded(s, max))
}

fn bounded_details(details: &serde_json::Value) -> String {
    let text = details.to_string();
    if text.len() <= bounds::DETAILS {
        return text;
    }
    let mut cut = bounds::DETAILS_PREVIEW;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": text.len(),
        "preview": &text[..cut],
    })
    .to_string()
}

fn to_model(e: AuditEvent, at: Timestamp, prev_hash: String) -> audit_events::Model {
    let (actor_id, actor_name) = match e.actor {
        Actor::User { id, name } => (Some(id.to_string()), bounded(name, bounds::NAME)),
        Actor::Anonymous { claimed } => (None, truncate(&printable(&claimed, false), 254)),
        Actor::System => (None, "system".to_owned()),
        Actor::Agent { cluster } => (None, bounded(format!("agent:{cluster}"), bounds::NAME)),
    };
    let mut m = audit_events::Model {
        seq: 0,
        id: e.id.to_string(),
        at: at.millis(),
        kind: e.kind.as_str().to_owned(),
        actor_id,
        actor_name,
        session_type: e.session_type.as_str().to_owned(),
        project: bounded_opt(e.project, bounds::NAME),
        cluster: bounded_opt(e.cluster, bounds::NAME),
        namespace: bounded_opt(e.namespace, bounds::NAME),
        action: bounded(e.action, bounds::ACTION),
        resource_kind: bounded_opt(e.resource_kind, bounds::NAME),
        resource_name: bounded_opt(e.resource_name, bounds::NAME),
        outcome: e.outcome.as_str().to_owned(),
        reason: bounded_opt(e.reason, bounds::REASON),
        http_method: bounded_opt(e.request.method, 16),
        path: bounded_opt(e.request.path, bounds::PATH),
        status: e.status,
        source_ip: bounded_opt(e.request.source_ip, bounds::SOURCE_IP),
        user_agent: bounded_opt(e.request.user_agent, bounds::USER_AGENT),
        request_id: bounded_opt(e.request.request_id, bounds::REQUEST_ID),
        duration_ms: e.duration_ms,
        details: bounded_details(&e.details),
        prev_hash,
        hash: String::new(),
    };
    m.hash = row_hash(&m);
    m
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `s` with control characters (terminal escapes, carriage returns, line breaks unless
/// `keep_newlines`) written out as `\u{1b}`: text from outside (a name typed at sign-in)
/// shows as what it is wherever the event is read, never as a terminal command.
pub fn printable(s: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[async_trait::async_trait]
impl AuditSink for DbAuditSink {
    async fn record(&self, event: AuditEvent) -> DomainResult<()> {
        self.record_many(vec![event]).await
    }

    /// One transaction for the whole batch.
    async fn record_many(&self, events: Vec<AuditEvent>) -> DomainResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let write = async {
            let tx = self.db.begin().await?;
            append(&tx, self.clock.now(), events).await?;
            tx.commit().await?;
            notify_committed();
            Ok::<_, crate::DomainError>(())
        };
        write.await.inspect_err(|e| {
            tracing::error!(error = %e, "audit write failed");
        })
    }
}

/// An [`AuditSink`] for hot paths (the Kubernetes API gateway): `record` only queues the
/// event; one writer task stores queued events in batches (one transaction each) through the
/// inner sink. Nothing is ever dropped: a full queue makes `record` wait (back-pressure), and a
/// failed write is retried, in order, until it succeeds. Without a linger, each event is
/// written at once when idle and batches grow up to `max_batch` under load; with one (see
/// [`BatchingAuditSink::spawn_with`] and [`Linger`]) a batch also waits for company.
pub struct BatchingAuditSink {
    tx: tokio::sync::mpsc::Sender<BatchMsg>,
    /// Events handed to `record` that wait for room in the full queue.
    waiting: std::sync::atomic::AtomicUsize,
    stats: Arc<WriterStats>,
}

/// What the writer of a [`BatchingAuditSink`] did (`warden_audit_write_seconds`,
/// `warden_audit_written_events_total`).
#[derive(Default)]
pub struct WriterStats {
    /// Each batch's transaction that stored it (a failed attempt is not counted).
    pub writes: crate::latency::LatencyHistogram,
    /// Events stored.
    pub events: std::sync::atomic::AtomicU64,
}

/// How long a batch of a [`BatchingAuditSink`] waits for company before it is written.
///
/// A batch waits one `step`; while events keep arriving (at least `busy` of them in the step
/// just over) it waits another, up to `max` in all or until it is full. A quiet log is thus
/// written a `step` after its event; a busy one in batches that grow with the load, each a
/// transaction that rewrites the same index pages once for all its events (SQLite, 20,000
/// events into a 200,000-event log with every search index: CPU 4.0 to 4.7 s in transactions
/// of 50, 2.9 to 3.5 s of 250, 1.9 to 2.2 s of 1,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    pub step: std::time::Duration,
    pub busy: usize,
    pub max: std::time::Duration,
}

impl Linger {
    /// No waiting: a batch is what the queue holds when the writer is free.
    pub const NONE: Linger = Linger {
        step: std::time::Duration::ZERO,
        busy: usize::MAX,
        max: std::time::Duration::ZERO,
    };

    /// One fixed wait, however busy the log.
    pub fn fixed(wait: std::time::Duration) -> Self {
        Linger {
            step: wait,
            busy: usize::MAX,
            max: wait,
        }
    }

    /// After a step that brought `arrived` events, `waited` in all: wait another step?
    fn extend(&self, arrived: usize, waited: std::time::Duration) -> bool {
        arrived >= self.busy && waited + self.step <= self.max
    }
}

enum BatchMsg {
    Event(Box<AuditEvent>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl BatchingAuditSink {
    /// Start the writer task. `capacity`: events queued before `record` waits.
    pub fn spawn(inner: SharedAuditSink, capacity: usize, max_batch: usize) -> Arc<Self> {
        Self::spawn_with(inner, capacity, max_batch, None, Linger::NONE)
    }

    /// [`BatchingAuditSink::spawn`], telling `journal` which events are stored once their
    /// transaction committed (so it can let go of them), and with a [`Linger`]: how long a
    /// batch that is not full waits for more events before it is written (a flush does not
    /// wait).
    ///
    /// A linger is for a writer whose events are already durable elsewhere (the gateway's
    /// journal holds each one before its answer leaves): it then costs no request any time,
    /// and turns the one- or two-event transactions of a moderate load (each rewriting the
    /// same index pages) into batches of dozens, and those of a heavy load into hundreds.
    pub fn spawn_with(
        inner: SharedAuditSink,
        capacity: usize,
        max_batch: usize,
        journal: Option<Arc<journal::AuditJournal>>,
        linger: Linger,
    ) -> Arc<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BatchMsg>(capacity.max(1));
        let max_batch = max_batch.max(1);
        let stats = Arc::new(WriterStats::default());
        let writer_stats = stats.clone();
        tokio::spawn(async move {
            let mut batch: Vec<AuditEvent> = Vec::new();
            let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
            while let Some(first) = rx.recv().await {
                let started = tokio::time::Instant::now();
                let mut deadline = started + linger.step;
                // Events in the batch when the current step began.
                let mut step_began_with = 0;
                let mut next = Some(first);
                loop {
                    while let Some(msg) = next.take() {
                        match msg {
                            BatchMsg::Event(e) => batch.push(*e),
                            BatchMsg::Flush(done) => waiting.push(done),
                        }
                        if batch.len() < max_batch {
                            next = rx.try_recv().ok();
                        }
                    }
                    if batch.len() >= max_batch || !waiting.is_empty() || linger.step.is_zero() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(msg)) => next = Some(msg),
                        // The step is over: another while events keep coming, up to the
                        // linger's bound.
                        Err(_)
                            if linger.extend(batch.len() - step_began_with, deadline - started) =>
                        {
                            step_began_with = batch.len();
                            deadline += linger.step;
                        }
                        // Closed (shutting down) or the linger is over: write what there is.
                        Ok(None) | Err(_) => break,
                    }
                }
                let mut backoff = std::time::Duration::from_millis(50);
                while !batch.is_empty() {
                    let started = std::time::Instant::now();
                    match inner.record_many(batch.clone()).await {
                        Ok(()) => {
                            writer_stats.writes.observe(started.elapsed());
                            writer_stats.events.fetch_add(
                                batch.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            if let Some(j) = &journal {
                                j.stored(batch.iter().map(|e| &e.id));
                            }
                            batch.clear()
                        }
                        Err(e) => {
                            tracing::error!(error = %e, events = batch.len(), "audit batch write failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                        }
                    }
                }
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        Arc::new(Self {
            tx,
            waiting: Default::default(),
            stats,
        })
    }

    /// What the writer did so far.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }
}

impl BatchingAuditSink {
    /// Events not yet stored: those in the queue and those waiting for room in it (the
    /// `warden_audit_queue_depth` metric).
    pub fn depth(&self) -> usize {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        queued + self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queue an event without waiting; hands it back when the queue is full (the caller then
    /// awaits [`AuditSink::record`], which waits for room).
    pub fn try_record(&self, event: AuditEvent) -> Result<(), AuditEvent> {
        use tokio::sync::mpsc::error::TrySendError;
        match self.tx.try_send(BatchMsg::Event(Box::new(event))) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(BatchMsg::Event(e)) | TrySendError::Closed(BatchMsg::Event(e)),
            ) => Err(*e),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for BatchingAuditSink {
    async fn record(&self, event: AuditEvent) -> DomainResult<()> {
        use std::sync::atomic::Ordering;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let sent = self.tx.send(BatchMsg::Event(Box::new(event))).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        sent.map_err(|_| crate::DomainError::Internal("the audit writer stopped".into()))
    }

    async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(BatchMsg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainStatus {
    Intact {
        rows: u64,
    },
    /// The first row that does not match: its `seq` and why.
    Broken {
        seq: i64,
        id: String,
        problem: String,
    },
}

/// Walk every row in order, recomputing hashes (a log without retention checkpoints; see
/// [`verify_chain_with`]).
pub async fn verify_chain(db: &DatabaseConnection) -> DomainResult<ChainStatus> {
    verify_chain_with(db, None).await
}

/// Walk every row in order, recomputing hashes, in one read snapshot. Where retention deleted
/// the oldest rows, the chain starts from the newest checkpoint: each checkpoint's MAC must be
/// `key`'s, the first retained row must continue from it, and older rows that are still (or
/// again) present must chain exactly to it.
pub async fn verify_chain_with(
    db: &DatabaseConnection,
    key: Option<&retention::CheckpointKey>,
) -> DomainResult<ChainStatus> {
    verify_chain_witnessed(db, key, None).await
}

/// [`verify_chain_with`], also against the seal kept outside the database
/// ([`seals::WITNESS_FILE`]): its row must be in the log with the sealed hash (or gone with
/// retention), which deleting every seal and computing the chain again does not keep.
pub async fn verify_chain_witnessed(
    db: &DatabaseConnection,
    key: Option<&retention::CheckpointKey>,
    witness: Option<&crate::entities::audit_seals::Model>,
) -> DomainResult<ChainStatus> {
    let tx = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            db.begin_with_config(
                Some(sea_orm::IsolationLevel::RepeatableRead),
                Some(sea_orm::AccessMode::ReadOnly),
            )
            .await?
        }
        _ => db.begin().await?,
    };
    let status = walk_chain(&tx, key, witness).await;
    tx.rollback().await?;
    status
}

async fn walk_chain<C: ConnectionTrait>(
    db: &C,
    key: Option<&retention::CheckpointKey>,
    witness: Option<&crate::entities::audit_seals::Model>,
) -> DomainResult<ChainStatus> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let checkpoints = retention::checkpoints(db).await?;
    if !checkpoints.is_empty() {
        let Some(key) = key else {
            return Err(crate::DomainError::Internal(
                "the audit log has retention checkpoints: verifying it needs the key that signed them (WARDEN_MASTER_KEY, or audit-checkpoint.key in WARDEN_DATA_DIR)".into(),
            ));
        };
        if let Some(c) = checkpoints.iter().find(|c| !key.verifies(c)) {
            return Ok(ChainStatus::Broken {
                seq: c.seq,
                id: String::new(),
                problem:
                    "a retention checkpoint is forged or altered (its signature does not match)"
                        .into(),
            });
        }
    }
    // The seals of rows after the newest checkpoint (older ones went with retention): each
    // sealed row must be there, with the sealed hash.
    let newest_checkpoint = checkpoints.last().map_or(i64::MIN, |c| c.seq);
    let mut sealed = std::collections::BTreeMap::new();
    for s in seals::seals(db).await? {
        if s.seq <= newest_checkpoint {
            continue;
        }
        if key.is_some_and(|k| !k.verifies_seal(&s)) {
            return Ok(ChainStatus::Broken {
                seq: s.seq,
                id: String::new(),
                problem: "an audit seal is forged or altered (its signature does not match)".into(),
            });
        }
        sealed.insert(s.seq, s.hash);
    }
    // (Without the key there is nothing to check it with, as for the seals.)
    if let (Some(w), Some(k)) = (witness.filter(|w| w.seq > newest_checkpoint), key) {
        if !k.verifies_seal(w) {
            return Ok(ChainStatus::Broken {
                seq: w.seq,
                id: String::new(),
                problem:
                    "the audit seal witness is forged or altered, or was made with another key"
                        .into(),
            });
        }
        sealed.entry(w.seq).or_insert_with(|| w.hash.clone());
    }
    let mut next_checkpoint = 0usize;
    let mut prev = GENESIS_HASH.to_owned();
    let mut rows = 0u64;
    let mut after = i64::MIN;
    let mut last: Option<i64> = None;
    loop {
        let page = audit_events::Entity::find()
            .filter(audit_events::Column::Seq.gt(after))
            .order_by_asc(audit_events::Column::Seq)
            .limit(1000)
            .all(db)
            .await?;
        if page.is_empty() {
            if let Some(&seq) = sealed.keys().next() {
                return Ok(ChainStatus::Broken {
                    seq,
                    id: String::new(),
                    problem:
                        "a sealed row is missing (rows were deleted and the chain computed again)"
                            .into(),
                });
            }
            // A checkpoint at or beyond the newest row: only the row it names may be there.
            for c in &checkpoints[next_checkpoint..] {
                if last != Some(c.seq) || prev != c.hash {
                    return Ok(ChainStatus::Broken {
                        seq: c.seq,
                        id: String::new(),
                        problem: "a retention checkpoint names rows that are not in the log (rows were deleted from the end)".into(),
                    });
                }
            }
            let head = audit_head::Entity::find_by_id(1).one(db).await?;
            return Ok(match head {
                None if rows == 0 => ChainStatus::Intact { rows },
                Some(h) if h.seq == after && h.hash == prev => ChainStatus::Intact { rows },
                Some(h) => ChainStatus::Broken {
                    seq: h.seq,
                    id: String::new(),
                    problem: format!(
                        "the newest row is missing: the log ends at seq {after} but its head records seq {} (rows were deleted from the end)",
                        h.seq
                    ),
                },
                None => ChainStatus::Broken { seq: after, id: String::new(), problem: "the audit head record was deleted".into() },
            });
        }
        for m in page {
            after = m.seq;
            // The checkpoints between the previous row and this one.
            let mut jumped = false;
            while let Some(c) = checkpoints.get(next_checkpoint).filter(|c| c.seq < m.seq) {
                next_checkpoint += 1;
                match last {
                    // The chain starts here: continue from the (newest) checkpoint.
                    None => {
                        prev = c.hash.clone();
                        jumped = true;
                    }
                    Some(l) if l == c.seq && prev == c.hash => {}
                    Some(l) => {
                        return Ok(ChainStatus::Broken {
                            seq: l,
                            id: String::new(),
                            problem: format!(
                                "rows older than the retention checkpoint at seq {} are present but do not end at it (deleted rows reappeared altered, or rows after them were deleted)",
                                c.seq
                            ),
                        })
                    }
                }
            }
            if m.prev_hash != prev {
                return Ok(ChainStatus::Broken {
                    seq: m.seq,
                    id: m.id.clone(),
                    problem: if jumped {
                        "the first retained row does not continue from the retention checkpoint (rows after it were deleted or changed)".into()
                    } else {
                        "the previous row was deleted or changed (prev_hash does not match)".into()
                    },
                });
            }
            if row_hash(&m) != m.hash {
                return Ok(ChainStatus::Broken {
                    seq: m.seq,
                    id: m.id.clone(),
                    problem: "the row's content was changed (hash does not match)".into(),
                });
            }
            if sealed.remove(&m.seq).is_some_and(|h| h != m.hash) {
                return Ok(ChainStatus::Broken {
                    seq: m.seq,
                    id: m.id.clone(),
                    problem: "the chain was computed again after a change: this row's hash is not the one sealed for it".into(),
                });
            }
            prev = m.hash;
            last = Some(m.seq);
            rows += 1;
        }
    }
}

/// An event as `scope`'s reader sees it ([`AuditScope::redact_details`]).
fn to_dto_in(scope: &AuditScope) -> impl Fn(audit_events::Model) -> crate::dto::AuditEventDto + '_ {
    move |m| {
        let mut dto = to_dto(m);
        scope.redact_details(&mut dto.details);
        dto
    }
}

fn to_dto(m: audit_events::Model) -> crate::dto::AuditEventDto {
    crate::dto::AuditEventDto {
        seq: m.seq,
        id: m.id,
        time: Timestamp(m.at).rfc3339(),
        kind: AuditKind::from_stored(&m.kind),
        actor_id: m.actor_id,
        actor: m.actor_name,
        session_type: SessionType::from_stored(&m.session_type),
        project: m.project,
        cluster: m.cluster,
        namespace: m.namespace,
        action: m.action,
        resource_kind: m.resource_kind,
        resource_name: m.resource_name,
        outcome: Outcome::from_stored(&m.outcome),
        reason: m.reason,
        method: m.http_method,
        path: m.path,
        status: m.status,
        source_ip: m.source_ip,
        user_agent: m.user_agent,
        request_id: m.request_id,
        duration_ms: m.duration_ms,
        details: serde_json::from_str(&m.details).unwrap_or(serde_json::Value::Null),
        replayable: None,
    }
}

/// An RFC 3339 time, or a browser's `datetime-local` value (`2026-11-28T10:00`, seconds
/// optional), read as UTC.
fn parse_time(field: &str, v: &str) -> DomainResult<i64> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let v = v.trim();
    let local = match v.len() {
        16 => Some(format!("{v}:00Z")),
        19 => Some(format!("{v}Z")),
        _ => None,
    };
    time::OffsetDateTime::parse(v, rfc3339)
        .or_else(|e| match &local {
            Some(l) => time::OffsetDateTime::parse(l, rfc3339),
            None => Err(e),
        })
        .map(|t| Timestamp::from_offset(t).millis())
        .map_err(|_| {
            crate::DomainError::invalid(
                field,
                "must be a time like 2026-11-28T10:00:00Z (or 2026-11-28T10:00, read as UTC)",
            )
        })
}

/// The length of a preset time range, in ms.
fn range_ms(v: &str) -> DomainResult<i64> {
    Ok(match v {
        "15m" => 15 * 60_000,
        "1h" => 3_600_000,
        "24h" => 24 * 3_600_000,
        "7d" => 7 * 24 * 3_600_000,
        "30d" => 30 * 24 * 3_600_000,
        _ => {
            return Err(crate::DomainError::invalid(
                "range",
                "must be one of 15m, 1h, 24h, 7d, 30d",
            ))
        }
    })
}

/// Search the audit log as of now (see [`search_at`]).
pub async fn search(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    projects: Option<&[String]>,
) -> DomainResult<crate::dto::Page<crate::dto::AuditEventDto>> {
    let now = Timestamp::from_offset(time::OffsetDateTime::now_utc());
    search_at(db, q, projects, now).await
}

/// Search the audit log, newest first, with keyset pagination on `seq`; a preset `range` ends
/// at `now`. `projects`: when `Some`, only events of these projects are visible
/// (project-scoped readers).
pub async fn search_at(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    projects: Option<&[String]>,
    now: Timestamp,
) -> DomainResult<crate::dto::Page<crate::dto::AuditEventDto>> {
    search_in(db, q, &AuditScope::projects(projects), now).await
}

/// Which events a reader may see: all of them, or those of some projects and/or their own
/// activity (every user may read what they did; their refusals stay with auditors). Built by
/// `access::audit_view`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditScope {
    pub all: bool,
    /// Projects whose events are visible (`audit.read` on them).
    pub projects: Vec<String>,
    /// Among `projects`, those whose name the log held before the project bearing it now was
    /// made (a deleted project of the same name): from when each present one began (ms). Their
    /// readers see only the present project's events: the log names projects, and a name
    /// re-used is not an inheritance.
    pub since: std::collections::BTreeMap<String, i64>,
    /// The reader's user id: what they did (allowed events they caused) is visible.
    pub user: Option<String>,
}

impl AuditScope {
    /// Whether this scope shows everything `other` shows (a reader whose scope no longer
    /// covers the one an export or a tail began with has lost something).
    pub fn covers(&self, other: &AuditScope) -> bool {
        self.all
            || (!other.all
                && other.projects.iter().all(|p| {
                    self.projects.contains(p)
                        && self.since.get(p).unwrap_or(&i64::MIN)
                            <= other.since.get(p).unwrap_or(&i64::MIN)
                })
                && (other.user.is_none() || other.user == self.user))
    }

    /// Everything (organization auditors).
    pub fn all() -> Self {
        Self {
            all: true,
            ..Default::default()
        }
    }

    /// `None`: everything; `Some(projects)`: these projects' events.
    pub fn projects(projects: Option<&[String]>) -> Self {
        match projects {
            None => Self::all(),
            Some(p) => Self {
                projects: p.to_vec(),
                ..Default::default()
            },
        }
    }

    /// What of an event's details this reader sees. A cluster's shares name projects: a
    /// reader of some projects sees only those among them, as the cluster's own page shows
    /// them (`clusters::hide_unseen_shares`); the log keeps them all for organization
    /// auditors. Every `shared_with` list in the details (a change's `before` and `after`) is
    /// filtered.
    pub fn redact_details(&self, details: &mut serde_json::Value) {
        fn walk(v: &mut serde_json::Value, keep: &dyn Fn(&str) -> bool, depth: u8) {
            let serde_json::Value::Object(map) = v else {
                return;
            };
            for (k, v) in map.iter_mut() {
                match v {
                    serde_json::Value::Array(list) if k == "shared_with" => {
                        list.retain(|p| p.as_str().is_some_and(keep));
                    }
                    serde_json::Value::Object(_) if depth < 4 => walk(v, keep, depth + 1),
                    _ => {}
                }
            }
        }
        if self.all {
            return;
        }
        walk(details, &|p| self.projects.iter().any(|x| x == p), 0);
    }

    /// Only the reader's own activity (no `audit.read` anywhere).
    pub fn own_only(&self) -> bool {
        !self.all && self.projects.is_empty()
    }

    /// The reader's own activity: the allowed events they caused. Only what they were allowed
    /// to do: a refusal's audited reason is the real one, which the person was answered only as
    /// a generic 403 (and which could tell them what exists where they may not look), so
    /// refusals stay with auditors. `None` without a user.
    pub(crate) fn own_activity(&self) -> Option<sea_orm::sea_query::Condition> {
        use audit_events::Column as C;
        use sea_orm::ColumnTrait;
        let u = self.user.as_ref()?;
        Some(
            sea_orm::sea_query::Condition::all()
                .add(C::ActorId.eq(u.clone()))
                .add(C::Outcome.eq(Outcome::Allowed.as_str())),
        )
    }

    fn condition(&self) -> Option<sea_orm::sea_query::Condition> {
        use audit_events::Column as C;
        use sea_orm::ColumnTrait;
        if self.all {
            return None;
        }
        let mut any = sea_orm::sea_query::Condition::any();
        let whole: Vec<&String> = self
            .projects
            .iter()
            .filter(|p| !self.since.contains_key(*p))
            .collect();
        if !whole.is_empty() {
            any = any.add(C::Project.is_in(whole));
        }
        for (p, since) in &self.since {
            if self.projects.contains(p) {
                any = any.add(
                    sea_orm::sea_query::Condition::all()
                        .add(C::Project.eq(p.clone()))
                        .add(C::At.gte(*since)),
                );
            }
        }
        match self.own_activity() {
            Some(own) => any = any.add(own),
            // Neither projects nor a user: nothing (an empty `any` would be true).
            None if self.projects.is_empty() => any = any.add(C::Seq.lt(i64::MIN)),
            None => {}
        }
        Some(any)
    }
}

/// Of the projects `names`, those whose name the log held before the project now bearing it
/// was made (the events of a deleted project of that name), each with when the present one
/// began: [`AuditScope::since`]. A name no live project bears shows nothing (fail closed).
/// One lookup of the projects and one index step per project (its first event).
pub async fn namesakes(
    db: &DatabaseConnection,
    names: &[String],
) -> DomainResult<std::collections::BTreeMap<String, i64>> {
    use crate::entities::projects;
    use audit_events::Column as C;
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let mut out = std::collections::BTreeMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let live: std::collections::HashMap<String, i64> = projects::Entity::find()
        .filter(projects::Column::Name.is_in(names.to_vec()))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.name, p.created_at))
        .collect();
    for name in names {
        let Some(&created) = live.get(name) else {
            out.insert(name.clone(), i64::MAX);
            continue;
        };
        let first: Option<i64> = audit_events::Entity::find()
            .select_only()
            .column(C::At)
            .filter(C::Project.eq(name.clone()))
            .order_by_asc(C::Seq)
            .limit(1)
            .into_tuple()
            .one(db)
            .await?;
        if first.is_some_and(|at| at < created) {
            out.insert(name.clone(), created);
        }
    }
    Ok(out)
}

/// [`search_at`] within a reader's [`AuditScope`].
pub async fn search_in(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<crate::dto::Page<crate::dto::AuditEventDto>> {
    search_windowed(db, q, scope, now, TEXT_WINDOW).await
}

/// [`search_in`], with a free-text list on PostgreSQL reading the newest `text_window` events
/// of its span first ([`text_edge`]; tests set a small window to cross its edge on a small
/// log). The page is the same whatever the window.
pub async fn search_windowed(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
    text_window: u64,
) -> DomainResult<crate::dto::Page<crate::dto::AuditEventDto>> {
    use audit_events::Column as C;
    use sea_orm::{ColumnTrait, QueryFilter};
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let mut cond = filter(db.get_database_backend(), q, scope, now)?;
    let cursor: Option<i64> = match q.cursor.as_ref().filter(|s| !s.is_empty()) {
        Some(c) => Some(c.parse().map_err(|_| {
            crate::DomainError::invalid("cursor", "is not a cursor this API returned")
        })?),
        None => None,
    };
    let Some(mut span) = seq_bounds(db, q, now).await? else {
        return Ok(crate::dto::Page {
            items: Vec::new(),
            next: None,
        });
    };
    // The events the page may come from: the time range's, before the cursor.
    if let Some(seq) = cursor {
        span = span.add(C::Seq.lt(seq));
    }
    cond = cond.add(span.clone());
    let page = |cond: sea_orm::sea_query::Condition, n: u64| {
        audit_events::Entity::find()
            .filter(cond)
            .order_by_desc(C::Seq)
            .limit(n)
            .all(db)
    };
    let mut rows = match text_edge(db, q, scope, now, span, text_window).await? {
        // Free text on PostgreSQL: the newest events the rest of the filter matches first,
        // each checked against the text (not through its index), then if need be the older.
        Some((edge, rest, text)) => {
            let newest = rest.add(C::Seq.gte(edge)).add(text);
            let mut rows = page(newest, limit + 1).await?;
            let missing = (limit + 1).saturating_sub(rows.len() as u64);
            if missing > 0 {
                rows.extend(page(cond.add(C::Seq.lt(edge)), missing).await?);
            }
            rows
        }
        None => page(cond, limit + 1).await?,
    };
    let next = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(crate::dto::Page {
        items: rows.into_iter().map(to_dto_in(scope)).collect(),
        next,
    })
}

/// How many of the newest events of its span a free-text list on PostgreSQL reads first (see
/// [`text_edge`]).
const TEXT_WINDOW: u64 = 20_000;

/// Where a free-text list on PostgreSQL splits its read: the `text_window`-th ([`TEXT_WINDOW`])
/// newest `seq` of the page's `span` (the time range's events before the cursor), with the rest of the filter (within that span) and the text's
/// condition checked row by row, not through the trigram index; `None` when the filter has no
/// free text, the database is not PostgreSQL, or the span fits in the window.
///
/// Through the trigram index, PostgreSQL finds every row holding the text and then sorts the
/// newest page out of all of them: for a common word over a large log, hundreds of thousands of
/// rows for a page of 50. The list reads instead the page from the span's newest events (at
/// most `text_window` rows, through the primary key, each checked against the whole filter),
/// and only when they hold less than a page, the rest from before the edge through the text
/// index as before. Both reads carry the whole filter, so the page is exactly the one a single
/// read gives; a rare text or a narrow filter costs the bounded first read more than before.
async fn text_edge(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
    span: sea_orm::sea_query::Condition,
    text_window: u64,
) -> DomainResult<
    Option<(
        i64,
        sea_orm::sea_query::Condition,
        sea_orm::sea_query::Condition,
    )>,
> {
    use audit_events::Column as C;
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    let backend = db.get_database_backend();
    let Some(text) = q.q.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if backend != sea_orm::DbBackend::Postgres {
        return Ok(None);
    }
    // The span's newest `text_window` `seq`s (one step of the primary key: `seq` grows by one an
    // event, so the edge is counted back from the newest; where it has gaps the window holds
    // fewer events, and the page is the same).
    let ends: Option<(Option<i64>, Option<i64>)> = audit_events::Entity::find()
        .select_only()
        .column_as(C::Seq.min(), "oldest")
        .column_as(C::Seq.max(), "newest")
        .filter(span.clone())
        .into_tuple()
        .one(db)
        .await?;
    let Some((Some(oldest), Some(newest))) = ends else {
        return Ok(None);
    };
    let edge = newest.saturating_sub(i64::try_from(text_window).unwrap_or(i64::MAX) - 1);
    if edge <= oldest {
        // The span is within the window: one read, as PostgreSQL plans it.
        return Ok(None);
    }
    let rest = crate::dto::AuditQuery {
        q: None,
        ..q.clone()
    };
    let rest = filter(backend, &rest, scope, now)?.add(span);
    Ok(Some((
        edge,
        rest,
        text_condition(backend, text, TextIndex::Unused),
    )))
}

/// The filter's time range as a range of `seq` too ([`rollup::seq_window`]), for a read of
/// the log newest first: `None` when no event lies in the time range.
pub(crate) async fn seq_bounds(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    now: Timestamp,
) -> DomainResult<Option<sea_orm::sea_query::Condition>> {
    use audit_events::Column as C;
    use sea_orm::ColumnTrait;
    let (since, until) = time_bounds(q, now)?;
    let Some((lo, hi)) = rollup::seq_window(db, since, until).await? else {
        return Ok(None);
    };
    let mut cond = sea_orm::sea_query::Condition::all();
    if let Some(lo) = lo {
        cond = cond.add(C::Seq.gte(lo));
    }
    if let Some(hi) = hi {
        cond = cond.add(C::Seq.lte(hi));
    }
    Ok(Some(cond))
}

/// The time bounds a filter sets, in ms (inclusive): a preset `range` ends at `now` (and is
/// ignored beside `since`), `since`/`until` as given.
fn time_bounds(
    q: &crate::dto::AuditQuery,
    now: Timestamp,
) -> DomainResult<(Option<i64>, Option<i64>)> {
    let given = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    let mut since = match given(&q.since) {
        Some(s) => Some(parse_time("since", &s)?),
        None => None,
    };
    if let Some(r) = given(&q.range) {
        let ms = range_ms(&r)?;
        if since.is_none() {
            since = Some(now.millis() - ms);
        }
    }
    let until = match given(&q.until) {
        Some(s) => Some(parse_time("until", &s)?),
        None => None,
    };
    if let (Some(s), Some(u)) = (since, until) {
        if u < s {
            return Err(crate::DomainError::invalid(
                "until",
                "must not be before since",
            ));
        }
    }
    Ok((since, until))
}

/// The `WHERE` of every read of the audit log (the list, the export, facets, histogram, live
/// tail): the filter `q` (without its cursor) within the reader's scope, for the database
/// `backend` (the free text goes through its text index: see [`text_condition`]). Refuses an
/// invalid filter with the field at fault.
pub fn filter(
    backend: sea_orm::DbBackend,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<sea_orm::sea_query::Condition> {
    use audit_events::Column as C;
    use sea_orm::sea_query::Condition;
    use sea_orm::ColumnTrait;
    let mut cond = Condition::all();
    let eq = |cond: Condition, col: C, v: &Option<String>| match v {
        Some(v) if !v.is_empty() => cond.add(col.eq(v.clone())),
        _ => cond,
    };
    if let Some(k) = q.kind.as_ref().filter(|k| !k.is_empty()) {
        if AuditKind::parse(k).is_none() {
            return Err(crate::DomainError::invalid(
                "kind",
                "must be one of console, sign_in, kube_api, terminal, agent, system",
            ));
        }
    }
    if let Some(o) = q.outcome.as_ref().filter(|o| !o.is_empty()) {
        if Outcome::parse(o).is_none() {
            return Err(crate::DomainError::invalid(
                "outcome",
                "must be one of allowed, denied, error",
            ));
        }
    }
    cond = eq(cond, C::Kind, &q.kind);
    cond = eq(cond, C::Outcome, &q.outcome);
    cond = eq(cond, C::Project, &q.project);
    cond = eq(cond, C::Cluster, &q.cluster);
    cond = eq(cond, C::Namespace, &q.namespace);
    if let Some(a) = q.actor.as_ref().filter(|a| !a.is_empty()) {
        cond = cond.add(
            Condition::any()
                .add(C::ActorName.starts_with(a.as_str()))
                .add(C::ActorId.eq(a.clone())),
        );
    }
    if let Some(v) = q.verb.as_ref().filter(|v| !v.is_empty()) {
        cond = cond.add(match v.as_str() {
            // Connections are `create` on a pod subresource.
            "exec" | "attach" | "portforward" => C::ResourceKind.eq(format!("pods/{v}")),
            _ => C::Action.eq(format!("kube.{v}")),
        });
    }
    if let Some(r) = q.resource.as_ref().filter(|r| !r.is_empty()) {
        cond = cond.add(C::ResourceKind.eq(r.clone()));
    }
    if let Some(s) = q.status {
        cond = cond.add(C::Status.eq(s));
    }
    cond = eq(cond, C::SourceIp, &q.source_ip);
    if q.discovery == Some(false) {
        // Kubernetes requests that address no resource: discovery, version, health.
        cond = cond.add(
            Condition::any()
                .add(C::Kind.ne(AuditKind::KubeApi.as_str()))
                .add(C::ResourceKind.is_not_null()),
        );
    }
    let (since, until) = time_bounds(q, now)?;
    if let Some(a) = q.action.as_ref().filter(|a| !a.is_empty()) {
        cond = cond.add(C::Action.starts_with(a.as_str()));
    }
    if let Some(s) = since {
        cond = cond.add(C::At.gte(s));
    }
    if let Some(u) = until {
        cond = cond.add(C::At.lte(u));
    }
    if let Some(text) = q.q.as_ref().filter(|s| !s.is_empty()) {
        cond = cond.add(text_condition(backend, text, TextIndex::Used));
    }
    if let Some(visible) = scope.condition() {
        cond = cond.add(visible);
    }
    Ok(cond)
}

/// Whether a free-text condition may go through the text index (PostgreSQL: the trigram
/// index on `audit_text(..)`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TextIndex {
    /// The index narrows the rows: the usual case.
    Used,
    /// Each row is checked: for rows already narrowed otherwise (a free-text list's newest
    /// events, [`text_edge`]), where reading every match through the index costs more.
    Unused,
}

/// The free-text search: `text` anywhere in the resource name, path, reason or actor name
/// (case-insensitive, `%` and `_` acting as `LIKE` wildcards), or exactly an event's id or
/// request id.
///
/// The exact condition is always there; the text index (migration `m20261205_000001`) only
/// narrows the rows it is checked on, so an indexed search finds exactly what a scan finds.
/// PostgreSQL: `ILIKE` on `audit_text(..)` (the columns joined by line breaks: the expression
/// of the GIN trigram index), and on each column when the text could match across two of them
/// (a wildcard, a line break). SQLite (whose `LIKE` is case-insensitive already): candidates
/// from the FTS5 trigram table `audit_fts` (the rows holding every trigram of a text of 3
/// characters or more, [`fts_trigrams`]; trigram matching folds case like `LIKE` does, and
/// more), plus the rows with that id or request id; shorter texts and texts with a wildcard
/// scan.
fn text_condition(
    backend: sea_orm::DbBackend,
    text: &str,
    index: TextIndex,
) -> sea_orm::sea_query::Condition {
    use audit_events::Column as C;
    use sea_orm::sea_query::{Condition, Expr, SimpleExpr};
    use sea_orm::ColumnTrait;
    let pattern = format!("%{text}%");
    let exact_id = || {
        // An event's id is the `Audit-ID` the gateway sends the cluster: pasting one from the
        // cluster's own audit log finds Warden's side of the request.
        Condition::any()
            .add(C::Id.eq(text.trim()))
            .add(C::RequestId.eq(text.trim()))
    };
    match backend {
        sea_orm::DbBackend::Postgres => {
            use sea_orm::sea_query::extension::postgres::PgExpr;
            let ilike = |col: C| Expr::col(col).ilike(pattern.as_str());
            let columns = Condition::any()
                .add(ilike(C::ResourceName))
                .add(ilike(C::Path))
                .add(ilike(C::Reason))
                .add(ilike(C::ActorName));
            // `|| ''` makes the expression one the index does not cover (same value).
            let joined = match index {
                TextIndex::Used => {
                    "audit_text(\"resource_name\", \"path\", \"reason\", \"actor_name\")"
                }
                TextIndex::Unused => {
                    "(audit_text(\"resource_name\", \"path\", \"reason\", \"actor_name\") || '')"
                }
            };
            let indexed: SimpleExpr = Expr::expr(Expr::cust(joined)).ilike(pattern.as_str());
            // `audit_text` joins the columns with line breaks, so a text without a line break
            // and without `%`, `_` or `\` (LIKE's wildcards and escape) matches the joined
            // text exactly where it matches one of the columns (a match cannot reach across a
            // line break): the joined text's condition alone is exact. Checking the columns
            // as well cost a quarter to a third more (48,696 matches of 2.45 million events:
            // 430 - 520 against 325 - 360 ms) and made PostgreSQL expect a single matching row
            // (227 without them, 8,623 in fact), a poor start for planning the rest.
            let text_match = if text.contains(['\n', '%', '_', '\\']) {
                Condition::all().add(indexed).add(columns)
            } else {
                Condition::all().add(indexed)
            };
            Condition::any().add(text_match).add(exact_id())
        }
        _ => {
            let exact = Condition::any()
                .add(C::ResourceName.like(pattern.as_str()))
                .add(C::Path.like(pattern.as_str()))
                .add(C::Reason.like(pattern.as_str()))
                .add(C::ActorName.like(pattern.as_str()))
                .add(exact_id());
            let indexable = backend == sea_orm::DbBackend::Sqlite
                && text.chars().count() >= 3
                && !text.contains(['%', '_']);
            if !indexable {
                return exact;
            }
            // (SQLite's placeholder: `?`.)
            let candidates = Expr::cust_with_values(
                "\"audit_events\".\"seq\" IN (SELECT rowid FROM audit_fts WHERE audit_fts MATCH ? \
                 UNION ALL SELECT seq FROM audit_events WHERE id = ? \
                 UNION ALL SELECT seq FROM audit_events WHERE request_id = ?)",
                [
                    fts_trigrams(text),
                    text.trim().to_owned(),
                    text.trim().to_owned(),
                ],
            );
            Condition::all().add(candidates).add(exact)
        }
    }
}

/// The FTS5 query of the rows that hold every trigram of `text` (3 characters or more): each
/// trigram a quoted string (a `"` doubled), joined by `AND`, each once, at most
/// [`FTS_TRIGRAMS_MAX`] of them (spread over the text: more only narrow the candidates further,
/// and the exact condition is checked on each). The index stores which trigrams a row holds,
/// not where (`detail='none'`, migration `m20261215_000001_audit_fts_trigrams`), so a row may
/// hold them all without the text; the caller's exact condition removes it.
fn fts_trigrams(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut seen = std::collections::BTreeSet::new();
    let all: Vec<String> = chars
        .windows(3)
        .map(|w| w.iter().collect::<String>())
        .filter(|t| seen.insert(t.to_lowercase()))
        .collect();
    let step = all.len().div_ceil(FTS_TRIGRAMS_MAX).max(1);
    all.iter()
        .step_by(step)
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// At most this many trigrams in one free-text query ([`fts_trigrams`]).
const FTS_TRIGRAMS_MAX: usize = 32;

/// The verb of a Kubernetes request as the `verb` filter names it: `exec`, `attach` and
/// `portforward` for connections to a pod (stored as `create` on the subresource), else the
/// action without `kube.`. SQL that SQLite and PostgreSQL both understand.
const VERB_SQL: &str =
    "CASE WHEN resource_kind IN ('pods/exec', 'pods/attach', 'pods/portforward') \
     THEN substr(resource_kind, 6) ELSE substr(action, 6) END";

/// The facets of a filter: its most frequent actors, kinds, clusters, namespaces, verbs and
/// outcomes, counted by the database (`GROUP BY` over the same `WHERE` and scope as
/// [`search_at`]; the cursor and limit are ignored).
pub async fn facets_at(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<crate::dto::AuditFacets> {
    if let Some(f) = rollup::facets_from_rollup(db, q, scope, now).await? {
        return Ok(f);
    }
    facets_scan(db, q, scope, now).await
}

/// [`facets_at`] counted from the events themselves (no rollup).
pub async fn facets_scan(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<crate::dto::AuditFacets> {
    use audit_events::Column as C;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, SimpleExpr};
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
    let cond = filter(db.get_database_backend(), q, scope, now)?;
    let top = |value: SimpleExpr, only: Option<sea_orm::sea_query::Condition>| {
        let mut c = cond.clone().add(value.clone().is_not_null());
        if let Some(o) = only {
            c = c.add(o);
        }
        audit_events::Entity::find()
            .select_only()
            .column_as(value.clone(), "v")
            .column_as(Expr::col(C::Seq).count(), "n")
            .filter(c)
            .group_by(value)
            .order_by(Expr::col(Alias::new("n")), Order::Desc)
            .order_by(Expr::col(Alias::new("v")), Order::Asc)
            .limit(crate::dto::AuditFacets::TOP)
            .into_tuple::<(String, i64)>()
            .all(db)
    };
    let counts = |rows: Vec<(String, i64)>| {
        rows.into_iter()
            .map(|(value, n)| crate::dto::FacetCount {
                value,
                count: std::cmp::max(n, 0) as u64,
            })
            .collect::<Vec<_>>()
    };
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        return facets_grouping_sets(db, cond).await;
    }
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        return facets_materialized(db, cond).await;
    }
    let kube = C::Kind
        .eq(AuditKind::KubeApi.as_str())
        .and(C::Action.starts_with("kube."));
    // Any other backend: one GROUP BY per facet, run concurrently.
    let (total, actors, kinds, clusters, namespaces, verbs, outcomes) = tokio::try_join!(
        audit_events::Entity::find().filter(cond.clone()).count(db),
        top(Expr::col(C::ActorName), None),
        top(Expr::col(C::Kind), None),
        top(Expr::col(C::Cluster), None),
        top(Expr::col(C::Namespace), None),
        top(
            Expr::cust(VERB_SQL),
            Some(sea_orm::sea_query::Condition::all().add(kube)),
        ),
        top(Expr::col(C::Outcome), None),
    )?;
    Ok(crate::dto::AuditFacets {
        total,
        actors: counts(actors),
        kinds: counts(kinds),
        clusters: counts(clusters),
        namespaces: counts(namespaces),
        verbs: counts(verbs),
        outcomes: counts(outcomes),
    })
}

/// The facet columns of the matching events: what both one-pass implementations group.
fn facet_columns(cond: sea_orm::sea_query::Condition) -> sea_orm::sea_query::SelectStatement {
    use audit_events::Column as C;
    use sea_orm::sea_query::Expr;
    use sea_orm::{QueryFilter, QueryTrait};
    audit_events::Entity::find()
        .select_only()
        .column(C::ActorName)
        .column(C::Kind)
        .column(C::Cluster)
        .column(C::Namespace)
        .column_as(
            // Kubernetes requests only, as the verb filter.
            Expr::cust(format!(
                "CASE WHEN kind = 'kube_api' AND action LIKE 'kube.%' THEN {VERB_SQL} END"
            )),
            "verb",
        )
        .column(C::Outcome)
        .filter(cond)
        .into_query()
}

/// [`facets_at`] on SQLite ([`materialized_counts`]), each facet's top values.
async fn facets_materialized(
    db: &DatabaseConnection,
    cond: sea_orm::sea_query::Condition,
) -> DomainResult<crate::dto::AuditFacets> {
    let (total, lists) = materialized_counts(db, cond, Some(crate::dto::AuditFacets::TOP)).await?;
    Ok(facets_of(total, lists))
}

/// On SQLite, which has no grouping sets: what [`grouping_sets`] answers on PostgreSQL, each
/// facet's values most frequent first (then by value), the first `top` of them or all. The
/// matching rows are read once (a `MATERIALIZED` common table expression: one pass of the
/// filter's index and the table, where one query per facet read them seven times, each with
/// its own choice of index), then each facet and the total are grouped from that temporary
/// table inside SQLite, in one statement.
pub(crate) async fn materialized_counts(
    db: &DatabaseConnection,
    cond: sea_orm::sea_query::Condition,
    top: Option<u64>,
) -> DomainResult<(i64, [Vec<(String, i64)>; 6])> {
    use sea_orm::sea_query::SqliteQueryBuilder;
    let (inner, values) = facet_columns(cond).build(SqliteQueryBuilder);
    let limit = top.map(|t| format!(" LIMIT {t}")).unwrap_or_default();
    let facet = |slot: u8, col: &str| {
        format!(
            "SELECT * FROM (SELECT {slot} AS g, {col} AS v, COUNT(*) AS n FROM m \
             WHERE {col} IS NOT NULL GROUP BY {col} ORDER BY n DESC, v ASC{limit})"
        )
    };
    let sql = format!(
        "WITH m AS MATERIALIZED ({inner}) SELECT 6 AS g, NULL AS v, COUNT(*) AS n FROM m{}",
        [
            "actor_name",
            "kind",
            "cluster",
            "namespace",
            "verb",
            "outcome"
        ]
        .iter()
        .enumerate()
        .map(|(i, col)| format!(" UNION ALL {}", facet(i as u8, col)))
        .collect::<String>()
    );
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            sql,
            values,
        ))
        .await?;
    let mut lists: [Vec<(String, i64)>; 6] = Default::default();
    let mut total = 0;
    for row in rows {
        let g: i64 = row.try_get("", "g")?;
        let n: i64 = row.try_get("", "n")?;
        match (
            usize::try_from(g).ok().and_then(|g| lists.get_mut(g)),
            row.try_get::<Option<String>>("", "v")?,
        ) {
            (Some(list), Some(value)) => list.push((value, n)),
            _ if g == 6 => total = n,
            _ => {}
        }
    }
    Ok((total, lists))
}

/// [`facets_at`] on PostgreSQL: every facet and the total in one pass over the matching rows
/// ([`grouping_sets`]), the top values picked here (most frequent first, then by value).
async fn facets_grouping_sets(
    db: &DatabaseConnection,
    cond: sea_orm::sea_query::Condition,
) -> DomainResult<crate::dto::AuditFacets> {
    let (total, lists) = grouping_sets(db, cond).await?;
    Ok(facets_of(total, lists))
}

/// On PostgreSQL: how many events match `cond`, and per facet (in [`facet_columns`]' order)
/// every value with its count, in one pass over the matching rows (`GROUP BY GROUPING SETS`,
/// hashed: a quarter of the time of one row per event and facet grouped together, measured
/// on twelve hours of a 10-million-event log).
pub(crate) async fn grouping_sets(
    db: &DatabaseConnection,
    cond: sea_orm::sea_query::Condition,
) -> DomainResult<(i64, [Vec<(String, i64)>; 6])> {
    use sea_orm::sea_query::PostgresQueryBuilder;
    let inner = facet_columns(cond);
    let (inner, values) = inner.build(PostgresQueryBuilder);
    let sql = format!(
        "SELECT GROUPING(actor_name, kind, cluster, namespace, verb, outcome)::int AS g, \
         COALESCE(actor_name, kind, cluster, namespace, verb, outcome) AS v, COUNT(*) AS n \
         FROM ({inner}) AS t \
         GROUP BY GROUPING SETS ((actor_name), (kind), (cluster), (namespace), (verb), (outcome), ())"
    );
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    // GROUPING(...) has a bit set for each column *not* grouped by, the first column highest.
    let mut lists: [Vec<(String, i64)>; 6] = Default::default();
    let mut total = 0;
    for row in rows {
        let g: i32 = row.try_get("", "g")?;
        let v: Option<String> = row.try_get("", "v")?;
        let n: i64 = row.try_get("", "n")?;
        if g == 0b111111 {
            total = n;
            continue;
        }
        let Some(v) = v else { continue };
        let Some(slot) = (0..6).find(|i| g == 0b111111 & !(1 << (5 - i))) else {
            continue;
        };
        lists[slot].push((v, n));
    }
    Ok((total, lists))
}

/// The facets from the total and each facet's `(value, count)` pairs, in [`facet_columns`]'
/// order: each facet's top [`crate::dto::AuditFacets::TOP`] values, most frequent first, then
/// by value (SQLite's statement already orders and cuts them; PostgreSQL's grouping sets
/// answer every value).
fn facets_of(total: i64, lists: [Vec<(String, i64)>; 6]) -> crate::dto::AuditFacets {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let [actors, kinds, clusters, namespaces, verbs, outcomes] = lists.map(|l| {
        let mut l: Vec<_> = l
            .into_iter()
            .map(|(value, n)| crate::dto::FacetCount {
                value,
                count: count(n),
            })
            .collect();
        l.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        l.truncate(crate::dto::AuditFacets::TOP as usize);
        l
    });
    let total = count(total);
    crate::dto::AuditFacets {
        total,
        actors,
        kinds,
        clusters,
        namespaces,
        verbs,
        outcomes,
    }
}

/// Bucket widths the histogram chooses from, in ms: the smallest that cuts the range into at
/// most [`HISTOGRAM_MAX_BUCKETS`].
const BUCKET_WIDTHS_MS: &[i64] = &[
    60_000,
    2 * 60_000,
    5 * 60_000,
    10 * 60_000,
    15 * 60_000,
    30 * 60_000,
    3_600_000,
    2 * 3_600_000,
    3 * 3_600_000,
    6 * 3_600_000,
    12 * 3_600_000,
    24 * 3_600_000,
    2 * 24 * 3_600_000,
    7 * 24 * 3_600_000,
    30 * 24 * 3_600_000,
    365 * 24 * 3_600_000,
];
pub const HISTOGRAM_MAX_BUCKETS: i64 = 60;

/// The bucket width for a range of `span_ms`: 1 min for 15 min or 1 h, 30 min for 24 h, 3 h for
/// 7 d, 12 h for 30 d.
pub fn bucket_width_ms(span_ms: i64) -> i64 {
    let span = std::cmp::max(span_ms, 1);
    BUCKET_WIDTHS_MS
        .iter()
        .copied()
        .find(|w| (span + w - 1) / w <= HISTOGRAM_MAX_BUCKETS)
        .unwrap_or(BUCKET_WIDTHS_MS[BUCKET_WIDTHS_MS.len() - 1])
}

/// The histogram of a filter over its time range (allowed, denied and error events per
/// bucket), counted by the database with integer arithmetic on the millisecond timestamps
/// (`(at - start) / width`, the same in SQLite and PostgreSQL). A filter without a time range
/// spans its first to its last event; one without an end ends at `now`.
pub async fn histogram_at(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<crate::dto::AuditHistogram> {
    Ok(histogram_with(db, q, scope, now, Counted::Either)
        .await?
        .unwrap_or_default())
}

/// The facets and the histogram of a filter ([`facets_at`], [`histogram_at`]), counted at the
/// same time: each is one or more statements of its own, on its own pooled connection, so the
/// pair takes as long as the slower (a free-text search over a large log: seconds each), not
/// their sum.
pub async fn summary_at(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<(crate::dto::AuditFacets, crate::dto::AuditHistogram)> {
    tokio::try_join!(
        facets_at(db, q, scope, now),
        histogram_at(db, q, scope, now)
    )
}

/// [`histogram_at`] counted from the events themselves (no rollup).
pub async fn histogram_from_events(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<crate::dto::AuditHistogram> {
    Ok(histogram_with(db, q, scope, now, Counted::FromEvents)
        .await?
        .unwrap_or_default())
}

/// [`histogram_at`] from the rollup ([`rollup`]), `None` when it cannot answer `q`.
pub async fn histogram_from_rollup(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<Option<crate::dto::AuditHistogram>> {
    histogram_with(db, q, scope, now, Counted::FromRollup).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Either,
    FromEvents,
    FromRollup,
}

async fn histogram_with(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
    counted: Counted,
) -> DomainResult<Option<crate::dto::AuditHistogram>> {
    use audit_events::Column as C;
    use sea_orm::sea_query::Expr;
    use sea_orm::QueryFilter;
    let cond = filter(db.get_database_backend(), q, scope, now)?;
    let (since, until) = time_bounds(q, now)?;
    let mut by_hour: Option<HourCounts> = None;
    let (since, until) = match (since, until) {
        (Some(s), Some(u)) => (s, u),
        (Some(s), None) => (s, std::cmp::max(now.millis(), s)),
        (None, given_until) => {
            let from_rollup = match counted {
                Counted::FromEvents => None,
                _ => rollup::bounds(db, q, scope, &cond, given_until, now).await?,
            };
            let (first, last) = match (from_rollup, counted) {
                (Some(Some((f, l))), _) => (Some(f), Some(l)),
                (Some(None), _) => (None, None),
                // Counted from the events: one pass gives the range and each hour's counts
                // (see [`HourCounts`]).
                (None, Counted::Either) => {
                    let counts = hour_counts(db, cond.clone()).await?;
                    let bounds = (counts.first(), counts.last());
                    by_hour = Some(counts);
                    bounds
                }
                (None, _) => audit_events::Entity::find()
                    .select_only()
                    .column_as(Expr::col(C::At).min(), "first")
                    .column_as(Expr::col(C::At).max(), "last")
                    .filter(cond.clone())
                    .into_tuple::<(Option<i64>, Option<i64>)>()
                    .one(db)
                    .await?
                    .unwrap_or((None, None)),
            };
            match (first, given_until.or(last)) {
                (Some(f), Some(u)) => (f, std::cmp::max(u, f)),
                _ => {
                    return Ok(Some(crate::dto::AuditHistogram {
                        bucket_seconds: 60,
                        ..Default::default()
                    }))
                }
            }
        }
    };
    if until < since {
        return Err(crate::DomainError::invalid(
            "until",
            "must not be before since",
        ));
    }
    let width = bucket_width_ms(until - since);
    // Buckets start on multiples of their width, so that zooming in and out lines them up.
    let start = since.div_euclid(width) * width;
    let n = std::cmp::max((until - start) / width + 1, 1);
    let from_rollup = match counted {
        Counted::FromEvents => None,
        _ => rollup::histogram_counts(db, q, scope, since, until, start, width, now).await?,
    };
    let rows = match (from_rollup, counted, by_hour) {
        (Some(rows), _, _) => rows,
        (None, Counted::FromRollup, _) => return Ok(None),
        (None, _, Some(hours)) if hours.fit(start, width) => hours.buckets(start, width),
        (None, _, _) => histogram_scan(db, cond, start, width).await?,
    };
    let mut buckets: Vec<crate::dto::HistogramBucket> = (0..n)
        .map(|i| crate::dto::HistogramBucket {
            start: Timestamp(start + i * width).rfc3339(),
            end: Timestamp(start + (i + 1) * width).rfc3339(),
            allowed: 0,
            denied: 0,
            error: 0,
        })
        .collect();
    for (b, outcome, count) in rows {
        let Some(slot) = usize::try_from(b).ok().and_then(|b| buckets.get_mut(b)) else {
            continue;
        };
        let count = std::cmp::max(count, 0) as u64;
        match Outcome::parse(&outcome) {
            Some(Outcome::Allowed) => slot.allowed += count,
            Some(Outcome::Denied) => slot.denied += count,
            _ => slot.error += count,
        }
    }
    Ok(Some(crate::dto::AuditHistogram {
        since: Some(Timestamp(since).rfc3339()),
        until: Some(Timestamp(until).rfc3339()),
        bucket_seconds: width / 1000,
        buckets,
    }))
}

/// A filter's events per hour and outcome, with the first and last event's time: what the
/// histogram of a filter without a start needs from the events, in one pass. Without a
/// start, the histogram spans the filter's first to its last event, which PostgreSQL found
/// with `MIN(at)`/`MAX(at)` by walking the time index from each end until an event matched:
/// for free text found rarely or nowhere, most of the log (10 million events: 26 s for a
/// text found nowhere, 0.7 s for 77 matches), since it cannot tell how rare a text is. Grouped,
/// the filter is read once through its own index; a range of 60 hours or more has buckets
/// of whole hours (every width from an hour up is a multiple of one, and buckets start on
/// multiples of their width), so the same pass answers its histogram too.
struct HourCounts(Vec<(i64, String, i64, i64, i64)>);

impl HourCounts {
    /// The first event's time, if any.
    fn first(&self) -> Option<i64> {
        self.0.iter().map(|r| r.2).min()
    }

    /// The last event's time, if any.
    fn last(&self) -> Option<i64> {
        self.0.iter().map(|r| r.3).max()
    }

    /// Whether buckets of `width` from `start` hold whole hours, so that the hours' counts
    /// are the buckets': not below an hour, and not for times before 1970 (none that Warden
    /// writes), where the database's division rounds toward zero and an "hour" spans two.
    fn fit(&self, start: i64, width: i64) -> bool {
        width % rollup::HOUR_MS == 0
            && start % rollup::HOUR_MS == 0
            && self.first().is_none_or(|f| f >= 0)
    }

    /// Events per (bucket, outcome), as [`histogram_scan`] answers them.
    fn buckets(self, start: i64, width: i64) -> Vec<(i64, String, i64)> {
        let mut rows: Vec<(i64, String, i64)> = Vec::new();
        for (hour, outcome, _, _, n) in self.0 {
            let bucket = (hour * rollup::HOUR_MS - start).div_euclid(width);
            match rows.iter_mut().find(|r| r.0 == bucket && r.1 == outcome) {
                Some(r) => r.2 += n,
                None => rows.push((bucket, outcome, n)),
            }
        }
        rows
    }
}

/// [`HourCounts`] of `cond`, from the events (the hour: `at / 3,600,000`, in integers, the
/// same in SQLite and PostgreSQL for times after 1970).
async fn hour_counts(
    db: &DatabaseConnection,
    cond: sea_orm::sea_query::Condition,
) -> DomainResult<HourCounts> {
    use audit_events::Column as C;
    use sea_orm::sea_query::Expr;
    use sea_orm::QueryFilter;
    let hour = Expr::cust(format!("\"at\" / {}", rollup::HOUR_MS));
    let rows = audit_events::Entity::find()
        .select_only()
        .column_as(hour.clone(), "h")
        .column(C::Outcome)
        .column_as(Expr::col(C::At).min(), "first")
        .column_as(Expr::col(C::At).max(), "last")
        .column_as(Expr::col(C::Seq).count(), "n")
        .filter(cond)
        .group_by(hour)
        .group_by(C::Outcome)
        .into_tuple::<(i64, String, i64, i64, i64)>()
        .all(db)
        .await?;
    Ok(HourCounts(rows))
}

/// Events per (bucket, outcome) of `cond`, buckets of `width` ms from `start`, counted from the
/// events.
pub(crate) async fn histogram_scan(
    db: &DatabaseConnection,
    cond: sea_orm::sea_query::Condition,
    start: i64,
    width: i64,
) -> DomainResult<Vec<(i64, String, i64)>> {
    use audit_events::Column as C;
    use sea_orm::sea_query::Expr;
    use sea_orm::QueryFilter;
    // Literal integers (computed here, not given by the caller), so that PostgreSQL sees the
    // same expression in SELECT and GROUP BY.
    let bucket = Expr::cust(format!("(\"at\" - {start}) / {width}"));
    Ok(audit_events::Entity::find()
        .select_only()
        .column_as(bucket.clone(), "b")
        .column(C::Outcome)
        .column_as(Expr::col(C::Seq).count(), "n")
        .filter(cond)
        .group_by(bucket)
        .group_by(C::Outcome)
        .into_tuple::<(i64, String, i64)>()
        .all(db)
        .await?)
}

/// The newest event's `seq` (0 for an empty log): where a live tail starts.
pub async fn latest_seq(db: &DatabaseConnection) -> DomainResult<i64> {
    Ok(audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Seq)
        .limit(1)
        .one(db)
        .await?
        .map_or(0, |m| m.seq))
}

/// The furthest back a live tail resumes to see every event stamped at or after `since` (ms):
/// the `seq` just before the first of them (events are stamped when they happen and numbered
/// when written, so the earliest stamped is not always the first numbered). The newest `seq`
/// when none is that recent.
pub async fn seq_before(db: &DatabaseConnection, since: i64) -> DomainResult<i64> {
    use audit_events::Column as C;
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    let first: Option<Option<i64>> = audit_events::Entity::find()
        .select_only()
        .column_as(C::Seq.min(), "first")
        .filter(C::At.gte(since))
        .into_tuple()
        .one(db)
        .await?;
    match first.flatten() {
        Some(seq) => Ok(seq - 1),
        None => latest_seq(db).await,
    }
}

/// The events of filter `q` within `scope` stored after `after` (a `seq`), oldest first, at
/// most `limit`: the next batch of a live tail.
pub async fn newer_than(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    after: i64,
    limit: u64,
    now: Timestamp,
) -> DomainResult<Vec<crate::dto::AuditEventDto>> {
    use audit_events::Column as C;
    use sea_orm::{ColumnTrait, QueryFilter};
    let cond = filter(db.get_database_backend(), q, scope, now)?.add(C::Seq.gt(after));
    Ok(audit_events::Entity::find()
        .filter(cond)
        .order_by_asc(C::Seq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_dto_in(scope))
        .collect())
}

/// Users to suggest in the actor filter: the people (events with a user id) of the newest
/// [`SUGGESTIONS_FROM`] events the reader may see, by name, at most 200.
///
/// Every visit to the audit page asks for them before it shows the list, so they are read
/// from a bounded sample of the log (walked newest first on `seq`, or on the index of the
/// reader's scope) rather than grouped over all of it: over a large log that took longer than
/// anything else on the page (740 ms at 2 million events on PostgreSQL, growing with the
/// log). Someone who acted only long ago is not suggested; the filter still finds them
/// (`actor` matches the start of a name over the whole log).
pub async fn actor_suggestions(
    db: &DatabaseConnection,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<Vec<String>> {
    use audit_events::Column as C;
    use sea_orm::sea_query::{Alias, Order, Query};
    use sea_orm::{ColumnTrait, QueryFilter, QueryTrait};
    let cond = filter(db.get_database_backend(), &Default::default(), scope, now)?
        .add(C::ActorId.is_not_null());
    let recent = audit_events::Entity::find()
        .select_only()
        .column(C::ActorName)
        .filter(cond)
        .order_by_desc(C::Seq)
        .limit(SUGGESTIONS_FROM)
        .into_query();
    let name = Alias::new("actor_name");
    let names = Query::select()
        .column(name.clone())
        .from_subquery(recent, Alias::new("recent"))
        .group_by_col(name.clone())
        .order_by(name, Order::Asc)
        .limit(200)
        .to_owned();
    let rows = db
        .query_all_raw(db.get_database_backend().build(&names))
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String>("", "actor_name"))
        .collect::<Result<_, _>>()?)
}

/// How many of the newest events [`actor_suggestions`] reads.
pub const SUGGESTIONS_FROM: u64 = 5_000;

/// The most related events a detail lists per kind of link.
const RELATED_MAX: u64 = 100;

/// One event by its id, with the events of the same request and terminal (see
/// [`crate::dto::AuditEventDetail`]). An event outside the reader's scope (`projects`) is
/// answered as not found, like one that does not exist.
pub async fn event_detail(
    db: &DatabaseConnection,
    id: &str,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<crate::dto::AuditEventDetail> {
    use audit_events::Column as C;
    use sea_orm::{ColumnTrait, QueryFilter};
    let not_found = || crate::DomainError::not_found("audit event");
    let reader = scope;
    let scope = filter(db.get_database_backend(), &Default::default(), scope, now)?;
    let event = audit_events::Entity::find()
        .filter(scope.clone().add(C::Id.eq(id)))
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let related = |link: sea_orm::sea_query::SimpleExpr| {
        audit_events::Entity::find()
            .filter(scope.clone().add(link).add(C::Seq.ne(event.seq)))
            .order_by_asc(C::Seq)
            .limit(RELATED_MAX)
            .all(db)
    };
    let same_request = match &event.request_id {
        Some(r) if !r.is_empty() => related(C::RequestId.eq(r.clone())).await?,
        _ => Vec::new(),
    };
    let details: serde_json::Value = serde_json::from_str(&event.details).unwrap_or_default();
    let terminal = details.get("terminal_id").filter(|t| !t.is_null()).cloned();
    let same_terminal = match &terminal {
        // The details are stored as compact JSON (`serde_json::to_string`), so the link reads
        // `"terminal_id":<value>` in every event of the terminal: one LIKE, the same SQL on
        // SQLite and PostgreSQL.
        Some(t) => {
            let needle = format!("\"terminal_id\":{t}")
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            // The value ends at the next `,` or `}`: terminal 1 is not terminal 12.
            let like = |end: char| {
                sea_orm::sea_query::Expr::col(C::Details).like(
                    sea_orm::sea_query::LikeExpr::new(format!("%{needle}{end}%")).escape('\\'),
                )
            };
            related(like(',').or(like('}'))).await?
        }
        None => Vec::new(),
    };
    // The recording: the terminal event's own, else that of the terminal's opening.
    let recording_of = crate::recordings::recording_of;
    let recording = recording_of(&event.action, &details).or_else(|| {
        same_terminal
            .iter()
            .filter(|e| e.action == "terminal.open" && e.outcome == Outcome::Allowed.as_str())
            .find_map(|e| recording_of(&e.action, &serde_json::from_str(&e.details).ok()?))
    });
    Ok(crate::dto::AuditEventDetail {
        event: to_dto_in(reader)(event),
        same_request: same_request.into_iter().map(to_dto_in(reader)).collect(),
        terminal_id: terminal.map(|t| match t {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }),
        same_terminal: same_terminal.into_iter().map(to_dto_in(reader)).collect(),
        recording,
    })
}

/// Facets as of now (see [`facets_at`]).
pub async fn facets(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    projects: Option<&[String]>,
) -> DomainResult<crate::dto::AuditFacets> {
    facets_at(
        db,
        q,
        &AuditScope::projects(projects),
        Timestamp::from_offset(time::OffsetDateTime::now_utc()),
    )
    .await
}

#[cfg(test)]
mod histogram_tests {
    use super::bucket_width_ms;

    #[test]
    fn bucket_widths_follow_the_range() {
        let min = 60_000;
        let h = 60 * min;
        assert_eq!(bucket_width_ms(15 * min), min);
        assert_eq!(bucket_width_ms(h), min);
        assert_eq!(bucket_width_ms(24 * h), 30 * min);
        assert_eq!(bucket_width_ms(7 * 24 * h), 3 * h);
        assert_eq!(bucket_width_ms(30 * 24 * h), 12 * h);
    }
}

/// A request path as it may be logged or audited: the one-time token of a manifest link
/// (`/agent/v1/manifests/<token>`) is a credential and never written anywhere.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const MANIFESTS: &str = "/agent/v1/manifests/";
    match path.strip_prefix(MANIFESTS) {
        Some(rest) if !rest.is_empty() => format!("{MANIFESTS}<redacted>").into(),
        _ => path.into(),
    }
}

#[cfg(test)]
mod loggable_path_tests {
    #[test]
    fn manifest_tokens_are_redacted() {
        assert_eq!(
            super::loggable_path("/agent/v1/manifests/abc123.yaml"),
            "/agent/v1/manifests/<redacted>"
        );
        assert_eq!(super::loggable_path("/api/v1/clusters"), "/api/v1/clusters");
    }
}

/// Refusals of requests nobody was authenticated for (failed sign-ins, refused manifest links,
/// refused credentials) are counted, and sampled into the audit log: in each window of
/// [`RefusalSampler::WINDOW_MS`], the first [`RefusalSampler::PER_WINDOW`] of each action are
/// written in full; the rest are counted, and one summary event per action and window (how
/// many, from which sources, claiming which names) is written when the window ends. A flood
/// from many addresses then costs the log one row a minute, not one row a guess.
///
/// A person's refused Kubernetes requests are sampled the same way, per person and action:
/// cheap to send and never forwarded, they would otherwise let one kubeconfig fill the audit
/// queue until the gateway refuses everyone (it fails closed). Their summary names the person.
#[derive(Default)]
pub struct RefusalSampler {
    windows: std::sync::Mutex<std::collections::HashMap<String, RefusalWindow>>,
    total: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

#[derive(Default)]
struct RefusalWindow {
    /// The action sampled, and for a person's refusals who they are.
    action: String,
    actor: Option<Actor>,
    start: i64,
    written: u32,
    suppressed: u64,
    sources: std::collections::HashMap<String, u64>,
    claimed: std::collections::HashMap<String, u64>,
    reasons: std::collections::HashMap<String, u64>,
    kind: Option<AuditKind>,
    session_type: Option<SessionType>,
}

/// At most this many distinct sources and names are counted per window (the rest as `other`).
const SAMPLE_KEYS: usize = 64;

fn bump(map: &mut std::collections::HashMap<String, u64>, key: String) {
    if map.len() < SAMPLE_KEYS || map.contains_key(&key) {
        *map.entry(key).or_default() += 1;
    } else {
        *map.entry("other".into()).or_default() += 1;
    }
}

fn top(map: &std::collections::HashMap<String, u64>) -> serde_json::Value {
    let mut v: Vec<(&String, &u64)> = map.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    serde_json::Value::Array(
        v.into_iter()
            .take(10)
            .map(|(k, n)| serde_json::json!({ "value": k, "count": n }))
            .collect(),
    )
}

impl RefusalSampler {
    pub const WINDOW_MS: i64 = 60_000;
    pub const PER_WINDOW: u32 = 50;
    /// Distinct actions counted in the totals (metric series); the rest count as `other`.
    pub const MAX_ACTIONS: usize = 256;
    /// Open windows at once (actions, and actions per person).
    pub const MAX_WINDOWS: usize = 20_000;

    /// Whether a refusal is sampled: a denied event with an anonymous actor, or a person's
    /// refused Kubernetes request.
    pub fn applies_to(ev: &AuditEvent) -> bool {
        ev.outcome == Outcome::Denied
            && match ev.actor {
                Actor::Anonymous { .. } => true,
                Actor::User { .. } => ev.kind == AuditKind::KubeApi,
                _ => false,
            }
    }

    /// Count `ev` and say what to write now: the summary of a window that ended (if any
    /// refusal of this action was left out of it) and the event itself while the window has
    /// room for it.
    pub fn admit(&self, ev: AuditEvent, now: Timestamp) -> Vec<AuditEvent> {
        let person = match &ev.actor {
            Actor::User { id, .. } => Some(*id),
            _ => None,
        };
        if person.is_none() {
            if let Ok(mut t) = self.total.lock() {
                let key = if t.len() < Self::MAX_ACTIONS || t.contains_key(&ev.action) {
                    ev.action.clone()
                } else {
                    "other".to_owned()
                };
                *t.entry(key).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        let Ok(mut windows) = self.windows.lock() else {
            out.push(ev);
            return out;
        };
        let mut key = match person {
            Some(id) => format!("{}\u{1f}{id}", ev.action),
            None => ev.action.clone(),
        };
        // Whatever a client makes vary, the windows stay bounded: past the cap, new keys
        // share one window (sampled together, summarised as "other").
        let folded = windows.len() >= Self::MAX_WINDOWS && !windows.contains_key(&key);
        if folded {
            key = "\u{1f}other".to_owned();
        }
        let w = windows.entry(key).or_default();
        if now.millis() - w.start >= Self::WINDOW_MS {
            out.extend(Self::summary(w, now));
            *w = RefusalWindow {
                start: now.millis(),
                ..Default::default()
            };
        }
        if w.action.is_empty() {
            if folded {
                // Many actions and people: the summary names none of them.
                w.action = "refusal".to_owned();
            } else {
                w.action = ev.action.clone();
                w.actor = person.map(|_| ev.actor.clone());
            }
        }
        if w.written < Self::PER_WINDOW {
            w.written += 1;
            out.push(ev);
        } else {
            w.suppressed += 1;
            w.kind = Some(ev.kind);
            w.session_type = Some(ev.session_type);
            bump(
                &mut w.sources,
                ev.request
                    .source_ip
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
            );
            if let Actor::Anonymous { claimed } = &ev.actor {
                bump(&mut w.claimed, truncate(claimed, 254));
            }
            bump(
                &mut w.reasons,
                truncate(ev.reason.as_deref().unwrap_or("refused"), 254),
            );
        }
        out
    }

    /// The summaries of every window that has ended (a periodic task writes them, so the last
    /// window of a flood is told too).
    pub fn due(&self, now: Timestamp) -> Vec<AuditEvent> {
        let Ok(mut windows) = self.windows.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        windows.retain(|_, w| {
            if now.millis() - w.start < Self::WINDOW_MS {
                return true;
            }
            out.extend(Self::summary(w, now));
            false
        });
        out
    }

    /// Unauthenticated refusals counted since start, by action (the
    /// `warden_unauthenticated_refusals_total` metric).
    pub fn totals(&self) -> Vec<(String, u64)> {
        self.total
            .lock()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    fn summary(w: &RefusalWindow, now: Timestamp) -> Option<AuditEvent> {
        if w.suppressed == 0 {
            return None;
        }
        let action = w.action.as_str();
        let from = Timestamp(w.start).rfc3339();
        let until = Timestamp(std::cmp::min(now.millis(), w.start + Self::WINDOW_MS)).rfc3339();
        Some(
            AuditEvent::new(
                w.kind.unwrap_or(AuditKind::System),
                w.actor.clone().unwrap_or(Actor::System),
                w.session_type.unwrap_or(SessionType::System),
                format!("{action}.sampled"),
                Outcome::Denied,
            )
            .reason(format!(
                "{} more refusals of {action} between {from} and {until} were counted, not written one by one (the first {} of the window were)",
                w.suppressed,
                Self::PER_WINDOW
            ))
            .details(serde_json::json!({
                "action": action,
                "suppressed": w.suppressed,
                "written": w.written,
                "from": from,
                "until": until,
                "sources": top(&w.sources),
                "claimed": top(&w.claimed),
                "reasons": top(&w.reasons),
            })),
        )
    }
}

#[cfg(test)]
mod sampler_tests {
    use super::*;

    /// Actions a client makes up (a new HTTP method each request) neither grow the sampler
    /// without bound nor escape sampling.
    #[test]
    fn made_up_actions_keep_the_sampler_bounded_and_sampled() {
        let s = RefusalSampler::default();
        let now = Timestamp(1_000_000);
        let mut written = 0;
        let n = RefusalSampler::MAX_WINDOWS + 5_000;
        for i in 0..n {
            let ev = AuditEvent::new(
                AuditKind::KubeApi,
                Actor::Anonymous {
                    claimed: "no client certificate".into(),
                },
                SessionType::Cli,
                format!("kube.made-up-{i}"),
                Outcome::Denied,
            );
            written += s.admit(ev, now).len();
        }
        assert!(s.windows.lock().unwrap().len() <= RefusalSampler::MAX_WINDOWS + 1);
        assert!(s.total.lock().unwrap().len() <= RefusalSampler::MAX_ACTIONS + 1);
        assert_eq!(
            s.total.lock().unwrap().values().sum::<u64>(),
            n as u64,
            "every refusal is counted"
        );
        // Past the cap, the rest share one window: at most its first few are written.
        assert_eq!(
            written,
            RefusalSampler::MAX_WINDOWS + RefusalSampler::PER_WINDOW as usize
        );
        let summaries = s.due(Timestamp(now.millis() + RefusalSampler::WINDOW_MS));
        let other = summaries
            .iter()
            .find(|e| e.action == "refusal.sampled")
            .expect("the folded window is summarised");
        assert!(other.reason.as_deref().unwrap().starts_with("4950 more"));
    }
}

#[cfg(test)]
mod batching_tests {
    use super::*;

    /// A sink whose writes wait until the test lets them through.
    struct Stalled(tokio::sync::Semaphore, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl AuditSink for Stalled {
        async fn record(&self, _: AuditEvent) -> DomainResult<()> {
            unreachable!()
        }
        async fn record_many(&self, events: Vec<AuditEvent>) -> DomainResult<()> {
            let _permit = self.0.acquire().await.expect("open");
            self.1
                .fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    fn event() -> AuditEvent {
        AuditEvent::new(
            AuditKind::KubeApi,
            Actor::System,
            SessionType::Cli,
            "kube.get",
            Outcome::Allowed,
        )
    }

    /// While the database is stalled, the queue fills to its bound and then says so
    /// (`try_record` hands the event back, `depth` counts those waiting for room); nothing is
    /// lost once it drains.
    #[tokio::test]
    async fn a_stalled_writer_fills_the_queue_to_its_bound_and_loses_nothing() {
        let inner = Arc::new(Stalled(tokio::sync::Semaphore::new(0), Default::default()));
        let sink = BatchingAuditSink::spawn(inner.clone(), 8, 4);
        let mut handed_back = Vec::new();
        for _ in 0..20 {
            if let Err(e) = sink.try_record(event()) {
                handed_back.push(e);
            }
        }
        // The writer took one batch (stalled inside the database); the queue holds 8 more.
        assert!(sink.depth() <= 8, "{}", sink.depth());
        assert!(handed_back.len() >= 20 - 8 - 4, "{}", handed_back.len());
        let waiting: Vec<_> = handed_back
            .into_iter()
            .map(|e| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.record(e).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(sink.depth() > 8, "waiting senders count: {}", sink.depth());
        inner.0.add_permits(1000);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        sink.flush().await;
        assert_eq!(inner.1.load(std::sync::atomic::Ordering::SeqCst), 20);
        assert_eq!(sink.depth(), 0);
    }

    /// A sink that notes the size of every batch it is given.
    #[derive(Default)]
    struct Batches(std::sync::Mutex<Vec<usize>>);

    #[async_trait::async_trait]
    impl AuditSink for Batches {
        async fn record(&self, _: AuditEvent) -> DomainResult<()> {
            unreachable!()
        }
        async fn record_many(&self, events: Vec<AuditEvent>) -> DomainResult<()> {
            self.0.lock().unwrap().push(events.len());
            Ok(())
        }
    }

    /// A quiet log is written one step after its event; a busy one (at least `busy` events a
    /// step) waits step after step up to the bound, so its batches hold the bound's worth of
    /// events, not a step's. (Tokio's clock is paused: the timings are exact.)
    #[tokio::test(start_paused = true)]
    async fn a_busy_log_lingers_step_by_step_up_to_the_bound_and_a_quiet_one_does_not() {
        use std::time::Duration;
        let inner = Arc::new(Batches::default());
        let linger = Linger {
            step: Duration::from_millis(20),
            busy: 5,
            max: Duration::from_millis(100),
        };
        let sink = BatchingAuditSink::spawn_with(inner.clone(), 1_000, 1_000, None, linger);
        sink.record(event()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert!(
            inner.0.lock().unwrap().is_empty(),
            "written before its step"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            *inner.0.lock().unwrap(),
            vec![1],
            "a quiet event waits one step"
        );
        // Busy: an event every 2 ms (10 a step) for 300 ms.
        for _ in 0..150 {
            sink.record(event()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sink.flush().await;
        let batches = inner.0.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 151, "{batches:?}");
        // 100 ms of events each (one more or less where an arrival meets the deadline), where
        // one step alone would have made batches of 10.
        let full = &batches[1..batches.len() - 1];
        assert!(full.len() >= 2, "{batches:?}");
        assert!(full.iter().all(|n| (49..=51).contains(n)), "{batches:?}");
        // The same load with a fixed linger of one step: batches of a step's events.
        let inner = Arc::new(Batches::default());
        let sink = BatchingAuditSink::spawn_with(
            inner.clone(),
            1_000,
            1_000,
            None,
            Linger::fixed(Duration::from_millis(20)),
        );
        for _ in 0..150 {
            sink.record(event()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sink.flush().await;
        let batches = inner.0.lock().unwrap().clone();
        assert!(
            batches[..batches.len() - 1]
                .iter()
                .all(|n| (9..=11).contains(n)),
            "{batches:?}"
        );
    }

    /// With a linger, events that arrive one by one within it wait for company; a batch that
    /// fills goes at once; a flush does not wait for the linger. (The linger is far longer
    /// than the test, so a slow machine cannot make it expire early.)
    #[tokio::test]
    async fn a_linger_gathers_events_into_one_batch_and_a_flush_cuts_it_short() {
        use std::time::{Duration, Instant};
        let inner = Arc::new(Batches::default());
        let sink = BatchingAuditSink::spawn_with(
            inner.clone(),
            100,
            4,
            None,
            Linger::fixed(Duration::from_secs(30)),
        );
        for _ in 0..3 {
            sink.record(event()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            inner.0.lock().unwrap().is_empty(),
            "written before the linger ended"
        );
        // The fourth fills the batch: written now.
        sink.record(event()).await.unwrap();
        let t = Instant::now();
        while inner.0.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*inner.0.lock().unwrap(), vec![4]);
        // A flush writes what is waiting now, not when the linger ends.
        sink.record(event()).await.unwrap();
        let t = Instant::now();
        sink.flush().await;
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(*inner.0.lock().unwrap(), vec![4, 1]);
        assert_eq!(sink.stats().writes.count(), 2);
        assert_eq!(
            sink.stats()
                .events
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{fts_trigrams, insert_chunk, FTS_TRIGRAMS_MAX, ROWS_PER_INSERT};

    /// Any batch goes in as statements of a power of two rows, at most `ROWS_PER_INSERT`
    /// each: every row once, and ten statement shapes in all whatever the batch sizes.
    #[test]
    fn batches_are_inserted_in_statements_of_powers_of_two_rows() {
        let mut shapes = std::collections::BTreeSet::new();
        for n in 1..=3_000usize {
            let (mut left, mut statements) = (n, 0);
            while left > 0 {
                let k = insert_chunk(left);
                assert!(
                    k.is_power_of_two() && k <= ROWS_PER_INSERT && k <= left,
                    "{n}: {k}"
                );
                shapes.insert(k);
                left -= k;
                statements += 1;
            }
            assert!(statements <= n / ROWS_PER_INSERT + 10, "{n}: {statements}");
        }
        assert_eq!(shapes.len(), 10, "{shapes:?}");
        assert!(ROWS_PER_INSERT * 24 <= 32_766);
    }

    #[test]
    fn a_free_text_is_asked_of_the_text_index_as_every_trigram_it_holds() {
        assert_eq!(
            fts_trigrams("LOCKED af"),
            r#""LOC" AND "OCK" AND "CKE" AND "KED" AND "ED " AND "D a" AND " af""#
        );
        // Each trigram once (the index folds case as the search does).
        assert_eq!(fts_trigrams("abcABC"), r#""abc" AND "bcA" AND "cAB""#);
        // A double quote is doubled inside the quoted trigram: never query syntax.
        assert_eq!(fts_trigrams(r#"a"b""#), r#""a""b" AND """b""""#);
        // Characters, not bytes.
        assert_eq!(fts_trigrams("müll"), r#""mül" AND "üll""#);
        // A long text asks for at most FTS_TRIGRAMS_MAX of them, spread over it: "0123456789
        // 101112…" (180 different trigrams) asks for every sixth from the first.
        let long: String = (0..100).map(|i: u32| i.to_string()).collect();
        let q = fts_trigrams(&long);
        let n = q.split(" AND ").count();
        assert_eq!(n, 30, "{q}");
        assert!(n <= FTS_TRIGRAMS_MAX);
        assert!(q.starts_with(r#""012" AND "678" AND"#), "{q}");
    }
}
