//! Clusters, their sharing with other projects, bootstrap tokens, agent credentials and the
//! history of their status. Portable DDL, timestamps in BIGINT milliseconds (UTC).

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("clusters"))
                .col(uuid_pk())
                .col(string("name", 63))
                .col(text("description"))
                // JSON object of label key -> value.
                .col(text("labels"))
                .col(string("project_id", 36))
                // pending | connected | disconnected
                .col(string("status", 16))
                .col(text_null("status_reason"))
                .col(millis_null("last_seen"))
                .col(millis_null("registered_at"))
                .col(millis_null("connected_at"))
                .col(string_null("kubernetes_version", 64))
                .col(ColumnDef::new(id("node_count")).integer().null())
                .col(string_null("agent_version", 64))
                // UID of the kube-system namespace, bound at the first bootstrap.
                .col(string_null("fingerprint", 64))
                // JSON: namespaces and nodes as the agent last reported them.
                .col(text("facts"))
                // JSON: the agent's dial-out proxy settings.
                .col(text("proxy"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .index(
                    Index::create()
                        .name("uq_clusters_name")
                        .col(id("name"))
                        .unique(),
                )
                // A project that owns clusters cannot be deleted.
                .foreign_key(&mut fk(
                    "fk_clusters_project",
                    ("clusters", "project_id"),
                    "projects",
                    ForeignKeyAction::Restrict,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_clusters_project")
                .table(id("clusters"))
                .col(id("project_id"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("cluster_shares"))
                .col(string("cluster_id", 36))
                .col(string("project_id", 36))
                .col(millis("created_at"))
                .primary_key(Index::create().col(id("cluster_id")).col(id("project_id")))
                .foreign_key(&mut fk(
                    "fk_cluster_shares_cluster",
                    ("cluster_shares", "cluster_id"),
                    "clusters",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_cluster_shares_project",
                    ("cluster_shares", "project_id"),
                    "projects",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        // One-time tokens: `agent` tokens go into manifests and are proven by the agent at its
        // first connection; `manifest` tokens authorize one download of a manifest. Only their
        // SHA-256 is stored.
        m.create_table(
            Table::create()
                .table(id("cluster_bootstrap_tokens"))
                .col(uuid_pk())
                .col(string("cluster_id", 36))
                .col(string("purpose", 16))
                .col(string("token_hash", 64))
                .col(millis("expires_at"))
                .col(millis_null("used_at"))
                .col(string_null("used_fingerprint", 64))
                .col(string_null("created_by", 36))
                .col(millis("created_at"))
                .index(
                    Index::create()
                        .name("uq_cluster_bootstrap_tokens_hash")
                        .col(id("token_hash"))
                        .unique(),
                )
                .foreign_key(&mut fk(
                    "fk_cluster_bootstrap_tokens_cluster",
                    ("cluster_bootstrap_tokens", "cluster_id"),
                    "clusters",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        // Long-lived agent credentials, bound to the cluster's fingerprint. Kept (revoked) after
        // the cluster is deleted so a returning agent hears why it is refused.
        m.create_table(
            Table::create()
                .table(id("cluster_agent_credentials"))
                .col(uuid_pk())
                .col(string_null("cluster_id", 36))
                .col(string("cluster_name", 63))
                .col(string("secret_hash", 64))
                .col(string("fingerprint", 64))
                .col(millis("created_at"))
                .col(millis_null("last_used_at"))
                .col(millis_null("revoked_at"))
                .col(text_null("revoked_reason"))
                .index(
                    Index::create()
                        .name("uq_cluster_agent_credentials_hash")
                        .col(id("secret_hash"))
                        .unique(),
                )
                .foreign_key(&mut fk(
                    "fk_cluster_agent_credentials_cluster",
                    ("cluster_agent_credentials", "cluster_id"),
                    "clusters",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("cluster_status_history"))
                .col(uuid_pk())
                .col(string("cluster_id", 36))
                .col(string("status", 16))
                .col(text("reason"))
                .col(millis("at"))
                .foreign_key(&mut fk(
                    "fk_cluster_status_history_cluster",
                    ("cluster_status_history", "cluster_id"),
                    "clusters",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_cluster_status_history_cluster")
                .table(id("cluster_status_history"))
                .col(id("cluster_id"))
                .col(id("at"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "cluster_status_history",
            "cluster_agent_credentials",
            "cluster_bootstrap_tokens",
            "cluster_shares",
            "clusters",
        ] {
            m.drop_table(Table::drop().table(id(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
