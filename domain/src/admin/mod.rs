//! The access model's use cases: projects, users, groups, roles, bindings, API keys, settings.
//! Every function authenticates nothing (the transport did) and authorizes everything: it asks
//! the gate first, then acts, then audits with before and after values, then bumps the
//! authorization epoch when a decision may have changed.

pub mod access_requests;
pub mod api_keys;
pub mod bindings;
pub mod cursor;
pub mod groups;
pub mod identity_providers;
pub mod jit_settings;
pub mod org_settings;
pub mod overview;
pub mod projects;
pub mod roles;
pub mod webhook_outbox;

use sea_orm::ExprTrait;
use serde_json::Value;

use crate::access::{Action, Grant, Principal};
use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::clock::Timestamp;
use crate::error::{DomainError, DomainResult};
use crate::Services;

/// Lookups take a name or an id (`projects::find`): a new name shaped like an id (a UUID, in
/// any of its spellings) could be taken for another object's id by whoever acts on it.
pub(crate) fn refuse_id_shaped(name: &str) -> DomainResult<()> {
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(DomainError::invalid(
            "name",
            "must not look like an id (a UUID): objects are looked up by name or id",
        ));
    }
    Ok(())
}

/// Whether another row of `E` has `name` in any letter case (`Developers` and `developers` are
/// one name to people). Names never change after creation, so creation checks this; the
/// unique index on the exact name stays the guard against a race.
pub(crate) async fn name_taken_ignoring_case<E, C>(
    db: &C,
    column: E::Column,
    name: &str,
) -> DomainResult<bool>
where
    E: sea_orm::EntityTrait,
    E::Model: Send + Sync,
    C: sea_orm::ConnectionTrait,
{
    use sea_orm::sea_query::{Expr, Func};
    use sea_orm::{PaginatorTrait, QueryFilter};
    let n = E::find()
        .filter(Expr::expr(Func::lower(Expr::col(column))).eq(name.to_lowercase()))
        .count(db)
        .await?;
    Ok(n > 0)
}

pub(crate) fn ts(ms: i64) -> String {
    Timestamp(ms).rfc3339()
}

impl Services {
    /// Ask the gate; a denial becomes `Forbidden` (already audited by the gate).
    pub async fn gate(&self, who: &Principal, action: Action) -> DomainResult<Grant> {
        self.policy
            .authorize(who, action)
            .await
            .map_err(|d| DomainError::forbidden(d.reason))
    }

    /// Audit a change made by `who`, with before and after values, inside the change's own
    /// transaction `tx`: the change and its audit event are stored together or not at all.
    #[allow(clippy::too_many_arguments)]
    pub async fn audit_change<C: sea_orm::ConnectionTrait>(
        &self,
        tx: &C,
        who: &Principal,
        action: &str,
        kind: &str,
        name: &str,
        project: Option<&str>,
        before: Option<Value>,
        after: Option<Value>,
    ) -> DomainResult<()> {
        let mut ev = AuditEvent::by(who, AuditKind::Console, action, Outcome::Allowed)
            .resource(kind, name)
            .details(serde_json::json!({ "before": before, "after": after }));
        if let Some(p) = project {
            ev = ev.project(p);
        }
        crate::audit::append(tx, self.clock.now(), vec![ev]).await
    }

    /// Audit a refusal that is not the gate's (e.g. self-escalation detected by a use case).
    pub async fn audit_denied(
        &self,
        who: &Principal,
        action: &str,
        kind: &str,
        name: &str,
        reason: &str,
    ) -> DomainResult<()> {
        self.audit
            .record(
                AuditEvent::by(who, AuditKind::Console, action, Outcome::Denied)
                    .resource(kind, name)
                    .reason(reason),
            )
            .await
    }
}
