//! Pre-counted audit events (`audit_rollup`, migration `m20261210_000001_audit_rollup`), so
//! that facets and the histogram of a broad filter do not count every matching row.
//!
//! A rollup row counts the events of one `kind`, `outcome` and `disc` (1 for a Kubernetes
//! request that names no resource: discovery, version, health) per time slot, for one
//! dimension `dim`: `''` (every event, per **hour**: the histogram and the total) or `actor`,
//! `cluster`, `namespace`, `verb` (the facets, per **day**; the value in `val`, events without
//! one not counted, as the facets do). It is kept in the writer's transaction: every append
//! adds its rows ([`add_after`]), retention subtracts what it deletes ([`remove_through`]).
//!
//! A filter that names only a time range, `kind`, `outcome` and `discovery`, read by someone
//! who sees everything, is answered from the rollup for the whole days (facets) or hours
//! (histogram, when its buckets are whole hours) inside its range, and from the events for the
//! partial slots at its edges; anything else is counted from the events. The answer is exact
//! either way (the integration test `audit_rollup_answers_what_a_scan_answers` compares them).

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

/// The rollup rows of the events matching `where_sql` (`t`, `kind`, `outcome`, `disc`, `dim`,
/// `val`; one row per event and dimension, `val` NULL where the event has no value).
fn source(where_sql: &str) -> String {
    format!(
        "SELECT CASE WHEN d.dim = '' THEN at - (at % {HOUR_MS}) ELSE at - (at % {DAY_MS}) END AS t, \
         kind, outcome, \
         CASE WHEN kind = 'kube_api' AND resource_kind IS NULL THEN 1 ELSE 0 END AS disc, \
         d.dim AS dim, \
         CASE d.dim WHEN 'actor' THEN actor_name WHEN 'cluster' THEN cluster \
         WHEN 'namespace' THEN namespace \
         WHEN 'verb' THEN (CASE WHEN kind = 'kube_api' AND action LIKE 'kube.%' THEN {VERB_SQL} END) \
         ELSE '' END AS val \
         FROM audit_events CROSS JOIN (SELECT '' AS dim UNION ALL SELECT 'actor' UNION ALL \
         SELECT 'cluster' UNION ALL SELECT 'namespace' UNION ALL SELECT 'verb') d \
         WHERE {where_sql}"
    )
}

/// Add (`sign` 1) or subtract (`sign` -1) the events matching `where_sql` to the rollup.
pub(crate) fn upsert_sql(where_sql: &str, sign: i8) -> String {
    let minus = if sign < 0 { "-" } else { "" };
    format!(
        "INSERT INTO audit_rollup (t, kind, outcome, disc, dim, val, n) \
         SELECT t, kind, outcome, disc, dim, val, {minus}COUNT(*) FROM ({src}) s \
         WHERE val IS NOT NULL GROUP BY t, kind, outcome, disc, dim, val \
         ON CONFLICT (t, kind, outcome, disc, dim, val) DO UPDATE SET n = audit_rollup.n + excluded.n",
        src = source(where_sql)
    )
}

fn placeholder(backend: DbBackend, i: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${i}"),
        _ => "?".to_owned(),
    }
}

/// Count the rows appended after `seq` (inside the appending transaction, the chain locked:
/// every row after it is this append's).
pub(crate) async fn add_after<C: ConnectionTrait>(tx: &C, seq: i64) -> DomainResult<()> {
    let b = tx.get_database_backend();
    let sql = upsert_sql(&format!("seq > {}", placeholder(b, 1)), 1);
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        sql,
        [seq.into()],
    ))
    .await?;
    Ok(())
}

/// Uncount the rows up to `seq` (retention, before it deletes them, in its transaction).
pub(crate) async fn remove_through<C: ConnectionTrait>(tx: &C, seq: i64) -> DomainResult<()> {
    let b = tx.get_database_backend();
    let sql = upsert_sql(&format!("seq <= {}", placeholder(b, 1)), -1);
    tx.execute_raw(sea_orm::Statement::from_sql_and_values(
        b,
        sql,
        [seq.into()],
    ))
    .await?;
    tx.execute_unprepared("DELETE FROM audit_rollup WHERE n <= 0")
        .await?;
    Ok(())
}

/// The rollup's own conditions for a filter it can answer (`kind`, `outcome`, `discovery`),
/// or `None` when the filter or the scope names anything else.
fn rollup_filter(
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
) -> Option<Vec<(&'static str, Value)>> {
    let set = |v: &Option<String>| v.as_ref().is_some_and(|s| !s.is_empty());
    if !scope.all
        || set(&q.actor)
        || set(&q.project)
        || set(&q.cluster)
        || set(&q.namespace)
        || set(&q.verb)
        || set(&q.resource)
        || set(&q.source_ip)
        || set(&q.action)
        || set(&q.q)
        || q.status.is_some()
    {
        return None;
    }
    let mut conds = Vec::new();
    if let Some(k) = q.kind.as_ref().filter(|k| !k.is_empty()) {
        conds.push(("kind", Value::from(k.clone())));
    }
    if let Some(o) = q.outcome.as_ref().filter(|o| !o.is_empty()) {
        conds.push(("outcome", Value::from(o.clone())));
    }
    if q.discovery == Some(false) {
        conds.push(("disc", Value::from(0i32)));
    }
    Some(conds)
}

