//! The audit log at scale: the generator (`warden audit generate`) writes a log that verifies,
//! and free-text search through the text indexes (FTS5 on SQLite, a trigram index on
//! PostgreSQL) finds exactly what a scan of the columns finds, also after retention deleted
//! rows.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use warden_domain::audit::generate::{generate, GenerateOptions};
use warden_domain::audit::{
    append, begin_change, verify_chain, verify_chain_with, Actor, AuditEvent, AuditKind,
    ChainStatus, Outcome, RequestMeta, SessionType,
};
use warden_domain::clock::Clock;
use warden_server::testing::{Client, TestApp};

use crate::support::{sql_i64, sql_strings, warden};

#[tokio::test]
async fn audit_generate_writes_a_realistic_log_that_verifies() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let before = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await;
    // Through the command, as an operator runs it.
    let out = warden(
        &app.database_url,
        &["audit", "generate", "--events", "1500", "--days", "90"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("generated 1500 audit events"));
    // The log says which rows were generated.
    let said = sql_strings(
        &app.services().db,
        "SELECT reason FROM audit_events WHERE action = 'audit.generated'",
    )
    .await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("1500 synthetic events"), "{said:?}");
    // And through the domain, several transactions of several multi-row INSERTs each.
    let now = app.clock.now();
    let done = generate(
        &app.services().db,
        &GenerateOptions {
            events: 2_500,
            days: 30,
            seed: 7,
            per_transaction: 1_100,
        },
        now,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(done.events, 2_500);
    assert_eq!(done.last_seq - done.first_seq + 1, 2_500);
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await,
        before + 4_001
    );
    // Realistic: every kind, many actors, clusters and namespaces, refusals, statuses, over
    // the whole range.
    for (sql, min) in [
        ("SELECT COUNT(DISTINCT kind) FROM audit_events", 6),
        ("SELECT COUNT(DISTINCT actor_name) FROM audit_events", 200),
        ("SELECT COUNT(DISTINCT cluster) FROM audit_events", 12),
        ("SELECT COUNT(DISTINCT namespace) FROM audit_events", 25),
        ("SELECT COUNT(DISTINCT source_ip) FROM audit_events", 300),
        ("SELECT COUNT(DISTINCT status) FROM audit_events", 6),
        ("SELECT COUNT(DISTINCT resource_kind) FROM audit_events", 10),
        (
            "SELECT COUNT(*) FROM audit_events WHERE outcome = 'denied'",
            100,
        ),
        (
            "SELECT COUNT(*) FROM audit_events WHERE resource_kind = 'pods/exec'",
            50,
        ),
    ] {
        let n = sql_i64(&app.services().db, sql).await;
        assert!(n >= min, "{sql}: {n} < {min}");
    }
    let oldest = sql_i64(&app.services().db, "SELECT MIN(at) FROM audit_events").await;
    let span_days = (now.millis() - oldest) as f64 / 86_400_000.0;
    assert!((89.0..=90.0).contains(&span_days), "{span_days}");

    // The chain holds, by the command and by the library, and goes on with real events.
    let out = warden(&app.database_url, &["audit", "verify"]).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    admin.login("nobody@example.com", "wrong password!!").await;
    let ChainStatus::Intact { rows } = verify_chain(&app.services().db).await.unwrap() else {
        panic!("the chain should be intact after generating and appending");
    };
    assert!(rows as i64 >= before + 4_002);

    // A generated row edited afterwards is named.
    let victim = done.first_seq + 1_234;
    let db = &app.services().db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = {victim}"),
    ))
    .await
    .unwrap();
    let out = warden(&app.database_url, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("seq={victim}")), "{err}");
}

/// Generated events are backdated and look like real ones: among what real people did they
/// would be forged history. The command refuses an organization in use unless told.
#[tokio::test]
async fn audit_generate_refuses_an_organization_in_use() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    app.user_client(&admin, "someone@example.com").await;
    let before = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await;
    let out = warden(&app.database_url, &["audit", "generate", "--events", "50"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.contains("--force"), "{err}");
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await,
        before
    );
    let out = warden(
        &app.database_url,
        &["audit", "generate", "--events", "50", "--force"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await,
        before + 51
    );
}

struct Row {
    resource_name: Option<&'static str>,
    path: Option<&'static str>,
    reason: Option<&'static str>,
    actor: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        resource_name: Some("web-7f9c4-abcde"),
        path: Some("/clusters/prod/api/v1/namespaces/payments/pods/web-7f9c4-abcde"),
        reason: None,
        actor: "alice.smith@example.com",
    },
    Row {
        resource_name: Some("db-credentials"),
        path: Some("/clusters/prod/api/v1/namespaces/payments/secrets/db-credentials"),
        reason: Some("secrets are not readable with the viewer role"),
        actor: "bob.jones@example.com",
    },
    Row {
        resource_name: None,
        path: Some("/api/v1/auth/login"),
        reason: Some("the account is locked after repeated failures"),
        actor: "mallory@example.org",
    },
    Row {
        resource_name: Some("Report_2026%Q4"),
        path: None,
        reason: Some("quoted \"dry run\" refused"),
        actor: "erin.müller@example.com",
    },
    Row {
        resource_name: Some("WEB-frontend"),
        path: Some("/clusters/edge/apis/apps/v1/namespaces/shop/deployments/WEB-frontend"),
        reason: Some("Forbidden by policy"),
        actor: "carol.kim@example.com",
    },
    // Every trigram of "tab-bat" (tab, ab-, b-b, -ba, bat), spread over two columns, and not
    // the text itself: the text index proposes it, the exact condition refuses it.
    Row {
        resource_name: Some("ab-b-bat"),
        path: Some("/clusters/edge/api/v1/namespaces/tab/pods"),
        reason: None,
        actor: "dave.ng@example.com",
    },
];

/// What the free text matched before the text indexes: a case-insensitive (ASCII) substring
/// of the resource name, path, reason or actor, or exactly the id or the request id.
fn scan(events: &[Value], text: &str) -> BTreeSet<String> {
    let needle = text.to_ascii_lowercase();
    events
        .iter()
        .filter(|e| {
            ["resource_name", "path", "reason", "actor"]
                .iter()
                .filter_map(|f| e[*f].as_str())
                .any(|v| v.to_ascii_lowercase().contains(&needle))
                || e["id"] == text.trim()
                || e["request_id"] == text.trim()
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn urlencode(s: &str) -> String {
    url_escape(s)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every event the filter `query` lists, following the pages.
async fn all_ids(c: &Client, query: &str) -> (BTreeSet<String>, Vec<Value>) {
    let mut ids = BTreeSet::new();
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = c
            .get(&format!("/api/v1/audit/events?limit=500{query}{cursor}"))
            .await
            .assert_status(200)
            .json();
        for e in page["items"].as_array().unwrap() {
            ids.insert(e["id"].as_str().unwrap().to_owned());
            events.push(e.clone());
        }
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => return (ids, events),
        }
    }
}

async fn seed_rows(app: &TestApp) -> Vec<String> {
    let events: Vec<AuditEvent> = ROWS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut e = AuditEvent::new(
                AuditKind::KubeApi,
                Actor::Anonymous {
                    claimed: r.actor.to_owned(),
                },
                SessionType::Cli,
                "kube.get",
                if r.reason.is_some() {
                    Outcome::Denied
                } else {
                    Outcome::Allowed
                },
            )
            .request(RequestMeta {
                path: r.path.map(str::to_owned),
                request_id: Some(format!("req-{i}-{}", uuid::Uuid::new_v4().simple())),
                ..Default::default()
            });
            e.resource_name = r.resource_name.map(str::to_owned);
            e.reason = r.reason.map(str::to_owned);
            e
        })
        .collect();
    let ids = events.iter().map(|e| e.id.to_string()).collect();
    let tx = begin_change(&app.services().db).await.unwrap();
    append(&tx, app.clock.now(), events).await.unwrap();
    tx.commit().await.unwrap();
    ids
}

