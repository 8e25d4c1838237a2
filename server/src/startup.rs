//! Start-up: database connection, migrations, first-start bootstrap, the services handle.

use anyhow::Context;
use leptos::prelude::LeptosOptions;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use std::sync::Arc;
use std::time::Duration;
use warden_domain::audit::{DbAuditSink, SharedAuditSink};
use warden_domain::bootstrap::{self, BootstrapInput, BootstrapOutcome};
use warden_domain::clock::SharedClock;
use warden_domain::Services;
use warden_migrations::MigratorTrait;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Connect to the database named by the configuration, with a clear error when it cannot.
pub async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let url = config.database.url.expose().to_owned();
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or_default();
        if let Some(parent) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the database directory {}", parent.display())
            })?;
        }
    }
    let mut opts = ConnectOptions::new(url.clone());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        opts.max_connections(8);
    }
    postgres_session(&mut opts, config.database.work_mem.as_ref());
    let db = Database::connect(opts).await.with_context(|| {
        format!(
            "cannot connect to the database {} (set WARDEN_DATABASE_URL)",
            redact_url(&url)
        )
    })?;
    if url.starts_with("sqlite:") {
        db.execute_unprepared(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
        )
        .await
        .context("cannot configure SQLite")?;
    }
    Ok(db)
}

/// The settings of every pooled PostgreSQL connection (startup options; each connection is
/// opened with them).
///
/// **Every statement planned for its values.** Audit searches differ by orders of
/// magnitude in how many rows a value matches (a word found nowhere, a word in every event),
/// and after five executions of a prepared statement PostgreSQL may switch to a generic plan
/// made for no value in particular: for a free-text search matching nothing, that plan walked
/// the whole time index for the first and last match (40 s at 10 million events, measured),
/// where the plan for the actual value reads the text index (9 ms). Planning costs well under
/// a millisecond.
///
/// **No JIT compilation**: the statements costly enough for PostgreSQL to compile (a
/// facet count over hundreds of thousands of events) spent up to half a second compiling
/// (`EXPLAIN ANALYZE` at 10 million events: 481 ms of a free-text count), and a 324 ms facet
/// count took 285 ms without it; none of Warden's statements runs long enough to win it back.
///
/// **`work_mem`** (`WARDEN_DATABASE_WORK_MEM`, default 64 MB; `None`: the server's own, 4 MB
/// unless its administrator changed it). The audit page's counts of a filter the rollup does
/// not hold (two slices, a slice and an actor, a status and a cluster over 30 days) intersect
/// the filter columns' indexes in bitmaps (`BitmapAnd`). A bitmap stays exact (one bit per row)
/// only while it fits in `work_mem`; beyond it PostgreSQL keeps one bit per *page* and
/// re-checks every row of those pages: at 2.4 million events the facets of
/// `30d+status=403+cluster` (4,810 matches) read 41,160 lossy pages and re-checked 557,352
/// rows (`EXPLAIN ANALYZE`: 435 ms), against 10,291 exact pages and none re-checked with
/// 32 MB (84 to 175 ms). The memory is taken only by a statement that needs it, while it runs;
/// an exact bitmap of every page of a 10-million-event log takes about 40 MB.
pub fn postgres_session(opts: &mut ConnectOptions, work_mem: Option<&crate::config::WorkMem>) {
    let work_mem = work_mem.map(|w| w.as_str().to_owned());
    opts.map_sqlx_postgres_opts(move |o| {
        let o = o.options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
        match &work_mem {
            Some(w) => o.options([("work_mem", w.as_str())]),
            None => o,
        }
    });
}

/// A database URL with any password removed, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// For commands run beside the servers (`warden admin …`): the schema must be exactly this
/// binary's. An administrative command never migrates: a newer `warden` run during an incident
/// would upgrade the schema under servers of the older release (which then cannot restart);
/// an older one would write to a schema it does not know.
pub async fn require_current_schema(db: &DatabaseConnection) -> anyhow::Result<()> {
    let pending = warden_migrations::Migrator::get_pending_migrations_read_only(db)
        .await
        .context("the database's schema is not this release's (run this command with the servers' release)")?;
    if !pending.is_empty() {
        anyhow::bail!(
            "the database's schema is older than this `warden` ({} migration(s) pending): run this command with the servers' release, or upgrade the servers first (`warden migrate`)",
            pending.len()
        );
    }
    Ok(())
}

/// The advisory lock key under which replicas migrate PostgreSQL ("warden-migrate").
const MIGRATION_LOCK: i64 = 0x7761_7264_656e_6d67;

