//! Health, metrics, headers, bad input, first start, audit chain.

use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait, Statement};
use serde_json::json;
use warden_domain::audit::{verify_chain, ChainStatus};
use warden_domain::entities::{groups, organization, projects, users};
use warden_server::testing::TestApp;

#[tokio::test]
async fn health_readiness_metrics() {
    let app = TestApp::spawn().await;
    let c = app.client();
    assert_eq!(c.get("/healthz").await.assert_status(200).body, "ok");
    c.get("/readyz").await.assert_status(200);
    c.login("x@example.com", "wrong password!!").await;
    let m = c.get("/metrics").await.assert_status(200).body;
    assert!(m.contains("warden_http_requests_total{route=\"/api/v1/auth/login\",method=\"POST\",status=\"401\"} 1"), "{m}");
    assert!(m.contains("warden_http_request_duration_seconds_bucket{route=\"/healthz\",method=\"GET\",le=\"+Inf\"} 1"), "{m}");
    assert!(m.contains("\nwarden_audit_queue_depth 0\n"), "{m}");
    assert!(m.contains("\nwarden_audit_written_events_total 0\n"), "{m}");
    assert!(m.contains("\nwarden_audit_write_seconds_count 0\n"), "{m}");
    assert!(
        m.contains("\nwarden_audit_journal_fsync_seconds_bucket{le=\"+Inf\"} "),
        "{m}"
    );
}

#[tokio::test]
async fn security_headers_and_request_ids() {
    let app = TestApp::spawn().await;
    let r = app.client().get("/login").await.assert_status(200);
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert!(r.headers.contains_key("referrer-policy"));
    assert!(r.headers.contains_key("content-security-policy"));
    assert!(
        !r.headers.contains_key("strict-transport-security"),
        "no HSTS over plain HTTP"
    );
    assert!(!r.headers["x-request-id"].to_str().unwrap().is_empty());
    let r = app.client().get("/api/v1/me").await.assert_status(401);
    assert!(r.headers.contains_key("content-security-policy"));
}