/// `SELECT {select} FROM audit_rollup WHERE t in [from, to) AND {dim} AND the filter's
/// conditions GROUP BY {group}`.
async fn rollup_rows(
    db: &DatabaseConnection,
    select: &str,
    dim_cond: &str,
    group: &str,
    from: i64,
    to: i64,
    conds: &[(&'static str, Value)],
) -> DomainResult<Vec<sea_orm::QueryResult>> {
    let b = db.get_database_backend();
    let mut sql = format!(
        "SELECT {select} FROM audit_rollup WHERE t >= {} AND t < {}",
        placeholder(b, 1),
        placeholder(b, 2)
    );
    let mut values: Vec<Value> = vec![from.into(), to.into()];
    for (col, v) in conds {
        values.push(v.clone());
        sql.push_str(&format!(" AND {col} = {}", placeholder(b, values.len())));
    }
    if !dim_cond.is_empty() {
        sql.push_str(&format!(" AND {dim_cond}"));
    }
    sql.push_str(&format!(" GROUP BY {group}"));
    Ok(db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?)
}

/// Per dimension and value, how many events match `cond` (the edges of a range).
async fn scan_counts(
    db: &DatabaseConnection,
    cond: Condition,
    out: &mut HashMap<(String, String), u64>,
) -> DomainResult<()> {
    use sea_orm::{EntityTrait, QuerySelect, QueryTrait};
    let b = db.get_database_backend();
    let inner = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .filter(cond)
        .into_query();
    let (inner, values) = match b {
        DbBackend::Postgres => inner.build(sea_orm::sea_query::PostgresQueryBuilder),
        _ => inner.build(sea_orm::sea_query::SqliteQueryBuilder),
    };
    let sql = format!(
        "SELECT dim, val, COUNT(*) AS n FROM ({}) s WHERE val IS NOT NULL GROUP BY dim, val",
        source(&format!("audit_events.seq IN ({inner})"))
    );
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?;
    for r in rows {
        let dim: String = r.try_get("", "dim")?;
        let val: String = r.try_get("", "val")?;
        let n: i64 = r.try_get("", "n")?;
        *out.entry((dim, val)).or_default() += std::cmp::max(n, 0) as u64;
    }
    Ok(())
}

/// The facets of `q` from the rollup (and the events at the edges of its range), or `None`
/// when the rollup cannot answer it (see the module's documentation).
pub async fn facets_from_rollup(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<Option<crate::dto::AuditFacets>> {
    let cond = filter(db.get_database_backend(), q, scope, now)?;
    let Some(conds) = rollup_filter(q, scope) else {
        return Ok(None);
    };
    let (since, until) = time_bounds(q, now)?;
    // The whole days inside the range: [d0, d1).
    let d0 = since.map_or(i64::MIN, |s| {
        s.div_euclid(DAY_MS) * DAY_MS + if s.rem_euclid(DAY_MS) == 0 { 0 } else { DAY_MS }
    });
    let d1 = until.map_or(i64::MAX, |u| (u + 1).div_euclid(DAY_MS) * DAY_MS);
    if d1 <= d0 {
        return Ok(None);
    }
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    let rows = rollup_rows(
        db,
        "dim, val, CAST(SUM(n) AS BIGINT) AS n",
        "",
        "dim, val",
        d0,
        d1,
        &conds,
    )
    .await?;
    for r in rows {
        let dim: String = r.try_get("", "dim")?;
        let val: String = r.try_get("", "val")?;
        let n: i64 = r.try_get("", "n")?;
        *counts.entry((dim, val)).or_default() += std::cmp::max(n, 0) as u64;
    }
    use audit_events::Column as C;
    if since.is_some() {
        scan_counts(db, cond.clone().add(C::At.lt(d0)), &mut counts).await?;
    }
    if until.is_some() {
        scan_counts(db, cond.add(C::At.gte(d1)), &mut counts).await?;
    }
    let mut lists: HashMap<String, Vec<crate::dto::FacetCount>> = HashMap::new();
    let mut total = 0;
    for ((dim, value), count) in counts {
        if count == 0 {
            continue;
        }
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
    // Kinds and outcomes: from the total's rows, grouped by the key's columns.
    let (kinds, outcomes) = kinds_and_outcomes(
        db,
        &conds,
        d0,
        d1,
        since.is_some(),
        until.is_some(),
        q,
        scope,
        now,
    )
    .await?;
    Ok(Some(crate::dto::AuditFacets {
        total,
        actors: take("actor"),
        kinds,
        clusters: take("cluster"),
        namespaces: take("namespace"),
        verbs: take("verb"),
        outcomes,
    }))
}

/// The kind and outcome facets: the rollup's hourly totals grouped by kind and by outcome,
/// plus the edges counted from the events.
#[allow(clippy::too_many_arguments)]
async fn kinds_and_outcomes(
    db: &DatabaseConnection,
    conds: &[(&'static str, Value)],
    d0: i64,
    d1: i64,
    left: bool,
    right: bool,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> DomainResult<(Vec<crate::dto::FacetCount>, Vec<crate::dto::FacetCount>)> {
    use audit_events::Column as C;
    use sea_orm::{EntityTrait, QuerySelect};
    let mut by: HashMap<(bool, String), u64> = HashMap::new();
    let rows = rollup_rows(
        db,
        "kind, outcome, CAST(SUM(n) AS BIGINT) AS n",
        "dim = ''",
        "kind, outcome",
        d0,
        d1,
        conds,
    )
    .await?;
    let mut add = |kind: String, outcome: String, n: i64| {
        let n = std::cmp::max(n, 0) as u64;
        *by.entry((true, kind)).or_default() += n;
        *by.entry((false, outcome)).or_default() += n;
    };
    for r in rows {
        add(
            r.try_get("", "kind")?,
            r.try_get("", "outcome")?,
            r.try_get("", "n")?,
        );
    }
    let cond = filter(db.get_database_backend(), q, scope, now)?;
    let mut edges = Vec::new();
    if left {
        edges.push(cond.clone().add(C::At.lt(d0)));
    }
    if right {
        edges.push(cond.add(C::At.gte(d1)));
    }
    for c in edges {
        let rows: Vec<(String, String, i64)> = audit_events::Entity::find()
            .select_only()
            .column(C::Kind)
            .column(C::Outcome)
            .column_as(sea_orm::sea_query::Expr::col(C::Seq).count(), "n")
            .filter(c)
            .group_by(C::Kind)
            .group_by(C::Outcome)
            .into_tuple()
            .all(db)
            .await?;
        for (k, o, n) in rows {
            add(k, o, n);
        }
    }
    let mut kinds = Vec::new();
    let mut outcomes = Vec::new();
    for ((is_kind, value), count) in by {
        if count == 0 {
            continue;
        }
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
    Ok((kinds, outcomes))
}

/// The time of the first and of the last event matching `cond` (a filter with no start; at
/// most `until`), found through the rollup: its first and last hours holding a matching event,
/// then the exact times inside those two hours from the events (the `at` index), so that a
/// broad filter's histogram does not read every matching event to learn where it begins.
/// `Ok(None)` when the rollup cannot answer (the caller reads the events);
/// `Ok(Some(None))` when nothing matches.
pub(crate) async fn bounds(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    cond: &Condition,
    until: Option<i64>,
) -> DomainResult<Option<Option<(i64, i64)>>> {
    use sea_orm::sea_query::Expr;
    use sea_orm::{EntityTrait, QuerySelect};
    let Some(conds) = rollup_filter(q, scope) else {
        return Ok(None);
    };
    let b = db.get_database_backend();
    let mut sql =
        "SELECT MIN(t) AS first, MAX(t) AS last FROM audit_rollup WHERE dim = '' AND n > 0"
            .to_owned();
    let mut values: Vec<Value> = Vec::new();
    for (col, v) in &conds {
        values.push(v.clone());
        sql.push_str(&format!(" AND {col} = {}", placeholder(b, values.len())));
    }
    if let Some(u) = until {
        values.push(u.into());
        sql.push_str(&format!(" AND t <= {}", placeholder(b, values.len())));
    }
    let Some(row) = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(b, sql, values))
        .await?
    else {
        return Ok(None);
    };
    let (Some(first_hour), Some(last_hour)) = (
        row.try_get::<Option<i64>>("", "first")?,
        row.try_get::<Option<i64>>("", "last")?,
    ) else {
        return Ok(Some(None));
    };
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
    let at = || Expr::col(audit_events::Column::At);
    let (first, last) =
        tokio::try_join!(edge(first_hour, at().min()), edge(last_hour, at().max()))?;
    Ok(match (first.flatten(), last.flatten()) {
        (Some(f), Some(l)) => Some(Some((f, std::cmp::max(l, f)))),
        // The rollup disagrees with the events (it never should): read the events.
        _ => None,
    })
}

/// The histogram's counts (bucket, outcome, events) from the rollup's hourly totals for the
/// whole hours of `[since, until]` and from the events at its edges; `None` when the rollup
/// cannot answer (the filter, or buckets that are not whole hours).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn histogram_counts(
    db: &DatabaseConnection,
    q: &crate::dto::AuditQuery,
    scope: &AuditScope,
    cond: &Condition,
    since: i64,
    until: i64,
    start: i64,
    width: i64,
) -> DomainResult<Option<Vec<(i64, String, i64)>>> {
    let Some(conds) = rollup_filter(q, scope) else {
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
    let rows = rollup_rows(
        db,
        "t, outcome, CAST(SUM(n) AS BIGINT) AS n",
        "dim = ''",
        "t, outcome",
        h0,
        h1,
        &conds,
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
    out.extend(super::histogram_scan(db, cond.clone().add(C::At.lt(h0)), start, width).await?);
    out.extend(super::histogram_scan(db, cond.clone().add(C::At.gte(h1)), start, width).await?);
    Ok(Some(out))
}
