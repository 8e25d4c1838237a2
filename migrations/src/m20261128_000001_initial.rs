use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("organization"))
                .col(uuid_pk())
                .col(string("name", 128))
                .col(millis("created_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("org_settings"))
                .col(ColumnDef::new(id("id")).integer().not_null().primary_key())
                .col(int("session_idle_minutes"))
                .col(int("session_absolute_hours"))
                .col(int("lockout_threshold"))
                .col(int("lockout_window_minutes"))
                .col(int("lockout_minutes"))
                .col(millis("updated_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("users"))
                .col(uuid_pk())
                .col(string("email", 254))
                .col(string("name", 128))
                .col(text_null("password_hash"))
                .col(string("status", 16))
                .col(string("origin", 16))
                .col(boolean("must_change_password"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .col(millis_null("last_login_at"))
                .index(
                    Index::create()
                        .name("uq_users_email")
                        .col(id("email"))
                        .unique(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("login_throttle"))
                .col(
                    ColumnDef::new(id("email"))
                        .string_len(254)
                        .not_null()
                        .primary_key(),
                )
                .col(int("failures"))
                .col(millis("window_start"))
                .col(millis_null("locked_until"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("projects"))
                .col(uuid_pk())
                .col(string("name", 63))
                .col(text("description"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .index(
                    Index::create()
                        .name("uq_projects_name")
                        .col(id("name"))
                        .unique(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("groups"))
                .col(uuid_pk())
                .col(string("name", 128))
                .col(text("description"))
                .col(boolean("builtin"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .index(
                    Index::create()
                        .name("uq_groups_name")
                        .col(id("name"))
                        .unique(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("group_members"))
                .col(string("group_id", 36))
                .col(string("user_id", 36))
                .col(millis("created_at"))
                .primary_key(Index::create().col(id("group_id")).col(id("user_id")))
                .foreign_key(&mut fk(
                    "fk_group_members_group",
                    ("group_members", "group_id"),
                    "groups",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_group_members_user",
                    ("group_members", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("roles"))
                .col(uuid_pk())
                .col(string("name", 64))
                .col(string("scope", 16))
                .col(text("description"))
                .col(boolean("builtin"))
                .col(text("permissions"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .index(
                    Index::create()
                        .name("uq_roles_name")
                        .col(id("name"))
                        .unique(),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("bindings"))
                .col(uuid_pk())
                .col(string("subject_kind", 8))
                .col(string_null("user_id", 36))
                .col(string_null("group_id", 36))
                .col(string("role_id", 36))
                .col(string_null("project_id", 36))
                .col(text("namespaces"))
                .col(millis("created_at"))
                .foreign_key(&mut fk(
                    "fk_bindings_user",
                    ("bindings", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_bindings_group",
                    ("bindings", "group_id"),
                    "groups",
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_bindings_role",
                    ("bindings", "role_id"),
                    "roles",
                    ForeignKeyAction::Restrict,
                ))
                .foreign_key(&mut fk(
                    "fk_bindings_project",
                    ("bindings", "project_id"),
                    "projects",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("sessions"))
                .col(
                    ColumnDef::new(id("id"))
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(text("data"))
                .col(millis("expires_at"))
                .col(string_null("user_id", 36))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_sessions_user")
                .table(id("sessions"))
                .col(id("user_id"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("one_time_tokens"))
                .col(uuid_pk())
                .col(string("token_hash", 64))
                .col(string("purpose", 32))
                .col(string("user_id", 36))
                .col(millis("expires_at"))
                .col(millis_null("used_at"))
                .col(millis("created_at"))
                .index(
                    Index::create()
                        .name("uq_one_time_tokens_hash")
                        .col(id("token_hash"))
                        .unique(),
                )
                .foreign_key(&mut fk(
                    "fk_one_time_tokens_user",
                    ("one_time_tokens", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("api_keys"))
                .col(uuid_pk())
                .col(string("user_id", 36))
                .col(string("name", 128))
                .col(string("prefix", 16))
                .col(string("secret_hash", 64))
                .col(millis("expires_at"))
                .col(millis_null("last_used_at"))
                .col(millis_null("revoked_at"))
                .col(millis("created_at"))
                .index(
                    Index::create()
                        .name("uq_api_keys_secret_hash")
                        .col(id("secret_hash"))
                        .unique(),
                )
                .foreign_key(&mut fk(
                    "fk_api_keys_user",
                    ("api_keys", "user_id"),
                    "users",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(id("audit_events"))
                .col(
                    ColumnDef::new(id("seq"))
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(string("id", 36))
                .col(millis("at"))
                .col(string("kind", 16))
                .col(string_null("actor_id", 36))
                .col(string("actor_name", 254))
                .col(string("session_type", 16))
                .col(string_null("project", 63))
                .col(string_null("cluster", 63))
                .col(string_null("namespace", 63))
                .col(string("action", 64))
                .col(string_null("resource_kind", 64))
                .col(text_null("resource_name"))
                .col(string("outcome", 8))
                .col(text_null("reason"))
                .col(string_null("http_method", 10))
                .col(text_null("path"))
                .col(ColumnDef::new(id("status")).integer().null())
                .col(string_null("source_ip", 64))
                .col(text_null("user_agent"))
                .col(string_null("request_id", 64))
                .col(ColumnDef::new(id("duration_ms")).big_integer().null())
                .col(text("details"))
                .col(string("prev_hash", 64))
                .col(string("hash", 64))
                .index(
                    Index::create()
                        .name("uq_audit_events_id")
                        .col(id("id"))
                        .unique(),
                )
                .to_owned(),
        )
        .await?;
        // The newest row's seq and hash, written in the same transaction as the row: deleting
        // rows from the end of the log breaks the match.
        m.create_table(
            Table::create()
                .table(id("audit_head"))
                .col(ColumnDef::new(id("id")).integer().not_null().primary_key())
                .col(ColumnDef::new(id("seq")).big_integer().not_null())
                .col(string("hash", 64))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("ix_audit_events_at", "at"),
            ("ix_audit_events_actor", "actor_id"),
            ("ix_audit_events_kind", "kind"),
            ("ix_audit_events_cluster", "cluster"),
            ("ix_audit_events_project", "project"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(id("audit_events"))
                    .col(id(col))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "audit_head",
            "audit_events",
            "api_keys",
            "one_time_tokens",
            "sessions",
            "bindings",
            "roles",
            "group_members",
            "groups",
            "projects",
            "login_throttle",
            "users",
            "org_settings",
            "organization",
        ] {
            m.drop_table(Table::drop().table(id(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
