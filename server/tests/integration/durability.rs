//! A request answered is a request audited, even if Warden is killed the next instant: a Warden
//! process serving kubesim through its gateway to 8 concurrent clients is killed with `SIGKILL`
//! at a random point; Warden started again on its database and data directory has an event for
//! every request the clients saw answered, and `warden audit verify` passes.
//!
//! The killed Warden is this test binary run again as a child process
//! ([`child_warden_serving_until_killed`]): the production start-up and router
//! ([`TestApp::spawn_on_data_dir`]), with the cluster imported directly, in a process of its own.

use base64::Engine;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
use warden_server::testing::{fresh_database_url, TestApp};

const USER: &str = "durable@example.com";
const CLIENTS: usize = 8;
const READY: &str = "DURABLE_READY ";

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The Warden the test kills: set up, then serve until the process dies. Runs only as the
/// child of [`a_sigkill_under_load_loses_no_answered_request`] (it returns at once otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_sigkill_under_load_loses_no_answered_request"]
async fn child_warden_serving_until_killed() {
    let (Some(db), Some(data), Some(url), Some(ca_pem), Some(token)) = (
        env("DURABLE_DATABASE_URL"),
        env("DURABLE_DATA_DIR"),
        env("DURABLE_SIM_URL"),
        env("DURABLE_SIM_CA"),
        env("DURABLE_SIM_TOKEN"),
    ) else {
        return;
    };
    let (app, admin) = TestApp::spawn_on_data_dir(&db, Path::new(&data))
        .await
        .with_admin()
        .await;
    admin
        .post("/api/v1/projects", json!({"name": "durable"}))
        .await
        .assert_status(201);
    app.import_direct_cluster(
        "sim",
        "durable",
        &[],
        DirectEndpoint {
            url,
            ca_pem,
            credential: DirectCredential::Bearer(token),
        },
    )
    .await;
    let user = app.user_client(&admin, USER).await;
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": USER}, "role": "NAMESPACE_ADMIN", "project": "durable", "namespaces": ["apple"]}))
        .await
        .assert_status(201);
    let kubeconfig = user.get("/api/v1/kubeconfig").await.assert_status(200).body;
    std::fs::write(Path::new(&data).join("kubeconfig.yaml"), kubeconfig).expect("kubeconfig");
    println!("{READY}{}", app.gateway_url);
    std::future::pending::<()>().await;
}

