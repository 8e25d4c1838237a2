//! The gateway's cost, in one run, as ratios to the same request sent straight to the cluster.
//!
//! Four paths to a kubesim cluster, each as the user's own service account:
//! - **direct**: straight to kubesim (the reference, 1.00);
//! - **kubectl proxy**: the machine's kubectl in front of it (adds credentials only);
//! - **gateway**: Warden's gateway over a direct connection to the cluster (client
//!   certificate, every check, the audit journal, forwarding);
//! - **gateway + agent**: the gateway and a real agent's tunnel, as in production (an identical
//!   kubesim behind it);
//! - **gw+agent, alone**: the same with Warden as a `warden serve` process of its own (SQLite,
//!   the binary `cargo bench` built), its CPU its own as `kubectl proxy`'s is: the other
//!   Warden paths share this process with the load and the clusters.
//!
//! Requests: GET of one ConfigMap, LIST of 20, and a WATCH fan-out (16 watchers per path, then
//! events created on the cluster: delivered events per second). Concurrency 1 (`GATEWAY_BENCH_N`
//! sequential requests, default 2000: p50, p99) and 16 (`GATEWAY_BENCH_SECS` seconds, default
//! 3: requests per second). For the paths served by a process of their own (`kubectl proxy`,
//! Warden alone) the c=16 round also gives that process's CPU time per request (from
//! `/proc/<pid>/stat`): Warden's own, not its agent's or the cluster's.
//!
//! `./x bench` runs it in release mode (`cargo bench -p server --bench gateway`). Every answer
//! through the gateway waits for its audit record in the journal (see the README's *Audit
//! journal*; `GATEWAY_BENCH_JOURNAL_SYNC=fsync` for the stricter setting); the run ends with
//! the journal's numbers.

mod common;

use common::{env_num, millis, pct};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
use warden_server::testing::TestApp;

fn main() {
    common::block_on(run());
}

/// One way to the cluster.
#[derive(Clone)]
struct Path {
    name: &'static str,
    client: reqwest::Client,
    /// Up to (not including) `/api/v1/...`.
    base: String,
    bearer: Option<String>,
    /// Which simulated cluster answers (events for its watchers are created there).
    tunnelled: bool,
    /// The process that serves this path on its own (`kubectl proxy`, Warden alone): its CPU
    /// per request at c=16 is measured.
    pid: Option<u32>,
}

impl Path {
    fn get(&self, api: &str) -> reqwest::RequestBuilder {
        let r = self.client.get(format!("{}{api}", self.base));
        match &self.bearer {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Row {
    p50: f64,
    p99: f64,
    rps: f64,
    /// Milliseconds of CPU (user + system) the path's own process spent per request at c=16.
    cpu_ms: Option<f64>,
}

/// CPU time (user + system, ms) a process has used so far, from `/proc/<pid>/stat` (in clock
/// ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

async fn sequential(p: &Path, api: &str, n: u64) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        let r = p.get(api).send().await.expect("request");
        assert!(r.status().is_success(), "{}: {}", p.name, r.status());
        let _ = r.bytes().await.expect("body");
        out.push(t.elapsed());
    }
    out
}

async fn throughput(p: &Path, api: &str, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = vec![];
    for _ in 0..16 {
        let p = p.clone();
        let api = api.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let r = p.get(&api).send().await.expect("request");
                assert!(r.status().is_success());
                let _ = r.bytes().await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    total as f64 / secs as f64
}

async fn measure(p: &Path, api: &str, n: u64, secs: u64) -> Row {
    let _ = sequential(p, api, n / 10 + 1).await; // warm up
    let mut lat = sequential(p, api, n).await;
    let cpu_before = p.pid.and_then(cpu_ms);
    let rps = throughput(p, api, secs).await;
    let cpu = match (cpu_before, p.pid.and_then(cpu_ms)) {
        (Some(a), Some(b)) => Some((b - a) / (rps * secs as f64)),
        _ => None,
    };
    Row {
        p50: millis(pct(&mut lat, 0.50)),
        p99: millis(pct(&mut lat, 0.99)),
        rps,
        cpu_ms: cpu,
    }
}

/// 16 watchers on namespace `fan` through `p`; `events` ConfigMaps created on the cluster;
/// delivered events per second until every watcher saw every event.
async fn fan_out(p: &Path, sim: &kubesim::KubeSim, round: usize, events: usize) -> f64 {
    const WATCHERS: usize = 16;
    let list: serde_json::Value = p
        .get("/api/v1/namespaces/fan/configmaps")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list json");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    let mut watchers = vec![];
    for _ in 0..WATCHERS {
        let p = p.clone();
        let rv = rv.clone();
        let ready = ready_tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut r = p
                .get(&format!(
                    "/api/v1/namespaces/fan/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=false"
                ))
                .send()
                .await
                .expect("watch");
            assert!(r.status().is_success(), "watch: {}", r.status());
            ready.send(()).await.ok();
            let mut seen = 0usize;
            let mut buf = Vec::new();
            while seen < events {
                let Some(chunk) = r.chunk().await.expect("watch chunk") else {
                    panic!("the watch ended after {seen} events");
                };
                buf.extend_from_slice(&chunk);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    if line.windows(7).any(|w| w == b"\"ADDED\"") {
                        seen += 1;
                    }
                }
            }
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await;
    }
    // Headers are back; give the streams a moment to be registered on the cluster's side.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let store = sim.store();
    for i in 0..events {
        store
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("r{round}-{i}"), "namespace": "fan"}, "data": {"k": "v"}}))
            .expect("configmap");
    }
    for w in watchers {
        w.await.expect("watcher");
    }
    (WATCHERS * events) as f64 / started.elapsed().as_secs_f64()
}