#[tokio::test]
async fn bad_input_gets_the_error_envelope() {
    let app = TestApp::spawn().await;
    let c = app.client();
    let r = c
        .post_raw(
            "/api/v1/auth/login",
            "application/json",
            b"{\"email\":".to_vec(),
        )
        .await
        .assert_status(400);
    assert_eq!(r.error_code(), "bad_request");
    let r = c
        .post_raw(
            "/api/v1/auth/login",
            "application/json",
            b"{\"email\": 5, \"password\": \"x\"}".to_vec(),
        )
        .await
        .assert_status(422);
    assert_eq!(r.error_code(), "invalid");
    let r = c
        .post(
            "/api/v1/auth/login",
            json!({"email": "a@b.co", "password": "x", "admin": true}),
        )
        .await
        .assert_status(422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin"));
    let r = c
        .post_raw(
            "/api/v1/auth/login",
            "application/json",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'],
        )
        .await
        .assert_status(400);
    assert_eq!(r.error_code(), "bad_request");
    let r = c
        .post_raw("/api/v1/auth/login", "text/plain", b"{}".to_vec())
        .await
        .assert_status(415);
    assert_eq!(r.error_code(), "unsupported_media_type");
    let big = format!(
        "{{\"email\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let r = c
        .post_raw("/api/v1/auth/login", "application/json", big.into_bytes())
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "payload_too_large");
    let r = c.get("/api/v1/does-not-exist").await.assert_status(404);
    assert_eq!(r.error_code(), "not_found");
    // The API's root is no console page.
    for root in ["/api/v1", "/api/v1/"] {
        let r = c.get(root).await.assert_status(404);
        assert_eq!(r.error_code(), "not_found", "{root}: {}", r.body);
    }
    // A wrong method: 405 in the envelope, with Allow.
    let r = c
        .http
        .put(format!("{}/api/v1/auth/login", c.base))
        .header("origin", &c.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    // A path parameter that is not UTF-8.
    let r = c.get("/api/v1/users/%FF%FE").await;
    assert!(r.status == 400 || r.status == 401, "{}", r.body);
    assert!(r.json()["error"]["code"].is_string(), "{}", r.body);
    // Nothing was half-written: no session, no user.
    assert!(c.session_cookie().is_none());
    assert_eq!(
        users::Entity::find()
            .count(&app.services().db)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn first_start_is_idempotent() {
    let app = TestApp::spawn().await;
    let db = &app.services().db;
    let before = warden_domain::audit::search(db, &Default::default(), None)
        .await
        .unwrap()
        .items
        .len();
    // Start again on the same database, with a different admin configured (and the key that
    // sealed its secrets: a restart in another data directory brings it along).
    let data = tempfile::tempdir().unwrap();
    warden_server::testing::share_generated_key(&app.database_url, data.path());
    let env = std::collections::BTreeMap::from([
        ("WARDEN_DATABASE_URL".to_owned(), app.database_url.clone()),
        (
            "WARDEN_DATA_DIR".to_owned(),
            data.path().display().to_string(),
        ),
        (
            "WARDEN_ADMIN_EMAIL".to_owned(),
            "other@example.com".to_owned(),
        ),
    ]);
    let config = warden_server::config::Config::from_source(&env).unwrap();
    warden_server::startup::prepare(config, app.clock.clone())
        .await
        .unwrap();
    assert_eq!(organization::Entity::find().count(db).await.unwrap(), 1);
    assert_eq!(users::Entity::find().count(db).await.unwrap(), 1);
    assert_eq!(projects::Entity::find().count(db).await.unwrap(), 1);
    assert_eq!(groups::Entity::find().count(db).await.unwrap(), 2);
    let names: Vec<String> = groups::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert!(
        names.contains(&"Organization Admins".to_owned())
            && names.contains(&"All Users".to_owned())
    );
    let after = warden_domain::audit::search(db, &Default::default(), None)
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(before, after, "a restart writes no bootstrap event");
    // The first admin can still sign in with the original password.
    app.client()
        .login(
            warden_server::testing::ADMIN_EMAIL,
            warden_server::testing::ADMIN_PASSWORD,
        )
        .await
        .assert_status(200);
}

#[tokio::test]
async fn audit_chain_detects_edits_and_deletions() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    c.login("nobody@example.com", "wrong password!!").await;
    c.login(warden_server::testing::ADMIN_EMAIL, "wrong password!!")
        .await;
    let db = &app.services().db;
    let ChainStatus::Intact { rows } = verify_chain(db).await.unwrap() else {
        panic!("chain should be intact")
    };
    assert!(rows >= 5, "{rows}");

    let events = c
        .get("/api/v1/audit/events?action=sign_in&outcome=denied")
        .await
        .assert_status(200)
        .json();
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // The older of the two: a row in the middle of the log.
    let victim = items[1]["seq"].as_i64().unwrap();

    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(
        backend,
        format!("UPDATE audit_events SET actor_name = 'someone else' WHERE seq = {victim}"),
    ))
    .await
    .unwrap();
    match verify_chain(db).await.unwrap() {
        ChainStatus::Broken { seq, .. } => assert_eq!(seq, victim),
        other => panic!("edit not detected: {other:?}"),
    }
    db.execute_raw(Statement::from_string(
        backend,
        format!("DELETE FROM audit_events WHERE seq = {victim}"),
    ))
    .await
    .unwrap();
    match verify_chain(db).await.unwrap() {
        ChainStatus::Broken { seq, .. } => assert!(seq > victim),
        other => panic!("deletion not detected: {other:?}"),
    }
}

#[tokio::test]
async fn audit_chain_detects_rows_deleted_from_the_end() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    c.login("nobody@example.com", "wrong password!!").await;
    let db = &app.services().db;
    assert!(matches!(
        verify_chain(db).await.unwrap(),
        ChainStatus::Intact { .. }
    ));
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(
        backend,
        "DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)".to_owned(),
    ))
    .await
    .unwrap();
    match verify_chain(db).await.unwrap() {
        ChainStatus::Broken { problem, .. } => {
            assert!(problem.contains("deleted from the end"), "{problem}")
        }
        other => panic!("tail deletion not detected: {other:?}"),
    }
}

