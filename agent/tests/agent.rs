//! The agent's parts against real counterparts: the forwarder against kubesim (requests,
//! errors, streaming, the agent's own credentials), dialling through an HTTP CONNECT proxy to a
//! WebSocket server, refusals, and the backoff.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden_agent::agent::Tracker;
use warden_agent::dial::{self, DialError};
use warden_agent::{forward, Backoff, Settings};

async fn sim_and_client() -> (
    kubesim::KubeSim,
    warden_agent::KubeClients,
    tempfile::TempDir,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = kubesim::KubeSim::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    sim.write_admin_kubeconfig(&path).unwrap();
    let clients = warden_agent::kube_clients(Some(&path), None).await.unwrap();
    (sim, clients, dir)
}

/// An HTTP/1.1 client connection to a forwarder serving one end of an in-memory stream.
async fn forwarder(
    clients: warden_agent::KubeClients,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(forward::serve_stream(
        theirs,
        clients,
        Tracker::default(),
        forward::Limits::default(),
    ));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// A request as Warden sends its own calls: no credentials and the management marker (the
/// agent adds its own credentials).
fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "whatever.clusters.warden.internal")
        .header("x-warden-management", "agent")
        .body(Empty::new())
        .unwrap()
}

/// A request as Warden sends a user's: with the user's service-account token.
fn get_as(path: &str, token: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "whatever.clusters.warden.internal")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap()
}

/// Warden keeps an idle tunnel stream for its next request. When the agent drains, that
/// stream closes at once (a shutdown does not wait out its drain timeout for it), while a
/// request still being answered gets its whole answer first.
#[tokio::test]
async fn draining_closes_idle_streams_and_finishes_busy_ones() {
    let (_sim, clients, _dir) = sim_and_client().await;
    let kube = clients.agent.clone();
    let tracker = Tracker::default();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(forward::serve_stream(
        theirs,
        clients.clone(),
        tracker.clone(),
        forward::Limits::default(),
    ));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
        .await
        .unwrap();
    let client_conn = tokio::spawn(conn.with_upgrades());
    let r = send
        .send_request(get("/api/v1/namespaces/kube-system"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.into_body().collect().await.unwrap();
    // Idle and kept alive: still served a second later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !served.is_finished(),
        "an idle stream stays open until drained"
    );

    // A busy stream: a watch that is answering when the drain begins.
    let (ours2, theirs2) = tokio::io::duplex(64 * 1024);
    let served2 = tokio::spawn(forward::serve_stream(
        theirs2,
        clients,
        tracker.clone(),
        forward::Limits::default(),
    ));
    let (mut send2, conn2) = hyper::client::conn::http1::handshake(TokioIo::new(ours2))
        .await
        .unwrap();
    tokio::spawn(conn2.with_upgrades());
    let watch = send2
        .send_request(get("/api/v1/namespaces/default/configmaps?watch=1"))
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);

    tracker.drain();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the idle stream closed when the agent drained")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), client_conn)
        .await
        .expect("Warden's end sees the close")
        .unwrap()
        .ok();
    // The busy one keeps answering: an event made now still arrives.
    let api: Api<ConfigMap> = Api::namespaced(kube, "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("made-while-draining".into());
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut body = watch.into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("made-while-draining") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the watch still streams while draining")
            .expect("a frame")
            .unwrap();
        if let Some(d) = frame.data_ref() {
            seen.extend_from_slice(d);
        }
    }
    assert!(!served2.is_finished(), "a busy stream finishes its answer");
}

#[tokio::test]
async fn the_forwarder_uses_its_own_credentials_and_streams() {
    let (sim, clients, _dir) = sim_and_client().await;
    let kube = clients.agent.clone();
    let mut send = forwarder(clients).await;

    let r = send
        .send_request(get("/api/v1/namespaces/kube-system"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["metadata"]["uid"], sim.kube_system_uid());

    // Errors pass through as the API server's Status.
    let r = send
        .send_request(get("/api/v1/namespaces/nope"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["reason"], "NotFound");

    // A watch streams: events arrive while the response is open.
    let r = send
        .send_request(get(
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=20",
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    let api: Api<ConfigMap> = Api::namespaced(kube, "default");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cm: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "streamed"}})).unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    });
    let mut seen = String::new();
    while !seen.contains("\"streamed\"") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("\"type\":\"ADDED\""), "{seen}");
}

