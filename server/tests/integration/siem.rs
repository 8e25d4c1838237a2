//! The SIEM stream: every committed audit event, in order, as Kubernetes-shaped JSON lines, to
//! a rotating file or a webhook, resuming from its persisted cursor.

use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_domain::audit::{
    siem as stream, Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType,
};
use warden_domain::entities::audit_events;
use warden_server::siem::{FileSink, Streamer, WebhookSink};
use warden_server::testing::TestApp;

const DAY_SECS: i64 = 86_400;

/// An event as the gateway writes it for `kubectl exec` refused with 403.
fn kube_event() -> AuditEvent {
    let mut ev = AuditEvent::new(
        AuditKind::KubeApi,
        Actor::System,
        SessionType::Cli,
        "kube.create",
        Outcome::Denied,
    )
    .reason("no binding allows pods/exec")
    .status(403)
    .request(RequestMeta {
        method: Some("POST".into()),
        path: Some("/clusters/prod/api/v1/namespaces/apple/pods/web-0/exec?command=sh".into()),
        source_ip: Some("127.0.0.1".into()),
        user_agent: Some("kubectl/v1.31".into()),
        request_id: None,
    });
    ev.cluster = Some("prod".into());
    ev.namespace = Some("apple".into());
    ev.resource_kind = Some("pods/exec".into());
    ev.resource_name = Some("web-0".into());
    ev.details = json!({"verb": "create", "api_group": "", "api_version": "v1", "resource": "pods", "subresource": "exec", "serial": "01"});
    ev
}

fn event(n: usize) -> AuditEvent {
    AuditEvent::new(
        AuditKind::System,
        Actor::System,
        SessionType::System,
        format!("test.event{n}"),
        Outcome::Allowed,
    )
}

