//! The SIEM stream's data side: committed audit rows read in chain order after a persisted
//! cursor, each shaped like a Kubernetes `audit.k8s.io/v1` `Event`.
//!
//! Rows are read by `seq`. Appends hold the chain lock until they commit and take their `seq`
//! inside it, so a row with a lower `seq` is never committed after a higher one is visible: a
//! reader that resumes after the last `seq` it delivered sees no gaps (sequence numbers a
//! rolled-back append used are simply never filled). The transport (stdout, file, webhook)
//! lives in the server.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{json, Map, Value};

use crate::clock::Timestamp;
use crate::entities::{audit_events, siem_cursors};
use crate::error::DomainResult;

/// The one stream's cursor name.
pub const STREAM: &str = "siem";

/// Up to `limit` committed rows after `seq`, in chain order.
pub async fn rows_after<C: ConnectionTrait>(
    db: &C,
    seq: i64,
    limit: u64,
) -> DomainResult<Vec<audit_events::Model>> {
    Ok(audit_events::Entity::find()
        .filter(audit_events::Column::Seq.gt(seq))
        .order_by_asc(audit_events::Column::Seq)
        .limit(limit)
        .all(db)
        .await?)
}

/// The last `seq` the stream delivered; a stream seen for the first time starts where the
/// retained chain starts (the newest retention checkpoint, or the beginning).
pub async fn load_cursor<C: ConnectionTrait>(db: &C, now: Timestamp) -> DomainResult<i64> {
    if let Some(c) = siem_cursors::Entity::find_by_id(STREAM.to_owned())
        .one(db)
        .await?
    {
        return Ok(c.seq);
    }
    let start = super::retention::checkpoints(db)
        .await?
        .last()
        .map_or(0, |c| c.seq);
    save_cursor(db, start, now).await?;
    Ok(start)
}

/// Record that everything up to `seq` was delivered.
pub async fn save_cursor<C: ConnectionTrait>(db: &C, seq: i64, now: Timestamp) -> DomainResult<()> {
    siem_cursors::Entity::insert(siem_cursors::ActiveModel::from(siem_cursors::Model {
        name: STREAM.to_owned(),
        seq,
        updated_at: now.millis(),
    }))
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(siem_cursors::Column::Name)
            .update_columns([siem_cursors::Column::Seq, siem_cursors::Column::UpdatedAt])
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// Rows retention deleted before the stream delivered them: when a checkpoint lies beyond
/// `cursor`, the new cursor (the newest checkpoint) and how many rows were lost at most
/// (exact for whole batches past the cursor; a batch the cursor falls inside counts the rows
/// its sequence numbers leave room for).
pub async fn lost_to_retention<C: ConnectionTrait>(
    db: &C,
    cursor: i64,
) -> DomainResult<Option<(i64, u64)>> {
    use crate::entities::audit_checkpoints::{Column, Entity};
    let after = Entity::find()
        .filter(Column::Seq.gt(cursor))
        .order_by_asc(Column::Seq)
        .all(db)
        .await?;
    let Some(newest) = after.last().map(|c| c.seq) else {
        return Ok(None);
    };
    let mut prev = Entity::find()
        .filter(Column::Seq.lte(cursor))
        .order_by_desc(Column::Seq)
        .one(db)
        .await?
        .map_or(0, |c| c.seq);
    let mut lost = 0u64;
    for c in &after {
        lost += if prev >= cursor {
            c.deleted.max(0) as u64
        } else {
            c.deleted.min(c.seq - cursor).max(0) as u64
        };
        prev = c.seq;
    }
    Ok(Some((newest, lost)))
}

fn put(map: &mut Map<String, Value>, key: &str, v: Option<&str>) {
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        map.insert(key.to_owned(), Value::String(v.to_owned()));
    }
}

