//! `wardenctl` run as a user runs it: the built binary against a Warden (the server's test
//! harness, on SQLite, or on PostgreSQL when WARDEN_TEST_DATABASE_URL is set), with its own
//! configuration file. Each test also tries what an insider would: a read-only user asking for
//! more, a key after logout or after the user was deactivated, a second factor skipped.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use warden_server::testing::{TestApp, USER_PASSWORD};

const ADMIN_PASSWORD: &str = "the admin's new password";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

struct Ctl {
    url: String,
    config: PathBuf,
    /// The wardenctl to run (the built one, or a copy that may replace itself).
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ctl {
    fn new(app: &TestApp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: app.url.clone(),
            config: dir.path().join("wardenctl.json"),
            bin: PathBuf::from(env!("CARGO_BIN_EXE_wardenctl")),
            _dir: dir,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>, api_key: Option<&str>) -> Run {
        self.run_env(args, stdin, api_key, &[]).await
    }

    async fn run_env(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        api_key: Option<&str>,
        env: &[(&str, &str)],
    ) -> Run {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .env("WARDEN_URL", &self.url)
            .env("WARDENCTL_CONFIG", &self.config)
            .env_remove("WARDEN_API_KEY")
            .env_remove("WARDEN_MFA_CODE")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(k) = api_key {
            cmd.env("WARDEN_API_KEY", k);
        }
        let mut child = cmd.spawn().expect("wardenctl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, None).await
    }

    /// Run and expect success.
    async fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "wardenctl {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// Run with `-o json` and parse the answer.
    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).expect("json output")
    }

    async fn login(&self, email: &str, password: &str) -> Run {
        self.run_with(
            &["login", "--email", email, "--password-stdin"],
            Some(&format!("{password}\n")),
            None,
        )
        .await
    }

