//! The access model through the REST API: CRUD, validation, conflicts, escalation, isolation,
//! changes taking effect on the next request, API keys, settings.

use serde_json::json;
use warden_server::testing::{TestApp, USER_PASSWORD};

#[tokio::test]
async fn projects_crud_validation_and_conflicts() {
    let (_app, admin) = TestApp::spawn().await.with_admin().await;
    let r = admin
        .post(
            "/api/v1/projects",
            json!({"name": "production", "description": "prod"}),
        )
        .await
        .assert_status(201);
    assert_eq!(r.json()["name"], "production");
    let r = admin
        .post("/api/v1/projects", json!({"name": "production"}))
        .await
        .assert_status(409);
    assert_eq!(
        r.json()["error"]["fields"]["name"],
        "a project with this name already exists"
    );
    let r = admin
        .post("/api/v1/projects", json!({"name": "Bad_Name"}))
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["name"]
        .as_str()
        .unwrap()
        .contains("DNS-1123"));
    admin.get("/api/v1/projects/nope").await.assert_status(404);
    let r = admin
        .patch(
            "/api/v1/projects/production",
            json!({"description": "Production workloads"}),
        )
        .await
        .assert_status(200);
    assert_eq!(r.json()["description"], "Production workloads");
    let list = admin
        .get("/api/v1/projects")
        .await
        .assert_status(200)
        .json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "production"]);
    assert!(list["next"].is_null());
    admin
        .delete("/api/v1/projects/default")
        .await
        .assert_status(409);
    admin
        .delete("/api/v1/projects/production")
        .await
        .assert_status(204);
    admin
        .get("/api/v1/projects/production")
        .await
        .assert_status(404);
}

