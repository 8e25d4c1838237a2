//! The organization at scale: the generator (`warden dev seed`) makes a realistic organization,
//! and the lists page through it in the database (keyset cursors that stay valid while rows
//! are added, a forged cursor refused with the API's error envelope).

use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;
use std::collections::BTreeSet;
use warden_domain::access::Principal;
use warden_domain::audit::{RequestMeta, SessionType};
use warden_domain::clock::Clock;
use warden_domain::ids::UserId;
use warden_domain::seed::{seed, SeedOptions};
use warden_server::testing::{Client, TestApp};

use crate::support::{sql_i64, sql_strings, warden};

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
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("seeded 200 users, 20 groups"), "{said}");
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM users").await,
        201
    );
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM groups").await,
        22
    );
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM projects").await,
        11
    );
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM clusters").await,
        30
    );
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM bindings").await,
        601
    );
    // Realistic: everyone in All Users and in one to four teams; clusters shared; bindings at
    // every scope, to users and to groups; some users deactivated.
    let members = sql_i64(&app.services().db, "SELECT COUNT(*) FROM group_members").await;
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
        let n = sql_i64(&app.services().db, sql).await;
        assert!(n >= min, "{sql}: {n} < {min}");
    }

    // A second run refuses: the organization is no longer empty.
    let again = warden(&app.database_url, &["dev", "seed", "--users", "5"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM users").await,
        201
    );
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
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM users").await,
        221
    );
    app.services().policy.bump();

    // The API's list pages through every user, sorted by email, each once.
    let all = emails(&page_through(&admin, "/api/v1/users", 50).await);
    let mut expected = sql_strings(&app.services().db, "SELECT email FROM users").await;
    expected.sort();
    assert_eq!(all, expected);
    // Filters page too, and agree with the tables.
    let deactivated = emails(&page_through(&admin, "/api/v1/users?status=deactivated", 7).await);
    let mut want = sql_strings(
        &app.services().db,
        "SELECT email FROM users WHERE status = 'deactivated'",
    )
    .await;
    want.sort();
    assert_eq!(deactivated, want);
    let group = sql_strings(
        &app.services().db,
        "SELECT name FROM groups WHERE builtin = false ORDER BY name",
    )
    .await[0]
        .clone();
    let in_group =
        emails(&page_through(&admin, &format!("/api/v1/users?group={}", enc(&group)), 3).await);
    let mut want = sql_strings(
        &app.services().db,
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
        sql_i64(
            &app.services().db,
            "SELECT COUNT(*) FROM users WHERE email LIKE '%alice%' OR LOWER(name) LIKE '%alice%'"
        )
        .await
    );

    // Role and project filters: a user matches when a live binding of theirs or of one of
    // their groups has the role (and one, maybe another, is in the project). The reference is
    // computed here from the raw tables.
    let now = app.clock.now().millis();
    let pairs = |sql: String| {
        let app = &app;
        async move {
            let db = &app.services().db;
            db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.try_get_by_index::<String>(0).unwrap(),
                        r.try_get_by_index::<String>(1).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let live = format!("(b.expires_at IS NULL OR b.expires_at > {now})");
    // (user email, role name, project name or "") for every binding that applies to a user.
    let mut applies: Vec<(String, String, String)> = Vec::new();
    for (sql, via_group) in [
        (format!("SELECT u.email, r.name || '|' || COALESCE(p.name, '') FROM bindings b JOIN users u ON u.id = b.user_id JOIN roles r ON r.id = b.role_id LEFT JOIN projects p ON p.id = b.project_id WHERE {live}"), false),
        (format!("SELECT u.email, r.name || '|' || COALESCE(p.name, '') FROM bindings b JOIN group_members m ON m.group_id = b.group_id JOIN users u ON u.id = m.user_id JOIN roles r ON r.id = b.role_id LEFT JOIN projects p ON p.id = b.project_id WHERE {live}"), true),
    ] {
        let rows = pairs(sql).await;
        assert!(via_group || !rows.is_empty());
        for (e, rp) in rows {
            let (r, p) = rp.split_once('|').unwrap();
            applies.push((e, r.to_owned(), p.to_owned()));
        }
    }
    let project = sql_strings(
        &app.services().db,
        "SELECT name FROM projects ORDER BY name LIMIT 1 OFFSET 3",
    )
    .await[0]
        .clone();
    for (role, project) in [
        (Some("PROJECT_ADMIN"), None),
        (None, Some(project.as_str())),
        (Some("NAMESPACE_READ_ONLY"), Some(project.as_str())),
    ] {
        let mut want: Vec<String> = expected
            .iter()
            .filter(|e| role.is_none_or(|r| applies.iter().any(|a| &a.0 == *e && a.1 == r)))
            .filter(|e| project.is_none_or(|p| applies.iter().any(|a| &a.0 == *e && a.2 == p)))
            .cloned()
            .collect();
        want.sort();
        let mut path = "/api/v1/users?status=".to_owned();
        if let Some(r) = role {
            path.push_str(&format!("&role={r}"));
        }
        if let Some(p) = project {
            path.push_str(&format!("&project={p}"));
        }
        let got = emails(&page_through(&admin, &path, 9).await);
        assert!(!want.is_empty(), "{path}");
        assert_eq!(got, want, "{path}");
    }

    // The groups list counts members in the database and leaves the members to each group's
    // page.
    let groups = admin.get("/api/v1/groups").await.assert_status(200).json();
    let all_users = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "All Users")
        .unwrap()
        .clone();
    assert_eq!(all_users["member_count"], 221);
    assert_eq!(all_users["members"].as_array().unwrap().len(), 0);
    let one = admin
        .get(&format!("/api/v1/groups/{}", enc(&group)))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        one["member_count"].as_u64().unwrap() as usize,
        one["members"].as_array().unwrap().len()
    );
    assert_eq!(one["members"].as_array().unwrap().len(), want.len());

    // The console's users page renders from the same list.
    let page = admin.get("/users").await.assert_status(200);
    assert!(
        page.body.contains(&expected[0]),
        "the first user is on the page"
    );
}

