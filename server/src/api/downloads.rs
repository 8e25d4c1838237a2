//! `GET /api/v1/downloads/wardenctl[/{platform}]`: the `wardenctl` builds this Warden serves
//! to its signed-in users (thin adapters over `warden_domain::kubectl::downloads`).

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use warden_domain::kubeconfig::CliBuild;

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;

pub async fn list_cli_builds(
    State(s): State<AppState>,
    AuthUser(_who): AuthUser,
) -> ApiResult<Json<Vec<CliBuild>>> {
    Ok(Json(s.services.cli.builds().await))
}

/// The file, with its name and digest; ranges and conditional requests as any static file.
pub async fn download_cli_build(
    State(s): State<AppState>,
    AuthUser(_who): AuthUser,
    Path(platform): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let Some((path, build)) = s.services.cli.find(&platform).await else {
        return Err(ApiError::not_found("wardenctl build"));
    };
    let served = ServeFile::new(path).oneshot(req).await;
    let mut res = match served {
        Ok(r) => r.into_response(),
        Err(never) => match never {},
    };
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", build.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if let Ok(v) = HeaderValue::from_str(&build.sha256) {
        headers.insert("x-checksum-sha256", v);
    }
    Ok(res)
}