/// Apply pending migrations. On PostgreSQL, replicas starting together (a rolling upgrade)
/// take turns under an advisory lock held by a transaction: the first applies them, the others
/// wait, then find nothing left to do, and none serves before the schema is current.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    use sea_orm::{Statement, TransactionTrait};
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return warden_migrations::Migrator::up(db, None)
            .await
            .context("database migration failed");
    }
    let lock = db
        .begin()
        .await
        .context("cannot open the migration lock's transaction")?;
    lock.execute_raw(Statement::from_sql_and_values(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [MIGRATION_LOCK.into()],
    ))
    .await
    .context("cannot take the migration lock")?;
    let result = warden_migrations::Migrator::up(db, None)
        .await
        .context("database migration failed");
    // Ending the transaction releases the lock, whatever the outcome.
    lock.rollback().await.ok();
    result
}

pub fn leptos_options(config: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("warden")
        .site_root(config.site_root.to_string_lossy().to_string())
        .site_pkg_dir(format!("pkg/{}", asset_version(&config.site_root)))
        .site_addr(config.http.addr)
        .build()
}

/// The console bundle's version: a digest of its files (everything in `pkg/` but the
/// precompressed copies: `warden.js`, `.wasm`, `.css`, the chunks and their loader). Pages link
/// the bundle under `/pkg/<version>/`, so a browser may keep it for good (a new build is a new
/// address) and never downloads the same bundle twice.
pub fn asset_version(site_root: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let mut names: Vec<String> = std::fs::read_dir(site_root.join("pkg"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".br") && !n.ends_with(".gz"))
        .collect();
    if names.is_empty() {
        return "unbuilt".to_owned();
    }
    names.sort();
    let mut h = Sha256::new();
    for name in &names {
        if let Ok(bytes) = std::fs::read(site_root.join("pkg").join(name)) {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// Which chunks of the split console bundle each lazy page needs (`pkg/__wasm_split_manifest.json`,
/// written by `xtask split-wasm`), as leptos' page renderer reads it from the context: a page
/// that renders a lazy route then links its chunks as `preload`s, so the browser fetches them
/// beside the main module instead of after it. `None` for a bundle that is not split.
pub fn split_manifest(
    site_root: &std::path::Path,
    pkg_dir: &str,
) -> Option<leptos::WasmSplitManifest> {
    let dir = site_root.join("pkg");
    let manifest = std::fs::read_to_string(dir.join("__wasm_split_manifest.json")).ok()?;
    let manifest: std::collections::HashMap<String, Vec<String>> = match serde_json::from_str(
        &manifest,
    ) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "the console bundle's split manifest is unreadable: pages link no preloads");
            return None;
        }
    };
    let loader = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with("__wasm_split.") && n.ends_with(".js"))?;
    Some(leptos::WasmSplitManifest(
        leptos::prelude::ArcStoredValue::new((format!("/{pkg_dir}"), manifest, loader)),
    ))
}

/// The file in the data directory whose secret signs audit retention checkpoints when no
/// master key is configured.
pub const CHECKPOINT_KEY_FILE: &str = "audit-checkpoint.key";

/// The key that signs audit retention checkpoints and seals: derived from `WARDEN_MASTER_KEY`,
/// else from [`CHECKPOINT_KEY_FILE`] in the data directory (generated, mode 0600, when
/// `create`). Someone who can write to the database but read neither cannot forge a
/// checkpoint. With a master key, a [`CHECKPOINT_KEY_FILE`] still in the data directory signed
/// what was made before the master key was set (the README's way from the generated key to an
/// explicit one): it is accepted too, never signs, and start-up signs its work again with the
/// master key's and retires the file ([`adopt_master_checkpoint_key`]). Such a file that
/// cannot be read is left aside with a warning: it is not needed to start.
pub fn checkpoint_key(
    config: &Config,
    create: bool,
) -> anyhow::Result<Option<warden_domain::audit::retention::CheckpointKey>> {
    use warden_domain::audit::retention::CheckpointKey;
    let path = config.data_dir.join(CHECKPOINT_KEY_FILE);
    let Some(master) = &config.master_key else {
        return Ok(key_file(&path, create)?.map(|k| CheckpointKey::from_master(&k)));
    };
    let key = CheckpointKey::from_master(master);
    Ok(Some(match key_file(&path, false) {
        Ok(Some(earlier)) => key.also_accepting(CheckpointKey::from_master(&earlier)),
        Ok(None) => key,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the data directory's earlier audit checkpoint key is unreadable: left aside");
            key
        }
    }))
}

