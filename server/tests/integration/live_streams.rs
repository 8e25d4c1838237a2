//! Revocation reaches live streams: a watch, a `logs -f`, an `exec -i` and an `attach -i`,
//! opened with the real kubectl through a real agent's tunnel, are cut by every kind of
//! revocation (binding removed, user deactivated, kubeconfig revoked, credential expired),
//! within a second on Warden's side, each with an audit event saying why; a downgrade to
//! read-only ends exec but not a watch the read-only role still allows.

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use warden_server::gateway::testkit::{Kubectl, RunningAgent};
use warden_server::testing::{Client, TestApp};

const PROD: &str = "prod-1";

struct World {
    app: TestApp,
    admin: Client,
    _sim: kubesim::KubeSim,
    dir: tempfile::TempDir,
    _agent: RunningAgent,
    /// sally's binding (NAMESPACE_ADMIN on `apple` in project dev).
    binding: String,
    sally: Kubectl,
}

async fn world() -> World {
    world_with(Default::default()).await
}

async fn world_with(env: std::collections::BTreeMap<String, String>) -> World {
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    for p in ["production", "dev"] {
        admin
            .post("/api/v1/projects", json!({"name": p}))
            .await
            .assert_status(201);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, agent) = app
        .cluster_with_agent(&admin, dir.path(), PROD, "production", &["dev"], &["apple"])
        .await;
    let _ = app.user_client(&admin, "sally@example.com").await;
    let binding = bind(&admin, "NAMESPACE_ADMIN").await;
    let c = app.client();
    c.login("sally@example.com", warden_server::testing::USER_PASSWORD)
        .await
        .assert_status(200);
    let kubeconfig = c.get("/api/v1/kubeconfig").await.assert_status(200).body;
    let sally = Kubectl::new(&dir.path().join("sally"), &kubeconfig);
    let ticker = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    let pods = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sh\", \"-c\", {ticker:?}]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: echoer\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    stdin: true\n    command: [\"sh\", \"-c\", \"while read line; do echo got:$line; done\"]\n"
    );
    sally
        .run_with_stdin(&["apply", "-n", "apple", "-f", "-"], Some(&pods))
        .await
        .expect_ok();
    World {
        app,
        admin,
        _sim: sim,
        dir,
        _agent: agent,
        binding,
        sally,
    }
}

async fn bind(admin: &Client, role: &str) -> String {
    admin
        .bind_user("sally@example.com", role, "dev", &["apple"])
        .await
}

/// A kubectl process whose output is collected as it comes.
struct Streaming {
    what: &'static str,
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: String,
}

impl Streaming {
    fn spawn(k: &Kubectl, what: &'static str, args: &[&str]) -> Streaming {
        let mut child = k
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut l = BufReader::new(out).lines();
                while let Ok(Some(line)) = l.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Streaming {
            what,
            child,
            lines,
            seen: String::new(),
        }
    }

