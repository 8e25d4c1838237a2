//! The Kubernetes API gateway with the real `/usr/bin/kubectl`, against kubesim clusters
//! reached through the gateway's transport: the seed article's scenario, changes taking effect
//! on the next request, exec/watch/log streaming, client-supplied credentials, foreign
//! certificates, settings, and the audit rows of it all.

use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_server::gateway::testkit::{Kubectl, KubectlOutput, RunningAgent};
use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
use warden_server::testing::{Client, TestApp};

const PROD: &str = "prod-1";
const LAB: &str = "lab-1";

struct World {
    app: TestApp,
    admin: Client,
    prod: kubesim::KubeSim,
    _lab: kubesim::KubeSim,
    dir: tempfile::TempDir,
    /// With [`World::via_agent`]: the agent serving `prod-1` (stops when dropped).
    _agent: Option<RunningAgent>,
}

/// How `prod-1` is reached: a direct connection, or the agent's tunnel as in production.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Agent,
}

fn endpoint(sim: &kubesim::KubeSim) -> DirectEndpoint {
    DirectEndpoint {
        url: sim.url().to_owned(),
        ca_pem: sim.ca_pem().to_owned(),
        credential: DirectCredential::Bearer(sim.admin_token().to_owned()),
    }
}

impl World {
    /// Projects production (owns `prod-1`, shared into dev), dev and research (owns `lab-1`);
    /// john is PROJECT_ADMIN on production, sally NAMESPACE_ADMIN on `apple` in dev.
    async fn new() -> World {
        Self::build(Via::Direct).await
    }

    /// The same world with `prod-1` reached through a real agent's tunnel.
    async fn via_agent() -> World {
        Self::build(Via::Agent).await
    }

    async fn build(via: Via) -> World {
        let (app, admin) = TestApp::spawn().await.with_admin().await;
        for p in ["production", "dev", "research"] {
            admin
                .post("/api/v1/projects", json!({"name": p}))
                .await
                .assert_status(201);
        }
        let prod = kubesim::KubeSim::start().await.expect("kubesim");
        let lab = kubesim::KubeSim::start().await.expect("kubesim");
        for ns in ["apple", "banana"] {
            prod.store()
                .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .expect("namespace");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = match via {
            Via::Direct => {
                app.import_direct_cluster(PROD, "production", &["dev"], endpoint(&prod))
                    .await;
                None
            }
            Via::Agent => Some(
                app.connect_agent(&admin, &prod, dir.path(), PROD, "production", &["dev"])
                    .await,
            ),
        };
        app.import_direct_cluster(LAB, "research", &[], endpoint(&lab))
            .await;
        let w = World {
            app,
            admin,
            prod,
            _lab: lab,
            dir,
            _agent: agent,
        };
        w.user("john@example.com", "PROJECT_ADMIN", "production", &[])
            .await;
        w.user("sally@example.com", "NAMESPACE_ADMIN", "dev", &["apple"])
            .await;
        w
    }

    /// Create a user bound to `role`; returns the binding's id.
    async fn user(&self, email: &str, role: &str, project: &str, namespaces: &[&str]) -> String {
        let _ = self.app.user_client(&self.admin, email).await;
        self.bind(email, role, project, namespaces).await
    }

    async fn bind(&self, email: &str, role: &str, project: &str, namespaces: &[&str]) -> String {
        let mut body =
            json!({"subject": {"kind": "user", "name": email}, "role": role, "project": project});
        if !namespaces.is_empty() {
            body["namespaces"] = json!(namespaces);
        }
        let r = self
            .admin
            .post("/api/v1/bindings", body)
            .await
            .assert_status(201);
        r.json()["id"].as_str().expect("binding id").to_owned()
    }

    async fn signed_in(&self, email: &str) -> Client {
        let c = self.app.client();
        c.login(email, warden_server::testing::USER_PASSWORD)
            .await
            .assert_status(200);
        c
    }

    async fn kubeconfig(&self, c: &Client, cluster: Option<&str>) -> String {
        let path = match cluster {
            Some(n) => format!("/api/v1/kubeconfig?cluster={n}"),
            None => "/api/v1/kubeconfig".to_owned(),
        };
        let r = c.get(&path).await.assert_status(200);
        assert_eq!(r.headers["content-type"], "application/yaml");
        r.body
    }

    fn kubectl(&self, who: &str, kubeconfig: &str) -> Kubectl {
        Kubectl::new(&self.dir.path().join(who), kubeconfig)
    }

    /// The first admin, signed in now (sessions expire when a test moves the clock).
    async fn admin_now(&self) -> Client {
        let c = self.app.client();
        c.login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);
        c
    }

    /// A value of Warden's `/metrics` (a series without labels).
    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .app
            .client()
            .get("/metrics")
            .await
            .assert_status(200)
            .body;
        warden_server::testing::metric(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// Every kube_api audit event, oldest first.
    async fn kube_events(&self) -> Vec<Value> {
        self.app.gateway().flush_audit().await;
        let admin = self.admin_now().await;
        let mut out = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/audit/events?kind=kube_api&limit=500&cursor={c}"),
                None => "/api/v1/audit/events?kind=kube_api&limit=500".to_owned(),
            };
            let page = admin.get(&path).await.assert_status(200).json();
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(n) => cursor = Some(n.to_owned()),
                None => break,
            }
        }
        out.reverse();
        out
    }

    fn has_rolebinding(&self, ns: &str, name: &str) -> bool {
        self.prod.store().get("rolebindings", ns, name).is_some()
    }

    /// The name of the user's service account on `prod-1` now, if any (Warden names each one
    /// afresh: `u-<email slug>-<random>`).
    fn sa_of(&self, email: &str) -> Option<String> {
        sa_name_on(&self.prod, email)
    }

    fn sa(&self, email: &str) -> String {
        self.sa_of(email)
            .unwrap_or_else(|| panic!("no service account for {email} on {PROD}"))
    }
}

