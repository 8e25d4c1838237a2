//! Just-in-time access (issue 17): time-bound grants end on Warden's clock (the next kubectl
//! request is refused and an open `kubectl get -w` through a real agent's tunnel ends, saying
//! why), access requests with approval (no self-approval, directly or through a group; two
//! approvals for write roles; request expiry; early revoke; cancel; the webhook), and the
//! organization's required-expiry policy. Audit rows are written in the background: polled.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use warden_server::gateway::testkit::Kubectl;
use warden_server::testing::{Client, Resp, TestApp};

const PROD: &str = "prod-1";

/// Poll the audit log (as the admin) until an event matching `f` shows up.
async fn audit_event(admin: &Client, query: &str, f: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let page = admin
            .get(&format!("/api/v1/audit/events?limit=500&{query}"))
            .await
            .assert_status(200)
            .json();
        if let Some(e) = page["items"]
            .as_array()
            .and_then(|a| a.iter().find(|e| f(e)).cloned())
        {
            return e;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no audit event for {query:?} in time; saw {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_grant_ends_kubectl_access_and_an_open_watch() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["production", "dev"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), PROD, "production", &["dev"], &["apple"])
        .await;
    let sally = app.user_client(&admin, "sally@example.com").await;
    let created = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_ADMIN",
                   "project": "dev", "namespaces": ["apple"], "expires_in_secs": 600}),
        )
        .await
        .assert_status(201)
        .json();
    let expires_at = created["expires_at"]
        .as_str()
        .expect("expires_at returned")
        .to_owned();
    // The caller sees when the grant ends.
    let me = sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"][0]["expires_at"], expires_at.as_str(), "{me:#}");

    let kubeconfig = sally
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let k = Kubectl::new(&dir.path().join("sally"), &kubeconfig);
    k.run(&["create", "configmap", "-n", "apple", "before"])
        .await
        .expect_ok();
    let mut watch = k
        .command(&["get", "configmaps", "-n", "apple", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl");
    let t = Instant::now();
    while app.gateway().live.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the watch never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing happens before the expiry.
    app.clock.advance_secs(590);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.gateway().live.len(), 1, "the watch ended early");
    k.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();

    // At the expiry: the open watch ends (Warden's side within a couple of ticks)...
    app.clock.advance_secs(11);
    let t = Instant::now();
    while !app.gateway().live.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the watch outlived the grant: {:?}",
            app.gateway().live.list()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), watch.wait())
        .await
        .expect("kubectl get -w ended")
        .expect("wait");
    // ...the next request is refused, saying why...
    k.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_err("expired at");
    // ...and the grant is gone from the caller's access and the bindings.
    let me = sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"], json!([]), "{me:#}");
    let list = admin
        .get("/api/v1/bindings?user=sally@example.com")
        .await
        .assert_status(200)
        .json();
    assert_eq!(list["items"], json!([]), "{list:#}");

    // The expiry and the stream's end are audited, with the reason.
    let ev = audit_event(&admin, "action=binding.expired", |e| {
        e["action"] == "binding.expired"
    })
    .await;
    assert_eq!(ev["project"], "dev");
    let closed = audit_event(&admin, "action=kube.watch.closed", |e| {
        e["action"] == "kube.watch.closed"
    })
    .await;
    let reason = closed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("your access (role NAMESPACE_ADMIN") && reason.contains("expired at"),
        "{closed:#}"
    );
    // With no grant left on the cluster, the sweeper removes sally's service account there.
    let t = Instant::now();
    loop {
        let left = warden_domain::kubectl::service_accounts(&app.services().db)
            .await
            .expect("db");
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the service account outlived the grant: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A webhook receiver: every JSON body posted to it.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.ok() });
    (url, rx)
}

async fn next_hook(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, event: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if v["event"] == event => return v,
            Ok(Some(_)) => {}
            _ => panic!("no webhook call for {event}"),
        }
    }
}

struct People {
    app: TestApp,
    admin: Client,
    sally: Client,
    carol: Client,
    john: Client,
    mallory: Client,
}

/// Project dev; john administers it; group `dev-approvers` (sally and carol) approves its
/// requests; mallory holds nothing.
async fn people() -> People {
    people_with(std::collections::BTreeMap::new()).await
}

/// [`people`] on a Warden with extra configuration.
async fn people_with(extra: std::collections::BTreeMap<String, String>) -> People {
    let (app, admin) = TestApp::spawn_with(extra).await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let sally = app.user_client(&admin, "sally@example.com").await;
    let carol = app.user_client(&admin, "carol@example.com").await;
    let john = app.user_client(&admin, "john@example.com").await;
    let mallory = app.user_client(&admin, "mallory@example.com").await;
    admin
        .bind_user("john@example.com", "PROJECT_ADMIN", "dev", &[])
        .await;
    admin
        .post("/api/v1/groups", json!({"name": "dev-approvers"}))
        .await
        .assert_status(201);
    for m in ["sally@example.com", "carol@example.com"] {
        admin
            .post("/api/v1/groups/dev-approvers/members", json!({"user": m}))
            .await
            .assert_status(201);
    }
    // Only someone who administers the project sets its approver group.
    mallory
        .put(
            "/api/v1/projects/dev/approver-group",
            json!({"group": "dev-approvers"}),
        )
        .await
        .assert_status(403);
    john.put(
        "/api/v1/projects/dev/approver-group",
        json!({"group": "dev-approvers"}),
    )
    .await
    .assert_status(200);
    People {
        app,
        admin,
        sally,
        carol,
        john,
        mallory,
    }
}

