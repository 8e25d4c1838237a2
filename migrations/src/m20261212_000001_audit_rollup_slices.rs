//! The audit rollup per **slice** (`warden_domain::audit::rollup`): besides the whole log, the
//! events of each project, cluster, namespace and verb are counted apart, so that the facets
//! and histogram of `?project=`, `?cluster=`, `?namespace=` or `?verb=` sum pre-counted rows
//! instead of counting hundreds of thousands of events (0.9 to 3.3 s at 10 million events on
//! PostgreSQL, measured).
//!
//! `audit_rollup` gains the slice's key before its other columns: `sd` (`''`: every event;
//! `project`, `cluster`, `namespace`, `verb`) and `sv` (the slice's value: the event's project,
//! cluster, namespace; for `verb`, exactly what the filter `?verb=` matches: `exec`, `attach`
//! and `portforward` from a connection's `resource_kind`, any other verb `v` from the action
//! `kube.v`, so a `create` of `pods/exec` is in both `create` and `exec`). The primary key
//! `(sd, sv, t, kind, outcome, disc, dim, val)` serves the upsert and every read (a slice's
//! range of `t`). The table is made anew and filled from the events already stored, 100,000
//! events per statement so that memory stays bounded on a large log (on PostgreSQL with 10
//! million events this migration takes some minutes).
//!
//! The rollup is no longer kept in the appending transaction (the slices made that eight
//! times dearer, measured: 176 ms for a batch of 1,000 events against 22 ms) but caught up
//! after it, in large batches: `audit_rollup_state` (one row, `id` 1) holds `seq`, the last
//! event counted. Reads add what is stored after it from the events themselves.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const CHUNK: i64 = 100_000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("audit_rollup")).to_owned())
            .await?;
        // Every read takes one slice's range of `t`: the rows must lie together, or a read
        // touches every page of the table (measured at 10 million events on PostgreSQL:
        // 1.9 s to sum the whole log's 546,000 rows scattered among 9 million, where reading
        // them from an index that holds them took 0.2 s). SQLite: the table is its primary
        // key's b-tree (`WITHOUT ROWID`); PostgreSQL: the primary key's index also holds `n`,
        // so a read is an index-only scan.
        let db = m.get_connection();
        let columns = "sd VARCHAR(16) NOT NULL, sv TEXT NOT NULL, t BIGINT NOT NULL, \
                       kind VARCHAR(32) NOT NULL, outcome VARCHAR(16) NOT NULL, \
                       disc INTEGER NOT NULL, dim VARCHAR(16) NOT NULL, val TEXT NOT NULL, \
                       n BIGINT NOT NULL";
        let key = "sd, sv, t, kind, outcome, disc, dim, val";
        let create = match db.get_database_backend() {
            sea_orm_migration::sea_orm::DbBackend::Postgres => {
                format!("CREATE TABLE audit_rollup ({columns}, PRIMARY KEY ({key}) INCLUDE (n))")
            }
            _ => {
                format!("CREATE TABLE audit_rollup ({columns}, PRIMARY KEY ({key})) WITHOUT ROWID")
            }
        };
        db.execute_unprepared(&create).await?;
        m.create_table(
            Table::create()
                .table(id("audit_rollup_state"))
                .col(ColumnDef::new(id("id")).integer().not_null().primary_key())
                .col(ColumnDef::new(id("seq")).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        let row = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT CAST(MIN(seq) AS BIGINT) AS lo, CAST(MAX(seq) AS BIGINT) AS hi \
                 FROM audit_events",
            ))
            .await?;
        let stored = match row {
            Some(row) => row
                .try_get::<Option<i64>>("", "lo")?
                .zip(row.try_get::<Option<i64>>("", "hi")?),
            None => None,
        };
        let mut counted = 0;
        if let Some((lo, hi)) = stored {
            // The same rows the catch-up adds (`warden_domain::audit::rollup::upsert_sql`).
            let mut from = lo - 1;
            while from < hi {
                let to = from + CHUNK;
                db.execute_unprepared(&fill_sql(from, to)).await?;
                from = to;
            }
            counted = hi;
        }
        db.execute_unprepared(&format!(
            "INSERT INTO audit_rollup_state (id, seq) VALUES (1, {counted})"
        ))
        .await?;
        // Statistics for the planner on the new table (PostgreSQL's autovacuum then marks
        // its pages visible, which index-only scans need; SQLite reads `sqlite_stat1`).
        db.execute_unprepared("ANALYZE audit_rollup").await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("audit_rollup_state")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(id("audit_rollup")).to_owned())
            .await?;
        m.create_table(
            Table::create()
                .table(id("audit_rollup"))
                .col(ColumnDef::new(id("t")).big_integer().not_null())
                .col(ColumnDef::new(id("kind")).string_len(32).not_null())
                .col(ColumnDef::new(id("outcome")).string_len(16).not_null())
                .col(ColumnDef::new(id("disc")).integer().not_null())
                .col(ColumnDef::new(id("dim")).string_len(16).not_null())
                .col(ColumnDef::new(id("val")).text().not_null())
                .col(ColumnDef::new(id("n")).big_integer().not_null())
                .primary_key(
                    Index::create()
                        .col(id("t"))
                        .col(id("kind"))
                        .col(id("outcome"))
                        .col(id("disc"))
                        .col(id("dim"))
                        .col(id("val")),
                )
                .to_owned(),
        )
        .await?;
        // The previous release trusts its rollup for whole days: give it back its rows.
        m.get_connection()
            .execute_unprepared(&super::m20261210_000001_audit_rollup::fill_sql())
            .await?;
        Ok(())
    }
}