/// The name of the user's service account on the cluster, found by its `warden.dev/email`
/// annotation.
fn sa_name_on(sim: &kubesim::KubeSim, email: &str) -> Option<String> {
    let found: Vec<String> = sim
        .store()
        .list("serviceaccounts", Some("warden-system"))
        .into_iter()
        .filter(|sa| sa["metadata"]["annotations"]["warden.dev/email"] == email)
        .filter_map(|sa| sa["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        found.len() <= 1,
        "{email} has several service accounts: {found:?}"
    );
    found.into_iter().next()
}

fn pod_yaml(name: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

#[track_caller]
fn forbidden(out: &KubectlOutput) {
    assert_ne!(out.code, 0, "should be refused: {}", out.stdout);
    assert!(
        out.stderr.to_lowercase().contains("forbidden"),
        "expected Forbidden: {}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------

/// The seed article: john sees his own service account; sally works in `apple` and is refused
/// elsewhere; the cluster of a project she has no part in is not in her kubeconfig.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_article_scenario() {
    let w = World::new().await;
    let john = w.signed_in("john@example.com").await;
    let jk = w.kubectl("john", &w.kubeconfig(&john, None).await);
    let out = jk
        .run(&["get", "serviceaccounts", "-n", "warden-system"])
        .await
        .expect_ok();
    assert!(
        out.stdout.contains(&w.sa("john@example.com")),
        "{}",
        out.stdout
    );
    // Full access as PROJECT_ADMIN of the owning project: cluster-wide.
    jk.run(&["get", "namespaces"]).await.expect_ok();
    assert!(w
        .prod
        .store()
        .get(
            "clusterrolebindings",
            "",
            &format!("{}.full-access", w.sa("john@example.com"))
        )
        .is_some());

    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, None).await;
    let doc: serde_yaml::Value = serde_yaml::from_str(&kubeconfig).unwrap();
    let contexts: Vec<&str> = doc["contexts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        contexts,
        vec![format!("warden-{PROD}")],
        "only the cluster shared into dev"
    );
    // Her grant on it is one namespace: the context defaults to it.
    assert_eq!(doc["contexts"][0]["context"]["namespace"], "apple");
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"].as_str().unwrap(),
        format!("{}/clusters/{PROD}", w.app.gateway_url)
    );
    let sk = w.kubectl("sally", &kubeconfig);
    sk.run(&["get", "pods"]).await.expect_ok();
    sk.run(&["--context", &format!("warden-{LAB}"), "get", "pods"])
        .await
        .expect_err("context was not found");

    sk.run_with_stdin(
        &["apply", "-n", "apple", "-f", "-"],
        Some(&pod_yaml("web", "sleep 3600")),
    )
    .await
    .expect_ok();
    let out = sk
        .run(&["get", "pod", "web", "-n", "apple", "-o", "name"])
        .await
        .expect_ok();
    assert_eq!(out.stdout.trim(), "pod/web");
    sk.run(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "apple",
        "--from-literal=colour=red",
    ])
    .await
    .expect_ok();
    let out = sk
        .run(&[
            "get",
            "configmap",
            "cfg",
            "-n",
            "apple",
            "-o",
            "jsonpath={.data.colour}",
        ])
        .await
        .expect_ok();
    assert_eq!(out.stdout, "red");
    sk.run(&["delete", "configmap", "cfg", "-n", "apple"])
        .await
        .expect_ok();
    sk.run(&["delete", "pod", "web", "-n", "apple", "--wait=false"])
        .await
        .expect_ok();
    assert!(w.prod.store().get("pods", "apple", "web").is_none());
    assert!(w.prod.store().get("configmaps", "apple", "cfg").is_none());

    // Refusals speak of her and of what Warden grants her, not of a service account: the
    // cluster's own (a cluster-scoped read), reworded, and Warden's (another namespace).
    let out = sk.run(&["get", "namespaces"]).await;
    forbidden(&out);
    assert!(
        out.stderr.contains(&format!(
            "namespaces is forbidden: sally@example.com cannot list namespaces on cluster {PROD}: Warden grants you write in namespace apple (project dev). Ask a project administrator of dev for more"
        )) && !out.stderr.contains("serviceaccount"),
        "{}",
        out.stderr
    );
    let out = sk.run(&["get", "pods", "-n", "default"]).await;
    forbidden(&out);
    assert!(
        out.stderr.contains(&format!(
            "pods is forbidden: sally@example.com cannot list pods in namespace default of cluster {PROD}: Warden grants you write in namespace apple (project dev)"
        )),
        "{}",
        out.stderr
    );
    // The way out: a pre-filled access request (the role that would allow it).
    assert!(
        out.stderr.contains(&format!(
            "/access?project=dev&cluster={PROD}&namespaces=default&role=NAMESPACE_READ_ONLY"
        )),
        "{}",
        out.stderr
    );
    let out = sk.run(&["create", "configmap", "x", "-n", "default"]).await;
    forbidden(&out);
    assert!(
        out.stderr
            .contains("namespaces=default&role=NAMESPACE_ADMIN"),
        "{}",
        out.stderr
    );
    forbidden(&sk.run(&["get", "pods", "-n", "banana"]).await);
    // Her service account and its one RoleBinding, labelled for Warden.
    let sa = w
        .prod
        .store()
        .get(
            "serviceaccounts",
            "warden-system",
            &w.sa("sally@example.com"),
        )
        .expect("sally's SA");
    assert_eq!(
        sa["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "warden"
    );
    assert!(w.has_rolebinding(
        "apple",
        &format!("{}.namespace-write", w.sa("sally@example.com"))
    ));
    assert!(w
        .prod
        .store()
        .get(
            "clusterrolebindings",
            "",
            &format!("{}.full-access", w.sa("sally@example.com"))
        )
        .is_none());
    // No legacy token Secret, only the anchor her tokens are bound to.
    let secrets = w.prod.store().list("secrets", Some("warden-system"));
    assert!(secrets
        .iter()
        .all(|s| s["type"] != "kubernetes.io/service-account-token"));

    // Audit: every request of the scenario, with outcomes.
    let events = w.kube_events().await;
    let find = |actor: &str, verb: &str, resource: &str, ns: Option<&str>| {
        events
            .iter()
            .filter(|e| {
                e["actor"] == actor
                    && e["action"] == format!("kube.{verb}")
                    && e["resource_kind"] == resource
                    && e["namespace"].as_str() == ns
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let created = find("sally@example.com", "create", "pods", Some("apple"));
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["outcome"], "allowed");
    assert_eq!(created[0]["status"], 201);
    assert_eq!(created[0]["cluster"], PROD);
    assert_eq!(created[0]["project"], "dev");
    assert_eq!(created[0]["session_type"], "cli");
    assert_eq!(created[0]["source_ip"], "127.0.0.1");
    assert!(created[0]["duration_ms"].as_i64().is_some());
    assert!(created[0]["details"]["bytes_out"].as_u64().unwrap() > 0);
    let denied = find("sally@example.com", "list", "namespaces", None);
    assert!(
        !denied.is_empty()
            && denied
                .iter()
                .all(|e| e["outcome"] == "denied" && e["status"] == 403),
        "{denied:?}"
    );
    assert_eq!(
        find("sally@example.com", "delete", "configmaps", Some("apple")).len(),
        1
    );
    assert_eq!(
        find(
            "john@example.com",
            "list",
            "serviceaccounts",
            Some("warden-system")
        )
        .len(),
        1
    );
    assert!(events.iter().all(|e| e["kind"] == "kube_api"));
    // Downloads are audited too.
    w.app.services().audit.flush().await;
    let dl = w
        .admin
        .get("/api/v1/audit/events?action=kubeconfig.download")
        .await
        .json();
    assert_eq!(dl["items"].as_array().unwrap().len(), 2);
}

/// Revocation, binding changes, deactivation and expiry take effect on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_take_effect_on_the_next_request() {
    changes_take_effect(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_take_effect_on_the_next_request_through_the_agent() {
    changes_take_effect(World::via_agent().await).await;
}

async fn changes_take_effect(w: World) {
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();

    // She revokes her own kubeconfigs: refused at once, with a message that says so.
    let r = sally
        .post("/api/v1/kubeconfig/revoke", json!({}))
        .await
        .assert_status(200);
    assert_eq!(r.json()["credentials_revoked"], 1);
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("revoked");
    sk.set_kubeconfig(&w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();

    // An admin revokes it (kubeconfig.write); john may not.
    let john = w.signed_in("john@example.com").await;
    john.post(
        "/api/v1/users/sally@example.com/kubeconfig/revoke",
        json!({}),
    )
    .await
    .assert_status(403);
    w.admin
        .post(
            "/api/v1/users/sally@example.com/kubeconfig/revoke",
            json!({}),
        )
        .await
        .assert_status(200);
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("revoked");
    sk.set_kubeconfig(&w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();

    // Her binding removed: the next request is refused and her RoleBinding is gone.
    let old_sa = w.sa("sally@example.com");
    assert!(w.has_rolebinding("apple", &format!("{old_sa}.namespace-write")));
    let bindings = w.admin.get("/api/v1/bindings?project=dev").await.json();
    let id = bindings["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"]["name"] == "sally@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.admin
        .delete(&format!("/api/v1/bindings/{id}"))
        .await
        .assert_status(204);
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("no kubectl access");
    assert!(!w.has_rolebinding("apple", &format!("{old_sa}.namespace-write")));
    assert!(w.sa_of("sally@example.com").is_none());

    // A binding added works on the next request, with the same kubeconfig.
    w.bind("sally@example.com", "NAMESPACE_ADMIN", "dev", &["banana"])
        .await;
    sk.run(&["get", "pods", "-n", "banana"]).await.expect_ok();
    assert!(w.has_rolebinding(
        "banana",
        &format!("{}.namespace-write", w.sa("sally@example.com"))
    ));
    forbidden(&sk.run(&["get", "pods", "-n", "apple"]).await);
    // Reconciled, not appended: a second grant adds, a narrower one replaces.
    w.bind(
        "sally@example.com",
        "NAMESPACE_READ_ONLY",
        "dev",
        &["apple"],
    )
    .await;
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    assert!(w.has_rolebinding(
        "apple",
        &format!("{}.namespace-read", w.sa("sally@example.com"))
    ));
    forbidden(&sk.run(&["create", "configmap", "x", "-n", "apple"]).await);

    // Deactivated: refused.
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    sk.run(&["get", "pods", "-n", "banana"])
        .await
        .expect_err("deactivated");
    w.app.gateway().sweep_now().await;
    assert!(w.sa_of("sally@example.com").is_none());
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "active"}),
        )
        .await
        .assert_status(200);
    // Reactivated, she is back, but the kubeconfig she held (which may be in someone else's
    // hands) stays dead: she signs in again and downloads a new one.
    sk.run(&["get", "pods", "-n", "banana"])
        .await
        .expect_err("revoked");
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally-again", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "banana"]).await.expect_ok();

    // Expired: the credential's 8 hours pass.
    w.app.clock.advance_secs(8 * 3600 + 60);
    sk.run(&["get", "pods", "-n", "banana"])
        .await
        .expect_err("expired");

    let events = w.kube_events().await;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for needle in ["revoked", "deactivated", "expired", "no binding grants"] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no denial for {needle}: {reasons:?}"
        );
    }
}

/// Streaming and upgrades: exec with a TTY for a namespace admin, refused for a read-only
/// user; `get pods -w` and `logs -f` stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_watch_and_logs_stream() {
    exec_watch_and_logs(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_watch_and_logs_stream_through_the_agent() {
    exec_watch_and_logs(World::via_agent().await).await;
}

async fn exec_watch_and_logs(w: World) {
    w.user("rita@example.com", "NAMESPACE_READ_ONLY", "dev", &["apple"])
        .await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    let ticker = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    sk.run_with_stdin(
        &["apply", "-n", "apple", "-f", "-"],
        Some(&pod_yaml("box", ticker)),
    )
    .await
    .expect_ok();

    // exec (no TTY): the command's output and exit code.
    let out = sk
        .run(&[
            "exec",
            "-n",
            "apple",
            "box",
            "--",
            "sh",
            "-c",
            "echo hello from $HOSTNAME; exit 3",
        ])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("hello from box"), "{out:?}");
    // exec -it under a real terminal (script(1) gives kubectl a pty). The command lingers after
    // its answer: script(1) can lose what its child wrote just before exiting.
    let cmd = format!(
        "/usr/bin/kubectl exec -it -n apple box -- sh -c 'tty >/dev/null && echo TTY-OK; read line; echo got:$line; sleep 1'"
    );
    let mut c = tokio::process::Command::new("/usr/bin/script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", w.dir.path().join("sally"))
        .env("KUBECONFIG", sk.kubeconfig_path())
        .env("KUBECACHEDIR", w.dir.path().join("sally").join("cache"))
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut sent = false;
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, stdout.next_line()).await {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("TTY-OK") && !sent {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(b"banana\r").await.unwrap();
            sent = true;
        }
        if line.contains("got:banana") {
            break;
        }
    }
    assert!(
        seen.contains("TTY-OK") && seen.contains("got:banana"),
        "{seen}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;

    // A read-only user may not exec, whatever the cluster says.
    let rita = w.signed_in("rita@example.com").await;
    let rk = w.kubectl("rita", &w.kubeconfig(&rita, None).await);
    rk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    rk.run(&["exec", "-n", "apple", "box", "--", "true"])
        .await
        .expect_err("read-only access never allows exec");
    rk.run(&["get", "secrets", "-n", "apple"])
        .await
        .expect_err("read-only access never allows secrets");

    // attach: the namespace admin talks to a container's main process; read-only may not
    // attach or port-forward.
    let echoer = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: echoer\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    stdin: true\n    command: [\"sh\", \"-c\", \"while read line; do echo got:$line; done\"]\n";
    sk.run_with_stdin(&["apply", "-n", "apple", "-f", "-"], Some(echoer))
        .await
        .expect_ok();
    // (As with a real cluster, the session stays open after kubectl's stdin ends: read, then
    // stop it.)
    let mut attach = sk
        .command(&["attach", "-i", "-n", "apple", "echoer", "-c", "main"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = attach.stdin.take().unwrap();
        stdin.write_all(b"ping\n").await.unwrap();
        stdin.flush().await.unwrap();
        let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
        {
            seen.push_str(&line);
            if line.contains("got:ping") {
                break;
            }
        }
        assert!(seen.contains("got:ping"), "attach output: {seen}");
    }
    let _ = attach.kill().await;
    let _ = attach.wait().await;
    rk.run(&["attach", "-n", "apple", "echoer", "-c", "main"])
        .await
        .expect_err("read-only access never allows exec, attach");
    rk.run(&["port-forward", "-n", "apple", "pod/box", "18080:80"])
        .await
        .expect_err("read-only access never allows");

    // logs -f streams lines as they are written.
    let mut logs = sk
        .command(&["logs", "-f", "-n", "apple", "box"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let mut ticks = 0;
    let start = std::time::Instant::now();
    while ticks < 5 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a log line in time")
            .unwrap()
            .expect("the stream stays open");
        if line.starts_with("tick") {
            ticks += 1;
        }
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    let _ = logs.kill().await;

    // get -w streams a change made after it started.
    let mut watch = sk
        .command(&["get", "pods", "-n", "apple", "-w", "-o", "name"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, "pod/box");
    sk.run_with_stdin(
        &["apply", "-n", "apple", "-f", "-"],
        Some(&pod_yaml("late", "sleep 3600")),
    )
    .await
    .expect_ok();
    let mut saw_late = false;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        if line == "pod/late" {
            saw_late = true;
            break;
        }
    }
    assert!(saw_late, "the watch did not stream the new pod");
    let _ = watch.kill().await;
    let _ = watch.wait().await;

    let events = w.kube_events().await;
    let exec: Vec<&Value> = events
        .iter()
        .filter(|e| e["resource_kind"] == "pods/exec")
        .collect();
    assert!(exec.iter().any(|e| e["actor"] == "sally@example.com"
        && e["outcome"] == "allowed"
        && e["status"] == 101
        && e["details"]["upgraded"] == true));
    assert!(exec.iter().any(|e| e["actor"] == "rita@example.com"
        && e["outcome"] == "denied"
        && e["status"] == 403));
    let watches: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "kube.watch" && e["actor"] == "sally@example.com")
        .collect();
    assert!(!watches.is_empty());
    assert!(events
        .iter()
        .any(|e| e["resource_kind"] == "pods/log"
            && e["details"]["bytes_out"].as_u64().unwrap_or(0) > 0));
}

fn identity_from(kubeconfig: &str) -> (String, String) {
    let doc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).unwrap();
    let b64 = |v: &serde_yaml::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let u = &doc["users"][0]["user"];
    (
        b64(&u["client-certificate-data"]),
        b64(&u["client-key-data"]),
    )
}

fn gateway_ca(kubeconfig: &str) -> String {
    let doc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(
                doc["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap()
}

fn http_with(cert: &str, key: &str, ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// A client's own Authorization or Impersonate-* headers gain nothing; a certificate from
/// another CA is refused during the TLS handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_credentials_and_foreign_certificates_gain_nothing() {
    client_credentials_gain_nothing(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_credentials_and_foreign_certificates_gain_nothing_through_the_agent() {
    client_credentials_gain_nothing(World::via_agent().await).await;
}

async fn client_credentials_gain_nothing(w: World) {
    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, None).await;
    let sk = w.kubectl("sally", &kubeconfig);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    forbidden(
        &sk.run(&[
            "--as=system:admin",
            "--as-group=system:masters",
            "get",
            "namespaces",
        ])
        .await,
    );
    forbidden(
        &sk.run(&["--token", w.prod.admin_token(), "get", "namespaces"])
            .await,
    );

    let (cert, key) = identity_from(&kubeconfig);
    let ca = gateway_ca(&kubeconfig);
    let http = http_with(&cert, &key, &ca);
    let url = format!("{}/clusters/{PROD}/api/v1/namespaces", w.app.gateway_url);
    let r = http
        .get(&url)
        .header("Authorization", format!("Bearer {}", w.prod.admin_token()))
        .header("Impersonate-User", "system:admin")
        .header("Impersonate-Group", "system:masters")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let audit_id = r.headers()["audit-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    // Said to her in her words; the cluster's own refusal, kept in the audit log, shows the
    // request ran as her service account (not the token or identity she sent).
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("sally@example.com cannot list namespaces"),
        "{body}"
    );
    let row = w
        .kube_events()
        .await
        .into_iter()
        .find(|e| e["id"] == audit_id.as_str())
        .expect("the refused request's audit row");
    assert!(
        row["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(
                "system:serviceaccount:warden-system:{}",
                w.sa("sally@example.com")
            )),
        "{row}"
    );
    // The browser-style bearer subprotocol is dropped as well.
    let r = http
        .get(format!(
            "{}/clusters/{PROD}/api/v1/namespaces/default/pods",
            w.app.gateway_url
        ))
        .header(
            "Sec-WebSocket-Protocol",
            format!(
                "base64url.bearer.authorization.k8s.io.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(w.prod.admin_token())
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A certificate from another CA (the cluster's own!) is refused at TLS.
    let (foreign_cert, foreign_key) = w
        .prod
        .client_cert_for("kubernetes-admin", &["system:masters"])
        .unwrap();
    let foreign = http_with(&foreign_cert, &foreign_key, &ca);
    let e = foreign.get(&url).send().await.expect_err("refused at TLS");
    assert!(e.is_connect() || e.is_request(), "{e:?}");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&kubeconfig).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    doc["users"][0]["user"]["client-certificate-data"] = b64(&foreign_cert).into();
    doc["users"][0]["user"]["client-key-data"] = b64(&foreign_key).into();
    let fk = w.kubectl("mallory", &serde_yaml::to_string(&doc).unwrap());
    let out = fk.run(&["get", "pods", "-n", "apple"]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("tls") || out.stderr.contains("certificate"),
        "{}",
        out.stderr
    );

    // No client certificate at all: refused at TLS too.
    let bare = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(bare.get(&url).send().await.is_err());

    let events = w.kube_events().await;
    let ev = events
        .iter()
        .find(|e| e["id"] == audit_id)
        .expect("the Audit-ID names the event");
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["resource_kind"], "namespaces");
    assert!(
        events.iter().all(|e| e["actor"] == "sally@example.com"),
        "no event for the refused handshakes"
    );

    // A kubeconfig downloaded for one cluster reaches that cluster only, even for a user who
    // may reach others: pointing it at another cluster's path is refused.
    let admin = w.admin_now().await;
    let lab_only = w.kubeconfig(&admin, Some(LAB)).await;
    let lk = w.kubectl("admin-lab", &lab_only);
    lk.run(&["get", "namespaces"]).await.expect_ok();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&lab_only).unwrap();
    let server = doc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .replace(&format!("/clusters/{LAB}"), &format!("/clusters/{PROD}"));
    doc["clusters"][0]["cluster"]["server"] = server.into();
    lk.set_kubeconfig(&serde_yaml::to_string(&doc).unwrap());
    // (kubectl's discovery shows no message for a refusal; the API answer carries it.)
    lk.run(&["get", "namespaces"]).await.expect_err("Forbidden");
    let (lab_cert, lab_key) = identity_from(&lab_only);
    let r = http_with(&lab_cert, &lab_key, &ca)
        .get(format!(
            "{}/clusters/{PROD}/api/v1/namespaces",
            w.app.gateway_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("issued for cluster {LAB} only")),
        "{body}"
    );
    let all = w.kubeconfig(&admin, None).await;
    lk.set_kubeconfig(&all);
    lk.run(&["--context", &format!("warden-{PROD}"), "get", "namespaces"])
        .await
        .expect_ok();
}

/// The audit log holds exactly one row per request, with the outcome, status and Audit-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_rows_match_requests() {
    audit_rows_match(World::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_rows_match_requests_through_the_agent() {
    audit_rows_match(World::via_agent().await).await;
}

async fn audit_rows_match(w: World) {
    w.user("rita@example.com", "NAMESPACE_READ_ONLY", "dev", &["apple"])
        .await;
    let sally = w.signed_in("sally@example.com").await;
    let rita = w.signed_in("rita@example.com").await;
    let sk = w.kubeconfig(&sally, None).await;
    let rk = w.kubeconfig(&rita, None).await;
    let (sc, skey) = identity_from(&sk);
    let (rc, rkey) = identity_from(&rk);
    let ca = gateway_ca(&sk);
    let s = http_with(&sc, &skey, &ca);
    let r = http_with(&rc, &rkey, &ca);
    let base = format!("{}/clusters/{PROD}", w.app.gateway_url);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"k": "v"}});
    // (client, method, path, body, expected status, expected outcome)
    let calls: Vec<(&reqwest::Client, &str, String, Option<Value>, u16, &str)> = vec![
        (
            &s,
            "POST",
            format!("{base}/api/v1/namespaces/apple/configmaps"),
            Some(cm),
            201,
            "allowed",
        ),
        (
            &s,
            "GET",
            format!("{base}/api/v1/namespaces/apple/configmaps/c1"),
            None,
            200,
            "allowed",
        ),
        (
            &s,
            "GET",
            format!("{base}/api/v1/namespaces"),
            None,
            403,
            "denied",
        ),
        (
            &r,
            "GET",
            format!("{base}/api/v1/namespaces/apple/configmaps"),
            None,
            200,
            "allowed",
        ),
        (
            &r,
            "GET",
            format!("{base}/api/v1/namespaces/apple/secrets"),
            None,
            403,
            "denied",
        ),
        (
            &r,
            "DELETE",
            format!("{base}/api/v1/namespaces/apple/configmaps/c1"),
            None,
            403,
            "denied",
        ),
        (
            &s,
            "DELETE",
            format!("{base}/api/v1/namespaces/apple/configmaps/c1"),
            None,
            200,
            "allowed",
        ),
        (
            &s,
            "GET",
            format!(
                "{}/clusters/{LAB}/api/v1/namespaces/apple/pods",
                w.app.gateway_url
            ),
            None,
            403,
            "denied",
        ),
        (
            &s,
            "GET",
            format!("{}/clusters/nope/api", w.app.gateway_url),
            None,
            403,
            "denied",
        ),
        (
            &s,
            "GET",
            format!("{}/api/v1/pods", w.app.gateway_url),
            None,
            404,
            "denied",
        ),
    ];
    let before = w.kube_events().await.len();
    let stored_before = w.metric("warden_audit_written_events_total").await;
    let mut ids = vec![];
    for (client, method, url, body, status, _) in &calls {
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{method} {url}");
        ids.push(resp.headers()["audit-id"].to_str().unwrap().to_owned());
        let _ = resp.bytes().await;
    }
    let events = w.kube_events().await;
    assert_eq!(events.len() - before, calls.len(), "one row per request");
    // The writer's metrics count what it stored, in transactions it timed.
    assert_eq!(
        w.metric("warden_audit_written_events_total").await - stored_before,
        calls.len() as f64
    );
    assert!(w.metric("warden_audit_write_seconds_count").await >= 1.0);
    for ((_, method, _, _, status, outcome), id) in calls.iter().zip(&ids) {
        let ev = events
            .iter()
            .find(|e| &e["id"] == id)
            .unwrap_or_else(|| panic!("no row {id}"));
        assert_eq!(ev["status"], *status, "{ev}");
        assert_eq!(ev["outcome"], *outcome, "{ev}");
        assert_eq!(ev["method"], *method);
        if *outcome == "denied" {
            assert!(ev["reason"].as_str().is_some_and(|r| !r.is_empty()), "{ev}");
        }
    }
    // Bytes both ways: the created ConfigMap's JSON went up, the cluster's answer came down.
    let create = events.iter().find(|e| e["id"] == ids[0]).unwrap();
    let sent = serde_json::to_vec(calls[0].3.as_ref().unwrap())
        .unwrap()
        .len() as u64;
    assert_eq!(create["details"]["bytes_in"], sent, "{create}");
    assert!(
        create["details"]["bytes_out"].as_u64().unwrap() > 0,
        "{create}"
    );
    // The chain still verifies.
    assert!(matches!(
        warden_domain::audit::verify_chain(&w.app.services().db)
            .await
            .unwrap(),
        warden_domain::audit::ChainStatus::Intact { .. }
    ));
}

/// Someone without access to a cluster hears what an unknown cluster's name gets, whatever
/// else applies to them there (kubectl disabled for them, a required recent sign-in): the
/// gateway tells nobody which cluster names exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_without_access_answers_as_an_unknown_one() {
    let w = World::new().await;
    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, None).await;
    w.admin
        .post("/api/v1/projects", json!({"name": "vault"}))
        .await
        .assert_status(201);
    w.admin
        .post(
            "/api/v1/clusters",
            json!({"name": "hidden-1", "project": "vault"}),
        )
        .await
        .assert_status(201);
    w.admin
        .patch(
            "/api/v1/users/sally@example.com/kubectl-settings",
            json!({"disable_cli": true}),
        )
        .await
        .assert_status(200);
    // `--raw` (a path on the gateway, with her credential): no discovery first, whose
    // refusals kubectl does not print.
    let k = w.kubectl("sally", &kubeconfig);
    let mut told = vec![];
    for name in ["hidden-1", "no-such-1"] {
        let out = k
            .run(&[
                "get",
                "--raw",
                &format!("/clusters/{name}/api/v1/namespaces/apple/pods"),
            ])
            .await
            .expect_err("no kubectl access to a cluster named");
        told.push(out.stderr.replace(name, "NAME"));
    }
    assert_eq!(told[0], told[1]);
    // Where she has access, the setting is what she hears.
    k.run(&[
        "get",
        "--raw",
        &format!("/clusters/{PROD}/api/v1/namespaces/apple/pods"),
    ])
    .await
    .expect_err("kubectl access is disabled for you");
}

/// Settings: kubectl disabled per user, recent console sign-in, secrets only for org admins,
/// service accounts removed after the idle time; access rules for the settings themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_apply_at_the_gateway() {
    let w = World::new().await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "secrets", "-n", "apple"]).await.expect_ok();

    // Only admins change settings; values are validated; null clears.
    sally
        .patch("/api/v1/kubectl/settings", json!({"disable_cli": true}))
        .await
        .assert_status(403);
    w.admin
        .patch("/api/v1/kubectl/settings", json!({"sa_idle_secs": 5}))
        .await
        .assert_status(422);
    let s = w
        .admin
        .get("/api/v1/users/sally@example.com/kubectl-settings")
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["effective"]["credential_validity_secs"], 8 * 3600);
    sally
        .get("/api/v1/users/sally@example.com/kubectl-settings")
        .await
        .assert_status(200);

    w.admin
        .patch(
            "/api/v1/users/sally@example.com/kubectl-settings",
            json!({"disable_cli": true}),
        )
        .await
        .assert_status(200);
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("disabled");
    let r = sally.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "kubectl_disabled");
    w.admin
        .patch(
            "/api/v1/users/sally@example.com/kubectl-settings",
            json!({"disable_cli": null}),
        )
        .await
        .assert_status(200);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();

    w.admin
        .patch(
            &format!("/api/v1/clusters/{PROD}/kubectl-settings"),
            json!({"secrets_org_admins_only": true}),
        )
        .await
        .assert_status(200);
    sk.run(&["get", "secrets", "-n", "apple"])
        .await
        .expect_err("only organization administrators");
    sk.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();

    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"require_recent_sign_in": true, "recent_sign_in_secs": 3600}),
        )
        .await
        .assert_status(200);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    w.app.clock.advance_secs(2 * 3600);
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("sign-in to the Warden console");
    let sally = w.signed_in("sally@example.com").await;
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    let _ = sally;

    // Idle service accounts are removed (the background sweeper may get there first).
    let old_sa = w.sa("sally@example.com");
    let admin = w.admin_now().await;
    admin
        .patch("/api/v1/kubectl/settings", json!({"sa_idle_secs": 3600}))
        .await
        .assert_status(200);
    w.app.gateway().sweep_now().await;
    assert!(w.sa_of("sally@example.com").is_some(), "used recently");
    w.app.clock.advance_secs(2 * 3600);
    let report = w.app.gateway().sweep_now().await;
    assert!(report.deferred == 0, "{report:?}");
    assert!(w.sa_of("sally@example.com").is_none());
    assert!(!w.has_rolebinding("apple", &format!("{old_sa}.namespace-write")));

    // The OpenAPI document lists the endpoints.
    let doc = admin.get("/api/v1/openapi.json").await.json();
    for p in [
        "/api/v1/kubeconfig",
        "/api/v1/kubeconfig/revoke",
        "/api/v1/users/{user}/kubeconfig/revoke",
        "/api/v1/kubectl/settings",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
}

