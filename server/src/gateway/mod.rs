//! The Kubernetes API gateway: kubectl (or any client-go / kube-rs client) speaks the
//! Kubernetes API to `WARDEN_GATEWAY_ADDR` over TLS, one path per cluster
//! (`/clusters/<name>/...`), authenticated by a short-lived client certificate from a Warden
//! kubeconfig. Every request is checked, narrowed to the user's own service account on the
//! cluster, forwarded through the cluster's transport (the agent tunnel, or a direct
//! connection in tests), streamed back and audited.
//!
//! - [`pki`]: the user CA, the gateway CA and serving certificate, client certificates.
//! - [`discovery`]: which kinds a cluster serves in namespaces.
//! - [`kubeconfig`]: the YAML users download.
//! - [`routes`]: `GET /api/v1/kubeconfig`, revocation and settings endpoints.
//! - [`proxy`]: one request, in the fixed order of checks.
//! - [`rbac`]: per-user service accounts and their RBAC on the clusters.
//! - [`tokens`]: TokenRequest tokens for those service accounts.
//! - [`transport`]: how a cluster is reached ([`transport::ClusterTransport`]).
//! - [`sweeper`]: removal of service accounts that should no longer exist.

pub mod discovery;
pub mod kubeconfig;
pub mod pki;
pub mod proxy;
pub mod rbac;
pub mod relay;
pub mod request;
pub mod routes;
pub mod serving;
pub mod sweeper;
#[cfg(feature = "testing")]
pub mod testkit;
pub mod tokens;
pub mod transport;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_domain::audit::journal::{AuditJournal, JournalUnavailable};
use warden_domain::audit::{AuditEvent, AuditSink, BatchingAuditSink, Linger};
use warden_domain::ids::ClusterId;
use warden_domain::Services;

use crate::config::Config;
use transport::{ClusterRef, Connector, HttpClient, SharedTransport, Transports};

/// How often a service account's last use is written to the database (it is kept in memory
/// in between).
const TOUCH_WRITE_INTERVAL: Duration = Duration::from_secs(60);

pub struct Gateway {
    pub(crate) services: Arc<Services>,
    pki: pki::Pki,
    transports: Arc<Transports>,
    pub(crate) transport: SharedTransport,
    pub(crate) connector: Connector,
    pub(crate) http: HttpClient<proxy::CountedBody>,
    public_url: String,
    audit: Arc<BatchingAuditSink>,
    /// Every event is journaled (and `fsync`ed) before its answer leaves; see
    /// [`warden_domain::audit::journal`].
    journal: Arc<AuditJournal>,
    pub(crate) reconciler: rbac::Reconciler,
    pending: Arc<AtomicUsize>,
    /// (cluster id, user id) -> (last database write, last use in Warden's clock, ms)
    touched: Mutex<HashMap<(ClusterId, String), (Instant, i64)>>,
    /// Every long-lived stream the gateway relays, re-checked when authorization changes.
    pub live: Arc<crate::live::LiveStreams>,
    /// (serial, cluster name) -> what the checks before authorization established.
    admissions: Mutex<HashMap<(String, String), Arc<proxy::Admission>>>,
    /// The credentials of open web terminals' kubectl shells: serial -> terminal id. A
    /// `web_shell` credential not in here is refused (its terminal ended, or Warden restarted).
    web_shells: Mutex<HashMap<String, u64>>,
    /// The loopback-only listener the web terminals' kubectl dials: the only entry where a
    /// `web_shell` credential is accepted, and one that accepts nothing else. A shell's
    /// credential read out of its terminal is thus useless anywhere but on Warden's host.
    shell_entry: Mutex<Option<SocketAddr>>,
    backpressure_refusals: std::sync::atomic::AtomicU64,
    /// Connections held at once, per source network and in all (the public listener).
    connections: Arc<crate::ratelimit::Concurrent>,
    /// Long-lived streams held at once, per person and per cluster (this replica's).
    pub(crate) streams_per_user: Arc<crate::ratelimit::Concurrent>,
    pub(crate) streams_per_cluster: Arc<crate::ratelimit::Concurrent>,
    /// Which kinds each cluster serves in namespaces (its discovery, kept a while).
    pub(crate) scopes: discovery::Scopes,
}

