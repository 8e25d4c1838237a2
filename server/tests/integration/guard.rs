//! Warden's namespace on a cluster is out of reach of every grant short of cluster-admin intent:
//! the agent manifest's ValidatingAdmissionPolicy `warden-system-guard` (kubesim enforces the
//! same rules natively). A user with a cluster-wide write grant (`kubectl.cluster.write`: every
//! write verb on every resource, no `escalate`, `bind` or `impersonate`) attacks through the
//! gateway (refused), and with their own service account straight at the cluster (refused by
//! the guard); the agent keeps working.

use serde_json::{json, Value};
use warden_server::gateway::testkit::Kubectl;
use warden_server::testing::TestApp;

/// The policy and its binding, as the manifest ships them, are valid
/// admissionregistration.k8s.io/v1 objects: decoded with the Kubernetes API types
/// (k8s-openapi) and encoded again, nothing is lost (a misspelt field would be).
#[test]
fn the_guard_policy_matches_the_kubernetes_schema() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let yaml = warden_domain::agent_protocol::guard_policy(
        "  labels:\n    app.kubernetes.io/managed-by: warden\n",
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(docs[0].clone()).unwrap();
    assert_eq!(serde_json::to_value(&policy).unwrap(), docs[0]);
    let binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(docs[1].clone()).unwrap();
    assert_eq!(serde_json::to_value(&binding).unwrap(), docs[1]);
    let spec = policy.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(spec.validations.unwrap().len(), 10);
    let bspec = binding.spec;
    assert_eq!(bspec.policy_name, "warden-system-guard");
    assert_eq!(bspec.validation_actions, vec!["Deny".to_string()]);
}

