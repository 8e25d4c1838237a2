//! `warden-agent`: runs in (or next to) a Kubernetes cluster, dials **out** to Warden over a
//! WebSocket, and proxies the requests Warden sends through that tunnel to the cluster's API
//! server with its own credentials. The cluster needs no inbound port, and its credentials never
//! leave it.
//!
//! The library holds the agent ([`Agent`]) and the tunnel transport ([`tunnel`]) that Warden's
//! server shares; the protocol's names and messages live in
//! [`warden_domain::agent_protocol`].

pub mod agent;
pub mod dial;
pub mod facts;
pub mod forward;
pub mod identity;
pub mod settings;
pub mod store;
pub mod tunnel;

pub use agent::{Agent, AgentError, Backoff, Options};
pub use settings::Settings;
pub use store::Store;

/// The agent's two clients of its API server: `agent` carries the agent's own credentials (its
/// service account in a cluster) for Warden's management calls and its own work; `user` carries
/// none, and sends requests that Warden already authenticated as a user's service account
/// (with a TokenRequest token in `Authorization`).
#[derive(Clone)]
pub struct KubeClients {
    pub agent: kube::Client,
    pub user: kube::Client,
}

/// Both clients, from a kubeconfig file (`context` optional) or, with `None`, from the
/// in-cluster service account.
pub async fn kube_clients(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<KubeClients> {
    use anyhow::Context;
    let config = kube_config(kubeconfig, context).await?;
    let mut bare = config.clone();
    bare.auth_info = Default::default();
    Ok(KubeClients {
        agent: kube::Client::try_from(config).context("cannot build the Kubernetes client")?,
        user: kube::Client::try_from(bare).context("cannot build the Kubernetes client")?,
    })
}

/// A kube client for the agent's own use (see [`kube_clients`]).
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    Ok(kube_clients(kubeconfig, context).await?.agent)
}

async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Config> {
    use anyhow::Context;
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            let opts = kube::config::KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
            kube::Config::from_custom_kubeconfig(kc, &opts).await.with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::incluster().context("not running in a cluster (no service account); use --kubeconfig FILE --manifest FILE outside one")?,
    };
    // Watches and log follows stay open as long as the caller wants.
    config.read_timeout = None;
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    Ok(config)
}