/// The seed article's scenario again, this time through the agent tunnel: the cluster is
/// imported through the API, its manifest applied with kubectl, and the agent runs with the
/// manifest's own service account (its least RBAC), not as a cluster admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_article_scenario_through_the_agent_tunnel() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for p in ["production", "dev"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    sim.store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apple"}}))
        .expect("namespace");
    let dir = tempfile::tempdir().unwrap();
    let agent = app
        .connect_agent(&admin, &sim, dir.path(), PROD, "production", &["dev"])
        .await;

    let mk = |email: &'static str,
              role: &'static str,
              project: &'static str,
              ns: Option<&'static str>| {
        let admin = &admin;
        let app = &app;
        async move {
            let c = app.user_client(admin, email).await;
            let mut b = json!({"subject": {"kind": "user", "name": email}, "role": role, "project": project});
            if let Some(ns) = ns {
                b["namespaces"] = json!([ns]);
            }
            admin.post("/api/v1/bindings", b).await.assert_status(201);
            c
        }
    };
    let john = mk("john@example.com", "PROJECT_ADMIN", "production", None).await;
    let sally = mk("sally@example.com", "NAMESPACE_ADMIN", "dev", Some("apple")).await;

    let jk = Kubectl::new(
        &dir.path().join("john"),
        &john.get("/api/v1/kubeconfig").await.assert_status(200).body,
    );
    let out = jk
        .run(&["get", "serviceaccounts", "-n", "warden-system"])
        .await
        .expect_ok();
    assert!(
        out.stdout
            .contains(&sa_name_on(&sim, "john@example.com").expect("his service account")),
        "{}",
        out.stdout
    );
    jk.run(&["get", "namespaces"]).await.expect_ok();

    let sk = Kubectl::new(
        &dir.path().join("sally"),
        &sally
            .get("/api/v1/kubeconfig")
            .await
            .assert_status(200)
            .body,
    );
    sk.run_with_stdin(
        &["apply", "-n", "apple", "-f", "-"],
        Some(&pod_yaml("web", "sleep 3600")),
    )
    .await
    .expect_ok();
    assert_eq!(
        sk.run(&["get", "pod", "web", "-n", "apple", "-o", "name"])
            .await
            .expect_ok()
            .stdout
            .trim(),
        "pod/web"
    );
    let out = sk
        .run(&[
            "exec",
            "-n",
            "apple",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi from $HOSTNAME",
        ])
        .await
        .expect_ok();
    assert!(out.stdout.contains("hi from web"), "{out:?}");
    sk.run(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "apple",
        "--from-literal=a=b",
    ])
    .await
    .expect_ok();
    sk.run(&["get", "configmap", "cfg", "-n", "apple"])
        .await
        .expect_ok();
    sk.run(&["delete", "configmap", "cfg", "-n", "apple"])
        .await
        .expect_ok();
    sk.run(&["delete", "pod", "web", "-n", "apple", "--wait=false"])
        .await
        .expect_ok();
    forbidden(&sk.run(&["get", "namespaces"]).await);
    forbidden(&sk.run(&["get", "pods", "-n", "default"]).await);
    forbidden(&sk.run(&["--as=system:admin", "get", "namespaces"]).await);
    let sally_sa = sa_name_on(&sim, "sally@example.com").expect("her service account");
    assert!(sim
        .store()
        .get(
            "rolebindings",
            "apple",
            &format!("{sally_sa}.namespace-write")
        )
        .is_some());

    // A removed binding is enforced through the tunnel too.
    let bindings = admin.get("/api/v1/bindings?project=dev").await.json();
    let id = bindings["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"]["name"] == "sally@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .delete(&format!("/api/v1/bindings/{id}"))
        .await
        .assert_status(204);
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("no kubectl access");
    assert!(sim
        .store()
        .get(
            "rolebindings",
            "apple",
            &format!("{sally_sa}.namespace-write")
        )
        .is_none());

    app.gateway().flush_audit().await;
    let events = admin
        .get("/api/v1/audit/events?kind=kube_api&actor=sally@example.com&limit=500")
        .await
        .json();
    let items = events["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|e| e["resource_kind"] == "pods/exec" && e["status"] == 101));
    assert!(items.iter().any(|e| e["resource_kind"] == "configmaps"
        && e["action"] == "kube.create"
        && e["status"] == 201));
    agent.stop().await;
}

