//! Data sent to and from browsers and API clients. Plain serde types: never a database model.

use serde::{Deserialize, Serialize};

pub use crate::permissions::Scope;

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSummary {
    pub id: String,
    pub email: String,
    pub name: String,
}

/// The permissions a principal holds at one place: the organization, a project, or
/// namespaces within a project.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveGrant {
    pub scope: Scope,
    pub project: Option<String>,
    pub namespaces: Vec<String>,
    pub permissions: Vec<String>,
    /// The role and binding that grant these permissions.
    pub role: String,
    pub via: String,
    /// When the grant ends (RFC 3339); absent for a permanent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Me {
    pub user: UserSummary,
    /// How the caller signed in (the console, an API key, a kubeconfig…).
    pub session_type: SessionType,
    pub must_change_password: bool,
    /// Permissions that hold across the whole organization.
    pub org_permissions: Vec<String>,
    pub grants: Vec<EffectiveGrant>,
    /// Projects the caller can see.
    pub projects: Vec<String>,
}

impl Me {
    pub fn has_org(&self, permission: &str) -> bool {
        self.org_permissions.iter().any(|p| p == permission)
    }
}

/// Texts the server and the browser both show.
pub mod messages {
    /// The answer to a failed sign-in; the same whether or not the email exists.
    pub const INVALID_CREDENTIALS: &str = "Invalid email or password.";
    pub const LOCKED: &str = "Too many failed sign-in attempts. Try again later.";
    /// The answer to a wrong, used or expired second factor.
    pub const MFA_INVALID: &str = "Invalid or already used code. Sign in again if this persists.";
    /// The answer to `POST /api/v1/api-keys` authenticated by an API key.
    pub const API_KEY_NEEDS_SESSION: &str =
        "An API key cannot create API keys. Sign in to the console to create one.";
}

/// An enum stored and sent as a snake_case string: `as_str` (the stored and wire value),
/// `parse` (`None` for anything else), `from_stored` (a stored value read back; anything
/// unknown becomes the named fallback), `label` (in words) and `ALL`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, unknown: $fallback:ident,
        { $( $(#[$vmeta:meta])* $variant:ident => $s:literal, $label:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $( $(#[$vmeta])* $variant ),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)* _ => None }
            }

            #[doc = concat!("A stored value read back: anything unknown is `", stringify!($fallback), "`.")]
            pub fn from_stored(s: &str) -> Self {
                Self::parse(s).unwrap_or($name::$fallback)
            }

            pub const fn label(self) -> &'static str {
                match self { $($name::$variant => $label),* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// What an audit event is about.
    AuditKind, unknown: System, {
        /// An action in the console or the REST API.
        Console => "console", "Console",
        /// A sign-in, sign-out or second factor.
        SignIn => "sign_in", "Sign-in",
        /// A request to a cluster's Kubernetes API through the gateway.
        KubeApi => "kube_api", "Kubernetes API",
        /// A web terminal session (kubectl shell or pod exec).
        Terminal => "terminal", "Terminal",
        /// An agent connecting, disconnecting or refused.
        Agent => "agent", "Agent",
        /// Warden itself (expiries, retention, deliveries).
        System => "system", "System",
    }
);

wire_enum!(
    /// How an audited request or action ended. A stored value that is none of these reads as
    /// an error, never as allowed.
    Outcome, unknown: Error, {
        Allowed => "allowed", "Allowed",
        Denied => "denied", "Denied",
        Error => "error", "Error",
    }
);

wire_enum!(
    /// Through what an audited action came.
    SessionType, unknown: System, {
        /// A console session in a browser.
        Browser => "browser", "Browser",
        /// An API key.
        Api => "api", "API key",
        /// kubectl or the `warden` CLI with a kubeconfig.
        Cli => "cli", "CLI",
        /// The web terminal.
        WebShell => "web_shell", "Web terminal",
        /// An agent.
        Agent => "agent", "Agent",
        /// Warden itself.
        System => "system", "System",
    }
);

wire_enum!(
    /// Where a just-in-time access request stands. A stored value that is none of these reads
    /// as expired: nothing can be done with it.
    RequestStatus, unknown: Expired, {
        /// Waiting for approvals.
        Pending => "pending", "Pending",
        /// Approved: its binding grants the role until it expires.
        Approved => "approved", "Approved",
        /// Refused by an approver.
        Denied => "denied", "Denied",
        /// Withdrawn by the requester.
        Cancelled => "cancelled", "Cancelled",
        /// Not decided in time.
        Expired => "expired", "Expired",
        /// Approved, then its grant was ended early.
        Revoked => "revoked", "Revoked",
    }
);

/// One audit event as the API and the console show it.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventDto {
    pub seq: i64,
    pub id: String,
    /// RFC 3339.
    pub time: String,
    pub kind: AuditKind,
    pub actor_id: Option<String>,
    pub actor: String,
    pub session_type: SessionType,
    pub project: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub action: String,
    pub resource_kind: Option<String>,
    pub resource_name: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i32>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub details: serde_json::Value,
    /// For an allowed terminal event that names a recording: whether the caller may replay it
    /// (it shows what the terminal printed, so it takes the right to read the secrets there;
    /// see `GET /api/v1/terminal/recordings/{id}`). Absent where not decided (e.g. the live
    /// tail): the player then says whether it may play.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayable: Option<bool>,
}

/// Filters for the audit search; every field optional.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditQuery {
    pub kind: Option<String>,
    /// Matches the start of the actor's name (email), or the actor id exactly.
    pub actor: Option<String>,
    pub outcome: Option<String>,
    /// Prefix of the action, e.g. `sign_in` or `user.`.
    pub action: Option<String>,
    pub project: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// RFC 3339 lower and upper bounds on the event time.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Free text matched against the resource name, path, reason and actor, or exactly an
    /// event id (the `Audit-ID` the gateway sent the cluster).
    pub q: Option<String>,
    /// The last `15m`, `1h`, `24h`, `7d` or `30d` (when `since` is not given).
    pub range: Option<String>,
    /// Kubernetes API events: the verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`, `exec`...).
    pub verb: Option<String>,
    /// Kubernetes API events: the resource (`pods`, `configmaps`, `pods/exec`...).
    pub resource: Option<String>,
    /// The HTTP status answered.
    pub status: Option<i32>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// `false`: leave out Kubernetes discovery and health requests (`/api`, `/apis`,
    /// `/version`, `/openapi`...), which are half of what kubectl sends.
    pub discovery: Option<bool>,
    pub limit: Option<u64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

/// One audit event with what links it to the rest of the log: the other events of the same
/// request (the same `request_id`: a Kubernetes request's `Audit-ID`, which its stream's start
/// and end events share, or a console request's `X-Request-Id`) and of the same web terminal
/// (`details.terminal_id`: the terminal's open and close events and its shell's requests),
/// oldest first, each list at most 100 events, within the reader's scope.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventDetail {
    pub event: AuditEventDto,
    pub same_request: Vec<AuditEventDto>,
    /// The web terminal the event belongs to, if any.
    pub terminal_id: Option<String>,
    pub same_terminal: Vec<AuditEventDto>,
    /// The terminal's recording (for the player at `/audit/recordings/{id}`), when the event
    /// names one the caller may replay.
    pub recording: Option<String>,
}

