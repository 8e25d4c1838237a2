//! Terminal recordings as use cases: the facts of one (for the console's player), and which
//! open terminals have a recording the caller may watch. A recording needs two rights
//! ([`readable`]): those to read the terminal's audit events (`audit.read` on the
//! organization, or on the terminal's project), and, since it shows whatever the terminal
//! printed (secrets included), those to read secrets where the terminal ran, as the gate
//! decides them for a kubectl request: for a pod's terminal, `get secrets` in its namespace;
//! for a kubectl shell, which reaches every namespace its holder could, full access to the
//! cluster. So "read-only access never allows secrets" holds for replays too: a read-only
//! auditor sees a terminal's commands (`terminal.command` events), not its output.
//! (The recording itself, kept in the database as chunks (`store`), is served by
//! `GET /api/v1/terminal/recordings/{id}`, which applies the same rule.)

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::access::Principal;
use crate::clock::Timestamp;
use crate::dto::{LiveStreamDto, RecordingDto, RecordingEnd, TerminalMode};
use crate::entities::audit_events;
use crate::error::{DomainError, DomainResult};
use crate::permissions::{Permission, Scope};
use crate::Services;

/// A recording id: the `terminal.open` event's id.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The `terminal.open` event of recording `id`, if `who` may replay it (see the module's
/// documentation). Not found and not allowed are told apart (the id is not guessable and the
/// caller asked for it).
pub async fn readable(
    svc: &Services,
    who: &Principal,
    id: &str,
) -> DomainResult<audit_events::Model> {
    match check(svc, who, id).await {
        Err(DomainError::Forbidden { reason }) => {
            // Refusals are audited, as every denial of the gate is.
            svc.audit_denied(who, "recording.replay", "recording", id, &reason)
                .await?;
            Err(DomainError::Forbidden { reason })
        }
        other => other,
    }
}

/// [`readable`] without the audit entry of a refusal: for deciding which links to show.
async fn check(svc: &Services, who: &Principal, id: &str) -> DomainResult<audit_events::Model> {
    use audit_events::Column as C;
    if !valid_id(id) {
        return Err(DomainError::not_found("recording"));
    }
    let opened = audit_events::Entity::find()
        .filter(C::Id.eq(id))
        .filter(C::Action.eq("terminal.open"))
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("recording"))?;
    // The same scope as the audit log's, read without recording a refusal: listing one's own
    // terminal events asks this for every recording on the page.
    let eff = svc.policy.effective(who.user_id).await?;
    if !eff.active {
        return Err(DomainError::forbidden("the user is deactivated"));
    }
    if !eff.org_permissions().contains(&Permission::AuditRead) {
        let audits_it = opened.project.as_ref().is_some_and(|p| {
            eff.bindings.iter().any(|b| {
                b.scope == Scope::Project
                    && b.permissions.contains(&Permission::AuditRead)
                    && b.project.as_ref() == Some(p)
            })
        });
        if !audits_it {
            return Err(DomainError::forbidden(
                "the recording's audit events belong to a project the caller may not audit",
            ));
        }
        // Made before the project of that name was: a deleted namesake's.
        let name = opened.project.clone().unwrap_or_default();
        let began = crate::audit::namesakes(&svc.db, std::slice::from_ref(&name))
            .await?
            .get(&name)
            .copied();
        if began.is_some_and(|b| opened.at < b) {
            return Err(DomainError::forbidden(
                "the recording belongs to a deleted project that bore the same name",
            ));
        }
    }
    may_see_output(svc, who, &opened).await?;
    Ok(opened)
}

/// The recording a terminal event names (`details.recording`, an id or `{id, …}`).
pub fn recording_of(action: &str, details: &serde_json::Value) -> Option<String> {
    let r = &details["recording"];
    action
        .starts_with("terminal.")
        .then(|| r.as_str().or_else(|| r["id"].as_str()).map(str::to_owned))
        .flatten()
}

/// Marks each allowed terminal event of `events` that names a recording with whether `who`
/// may replay it ([`readable`]), so that lists offer the player only where it would play.
/// No audit entry: this only decides which links to show (the player asks the gate).
pub async fn mark_replayable(
    svc: &Services,
    who: &Principal,
    events: &mut [crate::dto::AuditEventDto],
) -> DomainResult<()> {
    Replayable::default().mark(svc, who, events).await
}

