//! Audit retention: events older than the organization's `audit_retention_days` are deleted,
//! oldest first, in batches, without breaking verification.
//!
//! Each batch is one transaction that holds the chain lock (as appends do): it deletes a
//! prefix of the chain (the oldest rows, up to the first one that is still young enough) and
//! writes a checkpoint naming the last deleted row's `seq` and `hash`, so the first retained
//! row's `prev_hash` is explained. The checkpoint carries an HMAC-SHA256 with a key derived
//! from the master key ([`CheckpointKey`]): someone who can only write to the database cannot
//! forge one to hide rows they deleted. The last batch also appends an `audit.retention`
//! event (how many rows were deleted, where the chain now begins) in the same transaction.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::sync::OnceLock;

use super::{append, begin_change, Actor, AuditEvent, AuditKind, Outcome, SessionType};
use crate::clock::Timestamp;
use crate::entities::{audit_checkpoints, audit_events};
use crate::error::{DomainError, DomainResult};
use crate::recordings;
use crate::secrets::Secret;
use crate::Services;

/// Rows deleted per transaction.
pub const DEFAULT_BATCH: u64 = 1000;

const DAY_MS: i64 = 86_400_000;

/// The key that signs retention checkpoints: HKDF of the master key (or of the generated key
/// file when no master key is configured) for this purpose only. It may also accept what
/// earlier keys signed ([`CheckpointKey::also_accepting`]): moving from the generated key to
/// an explicit master key does not turn the checkpoints and seals made before into forgeries.
#[derive(Clone)]
pub struct CheckpointKey {
    signing: ring::hmac::Key,
    earlier: Vec<ring::hmac::Key>,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey(<redacted>)")
    }
}

fn message(seq: i64, hash: &str, deleted: i64, at: i64) -> String {
    format!("warden audit checkpoint v1\n{seq}\n{hash}\n{deleted}\n{at}")
}

impl CheckpointKey {
    pub fn from_master(master_key: &Secret) -> Self {
        let bytes = crate::secrets::derive_key(master_key, b"audit checkpoints");
        Self {
            signing: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            earlier: Vec::new(),
        }
    }

    /// This key, also accepting (never signing with) what `earlier` signed.
    pub fn also_accepting(mut self, earlier: CheckpointKey) -> Self {
        self.earlier.push(earlier.signing);
        self.earlier.extend(earlier.earlier);
        self
    }

    /// The key new MACs are made with.
    pub(super) fn hmac(&self) -> &ring::hmac::Key {
        &self.signing
    }

    /// Whether `tag` is the MAC of `msg` under this key or an earlier one (constant-time each).
    pub(super) fn accepts(&self, msg: &[u8], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        std::iter::once(&self.signing)
            .chain(&self.earlier)
            .any(|k| ring::hmac::verify(k, msg, &tag).is_ok())
    }

    fn sign(&self, seq: i64, hash: &str, deleted: i64, at: i64) -> String {
        hex::encode(
            ring::hmac::sign(&self.signing, message(seq, hash, deleted, at).as_bytes()).as_ref(),
        )
    }

    /// Whether the checkpoint's MAC is this key's, or an earlier one's.
    pub fn verifies(&self, c: &audit_checkpoints::Model) -> bool {
        self.accepts(message(c.seq, &c.hash, c.deleted, c.at).as_bytes(), &c.mac)
    }

    /// Whether `tag` is the MAC of `msg` under this key itself (not an earlier one).
    pub(super) fn signed(&self, msg: &[u8], tag: &str) -> bool {
        hex::decode(tag).is_ok_and(|t| ring::hmac::verify(&self.signing, msg, &t).is_ok())
    }

    /// This key alone, without the earlier ones it accepts.
    pub fn alone(&self) -> Self {
        Self {
            signing: self.signing.clone(),
            earlier: Vec::new(),
        }
    }

    /// Whether it accepts what an earlier key signed.
    pub fn has_earlier(&self) -> bool {
        !self.earlier.is_empty()
    }
}

