//! Warden's one typed configuration: an optional TOML file named by `WARDEN_CONFIG`, then
//! `WARDEN_*` environment variables, then `WARDEN_*_FILE` files for secrets. Loaded once at
//! start-up and handed down; nothing else reads the environment.
//!
//! File keys are the variable names without the `WARDEN_` prefix, in lower case
//! (`database_url = "postgres://..."`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use warden_domain::secrets::Secret;
use warden_domain::types::Email;

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub gateway: GatewayConfig,
    pub bootstrap: BootstrapConfig,
    /// `WARDEN_MASTER_KEY` (or `_FILE`). Once `startup::prepare` (or `startup::data_key`) has
    /// opened the database's data key with it, it holds that data key: everything derived from
    /// "the master key" (sealing, audit signatures, the replicas' channel) derives from the
    /// data key, which a rotation of the master key leaves unchanged.
    pub master_key: Option<Secret>,
    /// `WARDEN_NEW_MASTER_KEY` (or `_FILE`): the key `warden keys rotate` seals the data key
    /// with. Read by that command only.
    pub new_master_key: Option<Secret>,
    /// The key that seals secrets kept in the database: the data key, opened with the master
    /// key or the one generated into the data directory without it (set by
    /// `startup::prepare`; see `startup::MASTER_KEY_FILE`).
    pub at_rest_key: Option<Secret>,
    pub log: LogConfig,
    pub demo: bool,
    /// Where the compiled console (cargo-leptos `site-root`) lives.
    pub site_root: PathBuf,
    /// Where the `wardenctl` builds served to signed-in users are (`WARDEN_CLI_DIR`; by
    /// default the directory of the running `warden`; empty: serve none).
    pub cli_dir: Option<PathBuf>,
    pub agent: AgentConfig,
    pub rate_limits: crate::ratelimit::RateLimitConfig,
    /// Addresses of Warden's own networks (loopback, private) that the just-in-time webhook
    /// may be posted to (`WARDEN_WEBHOOK_ALLOWED_NETWORKS`, addresses or ranges; default
    /// none: public addresses only).
    pub webhook_allowed_networks: Vec<ipnet::IpNet>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>` (`WARDEN_METRICS_TOKEN`
    /// or `WARDEN_METRICS_TOKEN_FILE`).
    pub metrics_token: Option<Secret>,
    pub terminal: TerminalConfig,
    /// The SIEM stream (`WARDEN_SIEM_*`).
    pub siem: crate::siem::SiemConfig,
    pub audit: AuditConfig,
    /// How long a provider's word about one of its users (that they exist, their groups) holds
    /// for credentials used without a console session, API keys and kubeconfigs
    /// (`WARDEN_SSO_REVALIDATE_HOURS`, default 168): past it, a sign-in through the provider
    /// is due.
    pub sso_revalidate: std::time::Duration,
    /// Several replicas on one PostgreSQL (`WARDEN_REPLICA_*`; unused on SQLite).
    pub replicas: crate::replicas::ReplicaConfig,
}

/// The audit log's journal and readers.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// A live tail reads new events when they are committed; it also reads this often in any
    /// case, a safety net (`WARDEN_AUDIT_TAIL_REREAD_MS`, default 5 s).
    pub tail_reread: std::time::Duration,
    /// What a gateway answer waits for in the audit journal (`WARDEN_AUDIT_JOURNAL_SYNC`).
    pub journal_sync: warden_domain::audit::journal::JournalSync,
    /// The shortest audit retention the organization may set, days
    /// (`WARDEN_AUDIT_RETENTION_MIN_DAYS`, default 30): an administrator cannot erase more
    /// recent history from the console, and the retention job never deletes younger events.
    pub retention_min_days: i32,
}

/// The web terminal.
#[derive(Debug, Clone)]
pub struct TerminalConfig {
    /// `WARDEN_KUBECTL`: the kubectl the kubectl shell runs; by default the one found on
    /// Warden's `PATH` when a shell opens.
    pub kubectl: Option<PathBuf>,
    /// `WARDEN_TERMINAL_RECORDING_MAX_MB`: a terminal whose recording reaches this size ends
    /// (a terminal that cannot be recorded does not run), so no one fills the database with
    /// output. Default 64 MiB; `0` is refused.
    pub recording_max_bytes: u64,
}

/// Cluster agents: their heartbeat, and what goes into their manifests.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How often agents send a heartbeat (`WARDEN_AGENT_HEARTBEAT_MS`, default 10 s).
    pub heartbeat_interval: std::time::Duration,
    /// A cluster without a heartbeat for this long is `disconnected`
    /// (`WARDEN_AGENT_TIMEOUT_MS`, default 30 s).
    pub heartbeat_timeout: std::time::Duration,
    /// The agent image written into manifests (`WARDEN_AGENT_IMAGE`).
    pub image: String,
    /// PEM of the CA that signs `WARDEN_PUBLIC_URL`'s certificate, written into manifests so
    /// agents can verify Warden (`WARDEN_PUBLIC_CA_FILE`, a path).
    pub public_ca_pem: Option<String>,
    /// Let agents dial a plain `http://` `WARDEN_PUBLIC_URL` on another host
    /// (`WARDEN_AGENT_ALLOW_INSECURE_HTTP`, default false: their secrets would cross the network
    /// in the clear). Loopback development servers need no opt-in.
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    /// PostgreSQL's `work_mem` on Warden's connections (`WARDEN_DATABASE_WORK_MEM`, default
    /// [`DEFAULT_WORK_MEM`]; `default`: the database server's own setting). See
    /// [`crate::startup::postgres_session`].
    pub work_mem: Option<WorkMem>,
}

