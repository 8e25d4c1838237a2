//! Clusters and their agents: REST CRUD and permissions; the one-time bootstrap and every way
//! it is refused; the tunnel against kubesim (many concurrent requests, a watch, an exec
//! upgrade, two clusters side by side); faults (agent killed and restarted, Warden restarted, a
//! tunnel lost mid-request).
//!
//! Agents run in process (`warden_agent::Agent`, exactly what the binary runs) with a short
//! heartbeat (200 ms) and timeout (2 s) configured on Warden.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, AttachParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use warden_agent::{Agent, AgentError, Options, Store};
use warden_server::testing::{Client, TestApp, USER_PASSWORD};

const HEARTBEAT_MS: &str = "200";
/// The password `TestApp::with_admin` leaves the first administrator with.
const ADMIN_NEW_PASSWORD: &str = "the admin's new password";
const TIMEOUT_MS: &str = "2000";

fn fast_env(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = BTreeMap::from([
        (
            "WARDEN_AGENT_HEARTBEAT_MS".to_owned(),
            HEARTBEAT_MS.to_owned(),
        ),
        ("WARDEN_AGENT_TIMEOUT_MS".to_owned(), TIMEOUT_MS.to_owned()),
    ]);
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

async fn app() -> (TestApp, Client) {
    TestApp::spawn_with(fast_env(&[])).await.with_admin().await
}

/// A simulated cluster with an admin kubeconfig on disk.
struct Sim {
    sim: kubesim::KubeSim,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Sim {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = kubesim::KubeSim::start().await.expect("kubesim");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        sim.write_admin_kubeconfig(&kubeconfig).expect("kubeconfig");
        Sim {
            sim,
            dir,
            kubeconfig,
        }
    }

    async fn kube(&self) -> kube::Client {
        warden_agent::kube_client(Some(&self.kubeconfig), None)
            .await
            .expect("kube client")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// An agent running in this process, as `warden-agent --kubeconfig --manifest` runs it.
struct RunningAgent {
    handle: tokio::task::JoinHandle<Result<(), AgentError>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningAgent {
    async fn start(kubeconfig: &Path, manifest: &Path) -> Self {
        let kube = warden_agent::kube_clients(Some(kubeconfig), None)
            .await
            .expect("kube client");
        let opts = Options {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            drain_timeout: Duration::from_secs(3),
            stable_after: Duration::from_secs(1),
            ..Default::default()
        };
        let agent = Agent::new(kube, Store::file(manifest, None), opts);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(agent.run(async move {
            let _ = rx.await;
        }));
        RunningAgent {
            handle,
            stop: Some(tx),
        }
    }

    /// Kill it: no goodbye, the connection just drops.
    fn kill(self) {
        self.handle.abort();
    }

    /// Ask it to drain and stop.
    async fn stop(mut self) -> Result<(), AgentError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the agent stops")
            .expect("join")
    }

    /// Wait for it to end on its own (a refusal).
    async fn outcome(self) -> Result<(), AgentError> {
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the agent ends by itself")
            .expect("join")
    }
}

/// Import a cluster and fetch its manifest through the one-time URL (no session).
async fn import(admin: &Client, name: &str, project: &str) -> (Value, String) {
    let created = admin
        .post(
            "/api/v1/clusters",
            json!({"name": name, "project": project}),
        )
        .await
        .assert_status(201)
        .json();
    let url = created["manifest_url"]
        .as_str()
        .expect("manifest_url")
        .to_owned();
    let yaml = reqwest::get(&url)
        .await
        .expect("download")
        .text()
        .await
        .expect("text");
    assert!(yaml.contains("kind: Secret"), "{yaml}");
    (created, yaml)
}

async fn wait_for<F: Fn(&Value) -> bool>(
    admin: &Client,
    name: &str,
    what: &str,
    f: F,
    within: Duration,
) -> Value {
    let start = Instant::now();
    loop {
        let c = admin.get(&format!("/api/v1/clusters/{name}")).await.json();
        if f(&c) {
            return c;
        }
        assert!(
            start.elapsed() < within,
            "cluster {name} did not become {what} within {within:?}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_status(admin: &Client, name: &str, status: &str, within: Duration) -> Value {
    wait_for(admin, name, status, |c| c["status"] == status, within).await
}

/// A cluster imported, its agent started and connected with a first heartbeat.
async fn connected(app: &TestApp, admin: &Client, sim: &Sim, name: &str) -> RunningAgent {
    let (_, yaml) = import(admin, name, "default").await;
    let manifest = sim.write(&format!("{name}.yaml"), &yaml);
    let agent = RunningAgent::start(&sim.kubeconfig, &manifest).await;
    wait_for(
        admin,
        name,
        "connected with facts",
        |c| c["status"] == "connected" && c["last_seen"].is_string(),
        Duration::from_secs(10),
    )
    .await;
    assert!(app.state.clusters.is_connected(name));
    agent
}

async fn audit(admin: &Client, query: &str) -> Vec<Value> {
    admin
        .get(&format!("/api/v1/audit/events?{query}&limit=200"))
        .await
        .assert_status(200)
        .json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

// ---- REST ----

#[tokio::test]
async fn clusters_crud_validation_filters_and_audit() {
    let (_app, admin) = app().await;
    admin
        .post("/api/v1/projects", json!({"name": "prod"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/projects", json!({"name": "qa"}))
        .await
        .assert_status(201);
    let r = admin
        .post("/api/v1/clusters", json!({"name": "eu-1", "project": "prod", "description": "Frankfurt", "labels": {"env": "prod", "region": "eu"}, "shared_with": ["qa"]}))
        .await
        .assert_status(201)
        .json();
    assert_eq!(r["name"], "eu-1");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["project"], "prod");
    assert_eq!(r["shared_with"], json!(["qa"]));
    assert!(r["last_seen"].is_null() && r["kubernetes_version"].is_null());
    let manifest_url = r["manifest_url"].as_str().unwrap().to_owned();
    assert!(manifest_url.contains("/agent/v1/manifests/"));
    // The link's token is a credential: downloading it leaves no trace of it in the audit log.
    let token = manifest_url
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".yaml")
        .to_owned();
    reqwest::get(&manifest_url).await.unwrap();
    let events = admin
        .get("/api/v1/audit/events?limit=50")
        .await
        .json()
        .to_string();
    assert!(events.contains("agent.manifest_download"), "{events}");
    assert!(
        !events.contains(&token),
        "the manifest token is in the audit log"
    );
    assert!(r["apply_command"]
        .as_str()
        .unwrap()
        .starts_with("kubectl apply -f http"));

    let e = admin
        .post(
            "/api/v1/clusters",
            json!({"name": "eu-1", "project": "prod"}),
        )
        .await
        .assert_status(409)
        .json();
    assert_eq!(
        e["error"]["fields"]["name"],
        "a cluster with this name already exists"
    );
    let e = admin
        .post(
            "/api/v1/clusters",
            json!({"name": "EU_1", "project": "nope", "labels": {"bad key!": "x"}}),
        )
        .await
        .assert_status(422)
        .json();
    let f = &e["error"]["fields"];
    assert!(f["name"].as_str().unwrap().contains("DNS-1123"), "{f}");
    assert!(f["project"].is_string() && f["labels"].is_string(), "{f}");
    let e = admin
        .post(
            "/api/v1/clusters",
            json!({"name": "x", "project": "prod", "proxy": {"https_proxy": "socks5://p"}}),
        )
        .await
        .assert_status(422)
        .json();
    assert!(e["error"]["fields"]["proxy.https_proxy"].is_string());
    admin.post("/api/v1/clusters", json!({"name": "us-1", "project": "default", "labels": {"env": "dev"}, "proxy": {"https_proxy": "http://user:secret@proxy:3128"}})).await.assert_status(201);

    let names = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            &admin
                .get("/api/v1/clusters")
                .await
                .assert_status(200)
                .json()
        ),
        ["eu-1", "us-1"]
    );
    assert_eq!(
        names(&admin.get("/api/v1/clusters?label=env%3Dprod").await.json()),
        ["eu-1"]
    );
    assert_eq!(
        names(&admin.get("/api/v1/clusters?label=region").await.json()),
        ["eu-1"]
    );
    assert_eq!(
        names(&admin.get("/api/v1/clusters?project=qa").await.json()),
        ["eu-1"]
    );
    assert_eq!(
        names(
            &admin
                .get("/api/v1/clusters?status=pending&q=frank")
                .await
                .json()
        ),
        ["eu-1"]
    );
    assert!(names(&admin.get("/api/v1/clusters?status=connected").await.json()).is_empty());
    // A status that does not exist is a mistake, not an empty list.
    let bad = admin
        .get("/api/v1/clusters?status=up")
        .await
        .assert_status(422);
    assert!(bad.body.contains("status"), "{}", bad.body);
    let said = bad.json()["error"]["fields"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(said.contains("`up`"), "{}", bad.body);
    // Empty is "any" (a filter form's first choice), not a mistake.
    assert_eq!(
        names(&admin.get("/api/v1/clusters?status=&q=frank").await.json()),
        names(&admin.get("/api/v1/clusters?q=frank").await.json())
    );
    // Proxy passwords are not shown back.
    let us = admin
        .get("/api/v1/clusters/us-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(us["proxy"]["https_proxy"], "http://user:***@proxy:3128");
    assert!(us["cleanup_command"]
        .as_str()
        .unwrap()
        .contains("kubectl delete namespace warden-system"));

    let r = admin
        .patch(
            "/api/v1/clusters/eu-1",
            json!({"description": "Frankfurt DC", "labels": {"env": "prod"}, "shared_with": []}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(r["description"], "Frankfurt DC");
    assert_eq!(r["labels"], json!({"env": "prod"}));
    assert_eq!(r["shared_with"], json!([]));
    // Renamed (a DNS-1123 label, unique), and back.
    let e = admin
        .patch("/api/v1/clusters/eu-1", json!({"name": "EU_2"}))
        .await
        .assert_status(422)
        .json();
    assert!(e["error"]["fields"]["name"].is_string(), "{e}");
    admin
        .patch("/api/v1/clusters/eu-1", json!({"name": "us-1"}))
        .await
        .assert_status(409);
    let r = admin
        .patch("/api/v1/clusters/eu-1", json!({"name": "eu-2"}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(r["name"], "eu-2");
    assert_eq!(r["description"], "Frankfurt DC");
    admin.get("/api/v1/clusters/eu-1").await.assert_status(404);
    admin
        .patch("/api/v1/clusters/eu-2", json!({"name": "eu-1"}))
        .await
        .assert_status(200);
    admin.get("/api/v1/clusters/nope").await.assert_status(404);

    // A project with clusters cannot be deleted.
    let e = admin
        .delete("/api/v1/projects/prod")
        .await
        .assert_status(409)
        .json();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("eu-1"),
        "{e}"
    );
    admin
        .delete("/api/v1/clusters/eu-1")
        .await
        .assert_status(204);
    admin.get("/api/v1/clusters/eu-1").await.assert_status(404);
    admin
        .delete("/api/v1/projects/prod")
        .await
        .assert_status(204);

    let actions: Vec<String> = audit(&admin, "kind=console&action=cluster.")
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for a in ["cluster.create", "cluster.update", "cluster.delete"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    let del = audit(&admin, "action=cluster.delete").await;
    assert_eq!(del[0]["cluster"], "eu-1");
    assert_eq!(del[0]["project"], "prod");
}

/// A project's auditor reads its cluster's changes in the log, but not the names of the other
/// projects the cluster is shared with (its page hides them too): not in the list, an event's
/// detail or the export. A cluster moved away is in the log of the
/// project it left as well.
#[tokio::test]
async fn a_project_auditor_reads_no_other_projects_names_in_cluster_events() {
    let (app, admin) = app().await;
    for p in ["team-a", "team-b", "hidden-merger"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "a1", "project": "team-a"}),
        )
        .await
        .assert_status(201);
    admin
        .patch(
            "/api/v1/clusters/a1",
            json!({"shared_with": ["team-b", "hidden-merger"]}),
        )
        .await
        .assert_status(200);
    let auditor = app.user_client(&admin, "auditor@example.com").await;
    admin
        .bind_user("auditor@example.com", "PROJECT_READ_ONLY", "team-a", &[])
        .await;
    let secret = "hidden-merger";
    // The organization's log keeps every share.
    let full = audit(&admin, "action=cluster.update").await;
    assert!(full[0].to_string().contains(secret), "{full:?}");
    let seen = audit(&auditor, "action=cluster.update").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0]["details"]["after"]["shared_with"],
        json!([]),
        "{seen:?}"
    );
    assert!(!seen[0].to_string().contains(secret));
    let id = seen[0]["id"].as_str().unwrap();
    let detail = auditor
        .get(&format!("/api/v1/audit/events/{id}"))
        .await
        .assert_status(200)
        .body;
    assert!(detail.contains("\"shared_with\""), "{detail}");
    assert!(!detail.contains(secret), "{detail}");
    let export = auditor
        .get("/api/v1/audit/export?format=ndjson&action=cluster.update")
        .await
        .assert_status(200)
        .body;
    assert!(export.contains("\"shared_with\""), "{export}");
    assert!(!export.contains(secret), "{export}");
    // A reader of both projects sees both names.
    admin
        .bind_user("auditor@example.com", "PROJECT_READ_ONLY", "team-b", &[])
        .await;
    let seen = audit(&auditor, "action=cluster.update").await;
    assert_eq!(
        seen[0]["details"]["after"]["shared_with"],
        json!(["team-b"]),
        "{seen:?}"
    );

    // Moved to team-b: team-a's log has it.
    let only_a = app.user_client(&admin, "only-a@example.com").await;
    admin
        .bind_user("only-a@example.com", "PROJECT_READ_ONLY", "team-a", &[])
        .await;
    admin
        .patch("/api/v1/clusters/a1", json!({"project": "team-b"}))
        .await
        .assert_status(200);
    let seen = audit(&only_a, "action=cluster.update").await;
    assert_eq!(
        seen.len(),
        2,
        "the move is in the log of the project it left: {seen:?}"
    );
    assert_eq!(seen[0]["project"], "team-a");
    assert_eq!(seen[0]["details"]["after"]["project"], "team-b", "{seen:?}");
    assert!(
        !seen.iter().any(|e| e.to_string().contains(secret)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn cluster_permissions_follow_the_project_and_sharing() {
    let (app, admin) = app().await;
    for p in ["team-a", "team-b", "team-c"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "a1", "project": "team-a", "shared_with": ["team-b"]}),
        )
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "c1", "project": "team-c"}),
        )
        .await
        .assert_status(201);

    let writer = app.user_client(&admin, "writer@example.com").await;
    let reader = app.user_client(&admin, "reader@example.com").await;
    let nobody = app.user_client(&admin, "nobody@example.com").await;
    admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "writer@example.com"}, "role": "PROJECT_ADMIN", "project": "team-a"})).await.assert_status(201);
    admin.post("/api/v1/bindings", json!({"subject": {"kind": "user", "name": "reader@example.com"}, "role": "PROJECT_READ_ONLY", "project": "team-b"})).await.assert_status(201);

    let names = |v: Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            writer
                .get("/api/v1/clusters")
                .await
                .assert_status(200)
                .json()
        ),
        ["a1"]
    );
    // Shared into team-b: its readers see it.
    assert_eq!(
        names(
            reader
                .get("/api/v1/clusters")
                .await
                .assert_status(200)
                .json()
        ),
        ["a1"]
    );
    reader.get("/api/v1/clusters/a1").await.assert_status(200);
    assert!(names(
        nobody
            .get("/api/v1/clusters")
            .await
            .assert_status(200)
            .json()
    )
    .is_empty());

    // Writes need cluster.write on the owning project.
    writer
        .patch("/api/v1/clusters/a1", json!({"description": "mine"}))
        .await
        .assert_status(200);
    writer
        .post(
            "/api/v1/clusters",
            json!({"name": "a2", "project": "team-a"}),
        )
        .await
        .assert_status(201);
    writer
        .get("/api/v1/clusters/a1/manifest")
        .await
        .assert_status(200);
    writer
        .post(
            "/api/v1/clusters",
            json!({"name": "c2", "project": "team-c"}),
        )
        .await
        .assert_status(403);
    writer.get("/api/v1/clusters/c1").await.assert_status(403);
    reader
        .patch("/api/v1/clusters/a1", json!({"description": "theirs"}))
        .await
        .assert_status(403);
    reader
        .get("/api/v1/clusters/a1/manifest")
        .await
        .assert_status(403);
    reader
        .delete("/api/v1/clusters/a1")
        .await
        .assert_status(403);
    nobody.get("/api/v1/clusters/a1").await.assert_status(403);
    // Unknown and invisible look the same to someone without organization-wide rights.
    nobody
        .get("/api/v1/clusters/does-not-exist")
        .await
        .assert_status(403);
    // Sharing into a project the caller cannot see is refused.
    writer
        .patch("/api/v1/clusters/a1", json!({"shared_with": ["team-c"]}))
        .await
        .assert_status(422);

    let denied = audit(&admin, "outcome=denied&action=authorize:cluster").await;
    assert!(denied.len() >= 4, "denials are audited: {denied:?}");
    let _ = USER_PASSWORD;
}

