//! Several replicas on one PostgreSQL (skipped on SQLite, where Warden is one process): replica
//! B is a `TestApp` in this process holding the cluster's agent tunnel, replica A a real
//! `warden serve` child process on the same database.
//!
//! - A binding removed through A's REST API ends a `kubectl get -w` held on B within a second
//!   (`LISTEN/NOTIFY` on the authorization epoch; B's safety-net re-read is 5 s, too slow to
//!   pass), and from then on B refuses the user at once (no stale cached decision).
//! - The registry: both replicas are listed, the tunnel is recorded as B's while the agent is
//!   connected and cleared when it leaves; A does not mark B's cluster disconnected; a replica
//!   whose heartbeat stopped is removed with its tunnels.

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_server::gateway::testkit::Kubectl;
use warden_server::testing::{Client, TestApp, USER_PASSWORD};

const CLUSTER: &str = "shared-1";
const USER: &str = "sally@example.com";

fn on_postgres() -> bool {
    std::env::var("WARDEN_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty())
}

/// A `warden serve` process on `database_url`, killed when dropped.
struct WardenServe {
    url: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl WardenServe {
    async fn start(database_url: &str, extra: &[(&str, &str)]) -> WardenServe {
        let dir = tempfile::tempdir().expect("tempdir");
        let (http, gw) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{http}");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.arg("serve")
            .env("WARDEN_DATABASE_URL", database_url)
            .env("WARDEN_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("WARDEN_PUBLIC_URL", &url)
            .env("WARDEN_GATEWAY_ADDR", format!("127.0.0.1:{gw}"))
            .env(
                "WARDEN_GATEWAY_PUBLIC_URL",
                format!("https://127.0.0.1:{gw}"),
            )
            .env("WARDEN_DATA_DIR", dir.path().join("data"))
            .env("WARDEN_SITE_ROOT", dir.path().join("site"))
            .env("WARDEN_RATE_LIMIT_SIGN_IN", "100000")
            .env("WARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start warden serve");
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                eprintln!("[replica A] {line}");
            }
        });
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("warden serve ended: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "warden serve is not ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        WardenServe {
            url,
            _child: child,
            _dir: dir,
        }
    }

    async fn admin(&self) -> Client {
        let c = Client::new(&self.url, true);
        c.login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);
        c
    }
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .into_iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("a text column"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_one_replica_cuts_a_watch_on_another_within_a_second() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    // B: this process, holding the agent's tunnel.
    let (b, admin_b) = TestApp::spawn().await.with_admin().await;
    admin_b
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, agent) = b
        .cluster_with_agent(&admin_b, dir.path(), CLUSTER, "dev", &[], &["apple"])
        .await;
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before", "namespace": "apple"}}))
        .expect("configmap");
    let _ = b.user_client(&admin_b, USER).await;
    let binding = admin_b
        .bind_user(USER, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    let sally = b.client();
    sally.login(USER, USER_PASSWORD).await.assert_status(200);
    let kubeconfig = sally
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let kubectl = Kubectl::new(&dir.path().join("sally"), &kubeconfig);
    // B has decided for sally (and cached it).
    kubectl
        .run(&["get", "configmaps", "-n", "apple", "-o", "name"])
        .await
        .expect_ok();

    // A: another process on the same database, with no tunnel of its own.
    let a = WardenServe::start(&b.database_url, &[]).await;
    let admin_a = a.admin().await;
    let db = &b.services().db;
    let replica_b = b.state.replicas.as_ref().expect("B joined the replicas");
    let live = replica_b.live().await.expect("live replicas");
    assert_eq!(live.len(), 2, "{live:?}");
    let owners = scalar(db, "SELECT replica_id FROM cluster_tunnels").await;
    assert_eq!(owners, vec![replica_b.id().to_owned()]);

    let mut watch = kubectl
        .command(&["get", "configmaps", "-n", "apple", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl get -w");
    let mut out = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), out.next_line())
        .await
        .expect("the watch lists in time")
        .expect("read");
    assert_eq!(first.as_deref(), Some("configmap/before"));
    // The watch itself is open on B, not just its initial list.
    let start = Instant::now();
    while b.gateway().live.len() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no live watch on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let t = Instant::now();
    admin_a
        .delete(&format!("/api/v1/bindings/{binding}"))
        .await
        .assert_status(204);
    tokio::time::timeout(Duration::from_secs(1), watch.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the watch on B outlived a revocation made on A by {:?}",
                t.elapsed()
            )
        })
        .expect("kubectl ends");
    let cut_after = t.elapsed();
    // The notification arrived: B decides afresh, never from its cache.
    let refused = kubectl
        .run(&["get", "configmaps", "-n", "apple", "-o", "name"])
        .await;
    assert_ne!(refused.code, 0, "B still admits sally: {refused:?}");
    assert!(
        refused.stderr.contains("Forbidden") || refused.stderr.contains("forbidden"),
        "{refused:?}"
    );
    eprintln!("a revocation on replica A ended the watch on replica B after {cut_after:?}");

    // The agent leaves: its tunnel is no longer B's.
    agent.stop().await;
    let start = Instant::now();
    while b.state.clusters.is_connected(CLUSTER) {
        assert!(start.elapsed() < Duration::from_secs(10), "the agent stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("agent gone after {:?}", start.elapsed());
    let start = Instant::now();
    while !scalar(db, "SELECT replica_id FROM cluster_tunnels")
        .await
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the tunnel row outlived the agent's connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tunnels_are_recorded_per_replica_and_expire_with_its_heartbeat() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let fast = std::collections::BTreeMap::from([
        ("WARDEN_REPLICA_ID".to_owned(), "replica-b".to_owned()),
        ("WARDEN_REPLICA_ADDR".to_owned(), "10.0.0.2:8444".to_owned()),
        ("WARDEN_REPLICA_HEARTBEAT_MS".to_owned(), "200".to_owned()),
        ("WARDEN_REPLICA_TIMEOUT_MS".to_owned(), "1000".to_owned()),
    ]);
    let (b, admin_b) = TestApp::spawn_with(fast).await.with_admin().await;
    admin_b
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, _agent) = b
        .cluster_with_agent(&admin_b, dir.path(), CLUSTER, "dev", &[], &["apple"])
        .await;
    let db = &b.services().db;
    let cluster_id = scalar(
        db,
        &format!("SELECT id FROM clusters WHERE name = '{CLUSTER}'"),
    )
    .await
    .remove(0);
    // A replica with a short agent timeout: its sweeper runs its "no tunnel here" pass soon.
    let a = WardenServe::start(
        &b.database_url,
        &[
            ("WARDEN_REPLICA_ID", "replica-a"),
            ("WARDEN_REPLICA_HEARTBEAT_MS", "200"),
            ("WARDEN_REPLICA_TIMEOUT_MS", "1000"),
            ("WARDEN_AGENT_HEARTBEAT_MS", "200"),
            ("WARDEN_AGENT_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let replica_b = b.state.replicas.as_ref().expect("B joined the replicas");
    assert_eq!(replica_b.id(), "replica-b");
    let owner = replica_b
        .owner_of(&cluster_id)
        .await
        .expect("owner")
        .expect("an owner");
    assert_eq!(owner.id, "replica-b");
    assert_eq!(owner.internal_addr.as_deref(), Some("10.0.0.2:8444"));
    let ids: Vec<String> = replica_b
        .live()
        .await
        .expect("live")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["replica-a", "replica-b"]);
    // A has no tunnel of the cluster, yet leaves it connected: B holds it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = scalar(
        db,
        &format!("SELECT status FROM clusters WHERE id = '{cluster_id}'"),
    )
    .await;
    assert_eq!(
        status,
        vec!["connected"],
        "A marked B's cluster disconnected"
    );

    // A replica that stopped without leaving (killed): its row and its tunnels expire.
    db.execute_unprepared(&format!(
        "INSERT INTO replicas (id, internal_addr, started_at, heartbeat_at) VALUES ('replica-dead', NULL, 0, \
         (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint); \
         INSERT INTO cluster_tunnels (cluster_id, replica_id, connected_at) VALUES ('other-cluster', 'replica-dead', 0)"
    ))
    .await
    .expect("a replica about to die");
    assert_eq!(
        replica_b
            .owner_of("other-cluster")
            .await
            .expect("owner")
            .map(|r| r.id)
            .as_deref(),
        Some("replica-dead")
    );
    let start = Instant::now();
    loop {
        let left = scalar(
            db,
            "SELECT replica_id FROM cluster_tunnels WHERE replica_id = 'replica-dead' \
             UNION ALL SELECT id FROM replicas WHERE id = 'replica-dead'",
        )
        .await;
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the dead replica's rows outlived its heartbeat: {left:?}"
        );
        // Until removed, it is no owner once its heartbeat is older than the timeout.
        if start.elapsed() > Duration::from_millis(1100) {
            assert_eq!(
                replica_b.owner_of("other-cluster").await.expect("owner"),
                None
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
}
