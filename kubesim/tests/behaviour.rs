//! Conformance of cluster-wide behaviour with the real kubectl: discovery, errors and their
//! exact messages, selectors, watch, namespace deletion, authentication, RBAC, impersonation,
//! service-account tokens, exec and logs. Each case names the real-cluster behaviour it checks.

mod common;

use std::time::Duration;

use common::{wait_for_line, Env};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n";

fn pod(name: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

/// Send a raw request and return the status code and the body (JSON, or null if it is not).
async fn send(client: &kube::Client, request: http::Request<Vec<u8>>) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let res = client
        .send(request.map(kube::client::Body::from))
        .await
        .expect("response");
    let code = res.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await
        .expect("body within 10s")
        .expect("body")
        .to_bytes();
    (
        code,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

// ---------------------------------------------------------------------------------------------
// Discovery and seeded state

/// Real cluster: `kubectl version` reports the server's 1.32 version; `api-resources` lists
/// the built-in kinds with their short names and groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_api_resources() {
    let env = Env::new().await;
    let v = env.kubectl(&["version", "-o", "json"]).await.json();
    assert_eq!(v["serverVersion"]["minor"], "32");
    let res = env.kubectl(&["api-resources"]).await;
    for needle in [
        "pods",
        "po",
        "deployments",
        "apps/v1",
        "clusterrolebindings",
        "rbac.authorization.k8s.io/v1",
        "selfsubjectaccessreviews",
    ] {
        assert!(
            res.ok().contains(needle),
            "missing {needle}: {}",
            res.stdout
        );
    }
}

/// Real cluster: three Ready nodes (one control-plane) show in `kubectl get nodes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ready_nodes() {
    let env = Env::new().await;
    let out = env.kubectl(&["get", "nodes", "--no-headers"]).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines
        .iter()
        .all(|l| l.split_whitespace().nth(1) == Some("Ready")));
    assert!(out.ok().contains("control-plane"));
}

/// Real cluster: default, kube-system and kube-public exist; kube-system's UID is stable
/// (tools use it as the cluster fingerprint); every namespace gets a `default` service
/// account and the `kube-root-ca.crt` config map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_namespaces_and_namespace_defaults() {
    let env = Env::new().await;
    let uid1 = env
        .kubectl(&["get", "ns", "kube-system", "-o", "jsonpath={.metadata.uid}"])
        .await
        .ok()
        .to_string();
    let uid2 = env
        .kubectl(&["get", "ns", "kube-system", "-o", "jsonpath={.metadata.uid}"])
        .await
        .ok()
        .to_string();
    assert_eq!(uid1, uid2);
    assert_eq!(uid1, env.sim.kube_system_uid());
    env.kubectl(&["create", "ns", "team-a"]).await.ok();
    env.kubectl(&["get", "sa", "default", "-n", "team-a"])
        .await
        .ok();
    let ca = env
        .kubectl(&[
            "get",
            "cm",
            "kube-root-ca.crt",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])
        .await;
    assert_eq!(ca.ok().trim(), env.sim.ca_pem().trim());
}

/// Real cluster: pods are scheduled and Running with ready container statuses and an IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_and_show_ready() {
    let env = Env::new().await;
    env.apply(&pod("web", "sleep 3600")).await.ok();
    let out = env
        .kubectl(&["get", "pod", "web", "-o", "wide", "--no-headers"])
        .await;
    let cols: Vec<&str> = out.ok().split_whitespace().collect();
    assert_eq!(&cols[1..3], &["1/1", "Running"], "{}", out.stdout);
    assert!(cols[5].starts_with("10.244."), "{}", out.stdout);
    assert!(cols[6].starts_with("kubesim-worker"), "{}", out.stdout);
    let ready = env
        .kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ])
        .await;
    assert_eq!(ready.ok(), "true");
}

// ---------------------------------------------------------------------------------------------
// Apply semantics

/// Real cluster: client-side apply removes a field that was in the last applied manifest and
/// is no longer (three-way merge), but keeps fields set by others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_prunes_removed_fields() {
    let env = Env::new().await;
    env.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  keep: \"1\"\n  drop: \"1\"\n").await.ok();
    env.kubectl(&["patch", "cm", "c", "-p", "{\"data\":{\"other\":\"x\"}}"])
        .await
        .ok();
    env.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  keep: \"1\"\n")
        .await
        .ok();
    let data = env.kubectl(&["get", "cm", "c", "-o", "json"]).await.json()["data"].clone();
    assert_eq!(data, json!({"keep": "1", "other": "x"}));
}

/// Real cluster: server-side apply conflicts when another field manager owns a field the
/// applier changes (`Apply failed with 1 conflict: conflict with "kubectl-patch" using v1:
/// .data.x`), and `--force-conflicts` takes the field over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_and_force() {
    let env = Env::new().await;
    let m = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  x: \"1\"\n";
    env.kubectl_in(&["apply", "--server-side", "-f", "-"], m)
        .await
        .ok();
    env.kubectl(&["patch", "cm", "c", "-p", "{\"data\":{\"x\":\"9\"}}"])
        .await
        .ok();
    let m2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  x: \"2\"\n";
    let err = env
        .kubectl_in(&["apply", "--server-side", "-f", "-"], m2)
        .await;
    assert!(
        err.err().contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.x"
        ),
        "{}",
        err.stderr
    );
    env.kubectl_in(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        m2,
    )
    .await
    .ok();
    let x = env
        .kubectl(&["get", "cm", "c", "-o", "jsonpath={.data.x}"])
        .await;
    assert_eq!(x.ok(), "2");
}

/// Real cluster: re-applying server-side without a field the applier owned removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_removes_fields_no_longer_applied() {
    let env = Env::new().await;
    let m = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels:\n    a: \"1\"\ndata:\n  x: \"1\"\n  y: \"1\"\n";
    env.kubectl_in(&["apply", "--server-side", "-f", "-"], m)
        .await
        .ok();
    let m2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  x: \"1\"\n";
    env.kubectl_in(&["apply", "--server-side", "-f", "-"], m2)
        .await
        .ok();
    let obj = env.kubectl(&["get", "cm", "c", "-o", "json"]).await.json();
    assert_eq!(obj["data"], json!({"x": "1"}));
    assert!(obj["metadata"]["labels"].get("a").is_none());
}

/// Real cluster: `--dry-run=server` validates and defaults but stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dry_run_persists_nothing() {
    let env = Env::new().await;
    let out = env
        .kubectl_in(&["apply", "--dry-run=server", "-f", "-"], CM)
        .await;
    assert!(out.ok().contains("(server dry run)"), "{}", out.stdout);
    assert!(env
        .sim
        .store()
        .get("configmaps", "default", "cfg")
        .is_none());
}

