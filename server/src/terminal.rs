//! The web terminal's server side: a pod exec streamed to the browser over a WebSocket,
//! authorized on every frame.
//!
//! `GET /api/v1/terminal/ws?cluster=C&namespace=N&pod=P[&container=K]` upgrades to a
//! WebSocket when the caller is signed in (the console's session cookie, with an `Origin`
//! equal to `WARDEN_PUBLIC_URL`'s, or an API key in `Authorization` for scripts) and may exec
//! in that namespace of that cluster through the same checks as the gateway. Warden then runs
//! the exec on the cluster as the person's own service account (TokenRequest token, through
//! the agent's tunnel), `v5.channel.k8s.io` (`v4` as fallback), with a TTY.
//!
//! Framing between the browser and Warden:
//! - binary messages: terminal bytes (browser -> stdin, stdout/stderr -> browser);
//! - text messages: JSON control. From the browser `{"type":"resize","cols":C,"rows":R}`;
//!   from Warden `{"type":"ready", ...}` (cluster, namespace, pod, container, identity,
//!   `expires_at`), `{"type":"exit","code":N}` and `{"type":"closed","reason":"..."}` before
//!   Warden closes the socket.
//!
//! The terminal is a live stream of [`crate::live::LiveStreams`]: every frame, both ways, is
//! admitted by its guard (O(1) unless the authorization epoch moved), and a change made
//! elsewhere (a binding removed, the user deactivated, the session signed out) ends an idle
//! terminal too, with the reason on screen and an audit event.

use axum::extract::ws::{CloseFrame as AxCloseFrame, Message as AxMessage, WebSocket};
use axum::extract::{FromRequestParts, Query, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as KMessage;
use tower_sessions::Session;
use warden_domain::access::Principal;
use warden_domain::audit::{AuditEvent, AuditKind, Outcome};

use crate::gateway::proxy::{authorize, Via};
use crate::gateway::rbac;
use crate::gateway::request;
use crate::gateway::transport::{As, ClusterRef};
use crate::live::{Check, StreamInfo};
use crate::state::AppState;

/// Idle terminals end after this long without input.
pub const IDLE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// No terminal lives longer than this.
pub const MAX_DURATION: Duration = Duration::from_secs(8 * 3600);

#[derive(Debug, Deserialize)]
pub struct TerminalQuery {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
}

/// How the caller proved who they are; re-checked with every authorization change.
#[derive(Clone)]
enum Proof {
    Session(tower_sessions::session::Id),
    ApiKey(String),
}

/// A refusal before the upgrade, in the REST API's error envelope.
fn refuse(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::BAD_REQUEST => "invalid",
        _ => "unavailable",
    };
    crate::api::error::ApiError::new(status, code, message).into_response()
}

/// Authenticate the upgrade request: an API key, or the session cookie with our `Origin`
/// (a cross-site page cannot open a terminal with the user's cookie).
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<(Principal, Proof), Response> {
    let meta = app::ssr::request_meta_from_parts(parts);
    if let Some(auth) = parts.headers.get(http::header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
        let p = warden_domain::authn::principal_from_api_key(&state.services, &token, meta)
            .await
            .map_err(|_| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
        return Ok((p, Proof::ApiKey(token)));
    }
    // The same comparison as the CSRF layer's.
    let ours = state.config.http.public_origin();
    let origin = parts
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(crate::config::origin_of);
    if origin.as_deref() != Some(ours.as_str()) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "a terminal can only be opened from Warden's console",
        ));
    }
    let session = Session::from_request_parts(parts, state)
        .await
        .map_err(|_| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
    let p = warden_domain::authn::principal_from_session(&state.services, &session, meta)
        .await
        .map_err(|_| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
    let id = session
        .id()
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
    Ok((p, Proof::Session(id)))
}

/// Whether the proof still holds: the session exists (not signed out, not expired, user
/// active), or the API key is still valid.
async fn proof_holds(state: &AppState, proof: &Proof) -> Result<(), String> {
    let meta = Default::default();
    match proof {
        Proof::ApiKey(token) => {
            warden_domain::authn::principal_from_api_key(&state.services, token, meta)
                .await
                .map(|_| ())
                .map_err(|_| "the API key was revoked or expired".to_owned())
        }
        Proof::Session(id) => {
            let store = warden_domain::sessions::DbSessionStore::new(
                state.services.db.clone(),
                state.services.clock.clone(),
            );
            let session = Session::new(Some(*id), Arc::new(store), None);
            warden_domain::authn::principal_from_session(&state.services, &session, meta)
                .await
                .map(|_| ())
                .map_err(|_| "signed out (the console session ended)".to_owned())
        }
    }
}

/// `GET /api/v1/terminal/ws`.
pub async fn terminal_ws(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let (principal, proof) = match authenticate(&mut parts, &state).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if principal.must_change_password {
        return refuse(StatusCode::FORBIDDEN, "choose a new password first");
    }
    let Query(q) = match Query::<TerminalQuery>::from_request_parts(&mut parts, &state).await {
        Ok(q) => q,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "cluster, namespace and pod are required",
            )
        }
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "a WebSocket upgrade is required"),
    };
    match open(&state, &principal, proof, &q).await {
        Ok(session) => ws
            .protocols(["warden.terminal.v1"])
            .on_upgrade(move |socket| session.run(socket)),
        Err((status, message)) => refuse(status, &message),
    }
}

