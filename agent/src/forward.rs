//! The agent's one job on a tunnel stream: read the HTTP/1.1 requests Warden sends on it and
//! forward them to the Kubernetes API, streaming the answers back (watches, log follows) and
//! splicing upgraded connections (exec, attach, port-forward). It forwards nothing else: no
//! other destination is reachable through it.
//!
//! Warden's own calls come without `Authorization` and go out with the agent's credentials. A
//! user's request comes with the bearer token of the user's service account (a short-lived
//! TokenRequest token Warden obtained through the agent), and goes out with that token and no
//! agent credential at all, so the cluster's RBAC sees the user's service account only. Warden
//! removes every client-supplied credential before it sends anything here.

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::agent::Tracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body forwarded (the API server's own limit is about 3 MiB per object).
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// Serve one tunnel stream until Warden closes it.
pub async fn serve_stream<S>(io: S, clients: crate::KubeClients, tracker: Tracker)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let clients = clients.clone();
        let tracker = tracker.clone();
        async move { Ok::<_, Infallible>(forward(clients, req, tracker).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
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

async fn forward(
    clients: crate::KubeClients,
    mut req: Request<Incoming>,
    tracker: Tracker,
) -> Response<ResponseBody> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    // A bearer token from Warden: the request runs as that identity, without the agent's.
    let as_user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let kube = if as_user {
        clients.user.clone()
    } else {
        clients.agent.clone()
    };
    let inbound = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return status_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
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
        let keep_for_upgrade = upgrade && (name == header::CONNECTION || name == header::UPGRADE);
        if (hop_by_hop(name) && !keep_for_upgrade)
            || name == header::HOST
            || (name == header::AUTHORIZATION && !as_user)
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        out = out.header(name, value);
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
    Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
    )
}