/// [`mark_replayable`] for an event's detail and the events linked to it (each recording
/// decided once); the detail's recording is kept only when `who` may replay it.
pub async fn mark_detail(
    svc: &Services,
    who: &Principal,
    detail: &mut crate::dto::AuditEventDetail,
) -> DomainResult<()> {
    let mut decided = Replayable::default();
    decided
        .mark(svc, who, std::slice::from_mut(&mut detail.event))
        .await?;
    decided.mark(svc, who, &mut detail.same_request).await?;
    decided.mark(svc, who, &mut detail.same_terminal).await?;
    if let Some(id) = detail.recording.clone() {
        if !decided.may(svc, who, &id).await? {
            detail.recording = None;
        }
    }
    Ok(())
}

/// Whether `who` may replay each recording, decided once per recording for one answer.
#[derive(Default)]
struct Replayable(std::collections::HashMap<String, bool>);

impl Replayable {
    async fn may(&mut self, svc: &Services, who: &Principal, id: &str) -> DomainResult<bool> {
        if let Some(may) = self.0.get(id) {
            return Ok(*may);
        }
        let may = match check(svc, who, id).await {
            Ok(_) => true,
            Err(DomainError::Forbidden { .. } | DomainError::NotFound { .. }) => false,
            Err(other) => return Err(other),
        };
        self.0.insert(id.to_owned(), may);
        Ok(may)
    }

    async fn mark(
        &mut self,
        svc: &Services,
        who: &Principal,
        events: &mut [crate::dto::AuditEventDto],
    ) -> DomainResult<()> {
        for e in events.iter_mut() {
            if e.outcome != crate::dto::Outcome::Allowed {
                continue;
            }
            if let Some(id) = recording_of(&e.action, &e.details) {
                e.replayable = Some(self.may(svc, who, &id).await?);
            }
        }
        Ok(())
    }
}

/// Whether `who` could read, through Warden now, the secrets the recorded terminal could
/// have printed.
async fn may_see_output(
    svc: &Services,
    who: &Principal,
    opened: &audit_events::Model,
) -> DomainResult<()> {
    use crate::access::kube::{KubeIntent, KubeRules};
    let details: serde_json::Value = serde_json::from_str(&opened.details).unwrap_or_default();
    let shell = details["mode"] == "shell";
    let place = match (&opened.namespace, &opened.cluster) {
        (Some(ns), Some(c)) if !shell => format!("namespace {ns} of cluster {c}"),
        (_, Some(c)) => format!("every namespace of cluster {c}"),
        _ => "its cluster".to_owned(),
    };
    let refused = |why: String| {
        DomainError::forbidden(format!(
            "this recording shows whatever the terminal printed, secrets included: replaying it takes the right to read secrets in {place}, which you do not have ({why}); its commands are in the audit log"
        ))
    };
    // The very cluster the terminal ran on: a namesake imported since is another cluster,
    // and rights on it say nothing about this one's secrets.
    let cluster = match opened.cluster.as_deref() {
        Some(name) => crate::kubectl::kube_cluster(&svc.db, name)
            .await?
            // (Recorded before terminals named their cluster's id: the cluster of that name.)
            .filter(|c| {
                details["cluster_id"]
                    .as_str()
                    .is_none_or(|id| c.id.to_string() == id)
            }),
        None => None,
    };
    let Some(cluster) = cluster else {
        // The cluster is gone: nothing to decide against; organization-wide full access only.
        let eff = svc.policy.effective(who.user_id).await?;
        return if eff.active
            && eff
                .org_permissions()
                .contains(&Permission::KubectlFullaccess)
        {
            Ok(())
        } else {
            Err(refused(
                "the cluster was removed from Warden: only organization-wide full access".into(),
            ))
        };
    };
    let settings = crate::kubectl::effective_settings(
        &svc.db,
        Some(&who.user_id.to_string()),
        Some(&cluster.id.to_string()),
    )
    .await?;
    let rules = KubeRules {
        secrets_org_admins_only: settings.secrets_org_admins_only,
    };
    let namespace = if shell {
        // Any namespace but Warden's own, which nobody reads secrets of through Warden.
        Some("default".to_owned())
    } else {
        opened.namespace.clone()
    };
    let intent = KubeIntent {
        verb: "get".into(),
        resource: Some("secrets".into()),
        namespace,
        resource_request: true,
        secrets: true,
        ..KubeIntent::default()
    };
    let access = svc
        .policy
        .admit_kube(who.user_id, &who.email, &cluster, &intent, rules)
        .await?
        .map_err(|d| refused(d.message))?;
    if shell && !access.full {
        return Err(refused(format!(
            "Warden grants you {} on cluster {}",
            access.in_words(),
            cluster.name
        )));
    }
    Ok(())
}