/// One value of a facet and how many events of the current filter have it.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

/// The most frequent values (at most [`AuditFacets::TOP`] each, most frequent first) among the
/// events of a filter, as the filter's own parameters: `actors` narrow `actor`, `verbs` narrow
/// `verb`, and so on.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFacets {
    /// Events matching the filter.
    pub total: u64,
    pub actors: Vec<FacetCount>,
    pub kinds: Vec<FacetCount>,
    pub clusters: Vec<FacetCount>,
    pub namespaces: Vec<FacetCount>,
    pub verbs: Vec<FacetCount>,
    pub outcomes: Vec<FacetCount>,
}

impl AuditFacets {
    pub const TOP: u64 = 8;
}

/// Events per time bucket, allowed vs denied (errors counted apart).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramBucket {
    /// RFC 3339; the bucket is `[start, end)`.
    pub start: String,
    pub end: String,
    pub allowed: u64,
    pub denied: u64,
    pub error: u64,
}

/// The events of a filter over its time range, in buckets of equal width (every bucket of the
/// range, also the empty ones, oldest first).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHistogram {
    /// RFC 3339; `null` when no event matches a filter without a time range.
    pub since: Option<String>,
    pub until: Option<String>,
    pub bucket_seconds: i64,
    pub buckets: Vec<HistogramBucket>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
// One schema per item type, named after it (`Page_for_UserDto`), as clients generated from the
// document know them.
#[cfg_attr(feature = "openapi", schemars(rename = "Page_for_{T}"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

// ---- Access model: projects, users, groups, roles, bindings, API keys, settings ----

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectDto {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    /// How many clusters and members the project has (in lists and on reads; absent in audit
    /// snapshots of the project itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<ProjectCounts>,
}

