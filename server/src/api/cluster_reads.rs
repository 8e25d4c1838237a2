//! `GET /api/v1/clusters/{name}/namespaces` and `GET /api/v1/clusters/{name}/pods`: the
//! namespaces and pods the caller may see, read on the cluster as the caller (thin adapters
//! over `warden_domain::clusters::reads`). A refusal says what the caller lacks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use warden_domain::clusters::reads::{self, ReadError};
use warden_domain::dto::{ClusterNamespacesDto, PodListDto};

use super::auth::AuthUser;
use super::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PodQuery {
    /// The namespace to list pods in.
    pub namespace: String,
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            ReadError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            ReadError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            ReadError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
        }
    }
}

pub async fn list_cluster_namespaces(
    State(s): State<AppState>,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterNamespacesDto>> {
    Ok(Json(
        reads::list_namespaces(&s.services, &who, &name).await?,
    ))
}

pub async fn list_cluster_pods(
    State(s): State<AppState>,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PodQuery>,
) -> ApiResult<Json<PodListDto>> {
    Ok(Json(
        reads::list_pods(&s.services, &who, &name, &q.namespace).await?,
    ))
}
