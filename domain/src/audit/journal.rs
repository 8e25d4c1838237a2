//! The audit journal: a local append-only file that makes a gateway request's audit event
//! durable before its answer leaves Warden, so a `SIGKILL` the next instant loses nothing.
//!
//! - The request path appends a record to an in-memory buffer and awaits [`AuditJournal::wait`]:
//!   one writer thread (its own, so an `fsync` never waits behind request tasks) writes whatever
//!   accumulated while the previous `fsync` ran and `fsync`s it (a group commit: one `fsync` for
//!   every request that arrived meanwhile), then wakes them. Records nobody waits for (the end
//!   of an answer already sent) wait up to 2 ms to share the next `fsync`.
//! - Records: `Begin` (a request answered, written before its headers go out, with what is
//!   known then) and `End` (the finished event, written when its answer ends). The batching
//!   database writer stores the `End` event in the chain as before and reports it stored; a
//!   segment file is deleted once every `End` in it is in the database (the `Begin`s still
//!   open are copied into the next segment when it rotates).
//! - Framing: `len: u32 LE`, `check: u32 LE` (the first 4 bytes of the payload's SHA-256),
//!   the JSON payload. A torn record at the tail (a crash mid-write) fails its length or check
//!   and ends the segment's replay: it was never acknowledged, since its `fsync` never returned.
//! - At start ([`AuditJournal::recover`], before serving): every event of the old segments not
//!   in the database yet (found by id) is appended to the chain, an unfinished `Begin` with a
//!   reason saying its end was not recorded; then the old segments are deleted.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType};
use crate::clock::Timestamp;
use crate::entities::audit_events;
use crate::error::DomainResult;
use crate::ids::{AuditEventId, UserId};

/// A segment rotates past this size.
const SEGMENT_MAX: u64 = 8 * 1024 * 1024;
/// Records nobody waits for (the end of an answer already sent) are written within this long,
/// with the next record someone waits for, or when this much accumulated.
const LAZY_FOR: Duration = Duration::from_millis(2);
const LAZY_BYTES: usize = 256 * 1024;
/// The reason given to a request whose end the journal never saw.
pub const END_NOT_RECORDED: &str =
    "Warden stopped before the end of this request was recorded; restored from the audit journal";

/// The journal cannot be written (disk full, I/O error): requests are refused.
#[derive(Debug, thiserror::Error)]
#[error("the audit journal cannot be written")]
pub struct JournalUnavailable;

#[derive(Serialize, Deserialize)]
enum Record {
    Begin(Stored),
    End(Stored),
}

/// An [`AuditEvent`] as the journal keeps it, with the time it was journaled.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    at: i64,
    kind: String,
    actor: (String, Option<String>, Option<String>),
    session_type: String,
    action: String,
    outcome: String,
    reason: Option<String>,
    project: Option<String>,
    cluster: Option<String>,
    namespace: Option<String>,
    resource_kind: Option<String>,
    resource_name: Option<String>,
    status: Option<i32>,
    duration_ms: Option<i64>,
    method: Option<String>,
    path: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    details: serde_json::Value,
}

impl Stored {
    fn from_event(e: &AuditEvent, at: Timestamp) -> Self {
        let actor = match &e.actor {
            Actor::User { id, name } => ("user".into(), Some(id.to_string()), Some(name.clone())),
            Actor::Anonymous { claimed } => ("anonymous".into(), Some(claimed.clone()), None),
            Actor::System => ("system".into(), None, None),
            Actor::Agent { cluster } => ("agent".into(), Some(cluster.clone()), None),
        };
        Stored {
            id: e.id.to_string(),
            at: at.millis(),
            kind: e.kind.as_str().into(),
            actor,
            session_type: e.session_type.as_str().into(),
            action: e.action.clone(),
            outcome: e.outcome.as_str().into(),
            reason: e.reason.clone(),
            project: e.project.clone(),
            cluster: e.cluster.clone(),
            namespace: e.namespace.clone(),
            resource_kind: e.resource_kind.clone(),
            resource_name: e.resource_name.clone(),
            status: e.status,
            duration_ms: e.duration_ms,
            method: e.request.method.clone(),
            path: e.request.path.clone(),
            source_ip: e.request.source_ip.clone(),
            user_agent: e.request.user_agent.clone(),
            request_id: e.request.request_id.clone(),
            details: e.details.clone(),
        }
    }

