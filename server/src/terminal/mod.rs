//! The web terminal's server side: a kubectl shell or a pod exec, streamed to the browser over
//! a WebSocket and authorized on every frame.
//!
//! `GET /api/v1/terminal/ws?cluster=C[&namespace=N][&pod=P[&container=K]]` upgrades to a
//! WebSocket (subprotocol `warden.terminal.v1`) when the caller is signed in (the console's
//! session cookie, with an `Origin` equal to `WARDEN_PUBLIC_URL`'s, or an API key in
//! `Authorization` for scripts) and may use kubectl on that cluster through the same checks as
//! the gateway. The namespace defaults to `default`.
//!
//! - With `pod`: **pod exec** ([`exec`]), `/bin/sh` with a TTY in the container, run on the
//!   cluster as the person's own service account through the agent's tunnel. Needs exec rights
//!   in the namespace (read-only access never execs).
//! - Without `pod`: **kubectl shell** ([`shell`]), Warden's own line editor in front of the
//!   real `kubectl` of Warden's host, run in a PTY, confined, with a credential made for this
//!   terminal only, so every API call goes through the gateway's checks and audit.
//!
//! Framing between the browser and Warden (the same in both modes):
//! - binary messages: terminal bytes (keystrokes to Warden, output to the browser);
//! - text messages: JSON control. From the browser `{"type":"resize","cols":C,"rows":R}`.
//!   From Warden, first `{"type":"ready","mode":"shell"|"exec","cluster","namespace",
//!   "identity","expires_at","terminal_id", ...}` (exec adds `pod` and `container`; `expires_at`
//!   is milliseconds since the epoch), and at the end `{"type":"exit","code":N}` (the command
//!   or shell ended by itself; close code 1000) or `{"type":"closed","reason":"..."}` (Warden
//!   ended it: access removed, signed out, idle, time limit, connection lost; close code 4000),
//!   then the close frame, whose reason repeats the first 100 characters.
//!
//! The terminal is a live stream of [`crate::live::LiveStreams`]: every frame, both ways, is
//! admitted by its guard (O(1) unless the authorization epoch moved), and a change made
//! elsewhere (a binding removed, the user deactivated, the session signed out, the credential
//! revoked) ends an idle terminal too, with the reason on screen and an audit event. The relay
//! ([`relay`]) is generic over the browser's socket, the backend ([`Backend`]) and the gate
//! ([`Gate`]), so it is unit-tested with channels.

pub mod argv;
mod exec;
mod recorder;
pub(crate) mod shell;

pub use recorder::{InputSwitch, Recorder};

use axum::extract::ws::{CloseFrame as AxCloseFrame, Message as AxMessage, WebSocket};
use axum::extract::{FromRequestParts, Query, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_sessions::Session;
use warden_domain::access::kube::KubeIntent;
use warden_domain::access::Principal;
use warden_domain::audit::{AuditEvent, AuditKind, Outcome};
use warden_domain::dto::TerminalMode;

use crate::gateway::pki::PeerIdentity;
use crate::gateway::proxy::{authorize, Via};
use crate::gateway::rbac;

use crate::gateway::transport::{As, ClusterRef};
use crate::live::{Check, LiveGuard, StreamInfo};
use crate::state::AppState;

/// Idle terminals end after this long without input.
pub const IDLE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// No terminal lives longer than this.
pub const MAX_DURATION: Duration = Duration::from_secs(8 * 3600);
/// The WebSocket subprotocol of the framing above.
pub const SUBPROTOCOL: &str = "warden.terminal.v1";

#[derive(Debug, Deserialize)]
pub struct TerminalQuery {
    pub cluster: String,
    /// `default` when absent.
    pub namespace: Option<String>,
    /// Absent: the kubectl shell.
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// How the caller proved who they are; re-checked with every authorization change.
#[derive(Clone)]
pub(crate) enum Proof {
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
        StatusCode::TOO_MANY_REQUESTS => "too_many_terminals",
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
        let p =
            warden_domain::identity::authn::principal_from_api_key(&state.services, &token, meta)
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
    let p = warden_domain::identity::authn::principal_from_session(&state.services, &session, meta)
        .await
        .map_err(|_| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
    let id = session
        .id()
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "sign in first"))?;
    Ok((p, Proof::Session(id)))
}

/// Whether the proof still holds: the session exists (not signed out, not expired, user
/// active), or the API key is still valid; and its holder may still open a terminal (the MFA
/// policy now covering an unenrolled holder, or a password to change, end it as they refuse
/// a new one).
pub(crate) async fn proof_holds(state: &AppState, proof: &Proof) -> Result<i64, String> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use warden_domain::entities::{api_keys, sessions};
    let meta = Default::default();
    let (principal, deadline) = match proof {
        Proof::ApiKey(token) => {
            let p = warden_domain::identity::authn::principal_from_api_key(
                &state.services,
                token,
                meta,
            )
            .await
            .map_err(|_| "the API key was revoked or expired".to_owned())?;
            let expires = api_keys::Entity::find()
                .filter(
                    api_keys::Column::SecretHash
                        .eq(warden_domain::secrets::sha256_hex(token.as_bytes())),
                )
                .one(&state.services.db)
                .await
                .map_err(|e| format!("Warden cannot check the API key right now: {e}"))?
                .map(|k| k.expires_at)
                .ok_or_else(|| "the API key was revoked or expired".to_owned())?;
            (p, expires)
        }
        Proof::Session(id) => {
            let store = warden_domain::identity::sessions::DbSessionStore::new(
                state.services.db.clone(),
                state.services.clock.clone(),
            );
            let session = Session::new(Some(*id), Arc::new(store), None);
            let p = warden_domain::identity::authn::principal_from_session(
                &state.services,
                &session,
                meta,
            )
            .await
            .map_err(|_| "signed out (the console session ended)".to_owned())?;
            let expires =
                sessions::Entity::find_by_id(warden_domain::identity::sessions::row_id(id))
                    .one(&state.services.db)
                    .await
                    .map_err(|e| format!("Warden cannot check the console session right now: {e}"))?
                    .map(|s| s.expires_at)
                    .ok_or_else(|| "signed out (the console session ended)".to_owned())?;
            (p, expires)
        }
    };
    if principal.must_change_password {
        return Err("a new password must be chosen first".to_owned());
    }
    if principal.must_enrol_mfa {
        return Err("two-factor authentication must be set up first".to_owned());
    }
    // Until when the proof holds, nothing else changing: the terminal is checked again then.
    Ok(deadline)
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
    if principal.must_enrol_mfa {
        return refuse(
            StatusCode::FORBIDDEN,
            "set up two-factor authentication first",
        );
    }
    match warden_domain::identity::mfa::require_fresh_second_factor(&state.services, &principal)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            return crate::api::error::ApiError::new(
                StatusCode::FORBIDDEN,
                "step_up_required",
                message,
            )
            .into_response()
        }
        Err(e) => return crate::api::error::ApiError::from(e).into_response(),
    }
    let Query(q) = match Query::<TerminalQuery>::from_request_parts(&mut parts, &state).await {
        Ok(q) => q,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "cluster is required"),
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "a WebSocket upgrade is required"),
    };
    match open(&state, &principal, proof, &q).await {
        Ok(session) => ws
            .protocols([SUBPROTOCOL])
            .max_message_size(MAX_MESSAGE)
            .max_frame_size(MAX_MESSAGE)
            .on_upgrade(move |socket| session.run(socket)),
        Err((status, message)) => refuse(status, &message),
    }
}