#[tokio::test]
async fn audit_search_filters_and_paginates() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    for i in 0..7 {
        c.login(&format!("user{i}@example.com"), "wrong password!!")
            .await;
    }
    let p1 = c
        .get("/api/v1/audit/events?outcome=denied&limit=3")
        .await
        .assert_status(200)
        .json();
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let next = p1["next"].as_str().unwrap().to_owned();
    let p2 = c
        .get(&format!(
            "/api/v1/audit/events?outcome=denied&limit=3&cursor={next}"
        ))
        .await
        .assert_status(200)
        .json();
    let p3 = c
        .get(&format!(
            "/api/v1/audit/events?outcome=denied&limit=3&cursor={}",
            p2["next"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(p3["items"].as_array().unwrap().len(), 1);
    assert!(p3["next"].is_null());
    let r = c
        .get("/api/v1/audit/events?outcome=maybe")
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["outcome"].is_string());
    let csv = c
        .get("/api/v1/audit/export?format=csv&outcome=denied")
        .await
        .assert_status(200);
    assert_eq!(csv.body.lines().count(), 8);
    let nd = c
        .get("/api/v1/audit/export?format=ndjson&actor=user3@example.com")
        .await
        .assert_status(200);
    assert_eq!(nd.body.lines().count(), 1);
    drop(app);
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = TestApp::spawn().await;
    let doc = app
        .client()
        .get("/api/v1/openapi.json")
        .await
        .assert_status(200)
        .json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/projects", "post"),
        ("/api/v1/projects/{name}", "delete"),
        ("/api/v1/users", "get"),
        ("/api/v1/groups/{name}/members/{email}", "delete"),
        ("/api/v1/bindings", "post"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/audit/events", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let create = &paths["/api/v1/bindings"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateBindingRequest"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas["CreateBindingRequest"]["properties"]["subject"].is_object());
    assert!(schemas.contains_key("ErrorEnvelope"));
    // A page of each item type is a schema of its own, named after it.
    assert_eq!(
        paths["/api/v1/users"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/Page_for_UserDto"
    );
    assert!(
        schemas["Page_for_UserDto"]["properties"]["items"]["items"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/UserDto"))
    );
    // Statuses, origins and scopes are typed: the document lists their values.
    let values = |name: &str| -> Vec<String> {
        let s = &schemas[name];
        let list = s["enum"].as_array().cloned().unwrap_or_else(|| {
            // Documented variants come as `oneOf` single-value enums.
            s["oneOf"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {s}"))
                .iter()
                .flat_map(|v| v["enum"].as_array().cloned().unwrap_or_default())
                .collect()
        });
        list.iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        values("ClusterStatus"),
        ["pending", "connected", "disconnected"]
    );
    assert_eq!(values("UserStatus"), ["active", "deactivated"]);
    assert_eq!(values("UserOrigin"), ["local", "sso"]);
    assert_eq!(values("SubjectKind"), ["user", "group"]);
    assert_eq!(
        values("StreamKind"),
        // (schemars lists the documented variants after the others)
        [
            "exec",
            "attach",
            "portforward",
            "watch",
            "logs",
            "proxy",
            "stream",
            "terminal"
        ]
    );
    assert_eq!(values("Scope"), ["organization", "project", "namespace"]);
    assert_eq!(
        values("AuditKind"),
        ["console", "sign_in", "kube_api", "terminal", "agent", "system"]
    );
    assert_eq!(values("Outcome"), ["allowed", "denied", "error"]);
    assert_eq!(
        values("SessionType"),
        ["browser", "api", "cli", "web_shell", "agent", "system"]
    );
    assert_eq!(
        values("RequestStatus"),
        [
            "pending",
            "approved",
            "denied",
            "cancelled",
            "expired",
            "revoked"
        ]
    );
    for (schema, field, r#type) in [
        ("AuditEventDto", "kind", "AuditKind"),
        ("AuditEventDto", "outcome", "Outcome"),
        ("AuditEventDto", "session_type", "SessionType"),
        ("AccessRequestDto", "status", "RequestStatus"),
        ("ClusterDto", "status", "ClusterStatus"),
        ("UserDto", "status", "UserStatus"),
        ("UserDto", "origin", "UserOrigin"),
        ("RoleDto", "scope", "Scope"),
        ("BindingDto", "scope", "Scope"),
        ("SubjectRef", "kind", "SubjectKind"),
        ("CreateRoleRequest", "scope", "Scope"),
        (
            "IdentityProviderDto",
            "group_mapping_mode",
            "GroupMappingMode",
        ),
        ("KubectlSettingsDto", "scope", "KubectlSettingsScope"),
        ("UpdateUserRequest", "status", "UserStatus"),
        ("Me", "session_type", "SessionType"),
        ("LiveStreamDto", "kind", "StreamKind"),
    ] {
        let prop = &schemas[schema]["properties"][field];
        let reference = prop["$ref"]
            .as_str()
            .or_else(|| prop["allOf"][0]["$ref"].as_str())
            // An optional field: the type or null.
            .or_else(|| prop["anyOf"][0]["$ref"].as_str())
            .unwrap_or_else(|| panic!("{schema}.{field}: {prop}"));
        assert_eq!(reference, format!("#/components/schemas/{}", r#type));
    }
    let users = &paths["/api/v1/users"]["get"]["parameters"];
    assert!(users
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "status" && p["in"] == "query"));
    // Every documented operation is really routed: none answers the API's 404.
    let c = app.client();
    for (path, ops) in paths {
        if ops.get("get").is_some() && !path.contains('{') {
            let r = c.get(path.as_str()).await;
            assert_ne!(
                r.error_code(),
                "not_found",
                "GET {path} is documented but not routed"
            );
        }
    }
}

/// The audit endpoints answer bad parameters like every list (422, the envelope), the export
/// honours `limit` beside `format`, and the OpenAPI document lists what the handlers require.
#[tokio::test]
async fn audit_parameters_and_their_documentation() {
    let (_app, admin) = TestApp::spawn().await.with_admin().await;
    for i in 0..15 {
        admin
            .post("/api/v1/projects", json!({"name": format!("p{i}")}))
            .await
            .assert_status(201);
    }
    let r = admin
        .get("/api/v1/audit/events?limit=ten")
        .await
        .assert_status(422);
    assert_eq!(r.error_code(), "invalid");
    let r = admin
        .get("/api/v1/audit/events?colour=red")
        .await
        .assert_status(422);
    assert_eq!(r.error_code(), "invalid");
    let r = admin
        .get("/api/v1/audit/export?limit=10&format=csv")
        .await
        .assert_status(200);
    assert_eq!(
        r.body.lines().count(),
        11,
        "a header and 10 rows:\n{}",
        r.body
    );
    let r = admin
        .get("/api/v1/audit/export?limit=3")
        .await
        .assert_status(200);
    assert_eq!(r.body.lines().count(), 3, "NDJSON by default:\n{}", r.body);
    let r = admin
        .get("/api/v1/audit/export?format=xml")
        .await
        .assert_status(422);
    assert_eq!(r.error_code(), "invalid");

    let doc = admin
        .get("/api/v1/openapi.json")
        .await
        .assert_status(200)
        .json();
    let params = |path: &str| doc["paths"][path]["get"]["parameters"].clone();
    let explain = params("/api/v1/users/{user}/explain");
    assert!(
        explain
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "permission" && p["required"] == true),
        "{explain}"
    );
    let export = params("/api/v1/audit/export");
    for name in ["format", "limit", "actor", "since"] {
        assert!(
            export.as_array().unwrap().iter().any(|p| p["name"] == name),
            "{name} missing: {export}"
        );
    }
}

/// A second writer of the audit log (another replica, the `warden admin` CLI) on its own
/// connections, writing while this Warden audits console changes and sign-ins: the chain's
/// head is locked inside each writer's transaction, so no two rows chain to the same
/// predecessor and `verify_chain` finds one intact chain holding every event.
#[tokio::test]
async fn two_audit_writers_cannot_fork_the_chain() {
    use warden_domain::audit::{
        Actor, AuditEvent, AuditKind, AuditSink, DbAuditSink, Outcome, SessionType,
    };
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let other_db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let other = std::sync::Arc::new(DbAuditSink::new(other_db, app.services().clock.clone()));
    let db = &app.services().db;
    let before = match verify_chain(db).await.unwrap() {
        ChainStatus::Intact { rows } => rows,
        broken => panic!("{broken:?}"),
    };
    let writer = {
        let other = other.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let ev = AuditEvent::new(
                    AuditKind::System,
                    Actor::System,
                    SessionType::System,
                    format!("test.other_writer.{i}"),
                    Outcome::Allowed,
                );
                other.record(ev).await.expect("the other writer's event");
            }
        })
    };
    let console = async {
        for i in 0..20 {
            c.post(
                "/api/v1/groups",
                serde_json::json!({ "name": format!("fork-test-{i}") }),
            )
            .await
            .assert_status(201);
        }
    };
    let (w, ()) = tokio::join!(writer, console);
    w.unwrap();
    match verify_chain(db).await.unwrap() {
        ChainStatus::Intact { rows } => assert!(
            rows >= before + 60,
            "every event is in the chain: {rows} rows, {before} before"
        ),
        broken => panic!("two writers forked the chain: {broken:?}"),
    }
    // Each change has its event (written in the change's own transaction).
    let events = c
        .get("/api/v1/audit/events?action=group.create&limit=100")
        .await
        .assert_status(200)
        .json();
    assert_eq!(events["items"].as_array().unwrap().len(), 20);
}

/// A change and its audit event are one transaction: an audit row written through the
/// change's transaction goes when the transaction is rolled back, and is there once it commits.
#[tokio::test]
async fn a_change_and_its_audit_event_commit_together() {
    use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
    use warden_domain::entities::audit_events;
    let (app, _c) = TestApp::spawn().await.with_admin().await;
    let svc = app.services();
    let rows = |db| async move { audit_events::Entity::find().count(db).await.unwrap() };
    let groups_before = groups::Entity::find().count(&svc.db).await.unwrap();
    let audit_before = rows(&svc.db).await;
    let change = |name: &'static str| async move {
        let tx = warden_domain::audit::begin_change(&svc.db).await.unwrap();
        let now = svc.clock.now();
        sea_orm::ActiveModelTrait::insert(
            groups::ActiveModel::from(groups::Model {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.into(),
                description: String::new(),
                builtin: false,
                created_at: now.millis(),
                updated_at: now.millis(),
            }),
            &tx,
        )
        .await
        .unwrap();
        let ev = AuditEvent::new(
            AuditKind::Console,
            Actor::System,
            SessionType::System,
            "group.create",
            Outcome::Allowed,
        );
        warden_domain::audit::append(&tx, now, vec![ev])
            .await
            .unwrap();
        tx
    };
    change("rolled-back").await.rollback().await.unwrap();
    assert_eq!(
        groups::Entity::find().count(&svc.db).await.unwrap(),
        groups_before
    );
    assert_eq!(
        rows(&svc.db).await,
        audit_before,
        "the audit row went with the change"
    );
    change("committed").await.commit().await.unwrap();
    assert_eq!(
        groups::Entity::find().count(&svc.db).await.unwrap(),
        groups_before + 1
    );
    assert_eq!(rows(&svc.db).await, audit_before + 1);
    assert!(matches!(
        verify_chain(&svc.db).await.unwrap(),
        ChainStatus::Intact { .. }
    ));
}

