//! Local sign-in: password check with throttling and lockout.
//!
//! The throttle is keyed by the email as typed (normalised), whether or not such a user
//! exists, so neither the answer nor the lockout tells an attacker which emails are real.
//! Two counters apply to every attempt:
//!
//! - **per email and source network** (the client's address, an IPv6 one by its /64): the
//!   organization's `lockout_threshold` failures lock that source out of that account. Keyed
//!   by email alone, anyone could lock anyone out (the break-glass administrator included,
//!   when SSO is down) with five wrong passwords every quarter of an hour, from anywhere;
//! - **per email**, from every source together: [`ACCOUNT_FACTOR`] times the threshold locks
//!   the account for everyone, so guessing spread over many addresses stays bounded. Locking
//!   someone out then takes that many failures from as many networks.
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

/// How many times the per-source threshold locks an account from every source together.
pub const ACCOUNT_FACTOR: i32 = 10;

/// The network an address counts as for throttling: an IPv6 address by its /64 (one host
/// usually holds the whole /64), an IPv4-mapped IPv6 address as the IPv4 address.
pub fn network_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The throttle key of `raw_email` from `source` (an address as text; unknown: one source).
/// Hashed, so it fits the key column whatever the email's length; every source key of an
/// email begins with [`source_key_prefix`], for lifting them all at once.
pub(crate) fn source_key(raw_email: &str, source: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let net = source
        .and_then(|s| s.parse::<std::net::IpAddr>().ok())
        .map(|ip| network_of(ip).to_string())
        .unwrap_or_else(|| "unknown".into());
    let h = hex::encode(Sha256::digest(net.as_bytes()));
    format!("{}{}", source_key_prefix(raw_email), &h[..16])
}

pub(crate) fn source_key_prefix(raw_email: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(throttle_key(raw_email).as_bytes()));
    format!("src:{}:", &h[..32])
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
    count_attempt_up_to(db, settings, settings.lockout_threshold, key, now, lock_end).await
}

/// [`count_attempt`] with another threshold than the organization's.
async fn count_attempt_up_to(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    threshold: i32,
    key: &str,
    now: Timestamp,
    lock_end: i64,
) -> DomainResult<login_throttle::Model> {
    use login_throttle::Column as C;
    let col = |c: C| Expr::col((login_throttle::Entity, c));
    let now_ms = now.millis();
    let window_ms = settings.lockout_window_minutes as i64 * 60_000;
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
    may_check_up_to(throttle, settings.lockout_threshold, lock_end)
}

fn may_check_up_to(throttle: &login_throttle::Model, threshold: i32, lock_end: i64) -> bool {
    throttle.failures <= threshold && throttle.locked_until.is_none_or(|until| until == lock_end)
}

/// Forget the failures counted under `key` (after a success).
pub(crate) async fn clear_attempts(db: &DatabaseConnection, key: &str) -> DomainResult<()> {
    login_throttle::Entity::delete_by_id(key.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

/// A password attempt, counted: whether its password may be checked, and the lock in force.
pub(crate) struct Attempt {
    pub may_check: bool,
    /// The lock that applies (the later one, when both counters are locked).
    pub locked_until: Option<i64>,
    /// When a lock this attempt sets ends.
    pub lock_end: i64,
}

/// Count a password attempt for `raw_email` from `source` on both counters (see the module's
/// documentation), before the password is checked.
pub(crate) async fn count_password_attempt(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    raw_email: &str,
    source: Option<&str>,
    now: Timestamp,
) -> DomainResult<Attempt> {
    let lock_end = now.plus_secs(settings.lockout_minutes as i64 * 60).millis();
    let here = count_attempt(db, settings, &source_key(raw_email, source), now, lock_end).await?;
    let account_threshold = settings.lockout_threshold.saturating_mul(ACCOUNT_FACTOR);
    let key = throttle_key(raw_email);
    let everywhere =
        count_attempt_up_to(db, settings, account_threshold, &key, now, lock_end).await?;
    Ok(Attempt {
        may_check: may_check(&here, settings, lock_end)
            && may_check_up_to(&everywhere, account_threshold, lock_end),
        locked_until: match (here.locked_until, everywhere.locked_until) {
            (Some(a), Some(b)) => Some(std::cmp::max(a, b)),
            (a, b) => a.or(b),
        },
        lock_end,
    })
}

/// Forget the failures counted for `raw_email` from `source`, and from everywhere (the right
/// password was given).
pub(crate) async fn clear_password_attempts(
    db: &DatabaseConnection,
    raw_email: &str,
    source: Option<&str>,
) -> DomainResult<()> {
    clear_attempts(db, &throttle_key(raw_email)).await?;
    clear_attempts(db, &source_key(raw_email, source)).await
}

/// Check `raw_email`'s password, from `source` (the client's address, as text).
pub async fn authenticate(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    raw_email: &str,
    password_attempt: &str,
    source: Option<&str>,
    now: Timestamp,
) -> DomainResult<LoginOutcome> {
    let Attempt {
        may_check,
        locked_until,
        lock_end,
    } = count_password_attempt(db, settings, raw_email, source, now).await?;
    if !may_check {
        // Spend the same time as a real check.
        let _ = password::verify(password_attempt, None).await;
        let until = locked_until.unwrap_or(lock_end);
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
        clear_password_attempts(db, raw_email, source).await?;
        let user = user.expect("ok implies a user");
        return Ok(LoginOutcome::Success(user));
    }

    // The failure is already counted; this attempt may be the one that set the lock.
    Ok(LoginOutcome::Failure(match locked_until {
        Some(until) => LoginFailure::Locked {
            until: Timestamp(until),
            password_checked: true,
        },
        None => LoginFailure::InvalidCredentials,
    }))
}

/// Lift a lockout, from every source (an administrator's password reset does this).
pub async fn clear_lockout(db: &DatabaseConnection, email: &Email) -> DomainResult<()> {
    use sea_orm::{ColumnTrait, QueryFilter};
    login_throttle::Entity::delete_by_id(email.as_str().to_owned())
        .exec(db)
        .await?;
    login_throttle::Entity::delete_many()
        .filter(login_throttle::Column::Email.starts_with(source_key_prefix(email.as_str())))
        .exec(db)
        .await?;
    Ok(())
}

/// Forget counters whose window has passed and whose lock (if any) has ended: a failure they
/// counted no longer counts (anonymous attempts at made-up emails would otherwise pile up).
/// Returns how many went.
pub async fn sweep(
    db: &DatabaseConnection,
    settings: &OrgSettings,
    now: Timestamp,
) -> DomainResult<u64> {
    use login_throttle::Column as C;
    use sea_orm::{ColumnTrait, Condition, QueryFilter};
    let now_ms = now.millis();
    let window_ms = settings.lockout_window_minutes as i64 * 60_000;
    let r = login_throttle::Entity::delete_many()
        .filter(
            Condition::any().add(C::LockedUntil.lte(now_ms)).add(
                Condition::all()
                    .add(C::LockedUntil.is_null())
                    .add(C::WindowStart.lte(now_ms - window_ms)),
            ),
        )
        .exec(db)
        .await?;
    Ok(r.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::network_of;

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let n = |s: &str| network_of(s.parse().unwrap()).to_string();
        assert_eq!(n("2001:db8:1:2::1"), n("2001:db8:1:2:ffff::9"));
        assert_ne!(n("2001:db8:1:2::1"), n("2001:db8:1:3::1"));
        assert_eq!(n("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(n("203.0.113.7"), "203.0.113.7");
        assert_ne!(n("203.0.113.7"), n("203.0.113.8"));
    }
}
