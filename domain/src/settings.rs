//! Organization settings: one typed row.

use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Set};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::entities::org_settings;
use crate::error::{DomainError, DomainResult};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSettings {
    /// A browser session ends after this long without a request.
    pub session_idle_minutes: i32,
    /// A browser session ends this long after sign-in, whatever happens.
    pub session_absolute_hours: i32,
    /// Failed sign-ins within the window that lock an account.
    pub lockout_threshold: i32,
    pub lockout_window_minutes: i32,
    /// How long a locked account stays locked.
    pub lockout_minutes: i32,
    /// Who must sign in with a second factor: `nobody`, `admins` or `everyone`.
    pub mfa_policy: String,
    /// Who may sign in with a local password: `everyone` or `break_glass_only`.
    pub local_sign_in: String,
    /// Emails (lowercase) that keep their local password under `break_glass_only`.
    pub break_glass_users: Vec<String>,
    /// How old a second factor may be before a step-up asks for a fresh one.
    pub step_up_max_age_minutes: i32,
    /// Audit events older than this many days are deleted (in batches, keeping the chain
    /// verifiable); `None` keeps them forever.
    #[serde(default)]
    pub audit_retention_days: Option<i32>,
}

pub const MFA_POLICIES: [&str; 3] = ["nobody", "admins", "everyone"];
pub const LOCAL_SIGN_IN_EVERYONE: &str = "everyone";
pub const LOCAL_SIGN_IN_BREAK_GLASS_ONLY: &str = "break_glass_only";
/// The longest retention that can be set (100 years).
pub const MAX_AUDIT_RETENTION_DAYS: i32 = 36_500;
/// At most this many break-glass accounts.
pub const MAX_BREAK_GLASS_USERS: usize = 10;

impl Default for OrgSettings {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            lockout_threshold: 5,
            lockout_window_minutes: 15,
            lockout_minutes: 15,
            mfa_policy: "nobody".to_owned(),
            local_sign_in: LOCAL_SIGN_IN_EVERYONE.to_owned(),
            break_glass_users: vec![],
            step_up_max_age_minutes: 60,
            audit_retention_days: None,
        }
    }
}

impl OrgSettings {
    /// Whether `email` may sign in with a local password.
    pub fn allows_local_sign_in(&self, email: &str) -> bool {
        self.local_sign_in != LOCAL_SIGN_IN_BREAK_GLASS_ONLY
            || self
                .break_glass_users
                .iter()
                .any(|e| e.eq_ignore_ascii_case(email))
    }

    pub fn validate(&self) -> DomainResult<()> {
        let mut fields = std::collections::BTreeMap::new();
        let mut check = |name: &str, v: i32, lo: i32, hi: i32| {
            if v < lo || v > hi {
                fields.insert(name.to_owned(), format!("must be between {lo} and {hi}"));
            }
        };
        check(
            "session_idle_minutes",
            self.session_idle_minutes,
            1,
            24 * 60,
        );
        check(
            "session_absolute_hours",
            self.session_absolute_hours,
            1,
            24 * 30,
        );
        check("lockout_threshold", self.lockout_threshold, 1, 100);
        check(
            "lockout_window_minutes",
            self.lockout_window_minutes,
            1,
            24 * 60,
        );
        check("lockout_minutes", self.lockout_minutes, 1, 24 * 60);
        check(
            "step_up_max_age_minutes",
            self.step_up_max_age_minutes,
            1,
            24 * 60,
        );
        if let Some(days) = self.audit_retention_days {
            check("audit_retention_days", days, 1, MAX_AUDIT_RETENTION_DAYS);
        }
        if ![LOCAL_SIGN_IN_EVERYONE, LOCAL_SIGN_IN_BREAK_GLASS_ONLY]
            .contains(&self.local_sign_in.as_str())
        {
            fields.insert(
                "local_sign_in".to_owned(),
                "must be everyone or break_glass_only".to_owned(),
            );
        }
        if self.break_glass_users.len() > MAX_BREAK_GLASS_USERS {
            fields.insert(
                "break_glass_users".to_owned(),
                format!("at most {MAX_BREAK_GLASS_USERS} accounts"),
            );
        } else if self.local_sign_in == LOCAL_SIGN_IN_BREAK_GLASS_ONLY
            && self.break_glass_users.is_empty()
        {
            fields.insert(
                "break_glass_users".to_owned(),
                "name at least one administrator who keeps a local password".to_owned(),
            );
        }
        if !MFA_POLICIES.contains(&self.mfa_policy.as_str()) {
            fields.insert(
                "mfa_policy".to_owned(),
                "must be nobody, admins or everyone".to_owned(),
            );
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid { fields })
        }
    }
}

const ROW: i32 = 1;

pub async fn load(db: &DatabaseConnection) -> DomainResult<OrgSettings> {
    Ok(match org_settings::Entity::find_by_id(ROW).one(db).await? {
        Some(m) => OrgSettings {
            session_idle_minutes: m.session_idle_minutes,
            session_absolute_hours: m.session_absolute_hours,
            lockout_threshold: m.lockout_threshold,
            lockout_window_minutes: m.lockout_window_minutes,
            lockout_minutes: m.lockout_minutes,
            mfa_policy: m.mfa_policy,
            local_sign_in: m.local_sign_in,
            break_glass_users: serde_json::from_str(&m.break_glass_users).unwrap_or_default(),
            step_up_max_age_minutes: m.step_up_max_age_minutes,
            audit_retention_days: m.audit_retention_days,
        },
        None => OrgSettings::default(),
    })
}

pub async fn save<C: sea_orm::ConnectionTrait>(
    db: &C,
    s: &OrgSettings,
    now: Timestamp,
) -> DomainResult<()> {
    s.validate()?;
    let model = org_settings::Model {
        id: ROW,
        session_idle_minutes: s.session_idle_minutes,
        session_absolute_hours: s.session_absolute_hours,
        lockout_threshold: s.lockout_threshold,
        lockout_window_minutes: s.lockout_window_minutes,
        lockout_minutes: s.lockout_minutes,
        mfa_policy: s.mfa_policy.clone(),
        local_sign_in: s.local_sign_in.clone(),
        break_glass_users: serde_json::to_string(&s.break_glass_users)
            .unwrap_or_else(|_| "[]".to_owned()),
        step_up_max_age_minutes: s.step_up_max_age_minutes,
        audit_retention_days: s.audit_retention_days,
        updated_at: now.millis(),
    };
    match org_settings::Entity::find_by_id(ROW).one(db).await? {
        Some(existing) => {
            let mut active = existing.into_active_model();
            active.session_idle_minutes = Set(model.session_idle_minutes);
            active.session_absolute_hours = Set(model.session_absolute_hours);
            active.lockout_threshold = Set(model.lockout_threshold);
            active.lockout_window_minutes = Set(model.lockout_window_minutes);
            active.lockout_minutes = Set(model.lockout_minutes);
            active.mfa_policy = Set(model.mfa_policy);
            active.local_sign_in = Set(model.local_sign_in);
            active.break_glass_users = Set(model.break_glass_users);
            active.step_up_max_age_minutes = Set(model.step_up_max_age_minutes);
            active.audit_retention_days = Set(model.audit_retention_days);
            active.updated_at = Set(model.updated_at);
            active.update(db).await?;
        }
        None => {
            org_settings::ActiveModel::from(model).insert(db).await?;
        }
    }
    Ok(())
}
