//! One request through the gateway, in a fixed order: the path is canonical (no
//! percent-encoding, `.`/`..` or empty segments, backslashes: what is checked is what is
//! forwarded), authenticate (certificate -> user, serial), the user is active, the credential
//! is neither revoked nor expired, kubectl is not disabled, a recent console sign-in if
//! required, the user may use kubectl on this cluster;
//! then strip the client's credentials and impersonation headers, add `Audit-ID`, refuse what
//! read-only grants never allow, reconcile the user's service account, and forward as that
//! service account, streaming the answer (or relaying the upgraded connection both ways).
//! Every request ends as one `kube_api` audit event.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use warden_domain::access::kube::{KubeIntent, KubeRules};
use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType};
use warden_domain::clock::Timestamp;
use warden_domain::dto::StreamKind;
use warden_domain::entities::{kube_service_accounts, users};
use warden_domain::identity::accounts::STATUS_ACTIVE;
use warden_domain::ids::UserId;
use warden_domain::kubeconfig::EffectiveKubectlSettings;
use warden_domain::kubectl::{self as kc, KubeAccess, KubeCluster};

use super::pki::PeerIdentity;
use super::rbac::{self, Desired};
use super::relay;
use super::request;
use super::transport::{As, ClusterRef};
use super::Gateway;
use crate::live::{Check, LiveGuard, StreamInfo};
use std::future::Future;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the TLS handshake established about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub identity: Option<PeerIdentity>,
    /// It came in on the web terminals' loopback entry (see [`super::Gateway::shell_entry`]).
    pub shell_entry: bool,
}

const AUDIT_ID: HeaderName = HeaderName::from_static("audit-id");
/// The WebSocket subprotocol prefix browsers use to send a bearer token.
const WS_BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

fn empty() -> GatewayBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// What the client is answered for `code`: Warden's 503 (a cluster not connected or not
/// reachable) goes out as 502, whose message client-go shows (for a 503 it prints only "the
/// server is currently unable to handle the request").
fn client_code(code: StatusCode) -> StatusCode {
    if code == StatusCode::SERVICE_UNAVAILABLE {
        StatusCode::BAD_GATEWAY
    } else {
        code
    }
}

/// A Kubernetes `Status` failure, so kubectl prints the message. Server errors are plain text:
/// client-go's discovery, which every kubectl command runs first, decodes no `Status` and
/// shows a plain-text body in its message (`an error on the server ("the cluster demo is not
/// connected to Warden") has prevented the request from succeeding`).
fn status_response(code: StatusCode, message: &str, audit_id: &str) -> Response<GatewayBody> {
    let code = client_code(code);
    if code.is_server_error() {
        let mut r = Response::new(
            Full::new(Bytes::from(message.to_owned()))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *r.status_mut() = code;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(audit_id) {
            r.headers_mut().insert(AUDIT_ID, v);
        }
        return r;
    }
    let reason = match code {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::BAD_GATEWAY => "InternalError",
        _ => "BadRequest",
    };
    let body = warden_domain::agent_protocol::kube_status(code.as_u16(), reason, message);
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(audit_id) {
        r.headers_mut().insert(AUDIT_ID, v);
    }
    r
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    warden_domain::agent_protocol::is_hop_by_hop(name.as_str())
}

/// What a cluster's answer may not set on the client: state of the host the gateway shares
/// with the console (cookies are not scoped by port), or policy for that host.
fn host_state_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "set-cookie" | "set-cookie2" | "strict-transport-security" | "clear-site-data" | "alt-svc"
    ) || name.as_str().starts_with("x-warden-")
}

/// Client-supplied credentials and identity claims: never forwarded.
fn client_identity_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "audit-id"
        || n == "cookie"
        || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
        || n.starts_with("x-warden-")
}

/// Split `/clusters/<name>/<rest>` into the cluster name and the API path.
fn split_cluster_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/clusters/")?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!name.is_empty()).then_some((name, tail))
}

/// Why `path` is not in canonical form, if it is not. The gateway decides on the path it
/// forwards, so the path must mean the same to the gateway and to the API server, which
/// percent-decodes before it splits (`apple%2Fsecrets` is `apple/secrets` there) and may
/// resolve dot segments. Kubernetes API paths never need any of this: names are DNS labels
/// and subdomains. A single trailing slash is allowed (the API server ignores it too). Only
/// the path is checked; the query (label selectors...) is left as it is.
fn non_canonical(path: &str) -> Option<&'static str> {
    if path.contains('%') {
        return Some("it contains percent-encoding");
    }
    if path.contains('\\') {
        return Some("it contains a backslash");
    }
    let Some(inner) = path.strip_prefix('/') else {
        return Some("it does not start with /");
    };
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return None;
    }
    for seg in inner.split('/') {
        match seg {
            "" => return Some("it contains an empty segment (//)"),
            "." | ".." => return Some("it contains a . or .. segment"),
            _ => {}
        }
    }
    None
}

/// The event being built for this request, and how to finish it.
struct Ctx {
    gw: Arc<Gateway>,
    ev: Option<AuditEvent>,
    started: Instant,
    _pending: super::PendingAudit,
}

impl Ctx {
    fn id(&self) -> String {
        self.ev
            .as_ref()
            .map(|e| e.id.to_string())
            .unwrap_or_default()
    }

    /// Refuse with a message the caller sees; the audit event carries `reason` (the same
    /// message unless a more detailed one is given).
    fn deny(
        &mut self,
        code: StatusCode,
        message: &str,
        reason: Option<&str>,
    ) -> Response<GatewayBody> {
        let id = self.id();
        if let Some(mut ev) = self.ev.take() {
            ev.outcome = Outcome::Denied;
            ev.reason = Some(reason.unwrap_or(message).to_owned());
            ev.status = Some(code.as_u16() as i32);
            ev.duration_ms = Some(self.started.elapsed().as_millis() as i64);
            self.gw.record_refusal(ev);
        }
        status_response(code, message, &id)
    }

    fn fail(&mut self, code: StatusCode, message: &str, detail: &str) -> Response<GatewayBody> {
        let id = self.id();
        if let Some(mut ev) = self.ev.take() {
            ev.outcome = Outcome::Error;
            ev.reason = Some(format!("{message}: {detail}"));
            ev.status = Some(client_code(code).as_u16() as i32);
            ev.duration_ms = Some(self.started.elapsed().as_millis() as i64);
            self.gw.record(ev);
        }
        status_response(code, message, &id)
    }
}