/// A kube client from a kubeconfig (YAML) and one of its contexts.
async fn kube_client(kubeconfig: &str, context: Option<&str>) -> kube::Client {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig"),
        &options,
    )
    .await
    .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// `exec echo` in pod `box`: from the call to the first byte of its output (the upgrade, the
/// process start and the stream through every hop), `rounds` times: (p50, p99) in ms.
async fn exec_first_byte(client: kube::Client, rounds: usize) -> (f64, f64) {
    use tokio::io::AsyncReadExt;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "apple");
    let params = kube::api::AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(false);
    let mut lat = Vec::with_capacity(rounds);
    for i in 0..rounds + 2 {
        let t = Instant::now();
        let mut proc = pods
            .exec("box", ["echo", "hello"], &params)
            .await
            .expect("exec");
        let mut out = proc.stdout().expect("stdout");
        let mut b = [0u8; 1];
        let n = out.read(&mut b).await.expect("read");
        assert_eq!(n, 1, "exec printed nothing");
        if i >= 2 {
            lat.push(t.elapsed());
        }
        drop(out);
        let _ = proc.join().await;
    }
    (millis(pct(&mut lat, 0.5)), millis(pct(&mut lat, 0.99)))
}

fn seed(sim: &kubesim::KubeSim) {
    for ns in ["apple", "fan"] {
        sim.store()
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .expect("namespace");
    }
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box", "namespace": "apple"},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}))
        .expect("pod");
    for i in 0..20 {
        sim.store()
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("c{i}"), "namespace": "apple"},
                "data": {"key": "a value of some length, as configuration usually has", "n": i.to_string()}}))
            .expect("configmap");
    }
}