/// The largest message a browser may send a terminal (keystrokes, a paste, a resize): a
/// WebSocket's default (64 MiB) let one message hold that much memory, and reach the
/// recording.
const MAX_MESSAGE: usize = 1 << 20;

/// What the terminal runs.
pub(crate) enum AnyBackend {
    Exec(exec::ExecBackend),
    Shell(shell::ShellBackend),
}

impl Backend for AnyBackend {
    async fn input(&mut self, data: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Exec(b) => b.input(data).await,
            Self::Shell(b) => b.input(data).await,
        }
    }

    async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), String> {
        match self {
            Self::Exec(b) => b.resize(cols, rows).await,
            Self::Shell(b) => b.resize(cols, rows).await,
        }
    }

    async fn next_output(&mut self) -> Output {
        match self {
            Self::Exec(b) => b.next_output().await,
            Self::Shell(b) => b.next_output().await,
        }
    }

    async fn close(&mut self) {
        match self {
            Self::Exec(b) => b.close().await,
            Self::Shell(b) => b.close().await,
        }
    }
}

/// The reason of a terminal's end recorded at start-up: its Warden stopped (`SIGTERM` or
/// `SIGKILL`) while it was open.
pub const ENDED_WITH_WARDEN: &str =
    "the terminal ended when Warden stopped while it was open; this end was restored from the audit journal when Warden started again";

/// A terminal's `terminal.close` event, journaled (a start in the audit journal) before the
/// terminal opens: if Warden stops while it is open, the next start stores this event, saying
/// so ([`ENDED_WITH_WARDEN`]); the real end replaces it (same id). Dropped without an end (the
/// browser's connection was never upgraded), it records that the terminal did not start.
struct Ending {
    gateway: Arc<crate::gateway::Gateway>,
    ev: Option<AuditEvent>,
}

impl Ending {
    /// Journal the end of the terminal `open` (on disk when this returns).
    async fn journal(
        gateway: &Arc<crate::gateway::Gateway>,
        open: &AuditEvent,
    ) -> Result<Self, String> {
        let mut ev = open.clone();
        ev.id = warden_domain::ids::AuditEventId::new();
        ev.action = "terminal.close".into();
        ev.outcome = Outcome::Error;
        ev.reason = Some(ENDED_WITH_WARDEN.into());
        ev.details["recording"] = json!({"id": open.id.to_string()});
        ev.details["ended_with_warden"] = json!(true);
        gateway.journal_begin(&ev);
        let ending = Ending {
            gateway: gateway.clone(),
            ev: Some(ev),
        };
        match gateway.journal_durable().await {
            Ok(()) => Ok(ending),
            Err(e) => {
                ending.did_not_start("its audit record could not be written");
                Err(e.to_string())
            }
        }
    }

    /// The terminal ended: the id its real end is recorded under (replacing this one).
    fn finish(mut self) -> warden_domain::ids::AuditEventId {
        self.ev
            .take()
            .map_or_else(warden_domain::ids::AuditEventId::new, |e| e.id)
    }

    fn did_not_start(mut self, why: &str) {
        if let Some(mut ev) = self.ev.take() {
            ev.reason = Some(format!("the terminal did not start: {why}"));
            if let Some(d) = ev.details.as_object_mut() {
                d.remove("ended_with_warden");
            }
            self.gateway.record(ev);
        }
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(mut ev) = self.ev.take() {
            ev.reason = Some(
                "the terminal did not start: the browser's connection was not upgraded".into(),
            );
            if let Some(d) = ev.details.as_object_mut() {
                d.remove("ended_with_warden");
            }
            self.gateway.record(ev);
        }
    }
}

/// A terminal admitted and started, waiting for the browser's socket.
struct TerminalSession {
    state: AppState,
    backend: AnyBackend,
    guard: LiveGuard,
    audit: AuditEvent,
    ending: Ending,
    ready: Value,
    recorder: Recorder,
    limits: Limits,
}

/// A DNS-1123 label, as Kubernetes requires of namespace and container names (and Warden of
/// cluster names).
fn valid_label(s: &str) -> bool {
    warden_domain::types::DnsLabel::parse(s).is_ok()
}

/// A DNS-1123 subdomain, as Kubernetes requires of pod names: labels joined by dots, at most
/// 253 characters (so never `..`, nor a name starting with `-`).
fn valid_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(valid_label)
}

/// Record a refusal to open (in the background: the answer does not wait for it).
fn deny(
    state: &AppState,
    ev: &AuditEvent,
    status: StatusCode,
    message: String,
    detail: Option<String>,
) -> (StatusCode, String) {
    let mut ev = ev.clone();
    ev.outcome = if status.is_server_error() {
        Outcome::Error
    } else {
        Outcome::Denied
    };
    // What the person was told first (their own activity shows it), then the cause.
    ev.reason = Some(match detail {
        Some(d) => format!("{message}: {d}"),
        None => message.clone(),
    });
    let audit = state.services.audit.clone();
    tokio::spawn(async move {
        let _ = audit.record(ev).await;
    });
    (status, message)
}