#[tokio::test]
async fn users_groups_roles_and_in_use_conflicts() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let r = admin
        .post(
            "/api/v1/users",
            json!({"email": "Sally@Example.com", "name": "Sally"}),
        )
        .await
        .assert_status(201);
    let url = r.json()["set_password_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/set-password?token=", app.url)));
    assert_eq!(r.json()["user"]["email"], "sally@example.com");
    assert_eq!(r.json()["user"]["groups"], json!(["All Users"]));
    // No password until the link sets one (the console says so, not "must be changed").
    assert_eq!(r.json()["user"]["has_password"], false);
    let r = admin
        .post(
            "/api/v1/users",
            json!({"email": "jo@example.com", "name": "Jo", "password": "a first password 1"}),
        )
        .await
        .assert_status(201);
    assert_eq!(r.json()["user"]["has_password"], true);
    assert_eq!(r.json()["user"]["must_change_password"], true);
    admin
        .post(
            "/api/v1/users",
            json!({"email": "sally@example.com", "name": "Sally 2"}),
        )
        .await
        .assert_status(409);
    let r = admin
        .post(
            "/api/v1/users",
            json!({"email": "not-an-email", "name": "", "password": "short"}),
        )
        .await
        .assert_status(422);
    let f = &r.json()["error"]["fields"];
    assert!(f["email"].is_string() && f["name"].is_string(), "{f}");

    admin
        .post("/api/v1/groups", json!({"name": "Developers"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/groups", json!({"name": "Developers"}))
        .await
        .assert_status(409);
    admin
        .post(
            "/api/v1/groups/Developers/members",
            json!({"user": "sally@example.com"}),
        )
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/groups/Developers/members",
            json!({"user": "sally@example.com"}),
        )
        .await
        .assert_status(409);
    admin
        .post(
            "/api/v1/groups/Developers/members",
            json!({"user": "ghost@example.com"}),
        )
        .await
        .assert_status(404);
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let b = admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}))
        .await
        .assert_status(201)
        .json();
    assert_eq!(b["namespaces"], json!(["apple"]));
    // A subject may hold several bindings in one project (Paralus #151).
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": ["banana"]}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}))
        .await
        .assert_status(409);
    let r = admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["Not_A_Label"]}))
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["namespaces"].is_string());
    let r = admin.post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "NAMESPACE_ADMIN", "project": "dev"})).await.assert_status(422);
    assert!(r.json()["error"]["fields"]["namespaces"].is_string());
    let r = admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "ADMIN", "project": "dev"})).await.assert_status(422);
    assert!(r.json()["error"]["fields"]["project"].is_string());
    // A subject that is neither a user nor a group: the field at fault is named, nothing made.
    let r = admin.post("/api/v1/bindings", json!({"subject": {"kind": "robot", "name": "sally@example.com"}, "role": "PROJECT_READ_ONLY", "project": "dev"})).await.assert_status(422);
    let problem = r.json()["error"]["fields"]["subject.kind"]
        .as_str()
        .map(str::to_owned);
    assert!(
        problem
            .as_deref()
            .is_some_and(|p| p.contains("unknown variant `robot`")
                && p.contains("`user`")
                && !p.contains("line")),
        "{}",
        r.body
    );
    let r = admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "PROJECT_READ_ONLY", "project": "dev", "namespaces": ["a", 7]})).await.assert_status(422);
    assert!(
        r.json()["error"]["fields"]["namespaces[1]"].is_string(),
        "{}",
        r.body
    );
    let r = admin
        .post("/api/v1/bindings", json!({"role": "PROJECT_READ_ONLY"}))
        .await
        .assert_status(422);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `subject`"),
        "{}",
        r.body
    );
    assert!(
        !admin
            .get("/api/v1/bindings?project=dev")
            .await
            .assert_status(200)
            .body
            .contains("PROJECT_READ_ONLY"),
        "a refused binding was made"
    );

    // In use: deleting the group names the bindings.
    let r = admin
        .delete("/api/v1/groups/Developers")
        .await
        .assert_status(409);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NAMESPACE_ADMIN"),
        "{}",
        r.body
    );
    admin
        .delete("/api/v1/groups/Organization%20Admins")
        .await
        .assert_status(409);
    admin
        .delete("/api/v1/groups/All%20Users/members/sally@example.com")
        .await
        .assert_status(409);

    // Custom roles are validated; built-ins are immutable.
    let r = admin
        .post(
            "/api/v1/roles",
            json!({"name": "NS_VIEW", "scope": "namespace", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["permissions"]
        .as_str()
        .unwrap()
        .contains("kubectl.namespace"));
    let r = admin.post("/api/v1/roles", json!({"name": "NS_BAD", "scope": "namespace", "permissions": ["kubectl.namespace.read", "user.write"]})).await.assert_status(422);
    assert!(r.json()["error"]["fields"]["permissions"]
        .as_str()
        .unwrap()
        .contains("user.write"));
    // Namespace write held for a whole project would be write on whole clusters (Namespace
    // objects, RBAC, quotas): refused, with the permission that says so named.
    for scope in ["project", "organization"] {
        let r = admin.post("/api/v1/roles", json!({"name": "DEV_ALL", "scope": scope, "permissions": ["project.read", "kubeconfig.read", "kubectl.namespace.write"]})).await.assert_status(422);
        assert!(
            r.json()["error"]["fields"]["permissions"]
                .as_str()
                .is_some_and(|p| p.contains("kubectl.cluster.write")),
            "{}",
            r.body
        );
    }
    admin.get("/api/v1/roles/DEV_ALL").await.assert_status(404);
    // A scope that does not exist: the field is named, no role is made.
    let r = admin
        .post(
            "/api/v1/roles",
            json!({"name": "GALAXY", "scope": "galaxy", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(422);
    assert!(
        r.json()["error"]["fields"]["scope"]
            .as_str()
            .is_some_and(|p| p.contains("unknown variant `galaxy`") && p.contains("`namespace`")),
        "{}",
        r.body
    );
    admin.get("/api/v1/roles/GALAXY").await.assert_status(404);
    admin.post("/api/v1/roles", json!({"name": "NS_VIEW", "scope": "namespace", "permissions": ["project.read", "kubectl.namespace.read"]})).await.assert_status(201);
    admin
        .patch(
            "/api/v1/roles/ADMIN",
            json!({"permissions": ["project.read"]}),
        )
        .await
        .assert_status(409);
    admin.delete("/api/v1/roles/ADMIN").await.assert_status(409);
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NS_VIEW", "project": "dev", "namespaces": ["cherry"]}))
        .await
        .assert_status(201);
    let r = admin
        .delete("/api/v1/roles/NS_VIEW")
        .await
        .assert_status(409);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sally@example.com"));
    admin.get("/api/v1/roles/NOPE").await.assert_status(404);
    admin
        .delete(&format!("/api/v1/bindings/{}", b["id"].as_str().unwrap()))
        .await
        .assert_status(204);
    admin
        .delete(&format!("/api/v1/bindings/{}", b["id"].as_str().unwrap()))
        .await
        .assert_status(404);

    // Every change is audited with before/after values.
    let ev = admin
        .get("/api/v1/audit/events?action=binding.delete")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        ev["items"][0]["details"]["before"]["role"],
        "NAMESPACE_ADMIN"
    );
    assert!(ev["items"][0]["details"]["after"].is_null());
    let ev = admin
        .get("/api/v1/audit/events?action=project.create")
        .await
        .json();
    assert_eq!(ev["items"][0]["details"]["after"]["name"], "dev");
}

#[tokio::test]
async fn project_isolation() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["production", "dev"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let john = app.user_client(&admin, "john@example.com").await;
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "john@example.com"}, "role": "PROJECT_ADMIN", "project": "production"}))
        .await
        .assert_status(201);
    admin
        .patch("/api/v1/projects/dev", json!({"description": "dev things"}))
        .await
        .assert_status(200);

    let list = john.get("/api/v1/projects").await.assert_status(200).json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["production"]);
    john.get("/api/v1/projects/production")
        .await
        .assert_status(200);
    assert_eq!(
        john.get("/api/v1/projects/dev")
            .await
            .assert_status(403)
            .error_code(),
        "forbidden"
    );
    john.patch("/api/v1/projects/dev", json!({"description": "mine"}))
        .await
        .assert_status(403);
    john.delete("/api/v1/projects/dev").await.assert_status(403);
    john.get("/api/v1/bindings?project=dev")
        .await
        .assert_status(403);
    john.get("/api/v1/bindings?project=production")
        .await
        .assert_status(200);
    john.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "john@example.com"}, "role": "PROJECT_ADMIN", "project": "dev"})).await.assert_status(403);
    john.get("/api/v1/users").await.assert_status(403);
    john.get("/api/v1/users/admin@warden.local")
        .await
        .assert_status(403);
    john.get("/api/v1/groups").await.assert_status(403);
    john.get("/api/v1/settings").await.assert_status(403);
    // Unfiltered binding lists and audit searches show only production.
    let all = john.get("/api/v1/bindings").await.assert_status(200).json();
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["project"] == "production"),
        "{all}"
    );
    let ev = john
        .get("/api/v1/audit/events")
        .await
        .assert_status(200)
        .json();
    // The project's events, and john's own activity (what he was allowed to do; his refusals,
    // with their real reasons, stay with auditors).
    assert!(
        ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["project"] == "production"
                || (e["actor"] == "john@example.com" && e["outcome"] == "allowed")),
        "{ev}"
    );
    let ev = john
        .get("/api/v1/audit/events?project=dev")
        .await
        .assert_status(200)
        .json();
    assert_eq!(ev["items"].as_array().unwrap().len(), 0);
    // The answers never differ between "exists" and "does not exist" for a foreign project.
    assert_eq!(
        john.get("/api/v1/projects/does-not-exist").await.status,
        403
    );
    // Denials are audited with the reason.
    let denied = admin
        .get("/api/v1/audit/events?outcome=denied&actor=john@example.com")
        .await
        .json();
    assert!(denied["items"].as_array().unwrap().len() >= 8);
    assert!(denied["items"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("no binding grants"));
}

