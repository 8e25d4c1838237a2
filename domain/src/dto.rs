//! Data sent to and from browsers and API clients. Plain serde types: never a database model.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSummary {
    pub id: String,
    pub email: String,
    pub name: String,
}

/// The permissions a principal holds at one place: the organization, a project, or
/// namespaces within a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveGrant {
    /// `organization`, `project` or `namespace`.
    pub scope: String,
    pub project: Option<String>,
    pub namespaces: Vec<String>,
    pub permissions: Vec<String>,
    /// The role and binding that grant these permissions.
    pub role: String,
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Me {
    pub user: UserSummary,
    pub session_type: String,
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
}

/// One audit event as the API and the console show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventDto {
    pub seq: i64,
    pub id: String,
    /// RFC 3339.
    pub time: String,
    pub kind: String,
    pub actor_id: Option<String>,
    pub actor: String,
    pub session_type: String,
    pub project: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub action: String,
    pub resource_kind: Option<String>,
    pub resource_name: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i32>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub details: serde_json::Value,
}

/// Filters for the audit search; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditQuery {
    pub kind: Option<String>,
    /// Matches the actor's name (email) exactly, or the actor id.
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
    /// Free text matched against the resource name, path and reason.
    pub q: Option<String>,
    pub limit: Option<u64>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}