#[tokio::test]
async fn audit_free_text_through_the_text_index_finds_what_a_scan_finds() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    // Noise around the rows searched for: generated events (which mention payments, secrets,
    // locked accounts, web pods...).
    generate(
        &app.services().db,
        &GenerateOptions {
            events: 1_500,
            days: 2,
            ..Default::default()
        },
        app.clock.now().minus_secs(60),
        |_| {},
    )
    .await
    .unwrap();
    let seeded = seed_rows(&app).await;
    let (_, everything) = all_ids(&admin, "").await;
    let request_id = everything.iter().find(|e| e["id"] == seeded[1]).unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut texts: Vec<String> = [
        // A word in the middle of a message, in other case.
        "LOCKED after",
        "ocked aft",
        // A resource name, part of one, across a dash.
        "web-7f9c4-abcde",
        "7f9c4",
        "db-cred",
        // Case-insensitive.
        "web-FRONTEND",
        "forbidden",
        // Part of a path.
        "namespaces/payments/secrets",
        // An actor.
        "erin.müller",
        "@example.org",
        // A double quote in the text.
        "\"dry run\"",
        // Short texts (no trigram): scanned.
        "eb",
        "Q",
        // Matches nothing.
        "zzqx-nothing-here",
        // Every trigram in one row (and in no other), the text nowhere: matches nothing.
        "tab-bat",
        // Across two columns of one row (row 4: its path ends in "frontend", its reason begins
        // with "Forbidden"), through a wildcard or a line break (PostgreSQL's text index joins
        // the columns with line breaks): matches nothing, as no column holds it.
        "frontend%forbidden",
        "frontend\nForbidden",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The id and the request id, exactly.
    texts.push(seeded[3].clone());
    texts.push(request_id.clone());
    texts.push(format!("  {}  ", seeded[0]));
    for text in &texts {
        let q = format!("&q={}", urlencode(text));
        let (found, _) = all_ids(&admin, &q).await;
        let expected = scan(&everything, text);
        assert_eq!(found, expected, "q={text:?}");
        let facets = admin
            .get(&format!("/api/v1/audit/facets?{}", &q[1..]))
            .await
            .assert_status(200)
            .json();
        assert_eq!(facets["total"], expected.len() as u64, "facets q={text:?}");
    }
    // Paged newest first with a free-text list's newest-events window (PostgreSQL) far smaller
    // than the log, so that pages start before, at and after its edge: every match once, in
    // order, whatever the window and the page size.
    let newest_first = paged_ids(&app, "", 1, 500).await;
    for text in [
        "LOCKED after",
        "7f9c4",
        "forbidden",
        "@example.org",
        "zzqx-nothing-here",
    ] {
        let expected = scan(&everything, text);
        // Windows whose edge is a match (so that a page that misses or repeats the edge's
        // event shows), and others.
        let mut windows: Vec<u64> = newest_first
            .iter()
            .enumerate()
            .filter(|(_, id)| expected.contains(*id))
            .map(|(i, _)| i as u64 + 1)
            .take(3)
            .collect();
        windows.extend([1, 5, 300, 20_000]);
        for window in windows {
            for limit in [1, 7, 50] {
                let found = paged_ids(&app, text, window, limit).await;
                assert_eq!(found.len(), expected.len(), "q={text:?} window {window}");
                assert_eq!(
                    found.into_iter().collect::<BTreeSet<_>>(),
                    expected,
                    "q={text:?} window {window} limit {limit}"
                );
            }
        }
    }
    // What the test is about: the seeded rows are found (the scan above is not vacuous).
    for (text, row) in [
        ("ocked aft", 2),
        ("7f9c4", 0),
        ("web-FRONTEND", 4),
        ("\"dry run\"", 3),
        ("namespaces/payments/secrets", 1),
    ] {
        assert!(
            scan(&everything, text).contains(&seeded[row]),
            "{text} should find row {row}"
        );
    }
    let row4 = &everything.iter().find(|e| e["id"] == seeded[4]).unwrap();
    let joined = ["resource_name", "path", "reason", "actor"]
        .map(|f| row4[f].as_str().unwrap_or_default().to_lowercase())
        .join("\n");
    assert!(joined.contains("frontend\nforbidden"), "{joined}");
    assert!(scan(&everything, "frontend%forbidden").is_empty());
    assert!(
        scan(&everything, "tab-bat").is_empty()
            && ["tab", "ab-", "b-b", "-ba", "bat"]
                .iter()
                .all(|t| scan(&everything, t).contains(&seeded[5])),
        "row 5 holds every trigram of tab-bat and not the text"
    );
    assert_eq!(
        all_ids(&admin, &format!("&q={}", urlencode(&request_id)))
            .await
            .0,
        BTreeSet::from([seeded[1].clone()])
    );
    // `%` and `_` stay LIKE wildcards, as before: `Report_2026%Q4` is matched by `t_2026%q`.
    let (found, _) = all_ids(&admin, &format!("&q={}", urlencode("t_2026%q"))).await;
    assert!(found.contains(&seeded[3]), "{found:?}");
    // With the other filters.
    let (found, _) = all_ids(
        &admin,
        &format!("&q={}&outcome=denied&kind=kube_api", urlencode("FORBIDDEN")),
    )
    .await;
    assert!(found.contains(&seeded[4]));
    assert!(found.iter().all(|id| everything
        .iter()
        .any(|e| e["id"] == *id && e["outcome"] == "denied")));

    // SQLite: the lean text index (migration m20261215_000001; the live streams' table,
    // read-only credentials, the audit seals, credentials' API keys, who set credentials, the key check and the data key came after it) undone and made again from the events already stored: the
    // same answers, the index consistent with its rows.
    let db = &app.services().db;
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        use warden_migrations::MigratorTrait;
        for step in ["down", "up"] {
            if step == "down" {
                warden_migrations::Migrator::down(db, Some(8))
                    .await
                    .unwrap();
            } else {
                warden_migrations::Migrator::up(db, None).await.unwrap();
            }
            db.execute_unprepared(
                "INSERT INTO audit_fts(audit_fts, rank) VALUES ('integrity-check', 1)",
            )
            .await
            .unwrap_or_else(|e| panic!("{step}: the text index matches its rows: {e}"));
            for text in ["7f9c4", "web-FRONTEND", "tab-bat", "erin.müller"] {
                let (found, _) = all_ids(&admin, &format!("&q={}", urlencode(text))).await;
                assert_eq!(found, scan(&everything, text), "{step}: q={text:?}");
            }
        }
    }
}

