//! Demo mode (`WARDEN_DEMO=true`, cargo feature `demo`): a simulated cluster (kubesim) and its
//! agent, in process, imported into the `default` project as cluster `demo`, so a newcomer sees
//! a connected cluster within seconds. Its state lives in `WARDEN_DATA_DIR/demo` (the
//! simulator's objects and CA, the manifest, the agent's credential), so the same cluster comes
//! back after a restart.
//!
//! The simulated pods are processes of this host, so they are confined (kubesim's
//! `Options::confine`): a cleared environment, their own directory, no inherited descriptors,
//! and with Landlock no access to Warden's data directory, its SQLite database or anything but
//! the system's programs (see the README's *Demo mode*).

use anyhow::Context;
use std::time::Duration;
use tokio::sync::oneshot;
use warden_agent::{Agent, Options, Store};

use crate::state::AppState;

pub const CLUSTER: &str = "demo";
pub const PROJECT: &str = "default";

/// The running demo cluster; dropping it stops the agent and the simulator.
pub struct Demo {
    sim: kubesim::KubeSim,
    stop: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<()>,
}

impl Demo {
    pub fn api_url(&self) -> &str {
        self.sim.url()
    }

    /// The signal that lets the agent drain and stop (once).
    pub fn take_stop(&mut self) -> Option<oneshot::Sender<()>> {
        self.stop.take()
    }

    /// Let the agent drain, then stop.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.agent).await;
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.agent.abort();
        self.sim.shutdown();
    }
}

/// What demo pods must never read: the data directory (CA keys, recordings, the demo
/// cluster's own admin kubeconfig and state) and a SQLite database file wherever it lives.
fn protected_paths(state: &AppState) -> Vec<std::path::PathBuf> {
    let mut paths = vec![state.config.data_dir.clone()];
    if let Some(rest) = state.config.database.url.expose().strip_prefix("sqlite://") {
        let file = rest.split('?').next().unwrap_or_default();
        if !file.is_empty() && file != ":memory:" {
            paths.push(std::path::PathBuf::from(file));
        }
    }
    paths
}

/// Namespace of [`SAMPLE_WORKLOAD`].
pub const SAMPLE_NAMESPACE: &str = "shop";

/// What a new demo cluster runs besides its system namespaces, so that pods, logs (`logs -f`
/// follows a line every few seconds), exec and the terminal's pod list have something to show:
/// namespace `shop` with a `web` Deployment (whose two pods kubesim's Deployment controller
/// makes: confined processes of this host, see the README's *Demo mode*), a Service, a
/// ConfigMap and a Secret, and a `toolbox` pod in `default`.
const SAMPLE_WORKLOAD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: storefront
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        command:
        - sh
        - -c
        - |
          echo 'web: listening on :8080'
          while :; do echo "$(date -u +%FT%TZ) GET /products 200"; sleep 5; done
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  CURRENCY: EUR
  FEATURE_CHECKOUT_V2: "true"
---
apiVersion: v1
kind: Secret
metadata:
  name: db-credentials
  namespace: shop
type: Opaque
stringData:
  username: shop
  password: demo-only-not-a-secret
---
apiVersion: v1
kind: Pod
metadata:
  name: toolbox
  namespace: default
  labels: {app: toolbox}
spec:
  containers:
  - name: toolbox
    image: busybox:1.36
    command: ["sh", "-c", "while :; do sleep 3600; done"]
"#;

/// Start the simulator and its agent. The agent dials `warden_url` (Warden's own listener).
pub async fn start(state: &AppState, warden_url: &str) -> anyhow::Result<Demo> {
    let dir = state.config.data_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let state_file = dir.join("kubesim-state.json");
    let fresh = !state_file.exists();
    let sim = kubesim::KubeSim::start_with(kubesim::Options {
        state_file: Some(state_file),
        work_dir: Some(dir.join("pods")),
        confine: Some(kubesim::Confinement {
            protect: protected_paths(state),
        }),
        controllers: true,
        ..Default::default()
    })
    .await
    .context("cannot start the simulated cluster")?;
    // The guard of warden-system, as the manifest installs it on a real cluster (the demo's
    // agent runs as the simulator's administrator, so the manifest is not applied).
    if sim
        .store()
        .get(
            "validatingadmissionpolicies",
            "",
            warden_domain::agent_protocol::GUARD_POLICY,
        )
        .is_none()
    {
        let labels = "  labels:\n    app.kubernetes.io/managed-by: warden\n";
        sim.store()
            .create_yaml(&warden_domain::agent_protocol::guard_policy(labels))
            .context("cannot install the guard policy on the demo cluster")?;
    }
    // A new demo cluster has something to look at: a small shop's workload (once: what a user
    // deletes stays deleted across restarts).
    if fresh {
        sim.store()
            .create_yaml(SAMPLE_WORKLOAD)
            .context("cannot create the demo cluster's sample workload")?;
    }
    let kubeconfig = dir.join("admin.kubeconfig");
    sim.write_admin_kubeconfig(&kubeconfig)
        .context("cannot write the demo kubeconfig")?;
    let manifest = warden_domain::clusters::unsafe_import_as_system(
        &state.services,
        CLUSTER,
        PROJECT,
        "A simulated cluster (kubesim) started by WARDEN_DEMO=true",
        warden_url,
    )
    .await
    .context("cannot import the demo cluster")?;
    let manifest_path = dir.join("manifest.yaml");
    std::fs::write(&manifest_path, manifest).context("cannot write the demo manifest")?;
    let clients = warden_agent::kube_clients(Some(&kubeconfig), None).await?;
    let agent = Agent::new(
        clients,
        Store::file(&manifest_path, None),
        Options::default(),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let stop = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) = agent.run(stop).await {
            tracing::error!(error = %e, "the demo cluster's agent stopped");
        }
    });
    tracing::info!(cluster = CLUSTER, api = %sim.url(), "demo cluster started");
    Ok(Demo {
        sim,
        stop: Some(stop_tx),
        agent: handle,
    })
}