/// A namespace admin's rights end where the namespace does. A RoleBinding in N also governs
/// the Namespace object N (the API server resolves `/api/v1/namespaces/N` to namespace N), so
/// `warden-namespace-write` enumerates what it grants: sally runs workloads in `apple`, but
/// may not relabel it (Pod Security), delete it, mint tokens for its service accounts, or
/// change its quotas, limit ranges or RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_admin_stays_within_the_namespace() {
    let w = World::new().await;
    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, None).await;
    let sk = w.kubectl("sally", &kubeconfig);
    // Workloads: yes.
    sk.run(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "apple",
        "--from-literal=a=b",
    ])
    .await
    .expect_ok();
    sk.run_with_stdin(
        &["apply", "-n", "apple", "-f", "-"],
        Some(&pod_yaml("web", "sleep 3600")),
    )
    .await
    .expect_ok();
    let out = sk
        .run(&["get", "ns", "apple", "-o", "name"])
        .await
        .expect_ok();
    assert_eq!(out.stdout.trim(), "namespace/apple");

    // The namespace itself: read only.
    forbidden(
        &sk.run(&[
            "label",
            "ns",
            "apple",
            "pod-security.kubernetes.io/enforce=privileged",
        ])
        .await,
    );
    forbidden(&sk.run(&["delete", "ns", "apple", "--wait=false"]).await);
    // No tokens for the namespace's service accounts.
    forbidden(&sk.run(&["-n", "apple", "create", "token", "default"]).await);
    // No RBAC of her own making.
    forbidden(
        &sk.run(&[
            "-n",
            "apple",
            "create",
            "rolebinding",
            "mine",
            "--clusterrole=warden-namespace-write",
            "--serviceaccount=apple:default",
        ])
        .await,
    );
    // Quotas and limit ranges: the cluster's authorizer says no (kubesim serves no
    // ResourceQuota kind, so kubectl cannot build one; ask RBAC, then send the writes raw).
    for (verb, resource) in [
        ("create", "resourcequotas"),
        ("patch", "resourcequotas"),
        ("delete", "resourcequotas"),
        ("create", "limitranges"),
        ("update", "limitranges"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("patch", "namespaces"),
        ("delete", "namespaces"),
    ] {
        let out = sk
            .run(&["auth", "can-i", verb, resource, "-n", "apple"])
            .await;
        assert_eq!(out.stdout.trim(), "no", "{verb} {resource}: {out:?}");
    }
    let out = sk
        .run(&[
            "auth",
            "can-i",
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "apple",
        ])
        .await;
    assert_eq!(out.stdout.trim(), "no", "{out:?}");
    for (verb, resource) in [
        ("create", "pods"),
        ("create", "secrets"),
        ("create", "deployments.apps"),
        ("get", "resourcequotas"),
        ("list", "limitranges"),
        ("get", "rolebindings.rbac.authorization.k8s.io"),
    ] {
        let out = sk
            .run(&["auth", "can-i", verb, resource, "-n", "apple"])
            .await;
        assert_eq!(out.stdout.trim(), "yes", "{verb} {resource}: {out:?}");
    }
    let (cert, key) = identity_from(&kubeconfig);
    let http = http_with(&cert, &key, &gateway_ca(&kubeconfig));
    let base = format!(
        "{}/clusters/{PROD}/api/v1/namespaces/apple",
        w.app.gateway_url
    );
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "1000"}}});
    let r = http
        .post(format!("{base}/resourcequotas"))
        .json(&quota)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .patch(format!("{base}/resourcequotas/compute"))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec":{"hard":{"pods":"1000"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("sally@example.com cannot patch resourcequotas in namespace apple"),
        "{body}"
    );

    // Nothing changed on the cluster.
    let ns = w
        .prod
        .store()
        .get("namespaces", "", "apple")
        .expect("apple");
    assert!(
        ns["metadata"]["labels"]
            .get("pod-security.kubernetes.io/enforce")
            .is_none(),
        "{ns}"
    );
    assert!(ns["metadata"].get("deletionTimestamp").is_none(), "{ns}");
    assert!(!w.has_rolebinding("apple", "mine"));
}