/// Every id the free text `text` finds, page by page through the list's cursor with the given
/// newest-events window; checks that the pages run newest first.
async fn paged_ids(app: &TestApp, text: &str, window: u64, limit: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    let mut last_seq = i64::MAX;
    loop {
        let q = warden_domain::dto::AuditQuery {
            q: Some(text.to_owned()),
            limit: Some(limit),
            cursor: cursor.take(),
            ..Default::default()
        };
        let page = warden_domain::audit::search_windowed(
            &app.services().db,
            &q,
            &warden_domain::audit::AuditScope::all(),
            app.clock.now(),
            window,
        )
        .await
        .unwrap();
        assert!(page.items.len() as u64 <= limit);
        for e in page.items {
            assert!(e.seq < last_seq, "q={text:?}: newest first");
            last_seq = e.seq;
            ids.push(e.id);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids
}

/// The ids the free text `text` finds (the list, through the domain: the session of a test
/// whose clock jumped days ahead has expired).
async fn search_ids(app: &TestApp, text: &str) -> BTreeSet<String> {
    let q = warden_domain::dto::AuditQuery {
        q: Some(text.to_owned()),
        limit: Some(500),
        ..Default::default()
    };
    warden_domain::audit::search_in(
        &app.services().db,
        &q,
        &warden_domain::audit::AuditScope::all(),
        app.clock.now(),
    )
    .await
    .unwrap()
    .items
    .into_iter()
    .map(|e| e.id)
    .collect()
}

#[tokio::test]
async fn audit_text_index_follows_retention_deletes() {
    let env = BTreeMap::from([
        (
            "WARDEN_MASTER_KEY".to_owned(),
            "text index retention master key".to_owned(),
        ),
        ("WARDEN_AUDIT_RETENTION_MIN_DAYS".to_owned(), "1".to_owned()),
    ]);
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    let svc = app.services().clone();
    let pod = |name: String| {
        AuditEvent::new(
            AuditKind::KubeApi,
            Actor::System,
            SessionType::Cli,
            "kube.get",
            Outcome::Allowed,
        )
        .resource("pods", name)
    };
    for n in 0..30 {
        svc.audit
            .record(pod(format!("expiring-pod-{n}")))
            .await
            .unwrap();
    }
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 7}))
        .await
        .assert_status(200);
    app.clock.advance_secs(10 * 86_400);
    for n in 0..5 {
        svc.audit
            .record(pod(format!("kept-pod-{n}")))
            .await
            .unwrap();
    }
    assert_eq!(search_ids(&app, "expiring-pod").await.len(), 30);
    // Small batches: several transactions of deletes.
    let run = warden_domain::audit::retention::run_batched(&svc, 7)
        .await
        .unwrap()
        .expect("a retention run");
    assert!(run.deleted >= 30, "{run:?}");
    assert!(search_ids(&app, "expiring-pod").await.is_empty());
    assert!(search_ids(&app, "EXPIRING-POD-1").await.is_empty());
    assert_eq!(search_ids(&app, "kept-pod").await.len(), 5);
    assert_eq!(search_ids(&app, "kept-pod-3").await.len(), 1);
    assert!(matches!(
        verify_chain_with(&svc.db, svc.retention.key())
            .await
            .unwrap(),
        ChainStatus::Intact { .. }
    ));
    if svc.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        // The FTS index matches its content table exactly: no entry of a deleted row is left,
        // none is missing.
        svc.db
            .execute_unprepared(
                "INSERT INTO audit_fts(audit_fts, rank) VALUES ('integrity-check', 1)",
            )
            .await
            .expect("the FTS index is consistent with audit_events");
    }
}

/// The export streams page by page (keyset on `seq`): an export of more rows than one page
/// (`EXPORT_PAGE`) sends every matching event exactly once, newest first, each line the very
/// JSON the list answers; `limit` spans pages; CSV has the same rows; a project auditor's
/// export holds their project's events (and their own activity) and nothing else.
#[tokio::test]
async fn audit_export_streams_every_row_once_in_order_within_scope() {
    use warden_domain::audit::export::EXPORT_PAGE;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "payments"}))
        .await
        .assert_status(201);
    let n = 2 * EXPORT_PAGE + 500;
    generate_now(&app, n, 30, 11, 2_000).await;
    // Text a CSV or JSON writer (or the database's JSON of a page) could get wrong: formulas,
    // quotes, commas, line breaks, control characters, backslashes, non-ASCII, markup.
    let tricky = [
        "=HYPERLINK(\"http://x\")",
        "a,\"b\"\nc\r\n",
        "\u{1}ctl\\back\u{7f}\u{1b}[31m",
        "\t-tab",
        "日本語 🚀 é",
        "+1",
        "@sum",
        "</script><!--",
    ];
    let events: Vec<AuditEvent> = tricky
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = AuditEvent::new(
                AuditKind::KubeApi,
                Actor::Anonymous {
                    claimed: (*t).to_owned(),
                },
                SessionType::Cli,
                "kube.get",
                Outcome::Denied,
            )
            .request(RequestMeta {
                path: Some(format!("/api/v1/namespaces/n/pods/{t}")),
                user_agent: Some((*t).to_owned()),
                request_id: Some(format!("{t}-{i}")),
                ..Default::default()
            })
            .details(json!({"t": t, "i": i, "nested": [t, null, 1.5]}));
            e.resource_name = Some((*t).to_owned());
            e.reason = Some((*t).to_owned());
            e
        })
        .collect();
    let tx = begin_change(&app.services().db).await.unwrap();
    append(&tx, app.clock.now(), events).await.unwrap();
    tx.commit().await.unwrap();
    let total = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await as usize;
    assert!(total as u64 > 2 * EXPORT_PAGE, "{total}");

    // NDJSON: exactly the list, in the list's order (newest first), every row once.
    let (_, listed) = all_ids(&admin, "").await;
    let nd = admin
        .get("/api/v1/audit/export?format=ndjson")
        .await
        .assert_status(200);
    let exported: Vec<Value> = nd
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The export's own sign-in is older than the export: the same rows either way.
    assert_eq!(exported.len(), total);
    let seqs: Vec<i64> = exported
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    // The list also says, per reader, whether a terminal's recording would play for them
    // (`replayable`): not part of the event, so not exported.
    let listed: Vec<Value> = listed
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("replayable");
            e
        })
        .collect();
    assert_eq!(
        exported, listed,
        "each line is the event as the list answers it"
    );
    for t in tricky {
        let e = exported
            .iter()
            .find(|e| e["resource_name"] == t)
            .unwrap_or_else(|| panic!("{t:?} is not exported as it was recorded"));
        assert_eq!(e["details"]["t"], t);
        assert_eq!(e["user_agent"], t);
    }

    // CSV: the header and the same rows, in the same order.
    let csv = admin
        .get("/api/v1/audit/export?format=csv")
        .await
        .assert_status(200);
    let mut records = csv_records(&csv.body).into_iter();
    let header = records.next().unwrap();
    assert_eq!(
        header.join(","),
        warden_domain::audit::export::CSV_HEADER.trim_end()
    );
    let mut records: Vec<Vec<String>> = records.collect();
    // The NDJSON export above is itself in the log now (`audit.export`, its filter and
    // format): the newest row; the rest are the same rows.
    let own = records.remove(0);
    assert_eq!(own[9], "audit.export", "{own:?}");
    assert!(own[0].parse::<i64>().unwrap() > seqs[0]);
    let csv_seqs: Vec<i64> = records.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(csv_seqs, seqs);
    // Every cell is the event's field as the API shows it (a formula-like one neutralised).
    let fields = [
        "seq",
        "id",
        "time",
        "kind",
        "actor",
        "session_type",
        "project",
        "cluster",
        "namespace",
        "action",
        "resource_kind",
        "resource_name",
        "outcome",
        "reason",
        "method",
        "path",
        "status",
        "source_ip",
        "request_id",
        "duration_ms",
    ];
    for (record, event) in records.iter().zip(&exported) {
        assert_eq!(record.len(), fields.len(), "{record:?}");
        for (cell, field) in record.iter().zip(fields) {
            let want = match &event[field] {
                Value::Null => String::new(),
                // Control characters written out, then a formula-like cell neutralised.
                Value::String(s) => {
                    let p = warden_domain::audit::printable(s, true).into_owned();
                    if p.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                        format!("'{p}")
                    } else {
                        p
                    }
                }
                other => other.to_string(),
            };
            assert_eq!(cell, &want, "{field} of {event}");
        }
    }

    // `limit` across pages: the newest that many.
    let limited = admin
        .get(&format!("/api/v1/audit/export?limit={}", EXPORT_PAGE + 7))
        .await
        .assert_status(200);
    let limited: Vec<i64> = limited
        .body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // The two exports above are the newest rows now (`audit.export`).
    assert!(limited[1] > seqs[0], "{:?}", &limited[..3]);
    assert_eq!(limited[2..], seqs[..EXPORT_PAGE as usize + 5]);

    // A filter with more matches than a page.
    let kube = sql_i64(
        &app.services().db,
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'kube_api'",
    )
    .await as usize;
    assert!(kube as u64 > EXPORT_PAGE, "{kube}");
    let k = admin
        .get("/api/v1/audit/export?format=csv&kind=kube_api")
        .await
        .assert_status(200);
    assert_eq!(csv_records(&k.body).len(), kube + 1);

    // Scope: a project auditor of `payments` gets that project's events, all of them, and
    // their own activity; nothing of other projects.
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "PROJECT_READ_ONLY", "project": "payments"}),
        )
        .await
        .assert_status(201);
    let payments = sql_i64(
        &app.services().db,
        "SELECT COUNT(*) FROM audit_events WHERE project = 'payments'",
    )
    .await as usize;
    assert!(payments > 100, "{payments}");
    let mine = auditor
        .get("/api/v1/audit/export?format=ndjson")
        .await
        .assert_status(200);
    let mine: Vec<Value> = mine
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (theirs, own): (Vec<&Value>, Vec<&Value>) =
        mine.iter().partition(|e| e["project"] == "payments");
    assert_eq!(theirs.len(), payments);
    assert!(
        own.iter()
            .all(|e| e["actor"] == "auditor@example.com" && e["outcome"] == "allowed"),
        "only their own activity besides the project: {own:?}"
    );
    let seqs: Vec<i64> = mine.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]));
    // A filter naming another project finds nothing for them.
    let other = auditor
        .get("/api/v1/audit/export?format=ndjson&project=checkout")
        .await
        .assert_status(200);
    assert_eq!(other.body, "");
}

