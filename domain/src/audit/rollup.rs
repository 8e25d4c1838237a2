//! Pre-counted audit events (`audit_rollup`, migrations `m20261210_000001_audit_rollup`,
//! `m20261212_000001_audit_rollup_slices`, `m20261213_000001_audit_rollup_spans`,
//! `m20261213_000002_audit_rollup_resource_status` and `m20261214_000002_audit_rollup_action`),
//! so that facets and the histogram of a broad filter do not count every matching row; and
//! where each hour's events lie in the log (`audit_hour_seqs`, migration
//! `m20261214_000001_audit_hour_seqs`: [`seq_window`]).
//!
//! A rollup row counts the events of one **slice** (`sd`, `sv`: the whole log, `''`; or one
//! project, cluster, namespace, verb, resource kind, HTTP status or action, see
//! [`SLICES`]), one `kind`, `outcome` and `disc` (1 for a Kubernetes request that names no
//! resource: discovery, version, health) per time slot of one `span` (an hour, a day or a week:
//! [`shortest_spans`]), for one dimension `dim`: `''` (every event, per hour, day and week: the
//! histogram and the total) or `actor`, `cluster`, `namespace`, `verb` (the facets, per day
//! and week; the value in `val`, events without one not counted, as the facets do). It is
//! caught up after the appends, in large batches ([`catch_up`], a background job;
//! `audit_rollup_state.seq` is the last event counted), and retention subtracts what it
//! deletes among the counted events ([`remove_through`]). Every read takes the rollup up to
//! that event and counts the events after it from the log ([`consistent`]).
//!
//! A filter that names only a time range, `kind`, `outcome`, `discovery` and at most one of
//! project, cluster, namespace, verb, resource, status and action prefix, read by someone
//! who sees everything (or a project of theirs, by a project's reader), is answered from the rollup
//! for the whole weeks and days (facets, [`DayPlan::segments`]) or hours (histogram, when its
//! buckets are whole hours) inside its range, and from the events for the partial slots at
//! its edges; anything else is counted from the events. The answer is exact either way (the
//! integration test `audit_rollup_answers_what_a_scan_answers` compares them).

use sea_orm::sea_query::Condition;
use sea_orm::ExprTrait;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, QueryFilter, Value};
use std::collections::HashMap;

use super::{filter, time_bounds, AuditScope, VERB_SQL};
use crate::clock::Timestamp;
use crate::entities::audit_events;
use crate::error::DomainResult;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Weeks as the rollup counts them: `t - t % WEEK_MS`, from the epoch (a Thursday).
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// The time slots each dimension is counted in: the whole log's total per hour (the
/// histogram, and where a filter's first and last events lie), day and week; the facets'
/// dimensions per day and week. The `(span, dim)` rows of the shortest (the longer spans are
/// summed from those counts, see [`upsert_sql`]).
fn shortest_spans() -> String {
    let mut rows = Vec::new();
    for dim in ["", "actor", "cluster", "namespace", "verb"] {
        let span = if dim.is_empty() { HOUR_MS } else { DAY_MS };
        rows.push(format!(
            "SELECT CAST({span} AS BIGINT) AS span, '{dim}' AS dim"
        ));
    }
    rows.join(" UNION ALL ")
}

/// The slices an event is counted in (`sd`, and the value `sv` it has there; NULL: not in
/// that slice). `verb` is exactly what `?verb=` matches ([`super::filter`]): a connection's
/// `exec`, `attach`, `portforward` from its `resource_kind`, any other verb `v` from the action
/// `kube.v`; `verbc` (the connections) is stored as `verb`. `resource`: the resource kind, as
/// `?resource=` matches it; `status`: the HTTP status in decimal (`?status=`); `action`: the
/// action (`?action=` names a prefix: the slices of the actions it matches, [`Rolled`]).
const SLICES: &str = "CASE s.sd WHEN '' THEN '' WHEN 'project' THEN project \
     WHEN 'cluster' THEN cluster WHEN 'namespace' THEN namespace \
     WHEN 'verb' THEN (CASE WHEN substr(action, 1, 5) = 'kube.' \
       AND substr(action, 6) NOT IN ('exec', 'attach', 'portforward') THEN substr(action, 6) END) \
     WHEN 'verbc' THEN (CASE WHEN resource_kind IN ('pods/exec', 'pods/attach', 'pods/portforward') \
       THEN substr(resource_kind, 6) END) \
     WHEN 'resource' THEN resource_kind WHEN 'status' THEN CAST(status AS TEXT) \
     WHEN 'action' THEN action END";

/// The rollup rows of `events` (`sd`, `sv`, `span`, `t`, `kind`, `outcome`, `disc`, `dim`,
/// `val`, and `c`: how many events the row stands for; one row per group of events, slice,
/// dimension and shortest span, `sv` or `val` NULL where the events are not in the slice or
/// have no value). `events`: [`COUNTED_EVENTS`].
fn source(events: &str) -> String {
    let slice_list = "SELECT '' AS sd UNION ALL SELECT 'project' UNION ALL SELECT 'cluster' \
         UNION ALL SELECT 'namespace' UNION ALL SELECT 'verb' UNION ALL SELECT 'verbc' \
         UNION ALL SELECT 'resource' UNION ALL SELECT 'status' UNION ALL SELECT 'action'";
    format!(
        "SELECT CASE WHEN s.sd = 'verbc' THEN 'verb' ELSE s.sd END AS sd, {SLICES} AS sv, \
         d.span AS span, at - (at % d.span) AS t, kind, outcome, \
         CASE WHEN kind = 'kube_api' AND resource_kind IS NULL THEN 1 ELSE 0 END AS disc, \
         d.dim AS dim, \
         CASE d.dim WHEN 'actor' THEN actor_name WHEN 'cluster' THEN cluster \
         WHEN 'namespace' THEN namespace \
         WHEN 'verb' THEN (CASE WHEN kind = 'kube_api' AND action LIKE 'kube.%' THEN {VERB_SQL} END) \
         ELSE '' END AS val, c \
         FROM {events} CROSS JOIN ({spans}) d CROSS JOIN ({slice_list}) s",
        spans = shortest_spans(),
    )
}

/// `sql` with each `$hour` written as [`HOUR_MS`] (the statements name the hour's length
/// through it, not a literal of their own).
fn hours(sql: &str) -> String {
    sql.replace("$hour", &HOUR_MS.to_string())
}

