//! SQLite's free-text index (`audit_fts`, FTS5 with the `trigram` tokenizer, from
//! [`crate::m20261205_000001_audit_search`]) made again without what the search never reads:
//! **`detail='none'`** (no positions: which trigrams a row holds, not where) and
//! **`columnsize=0`** (no token counts per row, which only ranking reads).
//!
//! The search asks for rows holding *every* trigram of the text (`warden_domain::audit`'s
//! `text_condition`: `"abc" AND "bcd" AND …`), where it asked for the trigrams in a row (a
//! phrase, which needs positions); both only narrow the rows on which the exact condition
//! (`LIKE '%text%'` on each column) is checked, so the answers are the same (integration test
//! `audit_free_text_through_the_text_index_finds_what_a_scan_finds`, with a row holding every
//! trigram of a text but not the text). What it saves is on the write path of every audit
//! event, the gateway's included: 20,000 Kubernetes events inserted into a 200,000-event log
//! (`sqlite3`, one transaction) took 1.28 – 1.37 s with the positional index, 0.88 – 0.98 s
//! with this one and 0.62 – 0.65 s without any (the text index's share 0.7 → 0.3 s); the index
//! is a fifth of the size (75 → 16 MB there).
//!
//! PostgreSQL is not changed (its trigram index is a GIN over the joined columns).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const LEAN_FTS_TABLE: &str =
    "CREATE VIRTUAL TABLE audit_fts USING fts5(resource_name, path, reason, actor_name, \
     content='audit_events', content_rowid='seq', tokenize='trigram', detail='none', \
     columnsize=0)";

const DROP_FTS: &[&str] = &[
    "DROP TRIGGER IF EXISTS audit_fts_insert",
    "DROP TRIGGER IF EXISTS audit_fts_delete",
    "DROP TABLE IF EXISTS audit_fts",
];

/// `audit_fts` made again as `table` (the same triggers, filled from the stored events: about
/// 8 s a million here).
async fn replace(m: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    use crate::m20261205_000001_audit_search::SQLITE_FTS_SYNC;
    let db = m.get_connection();
    if db.get_database_backend() != DbBackend::Sqlite {
        return Ok(());
    }
    for sql in DROP_FTS
        .iter()
        .chain(std::iter::once(&table))
        .chain(SQLITE_FTS_SYNC)
    {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too (sea-orm-migration uses one on PostgreSQL only): on one
    /// connection, so each statement sees the one before (through a pool, a `CREATE` on another
    /// connection still saw the dropped trigger), and all or nothing: a stop half-way never
    /// leaves the log without its text index.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        replace(m, LEAN_FTS_TABLE).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        replace(m, crate::m20261205_000001_audit_search::SQLITE_FTS_TABLE).await
    }
}