async fn ask(c: &Client, role: &str, ns: &[&str], secs: i64) -> Value {
    c.post(
        "/api/v1/access-requests",
        json!({"project": "dev", "role": role, "namespaces": ns, "duration_secs": secs, "reason": "incident 42"}),
    )
    .await
    .assert_status(201)
    .json()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_are_approved_by_others_only_and_can_be_revoked_early() {
    let p = people().await;
    let (hook, mut calls) = webhook().await;
    // A settings writer cannot aim Warden's posts at what only its network reaches in the
    // clear: the cloud's metadata service (the instance's credentials), or plain http.
    for bad in [
        "http://169.254.169.254/latest/meta-data/iam/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://hooks.internal.example/warden",
    ] {
        let r = p
            .admin
            .patch("/api/v1/settings/jit", json!({"webhook_url": bad}))
            .await
            .assert_status(422);
        assert!(
            r.json()["error"]["fields"]["webhook_url"].is_string(),
            "{}",
            r.body
        );
    }
    p.admin
        .patch("/api/v1/settings/jit", json!({"webhook_url": hook}))
        .await
        .assert_status(200);

    let r = ask(&p.sally, "NAMESPACE_ADMIN", &["apple"], 3600).await;
    assert_eq!(r["status"], "pending");
    assert_eq!(r["requester"], "sally@example.com");
    let rid = id(&r);
    let created = next_hook(&mut calls, "access_request.create").await;
    assert!(
        created["text"]
            .as_str()
            .unwrap()
            .contains("sally@example.com asks for NAMESPACE_ADMIN"),
        "{created:#}"
    );

    // The approvers' inbox counts it; the requester's shows it as hers.
    let badge = inbox(&p.john).await;
    assert_eq!(badge["to_decide"], 1, "{badge:#}");
    let badge = inbox(&p.sally).await;
    assert_eq!(
        badge,
        json!({"to_decide": 0, "pending_mine": 1, "break_glass_active": 0})
    );
    // Someone who is neither requester nor approver does not even see it.
    p.mallory
        .get(&format!("/api/v1/access-requests/{rid}"))
        .await
        .assert_status(404);

    // No self-approval: not directly, and not through the approver group sally belongs to.
    let own = p
        .sally
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(403);
    assert_eq!(own.error_code(), "forbidden");
    // Not by someone who approves nothing here either.
    p.mallory
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(403);
    // Never longer than asked.
    p.carol
        .post(
            &format!("/api/v1/access-requests/{rid}/approve"),
            json!({"duration_secs": 7200}),
        )
        .await
        .assert_status(422);
    // carol (approver group) approves for half an hour: a time-bound binding, at once.
    let approved = p
        .carol
        .post(
            &format!("/api/v1/access-requests/{rid}/approve"),
            json!({"duration_secs": 1800, "comment": "go ahead"}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(approved["status"], "approved", "{approved:#}");
    assert_eq!(approved["duration_secs"], 1800);
    let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
    let grant = &me["grants"][0];
    assert_eq!(grant["role"], "NAMESPACE_ADMIN", "{me:#}");
    assert_eq!(grant["expires_at"], approved["grant_expires_at"]);
    next_hook(&mut calls, "access_request.approved").await;
    // Deciding twice is a conflict.
    p.john
        .post(&format!("/api/v1/access-requests/{rid}/deny"), json!({}))
        .await
        .assert_status(409);

    // Early revoke: by an approver, not by someone else; the grant ends now.
    p.mallory
        .post(&format!("/api/v1/access-requests/{rid}/revoke"), json!({}))
        .await
        .assert_status(403);
    let revoked = p
        .john
        .post(
            &format!("/api/v1/access-requests/{rid}/revoke"),
            json!({"comment": "incident over"}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(revoked["status"], "revoked");
    let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"], json!([]), "{me:#}");
    next_hook(&mut calls, "access_request.revoked").await;

    // Deny, and cancel (by the requester only).
    let r2 = id(&ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await);
    let denied = p
        .john
        .post(
            &format!("/api/v1/access-requests/{r2}/deny"),
            json!({"comment": "no"}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(denied["status"], "denied");
    assert_eq!(denied["decision_comment"], "no");
    let r3 = id(&ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await);
    p.john
        .post(&format!("/api/v1/access-requests/{r3}/cancel"), json!({}))
        .await
        .assert_status(403);
    p.sally
        .post(&format!("/api/v1/access-requests/{r3}/cancel"), json!({}))
        .await
        .assert_status(200);
    p.john
        .post(&format!("/api/v1/access-requests/{r3}/approve"), json!({}))
        .await
        .assert_status(409);

    // The request's whole story is in the audit log, under its id.
    for action in [
        "access_request.create",
        "access_request.approve",
        "access_request.revoke",
    ] {
        let ev = audit_event(&p.admin, &format!("action={action}"), |e| {
            e["action"] == action && e["resource_name"] == rid.as_str()
        })
        .await;
        assert_eq!(ev["project"], "dev");
    }
    audit_event(
        &p.admin,
        "action=access_request.approve&outcome=denied",
        |e| {
            e["actor"] == "sally@example.com"
                && e["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("self-approval")
        },
    )
    .await;
    audit_event(&p.admin, "action=access_request.deny", |e| {
        e["resource_name"] == r2.as_str()
    })
    .await;
    audit_event(&p.admin, "action=access_request.cancel", |e| {
        e["resource_name"] == r3.as_str()
    })
    .await;
    let _ = &p.app;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_roles_can_need_two_approvals() {
    let p = people().await;
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"two_approvals_for_write": true}),
        )
        .await
        .assert_status(200);
    let rid = id(&ask(&p.mallory, "NAMESPACE_ADMIN", &["apple"], 3600).await);
    assert_eq!(inbox(&p.john).await["to_decide"], 1);
    assert_eq!(inbox(&p.sally).await["to_decide"], 1);
    let first = p
        .john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(first["status"], "pending", "{first:#}");
    assert_eq!(first["approvals_needed"], 2);
    assert_eq!(first["approvals"].as_array().unwrap().len(), 1);
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(
        me["grants"],
        json!([]),
        "one approval granted a write role: {me:#}"
    );
    // Approved once by john: waiting on someone else, so no longer in john's badge.
    assert_eq!(inbox(&p.john).await["to_decide"], 0);
    assert_eq!(inbox(&p.sally).await["to_decide"], 1);
    assert_eq!(inbox(&p.mallory).await["pending_mine"], 1);
    // The same approver twice does not count as two.
    p.john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(409);
    let second = p
        .sally
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(second["status"], "approved", "{second:#}");
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"][0]["role"], "NAMESPACE_ADMIN");
    // A read-only role needs one.
    let rid = id(&ask(&p.mallory, "NAMESPACE_READ_ONLY", &["banana"], 3600).await);
    let one = p
        .carol
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(one["status"], "approved", "{one:#}");

    // The same approver approving many times at the same moment counts once, and every answer
    // but one says so (none claims an approval that was not kept).
    let rid = id(&ask(&p.mallory, "NAMESPACE_ADMIN", &["banana"], 3600).await);
    let path = format!("/api/v1/access-requests/{rid}/approve");
    let answers = futures::future::join_all((0..8).map(|_| p.john.post(&path, json!({})))).await;
    let codes: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 409), "{codes:?}");
    let held = p
        .john
        .get(&format!("/api/v1/access-requests/{rid}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(held["status"], "pending", "{held:#}");
    assert_eq!(held["approvals"].as_array().unwrap().len(), 1, "{held:#}");

    // An approver about to lose that leaves "1 of 2" behind: once out of the approver group,
    // their approval no longer counts, and one other approver does not complete it alone.
    let rid = id(&ask(&p.mallory, "NAMESPACE_ADMIN", &["cherry"], 3600).await);
    p.sally
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200);
    p.admin
        .delete("/api/v1/groups/dev-approvers/members/sally@example.com")
        .await
        .assert_status(200);
    let after = p
        .carol
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(after["status"], "pending", "{after:#}");
    let approvers: Vec<&str> = after["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["approver"].as_str())
        .collect();
    assert_eq!(approvers, ["carol@example.com"], "{after:#}");
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert!(
        !me["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["namespaces"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "cherry"))),
        "{me:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_requests_expire() {
    let p = people().await;
    p.admin
        .patch("/api/v1/settings/jit", json!({"request_ttl_secs": 600}))
        .await
        .assert_status(200);
    let rid = id(&ask(&p.mallory, "NAMESPACE_READ_ONLY", &["apple"], 3600).await);
    p.app.clock.advance_secs(601);
    // The job lapses it within a tick or two (and approving it is refused meanwhile).
    let t = Instant::now();
    loop {
        let r = p
            .mallory
            .get(&format!("/api/v1/access-requests/{rid}"))
            .await
            .assert_status(200)
            .json();
        if r["status"] == "expired" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{r:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = p
        .john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(409);
    assert!(late.body.contains("expired"), "{}", late.body);
    audit_event(&p.admin, "action=access_request.expired", |e| {
        e["resource_name"] == rid.as_str() && e["actor"] == "system"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organization_can_require_an_expiry_for_chosen_roles() {
    let p = people().await;
    // Only organization settings writers change it.
    p.john
        .patch(
            "/api/v1/settings/jit",
            json!({"required_expiry": [{"role": "CLUSTER_ADMIN", "max_secs": 28800}]}),
        )
        .await
        .assert_status(403);
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"required_expiry": [{"role": "CLUSTER_ADMIN", "max_secs": 28800}, {"role": "NO_SUCH_ROLE", "max_secs": 60}]}),
        )
        .await
        .assert_status(422);
    let s = p
        .admin
        .patch(
            "/api/v1/settings/jit",
            json!({"required_expiry": [{"role": "CLUSTER_ADMIN", "max_secs": 28800}]}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        s["required_expiry"],
        json!([{"role": "CLUSTER_ADMIN", "max_secs": 28800}])
    );
    let bind = |extra: Value| {
        let mut body = json!({"subject": {"kind": "user", "name": "mallory@example.com"}, "role": "CLUSTER_ADMIN", "project": "dev"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let r = p
        .john
        .post("/api/v1/bindings", bind(json!({})))
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["expires_at"]
        .as_str()
        .unwrap()
        .contains("requires an expiry"));
    p.john
        .post("/api/v1/bindings", bind(json!({"expires_in_secs": 86400})))
        .await
        .assert_status(422);
    p.john
        .post(
            "/api/v1/bindings",
            bind(json!({"expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await
        .assert_status(422);
    let ok = p
        .john
        .post("/api/v1/bindings", bind(json!({"expires_in_secs": 3600})))
        .await
        .assert_status(201)
        .json();
    assert!(ok["expires_at"].is_string());
    // Other roles stay permanent unless asked.
    let perm = p
        .john
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "carol@example.com"}, "role": "PROJECT_READ_ONLY", "project": "dev"}),
        )
        .await
        .assert_status(201)
        .json();
    assert!(perm.get("expires_at").is_none(), "{perm:#}");
    // Requests follow the same rule.
    p.sally
        .post(
            "/api/v1/access-requests",
            json!({"project": "dev", "role": "CLUSTER_ADMIN", "duration_secs": 86400, "reason": "x"}),
        )
        .await
        .assert_status(422);
}

#[tokio::test]
async fn the_openapi_document_lists_the_jit_endpoints() {
    let app = TestApp::spawn().await;
    let doc = app
        .client()
        .get("/api/v1/openapi.json")
        .await
        .assert_status(200)
        .json();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/access-requests", "post"),
        ("/api/v1/access-requests", "get"),
        ("/api/v1/access-requests/inbox", "get"),
        ("/api/v1/access-requests/{id}/approve", "post"),
        ("/api/v1/access-requests/{id}/deny", "post"),
        ("/api/v1/access-requests/{id}/cancel", "post"),
        ("/api/v1/access-requests/{id}/revoke", "post"),
        ("/api/v1/settings/jit", "patch"),
        ("/api/v1/projects/{name}/approver-group", "put"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_grants_at_once_and_alerts_every_administrator() {
    let p = people().await;
    let (hook, mut calls) = webhook().await;
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"webhook_url": hook, "break_glass_roles": [{"role": "CLUSTER_ADMIN", "max_secs": 3600}]}),
        )
        .await
        .assert_status(200);
    // The reason carries chat markup: a mention of everyone, and a link dressed as Warden's.
    let glass = |role: &str, secs: i64| json!({"project": "dev", "role": role, "duration_secs": secs, "reason": "prod is down <!channel> <https://evil.example/|Open request in Warden> & more"});
    // Only the organization's break-glass roles, for at most their maximum.
    p.mallory
        .post(
            "/api/v1/access-requests/break-glass",
            glass("PROJECT_ADMIN", 600),
        )
        .await
        .assert_status(403);
    p.mallory
        .post(
            "/api/v1/access-requests/break-glass",
            glass("CLUSTER_ADMIN", 7200),
        )
        .await
        .assert_status(422);
    let r = p
        .mallory
        .post(
            "/api/v1/access-requests/break-glass",
            glass("CLUSTER_ADMIN", 1800),
        )
        .await
        .assert_status(201)
        .json();
    assert_eq!(r["status"], "approved", "{r:#}");
    assert_eq!(r["break_glass"], true);
    let rid = id(&r);
    // The grant holds at once, time-bound.
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"][0]["role"], "CLUSTER_ADMIN", "{me:#}");
    assert_eq!(me["grants"][0]["expires_at"], r["grant_expires_at"]);
    // Every organization administrator is alerted: their inbox, and the webhook.
    let badge = inbox(&p.admin).await;
    assert_eq!(badge["break_glass_active"], 1, "{badge:#}");
    let badge = inbox(&p.john).await;
    assert_eq!(
        badge["break_glass_active"], 0,
        "not an organization administrator: {badge:#}"
    );
    let call = next_hook(&mut calls, "access_request.break_glass").await;
    assert!(
        call["text"].as_str().unwrap().contains("BREAK-GLASS"),
        "{call:#}"
    );
    // Shown as typed, never read as markup by the chat service.
    let text = call["text"].as_str().unwrap();
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    assert!(
        text.contains(
            "&lt;!channel&gt; &lt;https://evil.example/|Open request in Warden&gt; &amp; more"
        ),
        "{text}"
    );
    // Marked in the audit log.
    let ev = audit_event(&p.admin, "action=access_request.break_glass", |e| {
        e["resource_name"] == rid.as_str()
    })
    .await;
    assert_eq!(ev["details"]["break_glass"], true, "{ev:#}");
    assert_eq!(ev["actor"], "mallory@example.com");
    // An approver can end it early.
    p.john
        .post(&format!("/api/v1/access-requests/{rid}/revoke"), json!({}))
        .await
        .assert_status(200);
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"], json!([]), "{me:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_grant_closes_an_open_terminal_with_the_reason() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "production"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), PROD, "production", &[], &["apple"])
        .await;
    Kubectl::new(&dir.path().join("ops"), &sim.admin_kubeconfig())
        .run_with_stdin(
            &["apply", "-n", "apple", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"),
        )
        .await
        .expect_ok();
    let sally = app.user_client(&admin, "sally@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_ADMIN",
                   "project": "production", "namespaces": ["apple"], "expires_in_secs": 600}),
        )
        .await
        .assert_status(201);
    let url = format!(
        "ws://{}/api/v1/terminal/ws?cluster={PROD}&namespace=apple&pod=box",
        app.addr
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", app.url.parse().unwrap());
    req.headers_mut().insert(
        "cookie",
        format!("warden_session={}", sally.session_cookie().unwrap())
            .parse()
            .unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("a terminal");
    let ready = next_control(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    // The status line counts down to the grant's expiry, sooner than the terminal's limit.
    let left = ready["expires_at"].as_i64().unwrap() - {
        use warden_domain::clock::Clock;
        app.clock.now().millis()
    };
    assert!((590_000..=600_000).contains(&left), "{ready}");
    assert_eq!(ready["grant_expires_at"], ready["expires_at"]);

    app.clock.advance_secs(601);
    let closed = next_control(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(closed["type"], "closed", "{closed}");
    let reason = closed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("your access (role NAMESPACE_ADMIN") && reason.contains("expired at"),
        "{closed}"
    );
}

/// The next text (control) message of a terminal's WebSocket.
async fn next_control(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    within: Duration,
) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => {}
            other => panic!("no control message: {other:?}"),
        }
    }
}

/// Every delivery is signed as Standard Webhooks says (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature: v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`), with the key
/// shown once, to the administrator who named the URL in full: never in a read, never in the
/// audit log. Anyone who learns the URL alone cannot forge a delivery the receiver accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_signed_with_a_key_shown_once() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let p = people().await;
    let (tx, mut calls) =
        tokio::sync::mpsc::unbounded_channel::<(axum::http::HeaderMap, bytes::Bytes)>();
    let router = axum::Router::new().route(
        "/signed",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!(
        "http://{}/signed?token={HOOK_TOKEN}",
        l.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(l, router).await.ok() });

    let set = p
        .admin
        .patch("/api/v1/settings/jit", json!({"webhook_url": hook}))
        .await
        .assert_status(200)
        .json();
    let secret = set["webhook_signing_secret"]
        .as_str()
        .expect("the key")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let key = b64.decode(&secret["whsec_".len()..]).unwrap();
    assert_eq!(key.len(), 32);
    // Not in a read, nor in the audit log; the masked URL sent back shows no key either.
    let read = p.admin.get("/api/v1/settings/jit").await.assert_status(200);
    assert!(
        !read.body.contains("whsec_") && !read.body.contains(&secret[6..]),
        "{}",
        read.body
    );
    let masked = read.json()["webhook_url"].as_str().unwrap().to_owned();
    let again = p
        .admin
        .patch("/api/v1/settings/jit", json!({"webhook_url": masked}))
        .await
        .assert_status(200);
    assert!(!again.body.contains("whsec_"), "{}", again.body);
    let ev = audit_event(&p.admin, "action=settings.jit.update", |_| true).await;
    assert!(!ev.to_string().contains(&secret[6..]), "{ev:#}");

    ask(&p.sally, "NAMESPACE_ADMIN", &["apple"], 3600).await;
    loop {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(10), calls.recv())
            .await
            .expect("a delivery")
            .unwrap();
        let h = |n: &str| headers[n].to_str().unwrap().to_owned();
        let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((ts.parse::<i64>().unwrap() - now).abs() < 300, "{ts}");
        let expected = |key: &[u8]| {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
            let mut signed = format!("{id}.{ts}.").into_bytes();
            signed.extend_from_slice(&body);
            format!("v1,{}", b64.encode(ring::hmac::sign(&k, &signed).as_ref()))
        };
        assert_eq!(h("webhook-signature"), expected(&key));
        assert_ne!(h("webhook-signature"), expected(&[0u8; 32]));
        let v: Value = serde_json::from_slice(&body).unwrap();
        if v["event"] == "access_request.create" {
            break;
        }
    }

    // Another URL (a new token in it), another key.
    let other = p
        .admin
        .patch(
            "/api/v1/settings/jit",
            json!({"webhook_url": hook.replace(HOOK_TOKEN, "rotated-token")}),
        )
        .await
        .assert_status(200)
        .json();
    let rotated = other["webhook_signing_secret"].as_str().unwrap();
    assert_ne!(rotated, secret);

    // The console shows it once too, also after a plain form (no JavaScript): on the next
    // page, and never again.
    let key_in = |body: &str| {
        body.split(|c: char| !(c.is_ascii_alphanumeric() || "_-+/=".contains(c)))
            .find(|w| w.starts_with("whsec_") && w.len() > 20)
            .map(str::to_owned)
    };
    let third = hook.replace(HOOK_TOKEN, "third-token");
    let r = p
        .admin
        .post_form(
            "/sfn/update_jit_settings",
            &[
                ("required_expiry", ""),
                ("break_glass_roles", ""),
                ("request_ttl_hours", "24"),
                ("webhook_url", third.as_str()),
            ],
        )
        .await;
    assert!(
        r.status == 303 || r.status == 302,
        "{} {}",
        r.status,
        r.body
    );
    let page = p.admin.get("/settings").await.assert_status(200);
    assert!(
        page.body.contains("data-testid=\"webhook-signing-key\""),
        "{}",
        page.body
    );
    let shown = key_in(&page.body).expect("the key on the page");
    assert!(shown != secret && shown != rotated, "{shown}");
    let again = p.admin.get("/settings").await.assert_status(200);
    assert_eq!(key_in(&again.body), None);
    // It is the key deliveries to that URL are signed with (the API names it for that URL).
    let named = p
        .admin
        .patch("/api/v1/settings/jit", json!({"webhook_url": third}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        named["webhook_signing_secret"].as_str(),
        Some(shown.as_str())
    );
}

/// A receiver that answers 503 to the first `fail_first` calls (and to every call while `down`
/// is set), then 200: the bodies it accepted, and how many calls it saw. The URL carries a
/// token, as a chat webhook's does.
struct Flaky {
    url: String,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, every call is answered 429 with `Retry-After: 7`.
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

const HOOK_TOKEN: &str = "s3cret-hook-token";

async fn flaky(fail_first: usize) -> Flaky {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let calls = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicBool::new(false));
    let (tx, accepted) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let (seen, is_down, is_busy) = (calls.clone(), down.clone(), busy.clone());
    let router = axum::Router::new().route(
        "/flaky",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (seen, tx, is_down, is_busy) =
                (seen.clone(), tx.clone(), is_down.clone(), is_busy.clone());
            async move {
                use axum::response::IntoResponse;
                if seen.fetch_add(1, Ordering::SeqCst) < fail_first
                    || is_down.load(Ordering::SeqCst)
                {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                if is_busy.load(Ordering::SeqCst) {
                    return (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "7")],
                    )
                        .into_response();
                }
                let _ = tx.send(v);
                axum::http::StatusCode::OK.into_response()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/flaky?token={HOOK_TOKEN}",
        l.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(l, router).await.ok() });
    Flaky {
        url,
        calls,
        down,
        busy,
        accepted,
    }
}

/// A receiver swamped by a flood of notifications answers 429: Warden waits as asked, counts
/// no attempt, and sends the break-glass alert before the others when it may again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_asking_to_slow_down_is_followed_and_break_glass_goes_first() {
    use std::sync::atomic::Ordering;
    let p = people().await;
    let mut hook = flaky(0).await;
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"webhook_url": hook.url, "break_glass_roles": [{"role": "CLUSTER_ADMIN", "max_secs": 3600}]}),
        )
        .await
        .assert_status(200);
    hook.busy.store(true, Ordering::SeqCst);
    // A flood of ordinary notifications, then the alert.
    for i in 0..5 {
        ask(
            &p.mallory,
            "NAMESPACE_READ_ONLY",
            &[&format!("ns-{i}")],
            600,
        )
        .await;
    }
    p.sally
        .post(
            "/api/v1/access-requests/break-glass",
            json!({"project": "dev", "role": "CLUSTER_ADMIN", "duration_secs": 600, "reason": "prod is down"}),
        )
        .await
        .assert_status(201);
    let http = warden_server::jit::webhook_client(p.app.services());
    // Wait until the background worker has met the 429 (or do it here).
    warden_server::jit::deliver_due(p.app.services(), &http).await;
    let t = Instant::now();
    while hook.calls.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no delivery tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Told to wait, the pass stopped at the first answer: one call for six notifications,
    // which all wait, none with an attempt counted.
    let calls = hook.calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "{calls} calls while the receiver asked to wait");
    let rows = outbox(&p.app).await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    for r in &rows {
        assert_eq!((r.status.as_str(), r.attempts), ("pending", 0), "{r:?}");
    }
    assert!(
        rows.iter()
            .any(|r| r.last_error.as_deref().is_some_and(|e| e.contains("429"))),
        "{rows:?}"
    );
    // Not before the receiver's 7 s.
    p.app.clock.advance_secs(3);
    warden_server::jit::deliver_due(p.app.services(), &http).await;
    assert_eq!(hook.calls.load(Ordering::SeqCst), calls);
    // Then the alert first.
    hook.busy.store(false, Ordering::SeqCst);
    p.app.clock.advance_secs(61);
    advance_until(&p.app, 5, "six deliveries", || async {
        outbox(&p.app).await.iter().all(|r| r.status == "delivered")
    })
    .await;
    let first = hook.accepted.try_recv().expect("a delivery");
    assert_eq!(first["event"], "access_request.break_glass", "{first:#}");
    // Done with, the deliveries (and the names and reasons in them) go after a week.
    use warden_domain::admin::webhook_outbox::{purge, KEEP_DONE_DAYS};
    assert_eq!(purge(p.app.services()).await.unwrap(), 0);
    hook.busy.store(true, Ordering::SeqCst);
    ask(&p.carol, "NAMESPACE_READ_ONLY", &["apple"], 600).await;
    p.app.clock.advance_secs(KEEP_DONE_DAYS * 86_400 + 1);
    assert_eq!(purge(p.app.services()).await.unwrap(), 6);
    let left = outbox(&p.app).await;
    assert_eq!(left.len(), 1, "the pending one stays: {left:?}");
    assert_eq!(left[0].status, "pending");
}

/// The outbox's rows, newest first.
async fn outbox(app: &TestApp) -> Vec<warden_domain::entities::webhook_outbox::Model> {
    warden_domain::admin::webhook_outbox::list(app.services())
        .await
        .expect("outbox")
}

/// Move Warden's clock by `step` seconds at a time (retries fall due on it) until `done`.
async fn advance_until<F, Fut>(app: &TestApp, step: i64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !done().await {
        assert!(t.elapsed() < Duration::from_secs(30), "{what}: not in time");
        app.clock.advance_secs(step);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_retried_from_the_outbox_and_delivered_once() {
    use sea_orm::{ConnectionTrait, Statement};
    use std::sync::atomic::Ordering;
    let p = people().await;
    // A receiver that fails twice, then accepts.
    let mut hook = flaky(2).await;
    p.admin
        .patch("/api/v1/settings/jit", json!({"webhook_url": hook.url}))
        .await
        .assert_status(200);
    // The URL is the hook's credential: shown (to administrators and read-only auditors
    // alike) and audited as scheme and host only; sent back masked, as the console's form
    // does, the stored URL stays.
    p.admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "mallory@example.com"}, "role": "ADMIN_READ_ONLY"}),
        )
        .await
        .assert_status(201);
    let mut masked = String::new();
    for reader in [&p.admin, &p.mallory] {
        let shown = reader
            .get("/api/v1/settings/jit")
            .await
            .assert_status(200)
            .json();
        masked = shown["webhook_url"].as_str().unwrap().to_owned();
        assert!(!masked.contains(HOOK_TOKEN), "{shown}");
        assert!(masked.ends_with("/***"), "{shown}");
    }
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"webhook_url": masked, "request_ttl_secs": 7200}),
        )
        .await
        .assert_status(200);
    let audited = p
        .admin
        .get("/api/v1/audit/events?action=settings.jit.update")
        .await
        .assert_status(200)
        .body;
    assert!(
        audited.contains("/***") && !audited.contains(HOOK_TOKEN),
        "{audited}"
    );
    // Sealed at rest, like every other secret: a copy of the database cannot post as Warden.
    // One an older Warden stored plain is sealed at the next start.
    let db = &p.app.services().db;
    let stored = || async {
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT webhook_url FROM jit_settings",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "webhook_url")
        .unwrap()
    };
    let at_rest = stored().await;
    assert!(
        warden_domain::secrets::Sealer::is_sealed(&at_rest) && !at_rest.contains(HOOK_TOKEN),
        "{at_rest}"
    );
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE jit_settings SET webhook_url = '{}'", hook.url),
    ))
    .await
    .unwrap();
    assert_eq!(
        warden_domain::admin::jit_settings::seal_plaintext(p.app.services())
            .await
            .unwrap(),
        1
    );
    assert!(warden_domain::secrets::Sealer::is_sealed(&stored().await));
    ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await;
    // Queued with the request (same transaction).
    let rows = outbox(&p.app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].event, "access_request.create");
    // The retries fall due on Warden's clock (2 s, then 4 s).
    advance_until(&p.app, 2, "three attempts", || async {
        outbox(&p.app).await[0].status == "delivered"
    })
    .await;
    let delivered = hook.accepted.try_recv().expect("delivered after retries");
    assert_eq!(delivered["event"], "access_request.create");
    assert!(
        delivered["text"]
            .as_str()
            .unwrap_or_default()
            .contains("sally@example.com asks for NAMESPACE_READ_ONLY"),
        "{delivered:#}"
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
    let row = &outbox(&p.app).await[0];
    assert_eq!((row.attempts, row.status.as_str()), (3, "delivered"));
    // Exactly once: nothing more, however long one waits.
    for _ in 0..5 {
        p.app.clock.advance_secs(3600);
        warden_server::jit::deliver_due(
            p.app.services(),
            &warden_server::jit::webhook_client(p.app.services()),
        )
        .await;
    }
    assert!(hook.accepted.try_recv().is_err(), "delivered twice");
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
}