/// An export runs for minutes over a big log; a reader who loses their audit access while it
/// runs gets no more of it: the body is cut short (an error, never a quietly shorter file). A
/// departing project auditor cannot start an export of everything they may still read and
/// keep it flowing after their binding is removed.
#[tokio::test]
async fn an_export_stops_when_its_reader_loses_access() {
    use warden_domain::audit::export::EXPORT_PAGE;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let n = 16 * EXPORT_PAGE;
    generate_now(&app, n, 30, 5, 4_000).await;
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    let binding = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "ADMIN_READ_ONLY"}),
        )
        .await
        .assert_status(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut resp = auditor
        .http
        .get(format!(
            "{}/api/v1/audit/export?format=ndjson",
            auditor.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = resp.chunk().await.unwrap().expect("a first page").len();
    admin
        .delete(&format!("/api/v1/bindings/{binding}"))
        .await
        .assert_status(204);
    is_cut_short(&app, resp, received).await;
}

/// The rest of an export's body, after what ended it: cut with an error, not ended, and
/// after a few pages that were on their way (read ahead, in socket buffers), not the rest.
async fn is_cut_short(app: &TestApp, mut resp: reqwest::Response, mut received: usize) {
    use warden_domain::audit::export::EXPORT_PAGE;
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), resp.chunk()).await {
            Ok(Ok(Some(c))) => received += c.len(),
            Ok(Ok(None)) => break "the end",
            Ok(Err(_)) => break "an error",
            Err(_) => panic!("the export stalled"),
        }
    };
    assert_eq!(ended, "an error", "the body is cut, not ended");
    let whole = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await as usize;
    let per_line = received / (EXPORT_PAGE as usize);
    assert!(
        received < whole * per_line / 2,
        "received {received} bytes of about {}",
        whole * per_line
    );
}

