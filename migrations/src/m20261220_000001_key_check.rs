//! `key_check`: one value sealed with the key that seals the database's secrets, written at the
//! first start and opened at every start. A Warden started with another key (a new
//! `WARDEN_MASTER_KEY` where the generated `master.key` sealed everything, a database restored
//! without its key) refuses to start and says so, instead of starting and failing later at
//! every second factor, single sign-on, proxy, recording and audit seal.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("key_check"))
                .col(int("id").primary_key())
                .col(text("sealed"))
                .col(millis("created_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("key_check")).to_owned())
            .await
    }
}
