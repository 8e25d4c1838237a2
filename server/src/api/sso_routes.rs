//! Single sign-on over REST: identity providers (organization administrators; the client
//! secret is write-only), the sign-in page's provider list, and the browser's way through the
//! OpenID Connect authorization code flow (`/auth/oidc/{name}/login` and `/callback`, under the
//! sign-in rate limit). The flow's answers are redirects: to the provider, to the console once
//! signed in, or back to the sign-in page with the reason (`/login?sso_error=CODE`), never a 500.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use tower_sessions::Session;
use warden_domain::admin::identity_providers as idp;
use warden_domain::dto::{
    CreateIdentityProviderRequest, IdentityProviderDto, IdentityProviderTest, Page, SignInProvider,
    SsoFailure, UpdateIdentityProviderRequest,
};
use warden_domain::identity::sso;

use super::auth::AuthUser;
use super::error::{ApiJson, ApiResult};
use crate::state::AppState;

type S = State<AppState>;

pub async fn list_identity_providers(
    State(s): S,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<Page<IdentityProviderDto>>> {
    Ok(Json(idp::list(&s.services, &who).await?))
}

pub async fn create_identity_provider(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateIdentityProviderRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(idp::create(&s.services, &who, req).await?),
    ))
}

pub async fn get_identity_provider(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<IdentityProviderDto>> {
    Ok(Json(idp::get(&s.services, &who, &name).await?))
}

pub async fn update_identity_provider(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateIdentityProviderRequest>,
) -> ApiResult<Json<IdentityProviderDto>> {
    Ok(Json(idp::update(&s.services, &who, &name, req).await?))
}

pub async fn delete_identity_provider(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    idp::delete(&s.services, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn test_identity_provider(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<IdentityProviderTest>> {
    Ok(Json(idp::test(&s.services, &who, &name).await?))
}

pub async fn list_sign_in_providers(State(s): S) -> ApiResult<Json<Vec<SignInProvider>>> {
    Ok(Json(sso::sign_in_providers(&s.services).await?))
}

fn back_to_sign_in(failure: SsoFailure) -> Response {
    Redirect::to(&format!("/login?sso_error={}", failure.public().code())).into_response()
}

pub async fn start_oidc_sign_in(
    State(s): S,
    session: Session,
    Path(name): Path<String>,
) -> Response {
    match sso::start_sign_in(&s.services, &session, &name).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(f) => back_to_sign_in(f),
    }
}

pub async fn finish_oidc_sign_in(
    State(s): S,
    session: Session,
    Path(name): Path<String>,
    parts: http::request::Parts,
) -> Response {
    // Malformed query strings read as no parameters: the flow then refuses them in words.
    let params = Query::<sso::CallbackParams>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let meta = app::ssr::request_meta_from_parts(&parts);
    match sso::finish_sign_in(&s.services, &session, &name, params, meta).await {
        Ok(sso::SsoSignIn::SignedIn(_)) => Redirect::to("/").into_response(),
        Ok(sso::SsoSignIn::MfaRequired) => Redirect::to("/login/mfa").into_response(),
        Err(f) => back_to_sign_in(f),
    }
}