/// The events matching `$where` grouped by everything the rollup reads of them (the hour of
/// `at`, which also names its day and week; the columns of the slices and dimensions), with
/// `c`: how many events each group holds. Counting each group once per slice and dimension,
/// in place of each event, gives the same sums: a gateway's traffic repeats itself (the same
/// person, request and answer many times an hour), so a catch-up of thousands of events
/// expands a few hundred groups instead of forty rows an event (on SQLite 169 -> 20 µs an
/// event for repetitive traffic, 188 -> 197 µs when hardly two events are alike).
/// (`$hour`: [`HOUR_MS`], see [`hours`].)
const COUNTED_EVENTS: &str = "(SELECT at - (at % $hour) AS at, kind, outcome, resource_kind, \
     actor_name, project, cluster, namespace, action, status, COUNT(*) AS c FROM audit_events \
     WHERE $where GROUP BY at - (at % $hour), kind, outcome, resource_kind, actor_name, \
     project, cluster, namespace, action, status) ev";

/// Add (`sign` 1) or subtract (`sign` -1) the events matching `where_sql` to the rollup. The
/// events are counted once per slice and dimension, in their shortest span (`base`: the
/// total per hour, the facets per day); the longer spans are summed from those counts (a
/// catch-up's events lie in a few hours and days, so that is a handful of rows, where counting
/// every span from the events would make each event eleven rows per slice). (`WHERE n > 0`
/// is always true: SQLite's parser needs a `WHERE` in an `INSERT … SELECT` before its
/// `ON CONFLICT`, or it reads the `ON` as a join's.)
pub(crate) fn upsert_sql(where_sql: &str, sign: i8) -> String {
    let minus = if sign < 0 { "-" } else { "" };
    let key = "sd, sv, span, t, kind, outcome, disc, dim, val";
    let longer = |span: i64, which: &str| {
        format!(
            "SELECT sd, sv, {span} AS span, t - (t % {span}) AS t, kind, outcome, disc, dim, \
             val, n FROM base{which}"
        )
    };
    format!(
        "WITH base AS (SELECT {key}, SUM(c) AS n FROM ({src}) r \
         WHERE val IS NOT NULL AND sv IS NOT NULL GROUP BY {key}) \
         INSERT INTO audit_rollup ({key}, n) \
         SELECT {key}, {minus}SUM(n) FROM ( \
         SELECT {key}, n FROM base UNION ALL {days} UNION ALL {weeks}) a \
         WHERE n > 0 GROUP BY {key} \
         ON CONFLICT ({key}) DO UPDATE SET n = audit_rollup.n + excluded.n",
        src = source(&hours(COUNTED_EVENTS).replace("$where", where_sql)),
        days = longer(DAY_MS, " WHERE dim = ''"),
        weeks = longer(WEEK_MS, ""),
    )
}

fn placeholder(backend: DbBackend, i: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${i}"),
        _ => "?".to_owned(),
    }
}

/// The last event counted (`audit_rollup_state`): every event up to it is in the rollup,
/// none after it.
pub async fn counted_through<C: ConnectionTrait>(db: &C) -> DomainResult<i64> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT seq FROM audit_rollup_state WHERE id = 1",
        ))
        .await?;
    match row {
        Some(r) => Ok(r.try_get("", "seq")?),
        None => Err(crate::DomainError::Internal(
            "the audit rollup has no state row".into(),
        )),
    }
}

/// Inside `tx`, take the rollup's lock (its state row: the catch-up and retention, which
/// both move its counts, one at a time, on every replica) and read where it stands.
async fn lock_counted<C: ConnectionTrait>(tx: &C) -> DomainResult<i64> {
    let b = tx.get_database_backend();
    let sql = match b {
        DbBackend::Postgres => "SELECT seq FROM audit_rollup_state WHERE id = 1 FOR UPDATE",
        // SQLite: a write takes the database's write lock at once.
        _ => {
            tx.execute_unprepared("UPDATE audit_rollup_state SET seq = seq WHERE id = 1")
                .await?;
            "SELECT seq FROM audit_rollup_state WHERE id = 1"
        }
    };
    let row = tx
        .query_one_raw(sea_orm::Statement::from_string(b, sql))
        .await?
        .ok_or_else(|| crate::DomainError::Internal("the audit rollup has no state row".into()))?;
    Ok(row.try_get("", "seq")?)
}

/// Count the events stored since the last catch-up, at most `max` of them (by `seq`), in one
/// transaction; returns how far it moved (0: nothing new). Appends no longer count their own
/// events (with the slices, that made a batch of 1,000 events eight times dearer to store):
/// a background job calls this every second, and the reads add what it has not counted yet
/// from the events themselves, so the answers stay exact whatever it lags.
pub async fn catch_up(db: &DatabaseConnection, max: i64) -> DomainResult<i64> {
    use sea_orm::TransactionTrait;
    let newest = |r: Option<sea_orm::QueryResult>| -> DomainResult<i64> {
        Ok(match r {
            Some(r) => r.try_get::<Option<i64>>("", "s")?.unwrap_or(0),
            None => 0,
        })
    };
    let last_sql = "SELECT CAST(MAX(seq) AS BIGINT) AS s FROM audit_events";
    let b = db.get_database_backend();
    // Nothing new: no write transaction.
    let newest_now = newest(
        db.query_one_raw(sea_orm::Statement::from_string(b, last_sql))
            .await?,
    )?;
    if newest_now <= counted_through(db).await? {
        return Ok(0);
    }
    let tx = db.begin().await?;
    let from = lock_counted(&tx).await?;
    // Appends commit in `seq` order (the chain's lock), so every event up to the newest
    // committed one is there to count.
    let to = std::cmp::min(
        newest(
            tx.query_one_raw(sea_orm::Statement::from_string(b, last_sql))
                .await?,
        )?,
        from.saturating_add(max),
    );
    if to <= from {
        tx.rollback().await?;
        return Ok(0);
    }
    let sql = upsert_sql(
        &format!(
            "seq > {} AND seq <= {}",
            placeholder(b, 1),
            placeholder(b, 2)
        ),
        1,
    );
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        sql,
        [from.into(), to.into()],
    ))
    .await?;
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        hours(HOUR_SEQS_SQL)
            .replace("$1", &placeholder(b, 1))
            .replace("$2", &placeholder(b, 2)),
        [from.into(), to.into()],
    ))
    .await?;
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        format!(
            "UPDATE audit_rollup_state SET seq = {} WHERE id = 1",
            placeholder(b, 1)
        ),
        [to.into()],
    ))
    .await?;
    tx.commit().await?;
    Ok(to - from)
}