/// A project's size at a glance.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectCounts {
    /// Clusters the project owns.
    pub clusters_owned: u32,
    /// Clusters other projects share with it.
    pub clusters_shared: u32,
    /// Distinct users holding a role in it directly.
    pub member_users: u32,
    /// Distinct groups holding a role in it.
    pub member_groups: u32,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectRequest {
    #[serde(default)]
    pub description: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDto {
    pub id: String,
    pub email: String,
    pub name: String,
    pub status: UserStatus,
    pub origin: UserOrigin,
    pub must_change_password: bool,
    /// Whether the user has a password (one invited by a one-time link has none until they
    /// set it; a single sign-on user may have none).
    #[serde(default)]
    pub has_password: bool,
    pub created_at: String,
    pub last_login_at: Option<String>,
    pub groups: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    pub name: String,
    /// With a password the user must change it at first sign-in; without one the answer
    /// carries a one-time `set_password_url`.
    #[serde(default)]
    pub password: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedUser {
    pub user: UserDto,
    pub set_password_url: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default)]
    pub status: Option<UserStatus>,
    #[serde(default)]
    pub name: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserQuery {
    /// Matches email or name.
    pub q: Option<String>,
    pub group: Option<String>,
    pub role: Option<String>,
    pub project: Option<String>,
    /// Empty: any.
    #[serde(deserialize_with = "empty_is_none")]
    pub status: Option<UserStatus>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDetail {
    pub user: UserDto,
    pub bindings: Vec<BindingDto>,
    /// Effective access: every grant with the binding it comes from.
    pub access: Vec<EffectiveGrant>,
    /// Whether the user has an authenticator (an administrator may reset it).
    #[serde(default)]
    pub mfa_enabled: bool,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDto {
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    /// The members, sorted by email (a group's own page; the list leaves it empty: a group
    /// may have thousands).
    pub members: Vec<UserSummary>,
    /// How many members the group has.
    #[serde(default)]
    pub member_count: u64,
}

/// A group as a choice in a form: no description, members or counts.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
    pub builtin: bool,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    #[serde(default)]
    pub description: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The member's email.
    pub user: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleDto {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub description: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    pub name: String,
    pub scope: Scope,
    #[serde(default)]
    pub description: Option<String>,
    pub permissions: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionDto {
    pub name: String,
    pub area: String,
    /// The narrowest role scope that may carry it.
    pub scope: Scope,
    pub description: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    pub kind: SubjectKind,
    /// The user's email or the group's name.
    pub name: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDto {
    pub id: String,
    pub subject: SubjectRef,
    pub role: String,
    pub scope: Scope,
    pub project: Option<String>,
    pub namespaces: Vec<String>,
    pub created_at: String,
    /// When the grant ends (RFC 3339); absent for a permanent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The access request whose approval created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
    /// Said when the binding is made: granted namespaces that clusters of the project do not
    /// have (yet). A warning, not a refusal: the grant applies as soon as they exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The namespaces a cluster of a project reports (for the binding form's suggestions and its
/// "which clusters have it" hint).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNamespaces {
    pub cluster: String,
    pub status: ClusterStatus,
    /// As the agent last reported them; empty until it has.
    pub namespaces: Vec<String>,
}

/// "namespace cherry does not exist on cluster prod-1 yet: …", for each granted namespace a
/// cluster lacks (clusters that have not reported their namespaces are left out).
pub fn missing_namespaces(clusters: &[ClusterNamespaces], granted: &[String]) -> Vec<String> {
    let mut out = vec![];
    for ns in granted {
        let lacking: Vec<&str> = clusters
            .iter()
            .filter(|c| !c.namespaces.is_empty() && !c.namespaces.contains(ns))
            .map(|c| c.cluster.as_str())
            .collect();
        if !lacking.is_empty() {
            out.push(format!(
                "namespace {ns} does not exist on {} {} yet: the grant applies there as soon as it is created",
                if lacking.len() == 1 { "cluster" } else { "clusters" },
                lacking.join(", ")
            ));
        }
    }
    out
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBindingRequest {
    pub subject: SubjectRef,
    pub role: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// A grant on `kube-system`, `kube-public` or `kube-node-lease` reaches the cluster's own
    /// components: it is refused unless this is `true`.
    #[serde(default)]
    pub confirm_system_namespaces: bool,
    /// When the grant ends (RFC 3339, in the future). Absent: until removed, unless the
    /// organization requires an expiry for the role.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Or: the grant ends this many seconds from now (the console's presets).
    #[serde(default)]
    pub expires_in_secs: Option<i64>,
}

/// Namespaces of the cluster itself: grants there need an explicit confirmation.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BindingQuery {
    pub project: Option<String>,
    /// A user's email: their direct bindings.
    pub user: Option<String>,
    pub group: Option<String>,
    pub role: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyDto {
    pub id: String,
    pub name: String,
    /// The visible start of the key, e.g. `wdn_1a2b3c4d`.
    pub prefix: String,
    pub created_at: String,
    pub expires_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: String,
    /// Days until it expires (default 90, at most 365).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub key: ApiKeyDto,
    /// Shown once; only its hash is stored.
    pub secret: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsDto {
    pub organization_name: String,
    pub session_idle_minutes: i32,
    pub session_absolute_hours: i32,
    pub lockout_threshold: i32,
    pub lockout_window_minutes: i32,
    pub lockout_minutes: i32,
    /// Who must sign in with a second factor: `nobody`, `admins` (anyone holding an
    /// organization-wide permission) or `everyone`. Single sign-on users are left to their
    /// identity provider unless the provider is trusted for MFA and its `amr` claim names a
    /// second factor; otherwise Warden asks its own after single sign-on.
    pub mfa_policy: String,
    /// Who may sign in with a local password: `everyone` or `break_glass_only` (only the
    /// accounts in `break_glass_users`; everyone else signs in with an identity provider).
    pub local_sign_in: String,
    /// The emails that keep their local password when `local_sign_in` is `break_glass_only`.
    pub break_glass_users: Vec<String>,
    /// How old a second factor may be before a terminal or a kubeconfig for a role that allows
    /// writes asks for a fresh one (step-up), in minutes (default 60).
    pub step_up_max_age_minutes: i32,
    /// Audit events older than this many days are deleted by a background job (the remaining
    /// chain stays verifiable from a signed checkpoint); `null` keeps them forever (default).
    #[serde(default)]
    pub audit_retention_days: Option<i32>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettingsRequest {
    #[serde(default)]
    pub organization_name: Option<String>,
    #[serde(default)]
    pub session_idle_minutes: Option<i32>,
    #[serde(default)]
    pub session_absolute_hours: Option<i32>,
    #[serde(default)]
    pub lockout_threshold: Option<i32>,
    #[serde(default)]
    pub lockout_window_minutes: Option<i32>,
    #[serde(default)]
    pub lockout_minutes: Option<i32>,
    #[serde(default)]
    pub mfa_policy: Option<String>,
    #[serde(default)]
    pub local_sign_in: Option<String>,
    #[serde(default)]
    pub break_glass_users: Option<Vec<String>>,
    #[serde(default)]
    pub step_up_max_age_minutes: Option<i32>,
    /// Days (1 to 36500); `null` keeps audit events forever; absent leaves it unchanged.
    #[serde(default, deserialize_with = "present")]
    pub audit_retention_days: Option<Option<i32>>,
}

/// A PATCH field that is present: `null` becomes `Some(None)`, absence stays `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// "Why": may this user do this, and which binding allows it.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub allowed: bool,
    /// The binding that allows it, or why nothing does.
    pub because: String,
    /// When a cluster was named: whether the cluster side is in place for the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSide>,
}

/// Whether a grant Warden gives can be used on a cluster right now.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSide {
    pub cluster: String,
    /// The cluster is connected and, when a namespace was named, reports that namespace.
    pub ready: bool,
    /// The cluster side in words.
    pub says: String,
}

// ---- Clusters and their agents ----

/// The status of a cluster's agent connection (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ClusterStatus {
    /// Imported; no agent has connected yet.
    #[default]
    Pending,
    /// The agent's tunnel is up and heartbeats arrive.
    Connected,
    /// The agent was connected once, and no heartbeat arrived within the timeout.
    Disconnected,
}

impl ClusterStatus {
    pub const ALL: [ClusterStatus; 3] = [Self::Pending, Self::Connected, Self::Disconnected];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }

    /// The stored value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A stored value read back: anything unknown counts as disconnected (never as connected).
    pub fn from_stored(s: &str) -> Self {
        Self::parse(s).unwrap_or(Self::Disconnected)
    }

    /// Which needs attention first: pending, then disconnected, then connected.
    pub const fn attention(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Disconnected => 1,
            Self::Connected => 2,
        }
    }

    /// In words, for people.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Connected => "Connected",
            Self::Disconnected => "Disconnected",
        }
    }
}

impl std::fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored values of [`ClusterStatus`], for queries.
pub mod cluster_status {
    use super::ClusterStatus;
    pub const PENDING: &str = ClusterStatus::Pending.as_str();
    pub const CONNECTED: &str = ClusterStatus::Connected.as_str();
    pub const DISCONNECTED: &str = ClusterStatus::Disconnected.as_str();
}

/// Whether a user may sign in (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    /// Cannot sign in; their sessions, API keys and kubeconfigs stop working.
    Deactivated,
}

