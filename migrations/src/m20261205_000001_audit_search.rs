//! Indexes and text search for the audit log at scale (millions of rows).
//!
//! Every read of the log goes through one `WHERE` (`warden_domain::audit::filter`): equality on
//! `kind`, `outcome`, `project`, `cluster`, `namespace`, `resource_kind`, `status`, `source_ip`,
//! `actor_id`, `request_id`, a prefix on `actor_name` and `action`, a range on `at`, and a
//! free-text search over `resource_name`, `path`, `reason` and `actor_name`. The list pages
//! newest first by `seq` (keyset: `seq < cursor ORDER BY seq DESC LIMIT n`).
//!
//! Choices:
//! - **Composite b-trees `(column, seq)`** for each equality filter: the list walks one of them
//!   backwards from the cursor and stops after a page, whatever the table's size, and a deep
//!   page starts exactly at its cursor. On SQLite every index already ends with the rowid
//!   (`seq` is the `INTEGER PRIMARY KEY`), so a plain `(column)` index has that order; on
//!   PostgreSQL `seq` is spelled out, and the single-column indexes of the initial migration
//!   on `kind`, `cluster`, `project` and `actor_id` are replaced by these.
//! - **Prefixes** (`actor_name LIKE 'ali%'`, `action LIKE 'kube.%'`): PostgreSQL uses a b-tree
//!   for `LIKE 'x%'` only with the `C` collation or a `*_pattern_ops` operator class, so those
//!   two indexes use `varchar_pattern_ops` (which serves equality too). SQLite's `LIKE` is
//!   case-insensitive: its prefix optimisation needs a `NOCASE` index.
//! - **`at`** keeps its own index (the initial migration's): a narrow time range with a filter
//!   that matches little elsewhere is read by time, then sorted.
//! - **Free text**: a substring anywhere (`LIKE '%text%'`) cannot use a b-tree. PostgreSQL: one
//!   GIN trigram index (`pg_trgm`) over the four searched columns joined
//!   (`audit_text(...)`, an immutable SQL function so that the query names the same
//!   expression); trigrams answer `LIKE`/`ILIKE '%text%'` for any text of 3 characters or more
//!   and need no tokenizer (paths, resource names, IPs are not words). One index rather than
//!   four keeps ingest cheap. `pg_trgm` is a trusted extension (a database owner may create
//!   it); where it cannot be created the migration still succeeds and searches scan. SQLite:
//!   an FTS5 table with the `trigram` tokenizer (substring matches, case-insensitive, like
//!   SQLite's `LIKE`) over the same four columns, external content (`content=audit_events`,
//!   no second copy of the text), kept in sync by triggers on insert and delete: every writer
//!   (the chained append, the generator) and retention's batched deletes update it in the same
//!   transaction. (Audit rows are never updated.) The query keeps the exact `LIKE` conditions
//!   and uses the text index only to find candidates, so results are the same as a scan.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `(name, columns)` of the b-trees, PostgreSQL spelling.
const PG_INDEXES: &[(&str, &str)] = &[
    ("ix_audit_events_kind_seq", "kind, seq"),
    ("ix_audit_events_outcome_seq", "outcome, seq"),
    ("ix_audit_events_project_seq", "project, seq"),
    ("ix_audit_events_cluster_seq", "cluster, seq"),
    ("ix_audit_events_namespace_seq", "namespace, seq"),
    ("ix_audit_events_resource_kind_seq", "resource_kind, seq"),
    ("ix_audit_events_status_seq", "status, seq"),
    ("ix_audit_events_source_ip_seq", "source_ip, seq"),
    ("ix_audit_events_actor_id_seq", "actor_id, seq"),
    (
        "ix_audit_events_actor_name",
        "actor_name varchar_pattern_ops, seq",
    ),
    ("ix_audit_events_action", "action varchar_pattern_ops, seq"),
    ("ix_audit_events_request_id", "request_id"),
];

/// SQLite: `seq` is the rowid, which ends every index already.
const SQLITE_INDEXES: &[(&str, &str)] = &[
    ("ix_audit_events_outcome", "outcome"),
    ("ix_audit_events_namespace", "namespace"),
    ("ix_audit_events_resource_kind", "resource_kind"),
    ("ix_audit_events_status", "status"),
    ("ix_audit_events_source_ip", "source_ip"),
    ("ix_audit_events_actor_name", "actor_name COLLATE NOCASE"),
    ("ix_audit_events_action", "action COLLATE NOCASE"),
    ("ix_audit_events_action_exact", "action"),
    ("ix_audit_events_request_id", "request_id"),
];

