//! Audit seals: the hash chain made unforgeable by someone who can only write the database.
//!
//! The chain ([`super::row_hash`]) is unkeyed: whoever can write the table could delete or edit
//! a row and compute every later hash again, and the chain would still hold. Every few seconds
//! the background jobs seal the newest row: a signed statement "row `seq` had hash `hash`"
//! (`audit_seals`), its MAC keyed like retention checkpoints ([`CheckpointKey`]). Since each
//! hash covers every row before it, a chain computed again after an edit no longer passes
//! through the sealed hash: [`super::verify_chain_with`] says so, and so does the sealer at its
//! next run, which also checks that its own last seal is still there and that every row since
//! it chains on (an audit event `audit.tampered` and an error in the log when not). Each seal is
//! also written to the server's log (`audit log sealed`), a copy of the head outside the
//! database.
//!
//! The newest seal is also kept outside the database, in the data directory
//! ([`WITNESS_FILE`], written at every seal): deleting every seal and computing the chain
//! again is then noticed by the sealer after a restart (it starts from the witness) and by
//! `warden audit verify` run where that file is. A deployment without a lasting data directory
//! (several replicas with `WARDEN_MASTER_KEY`) has the server's log (`audit log sealed`) and the
//! SIEM stream for that. After restoring the database from a backup (which loses the rows
//! since), the witness says so until it is removed.
//!
//! What a seal cannot prove: rows deleted from the end, with the seals after them, while
//! Warden was stopped, where no witness is kept (the log and the SIEM stream hold the later
//! heads).

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::retention::CheckpointKey;
use super::row_hash;
use crate::entities::{audit_checkpoints, audit_events, audit_seals};
use crate::error::DomainResult;
use crate::Services;

/// Seals kept (older ones add nothing: each hash covers every row before it).
pub const KEPT: u64 = 16;
/// Rows the sealer walks at most per run (it seals where it stopped, and goes on next run).
pub const WALK_LIMIT: u64 = 100_000;

fn message(seq: i64, hash: &str, at: i64) -> String {
    format!("warden audit seal v1\n{seq}\n{hash}\n{at}")
}

impl CheckpointKey {
    fn seal_mac(&self, seq: i64, hash: &str, at: i64) -> String {
        hex::encode(ring::hmac::sign(self.hmac(), message(seq, hash, at).as_bytes()).as_ref())
    }

    /// Whether the seal's MAC is this key's, or an earlier one's.
    pub fn verifies_seal(&self, s: &audit_seals::Model) -> bool {
        self.accepts(message(s.seq, &s.hash, s.at).as_bytes(), &s.mac)
    }

    /// Whether the seal's MAC is this key's itself (not an earlier one's).
    pub(super) fn signed_seal(&self, s: &audit_seals::Model) -> bool {
        self.signed(message(s.seq, &s.hash, s.at).as_bytes(), &s.mac)
    }

    /// The seal's MAC under this key.
    pub(super) fn seal_mac_of(&self, s: &audit_seals::Model) -> String {
        self.seal_mac(s.seq, &s.hash, s.at)
    }
}

/// The file in the data directory holding the newest seal this host wrote.
pub const WITNESS_FILE: &str = "audit-seal.last";

/// The seal a witness file holds (JSON), if it is readable.
pub fn read_witness(path: &std::path::Path) -> Option<audit_seals::Model> {
    #[derive(serde::Deserialize)]
    struct W {
        seq: i64,
        hash: String,
        at: i64,
        mac: String,
    }
    let w: W = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(audit_seals::Model {
        seq: w.seq,
        hash: w.hash,
        at: w.at,
        mac: w.mac,
    })
}

/// Replace the witness file with `seal` (written beside it, then renamed: never half written).
pub(super) fn write_witness(
    path: &std::path::Path,
    seal: &audit_seals::Model,
) -> std::io::Result<()> {
    let body =
        serde_json::json!({"seq": seal.seq, "hash": seal.hash, "at": seal.at, "mac": seal.mac});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}

/// What one run of the sealer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealRun {
    /// Nothing new to seal (or no key to seal with).
    Nothing,
    /// The row `seq` is sealed now.
    Sealed { seq: i64, hash: String },
    /// The log was changed behind Warden's back: nothing sealed.
    Tampered { problem: String },
}

/// Every seal, oldest first.
pub async fn seals<C: ConnectionTrait>(db: &C) -> DomainResult<Vec<audit_seals::Model>> {
    Ok(audit_seals::Entity::find()
        .order_by_asc(audit_seals::Column::Seq)
        .all(db)
        .await?)
}