/// Console pages that refuse answer 403 and unknown ids 404 (still with the friendly page).
#[tokio::test]
async fn console_pages_answer_the_status_of_their_refusal() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let sally = app.user_client(&admin, "sally@example.com").await;
    let r = sally.get("/users").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Not allowed"), "{}", r.body);
    let r = admin
        .get("/users/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin.get("/projects/nowhere").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin.get("/users").await;
    assert_eq!(r.status, 200);
}

/// An address the console does not have answers 404 (with its friendly page).
#[tokio::test]
async fn unknown_console_pages_answer_404() {
    let (_app, admin) = TestApp::spawn().await.with_admin().await;
    let r = admin.get("/no-such-page").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("Not found"), "{}", r.body);
}

/// The console bundle is linked under its version (a digest of its files): there it is cached
/// for good, and a new build is a new address; elsewhere under `/pkg` it is revalidated.
#[tokio::test]
async fn the_console_bundle_is_versioned_and_cached_for_good() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    for (name, body) in [
        ("warden.js", "export default function init() {}"),
        ("warden.wasm", "\0asm"),
        ("warden.css", "body { margin: 0 }"),
    ] {
        std::fs::write(site.path().join("pkg").join(name), body).unwrap();
    }
    let version = warden_server::startup::asset_version(site.path());
    assert_eq!(version.len(), 16);
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_SITE_ROOT".to_owned(),
        site.path().display().to_string(),
    )]))
    .await;
    let c = app.client();
    let page = c.get("/login").await.assert_status(200).body;
    assert!(
        page.contains(&format!("/pkg/{version}/warden.js")),
        "{page}"
    );
    assert!(
        page.contains(&format!("/pkg/{version}/warden.css")),
        "{page}"
    );
    let r = c
        .get(&format!("/pkg/{version}/warden.css"))
        .await
        .assert_status(200);
    assert_eq!(r.body, "body { margin: 0 }");
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("public, max-age=31536000, immutable")
    );
    // An older version's address: today's file, revalidated; the plain address too.
    for path in ["/pkg/0123456789abcdef/warden.css", "/pkg/warden.css"] {
        let r = c.get(path).await.assert_status(200);
        assert_eq!(r.body, "body { margin: 0 }");
        assert_eq!(
            r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-cache"),
            "{path}"
        );
    }
    c.get(&format!("/pkg/{version}/nothing.js"))
        .await
        .assert_status(404);
    // The terminal's xterm.js (no digest in its name): revalidated, never kept unasked.
    std::fs::create_dir_all(site.path().join("xterm")).unwrap();
    std::fs::write(
        site.path().join("xterm/xterm.mjs"),
        "export class Terminal {}\n".repeat(200),
    )
    .unwrap();
    let r = c.get("/xterm/xterm.mjs").await.assert_status(200);
    assert!(r.body.starts_with("export class Terminal {}"), "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-cache")
    );
    assert!(r.headers.get("last-modified").is_some(), "{:?}", r.headers);
    c.get("/xterm/nothing.mjs").await.assert_status(404);

    // Compressed as the browser accepts: the build's precompressed file when there is one
    // (never compressed again), else on the fly; plain when nothing is accepted. Each answer
    // says it varies with Accept-Encoding (the address is cached for good).
    std::fs::write(site.path().join("pkg/warden.wasm.br"), "brotli bytes").unwrap();
    std::fs::write(site.path().join("pkg/warden.wasm.gz"), "gzip bytes").unwrap();
    let raw = reqwest::Client::new();
    let fetch = |path: String, accept: &'static str| {
        let req = raw.get(format!("{}{path}", app.url));
        let req = if accept.is_empty() {
            req
        } else {
            req.header("accept-encoding", accept)
        };
        async move { req.send().await.expect("a bundle request") }
    };
    let wasm = format!("/pkg/{version}/warden.wasm");
    for (accept, encoding, body) in [
        ("br, gzip", Some("br"), "brotli bytes"),
        ("gzip", Some("gzip"), "gzip bytes"),
        ("", None, "\0asm"),
    ] {
        let r = fetch(wasm.clone(), accept).await;
        assert_eq!(r.status(), 200, "{accept}");
        let h = r.headers().clone();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(header("content-encoding").as_deref(), encoding, "{accept}");
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/wasm"),
            "{accept}"
        );
        assert_eq!(
            header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable"),
            "{accept}"
        );
        assert_eq!(
            h.get_all("vary")
                .iter()
                .filter(|v| v.to_str().unwrap().eq_ignore_ascii_case("accept-encoding"))
                .count(),
            1,
            "{accept}: {h:?}"
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            body.as_bytes(),
            "{accept}"
        );
    }
    // No precompressed stylesheet: brotli on the fly (it decodes to the file).
    let css = "body { margin: 0 }".repeat(200);
    std::fs::write(site.path().join("pkg/warden.css"), &css).unwrap();
    let r = fetch("/pkg/warden.css".to_owned(), "br").await;
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("br")
    );
    let compressed = r.bytes().await.unwrap();
    assert!(compressed.len() < css.len() / 10, "{}", compressed.len());
    let mut plain = Vec::new();
    brotli_decompressor::BrotliDecompress(&mut compressed.as_ref(), &mut plain).unwrap();
    assert_eq!(plain, css.as_bytes());
    // xterm.js too.
    let r = fetch("/xterm/xterm.mjs".to_owned(), "br").await;
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("br")
    );

    // A different bundle is a different address.
    let version = warden_server::startup::asset_version(site.path());
    std::fs::write(site.path().join("pkg/warden.css"), "body { margin: 1px }").unwrap();
    assert_ne!(warden_server::startup::asset_version(site.path()), version);
}

