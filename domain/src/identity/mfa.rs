//! Multi-factor authentication with TOTP (RFC 6238, the `totp-rs` crate): enrolment with a QR
//! code (SVG, the `qrcode` crate) confirmed by a first code, ten single-use recovery codes
//! stored hashed, codes checked with a ±1 step window, and a used code refused (replay): the
//! last accepted step is stored and only a later one passes, in one atomic update.
//!
//! Sign-in with a second factor is two steps: the password check holds the user in the
//! browser's pre-session ([`MfaPending`], 5 minutes) instead of signing them in;
//! [`crate::identity::authn::complete_mfa_sign_in`] checks the code and only then starts the session
//! (its id rotates). Failed codes count towards the same lockout as passwords.

use sea_orm::sea_query::Expr;
use sea_orm::ExprTrait;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use totp_rs::{Algorithm, Builder, Totp};

use crate::access::{Action, Principal};
use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::clock::Timestamp;
use crate::dto::{MfaStatus, RecoveryCodes, TotpEnrolment};
use crate::entities::{mfa_recovery_codes, user_mfa};
use crate::error::{DomainError, DomainResult};
use crate::ids::{TokenId, UserId};
use crate::permissions::Permission;
use crate::secrets::{sha256_hex, Sealer};
use crate::Services;

/// The session key of a sign-in waiting for its second factor.
pub const PENDING_KEY: &str = "warden.mfa_pending";
/// How long the second step may take.
pub const PENDING_TTL_SECS: i64 = 300;
const ISSUER: &str = "Warden";
const SECRET_BYTES: usize = 20;
const RECOVERY_CODE_COUNT: usize = 10;

/// What a caller owing a step-up is told.
pub const STEP_UP_MESSAGE: &str =
    "confirm it is you with a code from your authenticator app first (POST /api/v1/auth/step-up)";

/// Step-up: `Err(message)` when `who` must prove a second factor again before opening a terminal
/// or downloading a kubeconfig: a browser session of a user with an authenticator, who holds a
/// role that allows writes in a cluster, whose last second factor is older than the
/// organization's `step_up_max_age_minutes` (or who signed in without one, e.g. through a
/// single sign-on the provider did not vouch for).
pub async fn require_fresh_second_factor(
    svc: &Services,
    who: &Principal,
) -> DomainResult<Result<(), String>> {
    if !second_factor_is_stale(svc, who).await? {
        return Ok(Ok(()));
    }
    let writes = svc
        .policy
        .effective(who.user_id)
        .await?
        .bindings
        .iter()
        .any(|b| {
            b.permissions.iter().any(|p| {
                matches!(
                    p,
                    Permission::KubectlClusterWrite
                        | Permission::KubectlNamespaceWrite
                        | Permission::KubectlFullaccess
                )
            })
        });
    Ok(if writes {
        Err(STEP_UP_MESSAGE.to_owned())
    } else {
        Ok(())
    })
}

/// Whether `who` is a browser session of a user with an authenticator whose last second factor
/// is older than the organization's `step_up_max_age_minutes` (or who signed in without one).
/// Minting a lasting credential (an API key, which downloads kubeconfigs and is never asked for
/// a step-up itself) takes a fresh one whatever the roles held today.
pub async fn second_factor_is_stale(svc: &Services, who: &Principal) -> DomainResult<bool> {
    if who.session_type != crate::audit::SessionType::Browser
        || !is_enabled(&svc.db, who.user_id).await?
    {
        return Ok(false);
    }
    let max_age_ms = crate::settings::load(&svc.db)
        .await?
        .step_up_max_age_minutes as i64
        * 60_000;
    let now = svc.clock.now().millis();
    Ok(!who
        .second_factor_at
        .is_some_and(|t| now - t.millis() <= max_age_ms))
}

/// Enrolling an authenticator takes a signed-in person: a key or a kubeconfig credential alone
/// must not bind a device of its holder's choosing to the account (its owner would then be
/// asked for the holder's codes).
async fn refuse_unless_browser(svc: &Services, who: &Principal, action: &str) -> DomainResult<()> {
    if who.session_type == crate::audit::SessionType::Browser {
        return Ok(());
    }
    let reason = format!(
        "an authenticator is enrolled from a signed-in session, not with {} credentials",
        who.session_type.as_str()
    );
    svc.audit_denied(who, action, "user", &who.email, &reason)
        .await?;
    Err(DomainError::forbidden(reason))
}