#[tokio::test]
async fn no_self_escalation() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let sally = app.user_client(&admin, "sally@example.com").await;
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}))
        .await
        .assert_status(201);
    // Binding herself to more: refused and audited.
    sally.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "PROJECT_ADMIN", "project": "dev"})).await.assert_status(403);
    sally
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(403);
    sally
        .post(
            "/api/v1/groups/Organization%20Admins/members",
            json!({"user": "sally@example.com"}),
        )
        .await
        .assert_status(403);
    sally
        .patch(
            "/api/v1/roles/NAMESPACE_ADMIN",
            json!({"permissions": ["kubectl.fullaccess"]}),
        )
        .await
        .assert_status(403);

    // A project admin cannot hand out what they do not hold.
    let pa = app.user_client(&admin, "pa@example.com").await;
    admin.post("/api/v1/roles", json!({"name": "PROJECT_AUDITOR_PLUS", "scope": "project", "permissions": ["project.read", "kubectl.cluster.write"]})).await.assert_status(201);
    admin.post("/api/v1/roles", json!({"name": "PROJECT_SUPER", "scope": "project", "permissions": ["project.read", "cluster.write"]})).await.assert_status(201);
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "pa@example.com"}, "role": "CLUSTER_ADMIN", "project": "dev"}))
        .await
        .assert_status(201);
    admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "pa@example.com"}, "role": "PROJECT_ADMIN", "project": "dev"})).await.assert_status(201);
    // PROJECT_ADMIN holds kubectl.fullaccess, which includes kubectl.cluster.write: allowed.
    pa.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "PROJECT_AUDITOR_PLUS", "project": "dev"})).await.assert_status(201);
    let bob = app.user_client(&admin, "bob@example.com").await;
    drop(bob);
    let ca = app.user_client(&admin, "ca@example.com").await;
    admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "ca@example.com"}, "role": "CLUSTER_ADMIN", "project": "dev"})).await.assert_status(201);
    // CLUSTER_ADMIN has no project.write at all.
    ca.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "bob@example.com"}, "role": "PROJECT_READ_ONLY", "project": "dev"})).await.assert_status(403);
    let denied = admin
        .get("/api/v1/audit/events?outcome=denied&actor=sally@example.com")
        .await
        .json();
    assert!(denied["items"].as_array().unwrap().len() >= 4, "{denied}");
}