/// Answer one request. Its audit record (the finished event, or for a forwarded answer the
/// start of it) is on disk before the answer's headers go out: a request answered is a request
/// audited, even if Warden is killed the next instant. A journal that cannot be written turns
/// the answer into a 503 (fail closed).
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<GatewayBody> {
    let (parts, body) = req.into_parts();
    // A client that asked to hear first (`Expect: 100-continue`) sends no body to a refusal.
    let hears_first = parts.headers.contains_key(header::EXPECT);
    let mut body = Some(body);
    let mut resp = answer(gw.clone(), conn, Request::from_parts(parts, ()), &mut body).await;
    // Not forwarded: a refusal. Its request body is read (bounded) before the answer goes out,
    // so a client still sending it hears the refusal rather than a reset connection.
    if let Some(unread) = body.filter(|_| !hears_first) {
        if !drain(unread).await {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    match gw.journal_durable().await {
        Ok(()) => resp,
        Err(e) => {
            let id = resp
                .headers()
                .get(AUDIT_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            tracing::error!(error = %e, audit.id = %id, "an answer was withheld: its audit record could not be written");
            let mut refused = status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot record requests right now; try again in a moment",
                &id,
            );
            refused
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            refused
        }
    }
}

/// The most of a refused request's body read before answering, and for how long.
const DRAIN_LIMIT: usize = 4 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read and discard a refused request's body; false when it was larger or slower than the
/// bounds (the connection is then closed after the answer).
async fn drain(mut body: Incoming) -> bool {
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        seen += data.len();
                        if seen > DRAIN_LIMIT {
                            return false;
                        }
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

async fn answer(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<()>,
    body: &mut Option<Incoming>,
) -> Response<GatewayBody> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    // A path that is not canonical is refused below, before anything is decided on it; nor
    // is it read for the audit event (what it names depends on who decodes it).
    let not_canonical = non_canonical(&path);
    let split = split_cluster_path(&path).filter(|_| not_canonical.is_none());
    let api_path = split.map(|(_, p)| p.to_owned()).unwrap_or_default();
    let info = request::parse(req.method(), &api_path, query.as_deref());
    let identity = conn.identity.clone();
    let session_type = identity
        .as_ref()
        .and_then(|i| SessionType::parse(&i.session_type))
        .unwrap_or(SessionType::Cli);
    let mut ev = AuditEvent::new(
        AuditKind::KubeApi,
        Actor::Anonymous {
            claimed: identity
                .as_ref()
                .map(|i| format!("certificate CN={}", i.user_id))
                .unwrap_or_else(|| "no client certificate".into()),
        },
        session_type,
        format!("kube.{}", info.verb),
        Outcome::Allowed,
    )
    .request(RequestMeta {
        method: Some(req.method().as_str().to_owned()),
        path: Some(match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        }),
        source_ip: Some(conn.peer.ip().to_string()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: None,
    });
    ev.request.request_id = Some(ev.id.to_string());
    ev.cluster = split.map(|(c, _)| c.to_owned());
    ev.namespace = info.namespace.clone();
    ev.resource_kind = info.resource_kind();
    ev.resource_name = info.name.clone();
    ev.details = json!({
        "verb": info.verb,
        "api_group": info.api_group,
        "api_version": info.api_version,
        "resource": info.resource,
        "subresource": info.subresource,
        "serial": identity.as_ref().map(|i| i.serial.clone()),
    });
    // A call from a web terminal's kubectl shell is linked to that terminal.
    if let Some(terminal) = identity
        .as_ref()
        .filter(|i| is_web_shell(i))
        .and_then(|i| gw.web_shell_terminal(&i.serial))
    {
        ev.details["terminal_id"] = json!(terminal);
    }
    let mut ctx = Ctx {
        _pending: gw.pending(),
        gw: gw.clone(),
        ev: Some(ev),
        started,
    };

    // The audit log keeps up, or nothing goes through: past its bound the request is refused
    // (fail closed) until the writer catches up. Nothing is dropped and memory stays bounded;
    // the refusal itself is counted, not queued behind the backlog.
    if gw.audit_backlogged() {
        let id = ctx.id();
        ctx.ev = None;
        let mut refused = status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Warden cannot record requests as fast as they come right now; try again in a moment",
            &id,
        );
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return refused;
    }

    // 0. The path is canonical: what is checked is what is forwarded.
    if let Some(why) = not_canonical {
        return ctx.deny(
            StatusCode::BAD_REQUEST,
            &format!(
                "the request path is not canonical: {why}; Kubernetes API paths never need it"
            ),
            None,
        );
    }

    // 0b. Kubernetes clients, not web pages: a browser holding the user's client certificate
    // would present it for any page's request (a cross-site WebSocket opening an exec above
    // all). Browsers mark what a page sends with `Origin` or `Sec-Fetch-*`; kubectl and
    // client libraries send neither.
    if let Some(what) = from_a_web_page(req.headers()) {
        return ctx.deny(
            StatusCode::FORBIDDEN,
            &format!(
                "the gateway serves Kubernetes clients, not web pages ({what}): use kubectl, or Warden's web terminal"
            ),
            None,
        );
    }

    // 1. Authenticate: the certificate (verified at TLS against the user CA) names the user.
    let Some(identity) = identity else {
        return ctx.deny(
            StatusCode::UNAUTHORIZED,
            "a Warden client certificate is required: download a kubeconfig from Warden",
            None,
        );
    };
    // A web terminal's credential works only where that terminal's kubectl dials, and that
    // entry serves nothing else: read out of the terminal, it is useless elsewhere.
    if is_web_shell(&identity) != conn.shell_entry {
        let why = if conn.shell_entry {
            "this port serves the web terminals' kubectl only; use the gateway URL in your kubeconfig"
        } else {
            "this credential belongs to a web terminal and works only inside it: download a kubeconfig from Warden"
        };
        return ctx.deny(StatusCode::FORBIDDEN, why, None);
    }
    let Some((cluster_name, _)) = split else {
        return ctx.deny(
            StatusCode::NOT_FOUND,
            "not a cluster path: the gateway serves each cluster at /clusters/<name> (use the kubeconfig Warden gives you)",
            None,
        );
    };
    let Some(user_id) = UserId::parse(&identity.user_id) else {
        return ctx.deny(
            StatusCode::UNAUTHORIZED,
            "this credential does not name a Warden user; download a new kubeconfig",
            None,
        );
    };
    // Steps 2-6: the same decision a live stream is re-checked with later.
    let epoch = gw.services.policy.epoch();
    let authorized = authorize(
        &gw,
        Via::Kubeconfig(&identity),
        user_id,
        cluster_name,
        &info.intent(),
        epoch,
    )
    .await;
    let authorized = match authorized {
        Ok(a) => a,
        Err(refusal) => {
            if let Some(ev) = ctx.ev.as_mut() {
                if let Some((id, email)) = &refusal.user {
                    ev.actor = Actor::User {
                        id: *id,
                        name: email.clone(),
                    };
                }
                if refusal.project.is_some() {
                    ev.project = refusal.project.clone();
                }
            }
            if let Some(cluster) = &refusal.lost_cluster {
                // Losing every grant on a cluster removes the service account there, now.
                gw.deprovision(cluster, &user_id.to_string()).await;
            }
            return if refusal.error {
                ctx.fail(
                    refusal.status,
                    &refusal.message,
                    refusal.reason.as_deref().unwrap_or_default(),
                )
            } else if refusal.status == StatusCode::FORBIDDEN && info.resource_request {
                // Worded as the API server words a refusal (`pods is forbidden: ...`), which
                // kubectl shows as is for every verb.
                let resource = info.resource.as_deref().unwrap_or("resources");
                let message = format!("{resource} is forbidden: {}", refusal.message);
                ctx.deny(refusal.status, &message, refusal.reason.as_deref())
            } else {
                ctx.deny(refusal.status, &refusal.message, refusal.reason.as_deref())
            };
        }
    };
    let authorized_until = authorized.valid_until();
    let Authorized { adm, access, .. } = authorized;
    if let Some(ev) = ctx.ev.as_mut() {
        ev.actor = Actor::User {
            id: user_id,
            name: adm.user.email.clone(),
        };
        ev.project = access.project.clone().or(Some(adm.cluster.owner.clone()));
        if let Some(d) = ev.details.as_object_mut() {
            d.insert("via".into(), json!(access.via));
        }
    }
    let (user, cluster) = (&adm.user, &adm.cluster);
    // 7. The user's service account and RBAC, in line with their grants now.
    let cref = ClusterRef {
        id: cluster.id,
        name: cluster.name.clone(),
    };
    let namespace = info.namespace.as_deref();
    let sa = match gw
        .ensure_identity(&cref, user, &adm.sa_name, &access, namespace)
        .await
    {
        Ok(sa) => sa,
        Err(e) => return ctx.fail(e.status, &e.message, &e.detail),
    };
    // Granted in Warden, but the namespace is not on the cluster (yet): said in words, where
    // the cluster would only say Forbidden. It works once the namespace exists.
    if let Some(ns) = namespace.filter(|ns| gw.reconciler.is_missing(cref.id, &user.id, ns)) {
        return ctx.deny(
            StatusCode::NOT_FOUND,
            &format!(
                "namespace {ns} does not exist on cluster {}: Warden grants you access there, which applies as soon as it is created",
                cluster.name
            ),
            None,
        );
    }
    let as_sa = |sa: &str| As::ServiceAccount {
        namespace: rbac::NAMESPACE.to_owned(),
        name: sa.to_owned(),
        bound_secret: Some(rbac::anchor_name(sa)),
    };
    let mut sa = sa;
    let auth = match gw.transport.authenticate(&cref, &as_sa(&sa)).await {
        Ok(h) => h,
        Err(first) => {
            // The service account may have been removed behind Warden's back: once more.
            gw.transport.forget(&cref, &sa);
            gw.reconciler.invalidate(cref.id, &user.id);
            match gw
                .ensure_identity(&cref, user, &adm.sa_name, &access, namespace)
                .await
            {
                Ok(again) => match gw.transport.authenticate(&cref, &as_sa(&again)).await {
                    Ok(h) => {
                        sa = again;
                        h
                    }
                    Err(e) => {
                        return ctx.fail(
                            StatusCode::BAD_GATEWAY,
                            &format!(
                            "Warden cannot obtain a token for your service account on cluster {}",
                            cluster.name
                        ),
                            &format!("{first}; then {e}"),
                        )
                    }
                },
                Err(e) => return ctx.fail(e.status, &e.message, &e.detail),
            }
        }
    };
    if let Some(ev) = ctx.ev.as_mut() {
        if let Some(d) = ev.details.as_object_mut() {
            d.insert(
                "service_account".into(),
                json!(format!("{}/{sa}", rbac::NAMESPACE)),
            );
        }
    }
    // Warden's own namespace is out of reach short of full access, reads included, and a list
    // or watch across every namespace would show it (its service accounts are named after
    // every user's email; the agent's pod, its events, its metrics, custom resources kept
    // there): the cluster is asked for every namespace but that one. Whether the kind is
    // namespaced, the cluster's discovery says; when it cannot say, the list is narrowed all
    // the same (a cluster-scoped kind may then refuse the selector: closed, not open), but
    // for the core kinds every Kubernetes serves cluster-wide (`discovery::built_in_scope`).
    let across = !access.full
        && info.lists_across_namespaces()
        && gw
            .scopes
            .namespaced(
                &gw.transport,
                &cref,
                &info.api_group,
                &info.api_version,
                info.resource.as_deref().unwrap_or_default(),
            )
            .await
            != Some(false);
    let query = if across {
        if let Some(ev) = ctx.ev.as_mut() {
            ev.details["excluded_namespace"] = json!(rbac::NAMESPACE);
        }
        Some(request::excluding_namespace(
            query.as_deref(),
            rbac::NAMESPACE,
        ))
    } else {
        query
    };
    // A stream that can outlive this instant (watch, follow, exec/attach/port-forward) is
    // registered, re-checked whenever authorization changes, and cut when it no longer passes.
    let long_lived = is_long_lived(&info, query.as_deref(), req.headers());
    if long_lived {
        if let Some(why) = info.intent().stream_refusal(&access) {
            let msg = format!("{} on cluster {}: {why}", user.email, cluster.name);
            return ctx.deny(StatusCode::FORBIDDEN, &msg, None);
        }
    }
    let live = long_lived.then(|| LiveSpec {
        identity: identity.clone(),
        user_id,
        cluster: cluster.name.clone(),
        info: info.clone(),
        epoch,
        valid_until: authorized_until,
    });
    let words = Words {
        email: &user.email,
        cluster: &cluster.name,
        info: &info,
        access: &access,
    };
    forward(
        gw.clone(),
        ctx,
        &cref,
        req,
        body,
        &api_path,
        query.as_deref(),
        auth,
        live,
        words,
    )
    .await
}

/// Who asks what, for a refusal by the cluster told in the person's words.
struct Words<'a> {
    email: &'a str,
    cluster: &'a str,
    info: &'a request::KubeRequest,
    access: &'a KubeAccess,
}

