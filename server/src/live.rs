//! Live streams: every long-lived connection Warden relays for a person (a watch, a `logs -f`,
//! an exec/attach/port-forward through the gateway, a web terminal) is registered here with
//! the check that admitted it. The check runs again
//!
//! - whenever the authorization epoch moves (any change to users, bindings, groups, roles,
//!   clusters, settings or credentials), pushed by [`AccessPolicy::subscribe`], so an idle
//!   stream is cut as promptly as a busy one;
//! - when a time bound it reported passes (the credential's expiry, a sign-in window), on a
//!   one-second tick of Warden's clock;
//! - before a frame is relayed, when the epoch moved since the last check ([`LiveGuard::admit`]
//!   is O(1) otherwise: two atomics and a clock read).
//!
//! A stream whose check fails is closed with the reason, and one audit event records it.
//!
//! [`AccessPolicy::subscribe`]: warden_domain::access::AccessPolicy::subscribe

use futures::future::BoxFuture;
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warden_domain::audit::{AuditEvent, Outcome};
use warden_domain::Services;

/// The answer of a stream's check: `Ok(valid_until_ms)` (Warden's clock; `i64::MAX` when no
/// time bound applies) or `Err(reason)`, said to the person whose stream ends.
pub type Verdict = Result<i64, String>;

/// Re-decides whether a stream may go on, through the same gate that admitted it.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Verdict> + Send + Sync>;

/// What a stream is, for the registry's listing and the audit event that ends it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub kind: warden_domain::dto::StreamKind,
    pub user_id: String,
    pub email: String,
    pub cluster: String,
    pub namespace: Option<String>,
    /// What it reads or runs in, e.g. `pods/web`.
    pub target: Option<String>,
    /// Warden's clock, ms.
    pub started_at: i64,
}

struct Entry {
    id: u64,
    info: StreamInfo,
    check: Check,
    /// The epoch the last successful check ran at.
    checked_epoch: AtomicU64,
    /// When the last check's answer stops holding (ms, Warden's clock).
    valid_until: AtomicI64,
    cancel: CancellationToken,
    reason: OnceLock<String>,
    /// The audit event written when Warden ends the stream (actor, cluster, resource filled).
    audit: AuditEvent,
}

impl Entry {
    fn fresh(&self, epoch: u64, now: i64) -> bool {
        self.checked_epoch.load(Ordering::Acquire) == epoch
            && now < self.valid_until.load(Ordering::Acquire)
    }
}

/// The registry of live streams. One per process, shared by the gateway and the terminals.
pub struct LiveStreams {
    services: Arc<Services>,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    next: AtomicU64,
    /// With several replicas (PostgreSQL): the shared registry, which the list, an *End* and
    /// the terminal limit reach through ([`crate::replicas::streams`]).
    shared: OnceLock<std::sync::Weak<crate::replicas::Replicas>>,
    /// Terminals being opened, by user: counted against the limit from the moment the count
    /// is taken until they are registered (or fail), so twenty upgrades at once do not all
    /// see the same "none open yet".
    opening: Arc<crate::ratelimit::Concurrent>,
}

/// A place among a user's terminals, held while one opens. Dropping it gives the place back
/// (the registered terminal counts from then on).
pub type TerminalSlot = crate::ratelimit::ConcurrentGuard;

/// Where this process's stream ids begin: a random point in [2^32, 2^52), so ids stay exact
/// in JSON for any client (below 2^53) and do not repeat across restarts and replicas. A
/// terminal's id links its audit events (`details.terminal_id`: its opening, its shell's
/// requests, its close) and leads to its recording; counted from 1 in every process, the
/// terminals of different people on different days shared ids, and the audit log joined them
/// (and an administrator's `DELETE /api/v1/streams/{id}` answered by another replica could end
/// someone else's stream).
fn first_id() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range((1u64 << 32)..(1u64 << 52))
}

/// A registered stream. Dropping it unregisters the stream.
pub struct LiveGuard {
    entry: Arc<Entry>,
    registry: Arc<LiveStreams>,
    /// Places the stream holds (the gateway's per-person and per-cluster ceilings), given
    /// back when it ends.
    held: Vec<crate::ratelimit::ConcurrentGuard>,
}

impl LiveStreams {
    pub fn new(services: Arc<Services>) -> Arc<Self> {
        Arc::new(Self {
            services,
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(first_id()),
            shared: OnceLock::new(),
            opening: crate::ratelimit::Concurrent::new(usize::MAX, usize::MAX),
        })
    }

