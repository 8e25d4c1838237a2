//! Helpers several test modules use: the `warden` binary run as a command, SQL scalars, a free
//! port. (Test set-ups specific to one module stay in it.)

use sea_orm::{ConnectionTrait, Statement};

/// Run `warden <args>` against `database_url` (its own data directory, errors-only logs).
pub async fn warden(database_url: &str, args: &[&str]) -> std::process::Output {
    // Awaited, never waited for: the server under test shares this runtime, and a command
    // that needs a lock one of its transactions holds (the audit chain's, on PostgreSQL)
    // would otherwise wait for a server that cannot run.
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_DATABASE_URL", database_url)
        .env("WARDEN_DATA_DIR", dir.path())
        .env("WARDEN_LOG", "error")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("`warden {}` did not finish in 120 s", args.join(" ")))
        .expect("run warden")
}

/// The integer in the first column of the first row of `sql`.
pub async fn sql_i64<C: ConnectionTrait>(db: &C, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("an integer column")
}

/// The text in the first column of every row of `sql`.
pub async fn sql_strings<C: ConnectionTrait>(db: &C, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .into_iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("a text column"))
        .collect()
}

pub use warden_server::testing::free_port;