/// Replicas of a new version starting together (a rolling upgrade, or the first install of
/// several) migrate once, in turn, and all start: on PostgreSQL under an advisory lock. (SQLite
/// serves one process; there the test checks that migrating again is a no-op.)
#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    use warden_migrations::MigratorTrait;
    let dir = tempfile::tempdir().unwrap();
    let url = warden_server::testing::fresh_database_url(dir.path()).await;
    let replicas = if url.starts_with("postgres") { 4 } else { 1 };
    let mut dbs = Vec::new();
    for _ in 0..replicas {
        dbs.push(sea_orm::Database::connect(&url).await.expect("connect"));
    }
    let results = futures::future::join_all(dbs.iter().map(warden_server::startup::migrate)).await;
    for r in &results {
        assert!(r.is_ok(), "a replica failed to migrate: {r:?}");
    }
    // And once more, as the next rolling update's first replica would: nothing to do.
    warden_server::startup::migrate(&dbs[0])
        .await
        .expect("again");
    let applied = dbs[0]
        .query_one_raw(Statement::from_string(
            dbs[0].get_database_backend(),
            "SELECT COUNT(*) AS n FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(
        applied as usize,
        warden_migrations::Migrator::migrations().len()
    );
    for db in dbs {
        db.close().await.ok();
    }
    if let Some(name) = url
        .strip_prefix("postgres")
        .and_then(|u| u.rsplit('/').next())
    {
        if let Ok(base) = std::env::var("WARDEN_TEST_DATABASE_URL") {
            let admin = sea_orm::Database::connect(&base).await.unwrap();
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .ok();
        }
    }
}