impl UserStatus {
    pub const ALL: [UserStatus; 2] = [Self::Active, Self::Deactivated];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deactivated => "deactivated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A stored value read back: anything unknown counts as deactivated (fail closed).
    pub fn from_stored(s: &str) -> Self {
        Self::parse(s).unwrap_or(Self::Deactivated)
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Deactivated => "Deactivated",
        }
    }
}

/// A query parameter given empty (`?status=`: a filter form's "any") is absent; any other
/// value must be one of the type's (else the 422 names the parameter and the value).
fn empty_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::{Error, IntoDeserializer};
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => {
            let value: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                s.trim().into_deserializer();
            T::deserialize(value).map(Some).map_err(D::Error::custom)
        }
    }
}

/// How a provider's groups become Warden groups (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMappingMode {
    /// A provider group joins the Warden group of the same name (letter case ignored).
    #[default]
    ByName,
    /// Only the provider groups in the mapping table, each to the Warden group it names.
    Explicit,
}

impl GroupMappingMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ByName => "by_name",
            Self::Explicit => "explicit",
        }
    }

    /// A stored value read back: anything unknown maps by name, as a provider without a
    /// table does.
    pub fn from_stored(s: &str) -> Self {
        if s == Self::Explicit.as_str() {
            Self::Explicit
        } else {
            Self::ByName
        }
    }
}

