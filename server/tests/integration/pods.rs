//! The pod picker's reads (`GET /api/v1/clusters/{name}/namespaces` and `.../pods`), through a
//! real agent's tunnel: listed on the cluster as the caller's own service account, a clear 403
//! (audited) outside their namespaces, read-only access listed without exec, and the console's
//! cluster page offering "Exec" only where the caller may exec.

use serde_json::{json, Value};
use warden_server::gateway::testkit::{Kubectl, RunningAgent};
use warden_server::testing::{Client, TestApp};

const PROD: &str = "prod-1";

struct World {
    app: TestApp,
    admin: Client,
    _sim: kubesim::KubeSim,
    _dir: tempfile::TempDir,
    _agent: RunningAgent,
}

fn pod(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n  - name: side\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n")
}

async fn world() -> World {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["production", "dev"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, agent) = app
        .cluster_with_agent(
            &admin,
            dir.path(),
            PROD,
            "production",
            &["dev"],
            &["apple", "banana"],
        )
        .await;
    let ops = Kubectl::new(&dir.path().join("ops"), &sim.admin_kubeconfig());
    for (ns, name) in [("apple", "box"), ("banana", "crate")] {
        ops.run_with_stdin(&["apply", "-n", ns, "-f", "-"], Some(&pod(name)))
            .await
            .expect_ok();
    }
    for email in [
        "sally@example.com",
        "rita@example.com",
        "audrey@example.com",
        "nora@example.com",
    ] {
        let _ = app.user_client(&admin, email).await;
    }
    admin
        .bind_user("sally@example.com", "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    admin
        .bind_user("rita@example.com", "NAMESPACE_READ_ONLY", "dev", &["apple"])
        .await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "audrey@example.com"}, "role": "ADMIN_READ_ONLY", "project": null}),
        )
        .await
        .assert_status(201);
    World {
        app,
        admin,
        _sim: sim,
        _dir: dir,
        _agent: agent,
    }
}

impl World {
    async fn signed_in(&self, email: &str) -> Client {
        let c = self.app.client();
        c.login(email, warden_server::testing::USER_PASSWORD)
            .await
            .assert_status(200);
        c
    }
}

