//! Agent tunnels: the endpoint agents dial (`GET /agent/v1/connect`), the one-time manifest
//! downloads (`GET /agent/v1/manifests/{token}`), the registry of live tunnels
//! ([`ClusterConnections`]), a `kube::Client` over a tunnel ([`client`]), and the sweeper that
//! marks clusters `disconnected` when heartbeats stop.
//!
//! One tunnel per cluster: a WebSocket the agent opened, carrying a yamux session
//! ([`warden_agent::tunnel`]). Warden opens one yamux stream per HTTP/1.1 connection to the
//! cluster's API server; the agent proxies it with its own credentials.

pub mod client;
pub mod endpoint;
pub mod heartbeats;
pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use warden_domain::agent_protocol::ServerMessage;
use warden_domain::clusters::ClusterRuntime;
use warden_domain::ids::ClusterId;
use warden_domain::Services;

pub use client::{TunnelError, TunnelService};

/// One live agent tunnel.
pub struct Tunnel {
    pub cluster_id: ClusterId,
    pub cluster: String,
    /// Distinguishes successive connections of the same cluster.
    pub conn_id: u64,
    pub credential_id: String,
    /// The public key the agent proved it holds (base64url).
    pub agent_key: String,
    pub connected_at: Instant,
    control: tokio_yamux::Control,
    notices: mpsc::Sender<String>,
    last_heartbeat: Mutex<Instant>,
    draining: AtomicBool,
    close: watch::Sender<Option<String>>,
    streams_opened: AtomicU64,
}

impl Tunnel {
    /// Open a new stream to the cluster's API server (through the agent).
    pub async fn open_stream(&self) -> Result<tokio_yamux::StreamHandle, TunnelError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(TunnelError::NotConnected(self.cluster.clone()));
        }
        let mut control = self.control.clone();
        match tokio::time::timeout(Duration::from_secs(10), control.open_stream()).await {
            Ok(Ok(s)) => {
                self.streams_opened.fetch_add(1, Ordering::Relaxed);
                Ok(s)
            }
            Ok(Err(e)) => Err(TunnelError::Closed {
                cluster: self.cluster.clone(),
                message: e.to_string(),
            }),
            Err(_) => Err(TunnelError::Closed {
                cluster: self.cluster.clone(),
                message: "opening a stream timed out".into(),
            }),
        }
    }

    pub fn last_heartbeat(&self) -> Instant {
        self.last_heartbeat
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|p| *p.into_inner())
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_heartbeat.lock() {
            *t = Instant::now();
        }
    }

    /// Streams opened on this tunnel so far.
    pub fn streams_opened(&self) -> u64 {
        self.streams_opened.load(Ordering::Relaxed)
    }

    /// Close the tunnel, telling the agent why first.
    pub fn close(&self, notice: ServerMessage, reason: &str) {
        if let Ok(text) = serde_json::to_string(&notice) {
            let _ = self.notices.try_send(text);
        }
        let _ = self.close.send(Some(reason.to_owned()));
    }
}

/// The cluster feature's timing, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

/// The live tunnels of this Warden process, by cluster id.
pub struct ClusterConnections {
    services: Arc<Services>,
    tunnels: RwLock<HashMap<ClusterId, Arc<Tunnel>>>,
    timing: Timing,
    started: Instant,
    next_conn: AtomicU64,
    me: Weak<ClusterConnections>,
    /// Cluster name -> id of every tunnel seen, for [`Self::client`] (tests, the demo).
    seen: RwLock<HashMap<String, ClusterId>>,
    /// This replica among others on PostgreSQL: told which tunnels it holds.
    replicas: std::sync::OnceLock<Arc<crate::replicas::Replicas>>,
    /// Where the tunnels' heartbeats are stored, in groups.
    heartbeats: heartbeats::Heartbeats,
}

impl ClusterConnections {
    /// Create the registry, hook it into the domain (deletions close tunnels), and start the
    /// sweeper.
    pub fn new(services: Arc<Services>, timing: Timing) -> Arc<Self> {
        let c = Arc::new_cyclic(|me| Self {
            services: services.clone(),
            tunnels: RwLock::new(HashMap::new()),
            timing,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
            me: me.clone(),
            seen: RwLock::new(HashMap::new()),
            replicas: std::sync::OnceLock::new(),
            heartbeats: heartbeats::Heartbeats::start(services.clone(), me.clone()),
        });
        services
            .clusters
            .set_runtime(Arc::new(Runtime(Arc::downgrade(&c))));
        spawn_sweeper(Arc::downgrade(&c));
        spawn_credential_watch(Arc::downgrade(&c), services.policy.subscribe());
        c
    }