/// A settings writer aims the webhook at what only Warden's host or network reaches (its
/// metrics, its replicas' port, a cluster's services): refused when set, and a URL stored
/// before the rule is not posted either, unless the operator listed the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_reaches_no_address_of_wardens_own_networks_unless_the_operator_allows_it() {
    use sea_orm::{ConnectionTrait, Statement};
    use std::sync::atomic::Ordering;
    let p = people_with(
        [("WARDEN_WEBHOOK_ALLOWED_NETWORKS".to_owned(), String::new())]
            .into_iter()
            .collect(),
    )
    .await;
    let hook = flaky(0).await;
    let port = hook
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for bad in [
        hook.url.clone(),
        format!("http://localhost:{port}/flaky"),
        "https://10.0.0.5/hook".to_owned(),
        "https://192.168.1.1/hook".to_owned(),
        "https://[::ffff:127.0.0.1]/hook".to_owned(),
        "https://[fd00::1]/hook".to_owned(),
        // The metadata address, through NAT64's prefix.
        "https://[64:ff9b::a9fe:a9fe]/latest".to_owned(),
    ] {
        let r = p
            .admin
            .patch("/api/v1/settings/jit", json!({"webhook_url": bad}))
            .await
            .assert_status(422)
            .json();
        let why = r["error"]["fields"]["webhook_url"]
            .as_str()
            .unwrap_or_default();
        assert!(
            why.contains("WARDEN_WEBHOOK_ALLOWED_NETWORKS") || why.contains("link-local"),
            "{bad}: {r}"
        );
    }
    // A public receiver is accepted (it is not posted to here: nothing is asked yet).
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"webhook_url": "https://hooks.example.com/warden"}),
        )
        .await
        .assert_status(200);
    // A loopback URL stored before the rule (or by hand in the database): not posted.
    let db = &p.app.services().db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE jit_settings SET webhook_url = '{}'", hook.url),
    ))
    .await
    .expect("store the URL by hand");
    ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await;
    // Delivered here, or by the background job that may have claimed the row first: its
    // outcome is on the row once that delivery has ended.
    let client = warden_server::jit::webhook_client(p.app.services());
    let started = std::time::Instant::now();
    let row = loop {
        warden_server::jit::deliver_due(p.app.services(), &client).await;
        let row = outbox(&p.app).await.remove(0);
        if row.last_error.is_some() || started.elapsed() > std::time::Duration::from_secs(10) {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not posted") && e.contains("own networks")),
        "{row:?}"
    );
    assert_eq!(
        hook.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_is_given_up_after_the_last_attempt_and_audited() {
    use std::sync::atomic::Ordering;
    use warden_domain::admin::webhook_outbox::MAX_ATTEMPTS;
    let p = people().await;
    let hook = flaky(usize::MAX).await;
    p.admin
        .patch("/api/v1/settings/jit", json!({"webhook_url": hook.url}))
        .await
        .assert_status(200);
    let r = ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await;
    advance_until(&p.app, 300, "the give-up", || async {
        outbox(&p.app).await[0].status == "failed"
    })
    .await;
    let row = &outbox(&p.app).await[0];
    assert_eq!(row.attempts, MAX_ATTEMPTS);
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(hook.calls.load(Ordering::SeqCst), MAX_ATTEMPTS as usize);
    // Hours passed on Warden's clock: the admin's session is idle-expired; sign in again.
    p.admin
        .login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);
    let ev = audit_event(&p.admin, "action=webhook.delivery.failed", |e| {
        e["action"] == "webhook.delivery.failed"
    })
    .await;
    assert_eq!(ev["actor"], "system");
    assert_eq!(ev["outcome"], "error");
    assert_eq!(ev["project"], "dev");
    assert_eq!(ev["details"]["request"], r["id"]);
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("after {MAX_ATTEMPTS} attempts")),
        "{ev:#}"
    );
    // The URL's token is nowhere in the record.
    assert!(!ev.to_string().contains(HOOK_TOKEN), "{ev:#}");
    assert!(!format!("{row:?}").contains(HOOK_TOKEN));
    // No more attempts after the give-up.
    for _ in 0..3 {
        p.app.clock.advance_secs(3600);
        warden_server::jit::deliver_due(
            p.app.services(),
            &warden_server::jit::webhook_client(p.app.services()),
        )
        .await;
    }
    assert_eq!(hook.calls.load(Ordering::SeqCst), MAX_ATTEMPTS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_pending_when_warden_stops_is_delivered_after_a_restart() {
    use std::sync::atomic::Ordering;
    let data = tempfile::tempdir().expect("tempdir");
    // The database outlives the first Warden (SQLite: a file here; PostgreSQL: kept).
    let url = warden_server::testing::fresh_database_url(data.path()).await;
    let mut hook = flaky(0).await;
    hook.down.store(true, Ordering::SeqCst);
    {
        let (app, admin) = TestApp::spawn_on(&url).await.with_admin().await;
        admin
            .post("/api/v1/projects", json!({"name": "dev"}))
            .await
            .assert_status(201);
        let sally = app.user_client(&admin, "sally@example.com").await;
        admin
            .patch("/api/v1/settings/jit", json!({"webhook_url": hook.url}))
            .await
            .assert_status(200);
        ask(&sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await;
        // One failed attempt; the delivery waits for its retry when Warden stops.
        let t = Instant::now();
        while outbox(&app).await[0].attempts < 1 {
            assert!(t.elapsed() < Duration::from_secs(10), "no first attempt");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let row = &outbox(&app).await[0];
        assert_eq!(row.status, "pending");
        // Stop: nothing of this Warden may deliver it afterwards.
        app.services().db.clone().close().await.ok();
        drop(admin);
        drop(app);
    }
    let before_restart = hook.calls.load(Ordering::SeqCst);
    assert!(before_restart >= 1);
    hook.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.accepted.try_recv().is_err());

    // A new Warden on the same database delivers it.
    let mut app = TestApp::spawn_on(&url).await;
    app.drop_database_on_exit();
    advance_until(&app, 5, "the delivery after the restart", || async {
        outbox(&app).await[0].status == "delivered"
    })
    .await;
    let delivered = hook.accepted.try_recv().expect("delivered");
    assert_eq!(delivered["event"], "access_request.create");
    assert!(hook.accepted.try_recv().is_err(), "delivered twice");
    assert_eq!(outbox(&app).await.len(), 1);
}

// ---- the required-expiry policy limited to clusters by label ----

async fn cluster(admin: &Client, name: &str, project: &str, labels: Value) -> Resp {
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": name, "project": project, "labels": labels}),
        )
        .await
}

fn binding(user: &str, role: &str, project: &str, extra: Value) -> Value {
    let mut body =
        json!({"subject": {"kind": "user", "name": user}, "role": role, "project": project});
    if role.starts_with("NAMESPACE") {
        body["namespaces"] = json!(["apple"]);
    }
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_expiry_can_be_limited_to_clusters_matching_a_label_selector() {
    let p = people().await;
    let admin = &p.admin;
    admin
        .post("/api/v1/projects", json!({"name": "production"}))
        .await
        .assert_status(201);
    cluster(admin, "prod-1", "production", json!({"env": "production"}))
        .await
        .assert_status(201);
    cluster(admin, "stage-1", "dev", json!({"env": "staging"}))
        .await
        .assert_status(201);

    // A selector that does not parse is a 422 with the field, in the one error envelope.
    for bad in ["env in (production", "env=prod uction", "env within (a)"] {
        let r = admin
            .patch(
                "/api/v1/settings/jit",
                json!({"required_expiry": [{"role": "CLUSTER_ADMIN", "max_secs": 28800, "cluster_selector": bad}]}),
            )
            .await
            .assert_status(422);
        let e = r.json();
        assert_eq!(e["error"]["code"], "invalid", "{e:#}");
        assert!(
            e["error"]["fields"]["required_expiry"]
                .as_str()
                .unwrap()
                .contains("cluster selector"),
            "{e:#}"
        );
    }
    // Break-glass roles take none.
    admin
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "CLUSTER_ADMIN", "max_secs": 3600, "cluster_selector": "env=production"}]}),
        )
        .await
        .assert_status(422);

    // Before the rule: a standing CLUSTER_ADMIN in dev (no production cluster there), and a
    // request for a week of it.
    let standing = p
        .john
        .post(
            "/api/v1/bindings",
            binding("mallory@example.com", "CLUSTER_ADMIN", "dev", json!({})),
        )
        .await
        .assert_status(201)
        .json();
    let week = ask(&p.sally, "CLUSTER_ADMIN", &[], 7 * 86400).await;

    let s = admin
        .patch(
            "/api/v1/settings/jit",
            json!({"required_expiry": [{"role": "CLUSTER_ADMIN", "max_secs": 28800, "cluster_selector": " env = production "}]}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        s["required_expiry"],
        json!([{"role": "CLUSTER_ADMIN", "max_secs": 28800, "cluster_selector": "env=production"}])
    );

    // In a project holding a matching cluster: an expiry, at most 8 hours.
    let r = admin
        .post(
            "/api/v1/bindings",
            binding(
                "carol@example.com",
                "CLUSTER_ADMIN",
                "production",
                json!({}),
            ),
        )
        .await
        .assert_status(422)
        .json();
    let msg = r["error"]["fields"]["expires_at"].as_str().unwrap();
    assert!(msg.contains("requires an expiry"), "{msg}");
    assert!(msg.contains("env=production (prod-1)"), "{msg}");
    admin
        .post(
            "/api/v1/bindings",
            binding(
                "carol@example.com",
                "CLUSTER_ADMIN",
                "production",
                json!({"expires_in_secs": 30 * 86400}),
            ),
        )
        .await
        .assert_status(422);
    admin
        .post(
            "/api/v1/bindings",
            binding(
                "carol@example.com",
                "CLUSTER_ADMIN",
                "production",
                json!({"expires_in_secs": 3600}),
            ),
        )
        .await
        .assert_status(201);
    // A requester is told the longest allowed, not the rule's selector or the project's
    // cluster (they may see neither).
    let r = p
        .sally
        .post(
            "/api/v1/access-requests",
            json!({"project": "production", "role": "CLUSTER_ADMIN", "duration_secs": 30 * 86400, "reason": "incident 42"}),
        )
        .await
        .assert_status(422)
        .json();
    let msg = r["error"]["fields"]["duration_secs"].as_str().unwrap();
    assert!(msg.contains("at most 8 hours"), "{msg}");
    assert!(!msg.contains("prod-1") && !msg.contains("env"), "{msg}");
    // Elsewhere, and for other roles, nothing changes.
    p.john
        .post(
            "/api/v1/bindings",
            binding("carol@example.com", "NAMESPACE_ADMIN", "dev", json!({})),
        )
        .await
        .assert_status(201);

    // Dodges, refused while mallory's standing grant is in dev, each naming it: sharing the
    // production cluster into dev...
    let r = admin
        .patch("/api/v1/clusters/prod-1", json!({"shared_with": ["dev"]}))
        .await
        .assert_status(409)
        .json();
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("mallory@example.com holds CLUSTER_ADMIN on project dev without an expiry"),
        "{msg}"
    );
    assert!(msg.contains(standing["id"].as_str().unwrap()), "{msg}");
    assert!(r["error"]["fields"]["shared_with"].is_string(), "{r:#}");
    let c = admin
        .get("/api/v1/clusters/prod-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(c["shared_with"], json!([]), "{c:#}");
    // ...labelling dev's own cluster as production...
    admin
        .patch(
            "/api/v1/clusters/stage-1",
            json!({"labels": {"env": "production"}}),
        )
        .await
        .assert_status(409);
    let c = admin
        .get("/api/v1/clusters/stage-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(c["labels"], json!({"env": "staging"}), "{c:#}");
    // ...importing a production cluster into dev...
    cluster(admin, "prod-2", "dev", json!({"env": "production"}))
        .await
        .assert_status(409);
    admin
        .get("/api/v1/clusters/prod-2")
        .await
        .assert_status(404);
    // ...or moving the production cluster there.
    admin
        .patch("/api/v1/clusters/prod-1", json!({"project": "dev"}))
        .await
        .assert_status(409);
    // Nor may production's own administrator relabel its cluster out of the rule (to bind
    // without an expiry, then label it back): that is the organization's call.
    admin
        .bind_user("john@example.com", "PROJECT_ADMIN", "production", &[])
        .await;
    let r = p
        .john
        .patch(
            "/api/v1/clusters/prod-1",
            json!({"labels": {"env": "prod"}}),
        )
        .await
        .assert_status(409)
        .json();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("out of the organization's required-expiry rule (env=production)"),
        "{r:#}"
    );
    let c = admin
        .get("/api/v1/clusters/prod-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(c["labels"], json!({"env": "production"}), "{c:#}");
    // A change that keeps it under the rule is the project's own.
    p.john
        .patch(
            "/api/v1/clusters/prod-1",
            json!({"labels": {"env": "production", "team": "a"}}),
        )
        .await
        .assert_status(200);

    // Once the standing grant is gone, the share goes through...
    admin
        .delete(&format!(
            "/api/v1/bindings/{}",
            standing["id"].as_str().unwrap()
        ))
        .await
        .assert_status(204);
    admin
        .patch("/api/v1/clusters/prod-1", json!({"shared_with": ["dev"]}))
        .await
        .assert_status(200);
    // ...and dev is held to the rule: no standing grant, no week-long approval.
    p.john
        .post(
            "/api/v1/bindings",
            binding("mallory@example.com", "CLUSTER_ADMIN", "dev", json!({})),
        )
        .await
        .assert_status(422);
    let r = p
        .john
        .post(
            &format!("/api/v1/access-requests/{}/approve", id(&week)),
            json!({}),
        )
        .await
        .assert_status(422)
        .json();
    assert!(
        r["error"]["fields"]["duration_secs"]
            .as_str()
            .unwrap()
            .contains("at most 8 hours"),
        "{r:#}"
    );
    let ok = p
        .john
        .post(
            &format!("/api/v1/access-requests/{}/approve", id(&week)),
            json!({"duration_secs": 3600}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(ok["status"], "approved");
    // New requests and break-glass follow it too.
    p.mallory
        .post(
            "/api/v1/access-requests",
            json!({"project": "dev", "role": "CLUSTER_ADMIN", "duration_secs": 86400, "reason": "x"}),
        )
        .await
        .assert_status(422);
    admin
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "CLUSTER_ADMIN", "max_secs": 86400}]}),
        )
        .await
        .assert_status(200);
    p.mallory
        .post(
            "/api/v1/access-requests/break-glass",
            json!({"project": "dev", "role": "CLUSTER_ADMIN", "duration_secs": 12 * 3600, "reason": "outage"}),
        )
        .await
        .assert_status(422);

    // A rule that standing grants already break is refused, naming them (carol's permanent
    // NAMESPACE_ADMIN in dev, which now holds a production cluster).
    let r = admin
        .patch(
            "/api/v1/settings/jit",
            json!({"required_expiry": [
                {"role": "CLUSTER_ADMIN", "max_secs": 28800, "cluster_selector": "env=production"},
                {"role": "NAMESPACE_ADMIN", "max_secs": 3600, "cluster_selector": "env in (production)"}
            ]}),
        )
        .await
        .assert_status(409)
        .json();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("carol@example.com holds NAMESPACE_ADMIN on namespaces apple of project dev"),
        "{r:#}"
    );
    // The refused changes left the settings as they were.
    let s = admin
        .get("/api/v1/settings/jit")
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["required_expiry"].as_array().unwrap().len(), 1, "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approver_group_form_sets_and_clears_it_through_the_gate() {
    let p = people().await;
    async fn group(c: &Client) -> Value {
        c.get("/api/v1/projects/dev/approver-group")
            .await
            .assert_status(200)
            .json()["group"]
            .clone()
    }
    // Whether a project exists is not told to someone who may not read it: an unknown
    // project and one they may not read are refused alike.
    for path in ["dev", "no-such-project"] {
        let r = p
            .mallory
            .get(&format!("/api/v1/projects/{path}/approver-group"))
            .await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        p.mallory
            .put(
                &format!("/api/v1/projects/{path}/approver-group"),
                json!({"group": "dev-approvers"}),
            )
            .await
            .assert_status(403);
    }
    // The project page offers john, the project's administrator, the groups the project
    // names; the organization's other groups are not his to learn (he may not read groups).
    p.admin
        .post("/api/v1/groups", json!({"name": "sre-breakglass"}))
        .await
        .assert_status(201);
    p.admin
        .post("/api/v1/groups", json!({"name": "dev-readers"}))
        .await
        .assert_status(201);
    p.admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "dev-readers"}, "role": "PROJECT_READ_ONLY", "project": "dev"}),
        )
        .await
        .assert_status(201);
    let page = p.john.get("/projects/dev").await.assert_status(200);
    assert!(
        page.body.contains("data-testid=\"approver-group-select\""),
        "{}",
        page.body
    );
    assert!(page.body.contains(">dev-approvers</option>"));
    assert!(page.body.contains(">dev-readers</option>"));
    assert!(!page.body.contains("sre-breakglass"), "{}", page.body);
    // An organization administrator chooses among them all.
    let page = p.admin.get("/projects/dev").await.assert_status(200);
    assert!(page.body.contains(">sre-breakglass</option>"));
    // Neither mallory (nothing) nor sally (an approver, not an administrator) may change it:
    // the server function asks the gate, whatever the page shows.
    for c in [&p.mallory, &p.sally] {
        let r = c
            .post_form(
                "/sfn/set_approver_group",
                &[("project", "dev"), ("group", "")],
            )
            .await;
        let to = r.headers["location"].to_str().unwrap().to_owned();
        assert!(to.contains("err._"), "{to}");
        assert!(!to.contains("ok="), "{to}");
    }
    assert_eq!(group(&p.john).await, "dev-approvers");
    // While it approves for dev, the group cannot be deleted (its members would lose the
    // power to approve all at once, and dev would point at nothing).
    let r = p.admin.delete("/api/v1/groups/dev-approvers").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body
            .contains("approves access requests for project(s) dev"),
        "{}",
        r.body
    );
    assert_eq!(group(&p.john).await, "dev-approvers");
    // John clears it, then sets it again; an unknown group is refused on the field.
    let r = p
        .john
        .post_form(
            "/sfn/set_approver_group",
            &[("project", "dev"), ("group", "")],
        )
        .await;
    assert!(r.headers["location"].to_str().unwrap().contains("ok="));
    assert_eq!(group(&p.john).await, Value::Null);
    let ev = audit_event(&p.admin, "action=project.approver_group.update", |e| {
        e["details"]["after"]["group"].is_null()
    })
    .await;
    assert_eq!(ev["actor"], "john@example.com");
    assert_eq!(ev["details"]["before"]["group"], "dev-approvers");
    let r = p
        .john
        .post_form(
            "/sfn/set_approver_group",
            &[("project", "dev"), ("group", "no-such-group")],
        )
        .await;
    assert!(r.headers["location"]
        .to_str()
        .unwrap()
        .contains("err.group"));
    p.john
        .post_form(
            "/sfn/set_approver_group",
            &[("project", "dev"), ("group", "dev-approvers")],
        )
        .await;
    assert_eq!(group(&p.john).await, "dev-approvers");
}

