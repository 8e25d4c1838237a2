//! The gateway's cost, in one run: latency (p50, p99) and throughput of the same Kubernetes
//! API request sent straight to a kubesim cluster (as the user's service account), through
//! Warden's gateway over a direct connection (client certificate, every check, audit,
//! forwarding), and through the gateway and a real agent's tunnel, as in production.
//!
//! `cargo bench -p server --bench gateway` (`GATEWAY_BENCH_N` sequential requests per path,
//! default 2000; `GATEWAY_BENCH_SECS` seconds of concurrent load, default 3; concurrency 16).
//! Every answer through the gateway waits for the audit journal's `fsync` (see the README's
//! *Audit journal*); the run ends with the journal's group commits.

use serde_json::json;
use std::time::{Duration, Instant};
use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
use warden_server::testing::TestApp;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let mean = v.iter().sum::<Duration>() / v.len() as u32;
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        mean,
    }
}

async fn sequential(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    n: u64,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut req = client.get(url);
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let t = Instant::now();
        let r = req.send().await.expect("request");
        assert!(r.status().is_success(), "{}", r.status());
        let _ = r.bytes().await.expect("body");
        out.push(t.elapsed());
    }
    out
}

async fn throughput(client: &reqwest::Client, url: &str, auth: Option<&str>, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = vec![];
    for _ in 0..16 {
        let client = client.clone();
        let url = url.to_owned();
        let auth = auth.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut req = client.get(&url);
                if let Some(t) = &auth {
                    req = req.bearer_auth(t);
                }
                let r = req.send().await.expect("request");
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

async fn run() {
    let n = env_num("GATEWAY_BENCH_N", 2000);
    let secs = env_num("GATEWAY_BENCH_SECS", 3);
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "bench"}))
        .await
        .assert_status(201);
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apple"}}))
        .expect("namespace");
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apple"}, "data": {"k": "v"}}))
        .expect("configmap");
    // A second simulated cluster, reached through an agent as in production.
    let tunnelled = kubesim::KubeSim::start().await.expect("kubesim");
    tunnelled
        .store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apple"}}))
        .expect("namespace");
    tunnelled
        .store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apple"}, "data": {"k": "v"}}))
        .expect("configmap");
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
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "bench@example.com"}, "role": "NAMESPACE_ADMIN", "project": "bench", "namespaces": ["apple"]}))
        .await
        .assert_status(201);
    let kubeconfig = user.get("/api/v1/kubeconfig").await.assert_status(200).body;
    let doc: serde_yaml::Value = serde_yaml::from_str(&kubeconfig).expect("yaml");
    use base64::Engine;
    let b64 = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("b64"))
            .expect("base64")
    };
    let u = &doc["users"][0]["user"];
    let mut identity = b64(&u["client-certificate-data"]);
    identity.extend(b64(&u["client-key-data"]));
    let gw_ca = b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]);
    let through = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&gw_ca).expect("ca"))
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("client");
    let via_gateway = format!(
        "{}/clusters/bench/api/v1/namespaces/apple/configmaps/c",
        app.gateway_url
    );
    // The first request creates the service account; the direct path then uses its token.
    let _ = sequential(&through, &via_gateway, None, 1).await;
    // Service accounts are named `u-<email slug>-<random>`.
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
    let direct = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let straight = format!("{}/api/v1/namespaces/apple/configmaps/c", sim.url());

    let via_agent = format!(
        "{}/clusters/bench-agent/api/v1/namespaces/apple/configmaps/c",
        app.gateway_url
    );

    // Warm up the paths.
    let _ = sequential(&direct, &straight, Some(&token), 200).await;
    let _ = sequential(&through, &via_gateway, None, 200).await;
    let _ = sequential(&through, &via_agent, None, 200).await;

    let d = stats(sequential(&direct, &straight, Some(&token), n).await);
    let g = stats(sequential(&through, &via_gateway, None, n).await);
    let a = stats(sequential(&through, &via_agent, None, n).await);
    let d_rps = throughput(&direct, &straight, Some(&token), secs).await;
    let g_rps = throughput(&through, &via_gateway, None, secs).await;
    let a_rps = throughput(&through, &via_agent, None, secs).await;
    app.gateway().flush_audit().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("gateway benchmark: GET a ConfigMap, {n} sequential requests per path, then {secs} s at concurrency 16");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12}",
        "path", "p50 ms", "p99 ms", "mean ms", "req/s"
    );
    println!(
        "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
        "kubesim directly",
        ms(d.p50),
        ms(d.p99),
        ms(d.mean),
        d_rps
    );
    println!(
        "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
        "through the gateway",
        ms(g.p50),
        ms(g.p99),
        ms(g.mean),
        g_rps
    );
    println!(
        "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>11.0}%",
        "added by the gateway",
        ms(g.p50) - ms(d.p50),
        ms(g.p99) - ms(d.p99),
        ms(g.mean) - ms(d.mean),
        (g_rps / d_rps) * 100.0
    );
    println!(
        "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
        "gateway + agent",
        ms(a.p50),
        ms(a.p99),
        ms(a.mean),
        a_rps
    );
    println!(
        "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>11.0}%",
        "added by both",
        ms(a.p50) - ms(d.p50),
        ms(a.p99) - ms(d.p99),
        ms(a.mean) - ms(d.mean),
        (a_rps / d_rps) * 100.0
    );
    // Every answer waited for the audit journal's group commit (write + fsync).
    let stats = &app.gateway().audit_journal().stats;
    let commits = stats.fsync_count.load(std::sync::atomic::Ordering::Relaxed);
    let micros = stats
        .fsync_micros
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "audit journal: {commits} group commits, mean write + fsync {:.3} ms",
        micros as f64 / 1000.0 / commits.max(1) as f64
    );
}