/// The default of `WARDEN_DATABASE_WORK_MEM`.
pub const DEFAULT_WORK_MEM: &str = "64MB";

/// The shortest `WARDEN_MASTER_KEY` accepted (32 random bytes in base64 are 44 characters).
pub const MIN_MASTER_KEY_CHARS: usize = 16;

/// A master key setting (`key` or `key_FILE`). Every secret at rest, the replicas' channel and
/// the audit seals hang on it, and one sealed value tests a guess offline: a word is no key.
fn master_key(l: &Layered<'_>, key: &str) -> Result<Option<Secret>, ConfigError> {
    match l.raw(key)? {
        Some(k) if k.trim().chars().count() < MIN_MASTER_KEY_CHARS => Err(ConfigError::Invalid {
            key: key.into(),
            message: format!(
                "is too short to be a key (at least {MIN_MASTER_KEY_CHARS} characters): use 32 random bytes in base64, e.g. `head -c 32 /dev/urandom | base64`"
            ),
        }),
        k => Ok(k.map(Secret::new)),
    }
}

/// A PostgreSQL memory size as `work_mem` takes it: a whole number of `kB`, `MB` or `GB`
/// (PostgreSQL's own units, case as it spells them), from 64 kB (its minimum) to 2 GB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkMem(String);

impl WorkMem {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The setting as written (`WARDEN_DATABASE_WORK_MEM`): a size, or `default` for the
    /// database server's own (`None`). The error says what is accepted.
    pub fn setting(value: &str) -> Result<Option<WorkMem>, String> {
        match value.trim() {
            "default" => Ok(None),
            v => v.parse().map(Some).map_err(|()| {
                format!(
                    "{v:?} is not a size like 64MB (kB, MB or GB, 64kB to 2GB), \
                     nor `default` (the database server's own setting)"
                )
            }),
        }
    }
}

impl std::str::FromStr for WorkMem {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (n, unit) = s.split_at(digits);
        let n: u64 = n.parse().map_err(|_| ())?;
        let kb = match unit {
            "kB" => n,
            "MB" => n.saturating_mul(1024),
            "GB" => n.saturating_mul(1024 * 1024),
            _ => return Err(()),
        };
        if !(64..=2 * 1024 * 1024).contains(&kb) {
            return Err(());
        }
        Ok(WorkMem(format!("{n}{unit}")))
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub public_url: String,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a client may take to send a request's head (`WARDEN_HTTP_HEADER_TIMEOUT_MS`).
    pub header_timeout: std::time::Duration,
}

