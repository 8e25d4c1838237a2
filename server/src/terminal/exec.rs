//! Pod exec: a shell (`/bin/sh`, with a TTY) in a container, run on the cluster as the user's
//! own service account (TokenRequest token, through the agent's tunnel), over
//! `v5.channel.k8s.io` (`v4` as fallback). Channel 0 is stdin, 1/2 stdout/stderr, 3 the final
//! `Status`, 4 resize.

use axum::http::StatusCode;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as KMessage;
use tokio_tungstenite::WebSocketStream;

use super::{Backend, Output};
use crate::gateway::transport::{As, BoxIo, ClusterRef};
use crate::gateway::Gateway;

type ExecWs = WebSocketStream<BoxIo>;

/// An exec stream open on the cluster.
pub(crate) struct ExecBackend {
    tx: SplitSink<ExecWs, KMessage>,
    rx: SplitStream<ExecWs>,
    cluster: String,
}

/// Why the exec could not start: (status for the caller, message, detail for the audit log).
pub(crate) type ExecRefusal = (StatusCode, String, Option<String>);

/// Open `/bin/sh` with a TTY in `pod` (`container`) as `who` on the cluster.
pub(crate) async fn connect(
    gw: &Gateway,
    cluster: &ClusterRef,
    who: &As,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    audit_id: &str,
) -> Result<ExecBackend, ExecRefusal> {
    let unreachable = |e: &dyn std::fmt::Display| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the cluster {} is not reachable through Warden right now",
                cluster.name
            ),
            Some(e.to_string()),
        )
    };
    let auth = gw
        .transport
        .authenticate(cluster, who)
        .await
        .map_err(|e| unreachable(&e))?;
    let io = gw
        .transport
        .connect(cluster)
        .await
        .map_err(|e| unreachable(&e))?;
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/exec");
    // The shell: /bin/sh (kubectl's own default for `exec -it`).
    let mut query = "command=%2Fbin%2Fsh&stdin=true&stdout=true&tty=true".to_owned();
    if let Some(c) = container {
        query.push_str(&format!("&container={c}"));
    }
    let url = format!(
        "ws://{}{path}?{query}",
        crate::gateway::transport::pool_host(cluster)
    );
    let mut request = url.into_client_request().map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            "bad exec request".to_owned(),
            Some(e.to_string()),
        )
    })?;
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    request.headers_mut().insert(
        "audit-id",
        http::HeaderValue::from_str(audit_id).unwrap_or(http::HeaderValue::from_static("warden")),
    );
    for (k, v) in auth.iter() {
        request.headers_mut().insert(k, v.clone());
    }
    let (exec, _resp) = match tokio::time::timeout(
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
                        format!("no pod {pod} in namespace {namespace}"),
                    )
                }
                _ => (
                    StatusCode::BAD_GATEWAY,
                    format!("the exec into {pod} could not start"),
                ),
            };
            return Err((status, message, Some(e.to_string())));
        }
        Err(_) => {
            return Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!("the cluster {} did not answer in time", cluster.name),
                None,
            ))
        }
    };
    let (tx, rx) = exec.split();
    Ok(ExecBackend {
        tx,
        rx,
        cluster: cluster.name.clone(),
    })
}

impl ExecBackend {
    fn lost(&self) -> String {
        format!("the connection to cluster {} was lost", self.cluster)
    }
}

impl Backend for ExecBackend {
    async fn input(&mut self, data: Vec<u8>) -> Result<(), String> {
        let mut f = Vec::with_capacity(data.len() + 1);
        f.push(0u8);
        f.extend_from_slice(&data);
        self.tx
            .send(KMessage::Binary(f.into()))
            .await
            .map_err(|_| self.lost())
    }

    async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), String> {
        let mut f = vec![4u8];
        f.extend_from_slice(
            json!({"Width": cols, "Height": rows})
                .to_string()
                .as_bytes(),
        );
        self.tx
            .send(KMessage::Binary(f.into()))
            .await
            .map_err(|_| self.lost())
    }

    async fn next_output(&mut self) -> Output {
        loop {
            let Some(Ok(m)) = self.rx.next().await else {
                return Output::Lost(self.lost());
            };
            let data = match m {
                KMessage::Binary(b) => b,
                KMessage::Close(_) => return Output::Exit(0),
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                1 | 2 => return Output::Data(payload.to_vec()),
                3 => return Output::Exit(exit_code(payload)),
                _ => {}
            }
        }
    }

    async fn close(&mut self) {
        let _ = self.tx.send(KMessage::Close(None)).await;
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_from_the_status() {
        assert_eq!(super::exit_code(br#"{"status":"Success"}"#), 0);
        assert_eq!(
            super::exit_code(
                br#"{"status":"Failure","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
            ),
            3
        );
        assert_eq!(super::exit_code(br#"{"status":"Failure"}"#), 1);
    }
}