/// The largest refusal body Warden rewrites (a `Status` is a few hundred bytes).
const MAX_STATUS_BODY: usize = 64 * 1024;

/// The cluster's 403 `Status`, with its message in the person's words (code, reason and details
/// kept); the cluster's own message goes to the audit log. `None`: not a `Status` to rewrite.
async fn reword_forbidden(body: Incoming, words: &Words<'_>) -> Option<(Bytes, String)> {
    let bytes = http_body_util::Limited::new(body, MAX_STATUS_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let mut status: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if status.get("kind").and_then(|k| k.as_str()) != Some("Status") {
        return None;
    }
    let original = status
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_owned();
    if original.contains(&format!(
        "ValidatingAdmissionPolicy '{}'",
        warden_domain::agent_protocol::GUARD_POLICY
    )) {
        // Warden's own guard on the cluster: its words name no service account and say what
        // to change, so they are passed on as they are.
        return Some((bytes, original));
    }
    let intent = words.info.intent();
    let resource = words.info.resource.as_deref().unwrap_or("resources");
    status["message"] = json!(format!(
        "{resource} is forbidden: {}",
        warden_domain::access::kube::cluster_refusal(
            words.email,
            words.cluster,
            &intent,
            words.access
        )
    ));
    Some((Bytes::from(status.to_string()), original))
}

/// What a long-lived request needs to be registered as a live stream.
pub(crate) struct LiveSpec {
    identity: PeerIdentity,
    user_id: UserId,
    cluster: String,
    info: request::KubeRequest,
    epoch: u64,
    valid_until: i64,
}

/// The header that shows a request was sent by a web page, if one does.
fn from_a_web_page(headers: &http::HeaderMap) -> Option<&'static str> {
    if headers.contains_key(header::ORIGIN) {
        Some("it carries an Origin header")
    } else if headers.keys().any(|k| k.as_str().starts_with("sec-fetch-")) {
        Some("it carries Sec-Fetch headers")
    } else {
        None
    }
}

/// A watch, a followed log, or an upgrade: the answer may stream for hours.
fn is_long_lived(
    info: &request::KubeRequest,
    query: Option<&str>,
    headers: &http::HeaderMap,
) -> bool {
    info.verb == "watch"
        || info.is_connect()
        || headers.contains_key(header::UPGRADE)
        || (info.subresource.as_deref() == Some("log") && request::query_flag(query, "follow"))
}

impl LiveSpec {
    fn kind(&self) -> StreamKind {
        match (self.info.subresource.as_deref(), self.info.verb.as_str()) {
            (Some("exec"), _) => StreamKind::Exec,
            (Some("attach"), _) => StreamKind::Attach,
            (Some("portforward"), _) => StreamKind::Portforward,
            (Some("proxy"), _) => StreamKind::Proxy,
            (Some("log"), _) => StreamKind::Logs,
            (_, "watch") => StreamKind::Watch,
            _ => StreamKind::Stream,
        }
    }

