//! Several Warden replicas on one PostgreSQL database. SQLite stays the single-process default:
//! nothing here runs on it.
//!
//! - **The authorization epoch is shared.** Every local [`AccessPolicy::bump`] moves the
//!   `authz_epoch` row and announces it with `NOTIFY warden_authz_epoch` (payload
//!   `<replica id>:<value>`), in one statement, so the announcement goes out when the move is
//!   committed. Each replica `LISTEN`s on a connection of its own (sqlx `PgListener`, which
//!   reconnects by itself); a notification from another replica moves the local epoch
//!   ([`AccessPolicy::bump_from_elsewhere`]): the policy cache is read again and every live
//!   stream and terminal is re-checked at once. A lost listening connection counts as a missed
//!   notification (the epoch moves), and a periodic re-read of the row is the safety net
//!   (`WARDEN_REPLICA_EPOCH_RECHECK_MS`).
//! - **Replica registry and tunnel ownership.** Each replica keeps a `replicas` row (its id,
//!   the internal address other replicas reach it at, its heartbeat, all in the database's
//!   clock so replicas' clocks need not agree). A cluster's agent connection is recorded in
//!   `cluster_tunnels` (written at connect, cleared at disconnect, in order, by one writer);
//!   a replica whose heartbeat is older than `WARDEN_REPLICA_TIMEOUT_MS` is removed with its
//!   tunnel rows by whichever replica sees it first, and [`Replicas::owner_of`] never names it.
//!
//! [`AccessPolicy::bump`]: warden_domain::access::AccessPolicy::bump
//! [`AccessPolicy::bump_from_elsewhere`]: warden_domain::access::AccessPolicy::bump_from_elsewhere

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

pub mod cas;
pub mod forward;
pub mod lease;
pub mod streams;
pub mod tls;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use tokio::sync::mpsc;
use warden_domain::ids::ClusterId;
use warden_domain::Services;

/// The `LISTEN`/`NOTIFY` channel of the authorization epoch.
pub const EPOCH_CHANNEL: &str = "warden_authz_epoch";

/// The replicas' settings (`WARDEN_REPLICA_*`).
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// `WARDEN_REPLICA_ID`: this replica's name in the registry (default: a random UUID; a
    /// stable name such as the pod name makes the registry easier to read).
    pub id: Option<String>,
    /// `WARDEN_REPLICA_ADDR`: where the other replicas reach this one (`host:port`), for
    /// streams to the clusters whose agent tunnel it holds. Unset: this replica forwards to
    /// others but nothing is forwarded to it.
    pub internal_addr: Option<String>,
    /// `WARDEN_REPLICA_LISTEN_ADDR`: what the internal channel binds (default `0.0.0.0` and
    /// the port of `WARDEN_REPLICA_ADDR`).
    pub listen_addr: Option<std::net::SocketAddr>,
    /// `WARDEN_REPLICA_HEARTBEAT_MS` (default 5 s).
    pub heartbeat: Duration,
    /// `WARDEN_REPLICA_TIMEOUT_MS` (default 15 s): a replica silent this long is gone, and so
    /// are the agent tunnels it held.
    pub timeout: Duration,
    /// `WARDEN_REPLICA_EPOCH_RECHECK_MS` (default 5 s): how often the shared epoch is re-read,
    /// in case a notification was missed.
    pub epoch_recheck: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            id: None,
            internal_addr: None,
            listen_addr: None,
            heartbeat: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            epoch_recheck: Duration::from_secs(5),
        }
    }
}

/// A change of tunnel ownership, written in order by one task.
#[derive(Debug)]
enum Ownership {
    Held(ClusterId),
    Released(ClusterId),
    /// Still held after this replica's rows were taken for a dead replica's (the database was
    /// out of reach past the timeout): claimed again unless another replica claimed it since.
    Reclaimed(ClusterId),
}

