//! Helpers several test modules use: the `warden` binary run as a command, SQL scalars, a free
//! port. (Test set-ups specific to one module stay in it.)

use sea_orm::{ConnectionTrait, Statement};
use std::process::Command;

/// Run `warden <args>` against `database_url` (its own data directory, errors-only logs).
pub fn warden(database_url: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_DATABASE_URL", database_url)
        .env("WARDEN_DATA_DIR", dir.path())
        .env("WARDEN_LOG", "error")
        .output()
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
