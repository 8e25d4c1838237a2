//! Organization settings: name, session lifetimes, lockout policy, second factors, and who may
//! sign in with a local password.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, Set,
};
use serde_json::json;

use crate::access::{Action, Principal};
use crate::dto::{SettingsDto, UpdateSettingsRequest};
use crate::entities::{identity_providers, organization};
use crate::error::{DomainError, DomainResult};
use crate::permissions::Permission;
use crate::settings::{self, OrgSettings, LOCAL_SIGN_IN_BREAK_GLASS_ONLY};
use crate::types::Email;
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
        local_sign_in: s.local_sign_in.clone(),
        break_glass_users: s.break_glass_users.clone(),
        step_up_max_age_minutes: s.step_up_max_age_minutes,
        audit_retention_days: s.audit_retention_days,
    }
}

/// Whether an enabled identity provider exists (other than `except`, when given).
pub(crate) async fn enabled_provider_exists<C: ConnectionTrait>(
    db: &C,
    except: Option<&str>,
) -> DomainResult<bool> {
    let mut q =
        identity_providers::Entity::find().filter(identity_providers::Column::Enabled.eq(true));
    if let Some(id) = except {
        q = q.filter(identity_providers::Column::Id.ne(id));
    }
    Ok(q.count(db).await? > 0)
}

/// Refuse to leave the organization with local passwords restricted to break-glass accounts and
/// no enabled identity provider (disabling or deleting the last one).
pub(crate) async fn ensure_sign_in_remains<C: ConnectionTrait>(
    db: &C,
    s: &OrgSettings,
    except: &str,
) -> DomainResult<()> {
    if s.local_sign_in == LOCAL_SIGN_IN_BREAK_GLASS_ONLY
        && !enabled_provider_exists(db, Some(except)).await?
    {
        return Err(DomainError::conflict(
            "enabled",
            "local passwords are limited to break-glass accounts: this is the last enabled identity provider; allow local sign-in for everyone first (Settings)",
        ));
    }
    Ok(())
}

