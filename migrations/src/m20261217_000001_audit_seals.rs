//! Audit seals: signed statements "the row `seq` had the hash `hash`", written every few
//! seconds for the newest row by the background jobs. The hash chain alone is unkeyed: someone
//! who can write the database could delete or edit a row and compute the chain again after it.
//! A seal's `mac` is an HMAC-SHA256 with a key derived from the master key (or the generated
//! key file), so a chain computed again no longer passes through the sealed hashes, and
//! deleting the seals leaves older rows unsealed: `warden audit verify` reports both.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("audit_seals"))
                .col(
                    ColumnDef::new(id("seq"))
                        .big_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(string("hash", 64))
                .col(millis("at"))
                .col(string("mac", 64))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("audit_seals")).to_owned())
            .await
    }
}
