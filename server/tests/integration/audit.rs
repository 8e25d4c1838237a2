//! The audit page's reads beside the list: facets, histogram (counts as data, on SQLite and
//! PostgreSQL), their scope and their refusals.

use serde_json::{json, Value};
use warden_domain::audit::{
    append, begin_change, Actor, AuditEvent, AuditKind, Outcome, SessionType,
};
use warden_domain::clock::{Clock, Timestamp};
use warden_server::testing::{Client, TestApp};

/// A Kubernetes request by `who` on `cluster`/`namespace` of `project`.
fn kube(
    who: &str,
    project: &str,
    cluster: &str,
    namespace: &str,
    verb: &str,
    outcome: Outcome,
) -> AuditEvent {
    let (action, resource) = match verb {
        "exec" => ("kube.create".to_owned(), "pods/exec"),
        v => (format!("kube.{v}"), "pods"),
    };
    let mut e = AuditEvent::new(
        AuditKind::KubeApi,
        Actor::Anonymous {
            claimed: who.to_owned(),
        },
        SessionType::Cli,
        action,
        outcome,
    )
    .resource(resource, "web-1")
    .project(project);
    e.cluster = Some(cluster.to_owned());
    e.namespace = Some(namespace.to_owned());
    e
}

/// Store `events` as written `ago_secs` before the app's now.
async fn write_at(app: &TestApp, ago_secs: i64, events: Vec<AuditEvent>) {
    let db = &app.services().db;
    let tx = begin_change(db).await.unwrap();
    append(&tx, app.clock.now().minus_secs(ago_secs), events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Two projects' Kubernetes requests over the last 20 minutes:
/// alpha: alice get ×3 and exec (denied) ×1 on c1/apple 5 min ago, bob list ×2 (denied) on
/// c1/banana 20 min ago; beta: carol delete ×4 on c2/cherry 10 min ago.
async fn seed(app: &TestApp, admin: &Client) {
    for p in ["alpha", "beta"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let mut five = Vec::new();
    for _ in 0..3 {
        five.push(kube(
            "alice@example.com",
            "alpha",
            "c1",
            "apple",
            "get",
            Outcome::Allowed,
        ));
    }
    five.push(kube(
        "alice@example.com",
        "alpha",
        "c1",
        "apple",
        "exec",
        Outcome::Denied,
    ));
    write_at(app, 5 * 60, five).await;
    let carol = (0..4)
        .map(|_| {
            kube(
                "carol@example.com",
                "beta",
                "c2",
                "cherry",
                "delete",
                Outcome::Allowed,
            )
        })
        .collect();
    write_at(app, 10 * 60, carol).await;
    let bob = (0..2)
        .map(|_| {
            kube(
                "bob@example.com",
                "alpha",
                "c1",
                "banana",
                "list",
                Outcome::Denied,
            )
        })
        .collect();
    write_at(app, 20 * 60, bob).await;
}

fn pairs(v: &Value) -> Vec<(String, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["value"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn p(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(v, n)| (v.to_string(), *n)).collect()
}

fn sums(h: &Value) -> (u64, u64, u64) {
    h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0, 0), |(a, d, e), b| {
            (
                a + b["allowed"].as_u64().unwrap(),
                d + b["denied"].as_u64().unwrap(),
                e + b["error"].as_u64().unwrap(),
            )
        })
}

/// The bucket holding the instant `t`.
fn bucket_at(h: &Value, t: Timestamp) -> Value {
    let parse = |s: &Value| {
        Timestamp::from_offset(
            time::OffsetDateTime::parse(
                s.as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap(),
        )
    };
    h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| parse(&b["start"]) <= t && t < parse(&b["end"]))
        .unwrap_or_else(|| panic!("no bucket holds {}: {h}", t.rfc3339()))
        .clone()
}

#[tokio::test]
async fn audit_facets_count_the_filter() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    seed(&app, &admin).await;
    let f = admin
        .get("/api/v1/audit/facets?range=1h&kind=kube_api")
        .await
        .assert_status(200)
        .json();
    assert_eq!(f["total"], 10, "{f}");
    assert_eq!(
        pairs(&f["actors"]),
        p(&[
            ("alice@example.com", 4),
            ("carol@example.com", 4),
            ("bob@example.com", 2)
        ])
    );
    assert_eq!(pairs(&f["kinds"]), p(&[("kube_api", 10)]));
    assert_eq!(pairs(&f["clusters"]), p(&[("c1", 6), ("c2", 4)]));
    assert_eq!(
        pairs(&f["namespaces"]),
        p(&[("apple", 4), ("cherry", 4), ("banana", 2)])
    );
    assert_eq!(
        pairs(&f["verbs"]),
        p(&[("delete", 4), ("get", 3), ("list", 2), ("exec", 1)])
    );
    assert_eq!(pairs(&f["outcomes"]), p(&[("allowed", 7), ("denied", 3)]));

    // A facet's value narrows the filter as its parameter does.
    let f = admin
        .get("/api/v1/audit/facets?range=1h&verb=exec")
        .await
        .assert_status(200)
        .json();
    assert_eq!(f["total"], 1, "{f}");
    assert_eq!(pairs(&f["actors"]), p(&[("alice@example.com", 1)]));
    let f = admin
        .get("/api/v1/audit/facets?range=1h&cluster=c1&namespace=banana")
        .await
        .assert_status(200)
        .json();
    assert_eq!(pairs(&f["verbs"]), p(&[("list", 2)]));
    assert_eq!(pairs(&f["outcomes"]), p(&[("denied", 2)]));
    // The range counts: 15 minutes leave bob out.
    let f = admin
        .get("/api/v1/audit/facets?range=15m&kind=kube_api")
        .await
        .assert_status(200)
        .json();
    assert_eq!(f["total"], 8, "{f}");
    assert!(!f["actors"].to_string().contains("bob"), "{f}");
    // The list agrees with the total.
    let list = admin
        .get("/api/v1/audit/events?range=15m&kind=kube_api&limit=100")
        .await
        .assert_status(200)
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn audit_histogram_counts_allowed_and_denied_per_bucket() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    seed(&app, &admin).await;
    let now = app.clock.now();
    let h = admin
        .get("/api/v1/audit/histogram?range=1h&kind=kube_api")
        .await
        .assert_status(200)
        .json();
    assert_eq!(h["bucket_seconds"], 60, "{h}");
    let n = h["buckets"].as_array().unwrap().len();
    assert!((60..=62).contains(&n), "{n} buckets");
    assert_eq!(sums(&h), (7, 3, 0));
    let five = bucket_at(&h, now.minus_secs(5 * 60));
    assert_eq!(
        (five["allowed"].as_u64(), five["denied"].as_u64()),
        (Some(3), Some(1)),
        "{five}"
    );
    let twenty = bucket_at(&h, now.minus_secs(20 * 60));
    assert_eq!(
        (twenty["allowed"].as_u64(), twenty["denied"].as_u64()),
        (Some(0), Some(2)),
        "{twenty}"
    );

    // Wider ranges, wider buckets.
    for (range, secs) in [
        ("15m", 60),
        ("24h", 1800),
        ("7d", 3 * 3600),
        ("30d", 12 * 3600),
    ] {
        let h = admin
            .get(&format!(
                "/api/v1/audit/histogram?range={range}&kind=kube_api"
            ))
            .await
            .assert_status(200)
            .json();
        assert_eq!(h["bucket_seconds"], secs, "{range}: {h}");
        let n = h["buckets"].as_array().unwrap().len();
        assert!((15..=62).contains(&n), "{range}: {n} buckets");
        let expected = if range == "15m" { (7, 1, 0) } else { (7, 3, 0) };
        assert_eq!(sums(&h), expected, "{range}");
    }

    // A custom range (as a bucket's zoom link sets it), and the outcome filter.
    let since = now.minus_secs(11 * 60).rfc3339();
    let until = now.minus_secs(4 * 60).rfc3339();
    let url = format!(
        "/api/v1/audit/histogram?kind=kube_api&outcome=allowed&since={}&until={}",
        urlencode(&since),
        urlencode(&until)
    );
    let h = admin.get(&url).await.assert_status(200).json();
    assert_eq!(h["bucket_seconds"], 60, "{h}");
    assert_eq!(sums(&h), (7, 0, 0));
    // Without a range: from the first to the last matching event.
    let h = admin
        .get("/api/v1/audit/histogram?kind=kube_api&actor=bob")
        .await
        .assert_status(200)
        .json();
    assert_eq!(sums(&h), (0, 2, 0), "{h}");
    let h = admin
        .get("/api/v1/audit/histogram?actor=nobody")
        .await
        .assert_status(200)
        .json();
    assert!(h["buckets"].as_array().unwrap().is_empty(), "{h}");
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A project auditor counts their project's events only, whatever the filter asks.
#[tokio::test]
async fn audit_facets_and_histogram_stay_in_scope() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    seed(&app, &admin).await;
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "PROJECT_READ_ONLY", "project": "alpha"}),
        )
        .await
        .assert_status(201);
    let f = auditor
        .get("/api/v1/audit/facets?range=1h&kind=kube_api")
        .await
        .assert_status(200)
        .json();
    assert_eq!(f["total"], 6, "{f}");
    assert_eq!(pairs(&f["clusters"]), p(&[("c1", 6)]));
    assert!(!f.to_string().contains("carol"), "{f}");
    assert!(!f.to_string().contains("cherry"), "{f}");
    let f = auditor
        .get("/api/v1/audit/facets?project=beta")
        .await
        .assert_status(200)
        .json();
    assert_eq!(f["total"], 0, "{f}");
    assert!(f["actors"].as_array().unwrap().is_empty(), "{f}");
    let h = auditor
        .get("/api/v1/audit/histogram?range=1h&kind=kube_api")
        .await
        .assert_status(200)
        .json();
    assert_eq!(sums(&h), (3, 3, 0), "{h}");
    let h = auditor
        .get("/api/v1/audit/histogram?range=1h&cluster=c2")
        .await
        .assert_status(200)
        .json();
    assert_eq!(sums(&h), (0, 0, 0), "{h}");

    // Someone without audit.read anywhere counts their own activity only (two sign-ins).
    let nobody = app.user_client(&admin, "nobody@example.com").await;
    let f = nobody
        .get("/api/v1/audit/facets")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        pairs(&f["actors"]),
        p(&[("nobody@example.com", f["total"].as_u64().unwrap())]),
        "{f}"
    );
    let h = nobody
        .get("/api/v1/audit/histogram?kind=kube_api")
        .await
        .assert_status(200)
        .json();
    assert!(h["buckets"].as_array().unwrap().is_empty(), "{h}");
    for path in ["/api/v1/audit/facets", "/api/v1/audit/histogram"] {
        app.client().get(path).await.assert_status(401);
    }
}