/// Real cluster: `kubectl scale` goes through deployments/scale and updates spec.replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_deployment() {
    let env = Env::new().await;
    env.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=1",
    ])
    .await
    .ok();
    let out = env
        .kubectl(&["scale", "deployment", "web", "--replicas=4"])
        .await;
    assert!(out.ok().contains("scaled"), "{}", out.stdout);
    let ready = env.kubectl(&["get", "deploy", "web", "--no-headers"]).await;
    assert!(ready.ok().contains("4/4"), "{}", ready.stdout);
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Real cluster: a missing object is `Error from server (NotFound): configmaps "nope" not found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_message() {
    let env = Env::new().await;
    let out = env.kubectl(&["get", "cm", "nope"]).await;
    assert_eq!(
        out.err().trim(),
        "Error from server (NotFound): configmaps \"nope\" not found"
    );
    let out = env.kubectl(&["get", "deploy", "nope"]).await;
    assert_eq!(
        out.err().trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
}

/// Real cluster: creating an existing object is 409 AlreadyExists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_exists_message() {
    let env = Env::new().await;
    env.kubectl(&["create", "cm", "dup"]).await.ok();
    let out = env.kubectl(&["create", "cm", "dup"]).await;
    // kubectl's typed create wraps it: `error: failed to create configmap: configmaps "dup" already exists`.
    assert!(
        out.err().contains("configmaps \"dup\" already exists"),
        "{}",
        out.stderr
    );
    let out = env
        .kubectl_in(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n",
        )
        .await;
    assert!(out.err().contains("Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"dup\" already exists"), "{}", out.stderr);
}

/// Real cluster: an update carrying a stale resourceVersion is 409 Conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_conflicts() {
    let env = Env::new().await;
    env.apply(CM).await.ok();
    let mut obj = env
        .kubectl(&["get", "cm", "cfg", "-o", "json"])
        .await
        .json();
    env.kubectl(&["patch", "cm", "cfg", "-p", "{\"data\":{\"a\":\"2\"}}"])
        .await
        .ok();
    obj["data"]["a"] = json!("3");
    let out = env
        .kubectl_in(&["replace", "-f", "-"], &obj.to_string())
        .await;
    assert!(
        out.err().contains("Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        out.stderr
    );
}

/// Real cluster: names must follow DNS rules (RFC 1123 subdomain for config maps, label for
/// namespaces, RFC 1035 label for services); violations are 422 Invalid with the rule text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names() {
    let env = Env::new().await;
    let out = env.kubectl(&["create", "cm", "Bad_Name"]).await;
    assert!(out.err().contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of"), "{}", out.stderr);
    let out = env.kubectl(&["create", "ns", "a.b"]).await;
    assert!(out.err().contains("Namespace \"a.b\" is invalid: metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of"), "{}", out.stderr);
    let out = env
        .kubectl(&["create", "service", "clusterip", "1svc", "--tcp=80:80"])
        .await;
    assert!(
        out.err()
            .contains("metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist of"),
        "{}",
        out.stderr
    );
}

/// Real cluster: a pod without containers is Invalid (`spec.containers: Required value`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pod_spec() {
    let env = Env::new().await;
    let out = env
        .kubectl_in(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n",
        )
        .await;
    assert!(
        out.err()
            .contains("The Pod \"p\" is invalid: spec.containers: Required value"),
        "{}",
        out.stderr
    );
}

/// Real cluster: kinds the server does not serve fail in kubectl's REST mapping, and unknown
/// resource types in `get` are reported by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds() {
    let env = Env::new().await;
    let out = env
        .kubectl_in(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n",
        )
        .await;
    assert!(
        out.err()
            .contains("no matches for kind \"Widget\" in version \"v1\""),
        "{}",
        out.stderr
    );
    let out = env.kubectl(&["get", "widgets"]).await;
    assert!(
        out.err()
            .contains("the server doesn't have a resource type \"widgets\""),
        "{}",
        out.stderr
    );
}

/// Real cluster: with kubectl's default (strict) validation an unknown field is a 400
/// BadRequest `strict decoding error: unknown field`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_is_rejected_by_strict_validation() {
    let env = Env::new().await;
    let out = env.kubectl_in(&["apply", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\nspec:\n  x: 1\n").await;
    assert!(
        out.err()
            .contains("strict decoding error: unknown field \"spec\""),
        "{}",
        out.stderr
    );
}

/// Real cluster: malformed JSON and YAML request bodies are 400 BadRequest Status objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_bad_requests() {
    let env = Env::new().await;
    let client = env.client().await;
    for (ct, body) in [
        ("application/json", "{\"apiVersion\": \"v1\", \"kind\": "),
        ("application/yaml", "kind: ConfigMap\n  bad: [indent\n"),
    ] {
        let req = http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let text = client.request_text(req).await;
        let err = text.expect_err("malformed body is rejected");
        match err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 400, "{s:?}");
                assert_eq!(s.reason, "BadRequest", "{s:?}");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors, pagination, watch

/// Real cluster: label selectors (`-l`) and field selectors (metadata.name, status.phase)
/// filter lists; unsupported field selectors are 400 `field label not supported`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors() {
    let env = Env::new().await;
    env.apply(&pod("a", "sleep 3600")).await.ok();
    env.apply(&pod("b", "sleep 3600")).await.ok();
    let out = env
        .kubectl(&["get", "pods", "-l", "app=a", "-o", "name"])
        .await;
    assert_eq!(out.ok().trim(), "pod/a");
    let out = env
        .kubectl(&["get", "pods", "-l", "app in (a,b)", "-o", "name"])
        .await;
    assert_eq!(out.ok().lines().count(), 2);
    let out = env
        .kubectl(&[
            "get",
            "pods",
            "--field-selector",
            "metadata.name=b",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.ok().trim(), "pod/b");
    let out = env
        .kubectl(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.ok().lines().count(), 2);
    let out = env
        .kubectl(&["get", "pods", "--field-selector", "spec.bogus=x"])
        .await;
    assert!(
        out.err().contains("field label not supported: spec.bogus"),
        "{}",
        out.stderr
    );
}

/// Real cluster: `--chunk-size` pages with limit/continue and still returns every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_lists() {
    let env = Env::new().await;
    for i in 0..7 {
        env.kubectl(&["create", "cm", &format!("c{i}")]).await.ok();
    }
    let out = env
        .kubectl(&["get", "cm", "--chunk-size=2", "-o", "name"])
        .await;
    assert_eq!(
        out.ok()
            .lines()
            .filter(|l| l.starts_with("configmap/c"))
            .count(),
        7
    );
}

/// Real cluster: `kubectl get -w` prints the current objects, then each change as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_streams_changes() {
    let env = Env::new().await;
    env.kubectl(&["create", "cm", "first"]).await.ok();
    let mut child = env.spawn(&env.admin, &["get", "cm", "-w"]);
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&mut lines, "first", &mut seen).await,
        "{seen:?}"
    );
    env.kubectl(&["create", "cm", "second"]).await.ok();
    assert!(
        wait_for_line(&mut lines, "second", &mut seen).await,
        "{seen:?}"
    );
    assert!(seen[0].starts_with("NAME"), "{seen:?}");
    child.kill().await.ok();
}

/// Real cluster: `--output-watch-events` shows ADDED/MODIFIED/DELETED event types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_event_types() {
    let env = Env::new().await;
    let mut child = env.spawn(
        &env.admin,
        &["get", "cm", "-w", "--watch-only", "--output-watch-events"],
    );
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.kubectl(&["create", "cm", "w1"]).await.ok();
    env.kubectl(&["label", "cm", "w1", "x=y"]).await.ok();
    env.kubectl(&["delete", "cm", "w1"]).await.ok();
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&mut lines, "DELETED", &mut seen).await,
        "{seen:?}"
    );
    let text = seen.join("\n");
    assert!(
        text.contains("ADDED") && text.contains("MODIFIED"),
        "{text}"
    );
    child.kill().await.ok();
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// Real cluster: deleting a namespace deletes everything in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_removes_contents() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "doomed"]).await.ok();
    env.kubectl(&["create", "cm", "c", "-n", "doomed"])
        .await
        .ok();
    env.kubectl(&["create", "deployment", "d", "--image=nginx", "-n", "doomed"])
        .await
        .ok();
    let out = env.kubectl(&["delete", "ns", "doomed"]).await;
    assert!(
        out.ok().contains("namespace \"doomed\" deleted"),
        "{}",
        out.stdout
    );
    assert!(env
        .sim
        .store()
        .list("configmaps", Some("doomed"))
        .is_empty());
    assert!(env
        .sim
        .store()
        .list("deployments", Some("doomed"))
        .is_empty());
    let out = env.kubectl(&["create", "cm", "c2", "-n", "doomed"]).await;
    assert!(
        out.err().contains("namespaces \"doomed\" not found"),
        "{}",
        out.stderr
    );
}

/// Real cluster: the system namespaces cannot be deleted (403 `this namespace may not be deleted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_namespaces_cannot_be_deleted() {
    let env = Env::new().await;
    let out = env.kubectl(&["delete", "ns", "default"]).await;
    assert!(
        out.err()
            .contains("namespaces \"default\" is forbidden: this namespace may not be deleted"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication and RBAC

/// Real cluster: a client certificate's CN is the user and its O fields the groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_with_client_certificate() {
    let env = Env::new().await;
    let kc = env.user("alice", &["dev", "ops"]);
    let out = env
        .run(&kc, &["auth", "whoami", "-o", "json"], None)
        .await
        .json();
    assert_eq!(out["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        out["status"]["userInfo"]["groups"],
        json!(["dev", "ops", "system:authenticated"])
    );
}

/// Real cluster: a static bearer token maps to its user (token-auth-file behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_user() {
    let env = Env::new().await;
    let token = env.sim.token_for("bob", &["qa"]);
    let out = env
        .run(&env.token_user(&token), &["auth", "whoami"], None)
        .await;
    assert!(
        out.ok().contains("bob") && out.ok().contains("qa"),
        "{}",
        out.stdout
    );
    // A 401 during discovery is reported by kubectl 1.32 as
    // `You must be logged in to the server (the server has asked for the client to provide credentials)`.
    let bad = env
        .run(&env.token_user("not-a-token"), &["get", "pods"], None)
        .await;
    assert!(
        bad.err()
            .contains("error: You must be logged in to the server"),
        "{}",
        bad.stderr
    );
}

/// Real cluster: an unauthenticated client is `system:anonymous`: it may read /version
/// (system:public-info-viewer) but not discovery or resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_forbidden() {
    let env = Env::new().await;
    let kc = env.anonymous();
    let v = env.run(&kc, &["get", "--raw", "/version"], None).await;
    assert!(
        v.ok().contains("\"gitVersion\": \"v1.32.0\"") || v.ok().contains("v1.32.0"),
        "{}",
        v.stdout
    );
    let out = env
        .run(
            &kc,
            &["get", "--raw", "/api/v1/namespaces/default/pods"],
            None,
        )
        .await;
    assert!(out.err().contains("Forbidden"), "{}", out.stderr);
    let client = common::client_from(
        &env.sim
            .kubeconfig_for_token("x")
            .replace("    token: x\n", "    username: a\n    password: b\n"),
    )
    .await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(client);
    match pods.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.message, "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Real cluster: the exact Forbidden message for a namespaced list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_message_namespaced() {
    let env = Env::new().await;
    let out = env
        .run(
            &env.user("sally", &[]),
            &["get", "pods", "-n", "default"],
            None,
        )
        .await;
    assert_eq!(
        out.err().trim(),
        "Error from server (Forbidden): pods is forbidden: User \"sally\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
}

/// Real cluster: the exact Forbidden message at cluster scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_message_cluster_scope() {
    let env = Env::new().await;
    let out = env
        .run(&env.user("sally", &[]), &["get", "namespaces"], None)
        .await;
    assert_eq!(
        out.err().trim(),
        "Error from server (Forbidden): namespaces is forbidden: User \"sally\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
}

/// Real cluster: the Forbidden message for a named object in a non-core group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_message_named_in_group() {
    let env = Env::new().await;
    let out = env
        .run(
            &env.user("sally", &[]),
            &["get", "deployment", "web", "-n", "default"],
            None,
        )
        .await;
    assert_eq!(
        out.err().trim(),
        "Error from server (Forbidden): deployments.apps \"web\" is forbidden: User \"sally\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"default\""
    );
}

/// Real cluster: `auth can-i` answers yes for cluster-admin (system:masters) and no (exit 1)
/// for a user without bindings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_admin_and_denied_user() {
    let env = Env::new().await;
    assert_eq!(
        env.kubectl(&["auth", "can-i", "delete", "nodes"])
            .await
            .ok()
            .trim(),
        "yes"
    );
    let out = env
        .run(
            &env.user("nobody", &[]),
            &["auth", "can-i", "list", "pods"],
            None,
        )
        .await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout.trim(), "no");
}

