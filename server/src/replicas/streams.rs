//! Live streams known to every replica (the `live_streams` table; migration
//! `m20261216_000001_live_streams`). The registry of each process ([`LiveStreams`]) holds the
//! streams it relays, with their checks and cancellation; this module shares what the
//! *Live sessions* list, an *End* and the terminal limit need to reach the other replicas:
//!
//! - each stream opened here is written as a row, and removed when it ends, in order, by one
//!   writer (a failed write is retried);
//! - an *End* answered here for a stream another replica relays sets the row's `end_reason`
//!   and announces it (`NOTIFY warden_live_end`, payload `<replica id>:<stream id>`) in one
//!   statement; the replica relaying it closes it with that reason when it hears it, or at its
//!   next re-read of its rows (the safety net, every `WARDEN_REPLICA_EPOCH_RECHECK_MS`);
//! - rows of a replica that left or stopped answering go with its registry row.
//!
//! [`LiveStreams`]: crate::live::LiveStreams

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use warden_domain::dto::{LiveStreamDto, StreamKind};

use super::{Replicas, DB_NOW_MS};
use crate::live::StreamInfo;

/// The `LISTEN`/`NOTIFY` channel of *End* requests for another replica's stream.
pub const LIVE_END_CHANNEL: &str = "warden_live_end";

/// A change to this replica's rows, written in order by one task.
#[derive(Debug)]
pub(super) enum StreamChange {
    Opened(u64, Box<StreamInfo>),
    Closed(u64),
}

impl StreamChange {
    pub(super) fn statement(&self, replica: &str) -> Statement {
        match self {
            Self::Opened(id, i) => Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "INSERT INTO live_streams (id, replica_id, kind, user_id, email, cluster, namespace, target, started_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                [
                    (*id as i64).into(),
                    replica.to_owned().into(),
                    i.kind.as_str().into(),
                    i.user_id.clone().into(),
                    i.email.clone().into(),
                    i.cluster.clone().into(),
                    i.namespace.clone().into(),
                    i.target.clone().into(),
                    i.started_at.into(),
                ],
            ),
            Self::Closed(id) => Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "DELETE FROM live_streams WHERE id = $1 AND replica_id = $2",
                [(*id as i64).into(), replica.to_owned().into()],
            ),
        }
    }
}

fn kind_of(s: &str) -> Option<StreamKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

impl Replicas {
    /// Where *End* requests for this replica's streams are carried out.
    pub fn set_live(&self, live: &Arc<crate::live::LiveStreams>) {
        let _ = self.live.set(Arc::downgrade(live));
    }

    /// A stream opened here: the other replicas see it from now on.
    pub fn stream_opened(&self, id: u64, info: &StreamInfo) {
        let _ = self
            .stream_changes
            .send(StreamChange::Opened(id, Box::new(info.clone())));
    }

    /// A stream opened here ended.
    pub fn stream_closed(&self, id: u64) {
        let _ = self.stream_changes.send(StreamChange::Closed(id));
    }

    /// The open streams the other live replicas relay.
    pub async fn streams_elsewhere(&self) -> anyhow::Result<Vec<LiveStreamDto>> {
        let timeout = self.config.timeout.as_millis() as i64;
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT s.id, s.kind, s.user_id, s.email, s.cluster, s.namespace, s.target, s.started_at \
                     FROM live_streams s JOIN replicas r ON r.id = s.replica_id \
                     WHERE s.replica_id <> $1 AND s.end_reason IS NULL AND r.heartbeat_at > {DB_NOW_MS} - $2 \
                     ORDER BY s.id"
                ),
                [self.id.clone().into(), timeout.into()],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get("", "kind")?;
            let Some(kind) = kind_of(&kind) else {
                tracing::warn!(
                    kind,
                    "a live stream of an unknown kind in the shared registry"
                );
                continue;
            };
            let id: i64 = r.try_get("", "id")?;
            let started_at: i64 = r.try_get("", "started_at")?;
            out.push(LiveStreamDto {
                id: id as u64,
                kind,
                user_id: r.try_get("", "user_id")?,
                user: r.try_get("", "email")?,
                cluster: r.try_get("", "cluster")?,
                namespace: r.try_get("", "namespace")?,
                target: r.try_get("", "target")?,
                started_at: warden_domain::clock::Timestamp(started_at).rfc3339(),
            });
        }
        Ok(out)
    }

    /// How many terminals `user_id` has open on the other live replicas.
    pub async fn terminals_elsewhere(&self, user_id: &str) -> anyhow::Result<i64> {
        let timeout = self.config.timeout.as_millis() as i64;
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT COUNT(*) AS n FROM live_streams s JOIN replicas r ON r.id = s.replica_id \
                     WHERE s.user_id = $1 AND s.kind = $2 AND s.replica_id <> $3 AND s.end_reason IS NULL \
                     AND r.heartbeat_at > {DB_NOW_MS} - $4"
                ),
                [
                    user_id.to_owned().into(),
                    StreamKind::Terminal.as_str().into(),
                    self.id.clone().into(),
                    timeout.into(),
                ],
            ))
            .await?;
        Ok(match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        })
    }

    /// Ask the replica relaying stream `id` to end it with `reason`; whether such a stream is
    /// open on another live replica.
    pub async fn end_elsewhere(&self, id: u64, reason: &str) -> anyhow::Result<bool> {
        let timeout = self.config.timeout.as_millis() as i64;
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "WITH u AS (UPDATE live_streams SET end_reason = $2 \
                     WHERE id = $1 AND replica_id <> $3 AND end_reason IS NULL AND replica_id IN \
                     (SELECT id FROM replicas WHERE heartbeat_at > {DB_NOW_MS} - $4) RETURNING id, replica_id) \
                     SELECT pg_notify('{LIVE_END_CHANNEL}', u.replica_id || ':' || u.id::text) AS sent FROM u"
                ),
                [
                    (id as i64).into(),
                    reason.to_owned().into(),
                    self.id.clone().into(),
                    timeout.into(),
                ],
            ))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Close the streams of this replica that another replica was asked to end.
    pub(super) async fn end_requested_here(&self) -> anyhow::Result<()> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT id, end_reason FROM live_streams WHERE replica_id = $1 AND end_reason IS NOT NULL",
                [self.id.clone().into()],
            ))
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let live = self.live.get().and_then(|w| w.upgrade());
        for r in rows {
            let id: i64 = r.try_get("", "id")?;
            let reason: String = r.try_get("", "end_reason")?;
            let open = live.as_ref().is_some_and(|l| l.close(id as u64, &reason));
            if !open {
                // Ended meanwhile (its own removal may have been written already, or is on
                // its way): nothing relays it here.
                self.stream_closed(id as u64);
            }
        }
        Ok(())
    }

    /// Forget this replica's rows of an earlier run under the same id, and the rows of
    /// replicas that are gone.
    pub(super) async fn clear_stale_streams(&self, at_start: bool) -> anyhow::Result<()> {
        if at_start {
            self.db
                .execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "DELETE FROM live_streams WHERE replica_id = $1",
                    [self.id.clone().into()],
                ))
                .await?;
        }
        self.db
            .execute_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "DELETE FROM live_streams WHERE replica_id NOT IN (SELECT id FROM replicas)",
            ))
            .await?;
        Ok(())
    }
}
