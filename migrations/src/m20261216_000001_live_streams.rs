//! Live streams and web terminals known to every replica (PostgreSQL; on SQLite, one process,
//! the table exists but stays unused). Each replica keeps a row for each stream it relays, so
//! the *Live sessions* list, an administrator's *End* and the per-person terminal limit reach
//! every replica's streams, not only those of the replica that answers. `end_reason` is set by
//! the replica that answered an *End* for a stream another replica holds; that replica hears
//! it (`NOTIFY warden_live_end`, and its periodic re-read as the safety net) and closes the
//! stream with that reason. Rows of a replica that stopped go with its registry row.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("live_streams"))
                .col(
                    ColumnDef::new(id("id"))
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(string("replica_id", 64))
                .col(string("kind", 32))
                .col(string("user_id", 36))
                .col(text("email"))
                .col(text("cluster"))
                .col(text_null("namespace"))
                .col(text_null("target"))
                .col(millis("started_at"))
                .col(text_null("end_reason"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_live_streams_replica")
                .table(id("live_streams"))
                .col(id("replica_id"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_live_streams_user")
                .table(id("live_streams"))
                .col(id("user_id"))
                .col(id("kind"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("live_streams")).to_owned())
            .await
    }
}