/// Every access request `c` lists with query `q`, two a page, following the cursors.
async fn list(c: &Client, q: &str) -> Vec<Value> {
    request_pages(c, &format!("/api/v1/access-requests?limit=2&{q}")).await
}

/// The caller's badge counts (`GET /api/v1/access-requests/inbox`).
async fn inbox(c: &Client) -> Value {
    c.get("/api/v1/access-requests/inbox")
        .await
        .assert_status(200)
        .json()
}

/// Every page of `path` (its `limit` given), followed by its cursors: the items in order.
async fn request_pages(c: &Client, path: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let url = match &cursor {
            Some(k) => format!("{path}&cursor={k}"),
            None => path.to_owned(),
        };
        let page = c.get(&url).await.assert_status(200).json();
        all.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next"].as_str() {
            Some(k) => cursor = Some(k.to_owned()),
            None => return all,
        }
    }
    panic!("{path}: more than 20 pages");
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items.iter().map(id).collect()
}

/// The list is filtered and paged in the database: each caller sees their own requests and
/// those they may decide on (an approver group's member, a project administrator, an
/// organization administrator), never others', newest first, in pages that neither repeat
/// nor skip; a status filter, an empty filter (any) and bad parameters.
#[tokio::test]
async fn the_request_list_shows_each_caller_their_own_and_those_they_decide_in_pages() {
    let p = people().await;
    p.admin
        .post("/api/v1/projects", json!({"name": "ops"}))
        .await
        .assert_status(201);
    // mallory: five in dev (a second apart) and one in ops; sally: two in dev.
    let mut mallory_dev = Vec::new();
    for i in 0..5 {
        mallory_dev.push(id(&ask(
            &p.mallory,
            "NAMESPACE_ADMIN",
            &[&format!("m{i}")],
            3600,
        )
        .await));
        p.app.clock.advance_secs(1);
    }
    let mallory_ops = id(&p
        .mallory
        .post(
            "/api/v1/access-requests",
            json!({"project": "ops", "role": "NAMESPACE_ADMIN", "namespaces": ["o"], "duration_secs": 3600, "reason": "ops"}),
        )
        .await
        .assert_status(201)
        .json());
    let mut sally_dev = Vec::new();
    for i in 0..2 {
        sally_dev.push(id(&ask(
            &p.sally,
            "NAMESPACE_ADMIN",
            &[&format!("s{i}")],
            3600,
        )
        .await));
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Their own: all of them, and only theirs.
    let mine = list(&p.mallory, "scope=mine").await;
    let mut want: Vec<String> = mallory_dev.clone();
    want.push(mallory_ops.clone());
    assert_eq!(sorted(ids_of(&mine)), sorted(want.clone()));
    assert!(mine.iter().all(|r| r["can_decide"] == false));
    // Newest first (ties in the same millisecond in a fixed order), no page repeating another.
    let at: Vec<String> = mine
        .iter()
        .map(|r| r["created_at"].as_str().unwrap().to_owned())
        .collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "{at:?}");
    assert_eq!(ids_of(&mine), ids_of(&list(&p.mallory, "scope=all").await));
    assert!(list(&p.mallory, "scope=approvals").await.is_empty());

    // An approver group's member: the others' requests in that project, not their own, not
    // another project's.
    let sally = list(&p.sally, "scope=approvals").await;
    assert_eq!(sorted(ids_of(&sally)), sorted(mallory_dev.clone()));
    assert!(sally.iter().all(|r| r["can_decide"] == true));
    assert_eq!(
        sorted(ids_of(&list(&p.sally, "scope=mine").await)),
        sorted(sally_dev.clone())
    );
    assert_eq!(list(&p.sally, "").await.len(), 7);
    // The project's administrator: everyone's in dev.
    let mut dev: Vec<String> = mallory_dev.clone();
    dev.extend(sally_dev.iter().cloned());
    assert_eq!(
        sorted(ids_of(&list(&p.john, "scope=approvals").await)),
        sorted(dev.clone())
    );
    // The organization's administrator: every request.
    let every = list(&p.admin, "scope=approvals").await;
    let mut all_ids = dev.clone();
    all_ids.push(mallory_ops.clone());
    assert_eq!(sorted(ids_of(&every)), sorted(all_ids.clone()));
    // Pages of two and one page of fifty give the same rows in the same order.
    let one_page = p
        .admin
        .get("/api/v1/access-requests?scope=approvals&limit=50")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        ids_of(one_page["items"].as_array().unwrap()),
        ids_of(&every)
    );
    assert!(one_page["next"].is_null());

    // By status; empty is any.
    p.mallory
        .post(
            &format!("/api/v1/access-requests/{}/cancel", mallory_dev[0]),
            json!({}),
        )
        .await
        .assert_status(200);
    let cancelled = list(&p.admin, "scope=approvals&status=cancelled").await;
    assert_eq!(ids_of(&cancelled), vec![mallory_dev[0].clone()]);
    assert_eq!(
        list(&p.admin, "scope=approvals&status=pending").await.len(),
        7
    );
    assert_eq!(list(&p.admin, "scope=&status=").await.len(), 8);
    // The badge counts what is left to decide.
    let badge = inbox(&p.sally).await;
    assert_eq!(badge["to_decide"], 4, "{badge:#}");
    assert_eq!(badge["pending_mine"], 2, "{badge:#}");

    // Bad parameters name themselves.
    let bad = p
        .admin
        .get("/api/v1/access-requests?scope=everyone")
        .await
        .assert_status(422)
        .json();
    assert!(
        bad["error"]["fields"]["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("everyone"),
        "{bad}"
    );
    p.admin
        .get("/api/v1/access-requests?status=maybe")
        .await
        .assert_status(422);
    p.admin
        .get("/api/v1/access-requests?cursor=forged")
        .await
        .assert_status(422);

    // Out of the approver group, out of the list and the badge at once; her own stay hers.
    p.admin
        .delete("/api/v1/groups/dev-approvers/members/sally@example.com")
        .await
        .assert_status(200);
    assert!(list(&p.sally, "scope=approvals").await.is_empty());
    assert_eq!(
        sorted(ids_of(&list(&p.sally, "").await)),
        sorted(sally_dev.clone())
    );
    let badge = inbox(&p.sally).await;
    assert_eq!(badge["to_decide"], 0, "{badge:#}");
}

