//! The agent's life: learn the cluster's fingerprint, dial Warden (bootstrap token the first
//! time, its credential afterwards), serve tunnel streams, send heartbeats, and reconnect with
//! jittered, capped exponential backoff whenever the tunnel is lost. On shutdown it tells
//! Warden it is draining and lets open streams finish.

use futures::StreamExt;
use rand::Rng;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use warden_domain::agent_protocol::{refusal, AgentMessage, ServerMessage};

use crate::dial::{self, DialError, Hello};
use crate::identity::AgentKey;
use crate::store::Store;
use crate::tunnel::{self, Pump};
use crate::{facts, forward};
use warden_domain::dto::ClusterFacts;

#[derive(Debug, Clone)]
pub struct Options {
    /// First reconnect delay; doubles up to `max_backoff` (each delay jittered to 50-100 %).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long open streams may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// A connection that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// Requests Warden may have in flight at once on one tunnel (watches, log follows and
    /// upgraded connections count until they end); beyond it the agent answers 429.
    pub max_concurrent_requests: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            stable_after: Duration::from_secs(30),
            max_concurrent_requests: forward::DEFAULT_MAX_REQUESTS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Warden refused the agent for good (used or expired token, another cluster's manifest,
    /// deleted cluster). The message says what to do.
    #[error("Warden refused this agent ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// The cluster's facts on their way to Warden over one connection: the first facts go out at
/// once, later ones with the next heartbeat and only when they differ from the last sent, so
/// a thousand unchanged clusters send bare heartbeats (which Warden stores a few hundred to a
/// statement) instead of the same facts every beat.
#[derive(Debug, Default)]
struct FactsOutbox {
    sent: Option<ClusterFacts>,
    pending: Option<ClusterFacts>,
}

impl FactsOutbox {
    /// Freshly gathered facts: returns them when they must go out now (the first).
    fn gathered(&mut self, facts: ClusterFacts) -> Option<ClusterFacts> {
        if self.sent.is_none() {
            self.sent = Some(facts.clone());
            return Some(facts);
        }
        self.pending = (self.sent.as_ref() != Some(&facts)).then_some(facts);
        None
    }

    /// The facts to attach to the heartbeat going out now, if any.
    fn for_heartbeat(&mut self) -> Option<ClusterFacts> {
        let facts = self.pending.take()?;
        self.sent = Some(facts.clone());
        Some(facts)
    }
}

/// Counts open tunnel streams (and the upgraded connections they hand off), and tells them
/// when the agent drains.
#[derive(Clone)]
pub struct Tracker {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    draining: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            count: Arc::default(),
            idle: Arc::default(),
            draining: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

/// Held while a stream is open.
pub struct Active(Tracker);

impl Tracker {
    pub fn enter(&self) -> Active {
        self.count.fetch_add(1, Ordering::SeqCst);
        Active(self.clone())
    }
    pub fn open(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
    /// The agent is shutting down: streams finish what they are serving and take no more.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }
    /// Resolves once [`Tracker::drain`] was called.
    pub async fn draining(&self) {
        let mut rx = self.draining.subscribe();
        // The sender lives as long as `self`: this only ends when draining.
        let _ = rx.wait_for(|d| *d).await;
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Jittered, capped exponential backoff.
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            initial,
            max,
        }
    }
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
    /// The next delay: the current step, jittered to 50-100 % of it.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = base.as_millis() as u64;
        Duration::from_millis(ms / 2 + rand::thread_rng().gen_range(0..=ms / 2))
    }
}

enum Ended {
    Shutdown,
    Revoked { code: String, message: String },
    Lost(String),
}

pub struct Agent {
    kube: kube::Client,
    clients: crate::KubeClients,
    store: Store,
    opts: Options,
}

impl Agent {
    pub fn new(clients: crate::KubeClients, store: Store, opts: Options) -> Self {
        Self {
            kube: clients.agent.clone(),
            clients,
            store,
            opts,
        }
    }

    /// Run until `shutdown` resolves (then drain and return `Ok`) or Warden refuses the agent.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let (stop_tx, mut stop) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            // Keep the sender alive so receivers do not see it closed.
            std::future::pending::<()>().await;
        });
        let result = self.run_inner(&mut stop).await;
        stopper.abort();
        result
    }

    async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
        if *stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = stop.changed() => true,
        }
    }

    async fn run_inner(&self, stop: &mut watch::Receiver<bool>) -> Result<(), AgentError> {
        let mut backoff = Backoff::new(self.opts.initial_backoff, self.opts.max_backoff);
        let fingerprint = loop {
            match facts::fingerprint(&self.kube).await {
                Ok(f) if !f.is_empty() => break f,
                Ok(_) => {
                    return Err(AgentError::Config(
                        "the kube-system namespace has no UID".into(),
                    ))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the kube-system namespace (the cluster fingerprint); retrying")
                }
            }
            if Self::sleep_or_stop(stop, backoff.next_delay()).await {
                return Ok(());
            }
        };
        backoff.reset();
        tracing::info!(fingerprint = %fingerprint, state = %self.store.describe(), "cluster identified");
        // The agent's key pair: generated at its first start and kept with its other state
        // before it is ever used, so a restarted agent proves the same key.
        let key = loop {
            match self.ensure_key().await {
                Ok(Ok(k)) => break k,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, state = %self.store.describe(), "cannot keep the agent's key; retrying")
                }
                Err(e) => return Err(e),
            }
            if Self::sleep_or_stop(stop, backoff.next_delay()).await {
                return Ok(());
            }
        };
        backoff.reset();
        tracing::info!(agent_key = %key.public_b64(), "agent key ready");
        let mut rejected: HashSet<String> = HashSet::new();
        let mut last_refusal: Option<(String, String)> = None;
        // The credential Warden issued, kept in memory too: used when it could not be stored.
        let mut issued: Option<String> = None;
        loop {
            let mut settings = loop {
                match self.store.load().await {
                    Ok(s) => break s,
                    Err(crate::store::StoreError::Settings(e)) => {
                        return Err(AgentError::Config(format!(
                            "bad bootstrap settings in {}: {e}",
                            self.store.describe()
                        )))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the bootstrap settings; retrying")
                    }
                }
                if Self::sleep_or_stop(stop, backoff.next_delay()).await {
                    return Ok(());
                }
            };
            if settings
                .credential
                .as_ref()
                .is_none_or(|c| rejected.contains(c))
            {
                if let Some(c) = issued.clone().filter(|c| !rejected.contains(c)) {
                    settings.credential = Some(c);
                }
            }
            let secret = settings
                .credential
                .clone()
                .filter(|c| !rejected.contains(c))
                .or_else(|| {
                    settings
                        .bootstrap_token
                        .clone()
                        .filter(|t| !rejected.contains(t))
                });
            let Some(secret) = secret else {
                let (code, message) = last_refusal.unwrap_or_else(|| {
                    (
                        "no_credential".into(),
                        "no usable bootstrap token or credential".into(),
                    )
                });
                return Err(AgentError::Refused { code, message });
            };
            let using = if settings.credential.as_deref() == Some(secret.as_str()) {
                "credential"
            } else {
                "bootstrap token"
            };
            tracing::info!(url = %settings.warden_url, cluster = %settings.cluster, using, "dialling Warden");
            match dial::connect(
                &settings,
                &Hello {
                    secret: &secret,
                    fingerprint: &fingerprint,
                    key: &key,
                },
            )
            .await
            {
                Ok(ws) => {
                    let started = Instant::now();
                    match self.session(ws, &mut settings, &mut issued, stop).await {
                        Ended::Shutdown => return Ok(()),
                        Ended::Revoked { code, message } => {
                            tracing::error!(%code, "{message}");
                            return Err(AgentError::Refused { code, message });
                        }
                        Ended::Lost(reason) => {
                            tracing::warn!(%reason, "the tunnel to Warden was lost; reconnecting");
                            if started.elapsed() >= self.opts.stable_after {
                                backoff.reset();
                            }
                        }
                    }
                }
                Err(DialError::Refused { code, message, .. }) => {
                    tracing::error!(%code, using, "Warden refused the agent: {message}");
                    rejected.insert(secret);
                    // No other secret can help a deleted cluster or another cluster's manifest.
                    if code == refusal::CLUSTER_DELETED || code == refusal::FINGERPRINT_MISMATCH {
                        return Err(AgentError::Refused { code, message });
                    }
                    // The first refusal (of the credential, tried first) says the most.
                    if last_refusal.is_none() {
                        last_refusal = Some((code, message));
                    }
                    // A newer manifest may have been applied meanwhile: read the settings again
                    // and try what is left at once.
                    continue;
                }
                Err(DialError::Transient(e)) => {
                    tracing::warn!(error = %e, "cannot reach Warden; will retry")
                }
            }
            let delay = backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "waiting before reconnecting"
            );
            if Self::sleep_or_stop(stop, delay).await {
                return Ok(());
            }
        }
    }

    /// The stored key pair, or a new one stored now. `Ok(Err(_))`: the store could not be read
    /// or written (retry); `Err(_)`: the stored settings or key are unusable.
    async fn ensure_key(&self) -> Result<Result<AgentKey, String>, AgentError> {
        let settings = match self.store.load().await {
            Ok(s) => s,
            Err(crate::store::StoreError::Settings(e)) => {
                return Err(AgentError::Config(format!(
                    "bad bootstrap settings in {}: {e}",
                    self.store.describe()
                )))
            }
            Err(e) => return Ok(Err(e.to_string())),
        };
        if let Some(seed) = &settings.agent_key {
            return AgentKey::from_seed(seed)
                .map(Ok)
                .map_err(|e| AgentError::Config(format!("{e} ({})", self.store.describe())));
        }
        let seed = AgentKey::generate_seed().map_err(AgentError::Config)?;
        if let Err(e) = self.store.save_key(&settings.cluster, &seed).await {
            return Ok(Err(e.to_string()));
        }
        tracing::info!(state = %self.store.describe(), "generated the agent's key pair");
        AgentKey::from_seed(&seed)
            .map(Ok)
            .map_err(AgentError::Config)
    }

    async fn session(
        &self,
        ws: dial::Socket,
        settings: &mut crate::settings::Settings,
        issued: &mut Option<String>,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let (frames_in, frames_out) = tunnel::tungstenite_frames(ws);
        let Pump {
            io,
            mut control_rx,
            control_tx,
            guard: _guard,
        } = tunnel::pump(frames_in, frames_out);
        let welcome = match tokio::time::timeout(Duration::from_secs(15), control_rx.recv()).await {
            Ok(Some(text)) => serde_json::from_str::<ServerMessage>(&text).ok(),
            _ => None,
        };
        let heartbeat = match welcome {
            Some(ServerMessage::Welcome {
                cluster,
                credential,
                heartbeat_interval_ms,
            }) => {
                if let Some(c) = credential {
                    match self.store.save_credential(&settings.cluster, &c).await {
                        Ok(()) => {
                            tracing::info!(state = %self.store.describe(), "registered with Warden; the agent credential is stored")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, state = %self.store.describe(), "registered with Warden but could not store the agent credential; it is kept in memory only")
                        }
                    }
                    settings.credential = Some(c.clone());
                    *issued = Some(c);
                }
                tracing::info!(%cluster, "connected to Warden");
                Duration::from_millis(heartbeat_interval_ms.clamp(100, 600_000))
            }
            Some(ServerMessage::Revoked { code, message }) => {
                return Ended::Revoked { code, message }
            }
            Some(ServerMessage::Closing { reason }) => return Ended::Lost(reason),
            None => return Ended::Lost("Warden sent no welcome".into()),
        };
        let mut session = tokio_yamux::Session::new_client(io, tunnel::yamux_config());
        let mut control = session.control();
        let tracker = Tracker::default();
        let limits = forward::Limits::new(self.opts.max_concurrent_requests.max(1));
        let (facts_tx, mut facts_rx) = mpsc::channel(1);
        let mut gathering = false;
        let mut outbox = FactsOutbox::default();
        let mut last_gather: Option<Instant> = None;
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                s = session.next() => match s {
                    Some(Ok(stream)) => {
                        let clients = self.clients.clone();
                        let active = tracker.enter();
                        let t = tracker.clone();
                        let limits = limits.clone();
                        tokio::spawn(async move {
                            forward::serve_stream(stream, clients, t, limits).await;
                            drop(active);
                        });
                    }
                    Some(Err(e)) => return Ended::Lost(format!("tunnel error: {e}")),
                    None => return Ended::Lost("Warden closed the tunnel".into()),
                },
                m = control_rx.recv() => match m.map(|t| serde_json::from_str::<ServerMessage>(&t)) {
                    Some(Ok(ServerMessage::Revoked { code, message })) => return Ended::Revoked { code, message },
                    Some(Ok(ServerMessage::Closing { reason })) => return Ended::Lost(format!("Warden closed the tunnel: {reason}")),
                    Some(Ok(ServerMessage::Welcome { .. })) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "ignoring an unknown control message"),
                    None => return Ended::Lost("the WebSocket closed".into()),
                },
                // Heartbeats never wait for the API server: facts are read in the background
                // and go out with the next heartbeat once read.
                _ = tick.tick() => {
                    if !gathering && last_gather.is_none_or(|t| t.elapsed() >= heartbeat) {
                        gathering = true;
                        last_gather = Some(Instant::now());
                        let kube = self.kube.clone();
                        let tx = facts_tx.clone();
                        tokio::spawn(async move {
                            let f = tokio::time::timeout(Duration::from_secs(20), facts::gather(&kube)).await.ok();
                            let _ = tx.send(f).await;
                        });
                    }
                    let msg = serde_json::to_string(&AgentMessage::Heartbeat { facts: outbox.for_heartbeat() }).unwrap_or_default();
                    if control_tx.send(msg).await.is_err() {
                        return Ended::Lost("the WebSocket closed".into());
                    }
                }
                f = facts_rx.recv() => {
                    gathering = false;
                    if let Some(facts) = f.flatten().and_then(|f| outbox.gathered(f)) {
                        let msg = serde_json::to_string(&AgentMessage::Heartbeat { facts: Some(facts) }).unwrap_or_default();
                        if control_tx.send(msg).await.is_err() {
                            return Ended::Lost("the WebSocket closed".into());
                        }
                    }
                }
                _ = stop.changed() => {
                    tracing::info!(open_streams = tracker.open(), "shutting down: draining open streams");
                    // Idle keep-alive streams close now; busy ones after their answer.
                    tracker.drain();
                    let _ = control_tx.send(serde_json::to_string(&AgentMessage::Draining).unwrap_or_default()).await;
                    let deadline = tokio::time::sleep(self.opts.drain_timeout);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            // Keep the session moving so open streams can finish; refuse new ones.
                            s = session.next() => match s {
                                Some(Ok(stream)) => drop(stream),
                                _ => break,
                            },
                            _ = tracker.idle() => break,
                            _ = &mut deadline => {
                                tracing::warn!(open_streams = tracker.open(), "drain timeout; closing open streams");
                                break;
                            }
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        tokio::join!(control.close(), async { while session.next().await.is_some() {} })
                    })
                    .await;
                    return Ended::Shutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(nodes: u32) -> ClusterFacts {
        ClusterFacts {
            node_count: nodes,
            ..Default::default()
        }
    }

    #[test]
    fn facts_go_out_first_at_once_then_only_when_changed() {
        let mut o = FactsOutbox::default();
        assert_eq!(o.for_heartbeat(), None, "nothing gathered yet");
        assert_eq!(o.gathered(facts(3)), Some(facts(3)), "the first at once");
        assert_eq!(o.for_heartbeat(), None);
        assert_eq!(o.gathered(facts(3)), None);
        assert_eq!(o.for_heartbeat(), None, "unchanged: a bare heartbeat");
        assert_eq!(
            o.gathered(facts(4)),
            None,
            "changed: with the next heartbeat"
        );
        assert_eq!(o.for_heartbeat(), Some(facts(4)));
        assert_eq!(o.for_heartbeat(), None, "sent once");
        assert_eq!(o.gathered(facts(4)), None);
        assert_eq!(o.for_heartbeat(), None);
        // Changed and changed back before a heartbeat: nothing new to say.
        assert_eq!(o.gathered(facts(5)), None);
        assert_eq!(o.gathered(facts(4)), None);
        assert_eq!(o.for_heartbeat(), None);
    }
}
