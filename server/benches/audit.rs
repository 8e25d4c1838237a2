//! The audit log at scale: every filter of the audit page (list, deep keyset page, facets,
//! histogram) on a generated database, export throughput through the REST export, and ingest
//! throughput through the gateway's batched writer.
//!
//! `cargo bench -p server --bench audit`. Environment:
//! - `AUDIT_BENCH_DATABASE_URL`: the database (default: a SQLite file,
//!   `sqlite:///tmp/warden-audit-bench.sqlite?mode=rwc`). It is migrated, and filled with
//!   generated events (`warden audit generate`'s generator) up to `AUDIT_BENCH_EVENTS`
//!   (default 1,000,000) when it holds fewer; it is kept afterwards (delete it yourself).
//! - `AUDIT_BENCH_RUNS`: timed runs of each query (default 7, after one warm-up run).
//! - `AUDIT_BENCH_EXPORT`: events per export run (default 200,000; 0 skips).
//! - `AUDIT_BENCH_INGEST`: events written through the batched writer (default 200,000; 0 skips).
//! - `AUDIT_BENCH_INGEST_BASE`: events generated into the ingest's scratch database first
//!   (default 0: an empty log), to measure ingest into a log that no longer fits in memory.
//! - `AUDIT_BENCH_ONLY`: run only the queries whose name contains this.
//! - `AUDIT_BENCH_TEXT_WINDOW`: a free-text list's newest-events window on PostgreSQL (default:
//!   the list's own); larger than the log, every match is read through the text index.
//! - `AUDIT_BENCH_WORK_MEM`: PostgreSQL's `work_mem` on the connections, as
//!   `WARDEN_DATABASE_WORK_MEM` sets Warden's (default 64MB; `default`: the server's own).
//!
//! Times are relative to the newest event, so the presets (15m ... 30d) cover data whenever the
//! database was generated.

mod common;

use common::{env_num, ms, pct};
use std::time::{Duration, Instant};
use warden_domain::audit::generate::{generate, GenerateOptions};
use warden_domain::audit::{facets_at, histogram_at, search_in, AuditScope};
use warden_domain::clock::Timestamp;
use warden_domain::dto::AuditQuery;

fn main() {
    common::block_on(run());
}

