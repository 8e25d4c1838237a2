//! The SIEM stream: every committed audit event, as one JSON line shaped like a Kubernetes
//! `audit.k8s.io/v1` `Event` (see `warden_domain::audit::siem`), to stdout, a file with
//! size-based rotation, or an HTTPS webhook (NDJSON batches).
//!
//! The database is the source of truth and the queue: the streamer reads committed rows in
//! chain order after a cursor persisted in the database (`siem_cursors`), hands a batch to the
//! sink, and moves the cursor only once the sink took it. A failing sink is retried with
//! backoff and nothing is skipped; a restart resumes after the last delivered row. Delivery is
//! at least once (a crash between a delivery and the cursor's update repeats that batch; the
//! `auditID` tells repeats apart). Rows that retention deletes before the stream reached them
//! are counted in `warden_siem_dropped_total` and told by a `siem.dropped` audit event.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use warden_domain::audit::{siem, Actor, AuditEvent, AuditKind, Outcome, SessionType};
use warden_domain::secrets::Secret;
use warden_domain::Services;

/// Where the stream goes (`WARDEN_SIEM_SINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    /// `file:/path`: appended to, rotated by size.
    File(PathBuf),
    /// `https://...` (plain `http://` only to a loopback address).
    Webhook(String),
}

impl SinkSpec {
    pub fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if v == "stdout" {
            Ok(Self::Stdout)
        } else if let Some(path) = v.strip_prefix("file:") {
            if path.trim().is_empty() {
                return Err("file: needs a path, e.g. file:/var/log/warden/audit.jsonl".into());
            }
            Ok(Self::File(PathBuf::from(path.trim())))
        } else if v.starts_with("https://") {
            Ok(Self::Webhook(v.to_owned()))
        } else if v.starts_with("http://") && crate::config::is_loopback_url(v) {
            Ok(Self::Webhook(v.to_owned()))
        } else if v.starts_with("http://") {
            Err("a webhook must be https:// (plain http:// only to a loopback address)".into())
        } else {
            Err("must be stdout, file:/path or https://host/path".into())
        }
    }
}

/// The SIEM stream's configuration (`WARDEN_SIEM_*`).
#[derive(Debug, Clone)]
pub struct SiemConfig {
    /// `None`: no stream.
    pub sink: Option<SinkSpec>,
    /// `WARDEN_SIEM_FILE_MAX_BYTES`: a file sink rotates before it would grow past this.
    pub file_max_bytes: u64,
    /// `WARDEN_SIEM_FILE_KEEP`: rotated files kept (`PATH.1` newest … `PATH.K`).
    pub file_keep: usize,
    /// `WARDEN_SIEM_WEBHOOK_TOKEN` (or `_FILE`): sent as `Authorization: Bearer`.
    pub webhook_token: Option<Secret>,
    /// `WARDEN_SIEM_BATCH`: events per delivery.
    pub batch: u64,
    /// `WARDEN_SIEM_POLL_MS`: how often an idle stream looks for new events.
    pub poll: Duration,
}

impl Default for SiemConfig {
    fn default() -> Self {
        Self {
            sink: None,
            file_max_bytes: 100 * 1024 * 1024,
            file_keep: 5,
            webhook_token: None,
            batch: 500,
            poll: Duration::from_millis(1000),
        }
    }
}

/// A destination for batches of JSON lines. `send` succeeds only once the whole batch is taken.
#[async_trait::async_trait]
pub trait SiemSink: Send {
    async fn send(&mut self, lines: &[String]) -> anyhow::Result<()>;
}

pub struct StdoutSink;

