//! `one_time_tokens.issued_by`: who made a credential for someone else, so the check that let
//! them is made again when it is used. A set-password link names its maker (a user manager
//! creating an account or resetting a password; none when Warden itself made it), and a first
//! password a user manager chose is marked by a row of purpose `chosen_password` naming them
//! (ended when the account's owner sets a password). A user manager may make an account for a
//! newcomer, not take over an administrator's: if the account's rights grew past theirs
//! before its owner used the link or replaced the password (an administrator promoted the
//! newcomer meanwhile), neither lets anyone in, and the owner asks an administrator for a
//! new link.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("one_time_tokens"))
                .add_column(string_null("issued_by", 36))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(id("one_time_tokens"))
                .drop_column(id("issued_by"))
                .to_owned(),
        )
        .await
    }
}