/// Delegated administrators hand out only what they hold. Each attack below went through
/// before: a role editor widened their own role, a group editor joined a group bound to
/// ADMIN, and a user administrator bound themselves to ADMIN at organization scope.
#[tokio::test]
async fn delegated_administrators_cannot_escalate() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let role_of = |r: &serde_json::Value| r["permissions"].clone();

    // 1. A role editor (role.read + role.write only) adds user.write to their own role.
    admin
        .post("/api/v1/roles", json!({"name": "ROLE_EDITOR", "scope": "organization", "permissions": ["role.read", "role.write"]}))
        .await
        .assert_status(201);
    let rita = app.user_client(&admin, "rita@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "rita@example.com"}, "role": "ROLE_EDITOR"}),
        )
        .await
        .assert_status(201);
    let before = admin.get("/api/v1/roles/ROLE_EDITOR").await.json();
    let r = rita
        .patch(
            "/api/v1/roles/ROLE_EDITOR",
            json!({"permissions": ["role.read", "role.write", "user.write"]}),
        )
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "forbidden");
    let after = admin.get("/api/v1/roles/ROLE_EDITOR").await.json();
    assert_eq!(role_of(&after), role_of(&before), "the role is unchanged");
    rita.get("/api/v1/users").await.assert_status(403);
    // Through another role bound to her, or one bound elsewhere, the same.
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "DEV_READER", "scope": "project", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(201);
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "rita@example.com"}, "role": "DEV_READER", "project": "dev"}))
        .await
        .assert_status(201);
    rita.patch(
        "/api/v1/roles/DEV_READER",
        json!({"permissions": ["project.read", "kubectl.fullaccess"]}),
    )
    .await
    .assert_status(403);
    // What she holds where the role is bound, and changes that add nothing, are fine.
    rita.patch(
        "/api/v1/roles/ROLE_EDITOR",
        json!({"permissions": ["role.write", "role.read"], "description": "edits roles"}),
    )
    .await
    .assert_status(200);
    rita.patch(
        "/api/v1/roles/ROLE_EDITOR",
        json!({"permissions": ["role.read"]}),
    )
    .await
    .assert_status(200);
    // The administrator still widens roles freely.
    admin
        .patch(
            "/api/v1/roles/DEV_READER",
            json!({"permissions": ["project.read", "kubectl.cluster.read"]}),
        )
        .await
        .assert_status(200);

    // 2. A group editor (group.read + group.write only) joins a group bound to ADMIN.
    admin
        .post("/api/v1/roles", json!({"name": "GROUP_EDITOR", "scope": "organization", "permissions": ["group.read", "group.write"]}))
        .await
        .assert_status(201);
    let gina = app.user_client(&admin, "gina@example.com").await;
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "gina@example.com"}, "role": "GROUP_EDITOR"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/groups", json!({"name": "Ops"}))
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "Ops"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(201);
    let members = |g: &serde_json::Value| g["members"].as_array().unwrap().len();
    for who in ["gina@example.com", "rita@example.com"] {
        gina.post("/api/v1/groups/Ops/members", json!({"user": who}))
            .await
            .assert_status(403);
    }
    gina.post(
        "/api/v1/groups/Organization%20Admins/members",
        json!({"user": "gina@example.com"}),
    )
    .await
    .assert_status(403);
    assert_eq!(members(&admin.get("/api/v1/groups/Ops").await.json()), 0);
    gina.get("/api/v1/users").await.assert_status(403);
    // A group whose bindings she holds herself (or none) she may still fill.
    admin
        .post("/api/v1/groups", json!({"name": "Readers"}))
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "GROUP_READER", "scope": "organization", "permissions": ["group.read"]}),
        )
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "Readers"}, "role": "GROUP_READER"}),
        )
        .await
        .assert_status(201);
    gina.post(
        "/api/v1/groups/Readers/members",
        json!({"user": "rita@example.com"}),
    )
    .await
    .assert_status(201);
    admin
        .post(
            "/api/v1/groups/Ops/members",
            json!({"user": "rita@example.com"}),
        )
        .await
        .assert_status(201);

    // 3. A user administrator (user.read + user.write only) binds themselves to ADMIN.
    admin
        .post("/api/v1/roles", json!({"name": "USER_ADMIN", "scope": "organization", "permissions": ["user.read", "user.write"]}))
        .await
        .assert_status(201);
    let uma = app.user_client(&admin, "uma@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "uma@example.com"}, "role": "USER_ADMIN"}),
        )
        .await
        .assert_status(201);
    let bindings_before = admin.get("/api/v1/bindings?limit=500").await.json()["items"]
        .as_array()
        .unwrap()
        .len();
    for body in [
        json!({"subject": {"kind": "user", "name": "uma@example.com"}, "role": "ADMIN"}),
        json!({"subject": {"kind": "group", "name": "Readers"}, "role": "GROUP_EDITOR"}),
    ] {
        uma.post("/api/v1/bindings", body).await.assert_status(403);
    }
    let bindings_after = admin.get("/api/v1/bindings?limit=500").await.json()["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(bindings_after, bindings_before, "no binding was created");
    uma.get("/api/v1/groups").await.assert_status(403);
    // A role within what she holds she may hand out.
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "USER_READER", "scope": "organization", "permissions": ["user.read"]}),
        )
        .await
        .assert_status(201);
    uma.post(
        "/api/v1/bindings",
        json!({"subject": {"kind": "user", "name": "gina@example.com"}, "role": "USER_READER"}),
    )
    .await
    .assert_status(201);

    // Every refusal is in the audit log with its reason.
    for (actor, action) in [
        ("rita@example.com", "role.update"),
        ("gina@example.com", "group.member.add"),
        ("uma@example.com", "binding.create"),
    ] {
        let denied = admin
            .get(&format!(
                "/api/v1/audit/events?outcome=denied&actor={actor}&action={action}"
            ))
            .await
            .assert_status(200)
            .json();
        let items = denied["items"].as_array().unwrap();
        assert!(!items.is_empty(), "{actor} {action}: {denied}");
        assert!(
            items.iter().all(|e| e["reason"]
                .as_str()
                .unwrap()
                .contains("the granter does not hold it there")),
            "{denied}"
        );
    }
}

