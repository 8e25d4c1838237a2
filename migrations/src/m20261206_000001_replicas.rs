//! Several replicas on one PostgreSQL: the shared authorization epoch (moved, and announced
//! with `NOTIFY`, on every change that can alter a decision), the replicas that are running
//! (their internal address and heartbeat), and which replica holds each cluster's agent tunnel.
//! the gateway's certificate authorities (keys sealed with the master key), so a kubeconfig
//! one replica issued works on every other. On SQLite (one process) the tables exist but stay
//! unused.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("authz_epoch"))
                .col(int("id").primary_key())
                .col(ColumnDef::new(id("value")).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::insert()
                .into_table(id("authz_epoch"))
                .columns([id("id"), id("value")])
                .values_panic([1.into(), 0i64.into()])
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("replicas"))
                .col(string("id", 64).primary_key())
                .col(text_null("internal_addr"))
                .col(millis("started_at"))
                .col(millis("heartbeat_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("cluster_tunnels"))
                .col(string("cluster_id", 36).primary_key())
                .col(string("replica_id", 64))
                .col(millis("connected_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("gateway_cas"))
                .col(string("name", 32).primary_key())
                .col(text("cert_pem"))
                .col(text("key_sealed"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cluster_tunnels_replica")
                .table(id("cluster_tunnels"))
                .col(id("replica_id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["gateway_cas", "cluster_tunnels", "replicas", "authz_epoch"] {
            m.drop_table(Table::drop().table(id(t)).to_owned()).await?;
        }
        Ok(())
    }
}
