//! Where each hour's events lie in the log: `audit_hour_seqs` holds, per hour `t` (ms, a
//! multiple of an hour), the lowest and highest `seq` of the events of that hour the rollup
//! has counted (`warden_domain::audit::rollup::seq_window`).
//!
//! The audit list is read newest first, by `seq`. A filter with a time range that the newest
//! events are not in (a day last month, or the last page of the last 24 hours) had PostgreSQL
//! walk the primary key backwards from the newest event, or from the cursor, through every
//! event outside the range (1.4 s for the first page of a day 30 days back, 4.8 s for the
//! last page of the last 24 hours, at 10 million events; minutes with a cold cache): it
//! supposes that the time and the `seq` of an event are unrelated. With the `seq` range that
//! holds the hours of the time range beside it, the walk starts and stops at the range.
//!
//! Filled here from the events the rollup already counts (`seq` up to
//! `audit_rollup_state.seq`; the catch-up keeps it from there), one grouped pass.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let table = "CREATE TABLE audit_hour_seqs (t BIGINT NOT NULL PRIMARY KEY, \
                     lo BIGINT NOT NULL, hi BIGINT NOT NULL)";
        let create = match db.get_database_backend() {
            DbBackend::Postgres => table.to_owned(),
            _ => format!("{table} WITHOUT ROWID"),
        };
        db.execute_unprepared(&create).await?;
        db.execute_unprepared(
            "INSERT INTO audit_hour_seqs (t, lo, hi) \
             SELECT at - (at % 3600000), MIN(seq), MAX(seq) FROM audit_events \
             WHERE seq <= (SELECT seq FROM audit_rollup_state WHERE id = 1) \
             GROUP BY at - (at % 3600000)",
        )
        .await?;
        db.execute_unprepared("ANALYZE audit_hour_seqs").await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP TABLE audit_hour_seqs")
            .await?;
        Ok(())
    }
}