/// A password check passed; the second factor is still due.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaPending {
    pub user_id: UserId,
    pub generation: i64,
    pub started_at: Timestamp,
    /// The identity provider (id) whose sign-in this completes; `None`: a local password.
    #[serde(default)]
    pub provider: Option<String>,
    /// An existing account this provider sign-in would link (by its email): made only once the
    /// account's own second factor is given, so a failed code leaves no link behind.
    #[serde(default)]
    pub link: Option<PendingLink>,
}

/// A provider's subject waiting to be linked to an account, and the groups it said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLink {
    pub provider_id: String,
    pub subject: String,
    /// The provider's groups, when the provider maps groups.
    pub groups: Option<Vec<String>>,
}

/// Which second factor signed someone in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery_code",
        }
    }
}

fn purpose(user_id: &str) -> String {
    format!("user_mfa.secret:{user_id}")
}

/// Whether `sealer` opens a secret already sealed in the database (an authenticator seed, an
/// identity provider's client secret, a cluster's proxy settings): `None` when none is sealed.
/// Asked before the first key check is written, so an upgrade started with another key than
/// the one its secrets were sealed with is refused rather than taken as the key from then on.
pub async fn sealer_opens_what_is_sealed(
    db: &sea_orm::DatabaseConnection,
    sealer: &crate::secrets::Sealer,
) -> DomainResult<Option<bool>> {
    use crate::entities::{clusters, identity_providers};
    use crate::secrets::Sealer;
    use sea_orm::QuerySelect;
    let sample = |value: &str| Sealer::is_sealed(value);
    for m in user_mfa::Entity::find().limit(20).all(db).await? {
        if sample(&m.secret) {
            return Ok(Some(sealer.open(&purpose(&m.user_id), &m.secret).is_ok()));
        }
    }
    for m in identity_providers::Entity::find().limit(20).all(db).await? {
        if sample(&m.client_secret) {
            let purpose = crate::identity::sso::secret_purpose(&m.id);
            return Ok(Some(sealer.open(&purpose, &m.client_secret).is_ok()));
        }
    }
    for m in clusters::Entity::find().limit(50).all(db).await? {
        if sample(&m.proxy) {
            return Ok(Some(crate::clusters::proxy_opens(sealer, &m.id, &m.proxy)));
        }
    }
    Ok(None)
}

fn totp(secret: &[u8], account: &str) -> DomainResult<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| DomainError::Internal(format!("totp: {e}")))
}

fn unix_secs(now: Timestamp) -> u64 {
    (std::cmp::max(now.millis(), 0) / 1000) as u64
}

/// The code an authenticator shows for a base32 secret at a time (tests and tools).
pub fn code_at(secret_base32: &str, unix_secs: u64) -> Option<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32).ok()?;
    let bytes = secret.as_ref().to_vec();
    Some(totp(&bytes, "x").ok()?.generate(unix_secs).to_string())
}

fn seal(svc: &Services, user_id: &str, base32: &str) -> String {
    match svc.sso.sealer() {
        Some(s) => s.seal(&purpose(user_id), base32.as_bytes()),
        None => base32.to_owned(),
    }
}

/// Seal the authenticator secrets stored plain (by a Warden that had no key to seal them
/// with). Returns how many.
pub async fn seal_plaintext(svc: &Services) -> DomainResult<u64> {
    if svc.sso.sealer().is_none() {
        return Ok(0);
    }
    let mut n = 0;
    for row in user_mfa::Entity::find().all(&svc.db).await? {
        if Sealer::is_sealed(&row.secret) {
            continue;
        }
        let sealed = seal(svc, &row.user_id, &row.secret);
        user_mfa::Entity::update_many()
            .col_expr(
                user_mfa::Column::Secret,
                sea_orm::sea_query::Expr::value(sealed),
            )
            .filter(user_mfa::Column::UserId.eq(row.user_id.clone()))
            .filter(user_mfa::Column::Secret.eq(row.secret.clone()))
            .exec(&svc.db)
            .await?;
        n += 1;
    }
    Ok(n)
}

