//! Local sign-in: password check with per-email throttling and lockout.
//!
//! The throttle is keyed by the email as typed (normalised), whether or not such a user
//! exists, so neither the answer nor the lockout tells an attacker which emails are real.

use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Set};

use crate::clock::Timestamp;
use crate::entities::{login_throttle, users};
use crate::error::DomainResult;
use crate::settings::OrgSettings;
use crate::types::Email;
use crate::{password, users as user_store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong email or password (or a deactivated account: not revealed either).
    InvalidCredentials,
    /// Too many failures: the account is locked until the given time.
    Locked { until: Timestamp },
}

#[derive(Debug)]
pub enum LoginOutcome {
    Success(users::Model),
    Failure(LoginFailure),
}

fn throttle_key(raw_email: &str) -> String {
    match Email::parse(raw_email) {
        Ok(e) => e.as_str().to_owned(),
        Err(_) => raw_email
            .trim()
            .to_ascii_lowercase()
            .chars()
            .take(254)
            .collect(),
    }
}

pub async fn authenticate(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    raw_email: &str,
    password_attempt: &str,
    now: Timestamp,
) -> DomainResult<LoginOutcome> {
    let key = throttle_key(raw_email);
    let throttle = login_throttle::Entity::find_by_id(key.clone())
        .one(db)
        .await?;
    if let Some(until) = throttle.as_ref().and_then(|t| t.locked_until) {
        if until > now.millis() {
            // Spend the same time as a real check.
            let _ = password::verify(password_attempt, None).await;
            return Ok(LoginOutcome::Failure(LoginFailure::Locked {
                until: Timestamp(until),
            }));
        }
    }

    let user = match Email::parse(raw_email) {
        Ok(email) => user_store::find_by_email(db, &email).await?,
        Err(_) => None,
    };
    let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let ok = password::verify(password_attempt, stored).await;
    let active = user
        .as_ref()
        .map(|u| u.status == user_store::STATUS_ACTIVE)
        .unwrap_or(false);

    if ok && active {
        if let Some(t) = throttle {
            login_throttle::Entity::delete_by_id(t.email)
                .exec(db)
                .await?;
        }
        let user = user.expect("ok implies a user");
        return Ok(LoginOutcome::Success(user));
    }

    // Count the failure.
    let window_ms = settings.lockout_window_minutes as i64 * 60_000;
    let (failures, window_start) = match &throttle {
        Some(t) if now.millis() - t.window_start < window_ms && t.locked_until.is_none() => {
            (t.failures + 1, t.window_start)
        }
        _ => (1, now.millis()),
    };
    let locked_until = (failures >= settings.lockout_threshold)
        .then(|| now.plus_secs(settings.lockout_minutes as i64 * 60).millis());
    match throttle {
        Some(t) => {
            let mut a = t.into_active_model();
            a.failures = Set(failures);
            a.window_start = Set(window_start);
            a.locked_until = Set(locked_until);
            a.update(db).await?;
        }
        None => {
            login_throttle::ActiveModel::from(login_throttle::Model {
                email: key,
                failures,
                window_start,
                locked_until,
            })
            .insert(db)
            .await?;
        }
    }
    Ok(LoginOutcome::Failure(match locked_until {
        Some(until) => LoginFailure::Locked {
            until: Timestamp(until),
        },
        None => LoginFailure::InvalidCredentials,
    }))
}

/// Lift a lockout (an administrator's password reset does this).
pub async fn clear_lockout(db: &DatabaseConnection, email: &Email) -> DomainResult<()> {
    login_throttle::Entity::delete_by_id(email.as_str().to_owned())
        .exec(db)
        .await?;
    Ok(())
}
