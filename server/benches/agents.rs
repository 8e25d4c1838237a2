//! A thousand connected agents: the server's memory and CPU, and how late heartbeats are
//! handled.
//!
//! Warden runs as its own `warden serve` process (so its memory and CPU are its own), on SQLite
//! in a temporary directory (or `WARDEN_BENCH_DATABASE_URL`). This process imports
//! `AGENTS_BENCH_N` clusters (default 1,000) through the REST API and runs a real agent for each
//! (the agent library, in this process, every one on one shared kubesim), each with its own
//! manifest, key, credential and heartbeat. Once every tunnel is open it measures for
//! `AGENTS_BENCH_SECS` seconds (default 30): heartbeats stored per second, how long each took
//! from its arrival to its record in the database (`warden_agent_heartbeat_seconds`, and the
//! slowest since start), the server's resident memory (now and peak) and CPU.
//!
//! Heartbeats come every `AGENTS_BENCH_HEARTBEAT_MS` (default 1,000 ms: ten times the
//! production default of 10 s, so 1,000 agents weigh like 10,000). Targets (issue 15):
//! at most 1 GiB resident with 1,000 agents, and no heartbeat handled later than 1 s.
//!
//! `./x bench` runs it in release mode (`cargo bench -p server --bench agents`);
//! `AGENTS_BENCH_SERVER_LOG=<file>` keeps the server's warnings.

mod common;

use common::{env_num, memory_kib};
use std::time::{Duration, Instant};

fn main() {
    common::block_on(run());
}

/// CPU time of a process (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let hz = 100.0;
    (ticks(11) + ticks(12)) / hz
}

/// The heartbeat histogram and counters from `/metrics`.
#[derive(Debug, Default, Clone)]
struct Scrape {
    buckets: Vec<(f64, u64)>,
    count: u64,
    max: f64,
    connected: u64,
}

async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let body = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let mut s = Scrape::default();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("warden_agent_heartbeat_seconds_bucket{le=\"") {
            if let Some((le, n)) = rest.split_once("\"} ") {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                s.buckets.push((le, n.trim().parse().unwrap_or(0)));
            }
        } else if let Some(n) = line.strip_prefix("warden_agent_heartbeat_seconds_count ") {
            s.count = n.trim().parse().unwrap_or(0);
        } else if let Some(n) = line.strip_prefix("warden_agent_heartbeat_max_seconds ") {
            s.max = n.trim().parse().unwrap_or(0.0);
        } else if let Some(n) = line.strip_prefix("warden_agents_connected ") {
            s.connected = n.trim().parse().unwrap_or(0);
        }
    }
    s
}

/// The bucket bound under which `q` of the heartbeats between two scrapes fell.
fn quantile(before: &Scrape, after: &Scrape, q: f64) -> f64 {
    let total = after.count.saturating_sub(before.count);
    if total == 0 {
        return f64::NAN;
    }
    let want = (total as f64 * q).ceil() as u64;
    for (i, (le, n)) in after.buckets.iter().enumerate() {
        let was = before.buckets.get(i).map(|b| b.1).unwrap_or(0);
        if n.saturating_sub(was) >= want {
            return *le;
        }
    }
    f64::INFINITY
}

async fn run() {
    let n = env_num("AGENTS_BENCH_N", 1000) as usize;
    let heartbeat_ms = env_num("AGENTS_BENCH_HEARTBEAT_MS", 1000);
    let secs = env_num("AGENTS_BENCH_SECS", 30);
    let dir = tempfile::tempdir().expect("tempdir");
    // The server's warnings and errors: to AGENTS_BENCH_SERVER_LOG, or nowhere.
    let log = std::env::var_os("AGENTS_BENCH_SERVER_LOG");
    let server = common::serve(
        dir.path(),
        &[
            ("WARDEN_AGENT_HEARTBEAT_MS", heartbeat_ms.to_string()),
            (
                "WARDEN_AGENT_TIMEOUT_MS",
                (heartbeat_ms * 6).max(30_000).to_string(),
            ),
        ],
        log.as_deref(),
    )
    .await;
    let (pid, url, admin, idle_rss) = (
        server.pid,
        server.url.clone(),
        &server.admin,
        server.idle_rss_kib,
    );
    let http = reqwest::Client::new();
    admin
        .post("/api/v1/projects", serde_json::json!({"name": "bench"}))
        .await
        .assert_status(201);

    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    let kubeconfig = dir.path().join("cluster.kubeconfig");
    std::fs::write(&kubeconfig, sim.admin_kubeconfig()).expect("kubeconfig");
    eprintln!("importing {n} clusters and starting their agents…");
    let setup = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("bench-{i:04}");
        agents.push(
            common::import_with_agent(
                admin,
                dir.path(),
                &kubeconfig,
                &name,
                "bench",
                stop_rx.clone(),
            )
            .await,
        );
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {} imported ({:.0} s)",
                i + 1,
                setup.elapsed().as_secs_f64()
            );
        }
    }
    loop {
        let s = scrape(&http, &url).await;
        if s.connected as usize >= n {
            break;
        }
        assert!(
            setup.elapsed() < Duration::from_secs(600),
            "only {} of {n} agents connected",
            s.connected
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let connected_in = setup.elapsed();
    eprintln!(
        "{n} agents connected in {:.1} s; measuring for {secs} s…",
        connected_in.as_secs_f64()
    );
    // Let the first facts and the connection burst settle.
    tokio::time::sleep(Duration::from_millis(heartbeat_ms * 3)).await;
    let before = scrape(&http, &url).await;
    let cpu_before = cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = scrape(&http, &url).await;
    let window = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid) - cpu_before) / window;
    let (rss, peak) = memory_kib(&pid.to_string());
    let handled = after.count.saturating_sub(before.count);
    let expected = n as f64 * window * 1000.0 / heartbeat_ms as f64;

    let fmt_s = |s: f64| {
        if s.is_infinite() {
            "> 10 s".to_owned()
        } else {
            format!("≤ {:.0} ms", s * 1000.0)
        }
    };
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| agents connected | {} |", after.connected);
    println!("| heartbeat interval | {heartbeat_ms} ms |");
    println!(
        "| time to connect them all | {:.1} s |",
        connected_in.as_secs_f64()
    );
    println!(
        "| heartbeats stored per second | {:.0} (expected {:.0}) |",
        handled as f64 / window,
        expected / window
    );
    println!(
        "| heartbeat, arrival to stored, p50 | {} |",
        fmt_s(quantile(&before, &after, 0.5))
    );
    println!(
        "| heartbeat, arrival to stored, p99 | {} |",
        fmt_s(quantile(&before, &after, 0.99))
    );
    println!(
        "| slowest heartbeat since start (connection burst included) | {:.0} ms |",
        after.max * 1000.0
    );
    println!(
        "| server resident memory: idle / with the agents / peak | {:.0} / {:.0} / {:.0} MiB |",
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!("| server CPU while measuring | {cpu:.2} cores |");
    println!();
    let _ = stop_tx.send(true);
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
    drop(server);
}
