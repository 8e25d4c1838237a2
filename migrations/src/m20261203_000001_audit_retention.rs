//! Audit retention: the organization's retention setting (days; NULL keeps events forever) and
//! the checkpoints where the retained hash chain begins after older events were deleted.
//!
//! A checkpoint names the last deleted row (`seq`, `hash`): the first retained row's
//! `prev_hash` equals `hash`. `mac` is an HMAC-SHA256 over the checkpoint with a key derived from
//! the master key (or the generated key file), so a forged checkpoint that would justify
//! deleting rows is detected by `warden audit verify`.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("org_settings"))
                .add_column(ColumnDef::new(id("audit_retention_days")).integer().null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("audit_checkpoints"))
                .col(
                    ColumnDef::new(id("seq"))
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(string("hash", 64))
                .col(ColumnDef::new(id("deleted")).big_integer().not_null())
                .col(millis("at"))
                .col(string("mac", 64))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("audit_checkpoints")).to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(id("org_settings"))
                .drop_column(id("audit_retention_days"))
                .to_owned(),
        )
        .await
    }
}
