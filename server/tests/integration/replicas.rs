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

use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_domain::ids::ClusterId;
use warden_server::gateway::testkit::Kubectl;
use warden_server::testing::{Client, TestApp, USER_PASSWORD};

use crate::support::{free_port, sql_strings};

const CLUSTER: &str = "shared-1";
const USER: &str = "sally@example.com";

fn on_postgres() -> bool {
    std::env::var("WARDEN_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty())
}

/// A `warden serve` process on `database_url`, killed when dropped.
struct WardenServe {
    url: String,
    gateway_url: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl WardenServe {
    async fn start(database_url: &str, extra: &[(&str, &str)]) -> WardenServe {
        Self::start_at(database_url, &format!("127.0.0.1:{}", free_port()), extra).await
    }

    /// Listening on `http` (`127.0.0.1:PORT`).
    async fn start_at(database_url: &str, http: &str, extra: &[(&str, &str)]) -> WardenServe {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = free_port();
        let url = format!("http://{http}");
        warden_server::testing::share_generated_key(database_url, &dir.path().join("data"));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.arg("serve")
            .env("WARDEN_DATABASE_URL", database_url)
            .env("WARDEN_HTTP_ADDR", http)
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
        warden_server::testing::remember_generated_key(database_url, &dir.path().join("data"));
        WardenServe {
            url,
            gateway_url: format!("https://127.0.0.1:{gw}"),
            child,
            _dir: dir,
        }
    }

    /// SIGKILL, and wait for the process to end.
    async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, and wait for a clean exit.
    async fn terminate(&mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("warden serve ends after SIGTERM")
            .expect("wait");
        assert!(exit.success(), "warden serve exited with {exit}");
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
    let owners = sql_strings(db, "SELECT replica_id FROM cluster_tunnels").await;
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
    while b.gateway().live.is_empty() {
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
        // The agent drains its open streams first (at most 20 s).
        assert!(start.elapsed() < Duration::from_secs(30), "the agent stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("agent gone after {:?}", start.elapsed());
    let start = Instant::now();
    while !sql_strings(db, "SELECT replica_id FROM cluster_tunnels")
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
    let cluster_id = ClusterId::parse(
        &sql_strings(
            db,
            &format!("SELECT id FROM clusters WHERE name = '{CLUSTER}'"),
        )
        .await
        .remove(0),
    )
    .expect("a cluster id");
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
        .owner_of(cluster_id)
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
    let status = sql_strings(
        db,
        &format!("SELECT status FROM clusters WHERE id = '{cluster_id}'"),
    )
    .await;
    assert_eq!(
        status,
        vec!["connected"],
        "A marked B's cluster disconnected"
    );

    // A fresh manifest, through A, while B holds the cluster's tunnel and its agent's
    // credential stands: refused as it would be on B, never a silent swap (only a revocation
    // frees a registered cluster for another key).
    let body = admin_b
        .get(&format!("/api/v1/clusters/{CLUSTER}/manifest"))
        .await
        .assert_status(200)
        .body;
    let mut settings = warden_agent::Settings::from_manifest(&body).expect("a manifest");
    settings.warden_url = a.url.clone();
    let token = settings.bootstrap_token.clone().expect("a token");
    let fp = _sim.kube_system_uid();
    match warden_agent::dial::challenge(&settings, &token, &fp).await {
        Err(warden_agent::dial::DialError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (403, "key_mismatch"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a manifest made after registration got a challenge, through A"),
    }
    assert_eq!(
        replica_b.owner_of(cluster_id).await.unwrap().unwrap().id,
        "replica-b"
    );

    // B cut off from the database past the timeout (a failover): A takes B's rows for a dead
    // replica's, tunnels included. B, back, claims the tunnel it still holds again, or A would
    // find no owner for the cluster until its agent reconnected.
    db.execute_unprepared(
        "DELETE FROM cluster_tunnels WHERE replica_id = 'replica-b'; DELETE FROM replicas WHERE id = 'replica-b'",
    )
    .await
    .expect("B's rows reaped");
    let reaped = Instant::now();
    while replica_b
        .owner_of(cluster_id)
        .await
        .expect("owner")
        .map(|r| r.id)
        .as_deref()
        != Some("replica-b")
    {
        assert!(
            reaped.elapsed() < Duration::from_secs(5),
            "B never claimed its tunnel again after its rows were reaped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The agent revoked through A: B, which holds its tunnel, closes it at once (the shared
    // authorization epoch moved), not at the agent's next heartbeat (10 s here).
    let key = admin_b.create_api_key(json!({"name": "ops"})).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/clusters/{CLUSTER}/agent/revoke", a.url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("revoke through A");
    assert_eq!(r.status(), 204);
    let revoked = Instant::now();
    while b.state.clusters.get_by_id(cluster_id).is_some() {
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "B kept the revoked agent's tunnel open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A replica that stopped without leaving (killed): its row and its tunnels expire.
    let other_cluster = ClusterId::new();
    db.execute_unprepared(&format!(
        "INSERT INTO replicas (id, internal_addr, started_at, heartbeat_at) VALUES ('replica-dead', NULL, 0, \
         (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint); \
         INSERT INTO cluster_tunnels (cluster_id, replica_id, connected_at) VALUES ('{other_cluster}', 'replica-dead', 0)"
    ))
    .await
    .expect("a replica about to die");
    assert_eq!(
        replica_b
            .owner_of(other_cluster)
            .await
            .expect("owner")
            .map(|r| r.id)
            .as_deref(),
        Some("replica-dead")
    );
    let start = Instant::now();
    loop {
        let left = sql_strings(
            db,
            "SELECT replica_id FROM cluster_tunnels WHERE replica_id = 'replica-dead' \
             UNION ALL SELECT id FROM replicas WHERE id = 'replica-dead'",
        )
        .await;
        if left.is_empty() {
            break;
        }
        assert!(
            // The timeout is 1 s and heartbeats come every 0.2 s; slack for a loaded machine.
            start.elapsed() < Duration::from_secs(10),
            "the dead replica's rows outlived its heartbeat: {left:?}"
        );
        // Until removed, it is no owner once its heartbeat is older than the timeout.
        if start.elapsed() > Duration::from_millis(1100) {
            assert_eq!(
                replica_b.owner_of(other_cluster).await.expect("owner"),
                None
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
}

const MASTER_KEY: &str = "the master key both replicas of this test share";

/// A kubectl process whose stdout lines are collected as they come.
struct Streaming {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: String,
}

impl Streaming {
    fn spawn(k: &Kubectl, args: &[&str]) -> Streaming {
        let mut child = k
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout"))
                as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut l = BufReader::new(out).lines();
                while let Ok(Some(line)) = l.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Streaming {
            child,
            lines,
            seen: String::new(),
        }
    }

    async fn expect_line(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.seen.contains(needle) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                _ => panic!("no {needle:?} in time; saw:\n{}", self.seen),
            }
        }
    }

    async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(line.as_bytes()).await.expect("write");
        stdin.write_all(b"\n").await.expect("write");
        stdin.flush().await.expect("flush");
    }
}

/// Replica X: this process (holding the agent's tunnel, reachable by the other replicas at
/// `WARDEN_REPLICA_ADDR`), project `dev`, the cluster with a connected agent and namespace
/// `apple`, sally a user and namespace admin of `apple`. Bind `dir`, `sim` and `_agent` when
/// destructuring (`sim: _sim`): a field left to `..` is dropped at the end of the statement.
struct ReplicaX {
    x: TestApp,
    /// X's internal address (`WARDEN_REPLICA_ADDR`).
    internal: String,
    admin_x: Client,
    dir: tempfile::TempDir,
    sim: kubesim::KubeSim,
    _agent: warden_server::gateway::testkit::RunningAgent,
    /// sally's binding.
    binding: String,
}

async fn replica_x() -> ReplicaX {
    let internal = format!("127.0.0.1:{}", free_port());
    let (x, admin_x) = TestApp::spawn_with(std::collections::BTreeMap::from([
        ("WARDEN_REPLICA_ID".to_owned(), "replica-x".to_owned()),
        ("WARDEN_REPLICA_ADDR".to_owned(), internal.clone()),
        ("WARDEN_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
    ]))
    .await
    .with_admin()
    .await;
    admin_x
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, agent) = x
        .cluster_with_agent(&admin_x, dir.path(), CLUSTER, "dev", &[], &["apple"])
        .await;
    let _ = x.user_client(&admin_x, USER).await;
    let binding = admin_x
        .bind_user(USER, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    ReplicaX {
        x,
        internal,
        admin_x,
        dir,
        sim,
        _agent: agent,
        binding,
    }
}

/// One raw hello on the internal channel at `addr`; the answer line.
async fn hello_answer(addr: &str, line: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(line.as_bytes()).await.expect("write");
    let mut answer = String::new();
    let mut r = BufReader::new(s);
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut answer)).await;
    answer.trim_end().to_owned()
}

/// The first line the replica at `addr` answers to `line`, sent inside the channel's TLS as
/// a holder of `key` (empty: the handshake failed or nothing came back).
async fn hello_answer_tls(
    addr: &str,
    key: &warden_server::replicas::forward::InternalKey,
    line: &str,
) -> String {
    use tokio::io::AsyncWriteExt;
    let Ok(mut s) = warden_server::replicas::forward::connect(addr, key).await else {
        return String::new();
    };
    if s.write_all(line.as_bytes()).await.is_err() || s.flush().await.is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let mut r = BufReader::new(s);
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut answer)).await;
    answer.trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_through_one_replica_reaches_an_agent_on_another() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    // X: this process, holding the agent's tunnel, reachable by the other replicas.
    let ReplicaX {
        x,
        internal,
        dir,
        sim: _sim,
        _agent,
        ..
    } = replica_x().await;

    // Y: a `warden serve` without a tunnel; sally signs in there and uses its gateway.
    let y_internal = format!("127.0.0.1:{}", free_port());
    let y = WardenServe::start(
        &x.database_url,
        &[
            ("WARDEN_REPLICA_ID", "replica-y"),
            ("WARDEN_REPLICA_ADDR", &y_internal),
            ("WARDEN_MASTER_KEY", MASTER_KEY),
        ],
    )
    .await;
    let sally = Client::new(&y.url, true);
    sally.login(USER, USER_PASSWORD).await.assert_status(200);
    let kubeconfig = sally
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    assert!(
        kubeconfig.contains(&y.gateway_url) && !kubeconfig.contains(&x.gateway_url),
        "the kubeconfig points at Y's gateway"
    );
    let k = Kubectl::new(&dir.path().join("sally"), &kubeconfig);
    let ticker = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sh\", \"-c\", {ticker:?}]\n"
    );
    k.run_with_stdin(&["apply", "-n", "apple", "-f", "-"], Some(&pod))
        .await
        .expect_ok();
    // get
    let got = k.run(&["get", "pods", "-n", "apple", "-o", "name"]).await;
    got.clone().expect_ok();
    assert!(got.stdout.contains("pod/box"), "{got:?}");
    // watch
    let mut watch = Streaming::spawn(
        &k,
        &["get", "configmaps", "-n", "apple", "-w", "-o", "name"],
    );
    // logs -f
    let mut logs = Streaming::spawn(&k, &["logs", "-f", "-n", "apple", "box"]);
    // exec -i: bytes both ways
    let mut exec = Streaming::spawn(
        &k,
        &[
            "exec",
            "-i",
            "-n",
            "apple",
            "box",
            "--",
            "sh",
            "-c",
            "while read l; do echo exec:$l; done",
        ],
    );
    k.run(&["create", "configmap", "-n", "apple", "through-y"])
        .await
        .expect_ok();
    watch.expect_line("configmap/through-y").await;
    logs.expect_line("tick 2").await;
    exec.send("one").await;
    exec.expect_line("exec:one").await;
    exec.send("two").await;
    exec.expect_line("exec:two").await;
    // Y forwarded: it holds no tunnel, and the streams are still going.
    let owner = x
        .state
        .replicas
        .as_ref()
        .expect("replicas")
        .owner_of(owner_cluster_id(&x).await)
        .await
        .expect("owner")
        .expect("an owner");
    assert_eq!(owner.id, "replica-x");
    for s in [&mut watch, &mut logs, &mut exec] {
        assert!(
            matches!(s.child.try_wait(), Ok(None)),
            "a stream ended: {}",
            s.seen
        );
    }
    drop((watch, logs, exec));

    // Forged requests on X's internal channel: refused and audited.
    use warden_server::replicas::forward::{hello, Hello, InternalKey};
    let cluster_id = owner_cluster_id(&x).await.to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    // The channel's key derives from the data key the master key opens.
    let data_key = warden_server::startup::data_key(
        &x.services().db,
        &warden_domain::secrets::Secret::new(MASTER_KEY),
    )
    .await
    .unwrap();
    let right = InternalKey::from_master(&data_key);
    let wrong = InternalKey::from_master(&warden_domain::secrets::Secret::new("a guessed key"));
    let to = |target, at_ms, nonce| Hello {
        cluster_id: &cluster_id,
        origin: "replica-y",
        target,
        at_ms,
        nonce,
    };
    let http = format!("GET /api/v1/namespaces HTTP/1.1\r\nHost: {internal}\r\n\r\n");
    // In the clear (someone on the network between replicas): answered by a TLS alert (0x15)
    // or nothing, never by the channel.
    let clear = hello_answer(&internal, &http).await;
    assert!(clear.is_empty() || clear.starts_with('\u{15}'), "{clear:?}");
    let valid = hello(&right, &to("replica-x", now, "2123456789abcdef0123"));
    // Even a correctly signed hello, from a TLS client that does not hold the master key.
    assert_eq!(hello_answer_tls(&internal, &wrong, &valid).await, "");
    assert_eq!(
        hello_answer_tls(&internal, &right, &http).await,
        "ERR refused"
    );
    let forged = hello(&wrong, &to("replica-x", now, "0123456789abcdef0123"));
    assert_eq!(
        hello_answer_tls(&internal, &right, &forged).await,
        "ERR refused"
    );
    let old = hello(
        &right,
        &to("replica-x", now - 120_000, "1123456789abcdef0123"),
    );
    assert_eq!(
        hello_answer_tls(&internal, &right, &old).await,
        "ERR refused"
    );
    // Signed with the key, for another replica (captured on its way there): refused here.
    let for_z = hello(&right, &to("replica-z", now, "3123456789abcdef0123"));
    assert_eq!(
        hello_answer_tls(&internal, &right, &for_z).await,
        "ERR refused"
    );
    assert_eq!(
        hello_answer_tls(&internal, &right, &valid).await,
        "OK",
        "a correctly signed hello opens a stream"
    );
    assert_eq!(
        hello_answer_tls(&internal, &right, &valid).await,
        "ERR refused",
        "a replayed hello"
    );
    let start = Instant::now();
    let reasons = loop {
        let reasons = sql_strings(
            &x.services().db,
            "SELECT reason FROM audit_events WHERE action = 'replica.forward' AND outcome = 'denied' ORDER BY seq",
        )
        .await;
        if reasons.len() >= 7 || start.elapsed() > Duration::from_secs(5) {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    // Each refusal says why (the events are written concurrently: in any order).
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("TLS handshake"))
            .count(),
        2,
        "{reasons:?}"
    );
    for why in [
        "malformed",
        "does not verify",
        "120 s old",
        "not this one",
        "replayed",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(why)),
            "no {why:?} in {reasons:?}"
        );
    }
    drop(y);
}

async fn owner_cluster_id(app: &TestApp) -> ClusterId {
    let id = sql_strings(
        &app.services().db,
        &format!("SELECT id FROM clusters WHERE name = '{CLUSTER}'"),
    )
    .await
    .remove(0);
    ClusterId::parse(&id).expect("a cluster id")
}

/// `warden_background_jobs_held` and the passes of `job` on the replica at `url`.
async fn jobs_metrics(url: &str, job: &str) -> (u64, u64) {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |series: &str| warden_server::testing::metric(&text, series).unwrap_or(0.0) as u64;
    (
        value("warden_background_jobs_held"),
        value(&format!(
            "warden_background_job_runs_total{{job=\"{job}\"}}"
        )),
    )
}

/// The jobs' lock connection asks PostgreSQL to probe it: a holder whose machine vanished
/// (no FIN) loses the lock in about 25 s, not the system's two hours.
#[tokio::test]
async fn the_jobs_lock_connection_is_probed_by_the_server() {
    if !on_postgres() {
        eprintln!("skipped: the jobs' lease is PostgreSQL's");
        return;
    }
    use sea_orm::sqlx::Row;
    let app = TestApp::spawn().await;
    let opts = (*app
        .services()
        .db
        .get_postgres_connection_pool()
        .connect_options())
    .clone();
    let mut conn = warden_server::replicas::lease::connect(&opts)
        .await
        .expect("a lock connection");
    for (setting, want) in [
        ("SHOW tcp_keepalives_idle", "10"),
        ("SHOW tcp_keepalives_interval", "5"),
        ("SHOW tcp_keepalives_count", "3"),
    ] {
        let row = sea_orm::sqlx::query(setting)
            .fetch_one(&mut conn)
            .await
            .expect(setting);
        assert_eq!(row.try_get::<String, _>(0).unwrap(), want, "{setting}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_jobs_run_on_one_replica_and_move_when_it_dies() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = warden_server::testing::fresh_database_url(dir.path()).await;
    let fast = [
        ("WARDEN_REPLICA_HEARTBEAT_MS", "200"),
        ("WARDEN_REPLICA_TIMEOUT_MS", "1000"),
    ];
    // Y starts first and takes the jobs' lease.
    let mut y = WardenServe::start(&db, &fast).await;
    let mut x = TestApp::spawn_on_with(
        &db,
        fast.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .await;
    x.drop_database_on_exit();
    let (_, y_before) = jobs_metrics(&y.url, "grant_expiry").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (y_held, y_after) = jobs_metrics(&y.url, "grant_expiry").await;
    assert_eq!(y_held, 1, "Y holds the lease");
    assert!(y_after > y_before, "Y runs the expiry job");
    assert!(!x.services().jobs.held(), "X holds the lease too");
    assert_eq!(
        x.services().jobs.runs(),
        Default::default(),
        "a background job ran on X while Y held the lease"
    );

    // Y dies (no goodbye): X takes the jobs over.
    y.kill().await;
    let t = Instant::now();
    while !x.services().jobs.held() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "X did not take the jobs over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the jobs moved to X {:?} after Y died", t.elapsed());
    let t = Instant::now();
    while x
        .services()
        .jobs
        .runs()
        .get("grant_expiry")
        .copied()
        .unwrap_or(0)
        == 0
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "X runs no expiry pass"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (held, _) = jobs_metrics(&x.url, "grant_expiry").await;
    assert_eq!(held, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_and_a_kubeconfig_from_one_replica_work_on_another() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let ReplicaX {
        x,
        dir,
        sim: _sim,
        _agent,
        ..
    } = replica_x().await;
    let y = WardenServe::start(&x.database_url, &[("WARDEN_MASTER_KEY", MASTER_KEY)]).await;

    // Signed in on X, the same session cookie works on Y.
    let on_x = x.client();
    on_x.login(USER, USER_PASSWORD).await.assert_status(200);
    let on_y = Client::new(&y.url, true);
    on_y.get("/api/v1/me").await.assert_status(401);
    on_y.set_session_cookie(&on_x.session_cookie().expect("a session cookie"));
    let me = on_y.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["user"]["email"], USER, "{me}");

    // A kubeconfig X issued, pointed at Y's gateway: Y trusts its certificate and kubectl
    // trusts Y's (the CAs are the database's).
    let kubeconfig = on_x.get("/api/v1/kubeconfig").await.assert_status(200).body;
    assert!(kubeconfig.contains(&x.gateway_url));
    let to_y = kubeconfig.replace(&x.gateway_url, &y.gateway_url);
    let k = Kubectl::new(&dir.path().join("sally-y"), &to_y);
    k.run(&["get", "configmaps", "-n", "apple", "-o", "name"])
        .await
        .expect_ok();
    // The CA files the replicas use hold the same sealed key, never the key in the clear.
    let stored = sql_strings(
        &x.services().db,
        "SELECT key_sealed FROM gateway_cas ORDER BY name",
    )
    .await;
    assert_eq!(stored.len(), 2);
    assert!(stored
        .iter()
        .all(|k| k.starts_with("warden-sealed:") && !k.contains("PRIVATE KEY")));

    // The account lock is shared too: four wrong guesses on X, the fifth on Y locks, and
    // the right password is refused on Y.
    let guesser = x.client();
    for i in 0..4 {
        guesser
            .login(USER, &format!("a wrong guess {i}"))
            .await
            .assert_status(401);
    }
    let on_y = Client::new(&y.url, true);
    let r = on_y.login(USER, "the fifth wrong guess").await;
    assert_eq!(r.status, 429, "{}", r.body);
    let r = on_y.login(USER, USER_PASSWORD).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error_code(), "locked");
}

/// A TCP proxy standing in for a load balancer: every new connection goes to the current
/// target.
struct Balancer {
    url: String,
    target: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Balancer {
    async fn start(target: &str) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let target = std::sync::Arc::new(std::sync::Mutex::new(target.to_owned()));
        let t = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.lock().expect("target").clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Balancer { url, target }
    }

    fn point_to(&self, target: &str) {
        *self.target.lock().expect("target") = target.to_owned();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_moves_to_another_replica_when_its_replica_dies() {
    failover(false).await;
}

/// SIGTERM: the replica leaves the registry at once, tells its agents to reconnect (to the
/// other replica, through the load balancer), and exits cleanly within its drain bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_with_sigterm_hands_its_agent_over() {
    failover(true).await;
}

async fn failover(graceful: bool) {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    // Stopped gracefully, nothing may depend on the heartbeat timeout: make it long.
    let timeout = if graceful { "60000" } else { "1000" };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = warden_server::testing::fresh_database_url(dir.path()).await;
    let y_http = format!("127.0.0.1:{}", free_port());
    let lb = Balancer::start(&y_http).await;
    // X: this process; Y: a `warden serve` the agent reaches first. Both answer to the load
    // balancer's URL.
    let mut x = TestApp::spawn_on_with(
        &db,
        std::collections::BTreeMap::from([
            ("WARDEN_PUBLIC_URL".to_owned(), lb.url.clone()),
            (
                "WARDEN_REPLICA_ADDR".to_owned(),
                format!("127.0.0.1:{}", free_port()),
            ),
            ("WARDEN_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
            ("WARDEN_REPLICA_HEARTBEAT_MS".to_owned(), "200".to_owned()),
            ("WARDEN_REPLICA_TIMEOUT_MS".to_owned(), timeout.to_owned()),
        ]),
    )
    .await;
    x.drop_database_on_exit();
    let y_internal = format!("127.0.0.1:{}", free_port());
    let mut y = WardenServe::start_at(
        &db,
        &y_http,
        &[
            ("WARDEN_PUBLIC_URL", &lb.url),
            ("WARDEN_REPLICA_ID", "replica-y"),
            ("WARDEN_REPLICA_ADDR", &y_internal),
            ("WARDEN_MASTER_KEY", MASTER_KEY),
            ("WARDEN_REPLICA_HEARTBEAT_MS", "200"),
            ("WARDEN_REPLICA_TIMEOUT_MS", timeout),
        ],
    )
    .await;
    // Through the load balancer (to Y).
    let admin = Client::new(&lb.url, true);
    admin
        .login(
            warden_server::testing::ADMIN_EMAIL,
            warden_server::testing::ADMIN_PASSWORD,
        )
        .await
        .assert_status(200);
    admin
        .post("/api/v1/me/password", json!({"current_password": warden_server::testing::ADMIN_PASSWORD, "new_password": "the admin's new password"}))
        .await
        .assert_status(204);
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apple"}}))
        .expect("namespace");
    let _agent =
        warden_server::gateway::testkit::start_agent(&admin, &sim, dir.path(), CLUSTER, "dev", &[])
            .await;
    let cluster_id = owner_cluster_id(&x).await;
    let owner = |want: &'static str| {
        let replicas = x.state.replicas.clone().expect("replicas");
        async move {
            let t = Instant::now();
            loop {
                let o = replicas.owner_of(cluster_id).await.expect("owner");
                if o.as_ref()
                    .is_some_and(|o| o.id == want || want == "x" && o.id == replicas.id())
                {
                    return;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "the tunnel is not on {want}: {o:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    owner("replica-y").await;
    admin
        .post(
            "/api/v1/users",
            json!({"email": USER, "name": "sally", "password": "first password for tests"}),
        )
        .await
        .assert_status(201);
    admin
        .bind_user(USER, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    let sally = Client::new(&lb.url, true);
    sally
        .login(USER, "first password for tests")
        .await
        .assert_status(200);
    sally
        .post(
            "/api/v1/me/password",
            json!({"current_password": "first password for tests", "new_password": USER_PASSWORD}),
        )
        .await
        .assert_status(204);
    let kubeconfig = sally
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    // kubectl through X's gateway (the CAs are shared): forwarded to Y, which holds the agent.
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server")
        .to_owned();
    let (base, _) = server.split_once("/clusters/").unwrap_or((&server, ""));
    let k = Kubectl::new(
        &dir.path().join("sally"),
        &kubeconfig.replace(base, &x.gateway_url),
    );
    k.run(&["get", "configmaps", "-n", "apple", "-o", "name"])
        .await
        .expect_ok();

    // Y stops; the load balancer sends new connections to X; the agent reconnects there.
    lb.point_to(&x.addr.to_string());
    if graceful {
        let t = Instant::now();
        y.terminate().await;
        let stopped = t.elapsed();
        assert!(stopped < Duration::from_secs(15), "{stopped:?}");
        // Y left the registry: it is no owner and no replica any more, at once.
        let left = sql_strings(
            &x.services().db,
            "SELECT id FROM replicas WHERE id = 'replica-y' UNION ALL \
             SELECT replica_id FROM cluster_tunnels WHERE replica_id = 'replica-y'",
        )
        .await;
        assert!(left.is_empty(), "{left:?}");
        eprintln!("SIGTERM: Y stopped in {stopped:?}");
    } else {
        y.kill().await;
    }
    let t = Instant::now();
    owner("x").await;
    let moved = t.elapsed();
    let again = loop {
        let out = k
            .run(&["get", "configmaps", "-n", "apple", "-o", "name"])
            .await;
        if out.code == 0 {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "kubectl through X does not work again: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("after Y died: the agent was on X in {moved:?}, kubectl worked again in {again:?}");
    // Within the agents' heartbeat timeout (WARDEN_AGENT_TIMEOUT_MS, 30 s by default).
    assert!(again < Duration::from_secs(30), "{again:?}");
}

/// A change announced by another replica moves the local epoch at once; one whose
/// announcement was missed is found by the periodic re-read; this replica's own announcements
/// are not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoch_follows_notifications_and_the_safety_net_finds_missed_ones() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_REPLICA_EPOCH_RECHECK_MS".to_owned(),
        "300".to_owned(),
    )]))
    .await;
    let policy = &app.services().policy;
    let db = &app.services().db;
    let moved_from = |from: u64| async move {
        let t = Instant::now();
        while policy.epoch() == from {
            if t.elapsed() > Duration::from_secs(3) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Some(t.elapsed())
    };
    // Another replica's announcement.
    let before = policy.epoch();
    db.execute_unprepared(
        "WITH u AS (UPDATE authz_epoch SET value = value + 1 WHERE id = 1 RETURNING value) \
         SELECT pg_notify('warden_authz_epoch', 'another-replica:' || u.value::text) FROM u",
    )
    .await
    .expect("notify");
    let heard = moved_from(before)
        .await
        .expect("the notification moved the epoch");
    assert!(heard < Duration::from_millis(250), "{heard:?}");
    // A change whose announcement was lost: the re-read finds it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = policy.epoch();
    db.execute_unprepared("UPDATE authz_epoch SET value = value + 1 WHERE id = 1")
        .await
        .expect("update");
    assert!(
        moved_from(before).await.is_some(),
        "the re-read did not find the change"
    );
    // A local change moves the epoch once (its own announcement is not heard as news).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = policy.epoch();
    policy.bump();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(policy.epoch(), before + 1);
    let shared: i64 = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT value FROM authz_epoch WHERE id = 1",
        ))
        .await
        .expect("read")
        .expect("row")
        .try_get("", "value")
        .expect("value");
    assert_eq!(shared, 3, "the local change was published");
    // A replica that died (silent past the timeout) may have committed a change it never
    // announced: when it is removed, every replica checks again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = policy.epoch();
    db.execute_unprepared(
        "INSERT INTO replicas (id, internal_addr, started_at, heartbeat_at) VALUES ('died-before-announcing', NULL, 0, 0)",
    )
    .await
    .expect("a dead replica's row");
    let moved = {
        let t = Instant::now();
        loop {
            if policy.epoch() != before {
                break true;
            }
            if t.elapsed() > Duration::from_secs(15) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(moved, "removing a dead replica moves the epoch");
    assert!(sql_strings(
        db,
        "SELECT id FROM replicas WHERE id = 'died-before-announcing'"
    )
    .await
    .is_empty());
}

/// Sign-in rate limits are shared by the replicas: a source that spent its burst on one
/// replica is refused by the other (without sharing, each replica would give it the whole
/// burst again), and the buckets live in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sign_in_burst_spent_on_one_replica_is_spent_on_the_other() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let limit = [("WARDEN_RATE_LIMIT_SIGN_IN", "6")];
    let x = TestApp::spawn_with(
        limit
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .await;
    let y = WardenServe::start(&x.database_url, &limit).await;
    let on_x = x.client();
    let on_y = Client::new(&y.url, true);
    // Each guess names another account, so the per-account lock never answers first.
    for i in 0..3 {
        on_x.login(&format!("nobody{i}@example.com"), "wrong password, wrong")
            .await
            .assert_status(401);
        on_y.login(&format!("nobody-y{i}@example.com"), "wrong password, wrong")
            .await
            .assert_status(401);
    }
    // Six in all: the seventh is refused on either replica.
    for c in [&on_y, &on_x] {
        let r = c
            .login("someone@example.com", "wrong password, wrong")
            .await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.error_code(), "rate_limited");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    let rows = sql_strings(
        &x.services().db,
        "SELECT key FROM rate_limit_buckets ORDER BY key",
    )
    .await;
    assert_eq!(rows, vec!["sign_in:127.0.0.1".to_owned()]);
    // Other routes are not limited.
    on_y.get("/healthz").await.assert_status(200);
}

/// Open a web terminal on the Warden at `base` (`http://host:port`) as the holder of
/// `cookie`; `query` picks the cluster, namespace and pod (none: the kubectl shell).
async fn open_terminal(base: &str, cookie: &str, query: &str) -> crate::terminal::Ws {
    try_open_terminal(base, cookie, query)
        .await
        .expect("a terminal")
}

/// A terminal, or the HTTP status of its refusal.
async fn try_open_terminal(
    base: &str,
    cookie: &str,
    query: &str,
) -> Result<crate::terminal::Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let host = base.trim_start_matches("http://");
    let mut req = format!("ws://{host}/api/v1/terminal/ws?{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", base.parse().unwrap());
    req.headers_mut().insert(
        "cookie",
        format!("warden_session={cookie}").parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected: {e}"),
    }
}

async fn type_line(ws: &mut crate::terminal::Ws, line: &str) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
        .await
        .unwrap();
}

/// Three replicas: the agent on X, web terminals on Y (a pod exec and the kubectl shell, both
/// reaching the cluster through X). On Z, an administrator's *Live sessions* lists both, and
/// *End* closes the exec on Y; the terminal limit counts the shell on Y when Sally tries one
/// more on Z; a revocation made on Z closes the shell on Y with the reason within a second.
/// The recording Y made is played from Z. Then Y is stopped with SIGTERM while a terminal is
/// open: the terminal is told "server restarting".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminals_on_one_replica_reach_an_agent_on_another_and_a_third_cuts_them() {
    use crate::terminal::{until_control, until_output};
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let ReplicaX {
        x,
        dir,
        sim,
        _agent,
        binding,
        ..
    } = replica_x().await;
    Kubectl::new(&dir.path().join("ops"), &sim.admin_kubeconfig())
        .run_with_stdin(
            &["apply", "-n", "apple", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"),
        )
        .await
        .expect_ok();
    let start_replica = |name: &'static str| {
        let db = x.database_url.clone();
        async move {
            let addr = format!("127.0.0.1:{}", free_port());
            WardenServe::start(
                &db,
                &[
                    ("WARDEN_REPLICA_ID", name),
                    ("WARDEN_REPLICA_ADDR", &addr),
                    ("WARDEN_MASTER_KEY", MASTER_KEY),
                ],
            )
            .await
        }
    };
    let mut y = start_replica("replica-y").await;
    let z = start_replica("replica-z").await;
    let sally = Client::new(&y.url, true);
    sally.login(USER, USER_PASSWORD).await.assert_status(200);
    let cookie = sally.session_cookie().expect("a session cookie");

    // A console read of the cluster on Y (the pod picker), through X's tunnel.
    let pods = sally
        .get(&format!("/api/v1/clusters/{CLUSTER}/pods?namespace=apple"))
        .await
        .assert_status(200)
        .body;
    assert!(pods.contains("\"box\""), "{pods}");
    // A pod exec and the kubectl shell on Y; Y holds no tunnel.
    let mut exec = open_terminal(
        &y.url,
        &cookie,
        &format!("cluster={CLUSTER}&namespace=apple&pod=box"),
    )
    .await;
    let (ready, _) = until_control(&mut exec, "ready", Duration::from_secs(20)).await;
    let exec_id = ready["terminal_id"].as_u64().expect("the terminal's id");
    type_line(&mut exec, "echo through-$((40+2))").await;
    until_output(&mut exec, "through-42").await;
    let mut shell = open_terminal(
        &y.url,
        &cookie,
        &format!("cluster={CLUSTER}&namespace=apple"),
    )
    .await;
    until_control(&mut shell, "ready", Duration::from_secs(20)).await;
    type_line(&mut shell, "kubectl get pods -o name").await;
    until_output(&mut shell, "pod/box").await;

    // Z's *Live sessions* lists the terminals Y relays; *End* there closes the exec on Y.
    let admin_z = z.admin().await;
    let terminals_on_z = |want: usize| {
        let admin_z = &admin_z;
        async move {
            let start = Instant::now();
            loop {
                let list = admin_z
                    .get("/api/v1/streams?all=true&kind=terminal")
                    .await
                    .assert_status(200)
                    .json();
                let items = list["items"].as_array().unwrap().clone();
                if items.len() == want {
                    return items;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "Z lists {} terminals, not {want}: {list}",
                    items.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let listed = terminals_on_z(2).await;
    assert!(
        listed
            .iter()
            .all(|t| t["user"] == USER && t["cluster"] == CLUSTER),
        "{listed:?}"
    );
    assert!(listed.iter().any(|t| t["id"] == exec_id), "{listed:?}");
    admin_z
        .delete(&format!("/api/v1/streams/{exec_id}"))
        .await
        .assert_status(204);
    let (closed, _) = until_control(&mut exec, "closed", Duration::from_secs(5)).await;
    assert!(
        closed["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("ended by ")),
        "{closed}"
    );
    let left = terminals_on_z(1).await;
    assert_ne!(left[0]["id"], exec_id, "{left:?}");
    // Ending it again from Z: it is gone.
    admin_z
        .delete(&format!("/api/v1/streams/{exec_id}"))
        .await
        .assert_status(404);

    // One terminal at a time: the shell open on Y counts when Sally opens another on Z.
    admin_z
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_max_concurrent": 1}),
        )
        .await
        .assert_status(200);
    let sally_z = Client::new(&z.url, true);
    sally_z.login(USER, USER_PASSWORD).await.assert_status(200);
    let refused = try_open_terminal(
        &z.url,
        &sally_z.session_cookie().expect("a session cookie"),
        &format!("cluster={CLUSTER}&namespace=apple&pod=box"),
    )
    .await
    .err();
    assert_eq!(refused, Some(429), "a second terminal, opened on Z");

    // The binding is removed on Z: the shell on Y ends within a second.
    let removed = Instant::now();
    admin_z
        .delete(&format!("/api/v1/bindings/{binding}"))
        .await
        .assert_status(204);
    let (closed, _) = until_control(&mut shell, "closed", Duration::from_secs(5)).await;
    let reason = closed["reason"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "{closed}");
    let took = removed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the terminal on Y closed {took:?} after the revocation on Z"
    );

    // The recording made on Y, played from Z (found through the terminal's audit events).
    let start = Instant::now();
    let id = loop {
        let events = admin_z
            .get("/api/v1/audit/events?kind=terminal&limit=50")
            .await
            .assert_status(200)
            .json();
        let found = events["items"].as_array().unwrap().iter().find_map(|e| {
            (e["action"] == "terminal.close" && e["resource_name"] == "box")
                .then(|| e["details"]["recording"]["id"].as_str().map(str::to_owned))
                .flatten()
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no closing event with its recording: {events}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cast = admin_z
        .get(&format!("/api/v1/terminal/recordings/{id}"))
        .await
        .assert_status(200)
        .body;
    assert!(cast.contains("through-42"), "{cast}");

    // Y stops (a rolling update) while a terminal is open: it is told why.
    admin_z
        .bind_user(USER, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    // The grant reaches Y through the epoch notification, within moments: wait for Y to
    // answer with it before opening the terminal there.
    // (The notification is the fast path; the periodic re-read, every 5 s, the safety net.)
    let granted = Instant::now();
    loop {
        let r = sally
            .get(&format!("/api/v1/clusters/{CLUSTER}/pods?namespace=apple"))
            .await;
        if r.status == 200 {
            break;
        }
        assert!(
            granted.elapsed() < Duration::from_secs(15),
            "the grant made on Z never reached Y: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut again = open_terminal(
        &y.url,
        &cookie,
        &format!("cluster={CLUSTER}&namespace=apple&pod=box"),
    )
    .await;
    until_control(&mut again, "ready", Duration::from_secs(20)).await;
    let ((closed, _), ()) = tokio::join!(
        until_control(&mut again, "closed", Duration::from_secs(10)),
        y.terminate()
    );
    assert_eq!(closed["reason"], "server restarting", "{closed}");
    drop(z);
}

/// The sweeper of one replica removes a user's service account that another replica had set
/// up (the user lost every grant on the cluster). Granted again, the user is served by that
/// other replica at once: it does not trust what it applied before the epoch moved, reads the
/// account's record again and makes a new account (it used to keep using the removed one,
/// refused by the cluster, for up to ten minutes: a flake of the terminals test above, when
/// the jobs' lease was not on the replica that served the user).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_account_removed_by_another_replica_is_made_again_when_granted_again() {
    if !on_postgres() {
        eprintln!("skipped: several replicas need PostgreSQL (WARDEN_TEST_DATABASE_URL)");
        return;
    }
    let ReplicaX {
        x,
        admin_x,
        dir: _dir,
        sim,
        _agent,
        binding,
        ..
    } = replica_x().await;
    // X started first and holds the background jobs' lease: its sweeper is the one that
    // removes accounts, never Y's.
    let start = Instant::now();
    while !x.services().jobs.held() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "X never took the jobs' lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let y = WardenServe::start(
        &x.database_url,
        &[
            ("WARDEN_REPLICA_ID", "replica-y"),
            ("WARDEN_MASTER_KEY", MASTER_KEY),
        ],
    )
    .await;
    let sally = Client::new(&y.url, true);
    sally.login(USER, USER_PASSWORD).await.assert_status(200);
    let pods_path = format!("/api/v1/clusters/{CLUSTER}/pods?namespace=apple");
    // Y sets up sally's service account (through X's tunnel) and remembers it.
    sally.get(&pods_path).await.assert_status(200);
    let db = &x.services().db;
    let accounts = || sql_strings(db, "SELECT sa_name FROM kube_service_accounts");
    let first = accounts().await;
    assert_eq!(first.len(), 1, "{first:?}");
    let on_cluster = |name: &str| sim.store().get("serviceaccounts", "warden-system", name);
    assert!(on_cluster(&first[0]).is_some());

    // The binding goes (on X; nothing asks Y meanwhile): X's sweeper removes the account.
    admin_x
        .delete(&format!("/api/v1/bindings/{binding}"))
        .await
        .assert_status(204);
    let start = Instant::now();
    while !accounts().await.is_empty() || on_cluster(&first[0]).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "X's sweeper did not remove sally's service account"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(x.services().jobs.held(), "the jobs' lease moved to Y");

    // Granted again: Y serves sally as soon as it hears of the change.
    admin_x
        .bind_user(USER, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    let granted = Instant::now();
    loop {
        let r = sally.get(&pods_path).await;
        if r.status == 200 {
            break;
        }
        assert!(
            granted.elapsed() < Duration::from_secs(6),
            "Y still refuses sally after the grant made on X: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = accounts().await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, first, "a new account, not the removed one");
    assert!(on_cluster(&now[0]).is_some());
    drop(y);
}