async fn open(
    state: &AppState,
    who: &Principal,
    proof: Proof,
    q: &TerminalQuery,
) -> Result<TerminalSession, (StatusCode, String)> {
    let namespace = q.namespace.clone().unwrap_or_else(|| "default".to_owned());
    for (field, v, valid) in [
        (
            "cluster",
            Some(q.cluster.as_str()),
            valid_label as fn(&str) -> bool,
        ),
        ("namespace", Some(namespace.as_str()), valid_label),
        ("pod", q.pod.as_deref(), valid_subdomain),
        ("container", q.container.as_deref(), valid_label),
    ] {
        if v.is_some_and(|v| !valid(v)) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("{field} is not a valid name"),
            ));
        }
    }
    if q.pod.is_none() && q.container.is_some() {
        return Err((StatusCode::BAD_REQUEST, "container needs a pod".to_owned()));
    }
    let gw = state.gateway.clone();
    let mode = if q.pod.is_some() {
        TerminalMode::Exec
    } else {
        TerminalMode::Shell
    };
    // What the terminal stands for at the gate: an exec into the pod, or (the shell) reaching
    // the cluster at all: every call the shell makes is checked by the gateway on its own.
    let info = match &q.pod {
        Some(_) => KubeIntent::pod_exec(&namespace),
        None => KubeIntent::shell(),
    };
    let mut ev = AuditEvent::by(who, AuditKind::Terminal, "terminal.open", Outcome::Allowed);
    ev.cluster = Some(q.cluster.clone());
    ev.namespace = Some(namespace.clone());
    match &q.pod {
        Some(pod) => {
            ev.resource_kind = Some("pods/exec".into());
            ev.resource_name = Some(pod.clone());
            ev.details = json!({"container": q.container, "mode": mode});
        }
        None => ev.details = json!({"mode": mode}),
    }
    let epoch = state.services.policy.epoch();
    let authorized = match authorize(&gw, Via::Console, who.user_id, &q.cluster, &info, epoch).await
    {
        Ok(a) => a,
        Err(r) => return Err(deny(state, &ev, r.status, r.message, r.reason)),
    };
    ev.project = authorized
        .access
        .project
        .clone()
        .or(Some(authorized.adm.cluster.owner.clone()));
    let cluster = ClusterRef {
        id: authorized.adm.cluster.id,
        name: authorized.adm.cluster.name.clone(),
    };
    // The limits in force for this person on this cluster (kubectl settings: organization,
    // user, cluster), and how many terminals they have open already.
    let settings = warden_domain::kubectl::effective_settings(
        &state.services.db,
        Some(&who.user_id.to_string()),
        Some(&cluster.id.to_string()),
    )
    .await
    .map_err(|e| {
        deny(
            state,
            &ev,
            StatusCode::SERVICE_UNAVAILABLE,
            "Warden cannot read the terminal limits right now".into(),
            Some(e.to_string()),
        )
    })?;
    let limits = Limits {
        idle: Duration::from_secs(settings.terminal_idle_secs.max(1) as u64),
        max: Duration::from_secs(settings.terminal_max_secs.max(1) as u64),
        recording: state.config.terminal.recording_max_bytes,
    };
    let uid = who.user_id.to_string();
    // Counted on every replica, with the terminals this replica is still opening: the place
    // is held until the terminal is registered (or fails to open).
    let slot = match state
        .gateway
        .live
        .reserve_terminal(&uid, settings.terminal_max_concurrent)
        .await
    {
        Ok(Ok(slot)) => slot,
        Ok(Err(open_now)) => {
            return Err(deny(
                state,
                &ev,
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "you have {open_now} terminals open, the most allowed at once: close one first (My tools lists them)"
                ),
                None,
            ))
        }
        Err(e) => {
            return Err(deny(
                state,
                &ev,
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot count your open terminals right now".into(),
                Some(e),
            ))
        }
    };
    let now = state.services.clock.now().millis();
    let expires_at = now + limits.max.as_millis() as i64;
    // The user's service account on the cluster, in line with their grants now (its name
    // changes when their rights shrink): what the pod's exec runs as, and what the status line
    // and the shell's banner name.
    let sa = match gw
        .ensure_identity(
            &cluster,
            &authorized.adm.user,
            &authorized.adm.sa_name,
            &authorized.access,
            Some(&namespace),
        )
        .await
    {
        Ok(sa) => sa,
        Err(e) => return Err(deny(state, &ev, e.status, e.message, Some(e.detail))),
    };
    let identity = format!("system:serviceaccount:{}:{sa}", rbac::NAMESPACE);

    // The backend: the exec opened on the cluster, or the shell prepared on this host.
    let (backend, shell_credential, target) = match &q.pod {
        Some(pod) => {
            let on_cluster = As::ServiceAccount {
                namespace: rbac::NAMESPACE.to_owned(),
                name: sa.clone(),
                bound_secret: Some(rbac::anchor_name(&sa)),
            };
            let b = exec::connect(
                &gw,
                &cluster,
                &on_cluster,
                &namespace,
                pod,
                q.container.as_deref(),
                &ev.id.to_string(),
            )
            .await
            .map_err(|(s, m, d)| deny(state, &ev, s, m, d))?;
            (PreparedBackend::Exec(b), None, format!("pods/{pod}"))
        }
        None => {
            let prepared = shell::prepare(state, who, &cluster.name, &namespace, &sa, expires_at)
                .await
                .map_err(|(s, m, d)| deny(state, &ev, s, m, d))?;
            let credential = prepared.identity().cloned();
            (
                PreparedBackend::Shell(Box::new(prepared)),
                credential,
                // As the Live sessions and My tools pages show it.
                "kubectl shell".to_owned(),
            )
        }
    };

    // Registered as a live stream: re-checked on every authorization change and every frame.
    let info_rec = StreamInfo {
        kind: warden_domain::dto::StreamKind::Terminal,
        user_id: who.user_id.to_string(),
        email: who.email.clone(),
        cluster: cluster.name.clone(),
        namespace: Some(namespace.clone()),
        target: Some(target),
        started_at: now,
    };
    // No later than the session or API key it was opened with ends, either.
    let proof_until = match proof_holds(state, &proof).await {
        Ok(until) => until,
        Err(reason) => return Err(deny(state, &ev, StatusCode::UNAUTHORIZED, reason, None)),
    };
    let input_switch = InputSwitch::new(settings.terminal_record_input);
    let opened_with = OpenedWith {
        cluster_id: cluster.id.to_string(),
        idle_secs: settings.terminal_idle_secs,
        max_secs: settings.terminal_max_secs,
        record_input: settings.terminal_record_input,
        input_switch: input_switch.clone(),
    };
    let check = terminal_check(
        state,
        who,
        proof,
        &cluster.name,
        info,
        shell_credential,
        opened_with,
    );
    let mut closing = ev.clone();
    closing.action = "terminal".into();
    let guard = state.gateway.live.register(
        info_rec,
        epoch,
        // Re-checked within a minute, and no later than the grant or credential it was
        // opened under ends (not left to the expiry job's epoch move alone).
        (now + 60_000)
            .min(authorized.valid_until())
            .min(proof_until),
        check,
        closing,
    );
    // Registered: it counts as open from here on.
    drop(slot);
    ev.details["terminal_id"] = json!(guard.id());
    ev.details["service_account"] = json!(format!("{}/{sa}", rbac::NAMESPACE));
    // The cluster itself, not only its name: a cluster imported later under the same name is
    // another cluster (replaying this recording is judged against this one).
    ev.details["cluster_id"] = json!(cluster.id.to_string());
    // Recorded, or not opened at all.
    let title = match &q.pod {
        Some(pod) => format!("{} {namespace}/{pod}", cluster.name),
        None => format!("{} {namespace} (kubectl shell)", cluster.name),
    };
    let mut recorder = match Recorder::create(
        state.services.db.clone(),
        state.services.at_rest().cloned(),
        &ev.id.to_string(),
        &title,
        now,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return Err(deny(
                state,
                &ev,
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot record the terminal right now, so it does not open".into(),
                Some(e.to_string()),
            ))
        }
    };
    ev.details["recording"] = json!(ev.id.to_string());
    recorder.record_input(input_switch);
    ev.details["recording_input"] = json!(settings.terminal_record_input);
    let backend = match backend {
        PreparedBackend::Exec(b) => AnyBackend::Exec(b),
        PreparedBackend::Shell(p) => {
            if let Some(c) = p.confinement() {
                ev.details["confinement"] = json!(c);
            }
            if let Some(serial) = p.serial() {
                ev.details["credential_serial"] = json!(serial);
            }
            AnyBackend::Shell(p.start(guard.id(), ev.clone()))
        }
    };
    // Its end is journaled before its opening is stored: from here on, a Warden stopped in
    // any way leaves both in the log.
    let ending = match Ending::journal(&state.gateway, &ev).await {
        Ok(e) => e,
        Err(e) => {
            return Err(deny(
                state,
                &ev,
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot record the terminal right now, so it does not open".into(),
                Some(e),
            ))
        }
    };
    if let Err(e) = state.services.audit.record(ev.clone()).await {
        ending.did_not_start("its opening could not be recorded");
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Warden cannot record the terminal right now: {e}"),
        ));
    }
    let mut ready = json!({
        "type": "ready",
        "mode": mode,
        "cluster": cluster.name,
        "namespace": namespace,
        "identity": identity,
        // The status line counts down to the limit that applies: the terminal's own, or the
        // expiry of a time-bound grant behind it, whichever comes first.
        "expires_at": expires_at.min(authorized.grants_until),
        "terminal_id": guard.id(),
    });
    if authorized.grants_until < expires_at {
        ready["grant_expires_at"] = json!(authorized.grants_until);
    }
    if let Some(pod) = &q.pod {
        ready["pod"] = json!(pod);
        ready["container"] = json!(q.container);
    }
    Ok(TerminalSession {
        state: state.clone(),
        backend,
        guard,
        audit: ev,
        ending,
        ready,
        recorder,
        limits,
    })
}

