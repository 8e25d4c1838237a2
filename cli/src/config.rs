//! Where `wardenctl` keeps what `wardenctl login` made: Warden's URL, and the API key it
//! created (secret and id), in a file only its owner can read (`0600`, written atomically).
//!
//! The environment wins over the file: `WARDEN_URL` and `WARDEN_API_KEY` (for scripts and CI,
//! with a key made in the console), then `--url` on the command line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Warden's public URL (`WARDEN_PUBLIC_URL` of the server).
    pub url: Option<String>,
    /// The API key's secret (only ever sent in `Authorization`).
    pub api_key: Option<String>,
    /// The key's id, so that `wardenctl logout` can revoke it.
    pub api_key_id: Option<String>,
    /// Who signed in (shown by `wardenctl whoami` without a request).
    pub email: Option<String>,
}

/// The default file: `$WARDENCTL_CONFIG`, else `$XDG_CONFIG_HOME/warden/wardenctl.json`, else
/// `~/.config/warden/wardenctl.json`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WARDENCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| anyhow::anyhow!("HOME is not set: give --config FILE"))?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("warden").join("wardenctl.json"))
}

impl Config {
    /// The file at `path`, or an empty configuration when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a wardenctl configuration ({e}); remove it and run wardenctl login",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write the file readable by its owner only, replacing it in one step.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_private(path, &serde_json::to_vec_pretty(self)?)
    }
}

/// The name of a new file beside `path` that becomes it by a rename when complete.
pub fn temp_beside(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file name", path.display()))?;
    Ok(dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Write `bytes` to `path` with mode `0600` (a temporary file beside it, then a rename), so
/// no other user can ever read a secret through it, even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let tmp = temp_beside(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("cannot write {}: {e}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_only_its_owner_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("wardenctl.json");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let c = Config {
            url: Some("https://warden.example".into()),
            api_key: Some("wk_secret".into()),
            api_key_id: Some("id".into()),
            email: Some("a@b.c".into()),
        };
        c.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not json").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a wardenctl configuration"), "{err}");
    }
}