#[tokio::test]
async fn manifest_url_is_one_time_expiring_and_needs_no_session() {
    let (app, admin) = app().await;
    let created = admin
        .post(
            "/api/v1/clusters",
            json!({"name": "edge", "project": "default"}),
        )
        .await
        .assert_status(201)
        .json();
    let url = created["manifest_url"].as_str().unwrap().to_owned();
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("yaml"));
    let yaml = r.text().await.unwrap();
    let settings = warden_agent::Settings::from_manifest(&yaml).expect("the manifest's Secret");
    assert_eq!(settings.cluster, "edge");
    assert_eq!(settings.warden_url, app.url);
    assert!(settings.bootstrap_token.unwrap().starts_with("wdb_"));
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "Deployment",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(
            yaml.contains(&format!("\nkind: {kind}\n")),
            "{kind} missing"
        );
    }
    // Ten objects and the pod template.
    assert_eq!(
        yaml.matches("app.kubernetes.io/managed-by: warden").count(),
        11
    );

    // Used once: gone.
    let again = reqwest::get(&url).await.unwrap();
    assert_eq!(again.status(), 410);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gone");
    assert_eq!(
        reqwest::get(format!("{}/agent/v1/manifests/nonsense", app.url))
            .await
            .unwrap()
            .status(),
        404
    );

    // Expired after an hour.
    let fresh = admin
        .post("/api/v1/clusters/edge/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();
    assert!(fresh["manifest"]
        .as_str()
        .unwrap()
        .contains("WARDEN_BOOTSTRAP_TOKEN"));
    app.clock.advance_secs(3601);
    assert_eq!(
        reqwest::get(fresh["manifest_url"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        410
    );
    // (The session idled out meanwhile.)
    admin
        .login(warden_server::testing::ADMIN_EMAIL, ADMIN_NEW_PASSWORD)
        .await
        .assert_status(200);

    // The signed-in manifest endpoint (cluster.write).
    let m = admin
        .get("/api/v1/clusters/edge/manifest")
        .await
        .assert_status(200);
    assert!(m.headers["content-type"].to_str().unwrap().contains("yaml"));
    assert!(m.body.contains("name: warden-agent"));
    let downloads = audit(&admin, "kind=agent&action=agent.manifest_download").await;
    assert_eq!(
        downloads
            .iter()
            .filter(|e| e["outcome"] == "allowed")
            .count(),
        1
    );
    assert_eq!(
        downloads
            .iter()
            .filter(|e| e["outcome"] == "denied")
            .count(),
        3
    );
}

// ---- bootstrap ----

#[tokio::test]
async fn an_agent_registers_reports_facts_and_reconnects_with_its_credential() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "alpha").await;
    let c = wait_for(
        &admin,
        "alpha",
        "reported facts",
        |c| c["node_count"] == 3,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(c["kubernetes_version"], "v1.32.0");
    assert_eq!(c["fingerprint"], sim.sim.kube_system_uid());
    assert!(c["registered_at"].is_string() && c["connected_at"].is_string());
    assert!(c["agent_version"].is_string());
    let ns: Vec<&str> = c["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        ns.contains(&"kube-system") && ns.contains(&"default"),
        "{ns:?}"
    );
    assert_eq!(c["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(c["history"][0]["status"], "connected");

    // The credential is kept next to the manifest; the bootstrap token is not used again.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(sim.dir.path().join("alpha.yaml.state.json")).unwrap(),
    )
    .unwrap();
    assert!(state["credential"].as_str().unwrap().starts_with("wdc_"));

    // A graceful stop drains and disconnects at once.
    agent.stop().await.expect("a clean stop");
    wait_status(&admin, "alpha", "disconnected", Duration::from_secs(5)).await;
    let again = RunningAgent::start(&sim.kubeconfig, &sim.dir.path().join("alpha.yaml")).await;
    wait_status(&admin, "alpha", "connected", Duration::from_secs(5)).await;
    // Agent events are written in the background: wait for the reconnection's.
    let count_in = |events: &[Value], action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = audit(&admin, "kind=agent").await;
        if (count_in(&events, "agent.connected", "allowed") >= 2
            && count_in(&events, "agent.disconnected", "allowed") >= 1)
            || std::time::Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let count = |action: &str, outcome: &str| count_in(&events, action, outcome);
    assert_eq!(count("agent.bootstrap", "allowed"), 1);
    assert_eq!(count("agent.connect", "allowed"), 1);
    assert!(
        count("agent.connected", "allowed") >= 2 && count("agent.disconnected", "allowed") >= 1
    );
    assert!(events.iter().all(|e| e["cluster"] == "alpha"));
    assert!(events
        .iter()
        .filter(|e| e["action"] != "agent.manifest_download")
        .all(|e| e["actor"] == "agent:alpha"));
    again.stop().await.unwrap();
}

#[tokio::test]
async fn bootstrap_refusals_are_final_audited_and_clear() {
    let (app, admin) = app().await;
    let first = Sim::start().await;
    let second = Sim::start().await;
    let agent = connected(&app, &admin, &first, "one").await;

    // 1. The same manifest on a second cluster: a different fingerprint.
    let manifest = first.dir.path().join("one.yaml");
    let copy = second.write("one.yaml", &std::fs::read_to_string(&manifest).unwrap());
    let e = RunningAgent::start(&second.kubeconfig, &copy)
        .await
        .outcome()
        .await
        .unwrap_err();
    let AgentError::Refused { code, message } = e else {
        panic!("{e}")
    };
    assert_eq!(code, "fingerprint_mismatch");
    assert!(
        message.contains("already registered from another Kubernetes cluster"),
        "{message}"
    );

    // 2. The used token again, from the right cluster but without the credential.
    let reuse = first.write("reuse.yaml", &std::fs::read_to_string(&manifest).unwrap());
    let AgentError::Refused { code, message } = RunningAgent::start(&first.kubeconfig, &reuse)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "token_used");
    assert!(message.contains("already used"), "{message}");

    // 3. An expired token.
    let (_, yaml) = import(&admin, "late", "default").await;
    app.clock.advance_secs(25 * 3600);
    admin
        .login(warden_server::testing::ADMIN_EMAIL, ADMIN_NEW_PASSWORD)
        .await
        .assert_status(200);
    let late = second.write("late.yaml", &yaml);
    let AgentError::Refused { code, .. } = RunningAgent::start(&second.kubeconfig, &late)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "token_expired");

    // 4. A deleted cluster: its tunnel closes at once and its credential is refused.
    admin
        .delete("/api/v1/clusters/one")
        .await
        .assert_status(204);
    let ended = agent.outcome().await.unwrap_err();
    let AgentError::Refused { code, message } = ended else {
        panic!()
    };
    assert_eq!(code, "cluster_deleted");
    assert!(
        message.contains("kubectl delete namespace warden-system"),
        "{message}"
    );
    assert!(!app.state.clusters.is_connected("one"));
    let AgentError::Refused { code, .. } = RunningAgent::start(&first.kubeconfig, &manifest)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "cluster_deleted");

    let denied = audit(&admin, "kind=agent&outcome=denied").await;
    for code in [
        "fingerprint_mismatch",
        "token_used",
        "token_expired",
        "cluster_deleted",
    ] {
        assert!(
            denied
                .iter()
                .any(|e| e["reason"].as_str().unwrap_or_default().starts_with(code)),
            "{code} not audited: {denied:?}"
        );
    }
    // A bare WebSocket without credentials is refused before anything else.
    let r = reqwest::Client::new()
        .get(format!("{}/agent/v1/connect", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_new_manifest_re_registers_the_same_cluster() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "again").await;
    agent.kill();
    // Lost its state (a new Secret): a fresh manifest for the same cluster is accepted, and the
    // old credential stops working.
    let old_state = std::fs::read_to_string(sim.dir.path().join("again.yaml.state.json")).unwrap();
    let fresh = admin
        .post("/api/v1/clusters/again/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();
    let manifest = sim.write("fresh.yaml", fresh["manifest"].as_str().unwrap());
    let agent = RunningAgent::start(&sim.kubeconfig, &manifest).await;
    wait_status(&admin, "again", "connected", Duration::from_secs(5)).await;
    agent.stop().await.unwrap();
    std::fs::write(sim.dir.path().join("old.yaml.state.json"), old_state).unwrap();
    let old = sim.write(
        "old.yaml",
        &std::fs::read_to_string(sim.dir.path().join("again.yaml")).unwrap(),
    );
    let AgentError::Refused { code, .. } = RunningAgent::start(&sim.kubeconfig, &old)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    // The old credential is revoked (and the old manifest's token is used).
    assert_eq!(code, "credential_revoked");
    let denied = audit(&admin, "kind=agent&outcome=denied").await;
    assert!(
        denied
            .iter()
            .any(|e| e["reason"].as_str().unwrap().starts_with("token_used")),
        "{denied:?}"
    );
}

/// A credential (or the agent's key) may have leaked: an administrator of the cluster revokes
/// its agent. The tunnel closes at once, the agent is told, its credential is refused from then
/// on (at the challenge), a manifest downloaded before cannot register; a new manifest (with a
/// new key) connects the cluster again. Someone who may only use the cluster cannot revoke it.
#[tokio::test]
async fn an_administrator_revokes_a_clusters_agent_and_a_new_manifest_brings_it_back() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "leaky").await;
    let spare = admin
        .post("/api/v1/clusters/leaky/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();

    let nadia = app.user_client(&admin, "nadia@example.com").await;
    admin
        .bind_user(
            "nadia@example.com",
            "NAMESPACE_ADMIN",
            "default",
            &["apple"],
        )
        .await;
    nadia
        .post("/api/v1/clusters/leaky/agent/revoke", json!({}))
        .await
        .assert_status(403);
    assert!(app.state.clusters.is_connected("leaky"));

    admin
        .post("/api/v1/clusters/leaky/agent/revoke", json!({}))
        .await
        .assert_status(204);
    let AgentError::Refused { code, message } = agent.outcome().await.unwrap_err() else {
        panic!()
    };
    assert_eq!(code, "credential_revoked", "{message}");
    assert!(!app.state.clusters.is_connected("leaky"));
    wait_status(&admin, "leaky", "disconnected", Duration::from_secs(5)).await;
    // The same agent again (its stored credential): refused.
    let again = sim.dir.path().join("leaky.yaml");
    let AgentError::Refused { code, .. } = RunningAgent::start(&sim.kubeconfig, &again)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "credential_revoked");
    // A manifest downloaded before the revocation: expired.
    let before = sim.write("spare.yaml", spare["manifest"].as_str().unwrap());
    let AgentError::Refused { code, .. } = RunningAgent::start(&sim.kubeconfig, &before)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "token_expired");

    // A new manifest, a new agent (a new key): connected again.
    let fresh = admin
        .post("/api/v1/clusters/leaky/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();
    let manifest = sim.write("fresh.yaml", fresh["manifest"].as_str().unwrap());
    let agent = RunningAgent::start(&sim.kubeconfig, &manifest).await;
    wait_status(&admin, "leaky", "connected", Duration::from_secs(5)).await;
    let ev = audit(&admin, "action=cluster.agent_revoke").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["outcome"], "allowed");
    assert_eq!(ev[0]["details"]["credentials_revoked"], 1);
    assert!(
        ev[0]["details"]["manifests_expired"].as_u64().unwrap() >= 1,
        "{ev:?}"
    );
    agent.stop().await.unwrap();
}