/// Real cluster: a RoleBinding grants a user its role's verbs in that namespace only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_user_through_rolebinding() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "dev"]).await.ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
        "-n",
        "dev",
    ])
    .await
    .ok();
    let kc = env.user("alice", &[]);
    assert_eq!(
        env.run(
            &kc,
            &["auth", "can-i", "create", "deployments", "-n", "dev"],
            None
        )
        .await
        .ok()
        .trim(),
        "yes"
    );
    assert_eq!(
        env.run(
            &kc,
            &["auth", "can-i", "create", "deployments", "-n", "default"],
            None
        )
        .await
        .stdout
        .trim(),
        "no"
    );
    assert_eq!(
        env.run(
            &kc,
            &["auth", "can-i", "create", "roles", "-n", "dev"],
            None
        )
        .await
        .stdout
        .trim(),
        "no"
    );
    env.run(&kc, &["create", "cm", "ok", "-n", "dev"], None)
        .await
        .ok();
}

/// Real cluster: a ClusterRoleBinding to a group grants every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_group_through_clusterrolebinding() {
    let env = Env::new().await;
    env.bind_cluster("devs-view", "view", "group", "devs").await;
    let kc = env.user("dave", &["devs"]);
    assert_eq!(
        env.run(&kc, &["auth", "can-i", "list", "pods", "-A"], None)
            .await
            .ok()
            .trim(),
        "yes"
    );
    assert_eq!(
        env.run(&kc, &["auth", "can-i", "get", "secrets"], None)
            .await
            .stdout
            .trim(),
        "no"
    );
    env.run(&kc, &["get", "pods", "-A"], None).await.ok();
}

