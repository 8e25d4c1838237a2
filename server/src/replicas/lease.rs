//! The background jobs' lease: a session-level PostgreSQL advisory lock held on a connection
//! of its own (not a pooled one, which could be recycled and drop it). The replica holding it
//! runs the jobs ([`warden_domain::services::JobLease`]); the others try again every heartbeat.
//! When the holder dies its session ends, PostgreSQL releases the lock, and the next try of
//! another replica takes it. A holder that loses its connection stops running the jobs at the
//! next check (jobs are idempotent, so a short overlap repeats work, never corrupts it). A
//! holder that vanishes without closing its connection (power, network) is found by TCP
//! keepalives within about 25 s ([`connect`]).

use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{Connection, Row};
use warden_domain::Services;

/// The advisory lock's key ("WARDENJB").
pub const JOBS_LOCK: i64 = 0x5741_5244_454e_4a42;

async fn try_lock(conn: &mut PgConnection) -> Result<bool, sea_orm::sqlx::Error> {
    let row = sea_orm::sqlx::query("SELECT pg_try_advisory_lock($1) AS held")
        .bind(JOBS_LOCK)
        .fetch_one(conn)
        .await?;
    row.try_get::<bool, _>("held")
}

/// Open the lock connection and have PostgreSQL probe it: after 10 s of silence, every 5 s,
/// ending the session after 3 unanswered probes. A holder whose machine lost its power or
/// network sends no FIN: with the system's defaults its session, and the lock, would stay for
/// two hours, and no replica would run the jobs meanwhile; with these, about 25 s. Set after
/// connecting (not as start-up options, which some poolers and managed proxies refuse); a
/// server that refuses them keeps its defaults, said in the log.
pub async fn connect(opts: &PgConnectOptions) -> Result<PgConnection, sea_orm::sqlx::Error> {
    let mut conn = PgConnection::connect_with(opts).await?;
    for set in [
        "SET tcp_keepalives_idle = 10",
        "SET tcp_keepalives_interval = 5",
        "SET tcp_keepalives_count = 3",
    ] {
        if let Err(e) = sea_orm::sqlx::query(set).execute(&mut conn).await {
            tracing::warn!(error = %e, "the background jobs' lock connection keeps the server's keepalive settings");
            break;
        }
    }
    Ok(conn)
}

/// How long one step's round trip may take before the connection counts as lost (a
/// half-open connection would otherwise keep `held` for minutes).
fn step_timeout(every: Duration) -> Duration {
    every.max(Duration::from_secs(5))
}

/// Try once now (so a lone replica runs its jobs from the start), then keep trying, and
/// holding, in the background.
pub async fn start(services: &std::sync::Arc<Services>, opts: PgConnectOptions, every: Duration) {
    let mut conn = match connect(&opts).await {
        Ok(mut c) => match try_lock(&mut c).await {
            Ok(held) => {
                services.jobs.set_held(held);
                log_change(held);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot try the background jobs' lock");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the background jobs' lock connection");
            None
        }
    };
    let weak = std::sync::Arc::downgrade(services);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(svc) = weak.upgrade() else { return };
            conn = step(&svc, conn.take(), &opts, step_timeout(every)).await;
        }
    });
}

/// One check: reconnect if needed, keep the lock alive (or notice it is gone), or try it.
async fn step(
    svc: &Services,
    conn: Option<PgConnection>,
    opts: &PgConnectOptions,
    within: Duration,
) -> Option<PgConnection> {
    let mut conn = match conn {
        Some(c) => c,
        None => match tokio::time::timeout(within, connect(opts)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot open the background jobs' lock connection");
                return None;
            }
            Err(_) => {
                tracing::warn!("cannot open the background jobs' lock connection: timed out");
                return None;
            }
        },
    };
    if svc.jobs.held() {
        // The lock lives as long as this session: check the session is alive.
        let alive = match tokio::time::timeout(within, conn.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {within:?}")),
        };
        if let Err(e) = alive {
            tracing::warn!(error = %e, "lost the background jobs' lock connection");
            svc.jobs.set_held(false);
            log_change(false);
            return None;
        }
        return Some(conn);
    }
    match tokio::time::timeout(within, try_lock(&mut conn))
        .await
        .unwrap_or(Err(sea_orm::sqlx::Error::PoolTimedOut))
    {
        Ok(held) => {
            if held {
                svc.jobs.set_held(true);
                log_change(true);
            }
            Some(conn)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot try the background jobs' lock");
            None
        }
    }
}

fn log_change(held: bool) {
    if held {
        tracing::info!("this replica runs the background jobs");
    } else {
        tracing::info!("another replica runs the background jobs");
    }
}