/// A GET sent with its path exactly as given (reqwest would resolve `..`): TLS with the
/// client certificate, one HTTP/1.1 request over hyper. The status, the JSON body and the
/// Audit-ID.
async fn raw_get(gateway_url: &str, id: (&str, &str, &str), path: &str) -> (u16, Value, String) {
    raw_get_with(gateway_url, id, path, &[]).await
}

/// `raw_get` with extra headers.
async fn raw_get_with(
    gateway_url: &str,
    (cert, key, ca): (&str, &str, &str),
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, String) {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    let addr: std::net::SocketAddr = gateway_url.trim_start_matches("https://").parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let audit_id = resp
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        audit_id,
    )
}

/// A web page cannot use the gateway with a certificate the browser holds: a request marked
/// by the browser as a page's (`Origin`, `Sec-Fetch-*`), a cross-site WebSocket opening an exec
/// above all, is refused and audited; kubectl sends neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_web_page_cannot_use_the_gateway() {
    let w = World::new().await;
    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, None).await;
    let (cert, key) = identity_from(&kubeconfig);
    let ca = gateway_ca(&kubeconfig);
    let id = (cert.as_str(), key.as_str(), ca.as_str());
    let url = &w.app.gateway_url;
    let list = format!("/clusters/{PROD}/api/v1/namespaces/apple/configmaps");
    let (status, body, _) = raw_get(url, id, &list).await;
    assert_eq!(status, 200, "{body}");
    let exec = format!(
        "/clusters/{PROD}/api/v1/namespaces/apple/pods/web/exec?command=sh&stdin=true&stdout=true&tty=true"
    );
    let upgrade: &[(&str, &str)] = &[
        ("origin", "https://evil.example"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", "v5.channel.k8s.io"),
    ];
    for (path, headers) in [
        (&list, &[("origin", "https://evil.example")][..]),
        (
            &list,
            &[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")][..],
        ),
        (&exec, upgrade),
    ] {
        let (status, body, audit_id) = raw_get_with(url, id, path, headers).await;
        assert_eq!(status, 403, "{path} {headers:?}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("not web pages")),
            "{body}"
        );
        let events = w.kube_events().await;
        let ev = events
            .iter()
            .find(|e| e["id"] == audit_id.as_str())
            .unwrap_or_else(|| panic!("no audit row for {path}"));
        assert_eq!(ev["outcome"], "denied", "{ev}");
    }
    assert!(
        !w.kube_events()
            .await
            .iter()
            .any(|e| e["action"] == "kube.create.start"),
        "no exec was started"
    );
}

/// The gateway forwards the path it checked, so it accepts only canonical paths: the API
/// server decodes `%2F` into a separator after Warden has read the path, so
/// `apple/secrets%2Fx` would pass Warden as resource `secrets/x` (not secrets) and be served
/// as secret `x`. Percent-encoding, `.`/`..` and empty segments are refused with 400 before
/// anything is decided, and audited. Query strings are not paths and stay as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_canonical_paths_are_refused() {
    let w = World::new().await;
    // Secrets for organization admins only: a check on the path Warden reads.
    w.admin
        .patch(
            &format!("/api/v1/clusters/{PROD}/kubectl-settings"),
            json!({"secrets_org_admins_only": true}),
        )
        .await
        .assert_status(200);
    w.prod
        .store()
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "apple"}, "stringData": {"password": "hunter2"}}))
        .expect("secret");
    w.prod
        .store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "apple", "labels": {"colour": "red"}}}))
        .expect("configmap");
    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, None).await;
    let (cert, key) = identity_from(&kubeconfig);
    let ca = gateway_ca(&kubeconfig);
    let id = (cert.as_str(), key.as_str(), ca.as_str());
    let url = &w.app.gateway_url;

    // The canonical paths: the secret is refused by the setting, configmaps are listed, also
    // with an encoded label selector in the query.
    let (status, _, _) = raw_get(
        url,
        id,
        &format!("/clusters/{PROD}/api/v1/namespaces/apple/secrets/x"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, list, _) = raw_get(
        url,
        id,
        &format!("/clusters/{PROD}/api/v1/namespaces/apple/configmaps?labelSelector=colour%3Dred&limit=500"),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "cfg", "{list}");

    let before = w.kube_events().await.len();
    let mut ids = vec![];
    for path in [
        format!("/clusters/{PROD}/api/v1/namespaces/apple%2Fconfigmaps"),
        format!("/clusters/{PROD}/api/v1/namespaces/apple/secrets%2Fx"),
        format!("/clusters/{PROD}/api/v1/namespaces/apple/../kube-system/secrets"),
        format!("/clusters/{PROD}/api/v1/namespaces/apple/./secrets/x"),
        format!("/clusters/{PROD}/api/v1/namespaces//apple/secrets/x"),
        "/clusters/prod%2D1/api/v1/namespaces/apple/configmaps".to_owned(),
        format!("/clusters/../clusters/{PROD}/api/v1/namespaces/apple/secrets/x"),
    ] {
        let (status, body, audit_id) = raw_get(url, id, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            (&body["kind"], &body["reason"], &body["code"]),
            (&json!("Status"), &json!("BadRequest"), &json!(400)),
            "{path}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("the request path is not canonical")),
            "{path}: {body}"
        );
        assert!(body.get("data").is_none(), "{path}: {body}");
        ids.push((path, audit_id));
    }
    let events = w.kube_events().await;
    assert_eq!(events.len() - before, ids.len(), "one row per request");
    for (path, audit_id) in &ids {
        let ev = events
            .iter()
            .find(|e| &e["id"] == audit_id)
            .unwrap_or_else(|| panic!("no audit row for {path}"));
        assert_eq!(ev["outcome"], "denied", "{ev}");
        assert_eq!(ev["status"], 400, "{ev}");
        assert!(
            ev["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not canonical")),
            "{ev}"
        );
        assert!(
            ev["namespace"].is_null(),
            "nothing read from the path: {ev}"
        );
    }
}