/// Whom a binding grants to (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// One user.
    User,
    /// Every member of a group.
    Group,
}

impl SubjectKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
        }
    }

    /// `user` or `group`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "group" => Some(Self::Group),
            _ => None,
        }
    }
}

impl std::fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a user signs in (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOrigin {
    /// A password kept by Warden.
    Local,
    /// Single sign-on through an identity provider.
    Sso,
}

impl UserOrigin {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Sso => "sso",
        }
    }

    /// A stored value read back (anything but `sso` is local: its password rules apply).
    pub fn from_stored(s: &str) -> Self {
        if s == Self::Sso.as_str() {
            Self::Sso
        } else {
            Self::Local
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::Local => "Local password",
            Self::Sso => "Single sign-on",
        }
    }
}

/// The agent's dial-out proxy settings, written into the manifest.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySettings {
    /// `http://[user:password@]host:port` for `ws://` Warden URLs.
    pub http_proxy: Option<String>,
    /// `http://[user:password@]host:port` for `wss://` Warden URLs.
    pub https_proxy: Option<String>,
    /// Comma-separated hosts or domain suffixes reached without the proxy.
    pub no_proxy: Option<String>,
    /// PEM of an extra certificate authority to trust (a TLS-inspecting proxy).
    pub ca_pem: Option<String>,
}

impl ProxySettings {
    pub fn is_empty(&self) -> bool {
        self.http_proxy.is_none()
            && self.https_proxy.is_none()
            && self.no_proxy.is_none()
            && self.ca_pem.is_none()
    }
}

/// One node as the agent reports it.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFact {
    pub name: String,
    pub ready: bool,
    #[serde(default)]
    pub kubelet_version: Option<String>,
}

/// What the agent reports with every heartbeat.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterFacts {
    pub kubernetes_version: Option<String>,
    pub node_count: u32,
    /// At most the first 500 nodes.
    pub nodes: Vec<NodeFact>,
    pub namespace_count: u32,
    /// At most the first 1000 namespaces.
    pub namespaces: Vec<String>,
    pub agent_version: Option<String>,
    /// Whether the admission guard that keeps `warden-system` to the agent is in force; none
    /// from an agent that does not report it.
    pub guard: Option<GuardStatus>,
}

/// The admission guard (`warden-system-guard`, a ValidatingAdmissionPolicy and its binding,
/// from the agent's manifest) as the agent finds it on its cluster. Without it, a
/// cluster-wide write grant reaches into `warden-system` (the agent's token) straight at the
/// cluster.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStatus {
    /// The policy as the manifest ships it, bound to deny.
    Enforced,
    /// No policy (deleted, or a cluster older than Kubernetes 1.30).
    PolicyMissing,
    /// The policy is there but not as shipped (its rules, conditions or failure policy).
    PolicyAltered,
    /// No binding: the policy is not applied.
    BindingMissing,
    /// A binding that does not deny, or binds another policy.
    BindingAltered,
    /// The agent may not read them (a manifest from before it reported the guard).
    Unreadable,
    /// What a newer agent reports that this Warden does not know.
    #[serde(other)]
    Unknown,
}

impl GuardStatus {
    /// In words, for the console and the audit log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Enforced => "enforced",
            Self::PolicyMissing => "missing: the ValidatingAdmissionPolicy warden-system-guard is not on the cluster",
            Self::PolicyAltered => "altered: the ValidatingAdmissionPolicy warden-system-guard is not as the manifest ships it",
            Self::BindingMissing => "not applied: its ValidatingAdmissionPolicyBinding is missing",
            Self::BindingAltered => "not applied: its binding does not deny",
            Self::Unreadable => "unknown: the agent may not read it (apply the cluster's current manifest)",
            Self::Unknown => "unknown",
        }
    }
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDto {
    pub id: String,
    pub name: String,
    pub description: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The owning project.
    pub project: String,
    /// Other projects the cluster is shared with.
    pub shared_with: Vec<String>,
    pub status: ClusterStatus,
    pub status_reason: Option<String>,
    /// The last heartbeat (RFC 3339).
    pub last_seen: Option<String>,
    /// When an agent first proved a bootstrap token.
    pub registered_at: Option<String>,
    pub connected_at: Option<String>,
    pub kubernetes_version: Option<String>,
    pub node_count: Option<i32>,
    pub agent_version: Option<String>,
    /// UID of the cluster's `kube-system` namespace, bound at registration.
    pub fingerprint: Option<String>,
    pub namespaces: Vec<String>,
    pub nodes: Vec<NodeFact>,
    /// The admission guard as the agent last reported it (none: not reported).
    #[serde(default)]
    pub guard: Option<GuardStatus>,
    pub proxy: ProxySettings,
    pub created_at: String,
    pub updated_at: String,
}