/// An exec opened on the cluster, waiting for the browser's socket.
struct TerminalSession {
    state: AppState,
    exec: tokio_tungstenite::WebSocketStream<crate::gateway::transport::BoxIo>,
    guard: crate::live::LiveGuard,
    audit: AuditEvent,
    ready: serde_json::Value,
    recorder: Recorder,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

async fn open(
    state: &AppState,
    who: &Principal,
    proof: Proof,
    q: &TerminalQuery,
) -> Result<TerminalSession, (StatusCode, String)> {
    for (field, v) in [
        ("cluster", q.cluster.as_str()),
        ("namespace", q.namespace.as_str()),
        ("pod", q.pod.as_str()),
        ("container", q.container.as_deref().unwrap_or("c")),
    ] {
        if !valid_name(v) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("{field} is not a valid name"),
            ));
        }
    }
    let gw = state.gateway.clone();
    let path = format!("/api/v1/namespaces/{}/pods/{}/exec", q.namespace, q.pod);
    let info = request::parse(&http::Method::GET, &path, Some("tty=true"));
    let mut ev = AuditEvent::new(
        AuditKind::Terminal,
        who.actor(),
        who.session_type,
        "terminal.open",
        Outcome::Allowed,
    )
    .request(who.request.clone());
    ev.cluster = Some(q.cluster.clone());
    ev.namespace = Some(q.namespace.clone());
    ev.resource_kind = Some("pods/exec".into());
    ev.resource_name = Some(q.pod.clone());
    ev.details = json!({"container": q.container, "mode": "exec"});
    let deny = |ev: &AuditEvent, status: StatusCode, message: String, detail: Option<String>| {
        let mut ev = ev.clone();
        ev.outcome = if status.is_server_error() {
            Outcome::Error
        } else {
            Outcome::Denied
        };
        ev.reason = Some(detail.unwrap_or_else(|| message.clone()));
        let audit = state.services.audit.clone();
        tokio::spawn(async move {
            let _ = audit.record(ev).await;
        });
        (status, message)
    };
    let epoch = state.services.policy.epoch();
    let authorized = match authorize(&gw, Via::Console, who.user_id, &q.cluster, &info, epoch).await
    {
        Ok(a) => a,
        Err(r) => return Err(deny(&ev, r.status, r.message, r.reason)),
    };
    ev.project = authorized
        .access
        .project
        .clone()
        .or(Some(authorized.adm.cluster.owner.clone()));
    let cluster = ClusterRef {
        id: authorized.adm.cluster.id.clone(),
        name: authorized.adm.cluster.name.clone(),
    };
    let sa = match gw
        .ensure_identity(
            &cluster,
            &authorized.adm.user,
            &authorized.adm.sa_name,
            &authorized.access,
        )
        .await
    {
        Ok(sa) => sa,
        Err(e) => return Err(deny(&ev, e.status, e.message, Some(e.detail))),
    };
    let who_on_cluster = As::ServiceAccount {
        namespace: rbac::NAMESPACE.to_owned(),
        name: sa.clone(),
        bound_secret: Some(rbac::anchor_name(&sa)),
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the cluster {} is not reachable through Warden right now",
                cluster.name
            ),
            e.to_string(),
        )
    };
    let auth = match gw.transport.authenticate(&cluster, &who_on_cluster).await {
        Ok(h) => h,
        Err(e) => {
            let (s, m, d) = unreachable(&e);
            return Err(deny(&ev, s, m, Some(d)));
        }
    };
    let io = match gw.transport.connect(&cluster).await {
        Ok(io) => io,
        Err(e) => {
            let (s, m, d) = unreachable(&e);
            return Err(deny(&ev, s, m, Some(d)));
        }
    };
    // The shell: /bin/sh, or sh where /bin/sh does not exist (kubectl's own fallback order).
    let mut query = form_urlencoded_query(&[
        ("command", "/bin/sh"),
        ("stdin", "true"),
        ("stdout", "true"),
        ("tty", "true"),
    ]);
    if let Some(c) = &q.container {
        query.push_str(&format!("&container={c}"));
    }
    let url = format!(
        "ws://{}{path}?{query}",
        crate::gateway::transport::pool_host(&cluster)
    );
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => {
            return Err(deny(
                &ev,
                StatusCode::BAD_REQUEST,
                "bad exec request".into(),
                Some(e.to_string()),
            ))
        }
    };
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    request.headers_mut().insert(
        "audit-id",
        http::HeaderValue::from_str(&ev.id.to_string())
            .unwrap_or(http::HeaderValue::from_static("warden")),
    );
    for (k, v) in auth.iter() {
        request.headers_mut().insert(k, v.clone());
    }
    let (exec, resp) = match tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::client_async(request, io),
    )
    .await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let (status, message) = match &e {
                tokio_tungstenite::tungstenite::Error::Http(r)
                    if r.status() == StatusCode::FORBIDDEN =>
                {
                    (
                        StatusCode::FORBIDDEN,
                        format!(
                            "the cluster {} refused the exec for your service account",
                            cluster.name
                        ),
                    )
                }
                tokio_tungstenite::tungstenite::Error::Http(r)
                    if r.status() == StatusCode::NOT_FOUND =>
                {
                    (
                        StatusCode::NOT_FOUND,
                        format!("no pod {} in namespace {}", q.pod, q.namespace),
                    )
                }
                _ => (
                    StatusCode::BAD_GATEWAY,
                    format!("the exec into {} could not start", q.pod),
                ),
            };
            return Err(deny(&ev, status, message, Some(e.to_string())));
        }
        Err(_) => {
            return Err(deny(
                &ev,
                StatusCode::GATEWAY_TIMEOUT,
                format!("the cluster {} did not answer in time", cluster.name),
                None,
            ))
        }
    };
    let _ = resp;
    // Registered as a live stream: re-checked on every authorization change and every frame.
    let now = state.services.clock.now().millis();
    let info_rec = StreamInfo {
        kind: "terminal".into(),
        user_id: who.user_id.to_string(),
        email: who.email.clone(),
        cluster: cluster.name.clone(),
        namespace: Some(q.namespace.clone()),
        target: Some(format!("pods/{}", q.pod)),
        started_at: now,
    };
    let check: Check = {
        let state = state.clone();
        let user_id = who.user_id;
        let cluster_name = cluster.name.clone();
        let info = Arc::new(info.clone());
        Arc::new(move || {
            let state = state.clone();
            let proof = proof.clone();
            let cluster_name = cluster_name.clone();
            let info = info.clone();
            Box::pin(async move {
                proof_holds(&state, &proof).await?;
                let epoch = state.services.policy.epoch();
                match authorize(
                    &state.gateway,
                    Via::Console,
                    user_id,
                    &cluster_name,
                    &info,
                    epoch,
                )
                .await
                {
                    // The session is re-checked at least every minute (idle/absolute limits).
                    Ok(_) => Ok(state.services.clock.now().millis() + 60_000),
                    Err(r) => Err(r.message),
                }
            })
        })
    };
    let mut closing = ev.clone();
    closing.action = "terminal".into();
    let guard = state
        .gateway
        .live
        .register(info_rec, epoch, now + 60_000, check, closing);
    // Recorded, or not opened at all.
    let recorder = match Recorder::create(
        &state.config.data_dir,
        &ev.id.to_string(),
        &format!("{} {}/{}", cluster.name, q.namespace, q.pod),
        now / 1000,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return Err(deny(
                &ev,
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot record the terminal right now, so it does not open".into(),
                Some(e.to_string()),
            ))
        }
    };
    ev.details["recording"] = json!(ev.id.to_string());
    ev.details["terminal_id"] = json!(guard.id());
    ev.details["service_account"] = json!(format!("{}/{sa}", rbac::NAMESPACE));
    if let Err(e) = state.services.audit.record(ev.clone()).await {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Warden cannot record the terminal right now: {e}"),
        ));
    }
    let ready = json!({
        "type": "ready",
        "cluster": cluster.name,
        "namespace": q.namespace,
        "pod": q.pod,
        "container": q.container,
        "identity": format!("system:serviceaccount:{}:{sa}", rbac::NAMESPACE),
        "expires_at": now + MAX_DURATION.as_millis() as i64,
        "terminal_id": guard.id(),
    });
    Ok(TerminalSession {
        state: state.clone(),
        exec,
        guard,
        audit: ev,
        ready,
        recorder,
    })
}

