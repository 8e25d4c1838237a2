//! Sessions that cannot come back: every user carries a session generation, written into each
//! session at sign-in and bumped whenever the user's sessions must end (password change or
//! reset, deactivation). A session of an older generation is refused on every request, so a
//! sign-in or a request racing with the reset cannot write a dead session back.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("users"))
                .add_column(
                    ColumnDef::new(id("session_generation"))
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("users"))
                .drop_column(id("session_generation"))
                .to_owned(),
        )
        .await
    }
}