/// A burst of challenges for one cluster, asked all at once (through two replicas), keeps no
/// more outstanding than the cluster's limit: each new one drops the oldest, none is refused,
/// and the one asked last (as an agent asks its own, then answers it) is good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_challenges_stays_within_the_clusters_limit() {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use warden_domain::clusters::agents::{
        issue_challenge, take_challenge, ChallengeCheck, MAX_OUTSTANDING_CHALLENGES_PER_CLUSTER,
    };
    use warden_domain::entities::agent_challenges as ch;
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(&a.database_url).await;
    let asks = (0..64).map(|i| {
        let svc = if i % 2 == 0 {
            a.services()
        } else {
            b.services()
        };
        async move { issue_challenge(svc, "burst-cluster").await }
    });
    let issued: Vec<String> = futures::future::join_all(asks)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("never refused for one cluster's limit"))
        .collect();
    assert_eq!(issued.len(), 64);
    let kept = ch::Entity::find()
        .filter(ch::Column::ClusterId.eq("burst-cluster"))
        .count(&a.services().db)
        .await
        .unwrap();
    assert!(
        kept <= MAX_OUTSTANDING_CHALLENGES_PER_CLUSTER,
        "{kept} outstanding"
    );
    // The agent's own, asked after the flood (a moment later: the test's clock stands still
    // otherwise), is answered.
    b.clock.advance_secs(1);
    let mine = issue_challenge(b.services(), "burst-cluster")
        .await
        .unwrap()
        .expect("a challenge");
    assert!(matches!(
        take_challenge(a.services(), &mine).await.unwrap(),
        ChallengeCheck::Issued { .. }
    ));
    // Of the flood, no more than the limit still open.
    let mut open = 0;
    for n in &issued {
        if matches!(
            take_challenge(a.services(), n).await.unwrap(),
            ChallengeCheck::Issued { .. }
        ) {
            open += 1;
        }
    }
    assert!(open < MAX_OUTSTANDING_CHALLENGES_PER_CLUSTER, "{open} open");
}

/// An agent's challenge is kept in the database: asked of one replica, it is accepted by
/// another, once; a second use, an unknown nonce and an expired one are stale everywhere.
#[tokio::test]
async fn an_agent_challenge_from_one_replica_is_used_once_on_another() {
    use warden_domain::clusters::agents::{issue_challenge, take_challenge, ChallengeCheck};
    let mut a = TestApp::spawn().await;
    let b = TestApp::spawn_on(&a.database_url).await;
    let nonce = issue_challenge(a.services(), "cluster-1")
        .await
        .unwrap()
        .expect("a challenge");
    match take_challenge(b.services(), &nonce).await.unwrap() {
        ChallengeCheck::Issued { cluster_id, .. } => assert_eq!(cluster_id, "cluster-1"),
        ChallengeCheck::Stale => panic!("the other replica must accept it"),
    }
    for (who, app) in [("the same replica", &b), ("the first replica", &a)] {
        assert!(
            matches!(
                take_challenge(app.services(), &nonce).await.unwrap(),
                ChallengeCheck::Stale
            ),
            "used twice through {who}"
        );
    }
    assert!(matches!(
        take_challenge(a.services(), "never-issued").await.unwrap(),
        ChallengeCheck::Stale
    ));
    // Expired: a minute later it is refused, and no longer counted as outstanding.
    let late = issue_challenge(a.services(), "cluster-1")
        .await
        .unwrap()
        .unwrap();
    a.clock.advance_secs(61);
    assert!(matches!(
        take_challenge(a.services(), &late).await.unwrap(),
        ChallengeCheck::Stale
    ));
    // Only the nonce's hash is stored.
    let rows = warden_domain::entities::agent_challenges::Entity::find()
        .all(&a.services().db)
        .await
        .unwrap();
    assert!(rows
        .iter()
        .all(|r| r.nonce_hash != nonce && r.nonce_hash != late));
    drop(b);
    a.drop_database_on_exit();
}