#[tokio::test]
async fn warden_system_is_out_of_reach_of_a_cluster_wide_write_grant() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "alpha"}))
        .await
        .assert_status(201);
    // Cluster-wide write, short of full access (which is cluster-admin intent: it carries
    // `escalate` and `impersonate`, which no admission policy can see through).
    admin
        .post("/api/v1/roles", json!({"name": "CLUSTER_WRITER", "scope": "project",
            "permissions": ["project.read", "cluster.read", "kubeconfig.read", "kubectl.cluster.write"]}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), "alpha-1", "alpha", &[], &["team"])
        .await;
    assert!(
        sim.store()
            .get(
                "validatingadmissionpolicybindings",
                "",
                "warden-system-guard"
            )
            .is_some(),
        "the manifest installs the guard"
    );
    let email = "writer@example.com";
    let writer = app.user_client(&admin, email).await;
    admin.bind_user(email, "CLUSTER_WRITER", "alpha", &[]).await;
    let kubeconfig = writer
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let kubectl = Kubectl::new(&dir.path().join("writer"), &kubeconfig);
    // The grant works where it should.
    kubectl
        .run(&["create", "configmap", "fine", "-n", "team"])
        .await
        .expect_ok();

    let attacks: &[(&str, &[&str])] = &[
        (
            "a pod in warden-system (it could mount the agent's service account)",
            &[
                "run",
                "steal",
                "-n",
                "warden-system",
                "--image=busybox",
                "--restart=Never",
                "--",
                "sleep",
                "1",
            ],
        ),
        (
            "a token for the agent's service account",
            &["create", "token", "warden-agent", "-n", "warden-system"],
        ),
        (
            "a role binding in warden-system",
            &[
                "create",
                "rolebinding",
                "rb",
                "-n",
                "warden-system",
                "--clusterrole=view",
                "--serviceaccount=team:default",
            ],
        ),
        (
            "rewriting the agent's Secret (its Warden URL)",
            &[
                "patch",
                "secret",
                "warden-agent",
                "-n",
                "warden-system",
                "-p",
                r#"{"stringData":{"WARDEN_URL":"https://evil.example"}}"#,
            ],
        ),
        (
            "a Secret in warden-system",
            &[
                "create",
                "secret",
                "generic",
                "planted",
                "-n",
                "warden-system",
                "--from-literal=a=b",
            ],
        ),
        (
            "binding a subject of warden-system elsewhere",
            &[
                "create",
                "rolebinding",
                "rb2",
                "-n",
                "team",
                "--clusterrole=view",
                "--serviceaccount=warden-system:warden-agent",
            ],
        ),
        (
            "binding warden-system's service accounts group cluster-wide",
            &[
                "create",
                "clusterrolebinding",
                "crb",
                "--clusterrole=view",
                "--group=system:serviceaccounts:warden-system",
            ],
        ),
        (
            // Every user's service account is authenticated: granting that group cluster-wide
            // write would hand a namespace reader every namespace.
            "binding every authenticated identity cluster-wide",
            &[
                "create",
                "clusterrolebinding",
                "everyone-writes",
                "--clusterrole=warden-cluster-write",
                "--group=system:authenticated",
            ],
        ),
        (
            // A service account of one's own with the cluster writer's rights keeps them after
            // Warden revokes the grant.
            "binding a service account of one's own to a warden-* ClusterRole",
            &[
                "create",
                "clusterrolebinding",
                "backdoor",
                "--clusterrole=warden-cluster-write",
                "--serviceaccount=team:default",
            ],
        ),
        (
            "binding a warden-* ClusterRole in a namespace",
            &[
                "create",
                "rolebinding",
                "backdoor",
                "-n",
                "team",
                "--clusterrole=warden-namespace-write",
                "--user=someone",
            ],
        ),
        (
            "editing a warden-* ClusterRole",
            &["label", "clusterrole", "warden-cluster-read", "owned=yes"],
        ),
        (
            "deleting a warden-* ClusterRole",
            &["delete", "clusterrole", "warden-namespace-read"],
        ),
        (
            "relabelling the warden-system namespace",
            &[
                "label",
                "namespace",
                "warden-system",
                "pod-security.kubernetes.io/enforce=privileged",
            ],
        ),
        (
            "deleting the warden-system namespace",
            &["delete", "namespace", "warden-system"],
        ),
        // A copy of warden-cluster-write under another name (the escalation check passes: the
        // writer holds every rule in it), bound to a service account of one's own: cluster-wide
        // write that would outlive Warden's revocation.
        (
            "a copy of warden-cluster-write",
            &[
                "create",
                "clusterrole",
                "mine",
                "--verb=get,list,watch,create,update,patch,delete,deletecollection",
                "--resource=*.*",
            ],
        ),
        (
            "binding a ClusterRole of the cluster's own to a service account of one's own",
            &[
                "create",
                "clusterrolebinding",
                "keep",
                "--clusterrole=view",
                "--serviceaccount=team:default",
            ],
        ),
        (
            "a Role in a namespace",
            &[
                "create",
                "role",
                "mine",
                "-n",
                "team",
                "--verb=get",
                "--resource=pods",
            ],
        ),
    ];
    // Reads across every namespace leave warden-system out (its service accounts carry every
    // user's email in their names), whatever field selector the reader adds; their own
    // namespaces' objects are all there.
    for args in [
        &["get", "serviceaccounts", "-A", "-o", "name"][..],
        &["get", "pods", "-A", "-o", "name"][..],
        &["get", "events", "-A", "-o", "name"][..],
        &[
            "get",
            "serviceaccounts",
            "-A",
            "-o",
            "name",
            "--field-selector",
            "metadata.namespace=warden-system",
        ][..],
    ] {
        let out = kubectl.run(args).await.expect_ok();
        assert!(
            !out.stdout.contains("warden-agent") && !out.stdout.contains("u-"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let out = kubectl
        .run(&["get", "serviceaccounts", "-A", "-o", "name"])
        .await
        .expect_ok();
    assert!(
        out.stdout.contains("serviceaccount/default"),
        "{}",
        out.stdout
    );
    // The same for a kind outside the ones every client knows (a custom resource, an
    // aggregated API such as metrics.k8s.io, here storage.k8s.io's CSIStorageCapacity): what
    // is namespaced, the cluster's discovery says. A cluster-scoped kind is listed as asked.
    sim.store()
        .create_yaml(
            "apiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\nmetadata:\n  name: agent-volume\n  namespace: warden-system\nstorageClassName: standard\n---\napiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\nmetadata:\n  name: team-volume\n  namespace: team\nstorageClassName: standard\n---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: standard\nprovisioner: example.com/csi\n",
        )
        .expect("storage objects");
    for args in [
        &["get", "csistoragecapacities", "-A", "-o", "name"][..],
        &[
            "get",
            "csistoragecapacities",
            "-A",
            "-o",
            "name",
            "--field-selector",
            "metadata.namespace=warden-system",
        ][..],
    ] {
        let out = kubectl.run(args).await.expect_ok();
        assert!(
            !out.stdout.contains("agent-volume"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let out = kubectl
        .run(&["get", "csistoragecapacities", "-A", "-o", "name"])
        .await
        .expect_ok();
    assert!(out.stdout.contains("team-volume"), "{}", out.stdout);
    let out = kubectl
        .run(&["get", "storageclasses", "-o", "name"])
        .await
        .expect_ok();
    assert!(out.stdout.contains("standard"), "{}", out.stdout);
    let asked: Vec<String> = sim
        .audit_log()
        .into_iter()
        .map(|r| r.request_uri)
        .filter(|u| u.contains("/storage.k8s.io/"))
        .collect();
    assert!(
        asked
            .iter()
            .filter(|u| u.contains("/storageclasses"))
            .all(|u| !u.contains("fieldSelector")),
        "a cluster-scoped kind is listed as asked: {asked:?}"
    );
    let out = kubectl
        .run(&[
            "get",
            "configmaps",
            "-A",
            "--field-selector",
            "metadata.name=fine",
        ])
        .await
        .expect_ok();
    assert!(out.stdout.contains("fine"), "{}", out.stdout);
    // The same user's own service account on the cluster, with the RBAC Warden gave it, as if
    // its token had leaked or Warden's gate had a hole: the cluster itself refuses.
    let sa = sim
        .store()
        .list("serviceaccounts", Some("warden-system"))
        .into_iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned))
        .find(|n| n.starts_with("u-writer"))
        .expect("the writer's service account");
    let token = sim
        .service_account_token("warden-system", &sa, std::time::Duration::from_secs(600))
        .unwrap();
    let direct = Kubectl::new(
        &dir.path().join("writer-direct"),
        &sim.kubeconfig_for_token(&token),
    );
    direct
        .run(&["create", "configmap", "fine-too", "-n", "team"])
        .await
        .expect_ok();
    for (what, args) in attacks {
        // Through the gateway: refused (by Warden's gate, or by the cluster).
        let out = kubectl.run(args).await;
        assert!(
            !out.ok() && out.stderr.to_lowercase().contains("forbidden"),
            "gateway: {what}: exit {} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
        // Straight to the cluster with the grant's RBAC: refused by the guard.
        let out = direct.run(args).await;
        assert!(
            !out.ok()
                && out
                    .stderr
                    .contains("ValidatingAdmissionPolicy 'warden-system-guard'"),
            "cluster: {what}: exit {} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
    }
    // A long-lived token for a service account (its Secret filled in by the cluster's token
    // controller): a credential no Warden revocation reaches. Refused through the gateway and
    // straight at the cluster.
    let token_secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: forever\n  namespace: team\n  annotations:\n    kubernetes.io/service-account.name: default\ntype: kubernetes.io/service-account-token\n";
    // (Through the gateway, Warden's own gate refuses it first: a cluster writer's secrets
    // stop at reading.)
    for (who, k, says) in [
        ("gateway", &kubectl, "forbidden"),
        (
            "cluster",
            &direct,
            "long-lived service account tokens are made by cluster administrators only",
        ),
    ] {
        let out = k
            .run_with_stdin(&["apply", "-f", "-"], Some(token_secret))
            .await;
        assert!(
            !out.ok() && out.stderr.contains(says),
            "{who}: a token Secret: exit {} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
    }
    // A Service with externalIPs takes the traffic of those addresses, other teams' included
    // (CVE-2020-8554): refused to a Warden user's grant, through the gateway and straight at
    // the cluster; a Service without them is fine.
    let service = |name: &str, ips: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n  ports:\n  - port: 80\n{ips}")
    };
    let intercept = service("intercept", "  externalIPs:\n  - 10.0.0.10\n");
    // (Through the gateway the cluster's refusal is told in Warden's words.)
    for (who, k, says) in [
        ("gateway", &kubectl, "Forbidden"),
        ("cluster", &direct, "externalIPs"),
    ] {
        let out = k
            .run_with_stdin(&["apply", "-f", "-"], Some(&intercept))
            .await;
        assert!(
            !out.ok() && out.stderr.contains(says),
            "{who}: externalIPs: exit {} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
    }
    kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&service("plain", "")))
        .await
        .expect_ok();
    let out = kubectl
        .run(&[
            "patch",
            "service",
            "plain",
            "-n",
            "team",
            "-p",
            r#"{"spec":{"externalIPs":["10.0.0.10"]}}"#,
        ])
        .await;
    assert!(
        !out.ok() && out.stderr.contains("Forbidden"),
        "patch: exit {} {} {}",
        out.code,
        out.stdout,
        out.stderr
    );
    // Pods that Pod Security's baseline refuses: from one that is privileged, mounts the node's
    // files or shares its PIDs, the node is reachable, and from the node the agent's token (on
    // clusters whose namespaces enforce no Pod Security, a stock cluster's included). Refused to
    // a Warden user's grant, through the gateway and straight at the cluster, as a pod and as a
    // workload's template; plain ones are fine.
    let says = "Pod Security's baseline refuses";
    let overrides = |spec: &str| format!(r#"{{"spec":{spec}}}"#);
    let privileged = overrides(
        r#"{"containers":[{"name":"p","image":"busybox","securityContext":{"privileged":true}}]}"#,
    );
    let host_path = overrides(
        r#"{"containers":[{"name":"p","image":"busybox","volumeMounts":[{"name":"root","mountPath":"/host"}]}],"volumes":[{"name":"root","hostPath":{"path":"/"}}]}"#,
    );
    let host_pid = overrides(r#"{"hostPID":true,"containers":[{"name":"p","image":"busybox"}]}"#);
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nodes\n  namespace: team\nspec:\n  selector:\n    matchLabels: {app: nodes}\n  template:\n    metadata:\n      labels: {app: nodes}\n    spec:\n      hostNetwork: true\n      containers:\n      - name: c\n        image: busybox\n        securityContext:\n          capabilities:\n            add: [SYS_ADMIN]\n";
    for (who, k) in [("gateway", &kubectl), ("cluster", &direct)] {
        for (what, spec) in [
            ("privileged", &privileged),
            ("hostPath", &host_path),
            ("hostPID", &host_pid),
        ] {
            let out = k
                .run(&[
                    "run",
                    "node",
                    "-n",
                    "team",
                    "--image=busybox",
                    "--restart=Never",
                    "--overrides",
                    spec,
                ])
                .await;
            assert!(
                !out.ok() && out.stderr.contains(says),
                "{who}: a {what} pod: exit {} {} {}",
                out.code,
                out.stdout,
                out.stderr
            );
        }
        let out = k
            .run_with_stdin(&["apply", "-f", "-"], Some(deployment))
            .await;
        assert!(
            !out.ok() && out.stderr.contains(says),
            "{who}: a Deployment on the host's network: exit {} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
    }
    assert!(sim.store().get("pods", "team", "node").is_none());
    assert!(sim.store().get("deployments", "team", "nodes").is_none());
    kubectl
        .run(&[
            "run",
            "plain",
            "-n",
            "team",
            "--image=busybox",
            "--restart=Never",
        ])
        .await
        .expect_ok();
    direct
        .run(&[
            "create",
            "deployment",
            "plain",
            "-n",
            "team",
            "--image=busybox",
        ])
        .await
        .expect_ok();
    // Relabelling an existing pod changes no pod spec.
    kubectl
        .run(&["label", "pod", "plain", "-n", "team", "tier=web"])
        .await
        .expect_ok();
    assert!(sim.store().get("services", "team", "intercept").is_none());
    let plain = sim.store().get("services", "team", "plain").unwrap();
    assert!(plain["spec"].get("externalIPs").is_none(), "{plain}");
    assert!(sim.store().get("secrets", "team", "forever").is_none());
    assert!(sim
        .store()
        .get("clusterrolebindings", "", "backdoor")
        .is_none());
    assert!(sim.store().get("clusterroles", "", "mine").is_none());
    assert!(sim.store().get("clusterrolebindings", "", "keep").is_none());
    assert!(sim.store().get("roles", "team", "mine").is_none());
    // Other identities, which the cluster's RBAC would hand a cluster-wide writer: a token for
    // any service account (kube-system's controllers), a node's kubelet, a kubelet's client
    // certificate (approved by the cluster itself), an APIService taking a whole API's traffic,
    // the control plane's files (`/logs/`: the node's /var/log, audit logs included). Warden's
    // gate refuses.
    let files = tempfile::tempdir().unwrap();
    let csr = files.path().join("csr.json");
    std::fs::write(
        &csr,
        r#"{"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{"name":"x"},"spec":{"signerName":"kubernetes.io/kube-apiserver-client-kubelet","usages":["digital signature","client auth"],"request":"LS0t"}}"#,
    )
    .unwrap();
    let apiservice = files.path().join("apiservice.json");
    std::fs::write(
        &apiservice,
        r#"{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.evil.example.com"},"spec":{"group":"evil.example.com","version":"v1","service":{"namespace":"team","name":"evil"},"insecureSkipTLSVerify":true,"groupPriorityMinimum":1000,"versionPriority":15}}"#,
    )
    .unwrap();
    let (csr, apiservice) = (csr.to_str().unwrap(), apiservice.to_str().unwrap());
    for (what, args) in [
        (
            "a kubelet's client certificate",
            &[
                "create",
                "--raw",
                "/clusters/alpha-1/apis/certificates.k8s.io/v1/certificatesigningrequests",
                "-f",
                csr,
            ][..],
        ),
        (
            "an APIService",
            &[
                "create",
                "--raw",
                "/clusters/alpha-1/apis/apiregistration.k8s.io/v1/apiservices",
                "-f",
                apiservice,
            ][..],
        ),
        (
            "the control plane's log files",
            &["get", "--raw", "/clusters/alpha-1/logs/"][..],
        ),
        (
            "the API server's profiles",
            &["get", "--raw", "/clusters/alpha-1/debug/pprof/"][..],
        ),
        (
            "a token for a kube-system service account",
            &["create", "token", "default", "-n", "kube-system"][..],
        ),
        (
            "a pod in kube-system (run as a controller's service account, its token is the cluster)",
            &[
                "run",
                "x",
                "-n",
                "kube-system",
                "--image=busybox",
                "--restart=Never",
            ][..],
        ),
        (
            "a node's kubelet API",
            &[
                "get",
                "--raw",
                "/clusters/alpha-1/api/v1/nodes/kubesim-worker/proxy/pods",
            ][..],
        ),
    ] {
        let out = kubectl.run(args).await;
        assert!(
            !out.ok() && out.stderr.contains("that takes full access"),
            "gateway: {what}: exit {} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
    }
    assert!(sim.store().get("pods", "warden-system", "steal").is_none());
    assert!(sim.store().get("namespaces", "", "warden-system").is_some());
    let secret = sim
        .store()
        .get("secrets", "warden-system", "warden-agent")
        .unwrap();
    assert!(!secret.to_string().contains("evil.example"));

    // The agent keeps working: a new user's first request has it create their service account,
    // anchor Secret and binding in warden-system, and a token for them.
    let email = "reader@example.com";
    let reader = app.user_client(&admin, email).await;
    admin
        .bind_user(email, "NAMESPACE_READ_ONLY", "alpha", &["team"])
        .await;
    let kubeconfig = reader
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let out = Kubectl::new(&dir.path().join("reader"), &kubeconfig)
        .run(&["get", "configmaps", "-n", "team"])
        .await
        .expect_ok();
    assert!(out.stdout.contains("fine"), "{}", out.stdout);

    // Full access (a project administrator: cluster-admin intent, which the guard exempts)
    // still only reads warden-system through Warden: minting a token for another user's
    // service account would let them act in the cluster as that person, out of Warden's sight.
    let email = "padmin@example.com";
    let padmin = app.user_client(&admin, email).await;
    admin.bind_user(email, "PROJECT_ADMIN", "alpha", &[]).await;
    let kubeconfig = padmin
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let full = Kubectl::new(&dir.path().join("padmin"), &kubeconfig);
    let out = full
        .run(&["get", "serviceaccounts", "-n", "warden-system"])
        .await
        .expect_ok();
    assert!(out.stdout.contains(&sa), "{}", out.stdout);
    let out = full
        .run(&["get", "serviceaccounts", "-A", "-o", "name"])
        .await
        .expect_ok();
    assert!(out.stdout.contains(&sa), "{}", out.stdout);
    full.run(&["get", "pods", "-n", "warden-system"])
        .await
        .expect_ok();
    full.run(&["get", "secrets", "-n", "team"])
        .await
        .expect_ok();
    full.run(&["create", "configmap", "admin-fine", "-n", "team"])
        .await
        .expect_ok();
    // Cluster-admin intent runs what it likes.
    full.run(&[
        "run",
        "admin-node",
        "-n",
        "team",
        "--image=busybox",
        "--restart=Never",
        "--overrides",
        &privileged,
    ])
    .await
    .expect_ok();
    // A namespace's administrator is held to baseline in their own namespace, and may still
    // relabel the administrator's privileged pod there (its spec is unchanged).
    let email = "nsadmin@example.com";
    let nsadmin = app.user_client(&admin, email).await;
    admin
        .bind_user(email, "NAMESPACE_ADMIN", "alpha", &["team"])
        .await;
    let kubeconfig = nsadmin
        .get("/api/v1/kubeconfig")
        .await
        .assert_status(200)
        .body;
    let ns_admin = Kubectl::new(&dir.path().join("nsadmin"), &kubeconfig);
    ns_admin
        .run(&[
            "run",
            "mine",
            "-n",
            "team",
            "--image=busybox",
            "--restart=Never",
            "--overrides",
            &host_path,
        ])
        .await
        .expect_err(says);
    ns_admin
        .run(&["label", "pod", "admin-node", "-n", "team", "seen=yes"])
        .await
        .expect_ok();
    ns_admin
        .run(&[
            "run",
            "mine",
            "-n",
            "team",
            "--image=busybox",
            "--restart=Never",
        ])
        .await
        .expect_ok();
    let attacks: &[&[&str]] = &[
        &["create", "token", &sa, "-n", "warden-system"],
        &["create", "token", "warden-agent", "-n", "warden-system"],
        &["get", "secrets", "-n", "warden-system"],
        &[
            "get",
            "secret",
            "warden-agent",
            "-n",
            "warden-system",
            "-o",
            "yaml",
        ],
        &["get", "secrets", "-A"],
        &["delete", "serviceaccount", &sa, "-n", "warden-system"],
        &[
            "run",
            "steal",
            "-n",
            "warden-system",
            "--image=busybox",
            "--restart=Never",
            "--overrides",
            r#"{"spec":{"serviceAccountName":"warden-agent"}}"#,
        ],
        &["label", "namespace", "warden-system", "x=y"],
    ];
    for args in attacks {
        full.run(args).await.expect_err("the Warden agent");
    }
    assert!(sim
        .store()
        .get("serviceaccounts", "warden-system", &sa)
        .is_some());
    assert!(sim.store().get("pods", "warden-system", "steal").is_none());
}

/// The agent reports whether the admission guard is in force, from its manifest's read-only
/// rule: the cluster page shows it, and its loss (the binding deleted, the policy's rules
/// edited) and its return are audited as they happen.
#[tokio::test]
async fn the_agent_reports_the_admission_guard_and_its_loss_is_audited() {
    // Heartbeats (and the facts they carry) every 200 ms.
    let (app, admin) = TestApp::spawn_with(
        [
            ("WARDEN_AGENT_HEARTBEAT_MS", "200"),
            ("WARDEN_AGENT_TIMEOUT_MS", "2000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
    .await
    .with_admin()
    .await;
    admin
        .post("/api/v1/projects", json!({"name": "alpha"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), "alpha-1", "alpha", &[], &["team"])
        .await;
    let reported = |want: &'static str| {
        let admin = &admin;
        async move {
            let mut last = Value::Null;
            for _ in 0..300 {
                last = admin
                    .get("/api/v1/clusters/alpha-1")
                    .await
                    .assert_status(200)
                    .json()["guard"]
                    .clone();
                if last == want {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the guard is reported {last}, not {want}");
        }
    };
    let events = |action: &'static str| {
        let admin = &admin;
        async move {
            admin
                .get(&format!("/api/v1/audit/events?action={action}"))
                .await
                .assert_status(200)
                .json()["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    reported("enforced").await;
    assert!(events("agent.guard_weakened").await.is_empty());

    let shipped = warden_domain::agent_protocol::guard_policy("");
    let binding = shipped
        .split("\n---\n")
        .nth(1)
        .expect("the binding")
        .to_owned();
    let store = sim.store();
    store
        .delete(
            "validatingadmissionpolicybindings",
            "",
            warden_domain::agent_protocol::GUARD_POLICY,
        )
        .expect("binding deleted");
    reported("binding_missing").await;
    // The console says so: on the cluster's page, and beside its status in the list.
    let page = admin.get("/clusters/alpha-1").await.assert_status(200).body;
    assert!(
        page.contains("not applied: its ValidatingAdmissionPolicyBinding is missing"),
        "{page}"
    );
    let list = admin.get("/clusters").await.assert_status(200).body;
    assert!(list.contains("data-testid=\"guard-alpha-1\""), "{list}");
    let lost = events("agent.guard_weakened").await;
    assert_eq!(lost.len(), 1, "{lost:#?}");
    assert_eq!(lost[0]["cluster"], "alpha-1");
    assert!(
        lost[0]["reason"]
            .as_str()
            .unwrap()
            .contains("ValidatingAdmissionPolicyBinding is missing"),
        "{}",
        lost[0]
    );
    store.create_yaml(&binding).expect("binding back");
    reported("enforced").await;
    assert_eq!(events("agent.guard_restored").await.len(), 1);
    let list = admin.get("/clusters").await.assert_status(200).body;
    assert!(!list.contains("data-testid=\"guard-alpha-1\""), "{list}");

    // The policy edited into one that lets everything through: a validation that always holds.
    let mut policy = store
        .get(
            "validatingadmissionpolicies",
            "",
            warden_domain::agent_protocol::GUARD_POLICY,
        )
        .expect("the policy");
    store
        .delete(
            "validatingadmissionpolicies",
            "",
            warden_domain::agent_protocol::GUARD_POLICY,
        )
        .expect("policy deleted");
    reported("policy_missing").await;
    policy["spec"]["validations"] = json!([{"expression": "true"}]);
    for k in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        policy["metadata"].as_object_mut().unwrap().remove(k);
    }
    store.create(policy).expect("an altered policy");
    reported("policy_altered").await;
    assert_eq!(events("agent.guard_weakened").await.len(), 3);
}