enum PreparedBackend {
    Exec(exec::ExecBackend),
    Shell(Box<shell::PreparedShell>),
}

/// The safeguards a terminal opened under (kubectl settings for its person and cluster).
#[derive(Debug, Clone)]
struct OpenedWith {
    cluster_id: String,
    idle_secs: i64,
    max_secs: i64,
    record_input: bool,
    /// Keystroke recording in the open terminal: turned off when the setting is.
    input_switch: InputSwitch,
}

impl OpenedWith {
    /// Why the terminal may not go on under `now`'s settings, when they are stricter than
    /// those it opened with (a shorter limit, keystrokes now recorded).
    fn tightened(
        &self,
        now: &warden_domain::kubeconfig::EffectiveKubectlSettings,
    ) -> Option<String> {
        if now.terminal_idle_secs < self.idle_secs || now.terminal_max_secs < self.max_secs {
            return Some("the terminal time limits were shortened: open the terminal again".into());
        }
        if now.terminal_record_input && !self.record_input {
            return Some(
                "keystrokes are now recorded: open the terminal again to go on under that".into(),
            );
        }
        None
    }
}

/// The check a terminal is re-admitted with: the console session (or API key) still holds, the
/// same gate that opened it still says yes, and its safeguards were not tightened since. The
/// shell is checked with its own credential, so revoking the user's kubeconfigs ends it too.
fn terminal_check(
    state: &AppState,
    who: &Principal,
    proof: Proof,
    cluster: &str,
    info: KubeIntent,
    credential: Option<PeerIdentity>,
    opened_with: OpenedWith,
) -> Check {
    let opened_with = Arc::new(opened_with);
    let state = state.clone();
    let user_id = who.user_id;
    let cluster = cluster.to_owned();
    let info = Arc::new(info);
    let credential = credential.map(Arc::new);
    Arc::new(move || {
        let state = state.clone();
        let proof = proof.clone();
        let cluster = cluster.clone();
        let info = info.clone();
        let credential = credential.clone();
        let opened_with = opened_with.clone();
        Box::pin(async move {
            let proof_until = proof_holds(&state, &proof).await?;
            let settings = warden_domain::kubectl::effective_settings(
                &state.services.db,
                Some(&user_id.to_string()),
                Some(&opened_with.cluster_id),
            )
            .await
            .map_err(|e| format!("Warden cannot read the terminal limits right now: {e}"))?;
            if let Some(why) = opened_with.tightened(&settings) {
                return Err(why);
            }
            // Loosened (keystrokes no longer recorded): that applies at once, without ending it.
            opened_with
                .input_switch
                .set(opened_with.record_input && settings.terminal_record_input);
            let epoch = state.services.policy.epoch();
            let via = match credential.as_deref() {
                Some(c) => Via::Kubeconfig(c),
                None => Via::Console,
            };
            match authorize(&state.gateway, via, user_id, &cluster, &info, epoch).await {
                // The session is re-checked at least every minute (idle/absolute limits),
                // and when a grant behind it expires.
                Ok(a) => Ok((state.services.clock.now().millis() + 60_000)
                    .min(a.valid_until())
                    .min(proof_until)),
                Err(r) => Err(r.message),
            }
        })
    })
}