#[async_trait::async_trait]
impl SiemSink for StdoutSink {
    async fn send(&mut self, lines: &[String]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for l in lines {
            out.write_all(l.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Appends to a file, synced after each batch; before a batch would take the file past
/// `max_bytes`, the file becomes `PATH.1` (older ones shift up to `PATH.keep`, the oldest is
/// deleted) and a new one starts. A batch is never split across files.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<(std::fs::File, u64)>,
}

impl FileSink {
    pub fn new(path: PathBuf, max_bytes: u64, keep: usize) -> Self {
        Self {
            path,
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
        }
    }

    fn rotated(&self, i: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).ok();
            return Ok(());
        }
        std::fs::remove_file(self.rotated(self.keep)).ok();
        for i in (1..self.keep).rev() {
            let from = self.rotated(i);
            if from.exists() {
                std::fs::rename(&from, self.rotated(i + 1))
                    .with_context(|| format!("cannot rotate {}", from.display()))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
            .with_context(|| format!("cannot rotate {}", self.path.display()))?;
        Ok(())
    }

    /// The file, opened (again) when there is none yet or when `path` is no longer the file
    /// held: someone renamed or deleted it (a rotation by hand or by `logrotate`, another
    /// replica's sink on a shared volume). Appending to a file nobody reads would lose every
    /// event while the delivery position moved on. Its size is read from the file each time,
    /// not remembered, for the same reason. Created `0640` (the events name people, addresses
    /// and request URIs), never through a symbolic link, and only as a regular file.
    fn open(&mut self) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        if let Some((f, size)) = &mut self.file {
            let held = f.metadata()?;
            match std::fs::symlink_metadata(&self.path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    *size = held.len();
                    return Ok(());
                }
                _ => self.file = None,
            }
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .with_context(|| {
                format!(
                    "cannot open {} (a symbolic link is not followed)",
                    self.path.display()
                )
            })?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            anyhow::bail!("{} is not a regular file", self.path.display());
        }
        self.file = Some((f, meta.len()));
        Ok(())
    }
}

#[async_trait::async_trait]
impl SiemSink for FileSink {
    async fn send(&mut self, lines: &[String]) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        self.open()?;
        let size = self.file.as_ref().map_or(0, |f| f.1);
        if size > 0 && size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
            self.open()?;
        }
        let (f, size) = self.file.as_mut().expect("opened above");
        let written = f.write_all(&buf).and_then(|_| f.sync_data());
        if let Err(e) = written {
            // A part of the batch may be on disk (the disk filled up): cut it off, so the
            // batch, written again (at least once), starts on a line of its own and every
            // line stays a JSON document. Reopened next time.
            let _ = f.set_len(*size).and_then(|_| f.sync_data());
            self.file = None;
            return Err(e).with_context(|| format!("cannot write {}", self.path.display()));
        }
        *size += buf.len() as u64;
        Ok(())
    }
}

/// POSTs each batch as NDJSON (`application/x-ndjson`); anything but a 2xx is a failure.
pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    token: Option<Secret>,
}

impl WebhookSink {
    pub fn new(url: String, token: Option<Secret>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .context("cannot build the SIEM webhook's HTTP client")?;
        Ok(Self { client, url, token })
    }
}

#[async_trait::async_trait]
impl SiemSink for WebhookSink {
    async fn send(&mut self, lines: &[String]) -> anyhow::Result<()> {
        let mut body = lines.join("\n");
        body.push('\n');
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-ndjson")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        // The URL may carry a token: the error is stripped of it before it is logged.
        let status = req
            .send()
            .await
            .map_err(|e| e.without_url())
            .context("the SIEM webhook is unreachable")?
            .status();
        anyhow::ensure!(
            status.is_success(),
            "the SIEM webhook answered {}",
            status.as_u16()
        );
        Ok(())
    }
}

/// The stream's counters, for `/metrics`.
#[derive(Default)]
pub struct SiemStats {
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
    pub cursor: AtomicI64,
}

/// Reads committed audit rows after the cursor and delivers them to a sink.
pub struct Streamer {
    services: Arc<Services>,
    sink: Box<dyn SiemSink>,
    batch: u64,
    stats: Arc<SiemStats>,
}

impl Streamer {
    pub fn new(services: Arc<Services>, sink: Box<dyn SiemSink>, batch: u64) -> Self {
        Self {
            services,
            sink,
            batch: batch.max(1),
            stats: Default::default(),
        }
    }

    /// The streamer for the configured sink, if any.
    pub fn from_config(services: Arc<Services>, c: &SiemConfig) -> anyhow::Result<Option<Self>> {
        let sink: Box<dyn SiemSink> = match &c.sink {
            None => return Ok(None),
            Some(SinkSpec::Stdout) => Box::new(StdoutSink),
            Some(SinkSpec::File(p)) => {
                Box::new(FileSink::new(p.clone(), c.file_max_bytes, c.file_keep))
            }
            Some(SinkSpec::Webhook(u)) => {
                Box::new(WebhookSink::new(u.clone(), c.webhook_token.clone())?)
            }
        };
        Ok(Some(Self::new(services, sink, c.batch)))
    }

    pub fn stats(&self) -> Arc<SiemStats> {
        self.stats.clone()
    }