/// A user's request runs with the user's token and nothing of the agent's: the cluster's RBAC
/// sees the service account only, and a bad token is not rescued by the agent's credentials.
#[tokio::test]
async fn user_requests_carry_only_the_users_token() {
    let (sim, clients, _dir) = sim_and_client().await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(clients.agent.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "u-dev"}})).unwrap(),
    )
    .await
    .unwrap();
    let token = sim
        .service_account_token("default", "u-dev", Duration::from_secs(600))
        .unwrap();
    let mut send = forwarder(clients).await;
    let r = send
        .send_request(get_as("/api/v1/namespaces/kube-system/pods", &token))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body =
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned();
    assert!(
        body.contains("system:serviceaccount:default:u-dev"),
        "{body}"
    );
    let r = send
        .send_request(get_as(
            "/api/v1/namespaces/kube-system/pods",
            "not-a-real-token",
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Warden's own calls still run as the agent.
    let r = send
        .send_request(get("/api/v1/namespaces/kube-system/pods"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_clear_status() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A kubeconfig for a port where nothing listens.
    let sim = kubesim::KubeSim::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = sim
        .admin_kubeconfig()
        .replace(sim.url(), &format!("https://127.0.0.1:{port}"));
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    let clients = warden_agent::kube_clients(Some(&path), None).await.unwrap();
    let mut send = forwarder(clients).await;
    let r = send.send_request(get("/version")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unreachable from the agent"),
        "{body}"
    );
}

/// A minimal HTTP proxy: CONNECT only, remembering what it was asked.
async fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                s.lock().unwrap().push(head.clone());
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (port, seen)
}

/// A WebSocket server that accepts one bearer secret and refuses others like Warden does.
async fn ws_server() -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    use tokio_tungstenite::tungstenite::handshake::server::{
        ErrorResponse, Request as WsRequest, Response as WsResponse,
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                // The error type is tungstenite's, as its callback wants it.
                #[expect(clippy::result_large_err)]
                let check = |req: &WsRequest,
                             resp: WsResponse|
                 -> Result<WsResponse, ErrorResponse> {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    s.lock()
                        .unwrap()
                        .push((h("authorization"), h("x-warden-fingerprint")));
                    if h("authorization") == "Bearer wdb_good"
                        && req.uri().path() == "/agent/v1/connect"
                    {
                        Ok(resp)
                    } else {
                        let body = r#"{"error":{"code":"token_used","message":"this bootstrap token was already used"}}"#;
                        Err(http::Response::builder()
                            .status(403)
                            .body(Some(body.into()))
                            .unwrap())
                    }
                };
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(c, check).await {
                    let _ = ws
                        .send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
                        .await;
                    while ws.next().await.is_some() {}
                }
            });
        }
    });
    (port, seen)
}

fn settings(url: String, proxy: Option<String>) -> Settings {
    Settings {
        warden_url: url,
        cluster: "c".into(),
        bootstrap_token: Some("wdb_good".into()),
        warden_ca: None,
        http_proxy: proxy,
        https_proxy: None,
        no_proxy: None,
        proxy_ca: None,
        credential: None,
        agent_key: None,
        allow_insecure_http: false,
    }
}