/// What [`sign_again`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignedAgain {
    pub checkpoints: usize,
    pub seals: usize,
    pub witness: bool,
}

/// Move the audit log's checkpoints and seals to `key` itself: each one an earlier key of
/// `key`'s signed (and nothing else: a MAC no key accepts stays, for verification to report)
/// is signed again with `key`, in one transaction under the chain lock, audited
/// (`audit.checkpoints.signed_again`); the seal kept outside the database (`witness`) too.
/// What start-up does once when the data directory's generated key gives way to the master
/// key's: afterwards only the master key's signatures are accepted, so the old key file (an
/// old volume, a backup) can forge nothing.
pub async fn sign_again(
    db: &sea_orm::DatabaseConnection,
    key: &CheckpointKey,
    witness: Option<&std::path::Path>,
    now: Timestamp,
) -> DomainResult<SignedAgain> {
    use crate::entities::audit_seals;
    let mut done = SignedAgain::default();
    let tx = begin_change(db).await?;
    for c in checkpoints(&*tx).await? {
        let msg = message(c.seq, &c.hash, c.deleted, c.at);
        if key.signed(msg.as_bytes(), &c.mac) || !key.verifies(&c) {
            continue;
        }
        let mac = key.sign(c.seq, &c.hash, c.deleted, c.at);
        let mut a: audit_checkpoints::ActiveModel = c.into();
        a.mac = sea_orm::Set(mac);
        a.update(&*tx).await?;
        done.checkpoints += 1;
    }
    for s in super::seals::seals(&*tx).await? {
        if key.signed_seal(&s) || !key.verifies_seal(&s) {
            continue;
        }
        let mac = key.seal_mac_of(&s);
        let mut a: audit_seals::ActiveModel = s.into();
        a.mac = sea_orm::Set(mac);
        a.update(&*tx).await?;
        done.seals += 1;
    }
    let mut rewritten = None;
    if let Some(path) = witness {
        if let Some(mut w) = super::seals::read_witness(path) {
            if !key.signed_seal(&w) && key.verifies_seal(&w) {
                w.mac = key.seal_mac_of(&w);
                rewritten = Some((path, w));
            }
        }
    }
    done.witness = rewritten.is_some();
    if done.checkpoints + done.seals > 0 || done.witness {
        let ev = AuditEvent::new(
            AuditKind::System,
            Actor::System,
            SessionType::System,
            "audit.checkpoints.signed_again",
            Outcome::Allowed,
        )
        .resource("audit_log", "checkpoints")
        .reason(format!(
            "{} retention checkpoint(s) and {} seal(s) signed with the data directory's key were signed again with the master key's; that key is no longer accepted",
            done.checkpoints, done.seals
        ))
        .details(serde_json::json!({
            "checkpoints": done.checkpoints,
            "seals": done.seals,
            "witness": done.witness,
        }));
        append(&*tx, now, vec![ev]).await?;
    }
    tx.commit().await?;
    // After the commit: a witness ahead of the database would be taken for a seal deleted.
    if let Some((path, w)) = rewritten {
        super::seals::write_witness(path, &w)
            .map_err(|e| DomainError::Internal(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(done)
}

/// The checkpoint key, set at start-up.
#[derive(Default)]
pub struct RetentionHooks {
    key: OnceLock<CheckpointKey>,
    /// The newest seal this process wrote (`seq`, `hash`), or at start the one the witness file
    /// holds.
    last_seal: std::sync::Mutex<Option<(i64, String)>>,
    /// Where the newest seal is also written, outside the database (`super::seals::WITNESS_FILE`
    /// in the data directory).
    witness: OnceLock<std::path::PathBuf>,
    /// The shortest retention the organization may set (`WARDEN_AUDIT_RETENTION_MIN_DAYS`,
    /// set at start-up; [`DEFAULT_MIN_DAYS`] otherwise).
    min_days: OnceLock<i32>,
}

/// The shortest retention by default: one administrator cannot erase the last month.
pub const DEFAULT_MIN_DAYS: i32 = 30;

impl RetentionHooks {
    pub fn last_seal(&self) -> Option<(i64, String)> {
        self.last_seal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub(super) fn remember_seal(&self, seal: &crate::entities::audit_seals::Model) {
        *self.last_seal.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((seal.seq, seal.hash.clone()));
        if let Some(path) = self.witness.get() {
            if let Err(e) = super::seals::write_witness(path, seal) {
                tracing::error!(error = %e, path = %path.display(), "could not write the audit seal witness");
            }
        }
    }

    /// Keep the newest seal in `path` too (a database writer cannot reach it), and start from
    /// the one it holds, if its MAC is the key's: a seal removed while Warden was stopped is
    /// then noticed at the sealer's first run. Call after [`Self::set_key`].
    pub fn set_witness(&self, path: std::path::PathBuf) {
        if let (Some(key), Some(w)) = (self.key(), super::seals::read_witness(&path)) {
            if key.verifies_seal(&w) {
                *self.last_seal.lock().unwrap_or_else(|p| p.into_inner()) = Some((w.seq, w.hash));
            } else {
                tracing::error!(path = %path.display(), "the audit seal witness does not carry this key's MAC: ignored");
            }
        }
        let _ = self.witness.set(path);
    }
    pub fn set_min_days(&self, days: i32) {
        let _ = self.min_days.set(days.max(1));
    }
    /// The shortest retention allowed, days.
    pub fn min_days(&self) -> i32 {
        self.min_days.get().copied().unwrap_or(DEFAULT_MIN_DAYS)
    }
    pub fn set_key(&self, key: CheckpointKey) {
        let _ = self.key.set(key);
    }
    pub fn key(&self) -> Option<&CheckpointKey> {
        self.key.get()
    }
}

/// What one retention run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    pub deleted: u64,
    pub batches: u32,
    /// Events older than this (ms since the epoch) were deleted.
    pub cutoff: i64,
    /// The last deleted row, named by the newest checkpoint.
    pub checkpoint_seq: i64,
    /// The first retained row (`None` when every earlier row was deleted: the chain then
    /// begins with this run's own `audit.retention` event).
    pub chain_start_seq: Option<i64>,
    /// Terminal recordings deleted with them (those that began before the cutoff).
    pub recordings_deleted: u64,
}

/// Apply the organization's retention now, in batches of [`DEFAULT_BATCH`].
pub async fn run(svc: &Services) -> DomainResult<Option<RetentionRun>> {
    run_batched(svc, DEFAULT_BATCH).await
}

/// How many days events are kept, if the organization keeps them for a limited time: whatever
/// the stored setting says (it may have been written around the console), never less than the
/// deployment's floor.
async fn retention_days(svc: &Services) -> DomainResult<Option<i32>> {
    Ok(crate::settings::load(&svc.db)
        .await?
        .audit_retention_days
        .map(|days| days.max(svc.retention.min_days())))
}

/// The time (ms) before which retention deletes events now, if the organization keeps them
/// for a limited time.
pub async fn cutoff_now(svc: &Services) -> DomainResult<Option<i64>> {
    Ok(retention_days(svc)
        .await?
        .map(|days| svc.clock.now().millis() - i64::from(days) * DAY_MS))
}

/// Apply the organization's retention now: `None` when retention is off or nothing is old
/// enough. Runs that delete rows are audited (`audit.retention`).
#[tracing::instrument(skip_all)]
pub async fn run_batched(svc: &Services, batch: u64) -> DomainResult<Option<RetentionRun>> {
    let Some(days) = retention_days(svc).await? else {
        return Ok(None);
    };
    let key = svc.retention.key().ok_or_else(|| {
        DomainError::Internal("no audit checkpoint key was set at start-up".into())
    })?;
    let batch = batch.max(1);
    let now = svc.clock.now();
    let cutoff = now.millis() - i64::from(days) * DAY_MS;
    let mut deleted = 0u64;
    let mut batches = 0u32;
    // The checkpoint this run wrote last.
    let mut last: Option<(i64, String)> = None;
    loop {
        let tx = begin_change(&svc.db).await?;
        // The oldest rows in chain order; the prefix older than the cutoff goes (a row written
        // with a clock behind another's still waits for its predecessors).
        let rows: Vec<(i64, i64, String)> = audit_events::Entity::find()
            .select_only()
            .column(audit_events::Column::Seq)
            .column(audit_events::Column::At)
            .column(audit_events::Column::Hash)
            .order_by_asc(audit_events::Column::Seq)
            .limit(batch + 1)
            .into_tuple()
            .all(&tx)
            .await?;
        let old = rows.iter().take_while(|r| r.1 < cutoff).count();
        let take = old.min(batch as usize);
        if take == 0 {
            let Some((seq, hash)) = last.take() else {
                tx.rollback().await?;
                return Ok(None);
            };
            // Someone else (another replica's run) deleted the rest meanwhile: tell what this
            // run did.
            let run = RetentionRun {
                deleted,
                batches,
                cutoff,
                checkpoint_seq: seq,
                chain_start_seq: rows.first().map(|r| r.0),
                recordings_deleted: recordings::store::delete_started_before(&tx, cutoff).await?,
            };
            append(&tx, now, vec![retention_event(&run, days, &hash)]).await?;
            tx.commit().await?;
            return Ok(Some(run));
        }
        let (last_seq, _, last_hash) = rows[take - 1].clone();
        // The pre-counted events (facets, histogram) lose them in the same transaction.
        super::rollup::remove_through(&*tx, last_seq).await?;
        let n = audit_events::Entity::delete_many()
            .filter(audit_events::Column::Seq.lte(last_seq))
            .exec(&tx)
            .await?
            .rows_affected;
        let at = now.millis();
        audit_checkpoints::ActiveModel::from(audit_checkpoints::Model {
            seq: last_seq,
            hash: last_hash.clone(),
            deleted: n as i64,
            at,
            mac: key.sign(last_seq, &last_hash, n as i64, at),
        })
        .insert(&tx)
        .await?;
        deleted += n;
        batches += 1;
        let more = take == batch as usize && old > take;
        if more {
            tx.commit().await?;
            last = Some((last_seq, last_hash));
            continue;
        }
        let run = RetentionRun {
            deleted,
            batches,
            cutoff,
            checkpoint_seq: last_seq,
            chain_start_seq: rows.get(take).map(|r| r.0),
            recordings_deleted: recordings::store::delete_started_before(&tx, cutoff).await?,
        };
        append(&tx, now, vec![retention_event(&run, days, &last_hash)]).await?;
        tx.commit().await?;
        tracing::info!(
            audit.deleted = run.deleted,
            audit.batches = run.batches,
            audit.checkpoint_seq = run.checkpoint_seq,
            "audit retention applied"
        );
        return Ok(Some(run));
    }
}

fn retention_event(run: &RetentionRun, days: i32, checkpoint_hash: &str) -> AuditEvent {
    AuditEvent::new(
        AuditKind::System,
        Actor::System,
        SessionType::System,
        "audit.retention",
        Outcome::Allowed,
    )
    .resource("audit_log", "events")
    .reason(format!(
        "{} audit events older than {days} days (before {}) were deleted; the chain now begins after seq {}",
        run.deleted,
        Timestamp(run.cutoff).rfc3339(),
        run.checkpoint_seq
    ))
    .details(serde_json::json!({
        "retention_days": days,
        "cutoff": Timestamp(run.cutoff).rfc3339(),
        "deleted": run.deleted,
        "batches": run.batches,
        "checkpoint_seq": run.checkpoint_seq,
        "checkpoint_hash": checkpoint_hash,
        "chain_start_seq": run.chain_start_seq,
        "recordings_deleted": run.recordings_deleted,
    }))
}

/// Every checkpoint, oldest first.
pub async fn checkpoints<C: ConnectionTrait>(
    db: &C,
) -> DomainResult<Vec<audit_checkpoints::Model>> {
    Ok(audit_checkpoints::Entity::find()
        .order_by_asc(audit_checkpoints::Column::Seq)
        .all(db)
        .await?)
}