#[tokio::test]
async fn audit_facets_and_histogram_refuse_bad_parameters() {
    let (_app, admin) = TestApp::spawn().await.with_admin().await;
    for (query, field) in [
        ("kind=nope", Some("kind")),
        ("outcome=maybe", Some("outcome")),
        ("range=2w", Some("range")),
        ("since=yesterday", Some("since")),
        ("status=ok", None),
        ("colour=red", None),
    ] {
        for path in ["facets", "histogram"] {
            let r = admin
                .get(&format!("/api/v1/audit/{path}?{query}"))
                .await
                .assert_status(422);
            assert_eq!(r.error_code(), "invalid", "{path}?{query}: {}", r.body);
            if let Some(field) = field {
                assert!(
                    r.json()["error"]["fields"][field].is_string(),
                    "{path}?{query}: {}",
                    r.body
                );
            }
        }
    }
    // An end before the start: refused by every read, the list and export included (the
    // list answered nothing, and the console's summary a 500).
    for path in ["histogram", "facets", "events", "export?format=csv&"] {
        let sep = if path.ends_with('&') { "" } else { "?" };
        let r = admin
            .get(&format!(
                "/api/v1/audit/{path}{sep}since=2026-11-28T10:00&until=2026-11-28T09:00"
            ))
            .await
            .assert_status(422);
        assert!(
            r.json()["error"]["fields"]["until"].is_string(),
            "{path}: {}",
            r.body
        );
    }
    let doc = admin
        .get("/api/v1/openapi.json")
        .await
        .assert_status(200)
        .json();
    for path in ["/api/v1/audit/facets", "/api/v1/audit/histogram"] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} undocumented"))
            .clone();
        for name in ["range", "actor", "cluster", "verb"] {
            assert!(params.iter().any(|p| p["name"] == name), "{path}: {name}");
        }
    }
}

