//! Test helpers for the gateway, on [`TestApp`]: clusters reached directly (a simulator), the
//! real `kubectl` with a private home and cache, and the gateway's audit flushed on demand.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use warden_domain::access::Principal;
use warden_domain::audit::{RequestMeta, SessionType};
use warden_domain::dto::CreateClusterRequest;

use super::transport::DirectEndpoint;
use super::Gateway;
use crate::testing::{TestApp, ADMIN_EMAIL};

impl TestApp {
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.state.gateway
    }

    /// The first administrator as a principal, for domain calls the REST API may not offer.
    pub async fn admin_principal(&self) -> Principal {
        let email = warden_domain::types::Email::parse(ADMIN_EMAIL).expect("admin email");
        let u = warden_domain::identity::accounts::find_by_email(&self.services().db, &email)
            .await
            .expect("db")
            .expect("the admin exists");
        Principal {
            user_id: warden_domain::identity::accounts::user_id(&u).expect("id"),
            email: u.email,
            name: u.name,
            session_type: SessionType::System,
            must_change_password: false,
            must_enrol_mfa: false,
            second_factor_at: None,
            request: RequestMeta::default(),
            api_key: None,
        }
    }

    /// Import a cluster (as the first admin) into `project`, shared with `shared_with`, and
    /// reach it directly at `endpoint`.
    pub async fn import_direct_cluster(
        &self,
        name: &str,
        project: &str,
        shared_with: &[&str],
        endpoint: DirectEndpoint,
    ) {
        let admin = self.admin_principal().await;
        warden_domain::clusters::create(
            self.services(),
            &admin,
            CreateClusterRequest {
                name: name.into(),
                project: project.into(),
                description: None,
                labels: None,
                shared_with: Some(shared_with.iter().map(|s| s.to_string()).collect()),
                proxy: None,
            },
        )
        .await
        .expect("import the cluster");
        self.gateway()
            .transports()
            .direct
            .register(name, endpoint)
            .expect("register the endpoint");
    }

    /// Import `name` into `project` (shared with `shared_with`) the way an operator does: the
    /// manifest fetched by its one-time URL and applied to `sim` with the real kubectl, then the
    /// agent run on its own service account (only the manifest's RBAC), as the Deployment
    /// runs it. Returns once the cluster is connected.
    #[cfg(feature = "demo")]
    pub async fn connect_agent(
        &self,
        admin: &crate::testing::Client,
        sim: &kubesim::KubeSim,
        dir: &Path,
        name: &str,
        project: &str,
        shared_with: &[&str],
    ) -> RunningAgent {
        let agent = start_agent(admin, sim, dir, name, project, shared_with).await;
        let start = std::time::Instant::now();
        while !self.state.clusters.is_connected(name) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the agent of {name} did not connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent
    }
}

/// Import `name` into `project` (shared with `shared_with`) through the REST API, as the
/// wizard does; the agent's manifest, fetched by its one-time URL, is written in `dir` (its
/// path returned).
pub async fn import_cluster(
    admin: &crate::testing::Client,
    dir: &Path,
    name: &str,
    project: &str,
    shared_with: &[&str],
) -> PathBuf {
    let created = admin
        .post(
            "/api/v1/clusters",
            serde_json::json!({"name": name, "project": project, "shared_with": shared_with}),
        )
        .await
        .assert_status(201)
        .json();
    let manifest = reqwest::get(created["manifest_url"].as_str().expect("manifest_url"))
        .await
        .expect("the manifest URL")
        .text()
        .await
        .expect("the manifest");
    let manifest_path = dir.join(format!("{name}.manifest.yaml"));
    std::fs::write(&manifest_path, &manifest).expect("write the manifest");
    manifest_path
}

/// An HTTP client for the gateway with the identity of a kubeconfig Warden issued (its client
/// certificate and key; the gateway's CA as the only root).
pub fn gateway_client_builder(kubeconfig: &str) -> reqwest::ClientBuilder {
    use base64::Engine;
    let doc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).expect("a kubeconfig");
    let b64 = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 data"))
            .expect("base64")
    };
    let user = &doc["users"][0]["user"];
    let mut identity = b64(&user["client-certificate-data"]);
    identity.extend(b64(&user["client-key-data"]));
    let ca = b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]);
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("the gateway's CA"))
        .identity(reqwest::Identity::from_pem(&identity).expect("the user's identity"))
}

