//! Reading a cluster **as the user**: the namespaces and pods a person may see, listed on the
//! cluster with their own service account (never Warden's or the agent's view), for the pod
//! picker. The reads themselves run in the server, which plugs them in at start-up through
//! [`ClusterReadHooks`] (the same way as [`crate::streams::LiveRegistry`]); the use cases here
//! check the caller and the input, ask the port, and audit refusals.

use async_trait::async_trait;
use std::sync::{Arc, OnceLock};

use crate::access::Principal;
use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::dto::{ClusterNamespacesDto, PodListDto};
use crate::ids::UserId;

/// Why a read was not answered. The messages are meant for the caller: they describe the
/// caller's own access, never Warden's internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The caller may not read this (Warden's grants, or the cluster's RBAC, refused it).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// Input that is not a Kubernetes name.
    #[error("{0}")]
    Invalid(String),
    /// The cluster cannot be reached now, or Warden cannot decide.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads on a cluster as a given user, through the same gate as the gateway (kubectl access
/// to the cluster, read-only rules) and as the user's own service account there.
#[async_trait]
pub trait ClusterReader: Send + Sync {
    async fn namespaces(
        &self,
        user: UserId,
        cluster: &str,
    ) -> Result<ClusterNamespacesDto, ReadError>;
    async fn pods(
        &self,
        user: UserId,
        cluster: &str,
        namespace: &str,
    ) -> Result<PodListDto, ReadError>;
}

#[derive(Default)]
pub struct ClusterReadHooks {
    reader: OnceLock<Arc<dyn ClusterReader>>,
}

impl ClusterReadHooks {
    pub fn set_reader(&self, r: Arc<dyn ClusterReader>) {
        let _ = self.reader.set(r);
    }
    fn reader(&self) -> Result<&Arc<dyn ClusterReader>, ReadError> {
        self.reader
            .get()
            .ok_or_else(|| ReadError::Unavailable("Warden cannot read clusters right now".into()))
    }
}

/// A Kubernetes name (DNS subdomain: lower-case letters, digits, `-` and `.`).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn check_name(field: &str, v: &str) -> Result<(), ReadError> {
    if valid_name(v) {
        Ok(())
    } else {
        Err(ReadError::Invalid(format!("{field} is not a valid name")))
    }
}

/// The namespaces of `cluster` the caller may look into.
pub async fn list_namespaces(
    svc: &crate::Services,
    who: &Principal,
    cluster: &str,
) -> Result<ClusterNamespacesDto, ReadError> {
    check_name("cluster", cluster)?;
    let r = svc
        .cluster_reads
        .reader()?
        .namespaces(who.user_id, cluster)
        .await;
    audit_refusal(svc, who, "namespaces.list", cluster, None, &r).await;
    r
}

/// The pods of `namespace` on `cluster`, listed as the caller.
pub async fn list_pods(
    svc: &crate::Services,
    who: &Principal,
    cluster: &str,
    namespace: &str,
) -> Result<PodListDto, ReadError> {
    check_name("cluster", cluster)?;
    check_name("namespace", namespace)?;
    let r = svc
        .cluster_reads
        .reader()?
        .pods(who.user_id, cluster, namespace)
        .await;
    audit_refusal(svc, who, "pods.list", cluster, Some(namespace), &r).await;
    r
}

/// Denials are audited (allowed reads are not: the picker refreshes them often, and they
/// change nothing).
async fn audit_refusal<T>(
    svc: &crate::Services,
    who: &Principal,
    action: &str,
    cluster: &str,
    namespace: Option<&str>,
    r: &Result<T, ReadError>,
) {
    let Err(ReadError::Forbidden(reason)) = r else {
        return;
    };
    let mut ev =
        AuditEvent::by(who, AuditKind::Console, action, Outcome::Denied).reason(reason.clone());
    ev.cluster = Some(cluster.to_owned());
    ev.namespace = namespace.map(str::to_owned);
    ev.resource_kind = Some(
        if namespace.is_some() {
            "pods"
        } else {
            "namespaces"
        }
        .into(),
    );
    if let Err(e) = svc.audit.record(ev).await {
        tracing::error!(error = %e, "could not audit a refused cluster read");
    }
}
