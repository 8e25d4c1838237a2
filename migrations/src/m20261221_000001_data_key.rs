//! `key_check.data_key`: the key that seals the database's secrets (the data key), itself
//! sealed with `WARDEN_MASTER_KEY` (or the generated `master.key`), so the master key can be
//! rotated by sealing the data key again (`warden keys rotate`) instead of every secret.
//! NULL for a database set up before it: its data key is its master key. `rotated_at`: when
//! the master key last changed. One column per statement: SQLite alters one at a time.
//! Undone, the data key is lost with its column: an older release cannot open a database
//! set up (or rotated) since; it is rolled back by restoring its backup, as the README says.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("key_check"))
                .add_column(text_null("data_key"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(id("key_check"))
                .add_column(ColumnDef::new(id("rotated_at")).big_integer().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in ["rotated_at", "data_key"] {
            m.alter_table(
                Table::alter()
                    .table(id("key_check"))
                    .drop_column(id(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
