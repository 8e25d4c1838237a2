//! The console and the API at organization scale: a generated organization (`warden dev
//! seed`'s generator), then the server time of every list endpoint (first page and a deep
//! page), of the main console pages, of a cold authorization decision, and the server's
//! memory.
//!
//! `cargo bench -p server --bench org`. The server runs in this process on a fresh database:
//! a SQLite file in a temporary directory, or a new PostgreSQL database when
//! `WARDEN_TEST_DATABASE_URL` is set (as for the tests); either is deleted afterwards.
//! Environment:
//! - `ORG_BENCH_USERS`, `_GROUPS`, `_PROJECTS`, `_CLUSTERS`, `_BINDINGS`: the organization
//!   (default the issue's: 10,000 / 1,000 / 500 / 1,000 / 50,000).
//! - `ORG_BENCH_RUNS`: timed requests of each kind (default 20, after one warm-up).
//!
//! Times are measured by the client over loopback (request sent to response read), so they
//! include a little more than the server's own time.

mod common;

use common::{env_num, memory_kib, ms, pct};
use sea_orm::{ConnectionTrait, Statement};
use std::time::{Duration, Instant};
use warden_domain::access::{Action, Target};
use warden_domain::admin::cursor;
use warden_domain::clock::Clock;
use warden_domain::ids::UserId;
use warden_domain::permissions::Permission;
use warden_domain::seed::{seed, SeedOptions};
use warden_server::testing::{Client, TestApp};

/// Memory in MiB.
fn mib((rss, peak): (u64, u64)) -> (f64, f64) {
    (rss as f64 / 1024.0, peak as f64 / 1024.0)
}

fn main() {
    common::block_on(run());
}

async fn first_string(app: &TestApp, sql: &str) -> String {
    let db = &app.services().db;
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .expect("query")
    .expect("a row")
    .try_get_by_index::<String>(0)
    .expect("a string")
}

struct Row {
    name: String,
    p50: Duration,
    p95: Duration,
    bytes: usize,
}

async fn time_get(c: &Client, name: &str, path: &str, runs: u64) -> Row {
    let warm = c.get(path).await;
    assert_eq!(warm.status, 200, "{name}: {path}: {}", warm.body);
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = c.get(path).await;
        v.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    Row {
        name: name.to_owned(),
        p50: pct(&mut v, 0.5),
        p95: pct(&mut v, 0.95),
        bytes: warm.body.len(),
    }
}

