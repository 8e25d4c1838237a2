//! `warden`: the server binary.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use warden_domain::audit::{verify_chain, Actor, ChainStatus, DbAuditSink};
use warden_domain::clock::{SharedClock, SystemClock};
use warden_domain::types::Email;
use warden_server::config::Config;
use warden_server::{startup, telemetry};

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Zero-trust access to Kubernetes clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default): console, REST API, WebSockets.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Administration tools.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the audit log's hash chain; exit non-zero naming the first row that was changed or deleted.
    Verify,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Invalidate a user's password and print a one-time link to set a new one.
    ResetPassword {
        /// The user's email address.
        email: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warden: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log.format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(config).await,
        Command::Admin {
            command: AdminCommand::ResetPassword { email },
        } => reset_password(config, &email).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    let addr = config.http.addr;
    let state = startup::prepare(config, clock).await?;
    startup::spawn_maintenance(&state);
    let public_url = state.config.http.public_url.clone();
    let router = warden_server::build_router(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (WARDEN_HTTP_ADDR): {e}"))?;
    tracing::info!(%addr, %public_url, "Warden is listening");
    println!("Warden console: {public_url}");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    Ok(ExitCode::SUCCESS)
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
    tracing::info!("shutting down");
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let db = startup::connect(&config).await?;
    startup::migrate(&db).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(config: Config) -> anyhow::Result<ExitCode> {
    let db = startup::connect(&config).await?;
    match verify_chain(&db).await? {
        ChainStatus::Intact { rows } => {
            println!("audit log intact: {rows} rows verified");
            Ok(ExitCode::SUCCESS)
        }
        ChainStatus::Broken { seq, id, problem } => {
            eprintln!("audit log TAMPERED: first bad row seq={seq} id={id}: {problem}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn reset_password(config: Config, email: &str) -> anyhow::Result<ExitCode> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{email:?}: {e}"))?;
    let db = startup::connect(&config).await?;
    startup::migrate(&db).await?;
    let clock: SharedClock = Arc::new(SystemClock);
    let audit = Arc::new(DbAuditSink::new(db.clone(), clock.clone()));
    let services = warden_domain::Services::new(db, clock, audit, config.http.public_url.clone());
    match warden_domain::authn::admin_reset_password(&services, Actor::System, &email).await {
        Ok(token) => {
            println!(
                "Password of {email} reset. Send this one-time link (valid 24 hours) to the user:"
            );
            println!("{}", services.set_password_url(&token));
            Ok(ExitCode::SUCCESS)
        }
        Err(warden_domain::DomainError::NotFound { .. }) => {
            eprintln!("warden: no user with email {email}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