/// An export made with an API key ends when the key is revoked, though its holder's rights
/// are unchanged: a leaked key does not go on copying the log.
#[tokio::test]
async fn an_export_stops_when_its_api_key_is_revoked() {
    use warden_domain::audit::export::EXPORT_PAGE;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    generate_now(&app, 16 * EXPORT_PAGE, 30, 5, 4_000).await;
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "ADMIN_READ_ONLY"}),
        )
        .await
        .assert_status(201);
    let key = auditor.create_api_key(json!({"name": "siem-pull"})).await;
    let mut resp = reqwest::Client::new()
        .get(format!("{}/api/v1/audit/export?format=ndjson", app.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = resp.chunk().await.unwrap().expect("a first page").len();
    auditor.revoke_api_key("siem-pull").await;
    is_cut_short(&app, resp, received).await;
}

/// The batched writer's path (`DbAuditSink::record_many`, one transaction a batch; on
/// PostgreSQL one `json_to_recordset` statement whatever the size): batches larger than one
/// multi-row INSERT, interleaved with single audited changes, store every event once, `seq`
/// in the order given, and the chain verifies; a batch that fails (a duplicate id) stores
/// nothing of itself and leaves the chain intact.
#[tokio::test]
async fn big_audit_batches_keep_the_chain_and_their_order() {
    use warden_domain::audit::{AuditSink, BatchingAuditSink, DbAuditSink};
    let (app, _admin) = TestApp::spawn().await.with_admin().await;
    let db = app.services().db.clone();
    let clock: warden_domain::clock::SharedClock = app.clock.clone();
    let sink = std::sync::Arc::new(DbAuditSink::new(db.clone(), clock));
    let event = |i: usize| {
        let mut e = AuditEvent::new(
            AuditKind::KubeApi,
            Actor::Anonymous {
                claimed: format!("batch-{i}"),
            },
            SessionType::Cli,
            "kube.get",
            Outcome::Allowed,
        )
        .resource("pods", format!("pod-{i}, \"quoted\" \u{e9}\n"))
        .request(RequestMeta {
            method: Some("GET".into()),
            path: Some(format!("/api/v1/namespaces/n/pods/pod-{i}")),
            source_ip: Some("10.0.0.1".into()),
            user_agent: None,
            request_id: Some(format!("req-{i}")),
        })
        .details(json!({"i": i, "nested": {"a": [1, null, "x"]}}));
        if i % 3 == 0 {
            e.status = Some(200);
            e.duration_ms = Some(i as i64);
            e.cluster = Some("c1".into());
        }
        e
    };
    let first: Vec<AuditEvent> = (0..2_500).map(event).collect();
    let ids: Vec<String> = first.iter().map(|e| e.id.to_string()).collect();
    sink.record_many(first).await.unwrap();
    // A single audited change between two batches.
    let tx = begin_change(&db).await.unwrap();
    append(&tx, app.clock.now(), vec![event(99_999)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Through the gateway's batching writer, many producers.
    let batching = BatchingAuditSink::spawn(sink.clone(), 1_000, 700);
    let tasks: Vec<_> = (0..4)
        .map(|p| {
            let batching = batching.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    batching
                        .record(event(10_000 + p * 1_000 + i))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    batching.flush().await;
    // The first batch: in the order given.
    let stored: Vec<String> = {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT id FROM audit_events WHERE actor_name LIKE 'batch-%' ORDER BY seq"
                    .to_owned(),
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String>("", "id").unwrap())
            .collect()
    };
    assert_eq!(stored.len(), 2_500 + 1 + 2_000);
    assert_eq!(stored[..2_500], ids[..]);
    // Every field round-trips (quotes, commas, a newline, accents, nested JSON).
    let n = sql_i64(
        &app.services().db,
        "SELECT COUNT(*) FROM audit_events WHERE resource_name LIKE 'pod-%, \"quoted\" %' AND details LIKE '{\"i\":%,\"nested\":{\"a\":[1,null,\"x\"]}}'",
    )
    .await;
    assert_eq!(n, 4_501);
    assert!(matches!(
        verify_chain(&db).await.unwrap(),
        ChainStatus::Intact { .. }
    ));
    // A failing batch (its last event repeats an id): nothing of it is stored.
    let before = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await;
    let mut bad: Vec<AuditEvent> = (0..1_200).map(|i| event(50_000 + i)).collect();
    bad[1_199].id = bad[0].id.clone();
    assert!(sink.record_many(bad).await.is_err());
    assert_eq!(
        sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await,
        before
    );
    sink.record_many(vec![event(7), event(8)]).await.unwrap();
    assert!(matches!(
        verify_chain(&db).await.unwrap(),
        ChainStatus::Intact { .. }
    ));
}

/// Facets and the histogram of broad filters come from the rollup (`audit_rollup`, kept by
/// the writer and retention) for the whole days / hours inside their range and from the
/// events at its edges: for a table of filters, the answer is exactly what counting the
/// events answers, before and after retention deleted the oldest events; filters and scopes
/// the rollup cannot answer are counted from the events.
#[tokio::test]
async fn audit_rollup_answers_what_a_scan_answers() {
    use warden_domain::audit::rollup::facets_from_rollup;
    use warden_domain::audit::{
        facets_at, facets_scan, histogram_at, histogram_from_events, histogram_from_rollup,
        AuditScope,
    };
    use warden_domain::dto::AuditQuery;
    let (app, admin) = app_with_short_retention().await;
    let db = app.services().db.clone();
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 11}))
        .await
        .assert_status(200);
    // The start-up's events a month old, then 20 days of generated events.
    app.clock.advance_secs(30 * 86_400);
    generate_now(&app, 6_000, 20, 5, 1_500).await;
    // Single appends after the batches (the one-row path).
    for i in 0..5 {
        let tx = begin_change(&db).await.unwrap();
        let e = AuditEvent::new(
            AuditKind::Console,
            Actor::System,
            SessionType::System,
            format!("project.create.{i}"),
            Outcome::Allowed,
        );
        append(&tx, app.clock.now(), vec![e]).await.unwrap();
        tx.commit().await.unwrap();
    }
    let q = |f: fn(&mut AuditQuery)| {
        let mut a = AuditQuery::default();
        f(&mut a);
        a
    };
    let day = |d: u32, h: u32, m: u32| {
        let t = time::OffsetDateTime::from_unix_timestamp(app.clock.now().millis() / 1000).unwrap()
            - time::Duration::days(i64::from(d));
        t.replace_time(time::Time::from_hms(h as u8, m as u8, 7).unwrap())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (s1, u1) = (day(12, 5, 17), day(3, 19, 3));
    let (s2, u2) = (day(9, 0, 0), day(8, 23, 59));
    // Edges near their next day: each counted from its own events (s1 and u1 are near their
    // previous day: their days taken whole, the events outside subtracted).
    let (s3, u3) = (day(10, 20, 30), day(5, 2, 0));
    // (filter, whether the rollup answers its facets)
    let answered: Vec<(AuditQuery, bool)> = vec![
        (q(|_| {}), true),
        (q(|a| a.kind = Some("kube_api".into())), true),
        (q(|a| a.outcome = Some("denied".into())), true),
        (
            q(|a| {
                a.kind = Some("sign_in".into());
                a.outcome = Some("denied".into());
            }),
            true,
        ),
        (q(|a| a.discovery = Some(false)), true),
        (
            q(|a| {
                a.discovery = Some(false);
                a.kind = Some("kube_api".into());
            }),
            true,
        ),
        (q(|a| a.range = Some("7d".into())), true),
        (q(|a| a.range = Some("30d".into())), true),
        (
            q(|a| {
                a.range = Some("7d".into());
                a.kind = Some("kube_api".into());
                a.outcome = Some("allowed".into());
            }),
            true,
        ),
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(s1.clone());
                a.until = Some(u1.clone());
                a
            },
            true,
        ),
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(s3.clone());
                a.until = Some(u3.clone());
                a.namespace = Some("ledger".into());
                a
            },
            true,
        ),
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(s3.clone());
                a.until = Some(u1.clone());
                a
            },
            true,
        ),
        // Across one midnight, no whole day: each side from that midnight.
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(s2.clone());
                a.until = Some(u2.clone());
                a.outcome = Some("allowed".into());
                a
            },
            true,
        ),
        // Inside one day: counted from the events.
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(day(9, 1, 0));
                a.until = Some(day(9, 5, 30));
                a
            },
            false,
        ),
        // No start: the histogram begins at the first matching event, found through the
        // rollup's first hour holding one.
        (
            {
                let mut a = AuditQuery::default();
                a.until = Some(u1.clone());
                a.kind = Some("kube_api".into());
                a
            },
            true,
        ),
        // No end: the days after its start (none yet) from the rollup, the rest from events.
        (q(|a| a.range = Some("1h".into())), true),
        // One slice: a project, cluster, namespace or verb (a connection's `exec` is a
        // `create` of `pods/exec`: it is in both).
        (q(|a| a.project = Some("payments".into())), true),
        (q(|a| a.cluster = Some("prod-eu-1".into())), true),
        (q(|a| a.namespace = Some("ledger".into())), true),
        (q(|a| a.verb = Some("delete".into())), true),
        (q(|a| a.verb = Some("exec".into())), true),
        (q(|a| a.verb = Some("create".into())), true),
        (
            q(|a| {
                a.cluster = Some("staging-us".into());
                a.range = Some("7d".into());
                a.kind = Some("kube_api".into());
                a.outcome = Some("denied".into());
            }),
            true,
        ),
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(s1.clone());
                a.until = Some(u1.clone());
                a.project = Some("checkout".into());
                a.discovery = Some(false);
                a
            },
            true,
        ),
        (
            {
                let mut a = AuditQuery::default();
                a.until = Some(u1.clone());
                a.verb = Some("get".into());
                a
            },
            true,
        ),
        // Filters the rollup does not hold: counted from the events.
        (q(|a| a.actor = Some("alice".into())), false),
        (
            q(|a| {
                a.project = Some("payments".into());
                a.cluster = Some("prod-eu-1".into());
            }),
            false,
        ),
        (
            q(|a| {
                a.namespace = Some("ledger".into());
                a.verb = Some("get".into());
            }),
            false,
        ),
        (q(|a| a.q = Some("ledger".into())), false),
        // Without a start, counted from the events: the range and, for 60 hours or more
        // (buckets of whole hours), the buckets from one pass of hourly counts; a text found
        // nowhere; an end given; a range shorter than 60 hours (buckets below an hour).
        (q(|a| a.q = Some("zzqx-nothing".into())), false),
        (
            {
                let mut a = AuditQuery::default();
                a.until = Some(u1.clone());
                a.q = Some("ledger".into());
                a
            },
            false,
        ),
        (
            q(|a| {
                a.status = Some(403);
                a.cluster = Some("prod-eu-1".into());
            }),
            false,
        ),
        // An action prefix: the slices of the actions it matches; with a second slice, counted.
        (q(|a| a.action = Some("auth.".into())), true),
        (
            q(|a| {
                a.action = Some("kube.".into());
                a.range = Some("7d".into());
                a.outcome = Some("denied".into());
            }),
            true,
        ),
        (
            q(|a| {
                a.action = Some("kube.get".into());
                a.cluster = Some("prod-eu-1".into());
            }),
            false,
        ),
        // A resource kind, an HTTP status: slices too.
        (q(|a| a.status = Some(403)), true),
        (q(|a| a.status = Some(200)), true),
        (q(|a| a.resource = Some("secrets".into())), true),
        (
            {
                let mut a = AuditQuery::default();
                a.since = Some(s3.clone());
                a.until = Some(u1.clone());
                a.resource = Some("pods".into());
                a.outcome = Some("allowed".into());
                a
            },
            true,
        ),
    ];
    let all = AuditScope::all();
    // Readers of some projects: one, and two with their own activity elsewhere (a person who
    // acted outside those projects, and was refused somewhere: refusals stay with auditors).
    let someone: String = {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT actor_id FROM audit_events WHERE actor_id IS NOT NULL \
                 AND outcome = 'allowed' AND (project IS NULL OR project NOT IN ('payments', 'checkout')) \
                 AND actor_id IN (SELECT actor_id FROM audit_events WHERE outcome = 'denied') \
                 GROUP BY actor_id ORDER BY COUNT(*) DESC, actor_id LIMIT 1",
            ))
            .await
            .unwrap()
            .expect("an actor with activity outside the projects");
        row.try_get("", "actor_id").unwrap()
    };
    let readers = vec![
        AuditScope {
            projects: vec!["payments".into()],
            ..Default::default()
        },
        AuditScope {
            projects: vec!["payments".into(), "checkout".into()],
            user: Some(someone),
            ..Default::default()
        },
    ];
    let text_until = |until: String| {
        let mut a = AuditQuery::default();
        a.until = Some(until);
        a.q = Some("ledger".into());
        a
    };
    // 30 hours from the text's first event: buckets of 30 minutes.
    let first = histogram_from_events(&db, &text_until(u1.clone()), &all, app.clock.now())
        .await
        .unwrap()
        .since
        .expect("a first event");
    let first = time::OffsetDateTime::parse(&first, &time::format_description::well_known::Rfc3339)
        .unwrap();
    let shortly_after = (first + time::Duration::hours(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let text_histograms = vec![
        (text_until(u1.clone()), true),
        (text_until(shortly_after), false),
    ];
    let mut answered = answered;
    answered.extend(text_histograms.iter().map(|(f, _)| (f.clone(), false)));
    let check = |label: &'static str| {
        let answered = answered.clone();
        let text_histograms = text_histograms.clone();
        let db = db.clone();
        let all = all.clone();
        let readers = readers.clone();
        let now = app.clock.now();
        async move {
            let mut from_rollup = 0;
            let mut readers_from_rollup = 0;
            for (filter, by_rollup) in &answered {
                let scan = facets_scan(&db, filter, &all, now).await.unwrap();
                let rolled = facets_from_rollup(&db, filter, &all, now).await.unwrap();
                assert_eq!(rolled.is_some(), *by_rollup, "{label}: {filter:?}");
                if let Some(r) = rolled {
                    assert_eq!(r, scan, "{label}: facets of {filter:?}");
                    assert!(r.total > 0, "{label}: {filter:?} matches nothing");
                    from_rollup += 1;
                }
                assert_eq!(facets_at(&db, filter, &all, now).await.unwrap(), scan);
                let scan_h = histogram_from_events(&db, filter, &all, now).await.unwrap();
                if let Some(h) = histogram_from_rollup(&db, filter, &all, now).await.unwrap() {
                    assert_eq!(h, scan_h, "{label}: histogram of {filter:?}");
                    from_rollup += 1;
                }
                assert_eq!(
                    histogram_at(&db, filter, &all, now).await.unwrap(),
                    scan_h,
                    "{label}: histogram of {filter:?}"
                );
                // Readers of some projects: their projects' slices, their own activity
                // elsewhere counted; the same answer as counting what they may see.
                for reader in &readers {
                    let scan = facets_scan(&db, filter, reader, now).await.unwrap();
                    if let Some(r) = facets_from_rollup(&db, filter, reader, now).await.unwrap() {
                        assert_eq!(r, scan, "{label}: facets of {filter:?} for {reader:?}");
                        readers_from_rollup += 1;
                    }
                    assert_eq!(facets_at(&db, filter, reader, now).await.unwrap(), scan);
                    let scan_h = histogram_from_events(&db, filter, reader, now)
                        .await
                        .unwrap();
                    if let Some(h) = histogram_from_rollup(&db, filter, reader, now)
                        .await
                        .unwrap()
                    {
                        assert_eq!(h, scan_h, "{label}: histogram of {filter:?} for {reader:?}");
                        readers_from_rollup += 1;
                    }
                    assert_eq!(
                        histogram_at(&db, filter, reader, now).await.unwrap(),
                        scan_h,
                        "{label}: histogram of {filter:?} for {reader:?}"
                    );
                }
            }
            // Both ways of the text's histogram without a start were taken: buckets of hours
            // (the hourly counts) and of less (the scan), each with events in them (until
            // retention deletes the first 30 hours' events).
            for (filter, hours) in &text_histograms {
                let hours = *hours;
                if !hours && label.starts_with("after retention") {
                    continue;
                }
                let h = histogram_at(&db, filter, &all, now).await.unwrap();
                assert_eq!(h.bucket_seconds % 3600 == 0, hours, "{label}: {h:?}");
                assert!(
                    h.buckets
                        .iter()
                        .filter(|b| b.allowed + b.denied + b.error > 0)
                        .count()
                        > 1,
                    "{label}: {h:?}"
                );
            }
            assert!(from_rollup >= 30, "{label}: {from_rollup}");
            assert!(readers_from_rollup >= 30, "{label}: {readers_from_rollup}");
        }
    };
    // The single appends are stored, not counted yet (the background catch-up counts them;
    // this test's server runs none): the reads add them from the events.
    use warden_domain::audit::rollup::{catch_up, counted_through};
    let newest = sql_i64(&db, "SELECT MAX(seq) FROM audit_events").await;
    assert_eq!(counted_through(&db).await.unwrap(), newest - 5);
    check("five events not counted yet").await;
    // Caught up, a batch at a time.
    assert_eq!(catch_up(&db, 3).await.unwrap(), 3);
    assert_eq!(catch_up(&db, 3).await.unwrap(), 2);
    assert_eq!(catch_up(&db, 3).await.unwrap(), 0);
    assert_eq!(counted_through(&db).await.unwrap(), newest);
    check("caught up").await;

    // Retention deletes the oldest events (and their counts) in batches.
    let before = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await;
    let run = warden_domain::audit::retention::run_batched(app.services(), 700)
        .await
        .unwrap()
        .expect("old events deleted");
    assert!(run.deleted > 1_000 && run.batches > 1, "{run:?}");
    assert!(sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await < before);
    check("after retention").await;
    while catch_up(&db, 1_000).await.unwrap() > 0 {}
    check("after retention, caught up").await;
    assert_eq!(
        sql_i64(
            &app.services().db,
            "SELECT COUNT(*) FROM audit_rollup WHERE n <= 0"
        )
        .await,
        0
    );
    // The rollup's total is the log's size, and each slice's the size of its part, in every
    // span (hours, days, weeks); each facet dimension's days and weeks count alike.
    let total = sql_i64(&app.services().db, "SELECT COUNT(*) FROM audit_events").await;
    let hour = 3_600_000i64;
    for span in [hour, 24 * hour, 7 * 24 * hour] {
        assert_eq!(
            sql_i64(
                &app.services().db,
                &format!(
                    "SELECT CAST(SUM(n) AS BIGINT) FROM audit_rollup \
                     WHERE sd = '' AND dim = '' AND span = {span}"
                )
            )
            .await,
            total,
            "span {span}"
        );
        for (sd, column) in [
            ("project", "project"),
            ("cluster", "cluster"),
            ("namespace", "namespace"),
            ("resource", "resource_kind"),
            ("status", "status"),
            ("action", "action"),
        ] {
            let in_slices = sql_i64(
                &app.services().db,
                &format!(
                    "SELECT CAST(SUM(n) AS BIGINT) FROM audit_rollup \
                     WHERE sd = '{sd}' AND dim = '' AND span = {span}"
                ),
            )
            .await;
            let with_value = sql_i64(
                &app.services().db,
                &format!("SELECT COUNT(*) FROM audit_events WHERE {column} IS NOT NULL"),
            )
            .await;
            assert_eq!(in_slices, with_value, "{sd}, span {span}");
            assert!(
                with_value > 0 && (with_value < total || sd == "action"),
                "{sd}: {with_value}"
            );
        }
    }
    let per_span = |span: i64| {
        let db = db.clone();
        async move {
            sql_strings(
                &db,
                &format!(
                    "SELECT sd || '/' || sv || '/' || dim || '/' || val || '/' || \
                     CAST(SUM(n) AS VARCHAR(20)) FROM audit_rollup \
                     WHERE span = {span} AND dim <> '' GROUP BY sd, sv, dim, val \
                     ORDER BY sd, sv, dim, val"
                ),
            )
            .await
        }
    };
    let days = per_span(24 * hour).await;
    assert!(days.len() > 100, "{}", days.len());
    assert_eq!(per_span(7 * 24 * hour).await, days);
    // The migrations that made the slices fill them from the events already counted, and the
    // spans' sums their rows into days and weeks: undone and redone, they give back exactly
    // the rows the catch-up and retention kept.
    let rows = || async {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT sd, sv, span, t, kind, outcome, disc, dim, val, n FROM audit_rollup",
            ))
            .await
            .unwrap();
        let mut out: Vec<(
            String,
            String,
            i64,
            i64,
            String,
            String,
            i32,
            String,
            String,
            i64,
        )> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get("", "sd").unwrap(),
                    r.try_get("", "sv").unwrap(),
                    r.try_get("", "span").unwrap(),
                    r.try_get("", "t").unwrap(),
                    r.try_get("", "kind").unwrap(),
                    r.try_get("", "outcome").unwrap(),
                    r.try_get("", "disc").unwrap(),
                    r.try_get("", "dim").unwrap(),
                    r.try_get("", "val").unwrap(),
                    r.try_get("", "n").unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let kept = rows().await;
    assert!(kept.len() > 1_000, "{}", kept.len());
    use warden_migrations::MigratorTrait;
    // The data key, the key check, who set credentials, credentials' API keys, the audit seals, read-only credentials, the live streams' table and SQLite's text index made leaner
    // (nothing to do with the rollup), the action slice's migration, the hours' `seq` bounds', the resource and status
    // slices', the spans' (weeks and days summed from the rows there) and the slices'.
    warden_migrations::Migrator::down(&db, Some(13))
        .await
        .unwrap();
    // Undone, the previous release's rollup (which it trusts for whole days) is counted again.
    for (dim, column) in [("", "seq"), ("cluster", "cluster"), ("actor", "actor_name")] {
        let counted = sql_i64(
            &db,
            &format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM audit_rollup WHERE dim = '{dim}'"
            ),
        )
        .await;
        let stored = sql_i64(
            &db,
            &format!("SELECT COUNT(*) FROM audit_events WHERE {column} IS NOT NULL"),
        )
        .await;
        assert_eq!(counted, stored, "previous rollup, dim {dim:?}");
        assert!(stored > 0);
    }
    warden_migrations::Migrator::up(&db, None).await.unwrap();
    let again = rows().await;
    let (a, k): (BTreeSet<_>, BTreeSet<_>) = (again.iter().collect(), kept.iter().collect());
    let missing: Vec<_> = k.difference(&a).take(5).collect();
    let extra: Vec<_> = a.difference(&k).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && again.len() == kept.len(),
        "rows lost: {missing:?}; rows added: {extra:?}; {} rows, {} before",
        again.len(),
        kept.len()
    );
    // The hours' bounds filled anew: each hour's lowest and highest `seq` among the events.
    assert_eq!(
        sql_i64(
            &db,
            "SELECT COUNT(*) FROM (SELECT at - (at % 3600000) AS t, MIN(seq) AS lo, \
             MAX(seq) AS hi FROM audit_events GROUP BY at - (at % 3600000)) e \
             LEFT JOIN audit_hour_seqs h ON h.t = e.t AND h.lo = e.lo AND h.hi = e.hi \
             WHERE h.t IS NULL"
        )
        .await,
        0
    );
    assert!(sql_i64(&db, "SELECT COUNT(*) FROM audit_hour_seqs").await > 100);
    assert_eq!(
        counted_through(&db).await.unwrap(),
        sql_i64(&db, "SELECT MAX(seq) FROM audit_events").await
    );
}