/// The page's filters: each alone, and realistic combinations; custom ranges end before
/// `now` (the newest event).
fn queries(now: Timestamp) -> Vec<(&'static str, AuditQuery)> {
    let q = |f: fn(&mut AuditQuery)| {
        let mut a = AuditQuery::default();
        f(&mut a);
        a
    };
    // `since`..`until`, `from` and `to` hours before `now`.
    let between = |from: i64, to: i64, f: fn(&mut AuditQuery)| {
        let mut a = AuditQuery::default();
        a.since = Some(Timestamp(now.millis() - from * 3_600_000).rfc3339());
        a.until = Some(Timestamp(now.millis() - to * 3_600_000).rfc3339());
        f(&mut a);
        a
    };
    vec![
        ("all", q(|_| {})),
        ("range=15m", q(|a| a.range = Some("15m".into()))),
        ("range=1h", q(|a| a.range = Some("1h".into()))),
        ("range=24h", q(|a| a.range = Some("24h".into()))),
        ("range=7d", q(|a| a.range = Some("7d".into()))),
        ("range=30d", q(|a| a.range = Some("30d".into()))),
        ("a day, 30 d ago", between(30 * 24, 29 * 24, |_| {})),
        ("a week, 60 d ago", between(60 * 24, 53 * 24, |_| {})),
        (
            "an hour yesterday + actor",
            between(30, 29, |a| a.actor = Some("bob".into())),
        ),
        (
            "6 h, 10 d ago + kind=kube_api",
            between(10 * 24 + 6, 10 * 24, |a| a.kind = Some("kube_api".into())),
        ),
        ("actor=alice.sm", q(|a| a.actor = Some("alice.sm".into()))),
        ("kind=sign_in", q(|a| a.kind = Some("sign_in".into()))),
        ("kind=kube_api", q(|a| a.kind = Some("kube_api".into()))),
        ("outcome=denied", q(|a| a.outcome = Some("denied".into()))),
        ("outcome=error", q(|a| a.outcome = Some("error".into()))),
        (
            "project=payments",
            q(|a| a.project = Some("payments".into())),
        ),
        (
            "cluster=prod-eu-1",
            q(|a| a.cluster = Some("prod-eu-1".into())),
        ),
        (
            "namespace=ledger",
            q(|a| a.namespace = Some("ledger".into())),
        ),
        ("verb=exec", q(|a| a.verb = Some("exec".into()))),
        ("verb=delete", q(|a| a.verb = Some("delete".into()))),
        (
            "resource=secrets",
            q(|a| a.resource = Some("secrets".into())),
        ),
        ("status=500", q(|a| a.status = Some(500))),
        (
            "source_ip=203.0.113.7",
            q(|a| a.source_ip = Some("203.0.113.7".into())),
        ),
        ("action=auth.", q(|a| a.action = Some("auth.".into()))),
        (
            "q=payments-batch",
            q(|a| a.q = Some("payments-batch".into())),
        ),
        ("q=locked (reason)", q(|a| a.q = Some("LOCKED".into()))),
        ("q=api-1f2 (pod name)", q(|a| a.q = Some("api-1f2".into()))),
        ("q=no match", q(|a| a.q = Some("zzqx-nothing".into()))),
        (
            "24h+kind=kube_api+outcome=denied",
            q(|a| {
                a.range = Some("24h".into());
                a.kind = Some("kube_api".into());
                a.outcome = Some("denied".into());
            }),
        ),
        (
            "7d+cluster+namespace+verb=exec",
            q(|a| {
                a.range = Some("7d".into());
                a.cluster = Some("prod-eu-1".into());
                a.namespace = Some("payments".into());
                a.verb = Some("exec".into());
            }),
        ),
        (
            "30d+actor+outcome=denied",
            q(|a| {
                a.range = Some("30d".into());
                a.actor = Some("bob".into());
                a.outcome = Some("denied".into());
            }),
        ),
        (
            "1h+project+resource=pods",
            q(|a| {
                a.range = Some("1h".into());
                a.project = Some("checkout".into());
                a.resource = Some("pods".into());
            }),
        ),
        (
            "15m+kind=sign_in+outcome=denied",
            q(|a| {
                a.range = Some("15m".into());
                a.kind = Some("sign_in".into());
                a.outcome = Some("denied".into());
            }),
        ),
        (
            "30d+status=403+cluster",
            q(|a| {
                a.range = Some("30d".into());
                a.status = Some(403);
                a.cluster = Some("prod-us-1".into());
            }),
        ),
        (
            "7d+q=ledger+verb=delete",
            q(|a| {
                a.range = Some("7d".into());
                a.q = Some("ledger".into());
                a.verb = Some("delete".into());
            }),
        ),
        (
            "24h+source_ip+actor",
            q(|a| {
                a.range = Some("24h".into());
                a.source_ip = Some("10.1.2.3".into());
                a.actor = Some("carol".into());
            }),
        ),
    ]
}

async fn time<F, Fut, T>(runs: u64, mut f: F) -> (Duration, Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = f().await;
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        out = f().await;
        v.push(t.elapsed());
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.95), out)
}

