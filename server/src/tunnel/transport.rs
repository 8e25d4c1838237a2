//! The agent tunnel as the gateway's [`ClusterTransport`]: streams are tunnel streams, found by
//! cluster id only. Warden's own calls carry the management marker and no credential, and the
//! agent adds its own (its service account); the agent refuses any other request without a
//! user token. A user's
//! request carries a short-lived token of the user's service account, obtained with the
//! TokenRequest API through the agent (bound to the user's anchor Secret, so deleting it kills
//! the tokens; cached until 80 % of their life); the agent forwards it with that token and
//! nothing of its own, so the cluster's RBAC sees only the user's service account. Legacy token
//! Secrets are never used, and the agent needs no right to impersonate.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;

use super::ClusterConnections;
use crate::gateway::tokens::TokenCache;
use crate::gateway::transport::{As, BoxIo, ClusterRef, ClusterTransport, TransportError};

pub struct TunnelTransport {
    conns: Arc<ClusterConnections>,
    tokens: TokenCache,
}

impl TunnelTransport {
    pub fn new(conns: Arc<ClusterConnections>) -> Self {
        Self {
            conns,
            tokens: TokenCache::default(),
        }
    }

    /// Fail at once when no tunnel of the cluster (by id only: a name can be renamed or
    /// reused, an id cannot) is here; with several replicas, opening a stream asks the
    /// database which replica holds it.
    fn check_reachable(&self, cluster: &ClusterRef) -> Result<(), TransportError> {
        if self.conns.get_by_id(cluster.id).is_some() || self.conns.replicated() {
            Ok(())
        } else {
            Err(TransportError::NotConnected(cluster.name.clone()))
        }
    }
}

/// The header that makes a tunnelled request run with `token`. Never an empty token.
pub fn bearer_headers(token: &str) -> Result<HeaderMap, String> {
    if token.trim().is_empty() {
        return Err("refusing to send an empty token".into());
    }
    let mut h = HeaderMap::new();
    let v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    h.insert(http::header::AUTHORIZATION, v);
    Ok(h)
}

/// The headers of Warden's own (management) calls through a tunnel.
pub fn management_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        warden_domain::agent_protocol::HEADER_MANAGEMENT,
        HeaderValue::from_static(warden_domain::agent_protocol::MANAGEMENT_VALUE),
    );
    h
}

#[async_trait]
impl ClusterTransport for TunnelTransport {
    async fn connect(&self, cluster: &ClusterRef) -> Result<BoxIo, TransportError> {
        self.check_reachable(cluster)?;
        self.conns
            .open_stream(cluster.id, &cluster.name)
            .await
            .map_err(|e| match e {
                super::TunnelError::NotConnected(n) => TransportError::NotConnected(n),
                e => TransportError::Unreachable {
                    cluster: cluster.name.clone(),
                    message: e.to_string(),
                },
            })
    }

    async fn authenticate(
        &self,
        cluster: &ClusterRef,
        who: &As,
    ) -> Result<HeaderMap, TransportError> {
        let kube_err = |message: String| TransportError::Kube {
            cluster: cluster.name.clone(),
            message,
        };
        match who {
            // Warden's own identity there: asked for explicitly, with the management marker
            // (the gateway strips every `x-warden-*` header a client sends).
            As::Warden => Ok(management_headers()),
            As::ServiceAccount {
                namespace,
                name,
                bound_secret,
            } => {
                let client = self.client(cluster).await?;
                // Cached by the cluster's id: a name can be renamed or taken by another
                // cluster, whose agent must never be handed this one's tokens.
                let token = self
                    .tokens
                    .token(
                        &client,
                        &cluster.id.to_string(),
                        namespace,
                        name,
                        bound_secret.as_deref(),
                    )
                    .await
                    .map_err(|e| {
                        kube_err(format!("cannot get a token for {namespace}/{name}: {e}"))
                    })?;
                bearer_headers(&token).map_err(kube_err)
            }
        }
    }

    async fn client(&self, cluster: &ClusterRef) -> Result<kube::Client, TransportError> {
        self.check_reachable(cluster)?;
        self.conns
            .client_by_id(cluster.id, &cluster.name)
            .ok_or_else(|| TransportError::NotConnected(cluster.name.clone()))
    }

    fn forget(&self, cluster: &ClusterRef, service_account: &str) {
        self.tokens.forget(&cluster.id.to_string(), service_account);
    }

    fn reaches(&self, cluster: &ClusterRef) -> bool {
        self.conns.reaches(cluster.id)
    }
}
