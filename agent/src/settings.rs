//! The agent's bootstrap settings: the keys of its Secret, read from the cluster (in-cluster
//! mode) or from the Secret inside a manifest file (`--manifest`), exactly the same way.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use warden_domain::agent_protocol::{secret_keys as k, SECRET};

#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Warden's public URL (`http(s)://host[:port]`).
    pub warden_url: String,
    pub cluster: String,
    pub bootstrap_token: Option<String>,
    /// PEM of the CA that signs Warden's certificate.
    pub warden_ca: Option<String>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_ca: Option<String>,
    /// The credential a previous registration stored in the Secret.
    pub credential: Option<String>,
    /// The seed of the agent's Ed25519 key, generated at its first start (never sent anywhere).
    pub agent_key: Option<String>,
    /// Dial a plain `http://` Warden URL on another host (set by Warden in the manifest).
    pub allow_insecure_http: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("warden_url", &self.warden_url)
            .field("cluster", &self.cluster)
            .field(
                "bootstrap_token",
                &self.bootstrap_token.as_ref().map(|_| "<redacted>"),
            )
            .field("warden_ca", &self.warden_ca.is_some())
            .field("http_proxy", &self.http_proxy.is_some())
            .field("https_proxy", &self.https_proxy.is_some())
            .field("no_proxy", &self.no_proxy)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("agent_key", &self.agent_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the manifest is not valid YAML: {0}")]
    Yaml(String),
    #[error("the manifest has no Secret named {SECRET}")]
    NoSecret,
    #[error("the Secret lacks {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

fn non_empty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Settings {
    /// From the Secret's data (decoded values by key).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, SettingsError> {
        let warden_url =
            non_empty(data.get(k::WARDEN_URL)).ok_or(SettingsError::Missing(k::WARDEN_URL))?;
        if !(warden_url.starts_with("http://") || warden_url.starts_with("https://")) {
            return Err(SettingsError::Invalid(format!(
                "{} must start with http:// or https://",
                k::WARDEN_URL
            )));
        }
        let cluster = non_empty(data.get(k::CLUSTER)).ok_or(SettingsError::Missing(k::CLUSTER))?;
        let bootstrap_token = non_empty(data.get(k::BOOTSTRAP_TOKEN));
        let credential = non_empty(data.get(k::CREDENTIAL));
        if bootstrap_token.is_none() && credential.is_none() {
            return Err(SettingsError::Missing(k::BOOTSTRAP_TOKEN));
        }
        Ok(Self {
            warden_url: warden_url.trim_end_matches('/').to_owned(),
            cluster,
            bootstrap_token,
            warden_ca: non_empty(data.get(k::WARDEN_CA)),
            http_proxy: non_empty(data.get(k::HTTP_PROXY)),
            https_proxy: non_empty(data.get(k::HTTPS_PROXY)),
            no_proxy: non_empty(data.get(k::NO_PROXY)),
            proxy_ca: non_empty(data.get(k::PROXY_CA)),
            credential,
            agent_key: non_empty(data.get(k::AGENT_KEY)),
            allow_insecure_http: data
                .get(k::ALLOW_INSECURE_HTTP)
                .is_some_and(|v| v.trim() == "true"),
        })
    }

    /// From a Secret object (`stringData` over base64 `data`, as the API server merges them).
    pub fn from_secret(secret: &serde_json::Value) -> Result<Self, SettingsError> {
        Self::from_data(&secret_data(secret)?)
    }

    /// From the agent's Secret inside a manifest (a multi-document YAML file).
    pub fn from_manifest(yaml: &str) -> Result<Self, SettingsError> {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc)
                .map_err(|e| SettingsError::Yaml(e.to_string()))?;
            if v.is_null() {
                continue;
            }
            let v = serde_json::to_value(v).map_err(|e| SettingsError::Yaml(e.to_string()))?;
            let is_secret = v.get("kind").and_then(|k| k.as_str()) == Some("Secret")
                && v.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(SECRET);
            if is_secret {
                return Self::from_secret(&v);
            }
        }
        Err(SettingsError::NoSecret)
    }
}

/// The decoded key/values of a Secret object.
pub fn secret_data(secret: &serde_json::Value) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut out = BTreeMap::new();
    if let Some(data) = secret.get("data").and_then(|d| d.as_object()) {
        for (key, v) in data {
            let raw = v.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .map_err(|_| SettingsError::Invalid(format!("Secret data {key} is not base64")))?;
            out.insert(key.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    if let Some(data) = secret.get("stringData").and_then(|d| d.as_object()) {
        for (key, v) in data {
            out.insert(key.clone(), v.as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_domain::agent_protocol::{render_manifest, ManifestParams};
    use warden_domain::dto::ProxySettings;

    #[test]
    fn reads_the_secret_of_a_rendered_manifest() {
        let proxy = ProxySettings {
            https_proxy: Some("http://proxy:3128".into()),
            no_proxy: Some("localhost".into()),
            ..Default::default()
        };
        let m = render_manifest(&ManifestParams {
            cluster: "edge-7",
            project: "default",
            warden_url: "https://warden.example.com",
            bootstrap_token: "wdb_secret",
            bootstrap_expires_at: "2026-01-01T00:00:00Z",
            warden_ca_pem: Some("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"),
            image: "warden-agent:0.1.0",
            proxy: &proxy,
            allow_insecure_http: false,
        });
        let s = Settings::from_manifest(&m).unwrap();
        assert_eq!(s.warden_url, "https://warden.example.com");
        assert_eq!(s.cluster, "edge-7");
        assert_eq!(s.bootstrap_token.as_deref(), Some("wdb_secret"));
        assert!(s
            .warden_ca
            .as_deref()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\nAAA"));
        assert_eq!(s.https_proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(s.no_proxy.as_deref(), Some("localhost"));
        assert!(s.credential.is_none());
        assert!(!format!("{s:?}").contains("wdb_secret"));
    }

    #[test]
    fn data_is_base64_and_string_data_wins() {
        let secret = serde_json::json!({
            "kind": "Secret",
            "data": {"WARDEN_URL": "aHR0cDovL2E6MQ==", "WARDEN_CLUSTER": "Yw==", "WARDEN_AGENT_CREDENTIAL": "d2RjX3g="},
            "stringData": {"WARDEN_CLUSTER": "d"}
        });
        let s = Settings::from_secret(&secret).unwrap();
        assert_eq!(s.warden_url, "http://a:1");
        assert_eq!(s.cluster, "d");
        assert_eq!(s.credential.as_deref(), Some("wdc_x"));
        assert!(matches!(
            Settings::from_manifest("kind: ConfigMap\n"),
            Err(SettingsError::NoSecret)
        ));
    }
}
