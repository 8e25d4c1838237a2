//! Kubeconfig and kubectl settings: the DTOs of the REST API and the console. Plain serde
//! types (compiled for the browser too); the use cases are in `warden_domain::kubectl` (ssr).

use serde::{Deserialize, Deserializer, Serialize};

/// Defaults (seconds) when no level sets a value.
pub const DEFAULT_VALIDITY_SECS: i64 = 8 * 3600;
pub const DEFAULT_MAX_VALIDITY_SECS: i64 = 7 * 24 * 3600;
pub const DEFAULT_SA_IDLE_SECS: i64 = 8 * 3600;
pub const DEFAULT_RECENT_SIGN_IN_SECS: i64 = 12 * 3600;
/// Bounds accepted for any duration setting.
pub const MIN_DURATION_SECS: i64 = 60;
pub const MAX_DURATION_SECS: i64 = 366 * 24 * 3600;
/// Web terminals: ended after this long without a keystroke (15 min)...
pub const DEFAULT_TERMINAL_IDLE_SECS: i64 = 15 * 60;
/// ...or this long after they opened (8 h)...
pub const DEFAULT_TERMINAL_MAX_SECS: i64 = 8 * 3600;
/// ...and at most this many open per person at once.
pub const DEFAULT_TERMINAL_MAX_CONCURRENT: i64 = 5;
/// Bounds of the terminal settings.
pub const TERMINAL_IDLE_RANGE: std::ops::RangeInclusive<i64> = 60..=24 * 3600;
pub const TERMINAL_MAX_RANGE: std::ops::RangeInclusive<i64> = 60..=7 * 24 * 3600;
pub const TERMINAL_CONCURRENT_RANGE: std::ops::RangeInclusive<i64> = 1..=100;

/// The kubectl settings stored at one level (organization, user or cluster). `null` inherits
/// from the level above (or the default).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubectlSettings {
    /// How long a downloaded kubeconfig's credential is valid (organization, user).
    pub credential_validity_secs: Option<i64>,
    /// Upper bound of `credential_validity_secs` (organization only).
    pub max_credential_validity_secs: Option<i64>,
    /// A user's service account on a cluster is removed after this long without a request.
    pub sa_idle_secs: Option<i64>,
    /// Refuse kubectl unless the user signed in to the console within `recent_sign_in_secs`.
    pub require_recent_sign_in: Option<bool>,
    pub recent_sign_in_secs: Option<i64>,
    /// Refuse every kubectl request (and kubeconfig downloads).
    pub disable_cli: Option<bool>,
    /// Only organization administrators may read or write secrets through the gateway.
    pub secrets_org_admins_only: Option<bool>,
    /// A web terminal ends after this many seconds without input (organization, user,
    /// cluster: a cluster can only shorten it).
    #[serde(default)]
    pub terminal_idle_secs: Option<i64>,
    /// A web terminal ends this many seconds after it opened (same levels).
    #[serde(default)]
    pub terminal_max_secs: Option<i64>,
    /// How many web terminals one person may have open at once (organization, user).
    #[serde(default)]
    pub terminal_max_concurrent: Option<i64>,
    /// Web terminal recordings keep the keystrokes too (off by default: they hold whatever
    /// people type, passwords included). Any level's `true` wins.
    #[serde(default)]
    pub terminal_record_input: Option<bool>,
}

/// The settings that apply, after combining the levels.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveKubectlSettings {
    pub credential_validity_secs: i64,
    pub max_credential_validity_secs: i64,
    pub sa_idle_secs: i64,
    pub require_recent_sign_in: bool,
    pub recent_sign_in_secs: i64,
    pub disable_cli: bool,
    pub secrets_org_admins_only: bool,
    pub terminal_idle_secs: i64,
    pub terminal_max_secs: i64,
    pub terminal_max_concurrent: i64,
    pub terminal_record_input: bool,
}

impl Default for EffectiveKubectlSettings {
    fn default() -> Self {
        Self {
            credential_validity_secs: DEFAULT_VALIDITY_SECS,
            max_credential_validity_secs: DEFAULT_MAX_VALIDITY_SECS,
            sa_idle_secs: DEFAULT_SA_IDLE_SECS,
            require_recent_sign_in: false,
            recent_sign_in_secs: DEFAULT_RECENT_SIGN_IN_SECS,
            disable_cli: false,
            secrets_org_admins_only: false,
            terminal_idle_secs: DEFAULT_TERMINAL_IDLE_SECS,
            terminal_max_secs: DEFAULT_TERMINAL_MAX_SECS,
            terminal_max_concurrent: DEFAULT_TERMINAL_MAX_CONCURRENT,
            terminal_record_input: false,
        }
    }
}