/// Where [`CHECKPOINT_KEY_FILE`] goes once the master key's has taken over from it (kept: a
/// database restored from a backup taken before needs it back in place).
pub const RETIRED_CHECKPOINT_KEY_FILE: &str = "audit-checkpoint.key.retired";

/// Once, at the first start with a master key beside a [`CHECKPOINT_KEY_FILE`]: sign again
/// with the master key's what that file's key signed (checkpoints, seals, the witness; audited),
/// then retire the file, so from then on only the master key's signatures are accepted (an
/// old copy of the file can forge nothing). Returns the key to run with.
pub async fn adopt_master_checkpoint_key(
    db: &DatabaseConnection,
    config: &Config,
    key: warden_domain::audit::retention::CheckpointKey,
    now_ms: i64,
) -> anyhow::Result<warden_domain::audit::retention::CheckpointKey> {
    if config.master_key.is_none() || !key.has_earlier() {
        return Ok(key);
    }
    let witness = config
        .data_dir
        .join(warden_domain::audit::seals::WITNESS_FILE);
    let done = warden_domain::audit::retention::sign_again(
        db,
        &key,
        Some(&witness),
        warden_domain::clock::Timestamp(now_ms),
    )
    .await
    .context("cannot sign the audit checkpoints again with the master key")?;
    let from = config.data_dir.join(CHECKPOINT_KEY_FILE);
    let to = config.data_dir.join(RETIRED_CHECKPOINT_KEY_FILE);
    std::fs::rename(&from, &to)
        .with_context(|| format!("cannot retire {} to {}", from.display(), to.display()))?;
    tracing::info!(
        audit.checkpoints = done.checkpoints,
        audit.seals = done.seals,
        "the audit checkpoints now carry the master key's signatures; the data directory's earlier key is retired"
    );
    Ok(key.alone())
}

/// The file in the data directory whose key opens the data key that seals the secrets kept
/// in the database (identity providers' client secrets, authenticator seeds, clusters' proxy
/// settings) when no `WARDEN_MASTER_KEY` is configured: someone who reads the database (a backup, a read-only
/// role) but not the data directory reads none of them.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The master key, which opens the database's data key (see [`check_at_rest_key`]):
/// `WARDEN_MASTER_KEY` (or `_FILE`), else [`MASTER_KEY_FILE`] in the data directory,
/// generated (mode 0600) on the first start.
pub fn at_rest_key(config: &Config) -> anyhow::Result<warden_domain::secrets::Secret> {
    if let Some(master) = &config.master_key {
        return Ok(master.clone());
    }
    key_file(&config.data_dir.join(MASTER_KEY_FILE), true)?
        .context("the generated master key is missing")
}

/// What the `key_check` row holds, sealed.
const KEY_CHECK_PURPOSE: &str = "warden.key_check";
const KEY_CHECK_PLAIN: &[u8] = b"the key that seals Warden's secrets";
/// What `key_check.data_key` is sealed for.
const DATA_KEY_PURPOSE: &str = "warden.data_key";

/// The `key_check` row: the check value (sealed with the data key) and the data key (sealed
/// with the master key; `None` for a database set up before data keys, whose data key is its
/// master key).
async fn read_key_check(
    db: &impl sea_orm::ConnectionTrait,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    use sea_orm::Statement;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT sealed, data_key FROM key_check WHERE id = 1",
        ))
        .await
        .context("cannot read the key check")?;
    row.map(|r| {
        Ok((
            r.try_get::<String>("", "sealed")
                .context("cannot read the key check")?,
            r.try_get::<Option<String>>("", "data_key")
                .context("cannot read the key check")?,
        ))
    })
    .transpose()
}

/// The data key that `master` opens: `master` itself for a database without a sealed data
/// key; `None` when `master` is not the key the data key was sealed with, or the check value
/// does not open with the result.
fn open_data_key(
    master: &warden_domain::secrets::Secret,
    sealed_check: &str,
    data_key: Option<&str>,
) -> Option<warden_domain::secrets::Secret> {
    use warden_domain::secrets::{Sealer, Secret};
    let key = match data_key {
        None => master.clone(),
        Some(sealed) => Secret::new(
            String::from_utf8(Sealer::new(master).open(DATA_KEY_PURPOSE, sealed).ok()?).ok()?,
        ),
    };
    (Sealer::new(&key)
        .open(KEY_CHECK_PURPOSE, sealed_check)
        .ok()?
        == KEY_CHECK_PLAIN)
        .then_some(key)
}