/// Audit events the gateway's queue holds before `record` waits for room.
const AUDIT_QUEUE: usize = 10_000;
/// How long the database writer lets a batch gather company before writing it: 20 ms, and
/// 20 ms more while at least 10 events came in the last 20 (500 a second or more), up to
/// 250 ms or [`AUDIT_MAX_BATCH`] events. Every event is in the journal before its answer
/// leaves, so no request waits for this; what it saves is a transaction (and the same index
/// pages rewritten) per event or two under moderate load, and per few dozen under a heavy one.
/// The audit page and the live tail see an event this much later at most.
const AUDIT_LINGER: Linger = Linger {
    step: Duration::from_millis(20),
    busy: 10,
    max: Duration::from_millis(250),
};
/// The most events the database writer stores in one transaction.
const AUDIT_MAX_BATCH: usize = 1_000;
/// Past this many events not yet stored (queued or waiting for room), new requests are refused.
const AUDIT_BACKLOG_LIMIT: usize = AUDIT_QUEUE + AUDIT_QUEUE / 5;

/// Counts audit events not yet queued (requests in flight, streams still open).
pub(crate) struct PendingAudit(Option<Arc<AtomicUsize>>);

impl Drop for PendingAudit {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The hosts of a URL (for the serving certificate).
fn url_host(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.host().map(str::to_owned)
}

impl Gateway {
    /// `journal`: opened and recovered by start-up before anything is served.
    pub fn new(
        services: Arc<Services>,
        config: &Config,
        journal: Arc<AuditJournal>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut hosts: Vec<String> = url_host(&config.gateway.public_url).into_iter().collect();
        if !config.gateway.addr.ip().is_unspecified() {
            hosts.push(config.gateway.addr.ip().to_string());
        }
        let sealer = config
            .master_key
            .as_ref()
            .map(warden_domain::secrets::Sealer::new);
        let mut pki = pki::Pki::load_or_create(&config.data_dir, &hosts, sealer.as_ref())
            .context("cannot prepare the gateway's certificates (WARDEN_DATA_DIR)")?;
        if let Some(tls) = &config.gateway.tls {
            pki.serve_provided(tls.clone())?;
        }
        let transports = Transports::new();
        let transport: SharedTransport = transports.clone();
        let connector = Connector::new(transport.clone());
        let http = transport::http_client(connector.clone());
        let audit = BatchingAuditSink::spawn_with(
            services.audit.clone(),
            AUDIT_QUEUE,
            AUDIT_MAX_BATCH,
            Some(journal.clone()),
            AUDIT_LINGER,
        );
        let live = crate::live::LiveStreams::new(services.clone());
        live.spawn_watcher();
        services.streams.set_registry(live.clone());
        Ok(Arc::new(Self {
            live,
            services,
            pki,
            transports,
            transport,
            connector,
            http,
            public_url: config.gateway.public_url.clone(),
            audit,
            journal,
            reconciler: rbac::Reconciler::default(),
            pending: Arc::new(AtomicUsize::new(0)),
            touched: Mutex::new(HashMap::new()),
            admissions: Mutex::new(HashMap::new()),
            web_shells: Mutex::new(HashMap::new()),
            shell_entry: Mutex::new(None),
            backpressure_refusals: Default::default(),
            connections: crate::ratelimit::Concurrent::new(
                config.gateway.max_connections_per_source,
                config.gateway.max_connections,
            ),
            streams_per_user: crate::ratelimit::Concurrent::new(
                config.gateway.max_streams_per_user,
                usize::MAX,
            ),
            streams_per_cluster: crate::ratelimit::Concurrent::new(
                config.gateway.max_streams_per_cluster,
                usize::MAX,
            ),
            scopes: discovery::Scopes::default(),
        }))
    }

    pub fn pki(&self) -> &pki::Pki {
        &self.pki
    }

    /// Where clusters are reached: register direct endpoints, plug in the agent tunnel.
    pub fn transports(&self) -> &Arc<Transports> {
        &self.transports
    }

    /// `WARDEN_GATEWAY_PUBLIC_URL`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub(crate) fn pending(&self) -> PendingAudit {
        self.pending.fetch_add(1, Ordering::SeqCst);
        PendingAudit(Some(self.pending.clone()))
    }

    pub(crate) fn pending_noop(&self) -> PendingAudit {
        PendingAudit(None)
    }

    /// Queue an audit event without blocking the request path (never dropped).
    pub(crate) fn record(&self, ev: AuditEvent) {
        self.queue(ev);
    }

