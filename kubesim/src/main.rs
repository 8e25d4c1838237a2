//! `kubesim --listen 127.0.0.1:PORT --kubeconfig-out FILE [--state FILE]`

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// A Kubernetes API simulator for tests and demos.
#[derive(Parser, Debug)]
#[command(name = "kubesim", version, about)]
struct Args {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the admin kubeconfig.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Persist the store (and CA) to this file, and load it at start.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Directory for pod scratch directories.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Confine pod processes (Landlock where the kernel has it): they may not read these
    /// paths, nor anything outside the system directories and their pod's directory.
    #[arg(long, value_name = "PATH", num_args = 0..)]
    confine: Option<Vec<PathBuf>>,
    /// Run the Deployment controller: a Deployment's pods are made from its template, replaced,
    /// scaled and deleted with it (off: only the objects clients create exist).
    #[arg(long)]
    controllers: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBESIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let opts = kubesim::Options {
        listen: args.listen,
        state_file: args.state.clone(),
        work_dir: args.work_dir.clone(),
        confine: args
            .confine
            .clone()
            .map(|protect| kubesim::Confinement { protect }),
        controllers: args.controllers,
        ..Default::default()
    };
    let sim = kubesim::KubeSim::start_with(opts)
        .await
        .context("starting kubesim")?;
    sim.write_admin_kubeconfig(&args.kubeconfig_out)
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    tracing::info!(url = sim.url(), kubeconfig = %args.kubeconfig_out.display(), "kubesim is serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    sim.shutdown();
    Ok(())
}
