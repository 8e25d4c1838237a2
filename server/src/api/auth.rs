//! Authentication extractors for REST handlers: [`AuthUser`] (signed in and allowed to act)
//! and [`AuthUserPendingPassword`] (signed in, possibly with a forced password change pending).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tower_sessions::Session;
use warden_domain::access::Principal;

use super::error::ApiError;
use crate::state::AppState;

pub struct AuthUser(pub Principal);
pub struct AuthUserPendingPassword(pub Principal);
/// Signed in, possibly still owing the enrolment of a second factor the MFA policy asks for
/// (the enrolment endpoints themselves).
pub struct AuthUserEnrolling(pub Principal);

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(crate::middleware::VerifiedApiKey(p)) = parts.extensions.get() {
        return Ok(p.clone());
    }
    let meta = app::ssr::request_meta_from_parts(parts);
    if let Some(auth) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = auth.to_str().map_err(|_| ApiError::unauthenticated())?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(ApiError::unauthenticated)?;
        return Ok(warden_domain::identity::authn::principal_from_api_key(
            &state.services,
            token.trim(),
            meta,
        )
        .await?);
    }
    let session = Session::from_request_parts(parts, state)
        .await
        .map_err(|(_, msg)| {
            tracing::error!(%msg, "session layer missing");
            ApiError::unauthenticated()
        })?;
    Ok(
        warden_domain::identity::authn::principal_from_session(&state.services, &session, meta)
            .await?,
    )
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(parts, state).await?;
        if p.must_change_password {
            return Err(ApiError::password_change_required());
        }
        if p.must_enrol_mfa {
            return Err(ApiError::mfa_enrolment_required());
        }
        Ok(AuthUser(p))
    }
}

impl FromRequestParts<AppState> for AuthUserEnrolling {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = authenticate(parts, state).await?;
        if p.must_change_password {
            return Err(ApiError::password_change_required());
        }
        Ok(AuthUserEnrolling(p))
    }
}

impl FromRequestParts<AppState> for AuthUserPendingPassword {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(AuthUserPendingPassword(authenticate(parts, state).await?))
    }
}
