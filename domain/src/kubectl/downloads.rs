//! The `wardenctl` builds a Warden serves to its signed-in users (*My tools*, `GET
//! /api/v1/downloads/wardenctl`), so that nobody needs Warden's source and a Rust toolchain to
//! get the command line.
//!
//! They are the files of one directory (`WARDEN_CLI_DIR`; by default the directory of the
//! running `warden`, where `./x` and the container image put `wardenctl`):
//! `wardenctl-<os>-<arch>` (`linux`, `darwin` or `windows` with `.exe`; `amd64` or `arm64`), and
//! a plain `wardenctl`, which is taken as a build for the platform Warden itself runs on. Any
//! other file is ignored. Each build's SHA-256 is computed once and kept while the file's size
//! and modification time stay the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::kubeconfig::{this_platform, CliBuild};

const NAME: &str = "wardenctl";
const OSES: [&str; 3] = ["linux", "darwin", "windows"];
const ARCHES: [&str; 2] = ["amd64", "arm64"];

/// The directory of builds, set at start-up, and the digests computed so far.
#[derive(Debug, Default)]
pub struct CliDownloads {
    dir: OnceLock<PathBuf>,
    digests: Mutex<HashMap<PathBuf, Known>>,
}

/// A file's digest, and the size and modification time it was computed for.
#[derive(Debug)]
struct Known {
    len: u64,
    mtime: Option<SystemTime>,
    sha256: String,
}

impl CliDownloads {
    /// Serve the builds found in `dir` (once; later calls are ignored).
    pub fn set_dir(&self, dir: PathBuf) {
        let _ = self.dir.set(dir);
    }

    /// The builds on offer, sorted by platform; none when no directory is set or it cannot
    /// be read.
    pub async fn builds(self: &std::sync::Arc<Self>) -> Vec<CliBuild> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.scan())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    /// The build for `platform` (`linux-amd64`…) and its file, if this Warden serves one.
    pub async fn find(self: &std::sync::Arc<Self>, platform: &str) -> Option<(PathBuf, CliBuild)> {
        // Only a platform this module could have named reaches the file system.
        platform_parts(platform)?;
        let me = self.clone();
        let platform = platform.to_owned();
        tokio::task::spawn_blocking(move || {
            me.scan().into_iter().find(|(_, b)| b.platform == platform)
        })
        .await
        .ok()
        .flatten()
    }

    fn scan(&self) -> Vec<(PathBuf, CliBuild)> {
        let Some(dir) = self.dir.get() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found: HashMap<String, (bool, PathBuf, CliBuild)> = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((os, arch, explicit)) = name.to_str().and_then(parse_file_name) else {
                continue;
            };
            let path = entry.path();
            let Some((size, sha256)) = self.digest(&path) else {
                continue;
            };
            let platform = format!("{os}-{arch}");
            // A `wardenctl-<os>-<arch>` is preferred to a plain `wardenctl` of that platform.
            if found
                .get(&platform)
                .is_some_and(|(e, _, _)| *e && !explicit)
            {
                continue;
            }
            let build = CliBuild {
                url: format!("/api/v1/downloads/wardenctl/{platform}"),
                file_name: if os == "windows" {
                    format!("{NAME}.exe")
                } else {
                    NAME.to_owned()
                },
                platform: platform.clone(),
                os: os.to_owned(),
                arch: arch.to_owned(),
                size,
                sha256,
            };
            found.insert(platform, (explicit, path, build));
        }
        let mut out: Vec<_> = found.into_values().map(|(_, p, b)| (p, b)).collect();
        out.sort_by(|a, b| a.1.platform.cmp(&b.1.platform));
        out
    }

    /// A regular file's size and SHA-256 (from the cache while size and mtime are unchanged).
    fn digest(&self, path: &Path) -> Option<(u64, String)> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let (len, mtime) = (meta.len(), meta.modified().ok());
        if let Some(k) = self.digests.lock().ok()?.get(path) {
            if k.len == len && k.mtime == mtime {
                return Some((len, k.sha256.clone()));
            }
        }
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::open(path).ok()?;
        let size = std::io::copy(&mut file, &mut hasher).ok()?;
        let sha = hex::encode(hasher.finalize());
        self.digests.lock().ok()?.insert(
            path.to_owned(),
            Known {
                len: size,
                mtime,
                sha256: sha.clone(),
            },
        );
        Some((size, sha))
    }
}