/// The database's data key, opened with `master` (the configured or generated master key),
/// for commands that read what it seals or signs without starting Warden (`warden audit
/// verify`): `master` itself for a database without a key check or without a sealed data key.
pub async fn data_key(
    db: &DatabaseConnection,
    master: &warden_domain::secrets::Secret,
) -> anyhow::Result<warden_domain::secrets::Secret> {
    // A database of an older schema (a restored backup) has no data key column, or no key
    // check: its data key is its master key.
    let row = match read_key_check(db).await {
        Ok(row) => row,
        Err(e) => {
            use sea_orm::Statement;
            let older = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT sealed FROM key_check WHERE id = 1",
                ))
                .await;
            match older {
                Ok(Some(r)) => Some((r.try_get::<String>("", "sealed")?, None)),
                Ok(None) => None,
                Err(_) if !has_table(db, "key_check").await? => None,
                Err(_) => return Err(e),
            }
        }
    };
    match row {
        None => Ok(master.clone()),
        Some((check, data_key)) => open_data_key(master, &check, data_key.as_deref()).context(
            "the master key is not the one this database's data key is sealed with (after `warden keys rotate`, use the new key)",
        ),
    }
}

/// Whether the database has `table`.
async fn has_table(db: &DatabaseConnection, table: &str) -> anyhow::Result<bool> {
    use sea_orm::Statement;
    let sql = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => format!(
            "SELECT 1 AS x FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
        _ => format!("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
    };
    Ok(db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .context("cannot read the database's tables")?
        .is_some())
}

/// Whether nothing was ever sealed or signed for this database: an empty audit log (every
/// start writes to it) and no gateway CA keys in the data directory. Such a database gets a
/// random data key of its own; an older one keeps its master key as its data key.
async fn is_new_database(db: &DatabaseConnection, config: &Config) -> anyhow::Result<bool> {
    use sea_orm::Statement;
    let events = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT seq FROM audit_events LIMIT 1",
        ))
        .await
        .context("cannot read the audit log")?;
    let gateway_files = std::fs::read_dir(config.data_dir.join("gateway"))
        .map(|d| d.flatten().next().is_some())
        .unwrap_or(false);
    Ok(events.is_none() && !gateway_files)
}

/// The key that seals secrets is the one this database's secrets were sealed with: checked
/// against the `key_check` row (written at the first start with a key check), or Warden
/// refuses to start. Started with another key, it would fail later at every second factor,
/// single sign-on, proxy, recording and audit seal, and seal new secrets with the wrong key.
/// Returns the database's data key: a new database gets a random one, sealed with `key` in
/// the same row (so `warden keys rotate` changes the master key by sealing it again); one
/// set up before keeps `key` as its data key.
pub async fn check_at_rest_key(
    db: &DatabaseConnection,
    key: &warden_domain::secrets::Secret,
    config: &Config,
    now_ms: i64,
) -> anyhow::Result<warden_domain::secrets::Secret> {
    use sea_orm::{DatabaseBackend, Statement};
    use warden_domain::secrets::{Sealer, Secret};
    let sealer = Sealer::new(key);
    let backend = db.get_database_backend();
    let refuse = |wrapped: bool| {
        let generated = config.data_dir.join(MASTER_KEY_FILE);
        let used = if config.master_key.is_some() {
            "WARDEN_MASTER_KEY (or WARDEN_MASTER_KEY_FILE)".to_owned()
        } else {
            format!("the generated key {}", generated.display())
        };
        let hint = if config.master_key.is_some() && generated.exists() {
            format!(
                " This data directory holds a generated key ({}): if the secrets were sealed with it, start with WARDEN_MASTER_KEY_FILE={} instead.",
                generated.display(),
                generated.display()
            )
        } else {
            String::new()
        };
        let rotated = if wrapped {
            " If `warden keys rotate` changed it, start with the new key."
        } else {
            ""
        };
        anyhow::anyhow!(
            "the key that seals secrets at rest, {used}, is not the one this database's secrets were sealed with: Warden would fail at every second factor, single sign-on, proxy, recording and audit seal. Start with the key the database was used with (a restored database needs its key, and without WARDEN_MASTER_KEY the data directory it was used with).{rotated}{hint}"
        )
    };
    if read_key_check(db).await?.is_none() {
        // The first start with a key check (a new database, or an upgrade): a secret sealed
        // before must open with this key, or this key would be taken as the database's.
        if warden_domain::identity::mfa::sealer_opens_what_is_sealed(db, &sealer)
            .await
            .context("cannot read the sealed secrets")?
            == Some(false)
        {
            return Err(refuse(false));
        }
        let (data_key, wrapped) = if is_new_database(db, config).await? {
            tracing::info!("a new database: its secrets are sealed with a data key of its own, which the master key opens");
            let data_key = Secret::new(warden_domain::secrets::random_token(32));
            let wrapped = sealer.seal(DATA_KEY_PURPOSE, data_key.expose().as_bytes());
            (data_key, Some(wrapped))
        } else {
            tracing::info!("a database set up before data keys: the master key stays its data key (`warden keys rotate` seals it with a new one)");
            (key.clone(), None)
        };
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "INSERT INTO key_check (id, sealed, data_key, created_at) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING"
            }
            _ => {
                "INSERT INTO key_check (id, sealed, data_key, created_at) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
            }
        };
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                Sealer::new(&data_key)
                    .seal(KEY_CHECK_PURPOSE, KEY_CHECK_PLAIN)
                    .into(),
                wrapped.into(),
                now_ms.into(),
            ],
        ))
        .await
        .context("cannot write the key check")?;
    }
    // Read again: another replica starting at the same moment may have written it first.
    let (check, wrapped) = read_key_check(db)
        .await?
        .context("the key check is missing")?;
    open_data_key(key, &check, wrapped.as_deref()).ok_or_else(|| refuse(wrapped.is_some()))
}