impl HttpConfig {
    /// `scheme://host[:port]` of the public URL: what `Origin` must equal.
    pub fn public_origin(&self) -> String {
        origin_of(&self.public_url)
    }
    pub fn tls(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or_default();
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub addr: SocketAddr,
    pub public_url: String,
    /// An operator-provided serving certificate (`WARDEN_GATEWAY_TLS_CERT_FILE`,
    /// `WARDEN_GATEWAY_TLS_KEY_FILE`, `WARDEN_GATEWAY_TLS_CA_FILE`); `None`: the gateway CA's.
    pub tls: Option<crate::gateway::serving::ProvidedTls>,
    /// Connections the gateway holds at once (`WARDEN_GATEWAY_MAX_CONNECTIONS`, default
    /// 16384) and from one source address, an IPv6 /64 counted as one
    /// (`WARDEN_GATEWAY_MAX_CONNECTIONS_PER_SOURCE`, default 1024: an office behind one NAT
    /// runs many kubectl at once). Past either, a new connection is closed at once, before
    /// its TLS handshake.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// Long-lived streams (watches, followed logs, exec/attach/port-forward) one person may
    /// hold through the gateway at once (`WARDEN_GATEWAY_MAX_STREAMS_PER_USER`, default 256),
    /// and all people on one cluster (`WARDEN_GATEWAY_MAX_STREAMS_PER_CLUSTER`, default 3072:
    /// below the agent tunnel's 4096 streams, so Warden's own calls to the cluster and short
    /// requests always find one). Past either, 429.
    pub max_streams_per_user: usize,
    pub max_streams_per_cluster: usize,
}

#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub admin_email: Email,
    pub admin_password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// Where configuration values come from, so tests can supply their own.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;
impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Source for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
}

struct Layered<'a> {
    env: &'a dyn Source,
    file: BTreeMap<String, String>,
}

impl Layered<'_> {
    fn raw(&self, key: &str) -> Result<Option<String>, ConfigError> {
        if let Some(v) = self.env.get(key) {
            return Ok(Some(v));
        }
        let file_key = format!("{key}_FILE");
        if let Some(path) = self
            .env
            .get(&file_key)
            .or_else(|| self.file.get(&short(&file_key)).cloned())
        {
            let v = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                key: file_key.clone(),
                message: format!("cannot read {path}: {e}"),
            })?;
            return Ok(Some(v.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(self.file.get(&short(key)).cloned())
    }

    fn string(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.raw(key)?.unwrap_or_else(|| default.to_owned()))
    }

    fn parse<T: std::str::FromStr>(
        &self,
        key: &str,
        default: &str,
        what: &str,
    ) -> Result<T, ConfigError> {
        let v = self.string(key, default)?;
        v.trim().parse().map_err(|_| ConfigError::Invalid {
            key: key.into(),
            message: format!("{v:?} is not {what}"),
        })
    }

    /// A number within `range` (`what` names its unit).
    fn parse_in<T>(
        &self,
        key: &str,
        default: &str,
        range: std::ops::RangeInclusive<T>,
        what: &str,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let what = format!("{what}, {} to {}", range.start(), range.end());
        let n: T = self.parse(key, default, &what)?;
        if !range.contains(&n) {
            return Err(ConfigError::Invalid {
                key: key.into(),
                message: format!("{n} is not {what}"),
            });
        }
        Ok(n)
    }
}

/// `WARDEN_GATEWAY_TLS_CERT_FILE` and `_KEY_FILE` (both or neither), `_CA_FILE` optional. The
/// provided certificate is chosen by the name a client asks for (SNI), so the gateway's public
/// URL must use a DNS name.
fn gateway_tls(
    l: &Layered<'_>,
    gateway_url: &str,
) -> Result<Option<crate::gateway::serving::ProvidedTls>, ConfigError> {
    let path = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(l.raw(key)?
            .filter(|p| !p.trim().is_empty())
            .map(|p| PathBuf::from(p.trim())))
    };
    let cert = path("WARDEN_GATEWAY_TLS_CERT_FILE")?;
    let key = path("WARDEN_GATEWAY_TLS_KEY_FILE")?;
    let ca = path("WARDEN_GATEWAY_TLS_CA_FILE")?;
    let (cert_file, key_file) = match (cert, key) {
        (None, None) => {
            if ca.is_some() {
                return Err(ConfigError::Invalid {
                    key: "WARDEN_GATEWAY_TLS_CA_FILE".into(),
                    message: "needs WARDEN_GATEWAY_TLS_CERT_FILE and WARDEN_GATEWAY_TLS_KEY_FILE"
                        .into(),
                });
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) | (None, Some(_)) => return Err(ConfigError::Invalid {
            key: "WARDEN_GATEWAY_TLS_CERT_FILE".into(),
            message:
                "set both WARDEN_GATEWAY_TLS_CERT_FILE and WARDEN_GATEWAY_TLS_KEY_FILE, or neither"
                    .into(),
        }),
    };
    let host = gateway_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .unwrap_or_default();
    if host.parse::<std::net::IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost") {
        return Err(ConfigError::Invalid {
            key: "WARDEN_GATEWAY_PUBLIC_URL".into(),
            message: format!(
                "{host:?}: with a provided TLS certificate the gateway's public URL must use a DNS name (the certificate is chosen by the name kubectl asks for)"
            ),
        });
    }
    Ok(Some(crate::gateway::serving::ProvidedTls {
        cert_file,
        key_file,
        ca_file: ca,
    }))
}