#[tokio::test]
async fn changes_take_effect_on_the_next_request() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/groups", json!({"name": "Auditors"}))
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "Auditors"}, "role": "ADMIN_READ_ONLY"}),
        )
        .await
        .assert_status(201);
    let ann = app.user_client(&admin, "ann@example.com").await;
    ann.get("/api/v1/users").await.assert_status(403);
    let epoch = app.services().policy.epoch();
    admin
        .post(
            "/api/v1/groups/Auditors/members",
            json!({"user": "ann@example.com"}),
        )
        .await
        .assert_status(201);
    assert!(
        app.services().policy.epoch() > epoch,
        "a membership change bumps the epoch"
    );
    ann.get("/api/v1/users").await.assert_status(200);
    admin
        .delete("/api/v1/groups/Auditors/members/ann@example.com")
        .await
        .assert_status(200);
    ann.get("/api/v1/users").await.assert_status(403);

    // A direct binding, added then removed.
    let b = admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "ann@example.com"}, "role": "ADMIN_READ_ONLY"})).await.assert_status(201).json();
    ann.get("/api/v1/groups").await.assert_status(200);
    admin
        .delete(&format!("/api/v1/bindings/{}", b["id"].as_str().unwrap()))
        .await
        .assert_status(204);
    ann.get("/api/v1/groups").await.assert_status(403);

    // Deactivation ends the live session at once; reactivation does not revive it, nor the
    // API keys made before (they may be in someone else's hands).
    let key = ann
        .post("/api/v1/api-keys", json!({"name": "laptop"}))
        .await
        .assert_status(201)
        .json()["secret"]
        .as_str()
        .expect("the key")
        .to_owned();
    let bare = app.client_without_origin();
    bare.get_bearer("/api/v1/me", &key).await.assert_status(200);
    admin
        .patch(
            "/api/v1/users/ann@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    ann.get("/api/v1/me").await.assert_status(401);
    ann.login("ann@example.com", USER_PASSWORD)
        .await
        .assert_status(401);
    admin
        .patch("/api/v1/users/ann@example.com", json!({"status": "active"}))
        .await
        .assert_status(200);
    ann.get("/api/v1/me").await.assert_status(401);
    bare.get_bearer("/api/v1/me", &key).await.assert_status(401);
    let revoked = admin
        .get("/api/v1/audit/events?action=api_key.revoke_all")
        .await
        .json();
    assert_eq!(revoked["items"].as_array().unwrap().len(), 1, "{revoked}");
    ann.login("ann@example.com", USER_PASSWORD)
        .await
        .assert_status(200);
    // Administrators cannot deactivate or delete themselves.
    admin
        .patch(
            "/api/v1/users/admin@warden.local",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(409);
    admin
        .delete("/api/v1/users/admin@warden.local")
        .await
        .assert_status(409);
    let sleeping = admin
        .patch(
            "/api/v1/users/ann@example.com",
            json!({"status": "sleeping"}),
        )
        .await
        .assert_status(422)
        .json();
    let said = sleeping["error"]["fields"]["status"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("sleeping"), "{sleeping}");
    admin
        .delete("/api/v1/users/ann@example.com")
        .await
        .assert_status(204);
    ann.get("/api/v1/me").await.assert_status(401);
    admin
        .get("/api/v1/users/ann@example.com")
        .await
        .assert_status(404);
}

#[tokio::test]
async fn me_lists_effective_permissions_and_why() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/groups", json!({"name": "Developers"}))
        .await
        .assert_status(201);
    let sally = app.user_client(&admin, "sally@example.com").await;
    admin
        .post(
            "/api/v1/groups/Developers/members",
            json!({"user": "sally@example.com"}),
        )
        .await
        .assert_status(201);
    admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}))
        .await
        .assert_status(201);
    let me = sally.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["projects"], json!(["dev"]));
    assert_eq!(me["org_permissions"], json!([]));
    let g = &me["grants"][0];
    assert_eq!(g["role"], "NAMESPACE_ADMIN");
    assert_eq!(g["namespaces"], json!(["apple"]));
    assert_eq!(g["via"], "group Developers");
    assert!(g["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "kubectl.namespace.write"));

    let why = admin.get("/api/v1/users/sally@example.com/explain?permission=kubectl.namespace.write&project=dev&namespace=apple").await.assert_status(200).json();
    assert_eq!(why["allowed"], true);
    assert!(why["because"].as_str().unwrap().contains("NAMESPACE_ADMIN"));
    assert!(why["because"]
        .as_str()
        .unwrap()
        .contains("group Developers"));
    let why = admin.get("/api/v1/users/sally@example.com/explain?permission=kubectl.namespace.write&project=dev&namespace=default").await.json();
    assert_eq!(why["allowed"], false);
    let why = sally
        .get("/api/v1/users/sally@example.com/explain?permission=user.read")
        .await
        .assert_status(200)
        .json();
    assert_eq!(why["allowed"], false);
    sally
        .get("/api/v1/users/admin@warden.local/explain?permission=user.read")
        .await
        .assert_status(403);
    admin
        .get("/api/v1/users/sally@example.com/explain?permission=nope")
        .await
        .assert_status(422);
    let detail = admin
        .get("/api/v1/users/sally@example.com")
        .await
        .assert_status(200)
        .json();
    assert_eq!(detail["user"]["groups"], json!(["All Users", "Developers"]));
    assert_eq!(detail["access"][0]["role"], "NAMESPACE_ADMIN");
}

#[tokio::test]
async fn users_list_filters_and_pagination() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/groups", json!({"name": "Developers"}))
        .await
        .assert_status(201);
    for i in 0..5 {
        admin
            .post(
                "/api/v1/users",
                json!({"email": format!("dev{i}@example.com"), "name": format!("Dev {i}")}),
            )
            .await
            .assert_status(201);
    }
    admin
        .post(
            "/api/v1/groups/Developers/members",
            json!({"user": "dev1@example.com"}),
        )
        .await
        .assert_status(201);
    admin.post("/api/v1/bindings", json!({"subject": {"kind": "group", "name": "Developers"}, "role": "PROJECT_READ_ONLY", "project": "dev"})).await.assert_status(201);
    admin
        .patch(
            "/api/v1/users/dev2@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    let p1 = admin
        .get("/api/v1/users?q=dev&limit=2")
        .await
        .assert_status(200)
        .json();
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let p2 = admin
        .get(&format!(
            "/api/v1/users?q=dev&limit=2&cursor={}",
            p1["next"].as_str().unwrap()
        ))
        .await
        .json();
    let p3 = admin
        .get(&format!(
            "/api/v1/users?q=dev&limit=2&cursor={}",
            p2["next"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(p3["items"].as_array().unwrap().len(), 1);
    assert!(p3["next"].is_null());
    let one = |v: serde_json::Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        one(admin.get("/api/v1/users?group=Developers").await.json()),
        vec!["dev1@example.com"]
    );
    assert_eq!(
        one(admin.get("/api/v1/users?project=dev").await.json()),
        vec!["dev1@example.com"]
    );
    assert_eq!(
        one(admin
            .get("/api/v1/users?role=PROJECT_READ_ONLY")
            .await
            .json()),
        vec!["dev1@example.com"]
    );
    assert_eq!(
        one(admin.get("/api/v1/users?status=deactivated").await.json()),
        vec!["dev2@example.com"]
    );
    assert_eq!(
        one(admin.get("/api/v1/users?role=ADMIN").await.json()),
        vec!["admin@warden.local"]
    );
    admin
        .get("/api/v1/users?status=maybe")
        .await
        .assert_status(422);
    admin.get("/api/v1/users?bogus=1").await.assert_status(422);
    drop(app);
}

#[tokio::test]
async fn api_keys_authenticate_as_their_owner_until_revoked_or_expired() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let created = admin
        .post(
            "/api/v1/api-keys",
            json!({"name": "ci", "expires_in_days": 1}),
        )
        .await
        .assert_status(201)
        .json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(created["key"]["prefix"].as_str().unwrap()));
    let keys = admin.get("/api/v1/api-keys").await.json();
    assert_eq!(keys["items"][0]["name"], "ci");
    assert!(
        !keys.to_string().contains(&secret),
        "the secret is shown once only"
    );

    let bare = app.client_without_origin();
    let me = bare
        .get_bearer("/api/v1/me", &secret)
        .await
        .assert_status(200)
        .json();
    assert_eq!(me["user"]["email"], "admin@warden.local");
    assert_eq!(me["session_type"], "api");
    // Bearer-authenticated writes need no Origin.
    bare.post_bearer("/api/v1/projects", &secret, json!({"name": "from-ci"}))
        .await
        .assert_status(201);
    bare.get_bearer("/api/v1/me", "wdn_bogus_key")
        .await
        .assert_status(401);
    let keys = admin.get("/api/v1/api-keys").await.json();
    assert!(keys["items"][0]["last_used_at"].is_string());

    app.clock.advance_secs(86_400 + 1);
    bare.get_bearer("/api/v1/me", &secret)
        .await
        .assert_status(401);

    let admin = app.client();
    admin
        .login("admin@warden.local", "the admin's new password")
        .await
        .assert_status(200);
    let second = admin
        .post("/api/v1/api-keys", json!({"name": "ops"}))
        .await
        .assert_status(201)
        .json();
    let s2 = second["secret"].as_str().unwrap().to_owned();
    bare.get_bearer("/api/v1/me", &s2).await.assert_status(200);
    admin
        .delete(&format!(
            "/api/v1/api-keys/{}",
            second["key"]["id"].as_str().unwrap()
        ))
        .await
        .assert_status(204);
    bare.get_bearer("/api/v1/me", &s2).await.assert_status(401);
    admin
        .post(
            "/api/v1/api-keys",
            json!({"name": "x", "expires_in_days": 9999}),
        )
        .await
        .assert_status(422);
    // Stored hashed: the database never holds the secret.
    use sea_orm::EntityTrait;
    let rows = warden_domain::entities::api_keys::Entity::find()
        .all(&app.services().db)
        .await
        .unwrap();
    assert!(rows
        .iter()
        .all(|k| k.secret_hash != s2 && k.secret_hash.len() == 64));
}

/// A key made from a plain form (no JavaScript) is shown once on the page the form lands on.
/// Until then it waits in the session, whose row lives in the database (and its backups):
/// sealed there, never in the clear, and dropped unread after a few minutes.
#[tokio::test]
async fn a_plain_forms_new_key_waits_sealed_and_not_for_long() {
    use sea_orm::EntityTrait;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let sessions = || async {
        warden_domain::entities::sessions::Entity::find()
            .all(&app.services().db)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.data)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let key_in = |body: &str| {
        body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .find(|w| w.starts_with("wdn_") && w.len() > 20)
            .map(str::to_owned)
    };
    let r = admin
        .post_form(
            "/sfn/create_api_key",
            &[("name", "script"), ("expires_in_days", "30")],
        )
        .await;
    assert!(
        r.status == 303 || r.status == 302,
        "{} {}",
        r.status,
        r.body
    );
    let stored = sessions().await;
    let page = admin.get("/me/api-keys").await.assert_status(200);
    let key = key_in(&page.body).expect("the new key on the page");
    assert!(
        !stored.contains(&key),
        "the key sat in the session row in the clear"
    );
    assert!(stored.contains("warden-sealed"), "{stored}");
    let me = app.client();
    me.get_bearer("/api/v1/me", &key).await.assert_status(200);
    // Shown once.
    let again = admin.get("/me/api-keys").await.assert_status(200);
    assert_eq!(key_in(&again.body), None);
    // Left unread too long: gone.
    admin
        .post_form(
            "/sfn/create_api_key",
            &[("name", "forgotten"), ("expires_in_days", "30")],
        )
        .await;
    app.clock.advance_secs(6 * 60);
    let late = admin.get("/me/api-keys").await.assert_status(200);
    assert_eq!(key_in(&late.body), None, "{}", late.body);
}

/// A request authenticated by an API key cannot create API keys (a leaked key could
/// otherwise multiply itself and outlive its own expiry); a signed-in session still can.
#[tokio::test]
async fn api_keys_cannot_create_api_keys() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let secret = admin
        .create_api_key(json!({"name": "ci", "expires_in_days": 1}))
        .await;
    let bare = app.client_without_origin();
    let r = bare
        .post_bearer(
            "/api/v1/api-keys",
            &secret,
            json!({"name": "child", "expires_in_days": 365}),
        )
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "forbidden");
    assert_eq!(
        r.json()["error"]["message"],
        warden_domain::dto::messages::API_KEY_NEEDS_SESSION
    );
    let keys = admin.get("/api/v1/api-keys").await.json();
    assert_eq!(keys["items"].as_array().unwrap().len(), 1, "{keys}");

    // The key still works for everything else, and the session still creates keys.
    bare.get_bearer("/api/v1/me", &secret)
        .await
        .assert_status(200);
    admin
        .post("/api/v1/api-keys", json!({"name": "second"}))
        .await
        .assert_status(201);

    // The refusal is audited, as made with an API key.
    let denied = admin
        .get("/api/v1/audit/events?outcome=denied&action=api_key.create")
        .await
        .assert_status(200)
        .json();
    let items = denied["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{denied}");
    assert_eq!(items[0]["session_type"], "api");
    assert_eq!(items[0]["actor"], "admin@warden.local");
}

