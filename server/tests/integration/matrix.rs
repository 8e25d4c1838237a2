//! The authorization matrix, as data: every built-in role (bound at its own scope on project
//! `alpha`, or at organization scope) x console actions x resources inside (`alpha`) and
//! outside (`beta`) that scope, with the expected decision written out by hand. Each case is
//! checked through the REST API and through the gate directly. Zero unexpected allows.

use serde_json::{json, Value};
use warden_domain::access::kube::{KubeCluster, KubeIntent, KubeRules};
use warden_domain::access::{Action, Principal};
use warden_domain::audit::{RequestMeta, SessionType};
use warden_domain::ids::UserId;
use warden_domain::permissions::Permission;
use warden_server::gateway::testkit::Kubectl;
use warden_server::testing::{Client, TestApp};

const ROLES: &[&str] = &[
    "ADMIN",
    "ADMIN_READ_ONLY",
    "PROJECT_ADMIN",
    "PROJECT_READ_ONLY",
    "CLUSTER_ADMIN",
    "NAMESPACE_ADMIN",
    "NAMESPACE_READ_ONLY",
];

/// (name, method, path, body, gate action, roles allowed)
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: fn(&str) -> Value,
    gate: Option<fn() -> Action>,
    allowed: &'static [&'static str],
}

fn no_body(_: &str) -> Value {
    Value::Null
}