// ---- the tunnel ----

#[tokio::test]
async fn two_hundred_concurrent_requests_of_mixed_sizes() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "busy").await;
    let direct: Api<ConfigMap> = Api::namespaced(sim.kube().await, "default");
    let sizes = [
        0usize,
        10,
        1_000,
        10_000,
        64 * 1024,
        100_000,
        300_000,
        700_000,
    ];
    for (i, n) in sizes.iter().enumerate() {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm-{i}")}, "data": {"blob": "x".repeat(*n)}}),
        )
        .unwrap();
        direct.create(&PostParams::default(), &cm).await.unwrap();
    }
    let client = app.state.clusters.client("busy").expect("a client");
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let started = Instant::now();
    let results = futures::future::join_all((0..200).map(|k| {
        let api = api.clone();
        let i = k % sizes.len();
        async move {
            let cm = api
                .get(&format!("cm-{i}"))
                .await
                .map_err(|e| format!("request {k}: {e}"))?;
            let len = cm
                .data
                .unwrap_or_default()
                .get("blob")
                .map(|b| b.len())
                .unwrap_or(0);
            if len == sizes[i] {
                Ok(())
            } else {
                Err(format!("request {k}: {len} bytes instead of {}", sizes[i]))
            }
        }
    }))
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    // Large writes go through too.
    let big: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "written"}, "data": {"blob": "y".repeat(500_000)}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &big).await.unwrap();
    assert_eq!(
        direct.get("written").await.unwrap().data.unwrap()["blob"].len(),
        500_000
    );
    eprintln!("200 requests through the tunnel in {:?}", started.elapsed());
    assert!(app.state.clusters.get("busy").unwrap().streams_opened() >= 200);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_watch_streams_through_the_tunnel() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "watched").await;
    let api: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("watched").unwrap(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let direct: Api<ConfigMap> = Api::namespaced(sim.kube().await, "default");
    let writer = tokio::spawn(async move {
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("w-{i}")}})).unwrap();
            direct.create(&PostParams::default(), &cm).await.unwrap();
        }
    });
    let mut seen = Vec::new();
    let started = Instant::now();
    while seen.len() < 6 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the watch goes on");
        if let WatchEvent::Added(cm) = ev {
            seen.push(cm.metadata.name.unwrap());
        }
    }
    assert_eq!(seen, (0..6).map(|i| format!("w-{i}")).collect::<Vec<_>>());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the watch streamed over time"
    );
    writer.await.unwrap();
    agent.stop().await.unwrap();
}

/// Security issue "Demo mode is for a demo": a user allowed to exec in a demo pod runs
/// processes on Warden's host. Through the demo cluster's tunnel (agent, kubesim exec), the
/// pod's process sees none of Warden's environment and, where the kernel has Landlock, cannot
/// read Warden's data directory (CA keys, the demo cluster's admin kubeconfig and state) or its
/// database.
#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_pods_cannot_read_wardens_data_or_environment() {
    let (app, admin) = app().await;
    let demo = warden_server::demo::start(&app.state, &app.url)
        .await
        .expect("the demo starts");
    wait_status(&admin, "demo", "connected", Duration::from_secs(10)).await;
    let pods: Api<Pod> = Api::namespaced(app.state.clusters.client("demo").unwrap(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "box"}, "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "600"]}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let exec = |cmd: String| {
        let pods = pods.clone();
        async move {
            let mut p = pods
                .exec(
                    "box",
                    ["sh", "-c", &cmd],
                    &AttachParams::default().stderr(false),
                )
                .await
                .expect("exec in the demo pod");
            let mut out = String::new();
            p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
            let status = p.take_status().unwrap().await.unwrap();
            (out, status.status.as_deref() == Some("Success"))
        }
    };
    let (env, ok) = exec("env".into()).await;
    assert!(ok, "{env}");
    assert!(env.contains("HOSTNAME=box"), "{env}");
    for leak in ["WARDEN_", "CARGO_", "RUST_"] {
        assert!(
            !env.contains(leak),
            "{leak} in the pod's environment: {env}"
        );
    }
    let data = std::fs::canonicalize(&app.state.config.data_dir).unwrap();
    let (pwd, _) = exec("pwd".into()).await;
    assert!(
        pwd.trim()
            .starts_with(&*data.join("demo").to_string_lossy()),
        "{pwd}"
    );

    let Some(abi) = kubesim::landlock_abi() else {
        eprintln!("Landlock is not available on this kernel: the read denials are not checked");
        demo.stop().await;
        return;
    };
    eprintln!("Landlock ABI {abi}");
    let mut secrets: Vec<PathBuf> = std::fs::read_dir(data.join("gateway"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    secrets.push(data.join("demo/admin.kubeconfig"));
    secrets.push(data.join("demo/kubesim-state.json"));
    let db = app
        .database_url
        .strip_prefix("sqlite://")
        .map(|f| f.split('?').next().unwrap().to_owned());
    secrets.extend(db.map(PathBuf::from));
    assert!(secrets.len() >= 4, "{secrets:?}");
    for file in &secrets {
        assert!(file.exists(), "{}", file.display());
        let (out, ok) = exec(format!("cat {}", file.display())).await;
        assert!(
            !ok && out.is_empty(),
            "{} was readable: {out}",
            file.display()
        );
    }
    let (out, ok) = exec(format!("ls {}", data.display())).await;
    assert!(!ok && out.is_empty(), "{out}");
    let (out, ok) = exec(format!("cat /proc/{}/environ", std::process::id())).await;
    assert!(!ok && out.is_empty(), "{out}");
    demo.stop().await;
}

#[tokio::test]
async fn exec_upgrades_through_the_tunnel() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "shell").await;
    let direct: Api<Pod> = Api::namespaced(sim.kube().await, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "box"}, "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "60"]}]}})).unwrap();
    direct.create(&PostParams::default(), &pod).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(app.state.clusters.client("shell").unwrap(), "default");
    let mut proc = pods
        .exec(
            "box",
            [
                "sh",
                "-c",
                "echo hello from $HOSTNAME; read line; echo got $line",
            ],
            &AttachParams::default()
                .stdin(true)
                .stdout(true)
                .stderr(false),
        )
        .await
        .expect("exec through the tunnel");
    let mut stdin = proc.stdin().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"ping\n")
        .await
        .unwrap();
    let mut out = String::new();
    proc.stdout()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(out, "hello from box\ngot ping\n");
    let status = proc.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn two_clusters_never_cross() {
    let (app, admin) = app().await;
    let (sa, sb) = (Sim::start().await, Sim::start().await);
    let a = connected(&app, &admin, &sa, "left").await;
    let b = connected(&app, &admin, &sb, "right").await;
    for (sim, name) in [(&sa, "left"), (&sb, "right")] {
        let api: Api<ConfigMap> = Api::namespaced(sim.kube().await, "default");
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "whoami"}, "data": {"cluster": name}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let left: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("left").unwrap(), "default");
    let right: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("right").unwrap(), "default");
    let results = futures::future::join_all((0..100).map(|i| {
        let (api, want) = if i % 2 == 0 {
            (left.clone(), "left")
        } else {
            (right.clone(), "right")
        };
        async move {
            (
                want,
                api.get("whoami").await.unwrap().data.unwrap()["cluster"].clone(),
            )
        }
    }))
    .await;
    for (want, got) in results {
        assert_eq!(want, got);
    }
    let l = admin.get("/api/v1/clusters/left").await.json();
    let r = admin.get("/api/v1/clusters/right").await.json();
    assert_ne!(l["fingerprint"], r["fingerprint"]);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