impl EffectiveKubectlSettings {
    /// Combine the levels. The user's values override the organization's (validity is capped
    /// by the organization's bound); a cluster can only tighten: its `true` switches win and
    /// its durations apply when shorter.
    pub fn combine(
        org: &KubectlSettings,
        user: &KubectlSettings,
        cluster: &KubectlSettings,
    ) -> Self {
        let d = Self::default();
        let max = org
            .max_credential_validity_secs
            .unwrap_or(d.max_credential_validity_secs);
        let validity = user
            .credential_validity_secs
            .or(org.credential_validity_secs)
            .unwrap_or(d.credential_validity_secs)
            .min(max);
        let shorter = |base: i64, c: Option<i64>| c.map_or(base, |c| c.min(base));
        let sa_idle = shorter(
            user.sa_idle_secs
                .or(org.sa_idle_secs)
                .unwrap_or(d.sa_idle_secs),
            cluster.sa_idle_secs,
        );
        let recent = shorter(
            user.recent_sign_in_secs
                .or(org.recent_sign_in_secs)
                .unwrap_or(d.recent_sign_in_secs),
            cluster.recent_sign_in_secs,
        );
        let flag = |u: Option<bool>, o: Option<bool>, c: Option<bool>| {
            c == Some(true) || u.or(o).unwrap_or(false)
        };
        Self {
            credential_validity_secs: validity,
            max_credential_validity_secs: max,
            sa_idle_secs: sa_idle,
            require_recent_sign_in: flag(
                user.require_recent_sign_in,
                org.require_recent_sign_in,
                cluster.require_recent_sign_in,
            ),
            recent_sign_in_secs: recent,
            disable_cli: flag(user.disable_cli, org.disable_cli, cluster.disable_cli),
            secrets_org_admins_only: flag(
                user.secrets_org_admins_only,
                org.secrets_org_admins_only,
                cluster.secrets_org_admins_only,
            ),
            terminal_idle_secs: shorter(
                user.terminal_idle_secs
                    .or(org.terminal_idle_secs)
                    .unwrap_or(d.terminal_idle_secs),
                cluster.terminal_idle_secs,
            ),
            terminal_max_secs: shorter(
                user.terminal_max_secs
                    .or(org.terminal_max_secs)
                    .unwrap_or(d.terminal_max_secs),
                cluster.terminal_max_secs,
            ),
            terminal_max_concurrent: user
                .terminal_max_concurrent
                .or(org.terminal_max_concurrent)
                .unwrap_or(d.terminal_max_concurrent),
            terminal_record_input: flag(
                user.terminal_record_input,
                org.terminal_record_input,
                cluster.terminal_record_input,
            ),
        }
    }
}

/// The level kubectl settings are set at (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubectlSettingsScope {
    Organization,
    User,
    Cluster,
}

impl KubectlSettingsScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Organization => "organization",
            Self::User => "user",
            Self::Cluster => "cluster",
        }
    }
}

/// One level's settings as stored, and what applies there.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubectlSettingsDto {
    pub scope: KubectlSettingsScope,
    /// The user's email or the cluster's name; absent for the organization.
    pub subject: Option<String>,
    /// The values set at this level (`null` = inherited).
    pub settings: KubectlSettings,
    /// What applies at this level once inherited values are filled in.
    pub effective: EffectiveKubectlSettings,
    /// What an empty field inherits: the organization's values for a user or cluster, the
    /// built-in defaults for the organization.
    pub inherited: EffectiveKubectlSettings,
    pub updated_at: Option<String>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// PATCH body: a field that is absent stays as it is; `null` clears it (inherit again).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKubectlSettingsRequest {
    #[serde(default, deserialize_with = "present")]
    pub credential_validity_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub max_credential_validity_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub sa_idle_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub require_recent_sign_in: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub recent_sign_in_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub disable_cli: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub secrets_org_admins_only: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub terminal_idle_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub terminal_max_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub terminal_max_concurrent: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub terminal_record_input: Option<Option<bool>>,
}

/// The answer to a revocation.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeconfigRevoked {
    pub user: String,
    /// Every credential issued before this instant is refused from the next request on.
    pub revoked_before: String,
    /// How many unexpired credentials this revocation stopped.
    pub credentials_revoked: u64,
}

/// A cluster the caller reaches with kubectl, and with what rights (the "My tools" page).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyKubeCluster {
    pub name: String,
    /// The project through which the strongest right comes.
    pub project: String,
    pub status: crate::dto::ClusterStatus,
    /// The rights in words, e.g. "write in apple; read in banana".
    pub access: String,
}

