//! Filling a new slice of the audit rollup from the events it already counts (`seq` up to
//! `audit_rollup_state.seq`; the catch-up counts the later ones in every slice), 100,000
//! events per statement so that memory stays bounded on a large log.

use sea_orm_migration::prelude::*;

const CHUNK: i64 = 100_000;

/// Run `fill_sql(from, to)` (the slice's rows of the events with `from < seq <= to`) over
/// every counted event, a chunk at a time, then refresh the planner's statistics.
pub(crate) async fn from_counted_events(
    m: &SchemaManager<'_>,
    fill_sql: fn(i64, i64) -> String,
) -> Result<(), DbErr> {
    let db = m.get_connection();
    let one = |sql: &'static str| async move {
        let row = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await?;
        match row {
            Some(row) => row.try_get::<Option<i64>>("", "s"),
            None => Ok(None),
        }
    };
    let counted = one("SELECT CAST(seq AS BIGINT) AS s FROM audit_rollup_state WHERE id = 1")
        .await?
        .unwrap_or(0);
    let first = one("SELECT CAST(MIN(seq) AS BIGINT) AS s FROM audit_events").await?;
    if let Some(first) = first {
        let mut from = first - 1;
        while from < counted {
            let to = std::cmp::min(from + CHUNK, counted);
            db.execute_unprepared(&fill_sql(from, to)).await?;
            from = to;
        }
    }
    db.execute_unprepared("ANALYZE audit_rollup").await?;
    Ok(())
}
