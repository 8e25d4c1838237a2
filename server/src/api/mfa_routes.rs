//! Multi-factor authentication over REST: the second step of a sign-in
//! (`POST /auth/mfa`, under the sign-in rate limit), one's own authenticator (`/me/mfa*`), and
//! an administrator's reset (`DELETE /users/{user}/mfa`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use tower_sessions::Session;
use warden_domain::dto::{Me, MfaCodeRequest, MfaStatus, RecoveryCodes, TotpEnrolment};
use warden_domain::identity::authn::{self, SignInError};
use warden_domain::identity::mfa;

use super::auth::{AuthUser, AuthUserEnrolling};
use super::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;

type S = State<AppState>;

pub async fn verify_mfa(
    State(s): S,
    session: Session,
    parts: http::request::Parts,
    ApiJson(body): ApiJson<MfaCodeRequest>,
) -> ApiResult<Json<Me>> {
    let meta = app::ssr::request_meta_from_parts(&parts);
    match authn::complete_mfa_sign_in(&s.services, &session, &body.code, meta.clone()).await {
        Ok(_) => {
            let who = authn::principal_from_session(&s.services, &session, meta).await?;
            Ok(Json(s.services.policy.me(&who).await?))
        }
        Err(SignInError::Locked) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            authn::LOCKED,
        )),
        Err(SignInError::Internal(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            warden_domain::dto::messages::MFA_INVALID,
        )),
    }
}

/// Step-up: a fresh second factor in this browser session.
pub async fn step_up(
    State(s): S,
    session: Session,
    AuthUser(who): AuthUser,
    ApiJson(body): ApiJson<MfaCodeRequest>,
) -> ApiResult<StatusCode> {
    match authn::step_up(&s.services, &session, &who, &body.code).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(SignInError::Locked) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            authn::LOCKED,
        )),
        Err(SignInError::Internal(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            warden_domain::dto::messages::MFA_INVALID,
        )),
    }
}

pub async fn get_my_mfa(
    State(s): S,
    AuthUserEnrolling(who): AuthUserEnrolling,
) -> ApiResult<Json<MfaStatus>> {
    Ok(Json(mfa::status(&s.services, &who).await?))
}

pub async fn begin_totp_enrolment(
    State(s): S,
    AuthUserEnrolling(who): AuthUserEnrolling,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json::<TotpEnrolment>(mfa::begin_enrolment(&s.services, &who).await?),
    ))
}

pub async fn confirm_totp_enrolment(
    State(s): S,
    AuthUserEnrolling(who): AuthUserEnrolling,
    ApiJson(body): ApiJson<MfaCodeRequest>,
) -> ApiResult<Json<RecoveryCodes>> {
    Ok(Json(
        mfa::confirm_enrolment(&s.services, &who, &body.code).await?,
    ))
}

/// `DELETE /users/{user}/mfa`: what else the reset ends (both off by default).
#[derive(serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetMfaQuery {
    /// Also revoke every API key of the user.
    #[serde(default)]
    pub revoke_api_keys: bool,
    /// Also revoke every kubeconfig credential issued to the user (needs `kubeconfig.write`).
    #[serde(default)]
    pub revoke_kubeconfigs: bool,
}

pub async fn reset_user_mfa(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
    crate::api::error::ApiQuery(q): crate::api::error::ApiQuery<ResetMfaQuery>,
) -> ApiResult<StatusCode> {
    let opts = warden_domain::identity::users::ResetOptions {
        revoke_api_keys: q.revoke_api_keys,
        revoke_kubeconfigs: q.revoke_kubeconfigs,
        ..Default::default()
    };
    mfa::reset(&s.services, &who, &user, opts).await?;
    Ok(StatusCode::NO_CONTENT)
}
