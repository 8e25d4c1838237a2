//! `wardenctl audit`: the audit log's search from the command line, with the page's filters
//! (the same query parameters, so Warden scopes the answer to what the caller may read), and
//! `wardenctl audit export` streamed to a file or standard output as Warden sends it.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;

use crate::client::Api;
use crate::output::{join_present, print_items, printable, text_at, Column, Format};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// A preset range: 15m, 1h, 24h, 7d or 30d.
    #[arg(long, global = true)]
    pub range: Option<String>,
    /// From this time (RFC 3339, or a date).
    #[arg(long, global = true)]
    pub since: Option<String>,
    /// Until this time (RFC 3339, or a date).
    #[arg(long, global = true)]
    pub until: Option<String>,
    /// console, sign_in, kube_api, terminal, agent or system.
    #[arg(long, global = true)]
    pub kind: Option<String>,
    /// Who: an email or its beginning.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// allowed, denied or error.
    #[arg(long, global = true)]
    pub outcome: Option<String>,
    #[arg(long, global = true)]
    pub project: Option<String>,
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, exec…
    #[arg(long, global = true)]
    pub verb: Option<String>,
    /// Kubernetes resource kind, e.g. pods or secrets.
    #[arg(long, global = true)]
    pub resource: Option<String>,
    /// HTTP status of a Kubernetes request.
    #[arg(long, global = true)]
    pub status: Option<u16>,
    /// The beginning of an action, e.g. user. or kube.delete.
    #[arg(long, global = true)]
    pub action: Option<String>,
    /// Free text over the message and resource names.
    #[arg(long, short = 'q', global = true)]
    pub text: Option<String>,
    /// Include discovery and health requests.
    #[arg(long, global = true)]
    pub discovery: bool,
}

impl Filters {
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut q = vec![
            ("range", o(&self.range)),
            ("since", o(&self.since)),
            ("until", o(&self.until)),
            ("kind", o(&self.kind)),
            ("actor", o(&self.actor)),
            ("outcome", o(&self.outcome)),
            ("project", o(&self.project)),
            ("cluster", o(&self.cluster)),
            ("namespace", o(&self.namespace)),
            ("verb", o(&self.verb)),
            ("resource", o(&self.resource)),
            (
                "status",
                self.status.map(|s| s.to_string()).unwrap_or_default(),
            ),
            ("action", o(&self.action)),
            ("q", o(&self.text)),
        ];
        if self.discovery {
            q.push(("discovery", "true".into()));
        }
        q
    }
}

const COLUMNS: &[Column] = &[
    Column {
        heading: "TIME (UTC)",
        read: |v| text_at(v, "/time"),
    },
    Column {
        heading: "WHO",
        read: |v| text_at(v, "/actor"),
    },
    Column {
        heading: "WHAT",
        read: |v| {
            // A Kubernetes request as its verb and resource (`list pods`, `get secrets db`).
            let action = text_at(v, "/action");
            let words = match action.strip_prefix("kube.") {
                Some(verb) => [
                    verb.to_owned(),
                    text_at(v, "/resource_kind"),
                    text_at(v, "/resource_name"),
                ],
                None => [action.clone(), text_at(v, "/resource_name"), String::new()],
            };
            join_present(words, " ")
        },
    },
    Column {
        heading: "WHERE",
        read: |v| join_present([text_at(v, "/cluster"), text_at(v, "/namespace")], "/"),
    },
    Column {
        heading: "OUTCOME",
        read: |v| {
            let status = text_at(v, "/status");
            match status.is_empty() {
                true => text_at(v, "/outcome"),
                false => format!("{} {status}", text_at(v, "/outcome")),
            }
        },
    },
    Column {
        heading: "REASON",
        read: |v| text_at(v, "/reason"),
    },
];

/// The newest `limit` events matching the filters.
pub async fn search(
    api: &Api,
    filters: &Filters,
    limit: usize,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let items = newest(api, filters, limit).await?;
    print_items(out, &items, COLUMNS, format)?;
    Ok(())
}

/// The newest `limit` events matching the filters, newest first.
async fn newest(api: &Api, filters: &Filters, limit: usize) -> anyhow::Result<Vec<Value>> {
    let mut q = filters.query();
    q.push(("limit", limit.clamp(1, 500).to_string()));
    Ok(api.list_all("/api/v1/audit/events", &q, limit).await?)
}