fn form_urlencoded_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('/', "%2F")))
        .collect::<Vec<_>>()
        .join("&")
}

/// How a terminal ended.
enum End {
    Exited(i32),
    Closed(String),
}

impl TerminalSession {
    async fn run(self, socket: WebSocket) {
        let TerminalSession {
            state,
            exec,
            guard,
            audit,
            ready,
            mut recorder,
        } = self;
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let (mut browser_tx, mut browser_rx) = socket.split();
        let (mut exec_tx, mut exec_rx) = exec.split();
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        let _ = browser_tx
            .send(AxMessage::Text(ready.to_string().into()))
            .await;
        let mut last_input = Instant::now();
        let cancelled = guard.cancelled();
        tokio::pin!(cancelled);
        let end = loop {
            let idle_left = IDLE_LIMIT.saturating_sub(last_input.elapsed());
            let max_left = MAX_DURATION.saturating_sub(started.elapsed());
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    break End::Closed(guard.reason().unwrap_or_else(|| "access ended".into()));
                }
                _ = tokio::time::sleep(idle_left) => {
                    break End::Closed(format!("idle for {} minutes", IDLE_LIMIT.as_secs() / 60));
                }
                _ = flush.tick() => {
                    // A crash loses at most the last second of the recording.
                    if let Err(e) = recorder.flush().await {
                        tracing::error!(error = %e, "terminal recording failed");
                        break End::Closed("the recording failed, so the terminal ends".into());
                    }
                    continue;
                }
                _ = tokio::time::sleep(max_left) => {
                    break End::Closed(format!("limit of {} hours reached", MAX_DURATION.as_secs() / 3600));
                }
                m = browser_rx.next() => {
                    let Some(Ok(m)) = m else { break End::Closed("the browser closed the terminal".into()) };
                    if guard.admit().await.is_err() {
                        continue; // the cancelled branch says why
                    }
                    let out = match m {
                        AxMessage::Binary(b) => {
                            last_input = Instant::now();
                            bytes_in += b.len() as u64;
                            let mut f = Vec::with_capacity(b.len() + 1);
                            f.push(0u8);
                            f.extend_from_slice(&b);
                            Some(f)
                        }
                        AxMessage::Text(t) => match serde_json::from_str::<serde_json::Value>(&t) {
                            Ok(c) if c["type"] == "resize" => {
                                let (w, h) = (c["cols"].as_u64().unwrap_or(80).min(1000), c["rows"].as_u64().unwrap_or(24).min(1000));
                                let _ = recorder.resize(w, h).await;
                                let mut f = vec![4u8];
                                f.extend_from_slice(json!({"Width": w.min(1000), "Height": h.min(1000)}).to_string().as_bytes());
                                Some(f)
                            }
                            _ => None,
                        },
                        AxMessage::Close(_) => break End::Closed("the browser closed the terminal".into()),
                        _ => None,
                    };
                    if let Some(f) = out {
                        if exec_tx.send(KMessage::Binary(f.into())).await.is_err() {
                            break End::Closed(format!("the connection to cluster {} was lost", audit.cluster.clone().unwrap_or_default()));
                        }
                    }
                }
                m = exec_rx.next() => {
                    let Some(Ok(m)) = m else {
                        break End::Closed(format!("the connection to cluster {} was lost", audit.cluster.clone().unwrap_or_default()));
                    };
                    if guard.admit().await.is_err() {
                        continue;
                    }
                    let data = match m {
                        KMessage::Binary(b) => b,
                        KMessage::Close(_) => break End::Exited(0),
                        _ => continue,
                    };
                    let Some((&channel, payload)) = data.split_first() else { continue };
                    match channel {
                        1 | 2 => {
                            bytes_out += payload.len() as u64;
                            if let Err(e) = recorder.output(payload).await {
                                tracing::error!(error = %e, "terminal recording failed");
                                break End::Closed("the recording failed, so the terminal ends".into());
                            }
                            if browser_tx.send(AxMessage::Binary(payload.to_vec().into())).await.is_err() {
                                break End::Closed("the browser closed the terminal".into());
                            }
                        }
                        3 => break End::Exited(exit_code(payload)),
                        _ => {}
                    }
                }
            }
        };
        // The terminal is over: out of the registry before anyone is told so.
        let closed_by_warden = guard.is_cancelled();
        drop(guard);
        let _ = exec_tx.send(KMessage::Close(None)).await;
        let (control, reason, code) = match &end {
            End::Exited(c) => (
                json!({"type": "exit", "code": c}),
                format!("exited (code {c})"),
                1000u16,
            ),
            End::Closed(r) => (json!({"type": "closed", "reason": r}), r.clone(), 4000u16),
        };
        let _ = browser_tx
            .send(AxMessage::Text(control.to_string().into()))
            .await;
        let short: String = reason.chars().take(100).collect();
        let _ = browser_tx
            .send(AxMessage::Close(Some(AxCloseFrame {
                code,
                reason: short.into(),
            })))
            .await;
        let mut ev = audit.clone();
        ev.id = warden_domain::ids::AuditEventId::new();
        ev.action = "terminal.close".into();
        ev.reason = Some(reason);
        ev.duration_ms = Some(started.elapsed().as_millis() as i64);
        ev.details["bytes_in"] = json!(bytes_in);
        ev.details["bytes_out"] = json!(bytes_out);
        match recorder.finish().await {
            Ok((sha256, bytes)) => {
                ev.details["recording"] =
                    json!({"id": audit.id.to_string(), "sha256": sha256, "bytes": bytes});
            }
            Err(e) => {
                tracing::error!(error = %e, "could not finish a terminal recording");
                ev.details["recording_error"] = json!(e.to_string());
            }
        }
        if let End::Exited(c) = end {
            ev.details["exit_code"] = json!(c);
        } else if closed_by_warden {
            ev.details["closed_by_warden"] = json!(true);
        }
        if let Err(e) = state.services.audit.record(ev).await {
            tracing::error!(error = %e, "could not audit the end of a terminal");
        }
    }
}