    /// Register the stream; its check is the request's own authorization, run again.
    fn register(self, gw: &Arc<Gateway>, template: &AuditEvent, email: &str) -> LiveGuard {
        let info = StreamInfo {
            kind: self.kind(),
            user_id: self.user_id.to_string(),
            email: email.to_owned(),
            cluster: self.cluster.clone(),
            namespace: self.info.namespace.clone(),
            target: match (&self.info.resource, &self.info.name) {
                (Some(r), Some(n)) => Some(format!("{r}/{n}")),
                (Some(r), None) => Some(r.clone()),
                _ => None,
            },
            started_at: gw.services.clock.now().millis(),
        };
        let (epoch, valid_until) = (self.epoch, self.valid_until);
        let spec = Arc::new(self);
        let gw2 = gw.clone();
        let check: Check = Arc::new(move || {
            let gw = gw2.clone();
            let spec = spec.clone();
            Box::pin(async move {
                let epoch = gw.services.policy.epoch();
                let intent = spec.info.intent();
                match authorize(
                    &gw,
                    Via::Kubeconfig(&spec.identity),
                    spec.user_id,
                    &spec.cluster,
                    &intent,
                    epoch,
                )
                .await
                {
                    Ok(a) => match intent.stream_refusal(&a.access) {
                        Some(why) => Err(format!(
                            "{} on cluster {}: {why}",
                            a.adm.user.email, spec.cluster
                        )),
                        None => Ok(a.valid_until()),
                    },
                    Err(r) => Err(r.message),
                }
            })
        });
        let mut audit = template.clone();
        audit.status = None;
        audit.duration_ms = None;
        gw.live.register(info, epoch, valid_until, check, audit)
    }
}

/// What steps 1-4 established for a credential on a cluster (cached per serial and cluster).
pub(crate) struct Admission {
    /// The authorization epoch the data was read at.
    pub epoch: u64,
    pub user: users::Model,
    pub credential_expires_at: i64,
    /// The credential was issued to a reader without a fresh second factor: no writes, exec or
    /// secrets on it.
    pub read_only: bool,
    pub cluster: KubeCluster,
    pub settings: EffectiveKubectlSettings,
    pub sa_name: String,
}

impl Admission {
    /// Until when (ms, Warden's clock) the time-bound checks pass, nothing else changing.
    pub(crate) fn valid_until(&self) -> i64 {
        let mut until = self.credential_expires_at;
        if self.settings.require_recent_sign_in {
            let signed_in = self.user.last_login_at.unwrap_or(i64::MIN / 2);
            until = until.min(signed_in + self.settings.recent_sign_in_secs * 1000 + 1);
        }
        until
    }

    /// Whether the time-bound checks still pass at `now`.
    pub(crate) fn still_valid(&self, epoch: u64, now: Timestamp) -> bool {
        self.epoch == epoch
            && now.millis() < self.credential_expires_at
            && (!self.settings.require_recent_sign_in
                || recent_sign_in(&self.user, &self.settings, now))
    }
}

fn recent_sign_in(
    user: &users::Model,
    settings: &EffectiveKubectlSettings,
    now: Timestamp,
) -> bool {
    user.last_login_at
        .is_some_and(|t| now.millis() - t <= settings.recent_sign_in_secs * 1000)
}

/// Why a request, or a live stream at a later check, is refused.
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// What the caller is told.
    pub message: String,
    /// The detail for the audit log (the message when absent).
    pub reason: Option<String>,
    /// Warden could not decide (an error, not a denial).
    pub error: bool,
    /// The user, when the credential named an existing one.
    pub user: Option<(UserId, String)>,
    pub project: Option<String>,
    /// The user lost every grant on this cluster: their service account there should go.
    pub lost_cluster: Option<KubeCluster>,
}

impl Refusal {
    fn deny(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            reason: None,
            error: false,
            user: None,
            project: None,
            lost_cluster: None,
        }
    }

    fn fail(status: StatusCode, message: impl Into<String>, detail: impl ToString) -> Self {
        Self {
            error: true,
            reason: Some(detail.to_string()),
            ..Self::deny(status, message)
        }
    }

    fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    fn of(mut self, user: &users::Model, user_id: UserId) -> Self {
        self.user = Some((user_id, user.email.clone()));
        self
    }
}

/// How the person reaches the cluster: a kubeconfig credential (its serial is checked), or
/// the console (its session is checked by the caller, e.g. the web terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via<'a> {
    Kubeconfig(&'a PeerIdentity),
    Console,
}

/// What the gateway's checks established for a request.
pub(crate) struct Authorized {
    pub adm: Arc<Admission>,
    pub access: KubeAccess,
    /// When the first binding behind the user's rights expires (ms; `i64::MAX`: none does).
    pub grants_until: i64,
}

impl Authorized {
    /// Until when (ms, Warden's clock) the decision holds, nothing else changing.
    pub(crate) fn valid_until(&self) -> i64 {
        self.adm.valid_until().min(self.grants_until)
    }
}

/// Steps 2-6 for a credential's request on a cluster: the admission (user active, credential
/// valid, cluster known, settings), the user's kubectl access to the cluster through their
/// bindings now, and what read-only grants and the secrets setting never allow. The request
/// path and the re-check of a live stream both ask this, so a stream ends exactly when the
/// same request would now be refused.
pub(crate) async fn authorize(
    gw: &Arc<Gateway>,
    via: Via<'_>,
    user_id: UserId,
    cluster_name: &str,
    intent: &KubeIntent,
    epoch: u64,
) -> Result<Authorized, Refusal> {
    // Steps 2-4 (and the cluster lookup) come from a cache of earlier admissions while no
    // authorization change happened (the epoch did not move) and nothing time-bound lapsed.
    let now = gw.services.clock.now();
    // A web terminal's credential lives as long as its terminal, not a second longer.
    if let Via::Kubeconfig(identity) = via {
        if is_web_shell(identity) && gw.web_shell_terminal(&identity.serial).is_none() {
            return Err(Refusal::deny(
                StatusCode::UNAUTHORIZED,
                "this credential belonged to a web terminal that has ended",
            ));
        }
    }
    let key = match via {
        Via::Kubeconfig(identity) => identity.serial.clone(),
        Via::Console => format!("console:{user_id}"),
    };
    let adm = match gw.cached_admission(&key, cluster_name, epoch, now) {
        Some(a) => a,
        None => {
            let a = admit(gw, via, user_id, cluster_name, epoch).await?;
            gw.cache_admission(&key, cluster_name, a.clone());
            a
        }
    };
    let (user, cluster, settings) = (&adm.user, &adm.cluster, &adm.settings);
    // A reader's credential, issued without a fresh second factor, stays a reader's.
    if adm.read_only && intent.beyond_reading() {
        return Err(Refusal::deny(
            StatusCode::FORBIDDEN,
            "this kubeconfig was downloaded without a fresh second factor when your roles only read, so it only reads: confirm it is you with a code from your authenticator app (step-up in the console) and download a new kubeconfig",
        )
        .because("a read-only credential (issued without a fresh second factor) asked to write, exec or read secrets")
        .of(user, user_id));
    }
    // 5-6. The gate: the user's kubectl rights on this cluster through their bindings now,
    // and what those rights (and the organization's rules) never allow.
    let rules = KubeRules {
        secrets_org_admins_only: settings.secrets_org_admins_only,
    };
    let decision = gw
        .services
        .policy
        .admit_kube(user_id, &user.email, cluster, intent, rules)
        .await
        .map_err(|e| {
            Refusal::fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot check your access right now",
                e,
            )
            .of(user, user_id)
        })?;
    // Losing every grant on the cluster: the refusal carries a link to a pre-filled access
    // request (issue 17).
    let base = gw.services.public_url.trim_end_matches('/');
    let access = decision.map_err(|d| {
        let message = match (&d.could_request, d.lost_cluster) {
            (_, true) if d.names_owner => format!(
                "{}; request access at {base}/access?project={}&cluster={}",
                d.message, cluster.owner, cluster.name
            ),
            (_, true) => d.message,
            // A namespace no grant reaches: a request for it, pre-filled.
            (Some((ns, role)), false) => format!(
                "{} (or request it: {base}/access?project={}&cluster={}&namespaces={ns}&role={role})",
                d.message, d.project, cluster.name
            ),
            (None, false) => d.message,
        };
        Refusal {
            project: Some(d.project),
            lost_cluster: d.lost_cluster.then(|| cluster.clone()),
            reason: d.reason,
            ..Refusal::deny(StatusCode::FORBIDDEN, message).of(user, user_id)
        }
    })?;
    // When the first time-bound grant behind these rights ends (the user's rights are cached
    // per epoch: this is no second lookup).
    let grants_until = gw
        .services
        .policy
        .effective(user_id)
        .await
        .map(|e| e.valid_until)
        // Never an unbounded grant for want of a lookup: fail closed.
        .map_err(|e| {
            Refusal::fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Warden cannot check your access right now; try again",
                e,
            )
        })?;
    Ok(Authorized {
        adm,
        access,
        grants_until,
    })
}

