//! `warden-agent`: in a cluster it uses its service account and its Secret; outside one,
//! `warden-agent --kubeconfig FILE --manifest FILE` runs it exactly as the manifest's
//! Deployment would, reading the bootstrap settings from the manifest's Secret and keeping its
//! credential in a state file next to the manifest.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_agent::{Agent, AgentError, Options, Store};
use warden_domain::agent_protocol::SECRET;

#[derive(Parser)]
#[command(
    name = "warden-agent",
    version,
    about = "Warden's cluster agent: an outbound-only tunnel from a Kubernetes cluster to Warden"
)]
struct Cli {
    /// Run inside the cluster: the service account's credentials, and the Secret named by
    /// WARDEN_AGENT_SECRET in POD_NAMESPACE (the default without --kubeconfig).
    #[arg(long, conflicts_with_all = ["kubeconfig", "manifest"])]
    in_cluster: bool,
    /// A kubeconfig for the cluster (outside a cluster; with --manifest).
    #[arg(long, requires = "manifest")]
    kubeconfig: Option<PathBuf>,
    /// The context of the kubeconfig to use (default: its current context).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// The agent manifest downloaded from Warden: its Secret holds the bootstrap settings.
    #[arg(long, requires = "kubeconfig")]
    manifest: Option<PathBuf>,
    /// Where to keep the agent credential (default: MANIFEST.state.json next to the manifest).
    #[arg(long, requires = "manifest")]
    state: Option<PathBuf>,
    /// Log format: pretty or json. WARDEN_AGENT_LOG sets the filter (default info).
    #[arg(long, default_value = "pretty", value_parser = ["pretty", "json"])]
    log_format: String,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();

    let clients =
        match warden_agent::kube_clients(cli.kubeconfig.as_deref(), cli.context.as_deref()).await {
            Ok(k) => k,
            Err(e) => {
                eprintln!("warden-agent: {e:#}");
                return ExitCode::from(2);
            }
        };
    let store = match &cli.manifest {
        Some(m) => Store::file(m, cli.state.clone()),
        None => {
            let namespace = std::env::var("POD_NAMESPACE")
                .ok()
                .or_else(|| {
                    std::fs::read_to_string(
                        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                    )
                    .ok()
                })
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|| warden_domain::agent_protocol::NAMESPACE.to_owned());
            let name = std::env::var("WARDEN_AGENT_SECRET").unwrap_or_else(|_| SECRET.to_owned());
            match Store::secret(clients.agent.clone(), namespace) {
                Store::Secret {
                    kube, namespace, ..
                } => Store::Secret {
                    kube,
                    namespace,
                    name,
                },
                other => other,
            }
        }
    };
    match Agent::new(clients, store, Options::default())
        .run(shutdown_signal())
        .await
    {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(AgentError::Refused { code, message }) => {
            eprintln!("warden-agent: Warden refused this agent ({code}): {message}");
            ExitCode::from(3)
        }
        Err(AgentError::Config(m)) => {
            eprintln!("warden-agent: {m}");
            ExitCode::from(2)
        }
    }
}
