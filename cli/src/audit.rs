//! `wardenctl audit`: the audit log's search from the command line, with the page's filters
//! (the same query parameters, so Warden scopes the answer to what the caller may read), and
//! `wardenctl audit export` streamed to a file or standard output as Warden sends it.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;

use crate::client::Api;
use crate::output::{print_items, text_at, Column, Format};

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
            words
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        },
    },
    Column {
        heading: "WHERE",
        read: |v| {
            [text_at(v, "/cluster"), text_at(v, "/namespace")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        },
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
    let mut q = filters.query();
    q.push(("limit", limit.min(500).to_string()));
    let items: Vec<Value> = api.list_all("/api/v1/audit/events", &q, limit).await?;
    print_items(out, &items, COLUMNS, format)?;
    Ok(())
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