fn rfc3339_micro(ms: i64) -> String {
    let t = Timestamp(ms).to_offset();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// One audit row as a Kubernetes `audit.k8s.io/v1` `Event` (level `Metadata`, stage
/// `ResponseComplete`). Kubernetes API events fill `verb`, `objectRef` and `responseStatus` as
/// the API server would; every event carries Warden's own fields as `warden.dev/*`
/// annotations (and the console action of events that are not Kubernetes requests). The
/// row's `details` (before/after of administrative changes) stay in the database and its
/// export: only the terminal a request came from is taken from them. No column holds a secret.
pub fn to_k8s_event(m: &audit_events::Model) -> Value {
    let details: Value = serde_json::from_str(&m.details).unwrap_or(Value::Null);
    let detail = |k: &str| details.get(k).and_then(Value::as_str).map(str::to_owned);
    let kube = m.kind == super::AuditKind::KubeApi.as_str();
    let mut ev = Map::new();
    ev.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
    ev.insert("kind".into(), json!("Event"));
    ev.insert("level".into(), json!("Metadata"));
    ev.insert("auditID".into(), json!(m.id));
    ev.insert("stage".into(), json!("ResponseComplete"));
    put(&mut ev, "requestURI", m.path.as_deref());
    if kube {
        let verb = detail("verb").or_else(|| m.action.strip_prefix("kube.").map(str::to_owned));
        put(&mut ev, "verb", verb.as_deref());
    }
    let mut user = Map::new();
    user.insert("username".into(), json!(m.actor_name));
    put(&mut user, "uid", m.actor_id.as_deref());
    ev.insert("user".into(), Value::Object(user));
    if let Some(ip) = &m.source_ip {
        ev.insert("sourceIPs".into(), json!([ip]));
    }
    put(&mut ev, "userAgent", m.user_agent.as_deref());
    if kube && (m.resource_kind.is_some() || m.namespace.is_some()) {
        let (resource, subresource) = match m.resource_kind.as_deref() {
            Some(k) => match k.split_once('/') {
                Some((r, s)) => (Some(r.to_owned()), Some(s.to_owned())),
                None => (Some(k.to_owned()), None),
            },
            None => (None, None),
        };
        let mut obj = Map::new();
        put(
            &mut obj,
            "resource",
            detail("resource").or(resource).as_deref(),
        );
        put(&mut obj, "namespace", m.namespace.as_deref());
        put(&mut obj, "name", m.resource_name.as_deref());
        put(&mut obj, "apiGroup", detail("api_group").as_deref());
        put(&mut obj, "apiVersion", detail("api_version").as_deref());
        put(
            &mut obj,
            "subresource",
            detail("subresource").or(subresource).as_deref(),
        );
        ev.insert("objectRef".into(), Value::Object(obj));
    }
    if let Some(code) = m.status {
        ev.insert("responseStatus".into(), json!({ "code": code }));
    }
    ev.insert(
        "requestReceivedTimestamp".into(),
        json!(rfc3339_micro(m.at - m.duration_ms.unwrap_or(0).max(0))),
    );
    ev.insert("stageTimestamp".into(), json!(rfc3339_micro(m.at)));
    let mut ann = Map::new();
    put(&mut ann, "warden.dev/seq", Some(&m.seq.to_string()));
    put(&mut ann, "warden.dev/kind", Some(&m.kind));
    put(&mut ann, "warden.dev/outcome", Some(&m.outcome));
    put(&mut ann, "warden.dev/session-type", Some(&m.session_type));
    put(&mut ann, "warden.dev/cluster", m.cluster.as_deref());
    put(&mut ann, "warden.dev/project", m.project.as_deref());
    put(&mut ann, "warden.dev/reason", m.reason.as_deref());
    put(&mut ann, "warden.dev/request-id", m.request_id.as_deref());
    put(
        &mut ann,
        "warden.dev/terminal-id",
        detail("terminal_id").as_deref(),
    );
    if kube {
        let decision = match m.outcome.as_str() {
            "allowed" => Some("allow"),
            "denied" => Some("forbid"),
            _ => None,
        };
        put(&mut ann, "authorization.k8s.io/decision", decision);
        put(&mut ann, "authorization.k8s.io/reason", m.reason.as_deref());
    } else {
        put(&mut ann, "warden.dev/action", Some(&m.action));
        put(&mut ann, "warden.dev/method", m.http_method.as_deref());
        put(
            &mut ann,
            "warden.dev/resource-kind",
            m.resource_kind.as_deref(),
        );
        put(
            &mut ann,
            "warden.dev/resource-name",
            m.resource_name.as_deref(),
        );
        put(&mut ann, "warden.dev/namespace", m.namespace.as_deref());
    }
    ev.insert("annotations".into(), Value::Object(ann));
    Value::Object(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str) -> audit_events::Model {
        audit_events::Model {
            seq: 42,
            id: "0b3c6a4e-0000-4000-8000-000000000001".into(),
            at: 1_764_522_000_123,
            kind: kind.into(),
            actor_id: Some("u-1".into()),
            actor_name: "sally@example.com".into(),
            session_type: "cli".into(),
            project: Some("shop".into()),
            cluster: Some("production".into()),
            namespace: Some("apple".into()),
            action: "kube.create".into(),
            resource_kind: Some("pods/exec".into()),
            resource_name: Some("web-0".into()),
            outcome: "denied".into(),
            reason: Some("no binding allows pods/exec".into()),
            http_method: Some("POST".into()),
            path: Some("/clusters/production/api/v1/namespaces/apple/pods/web-0/exec?command=sh".into()),
            status: Some(403),
            source_ip: Some("10.0.0.7".into()),
            user_agent: Some("kubectl/v1.31".into()),
            request_id: Some("0b3c6a4e-0000-4000-8000-000000000001".into()),
            duration_ms: Some(12),
            details: r#"{"verb":"create","api_group":"","api_version":"v1","resource":"pods","subresource":"exec","serial":"ab12"}"#.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_kubernetes_request_maps_to_verb_object_ref_and_response_status() {
        let ev = to_k8s_event(&row("kube_api"));
        assert_eq!(ev["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(ev["kind"], "Event");
        assert_eq!(ev["level"], "Metadata");
        assert_eq!(ev["stage"], "ResponseComplete");
        assert_eq!(ev["auditID"], "0b3c6a4e-0000-4000-8000-000000000001");
        assert_eq!(ev["verb"], "create");
        assert_eq!(ev["user"]["username"], "sally@example.com");
        assert_eq!(ev["sourceIPs"], json!(["10.0.0.7"]));
        assert_eq!(
            ev["objectRef"],
            json!({"resource": "pods", "subresource": "exec", "namespace": "apple", "name": "web-0", "apiVersion": "v1"})
        );
        assert_eq!(ev["responseStatus"]["code"], 403);
        assert_eq!(ev["stageTimestamp"], "2025-11-30T17:00:00.123000Z");
        assert_eq!(
            ev["requestReceivedTimestamp"],
            "2025-11-30T17:00:00.111000Z"
        );
        let a = &ev["annotations"];
        assert_eq!(a["warden.dev/cluster"], "production");
        assert_eq!(a["warden.dev/project"], "shop");
        assert_eq!(a["warden.dev/outcome"], "denied");
        assert_eq!(a["warden.dev/seq"], "42");
        assert_eq!(a["authorization.k8s.io/decision"], "forbid");
        assert!(a.get("warden.dev/action").is_none());
        // The certificate serial stays in the database.
        assert!(!ev.to_string().contains("ab12"));
    }

    #[test]
    fn a_console_event_carries_its_action_in_annotations() {
        let mut m = row("console");
        m.action = "settings.update".into();
        m.resource_kind = Some("settings".into());
        m.resource_name = Some("organization".into());
        m.details = r#"{"before":{"x":1},"after":{"x":2}}"#.into();
        let ev = to_k8s_event(&m);
        assert!(ev.get("verb").is_none());
        assert!(ev.get("objectRef").is_none());
        assert_eq!(ev["annotations"]["warden.dev/action"], "settings.update");
        assert_eq!(ev["annotations"]["warden.dev/resource-kind"], "settings");
        assert!(!ev.to_string().contains("before"));
    }
}