/// The list, with `AUDIT_BENCH_TEXT_WINDOW` (when set) as a free-text list's newest-events
/// window on PostgreSQL: a window larger than the log reads every match through the text index
/// (the list before that window existed), for comparing both in one run.
async fn list(
    db: &sea_orm::DatabaseConnection,
    q: &warden_domain::dto::AuditQuery,
    scope: &AuditScope,
    now: Timestamp,
) -> warden_domain::DomainResult<warden_domain::dto::Page<warden_domain::dto::AuditEventDto>> {
    match std::env::var("AUDIT_BENCH_TEXT_WINDOW") {
        Ok(w) => {
            let w = w
                .parse()
                .expect("AUDIT_BENCH_TEXT_WINDOW: a number of events");
            warden_domain::audit::search_windowed(db, q, scope, now, w).await
        }
        Err(_) => search_in(db, q, scope, now).await,
    }
}

async fn run() {
    let url = std::env::var("AUDIT_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite:///tmp/warden-audit-bench.sqlite?mode=rwc".into());
    let want = env_num("AUDIT_BENCH_EVENTS", 1_000_000);
    let runs = env_num("AUDIT_BENCH_RUNS", 7).max(1);
    let only = std::env::var("AUDIT_BENCH_ONLY").unwrap_or_default();
    let db = warden_migrations_connect(&url).await;
    let have = count(&db).await;
    if have < want * 9 / 10 {
        let n = want - have;
        println!("generating {n} events into {} ...", redact(&url));
        let t = Instant::now();
        let now = Timestamp::from_offset(time::OffsetDateTime::now_utc());
        generate(
            &db,
            &GenerateOptions {
                events: n,
                // A top-up of a database filled before draws other events (and ids).
                seed: GenerateOptions::default().seed.wrapping_add(have),
                ..Default::default()
            },
            now,
            |w| {
                if w % 100_000 == 0 {
                    eprintln!("  {w}/{n} ({:.0}/s)", w as f64 / t.elapsed().as_secs_f64());
                }
            },
        )
        .await
        .expect("generate");
        let s = t.elapsed().as_secs_f64();
        println!(
            "generated {n} events in {s:.1} s ({:.0} events/s, generator: multi-row INSERTs, indexes and text index maintained)",
            n as f64 / s
        );
    }
    let total = count(&db).await;
    let newest = newest_at(&db).await;
    let now = Timestamp(newest + 1);
    let backend = format!("{:?}", sea_orm::ConnectionTrait::get_database_backend(&db));
    println!(
        "\n{backend}, {total} events; {runs} runs per query (p50 / p95 in ms); scope: everything\n"
    );
    println!(
        "{:<36} {:>15} {:>15} {:>15} {:>15}  {:>9}",
        "filter", "list", "deep page", "facets", "histogram", "matches"
    );
    let scope = AuditScope::all();
    let mut worst = (Duration::ZERO, "");
    for (name, q) in queries(now) {
        if !only.is_empty() && !name.contains(&only) {
            continue;
        }
        let (l50, l95, page) = time(runs, || list(&db, &q, &scope, now)).await;
        let page = page.expect("list");
        // A deep keyset page: the page after the event half-way down the log.
        let mut deep = q.clone();
        deep.cursor = Some((total as i64 / 2).to_string());
        let (d50, d95, _) = time(runs, || list(&db, &deep, &scope, now)).await;
        let (f50, f95, facets) = time(runs, || facets_at(&db, &q, &scope, now)).await;
        let facets = facets.expect("facets");
        let (h50, h95, h) = time(runs, || histogram_at(&db, &q, &scope, now)).await;
        h.expect("histogram");
        for (d, what) in [(l95, name), (d95, name), (f95, name), (h95, name)] {
            if d > worst.0 {
                worst = (d, what);
            }
        }
        let _ = page;
        println!(
            "{:<36} {:>15} {:>15} {:>15} {:>15}  {:>9}",
            name,
            format!("{} / {}", ms(l50), ms(l95)),
            format!("{} / {}", ms(d50), ms(d95)),
            format!("{} / {}", ms(f50), ms(f95)),
            format!("{} / {}", ms(h50), ms(h95)),
            facets.total
        );
    }
    println!("\nworst p95: {} ms ({})", ms(worst.0), worst.1);
    if env_num("AUDIT_BENCH_EXPORT", 200_000) > 0 {
        export(&url).await;
    }
    let ingest = env_num("AUDIT_BENCH_INGEST", 200_000);
    if ingest > 0 {
        // Into a database of its own: the events written would otherwise crowd the newest
        // minutes of the generated log and change the next run's figures.
        let (ingest_url, drop) = scratch_database(&url).await;
        let scratch = warden_migrations_connect(&ingest_url).await;
        let base = env_num("AUDIT_BENCH_INGEST_BASE", 0);
        if base > 0 {
            let t = Instant::now();
            let now = Timestamp::from_offset(time::OffsetDateTime::now_utc());
            generate(
                &scratch,
                &GenerateOptions {
                    events: base,
                    ..Default::default()
                },
                now,
                |_| {},
            )
            .await
            .expect("generate the ingest's base");
            println!(
                "\ningest's scratch log: {base} events generated first ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
        }
        ingest_through_writer(&scratch, ingest).await;
        scratch.close().await.ok();
        drop.await;
    }
}

/// An empty database beside `url` for the ingest run, and what removes it afterwards: a new
/// PostgreSQL database on the same server, or a SQLite file beside the bench's.
async fn scratch_database(
    url: &str,
) -> (
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) {
    use sea_orm::ConnectionTrait;
    if url.starts_with("postgres") {
        let name = format!("warden_audit_ingest_{}", std::process::id());
        let admin = sea_orm::Database::connect(url).await.expect("connect");
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop the scratch database");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the scratch database");
        let (prefix, _) = url.rsplit_once('/').expect("a URL ending in /DBNAME");
        let scratch = format!("{prefix}/{name}");
        (
            scratch,
            Box::pin(async move {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }),
        )
    } else {
        let path =
            std::env::temp_dir().join(format!("warden-audit-ingest-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let scratch = format!("sqlite://{}?mode=rwc", path.display());
        (
            scratch,
            Box::pin(async move {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }),
        )
    }
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.to_owned(),
    }
}

async fn warden_migrations_connect(url: &str) -> sea_orm::DatabaseConnection {
    use warden_migrations::MigratorTrait;
    let mut opt = sea_orm::ConnectOptions::new(url.to_owned());
    opt.max_connections(8).sqlx_logging(false);
    let work_mem = warden_server::config::WorkMem::setting(
        &std::env::var("AUDIT_BENCH_WORK_MEM")
            .unwrap_or_else(|_| warden_server::config::DEFAULT_WORK_MEM.to_owned()),
    )
    .unwrap_or_else(|e| panic!("AUDIT_BENCH_WORK_MEM: {e}"));
    warden_server::startup::postgres_session(&mut opt, work_mem.as_ref());
    let db = sea_orm::Database::connect(opt).await.expect("connect");
    if url.starts_with("sqlite") {
        for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"] {
            sea_orm::ConnectionTrait::execute_unprepared(&db, pragma)
                .await
                .expect("pragma");
        }
    }
    warden_migrations::Migrator::up(&db, None)
        .await
        .expect("migrate");
    db
}