fn short(key: &str) -> String {
    key.trim_start_matches("WARDEN_").to_ascii_lowercase()
}

fn url(key: &str, v: String) -> Result<String, ConfigError> {
    if v.starts_with("http://") || v.starts_with("https://") {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            message: format!("{v:?} must start with http:// or https://"),
        })
    }
}

impl Config {
    /// Load from the process environment (and the file it names).
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_source(&Env)
    }

    pub fn from_source(env: &dyn Source) -> Result<Self, ConfigError> {
        let mut file = BTreeMap::new();
        if let Some(path) = env.get("WARDEN_CONFIG") {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                source: e,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Toml {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            for (k, v) in table {
                let s = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                file.insert(k.to_ascii_lowercase(), s);
            }
        }
        let l = Layered { env, file };
        let admin_email_raw = l.string("WARDEN_ADMIN_EMAIL", "admin@warden.local")?;
        let admin_email = Email::parse(&admin_email_raw).map_err(|e| ConfigError::Invalid {
            key: "WARDEN_ADMIN_EMAIL".into(),
            message: e.0,
        })?;
        let admin_password = l
            .raw("WARDEN_ADMIN_PASSWORD")?
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        if let Some(p) = &admin_password {
            warden_domain::types::check_password_policy(p.expose(), admin_email.as_str()).map_err(
                |e| ConfigError::Invalid {
                    key: "WARDEN_ADMIN_PASSWORD".into(),
                    message: e.0,
                },
            )?;
        }
        let format = match l.string("WARDEN_LOG_FORMAT", "pretty")?.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    key: "WARDEN_LOG_FORMAT".into(),
                    message: format!("{other:?} is not pretty or json"),
                })
            }
        };
        let flag = |key: &str| -> Result<bool, ConfigError> {
            match l.string(key, "false")?.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                other => Err(ConfigError::Invalid {
                    key: key.into(),
                    message: format!("{other:?} is not true or false"),
                }),
            }
        };
        let demo = flag("WARDEN_DEMO")?;
        let allow_insecure_http = flag("WARDEN_AGENT_ALLOW_INSECURE_HTTP")?;
        let heartbeat_ms: u64 = l.parse(
            "WARDEN_AGENT_HEARTBEAT_MS",
            "10000",
            "a number of milliseconds",
        )?;
        let timeout_ms: u64 = l.parse(
            "WARDEN_AGENT_TIMEOUT_MS",
            "30000",
            "a number of milliseconds",
        )?;
        if heartbeat_ms < 100 || timeout_ms <= heartbeat_ms {
            return Err(ConfigError::Invalid {
                key: "WARDEN_AGENT_TIMEOUT_MS".into(),
                message: "the heartbeat must be at least 100 ms and the timeout longer than the heartbeat".into(),
            });
        }
        let public_ca_pem = match l
            .raw("WARDEN_PUBLIC_CA_FILE")?
            .filter(|p| !p.trim().is_empty())
        {
            Some(path) => {
                let pem =
                    std::fs::read_to_string(path.trim()).map_err(|e| ConfigError::Invalid {
                        key: "WARDEN_PUBLIC_CA_FILE".into(),
                        message: format!("cannot read {path}: {e}"),
                    })?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::Invalid {
                        key: "WARDEN_PUBLIC_CA_FILE".into(),
                        message: format!("{path} holds no PEM certificate"),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        let agent = AgentConfig {
            heartbeat_interval: std::time::Duration::from_millis(heartbeat_ms),
            heartbeat_timeout: std::time::Duration::from_millis(timeout_ms),
            image: l.string(
                "WARDEN_AGENT_IMAGE",
                &format!(
                    "ghcr.io/warden-dev/warden-agent:{}",
                    env!("CARGO_PKG_VERSION")
                ),
            )?,
            public_ca_pem,
            allow_insecure_http,
        };
        let networks = |key: &str| -> Result<Vec<ipnet::IpNet>, ConfigError> {
            l.string(key, "")?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map(|n| n.trunc())
                        .map_err(|_| ConfigError::Invalid {
                            key: key.into(),
                            message: format!(
                                "{s:?} is not an IP address or range (e.g. 10.0.0.5 or 10.42.0.0/16)"
                            ),
                        })
                })
                .collect()
        };
        let trusted_proxies = networks("WARDEN_TRUSTED_PROXIES")?;
        let webhook_allowed_networks = networks("WARDEN_WEBHOOK_ALLOWED_NETWORKS")?;
        let rate_limits = crate::ratelimit::RateLimitConfig {
            sign_in_per_minute: l.parse(
                "WARDEN_RATE_LIMIT_SIGN_IN",
                "30",
                "a number of requests per minute (0: no limit)",
            )?,
            agent_per_minute: l.parse(
                "WARDEN_RATE_LIMIT_AGENT",
                "120",
                "a number of requests per minute (0: no limit)",
            )?,
            trusted_proxies,
        };
        let metrics_token = l
            .raw("WARDEN_METRICS_TOKEN")?
            .filter(|t| !t.trim().is_empty())
            .map(|t| Secret::new(t.trim().to_owned()));
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(ConfigError::Invalid {
                key: "WARDEN_METRICS_TOKEN".into(),
                message: "must be at least 16 characters".into(),
            });
        }
        let siem = {
            let d = crate::siem::SiemConfig::default();
            let sink = match l.raw("WARDEN_SIEM_SINK")?.filter(|v| !v.trim().is_empty()) {
                Some(v) => Some(crate::siem::SinkSpec::parse(&v).map_err(|message| {
                    ConfigError::Invalid {
                        key: "WARDEN_SIEM_SINK".into(),
                        message,
                    }
                })?),
                None => None,
            };
            let batch: u64 =
                l.parse_in("WARDEN_SIEM_BATCH", "500", 1..=10_000, "a number of events")?;
            let poll_ms: u64 =
                l.parse("WARDEN_SIEM_POLL_MS", "1000", "a number of milliseconds")?;
            crate::siem::SiemConfig {
                sink,
                file_max_bytes: l.parse(
                    "WARDEN_SIEM_FILE_MAX_BYTES",
                    &d.file_max_bytes.to_string(),
                    "a number of bytes",
                )?,
                file_keep: l.parse(
                    "WARDEN_SIEM_FILE_KEEP",
                    &d.file_keep.to_string(),
                    "a number of files",
                )?,
                webhook_token: l
                    .raw("WARDEN_SIEM_WEBHOOK_TOKEN")?
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| Secret::new(t.trim().to_owned())),
                batch,
                poll: std::time::Duration::from_millis(poll_ms.max(10)),
            }
        };
        let gateway_url = url(
            "WARDEN_GATEWAY_PUBLIC_URL",
            l.string("WARDEN_GATEWAY_PUBLIC_URL", "https://127.0.0.1:8443")?,
        )?;
        let sync_text = l.string("WARDEN_AUDIT_JOURNAL_SYNC", "write")?;
        let audit_journal_sync = warden_domain::audit::journal::JournalSync::parse(&sync_text)
            .ok_or_else(|| ConfigError::Invalid {
                key: "WARDEN_AUDIT_JOURNAL_SYNC".into(),
                message: format!(
                    "{sync_text:?} is not fsync, write or write:<milliseconds between background fsyncs, 1 to 10000>"
                ),
            })?;
        let tail_reread_ms: u64 = l.parse(
            "WARDEN_AUDIT_TAIL_REREAD_MS",
            "5000",
            "a number of milliseconds",
        )?;
        let replicas = {
            let ms = |key: &str, default: &str| -> Result<std::time::Duration, ConfigError> {
                let v: u64 = l.parse(key, default, "a number of milliseconds")?;
                if v < 50 {
                    return Err(ConfigError::Invalid {
                        key: key.into(),
                        message: "must be at least 50 ms".into(),
                    });
                }
                Ok(std::time::Duration::from_millis(v))
            };
            let heartbeat = ms("WARDEN_REPLICA_HEARTBEAT_MS", "5000")?;
            let timeout = ms("WARDEN_REPLICA_TIMEOUT_MS", "15000")?;
            if timeout <= heartbeat {
                return Err(ConfigError::Invalid {
                    key: "WARDEN_REPLICA_TIMEOUT_MS".into(),
                    message: "must be longer than WARDEN_REPLICA_HEARTBEAT_MS".into(),
                });
            }
            let id = l
                .raw("WARDEN_REPLICA_ID")?
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            if let Some(id) = &id {
                if id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(ConfigError::Invalid {
                        key: "WARDEN_REPLICA_ID".into(),
                        message: "at most 64 letters, digits, '-', '_' or '.'".into(),
                    });
                }
            }
            crate::replicas::ReplicaConfig {
                id,
                internal_addr: l
                    .raw("WARDEN_REPLICA_ADDR")?
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty()),
                listen_addr: match l
                    .raw("WARDEN_REPLICA_LISTEN_ADDR")?
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                {
                    Some(v) => Some(v.parse().map_err(|_| ConfigError::Invalid {
                        key: "WARDEN_REPLICA_LISTEN_ADDR".into(),
                        message: format!("{v:?} is not an address such as 0.0.0.0:8444"),
                    })?),
                    None => None,
                },
                heartbeat,
                timeout,
                epoch_recheck: ms("WARDEN_REPLICA_EPOCH_RECHECK_MS", "5000")?,
            }
        };
        let sso_revalidate_hours: u64 = l.parse_in(
            "WARDEN_SSO_REVALIDATE_HOURS",
            "168",
            1..=8760,
            "a number of hours",
        )?;
        let config = Config {
            sso_revalidate: std::time::Duration::from_secs(sso_revalidate_hours * 3600),
            replicas,
            siem,
            audit: AuditConfig {
                tail_reread: std::time::Duration::from_millis(tail_reread_ms.max(100)),
                journal_sync: audit_journal_sync,
                retention_min_days: l.parse_in(
                    "WARDEN_AUDIT_RETENTION_MIN_DAYS",
                    "30",
                    1..=36500,
                    "a number of days",
                )?,
            },
            agent,
            rate_limits,
            webhook_allowed_networks,
            metrics_token,
            terminal: TerminalConfig {
                kubectl: l
                    .raw("WARDEN_KUBECTL")?
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| PathBuf::from(p.trim())),
                recording_max_bytes: l.parse_in::<u64>(
                    "WARDEN_TERMINAL_RECORDING_MAX_MB",
                    "64",
                    1..=4096,
                    "a number of mebibytes",
                )? * 1024
                    * 1024,
            },
            database: DatabaseConfig {
                url: Secret::new(
                    l.string("WARDEN_DATABASE_URL", "sqlite://data/warden.db?mode=rwc")?,
                ),
                work_mem: WorkMem::setting(
                    &l.string("WARDEN_DATABASE_WORK_MEM", DEFAULT_WORK_MEM)?,
                )
                .map_err(|message| ConfigError::Invalid {
                    key: "WARDEN_DATABASE_WORK_MEM".into(),
                    message,
                })?,
            },
            data_dir: PathBuf::from(l.string("WARDEN_DATA_DIR", "./data")?),
            http: HttpConfig {
                addr: l.parse(
                    "WARDEN_HTTP_ADDR",
                    "127.0.0.1:3000",
                    "an address like 127.0.0.1:3000",
                )?,
                public_url: url(
                    "WARDEN_PUBLIC_URL",
                    l.string("WARDEN_PUBLIC_URL", "http://127.0.0.1:3000")?,
                )?,
                body_limit: l.parse("WARDEN_HTTP_BODY_LIMIT", "1048576", "a number of bytes")?,
                header_timeout: std::time::Duration::from_millis(
                    l.parse::<u64>(
                        "WARDEN_HTTP_HEADER_TIMEOUT_MS",
                        "15000",
                        "a number of milliseconds",
                    )?
                    .max(100),
                ),
            },
            gateway: GatewayConfig {
                addr: l.parse(
                    "WARDEN_GATEWAY_ADDR",
                    "127.0.0.1:8443",
                    "an address like 127.0.0.1:8443",
                )?,
                public_url: gateway_url.clone(),
                tls: gateway_tls(&l, &gateway_url)?,
                max_connections: l
                    .parse::<usize>(
                        "WARDEN_GATEWAY_MAX_CONNECTIONS",
                        "16384",
                        "a number of connections",
                    )?
                    .max(1),
                max_connections_per_source: l
                    .parse::<usize>(
                        "WARDEN_GATEWAY_MAX_CONNECTIONS_PER_SOURCE",
                        "1024",
                        "a number of connections",
                    )?
                    .max(1),
                max_streams_per_user: l
                    .parse::<usize>(
                        "WARDEN_GATEWAY_MAX_STREAMS_PER_USER",
                        "256",
                        "a number of streams",
                    )?
                    .max(1),
                max_streams_per_cluster: l
                    .parse::<usize>(
                        "WARDEN_GATEWAY_MAX_STREAMS_PER_CLUSTER",
                        "3072",
                        "a number of streams",
                    )?
                    .max(1),
            },
            bootstrap: BootstrapConfig {
                admin_email,
                admin_password,
            },
            master_key: master_key(&l, "WARDEN_MASTER_KEY")?,
            new_master_key: master_key(&l, "WARDEN_NEW_MASTER_KEY")?,
            at_rest_key: None,
            log: LogConfig { format },
            demo,
            site_root: PathBuf::from(
                l.raw("WARDEN_SITE_ROOT")?
                    .or_else(|| env.get("LEPTOS_SITE_ROOT"))
                    .unwrap_or_else(|| "target/site".to_owned()),
            ),
            cli_dir: match l.raw("WARDEN_CLI_DIR")? {
                Some(dir) if dir.trim().is_empty() => None,
                Some(dir) => Some(PathBuf::from(dir.trim())),
                None => std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(PathBuf::from)),
            },
        };
        // The demo cluster runs pod commands as processes of this host: only for a console
        // that nobody else can reach.
        if config.demo && !is_loopback_url(&config.http.public_url) {
            return Err(ConfigError::Invalid {
                key: "WARDEN_DEMO".into(),
                message: "the demo cluster runs pods as processes of this host, so it is refused with a WARDEN_PUBLIC_URL other than a loopback address (127.0.0.1, ::1, localhost)".into(),
            });
        }
        Ok(config)
    }
}