/// Steps 2-4 from the database: the user is active, the credential is neither revoked nor
/// expired, the cluster exists, kubectl is not disabled, a recent console sign-in when
/// required.
async fn admit(
    gw: &Gateway,
    via: Via<'_>,
    user_id: UserId,
    cluster_name: &str,
    epoch: u64,
) -> Result<Arc<Admission>, Refusal> {
    let db = &gw.services.db;
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Refusal::fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Warden cannot {what} right now"),
            e,
        )
    };
    let user = match warden_domain::identity::accounts::find_by_id(db, user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(Refusal::deny(
                StatusCode::UNAUTHORIZED,
                "the user of this credential no longer exists",
            ));
        }
        Err(e) => return Err(unavailable("check your credential", &e)),
    };
    let of = |r: Refusal| r.of(&user, user_id);
    // 2. The user is active.
    if user.status != STATUS_ACTIVE {
        return Err(of(Refusal::deny(
            StatusCode::FORBIDDEN,
            "your Warden account is deactivated",
        )));
    }
    // 3. The credential is neither revoked nor expired (a console session is checked by its
    // own caller).
    let now = gw.services.clock.now();
    let mut credential_expires_at = i64::MAX;
    let mut read_only = false;
    if let Via::Kubeconfig(identity) = via {
        let credential = match kc::credential_status(db, &identity.serial, &user.id, now).await {
            Ok(Ok(c)) => c,
            Ok(Err(problem)) if is_web_shell(identity) => {
                // Said to the person in the terminal, who never saw a kubeconfig.
                let problem = problem
                    .replace("this kubeconfig", "your kubectl credentials")
                    .replace("; download a new one", "");
                return Err(of(Refusal::deny(StatusCode::UNAUTHORIZED, problem)));
            }
            Ok(Err(problem)) => return Err(of(Refusal::deny(StatusCode::UNAUTHORIZED, problem))),
            Err(e) => return Err(of(unavailable("check your credential", &e))),
        };
        // A kubeconfig downloaded for one cluster (`?cluster=NAME`) reaches that cluster only.
        if let Some(only) = credential.cluster.as_deref().filter(|c| *c != cluster_name) {
            return Err(of(Refusal::deny(
                StatusCode::FORBIDDEN,
                format!(
                    "this kubeconfig was issued for cluster {only} only; download one that includes {cluster_name}"
                ),
            )));
        }
        credential_expires_at = credential.expires_at;
        read_only = credential.read_only;
        // Not past the identity provider's word about its user (their groups among it).
        match warden_domain::identity::sso::vouched_until(&gw.services, db, &user.id).await {
            Ok(Some(until)) if now.millis() >= until => {
                return Err(of(Refusal::deny(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "your identity provider has not vouched for you recently: sign in to the Warden console at {} through it, then retry",
                        gw.services.public_url
                    ),
                )
                .because("the last sign-in through the identity provider is too old")));
            }
            Ok(Some(until)) => credential_expires_at = credential_expires_at.min(until),
            Ok(None) => {}
            Err(e) => return Err(of(unavailable("check your credential", &e))),
        }
    }
    let cluster = match kc::kube_cluster(db, cluster_name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(of(Refusal::deny(
                StatusCode::FORBIDDEN,
                format!("you have no kubectl access to a cluster named {cluster_name}"),
            )
            .because(format!("no cluster named {cluster_name}"))))
        }
        Err(e) => return Err(of(unavailable("look up the cluster", &e))),
    };
    let project = Some(cluster.owner.clone());
    let of = |r: Refusal| Refusal {
        project: project.clone(),
        ..r.of(&user, user_id)
    };
    // Someone without access hears what an unknown cluster's name gets, before anything
    // that only a cluster that exists would answer (its kubectl settings, below; a read-only
    // credential's limit, after). Losing every grant there still removes the service account.
    match gw.services.policy.cluster_unknown_to(user_id, &cluster).await {
        Ok(false) => {}
        Ok(true) => {
            return Err(Refusal {
                lost_cluster: Some(cluster.clone()),
                ..of(Refusal::deny(
                    StatusCode::FORBIDDEN,
                    format!("you have no kubectl access to a cluster named {cluster_name}"),
                )
                .because(format!(
                    "no binding grants kubeconfig.read and a kubectl permission through project {} or a project it is shared with",
                    cluster.owner
                )))
            })
        }
        Err(e) => return Err(of(unavailable("check your access", &e))),
    }
    // 4. Settings: kubectl not disabled; a recent console sign-in when required. (They are
    // about the kubectl CLI: the console's own terminal has its session instead.)
    let mut settings =
        match kc::effective_settings(db, Some(&user.id), Some(&cluster.id.to_string())).await {
            Ok(s) => s,
            Err(e) => return Err(of(unavailable("read its settings", &e))),
        };
    // A web terminal's shell is the console's too (its session is checked per frame).
    let console = match via {
        Via::Console => true,
        Via::Kubeconfig(identity) => is_web_shell(identity),
    };
    if console {
        settings.disable_cli = false;
        settings.require_recent_sign_in = false;
    }
    if settings.disable_cli {
        return Err(of(Refusal::deny(
            StatusCode::FORBIDDEN,
            "kubectl access is disabled for you on this cluster by Warden's settings",
        )));
    }
    if settings.require_recent_sign_in && !recent_sign_in(&user, &settings, now) {
        return Err(of(Refusal::deny(
            StatusCode::FORBIDDEN,
            format!(
                "kubectl requires a sign-in to the Warden console within the last {} minutes: sign in at {}, then retry",
                settings.recent_sign_in_secs / 60,
                gw.services.public_url
            ),
        )));
    }
    let sa_name = match kc::kube_user(db, &user.id, &user.email, now).await {
        Ok(k) => k.sa_name,
        Err(e) => return Err(of(unavailable("prepare your access", &e))),
    };
    Ok(Arc::new(Admission {
        epoch,
        user,
        credential_expires_at,
        read_only,
        cluster,
        settings,
        sa_name,
    }))
}

/// A credential made for a web terminal's kubectl shell (its session type, signed into the
/// certificate by Warden's user CA).
fn is_web_shell(identity: &PeerIdentity) -> bool {
    identity.session_type == SessionType::WebShell.as_str()
}

/// Why preparing the user's identity on the cluster failed.
pub struct PrepareError {
    pub status: StatusCode,
    pub message: String,
    pub detail: String,
}

