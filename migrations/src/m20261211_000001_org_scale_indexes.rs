//! Indexes the lists and the authorization lookup need at organization scale (10,000 users,
//! 50,000 bindings): a user's groups and bindings, a group's bindings, a project's bindings
//! and shared clusters, a role's holders, a user's API keys.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: &[(&str, &str, &str)] = &[
    ("ix_group_members_user", "group_members", "user_id"),
    ("ix_bindings_user", "bindings", "user_id"),
    ("ix_bindings_group", "bindings", "group_id"),
    ("ix_bindings_project", "bindings", "project_id"),
    ("ix_bindings_role", "bindings", "role_id"),
    ("ix_cluster_shares_project", "cluster_shares", "project_id"),
    ("ix_api_keys_user", "api_keys", "user_id"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in INDEXES {
            m.create_index(
                Index::create()
                    .name(*name)
                    .table(id(table))
                    .col(id(column))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES {
            m.drop_index(Index::drop().name(*name).table(id(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
