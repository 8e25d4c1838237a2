//! The web terminal's WebSocket (pod exec) through a real agent's tunnel: a round trip into
//! the container, refusals before the upgrade (foreign Origin, no session, read-only), and
//! every kind of revocation closing an open (idle) terminal with its reason.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use warden_server::gateway::testkit::{Kubectl, RunningAgent};
use warden_server::testing::{Client, TestApp};

const PROD: &str = "prod-1";

struct World {
    app: TestApp,
    admin: Client,
    _sim: kubesim::KubeSim,
    _dir: tempfile::TempDir,
    _agent: RunningAgent,
    binding: String,
}

async fn world() -> World {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["production", "dev"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, agent) = app
        .cluster_with_agent(&admin, dir.path(), PROD, "production", &["dev"], &["apple"])
        .await;
    Kubectl::new(&dir.path().join("ops"), &sim.admin_kubeconfig())
        .run_with_stdin(
            &["apply", "-n", "apple", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"),
        )
        .await
        .expect_ok();
    let _ = app.user_client(&admin, "sally@example.com").await;
    let _ = app.user_client(&admin, "rita@example.com").await;
    let binding = bind(&admin, "sally@example.com", "NAMESPACE_ADMIN").await;
    bind(&admin, "rita@example.com", "NAMESPACE_READ_ONLY").await;
    World {
        app,
        admin,
        _sim: sim,
        _dir: dir,
        _agent: agent,
        binding,
    }
}

async fn bind(admin: &Client, email: &str, role: &str) -> String {
    admin.bind_user(email, role, "dev", &["apple"]).await
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

impl World {
    async fn signed_in(&self, email: &str) -> Client {
        let c = self.app.client();
        c.login(email, warden_server::testing::USER_PASSWORD)
            .await
            .assert_status(200);
        c
    }

    /// Open a terminal as `who`, with `origin` (None: no Origin header). Err(status) when the
    /// upgrade is refused.
    async fn open(&self, who: Option<&Client>, origin: Option<&str>, pod: &str) -> Result<Ws, u16> {
        let url = format!(
            "ws://{}/api/v1/terminal/ws?cluster={PROD}&namespace=apple&pod={pod}",
            self.app.addr
        );
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        if let Some(c) = who.and_then(|c| c.session_cookie()) {
            req.headers_mut()
                .insert("cookie", format!("warden_session={c}").parse().unwrap());
        }
        let tcp = tokio::net::TcpStream::connect(self.app.addr).await.unwrap();
        match tokio_tungstenite::client_async(req, tcp).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

/// Read until a text control message of `kind` arrives; returns it and the output seen.
async fn until_control(ws: &mut Ws, kind: &str, within: Duration) -> (Value, String) {
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return (v, out);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no {kind} message (got {other:?}); output so far: {out}"),
        }
    }
}

/// Read output until it contains `needle`.
async fn until_output(ws: &mut Ws, needle: &str) -> String {
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !out.contains(needle) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(_))) => {}
            other => panic!("no {needle:?} (got {other:?}); output: {out}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_round_trip_and_refusals_before_the_upgrade() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let origin = w.app.url.clone();

    // Cross-site WebSocket hijacking: the right cookie from a foreign page is refused.
    assert_eq!(
        w.open(Some(&sally), Some("https://evil.example"), "box")
            .await
            .err(),
        Some(403)
    );
    assert_eq!(w.open(Some(&sally), None, "box").await.err(), Some(403));
    // No session.
    assert_eq!(w.open(None, Some(&origin), "box").await.err(), Some(401));
    // Read-only access never execs.
    let rita = w.signed_in("rita@example.com").await;
    assert_eq!(
        w.open(Some(&rita), Some(&origin), "box").await.err(),
        Some(403)
    );

    let mut ws = w
        .open(Some(&sally), Some(&origin), "box")
        .await
        .expect("a terminal");
    let (ready, _) = until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    assert_eq!(ready["cluster"], PROD);
    assert!(ready["identity"]
        .as_str()
        .unwrap()
        .starts_with("system:serviceaccount:warden-system:u-sally"));
    ws.send(Message::Text(
        json!({"type": "resize", "cols": 100, "rows": 30})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(
        b"echo $((6*7)); stty size\n".to_vec().into(),
    ))
    .await
    .unwrap();
    let out = until_output(&mut ws, "30 100").await;
    assert!(out.contains("42"), "{out}");
    ws.send(Message::Binary(b"exit 3\n".to_vec().into()))
        .await
        .unwrap();
    let (exit, _) = until_control(&mut ws, "exit", Duration::from_secs(10)).await;
    assert_eq!(exit["code"], 3);

    w.app.gateway().flush_audit().await;
    let events = w
        .admin
        .get("/api/v1/audit/events?kind=terminal&limit=100")
        .await
        .assert_status(200)
        .json();
    let items = events["items"].as_array().unwrap();
    let action = |a: &str, outcome: &str| {
        items
            .iter()
            .any(|e| e["action"] == a && e["outcome"] == outcome)
    };
    assert!(action("terminal.open", "allowed"), "{items:#?}");
    assert!(action("terminal.close", "allowed"), "{items:#?}");
    assert!(
        action("terminal.open", "denied"),
        "rita's refusal is audited: {items:#?}"
    );

    // The recording: asciicast v2 with the output (never the keystrokes as input events), its
    // SHA-256 in the closing event, readable by those who read the audit log only.
    let close = items
        .iter()
        .find(|e| e["action"] == "terminal.close")
        .unwrap();
    let rec = &close["details"]["recording"];
    let id = rec["id"].as_str().expect("a recording id");
    let cast = w
        .admin
        .get(&format!("/api/v1/terminal/recordings/{id}"))
        .await
        .assert_status(200)
        .body;
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        events.iter().all(|e| e[1] == "o" || e[1] == "r"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e[1] == "r" && e[2] == "100x30"));
    assert!(events
        .iter()
        .any(|e| e[1] == "o" && e[2].as_str().unwrap().contains("42")));
    use sha2::Digest;
    assert_eq!(
        rec["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(cast.as_bytes()))
    );
    sally
        .get(&format!("/api/v1/terminal/recordings/{id}"))
        .await
        .assert_status(403);
    w.admin
        .get("/api/v1/terminal/recordings/..%2F..%2Fetc")
        .await
        .assert_status(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_terminals_are_listed_and_an_administrator_ends_one() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w
        .open(Some(&sally), Some(&w.app.url), "box")
        .await
        .expect("a terminal");
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    let mine = sally.get("/api/v1/streams").await.assert_status(200).json();
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{mine}");
    assert_eq!(items[0]["kind"], "terminal");
    assert_eq!(items[0]["user"], "sally@example.com");
    assert_eq!(items[0]["target"], "pods/box");
    // Everyone's: administrators only.
    sally
        .get("/api/v1/streams?all=true")
        .await
        .assert_status(403);
    let rita = w.signed_in("rita@example.com").await;
    let id = items[0]["id"].as_u64().unwrap();
    rita.delete(&format!("/api/v1/streams/{id}"))
        .await
        .assert_status(404);
    let all = w
        .admin
        .get("/api/v1/streams?all=true&kind=terminal")
        .await
        .assert_status(200)
        .json();
    assert!(all["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id));
    w.admin
        .delete(&format!("/api/v1/streams/{id}"))
        .await
        .assert_status(204);
    let (closed, _) = until_control(&mut ws, "closed", Duration::from_secs(2)).await;
    assert_eq!(closed["reason"], "ended by admin@warden.local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_close_an_idle_terminal_with_the_reason() {
    let w = world().await;
    let origin = w.app.url.clone();
    let open = |c: Client| async {
        let mut ws = w
            .open(Some(&c), Some(&origin), "box")
            .await
            .expect("a terminal");
        until_control(&mut ws, "ready", Duration::from_secs(10)).await;
        ws.send(Message::Binary(b"echo up\n".to_vec().into()))
            .await
            .unwrap();
        until_output(&mut ws, "up").await;
        (ws, c)
    };

    // Sign-out.
    let (mut ws, sally) = open(w.signed_in("sally@example.com").await).await;
    let t = Instant::now();
    sally
        .post("/api/v1/auth/logout", json!({}))
        .await
        .assert_status(204);
    let (closed, _) = until_control(&mut ws, "closed", Duration::from_secs(2)).await;
    assert!(
        closed["reason"].as_str().unwrap().contains("signed out"),
        "{closed}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // Deactivation.
    let (mut ws, _sally) = open(w.signed_in("sally@example.com").await).await;
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    let (closed, _) = until_control(&mut ws, "closed", Duration::from_secs(2)).await;
    assert!(!closed["reason"].as_str().unwrap().is_empty(), "{closed}");
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "active"}),
        )
        .await
        .assert_status(200);

    // The binding removed.
    let (mut ws, _sally) = open(w.signed_in("sally@example.com").await).await;
    w.admin
        .delete(&format!("/api/v1/bindings/{}", w.binding))
        .await
        .assert_status(204);
    let (closed, _) = until_control(&mut ws, "closed", Duration::from_secs(2)).await;
    assert!(
        closed["reason"]
            .as_str()
            .unwrap()
            .contains("no kubectl access to cluster prod-1"),
        "{closed}"
    );
    // The socket is closed after the reason.
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap();
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
    assert_eq!(w.app.gateway().live.len(), 0);
}