/// `(os, arch, explicit)` of a build's file name: `wardenctl-linux-amd64`,
/// `wardenctl-windows-arm64.exe`, or a plain `wardenctl` (the platform Warden runs on).
fn parse_file_name(name: &str) -> Option<(&'static str, &'static str, bool)> {
    if name == NAME {
        let (os, arch) = this_platform()?;
        return Some((os, arch, false));
    }
    let rest = name.strip_prefix(NAME)?.strip_prefix('-')?;
    let rest = match rest.strip_suffix(".exe") {
        Some(r) if r.starts_with("windows-") => r,
        Some(_) => return None,
        None if rest.starts_with("windows-") => return None,
        None => rest,
    };
    let (os, arch) = platform_parts(rest)?;
    Some((os, arch, true))
}

/// `("linux", "amd64")` for `linux-amd64`; `None` for anything else.
fn platform_parts(platform: &str) -> Option<(&'static str, &'static str)> {
    let (os, arch) = platform.split_once('-')?;
    let os = OSES.into_iter().find(|o| *o == os)?;
    let arch = ARCHES.into_iter().find(|a| *a == arch)?;
    Some((os, arch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn file_names_name_platforms() {
        assert_eq!(
            parse_file_name("wardenctl-linux-amd64"),
            Some(("linux", "amd64", true))
        );
        assert_eq!(
            parse_file_name("wardenctl-darwin-arm64"),
            Some(("darwin", "arm64", true))
        );
        assert_eq!(
            parse_file_name("wardenctl-windows-amd64.exe"),
            Some(("windows", "amd64", true))
        );
        for other in [
            "wardenctl-windows-amd64",
            "wardenctl-linux-amd64.exe",
            "wardenctl-linux-x86",
            "wardenctl-plan9-amd64",
            "wardenctl-linux-amd64-old",
            "wardenctl.sha256",
            "wardenctl-",
            "warden",
            "README",
            "wardenctl-../etc",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
        assert_eq!(
            parse_file_name("wardenctl").map(|(o, a, e)| (format!("{o}-{a}"), e)),
            this_platform().map(|(o, a)| (format!("{o}-{a}"), false))
        );
    }

    #[tokio::test]
    async fn a_directory_lists_its_builds_with_their_digests() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| std::fs::write(dir.path().join(name), body).unwrap();
        write("wardenctl-darwin-arm64", b"mac");
        write("wardenctl-windows-amd64.exe", b"win");
        write("notes.txt", b"ignored");
        std::fs::create_dir(dir.path().join("wardenctl-linux-arm64")).unwrap();
        let cli = Arc::new(CliDownloads::default());
        assert!(cli.builds().await.is_empty(), "no directory set: nothing");
        cli.set_dir(dir.path().to_owned());
        let builds = cli.builds().await;
        let names: Vec<_> = builds.iter().map(|b| b.platform.as_str()).collect();
        assert_eq!(
            names,
            ["darwin-arm64", "windows-amd64"],
            "a directory is no build"
        );
        let mac = &builds[0];
        assert_eq!(mac.sha256, crate::secrets::sha256_hex(b"mac"));
        assert_eq!((mac.size, mac.file_name.as_str()), (3, "wardenctl"));
        assert_eq!(mac.url, "/api/v1/downloads/wardenctl/darwin-arm64");
        assert_eq!(builds[1].file_name, "wardenctl.exe");
        assert_eq!(mac.label(), "macOS (Apple silicon)");

        // A replaced file gets its new digest.
        write("wardenctl-darwin-arm64", b"mac, rebuilt");
        let (path, mac) = cli.find("darwin-arm64").await.unwrap();
        assert_eq!(path, dir.path().join("wardenctl-darwin-arm64"));
        assert_eq!(mac.sha256, crate::secrets::sha256_hex(b"mac, rebuilt"));
        assert!(cli.find("linux-arm64").await.is_none());
        assert!(cli.find("../notes.txt").await.is_none());

        // A plain `wardenctl` is the host's build, unless a named one exists for it.
        if let Some((os, arch)) = this_platform() {
            let host = format!("{os}-{arch}");
            write("wardenctl", b"plain");
            let (_, b) = cli.find(&host).await.unwrap();
            assert_eq!(b.sha256, crate::secrets::sha256_hex(b"plain"));
            write(
                &format!(
                    "wardenctl-{host}{}",
                    if os == "windows" { ".exe" } else { "" }
                ),
                b"named",
            );
            let (_, b) = cli.find(&host).await.unwrap();
            assert_eq!(b.sha256, crate::secrets::sha256_hex(b"named"));
            assert_eq!(cli.builds().await.len(), 3);
        }
    }
}