    fn into_event(self) -> Option<(Timestamp, AuditEvent)> {
        let actor = match (self.actor.0.as_str(), self.actor.1, self.actor.2) {
            ("user", Some(id), Some(name)) => Actor::User {
                id: UserId::parse(&id)?,
                name,
            },
            ("anonymous", Some(claimed), _) => Actor::Anonymous { claimed },
            ("agent", Some(cluster), _) => Actor::Agent { cluster },
            _ => Actor::System,
        };
        let mut e = AuditEvent::new(
            AuditKind::parse(&self.kind)?,
            actor,
            SessionType::parse(&self.session_type)?,
            self.action,
            Outcome::parse(&self.outcome)?,
        );
        e.id = AuditEventId::parse(&self.id)?;
        e.reason = self.reason;
        e.project = self.project;
        e.cluster = self.cluster;
        e.namespace = self.namespace;
        e.resource_kind = self.resource_kind;
        e.resource_name = self.resource_name;
        e.status = self.status;
        e.duration_ms = self.duration_ms;
        e.request = RequestMeta {
            method: self.method,
            path: self.path,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
            request_id: self.request_id,
        };
        e.details = self.details;
        Some((Timestamp(self.at), e))
    }
}

fn encode(r: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(r).unwrap_or_default();
    let check = Sha256::digest(&payload);
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&check[..4]);
    out.extend_from_slice(&payload);
    out
}

/// The records of one segment, up to the first torn or corrupt one.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return (out, true);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            return (out, true);
        };
        if Sha256::digest(payload)[..4] != head[4..8] {
            return (out, true);
        }
        match serde_json::from_slice(payload) {
            Ok(r) => out.push(r),
            Err(_) => return (out, true),
        }
        at += 8 + len;
    }
    (out, false)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.journal"))
}

fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".journal")?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    Ok(v)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    appended: u64,
    segment: u64,
    segment_bytes: u64,
    /// `Begin` records whose `End` has not come yet.
    open: HashMap<AuditEventId, Vec<u8>>,
    /// Per segment: the ids of its `End` records not yet in the database.
    uncommitted: BTreeMap<u64, HashSet<AuditEventId>>,
    end_segment: HashMap<AuditEventId, u64>,
    /// Closed segments, and the write after which their open `Begin`s are safe elsewhere.
    closed: Vec<(u64, u64)>,
    writes: u64,
    /// The highest ticket an answer waits for, and the tickets taken to be written so far.
    urgent: u64,
    taken: u64,
    /// When the buffer's oldest record was appended.
    since: Option<Instant>,
}

/// When an answer may leave: after its record is written into the operating system (`Write`,
/// survives Warden being killed, `fsync`'d in the background every `interval`), or after the
/// record is also `fsync`'d (`Fsync`, survives a power cut; costs a disk flush per group
/// commit on the request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSync {
    Fsync,
    Write { interval: Duration },
}

impl JournalSync {
    /// `WARDEN_AUDIT_JOURNAL_SYNC`: `fsync` or `write` (`write:<ms>` sets the background
    /// `fsync` interval, default 100 ms).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fsync" => Some(Self::Fsync),
            "write" => Some(Self::Write {
                interval: Duration::from_millis(100),
            }),
            other => {
                let ms: u64 = other.strip_prefix("write:")?.trim().parse().ok()?;
                (1..=10_000).contains(&ms).then_some(Self::Write {
                    interval: Duration::from_millis(ms),
                })
            }
        }
    }
}

/// What `warden_audit_journal_*` reports.
#[derive(Default)]
pub struct JournalStats {
    /// Each group commit: the write, and the `fsync` (`warden_audit_journal_fsync_seconds`).
    pub fsync: crate::latency::LatencyHistogram,
}

pub struct AuditJournal {
    dir: PathBuf,
    state: Mutex<State>,
    wake: std::sync::Condvar,
    durable: tokio::sync::watch::Sender<u64>,
    broken: AtomicBool,
    pub stats: JournalStats,
    /// Segments left by the previous run, replayed by [`AuditJournal::recover`].
    leftovers: Mutex<Vec<u64>>,
}