#[tokio::test]
async fn dialling_goes_through_a_connect_proxy_and_refusals_are_final() {
    let (ws_port, ws_seen) = ws_server().await;
    let (proxy_port, proxy_seen) = connect_proxy().await;
    let s = settings(
        format!("http://127.0.0.1:{ws_port}"),
        Some(format!("http://user:p%40ss@127.0.0.1:{proxy_port}")),
    );
    let mut ws = dial::upgrade(&s, "wdb_good", "uid-1", &[])
        .await
        .expect("connected through the proxy");
    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), "hi");
    let head = proxy_seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with(&format!("CONNECT 127.0.0.1:{ws_port} HTTP/1.1")),
        "{head}"
    );
    // user:p@ss
    assert!(
        head.contains("Proxy-Authorization: Basic dXNlcjpwQHNz"),
        "{head}"
    );
    assert_eq!(
        ws_seen.lock().unwrap()[0],
        ("Bearer wdb_good".to_owned(), "uid-1".to_owned())
    );

    // NO_PROXY skips the proxy.
    let mut direct = s.clone();
    direct.no_proxy = Some("127.0.0.1".into());
    dial::upgrade(&direct, "wdb_good", "uid-1", &[])
        .await
        .expect("direct");
    assert_eq!(proxy_seen.lock().unwrap().len(), 1);

    // A refusal carries Warden's code and message, and is final.
    match dial::upgrade(&s, "wdb_used", "uid-1", &[]).await {
        Err(DialError::Refused {
            status,
            code,
            message,
        }) => {
            assert_eq!((status, code.as_str()), (403, "token_used"));
            assert!(message.contains("already used"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected"),
    }
    // Plain http:// to another host is refused unless the manifest says otherwise.
    let remote = settings("http://warden.internal:3000".into(), None);
    match dial::upgrade(&remote, "wdb_good", "uid-1", &[]).await {
        Err(DialError::Refused { code, .. }) => assert_eq!(code, "insecure_url"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected"),
    }
    // Nobody listening: transient.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(matches!(
        dial::upgrade(
            &settings(format!("http://127.0.0.1:{port}"), None),
            "x",
            "y",
            &[]
        )
        .await,
        Err(DialError::Transient(_))
    ));
}

#[test]
fn backoff_is_jittered_exponential_and_capped() {
    let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut base = 500u64;
    for _ in 0..12 {
        let d = b.next_delay().as_millis() as u64;
        assert!(
            d >= base / 2 && d <= base,
            "{d} not within [{}, {base}]",
            base / 2
        );
        base = (base * 2).min(30_000);
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(500));
}

/// A forwarder with its own limits.
async fn forwarder_with<B>(
    clients: warden_agent::KubeClients,
    limits: forward::Limits,
) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(forward::serve_stream(
        theirs,
        clients,
        Tracker::default(),
        limits,
    ));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// The attack: a request reaches the agent without a user token (a gateway bug, a forged
/// stream). The agent must not run it with its own identity; only the explicit management
/// marker does that, and never together with a token.
#[tokio::test]
async fn a_request_without_a_user_token_is_refused_not_run_as_the_agent() {
    let (_sim, clients, _dir) = sim_and_client().await;
    let mut send = forwarder(clients).await;
    let bare = Request::get("/api/v1/namespaces/kube-system/secrets")
        .header("host", "x")
        .body(Empty::new())
        .unwrap();
    let r = send.send_request(bare).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body =
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned();
    assert!(body.contains("never lends its own identity"), "{body}");
    for (auth, marker) in [
        (Some("Bearer "), None),
        (Some("Bearer    "), None),
        (Some("Basic dXNlcjpw"), None),
        (Some("Bearer sometoken"), Some("agent")),
        (None, Some("yes")),
    ] {
        let mut b = Request::get("/api/v1/namespaces/kube-system/secrets").header("host", "x");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if let Some(m) = marker {
            b = b.header("x-warden-management", m);
        }
        let r = send
            .send_request(b.body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?} {marker:?}");
    }
    // The marker alone is Warden's own call.
    let r = send
        .send_request(get("/api/v1/namespaces/kube-system"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The attack: a client sends a huge body to make the agent buffer it. Refused before reading
/// when the length is declared, and cut off at the limit when it is not.
#[tokio::test]
async fn request_bodies_are_capped_at_the_api_servers_limit() {
    let (_sim, clients, _dir) = sim_and_client().await;
    let mut send =
        forwarder_with::<http_body_util::Full<Bytes>>(clients.clone(), forward::Limits::default())
            .await;
    let big = Bytes::from(vec![b'x'; forward::MAX_REQUEST_BODY + 1]);
    let r = send
        .send_request(
            Request::post("/api/v1/namespaces/default/configmaps")
                .header("host", "x")
                .header("x-warden-management", "agent")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(big.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without a length (chunked): read up to the limit, then refused.
    let mut send =
        forwarder_with::<http_body_util::StreamBody<_>>(clients, forward::Limits::default()).await;
    let chunks = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::copy_from_slice(
                    c,
                )))
            })
            .collect::<Vec<_>>(),
    );
    let r = send
        .send_request(
            Request::post("/api/v1/namespaces/default/configmaps")
                .header("host", "x")
                .header("x-warden-management", "agent")
                .header("content-type", "application/json")
                .body(http_body_util::StreamBody::new(chunks))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// The attack: a client opens watch after watch to tie up the agent. Past the tunnel's limit
/// the agent answers 429 at once; a finished request frees its place.
#[tokio::test]
async fn concurrent_requests_per_tunnel_are_capped() {
    let (_sim, clients, _dir) = sim_and_client().await;
    let limits = forward::Limits::new(2);
    let watch = "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=30";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut send = forwarder_with::<Empty<Bytes>>(clients.clone(), limits.clone()).await;
        let r = send.send_request(get(watch)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        open.push((send, r.into_body()));
    }
    let mut third = forwarder_with::<Empty<Bytes>>(clients.clone(), limits.clone()).await;
    let r = third.send_request(get("/version")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    // One watch ends: there is room again.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = third.send_request(get("/version")).await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a watch ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