/// `kubectl proxy` on a free port with `kubeconfig`; the child and its URL.
async fn kubectl_proxy(kubeconfig: &std::path::Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new("kubectl")
        .args(["proxy", "--port=0", "--kubeconfig"])
        .arg(kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl proxy (the machine's kubectl)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("kubectl proxy did not start")
        .expect("read")
        .expect("a line");
    // "Starting to serve on 127.0.0.1:41234"
    let addr = line.rsplit(' ').next().expect("address").to_owned();
    (child, format!("http://{addr}"))
}

async fn run() {
    let n = env_num("GATEWAY_BENCH_N", 2000);
    let secs = env_num("GATEWAY_BENCH_SECS", 3);
    let events = env_num("GATEWAY_BENCH_EVENTS", 200) as usize;
    // `GATEWAY_BENCH_JOURNAL_SYNC=fsync` measures the stricter audit journal setting.
    let sync = std::env::var("GATEWAY_BENCH_JOURNAL_SYNC").unwrap_or_else(|_| "write".into());
    let env =
        std::collections::BTreeMap::from([("WARDEN_AUDIT_JOURNAL_SYNC".to_owned(), sync.clone())]);
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "bench"}))
        .await
        .assert_status(201);
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    seed(&sim);
    // An identical cluster reached through an agent, as in production.
    let tunnelled = kubesim::KubeSim::start().await.expect("kubesim");
    seed(&tunnelled);
    let dir = tempfile::tempdir().expect("tempdir");
    let _agent = app
        .connect_agent(&admin, &tunnelled, dir.path(), "bench-agent", "bench", &[])
        .await;
    app.import_direct_cluster(
        "bench",
        "bench",
        &[],
        DirectEndpoint {
            url: sim.url().to_owned(),
            ca_pem: sim.ca_pem().to_owned(),
            credential: DirectCredential::Bearer(sim.admin_token().to_owned()),
        },
    )
    .await;
    let user = app.user_client(&admin, "bench@example.com").await;
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "bench@example.com"}, "role": "NAMESPACE_ADMIN", "project": "bench", "namespaces": ["apple", "fan"]}))
        .await
        .assert_status(201);
    let kubeconfig = user.get("/api/v1/kubeconfig").await.assert_status(200).body;
    let through = gateway_client(&kubeconfig);
    let gateway = Path {
        name: "gateway",
        client: through.clone(),
        base: format!("{}/clusters/bench", app.gateway_url),
        bearer: None,
        tunnelled: false,
        pid: None,
    };
    // The first request creates the user's service account; the direct paths then use its token.
    let _ = sequential(&gateway, "/api/v1/namespaces/apple/configmaps/c0", 1).await;
    let sa = sim
        .store()
        .list("serviceaccounts", Some("warden-system"))
        .into_iter()
        .filter_map(|a| a["metadata"]["name"].as_str().map(str::to_owned))
        .find(|n| n.starts_with("u-bench-example-com"))
        .expect("the user's service account");
    let token = sim
        .service_account_token("warden-system", &sa, Duration::from_secs(3600))
        .expect("token");
    let direct = Path {
        name: "direct",
        client: reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("ca"),
            )
            .build()
            .expect("client"),
        base: sim.url().to_owned(),
        bearer: Some(token.clone()),
        tunnelled: false,
        pid: None,
    };
    let proxy_kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(&proxy_kubeconfig, sim.kubeconfig_for_token(&token)).expect("kubeconfig");
    let (proxy_child, proxy_url) = kubectl_proxy(&proxy_kubeconfig).await;
    let proxy = Path {
        name: "kubectl proxy",
        client: reqwest::Client::builder().build().expect("client"),
        base: proxy_url,
        bearer: None,
        tunnelled: false,
        pid: proxy_child.id(),
    };
    let agent = Path {
        name: "gateway + agent",
        client: through,
        base: format!("{}/clusters/bench-agent", app.gateway_url),
        bearer: None,
        tunnelled: true,
        pid: None,
    };
    // The same production path with Warden in a process of its own (its CPU its own, as
    // `kubectl proxy`'s is): a `warden serve`, its agent on the same cluster.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let alone_dir = dir.path().join("alone");
    std::fs::create_dir_all(&alone_dir).expect("dir");
    let alone = common::serve(
        &alone_dir,
        &[("WARDEN_AUDIT_JOURNAL_SYNC", sync.clone())],
        std::env::var_os("GATEWAY_BENCH_SERVER_LOG").as_deref(),
    )
    .await;
    alone
        .admin
        .post("/api/v1/projects", json!({"name": "bench"}))
        .await
        .assert_status(201);
    let tunnelled_kubeconfig = alone_dir.join("cluster.kubeconfig");
    std::fs::write(&tunnelled_kubeconfig, tunnelled.admin_kubeconfig()).expect("kubeconfig");
    let _alone_agent = common::import_with_agent(
        &alone.admin,
        &alone_dir,
        &tunnelled_kubeconfig,
        "alone",
        "bench",
        stop_rx,
    )
    .await;
    let start = Instant::now();
    while alone
        .admin
        .get("/api/v1/clusters/alone")
        .await
        .assert_status(200)
        .json()["status"]
        != "connected"
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent of the separate Warden did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alone
        .admin
        .post("/api/v1/users", json!({"email": "bench@example.com", "name": "bench", "password": "first password for the bench"}))
        .await
        .assert_status(201);
    alone
        .admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "bench@example.com"}, "role": "NAMESPACE_ADMIN", "project": "bench", "namespaces": ["apple", "fan"]}))
        .await
        .assert_status(201);
    let alone_user = warden_server::testing::Client::new(&alone.url, true);
    alone_user
        .login("bench@example.com", "first password for the bench")
        .await
        .assert_status(200);
    alone_user
        .post("/api/v1/me/password", json!({"current_password": "first password for the bench", "new_password": "the bench user's own password"}))
        .await
        .assert_status(204);
    let alone_kubeconfig = alone_user
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let alone_path = Path {
        name: "gw+agent, alone",
        client: gateway_client(&alone_kubeconfig),
        base: format!("{}/clusters/alone", alone.gateway_url),
        bearer: None,
        tunnelled: true,
        pid: Some(alone.pid),
    };
    let paths = [direct, proxy, gateway, agent, alone_path];

    let requests = [
        ("GET", "/api/v1/namespaces/apple/configmaps/c0"),
        ("LIST 20", "/api/v1/namespaces/apple/configmaps"),
    ];
    println!();
    println!(
        "gateway benchmark: {n} sequential requests (c=1), then {secs} s at concurrency 16 (c=16); \
         WATCH: 16 watchers, {events} events each; audit journal: {sync}"
    );
    println!(
        "{:<8} {:<16} {:>10} {:>10} {:>11} {:>13} {:>12} {:>12} {:>12}",
        "request",
        "path",
        "c=1 p50",
        "c=1 p99",
        "c=16 req/s",
        "p50 vs direct",
        "p99 ×direct",
        "req/s ×direct",
        "CPU/req"
    );
    for (label, api) in requests {
        let mut rows = vec![];
        for p in &paths {
            rows.push(measure(p, api, n, secs).await);
        }
        let d = rows[0];
        for (p, r) in paths.iter().zip(&rows) {
            let cpu = r.cpu_ms.map(|c| format!("{c:.3}ms")).unwrap_or_default();
            println!(
                "{:<8} {:<16} {:>8.3}ms {:>8.3}ms {:>11.0} {:>+11.3}ms {:>12.2} {:>12.2} {:>12}",
                label,
                p.name,
                r.p50,
                r.p99,
                r.rps,
                r.p50 - d.p50,
                r.p99 / d.p99,
                r.rps / d.rps,
                cpu
            );
        }
    }
    let mut direct_fan = 0.0;
    for (round, p) in paths.iter().enumerate() {
        let cluster = if p.tunnelled { &tunnelled } else { &sim };
        let eps = fan_out(p, cluster, round, events).await;
        if round == 0 {
            direct_fan = eps;
        }
        println!(
            "{:<8} {:<16} {:>54.0} events/s {:>12.2}",
            "WATCH",
            p.name,
            eps,
            eps / direct_fan
        );
    }
    // exec through each path but kubectl proxy (kubectl's proxy is not an exec path).
    let rounds = env_num("GATEWAY_BENCH_EXECS", 100) as usize;
    let sa_kubeconfig = sim.kubeconfig_for_token(&token);
    let clients = [
        ("direct", kube_client(&sa_kubeconfig, None).await),
        (
            "gateway",
            kube_client(&kubeconfig, Some("warden-bench")).await,
        ),
        (
            "gateway + agent",
            kube_client(&kubeconfig, Some("warden-bench-agent")).await,
        ),
        (
            "gw+agent, alone",
            kube_client(&alone_kubeconfig, Some("warden-alone")).await,
        ),
    ];
    let mut direct_exec = 0.0;
    for (i, (name, client)) in clients.into_iter().enumerate() {
        let (p50, p99) = exec_first_byte(client, rounds).await;
        if i == 0 {
            direct_exec = p50;
        }
        println!(
            "{:<8} {:<16} {:>8.3}ms {:>8.3}ms {:>11} {:>+11.3}ms   (time to the first byte of `exec echo`)",
            "EXEC",
            name,
            p50,
            p99,
            "",
            p50 - direct_exec
        );
    }
    app.gateway().flush_audit().await;
    let stats = &app.gateway().audit_journal().stats;
    println!(
        "audit journal ({sync}): {} fsyncs, mean {:.3} ms",
        stats.fsync.count(),
        stats.fsync.mean().as_secs_f64() * 1000.0
    );
    let writer = app.gateway().audit_writer_stats();
    let stored = writer.events.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "audit writer: {stored} events in {} transactions ({:.1} each), mean {:.3} ms",
        writer.writes.count(),
        stored as f64 / writer.writes.count().max(1) as f64,
        writer.writes.mean().as_secs_f64() * 1000.0
    );
    let (rss, peak) = common::memory_kib(&alone.pid.to_string());
    println!(
        "Warden alone: resident memory {:.0} MiB (peak {:.0} MiB, idle {:.0} MiB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        alone.idle_rss_kib as f64 / 1024.0
    );
    let _ = stop_tx.send(true);
}

/// A client for the gateway with the user's identity from a kubeconfig Warden gave them.
fn gateway_client(kubeconfig: &str) -> reqwest::Client {
    warden_server::gateway::testkit::gateway_client_builder(kubeconfig)
        .build()
        .expect("client")
}
