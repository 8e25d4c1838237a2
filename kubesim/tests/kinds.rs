//! Per-kind conformance with the real kubectl: create/get/delete, client-side apply (first
//! apply, no-op re-apply, changed re-apply), server-side apply, merge patch and label, for
//! every kind kubesim stores. Each case states the real-cluster behaviour it checks.

mod common;

use common::Env;

struct Kind {
    /// kubectl resource name.
    res: &'static str,
    name: &'static str,
    namespaced: bool,
    v1: &'static str,
    v2: &'static str,
    /// jsonpath and expected value after applying v2.
    check: (&'static str, &'static str),
    patch: &'static str,
    pcheck: (&'static str, &'static str),
}

impl Kind {
    fn args<'a>(&'a self, base: &[&'a str]) -> Vec<&'a str> {
        let mut v = base.to_vec();
        if self.namespaced {
            v.extend(["-n", "default"]);
        }
        v
    }
}

async fn jsonpath(env: &Env, k: &Kind, path: &str) -> String {
    let expr = format!("jsonpath={{{path}}}");
    let out = env
        .kubectl(&k.args(&["get", k.res, k.name, "-o", &expr]))
        .await;
    out.ok().to_string()
}

/// Real cluster: `kubectl create -f` creates the object (server assigns uid, resourceVersion,
/// creationTimestamp), `get` prints it as a table and as JSON, `delete` removes it and a
/// later `get` answers 404 NotFound `<resource> "<name>" not found`.
async fn create_get_delete(k: Kind) {
    let env = Env::new().await;
    let out = env
        .run(&env.admin, &k.args(&["create", "-f", "-"]), Some(k.v1))
        .await;
    assert!(out.ok().contains(" created"), "{}", out.stdout);
    let obj = env
        .kubectl(&k.args(&["get", k.res, k.name, "-o", "json"]))
        .await
        .json();
    assert!(obj["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|r| r.parse::<u64>().is_ok()));
    assert!(obj["metadata"]["creationTimestamp"].as_str().is_some());
    let table = env.kubectl(&k.args(&["get", k.res])).await;
    assert!(table.ok().starts_with("NAME"), "{}", table.stdout);
    assert!(table.ok().contains(k.name));
    let out = env
        .run(&env.admin, &k.args(&["create", "-f", "-"]), Some(k.v1))
        .await;
    assert!(out.err().contains("AlreadyExists"), "{}", out.stderr);
    let del = env.kubectl(&k.args(&["delete", k.res, k.name])).await;
    assert!(del.ok().contains("deleted"), "{}", del.stdout);
    let gone = env.kubectl(&k.args(&["get", k.res, k.name])).await;
    assert!(gone.err().contains("(NotFound)"), "{}", gone.stderr);
    assert!(
        gone.err().contains(&format!("\"{}\" not found", k.name)),
        "{}",
        gone.stderr
    );
}

/// Real cluster: client-side apply creates with the last-applied annotation, a second apply
/// of the same manifest is `unchanged`, a changed manifest is `configured` through a
/// three-way strategic merge patch.
async fn apply_client_side(k: Kind) {
    let env = Env::new().await;
    let a = env
        .run(&env.admin, &k.args(&["apply", "-f", "-"]), Some(k.v1))
        .await;
    assert!(a.ok().contains(" created"), "{}", a.stdout);
    let b = env
        .run(&env.admin, &k.args(&["apply", "-f", "-"]), Some(k.v1))
        .await;
    assert!(b.ok().contains(" unchanged"), "{}", b.stdout);
    let c = env
        .run(&env.admin, &k.args(&["apply", "-f", "-"]), Some(k.v2))
        .await;
    assert!(c.ok().contains(" configured"), "{}", c.stdout);
    assert_eq!(jsonpath(&env, &k, k.check.0).await, k.check.1);
    let ann = jsonpath(
        &env,
        &k,
        ".metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration",
    )
    .await;
    assert!(ann.contains(k.name), "last-applied annotation: {ann}");
}

/// Real cluster: `apply --server-side` creates on first apply, re-applies idempotently and
/// applies changes (all reported as `serverside-applied`).
async fn apply_server_side(k: Kind) {
    let env = Env::new().await;
    for manifest in [k.v1, k.v1, k.v2] {
        let out = env
            .run(
                &env.admin,
                &k.args(&["apply", "--server-side", "-f", "-"]),
                Some(manifest),
            )
            .await;
        assert!(out.ok().contains(" serverside-applied"), "{}", out.stdout);
    }
    assert_eq!(jsonpath(&env, &k, k.check.0).await, k.check.1);
    let ann = jsonpath(&env, &k, ".metadata.annotations").await;
    assert!(
        !ann.contains("last-applied-configuration"),
        "SSA writes no annotation: {ann}"
    );
}

/// Real cluster: `kubectl patch --type merge` answers `patched`; `kubectl label` adds a label
/// (`labeled`), refuses to overwrite without --overwrite, and `key-` removes it.
async fn patch_and_label(k: Kind) {
    let env = Env::new().await;
    env.run(&env.admin, &k.args(&["create", "-f", "-"]), Some(k.v1))
        .await
        .ok();
    let p = env
        .kubectl(&k.args(&["patch", k.res, k.name, "--type", "merge", "-p", k.patch]))
        .await;
    assert!(p.ok().contains(" patched"), "{}", p.stdout);
    assert_eq!(jsonpath(&env, &k, k.pcheck.0).await, k.pcheck.1);
    let l = env
        .kubectl(&k.args(&["label", k.res, k.name, "tier=gold"]))
        .await;
    assert!(l.ok().contains(" labeled"), "{}", l.stdout);
    assert_eq!(jsonpath(&env, &k, ".metadata.labels.tier").await, "gold");
    let again = env
        .kubectl(&k.args(&["label", k.res, k.name, "tier=silver"]))
        .await;
    assert!(
        again.err().contains("already has a value (gold)"),
        "{}",
        again.stderr
    );
    env.kubectl(&k.args(&["label", k.res, k.name, "tier-"]))
        .await
        .ok();
    assert_eq!(jsonpath(&env, &k, ".metadata.labels.tier").await, "");
}

macro_rules! kind_suite {
    ($m:ident, $kind:expr) => {
        mod $m {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_get_delete() {
                super::create_get_delete($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apply_client_side() {
                super::apply_client_side($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apply_server_side() {
                super::apply_server_side($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn patch_and_label() {
                super::patch_and_label($kind).await
            }
        }
    };
}

kind_suite!(configmap, Kind {
    res: "configmap",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  a: \"1\"\n  b: \"1\"\n",
    v2: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  a: \"2\"\n",
    check: (".data", "{\"a\":\"2\"}"),
    patch: "{\"data\":{\"p\":\"x\"}}",
    pcheck: (".data.p", "x"),
});

kind_suite!(secret, Kind {
    res: "secret",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo\ntype: Opaque\ndata:\n  pw: b25l\n",
    v2: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo\ntype: Opaque\ndata:\n  pw: dHdv\n",
    check: (".data.pw", "dHdv"),
    patch: "{\"stringData\":{\"k\":\"x\"}}",
    pcheck: (".data.k", "eA=="),
});

kind_suite!(pod, Kind {
    res: "pod",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sleep\", \"3600\"]\n",
    v2: "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: main\n    image: busybox:1.37\n    command: [\"sleep\", \"3600\"]\n",
    check: (".spec.containers[0].image", "busybox:1.37"),
    patch: "{\"metadata\":{\"annotations\":{\"note\":\"x\"}}}",
    pcheck: (".metadata.annotations.note", "x"),
});

kind_suite!(service, Kind {
    res: "service",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: v1\nkind: Service\nmetadata:\n  name: demo\nspec:\n  selector:\n    app: demo\n  ports:\n  - port: 80\n",
    v2: "apiVersion: v1\nkind: Service\nmetadata:\n  name: demo\nspec:\n  selector:\n    app: demo\n  ports:\n  - port: 8080\n",
    check: (".spec.ports[*].port", "8080"),
    patch: "{\"spec\":{\"selector\":{\"app\":\"other\"}}}",
    pcheck: (".spec.selector.app", "other"),
});

kind_suite!(serviceaccount, Kind {
    res: "serviceaccount",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: demo\n",
    v2: "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: demo\nautomountServiceAccountToken: false\n",
    check: (".automountServiceAccountToken", "false"),
    patch: "{\"imagePullSecrets\":[{\"name\":\"reg\"}]}",
    pcheck: (".imagePullSecrets[0].name", "reg"),
});

kind_suite!(deployment, Kind {
    res: "deployment",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: demo\n  template:\n    metadata:\n      labels:\n        app: demo\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n",
    v2: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: demo\n  template:\n    metadata:\n      labels:\n        app: demo\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n",
    check: (".status.readyReplicas", "3"),
    patch: "{\"spec\":{\"replicas\":2}}",
    pcheck: (".spec.replicas", "2"),
});

kind_suite!(
    namespace,
    Kind {
        res: "namespace",
        name: "demo",
        namespaced: false,
        v1: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    team: a\n",
        v2: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    team: b\n",
        check: (".metadata.labels.team", "b"),
        patch: "{\"metadata\":{\"annotations\":{\"owner\":\"x\"}}}",
        pcheck: (".metadata.annotations.owner", "x"),
    }
);

kind_suite!(role, Kind {
    res: "role",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: demo\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\"]\n",
    v2: "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: demo\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\", \"list\"]\n",
    check: (".rules[0].verbs", "[\"get\",\"list\"]"),
    patch: "{\"metadata\":{\"annotations\":{\"owner\":\"x\"}}}",
    pcheck: (".metadata.annotations.owner", "x"),
});

kind_suite!(rolebinding, Kind {
    res: "rolebinding",
    name: "demo",
    namespaced: true,
    v1: "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: demo\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: User\n  name: alice\n  apiGroup: rbac.authorization.k8s.io\n",
    v2: "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: demo\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: User\n  name: alice\n  apiGroup: rbac.authorization.k8s.io\n- kind: Group\n  name: devs\n  apiGroup: rbac.authorization.k8s.io\n",
    check: (".subjects[1].name", "devs"),
    patch: "{\"metadata\":{\"annotations\":{\"owner\":\"x\"}}}",
    pcheck: (".metadata.annotations.owner", "x"),
});

kind_suite!(clusterrole, Kind {
    res: "clusterrole",
    name: "demo",
    namespaced: false,
    v1: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: demo\nrules:\n- apiGroups: [\"\"]\n  resources: [\"nodes\"]\n  verbs: [\"get\"]\n",
    v2: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: demo\nrules:\n- apiGroups: [\"\"]\n  resources: [\"nodes\"]\n  verbs: [\"get\", \"watch\"]\n- nonResourceURLs: [\"/metrics\"]\n  verbs: [\"get\"]\n",
    check: (".rules[1].nonResourceURLs[0]", "/metrics"),
    patch: "{\"metadata\":{\"annotations\":{\"owner\":\"x\"}}}",
    pcheck: (".metadata.annotations.owner", "x"),
});

kind_suite!(clusterrolebinding, Kind {
    res: "clusterrolebinding",
    name: "demo",
    namespaced: false,
    v1: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: demo\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n",
    v2: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: demo\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n- kind: User\n  name: carol\n  apiGroup: rbac.authorization.k8s.io\n",
    check: (".subjects[1].name", "carol"),
    patch: "{\"metadata\":{\"annotations\":{\"owner\":\"x\"}}}",
    pcheck: (".metadata.annotations.owner", "x"),
});
