//! Just-in-time access (issue 17): access requests and the organization's settings for them.

use serde::{Deserialize, Serialize};

/// An expiry the organization requires for bindings of one role.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredExpiry {
    pub role: String,
    /// The longest such a binding may last, in seconds.
    pub max_secs: i64,
    /// Only where the binding reaches a cluster whose labels match this selector (e.g.
    /// `env=production`): a project or namespace binding in a project that owns or is shared
    /// such a cluster, or an organization binding while any cluster matches. Everywhere when
    /// absent. Not allowed on break-glass roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitSettingsDto {
    /// Roles whose bindings must carry an expiry, each with a maximum.
    pub required_expiry: Vec<RequiredExpiry>,
    /// A pending access request lapses after this long (default 24 h).
    pub request_ttl_secs: i64,
    /// Requests for a write role need two approvers.
    pub two_approvals_for_write: bool,
    /// Where request events are posted (JSON with a Slack-compatible `text`); none when null.
    pub webhook_url: Option<String>,
    /// Roles a user may take for a short time without approval, giving a reason (every
    /// organization administrator is alerted). `max_secs` bounds the duration.
    #[serde(default)]
    pub break_glass_roles: Vec<RequiredExpiry>,
    /// The key Warden signs the webhook's deliveries with (`whsec_…`, the Standard Webhooks
    /// scheme: headers `webhook-id`, `webhook-timestamp`, `webhook-signature`), derived from
    /// the URL (a new URL has a new key). Only in the answer of a change that names the webhook
    /// URL in full; never in a read, never audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_signing_secret: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateJitSettingsRequest {
    pub required_expiry: Option<Vec<RequiredExpiry>>,
    pub request_ttl_secs: Option<i64>,
    pub two_approvals_for_write: Option<bool>,
    /// An empty string clears it.
    pub webhook_url: Option<String>,
    pub break_glass_roles: Option<Vec<RequiredExpiry>>,
}

/// `POST /api/v1/access-requests`.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccessRequest {
    pub project: String,
    pub role: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// One cluster of the project the access is meant for (informative: an approval grants the
    /// role on every cluster of the project, which the approver is told).
    #[serde(default)]
    pub cluster: Option<String>,
    /// How long the grant should last once approved.
    pub duration_secs: i64,
    pub reason: String,
    #[serde(default)]
    pub confirm_system_namespaces: bool,
}

/// `POST /api/v1/access-requests/{id}/approve|deny|revoke`.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecideAccessRequest {
    pub comment: Option<String>,
    /// Approve for less time than asked (seconds; never more).
    pub duration_secs: Option<i64>,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDto {
    pub approver: String,
    pub comment: Option<String>,
    pub at: String,
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequestDto {
    pub id: String,
    pub requester: String,
    pub project: String,
    pub role: String,
    /// What the role grants there (its permissions as they stand): what an approval hands
    /// out, not only its name.
    #[serde(default)]
    pub role_permissions: Vec<String>,
    pub namespaces: Vec<String>,
    pub cluster: Option<String>,
    pub duration_secs: i64,
    pub reason: String,
    pub status: super::RequestStatus,
    pub approvals: Vec<ApprovalDto>,
    /// Approvals needed in all (1, or 2 for a write role when the organization says so).
    pub approvals_needed: u32,
    pub created_at: String,
    /// A pending request lapses then.
    pub expires_at: String,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
    /// The binding its approval created.
    pub binding_id: Option<String>,
    /// When the granted access ends.
    pub grant_expires_at: Option<String>,
    /// Whether the caller may approve, deny or revoke it now.
    pub can_decide: bool,
    /// Taken without approval (a break-glass role).
    #[serde(default)]
    pub break_glass: bool,
}

/// Which access requests a list shows.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestScope {
    /// The caller's own requests.
    Mine,
    /// Others' requests the caller may decide on (an administrator or approver of the project).
    Approvals,
    /// Both.
    #[default]
    All,
}

impl RequestScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mine => "mine",
            Self::Approvals => "approvals",
            Self::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Mine, Self::Approvals, Self::All]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessRequestQuery {
    /// Default (and empty): `all`.
    #[serde(deserialize_with = "super::empty_is_none")]
    pub scope: Option<RequestScope>,
    /// Empty: any.
    #[serde(deserialize_with = "super::empty_is_none")]
    pub status: Option<super::RequestStatus>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

/// The console's badge.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessInbox {
    /// Pending requests the caller may decide.
    pub to_decide: u64,
    /// The caller's own requests still pending.
    pub pending_mine: u64,
    /// Break-glass grants in force (for organization administrators: each one is an alert).
    #[serde(default)]
    pub break_glass_active: u64,
}

/// `PUT /api/v1/projects/{name}/approver-group`.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApproverGroupDto {
    /// The group whose members approve the project's access requests (beside its admins);
    /// null for none.
    pub group: Option<String>,
}

/// The console's approver-group form on a project's page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverGroupForm {
    pub group: Option<String>,
    /// The groups one may choose (sorted); empty unless the caller may change the project.
    pub choices: Vec<String>,
    /// Whether the caller may change it.
    pub writable: bool,
}

/// A duration in words: `90 minutes`, `8 hours`, `7 days`.
pub fn jit_duration(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if secs >= 86400 && secs % 86400 == 0 {
        plural(secs / 86400, "day")
    } else if secs >= 3600 && secs % 3600 == 0 {
        plural(secs / 3600, "hour")
    } else if secs >= 60 {
        plural(secs / 60, "minute")
    } else {
        plural(secs.max(0), "second")
    }
}

/// Time left until `until_ms` from `now_ms`, for the console: `3h 12m left`, `expired`.
pub fn time_left(until_ms: i64, now_ms: i64) -> String {
    let left = (until_ms - now_ms) / 1000;
    if left <= 0 {
        return "expired".into();
    }
    let (d, h, m, s) = (
        left / 86400,
        left % 86400 / 3600,
        left % 3600 / 60,
        left % 60,
    );
    if d > 0 {
        format!("{d}d {h}h left")
    } else if h > 0 {
        format!("{h}h {m}m left")
    } else if m > 0 {
        format!("{m}m left")
    } else {
        format!("{s}s left")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_time_left() {
        assert_eq!(jit_duration(3600), "1 hour");
        assert_eq!(jit_duration(8 * 3600), "8 hours");
        assert_eq!(jit_duration(7 * 86400), "7 days");
        assert_eq!(jit_duration(90 * 60), "90 minutes");
        assert_eq!(time_left(1000, 2000), "expired");
        assert_eq!(time_left(3_600_000 + 60_000, 0), "1h 1m left");
        assert_eq!(time_left(86_400_000 * 2, 0), "2d 0h left");
        assert_eq!(time_left(30_000, 0), "30s left");
    }
}
