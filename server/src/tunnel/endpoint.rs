//! `GET /agent/v1/connect` (the agents' WebSocket) and `GET /agent/v1/manifests/{token}` (a
//! one-time manifest download for `kubectl apply -f <url>`). Neither uses a session: the
//! bootstrap token or agent credential, or the one-time URL token, is the only authority.

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use warden_agent::tunnel::{self, Frame, Pump};
use warden_domain::agent_protocol::{
    self, limits, AgentMessage, Challenge, ServerMessage, HEADER_AGENT_KEY, HEADER_AGENT_VERSION,
    HEADER_CLUSTER, HEADER_FINGERPRINT, HEADER_NONCE, HEADER_PROOF, PROOF_CONTEXT,
};
use warden_domain::clusters::agents::{self, Admission, AgentHello};
use warden_domain::clusters::{self, DownloadRefused};
use warden_domain::dto::cluster_status;

use super::{ClusterConnections, Tunnel};
use crate::api::error::ApiError;
use crate::state::AppState;

/// How long unchanged facts from a tunnel go unwritten (plain heartbeats meanwhile).
const FACTS_REWRITE: std::time::Duration = std::time::Duration::from_secs(600);

/// Routes under `/agent/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/connect", get(connect))
        .route("/challenge", post(challenge))
        .route("/manifests/{token}", get(download_manifest))
}

fn bearer(h: &HeaderMap) -> Option<String> {
    header_str(h, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer ").map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
}

/// `POST /agent/v1/challenge`: a one-time nonce the agent signs with its key to connect. Asked
/// with the same bearer secret as the connection; an unknown secret is refused and audited.
pub async fn challenge(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let meta = app::ssr::request_meta_from_parts(&parts);
    let Some(secret) = bearer(&parts.headers) else {
        return refusal(
            401,
            "unauthenticated",
            "send Authorization: Bearer <bootstrap token or agent credential>",
        );
    };
    let version = header_str(&parts.headers, HEADER_AGENT_VERSION);
    let fingerprint = header_str(&parts.headers, HEADER_FINGERPRINT);
    let cluster_id =
        match agents::challenge(&state.services, &secret, fingerprint, version, meta).await {
            Ok(Ok(id)) => id,
            Ok(Err(r)) => return refusal(r.status, r.code, r.message),
            Err(e) => return ApiError::from(e).into_response(),
        };
    let nonce = match agents::issue_challenge(&state.services, &cluster_id).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return refusal(
                503,
                "busy",
                "too many outstanding challenges; try again in a moment",
            )
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(Challenge {
            nonce,
            cluster_id,
            context: PROOF_CONTEXT.to_owned(),
        }),
    )
        .into_response()
}

fn refusal(status: u16, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        code,
        message,
    )
    .into_response()
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The agent's WebSocket. It proves a bootstrap token or its credential and its cluster's
/// fingerprint before the upgrade; a refusal is an ordinary HTTP error with the error envelope.
pub async fn connect(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let meta = app::ssr::request_meta_from_parts(&parts);
    // Not a WebSocket request: answer before spending a one-time token.
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(_) => {
            return refusal(
                400,
                "bad_request",
                "this endpoint takes a WebSocket upgrade from warden-agent",
            )
        }
    };
    let Some(secret) = bearer(&parts.headers) else {
        return refusal(
            401,
            "unauthenticated",
            "send Authorization: Bearer <bootstrap token or agent credential>",
        );
    };
    // The challenge is used up here, whichever replica issued it.
    let challenge = match header_str(&parts.headers, HEADER_NONCE) {
        Some(n) => match agents::take_challenge(&state.services, &n).await {
            Ok(c) => Some(c),
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    let hello = AgentHello {
        secret,
        fingerprint: header_str(&parts.headers, HEADER_FINGERPRINT).unwrap_or_default(),
        cluster: header_str(&parts.headers, HEADER_CLUSTER),
        agent_version: header_str(&parts.headers, HEADER_AGENT_VERSION),
        meta,
        key: header_str(&parts.headers, HEADER_AGENT_KEY),
        proof: header_str(&parts.headers, HEADER_PROOF),
        challenge,
    };
    let admission = match agents::admit(&state.services, hello).await {
        Ok(Ok(a)) => a,
        Ok(Err(r)) => return refusal(r.status, r.code, r.message),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let conns = state.clusters.clone();
    let metrics = state.metrics.clone();
    // Data moves in chunks of at most 64 KiB and control messages are at most 256 KiB: room
    // for twice that, so an oversize message still arrives to be audited, and no agent makes
    // Warden buffer megabytes per message.
    ws.max_message_size(2 * limits::MAX_CONTROL_MESSAGE)
        .max_frame_size(2 * limits::MAX_CONTROL_MESSAGE)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "agent WebSocket upgrade failed"))
        .on_upgrade(move |socket| run(conns, socket, admission, metrics))
}