/// [`TestApp::connect_agent`] through whichever Warden `admin` talks to (another process, a
/// load balancer): the agent dials that Warden's public URL. Returns at once (the agent
/// connects in the background).
#[cfg(feature = "demo")]
pub async fn start_agent(
    admin: &crate::testing::Client,
    sim: &kubesim::KubeSim,
    dir: &Path,
    name: &str,
    project: &str,
    shared_with: &[&str],
) -> RunningAgent {
    {
        let manifest_path = import_cluster(admin, dir, name, project, shared_with).await;
        Kubectl::new(&dir.join(format!("{name}-ops")), &sim.admin_kubeconfig())
            .run(&["apply", "-f", manifest_path.to_str().expect("a UTF-8 path")])
            .await
            .expect_ok();
        let token = sim
            .service_account_token("warden-system", "warden-agent", Duration::from_secs(3600))
            .expect("the agent's token");
        let agent_kubeconfig = dir.join(format!("{name}.agent.kubeconfig"));
        std::fs::write(&agent_kubeconfig, sim.kubeconfig_for_token(&token))
            .expect("write the agent's kubeconfig");
        let clients = warden_agent::kube_clients(Some(&agent_kubeconfig), None)
            .await
            .expect("the agent's clients");
        let agent = warden_agent::Agent::new(
            clients,
            warden_agent::Store::file(&manifest_path, None),
            warden_agent::Options::default(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        RunningAgent {
            stop: Some(stop),
            task,
        }
    }
}

impl TestApp {
    /// A fresh simulated cluster with `namespaces`, imported as `name` into `project` (shared
    /// with `shared_with`) and connected through a real agent (see [`TestApp::connect_agent`]).
    #[cfg(feature = "demo")]
    pub async fn cluster_with_agent(
        &self,
        admin: &crate::testing::Client,
        dir: &Path,
        name: &str,
        project: &str,
        shared_with: &[&str],
        namespaces: &[&str],
    ) -> (kubesim::KubeSim, RunningAgent) {
        let sim = kubesim::KubeSim::start().await.expect("kubesim");
        for ns in namespaces {
            sim.store()
                .create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .expect("namespace");
        }
        let agent = self
            .connect_agent(admin, &sim, dir, name, project, shared_with)
            .await;
        (sim, agent)
    }
}

impl crate::testing::Client {
    /// As an administrator: bind `role` to the user `email` in `project` (on `namespaces`
    /// when given); returns the binding's id.
    pub async fn bind_user(
        &self,
        email: &str,
        role: &str,
        project: &str,
        namespaces: &[&str],
    ) -> String {
        let mut body = serde_json::json!({"subject": {"kind": "user", "name": email}, "role": role, "project": project});
        if !namespaces.is_empty() {
            body["namespaces"] = serde_json::json!(namespaces);
        }
        self.post("/api/v1/bindings", body)
            .await
            .assert_status(201)
            .json()["id"]
            .as_str()
            .expect("binding id")
            .to_owned()
    }
}

/// An agent running in this process (see [`TestApp::connect_agent`]); dropping it stops it.
pub struct RunningAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), warden_agent::AgentError>>,
}

impl RunningAgent {
    /// Stop the agent (it drains) and wait for it, at most 10 s.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .is_err()
        {
            // Not stopped in time: stopped anyway, so a test never talks to a leftover agent.
            self.task.abort();
        }
    }
}

/// The real `/usr/bin/kubectl` with its own kubeconfig, `HOME` and discovery cache.
pub struct Kubectl {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

/// What one `kubectl` run did.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    #[track_caller]
    pub fn expect_ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "kubectl failed: {}{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn expect_err(self, needle: &str) -> Self {
        assert_ne!(self.code, 0, "kubectl should have failed: {}", self.stdout);
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in stderr: {}",
            self.stderr
        );
        self
    }
}

impl Kubectl {
    /// A kubectl using `kubeconfig` (YAML), with state under `dir`.
    pub fn new(dir: &Path, kubeconfig: &str) -> Self {
        std::fs::create_dir_all(dir).expect("kubectl dir");
        let path = dir.join("kubeconfig");
        std::fs::write(&path, kubeconfig).expect("write kubeconfig");
        Self {
            dir: dir.to_owned(),
            kubeconfig: path,
        }
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Replace the kubeconfig (a new download); the discovery cache is kept.
    pub fn set_kubeconfig(&self, kubeconfig: &str) {
        std::fs::write(&self.kubeconfig, kubeconfig).expect("write kubeconfig");
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("/usr/bin/kubectl");
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Run to completion (at most 60 s).
    pub async fn run(&self, args: &[&str]) -> KubectlOutput {
        self.run_with_stdin(args, None).await
    }

    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> KubectlOutput {
        use tokio::io::AsyncWriteExt;
        let mut c = self.command(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("spawn kubectl");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .expect("kubectl stdin");
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl timed out")
            .expect("kubectl ran");
        KubectlOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
