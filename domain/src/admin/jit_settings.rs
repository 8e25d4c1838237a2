//! The organization's just-in-time settings: roles that must be bound with an expiry (and its
//! maximum), how long a pending access request lives, two approvals for write roles, and the
//! webhook that hears about requests. One row; defaults when absent.

use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
use serde_json::json;

use crate::access::{Action, Principal};
use crate::clock::Timestamp;
use crate::dto::{JitSettingsDto, RequiredExpiry, UpdateJitSettingsRequest};
use crate::entities::jit_settings;
use crate::error::{DomainError, DomainResult};
use crate::permissions::Permission;
use crate::Services;

const ROW: i32 = 1;
/// A pending request lapses after a day unless the organization says otherwise.
pub const DEFAULT_REQUEST_TTL_SECS: i64 = 24 * 3600;

pub async fn load<C: sea_orm::ConnectionTrait>(db: &C) -> DomainResult<JitSettingsDto> {
    Ok(match jit_settings::Entity::find_by_id(ROW).one(db).await? {
        Some(m) => JitSettingsDto {
            required_expiry: serde_json::from_str(&m.required_expiry).unwrap_or_default(),
            request_ttl_secs: m.request_ttl_secs,
            two_approvals_for_write: m.two_approvals_for_write,
            webhook_url: m.webhook_url,
            break_glass_roles: serde_json::from_str(&m.break_glass).unwrap_or_default(),
        },
        None => JitSettingsDto {
            required_expiry: vec![],
            request_ttl_secs: DEFAULT_REQUEST_TTL_SECS,
            two_approvals_for_write: false,
            webhook_url: None,
            break_glass_roles: vec![],
        },
    })
}

/// `Ok(Err(message))` when the organization requires an expiry for `role` and `expires_at`
/// is missing or beyond the maximum.
pub async fn check_required_expiry(
    svc: &Services,
    role: &str,
    expires_at: Option<i64>,
    now: Timestamp,
) -> DomainResult<Result<(), String>> {
    let s = load(&svc.db).await?;
    let Some(rule) = s
        .required_expiry
        .iter()
        .find(|r| r.role.eq_ignore_ascii_case(role))
    else {
        return Ok(Ok(()));
    };
    Ok(match expires_at {
        None => Err(format!(
            "the organization requires an expiry for role {role} (at most {})",
            crate::dto::jit_duration(rule.max_secs)
        )),
        Some(t) if t - now.millis() > rule.max_secs * 1000 + 1000 => Err(format!(
            "role {role} may be granted for at most {}",
            crate::dto::jit_duration(rule.max_secs)
        )),
        Some(_) => Ok(()),
    })
}

pub async fn get(svc: &Services, who: &Principal) -> DomainResult<JitSettingsDto> {
    svc.gate(who, Action::org(Permission::SettingsRead)).await?;
    load(&svc.db).await
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    req: UpdateJitSettingsRequest,
) -> DomainResult<JitSettingsDto> {
    svc.gate(who, Action::org(Permission::SettingsWrite))
        .await?;
    let before = load(&svc.db).await?;
    let mut s = before.clone();
    let mut fields = std::collections::BTreeMap::new();
    if let Some(rules) = req.required_expiry {
        s.required_expiry = role_rules(svc, rules, "required_expiry", &mut fields).await?;
    }
    if let Some(rules) = req.break_glass_roles {
        s.break_glass_roles = role_rules(svc, rules, "break_glass_roles", &mut fields).await?;
        if s.break_glass_roles
            .iter()
            .any(|r| r.max_secs > MAX_BREAK_GLASS_SECS)
        {
            fields.insert(
                "break_glass_roles".to_owned(),
                "break-glass access lasts at most a day".to_owned(),
            );
        }
    }
    if let Some(v) = req.request_ttl_secs {
        if !(60..=30 * 24 * 3600).contains(&v) {
            fields.insert(
                "request_ttl_secs".to_owned(),
                "must be between 60 and 30 days".to_owned(),
            );
        }
        s.request_ttl_secs = v;
    }
    if let Some(v) = req.two_approvals_for_write {
        s.two_approvals_for_write = v;
    }
    if let Some(url) = req.webhook_url {
        let url = url.trim().to_owned();
        if url.is_empty() {
            s.webhook_url = None;
        } else if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 {
            fields.insert(
                "webhook_url".to_owned(),
                "must be an http(s) URL".to_owned(),
            );
        } else {
            s.webhook_url = Some(url);
        }
    }
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    let now = svc.clock.now().millis();
    let rules = serde_json::to_string(&s.required_expiry).unwrap_or_else(|_| "[]".into());
    let glass = serde_json::to_string(&s.break_glass_roles).unwrap_or_else(|_| "[]".into());
    let tx = crate::audit::begin_change(&svc.db).await?;
    match jit_settings::Entity::find_by_id(ROW).one(&tx).await? {
        Some(m) => {
            let mut a = m.into_active_model();
            a.required_expiry = Set(rules);
            a.request_ttl_secs = Set(s.request_ttl_secs);
            a.two_approvals_for_write = Set(s.two_approvals_for_write);
            a.webhook_url = Set(s.webhook_url.clone());
            a.break_glass = Set(glass);
            a.updated_at = Set(now);
            a.update(&tx).await?;
        }
        None => {
            jit_settings::ActiveModel::from(jit_settings::Model {
                id: ROW,
                required_expiry: rules,
                request_ttl_secs: s.request_ttl_secs,
                two_approvals_for_write: s.two_approvals_for_write,
                webhook_url: s.webhook_url.clone(),
                break_glass: glass,
                updated_at: now,
            })
            .insert(&tx)
            .await?;
        }
    }
    svc.audit_change(
        &tx,
        who,
        "settings.jit.update",
        "settings",
        "just-in-time access",
        None,
        Some(json!(before)),
        Some(json!(s)),
    )
    .await?;
    tx.commit().await?;
    Ok(s)
}

/// Break-glass access lasts at most this long.
pub const MAX_BREAK_GLASS_SECS: i64 = 24 * 3600;

/// Role rules (`{"role", "max_secs"}`) with their roles resolved to their canonical names; bad
/// ones are reported under `field`.
async fn role_rules(
    svc: &Services,
    rules: Vec<RequiredExpiry>,
    field: &str,
    fields: &mut std::collections::BTreeMap<String, String>,
) -> DomainResult<Vec<RequiredExpiry>> {
    let mut out: Vec<RequiredExpiry> = Vec::new();
    for r in rules {
        match super::roles::find(&svc.db, r.role.trim()).await {
            Ok(role) if (60..=super::bindings::MAX_EXPIRY_SECS).contains(&r.max_secs) => {
                out.retain(|o| o.role != role.name);
                out.push(RequiredExpiry {
                    role: role.name,
                    max_secs: r.max_secs,
                });
            }
            Ok(_) => {
                fields.insert(
                    field.to_owned(),
                    "max_secs must be between 60 and a year".to_owned(),
                );
            }
            Err(DomainError::NotFound { .. }) => {
                fields.insert(field.to_owned(), format!("no role named {:?}", r.role));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