// ---- faults ----

#[tokio::test]
async fn killed_agent_goes_disconnected_and_comes_back() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "flaky").await;
    let killed = Instant::now();
    agent.kill();
    let c = wait_status(&admin, "flaky", "disconnected", Duration::from_secs(5)).await;
    assert!(killed.elapsed() < Duration::from_millis(2000) + Duration::from_secs(1));
    assert!(c["status_reason"].is_string());
    // A request now fails at once with a clear message.
    let api: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("flaky").unwrap(), "default");
    let err = tokio::time::timeout(Duration::from_secs(2), api.list(&ListParams::default()))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(err.to_string().contains("not connected"), "{err}");
    let agent = RunningAgent::start(&sim.kubeconfig, &sim.dir.path().join("flaky.yaml")).await;
    wait_status(&admin, "flaky", "connected", Duration::from_secs(5)).await;
    api.list(&ListParams::default()).await.expect("works again");
    let history: Vec<String> = admin.get("/api/v1/clusters/flaky").await.json()["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&history[..3], ["connected", "disconnected", "connected"]);
    // Renamed while connected: the agent reconnects under the new name by itself.
    admin
        .patch("/api/v1/clusters/flaky", json!({"name": "steady"}))
        .await
        .assert_status(200);
    wait_status(&admin, "steady", "connected", Duration::from_secs(5)).await;
    let start = Instant::now();
    while !app.state.clusters.is_connected("steady") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no tunnel under the new name"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("steady").unwrap(), "default");
    api.list(&ListParams::default())
        .await
        .expect("works under the new name");
    admin
        .patch("/api/v1/clusters/steady", json!({"name": "flaky"}))
        .await
        .assert_status(200);
    wait_status(&admin, "flaky", "connected", Duration::from_secs(5)).await;
    agent.stop().await.unwrap();
    // A cluster whose agent is gone is deleted by a plain DELETE (its credential is revoked
    // either way); the audit says the agent could not be told.
    wait_status(&admin, "flaky", "disconnected", Duration::from_secs(5)).await;
    admin
        .delete("/api/v1/clusters/flaky")
        .await
        .assert_status(204);
    admin.get("/api/v1/clusters/flaky").await.assert_status(404);
    let deleted = audit(&admin, "action=cluster.delete").await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["details"]["agent_connected"], false);
}

/// An agent that connects and then goes silent (a half-open connection): the sweeper closes
/// its tunnel after the timeout and the cluster turns disconnected.
#[tokio::test]
async fn a_silent_agent_is_marked_disconnected_by_the_sweeper() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let (_, yaml) = import(&admin, "silent", "default").await;
    let settings = warden_agent::Settings::from_manifest(&yaml).unwrap();
    let (_, key) = new_key();
    let ws = warden_agent::dial::connect(
        &settings,
        &warden_agent::dial::Hello {
            secret: settings.bootstrap_token.as_deref().unwrap(),
            fingerprint: &sim.sim.kube_system_uid(),
            key: &key,
        },
    )
    .await
    .expect("dial");
    let (frames_in, frames_out) = warden_agent::tunnel::tungstenite_frames(ws);
    let pump = warden_agent::tunnel::pump(frames_in, frames_out);
    wait_status(&admin, "silent", "connected", Duration::from_secs(5)).await;
    let started = Instant::now();
    let c = wait_status(&admin, "silent", "disconnected", Duration::from_secs(6)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the timeout"
    );
    assert!(
        c["status_reason"]
            .as_str()
            .unwrap()
            .contains("no heartbeat"),
        "{c}"
    );
    drop(pump);
    let _ = app;
}

#[tokio::test]
async fn a_dropped_tunnel_fails_requests_in_flight_clearly() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "drop").await;
    // A log follow (a plain streamed GET) open through the tunnel as well.
    let direct: Api<Pod> = Api::namespaced(sim.kube().await, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "ticker"}, "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "while true; do echo tick; sleep 0.1; done"]}]}})).unwrap();
    direct.create(&PostParams::default(), &pod).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(app.state.clusters.client("drop").unwrap(), "default");
    let mut logs = futures::AsyncBufReadExt::lines(
        pods.log_stream(
            "ticker",
            &kube::api::LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .expect("a log follow through the tunnel"),
    );
    let first = tokio::time::timeout(Duration::from_secs(5), logs.next())
        .await
        .expect("a log line in time");
    assert_eq!(first.unwrap().unwrap(), "tick");
    let api: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("drop").unwrap(), "default");
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    // The initial state arrives, then the tunnel dies under the open watch.
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.try_next()).await;
    agent.kill();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "ended".to_owned(),
                Err(e) => return e.to_string(),
            }
        }
    })
    .await
    .expect("the watch ends instead of hanging");
    assert!(
        outcome.contains("tunnel to cluster drop closed") || outcome == "ended",
        "{outcome}"
    );
    // The log follow fails with an error, not a clean end that would pass for "done".
    let logged = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match logs.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the log follow ends instead of hanging");
    let message = logged.expect_err("a dropped tunnel is an error for a streamed GET");
    assert!(!message.is_empty());
    eprintln!("log follow after the drop: {message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_agent_reconnects_by_itself_after_warden_restarts() {
    let data = tempfile::tempdir().unwrap();
    // The database must outlive the first TestApp (whose directory goes with it).
    let sqlite = format!("sqlite://{}/warden.db?mode=rwc", data.path().display());
    let mut extra = vec![("WARDEN_DATA_DIR", data.path().to_str().unwrap())];
    if std::env::var("WARDEN_TEST_DATABASE_URL")
        .map(|v| v.is_empty())
        .unwrap_or(true)
    {
        extra.push(("WARDEN_DATABASE_URL", sqlite.as_str()));
    }
    let env = fast_env(&extra);
    let (mut app, admin) = TestApp::spawn_with(env.clone()).await.with_admin().await;
    // The second Warden below starts on this app's database.
    app.keep_database();
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "steady").await;

    // Warden stops, as a process exit would: tunnels closed, listener gone.
    let addr = app.addr;
    let database_url = app.database_url.clone();
    app.state.clusters.close_all("Warden is shutting down");
    drop(admin);
    drop(app);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new Warden on the same database and port.
    let mut env2 = env.clone();
    // On PostgreSQL the TestApp's fresh database persists; on SQLite ours (set above) does.
    env2.entry("WARDEN_DATABASE_URL".into())
        .or_insert(database_url);
    env2.insert("WARDEN_HTTP_ADDR".into(), addr.to_string());
    env2.insert("WARDEN_PUBLIC_URL".into(), format!("http://{addr}"));
    env2.insert("WARDEN_GATEWAY_ADDR".into(), "127.0.0.1:0".into());
    env2.insert(
        "WARDEN_ADMIN_PASSWORD".into(),
        warden_server::testing::ADMIN_PASSWORD.into(),
    );
    let config = warden_server::config::Config::from_source(&env2).unwrap();
    let state = warden_server::startup::prepare(
        config,
        std::sync::Arc::new(warden_domain::clock::SystemClock),
    )
    .await
    .unwrap();
    let router = warden_server::build_router(state.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the same port again");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .ok();
    });
    let start = Instant::now();
    while !state.clusters.is_connected("steady") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the agent did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api: Api<ConfigMap> =
        Api::namespaced(state.clusters.client("steady").unwrap(), "kube-system");
    api.list(&ListParams::default())
        .await
        .expect("requests work after the restart");
    agent.stop().await.unwrap();
    server.abort();
}

// ---- the manifest, applied with the real kubectl ----