/// A role changed after a request for it was made (widened by a role editor, say) is not
/// approved under the old request: the approver decided on what was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_changed_after_the_request_is_not_approved_under_it() {
    let p = people().await;
    p.admin
        .post(
            "/api/v1/roles",
            json!({"name": "LOOKER", "scope": "project", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(201);
    let r = ask(&p.mallory, "LOOKER", &[], 3600).await;
    let rid = id(&r);
    p.app.clock.advance_secs(5);
    p.admin
        .patch(
            "/api/v1/roles/LOOKER",
            json!({"permissions": ["project.read", "kubectl.fullaccess"]}),
        )
        .await
        .assert_status(200);
    let refused = p
        .john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(409);
    assert!(
        refused.body.contains("changed after this request"),
        "{}",
        refused.body
    );
    let now = p
        .john
        .get(&format!("/api/v1/access-requests/{rid}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(now["status"], "pending");
    // Denied, and asked again: it is the role as it is now that is approved.
    p.john
        .post(&format!("/api/v1/access-requests/{rid}/deny"), json!({}))
        .await
        .assert_status(200);
    p.app.clock.advance_secs(5);
    let again = ask(&p.mallory, "LOOKER", &[], 3600).await;
    p.john
        .post(
            &format!("/api/v1/access-requests/{}/approve", id(&again)),
            json!({}),
        )
        .await
        .assert_status(200);
}

/// Nobody hands out more than they hold, through a request either. A membership manager of the
/// project (`project.read` + `project.write`, no cluster rights) may not approve a request for
/// `CLUSTER_ADMIN` (a friend would then grant them the same), nor revoke one, nor name the
/// approver group; a group manager holding `project.write` may not make a friend an approver.
/// The approver group keeps its power (its members were named by someone holding all of the
/// project), and so does a project administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_grants_only_what_they_hold() {
    let p = people().await;
    p.admin
        .post(
            "/api/v1/roles",
            json!({"name": "MEMBERSHIP_MANAGER", "scope": "project", "permissions": ["project.read", "project.write"]}),
        )
        .await
        .assert_status(201);
    let mgr = p.app.user_client(&p.admin, "mgr@example.com").await;
    p.admin
        .bind_user("mgr@example.com", "MEMBERSHIP_MANAGER", "dev", &[])
        .await;
    let r = id(&ask(&p.mallory, "CLUSTER_ADMIN", &[], 3600).await);

    let refused = mgr
        .post(&format!("/api/v1/access-requests/{r}/approve"), json!({}))
        .await
        .assert_status(403);
    assert_eq!(refused.error_code(), "forbidden", "{}", refused.body);
    let still = p
        .mallory
        .get(&format!("/api/v1/access-requests/{r}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(still["status"], "pending", "{still:#}");
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"], json!([]), "{me:#}");
    audit_event(
        &p.admin,
        "action=access_request.approve&outcome=denied",
        |e| {
            e["actor"] == "mgr@example.com"
                && e["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("cannot hand out")
        },
    )
    .await;
    // Nor may they choose who approves.
    mgr.put(
        "/api/v1/projects/dev/approver-group",
        json!({"group": null}),
    )
    .await
    .assert_status(403);

    // A group manager who also holds project.write everywhere may not make a friend an
    // approver of dev (membership of its approver group hands out all of dev).
    p.admin
        .post(
            "/api/v1/roles",
            json!({"name": "GROUPS_AND_PROJECTS", "scope": "organization",
                   "permissions": ["group.read", "group.write", "project.read", "project.write", "user.read"]}),
        )
        .await
        .assert_status(201);
    let gm = p.app.user_client(&p.admin, "gm@example.com").await;
    p.admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "gm@example.com"}, "role": "GROUPS_AND_PROJECTS"}),
        )
        .await
        .assert_status(201);
    gm.post(
        "/api/v1/groups/dev-approvers/members",
        json!({"user": "mgr@example.com"}),
    )
    .await
    .assert_status(403);

    // The approver group approves it; a project administrator may revoke it, the manager not.
    p.carol
        .post(&format!("/api/v1/access-requests/{r}/approve"), json!({}))
        .await
        .assert_status(200);
    mgr.post(&format!("/api/v1/access-requests/{r}/revoke"), json!({}))
        .await
        .assert_status(403);
    let me = p.mallory.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"][0]["role"], "CLUSTER_ADMIN", "{me:#}");
    p.john
        .post(&format!("/api/v1/access-requests/{r}/revoke"), json!({}))
        .await
        .assert_status(200);
}

/// Approve and deny (or the requester's cancel) racing on one request: one wins, and a request
/// never reads denied or cancelled while the binding its approval made lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_denial_racing_an_approval_never_leaves_a_denied_request_with_a_grant() {
    let p = people().await;
    for round in 0..12 {
        let r = id(&ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 600).await);
        let approve_path = format!("/api/v1/access-requests/{r}/approve");
        let approve = p.john.post(&approve_path, json!({}));
        let other = async {
            if round % 2 == 0 {
                p.carol
                    .post(&format!("/api/v1/access-requests/{r}/deny"), json!({}))
                    .await
            } else {
                p.sally
                    .post(&format!("/api/v1/access-requests/{r}/cancel"), json!({}))
                    .await
            }
        };
        let (a, o) = tokio::join!(approve, other);
        let after = p
            .sally
            .get(&format!("/api/v1/access-requests/{r}"))
            .await
            .assert_status(200)
            .json();
        let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
        let granted = !me["grants"].as_array().unwrap().is_empty();
        assert_eq!(
            granted,
            after["status"] == "approved",
            "round {round}: approve {} {}, other {} {}; request {after:#}; grants {me:#}",
            a.status,
            a.body,
            o.status,
            o.body
        );
        assert!(
            [a.status, o.status].contains(&200) && [a.status, o.status].contains(&409),
            "round {round}: approve {} {}, other {} {}",
            a.status,
            a.body,
            o.status,
            o.body
        );
        if granted {
            p.john
                .post(&format!("/api/v1/access-requests/{r}/revoke"), json!({}))
                .await
                .assert_status(200);
        }
    }
}

/// An approval never takes away a longer grant of the same shape: a grant for the quarter is
/// kept and the hour's approval refused (409); one ending sooner is replaced, and its removal
/// audited (`binding.delete`) before the new grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_replaces_only_a_shorter_grant_and_says_so() {
    let p = people().await;
    let bind = |role: &str, secs: i64| {
        p.admin.post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": role,
                   "project": "dev", "namespaces": ["apple"], "expires_in_secs": secs}),
        )
    };
    bind("NAMESPACE_ADMIN", 90 * 86_400)
        .await
        .assert_status(201);
    let r = id(&ask(&p.sally, "NAMESPACE_ADMIN", &["apple"], 3600).await);
    let refused = p
        .john
        .post(&format!("/api/v1/access-requests/{r}/approve"), json!({}))
        .await
        .assert_status(409);
    assert!(
        refused.body.contains("longer than this grant"),
        "{}",
        refused.body
    );
    let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"].as_array().unwrap().len(), 1, "{me:#}");

    bind("NAMESPACE_READ_ONLY", 600).await.assert_status(201);
    let r = id(&ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 3600).await);
    p.john
        .post(&format!("/api/v1/access-requests/{r}/approve"), json!({}))
        .await
        .assert_status(200);
    let replaced = audit_event(&p.admin, "action=binding.delete", |e| {
        e["details"]["before"]["role"] == "NAMESPACE_READ_ONLY"
    })
    .await;
    assert_eq!(replaced["actor"], "john@example.com", "{replaced:#}");
    let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["grants"].as_array().unwrap().len(), 2, "{me:#}");

    // A longer approval replaces that grant in turn. The replaced request's grant is over: an
    // administrator answering its alert with *Revoke* is told so, never "revoked" while the
    // newer grant keeps the access; revoking the newer one takes it away.
    let newer = id(&ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 7200).await);
    p.john
        .post(
            &format!("/api/v1/access-requests/{newer}/approve"),
            json!({}),
        )
        .await
        .assert_status(200);
    let old = p
        .admin
        .get(&format!("/api/v1/access-requests/{r}"))
        .await
        .assert_status(200)
        .json();
    assert_ne!(old["status"], "revoked", "{old:#}");
    let refused = p
        .admin
        .post(&format!("/api/v1/access-requests/{r}/revoke"), json!({}))
        .await
        .assert_status(409);
    assert!(refused.body.contains("can be revoked"), "{}", refused.body);
    let readers = |me: &Value| {
        me["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["role"] == "NAMESPACE_READ_ONLY")
            .count()
    };
    let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(readers(&me), 1, "{me:#}");
    p.admin
        .post(
            &format!("/api/v1/access-requests/{newer}/revoke"),
            json!({}),
        )
        .await
        .assert_status(200);
    // Twice: the second finds nothing in force.
    p.admin
        .post(
            &format!("/api/v1/access-requests/{newer}/revoke"),
            json!({}),
        )
        .await
        .assert_status(409);
    let me = p.sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(readers(&me), 0, "{me:#}");
}