async fn db_seqs(app: &TestApp) -> Vec<(i64, String)> {
    audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&app.services().db)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.id))
        .collect()
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn seq_of(v: &Value) -> i64 {
    v["annotations"]["warden.dev/seq"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every line of a rotated file set, oldest first.
fn read_rotated(path: &std::path::Path, keep: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in (1..=keep).rev() {
        let p = format!("{}.{i}", path.display());
        if let Ok(t) = std::fs::read_to_string(&p) {
            out.extend(parse_lines(&t));
        }
    }
    if let Ok(t) = std::fs::read_to_string(path) {
        out.extend(parse_lines(&t));
    }
    out
}

fn assert_same_events(lines: &[Value], rows: &[(i64, String)]) {
    let got: Vec<(i64, String)> = lines
        .iter()
        .map(|v| (seq_of(v), v["auditID"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, rows, "every committed event once, in order");
}

#[tokio::test]
async fn the_file_sink_receives_every_committed_event_in_the_kubernetes_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siem/audit.jsonl");
    let (app, admin) = TestApp::spawn_with(BTreeMap::from([
        (
            "WARDEN_SIEM_SINK".to_owned(),
            format!("file:{}", path.display()),
        ),
        ("WARDEN_SIEM_POLL_MS".to_owned(), "20".to_owned()),
    ]))
    .await
    .with_admin()
    .await;
    admin
        .post("/api/v1/projects", json!({"name": "shop"}))
        .await
        .assert_status(201);
    let kube = kube_event();
    let kube_id = kube.id.to_string();
    app.services().audit.record(kube).await.unwrap();
    let rows = db_seqs(&app).await;
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = read_rotated(&path, 5);
        if lines.len() >= rows.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_same_events(&lines, &rows);
    for v in &lines {
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["kind"], "Event");
        assert!(v["stageTimestamp"].is_string() && v["user"]["username"].is_string());
    }
    let create = lines
        .iter()
        .find(|v| v["annotations"]["warden.dev/action"] == "project.create")
        .expect("the project's creation");
    assert!(create.get("verb").is_none(), "{create}");
    let k = lines
        .iter()
        .find(|v| v["auditID"] == kube_id.as_str())
        .unwrap();
    assert_eq!(k["verb"], "create");
    assert_eq!(
        k["objectRef"],
        json!({"resource": "pods", "subresource": "exec", "namespace": "apple", "name": "web-0", "apiVersion": "v1"})
    );
    assert_eq!(k["responseStatus"]["code"], 403);
    assert_eq!(k["sourceIPs"], json!(["127.0.0.1"]));
    assert_eq!(k["annotations"]["warden.dev/cluster"], "prod");
    assert_eq!(k["annotations"]["warden.dev/outcome"], "denied");
    assert_eq!(k["annotations"]["authorization.k8s.io/decision"], "forbid");
    // Nothing secret: no password, session or key material from the sign-in and the change.
    let all = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        "first-admin-password",
        "the admin's new password",
        "warden_session",
    ] {
        assert!(!all.contains(secret), "{secret} leaked into the stream");
    }
    // (The counter moves just after the line is written: read until it has.)
    let want = format!("warden_siem_events_total {}", rows.len());
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.client().get("/metrics").await.body;
        if metrics.contains(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(&want), "{metrics}");
    assert!(metrics.contains("warden_siem_dropped_total 0"), "{metrics}");
}

#[tokio::test]
async fn the_file_rotates_and_a_restart_resumes_from_the_cursor() {
    let (app, _admin) = TestApp::spawn().await.with_admin().await;
    let svc = app.services().clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    for n in 0..30 {
        svc.audit.record(event(n)).await.unwrap();
    }
    let mut first = Streamer::new(
        svc.clone(),
        Box::new(FileSink::new(path.clone(), 4096, 50)),
        7,
    );
    first.drain().await.unwrap();
    assert_same_events(&read_rotated(&path, 50), &db_seqs(&app).await);
    // "Restart": a new streamer and file handle; what it writes continues the file set.
    drop(first);
    for n in 30..60 {
        svc.audit.record(event(n)).await.unwrap();
    }
    let mut second = Streamer::new(
        svc.clone(),
        Box::new(FileSink::new(path.clone(), 4096, 50)),
        7,
    );
    second.drain().await.unwrap();
    let lines = read_rotated(&path, 50);
    assert_same_events(&lines, &db_seqs(&app).await);
    assert!(
        std::path::Path::new(&format!("{}.2", path.display())).exists(),
        "the file was rotated"
    );
    for i in 1..=50 {
        if let Ok(m) = std::fs::metadata(format!("{}.{i}", path.display())) {
            assert!(m.len() <= 4096, "rotated files stay within the size");
        }
    }

    // Only `keep` rotated files stay.
    stream::save_cursor(&svc.db, 0, svc.clock.now())
        .await
        .unwrap();
    let small = dir.path().join("small.jsonl");
    let mut third = Streamer::new(
        svc.clone(),
        Box::new(FileSink::new(small.clone(), 2048, 2)),
        5,
    );
    third.drain().await.unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("small"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!std::path::Path::new(&format!("{}.3", small.display())).exists());
}

#[derive(Default)]
struct Receiver {
    fail_first: u32,
    calls: u32,
    bodies: Vec<String>,
    auth: Vec<String>,
}

#[tokio::test]
async fn the_webhook_is_retried_until_the_receiver_accepts() {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    let (app, _admin) = TestApp::spawn().await.with_admin().await;
    let svc = app.services().clone();
    let recv = Arc::new(Mutex::new(Receiver {
        fail_first: 2,
        ..Default::default()
    }));
    async fn ingest(
        State(r): State<Arc<Mutex<Receiver>>>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let mut r = r.lock().unwrap();
        r.calls += 1;
        if r.calls <= r.fail_first {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        r.auth.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        );
        assert_eq!(headers["content-type"], "application/x-ndjson");
        r.bodies.push(body);
        StatusCode::OK
    }
    let router = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(recv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });

    for n in 0..12 {
        svc.audit.record(event(n)).await.unwrap();
    }
    let sink = WebhookSink::new(
        format!("http://{addr}/ingest"),
        Some(warden_domain::secrets::Secret::new("siem-token")),
    )
    .unwrap();
    let streamer = Streamer::new(svc.clone(), Box::new(sink), 5);
    let stats = streamer.stats();
    let task = streamer.spawn(Duration::from_millis(20));
    let rows = db_seqs(&app).await;
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = recv
            .lock()
            .unwrap()
            .bodies
            .iter()
            .flat_map(|b| parse_lines(b))
            .collect();
        if lines.len() >= rows.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_same_events(&lines, &rows);
    let r = recv.lock().unwrap();
    assert!(r.calls >= 2 + rows.len().div_ceil(5) as u32);
    assert!(
        r.auth.iter().all(|a| a == "Bearer siem-token"),
        "{:?}",
        r.auth
    );
    assert_eq!(stats.failures.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn events_retention_deleted_before_delivery_are_counted_and_audited() {
    let (app, admin) = TestApp::spawn_with(BTreeMap::from([
        (
            "WARDEN_MASTER_KEY".to_owned(),
            "siem test master key".to_owned(),
        ),
        ("WARDEN_AUDIT_RETENTION_MIN_DAYS".to_owned(), "1".to_owned()),
    ]))
    .await
    .with_admin()
    .await;
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 7}))
        .await
        .assert_status(200);
    let svc = app.services().clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut s = Streamer::new(
        svc.clone(),
        Box::new(FileSink::new(path.clone(), 1 << 20, 1)),
        100,
    );
    s.drain().await.unwrap();
    for n in 0..5 {
        svc.audit.record(event(n)).await.unwrap();
    }
    app.clock.advance_secs(10 * DAY_SECS);
    warden_domain::audit::retention::run(&svc)
        .await
        .unwrap()
        .expect("a run");
    s.drain().await.unwrap();
    assert_eq!(
        s.stats().dropped.load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    let lines = read_rotated(&path, 1);
    let actions: Vec<&str> = lines
        .iter()
        .filter_map(|v| v["annotations"]["warden.dev/action"].as_str())
        .collect();
    assert!(actions.contains(&"audit.retention"), "{actions:?}");
    assert!(actions.contains(&"siem.dropped"), "{actions:?}");
    assert!(!actions.contains(&"test.event0"), "{actions:?}");
}
