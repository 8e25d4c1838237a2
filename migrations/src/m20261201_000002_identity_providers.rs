//! Single sign-on with OpenID Connect: identity providers (the client secret sealed with
//! `WARDEN_MASTER_KEY` when one is set) and the link from a provider's subject (`sub`) to a
//! Warden user.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("identity_providers"))
                .col(uuid_pk())
                // The slug in URLs (`/api/v1/auth/oidc/{name}/login`); never changes.
                .col(string("name", 64))
                .col(string("display_name", 128))
                .col(text("issuer"))
                .col(text("client_id"))
                .col(text("client_secret"))
                // Space-separated.
                .col(text("scopes"))
                .col(string("email_claim", 128))
                .col(string("name_claim", 128))
                .col(string("groups_claim", 128))
                // JSON arrays / objects.
                .col(text("allowed_domains"))
                .col(string("group_mapping_mode", 16))
                .col(text("group_mapping"))
                .col(boolean("auto_provision"))
                .col(boolean("link_existing_users"))
                .col(boolean("enabled"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .index(
                    Index::create()
                        .name("uq_identity_providers_name")
                        .col(id("name"))
                        .unique(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("user_identities"))
                .col(string("provider_id", 36))
                .col(string("subject", 255))
                .col(string("user_id", 36))
                .col(millis("created_at"))
                .col(millis_null("last_login_at"))
                .primary_key(Index::create().col(id("provider_id")).col(id("subject")))
                .foreign_key(&mut fk(
                    "fk_user_identities_provider",
                    ("user_identities", "provider_id"),
                    "identity_providers",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_user_identities_user",
                    ("user_identities", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_user_identities_user")
                .table(id("user_identities"))
                .col(id("user_id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("user_identities")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(id("identity_providers")).to_owned())
            .await
    }
}