/// Real cluster: service accounts are subjects (`system:serviceaccount:NS:NAME`) and belong to
/// the `system:serviceaccounts` and `system:serviceaccounts:NS` groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_service_accounts() {
    let env = Env::new().await;
    env.kubectl(&["create", "sa", "bot"]).await.ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=default:bot",
    ])
    .await
    .ok();
    let yes = env
        .kubectl(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "--as=system:serviceaccount:default:bot",
        ])
        .await;
    assert_eq!(yes.ok().trim(), "yes");
    let no = env
        .kubectl(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "kube-system",
            "--as=system:serviceaccount:default:bot",
        ])
        .await;
    assert_eq!(no.stdout.trim(), "no");
    env.bind_cluster(
        "all-sa-nodes",
        "view",
        "group",
        "system:serviceaccounts:default",
    )
    .await;
    let grp = env
        .kubectl(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "kube-system",
            "--as=system:serviceaccount:default:other",
        ])
        .await;
    assert_eq!(grp.ok().trim(), "yes");
}

/// Real cluster: resourceNames restrict a rule to named objects; nonResourceURLs govern raw
/// paths like /version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_names_and_non_resource_urls() {
    let env = Env::new().await;
    env.kubectl(&["create", "cm", "allowed"]).await.ok();
    env.kubectl(&["create", "cm", "denied"]).await.ok();
    env.kubectl(&[
        "create",
        "role",
        "one-cm",
        "--verb=get",
        "--resource=configmaps",
        "--resource-name=allowed",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "one-cm",
        "--role=one-cm",
        "--user=rita",
    ])
    .await
    .ok();
    let kc = env.user("rita", &[]);
    env.run(&kc, &["get", "cm", "allowed"], None).await.ok();
    let out = env.run(&kc, &["get", "cm", "denied"], None).await;
    assert!(
        out.err().contains(
            "configmaps \"denied\" is forbidden: User \"rita\" cannot get resource \"configmaps\""
        ),
        "{}",
        out.stderr
    );
    let v = env.run(&kc, &["get", "--raw", "/version"], None).await;
    assert!(v.ok().contains("v1.32"), "{}", v.stdout);
    let m = env.run(&kc, &["get", "--raw", "/metrics"], None).await;
    assert!(
        m.err()
            .contains("forbidden: User \"rita\" cannot get path \"/metrics\""),
        "{}",
        m.stderr
    );
}

/// Real cluster: creating a Role that grants permissions the creator lacks is forbidden
/// (privilege escalation prevention) unless the creator has `escalate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_escalation_is_prevented() {
    let env = Env::new().await;
    env.kubectl(&[
        "create",
        "role",
        "role-admin",
        "--verb=create,get,list",
        "--resource=roles",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "eve-roles",
        "--role=role-admin",
        "--user=eve",
    ])
    .await
    .ok();
    let kc = env.user("eve", &[]);
    let out = env
        .run(
            &kc,
            &[
                "create",
                "role",
                "secrets-reader",
                "--verb=get",
                "--resource=secrets",
            ],
            None,
        )
        .await;
    assert!(
        out.err()
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        out.stderr
    );
    assert!(
        out.err()
            .contains("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"),
        "{}",
        out.stderr
    );
    // Granting a subset of what eve holds is fine.
    env.run(
        &kc,
        &[
            "create",
            "role",
            "roles-reader",
            "--verb=get",
            "--resource=roles",
        ],
        None,
    )
    .await
    .ok();
}

/// Real cluster: the `escalate` check is asked with the name in the request's URL
/// (`RoleEscalationAuthorized` reads `RequestInfo.Name`), which a create (POST) has not: an
/// `escalate` rule limited to one role's name lets its holder update that role beyond what they
/// hold, never create it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalate_by_name_covers_updates_not_creates() {
    let env = Env::new().await;
    env.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: named-escalator, namespace: default}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [create, get, update, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  resourceNames: [secrets-reader]
  verbs: [escalate]
",
    )
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "gia-escalator",
        "--role=named-escalator",
        "--user=gia",
    ])
    .await
    .ok();
    let kc = env.user("gia", &[]);
    let out = env
        .run(
            &kc,
            &[
                "create",
                "role",
                "secrets-reader",
                "--verb=get",
                "--resource=secrets",
            ],
            None,
        )
        .await;
    assert!(
        out.err()
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        out.stderr
    );
    // Made by the administrator, it is gia's to widen by name.
    env.kubectl(&[
        "create",
        "role",
        "secrets-reader",
        "--verb=list",
        "--resource=configmaps",
    ])
    .await
    .ok();
    env.run(
        &kc,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secrets-reader, namespace: default}
rules:
- apiGroups: [\"\"]
  resources: [secrets]
  verbs: [get]
",
        ),
    )
    .await
    .ok();
}

/// Real cluster: binding a role needs the `bind` verb on it (or holding its permissions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolebinding_requires_bind_or_coverage() {
    let env = Env::new().await;
    env.kubectl(&[
        "create",
        "role",
        "binder",
        "--verb=create,get",
        "--resource=rolebindings",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "fred-binder",
        "--role=binder",
        "--user=fred",
    ])
    .await
    .ok();
    let kc = env.user("fred", &[]);
    let out = env
        .run(
            &kc,
            &[
                "create",
                "rolebinding",
                "x",
                "--clusterrole=admin",
                "--user=fred",
            ],
            None,
        )
        .await;
    assert!(
        out.err()
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        out.stderr
    );
    env.kubectl(&[
        "create",
        "clusterrole",
        "bind-admin",
        "--verb=bind",
        "--resource=clusterroles",
        "--resource-name=admin",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "fred-bind-admin",
        "--clusterrole=bind-admin",
        "--user=fred",
    ])
    .await
    .ok();
    env.run(
        &kc,
        &[
            "create",
            "rolebinding",
            "x",
            "--clusterrole=admin",
            "--user=fred",
        ],
        None,
    )
    .await
    .ok();
}