/// The records of a CSV body (RFC 4180: quoted cells may hold commas, quotes and newlines).
fn csv_records(body: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut cell) = (Vec::new(), String::new());
    let mut chars = body.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut cell)),
            (false, '\n') => {
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(
        cell.is_empty() && record.is_empty(),
        "the CSV ends with a newline"
    );
    records
}

/// PostgreSQL plans each statement for its values on every pooled connection: a generic plan
/// (which PostgreSQL may choose after five executions of a prepared statement) took 40 s for
/// a free-text search matching nothing at 10 million events, walking the time index for the
/// first and last match; compiles none (JIT: up to half a second of a facet count); and has
/// the `work_mem` of `WARDEN_DATABASE_WORK_MEM` (default 64MB: the audit counts' bitmaps stay
/// exact; see `startup::postgres_session`).
#[tokio::test]
async fn postgres_plans_every_statement_for_its_values() {
    let app = TestApp::spawn().await;
    let db = app.services().db.clone();
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return;
    }
    // Four connections held at once: four of the pool's.
    use sea_orm::TransactionTrait;
    let held = futures::future::join_all((0..4).map(|_| db.begin())).await;
    let mut answers = Vec::new();
    for tx in held {
        let tx = tx.unwrap();
        let mut mode = sql_strings(&tx, "SHOW plan_cache_mode").await;
        mode.extend(sql_strings(&tx, "SHOW jit").await);
        mode.extend(sql_strings(&tx, "SHOW work_mem").await);
        let pid = sql_i64(&tx, "SELECT CAST(pg_backend_pid() AS BIGINT)").await;
        answers.push((mode, pid));
    }
    let pids: BTreeSet<i64> = answers.iter().map(|(_, pid)| *pid).collect();
    assert_eq!(pids.len(), 4, "{answers:?}");
    for (mode, _) in answers {
        assert_eq!(mode, ["force_custom_plan", "off", "64MB"]);
    }
}