/// A terminal's recording: asciicast v2 (a header line, then `[seconds, "o", text]` for output
/// and `[seconds, "r", "COLSxROWS"]` for resizes; keystrokes are never recorded), streamed to
/// `WARDEN_DATA_DIR/recordings/<terminal.open event id>.cast` and flushed at least every second,
/// with the SHA-256 of everything written.
pub struct Recorder {
    file: tokio::io::BufWriter<tokio::fs::File>,
    hash: sha2::Sha256,
    started: Instant,
    bytes: u64,
    /// The tail of a UTF-8 sequence split between two chunks.
    carry: Vec<u8>,
    dirty: bool,
}

impl Recorder {
    pub fn path(data_dir: &std::path::Path, id: &str) -> std::path::PathBuf {
        data_dir.join("recordings").join(format!("{id}.cast"))
    }

    pub async fn create(
        data_dir: &std::path::Path,
        id: &str,
        title: &str,
        now_secs: i64,
    ) -> std::io::Result<Self> {
        let path = Self::path(data_dir, id);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .await?;
        let mut r = Self {
            file: tokio::io::BufWriter::new(file),
            hash: <sha2::Sha256 as sha2::Digest>::new(),
            started: Instant::now(),
            bytes: 0,
            carry: vec![],
            dirty: false,
        };
        let header = json!({"version": 2, "width": 80, "height": 24, "timestamp": now_secs,
            "title": title, "env": {"TERM": "xterm-256color"}});
        r.line(&header.to_string()).await?;
        r.flush().await?;
        Ok(r)
    }