fn names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_are_listed_as_the_user_and_refused_outside_their_namespaces() {
    let w = world().await;
    let sally = w.signed_in("sally@example.com").await;
    let pods = |ns: &str| format!("/api/v1/clusters/{PROD}/pods?namespace={ns}");

    // Namespace A (granted): its pods, with their containers, and exec allowed.
    let a = sally.get(&pods("apple")).await.assert_status(200).json();
    assert_eq!(a["cluster"], PROD);
    assert_eq!(a["namespace"], "apple");
    assert_eq!(a["can_exec"], true);
    assert_eq!(names(&a), vec!["box"]);
    assert_eq!(a["items"][0]["containers"], json!(["main", "side"]));
    assert_eq!(a["items"][0]["phase"], "Running");

    // Namespace B (not granted): a clear 403, and the refusal is audited.
    let b = sally.get(&pods("banana")).await.assert_status(403);
    assert_eq!(b.error_code(), "forbidden");
    let message = b.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!("sally@example.com cannot list pods in namespace banana of cluster {PROD}: Warden grants you write in namespace apple (project dev). Ask a project administrator of dev for more (or request it: ")),
        "{message}"
    );
    // The way out: a pre-filled access request for that namespace.
    assert!(
        message.ends_with(&format!(
            "/access?project=dev&cluster={PROD}&namespaces=banana&role=NAMESPACE_READ_ONLY)"
        )),
        "{message}"
    );
    // Her namespaces: only what Warden grants her (she may not list the cluster's).
    let ns = sally
        .get(&format!("/api/v1/clusters/{PROD}/namespaces"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(names(&ns), vec!["apple"]);
    assert_eq!(ns["items"][0]["can_exec"], true);
    assert_eq!(ns["cluster_wide"], false);

    // Someone without kubectl access to the cluster, an unknown cluster, a bad name. The first
    // two are told the same: cluster names and their projects cannot be enumerated.
    let nora = w.signed_in("nora@example.com").await;
    let r = nora.get(&pods("apple")).await.assert_status(403);
    let told = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        told.contains(&format!("no kubectl access to a cluster named {PROD}")),
        "{told}"
    );
    assert!(!told.contains("project="), "{told}");
    let unknown = nora
        .get("/api/v1/clusters/nowhere/pods?namespace=apple")
        .await
        .assert_status(403)
        .json();
    assert_eq!(
        unknown["error"]["message"].as_str().unwrap(),
        told.replace(PROD, "nowhere"),
    );
    sally
        .get("/api/v1/clusters/nowhere/pods?namespace=apple")
        .await
        .assert_status(403);
    sally.get(&pods("Bad_Name")).await.assert_status(422);
    sally
        .get(&format!("/api/v1/clusters/{PROD}/pods"))
        .await
        .assert_status(422);
    w.app.client().get(&pods("apple")).await.assert_status(401);

    let events = w
        .admin
        .get("/api/v1/audit/events?action=pods.list&outcome=denied&limit=50")
        .await
        .assert_status(200)
        .json();
    let items = events["items"].as_array().unwrap();
    assert!(
        items.iter().any(|e| e["actor"] == "sally@example.com"
            && e["namespace"] == "banana"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot list pods in namespace banana"))),
        "{items:#?}"
    );

    // Documented in the OpenAPI document.
    let doc = w
        .admin
        .get("/api/v1/openapi.json")
        .await
        .assert_status(200)
        .json();
    assert!(
        doc["paths"]["/api/v1/clusters/{name}/pods"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_users_see_pods_but_are_never_offered_exec() {
    let w = world().await;

    // A namespace reader: apple's pods, no exec.
    let rita = w.signed_in("rita@example.com").await;
    let a = rita
        .get(&format!("/api/v1/clusters/{PROD}/pods?namespace=apple"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(names(&a), vec!["box"]);
    assert_eq!(a["can_exec"], false);
    rita.get(&format!("/api/v1/clusters/{PROD}/pods?namespace=banana"))
        .await
        .assert_status(403);

    // The organization's auditor: every namespace, read-only.
    let audrey = w.signed_in("audrey@example.com").await;
    let ns = audrey
        .get(&format!("/api/v1/clusters/{PROD}/namespaces"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(ns["cluster_wide"], true);
    let listed = names(&ns);
    assert!(
        listed.contains(&"apple".to_owned()) && listed.contains(&"banana".to_owned()),
        "{listed:?}"
    );
    assert!(ns["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["can_exec"] == false));
    let b = audrey
        .get(&format!("/api/v1/clusters/{PROD}/pods?namespace=banana"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(names(&b), vec!["crate"]);
    assert_eq!(b["can_exec"], false);

    // The console's cluster page (server-rendered): Exec for the namespace admin only.
    let sally = w.signed_in("sally@example.com").await;
    let page = sally
        .get(&format!("/clusters/{PROD}?namespace=apple"))
        .await
        .assert_status(200)
        .body;
    assert!(page.contains("data-testid=\"pod-row-box\""), "{page}");
    assert!(page.contains("data-testid=\"exec-box\""), "{page}");
    assert!(
        page.contains("data-testid=\"container-box\""),
        "a container picker: {page}"
    );
    for (who, ns, pod) in [(&rita, "apple", "box"), (&audrey, "banana", "crate")] {
        let page = who
            .get(&format!("/clusters/{PROD}?namespace={ns}"))
            .await
            .assert_status(200)
            .body;
        assert!(
            page.contains(&format!("data-testid=\"pod-row-{pod}\"")),
            "{page}"
        );
        assert!(
            !page.contains("data-testid=\"exec-"),
            "no exec for read-only: {page}"
        );
        assert!(
            page.contains("read-only access never allows exec"),
            "{page}"
        );
    }
    // And the exec itself is refused to read-only users whatever the page shows (the
    // terminal's own tests cover the WebSocket).
}