/// Bindings someone else made on the cluster for a user's service account (or for every service
/// account of `warden-system`) are found by their subjects, not by Warden's label, and go at the
/// next reconcile: the user gets exactly what Warden grants. Warden's ClusterRoles are
/// repaired too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_bindings_for_a_users_service_account_are_removed() {
    let w = World::via_agent().await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    forbidden(&sk.run(&["get", "nodes"]).await);
    let store = w.prod.store();
    let sally_sa = w.sa("sally@example.com");
    let sa = json!({"kind": "ServiceAccount", "name": sally_sa, "namespace": "warden-system"});
    // A cluster administrator "helps" her outside Warden, under names Warden uses...
    store
        .create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{sally_sa}.cluster-read")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [sa]}))
        .expect("crb");
    // ...for every Warden service account at once...
    store
        .create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "everyone"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:warden-system", "apiGroup": "rbac.authorization.k8s.io"}]}))
        .expect("group crb");
    // Someone also widened Warden's own namespace-write role.
    let mut role = store
        .get("clusterroles", "", "warden-namespace-write")
        .expect("warden's role");
    role["rules"] = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
    for key in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        role["metadata"].as_object_mut().unwrap().remove(key);
    }
    store
        .delete("clusterroles", "", "warden-namespace-write")
        .expect("delete role");
    store.create(role).expect("widened role");
    sk.run(&["get", "nodes"]).await.expect_ok();

    // Her grants change (an administrator adds a read-only namespace): the next request
    // reconciles, and only what Warden grants is left.
    w.bind(
        "sally@example.com",
        "NAMESPACE_READ_ONLY",
        "dev",
        &["banana"],
    )
    .await;
    sk.run(&["get", "pods", "-n", "banana"]).await.expect_ok();
    forbidden(&sk.run(&["get", "nodes"]).await);
    assert!(store
        .get(
            "clusterrolebindings",
            "",
            &format!("{sally_sa}.cluster-read")
        )
        .is_none());
    assert!(store.get("clusterrolebindings", "", "everyone").is_none());
    let role = store
        .get("clusterroles", "", "warden-namespace-write")
        .expect("warden's role");
    assert_ne!(
        role["rules"][0]["apiGroups"],
        json!(["*"]),
        "the widened role was not repaired: {role}"
    );
    // What Warden made for her stays.
    assert!(w.has_rolebinding(
        "apple",
        &format!("{}.namespace-write", w.sa("sally@example.com"))
    ));
    assert!(w.has_rolebinding(
        "banana",
        &format!("{}.namespace-read", w.sa("sally@example.com"))
    ));

    // A binding shared with someone else cannot be edited by Warden (that takes `bind` on its
    // role) and must not be deleted (bob needs it): she is refused, saying why, until a
    // cluster administrator takes her out of it; bob keeps his.
    store
        .create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "shared", "namespace": "apple"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [sa, {"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]}))
        .expect("rb");
    w.bind(
        "sally@example.com",
        "NAMESPACE_READ_ONLY",
        "dev",
        &["cherry"],
    )
    .await;
    sk.run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("the binding apple/shared, made outside Warden");
    assert!(store.get("rolebindings", "apple", "shared").is_some());
    store
        .delete("rolebindings", "apple", "shared")
        .expect("an administrator fixes it");
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
}

/// A namespace granted before it exists on the cluster: kubectl says so in words (not the
/// cluster's Forbidden about a service account), and the grant works as soon as the namespace
/// is created, not at the next periodic reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_works_as_soon_as_its_namespace_is_created() {
    let w = World::via_agent().await;
    w.bind("sally@example.com", "NAMESPACE_ADMIN", "dev", &["cherry"])
        .await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    let out = sk.run(&["get", "configmaps", "-n", "cherry"]).await;
    assert!(
        out.stderr.contains("(NotFound)")
            && out.stderr.contains(
                "namespace cherry does not exist on cluster prod-1: Warden grants you access there"
            ),
        "{}",
        out.stderr
    );
    w.prod
        .store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cherry"}}))
        .expect("namespace");
    // The very next request reconciles (at most a second after the last look).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    sk.run(&["create", "configmap", "x", "-n", "cherry"])
        .await
        .expect_ok();
    assert!(w.has_rolebinding(
        "cherry",
        &format!("{}.namespace-write", w.sa("sally@example.com"))
    ));
    // Her service account says who she is.
    let sa = w
        .prod
        .store()
        .get(
            "serviceaccounts",
            "warden-system",
            &w.sa("sally@example.com"),
        )
        .expect("service account");
    assert_eq!(
        sa["metadata"]["annotations"]["warden.dev/email"],
        "sally@example.com"
    );
    let me = sally.get("/api/v1/me").await.json();
    assert_eq!(
        sa["metadata"]["annotations"]["warden.dev/user-id"],
        me["user"]["id"]
    );
}

