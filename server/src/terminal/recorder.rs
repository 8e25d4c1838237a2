//! A terminal's recording, asciicast v2, streamed to the database in chunks.

use sea_orm::DatabaseConnection;
use serde_json::json;
use std::time::Instant;
use warden_domain::secrets::Sealer;

/// A chunk is written once this much is waiting, even before the next second's flush.
const CHUNK: usize = 64 * 1024;

/// A terminal's recording: asciicast v2 (a header line, then `[seconds, "o", text]` for output
/// and `[seconds, "r", "COLSxROWS"]` for resizes; keystrokes, as `[seconds, "i", text]`, only
/// when the `terminal_record_input` setting is on), kept in the database as numbered chunks
/// (`terminal_recording_chunks`, keyed by the `terminal.open` event's id) so that every replica
/// can play it, flushed at least every second, with the SHA-256 of everything written.
pub struct Recorder {
    db: DatabaseConnection,
    /// Seals each chunk at rest (the master key's sealer).
    sealer: Option<Sealer>,
    id: String,
    /// The recording's start (ms), on every chunk.
    started_at: i64,
    seq: i32,
    pending: Vec<u8>,
    hash: sha2::Sha256,
    started: Instant,
    bytes: u64,
    /// The tail of a UTF-8 sequence split between two chunks.
    carry: Vec<u8>,
    /// Keystrokes are written too (`"i"` events): an organization's choice, off by default.
    record_input: InputSwitch,
    /// Whether the last keystroke was recorded: a change is marked in the cast (an `"m"`
    /// event), so a gap in the keystrokes reads as one, not as someone typing nothing.
    input_recorded: bool,
}

