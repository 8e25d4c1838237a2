//! Terminal recordings in the database, so that every replica can play a recording made on
//! another (they used to be files in one replica's `WARDEN_DATA_DIR/recordings/`). A recording
//! is a sequence of chunks (asciicast v2 lines, flushed at least every second); `started_at`
//! is the recording's start on every chunk, so retention removes a recording whole, with the
//! audit events that name it.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("terminal_recording_chunks"))
                .col(string("recording_id", 64))
                .col(int("seq"))
                .col(ColumnDef::new(id("data")).blob().not_null())
                .col(millis("started_at"))
                .primary_key(Index::create().col(id("recording_id")).col(id("seq")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("terminal_recording_chunks_started_at")
                .table(id("terminal_recording_chunks"))
                .col(id("started_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(id("terminal_recording_chunks"))
                .to_owned(),
        )
        .await
    }
}
