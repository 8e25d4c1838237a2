//! Just-in-time access over REST (issue 17): access requests and their decisions, the
//! organization's just-in-time settings, a project's approver group. Thin handlers: each
//! extracts, calls one domain use case (which authorizes through the gate), and answers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use warden_domain::admin::{access_requests as ar, jit_settings};
use warden_domain::dto::*;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

type S = State<AppState>;

pub async fn create_access_request(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateAccessRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(ar::create(&s.services, &who, req).await?),
    ))
}

pub async fn break_glass_access(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateAccessRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(ar::break_glass(&s.services, &who, req).await?),
    ))
}

pub async fn list_access_requests(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<AccessRequestQuery>,
) -> ApiResult<Json<Page<AccessRequestDto>>> {
    Ok(Json(ar::list(&s.services, &who, &q).await?))
}

pub async fn get_access_request(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessRequestDto>> {
    Ok(Json(ar::get(&s.services, &who, &id).await?))
}

pub async fn get_access_inbox(
    State(s): S,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<AccessInbox>> {
    Ok(Json(ar::inbox(&s.services, &who).await?))
}

/// The body of approve, deny and revoke is optional.
fn decision(body: &[u8]) -> ApiResult<DecideAccessRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecideAccessRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("the JSON body does not match: {e}"),
        )
    })
}

pub async fn approve_access_request(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<AccessRequestDto>> {
    let d = decision(&body)?;
    Ok(Json(ar::approve(&s.services, &who, &id, d).await?))
}

pub async fn deny_access_request(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<AccessRequestDto>> {
    let d = decision(&body)?;
    Ok(Json(ar::deny(&s.services, &who, &id, d).await?))
}

pub async fn revoke_access_request(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<AccessRequestDto>> {
    let d = decision(&body)?;
    Ok(Json(ar::revoke(&s.services, &who, &id, d).await?))
}

pub async fn cancel_access_request(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessRequestDto>> {
    Ok(Json(ar::cancel(&s.services, &who, &id).await?))
}

pub async fn get_jit_settings(
    State(s): S,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<JitSettingsDto>> {
    Ok(Json(jit_settings::get(&s.services, &who).await?))
}

pub async fn update_jit_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<UpdateJitSettingsRequest>,
) -> ApiResult<Json<JitSettingsDto>> {
    Ok(Json(jit_settings::update(&s.services, &who, req).await?))
}

pub async fn get_approver_group(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<ApproverGroupDto>> {
    Ok(Json(
        ar::get_approver_group(&s.services, &who, &name).await?,
    ))
}

pub async fn set_approver_group(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ApproverGroupDto>,
) -> ApiResult<Json<ApproverGroupDto>> {
    Ok(Json(
        ar::set_approver_group(&s.services, &who, &name, req).await?,
    ))
}
