//! The agent's one job on a tunnel stream: read the HTTP/1.1 requests Warden sends on it and
//! forward them to the Kubernetes API, streaming the answers back (watches, log follows) and
//! splicing upgraded connections (exec, attach, port-forward). It forwards nothing else: no
//! other destination is reachable through it.
//!
//! Warden's own calls carry the explicit marker `X-Warden-Management: agent` and no
//! `Authorization`; only they go out with the agent's credentials. A user's request comes with
//! the bearer token of the user's service account (a short-lived TokenRequest token Warden
//! obtained through the agent), and goes out with that token and no agent credential at all, so
//! the cluster's RBAC sees the user's service account only. A request with neither (or an empty
//! token, or both) is refused: the agent never falls back to its own identity. Warden's gateway
//! removes every client-supplied credential and `x-warden-*` header before it sends anything
//! here.
//!
//! Bounds: a request body may hold at most [`MAX_REQUEST_BODY`] (the API server's own limit),
//! refused up front when its `Content-Length` says more; at most [`Limits::max_requests`]
//! requests run at once per tunnel (watches, log follows and upgraded connections count until
//! they end), beyond which the answer is `429 Too Many Requests`.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use warden_domain::agent_protocol::{HEADER_MANAGEMENT, MANAGEMENT_VALUE};

use crate::agent::Tracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body forwarded: the API server's own limit (3 MiB).
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;
/// Requests in flight at once on one tunnel, by default.
pub const DEFAULT_MAX_REQUESTS: usize = 256;

/// What one tunnel may make the agent do at once.
#[derive(Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    max_requests: usize,
}

impl Limits {
    pub fn new(max_requests: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_requests)),
            max_requests,
        }
    }

    pub fn max_requests(&self) -> usize {
        self.max_requests
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_REQUESTS)
    }
}

/// Serve one tunnel stream until Warden closes it.
pub async fn serve_stream<S>(io: S, clients: crate::KubeClients, tracker: Tracker, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let drain = tracker.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let clients = clients.clone();
        let tracker = tracker.clone();
        let limits = limits.clone();
        async move { Ok::<_, Infallible>(forward(clients, req, tracker, limits).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    // Warden keeps idle streams for its next requests: when the agent drains, an idle one
    // closes at once and a busy one after its answer (an upgraded exec is tracked on its own).
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = drain.draining() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "tunnel stream ended with an error");
    }
}

fn hop_by_hop(name: &HeaderName) -> bool {
    warden_domain::agent_protocol::is_hop_by_hop(name.as_str())
}

/// A Kubernetes `Status` failure, so clients show a clear message.
pub fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    let body = warden_domain::agent_protocol::kube_status(code.as_u16(), reason, message);
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Whose identity a tunnelled request runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// A user's service account: the bearer token Warden put in `Authorization`.
    User,
    /// The agent itself: Warden's management calls, marked `X-Warden-Management: agent`.
    Agent,
}

/// Who a request runs as, or why it is refused. Never the agent by default.
pub fn run_as(headers: &http::HeaderMap) -> Result<RunAs, &'static str> {
    let auth = headers.get(header::AUTHORIZATION);
    let management = headers.get(HEADER_MANAGEMENT);
    match (auth, management) {
        (Some(a), None) => {
            let token = a
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or_default();
            if token.is_empty() {
                Err("the request carries no usable user token")
            } else {
                Ok(RunAs::User)
            }
        }
        (None, Some(m)) if m.as_bytes() == MANAGEMENT_VALUE.as_bytes() => Ok(RunAs::Agent),
        (None, Some(_)) => Err("the request carries an unknown management marker"),
        (Some(_), Some(_)) => {
            Err("the request carries both a user token and the management marker")
        }
        (None, None) => {
            Err("the request carries no user token; the agent never lends its own identity")
        }
    }
}

/// Whether a request header goes on to the API server. Never the identity claims of the
/// impersonation API (`Impersonate-*`) or of an authenticating proxy (`X-Remote-*`): Warden
/// strips them from what clients send, and the agent does too, so a request that reached it
/// some other way still runs as the identity it was given, never one it names.
fn forwarded(name: &HeaderName, as_user: bool, upgrade: bool) -> bool {
    let keep_for_upgrade = upgrade && (name == header::CONNECTION || name == header::UPGRADE);
    let n = name.as_str();
    !((hop_by_hop(name) && !keep_for_upgrade)
        || name == header::HOST
        || (name == header::AUTHORIZATION && !as_user)
        || name == header::PROXY_AUTHORIZATION
        || name == header::CONTENT_LENGTH
        || n == HEADER_MANAGEMENT
        || n.starts_with("impersonate-")
        || n.starts_with("x-remote-"))
}

