//! Conformance with the `kube` crate (the client Warden uses), the library handle and the
//! binary: typed CRUD, errors, pagination, watch (events, bookmarks, resume, expiry),
//! server-side apply, TokenRequest, access reviews, exec (status, TTY, resize) and attach.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kubesim::{KubeSim, Options};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::Env;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn pod(name: &str, command: &[&str], stdin: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": command, "stdin": stdin}]}
    }))
    .unwrap()
}

/// Real cluster: typed create/get/replace/delete round-trip with server-set metadata, and
/// typed lists of seeded objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, "default");
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let mut got = api.get("a").await.unwrap();
    got.data.as_mut().unwrap().insert("k2".into(), "v2".into());
    let replaced = api
        .replace("a", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
    let ns: Api<Namespace> = Api::all(env.client().await);
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for want in ["default", "kube-public", "kube-system"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
}

/// Real cluster: errors are Status objects with code and reason (404 NotFound, 409
/// AlreadyExists, 409 Conflict on a stale resourceVersion, 422 Invalid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, "default");
    let e = api.get("missing").await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{e:?}"
    );
    let first = api
        .create(&PostParams::default(), &cm("dup"))
        .await
        .unwrap();
    let e = api
        .create(&PostParams::default(), &cm("dup"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{e:?}"
    );
    api.patch(
        "dup",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    let e = api
        .replace("dup", &PostParams::default(), &first)
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{e:?}"
    );
    let e = api
        .create(&PostParams::default(), &cm("UPPER"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 422 && s.reason == "Invalid"),
        "{e:?}"
    );
}

/// Real cluster: `limit` pages a list; `continue` resumes it; the list carries
/// remainingItemCount and the pages cover every object exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("p{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        seen.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(2).continue_token(&c),
            None => break,
        }
    }
    seen.retain(|n| n.starts_with('p'));
    assert_eq!(seen, vec!["p0", "p1", "p2", "p3", "p4"]);
}

/// Real cluster: a watch from "0" starts with ADDED for existing objects, then streams
/// ADDED/MODIFIED/DELETED, and sends BOOKMARKs when allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_and_bookmarks() {
    let sim = KubeSim::start_with(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = common::client_from(&sim.admin_kubeconfig()).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("pre"))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    let mut kinds = Vec::new();
    let driver = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            api.create(&PostParams::default(), &cm("w")).await.unwrap();
            api.patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "2"}})),
            )
            .await
            .unwrap();
            api.delete("w", &DeleteParams::default()).await.unwrap();
        })
    };
    while let Some(ev) = stream.try_next().await.unwrap() {
        let k = match ev {
            WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.unwrap()),
            WatchEvent::Modified(c) => format!("MODIFIED {}", c.metadata.name.unwrap()),
            WatchEvent::Deleted(c) => format!("DELETED {}", c.metadata.name.unwrap()),
            WatchEvent::Bookmark(_) => "BOOKMARK".to_string(),
            WatchEvent::Error(e) => panic!("{e:?}"),
        };
        kinds.push(k);
        if kinds.iter().any(|k| k == "DELETED w")
            && kinds.iter().filter(|k| *k == "BOOKMARK").count() >= 1
        {
            break;
        }
    }
    driver.await.unwrap();
    let no_bookmarks: Vec<&String> = kinds.iter().filter(|k| *k != "BOOKMARK").collect();
    assert_eq!(
        no_bookmarks
            .iter()
            .take(2)
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        vec!["ADDED kube-root-ca.crt", "ADDED pre"]
    );
    assert!(
        kinds.contains(&"ADDED w".to_string()) && kinds.contains(&"MODIFIED w".to_string()),
        "{kinds:?}"
    );
}

/// Real cluster: a watch from a resourceVersion replays the changes after it; a watch from a
/// compacted resourceVersion fails with 410 Expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resume_and_expired() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("after"))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
    let old = api.watch(&WatchParams::default().timeout(5), "1").await;
    let err = match old {
        Err(e) => format!("{e:?}"),
        Ok(s) => {
            let first = s.boxed().next().await;
            format!("{first:?}")
        }
    };
    assert!(
        err.contains("410") || err.contains("Expired") || err.contains("too old"),
        "{err}"
    );
}