    /// [`Self::record`] for Warden's own refusal of a request it never forwarded (nothing of it
    /// journaled): a refusal of a client Warden did not authenticate, or a person's refused
    /// request, is counted and sampled (`RefusalSampler`).
    pub(crate) fn record_refusal(&self, ev: AuditEvent) {
        if warden_domain::audit::RefusalSampler::applies_to(&ev) {
            let now = self.services.clock.now();
            for ev in self.services.refusals.admit(ev, now) {
                self.queue(ev);
            }
            return;
        }
        self.queue(ev);
    }

    fn queue(&self, ev: AuditEvent) {
        self.journal.end(&ev, self.services.clock.now());
        if let Err(ev) = self.audit.try_record(ev) {
            let audit = self.audit.clone();
            let guard = self.pending();
            tokio::spawn(async move {
                let _guard = guard;
                if let Err(e) = audit.record(ev).await {
                    tracing::error!(error = %e, "could not queue a gateway audit event");
                }
            });
        }
    }

    /// Journal the start of an answer, with what is known when its headers go out: if Warden
    /// stops before its end, the request is still in the log.
    pub(crate) fn journal_begin(&self, ev: &AuditEvent) {
        self.journal.begin(ev, self.services.clock.now());
    }

    /// Wait until everything journaled so far is on disk (before an answer goes out).
    pub(crate) async fn journal_durable(&self) -> Result<(), JournalUnavailable> {
        let ticket = self.journal.appended();
        self.journal.wait(ticket).await
    }

    /// The audit journal (its metrics).
    pub fn audit_journal(&self) -> &Arc<AuditJournal> {
        &self.journal
    }

    /// Wait until the events of every finished request are stored (tests, shutdown). Open
    /// streams are waited for up to `max_wait`.
    pub async fn flush_audit_within(&self, max_wait: Duration) {
        let deadline = Instant::now() + max_wait;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.audit.flush().await;
    }

    /// Audit events queued and not yet stored.
    pub fn audit_queue_depth(&self) -> usize {
        self.audit.depth()
    }

    /// What the audit log's database writer did (its transactions, events stored).
    pub fn audit_writer_stats(&self) -> &Arc<warden_domain::audit::WriterStats> {
        self.audit.stats()
    }

    /// Whether the audit queue is past its bound: new requests are refused until it drains
    /// (each refusal counted in `warden_audit_backpressure_refusals_total`).
    pub(crate) fn audit_backlogged(&self) -> bool {
        let over = self.audit.depth() > AUDIT_BACKLOG_LIMIT || self.journal.is_broken();
        if over {
            self.backpressure_refusals.fetch_add(1, Ordering::Relaxed);
        }
        over
    }

    /// Requests refused because the audit queue was past its bound.
    pub fn audit_backpressure_refusals(&self) -> u64 {
        self.backpressure_refusals.load(Ordering::Relaxed)
    }

    pub async fn flush_audit(&self) {
        self.flush_audit_within(Duration::from_secs(10)).await;
    }

    /// An earlier admission of this credential on this cluster, if nothing it depends on
    /// changed since (the authorization epoch moves with every change to users, bindings,
    /// clusters, settings and revocations) and its time-bound checks still pass.
    pub(crate) fn cached_admission(
        &self,
        serial: &str,
        cluster: &str,
        epoch: u64,
        now: warden_domain::clock::Timestamp,
    ) -> Option<Arc<proxy::Admission>> {
        let m = self.admissions.lock().ok()?;
        m.get(&(serial.to_owned(), cluster.to_owned()))
            .filter(|a| a.still_valid(epoch, now))
            .cloned()
    }

    pub(crate) fn cache_admission(&self, serial: &str, cluster: &str, a: Arc<proxy::Admission>) {
        if let Ok(mut m) = self.admissions.lock() {
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert((serial.to_owned(), cluster.to_owned()), a);
        }
    }

    /// A web terminal's shell credential is in use by terminal `terminal_id`.
    pub(crate) fn web_shell_opened(&self, serial: &str, terminal_id: u64) {
        if let Ok(mut m) = self.web_shells.lock() {
            m.insert(serial.to_owned(), terminal_id);
        }
    }

    /// The terminal ended: its credential is refused from now on.
    pub(crate) fn web_shell_ended(&self, serial: &str) {
        if let Ok(mut m) = self.web_shells.lock() {
            m.remove(serial);
        }
    }