/// This replica, in the registry of replicas sharing the database.
pub struct Replicas {
    id: String,
    db: DatabaseConnection,
    config: ReplicaConfig,
    /// The highest shared epoch value this replica has seen.
    seen_epoch: AtomicI64,
    ownership: mpsc::UnboundedSender<Ownership>,
    /// Cluster ids whose tunnel another live replica holds (refreshed with the heartbeat).
    elsewhere: RwLock<HashSet<ClusterId>>,
    /// The internal channel's key (`None` without a master key: nothing is forwarded).
    key: Option<forward::InternalKey>,
    /// Set when this replica left the registry (shutting down): no more heartbeats or claims.
    left: std::sync::atomic::AtomicBool,
    /// Changes to this replica's rows of live streams ([`streams`]), written in order.
    stream_changes: mpsc::UnboundedSender<streams::StreamChange>,
    /// The tunnels this replica holds, claimed again when its registration was lost.
    clusters: Weak<crate::tunnel::ClusterConnections>,
    /// The live streams this replica relays, for *End* requests made on another replica.
    live: std::sync::OnceLock<Weak<crate::live::LiveStreams>>,
}

/// The database's clock, in milliseconds (one clock for every replica).
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";

impl Replicas {
    /// Join the replicas: register, start the heartbeat, the epoch's publisher, listener and
    /// safety net, and the tunnel-ownership writer. `None` on SQLite (one process).
    pub async fn start(
        services: &Arc<Services>,
        config: &ReplicaConfig,
        master_key: Option<&warden_domain::secrets::Secret>,
        clusters: &Arc<crate::tunnel::ClusterConnections>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let db = services.db.clone();
        if db.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(None);
        }
        let id = config
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (ownership, ownership_rx) = mpsc::unbounded_channel();
        let (stream_changes, stream_changes_rx) = mpsc::unbounded_channel();
        let me = Arc::new(Self {
            id,
            db,
            config: config.clone(),
            seen_epoch: AtomicI64::new(0),
            ownership,
            elsewhere: RwLock::new(HashSet::new()),
            key: master_key.map(forward::InternalKey::from_master),
            clusters: Arc::downgrade(clusters),
            left: std::sync::atomic::AtomicBool::new(false),
            stream_changes,
            live: std::sync::OnceLock::new(),
        });
        if let Some(addr) = &me.config.internal_addr {
            let listen = match me.config.listen_addr {
                Some(a) => a,
                None => {
                    let port = addr
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                        .ok_or_else(|| {
                            anyhow::anyhow!("WARDEN_REPLICA_ADDR {addr:?} is not host:port")
                        })?;
                    std::net::SocketAddr::from(([0, 0, 0, 0], port))
                }
            };
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {listen} for the other replicas (WARDEN_REPLICA_LISTEN_ADDR): {e}")
            })?;
            if me.key.is_none() {
                tracing::warn!("WARDEN_REPLICA_ADDR is set but WARDEN_MASTER_KEY is not: other replicas cannot forward to this one");
            }
            forward::spawn_server(
                listener,
                me.key.clone(),
                me.id.clone(),
                Arc::downgrade(services),
                Arc::downgrade(clusters),
            );
        }
        me.heartbeat().await?;
        me.clear_stale_streams(true).await?;
        me.seen_epoch
            .store(me.read_epoch().await?, Ordering::SeqCst);
        // Listen before publishing anything: a change made from now on is heard.
        let listener = me.listen().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        if !services.policy.set_publisher(tx) {
            anyhow::bail!("the authorization epoch already has a publisher");
        }
        let weak = Arc::downgrade(services);
        tokio::spawn(publish_loop(Arc::downgrade(&me), rx));
        tokio::spawn(listen_loop(Arc::downgrade(&me), weak.clone(), listener));
        tokio::spawn(recheck_loop(Arc::downgrade(&me), weak));
        tokio::spawn(heartbeat_loop(Arc::downgrade(&me)));
        tokio::spawn(ownership_loop(Arc::downgrade(&me), ownership_rx));
        tokio::spawn(ordered_writes(
            Arc::downgrade(&me),
            stream_changes_rx,
            "a live stream",
            streams::StreamChange::statement,
        ));
        let opts = (*me.db.get_postgres_connection_pool().connect_options()).clone();
        lease::start(services, opts, me.config.heartbeat).await;
        tracing::info!(replica.id = %me.id, replica.addr = ?me.config.internal_addr, "joined the replicas sharing the database");
        Ok(Some(me))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn internal_addr(&self) -> Option<&str> {
        self.config.internal_addr.as_deref()
    }

    /// This replica now holds the agent tunnel of `cluster_id`.
    pub fn tunnel_held(&self, cluster_id: ClusterId) {
        let _ = self.ownership.send(Ownership::Held(cluster_id));
    }

    /// This replica no longer holds the agent tunnel of `cluster_id`.
    pub fn tunnel_released(&self, cluster_id: ClusterId) {
        let _ = self.ownership.send(Ownership::Released(cluster_id));
    }

    /// A stream to the API server of `cluster_id` (named `cluster`) through the replica that
    /// holds its agent tunnel.
    pub async fn open_remote(
        &self,
        cluster_id: ClusterId,
        cluster: &str,
    ) -> Result<crate::gateway::transport::BoxIo, crate::tunnel::TunnelError> {
        use crate::tunnel::TunnelError;
        let closed = |message: String| TunnelError::Closed {
            cluster: cluster.to_owned(),
            message,
        };
        let owner = match self.owner_of(cluster_id).await {
            Ok(Some(o)) if o.id != self.id => o,
            Ok(_) => return Err(TunnelError::NotConnected(cluster.to_owned())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up which replica holds a tunnel");
                return Err(closed("cannot find which replica holds the tunnel".into()));
            }
        };
        let Some(addr) = owner.internal_addr.as_deref() else {
            return Err(closed(format!(
                "replica {} holds the agent tunnel but has no WARDEN_REPLICA_ADDR",
                owner.id
            )));
        };
        let Some(key) = &self.key else {
            return Err(closed(
                "another replica holds the agent tunnel, and without WARDEN_MASTER_KEY this one cannot forward to it".into(),
            ));
        };
        let s = forward::dial(addr, key, &self.id, &owner.id, cluster_id)
            .await
            .map_err(closed)?;
        Ok(Box::new(s))
    }

    /// Whether another live replica held the tunnel of `cluster_id` at the last heartbeat.
    pub fn held_elsewhere(&self, cluster_id: ClusterId) -> bool {
        self.elsewhere
            .read()
            .map(|s| s.contains(&cluster_id))
            .unwrap_or(false)
    }

    /// The live replica holding the agent tunnel of `cluster_id`: its id and internal address.
    pub async fn owner_of(&self, cluster_id: ClusterId) -> anyhow::Result<Option<ReplicaRef>> {
        let timeout = self.config.timeout.as_millis() as i64;
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT r.id, r.internal_addr FROM cluster_tunnels t JOIN replicas r ON r.id = t.replica_id \
                     WHERE t.cluster_id = $1 AND r.heartbeat_at > {DB_NOW_MS} - $2"
                ),
                [cluster_id.to_string().into(), timeout.into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => Some(ReplicaRef {
                id: r.try_get("", "id")?,
                internal_addr: r.try_get("", "internal_addr")?,
            }),
            None => None,
        })
    }

    /// The live replicas (heartbeat within the timeout), this one included.
    pub async fn live(&self) -> anyhow::Result<Vec<ReplicaRef>> {
        let timeout = self.config.timeout.as_millis() as i64;
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT id, internal_addr FROM replicas WHERE heartbeat_at > {DB_NOW_MS} - $1 ORDER BY id"
                ),
                [timeout.into()],
            ))
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ReplicaRef {
                    id: r.try_get("", "id")?,
                    internal_addr: r.try_get("", "internal_addr")?,
                })
            })
            .collect()
    }

    /// Leave the registry (a graceful shutdown): this replica's row and its tunnel rows go, so
    /// the others stop forwarding here at once rather than after the heartbeat timeout.
    pub async fn leave(&self) -> anyhow::Result<()> {
        self.left.store(true, Ordering::SeqCst);
        for table in ["cluster_tunnels", "live_streams"] {
            self.db
                .execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    format!("DELETE FROM {table} WHERE replica_id = $1"),
                    [self.id.clone().into()],
                ))
                .await?;
        }
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "DELETE FROM replicas WHERE id = $1",
                [self.id.clone().into()],
            ))
            .await?;
        Ok(())
    }

    /// Write this replica's heartbeat; remove replicas (and their tunnels) silent past the
    /// timeout; refresh which tunnels other live replicas hold.
    async fn heartbeat(&self) -> anyhow::Result<()> {
        let timeout = self.config.timeout.as_millis() as i64;
        let registered = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "INSERT INTO replicas (id, internal_addr, started_at, heartbeat_at) VALUES ($1, $2, {DB_NOW_MS}, {DB_NOW_MS}) \
                     ON CONFLICT (id) DO UPDATE SET internal_addr = EXCLUDED.internal_addr, heartbeat_at = EXCLUDED.heartbeat_at \
                     RETURNING (xmax = 0) AS inserted"
                ),
                [
                    self.id.clone().into(),
                    self.config.internal_addr.clone().into(),
                ],
            ))
            .await?;
        let inserted = registered
            .and_then(|r| r.try_get::<bool>("", "inserted").ok())
            .unwrap_or(false);
        if inserted {
            // New, or its row was removed as a dead replica's (with its tunnels' rows) while
            // the database was out of reach: the tunnels it still holds are claimed again, or
            // the other replicas would find no owner for them until their agents reconnect.
            let held = self
                .clusters
                .upgrade()
                .map(|c| c.held_ids())
                .unwrap_or_default();
            if !held.is_empty() {
                tracing::warn!(
                    tunnels = held.len(),
                    "this replica's registration was lost (the database was out of reach past the timeout); claiming its agent tunnels again"
                );
            }
            for id in held {
                let _ = self.ownership.send(Ownership::Reclaimed(id));
            }
        }
        // The replicas silent past the timeout and their tunnels, in one statement: a replica
        // whose heartbeat lands in between keeps both (two statements would leave it
        // registered without its tunnels, which it would never claim again).
        let reaped = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "WITH dead AS (DELETE FROM replicas WHERE heartbeat_at <= {DB_NOW_MS} - $1 RETURNING id), \
                     gone AS (DELETE FROM cluster_tunnels WHERE replica_id IN (SELECT id FROM dead) RETURNING 1) \
                     SELECT (SELECT count(*) FROM dead) AS reaped, (SELECT count(*) FROM gone) AS tunnels"
                ),
                [timeout.into()],
            ))
            .await?
            .and_then(|r| r.try_get::<i64>("", "reaped").ok())
            .unwrap_or(0);
        if reaped > 0 {
            // A replica that died may have committed a change and died before announcing it
            // (the announcement follows the commit): every replica checks again, this one too.
            tracing::warn!(
                replicas = reaped,
                "a replica stopped answering; every replica checks authorization again"
            );
            announce_from_outside(&self.db).await?;
        }
        self.clear_stale_streams(false).await?;
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT cluster_id FROM cluster_tunnels WHERE replica_id <> $1",
                [self.id.clone().into()],
            ))
            .await?;
        let set: HashSet<ClusterId> = rows
            .into_iter()
            .filter_map(|r| r.try_get::<String>("", "cluster_id").ok())
            .filter_map(|id| ClusterId::parse(&id))
            .collect();
        if let Ok(mut e) = self.elsewhere.write() {
            *e = set;
        }
        Ok(())
    }

    async fn read_epoch(&self) -> anyhow::Result<i64> {
        read_shared_epoch(&self.db).await
    }

    /// Move the shared epoch and announce it, in one statement (the notification goes out
    /// when it commits). Returns the new value.
    async fn publish(&self) -> anyhow::Result<i64> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "WITH u AS (UPDATE authz_epoch SET value = value + 1 WHERE id = 1 RETURNING value) \
                     SELECT u.value AS value, pg_notify('{EPOCH_CHANNEL}', $1 || ':' || u.value::text) AS sent FROM u"
                ),
                [self.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the authz_epoch row is missing"))?;
        Ok(row.try_get("", "value")?)
    }

    async fn listen(&self) -> anyhow::Result<PgListener> {
        let mut l = PgListener::connect_with(self.db.get_postgres_connection_pool()).await?;
        l.listen_all([EPOCH_CHANNEL, streams::LIVE_END_CHANNEL])
            .await?;
        Ok(l)
    }

    /// Record `value` as seen (the re-read); true when it is news.
    fn saw_epoch(&self, value: i64) -> bool {
        self.seen_epoch.fetch_max(value, Ordering::SeqCst) < value
    }

    /// A move to `value` was handled (published here, or heard): record it only when it
    /// follows the last one seen, so a move not heard in between is still found by the re-read.
    fn handled_epoch(&self, value: i64) {
        let _ =
            self.seen_epoch
                .compare_exchange(value - 1, value, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A replica, as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRef {
    pub id: String,
    pub internal_addr: Option<String>,
}

/// Announce local moves of the epoch, coalescing those that come while one is being written;
/// a failed write is retried (the other replicas' safety net reads the same row).
async fn publish_loop(me: Weak<Replicas>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(r) = me.upgrade() else { return };
            match r.publish().await {
                Ok(v) => {
                    r.handled_epoch(v);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot announce an authorization change to the other replicas; retrying");
                }
            }
            drop(r);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// The shared authorization epoch (`authz_epoch`), on either database.
async fn read_shared_epoch(db: &DatabaseConnection) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT value FROM authz_epoch WHERE id = 1",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the authz_epoch row is missing"))?;
    Ok(row.try_get("", "value")?)
}

