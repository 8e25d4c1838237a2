//! Clusters over REST: import (with a one-time manifest URL), list, read, change, delete, and
//! the agent manifest. Each handler calls one domain use case, which authorizes.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use warden_domain::clusters;
use warden_domain::dto::*;

use super::auth::AuthUser;
use super::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

type S = State<AppState>;

pub async fn list_clusters(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<ClusterQuery>,
) -> ApiResult<Json<Page<ClusterDto>>> {
    Ok(Json(clusters::list(&s.services, &who, &q).await?))
}

pub async fn create_cluster(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateClusterRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(clusters::create(&s.services, &who, req).await?),
    ))
}

pub async fn get_cluster(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterDetail>> {
    Ok(Json(clusters::get(&s.services, &who, &name).await?))
}

pub async fn update_cluster(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateClusterRequest>,
) -> ApiResult<Json<ClusterDto>> {
    Ok(Json(clusters::update(&s.services, &who, &name, req).await?))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteClusterQuery {
    /// Delete even though the agent cannot be told to stop (a cluster that is gone).
    pub force: Option<bool>,
}

pub async fn delete_cluster(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteClusterQuery>,
) -> ApiResult<StatusCode> {
    clusters::delete(&s.services, &who, &name, q.force.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /clusters/{name}/agent/revoke`: the cluster's agent credential stops working at once.
pub async fn revoke_cluster_agent(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    clusters::revoke_agent(&s.services, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent manifest (YAML) with a fresh one-time bootstrap token.
pub async fn get_cluster_manifest(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let yaml = clusters::manifest(&s.services, &who, &name).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/yaml; charset=utf-8".to_owned(),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"warden-agent-{name}.yaml\""),
            ),
        ],
        yaml,
    )
        .into_response())
}

/// A fresh one-time manifest URL (and the manifest it serves).
pub async fn create_cluster_bootstrap(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(clusters::bootstrap(&s.services, &who, &name).await?),
    ))
}
