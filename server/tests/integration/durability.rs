//! A request answered is a request audited, even if Warden is killed the next instant: a Warden
//! process serving kubesim through its gateway to 8 concurrent clients is killed with `SIGKILL`
//! at a random point; Warden started again on its database and data directory has an event for
//! every request the clients saw answered, and `warden audit verify` passes.
//!
//! The killed Warden is this test binary run again as a child process
//! ([`child_warden_serving_until_killed`]): the production start-up and router
//! ([`TestApp::spawn_on_data_dir`]), with the cluster imported directly, in a process of its own.
//!
//! Restarts under load ([`restarts_under_load`]): the real `warden serve` binary, a kubesim
//! cluster connected through an agent in a process of its own ([`child_agent_until_killed`]),
//! clients sending requests through the gateway while the agent is killed and started again and
//! Warden is stopped (`SIGTERM`), killed (`SIGKILL`) and started again; and a web terminal open
//! when Warden is killed gets its end recorded at the next start.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_server::gateway::testkit::Kubectl;
use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
use warden_server::testing::{fresh_database_url, Client, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD};

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
    warden_server::gateway::testkit::gateway_client_builder(kubeconfig)
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
        .query_one_raw(Statement::from_string(
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
        .query_one_raw(Statement::from_string(
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
    use warden_domain::audit::{verify_chain, ChainStatus};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let (stored, started, finished) = (
        journaled("kube.get"),
        journaled("kube.watch"),
        journaled("kube.list"),
    );
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
            conn.query_all_raw(Statement::from_string(
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

/// A gateway event as the journal keeps it (an anonymous, allowed `action`).
fn journaled(action: &str) -> warden_domain::audit::AuditEvent {
    use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
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
}

/// A journal segment the last run never filled can hold events long since stored and then
/// deleted by retention: the restart must not bring them back. What retention keeps is still
/// restored.
#[tokio::test]
async fn journal_replay_does_not_bring_back_what_retention_deleted() {
    use warden_domain::audit::journal::AuditJournal;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let (first, admin) = TestApp::spawn_on_data_dir(&db, &data)
        .await
        .with_admin()
        .await;
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 30}))
        .await
        .assert_status(200);
    let now = first.services().clock.now();
    let mut first = first;
    first.keep_database();
    drop(admin);
    drop(first);

    let (deleted, recent) = (journaled("kube.get"), journaled("kube.list"));
    let journal_dir = data.join("audit-journal");
    let journal = AuditJournal::open(&journal_dir).expect("journal");
    journal.end(
        &deleted,
        warden_domain::clock::Timestamp(now.millis() - 40 * 86_400_000),
    );
    let ticket = journal.end(&recent, now);
    journal.wait(ticket).await.expect("durable");
    drop(journal);

    let app = TestApp::spawn_on_data_dir(&db, &data).await;
    let count = |id: String| {
        let conn = app.services().db.clone();
        async move {
            conn.query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT id FROM audit_events WHERE id = '{id}'"),
            ))
            .await
            .expect("rows")
            .len()
        }
    };
    assert_eq!(count(deleted.id.to_string()).await, 0, "brought back");
    assert_eq!(count(recent.id.to_string()).await, 1, "not restored");
}

// ---------------------------------------------------------------------------------------------
// Restarts under load: the agent killed and started again, Warden stopped (SIGTERM) and killed
// (SIGKILL) and started again, while clients keep sending requests through the gateway.
// ---------------------------------------------------------------------------------------------

/// The agent the restart tests kill: run as `warden-agent --kubeconfig --manifest` runs it
/// (its credential kept in the state file next to the manifest), with a short reconnect
/// backoff, in a process of its own. Runs only as the child of those tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the restart load tests"]
async fn child_agent_until_killed() {
    let (Some(kubeconfig), Some(manifest)) = (
        env("DURABLE_AGENT_KUBECONFIG"),
        env("DURABLE_AGENT_MANIFEST"),
    ) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clients = warden_agent::kube_clients(Some(Path::new(&kubeconfig)), None)
        .await
        .expect("the agent's kube clients");
    let opts = warden_agent::Options {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        stable_after: Duration::from_secs(1),
        ..Default::default()
    };
    let agent = warden_agent::Agent::new(clients, warden_agent::Store::file(&manifest, None), opts);
    let end = agent.run(std::future::pending::<()>()).await;
    panic!("the agent ended by itself: {end:?}");
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Answers with 200 (the whole body read).
    ok: AtomicUsize,
    /// Other answers from Warden (502 or 503 while the agent is away), by status.
    other: std::sync::Mutex<std::collections::BTreeMap<u16, usize>>,
    /// Answers whose headers arrived but whose body was cut (a kill mid-answer): answered,
    /// so audited (the start is journaled before the headers go out).
    cut_body: AtomicUsize,
    /// Requests that may have reached Warden but got no answer (the connection died under
    /// them): they may or may not be in the log.
    no_answer: AtomicUsize,
    /// Connections refused (Warden down): never reached it.
    refused: AtomicUsize,
}

impl Tally {
    fn other(&self) -> usize {
        self.other.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
    /// Every request the clients saw an answer to.
    fn answered(&self) -> usize {
        self.ok.load(Ordering::SeqCst) + self.other() + self.cut_body.load(Ordering::SeqCst)
    }
}

/// A `warden serve` child process and the pieces a restart needs.
struct Stack {
    dir: std::path::PathBuf,
    db: String,
    data: std::path::PathBuf,
    http: String,
    gateway: String,
    starts: usize,
}

/// A loopback address nothing listens on now (the suite's one port allocator: a port read
/// from a bind to port 0 could meanwhile be another test's outgoing connection's).
fn free_addr() -> String {
    format!("127.0.0.1:{}", crate::support::free_port())
}

impl Stack {
    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `warden serve` on the same database, data directory and ports; returns when it is ready.
    async fn start_warden(&mut self) -> tokio::process::Child {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("warden-{}.log", self.starts)))
            .expect("log file");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("serve")
            .env("WARDEN_DATABASE_URL", &self.db)
            .env("WARDEN_DATA_DIR", &self.data)
            .env("WARDEN_HTTP_ADDR", &self.http)
            .env("WARDEN_PUBLIC_URL", self.url())
            .env("WARDEN_GATEWAY_ADDR", &self.gateway)
            .env(
                "WARDEN_GATEWAY_PUBLIC_URL",
                format!("https://{}", self.gateway),
            )
            .env("WARDEN_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("WARDEN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("WARDEN_SITE_ROOT", self.dir.join("site"))
            .env("WARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start warden serve");
        let ready = format!("{}/readyz", self.url());
        let start = std::time::Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&ready).await {
                if r.status() == reqwest::StatusCode::OK {
                    return child;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "warden serve ended before it was ready ({status}): {}",
                    std::fs::read_to_string(self.dir.join(format!("warden-{}.log", self.starts)))
                        .unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "warden serve is not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent, a child process of its own (see [`child_agent_until_killed`]).
    fn start_agent(&self) -> tokio::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("log file");
        tokio::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "durability::child_agent_until_killed",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "DURABLE_AGENT_KUBECONFIG",
                self.dir.join("agent.kubeconfig"),
            )
            .env("DURABLE_AGENT_MANIFEST", self.dir.join("sim.manifest.yaml"))
            .env("WARDEN_AGENT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the agent")
    }
}

/// Stop a child: `SIGTERM` (and wait for its orderly end) or `SIGKILL`.
async fn stop(child: &mut tokio::process::Child, graceful: bool) {
    if graceful {
        let pid = child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("warden serve stops after SIGTERM")
            .expect("wait");
        assert!(status.success(), "warden serve ended with {status}");
    } else {
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("the child ends");
    }
}

/// Wait until `f` holds (the load keeps going meanwhile).
async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The restart scenario: `clients` clients send requests through the gateway; at least
/// `per_phase` of them are answered 200 between each step: the agent killed (503s while it is
/// away) and started again, Warden stopped with `SIGTERM` and started again, Warden killed with
/// `SIGKILL` and started again. Then every answered request is in the audit log (at most the
/// requests that got no answer are there besides), the journal is empty and
/// `warden audit verify` passes.
/// A `warden serve` child process set up as an operator would: a project, a kubesim cluster
/// imported and its manifest applied, the agent (a child process) connected; a user with
/// `NAMESPACE_ADMIN` on `apple` and their kubeconfig.
struct World {
    dir: tempfile::TempDir,
    sim: kubesim::KubeSim,
    stack: Stack,
    warden: tokio::process::Child,
    agent: tokio::process::Child,
    user: Client,
    kubeconfig: String,
}

async fn world() -> World {
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
    let mut stack = Stack {
        dir: dir.path().to_owned(),
        db,
        data,
        http: free_addr(),
        gateway: free_addr(),
        starts: 0,
    };
    let warden = stack.start_warden().await;

    let admin = Client::for_url(&stack.url());
    admin
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(200);
    admin
        .post(
            "/api/v1/me/password",
            json!({"current_password": ADMIN_PASSWORD, "new_password": "the admin's new password"}),
        )
        .await
        .assert_status(204);
    admin
        .post("/api/v1/projects", json!({"name": "durable"}))
        .await
        .assert_status(201);
    let manifest_path =
        warden_server::gateway::testkit::import_cluster(&admin, dir.path(), "sim", "durable", &[])
            .await;
    Kubectl::new(&dir.path().join("ops"), &sim.admin_kubeconfig())
        .run(&["apply", "-f", manifest_path.to_str().expect("UTF-8")])
        .await
        .expect_ok();
    let token = sim
        .service_account_token("warden-system", "warden-agent", Duration::from_secs(3600))
        .expect("the agent's token");
    std::fs::write(
        dir.path().join("agent.kubeconfig"),
        sim.kubeconfig_for_token(&token),
    )
    .expect("the agent's kubeconfig");
    let agent = stack.start_agent();
    admin
        .post(
            "/api/v1/users",
            json!({"email": USER, "name": "durable", "password": "first password for tests"}),
        )
        .await
        .assert_status(201);
    let user = Client::for_url(&stack.url());
    user.login(USER, "first password for tests")
        .await
        .assert_status(200);
    user.post("/api/v1/me/password", json!({"current_password": "first password for tests", "new_password": "a user's own password"}))
        .await
        .assert_status(204);
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": USER}, "role": "NAMESPACE_ADMIN", "project": "durable", "namespaces": ["apple"]}))
        .await
        .assert_status(201);
    let kubeconfig = user.get("/api/v1/kubeconfig").await.assert_status(200).body;
    World {
        dir,
        sim,
        stack,
        warden,
        agent,
        user,
        kubeconfig,
    }
}

/// Warden again in this process, on what the `warden serve` children left (the journal
/// replayed before it serves), and `warden audit verify` run on it.
async fn replayed_and_verified(stack: &Stack) -> TestApp {
    let app = TestApp::spawn_on_data_dir(&stack.db, &stack.data).await;
    let left: Vec<_> = std::fs::read_dir(stack.data.join("audit-journal"))
        .expect("the journal directory")
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "journal segments left: {left:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "verify"])
        .env("WARDEN_DATABASE_URL", &stack.db)
        .env("WARDEN_DATA_DIR", &stack.data)
        .env("WARDEN_LOG", "error")
        .output()
        .expect("run warden");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app
}

/// The restart scenario: `clients` clients send requests through the gateway; at least
/// `per_phase` of them are answered 200 between each step: the agent killed (502/503s while it
/// is away) and started again, Warden stopped with `SIGTERM` and started again, Warden killed
/// with `SIGKILL` and started again. Then every answered request is in the audit log (at most
/// the requests that got no answer are there besides), the journal is empty and
/// `warden audit verify` passes.
async fn restarts_under_load(per_phase: usize, clients: usize) {
    let World {
        dir: _dir,
        sim: _sim,
        mut stack,
        mut warden,
        mut agent,
        user: _user,
        kubeconfig,
    } = world().await;
    let client = gateway_client(&kubeconfig);
    let url = format!(
        "https://{}/clusters/sim/api/v1/namespaces/apple/configmaps/c",
        stack.gateway
    );
    let tally = Arc::new(Tally::default());
    let halt = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, tally, halt) =
                (client.clone(), url.clone(), tally.clone(), halt.clone());
            tokio::spawn(async move {
                while !halt.load(Ordering::SeqCst) {
                    let r = match client.get(&url).send().await {
                        Ok(r) => r,
                        Err(e) if e.is_connect() => {
                            tally.refused.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        Err(_) => {
                            tally.no_answer.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    };
                    let status = r.status();
                    if r.bytes().await.is_err() {
                        tally.cut_body.fetch_add(1, Ordering::SeqCst);
                    } else if status == reqwest::StatusCode::OK {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        if let Ok(mut m) = tally.other.lock() {
                            *m.entry(status.as_u16()).or_default() += 1;
                        }
                        // Warden answered at once (the agent is away): not a busy loop.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    let ok = || tally.ok.load(Ordering::SeqCst);
    let phase = Duration::from_secs(60 + per_phase as u64 / 20);
    until("the first answers", phase, || ok() >= per_phase).await;

    // The agent is killed: the requests on its tunnel are cut, the next ones are refused by
    // Warden (502/503: the cluster cannot be reached); then it starts again and reconnects.
    stop(&mut agent, false).await;
    let before = tally.other();
    until("502s or 503s while the agent is away", phase, || {
        tally.other() >= before + 20
    })
    .await;
    let mut agent = stack.start_agent();
    let mark = ok();
    until("answers through the new agent", phase, || {
        ok() >= mark + per_phase
    })
    .await;

    // Warden stopped in order and started again; the agent reconnects to it.
    stop(&mut warden, true).await;
    let mut warden = stack.start_warden().await;
    let mark = ok();
    until("answers after a SIGTERM and a restart", phase, || {
        ok() >= mark + per_phase
    })
    .await;

    // Warden killed and started again.
    stop(&mut warden, false).await;
    let mut warden = stack.start_warden().await;
    let mark = ok();
    until("answers after a SIGKILL and a restart", phase, || {
        ok() >= mark + per_phase
    })
    .await;

    halt.store(true, Ordering::SeqCst);
    for c in load {
        c.await.expect("client");
    }
    stop(&mut warden, true).await;
    stop(&mut agent, false).await;

    // Warden again, on what the last one left (its journal replayed before it serves).
    let app = replayed_and_verified(&stack).await;
    let conn = &app.services().db;
    let count = |filter: &str| {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'kube_api' AND resource_name = 'c'{filter}"
        );
        async move {
            let row = conn
                .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .expect("count")
                .expect("a row");
            row.try_get::<i64>("", "n").expect("n") as usize
        }
    };
    let recorded = count("").await;
    let restored = count(" AND details LIKE '%end_not_recorded%'").await;
    let recorded_ok = count(" AND status = 200").await;
    let answered = tally.answered();
    let no_answer = tally.no_answer.load(Ordering::SeqCst);
    let other = tally.other.lock().map(|m| m.clone()).unwrap_or_default();
    let summary = format!(
        "{answered} answered ({} × 200, others {other:?}, {} cut mid-body), {no_answer} without an answer, {} refused connections; {recorded} kube_api events ({recorded_ok} × 200, {restored} restored from a journaled start)",
        tally.ok.load(Ordering::SeqCst),
        tally.cut_body.load(Ordering::SeqCst),
        tally.refused.load(Ordering::SeqCst),
    );
    eprintln!("{summary}");
    assert!(
        other.keys().all(|s| matches!(s, 502 | 503)),
        "while the agent was away Warden answered 502 or 503, nothing else: {summary}"
    );
    // Every answer the clients saw is in the log...
    assert!(
        recorded >= answered,
        "answered requests are missing from the audit log: {summary}"
    );
    // ...and nothing else but requests that got no answer (cut by a kill).
    assert!(
        recorded <= answered + no_answer,
        "more events than requests: {summary}"
    );
    assert!(recorded_ok >= tally.ok.load(Ordering::SeqCst), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_warden_restarts_under_load_lose_no_answered_request() {
    restarts_under_load(60, 6).await;
}

/// The same at scale (a benchmark-sized run, not part of the suite): `WARDEN_LOAD_REQUESTS`
/// answers 200 in all (default 20000, split over the four phases), `WARDEN_LOAD_CLIENTS`
/// concurrent clients (default 32).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "large scale: cargo test -p server --test integration restarts_under_load_at_scale -- --ignored"]
async fn restarts_under_load_at_scale() {
    let n: usize = env("WARDEN_LOAD_REQUESTS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let clients: usize = env("WARDEN_LOAD_CLIENTS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    restarts_under_load((n / 4).max(1), clients).await;
}

/// A web terminal open when its Warden is killed: the next start records its end, saying the
/// terminal ended with Warden's stop, linked to the terminal (its id, its opening's recording).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_open_when_warden_is_killed_gets_its_end_recorded() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let World {
        dir: _dir,
        sim,
        stack,
        mut warden,
        mut agent,
        user,
        kubeconfig: _,
    } = world().await;
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box", "namespace": "apple"}, "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}))
        .expect("pod");
    let mut req = format!(
        "ws://{}/api/v1/terminal/ws?cluster=sim&namespace=apple&pod=box",
        stack.http
    )
    .into_client_request()
    .expect("request");
    req.headers_mut()
        .insert("origin", stack.url().parse().expect("origin"));
    req.headers_mut().insert(
        "cookie",
        format!(
            "warden_session={}",
            user.session_cookie().expect("a session")
        )
        .parse()
        .expect("cookie"),
    );
    let tcp = tokio::net::TcpStream::connect(&stack.http)
        .await
        .expect("connect");
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .expect("in time")
    .expect("a terminal");
    let mut ready = None;
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ready.is_none() || !out.contains("42") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "ready" {
                    ready = Some(v);
                    ws.send(Message::Binary(b"echo $((6*7))\n".to_vec().into()))
                        .await
                        .expect("send");
                }
            }
            Ok(Some(Ok(Message::Binary(b)))) => out.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(_))) => {}
            other => panic!("the terminal did not open and answer: {other:?} {out}"),
        }
    }
    let terminal_id = ready.expect("ready")["terminal_id"]
        .as_u64()
        .expect("terminal_id");

    // Killed with the terminal open: nothing of Warden's gets to record its end.
    stop(&mut warden, false).await;
    stop(&mut agent, false).await;
    drop(ws);

    let app = replayed_and_verified(&stack).await;
    let conn = &app.services().db;
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT id, action, outcome, reason, details FROM audit_events WHERE kind = 'terminal' ORDER BY seq".to_owned(),
        ))
        .await
        .expect("rows");
    let events: Vec<(String, String, String, Option<String>, serde_json::Value)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "id").expect("id"),
                r.try_get("", "action").expect("action"),
                r.try_get("", "outcome").expect("outcome"),
                r.try_get("", "reason").expect("reason"),
                serde_json::from_str(&r.try_get::<String>("", "details").expect("details"))
                    .expect("json"),
            )
        })
        .collect();
    let opened: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "terminal.open" && e.2 == "allowed")
        .collect();
    assert_eq!(opened.len(), 1, "{events:#?}");
    let closed: Vec<_> = events.iter().filter(|e| e.1 == "terminal.close").collect();
    assert_eq!(
        closed.len(),
        1,
        "one end, recorded at the start: {events:#?}"
    );
    let (close_id, _, outcome, reason, details) = closed[0];
    assert_eq!(outcome, "error");
    assert_eq!(
        reason.as_deref(),
        Some(warden_server::terminal::ENDED_WITH_WARDEN)
    );
    assert_eq!(details["terminal_id"].as_u64(), Some(terminal_id));
    assert_eq!(details["recording"]["id"], json!(opened[0].0));
    assert_eq!(details["ended_with_warden"], json!(true));
    assert_eq!(details["end_not_recorded"], json!(true));

    // The audit page's terminal links find it: the opening's "same terminal" lists the end.
    let admin = Client::for_url(&app.url);
    admin
        .login(ADMIN_EMAIL, "the admin's new password")
        .await
        .assert_status(200);
    let detail = admin
        .get(&format!("/api/v1/audit/events/{}", opened[0].0))
        .await
        .assert_status(200)
        .json();
    assert!(
        detail["same_terminal"]
            .as_array()
            .expect("same_terminal")
            .iter()
            .any(|e| e["id"] == json!(close_id)),
        "{detail:#}"
    );
}