    /// Close `t` because its agent credential is no longer valid, telling the agent why as a
    /// revocation would: a deleted cluster asks for the agent's removal, a revoked credential
    /// for a new manifest.
    pub async fn close_revoked(&self, t: &Tunnel) {
        let (code, message) = match warden_domain::clusters::agents::credential_refusal(
            &self.services,
            &t.credential_id,
        )
        .await
        {
            Ok(r) => (r.code.to_owned(), r.message),
            Err(e) => {
                tracing::warn!(error = %e, cluster = %t.cluster, "cannot read why an agent credential is invalid");
                (
                    warden_domain::agent_protocol::refusal::CREDENTIAL_REVOKED.to_owned(),
                    format!("the agent credential of cluster {} was revoked", t.cluster),
                )
            }
        };
        self.close_tunnel(
            t,
            ServerMessage::Revoked { code, message },
            "the agent credential was revoked",
        );
    }

    /// Record the tunnels of this registry in the replicas' shared registry from now on.
    pub fn set_replicas(&self, replicas: Arc<crate::replicas::Replicas>) {
        if let Ok(m) = self.tunnels.read() {
            for id in m.keys() {
                replicas.tunnel_held(*id);
            }
        }
        let _ = self.replicas.set(replicas);
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The heartbeat writer of this process.
    pub fn heartbeats(&self) -> &heartbeats::Heartbeats {
        &self.heartbeats
    }

    /// The live tunnel of a cluster, by name: for tests and diagnostics only. Requests are
    /// routed by cluster id ([`Self::get_by_id`]), never by name.
    pub fn get(&self, cluster: &str) -> Option<Arc<Tunnel>> {
        self.tunnels
            .read()
            .ok()?
            .values()
            .find(|t| t.cluster == cluster)
            .cloned()
    }

    /// A stream to the API server of `cluster_id` (named `cluster` in messages): through this
    /// replica's tunnel, else forwarded to the replica that holds it.
    pub async fn open_stream(
        &self,
        cluster_id: ClusterId,
        cluster: &str,
    ) -> Result<crate::gateway::transport::BoxIo, TunnelError> {
        if let Some(t) = self.get_by_id(cluster_id) {
            return Ok(Box::new(t.open_stream().await?));
        }
        match self.replicas.get() {
            Some(r) => r.open_remote(cluster_id, cluster).await,
            None => Err(TunnelError::NotConnected(cluster.to_owned())),
        }
    }

    /// Whether a stream to `cluster_id` can be opened: a tunnel here, or (at the last
    /// heartbeat) on another live replica.
    pub fn reaches(&self, cluster_id: ClusterId) -> bool {
        self.has_tunnel(cluster_id)
            || self
                .replicas
                .get()
                .is_some_and(|r| r.held_elsewhere(cluster_id))
    }

    /// Whether other replicas may hold tunnels this one does not (several replicas).
    pub fn replicated(&self) -> bool {
        self.replicas.get().is_some()
    }

    pub fn get_by_id(&self, cluster_id: ClusterId) -> Option<Arc<Tunnel>> {
        self.tunnels.read().ok()?.get(&cluster_id).cloned()
    }

    /// Ids of the clusters whose tunnel this process holds.
    pub fn held_ids(&self) -> Vec<ClusterId> {
        self.tunnels
            .read()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Names of the clusters with a live tunnel.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tunnels
            .read()
            .map(|m| m.values().map(|t| t.cluster.clone()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn is_connected(&self, cluster: &str) -> bool {
        self.get(cluster).is_some()
    }

    /// A `kube::Client` for the cluster's API server through its agent (with the agent's
    /// identity: every request carries the management marker). Requests go to the tunnel of
    /// `cluster_id` only and fail at once with a clear error while it is not connected.
    pub fn client_by_id(&self, cluster_id: ClusterId, cluster_name: &str) -> Option<kube::Client> {
        let me = self.me.upgrade()?;
        Some(client::kube_client(
            me,
            cluster_id,
            cluster_name,
            http::HeaderMap::new(),
        ))
    }

    /// [`Self::client_by_id`] for the cluster whose tunnel was last seen under the name `cluster`
    /// (tests, the demo): the name is resolved once, and the client keeps to that cluster's id.
    pub fn client(&self, cluster: &str) -> Option<kube::Client> {
        let id = match self.get(cluster) {
            Some(t) => t.cluster_id,
            None => *self.seen.read().ok()?.get(cluster)?,
        };
        self.client_by_id(id, cluster)
    }

    /// Close every tunnel (Warden is shutting down); agents reconnect to the next process.
    pub fn close_all(&self, reason: &str) {
        let all: Vec<Arc<Tunnel>> = self
            .tunnels
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for t in all {
            self.close_tunnel(
                &t,
                ServerMessage::Closing {
                    reason: reason.to_owned(),
                },
                reason,
            );
        }
    }

    /// Take a tunnel out of service at once (no new request goes to it) and close it.
    pub fn close_tunnel(&self, t: &Tunnel, notice: ServerMessage, reason: &str) {
        self.remove_if_current(t);
        t.close(notice, reason);
    }

    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::SeqCst)
    }

    /// Register a tunnel; a previous one of the same cluster is closed (replaced).
    fn insert(&self, t: Arc<Tunnel>) {
        if let Ok(mut seen) = self.seen.write() {
            seen.insert(t.cluster.clone(), t.cluster_id);
        }
        let old = self.tunnels.write().ok().and_then(|mut m| {
            // Under the lock: a release of this tunnel cannot be recorded before its hold.
            if let Some(r) = self.replicas.get() {
                r.tunnel_held(t.cluster_id);
            }
            m.insert(t.cluster_id, t.clone())
        });
        if let Some(old) = old {
            old.close(
                ServerMessage::Closing {
                    reason: "replaced by a newer connection of this cluster's agent".into(),
                },
                "replaced by a newer connection",
            );
        }
    }

    /// Remove `t` if it is still the cluster's current tunnel. Returns whether it was.
    fn remove_if_current(&self, t: &Tunnel) -> bool {
        match self.tunnels.write() {
            Ok(mut m) => match m.get(&t.cluster_id) {
                Some(cur) if cur.conn_id == t.conn_id => {
                    m.remove(&t.cluster_id);
                    if let Some(r) = self.replicas.get() {
                        r.tunnel_released(t.cluster_id);
                    }
                    true
                }
                _ => false,
            },
            Err(_) => false,
        }
    }

    fn has_tunnel(&self, cluster_id: ClusterId) -> bool {
        self.tunnels
            .read()
            .map(|m| m.contains_key(&cluster_id))
            .unwrap_or(false)
    }

    /// One pass of the sweeper: close tunnels whose heartbeats stopped, and mark clusters that
    /// claim to be connected but have no tunnel here (after a restart) as disconnected.
    pub async fn sweep(&self) {
        let timeout = self.timing.heartbeat_timeout;
        let stale: Vec<Arc<Tunnel>> = self
            .tunnels
            .read()
            .map(|m| {
                m.values()
                    .filter(|t| t.last_heartbeat().elapsed() > timeout)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for t in stale {
            let reason = format!(
                "no heartbeat for {} s",
                timeout.as_secs_f64().round() as u64
            );
            tracing::warn!(cluster = %t.cluster, "{reason}; closing the tunnel");
            self.close_tunnel(
                &t,
                ServerMessage::Closing {
                    reason: reason.clone(),
                },
                &reason,
            );
            if let Err(e) = warden_domain::clusters::agents::set_status(
                &self.services,
                &t.cluster_id.to_string(),
                warden_domain::dto::cluster_status::DISCONNECTED,
                &reason,
            )
            .await
            {
                tracing::warn!(error = %e, "cannot record the cluster's status");
            }
        }
        if self.started.elapsed() > timeout && self.services.jobs.run("cluster_status_sweeper") {
            // A tunnel another live replica holds is connected too.
            let replicas = self.replicas.get();
            let is_live = |id: &str| {
                ClusterId::parse(id).is_some_and(|id| {
                    self.has_tunnel(id) || replicas.is_some_and(|r| r.held_elsewhere(id))
                })
            };
            match warden_domain::clusters::agents::mark_unconnected(
                &self.services,
                &is_live,
                "no agent connection",
            )
            .await
            {
                Ok(names) => {
                    for n in names {
                        tracing::warn!(cluster = %n, "marked disconnected: no agent connection");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the cluster sweeper could not update statuses")
                }
            }
        }
    }
}

/// The domain's view of the registry.
struct Runtime(Weak<ClusterConnections>);

impl ClusterRuntime for Runtime {
    /// Whether the cluster's tunnel is live here or on another live replica (as last read).
    fn is_connected(&self, cluster_id: ClusterId) -> bool {
        self.0.upgrade().is_some_and(|c| c.reaches(cluster_id))
    }

    fn revoke(&self, cluster_id: ClusterId, code: &str, message: &str) {
        if let Some(c) = self.0.upgrade() {
            if let Some(t) = c.get_by_id(cluster_id) {
                c.close_tunnel(
                    &t,
                    ServerMessage::Revoked {
                        code: code.to_owned(),
                        message: message.to_owned(),
                    },
                    "the agent credential was revoked",
                );
            }
        }
    }

    fn reconnect(&self, cluster_id: ClusterId, reason: &str) {
        if let Some(c) = self.0.upgrade() {
            if let Some(t) = c.get_by_id(cluster_id) {
                c.close_tunnel(
                    &t,
                    ServerMessage::Closing {
                        reason: reason.to_owned(),
                    },
                    reason,
                );
            }
        }
    }
}

/// Whenever authorization changes (here, or announced by another replica: a revocation made
/// through any replica moves the shared epoch), the credentials of the tunnels held here are
/// checked in one query and a revoked one's tunnel closes at once, not at its next heartbeat.
fn spawn_credential_watch(
    conns: Weak<ClusterConnections>,
    mut epochs: tokio::sync::watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        while epochs.changed().await.is_ok() {
            let Some(c) = conns.upgrade() else { return };
            let held: Vec<Arc<Tunnel>> = c
                .tunnels
                .read()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            if held.is_empty() {
                continue;
            }
            let ids: Vec<&str> = held.iter().map(|t| t.credential_id.as_str()).collect();
            match warden_domain::clusters::agents::valid_credentials(&c.services, &ids).await {
                Ok(valid) => {
                    for t in held.iter().filter(|t| !valid.contains(&t.credential_id)) {
                        c.close_revoked(t).await;
                    }
                }
                // The next heartbeat checks again.
                Err(e) => tracing::warn!(error = %e, "cannot check the agents' credentials"),
            }
        }
    });
}

fn spawn_sweeper(conns: Weak<ClusterConnections>) {
    tokio::spawn(async move {
        loop {
            let every = match conns.upgrade() {
                Some(c) => (c.timing.heartbeat_interval / 2)
                    .clamp(Duration::from_millis(100), Duration::from_secs(5)),
                None => return,
            };
            tokio::time::sleep(every).await;
            let Some(c) = conns.upgrade() else { return };
            c.sweep().await;
        }
    });
}

/// Create the registry from the configuration, give the domain its settings, and plug the
/// tunnel into the gateway as the way to reach clusters.
pub fn setup(
    services: &Arc<Services>,
    config: &crate::config::Config,
    gateway: &crate::gateway::Gateway,
) -> Arc<ClusterConnections> {
    services
        .clusters
        .set_settings(warden_domain::clusters::ClusterSettings {
            agent_image: config.agent.image.clone(),
            warden_ca_pem: config.agent.public_ca_pem.clone(),
            heartbeat_interval: config.agent.heartbeat_interval,
            heartbeat_timeout: config.agent.heartbeat_timeout,
            allow_insecure_http: config.agent.allow_insecure_http,
            sealer: config
                .at_rest_key
                .as_ref()
                .or(config.master_key.as_ref())
                .map(warden_domain::secrets::Sealer::new),
        });
    let conns = ClusterConnections::new(
        services.clone(),
        Timing {
            heartbeat_interval: config.agent.heartbeat_interval,
            heartbeat_timeout: config.agent.heartbeat_timeout,
        },
    );
    gateway
        .transports()
        .set_tunnel(Arc::new(transport::TunnelTransport::new(conns.clone())));
    conns
}