fn open(svc: &Services, row: &user_mfa::Model) -> DomainResult<Vec<u8>> {
    let base32 = if Sealer::is_sealed(&row.secret) {
        let sealer = svc.sso.sealer().ok_or_else(|| {
            DomainError::Internal("an MFA secret is sealed but WARDEN_MASTER_KEY is not set".into())
        })?;
        let plain = sealer
            .open(&purpose(&row.user_id), &row.secret)
            .map_err(|e| DomainError::Internal(format!("MFA secret: {e}")))?;
        String::from_utf8(plain)
            .map_err(|_| DomainError::Internal("MFA secret: not UTF-8".into()))?
    } else {
        row.secret.clone()
    };
    totp_rs::Secret::try_from_base32(&base32)
        .ok()
        .map(|s| s.as_ref().to_vec())
        .ok_or_else(|| DomainError::Internal("MFA secret: not base32".into()))
}

/// Whether the user signs in with a second factor.
pub async fn is_enabled<C: ConnectionTrait>(db: &C, user: UserId) -> DomainResult<bool> {
    Ok(user_mfa::Entity::find_by_id(user.to_string())
        .one(db)
        .await?
        .is_some_and(|m| m.confirmed_at.is_some()))
}

fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The characters of recovery codes: no 0/o, 1/l/i.
const RECOVERY_SET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Characters in a recovery code: 16 drawn uniformly from 31, about 79 bits.
const RECOVERY_LEN: usize = 16;

fn new_recovery_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..RECOVERY_LEN)
        .map(|_| RECOVERY_SET[rng.gen_range(0..RECOVERY_SET.len())] as char)
        .collect();
    // Shown as xxxx-xxxx-xxxx-xxxx.
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// How a recovery code is stored: an HMAC keyed by the master key, bound to its user, so a
/// copy of the database alone cannot test guesses (without a sealer, as before: SHA-256).
fn recovery_hash(svc: &Services, user_id: &str, code: &str) -> String {
    let normalised = normalise_recovery(code);
    match svc.sso.sealer() {
        Some(s) => s.mac(
            &format!("mfa recovery code of {user_id}"),
            normalised.as_bytes(),
        ),
        None => sha256_hex(normalised.as_bytes()),
    }
}

pub async fn status(svc: &Services, who: &Principal) -> DomainResult<MfaStatus> {
    let row = user_mfa::Entity::find_by_id(who.user_id.to_string())
        .one(&svc.db)
        .await?;
    let left = mfa_recovery_codes::Entity::find()
        .filter(mfa_recovery_codes::Column::UserId.eq(who.user_id.to_string()))
        .filter(mfa_recovery_codes::Column::UsedAt.is_null())
        .all(&svc.db)
        .await?
        .len();
    Ok(MfaStatus {
        enabled: row.as_ref().is_some_and(|r| r.confirmed_at.is_some()),
        recovery_codes_left: left,
    })
}

/// Start (or restart) enrolling an authenticator: a fresh secret, its `otpauth://` URI and the
/// QR code of it. Nothing changes at sign-in until [`confirm_enrolment`].
pub async fn begin_enrolment(svc: &Services, who: &Principal) -> DomainResult<TotpEnrolment> {
    refuse_unless_browser(svc, who, "mfa.enrol").await?;
    let uid = who.user_id.to_string();
    if is_enabled(&svc.db, who.user_id).await? {
        return Err(DomainError::conflict(
            "mfa",
            "an authenticator is already enrolled; an administrator can reset it",
        ));
    }
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let t = totp(&bytes, &who.email)?;
    let base32 = totp_rs::Secret::from(bytes.clone()).to_base32();
    let url = t
        .to_url()
        .map_err(|e| DomainError::Internal(format!("totp url: {e}")))?;
    let qr_svg = qrcode::QrCode::new(url.as_bytes())
        .map_err(|e| DomainError::Internal(format!("qr code: {e}")))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    // Only an unconfirmed enrolment is replaced: one confirmed meanwhile (from another of the
    // person's sessions) stays, and this start answers the conflict.
    user_mfa::Entity::delete_many()
        .filter(user_mfa::Column::UserId.eq(uid.clone()))
        .filter(user_mfa::Column::ConfirmedAt.is_null())
        .exec(&svc.db)
        .await?;
    let inserted = user_mfa::ActiveModel::from(user_mfa::Model {
        secret: seal(svc, &uid, &base32),
        user_id: uid,
        confirmed_at: None,
        last_step: None,
        created_at: svc.clock.now().millis(),
    })
    .insert(&svc.db)
    .await;
    if let Err(e) = inserted {
        if is_enabled(&svc.db, who.user_id).await? {
            return Err(DomainError::conflict(
                "mfa",
                "an authenticator is already enrolled; an administrator can reset it",
            ));
        }
        return Err(e.into());
    }
    Ok(TotpEnrolment {
        secret: base32,
        otpauth_url: url,
        qr_svg,
    })
}