impl Gateway {
    /// The user's service account on the cluster, created or reconciled as their grants now
    /// call for; its last use is noted for idle removal.
    pub(crate) async fn ensure_identity(
        &self,
        cluster: &ClusterRef,
        user: &users::Model,
        sa: &str,
        access: &KubeAccess,
        namespace: Option<&str>,
    ) -> Result<String, PrepareError> {
        let now = self.services.clock.now();
        let desired = Desired::from_access(access);
        let fingerprint = desired.fingerprint();
        // Read before the record: a removal elsewhere moves it after forgetting the record.
        let epoch = self.services.policy.epoch();
        // The record, when the fast path below already read it (passed down, not read twice).
        let mut read: Option<Option<kube_service_accounts::Model>> = None;
        if let Some((sa, confirmed)) =
            self.reconciler
                .is_current(cluster.id, &user.id, &fingerprint, namespace)
        {
            // What this replica applied holds while the epoch has not moved; after a move, while
            // the database still records that account with those rights (another replica's
            // sweeper may have removed it from the cluster meanwhile).
            let holds = confirmed == epoch
                || match kc::service_account_of(&self.services.db, cluster.id, &user.id).await {
                    Ok(record) => {
                        let same = matches!(
                            &record,
                            Some(r) if r.sa_name == sa && r.rbac_hash == fingerprint
                        );
                        read = Some(record);
                        same
                    }
                    Err(_) => false,
                };
            if holds {
                self.reconciler.confirm(cluster.id, &user.id, epoch);
                self.touch(cluster, &user.id).await;
                return Ok(sa);
            }
            self.reconciler.invalidate(cluster.id, &user.id);
        }
        // Which service account: the one on record for the cluster while the user keeps every
        // right it had; a new one (fresh name) when it is the first, or when rights shrank (or
        // may have: what was applied before a restart is known only by its fingerprint). The
        // old one then goes with everything bound to it, tokens included.
        let recorded = match read {
            Some(record) => record,
            None => kc::service_account_of(&self.services.db, cluster.id, &user.id)
                .await
                .map_err(|e| PrepareError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "Warden cannot read its records right now".into(),
                    detail: e.to_string(),
                })?,
        };
        let previous = recorded.as_ref().map(|r| r.sa_name.clone());
        let keep = match (
            &recorded,
            self.reconciler.last_applied(cluster.id, &user.id),
        ) {
            (None, _) => false,
            (Some(r), Some((applied_sa, before))) if applied_sa == r.sa_name => {
                desired.keeps_all_of(&before)
            }
            (Some(r), _) => r.rbac_hash == fingerprint,
        };
        let sa = match (&previous, keep) {
            (Some(old), true) => old.clone(),
            _ => rbac::fresh_service_account_name(sa),
        };
        let retired = previous.filter(|old| *old != sa);
        let unreachable = |e: &dyn std::fmt::Display| {
            let detail = e.to_string();
            PrepareError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: if detail.contains("is not connected to Warden") {
                    format!(
                        "the cluster {} is not connected to Warden: its agent is offline",
                        cluster.name
                    )
                } else {
                    format!(
                        "the cluster {} is not reachable through Warden right now",
                        cluster.name
                    )
                },
                detail,
            }
        };
        let client = self
            .transport
            .client(cluster)
            .await
            .map_err(|e| unreachable(&e))?;
        if let Some(old) = &retired {
            // Before the new one exists: a failure leaves the record on the old one, and the
            // next request tries again (no account is ever left behind unrecorded).
            self.transport.forget(cluster, old);
            self.reconciler
                .remove_account(&client, old)
                .await
                .map_err(|e| PrepareError {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!(
                        "Warden could not retire your previous service account on cluster {}",
                        cluster.name
                    ),
                    detail: e.to_string(),
                })?;
            tracing::info!(cluster = %cluster.name, user.id = %user.id, old = %old, new = %sa, "service account rotated");
        }
        let changes = self
            .reconciler
            .reconcile(
                &client,
                cluster.id,
                &user.id,
                &user.email,
                &sa,
                &desired,
                epoch,
            )
            .await
            .map_err(|e| PrepareError {
                status: StatusCode::BAD_GATEWAY,
                message: match &e {
                    rbac::RbacError::Shared { .. } => format!(
                        "Warden refuses to serve you on cluster {}: {e}",
                        cluster.name
                    ),
                    rbac::RbacError::Kube(_) => format!(
                        "Warden could not set up your service account on cluster {}",
                        cluster.name
                    ),
                },
                detail: e.to_string(),
            })?;
        if !changes.removed_bindings.is_empty() || !changes.missing_namespaces.is_empty() {
            tracing::info!(
                cluster = %cluster.name,
                user.id = %user.id,
                removed = ?changes.removed_bindings,
                missing_namespaces = ?changes.missing_namespaces,
                "service account reconciled"
            );
        }
        if let Err(e) = kc::record_service_account(
            &self.services.db,
            cluster.id,
            &user.id,
            &sa,
            &fingerprint,
            now,
        )
        .await
        {
            tracing::warn!(error = %e, "could not record a service account");
        }
        self.mark_touched(cluster, &user.id);
        Ok(sa)
    }
}