/// Real cluster: server-side apply through the kube client creates, and a second field manager
/// changing an owned field conflicts unless forced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_with_kube() {
    let env = Env::new().await;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await, "default");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"owner": "a"}});
    api.patch("ssa", &PatchParams::apply("mgr-a"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    let cfg_b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"owner": "b"}});
    let e = api
        .patch("ssa", &PatchParams::apply("mgr-b"), &Patch::Apply(&cfg_b))
        .await
        .unwrap_err();
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Apply failed with 1 conflict: conflict with \"mgr-a\": .data.owner"
            );
        }
        other => panic!("{other:?}"),
    }
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(&cfg_b),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owner"], "b");
}

/// Real cluster: TokenRequest returns a token and expiry; SelfSubjectAccessReview answers for
/// the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_and_access_review() {
    let env = Env::new().await;
    let client = env.client().await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    let tr: TokenRequest = serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let out: TokenRequest = sas
        .create_subresource("token", "default", &PostParams::default(), &tr)
        .await
        .unwrap();
    let token = out.status.and_then(|s| s.token).unwrap();
    assert_eq!(token.split('.').count(), 3);
    let sa_client = common::client_from(&env.sim.kubeconfig_for_token(&token)).await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(sa_client);
    let ssar: SelfSubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}}
    }))
    .unwrap();
    let answer = reviews.create(&PostParams::default(), &ssar).await.unwrap();
    assert!(!answer.status.unwrap().allowed);
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut s = String::new();
    r.read_to_string(&mut s).await.unwrap();
    s
}

/// Real cluster: exec over WebSocket (v5) returns stdout and a Failure status with
/// reason NonZeroExitCode and the exit code as a cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_status_with_kube() {
    let env = Env::new().await;
    let pods: Api<Pod> = Api::namespaced(env.client().await, "default");
    pods.create(
        &PostParams::default(),
        &pod("box", &["sleep", "3600"], false),
    )
    .await
    .unwrap();
    let mut p = pods
        .exec(
            "box",
            ["sh", "-c", "echo hi; exit 42"],
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    let out = read_all(p.stdout().unwrap()).await;
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "hi\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0]
            .message
            .as_deref(),
        Some("42")
    );
    p.join().await.unwrap();
}

/// Real cluster: a TTY exec runs under a pseudo-terminal (`tty` names a /dev/pts device) and
/// resize messages change the terminal size (`stty size`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_tty_and_resize_with_kube() {
    let env = Env::new().await;
    let pods: Api<Pod> = Api::namespaced(env.client().await, "default");
    pods.create(
        &PostParams::default(),
        &pod("box", &["sleep", "3600"], false),
    )
    .await
    .unwrap();
    let mut p = pods
        .exec("box", ["sh"], &AttachParams::interactive_tty())
        .await
        .unwrap();
    let mut size = p.terminal_size().unwrap();
    futures::SinkExt::send(
        &mut size,
        kube::api::TerminalSize {
            width: 100,
            height: 40,
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"tty; stty size; exit 5\n").await.unwrap();
    let out = read_all(p.stdout().unwrap()).await;
    let status = p.take_status().unwrap().await.unwrap();
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("40 100"), "{out}");
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0]
            .message
            .as_deref(),
        Some("5")
    );
}

/// Real cluster: attach connects to the container's main process: its stdin and its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_with_kube() {
    let env = Env::new().await;
    let pods: Api<Pod> = Api::namespaced(env.client().await, "default");
    pods.create(&PostParams::default(), &pod("cat", &["cat"], true))
        .await
        .unwrap();
    let mut p = pods
        .attach("cat", &AttachParams::default().stdin(true).stderr(false))
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    let mut stdout = p.stdout().unwrap();
    stdin.write_all(b"ping\n").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), stdout.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping\n");
    assert_eq!(
        env.sim.store().get("pods", "default", "cat").unwrap()["status"]["phase"],
        "Running"
    );
}

