//! The organization at scale: the generator (`warden dev seed`) makes a realistic organization,
//! and the lists page through it in the database (keyset cursors that stay valid while rows
//! are added, a forged cursor refused with the API's error envelope).

use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use std::process::Command;
use warden_domain::clock::Clock;
use warden_domain::seed::{seed, SeedOptions};
use warden_server::testing::{Client, TestApp};

fn warden(database_url: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_DATABASE_URL", database_url)
        .env("WARDEN_DATA_DIR", dir.path())
        .env("WARDEN_LOG", "error")
        .output()
        .expect("run warden")
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let db = &app.services().db;
    let row = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn strings(app: &TestApp, sql: &str) -> Vec<String> {
    let db = &app.services().db;
    db.query_all(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get_by_index::<String>(0).unwrap())
    .collect()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Every item of a paged list (`path` may carry a query already), following `next`.
async fn page_through(c: &Client, path: &str, limit: u32) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let url = match &cursor {
            Some(k) => format!("{path}{sep}limit={limit}&cursor={}", enc(k)),
            None => format!("{path}{sep}limit={limit}"),
        };
        let page = c.get(&url).await.assert_status(200).json();
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => return items,
        }
    }
    panic!("the list never ended");
}

fn emails(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn dev_seed_makes_a_realistic_organization_that_the_lists_page_through() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    // Through the command, as a developer runs it.
    let out = warden(
        &app.database_url,
        &[
            "dev",
            "seed",
            "--users",
            "200",
            "--groups",
            "20",
            "--projects",
            "10",
            "--clusters",
            "30",
            "--bindings",
            "600",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("seeded 200 users, 20 groups"), "{said}");
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM users").await, 201);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM groups").await, 22);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM projects").await, 11);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM clusters").await, 30);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM bindings").await, 601);
    // Realistic: everyone in All Users and in one to four teams; clusters shared; bindings at
    // every scope, to users and to groups; some users deactivated.
    let members = scalar(&app, "SELECT COUNT(*) FROM group_members").await;
    assert!((200 * 2 + 1..=200 * 5 + 2).contains(&members), "{members}");
    for (sql, min) in [
        ("SELECT COUNT(*) FROM cluster_shares", 1),
        ("SELECT COUNT(DISTINCT project_id) FROM clusters", 5),
        ("SELECT COUNT(*) FROM bindings WHERE project_id IS NULL", 2),
        (
            "SELECT COUNT(*) FROM bindings WHERE namespaces <> '[]'",
            100,
        ),
        (
            "SELECT COUNT(*) FROM bindings WHERE subject_kind = 'group'",
            100,
        ),
        (
            "SELECT COUNT(*) FROM bindings WHERE subject_kind = 'user'",
            300,
        ),
        ("SELECT COUNT(*) FROM users WHERE status = 'deactivated'", 1),
        (
            "SELECT COUNT(*) FROM clusters WHERE status = 'connected'",
            10,
        ),
    ] {
        let n = scalar(&app, sql).await;
        assert!(n >= min, "{sql}: {n} < {min}");
    }

    // A second run refuses: the organization is no longer empty.
    let again = warden(&app.database_url, &["dev", "seed", "--users", "5"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM users").await, 201);
    // Unless forced; the new names do not clash with the old.
    let more = seed(
        &app.services().db,
        &SeedOptions {
            users: 20,
            groups: 2,
            projects: 2,
            clusters: 3,
            bindings: 40,
            seed: 9,
            force: true,
        },
        app.clock.now(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(more.users, 20);
    assert_eq!(scalar(&app, "SELECT COUNT(*) FROM users").await, 221);
    app.services().policy.bump();

    // The API's list pages through every user, sorted by email, each once.
    let all = emails(&page_through(&admin, "/api/v1/users", 50).await);
    let mut expected = strings(&app, "SELECT email FROM users").await;
    expected.sort();
    assert_eq!(all, expected);
    // Filters page too, and agree with the tables.
    let deactivated = emails(&page_through(&admin, "/api/v1/users?status=deactivated", 7).await);
    let mut want = strings(&app, "SELECT email FROM users WHERE status = 'deactivated'").await;
    want.sort();
    assert_eq!(deactivated, want);
    let group = strings(
        &app,
        "SELECT name FROM groups WHERE builtin = false ORDER BY name",
    )
    .await[0]
        .clone();
    let in_group =
        emails(&page_through(&admin, &format!("/api/v1/users?group={}", enc(&group)), 3).await);
    let mut want = strings(
        &app,
        &format!("SELECT u.email FROM users u JOIN group_members m ON m.user_id = u.id JOIN groups g ON g.id = m.group_id WHERE g.name = '{group}'"),
    )
    .await;
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(in_group, want);
    let text = emails(&page_through(&admin, "/api/v1/users?q=ALICE", 5).await);
    assert!(!text.is_empty());
    assert!(text.iter().all(|e| e.contains("alice")));
    assert_eq!(
        text.len() as i64,
        scalar(
            &app,
            "SELECT COUNT(*) FROM users WHERE email LIKE '%alice%' OR LOWER(name) LIKE '%alice%'"
        )
        .await
    );

    // The console's users page renders from the same list.
    let page = admin.get("/users").await.assert_status(200);
    assert!(
        page.body.contains(&expected[0]),
        "the first user is on the page"
    );
}
