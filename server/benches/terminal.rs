//! The cost of authorization on every frame, in one run (release build):
//! - the per-frame check of a live stream or terminal when nothing changed (`LiveGuard::admit`,
//!   target ≤ 100 ns), against an empty async call as the reference;
//! - revoke → close latency: N live streams (terminals) open, one authorization change that
//!   ends them all; how long after the change each is cancelled (p50, p99; target p99 ≤ 100 ms).
//!
//! - keystroke echo round trip: one key typed into a pod's TTY and its echo back, through
//!   Warden (browser WebSocket → terminal → agent tunnel → kubesim exec) against a direct exec
//!   on kubesim (`v5.channel.k8s.io`, the kube crate), p50 and p99 of each.
//!
//! `cargo bench -p server --bench terminal` (`TERMINAL_BENCH_STREAMS`, default 100;
//! `TERMINAL_BENCH_ROUNDS`, default 20; `TERMINAL_BENCH_FRAMES`, default 5,000,000;
//! `TERMINAL_BENCH_KEYS`, default 2,000).

mod common;

use common::{env_num, millis, pct};
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
use warden_server::live::{Check, StreamInfo};
use warden_server::testing::TestApp;

fn p50_p99(mut lat: Vec<Duration>) -> (f64, f64) {
    (millis(pct(&mut lat, 0.5)), millis(pct(&mut lat, 0.99)))
}

fn main() {
    common::block_on(run());
}

fn info(i: u64) -> StreamInfo {
    StreamInfo {
        kind: warden_domain::dto::StreamKind::Terminal,
        user_id: format!("bench-{i}"),
        email: format!("bench-{i}@example.com"),
        cluster: "bench".into(),
        namespace: Some("apple".into()),
        target: Some("pods/box".into()),
        started_at: 0,
    }
}

fn template() -> AuditEvent {
    AuditEvent::new(
        AuditKind::Terminal,
        Actor::System,
        SessionType::System,
        "terminal",
        Outcome::Allowed,
    )
}

#[inline(never)]
async fn nothing() -> Result<(), String> {
    Ok(())
}

async fn run() {
    let app = TestApp::spawn().await;
    let live = app.state.gateway.live.clone();
    let services = app.state.services.clone();
    let policy = &services.policy;

    // Per-frame check with nothing changed.
    let frames = env_num("TERMINAL_BENCH_FRAMES", 5_000_000);
    let allowed: Check = Arc::new(|| Box::pin(async { Ok(i64::MAX) }));
    let guard = live.register(info(0), policy.epoch(), i64::MAX, allowed, template());
    let t = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(nothing().await).ok();
    }
    let base = t.elapsed().as_nanos() as f64 / frames as f64;
    let t = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(guard.admit().await).expect("admitted");
    }
    let per_frame = t.elapsed().as_nanos() as f64 / frames as f64;
    drop(guard);
    println!("per-frame check (nothing changed): {per_frame:.1} ns per frame (empty async call: {base:.1} ns); target <= 100 ns");

    // Revoke -> close latency.
    let n = env_num("TERMINAL_BENCH_STREAMS", 100);
    let rounds = env_num("TERMINAL_BENCH_ROUNDS", 20);
    let mut lat: Vec<Duration> = Vec::new();
    for _ in 0..rounds {
        let revoked = Arc::new(AtomicBool::new(false));
        let check: Check = {
            let revoked = revoked.clone();
            Arc::new(move || {
                let revoked = revoked.clone();
                Box::pin(async move {
                    if revoked.load(Ordering::Acquire) {
                        Err("your access was removed".into())
                    } else {
                        Ok(i64::MAX)
                    }
                })
            })
        };
        let guards: Vec<_> = (0..n)
            .map(|i| live.register(info(i), policy.epoch(), i64::MAX, check.clone(), template()))
            .collect();
        // Each "terminal" waits on its cancellation, as the relay does.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for g in &guards {
            let c = g.cancelled();
            let tx = tx.clone();
            tokio::spawn(async move {
                c.await;
                let _ = tx.send(Instant::now());
            });
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        revoked.store(true, Ordering::Release);
        policy.bump();
        for _ in 0..n {
            let at = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("every stream ends within 5 s")
                .expect("a cancellation");
            lat.push(at - t0);
        }
        drop(guards);
    }
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "revoke -> close, {n} open terminals x {rounds} rounds: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; target p99 <= 100 ms",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );

    echo_round_trip().await;
}

