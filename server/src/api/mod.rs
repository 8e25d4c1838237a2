//! The REST API under `/api/v1`: thin handlers over the domain layer. The route table below
//! also generates the OpenAPI document (`GET /api/v1/openapi.json`).

mod access_requests;
mod access_routes;
mod audit;
pub mod auth;
mod cluster_reads;
mod clusters;
mod downloads;
pub mod error;
mod mfa_routes;
pub mod openapi;
mod session_routes;
mod sso_routes;
mod streams;

use axum::Router;
use warden_domain::dto::*;

use crate::state::AppState;
use access_routes as a;

crate::endpoints! {
    post "/auth/login" => session_routes::login, "session", "Sign in with email and password; sets the session cookie", 200, req = LoginRequest, resp = Me, public = true;
    post "/auth/mfa" => mfa_routes::verify_mfa, "session", "The second step of a sign-in with a second factor: the authenticator's code or a recovery code", 200, req = MfaCodeRequest, resp = Me, public = true;
    post "/auth/step-up" => mfa_routes::step_up, "session", "Prove a second factor again in this browser session (asked before a terminal or a kubeconfig for a role that allows writes when the last one is older than an hour)", 204, req = MfaCodeRequest;
    post "/auth/logout" => session_routes::logout, "session", "Sign out; the session is deleted server-side", 204;
    get "/auth/providers" => sso_routes::list_sign_in_providers, "session", "The identity providers the sign-in page offers (name, display name, login URL)", 200, resp = Vec<SignInProvider>, public = true;
    get "/auth/oidc/{name}/login" => sso_routes::start_oidc_sign_in, "session", "Start signing in with an identity provider: redirects the browser to the provider (authorization code flow with PKCE)", 303, public = true;
    get "/auth/oidc/{name}/callback" => sso_routes::finish_oidc_sign_in, "session", "Where the provider sends the browser back: signs the user in and redirects to the console, or to /login?sso_error=CODE", 303, public = true;
    get "/me" => session_routes::me, "session", "The caller and their effective permissions", 200, resp = Me;
    get "/me/mfa" => mfa_routes::get_my_mfa, "session", "Whether the caller signs in with a second factor, and how many recovery codes are left", 200, resp = MfaStatus;
    post "/me/mfa/totp" => mfa_routes::begin_totp_enrolment, "session", "Start enrolling an authenticator app: secret, otpauth URI and QR code (SVG)", 201, resp = TotpEnrolment;
    post "/me/mfa/totp/confirm" => mfa_routes::confirm_totp_enrolment, "session", "Confirm the enrolment with a first code; answers ten recovery codes, shown once", 200, req = MfaCodeRequest, resp = RecoveryCodes;
    delete "/users/{user}/mfa" => mfa_routes::reset_user_mfa, "users", "Reset a user's second factor (user.write): their sessions end; optionally revoke their API keys and kubeconfigs (revoke_api_keys, revoke_kubeconfigs); audited", 204, query = mfa_routes::ResetMfaQuery;
    post "/me/password" => session_routes::change_password, "session", "Change one's own password", 204, req = ChangePasswordRequest;
    get "/audit/events" => audit::list_audit_events, "audit", "Search the audit log (newest first, keyset pagination)", 200, resp = Page<AuditEventDto>, query = AuditQuery;
    get "/audit/facets" => audit::get_audit_facets, "audit", "Facets of the audit filter (same parameters as /audit/events): the most frequent actors, kinds, clusters, namespaces, verbs and outcomes with their counts, within the caller's scope", 200, resp = AuditFacets, query = AuditQuery;
    get "/audit/histogram" => audit::get_audit_histogram, "audit", "Allowed, denied and error events per time bucket over the filter's range (same parameters as /audit/events); the bucket width follows the range (1 min for 15m and 1h … 12 h for 30d)", 200, resp = AuditHistogram, query = AuditQuery;
    get "/audit/events/{id}" => audit::get_audit_event, "audit", "One audit event with the other events of the same request (request_id, the Kubernetes Audit-ID) and of the same web terminal, and its recording; 404 when it is outside the caller's scope", 200, resp = AuditEventDetail;
    get "/audit/tail" => audit::tail_audit_events, "audit", "Live tail: new events matching the filter (same parameters as /audit/events) as Server-Sent Events (`event: audit`, `id`: the event's seq, `data`: the event as JSON), within the caller's scope; the caller's sign-in and scope are checked again every few seconds and at every authorization change, and the stream ends with `event: end` (`data`: the reason) when the sign-in no longer holds. `Last-Event-ID` resumes after that seq, reaching back at most 10 minutes (older events: the list or the export)", 200, query = AuditQuery;
    get "/audit/export" => audit::export_audit_events, "audit", "Export the audit log as CSV or NDJSON (format=csv|ndjson), newest first: every event of the filter (same parameters as /audit/events) within the caller's scope, streamed page by page; `limit` sends only that many of the newest (no other cap). A body cut short means the export failed midway", 200, query = audit::ExportQueryDoc;
    get "/projects" => a::list_projects, "projects", "Projects visible to the caller, sorted by name, a page at a time (q matches the name or description; limit, cursor)", 200, resp = Page<ProjectDto>, query = ProjectQuery;
    post "/projects" => a::create_project, "projects", "Create a project", 201, req = CreateProjectRequest, resp = ProjectDto;
    get "/projects/{name}" => a::get_project, "projects", "A project by name or id", 200, resp = ProjectDto;
    patch "/projects/{name}" => a::update_project, "projects", "Change a project", 200, req = UpdateProjectRequest, resp = ProjectDto;
    get "/projects/{name}/namespaces" => a::project_namespaces, "projects", "The namespaces each cluster of the project (owned or shared in) reports, for choosing a namespace grant", 200, resp = Vec<ClusterNamespaces>;
    delete "/projects/{name}" => a::delete_project, "projects", "Delete a project (refused while clusters belong to it)", 204;
    get "/users" => a::list_users, "users", "Users, with search, filters and pagination", 200, resp = Page<UserDto>, query = UserQuery;
    post "/users" => a::create_user, "users", "Create a user (with a first password, or get a one-time set-password link)", 201, req = CreateUserRequest, resp = CreatedUser;
    get "/users/{user}" => a::get_user, "users", "A user by email or id, with groups, bindings and effective access", 200, resp = UserDetail;
    patch "/users/{user}" => a::update_user, "users", "Activate, deactivate or rename a user", 200, req = UpdateUserRequest, resp = UserDto;
    delete "/users/{user}" => a::delete_user, "users", "Delete a user", 204;
    post "/users/{user}/reset-password" => a::reset_user_password, "users", "Invalidate the password and return a one-time set-password link; optionally revoke the user's API keys and kubeconfigs", 200, req = crate::api::access_routes::ResetPasswordRequest;
    get "/users/{user}/explain" => a::explain_user, "users", "Why a user may (or may not) do something (permission, project?, namespace?, cluster?)", 200, resp = Explanation, query = access_routes::ExplainQuery;
    get "/groups" => a::list_groups, "groups", "Groups with their member counts (the members: GET /groups/{name})", 200, resp = Page<GroupDto>;
    post "/groups" => a::create_group, "groups", "Create a group", 201, req = CreateGroupRequest, resp = GroupDto;
    get "/groups/{name}" => a::get_group, "groups", "A group by name or id", 200, resp = GroupDto;
    patch "/groups/{name}" => a::update_group, "groups", "Change a group", 200, req = UpdateGroupRequest, resp = GroupDto;
    delete "/groups/{name}" => a::delete_group, "groups", "Delete a group (refused for built-ins and while bound)", 204;
    post "/groups/{name}/members" => a::add_group_member, "groups", "Add a member", 201, req = AddMemberRequest, resp = GroupDto;
    delete "/groups/{name}/members/{email}" => a::remove_group_member, "groups", "Remove a member", 200, resp = GroupDto;
    get "/roles" => a::list_roles, "roles", "Built-in and custom roles", 200, resp = Page<RoleDto>;
    post "/roles" => a::create_role, "roles", "Create a custom role", 201, req = CreateRoleRequest, resp = RoleDto;
    get "/roles/{name}" => a::get_role, "roles", "A role by name or id", 200, resp = RoleDto;
    patch "/roles/{name}" => a::update_role, "roles", "Change a custom role", 200, req = UpdateRoleRequest, resp = RoleDto;
    delete "/roles/{name}" => a::delete_role, "roles", "Delete a custom role (refused while bound)", 204;
    get "/permissions" => a::list_permissions, "roles", "The permission catalogue", 200, resp = Page<PermissionDto>;
    get "/bindings" => a::list_bindings, "bindings", "Role bindings visible to the caller", 200, resp = Page<BindingDto>, query = BindingQuery;
    post "/bindings" => a::create_binding, "bindings", "Bind a user or group to a role at organization, project or namespace scope", 201, req = CreateBindingRequest, resp = BindingDto;
    delete "/bindings/{id}" => a::delete_binding, "bindings", "Remove a binding", 204;
    post "/access-requests" => access_requests::create_access_request, "access-requests", "Ask for a role in a project (optionally on namespaces, naming a cluster) for a duration, with a reason", 201, req = CreateAccessRequest, resp = AccessRequestDto;
    post "/access-requests/break-glass" => access_requests::break_glass_access, "access-requests", "Take a break-glass role at once, without approval, for at most its maximum, giving a reason; every organization administrator is alerted", 201, req = CreateAccessRequest, resp = AccessRequestDto;
    get "/access-requests" => access_requests::list_access_requests, "access-requests", "The caller's requests and those they may decide (scope=mine|approvals|all, status)", 200, resp = Page<AccessRequestDto>, query = AccessRequestQuery;
    get "/access-requests/inbox" => access_requests::get_access_inbox, "access-requests", "The console's badge: pending requests the caller may decide, and their own pending ones", 200, resp = AccessInbox;
    get "/access-requests/{id}" => access_requests::get_access_request, "access-requests", "One request (its requester and approvers only)", 200, resp = AccessRequestDto;
    post "/access-requests/{id}/approve" => access_requests::approve_access_request, "access-requests", "Approve (optionally for less time, with a comment); the last approval needed creates a time-bound binding", 200, req = DecideAccessRequest, resp = AccessRequestDto;
    post "/access-requests/{id}/deny" => access_requests::deny_access_request, "access-requests", "Deny, with a comment", 200, req = DecideAccessRequest, resp = AccessRequestDto;
    post "/access-requests/{id}/cancel" => access_requests::cancel_access_request, "access-requests", "The requester withdraws a pending request", 200, resp = AccessRequestDto;
    post "/access-requests/{id}/revoke" => access_requests::revoke_access_request, "access-requests", "End an approved grant before its expiry (its live streams end at once)", 200, req = DecideAccessRequest, resp = AccessRequestDto;
    get "/settings/jit" => access_requests::get_jit_settings, "settings", "Just-in-time access settings: required expiry per role, request lifetime, two approvals for write roles, webhook", 200, resp = JitSettingsDto;
    patch "/settings/jit" => access_requests::update_jit_settings, "settings", "Change the just-in-time access settings", 200, req = UpdateJitSettingsRequest, resp = JitSettingsDto;
    get "/projects/{name}/approver-group" => access_requests::get_approver_group, "projects", "The group whose members approve the project's access requests (beside its admins)", 200, resp = ApproverGroupDto;
    put "/projects/{name}/approver-group" => access_requests::set_approver_group, "projects", "Set or clear the project's approver group (project.write)", 200, req = ApproverGroupDto, resp = ApproverGroupDto;
    get "/api-keys" => a::list_api_keys, "api-keys", "The caller's API keys", 200, resp = Page<ApiKeyDto>;
    post "/api-keys" => a::create_api_key, "api-keys", "Create an API key (the secret is returned once)", 201, req = CreateApiKeyRequest, resp = CreatedApiKey;
    delete "/api-keys/{id}" => a::revoke_api_key, "api-keys", "Revoke one of the caller's API keys", 204;
    get "/settings" => a::get_settings, "settings", "Organization settings", 200, resp = SettingsDto;
    patch "/settings" => a::update_settings, "settings", "Change organization settings", 200, req = UpdateSettingsRequest, resp = SettingsDto;
    get "/identity-providers" => sso_routes::list_identity_providers, "identity-providers", "OpenID Connect identity providers (the client secret is never returned)", 200, resp = Page<IdentityProviderDto>;
    post "/identity-providers" => sso_routes::create_identity_provider, "identity-providers", "Add an identity provider (organization administrators)", 201, req = CreateIdentityProviderRequest, resp = IdentityProviderDto;
    get "/identity-providers/{name}" => sso_routes::get_identity_provider, "identity-providers", "An identity provider by name or id", 200, resp = IdentityProviderDto;
    patch "/identity-providers/{name}" => sso_routes::update_identity_provider, "identity-providers", "Change an identity provider (an empty or absent client_secret keeps the stored one)", 200, req = UpdateIdentityProviderRequest, resp = IdentityProviderDto;
    delete "/identity-providers/{name}" => sso_routes::delete_identity_provider, "identity-providers", "Remove an identity provider (its users stay, unable to sign in with it)", 204;
    post "/identity-providers/{name}/test" => sso_routes::test_identity_provider, "identity-providers", "Run discovery against the provider's issuer and report what was found or the error", 200, resp = IdentityProviderTest;
    get "/clusters" => clusters::list_clusters, "clusters", "Clusters visible to the caller (owned by or shared with their projects), filtered by project, status, label (key=value) or text", 200, resp = Page<ClusterDto>, query = ClusterQuery;
    post "/clusters" => clusters::create_cluster, "clusters", "Import a cluster; the answer carries a one-time manifest_url for kubectl apply -f", 201, req = CreateClusterRequest, resp = CreatedCluster;
    get "/clusters/{name}" => clusters::get_cluster, "clusters", "A cluster: status (pending|connected|disconnected), last_seen, kubernetes_version, facts, status history", 200, resp = ClusterDetail;
    patch "/clusters/{name}" => clusters::update_cluster, "clusters", "Change a cluster's description, labels, project, sharing or agent proxy", 200, req = UpdateClusterRequest, resp = ClusterDto;
    delete "/clusters/{name}" => clusters::delete_cluster, "clusters", "Delete a cluster: its agent credential is revoked and its tunnel closed at once (force=true when the agent is not connected)", 204, query = clusters::DeleteClusterQuery;
    post "/clusters/{name}/agent/revoke" => clusters::revoke_cluster_agent, "clusters", "Revoke the cluster's agent (a credential or key that may have leaked): its credentials stop working and its tunnel closes at once, manifests not applied yet expire; a new manifest connects it again (cluster.write)", 204;
    get "/clusters/{name}/manifest" => clusters::get_cluster_manifest, "clusters", "The agent manifest (YAML) with a fresh one-time bootstrap token (cluster.write)", 200;
    post "/clusters/{name}/bootstrap" => clusters::create_cluster_bootstrap, "clusters", "A fresh one-time manifest URL and the manifest it serves (cluster.write)", 201, resp = ClusterBootstrap;
    get "/clusters/{name}/namespaces" => cluster_reads::list_cluster_namespaces, "clusters", "The namespaces of a cluster the caller may look into (granted by Warden, or listed by the cluster for the caller), and where they may exec", 200, resp = ClusterNamespacesDto;
    get "/clusters/{name}/pods" => cluster_reads::list_cluster_pods, "clusters", "The pods of a namespace, listed on the cluster as the caller (their own service account); 403 with the reason when they may not see them", 200, resp = PodListDto, query = cluster_reads::PodQuery;
    get "/streams" => streams::list_streams, "streams", "Live streams and web terminals: the caller's, or every user's with all=true (kubeconfig.write)", 200, resp = Page<LiveStreamDto>, query = streams::StreamQuery;
    delete "/streams/{id}" => streams::end_stream, "streams", "End a live stream or terminal now (one's own, or anyone's with kubeconfig.write)", 204;
    get "/terminal/recordings/{id}" => crate::terminal::get_recording, "streams", "A terminal's recording (asciicast v2), for those who may read its audit events", 200;
    get "/kubeconfig" => crate::gateway::routes::issue_kubeconfig, "kubeconfig", "A kubeconfig (YAML) for the caller: one context per cluster reachable with kubectl, a fresh short-lived credential (?cluster=NAME for one)", 200, query = warden_domain::kubeconfig::KubeconfigQuery;
    post "/kubeconfig/revoke" => crate::gateway::routes::revoke_own_kubeconfig, "kubeconfig", "Revoke every kubeconfig issued to the caller so far", 200, resp = warden_domain::kubeconfig::KubeconfigRevoked;
    post "/users/{user}/kubeconfig/revoke" => crate::gateway::routes::revoke_user_kubeconfig, "kubeconfig", "Revoke every kubeconfig issued to a user so far (kubeconfig.write)", 200, resp = warden_domain::kubeconfig::KubeconfigRevoked;
    get "/downloads/wardenctl" => downloads::list_cli_builds, "downloads", "The wardenctl builds this Warden serves (platform, size, SHA-256, download URL); empty when it serves none (WARDEN_CLI_DIR)", 200, resp = Vec<warden_domain::kubeconfig::CliBuild>;
    get "/downloads/wardenctl/{platform}" => downloads::download_cli_build, "downloads", "A wardenctl build (platform linux-amd64, darwin-arm64, windows-amd64…) as a file to save; its SHA-256 in X-Checksum-Sha256", 200;
    get "/kubectl/settings" => crate::gateway::routes::get_org_kubectl_settings, "kubeconfig", "The organization's kubectl settings", 200, resp = warden_domain::kubeconfig::KubectlSettingsDto;
    patch "/kubectl/settings" => crate::gateway::routes::update_org_kubectl_settings, "kubeconfig", "Change the organization's kubectl settings (null clears a value)", 200, req = warden_domain::kubeconfig::UpdateKubectlSettingsRequest, resp = warden_domain::kubeconfig::KubectlSettingsDto;
    get "/users/{user}/kubectl-settings" => crate::gateway::routes::get_user_kubectl_settings, "kubeconfig", "A user's kubectl settings (overrides of the organization's)", 200, resp = warden_domain::kubeconfig::KubectlSettingsDto;
    patch "/users/{user}/kubectl-settings" => crate::gateway::routes::update_user_kubectl_settings, "kubeconfig", "Change a user's kubectl settings (kubeconfig.write)", 200, req = warden_domain::kubeconfig::UpdateKubectlSettingsRequest, resp = warden_domain::kubeconfig::KubectlSettingsDto;
    get "/clusters/{name}/kubectl-settings" => crate::gateway::routes::get_cluster_kubectl_settings, "kubeconfig", "A cluster's kubectl settings", 200, resp = warden_domain::kubeconfig::KubectlSettingsDto;
    patch "/clusters/{name}/kubectl-settings" => crate::gateway::routes::update_cluster_kubectl_settings, "kubeconfig", "Change a cluster's kubectl settings (cluster.write on its project)", 200, req = warden_domain::kubeconfig::UpdateKubectlSettingsRequest, resp = warden_domain::kubeconfig::KubectlSettingsDto;
}

pub fn router() -> Router<AppState> {
    openapi::with_openapi(documented_router(), operations())
        .route(
            "/",
            axum::routing::any(|| async { error::ApiError::not_found("endpoint") }),
        )
        .fallback(|| async { error::ApiError::not_found("endpoint") })
}