    async fn line(&mut self, l: &str) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        sha2::Digest::update(&mut self.hash, l.as_bytes());
        sha2::Digest::update(&mut self.hash, b"\n");
        self.file.write_all(l.as_bytes()).await?;
        self.file.write_all(b"\n").await?;
        self.bytes += l.len() as u64 + 1;
        self.dirty = true;
        Ok(())
    }

    fn t(&self) -> f64 {
        (self.started.elapsed().as_micros() as f64 / 1e6 * 1e6).round() / 1e6
    }

    pub async fn output(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        let valid = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => buf.len(),
        };
        self.carry = buf.split_off(valid);
        if buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        let ev = json!([self.t(), "o", text]);
        self.line(&ev.to_string()).await
    }

    pub async fn resize(&mut self, cols: u64, rows: u64) -> std::io::Result<()> {
        let ev = json!([self.t(), "r", format!("{cols}x{rows}")]);
        self.line(&ev.to_string()).await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if self.dirty {
            self.file.flush().await?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Close the file; `(sha256 hex, bytes)`.
    pub async fn finish(mut self) -> std::io::Result<(String, u64)> {
        if !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            let ev = json!([self.t(), "o", String::from_utf8_lossy(&rest)]);
            self.line(&ev.to_string()).await?;
        }
        self.flush().await?;
        let digest = sha2::Digest::finalize(self.hash);
        Ok((hex::encode(digest), self.bytes))
    }
}

