//! Durable webhook deliveries (issue 17): an outbox row is written in the same transaction as
//! the access-request event that causes it, and a background worker delivers it with
//! exponential backoff and a bounded number of attempts, across restarts. The destination is
//! read from the organization's setting at delivery time (a URL changed because it leaked is
//! never used again), so no copy of the URL (which may carry a token) is stored here.

use sea_orm_migration::prelude::*;

use crate::columns::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(id("webhook_outbox"))
                .col(uuid_pk())
                // `access_request.create`, `access_request.approved`, ...
                .col(string("event", 64))
                // The JSON body (with the Slack-compatible `text`).
                .col(text("payload"))
                // `pending`, `delivered`, `failed` (gave up), `dropped` (no webhook any more).
                .col(string("status", 16))
                .col(int("attempts"))
                .col(millis("next_attempt_at"))
                // Why the last attempt failed: a status code or an error kind, never the URL.
                .col(text_null("last_error"))
                .col(millis("created_at"))
                .col(millis("updated_at"))
                .col(millis_null("delivered_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_outbox_due")
                .table(id("webhook_outbox"))
                .col(id("status"))
                .col(id("next_attempt_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(id("webhook_outbox")).to_owned())
            .await
    }
}
