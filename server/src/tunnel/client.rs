//! A `kube::Client` whose transport is the agent tunnel: a tower `Service` that opens a tunnel
//! stream per request and speaks HTTP/1.1 over it with hyper's client connection (upgrades
//! included, so exec, attach and port-forward work). A request to a cluster that is not
//! connected fails at once; a tunnel lost mid-request fails the request (or its streaming body)
//! with a message naming the cluster, never a hang.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use warden_domain::ids::ClusterId;

use super::ClusterConnections;
use warden_domain::agent_protocol::{limits, HEADER_MANAGEMENT, MANAGEMENT_VALUE};

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the cluster {0} is not connected to Warden (its agent has no open tunnel)")]
    NotConnected(String),
    #[error("the tunnel to cluster {cluster} closed: {message}")]
    Closed { cluster: String, message: String },
    #[error("the tunnel to cluster {cluster} closed while the request was in flight: {message}")]
    Dropped { cluster: String, message: String },
    #[error(
        "the agent of cluster {cluster} answered more than {limit} bytes to a management call"
    )]
    TooLarge { cluster: String, limit: usize },
}

/// The tower service behind [`kube_client`]. Without an `Authorization` among its headers it
/// makes Warden's own management calls, which run with the agent's identity (each carries the
/// management marker); with one, the calls run as that token's identity and nothing else.
/// Answers are bounded ([`limits::MAX_MANAGEMENT_RESPONSE`] bytes per body).
#[derive(Clone)]
pub struct TunnelService {
    conns: Arc<ClusterConnections>,
    /// The cluster's id: the only key tunnels are found by.
    cluster_id: ClusterId,
    /// Its name, for messages.
    cluster: String,
    headers: HeaderMap,
}

impl TunnelService {
    pub fn new(
        conns: Arc<ClusterConnections>,
        cluster_id: ClusterId,
        cluster: &str,
        headers: HeaderMap,
    ) -> Self {
        Self {
            conns,
            cluster_id,
            cluster: cluster.to_owned(),
            headers,
        }
    }
}

/// A `kube::Client` for the cluster `cluster_id` (named `cluster` in messages) through its
/// agent, with `headers` on every request (see [`TunnelService`]).
pub fn kube_client(
    conns: Arc<ClusterConnections>,
    cluster_id: ClusterId,
    cluster: &str,
    headers: HeaderMap,
) -> kube::Client {
    kube::Client::new(
        TunnelService::new(conns, cluster_id, cluster, headers),
        "default",
    )
}

/// Open a tunnel stream to the cluster (by id) and an HTTP/1.1 connection over it.
pub async fn connect(
    conns: &ClusterConnections,
    cluster_id: ClusterId,
    cluster: &str,
) -> Result<hyper::client::conn::http1::SendRequest<kube::client::Body>, TunnelError> {
    let stream = conns.open_stream(cluster_id, cluster).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| TunnelError::Closed {
            cluster: cluster.to_owned(),
            message: e.to_string(),
        })?;
    let name = cluster.to_owned();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(cluster = %name, error = %e, "tunnel connection ended with an error");
        }
    });
    Ok(sender)
}

impl tower::Service<Request<kube::client::Body>> for TunnelService {
    type Response = Response<TunnelBody>;
    type Error = TunnelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<kube::client::Body>) -> Self::Future {
        let conns = self.conns.clone();
        let cluster = self.cluster.clone();
        let cluster_id = self.cluster_id;
        let headers = self.headers.clone();
        Box::pin(async move {
            let mut sender = connect(&conns, cluster_id, &cluster).await?;
            // Origin-form URI; the agent sends it on to its API server.
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            *req.uri_mut() =
                pq.parse()
                    .map_err(|e: http::uri::InvalidUri| TunnelError::Closed {
                        cluster: cluster.clone(),
                        message: e.to_string(),
                    })?;
            if let Ok(host) =
                HeaderValue::from_str(&format!("{cluster_id}.clusters.warden.internal"))
            {
                req.headers_mut().insert(http::header::HOST, host);
            }
            req.headers_mut().remove(http::header::AUTHORIZATION);
            req.headers_mut().remove(HEADER_MANAGEMENT);
            for (k, v) in headers.iter() {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            // Without a token, Warden's own call: the agent's identity, asked for explicitly.
            if !headers.contains_key(http::header::AUTHORIZATION) {
                req.headers_mut().insert(
                    HEADER_MANAGEMENT,
                    HeaderValue::from_static(MANAGEMENT_VALUE),
                );
            }
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| TunnelError::Dropped {
                    cluster: cluster.clone(),
                    message: e.to_string(),
                })?;
            Ok(resp.map(|body| TunnelBody {
                inner: body,
                cluster,
                read: 0,
            }))
        })
    }
}

/// A response body from the tunnel; a failure names the cluster and the lost tunnel. At most
/// [`limits::MAX_MANAGEMENT_RESPONSE`] bytes are read: an agent cannot make Warden buffer more.
pub struct TunnelBody {
    inner: Incoming,
    cluster: String,
    read: usize,
}

impl http_body::Body for TunnelBody {
    type Data = Bytes;
    type Error = TunnelError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, TunnelError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.read += frame.data_ref().map_or(0, |d| d.len());
                if self.read > limits::MAX_MANAGEMENT_RESPONSE {
                    return Poll::Ready(Some(Err(TunnelError::TooLarge {
                        cluster: self.cluster.clone(),
                        limit: limits::MAX_MANAGEMENT_RESPONSE,
                    })));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(TunnelError::Dropped {
                cluster: self.cluster.clone(),
                message: e.to_string(),
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