async fn small_org(app: &TestApp) {
    seed(
        &app.services().db,
        &SeedOptions {
            users: 120,
            groups: 8,
            projects: 6,
            clusters: 40,
            bindings: 300,
            seed: 3,
            force: false,
        },
        app.clock.now(),
        |_, _| {},
    )
    .await
    .unwrap();
    app.services().policy.bump();
}

/// A cursor names a position, not a row: pages keep going, without repeats or gaps among the
/// rows that were there, while rows are added before and after it.
#[tokio::test]
async fn cursors_stay_valid_while_rows_are_added() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    small_org(&app).await;
    let before = {
        let mut e = sql_strings(&app.services().db, "SELECT email FROM users").await;
        e.sort();
        e
    };
    let mut seen = Vec::new();
    let first = admin
        .get("/api/v1/users?limit=25")
        .await
        .assert_status(200)
        .json();
    seen.extend(emails(first["items"].as_array().unwrap()));
    let mut cursor = first["next"].as_str().unwrap().to_owned();
    let mut added_after = Vec::new();
    let mut round = 0;
    loop {
        // Between pages: a user sorting before the cursor (never shown now) and one after it
        // (shown once, in order).
        for email in [
            format!("aaa.new{round}@example.com"),
            format!("zzz.new{round}@example.com"),
        ] {
            admin
                .post(
                    "/api/v1/users",
                    serde_json::json!({"email": email, "name": "New Person"}),
                )
                .await
                .assert_status(201);
        }
        added_after.push(format!("zzz.new{round}@example.com"));
        round += 1;
        let page = admin
            .get(&format!("/api/v1/users?limit=25&cursor={cursor}"))
            .await
            .assert_status(200)
            .json();
        seen.extend(emails(page["items"].as_array().unwrap()));
        match page["next"].as_str() {
            Some(n) => cursor = n.to_owned(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in order, each once");
    for e in &before {
        assert!(seen.contains(e), "{e} was skipped");
    }
    for e in &added_after {
        assert!(
            seen.contains(e),
            "{e}, added after the cursor, was not shown"
        );
    }
    assert!(!seen.iter().any(|e| e.starts_with("aaa.new")));

    // The same for bindings (ordered by id: new ones land anywhere), while bindings are
    // added: every binding that was there is shown once.
    let all_before = sql_strings(&app.services().db, "SELECT id FROM bindings").await;
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut i = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/v1/bindings?limit=40&cursor={c}"),
            None => "/api/v1/bindings?limit=40".to_owned(),
        };
        let page = admin.get(&url).await.assert_status(200).json();
        got.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_str().unwrap().to_owned()),
        );
        admin
            .post(
                "/api/v1/bindings",
                serde_json::json!({"subject": {"kind": "user", "name": before[i]}, "role": "PROJECT_READ_ONLY", "project": "default"}),
            )
            .await
            .assert_status(201);
        i += 1;
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no binding shown twice");
    let expired = sql_strings(
        &app.services().db,
        &format!(
            "SELECT id FROM bindings WHERE expires_at IS NOT NULL AND expires_at <= {}",
            app.clock.now().millis()
        ),
    )
    .await;
    for id in all_before.iter().filter(|id| !expired.contains(id)) {
        assert!(unique.contains(id), "binding {id} was skipped");
    }

    // Clusters page by name through the whole list, filtered too.
    let clusters = page_through(&admin, "/api/v1/clusters", 7).await;
    let names: Vec<String> = clusters
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let mut want = sql_strings(&app.services().db, "SELECT name FROM clusters").await;
    want.sort();
    assert_eq!(names, want);
    let prod = page_through(&admin, "/api/v1/clusters?label=env%3Dprod", 3).await;
    assert!(!prod.is_empty());
    assert!(prod.iter().all(|c| c["labels"]["env"] == "prod"));
    assert_eq!(
        prod.len() as i64,
        sql_i64(
            &app.services().db,
            "SELECT COUNT(*) FROM clusters WHERE name LIKE 'prod-%'"
        )
        .await
    );
    let project = sql_strings(&app.services().db, "SELECT p.name FROM projects p JOIN cluster_shares s ON s.project_id = p.id ORDER BY p.name").await[0].clone();
    let held = page_through(&admin, &format!("/api/v1/clusters?project={project}"), 2).await;
    assert!(held.iter().all(|c| c["project"] == project.as_str()
        || c["shared_with"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == project.as_str())));
    assert!(held.iter().any(|c| c["shared_with"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == project.as_str())));
}