impl AuditJournal {
    /// Open the journal in `dir` (created if needed) and start its writer task. Segments left
    /// by a previous run wait for [`AuditJournal::recover`].
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        Self::open_with(dir, JournalSync::Fsync)
    }

    /// [`AuditJournal::open`] with the given durability before an answer.
    pub fn open_with(dir: &Path, sync: JournalSync) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let leftovers = segments(dir)?;
        let next = leftovers.last().map_or(1, |n| n + 1);
        let (durable, _) = tokio::sync::watch::channel(0u64);
        let journal = Arc::new(Self {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                segment: next,
                ..Default::default()
            }),
            wake: std::sync::Condvar::new(),
            durable,
            broken: AtomicBool::new(false),
            stats: JournalStats::default(),
            leftovers: Mutex::new(leftovers),
        });
        // With `Write`, a second thread `fsync`s what was written, off the request path.
        let syncer: Option<Arc<Syncer>> = match sync {
            JournalSync::Fsync => None,
            JournalSync::Write { interval } => {
                let syncer = Arc::new(Syncer::default());
                let weak = Arc::downgrade(&journal);
                let s = syncer.clone();
                std::thread::Builder::new()
                    .name("audit-journal-sync".into())
                    .spawn(move || loop {
                        std::thread::sleep(interval);
                        let Some(j) = weak.upgrade() else { return };
                        let started = Instant::now();
                        match s.sync() {
                            Ok(synced) => {
                                if synced {
                                    j.observe_fsync(started.elapsed());
                                }
                                if s.failed.swap(false, Ordering::AcqRel) {
                                    j.broken.store(false, Ordering::SeqCst);
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the audit journal cannot be flushed to disk; gateway requests are refused until it can");
                                s.failed.store(true, Ordering::Release);
                                j.broken.store(true, Ordering::SeqCst);
                                j.durable.send_modify(|_| {});
                            }
                        }
                    })?;
                Some(syncer)
            }
        };
        // A thread of its own: the `fsync`s never wait behind request tasks for a worker.
        let writer = Arc::downgrade(&journal);
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || {
                let mut file: Option<(u64, std::fs::File)> = None;
                let mut pending: Option<(Vec<u8>, u64, u64)> = None;
                loop {
                    let Some(j) = writer.upgrade() else { return };
                    if pending.is_none() {
                        pending = j.take_or_wait(Duration::from_secs(1));
                    }
                    let Some((data, upto, seg)) = pending.take() else {
                        continue;
                    };
                    let started = Instant::now();
                    match write_segment(&j.dir, &mut file, seg, &data, syncer.as_deref()) {
                        Ok(()) => {
                            if syncer.is_none() {
                                j.observe_fsync(started.elapsed());
                            }
                            if syncer
                                .as_ref()
                                .is_none_or(|s| !s.failed.load(Ordering::Acquire))
                            {
                                j.broken.store(false, Ordering::SeqCst);
                            }
                            j.durable.send_replace(upto);
                            j.collect();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the audit journal cannot be written; gateway requests are refused until it can");
                            j.broken.store(true, Ordering::SeqCst);
                            j.durable.send_modify(|_| {});
                            pending = Some((data, upto, seg));
                            file = None;
                            drop(j);
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(journal)
    }

    /// What the writer writes next (the buffer, the ticket it makes durable, its segment),
    /// waiting up to `idle` for something to write.
    fn take_or_wait(&self, idle: Duration) -> Option<(Vec<u8>, u64, u64)> {
        let mut st = self.state.lock().ok()?;
        loop {
            if st.buf.is_empty() {
                let (next, waited) = self.wake.wait_timeout(st, idle).ok()?;
                st = next;
                if waited.timed_out() && st.buf.is_empty() {
                    return None;
                }
                continue;
            }
            // Someone waits for a record not taken yet, or enough accumulated, or long enough.
            let age = st.since.map_or(LAZY_FOR, |t| t.elapsed());
            if st.urgent > st.taken || st.buf.len() >= LAZY_BYTES || age >= LAZY_FOR {
                break;
            }
            st = self.wake.wait_timeout(st, LAZY_FOR - age).ok()?.0;
        }
        st.taken = st.appended;
        st.since = None;
        let data = std::mem::take(&mut st.buf);
        let seg = st.segment;
        st.writes += 1;
        st.segment_bytes += data.len() as u64;
        if st.segment_bytes > SEGMENT_MAX {
            // The next write goes to a new segment, starting with the requests still open.
            let carried: Vec<u8> = st.open.values().flatten().copied().collect();
            let after = if carried.is_empty() {
                st.writes
            } else {
                st.writes + 1
            };
            st.closed.push((seg, after));
            st.segment += 1;
            st.segment_bytes = 0;
            st.buf = carried;
        }
        Some((data, st.appended, seg))
    }

    /// Delete the closed segments whose events are all in the database.
    fn collect(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let writes = st.writes;
        let State {
            closed,
            uncommitted,
            ..
        } = &mut *st;
        closed.retain(|(seg, after)| {
            let done = *after <= writes && uncommitted.get(seg).is_none_or(|s| s.is_empty());
            if done {
                uncommitted.remove(seg);
                if let Err(e) = std::fs::remove_file(segment_path(&self.dir, *seg)) {
                    tracing::warn!(error = %e, segment = seg, "could not delete an audit journal segment");
                }
            }
            !done
        });
    }

    fn observe_fsync(&self, d: Duration) {
        self.stats.fsync.observe(d);
    }

    fn push(&self, rec: &Record, f: impl FnOnce(&mut State, &[u8])) -> u64 {
        let bytes = encode(rec);
        let Ok(mut st) = self.state.lock() else {
            return u64::MAX;
        };
        // The writer is woken only when it has something new to do: the first record of an
        // empty buffer starts its `LAZY_FOR` wait; past `LAZY_BYTES` it writes now. Otherwise
        // it is in that wait already and writes this record with the others when it ends (or
        // when someone waits for one: `wait`). A wake per record cost a context switch each,
        // two per request, for nothing.
        let was_empty = st.buf.is_empty();
        if was_empty {
            st.since = Some(Instant::now());
        }
        let was_small = st.buf.len() < LAZY_BYTES;
        st.buf.extend_from_slice(&bytes);
        st.appended += 1;
        f(&mut st, &bytes);
        let ticket = st.appended;
        let wake = was_empty || (was_small && st.buf.len() >= LAZY_BYTES);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        ticket
    }

    /// Journal the start of an answer (what is known when its headers go out). Returns the
    /// ticket to [`AuditJournal::wait`] for.
    pub fn begin(&self, ev: &AuditEvent, at: Timestamp) -> u64 {
        let id = ev.id;
        self.push(&Record::Begin(Stored::from_event(ev, at)), |st, bytes| {
            st.open.insert(id, bytes.to_vec());
        })
    }

    /// Journal a finished event (it goes to the database next; see [`AuditJournal::stored`]).
    pub fn end(&self, ev: &AuditEvent, at: Timestamp) -> u64 {
        let id = ev.id;
        self.push(&Record::End(Stored::from_event(ev, at)), |st, _| {
            st.open.remove(&id);
            let seg = st.segment;
            st.uncommitted.entry(seg).or_default().insert(id);
            st.end_segment.insert(id, seg);
        })
    }

    /// These events are in the database: their segments may go.
    pub fn stored<'a>(&self, ids: impl IntoIterator<Item = &'a AuditEventId>) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for id in ids {
            if let Some(seg) = st.end_segment.remove(id) {
                if let Some(s) = st.uncommitted.get_mut(&seg) {
                    s.remove(id);
                }
            }
        }
    }

    /// Records appended so far (a ticket covering all of them).
    pub fn appended(&self) -> u64 {
        self.state.lock().map(|s| s.appended).unwrap_or(u64::MAX)
    }

    /// Wait until the records up to `ticket` are on disk.
    pub async fn wait(&self, ticket: u64) -> Result<(), JournalUnavailable> {
        let mut rx = self.durable.subscribe();
        if *rx.borrow_and_update() < ticket {
            // Written now rather than after `LAZY_FOR`. No wake when the writer has taken this
            // record already (it is being written), or was told of an urgent record it has not
            // taken yet: it then takes every record appended by then, this one included
            // (appended before this call).
            let wake = match self.state.lock() {
                Ok(mut st) => {
                    let told = st.urgent > st.taken;
                    let taken = ticket <= st.taken;
                    st.urgent = st.urgent.max(ticket);
                    !told && !taken
                }
                Err(_) => true,
            };
            if wake {
                self.wake.notify_one();
            }
        }
        loop {
            if *rx.borrow_and_update() >= ticket {
                return Ok(());
            }
            if self.broken.load(Ordering::SeqCst) || ticket == u64::MAX {
                return Err(JournalUnavailable);
            }
            if rx.changed().await.is_err() {
                return Err(JournalUnavailable);
            }
        }
    }

    /// Whether the last write failed (new requests are refused until one succeeds).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Events in the journal not yet in the database: requests still answering and finished
    /// events the database writer has not stored yet (`warden_audit_journal_pending`).
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.open.len() + s.end_segment.len())
            .unwrap_or(0)
    }

    /// Store in the chain every event the previous run journaled and the database does not
    /// have (an unfinished request with [`END_NOT_RECORDED`]), then delete its segments.
    /// Returns how many events were restored.
    ///
    /// Records from before `retained_after` (ms; retention's cutoff now, when the organization
    /// keeps events for a limited time) are not restored: retention deleted them, or would at
    /// once. A segment the last run never filled can hold events long since stored and
    /// deleted by retention, which must not come back.
    pub async fn recover(
        &self,
        db: &DatabaseConnection,
        retained_after: Option<i64>,
    ) -> DomainResult<usize> {
        let old = self.leftovers.lock().map(|l| l.clone()).unwrap_or_default();
        let mut order: Vec<String> = Vec::new();
        let mut found: HashMap<String, (bool, Stored)> = HashMap::new();
        for seg in &old {
            let mut bytes = Vec::new();
            std::fs::File::open(segment_path(&self.dir, *seg))
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| {
                    crate::DomainError::Internal(format!("cannot read the audit journal: {e}"))
                })?;
            let (records, torn) = decode_all(&bytes);
            if torn {
                tracing::warn!(segment = seg, "the audit journal ends with a torn record (a write cut short; it was never acknowledged): ignored");
            }
            for r in records {
                let (ended, s) = match r {
                    Record::Begin(s) => (false, s),
                    Record::End(s) => (true, s),
                };
                match found.get(&s.id) {
                    Some((true, _)) => {}
                    Some((false, _)) if !ended => {}
                    Some(_) => {
                        found.insert(s.id.clone(), (ended, s));
                    }
                    None => {
                        order.push(s.id.clone());
                        found.insert(s.id.clone(), (ended, s));
                    }
                }
            }
        }
        let mut present: HashSet<String> = HashSet::new();
        for chunk in order.chunks(500) {
            let ids: Vec<String> = audit_events::Entity::find()
                .select_only()
                .column(audit_events::Column::Id)
                .filter(audit_events::Column::Id.is_in(chunk.to_vec()))
                .into_tuple()
                .all(db)
                .await?;
            present.extend(ids);
        }
        let mut restored = 0usize;
        let mut expired = 0usize;
        let tx = super::begin_change(db).await?;
        for id in order.iter().filter(|id| !present.contains(*id)) {
            let Some((ended, s)) = found.remove(id) else {
                continue;
            };
            let Some((at, mut ev)) = s.into_event() else {
                tracing::warn!(event.id = %id, "an audit journal record cannot be read back: skipped");
                continue;
            };
            if retained_after.is_some_and(|cutoff| at.millis() < cutoff) {
                expired += 1;
                continue;
            }
            if !ended {
                if ev.reason.is_none() {
                    ev.reason = Some(END_NOT_RECORDED.into());
                }
                if let Some(d) = ev.details.as_object_mut() {
                    d.insert("end_not_recorded".into(), serde_json::Value::Bool(true));
                }
            }
            super::append(&tx, at, vec![ev]).await?;
            restored += 1;
        }
        tx.commit().await?;
        for seg in &old {
            let _ = std::fs::remove_file(segment_path(&self.dir, *seg));
        }
        if let Ok(mut l) = self.leftovers.lock() {
            l.clear();
        }
        if expired > 0 {
            tracing::info!(
                events = expired,
                "audit journal records older than the retention period were not restored"
            );
        }
        if restored > 0 {
            tracing::warn!(
                events = restored,
                "audit events the previous run journaled but did not store were restored from the audit journal"
            );
        }
        Ok(restored)
    }
}