    /// Deliver the next batch: how many events went out (0: the stream is caught up).
    pub async fn pump(&mut self) -> anyhow::Result<usize> {
        use sea_orm::TransactionTrait;
        let svc = &self.services;
        let now = svc.clock.now();
        // One read snapshot: a retention run either happened (its checkpoint is seen and its
        // rows are gone) or not.
        let tx = match svc.db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                svc.db
                    .begin_with_config(
                        Some(sea_orm::IsolationLevel::RepeatableRead),
                        Some(sea_orm::AccessMode::ReadOnly),
                    )
                    .await?
            }
            _ => svc.db.begin().await?,
        };
        let mut cursor = siem::load_cursor(&svc.db, now).await?;
        let lost = siem::lost_to_retention(&tx, cursor).await?;
        if let Some((to, _)) = lost {
            cursor = to;
        }
        let rows = siem::rows_after(&tx, cursor, self.batch).await?;
        tx.rollback().await?;
        if let Some((to, n)) = lost {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                siem.dropped = n,
                siem.cursor = to,
                "audit events were deleted by retention before the SIEM stream delivered them"
            );
            svc.audit
                .record(
                    AuditEvent::new(
                        AuditKind::System,
                        Actor::System,
                        SessionType::System,
                        "siem.dropped",
                        Outcome::Error,
                    )
                    .reason(format!(
                        "up to {n} audit events (up to seq {to}) were deleted by retention before the SIEM stream delivered them"
                    ))
                    .details(serde_json::json!({ "dropped": n, "through_seq": to })),
                )
                .await?;
            siem::save_cursor(&svc.db, to, now).await?;
        }
        self.stats.cursor.store(cursor, Ordering::Relaxed);
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(0);
        };
        let lines: Vec<String> = rows
            .iter()
            .map(|r| siem::to_k8s_event(r).to_string())
            .collect();
        if let Err(e) = self.sink.send(&lines).await {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        siem::save_cursor(&svc.db, last, now).await?;
        self.stats.cursor.store(last, Ordering::Relaxed);
        self.stats
            .delivered
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        Ok(lines.len())
    }

    /// Deliver until caught up.
    pub async fn drain(&mut self) -> anyhow::Result<usize> {
        let mut n = 0;
        loop {
            match self.pump().await? {
                0 => return Ok(n),
                k => n += k,
            }
        }
    }

    /// Run in the background: deliver, look again every `poll` when caught up, retry a failed
    /// delivery with backoff (0.2 s doubling to 30 s) without skipping anything.
    pub fn spawn(mut self, poll: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                // One replica streams (the cursor is in the database: a new holder of the
                // lease goes on where the last one stopped).
                if !self.services.jobs.run("siem_streaming") {
                    tokio::time::sleep(poll).await;
                    continue;
                }
                match self.pump().await {
                    Ok(0) => tokio::time::sleep(poll).await,
                    Ok(_) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), retry_ms = backoff.as_millis() as u64, "SIEM delivery failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(tag: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{{\"e\":\"{tag}{i}\"}}")).collect()
    }

    /// Someone renames or deletes the file between batches (a rotation by hand, `logrotate`
    /// without `copytruncate`, another replica): the next batch goes to a file at the path,
    /// not into the renamed or deleted one nobody reads.
    #[tokio::test]
    async fn a_renamed_or_deleted_file_is_not_written_to_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut sink = FileSink::new(path.clone(), 1 << 20, 3);
        sink.send(&lines("a", 3)).await.unwrap();
        std::fs::rename(&path, dir.path().join("moved.jsonl")).unwrap();
        sink.send(&lines("b", 2)).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            lines("b", 2).join("\n") + "\n"
        );
        std::fs::remove_file(&path).unwrap();
        sink.send(&lines("c", 1)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"e\":\"c0\"}\n");
        // Appended to by someone else (another replica's sink): the size is the file's, so
        // rotation happens where it should.
        let mut small = FileSink::new(path.clone(), 64, 1);
        std::fs::write(&path, "x".repeat(60) + "\n").unwrap();
        small.send(&lines("d", 1)).await.unwrap();
        std::fs::write(&path, "y".repeat(60) + "\n").unwrap();
        small.send(&lines("e", 1)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"e\":\"e0\"}\n");
    }

    /// The stream names people, addresses and request URIs: its file is not world-readable,
    /// and a link planted at its path (a directory others write to) is not followed.
    #[tokio::test]
    async fn the_file_is_private_and_a_planted_link_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("audit.jsonl");
        let mut sink = FileSink::new(path.clone(), 1 << 20, 3);
        sink.send(&lines("a", 1)).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077 & !0o040, 0, "{mode:o}");
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o007, 0, "{dir_mode:o}");

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me\n").unwrap();
        let planted = dir.path().join("planted.jsonl");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let mut sink = FileSink::new(planted.clone(), 1 << 20, 3);
        let err = sink.send(&lines("x", 1)).await.unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        // Neither is a directory (or a pipe) at the path written to.
        let mut sink = FileSink::new(dir.path().join("logs"), 1 << 20, 3);
        assert!(sink.send(&lines("x", 1)).await.is_err());
    }

    #[test]
    fn sinks_parse() {
        assert_eq!(SinkSpec::parse("stdout"), Ok(SinkSpec::Stdout));
        assert_eq!(
            SinkSpec::parse("file:/var/log/a.jsonl"),
            Ok(SinkSpec::File("/var/log/a.jsonl".into()))
        );
        assert!(matches!(
            SinkSpec::parse("https://siem.example.com/in"),
            Ok(SinkSpec::Webhook(_))
        ));
        assert!(SinkSpec::parse("http://127.0.0.1:9/in").is_ok());
        assert!(SinkSpec::parse("http://siem.example.com/in").is_err());
        assert!(SinkSpec::parse("syslog").is_err());
        assert!(SinkSpec::parse("file:").is_err());
    }
}
