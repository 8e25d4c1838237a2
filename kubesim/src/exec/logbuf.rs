//! A container's log: complete lines with their timestamps, followable.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

struct Inner {
    lines: Vec<(time::OffsetDateTime, Vec<u8>)>,
    partial: Vec<u8>,
    closed: bool,
}

pub struct LogBuf {
    inner: Mutex<Inner>,
    tx: watch::Sender<u64>,
}

/// What to read from a log.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    pub limit_bytes: Option<usize>,
}

impl Default for LogBuf {
    fn default() -> Self {
        LogBuf {
            inner: Mutex::new(Inner {
                lines: Vec::new(),
                partial: Vec::new(),
                closed: false,
            }),
            tx: watch::channel(0).0,
        }
    }
}

fn ts(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl LogBuf {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append output; complete lines become visible.
    pub fn append(&self, data: &[u8]) {
        let mut g = self.lock();
        let now = time::OffsetDateTime::now_utc();
        g.partial.extend_from_slice(data);
        while let Some(pos) = g.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = g.partial.drain(..=pos).collect();
            g.lines.push((now, line));
        }
        drop(g);
        self.tx.send_modify(|v| *v += 1);
    }

    /// No more output: flush a partial last line.
    pub fn close(&self) {
        let mut g = self.lock();
        if !g.partial.is_empty() {
            let line = std::mem::take(&mut g.partial);
            g.lines.push((time::OffsetDateTime::now_utc(), line));
        }
        g.closed = true;
        drop(g);
        self.tx.send_modify(|v| *v += 1);
    }

    fn render(&self, from: usize, q: &LogQuery) -> (Vec<u8>, usize, bool) {
        let g = self.lock();
        let mut start = from;
        if from == 0 {
            if let Some(t) = q.tail_lines {
                start = g.lines.len().saturating_sub(t);
            }
        }
        let cutoff = q
            .since_seconds
            .map(|s| time::OffsetDateTime::now_utc() - time::Duration::seconds(s));
        let mut out = Vec::new();
        for (t, line) in g.lines.iter().skip(start) {
            if cutoff.is_some_and(|c| *t < c) {
                continue;
            }
            if q.timestamps {
                out.extend_from_slice(ts(*t).as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line);
        }
        (out, g.lines.len(), g.closed)
    }

    /// The log so far.
    pub fn read(&self, q: &LogQuery) -> Vec<u8> {
        let (mut out, _, _) = self.render(0, q);
        if let Some(l) = q.limit_bytes {
            out.truncate(l);
        }
        out
    }

    /// Stream the log into `tx` until it is closed (or the receiver goes away).
    pub async fn follow(&self, q: LogQuery, tx: mpsc::Sender<Bytes>) {
        let mut rx = self.tx.subscribe();
        let mut pos = 0;
        let mut sent = 0usize;
        loop {
            rx.borrow_and_update();
            let (chunk, next, closed) = self.render(pos, &q);
            pos = next;
            if !chunk.is_empty() {
                let mut chunk = chunk;
                if let Some(l) = q.limit_bytes {
                    chunk.truncate(l.saturating_sub(sent));
                }
                sent += chunk.len();
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                if q.limit_bytes.is_some_and(|l| sent >= l) {
                    return;
                }
            }
            if closed {
                return;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return; },
                _ = tx.closed() => return,
            }
        }
    }
}
