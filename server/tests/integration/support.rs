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

/// A port nobody listens on now, for a server the test starts later.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up here), not
/// from a bind to port 0: the kernel hands out an ephemeral port as the local end of any
/// outgoing connection too, so a port read from port 0 and bound again later could meanwhile
/// be the local port of one of the other tests' connections, and the later bind fails with
/// "Address already in use". Below that range only listeners compete, and the ports here are
/// handed out once per process (a counter, started at an offset of the process id) and
/// checked on every address.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}