/// A filter with a time range reads the log by `seq` only within the `seq` range of its hours
/// (`audit_hour_seqs`, kept by the rollup's catch-up, and the events not counted yet), so a
/// range in the past or its last page does not walk every other event. The list (every page)
/// and the export find exactly the events of the range, also when an event is stored late
/// with an earlier time (a journal replayed at start), before and after the catch-up counts
/// it, and after retention.
#[tokio::test]
async fn audit_time_ranges_find_every_event_of_their_hours() {
    use sea_orm::{EntityTrait, QueryFilter, QueryOrder, QuerySelect};
    use warden_domain::audit::rollup::catch_up;
    use warden_domain::audit::{filter, search_in, AuditScope};
    use warden_domain::clock::Timestamp;
    use warden_domain::dto::AuditQuery;
    use warden_domain::entities::audit_events;
    let (app, admin) = app_with_short_retention().await;
    let db = app.services().db.clone();
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 12}))
        .await
        .assert_status(200);
    // The start-up's events a month old (retention deletes the oldest first), signed in again.
    app.clock.advance_secs(30 * 86_400);
    let admin = app.client();
    admin
        .login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);
    generate_now(&app, 3_000, 15, 9, 1_000).await;
    while catch_up(&db, 1_000).await.unwrap() > 0 {}
    let now = app.clock.now();
    let at =
        |days: i64, hours: i64| Timestamp(now.millis() - days * 86_400_000 - hours * 3_600_000);
    // Stored now, dated days ago: the newest `seq`, an old time.
    let late = |t: Timestamp, what: &str| {
        let db = db.clone();
        let what = what.to_owned();
        async move {
            let tx = begin_change(&db).await.unwrap();
            let e = AuditEvent::new(
                AuditKind::Console,
                Actor::System,
                SessionType::System,
                what,
                Outcome::Allowed,
            );
            append(&tx, t, vec![e]).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    late(at(6, 5), "replayed.first").await;
    let range = |since: Option<Timestamp>, until: Option<Timestamp>| {
        let mut a = AuditQuery::default();
        a.since = since.map(|t| t.rfc3339());
        a.until = until.map(|t| t.rfc3339());
        a
    };
    let mut filters = vec![
        range(Some(at(7, 0)), Some(at(6, 0))),
        range(Some(at(6, 6)), Some(at(6, 4))),
        range(Some(at(10, 3)), None),
        range(None, Some(at(9, 0))),
        range(Some(at(2, 0)), Some(at(1, 12))),
        // Nothing stored then.
        range(Some(at(-2, 0)), Some(at(-3, 0))),
        range(Some(at(60, 0)), Some(at(50, 0))),
    ];
    let mut f = range(Some(at(8, 0)), Some(at(5, 0)));
    f.kind = Some("console".into());
    filters.push(f);
    let mut f = AuditQuery::default();
    f.range = Some("24h".into());
    filters.push(f);
    let all = AuditScope::all();
    let check = |label: &'static str| {
        let (db, filters, all, admin) = (db.clone(), filters.clone(), all.clone(), &admin);
        async move {
            let mut matched = 0;
            for q in &filters {
                // What the range holds, read without any `seq` range.
                let want: Vec<i64> = audit_events::Entity::find()
                    .select_only()
                    .column(audit_events::Column::Seq)
                    .filter(filter(db.get_database_backend(), q, &all, now).unwrap())
                    .order_by_desc(audit_events::Column::Seq)
                    .into_tuple()
                    .all(&db)
                    .await
                    .unwrap();
                let mut got = Vec::new();
                let mut page = q.clone();
                page.limit = Some(97);
                loop {
                    let p = search_in(&db, &page, &all, now).await.unwrap();
                    got.extend(p.items.iter().map(|e| e.seq));
                    match p.next {
                        Some(next) => page.cursor = Some(next),
                        None => break,
                    }
                }
                assert_eq!(got, want, "{label}: {q:?}");
                let url = format!(
                    "/api/v1/audit/export?format=ndjson&{}",
                    serde_urlencoded::to_string([
                        ("since", q.since.clone().unwrap_or_default()),
                        ("until", q.until.clone().unwrap_or_default()),
                        ("range", q.range.clone().unwrap_or_default()),
                        ("kind", q.kind.clone().unwrap_or_default()),
                    ])
                    .unwrap()
                );
                let body = admin.get(&url).await.assert_status(200).body;
                let exported: Vec<i64> = body
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).unwrap()["seq"]
                            .as_i64()
                            .unwrap()
                    })
                    .collect();
                assert_eq!(exported, want, "{label}: export of {q:?}");
                matched += want.len();
            }
            assert!(matched > 500, "{label}: {matched}");
        }
    };
    check("the replayed event not counted yet").await;
    while catch_up(&db, 1_000).await.unwrap() > 0 {}
    check("caught up").await;
    // Another, counted at once; then retention deletes the oldest days.
    late(at(9, 1), "replayed.second").await;
    while catch_up(&db, 1_000).await.unwrap() > 0 {}
    check("a second replayed event, counted").await;
    warden_domain::audit::retention::run_batched(app.services(), 500)
        .await
        .unwrap()
        .expect("old events deleted");
    check("after retention").await;
    assert!(
        sql_i64(&db, "SELECT COUNT(*) FROM audit_hour_seqs").await > 100,
        "the hours' bounds are kept"
    );
}