async fn forward(
    gw: Arc<Gateway>,
    mut ctx: Ctx,
    cluster: &ClusterRef,
    mut req: Request<()>,
    body: &mut Option<Incoming>,
    api_path: &str,
    query: Option<&str>,
    auth: http::HeaderMap,
    live: Option<LiveSpec>,
    words: Words<'_>,
) -> Response<GatewayBody> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    // Registered before the request leaves, so a change while it is on its way is caught; the
    // start is audited durably before anything reaches the cluster.
    let live = match live {
        Some(spec) => {
            let Some(template) = ctx.ev.clone() else {
                return ctx.fail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "no audit event",
                );
            };
            let email = match &template.actor {
                Actor::User { name, .. } => name.clone(),
                _ => String::new(),
            };
            // One person, or everyone on one cluster, cannot hold the agent tunnel's streams
            // (4096) or this replica's memory with streams held open: a ceiling for each.
            let Some(mine) = gw.streams_per_user.acquire(&spec.user_id.to_string()) else {
                return ctx.deny(
                    StatusCode::TOO_MANY_REQUESTS,
                    "you hold the most streams (watches, followed logs, exec, port-forwards) allowed at once through Warden: end some first",
                    None,
                );
            };
            let Some(cluster_wide) = gw.streams_per_cluster.acquire(&spec.cluster) else {
                return ctx.deny(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "cluster {} has the most streams allowed at once through Warden: try again shortly",
                        spec.cluster
                    ),
                    None,
                );
            };
            let mut start = template.clone();
            start.id = warden_domain::ids::AuditEventId::new();
            start.action = format!("{}.start", template.action);
            start.details["stream_of"] = json!(template.id.to_string());
            if let Err(e) = gw.services.audit.record(start).await {
                return ctx.fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Warden cannot record the start of this session right now",
                    &e.to_string(),
                );
            }
            Some(
                spec.register(&gw, &template, &email)
                    .holding(vec![mine, cluster_wide]),
            )
        }
        None => None,
    };
    let inbound = upgrade.then(|| hyper::upgrade::on(&mut req));
    let base = gw.connector.base(cluster);
    let uri = match query {
        Some(q) => format!("{base}{api_path}?{q}"),
        None => format!("{base}{api_path}"),
    };
    let mut out = Request::builder().method(req.method().clone()).uri(uri);
    for (name, value) in req.headers() {
        let keep_for_upgrade = upgrade && (name == header::CONNECTION || name == header::UPGRADE);
        if (hop_by_hop(name) && !keep_for_upgrade)
            || client_identity_header(name)
            || name == header::HOST
        {
            continue;
        }
        if name == header::SEC_WEBSOCKET_PROTOCOL {
            // A browser-style bearer token rides in the subprotocol list: drop it.
            let kept: Vec<&str> = value
                .to_str()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && !p.starts_with(WS_BEARER_PREFIX))
                .collect();
            if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
                if !kept.is_empty() {
                    out = out.header(name, v);
                }
            }
            continue;
        }
        out = out.header(name, value);
    }
    let audit_id = ctx.id();
    out = out.header(AUDIT_ID, audit_id.as_str());
    for (k, v) in auth.iter() {
        out = out.header(k, v);
    }
    let Some(inner) = body.take() else {
        return ctx.fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "the request body was already taken",
        );
    };
    let bytes_in = Arc::new(AtomicU64::new(0));
    let out = match out.body(CountedBody {
        inner,
        bytes: bytes_in.clone(),
    }) {
        Ok(r) => r,
        Err(e) => {
            return ctx.fail(
                StatusCode::BAD_REQUEST,
                "the request cannot be forwarded",
                &e.to_string(),
            )
        }
    };
    let mut resp = match gw.http.request(out).await {
        Ok(r) => r,
        Err(e) => {
            let text = format!("{e:?}");
            let not_connected = text.contains("NotConnected");
            return ctx.fail(
                StatusCode::SERVICE_UNAVAILABLE,
                &if not_connected {
                    format!("the cluster {} is not connected to Warden", cluster.name)
                } else {
                    format!("Warden cannot reach the cluster {} right now", cluster.name)
                },
                &text,
            );
        }
    };
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        // The cluster refused the service account's token: start afresh next time.
        if let Some(ev) = ctx.ev.as_ref() {
            if let Some(sa) = ev.details.get("service_account").and_then(|v| v.as_str()) {
                gw.transport
                    .forget(cluster, sa.rsplit('/').next().unwrap_or_default());
            }
            if let Some(id) = ev.actor_id() {
                gw.reconciler.invalidate(cluster.id, &id);
            }
        }
    }
    if let Some(ev) = ctx.ev.as_mut() {
        ev.status = Some(status.as_u16() as i32);
        if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            ev.outcome = Outcome::Denied;
            ev.reason = Some(format!(
                "the cluster refused the request ({}) for the user's service account",
                status.as_u16()
            ));
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(inbound) = inbound else {
            return ctx.fail(
                StatusCode::BAD_GATEWAY,
                "the cluster upgraded a request that did not ask for it",
                "",
            );
        };
        let outbound = hyper::upgrade::on(&mut resp);
        let ev = ctx.ev.take();
        if let Some(ev) = &ev {
            gw.journal_begin(ev);
        }
        let started = ctx.started;
        let pending = std::mem::replace(&mut ctx._pending, gw.pending_noop());
        let gw2 = gw.clone();
        let framing = relay::Framing::from_subprotocol(
            resp.headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok()),
        );
        tokio::spawn(async move {
            let _pending = pending;
            let end = match tokio::join!(inbound, outbound) {
                (Ok(a), Ok(b)) => {
                    relay::relay(TokioIo::new(a), TokioIo::new(b), live.as_ref(), framing).await
                }
                (a, b) => {
                    tracing::debug!(
                        client = a.is_ok(),
                        cluster = b.is_ok(),
                        "an upgrade did not complete"
                    );
                    relay::RelayEnd::default()
                }
            };
            drop(live);
            if let Some(e) = &end.error {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
            if let Some(mut ev) = ev {
                ev.duration_ms = Some(started.elapsed().as_millis() as i64);
                if let Some(d) = ev.details.as_object_mut() {
                    d.insert("bytes_in".into(), json!(end.up));
                    d.insert("bytes_out".into(), json!(end.down));
                    d.insert("upgraded".into(), json!(true));
                    if let Some(r) = &end.closed_by_warden {
                        d.insert("closed_by_warden".into(), json!(r));
                    }
                }
                gw2.record(ev);
            }
        });
        let (mut parts, _) = resp.into_parts();
        if let Ok(v) = HeaderValue::from_str(&audit_id) {
            parts.headers.insert(AUDIT_ID, v);
        }
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = resp.into_parts();
    let names: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| hop_by_hop(n) || host_state_header(n))
        .cloned()
        .collect();
    for n in names {
        parts.headers.remove(n);
    }
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        parts.headers.insert(AUDIT_ID, v);
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if status == StatusCode::FORBIDDEN && json {
        // The cluster's RBAC refused what the gate let through: said to the person about
        // themself and what Warden grants them, not about a service account.
        if let Some((reworded, original)) = reword_forbidden(body, &words).await {
            if let Some(mut ev) = ctx.ev.take() {
                ev.reason = Some(format!("the cluster refused the request (403): {original}"));
                ev.duration_ms = Some(ctx.started.elapsed().as_millis() as i64);
                if let Some(d) = ev.details.as_object_mut() {
                    d.insert("bytes_out".into(), json!(reworded.len()));
                }
                gw.record(ev);
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(
                parts,
                Full::new(reworded).map_err(|e| match e {}).boxed_unsync(),
            );
        }
        return ctx.deny(
            StatusCode::FORBIDDEN,
            "the cluster refused the request",
            Some("the cluster refused the request (403) with an answer that is not a Status"),
        );
    }
    let watch_json = live.is_some()
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"))
        && ctx.ev.as_ref().is_some_and(|e| e.action == "kube.watch");
    if let Some(ev) = ctx.ev.as_ref() {
        gw.journal_begin(ev);
    }
    let tracked = Tracked {
        inner: body,
        bytes: Arc::new(AtomicU64::new(0)),
        bytes_in,
        finish: Some(ctx),
        live: live.map(|guard| LiveBody {
            cancelled: Box::pin(guard.cancelled()),
            guard,
            check: None,
            held: None,
            watch_json,
            closing: None,
        }),
    };
    Response::from_parts(parts, tracked.boxed_unsync())
}

/// Streams the cluster's answer chunk by chunk (no buffering), counting bytes; the audit
/// event is written when the body ends or the client goes away.
struct Tracked {
    inner: Incoming,
    bytes: Arc<AtomicU64>,
    /// The request body's bytes, counted as they were forwarded.
    bytes_in: Arc<AtomicU64>,
    finish: Option<Ctx>,
    /// A long-lived answer: each frame is admitted before it is passed on.
    live: Option<LiveBody>,
}

/// The live-stream side of a streamed answer.
struct LiveBody {
    guard: LiveGuard,
    cancelled: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// A full re-check in progress (the epoch moved since the last one).
    check: Option<futures::future::BoxFuture<'static, Result<(), String>>>,
    /// A frame waiting for that check.
    held: Option<Frame<Bytes>>,
    /// A JSON watch: Warden's reason goes out as a final `ERROR` event.
    watch_json: bool,
    /// Ending: the reason, and whether the final event was sent.
    closing: Option<(String, bool)>,
}