#[tokio::test]
async fn settings_are_validated_and_applied() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let s = admin
        .get("/api/v1/settings")
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["lockout_threshold"], 5);
    let r = admin
        .patch("/api/v1/settings", json!({"session_idle_minutes": 0}))
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["session_idle_minutes"].is_string());
    admin
        .patch(
            "/api/v1/settings",
            json!({"organization_name": "Acme", "session_idle_minutes": 5, "lockout_threshold": 2}),
        )
        .await
        .assert_status(200);
    app.clock.advance_secs(6 * 60);
    admin.get("/api/v1/me").await.assert_status(401);
    let c = app.client();
    c.login("x@example.com", "wrong password!!")
        .await
        .assert_status(401);
    c.login("x@example.com", "wrong password!!")
        .await
        .assert_status(429);
}

/// Warden's own namespace (every user's service account, the agent's, the anchors their tokens
/// are bound to) is never granted: a binding naming it is invalid, alone or among others.
#[tokio::test]
async fn warden_namespace_cannot_be_granted() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let _sally = app.user_client(&admin, "sally@example.com").await;
    for (role, namespaces) in [
        ("NAMESPACE_ADMIN", json!(["warden-system"])),
        ("NAMESPACE_READ_ONLY", json!(["warden-system"])),
        ("NAMESPACE_ADMIN", json!(["apple", " warden-system "])),
    ] {
        let r = admin
            .post(
                "/api/v1/bindings",
                json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": role, "project": "dev", "namespaces": namespaces}),
            )
            .await
            .assert_status(422);
        let field = r.json()["error"]["fields"]["namespaces"].clone();
        assert!(
            field
                .as_str()
                .is_some_and(|m| m.contains("Warden's own namespace and cannot be granted")),
            "{role} {namespaces}: {field}"
        );
    }
    let all = admin
        .get("/api/v1/bindings?project=dev")
        .await
        .assert_status(200)
        .json();
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["subject"]["name"] != "sally@example.com"),
        "{all}"
    );
    // Any other namespace is fine.
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201);
}

