//! The access model over REST: projects, users, groups, roles, bindings, API keys, settings.
//! Each handler extracts, calls one domain use case (which authorizes), and answers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use warden_domain::admin::{api_keys, bindings, groups, org_settings, projects, roles};
use warden_domain::dto::*;
use warden_domain::identity::users;
use warden_domain::DomainError;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

type S = State<AppState>;

// ---- projects ----

pub async fn list_projects(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult<Json<Page<ProjectDto>>> {
    Ok(Json(projects::list(&s.services, &who, &q).await?))
}
pub async fn create_project(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateProjectRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(projects::create(&s.services, &who, req).await?),
    ))
}
pub async fn get_project(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<ProjectDto>> {
    Ok(Json(projects::get(&s.services, &who, &name).await?))
}
pub async fn project_namespaces(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<ClusterNamespaces>>> {
    Ok(Json(
        warden_domain::admin::bindings::namespaces_of_project(&s.services, &who, &name).await?,
    ))
}
pub async fn update_project(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateProjectRequest>,
) -> ApiResult<Json<ProjectDto>> {
    Ok(Json(projects::update(&s.services, &who, &name, req).await?))
}
pub async fn delete_project(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    projects::delete(&s.services, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- users ----

pub async fn list_users(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> ApiResult<Json<Page<UserDto>>> {
    Ok(Json(users::list(&s.services, &who, &q).await?))
}
pub async fn create_user(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(users::create(&s.services, &who, req).await?),
    ))
}
pub async fn get_user(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
) -> ApiResult<Json<UserDetail>> {
    Ok(Json(users::get(&s.services, &who, &user).await?))
}
pub async fn update_user(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserDto>> {
    Ok(Json(users::update(&s.services, &who, &user, req).await?))
}
pub async fn delete_user(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
) -> ApiResult<StatusCode> {
    users::delete(&s.services, &who, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Serialize)]
pub struct ResetPasswordResponse {
    pub set_password_url: String,
}
/// `POST /users/{user}/reset-password`: the body is optional (no body: only the password).
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// Also revoke every API key of the user.
    #[serde(default)]
    pub revoke_api_keys: bool,
    /// Also revoke every kubeconfig credential issued to the user (needs `kubeconfig.write`).
    #[serde(default)]
    pub revoke_kubeconfigs: bool,
}

pub async fn reset_user_password(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ResetPasswordResponse>> {
    let req: ResetPasswordRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResetPasswordRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("the JSON body does not match: {e}"),
            )
        })?
    };
    let opts = users::ResetOptions {
        revoke_api_keys: req.revoke_api_keys,
        revoke_kubeconfigs: req.revoke_kubeconfigs,
        ..Default::default()
    };
    Ok(Json(ResetPasswordResponse {
        set_password_url: users::reset_password(&s.services, &who, &user, opts).await?,
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub permission: String,
    pub project: Option<String>,
    pub namespace: Option<String>,
    /// Also say whether the cluster side is in place (connected; the namespace exists).
    pub cluster: Option<String>,
}
pub async fn explain_user(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(user): Path<String>,
    ApiQuery(q): ApiQuery<ExplainQuery>,
) -> ApiResult<Json<Explanation>> {
    Ok(Json(
        users::explain(
            &s.services,
            &who,
            &user,
            &q.permission,
            q.project.as_deref(),
            q.namespace.as_deref(),
            q.cluster.as_deref(),
        )
        .await?,
    ))
}

// ---- groups ----

pub async fn list_groups(State(s): S, AuthUser(who): AuthUser) -> ApiResult<Json<Page<GroupDto>>> {
    Ok(Json(groups::list(&s.services, &who).await?))
}
pub async fn create_group(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(groups::create(&s.services, &who, req).await?),
    ))
}
pub async fn get_group(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<GroupDto>> {
    Ok(Json(groups::get(&s.services, &who, &name).await?))
}
pub async fn update_group(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateGroupRequest>,
) -> ApiResult<Json<GroupDto>> {
    Ok(Json(groups::update(&s.services, &who, &name, req).await?))
}
pub async fn delete_group(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    groups::delete(&s.services, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub async fn add_group_member(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(groups::add_member(&s.services, &who, &name, &req.user).await?),
    ))
}
pub async fn remove_group_member(
    State(s): S,
    AuthUser(who): AuthUser,
    Path((name, email)): Path<(String, String)>,
) -> ApiResult<Json<GroupDto>> {
    Ok(Json(
        groups::remove_member(&s.services, &who, &name, &email).await?,
    ))
}

// ---- roles ----

pub async fn list_roles(State(s): S, AuthUser(who): AuthUser) -> ApiResult<Json<Page<RoleDto>>> {
    Ok(Json(roles::list(&s.services, &who).await?))
}
pub async fn create_role(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateRoleRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(roles::create(&s.services, &who, req).await?),
    ))
}
pub async fn get_role(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<RoleDto>> {
    Ok(Json(roles::get(&s.services, &who, &name).await?))
}
pub async fn update_role(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateRoleRequest>,
) -> ApiResult<Json<RoleDto>> {
    Ok(Json(roles::update(&s.services, &who, &name, req).await?))
}
pub async fn delete_role(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    roles::delete(&s.services, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub async fn list_permissions(AuthUser(_who): AuthUser) -> Json<Page<PermissionDto>> {
    Json(Page {
        items: roles::catalogue(),
        next: None,
    })
}

// ---- bindings ----

pub async fn list_bindings(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiQuery(q): ApiQuery<BindingQuery>,
) -> ApiResult<Json<Page<BindingDto>>> {
    Ok(Json(bindings::list(&s.services, &who, &q).await?))
}
pub async fn create_binding(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateBindingRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(bindings::create(&s.services, &who, req).await?),
    ))
}
pub async fn delete_binding(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    bindings::delete(&s.services, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- API keys ----

pub async fn list_api_keys(
    State(s): S,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<Page<ApiKeyDto>>> {
    Ok(Json(api_keys::list(&s.services, &who).await?))
}
pub async fn create_api_key(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<impl IntoResponse> {
    match api_keys::create(&s.services, &who, req).await {
        Ok(created) => Ok((StatusCode::CREATED, Json(created))),
        // The one refusal here (an API key minting a key) is no secret: say what to do.
        Err(DomainError::Forbidden { reason }) => {
            tracing::info!(%reason, "forbidden");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                warden_domain::dto::messages::API_KEY_NEEDS_SESSION,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
pub async fn revoke_api_key(
    State(s): S,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    api_keys::revoke(&s.services, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- settings ----

pub async fn get_settings(State(s): S, AuthUser(who): AuthUser) -> ApiResult<Json<SettingsDto>> {
    Ok(Json(org_settings::get(&s.services, &who).await?))
}
pub async fn update_settings(
    State(s): S,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<UpdateSettingsRequest>,
) -> ApiResult<Json<SettingsDto>> {
    Ok(Json(org_settings::update(&s.services, &who, req).await?))
}
