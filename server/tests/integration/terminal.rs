//! The web terminal's WebSocket through a real agent's tunnel. Pod exec: a round trip into
//! the container, refusals before the upgrade (foreign Origin, no session, read-only), and
//! every kind of revocation closing an open (idle) terminal with its reason. Kubectl shell:
//! the machine's real kubectl through the gateway as the user, every refused flag and
//! subcommand refused with nothing run, revocations closing it, the audit links, and the
//! terminal's credential dying with it.

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
    world_with(Default::default()).await
}

async fn world_with(extra: std::collections::BTreeMap<String, String>) -> World {
    let (app, admin) = TestApp::spawn_with(extra).await.with_admin().await;
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

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

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
pub(crate) async fn until_control(ws: &mut Ws, kind: &str, within: Duration) -> (Value, String) {
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
pub(crate) async fn until_output(ws: &mut Ws, needle: &str) -> String {
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
    // Names Kubernetes would never give a pod: refused before anything is asked of the gate.
    for pod in ["-box", "box.", "a..b", "..", "--token", "box-"] {
        assert_eq!(
            w.open(Some(&sally), Some(&origin), pod).await.err(),
            Some(400),
            "{pod}"
        );
    }
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
    // The same size over and over is recorded once (checked in the recording below).
    for _ in 0..50 {
        ws.send(Message::Text(
            json!({"type": "resize", "cols": 100, "rows": 30})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    }
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

    // The closing event is written in the background: wait for it.
    let has = |items: &[Value], a: &str, outcome: &str| {
        items
            .iter()
            .any(|e| e["action"] == a && e["outcome"] == outcome)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let items = loop {
        w.app.gateway().flush_audit().await;
        let events = w
            .admin
            .get("/api/v1/audit/events?kind=terminal&limit=100")
            .await
            .assert_status(200)
            .json();
        let items = events["items"].as_array().unwrap().clone();
        if has(&items, "terminal.close", "allowed") || std::time::Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let action = |a: &str, outcome: &str| has(&items, a, outcome);
    assert!(action("terminal.open", "allowed"), "{items:#?}");
    assert!(action("terminal.close", "allowed"), "{items:#?}");
    assert!(
        action("terminal.open", "denied"),
        "rita's refusal is audited: {items:#?}"
    );
    // The opening names the cluster itself, not only its name (replay is judged against that
    // cluster, never a namesake imported later).
    let cluster_id = w
        .admin
        .get(&format!("/api/v1/clusters/{PROD}"))
        .await
        .assert_status(200)
        .json()["id"]
        .clone();
    let opened = items
        .iter()
        .find(|e| e["action"] == "terminal.open" && e["outcome"] == "allowed")
        .unwrap();
    assert_eq!(opened["details"]["cluster_id"], cluster_id, "{opened:#}");

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
    assert_eq!(
        events
            .iter()
            .filter(|e| e[1] == "r" && e[2] == "100x30")
            .count(),
        1,
        "{events:?}"
    );
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
    // Who watched it is in the log, as is who was refused.
    let replays = w
        .admin
        .get("/api/v1/audit/events?action=recording.replay&limit=50")
        .await
        .assert_status(200)
        .json();
    let replays = replays["items"].as_array().unwrap();
    let by = |actor: &str, outcome: &str| {
        replays
            .iter()
            .filter(|e| e["actor"] == actor && e["outcome"] == outcome && e["resource_name"] == id)
            .count()
    };
    assert_eq!(
        by(warden_server::testing::ADMIN_EMAIL, "allowed"),
        1,
        "{replays:#?}"
    );
    assert_eq!(by("sally@example.com", "denied"), 1, "{replays:#?}");
    // A read-only auditor reads the terminal's audit events, not its output: a recording shows
    // whatever the terminal printed, secrets included, and read-only never allows secrets.
    let _ = w.app.user_client(&w.admin, "audrey@example.com").await;
    w.admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "audrey@example.com"}, "role": "ADMIN_READ_ONLY"}),
        )
        .await
        .assert_status(201);
    let audrey = w.signed_in("audrey@example.com").await;
    let seen = audrey
        .get(&format!(
            "/api/v1/audit/events?kind=terminal&cluster={PROD}"
        ))
        .await
        .assert_status(200)
        .json();
    let seen_close = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "terminal.close")
        .expect("the auditor reads the terminal's events")
        .clone();
    // Lists offer the player only to those it would play for, and deciding that is no denial.
    assert_eq!(seen_close["replayable"], false, "{seen_close:#}");
    assert_eq!(close["replayable"], true, "{close:#}");
    let close_id = seen_close["id"].as_str().unwrap();
    let detail = audrey
        .get(&format!("/api/v1/audit/events/{close_id}"))
        .await
        .assert_status(200)
        .json();
    assert!(detail["recording"].is_null(), "{detail:#}");
    let detail = w
        .admin
        .get(&format!("/api/v1/audit/events/{close_id}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(detail["recording"], id, "{detail:#}");
    let refused = audrey
        .get(&format!("/api/v1/terminal/recordings/{id}"))
        .await
        .assert_status(403)
        .body;
    assert!(
        refused.contains("right to read secrets in namespace apple"),
        "{refused}"
    );
    assert!(!refused.contains("42"), "{refused}");
    let denials = w
        .admin
        .get("/api/v1/audit/events?action=recording.replay&outcome=denied")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        denials["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["actor"] == "audrey@example.com" && e["resource_name"] == id)
            .count(),
        1,
        "the replay she asked for, not the lists she read: {denials:#}"
    );
    w.admin
        .get("/api/v1/terminal/recordings/..%2F..%2Fetc")
        .await
        .assert_status(404);
    // Someone with the database's keys cuts the end off the recording (what the terminal
    // printed last): the digest its terminal closed with, in the audit log's chain, no longer
    // matches, and the replay is refused and audited rather than shown as the whole session.
    {
        use sea_orm::{ConnectionTrait, Statement};
        let db = &w.app.services().db;
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "DELETE FROM terminal_recording_chunks WHERE recording_id = '{id}' AND seq = \
                 (SELECT MAX(seq) FROM terminal_recording_chunks WHERE recording_id = '{id}')"
            ),
        ))
        .await
        .unwrap();
    }
    let refused = w
        .admin
        .get(&format!("/api/v1/terminal/recordings/{id}"))
        .await
        .assert_status(409)
        .body;
    assert!(refused.contains("altered"), "{refused}");
    let denials = w
        .admin
        .get("/api/v1/audit/events?action=recording.replay&outcome=denied")
        .await
        .assert_status(200)
        .json();
    assert!(
        denials["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == warden_server::testing::ADMIN_EMAIL && e["resource_name"] == id),
        "{denials:#}"
    );
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
    // Another kind lists none of it; a kind that does not exist is an error, not an empty page.
    let watches = w
        .admin
        .get("/api/v1/streams?all=true&kind=watch")
        .await
        .assert_status(200)
        .json();
    assert!(watches["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["id"] != id));
    let bad = w
        .admin
        .get("/api/v1/streams?all=true&kind=terminals")
        .await
        .assert_status(422);
    assert!(bad.body.contains("unknown variant"), "{}", bad.body);
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
            .contains("no kubectl access to a cluster named prod-1"),
        "{closed}"
    );
    // The socket is closed after the reason.
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap();
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
    assert_eq!(w.app.gateway().live.len(), 0);
}

// ---- the kubectl shell ----

const PROMPT: &str = "prod-1:apple$ ";

impl World {
    /// Open the kubectl shell (no `pod`) as `who` in `namespace`.
    async fn open_shell(&self, who: &Client, namespace: &str) -> Ws {
        let url = format!(
            "ws://{}/api/v1/terminal/ws?cluster={PROD}&namespace={namespace}",
            self.app.addr
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", self.app.url.parse().unwrap());
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "warden.terminal.v1".parse().unwrap(),
        );
        let cookie = who.session_cookie().expect("signed in");
        req.headers_mut().insert(
            "cookie",
            format!("warden_session={cookie}").parse().unwrap(),
        );
        let tcp = tokio::net::TcpStream::connect(self.app.addr).await.unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("a shell");
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "warden.terminal.v1"
        );
        ws
    }

    async fn events(&self, query: &str) -> Vec<Value> {
        self.app.gateway().flush_audit().await;
        self.admin
            .get(&format!("/api/v1/audit/events?limit=500&{query}"))
            .await
            .assert_status(200)
            .json()["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Type a line; the output up to the next prompt.
async fn run_line(ws: &mut Ws, line: &str) -> String {
    ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
        .await
        .unwrap();
    until_output(ws, PROMPT).await
}

/// The lines the shell must refuse, none of which may reach the cluster.
fn refused_lines(data_dir: &std::path::Path) -> Vec<String> {
    let key = data_dir.join("gateway").join("user-ca-key.pem");
    let mut lines: Vec<String> = [
        // Files on Warden's host.
        "kubectl apply -f /etc/passwd",
        "kubectl apply --filename=/etc/passwd",
        "kubectl create -Rf /etc",
        "kubectl apply -k .",
        "kubectl apply --kustomize=.",
        "kubectl create configmap x --from-file=/etc/passwd",
        "kubectl create configmap x --from-env-file /etc/environment",
        "kubectl get pods -o go-template-file=/etc/passwd",
        "kubectl get pods -o templatefile --template=kubeconfig",
        "kubectl cp apple/box:/etc/passwd /tmp/x",
        "kubectl edit pod box",
        "kubectl proxy",
        "kubectl port-forward box 8080:80",
        "kubectl config view",
        "kubectl plugin list",
        "kubectl frobnicate",
        "kubectl diff -f -",
        "kubectl cluster-info dump",
        "kubectl auth reconcile -f -",
        // A flag's value hiding the subcommand's own subcommand from the filter.
        "kubectl apply --log-flush-frequency 5s edit-last-applied pod/box",
        "kubectl cluster-info --log-flush-frequency 5s dump",
        // A secret in a line with a stray quote: refused, and kept out of the log.
        "kubectl create secret generic db --from-literal=password=s3cr3t-typed 'oops",
        // Another identity or target.
        "kubectl get pods --token=abc",
        "kubectl get pods --as=admin",
        "kubectl get pods --as-group system:masters",
        "kubectl get pods --as-uid=0",
        "kubectl get pods -s https://127.0.0.1:1",
        "kubectl get pods --server=https://127.0.0.1:1",
        "kubectl get pods --context=x",
        "kubectl get pods --cluster x",
        "kubectl get pods --user=x",
        "kubectl get pods --certificate-authority=/etc/ssl/certs/ca-certificates.crt",
        "kubectl get pods --insecure-skip-tls-verify",
        "kubectl get pods --client-certificate=/x",
        "kubectl get pods --client-key=/x",
        "kubectl get pods --username=x",
        "kubectl get pods --password=x",
        "kubectl get pods --cache-dir=/tmp",
        // No shell.
        "kubectl get pods | grep box",
        "kubectl get pods > /tmp/x",
        "kubectl get pods; id",
        "kubectl get pods && id",
        "kubectl get $(id)",
        "kubectl get `id`",
        "cat /etc/passwd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lines.push(format!("kubectl get pods --kubeconfig={}", key.display()));
    lines.push(format!("kubectl --kubeconfig {} get pods", key.display()));
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_shell_runs_kubectl_through_the_gateway_and_refuses_the_rest() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w.open_shell(&sally, "apple").await;
    let (ready, _) = until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    assert_eq!(ready["mode"], "shell");
    assert_eq!(ready["cluster"], PROD);
    assert_eq!(ready["namespace"], "apple");
    assert!(ready["identity"]
        .as_str()
        .unwrap()
        .starts_with("system:serviceaccount:warden-system:u-sally"));
    assert!(ready["expires_at"].as_i64().unwrap() > 0);
    let terminal_id = ready["terminal_id"].as_u64().expect("a terminal id");
    let banner = until_output(&mut ws, PROMPT).await;
    assert!(banner.contains("kubectl shell"), "{banner}");

    // Allowed in her namespace; the namespace is the context's default.
    let out = run_line(&mut ws, "kubectl get pods -n apple").await;
    assert!(out.contains("box"), "{out}");
    let out = run_line(&mut ws, "kubectl get pods").await;
    assert!(out.contains("box"), "{out}");
    // Forbidden by the cluster (her service account's RBAC), said by kubectl.
    let out = run_line(&mut ws, "kubectl get ns").await;
    assert!(out.to_lowercase().contains("forbidden"), "{out}");
    // Built-ins.
    let out = run_line(&mut ws, "help").await;
    assert!(out.contains("Ctrl-D"), "{out}");

    // Every API call the shell made is a gateway event linked to the terminal.
    let kube = w.events("kind=kube_api").await;
    let linked: Vec<&Value> = kube
        .iter()
        .filter(|e| e["details"]["terminal_id"].as_u64() == Some(terminal_id))
        .collect();
    assert!(
        linked
            .iter()
            .any(|e| e["resource_kind"] == "pods" && e["outcome"] == "allowed"),
        "{linked:#?}"
    );
    assert!(
        linked
            .iter()
            .any(|e| e["resource_kind"] == "namespaces" && e["outcome"] == "denied"),
        "{linked:#?}"
    );
    assert!(linked.iter().all(|e| e["session_type"] == "web_shell"));
    let before = kube.len();

    // Refused, with a message, and nothing run: no gateway event appears.
    let lines = refused_lines(&w.app.state.config.data_dir);
    for line in &lines {
        let out = run_line(&mut ws, line).await;
        assert!(out.contains("warden: "), "{line}: {out}");
    }
    assert_eq!(w.events("kind=kube_api").await.len(), before);

    // The terminal's audit trail: open (shell), one event per line, refusals denied.
    let term = w.events("kind=terminal").await;
    let opened = term
        .iter()
        .find(|e| e["action"] == "terminal.open" && e["outcome"] == "allowed")
        .expect("terminal.open");
    assert_eq!(opened["details"]["mode"], "shell");
    assert_eq!(opened["details"]["terminal_id"].as_u64(), Some(terminal_id));
    let commands: Vec<&Value> = term
        .iter()
        .filter(|e| e["action"] == "terminal.command")
        .collect();
    assert!(commands.iter().any(|e| e["outcome"] == "allowed"
        && e["details"]["argv"] == json!(["get", "pods", "-n", "apple"])));
    let denied = commands.iter().filter(|e| e["outcome"] == "denied").count();
    assert_eq!(denied, lines.len(), "{commands:#?}");
    assert!(
        !serde_json::to_string(&term)
            .unwrap()
            .contains("s3cr3t-typed"),
        "a secret typed into a refused line is not recorded"
    );
    assert!(commands
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .all(|e| e["reason"].as_str().is_some_and(|r| !r.is_empty())));

    // The terminal's credential, as if it were taken from the shell's directory: it works
    // while the terminal is open, and not a moment after.
    let serial = opened["details"]["credential_serial"]
        .as_str()
        .expect("the credential's serial")
        .to_owned();
    let user_id = opened["actor_id"].as_str().unwrap().to_owned();
    let gw = w.app.gateway();
    let now = w.app.services().clock.now().to_offset();
    let (cert, key) = gw
        .pki()
        .client_cert(
            &user_id,
            "web_shell",
            &serial,
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        )
        .unwrap();
    let shell_entry = format!("https://{}", gw.shell_entry().expect("the shell's entry"));
    let as_kubeconfig = |gateway_url: &str| {
        warden_server::gateway::kubeconfig::render(
            &warden_server::gateway::kubeconfig::KubeconfigInput {
                gateway_url,
                gateway_ca_pem: Some(gw.pki().gateway_ca_pem()),
                clusters: &[warden_server::gateway::kubeconfig::KubeconfigCluster {
                    name: PROD.to_owned(),
                    namespace: Some("apple".into()),
                }],
                user: "stolen",
                cert_pem: &cert,
                key_pem: &key,
                expires_at: "",
            },
        )
    };
    // Taken elsewhere, to the gateway everybody reaches, it is refused: it works only on the
    // loopback entry the terminal's kubectl dials, and that entry is only on Warden's host.
    let refused_at = |kubeconfig: String, url: String| async move {
        let resp = warden_server::gateway::testkit::gateway_client_builder(&kubeconfig)
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let pods = format!("/clusters/{PROD}/api/v1/namespaces/apple/pods");
    let (code, body) = refused_at(
        as_kubeconfig(&w.app.gateway_url),
        format!("{}{pods}", w.app.gateway_url),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("works only inside it"), "{body}");
    let elsewhere = Kubectl::new(
        &w._dir.path().join("elsewhere"),
        &as_kubeconfig(&w.app.gateway_url),
    );
    assert!(!elsewhere.run(&["get", "pods"]).await.ok());
    let stolen = Kubectl::new(&w._dir.path().join("stolen"), &as_kubeconfig(&shell_entry));
    stolen.run(&["get", "pods"]).await.expect_ok();
    assert!(!shell_entry.ends_with(&format!(
        ":{}",
        w.app.gateway_url.rsplit(':').next().unwrap()
    )));
    assert!(
        shell_entry.starts_with("https://127.0.0.1:") || shell_entry.starts_with("https://[::1]:")
    );
    // And that entry serves nothing but web terminals: a downloaded kubeconfig is refused there.
    let downloaded = sally
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let (code, body) = refused_at(downloaded.clone(), format!("{shell_entry}{pods}")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("serves the web terminals' kubectl only"),
        "{body}"
    );
    let own = Kubectl::new(
        &w._dir.path().join("own"),
        &downloaded.replace(&w.app.gateway_url, &shell_entry),
    );
    assert!(!own.run(&["get", "pods", "-n", "apple"]).await.ok());
    // The same downloaded kubeconfig works where it was meant to.
    let (code, body) = refused_at(downloaded, format!("{}{pods}", w.app.gateway_url)).await;
    assert_eq!(code, 200, "{body}");

    // Ctrl-D on an empty line ends the shell.
    ws.send(Message::Binary(b"\x04".to_vec().into()))
        .await
        .unwrap();
    let (exit, _) = until_control(&mut ws, "exit", Duration::from_secs(10)).await;
    assert_eq!(exit["code"], 0);
    let t = Instant::now();
    loop {
        let out = stolen.run(&["get", "pods"]).await;
        if !out.ok() {
            out.expect_err("a web terminal that has ended");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Revoked in the database too (a restart forgets nothing).
    let t = Instant::now();
    loop {
        let cred = warden_domain::kubectl::credential_status(
            &w.app.services().db,
            &serial,
            &user_id,
            w.app.services().clock.now(),
        )
        .await
        .unwrap();
        if cred.is_err() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "not revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = w.events("kind=terminal&action=terminal.close").await;
    assert!(closed.iter().any(
        |e| e["details"]["terminal_id"].as_u64() == Some(terminal_id)
            && e["details"]["exit_code"] == 0
            && e["details"]["bytes_in"].as_u64() > Some(0)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_shell_apply_from_the_terminal_and_interactive_commands() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w.open_shell(&sally, "apple").await;
    until_output(&mut ws, PROMPT).await;
    // `apply -f -` reads the pasted manifest; Ctrl-D ends it.
    ws.send(Message::Binary(b"kubectl apply -f -\r".to_vec().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.send(Message::Binary(
        b"apiVersion: v1\rkind: ConfigMap\rmetadata:\r  name: pasted\rdata:\r  a: xyzzy\r\x04"
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    let out = until_output(&mut ws, PROMPT).await;
    assert!(out.contains("configmap/pasted created"), "{out}");
    let out = run_line(
        &mut ws,
        "kubectl get configmap pasted -o jsonpath='{.data.a}'",
    )
    .await;
    assert!(out.contains("xyzzy"), "{out}");
    // The manifest is not in the audit log.
    let term = w.events("kind=terminal&action=terminal.command").await;
    assert!(term
        .iter()
        .any(|e| e["details"]["argv"] == json!(["apply", "-f", "-"])));
    assert!(!serde_json::to_string(&term).unwrap().contains("xyzzy"));

    // An exec into the pod, with a TTY, from the shell; resize reaches its PTY.
    ws.send(Message::Text(
        json!({"type": "resize", "cols": 100, "rows": 30})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(
        b"kubectl exec -it box -- sh\r".to_vec().into(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(Message::Binary(
        b"echo $((6*7)); stty size\r".to_vec().into(),
    ))
    .await
    .unwrap();
    let out = until_output(&mut ws, "42").await;
    let out = if out.contains("30 100") {
        out
    } else {
        until_output(&mut ws, "30 100").await
    };
    assert!(!out.is_empty());
    ws.send(Message::Binary(b"exit\r".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, PROMPT).await;

    // A follow runs until Ctrl-C interrupts it; the shell goes on.
    ws.send(Message::Binary(b"kubectl get pods -w\r".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, "box").await;
    ws.send(Message::Binary(b"\x03".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, PROMPT).await;
    let out = run_line(&mut ws, "kubectl get pods").await;
    assert!(out.contains("box"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_close_a_kubectl_shell_with_the_reason() {
    let w = world().await;
    let open = |c: Client| async {
        let mut ws = w.open_shell(&c, "apple").await;
        until_control(&mut ws, "ready", Duration::from_secs(10)).await;
        until_output(&mut ws, PROMPT).await;
        (ws, c)
    };
    let closes_within_2s = |mut ws: Ws, needle: &'static str| async move {
        let t = Instant::now();
        let (closed, _) = until_control(&mut ws, "closed", Duration::from_secs(2)).await;
        assert!(t.elapsed() < Duration::from_secs(2));
        let reason = closed["reason"].as_str().unwrap().to_owned();
        assert!(reason.contains(needle), "{reason}");
    };

    // Sign-out.
    let (ws, sally) = open(w.signed_in("sally@example.com").await).await;
    sally
        .post("/api/v1/auth/logout", json!({}))
        .await
        .assert_status(204);
    closes_within_2s(ws, "signed out").await;

    // The user's kubeconfigs revoked (the shell's credential with them).
    let (ws, _sally) = open(w.signed_in("sally@example.com").await).await;
    w.admin
        .post(
            "/api/v1/users/sally@example.com/kubeconfig/revoke",
            json!({}),
        )
        .await
        .assert_status(200);
    closes_within_2s(ws, "revoked").await;

    // Deactivation.
    let (ws, _sally) = open(w.signed_in("sally@example.com").await).await;
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    closes_within_2s(ws, "").await;
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "active"}),
        )
        .await
        .assert_status(200);

    // The binding removed while a command runs: the command is killed too.
    let (mut ws, _sally) = open(w.signed_in("sally@example.com").await).await;
    ws.send(Message::Binary(b"kubectl get pods -w\r".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, "box").await;
    w.admin
        .delete(&format!("/api/v1/bindings/{}", w.binding))
        .await
        .assert_status(204);
    closes_within_2s(ws, "no kubectl access to a cluster named prod-1").await;
    // The watch the killed kubectl held through the gateway leaves the registry too (its
    // connection closes just after the terminal).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while w.app.gateway().live.len() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            w.app.gateway().live.list()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_kubectl_the_shell_says_so() {
    let w = world_with(
        [(
            "WARDEN_KUBECTL".to_owned(),
            "/nonexistent/kubectl".to_owned(),
        )]
        .into(),
    )
    .await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w.open_shell(&sally, "apple").await;
    let (closed, out) = until_control(&mut ws, "closed", Duration::from_secs(10)).await;
    assert!(out.contains("kubectl is not installed"), "{out}");
    assert_eq!(
        closed["reason"],
        "kubectl is not available on the Warden server"
    );
}

/// The terminal limits are kubectl settings: the organization sets how many terminals one
/// person may hold and how long they live; a user level overrides; a cluster can only shorten
/// the durations; out-of-range values are refused and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminal_limits_come_from_the_settings() {
    let w = world().await;
    // Bad values are refused with the field named; the concurrency is not a cluster's.
    let r = w
        .admin
        .patch("/api/v1/kubectl/settings", json!({"terminal_idle_secs": 5}))
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["terminal_idle_secs"].is_string());
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_max_concurrent": 0}),
        )
        .await
        .assert_status(422);
    w.admin
        .patch(
            &format!("/api/v1/clusters/{PROD}/kubectl-settings"),
            json!({"terminal_max_concurrent": 3}),
        )
        .await
        .assert_status(422);
    let org = w
        .admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_max_concurrent": 1, "terminal_max_secs": 7200}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(org["effective"]["terminal_max_concurrent"], 1);
    assert_eq!(org["effective"]["terminal_idle_secs"], 900);
    // The cluster shortens the duration further; a longer value there would not lengthen it.
    w.admin
        .patch(
            &format!("/api/v1/clusters/{PROD}/kubectl-settings"),
            json!({"terminal_max_secs": 1800}),
        )
        .await
        .assert_status(200);

    let sally = w.signed_in("sally@example.com").await;
    let mut first = w
        .open(Some(&sally), Some(&w.app.url), "box")
        .await
        .expect("a terminal");
    let (ready, _) = until_control(&mut first, "ready", Duration::from_secs(10)).await;
    let now = w.app.services().clock.now().millis();
    let left = ready["expires_at"].as_i64().unwrap() - now;
    assert!((1_790_000..=1_800_000).contains(&left), "{ready}");
    // A second one at once is refused, with the way out in words, and audited.
    assert_eq!(
        w.open(Some(&sally), Some(&w.app.url), "box").await.err(),
        Some(429)
    );
    // (The refusal's audit event is written in the background: wait for it.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let denied = w
            .admin
            .get("/api/v1/audit/events?action=terminal.open&outcome=denied")
            .await
            .assert_status(200)
            .json();
        if denied["items"].as_array().unwrap().iter().any(|e| {
            e["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("the most allowed at once")
        }) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{denied}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A user level raises it for Sally alone.
    w.admin
        .patch(
            "/api/v1/users/sally@example.com/kubectl-settings",
            json!({"terminal_max_concurrent": 2}),
        )
        .await
        .assert_status(200);
    let mut second = w
        .open(Some(&sally), Some(&w.app.url), "box")
        .await
        .expect("a second terminal");
    until_control(&mut second, "ready", Duration::from_secs(10)).await;
    // Closing one frees its place.
    drop(first);
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open = sally.get("/api/v1/streams").await.json();
        if open["items"].as_array().is_some_and(|i| i.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = w
        .open(Some(&sally), Some(&w.app.url), "box")
        .await
        .expect("a place again");
    until_control(&mut again, "ready", Duration::from_secs(10)).await;
    // Eight upgrades at once, with one place left: one opens. The count is taken and the
    // place held in one step, so they do not all see "one open" before any registers.
    let opens = (0..8).map(|_| w.open(Some(&sally), Some(&w.app.url), "box"));
    let results = futures::future::join_all(opens).await;
    let opened = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<u16> = results
        .iter()
        .filter_map(|r| r.as_ref().err().copied())
        .collect();
    assert_eq!(opened, 1, "{refused:?}");
    assert!(refused.iter().all(|s| *s == 429), "{refused:?}");
}

/// Keystrokes reach a recording only when the organization turns `terminal_record_input` on, and
/// stop reaching it when it turns it off again, in the terminals open then too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recordings_keep_keystrokes_only_when_the_setting_says_so() {
    let w = world().await;
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_record_input": true}),
        )
        .await
        .assert_status(200);
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w
        .open(Some(&sally), Some(&w.app.url), "box")
        .await
        .expect("a terminal");
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    ws.send(Message::Binary(b"echo typed-$((2*21))\n".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, "typed-42").await;
    // Turned off while the terminal is open: it stays open, and what is typed from then on is
    // not kept (the organization no longer wants keystrokes stored).
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_record_input": false}),
        )
        .await
        .assert_status(200);
    ws.send(Message::Binary(b"echo after-$((6*7))\n".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, "after-42").await;
    ws.send(Message::Binary(b"exit\n".to_vec().into()))
        .await
        .unwrap();
    until_control(&mut ws, "exit", Duration::from_secs(10)).await;
    w.app.gateway().flush_audit().await;
    let events = w
        .admin
        .get("/api/v1/audit/events?kind=terminal&limit=100")
        .await
        .json();
    let open = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "terminal.open" && e["outcome"] == "allowed")
        .cloned()
        .unwrap();
    assert_eq!(open["details"]["recording_input"], true);
    let id = open["id"].as_str().unwrap();
    let cast = w
        .admin
        .get(&format!("/api/v1/terminal/recordings/{id}"))
        .await
        .assert_status(200)
        .body;
    let typed: String = cast
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "i")
        .map(|e| e[2].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(typed.contains("echo typed-$((2*21))"), "{cast}");
    assert!(!typed.contains("after"), "{typed}");
    assert!(cast.contains("after-42"), "the output is still recorded");
}

/// What ends a credential ends a terminal opened with it at once, not at the next minute's
/// check: an API key revoked (a leaked key's owner revokes it), the user's authenticator reset
/// (it was lost or taken: every session it signed in goes), and an MFA policy that now covers
/// an unenrolled holder (new requests are refused; an open terminal goes too).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_a_reset_authenticator_and_a_new_mfa_policy_close_a_terminal_at_once() {
    let w = world().await;
    let ready = |mut ws: Ws| async move {
        until_control(&mut ws, "ready", Duration::from_secs(10)).await;
        ws.send(Message::Binary(b"echo up\n".to_vec().into()))
            .await
            .unwrap();
        until_output(&mut ws, "up").await;
        ws
    };

    // An API key.
    let sally = w.signed_in("sally@example.com").await;
    let key = sally.create_api_key(json!({"name": "laptop"})).await;
    let url = format!(
        "ws://{}/api/v1/terminal/ws?cluster={PROD}&namespace=apple&pod=box",
        w.app.addr
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(w.app.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("a terminal opened with the key");
    let mut ws = ready(ws).await;
    let keys = sally
        .get("/api/v1/api-keys")
        .await
        .assert_status(200)
        .json();
    let id = keys["items"][0]["id"].as_str().unwrap().to_owned();
    sally
        .delete(&format!("/api/v1/api-keys/{id}"))
        .await
        .assert_status(204);
    closes_saying(&mut ws, "API key").await;

    // The authenticator reset by an administrator.
    let (secret, _) = crate::mfa::enrol(&w.app, &sally).await;
    w.app.clock.advance_secs(30);
    sally
        .post(
            "/api/v1/auth/step-up",
            json!({"code": crate::mfa::code(&w.app, &secret, 0)}),
        )
        .await
        .assert_status(204);
    let mut ws = ready(w.open_for(&sally).await).await;
    w.admin
        .delete("/api/v1/users/sally@example.com/mfa")
        .await
        .assert_status(204);
    closes_saying(&mut ws, "signed out").await;
    sally.get("/api/v1/me").await.assert_status(401);

    // The MFA policy now covers her, and she has no authenticator any more.
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = ready(w.open_for(&sally).await).await;
    w.admin
        .patch("/api/v1/settings", json!({"mfa_policy": "everyone"}))
        .await
        .assert_status(200);
    closes_saying(&mut ws, "two-factor").await;
    assert_eq!(w.app.gateway().live.len(), 0);
}

/// A kubectl shell's credential expires with the terminal's limit, on Warden's clock; every
/// re-check of the open shell (at least once a minute) keeps the credential's expiry among its
/// deadlines, so the shell ends when the credential does, not at the next minute's check. (The
/// manual clock moves while real time hardly does: the relay's own timer cannot end it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubectl_shell_ends_when_its_credential_expires_between_two_checks() {
    let w = world().await;
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_max_secs": 100}),
        )
        .await
        .assert_status(200);
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w.open_shell(&sally, "apple").await;
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    until_output(&mut ws, PROMPT).await;
    // Past the first minute's check: a keystroke is admitted after a re-check, which sets the
    // next deadline (the credential's expiry, 39 s on).
    w.app.clock.advance_secs(61);
    ws.send(Message::Binary(b"\r".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, PROMPT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Past the credential's expiry, 20 s before the next minute's check would come.
    w.app.clock.advance_secs(40);
    closes_saying(&mut ws, "expired").await;
    assert_eq!(w.app.gateway().live.len(), 0);
}

/// Safeguards tightened while a terminal is open reach it: keystrokes now recorded, or a
/// shorter time limit, end it with the reason (it was opened under looser ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tightened_safeguards_end_an_open_terminal() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w.open_for(&sally).await;
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_record_input": true}),
        )
        .await
        .assert_status(200);
    closes_saying(&mut ws, "keystrokes are now recorded").await;
    // Opened again under the new settings: it stays, until a shorter limit ends it too.
    let mut ws = w.open_for(&sally).await;
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_idle_secs": 600}),
        )
        .await
        .assert_status(200);
    closes_saying(&mut ws, "time limits were shortened").await;
    assert_eq!(w.app.gateway().live.len(), 0);
}

/// The terminal is closed within 3 seconds with a reason that says `why`.
async fn closes_saying(ws: &mut Ws, why: &str) {
    let (closed, _) = until_control(ws, "closed", Duration::from_secs(3)).await;
    assert!(closed["reason"].as_str().unwrap().contains(why), "{closed}");
}

impl World {
    /// A terminal on `box` opened from the console by `who`.
    async fn open_for(&self, who: &Client) -> Ws {
        self.open(Some(who), Some(&self.app.url.clone()), "box")
            .await
            .expect("a terminal")
    }
}

/// One message larger than a terminal takes (1 MiB) ends the terminal instead of being held in
/// memory and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_message_ends_the_terminal() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w
        .open(Some(&sally), Some(&w.app.url), "box")
        .await
        .expect("a terminal");
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    let _ = ws
        .send(Message::Binary(vec![b'a'; (1 << 20) + 1].into()))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the terminal still runs after a 1 MiB + 1 message"
    );
}

/// A terminal's recording has a ceiling (`WARDEN_TERMINAL_RECORDING_MAX_MB`): a person who
/// pours output into a terminal to fill Warden's database sees the terminal end there, and
/// the recording kept stops near the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminal_ends_when_its_recording_reaches_the_limit() {
    let w = world_with(
        [(
            "WARDEN_TERMINAL_RECORDING_MAX_MB".to_owned(),
            "1".to_owned(),
        )]
        .into_iter()
        .collect(),
    )
    .await;
    let sally = w.signed_in("sally@example.com").await;
    let mut ws = w.open_for(&sally).await;
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    ws.send(Message::Binary(
        b"yes 0123456789abcdef | head -c 8000000; echo; echo all-$((1+1))-printed\n"
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    let (closed, out) = until_control(&mut ws, "closed", Duration::from_secs(60)).await;
    assert_eq!(
        closed["reason"], "its recording reached the limit of 1 MiB",
        "{closed}"
    );
    assert!(
        !out.contains("all-2-printed"),
        "the output went on past the limit"
    );
    // The close is audited once the recording is finished.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (items, close) = loop {
        w.app.gateway().flush_audit().await;
        let events = w
            .admin
            .get("/api/v1/audit/events?kind=terminal&limit=100")
            .await
            .json();
        let items = events["items"].as_array().unwrap().clone();
        if let Some(c) = items.iter().find(|e| e["action"] == "terminal.close") {
            break (items.clone(), c.clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "{events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        close["reason"], "its recording reached the limit of 1 MiB",
        "{close}"
    );
    let bytes = close["details"]["recording"]["bytes"].as_u64().unwrap();
    let open = items
        .iter()
        .find(|e| e["action"] == "terminal.open" && e["outcome"] == "allowed")
        .unwrap();
    let cast = w
        .admin
        .get(&format!(
            "/api/v1/terminal/recordings/{}",
            open["id"].as_str().unwrap()
        ))
        .await
        .assert_status(200)
        .body;
    assert_eq!(cast.len() as u64, bytes);
    assert!(
        (1 << 20..(1 << 20) + 256 * 1024).contains(&bytes),
        "recording of {bytes} bytes"
    );
    // A new terminal starts a new recording: the limit is per terminal.
    let mut ws = w.open_for(&sally).await;
    until_control(&mut ws, "ready", Duration::from_secs(10)).await;
    ws.send(Message::Binary(b"echo again-$((6*7))\n".to_vec().into()))
        .await
        .unwrap();
    until_output(&mut ws, "again-42").await;
}

/// Someone without audit.read reads their own activity, terminal sessions included: whether
/// each recording may be replayed is decided without a refusal in the log per recording (a
/// page of fifty terminal events wrote fifty).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_ones_own_terminal_events_writes_no_refusal_per_recording() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    for _ in 0..3 {
        let mut ws = w.open_for(&sally).await;
        until_control(&mut ws, "ready", Duration::from_secs(10)).await;
        ws.send(Message::Binary(b"exit\n".to_vec().into()))
            .await
            .unwrap();
        until_control(&mut ws, "exit", Duration::from_secs(10)).await;
    }
    w.app.gateway().flush_audit().await;
    let refusals = || async {
        w.admin
            .get("/api/v1/audit/events?action=authorize:audit.read&outcome=denied&limit=200")
            .await
            .assert_status(200)
            .json()["items"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    let before = refusals().await;
    let own = sally
        .get("/api/v1/audit/events?kind=terminal&limit=100")
        .await
        .assert_status(200)
        .json();
    assert!(own["items"].as_array().unwrap().len() >= 3, "{own:#}");
    let after = refusals().await;
    assert!(
        after - before <= 1,
        "{before} refusals before, {after} after"
    );
}
