//! Authentication of browser sessions: sign-in, sign-out, password changes, and turning a
//! session into a [`Principal`] on every request (idle and absolute timeouts included).

use std::collections::BTreeMap;
use tower_sessions::{Expiry, Session};

use super::{accounts as user_store, password};
use crate::access::Principal;
use crate::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType};
use crate::clock::Timestamp;
use crate::entities::users;
use crate::error::{DomainError, DomainResult};
use crate::identity::login::{self, LoginFailure, LoginOutcome};
use crate::identity::sessions::{delete_user_sessions, AuthRecord, AUTH_KEY};
use crate::types::{check_password_policy, Email};
use crate::{settings, Services};

/// How often `last_seen` is written back (a write per request would be wasteful).
const TOUCH_INTERVAL_SECS: i64 = 30;

pub use crate::dto::messages::{INVALID_CREDENTIALS, LOCKED};

/// The error code (REST, audit `details.failure`, `/login?error=`) of a local sign-in refused
/// because local passwords are limited to break-glass accounts.
pub const LOCAL_SIGN_IN_DISABLED: &str = "local_sign_in_disabled";

#[derive(Debug)]
pub enum SignInError {
    Invalid,
    /// The password was right; the second factor is due (`complete_mfa_sign_in`).
    MfaRequired,
    Locked,
    /// The password was right, but the organization limits local passwords to break-glass
    /// accounts and this is not one: sign in with an identity provider.
    LocalSignInDisabled,
    /// The password was right, but someone else chose it and may no longer act on the
    /// account (its rights grew past theirs): an administrator makes a set-password link.
    PasswordNeedsReset,
    Internal(DomainError),
}

/// The code of [`SignInError::PasswordNeedsReset`].
pub const PASSWORD_NEEDS_RESET: &str = "password_needs_reset";