/// The actor filter's suggestions come from the newest events the reader may see (a bounded
/// read, whatever the log's size): someone who acted only before them is not suggested, and
/// the filter still finds them.
#[tokio::test]
async fn actor_suggestions_come_from_the_newest_events_and_the_filter_reaches_older_ones() {
    use warden_domain::audit::{actor_suggestions, search_at, AuditScope, SUGGESTIONS_FROM};
    let app = TestApp::spawn().await;
    let db = &app.services().db;
    // Named to sort before every generated person: only the sample decides who is suggested.
    let person = |name: &str| {
        AuditEvent::new(
            AuditKind::Console,
            Actor::User {
                id: warden_domain::ids::UserId::new(),
                name: name.to_owned(),
            },
            SessionType::Browser,
            "user.update",
            Outcome::Allowed,
        )
    };
    append_one(&app, person("aaa.ancient@example.com")).await;
    // More than the sample: some generated events are not a person's (agents, the
    // system), and only a person's count.
    generate_now(&app, SUGGESTIONS_FROM + SUGGESTIONS_FROM / 2, 1, 11, 2_000).await;
    append_one(&app, person("aaa.recent@example.com")).await;
    let now = app.clock.now();
    let names = actor_suggestions(db, &AuditScope::all(), now)
        .await
        .unwrap();
    assert!(
        names.contains(&"aaa.recent@example.com".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"aaa.ancient@example.com".to_owned()),
        "{names:?}"
    );
    assert!(names.len() <= 200 && names.len() > 100, "{}", names.len());
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    let found = search_at(
        db,
        &warden_domain::dto::AuditQuery {
            actor: Some("aaa.ancient@".into()),
            ..Default::default()
        },
        None,
        now,
    )
    .await
    .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].actor, "aaa.ancient@example.com");
}

/// Append one event, now.
async fn append_one(app: &TestApp, e: AuditEvent) {
    let tx = begin_change(&app.services().db).await.unwrap();
    append(&tx, app.clock.now(), vec![e]).await.unwrap();
    tx.commit().await.unwrap();
}

/// Each export reads the whole matching log while its reader takes it in: one person runs at
/// most two at once (a third is refused, 429, while the first two are still being read), a
/// finished or abandoned one gives its place back, and someone else is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_cannot_run_audit_exports_without_end() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let nobody = app.user_client(&admin, "nobody@example.com").await;
    // Far more than the sockets between here and the reader hold: an unread export stays
    // running.
    generate_now(&app, 60_000, 30, 11, 10_000).await;
    let export = |c: &Client| {
        let req = c
            .http
            .get(format!("{}/api/v1/audit/export?format=ndjson", c.base));
        async move { req.send().await.unwrap() }
    };
    let mut running = vec![];
    for _ in 0..warden_server::ratelimit::AUDIT_EXPORTS_PER_PERSON {
        let r = export(&admin).await;
        assert_eq!(r.status(), 200);
        running.push(r);
    }
    let r = export(&admin).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_exports", "{body}");
    // Someone else is not held back (their own activity).
    let theirs = export(&nobody).await;
    assert_eq!(theirs.status(), 200);
    assert!(!theirs.text().await.unwrap().is_empty());
    // An abandoned export gives its place back.
    drop(running.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = export(&admin).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned export's place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Generate `events` realistic events over the `days` before the app's now (`seed`: their
/// content), `per_transaction` rows a transaction.
async fn generate_now(app: &TestApp, events: u64, days: u32, seed: u64, per_transaction: usize) {
    generate(
        &app.services().db,
        &GenerateOptions {
            events,
            days,
            seed,
            per_transaction,
        },
        app.clock.now(),
        |_| {},
    )
    .await
    .unwrap();
}

/// An application whose retention may be set below the default floor of 30 days, to age
/// events by days.
async fn app_with_short_retention() -> (TestApp, Client) {
    TestApp::spawn_with(BTreeMap::from([(
        "WARDEN_AUDIT_RETENTION_MIN_DAYS".to_owned(),
        "1".to_owned(),
    )]))
    .await
    .with_admin()
    .await
}