/// Whether a URL's host is a loopback address.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_provided_gateway_certificate_needs_both_files_and_a_dns_name() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert!(c.gateway.tls.is_none());
        let both = [
            ("WARDEN_GATEWAY_PUBLIC_URL", "https://kube.example.com"),
            ("WARDEN_GATEWAY_TLS_CERT_FILE", "/s/tls.crt"),
            ("WARDEN_GATEWAY_TLS_KEY_FILE", "/s/tls.key"),
        ];
        let tls = Config::from_source(&src(&both))
            .unwrap()
            .gateway
            .tls
            .unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/s/tls.crt"));
        assert_eq!(tls.ca_file, None);
        let err = Config::from_source(&src(&both[..2]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("set both"), "{err}");
        let err = Config::from_source(&src(&[("WARDEN_GATEWAY_TLS_CA_FILE", "/s/ca.crt")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs WARDEN_GATEWAY_TLS_CERT_FILE"), "{err}");
        let mut by_ip = both;
        by_ip[0].1 = "https://10.0.0.7:8443";
        let err = Config::from_source(&src(&by_ip)).unwrap_err().to_string();
        assert!(err.contains("DNS name"), "{err}");
    }

    #[test]
    fn a_word_is_no_master_key() {
        let err = Config::from_source(&src(&[("WARDEN_MASTER_KEY", "changeme")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("too short"), "{err}");
        assert!(
            !err.contains("changeme"),
            "the value is not repeated: {err}"
        );
        let key = "q0CDxXfkBIX5NbC+WTl3KAkPdIszO2pmtMZHpEEXyw8=";
        let c = Config::from_source(&src(&[("WARDEN_MASTER_KEY", key)])).unwrap();
        assert_eq!(c.master_key.unwrap().expose(), key);
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert_eq!(c.database.url.expose(), "sqlite://data/warden.db?mode=rwc");
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.http.public_url, "http://127.0.0.1:3000");
        assert_eq!(c.gateway.addr.to_string(), "127.0.0.1:8443");
        assert_eq!(c.bootstrap.admin_email.as_str(), "admin@warden.local");
        assert!(c.bootstrap.admin_password.is_none());
        assert!(!c.demo);
        assert_eq!(c.log.format, LogFormat::Pretty);
        assert_eq!(c.agent.heartbeat_interval.as_secs(), 10);
        assert_eq!(c.agent.heartbeat_timeout.as_secs(), 30);
    }

    #[test]
    fn the_database_work_mem_is_a_postgres_size_or_the_servers_own() {
        let work_mem = |v: &str| {
            Config::from_source(&src(&[("WARDEN_DATABASE_WORK_MEM", v)]))
                .map(|c| c.database.work_mem.map(|w| w.as_str().to_owned()))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            Config::from_source(&src(&[]))
                .unwrap()
                .database
                .work_mem
                .unwrap()
                .as_str(),
            "64MB"
        );
        assert_eq!(work_mem("default"), Ok(None));
        for (v, want) in [
            ("16MB", "16MB"),
            (" 1GB ", "1GB"),
            ("64kB", "64kB"),
            ("2GB", "2GB"),
        ] {
            assert_eq!(work_mem(v), Ok(Some(want.to_owned())), "{v}");
        }
        // Not PostgreSQL's spelling, no unit, out of its range, or anything a startup option
        // could carry besides a size.
        for v in [
            "",
            "64",
            "64mb",
            "64 MB",
            "-1MB",
            "63kB",
            "3GB",
            "1TB",
            "64MB -c jit=on",
            "MB",
        ] {
            let e = work_mem(v).unwrap_err();
            assert!(e.contains("WARDEN_DATABASE_WORK_MEM"), "{v}: {e}");
        }
    }

    #[test]
    fn wardenctl_builds_come_from_beside_warden_unless_told() {
        let dir = |pairs: &[(&str, &str)]| Config::from_source(&src(pairs)).unwrap().cli_dir;
        let exe_dir = std::env::current_exe().unwrap().parent().map(PathBuf::from);
        assert!(exe_dir.is_some());
        assert_eq!(dir(&[]), exe_dir);
        assert_eq!(
            dir(&[("WARDEN_CLI_DIR", " /opt/warden/cli ")]),
            Some(PathBuf::from("/opt/warden/cli"))
        );
        assert_eq!(dir(&[("WARDEN_CLI_DIR", "")]), None, "empty: serve none");
    }

    #[test]
    fn the_demo_is_refused_with_a_public_url_others_can_reach() {
        for url in [
            "https://warden.example.com",
            "http://10.0.0.5:3000",
            "http://0.0.0.0:3000",
        ] {
            let e =
                Config::from_source(&src(&[("WARDEN_DEMO", "true"), ("WARDEN_PUBLIC_URL", url)]))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("WARDEN_DEMO"), "{url}: {e}");
        }
        for url in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
        ] {
            let c =
                Config::from_source(&src(&[("WARDEN_DEMO", "true"), ("WARDEN_PUBLIC_URL", url)]))
                    .unwrap();
            assert!(c.demo, "{url}");
        }
        // Without the demo, any public URL.
        assert!(
            Config::from_source(&src(&[("WARDEN_PUBLIC_URL", "https://warden.example.com")]))
                .is_ok()
        );
    }

    #[test]
    fn file_then_env_then_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("warden.toml");
        std::fs::write(
            &file,
            "http_addr = \"0.0.0.0:4000\"\ndemo = true\nadmin_email = \"ops@example.com\"\n",
        )
        .unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "a very long password\n").unwrap();
        let c = Config::from_source(&src(&[
            ("WARDEN_CONFIG", file.to_str().unwrap()),
            ("WARDEN_ADMIN_EMAIL", "root@example.com"),
            ("WARDEN_ADMIN_PASSWORD_FILE", pw.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:4000");
        assert!(c.demo);
        assert_eq!(c.bootstrap.admin_email.as_str(), "root@example.com");
        assert_eq!(
            c.bootstrap.admin_password.as_ref().unwrap().expose(),
            "a very long password"
        );
        // Secrets never show in Debug output.
        assert!(!format!("{c:?}").contains("a very long password"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_source(&src(&[("WARDEN_HTTP_ADDR", "nope")])).unwrap_err();
        assert!(e.to_string().contains("WARDEN_HTTP_ADDR"), "{e}");
        let e = Config::from_source(&src(&[("WARDEN_ADMIN_PASSWORD", "short")])).unwrap_err();
        assert!(e.to_string().contains("WARDEN_ADMIN_PASSWORD"), "{e}");
        let e = Config::from_source(&src(&[("WARDEN_PUBLIC_URL", "example.com")])).unwrap_err();
        assert!(e.to_string().contains("WARDEN_PUBLIC_URL"), "{e}");
    }
}
