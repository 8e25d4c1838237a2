//! Agents' heartbeats, written in groups. Each tunnel hands its heartbeat to one writer per
//! process, which stores whatever has arrived since its last write in one transaction
//! ([`agents::record_heartbeats`]), checks the senders' credentials in one query, and then
//! answers every sender: a group commit. With a few agents a heartbeat is written at once;
//! with thousands, a write carries hundreds of them instead of each taking the database's
//! write lock on its own (on SQLite, a heartbeat a millisecond kept every other writer, an
//! import say, waiting).

use tokio::sync::{mpsc, oneshot};
use warden_domain::clusters::agents;
use warden_domain::dto::ClusterFacts;
use warden_domain::ids::ClusterId;
use warden_domain::Services;

use std::sync::{Arc, Weak};

/// At most this many heartbeats in one write.
const MAX_GROUP: usize = 2000;

/// Stored: whether the sender's agent credential is still valid.
type Done = oneshot::Sender<Result<bool, String>>;

struct Beat {
    cluster_id: ClusterId,
    credential_id: String,
    facts: Option<ClusterFacts>,
    done: Done,
}

/// The process's heartbeat writer (see the module).
pub struct Heartbeats {
    tx: mpsc::UnboundedSender<Beat>,
}

impl Heartbeats {
    /// Start the writer; it ends when this handle is dropped. `tunnels`: the registry whose
    /// live tunnels a heartbeat may mark connected again.
    pub fn start(services: Arc<Services>, tunnels: Weak<super::ClusterConnections>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Beat>();
        tokio::spawn(async move {
            let mut group = Vec::new();
            while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
                let beats: Vec<(ClusterId, Option<ClusterFacts>)> = group
                    .iter_mut()
                    .map(|b: &mut Beat| (b.cluster_id, b.facts.take()))
                    .collect();
                let credentials: Vec<&str> =
                    group.iter().map(|b| b.credential_id.as_str()).collect();
                let is_live = |id: ClusterId| tunnels.upgrade().is_some_and(|t| t.has_tunnel(id));
                let result = match agents::record_heartbeats(&services, &beats, &is_live).await {
                    Ok(()) => agents::valid_credentials(&services, &credentials)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                for b in group.drain(..) {
                    let answer = match &result {
                        Ok(valid) => Ok(valid.contains(&b.credential_id)),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = b.done.send(answer);
                }
            }
        });
        Self { tx }
    }

    /// Record a heartbeat of `cluster_id` (with new facts, if any) sent with the agent
    /// credential `credential_id`; resolves once it is stored, to whether that credential is
    /// still valid.
    pub async fn record(
        &self,
        cluster_id: ClusterId,
        credential_id: &str,
        facts: Option<ClusterFacts>,
    ) -> Result<bool, String> {
        let (done, stored) = oneshot::channel();
        self.tx
            .send(Beat {
                cluster_id,
                credential_id: credential_id.to_owned(),
                facts,
                done,
            })
            .map_err(|_| "the heartbeat writer has stopped".to_owned())?;
        stored
            .await
            .map_err(|_| "the heartbeat writer has stopped".to_owned())?
    }
}