/// What `warden keys rotate` did.
#[derive(Debug)]
pub struct Rotated {
    /// The database had no sealed data key: its data key is the old master key, now sealed
    /// with the new one.
    pub data_key_was_master: bool,
}

/// `warden keys rotate`: seal the database's data key with `new` in place of the current
/// master key (`WARDEN_MASTER_KEY`, or the data directory's generated key without it), in
/// one audited transaction (`keys.master_rotated`). Nothing sealed or signed with the data
/// key changes, so running servers go on as they are; from then on only `new` opens the data
/// key (a server started with the old key refuses to start and says so). Refused, with
/// nothing changed: no current key, a current key that does not open the data key, a new key
/// that is the current one, or a database never started.
pub async fn rotate_master_key(
    db: &DatabaseConnection,
    config: &Config,
    new: &warden_domain::secrets::Secret,
    now_ms: i64,
) -> anyhow::Result<Rotated> {
    use sea_orm::Statement;
    use warden_domain::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
    use warden_domain::secrets::Sealer;
    let (current, from) = match &config.master_key {
        Some(k) => (k.clone(), "WARDEN_MASTER_KEY".to_owned()),
        None => {
            let path = config.data_dir.join(MASTER_KEY_FILE);
            let k = key_file(&path, false)?.with_context(|| {
                format!(
                    "no current master key: set WARDEN_MASTER_KEY (or WARDEN_MASTER_KEY_FILE), or WARDEN_DATA_DIR to the directory holding {MASTER_KEY_FILE}"
                )
            })?;
            (k, format!("the generated key {}", path.display()))
        }
    };
    if warden_domain::secrets::ct_eq(current.expose(), new.expose()) {
        anyhow::bail!("the new master key is the current one");
    }
    let tx = warden_domain::audit::begin_change(db).await?;
    let (check, wrapped) = read_key_check(&*tx).await?.context(
        "this database has no key check yet: start Warden once with its current key first",
    )?;
    let data_key_was_master = wrapped.is_none();
    let data_key = open_data_key(&current, &check, wrapped.as_deref()).with_context(|| {
        format!("the current master key ({from}) does not open this database's data key")
    })?;
    let sealed = Sealer::new(new).seal(DATA_KEY_PURPOSE, data_key.expose().as_bytes());
    let sql = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            "UPDATE key_check SET data_key = $1, rotated_at = $2 WHERE id = 1"
        }
        _ => "UPDATE key_check SET data_key = ?, rotated_at = ? WHERE id = 1",
    };
    tx.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        [sealed.into(), now_ms.into()],
    ))
    .await
    .context("cannot store the data key sealed with the new master key")?;
    let event = AuditEvent::new(
        AuditKind::System,
        Actor::System,
        SessionType::System,
        "keys.master_rotated",
        Outcome::Allowed,
    )
    .reason(if data_key_was_master {
        "the data key (the previous master key itself: this database was set up before data keys) is sealed with a new master key; the previous one no longer starts Warden"
    } else {
        "the data key is sealed with a new master key; the previous one no longer opens it"
    })
    .details(serde_json::json!({
        "previous": if config.master_key.is_some() { "WARDEN_MASTER_KEY" } else { "generated" },
        "data_key_was_master": data_key_was_master,
    }));
    warden_domain::audit::append(&*tx, warden_domain::clock::Timestamp(now_ms), vec![event])
        .await?;
    // What was written opens with the new key before it is kept.
    let (check, wrapped) = read_key_check(&*tx)
        .await?
        .context("the key check is missing")?;
    if open_data_key(new, &check, wrapped.as_deref()).as_ref() != Some(&data_key) {
        anyhow::bail!("the data key sealed with the new master key does not open again");
    }
    tx.commit().await?;
    Ok(Rotated {
        data_key_was_master,
    })
}