/// Break-glass accounts: existing, active, local users holding `settings.write` organization
/// wide (they can turn local sign-in back on). Answers their emails, normalised.
async fn check_break_glass(svc: &Services, raw: &[String]) -> DomainResult<Vec<String>> {
    let bad = |msg: String| DomainError::invalid("break_glass_users", msg);
    let mut out: Vec<String> = Vec::new();
    for e in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let email = Email::parse(e).map_err(|_| bad(format!("{e} is not an email address")))?;
        let user = crate::identity::accounts::find_by_email(&svc.db, &email)
            .await?
            .filter(|u| u.status == crate::identity::accounts::STATUS_ACTIVE)
            .ok_or_else(|| bad(format!("{e} is not an active Warden user")))?;
        if user.origin != crate::identity::accounts::ORIGIN_LOCAL {
            return Err(bad(format!(
                "{e} signs in with an identity provider, not a local password"
            )));
        }
        let uid = crate::identity::accounts::user_id(&user)?;
        if !svc
            .policy
            .effective(uid)
            .await?
            .org_permissions()
            .contains(&Permission::SettingsWrite)
        {
            return Err(bad(format!(
                "{e} is not an organization administrator (settings.write)"
            )));
        }
        if !out.contains(&user.email) {
            out.push(user.email);
        }
    }
    Ok(out)
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
    if let Some(v) = req.local_sign_in {
        s.local_sign_in = v;
    }
    if let Some(v) = req.break_glass_users {
        let unchanged = v.len() == s.break_glass_users.len()
            && v.iter()
                .zip(&s.break_glass_users)
                .all(|(a, b)| a.trim().eq_ignore_ascii_case(b));
        if !unchanged {
            s.break_glass_users = check_break_glass(svc, &v).await?;
        }
    }
    if let Some(v) = req.step_up_max_age_minutes {
        s.step_up_max_age_minutes = v;
    }
    if let Some(v) = req.audit_retention_days {
        // Shortening the retention erases history: the record of everyone's actions, the
        // caller's included. That takes everything, not `settings.write` alone.
        let shorter = match (v, s.audit_retention_days) {
            (Some(new), Some(old)) => new < old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let floor = svc.retention.min_days();
        if v.is_some_and(|d| d < floor) {
            return Err(DomainError::invalid(
                "audit_retention_days",
                format!(
                    "at least {floor} days: this deployment keeps that much history whatever the console says (WARDEN_AUDIT_RETENTION_MIN_DAYS)"
                ),
            ));
        }
        if shorter {
            super::bindings::refuse_unless_everything_held(
                svc,
                who,
                "a shorter audit retention erases the record of everyone's actions",
                "settings.update",
                "settings",
                "audit_retention_days",
            )
            .await?;
        }
        s.audit_retention_days = v;
    }
    // Who may sign in, and with what, decides who administers Warden: limiting local passwords
    // to a list of accounts ends every other administrator's session at once (and they are
    // never linked to a provider by email), and a laxer second-factor rule lets a stolen
    // password suffice. Like an identity provider's settings, that takes everything, not
    // `settings.write` alone.
    let rank = |p: &str| crate::settings::MFA_POLICIES.iter().position(|m| *m == p);
    let sign_in_changed =
        s.local_sign_in != before.local_sign_in || s.break_glass_users != before.break_glass_users;
    if sign_in_changed || rank(&s.mfa_policy) < rank(&before.mfa_policy) {
        super::bindings::refuse_unless_everything_held(
            svc,
            who,
            "who may sign in, and with what second factor, decides who administers Warden",
            "settings.update",
            "settings",
            if sign_in_changed {
                "local_sign_in"
            } else {
                "mfa_policy"
            },
        )
        .await?;
    }
    // Laxer guards against a stolen password or an unattended browser (more guesses before a
    // lock, shorter locks, a second factor proved longer ago, longer sessions) help whoever
    // is after another administrator's account: like a laxer second-factor rule, they take
    // everything. Stricter ones stay `settings.write`'s.
    let laxer = [
        (
            "lockout_threshold",
            s.lockout_threshold > before.lockout_threshold,
        ),
        (
            "lockout_window_minutes",
            s.lockout_window_minutes < before.lockout_window_minutes,
        ),
        (
            "lockout_minutes",
            s.lockout_minutes < before.lockout_minutes,
        ),
        (
            "step_up_max_age_minutes",
            s.step_up_max_age_minutes > before.step_up_max_age_minutes,
        ),
        (
            "session_idle_minutes",
            s.session_idle_minutes > before.session_idle_minutes,
        ),
        (
            "session_absolute_hours",
            s.session_absolute_hours > before.session_absolute_hours,
        ),
    ]
    .into_iter()
    .find_map(|(field, laxer)| laxer.then_some(field));
    if let Some(field) = laxer {
        super::bindings::refuse_unless_everything_held(
            svc,
            who,
            "laxer lockouts, second-factor freshness and sessions help whoever is after another administrator's account",
            "settings.update",
            "settings",
            field,
        )
        .await?;
    }
    s.validate()?;
    // No lockout: local passwords go off only while someone can sign in with a provider.
    if s.local_sign_in == LOCAL_SIGN_IN_BREAK_GLASS_ONLY
        && !enabled_provider_exists(&svc.db, None).await?
    {
        return Err(DomainError::invalid(
            "local_sign_in",
            "add and enable an identity provider before turning local passwords off",
        ));
    }
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
    // Sessions and what they opened answer to these: open terminals and streams are
    // re-checked now (a shorter session, an MFA policy that now covers their holder).
    if before.session_idle_minutes != after.session_idle_minutes
        || before.session_absolute_hours != after.session_absolute_hours
        || before.mfa_policy != after.mfa_policy
        || before.local_sign_in != after.local_sign_in
        || before.break_glass_users != after.break_glass_users
    {
        svc.policy.bump();
    }
    Ok(after)
}