/// A cursor the API did not return (a raw key, another list's, garbage) is refused with the
/// error envelope, for every list that pages in the database.
#[tokio::test]
async fn a_forged_cursor_is_refused() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    small_org(&app).await;
    let users_cursor = admin
        .get("/api/v1/users?limit=2")
        .await
        .assert_status(200)
        .json()["next"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/api/v1/users",
        "/api/v1/bindings",
        "/api/v1/clusters",
        "/api/v1/projects",
    ] {
        for forged in [
            "admin@warden.local".to_owned(),
            "%00%ff".to_owned(),
            "bm90LWEtY3Vyc29y".to_owned(),
        ] {
            let r = admin.get(&format!("{path}?cursor={forged}")).await;
            assert_eq!(r.status, 422, "{path} {forged}: {}", r.body);
            assert_eq!(r.error_code(), "invalid");
            assert!(
                r.json()["error"]["fields"]["cursor"].is_string(),
                "{}",
                r.body
            );
        }
    }
    // A cursor of one list is not a cursor of another.
    let r = admin
        .get(&format!("/api/v1/bindings?cursor={users_cursor}"))
        .await;
    assert_eq!(r.status, 422);
    admin
        .get(&format!("/api/v1/users?cursor={users_cursor}"))
        .await
        .assert_status(200);
}