/// A key kept in a file: read, or (with `create`) generated: 32 random bytes, mode 0600,
/// written once (never over an existing file).
fn key_file(
    path: &std::path::Path,
    create: bool,
) -> anyhow::Result<Option<warden_domain::secrets::Secret>> {
    use warden_domain::secrets::Secret;
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Some(Secret::new(s.trim()))),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    let secret = warden_domain::secrets::random_token(32);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    {
        use std::io::Write;
        let mut f = opts
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(secret.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Some(Secret::new(secret)))
}

/// Everything `warden serve` needs before it binds a port. Idempotent.
pub async fn prepare(mut config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let db = connect(&config).await?;
    migrate(&db).await?;
    let audit: SharedAuditSink = Arc::new(DbAuditSink::new(db.clone(), clock.clone()));
    let services = Services::new(
        db.clone(),
        clock.clone(),
        audit.clone(),
        config.http.public_url.clone(),
    );
    // Everything sealed or signed with "the master key" is sealed or signed with the
    // database's data key, which the master key opens (see `check_at_rest_key`).
    let master = at_rest_key(&config)?;
    let at_rest = check_at_rest_key(&db, &master, &config, clock.now().millis()).await?;
    services
        .sso
        .set_sealer(warden_domain::secrets::Sealer::new(&at_rest));
    services.sso.set_revalidate(config.sso_revalidate);
    if config.master_key.is_some() {
        config.master_key = Some(at_rest.clone());
    }
    config.at_rest_key = Some(at_rest);
    if let Some(key) = checkpoint_key(&config, true)? {
        let key = adopt_master_checkpoint_key(&db, &config, key, clock.now().millis()).await?;
        services.retention.set_key(key);
        services.retention.set_witness(
            config
                .data_dir
                .join(warden_domain::audit::seals::WITNESS_FILE),
        );
    }
    services
        .retention
        .set_min_days(config.audit.retention_min_days);
    if let Some(dir) = &config.cli_dir {
        services.cli.set_dir(dir.clone());
    }
    let outcome = bootstrap::run(
        &db,
        &audit,
        BootstrapInput {
            admin_email: config.bootstrap.admin_email.clone(),
            admin_password: config.bootstrap.admin_password.clone(),
        },
        clock.now(),
    )
    .await
    .context("first-start initialisation failed")?;
    if let BootstrapOutcome::Initialised {
        admin_email,
        generated_password,
    } = outcome
    {
        // Printed once, to the terminal, never to the log.
        println!(
            "\n  Warden is initialised. Sign in at {} as",
            config.http.public_url
        );
        println!("    email:    {admin_email}");
        match generated_password {
            Some(p) => println!(
                "    password: {}   (generated; shown only this once)",
                p.expose()
            ),
            None => println!("    password: the one in WARDEN_ADMIN_PASSWORD"),
        }
        println!("  You will be asked to choose a new password at first sign-in.\n");
    }
    services
        .jit
        .set_networks(warden_domain::admin::jit_settings::WebhookNetworks::new(
            config.webhook_allowed_networks.clone(),
        ));
    crate::jit::spawn(&services);
    crate::jit::spawn_webhooks(&services);
    // Events the previous run journaled but did not store go into the chain before anything
    // is served.
    let journal_dir = config.data_dir.join("audit-journal");
    let journal = warden_domain::audit::journal::AuditJournal::open_with(
        &journal_dir,
        config.audit.journal_sync,
    )
    .with_context(|| format!("cannot open the audit journal {}", journal_dir.display()))?;
    let retained_after = warden_domain::audit::retention::cutoff_now(&services)
        .await
        .context("cannot read the audit retention setting")?;
    journal
        .recover(&db, retained_after)
        .await
        .context("cannot restore the events of the audit journal")?;
    crate::replicas::cas::share(
        &db,
        &config.data_dir,
        config
            .master_key
            .as_ref()
            .map(warden_domain::secrets::Sealer::new)
            .as_ref(),
    )
    .await
    .context("cannot share the gateway's certificate authorities with the other replicas")?;
    let gateway = crate::gateway::Gateway::new(services.clone(), &config, journal)?;
    crate::cluster_reads::GatewayReads::install(&gateway);
    let clusters = crate::tunnel::setup(&services, &config, &gateway);
    // Secrets a Warden without a key stored plain are sealed now.
    let sealed = warden_domain::identity::mfa::seal_plaintext(&services).await?
        + warden_domain::admin::identity_providers::seal_plaintext(&services).await?
        + warden_domain::clusters::seal_plaintext_proxies(&services).await?
        + warden_domain::admin::jit_settings::seal_plaintext(&services).await?;
    if sealed > 0 {
        tracing::info!(count = sealed, "sealed secrets found stored plain");
    }
    let replicas = crate::replicas::Replicas::start(
        &services,
        &config.replicas,
        config.master_key.as_ref(),
        &clusters,
    )
    .await
    .context("cannot join the replicas sharing the database")?;
    if let Some(r) = &replicas {
        clusters.set_replicas(r.clone());
        gateway.live.set_replicas(r);
        r.set_live(&gateway.live);
    } else {
        // One process (SQLite): `warden` commands run beside it still change authorization.
        tokio::spawn(crate::replicas::local_epoch_loop(
            Arc::downgrade(&services),
            config.replicas.epoch_recheck,
        ));
    }
    let metrics = Arc::new(Metrics::default());
    metrics.watch_audit_journal(gateway.audit_journal().clone());
    metrics.watch_audit_writer(gateway.audit_writer_stats().clone());
    let gw = Arc::downgrade(&gateway);
    metrics.watch_audit_queue(move || {
        gw.upgrade().map_or((0, 0), |g| {
            (g.audit_queue_depth(), g.audit_backpressure_refusals())
        })
    });
    if let Some(streamer) = crate::siem::Streamer::from_config(services.clone(), &config.siem)? {
        metrics.watch_siem(streamer.stats());
        streamer.spawn(config.siem.poll);
    }
    let svc = Arc::downgrade(&services);
    metrics.watch_jobs(move || {
        svc.upgrade().map_or((false, vec![]), |s| {
            let runs = s.jobs.runs();
            (
                s.jobs.held(),
                runs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            )
        })
    });
    let svc = Arc::downgrade(&services);
    metrics.watch_refusals(move || {
        svc.upgrade()
            .map(|s| s.refusals.totals())
            .unwrap_or_default()
    });
    let mut rate_limits = crate::ratelimit::RateLimits::new(&config.rate_limits);
    if services.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        // Several replicas may serve one source: its buckets are shared through the database.
        rate_limits = rate_limits.shared(crate::ratelimit::Shared::new(services.db.clone()));
    }
    Ok(AppState {
        leptos_options: leptos_options(&config),
        gateway,
        clusters,
        services,
        metrics,
        rate_limits: Arc::new(rate_limits),
        replicas,
        config: Arc::new(config),
    })
}