const ALL: &[&str] = ROLES;
const ORG_ADMINS: &[&str] = &["ADMIN"];
const ORG_READERS: &[&str] = &["ADMIN", "ADMIN_READ_ONLY"];

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "list users",
            method: "GET",
            path: "/api/v1/users",
            body: no_body,
            gate: Some(|| Action::org(Permission::UserRead)),
            allowed: ORG_READERS,
        },
        Case {
            name: "get a user",
            method: "GET",
            path: "/api/v1/users/admin@warden.local",
            body: no_body,
            gate: Some(|| Action::org(Permission::UserRead)),
            allowed: ORG_READERS,
        },
        Case {
            name: "create a user",
            method: "POST",
            path: "/api/v1/users",
            body: |r| json!({"email": format!("new-{}@example.com", r.to_lowercase().replace('_', "-")), "name": "New"}),
            gate: Some(|| Action::org(Permission::UserWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "deactivate a user",
            method: "PATCH",
            path: "/api/v1/users/victim@example.com",
            body: |_| json!({"status": "active"}),
            gate: Some(|| Action::org(Permission::UserWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "reset a password",
            method: "POST",
            path: "/api/v1/users/victim@example.com/reset-password",
            body: |_| json!({}),
            gate: Some(|| Action::org(Permission::UserWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "list groups",
            method: "GET",
            path: "/api/v1/groups",
            body: no_body,
            gate: Some(|| Action::org(Permission::GroupRead)),
            allowed: ORG_READERS,
        },
        Case {
            name: "create a group",
            method: "POST",
            path: "/api/v1/groups",
            body: |r| json!({"name": format!("g-{r}")}),
            gate: Some(|| Action::org(Permission::GroupWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "add a group member",
            method: "POST",
            path: "/api/v1/groups/Spare/members",
            body: |r| json!({"user": format!("{}@example.com", r.to_lowercase().replace('_', "-"))}),
            gate: Some(|| Action::org(Permission::GroupWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "create a role",
            method: "POST",
            path: "/api/v1/roles",
            body: |r| json!({"name": format!("R_{r}"), "scope": "project", "permissions": ["project.read"]}),
            gate: Some(|| Action::org(Permission::RoleWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "edit a custom role",
            method: "PATCH",
            path: "/api/v1/roles/CUSTOM",
            body: |_| json!({"description": "x"}),
            gate: Some(|| Action::org(Permission::RoleWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "read settings",
            method: "GET",
            path: "/api/v1/settings",
            body: no_body,
            gate: Some(|| Action::org(Permission::SettingsRead)),
            allowed: ORG_READERS,
        },
        Case {
            name: "change settings",
            method: "PATCH",
            path: "/api/v1/settings",
            body: |_| json!({"lockout_threshold": 5}),
            gate: Some(|| Action::org(Permission::SettingsWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "create a project",
            method: "POST",
            path: "/api/v1/projects",
            body: |r| json!({"name": format!("p-{}", r.to_lowercase().replace('_', "-"))}),
            gate: Some(|| Action::org(Permission::ProjectCreate)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "read project inside",
            method: "GET",
            path: "/api/v1/projects/alpha",
            body: no_body,
            gate: Some(|| Action::project(Permission::ProjectRead, "alpha")),
            allowed: ALL,
        },
        Case {
            name: "read project outside",
            method: "GET",
            path: "/api/v1/projects/beta",
            body: no_body,
            gate: Some(|| Action::project(Permission::ProjectRead, "beta")),
            allowed: ORG_READERS,
        },
        Case {
            name: "edit project inside",
            method: "PATCH",
            path: "/api/v1/projects/alpha",
            body: |_| json!({"description": "edited"}),
            gate: Some(|| Action::project(Permission::ProjectWrite, "alpha")),
            allowed: &["ADMIN", "PROJECT_ADMIN"],
        },
        Case {
            name: "edit project outside",
            method: "PATCH",
            path: "/api/v1/projects/beta",
            body: |_| json!({"description": "edited"}),
            gate: Some(|| Action::project(Permission::ProjectWrite, "beta")),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "members inside",
            method: "GET",
            path: "/api/v1/bindings?project=alpha",
            body: no_body,
            gate: Some(|| Action::project(Permission::ProjectRead, "alpha")),
            allowed: ALL,
        },
        Case {
            name: "members outside",
            method: "GET",
            path: "/api/v1/bindings?project=beta",
            body: no_body,
            gate: Some(|| Action::project(Permission::ProjectRead, "beta")),
            allowed: ORG_READERS,
        },
        Case {
            name: "bind inside",
            method: "POST",
            path: "/api/v1/bindings",
            body: |r| json!({"subject": {"kind": "group", "name": format!("bind-{r}")}, "role": "PROJECT_READ_ONLY", "project": "alpha"}),
            gate: Some(|| Action::project(Permission::ProjectWrite, "alpha")),
            allowed: &["ADMIN", "PROJECT_ADMIN"],
        },
        Case {
            name: "bind outside",
            method: "POST",
            path: "/api/v1/bindings",
            body: |r| json!({"subject": {"kind": "group", "name": format!("bind-{r}")}, "role": "PROJECT_READ_ONLY", "project": "beta"}),
            gate: Some(|| Action::project(Permission::ProjectWrite, "beta")),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "bind at organization scope",
            method: "POST",
            path: "/api/v1/bindings",
            body: |r| json!({"subject": {"kind": "group", "name": format!("bind-{r}")}, "role": "ADMIN_READ_ONLY"}),
            gate: Some(|| Action::org(Permission::UserWrite)),
            allowed: ORG_ADMINS,
        },
        Case {
            // Every user reads their own activity; audit.read widens what they see (the
            // scope is tested in audit.rs).
            name: "read the audit log",
            method: "GET",
            path: "/api/v1/audit/events",
            body: no_body,
            gate: None,
            allowed: ALL,
        },
        Case {
            name: "delete a project",
            method: "DELETE",
            path: "/api/v1/projects/scratch",
            body: no_body,
            gate: Some(|| Action::org(Permission::ProjectCreate)),
            allowed: ORG_ADMINS,
        },
        Case {
            name: "cluster read inside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::ClusterRead, "alpha")),
            allowed: ALL,
        },
        Case {
            name: "cluster read outside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::ClusterRead, "beta")),
            allowed: ORG_READERS,
        },
        Case {
            name: "cluster write inside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::ClusterWrite, "alpha")),
            allowed: &["ADMIN", "PROJECT_ADMIN"],
        },
        Case {
            name: "kubeconfig inside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::KubeconfigRead, "alpha")),
            allowed: ALL,
        },
        Case {
            name: "kubeconfig outside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::KubeconfigRead, "beta")),
            allowed: ORG_READERS,
        },
        Case {
            name: "kubectl full access inside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::KubectlFullaccess, "alpha")),
            allowed: &["ADMIN", "PROJECT_ADMIN", "CLUSTER_ADMIN"],
        },
        Case {
            name: "kubectl cluster read inside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::KubectlClusterRead, "alpha")),
            allowed: &["ADMIN_READ_ONLY", "PROJECT_READ_ONLY"],
        },
        Case {
            name: "kubectl namespace write in team",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::namespace(Permission::KubectlNamespaceWrite, "alpha", "team")),
            allowed: &["NAMESPACE_ADMIN"],
        },
        Case {
            name: "kubectl namespace read in team",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::namespace(Permission::KubectlNamespaceRead, "alpha", "team")),
            allowed: &["NAMESPACE_ADMIN", "NAMESPACE_READ_ONLY"],
        },
        Case {
            name: "kubectl namespace read in other",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::namespace(Permission::KubectlNamespaceRead, "alpha", "other")),
            allowed: &[],
        },
        Case {
            name: "kubectl namespace write outside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::namespace(Permission::KubectlNamespaceWrite, "beta", "team")),
            allowed: &[],
        },
        Case {
            name: "audit read outside",
            method: "",
            path: "",
            body: no_body,
            gate: Some(|| Action::project(Permission::AuditRead, "beta")),
            allowed: ORG_READERS,
        },
    ]
}

fn role_email(role: &str) -> String {
    format!("{}@example.com", role.to_lowercase().replace('_', "-"))
}

async fn call(c: &Client, method: &str, path: &str, body: Value) -> u16 {
    match method {
        "GET" => c.get(path).await.status,
        "POST" => c.post(path, body).await.status,
        "PATCH" => c.patch(path, body).await.status,
        "DELETE" => c.delete(path).await.status,
        other => panic!("method {other}"),
    }
}

#[tokio::test]
async fn authorization_matrix() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["alpha", "beta"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    admin
        .post(
            "/api/v1/users",
            json!({"email": "victim@example.com", "name": "Victim"}),
        )
        .await
        .assert_status(201);
    admin
        .post("/api/v1/groups", json!({"name": "Spare"}))
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "CUSTOM", "scope": "project", "permissions": ["project.read"]}),
        )
        .await
        .assert_status(201);

    let mut clients = Vec::new();
    for role in ROLES {
        let email = role_email(role);
        let c = app.user_client(&admin, &email).await;
        admin
            .post("/api/v1/groups", json!({"name": format!("bind-{role}")}))
            .await
            .assert_status(201);
        let binding = match *role {
            "ADMIN" | "ADMIN_READ_ONLY" => {
                json!({"subject": {"kind": "user", "name": email}, "role": role})
            }
            "NAMESPACE_ADMIN" | "NAMESPACE_READ_ONLY" => {
                json!({"subject": {"kind": "user", "name": email}, "role": role, "project": "alpha", "namespaces": ["team"]})
            }
            _ => {
                json!({"subject": {"kind": "user", "name": email}, "role": role, "project": "alpha"})
            }
        };
        admin
            .post("/api/v1/bindings", binding)
            .await
            .assert_status(201);
        clients.push((*role, c));
    }

    let mut unexpected = Vec::new();
    let mut checked = 0;
    for case in cases() {
        for (role, c) in &clients {
            let expect_allow = case.allowed.contains(role);
            // Through the gate directly.
            if let Some(action) = case.gate {
                let uid = UserId::parse(
                    &c.get("/api/v1/me").await.json()["user"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
                .unwrap();
                let who = Principal {
                    user_id: uid,
                    email: role_email(role),
                    name: role.to_string(),
                    session_type: SessionType::Browser,
                    must_change_password: false,
                    must_enrol_mfa: false,
                    second_factor_at: None,
                    request: RequestMeta::default(),
                    api_key: None,
                };
                let allowed = app
                    .services()
                    .policy
                    .authorize(&who, action())
                    .await
                    .is_ok();
                checked += 1;
                if allowed != expect_allow {
                    unexpected.push(format!(
                        "gate: {role} / {}: expected {expect_allow}, got {allowed}",
                        case.name
                    ));
                }
            }
            // Through the REST API.
            if !case.method.is_empty() {
                if case.method == "DELETE" && expect_allow {
                    admin
                        .post("/api/v1/projects", json!({"name": "scratch"}))
                        .await;
                }
                let status = call(c, case.method, case.path, (case.body)(role)).await;
                checked += 1;
                let allowed = (200..300).contains(&status);
                if status != 403 && !allowed {
                    unexpected.push(format!(
                        "REST: {role} / {}: unexpected status {status}",
                        case.name
                    ));
                } else if allowed != expect_allow {
                    unexpected.push(format!(
                        "REST: {role} / {}: expected {expect_allow}, got status {status}",
                        case.name
                    ));
                }
            }
        }
    }
    // A deactivated user holds nothing, whatever their bindings say.
    admin
        .patch(
            &format!("/api/v1/users/{}", role_email("ADMIN")),
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    let uid = UserId::parse(
        admin
            .get(&format!("/api/v1/users/{}", role_email("ADMIN")))
            .await
            .json()["user"]["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    for case in cases() {
        if let Some(action) = case.gate {
            let who = Principal {
                user_id: uid,
                email: role_email("ADMIN"),
                name: "ADMIN".into(),
                session_type: SessionType::Browser,
                must_change_password: false,
                must_enrol_mfa: false,
                second_factor_at: None,
                request: RequestMeta::default(),
                api_key: None,
            };
            checked += 1;
            if app
                .services()
                .policy
                .authorize(&who, action())
                .await
                .is_ok()
            {
                unexpected.push(format!("gate: deactivated ADMIN / {}: allowed", case.name));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} unexpected decisions:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(checked >= 200, "only {checked} cases");
    eprintln!("authorization matrix: {checked} cases checked");
}

// ---- the same gate for Kubernetes ----------------------------------------------------------

/// (name, kubectl arguments, the gate's intent, roles the gate lets through, roles that succeed
/// end to end through the gateway and the cluster's RBAC Warden set up).
struct KubeCase {
    name: &'static str,
    args: &'static [&'static str],
    intent: fn() -> KubeIntent,
    gate: &'static [&'static str],
    kubectl: &'static [&'static str],
}

const FULL: &[&str] = &["ADMIN", "PROJECT_ADMIN", "CLUSTER_ADMIN"];
const CLUSTER_READERS: &[&str] = &[
    "ADMIN",
    "ADMIN_READ_ONLY",
    "PROJECT_ADMIN",
    "PROJECT_READ_ONLY",
    "CLUSTER_ADMIN",
];
const TEAM_WRITERS: &[&str] = &["ADMIN", "PROJECT_ADMIN", "CLUSTER_ADMIN", "NAMESPACE_ADMIN"];

fn intent(verb: &str, resource: &str, ns: Option<&str>) -> KubeIntent {
    KubeIntent {
        verb: verb.into(),
        resource: Some(resource.into()),
        namespace: ns.map(str::to_owned),
        resource_request: true,
        secrets: resource == "secrets",
        ..KubeIntent::default()
    }
}

fn kube_cases() -> Vec<KubeCase> {
    vec![
        KubeCase {
            name: "list pods in the granted namespace",
            args: &["get", "pods", "-n", "team"],
            intent: || intent("list", "pods", Some("team")),
            gate: ALL,
            kubectl: ALL,
        },
        KubeCase {
            name: "list pods in another namespace",
            args: &["get", "pods", "-n", "other"],
            intent: || intent("list", "pods", Some("other")),
            gate: CLUSTER_READERS,
            kubectl: CLUSTER_READERS,
        },
        KubeCase {
            name: "list nodes (cluster-scoped read: the cluster's RBAC answers)",
            args: &["get", "nodes"],
            intent: || intent("list", "nodes", None),
            gate: ALL,
            kubectl: CLUSTER_READERS,
        },
        KubeCase {
            name: "create a configmap in the granted namespace",
            args: &["create", "configmap", "m-ROLE", "-n", "team"],
            intent: || intent("create", "configmaps", Some("team")),
            gate: TEAM_WRITERS,
            kubectl: TEAM_WRITERS,
        },
        KubeCase {
            name: "create a configmap in another namespace",
            args: &["create", "configmap", "m-ROLE", "-n", "other"],
            intent: || intent("create", "configmaps", Some("other")),
            gate: FULL,
            kubectl: FULL,
        },
        KubeCase {
            name: "list secrets in the granted namespace",
            args: &["get", "secrets", "-n", "team"],
            intent: || intent("list", "secrets", Some("team")),
            gate: TEAM_WRITERS,
            kubectl: TEAM_WRITERS,
        },
        KubeCase {
            name: "exec into a pod of the granted namespace",
            args: &["exec", "-n", "team", "box", "--", "echo", "hi"],
            intent: || KubeIntent::pod_exec("team"),
            gate: TEAM_WRITERS,
            kubectl: TEAM_WRITERS,
        },
        KubeCase {
            name: "label the granted Namespace object",
            args: &["label", "namespace", "team", "ROLE=yes"],
            intent: || intent("patch", "namespaces", Some("team")),
            gate: FULL,
            kubectl: FULL,
        },
        KubeCase {
            name: "create a namespace",
            args: &["create", "namespace", "n-ROLE"],
            intent: || intent("create", "namespaces", None),
            gate: FULL,
            kubectl: FULL,
        },
        KubeCase {
            name: "create a cluster role binding",
            args: &[
                "create",
                "clusterrolebinding",
                "crb-ROLE",
                "--clusterrole=cluster-admin",
                "--user=ROLE",
            ],
            intent: || intent("create", "clusterrolebindings", None),
            gate: FULL,
            kubectl: FULL,
        },
    ]
}

/// Every built-in role x Kubernetes requests inside and outside its grant, on a cluster of
/// project `alpha` (and, through the gate, one of `beta`): what the gate decides, and what the
/// real kubectl gets through the gateway and a real agent's tunnel. Zero unexpected allows.
#[tokio::test]
async fn kube_authorization_matrix() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["alpha", "beta"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _agent) = app
        .cluster_with_agent(
            &admin,
            dir.path(),
            "alpha-1",
            "alpha",
            &[],
            &["team", "other"],
        )
        .await;
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box", "namespace": "team"},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 3600"]}]}}))
        .expect("pod");
    let policy = &app.services().policy;
    let alpha = KubeCluster {
        id: warden_domain::ids::ClusterId::new(),
        name: "alpha-1".into(),
        owner: "alpha".into(),
        shared_with: vec![],
        status: warden_domain::dto::ClusterStatus::Connected,
    };
    let beta = KubeCluster {
        name: "beta-1".into(),
        owner: "beta".into(),
        ..alpha.clone()
    };

    let mut users = Vec::new();
    for role in ROLES {
        let email = role_email(role);
        let c = app.user_client(&admin, &email).await;
        match *role {
            "ADMIN" | "ADMIN_READ_ONLY" => {
                admin
                    .post(
                        "/api/v1/bindings",
                        json!({"subject": {"kind": "user", "name": email}, "role": role}),
                    )
                    .await
                    .assert_status(201);
            }
            "NAMESPACE_ADMIN" | "NAMESPACE_READ_ONLY" => {
                admin.bind_user(&email, role, "alpha", &["team"]).await;
            }
            _ => {
                admin.bind_user(&email, role, "alpha", &[]).await;
            }
        }
        let uid = UserId::parse(
            c.get("/api/v1/me").await.json()["user"]["id"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let kubeconfig = c.get("/api/v1/kubeconfig").await.assert_status(200).body;
        let kubectl = Kubectl::new(&dir.path().join(role.to_lowercase()), &kubeconfig);
        users.push((*role, email, uid, kubectl));
    }

    let mut unexpected = Vec::new();
    let mut checked = 0;
    for case in kube_cases() {
        for (role, email, uid, kubectl) in &users {
            // The gate, directly.
            let gate = policy
                .admit_kube(*uid, email, &alpha, &(case.intent)(), KubeRules::default())
                .await
                .expect("gate");
            if gate.is_ok() != case.gate.contains(role) {
                unexpected.push(format!(
                    "gate: {role} / {}: got {}",
                    case.name,
                    if gate.is_ok() { "allow" } else { "deny" }
                ));
            }
            // The real kubectl through the gateway, the tunnel and the cluster's RBAC.
            let args: Vec<String> = case
                .args
                .iter()
                .map(|a| a.replace("ROLE", &role.to_lowercase().replace('_', "-")))
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kubectl.run(&args).await;
            if out.ok() != case.kubectl.contains(role) {
                unexpected.push(format!(
                    "kubectl: {role} / {}: exit {} {}",
                    case.name, out.code, out.stderr
                ));
            }
            if !out.ok() {
                assert!(
                    out.stderr.to_lowercase().contains("forbidden"),
                    "{role} / {}: a refusal is a Forbidden: {}",
                    case.name,
                    out.stderr
                );
            }
            checked += 2;
        }
    }
    // A cluster of a project the project-scoped roles have no part in: only the organization's.
    for (role, email, uid, _) in &users {
        for intent in [intent("list", "pods", Some("team")), KubeIntent::shell()] {
            let gate = policy
                .admit_kube(*uid, email, &beta, &intent, KubeRules::default())
                .await
                .expect("gate");
            if gate.is_ok() != ["ADMIN", "ADMIN_READ_ONLY"].contains(role) {
                unexpected.push(format!("gate: {role} / beta-1 {intent:?}"));
            }
            checked += 1;
        }
    }
    assert!(
        unexpected.is_empty(),
        "unexpected decisions:\n{}",
        unexpected.join("\n")
    );
    assert_eq!(checked, ROLES.len() * (kube_cases().len() * 2 + 2));
}
