//! Where the agent keeps what it learns: in a cluster, its own Secret (the bootstrap settings,
//! its private key from its first start and, after registration, its credential); outside one,
//! the manifest file it was given and a state file next to it (mode 0600). The private key never
//! leaves the cluster (or, outside one, that file).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use warden_domain::agent_protocol::{secret_keys, SECRET};

use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Settings(#[from] crate::settings::SettingsError),
    #[error("cannot read or write {0}")]
    Io(String),
    #[error("the Kubernetes API refused: {0}")]
    Kube(#[from] kube::Error),
}

/// Reads the settings and keeps the credential.
pub enum Store {
    /// The agent's Secret in its namespace (in-cluster mode).
    Secret {
        kube: kube::Client,
        namespace: String,
        name: String,
    },
    /// A manifest file and a JSON state file next to it (`--manifest`).
    File { manifest: PathBuf, state: PathBuf },
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct State {
    cluster: String,
    #[serde(default)]
    credential: Option<String>,
    /// The seed of the agent's Ed25519 key.
    #[serde(default)]
    key: Option<String>,
}

impl Store {
    pub fn secret(kube: kube::Client, namespace: impl Into<String>) -> Self {
        Store::Secret {
            kube,
            namespace: namespace.into(),
            name: SECRET.into(),
        }
    }

    /// A manifest file; the state goes into `<manifest>.state.json` unless `state` is given.
    pub fn file(manifest: impl Into<PathBuf>, state: Option<PathBuf>) -> Self {
        let manifest = manifest.into();
        let state = state.unwrap_or_else(|| {
            let mut name = manifest
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            name.push(".state.json");
            manifest.with_file_name(name)
        });
        Store::File { manifest, state }
    }

    /// The current settings, with the stored credential.
    pub async fn load(&self) -> Result<Settings, StoreError> {
        match self {
            Store::Secret {
                kube,
                namespace,
                name,
            } => {
                let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
                let s = api.get(name).await?;
                let v = serde_json::to_value(&s)
                    .map_err(|e| StoreError::Io(format!("Secret {namespace}/{name}: {e}")))?;
                Ok(Settings::from_secret(&v)?)
            }
            Store::File { manifest, state } => {
                let text = std::fs::read_to_string(manifest)
                    .map_err(|e| StoreError::Io(format!("{}: {e}", manifest.display())))?;
                let mut settings = Settings::from_manifest(&text)?;
                if let Ok(raw) = std::fs::read_to_string(state) {
                    let st: State = serde_json::from_str(&raw)
                        .map_err(|e| StoreError::Io(format!("{}: {e}", state.display())))?;
                    // A state file written for another cluster's manifest does not apply.
                    if st.cluster == settings.cluster {
                        if st.credential.is_some() {
                            settings.credential = st.credential;
                        }
                        if st.key.is_some() {
                            settings.agent_key = st.key;
                        }
                    }
                }
                Ok(settings)
            }
        }
    }

    /// Keep the credential Warden issued at registration.
    pub async fn save_credential(&self, cluster: &str, credential: &str) -> Result<(), StoreError> {
        self.save(cluster, secret_keys::CREDENTIAL, credential)
            .await
    }

    /// Keep the agent's private key (the seed of its Ed25519 key pair).
    pub async fn save_key(&self, cluster: &str, seed: &str) -> Result<(), StoreError> {
        self.save(cluster, secret_keys::AGENT_KEY, seed).await
    }

    async fn save(&self, cluster: &str, key: &'static str, value: &str) -> Result<(), StoreError> {
        match self {
            Store::Secret {
                kube,
                namespace,
                name,
            } => {
                let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
                let patch = serde_json::json!({"stringData": BTreeMap::from([(key, value)])});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(())
            }
            Store::File { state, .. } => {
                // Keep what else the state holds for this cluster.
                let mut st: State = std::fs::read_to_string(state)
                    .ok()
                    .and_then(|raw| serde_json::from_str(&raw).ok())
                    .filter(|st: &State| st.cluster == cluster)
                    .unwrap_or_default();
                st.cluster = cluster.to_owned();
                if key == secret_keys::AGENT_KEY {
                    st.key = Some(value.to_owned());
                } else {
                    st.credential = Some(value.to_owned());
                }
                let text = serde_json::to_string_pretty(&st).unwrap_or_default();
                let tmp = state.with_extension("tmp");
                write_private(&tmp, text.as_bytes())
                    .map_err(|e| StoreError::Io(format!("{}: {e}", tmp.display())))?;
                std::fs::rename(&tmp, state)
                    .map_err(|e| StoreError::Io(format!("{}: {e}", state.display())))?;
                Ok(())
            }
        }
    }

    /// Where the state lives, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Secret {
                namespace, name, ..
            } => format!("Secret {namespace}/{name}"),
            Store::File { state, .. } => state.display().to_string(),
        }
    }
}

/// Write a file readable only by its owner.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