    /// The open terminal a web-shell credential belongs to.
    /// Where a web terminal's kubectl dials (the loopback entry), once the gateway serves.
    pub fn shell_entry(&self) -> Option<SocketAddr> {
        *self.shell_entry.lock().ok()?
    }

    pub(crate) fn web_shell_terminal(&self, serial: &str) -> Option<u64> {
        self.web_shells.lock().ok()?.get(serial).copied()
    }

    /// Note a use of the user's service account on the cluster.
    pub(crate) async fn touch(&self, cluster: &ClusterRef, user_id: &str) {
        let now = self.services.clock.now();
        let key = (cluster.id, user_id.to_owned());
        let write = match self.touched.lock() {
            Ok(mut m) => {
                let e = m.entry(key).or_insert((Instant::now(), now.millis()));
                e.1 = now.millis();
                if e.0.elapsed() >= TOUCH_WRITE_INTERVAL {
                    e.0 = Instant::now();
                    true
                } else {
                    false
                }
            }
            Err(_) => true,
        };
        if write {
            if let Err(e) = warden_domain::kubectl::touch_service_account(
                &self.services.db,
                cluster.id,
                user_id,
                now,
            )
            .await
            {
                tracing::warn!(error = %e, "could not note a service account's use");
            }
        }
    }

    /// Note a use that was just written to the database.
    pub(crate) fn mark_touched(&self, cluster: &ClusterRef, user_id: &str) {
        let now = self.services.clock.now().millis();
        if let Ok(mut m) = self.touched.lock() {
            m.insert((cluster.id, user_id.to_owned()), (Instant::now(), now));
        }
    }

    /// The last use noted in memory (ms, Warden's clock).
    pub(crate) fn last_used(&self, cluster_id: ClusterId, user_id: &str) -> Option<i64> {
        self.touched
            .lock()
            .ok()
            .and_then(|m| m.get(&(cluster_id, user_id.to_owned())).map(|e| e.1))
    }
}

/// A running gateway listener.
pub struct GatewayHandle {
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    shell_server: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    pub fn stop(&self) {
        self.server.abort();
        self.shell_server.abort();
        self.sweeper.abort();
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serve the gateway on `listener`, and the web terminals' entry on a loopback port of its
/// own; start the sweeper.
pub fn start(gw: Arc<Gateway>, listener: tokio::net::TcpListener) -> anyhow::Result<GatewayHandle> {
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(gw.pki.server_config());
    // Loopback only, on a port chosen by the system: nothing outside this host reaches it,
    // whatever sits in front of the public gateway port.
    let shell_listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .or_else(|_| std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)))
        .context("cannot listen on loopback for the web terminals' kubectl")?;
    shell_listener.set_nonblocking(true)?;
    let shell_listener = tokio::net::TcpListener::from_std(shell_listener)?;
    if let Ok(mut entry) = gw.shell_entry.lock() {
        *entry = Some(shell_listener.local_addr()?);
    }
    let sweeper = sweeper::spawn(gw.clone());
    let server = tokio::spawn(accept_loop(gw.clone(), listener, acceptor.clone(), false));
    let shell_server = tokio::spawn(accept_loop(gw, shell_listener, acceptor, true));
    Ok(GatewayHandle {
        addr,
        server,
        shell_server,
        sweeper,
    })
}

async fn accept_loop(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shell_entry: bool,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "gateway: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A flood of connections from one network (or from everywhere) is closed before its
        // TLS handshake costs anything; the loopback entry of the web terminals is Warden's.
        let slot = if shell_entry {
            None
        } else {
            let source = warden_domain::identity::login::network_of(peer.ip()).to_string();
            match gw.connections.acquire(&source) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(peer = %peer, "gateway: too many connections; closed");
                    drop(tcp);
                    continue;
                }
            }
        };
        let acceptor = acceptor.clone();
        let gw = gw.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %peer, error = %e, "gateway: TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| pki::peer_identity(c.as_ref()));
            let conn = Arc::new(proxy::ConnInfo {
                peer,
                identity,
                shell_entry,
            });
            let service = hyper::service::service_fn(move |req| {
                let gw = gw.clone();
                let conn = conn.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy::handle(gw, conn, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = %e, "gateway: connection ended with an error");
            }
        });
    }
}
