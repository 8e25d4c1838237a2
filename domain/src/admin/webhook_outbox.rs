//! Durable webhook deliveries (issue 17). An access-request event writes its delivery into the
//! outbox inside the event's own transaction (so a delivery exists exactly when the event
//! does); the server's worker ([`claim_due`], then [`delivered`] or [`failed`]) posts it with
//! exponential backoff and gives up after [`MAX_ATTEMPTS`], auditing the give-up
//! (`webhook.delivery.failed`). Rows survive a restart; a claim is a short lease, so a delivery
//! interrupted by a crash is tried again (at least once; a receiver may see a repeat only when
//! Warden died between its answer and the row's update). The destination is the organization's
//! webhook setting at delivery time: never stored here, never logged.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::{json, Value};

use crate::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
use crate::entities::webhook_outbox;
use crate::error::DomainResult;
use crate::Services;

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";
pub const DROPPED: &str = "dropped";

/// Attempts before giving up (the first one included).
pub const MAX_ATTEMPTS: i32 = 8;
/// The wait after the first failure; it doubles after each further failure, up to
/// [`MAX_BACKOFF_SECS`].
pub const FIRST_BACKOFF_SECS: i64 = 2;
pub const MAX_BACKOFF_SECS: i64 = 3600;
/// How long a claimed delivery is left to its worker before another may take it.
pub const LEASE_SECS: i64 = 60;

/// Attempts before giving up on a delivery of `event`. A break-glass alert is the one
/// notification that must not be lost to a receiver that is down or swamped: it is tried for
/// about fourteen hours (every hour after the first few), the others for about four minutes.
pub fn max_attempts(event: &str) -> i32 {
    if event == BREAK_GLASS {
        24
    } else {
        MAX_ATTEMPTS
    }
}

const BREAK_GLASS: &str = "access_request.break_glass";

/// The longest wait a receiver's `Retry-After` is followed for (longer asks wait this much).
pub const MAX_THROTTLE_SECS: i64 = 300;

/// The wait before attempt `attempts + 1`, after `attempts` failures (1, 2, ...).
pub fn backoff_secs(attempts: i32) -> i64 {
    let shift = (attempts.max(1) - 1).min(20) as u32;
    (FIRST_BACKOFF_SECS << shift).min(MAX_BACKOFF_SECS)
}