/// Real cluster: a watch names its object through `fieldSelector=metadata.name=` only when its
/// verb comes from `?watch` (requestinfo.go reads the selector for a GET turned into list or
/// watch); one through the deprecated `/watch/` path prefix is authorized unnamed, so a rule
/// limited by `resourceNames` allows the first and not the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_the_path_prefix_is_not_named_by_its_field_selector() {
    let env = Env::new().await;
    env.kubectl(&["create", "cm", "x"]).await.ok();
    env.kubectl(&[
        "create",
        "role",
        "watch-x",
        "--verb=watch",
        "--resource=configmaps",
        "--resource-name=x",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "wendy-watch-x",
        "--role=watch-x",
        "--user=wendy",
    ])
    .await
    .ok();
    let wendy =
        common::client_from(&env.sim.kubeconfig_for_cert("wendy", &[]).expect("cert")).await;
    let get = |uri: &str| http::Request::get(uri).body(Vec::new()).expect("request");
    let (code, _) = send(
        &wendy,
        get("/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3Dx&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, status) = send(
        &wendy,
        get("/api/v1/watch/namespaces/default/configmaps?fieldSelector=metadata.name%3Dx&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "configmaps is forbidden: User \"wendy\" cannot watch resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
}

/// Real cluster: a server-side apply is authorized as `patch`, and one that creates the object
/// must also be allowed to `create` it (handlers/patch.go authorizes the create with verb
/// `create` and the object's name): `patch` alone updates, never creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_creates_needs_create() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "a"]).await.ok();
    env.kubectl(&["create", "cm", "old", "-n", "a"]).await.ok();
    env.kubectl(&[
        "create",
        "role",
        "cm-patcher",
        "--verb=get,patch",
        "--resource=configmaps",
        "-n",
        "a",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "pat-patcher",
        "--role=cm-patcher",
        "--user=pat",
        "-n",
        "a",
    ])
    .await
    .ok();
    let pat = common::client_from(&env.sim.kubeconfig_for_cert("pat", &[]).expect("cert")).await;
    let apply = |name: &str| {
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"k": "v"},
        });
        http::Request::patch(format!(
            "/api/v1/namespaces/a/configmaps/{name}?fieldManager=pat"
        ))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&body).expect("json"))
        .expect("request")
    };
    // An existing object is patch's to change.
    let (code, obj) = send(&pat, apply("old")).await;
    assert_eq!(code, 200, "{obj}");
    let (code, status) = send(&pat, apply("new")).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("configmaps \"new\" is forbidden")),
        "{status}"
    );
    assert!(env
        .kubectl(&["get", "cm", "new", "-n", "a"])
        .await
        .err()
        .contains("NotFound"));
    env.kubectl(&[
        "create",
        "role",
        "cm-creator",
        "--verb=create",
        "--resource=configmaps",
        "-n",
        "a",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "pat-creator",
        "--role=cm-creator",
        "--user=pat",
        "-n",
        "a",
    ])
    .await
    .ok();
    let (code, obj) = send(&pat, apply("new")).await;
    assert_eq!(code, 201, "{obj}");
    assert_eq!(obj["data"]["k"], "v");
}

/// Real cluster: the clusterrole-aggregation controller writes what a newly labelled role
/// brings into `admin`'s rules, so binding `admin` without `bind` takes holding those rules
/// too; holding `admin`'s rules from before the label is not enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_an_aggregated_cluster_role_takes_its_aggregated_rules() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "dev"]).await.ok();
    let admin = env
        .kubectl(&["get", "clusterrole", "admin", "-o", "json"])
        .await
        .json();
    let copy = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "admin-copy"},
        "rules": admin["rules"],
    });
    env.apply(&copy.to_string()).await.ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "bo-admin-copy",
        "-n",
        "dev",
        "--clusterrole=admin-copy",
        "--user=bo",
    ])
    .await
    .ok();
    let bo = env.user("bo", &[]);
    let bind_admin = |name: &'static str| {
        let (env, bo) = (&env, bo.clone());
        async move {
            env.run(
                &bo,
                &[
                    "create",
                    "rolebinding",
                    name,
                    "-n",
                    "dev",
                    "--clusterrole=admin",
                    "--user=cy",
                ],
                None,
            )
            .await
        }
    };
    // bo holds all of admin's rules, so may bind it.
    bind_admin("before").await.ok();
    env.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-delete
  labels: {rbac.authorization.k8s.io/aggregate-to-admin: \"true\"}
rules:
- apiGroups: [\"\"]
  resources: [widgets]
  verbs: [delete]
",
    )
    .await
    .ok();
    let out = bind_admin("after").await;
    assert!(
        out.err()
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        out.stderr
    );
    assert!(
        out.err()
            .contains("{APIGroups:[\"\"], Resources:[\"widgets\"], Verbs:[\"delete\"]}"),
        "{}",
        out.stderr
    );
}

/// Real cluster: the request-info resolver gives `/api/v1/namespaces/N` the namespace N, so the
/// rules of a RoleBinding in N apply to the Namespace object N itself, and to no other namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolebinding_applies_to_its_own_namespace_object() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "dev"]).await.ok();
    env.kubectl(&["create", "ns", "other"]).await.ok();
    env.kubectl(&[
        "create",
        "role",
        "ns-owner",
        "--verb=get,patch,delete",
        "--resource=namespaces",
        "-n",
        "dev",
    ])
    .await
    .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "nina-ns-owner",
        "--role=ns-owner",
        "--user=nina",
        "-n",
        "dev",
    ])
    .await
    .ok();
    let kc = env.user("nina", &[]);
    env.run(&kc, &["get", "ns", "dev"], None).await.ok();
    env.run(&kc, &["label", "ns", "dev", "team=blue"], None)
        .await
        .ok();
    assert_eq!(
        env.kubectl(&["get", "ns", "dev", "-o", "jsonpath={.metadata.labels.team}"])
            .await
            .ok(),
        "blue"
    );
    let other = env.run(&kc, &["get", "ns", "other"], None).await;
    assert!(
        other.err().contains(
            "namespaces \"other\" is forbidden: User \"nina\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"other\""
        ),
        "{}",
        other.stderr
    );
    let list = env.run(&kc, &["get", "ns"], None).await;
    assert!(
        list.err()
            .contains("cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{}",
        list.stderr
    );
    env.run(&kc, &["delete", "ns", "dev", "--wait=false"], None)
        .await
        .ok();
}

