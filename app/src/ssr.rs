//! Server-side helpers for server functions: the services handle, the session, the request
//! metadata, and the one way to get an authenticated [`Principal`].

use std::sync::Arc;
use tower_sessions::Session;
use warden_domain::access::{Action, Grant, Principal};
use warden_domain::audit::RequestMeta;
use warden_domain::Services;

use crate::error::AppError;

pub fn services() -> Result<Arc<Services>, AppError> {
    leptos::prelude::use_context::<Arc<Services>>().ok_or_else(|| {
        tracing::error!("Services missing from the Leptos context");
        AppError::Internal
    })
}

pub async fn session() -> Result<Session, AppError> {
    leptos_axum::extract::<Session>().await.map_err(|e| {
        tracing::error!(error = ?e, "no session layer");
        AppError::Internal
    })
}

pub fn request_meta() -> RequestMeta {
    let Some(parts) = leptos::prelude::use_context::<http::request::Parts>() else {
        return RequestMeta::default();
    };
    request_meta_from_parts(&parts)
}

pub fn request_meta_from_parts(parts: &http::request::Parts) -> RequestMeta {
    request_meta_of(&parts.method, &parts.uri, &parts.headers, &parts.extensions)
}

/// Audit metadata of a request: method, path, source address, user agent, request id.
pub fn request_meta_of(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> RequestMeta {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestMeta {
        method: Some(method.to_string()),
        path: Some(uri.path().to_owned()),
        source_ip: extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
    }
}

/// The signed-in principal, allowed to act (no forced password change pending).
pub async fn principal() -> Result<Principal, AppError> {
    let p = principal_allow_password_change().await?;
    if p.must_change_password {
        return Err(AppError::PasswordChangeRequired);
    }
    Ok(p)
}

/// The signed-in principal, even while a password change is pending.
pub async fn principal_allow_password_change() -> Result<Principal, AppError> {
    let svc = services()?;
    let session = session().await?;
    Ok(warden_domain::authn::principal_from_session(&svc, &session, request_meta()).await?)
}

/// Authenticate, then ask the gate. The one way a server function gets a [`Grant`].
pub async fn authorize(action: Action) -> Result<(Principal, Grant), AppError> {
    let p = principal().await?;
    let svc = services()?;
    match svc.policy.authorize(&p, action).await {
        Ok(g) => Ok((p, g)),
        Err(_) => Err(AppError::Forbidden),
    }
}
