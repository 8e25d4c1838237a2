//! `GET /api/v1/streams` and `DELETE /api/v1/streams/{id}`: thin adapters over
//! `warden_domain::streams`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use warden_domain::dto::{LiveStreamDto, Page};
use warden_domain::streams;

use super::auth::AuthUser;
use super::error::{ApiQuery, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct StreamQuery {
    /// Every user's streams (needs `kubeconfig.write` on the organization).
    pub all: Option<bool>,
    /// Only this kind (e.g. `terminal`).
    pub kind: Option<warden_domain::dto::StreamKind>,
}

pub async fn list_streams(
    State(s): State<AppState>,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Json<Page<LiveStreamDto>>> {
    Ok(Json(
        streams::list(&s.services, &who, q.all.unwrap_or(false), q.kind).await?,
    ))
}

pub async fn end_stream(
    State(s): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<u64>,
) -> ApiResult<StatusCode> {
    streams::end(&s.services, &who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