async fn newest_seal<C: ConnectionTrait>(db: &C) -> DomainResult<Option<audit_seals::Model>> {
    Ok(audit_seals::Entity::find()
        .order_by_desc(audit_seals::Column::Seq)
        .limit(1)
        .one(db)
        .await?)
}

/// Seal the newest row after checking that everything since the last seal chains on.
pub async fn seal(svc: &Services) -> DomainResult<SealRun> {
    let Some(key) = svc.retention.key() else {
        return Ok(SealRun::Nothing);
    };
    let tampered = |problem: &str| {
        Ok(SealRun::Tampered {
            problem: problem.to_owned(),
        })
    };
    let db = &svc.db;
    let last = newest_seal(db).await?;
    // This process's own last seal must still be there, unchanged (another replica taking
    // over the jobs may have sealed later rows since).
    if let Some((seq, hash)) = svc.retention.last_seal() {
        match &last {
            Some(s) if s.seq == seq && s.hash == hash => {}
            Some(s) if s.seq > seq && key.verifies_seal(s) => {}
            _ => return tampered("the newest audit seal was removed or replaced"),
        }
    }
    // Where the walk starts: the last seal, checked; nothing before the first seal.
    let (mut after, mut prev) = match &last {
        None => (None, None),
        Some(s) if !key.verifies_seal(s) => return tampered("an audit seal is forged or altered"),
        Some(s) => {
            let row = audit_events::Entity::find_by_id(s.seq).one(db).await?;
            match row {
                Some(r) if r.hash == s.hash => (Some(s.seq), Some(s.hash.clone())),
                Some(_) => {
                    return tampered(&format!(
                    "the audit chain was rewritten: row {} no longer has the hash sealed for it",
                    s.seq
                ))
                }
                None => {
                    // Deleted by retention under a signed checkpoint, or behind Warden's back.
                    let covered = audit_checkpoints::Entity::find()
                        .filter(audit_checkpoints::Column::Seq.gte(s.seq))
                        .all(db)
                        .await?
                        .iter()
                        .any(|c| key.verifies(c));
                    if !covered {
                        return tampered(&format!("the sealed audit row {} was deleted", s.seq));
                    }
                    (None, None)
                }
            }
        }
    };
    // The newest row, as far as this run walks.
    let mut newest: Option<(i64, String)> = None;
    if after.is_none() {
        // No seal to start from (the first run, or the sealed rows went with retention): the
        // newest row is sealed as it is.
        newest = Some(super::last_row(db).await?).filter(|(seq, _)| *seq > 0);
    } else {
        let mut walked = 0u64;
        while walked < WALK_LIMIT {
            let page = audit_events::Entity::find()
                .filter(audit_events::Column::Seq.gt(after.unwrap_or(i64::MIN)))
                .order_by_asc(audit_events::Column::Seq)
                .limit(1000)
                .all(db)
                .await?;
            if page.is_empty() {
                break;
            }
            for m in page {
                if Some(&m.prev_hash) != prev.as_ref() {
                    return tampered(&format!(
                        "the audit row before {} was deleted or changed since the last seal",
                        m.seq
                    ));
                }
                if row_hash(&m) != m.hash {
                    return tampered(&format!(
                        "the audit row {} was changed since the last seal",
                        m.seq
                    ));
                }
                after = Some(m.seq);
                prev = Some(m.hash.clone());
                newest = Some((m.seq, m.hash));
                walked += 1;
            }
        }
    }
    let Some((seq, hash)) = newest else {
        return Ok(SealRun::Nothing);
    };
    if last.as_ref().is_some_and(|s| s.seq >= seq) {
        return Ok(SealRun::Nothing);
    }
    let at = svc.clock.now().millis();
    let mac = key.seal_mac(seq, &hash, at);
    let made = audit_seals::Model {
        seq,
        hash: hash.clone(),
        at,
        mac,
    };
    audit_seals::ActiveModel::from(made.clone())
        .insert(db)
        .await?;
    // Keep the newest few.
    let keep_from: Option<i64> = audit_seals::Entity::find()
        .select_only()
        .column(audit_seals::Column::Seq)
        .order_by_desc(audit_seals::Column::Seq)
        .offset(KEPT - 1)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    if let Some(from) = keep_from {
        audit_seals::Entity::delete_many()
            .filter(audit_seals::Column::Seq.lt(from))
            .exec(db)
            .await?;
    }
    svc.retention.remember_seal(&made);
    Ok(SealRun::Sealed { seq, hash })
}
