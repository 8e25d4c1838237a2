//! The audit export (`GET /api/v1/audit/export`): the events of a filter within the reader's
//! scope, newest first, read page by page with a keyset cursor on `seq` and encoded as CSV or
//! NDJSON one page at a time, so that an export of any size holds one page in memory.
//!
//! The filter (and a preset range's end) is fixed when the export starts; the keyset cursor
//! (`seq <` the last row sent) keeps events committed meanwhile out and sends every matching
//! row exactly once, in order.

use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{filter, AuditScope};
use crate::clock::Timestamp;
use crate::entities::audit_events;
use crate::error::DomainResult;

/// Rows read (and encoded) at a time.
pub const EXPORT_PAGE: u64 = 2_000;

/// The CSV export's header; each row has these cells, in this order.
pub const CSV_HEADER: &str = "seq,id,time,kind,actor,session_type,project,cluster,namespace,action,resource_kind,resource_name,outcome,reason,method,path,status,source_ip,request_id,duration_ms\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

/// An export under way: call [`Export::next_chunk`] until it answers `None`.
pub struct Export {
    cond: Condition,
    format: ExportFormat,
    /// Rows still to send (`limit`), if limited.
    remaining: Option<u64>,
    /// The keyset cursor: the `seq` of the last row sent.
    before: Option<i64>,
    page: u64,
    header_sent: bool,
    done: bool,
}

impl Export {
    /// Check the filter `q` (an invalid one is refused now, with the field at fault) and
    /// prepare the export of its events within `scope`; `q.limit`, when given, is how many of
    /// the newest to send (no other cap); `q.cursor` is ignored.
    pub fn start(
        db: &DatabaseConnection,
        q: &crate::dto::AuditQuery,
        scope: &AuditScope,
        format: ExportFormat,
        now: Timestamp,
    ) -> DomainResult<Self> {
        let cond = filter(
            sea_orm::ConnectionTrait::get_database_backend(db),
            q,
            scope,
            now,
        )?;
        Ok(Self {
            cond,
            format,
            remaining: q.limit,
            before: None,
            page: EXPORT_PAGE,
            header_sent: false,
            done: false,
        })
    }

    /// Read this many rows at a time (tests).
    pub fn with_page(mut self, rows: u64) -> Self {
        self.page = rows.max(1);
        self
    }