/// `kubectl apply -f <manifest_url>` against a simulated cluster (and again, from the file),
/// then the agent as the Deployment runs it: with its own service account's token, reading its
/// Secret through the API and writing its credential back. The manifest's RBAC is enough for the
/// heartbeat, for impersonating users' service accounts, and for managing Warden's roles.
#[tokio::test]
async fn the_manifest_installs_an_agent_that_works_with_its_own_service_account() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use warden_server::gateway::testkit::Kubectl;
    use warden_server::gateway::transport::{As, ClusterTransport};

    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let created = admin
        .post(
            "/api/v1/clusters",
            json!({"name": "real", "project": "default"}),
        )
        .await
        .assert_status(201)
        .json();
    let kubectl = Kubectl::new(&sim.dir.path().join("kubectl"), &sim.sim.admin_kubeconfig());
    let url = created["manifest_url"].as_str().unwrap();
    let out = kubectl.run(&["apply", "-f", url]).await.expect_ok();
    for obj in [
        "namespace/warden-system",
        "serviceaccount/warden-agent",
        "secret/warden-agent",
        "deployment.apps/warden-agent",
        "clusterrole.rbac.authorization.k8s.io/warden-agent",
    ] {
        assert!(
            out.stdout.contains(&format!("{obj} created")),
            "{}",
            out.stdout
        );
    }
    // The link worked once; the manifest itself can be applied again.
    kubectl.run(&["apply", "-f", url]).await.expect_err("410");
    let manifest = admin
        .get("/api/v1/clusters/real/manifest")
        .await
        .assert_status(200)
        .body;
    let file = sim.write("real.yaml", &manifest);
    // Only the newest download registers the cluster: the link's token has expired with it,
    // so the new manifest is what the cluster must hold before its agent first connects.
    kubectl
        .run(&["apply", "-f", file.to_str().unwrap()])
        .await
        .expect_ok();

    // The agent as the Deployment runs it: its service account, its Secret.
    let token = sim
        .sim
        .service_account_token("warden-system", "warden-agent", Duration::from_secs(3600))
        .unwrap();
    let sa_kubeconfig = sim.write("sa.kubeconfig", &sim.sim.kubeconfig_for_token(&token));
    let kube = warden_agent::kube_clients(Some(&sa_kubeconfig), None)
        .await
        .unwrap();
    let opts = Options {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        ..Default::default()
    };
    let agent = Agent::new(
        kube.clone(),
        Store::secret(kube.agent.clone(), "warden-system"),
        opts,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(agent.run(async move {
        let _ = stop_rx.await;
    }));
    let c = wait_for(
        &admin,
        "real",
        "connected with facts",
        |c| c["status"] == "connected" && c["node_count"] == 3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(c["kubernetes_version"], "v1.32.0");
    let secrets: Api<Secret> = Api::namespaced(sim.kube().await, "warden-system");
    let s = serde_json::to_value(secrets.get("warden-agent").await.unwrap()).unwrap();
    let data = warden_agent::settings::secret_data(&s).unwrap();
    assert!(
        data["WARDEN_AGENT_CREDENTIAL"].starts_with("wdc_"),
        "the credential is kept in the Secret"
    );

    // Re-applying the manifest keeps the credential and the agent.
    let out = kubectl
        .run(&["apply", "-f", file.to_str().unwrap()])
        .await
        .expect_ok();
    assert!(
        out.stdout
            .contains("deployment.apps/warden-agent unchanged"),
        "{}",
        out.stdout
    );
    let s = serde_json::to_value(secrets.get("warden-agent").await.unwrap()).unwrap();
    assert!(warden_agent::settings::secret_data(&s)
        .unwrap()
        .contains_key("WARDEN_AGENT_CREDENTIAL"));

    // What the gateway does through the tunnel, with only the manifest's RBAC: manage Warden's
    // roles and bindings, get a TokenRequest token for a user's service account (bound to its
    // anchor Secret), and run a request with it.
    let warden: kube::Client = app.state.clusters.client("real").unwrap();
    let roles: Api<ClusterRole> = Api::all(warden.clone());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "warden-cluster-read"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]})).unwrap();
    // `escalate` is granted on Warden's roles by name, and the apiserver asks it with the name
    // in the URL: a create (POST) has none and is refused; server-side apply, which is what
    // Warden does, names the role and passes.
    let posted = roles.create(&PostParams::default(), &role).await;
    assert!(
        matches!(&posted, Err(kube::Error::Api(e)) if e.code == 403),
        "{posted:?}"
    );
    roles
        .patch(
            "warden-cluster-read",
            &kube::api::PatchParams::apply("warden").force(),
            &kube::api::Patch::Apply(&role),
        )
        .await
        .expect("escalate on Warden's roles");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(warden.clone(), "warden-system");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "u-test"}})).unwrap(),
    )
    .await
    .unwrap();
    let anchors: Api<Secret> = Api::namespaced(warden.clone(), "warden-system");
    anchors
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "u-test-anchor"}})).unwrap(),
        )
        .await
        .unwrap();
    let transport =
        warden_server::tunnel::transport::TunnelTransport::new(app.state.clusters.clone());
    let cref = warden_server::gateway::transport::ClusterRef {
        id: warden_domain::ids::ClusterId::parse(c["id"].as_str().unwrap()).unwrap(),
        name: "real".into(),
    };
    let headers = transport
        .authenticate(
            &cref,
            &As::ServiceAccount {
                namespace: "warden-system".into(),
                name: "u-test".into(),
                bound_secret: Some("u-test-anchor".into()),
            },
        )
        .await
        .expect("a TokenRequest token through the agent");
    assert!(headers[http::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .starts_with("Bearer "));
    let real_id = app.state.clusters.get("real").unwrap().cluster_id;
    let as_user = warden_server::tunnel::client::kube_client(
        app.state.clusters.clone(),
        real_id,
        "real",
        headers,
    );
    let user_pods: Api<Pod> = Api::namespaced(as_user.clone(), "default");
    let denied = user_pods.list(&ListParams::default()).await.unwrap_err();
    assert!(
        denied
            .to_string()
            .contains("system:serviceaccount:warden-system:u-test"),
        "{denied}"
    );
    let crbs: Api<ClusterRoleBinding> = Api::all(warden.clone());
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "u-test.cluster-read"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "warden-cluster-read"},
        "subjects": [{"kind": "ServiceAccount", "name": "u-test", "namespace": "warden-system"}]
    }))
    .unwrap();
    crbs.create(&PostParams::default(), &crb)
        .await
        .expect("bind Warden's roles");
    user_pods
        .list(&ListParams::default())
        .await
        .expect("the user's service account reads now");
    // The agent cannot impersonate anyone else.
    let admin_as =
        warden_server::tunnel::client::kube_client(app.state.clusters.clone(), real_id, "real", {
            let mut h = http::HeaderMap::new();
            h.insert(
                "impersonate-user",
                http::HeaderValue::from_static("kubernetes-admin"),
            );
            h
        });
    Api::<Pod>::namespaced(admin_as, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// `WARDEN_DEMO=true`: a simulated cluster and its agent, imported into `default` as `demo`,
/// connected within seconds; the same cluster comes back after a restart of the demo.
#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_mode_connects_a_simulated_cluster() {
    let (app, admin) = app().await;
    let demo = warden_server::demo::start(&app.state, &app.url)
        .await
        .expect("the demo starts");
    let c = wait_for(
        &admin,
        "demo",
        "connected with facts",
        |c| c["status"] == "connected" && c["node_count"] == 3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(c["project"], "default");
    assert_eq!(c["labels"]["warden.dev/demo"], "true");
    let fingerprint = c["fingerprint"].clone();
    let client = app.state.clusters.client("demo").unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = |l: kube::api::ObjectList<Pod>| {
        l.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect::<Vec<_>>()
    };
    let listed = pods
        .list(&ListParams::default())
        .await
        .expect("the demo cluster answers through its tunnel");
    assert_eq!(
        names(listed),
        ["toolbox"],
        "the sample workload's pod in default"
    );
    // The sample workload: the shop's web pods run, and their log follows a line at a time.
    let shop: Api<Pod> = Api::namespaced(client.clone(), warden_server::demo::SAMPLE_NAMESPACE);
    // Made by the simulator's Deployment controller from the Deployment's template.
    let mut web = Vec::new();
    for _ in 0..50 {
        web = names(shop.list(&ListParams::default()).await.unwrap());
        if web.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(web.len(), 2, "{web:?}");
    assert!(web.iter().all(|n| n.starts_with("web-")), "{web:?}");
    let mut log = String::new();
    for _ in 0..50 {
        log = shop.logs(&web[0], &Default::default()).await.unwrap();
        if log.contains(" 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        log.contains("listening on :8080") && log.contains(" 200"),
        "{log}"
    );
    // What a user deletes stays deleted after a restart: the sample is made once.
    pods.delete("toolbox", &Default::default()).await.unwrap();
    demo.stop().await;
    wait_status(&admin, "demo", "disconnected", Duration::from_secs(5)).await;
    // Started again (as after a restart of Warden): the same cluster, with its stored credential.
    let demo = warden_server::demo::start(&app.state, &app.url)
        .await
        .expect("the demo starts again");
    let c = wait_status(&admin, "demo", "connected", Duration::from_secs(10)).await;
    assert_eq!(c["fingerprint"], fingerprint);
    let client = app.state.clusters.client("demo").unwrap();
    let listed = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "the deleted pod came back");
    let shop = Api::<Pod>::namespaced(client, warden_server::demo::SAMPLE_NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(shop.items.len(), 2, "the sample is there once");
    let bootstraps = audit(&admin, "kind=agent&action=agent.bootstrap").await;
    assert_eq!(
        bootstraps.len(),
        1,
        "the second start used the stored credential"
    );
    demo.stop().await;
}

#[tokio::test]
async fn proxy_passwords_are_sealed_at_rest_and_survive_a_masked_patch() {
    use sea_orm::{ConnectionTrait, Statement};
    let app = TestApp::spawn_with(BTreeMap::from([(
        "WARDEN_MASTER_KEY".to_owned(),
        "a master key for this test only".to_owned(),
    )]))
    .await;
    let (app, admin) = app.with_admin().await;
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "edge-1", "project": "default",
                   "proxy": {"https_proxy": "http://ops:s3cret-pass@proxy.corp:3128", "no_proxy": "10.0.0.0/8"}}),
        )
        .await
        .assert_status(201);
    let stored = || async {
        let db = &app.services().db;
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT proxy FROM clusters WHERE name = 'edge-1'".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<String>("", "proxy").unwrap()
    };
    // Sealed in the database: neither the password nor the host is readable there.
    let raw = stored().await;
    assert!(raw.starts_with("warden-sealed:v1:"), "{raw}");
    assert!(!raw.contains("s3cret-pass") && !raw.contains("proxy.corp"));
    // The API shows it masked; the manifest (for the agent) carries the real one.
    let c = admin
        .get("/api/v1/clusters/edge-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(c["proxy"]["https_proxy"], "http://ops:***@proxy.corp:3128");
    async fn manifest(admin: &Client) -> String {
        admin
            .get("/api/v1/clusters/edge-1/manifest")
            .await
            .assert_status(200)
            .body
    }
    assert!(manifest(&admin)
        .await
        .contains("http://ops:s3cret-pass@proxy.corp:3128"));
    // Sending back what the API showed keeps the password (a form round trip loses nothing).
    admin
        .patch(
            "/api/v1/clusters/edge-1",
            json!({"description": "edge", "proxy": c["proxy"].clone()}),
        )
        .await
        .assert_status(200);
    assert!(manifest(&admin)
        .await
        .contains("http://ops:s3cret-pass@proxy.corp:3128"));
    // A new password replaces it.
    admin
        .patch(
            "/api/v1/clusters/edge-1",
            json!({"proxy": {"https_proxy": "http://ops:n3w@proxy.corp:3128"}}),
        )
        .await
        .assert_status(200);
    let m = manifest(&admin).await;
    assert!(m.contains("http://ops:n3w@proxy.corp:3128") && !m.contains("s3cret-pass"));
    assert!(stored().await.starts_with("warden-sealed:v1:"));

    // Someone who can write the database but holds no key copies edge-1's sealed value into a
    // cluster they administer: it opens nowhere but in edge-1, and edge-2's manifest is
    // refused rather than rendered with it (or without any proxy).
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "edge-2", "project": "default"}),
        )
        .await
        .assert_status(201);
    let db = &app.services().db;
    let set_proxy = |value: String| async move {
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            match db.get_database_backend() {
                sea_orm::DatabaseBackend::Postgres => {
                    "UPDATE clusters SET proxy = $1 WHERE name = 'edge-2'"
                }
                _ => "UPDATE clusters SET proxy = ? WHERE name = 'edge-2'",
            },
            [value.into()],
        ))
        .await
        .unwrap();
    };
    set_proxy(stored().await).await;
    let r = admin.get("/api/v1/clusters/edge-2/manifest").await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(!r.body.contains("n3w"), "{}", r.body);
    // A value sealed before values were bound to their cluster is sealed again, bound, at
    // start, and works.
    let sealer = app.services().clusters.settings().sealer.unwrap();
    set_proxy(sealer.seal(
        "clusters.proxy",
        br#"{"https_proxy":"http://ops:old@proxy.corp:3128"}"#,
    ))
    .await;
    assert_eq!(
        warden_domain::clusters::seal_plaintext_proxies(app.services())
            .await
            .unwrap(),
        1
    );
    let r = admin
        .get("/api/v1/clusters/edge-2/manifest")
        .await
        .assert_status(200);
    assert!(r.body.contains("http://ops:old@proxy.corp:3128"));
}

// ---- agent identity: the key pair, and bounds on what an agent may make Warden do ----

/// A fresh Ed25519 key, as an impostor would make one.
fn new_key() -> (String, warden_agent::identity::AgentKey) {
    let seed = warden_agent::identity::AgentKey::generate_seed().unwrap();
    let key = warden_agent::identity::AgentKey::from_seed(&seed).unwrap();
    (seed, key)
}

/// Ask for a challenge with `secret` and upgrade with `key`'s proof of it: what an agent (or an
/// impostor holding `secret`) does.
async fn dial_with(
    settings: &warden_agent::Settings,
    secret: &str,
    fingerprint: &str,
    key: &warden_agent::identity::AgentKey,
) -> (
    Result<warden_agent::dial::Socket, warden_agent::dial::DialError>,
    String,
) {
    let c = warden_agent::dial::challenge(settings, secret, fingerprint)
        .await
        .expect("a challenge");
    let proof = key.prove(&c);
    let public = key.public_b64();
    let r = warden_agent::dial::upgrade(
        settings,
        secret,
        fingerprint,
        &[
            ("x-warden-agent-key", public.as_str()),
            ("x-warden-nonce", c.nonce.as_str()),
            ("x-warden-proof", proof.as_str()),
        ],
    )
    .await;
    (r, c.nonce)
}

fn refused(
    r: Result<warden_agent::dial::Socket, warden_agent::dial::DialError>,
) -> (u16, String, String) {
    match r {
        Err(warden_agent::dial::DialError::Refused {
            status,
            code,
            message,
        }) => (status, code, message),
        Err(e) => panic!("not a final refusal: {e}"),
        Ok(_) => panic!("admitted"),
    }
}