/// Anonymous sockets cannot hold the console's listener: a client that sends half a request
/// line, nothing at all, or nothing after its first answer, is cut once the header timeout
/// passes, while a whole request on another connection is answered. (Served by `axum::serve`, both sockets stayed open for
/// ever: enough of them exhausted the process's file descriptors.)
#[tokio::test]
async fn half_sent_requests_do_not_hold_the_console() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_HTTP_HEADER_TIMEOUT_MS".to_owned(),
        "600".to_owned(),
    )]))
    .await;
    let mut half = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // One whole request, answered; then the connection idles, kept alive.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    app.client().get("/healthz").await.assert_status(200);
    let started = std::time::Instant::now();
    for (name, sock) in [
        ("half a request", &mut half),
        ("nothing", &mut silent),
        ("one request, then nothing", &mut idle),
    ] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sock.read_to_end(&mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "a socket that sent {name} was still open after 10 s"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "cut only after {:?}",
        started.elapsed()
    );
}

/// An insider's edit of the audit log: the row `rows[victim]` (`rows`: every row, in order)
/// deleted, and every later row's hash computed again, the head moved with them. The unkeyed
/// chain holds after it; the new head's hash is returned.
async fn delete_and_chain_again(
    db: &sea_orm::DatabaseConnection,
    rows: &[warden_domain::entities::audit_events::Model],
    victim: usize,
) -> String {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    use warden_domain::entities::audit_events;
    audit_events::Entity::delete_by_id(rows[victim].seq)
        .exec(db)
        .await
        .unwrap();
    let mut prev = rows[victim - 1].hash.clone();
    for m in &rows[victim + 1..] {
        let mut m = m.clone();
        m.prev_hash = prev;
        m.hash = warden_domain::audit::row_hash(&m);
        prev = m.hash.clone();
        let mut a: audit_events::ActiveModel = m.clone().into();
        a.prev_hash = Set(m.prev_hash.clone());
        a.hash = Set(m.hash.clone());
        a.update(db).await.unwrap();
    }
    db.execute_unprepared(&format!(
        "UPDATE audit_head SET hash = '{prev}' WHERE id = 1"
    ))
    .await
    .unwrap();
    prev
}

/// Someone who can write the database deletes a row from the middle of the audit log and
/// computes every later hash again: each row still chains to the one before, but the chain no
/// longer passes through the sealed hash. `warden audit verify` says so, the sealer refuses to
/// seal over it, a removed seal is noticed, and a seal forged without the key is refused.
#[tokio::test]
async fn a_chain_computed_again_does_not_pass_the_seals() {
    use sea_orm::{ActiveModelTrait, QueryOrder};
    use warden_domain::audit::seals::{seal, SealRun};
    use warden_domain::audit::verify_chain_with;
    use warden_domain::entities::{audit_events, audit_seals};
    let (app, c) = TestApp::spawn().await.with_admin().await;
    for _ in 0..3 {
        c.login("nobody@example.com", "wrong password!!").await;
    }
    let svc = app.services();
    let db = &svc.db;
    let key = svc.retention.key().expect("a checkpoint key").clone();
    assert!(matches!(seal(svc).await.unwrap(), SealRun::Sealed { .. }));
    // More events, sealed in turn: the sealer walks them first.
    c.login("nobody@example.com", "wrong password!!").await;
    let SealRun::Sealed { seq: sealed, .. } = seal(svc).await.unwrap() else {
        panic!("not sealed")
    };
    assert_eq!(seal(svc).await.unwrap(), SealRun::Nothing);
    assert!(matches!(
        verify_chain_with(db, Some(&key)).await.unwrap(),
        ChainStatus::Intact { .. }
    ));

    // The insider's edit: a row in the middle goes, the chain after it is computed again.
    let rows = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(db)
        .await
        .unwrap();
    let victim = rows.len() / 2;
    let prev = delete_and_chain_again(db, &rows, victim).await;
    // The unkeyed chain holds; the seals do not.
    match verify_chain_with(db, Some(&key)).await.unwrap() {
        ChainStatus::Broken { seq, problem, .. } => {
            // At the first seal after the deleted row.
            assert!(seq > rows[victim].seq && seq <= sealed, "{seq}");
            assert!(problem.contains("computed again"), "{problem}");
        }
        other => panic!("a rewritten chain passed: {other:?}"),
    }
    match seal(svc).await.unwrap() {
        SealRun::Tampered { problem } => assert!(problem.contains("rewritten"), "{problem}"),
        other => panic!("sealed over a rewritten chain: {other:?}"),
    }
    // The seals deleted too: the sealer misses the one it wrote last.
    audit_seals::Entity::delete_many().exec(db).await.unwrap();
    match seal(svc).await.unwrap() {
        SealRun::Tampered { problem } => assert!(problem.contains("removed"), "{problem}"),
        other => panic!("{other:?}"),
    }
    // A seal made up without the key is refused.
    audit_seals::ActiveModel::from(audit_seals::Model {
        seq: sealed,
        hash: prev.clone(),
        at: 0,
        mac: "00".repeat(32),
    })
    .insert(db)
    .await
    .unwrap();
    match verify_chain_with(db, Some(&key)).await.unwrap() {
        ChainStatus::Broken { problem, .. } => assert!(problem.contains("forged"), "{problem}"),
        other => panic!("{other:?}"),
    }
}

