//! The cost of authorization on every frame, in one run (release build):
//! - the per-frame check of a live stream or terminal when nothing changed (`LiveGuard::admit`,
//!   target ≤ 100 ns), against an empty async call as the reference;
//! - revoke → close latency: N live streams (terminals) open, one authorization change that
//!   ends them all; how long after the change each is cancelled (p50, p99; target p99 ≤ 100 ms).
//!
//! `cargo bench -p server --bench terminal` (`TERMINAL_BENCH_STREAMS`, default 100;
//! `TERMINAL_BENCH_ROUNDS`, default 20; `TERMINAL_BENCH_FRAMES`, default 5,000,000).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
use warden_server::live::{Check, StreamInfo};
use warden_server::testing::TestApp;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn info(i: u64) -> StreamInfo {
    StreamInfo {
        kind: "terminal".into(),
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
}
