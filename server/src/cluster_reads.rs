//! [`warden_domain::clusters::reads::ClusterReader`] over the gateway: a read on a cluster runs
//! through the gateway's checks for a console user ([`authorize`] with [`Via::Console`]: the
//! user is active, may use kubectl on the cluster through their bindings now), then as the
//! user's own service account there (reconciled by [`Gateway::ensure_identity`], a
//! TokenRequest token from the transport), exactly like the web terminal's exec. What the
//! cluster's RBAC refuses is refused here too: the picker never shows Warden's view.

use async_trait::async_trait;
use http::StatusCode;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use warden_domain::clusters::reads::{ClusterReader, ReadError};
use warden_domain::dto::{ClusterNamespacesDto, NamespaceAccessDto, PodDto, PodListDto};
use warden_domain::ids::UserId;
use warden_domain::kubectl::KubeLevel;

use crate::gateway::proxy::{authorize, Authorized, Refusal, Via};
use crate::gateway::transport::{kube_client_over, As, ClusterRef};
use crate::gateway::{rbac, request, Gateway};

/// The gateway as a [`ClusterReader`]. Holds the gateway weakly: the services own the reader.
pub struct GatewayReads(Weak<Gateway>);

impl GatewayReads {
    pub fn install(gw: &Arc<Gateway>) {
        gw.services
            .cluster_reads
            .set_reader(Arc::new(GatewayReads(Arc::downgrade(gw))));
    }

    fn gateway(&self) -> Result<Arc<Gateway>, ReadError> {
        self.0
            .upgrade()
            .ok_or_else(|| ReadError::Unavailable("Warden is shutting down".into()))
    }

    /// The gate, then a client that acts as the user's service account on the cluster.
    async fn as_user(
        &self,
        user: UserId,
        cluster: &str,
        path: &str,
    ) -> Result<(Authorized, kube::Client), ReadError> {
        let gw = self.gateway()?;
        let intent = request::parse(&http::Method::GET, path, None).intent();
        let epoch = gw.services.policy.epoch();
        let authorized = authorize(&gw, Via::Console, user, cluster, &intent, epoch)
            .await
            .map_err(refused)?;
        let cref = ClusterRef {
            id: authorized.adm.cluster.id,
            name: authorized.adm.cluster.name.clone(),
        };
        let sa = gw
            .ensure_identity(
                &cref,
                &authorized.adm.user,
                &authorized.adm.sa_name,
                &authorized.access,
                namespace_of(path),
            )
            .await
            .map_err(|e| {
                tracing::warn!(cluster = %cref.name, detail = %e.detail, "cluster read: identity not ready");
                status_error(e.status, e.message)
            })?;
        let who = As::ServiceAccount {
            namespace: rbac::NAMESPACE.to_owned(),
            name: sa.clone(),
            bound_secret: Some(rbac::anchor_name(&sa)),
        };
        let headers = gw.transport.authenticate(&cref, &who).await.map_err(|e| {
            tracing::warn!(cluster = %cref.name, error = %e, "cluster read: no token");
            unreachable(&cref.name)
        })?;
        Ok((
            authorized,
            kube_client_over(gw.transport.clone(), &cref, headers),
        ))
    }
}

/// How long a console read waits for a cluster's whole answer: an agent that never answers,
/// or trickles its answer, does not hold the page (and Warden's memory) longer.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `read`, or an error once [`READ_TIMEOUT`] has passed.
async fn within_time<T>(
    read: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no complete answer within {} s", READ_TIMEOUT.as_secs()).into(),
            ))
        })
}

fn unreachable(cluster: &str) -> ReadError {
    ReadError::Unavailable(format!(
        "the cluster {cluster} is not reachable through Warden right now"
    ))
}

fn status_error(status: StatusCode, message: String) -> ReadError {
    match status {
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ReadError::Forbidden(message),
        StatusCode::NOT_FOUND => ReadError::NotFound(message),
        StatusCode::BAD_REQUEST => ReadError::Invalid(message),
        _ => ReadError::Unavailable(message),
    }
}