/// The facts of a recording, for those who may replay it ([`readable`]).
pub async fn get(svc: &Services, who: &Principal, id: &str) -> DomainResult<RecordingDto> {
    let opened = readable(svc, who, id).await?;
    let closed = ending(svc, &opened, id).await?;
    let details: serde_json::Value = serde_json::from_str(&opened.details).unwrap_or_default();
    // Recorded by the terminal as `shell` or `exec`; a pod target without one is an exec.
    let mode = serde_json::from_value(details["mode"].clone()).unwrap_or(TerminalMode::Exec);
    let target = match (&opened.resource_kind, &opened.resource_name) {
        (Some(k), Some(n)) if k.starts_with("pods") => Some(format!("pods/{n}")),
        _ => None,
    };
    Ok(RecordingDto {
        id: opened.id,
        user: opened.actor_name,
        cluster: opened.cluster,
        namespace: opened.namespace,
        target,
        mode,
        started_at: Timestamp(opened.at).rfc3339(),
        ended: closed,
    })
}

/// How recording `id` (opened by `opened`) ended: its `terminal.close` event's reason, and the
/// SHA-256 and size of everything it stored. `None` while the terminal is open. The event is in
/// the audit log's hash chain, so the digest vouches for the chunks: a replay checks them
/// against it.
pub async fn ending(
    svc: &Services,
    opened: &audit_events::Model,
    id: &str,
) -> DomainResult<Option<RecordingEnd>> {
    use audit_events::Column as C;
    Ok(audit_events::Entity::find()
        .filter(C::Action.eq("terminal.close"))
        .filter(C::Cluster.eq(opened.cluster.clone()))
        .filter(C::Details.contains(id))
        .order_by_desc(C::Seq)
        .limit(5)
        .all(&svc.db)
        .await?
        .into_iter()
        .find_map(|m| {
            let d: serde_json::Value = serde_json::from_str(&m.details).ok()?;
            (d["recording"]["id"] == id).then(|| RecordingEnd {
                reason: m.reason.clone(),
                duration_ms: m.duration_ms,
                sha256: d["recording"]["sha256"].as_str().map(str::to_owned),
                bytes: d["recording"]["bytes"].as_u64(),
            })
        }))
}

/// For the open terminals among `streams`, the recording the caller may watch:
/// `(stream id, recording id)`. No audit entry: this only decides which links to show (the
/// player asks the gate).
pub async fn of_streams(
    svc: &Services,
    who: &Principal,
    streams: &[LiveStreamDto],
) -> DomainResult<Vec<(u64, String)>> {
    use audit_events::Column as C;
    let terminals: Vec<&LiveStreamDto> = streams
        .iter()
        .filter(|s| s.kind == crate::dto::StreamKind::Terminal)
        .collect();
    if terminals.is_empty() {
        return Ok(vec![]);
    }
    let eff = svc.policy.effective(who.user_id).await?;
    if !eff.active {
        return Ok(vec![]);
    }
    let org = eff.org_permissions().contains(&Permission::AuditRead);
    let projects: Vec<String> = eff
        .bindings
        .iter()
        .filter(|b| b.scope == Scope::Project && b.permissions.contains(&Permission::AuditRead))
        .filter_map(|b| b.project.clone())
        .collect();
    if !org && projects.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for s in terminals {
        let since = time::OffsetDateTime::parse(
            &s.started_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| Timestamp::from_offset(t).millis() - 60_000)
        .unwrap_or(0);
        let rows = audit_events::Entity::find()
            .filter(C::Action.eq("terminal.open"))
            .filter(C::Outcome.eq("allowed"))
            .filter(C::ActorId.eq(s.user_id.clone()))
            .filter(C::Cluster.eq(s.cluster.clone()))
            .filter(C::At.gte(since))
            .filter(C::Details.contains(format!("\"terminal_id\":{}", s.id)))
            .order_by_desc(C::Seq)
            .limit(5)
            .all(&svc.db)
            .await?;
        let found = rows.into_iter().find(|m| {
            serde_json::from_str::<serde_json::Value>(&m.details)
                .is_ok_and(|d| d["terminal_id"].as_u64() == Some(s.id))
        });
        if let Some(m) = found {
            let allowed = org || m.project.as_ref().is_some_and(|p| projects.contains(p));
            if allowed && may_see_output(svc, who, &m).await.is_ok() {
                out.push((s.id, m.id));
            }
        }
    }
    Ok(out)
}