/// Confirm enrolment with a first code; the answer holds ten recovery codes, shown once.
pub async fn confirm_enrolment(
    svc: &Services,
    who: &Principal,
    code: &str,
) -> DomainResult<RecoveryCodes> {
    refuse_unless_browser(svc, who, "mfa.enrol").await?;
    let uid = who.user_id.to_string();
    let row = user_mfa::Entity::find_by_id(uid.clone())
        .one(&svc.db)
        .await?
        .filter(|r| r.confirmed_at.is_none())
        .ok_or_else(|| DomainError::invalid("code", "start the enrolment first"))?;
    let now = svc.clock.now();
    let step = totp(&open(svc, &row)?, &who.email)?
        .check(code.trim(), unix_secs(now))
        .ok_or_else(|| {
            DomainError::invalid(
                "code",
                "this code is not valid; check that the device's clock is right",
            )
        })?;
    let codes: Vec<String> = (0..RECOVERY_CODE_COUNT)
        .map(|_| new_recovery_code())
        .collect();
    // The enrolment and its audit event commit together.
    let tx = crate::audit::begin_change(&svc.db).await?;
    user_mfa::Entity::update_many()
        .col_expr(user_mfa::Column::ConfirmedAt, Expr::value(now.millis()))
        .col_expr(user_mfa::Column::LastStep, Expr::value(step as i64))
        .filter(user_mfa::Column::UserId.eq(uid.clone()))
        .exec(&tx)
        .await?;
    mfa_recovery_codes::Entity::delete_many()
        .filter(mfa_recovery_codes::Column::UserId.eq(uid.clone()))
        .exec(&tx)
        .await?;
    for c in &codes {
        mfa_recovery_codes::ActiveModel::from(mfa_recovery_codes::Model {
            id: TokenId::new().to_string(),
            user_id: uid.clone(),
            code_hash: recovery_hash(svc, &uid, c),
            used_at: None,
            created_at: now.millis(),
        })
        .insert(&tx)
        .await?;
    }
    // Every API key the owner holds now was made without a second factor (there was none).
    // Whoever had the password then could have made one, and keys are never asked for a
    // step-up: they end here, with the kubeconfigs made with them (audited), and the owner
    // makes new ones behind the second factor.
    let api_keys_revoked = crate::admin::api_keys::revoke_all_in(svc, &tx, Some(who), &uid).await?;
    crate::audit::append(
        &tx,
        now,
        vec![
            AuditEvent::by(who, AuditKind::SignIn, "mfa.enrol", Outcome::Allowed)
                .resource("user", who.email.clone())
                .details(json!({"method": "totp", "api_keys_revoked": api_keys_revoked})),
        ],
    )
    .await?;
    tx.commit().await?;
    if api_keys_revoked > 0 {
        svc.policy.bump();
    }
    Ok(RecoveryCodes {
        recovery_codes: codes,
        api_keys_revoked,
    })
}