/// Real cluster: the apiserver routes and authorizes on the decoded path, so `%2F` is a path
/// separator: `/api/v1/namespaces/default%2Fconfigmaps` lists the configmaps of `default` and
/// `.../configmaps%2Fcm1` gets `cm1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_slashes_separate_path_segments() {
    let env = Env::new().await;
    env.kubectl(&["create", "cm", "cm1", "-n", "default"])
        .await
        .ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "olga-view",
        "--clusterrole=view",
        "--user=olga",
        "-n",
        "default",
    ])
    .await
    .ok();
    let get = |client: kube::Client, uri: &'static str| async move {
        client
            .request::<serde_json::Value>(
                http::Request::get(uri).body(Vec::new()).expect("request"),
            )
            .await
    };
    // olga may list configmaps in default but holds nothing on namespaces: the request is
    // authorized as what it is served as.
    let olga = common::client_from(&env.sim.kubeconfig_for_cert("olga", &[]).expect("cert")).await;
    let list = get(olga.clone(), "/api/v1/namespaces/default%2Fconfigmaps")
        .await
        .expect("list configmaps");
    assert_eq!(list["kind"], "ConfigMapList");
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["metadata"]["name"] == "cm1"),
        "{list}"
    );
    let cm = get(olga, "/api/v1/namespaces/default/configmaps%2Fcm1")
        .await
        .expect("get cm1");
    assert_eq!(
        (&cm["kind"], &cm["metadata"]["name"]),
        (&json!("ConfigMap"), &json!("cm1"))
    );
    let nobody =
        common::client_from(&env.sim.kubeconfig_for_cert("nobody", &[]).expect("cert")).await;
    match get(nobody, "/api/v1/namespaces/default%2Fsecrets").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.message, "secrets is forbidden: User \"nobody\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"");
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Impersonation

/// Real cluster: `--as` without the impersonate right is forbidden with the exact message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_without_right_is_forbidden() {
    let env = Env::new().await;
    let kc = env.user("alice", &[]);
    // Discovery is cached first (as in everyday use); uncached, kubectl 1.32 reports a
    // discovery failure as `Error from server (Forbidden): unknown`, against a real cluster too.
    env.run(&kc, &["api-resources"], None).await.ok();
    let out = env.run(&kc, &["get", "pods", "--as=bob"], None).await;
    assert_eq!(
        out.err().trim(),
        "Error from server (Forbidden): users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
}

/// Real cluster: with `impersonate` on users, requests run as the impersonated user (and are
/// authorized as that user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_with_right() {
    let env = Env::new().await;
    env.kubectl(&[
        "create",
        "clusterrole",
        "impersonator",
        "--verb=impersonate",
        "--resource=users,groups",
    ])
    .await
    .ok();
    env.bind_cluster("alice-imp", "impersonator", "user", "alice")
        .await;
    let kc = env.user("alice", &[]);
    let who = env
        .run(
            &kc,
            &["auth", "whoami", "--as=bob", "--as-group=qa", "-o", "json"],
            None,
        )
        .await
        .json();
    assert_eq!(who["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["qa", "system:authenticated"])
    );
    let out = env.run(&kc, &["get", "pods", "--as=bob"], None).await;
    assert!(
        out.err()
            .contains("User \"bob\" cannot list resource \"pods\""),
        "{}",
        out.stderr
    );
}

/// Real cluster: `--as-group` needs `impersonate` on groups separately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonating_groups_needs_its_own_right() {
    let env = Env::new().await;
    env.kubectl(&[
        "create",
        "clusterrole",
        "imp-users",
        "--verb=impersonate",
        "--resource=users",
    ])
    .await
    .ok();
    env.bind_cluster("alice-imp", "imp-users", "user", "alice")
        .await;
    let kc = env.user("alice", &[]);
    let out = env
        .run(
            &kc,
            &["get", "pods", "--as=bob", "--as-group=system:masters"],
            None,
        )
        .await;
    assert!(
        out.err().contains("groups \"system:masters\" is forbidden: User \"alice\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"),
        "{}",
        out.stderr
    );
}

/// Real cluster: an impersonated name is a service account's only in the exact form
/// `system:serviceaccount:<namespace>:<name>` with valid parts (`serviceaccount.SplitUsername`);
/// any other name under that prefix is a user's and takes `impersonate` on users, which a grant
/// on serviceaccounts does not give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_well_formed_service_account_names_impersonate_as_service_accounts() {
    let env = Env::new().await;
    env.kubectl(&[
        "create",
        "clusterrole",
        "imp-sas",
        "--verb=impersonate",
        "--resource=serviceaccounts",
    ])
    .await
    .ok();
    env.bind_cluster("alice-imp-sas", "imp-sas", "user", "alice")
        .await;
    let kc = env.user("alice", &[]);
    env.run(&kc, &["api-resources"], None).await.ok();
    let who = env
        .run(
            &kc,
            &[
                "auth",
                "whoami",
                "--as=system:serviceaccount:default:robot",
                "-o",
                "json",
            ],
            None,
        )
        .await
        .json();
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    for name in [
        "system:serviceaccount:default:robot:extra",
        "system:serviceaccount:robot",
        "system:serviceaccount:Default:robot",
    ] {
        let out = env
            .run(&kc, &["get", "pods", &format!("--as={name}")], None)
            .await;
        assert!(
            out.err().contains(&format!(
                "users \"{name}\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
            )),
            "{name}: {}",
            out.stderr
        );
    }
}

/// Real cluster: an admin impersonating a user in system:masters acts with full rights;
/// impersonating a plain user is authorized as that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_impersonation() {
    let env = Env::new().await;
    env.kubectl(&["get", "ns", "--as=someone", "--as-group=system:masters"])
        .await
        .ok();
    let out = env.kubectl(&["get", "ns", "--as=someone"]).await;
    assert!(
        out.err()
            .contains("User \"someone\" cannot list resource \"namespaces\""),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Service-account tokens

fn sa_token_kubeconfig(env: &Env, token: &str) -> std::path::PathBuf {
    env.token_user(token.trim())
}

/// Real cluster: `kubectl create token` issues a TokenRequest JWT; the token authenticates as
/// the service account and is authorized by its bindings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_token_and_use_it() {
    let env = Env::new().await;
    env.kubectl(&["create", "sa", "ci"]).await.ok();
    env.kubectl(&[
        "create",
        "rolebinding",
        "ci-view",
        "--clusterrole=view",
        "--serviceaccount=default:ci",
    ])
    .await
    .ok();
    let token = env
        .kubectl(&["create", "token", "ci"])
        .await
        .ok()
        .to_string();
    assert_eq!(token.trim().split('.').count(), 3, "a JWT");
    let kc = sa_token_kubeconfig(&env, &token);
    let who = env
        .run(&kc, &["auth", "whoami", "-o", "json"], None)
        .await
        .json();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:ci"
    );
    assert!(who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:serviceaccounts:default")));
    env.run(&kc, &["get", "pods"], None).await.ok();
    let denied = env.run(&kc, &["get", "secrets"], None).await;
    assert!(
        denied
            .err()
            .contains("User \"system:serviceaccount:default:ci\" cannot list resource \"secrets\""),
        "{}",
        denied.stderr
    );
}

