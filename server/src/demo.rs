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

/// Start the simulator and its agent. The agent dials `warden_url` (Warden's own listener).
pub async fn start(state: &AppState, warden_url: &str) -> anyhow::Result<Demo> {
    let dir = state.config.data_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let sim = kubesim::KubeSim::start_with(kubesim::Options {
        state_file: Some(dir.join("kubesim-state.json")),
        work_dir: Some(dir.join("pods")),
        confine: Some(kubesim::Confinement {
            protect: protected_paths(state),
        }),
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