async fn count(db: &sea_orm::DatabaseConnection) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    warden_domain::entities::audit_events::Entity::find()
        .count(db)
        .await
        .expect("count")
}

async fn newest_at(db: &sea_orm::DatabaseConnection) -> i64 {
    use sea_orm::{EntityTrait, QueryOrder};
    warden_domain::entities::audit_events::Entity::find()
        .order_by_desc(warden_domain::entities::audit_events::Column::Seq)
        .one(db)
        .await
        .expect("newest")
        .map_or(0, |m| m.at)
}

/// Export throughput: the REST export (`GET /api/v1/audit/export`, streamed page by page; the
/// newest `AUDIT_BENCH_EXPORT` events, default 200,000) on a Warden started on this database,
/// CSV and NDJSON.
async fn export(url: &str) {
    use warden_server::testing::TestApp;
    let n = env_num("AUDIT_BENCH_EXPORT", 200_000);
    let app = TestApp::spawn_on(url).await;
    // The first run initialises the administrator (and changes the password); later runs on
    // the same database sign in with the changed one.
    let again = app.client();
    let (_app, admin) = if again
        .login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .status
        == 200
    {
        (app, again)
    } else {
        app.with_admin().await
    };
    println!("\nexport (REST, admin, newest {n} events, 3 runs each):");
    for format in ["csv", "ndjson"] {
        let mut best = None::<(f64, usize, Duration)>;
        for _ in 0..3 {
            let t = Instant::now();
            let r = admin
                .get(&format!("/api/v1/audit/export?format={format}&limit={n}"))
                .await;
            let d = t.elapsed();
            assert_eq!(r.status, 200, "{}", r.body);
            let mbs = r.body.len() as f64 / 1e6 / d.as_secs_f64();
            if best.map_or(true, |b| mbs > b.0) {
                best = Some((mbs, r.body.len(), d));
            }
        }
        let (mbs, len, d) = best.expect("runs");
        println!(
            "  {format:<7} {:.1} MB in {} ms: {mbs:.1} MB/s (best of 3)",
            len as f64 / 1e6,
            ms(d)
        );
    }
}

