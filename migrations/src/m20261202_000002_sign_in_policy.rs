//! Sign-in policy: local passwords for everyone or only for named break-glass accounts, the
//! step-up age (organization settings), and whether a provider's `amr` claim counts as a
//! second factor (per identity provider).
//! One column per statement: SQLite alters one column at a time.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            // `everyone` or `break_glass_only`.
            ColumnDef::new(id("local_sign_in"))
                .string_len(32)
                .not_null()
                .default("everyone")
                .to_owned(),
            // JSON array of emails (lowercase) that keep their local password.
            ColumnDef::new(id("break_glass_users"))
                .text()
                .not_null()
                .default("[]")
                .to_owned(),
            ColumnDef::new(id("step_up_max_age_minutes"))
                .integer()
                .not_null()
                .default(60)
                .to_owned(),
        ];
        for c in columns {
            m.alter_table(
                Table::alter()
                    .table(id("org_settings"))
                    .add_column(c)
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(id("identity_providers"))
                .add_column(boolean("trust_provider_mfa"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("identity_providers"))
                .drop_column(id("trust_provider_mfa"))
                .to_owned(),
        )
        .await?;
        for c in [
            "local_sign_in",
            "break_glass_users",
            "step_up_max_age_minutes",
        ] {
            m.alter_table(
                Table::alter()
                    .table(id("org_settings"))
                    .drop_column(id(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