/// An event's detail: every field, the events of the same request (request id) and of the same
/// terminal (`details.terminal_id`), the recording; within scope, else 404 (REST and page).
#[tokio::test]
async fn audit_event_detail_links_and_scope() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    seed(&app, &admin).await;
    let me = admin.get("/api/v1/me").await.assert_status(200).json();
    let admin_id = me["user"]["id"].as_str().unwrap().to_owned();
    let admin_uid = warden_domain::ids::UserId::parse(&admin_id).unwrap();
    let with_request = |mut e: AuditEvent, r: &str| {
        e.request.request_id = Some(r.to_owned());
        e
    };
    let mut first = with_request(
        kube(
            "alice@example.com",
            "alpha",
            "c1",
            "apple",
            "exec",
            Outcome::Allowed,
        ),
        "rq-1",
    );
    first.actor = Actor::User {
        id: admin_uid,
        name: "admin@warden.local".into(),
    };
    let mut end = with_request(
        kube(
            "alice@example.com",
            "alpha",
            "c1",
            "apple",
            "exec",
            Outcome::Denied,
        ),
        "rq-1",
    );
    end.action = "kube.exec.closed".into();
    let other_project = with_request(
        kube(
            "carol@example.com",
            "beta",
            "c2",
            "cherry",
            "get",
            Outcome::Allowed,
        ),
        "rq-1",
    );
    let mut open = AuditEvent::new(
        AuditKind::Terminal,
        Actor::User {
            id: admin_uid,
            name: "admin@warden.local".into(),
        },
        SessionType::WebShell,
        "terminal.open",
        Outcome::Allowed,
    )
    .project("alpha");
    open.cluster = Some("c1".into());
    open.details = json!({"terminal_id": "term-9", "recording": open.id.to_string()});
    let mut in_shell = kube(
        "admin@warden.local",
        "alpha",
        "c1",
        "apple",
        "get",
        Outcome::Allowed,
    );
    in_shell.details = json!({"terminal_id": "term-9"});
    let mut decoy = kube(
        "admin@warden.local",
        "alpha",
        "c1",
        "apple",
        "get",
        Outcome::Allowed,
    );
    decoy.details = json!({"terminal_id": "term-90"});
    let ids: Vec<String> = [&first, &end, &other_project, &open, &in_shell, &decoy]
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    write_at(
        &app,
        60,
        vec![first, end, other_project, open, in_shell, decoy],
    )
    .await;
    let [first, end, other_project, open, in_shell, _decoy] = <[String; 6]>::try_from(ids).unwrap();
    let ids_of = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let d = admin
        .get(&format!("/api/v1/audit/events/{first}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(d["event"]["id"], first.as_str());
    assert_eq!(d["event"]["request_id"], "rq-1");
    assert_eq!(d["event"]["actor_id"], admin_id.as_str());
    assert_eq!(d["event"]["resource_kind"], "pods/exec");
    assert_eq!(
        ids_of(&d["same_request"]),
        vec![end.clone(), other_project.clone()]
    );
    assert!(d["terminal_id"].is_null(), "{d}");
    assert!(d["recording"].is_null(), "{d}");

    // The terminal: its opening and its shell's request, not the terminal "term-90".
    let d = admin
        .get(&format!("/api/v1/audit/events/{in_shell}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(d["terminal_id"], "term-9");
    assert_eq!(ids_of(&d["same_terminal"]), vec![open.clone()]);
    assert_eq!(d["recording"], open.as_str(), "{d}");
    let d = admin
        .get(&format!("/api/v1/audit/events/{open}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(ids_of(&d["same_terminal"]), vec![in_shell.clone()]);
    assert_eq!(d["recording"], open.as_str());

    // The page: every field, the raw JSON, links to the user, the cluster and the recording.
    let page = admin
        .get(&format!("/audit/{first}"))
        .await
        .assert_status(200)
        .body;
    assert!(
        page.contains(&format!("href=\"/users/{admin_id}\"")),
        "{page}"
    );
    assert!(page.contains("href=\"/clusters/c1\""), "{page}");
    assert!(page.contains("audit-same-request"), "{page}");
    assert!(page.contains("audit-event-json"), "{page}");
    let page = admin
        .get(&format!("/audit/{in_shell}"))
        .await
        .assert_status(200)
        .body;
    assert!(
        page.contains(&format!("href=\"/audit/recordings/{open}\"")),
        "{page}"
    );
    // The list links each event to its page.
    let list = admin
        .get("/audit?kind=terminal")
        .await
        .assert_status(200)
        .body;
    assert!(list.contains(&format!("href=\"/audit/{open}\"")), "{list}");

    // A project auditor: alpha's events, never beta's (404 as if it did not exist).
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "PROJECT_READ_ONLY", "project": "alpha"}),
        )
        .await
        .assert_status(201);
    let d = auditor
        .get(&format!("/api/v1/audit/events/{first}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        ids_of(&d["same_request"]),
        vec![end.clone()],
        "beta's event is not linked"
    );
    let r = auditor
        .get(&format!("/api/v1/audit/events/{other_project}"))
        .await
        .assert_status(404);
    assert_eq!(r.error_code(), "not_found");
    auditor
        .get(&format!("/audit/{other_project}"))
        .await
        .assert_status(404);
    auditor
        .get(&format!("/audit/{first}"))
        .await
        .assert_status(200);
    // Events of no project (the admin's console changes) are the organization's.
    let console = admin
        .get("/api/v1/audit/events?kind=console&action=user.create&limit=1")
        .await
        .json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    auditor
        .get(&format!("/api/v1/audit/events/{console}"))
        .await
        .assert_status(404);
    admin
        .get("/api/v1/audit/events/no-such-event")
        .await
        .assert_status(404);
    let nobody = app.user_client(&admin, "nobody@example.com").await;
    nobody
        .get(&format!("/api/v1/audit/events/{first}"))
        .await
        .assert_status(404);
    app.client()
        .get(&format!("/api/v1/audit/events/{first}"))
        .await
        .assert_status(401);
}

/// Every user reads their own activity (list, facets, histogram, detail, export), nobody
/// else's; the page says so and suggests only the people they may see; "My activity" is in the
/// user menu.
#[tokio::test]
async fn audit_every_user_sees_their_own_activity_only() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    seed(&app, &admin).await;
    let dev = app.user_client(&admin, "dev@example.com").await;
    let me = dev.get("/api/v1/me").await.assert_status(200).json();
    let dev_id = me["user"]["id"].as_str().unwrap().to_owned();
    // dev's own activity: their sign-in and password change; not their refused project
    // creation (a refusal's audited reason is for auditors).
    dev.post("/api/v1/projects", json!({"name": "mine"}))
        .await
        .assert_status(403);
    let page = dev
        .get("/api/v1/audit/events?limit=100")
        .await
        .assert_status(200)
        .json();
    let items = page["items"].as_array().unwrap();
    assert!(items.len() >= 2, "{page}");
    assert!(
        items
            .iter()
            .all(|e| e["actor_id"] == dev_id.as_str() && e["outcome"] == "allowed"),
        "{page}"
    );
    let denied = dev
        .get("/api/v1/audit/events?outcome=denied")
        .await
        .assert_status(200)
        .json();
    assert!(denied["items"].as_array().unwrap().is_empty(), "{denied}");
    let refused = admin
        .get("/api/v1/audit/events?outcome=denied&actor=dev@")
        .await
        .json();
    assert!(
        !refused["items"].as_array().unwrap().is_empty(),
        "the refusal is audited: {refused}"
    );
    let refusal = refused["items"][0]["id"].as_str().unwrap().to_owned();
    dev.get(&format!("/api/v1/audit/events/{refusal}"))
        .await
        .assert_status(404);
    let f = dev
        .get("/api/v1/audit/facets")
        .await
        .assert_status(200)
        .json();
    assert_eq!(f["total"].as_u64().unwrap(), items.len() as u64, "{f}");
    assert_eq!(
        pairs(&f["actors"]),
        p(&[("dev@example.com", items.len() as u64)])
    );
    let h = dev
        .get("/api/v1/audit/histogram?range=1h")
        .await
        .assert_status(200)
        .json();
    let (a, d, e) = sums(&h);
    assert_eq!(a + d + e, items.len() as u64, "{h}");
    let nd = dev
        .get("/api/v1/audit/export?format=ndjson")
        .await
        .assert_status(200)
        .body;
    assert_eq!(nd.lines().count(), items.len());
    assert!(!nd.contains("alice@example.com"));
    // Someone else's event: not found.
    let other = admin
        .get("/api/v1/audit/events?actor=carol&limit=1")
        .await
        .json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    dev.get(&format!("/api/v1/audit/events/{other}"))
        .await
        .assert_status(404);
    let own = items[0]["id"].as_str().unwrap();
    dev.get(&format!("/api/v1/audit/events/{own}"))
        .await
        .assert_status(200);
    // The page: their own activity, said so; suggestions are only themselves; the menu links it.
    let html = dev.get("/audit").await.assert_status(200).body;
    assert!(html.contains("audit-own-only"), "{html}");
    assert!(html.contains("<option value=\"dev@example.com\""), "{html}");
    assert!(
        !html.contains("admin@warden.local\""),
        "no other person is suggested"
    );
    assert!(
        html.contains(&format!("href=\"/audit?actor={dev_id}\"")),
        "My activity: {html}"
    );

    // A project auditor is suggested the people of their project's events (and themselves).
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "PROJECT_READ_ONLY", "project": "alpha"}),
        )
        .await
        .assert_status(201);
    let html = auditor.get("/audit").await.assert_status(200).body;
    assert!(!html.contains("audit-own-only"), "{html}");
    assert!(
        html.contains("<option value=\"auditor@example.com\""),
        "{html}"
    );
    assert!(
        !html.contains("<option value=\"dev@example.com\""),
        "{html}"
    );
    // The organization auditor: everyone who did something.
    let html = admin.get("/audit").await.assert_status(200).body;
    assert!(html.contains("<option value=\"dev@example.com\""), "{html}");
    assert!(
        html.contains("<option value=\"admin@warden.local\""),
        "{html}"
    );
    // The page is streamed in order, the list before the counts (so that a slow count does
    // not hold the list back); the whole page still holds both, without JavaScript too.
    let at = |testid: &str| {
        html.find(&format!("data-testid=\"{testid}\""))
            .unwrap_or_else(|| panic!("no {testid} in {html}"))
    };
    assert!(at("audit-events") < at("audit-histogram"), "{html}");
    assert!(at("audit-events") < at("audit-facets"), "{html}");
    assert!(!html.contains("audit-summary-pending"), "{html}");
}