/// Widen each hour's `seq` bounds (`audit_hour_seqs`, see [`seq_window`]) to the events with
/// `$1 < seq <= $2`. (The `WHERE` also lets SQLite's parser tell `ON CONFLICT` from a join's
/// `ON`; `$hour`: [`HOUR_MS`], see [`hours`].)
const HOUR_SEQS_SQL: &str = "INSERT INTO audit_hour_seqs (t, lo, hi) \
     SELECT at - (at % $hour), MIN(seq), MAX(seq) FROM audit_events \
     WHERE seq > $1 AND seq <= $2 GROUP BY at - (at % $hour) \
     ON CONFLICT (t) DO UPDATE SET \
     lo = CASE WHEN excluded.lo < audit_hour_seqs.lo THEN excluded.lo ELSE audit_hour_seqs.lo END, \
     hi = CASE WHEN excluded.hi > audit_hour_seqs.hi THEN excluded.hi ELSE audit_hour_seqs.hi END";

/// The `seq` range that holds every event of the time range `[since, until]` (ms, inclusive;
/// `None`: unbounded on that side): `Ok(None)` when no event lies in it, else the bounds
/// (`None` where unbounded). From the hours' bounds of the events the rollup counts
/// (`audit_hour_seqs`, kept by [`catch_up`]) and the events it has not counted yet, read
/// from the log (each bound the first match of a walk of the primary key from where the
/// rollup stops, so it costs what the catch-up lags). Exact whatever the order in which
/// events arrive: an event stored late with an earlier time (a journal replayed at start)
/// lies in its hour's bounds or after the counted ones.
///
/// Given to the list and the export beside the time range, so that a walk of the log by
/// `seq` (newest first) starts and stops at the range: without it PostgreSQL walked from the
/// newest event (or the cursor) through every event outside the range (migration
/// `m20261214_000001_audit_hour_seqs`).
pub(crate) async fn seq_window(
    db: &DatabaseConnection,
    since: Option<i64>,
    until: Option<i64>,
) -> DomainResult<Option<(Option<i64>, Option<i64>)>> {
    if since.is_none() && until.is_none() {
        return Ok(Some((None, None)));
    }
    let b = db.get_database_backend();
    // First where the rollup stands: the hours read after it hold at least the events up to it.
    let counted = counted_through(db).await?;
    let hour = |t: i64| t - t.rem_euclid(HOUR_MS);
    // Each placeholder its own value, in order (SQLite's `?` are positional).
    let mut values: Vec<Value> = Vec::new();
    let mut arg = |v: i64| {
        values.push(v.into());
        placeholder(b, values.len())
    };
    let mut hours = || {
        let mut c = String::new();
        if let Some(s) = since {
            c.push_str(&format!(" AND t >= {}", arg(hour(s))));
        }
        if let Some(u) = until {
            c.push_str(&format!(" AND t <= {}", arg(hour(u))));
        }
        c
    };
    let (h1, h2) = (hours(), hours());
    let mut events = || {
        let mut c = format!("seq > {}", arg(counted));
        if let Some(s) = since {
            c.push_str(&format!(" AND at >= {}", arg(s)));
        }
        if let Some(u) = until {
            c.push_str(&format!(" AND at <= {}", arg(u)));
        }
        c
    };
    let (e1, e2) = (events(), events());
    let sql = format!(
        "SELECT (SELECT CAST(MIN(lo) AS BIGINT) FROM audit_hour_seqs WHERE 1 = 1{h1}) AS hlo, \
         (SELECT CAST(MAX(hi) AS BIGINT) FROM audit_hour_seqs WHERE 1 = 1{h2}) AS hhi, \
         (SELECT seq FROM audit_events WHERE {e1} ORDER BY seq LIMIT 1) AS elo, \
         (SELECT seq FROM audit_events WHERE {e2} ORDER BY seq DESC LIMIT 1) AS ehi"
    );
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?
        .ok_or_else(|| crate::DomainError::Internal("no row from a SELECT".into()))?;
    let get = |c: &str| row.try_get::<Option<i64>>("", c);
    let either = |x: Option<i64>, y: Option<i64>, f: fn(i64, i64) -> i64| match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, y) => x.or(y),
    };
    let lo = either(get("hlo")?, get("elo")?, std::cmp::min);
    let hi = either(get("hhi")?, get("ehi")?, std::cmp::max);
    Ok(match (lo, hi) {
        (Some(lo), Some(hi)) => Some((since.map(|_| lo), until.map(|_| hi))),
        _ => None,
    })
}

/// Uncount the rows up to `seq` that the rollup holds (retention, before it deletes them, in
/// its transaction, the rollup's lock taken: a catch-up never counts what it deletes).
pub(crate) async fn remove_through<C: ConnectionTrait>(tx: &C, seq: i64) -> DomainResult<()> {
    let b = tx.get_database_backend();
    let counted = lock_counted(tx).await?;
    let sql = upsert_sql(&format!("seq <= {}", placeholder(b, 1)), -1);
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        sql,
        [std::cmp::min(seq, counted).into()],
    ))
    .await?;
    tx.execute_unprepared("DELETE FROM audit_rollup WHERE n <= 0")
        .await?;
    // An hour whose events are all deleted; one that keeps some keeps its (now looser) bounds.
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        format!(
            "DELETE FROM audit_hour_seqs WHERE hi <= {}",
            placeholder(b, 1)
        ),
        [seq.into()],
    ))
    .await?;
    Ok(())
}

