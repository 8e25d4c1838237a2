//! What the benchmarks share: their settings from the environment, the runtime, percentiles
//! and a process's memory. (Each bench is its own crate and uses a part of it.)
#![allow(dead_code)]

use std::time::Duration;

/// A numeric setting from the environment, or `default`.
pub fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run the bench on a multi-threaded runtime (`cargo bench` passes `--bench`; nothing else
/// to parse).
pub fn block_on<F: std::future::Future>(bench: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench)
}

/// The `q` quantile of `v` (sorted in place; not empty).
pub fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// A duration in milliseconds, as a number.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A duration in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", millis(d))
}

/// Resident and peak resident memory (KiB) of a process (`"self"` or a pid), from `/proc`.
pub fn memory_kib(process: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub use warden_server::testing::free_port;

/// `warden serve` as a process of its own (the binary `cargo bench` built), so its CPU and
/// memory are its own: on SQLite in `dir` (or `WARDEN_BENCH_DATABASE_URL`), with `extra`
/// settings, its administrator signed in with a changed password. Killed when dropped.
pub struct Serve {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub url: String,
    pub gateway_url: String,
    pub admin: warden_server::testing::Client,
    /// Resident memory (KiB) once ready, before anything was asked of it.
    pub idle_rss_kib: u64,
}

/// Start [`Serve`]; the server's own warnings go to `log` (a file), or nowhere.
pub async fn serve(
    dir: &std::path::Path,
    extra: &[(&str, String)],
    log: Option<&std::ffi::OsStr>,
) -> Serve {
    use std::time::Instant;
    let http_addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{http_addr}");
    let gw = free_port();
    let gateway_url = format!("https://127.0.0.1:{gw}");
    let admin_password = "the bench administrator's password";
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("serve")
        .env("WARDEN_HTTP_ADDR", &http_addr)
        .env("WARDEN_PUBLIC_URL", &url)
        .env("WARDEN_GATEWAY_ADDR", format!("127.0.0.1:{gw}"))
        .env("WARDEN_GATEWAY_PUBLIC_URL", &gateway_url)
        .env("WARDEN_DATA_DIR", dir.join("data"))
        .env("WARDEN_SITE_ROOT", dir.join("site"))
        .env("WARDEN_ADMIN_EMAIL", "admin@example.com")
        .env("WARDEN_ADMIN_PASSWORD", admin_password)
        // Every client here comes from 127.0.0.1: the per-source limits would be one source's.
        .env("WARDEN_RATE_LIMIT_AGENT", "0")
        .env("WARDEN_RATE_LIMIT_SIGN_IN", "0")
        .env("WARDEN_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    match log {
        Some(path) => {
            let file = std::fs::File::create(path).expect("the server's log file");
            cmd.stdout(file.try_clone().expect("log file")).stderr(file);
        }
        None => {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
    }
    let db = std::env::var("WARDEN_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", dir.join("warden.db").display()));
    cmd.env("WARDEN_DATABASE_URL", db);
    let child = cmd.spawn().expect("start warden serve");
    let pid = child.id().expect("a pid");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "warden serve is not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (idle_rss_kib, _) = memory_kib(&pid.to_string());
    let admin = warden_server::testing::Client::new(&url, true);
    admin
        .login("admin@example.com", admin_password)
        .await
        .assert_status(200);
    admin
        .post(
            "/api/v1/me/password",
            serde_json::json!({"current_password": admin_password, "new_password": "the bench administrator's new password"}),
        )
        .await
        .assert_status(204);
    Serve {
        child,
        pid,
        url,
        gateway_url,
        admin,
        idle_rss_kib,
    }
}

/// Import cluster `name` into `project` through the REST API and run a real agent for it
/// (the agent library, in this process) with the credentials of `kubeconfig` (no `kubectl
/// apply` of the manifest, unlike `testkit::start_agent`: a thousand of them would take
/// minutes); the agent's task, which ends when `stop` turns true.
pub async fn import_with_agent(
    admin: &warden_server::testing::Client,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    name: &str,
    project: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let manifest_path =
        warden_server::gateway::testkit::import_cluster(admin, dir, name, project, &[]).await;
    let clients = warden_agent::kube_clients(Some(kubeconfig), None)
        .await
        .expect("kube clients");
    let store = warden_agent::Store::file(
        manifest_path.clone(),
        Some(manifest_path.with_extension("state.json")),
    );
    let agent = warden_agent::Agent::new(clients, store, warden_agent::Options::default());
    let mut stop = stop;
    tokio::spawn(async move {
        let _ = agent
            .run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    })
}