/// A client of the gateway with the kubeconfig's certificate.
fn gateway_client(kubeconfig: &str) -> reqwest::Client {
    let doc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).expect("yaml");
    let b64 = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("b64"))
            .expect("base64")
    };
    let u = &doc["users"][0]["user"];
    let mut identity = b64(&u["client-certificate-data"]);
    identity.extend(b64(&u["client-key-data"]));
    let ca = b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]);
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_answered_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apple"}}))
        .expect("namespace");
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apple"}, "data": {"k": "v"}}))
        .expect("configmap");

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "durability::child_warden_serving_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DURABLE_DATABASE_URL", &db)
        .env("DURABLE_DATA_DIR", &data)
        .env("DURABLE_SIM_URL", sim.url())
        .env("DURABLE_SIM_CA", sim.ca_pem())
        .env("DURABLE_SIM_TOKEN", sim.admin_token())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child Warden");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let gateway_url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("read the child") {
            if let Some(url) = line.strip_prefix(READY) {
                return url.to_owned();
            }
        }
        panic!("the child Warden ended before it was ready")
    })
    .await
    .expect("the child Warden is ready in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let kubeconfig = std::fs::read_to_string(data.join("kubeconfig.yaml")).expect("kubeconfig");
    let client = gateway_client(&kubeconfig);
    let url = format!("{gateway_url}/clusters/sim/api/v1/namespaces/apple/configmaps/c");
    let answered = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            let (answered, unexpected, stop) = (answered.clone(), unexpected.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(r) = client.get(&url).send().await else {
                        break;
                    };
                    let status = r.status();
                    // Answered: the whole answer arrived.
                    if r.bytes().await.is_err() {
                        break;
                    }
                    if status == reqwest::StatusCode::OK {
                        answered.fetch_add(1, Ordering::SeqCst);
                    } else {
                        unexpected.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Killed at a random point, under load.
    let kill_at = 100 + (uuid::Uuid::new_v4().as_u128() % 200) as usize;
    tokio::time::timeout(Duration::from_secs(60), async {
        while answered.load(Ordering::SeqCst) < kill_at {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    })
    .await
    .expect("the gateway answers");
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("the child ends");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    let answered = answered.load(Ordering::SeqCst);
    assert_eq!(unexpected.load(Ordering::SeqCst), 0, "only 200 answers");
    assert!(answered >= kill_at);

    // Warden again, on what the killed one left: the journal is replayed before it serves.
    let app = TestApp::spawn_on_data_dir(&db, &data).await;
    let conn = &app.services().db;
    let row = conn
        .query_one(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'kube_api' AND actor_name = '{USER}' AND resource_name = 'c'"),
        ))
        .await
        .expect("count")
        .expect("a row");
    let recorded = row.try_get::<i64>("", "n").expect("n") as usize;
    assert!(
        recorded >= answered,
        "{answered} requests were answered 200 before the SIGKILL but only {recorded} are in the audit log"
    );
    // None forged: at most the requests in flight at the kill are recorded unanswered.
    assert!(
        recorded <= answered + CLIENTS,
        "{recorded} events for {answered} answers"
    );
    // The journal was emptied into the database.
    let left: Vec<_> = std::fs::read_dir(data.join("audit-journal"))
        .expect("the journal directory")
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "journal segments left: {left:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "verify"])
        .env("WARDEN_DATABASE_URL", &db)
        .env("WARDEN_DATA_DIR", &data)
        .env("WARDEN_LOG", "error")
        .output()
        .expect("run warden");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let row = conn
        .query_one(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n FROM audit_events WHERE details LIKE '%end_not_recorded%'"
                .to_owned(),
        ))
        .await
        .expect("count")
        .expect("a row");
    let unfinished = row.try_get::<i64>("", "n").expect("n");
    eprintln!("SIGKILL after {answered} answered requests: {recorded} kube_api events recorded, {unfinished} of them restored from a start the journal had");
}

/// The replay at start, record by record: an event the database already has is not stored
/// twice, a start without its end becomes an event saying so, a torn record at the tail is
/// dropped, and the chain stays intact.
#[tokio::test]
async fn the_journal_is_replayed_once_and_a_torn_tail_is_dropped() {
    use warden_domain::audit::journal::{AuditJournal, END_NOT_RECORDED};
    use warden_domain::audit::{
        verify_chain, Actor, AuditEvent, AuditKind, ChainStatus, Outcome, SessionType,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let event = |action: &str| {
        AuditEvent::new(
            AuditKind::KubeApi,
            Actor::Anonymous {
                claimed: "replay".into(),
            },
            SessionType::Cli,
            action,
            Outcome::Allowed,
        )
        .status(200)
    };
    let (stored, started, finished) = (event("kube.get"), event("kube.watch"), event("kube.list"));
    let mut first = TestApp::spawn_on_data_dir(&db, &data).await;
    first
        .services()
        .audit
        .record(stored.clone())
        .await
        .expect("store");
    first.keep_database();
    drop(first);

    let journal_dir = data.join("audit-journal");
    let journal = AuditJournal::open(&journal_dir).expect("journal");
    let now = warden_domain::clock::Timestamp(1_700_000_000_000);
    journal.end(&stored, now);
    journal.begin(&started, now);
    journal.begin(&finished, now);
    let ticket = journal.end(&finished, now);
    journal.wait(ticket).await.expect("durable");
    drop(journal);
    // A write cut short by the crash.
    let segment = std::fs::read_dir(&journal_dir)
        .expect("journal dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "journal"))
        .expect("a segment");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("segment");
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3, 4, b'{']).expect("torn tail");
    drop(f);

    let app = TestApp::spawn_on_data_dir(&db, &data).await;
    let rows = |id: String| {
        let conn = app.services().db.clone();
        async move {
            conn.query_all(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT reason, details FROM audit_events WHERE id = '{id}'"),
            ))
            .await
            .expect("rows")
        }
    };
    assert_eq!(rows(stored.id.to_string()).await.len(), 1, "stored once");
    assert_eq!(rows(finished.id.to_string()).await.len(), 1);
    let open = rows(started.id.to_string()).await;
    assert_eq!(open.len(), 1);
    let reason: Option<String> = open[0].try_get("", "reason").expect("reason");
    assert_eq!(reason.as_deref(), Some(END_NOT_RECORDED));
    let details: String = open[0].try_get("", "details").expect("details");
    assert!(details.contains("\"end_not_recorded\":true"), "{details}");
    assert!(
        std::fs::read_dir(&journal_dir)
            .expect("journal dir")
            .next()
            .is_none(),
        "the replayed segments are deleted"
    );
    assert!(matches!(
        verify_chain(&app.services().db).await.expect("verify"),
        ChainStatus::Intact { .. }
    ));
}