/// Whether a terminal's keystrokes are recorded, switchable while it is open: an organization
/// that turns keystroke recording off stops it in the terminals already open (turning it on
/// ends them instead: they were opened under the promise that keystrokes stay unrecorded).
#[derive(Debug, Clone, Default)]
pub struct InputSwitch(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl InputSwitch {
    pub fn new(on: bool) -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(on)))
    }

    pub fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Recorder {
    /// Start a recording: its header is stored before the terminal opens, so a terminal that
    /// cannot be recorded does not open.
    pub async fn create(
        db: DatabaseConnection,
        sealer: Option<Sealer>,
        id: &str,
        title: &str,
        now_ms: i64,
    ) -> std::io::Result<Self> {
        let mut r = Self {
            db,
            sealer,
            id: id.to_owned(),
            started_at: now_ms,
            seq: 0,
            pending: Vec::with_capacity(4096),
            hash: <sha2::Sha256 as sha2::Digest>::new(),
            started: Instant::now(),
            bytes: 0,
            carry: vec![],
            record_input: InputSwitch::default(),
            input_recorded: false,
        };
        let header = json!({"version": 2, "width": 80, "height": 24, "timestamp": now_ms / 1000,
            "title": title, "env": {"TERM": "xterm-256color"}});
        r.line(&header.to_string()).await?;
        r.flush().await?;
        Ok(r)
    }

    async fn line(&mut self, l: &str) -> std::io::Result<()> {
        sha2::Digest::update(&mut self.hash, l.as_bytes());
        sha2::Digest::update(&mut self.hash, b"\n");
        self.pending.extend_from_slice(l.as_bytes());
        self.pending.push(b'\n');
        self.bytes += l.len() as u64 + 1;
        if self.pending.len() >= CHUNK {
            self.flush().await?;
        }
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

    /// Bytes of asciicast written so far (header included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Record keystrokes while `switch` is on (the `terminal_record_input` setting).
    pub fn record_input(&mut self, switch: InputSwitch) {
        self.input_recorded = switch.is_on();
        self.record_input = switch;
    }

    /// What the person typed, when keystrokes are recorded; nothing otherwise.
    pub async fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        let on = self.record_input.is_on();
        if on != self.input_recorded {
            self.input_recorded = on;
            let note = if on {
                "keystrokes are recorded again from here"
            } else {
                "keystrokes are not recorded from here: keystroke recording was turned off"
            };
            let ev = json!([self.t(), "m", note]);
            self.line(&ev.to_string()).await?;
        }
        if !on || data.is_empty() {
            return Ok(());
        }
        let ev = json!([self.t(), "i", String::from_utf8_lossy(data)]);
        self.line(&ev.to_string()).await
    }

    pub async fn resize(&mut self, cols: u64, rows: u64) -> std::io::Result<()> {
        let ev = json!([self.t(), "r", format!("{cols}x{rows}")]);
        self.line(&ev.to_string()).await
    }

    /// Store what is waiting as the next chunk.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Kept until stored: a failed write can be tried again with nothing lost.
        let data = self.pending.clone();
        warden_domain::recordings::store::append(
            &self.db,
            self.sealer.as_ref(),
            &self.id,
            self.seq,
            self.started_at,
            data,
        )
        .await
        .map_err(std::io::Error::other)?;
        self.pending.clear();
        self.seq += 1;
        Ok(())
    }

    /// Store the rest; `(sha256 hex, bytes)`.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A migrated SQLite database in `dir`.
    pub(crate) async fn database(dir: &std::path::Path) -> DatabaseConnection {
        use warden_migrations::MigratorTrait;
        let url = format!("sqlite://{}?mode=rwc", dir.join("recordings.db").display());
        let db = sea_orm::Database::connect(url).await.unwrap();
        warden_migrations::Migrator::up(&db, None).await.unwrap();
        db
    }

    async fn stored(db: &DatabaseConnection, id: &str) -> Vec<u8> {
        stored_with(db, None, id).await
    }

    async fn stored_with(db: &DatabaseConnection, sealer: Option<&Sealer>, id: &str) -> Vec<u8> {
        let mut all = vec![];
        let mut after = -1;
        loop {
            let page = warden_domain::recordings::store::page(db, sealer, id, after, 3)
                .await
                .unwrap();
            let Some(last) = page.last().map(|c| c.0) else {
                return all;
            };
            for (seq, data) in page {
                assert_eq!(seq, after + 1, "chunks in order, none missing");
                after = seq;
                all.extend(data);
            }
            after = last;
        }
    }

    #[tokio::test]
    async fn a_recording_is_stored_in_chunks_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path()).await;
        let mut r = Recorder::create(db.clone(), None, "rec-1", "test", 1_000)
            .await
            .unwrap();
        // The header is stored before anything else happens.
        let header = stored(&db, "rec-1").await;
        assert!(String::from_utf8_lossy(&header).contains("\"version\":2"));
        // Enough output for several chunks, a UTF-8 sequence split between two writes.
        let block = "x".repeat(10_000);
        for _ in 0..20 {
            r.output(block.as_bytes()).await.unwrap();
        }
        let euro = "€".as_bytes();
        r.output(&euro[..1]).await.unwrap();
        r.output(&euro[1..]).await.unwrap();
        r.resize(100, 30).await.unwrap();
        // Keystrokes are not kept unless the organization says so.
        r.input(b"secret").await.unwrap();
        let switch = InputSwitch::new(true);
        r.record_input(switch.clone());
        r.input(b"ls\r").await.unwrap();
        // Switched off while open: nothing typed after that is kept.
        switch.set(false);
        r.input(b"hunter2").await.unwrap();
        r.input(b"hunter3").await.unwrap();
        // On again: recorded again, and the gap is marked at both ends.
        switch.set(true);
        r.input(b"pwd\r").await.unwrap();
        let (sha, bytes) = r.finish().await.unwrap();
        let all = stored(&db, "rec-1").await;
        assert_eq!(all.len() as u64, bytes);
        let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&all));
        assert_eq!(
            hex::encode(digest),
            sha,
            "what is stored is what was hashed"
        );
        let text = String::from_utf8(all).unwrap();
        assert!(text.contains("€"), "a split sequence is joined");
        assert!(text.contains("\"100x30\""));
        assert!(!text.contains("secret"));
        assert!(text.contains("ls\\r"));
        assert!(!text.contains("hunter2"));
        assert!(text.contains("pwd\\r"));
        let marks: Vec<&str> = text.lines().filter(|l| l.contains("\"m\"")).collect();
        assert_eq!(marks.len(), 2, "{marks:?}");
        assert!(marks[0].contains("not recorded from here"), "{marks:?}");
        assert!(marks[1].contains("recorded again"), "{marks:?}");
        let chunks = warden_domain::recordings::store::page(&db, None, "rec-1", -1, 100)
            .await
            .unwrap();
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        // Retention removes it whole.
        let gone = warden_domain::recordings::store::delete_started_before(&db, 1_001)
            .await
            .unwrap();
        assert_eq!(gone, chunks.len() as u64);
        assert!(stored(&db, "rec-1").await.is_empty());
    }

    #[tokio::test]
    async fn chunks_are_sealed_at_rest_and_open_only_in_their_place() {
        use sea_orm::{ConnectionTrait, Statement};
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path()).await;
        let sealer = Sealer::new(&warden_domain::secrets::Secret::new("k"));
        for id in ["rec-a", "rec-b"] {
            let mut r = Recorder::create(db.clone(), Some(sealer.clone()), id, "t", 5)
                .await
                .unwrap();
            r.output(format!("{id}: password=hunter2").as_bytes())
                .await
                .unwrap();
            r.finish().await.unwrap();
        }
        let raw = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT data FROM terminal_recording_chunks",
            ))
            .await
            .unwrap();
        assert_eq!(raw.len(), 4);
        for row in raw {
            let data: Vec<u8> = row.try_get("", "data").unwrap();
            assert!(Sealer::is_sealed_bytes(&data));
            assert!(!data.windows(7).any(|w| w == b"hunter2"));
        }
        let text = String::from_utf8(stored_with(&db, Some(&sealer), "rec-a").await).unwrap();
        assert!(text.contains("rec-a: password=hunter2"), "{text}");
        // Without the key, or with another, or a chunk moved into another recording: no play.
        let other = Sealer::new(&warden_domain::secrets::Secret::new("other"));
        for s in [None, Some(&other)] {
            assert!(
                warden_domain::recordings::store::page(&db, s, "rec-a", -1, 10)
                    .await
                    .is_err()
            );
        }
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            "UPDATE terminal_recording_chunks SET data = (SELECT data FROM \
             terminal_recording_chunks WHERE recording_id = 'rec-b' AND seq = 1) \
             WHERE recording_id = 'rec-a' AND seq = 1",
        ))
        .await
        .unwrap();
        assert!(
            warden_domain::recordings::store::page(&db, Some(&sealer), "rec-a", -1, 10)
                .await
                .is_err()
        );
    }
}
