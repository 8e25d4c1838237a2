//! Rate limits shared by the replicas on PostgreSQL: one row per (class, source address), the
//! bucket's theoretical arrival time (GCRA) in the database's clock. A row whose time has
//! passed is a full bucket and is swept. (SQLite runs one process, which keeps its buckets in
//! memory; the table exists there too but stays empty.)

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("rate_limit_buckets"))
                .col(
                    ColumnDef::new(id("key"))
                        .string_len(96)
                        .not_null()
                        .primary_key(),
                )
                .col(millis("tat"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("rate_limit_buckets_tat")
                .table(id("rate_limit_buckets"))
                .col(id("tat"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("rate_limit_buckets")).to_owned())
            .await
    }
}