/// Break-glass is for the emergency, not a way round approval: it is not renewed while the
/// grant lasts (taken again before each end, it would be access for good), and one person
/// takes it at most five times in any 24 hours (each alerts every administrator).
#[tokio::test]
async fn break_glass_is_neither_renewed_nor_taken_without_end() {
    let p = people().await;
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "CLUSTER_ADMIN", "max_secs": 3600}]}),
        )
        .await
        .assert_status(200);
    let glass = json!({"project": "dev", "role": "CLUSTER_ADMIN", "duration_secs": 600, "reason": "incident"});
    let take = || {
        p.mallory
            .post("/api/v1/access-requests/break-glass", glass.clone())
    };
    take().await.assert_status(201);
    p.app.clock.advance_secs(300);
    let r = take().await.assert_status(409);
    assert!(r.body.contains("not renewed while it lasts"), "{}", r.body);
    let denied = audit_event(
        &p.admin,
        "action=access_request.break_glass&outcome=denied",
        |e| {
            e["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("not renewed")
        },
    )
    .await;
    assert_eq!(denied["actor"], "mallory@example.com");
    // Once it has ended, again; up to five times a day.
    for _ in 1..5 {
        p.app.clock.advance_secs(301);
        take().await.assert_status(201);
        p.app.clock.advance_secs(300);
    }
    p.app.clock.advance_secs(301);
    let r = take().await.assert_status(409);
    assert!(r.body.contains("in the last 24 hours"), "{}", r.body);
    p.app.clock.advance_secs(86_400);
    let mallory = p.app.client();
    mallory
        .login("mallory@example.com", warden_server::testing::USER_PASSWORD)
        .await
        .assert_status(200);
    mallory
        .post("/api/v1/access-requests/break-glass", glass.clone())
        .await
        .assert_status(201);
}

