//! How the gateway reaches a cluster's API server: [`ClusterTransport`].
//!
//! A transport opens byte streams to a cluster's API server (the gateway speaks HTTP/1.1 over
//! them, upgrades included), says which request headers make a request run as a given identity
//! (Warden's own, or a user's service account), and gives a `kube::Client` with Warden's own
//! identity for management calls (service accounts, RBAC, TokenRequest).
//!
//! Implementations:
//! - [`DirectTransport`]: TLS straight to an API server URL with a CA and an admin credential
//!   (tests, benchmarks, development). It mints the service accounts' tokens itself with the
//!   TokenRequest API ([`super::tokens::TokenCache`]).
//! - the agent tunnel (issue 5): streams are tunnel streams, the agent adds credentials
//!   (see `tunnel_transport` when the tunnel registry exists).
//!
//! [`Transports`] routes each cluster to the transport that reaches it.

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use warden_domain::ids::ClusterId;

use super::tokens::TokenCache;

/// A byte stream to an API server.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// The cluster a call is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterRef {
    pub id: ClusterId,
    pub name: String,
}

/// Who a request runs as on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum As {
    /// Warden's own identity there (the agent's service account, or the direct admin).
    Warden,
    /// A service account, with the object its tokens are bound to (deleting the object kills
    /// them).
    ServiceAccount {
        namespace: String,
        name: String,
        bound_secret: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No agent connected (or no endpoint known) for the cluster.
    #[error("the cluster {0} is not connected to Warden")]
    NotConnected(String),
    #[error("cannot reach the cluster {cluster}: {message}")]
    Unreachable { cluster: String, message: String },
    #[error("the cluster {cluster} refused Warden's management call: {message}")]
    Kube { cluster: String, message: String },
}

#[async_trait]
pub trait ClusterTransport: Send + Sync + 'static {
    /// A new byte stream to the cluster's API server. Requests written on it must carry the
    /// headers [`ClusterTransport::authenticate`] gives.
    async fn connect(&self, cluster: &ClusterRef) -> Result<BoxIo, TransportError>;

    /// The request headers that make a request run as `who` on the cluster.
    async fn authenticate(
        &self,
        cluster: &ClusterRef,
        who: &As,
    ) -> Result<HeaderMap, TransportError>;

    /// A client with Warden's own identity on the cluster, for management calls.
    async fn client(&self, cluster: &ClusterRef) -> Result<kube::Client, TransportError>;

    /// Forget what is cached for a service account (it was deleted or its token refused).
    fn forget(&self, _cluster: &ClusterRef, _service_account: &str) {}

    /// Whether the transport can reach the cluster now (without trying).
    fn reaches(&self, cluster: &ClusterRef) -> bool;
}

pub type SharedTransport = Arc<dyn ClusterTransport>;

// ---- hyper plumbing: a connector and a kube client over any transport ----

/// The authority under which a cluster's connections are pooled.
pub fn pool_host(cluster: &ClusterRef) -> String {
    format!("{}.clusters.warden.internal", cluster.id)
}

/// A hyper connector that opens transport streams; the host of the URI names the cluster.
#[derive(Clone)]
pub struct Connector {
    transport: SharedTransport,
    clusters: Arc<RwLock<HashMap<String, ClusterRef>>>,
}

impl Connector {
    pub fn new(transport: SharedTransport) -> Self {
        Self {
            transport,
            clusters: Default::default(),
        }
    }

    /// The base URI for requests to `cluster` through this connector.
    pub fn base(&self, cluster: &ClusterRef) -> String {
        let host = pool_host(cluster);
        if let Ok(mut m) = self.clusters.write() {
            if !m.contains_key(&host) {
                m.insert(host.clone(), cluster.clone());
            }
        }
        format!("http://{host}")
    }
}

/// A transport stream, as hyper wants it.
pub struct Conn(TokioIo<BoxIo>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, TransportError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_owned();
        let cluster = self
            .clusters
            .read()
            .ok()
            .and_then(|m| m.get(&host).cloned());
        let transport = self.transport.clone();
        Box::pin(async move {
            let cluster = cluster.ok_or_else(|| TransportError::NotConnected(host.clone()))?;
            let io = transport.connect(&cluster).await?;
            Ok(Conn(TokioIo::new(io)))
        })
    }
}