    fn saved(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.config).unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_runs_the_organization_from_the_command_line() {
    let (app, _admin) = TestApp::spawn().await.with_admin().await;
    let ctl = Ctl::new(&app);
    // Nothing saved yet: a clear message, no request without credentials.
    let r = ctl.run(&["get", "projects"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not signed in") && r.stderr.contains("wardenctl login"),
        "{}",
        r.stderr
    );
    // A wrong password: the API's own message, nothing saved.
    let r = ctl.login("admin@warden.local", "not the password").await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("invalid_credentials"), "{}", r.stderr);
    assert!(!ctl.config.exists());

    let r = ctl.login("admin@warden.local", ADMIN_PASSWORD).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let saved = ctl.saved();
    let secret = saved["api_key"].as_str().unwrap().to_owned();
    assert!(!secret.is_empty());
    assert!(
        !r.stdout.contains(&secret) && !r.stderr.contains(&secret),
        "the key is never printed"
    );
    assert!(!std::fs::read_to_string(&ctl.config)
        .unwrap()
        .contains(ADMIN_PASSWORD));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ctl.config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the saved key");
    }
    // The sign-in's session was ended; the key is the only credential left.
    let keys = ctl.json(&["get", "api-keys"]).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert!(keys[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("wardenctl on "));

    let me = ctl.ok(&["whoami"]).await;
    assert!(
        me.contains("admin@warden.local") && me.contains("ADMIN"),
        "{me}"
    );

    // The organization, as the console would build it.
    ctl.ok(&["create", "project", "shop", "--description", "the web shop"])
        .await;
    let r = ctl
        .run_with(
            &["create", "user", "sally@example.com", "--name", "Sally"],
            None,
            None,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("one-time link"), "{}", r.stdout);
    ctl.ok(&["create", "group", "devs"]).await;
    ctl.ok(&["group", "add-member", "devs", "sally@example.com"])
        .await;
    let out = ctl
        .ok(&[
            "create",
            "binding",
            "--group",
            "devs",
            "--role",
            "NAMESPACE_ADMIN",
            "--project",
            "shop",
            "--namespace",
            "web",
            "--for",
            "8h",
        ])
        .await;
    assert!(out.contains("binding") && out.contains("created"), "{out}");
    let bindings = ctl.json(&["get", "bindings", "--project", "shop"]).await;
    let b = bindings
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"]["name"] == "devs")
        .expect("the group's binding");
    assert_eq!(b["role"], "NAMESPACE_ADMIN");
    assert_eq!(b["namespaces"], json!(["web"]));
    assert!(b["expires_at"].is_string(), "--for made it time-bound: {b}");
    let table = ctl.ok(&["get", "bindings", "--project", "shop"]).await;
    assert!(
        table.starts_with("ID ") && table.contains("group:devs"),
        "{table}"
    );
    let group = ctl.ok(&["get", "group", "devs"]).await;
    assert!(group.contains("sally@example.com"), "{group}");
    let users = ctl.ok(&["get", "users"]).await;
    assert!(
        users.contains("sally@example.com") && users.contains("EMAIL"),
        "{users}"
    );
    // Refused by Warden, said by wardenctl: a bound group cannot be deleted, a bad name is a
    // field error.
    let r = ctl.run(&["delete", "group", "devs"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("error:"), "{}", r.stderr);
    let r = ctl.run(&["create", "project", "Not A Name!"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("name"), "{}", r.stderr);
    // A name that tries to reach another resource addresses nothing.
    let r = ctl.run(&["get", "project", "../users"]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);

    // A cluster import prints the command that connects it; its manifest is one fetch away.
    let out = ctl
        .ok(&[
            "create",
            "cluster",
            "prod",
            "--project",
            "shop",
            "--label",
            "env=prod",
        ])
        .await;
    assert!(out.contains("kubectl apply -f"), "{out}");
    let manifest = ctl.dir().join("agent.yaml");
    ctl.ok(&["manifest", "prod", "-f", manifest.to_str().unwrap()])
        .await;
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("warden-system"),
        "{yaml}"
    );
    let clusters = ctl.json(&["get", "clusters"]).await;
    assert!(clusters
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "prod" && c["status"] == "pending"));

    // A kubeconfig, written for its owner only.
    let kc = ctl.dir().join("warden.kubeconfig");
    // Over a file others could read: it is made private before the key is written.
    std::fs::write(&kc, "old").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    ctl.ok(&["kubeconfig", "-f", kc.to_str().unwrap()]).await;
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        text.contains("apiVersion: v1") && text.contains("client-certificate-data"),
        "{text}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // The audit log saw all of it, through the key.
    let events = ctl
        .json(&[
            "audit", "--actor", "admin@", "--action", "group.", "--limit", "10",
        ])
        .await;
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.iter().any(|a| a.starts_with("group.")),
        "{actions:?}"
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["session_type"] == "api"),
        "{events}"
    );
    let csv = ctl.dir().join("audit.csv");
    let r = ctl
        .run(&[
            "audit",
            "export",
            "--format",
            "csv",
            "--kind",
            "console",
            "-f",
            csv.to_str().unwrap(),
        ])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(
        csv.lines().count() > 3 && csv.contains("project.create"),
        "{csv}"
    );

    // Following the log: new events arrive as they are stored, and revoking the key (logout)
    // ends the stream.
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardenctl"))
        .args([
            "audit", "--follow", "--action", "project.", "--limit", "1", "-o", "json",
        ])
        .env("WARDEN_URL", &ctl.url)
        .env("WARDENCTL_CONFIG", &ctl.config)
        .env_remove("WARDEN_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("the newest event first")
        .unwrap()
        .unwrap();
    assert!(
        first.contains("\"project.create\"") && first.contains("shop"),
        "{first}"
    );
    ctl.ok(&["create", "project", "followed"]).await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the stream goes on");
            if line.contains("followed") {
                return line;
            }
        }
    })
    .await
    .expect("the new event arrives while followed");
    let event: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(event["action"], "project.create");

    // Logout revokes the key: kept by someone, it opens nothing, and the follow ends.
    ctl.ok(&["logout"]).await;
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        follow.wait_with_output(),
    )
    .await
    .expect("the live tail ends once its key is revoked")
    .unwrap();
    assert_eq!(ended.status.code(), Some(1));
    let why = String::from_utf8_lossy(&ended.stderr);
    assert!(why.contains("ended the live tail"), "{why}");
    assert!(ctl.saved()["api_key"].is_null());
    let r = ctl.run_with(&["whoami"], None, Some(&secret)).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_gets_no_more_from_the_command_line_than_their_grants() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    app.user_client(&admin, "bob@example.com").await;
    let ctl = Ctl::new(&app);
    let r = ctl.login("bob@example.com", USER_PASSWORD).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let me = ctl.ok(&["whoami"]).await;
    assert!(me.contains("bob@example.com"), "{me}");
    // Everything an administrator does, refused by Warden with its reason.
    for args in [
        &["create", "project", "mine"][..],
        &[
            "create",
            "binding",
            "--user",
            "bob@example.com",
            "--role",
            "ADMIN",
        ],
        &["create", "group", "admins2"],
        &[
            "group",
            "add-member",
            "Organization Admins",
            "bob@example.com",
        ],
        &["user", "deactivate", "admin@warden.local"],
        &["kubeconfig", "revoke", "--user", "admin@warden.local"],
        &["delete", "project", "default"],
        &["create", "cluster", "x", "--project", "default"],
    ] {
        let r = ctl.run(args).await;
        assert_eq!(r.code, 1, "wardenctl {args:?} went through: {}", r.stdout);
        assert!(
            r.stderr.contains("403") || r.stderr.contains("404"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // The audit log shows bob his own activity only.
    let events = ctl.json(&["audit", "--limit", "200"]).await;
    assert!(!events.as_array().unwrap().is_empty());
    for e in events.as_array().unwrap() {
        assert_eq!(e["actor"], "bob@example.com", "{e}");
    }
    // Just-in-time: bob asks, an administrator approves from their own terminal, and bob's
    // grant is there, time-bound.
    let asked = ctl
        .json(&[
            "access",
            "request",
            "--project",
            "default",
            "--role",
            "PROJECT_READ_ONLY",
            "--for",
            "2h",
            "--reason",
            "debugging the checkout",
        ])
        .await;
    assert_eq!(asked["status"], "pending", "{asked}");
    let id = asked["id"].as_str().unwrap().to_owned();
    let r = ctl.run(&["access", "approve", &id]).await;
    assert_eq!(r.code, 1, "bob approved his own request: {}", r.stdout);
    let boss = Ctl::new(&app);
    assert_eq!(
        boss.login("admin@warden.local", ADMIN_PASSWORD).await.code,
        0
    );
    let inbox = boss.ok(&["access", "list", "--scope", "approvals"]).await;
    assert!(
        inbox.contains(&id) && inbox.contains("debugging the checkout"),
        "{inbox}"
    );
    let decided = boss
        .json(&["access", "approve", &id, "--comment", "ok"])
        .await;
    assert_eq!(decided["status"], "approved", "{decided}");
    let me = ctl.ok(&["whoami"]).await;
    assert!(
        me.contains("PROJECT_READ_ONLY at project scope, project default") && me.contains("until"),
        "{me}"
    );

    // Deactivated by an administrator: the saved key stops at once.
    admin
        .patch(
            "/api/v1/users/bob@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    let r = ctl.run(&["whoami"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("401") || r.stderr.contains("403"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_factor_is_asked_and_cannot_be_skipped() {
    let env = std::collections::BTreeMap::from([(
        "WARDEN_MASTER_KEY".to_owned(),
        "cli test master key".to_owned(),
    )]);
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    let mia = app.user_client(&admin, "mia@example.com").await;
    let e = mia
        .post("/api/v1/me/mfa/totp", json!({}))
        .await
        .assert_status(201)
        .json();
    let secret = e["secret"].as_str().unwrap().to_owned();
    let code = |app: &TestApp| {
        let now = (app.services().clock.now().millis() / 1000) as u64;
        warden_domain::identity::mfa::code_at(&secret, now).unwrap()
    };
    mia.post("/api/v1/me/mfa/totp/confirm", json!({"code": code(&app)}))
        .await
        .assert_status(200);
    app.clock.advance_secs(30);
    let ctl = Ctl::new(&app);
    // No code on a non-interactive input: asked, none given, nothing saved.
    let r = ctl.login("mia@example.com", USER_PASSWORD).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(!ctl.config.exists());
    let r = ctl
        .run_with(
            &[
                "login",
                "--email",
                "mia@example.com",
                "--password-stdin",
                "--mfa-code",
                "000000",
            ],
            Some(&format!("{USER_PASSWORD}\n")),
            None,
        )
        .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("invalid_code"), "{}", r.stderr);
    assert!(!ctl.config.exists());
    app.clock.advance_secs(30);
    // From the environment, out of the process list.
    let r = ctl
        .run_env(
            &["login", "--email", "mia@example.com", "--password-stdin"],
            Some(&format!("{USER_PASSWORD}\n")),
            None,
            &[("WARDEN_MFA_CODE", &code(&app))],
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(ctl.ok(&["whoami"]).await.contains("mia@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_installs_the_build_warden_serves_once_its_digest_matches() {
    let Some((os, arch)) = warden_domain::kubeconfig::this_platform() else {
        return;
    };
    if os == "windows" {
        return;
    }
    let builds = tempfile::tempdir().unwrap();
    let env = std::collections::BTreeMap::from([(
        "WARDEN_CLI_DIR".to_owned(),
        builds.path().display().to_string(),
    )]);
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    let key = admin.create_api_key(json!({"name": "upgrade test"})).await;
    let mut ctl = Ctl::new(&app);
    let bin_dir = ctl.dir().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    ctl.bin = bin_dir.join("wardenctl");
    std::fs::copy(env!("CARGO_BIN_EXE_wardenctl"), &ctl.bin).unwrap();
    let original = std::fs::read(&ctl.bin).unwrap();
    let unchanged = |ctl: &Ctl| {
        assert!(
            std::fs::read(&ctl.bin).unwrap() == original,
            "the binary was replaced"
        )
    };

    // Not signed in: refused, nothing replaced.
    let r = ctl.run(&["upgrade"]).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    unchanged(&ctl);

    // Warden serves no build for this platform yet.
    let r = ctl.run_with(&["upgrade"], None, Some(&key)).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("serves no wardenctl build for {os}-{arch}")),
        "{}",
        r.stderr
    );
    unchanged(&ctl);

    // It does now: --check only says so.
    let served = "#!/bin/sh\necho the upgraded wardenctl\n";
    std::fs::write(builds.path().join(format!("wardenctl-{os}-{arch}")), served).unwrap();
    let r = ctl
        .run_with(&["upgrade", "--check"], None, Some(&key))
        .await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("serves another wardenctl"),
        "{}",
        r.stdout
    );
    unchanged(&ctl);

    // A file that is not what Warden lists (here: changed in place, same size and time, so
    // that the listed digest is the old one) replaces nothing.
    let path = builds.path().join(format!("wardenctl-{os}-{arch}"));
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let forged = served.replace("upgraded", "forged!!");
    assert_eq!(forged.len(), served.len());
    let rewrite = |text: &str| {
        std::fs::write(&path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    rewrite(&forged);
    let r = ctl.run_with(&["upgrade"], None, Some(&key)).await;
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("nothing was replaced"), "{}", r.stderr);
    unchanged(&ctl);
    rewrite(served);

    // The upgrade replaces the binary with the served build, executable, and leaves nothing else.
    let r = ctl.run_with(&["upgrade"], None, Some(&key)).await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("wardenctl upgraded"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&ctl.bin).unwrap(), served);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ctl.bin).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");
        assert_eq!(mode & 0o022, 0, "writable by nobody else: {mode:o}");
    }
    let left: Vec<_> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["wardenctl"]);
    let out = std::process::Command::new(&ctl.bin).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the upgraded wardenctl\n"
    );
}