/// Ingest throughput: events recorded through the gateway's batched writer (one transaction
/// per batch of up to 1,000; many producers), until all are stored.
async fn ingest_through_writer(db: &sea_orm::DatabaseConnection, n: u64) {
    use std::sync::Arc;
    use warden_domain::audit::{
        Actor, AuditEvent, AuditKind, AuditSink, BatchingAuditSink, DbAuditSink, Outcome,
        RequestMeta, SessionType,
    };
    let clock: warden_domain::clock::SharedClock = Arc::new(warden_domain::clock::SystemClock);
    let inner = Arc::new(DbAuditSink::new(db.clone(), clock));
    let sink = BatchingAuditSink::spawn(inner, 10_000, 1_000);
    let producers = 16u64;
    let t = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for i in 0..n / producers {
                    let mut ev = AuditEvent::new(
                        AuditKind::KubeApi,
                        Actor::Anonymous {
                            claimed: format!("bench-{p}"),
                        },
                        SessionType::Cli,
                        "kube.get",
                        Outcome::Allowed,
                    )
                    .resource("pods", format!("bench-{p}-{i}"))
                    .request(RequestMeta {
                        method: Some("GET".into()),
                        path: Some(format!(
                            "/clusters/bench/api/v1/namespaces/bench/pods/bench-{p}-{i}"
                        )),
                        source_ip: Some("10.9.9.9".into()),
                        user_agent: Some("kubectl/v1.31.2".into()),
                        request_id: None,
                    })
                    .status(200);
                    ev.cluster = Some("bench".into());
                    ev.namespace = Some("bench".into());
                    sink.record(ev).await.expect("record");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("producer");
    }
    sink.flush().await;
    let d = t.elapsed();
    let stored = n / producers * producers;
    println!(
        "\ningest through the batched writer: {stored} events in {:.2} s: {:.0} events/s",
        d.as_secs_f64(),
        stored as f64 / d.as_secs_f64()
    );
    // The rollup's catch-up over what was just written (the background job's batches): it
    // must keep up with the writer, or reads count a longer tail from the events.
    let t = Instant::now();
    let mut counted = 0;
    loop {
        let moved = warden_domain::audit::rollup::catch_up(db, 50_000)
            .await
            .expect("catch up");
        if moved == 0 {
            break;
        }
        counted += moved;
    }
    let d = t.elapsed();
    println!(
        "rollup catch-up (batches of 50,000): {counted} events in {:.2} s: {:.0} events/s",
        d.as_secs_f64(),
        counted as f64 / d.as_secs_f64()
    );
}
