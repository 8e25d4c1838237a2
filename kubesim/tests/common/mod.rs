//! Test harness: one simulator per test, a private HOME / kubectl cache, and helpers that run
//! the real `/usr/bin/kubectl` against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kubesim::KubeSim;
use tokio::io::AsyncWriteExt;

pub const KUBECTL: &str = "/usr/bin/kubectl";

pub struct Env {
    pub sim: KubeSim,
    pub dir: tempfile::TempDir,
    pub admin: PathBuf,
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Assert success and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "kubectl failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Assert failure and return stderr.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "kubectl unexpectedly succeeded: stdout={}",
            self.stdout
        );
        &self.stderr
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).expect("kubectl printed JSON")
    }
}

impl Env {
    pub async fn new() -> Env {
        let sim = KubeSim::start().await.expect("kubesim starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = dir.path().join("admin.kubeconfig");
        sim.write_admin_kubeconfig(&admin)
            .expect("write kubeconfig");
        Env { sim, dir, admin }
    }

    /// A kubeconfig authenticating with a client certificate for `user`/`groups`.
    pub fn user(&self, user: &str, groups: &[&str]) -> PathBuf {
        let p = self.dir.path().join(format!(
            "{}-{}.kubeconfig",
            user.replace(':', "_"),
            rand_suffix()
        ));
        std::fs::write(
            &p,
            self.sim.kubeconfig_for_cert(user, groups).expect("cert"),
        )
        .expect("write");
        p
    }

    /// A kubeconfig authenticating with a bearer token.
    pub fn token_user(&self, token: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("token-{}.kubeconfig", rand_suffix()));
        std::fs::write(&p, self.sim.kubeconfig_for_token(token)).expect("write");
        p
    }

    /// A kubeconfig whose credentials the server does not accept (basic auth is not an
    /// authenticator since 1.19), so requests are anonymous.
    pub fn anonymous(&self) -> PathBuf {
        let text = self.sim.kubeconfig_for_token("x").replace(
            "    token: x\n",
            "    username: anonymous\n    password: none\n",
        );
        let p = self
            .dir
            .path()
            .join(format!("anon-{}.kubeconfig", rand_suffix()));
        std::fs::write(&p, text).expect("write");
        p
    }

    fn command(&self, kubeconfig: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(KUBECTL);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Run kubectl with a kubeconfig and optional stdin.
    pub async fn run(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Out {
        let mut child = self
            .command(kubeconfig, args)
            .spawn()
            .expect("spawn kubectl");
        let mut sin = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).await.expect("write stdin");
        }
        drop(sin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished within 60s")
            .expect("kubectl output");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// kubectl as the admin.
    pub async fn kubectl(&self, args: &[&str]) -> Out {
        self.run(&self.admin, args, None).await
    }

    /// kubectl as the admin with stdin.
    pub async fn kubectl_in(&self, args: &[&str], stdin: &str) -> Out {
        self.run(&self.admin, args, Some(stdin)).await
    }

    /// Start a long-running kubectl (watch, logs -f) whose output is read line by line.
    pub fn spawn(&self, kubeconfig: &Path, args: &[&str]) -> tokio::process::Child {
        self.command(kubeconfig, args)
            .spawn()
            .expect("spawn kubectl")
    }

    /// An admin `kube::Client`.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.sim.admin_kubeconfig()).await
    }

    /// Grant a cluster role to a user at cluster scope.
    pub async fn bind_cluster(&self, name: &str, role: &str, kind: &str, subject: &str) {
        let out = self
            .kubectl(&[
                "create",
                "clusterrolebinding",
                name,
                &format!("--clusterrole={role}"),
                &format!("--{}={subject}", kind),
            ])
            .await;
        out.ok();
    }

    /// Apply a manifest as the admin (client-side).
    pub async fn apply(&self, manifest: &str) -> Out {
        self.kubectl_in(&["apply", "-f", "-"], manifest).await
    }
}

pub async fn client_from(kubeconfig_yaml: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("kube client")
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Read lines from a child's stdout until one contains `needle` (or time out).
pub async fn wait_for_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    needle: &str,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, lines.next_line()).await;
        match next {
            Ok(Ok(Some(l))) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            _ => return false,
        }
    }
}
