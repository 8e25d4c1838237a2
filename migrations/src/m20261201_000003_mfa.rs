//! Multi-factor authentication (TOTP): one authenticator per user (its secret sealed with
//! `WARDEN_MASTER_KEY` when one is set; the last accepted time step, so a code is used once)
//! and single-use recovery codes, stored as SHA-256 hashes.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("user_mfa"))
                .col(
                    ColumnDef::new(id("user_id"))
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(text("secret"))
                .col(millis_null("confirmed_at"))
                .col(ColumnDef::new(id("last_step")).big_integer().null())
                .col(millis("created_at"))
                .foreign_key(&mut fk(
                    "fk_user_mfa_user",
                    ("user_mfa", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        // Who must sign in with a second factor: nobody, admins (anyone holding an
        // organization-wide permission) or everyone.
        m.alter_table(
            Table::alter()
                .table(id("org_settings"))
                .add_column(
                    ColumnDef::new(id("mfa_policy"))
                        .string_len(16)
                        .not_null()
                        .default("nobody"),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("mfa_recovery_codes"))
                .col(uuid_pk())
                .col(string("user_id", 36))
                .col(string("code_hash", 64))
                .col(millis_null("used_at"))
                .col(millis("created_at"))
                .foreign_key(&mut fk(
                    "fk_mfa_recovery_codes_user",
                    ("mfa_recovery_codes", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_mfa_recovery_codes_user")
                .table(id("mfa_recovery_codes"))
                .col(id("user_id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("mfa_recovery_codes")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(id("user_mfa")).to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(id("org_settings"))
                .drop_column(id("mfa_policy"))
                .to_owned(),
        )
        .await
    }
}