/// The caller's kubectl access: reachable clusters, live credentials, settings in force.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyKubectl {
    pub email: String,
    /// The user's service account name on every cluster.
    pub service_account: String,
    pub clusters: Vec<MyKubeCluster>,
    /// Unexpired, unrevoked credentials issued to the caller.
    pub active_credentials: u64,
    /// When the newest of them expires (RFC 3339).
    pub latest_expiry: Option<String>,
    /// How long a new kubeconfig's credential is valid.
    pub credential_validity_secs: i64,
    /// kubectl access is disabled for the caller by the settings.
    pub cli_disabled: bool,
    /// Warden's public URL, for `wardenctl login --url`.
    #[serde(default)]
    pub console_url: String,
    /// The `wardenctl` builds this Warden serves (none when it serves none).
    #[serde(default)]
    pub cli_builds: Vec<CliBuild>,
}

/// A build of `wardenctl` this Warden serves (`GET /api/v1/downloads/wardenctl`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliBuild {
    /// `OS-ARCH`: `linux-amd64`, `darwin-arm64`, `windows-amd64`…
    pub platform: String,
    /// `linux`, `darwin` or `windows`.
    pub os: String,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// The name to save it as: `wardenctl`, or `wardenctl.exe` on Windows.
    pub file_name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Where to download it (signed in), relative to Warden's URL.
    pub url: String,
}

/// The platform a program runs on, in the names of `wardenctl` builds (`("linux", "amd64")`),
/// if builds are named for it.
pub fn this_platform() -> Option<(&'static str, &'static str)> {
    let os = match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "darwin",
        "windows" => "windows",
        _ => return None,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => return None,
    };
    Some((os, arch))
}

impl CliBuild {
    /// The platform in words: "Linux (x86-64)", "macOS (Apple silicon)".
    pub fn label(&self) -> String {
        let os = match self.os.as_str() {
            "linux" => "Linux",
            "darwin" => "macOS",
            "windows" => "Windows",
            other => other,
        };
        let arch = match (self.os.as_str(), self.arch.as_str()) {
            ("darwin", "arm64") => "Apple silicon",
            ("darwin", "amd64") => "Intel",
            (_, "amd64") => "x86-64",
            (_, "arm64") => "ARM64",
            (_, other) => other,
        };
        format!("{os} ({arch})")
    }
}

/// A duration in words for people: "8 h", "90 min", "2 d 4 h".
pub fn human_duration(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d} d"));
    }
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 || parts.is_empty() {
        parts.push(format!("{m} min"));
    }
    parts.join(" ")
}

/// Query of `GET /api/v1/kubeconfig`.
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigQuery {
    /// Only this cluster (by name).
    pub cluster: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_overrides_org_cluster_only_tightens() {
        let org = KubectlSettings {
            credential_validity_secs: Some(3600),
            max_credential_validity_secs: Some(7200),
            disable_cli: Some(true),
            ..Default::default()
        };
        let user = KubectlSettings {
            credential_validity_secs: Some(10_000),
            disable_cli: Some(false),
            ..Default::default()
        };
        let cluster = KubectlSettings {
            sa_idle_secs: Some(600),
            secrets_org_admins_only: Some(true),
            ..Default::default()
        };
        let e = EffectiveKubectlSettings::combine(&org, &user, &cluster);
        assert_eq!(
            e.credential_validity_secs, 7200,
            "capped by the org's bound"
        );
        assert!(!e.disable_cli, "the user's exemption overrides the org");
        assert_eq!(e.sa_idle_secs, 600);
        assert!(e.secrets_org_admins_only);
        let e = EffectiveKubectlSettings::combine(
            &org,
            &user,
            &KubectlSettings {
                disable_cli: Some(true),
                sa_idle_secs: Some(10 * 24 * 3600),
                ..Default::default()
            },
        );
        assert!(e.disable_cli, "a cluster can disable kubectl for everyone");
        assert_eq!(
            e.sa_idle_secs, DEFAULT_SA_IDLE_SECS,
            "a cluster only shortens"
        );
    }

    #[test]
    fn patch_distinguishes_absent_and_null() {
        let r: UpdateKubectlSettingsRequest =
            serde_json::from_str(r#"{"disable_cli": null, "sa_idle_secs": 60}"#).unwrap();
        assert_eq!(r.disable_cli, Some(None));
        assert_eq!(r.sa_idle_secs, Some(Some(60)));
        assert_eq!(r.credential_validity_secs, None);
    }
}