    /// The next piece of the body (the CSV header comes with the first page), or `None` when
    /// every row was sent.
    pub async fn next_chunk(&mut self, db: &DatabaseConnection) -> DomainResult<Option<Vec<u8>>> {
        use audit_events::Column as C;
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        if !self.header_sent {
            self.header_sent = true;
            if self.format == ExportFormat::Csv {
                out.extend_from_slice(CSV_HEADER.as_bytes());
            }
        }
        let want = self.remaining.map_or(self.page, |r| r.min(self.page));
        if want == 0 {
            self.done = true;
            return Ok((!out.is_empty()).then_some(out));
        }
        let mut cond = self.cond.clone();
        if let Some(b) = self.before {
            cond = cond.add(C::Seq.lt(b));
        }
        let select = audit_events::Entity::find()
            .filter(cond)
            .order_by_desc(C::Seq)
            .limit(want);
        let (n, last) = match self.format {
            // Only the CSV's columns: the details and the hashes, most of a row's bytes, are
            // not read.
            ExportFormat::Csv => {
                use sea_orm::QueryTrait;
                let stmt = select
                    .select_only()
                    .columns(CSV_COLUMNS)
                    .build(sea_orm::ConnectionTrait::get_database_backend(db));
                let rows = sea_orm::ConnectionTrait::query_all(db, stmt).await?;
                out.reserve(rows.len() * 300);
                let mut last = None;
                for r in &rows {
                    last = Some(csv_row(&mut out, r)?);
                }
                (rows.len(), last)
            }
            // Every column but the chain's hashes (the API's event does not show them).
            ExportFormat::Ndjson => {
                let rows = select
                    .select_only()
                    .columns(NdjsonRow::COLUMNS)
                    .into_model::<NdjsonRow>()
                    .all(db)
                    .await?;
                out.reserve(rows.len() * 700);
                for NdjsonRow(m) in &rows {
                    ndjson_row(&mut out, m);
                }
                (rows.len(), rows.last().map(|r| r.0.seq))
            }
        };
        if (n as u64) < want {
            self.done = true;
        }
        if let Some(r) = &mut self.remaining {
            *r -= n as u64;
        }
        if let Some(last) = last {
            self.before = Some(last);
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

/// One CSV cell, quoted when needed; a cell that a spreadsheet would read as a formula (`=`,
/// `+`, `-`, `@`, tab or carriage return first: OWASP's list) is neutralised with a leading `'`.
pub fn csv_cell(out: &mut Vec<u8>, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = s.contains([',', '"', '\n', '\r']);
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    if quote {
        for (i, part) in s.split('"').enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(part.as_bytes());
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn csv_opt(out: &mut Vec<u8>, s: Option<&str>) {
    if let Some(s) = s {
        csv_cell(out, s);
    }
}

/// The columns the CSV shows, in its order.
const CSV_COLUMNS: [audit_events::Column; 20] = {
    use audit_events::Column as C;
    [
        C::Seq,
        C::Id,
        C::At,
        C::Kind,
        C::ActorName,
        C::SessionType,
        C::Project,
        C::Cluster,
        C::Namespace,
        C::Action,
        C::ResourceKind,
        C::ResourceName,
        C::Outcome,
        C::Reason,
        C::HttpMethod,
        C::Path,
        C::Status,
        C::SourceIp,
        C::RequestId,
        C::DurationMs,
    ]
};

/// One CSV line from a row of [`CSV_COLUMNS`]; answers its `seq`. The cells are read by
/// position as text borrowed from the row (no `String` per cell, no lookup by column name):
/// decoding was most of an export's time, and the export keeps up with the database this way.
fn csv_row(out: &mut Vec<u8>, row: &sea_orm::QueryResult) -> DomainResult<i64> {
    let read = if let Some(r) = row.try_as_pg_row() {
        csv_cells(out, r)
    } else if let Some(r) = row.try_as_sqlite_row() {
        csv_cells(out, r)
    } else {
        return Err(crate::DomainError::Internal(
            "the audit export reads PostgreSQL and SQLite rows only".into(),
        ));
    };
    read.map_err(|e| crate::DomainError::Internal(format!("reading an audit row: {e}")))
}

fn csv_cells<'r, R>(out: &mut Vec<u8>, r: &'r R) -> Result<i64, sea_orm::sqlx::Error>
where
    R: sea_orm::sqlx::Row,
    usize: sea_orm::sqlx::ColumnIndex<R>,
    &'r str: sea_orm::sqlx::Decode<'r, R::Database>,
    i64: sea_orm::sqlx::Decode<'r, R::Database>,
    i32: sea_orm::sqlx::Decode<'r, R::Database>,
{
    use std::io::Write;
    let text = |i: usize| r.try_get_unchecked::<Option<&'r str>, _>(i);
    let seq: i64 = r.try_get_unchecked(0)?;
    let at: i64 = r.try_get_unchecked(2)?;
    let _ = write!(out, "{seq},");
    csv_opt(out, text(1)?);
    out.push(b',');
    csv_cell(out, &Timestamp(at).rfc3339());
    // kind … outcome, reason, method, path
    for i in 3..=15 {
        out.push(b',');
        csv_opt(out, text(i)?);
    }
    out.push(b',');
    if let Some(status) = r.try_get_unchecked::<Option<i32>, _>(16)? {
        let _ = write!(out, "{status}");
    }
    for i in 17..=18 {
        out.push(b',');
        csv_opt(out, text(i)?);
    }
    out.push(b',');
    if let Some(d) = r.try_get_unchecked::<Option<i64>, _>(19)? {
        let _ = write!(out, "{d}");
    }
    out.push(b'\n');
    Ok(seq)
}

/// An event for the NDJSON export: every column but the chain's hashes (left empty), read by
/// position like the CSV (see [`csv_row`]).
struct NdjsonRow(audit_events::Model);

impl NdjsonRow {
    const COLUMNS: [audit_events::Column; 23] = {
        use audit_events::Column as C;
        [
            C::Seq,
            C::Id,
            C::At,
            C::Kind,
            C::ActorId,
            C::ActorName,
            C::SessionType,
            C::Project,
            C::Cluster,
            C::Namespace,
            C::Action,
            C::ResourceKind,
            C::ResourceName,
            C::Outcome,
            C::Reason,
            C::HttpMethod,
            C::Path,
            C::Status,
            C::SourceIp,
            C::UserAgent,
            C::RequestId,
            C::DurationMs,
            C::Details,
        ]
    };
}

impl sea_orm::FromQueryResult for NdjsonRow {
    fn from_query_result(r: &sea_orm::QueryResult, _pre: &str) -> Result<Self, sea_orm::DbErr> {
        Ok(Self(audit_events::Model {
            seq: r.try_get_by_index(0)?,
            id: r.try_get_by_index(1)?,
            at: r.try_get_by_index(2)?,
            kind: r.try_get_by_index(3)?,
            actor_id: r.try_get_by_index(4)?,
            actor_name: r.try_get_by_index(5)?,
            session_type: r.try_get_by_index(6)?,
            project: r.try_get_by_index(7)?,
            cluster: r.try_get_by_index(8)?,
            namespace: r.try_get_by_index(9)?,
            action: r.try_get_by_index(10)?,
            resource_kind: r.try_get_by_index(11)?,
            resource_name: r.try_get_by_index(12)?,
            outcome: r.try_get_by_index(13)?,
            reason: r.try_get_by_index(14)?,
            http_method: r.try_get_by_index(15)?,
            path: r.try_get_by_index(16)?,
            status: r.try_get_by_index(17)?,
            source_ip: r.try_get_by_index(18)?,
            user_agent: r.try_get_by_index(19)?,
            request_id: r.try_get_by_index(20)?,
            duration_ms: r.try_get_by_index(21)?,
            details: r.try_get_by_index(22)?,
            prev_hash: String::new(),
            hash: String::new(),
        }))
    }
}

/// One event as a line of JSON: the same object as the API's `AuditEventDto`, written field by
/// field (no intermediate value). The stored details are compact JSON already
/// (`serde_json::Value::to_string`), copied as they are once checked to be one JSON value on
/// one line; anything else goes through a parse, like the API's conversion (`null` when not
/// JSON).
fn ndjson_row(out: &mut Vec<u8>, m: &audit_events::Model) {
    use std::io::Write;
    fn s(out: &mut Vec<u8>, key: &str, v: &str) {
        out.push(b',');
        out.extend_from_slice(key.as_bytes());
        let _ = serde_json::to_writer(&mut *out, v);
    }
    fn o(out: &mut Vec<u8>, key: &str, v: &Option<String>) {
        match v {
            Some(v) => s(out, key, v),
            None => {
                out.push(b',');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"null");
            }
        }
    }
    fn n<T: std::fmt::Display>(out: &mut Vec<u8>, key: &str, v: Option<T>) {
        out.push(b',');
        out.extend_from_slice(key.as_bytes());
        match v {
            Some(v) => {
                let _ = write!(out, "{v}");
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    let _ = write!(out, "{{\"seq\":{}", m.seq);
    s(out, "\"id\":", &m.id);
    s(out, "\"time\":", &Timestamp(m.at).rfc3339());
    s(out, "\"kind\":", &m.kind);
    o(out, "\"actor_id\":", &m.actor_id);
    s(out, "\"actor\":", &m.actor_name);
    s(out, "\"session_type\":", &m.session_type);
    o(out, "\"project\":", &m.project);
    o(out, "\"cluster\":", &m.cluster);
    o(out, "\"namespace\":", &m.namespace);
    s(out, "\"action\":", &m.action);
    o(out, "\"resource_kind\":", &m.resource_kind);
    o(out, "\"resource_name\":", &m.resource_name);
    s(out, "\"outcome\":", &m.outcome);
    o(out, "\"reason\":", &m.reason);
    o(out, "\"method\":", &m.http_method);
    o(out, "\"path\":", &m.path);
    n(out, "\"status\":", m.status);
    o(out, "\"source_ip\":", &m.source_ip);
    o(out, "\"user_agent\":", &m.user_agent);
    o(out, "\"request_id\":", &m.request_id);
    n(out, "\"duration_ms\":", m.duration_ms);
    out.extend_from_slice(b",\"details\":");
    let d = m.details.as_str();
    let compact = !d.contains(['\n', '\r'])
        && serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok()
        && d.trim() == d;
    if compact && !d.is_empty() {
        out.extend_from_slice(d.as_bytes());
    } else {
        let v: serde_json::Value = serde_json::from_str(d).unwrap_or(serde_json::Value::Null);
        let _ = serde_json::to_writer(&mut *out, &v);
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(s: &str) -> String {
        let mut v = Vec::new();
        csv_cell(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("=1+2"), "'=1+2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("-x,y"), "\"'-x,y\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("a\nb"), "\"a\nb\"");
        assert_eq!(cell("\t=1+2"), "'\t=1+2");
        assert_eq!(cell("\r=1+2"), "\"'\r=1+2\"");
        assert_eq!(cell(""), "");
    }

    fn model(details: &str) -> audit_events::Model {
        audit_events::Model {
            seq: 42,
            id: "ev\"1".into(),
            at: 1_700_000_000_123,
            kind: "kube_api".into(),
            actor_id: None,
            actor_name: "alice@example.com".into(),
            session_type: "cli".into(),
            project: Some("payments".into()),
            cluster: None,
            namespace: Some("ledger".into()),
            action: "kube.get".into(),
            resource_kind: Some("pods".into()),
            resource_name: Some("api-\u{1}x".into()),
            outcome: "allowed".into(),
            reason: None,
            http_method: Some("GET".into()),
            path: Some("/p".into()),
            status: Some(200),
            source_ip: None,
            user_agent: Some("kubectl".into()),
            request_id: None,
            duration_ms: Some(7),
            details: details.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The hand-written NDJSON line is exactly the API's JSON of the same event.
    #[test]
    fn ndjson_rows_are_the_api_json() {
        for details in [
            r#"{"a":1,"b":[true,null],"c":"x\ny"}"#,
            "{}",
            "not json",
            "{\n\"a\": 1}",
            "",
        ] {
            let m = model(details);
            let mut line = Vec::new();
            ndjson_row(&mut line, &m);
            let line = String::from_utf8(line).unwrap();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line}"
            );
            let want = serde_json::to_string(&super::super::to_dto(m)).unwrap();
            assert_eq!(line.trim_end(), want);
        }
    }
}