/// A followed log's row: six cells at fixed widths (a stream cannot measure its columns
/// first), control characters shown as `?`.
fn fixed_row(cell: impl Fn(usize) -> String) -> String {
    format!(
        "{:<24}   {:<24}   {:<40}   {:<20}   {:<12}   {}",
        cell(0),
        cell(1),
        cell(2),
        cell(3),
        cell(4),
        cell(5)
    )
    .trim_end()
    .to_owned()
}

/// One row of a followed log: the table's columns at fixed widths (a stream cannot measure
/// its column widths first), or the event's JSON on one line.
fn follow_line(event: &Value, format: Format) -> String {
    if format == Format::Json {
        return event.to_string();
    }
    fixed_row(|i| printable(&(COLUMNS[i].read)(event)))
}

/// `wardenctl audit --follow`: the newest `limit` events oldest first, then every new matching
/// event as Warden stores it (its live tail, `GET /api/v1/audit/tail`, Server-Sent Events),
/// resumed after the last one seen when the connection drops. Ends when Warden ends the stream
/// (the key revoked, the user deactivated: said on standard error).
pub async fn follow(
    api: &Api,
    filters: &Filters,
    limit: usize,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut recent = newest(api, filters, limit).await?;
    recent.reverse();
    let mut last = recent.last().and_then(|e| e["seq"].as_i64());
    if format == Format::Table {
        writeln!(out, "{}", fixed_row(|i| COLUMNS[i].heading.to_owned()))?;
    }
    for e in &recent {
        writeln!(out, "{}", follow_line(e, format))?;
    }
    out.flush()?;
    let mut backoff = std::time::Duration::from_secs(1);
    loop {
        let mut rb_query = filters.query();
        rb_query.retain(|(_, v)| !v.is_empty());
        let resp = match api.tail(&rb_query, last).await {
            Ok(r) => r,
            Err(e @ crate::client::ApiError::Api { .. }) => return Err(e.into()),
            Err(e) => {
                eprintln!("{e}; retrying in {}s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                continue;
            }
        };
        backoff = std::time::Duration::from_secs(1);
        let mut body = resp.bytes_stream();
        let mut sse = Sse::default();
        loop {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    eprintln!("the live tail broke off ({e}); resuming");
                    break;
                }
                None => break,
            };
            for msg in sse.push(&chunk) {
                match msg.event.as_str() {
                    "audit" => {
                        let Ok(e) = serde_json::from_str::<Value>(&msg.data) else {
                            continue;
                        };
                        if let Some(seq) = e["seq"].as_i64() {
                            if last.is_some_and(|l| seq <= l) {
                                continue;
                            }
                            last = Some(seq);
                        }
                        writeln!(out, "{}", follow_line(&e, format))?;
                        out.flush()?;
                    }
                    "end" => anyhow::bail!("Warden ended the live tail: {}", msg.data),
                    _ => {}
                }
            }
        }
    }
}

/// A Server-Sent Events message.
#[derive(Debug, Default, PartialEq)]
struct Message {
    event: String,
    data: String,
}

/// Server-Sent Events parsed from chunks as they arrive (a line may be split across two).
#[derive(Default)]
struct Sse {
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl Sse {
    fn push(&mut self, chunk: &[u8]) -> Vec<Message> {
        let mut done = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.ends_with('\r') {
                line.pop();
            }
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    done.push(Message {
                        event: match std::mem::take(&mut self.event) {
                            e if e.is_empty() => "message".to_owned(),
                            e => e,
                        },
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.event = value,
                "data" => self.data.push(value),
                _ => {}
            }
        }
        done
    }
}

/// The export of the filters, written as it arrives (memory does not grow with its size).
pub async fn export(
    api: &Api,
    filters: &Filters,
    csv: bool,
    out: &mut (impl Write + ?Sized),
) -> anyhow::Result<u64> {
    let mut q = filters.query();
    q.push(("format", if csv { "csv" } else { "ndjson" }.to_owned()));
    let resp = api.get_raw("/api/v1/audit/export", &q).await?;
    let mut body = resp.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("the export broke off: {e}"))?;
        out.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_read_across_chunk_boundaries() {
        let mut sse = Sse::default();
        assert!(sse.push(b": keep-alive\n\nevent: au").is_empty());
        let got = sse
            .push(b"dit\r\nid: 7\ndata: {\"seq\":7}\n\nevent: end\ndata: the key was revoked\n\n");
        assert_eq!(
            got,
            [
                Message {
                    event: "audit".into(),
                    data: "{\"seq\":7}".into()
                },
                Message {
                    event: "end".into(),
                    data: "the key was revoked".into()
                }
            ]
        );
    }
}