/// Real cluster: tokens die with their service account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rejected_after_service_account_deleted() {
    let env = Env::new().await;
    env.kubectl(&["create", "sa", "tmp"]).await.ok();
    let token = env
        .kubectl(&["create", "token", "tmp"])
        .await
        .ok()
        .to_string();
    let kc = sa_token_kubeconfig(&env, &token);
    env.run(&kc, &["auth", "whoami"], None).await.ok();
    env.kubectl(&["delete", "sa", "tmp"]).await.ok();
    let out = env.run(&kc, &["auth", "whoami"], None).await;
    assert!(out.err().contains("Unauthorized"), "{}", out.stderr);
}

/// Real cluster: a token bound to a pod dies with the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_bound_to_pod_dies_with_it() {
    let env = Env::new().await;
    env.apply(&pod("holder", "sleep 3600")).await.ok();
    let token = env
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=holder",
        ])
        .await
        .ok()
        .to_string();
    let kc = sa_token_kubeconfig(&env, &token);
    let who = env
        .run(&kc, &["auth", "whoami", "-o", "json"], None)
        .await
        .json();
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["holder"])
    );
    env.kubectl(&["delete", "pod", "holder"]).await.ok();
    let out = env.run(&kc, &["auth", "whoami"], None).await;
    assert!(out.err().contains("Unauthorized"), "{}", out.stderr);
}

/// Real cluster: an expired token is rejected (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_rejected() {
    let env = Env::new().await;
    let token = env
        .sim
        .service_account_token("default", "default", Duration::from_secs(1))
        .unwrap();
    let kc = sa_token_kubeconfig(&env, &token);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = env.run(&kc, &["auth", "whoami"], None).await;
    assert!(out.err().contains("Unauthorized"), "{}", out.stderr);
}

/// Real cluster: a token for another audience is not accepted by the API server; durations
/// under ten minutes are Invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_audience_and_duration_rules() {
    let env = Env::new().await;
    let token = env
        .kubectl(&["create", "token", "default", "--audience=vault"])
        .await
        .ok()
        .to_string();
    let out = env
        .run(
            &sa_token_kubeconfig(&env, &token),
            &["auth", "whoami"],
            None,
        )
        .await;
    assert!(out.err().contains("Unauthorized"), "{}", out.stderr);
    let out = env
        .kubectl(&["create", "token", "default", "--duration=5m"])
        .await;
    assert!(
        out.err()
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        out.stderr
    );
    let out = env.kubectl(&["create", "token", "ghost"]).await;
    assert!(
        out.err().contains("serviceaccounts \"ghost\" not found"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Exec and logs

/// Real cluster: non-interactive exec returns the command's output and its exit code
/// (`command terminated with exit code 3`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_codes() {
    let env = Env::new().await;
    env.apply(&pod("box", "sleep 3600")).await.ok();
    let ok = env
        .kubectl(&["exec", "box", "--", "sh", "-c", "echo out; echo err >&2"])
        .await;
    assert_eq!(ok.ok(), "out\n");
    assert_eq!(ok.stderr, "err\n");
    let fail = env
        .kubectl(&["exec", "box", "--", "sh", "-c", "exit 3"])
        .await;
    assert_eq!(fail.code, 3);
    assert!(
        fail.stderr.contains("command terminated with exit code 3"),
        "{}",
        fail.stderr
    );
}

/// Real cluster: `exec -i` forwards stdin until EOF (v5 close signal) and the shell's exit
/// status comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_interactive_shell_through_stdin() {
    let env = Env::new().await;
    env.apply(&pod("box", "sleep 3600")).await.ok();
    let out = env
        .kubectl_in(
            &["exec", "-i", "box", "--", "sh"],
            "echo hello from $HOSTNAME\ncat\nexit 7\n",
        )
        .await;
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stdout.starts_with("hello from box\n"), "{out:?}");
    let cat = env
        .kubectl_in(&["exec", "-i", "box", "--", "cat"], "line1\nline2\n")
        .await;
    assert_eq!(cat.ok(), "line1\nline2\n");
}

/// Real cluster: exec of a missing binary fails with the runtime's "executable file not
/// found" error; an unknown container is 400 BadRequest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_errors() {
    let env = Env::new().await;
    env.apply(&pod("box", "sleep 3600")).await.ok();
    let out = env.kubectl(&["exec", "box", "--", "no-such-binary"]).await;
    assert!(
        out.err().contains("executable file not found in $PATH"),
        "{}",
        out.stderr
    );
    let out = env
        .kubectl(&["exec", "box", "-c", "nope", "--", "true"])
        .await;
    assert!(
        out.err()
            .contains("container nope is not valid for pod box"),
        "{}",
        out.stderr
    );
}

/// Real cluster: a container's processes share the pod's filesystem; exec'd processes are
/// killed when the pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_shares_pod_dir_and_dies_with_pod() {
    let env = Env::new().await;
    env.apply(&pod("box", "echo made > file.txt; sleep 3600"))
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = env.kubectl(&["exec", "box", "--", "cat", "file.txt"]).await;
    assert_eq!(out.ok(), "made\n");
    let dir = env.sim.store().pod_dir("default", "box").unwrap();
    let mut child = env.spawn(&env.admin, &["exec", "box", "--", "sleep", "300"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    env.kubectl(&["delete", "pod", "box"]).await.ok();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exec ends with the pod")
        .unwrap();
    assert!(!status.success());
    assert!(!dir.exists(), "pod scratch dir removed");
}

/// Real cluster: `kubectl logs` prints what the container wrote; `logs -f` streams until the
/// container exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_follow() {
    let env = Env::new().await;
    env.apply(&pod(
        "talker",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    ))
    .await
    .ok();
    let out = env.kubectl(&["logs", "-f", "talker"]).await;
    assert_eq!(out.ok(), "line1\nline2\nline3\n");
    let out = env.kubectl(&["logs", "talker", "--tail=1"]).await;
    assert_eq!(out.ok(), "line3\n");
    let st = env
        .kubectl(&[
            "get",
            "pod",
            "talker",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}",
        ])
        .await;
    assert_eq!(st.ok(), "Completed");
}

/// Real cluster: `logs -f` on a running container streams new lines as they are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_live_output() {
    let env = Env::new().await;
    env.apply(&pod(
        "ticker",
        "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done",
    ))
    .await
    .ok();
    let mut child = env.spawn(&env.admin, &["logs", "-f", "ticker"]);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&mut lines, "tick5", &mut seen).await,
        "{seen:?}"
    );
    env.kubectl(&["delete", "pod", "ticker"]).await.ok();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("follow ends with the pod")
        .unwrap();
    assert!(status.success());
}

