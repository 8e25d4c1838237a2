//! The HTTP API: authentication, impersonation, authorization, then discovery, OpenAPI,
//! resources and their subresources, in the apiserver's order.

pub mod body;
pub mod discovery;
pub mod openapi;
pub mod pods;
pub mod proto;
pub mod reqinfo;
pub mod resources;
pub mod reviews;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::core::Core;
use crate::error::{ApiResult, Status};
use crate::rbac::{self, UserInfo};
use body::Resp;
use reqinfo::ReqInfo;

/// Largest request body accepted (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A verified client certificate's identity (CN, O...).
pub type PeerIdentity = Option<Arc<(String, Vec<String>)>>;

/// Everything a handler needs about one request.
pub struct Ctx {
    pub core: Arc<Core>,
    pub user: UserInfo,
    pub info: ReqInfo,
    pub method: Method,
    pub headers: HeaderMap,
    /// Query parameters (last value wins).
    pub query: HashMap<String, String>,
    /// Query parameters in order (for repeated ones like `command`).
    pub query_all: Vec<(String, String)>,
}

impl Ctx {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    /// A boolean parameter, read as apimachinery's `Convert_Slice_string_To_bool` does.
    pub fn q_bool(&self, k: &str) -> bool {
        reqinfo::query_bool(self.q(k))
    }

    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Entry point for every request.
pub async fn handle(
    core: Arc<Core>,
    peer: PeerIdentity,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    // As the API server's audit filter does: the client's `Audit-ID` names the request in the
    // audit log and the answer (a proxy in front, such as Warden, sets it to join the logs).
    let audit_id = req
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let request_uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let mut username = String::new();
    let mut verb = method.as_str().to_lowercase();
    let resp = handle_inner(core.clone(), peer, req, &mut username, &mut verb).await;
    let mut resp = match resp {
        Ok(r) => r,
        Err(s) => body::status(&s),
    };
    core.record_audit(crate::core::AuditRecord {
        audit_id: audit_id.clone(),
        username,
        verb,
        request_uri,
        code: resp.status().as_u16(),
    });
    tracing::debug!(method = %method, path = %path, status = resp.status().as_u16(), "request");
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        resp.headers_mut().insert("audit-id", v);
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

fn parse_query(q: Option<&str>) -> (HashMap<String, String>, Vec<(String, String)>) {
    let all: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // `url.Values.Get` and the parameter codec read a key's first value.
    let mut first = HashMap::new();
    for (k, v) in &all {
        first.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (first, all)
}

async fn handle_inner(
    core: Arc<Core>,
    peer: PeerIdentity,
    mut req: Request<Incoming>,
    username: &mut String,
    verb: &mut String,
) -> ApiResult<Resp> {
    let (query, query_all) = parse_query(req.uri().query());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();

    // 1. Authenticate, 2. impersonate.
    let user = crate::authn::authenticate(&core, peer.as_deref(), &headers)?;
    let user = crate::authn::impersonate(&core, user, &headers)?;
    username.clone_from(&user.name);

    // 3. Authorize.
    let info = reqinfo::parse(&method, &path, &query);
    let attrs = info.attributes();
    verb.clone_from(&attrs.verb);
    let decision = rbac::authorize(&core.db, &user, &attrs);
    if !decision.allowed {
        tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource, reason = %decision.reason, "forbidden");
        let mut msg = attrs.forbidden_message(&user.name);
        if !decision.reason.is_empty() {
            msg = format!("{msg}: {}", decision.reason);
        }
        return Err(Status::forbidden(
            &attrs.api_group,
            &attrs.resource,
            &attrs.name,
            &msg,
        ));
    }

    let is_upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let on_upgrade = if is_upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };

    let body = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
        match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return Err(Status {
                    code: 413,
                    reason: "RequestEntityTooLarge",
                    message: "Request entity too large: limit is 3145728".into(),
                    details: None,
                })
            }
        }
    } else {
        Bytes::new()
    };

    let ctx = Ctx {
        core,
        user,
        info,
        method,
        headers,
        query,
        query_all,
    };

    if !ctx.info.resource_request {
        return non_resource(&ctx);
    }
    resources::dispatch(ctx, body, on_upgrade).await
}

fn server_address(ctx: &Ctx) -> String {
    ctx.core
        .url
        .get()
        .map(|u| u.trim_start_matches("https://").to_string())
        .unwrap_or_default()
}

fn non_resource(ctx: &Ctx) -> ApiResult<Resp> {
    if ctx.method != Method::GET && ctx.method != Method::HEAD {
        return Err(Status::path_not_found());
    }
    let path = ctx.info.path.trim_end_matches('/');
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => Ok(body::json(200, &Core::version())),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(body::text(200, "ok")),
        ["api"] => Ok(body::json(
            200,
            &discovery::api_versions(&server_address(ctx)),
        )),
        ["api", v] => discovery::resource_list("", v)
            .map(|d| body::json(200, &d))
            .ok_or_else(Status::path_not_found),
        ["apis"] => Ok(body::json(200, &discovery::api_group_list())),
        ["apis", g] => discovery::api_group(g)
            .map(|d| body::json(200, &d))
            .ok_or_else(Status::path_not_found),
        ["apis", g, v] => discovery::resource_list(g, v)
            .map(|d| body::json(200, &d))
            .ok_or_else(Status::path_not_found),
        ["openapi", "v2"] => Ok(openapi::v2(ctx.header("accept"))),
        ["openapi", "v3"] => Ok(body::json(200, &openapi::index())),
        ["openapi", "v3", "api", v] => openapi::gv_document("", v)
            .map(|d| body::json(200, &d))
            .ok_or_else(Status::path_not_found),
        ["openapi", "v3", "apis", g, v] => openapi::gv_document(g, v)
            .map(|d| body::json(200, &d))
            .ok_or_else(Status::path_not_found),
        [""] => {
            let paths: Vec<String> = [
                "/api",
                "/api/v1",
                "/apis",
                "/healthz",
                "/livez",
                "/openapi/v3",
                "/readyz",
                "/version",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(
                crate::resources::group_versions()
                    .into_iter()
                    .filter(|(g, _)| !g.is_empty())
                    .flat_map(|(g, v)| vec![format!("/apis/{g}"), format!("/apis/{g}/{v}")]),
            )
            .collect();
            Ok(body::json(200, &serde_json::json!({"paths": paths})))
        }
        _ => Err(Status::path_not_found()),
    }
}

/// Decode a request body (JSON or YAML) into a value, with the apiserver's error texts.
pub fn decode_body(content_type: &str, bytes: &[u8]) -> ApiResult<Value> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if ct == "application/vnd.kubernetes.protobuf" {
        return proto::decode(bytes);
    }
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(Status::unsupported_media_type(ct));
    }
    if ct.ends_with("yaml") {
        let y: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(|e| {
            Status::bad_request(format!("error converting YAML to JSON: yaml: {e}"))
        })?;
        return serde_json::to_value(y)
            .map_err(|e| Status::bad_request(format!("error converting YAML to JSON: {e}")));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_eof() {
            "unexpected end of JSON input".to_string()
        } else {
            format!(
                "invalid character at line {} column {}: {}",
                e.line(),
                e.column(),
                e
            )
        };
        Status::bad_request(format!(
            "couldn't get version/kind; json parse error: {what}"
        ))
    })
}
