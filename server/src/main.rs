//! `warden`: the server binary.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use warden_domain::audit::{verify_chain_witnessed, ChainStatus, DbAuditSink};
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
    /// Master key tools.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Exit 0 when this host's Warden answers `/readyz` (database reachable): the container
    /// image's HEALTHCHECK (the image has no shell and no curl).
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Administration tools.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Development tools.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Fill the configured database with a realistic organization (users, groups and members,
    /// projects, clusters owned by and shared with projects, bindings at organization, project
    /// and namespace scope), to measure the console and the API at scale. Refuses a database
    /// that has users besides the bootstrap administrator, unless --force.
    Seed {
        #[arg(long, default_value_t = 10_000)]
        users: u64,
        #[arg(long, default_value_t = 1_000)]
        groups: u64,
        #[arg(long, default_value_t = 500)]
        projects: u64,
        #[arg(long, default_value_t = 1_000)]
        clusters: u64,
        #[arg(long, default_value_t = 50_000)]
        bindings: u64,
        /// The seed of the generated content.
        #[arg(long, default_value_t = 0x5345_4544)]
        seed: u64,
        /// Add to a database that already has users.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Change the master key: seal the database's data key with the key in
    /// WARDEN_NEW_MASTER_KEY (or WARDEN_NEW_MASTER_KEY_FILE) in place of the current one
    /// (WARDEN_MASTER_KEY, or the data directory's generated master.key). Running servers go
    /// on; restart each with the new key. Audited (keys.master_rotated).
    Rotate,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the audit log's hash chain; exit non-zero naming the first row that was changed or deleted.
    Verify,
    /// Fill the audit log with realistic generated events (for measuring it at scale), chained
    /// like real ones: `warden audit verify` passes afterwards. Refuses an organization in use
    /// (users besides the bootstrap administrator, or clusters) unless --force; the log records
    /// which rows were generated.
    Generate {
        /// How many events.
        #[arg(long)]
        events: u64,
        /// Spread over this many days, ending now.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// The seed of the generated content (same seed, same events).
        #[arg(long, default_value_t = 0x5741_5244_454e)]
        seed: u64,
        /// Generate into a database whose organization is in use.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Invalidate a user's password, end their sessions, API keys and kubeconfigs, and print a
    /// one-time link to set a new one.
    ResetPassword {
        /// The user's email address.
        email: String,
        /// Keep the user's API keys (a forgotten password, not a taken account).
        #[arg(long)]
        keep_api_keys: bool,
        /// Keep the user's kubeconfig credentials (a forgotten password, not a taken account).
        #[arg(long)]
        keep_kubeconfigs: bool,
        /// Remove the user's second factor too (a lost authenticator, and no other
        /// administrator to remove it); they enrol again after setting their password.
        #[arg(long)]
        reset_mfa: bool,
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
        Command::Audit {
            command:
                AuditCommand::Generate {
                    events,
                    days,
                    seed,
                    force,
                },
        } => audit_generate(config, events, days, seed, force).await,
        Command::Admin {
            command:
                AdminCommand::ResetPassword {
                    email,
                    keep_api_keys,
                    keep_kubeconfigs,
                    reset_mfa,
                },
        } => {
            let opts = warden_domain::identity::users::ResetOptions {
                revoke_api_keys: !keep_api_keys,
                revoke_kubeconfigs: !keep_kubeconfigs,
                reset_mfa,
            };
            reset_password(config, &email, opts).await
        }
        Command::Healthcheck { timeout } => healthcheck(&config, timeout).await,
        Command::Keys {
            command: KeysCommand::Rotate,
        } => rotate_master_key(config).await,
        Command::Dev {
            command:
                DevCommand::Seed {
                    users,
                    groups,
                    projects,
                    clusters,
                    bindings,
                    seed,
                    force,
                },
        } => {
            let opts = warden_domain::seed::SeedOptions {
                users,
                groups,
                projects,
                clusters,
                bindings,
                seed,
                force,
            };
            dev_seed(config, opts).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long a shutdown waits for open requests to finish.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    let addr = config.http.addr;
    let state = startup::prepare(config, clock).await?;
    startup::spawn_maintenance(&state);
    let public_url = state.config.http.public_url.clone();
    let gateway = state.gateway.clone();
    let gateway_addr = state.config.gateway.addr;
    // The Kubernetes API gateway: a console without it still serves, so a port clash is loud
    // but not fatal.
    let _gateway = match tokio::net::TcpListener::bind(gateway_addr).await {
        Ok(listener) => {
            let h = warden_server::gateway::start(gateway.clone(), listener)?;
            tracing::info!(addr = %gateway_addr, url = %gateway.public_url(), "the Kubernetes API gateway is listening");
            println!("Kubernetes API gateway: {}", gateway.public_url());
            Some(h)
        }
        Err(e) => {
            tracing::error!(addr = %gateway_addr, error = %e, "cannot listen for the Kubernetes API gateway (WARDEN_GATEWAY_ADDR); kubectl access is unavailable");
            eprintln!("warden: cannot listen on {gateway_addr} (WARDEN_GATEWAY_ADDR): {e}; kubectl access is unavailable");
            None
        }
    };
    let clusters = state.clusters.clone();
    let replicas = state.replicas.clone();
    let live = state.gateway.live.clone();
    let demo_state = state.clone();
    let header_timeout = state.config.http.header_timeout;
    let router = warden_server::build_router(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (WARDEN_HTTP_ADDR): {e}"))?;
    tracing::info!(%addr, %public_url, "Warden is listening");
    println!("Warden console: {public_url}");
    let mut demo = start_demo(&demo_state, listener.local_addr()?).await;
    let demo_stop = demo.as_mut().and_then(|d| d.take_stop());
    // Agents' tunnels arrive on this listener: without TCP_NODELAY, Nagle's algorithm meets
    // delayed ACKs and a small tunnelled answer waits up to 40 ms.
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let server = warden_server::serve_console(listener, router, header_timeout, async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
        // Other replicas stop forwarding here at once (not after the heartbeat timeout).
        if let Some(r) = &replicas {
            if let Err(e) = r.leave().await {
                tracing::warn!(error = %e, "cannot leave the replicas' registry");
            }
        }
        // The demo agent drains first; then every agent is told to reconnect (to another
        // replica, through the load balancer).
        if let Some(stop) = demo_stop {
            let _ = stop.send(());
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let n = live.close_all("server restarting");
        tracing::info!(streams = n, "closed the open streams and terminals");
        clusters.close_all("Warden is shutting down");
    });
    // Short requests finish; past the drain bound, whatever is left is dropped.
    tokio::select! {
        () = server => {},
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_DRAIN).await;
        } => {
            tracing::warn!(drain_s = SHUTDOWN_DRAIN.as_secs(), "requests still open after the drain; stopping anyway");
        }
    }
    drop(demo);
    // Audit events of the gateway's last requests are stored before exiting.
    gateway
        .flush_audit_within(std::time::Duration::from_secs(5))
        .await;
    Ok(ExitCode::SUCCESS)
}

/// `WARDEN_DEMO=true`: a simulated cluster and its agent, connected to this process.
#[cfg(feature = "demo")]
async fn start_demo(
    state: &warden_server::state::AppState,
    local: std::net::SocketAddr,
) -> Option<warden_server::demo::Demo> {
    if !state.config.demo {
        return None;
    }
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    let url = format!("http://{host}:{}", local.port());
    match warden_server::demo::start(state, &url).await {
        Ok(d) => {
            println!(
                "Demo cluster: \"{}\" in project \"{}\" (simulated, WARDEN_DEMO=true)",
                warden_server::demo::CLUSTER,
                warden_server::demo::PROJECT
            );
            Some(d)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the demo cluster");
            eprintln!("warden: cannot start the demo cluster: {e:#}");
            None
        }
    }
}

#[cfg(not(feature = "demo"))]
async fn start_demo(
    state: &warden_server::state::AppState,
    _local: std::net::SocketAddr,
) -> Option<NoDemo> {
    if state.config.demo {
        tracing::warn!("WARDEN_DEMO=true, but this build has no demo mode (cargo feature `demo`)");
    }
    None
}

#[cfg(not(feature = "demo"))]
struct NoDemo;

#[cfg(not(feature = "demo"))]
impl NoDemo {
    fn take_stop(&mut self) -> Option<tokio::sync::oneshot::Sender<()>> {
        None
    }
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

async fn healthcheck(config: &Config, timeout_secs: u64) -> anyhow::Result<ExitCode> {
    let timeout = std::time::Duration::from_secs(timeout_secs);
    match warden_server::probe::check(config.http.addr, "/readyz", timeout).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("warden: not ready: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let db = startup::connect(&config).await?;
    startup::migrate(&db).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(mut config: Config) -> anyhow::Result<ExitCode> {
    let db = startup::connect(&config).await?;
    // The seals are signed with a key derived from the database's data key.
    if let Some(master) = &config.master_key {
        match startup::data_key(&db, master).await {
            Ok(key) => config.master_key = Some(key),
            Err(e) => {
                eprintln!(
                    "audit log NOT verified: {e:#}: it cannot vouch for the checkpoints and seals"
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
    let key = startup::checkpoint_key(&config, false)?;
    let checkpoint = warden_domain::audit::retention::checkpoints(&db)
        .await
        .ok()
        .and_then(|c| c.last().map(|c| c.seq));
    // The newest seal this host wrote, kept in the data directory (out of a database writer's
    // reach): the log must still pass through it.
    let witness = warden_domain::audit::seals::read_witness(
        &config
            .data_dir
            .join(warden_domain::audit::seals::WITNESS_FILE),
    );
    match verify_chain_witnessed(&db, key.as_ref(), witness.as_ref()).await? {
        ChainStatus::Intact { rows } => {
            // Without the key, the seals' signatures were not checked: a chain computed again
            // with its seals rewritten would pass. Said, not hidden.
            if key.is_none()
                && !warden_domain::audit::seals::seals(&db)
                    .await
                    .map(|s| s.is_empty())
                    .unwrap_or(true)
            {
                eprintln!(
                    "warden: the audit seals' signatures were NOT checked: no key here (set the same WARDEN_MASTER_KEY as the servers, or WARDEN_DATA_DIR with audit-checkpoint.key); the chain alone proves nothing against someone who can write the database"
                );
            }
            match checkpoint {
            Some(seq) => println!(
                "audit log intact: {rows} rows verified (retention deleted the rows up to seq {seq}; the chain continues from its signed checkpoint)"
            ),
                None => println!("audit log intact: {rows} rows verified"),
            }
            Ok(ExitCode::SUCCESS)
        }
        ChainStatus::Broken { seq, id, problem } => {
            eprintln!("audit log TAMPERED: first bad row seq={seq} id={id}: {problem}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn rotate_master_key(config: Config) -> anyhow::Result<ExitCode> {
    let Some(new) = config.new_master_key.clone() else {
        eprintln!(
            "warden: set WARDEN_NEW_MASTER_KEY (or WARDEN_NEW_MASTER_KEY_FILE) to the new master key (32 random bytes in base64: `head -c 32 /dev/urandom | base64`)"
        );
        return Ok(ExitCode::from(2));
    };
    let db = startup::connect(&config).await?;
    startup::require_current_schema(&db).await?;
    let now = warden_domain::clock::Clock::now(&SystemClock).millis();
    let done = startup::rotate_master_key(&db, &config, &new, now).await?;
    println!("The data key is now sealed with the new master key.");
    println!(
        "Running servers go on as they are. Put the new key where WARDEN_MASTER_KEY (or WARDEN_MASTER_KEY_FILE) comes from, then restart each server: one started with the previous key refuses to start."
    );
    let generated = config.data_dir.join(startup::MASTER_KEY_FILE);
    if done.data_key_was_master {
        println!(
            "This database was set up before data keys: its data key is the previous master key itself, which still opens its secrets with a copy of the database. Keep that key away from the servers (with the backups taken before), and if it leaked, replace the secrets it sealed (see the README's key rotation)."
        );
    } else {
        println!("The previous key no longer opens the data key; keep it only with the backups taken before.");
    }
    if config.master_key.is_none() {
        println!(
            "From now on start Warden with WARDEN_MASTER_KEY (or WARDEN_MASTER_KEY_FILE), and move {} off this host.",
            generated.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_generate(
    config: Config,
    events: u64,
    days: u32,
    seed: u64,
    force: bool,
) -> anyhow::Result<ExitCode> {
    use warden_domain::audit::generate::{
        generate, record_run, refuse_organization_in_use, GenerateOptions,
    };
    let db = startup::connect(&config).await?;
    startup::migrate(&db).await?;
    if let Err(e) = refuse_organization_in_use(&db, force).await {
        eprintln!("warden: {e}");
        return Ok(ExitCode::from(1));
    }
    let opts = GenerateOptions {
        events,
        days,
        seed,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let now = warden_domain::clock::Timestamp::from_offset(time::OffsetDateTime::now_utc());
    let done = generate(&db, &opts, now, |n| {
        if n % 200_000 < opts.per_transaction as u64 || n == events {
            let secs = started.elapsed().as_secs_f64();
            eprintln!("{n}/{events} events ({:.0}/s)", n as f64 / secs.max(1e-9));
        }
    })
    .await?;
    let finished = warden_domain::clock::Timestamp::from_offset(time::OffsetDateTime::now_utc());
    record_run(&db, &done, finished, "warden audit generate").await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {} audit events (seq {} to {}) over {days} days in {secs:.1} s ({:.0} events/s)",
        done.events,
        done.first_seq,
        done.last_seq,
        done.events as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

async fn dev_seed(
    config: Config,
    opts: warden_domain::seed::SeedOptions,
) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    let db = startup::connect(&config).await?;
    startup::migrate(&db).await?;
    // The organization must exist: the same first-start bootstrap as `warden serve` (which
    // prints the administrator's credentials when it creates them).
    let audit: warden_domain::audit::SharedAuditSink =
        Arc::new(DbAuditSink::new(db.clone(), clock.clone()));
    let outcome = warden_domain::bootstrap::run(
        &db,
        &audit,
        warden_domain::bootstrap::BootstrapInput {
            admin_email: config.bootstrap.admin_email.clone(),
            admin_password: config.bootstrap.admin_password.clone(),
        },
        clock.now(),
    )
    .await?;
    if let warden_domain::bootstrap::BootstrapOutcome::Initialised {
        admin_email,
        generated_password,
    } = outcome
    {
        println!("Warden is initialised: administrator {admin_email}");
        if let Some(p) = generated_password {
            println!(
                "  password: {}   (generated; shown only this once)",
                p.expose()
            );
        }
    }
    let started = std::time::Instant::now();
    let done = warden_domain::seed::seed(&db, &opts, clock.now(), |what, n| {
        eprintln!("{n} {what} ({:.1} s)", started.elapsed().as_secs_f64())
    })
    .await;
    match done {
        Ok(s) => {
            println!(
                "seeded {} users, {} groups ({} memberships), {} projects, {} clusters ({} shares), {} bindings in {:.1} s",
                s.users,
                s.groups,
                s.memberships,
                s.projects,
                s.clusters,
                s.shares,
                s.bindings,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(warden_domain::DomainError::Conflict { message, .. }) => {
            eprintln!("warden: {message}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

async fn reset_password(
    config: Config,
    email: &str,
    opts: warden_domain::identity::users::ResetOptions,
) -> anyhow::Result<ExitCode> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{email:?}: {e}"))?;
    let db = startup::connect(&config).await?;
    startup::require_current_schema(&db).await?;
    let clock: SharedClock = Arc::new(SystemClock);
    let audit = Arc::new(DbAuditSink::new(db.clone(), clock.clone()));
    let services =
        warden_domain::Services::new(db.clone(), clock, audit, config.http.public_url.clone());
    match warden_domain::identity::authn::admin_reset_password(&services, None, &email, opts).await
    {
        Ok(done) => {
            // The running servers end the user's open terminals and streams now.
            if let Err(e) = warden_server::replicas::announce_from_outside(&db).await {
                eprintln!(
                    "warden: the running servers could not be notified ({e}); they notice when they next re-read the authorization epoch (WARDEN_REPLICA_EPOCH_RECHECK_MS)"
                );
            }
            println!("Password of {email} reset; their sessions ended.");
            println!(
                "{}",
                if opts.revoke_api_keys {
                    format!("API keys revoked: {}.", done.api_keys_revoked)
                } else {
                    "API keys kept (--keep-api-keys).".to_owned()
                }
            );
            println!(
                "{}",
                if opts.revoke_kubeconfigs {
                    format!(
                        "Kubeconfig credentials revoked: {}.",
                        done.kubeconfigs_revoked
                    )
                } else {
                    "Kubeconfig credentials kept (--keep-kubeconfigs).".to_owned()
                }
            );
            if opts.reset_mfa {
                println!(
                    "{}",
                    if done.mfa_removed {
                        "Second factor removed: they enrol again after setting their password."
                    } else {
                        "They had no second factor to remove."
                    }
                );
            }
            println!("Send this one-time link (valid 24 hours) to the user:");
            println!("{}", services.set_password_url(&done.token));
            Ok(ExitCode::SUCCESS)
        }
        Err(warden_domain::DomainError::NotFound { .. }) => {
            eprintln!("warden: no user with email {email}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