/// The pooled HTTP/1.1 client the gateway forwards with.
pub type HttpClient<B> = hyper_util::client::legacy::Client<Connector, B>;

pub fn http_client<B>(connector: Connector) -> HttpClient<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .build(connector)
}

/// A `kube::Client` whose requests go through `transport` to `cluster`, with `headers`
/// (the identity) on every request. Of each answer, at most
/// [`limits::MAX_MANAGEMENT_RESPONSE`](warden_domain::agent_protocol::limits) bytes are read
/// (the client buffers whole bodies), so a cluster's agent cannot make Warden buffer more.
pub fn kube_client_over(
    transport: SharedTransport,
    cluster: &ClusterRef,
    headers: HeaderMap,
) -> kube::Client {
    let connector = Connector::new(transport);
    let base = connector.base(cluster);
    let http: HttpClient<kube::client::Body> = http_client(connector);
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut req: Request<kube::client::Body>| {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            if let Ok(uri) = format!("{base}{pq}").parse() {
                *req.uri_mut() = uri;
            }
            for (k, v) in headers.iter() {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            req
        })
        .map_response(|r: http::Response<hyper::body::Incoming>| {
            r.map(|body| {
                http_body_util::Limited::new(
                    body,
                    warden_domain::agent_protocol::limits::MAX_MANAGEMENT_RESPONSE,
                )
            })
        })
        .service(http);
    kube::Client::new(service, "default")
}

// ---- the direct transport ----

/// How Warden authenticates to a directly reached API server.
#[derive(Clone)]
pub enum DirectCredential {
    Bearer(String),
    ClientCert { cert_pem: String, key_pem: String },
}

impl std::fmt::Debug for DirectCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DirectCredential::Bearer(_) => "Bearer(***)",
            DirectCredential::ClientCert { .. } => "ClientCert(***)",
        })
    }
}

/// An API server reached without an agent.
#[derive(Clone, Debug)]
pub struct DirectEndpoint {
    /// `https://host:port`.
    pub url: String,
    /// PEM of the CA that signs the API server's certificate.
    pub ca_pem: String,
    pub credential: DirectCredential,
}

struct DirectCluster {
    endpoint: DirectEndpoint,
    tls: Arc<rustls::ClientConfig>,
    admin_tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    server_name: rustls::pki_types::ServerName<'static>,
    admin: OnceLock<kube::Client>,
}

/// Reaches API servers straight over TLS. Clusters are registered by name.
pub struct DirectTransport {
    clusters: RwLock<HashMap<String, Arc<DirectCluster>>>,
    tokens: TokenCache,
    me: OnceLock<std::sync::Weak<DirectTransport>>,
}