/// One process on SQLite: no replicas, but `warden` commands (a password reset) change
/// authorization in the same database from outside it, and move `authz_epoch` in their
/// transaction. Re-read it every `every`: when it moved, cached admissions are dropped and
/// every open terminal and stream is checked again, as a replica does on PostgreSQL.
pub async fn local_epoch_loop(services: Weak<Services>, every: Duration) {
    let mut seen = None;
    loop {
        let Some(svc) = services.upgrade() else {
            return;
        };
        match read_shared_epoch(&svc.db).await {
            Ok(v) => {
                if seen.is_some_and(|s| s != v) {
                    tracing::info!(
                        epoch = v,
                        "authorization was changed from outside this server; checking again"
                    );
                    svc.policy.bump_from_elsewhere();
                }
                seen = Some(v);
            }
            Err(e) => {
                // Unknown whether anything changed: assume it did (fail closed).
                tracing::warn!(error = %e, "cannot re-read the authorization epoch");
                svc.policy.bump_from_elsewhere();
            }
        }
        drop(svc);
        tokio::time::sleep(every).await;
    }
}

/// Tell every running server that authorization changed, from outside one (a `warden`
/// command that changed it in the database and moved `authz_epoch` in its transaction): a
/// notification, so replicas check their open terminals and streams again now rather than at
/// their next re-read of the epoch. On SQLite there is nobody to notify (the server re-reads
/// the epoch every `WARDEN_REPLICA_EPOCH_RECHECK_MS`).
pub async fn announce_from_outside(db: &sea_orm::DatabaseConnection) -> anyhow::Result<()> {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    db.query_one_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        format!(
            "WITH u AS (UPDATE authz_epoch SET value = value + 1 WHERE id = 1 RETURNING value) \
             SELECT u.value AS value, pg_notify('{EPOCH_CHANNEL}', $1 || ':' || u.value::text) AS sent FROM u"
        ),
        ["warden-command".into()],
    ))
    .await?;
    Ok(())
}