/// Keys typed into a TTY (erasing the line now and then so it never fills), each timed from
/// the write to its echo.
async fn type_keys<W, R>(keys: u64, mut write: W, mut read_until: R) -> Vec<Duration>
where
    W: AsyncFnMut(&[u8]),
    R: AsyncFnMut(u8),
{
    let mut lat = Vec::with_capacity(keys as usize);
    for i in 0..keys {
        let key = b'a' + (i % 26) as u8;
        let t = Instant::now();
        write(&[key]).await;
        read_until(key).await;
        lat.push(t.elapsed());
        if i % 100 == 99 {
            // Ctrl-U: kill the line (its echo is read with the next key).
            write(&[0x15]).await;
        }
    }
    lat
}

async fn echo_round_trip() {
    let keys = env_num("TERMINAL_BENCH_KEYS", 2_000);
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", serde_json::json!({"name": "bench"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), "echo", "bench", &[], &["apple"])
        .await;
    sim.store()
        .create(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box", "namespace": "apple"},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}))
        .expect("pod");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Direct: the kube crate's exec straight to kubesim as its administrator.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&sim.admin_kubeconfig()).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "apple");
    let mut proc = pods
        .exec(
            "box",
            ["/bin/sh"],
            &kube::api::AttachParams::interactive_tty(),
        )
        .await
        .expect("direct exec");
    let mut stdin = proc.stdin().expect("stdin");
    let mut stdout = proc.stdout().expect("stdout");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = [0u8; 4096];
    let direct = type_keys(
        keys,
        async |b: &[u8]| stdin.write_all(b).await.expect("write"),
        async |key: u8| loop {
            let n = stdout.read(&mut buf).await.expect("read");
            assert!(n > 0, "the direct exec ended");
            if buf[..n].contains(&key) {
                break;
            }
        },
    )
    .await;
    drop(stdin);
    proc.abort();

    // Through Warden: the console's terminal WebSocket, as a namespace administrator.
    let c = app.user_client(&admin, "typist@example.com").await;
    admin
        .bind_user("typist@example.com", "NAMESPACE_ADMIN", "bench", &["apple"])
        .await;
    let mut req = format!(
        "ws://{}/api/v1/terminal/ws?cluster=echo&namespace=apple&pod=box",
        app.addr
    )
    .into_client_request()
    .expect("request");
    req.headers_mut()
        .insert("origin", app.url.parse().expect("origin"));
    req.headers_mut().insert(
        "cookie",
        format!("warden_session={}", c.session_cookie().expect("signed in"))
            .parse()
            .expect("cookie"),
    );
    let tcp = tokio::net::TcpStream::connect(app.addr).await.expect("tcp");
    tcp.set_nodelay(true).ok();
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("terminal");
    let (mut tx, mut rx) = ws.split();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warden = type_keys(
        keys,
        async |b: &[u8]| {
            tx.send(Message::Binary(b.to_vec().into()))
                .await
                .expect("send")
        },
        async |key: u8| loop {
            match rx.next().await {
                Some(Ok(Message::Binary(b))) if b.contains(&key) => break,
                Some(Ok(_)) => {}
                other => panic!("the terminal ended: {other:?}"),
            }
        },
    )
    .await;
    let (d50, d99) = p50_p99(direct);
    let (w50, w99) = p50_p99(warden);
    println!(
        "keystroke echo, {keys} keys: direct exec on kubesim p50 {d50:.2} ms p99 {d99:.2} ms; through Warden p50 {w50:.2} ms p99 {w99:.2} ms ({:.2}x direct at p50)",
        w50 / d50
    );
}