// ---- the relay ----

/// What a backend has for the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// Terminal bytes.
    Data(Vec<u8>),
    /// The shell or command ended by itself with this code.
    Exit(i32),
    /// The backend is gone (the cluster's connection lost...), with the reason.
    Lost(String),
}

/// What runs behind a terminal: the pod exec or the kubectl shell.
pub(crate) trait Backend: Send {
    /// Keystrokes.
    fn input(&mut self, data: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
    /// The browser's terminal size.
    fn resize(&mut self, cols: u16, rows: u16) -> impl Future<Output = Result<(), String>> + Send;
    /// The next output. Cancel-safe: the relay selects on it.
    fn next_output(&mut self) -> impl Future<Output = Output> + Send;
    /// End it (idempotent; the relay always calls it last).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// The per-frame check ([`LiveGuard`] in production).
pub(crate) trait Gate: Send {
    /// Whether the next frame may pass; the reason when the terminal must end.
    fn admit(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Resolves when Warden ends the terminal from elsewhere.
    fn cancelled(&self) -> BoxFuture<'static, ()>;
    /// Why it was ended, once it was.
    fn reason(&self) -> Option<String>;
}

impl Gate for LiveGuard {
    fn admit(&self) -> impl Future<Output = Result<(), String>> + Send {
        LiveGuard::admit(self)
    }

    fn cancelled(&self) -> BoxFuture<'static, ()> {
        Box::pin(LiveGuard::cancelled(self))
    }

    fn reason(&self) -> Option<String> {
        LiveGuard::reason(self)
    }
}

/// A limit in words: "15 minutes", "8 hours", "90 seconds", "1 hour".
fn in_words(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// How a terminal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    Exited(i32),
    Closed(String),
}

/// The time limits of a terminal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub idle: Duration,
    pub max: Duration,
    /// The recording's size at which the terminal ends.
    pub recording: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle: IDLE_LIMIT,
            max: MAX_DURATION,
            recording: 64 * 1024 * 1024,
        }
    }
}

/// The outcome of [`relay`].
#[derive(Debug)]
pub(crate) struct Relayed {
    pub end: End,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Warden ended it (the gate's reason), rather than the person or the backend.
    pub closed_by_warden: bool,
}

/// Relay one terminal: `ready` first, then frames both ways (each admitted by `gate`), output
/// recorded, until one side ends, the gate refuses, or a limit passes. Then the backend is
/// closed, the gate dropped (out of the registry), and the browser told why and closed.
pub(crate) async fn relay<Tx, Rx, E, B, G>(
    browser_tx: &mut Tx,
    browser_rx: &mut Rx,
    backend: &mut B,
    gate: G,
    recorder: &mut Recorder,
    ready: &Value,
    limits: Limits,
) -> Relayed
where
    Tx: Sink<AxMessage> + Unpin,
    Rx: Stream<Item = Result<AxMessage, E>> + Unpin,
    B: Backend,
    G: Gate,
{
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let _ = browser_tx
        .send(AxMessage::Text(ready.to_string().into()))
        .await;
    let mut last_input = Instant::now();
    // The terminal's size: a resize to the size it has is neither recorded nor passed on (a
    // browser, or a script, sending the same size over and over fills no recording).
    let mut size: Option<(u16, u16)> = None;
    let mut cancelled = gate.cancelled();
    let browser_gone = || End::Closed("the browser closed the terminal".into());
    let end = loop {
        let idle_left = limits.idle.saturating_sub(last_input.elapsed());
        let max_left = limits.max.saturating_sub(started.elapsed());
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                break End::Closed(gate.reason().unwrap_or_else(|| "access ended".into()));
            }
            _ = tokio::time::sleep(idle_left) => {
                break End::Closed(format!("idle for {}", in_words(limits.idle)));
            }
            _ = tokio::time::sleep(max_left) => {
                break End::Closed(format!("limit of {} reached", in_words(limits.max)));
            }
            _ = flush.tick() => {
                // A crash loses at most the last second of the recording.
                if let Err(e) = recorder.flush().await {
                    tracing::error!(error = %e, "terminal recording failed");
                    break End::Closed("the recording failed, so the terminal ends".into());
                }
            }
            m = browser_rx.next() => {
                let Some(Ok(m)) = m else { break browser_gone() };
                if let Err(reason) = gate.admit().await {
                    break End::Closed(reason);
                }
                let sent = match m {
                    AxMessage::Binary(b) => {
                        last_input = Instant::now();
                        bytes_in += b.len() as u64;
                        if let Err(e) = recorder.input(&b).await {
                            tracing::error!(error = %e, "terminal recording failed");
                            break End::Closed("the recording failed, so the terminal ends".into());
                        }
                        backend.input(b.to_vec()).await
                    }
                    AxMessage::Text(t) => match serde_json::from_str::<Value>(&t) {
                        Ok(c) if c["type"] == "resize" => {
                            let cols = c["cols"].as_u64().unwrap_or(80).clamp(1, 1000) as u16;
                            let rows = c["rows"].as_u64().unwrap_or(24).clamp(1, 1000) as u16;
                            if size == Some((cols, rows)) {
                                Ok(())
                            } else {
                                size = Some((cols, rows));
                                let _ = recorder.resize(cols.into(), rows.into()).await;
                                backend.resize(cols, rows).await
                            }
                        }
                        _ => Ok(()),
                    },
                    AxMessage::Close(_) => break browser_gone(),
                    _ => Ok(()),
                };
                if let Err(reason) = sent {
                    break End::Closed(reason);
                }
            }
            out = backend.next_output() => {
                let data = match out {
                    Output::Data(d) => d,
                    Output::Exit(code) => break End::Exited(code),
                    Output::Lost(reason) => break End::Closed(reason),
                };
                if let Err(reason) = gate.admit().await {
                    break End::Closed(reason);
                }
                bytes_out += data.len() as u64;
                if let Err(e) = recorder.output(&data).await {
                    tracing::error!(error = %e, "terminal recording failed");
                    break End::Closed("the recording failed, so the terminal ends".into());
                }
                if browser_tx.send(AxMessage::Binary(data.into())).await.is_err() {
                    break browser_gone();
                }
            }
        }
        // What is shown (and typed, and resized) is recorded, and a terminal that cannot be
        // recorded does not run: past the recording's limit, the terminal ends.
        if recorder.bytes() >= limits.recording {
            break End::Closed(format!(
                "its recording reached the limit of {} MiB",
                limits.recording.div_ceil(1024 * 1024)
            ));
        }
    };
    // The terminal is over: out of the registry before anyone is told so (and before the
    // backend's own clean-up, such as refusing the shell's credential, could fail a re-check).
    let closed_by_warden = gate.reason().is_some();
    drop(gate);
    backend.close().await;
    let (control, code) = match &end {
        End::Exited(c) => (json!({"type": "exit", "code": c}), 1000u16),
        End::Closed(r) => (json!({"type": "closed", "reason": r}), 4000u16),
    };
    let _ = browser_tx
        .send(AxMessage::Text(control.to_string().into()))
        .await;
    let reason = match &end {
        End::Exited(c) => format!("exited (code {c})"),
        End::Closed(r) => r.clone(),
    };
    let short: String = reason.chars().take(100).collect();
    let _ = browser_tx
        .send(AxMessage::Close(Some(AxCloseFrame {
            code,
            reason: short.into(),
        })))
        .await;
    Relayed {
        end,
        bytes_in,
        bytes_out,
        closed_by_warden,
    }
}

