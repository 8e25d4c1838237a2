//! Web terminal limits as kubectl settings (organization, user, cluster): idle timeout,
//! maximum duration, concurrent terminals per person, and whether recordings keep the
//! keystrokes. NULL inherits, like the other settings.
//! One column per statement: SQLite alters one column at a time.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [&str; 3] = [
    "terminal_idle_secs",
    "terminal_max_secs",
    "terminal_max_concurrent",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in COLUMNS {
            m.alter_table(
                Table::alter()
                    .table(id("kubectl_settings"))
                    .add_column(ColumnDef::new(id(c)).big_integer().null())
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(id("kubectl_settings"))
                .add_column(bool_null("terminal_record_input"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in COLUMNS.into_iter().chain(["terminal_record_input"]) {
            m.alter_table(
                Table::alter()
                    .table(id("kubectl_settings"))
                    .drop_column(id(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