/// How the rollup answers a filter within a reader's scope ([`rolled`]).
struct Rolled {
    /// What the rollup's rows must equal: the slice's dimension `sd`, and `kind`, `outcome`,
    /// `disc` as the filter names them.
    conds: Vec<(&'static str, Value)>,
    /// The slices summed (`sv IN`): the filter's one value, or the reader's projects.
    slices: Vec<String>,
    /// The part of the scope the rollup holds, within which the edges are counted: everything,
    /// or the reader's projects.
    held: AuditScope,
    /// The rest of the scope: the reader's own activity outside their projects, counted from
    /// the events over the whole range (one person's events, through the actor index).
    own: Option<Condition>,
}

/// The actions the rollup has counted that `?action=prefix` matches, as the events' filter
/// matches them (the same condition, on each distinct action: SQLite's `LIKE` ignores case,
/// PostgreSQL's does not). The distinct actions are found one index step each (a recursive
/// query: the next action after the last one), not by reading the slice's rows; there are a
/// few dozen.
async fn actions(db: &DatabaseConnection, prefix: &str) -> DomainResult<Vec<String>> {
    use audit_events::Column as C;
    use sea_orm::sea_query::{PostgresQueryBuilder, Query, SqliteQueryBuilder};
    let b = db.get_database_backend();
    // The filter's own condition on `"audit_events"."action"`, read here from a common table
    // expression of that name holding one row per distinct action.
    let select = Query::select()
        .column((audit_events::Entity, C::Action))
        .from(audit_events::Entity)
        .cond_where(filter(
            b,
            &crate::dto::AuditQuery {
                action: Some(prefix.to_owned()),
                ..Default::default()
            },
            &AuditScope::all(),
            Timestamp(0),
        )?)
        .to_owned();
    let (select, values) = match b {
        DbBackend::Postgres => select.build(PostgresQueryBuilder),
        _ => select.build(SqliteQueryBuilder),
    };
    let sql = format!(
        "WITH RECURSIVE a(sv) AS ( \
         SELECT MIN(sv) FROM audit_rollup WHERE sd = 'action' \
         UNION ALL SELECT (SELECT MIN(r.sv) FROM audit_rollup r \
         WHERE r.sd = 'action' AND r.sv > a.sv) FROM a WHERE a.sv IS NOT NULL), \
         audit_events(action) AS (SELECT sv FROM a WHERE sv IS NOT NULL) {select}"
    );
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get_by_index::<String>(0)?))
        .collect()
}

/// How the rollup answers `q` within `scope`, or `None` when it cannot: the filter names
/// something besides a time range, `kind`, `outcome`, `discovery` and one of project, cluster,
/// namespace, verb, resource, status or action prefix; or the reader sees only some projects
/// (`audit.read` there) and the filter names another slice or a project they do not read; or
/// they read no project at all (their own activity only: counting it is cheap).
async fn rolled(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<Option<Rolled>> {
    use audit_events::Column as C;
    let b = db.get_database_backend();
    let given = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    if given(&q.actor).is_some() || given(&q.source_ip).is_some() || given(&q.q).is_some() {
        return Ok(None);
    }
    let mut named = [
        ("project", given(&q.project)),
        ("cluster", given(&q.cluster)),
        ("namespace", given(&q.namespace)),
        ("verb", given(&q.verb)),
        ("resource", given(&q.resource)),
        ("status", q.status.map(|s| s.to_string())),
        ("action", given(&q.action)),
    ]
    .into_iter()
    .filter_map(|(sd, v)| v.map(|v| (sd, v)));
    let slice = named.next();
    if named.next().is_some() {
        return Ok(None);
    }
    let (sd, slices, held, own) = if scope.all {
        match slice {
            Some(("action", prefix)) => (
                "action",
                actions(db, &prefix).await?,
                AuditScope::all(),
                None,
            ),
            Some((sd, sv)) => (sd, vec![sv], AuditScope::all(), None),
            None => ("", vec![String::new()], AuditScope::all(), None),
        }
    } else {
        // A project whose name a deleted one bore is read from when it began: not a slice.
        if scope.projects.is_empty() || !scope.since.is_empty() {
            return Ok(None);
        }
        let slices = match slice {
            None => scope.projects.clone(),
            Some(("project", p)) if scope.projects.contains(&p) => vec![p],
            Some(_) => return Ok(None),
        };
        let held = AuditScope::projects(Some(&scope.projects));
        // Their own allowed events outside the projects they read (`AuditScope::condition`).
        let own = match scope.own_activity() {
            Some(own) => Some(
                filter(b, q, &AuditScope::all(), now)?.add(own).add(
                    Condition::any()
                        .add(C::Project.is_null())
                        .add(C::Project.is_not_in(scope.projects.clone())),
                ),
            ),
            None => None,
        };
        ("project", slices, held, own)
    };
    let mut conds = vec![("sd", Value::from(sd))];
    if let Some(k) = q.kind.as_ref().filter(|k| !k.is_empty()) {
        conds.push(("kind", Value::from(k.clone())));
    }
    if let Some(o) = q.outcome.as_ref().filter(|o| !o.is_empty()) {
        conds.push(("outcome", Value::from(o.clone())));
    }
    if q.discovery == Some(false) {
        conds.push(("disc", Value::from(0i32)));
    }
    Ok(Some(Rolled {
        conds,
        slices,
        held,
        own,
    }))
}

impl Rolled {
    /// ` AND col = … AND sv IN (…)` with its values, the placeholders numbered after `taken`.
    fn sql(&self, b: DbBackend, taken: usize) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut values: Vec<Value> = Vec::new();
        for (col, v) in &self.conds {
            values.push(v.clone());
            sql.push_str(&format!(
                " AND {col} = {}",
                placeholder(b, taken + values.len())
            ));
        }
        let mut list = Vec::new();
        for sv in &self.slices {
            values.push(Value::from(sv.clone()));
            list.push(placeholder(b, taken + values.len()));
        }
        if list.is_empty() {
            // An action prefix that no counted action has.
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(" AND sv IN ({})", list.join(", ")));
        }
        (sql, values)
    }
}

/// The events up to `counted` (those the rollup holds), as a condition beside a time range
/// that the time index serves: `seq + 0`, not `seq`, or SQLite walks the primary key's range
/// (every event, when the rollup is caught up) in place of the time index's few rows at a
/// range's edge (0.3 to 1 s against 1 ms at 1 million events, measured).
fn counted_by(counted: i64) -> sea_orm::sea_query::SimpleExpr {
    sea_orm::sea_query::Expr::col(audit_events::Column::Seq)
        .add(0i64)
        .lte(counted)
}

/// A part of a range read from the rollup: its rows of one `span` with `t` in `[from, to)`,
/// added (`sign` 1) or subtracted (-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    span: i64,
    from: i64,
    to: i64,
    sign: i64,
}