/// Read a Server-Sent Events answer until `done` holds for what arrived, or `secs` pass.
async fn read_until(
    resp: &mut reqwest::Response,
    buf: &mut String,
    secs: u64,
    done: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done(buf) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            _ => return,
        }
    }
}

async fn open_tail(c: &Client, query: &str) -> reqwest::Response {
    let r = c
        .http
        .get(format!("{}/api/v1/audit/tail?{query}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    r
}

/// A long recording's replay is streamed page by page; a viewer who loses the right to replay
/// it meanwhile (here: their binding removed) gets no further page, and the body is cut short
/// rather than quietly ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_cut_when_its_viewer_loses_access() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let viewer = app.user_client(&admin, "viewer@example.com").await;
    let binding = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "viewer@example.com"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut open = AuditEvent::new(
        AuditKind::Terminal,
        Actor::System,
        SessionType::WebShell,
        "terminal.open",
        Outcome::Allowed,
    )
    .project("alpha");
    open.cluster = Some("c1".into());
    let id = open.id.to_string();
    open.details = json!({"recording": id});
    write_at(&app, 60, vec![open]).await;
    let svc = app.services();
    let mut rec = warden_server::terminal::Recorder::create(
        svc.db.clone(),
        svc.at_rest().cloned(),
        &id,
        "a long one",
        0,
    )
    .await
    .unwrap();
    // About 24 MB: far more than the sockets between the two hold.
    let block = "x".repeat(60_000);
    for _ in 0..400 {
        rec.output(block.as_bytes()).await.unwrap();
    }
    let (_, full) = rec.finish().await.unwrap();
    let mut r = viewer
        .http
        .get(format!("{}/api/v1/terminal/recordings/{id}", viewer.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = r.chunk().await.unwrap().unwrap().len() as u64;
    admin
        .delete(&format!("/api/v1/bindings/{binding}"))
        .await
        .assert_status(204);
    let cut = loop {
        match r.chunk().await {
            Ok(Some(b)) => got += b.len() as u64,
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut && got < full, "read {got} of {full} bytes, cut: {cut}");
}

/// A tail that resumes (`Last-Event-ID`) picks up what it missed in the last minutes, but a
/// forged `Last-Event-ID: 0` does not replay the whole log past the export's audit.
#[tokio::test]
async fn a_tail_resumes_minutes_back_not_from_the_beginning() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    // What setting up wrote is long past too.
    app.clock.advance_secs(20 * 60);
    let old = kube(
        "bob@example.com",
        "alpha",
        "c1",
        "apple",
        "get",
        Outcome::Allowed,
    );
    let recent = kube(
        "alice@example.com",
        "alpha",
        "c1",
        "apple",
        "get",
        Outcome::Allowed,
    );
    let (old_id, recent_id) = (old.id.to_string(), recent.id.to_string());
    write_at(&app, 3600, vec![old]).await;
    write_at(&app, 60, vec![recent]).await;
    // Stamped long ago, written last (a replayed journal): it does not move the resume point
    // past the recent one.
    let late = kube(
        "carol@example.com",
        "alpha",
        "c1",
        "apple",
        "get",
        Outcome::Allowed,
    );
    write_at(&app, 3000, vec![late]).await;
    let mut r = admin
        .http
        .get(format!("{}/api/v1/audit/tail?kind=kube_api", admin.base))
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = String::new();
    read_until(&mut r, &mut got, 10, |b| b.contains(&recent_id)).await;
    assert!(got.contains(&recent_id), "missed a minute ago: {got}");
    assert!(!got.contains(&old_id), "an hour ago is the list's: {got}");
}

/// The live tail streams new matching events within the viewer's scope (a project auditor never
/// sees another project's), follows a narrowed scope, and ends when the sign-in ends.
#[tokio::test]
async fn audit_tail_streams_new_events_in_scope_and_ends_when_signed_out() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    seed(&app, &admin).await;
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    let binding = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "PROJECT_READ_ONLY", "project": "alpha"}),
        )
        .await
        .assert_status(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = auditor
        .get("/api/v1/audit/tail?kind=nope")
        .await
        .assert_status(422);
    assert!(
        r.json()["error"]["fields"]["kind"].is_string(),
        "{}",
        r.body
    );
    app.client()
        .get("/api/v1/audit/tail")
        .await
        .assert_status(401);

    let mut mine = open_tail(&auditor, "kind=kube_api").await;
    let mut everyone_c2 = open_tail(&admin, "kind=kube_api&cluster=c2").await;
    let beta = kube(
        "carol@example.com",
        "beta",
        "c2",
        "cherry",
        "get",
        Outcome::Allowed,
    );
    let alpha = kube(
        "alice@example.com",
        "alpha",
        "c1",
        "apple",
        "get",
        Outcome::Denied,
    );
    let mut console = AuditEvent::new(
        AuditKind::Console,
        Actor::System,
        SessionType::System,
        "project.update",
        Outcome::Allowed,
    )
    .project("alpha");
    console.resource_name = Some("alpha".into());
    let (beta_id, alpha_id, console_id) = (
        beta.id.to_string(),
        alpha.id.to_string(),
        console.id.to_string(),
    );
    write_at(&app, 0, vec![beta, console, alpha]).await;

    let mut got = String::new();
    read_until(&mut mine, &mut got, 10, |b| b.contains(&alpha_id)).await;
    assert!(got.contains("event: audit"), "{got}");
    assert!(got.contains(&alpha_id), "the project's event: {got}");
    assert!(!got.contains(&beta_id), "another project's event: {got}");
    assert!(!got.contains(&console_id), "outside the filter: {got}");
    let mut admin_got = String::new();
    read_until(&mut everyone_c2, &mut admin_got, 10, |b| {
        b.contains(&beta_id)
    })
    .await;
    assert!(admin_got.contains(&beta_id), "{admin_got}");
    assert!(!admin_got.contains(&alpha_id), "{admin_got}");

    // The binding goes: the tail narrows to the auditor's own activity at the next check.
    admin
        .delete(&format!("/api/v1/bindings/{binding}"))
        .await
        .assert_status(204);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let later = kube(
        "alice@example.com",
        "alpha",
        "c1",
        "apple",
        "list",
        Outcome::Allowed,
    );
    let later_id = later.id.to_string();
    write_at(&app, 0, vec![later]).await;
    let mut after = String::new();
    read_until(&mut mine, &mut after, 3, |b| b.contains(&later_id)).await;
    assert!(!after.contains(&later_id), "no longer in scope: {after}");

    // Signed out: the stream ends, saying why.
    auditor
        .post("/api/v1/auth/logout", json!({}))
        .await
        .assert_status(204);
    let mut end = String::new();
    read_until(&mut mine, &mut end, 10, |b| b.contains("event: end")).await;
    assert!(end.contains("event: end"), "{end}");
    assert!(end.contains("signed out"), "{end}");
    drop(everyone_c2);
}

