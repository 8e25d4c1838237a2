//! Pre-counted audit events for facets and the histogram of broad filters
//! (`warden_domain::audit::rollup`, whose documentation says when they are used).
//!
//! `audit_rollup`: per time slot `t` (ms: the hour for `dim = ''`, the day for the other
//! dimensions), `kind`, `outcome`, `disc` (1: a Kubernetes request naming no resource) and
//! dimension (`''`: every event; `actor`, `cluster`, `namespace`, `verb`: the facets, value in
//! `val`), how many events (`n`). The primary key serves both the writer's upsert and the
//! reads, which select a range of `t`. At 1 M events over 90 days it holds a few hundred
//! thousand narrow rows (the actor dimension, per day, is most of them), so a facet of the
//! whole log sums those instead of grouping every event's wide row. Filled here from the events
//! already stored; kept by the writer (each append) and by retention (each delete) in their
//! own transactions.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
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
        m.get_connection().execute_unprepared(&fill_sql()).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("audit_rollup")).to_owned())
            .await
    }
}

/// This table's rows counted from the stored events (also used by the next migration's `down`,
/// which gives this table back).
pub(crate) fn fill_sql() -> String {
    // The same rows the writer adds (`warden_domain::audit::rollup::upsert_sql`).
    let verb = "CASE WHEN resource_kind IN ('pods/exec', 'pods/attach', 'pods/portforward') \
            THEN substr(resource_kind, 6) ELSE substr(action, 6) END";
    format!(
        "INSERT INTO audit_rollup (t, kind, outcome, disc, dim, val, n) \
         SELECT t, kind, outcome, disc, dim, val, COUNT(*) FROM ( \
         SELECT CASE WHEN d.dim = '' THEN at - (at % {HOUR_MS}) ELSE at - (at % {DAY_MS}) END AS t, \
         kind, outcome, \
         CASE WHEN kind = 'kube_api' AND resource_kind IS NULL THEN 1 ELSE 0 END AS disc, \
         d.dim AS dim, \
         CASE d.dim WHEN 'actor' THEN actor_name WHEN 'cluster' THEN cluster \
         WHEN 'namespace' THEN namespace \
         WHEN 'verb' THEN (CASE WHEN kind = 'kube_api' AND action LIKE 'kube.%' THEN {verb} END) \
         ELSE '' END AS val \
         FROM audit_events CROSS JOIN (SELECT '' AS dim UNION ALL SELECT 'actor' UNION ALL \
         SELECT 'cluster' UNION ALL SELECT 'namespace' UNION ALL SELECT 'verb') d) s \
         WHERE val IS NOT NULL GROUP BY t, kind, outcome, disc, dim, val"
    )
}
