//! `kube_credentials.read_only`: a kubeconfig credential downloaded by a browser session whose
//! second factor was not fresh, by someone whose roles only read then. The step-up is asked for
//! credentials of roles that write; without this mark such a credential, valid for up to a week,
//! gained writes (and exec, and secrets) the moment its holder was granted a role that writes
//! (an approved access request, break-glass), without any fresh second factor. The gateway
//! refuses those requests on a read-only credential.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("kube_credentials"))
                .add_column(boolean("read_only"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("kube_credentials"))
                .drop_column(id("read_only"))
                .to_owned(),
        )
        .await
    }
}