/// The live tail is woken by commits, not a timer: with its safety re-read set to ten minutes,
/// events committed by an audited change and by the gateway's batching writer arrive within a
/// second.
#[tokio::test]
async fn audit_tail_is_pushed_by_commits_not_polled() {
    use std::time::{Duration, Instant};
    use warden_domain::audit::{AuditSink, BatchingAuditSink};
    let (app, admin) = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_AUDIT_TAIL_REREAD_MS".to_owned(),
        "600000".to_owned(),
    )]))
    .await
    .with_admin()
    .await;
    let mut tail = open_tail(&admin, "").await;
    // Let the tail's first read (at its start) go by.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut got = String::new();
    // An audited change (`append` in its transaction): announced after its commit.
    let t = Instant::now();
    admin
        .post("/api/v1/projects", json!({"name": "pushed"}))
        .await
        .assert_status(201);
    read_until(&mut tail, &mut got, 1, |b| b.contains("\"pushed\"")).await;
    assert!(got.contains("\"pushed\""), "{got}");
    assert!(t.elapsed() < Duration::from_secs(1));

    // The batching writer (the gateway's): announced after each batch's commit.
    let batching = BatchingAuditSink::spawn(app.services().audit.clone(), 16, 8);
    let batched = kube(
        "bob@example.com",
        "alpha",
        "c1",
        "banana",
        "list",
        Outcome::Allowed,
    );
    let batched_id = batched.id.to_string();
    let t = Instant::now();
    batching.record(batched).await.unwrap();
    read_until(&mut tail, &mut got, 1, |b| b.contains(&batched_id)).await;
    assert!(got.contains(&batched_id), "{got}");
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// Web terminals' ids are numbers: terminal 7's events are not terminal 71's (nor 7's
/// neighbours in the JSON).
#[tokio::test]
async fn a_terminals_events_are_those_of_its_exact_id() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let with_terminal = |details: Value| {
        let mut e = kube(
            "admin@warden.local",
            "alpha",
            "c1",
            "apple",
            "get",
            Outcome::Allowed,
        );
        e.details = details;
        e
    };
    let seven = with_terminal(json!({"terminal_id": 7, "verb": "get"}));
    // Stored as compact JSON with sorted keys: here the id is the last value.
    let seven_last = with_terminal(json!({"bytes_in": 3, "terminal_id": 7}));
    let seventy_one = with_terminal(json!({"terminal_id": 71, "verb": "get"}));
    let ids: Vec<String> = [&seven, &seven_last, &seventy_one]
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    write_at(&app, 60, vec![seven, seven_last, seventy_one]).await;
    let d = admin
        .get(&format!("/api/v1/audit/events/{}", ids[0]))
        .await
        .assert_status(200)
        .json();
    let same: Vec<&str> = d["same_terminal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(same, vec![ids[1].as_str()], "{d}");
}