/// Count the events with `from < seq <= to` into the rollup.
fn fill_sql(from: i64, to: i64) -> String {
    let verb = "CASE WHEN resource_kind IN ('pods/exec', 'pods/attach', 'pods/portforward') \
                THEN substr(resource_kind, 6) ELSE substr(action, 6) END";
    format!(
        "INSERT INTO audit_rollup (sd, sv, t, kind, outcome, disc, dim, val, n) \
         SELECT sd, sv, t, kind, outcome, disc, dim, val, COUNT(*) FROM ( \
         SELECT CASE WHEN s.sd = 'verbc' THEN 'verb' ELSE s.sd END AS sd, \
         CASE s.sd WHEN '' THEN '' WHEN 'project' THEN project WHEN 'cluster' THEN cluster \
         WHEN 'namespace' THEN namespace \
         WHEN 'verb' THEN (CASE WHEN substr(action, 1, 5) = 'kube.' \
           AND substr(action, 6) NOT IN ('exec', 'attach', 'portforward') THEN substr(action, 6) END) \
         WHEN 'verbc' THEN (CASE WHEN resource_kind IN ('pods/exec', 'pods/attach', 'pods/portforward') \
           THEN substr(resource_kind, 6) END) END AS sv, \
         CASE WHEN d.dim = '' THEN at - (at % {HOUR_MS}) ELSE at - (at % {DAY_MS}) END AS t, \
         kind, outcome, \
         CASE WHEN kind = 'kube_api' AND resource_kind IS NULL THEN 1 ELSE 0 END AS disc, \
         d.dim AS dim, \
         CASE d.dim WHEN 'actor' THEN actor_name WHEN 'cluster' THEN cluster \
         WHEN 'namespace' THEN namespace \
         WHEN 'verb' THEN (CASE WHEN kind = 'kube_api' AND action LIKE 'kube.%' THEN {verb} END) \
         ELSE '' END AS val \
         FROM audit_events \
         CROSS JOIN (SELECT '' AS dim UNION ALL SELECT 'actor' UNION ALL \
         SELECT 'cluster' UNION ALL SELECT 'namespace' UNION ALL SELECT 'verb') d \
         CROSS JOIN (SELECT '' AS sd UNION ALL SELECT 'project' UNION ALL SELECT 'cluster' \
         UNION ALL SELECT 'namespace' UNION ALL SELECT 'verb' UNION ALL SELECT 'verbc') s \
         WHERE seq > {from} AND seq <= {to}) r \
         WHERE val IS NOT NULL AND sv IS NOT NULL \
         GROUP BY sd, sv, t, kind, outcome, disc, dim, val \
         ON CONFLICT (sd, sv, t, kind, outcome, disc, dim, val) \
         DO UPDATE SET n = audit_rollup.n + excluded.n"
    )
}
