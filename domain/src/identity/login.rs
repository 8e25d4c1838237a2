//! Local sign-in: password check with per-email throttling and lockout.
//!
//! The throttle is keyed by the email as typed (normalised), whether or not such a user
//! exists, so neither the answer nor the lockout tells an attacker which emails are real.
//!
//! Every attempt is counted *before* its password is checked, in one atomic statement (an
//! upsert that also restarts an expired window and sets the lock, and returns the new row).
//! An attempt may check its password only if its own count is within the threshold, so a
//! burst of concurrent guesses gets at most `lockout_threshold` password checks in a window,
//! however many arrive at once; the rest are refused as locked (and still counted).

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult};

use super::{accounts as user_store, password};
use crate::clock::Timestamp;
use crate::entities::{login_throttle, users};
use crate::error::{DomainError, DomainResult};
use crate::settings::OrgSettings;
use crate::types::Email;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong email or password (or a deactivated account: not revealed either).
    InvalidCredentials,
    /// Too many failures: the account is locked until the given time. `password_checked`
    /// tells the audit log whether this attempt's password was checked (the failure that set
    /// the lock) or the attempt was refused without checking it. The caller sees no difference.
    Locked {
        until: Timestamp,
        password_checked: bool,
    },
}

#[derive(Debug)]
pub enum LoginOutcome {
    Success(users::Model),
    Failure(LoginFailure),
}

pub(crate) fn throttle_key(raw_email: &str) -> String {
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

/// Count one attempt for `key`, atomically, and return the throttle row as it is after it.
/// A lock this attempt sets ends at `lock_end`.
///
/// One statement, so it is atomic on SQLite and PostgreSQL alike (PostgreSQL's
/// `INSERT .. ON CONFLICT DO UPDATE` locks the row; SQLite has one writer):
/// - no row yet: insert `failures = 1`;
/// - the window has passed (or an old lock has expired): restart at `failures = 1`;
/// - else `failures + 1`, and the lock is set by the attempt that reaches the threshold.
pub(crate) async fn count_attempt(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    key: &str,
    now: Timestamp,
    lock_end: i64,
) -> DomainResult<login_throttle::Model> {
    use login_throttle::Column as C;
    let col = |c: C| Expr::col((login_throttle::Entity, c));
    let now_ms = now.millis();
    let window_ms = settings.lockout_window_minutes as i64 * 60_000;
    let threshold = settings.lockout_threshold;
    let first_lock: Option<i64> = (1 >= threshold).then_some(lock_end);

    // The right-hand sides of `DO UPDATE SET` all see the row as it was before the update.
    let restart = col(C::LockedUntil)
        .is_not_null()
        .and(col(C::LockedUntil).lte(now_ms))
        .or(col(C::LockedUntil)
            .is_null()
            .and(col(C::WindowStart).lte(now_ms - window_ms)));
    let failures = Expr::case(restart.clone(), 1).finally(col(C::Failures).add(1));
    let window_start = Expr::case(restart.clone(), now_ms).finally(col(C::WindowStart));
    let locked_until = Expr::case(restart, Expr::val(first_lock))
        .case(
            col(C::LockedUntil)
                .is_null()
                .and(col(C::Failures).add(1).gte(threshold)),
            lock_end,
        )
        .finally(col(C::LockedUntil));

    let mut stmt = Query::insert();
    stmt.into_table(login_throttle::Entity)
        .columns([C::Email, C::Failures, C::WindowStart, C::LockedUntil])
        .values_panic([key.into(), 1.into(), now_ms.into(), first_lock.into()])
        .on_conflict(
            OnConflict::column(C::Email)
                .value(C::Failures, failures)
                .value(C::WindowStart, window_start)
                .value(C::LockedUntil, locked_until)
                .to_owned(),
        )
        .returning_all();
    let row = db
        .query_one_raw(db.get_database_backend().build(&stmt))
        .await?
        .ok_or_else(|| DomainError::Internal("the login throttle upsert returned no row".into()))?;
    Ok(login_throttle::Model::from_query_result(&row, "")?)
}

/// Within the threshold, and not under a lock set earlier (only the attempt that reached the
/// threshold may find the lock, its own, already in place).
pub(crate) fn may_check(
    throttle: &login_throttle::Model,
    settings: &OrgSettings,
    lock_end: i64,
) -> bool {
    throttle.failures <= settings.lockout_threshold
        && throttle.locked_until.is_none_or(|until| until == lock_end)
}

/// Forget the failures counted under `key` (after a success).
pub(crate) async fn clear_attempts(db: &DatabaseConnection, key: &str) -> DomainResult<()> {
    login_throttle::Entity::delete_by_id(key.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

pub async fn authenticate(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    raw_email: &str,
    password_attempt: &str,
    now: Timestamp,
) -> DomainResult<LoginOutcome> {
    let key = throttle_key(raw_email);
    let lock_end = now.plus_secs(settings.lockout_minutes as i64 * 60).millis();
    let throttle = count_attempt(db, settings, &key, now, lock_end).await?;
    let may_check = may_check(&throttle, settings, lock_end);
    if !may_check {
        // Spend the same time as a real check.
        let _ = password::verify(password_attempt, None).await;
        let until = throttle.locked_until.unwrap_or(lock_end);
        return Ok(LoginOutcome::Failure(LoginFailure::Locked {
            until: Timestamp(until),
            password_checked: false,
        }));
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
        login_throttle::Entity::delete_by_id(key).exec(db).await?;
        let user = user.expect("ok implies a user");
        return Ok(LoginOutcome::Success(user));
    }

    // The failure is already counted; this attempt may be the one that set the lock.
    Ok(LoginOutcome::Failure(match throttle.locked_until {
        Some(until) => LoginFailure::Locked {
            until: Timestamp(until),
            password_checked: true,
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
