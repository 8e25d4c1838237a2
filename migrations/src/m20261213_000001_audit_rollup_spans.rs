//! The audit rollup per **span** (`warden_domain::audit::rollup`): each row says how long a
//! time slot it counts (`span`, in milliseconds: an hour, a day or a week), so that a broad
//! range sums a week's row where it summed seven days' rows.
//!
//! Measured at 10 million events over 90 days on PostgreSQL: the whole log's facets summed
//! 546,000 day rows (0.4 s, nine tenths of them one row per actor, day, kind and outcome); a
//! week holds about a sixth as many rows as its seven days (the same people act every day), so
//! the same answer sums about 83,000 week rows and at most a few days' rows at the range's
//! edges.
//!
//! Rows: the whole log's total (`dim = ''`) per hour (the histogram, where an event begins),
//! day and week; the facets' dimensions per day and week. The primary key puts `span` before
//! `t`, so a read of one span's range of `t` is one range of the index (SQLite: the table is
//! that b-tree, `WITHOUT ROWID`; PostgreSQL: the index also holds `n`, index-only scans).
//! The table is made anew; its day and week rows are summed from the rows already there (the
//! hour rows of the total, the day rows of the facets), not from the events, so this takes
//! seconds even on a large log, and the rollup still holds exactly the events up to
//! `audit_rollup_state.seq`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;

const COLUMNS: &str = "sd VARCHAR(16) NOT NULL, sv TEXT NOT NULL, span BIGINT NOT NULL, \
                       t BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, \
                       outcome VARCHAR(16) NOT NULL, disc INTEGER NOT NULL, \
                       dim VARCHAR(16) NOT NULL, val TEXT NOT NULL, n BIGINT NOT NULL";
const KEY: &str = "sd, sv, span, t, kind, outcome, disc, dim, val";

/// The previous table (`m20261212_000001_audit_rollup_slices`), for `down`.
const OLD_COLUMNS: &str = "sd VARCHAR(16) NOT NULL, sv TEXT NOT NULL, t BIGINT NOT NULL, \
                           kind VARCHAR(32) NOT NULL, outcome VARCHAR(16) NOT NULL, \
                           disc INTEGER NOT NULL, dim VARCHAR(16) NOT NULL, val TEXT NOT NULL, \
                           n BIGINT NOT NULL";
const OLD_KEY: &str = "sd, sv, t, kind, outcome, disc, dim, val";

/// `CREATE TABLE name (columns, PRIMARY KEY (key))`, the key holding `n` (PostgreSQL) or
/// being the table (SQLite).
fn create(b: DbBackend, name: &str, columns: &str, key: &str) -> String {
    match b {
        DbBackend::Postgres => {
            format!("CREATE TABLE {name} ({columns}, PRIMARY KEY ({key}) INCLUDE (n))")
        }
        _ => format!("CREATE TABLE {name} ({columns}, PRIMARY KEY ({key})) WITHOUT ROWID"),
    }
}

/// Run `statements`, then replace `audit_rollup` by `audit_rollup_next` (its primary key
/// keeping its usual name), as one batch: SQLite's migrations are not in a transaction, and a
/// pooled connection other than the one that dropped the old table would still see it (its
/// schema read before) and refuse the rename.
async fn rebuild(m: &SchemaManager<'_>, mut statements: Vec<String>) -> Result<(), DbErr> {
    let db = m.get_connection();
    statements.push("DROP TABLE audit_rollup".into());
    statements.push("ALTER TABLE audit_rollup_next RENAME TO audit_rollup".into());
    if db.get_database_backend() == DbBackend::Postgres {
        statements.push("ALTER INDEX audit_rollup_next_pkey RENAME TO audit_rollup_pkey".into());
    }
    // Statistics for the planner (and, on PostgreSQL, the visibility that index-only scans
    // need comes with autovacuum).
    statements.push("ANALYZE audit_rollup".into());
    db.execute_unprepared(&statements.join(";\n")).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let b = m.get_connection().get_database_backend();
        let into = format!("INSERT INTO audit_rollup_next ({KEY}, n)");
        let mut statements = vec![
            create(b, "audit_rollup_next", COLUMNS, KEY),
            // The rows as they are: the total per hour, the facets per day.
            format!(
                "{into} SELECT sd, sv, CASE WHEN dim = '' THEN {HOUR_MS} ELSE {DAY_MS} END, t, \
                 kind, outcome, disc, dim, val, n FROM audit_rollup"
            ),
        ];
        // Summed into longer spans: the total per day, everything per week.
        for (span, source) in [(DAY_MS, "dim = ''"), (WEEK_MS, "1 = 1")] {
            statements.push(format!(
                "{into} SELECT sd, sv, {span}, t - (t % {span}), kind, outcome, disc, dim, val, \
                 SUM(n) FROM audit_rollup WHERE {source} \
                 GROUP BY sd, sv, t - (t % {span}), kind, outcome, disc, dim, val"
            ));
        }
        rebuild(m, statements).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let b = m.get_connection().get_database_backend();
        rebuild(
            m,
            vec![
                create(b, "audit_rollup_next", OLD_COLUMNS, OLD_KEY),
                // The previous release's rows: the total per hour, the facets per day.
                format!(
                    "INSERT INTO audit_rollup_next ({OLD_KEY}, n) \
                     SELECT sd, sv, t, kind, outcome, disc, dim, val, n FROM audit_rollup \
                     WHERE span = CASE WHEN dim = '' THEN {HOUR_MS} ELSE {DAY_MS} END"
                ),
            ],
        )
        .await
    }
}