async fn denied_with(admin: &Client, code: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<Value> = audit(admin, "kind=agent&outcome=denied")
            .await
            .into_iter()
            .filter(|e| e["reason"].as_str().unwrap_or_default().starts_with(code))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_registration_ends_the_clusters_spare_manifests() {
    // Two manifests downloaded before the agent registers (the first left in a CI log, the
    // second applied): the newer download already ends the older, which therefore can neither
    // register first nor, once the agent has, register another key the moment the real
    // agent's tunnel drops (a restart, a blip), which would hand the impostor the cluster.
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "spare", "project": "default"}),
        )
        .await
        .assert_status(201);
    let manifest = |body: String| warden_agent::Settings::from_manifest(&body).unwrap();
    let spare = manifest(
        admin
            .get("/api/v1/clusters/spare/manifest")
            .await
            .assert_status(200)
            .body,
    );
    let applied = manifest(
        admin
            .get("/api/v1/clusters/spare/manifest")
            .await
            .assert_status(200)
            .body,
    );
    let fp = sim.sim.kube_system_uid();
    let token = spare.bootstrap_token.clone().unwrap();
    let (status, code, message) = refused(
        warden_agent::dial::challenge(&spare, &token, &fp)
            .await
            .map(|_| unreachable_socket()),
    );
    assert_eq!(
        (status, code.as_str()),
        (403, "token_expired"),
        "the older download, before any registration: {message}"
    );
    let downloads = audit(&admin, "action=cluster.manifest").await;
    assert_eq!(
        downloads[0]["details"]["revoked_tokens"], 1,
        "{downloads:?}"
    );
    let (_, real) = new_key();
    let token = applied.bootstrap_token.clone().unwrap();
    let (r, _) = dial_with(&applied, &token, &fp, &real).await;
    let socket = r.expect("the applied manifest registers");
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.state.clusters.get("spare").is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        app.state.clusters.get("spare").is_none(),
        "the tunnel is gone"
    );
    // The spare manifest is refused at its first step: no challenge to hold, the reason said.
    let token = spare.bootstrap_token.clone().unwrap();
    let (status, code, message) = refused(
        warden_agent::dial::challenge(&spare, &token, &fp)
            .await
            .map(|_| unreachable_socket()),
    );
    assert_eq!((status, code.as_str()), (403, "token_expired"), "{message}");
    let _ = app;
}

/// A socket never made: `refused` takes a dial's result.
fn unreachable_socket() -> warden_agent::dial::Socket {
    unreachable!("the challenge was expected to be refused")
}

/// Whoever holds one cluster's secret (without its key) and asks for challenges over and over
/// keeps neither that cluster's agent out (each new challenge drops the cluster's oldest, and
/// the agent answers its own at once) nor any other cluster's. A secret that can never
/// connect gets none at all.
#[tokio::test]
async fn one_clusters_secret_cannot_keep_agents_out() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "held").await;
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(sim.dir.path().join("held.yaml.state.json")).unwrap(),
    )
    .unwrap();
    let credential = state["credential"].as_str().unwrap().to_owned();
    let settings = warden_agent::Settings::from_manifest(
        &std::fs::read_to_string(sim.dir.path().join("held.yaml")).unwrap(),
    )
    .unwrap();
    let fp = sim.sim.kube_system_uid();
    for _ in 0..2 * warden_domain::clusters::agents::MAX_OUTSTANDING_CHALLENGES_PER_CLUSTER + 1 {
        warden_agent::dial::challenge(&settings, &credential, &fp)
            .await
            .expect("a challenge, the oldest dropped");
    }
    // The real agent, restarted (a blip, a rollout; a moment later: the test's clock stands
    // still otherwise), gets back in.
    app.clock.advance_secs(1);
    agent.stop().await.unwrap();
    wait_for(
        &admin,
        "held",
        "disconnected",
        |c| c["status"] != "connected",
        Duration::from_secs(10),
    )
    .await;
    let manifest = sim.dir.path().join("held.yaml");
    let agent = RunningAgent::start(&sim.kubeconfig, &manifest).await;
    wait_for(
        &admin,
        "held",
        "connected again",
        |c| c["status"] == "connected",
        Duration::from_secs(10),
    )
    .await;

    // Another cluster's manifest still gets its challenge and registers.
    let other = connected(&app, &admin, &sim, "other").await;
    assert!(app.state.clusters.get("other").is_some());
    other.stop().await.unwrap();

    // A used bootstrap token gets no challenge: refused with the reason, audited.
    let token = settings.bootstrap_token.clone().unwrap();
    let (status, code, message) = refused(
        warden_agent::dial::challenge(&settings, &token, &fp)
            .await
            .map(|_| unreachable_socket()),
    );
    assert_eq!((status, code.as_str()), (403, "token_used"), "{message}");
    let denied = denied_with(&admin, "token_used").await;
    assert!(
        denied.iter().any(|e| e["action"] == "agent.challenge"),
        "{denied:?}"
    );
    agent.stop().await.unwrap();
}

/// A manifest made after the cluster registered (left in a CI log, a chat) is worth nothing
/// to whoever finds it: not while the real agent's tunnel is up, not once it drops (a restart
/// of Warden, a blip), and it cannot keep the real agent's challenges taken. Only an
/// administrator's revocation frees the cluster for a new agent key.
#[tokio::test]
async fn a_manifest_made_after_registration_cannot_take_the_cluster_over() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "prod").await;
    let leaked = admin
        .get("/api/v1/clusters/prod/manifest")
        .await
        .assert_status(200)
        .body;
    let leaked = warden_agent::Settings::from_manifest(&leaked).unwrap();
    let token = leaked.bootstrap_token.clone().unwrap();
    let fp = sim.sim.kube_system_uid();
    // The real tunnel drops.
    agent.stop().await.unwrap();
    wait_for(
        &admin,
        "prod",
        "disconnected",
        |c| c["status"] != "connected",
        Duration::from_secs(10),
    )
    .await;
    // The finder asks for challenges, again and again: each is refused, none is held.
    for _ in 0..20 {
        let (status, code, message) = refused(
            warden_agent::dial::challenge(&leaked, &token, &fp)
                .await
                .map(|_| unreachable_socket()),
        );
        assert_eq!((status, code.as_str()), (403, "key_mismatch"), "{message}");
    }
    let held = sea_orm::PaginatorTrait::count(
        <warden_domain::entities::agent_challenges::Entity as sea_orm::EntityTrait>::find(),
        &app.services().db,
    )
    .await
    .unwrap();
    assert_eq!(held, 0, "a leaked manifest holds challenges");
    // The real agent comes back with its own credential and key.
    let manifest = sim.dir.path().join("prod.yaml");
    let back = RunningAgent::start(&sim.kubeconfig, &manifest).await;
    wait_for(
        &admin,
        "prod",
        "connected again",
        |c| c["status"] == "connected",
        Duration::from_secs(10),
    )
    .await;
    back.stop().await.unwrap();
    // The refusals are audited, with the cluster they concern.
    let denied = denied_with(&admin, "key_mismatch").await;
    assert!(
        denied
            .iter()
            .any(|e| e["action"] == "agent.challenge" && e["cluster"] == "prod"),
        "{denied:?}"
    );

    // An administrator revokes the agent (reinstalled, its key lost): a new manifest then
    // registers a new key.
    admin
        .post("/api/v1/clusters/prod/agent/revoke", json!({}))
        .await
        .assert_status(204);
    let fresh = admin
        .get("/api/v1/clusters/prod/manifest")
        .await
        .assert_status(200)
        .body;
    let fresh = warden_agent::Settings::from_manifest(&fresh).unwrap();
    let (_, key) = new_key();
    let (r, _) = dial_with(&fresh, fresh.bootstrap_token.as_deref().unwrap(), &fp, &key).await;
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.to_string()));
}