/// `SELECT {select} FROM` the rollup rows of `segments` (their `n` negated where subtracted)
/// `WHERE {dim}` and the filter's conditions `GROUP BY {group}`: one statement, each segment
/// one range of the primary key.
async fn rollup_rows(
    db: &DatabaseConnection,
    select: &str,
    dim_cond: &str,
    group: &str,
    segments: &[Segment],
    rolled: &Rolled,
) -> DomainResult<Vec<sea_orm::QueryResult>> {
    let b = db.get_database_backend();
    let mut values: Vec<Value> = Vec::new();
    let mut parts = Vec::with_capacity(segments.len());
    for s in segments {
        values.extend([s.span.into(), s.from.into(), s.to.into()]);
        let n = values.len();
        let (conds, more) = rolled.sql(b, n);
        values.extend(more);
        let mut part = format!(
            "SELECT dim, val, kind, outcome, t, {sign}n AS n FROM audit_rollup \
             WHERE span = {} AND t >= {} AND t < {}{conds}",
            placeholder(b, n - 2),
            placeholder(b, n - 1),
            placeholder(b, n),
            sign = if s.sign < 0 { "-" } else { "" },
        );
        if !dim_cond.is_empty() {
            part.push_str(&format!(" AND {dim_cond}"));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {select} FROM ({}) r GROUP BY {group}",
        parts.join(" UNION ALL ")
    );
    Ok(db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?)
}

/// What an edge of a range (or the events the rollup does not hold) adds to a rollup's facets:
/// per dimension and value (`("", "")`: every event), and per kind (`(true, kind)`) and
/// outcome (`(false, outcome)`), in the shape of the rollup's own rows.
#[derive(Default)]
struct FacetTally {
    dims: HashMap<(String, String), i64>,
    kinds_outcomes: HashMap<(bool, String), i64>,
}

/// Count the events matching `cond` into `out`, added (`sign` 1) or subtracted (-1), every
/// facet in one pass over them: [`super::grouping_sets`] on PostgreSQL,
/// [`super::materialized_counts`] on SQLite (before, SQLite made a row per event and
/// dimension, grouped them, and grouped kinds and outcomes in a second pass: on 200,000
/// events of half a day, 2.2 -> 0.9 s, whether their actors number 3 or 5,000).
async fn scan_counts(
    db: &DatabaseConnection,
    cond: Condition,
    sign: i64,
    out: &mut FacetTally,
) -> DomainResult<()> {
    let (total, lists) = if db.get_database_backend() == DbBackend::Postgres {
        super::grouping_sets(db, cond).await?
    } else {
        super::materialized_counts(db, cond, None).await?
    };
    *out.dims.entry((String::new(), String::new())).or_default() += sign * total;
    // `facet_columns`' order: actor, kind, cluster, namespace, verb, outcome.
    let [actors, kinds, clusters, namespaces, verbs, outcomes] = lists;
    for (dim, list) in [
        ("actor", actors),
        ("cluster", clusters),
        ("namespace", namespaces),
        ("verb", verbs),
    ] {
        for (v, n) in list {
            *out.dims.entry((dim.to_string(), v)).or_default() += sign * n;
        }
    }
    for (is_kind, list) in [(true, kinds), (false, outcomes)] {
        for (v, n) in list {
            *out.kinds_outcomes.entry((is_kind, v)).or_default() += sign * n;
        }
    }
    Ok(())
}

/// How a range is answered from the rollup's whole days: the days `[from, to)` summed, and the
/// events of the partial days at its edges counted, each edge as the cheaper of two: its own
/// events added (`[since, first whole day)`), or its day taken whole and the events outside
/// the range subtracted (`[that day, since)`), whichever spans less time. So an edge costs at
/// most half a day of events, and a range with no end (the page's presets: the last 24 hours,
/// 7 or 30 days) has no right edge at all.
#[derive(Debug, PartialEq, Eq)]
struct DayPlan {
    from: i64,
    to: i64,
    /// `(start, end, sign)`: the events in `[start, end)` of the filter without its time
    /// bounds, added (1) or subtracted (-1).
    edges: Vec<(i64, i64, i64)>,
}

impl DayPlan {
    /// `None` when the range lies inside one day (then the events are counted). `now`: no
    /// event is newer (a side of an edge that reaches past it costs only up to it).
    fn new(since: Option<i64>, until: Option<i64>, now: i64) -> Option<Self> {
        let horizon = now.saturating_add(1);
        let floor = |t: i64| t.div_euclid(DAY_MS) * DAY_MS;
        // The whole days inside the range: [d0, d1).
        let d0 = since.map_or(i64::MIN, |s| {
            if s.rem_euclid(DAY_MS) == 0 {
                s
            } else {
                floor(s) + DAY_MS
            }
        });
        let end = until.map(|u| u.saturating_add(1));
        let d1 = end.map_or(i64::MAX, floor);
        // No day boundary inside (`d1 == d0`: one midnight, each side taken from it).
        if d1 < d0 {
            return None;
        }
        let mut plan = DayPlan {
            from: d0,
            to: d1,
            edges: Vec::new(),
        };
        if let Some(s) = since.filter(|s| *s != d0) {
            let own = std::cmp::min(d0, std::cmp::min(end.unwrap_or(i64::MAX), horizon)) - s;
            if s - (d0 - DAY_MS) < own {
                plan.from = d0 - DAY_MS;
                plan.edges.push((d0 - DAY_MS, s, -1));
            } else {
                plan.edges.push((s, d0, 1));
            }
        }
        if let Some(e) = end.filter(|e| *e != d1) {
            if std::cmp::min(d1 + DAY_MS, horizon) - e < e - d1 {
                plan.to = d1 + DAY_MS;
                plan.edges.push((e, d1 + DAY_MS, -1));
            } else {
                plan.edges.push((d1, e, 1));
            }
        }
        Some(plan)
    }

    /// The rollup rows that sum the whole days `[from, to)`: the whole weeks among them as
    /// week rows, and the days left at each side as day rows, either added (the days before
    /// the first whole week) or, when fewer, the side's week taken whole and the days outside
    /// the range subtracted. A 90-day range sums 13 weeks and at most three days a side
    /// instead of 90 days (a week holds about a sixth of the rows of its seven days).
    fn segments(&self) -> Vec<Segment> {
        let (from, to) = (self.from, self.to);
        let floor = |t: i64| t.div_euclid(WEEK_MS) * WEEK_MS;
        let ceil = |t: i64| {
            if t.rem_euclid(WEEK_MS) == 0 {
                t
            } else {
                floor(t) + WEEK_MS
            }
        };
        let days = |from: i64, to: i64, sign: i64| Segment {
            span: DAY_MS,
            from,
            to,
            sign,
        };
        // The week the range's weeks begin and end at: the nearer week boundary.
        let a = if from == i64::MIN {
            from
        } else if ceil(from) - from <= from - floor(from) {
            ceil(from)
        } else {
            floor(from)
        };
        let b = if to == i64::MAX {
            to
        } else if to - floor(to) <= ceil(to) - to {
            floor(to)
        } else {
            ceil(to)
        };
        if a >= b {
            return vec![days(from, to, 1)];
        }
        let mut out = vec![Segment {
            span: WEEK_MS,
            from: a,
            to: b,
            sign: 1,
        }];
        if a > from {
            out.push(days(from, a, 1));
        } else if a < from {
            out.push(days(a, from, -1));
        }
        if b < to {
            out.push(days(b, to, 1));
        } else if b > to {
            out.push(days(to, b, -1));
        }
        out
    }
}

/// The filter `q` in `scope` without its time bounds, within `[start, end)`.
fn edge_filter(
    b: DbBackend,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
    start: i64,
    end: i64,
) -> DomainResult<Condition> {
    use audit_events::Column as C;
    let untimed = crate::dto::AuditQuery {
        since: None,
        until: None,
        range: None,
        ..q.clone()
    };
    Ok(filter(b, &untimed, scope, now)?
        .add(C::At.gte(start))
        .add(C::At.lt(end)))
}

/// The facets of `q` from the rollup (and the events at the edges of its range), or `None`
/// when the rollup cannot answer it (see the module's documentation).
pub async fn facets_from_rollup(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<Option<crate::dto::AuditFacets>> {
    let b = db.get_database_backend();
    // Validates the filter first: a bad one is refused, whoever answers it.
    filter(b, q, scope, now)?;
    let Some(rolled) = rolled(db, q, scope, now).await? else {
        return Ok(None);
    };
    let (since, until) = time_bounds(q, now)?;
    let Some(plan) = DayPlan::new(since, until, now.millis()) else {
        return Ok(None);
    };
    consistent(db, |counted| {
        facets_counted(db, q, now, &rolled, &plan, counted)
    })
    .await
}

/// Run `read` (given the last event the rollup counts) until no catch-up moved the rollup
/// while it ran, so that what it read from the rollup and from the events after it fit
/// together; `None` (count the events) if a catch-up moved it three times.
async fn consistent<T, F, Fut>(db: &DatabaseConnection, read: F) -> DomainResult<Option<T>>
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = DomainResult<T>>,
{
    for _ in 0..3 {
        let counted = counted_through(db).await?;
        let answer = read(counted).await?;
        if counted_through(db).await? == counted {
            return Ok(Some(answer));
        }
    }
    Ok(None)
}

/// [`facets_from_rollup`] with the rollup holding the events up to `counted`.
async fn facets_counted(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    now: Timestamp,
    rolled: &Rolled,
    plan: &DayPlan,
    counted: i64,
) -> DomainResult<crate::dto::AuditFacets> {
    use audit_events::Column as C;
    let b = db.get_database_backend();
    // What is counted from the events: the edges (within the part of the scope the rollup
    // holds, among the events it holds), the events it does not hold yet, and the reader's
    // own activity outside their projects.
    let mut scans = Vec::new();
    for &(start, end, sign) in &plan.edges {
        let edge = edge_filter(b, q, &rolled.held, now, start, end)?.add(counted_by(counted));
        scans.push((edge, sign));
    }
    scans.push((filter(b, q, &rolled.held, now)?.add(C::Seq.gt(counted)), 1));
    if let Some(own) = &rolled.own {
        scans.push((own.clone(), 1));
    }
    // The scans run beside the rollup's read, each on a connection of its own (a range in the
    // past has two edges: two passes over up to twelve hours of events each).
    let mut tasks = tokio::task::JoinSet::new();
    for (cond, sign) in scans {
        let db = db.clone();
        tasks.spawn(async move {
            let mut t = FacetTally::default();
            scan_counts(&db, cond, sign, &mut t).await.map(|()| t)
        });
    }
    let mut tally = FacetTally::default();
    // Kinds and outcomes from the same pass: the total's rows (`dim = ''`) grouped by them.
    let (k, o) = (
        "CASE WHEN dim = '' THEN kind ELSE '' END",
        "CASE WHEN dim = '' THEN outcome ELSE '' END",
    );
    let rows = rollup_rows(
        db,
        &format!("dim, val, {k} AS k, {o} AS o, CAST(SUM(n) AS BIGINT) AS n"),
        "",
        &format!("dim, val, {k}, {o}"),
        &plan.segments(),
        rolled,
    )
    .await?;
    for r in rows {
        let dim: String = r.try_get("", "dim")?;
        let val: String = r.try_get("", "val")?;
        let n: i64 = r.try_get("", "n")?;
        if dim.is_empty() {
            *tally
                .kinds_outcomes
                .entry((true, r.try_get("", "k")?))
                .or_default() += n;
            *tally
                .kinds_outcomes
                .entry((false, r.try_get("", "o")?))
                .or_default() += n;
        }
        *tally.dims.entry((dim, val)).or_default() += n;
    }
    while let Some(done) = tasks.join_next().await {
        let scanned = done.map_err(|e| {
            crate::DomainError::Internal(format!("counting an edge's events failed: {e}"))
        })??;
        for (k, n) in scanned.dims {
            *tally.dims.entry(k).or_default() += n;
        }
        for (k, n) in scanned.kinds_outcomes {
            *tally.kinds_outcomes.entry(k).or_default() += n;
        }
    }
    let mut lists: HashMap<String, Vec<crate::dto::FacetCount>> = HashMap::new();
    let mut total = 0;
    for ((dim, value), count) in tally.dims {
        let Ok(count @ 1..) = u64::try_from(count) else {
            continue;
        };
        if dim.is_empty() {
            total += count;
        } else {
            lists
                .entry(dim)
                .or_default()
                .push(crate::dto::FacetCount { value, count });
        }
    }
    let mut take = |dim: &str| {
        let mut l = lists.remove(dim).unwrap_or_default();
        l.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        l.truncate(crate::dto::AuditFacets::TOP as usize);
        l
    };
    let (kinds, outcomes) = kinds_and_outcomes(tally.kinds_outcomes);
    Ok(crate::dto::AuditFacets {
        total,
        actors: take("actor"),
        kinds,
        clusters: take("cluster"),
        namespaces: take("namespace"),
        verbs: take("verb"),
        outcomes,
    })
}

/// The kind and outcome facets from their counts (`(true, kind)`, `(false, outcome)`).
fn kinds_and_outcomes(
    by: HashMap<(bool, String), i64>,
) -> (Vec<crate::dto::FacetCount>, Vec<crate::dto::FacetCount>) {
    let mut kinds = Vec::new();
    let mut outcomes = Vec::new();
    for ((is_kind, value), count) in by {
        let Ok(count @ 1..) = u64::try_from(count) else {
            continue;
        };
        let f = crate::dto::FacetCount { value, count };
        if is_kind {
            kinds.push(f)
        } else {
            outcomes.push(f)
        }
    }
    for l in [&mut kinds, &mut outcomes] {
        l.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        l.truncate(crate::dto::AuditFacets::TOP as usize);
    }
    (kinds, outcomes)
}

/// The time of the first and of the last event matching `cond` (a filter with no start; at
/// most `until`), found through the rollup: its first and last hours holding a matching event,
/// then the exact times inside those two hours from the events (the `at` index), so that a
/// broad filter's histogram does not read every matching event to learn where it begins (the
/// reader's own activity outside their projects, if any, is read from the events).
/// `Ok(None)` when the rollup cannot answer (the caller reads the events);
/// `Ok(Some(None))` when nothing matches.
pub(crate) async fn bounds(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    cond: &Condition,
    until: Option<i64>,
    now: Timestamp,
) -> DomainResult<Option<Option<(i64, i64)>>> {
    use sea_orm::sea_query::Expr;
    use sea_orm::{EntityTrait, QuerySelect};
    let b = db.get_database_backend();
    let Some(rolled) = rolled(db, q, scope, now).await? else {
        return Ok(None);
    };
    // Read before the rollup: every event up to it is there (a later catch-up only adds),
    // the ones after it are read from the events.
    let counted = counted_through(db).await?;
    let mut values: Vec<Value> = Vec::new();
    let mut until_sql = String::new();
    if let Some(u) = until {
        values.push(u.into());
        until_sql = format!(" AND t <= {}", placeholder(b, 1));
    }
    let (conds, more) = rolled.sql(b, values.len());
    values.extend(more);
    let sql = format!(
        "SELECT MIN(t) AS first, MAX(t) AS last FROM audit_rollup \
         WHERE span = {HOUR_MS} AND dim = '' AND n > 0{until_sql}{conds}"
    );
    let Some(row) = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?
    else {
        return Ok(None);
    };
    let at = || Expr::col(audit_events::Column::At);
    let held = match (
        row.try_get::<Option<i64>>("", "first")?,
        row.try_get::<Option<i64>>("", "last")?,
    ) {
        (Some(first_hour), Some(last_hour)) => {
            let edge = |hour: i64, column: sea_orm::sea_query::SimpleExpr| {
                audit_events::Entity::find()
                    .select_only()
                    .column_as(column, "at")
                    .filter(
                        cond.clone()
                            .add(audit_events::Column::At.gte(hour))
                            .add(audit_events::Column::At.lt(hour + HOUR_MS)),
                    )
                    .into_tuple::<Option<i64>>()
                    .one(db)
            };
            let (first, last) =
                tokio::try_join!(edge(first_hour, at().min()), edge(last_hour, at().max()))?;
            match (first.flatten(), last.flatten()) {
                (Some(f), Some(l)) => Some((f, std::cmp::max(l, f))),
                // The rollup disagrees with the events (it never should): read the events.
                _ => return Ok(None),
            }
        }
        _ => None,
    };
    // The events the rollup does not hold: those after it, the reader's own activity outside
    // their projects.
    let mut rest = Condition::any()
        .add(filter(b, q, &rolled.held, now)?.add(audit_events::Column::Seq.gt(counted)));
    if let Some(own) = &rolled.own {
        rest = rest.add(own.clone());
    }
    let mut rest = Condition::all().add(rest);
    if let Some(u) = until {
        rest = rest.add(audit_events::Column::At.lte(u));
    }
    let rest = match audit_events::Entity::find()
        .select_only()
        .column_as(at().min(), "first")
        .column_as(at().max(), "last")
        .filter(rest)
        .into_tuple::<(Option<i64>, Option<i64>)>()
        .one(db)
        .await?
    {
        Some((Some(f), Some(l))) => Some((f, l)),
        _ => None,
    };
    Ok(Some(match (held, rest) {
        (Some((f1, l1)), Some((f2, l2))) => Some((std::cmp::min(f1, f2), std::cmp::max(l1, l2))),
        (one, None) | (None, one) => one,
    }))
}

/// The histogram's counts (bucket, outcome, events) from the rollup's hourly totals for the
/// whole hours of `[since, until]` and from the events at its edges; `None` when the rollup
/// cannot answer (the filter, or buckets that are not whole hours).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn histogram_counts(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    since: i64,
    until: i64,
    start: i64,
    width: i64,
    now: Timestamp,
) -> DomainResult<Option<Vec<(i64, String, i64)>>> {
    let Some(rolled) = rolled(db, q, scope, now).await? else {
        return Ok(None);
    };
    if width % HOUR_MS != 0 || start % HOUR_MS != 0 {
        return Ok(None);
    }
    let h0 = since.div_euclid(HOUR_MS) * HOUR_MS
        + if since.rem_euclid(HOUR_MS) == 0 {
            0
        } else {
            HOUR_MS
        };
    let h1 = (until + 1).div_euclid(HOUR_MS) * HOUR_MS;
    if h1 <= h0 {
        return Ok(None);
    }
    consistent(db, |counted| {
        histogram_counted(
            db,
            q,
            [since, h0, h1, until],
            start,
            width,
            now,
            &rolled,
            counted,
        )
    })
    .await
}

/// [`histogram_counts`] with the rollup holding the events up to `counted`.
#[allow(clippy::too_many_arguments)]
async fn histogram_counted(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    [since, h0, h1, until]: [i64; 4],
    start: i64,
    width: i64,
    now: Timestamp,
    rolled: &Rolled,
    counted: i64,
) -> DomainResult<Vec<(i64, String, i64)>> {
    let b = db.get_database_backend();
    let rows = rollup_rows(
        db,
        "t, outcome, CAST(SUM(n) AS BIGINT) AS n",
        "dim = ''",
        "t, outcome",
        &[Segment {
            span: HOUR_MS,
            from: h0,
            to: h1,
            sign: 1,
        }],
        rolled,
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let t: i64 = r.try_get("", "t")?;
        out.push((
            (t - start) / width,
            r.try_get("", "outcome")?,
            r.try_get("", "n")?,
        ));
    }
    use audit_events::Column as C;
    // The edges within the part of the scope the rollup holds, among the events it holds;
    // the events it does not hold yet; the reader's own activity outside their projects.
    let held = filter(b, q, &rolled.held, now)?;
    let counted_held = held.clone().add(counted_by(counted));
    // Each edge bounded on both sides, even where the filter has no start or end (`since`
    // is then its first event): with one side only, SQLite preferred any equality index
    // (`kind = …`: every sign-in, 180 ms) to the time index's few rows (under 1 ms).
    let mut scans = vec![
        counted_held.clone().add(C::At.gte(since)).add(C::At.lt(h0)),
        counted_held.add(C::At.gte(h1)).add(C::At.lte(until)),
        held.add(C::Seq.gt(counted)),
    ];
    if let Some(own) = &rolled.own {
        scans.push(own.clone());
    }
    for cond in scans {
        out.extend(super::histogram_scan(db, cond, start, width).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;
    const D: i64 = DAY_MS;
    /// Long after every range below.
    const NOW: i64 = 100 * D;

    #[test]
    fn whole_weeks_are_summed_as_weeks_and_the_nearer_boundary_wins() {
        const W: i64 = WEEK_MS;
        let plan = |from: i64, to: i64| {
            DayPlan {
                from,
                to,
                edges: Vec::new(),
            }
            .segments()
        };
        let seg = |span, from, to, sign| Segment {
            span,
            from,
            to,
            sign,
        };
        // Everything: weeks only.
        assert_eq!(
            plan(i64::MIN, i64::MAX),
            vec![seg(W, i64::MIN, i64::MAX, 1)]
        );
        // A day into a week: the week whole, that day subtracted.
        assert_eq!(
            plan(10 * W + D, i64::MAX),
            vec![seg(W, 10 * W, i64::MAX, 1), seg(D, 10 * W, 10 * W + D, -1)]
        );
        // Five days into a week: its last two days added to the weeks after.
        assert_eq!(
            plan(10 * W + 5 * D, i64::MAX),
            vec![
                seg(W, 11 * W, i64::MAX, 1),
                seg(D, 10 * W + 5 * D, 11 * W, 1)
            ]
        );
        // Both ends: three days subtracted before, three after.
        assert_eq!(
            plan(10 * W + 3 * D, 12 * W + 4 * D),
            vec![
                seg(W, 10 * W, 13 * W, 1),
                seg(D, 10 * W, 10 * W + 3 * D, -1),
                seg(D, 12 * W + 4 * D, 13 * W, -1)
            ]
        );
        // Whole weeks exactly; up to a day into the last week.
        assert_eq!(plan(10 * W, 12 * W), vec![seg(W, 10 * W, 12 * W, 1)]);
        assert_eq!(
            plan(i64::MIN, 12 * W + D),
            vec![seg(W, i64::MIN, 12 * W, 1), seg(D, 12 * W, 12 * W + D, 1)]
        );
        // Inside one week, or no whole week nearer than its days: days only.
        assert_eq!(
            plan(10 * W + D, 10 * W + 3 * D),
            vec![seg(D, 10 * W + D, 10 * W + 3 * D, 1)]
        );
        // Every segment sums to the range: days counted with their sign cover it once.
        for (from, to) in [(3 * W + 2 * D, 9 * W + 5 * D), (4 * W + 6 * D, 5 * W + D)] {
            let mut covered = vec![0i64; 20 * 7];
            for s in plan(from, to) {
                for d in (s.from / D)..(s.to / D) {
                    covered[d as usize] += s.sign;
                }
            }
            for (d, c) in covered.iter().enumerate() {
                let inside = (from / D..to / D).contains(&(d as i64));
                assert_eq!(*c, i64::from(inside), "day {d} of [{from}, {to})");
            }
        }
    }

    #[test]
    fn an_edge_is_counted_from_the_shorter_side_of_its_day() {
        // Since 05:00 on day 10: the day whole, its first five hours subtracted.
        let p = DayPlan::new(Some(10 * D + 5 * H), None, NOW).unwrap();
        assert_eq!(
            p,
            DayPlan {
                from: 10 * D,
                to: i64::MAX,
                edges: vec![(10 * D, 10 * D + 5 * H, -1)]
            }
        );
        // Since 20:00: its last four hours added to the days after.
        let p = DayPlan::new(Some(10 * D + 20 * H), None, NOW).unwrap();
        assert_eq!(p.from, 11 * D);
        assert_eq!(p.edges, vec![(10 * D + 20 * H, 11 * D, 1)]);
        // Until 18:59:59.999 on day 20 (the end is inclusive): the day whole, what follows
        // subtracted; until 02:00: what precedes added.
        let p = DayPlan::new(Some(12 * D), Some(20 * D + 19 * H - 1), NOW).unwrap();
        assert_eq!(
            p,
            DayPlan {
                from: 12 * D,
                to: 21 * D,
                edges: vec![(20 * D + 19 * H, 21 * D, -1)]
            }
        );
        let p = DayPlan::new(None, Some(20 * D + 2 * H), NOW).unwrap();
        assert_eq!(p.from, i64::MIN);
        assert_eq!(p.to, 20 * D);
        assert_eq!(p.edges, vec![(20 * D, 20 * D + 2 * H + 1, 1)]);
        // Whole days only: no edge.
        let p = DayPlan::new(Some(3 * D), Some(5 * D - 1), NOW).unwrap();
        assert_eq!((p.from, p.to, p.edges.len()), (3 * D, 5 * D, 0));
        // The last 15 minutes, at 08:45: what lies before them today is longer than what
        // lies after them up to now, so they are counted from their own events (the rest of
        // the day has none yet).
        let now = 10 * D + 8 * H + 45 * 60_000;
        let p = DayPlan::new(Some(now - 15 * 60_000), None, now).unwrap();
        assert_eq!(p.from, 11 * D);
        assert_eq!(p.edges, vec![(now - 15 * 60_000, 11 * D, 1)]);
        // Until a time still to come: its day whole, nothing to subtract after now.
        let p = DayPlan::new(Some(3 * D), Some(10 * D + 20 * H), now).unwrap();
        assert_eq!(p.to, 11 * D);
        assert_eq!(p.edges, vec![(10 * D + 20 * H + 1, 11 * D, -1)]);
        // A day across midnight, no whole day in it: each side from its nearer boundary (its
        // day whole and one hour subtracted; one hour added), two scans of an hour, not one
        // of a day.
        assert_eq!(
            DayPlan::new(Some(3 * D + H), Some(4 * D + H), NOW),
            Some(DayPlan {
                from: 3 * D,
                to: 4 * D,
                edges: vec![(3 * D, 3 * D + H, -1), (4 * D, 4 * D + H + 1, 1)]
            })
        );
        // Inside one day: the events are counted.
        assert_eq!(
            DayPlan::new(Some(3 * D + H), Some(3 * D + 2 * H), NOW),
            None
        );
    }
}