/// Every seal deleted and the chain computed again: the database alone no longer shows it. The
/// newest seal is also kept in the data directory (`audit-seal.last`), out of a database
/// writer's reach: `warden audit verify` reads it, and a sealer started again on that
/// directory starts from it; both see the rewrite. A witness made up without the key is refused.
#[tokio::test]
async fn deleting_every_seal_does_not_hide_a_rewritten_chain_from_the_witness() {
    use sea_orm::QueryOrder;
    use warden_domain::audit::seals::{read_witness, seal, SealRun, WITNESS_FILE};
    use warden_domain::audit::{verify_chain_with, verify_chain_witnessed};
    use warden_domain::entities::{audit_events, audit_seals};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = warden_server::testing::fresh_database_url(dir.path()).await;
    let mut app = TestApp::spawn_on_data_dir(&url, &data).await;
    let c = app.client();
    for _ in 0..4 {
        c.login("nobody@example.com", "wrong password!!").await;
    }
    let key = app.services().retention.key().expect("a key").clone();
    seal(app.services()).await.unwrap();
    c.login("nobody@example.com", "wrong password!!").await;
    seal(app.services()).await.unwrap();
    // (The background sealer may have sealed too: the witness holds the newest seal.)
    let witness = read_witness(&data.join(WITNESS_FILE)).expect("the witness");
    let sealed = witness.seq;
    assert!(audit_seals::Entity::find_by_id(sealed)
        .one(&app.services().db)
        .await
        .unwrap()
        .is_some());

    // The insider's edit, the seals deleted with it.
    let db = app.services().db.clone();
    let rows = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&db)
        .await
        .unwrap();
    let victim = rows.iter().filter(|m| m.seq <= sealed).count() / 2;
    delete_and_chain_again(&db, &rows, victim).await;
    audit_seals::Entity::delete_many().exec(&db).await.unwrap();
    app.keep_database();
    drop(app);

    // The database alone passes (what the witness is for); with the witness it does not.
    assert!(matches!(
        verify_chain_with(&db, Some(&key)).await.unwrap(),
        ChainStatus::Intact { .. }
    ));
    match verify_chain_witnessed(&db, Some(&key), Some(&witness))
        .await
        .unwrap()
    {
        ChainStatus::Broken { seq, problem, .. } => {
            assert_eq!(seq, sealed);
            assert!(problem.contains("computed again"), "{problem}");
        }
        other => panic!("a rewritten chain passed the witness: {other:?}"),
    }
    let mut forged = witness.clone();
    forged.mac = "00".repeat(32);
    match verify_chain_witnessed(&db, Some(&key), Some(&forged))
        .await
        .unwrap()
    {
        ChainStatus::Broken { problem, .. } => assert!(problem.contains("forged"), "{problem}"),
        other => panic!("{other:?}"),
    }
    // Warden started again on that data directory: its sealer misses the seal it wrote last.
    let mut again = TestApp::spawn_on_data_dir(&url, &data).await;
    again.drop_database_on_exit();
    match seal(again.services()).await.unwrap() {
        SealRun::Tampered { problem } => assert!(problem.contains("removed"), "{problem}"),
        other => panic!("sealed over a rewritten chain after a restart: {other:?}"),
    }
}

/// A flood of connections to the gateway from one network is closed before its TLS handshake
/// costs anything (`WARDEN_GATEWAY_MAX_CONNECTIONS_PER_SOURCE`); the places come back when the
/// connections go.
#[tokio::test]
async fn one_source_cannot_hold_every_gateway_connection() {
    use tokio::io::AsyncReadExt;
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_GATEWAY_MAX_CONNECTIONS_PER_SOURCE".to_owned(),
        "3".to_owned(),
    )]))
    .await;
    let addr: std::net::SocketAddr = app
        .gateway_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let still_open = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 1];
        // Open: nothing to read within the wait; closed: end of stream (or reset) at once.
        tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf))
            .await
            .is_err()
    };
    let mut held = vec![];
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(!still_open(fourth).await, "a fourth connection was kept");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(still_open(again).await, "the places did not come back");
}