    /// Take a place among `user_id`'s terminals if fewer than `max` are open or opening (on
    /// every replica); `Ok(Err(n))`: `n` are; `Err`: the other replicas' count is out of
    /// reach. The count of this replica's open and opening terminals and the reservation are
    /// one step under one lock.
    pub async fn reserve_terminal(
        &self,
        user_id: &str,
        max: i64,
    ) -> Result<Result<TerminalSlot, i64>, String> {
        let elsewhere = match self.replicas() {
            Some(r) => r
                .terminals_elsewhere(user_id)
                .await
                .map_err(|e| e.to_string())?,
            None => 0,
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let here = entries
            .values()
            .filter(|e| {
                e.info.kind == warden_domain::dto::StreamKind::Terminal && e.info.user_id == user_id
            })
            .count() as i64;
        let mut open = here + elsewhere;
        let slot = self.opening.acquire_if(user_id, |pending| {
            open += pending as i64;
            open < max
        });
        Ok(slot.ok_or(open))
    }

    /// Share this registry with the other replicas.
    pub fn set_replicas(&self, replicas: &Arc<crate::replicas::Replicas>) {
        let _ = self.shared.set(Arc::downgrade(replicas));
    }

    fn replicas(&self) -> Option<Arc<crate::replicas::Replicas>> {
        self.shared.get().and_then(|w| w.upgrade())
    }

    /// Register a stream admitted at `epoch`, valid until `valid_until` unless `check` says
    /// otherwise later. `audit` is the template of the event written if Warden ends it.
    pub fn register(
        self: &Arc<Self>,
        info: StreamInfo,
        epoch: u64,
        valid_until: i64,
        check: Check,
        audit: AuditEvent,
    ) -> LiveGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            info,
            check,
            checked_epoch: AtomicU64::new(epoch),
            valid_until: AtomicI64::new(valid_until),
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
            audit,
        });
        if let Ok(mut m) = self.entries.lock() {
            m.insert(id, entry.clone());
        }
        if let Some(r) = self.replicas() {
            r.stream_opened(id, &entry.info);
        }
        // A change between the admission and the registration is caught here.
        let guard = LiveGuard {
            entry,
            registry: self.clone(),
            held: Vec::new(),
        };
        if !guard.entry.fresh(
            self.services.policy.epoch(),
            self.services.clock.now().millis(),
        ) {
            let me = self.clone();
            let entry = guard.entry.clone();
            tokio::spawn(async move { me.recheck(&entry).await });
        }
        guard
    }

    /// The streams open now.
    pub fn list(&self) -> Vec<(u64, StreamInfo)> {
        let mut v: Vec<(u64, StreamInfo)> = self
            .entries
            .lock()
            .map(|m| m.values().map(|e| (e.id, e.info.clone())).collect())
            .unwrap_or_default();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// End a stream now (an administrator's action, a sign-out), with the reason shown to its
    /// holder. Returns whether it was open.
    pub fn close(&self, id: u64, reason: &str) -> bool {
        let entry = self.entries.lock().ok().and_then(|m| m.get(&id).cloned());
        match entry {
            Some(e) => {
                self.end(&e, reason.to_owned());
                true
            }
            None => false,
        }
    }

    /// End every stream now (Warden is shutting down), with the reason shown to its holder.
    /// Returns how many were open.
    pub fn close_all(&self, reason: &str) -> usize {
        let all: Vec<_> = self
            .entries
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for e in &all {
            self.end(e, reason.to_owned());
        }
        all.len()
    }

    fn end(&self, entry: &Entry, reason: String) {
        if entry.reason.set(reason.clone()).is_err() {
            return; // already ended
        }
        entry.cancel.cancel();
        tracing::info!(
            stream.id = entry.id,
            stream.kind = %entry.info.kind,
            user.id = %entry.info.user_id,
            cluster = %entry.info.cluster,
            reason = %reason,
            "live stream closed by Warden"
        );
        let mut ev = entry.audit.clone();
        ev.id = warden_domain::ids::AuditEventId::new();
        ev.action = match ev.kind {
            warden_domain::audit::AuditKind::KubeApi => format!("kube.{}.closed", entry.info.kind),
            _ => format!("{}.closed", entry.info.kind),
        };
        ev.outcome = Outcome::Denied;
        ev.reason = Some(reason);
        ev.status = None;
        ev.duration_ms = Some(self.services.clock.now().millis() - entry.info.started_at);
        if let Some(d) = ev.details.as_object_mut() {
            d.insert("stream_id".into(), entry.id.into());
            d.insert("closed_by".into(), "warden".into());
        }
        let audit = self.services.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = audit.record(ev).await {
                tracing::error!(error = %e, "could not audit the end of a live stream");
            }
        });
    }

    /// Run a stream's check now; close it if it fails. Returns the verdict.
    async fn recheck(&self, entry: &Entry) -> Verdict {
        if let Some(r) = entry.reason.get() {
            return Err(r.clone());
        }
        let epoch = self.services.policy.epoch();
        let verdict = (entry.check)().await;
        match &verdict {
            Ok(until) => {
                entry.valid_until.store(*until, Ordering::Release);
                // Only move forward: a concurrent check at a newer epoch wins.
                let _ = entry.checked_epoch.fetch_max(epoch, Ordering::AcqRel);
            }
            Err(reason) => self.end(entry, reason.clone()),
        }
        verdict
    }

    /// Re-check every stream that is not fresh at `epoch` and `now`, a few at a time.
    async fn sweep(&self, epoch: u64, now: i64) {
        let stale: Vec<Arc<Entry>> = match self.entries.lock() {
            Ok(m) => m
                .values()
                .filter(|e| !e.fresh(epoch, now))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        if stale.is_empty() {
            return;
        }
        futures::stream::iter(stale)
            .for_each_concurrent(32, |e| async move {
                let _ = self.recheck(&e).await;
            })
            .await;
    }

    /// The watcher: re-checks on every epoch change and on a one-second tick (time bounds).
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let mut rx = self.services.policy.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = tick.tick() => {}
                }
                // The registry's owner is gone (a test's app, say): stop.
                let Some(me) = weak.upgrade() else { return };
                let epoch = me.services.policy.epoch();
                let now = me.services.clock.now().millis();
                me.sweep(epoch, now).await;
            }
        })
    }
}