/// Whatever answers at the Warden URL cannot redirect wardenctl's password (or key) elsewhere:
/// a redirect is an error in words, and nothing reaches where it points.
#[tokio::test]
async fn wardenctl_does_not_follow_redirects_with_credentials() {
    use tokio::io::AsyncReadExt;
    let thief = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let thief_addr = thief.local_addr().unwrap();
    let stolen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = stolen.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = thief.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = front.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{thief_addr}/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ctl = Ctl {
        url: format!("http://{front_addr}"),
        config: dir.path().join("wardenctl.json"),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_wardenctl")),
        _dir: dir,
    };
    let r = ctl.login("admin@warden.local", "the password").await;
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("redirect"), "{}", r.stderr);
    let r = ctl
        .run_with(&["get", "projects"], None, Some("wdn_not_a_real_key"))
        .await;
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(stolen.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A key saved without its id (by hand, or by an older wardenctl) is still revoked at
/// logout, found by its prefix; a key that had already ended is not said to be revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_a_key_saved_without_its_id_and_says_what_it_did() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    app.user_client(&admin, "sam@example.com").await;
    let ctl = Ctl::new(&app);
    let r = ctl.login("sam@example.com", USER_PASSWORD).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut saved = ctl.saved();
    let secret = saved["api_key"].as_str().unwrap().to_owned();
    saved.as_object_mut().unwrap().remove("api_key_id");
    std::fs::write(&ctl.config, serde_json::to_vec(&saved).unwrap()).unwrap();
    let r = ctl.run(&["logout"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("the API key is revoked"), "{}", r.stderr);
    let r = ctl.run_with(&["whoami"], None, Some(&secret)).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    // Saved again, already revoked: signed out, not "revoked" again.
    std::fs::write(&ctl.config, serde_json::to_vec(&saved).unwrap()).unwrap();
    let r = ctl.run(&["logout"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("is revoked"), "{}", r.stderr);
    assert!(r.stderr.contains("had already ended"), "{}", r.stderr);
}