impl TerminalSession {
    async fn run(self, socket: WebSocket) {
        let TerminalSession {
            state,
            mut backend,
            guard,
            audit,
            ending,
            ready,
            mut recorder,
            limits,
        } = self;
        let started = Instant::now();
        let (mut browser_tx, mut browser_rx) = socket.split();
        let r = relay(
            &mut browser_tx,
            &mut browser_rx,
            &mut backend,
            guard,
            &mut recorder,
            &ready,
            limits,
        )
        .await;
        let mut ev = audit.clone();
        // The id of the end journaled when it opened: this event replaces that one.
        ev.id = ending.finish();
        ev.action = "terminal.close".into();
        ev.reason = Some(match &r.end {
            End::Exited(c) => format!("exited (code {c})"),
            End::Closed(reason) => reason.clone(),
        });
        ev.duration_ms = Some(started.elapsed().as_millis() as i64);
        ev.details["bytes_in"] = json!(r.bytes_in);
        ev.details["bytes_out"] = json!(r.bytes_out);
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
        if let End::Exited(c) = r.end {
            ev.details["exit_code"] = json!(c);
        } else if r.closed_by_warden {
            ev.details["closed_by_warden"] = json!(true);
        }
        // Journaled, then stored by the gateway's audit writer (which clears the journal).
        state.gateway.record(ev);
    }
}

/// Chunks read per query when a recording is served.
const PAGE: u64 = 32;

/// The SHA-256 (hex) and size of a stored recording, read a page at a time from `first`.
async fn recording_digest(
    state: &AppState,
    sealer: Option<&warden_domain::secrets::Sealer>,
    id: &str,
    first: Vec<(i32, Vec<u8>)>,
) -> Result<(String, u64), sea_orm::DbErr> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut bytes = 0u64;
    let mut page = first;
    loop {
        let Some(last) = page.last().map(|c| c.0) else {
            break;
        };
        let full = page.len() as u64 == PAGE;
        for (_, data) in &page {
            hash.update(data);
            bytes += data.len() as u64;
        }
        if !full {
            break;
        }
        page = warden_domain::recordings::store::page(&state.services.db, sealer, id, last, PAGE)
            .await?;
    }
    Ok((hex::encode(hash.finalize()), bytes))
}