#[async_trait::async_trait]
impl warden_domain::streams::LiveRegistry for LiveStreams {
    async fn list(&self) -> Result<Vec<warden_domain::dto::LiveStreamDto>, String> {
        let mut all: Vec<_> = LiveStreams::list(self)
            .into_iter()
            .map(|(id, i)| warden_domain::dto::LiveStreamDto {
                id,
                kind: i.kind,
                user_id: i.user_id,
                user: i.email,
                cluster: i.cluster,
                namespace: i.namespace,
                target: i.target,
                started_at: warden_domain::clock::Timestamp(i.started_at).rfc3339(),
            })
            .collect();
        if let Some(r) = self.replicas() {
            all.extend(r.streams_elsewhere().await.map_err(|e| e.to_string())?);
            all.sort_by_key(|s| s.id);
        }
        Ok(all)
    }

    async fn close(&self, id: u64, reason: &str) -> Result<bool, String> {
        if LiveStreams::close(self, id, reason) {
            return Ok(true);
        }
        match self.replicas() {
            Some(r) => r.end_elsewhere(id, reason).await.map_err(|e| e.to_string()),
            None => Ok(false),
        }
    }
}

impl LiveGuard {
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// Hold `places` for as long as the stream lives.
    pub fn holding(mut self, places: Vec<crate::ratelimit::ConcurrentGuard>) -> Self {
        self.held.extend(places);
        self
    }

    /// Whether the stream may relay the next frame. O(1) while nothing changed; otherwise the
    /// full check runs first. Returns the reason when the stream must end.
    pub async fn admit(&self) -> Result<(), String> {
        if let Some(r) = self.entry.reason.get() {
            return Err(r.clone());
        }
        if self.is_fresh() {
            return Ok(());
        }
        self.registry.recheck(&self.entry).await.map(|_| ())
    }

    /// Nothing changed since the last successful check (the O(1) part of [`Self::admit`]).
    pub fn is_fresh(&self) -> bool {
        let s = &self.registry.services;
        self.entry.reason.get().is_none()
            && self.entry.fresh(s.policy.epoch(), s.clock.now().millis())
    }

    /// A future for the full check (for poll-based relays).
    pub fn admit_owned(&self) -> BoxFuture<'static, Result<(), String>> {
        let registry = self.registry.clone();
        let entry = self.entry.clone();
        Box::pin(async move { registry.recheck(&entry).await.map(|_| ()) })
    }

    /// Resolves when Warden ends the stream.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.entry.cancel.clone().cancelled_owned()
    }

    pub fn is_cancelled(&self) -> bool {
        self.entry.cancel.is_cancelled()
    }

    /// Why Warden ended the stream, once it did.
    pub fn reason(&self) -> Option<String> {
        self.entry.reason.get().cloned()
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.entries.lock() {
            m.remove(&self.entry.id);
        }
        if let Some(r) = self.registry.replicas() {
            r.stream_closed(self.entry.id);
        }
    }
}

#[cfg(test)]
mod id_tests {
    /// Two processes (a restart, another replica) do not hand out the same stream ids.
    #[test]
    fn stream_ids_do_not_repeat_across_processes() {
        let firsts: std::collections::BTreeSet<u64> = (0..64).map(|_| super::first_id()).collect();
        assert_eq!(firsts.len(), 64);
        assert!(firsts
            .iter()
            .all(|id| (1u64 << 32..1u64 << 52).contains(id)));
    }
}
