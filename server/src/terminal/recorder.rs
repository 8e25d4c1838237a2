//! A terminal's recording, asciicast v2, streamed to disk.

use serde_json::json;
use std::time::Instant;

/// A terminal's recording: asciicast v2 (a header line, then `[seconds, "o", text]` for output
/// and `[seconds, "r", "COLSxROWS"]` for resizes; keystrokes, as `[seconds, "i", text]`, only
/// when the `terminal_record_input` setting is on), streamed to
/// `WARDEN_DATA_DIR/recordings/<terminal.open event id>.cast` and flushed at least every second,
/// with the SHA-256 of everything written.
pub struct Recorder {
    file: tokio::io::BufWriter<tokio::fs::File>,
    hash: sha2::Sha256,
    started: Instant,
    bytes: u64,
    /// The tail of a UTF-8 sequence split between two chunks.
    carry: Vec<u8>,
    dirty: bool,
    /// Keystrokes are written too (`"i"` events): an organization's choice, off by default.
    record_input: bool,
}

impl Recorder {
    pub fn path(data_dir: &std::path::Path, id: &str) -> std::path::PathBuf {
        data_dir.join("recordings").join(format!("{id}.cast"))
    }

    pub async fn create(
        data_dir: &std::path::Path,
        id: &str,
        title: &str,
        now_secs: i64,
    ) -> std::io::Result<Self> {
        let path = Self::path(data_dir, id);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .await?;
        let mut r = Self {
            file: tokio::io::BufWriter::new(file),
            hash: <sha2::Sha256 as sha2::Digest>::new(),
            started: Instant::now(),
            bytes: 0,
            carry: vec![],
            dirty: false,
            record_input: false,
        };
        let header = json!({"version": 2, "width": 80, "height": 24, "timestamp": now_secs,
            "title": title, "env": {"TERM": "xterm-256color"}});
        r.line(&header.to_string()).await?;
        r.flush().await?;
        Ok(r)
    }

    async fn line(&mut self, l: &str) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        sha2::Digest::update(&mut self.hash, l.as_bytes());
        sha2::Digest::update(&mut self.hash, b"\n");
        self.file.write_all(l.as_bytes()).await?;
        self.file.write_all(b"\n").await?;
        self.bytes += l.len() as u64 + 1;
        self.dirty = true;
        Ok(())
    }

    fn t(&self) -> f64 {
        (self.started.elapsed().as_micros() as f64 / 1e6 * 1e6).round() / 1e6
    }

    pub async fn output(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        let valid = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => buf.len(),
        };
        self.carry = buf.split_off(valid);
        if buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        let ev = json!([self.t(), "o", text]);
        self.line(&ev.to_string()).await
    }

    /// Record keystrokes from now on (the `terminal_record_input` setting).
    pub fn record_input(&mut self, on: bool) {
        self.record_input = on;
    }

    /// What the person typed, when keystrokes are recorded; nothing otherwise.
    pub async fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        if !self.record_input || data.is_empty() {
            return Ok(());
        }
        let ev = json!([self.t(), "i", String::from_utf8_lossy(data)]);
        self.line(&ev.to_string()).await
    }

    pub async fn resize(&mut self, cols: u64, rows: u64) -> std::io::Result<()> {
        let ev = json!([self.t(), "r", format!("{cols}x{rows}")]);
        self.line(&ev.to_string()).await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if self.dirty {
            self.file.flush().await?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Close the file; `(sha256 hex, bytes)`.
    pub async fn finish(mut self) -> std::io::Result<(String, u64)> {
        if !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            let ev = json!([self.t(), "o", String::from_utf8_lossy(&rest)]);
            self.line(&ev.to_string()).await?;
        }
        self.flush().await?;
        let digest = sha2::Digest::finalize(self.hash);
        Ok((hex::encode(digest), self.bytes))
    }
}
