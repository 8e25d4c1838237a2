//! `kube_credentials.api_key_id`: the API key a kubeconfig credential was downloaded with (none
//! for a browser session). Such a credential ends with its key: revoking the key revokes it,
//! and it never outlives the key's expiry. Without the mark, a leaked key could mint
//! kubeconfigs that kept working after the key was revoked. An index serves the revocation.

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
                .add_column(string_null("api_key_id", 36))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_kube_credentials_api_key")
                .table(id("kube_credentials"))
                .col(id("api_key_id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("idx_kube_credentials_api_key")
                .table(id("kube_credentials"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(id("kube_credentials"))
                .drop_column(id("api_key_id"))
                .to_owned(),
        )
        .await
    }
}