async fn run() {
    let runs = env_num("ORG_BENCH_RUNS", 20).max(1);
    let opts = SeedOptions {
        users: env_num("ORG_BENCH_USERS", 10_000),
        groups: env_num("ORG_BENCH_GROUPS", 1_000),
        projects: env_num("ORG_BENCH_PROJECTS", 500),
        clusters: env_num("ORG_BENCH_CLUSTERS", 1_000),
        bindings: env_num("ORG_BENCH_BINDINGS", 50_000),
        ..Default::default()
    };
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let backend = if app.database_url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let (rss0, _) = mib(memory_kib("self"));
    let t = Instant::now();
    let s = seed(&app.services().db, &opts, app.clock.now(), |what, n| {
        eprintln!("  {n} {what}")
    })
    .await
    .expect("seed");
    println!(
        "org bench on {backend}: seeded {} users, {} groups ({} memberships), {} projects, {} clusters ({} shares), {} bindings in {:.1} s",
        s.users,
        s.groups,
        s.memberships,
        s.projects,
        s.clusters,
        s.shares,
        s.bindings,
        t.elapsed().as_secs_f64()
    );
    app.services().policy.bump();

    // Deep pages: the cursor after the row at 90% of each list.
    let deep = |table: &str, key: &str, n: u64| {
        format!(
            "SELECT {key} FROM {table} ORDER BY {key} LIMIT 1 OFFSET {}",
            n * 9 / 10
        )
    };
    let deep_user = first_string(&app, &deep("users", "email", s.users)).await;
    let deep_binding = first_string(&app, &deep("bindings", "id", s.bindings)).await;
    let deep_cluster = first_string(&app, &deep("clusters", "name", s.clusters)).await;
    let some_user = first_string(
        &app,
        "SELECT u.email FROM users u JOIN bindings b ON b.user_id = u.id WHERE u.status = 'active' GROUP BY u.email ORDER BY COUNT(*) DESC, u.email LIMIT 1",
    )
    .await;
    let some_group = first_string(
        &app,
        "SELECT name FROM groups WHERE builtin = false ORDER BY name LIMIT 1",
    )
    .await;
    let some_project = first_string(
        &app,
        "SELECT name FROM projects ORDER BY name LIMIT 1 OFFSET 7",
    )
    .await;
    let some_cluster = first_string(
        &app,
        "SELECT name FROM clusters ORDER BY name LIMIT 1 OFFSET 11",
    )
    .await;
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };

    let requests: Vec<(String, String)> = vec![
        (
            "GET /api/v1/users (first page)".into(),
            "/api/v1/users".into(),
        ),
        (
            "GET /api/v1/users (deep page)".into(),
            format!(
                "/api/v1/users?cursor={}",
                cursor::encode("users", &deep_user)
            ),
        ),
        (
            "GET /api/v1/users?q=alice".into(),
            "/api/v1/users?q=alice".into(),
        ),
        (
            "GET /api/v1/users?group=G".into(),
            format!("/api/v1/users?group={}", enc(&some_group)),
        ),
        (
            "GET /api/v1/users?role=R&project=P".into(),
            format!("/api/v1/users?role=PROJECT_ADMIN&project={some_project}"),
        ),
        (
            "GET /api/v1/users?status=deactivated".into(),
            "/api/v1/users?status=deactivated".into(),
        ),
        (
            "GET /api/v1/users/{email}".into(),
            format!("/api/v1/users/{}", enc(&some_user)),
        ),
        (
            "GET /api/v1/bindings (first page)".into(),
            "/api/v1/bindings".into(),
        ),
        (
            "GET /api/v1/bindings (deep page)".into(),
            format!(
                "/api/v1/bindings?cursor={}",
                cursor::encode("bindings", &deep_binding)
            ),
        ),
        (
            "GET /api/v1/bindings?project=P".into(),
            format!("/api/v1/bindings?project={some_project}"),
        ),
        (
            "GET /api/v1/clusters (first page)".into(),
            "/api/v1/clusters".into(),
        ),
        (
            "GET /api/v1/clusters (deep page)".into(),
            format!(
                "/api/v1/clusters?cursor={}",
                cursor::encode("clusters", &deep_cluster)
            ),
        ),
        (
            "GET /api/v1/clusters?label=env=prod".into(),
            "/api/v1/clusters?label=env%3Dprod".into(),
        ),
        (
            "GET /api/v1/clusters/{name}".into(),
            format!("/api/v1/clusters/{some_cluster}"),
        ),
        ("GET /api/v1/projects".into(), "/api/v1/projects".into()),
        ("GET /api/v1/groups".into(), "/api/v1/groups".into()),
        ("GET /api/v1/roles".into(), "/api/v1/roles".into()),
        ("GET /api/v1/api-keys".into(), "/api/v1/api-keys".into()),
        ("GET /api/v1/me".into(), "/api/v1/me".into()),
        ("console /".into(), "/".into()),
        ("console /users".into(), "/users".into()),
        (
            "console /users/{id}".into(),
            format!("/users/{}", enc(&some_user)),
        ),
        ("console /groups".into(), "/groups".into()),
        ("console /projects".into(), "/projects".into()),
        ("console /clusters".into(), "/clusters".into()),
        ("console /roles".into(), "/roles".into()),
    ];
    let mut rows = Vec::new();
    for (name, path) in &requests {
        rows.push(time_get(&admin, name, path, runs).await);
    }

    // A cold authorization decision: the epoch moves before each, so the caller's rights
    // are read from the database every time. A typical user (the one with the most direct
    // bindings) and the organization's administrator.
    let svc = app.services().clone();
    let cold = |uid: UserId, action: Action| {
        let svc = svc.clone();
        async move {
            let mut v = Vec::new();
            for i in 0..=runs {
                svc.policy.bump();
                // What the epoch's move sets off (live streams re-checked, the other replicas
                // told) settles first: the decision alone is timed.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let t = Instant::now();
                let d = svc.policy.explain(uid, &action).await.expect("decide");
                if i > 0 {
                    v.push(t.elapsed());
                }
                let _ = std::hint::black_box(d);
            }
            (pct(&mut v, 0.5), pct(&mut v, 0.95))
        }
    };
    let id_of = |email: String| {
        let app = &app;
        async move {
            UserId::parse(
                &first_string(
                    app,
                    &format!("SELECT id FROM users WHERE email = '{email}'"),
                )
                .await,
            )
            .expect("a user id")
        }
    };
    let user = id_of(some_user.clone()).await;
    let admin_id = id_of(warden_server::testing::ADMIN_EMAIL.to_owned()).await;
    let action = Action {
        permission: Permission::ClusterRead,
        target: Target::Project(some_project.clone()),
    };
    let (u50, u95) = cold(user, action.clone()).await;
    let (a50, a95) = cold(admin_id, action).await;
    let (rss1, peak) = mib(memory_kib("self"));

    println!("\n| request | p50 ms | p95 ms | response bytes |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.name,
            ms(r.p50),
            ms(r.p95),
            r.bytes
        );
    }
    println!(
        "| cold authorization decision, a user ({some_user}) | {} | {} | |",
        ms(u50),
        ms(u95)
    );
    println!(
        "| cold authorization decision, the administrator | {} | {} | |",
        ms(a50),
        ms(a95)
    );
    println!(
        "\nmemory (this process: server and client): {rss0:.0} MiB before seeding, {rss1:.0} MiB after the requests, peak {peak:.0} MiB"
    );
    let slow: Vec<&Row> = rows
        .iter()
        .filter(|r| r.p95 > Duration::from_millis(100))
        .collect();
    if slow.is_empty() {
        println!("every list and page: p95 <= 100 ms");
    } else {
        for r in slow {
            println!("over 100 ms at p95: {} ({} ms)", r.name, ms(r.p95));
        }
    }
    println!(
        "cold decision <= 5 ms at p95: {}",
        if u95.max(a95) <= Duration::from_millis(5) {
            "yes"
        } else {
            "no"
        }
    );
}
