//! Agents' one-time connection challenges, in the database: an agent may ask one replica for a
//! challenge and connect through another (a load balancer in between). Only the nonce's
//! SHA-256 is stored; a row is used up by deleting it, so two replicas can never both accept it.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("agent_challenges"))
                .col(
                    ColumnDef::new(id("nonce_hash"))
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(id("cluster_id")).string_len(64).not_null())
                .col(millis("expires_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("agent_challenges_expires_at")
                .table(id("agent_challenges"))
                .col(id("expires_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("agent_challenges")).to_owned())
            .await
    }
}
