//! kubesim: a Kubernetes API simulator that real `kubectl` and the `kube` crate talk to as
//! if it were a cluster. See the crate README for what is supported and where it differs.
//!
//! ```no_run
//! # async fn demo() -> kubesim::Result<()> {
//! let sim = kubesim::KubeSim::start().await?;
//! std::fs::write("/tmp/kubeconfig", sim.admin_kubeconfig())?;
//! let (cert, key) = sim.client_cert_for("alice", &["dev"])?;
//! let token = sim.token_for("bob", &["ops"]);
//! assert!(sim.store().get("namespaces", "", "kube-system").is_some());
//! # let _ = (cert, key, token);
//! # Ok(()) }
//! ```

mod admission;
mod api;
mod authn;
mod controllers;
mod core;
mod defaults;
pub mod error;
mod exec;
mod kubeconfig;
mod ops;
mod patch;
mod rbac;
mod resources;
mod seed;
mod selectors;
mod server;
pub mod store;
mod tls;
mod tokens;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use crate::core::{AuditRecord, Confinement, Options};
pub use crate::error::{Error, Result, Status};
pub use crate::exec::confine::landlock_abi;
pub use crate::store::Store;

/// A running simulator. Dropping it shuts the server down and kills every pod process.
pub struct KubeSim {
    core: Arc<core::Core>,
    addr: SocketAddr,
    url: String,
    server: tokio::task::JoinHandle<()>,
    persist: Option<tokio::task::JoinHandle<()>>,
}

impl KubeSim {
    /// Start on `127.0.0.1:0` with a fresh CA and store.
    pub async fn start() -> Result<KubeSim> {
        Self::start_with(Options::default()).await
    }

    /// Start with options (listen address, state file, bookmark interval, ...).
    pub async fn start_with(opts: Options) -> Result<KubeSim> {
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let core = core::Core::new(opts)?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let url = format!("https://{host}:{}", addr.port());
        let _ = core.url.set(url.clone());
        // Pods restored from a state file get their processes back.
        if let Some(pods) = resources::lookup("", "v1", "pods") {
            for p in core.db.list(&pods.qualified(), None).0 {
                core.runtime.start_pod(&core, &p);
            }
        }
        let tls = core.ca.server_config()?;
        let server = server::spawn(core.clone(), listener, tls);
        if core.opts.controllers {
            controllers::spawn(core.clone());
        }
        let persist = core.opts.state_file.is_some().then(|| {
            let c = core.clone();
            let mut changes = core.db.changes();
            let mut shutdown = core.shutdown.subscribe();
            tokio::spawn(async move {
                if let Err(e) = c.save_state() {
                    tracing::warn!(error = %e, "cannot write the state file");
                }
                loop {
                    tokio::select! {
                        r = changes.changed() => if r.is_err() { return },
                        _ = shutdown.changed() => return,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    changes.borrow_and_update();
                    if let Err(e) = c.save_state() {
                        tracing::warn!(error = %e, "cannot write the state file");
                    }
                }
            })
        });
        Ok(KubeSim {
            core,
            addr,
            url,
            server,
            persist,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signs the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        self.core.ca.cert_pem()
    }

    /// The static admin token (user `kubesim-admin`, group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.core.admin_token
    }

    /// UID of the `kube-system` namespace (the cluster fingerprint).
    pub fn kube_system_uid(&self) -> String {
        self.core.kube_system_uid()
    }

    /// An admin kubeconfig (YAML): client certificate `CN=kubernetes-admin, O=system:masters`.
    pub fn admin_kubeconfig(&self) -> String {
        match self.kubeconfig_for_cert("kubernetes-admin", &["system:masters"]) {
            Ok(k) => k,
            Err(_) => self.kubeconfig_for_token(&self.core.admin_token),
        }
    }

    /// Write the admin kubeconfig to a file.
    pub fn write_admin_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.admin_kubeconfig())?;
        Ok(())
    }

    /// A client certificate and key (PEM) for `user` with `groups` as organizations.
    pub fn client_cert_for(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        self.core.ca.client_cert(user, groups)
    }

    /// A kubeconfig authenticating with a fresh client certificate for `user`/`groups`.
    pub fn kubeconfig_for_cert(&self, user: &str, groups: &[&str]) -> Result<String> {
        let (cert_pem, key_pem) = self.client_cert_for(user, groups)?;
        Ok(kubeconfig::render(
            &self.url,
            self.ca_pem(),
            user,
            kubeconfig::Credential::Cert {
                cert_pem: &cert_pem,
                key_pem: &key_pem,
            },
            None,
        ))
    }

    /// A kubeconfig authenticating with a bearer token.
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        kubeconfig::render(
            &self.url,
            self.ca_pem(),
            "token-user",
            kubeconfig::Credential::Token(token),
            None,
        )
    }

    /// A static bearer token (like `--token-auth-file`) for `user` with `groups`
    /// (`system:authenticated` is added).
    pub fn token_for(&self, user: &str, groups: &[&str]) -> String {
        let token = defaults::random_hex(40);
        self.core
            .static_tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), rbac::UserInfo::new(user, groups));
        token
    }

    /// A service-account token (as TokenRequest issues) valid for `ttl`, for the API
    /// audience. Unlike the API, any TTL is accepted (to test expiry).
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<String> {
        let (t, _) =
            authn::issue_sa_token(&self.core, namespace, name, &[], ttl.as_secs() as i64, None)?;
        Ok(t)
    }

    /// The audit log (the newest requests, oldest first), as an API server's log backend
    /// would have written it.
    pub fn audit_log(&self) -> Vec<core::AuditRecord> {
        self.core.audit_log()
    }

    /// Direct access to the objects.
    pub fn store(&self) -> Store {
        Store::new(self.core.clone())
    }

    /// Stop the server and every pod process now (also done on drop).
    pub fn shutdown(&self) {
        self.core.shutdown.send_replace(true);
        self.server.abort();
        if let Some(p) = &self.persist {
            p.abort();
        }
        if self.core.opts.state_file.is_some() {
            if let Err(e) = self.core.save_state() {
                tracing::warn!(error = %e, "cannot write the state file");
            }
        }
        self.core.runtime.stop_all();
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}
