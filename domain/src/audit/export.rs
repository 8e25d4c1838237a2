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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }

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
    /// The filter (for its time range's `seq` range, read at the first page: `window`).
    query: crate::dto::AuditQuery,
    now: Timestamp,
    window: Option<Condition>,
    format: ExportFormat,
    /// The reader's scope, when it is not everything: details are shown as it sees them.
    redact: Option<AuditScope>,
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
            query: q.clone(),
            now,
            window: None,
            format,
            redact: (!scope.all).then(|| scope.clone()),
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
        if self.window.is_none() {
            // Once, at the first page: the time range as a range of `seq` too.
            match super::seq_bounds(db, &self.query, self.now).await? {
                Some(w) => self.window = Some(w),
                None => {
                    self.done = true;
                    return Ok((!out.is_empty()).then_some(out));
                }
            }
        }
        let mut cond = self.cond.clone();
        if let Some(w) = &self.window {
            cond = cond.add(w.clone());
        }
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
                out.reserve(self.page as usize * 300);
                each_row(db, select, &CSV_COLUMNS, |row| csv_row(&mut out, row)).await?
            }
            // Every column but the chain's hashes (the API's event does not show them).
            ExportFormat::Ndjson => {
                out.reserve(self.page as usize * 700);
                let redact = self.redact.as_ref();
                each_row(db, select, &NDJSON_COLUMNS, |row| {
                    ndjson_row(&mut out, row, redact)
                })
                .await?
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
    // Control characters (an escape sequence typed as a sign-in name) are written out, so a
    // file shown in a terminal shows text; line breaks stay (quoted).
    let s = &*super::printable(s, true);
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

/// One CSV line from a row of [`CSV_COLUMNS`].
fn csv_row(out: &mut Vec<u8>, row: &[Cell<'_>]) -> DomainResult<()> {
    use std::io::Write;
    let seq = row[0].int()?.unwrap_or_default();
    let at = row[2].int()?.unwrap_or_default();
    let _ = write!(out, "{seq},");
    csv_opt(out, row[1].text()?);
    out.push(b',');
    csv_cell(out, &Timestamp(at).rfc3339());
    // kind … outcome, reason, method, path
    for cell in &row[3..=15] {
        out.push(b',');
        csv_opt(out, cell.text()?);
    }
    out.push(b',');
    if let Some(status) = row[16].int()? {
        let _ = write!(out, "{status}");
    }
    for cell in &row[17..=18] {
        out.push(b',');
        csv_opt(out, cell.text()?);
    }
    out.push(b',');
    if let Some(d) = row[19].int()? {
        let _ = write!(out, "{d}");
    }
    out.push(b'\n');
    Ok(())
}

/// Reads a page of `columns` and gives each row's cells to `each`, newest first; answers how
/// many rows there were and the smallest `seq` among them (where the next page starts).
///
/// The cells are read by position, as text borrowed from the database's buffers (no `String`
/// per cell, no lookup by name). How the page is read depends on the database, both measured
/// (the audit bench's export, 200,000 events, CSV / NDJSON):
/// - PostgreSQL: row by row, each row one buffer of the protocol (65 / 85 MB/s; the same page
///   as one `json_agg` value is slower, 36 / 65 MB/s: the server's JSON building costs more
///   than the rows).
/// - SQLite: the page as one value, the database's JSON array of the rows, parsed in place
///   (62 / 107 MB/s, against 28 / 45 MB/s row by row: SQLite's driver copies each cell into an
///   allocation of its own and hands each row from its worker thread to the async side, waking
///   it, and a profile put most of the export's time there).
async fn each_row(
    db: &DatabaseConnection,
    select: sea_orm::Select<audit_events::Entity>,
    columns: &[audit_events::Column],
    mut each: impl FnMut(&[Cell<'_>]) -> DomainResult<()>,
) -> DomainResult<(usize, Option<i64>)> {
    use sea_orm::{ConnectionTrait, DbBackend, QueryTrait};
    let backend = db.get_database_backend();
    if backend == DbBackend::Sqlite {
        let page = read_json_page(db, select, columns).await?;
        let cells = page.cells()?;
        for row in cells.chunks_exact(page.width) {
            each(row)?;
        }
        return rows_and_last(&cells, page.width);
    }
    let stmt = select
        .select_only()
        .columns(columns.iter().copied())
        .build(backend);
    let rows = db.query_all_raw(stmt).await?;
    let mut cells = Vec::with_capacity(columns.len());
    let mut last = None::<i64>;
    for r in &rows {
        cells.clear();
        let Some(pg) = r.try_as_pg_row() else {
            return Err(crate::DomainError::Internal(
                "the audit export reads PostgreSQL and SQLite only".into(),
            ));
        };
        pg_cells(pg, columns, &mut cells)
            .map_err(|e| crate::DomainError::Internal(format!("reading an audit row: {e}")))?;
        if let Some(seq) = cells[0].int()? {
            last = Some(last.map_or(seq, |l| l.min(seq)));
        }
        each(&cells)?;
    }
    Ok((rows.len(), last))
}

/// A PostgreSQL row's cells, borrowed from its buffer (each column decoded as its SQL type).
fn pg_cells<'r>(
    row: &'r sea_orm::sqlx::postgres::PgRow,
    columns: &[audit_events::Column],
    cells: &mut Vec<Cell<'r>>,
) -> Result<(), sea_orm::sqlx::Error> {
    use audit_events::Column as C;
    use sea_orm::sqlx::Row;
    for (i, c) in columns.iter().enumerate() {
        cells.push(match c {
            C::Seq | C::At | C::DurationMs => row
                .try_get_unchecked::<Option<i64>, _>(i)?
                .map_or(Cell::Null, Cell::Int),
            C::Status => row
                .try_get_unchecked::<Option<i32>, _>(i)?
                .map_or(Cell::Null, |n| Cell::Int(n.into())),
            _ => row
                .try_get_unchecked::<Option<&'r str>, _>(i)?
                .map_or(Cell::Null, |t| Cell::Text(t.into())),
        });
    }
    Ok(())
}

/// A page of rows as one value (SQLite, see [`each_row`]): the database builds a JSON array
/// of the rows, each an array of `columns`, newest first.
async fn read_json_page(
    db: &DatabaseConnection,
    select: sea_orm::Select<audit_events::Entity>,
    columns: &[audit_events::Column],
) -> DomainResult<JsonPage> {
    use sea_orm::sea_query::{Alias, Expr, Query};
    use sea_orm::{ConnectionTrait, Iden, QueryTrait};
    let backend = db.get_database_backend();
    let list = columns
        .iter()
        .map(|c| format!("\"{}\"", c.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    // Ordered inside the aggregate too: an aggregate's input order is not the subquery's by
    // any standard (SQLite has taken `ORDER BY` in aggregates since 3.44).
    let agg = format!("json_group_array(json_array({list}) ORDER BY \"seq\" DESC)");
    let inner = select
        .select_only()
        .columns(columns.iter().copied())
        .into_query();
    let outer = Query::select()
        .expr(Expr::cust(agg))
        .from_subquery(inner, Alias::new("page"))
        .to_owned();
    let text: Option<String> = match db.query_one_raw(backend.build(&outer)).await? {
        Some(r) => r.try_get_by_index(0)?,
        None => None,
    };
    Ok(JsonPage {
        text: text.unwrap_or_default(),
        width: columns.len(),
    })
}

/// A page's JSON text: an array of rows, each an array of `width` cells.
struct JsonPage {
    text: String,
    width: usize,
}

impl JsonPage {
    /// Its cells, `width` a row (check with `chunks_exact`), borrowing from the text.
    fn cells(&self) -> DomainResult<Vec<Cell<'_>>> {
        use serde::de::DeserializeSeed;
        let mut cells = Vec::new();
        if self.text.is_empty() {
            return Ok(cells);
        }
        let mut de = serde_json::Deserializer::from_str(&self.text);
        Rows {
            cells: &mut cells,
            width: self.width,
            outer: true,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| {
            crate::DomainError::Internal(format!("reading a page of audit events: {e}"))
        })?;
        Ok(cells)
    }
}

/// The rows and the smallest `seq` among them (where the next page starts).
fn rows_and_last(cells: &[Cell<'_>], width: usize) -> DomainResult<(usize, Option<i64>)> {
    let mut last = None::<i64>;
    for row in cells.chunks_exact(width) {
        if let Some(seq) = row[0].int()? {
            last = Some(last.map_or(seq, |l| l.min(seq)));
        }
    }
    Ok((cells.len() / width, last))
}

/// One cell of a row: SQL `NULL`, an integer or a text (borrowed unless it had escapes).
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Int(i64),
    Text(std::borrow::Cow<'a, str>),
}

impl<'a> Cell<'a> {
    fn text(&self) -> DomainResult<Option<&str>> {
        match self {
            Cell::Null => Ok(None),
            Cell::Text(t) => Ok(Some(t)),
            Cell::Int(_) => Err(Self::unexpected("a text")),
        }
    }

    fn int(&self) -> DomainResult<Option<i64>> {
        match self {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            Cell::Text(_) => Err(Self::unexpected("an integer")),
        }
    }

    fn unexpected(what: &str) -> crate::DomainError {
        crate::DomainError::Internal(format!("an audit column is not {what}"))
    }
}

impl<'de> serde::Deserialize<'de> for Cell<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null, an integer or a string")
            }
            fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_none<E>(self) -> Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
                Ok(Cell::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
                i64::try_from(v).map(Cell::Int).map_err(E::custom)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The page's array of rows (`outer`), each row's cells appended to one vector (no
/// allocation a row); a row (not `outer`) has exactly `width` cells.
struct Rows<'v, 'a> {
    cells: &'v mut Vec<Cell<'a>>,
    width: usize,
    outer: bool,
}

impl<'de, 'v> serde::de::DeserializeSeed<'de> for Rows<'v, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'v> serde::de::Visitor<'de> for Rows<'v, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.outer {
            f.write_str("an array of rows")
        } else {
            write!(f, "a row of {} cells", self.width)
        }
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.outer {
            while seq
                .next_element_seed(Rows {
                    cells: &mut *self.cells,
                    width: self.width,
                    outer: false,
                })?
                .is_some()
            {}
            return Ok(());
        }
        let mut n = 0;
        while let Some(cell) = seq.next_element::<Cell<'de>>()? {
            self.cells.push(cell);
            n += 1;
        }
        if n != self.width {
            return Err(serde::de::Error::invalid_length(n, &self));
        }
        Ok(())
    }
}

/// The NDJSON export's columns: every one but the chain's hashes (the API's event does not
/// show them), in the order [`ndjson_row`] reads them.
const NDJSON_COLUMNS: [audit_events::Column; 23] = {
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

/// One event as a line of JSON: the same object as the API's `AuditEventDto`, written field by
/// field (no intermediate value). The stored details are compact JSON already
/// (`serde_json::Value::to_string`), copied as they are once checked to be one JSON value on
/// one line; anything else goes through a parse, like the API's conversion (`null` when not
/// JSON).
fn ndjson_row(out: &mut Vec<u8>, r: &[Cell<'_>], redact: Option<&AuditScope>) -> DomainResult<()> {
    use std::io::Write;
    fn s(out: &mut Vec<u8>, key: &str, v: &str) {
        out.push(b',');
        out.extend_from_slice(key.as_bytes());
        let _ = serde_json::to_writer(&mut *out, v);
    }
    fn o(out: &mut Vec<u8>, key: &str, v: Option<&str>) {
        match v {
            Some(v) => s(out, key, v),
            None => {
                out.push(b',');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"null");
            }
        }
    }
    fn n(out: &mut Vec<u8>, key: &str, v: Option<i64>) {
        out.push(b',');
        out.extend_from_slice(key.as_bytes());
        match v {
            Some(v) => {
                let _ = write!(out, "{v}");
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    let t = |i: usize| r[i].text();
    // A column the schema says is never NULL reads as empty if it were.
    let t0 = |i: usize| r[i].text().map(Option::unwrap_or_default);
    let _ = write!(out, "{{\"seq\":{}", r[0].int()?.unwrap_or_default());
    s(out, "\"id\":", t0(1)?);
    s(
        out,
        "\"time\":",
        &Timestamp(r[2].int()?.unwrap_or_default()).rfc3339(),
    );
    s(out, "\"kind\":", t0(3)?);
    o(out, "\"actor_id\":", t(4)?);
    s(out, "\"actor\":", t0(5)?);
    s(out, "\"session_type\":", t0(6)?);
    o(out, "\"project\":", t(7)?);
    o(out, "\"cluster\":", t(8)?);
    o(out, "\"namespace\":", t(9)?);
    s(out, "\"action\":", t0(10)?);
    o(out, "\"resource_kind\":", t(11)?);
    o(out, "\"resource_name\":", t(12)?);
    s(out, "\"outcome\":", t0(13)?);
    o(out, "\"reason\":", t(14)?);
    o(out, "\"method\":", t(15)?);
    o(out, "\"path\":", t(16)?);
    n(out, "\"status\":", r[17].int()?);
    o(out, "\"source_ip\":", t(18)?);
    o(out, "\"user_agent\":", t(19)?);
    o(out, "\"request_id\":", t(20)?);
    n(out, "\"duration_ms\":", r[21].int()?);
    out.extend_from_slice(b",\"details\":");
    let d = t0(22)?;
    // Details a scoped reader sees in part ([`AuditScope::redact_details`]) go through a parse.
    let redact = redact.filter(|_| d.contains("\"shared_with\""));
    let compact = !d.contains(['\n', '\r'])
        && serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok()
        && d.trim() == d;
    if compact && !d.is_empty() && redact.is_none() {
        out.extend_from_slice(d.as_bytes());
    } else {
        let mut v: serde_json::Value = serde_json::from_str(d).unwrap_or(serde_json::Value::Null);
        if let Some(scope) = redact {
            scope.redact_details(&mut v);
        }
        let _ = serde_json::to_writer(&mut *out, &v);
    }
    out.extend_from_slice(b"}\n");
    Ok(())
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
        // Control characters are written out: neither a formula nor a terminal escape.
        assert_eq!(cell("\t=1+2"), "\\u{9}=1+2");
        assert_eq!(cell("\r=1+2"), "\\u{d}=1+2");
        assert_eq!(
            cell("x\u{1b}]8;;http://evil\u{7}admin@warden.local"),
            "x\\u{1b}]8;;http://evil\\u{7}admin@warden.local"
        );
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

    /// A model's cells in [`NDJSON_COLUMNS`]' order, as the database's page would give them.
    fn cells_of(m: &audit_events::Model) -> Vec<Cell<'_>> {
        fn t(v: &str) -> Cell<'_> {
            Cell::Text(v.into())
        }
        fn o(v: &Option<String>) -> Cell<'_> {
            v.as_deref().map_or(Cell::Null, t)
        }
        let n = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
        vec![
            Cell::Int(m.seq),
            t(&m.id),
            Cell::Int(m.at),
            t(&m.kind),
            o(&m.actor_id),
            t(&m.actor_name),
            t(&m.session_type),
            o(&m.project),
            o(&m.cluster),
            o(&m.namespace),
            t(&m.action),
            o(&m.resource_kind),
            o(&m.resource_name),
            t(&m.outcome),
            o(&m.reason),
            o(&m.http_method),
            o(&m.path),
            n(m.status.map(i64::from)),
            o(&m.source_ip),
            o(&m.user_agent),
            o(&m.request_id),
            n(m.duration_ms),
            t(&m.details),
        ]
    }

    /// A page's JSON: cells borrowed or unescaped, NULLs, integers; a row of the wrong width
    /// or a cell of another type is an error, not a shifted row.
    #[test]
    fn a_page_of_json_rows_reads_into_cells() {
        let page = JsonPage {
            text: r#"[[3,"a\"b",null],[1,"plain",-7]]"#.into(),
            width: 3,
        };
        let cells = page.cells().unwrap();
        assert_eq!(
            cells,
            [
                Cell::Int(3),
                Cell::Text("a\"b".into()),
                Cell::Null,
                Cell::Int(1),
                Cell::Text("plain".into()),
                Cell::Int(-7)
            ]
        );
        assert!(matches!(
            &cells[4],
            Cell::Text(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(rows_and_last(&cells, 3).unwrap(), (2, Some(1)));
        let empty = JsonPage {
            text: String::new(),
            width: 3,
        };
        assert!(empty.cells().unwrap().is_empty());
        for bad in [
            r#"[[1,"a"]]"#,
            r#"[[1,"a",2,3]]"#,
            r#"[[1,"a",2.5]]"#,
            r#"[[1,"a",2]] x"#,
        ] {
            let page = JsonPage {
                text: bad.into(),
                width: 3,
            };
            assert!(page.cells().is_err(), "{bad}");
        }
        assert!(Cell::Int(1).text().is_err());
        assert!(Cell::Text("x".into()).int().is_err());
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
            ndjson_row(&mut line, &cells_of(&m), None).unwrap();
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