/// The background `fsync` of [`JournalSync::Write`]: the segment being written, and whether
/// anything was written since its last `fsync`.
#[derive(Default)]
struct Syncer {
    file: Mutex<Option<std::fs::File>>,
    dirty: AtomicBool,
    /// The last background `fsync` failed: the journal stays broken until one succeeds.
    failed: AtomicBool,
}

impl Syncer {
    /// `fsync` the current segment if it was written to; `Ok(true)` when it did.
    fn sync(&self) -> std::io::Result<bool> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        match guard.as_ref() {
            Some(f) => f.sync_data().map(|()| true).inspect_err(|_| {
                self.dirty.store(true, Ordering::Release);
            }),
            None => Ok(false),
        }
    }
}

fn write_segment(
    dir: &Path,
    file: &mut Option<(u64, std::fs::File)>,
    seg: u64,
    data: &[u8],
    syncer: Option<&Syncer>,
) -> std::io::Result<()> {
    if file.as_ref().is_none_or(|(n, _)| *n != seg) {
        if let (Some(s), Some((_, old))) = (syncer, file.as_ref()) {
            // A closed segment is complete on disk before the next one starts.
            old.sync_data()?;
            s.dirty.store(false, Ordering::Release);
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, seg))?;
        sync_dir(dir)?;
        if let Some(s) = syncer {
            *s.file
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))? = Some(f.try_clone()?);
        }
        *file = Some((seg, f));
    }
    let Some((_, f)) = file.as_mut() else {
        return Err(std::io::Error::other("no segment open"));
    };
    f.write_all(data)?;
    match syncer {
        // Written into the operating system: Warden may die now, the record stays.
        Some(s) => {
            s.dirty.store(true, Ordering::Release);
            Ok(())
        }
        None => f.sync_data(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent::new(
            AuditKind::KubeApi,
            Actor::User {
                id: UserId::new(),
                name: "john@example.com".into(),
            },
            SessionType::Cli,
            "kube.get",
            Outcome::Allowed,
        )
        .status(200)
    }

    #[tokio::test]
    async fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let j = AuditJournal::open(dir.path()).unwrap();
        let a = event();
        let b = event();
        j.begin(&a, Timestamp(1));
        let t = j.end(&b, Timestamp(2));
        j.wait(t).await.unwrap();
        let seg = segments(dir.path()).unwrap();
        assert_eq!(seg.len(), 1);
        let mut bytes = std::fs::read(segment_path(dir.path(), seg[0])).unwrap();
        let (records, torn) = decode_all(&bytes);
        assert_eq!(records.len(), 2);
        assert!(!torn);
        // A write cut short: the tail is dropped, what came before is kept.
        let whole = bytes.len();
        bytes.extend_from_slice(&encode(&Record::End(Stored::from_event(&a, Timestamp(3))))[..20]);
        let (records, torn) = decode_all(&bytes);
        assert_eq!(records.len(), 2);
        assert!(torn);
        // A flipped byte in the last record: it is dropped.
        bytes.truncate(whole);
        bytes[whole - 2] ^= 0xff;
        let (records, torn) = decode_all(&bytes);
        assert_eq!(records.len(), 1);
        assert!(torn);
        match records.into_iter().next() {
            Some(Record::Begin(s)) => {
                let (at, ev) = s.into_event().unwrap();
                assert_eq!(at, Timestamp(1));
                assert_eq!(ev.id, a.id);
                assert_eq!(ev.status, Some(200));
                assert!(matches!(ev.actor, Actor::User { .. }));
            }
            _ => panic!("a begin record"),
        }
    }

    /// A journal in a new directory, in write mode with this background `fsync` interval.
    fn write_mode_journal(interval: Duration) -> (tempfile::TempDir, Arc<AuditJournal>) {
        let dir = tempfile::tempdir().unwrap();
        let j = AuditJournal::open_with(dir.path(), JournalSync::Write { interval }).unwrap();
        (dir, j)
    }

    #[tokio::test]
    async fn in_write_mode_an_answer_waits_for_the_write_and_the_fsync_follows() {
        let (dir, j) = write_mode_journal(Duration::from_millis(20));
        let a = event();
        let t = j.end(&a, Timestamp(1));
        j.wait(t).await.unwrap();
        // Acknowledged: the record is in the file (the operating system has it), before any
        // background fsync was needed for that.
        let seg = segments(dir.path()).unwrap();
        let bytes = std::fs::read(segment_path(dir.path(), seg[0])).unwrap();
        let (records, torn) = decode_all(&bytes);
        assert_eq!(records.len(), 1);
        assert!(!torn);
        // The background thread flushes it to the disk shortly after.
        let deadline = Instant::now() + Duration::from_secs(5);
        while j.stats.fsync.count() == 0 {
            assert!(Instant::now() < deadline, "no background fsync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Nothing written since: no more flushes.
        let n = j.stats.fsync.count();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(j.stats.fsync.count(), n);
    }

    /// Answers on several threads at once (write mode): every record is in the file once,
    /// whole, each task's in its order; a record nobody waits for is written shortly after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_answers_find_their_records_whole_and_in_order_and_the_rest_follows() {
        let (dir, j) = write_mode_journal(Duration::from_millis(50));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..50 {
                    let ev = event();
                    j.begin(&ev, Timestamp(n));
                    let t = j.end(&ev, Timestamp(n));
                    j.wait(t).await.unwrap();
                    ids.push(ev.id.to_string());
                }
                ids
            }));
        }
        let mut expected = Vec::new();
        for t in tasks {
            expected.push(t.await.unwrap());
        }
        let read = |dir: &Path| {
            let mut all = Vec::new();
            for seg in segments(dir).unwrap() {
                let bytes = std::fs::read(segment_path(dir, seg)).unwrap();
                let (records, torn) = decode_all(&bytes);
                assert!(!torn, "a torn record in a journal nobody killed");
                all.extend(records);
            }
            all
        };
        let records = read(dir.path());
        assert_eq!(records.len(), 16 * 50 * 2);
        let ends: Vec<String> = records
            .iter()
            .filter_map(|r| match r {
                Record::End(s) => Some(s.id.clone()),
                Record::Begin(_) => None,
            })
            .collect();
        for ids in &expected {
            let mut at = ids
                .iter()
                .map(|id| ends.iter().position(|e| e == id).unwrap());
            let mut last = at.next().unwrap();
            for p in at {
                assert!(p > last, "a task's records out of order");
                last = p;
            }
        }
        // Nobody waits for this one: the journal's thread writes it within its linger.
        let lone = event();
        j.end(&lone, Timestamp(9));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = read(dir.path()).iter().any(|r| match r {
                Record::End(s) => s.id == lone.id.to_string(),
                Record::Begin(_) => false,
            });
            if found {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a record nobody waited for was never written"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Records nobody waits for, one after the other (only the first wakes the writer):
        // all written within the linger, and a wait for the last returns.
        let quiet: Vec<AuditEvent> = (0..5).map(|_| event()).collect();
        let mut last = 0;
        for ev in &quiet {
            last = j.end(ev, Timestamp(10));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records = read(dir.path());
            let written = quiet
                .iter()
                .filter(|ev| {
                    records.iter().any(|r| match r {
                        Record::End(s) => s.id == ev.id.to_string(),
                        Record::Begin(_) => false,
                    })
                })
                .count();
            if written == quiet.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{written} of {} records nobody waited for were written",
                quiet.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), j.wait(last))
            .await
            .expect("a wait for a written record returns")
            .unwrap();
    }

    #[test]
    fn the_sync_setting_parses_or_says_no() {
        assert_eq!(JournalSync::parse("fsync"), Some(JournalSync::Fsync));
        assert_eq!(
            JournalSync::parse("write"),
            Some(JournalSync::Write {
                interval: Duration::from_millis(100)
            })
        );
        assert_eq!(
            JournalSync::parse("write:5"),
            Some(JournalSync::Write {
                interval: Duration::from_millis(5)
            })
        );
        for bad in ["", "never", "write:0", "write:x", "write:100000", "FSYNC"] {
            assert_eq!(JournalSync::parse(bad), None, "{bad}");
        }
    }
}