/// Serve one agent's tunnel until it ends, then record the disconnection.
async fn run(
    conns: Arc<ClusterConnections>,
    socket: WebSocket,
    admission: Admission,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let svc = conns.services().clone();
    // Counted open for as long as this function runs.
    struct Open(Arc<crate::metrics::Metrics>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.agent_tunnels(-1);
        }
    }
    metrics.agent_tunnels(1);
    let _open = Open(metrics.clone());
    let timing = conns.timing();
    let (sink, stream) = socket.split();
    let frames_in = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Binary(b)) => Some(Ok(Frame::Binary(b))),
            Ok(Message::Text(t)) => Some(Ok(Frame::Text(t.as_str().to_owned()))),
            Ok(Message::Close(_)) => Some(Ok(Frame::Close)),
            Ok(_) => None,
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    });
    let frames_out = sink
        .sink_map_err(std::io::Error::other)
        .with(|f: Frame| async move {
            Ok::<_, std::io::Error>(match f {
                Frame::Binary(b) => Message::Binary(b),
                Frame::Text(t) => Message::Text(t.into()),
                Frame::Close => Message::Close(None),
            })
        });
    let Pump {
        io,
        mut control_rx,
        control_tx,
        guard: _guard,
    } = tunnel::pump_with(
        Box::pin(frames_in),
        Box::pin(frames_out),
        Some(tunnel::WriteStall::SERVER),
    );
    let welcome = ServerMessage::Welcome {
        cluster: admission.cluster.clone(),
        credential: admission.new_credential.clone(),
        heartbeat_interval_ms: timing.heartbeat_interval.as_millis() as u64,
    };
    if control_tx
        .send(serde_json::to_string(&welcome).unwrap_or_default())
        .await
        .is_err()
    {
        return;
    }
    let mut session = tokio_yamux::Session::new_server(io, tunnel::yamux_config());
    let (close_tx, mut close_rx) = watch::channel(None);
    let t = Arc::new(Tunnel {
        cluster_id: admission.cluster_id,
        cluster: admission.cluster.clone(),
        conn_id: conns.next_conn_id(),
        credential_id: admission.credential_id.clone(),
        agent_key: admission.key.clone(),
        connected_at: Instant::now(),
        control: session.control(),
        notices: control_tx.clone(),
        last_heartbeat: Mutex::new(Instant::now()),
        draining: AtomicBool::new(false),
        close: close_tx,
        streams_opened: AtomicU64::new(0),
    });
    conns.insert(t.clone());
    tracing::info!(cluster = %t.cluster, conn = t.conn_id, "agent connected");
    if let Err(e) = agents::set_status(
        &svc,
        &t.cluster_id.to_string(),
        cluster_status::CONNECTED,
        "agent connected",
    )
    .await
    {
        tracing::warn!(error = %e, "cannot record the cluster's status");
    }
    // Bounds on what the agent makes Warden do: control messages per heartbeat interval, their
    // size, and the facts' size and shape (bad facts are audited once per connection).
    let window = timing
        .heartbeat_interval
        .max(std::time::Duration::from_millis(100));
    let mut window_start = Instant::now();
    let mut in_window: u32 = 0;
    let mut facts_rejected = false;
    // The facts last handed to the writer, and when: the same facts again are a plain
    // heartbeat (an agent resending large facts on every beat costs one small write, not a
    // rewrite of them), though at least every FACTS_REWRITE they are written again.
    let mut sent_facts: Option<(warden_domain::dto::ClusterFacts, Instant)> = None;
    let reason: String = loop {
        tokio::select! {
            s = session.next() => match s {
                // Agents do not open streams; refuse any.
                Some(Ok(stream)) => drop(stream),
                Some(Err(e)) => break format!("tunnel error: {e}"),
                None => break "the agent closed the tunnel".into(),
            },
            m = control_rx.recv() => {
                if window_start.elapsed() >= window {
                    window_start = Instant::now();
                    in_window = 0;
                }
                in_window += 1;
                let violation = match &m {
                    Some(text) if text.len() > limits::MAX_CONTROL_MESSAGE => Some((
                        "agent.oversize_message",
                        format!("a control message of {} bytes (at most {})", text.len(), limits::MAX_CONTROL_MESSAGE),
                    )),
                    Some(_) if in_window > limits::MAX_CONTROL_MESSAGES_PER_INTERVAL => Some((
                        "agent.heartbeat_flood",
                        format!("more than {} control messages within one heartbeat interval ({} ms)", limits::MAX_CONTROL_MESSAGES_PER_INTERVAL, window.as_millis()),
                    )),
                    _ => None,
                };
                if let Some((action, why)) = violation {
                    if let Err(e) = agents::audit_violation(&svc, &t.cluster_id.to_string(), action, &why).await {
                        tracing::warn!(error = %e, "cannot audit an agent's violation");
                    }
                    conns.close_tunnel(&t, ServerMessage::Closing { reason: why.clone() }, &why);
                    // The close signal ends the loop; read nothing more from this agent.
                    let _ = close_rx.changed().await;
                    break why;
                }
                match m.map(|text| serde_json::from_str::<AgentMessage>(&text)) {
                Some(Ok(AgentMessage::Heartbeat { mut facts })) => {
                    let arrived = Instant::now();
                    t.touch();
                    if let Some(Err(why)) = facts.as_ref().map(agent_protocol::validate_facts) {
                        facts = None;
                        if !facts_rejected {
                            facts_rejected = true;
                            if let Err(e) = agents::audit_violation(&svc, &t.cluster_id.to_string(), "agent.facts_rejected", &why).await {
                                tracing::warn!(error = %e, "cannot audit an agent's violation");
                            }
                        }
                    }
                    if let Some(f) = &facts {
                        match &sent_facts {
                            Some((same, at)) if same == f && at.elapsed() < FACTS_REWRITE => facts = None,
                            _ => sent_facts = Some((f.clone(), Instant::now())),
                        }
                    }
                    let t2 = t.clone();
                    let conns2 = conns.clone();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let valid = match conns2.heartbeats().record(t2.cluster_id, &t2.credential_id, facts).await {
                            Ok(valid) => {
                                metrics.heartbeat(arrived.elapsed());
                                valid
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, cluster = %t2.cluster, "cannot record a heartbeat");
                                true
                            }
                        };
                        // A revoked credential ends the tunnel even if the close signal was missed.
                        if !valid {
                            conns2.close_revoked(&t2).await;
                        }
                    });
                }
                Some(Ok(AgentMessage::Draining)) => {
                    tracing::info!(cluster = %t.cluster, "agent is draining");
                    t.draining.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "ignoring an unknown agent message"),
                None => break "the WebSocket closed".into(),
            }},
            r = close_rx.changed() => {
                let why = close_rx.borrow().clone().unwrap_or_else(|| "closed".into());
                if r.is_ok() {
                    // Let the notice go out before the session ends.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let mut control = session.control();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                        tokio::join!(control.close(), async { while session.next().await.is_some() {} })
                    })
                    .await;
                }
                break why;
            }
        }
    };
    drop(session);
    conns.remove_if_current(&t);
    tracing::info!(cluster = %t.cluster, conn = t.conn_id, %reason, streams = t.streams_opened(), "agent disconnected");
    // A newer connection of the same cluster keeps it connected.
    if !conns.has_tunnel(t.cluster_id) {
        if let Err(e) = agents::set_status(
            &svc,
            &t.cluster_id.to_string(),
            cluster_status::DISCONNECTED,
            &reason,
        )
        .await
        {
            tracing::warn!(error = %e, "cannot record the cluster's status");
        }
    }
}

/// `GET /agent/v1/manifests/{token}`: the manifest, once, without a session.
pub async fn download_manifest(
    State(state): State<AppState>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let meta = app::ssr::request_meta_from_parts(&parts);
    let token = token.trim_end_matches(".yaml").to_owned();
    match clusters::download_manifest(&state.services, &token, meta).await {
        Ok(Ok(yaml)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/yaml; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::from(yaml))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Ok(Err(DownloadRefused::Unknown)) => refusal(404, "not_found", "unknown manifest link"),
        Ok(Err(DownloadRefused::Gone(m))) => refusal(410, "gone", m),
        Err(e) => ApiError::from(e).into_response(),
    }
}