/// A person with no role cannot weigh on the server or the approvers: a request names at most
/// 100 namespaces (a binding too, refused before any work), and one person has at most 10
/// requests waiting at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_is_bounded() {
    let p = people().await;
    let many: Vec<String> = (0..101).map(|i| format!("ns-{i}")).collect();
    let r = p
        .mallory
        .post(
            "/api/v1/access-requests",
            json!({"project": "dev", "role": "NAMESPACE_READ_ONLY", "namespaces": many, "duration_secs": 3600, "reason": "x"}),
        )
        .await
        .assert_status(422)
        .json();
    assert!(r.to_string().contains("at most 100 namespaces"), "{r}");
    // A binding too, for whoever sends it (here someone who may not bind at all).
    let r = p
        .mallory
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "mallory@example.com"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": many}),
        )
        .await;
    assert!(matches!(r.status, 422 | 403), "{}", r.status);
    let r = p
        .admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "mallory@example.com"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": many}),
        )
        .await
        .assert_status(422)
        .json();
    assert!(r.to_string().contains("at most 100 namespaces"), "{r}");
    // Repeats count once.
    let twice: Vec<&str> = std::iter::repeat_n("apple", 100).collect();
    let one = ask(&p.mallory, "NAMESPACE_READ_ONLY", &twice, 3600).await;
    assert_eq!(one["namespaces"], json!(["apple"]), "{one}");
    for i in 1..10 {
        ask(
            &p.mallory,
            "NAMESPACE_READ_ONLY",
            &[&format!("ns-{i}")],
            3600,
        )
        .await;
    }
    let r = p
        .mallory
        .post(
            "/api/v1/access-requests",
            json!({"project": "dev", "role": "NAMESPACE_READ_ONLY", "namespaces": ["ns-10"], "duration_secs": 3600, "reason": "x"}),
        )
        .await
        .assert_status(409)
        .json();
    assert!(r.to_string().contains("10 requests waiting"), "{r}");
    // Cancelling one makes room.
    p.mallory
        .post(
            &format!("/api/v1/access-requests/{}/cancel", id(&one)),
            json!({}),
        )
        .await
        .assert_status(200);
    let mut last = ask(&p.mallory, "NAMESPACE_READ_ONLY", &["ns-10"], 3600).await;
    // Cancel and ask again, over and over (each notifies the approvers and the webhook): at
    // most MAX_REQUESTS_PER_HOUR in an hour.
    let mut made = 11;
    let refused = loop {
        p.mallory
            .post(
                &format!("/api/v1/access-requests/{}/cancel", id(&last)),
                json!({}),
            )
            .await
            .assert_status(200);
        let r = p
            .mallory
            .post(
                "/api/v1/access-requests",
                json!({"project": "dev", "role": "NAMESPACE_READ_ONLY", "namespaces": ["ns-10"], "duration_secs": 3600, "reason": "again"}),
            )
            .await;
        if r.status != 201 && r.status != 200 {
            break r;
        }
        made += 1;
        assert!(made <= 30, "more than 30 requests in an hour");
        last = r.json();
    };
    assert_eq!(made, 30);
    assert_eq!(refused.status, 409);
    assert!(
        refused.json().to_string().contains("in the last hour"),
        "{:?}",
        refused.json()
    );
    // Others are not held back by mallory's requests.
    ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 3600).await;
    // An hour later, mallory may ask again (her session kept alive on the way).
    for _ in 0..3 {
        p.app.clock.advance_secs(20 * 60 + 1);
        p.mallory
            .get("/api/v1/access-requests?scope=mine")
            .await
            .assert_status(200);
    }
    ask(&p.mallory, "NAMESPACE_READ_ONLY", &["ns-10"], 3600).await;
}

