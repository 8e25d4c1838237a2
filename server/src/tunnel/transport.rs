//! The agent tunnel as the gateway's [`ClusterTransport`]: streams are tunnel streams; the
//! agent authenticates them with its own service account, and a request runs as a user's
//! service account through impersonation (`Impersonate-User:
//! system:serviceaccount:NS:NAME`), which the cluster's RBAC checks like any other request.
//! The agent's Role allows impersonating service accounts of `warden-system` only, so no other
//! identity can be assumed through it.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;

use super::ClusterConnections;
use crate::gateway::transport::{As, BoxIo, ClusterRef, ClusterTransport, TransportError};

pub struct TunnelTransport(pub Arc<ClusterConnections>);

impl TunnelTransport {
    fn tunnel(&self, cluster: &ClusterRef) -> Result<Arc<super::Tunnel>, TransportError> {
        self.0
            .get_by_id(&cluster.id)
            .or_else(|| self.0.get(&cluster.name))
            .ok_or_else(|| TransportError::NotConnected(cluster.name.clone()))
    }
}

/// The headers that make a tunnelled request run as `who`.
pub fn identity_headers(who: &As) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    if let As::ServiceAccount {
        namespace, name, ..
    } = who
    {
        let v = HeaderValue::from_str(&format!("system:serviceaccount:{namespace}:{name}"))
            .map_err(|e| e.to_string())?;
        h.insert("impersonate-user", v);
    }
    Ok(h)
}

#[async_trait]
impl ClusterTransport for TunnelTransport {
    async fn connect(&self, cluster: &ClusterRef) -> Result<BoxIo, TransportError> {
        let t = self.tunnel(cluster)?;
        let s = t
            .open_stream()
            .await
            .map_err(|e| TransportError::Unreachable {
                cluster: cluster.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Box::new(s))
    }

    async fn authenticate(
        &self,
        cluster: &ClusterRef,
        who: &As,
    ) -> Result<HeaderMap, TransportError> {
        identity_headers(who).map_err(|message| TransportError::Kube {
            cluster: cluster.name.clone(),
            message,
        })
    }

    async fn client(&self, cluster: &ClusterRef) -> Result<kube::Client, TransportError> {
        let t = self.tunnel(cluster)?;
        self.0
            .client(&t.cluster)
            .ok_or_else(|| TransportError::NotConnected(cluster.name.clone()))
    }

    fn reaches(&self, cluster: &ClusterRef) -> bool {
        self.tunnel(cluster).is_ok()
    }
}