    /// Wait for a line containing `needle`.
    async fn expect_line(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.seen.contains(needle) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                _ => panic!("{}: no {needle:?} in time; saw:\n{}", self.what, self.seen),
            }
        }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The process ends by itself within `within`; returns everything it printed.
    async fn ends_within(&mut self, within: Duration) -> String {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(_) => {}
            Err(_) => panic!(
                "{}: still running {within:?} after the revocation; saw:\n{}",
                self.what, self.seen
            ),
        }
        // Drain what is left.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        self.seen.clone()
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl World {
    fn live(&self) -> usize {
        self.app.gateway().live.len()
    }

    async fn open_all(&self, tag: &str) -> Vec<Streaming> {
        let k = &self.sally;
        let cm = format!("configmap/{tag}");
        let mut watch = Streaming::spawn(
            k,
            "watch",
            &["get", "configmaps", "-n", "apple", "-w", "-o", "name"],
        );
        let mut logs = Streaming::spawn(k, "logs -f", &["logs", "-f", "-n", "apple", "box"]);
        let mut exec = Streaming::spawn(
            k,
            "exec",
            &[
                "exec",
                "-i",
                "-n",
                "apple",
                "box",
                "--",
                "sh",
                "-c",
                "while read l; do echo exec:$l; done",
            ],
        );
        let mut attach = Streaming::spawn(
            k,
            "attach",
            &["attach", "-i", "-n", "apple", "echoer", "-c", "main"],
        );
        // Every stream works before the revocation.
        self.sally
            .run(&["create", "configmap", "-n", "apple", tag])
            .await
            .expect_ok();
        watch.expect_line(&cm).await;
        logs.expect_line("tick").await;
        exec.send("one").await;
        exec.expect_line("exec:one").await;
        attach.send("ping").await;
        attach.expect_line("got:ping").await;
        // The watch's line may have come from its initial list: wait for the watch itself.
        self.wait_live(4).await;
        vec![watch, logs, exec, attach]
    }

    async fn wait_live(&self, n: usize) {
        let t = Instant::now();
        while self.live() < n {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{} live streams, not {n}",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Warden's side: every registered stream is gone within a second.
    async fn registry_empties_within_a_second(&self, since: Instant) {
        while self.live() > 0 {
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "{} live stream(s) still open a second after the revocation: {:?}",
                self.live(),
                self.app.gateway().live.list()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn audit(&self, action_prefix: &str) -> Vec<Value> {
        self.app.gateway().flush_audit().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let admin = self.admin_now().await;
        let page = admin
            .get("/api/v1/audit/events?kind=kube_api&limit=500")
            .await
            .assert_status(200)
            .json();
        page["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(action_prefix))
            })
            .collect()
    }

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_binding_cuts_watch_logs_exec_and_attach() {
    let w = world().await;
    let mut streams = w.open_all("first").await;
    assert_eq!(w.live(), 4, "{:?}", w.app.gateway().live.list());
    let t = Instant::now();
    w.admin
        .delete(&format!("/api/v1/bindings/{}", w.binding))
        .await
        .assert_status(204);
    w.registry_empties_within_a_second(t).await;
    let mut said = vec![];
    for s in streams.iter_mut() {
        said.push((s.what, s.ends_within(Duration::from_secs(5)).await));
    }
    // kubectl says why where the protocol carries a reason: exec's error channel. (The watch
    // ends with an ERROR event carrying the reason too, which client-go informers log, but
    // `kubectl get -w` prints nothing of it.)
    for (what, out) in &said {
        if *what == "exec" {
            assert!(
                out.contains("you have no kubectl access to a cluster named prod-1"),
                "{what} did not say why:\n{out}"
            );
        }
    }
    let closed = w.audit("kube.").await;
    for kind in ["watch", "logs", "exec", "attach"] {
        let ev = closed
            .iter()
            .find(|e| e["action"] == format!("kube.{kind}.closed"))
            .unwrap_or_else(|| panic!("no kube.{kind}.closed event in {closed:#?}"));
        assert_eq!(ev["outcome"], "denied");
        assert_eq!(ev["actor"], "sally@example.com");
        assert!(ev["reason"]
            .as_str()
            .unwrap()
            .contains("no kubectl access to a cluster named prod-1"));
    }
    // Each long-lived request was audited when it started, before it was forwarded.
    for action in ["kube.watch.start", "kube.get.start", "kube.create.start"] {
        assert!(
            closed.iter().any(|e| e["action"] == action),
            "no {action} event"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deactivation_and_kubeconfig_revocation_cut_streams() {
    let w = world().await;
    // Deactivating the user.
    let mut streams = w.open_all("first").await;
    let t = Instant::now();
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    w.registry_empties_within_a_second(t).await;
    for s in streams.iter_mut() {
        s.ends_within(Duration::from_secs(5)).await;
    }
    w.admin
        .patch(
            "/api/v1/users/sally@example.com",
            json!({"status": "active"}),
        )
        .await
        .assert_status(200);
    // Reactivated, her old kubeconfig stays revoked: she signs in and downloads a new one.
    w.sally
        .run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("revoked");
    let c = w.app.client();
    c.login("sally@example.com", warden_server::testing::USER_PASSWORD)
        .await
        .assert_status(200);
    w.sally
        .set_kubeconfig(&c.get("/api/v1/kubeconfig").await.assert_status(200).body);

    // Revoking her kubeconfigs.
    let mut streams = w.open_all("second").await;
    let t = Instant::now();
    w.admin
        .post(
            "/api/v1/users/sally@example.com/kubeconfig/revoke",
            json!({}),
        )
        .await
        .assert_status(200);
    w.registry_empties_within_a_second(t).await;
    for s in streams.iter_mut() {
        s.ends_within(Duration::from_secs(5)).await;
    }
    let closed = w.audit("kube.exec.closed").await;
    assert!(closed.iter().any(|e| e["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("deactivated")));
    assert!(closed
        .iter()
        .any(|e| e["reason"].as_str().unwrap_or_default().contains("revoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expiring_credential_ends_its_streams() {
    let w = world().await;
    let mut watch = Streaming::spawn(
        &w.sally,
        "watch",
        &["get", "configmaps", "-n", "apple", "-w", "-o", "name"],
    );
    w.sally
        .run(&["create", "configmap", "-n", "apple", "before"])
        .await
        .expect_ok();
    watch.expect_line("configmap/before").await;
    w.wait_live(1).await;
    // Nothing changes but time: past the credential's 8 hours.
    w.app.clock.advance_secs(8 * 3600 + 1);
    let t = Instant::now();
    while w.live() > 0 {
        // The one-second tick of the watcher, plus the check.
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the watch outlived its credential"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.ends_within(Duration::from_secs(5)).await;
    let closed = w.audit("kube.").await;
    assert!(
        closed.iter().any(|e| e["action"] == "kube.watch.closed"
            && e["reason"].as_str().unwrap_or_default().contains("expired")),
        "{closed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_downgrade_to_read_only_ends_exec_but_not_a_watch() {
    let w = world().await;
    let mut streams = w.open_all("first").await;
    bind(&w.admin, "NAMESPACE_READ_ONLY").await;
    let t = Instant::now();
    w.admin
        .delete(&format!("/api/v1/bindings/{}", w.binding))
        .await
        .assert_status(204);
    // exec and attach end (read-only never execs); the watch and the log follow go on.
    let (mut kept, mut ended): (Vec<_>, Vec<_>) = streams
        .drain(..)
        .partition(|s| matches!(s.what, "watch" | "logs -f"));
    for s in ended.iter_mut() {
        s.ends_within(Duration::from_secs(5)).await;
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(w.live(), 2, "{:?}", w.app.gateway().live.list());
    for s in kept.iter_mut() {
        assert!(s.still_running(), "{} was cut: {}", s.what, s.seen);
    }
    // The watch still streams (a change made by someone else).
    w.admin_now().await;
    w._sim
        .store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "after", "namespace": "apple"}}))
        .expect("configmap");
    kept[0].expect_line("configmap/after").await;
    let _ = w.dir.path();
}

/// Losing the grant on one namespace while keeping another: the streams opened in the lost
/// namespace end (the cluster would not re-check a watch it already admitted; Warden does).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_grant_to_another_namespace_ends_the_streams_in_the_old_one() {
    let w = world().await;
    let mut streams = w.open_all("first").await;
    w._sim
        .store()
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "banana"}}))
        .expect("namespace");
    w.admin
        .bind_user("sally@example.com", "NAMESPACE_ADMIN", "dev", &["banana"])
        .await;
    let t = Instant::now();
    w.admin
        .delete(&format!("/api/v1/bindings/{}", w.binding))
        .await
        .assert_status(204);
    w.registry_empties_within_a_second(t).await;
    for s in streams.iter_mut() {
        s.ends_within(Duration::from_secs(5)).await;
    }
    let closed = w.audit("kube.").await;
    assert!(
        closed.iter().any(|e| e["action"] == "kube.watch.closed"
            && e["outcome"] == "denied"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot watch configmaps in namespace apple"))),
        "{closed:#?}"
    );
    // Her new namespace works; the old one is refused in her words.
    w.sally
        .run(&["get", "pods", "-n", "banana"])
        .await
        .expect_ok();
    w.sally
        .run(&["get", "pods", "-n", "apple"])
        .await
        .expect_err("Warden grants you write in namespace banana");
}

/// The API server authorizes a watch once, when it starts. Sally watches every namespace's
/// configmaps through a project-wide read grant, and keeps a grant in one namespace; when the
/// project grant goes, the watch across namespaces goes with it (her namespace grant does not
/// hold it open), and a new one is refused by Warden itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn narrowing_to_one_namespace_ends_a_watch_across_namespaces() {
    let w = world().await;
    let project_read = w
        .admin
        .bind_user("sally@example.com", "PROJECT_READ_ONLY", "dev", &[])
        .await;
    let mut watch = Streaming::spawn(
        &w.sally,
        "watch -A",
        &["get", "configmaps", "-A", "-w", "-o", "name"],
    );
    w._sim
        .store()
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "elsewhere", "namespace": "default"}}))
        .expect("configmap");
    watch.expect_line("configmap/elsewhere").await;
    w.wait_live(1).await;
    let t = Instant::now();
    w.admin
        .delete(&format!("/api/v1/bindings/{project_read}"))
        .await
        .assert_status(204);
    w.registry_empties_within_a_second(t).await;
    watch.ends_within(Duration::from_secs(5)).await;
    let closed = w.audit("kube.watch.closed").await;
    assert!(
        closed.iter().any(|e| e["outcome"] == "denied"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("across namespaces"))),
        "{closed:#?}"
    );
    // A new watch across namespaces is refused, in her words; her namespace works.
    w.sally
        .run(&[
            "get",
            "configmaps",
            "-A",
            "--watch-only",
            "--request-timeout=10s",
        ])
        .await
        .expect_err("Warden grants you write in namespace apple");
    w.sally
        .run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();
}

/// An insider asks for a watch and a followed log in the spellings the API server also takes
/// (`?watch=yes`, a bare `?watch`, `?follow=TRUE`: anything but `0` and `false` is true there).
/// Read more strictly by Warden, they would pass as a plain list and get, never registered and
/// never cut; they are watches and followed logs, and removing the binding ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_by_any_other_spelling_is_still_cut() {
    let w = world().await;
    // `--raw` paths are absolute: the gateway serves the cluster under /clusters/<name>.
    let mut streams = vec![
        Streaming::spawn(
            &w.sally,
            "watch=yes",
            &[
                "get",
                "--raw",
                "/clusters/prod-1/api/v1/namespaces/apple/configmaps?watch=yes&timeoutSeconds=31536000",
            ],
        ),
        Streaming::spawn(
            &w.sally,
            "bare watch",
            &["get", "--raw", "/clusters/prod-1/api/v1/namespaces/apple/configmaps?watch"],
        ),
        Streaming::spawn(
            &w.sally,
            "follow=TRUE",
            &[
                "get",
                "--raw",
                "/clusters/prod-1/api/v1/namespaces/apple/pods/box/log?follow=TRUE",
            ],
        ),
    ];
    w.sally
        .run(&["create", "configmap", "-n", "apple", "spelled"])
        .await
        .expect_ok();
    streams[0].expect_line("spelled").await;
    streams[1].expect_line("spelled").await;
    streams[2].expect_line("tick").await;
    w.wait_live(3).await;
    let kinds: Vec<String> = w
        .app
        .gateway()
        .live
        .list()
        .iter()
        .map(|(_, s)| format!("{:?}", s.kind))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| k.contains("Watch")).count(),
        2,
        "{kinds:?}"
    );
    let t = Instant::now();
    w.admin
        .delete(&format!("/api/v1/bindings/{}", w.binding))
        .await
        .assert_status(204);
    w.registry_empties_within_a_second(t).await;
    for s in streams.iter_mut() {
        s.ends_within(Duration::from_secs(5)).await;
    }
    let events = w.audit("kube.").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["action"] == "kube.watch.closed" && e["outcome"] == "denied")
            .count(),
        2,
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "kube.logs.closed" && e["outcome"] == "denied"),
        "{events:#?}"
    );
}