/// Real cluster: deletecollection with a label selector deletes exactly the matching objects;
/// SubjectAccessReview answers for another user (as a webhook authorizer would ask).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_and_subject_access_review() {
    let env = Env::new().await;
    let client = env.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut c = cm(name);
        c.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default().labels("tier"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, vec!["c"]);
    env.bind_cluster("devs-view", "view", "group", "devs").await;
    let sars: Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> = Api::all(client);
    let ask = |user: &str, groups: Vec<&str>| {
        serde_json::from_value::<k8s_openapi::api::authorization::v1::SubjectAccessReview>(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}}
        }))
        .unwrap()
    };
    let yes = sars
        .create(&PostParams::default(), &ask("dana", vec!["devs"]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(yes.allowed);
    assert_eq!(yes.reason.as_deref(), Some("RBAC: allowed by ClusterRoleBinding \"devs-view\" of ClusterRole \"view\" to Group \"devs\""));
    let no = sars
        .create(&PostParams::default(), &ask("dana", vec![]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(!no.allowed);
}

/// Real cluster (one per test here): many independent clusters can run side by side, each with
/// its own kube-system UID and CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_simulators_in_parallel() {
    let started = std::time::Instant::now();
    let sims = futures::future::join_all((0..6).map(|_| KubeSim::start())).await;
    let sims: Vec<KubeSim> = sims.into_iter().map(|s| s.unwrap()).collect();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start-up took {:?}",
        started.elapsed()
    );
    let mut uids: Vec<String> = sims.iter().map(|s| s.kube_system_uid()).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 6);
    for s in &sims {
        let client = common::client_from(&s.admin_kubeconfig()).await;
        let ns: Api<Namespace> = Api::all(client);
        assert_eq!(
            ns.get("kube-system").await.unwrap().metadata.uid.unwrap(),
            s.kube_system_uid()
        );
    }
}

/// Dropping the handle shuts the server down and kills pod processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_shuts_down() {
    let sim = KubeSim::start().await.unwrap();
    let addr = sim.addr();
    sim.store()
        .create(serde_json::to_value(pod("p", &["sleep", "300"], false)).unwrap())
        .unwrap();
    let dir = sim.store().pod_dir("default", "p").unwrap();
    assert!(dir.exists());
    drop(sim);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!dir.exists());
}

