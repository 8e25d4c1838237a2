//! Organization settings: name, session lifetimes, lockout policy.

use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
use serde_json::json;

use crate::access::{Action, Principal};
use crate::dto::{SettingsDto, UpdateSettingsRequest};
use crate::entities::organization;
use crate::error::{DomainError, DomainResult};
use crate::permissions::Permission;
use crate::settings::{self, OrgSettings};
use crate::Services;

async fn current(svc: &Services) -> DomainResult<(organization::Model, OrgSettings)> {
    let org = organization::Entity::find()
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::Internal("organization missing".into()))?;
    Ok((org, settings::load(&svc.db).await?))
}

fn to_dto(org: &organization::Model, s: &OrgSettings) -> SettingsDto {
    SettingsDto {
        organization_name: org.name.clone(),
        session_idle_minutes: s.session_idle_minutes,
        session_absolute_hours: s.session_absolute_hours,
        lockout_threshold: s.lockout_threshold,
        lockout_window_minutes: s.lockout_window_minutes,
        lockout_minutes: s.lockout_minutes,
        mfa_policy: s.mfa_policy.clone(),
    }
}

pub async fn get(svc: &Services, who: &Principal) -> DomainResult<SettingsDto> {
    svc.gate(who, Action::org(Permission::SettingsRead)).await?;
    let (org, s) = current(svc).await?;
    Ok(to_dto(&org, &s))
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    req: UpdateSettingsRequest,
) -> DomainResult<SettingsDto> {
    svc.gate(who, Action::org(Permission::SettingsWrite))
        .await?;
    let (org, mut s) = current(svc).await?;
    let before = to_dto(&org, &s);
    if let Some(v) = req.session_idle_minutes {
        s.session_idle_minutes = v;
    }
    if let Some(v) = req.session_absolute_hours {
        s.session_absolute_hours = v;
    }
    if let Some(v) = req.lockout_threshold {
        s.lockout_threshold = v;
    }
    if let Some(v) = req.lockout_window_minutes {
        s.lockout_window_minutes = v;
    }
    if let Some(v) = req.lockout_minutes {
        s.lockout_minutes = v;
    }
    if let Some(v) = req.mfa_policy {
        s.mfa_policy = v;
    }
    s.validate()?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let org = match req.organization_name {
        Some(n) => {
            let n = n.trim();
            if n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control) {
                return Err(DomainError::invalid(
                    "organization_name",
                    "must be 1 to 128 characters",
                ));
            }
            let mut a = org.into_active_model();
            a.name = Set(n.to_owned());
            a.update(&tx).await?
        }
        None => org,
    };
    settings::save(&tx, &s, svc.clock.now()).await?;
    let after = to_dto(&org, &s);
    svc.audit_change(
        &tx,
        who,
        "settings.update",
        "settings",
        "organization",
        None,
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}