/// One change of a cluster's status.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatusChange {
    pub status: ClusterStatus,
    pub reason: String,
    pub at: String,
}

/// `GET /api/v1/clusters/{name}`: the cluster, its recent status changes, and the command that
/// removes the agent from the cluster.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDetail {
    #[serde(flatten)]
    pub cluster: ClusterDto,
    pub history: Vec<ClusterStatusChange>,
    pub cleanup_command: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClusterRequest {
    pub name: String,
    pub project: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub shared_with: Option<Vec<String>>,
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateClusterRequest {
    /// Accepted only when equal to the current name: clusters cannot be renamed.
    #[serde(default)]
    pub name: Option<String>,
    /// Moves the cluster to another project.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub shared_with: Option<Vec<String>>,
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
}

/// A one-time way to install the agent: the manifest (with a fresh bootstrap token) and a URL
/// that serves it once, without a session, for `kubectl apply -f <url>`.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterBootstrap {
    pub manifest_url: String,
    pub manifest_url_expires_at: String,
    /// Until when the bootstrap token inside the manifest is accepted.
    pub bootstrap_expires_at: String,
    pub apply_command: String,
    pub manifest: String,
}

/// The connect page of a cluster: the one pending manifest, shown again while its link is live,
/// and what the wizard must say plainly about this installation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterConnect {
    /// The live manifest link (and its manifest), when Warden still holds it.
    pub bootstrap: Option<ClusterBootstrap>,
    /// A manifest issued earlier is still pending but cannot be shown again (its link was
    /// used, or another Warden process issued it): when it was issued and until when it works.
    pub pending: Option<PendingManifest>,
    /// Why an agent in a real cluster may not get going with this installation's settings.
    pub warnings: Vec<ConnectWarning>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingManifest {
    pub issued_at: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectWarning {
    /// `loopback_url` | `unpublished_image`.
    pub code: String,
    pub message: String,
}

/// The console's landing page, each part only for callers who may see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Clusters the caller may read, those needing attention first (pending, then
    /// disconnected), at most [`Overview::CLUSTERS_SHOWN`].
    pub clusters: Vec<OverviewCluster>,
    /// Readable clusters by status.
    pub cluster_counts: std::collections::BTreeMap<ClusterStatus, u64>,
    /// `None`: the caller may not read the audit log.
    pub recent_denials: Option<Vec<AuditEventDto>>,
    pub recent_activity: Option<Vec<AuditEventDto>>,
    /// For organization administrators: the first steps of a fresh installation.
    pub getting_started: Option<GettingStarted>,
}

impl Overview {
    pub const CLUSTERS_SHOWN: usize = 10;
    pub const EVENTS_SHOWN: u64 = 8;
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OverviewCluster {
    pub name: String,
    pub project: String,
    pub status: ClusterStatus,
    pub status_reason: Option<String>,
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GettingStarted {
    pub cluster_imported: bool,
    pub project_created: bool,
    pub people_added: bool,
    pub kubeconfig_downloaded: bool,
}

impl GettingStarted {
    pub fn done(&self) -> bool {
        self.cluster_imported
            && self.project_created
            && self.people_added
            && self.kubeconfig_downloaded
    }
}

/// `POST /api/v1/clusters`: the cluster and its one-time `manifest_url`.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedCluster {
    #[serde(flatten)]
    pub cluster: ClusterDto,
    pub manifest_url: String,
    pub manifest_url_expires_at: String,
    pub bootstrap_expires_at: String,
    pub apply_command: String,
}

/// Filters and paging of the projects list (sorted by name).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectQuery {
    /// Matches the name or description.
    pub q: Option<String>,
    /// Rows per page: 50 by default, 1 to 500.
    pub limit: Option<u64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterQuery {
    /// Clusters owned by, or shared with, this project.
    pub project: Option<String>,
    /// Empty: any.
    #[serde(deserialize_with = "empty_is_none")]
    pub status: Option<ClusterStatus>,
    /// `key=value`, or `key` for any value.
    pub label: Option<String>,
    /// Matches the name or description.
    pub q: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

// ---- Live streams and terminals ----

/// What a live stream is.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// A `watch=true` request.
    Watch,
    /// `pods/log` with `follow=true`.
    Logs,
    Exec,
    Attach,
    Portforward,
    /// `…/proxy` of a pod, service or node.
    Proxy,
    /// Any other upgraded or long-running request.
    Stream,
    /// A web terminal (its kubectl shell or pod exec).
    Terminal,
}

impl StreamKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Logs => "logs",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::Portforward => "portforward",
            Self::Proxy => "proxy",
            Self::Stream => "stream",
            Self::Terminal => "terminal",
        }
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A live stream Warden relays for a person: a watch, a log follow, an exec/attach/port-forward
/// through the gateway, or a web terminal.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStreamDto {
    pub id: u64,
    pub kind: StreamKind,
    pub user_id: String,
    pub user: String,
    pub cluster: String,
    pub namespace: Option<String>,
    /// What it reads or runs in, e.g. `pods/web`.
    pub target: Option<String>,
    /// RFC 3339.
    pub started_at: String,
}