/// A grant of an hour does not make a permanent one: someone approved PROJECT_ADMIN for ten
/// minutes hands out (to themselves, a second account, anyone) and approves nothing that
/// outlasts their own grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_bound_grant_hands_out_nothing_that_outlasts_it() {
    let p = people().await;
    let rid = id(&ask(&p.mallory, "PROJECT_ADMIN", &[], 600).await);
    p.john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200);
    // Permanent, or longer than her grant: refused, and the audited reason says until when.
    let longer = |e: &Value| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("for longer than the granter holds it"))
    };
    for extra in [json!({}), json!({"expires_in_secs": 900})] {
        for who in ["mallory@example.com", "carol@example.com"] {
            p.mallory
                .post(
                    "/api/v1/bindings",
                    binding(who, "CLUSTER_ADMIN", "dev", extra.clone()),
                )
                .await
                .assert_status(403);
        }
    }
    let refused = p
        .admin
        .get("/api/v1/audit/events?action=binding.create&outcome=denied&limit=50")
        .await
        .assert_status(200)
        .json();
    let refused = refused["items"].as_array().unwrap();
    assert_eq!(
        refused.iter().filter(|e| longer(e)).count(),
        4,
        "{refused:#?}"
    );
    // Nor approve someone else's request for longer than she holds it.
    let sallys = id(&ask(&p.sally, "NAMESPACE_ADMIN", &["apple"], 3600).await);
    p.mallory
        .post(
            &format!("/api/v1/access-requests/{sallys}/approve"),
            json!({}),
        )
        .await
        .assert_status(403);
    audit_event(
        &p.admin,
        "action=access_request.approve&outcome=denied",
        longer,
    )
    .await;
    // Within her grant, she administers as granted.
    p.mallory
        .post(
            &format!("/api/v1/access-requests/{sallys}/approve"),
            json!({"duration_secs": 300}),
        )
        .await
        .assert_status(200);
    p.mallory
        .post(
            "/api/v1/bindings",
            binding(
                "carol@example.com",
                "CLUSTER_ADMIN",
                "dev",
                json!({"expires_in_secs": 300}),
            ),
        )
        .await
        .assert_status(201);
    // When it ends, nothing she handed out remains.
    p.app.clock.advance_secs(601);
    for c in [&p.mallory, &p.carol, &p.sally] {
        let me = c.get("/api/v1/me").await.assert_status(200).json();
        assert_eq!(me["grants"], json!([]), "{me:#}");
    }
}

/// A break-glass role is named in the settings: deleting it and making a wider one under its
/// name (which needs only `role.write`) would make that one anyone's for the taking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_role_cannot_be_remade_wider_under_its_name() {
    let p = people().await;
    p.admin
        .post(
            "/api/v1/roles",
            json!({"name": "GLASS", "scope": "project", "permissions": ["project.read", "kubectl.cluster.read"]}),
        )
        .await
        .assert_status(201);
    p.admin
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "GLASS", "max_secs": 3600}]}),
        )
        .await
        .assert_status(200);
    p.admin
        .post(
            "/api/v1/roles",
            json!({"name": "ROLE_EDITOR", "scope": "organization", "permissions": ["role.read", "role.write"]}),
        )
        .await
        .assert_status(201);
    p.admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "mallory@example.com"}, "role": "ROLE_EDITOR"}),
        )
        .await
        .assert_status(201);
    // Widening it in place is refused already; deleting it is refused while it is break-glass.
    p.mallory
        .patch(
            "/api/v1/roles/GLASS",
            json!({"permissions": ["project.read", "kubectl.fullaccess"]}),
        )
        .await
        .assert_status(403);
    let r = p
        .mallory
        .delete("/api/v1/roles/GLASS")
        .await
        .assert_status(409);
    assert!(r.body.contains("break-glass"), "{}", r.body);
    // Once the settings no longer name it, it is an ordinary role.
    p.admin
        .patch("/api/v1/settings/jit", json!({"break_glass_roles": []}))
        .await
        .assert_status(200);
    p.mallory
        .delete("/api/v1/roles/GLASS")
        .await
        .assert_status(204);
    // A role made under the name while some settings still name it (as stored before this
    // rule) is checked as widening a break-glass role is.
    let db = &p.app.services().db;
    use sea_orm::{ConnectionTrait, Statement};
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        r#"UPDATE jit_settings SET break_glass = '[{"role":"GLASS","max_secs":3600}]'"#,
    ))
    .await
    .unwrap();
    p.mallory
        .post(
            "/api/v1/roles",
            json!({"name": "glass", "scope": "project", "permissions": ["project.read", "kubectl.fullaccess"]}),
        )
        .await
        .assert_status(403);
    let r = p
        .mallory
        .post(
            "/api/v1/access-requests/break-glass",
            json!({"project": "dev", "role": "GLASS", "duration_secs": 600, "reason": "x"}),
        )
        .await;
    assert_ne!(r.status, 201, "{}", r.body);
}

/// *All users* cannot approve: every new account joins it, so a user manager (or anyone a
/// provisioning provider lets in) would mint accounts to approve their own request. Naming it
/// is refused, it is not offered, and a project that named it before approves through its
/// administrators only.
#[tokio::test]
async fn all_users_never_approves() {
    let p = people().await;
    let r = p
        .john
        .put(
            "/api/v1/projects/dev/approver-group",
            json!({"group": "All Users"}),
        )
        .await
        .assert_status(422);
    assert!(r.body.contains("every new account joins it"), "{}", r.body);
    let form = p.admin.get("/projects/dev").await.assert_status(200);
    assert!(
        form.body.contains(">dev-approvers</option>"),
        "{}",
        form.body
    );
    assert!(
        !form.body.contains(">All Users</option>"),
        "offered as an approver group"
    );
    // Named before this was refused: its members approve nothing.
    use sea_orm::{ConnectionTrait, Statement};
    let db = &p.app.services().db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE projects SET approver_group_id = (SELECT id FROM groups WHERE name = 'All Users') WHERE name = 'dev'",
    ))
    .await
    .unwrap();
    let asked = ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 3600).await;
    let rid = id(&asked);
    p.mallory
        .get(&format!("/api/v1/access-requests/{rid}"))
        .await
        .assert_status(404);
    p.mallory
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(403);
    p.john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await
        .assert_status(200);
}

/// A request whose requester was deactivated after asking is not approved: the grant would
/// come back with a reactivation, unasked for by then.
#[tokio::test]
async fn a_deactivated_requesters_request_is_not_approved() {
    let p = people().await;
    let asked = ask(&p.sally, "NAMESPACE_READ_ONLY", &["apple"], 3600).await;
    // What it would grant travels with it, not only the role's name.
    let grants = asked["role_permissions"].to_string();
    assert!(grants.contains("\"kubectl.namespace.read\""), "{asked:#}");
    assert!(!grants.contains("write"), "{asked:#}");
    let page = p.john.get("/access").await.assert_status(200);
    assert!(
        page.body.contains("data-testid=\"request-grants\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("kubectl.namespace.read"),
        "{}",
        page.body
    );
    let rid = id(&asked);
    p.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    let r = p
        .john
        .post(&format!("/api/v1/access-requests/{rid}/approve"), json!({}))
        .await;
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    let held = p
        .admin
        .get("/api/v1/bindings?user=sally@example.com")
        .await
        .assert_status(200)
        .json();
    assert!(
        !held.to_string().contains("NAMESPACE_READ_ONLY"),
        "{held:#}"
    );
}