/// One person cannot hold the agent tunnel's streams (and Warden's memory) with watches held
/// open: past their ceiling a stream is refused with 429 and audited; ending one frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_person_holds_no_more_streams_than_the_ceiling() {
    let w = world_with(
        [(
            "WARDEN_GATEWAY_MAX_STREAMS_PER_USER".to_owned(),
            "2".to_owned(),
        )]
        .into(),
    )
    .await;
    let watch = |what| {
        Streaming::spawn(
            &w.sally,
            what,
            &["get", "pods", "-n", "apple", "-w", "-o", "name"],
        )
    };
    let mut first = watch("first");
    first.expect_line("pod/box").await;
    let mut second = watch("second");
    second.expect_line("pod/box").await;
    while w.live() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = watch("third");
    third.expect_line("the most streams").await;
    assert!(first.still_running() && second.still_running());
    let refused = w.audit("").await;
    assert!(
        refused.iter().any(|e| e["outcome"] == "denied"
            && e["status"] == 429
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the most streams"))),
        "{refused:#?}"
    );
    // Short requests are not streams: they still pass.
    w.sally
        .run(&["get", "pods", "-n", "apple"])
        .await
        .expect_ok();
    drop(first);
    let t = Instant::now();
    while w.live() > 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the first watch is still registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = watch("again");
    again.expect_line("pod/box").await;
}

