//! `/api/v1/auth/*` and `/api/v1/me*`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use tower_sessions::Session;
use warden_domain::dto::{ChangePasswordRequest, LoginRequest, Me};
use warden_domain::identity::authn::{self, SignInError};

use super::auth::AuthUserPendingPassword;
use super::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    parts: http::request::Parts,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Json<Me>> {
    let meta = app::ssr::request_meta_from_parts(&parts);
    match authn::sign_in(
        &state.services,
        &session,
        &body.email,
        &body.password,
        meta.clone(),
    )
    .await
    {
        Ok(_) => {
            let who = authn::principal_from_session(&state.services, &session, meta).await?;
            Ok(Json(state.services.policy.me(&who).await?))
        }
        Err(SignInError::Invalid) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            authn::INVALID_CREDENTIALS,
        )),
        Err(SignInError::Locked) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            authn::LOCKED,
        )),
        Err(SignInError::MfaRequired) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "mfa_required",
            "enter the code of your authenticator app: POST /api/v1/auth/mfa {\"code\"}",
        )),
        Err(SignInError::LocalSignInDisabled) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            authn::LOCAL_SIGN_IN_DISABLED,
            "local passwords are turned off for this account: sign in with your identity provider (GET /api/v1/auth/providers)",
        )),
        Err(SignInError::PasswordNeedsReset) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            authn::PASSWORD_NEEDS_RESET,
            "this password was chosen by someone who may no longer act on this account: ask an administrator for a set-password link",
        )),
        Err(SignInError::Internal(e)) => Err(e.into()),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    parts: http::request::Parts,
) -> ApiResult<impl IntoResponse> {
    authn::sign_out(
        &state.services,
        &session,
        app::ssr::request_meta_from_parts(&parts),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(
    State(state): State<AppState>,
    AuthUserPendingPassword(who): AuthUserPendingPassword,
) -> ApiResult<Json<Me>> {
    Ok(Json(state.services.policy.me(&who).await?))
}

pub async fn change_password(
    State(state): State<AppState>,
    session: Session,
    AuthUserPendingPassword(who): AuthUserPendingPassword,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> ApiResult<impl IntoResponse> {
    let session =
        (who.session_type == warden_domain::audit::SessionType::Browser).then_some(&session);
    authn::change_password(
        &state.services,
        &who,
        session,
        &body.current_password,
        &body.new_password,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
