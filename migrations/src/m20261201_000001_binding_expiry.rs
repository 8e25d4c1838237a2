//! Just-in-time access (issue 17): time-bound bindings, access requests with approval, and the
//! organization's just-in-time settings.
//!
//! - `bindings.expires_at` (NULL: permanent), `bindings.expiry_recorded_at` (when Warden ended
//!   the grant and audited it), `bindings.access_request_id` (the request that created it).
//! - `projects.approver_group_id`: who approves requests for the project (NULL: its admins).
//! - `jit_settings`: one row (required expiry per role, request lifetime, two approvals for
//!   write roles, webhook, break-glass roles).
//! - `access_requests`: one row per request and its whole story (`break_glass`: taken without
//!   approval).
//!
//! One column per statement: SQLite alters one column at a time.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in [
            millis_null("expires_at"),
            millis_null("expiry_recorded_at"),
            string_null("access_request_id", 36),
        ] {
            m.alter_table(
                Table::alter()
                    .table(id("bindings"))
                    .add_column(c)
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("ix_bindings_expires_at")
                .table(id("bindings"))
                .col(id("expires_at"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(id("projects"))
                .add_column(string_null("approver_group_id", 36))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("jit_settings"))
                .col(ColumnDef::new(id("id")).integer().not_null().primary_key())
                // JSON array of {"role": NAME, "max_secs": N}.
                .col(text("required_expiry"))
                .col(
                    ColumnDef::new(id("request_ttl_secs"))
                        .big_integer()
                        .not_null(),
                )
                .col(boolean("two_approvals_for_write"))
                // JSON array of {"role": NAME, "max_secs": N}: roles taken without approval.
                .col(text("break_glass"))
                .col(text_null("webhook_url"))
                .col(millis("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(id("access_requests"))
                .col(uuid_pk())
                .col(string("requester_id", 36))
                .col(string("project_id", 36))
                .col(string("role_id", 36))
                .col(text("namespaces"))
                .col(string_null("cluster", 128))
                .col(ColumnDef::new(id("duration_secs")).big_integer().not_null())
                .col(text("reason"))
                .col(string("status", 16))
                // JSON array of {"user_id","email","comment","at"}.
                .col(text("approvals"))
                .col(millis("created_at"))
                .col(millis("expires_at"))
                .col(millis_null("decided_at"))
                .col(string_null("decided_by", 320))
                .col(text_null("decision_comment"))
                .col(string_null("binding_id", 36))
                .col(millis_null("grant_expires_at"))
                .col(boolean("break_glass"))
                .foreign_key(&mut fk(
                    "fk_access_requests_requester",
                    ("access_requests", "requester_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_access_requests_project",
                    ("access_requests", "project_id"),
                    "projects",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_access_requests_role",
                    ("access_requests", "role_id"),
                    "roles",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_access_requests_status")
                .table(id("access_requests"))
                .col(id("status"))
                .col(id("created_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("access_requests")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(id("jit_settings")).to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(id("projects"))
                .drop_column(id("approver_group_id"))
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_bindings_expires_at")
                .table(id("bindings"))
                .to_owned(),
        )
        .await?;
        for c in ["expires_at", "expiry_recorded_at", "access_request_id"] {
            m.alter_table(
                Table::alter()
                    .table(id("bindings"))
                    .drop_column(id(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