/// kubectl with a kubeconfig downloaded with a new API key of `c`'s, named `name`, valid a day.
async fn kubectl_by_key(w: &World, c: &Client, name: &str) -> Kubectl {
    let key = c
        .create_api_key(json!({"name": name, "expires_in_days": 1}))
        .await;
    let kubeconfig = c
        .get_bearer("/api/v1/kubeconfig", &key)
        .await
        .assert_status(200)
        .body;
    Kubectl::new(&w.dir.path().join(name), &kubeconfig)
}

/// A kubeconfig downloaded with an API key ends with the key: revoking a leaked key revokes
/// what it made, and such a kubeconfig never outlives the key's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubeconfig_made_with_an_api_key_ends_with_the_key() {
    let w = world().await;
    let sally = w.app.client();
    sally
        .login("sally@example.com", warden_server::testing::USER_PASSWORD)
        .await
        .assert_status(200);
    let by_key = kubectl_by_key(&w, &sally, "laptop").await;
    by_key
        .run(&["get", "pods", "-n", "apple"])
        .await
        .expect_ok();
    sally.revoke_api_key("laptop").await;
    let out = by_key.run(&["get", "pods", "-n", "apple"]).await;
    assert!(
        !out.ok() && out.stderr.contains("this kubeconfig was revoked"),
        "the kubeconfig outlived the key: {} {}",
        out.stdout,
        out.stderr
    );
    // The console session's own kubeconfig is not the key's: it still works.
    w.sally
        .run(&["get", "pods", "-n", "apple"])
        .await
        .expect_ok();

    // Kubeconfigs last a week here; one made with a key of a day ends with the key's day.
    w.admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"credential_validity_secs": 7 * 86400}),
        )
        .await
        .assert_status(200);
    let short = kubectl_by_key(&w, &sally, "short").await;
    short.run(&["get", "pods", "-n", "apple"]).await.expect_ok();
    w.app.clock.advance_secs(2 * 86400);
    let out = short.run(&["get", "pods", "-n", "apple"]).await;
    assert!(
        !out.ok() && out.stderr.contains("You must be logged in to the server"),
        "the kubeconfig outlived its key's expiry: {} {}",
        out.stdout,
        out.stderr
    );
}

