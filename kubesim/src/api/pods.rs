//! Pod subresources backed by the runtime: log (with follow), exec and attach (WebSocket).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::body::{self, Body, Resp};
use super::Ctx;
use crate::error::{ApiResult, Status};
use crate::exec::logbuf::LogQuery;
use crate::exec::runtime::{ContainerRt, PodRt};
use crate::exec::stream::{self, ExecSpec, Proto};
use crate::resources;

/// The pod and the container a request names (the only one when unnamed).
fn pick_container(ctx: &Ctx, pod: &Value, name: &str) -> ApiResult<String> {
    let names: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    match ctx.q("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if names.iter().any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(Status::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => {
            if names.len() == 1 {
                Ok(names[0].clone())
            } else {
                let default = pod
                    .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                    .and_then(Value::as_str);
                match default {
                    Some(d) if names.iter().any(|n| n == d) => Ok(d.to_string()),
                    _ => Err(Status::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        names.join(" ")
                    ))),
                }
            }
        }
    }
}

fn runtime_parts(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    container: &str,
) -> ApiResult<(Arc<PodRt>, Arc<ContainerRt>)> {
    let pod = ctx
        .core
        .runtime
        .pod(ns, name)
        .ok_or_else(|| Status::bad_request(format!("pod {name} is not running")))?;
    let c = pod.containers.get(container).cloned().ok_or_else(|| {
        Status::bad_request(format!("container {container} is not valid for pod {name}"))
    })?;
    Ok((pod, c))
}

pub async fn logs(ctx: &Ctx, ns: &str, name: &str) -> ApiResult<Resp> {
    let res = resources::lookup("", "v1", "pods").ok_or_else(|| Status::internal("no pods"))?;
    let pod = ctx.core.get(res, ns, name)?;
    let container = pick_container(ctx, &pod, name)?;
    let q = LogQuery {
        follow: ctx.q_bool("follow"),
        tail_lines: ctx.q("tailLines").and_then(|t| t.parse().ok()),
        timestamps: ctx.q_bool("timestamps"),
        since_seconds: ctx.q("sinceSeconds").and_then(|t| t.parse().ok()),
        limit_bytes: ctx.q("limitBytes").and_then(|t| t.parse().ok()),
    };
    if ctx.q_bool("previous") {
        return Err(Status::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let Some(prt) = ctx.core.runtime.pod(ns, name) else {
        return Ok(body::text(200, Bytes::new()));
    };
    let Some(c) = prt.containers.get(&container).cloned() else {
        return Ok(body::text(200, Bytes::new()));
    };
    if !q.follow {
        return Ok(body::text(200, c.log.read(&q)));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut shutdown = ctx.core.shutdown.subscribe();
    tokio::spawn(async move {
        tokio::select! {
            _ = c.log.follow(q, tx) => {}
            _ = shutdown.changed() => {}
        }
    });
    Ok(body::stream("text/plain", rx))
}

fn offered_protocols(ctx: &Ctx) -> Vec<String> {
    ctx.headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect()
}

pub async fn remote_command(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    sub: &str,
    on_upgrade: Option<OnUpgrade>,
) -> ApiResult<Resp> {
    let res = resources::lookup("", "v1", "pods").ok_or_else(|| Status::internal("no pods"))?;
    // A WebSocket upgrade (GET) also needs "create" on the subresource, as in Kubernetes 1.32.
    let create = crate::rbac::Attributes::resource("create", "", "pods", sub, ns, name);
    if ctx.info.verb == "get" && !crate::rbac::authorize(&ctx.core.db, &ctx.user, &create).allowed {
        return Err(Status::forbidden(
            "",
            "pods",
            name,
            &create.forbidden_message(&ctx.user.name),
        ));
    }
    let pod = ctx.core.get(res, ns, name)?;
    let container = pick_container(ctx, &pod, name)?;
    let command: Vec<String> = ctx
        .query_all
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let spec = ExecSpec {
        command: if command.is_empty() {
            vec!["/bin/sh".to_string()]
        } else {
            command
        },
        stdin: ctx.q_bool("stdin"),
        stdout: ctx.q_bool("stdout"),
        stderr: ctx.q_bool("stderr"),
        tty: ctx.q_bool("tty"),
    };
    if sub == "exec" && ctx.q("command").is_none() {
        // The apiserver requires a command; kubectl always sends one.
        return Err(Status::bad_request("you must specify at least 1 command"));
    }
    if !spec.stdin && !spec.stdout && !spec.stderr {
        return Err(Status::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if spec.tty && spec.stderr {
        return Err(Status::bad_request("stderr may not be set when tty is set"));
    }
    let Some(on_upgrade) = on_upgrade else {
        return Err(Status::bad_request("Upgrade request required"));
    };
    let offered = offered_protocols(ctx);
    let Some(proto) = Proto::negotiate(&offered) else {
        return Err(Status::bad_request(format!(
            "unable to upgrade connection: no supported subprotocol among {offered:?} (supported: v5.channel.k8s.io, v4.channel.k8s.io, v4.base64.channel.k8s.io)"
        )));
    };
    let key = ctx.header("sec-websocket-key").to_string();
    if key.is_empty() {
        return Err(Status::bad_request("missing Sec-WebSocket-Key"));
    }
    let (prt, c) = runtime_parts(ctx, ns, name, &container)?;
    let attach = sub == "attach";
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if attach {
            stream::run_attach(ws, proto, prt, c, spec).await;
        } else {
            stream::run_exec(ws, proto, prt, c, spec).await;
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(proto.name()),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(r)
}