/// Where recordings are kept: chunks in the database, so every replica writes and plays them
/// alike. Callers check who may read a recording before they ask for its chunks.
///
/// A terminal prints what its user reads (secrets, environment variables, keystrokes when they
/// are recorded), so each chunk is sealed with the key of secrets at rest (`WARDEN_MASTER_KEY`),
/// bound to its recording and place: a chunk moved to another recording or position does not
/// open. Chunks written before sealing (plain) still play.
pub mod store {
    use sea_orm::{
        ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    };

    use crate::entities::terminal_recording_chunks as chunks;
    use crate::secrets::Sealer;

    fn purpose(id: &str, seq: i32) -> String {
        format!("terminal recording {id} chunk {seq}")
    }

    /// Add the next chunk of a recording, sealed when there is a sealer.
    pub async fn append<C: ConnectionTrait>(
        db: &C,
        sealer: Option<&Sealer>,
        id: &str,
        seq: i32,
        started_at: i64,
        data: Vec<u8>,
    ) -> Result<(), DbErr> {
        let data = match sealer {
            Some(s) => s.seal_bytes(&purpose(id, seq), &data),
            None => data,
        };
        chunks::Entity::insert(chunks::ActiveModel::from(chunks::Model {
            recording_id: id.to_owned(),
            seq,
            data,
            started_at,
        }))
        .exec_without_returning(db)
        .await
        .map(|_| ())
    }

    /// Up to `limit` chunks after `after` (`-1` for the first), in order and opened:
    /// `(seq, data)`. A sealed chunk that does not open (another master key, or altered) is an
    /// error, never played as it is.
    pub async fn page<C: ConnectionTrait>(
        db: &C,
        sealer: Option<&Sealer>,
        id: &str,
        after: i32,
        limit: u64,
    ) -> Result<Vec<(i32, Vec<u8>)>, DbErr> {
        let rows: Vec<(i32, Vec<u8>)> = chunks::Entity::find()
            .select_only()
            .column(chunks::Column::Seq)
            .column(chunks::Column::Data)
            .filter(chunks::Column::RecordingId.eq(id))
            .filter(chunks::Column::Seq.gt(after))
            .order_by_asc(chunks::Column::Seq)
            .limit(limit)
            .into_tuple()
            .all(db)
            .await?;
        // A plain chunk plays only in a recording made before chunks were sealed (its first
        // chunk plain too): one written into a sealed recording by hand is refused.
        if let (Some(_), Some(plain)) = (
            sealer,
            rows.iter().find(|(_, d)| !Sealer::is_sealed_bytes(d)),
        ) {
            let first_sealed = match rows.first() {
                Some((0, d)) => Sealer::is_sealed_bytes(d),
                _ => chunks::Entity::find()
                    .select_only()
                    .column(chunks::Column::Data)
                    .filter(chunks::Column::RecordingId.eq(id))
                    .filter(chunks::Column::Seq.eq(0))
                    .into_tuple::<Vec<u8>>()
                    .one(db)
                    .await?
                    .is_some_and(|d| Sealer::is_sealed_bytes(&d)),
            };
            if first_sealed {
                return Err(DbErr::Custom(format!(
                    "recording {id}, chunk {}: plain in a sealed recording (altered)",
                    plain.0
                )));
            }
        }
        rows.into_iter()
            .map(|(seq, data)| {
                if !Sealer::is_sealed_bytes(&data) {
                    return Ok((seq, data));
                }
                let opened = sealer
                    .ok_or(crate::secrets::SealError::Undecryptable)
                    .and_then(|s| s.open_bytes(&purpose(id, seq), &data))
                    .map_err(|e| DbErr::Custom(format!("recording {id}, chunk {seq}: {e}")))?;
                Ok((seq, opened))
            })
            .collect()
    }

    /// Remove the recordings that began before `cutoff` (ms): audit retention, with the events
    /// that name them.
    pub async fn delete_started_before<C: ConnectionTrait>(
        db: &C,
        cutoff: i64,
    ) -> Result<u64, DbErr> {
        Ok(chunks::Entity::delete_many()
            .filter(chunks::Column::StartedAt.lt(cutoff))
            .exec(db)
            .await?
            .rows_affected)
    }
}
