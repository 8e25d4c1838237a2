//! The simulator's shared state: the object database, the CA, the token signer, static
//! tokens, the container runtime and the options it was started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
pub use crate::exec::confine::Confinement;
use crate::exec::runtime::Runtime;
use crate::rbac::UserInfo;
use crate::store::db::{Db, Key};
use crate::tls::Ca;
use crate::tokens::TokenSigner;

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Persist the store (and the CA and keys) to this file and load it at start.
    pub state_file: Option<PathBuf>,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Where pod scratch directories go (default: a fresh temporary directory).
    pub work_dir: Option<PathBuf>,
    /// UID of the `kube-system` namespace (default: random per simulator).
    pub kube_system_uid: Option<String>,
    /// Confine pod processes (container commands and exec): see `exec::confine`. `None`
    /// (default): they run unconfined as this process's user, with a cleared environment.
    pub confine: Option<Confinement>,
    /// Run the Deployment controller (pods from templates, replaced, scaled, collected): see
    /// `controllers`. Off by default, so tests see exactly the objects they create.
    pub controllers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_file: None,
            bookmark_interval: Duration::from_secs(5),
            work_dir: None,
            kube_system_uid: None,
            confine: None,
            controllers: false,
        }
    }
}

#[derive(Default)]
struct Counters {
    pod_ip: u32,
    service_ip: u32,
    node_port: u32,
    node_rr: usize,
}

pub struct Core {
    pub db: Db,
    pub ca: Ca,
    pub signer: TokenSigner,
    pub admin_token: String,
    pub static_tokens: RwLock<HashMap<String, UserInfo>>,
    pub runtime: Arc<Runtime>,
    pub opts: Options,
    pub url: OnceLock<String>,
    counters: Mutex<Counters>,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The audit log, as a real API server's log backend would write it (the newest
    /// [`AUDIT_KEEP`] requests).
    audit: Mutex<std::collections::VecDeque<AuditRecord>>,
}

/// How many audit records the simulator keeps.
pub const AUDIT_KEEP: usize = 10_000;

/// One request in the simulator's audit log (the fields of `audit.k8s.io/v1` `Event` that
/// joining with another log needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// `auditID`: the request's `Audit-ID` header when it sent one, else a new UUID.
    pub audit_id: String,
    /// `user.username`; empty when the request did not authenticate.
    pub username: String,
    pub verb: String,
    pub request_uri: String,
    /// `responseStatus.code`.
    pub code: u16,
}

/// What `--state` files hold.
#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    resource_version: u64,
    ca_cert: String,
    ca_key: String,
    token_key: String,
    admin_token: String,
    objects: Vec<StoredObject>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredObject {
    resource: String,
    namespace: String,
    name: String,
    object: Value,
}

pub const NODES: &[(&str, &str)] = &[
    ("kubesim-control-plane", "172.18.0.2"),
    ("kubesim-worker", "172.18.0.3"),
    ("kubesim-worker2", "172.18.0.4"),
];

impl Core {
    /// Append to the audit log, forgetting the oldest past [`AUDIT_KEEP`].
    pub fn record_audit(&self, r: AuditRecord) {
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= AUDIT_KEEP {
            log.pop_front();
        }
        log.push_back(r);
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Vec<AuditRecord> {
        let log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect()
    }
}

impl Core {
    pub fn new(opts: Options) -> Result<Arc<Core>> {
        let loaded = match &opts.state_file {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)?;
                let st: StateFile = serde_json::from_str(&text)
                    .map_err(|e| Error::State(format!("{}: {e}", p.display())))?;
                Some(st)
            }
            _ => None,
        };
        let (ca, signer, admin_token) = match &loaded {
            Some(st) => {
                use base64::Engine;
                let key = base64::engine::general_purpose::STANDARD
                    .decode(&st.token_key)
                    .map_err(|e| Error::State(format!("token key: {e}")))?;
                (
                    Ca::from_pem(&st.ca_cert, &st.ca_key)?,
                    TokenSigner::from_pkcs8(&key)?,
                    st.admin_token.clone(),
                )
            }
            None => (
                Ca::generate()?,
                TokenSigner::generate()?,
                crate::defaults::random_hex(48),
            ),
        };
        let root = match &opts.work_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("kubesim-{}", uuid::Uuid::new_v4())),
        };
        std::fs::create_dir_all(&root)?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let core = Arc::new(Core {
            db: Db::new(1000),
            ca,
            signer,
            admin_token,
            static_tokens: RwLock::new(HashMap::new()),
            runtime: Arc::new(Runtime::new(root, opts.confine.clone())),
            opts,
            url: OnceLock::new(),
            counters: Mutex::new(Counters::default()),
            shutdown,
            audit: Mutex::new(std::collections::VecDeque::new()),
        });
        match loaded {
            Some(st) => {
                let objs = st
                    .objects
                    .into_iter()
                    .map(|o| (Key::new(&o.resource, &o.namespace, &o.name), o.object))
                    .collect();
                core.db.load(st.resource_version, objs);
            }
            None => crate::seed::seed(&core)?,
        }
        Ok(core)
    }

    /// Allocate an address or pick a node (`node`, `node-ip:NAME`, `pod-ip`, `service-ip`,
    /// `node-port`).
    pub fn alloc(&self, what: &str) -> String {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        match what {
            "node" => {
                // Workloads go to the workers, round robin.
                c.node_rr += 1;
                NODES[1 + (c.node_rr % (NODES.len() - 1))].0.to_string()
            }
            "pod-ip" => {
                c.pod_ip += 1;
                let n = c.pod_ip;
                format!("10.244.{}.{}", (n / 250) % 250, 2 + n % 250)
            }
            "service-ip" => {
                c.service_ip += 1;
                let n = c.service_ip + 10;
                format!("10.96.{}.{}", (n / 250) % 250, 1 + n % 250)
            }
            "node-port" => {
                c.node_port += 1;
                (30000 + (c.node_port % 2767)).to_string()
            }
            other => {
                let name = other.strip_prefix("node-ip:").unwrap_or("");
                NODES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, ip)| ip.to_string())
                    .unwrap_or_else(|| "172.18.0.3".to_string())
            }
        }
    }

    pub fn kube_system_uid(&self) -> String {
        self.db
            .get(&Key::new("namespaces", "", "kube-system"))
            .and_then(|ns| {
                ns.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    /// Write the state file (atomic rename).
    pub fn save_state(&self) -> Result<()> {
        let Some(path) = &self.opts.state_file else {
            return Ok(());
        };
        use base64::Engine;
        let objects = self
            .db
            .all()
            .into_iter()
            .map(|(k, v)| StoredObject {
                resource: k.res,
                namespace: k.ns,
                name: k.name,
                object: v,
            })
            .collect();
        let st = StateFile {
            resource_version: self.db.resource_version(),
            ca_cert: self.ca.cert_pem().to_string(),
            ca_key: self.ca.key_pem().to_string(),
            token_key: base64::engine::general_purpose::STANDARD.encode(self.signer.pkcs8()),
            admin_token: self.admin_token.clone(),
            objects,
        };
        let text = serde_json::to_string_pretty(&st).map_err(|e| Error::State(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The version document (`/version`).
    pub fn version() -> Value {
        json!({
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0",
            "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
            "gitTreeState": "clean",
            "buildDate": "2024-12-11T17:57:11Z",
            "goVersion": "go1.23.3",
            "compiler": "gc",
            "platform": "linux/amd64"
        })
    }
}