/// `GET /api/v1/terminal/recordings/{id}`: the asciicast of a terminal, for those who may read
/// its audit events (`audit.read` on the organization, or on the terminal's project).
pub async fn get_recording(
    State(state): State<AppState>,
    crate::api::auth::AuthUser(who): crate::api::auth::AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, crate::api::error::ApiError> {
    use crate::api::error::ApiError;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use warden_domain::entities::audit_events;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::not_found("recording"));
    }
    let opened = audit_events::Entity::find()
        .filter(audit_events::Column::Id.eq(id.clone()))
        .filter(audit_events::Column::Action.eq("terminal.open"))
        .one(&state.services.db)
        .await
        .map_err(|e| ApiError::from(warden_domain::DomainError::from(e)))?
        .ok_or_else(|| ApiError::not_found("recording"))?;
    let scope = warden_domain::access::audit_scope(&state.services.policy, &who)
        .await
        .map_err(|_| ApiError::forbidden())?;
    if let Some(projects) = scope {
        if !opened
            .project
            .as_ref()
            .is_some_and(|p| projects.contains(p))
        {
            return Err(ApiError::forbidden());
        }
    }
    let path = Recorder::path(&state.config.data_dir, &id);
    let body = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found("recording"))?;
    Ok((
        [
            (
                http::header::CONTENT_TYPE,
                "application/x-asciicast".to_owned(),
            ),
            (http::header::CACHE_CONTROL, "no-store".to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"terminal-{id}.cast\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The exit code in an exec's final `Status` (0 on success).
fn exit_code(payload: &[u8]) -> i32 {
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return 0;
    };
    if status["status"] == "Success" {
        return 0;
    }
    status["details"]["causes"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["reason"] == "ExitCode")
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse().ok())
        })
        .unwrap_or(1)
}

/// The routes of the terminal (merged into `/api/v1`).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/terminal/ws", axum::routing::get(terminal_ws))
}