/// Hear the other replicas' moves of the epoch.
async fn listen_loop(me: Weak<Replicas>, services: Weak<Services>, mut listener: PgListener) {
    loop {
        let next = listener.try_recv().await;
        let (Some(r), Some(svc)) = (me.upgrade(), services.upgrade()) else {
            return;
        };
        match next {
            Ok(Some(n)) if n.channel() == streams::LIVE_END_CHANNEL => {
                // An *End* for one of this replica's streams, answered by another replica.
                let (replica, _) = n.payload().rsplit_once(':').unwrap_or(("", ""));
                if replica == r.id {
                    tokio::spawn(end_requested_here(Arc::downgrade(&r)));
                }
            }
            Ok(Some(n)) => {
                let (origin, value) = n.payload().rsplit_once(':').unwrap_or(("", ""));
                if origin != r.id {
                    svc.policy.bump_from_elsewhere();
                }
                if let Ok(v) = value.parse::<i64>() {
                    r.handled_epoch(v);
                }
            }
            Ok(None) => {
                // The connection was lost (sqlx reconnects it): what was said meanwhile is
                // unknown, so assume something changed.
                tracing::warn!(
                    "the authorization-change listener lost its connection; reconnecting"
                );
                svc.policy.bump_from_elsewhere();
                tokio::spawn(end_requested_here(Arc::downgrade(&r)));
            }
            // The pool was closed (Warden is stopping): let the listening connection go, or
            // the pool's close would wait for it for ever.
            Err(sea_orm::sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the authorization-change listener failed; retrying");
                svc.policy.bump_from_elsewhere();
                drop((r, svc));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The safety net: re-read the shared epoch now and then.
async fn recheck_loop(me: Weak<Replicas>, services: Weak<Services>) {
    loop {
        let every = match me.upgrade() {
            Some(r) => r.config.epoch_recheck,
            None => return,
        };
        tokio::time::sleep(every).await;
        let (Some(r), Some(svc)) = (me.upgrade(), services.upgrade()) else {
            return;
        };
        match r.read_epoch().await {
            Ok(v) => {
                if r.saw_epoch(v) {
                    tracing::debug!(
                        epoch = v,
                        "an authorization change was found by re-reading the epoch"
                    );
                    svc.policy.bump_from_elsewhere();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot re-read the shared authorization epoch"),
        }
        if let Err(e) = r.end_requested_here().await {
            tracing::warn!(error = %e, "cannot read which of this replica's live streams were ended elsewhere");
        }
    }
}

/// Carry out the *End* requests other replicas made for this replica's streams.
async fn end_requested_here(me: Weak<Replicas>) {
    let Some(r) = me.upgrade() else { return };
    if let Err(e) = r.end_requested_here().await {
        tracing::warn!(error = %e, "cannot read which of this replica's live streams were ended elsewhere");
    }
}

async fn heartbeat_loop(me: Weak<Replicas>) {
    loop {
        let every = match me.upgrade() {
            Some(r) => r.config.heartbeat,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(r) = me.upgrade() else { return };
        if r.left.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = r.heartbeat().await {
            tracing::warn!(error = %e, "cannot write this replica's heartbeat");
        }
    }
}

/// Write tunnel ownership changes in the order they happened.
async fn ownership_loop(me: Weak<Replicas>, rx: mpsc::UnboundedReceiver<Ownership>) {
    ordered_writes(me, rx, "the agent tunnel's replica", |change, replica| match change {
        Ownership::Held(c) => Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "INSERT INTO cluster_tunnels (cluster_id, replica_id, connected_at) VALUES ($1, $2, {DB_NOW_MS}) \
                 ON CONFLICT (cluster_id) DO UPDATE SET replica_id = EXCLUDED.replica_id, connected_at = EXCLUDED.connected_at"
            ),
            [c.to_string().into(), replica.to_owned().into()],
        ),
        // Never over a newer claim: the agent may have connected to another replica since.
        Ownership::Reclaimed(c) => Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            format!(
                "INSERT INTO cluster_tunnels (cluster_id, replica_id, connected_at) VALUES ($1, $2, {DB_NOW_MS}) \
                 ON CONFLICT (cluster_id) DO NOTHING"
            ),
            [c.to_string().into(), replica.to_owned().into()],
        ),
        // Only this replica's own claim: the agent may already be connected elsewhere.
        Ownership::Released(c) => Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "DELETE FROM cluster_tunnels WHERE cluster_id = $1 AND replica_id = $2",
            [c.to_string().into(), replica.to_owned().into()],
        ),
    })
    .await
}

/// Write this replica's changes of one kind (`what`, for the log) in the order they happened:
/// each as the statement `statement` makes of it for this replica's id, retried until it is
/// written, the registry is gone, or this replica left.
pub(super) async fn ordered_writes<T>(
    me: Weak<Replicas>,
    mut rx: mpsc::UnboundedReceiver<T>,
    what: &'static str,
    statement: fn(&T, &str) -> Statement,
) {
    while let Some(change) = rx.recv().await {
        loop {
            let Some(r) = me.upgrade() else { return };
            if r.left.load(Ordering::SeqCst) {
                break;
            }
            match r.db.execute_raw(statement(&change, &r.id)).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, what, "cannot record a change for the other replicas; retrying");
                    drop(r);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