/// `GET /api/v1/terminal/recordings/{id}`: the asciicast of a terminal, for those who may
/// replay it ([`warden_domain::recordings::readable`]: its audit events, and the secrets it
/// could have shown).
pub async fn get_recording(
    State(state): State<AppState>,
    crate::api::auth::AuthUser(who): crate::api::auth::AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, crate::api::error::ApiError> {
    use crate::api::error::ApiError;
    // Read before the check: an authorization change after it is seen while streaming.
    let checked_epoch = state.services.policy.epoch();
    // A refusal says why (the right it takes), so the player can tell the viewer.
    let opened = warden_domain::recordings::readable(&state.services, &who, &id)
        .await
        .map_err(|e| match e {
            warden_domain::DomainError::Forbidden { reason } => {
                ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", reason)
            }
            e => ApiError::from(e),
        })?;
    let sealer = state.services.at_rest().cloned();
    let first =
        warden_domain::recordings::store::page(&state.services.db, sealer.as_ref(), &id, -1, PAGE)
            .await
            .map_err(|e| ApiError::from(warden_domain::DomainError::from(e)))?;
    // A finished recording is checked against the digest its terminal closed with (in the
    // audit log's hash chain) before a byte is played: chunks altered, removed or swapped in
    // the database are refused, never shown as what the terminal printed.
    if !first.is_empty() {
        let ended = warden_domain::recordings::ending(&state.services, &opened, &id).await?;
        if let Some(end) = ended.filter(|e| e.sha256.is_some()) {
            let (digest, bytes) = recording_digest(&state, sealer.as_ref(), &id, first.clone())
                .await
                .map_err(|e| ApiError::from(warden_domain::DomainError::from(e)))?;
            if Some(digest) != end.sha256 || end.bytes.is_some_and(|b| b != bytes) {
                let why = "the recording does not match the digest its terminal closed with: it was altered in the database";
                state
                    .services
                    .audit_denied(&who, "recording.replay", "recording", &id, why)
                    .await?;
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "recording_altered",
                    why,
                ));
            }
        }
    }
    // A replay shows what the terminal printed (and typed, when input is recorded): who watched
    // whose session is in the log before the first byte is sent; one that cannot be recorded is
    // not played.
    let mut ev = warden_domain::audit::AuditEvent::by(
        &who,
        warden_domain::dto::AuditKind::Console,
        "recording.replay",
        warden_domain::audit::Outcome::Allowed,
    )
    .resource("recording", &id);
    ev.project = opened.project.clone();
    ev.cluster = opened.cluster.clone();
    ev.namespace = opened.namespace.clone();
    ev.details = serde_json::json!({ "terminal_of": opened.actor_name });
    state.services.audit.record(ev).await?;
    let body = if first.is_empty() {
        // Made before recordings moved into the database: a file in this replica's data
        // directory, if it is still there.
        let legacy = state
            .config
            .data_dir
            .join("recordings")
            .join(format!("{id}.cast"));
        axum::body::Body::from(
            tokio::fs::read(&legacy)
                .await
                .map_err(|_| ApiError::not_found("recording"))?,
        )
    } else {
        // Streamed a page of chunks at a time: memory does not grow with the recording. A
        // viewer who loses the right to replay it (an authorization change) gets no further
        // page: the body is cut short, never quietly ended.
        let db = state.services.db.clone();
        let services = state.services.clone();
        let start = (Some(first), db, id.clone(), checked_epoch);
        let pages = futures::stream::unfold(start, move |(page, db, id, checked_epoch)| {
            let sealer = sealer.clone();
            let (services, who) = (services.clone(), who.clone());
            async move {
                let page = page?;
                let mut checked_epoch = checked_epoch;
                let epoch = services.policy.epoch();
                if epoch != checked_epoch {
                    if warden_domain::recordings::readable(&services, &who, &id)
                        .await
                        .is_err()
                    {
                        let cut = std::io::Error::other(
                            "the recording's replay ended: your access changed",
                        );
                        return Some((Err(cut), (None, db, id, epoch)));
                    }
                    checked_epoch = epoch;
                }
                let last = page.last().map(|c| c.0)?;
                let full = page.len() as u64 == PAGE;
                let bytes: Vec<u8> = page.into_iter().flat_map(|c| c.1).collect();
                let next = if full {
                    match warden_domain::recordings::store::page(
                        &db,
                        sealer.as_ref(),
                        &id,
                        last,
                        PAGE,
                    )
                    .await
                    {
                        Ok(p) if !p.is_empty() => Some(p),
                        Ok(_) => None,
                        Err(e) => {
                            let failed = std::io::Error::other(e);
                            return Some((Err(failed), (None, db, id, checked_epoch)));
                        }
                    }
                } else {
                    None
                };
                Some((Ok(bytes::Bytes::from(bytes)), (next, db, id, checked_epoch)))
            }
        });
        axum::body::Body::from_stream(pages)
    };
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

/// The routes of the terminal (merged into `/api/v1`).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/terminal/ws", axum::routing::get(terminal_ws))
}

#[cfg(test)]
mod tests {
    //! The relay over channels: a fake browser, a fake backend, a fake gate.
    use super::*;
    use futures::channel::mpsc as fmpsc;
    use std::sync::Mutex;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// What the relay did to the backend.
    #[derive(Debug, PartialEq, Eq)]
    enum Did {
        Input(Vec<u8>),
        Resize(u16, u16),
        Close,
    }

    struct FakeBackend {
        did: mpsc::UnboundedSender<Did>,
        out: mpsc::UnboundedReceiver<Output>,
    }