/// The namespace a read addresses (`/api/v1/namespaces/<ns>/...`).
fn namespace_of(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.split('/').next())
        .filter(|ns| !ns.is_empty())
}

fn refused(r: Refusal) -> ReadError {
    if let Some(reason) = &r.reason {
        tracing::info!(%reason, message = %r.message, "cluster read refused");
    }
    status_error(r.status, r.message)
}

#[async_trait]
impl ClusterReader for GatewayReads {
    async fn namespaces(
        &self,
        user: UserId,
        cluster: &str,
    ) -> Result<ClusterNamespacesDto, ReadError> {
        let (authorized, client) = self.as_user(user, cluster, "/api/v1/namespaces").await?;
        let access = &authorized.access;
        // Warden's grants name some namespaces; the cluster lists the rest if the user's
        // service account may list namespaces there.
        let mut names: BTreeSet<String> = access
            .namespace_read
            .iter()
            .chain(access.namespace_write.iter())
            .cloned()
            .collect();
        let cluster_wide = access.level(None) > KubeLevel::None;
        match within_time(Api::<Namespace>::all(client).list(&ListParams::default())).await {
            Ok(list) => {
                let listed = list.items.into_iter().filter_map(|n| n.metadata.name);
                if cluster_wide {
                    names.extend(listed);
                } else {
                    // Namespace grants only: the cluster's list adds nothing they may use.
                    let _ = listed;
                }
            }
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => {}
            Err(e) => {
                tracing::warn!(cluster, error = %e, "cluster read: namespaces");
                if names.is_empty() {
                    return Err(unreachable(cluster));
                }
            }
        }
        Ok(ClusterNamespacesDto {
            cluster: authorized.adm.cluster.name.clone(),
            items: names
                .into_iter()
                .map(|name| NamespaceAccessDto {
                    can_exec: access.level(Some(&name)) == KubeLevel::Write,
                    name,
                })
                .collect(),
            cluster_wide,
        })
    }

    async fn pods(
        &self,
        user: UserId,
        cluster: &str,
        namespace: &str,
    ) -> Result<PodListDto, ReadError> {
        let path = format!("/api/v1/namespaces/{namespace}/pods");
        let no_access = || {
            ReadError::Forbidden(format!(
                "you have no access to pods in namespace {namespace}"
            ))
        };
        // The gate refuses a namespace no grant reaches, in words naming what is granted.
        let (authorized, client) = self.as_user(user, cluster, &path).await?;
        let level = authorized.access.level(Some(namespace));
        let list = match within_time(
            Api::<Pod>::namespaced(client, namespace).list(&ListParams::default()),
        )
        .await
        {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => {
                tracing::info!(cluster, namespace, message = %s.message, "the cluster refused a pod list");
                return Err(no_access());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(ReadError::NotFound(format!("no namespace {namespace}")))
            }
            Err(e) => {
                tracing::warn!(cluster, namespace, error = %e, "cluster read: pods");
                return Err(unreachable(cluster));
            }
        };
        let mut items: Vec<PodDto> = list.items.into_iter().map(pod_dto).collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(PodListDto {
            cluster: authorized.adm.cluster.name.clone(),
            namespace: namespace.to_owned(),
            can_exec: level == KubeLevel::Write,
            items,
        })
    }
}

fn pod_dto(p: Pod) -> PodDto {
    let spec = p.spec.unwrap_or_default();
    let status = p.status.unwrap_or_default();
    let containers: Vec<String> = spec.containers.into_iter().map(|c| c.name).collect();
    let ready = status
        .container_statuses
        .as_ref()
        .map(|s| s.iter().filter(|c| c.ready).count())
        .unwrap_or(0);
    PodDto {
        name: p.metadata.name.unwrap_or_default(),
        phase: status.phase.unwrap_or_else(|| "Unknown".into()),
        ready: format!("{ready}/{}", containers.len()),
        containers,
        node: spec.node_name,
        created_at: p.metadata.creation_timestamp.map(|t| t.0.to_string()),
    }
}
