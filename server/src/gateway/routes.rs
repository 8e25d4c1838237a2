//! REST endpoints of the kubeconfig feature: download, revocation, kubectl settings at the
//! organization, user and cluster levels. Thin adapters over `warden_domain::kubectl`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use time::Duration;
use warden_domain::audit::SessionType;
use warden_domain::kubeconfig::{
    KubeconfigQuery, KubeconfigRevoked, KubectlSettingsDto, UpdateKubectlSettingsRequest,
};
use warden_domain::kubectl::{self as kc, SettingsLevel};

use super::kubeconfig::{render, KubeconfigCluster, KubeconfigInput};
use crate::api::auth::AuthUser;
use crate::api::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

type S = State<AppState>;

/// `GET /api/v1/kubeconfig[?cluster=NAME]`: a kubeconfig with a fresh credential.
pub async fn issue_kubeconfig(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<KubeconfigQuery>,
) -> ApiResult<Response> {
    if let Err(message) =
        warden_domain::identity::mfa::require_fresh_second_factor(&s.services, &who).await?
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "step_up_required",
            message,
        ));
    }
    let cluster = q
        .cluster
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let issued = match kc::issue(&s.services, &who, cluster, SessionType::Cli).await? {
        Ok(i) => i,
        Err(refused) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                refused.code,
                refused.message,
            ))
        }
    };
    let gw = &s.gateway;
    // A little slack for clients whose clock runs behind.
    let not_before = issued.issued_at.to_offset() - Duration::minutes(5);
    let (cert, key) = gw
        .pki()
        .client_cert(
            &issued.user_id,
            issued.session_type.as_str(),
            &issued.serial,
            not_before,
            issued.expires_at.to_offset(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign a kubeconfig credential");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; it has been logged",
            )
        })?;
    // Each context's namespace: the one namespace the user's grant on that cluster covers.
    let eff = s.services.policy.effective(who.user_id).await?;
    let clusters: Vec<KubeconfigCluster> = issued
        .clusters
        .iter()
        .map(|c| KubeconfigCluster {
            name: c.name.clone(),
            namespace: kc::kube_access(&eff, c).only_namespace(),
        })
        .collect();
    let ca = gw.pki().kubeconfig_ca_pem();
    let yaml = render(&KubeconfigInput {
        gateway_url: gw.public_url(),
        gateway_ca_pem: ca.as_deref(),
        clusters: &clusters,
        user: &issued.sa_name,
        cert_pem: &cert,
        key_pem: &key,
        expires_at: &issued.expires_at.rfc3339(),
    });
    let filename = match cluster {
        Some(c) => format!("warden-{c}.kubeconfig"),
        None => "warden.kubeconfig".to_owned(),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/yaml".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        yaml,
    )
        .into_response())
}

/// `POST /api/v1/kubeconfig/revoke`: revoke every kubeconfig issued to the caller so far.
pub async fn revoke_own_kubeconfig(
    State(s): S,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<KubeconfigRevoked>> {
    Ok(Json(kc::revoke(&s.services, &who, None).await?))
}

/// `POST /api/v1/users/{user}/kubeconfig/revoke` (needs `kubeconfig.write`).
pub async fn revoke_user_kubeconfig(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
) -> ApiResult<Json<KubeconfigRevoked>> {
    Ok(Json(kc::revoke(&s.services, &who, Some(&user)).await?))
}

pub async fn get_org_kubectl_settings(
    State(s): S,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<KubectlSettingsDto>> {
    Ok(Json(
        kc::get_settings(&s.services, &who, SettingsLevel::Organization).await?,
    ))
}

pub async fn update_org_kubectl_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<UpdateKubectlSettingsRequest>,
) -> ApiResult<Json<KubectlSettingsDto>> {
    Ok(Json(
        kc::update_settings(&s.services, &who, SettingsLevel::Organization, req).await?,
    ))
}

pub async fn get_user_kubectl_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
) -> ApiResult<Json<KubectlSettingsDto>> {
    Ok(Json(
        kc::get_settings(&s.services, &who, SettingsLevel::User(user)).await?,
    ))
}

pub async fn update_user_kubectl_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<UpdateKubectlSettingsRequest>,
) -> ApiResult<Json<KubectlSettingsDto>> {
    Ok(Json(
        kc::update_settings(&s.services, &who, SettingsLevel::User(user), req).await?,
    ))
}

pub async fn get_cluster_kubectl_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<KubectlSettingsDto>> {
    Ok(Json(
        kc::get_settings(&s.services, &who, SettingsLevel::Cluster(name)).await?,
    ))
}

pub async fn update_cluster_kubectl_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateKubectlSettingsRequest>,
) -> ApiResult<Json<KubectlSettingsDto>> {
    Ok(Json(
        kc::update_settings(&s.services, &who, SettingsLevel::Cluster(name), req).await?,
    ))
}