/// Real cluster: logs of a multi-container pod need -c (`a container name must be specified`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_need_a_container_name_for_multi_container_pods() {
    let env = Env::new().await;
    env.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: a\n    image: busybox\n    command: [\"sh\", \"-c\", \"echo from-a; sleep 3600\"]\n  - name: b\n    image: busybox\n").await.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = env
        .run(
            &env.admin,
            &["get", "--raw", "/api/v1/namespaces/default/pods/two/log"],
            None,
        )
        .await;
    assert!(
        out.err()
            .contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.kubectl(&["logs", "two", "-c", "a"]).await.ok(),
        "from-a\n"
    );
}

/// Real cluster: an aggregated ClusterRole grants what the roles its selectors match grant (a
/// CRD's role labelled `aggregate-to-view` reaches `view`, and through `edit` also `admin`),
/// and setting, changing or removing an aggregation rule takes cluster-admin
/// (clusterrole/policybased/storage.go): someone who may write every ClusterRole but not
/// escalate cannot gather cluster-admin's rules into a role of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_cluster_roles_and_who_may_aggregate() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "dev"]).await.ok();
    for (binding, role, user) in [("ivy-view", "view", "ivy"), ("al-admin", "admin", "al")] {
        env.kubectl(&[
            "create",
            "rolebinding",
            binding,
            "-n",
            "dev",
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])
        .await
        .ok();
    }
    let ivy = env.user("ivy", &[]);
    let al = env.user("al", &[]);
    let can = |kc: std::path::PathBuf, what: &'static [&'static str]| {
        let env = &env;
        async move {
            let mut args = vec!["auth", "can-i"];
            args.extend_from_slice(what);
            args.extend_from_slice(&["-n", "dev"]);
            env.run(&kc, &args, None).await.stdout.trim().to_owned()
        }
    };
    assert_eq!(can(ivy.clone(), &["list", "pods"]).await, "yes");
    assert_eq!(can(ivy.clone(), &["get", "deployments.apps"]).await, "yes");
    assert_eq!(can(ivy.clone(), &["get", "secrets"]).await, "no");
    assert_eq!(can(al.clone(), &["create", "rolebindings"]).await, "yes");
    assert_eq!(can(al.clone(), &["list", "widgets"]).await, "no");
    env.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}
rules:
- apiGroups: [\"\"]
  resources: [widgets]
  verbs: [get, list, watch]
",
    )
    .await
    .ok();
    assert_eq!(can(ivy.clone(), &["list", "widgets"]).await, "yes");
    assert_eq!(can(al.clone(), &["list", "widgets"]).await, "yes");
    assert_eq!(can(ivy.clone(), &["delete", "widgets"]).await, "no");

    // max writes every ClusterRole (not escalate, not bind).
    env.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: role-writer}
rules:
- apiGroups: [\"*\"]
  resources: [\"*\"]
  verbs: [get, list, watch, create, update, patch, delete]
",
    )
    .await
    .ok();
    env.bind_cluster("max-role-writer", "role-writer", "user", "max")
        .await;
    let max = env.user("max", &[]);
    let gather = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: gathered}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {kubernetes.io/bootstrapping: rbac-defaults}
rules: []
";
    let out = env.run(&max, &["create", "-f", "-"], Some(gather)).await;
    refused_aggregation(&out);
    // Nor by adding one to a role of their own.
    env.run(
        &max,
        &[
            "create",
            "clusterrole",
            "mine",
            "--verb=get",
            "--resource=pods",
        ],
        None,
    )
    .await
    .ok();
    let out = env
        .run(
            &max,
            &[
                "patch",
                "clusterrole",
                "mine",
                "--type=merge",
                "-p",
                r#"{"aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"kubernetes.io/bootstrapping":"rbac-defaults"}}]}}"#,
            ],
            None,
        )
        .await;
    refused_aggregation(&out);
    // Nor by removing one (the role would stop following what it aggregates).
    let out = env
        .run(
            &max,
            &[
                "patch",
                "clusterrole",
                "view",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/aggregationRule"}]"#,
            ],
            None,
        )
        .await;
    refused_aggregation(&out);
    // cluster-admin may; the role then holds what it gathers.
    env.kubectl_in(&["create", "-f", "-"], gather).await.ok();
    env.bind_cluster("joe-gathered", "gathered", "user", "joe")
        .await;
    let joe = env.user("joe", &[]);
    assert_eq!(can(joe, &["delete", "nodes"]).await, "yes");
}

/// Real cluster: a list across every namespace may name its object with a field selector (the
/// name then also goes to authorization, as `RequestInfo.Name`); it is still a list, not a GET
/// of a namespaced object without its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_every_namespace_by_name() {
    let env = Env::new().await;
    env.kubectl(&["create", "ns", "dev"]).await.ok();
    let out = env
        .kubectl(&[
            "get",
            "configmaps",
            "-A",
            "--field-selector",
            "metadata.name=kube-root-ca.crt,metadata.namespace!=dev",
            "-o",
            "name",
        ])
        .await;
    let names = out.ok();
    assert!(names.lines().count() >= 3, "{names}");
    assert!(
        names.lines().all(|l| l == "configmap/kube-root-ca.crt"),
        "{names}"
    );
    let out = env
        .kubectl(&[
            "get",
            "configmaps",
            "-A",
            "--field-selector",
            "metadata.namespace=dev",
            "-o",
            "jsonpath={.items[*].metadata.namespace}",
        ])
        .await;
    assert_eq!(out.ok().trim(), "dev");
}

/// The apiserver's refusal of an aggregation rule to someone short of cluster-admin.
#[track_caller]
fn refused_aggregation(out: &common::Out) {
    assert!(
        out.err()
            .contains("must have cluster-admin privileges to use the aggregationRule"),
        "{}",
        out.stderr
    );
}

/// Real cluster (`installer.go`): across all namespaces only list and watch are routed. A
/// `DELETE /api/v1/configmaps` is 405 and deletes nothing, in kube-system or anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_all_namespaces_only_list_and_watch_are_served() {
    let env = Env::new().await;
    env.kubectl_in(&["apply", "-n", "kube-system", "-f", "-"], CM)
        .await
        .ok();
    let client = env.client().await;
    let (code, body) = send(
        &client,
        http::Request::delete("/api/v1/configmaps")
            .body(Vec::new())
            .unwrap(),
    )
    .await;
    assert_eq!(code, 405, "{body}");
    let (code, body) = send(
        &client,
        http::Request::post("/api/v1/configmaps")
            .header("content-type", "application/json")
            .body(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"default"}}"#.to_vec())
            .unwrap(),
    )
    .await;
    assert_eq!(code, 405, "{body}");
    env.kubectl(&["get", "configmap", "cfg", "-n", "kube-system"])
        .await
        .ok();
    let (code, _) = send(
        &client,
        http::Request::get("/api/v1/configmaps")
            .body(Vec::new())
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
}