/// A cluster whose agent is offline: kubectl says so in words, through its discovery too
/// (client-go shows no message of a 503, so Warden answers 502 in plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnected_cluster_is_named_as_such_by_kubectl() {
    let mut w = World::via_agent().await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    w._agent.take().expect("agent").stop().await;
    let t = std::time::Instant::now();
    loop {
        let out = sk.run(&["get", "pods", "-n", "apple"]).await;
        if out.code != 0 && out.stderr.contains("is not connected to Warden") {
            assert!(
                !out.stderr.contains("unable to handle the request"),
                "{}",
                out.stderr
            );
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "kubectl did not say why: {}",
            out.stderr
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let events = w.kube_events().await;
    assert!(events
        .iter()
        .any(|e| e["status"] == 502 && e["outcome"] == "error"));
}

/// A service account name is never reused: each is `u-<email slug>-<random>`, new at every
/// creation, and a new one replaces it when the user's rights shrink. What a user set up for
/// their account while they held more (a binding of their own, a token minted for it) dies
/// with the old account instead of waiting for Warden to find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_accounts_rotate_when_rights_shrink() {
    let w = World::new().await;
    let banana = w
        .bind("sally@example.com", "NAMESPACE_ADMIN", "dev", &["banana"])
        .await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    let first = w.sa("sally@example.com");
    let suffix = first
        .strip_prefix("u-sally-example-com-")
        .unwrap_or_else(|| panic!("{first}"));
    assert!(
        suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{first}"
    );
    assert!(w.has_rolebinding("banana", &format!("{first}.namespace-write")));

    // More rights: the same account.
    w.bind(
        "sally@example.com",
        "NAMESPACE_READ_ONLY",
        "dev",
        &["default"],
    )
    .await;
    sk.run(&["get", "pods", "-n", "default"]).await.expect_ok();
    assert_eq!(w.sa("sally@example.com"), first);

    // Fewer rights: the next request runs as a new account, and the old one is gone with
    // every binding naming it.
    w.admin
        .delete(&format!("/api/v1/bindings/{banana}"))
        .await
        .assert_status(204);
    sk.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    let second = w.sa("sally@example.com");
    assert_ne!(second, first);
    assert!(second.starts_with("u-sally-example-com-"), "{second}");
    let store = w.prod.store();
    assert!(store
        .get("serviceaccounts", "warden-system", &first)
        .is_none());
    assert!(store
        .get("secrets", "warden-system", &format!("{first}-anchor"))
        .is_none());
    for ns in ["apple", "banana", "default"] {
        for b in store.list("rolebindings", Some(ns)) {
            let text = b.to_string();
            assert!(!text.contains(&first), "left behind in {ns}: {text}");
        }
    }
    assert!(w.has_rolebinding("apple", &format!("{second}.namespace-write")));
    forbidden(&sk.run(&["get", "pods", "-n", "banana"]).await);
    // Warden records the account it uses now.
    let me = sally.get("/api/v1/me").await.json();
    let rows = warden_domain::kubectl::service_accounts(&w.app.services().db)
        .await
        .unwrap();
    let row = rows
        .iter()
        .find(|r| Some(r.user_id.as_str()) == me["user"]["id"].as_str())
        .expect("her record");
    assert_eq!(row.sa_name, second);
}

/// The audit search answers the questions people ask of Kubernetes requests: by verb (exec
/// included), resource, status and address, over a preset range, with discovery folded away
/// when asked; the actor matches by the start of an email.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_search_by_verb_resource_range_and_without_discovery() {
    let w = World::new().await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();
    forbidden(&sk.run(&["get", "pods", "-n", "banana"]).await);
    w.app.gateway().flush_audit().await;
    let items = |path: String| {
        let admin = &w.admin;
        async move {
            let r = admin.get(&path).await.assert_status(200).json();
            r["items"].as_array().unwrap().clone()
        }
    };
    let base = "/api/v1/audit/events?kind=kube_api&limit=500";
    let all = items(base.to_owned()).await;
    assert!(
        all.iter().any(|e| e["resource_kind"].is_null()),
        "kubectl's discovery is audited"
    );
    let folded = items(format!("{base}&discovery=false")).await;
    assert!(!folded.is_empty());
    assert!(
        folded.iter().all(|e| !e["resource_kind"].is_null()),
        "{folded:?}"
    );
    let lists = items(format!(
        "{base}&verb=list&resource=configmaps&actor=sally%40"
    ))
    .await;
    assert!(!lists.is_empty());
    assert!(lists.iter().all(|e| e["action"] == "kube.list"
        && e["resource_kind"] == "configmaps"
        && e["actor"] == "sally@example.com"));
    let refused = items(format!("{base}&status=403&range=15m")).await;
    assert!(refused
        .iter()
        .any(|e| e["namespace"] == "banana" && e["outcome"] == "denied"));
    assert!(refused.iter().all(|e| e["status"] == 403));
    assert!(items(format!("{base}&source_ip=192.0.2.1"))
        .await
        .is_empty());
    // A browser's datetime-local value is a time too (read as UTC).
    let later = items(format!("{base}&since=2999-01-01T00:00")).await;
    assert!(later.is_empty());
    // Bad values are refused with the field named.
    let r = w.admin.get(&format!("{base}&range=2w")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("range"), "{}", r.body);
}

/// The "why" checker takes a cluster too: Warden's side of a grant and the cluster's, in words
/// (the namespace granted before it exists; a cluster outside the project; who may ask).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_why_checker_says_whether_the_cluster_side_is_in_place() {
    let w = World::via_agent().await;
    w.bind("sally@example.com", "NAMESPACE_ADMIN", "dev", &["cherry"])
        .await;
    let ask = |project: &str, ns: &str, cluster: &str| {
        format!(
            "/api/v1/users/sally@example.com/explain?permission=kubectl.namespace.write&project={project}&namespace={ns}&cluster={cluster}"
        )
    };
    // apple exists on prod-1, which production shares with dev.
    let e = w
        .admin
        .get(&ask("dev", "apple", PROD))
        .await
        .assert_status(200)
        .json();
    assert_eq!(e["allowed"], true, "{e}");
    assert_eq!(e["cluster"]["ready"], true, "{e}");
    assert!(e["cluster"]["says"]
        .as_str()
        .unwrap()
        .contains("namespace apple exists"));
    // cherry is granted but not on the cluster: said, and not "ready".
    let e = w
        .admin
        .get(&ask("dev", "cherry", PROD))
        .await
        .assert_status(200)
        .json();
    assert_eq!(e["allowed"], true, "{e}");
    assert_eq!(e["cluster"]["ready"], false, "{e}");
    assert!(
        e["cluster"]["says"]
            .as_str()
            .unwrap()
            .contains("namespace cherry does not exist on cluster prod-1"),
        "{e}"
    );
    // lab-1 belongs to research only: a grant in dev does not reach it.
    let e = w
        .admin
        .get(&ask("dev", "apple", LAB))
        .await
        .assert_status(200)
        .json();
    assert_eq!(e["allowed"], false, "{e}");
    assert!(
        e["because"]
            .as_str()
            .unwrap()
            .contains("cluster lab-1 is not in project dev"),
        "{e}"
    );
    assert!(e.get("cluster").is_none(), "{e}");
    // Without a project: any project holding the cluster may grant it.
    let e = w
        .admin
        .get("/api/v1/users/sally@example.com/explain?permission=kubectl.namespace.write&namespace=apple&cluster=prod-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(e["allowed"], true, "{e}");
    // Warden's own namespace: a project-wide read covers it in Warden's words, but only full
    // access reaches it on the cluster.
    w.user("mia@example.com", "PROJECT_READ_ONLY", "dev", &[])
        .await;
    let e = w
        .admin
        .get("/api/v1/users/mia@example.com/explain?permission=kubectl.cluster.read&project=dev&namespace=warden-system&cluster=prod-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(e["allowed"], true, "{e}");
    assert_eq!(e["cluster"]["ready"], false, "{e}");
    assert!(
        e["cluster"]["says"]
            .as_str()
            .unwrap()
            .contains("only full access reaches it"),
        "{e}"
    );
    let e = w
        .admin
        .get("/api/v1/users/john@example.com/explain?permission=kubectl.fullaccess&project=production&namespace=warden-system&cluster=prod-1")
        .await
        .assert_status(200)
        .json();
    assert_eq!(e["cluster"]["ready"], true, "{e}");
    // Sally may ask about herself on her cluster, but learns nothing of a cluster she cannot
    // read (refused, and the refusal is audited), nor of one that does not exist.
    let sally = w.signed_in("sally@example.com").await;
    sally
        .get(&ask("dev", "apple", PROD))
        .await
        .assert_status(200);
    sally
        .get(&ask("dev", "apple", LAB))
        .await
        .assert_status(403);
    w.admin
        .get(&ask("dev", "apple", "no-such-cluster"))
        .await
        .assert_status(404);
}

/// The cluster's audit log and Warden's join on the `Audit-ID`: the API server records the id
/// the gateway sent, and that id finds Warden's row (who, through what, the decision).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_clusters_audit_log_joins_wardens_on_the_audit_id() {
    let w = World::via_agent().await;
    let sally = w.signed_in("sally@example.com").await;
    let sk = w.kubectl("sally", &w.kubeconfig(&sally, None).await);
    sk.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();
    let sa = format!(
        "system:serviceaccount:warden-system:{}",
        w.sa("sally@example.com")
    );
    let on_cluster = w
        .prod
        .audit_log()
        .into_iter()
        .rev()
        .find(|r| {
            r.username == sa
                && r.request_uri
                    .starts_with("/api/v1/namespaces/apple/configmaps")
        })
        .expect("the cluster's audit record of sally's list");
    w.app.gateway().flush_audit().await;
    let admin = w.admin_now().await;
    let found = admin
        .get(&format!("/api/v1/audit/events?q={}", on_cluster.audit_id))
        .await
        .assert_status(200)
        .json();
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    assert_eq!(items[0]["id"], on_cluster.audit_id.as_str());
    assert_eq!(items[0]["actor"], "sally@example.com");
    assert_eq!(items[0]["cluster"], PROD);
    assert_eq!(items[0]["namespace"], "apple");
    // A client's own Audit-ID never reaches the cluster: Warden's replaces it, on the way in
    // and in the answer.
    let kubeconfig = w.kubeconfig(&sally, None).await;
    let (cert, key) = identity_from(&kubeconfig);
    let http = http_with(&cert, &key, &gateway_ca(&kubeconfig));
    let r = http
        .get(format!(
            "{}/clusters/{PROD}/api/v1/namespaces/apple/configmaps",
            w.app.gateway_url
        ))
        .header("Audit-ID", "forged-audit-id")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = r.headers()["audit-id"].to_str().unwrap().to_owned();
    assert_ne!(answered, "forged-audit-id");
    let log = w.prod.audit_log();
    assert!(log.iter().all(|r| r.audit_id != "forged-audit-id"));
    assert!(
        log.iter()
            .any(|r| r.audit_id == answered && r.username == sa),
        "the cluster recorded the id Warden answered with"
    );
}