/// No request, refused or not, stores megabytes in the audit log: a sign-in with a long name
/// and request id, an agent hello with long headers. Each field is cut to what an honest
/// request needs, and a client's request id that does not look like one is replaced.
#[tokio::test]
async fn requests_cannot_store_megabytes_in_the_audit_log() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let big = "x".repeat(100_000);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/auth/login", app.url))
        .header("x-request-id", &big)
        .header("origin", &app.url)
        .json(&json!({"email": format!("{big}@example.com"), "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A well-formed id from a proxy is kept.
    http.post(format!("{}/api/v1/auth/login", app.url))
        .header("x-request-id", "proxy-7f3a:42")
        .header("origin", &app.url)
        .json(&json!({"email": "nobody@example.com", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    let r = http
        .post(format!("{}/agent/v1/challenge", app.url))
        .bearer_auth("not-a-token")
        .header("x-warden-agent-version", &big)
        .header("x-warden-fingerprint", &big)
        .header("x-warden-cluster", &big)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let events = admin
        .get("/api/v1/audit/events?limit=200")
        .await
        .assert_status(200)
        .json();
    let items = events["items"].as_array().unwrap();
    let sign_in = items
        .iter()
        .find(|e| {
            e["outcome"] == "denied"
                && e["actor"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("not an email address (100012 characters")
        })
        .unwrap_or_else(|| panic!("{events}"));
    let request_id = sign_in["request_id"].as_str().unwrap();
    assert!(request_id.len() <= 128, "{request_id}");
    assert!(sign_in["actor"].as_str().unwrap().chars().count() <= 254);
    assert!(items.iter().any(|e| e["request_id"] == "proxy-7f3a:42"));
    let agent = items
        .iter()
        .find(|e| e["kind"] == "agent" && e["outcome"] == "denied")
        .unwrap_or_else(|| panic!("{events}"));
    let stored = agent.to_string().len();
    assert!(stored < 16 * 1024, "an agent refusal stored {stored} bytes");
    // Every stored event is small.
    for e in items {
        let n = e.to_string().len();
        assert!(n < 80 * 1024, "{n} bytes: {}", &e.to_string()[..200]);
    }
}

/// Each live tail re-reads the log on every audit write: one person holds at most five at
/// once (the sixth is refused, 429), and a closed tail gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_cannot_open_live_tails_without_end() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let nobody = app.user_client(&admin, "nobody@example.com").await;
    let mut open = vec![];
    for _ in 0..5 {
        open.push(open_tail(&nobody, "").await);
    }
    let r = nobody
        .get("/api/v1/audit/tail")
        .await
        .assert_status(429)
        .json();
    assert_eq!(r["error"]["code"], "too_many_tails", "{r}");
    // Someone else is not held back.
    let _admins = open_tail(&admin, "").await;
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = nobody
            .http
            .get(format!("{}/api/v1/audit/tail", nobody.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed tail's place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A copy of the audit log leaving Warden is itself in the log: who exported, with which
/// filter and format (a departing auditor's full export is on record).
#[tokio::test]
async fn an_export_of_the_audit_log_is_audited() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "auditor@example.com"}, "role": "ADMIN_READ_ONLY"}),
        )
        .await
        .assert_status(201);
    let body = auditor
        .get("/api/v1/audit/export?format=csv&outcome=denied")
        .await
        .assert_status(200)
        .body;
    assert!(
        !body.contains("audit.export"),
        "an export holds no event of its own"
    );
    let events = admin
        .get("/api/v1/audit/events?action=audit.export")
        .await
        .assert_status(200)
        .json();
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{events}");
    assert_eq!(items[0]["actor"], "auditor@example.com");
    assert_eq!(items[0]["details"]["format"], "csv");
    assert_eq!(items[0]["details"]["filter"], "outcome=denied");
}

/// The log names projects: a project made under a deleted project's name does not inherit that
/// project's events. Its auditors read from when it began (list, facets, histogram, export);
/// the organization's auditors still read both.
#[tokio::test]
async fn a_project_made_under_a_deleted_ones_name_does_not_inherit_its_log() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let payments = || json!({"name": "payments"});
    admin
        .post("/api/v1/projects", payments())
        .await
        .assert_status(201);
    app.clock.advance_secs(60);
    let old = kube(
        "old@example.com",
        "payments",
        "c1",
        "ledger",
        "get",
        Outcome::Allowed,
    );
    write_at(&app, 0, vec![old]).await;
    app.clock.advance_secs(60);
    admin
        .delete("/api/v1/projects/payments")
        .await
        .assert_status(204);
    app.clock.advance_secs(60);
    admin
        .post("/api/v1/projects", payments())
        .await
        .assert_status(201);
    app.clock.advance_secs(60);
    let new = kube(
        "new@example.com",
        "payments",
        "c9",
        "books",
        "list",
        Outcome::Allowed,
    );
    write_at(&app, 0, vec![new]).await;
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .bind_user("auditor@example.com", "PROJECT_READ_ONLY", "payments", &[])
        .await;

    for q in ["", "project=payments&", "outcome=allowed&"] {
        let list = auditor
            .get(&format!("/api/v1/audit/events?{q}limit=100"))
            .await
            .assert_status(200)
            .json();
        let text = list.to_string();
        assert!(text.contains("new@example.com"), "{q}: {list}");
        assert!(!text.contains("old@example.com"), "{q}: {list}");
        assert!(!text.contains("project.delete"), "{q}: {list}");
        let f = auditor
            .get(&format!("/api/v1/audit/facets?{q}range=1h"))
            .await
            .assert_status(200)
            .json();
        assert!(!f.to_string().contains("old@example.com"), "{q}: {f}");
        assert!(!f.to_string().contains("ledger"), "{q}: {f}");
        let h = auditor
            .get(&format!(
                "/api/v1/audit/histogram?{q}range=1h&kind=kube_api"
            ))
            .await
            .assert_status(200)
            .json();
        assert_eq!(sums(&h), (1, 0, 0), "{q}: {h}");
    }
    let nd = auditor
        .get("/api/v1/audit/export?format=ndjson&project=payments")
        .await
        .assert_status(200)
        .body;
    assert!(nd.contains("new@example.com"), "{nd}");
    assert!(!nd.contains("old@example.com"), "{nd}");
    let all = admin
        .get("/api/v1/audit/events?project=payments&kind=kube_api&limit=100")
        .await
        .assert_status(200)
        .json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
}
