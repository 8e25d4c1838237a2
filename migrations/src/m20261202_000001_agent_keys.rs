//! Agent keys: `clusters.agent_public_key`, the Ed25519 public key (base64url) the cluster's
//! agent registered with its bootstrap token, and `clusters.agent_key_registered_at`. Every
//! later connection must prove possession of the matching private key, which never leaves the
//! cluster.
//!
//! NULL for clusters registered before agents had keys: their credential is refused
//! (`key_required`, fail closed) until a new manifest registers them again.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        for c in [
            string_null("agent_public_key", 64),
            millis_null("agent_key_registered_at"),
        ] {
            m.alter_table(
                Table::alter()
                    .table(id("clusters"))
                    .add_column(c)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in ["agent_public_key", "agent_key_registered_at"] {
            m.alter_table(
                Table::alter()
                    .table(id("clusters"))
                    .drop_column(id(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