/// Before a secret names its cluster, an agent's claim of one is only a claim: the refusal is
/// anonymous, names no cluster, and a flood of them is sampled, not stored row by row.
#[tokio::test]
async fn an_unknown_agent_cannot_write_events_in_a_clusters_name() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "prod").await;
    let settings = warden_agent::Settings::from_manifest(
        &std::fs::read_to_string(sim.dir.path().join("prod.yaml")).unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!(
        "{}/agent/v1/challenge",
        settings.warden_url.trim_end_matches('/')
    );
    for _ in 0..60 {
        let r = client
            .post(&url)
            .header("authorization", "Bearer wdc_not-a-credential")
            .header("x-warden-fingerprint", "a")
            .header("x-warden-cluster", "prod")
            .header("x-warden-agent-version", "A".repeat(4000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let denied = audit(&admin, "kind=agent&outcome=denied&action=agent.challenge").await;
    assert!(!denied.is_empty());
    assert!(
        denied.len() <= 50,
        "every anonymous refusal was stored: {}",
        denied.len()
    );
    for e in &denied {
        assert_ne!(e["cluster"], "prod", "{e:#}");
        assert_ne!(e["resource_name"], "prod", "{e:#}");
        assert!(!e["actor"].to_string().contains("prod"), "{e:#}");
        assert!(e["details"]["agent_version"].is_null(), "{e:#}");
        assert_eq!(e["actor"], "agent", "{e:#}");
    }
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn an_impostor_with_the_credential_but_another_key_is_refused_and_the_tunnel_stays() {
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "prod").await;
    let live = app.state.clusters.get("prod").unwrap();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(sim.dir.path().join("prod.yaml.state.json")).unwrap(),
    )
    .unwrap();
    let credential = state["credential"].as_str().unwrap().to_owned();
    let real_key = state["key"]
        .as_str()
        .expect("the agent keeps its key")
        .to_owned();
    // The key stays in the cluster: Warden keeps only the public key.
    let real_public = warden_agent::identity::AgentKey::from_seed(&real_key)
        .unwrap()
        .public_b64();
    assert_eq!(live.agent_key, real_public);
    let settings = warden_agent::Settings::from_manifest(
        &std::fs::read_to_string(sim.dir.path().join("prod.yaml")).unwrap(),
    )
    .unwrap();
    let fp = sim.sim.kube_system_uid();

    // 1. The stolen credential (and the right fingerprint) with the impostor's own key.
    let (_, impostor) = new_key();
    let (r, nonce) = dial_with(&settings, &credential, &fp, &impostor).await;
    let (status, code, message) = refused(r);
    assert_eq!((status, code.as_str()), (403, "key_mismatch"), "{message}");
    // The nonce was used up by that attempt: replaying it is refused too.
    let proof = impostor.prove(&warden_domain::agent_protocol::Challenge {
        nonce: nonce.clone(),
        cluster_id: live.cluster_id.to_string(),
        context: warden_domain::agent_protocol::PROOF_CONTEXT.into(),
    });
    let public = impostor.public_b64();
    let replay = warden_agent::dial::upgrade(
        &settings,
        &credential,
        &fp,
        &[
            ("x-warden-agent-key", public.as_str()),
            ("x-warden-nonce", nonce.as_str()),
            ("x-warden-proof", proof.as_str()),
        ],
    )
    .await;
    assert!(
        matches!(&replay, Err(warden_agent::dial::DialError::Transient(m)) if m.contains("409")),
        "{:?}",
        replay.as_ref().err().map(|e| e.to_string())
    );

    // 2. The old way: the credential and fingerprint without any proof.
    let (status, code, _) =
        refused(warden_agent::dial::upgrade(&settings, &credential, &fp, &[]).await);
    assert_eq!((status, code.as_str()), (401, "proof_required"));
    // The real public key named, but no signature over a challenge.
    let (status, code, _) = refused(
        warden_agent::dial::upgrade(
            &settings,
            &credential,
            &fp,
            &[("x-warden-agent-key", real_public.as_str())],
        )
        .await,
    );
    assert_eq!((status, code.as_str()), (401, "proof_required"));
    // The real public key with a signature made by another key.
    let c = warden_agent::dial::challenge(&settings, &credential, &fp)
        .await
        .unwrap();
    let forged = impostor.prove(&c);
    let (status, code, _) = refused(
        warden_agent::dial::upgrade(
            &settings,
            &credential,
            &fp,
            &[
                ("x-warden-agent-key", real_public.as_str()),
                ("x-warden-nonce", c.nonce.as_str()),
                ("x-warden-proof", forged.as_str()),
            ],
        )
        .await,
    );
    assert_eq!((status, code.as_str()), (403, "proof_required"));

    // 3. An administrator's new registration (an unused replacing bootstrap token) used from
    // another key while the real tunnel is live: refused (409: it may pass once that tunnel
    // is gone), not swapped in.
    let fresh = admin
        .post("/api/v1/clusters/prod/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();
    let fresh = warden_agent::Settings::from_manifest(fresh["manifest"].as_str().unwrap()).unwrap();
    let token = fresh.bootstrap_token.clone().unwrap();
    let (r, _) = dial_with(&fresh, &token, &fp, &impostor).await;
    match r {
        Err(warden_agent::dial::DialError::Transient(m)) => {
            assert!(m.contains("409") && m.contains("live tunnel"), "{m}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the impostor was swapped in"),
    }
    // A manifest merely downloaded (no decision to replace the agent): no challenge at all.
    let downloaded = admin
        .get("/api/v1/clusters/prod/manifest")
        .await
        .assert_status(200)
        .body;
    let downloaded = warden_agent::Settings::from_manifest(&downloaded).unwrap();
    let (status, code, message) = refused(
        warden_agent::dial::challenge(
            &downloaded,
            downloaded.bootstrap_token.as_deref().unwrap(),
            &fp,
        )
        .await
        .map(|_| unreachable_socket()),
    );
    assert_eq!((status, code.as_str()), (403, "key_mismatch"), "{message}");
    assert!(message.contains("revoke"), "{message}");

    // 4. An impostor agent run as the binary runs, with the stolen state but its own key.
    let copy = sim.write(
        "impostor.yaml",
        &std::fs::read_to_string(sim.dir.path().join("prod.yaml")).unwrap(),
    );
    let (seed, _) = new_key();
    std::fs::write(
        sim.dir.path().join("impostor.yaml.state.json"),
        json!({"cluster": "prod", "credential": credential, "key": seed}).to_string(),
    )
    .unwrap();
    let AgentError::Refused { code, .. } = RunningAgent::start(&sim.kubeconfig, &copy)
        .await
        .outcome()
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "key_mismatch");

    // The real tunnel never moved, and still serves.
    let now = app.state.clusters.get("prod").unwrap();
    assert_eq!(now.conn_id, live.conn_id);
    let cms: Api<ConfigMap> =
        Api::namespaced(app.state.clusters.client("prod").unwrap(), "default");
    cms.list(&ListParams::default())
        .await
        .expect("the real tunnel serves");
    assert_eq!(
        admin.get("/api/v1/clusters/prod").await.json()["status"],
        "connected"
    );
    // Every refusal is audited, naming the key that was tried.
    let mismatches = denied_with(&admin, "key_mismatch").await;
    assert!(mismatches.len() >= 3, "{mismatches:?}");
    let impostor_id = warden_domain::clusters::agents::key_id(&impostor.public_b64());
    assert!(
        mismatches
            .iter()
            .any(|e| e["details"]["agent_key"] == impostor_id.as_str()),
        "{mismatches:?}"
    );
    assert!(mismatches.iter().all(|e| e["cluster"] == "prod"));
    assert!(denied_with(&admin, "proof_required").await.len() >= 3);
    assert!(!denied_with(&admin, "challenge_expired").await.is_empty());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_cluster_registered_before_agent_keys_must_register_again() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let (app, admin) = app().await;
    let sim = Sim::start().await;
    let agent = connected(&app, &admin, &sim, "legacy").await;
    agent.stop().await.unwrap();
    wait_status(&admin, "legacy", "disconnected", Duration::from_secs(5)).await;
    // As a row from before the migration: no key.
    warden_domain::entities::clusters::Entity::update_many()
        .col_expr(
            warden_domain::entities::clusters::Column::AgentPublicKey,
            sea_orm::sea_query::Expr::value(Option::<String>::None),
        )
        .filter(warden_domain::entities::clusters::Column::Name.eq("legacy"))
        .exec(&app.state.services.db)
        .await
        .unwrap();
    // Fail closed: the credential alone no longer admits the agent.
    let AgentError::Refused { code, message } =
        RunningAgent::start(&sim.kubeconfig, &sim.dir.path().join("legacy.yaml"))
            .await
            .outcome()
            .await
            .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(code, "key_required");
    assert!(message.contains("new manifest"), "{message}");
    assert!(!denied_with(&admin, "key_required").await.is_empty());
    // A new manifest registers the agent's key, and it connects again.
    let fresh = admin
        .post("/api/v1/clusters/legacy/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();
    std::fs::write(
        sim.dir.path().join("legacy.yaml"),
        fresh["manifest"].as_str().unwrap(),
    )
    .unwrap();
    let again = RunningAgent::start(&sim.kubeconfig, &sim.dir.path().join("legacy.yaml")).await;
    wait_status(&admin, "legacy", "connected", Duration::from_secs(5)).await;
    again.stop().await.unwrap();
}

/// A registered agent that talks back too much: malformed facts are dropped and audited,
/// an oversize control message and a heartbeat flood close its tunnel and are audited.
#[tokio::test]
async fn an_agent_cannot_flood_warden_or_feed_it_malformed_facts() {
    use futures::SinkExt;
    use warden_agent::tunnel::Frame;
    let (app, admin) = app().await;
    let (_, yaml) = import(&admin, "noisy", "default").await;
    let settings = warden_agent::Settings::from_manifest(&yaml).unwrap();
    let (_, key) = new_key();
    let fp = "0b9c5e1e-noisy";
    let (ws, _) = dial_with(
        &settings,
        settings.bootstrap_token.as_deref().unwrap(),
        fp,
        &key,
    )
    .await;
    let (mut rx, mut tx) = warden_agent::tunnel::tungstenite_frames(ws.expect("registered"));
    let Some(Ok(Frame::Text(welcome))) = rx.next().await else {
        panic!("no welcome")
    };
    let welcome: Value = serde_json::from_str(&welcome).unwrap();
    let credential = welcome["credential"].as_str().unwrap().to_owned();

    // Malformed facts: not stored, audited once.
    let bad = json!({"type": "heartbeat", "facts": {
        "kubernetes_version": "v1.32.0",
        "namespaces": ["default", "Not A DNS Label; DROP TABLE"],
        "nodes": [{"name": "n1", "ready": true}],
    }});
    tx.send(Frame::Text(bad.to_string())).await.unwrap();
    let too_many = json!({"type": "heartbeat", "facts": {
        "namespaces": (0..5000).map(|i| format!("ns-{i}")).collect::<Vec<_>>(),
    }});
    tx.send(Frame::Text(too_many.to_string())).await.unwrap();
    wait_status(&admin, "noisy", "connected", Duration::from_secs(5)).await;
    let rejected = denied_with(&admin, "").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut facts_rejected = rejected
        .iter()
        .filter(|e| e["action"] == "agent.facts_rejected")
        .count();
    while facts_rejected == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        facts_rejected = audit(&admin, "kind=agent&action=agent.facts_rejected")
            .await
            .len();
    }
    assert_eq!(facts_rejected, 1);
    let c = admin.get("/api/v1/clusters/noisy").await.json();
    assert!(
        c["namespaces"].as_array().map_or(true, |n| n.is_empty()),
        "{c}"
    );

    // Facts sent again unchanged are not written again (a plain heartbeat): an agent that
    // resends large facts every beat costs one small write, not a rewrite of them.
    let stored = || async {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        use warden_domain::entities::clusters as cl;
        let c = cl::Entity::find()
            .filter(cl::Column::Name.eq("noisy"))
            .one(&app.services().db)
            .await
            .unwrap()
            .unwrap();
        (c.kubernetes_version, c.last_seen)
    };
    let good =
        json!({"type": "heartbeat", "facts": {"kubernetes_version": "v1.32.0", "node_count": 1}});
    tx.send(Frame::Text(good.to_string())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored().await.0.as_deref() != Some("v1.32.0") {
        assert!(Instant::now() < deadline, "the facts were not stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        use sea_orm::ConnectionTrait;
        let db = &app.services().db;
        db.execute_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "UPDATE clusters SET kubernetes_version = 'written-aside' WHERE name = 'noisy'",
        ))
        .await
        .unwrap();
    }
    let (_, seen) = stored().await;
    app.clock.advance_secs(1);
    tx.send(Frame::Text(good.to_string())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let now = stored().await;
        if now.1 != seen {
            break now;
        }
        assert!(Instant::now() < deadline, "the heartbeat was not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        again.0.as_deref(),
        Some("written-aside"),
        "unchanged facts were rewritten"
    );

    // An oversize control message closes the tunnel.
    let huge =
        json!({"type": "heartbeat", "facts": {"kubernetes_version": "x".repeat(300 * 1024)}});
    tx.send(Frame::Text(huge.to_string())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = rx.next().await {
            if matches!(f, Ok(Frame::Close) | Err(_)) {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the tunnel stays open after an oversize message"
    );
    drop((rx, tx));

    // A heartbeat flood (with the credential and the key) closes the tunnel too.
    let (ws, _) = dial_with(&settings, &credential, fp, &key).await;
    let (mut rx, mut tx) = warden_agent::tunnel::tungstenite_frames(ws.expect("reconnected"));
    let _welcome = rx.next().await;
    for _ in 0..50 {
        if tx
            .send(Frame::Text(json!({"type": "heartbeat"}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = rx.next().await {
            if matches!(f, Ok(Frame::Close) | Err(_)) {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the tunnel stays open during a flood");
    for action in ["agent.oversize_message", "agent.heartbeat_flood"] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = audit(
                &admin,
                &format!("kind=agent&action={action}&outcome=denied"),
            )
            .await
            .len();
            if n >= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{action} not audited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(!app.state.clusters.is_connected("noisy"));
}

#[tokio::test]
async fn the_manifest_links_bootstrap_token_is_independent_of_the_link() {
    let (_app, admin) = app().await;
    import(&admin, "indep", "default").await;
    let fresh = admin
        .post("/api/v1/clusters/indep/bootstrap", json!({}))
        .await
        .assert_status(201)
        .json();
    let url = fresh["manifest_url"].as_str().unwrap();
    let url_token = url.rsplit('/').next().unwrap();
    let yaml = reqwest::get(url).await.unwrap().text().await.unwrap();
    let served = warden_agent::Settings::from_manifest(&yaml)
        .unwrap()
        .bootstrap_token
        .unwrap();
    let shown = warden_agent::Settings::from_manifest(fresh["manifest"].as_str().unwrap())
        .unwrap()
        .bootstrap_token
        .unwrap();
    // Neither is the old derivation from the link's token, and the two are independent.
    let derived = format!(
        "wdb_{}",
        warden_domain::secrets::sha256_hex(
            format!("warden manifest url -> agent bootstrap token:{url_token}").as_bytes()
        )
    );
    assert_ne!(served, derived);
    assert_ne!(shown, derived);
    assert_ne!(served, shown);
    assert!(!served.contains(url_token) && !shown.contains(url_token));
}

/// Heartbeats stored in groups (the heartbeat writer's write): every cluster of the group gets
/// its time, a pending or disconnected one becomes connected (once, audited), facts are kept
/// where a heartbeat brought some, a repeated or unknown cluster is harmless, and a later
/// group moves the time on.
#[tokio::test]
async fn heartbeats_are_stored_in_groups() {
    // No tunnel is open here, so the status sweeper would rightly mark these clusters
    // disconnected once the agent timeout has passed since start: keep it out of the test.
    let (app, admin) = TestApp::spawn_with(fast_env(&[("WARDEN_AGENT_TIMEOUT_MS", "600000")]))
        .await
        .with_admin()
        .await;
    let mut ids = Vec::new();
    for name in ["hb-1", "hb-2", "hb-3"] {
        let (r, _) = import(&admin, name, "default").await;
        ids.push(warden_domain::ids::ClusterId::parse(r["id"].as_str().unwrap()).unwrap());
    }
    let facts = warden_domain::dto::ClusterFacts {
        kubernetes_version: Some("v1.32.4".into()),
        node_count: 3,
        agent_version: Some("0.1.0".into()),
        ..Default::default()
    };
    let bad = warden_domain::dto::ClusterFacts {
        kubernetes_version: Some("v1.32.4".into()),
        namespaces: vec!["n".into(); 100_000],
        ..Default::default()
    };
    let group = vec![
        (ids[0], None),
        (ids[1], Some(bad)),
        (ids[0], None),
        (ids[2], Some(facts)),
        // No such cluster.
        (warden_domain::ids::ClusterId::new(), None),
    ];
    warden_domain::clusters::agents::record_heartbeats(app.services(), &group, &|_| true)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for name in ["hb-1", "hb-2", "hb-3"] {
        let c = admin.get(&format!("/api/v1/clusters/{name}")).await.json();
        assert_eq!(c["status"], "connected", "{c}");
        assert!(c["last_seen"].is_string(), "{c}");
        seen.push(c["last_seen"].clone());
    }
    let c3 = admin.get("/api/v1/clusters/hb-3").await.json();
    assert_eq!(c3["kubernetes_version"], "v1.32.4");
    assert_eq!(c3["node_count"], 3);
    let c1 = admin.get("/api/v1/clusters/hb-1").await.json();
    assert!(c1["kubernetes_version"].is_null(), "{c1}");
    let c2 = admin.get("/api/v1/clusters/hb-2").await.json();
    assert!(
        c2["kubernetes_version"].is_null(),
        "facts out of bounds are not stored: {c2}"
    );
    let connected = audit(&admin, "action=agent.connected").await;
    for name in ["hb-1", "hb-2", "hb-3"] {
        assert_eq!(
            connected.iter().filter(|e| e["cluster"] == name).count(),
            1,
            "{name}: {connected:?}"
        );
    }

    // A heartbeat stored after its tunnel closed (no longer live) keeps the time but does not
    // undo the disconnection.
    let (r, _) = import(&admin, "hb-late", "default").await;
    let late = warden_domain::ids::ClusterId::parse(r["id"].as_str().unwrap()).unwrap();
    warden_domain::clusters::agents::record_heartbeats(app.services(), &[(late, None)], &|_| false)
        .await
        .unwrap();
    let c = admin.get("/api/v1/clusters/hb-late").await.json();
    assert_ne!(c["status"], "connected", "{c}");
    assert!(c["last_seen"].is_string(), "{c}");

    app.clock.advance_secs(30);
    warden_domain::clusters::agents::record_heartbeats(app.services(), &group[..2], &|_| true)
        .await
        .unwrap();
    let c1 = admin.get("/api/v1/clusters/hb-1").await.json();
    assert_ne!(
        c1["last_seen"], seen[0],
        "a later heartbeat moves the time on"
    );
    let c3 = admin.get("/api/v1/clusters/hb-3").await.json();
    assert_eq!(c3["last_seen"], seen[2], "not in the group: unchanged");
    assert_eq!(c3["kubernetes_version"], "v1.32.4", "facts are kept");
    assert_eq!(audit(&admin, "action=agent.connected").await.len(), 3);
}

/// The heartbeat writer checks the senders' agent credentials in one query: revoked ones and
/// those of deleted clusters (no cluster any more) are not valid, nor unknown ones.
#[tokio::test]
async fn heartbeat_groups_tell_which_credentials_are_valid() {
    use sea_orm::{ActiveModelTrait, Set};
    use warden_domain::entities::cluster_agent_credentials as creds;
    let (app, admin) = app().await;
    let (r, _) = import(&admin, "hb-cred", "default").await;
    let cluster = r["id"].as_str().unwrap().to_owned();
    for (id, cluster_id, revoked_at) in [
        ("c-valid", Some(cluster.clone()), None),
        ("c-revoked", Some(cluster.clone()), Some(1)),
        ("c-orphan", None, None),
    ] {
        creds::ActiveModel {
            id: Set(id.into()),
            cluster_id: Set(cluster_id),
            cluster_name: Set("hb-cred".into()),
            secret_hash: Set(format!("hash-{id}")),
            fingerprint: Set(format!("fp-{id}")),
            created_at: Set(0),
            last_used_at: Set(None),
            revoked_at: Set(revoked_at),
            revoked_reason: Set(None),
        }
        .insert(&app.services().db)
        .await
        .unwrap();
    }
    let valid = warden_domain::clusters::agents::valid_credentials(
        app.services(),
        &["c-valid", "c-revoked", "c-orphan", "c-unknown", "c-valid"],
    )
    .await
    .unwrap();
    assert_eq!(valid, ["c-valid".to_owned()].into_iter().collect());
}

/// The close signal of a deletion or a revocation can be missed (another replica made the
/// change, or a heartbeat was stored between the commit and the signal): the next heartbeat
/// ends the tunnel anyway, and says why as the signal would have.
#[tokio::test]
async fn a_missed_close_signal_is_caught_by_the_next_heartbeat_with_its_reason() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use warden_domain::entities::{cluster_agent_credentials as creds, clusters};
    let (app, admin) = app().await;
    let (revoked_sim, deleted_sim) = (Sim::start().await, Sim::start().await);
    let revoked = connected(&app, &admin, &revoked_sim, "revoked").await;
    let deleted = connected(&app, &admin, &deleted_sim, "gone").await;
    let id_of = |name: &'static str| {
        let db = app.state.services.db.clone();
        async move {
            clusters::Entity::find()
                .filter(clusters::Column::Name.eq(name))
                .one(&db)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let (revoked_id, deleted_id) = (id_of("revoked").await, id_of("gone").await);
    // Straight in the database: no signal reaches the tunnels.
    creds::Entity::update_many()
        .col_expr(
            creds::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(Some(1_i64)),
        )
        .col_expr(
            creds::Column::RevokedReason,
            sea_orm::sea_query::Expr::value(Some("rotated by the test")),
        )
        .filter(creds::Column::ClusterId.eq(revoked_id))
        .exec(&app.state.services.db)
        .await
        .unwrap();
    creds::Entity::update_many()
        .col_expr(
            creds::Column::ClusterId,
            sea_orm::sea_query::Expr::value(Option::<String>::None),
        )
        .filter(creds::Column::ClusterId.eq(deleted_id))
        .exec(&app.state.services.db)
        .await
        .unwrap();
    let outcome = |a: RunningAgent| async move {
        match a.outcome().await {
            Err(AgentError::Refused { code, message }) => (code, message),
            other => panic!("{other:?}"),
        }
    };
    let (code, message) = outcome(revoked).await;
    assert_eq!(code, "credential_revoked", "{message}");
    assert!(message.contains("rotated by the test"), "{message}");
    let (code, message) = outcome(deleted).await;
    assert_eq!(code, "cluster_deleted", "{message}");
    assert!(
        message.contains("kubectl delete namespace warden-system"),
        "{message}"
    );
}

/// Sharing a cluster into a project lets that project's grants reach it: it takes
/// `cluster.write` there, as moving the cluster does, not only the owner's administrators
/// seeing the other project. A share someone else made may be kept in an update.
#[tokio::test]
async fn sharing_a_cluster_into_a_project_takes_its_consent() {
    let (app, admin) = app().await;
    for p in ["team-a", "team-b"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let alice = app.user_client(&admin, "alice@example.com").await;
    admin
        .bind_user("alice@example.com", "PROJECT_ADMIN", "team-a", &[])
        .await;
    admin
        .bind_user("alice@example.com", "PROJECT_READ_ONLY", "team-b", &[])
        .await;
    alice
        .post(
            "/api/v1/clusters",
            json!({"name": "a-1", "project": "team-a", "shared_with": ["team-b"]}),
        )
        .await
        .assert_status(403);
    alice
        .post(
            "/api/v1/clusters",
            json!({"name": "a-1", "project": "team-a"}),
        )
        .await
        .assert_status(201);
    alice
        .patch("/api/v1/clusters/a-1", json!({"shared_with": ["team-b"]}))
        .await
        .assert_status(403);
    let c = admin.get("/api/v1/clusters/a-1").await.json();
    assert!(!c.to_string().contains("team-b"), "{c}");
    // team-b's administrator (here the organization's) shares it; alice keeps the share while
    // changing something else, and may take it away (her cluster).
    admin
        .patch("/api/v1/clusters/a-1", json!({"shared_with": ["team-b"]}))
        .await
        .assert_status(200);
    alice
        .patch(
            "/api/v1/clusters/a-1",
            json!({"description": "ours", "shared_with": ["team-b"]}),
        )
        .await
        .assert_status(200);
    alice
        .patch("/api/v1/clusters/a-1", json!({"shared_with": []}))
        .await
        .assert_status(200);
    let denied = audit(&admin, "outcome=denied&actor=alice@example.com").await;
    assert!(denied.len() >= 2, "{denied:?}");
}

/// A reader of one project a cluster is shared with sees whose cluster it is, not which other
/// projects it is shared with (the project list hides those from them too).
#[tokio::test]
async fn a_sharing_projects_reader_does_not_learn_the_other_projects() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["owner", "team-b", "secret-merger"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    admin
        .post(
            "/api/v1/clusters",
            json!({"name": "shared-1", "project": "owner", "shared_with": ["team-b", "secret-merger"]}),
        )
        .await
        .assert_status(201);
    let bob = app.user_client(&admin, "bob@example.com").await;
    admin
        .bind_user("bob@example.com", "PROJECT_READ_ONLY", "team-b", &[])
        .await;
    let one = bob
        .get("/api/v1/clusters/shared-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(one["project"], "owner", "{one}");
    assert_eq!(one["shared_with"], json!(["team-b"]), "{one}");
    let list = bob.get("/api/v1/clusters").await.assert_status(200).json();
    assert_eq!(list["items"][0]["shared_with"], json!(["team-b"]), "{list}");
    assert!(!list.to_string().contains("secret-merger"), "{list}");
    let all = admin
        .get("/api/v1/clusters/shared-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        all["shared_with"],
        json!(["secret-merger", "team-b"]),
        "{all}"
    );
}

/// Objects are looked up by name or id: a new name shaped like an id is refused.
#[tokio::test]
async fn names_shaped_like_ids_are_refused() {
    let (_app, admin) = TestApp::spawn().await.with_admin().await;
    let id = "a3f1c2d4-5b6e-4f70-8192-a3b4c5d6e7f8";
    for (path, body) in [
        ("/api/v1/projects", json!({"name": id})),
        ("/api/v1/groups", json!({"name": id})),
        (
            "/api/v1/roles",
            json!({"name": id, "scope": "project", "permissions": ["project.read"]}),
        ),
    ] {
        let r = admin.post(path, body).await.assert_status(422);
        assert!(
            r.json()["error"]["fields"]["name"].is_string(),
            "{}",
            r.body
        );
    }
}

/// Made-up manifest links, from anyone, are sampled as the other anonymous refusals: a flood
/// writes the sample's rows, then one summary, not a row each.
#[tokio::test]
async fn a_flood_of_made_up_manifest_links_is_sampled_not_written_one_by_one() {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use warden_domain::audit::RefusalSampler;
    use warden_domain::entities::audit_events;
    let app = TestApp::spawn_with(BTreeMap::from([(
        "WARDEN_RATE_LIMIT_AGENT".to_owned(),
        "100000".to_owned(),
    )]))
    .await;
    let flood = RefusalSampler::PER_WINDOW as usize + 30;
    let http = reqwest::Client::new();
    for i in 0..flood {
        let r = http
            .get(format!("{}/agent/v1/manifests/made-up-{i}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let db = &app.services().db;
    let rows = |action: &'static str| async move {
        audit_events::Entity::find()
            .filter(audit_events::Column::Action.eq(action))
            .count(db)
            .await
            .unwrap()
    };
    assert_eq!(
        rows("agent.manifest_download").await,
        RefusalSampler::PER_WINDOW as u64
    );
    app.clock.advance_secs(61);
    app.services().flush_refusals().await.unwrap();
    assert_eq!(rows("agent.manifest_download.sampled").await, 1);
}