// ---- Reading a cluster as the user (the pod picker) ----

/// A namespace of a cluster the user may look into, and whether they may exec there.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceAccessDto {
    pub name: String,
    /// Write access there (read-only access never execs).
    pub can_exec: bool,
}

/// The namespaces of a cluster the user may look into: those Warden grants them, and those
/// the cluster lists for them when they may list namespaces.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNamespacesDto {
    pub cluster: String,
    pub items: Vec<NamespaceAccessDto>,
    /// The user's access covers every namespace of the cluster.
    pub cluster_wide: bool,
}

/// A pod as the user sees it.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodDto {
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// Ready containers over containers, e.g. `1/2`.
    pub ready: String,
    pub containers: Vec<String>,
    pub node: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
}

/// The pods of one namespace, listed on the cluster as the user (their own service account).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodListDto {
    pub cluster: String,
    pub namespace: String,
    /// Whether the user may exec into these pods (write access in the namespace).
    pub can_exec: bool,
    pub items: Vec<PodDto>,
}

/// What a web terminal runs: a kubectl shell, or a shell in a pod's container (exec).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalMode {
    Shell,
    Exec,
}

/// A terminal recording's facts, for the player.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingDto {
    /// The id of the `terminal.open` audit event (and of the recording).
    pub id: String,
    pub user: String,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// `pods/NAME` for a pod exec; none for a kubectl shell.
    pub target: Option<String>,
    pub mode: TerminalMode,
    /// RFC 3339.
    pub started_at: String,
    /// Set once the terminal closed.
    pub ended: Option<RecordingEnd>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingEnd {
    pub reason: Option<String>,
    pub duration_ms: Option<i64>,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
}

// ---- single sign-on (OpenID Connect) ----

/// An identity provider as the API and the console show it. The client secret is write-only:
/// only whether one is set is shown.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityProviderDto {
    pub id: String,
    /// The identifier in URLs (lowercase letters, digits and dashes); it never changes.
    pub name: String,
    /// What the sign-in button says: "Sign in with DISPLAY_NAME".
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_set: bool,
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub name_claim: String,
    pub groups_claim: String,
    /// Empty: any domain.
    pub allowed_domains: Vec<String>,
    /// `by_name` (a provider group joins the Warden group of the same name) or `explicit`.
    pub group_mapping_mode: GroupMappingMode,
    /// Provider group -> Warden group (explicit mode).
    pub group_mapping: std::collections::BTreeMap<String, String>,
    pub auto_provision: bool,
    /// Whether a first sign-in may link an existing Warden account with the same email.
    pub link_existing_users: bool,
    pub enabled: bool,
    /// Whether an ID token whose `amr` claim names a second factor (RFC 8176: `mfa`, `otp`,
    /// `hwk`, `swk`, `sms`, ...) counts as Warden's second factor.
    pub trust_provider_mfa: bool,
    /// The redirect URI to register at the provider.
    pub callback_url: String,
    pub created_at: String,
    pub updated_at: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentityProviderRequest {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Default `openid email profile`; add `groups` when the provider needs it.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub email_claim: Option<String>,
    #[serde(default)]
    pub name_claim: Option<String>,
    #[serde(default)]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    pub group_mapping_mode: Option<GroupMappingMode>,
    #[serde(default)]
    pub group_mapping: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub auto_provision: Option<bool>,
    #[serde(default)]
    pub link_existing_users: Option<bool>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub trust_provider_mfa: Option<bool>,
}

/// Every field optional; an absent or empty `client_secret` keeps the stored one.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentityProviderRequest {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub email_claim: Option<String>,
    #[serde(default)]
    pub name_claim: Option<String>,
    #[serde(default)]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    pub group_mapping_mode: Option<GroupMappingMode>,
    #[serde(default)]
    pub group_mapping: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub auto_provision: Option<bool>,
    #[serde(default)]
    pub link_existing_users: Option<bool>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub trust_provider_mfa: Option<bool>,
}

/// What "Test" found: the provider's discovery document, or the error in words.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityProviderTest {
    pub ok: bool,
    pub message: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub signing_keys: usize,
    pub scopes_supported: Vec<String>,
}

/// A sign-in button: shown to everyone on the sign-in page.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignInProvider {
    pub name: String,
    pub display_name: String,
    pub login_url: String,
}

/// Why a single sign-on did not sign anyone in: the code travels in the sign-in page's query
/// string (`/login?sso_error=CODE`), the page shows [`SsoFailure::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SsoFailure {
    UnknownProvider,
    ProviderDenied,
    ProviderError,
    Unavailable,
    State,
    Token,
    MissingEmail,
    EmailUnverified,
    Domain,
    NoAccount,
    LinkRefused,
    Deactivated,
    Internal,
}