/// A grant in the cluster's own namespaces needs an explicit confirmation (and even then never
/// `warden-system`); the console flags it.
#[tokio::test]
async fn system_namespaces_need_an_explicit_confirmation() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let _sally = app.user_client(&admin, "sally@example.com").await;
    let grant = |namespaces: serde_json::Value, confirm: Option<bool>| {
        let mut body = json!({"subject": {"kind": "user", "name": "sally@example.com"},
            "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": namespaces});
        if let Some(c) = confirm {
            body["confirm_system_namespaces"] = json!(c);
        }
        body
    };
    for ns in ["kube-system", "kube-public", "kube-node-lease"] {
        for confirm in [None, Some(false)] {
            let r = admin
                .post("/api/v1/bindings", grant(json!(["apple", ns]), confirm))
                .await
                .assert_status(422);
            let field = r.json()["error"]["fields"]["namespaces"].clone();
            assert!(
                field
                    .as_str()
                    .is_some_and(|m| m.contains("system namespace")),
                "{ns}: {field}"
            );
        }
    }
    // Nothing was bound by the refused attempts.
    let all = admin.get("/api/v1/bindings?project=dev").await.json();
    assert!(all["items"].as_array().unwrap().is_empty(), "{all}");
    // Confirmed, it is granted; warden-system stays refused even so.
    admin
        .post(
            "/api/v1/bindings",
            grant(json!(["kube-system"]), Some(true)),
        )
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/bindings",
            grant(json!(["warden-system"]), Some(true)),
        )
        .await
        .assert_status(422);
    // The console shows the grant flagged.
    let page = admin.get("/projects/dev").await.assert_status(200).body;
    assert!(
        page.contains("system-namespace-flag"),
        "no flag on the project page"
    );
}

/// Names people tell apart only by letter case are one name: a second group or role whose
/// name differs in case only is refused (projects are lower-case DNS labels already).
#[tokio::test]
async fn group_and_role_names_ignore_letter_case() {
    let (_app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/groups", json!({"name": "Developers"}))
        .await
        .assert_status(201);
    let r = admin
        .post("/api/v1/groups", json!({"name": "developers"}))
        .await
        .assert_status(409);
    assert_eq!(r.json()["error"]["fields"]["name"].as_str().is_some(), true);
    admin
        .post("/api/v1/groups", json!({"name": "DEVELOPERS "}))
        .await
        .assert_status(409);
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "Viewer", "scope": "project", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "viewer", "scope": "project", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(409);
    // A built-in role's name in another case is taken too.
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "admin", "scope": "organization", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(409);
    let r = admin
        .post("/api/v1/projects", json!({"name": "Production"}))
        .await;
    assert_eq!(r.status, 422, "projects are lower-case: {}", r.body);
}

/// Someone who manages groups removes a developer from a team, not the administrators from
/// Organization Admins; and no one, an administrator included, leaves the organization
/// without an administrator, by a membership or a binding.
#[tokio::test]
async fn group_managers_cannot_remove_the_administrators_and_the_last_one_stays() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let admin_email = warden_server::testing::ADMIN_EMAIL;
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "GROUP_MANAGER", "scope": "organization", "permissions": ["group.read", "group.write"]}),
        )
        .await
        .assert_status(201);
    let mallory = app.user_client(&admin, "mallory@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "mallory@example.com"}, "role": "GROUP_MANAGER"}),
        )
        .await
        .assert_status(201);
    let _dev = app.user_client(&admin, "dev@example.com").await;
    admin
        .post("/api/v1/groups", json!({"name": "team"}))
        .await
        .assert_status(201);
    for g in ["team", "Organization%20Admins"] {
        admin
            .post(
                &format!("/api/v1/groups/{g}/members"),
                json!({"user": "dev@example.com"}),
            )
            .await
            .assert_status(201);
    }
    // The delegate: a team member yes; an administrator no.
    mallory
        .delete("/api/v1/groups/team/members/dev@example.com")
        .await
        .assert_status(200);
    for who in [admin_email, "dev@example.com"] {
        mallory
            .delete(&format!(
                "/api/v1/groups/Organization%20Admins/members/{who}"
            ))
            .await
            .assert_status(403);
    }
    admin.get("/api/v1/users").await.assert_status(200);
    let denied = admin
        .get("/api/v1/audit/events?action=group.member.remove&outcome=denied")
        .await
        .assert_status(200)
        .json();
    assert_eq!(denied["items"].as_array().unwrap().len(), 2, "{denied:#}");

    // Two administrators: one may leave. The last may not, by membership or binding.
    admin
        .delete("/api/v1/groups/Organization%20Admins/members/dev@example.com")
        .await
        .assert_status(200);
    let r = admin
        .delete(&format!(
            "/api/v1/groups/Organization%20Admins/members/{admin_email}"
        ))
        .await
        .assert_status(409);
    assert!(r.body.contains("without an administrator"), "{}", r.body);
    let bindings = admin
        .get("/api/v1/bindings?limit=200")
        .await
        .assert_status(200)
        .json();
    let org_admins = bindings["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["role"] == "ADMIN" && b["subject"]["name"] == "Organization Admins")
        .expect("the administrators' binding")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .delete(&format!("/api/v1/bindings/{org_admins}"))
        .await
        .assert_status(409);
    // With another administrator bound directly, the group's binding may go.
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "dev@example.com"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(201);
    admin
        .delete(&format!("/api/v1/bindings/{org_admins}"))
        .await
        .assert_status(204);
}