async fn forward(
    clients: crate::KubeClients,
    mut req: Request<Incoming>,
    tracker: Tracker,
    limits: Limits,
) -> Response<ResponseBody> {
    let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
        tracing::warn!(
            max = limits.max_requests,
            "too many concurrent requests on the tunnel"
        );
        let mut r = status_response(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            &format!(
                "warden-agent: too many concurrent requests on this cluster's tunnel (at most {}); retry later",
                limits.max_requests
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let who = match run_as(req.headers()) {
        Ok(w) => w,
        Err(why) => {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), "refused a tunnelled request: {why}");
            return status_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                &format!("warden-agent: {why}"),
            );
        }
    };
    let as_user = who == RunAs::User;
    let kube = if as_user {
        clients.user.clone()
    } else {
        clients.agent.clone()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        return too_large();
    }
    let inbound = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // Read at most the limit (a body without a length is cut off there).
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("warden-agent: cannot read the request body: {e}"),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(path.as_str());
    for (name, value) in &parts.headers {
        if forwarded(name, as_user, upgrade) {
            out = out.header(name, value);
        }
    }
    let out = match out.body(kube::client::Body::from(body)) {
        Ok(r) => r,
        Err(e) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("warden-agent: bad request: {e}"),
            )
        }
    };
    let started = std::time::Instant::now();
    let mut resp = match kube.send(out).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, method = %parts.method, path = %parts.uri.path(), "the Kubernetes API is unreachable");
            return status_response(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                &format!(
                    "warden-agent: the Kubernetes API server is unreachable from the agent: {e}"
                ),
            );
        }
    };
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = resp.status().as_u16(), duration_ms = started.elapsed().as_millis() as u64, "forwarded");
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let outbound = hyper::upgrade::on(&mut resp);
        match inbound {
            Some(inbound) => {
                let active = tracker.enter();
                tokio::spawn(async move {
                    let _active = active;
                    // The upgraded connection counts against the tunnel's limit until it ends.
                    let _permit = permit;
                    match tokio::join!(inbound, outbound) {
                        (Ok(a), Ok(b)) => {
                            let mut a = TokioIo::new(a);
                            let mut b = TokioIo::new(b);
                            if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                                tracing::debug!(error = %e, "upgraded connection ended");
                            }
                        }
                        (a, b) => tracing::warn!(
                            tunnel = a.is_ok(),
                            api = b.is_ok(),
                            "an upgrade did not complete"
                        ),
                    }
                });
            }
            None => {
                return status_response(
                    StatusCode::BAD_GATEWAY,
                    "InternalError",
                    "warden-agent: the API server upgraded a request that did not ask for it",
                )
            }
        }
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed_unsync());
    }
    let (mut parts, body) = resp.into_parts();
    let names: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| hop_by_hop(n))
        .cloned()
        .collect();
    for n in names {
        parts.headers.remove(n);
    }
    // A streaming answer (a watch, a log follow) counts until its body ends or is dropped.
    Response::from_parts(
        parts,
        body.map_frame(move |f| {
            let _ = &permit;
            f
        })
        .map_err(|e| Box::new(e) as BoxError)
        .boxed_unsync(),
    )
}

fn too_large() -> Response<ResponseBody> {
    status_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!(
            "warden-agent: the request body is larger than {} bytes (the API server's own limit)",
            MAX_REQUEST_BODY
        ),
    )
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn identity_claims_never_reach_the_api_server() {
        let h = |n: &'static str| HeaderName::from_static(n);
        for name in [
            "impersonate-user",
            "impersonate-group",
            "impersonate-uid",
            "impersonate-extra-scopes",
            "x-remote-user",
            "x-remote-group",
            "proxy-authorization",
        ] {
            for as_user in [true, false] {
                assert!(!forwarded(&h(name), as_user, false), "{name} forwarded");
            }
        }
        // A user's request keeps its own token; Warden's management call gets the agent's.
        assert!(forwarded(&header::AUTHORIZATION, true, false));
        assert!(!forwarded(&header::AUTHORIZATION, false, false));
        assert!(forwarded(&h("accept"), true, false));
        assert!(forwarded(&header::UPGRADE, true, true));
        assert!(!forwarded(&header::UPGRADE, true, false));
    }
}