/// An administrator's reset: the user's authenticator and recovery codes are removed; they sign
/// in with their password alone until they enrol again. Their sessions end. With `opts` (an
/// authenticator in someone else's hands, who may have made credentials with it), their API
/// keys and kubeconfig credentials are revoked too (each audited); the rights for that are
/// checked before anything changes.
pub async fn reset(
    svc: &Services,
    who: &Principal,
    email_or_id: &str,
    opts: crate::identity::users::ResetOptions,
) -> DomainResult<()> {
    svc.gate(who, Action::org(Permission::UserWrite)).await?;
    if opts.revoke_kubeconfigs {
        svc.gate(who, Action::org(Permission::KubeconfigWrite))
            .await?;
    }
    let user = crate::identity::users::find(svc, email_or_id).await?;
    crate::admin::bindings::refuse_takeover(
        svc,
        who,
        &user,
        "user.mfa.reset",
        "remove the second factor of",
    )
    .await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let removed = user_mfa::Entity::delete_by_id(user.id.clone())
        .exec(&tx)
        .await?
        .rows_affected;
    mfa_recovery_codes::Entity::delete_many()
        .filter(mfa_recovery_codes::Column::UserId.eq(user.id.clone()))
        .exec(&tx)
        .await?;
    if removed == 0 {
        return Err(DomainError::not_found("authenticator"));
    }
    // An authenticator is reset because it was lost or taken: whoever holds it may hold a
    // session signed in with it too. Every session ends (and with them, at the next check,
    // the terminals and streams they opened); the user signs in again and enrols anew.
    let uid = crate::identity::accounts::user_id(&user)?;
    crate::identity::sessions::delete_user_sessions(&tx, uid).await?;
    svc.audit_change(
        &tx,
        who,
        "user.mfa.reset",
        "user",
        &user.email,
        None,
        Some(json!({"mfa": "totp"})),
        Some(json!({
            "mfa": null,
            "revoke_api_keys": opts.revoke_api_keys,
            "revoke_kubeconfigs": opts.revoke_kubeconfigs,
        })),
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    if opts.revoke_api_keys {
        crate::admin::api_keys::revoke_all_of(svc, who, &user.id).await?;
    }
    if opts.revoke_kubeconfigs {
        crate::kubectl::revoke(svc, who, Some(&user.id)).await?;
    }
    Ok(())
}

/// Check a second factor: a TOTP code of the current step ±1 that is later than the last one
/// accepted, or an unused recovery code. Either is used up atomically.
pub(crate) async fn check_second_factor(
    svc: &Services,
    user: UserId,
    account: &str,
    code: &str,
    now: Timestamp,
) -> DomainResult<Option<SecondFactor>> {
    let uid = user.to_string();
    let code = code.trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let Some(row) = user_mfa::Entity::find_by_id(uid.clone())
            .one(&svc.db)
            .await?
            .filter(|r| r.confirmed_at.is_some())
        else {
            return Ok(None);
        };
        let Some(step) = totp(&open(svc, &row)?, account)?.check(code, unix_secs(now)) else {
            return Ok(None);
        };
        let step = step as i64;
        let r = user_mfa::Entity::update_many()
            .col_expr(user_mfa::Column::LastStep, Expr::value(step))
            .filter(user_mfa::Column::UserId.eq(uid))
            .filter(
                user_mfa::Column::LastStep
                    .is_null()
                    .or(user_mfa::Column::LastStep.lt(step)),
            )
            .exec(&svc.db)
            .await?;
        return Ok((r.rows_affected == 1).then_some(SecondFactor::Totp));
    }
    // Codes given out before they were keyed are stored as SHA-256.
    let hashes = [
        recovery_hash(svc, &uid, code),
        sha256_hex(normalise_recovery(code).as_bytes()),
    ];
    let r = mfa_recovery_codes::Entity::update_many()
        .col_expr(
            mfa_recovery_codes::Column::UsedAt,
            Expr::value(now.millis()),
        )
        .filter(mfa_recovery_codes::Column::UserId.eq(uid))
        .filter(mfa_recovery_codes::Column::CodeHash.is_in(hashes))
        .filter(mfa_recovery_codes::Column::UsedAt.is_null())
        .exec(&svc.db)
        .await?;
    Ok((r.rows_affected == 1).then_some(SecondFactor::RecoveryCode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s, 8 digits 94287082.
        let secret = totp_rs::Secret::from(b"12345678901234567890".to_vec()).to_base32();
        assert_eq!(code_at(&secret, 59).as_deref(), Some("287082"));
    }

    #[test]
    fn recovery_codes_are_long_and_drawn_uniformly() {
        let mut counts = std::collections::HashMap::<char, usize>::new();
        let n = 20_000;
        for _ in 0..n {
            let code = new_recovery_code();
            assert_eq!(code.len(), RECOVERY_LEN + 3, "{code}");
            let plain = normalise_recovery(&code);
            assert_eq!(plain.len(), RECOVERY_LEN);
            for c in plain.chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), RECOVERY_SET.len(), "every character appears");
        let expected = (n * RECOVERY_LEN) as f64 / RECOVERY_SET.len() as f64;
        for (c, k) in counts {
            let off = (k as f64 - expected).abs() / expected;
            assert!(off < 0.05, "{c}: {k} against {expected}");
        }
    }

    #[test]
    fn recovery_codes_are_normalised_before_hashing() {
        let c = new_recovery_code();
        assert_eq!(c.len(), 19);
        assert_eq!(
            normalise_recovery(&c.to_uppercase()),
            normalise_recovery(&c)
        );
        assert_eq!(normalise_recovery(" abcde-fghjk "), "abcdefghjk");
    }
}