/// A watch `ERROR` event carrying a `Status`, as the API server sends when it ends a watch.
fn watch_error_event(message: &str) -> Bytes {
    let status = warden_domain::agent_protocol::kube_status(403, "Forbidden", message);
    let mut line = json!({"type": "ERROR", "object": status}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The client's request body, streamed to the cluster as it comes, counting its bytes.
pub(crate) struct CountedBody {
    inner: Incoming,
    bytes: Arc<AtomicU64>,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                self.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Tracked {
    fn done(&mut self, error: Option<String>) {
        if let Some(mut ctx) = self.finish.take() {
            if let Some(mut ev) = ctx.ev.take() {
                ev.duration_ms = Some(ctx.started.elapsed().as_millis() as i64);
                if let Some(d) = ev.details.as_object_mut() {
                    d.insert(
                        "bytes_in".into(),
                        json!(self.bytes_in.load(Ordering::Relaxed)),
                    );
                    d.insert(
                        "bytes_out".into(),
                        json!(self.bytes.load(Ordering::Relaxed)),
                    );
                    if let Some(e) = &error {
                        match e.strip_prefix("closed by Warden: ") {
                            Some(r) => d.insert("closed_by_warden".into(), json!(r)),
                            None => d.insert("stream_error".into(), json!(e)),
                        };
                    }
                }
                ctx.gw.record(ev);
            }
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(live) = this.live.as_mut() {
            // Ended by Warden: the reason (a final watch event where the format allows), then
            // an error, so the connection is cut rather than reused.
            if live.closing.is_none() {
                if live.cancelled.as_mut().poll(cx).is_ready() {
                    let reason = live.guard.reason().unwrap_or_else(|| "access ended".into());
                    live.closing = Some((reason, false));
                }
            }
            if let Some((reason, sent)) = live.closing.as_mut() {
                let message = format!("Warden closed this stream: {reason}");
                if live.watch_json && !*sent {
                    *sent = true;
                    let ev = watch_error_event(&message);
                    this.bytes.fetch_add(ev.len() as u64, Ordering::Relaxed);
                    return Poll::Ready(Some(Ok(Frame::data(ev))));
                }
                let closed = format!("closed by Warden: {reason}");
                this.live = None;
                this.done(Some(closed.clone()));
                return Poll::Ready(Some(Err(closed.into())));
            }
            // A frame waiting for a re-check.
            if let Some(check) = live.check.as_mut() {
                match check.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(verdict) => {
                        live.check = None;
                        if verdict.is_err() {
                            // The guard is cancelled now: close on the next poll.
                            cx.waker().wake_by_ref();
                            live.held = None;
                            return Poll::Pending;
                        }
                        if let Some(frame) = live.held.take() {
                            if let Some(d) = frame.data_ref() {
                                this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                }
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(live) = this.live.as_mut() {
                    if !live.guard.is_fresh() {
                        // Something changed: this frame waits for the check.
                        live.held = Some(frame);
                        live.check = Some(live.guard.admit_owned());
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                if let Some(d) = frame.data_ref() {
                    this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done(Some(e.to_string()));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.done(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.finish.is_some() {
            // An empty answer (204, HEAD) may never be polled: that is not an aborted stream.
            let aborted = (!self.inner.is_end_stream())
                .then(|| "the client went away before the end of the answer".to_owned());
            self.done(aborted);
        }
    }
}

/// An audit event's user id, when it names one.
trait ActorId {
    fn actor_id(&self) -> Option<String>;
}

impl ActorId for AuditEvent {
    fn actor_id(&self) -> Option<String> {
        match &self.actor {
            Actor::User { id, .. } => Some(id.to_string()),
            _ => None,
        }
    }
}

impl Gateway {
    /// Remove the user's service account from the cluster (they lost every grant there).
    pub(crate) async fn deprovision(&self, cluster: &KubeCluster, user_id: &str) {
        let known = warden_domain::entities::kube_service_accounts::Entity::find_by_id((
            cluster.id.to_string(),
            user_id.to_owned(),
        ));
        use sea_orm::EntityTrait;
        let row = match known.one(&self.services.db).await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let cref = ClusterRef {
            id: cluster.id,
            name: cluster.name.clone(),
        };
        let removal = async {
            let client = self
                .transport
                .client(&cref)
                .await
                .map_err(|e| e.to_string())?;
            self.reconciler
                .remove(&client, cref.id, user_id, &row.sa_name)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), removal).await {
            Ok(Ok(())) => {
                self.transport.forget(&cref, &row.sa_name);
                if let Err(e) =
                    kc::forget_service_account(&self.services.db, cref.id, user_id).await
                {
                    tracing::warn!(error = %e, "could not forget a service account");
                }
                // Other replicas may hold it as reconciled: they read the record again.
                self.services.policy.bump();
                tracing::info!(cluster = %cref.name, sa = %row.sa_name, "service account removed: no grant left on the cluster");
            }
            Ok(Err(e)) => {
                tracing::warn!(cluster = %cref.name, error = %e, "could not remove a service account; the sweeper retries")
            }
            Err(_) => {
                tracing::warn!(cluster = %cref.name, "removing a service account timed out; the sweeper retries")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clusters_answer_sets_no_state_on_the_host() {
        for h in [
            "set-cookie",
            "strict-transport-security",
            "clear-site-data",
            "alt-svc",
            "x-warden-management",
        ] {
            assert!(host_state_header(&HeaderName::from_static(h)), "{h}");
        }
        for h in ["content-type", "audit-id", "warning", "cache-control"] {
            assert!(!host_state_header(&HeaderName::from_static(h)), "{h}");
        }
    }

    #[test]
    fn cluster_paths() {
        assert_eq!(
            split_cluster_path("/clusters/dev/api/v1/pods"),
            Some(("dev", "/api/v1/pods"))
        );
        assert_eq!(split_cluster_path("/clusters/dev"), Some(("dev", "/")));
        assert_eq!(split_cluster_path("/clusters/"), None);
        assert_eq!(split_cluster_path("/api/v1"), None);
    }

    #[test]
    fn only_canonical_paths_are_accepted() {
        for ok in [
            "/clusters/prod-1/api/v1/namespaces/apple/pods",
            "/clusters/prod-1/api/v1/namespaces/apple/pods/",
            "/clusters/prod-1",
            "/clusters/prod-1/",
            "/clusters/prod-1/apis/apps/v1/namespaces/apple/deployments/web/scale",
            "/clusters/prod-1/openapi/v3/apis/apps/v1",
            "/clusters/prod-1/api/v1/namespaces/apple/pods/my.pod.v1",
            "/",
        ] {
            assert_eq!(non_canonical(ok), None, "{ok}");
        }
        for (bad, why) in [
            (
                "/clusters/prod-1/api/v1/namespaces/apple%2Fconfigmaps",
                "percent-encoding",
            ),
            (
                "/clusters/prod-1/api/v1/namespaces/apple/secrets%2fx",
                "percent-encoding",
            ),
            (
                "/clusters/prod-1/api/v1/namespaces/%61pple/pods",
                "percent-encoding",
            ),
            ("/clusters/prod%2D1/api/v1/pods", "percent-encoding"),
            (
                "/clusters/prod-1/api/v1/namespaces/apple/pods%",
                "percent-encoding",
            ),
            (
                "/clusters/prod-1/api/v1/namespaces/apple\\..\\kube-system/secrets",
                "backslash",
            ),
            (
                "/clusters/prod-1/api/v1//namespaces/apple/pods",
                "empty segment",
            ),
            ("/clusters//prod-1/api/v1/pods", "empty segment"),
            ("//clusters/prod-1/api/v1/pods", "empty segment"),
            (
                "/clusters/prod-1/api/v1/namespaces/apple/pods//",
                "empty segment",
            ),
            (
                "/clusters/prod-1/api/v1/namespaces/apple/../kube-system/secrets",
                ". or ..",
            ),
            ("/clusters/prod-1/api/v1/namespaces/apple/./pods", ". or .."),
            ("/clusters/../clusters/prod-1/api/v1/pods", ". or .."),
            ("/clusters/./api/v1/pods", ". or .."),
            (
                "/clusters/prod-1/api/v1/namespaces/apple/pods/..",
                ". or ..",
            ),
            ("*", "does not start with /"),
        ] {
            let got = non_canonical(bad);
            assert!(got.is_some_and(|g| g.contains(why)), "{bad}: {got:?}");
        }
    }

    #[test]
    fn client_credentials_are_never_forwarded() {
        for h in [
            "authorization",
            "impersonate-user",
            "impersonate-group",
            "impersonate-extra-scopes",
            "impersonate-uid",
            "x-remote-user",
            "audit-id",
            "proxy-authorization",
            // The marker that makes the agent use its own identity: only Warden sets it.
            "x-warden-management",
        ] {
            assert!(client_identity_header(&HeaderName::from_static(h)), "{h}");
        }
        assert!(!client_identity_header(&header::ACCEPT));
    }
}