/// A project's size at a glance: the list and the project say how many clusters it owns and
/// is shared, and how many users and groups hold a role in it (ended grants are not members).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projects_show_their_clusters_and_members() {
    let w = World::new().await;
    w.admin
        .post("/api/v1/groups", json!({"name": "devs"}))
        .await
        .assert_status(201);
    w.admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "devs"}, "role": "PROJECT_READ_ONLY", "project": "dev"}),
        )
        .await
        .assert_status(201);
    // A second grant to the same person counts her once.
    w.bind(
        "sally@example.com",
        "NAMESPACE_READ_ONLY",
        "dev",
        &["banana"],
    )
    .await;
    let list = w
        .admin
        .get("/api/v1/projects")
        .await
        .assert_status(200)
        .json();
    let counts = |name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {list}"))["counts"]
            .clone()
    };
    assert_eq!(
        counts("production"),
        json!({"clusters_owned": 1, "clusters_shared": 0, "member_users": 1, "member_groups": 0})
    );
    assert_eq!(
        counts("dev"),
        json!({"clusters_owned": 0, "clusters_shared": 1, "member_users": 1, "member_groups": 1})
    );
    assert_eq!(
        counts("research"),
        json!({"clusters_owned": 1, "clusters_shared": 0, "member_users": 0, "member_groups": 0})
    );
    let one = w
        .admin
        .get("/api/v1/projects/dev")
        .await
        .assert_status(200)
        .json();
    assert_eq!(one["counts"], counts("dev"));
    // Creating a project answers without counts (it has none yet), and its audit snapshot
    // carries no counts either.
    let created = w
        .admin
        .post("/api/v1/projects", json!({"name": "empty"}))
        .await
        .assert_status(201)
        .json();
    assert!(created.get("counts").is_none(), "{created}");
}

/// A namespace grant made before the namespace exists is accepted with a warning naming the
/// clusters that lack it; the project's clusters' namespaces are there to choose from, for
/// those who may read the project only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_grant_says_which_clusters_lack_the_namespace() {
    let w = World::via_agent().await;
    let made = w
        .admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": ["banana", "cherry"]}),
        )
        .await
        .assert_status(201)
        .json();
    assert_eq!(
        made["warnings"],
        json!(["namespace cherry does not exist on cluster prod-1 yet: the grant applies there as soon as it is created"]),
        "{made}"
    );
    // A grant on namespaces every cluster has says nothing more.
    let quiet = w
        .admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "sally@example.com"}, "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201)
        .json();
    assert!(quiet.get("warnings").is_none(), "{quiet}");

    let sally = w.signed_in("sally@example.com").await;
    let listed = sally
        .get("/api/v1/projects/dev/namespaces")
        .await
        .assert_status(200)
        .json();
    let clusters = listed.as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{listed}");
    assert_eq!(clusters[0]["cluster"], PROD);
    let ns: Vec<&str> = clusters[0]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(ns.contains(&"apple") && ns.contains(&"banana"), "{listed}");
    // Not a member of research: refused, whether or not the project exists.
    sally
        .get("/api/v1/projects/research/namespaces")
        .await
        .assert_status(403);
    sally
        .get("/api/v1/projects/nowhere/namespaces")
        .await
        .assert_status(403);
}

/// A cluster-wide reader cannot list who holds what on the cluster: Warden's bindings name
/// every user's service account (their email) and level, the cluster administrators first.
/// A namespace's members still see that namespace's RoleBindings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_wide_reader_does_not_learn_who_the_administrators_are() {
    let w = World::new().await;
    // john (full access) and sally (apple) have used the cluster: their bindings exist.
    for email in ["john@example.com", "sally@example.com"] {
        let c = w.signed_in(email).await;
        w.kubectl(email, &w.kubeconfig(&c, Some(PROD)).await)
            .run(&["get", "pods", "-n", "apple"])
            .await
            .expect_ok();
    }
    let john_sa = w.sa("john@example.com");
    assert!(w
        .prod
        .store()
        .get("clusterrolebindings", "", &format!("{john_sa}.full-access"))
        .is_some());
    w.user("mia@example.com", "PROJECT_READ_ONLY", "dev", &[])
        .await;
    let mia = w.signed_in("mia@example.com").await;
    let mk = w.kubectl("mia", &w.kubeconfig(&mia, Some(PROD)).await);
    mk.run(&["get", "pods", "-A"]).await.expect_ok();
    for args in [
        &["get", "clusterrolebindings", "-o", "name"][..],
        &["get", "rolebindings", "-A", "-o", "name"],
        &["get", "rolebindings", "-n", "apple", "-o", "name"],
        &[
            "get",
            "clusterrolebinding",
            &format!("{john_sa}.full-access"),
        ],
        &[
            "get",
            "clusterrolebindings",
            "--watch",
            "--request-timeout=2s",
        ],
    ] {
        let out = mk.run(args).await;
        forbidden(&out);
        assert!(!out.stdout.contains("u-john"), "{args:?}: {out:?}");
    }
    // What rights exist stays readable.
    mk.run(&["get", "clusterroles", "-o", "name"])
        .await
        .expect_ok();
    // sally sees who else works in apple.
    let sally = w.signed_in("sally@example.com").await;
    let out = w
        .kubectl("sally", &w.kubeconfig(&sally, Some(PROD)).await)
        .run(&["get", "rolebindings", "-n", "apple", "-o", "name"])
        .await
        .expect_ok();
    assert!(out.stdout.contains("namespace-write"), "{out:?}");
}

/// A project's administrator (`cluster.write` on the owning project) may add safeguards to its
/// cluster, not lift the ones an organization administrator put there, nor shed them by
/// deleting the cluster (to import it again under a new id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_admin_cannot_lift_the_safeguards_put_on_its_cluster() {
    let w = World::new().await;
    let settings = format!("/api/v1/clusters/{PROD}/kubectl-settings");
    w.admin
        .patch(
            &settings,
            json!({"secrets_org_admins_only": true, "terminal_record_input": true,
                "disable_cli": true, "terminal_max_secs": 1800}),
        )
        .await
        .assert_status(200);
    // john is PROJECT_ADMIN of production, which owns the cluster.
    let john = w.signed_in("john@example.com").await;
    for lift in [
        json!({"secrets_org_admins_only": null}),
        json!({"secrets_org_admins_only": false}),
        json!({"terminal_record_input": null}),
        json!({"disable_cli": false}),
        json!({"terminal_max_secs": null}),
        json!({"terminal_max_secs": 3600}),
    ] {
        john.patch(&settings, lift).await.assert_status(403);
    }
    let s = w.admin.get(&settings).await.assert_status(200).json();
    for f in [
        "secrets_org_admins_only",
        "terminal_record_input",
        "disable_cli",
    ] {
        assert_eq!(s["effective"][f], true, "{f}: {s}");
    }
    assert_eq!(s["effective"]["terminal_max_secs"], 1800, "{s}");
    // Adding one is his.
    john.patch(&settings, json!({"terminal_max_secs": 900}))
        .await
        .assert_status(200);
    // Deleting the cluster would drop them: refused, the cluster stays.
    let r = john
        .delete(&format!("/api/v1/clusters/{PROD}?force=true"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    w.admin
        .get(&format!("/api/v1/clusters/{PROD}"))
        .await
        .assert_status(200);
    let denied = w
        .admin
        .get("/api/v1/audit/events?outcome=denied&actor=john@example.com&limit=100")
        .await
        .assert_status(200)
        .json();
    let reasons: Vec<&str> = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .filter(|r| r.contains("takes settings.write"))
        .collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    // The organization's administrator may lift them.
    w.admin
        .patch(&settings, json!({"disable_cli": null}))
        .await
        .assert_status(200);
}

/// A refused request whose body is still on its way (larger than a socket's buffers) is
/// answered with the refusal, not a reset connection: kubectl prints why, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_with_a_large_body_hears_why() {
    let w = World::new().await;
    let sally = w.signed_in("sally@example.com").await;
    let kubeconfig = w.kubeconfig(&sally, Some(PROD)).await;
    let k = w.kubectl("sally", &kubeconfig);
    let big = w.dir.path().join("big.json");
    let filler = "x".repeat(900 * 1024);
    std::fs::write(
        &big,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"filler": filler}})
            .to_string(),
    )
    .unwrap();
    for _ in 0..5 {
        let out = k
            .run(&[
                "create",
                "--raw",
                &format!("/clusters/{PROD}/api/v1/namespaces/banana/configmaps"),
                "-f",
                big.to_str().unwrap(),
            ])
            .await;
        forbidden(&out);
        assert!(
            !out.stderr.contains("broken pipe") && !out.stderr.contains("reset"),
            "{}",
            out.stderr
        );
    }
    assert!(w.prod.store().get("configmaps", "banana", "big").is_none());
    // Where she may write, the same body goes through.
    k.run(&[
        "create",
        "--raw",
        &format!("/clusters/{PROD}/api/v1/namespaces/apple/configmaps"),
        "-f",
        big.to_str().unwrap(),
    ])
    .await
    .expect_ok();
    assert!(w.prod.store().get("configmaps", "apple", "big").is_some());
}