/// A person's refused requests are sampled as anonymous ones are: cheap to send and never
/// forwarded, one kubeconfig's flood of them would fill the audit queue until the gateway
/// refuses everyone. The first of each minute are written one by one, the rest counted in a
/// summary naming the person; allowed requests are all written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_flood_of_refused_requests_is_counted_not_written_one_by_one() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use warden_domain::audit::RefusalSampler;
    use warden_domain::entities::audit_events;
    let w = world().await;
    let c = w.app.client();
    c.login("sally@example.com", warden_server::testing::USER_PASSWORD)
        .await
        .assert_status(200);
    let kubeconfig = c.get("/api/v1/kubeconfig").await.assert_status(200).body;
    let http = warden_server::gateway::testkit::gateway_client_builder(&kubeconfig)
        .build()
        .unwrap();
    let at = |ns: &str| {
        format!(
            "{}/clusters/{PROD}/api/v1/namespaces/{ns}/configmaps",
            w.app.gateway_url
        )
    };
    let extra = 30;
    for _ in 0..RefusalSampler::PER_WINDOW as usize + extra {
        let r = http.get(at("banana")).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    for _ in 0..3 {
        let r = http.get(at("apple")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    w.app.gateway().flush_audit().await;
    let db = &w.app.services().db;
    let rows = |action: &'static str, outcome: &'static str| async move {
        audit_events::Entity::find()
            .filter(audit_events::Column::Action.eq(action))
            .filter(audit_events::Column::Outcome.eq(outcome))
            .filter(audit_events::Column::ActorName.eq("sally@example.com"))
            .all(db)
            .await
            .unwrap()
    };
    assert_eq!(
        rows("kube.list", "denied").await.len(),
        RefusalSampler::PER_WINDOW as usize
    );
    assert_eq!(rows("kube.list", "allowed").await.len(), 3);
    w.app.clock.advance_secs(61);
    w.app.services().flush_refusals().await.unwrap();
    let summary = rows("kube.list.sampled", "denied").await;
    assert_eq!(summary.len(), 1, "{summary:#?}");
    let details: Value = serde_json::from_str(&summary[0].details).unwrap();
    assert_eq!(details["suppressed"], extra, "{details:#}");
    assert!(matches!(
        warden_domain::audit::verify_chain(db).await.unwrap(),
        warden_domain::audit::ChainStatus::Intact { .. }
    ));
}
