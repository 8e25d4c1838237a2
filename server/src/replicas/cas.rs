//! The gateway's certificate authorities, shared by the replicas through the database: the
//! user CA (which signs kubeconfig certificates) and the gateway CA (which kubeconfigs trust)
//! must be the same on every replica, so a kubeconfig one replica issued works on any other.
//!
//! Before the gateway starts, the database's copy (the certificate, and the key sealed with
//! `WARDEN_MASTER_KEY`, never in the clear) is written into `WARDEN_DATA_DIR/gateway/`, where
//! the gateway loads it as always. The first replica to start offers its own (creating them if
//! needed); when two start at once, the first insert wins and the other takes it. Without a
//! master key nothing is shared (a key would sit in the database unencrypted): each replica
//! keeps its own CAs, and start-up says so.

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use std::path::Path;
use warden_domain::secrets::Sealer;

const NAMES: [&str; 2] = ["user-ca", "gateway-ca"];

async fn stored(db: &DatabaseConnection) -> anyhow::Result<Vec<(String, String, String)>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT name, cert_pem, key_sealed FROM gateway_cas",
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("", "name")?,
                r.try_get("", "cert_pem")?,
                r.try_get("", "key_sealed")?,
            ))
        })
        .collect()
}

/// Make `data_dir/gateway` hold the CAs the database holds (offering this replica's own when
/// it has none). PostgreSQL only; `sealer`: from the master key.
pub async fn share(
    db: &DatabaseConnection,
    data_dir: &Path,
    sealer: Option<&Sealer>,
) -> anyhow::Result<()> {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let Some(sealer) = sealer else {
        tracing::warn!("WARDEN_MASTER_KEY is not set: the gateway's CAs are not shared with other replicas, so a kubeconfig works only on the replica that issued it");
        return Ok(());
    };
    let dir = data_dir.join("gateway");
    let mut rows = stored(db).await?;
    if rows.len() < NAMES.len() {
        // Ensure this replica has CAs (sealed on disk), then offer them: the first offer wins.
        crate::gateway::pki::Pki::load_or_create(data_dir, &[], Some(sealer))
            .context("cannot prepare the gateway's certificates (WARDEN_DATA_DIR)")?;
        for name in NAMES {
            let cert = std::fs::read_to_string(dir.join(format!("{name}.pem")))?;
            let key = std::fs::read_to_string(dir.join(format!("{name}-key.pem")))?;
            anyhow::ensure!(Sealer::is_sealed(&key), "the key of {name} is not sealed");
            db.execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "INSERT INTO gateway_cas (name, cert_pem, key_sealed) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                [name.into(), cert.into(), key.into()],
            ))
            .await?;
        }
        rows = stored(db).await?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in NAMES {
        let Some((_, cert, key)) = rows.iter().find(|(n, _, _)| n == name) else {
            anyhow::bail!("the database holds no {name}");
        };
        // Check it opens with this replica's master key before using it.
        sealer
            .open(&format!("gateway/{name}-key.pem"), key)
            .with_context(|| format!("the {name} key in the database does not open with WARDEN_MASTER_KEY: every replica needs the same master key"))?;
        write_if_changed(&dir.join(format!("{name}.pem")), cert)?;
        write_if_changed(&dir.join(format!("{name}-key.pem")), key)?;
    }
    Ok(())
}

fn write_if_changed(path: &Path, content: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(());
    }
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
