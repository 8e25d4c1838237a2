//! API keys: `Authorization: Bearer <key>` acts as the key's owner with the owner's rights.
//! The secret is shown once; only its SHA-256 is stored, with a visible prefix.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use super::ts;
use crate::access::Principal;
use crate::audit::SessionType;
use crate::dto::{ApiKeyDto, CreateApiKeyRequest, CreatedApiKey, Page};
use crate::entities::api_keys;
use crate::error::{DomainError, DomainResult, OnConstraint};
use crate::ids::ApiKeyId;
use crate::secrets::{random_token, sha256_hex};
use crate::Services;

pub const DEFAULT_DAYS: u32 = 90;
pub const MAX_DAYS: u32 = 365;

fn to_dto(k: &api_keys::Model) -> ApiKeyDto {
    ApiKeyDto {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: ts(k.created_at),
        expires_at: ts(k.expires_at),
        last_used_at: k.last_used_at.map(ts),
        revoked: k.revoked_at.is_some(),
    }
}

/// The caller's own keys.
pub async fn list(svc: &Services, who: &Principal) -> DomainResult<Page<ApiKeyDto>> {
    let rows = api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(who.user_id.to_string()))
        .order_by_desc(api_keys::Column::CreatedAt)
        .all(&svc.db)
        .await?;
    Ok(Page {
        items: rows.iter().map(to_dto).collect(),
        next: None,
    })
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateApiKeyRequest,
) -> DomainResult<CreatedApiKey> {
    let name = req.name.trim();
    // Keys are minted by a signed-in person only: a request authenticated by an API key (or
    // any credential other than a browser session) cannot create another key, so a leaked
    // key can neither multiply nor outlive its own expiry.
    if who.session_type != SessionType::Browser {
        let reason = format!(
            "API keys are created from a signed-in session, not with {} credentials",
            who.session_type.as_str()
        );
        svc.audit_denied(who, "api_key.create", "api_key", name, &reason)
            .await?;
        return Err(DomainError::forbidden(reason));
    }
    // A key downloads kubeconfigs and is never asked for a step-up itself: minting one takes
    // the fresh second factor a kubeconfig would (else a stale session gets round the step-up).
    if crate::identity::mfa::second_factor_is_stale(svc, who).await? {
        svc.audit_denied(
            who,
            "api_key.create",
            "api_key",
            name,
            "the last second factor is older than the organization's step-up age",
        )
        .await?;
        return Err(DomainError::StepUpRequired);
    }
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "name",
            "must be 1 to 128 characters with no control characters",
        ));
    }
    let days = req.expires_in_days.unwrap_or(DEFAULT_DAYS);
    if days == 0 || days > MAX_DAYS {
        return Err(DomainError::invalid(
            "expires_in_days",
            format!("must be between 1 and {MAX_DAYS}"),
        ));
    }
    let id = ApiKeyId::new();
    let prefix = format!("wdn_{}", &id.to_string()[..8]);
    let secret = format!("{prefix}_{}", random_token(32));
    let now = svc.clock.now();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = api_keys::ActiveModel::from(api_keys::Model {
        id: id.to_string(),
        user_id: who.user_id.to_string(),
        name: name.to_owned(),
        prefix,
        secret_hash: sha256_hex(secret.as_bytes()),
        expires_at: now.plus_secs(days as i64 * 86_400).millis(),
        last_used_at: None,
        revoked_at: None,
        created_at: now.millis(),
    })
    .insert(&tx)
    .await
    .on_unique(
        "uq_api_keys_secret_hash",
        "name",
        "could not create a unique key; try again",
    )?;
    let dto = to_dto(&m);
    svc.audit_change(
        &tx,
        who,
        "api_key.create",
        "api_key",
        &dto.prefix,
        None,
        None,
        Some(json!(dto)),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedApiKey { key: dto, secret })
}

pub async fn revoke(svc: &Services, who: &Principal, id: &str) -> DomainResult<()> {
    let k = api_keys::Entity::find_by_id(id.to_owned())
        .filter(api_keys::Column::UserId.eq(who.user_id.to_string()))
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("API key"))?;
    if k.revoked_at.is_some() {
        return Ok(());
    }
    let before = to_dto(&k);
    let mut a = k.into_active_model();
    a.revoked_at = Set(Some(svc.clock.now().millis()));
    let tx = crate::audit::begin_change(&svc.db).await?;
    let k = a.update(&tx).await?;
    // The kubeconfigs downloaded with the key end with it.
    let kubeconfigs =
        crate::kubectl::revoke_made_with_keys(&tx, std::slice::from_ref(&k.id), svc.clock.now())
            .await?;
    svc.audit_change(
        &tx,
        who,
        "api_key.revoke",
        "api_key",
        &k.prefix,
        None,
        Some(json!(before)),
        Some({
            let mut after = json!(to_dto(&k));
            after["kubeconfigs_revoked"] = json!(kubeconfigs);
            after
        }),
    )
    .await?;
    tx.commit().await?;
    // A terminal or a stream opened with the key is re-checked now, not at its next tick.
    svc.policy.bump();
    Ok(())
}

/// Revoke every live API key of another user (an administrator's password reset). The caller
/// has already passed the gate for `user.write`. Audited once, with the prefixes revoked.
pub async fn revoke_all_of(svc: &Services, who: &Principal, user_id: &str) -> DomainResult<u64> {
    let tx = crate::audit::begin_change(&svc.db).await?;
    let n = revoke_all_in(svc, &tx, Some(who), user_id).await?;
    tx.commit().await?;
    if n > 0 {
        svc.policy.bump();
    }
    Ok(n)
}

/// Revoke every live API key of `user_id` inside `tx`, with its audit event (none when there
/// was nothing to revoke): what a password reset may and a deactivation does. `who`: the
/// person who asked; none: the operator's command line.
pub(crate) async fn revoke_all_in<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    tx: &C,
    who: Option<&Principal>,
    user_id: &str,
) -> DomainResult<u64> {
    let now = svc.clock.now().millis();
    let live = api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id.to_owned()))
        .filter(api_keys::Column::RevokedAt.is_null())
        .all(tx)
        .await?;
    if live.is_empty() {
        return Ok(0);
    }
    let prefixes: Vec<String> = live.iter().map(|k| k.prefix.clone()).collect();
    let ids: Vec<String> = live.iter().map(|k| k.id.clone()).collect();
    crate::kubectl::revoke_made_with_keys(tx, &ids, svc.clock.now()).await?;
    let r = api_keys::Entity::update_many()
        .col_expr(
            api_keys::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(api_keys::Column::UserId.eq(user_id.to_owned()))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(tx)
        .await?;
    let ev = crate::audit::AuditEvent::by_or_system(
        who,
        crate::audit::AuditKind::Console,
        "api_key.revoke_all",
        crate::audit::Outcome::Allowed,
    )
    .resource("user", user_id)
    .details(json!({"before": {"prefixes": prefixes}, "after": null}));
    crate::audit::append(tx, svc.clock.now(), vec![ev]).await?;
    Ok(r.rows_affected)
}