const REPLACED: &[&str] = &[
    "ix_audit_events_actor",
    "ix_audit_events_kind",
    "ix_audit_events_cluster",
    "ix_audit_events_project",
];

/// The searched text of a row (PostgreSQL): the expression the trigram index holds and the
/// query matches. A newline between columns: a search never spans two of them by accident
/// (and the query re-checks each column anyway).
const PG_TEXT_FN: &str = r#"
CREATE OR REPLACE FUNCTION audit_text(resource_name text, path text, reason text, actor_name text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT coalesce(resource_name, '') || E'\n' || coalesce(path, '') || E'\n' || coalesce(reason, '') || E'\n' || coalesce(actor_name, '') $$
"#;

const PG_TRGM: &str = r#"
DO $$
BEGIN
  BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_trgm is not available (%): audit free-text search will scan', SQLERRM;
  END;
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
    EXECUTE 'CREATE INDEX IF NOT EXISTS ix_audit_events_text ON audit_events USING gin '
         || '(audit_text(resource_name, path, reason, actor_name) gin_trgm_ops)';
  END IF;
END
$$
"#;

pub(crate) const SQLITE_FTS_TABLE: &str =
    "CREATE VIRTUAL TABLE audit_fts USING fts5(resource_name, path, reason, actor_name, \
     content='audit_events', content_rowid='seq', tokenize='trigram')";

/// What keeps `audit_fts` in step with `audit_events`, and fills it from the rows already there.
pub(crate) const SQLITE_FTS_SYNC: &[&str] = &[
    "CREATE TRIGGER audit_fts_insert AFTER INSERT ON audit_events BEGIN \
     INSERT INTO audit_fts(rowid, resource_name, path, reason, actor_name) \
     VALUES (new.seq, new.resource_name, new.path, new.reason, new.actor_name); END",
    "CREATE TRIGGER audit_fts_delete AFTER DELETE ON audit_events BEGIN \
     INSERT INTO audit_fts(audit_fts, rowid, resource_name, path, reason, actor_name) \
     VALUES ('delete', old.seq, old.resource_name, old.path, old.reason, old.actor_name); END",
    // Rows written before this migration.
    "INSERT INTO audit_fts(audit_fts) VALUES ('rebuild')",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match db.get_database_backend() {
            DbBackend::Postgres => {
                for name in REPLACED {
                    db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                        .await?;
                }
                for (name, cols) in PG_INDEXES {
                    db.execute_unprepared(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON audit_events ({cols})"
                    ))
                    .await?;
                }
                db.execute_unprepared(PG_TEXT_FN).await?;
                db.execute_unprepared(PG_TRGM).await?;
            }
            _ => {
                for (name, cols) in SQLITE_INDEXES {
                    db.execute_unprepared(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON audit_events ({cols})"
                    ))
                    .await?;
                }
                for sql in std::iter::once(&SQLITE_FTS_TABLE).chain(SQLITE_FTS_SYNC) {
                    db.execute_unprepared(sql).await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match db.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared("DROP INDEX IF EXISTS ix_audit_events_text")
                    .await?;
                db.execute_unprepared("DROP FUNCTION IF EXISTS audit_text(text, text, text, text)")
                    .await?;
                for (name, _) in PG_INDEXES {
                    db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                        .await?;
                }
                for (name, col) in [
                    ("ix_audit_events_actor", "actor_id"),
                    ("ix_audit_events_kind", "kind"),
                    ("ix_audit_events_cluster", "cluster"),
                    ("ix_audit_events_project", "project"),
                ] {
                    db.execute_unprepared(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON audit_events ({col})"
                    ))
                    .await?;
                }
            }
            _ => {
                for sql in [
                    "DROP TRIGGER IF EXISTS audit_fts_insert",
                    "DROP TRIGGER IF EXISTS audit_fts_delete",
                    "DROP TABLE IF EXISTS audit_fts",
                ] {
                    db.execute_unprepared(sql).await?;
                }
                for (name, _) in SQLITE_INDEXES {
                    db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                        .await?;
                }
            }
        }
        Ok(())
    }
}