fn tls_config(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let der = super::pki::pem_to_der(ca_pem).ok_or_else(|| anyhow::anyhow!("bad CA PEM"))?;
    roots.add(rustls::pki_types::CertificateDer::from(der))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => {
            let cert = super::pki::pem_to_der(cert).ok_or_else(|| anyhow::anyhow!("bad cert"))?;
            let key = super::pki::pem_to_der(key).ok_or_else(|| anyhow::anyhow!("bad key"))?;
            builder.with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl DirectTransport {
    pub fn new() -> Arc<Self> {
        let t = Arc::new(Self {
            clusters: RwLock::new(HashMap::new()),
            tokens: TokenCache::default(),
            me: OnceLock::new(),
        });
        let _ = t.me.set(Arc::downgrade(&t));
        t
    }

    /// Reach the cluster named `name` at `endpoint` from now on.
    pub fn register(&self, name: &str, endpoint: DirectEndpoint) -> anyhow::Result<()> {
        let uri: Uri = endpoint.url.parse()?;
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("{} has no host", endpoint.url))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())?;
        let tls = tls_config(&endpoint.ca_pem, None)?;
        let admin_tls = match &endpoint.credential {
            DirectCredential::ClientCert { cert_pem, key_pem } => {
                tls_config(&endpoint.ca_pem, Some((cert_pem, key_pem)))?
            }
            DirectCredential::Bearer(_) => tls.clone(),
        };
        let c = Arc::new(DirectCluster {
            endpoint,
            tls,
            admin_tls,
            host,
            port,
            server_name,
            admin: OnceLock::new(),
        });
        if let Ok(mut m) = self.clusters.write() {
            m.insert(name.to_owned(), c);
        }
        self.tokens.forget_cluster(name);
        Ok(())
    }

    pub fn unregister(&self, name: &str) {
        if let Ok(mut m) = self.clusters.write() {
            m.remove(name);
        }
        self.tokens.forget_cluster(name);
    }

    fn get(&self, cluster: &ClusterRef) -> Result<Arc<DirectCluster>, TransportError> {
        self.clusters
            .read()
            .ok()
            .and_then(|m| m.get(&cluster.name).cloned())
            .ok_or_else(|| TransportError::NotConnected(cluster.name.clone()))
    }

    async fn open(
        &self,
        cluster: &ClusterRef,
        c: &DirectCluster,
        admin: bool,
    ) -> Result<BoxIo, TransportError> {
        let unreachable = |e: &dyn std::fmt::Display| TransportError::Unreachable {
            cluster: cluster.name.clone(),
            message: e.to_string(),
        };
        let tcp = tokio::net::TcpStream::connect((c.host.as_str(), c.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let cfg = if admin {
            c.admin_tls.clone()
        } else {
            c.tls.clone()
        };
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(c.server_name.clone(), tcp)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(Box::new(tls))
    }
}

/// A transport that opens admin (client-certificate) connections to a direct cluster, for
/// its management client.
struct DirectAdmin(Arc<DirectTransport>);

#[async_trait]
impl ClusterTransport for DirectAdmin {
    async fn connect(&self, cluster: &ClusterRef) -> Result<BoxIo, TransportError> {
        let c = self.0.get(cluster)?;
        self.0.open(cluster, &c, true).await
    }
    async fn authenticate(
        &self,
        cluster: &ClusterRef,
        _: &As,
    ) -> Result<HeaderMap, TransportError> {
        let c = self.0.get(cluster)?;
        Ok(admin_headers(&c.endpoint.credential))
    }
    async fn client(&self, cluster: &ClusterRef) -> Result<kube::Client, TransportError> {
        self.0.client(cluster).await
    }
    fn reaches(&self, cluster: &ClusterRef) -> bool {
        self.0.reaches(cluster)
    }
}

fn admin_headers(cred: &DirectCredential) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let DirectCredential::Bearer(t) = cred {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            h.insert(http::header::AUTHORIZATION, v);
        }
    }
    h
}

#[async_trait]
impl ClusterTransport for DirectTransport {
    async fn connect(&self, cluster: &ClusterRef) -> Result<BoxIo, TransportError> {
        let c = self.get(cluster)?;
        self.open(cluster, &c, false).await
    }

    async fn authenticate(
        &self,
        cluster: &ClusterRef,
        who: &As,
    ) -> Result<HeaderMap, TransportError> {
        let c = self.get(cluster)?;
        match who {
            As::Warden => match &c.endpoint.credential {
                DirectCredential::Bearer(_) => Ok(admin_headers(&c.endpoint.credential)),
                // Gateway streams do not carry the admin's client certificate.
                DirectCredential::ClientCert { .. } => Err(TransportError::Kube {
                    cluster: cluster.name.clone(),
                    message: "the direct endpoint authenticates Warden by client certificate; use the management client".into(),
                }),
            },
            As::ServiceAccount {
                namespace,
                name,
                bound_secret,
            } => {
                let client = self.client(cluster).await?;
                let token = self
                    .tokens
                    .token(&client, &cluster.name, namespace, name, bound_secret.as_deref())
                    .await
                    .map_err(|e| TransportError::Kube {
                        cluster: cluster.name.clone(),
                        message: e.to_string(),
                    })?;
                let mut h = HeaderMap::new();
                let v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
                    TransportError::Kube {
                        cluster: cluster.name.clone(),
                        message: e.to_string(),
                    }
                })?;
                h.insert(http::header::AUTHORIZATION, v);
                Ok(h)
            }
        }
    }

    async fn client(&self, cluster: &ClusterRef) -> Result<kube::Client, TransportError> {
        let c = self.get(cluster)?;
        if let Some(k) = c.admin.get() {
            return Ok(k.clone());
        }
        let me = self
            .me
            .get()
            .and_then(|w| w.upgrade())
            .ok_or_else(|| TransportError::NotConnected(cluster.name.clone()))?;
        let k = kube_client_over(
            Arc::new(DirectAdmin(me)),
            cluster,
            admin_headers(&c.endpoint.credential),
        );
        let _ = c.admin.set(k.clone());
        Ok(c.admin.get().cloned().unwrap_or(k))
    }

    fn forget(&self, cluster: &ClusterRef, service_account: &str) {
        self.tokens.forget(&cluster.name, service_account);
    }

    fn reaches(&self, cluster: &ClusterRef) -> bool {
        self.get(cluster).is_ok()
    }
}

