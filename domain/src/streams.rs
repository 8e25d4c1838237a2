//! Live streams and web terminals as use cases: list one's own (or, with `kubeconfig.write` on
//! the organization, everyone's), and end one now. The registry itself lives in the server
//! (`server/src/live.rs`), which plugs it in at start-up through [`StreamHooks`].

use std::sync::{Arc, OnceLock};

use crate::access::{Action, Principal};
use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::dto::{LiveStreamDto, Page};
use crate::error::{DomainError, DomainResult};
use crate::permissions::Permission;
use crate::Services;

/// The server's registry of live streams: with several replicas, every replica's streams.
#[async_trait::async_trait]
pub trait LiveRegistry: Send + Sync {
    /// The streams open now (an error when another replica's cannot be read).
    async fn list(&self) -> Result<Vec<LiveStreamDto>, String>;
    /// End a stream with the reason shown to its holder; whether it was open.
    async fn close(&self, id: u64, reason: &str) -> Result<bool, String>;
}

#[derive(Default)]
pub struct StreamHooks {
    registry: OnceLock<Arc<dyn LiveRegistry>>,
}

impl StreamHooks {
    pub fn set_registry(&self, r: Arc<dyn LiveRegistry>) {
        let _ = self.registry.set(r);
    }
    async fn registry(&self) -> DomainResult<Vec<LiveStreamDto>> {
        match self.registry.get() {
            Some(r) => r.list().await.map_err(unreadable),
            None => Ok(Vec::new()),
        }
    }
}

fn unreadable(e: String) -> DomainError {
    DomainError::Internal(format!("cannot read the live streams: {e}"))
}

/// The caller's live streams, or everyone's (`all`, with `kubeconfig.write` on the
/// organization); optionally of one kind.
pub async fn list(
    svc: &Services,
    who: &Principal,
    all: bool,
    kind: Option<crate::dto::StreamKind>,
) -> DomainResult<Page<LiveStreamDto>> {
    if all {
        svc.policy
            .authorize(who, Action::org(Permission::KubeconfigWrite))
            .await
            .map_err(|d| DomainError::forbidden(d.reason))?;
    }
    let me = who.user_id.to_string();
    let items = svc
        .streams
        .registry()
        .await?
        .into_iter()
        .filter(|s| all || s.user_id == me)
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .collect();
    Ok(Page { items, next: None })
}

/// Whether the caller may see and end everyone's streams (no audit: for showing the view).
pub async fn may_manage_all(svc: &Services, who: &Principal) -> bool {
    svc.policy
        .explain(who.user_id, &Action::org(Permission::KubeconfigWrite))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// End a stream now: one's own, or anyone's with `kubeconfig.write` on the organization. Its
/// holder is told "ended by <who>"; audited as `stream.end`.
pub async fn end(svc: &Services, who: &Principal, id: u64) -> DomainResult<()> {
    let Some(info) = svc
        .streams
        .registry()
        .await?
        .into_iter()
        .find(|s| s.id == id)
    else {
        return Err(DomainError::not_found("stream"));
    };
    if info.user_id != who.user_id.to_string() {
        // Others' streams are not even acknowledged to exist without the right.
        svc.policy
            .authorize(who, Action::org(Permission::KubeconfigWrite))
            .await
            .map_err(|_| DomainError::not_found("stream"))?;
    }
    let reason = format!("ended by {}", who.email);
    let closed = match svc.streams.registry.get() {
        Some(r) => r.close(id, &reason).await.map_err(unreadable)?,
        None => false,
    };
    if !closed {
        return Err(DomainError::not_found("stream"));
    }
    let mut ev = AuditEvent::by(who, AuditKind::Console, "stream.end", Outcome::Allowed);
    ev.cluster = Some(info.cluster.clone());
    ev.namespace = info.namespace.clone();
    ev.details = serde_json::json!({"stream_id": id, "kind": info.kind, "user": info.user});
    svc.audit.record(ev).await?;
    Ok(())
}
