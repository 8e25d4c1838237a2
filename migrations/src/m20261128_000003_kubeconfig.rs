//! The Kubernetes API gateway: issued kubeconfig credentials, per-user revocation and service
//! account names, kubectl settings (organization, user, cluster), and the per-user service
//! accounts Warden keeps on each cluster. Portable DDL, timestamps in BIGINT milliseconds (UTC).

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One row per user who ever used kubectl through Warden: the stable, collision-free name
        // of their service account on every cluster, and the instant before which every
        // credential issued to them is refused ("revoke my kubeconfigs").
        m.create_table(
            Table::create()
                .table(id("kube_users"))
                .col(
                    ColumnDef::new(id("user_id"))
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(string("sa_name", 63))
                .col(millis_null("revoked_before"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .index(
                    Index::create()
                        .name("uq_kube_users_sa_name")
                        .col(id("sa_name"))
                        .unique(),
                )
                .foreign_key(&mut fk(
                    "fk_kube_users_user",
                    ("kube_users", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        // Every credential (client certificate) issued in a kubeconfig, by its serial number.
        m.create_table(
            Table::create()
                .table(id("kube_credentials"))
                .col(
                    ColumnDef::new(id("serial"))
                        .string_len(40)
                        .not_null()
                        .primary_key(),
                )
                .col(string("user_id", 36))
                // cli | web_shell
                .col(string("session_type", 16))
                // The cluster asked for (?cluster=NAME), informational: the credential
                // authenticates the user; what they may reach is decided per request.
                .col(string_null("cluster", 63))
                .col(millis("issued_at"))
                .col(millis("expires_at"))
                .col(millis_null("revoked_at"))
                .foreign_key(&mut fk(
                    "fk_kube_credentials_user",
                    ("kube_credentials", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_kube_credentials_user")
                .table(id("kube_credentials"))
                .col(id("user_id"))
                .to_owned(),
        )
        .await?;

        // kubectl settings at three levels: `org` (subject_id NULL), `user` and `cluster`.
        // A NULL value inherits (see the README for how levels combine).
        m.create_table(
            Table::create()
                .table(id("kubectl_settings"))
                // "org", "user:<id>" or "cluster:<id>"
                .col(
                    ColumnDef::new(id("id"))
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(string("scope", 16))
                .col(string_null("subject_id", 36))
                .col(ColumnDef::new(id("validity_secs")).big_integer().null())
                .col(ColumnDef::new(id("max_validity_secs")).big_integer().null())
                .col(ColumnDef::new(id("sa_idle_secs")).big_integer().null())
                .col(bool_null("require_recent_sign_in"))
                .col(
                    ColumnDef::new(id("recent_sign_in_secs"))
                        .big_integer()
                        .null(),
                )
                .col(bool_null("disable_cli"))
                .col(bool_null("secrets_org_admins_only"))
                .col(millis("updated_at"))
                .to_owned(),
        )
        .await?;

        // The per-user service accounts Warden created on each cluster: what was last applied
        // (a hash of the RBAC), when it was last used (idle removal).
        m.create_table(
            Table::create()
                .table(id("kube_service_accounts"))
                .col(string("cluster_id", 36))
                .col(string("user_id", 36))
                .col(string("sa_name", 63))
                .col(string("rbac_hash", 64))
                .col(millis("created_at"))
                .col(millis("reconciled_at"))
                .col(millis("last_used_at"))
                .col(text_null("last_error"))
                .primary_key(Index::create().col(id("cluster_id")).col(id("user_id")))
                // No foreign key to users: a deleted user's service accounts must still be
                // found (and removed from the clusters) by the sweeper.
                .foreign_key(&mut fk(
                    "fk_kube_service_accounts_cluster",
                    ("kube_service_accounts", "cluster_id"),
                    "clusters",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "kube_service_accounts",
            "kubectl_settings",
            "kube_credentials",
            "kube_users",
        ] {
            m.drop_table(Table::drop().table(id(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