    impl Backend for FakeBackend {
        async fn input(&mut self, data: Vec<u8>) -> Result<(), String> {
            self.did.send(Did::Input(data)).map_err(|_| "gone".into())
        }
        async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), String> {
            self.did
                .send(Did::Resize(cols, rows))
                .map_err(|_| "gone".into())
        }
        async fn next_output(&mut self) -> Output {
            self.out
                .recv()
                .await
                .unwrap_or(Output::Lost("backend gone".into()))
        }
        async fn close(&mut self) {
            let _ = self.did.send(Did::Close);
        }
    }

    #[derive(Clone, Default)]
    struct FakeGate {
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    }

    impl FakeGate {
        fn revoke(&self, why: &str) {
            *self.reason.lock().unwrap() = Some(why.into());
            self.cancel.cancel();
        }
    }

    impl Gate for FakeGate {
        async fn admit(&self) -> Result<(), String> {
            match self.reason.lock().unwrap().clone() {
                Some(r) => Err(r),
                None => Ok(()),
            }
        }
        fn cancelled(&self) -> BoxFuture<'static, ()> {
            Box::pin(self.cancel.clone().cancelled_owned())
        }
        fn reason(&self) -> Option<String> {
            self.reason.lock().unwrap().clone()
        }
    }

    type BrowserIn = fmpsc::UnboundedSender<Result<AxMessage, std::convert::Infallible>>;

    struct Rig {
        browser: BrowserIn,
        seen: fmpsc::UnboundedReceiver<AxMessage>,
        did: mpsc::UnboundedReceiver<Did>,
        out: mpsc::UnboundedSender<Output>,
        gate: FakeGate,
        relay: tokio::task::JoinHandle<Relayed>,
        _dir: tempfile::TempDir,
    }

    async fn rig(limits: Limits) -> Rig {
        let (browser, mut from_browser) = fmpsc::unbounded();
        let (mut to_browser, seen) = fmpsc::unbounded::<AxMessage>();
        let (did_tx, did) = mpsc::unbounded_channel();
        let (out, out_rx) = mpsc::unbounded_channel();
        let gate = FakeGate::default();
        let dir = tempfile::tempdir().unwrap();
        let db = recorder::tests::database(dir.path()).await;
        let mut recorder = Recorder::create(db, None, "t", "test", 0).await.unwrap();
        let g = gate.clone();
        let relay = tokio::spawn(async move {
            let mut backend = FakeBackend {
                did: did_tx,
                out: out_rx,
            };
            let ready = json!({"type": "ready", "mode": "shell"});
            relay(
                &mut to_browser,
                &mut from_browser,
                &mut backend,
                g,
                &mut recorder,
                &ready,
                limits,
            )
            .await
        });
        let mut r = Rig {
            browser,
            seen,
            did,
            out,
            gate,
            relay,
            _dir: dir,
        };
        assert_eq!(r.control().await["type"], "ready");
        r
    }

    impl Rig {
        async fn next(&mut self) -> AxMessage {
            tokio::time::timeout(Duration::from_secs(5), self.seen.next())
                .await
                .expect("a message in time")
                .expect("the browser side is open")
        }

        async fn control(&mut self) -> Value {
            match self.next().await {
                AxMessage::Text(t) => serde_json::from_str(&t).unwrap(),
                other => panic!("not a control message: {other:?}"),
            }
        }

        async fn did(&mut self) -> Did {
            tokio::time::timeout(Duration::from_secs(5), self.did.recv())
                .await
                .expect("the backend is used in time")
                .expect("open")
        }

        fn type_in(&self, m: AxMessage) {
            self.browser.unbounded_send(Ok(m)).unwrap();
        }

        async fn close_code(&mut self) -> u16 {
            match self.next().await {
                AxMessage::Close(Some(f)) => f.code,
                other => panic!("not a close frame: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn frames_and_resize_pass_both_ways() {
        let mut r = rig(Limits::default()).await;
        r.type_in(AxMessage::Binary(b"ls\r".to_vec().into()));
        assert_eq!(r.did().await, Did::Input(b"ls\r".to_vec()));
        r.type_in(AxMessage::Text(
            json!({"type": "resize", "cols": 120, "rows": 40})
                .to_string()
                .into(),
        ));
        assert_eq!(r.did().await, Did::Resize(120, 40));
        // Unknown control messages are ignored.
        r.type_in(AxMessage::Text("{\"type\":\"nonsense\"}".into()));
        r.out.send(Output::Data(b"hello".to_vec())).unwrap();
        match r.next().await {
            AxMessage::Binary(b) => assert_eq!(&b[..], b"hello"),
            other => panic!("{other:?}"),
        }
        // The backend ends by itself: exit, close 1000.
        r.out.send(Output::Exit(3)).unwrap();
        assert_eq!(r.control().await, json!({"type": "exit", "code": 3}));
        assert_eq!(r.close_code().await, 1000);
        assert_eq!(r.did().await, Did::Close);
        let done = r.relay.await.unwrap();
        assert_eq!(done.end, End::Exited(3));
        assert_eq!((done.bytes_in, done.bytes_out), (3, 5));
        assert!(!done.closed_by_warden);
    }

    #[tokio::test]
    async fn the_browser_closing_closes_the_backend() {
        let mut r = rig(Limits::default()).await;
        r.type_in(AxMessage::Close(None));
        assert_eq!(r.did().await, Did::Close);
        let done = r.relay.await.unwrap();
        assert_eq!(
            done.end,
            End::Closed("the browser closed the terminal".into())
        );
        // Or the socket just goes away.
        let r = rig(Limits::default()).await;
        drop(r.browser);
        let mut did = r.did;
        assert_eq!(did.recv().await, Some(Did::Close));
    }

    #[tokio::test]
    async fn a_lost_backend_closes_the_browser_with_the_reason() {
        let mut r = rig(Limits::default()).await;
        r.out
            .send(Output::Lost("the connection to cluster c was lost".into()))
            .unwrap();
        assert_eq!(
            r.control().await,
            json!({"type": "closed", "reason": "the connection to cluster c was lost"})
        );
        assert_eq!(r.close_code().await, 4000);
    }

    #[tokio::test]
    async fn a_refusal_mid_stream_closes_both_ends_with_the_reason() {
        let mut r = rig(Limits::default()).await;
        r.type_in(AxMessage::Binary(b"a".to_vec().into()));
        assert_eq!(r.did().await, Did::Input(b"a".to_vec()));
        // Refused by a change elsewhere while idle: the notification ends it.
        r.gate.revoke("you have no kubectl access to cluster c");
        assert_eq!(
            r.control().await,
            json!({"type": "closed", "reason": "you have no kubectl access to cluster c"})
        );
        assert_eq!(r.close_code().await, 4000);
        assert_eq!(r.did().await, Did::Close);
        let done = r.relay.await.unwrap();
        assert!(done.closed_by_warden);
    }

    #[tokio::test]
    async fn a_refused_frame_is_not_relayed() {
        let mut r = rig(Limits::default()).await;
        // The gate refuses the next frame (no notification yet): the output never reaches
        // the browser.
        *r.gate.reason.lock().unwrap() = Some("signed out".into());
        r.out.send(Output::Data(b"secret".to_vec())).unwrap();
        assert_eq!(
            r.control().await,
            json!({"type": "closed", "reason": "signed out"})
        );
        assert_eq!(r.close_code().await, 4000);
        assert_eq!(r.did().await, Did::Close);
        assert_eq!(r.relay.await.unwrap().bytes_out, 0);
    }

    #[tokio::test]
    async fn a_terminal_ends_when_its_recording_reaches_the_limit() {
        let mut r = rig(Limits {
            recording: 4096,
            ..Limits::default()
        })
        .await;
        // Output is shown, and recorded, until the recording passes the limit.
        let mut shown = 0;
        let closed = loop {
            let _ = r.out.send(Output::Data(vec![b'y'; 1000]));
            match r.next().await {
                AxMessage::Binary(b) => shown += b.len(),
                AxMessage::Text(t) => break serde_json::from_str::<Value>(&t).unwrap(),
                other => panic!("{other:?}"),
            }
            assert!(shown <= 8000, "never ended");
        };
        assert_eq!(
            closed,
            json!({"type": "closed", "reason": "its recording reached the limit of 1 MiB"})
        );
        assert!(shown >= 3000, "{shown}");
        assert_eq!(r.close_code().await, 4000);
        assert_eq!(r.did().await, Did::Close);
        // Keystrokes and resizes count too: a terminal resized over and over ends as well.
        let mut r = rig(Limits {
            recording: 4096,
            ..Limits::default()
        })
        .await;
        let mut ended = None;
        for i in 0..1000u64 {
            r.type_in(AxMessage::Text(
                json!({"type": "resize", "cols": 80 + i % 2, "rows": 24})
                    .to_string()
                    .into(),
            ));
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), r.seen.next()).await
            {
                ended = Some(m);
                break;
            }
        }
        let ended = match ended {
            Some(m) => m,
            None => r.next().await,
        };
        assert!(matches!(ended, AxMessage::Text(t) if t.contains("recording reached")));
    }

    #[tokio::test]
    async fn idle_terminals_end() {
        let mut r = rig(Limits {
            idle: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let closed = r.control().await;
        assert_eq!(closed["type"], "closed");
        assert!(closed["reason"].as_str().unwrap().starts_with("idle"));
    }
}