/// The projects list pages in the database too (keyset on the name, counts for the page
/// only), filters by text, and shows a member only the projects they hold a role in; the
/// console's project list pages the same way, and a user's page offers projects, groups and
/// clusters by name only (it once carried every project's counts and every cluster).
#[tokio::test]
async fn projects_page_through_what_the_caller_may_see() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    small_org(&app).await;
    let mut all = sql_strings(&app.services().db, "SELECT name FROM projects").await;
    all.sort();
    assert!(all.len() >= 6, "{all:?}");
    let names = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let paged = page_through(&admin, "/api/v1/projects", 4).await;
    assert_eq!(names(&paged), all);
    assert!(paged.iter().all(|p| p["counts"].is_object()), "{paged:?}");
    let one = &all[2];
    let found = page_through(
        &admin,
        &format!("/api/v1/projects?q={}", enc(&one.to_uppercase())),
        2,
    )
    .await;
    assert!(names(&found).contains(one), "{found:?}");
    assert!(found
        .iter()
        .all(|p| p["name"].as_str().unwrap().contains(one.as_str())
            || p["description"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(one.as_str())));

    // A member of one project sees that one, paged or not.
    let member = app.user_client(&admin, "pat@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            serde_json::json!({"subject": {"kind": "user", "name": "pat@example.com"}, "role": "PROJECT_READ_ONLY", "project": one}),
        )
        .await
        .assert_status(201);
    let theirs = page_through(&member, "/api/v1/projects", 1).await;
    assert_eq!(names(&theirs), vec![one.clone()]);
    // The forms' name lists obey the same rules: their project, the clusters it owns or is
    // shared, and no groups (reading groups needs `group.read`).
    let pat_id = sql_strings(
        &app.services().db,
        "SELECT id FROM users WHERE email = 'pat@example.com'",
    )
    .await[0]
        .clone();
    let pat = Principal {
        user_id: UserId::parse(&pat_id).unwrap(),
        email: "pat@example.com".into(),
        name: "pat".into(),
        session_type: SessionType::Browser,
        must_change_password: false,
        must_enrol_mfa: false,
        second_factor_at: None,
        request: RequestMeta::default(),
        api_key: None,
    };
    let svc = app.services();
    assert_eq!(
        warden_domain::admin::projects::names(svc, &pat)
            .await
            .unwrap(),
        vec![one.clone()]
    );
    let mut held = sql_strings(
        &svc.db,
        &format!(
            "SELECT c.name FROM clusters c JOIN projects p ON p.id = c.project_id WHERE p.name = '{one}' \
             UNION SELECT c.name FROM clusters c JOIN cluster_shares s ON s.cluster_id = c.id \
             JOIN projects p ON p.id = s.project_id WHERE p.name = '{one}'"
        ),
    )
    .await;
    held.sort();
    let clusters = warden_domain::clusters::names(svc, &pat).await.unwrap();
    assert_eq!(clusters, held);
    let every = warden_domain::clusters::names(svc, &admin_principal(&app).await)
        .await
        .unwrap();
    assert!(every.len() > clusters.len(), "{every:?} vs {clusters:?}");
    assert!(warden_domain::admin::groups::refs(svc, &pat).await.is_err());
    assert!(
        !warden_domain::admin::groups::refs(svc, &admin_principal(&app).await)
            .await
            .unwrap()
            .is_empty()
    );

    // The console: the first page links to the next; the user's page names choices only.
    let page = admin.get("/projects").await.assert_status(200);
    assert!(page.body.contains(&format!("/projects/{}", all[0])));
    let first = admin.get("/api/v1/projects?limit=2").await.json();
    let next = first["next"].as_str().unwrap();
    let page2 = admin
        .get(&format!("/projects?cursor={next}"))
        .await
        .assert_status(200);
    assert!(page2.body.contains(&format!("/projects/{}", all[2])));
    let user_page = admin
        .get(&format!("/users/{pat_id}"))
        .await
        .assert_status(200);
    let cluster = sql_strings(
        &app.services().db,
        "SELECT name FROM clusters ORDER BY name",
    )
    .await[0]
        .clone();
    assert!(
        user_page
            .body
            .contains(&format!("<option value=\"{cluster}\"")),
        "the why checker offers the clusters"
    );
    assert!(user_page
        .body
        .contains(&format!("<option value=\"{}\"", all[0])));
    assert!(
        !user_page.body.contains("clusters_owned") && !user_page.body.contains("member_count"),
        "no counts are sent for a choice of names"
    );
}

async fn admin_principal(app: &TestApp) -> Principal {
    let id = sql_strings(
        &app.services().db,
        &format!(
            "SELECT id FROM users WHERE email = '{}'",
            warden_server::testing::ADMIN_EMAIL
        ),
    )
    .await[0]
        .clone();
    Principal {
        user_id: UserId::parse(&id).unwrap(),
        email: warden_server::testing::ADMIN_EMAIL.into(),
        name: "admin".into(),
        session_type: SessionType::Browser,
        must_change_password: false,
        must_enrol_mfa: false,
        second_factor_at: None,
        request: RequestMeta::default(),
        api_key: None,
    }
}