// ---- routing ----

/// Routes each cluster to the transport that reaches it: a direct endpoint when one is
/// registered for it, else the agent tunnel (once set).
pub struct Transports {
    pub direct: Arc<DirectTransport>,
    tunnel: OnceLock<SharedTransport>,
}

impl Transports {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            direct: DirectTransport::new(),
            tunnel: OnceLock::new(),
        })
    }

    /// Plug in the agent tunnel (once, at start-up).
    pub fn set_tunnel(&self, tunnel: SharedTransport) {
        let _ = self.tunnel.set(tunnel);
    }

    fn pick(&self, cluster: &ClusterRef) -> Result<&dyn ClusterTransport, TransportError> {
        if self.direct.reaches(cluster) {
            return Ok(self.direct.as_ref());
        }
        match self.tunnel.get() {
            Some(t) => Ok(t.as_ref()),
            None => Err(TransportError::NotConnected(cluster.name.clone())),
        }
    }
}

#[async_trait]
impl ClusterTransport for Transports {
    async fn connect(&self, cluster: &ClusterRef) -> Result<BoxIo, TransportError> {
        self.pick(cluster)?.connect(cluster).await
    }
    async fn authenticate(
        &self,
        cluster: &ClusterRef,
        who: &As,
    ) -> Result<HeaderMap, TransportError> {
        self.pick(cluster)?.authenticate(cluster, who).await
    }
    async fn client(&self, cluster: &ClusterRef) -> Result<kube::Client, TransportError> {
        self.pick(cluster)?.client(cluster).await
    }
    fn forget(&self, cluster: &ClusterRef, service_account: &str) {
        if let Ok(t) = self.pick(cluster) {
            t.forget(cluster, service_account);
        }
    }
    fn reaches(&self, cluster: &ClusterRef) -> bool {
        self.pick(cluster).is_ok_and(|t| t.reaches(cluster))
    }
}

/// A response body type the gateway can forward requests with.
pub type ForwardBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A cluster whose answer never ends: 200, then chunks of `[` for as long as it is read.
    struct Endless(Arc<AtomicUsize>);

    #[async_trait]
    impl ClusterTransport for Endless {
        async fn connect(&self, _: &ClusterRef) -> Result<BoxIo, TransportError> {
            let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
            let sent = self.0.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match theirs.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if theirs.write_all(head).await.is_err() {
                    return;
                }
                let chunk = [b'['; 60 * 1024];
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                while theirs.write_all(&framed).await.is_ok() {
                    sent.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
            Ok(Box::new(ours))
        }
        async fn authenticate(&self, _: &ClusterRef, _: &As) -> Result<HeaderMap, TransportError> {
            Ok(HeaderMap::new())
        }
        async fn client(&self, c: &ClusterRef) -> Result<kube::Client, TransportError> {
            Err(TransportError::NotConnected(c.name.clone()))
        }
        fn reaches(&self, _: &ClusterRef) -> bool {
            true
        }
    }

    /// A cluster (its agent) that answers a read with a body that never ends makes Warden read
    /// no more than the management limit, then give up: it does not buffer until it runs out
    /// of memory.
    #[tokio::test]
    async fn an_answer_that_never_ends_is_cut_at_the_limit() {
        use kube::api::{Api, ListParams};
        let sent = Arc::new(AtomicUsize::new(0));
        let cluster = ClusterRef {
            id: ClusterId::new(),
            name: "endless".into(),
        };
        let client = kube_client_over(Arc::new(Endless(sent.clone())), &cluster, HeaderMap::new());
        let listed = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client).list(&ListParams::default()),
        )
        .await
        .expect("the read ends");
        let err = listed.expect_err("no list from an endless answer");
        assert!(err.to_string().contains("length limit"), "{err}");
        let limit = warden_domain::agent_protocol::limits::MAX_MANAGEMENT_RESPONSE;
        let read = sent.load(Ordering::SeqCst);
        assert!(
            read <= limit + 1024 * 1024 && read + 1024 * 1024 >= limit,
            "read {read} bytes (the limit is {limit})"
        );
    }
}