/// Whether `actor_id` (someone who made a credential for `target`) may still act on the
/// account as a whole: active, and holding everything it holds now
/// (`bindings::refuse_takeover`, which audits a refusal as theirs).
async fn still_may_act_on(
    svc: &Services,
    actor_id: &str,
    target: &users::Model,
    action: &str,
    verb: &str,
) -> DomainResult<bool> {
    let Some(actor) = <users::Entity as sea_orm::EntityTrait>::find_by_id(actor_id.to_owned())
        .one(&svc.db)
        .await?
        .filter(|u| u.status == user_store::STATUS_ACTIVE)
    else {
        return Ok(false);
    };
    let who = Principal::acting_internally(&actor, SessionType::System, RequestMeta::default())?;
    match crate::admin::bindings::refuse_takeover(svc, &who, target, action, verb).await {
        Ok(()) => Ok(true),
        Err(DomainError::Forbidden { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

impl From<DomainError> for SignInError {
    fn from(e: DomainError) -> Self {
        SignInError::Internal(e)
    }
}

fn session_err(e: impl std::fmt::Display) -> DomainError {
    DomainError::Internal(format!("session: {e}"))
}

/// Sign in with email and password; on success the session id is rotated and the session
/// records the user. Every attempt is audited.
pub async fn sign_in(
    svc: &Services,
    session: &Session,
    raw_email: &str,
    password_attempt: &str,
    meta: RequestMeta,
) -> Result<users::Model, SignInError> {
    let now = svc.clock.now();
    let org = settings::load(&svc.db).await?;
    let outcome = login::authenticate(
        &svc.db,
        &org,
        raw_email,
        password_attempt,
        meta.source_ip.as_deref(),
        now,
    )
    .await?;
    match outcome {
        LoginOutcome::Success(user) => {
            let uid = user_store::user_id(&user)?;
            // A first password someone else chose lets in only while they could still act on
            // the account: promoted before its owner replaced it, it is void (the owner asks
            // an administrator for a set-password link). Checked after the password.
            let setter = match user.must_change_password {
                true => user_store::password_chosen_by(&svc.db, &user.id).await?,
                false => None,
            };
            if let Some(setter) = setter {
                if !still_may_act_on(
                    svc,
                    &setter,
                    &user,
                    "password.chosen_for",
                    "let in with a password they chose",
                )
                .await?
                {
                    password_refused(
                        svc,
                        &user,
                        meta,
                        "the password was chosen by someone who may no longer act on this account",
                        PASSWORD_NEEDS_RESET,
                    )
                    .await?;
                    return Err(SignInError::PasswordNeedsReset);
                }
            }
            // Checked after the password, so the answer never tells which accounts are
            // break-glass ones.
            if !org.allows_local_sign_in(&user.email) {
                password_refused(
                    svc,
                    &user,
                    meta,
                    "local passwords are limited to break-glass accounts",
                    LOCAL_SIGN_IN_DISABLED,
                )
                .await?;
                return Err(SignInError::LocalSignInDisabled);
            }
            if crate::identity::mfa::is_enabled(&svc.db, uid).await? {
                let pending = crate::identity::mfa::MfaPending {
                    user_id: uid,
                    generation: user.session_generation,
                    started_at: now,
                    provider: None,
                    link: None,
                };
                session
                    .insert(crate::identity::mfa::PENDING_KEY, &pending)
                    .await
                    .map_err(session_err)?;
                svc.audit
                    .record(
                        AuditEvent::new(
                            AuditKind::SignIn,
                            Actor::User {
                                id: uid,
                                name: user.email.clone(),
                            },
                            SessionType::Browser,
                            "sign_in.password",
                            Outcome::Allowed,
                        )
                        .reason("password checked; second factor due")
                        .request(meta),
                    )
                    .await?;
                return Err(SignInError::MfaRequired);
            }
            let user = start_session(svc, session, user, now, None, None).await?;
            svc.audit
                .record(
                    AuditEvent::new(
                        AuditKind::SignIn,
                        Actor::User {
                            id: uid,
                            name: user.email.clone(),
                        },
                        SessionType::Browser,
                        "sign_in",
                        Outcome::Allowed,
                    )
                    .request(meta),
                )
                .await?;
            Ok(user)
        }
        LoginOutcome::Failure(f) => {
            let (reason, err) = match f {
                LoginFailure::InvalidCredentials => {
                    ("invalid credentials".to_owned(), SignInError::Invalid)
                }
                // The caller gets the same answer either way; the audit log tells apart the
                // failure that set the lock from attempts refused without a password check.
                LoginFailure::Locked {
                    until,
                    password_checked: true,
                } => (
                    format!(
                        "invalid credentials; account locked until {}",
                        until.rfc3339()
                    ),
                    SignInError::Locked,
                ),
                LoginFailure::Locked {
                    until,
                    password_checked: false,
                } => (
                    format!(
                        "account locked until {}; password not checked",
                        until.rfc3339()
                    ),
                    SignInError::Locked,
                ),
            };
            svc.record_refusal(
                AuditEvent::new(
                    AuditKind::SignIn,
                    Actor::Anonymous {
                        claimed: claimed_name(raw_email),
                    },
                    SessionType::Browser,
                    "sign_in",
                    Outcome::Denied,
                )
                .reason(reason)
                .request(meta),
            )
            .await?;
            Err(err)
        }
    }
}

/// Audit a sign-in refused after a right password (`failure`: the code the caller is answered).
async fn password_refused(
    svc: &Services,
    user: &users::Model,
    meta: RequestMeta,
    reason: &str,
    failure: &str,
) -> DomainResult<()> {
    svc.audit
        .record(
            AuditEvent::new(
                AuditKind::SignIn,
                Actor::User {
                    id: user_store::user_id(user)?,
                    name: user.email.clone(),
                },
                SessionType::Browser,
                "sign_in",
                Outcome::Denied,
            )
            .reason(reason)
            .request(meta)
            .details(serde_json::json!({
                "method": "password",
                "failure": failure,
            })),
        )
        .await
}

/// The name a failed sign-in claimed, as the audit log (and the SIEM) keeps it: an email
/// address as typed; anything else only described, since what lands in the email field is
/// often a password typed one field too early.
pub(crate) fn claimed_name(raw: &str) -> String {
    let raw = raw.trim();
    if crate::types::Email::parse(raw).is_ok() {
        raw.to_owned()
    } else {
        format!(
            "not an email address ({} characters; not recorded: it may be a password typed in the wrong field)",
            raw.chars().count()
        )
    }
}

/// Sign `user` in on `session` (local password or single sign-on): the session id rotates and
/// the session records the user, their session generation and the absolute lifetime.
pub(crate) async fn start_session(
    svc: &Services,
    session: &Session,
    user: users::Model,
    now: Timestamp,
    mfa_at: Option<Timestamp>,
    provider: Option<String>,
) -> DomainResult<users::Model> {
    let org = settings::load(&svc.db).await?;
    let uid = user_store::user_id(&user)?;
    session.cycle_id().await.map_err(session_err)?;
    // The generation read with the password hash (or the provider's answer): a reset that
    // lands between that check and this session's creation makes the session dead on arrival.
    let record = AuthRecord {
        user_id: uid,
        login_at: now,
        last_seen: now,
        generation: user.session_generation,
        mfa_at,
        provider,
    };
    session
        .insert(AUTH_KEY, &record)
        .await
        .map_err(session_err)?;
    let absolute_end = now.plus_secs(org.session_absolute_hours as i64 * 3600);
    session.set_expiry(Some(Expiry::AtDateTime(absolute_end.to_offset())));
    user_store::record_login(&svc.db, user, now).await
}

/// The second step of a sign-in with a second factor: the code of the authenticator app (or a
/// recovery code) for the user whose password the first step checked. Failed codes count
/// towards the lockout, keyed by the user; on success the session id rotates and the session
/// records the user.
pub async fn complete_mfa_sign_in(
    svc: &Services,
    session: &Session,
    code: &str,
    meta: RequestMeta,
) -> Result<users::Model, SignInError> {
    use crate::identity::mfa::{MfaPending, PENDING_KEY, PENDING_TTL_SECS};
    let now = svc.clock.now();
    let Some(pending) = session
        .get::<MfaPending>(PENDING_KEY)
        .await
        .map_err(session_err)?
    else {
        return Err(SignInError::Invalid);
    };
    let user = user_store::find_by_id(&svc.db, pending.user_id)
        .await?
        .filter(|u| {
            u.status == user_store::STATUS_ACTIVE && u.session_generation == pending.generation
        });
    let expired = now.millis() - pending.started_at.millis() > PENDING_TTL_SECS * 1000;
    let Some(user) = user.filter(|_| !expired) else {
        session
            .remove::<MfaPending>(PENDING_KEY)
            .await
            .map_err(session_err)?;
        return Err(SignInError::Invalid);
    };
    let actor = Actor::User {
        id: pending.user_id,
        name: user.email.clone(),
    };
    let denied = |reason: String| {
        AuditEvent::new(
            AuditKind::SignIn,
            actor.clone(),
            SessionType::Browser,
            "sign_in",
            Outcome::Denied,
        )
        .reason(reason)
        .request(meta.clone())
    };
    let org = settings::load(&svc.db).await?;
    let key = format!("mfa:{}", pending.user_id);
    let lock_end = now.plus_secs(org.lockout_minutes as i64 * 60).millis();
    let throttle = login::count_attempt(&svc.db, &org, &key, now, lock_end).await?;
    if !login::may_check(&throttle, &org, lock_end) {
        let until = Timestamp(throttle.locked_until.unwrap_or(lock_end));
        svc.audit
            .record(denied(format!(
                "second factor locked until {}; code not checked",
                until.rfc3339()
            )))
            .await?;
        return Err(SignInError::Locked);
    }
    match crate::identity::mfa::check_second_factor(svc, pending.user_id, &user.email, code, now)
        .await?
    {
        Some(factor) => {
            login::clear_attempts(&svc.db, &key).await?;
            session
                .remove::<MfaPending>(PENDING_KEY)
                .await
                .map_err(session_err)?;
            let mut details = serde_json::json!({"mfa": factor.as_str()});
            if let Some(link) = &pending.link {
                match crate::identity::sso::complete_link(svc, &user, link, now).await? {
                    Ok(changes) => {
                        details["account_linked"] = serde_json::json!(true);
                        details["groups_added"] = serde_json::json!(changes.added);
                        details["groups_removed"] = serde_json::json!(changes.removed);
                        details["groups_kept"] = serde_json::json!(changes.kept);
                    }
                    Err(why) => {
                        svc.audit
                            .record(denied(format!("not linked: {why}")).details(details))
                            .await?;
                        return Err(SignInError::Invalid);
                    }
                }
            }
            let user =
                start_session(svc, session, user, now, Some(now), pending.provider.clone()).await?;
            svc.audit
                .record(
                    AuditEvent::new(
                        AuditKind::SignIn,
                        actor,
                        SessionType::Browser,
                        "sign_in",
                        Outcome::Allowed,
                    )
                    .request(meta.clone())
                    .details(details),
                )
                .await?;
            Ok(user)
        }
        None => {
            let locked = throttle.locked_until.is_some();
            let reason = if locked {
                "wrong or used second factor; account locked".to_owned()
            } else {
                "wrong or used second factor".to_owned()
            };
            svc.audit.record(denied(reason)).await?;
            Err(if locked {
                SignInError::Locked
            } else {
                SignInError::Invalid
            })
        }
    }
}

/// Step-up: prove a second factor again in a signed-in browser session (before a terminal or a
/// kubeconfig for a role that allows writes). Failed codes count towards the same lockout as
/// the sign-in's second step.
pub async fn step_up(
    svc: &Services,
    session: &Session,
    who: &Principal,
    code: &str,
) -> Result<(), SignInError> {
    let now = svc.clock.now();
    let event = |outcome: Outcome| AuditEvent::by(who, AuditKind::SignIn, "mfa.step_up", outcome);
    let mut record: AuthRecord = session
        .get(AUTH_KEY)
        .await
        .map_err(session_err)?
        .ok_or(SignInError::Invalid)?;
    // The code is checked against the caller, and the freshness goes to the session: both must
    // be the same person's browser session. Else a browser session found open (its cookie) plus
    // one's own API key and code would make someone else's session fresh.
    if who.session_type != SessionType::Browser || record.user_id != who.user_id {
        svc.audit
            .record(
                event(Outcome::Denied).reason(
                    "a step-up is made in one's own browser session, with no other credential",
                ),
            )
            .await?;
        return Err(SignInError::Invalid);
    }
    let org = settings::load(&svc.db).await?;
    let key = format!("mfa:{}", who.user_id);
    let lock_end = now.plus_secs(org.lockout_minutes as i64 * 60).millis();
    let throttle = login::count_attempt(&svc.db, &org, &key, now, lock_end).await?;
    if !login::may_check(&throttle, &org, lock_end) {
        svc.audit
            .record(event(Outcome::Denied).reason("second factor locked; code not checked"))
            .await?;
        return Err(SignInError::Locked);
    }
    match crate::identity::mfa::check_second_factor(svc, who.user_id, &who.email, code, now).await?
    {
        Some(factor) => {
            login::clear_attempts(&svc.db, &key).await?;
            record.mfa_at = Some(now);
            session
                .insert(AUTH_KEY, &record)
                .await
                .map_err(session_err)?;
            svc.audit
                .record(
                    event(Outcome::Allowed).details(serde_json::json!({"mfa": factor.as_str()})),
                )
                .await?;
            Ok(())
        }
        None => {
            svc.audit
                .record(event(Outcome::Denied).reason("wrong or used second factor"))
                .await?;
            Err(if throttle.locked_until.is_some() {
                SignInError::Locked
            } else {
                SignInError::Invalid
            })
        }
    }
}

/// Sign out: the session is deleted server-side.
pub async fn sign_out(svc: &Services, session: &Session, meta: RequestMeta) -> DomainResult<()> {
    let record: Option<AuthRecord> = session.get(AUTH_KEY).await.map_err(session_err)?;
    session.flush().await.map_err(session_err)?;
    // What the session held open (web terminals) is re-checked now, not at its next frame.
    svc.policy.bump();
    if let Some(r) = record {
        let name = user_store::find_by_id(&svc.db, r.user_id)
            .await?
            .map(|u| u.email)
            .unwrap_or_default();
        svc.audit
            .record(
                AuditEvent::new(
                    AuditKind::SignIn,
                    Actor::User {
                        id: r.user_id,
                        name,
                    },
                    SessionType::Browser,
                    "sign_out",
                    Outcome::Allowed,
                )
                .request(meta),
            )
            .await?;
    }
    Ok(())
}

/// The principal behind a browser session, or `Unauthenticated`. Enforces the idle and
/// absolute lifetimes from the organization settings and the user's status.
pub async fn principal_from_session(
    svc: &Services,
    session: &Session,
    meta: RequestMeta,
) -> DomainResult<Principal> {
    principal_from_session_with(svc, session, meta, true).await
}

/// [`principal_from_session`] for a page's background refresh (a cluster's status, every few
/// seconds): every check the same, but it is no activity, so it does not keep the session
/// from idling out (a console left open on a shared workstation still signs itself out).
pub async fn principal_from_session_polling(
    svc: &Services,
    session: &Session,
    meta: RequestMeta,
) -> DomainResult<Principal> {
    principal_from_session_with(svc, session, meta, false).await
}

async fn principal_from_session_with(
    svc: &Services,
    session: &Session,
    meta: RequestMeta,
    activity: bool,
) -> DomainResult<Principal> {
    let Some(mut record) = session
        .get::<AuthRecord>(AUTH_KEY)
        .await
        .map_err(session_err)?
    else {
        return Err(DomainError::Unauthenticated);
    };
    let now = svc.clock.now();
    let org = settings::load(&svc.db).await?;
    let idle_ms = org.session_idle_minutes as i64 * 60_000;
    let absolute_ms = org.session_absolute_hours as i64 * 3_600_000;
    if now.millis() - record.last_seen.millis() >= idle_ms
        || now.millis() - record.login_at.millis() >= absolute_ms
    {
        session.flush().await.map_err(session_err)?;
        return Err(DomainError::Unauthenticated);
    }
    let Some(user) = user_store::find_by_id(&svc.db, record.user_id).await? else {
        session.flush().await.map_err(session_err)?;
        return Err(DomainError::Unauthenticated);
    };
    if user.status != user_store::STATUS_ACTIVE || record.generation != user.session_generation {
        session.flush().await.map_err(session_err)?;
        return Err(DomainError::Unauthenticated);
    }
    // A password's session lasts only while local sign-in is open to its user (the
    // organization may have limited it to break-glass accounts since).
    if record.provider.is_none() && !org.allows_local_sign_in(&user.email) {
        session.flush().await.map_err(session_err)?;
        return Err(DomainError::Unauthenticated);
    }
    if activity && now.millis() - record.last_seen.millis() >= TOUCH_INTERVAL_SECS * 1000 {
        record.last_seen = now;
        session
            .insert(AUTH_KEY, &record)
            .await
            .map_err(session_err)?;
    }
    let must_enrol_mfa =
        record.mfa_at.is_none() && must_enrol_mfa(svc, &org, record.user_id).await?;
    Ok(Principal {
        user_id: record.user_id,
        email: user.email,
        name: user.name,
        session_type: SessionType::Browser,
        must_change_password: user.must_change_password,
        must_enrol_mfa,
        second_factor_at: record.mfa_at,
        request: meta,
        api_key: None,
    })
}

/// Whether the organization's MFA policy asks `user` for a second factor they lack. A session
/// whose sign-in had a second factor (Warden's, or a trusted provider's `amr`) owes none.
async fn must_enrol_mfa(
    svc: &Services,
    org: &settings::OrgSettings,
    uid: crate::ids::UserId,
) -> DomainResult<bool> {
    let applies = match org.mfa_policy.as_str() {
        "everyone" => true,
        "admins" => !svc
            .policy
            .effective(uid)
            .await?
            .org_permissions()
            .is_empty(),
        _ => false,
    };
    Ok(applies && !crate::identity::mfa::is_enabled(&svc.db, uid).await?)
}

fn invalid(field: &str, msg: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        fields: BTreeMap::from([(field.to_owned(), msg.into())]),
    }
}

/// Change one's own password (also completes a forced change). Other sessions of the user end.
pub async fn change_password(
    svc: &Services,
    who: &Principal,
    session: Option<&Session>,
    current: &str,
    new: &str,
) -> DomainResult<()> {
    // From a signed-in session only, as keys and authenticators are made: a change ends the
    // owner's sessions, so a stolen key with the password would keep its holder in and the
    // owner out (their second factor no longer opens with the old password).
    if who.session_type != SessionType::Browser {
        let reason = format!(
            "a password is changed from a signed-in session, not with {} credentials",
            who.session_type.as_str()
        );
        svc.audit_denied(who, "password.change", "user", &who.email, &reason)
            .await?;
        return Err(DomainError::forbidden(reason));
    }
    let user = user_store::find_by_id(&svc.db, who.user_id)
        .await?
        .ok_or(DomainError::Unauthenticated)?;
    // Guesses of the current password count as sign-in attempts from the caller's address:
    // an unattended session or a stolen API key must not guess it at full speed here.
    let org = settings::load(&svc.db).await?;
    let now = svc.clock.now();
    let source = who.request.source_ip.as_deref();
    let attempt = login::count_password_attempt(&svc.db, &org, &user.email, source, now).await?;
    let denied = |reason: &str| {
        AuditEvent::by(who, AuditKind::SignIn, "password.change", Outcome::Denied).reason(reason)
    };
    if !attempt.may_check {
        let until = Timestamp(attempt.locked_until.unwrap_or(attempt.lock_end));
        svc.audit
            .record(denied(
                "account locked after wrong passwords; current password not checked",
            ))
            .await?;
        return Err(invalid(
            "current_password",
            format!(
                "too many wrong passwords: try again after {}",
                until.rfc3339()
            ),
        ));
    }
    if !password::verify(current, user.password_hash.as_deref()).await {
        svc.audit.record(denied("wrong current password")).await?;
        return Err(invalid("current_password", "is not your current password"));
    }
    login::clear_password_attempts(&svc.db, &user.email, source).await?;
    check_password_policy(new, &user.email).map_err(|e| invalid("new_password", e.0))?;
    if password::verify(new, user.password_hash.as_deref()).await {
        return Err(invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    let hash = password::hash(new).await?;
    // The change and its audit event commit together.
    let tx = crate::audit::begin_change(&svc.db).await?;
    user_store::set_password(&tx, user, hash, false, now).await?;
    let generation = delete_user_sessions(&tx, who.user_id).await?;
    crate::audit::append(
        &tx,
        now,
        vec![AuditEvent::by(
            who,
            AuditKind::SignIn,
            "password.change",
            Outcome::Allowed,
        )],
    )
    .await?;
    tx.commit().await?;
    // Live streams and terminals opened with the ended sessions are re-checked now.
    svc.policy.bump();
    if let Some(session) = session {
        // This session survives: give it a new id and keep it signed in.
        let record: Option<AuthRecord> = session.get(AUTH_KEY).await.map_err(session_err)?;
        session.cycle_id().await.map_err(session_err)?;
        if let Some(mut r) = record {
            r.last_seen = now;
            r.generation = generation;
            session.insert(AUTH_KEY, &r).await.map_err(session_err)?;
        }
    }
    Ok(())
}

/// Set a password with a one-time link (after an administrator's reset, or for a new user).
pub async fn set_password_with_token(
    svc: &Services,
    token: &str,
    new: &str,
    meta: RequestMeta,
) -> DomainResult<users::Model> {
    let now: Timestamp = svc.clock.now();
    let (user, issued_by) = user_store::peek_set_password_token(&svc.db, token, now).await?;
    // A link someone made for another person is used only while its maker could still make
    // it: a user manager's link for a newcomer is not one for the administrator the newcomer
    // became before using it.
    if let Some(maker) = issued_by {
        if !still_may_act_on(
            svc,
            &maker,
            &user,
            "password.set_with_link",
            "set the password of",
        )
        .await?
        {
            return Err(invalid(
                "token",
                "this link was made by someone who may no longer set this account's password (its rights grew since); ask an administrator for a new one".to_owned(),
            ));
        }
    }
    check_password_policy(new, &user.email).map_err(|e| invalid("new_password", e.0))?;
    let hash = password::hash(new).await?;
    // The password and its audit event commit together.
    let tx = crate::audit::begin_change(&svc.db).await?;
    let user = user_store::consume_set_password_token(&tx, token, now).await?;
    let uid = user_store::user_id(&user)?;
    let user = user_store::set_password(&tx, user, hash, false, now).await?;
    delete_user_sessions(&tx, uid).await?;
    crate::audit::append(
        &tx,
        now,
        vec![AuditEvent::new(
            AuditKind::SignIn,
            Actor::User {
                id: uid,
                name: user.email.clone(),
            },
            SessionType::Browser,
            "password.set_with_link",
            Outcome::Allowed,
        )
        .request(meta)],
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    if let Ok(email) = Email::parse(&user.email) {
        login::clear_lockout(&svc.db, &email).await?;
    }
    Ok(user)
}

/// What a reset did: the one-time link's token, and how many API keys and kubeconfig
/// credentials it ended.
#[derive(Debug, Clone)]
pub struct ResetDone {
    pub token: String,
    pub api_keys_revoked: u64,
    pub kubeconfigs_revoked: u64,
    /// An authenticator was removed (`reset_mfa`).
    pub mfa_removed: bool,
}

/// An administrator's reset (`who`), or the operator's (`warden admin reset-password`, none):
/// the user must set a new password through the returned one-time link token; their sessions
/// end and the current password stops working; with `opts`, their API keys and kubeconfig
/// credentials end too, in the same transaction (each audited), so no key made by whoever held
/// the account works again once the link is used.
pub async fn admin_reset_password(
    svc: &Services,
    who: Option<&Principal>,
    email: &Email,
    opts: crate::identity::users::ResetOptions,
) -> DomainResult<ResetDone> {
    let now = svc.clock.now();
    let user = user_store::find_by_email(&svc.db, email)
        .await?
        .ok_or_else(|| DomainError::not_found("user"))?;
    let uid = user_store::user_id(&user)?;
    // The reset and its audit event commit together: no reset goes unrecorded.
    let ev = AuditEvent::by_or_system(
        who,
        AuditKind::Console,
        "user.reset_password",
        Outcome::Allowed,
    )
    .resource("user", email.as_str());
    let tx = crate::audit::begin_change(&svc.db).await?;
    let token = user_store::issue_set_password_token(&tx, uid, who.map(|p| p.user_id), now).await?;
    let api_keys_revoked = if opts.revoke_api_keys {
        crate::admin::api_keys::revoke_all_in(svc, &tx, who, &user.id).await?
    } else {
        0
    };
    let kubeconfigs_revoked = if opts.revoke_kubeconfigs {
        crate::kubectl::revoke_in(&tx, who, &user, now).await?
    } else {
        0
    };
    let mut events = vec![ev];
    let mfa_removed = opts.reset_mfa && {
        use crate::entities::{mfa_recovery_codes, user_mfa};
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let removed = user_mfa::Entity::delete_by_id(user.id.clone())
            .exec(&tx)
            .await?
            .rows_affected
            > 0;
        mfa_recovery_codes::Entity::delete_many()
            .filter(mfa_recovery_codes::Column::UserId.eq(user.id.clone()))
            .exec(&tx)
            .await?;
        if removed {
            events.push(
                AuditEvent::by_or_system(
                    who,
                    AuditKind::Console,
                    "user.mfa.reset",
                    Outcome::Allowed,
                )
                .resource("user", email.as_str()),
            );
        }
        removed
    };
    let mut a: users::ActiveModel = user.into();
    a.password_hash = sea_orm::Set(None);
    a.must_change_password = sea_orm::Set(true);
    a.updated_at = sea_orm::Set(now.millis());
    sea_orm::ActiveModelTrait::update(a, &tx).await?;
    delete_user_sessions(&tx, uid).await?;
    crate::audit::append(&tx, now, events).await?;
    // Run from outside a server (`warden admin reset-password`), the reset reaches the running
    // servers through the shared epoch they re-read: moved in the same transaction, so no reset
    // commits unannounced.
    crate::access::move_shared_epoch(&tx).await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(ResetDone {
        token,
        api_keys_revoked,
        kubeconfigs_revoked,
        mfa_removed,
    })
}

/// The principal behind an API key (`Authorization: Bearer <key>`). Keys are stored hashed;
/// revoked or expired keys and deactivated users are refused.
pub async fn principal_from_api_key(
    svc: &Services,
    key: &str,
    meta: RequestMeta,
) -> DomainResult<Principal> {
    use crate::entities::api_keys;
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
    let now = svc.clock.now();
    let hash = crate::secrets::sha256_hex(key.as_bytes());
    let Some(k) = api_keys::Entity::find()
        .filter(api_keys::Column::SecretHash.eq(hash))
        .one(&svc.db)
        .await?
    else {
        return Err(DomainError::Unauthenticated);
    };
    if k.revoked_at.is_some() || k.expires_at <= now.millis() {
        return Err(DomainError::Unauthenticated);
    }
    let uid = crate::ids::UserId::parse(&k.user_id).ok_or(DomainError::Unauthenticated)?;
    let key = crate::access::ApiKeyUse {
        id: k.id.clone(),
        expires_at: k.expires_at,
    };
    let user = user_store::find_by_id(&svc.db, uid)
        .await?
        .ok_or(DomainError::Unauthenticated)?;
    if user.status != user_store::STATUS_ACTIVE {
        return Err(DomainError::Unauthenticated);
    }
    let vouched = crate::identity::sso::vouched_until(svc, &svc.db, &user.id).await?;
    if vouched.is_some_and(|until| now.millis() >= until) {
        return Err(DomainError::ProviderSignInRequired);
    }
    let org = settings::load(&svc.db).await?;
    // A key of an account no provider vouches for was made with its password: it lasts only
    // while local sign-in is open to its owner, as a password's session does (the
    // organization may have limited it to break-glass accounts since).
    if vouched.is_none() && !org.allows_local_sign_in(&user.email) {
        return Err(DomainError::ProviderSignInRequired);
    }
    if k.last_used_at
        .map(|t| now.millis() - t >= TOUCH_INTERVAL_SECS * 1000)
        .unwrap_or(true)
    {
        let mut a = k.into_active_model();
        a.last_used_at = Set(Some(now.millis()));
        a.update(&svc.db).await?;
    }
    Ok(Principal {
        user_id: uid,
        email: user.email,
        name: user.name,
        session_type: SessionType::Api,
        must_change_password: user.must_change_password,
        // The organization's MFA policy binds keys as it binds sessions: a key made before the
        // policy asked its owner for a second factor stops working until they enrol one (from
        // a signed-in session: a key cannot enrol an authenticator).
        must_enrol_mfa: must_enrol_mfa(svc, &org, uid).await?,
        second_factor_at: None,
        request: meta,
        api_key: Some(key),
    })
}
