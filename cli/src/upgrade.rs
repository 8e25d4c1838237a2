//! `wardenctl upgrade`: replace this binary by the build the signed-in Warden serves for its
//! platform (`GET /api/v1/downloads/wardenctl`), checked against the SHA-256 Warden lists
//! before anything is replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use warden_domain::kubeconfig::{this_platform, CliBuild};

use crate::client::Api;

/// This binary's platform in the builds' names (`linux-amd64`…), if Warden names it.
pub fn platform() -> Option<String> {
    this_platform().map(|(os, arch)| format!("{os}-{arch}"))
}

/// Upgrade (or with `check`, only say whether there is something to upgrade to).
pub async fn upgrade(api: &Api, check: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let platform = platform().ok_or_else(|| {
        anyhow!(
            "Warden serves no builds for this platform ({}/{})",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    })?;
    let builds: Vec<CliBuild> = api.get("/api/v1/downloads/wardenctl").await?;
    let Some(build) = builds.into_iter().find(|b| b.platform == platform) else {
        bail!("{} serves no wardenctl build for {platform}", api.base());
    };
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot find this wardenctl's file")?;
    if sha256_file(&exe)? == build.sha256 {
        writeln!(
            out,
            "wardenctl is up to date: it is the build {} serves (SHA-256 {})",
            api.base(),
            build.sha256
        )?;
        return Ok(());
    }
    if check {
        writeln!(
            out,
            "{} serves another wardenctl for {platform} ({} bytes, SHA-256 {}): `wardenctl upgrade` installs it",
            api.base(),
            build.size,
            build.sha256
        )?;
        return Ok(());
    }
    // Beside the binary, so that the final rename stays on one file system.
    let dir = exe.parent().unwrap_or(Path::new("."));
    let partial = dir.join(format!(".wardenctl.upgrade-{}", std::process::id()));
    let result = download(api, &build, &partial).await.and_then(|sha| {
        if sha != build.sha256 {
            bail!(
                "the download's SHA-256 is {sha}, not the {} Warden lists: nothing was replaced",
                build.sha256
            );
        }
        std::fs::rename(&partial, &exe).with_context(|| format!("cannot replace {}", exe.display()))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    writeln!(
        out,
        "wardenctl upgraded: {} is now the build {} serves (SHA-256 {})",
        exe.display(),
        api.base(),
        build.sha256
    )?;
    Ok(())
}

/// The build written to `path` (executable, new file), and the SHA-256 of what was written.
async fn download(api: &Api, build: &CliBuild, path: &PathBuf) -> anyhow::Result<String> {
    // The API key goes with the request: only to a path of this Warden (`@host/…` or
    // `.host/…` joined to the base would name another host).
    if !build.url.starts_with('/') || build.url.starts_with("//") {
        anyhow::bail!(
            "Warden offered the build at {:?}, not a path of its own; not downloaded",
            build.url
        );
    }
    let resp = api.get_raw(&build.url, &[]).await?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o755);
    }
    let mut file = o
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut short")?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_platform_has_a_build_name() {
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(super::platform().as_deref(), Some("linux-amd64"));
        }
    }
}