/// The binary serves a kubeconfig that kubectl uses, and `--state` keeps objects (and the CA)
/// across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let state = dir.path().join("state.json");
    // Port 0: the binary binds a free port and writes it into the kubeconfig (a port picked
    // here and released could be taken by a parallel test before the binary binds it).
    let start = || {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesim"));
        c.args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&kc)
            .arg("--state")
            .arg(&state)
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    let kubectl = |args: Vec<&'static str>| {
        let kc = kc.clone();
        let home = dir.path().to_path_buf();
        async move {
            tokio::process::Command::new(common::KUBECTL)
                .args(args)
                .env("KUBECONFIG", &kc)
                .env("HOME", &home)
                .env("KUBECACHEDIR", home.join("cache"))
                .output()
                .await
                .unwrap()
        }
    };
    let wait_ready = || async {
        for _ in 0..300 {
            if kc.exists() && kubectl(vec!["get", "ns", "default"]).await.status.success() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("kubesim binary did not become ready");
    };
    let mut child = start();
    wait_ready().await;
    assert!(kubectl(vec!["create", "cm", "kept", "--from-literal=a=b"])
        .await
        .status
        .success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIGTERM: the binary saves its state and exits.
    if let Some(pid) = child.id() {
        nix_kill(pid);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    std::fs::remove_file(&kc).unwrap();
    let mut child = start();
    wait_ready().await;
    let out = kubectl(vec!["get", "cm", "kept", "-o", "jsonpath={.data.a}"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b");
    if let Some(pid) = child.id() {
        nix_kill(pid);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

fn nix_kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Run `command` in pod `box` and return (stdout, exit code).
async fn exec_out(pods: &Api<Pod>, command: &[&str]) -> (String, i32) {
    let mut p = pods
        .exec(
            "box",
            command.to_vec(),
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    let out = read_all(p.stdout().unwrap()).await;
    let status = p.take_status().unwrap().await.unwrap();
    p.join().await.unwrap();
    let code = match status.status.as_deref() {
        Some("Success") => 0,
        _ => status
            .details
            .and_then(|d| d.causes)
            .and_then(|c| c.first().and_then(|c| c.message.clone()))
            .and_then(|m| m.parse().ok())
            .unwrap_or(-1),
    };
    (out, code)
}

/// Confined pod processes (`Options::confine`, Warden's demo): a cleared environment, the
/// pod's own directory, and with Landlock no way to read the protected directory (an
/// application's data directory holding the simulator's pod directories, as in the demo), the
/// simulator's own environment through `/proc`, or anything outside the system directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_pods_cannot_read_the_host() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("master.key");
    std::fs::write(&key, "the master key").unwrap();
    let sim = KubeSim::start_with(Options {
        work_dir: Some(data.path().join("demo/pods")),
        confine: Some(kubesim::Confinement {
            protect: vec![data.path().to_owned()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = common::client_from(&sim.admin_kubeconfig()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &pod("box", &["sleep", "3600"], false),
    )
    .await
    .unwrap();

    // Only the variables the runtime sets: nothing of this process (CARGO_*, WARDEN_*, ...).
    let (env, code) = exec_out(&pods, &["env"]).await;
    assert_eq!(code, 0, "{env}");
    let mut keys: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "HOME",
            "HOSTNAME",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "PATH",
            "TMPDIR"
        ],
        "{env}"
    );
    // An interactive shell under a terminal works (the demo's web terminal).
    let mut p = pods
        .exec("box", ["sh"], &AttachParams::interactive_tty())
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"stty size; exit 7\n").await.unwrap();
    let out = read_all(p.stdout().unwrap()).await;
    let status = p.take_status().unwrap().await.unwrap();
    assert!(out.contains("24 80"), "{out}");
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0]
            .message
            .as_deref(),
        Some("7")
    );
    // Its own directory, writable.
    let (out, code) = exec_out(&pods, &["sh", "-c", "pwd; echo hi > f && cat f"]).await;
    assert_eq!(code, 0, "{out}");
    let dir = sim.store().pod_dir("default", "box").unwrap();
    assert_eq!(
        out,
        format!("{}\nhi\n", std::fs::canonicalize(&dir).unwrap().display())
    );

    let Some(abi) = kubesim::landlock_abi() else {
        eprintln!("Landlock is not available on this kernel: the read denials are not checked");
        return;
    };
    eprintln!("Landlock ABI {abi}");
    for cmd in [
        format!("cat {}", key.display()),
        format!("ls {}", data.path().display()),
        "cat ../../../../master.key".to_string(),
        format!("cat /proc/{}/environ", std::process::id()),
        "ls /tmp".to_string(),
    ] {
        let (out, code) = exec_out(&pods, &["sh", "-c", &cmd]).await;
        assert_ne!(code, 0, "{cmd}: {out}");
        assert!(!out.contains("the master key"), "{cmd}: {out}");
    }
    // The system's programs still run.
    let (out, code) = exec_out(&pods, &["sh", "-c", "ls /usr/bin | grep -c . && date +%Y"]).await;
    assert_eq!(code, 0, "{out}");
}

/// With `Options::controllers`: a Deployment's pods come from its template, a deleted pod is
/// replaced, a scale changes their number, a new template replaces them, and deleting the
/// Deployment deletes them. Without it nothing but what clients create exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_make_their_pods_when_controllers_run() {
    use k8s_openapi::api::apps::v1::Deployment;
    async fn settle(pods: &Api<Pod>, want: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
        for _ in 0..100 {
            let l = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items;
            if want(&l) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the deployment's pods did not settle");
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
    }))
    .unwrap();
    // Off by default.
    let plain = KubeSim::start().await.unwrap();
    let client = common::client_from(&plain.admin_kubeconfig()).await;
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let none = Api::<Pod>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(none.items.is_empty());

    let sim = KubeSim::start_with(Options {
        controllers: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = common::client_from(&sim.admin_kubeconfig()).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let made = deploys
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let uid = made.metadata.uid.unwrap();
    let two = settle(&pods, |l| l.len() == 2).await;
    let hash = two[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    for p in &two {
        let name = p.metadata.name.as_deref().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", uid.as_str(), Some(true))
        );
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("nginx:1")
        );
    }
    // A deleted pod is replaced.
    let gone = two[0].metadata.name.clone().unwrap();
    pods.delete(&gone, &DeleteParams::default()).await.unwrap();
    let again = settle(&pods, |l| {
        l.len() == 2
            && l.iter()
                .all(|p| p.metadata.name.as_deref() != Some(gone.as_str()))
    })
    .await;
    assert_eq!(again.len(), 2);
    // Scaled through the scale subresource, as `kubectl scale` does.
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    settle(&pods, |l| l.len() == 3).await;
    // A new template: every pod replaced by one of the new template.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}})),
        )
        .await
        .unwrap();
    let new = settle(&pods, |l| {
        l.len() == 3
            && l.iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:2"))
    })
    .await;
    assert!(new
        .iter()
        .all(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"] != hash));
    // Deleted: its pods go with it.
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    settle(&pods, |l| l.is_empty()).await;
}
