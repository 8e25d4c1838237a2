//! Agents' heartbeats, written in groups. Each tunnel hands its heartbeat to one writer per
//! process, which stores whatever has arrived since its last write in one go
//! ([`agents::record_heartbeats`]) and then tells every sender it is stored: a group commit.
//! With a few agents a heartbeat is written at once; with thousands, a write carries hundreds
//! of them instead of each taking the database's write lock on its own (on SQLite, a
//! heartbeat a millisecond kept every other writer, an import say, waiting).

use tokio::sync::{mpsc, oneshot};
use warden_domain::agents;
use warden_domain::dto::ClusterFacts;
use warden_domain::Services;

use std::sync::Arc;

/// At most this many heartbeats in one write.
const MAX_GROUP: usize = 2000;

type Done = oneshot::Sender<Result<(), String>>;

/// The process's heartbeat writer (see the module).
pub struct Heartbeats {
    tx: mpsc::UnboundedSender<(String, Option<ClusterFacts>, Done)>,
}

impl Heartbeats {
    /// Start the writer; it ends when this handle is dropped.
    pub fn start(services: Arc<Services>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<ClusterFacts>, Done)>();
        tokio::spawn(async move {
            let mut group = Vec::new();
            while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
                let beats: Vec<(String, Option<ClusterFacts>)> = group
                    .iter_mut()
                    .map(|(id, facts, _)| (std::mem::take(id), facts.take()))
                    .collect();
                let result = agents::record_heartbeats(&services, &beats)
                    .await
                    .map_err(|e| e.to_string());
                for (_, _, done) in group.drain(..) {
                    let _ = done.send(result.clone());
                }
            }
        });
        Self { tx }
    }

    /// Record a heartbeat of `cluster_id` (with new facts, if any); resolves once it is stored.
    pub async fn record(
        &self,
        cluster_id: &str,
        facts: Option<ClusterFacts>,
    ) -> Result<(), String> {
        let (done, stored) = oneshot::channel();
        self.tx
            .send((cluster_id.to_owned(), facts, done))
            .map_err(|_| "the heartbeat writer has stopped".to_owned())?;
        stored
            .await
            .map_err(|_| "the heartbeat writer has stopped".to_owned())?
    }
}