/// Queue a delivery of `payload` inside the caller's transaction, if the organization has a
/// webhook. Returns whether one was queued (the caller then wakes the worker after commit).
pub async fn enqueue<C: ConnectionTrait>(
    tx: &C,
    svc: &Services,
    event: &str,
    payload: &Value,
) -> DomainResult<bool> {
    if super::jit_settings::load(tx).await?.webhook_url.is_none() {
        return Ok(false);
    }
    let now = svc.clock.now().millis();
    webhook_outbox::ActiveModel::from(webhook_outbox::Model {
        id: uuid::Uuid::new_v4().to_string(),
        event: event.to_owned(),
        payload: payload.to_string(),
        status: PENDING.to_owned(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        updated_at: now,
        delivered_at: None,
    })
    .insert(tx)
    .await?;
    Ok(true)
}

/// A delivery claimed by a worker. Its `Debug` leaves the URL out.
#[derive(Clone)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub payload: Value,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The organization's webhook now. A secret: never log it.
    pub url: String,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("event", &self.event)
            .field("attempts", &self.attempts)
            .field("url", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Claim up to `limit` deliveries that are due. With no webhook configured any more, pending
/// deliveries are dropped (there is nowhere to send them).
pub async fn claim_due(svc: &Services, limit: u64) -> DomainResult<Vec<Delivery>> {
    let now = svc.clock.now().millis();
    if svc.jit.receiver_busy(now) {
        return Ok(vec![]);
    }
    // Break-glass alerts first: a flood of other notifications does not delay them.
    let rows = webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq(PENDING))
        .filter(webhook_outbox::Column::NextAttemptAt.lte(now))
        .order_by(
            webhook_outbox::Column::Event.eq(BREAK_GLASS),
            sea_orm::Order::Desc,
        )
        .order_by_asc(webhook_outbox::Column::NextAttemptAt)
        .limit(limit)
        .all(&svc.db)
        .await?;
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let Some(url) = super::jit_settings::load_open(svc, &svc.db)
        .await?
        .webhook_url
    else {
        webhook_outbox::Entity::update_many()
            .col_expr(webhook_outbox::Column::Status, Expr::value(DROPPED))
            .col_expr(webhook_outbox::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                webhook_outbox::Column::LastError,
                Expr::value("no webhook configured any more"),
            )
            .filter(webhook_outbox::Column::Status.eq(PENDING))
            .exec(&svc.db)
            .await?;
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for r in rows {
        // The lease: only the worker whose update matched the row as it read it proceeds.
        let claimed = webhook_outbox::Entity::update_many()
            .col_expr(
                webhook_outbox::Column::NextAttemptAt,
                Expr::value(now + LEASE_SECS * 1000),
            )
            .col_expr(webhook_outbox::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_outbox::Column::Id.eq(r.id.clone()))
            .filter(webhook_outbox::Column::Status.eq(PENDING))
            .filter(webhook_outbox::Column::NextAttemptAt.eq(r.next_attempt_at))
            .exec(&svc.db)
            .await?
            .rows_affected
            == 1;
        if claimed {
            out.push(Delivery {
                id: r.id,
                event: r.event,
                payload: serde_json::from_str(&r.payload).unwrap_or(Value::Null),
                attempts: r.attempts,
                url: url.clone(),
            });
        }
    }
    Ok(out)
}

/// The receiver accepted it.
pub async fn delivered(svc: &Services, d: &Delivery) -> DomainResult<()> {
    let now = svc.clock.now().millis();
    webhook_outbox::Entity::update_many()
        .col_expr(webhook_outbox::Column::Status, Expr::value(DELIVERED))
        .col_expr(
            webhook_outbox::Column::Attempts,
            Expr::value(d.attempts + 1),
        )
        .col_expr(webhook_outbox::Column::DeliveredAt, Expr::value(now))
        .col_expr(webhook_outbox::Column::UpdatedAt, Expr::value(now))
        .filter(webhook_outbox::Column::Id.eq(d.id.clone()))
        .exec(&svc.db)
        .await?;
    Ok(())
}

/// The attempt failed (`error`: a status code or an error kind, never the URL). Schedules the
/// next attempt, or gives up after [`MAX_ATTEMPTS`] and audits it; returns whether it gave up.
pub async fn failed(svc: &Services, d: &Delivery, error: &str) -> DomainResult<bool> {
    let now = svc.clock.now();
    let attempts = d.attempts + 1;
    let error: String = error.chars().take(500).collect();
    if attempts < max_attempts(&d.event) {
        webhook_outbox::Entity::update_many()
            .col_expr(webhook_outbox::Column::Attempts, Expr::value(attempts))
            .col_expr(
                webhook_outbox::Column::NextAttemptAt,
                Expr::value(now.millis() + backoff_secs(attempts) * 1000),
            )
            .col_expr(webhook_outbox::Column::LastError, Expr::value(error))
            .col_expr(webhook_outbox::Column::UpdatedAt, Expr::value(now.millis()))
            .filter(webhook_outbox::Column::Id.eq(d.id.clone()))
            .exec(&svc.db)
            .await?;
        return Ok(false);
    }
    let tx = crate::audit::begin_change(&svc.db).await?;
    webhook_outbox::Entity::update_many()
        .col_expr(webhook_outbox::Column::Status, Expr::value(FAILED))
        .col_expr(webhook_outbox::Column::Attempts, Expr::value(attempts))
        .col_expr(
            webhook_outbox::Column::LastError,
            Expr::value(error.clone()),
        )
        .col_expr(webhook_outbox::Column::UpdatedAt, Expr::value(now.millis()))
        .filter(webhook_outbox::Column::Id.eq(d.id.clone()))
        .exec(&tx)
        .await?;
    let mut ev = AuditEvent::new(
        AuditKind::System,
        Actor::System,
        SessionType::System,
        "webhook.delivery.failed",
        Outcome::Error,
    )
    .resource("webhook_delivery", d.id.clone())
    .reason(format!(
        "the webhook did not accept the {} notification after {attempts} attempts (last: {error})",
        d.event
    ))
    .details(json!({
        "event": d.event,
        "attempts": attempts,
        "last_error": error,
        "request": d.payload.get("request").and_then(|r| r.get("id")).cloned(),
    }));
    if let Some(p) = d
        .payload
        .get("request")
        .and_then(|r| r.get("project"))
        .and_then(Value::as_str)
    {
        ev = ev.project(p.to_owned());
    }
    crate::audit::append(&tx, now, vec![ev]).await?;
    tx.commit().await?;
    Ok(true)
}

/// The receiver asked to slow down (HTTP 429): try `d` again after `wait_secs` (its
/// `Retry-After`, at most [`MAX_THROTTLE_SECS`]), without counting an attempt, and post
/// nothing else to it before (a receiver swamped by a flood of notifications does not use up
/// the attempts of the ones that matter).
pub async fn throttled(svc: &Services, d: &Delivery, wait_secs: i64) -> DomainResult<()> {
    let now = svc.clock.now().millis();
    let wait = wait_secs.clamp(1, MAX_THROTTLE_SECS);
    svc.jit.receiver_busy_until(now + wait * 1000);
    webhook_outbox::Entity::update_many()
        .col_expr(
            webhook_outbox::Column::NextAttemptAt,
            Expr::value(now + wait * 1000),
        )
        .col_expr(
            webhook_outbox::Column::LastError,
            Expr::value(format!("HTTP 429: the receiver asked to wait {wait} s")),
        )
        .col_expr(webhook_outbox::Column::UpdatedAt, Expr::value(now))
        .filter(webhook_outbox::Column::Id.eq(d.id.clone()))
        .filter(webhook_outbox::Column::Status.eq(PENDING))
        .exec(&svc.db)
        .await?;
    Ok(())
}

/// How long a delivery is kept once it is done with (delivered, given up or dropped).
pub const KEEP_DONE_DAYS: i64 = 7;

/// Delete the deliveries done with for longer than [`KEEP_DONE_DAYS`]: the outbox does not
/// grow for ever, and payloads (emails, reasons, comments) do not outlive their use. The
/// audit log keeps what happened. Returns how many were deleted.
pub async fn purge(svc: &Services) -> DomainResult<u64> {
    let before = svc.clock.now().millis() - KEEP_DONE_DAYS * 86_400_000;
    Ok(webhook_outbox::Entity::delete_many()
        .filter(webhook_outbox::Column::Status.ne(PENDING))
        .filter(webhook_outbox::Column::UpdatedAt.lt(before))
        .exec(&svc.db)
        .await?
        .rows_affected)
}

/// The earliest time a pending delivery is due, for the worker's sleep.
pub async fn next_due(svc: &Services) -> DomainResult<Option<i64>> {
    Ok(webhook_outbox::Entity::find()
        .filter(webhook_outbox::Column::Status.eq(PENDING))
        .order_by_asc(webhook_outbox::Column::NextAttemptAt)
        .one(&svc.db)
        .await?
        .map(|r| r.next_attempt_at))
}

/// Deliveries in the outbox (newest first), for tests and operators.
pub async fn list(svc: &Services) -> DomainResult<Vec<webhook_outbox::Model>> {
    Ok(webhook_outbox::Entity::find()
        .order_by_desc(webhook_outbox::Column::CreatedAt)
        .all(&svc.db)
        .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_is_capped() {
        use super::*;
        assert_eq!(backoff_secs(1), 2);
        assert_eq!(backoff_secs(2), 4);
        assert_eq!(backoff_secs(3), 8);
        assert_eq!(backoff_secs(7), 128);
        assert_eq!(backoff_secs(40), MAX_BACKOFF_SECS);
    }
}