/// Two administrators who remove each other at the same moment (from Organization Admins,
/// by deactivation, by deletion) are taken one after the other: one change goes through, the
/// other is refused (409 and audited; or 401/403 when it came late enough to be asked by
/// someone no longer signed in or no longer an administrator), and the organization keeps an
/// administrator. Each way is tried a few times: a check made before the changes'
/// transactions, which both pass, fails here.
#[tokio::test]
async fn administrators_removing_each_other_at_once_leave_one() {
    use warden_server::testing::Resp;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let admin_email = warden_server::testing::ADMIN_EMAIL;
    let dev_email = "dev@example.com";
    let dev = app.user_client(&admin, dev_email).await;
    admin
        .post(
            "/api/v1/groups/Organization%20Admins/members",
            json!({"user": dev_email}),
        )
        .await
        .assert_status(201);
    let people = [
        (&admin, admin_email, "the admin's new password"),
        (&dev, dev_email, USER_PASSWORD),
    ];
    // Which of the two stays (the index in `people`): exactly one change went through.
    let mut refusals = 0;
    let mut stays = |a: &Resp, b: &Resp, ok: u16| -> usize {
        let went = [a.status, b.status].iter().filter(|s| **s == ok).count();
        assert_eq!(
            went, 1,
            "{} {}: {} / {}",
            a.status, b.status, a.body, b.body
        );
        let refused = if a.status == ok { b } else { a };
        assert!(
            [401, 403, 409].contains(&refused.status),
            "{}: {}",
            refused.status,
            refused.body
        );
        if refused.status == 409 {
            assert!(
                refused.body.contains("without an administrator"),
                "{}",
                refused.body
            );
            refusals += 1;
        }
        // `a` was the administrator's change, made on the developer.
        usize::from(a.status != ok)
    };
    let member = |email: &str| format!("/api/v1/groups/Organization%20Admins/members/{email}");
    let (dev_member, admin_member) = (member(dev_email), member(admin_email));
    let (dev_user, admin_user) = (
        format!("/api/v1/users/{dev_email}"),
        format!("/api/v1/users/{admin_email}"),
    );
    let off = json!({"status": "deactivated"});
    for _ in 0..3 {
        let (a, b) = tokio::join!(admin.delete(&dev_member), dev.delete(&admin_member));
        let kept = stays(&a, &b, 200);
        // The one still an administrator brings the other back.
        people[kept]
            .0
            .post(
                "/api/v1/groups/Organization%20Admins/members",
                json!({"user": people[1 - kept].1}),
            )
            .await
            .assert_status(201);
    }
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            admin.patch(&dev_user, off.clone()),
            dev.patch(&admin_user, off.clone())
        );
        let kept = stays(&a, &b, 200);
        let (back, email, password) = people[1 - kept];
        people[kept]
            .0
            .patch(
                &format!("/api/v1/users/{email}"),
                json!({"status": "active"}),
            )
            .await
            .assert_status(200);
        // Deactivation ended their sessions: they sign in again.
        back.login(email, password).await.assert_status(200);
    }
    let (a, b) = tokio::join!(admin.delete(&dev_user), dev.delete(&admin_user));
    let left = people[stays(&a, &b, 204)].0;
    // Someone administers still, and every refusal for the organization's sake was audited.
    left.get("/api/v1/users?limit=10").await.assert_status(200);
    let mut denied = 0;
    for action in ["group.member.remove", "user.update", "user.delete"] {
        denied += left
            .get(&format!(
                "/api/v1/audit/events?action={action}&outcome=denied&limit=50"
            ))
            .await
            .assert_status(200)
            .json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("without an administrator"))
            })
            .count();
    }
    assert_eq!(denied, refusals);
}

/// A binding removed twice at once (a double click, two administrators) is removed and
/// audited once: the later removal is refused, not told a second time.
#[tokio::test]
async fn a_binding_removed_twice_at_once_is_audited_once() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    app.user_client(&admin, "sally@example.com").await;
    let b = admin
        .post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": ["cherry"]}))
        .await
        .assert_status(201)
        .json();
    let path = format!("/api/v1/bindings/{}", b["id"].as_str().unwrap());
    let answers = futures::future::join_all((0..6).map(|_| admin.delete(&path))).await;
    let codes: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(codes.iter().filter(|c| **c == 204).count(), 1, "{codes:?}");
    assert!(
        codes.iter().all(|c| [204, 404, 409].contains(c)),
        "{codes:?}"
    );
    let ev = admin
        .get("/api/v1/audit/events?action=binding.delete")
        .await
        .assert_status(200)
        .json();
    assert_eq!(ev["items"].as_array().unwrap().len(), 1, "{ev}");
}