impl SsoFailure {
    pub const ALL: [SsoFailure; 13] = [
        SsoFailure::UnknownProvider,
        SsoFailure::ProviderDenied,
        SsoFailure::ProviderError,
        SsoFailure::Unavailable,
        SsoFailure::State,
        SsoFailure::Token,
        SsoFailure::MissingEmail,
        SsoFailure::EmailUnverified,
        SsoFailure::Domain,
        SsoFailure::NoAccount,
        SsoFailure::LinkRefused,
        SsoFailure::Deactivated,
        SsoFailure::Internal,
    ];
    pub fn code(self) -> &'static str {
        match self {
            SsoFailure::UnknownProvider => "unknown_provider",
            SsoFailure::ProviderDenied => "denied",
            SsoFailure::ProviderError => "provider_error",
            SsoFailure::Unavailable => "unavailable",
            SsoFailure::State => "state",
            SsoFailure::Token => "token",
            SsoFailure::MissingEmail => "missing_email",
            SsoFailure::EmailUnverified => "email_unverified",
            SsoFailure::Domain => "domain",
            SsoFailure::NoAccount => "no_account",
            SsoFailure::LinkRefused => "link_refused",
            SsoFailure::Deactivated => "deactivated",
            SsoFailure::Internal => "internal",
        }
    }
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }
    /// What the browser is told: whether an account exists for an email (linking refused, a
    /// deactivated account) is not said to whoever can present that email; the audit event
    /// keeps the real reason.
    pub fn public(self) -> Self {
        match self {
            SsoFailure::LinkRefused | SsoFailure::Deactivated => SsoFailure::NoAccount,
            other => other,
        }
    }
    pub fn message(self) -> &'static str {
        match self {
            SsoFailure::UnknownProvider => "This identity provider does not exist or is turned off.",
            SsoFailure::ProviderDenied => "The identity provider did not let you sign in (access denied or cancelled).",
            SsoFailure::ProviderError => "The identity provider answered with an error. Try again, or ask an administrator.",
            SsoFailure::Unavailable => "The identity provider cannot be reached now. Try again later.",
            SsoFailure::State => "This sign-in link is invalid or has expired. Start again from the sign-in page.",
            SsoFailure::Token => "The identity provider's answer could not be verified. Nobody was signed in.",
            SsoFailure::MissingEmail => "The identity provider did not tell Warden your email address.",
            SsoFailure::EmailUnverified => "The identity provider has not verified your email address.",
            SsoFailure::Domain => "Your email domain is not allowed to sign in with this provider.",
            SsoFailure::NoAccount => "You cannot sign in to Warden with this account of the provider. Ask an administrator.",
            SsoFailure::LinkRefused => "A Warden account with your email already exists and is not linked to this provider. Ask an administrator.",
            SsoFailure::Deactivated => "Your Warden account is deactivated.",
            SsoFailure::Internal => "Something went wrong on our side. It has been logged.",
        }
    }
}

// ---- multi-factor authentication (TOTP) ----

/// `POST /api/v1/auth/mfa` (the second step of a sign-in) and enrolment confirmation.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaCodeRequest {
    /// The 6-digit code of the authenticator app, or a recovery code.
    pub code: String,
}

/// A new authenticator: the secret (also in text for manual entry), its `otpauth://` URI and
/// the QR code of that URI (SVG).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotpEnrolment {
    pub secret: String,
    pub otpauth_url: String,
    pub qr_svg: String,
}

/// Ten single-use recovery codes, shown once (Warden keeps only their hashes).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
    /// The owner's API keys ended by the enrolment (made without a second factor).
    #[serde(default)]
    pub api_keys_revoked: u64,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaStatus {
    pub enabled: bool,
    pub recovery_codes_left: usize,
}
/// Just-in-time access: time-bound grants, access requests, their settings.
mod audit_words;
pub mod jit;
pub use jit::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_enums_round_trip_and_read_unknown_values_closed() {
        for k in AuditKind::ALL {
            assert_eq!(AuditKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        for s in RequestStatus::ALL {
            assert_eq!(RequestStatus::from_stored(s.as_str()), *s);
        }
        // A value Warden never wrote is never read as permissive.
        assert_eq!(Outcome::from_stored("ALLOWED"), Outcome::Error);
        assert_eq!(Outcome::from_stored(""), Outcome::Error);
        assert_eq!(
            RequestStatus::from_stored("approved "),
            RequestStatus::Expired
        );
        assert_eq!(AuditKind::from_stored("kubeapi"), AuditKind::System);
        assert_eq!(SessionType::from_stored("shell"), SessionType::System);
        assert!(serde_json::from_str::<Outcome>("\"maybe\"").is_err());
        assert_eq!(
            serde_json::from_str::<SessionType>("\"web_shell\"").unwrap(),
            SessionType::WebShell
        );
    }
}