/// How often the newest audit row is sealed.
const SEAL_EVERY: Duration = Duration::from_secs(5);
/// How often audit retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the audit rollup counts the new events, and at most how many in one transaction.
const ROLLUP_EVERY: Duration = Duration::from_secs(1);
const ROLLUP_BATCH: i64 = 50_000;

/// Background upkeep: expired sessions; summaries of sampled refusals; audit retention and
/// rollup.
pub fn spawn_maintenance(state: &AppState) {
    let services = state.services.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        loop {
            tick.tick().await;
            if !services.jobs.run("audit_retention") {
                continue;
            }
            if let Err(e) = warden_domain::audit::retention::run(&services).await {
                tracing::warn!(error = %e, "audit retention failed; retrying at the next run");
            }
        }
    });
    let services = state.services.clone();
    tokio::spawn(async move {
        // The audit seals: the newest row signed every few seconds, after checking that
        // everything since the last seal chains on (`warden_domain::audit::seals`).
        let mut tick = tokio::time::interval(SEAL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<String> = None;
        loop {
            tick.tick().await;
            if !services.jobs.run("audit_seal") {
                continue;
            }
            match warden_domain::audit::seals::seal(&services).await {
                Ok(warden_domain::audit::seals::SealRun::Sealed { seq, hash }) => {
                    tracing::info!(audit.seq = seq, audit.hash = %hash, "audit log sealed");
                }
                Ok(warden_domain::audit::seals::SealRun::Tampered { problem }) => {
                    tracing::error!(problem = %problem, "the audit log was changed behind Warden's back; nothing is sealed until it is looked into");
                    if reported.as_deref() != Some(problem.as_str()) {
                        reported = Some(problem.clone());
                        let mut ev = warden_domain::audit::AuditEvent::new(
                            warden_domain::audit::AuditKind::System,
                            warden_domain::audit::Actor::System,
                            warden_domain::audit::SessionType::System,
                            "audit.tampered",
                            warden_domain::audit::Outcome::Denied,
                        );
                        ev.reason = Some(problem);
                        if let Err(e) = services.audit.record(ev).await {
                            tracing::error!(error = %e, "could not record that the audit log was changed");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sealing the audit log failed; retrying"),
            }
        }
    });
    let services = state.services.clone();
    tokio::spawn(async move {
        // The audit rollup counts what was stored since its last pass (reads add what it
        // has not counted yet from the events, so a lag costs time, never exactness).
        let mut tick = tokio::time::interval(ROLLUP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !services.jobs.run("audit_rollup") {
                continue;
            }
            loop {
                match warden_domain::audit::rollup::catch_up(&services.db, ROLLUP_BATCH).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the audit rollup could not catch up; retrying");
                        break;
                    }
                }
            }
        }
    });
    let services = state.services.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tick.tick().await;
            if let Err(e) = services.flush_refusals().await {
                tracing::warn!(error = %e, "could not write the summary of sampled refusals");
            }
        }
    });
    let store = warden_domain::identity::sessions::DbSessionStore::new(
        state.services.db.clone(),
        state.services.clock.clone(),
    );
    let services = state.services.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if !services.jobs.run("session_cleanup") {
                continue;
            }
            if let Err(e) = store.delete_expired().await {
                tracing::warn!(error = %e, "could not delete expired sessions");
            }
            // Sign-in counters that no longer count (made-up emails would pile up).
            let swept = match warden_domain::settings::load(&services.db).await {
                Ok(org) => {
                    warden_domain::identity::login::sweep(&services.db, &org, services.clock.now())
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = swept {
                tracing::warn!(error = %e, "could not sweep the sign-in counters");
            }
            // Webhook deliveries done with (their payloads name people and reasons).
            if let Err(e) = warden_domain::admin::webhook_outbox::purge(&services).await {
                tracing::warn!(error = %e, "could not purge the webhook outbox");
            }
        }
    });
    let services = state.services.clone();
    let rate_limits = state.rate_limits.clone();
    if rate_limits.shared_buckets().is_some() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if !services.jobs.run("rate_limit_sweep") {
                    continue;
                }
                if let Some(shared) = rate_limits.shared_buckets() {
                    if let Err(e) = shared.sweep().await {
                        tracing::warn!(error = %e, "could not sweep the shared rate limits");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leptos::prelude::GetValue;

    fn site(files: &[(&str, &str)]) -> tempfile::TempDir {
        let site = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(site.path().join("pkg")).unwrap();
        for (name, body) in files {
            std::fs::write(site.path().join("pkg").join(name), body).unwrap();
        }
        site
    }

    #[test]
    fn the_bundle_version_covers_every_chunk_but_not_the_compressed_copies() {
        let site = site(&[
            ("warden.js", "js"),
            ("warden.wasm", "main"),
            ("warden.css", "css"),
            ("chunk_1.0123456789abcdef.wasm", "chunk"),
        ]);
        let version = asset_version(site.path());
        std::fs::write(
            site.path().join("pkg/chunk_1.0123456789abcdef.wasm.br"),
            "br",
        )
        .unwrap();
        assert_eq!(asset_version(site.path()), version);
        std::fs::write(
            site.path().join("pkg/chunk_1.0123456789abcdef.wasm"),
            "other",
        )
        .unwrap();
        assert_ne!(asset_version(site.path()), version);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(asset_version(empty.path()), "unbuilt");
    }

    #[test]
    fn the_split_manifest_links_chunks_under_the_versioned_address() {
        let split = site(&[
            ("__wasm_split.0123456789abcdef.js", "loader"),
            ("__wasm_split.0123456789abcdef.js.br", "br"),
            (
                "__wasm_split_manifest.json",
                r#"{"__people_1": ["chunk_1.0123456789abcdef"]}"#,
            ),
        ]);
        let manifest = split_manifest(split.path(), "pkg/v1").expect("a manifest");
        let (root, chunks, loader) = manifest.0.get_value();
        assert_eq!(root, "/pkg/v1");
        assert_eq!(loader, "__wasm_split.0123456789abcdef.js");
        assert_eq!(
            chunks["__people_1"],
            vec!["chunk_1.0123456789abcdef".to_owned()]
        );

        // An unsplit bundle, or an unreadable manifest: no preloads, and the pages still render.
        assert!(split_manifest(site(&[("warden.js", "js")]).path(), "pkg/v1").is_none());
        let bad = site(&[
            ("__wasm_split.0123456789abcdef.js", "loader"),
            ("__wasm_split_manifest.json", "{not json"),
        ]);
        assert!(split_manifest(bad.path(), "pkg/v1").is_none());
    }
}
