//! The `warden` binary's subcommands, run as a user would.

use crate::support::warden;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use std::process::Command;
use warden_server::testing::{TestApp, ADMIN_EMAIL};

#[tokio::test]
async fn audit_verify_passes_then_names_the_edited_row() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    c.login("nobody@example.com", "wrong password!!").await;
    let out = warden(&app.database_url, &["audit", "verify"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact"));
    // Sealed, and verified where there is no key: intact, and said not to be fully checked.
    warden_domain::audit::seals::seal(app.services())
        .await
        .unwrap();
    let out = warden(&app.database_url, &["audit", "verify"]).await;
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seals' signatures were NOT checked"), "{err}");

    let db = &app.services().db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT MIN(seq) AS s FROM audit_events WHERE outcome = 'denied'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let seq: i64 = row.try_get("", "s").unwrap();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE audit_events SET outcome = 'allowed' WHERE seq = {seq}"),
    ))
    .await
    .unwrap();
    let out = warden(&app.database_url, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("seq={seq}")), "{err}");
}

#[tokio::test]
async fn reset_password_prints_a_one_time_link() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let epoch = app.services().policy.epoch();
    let out = warden(&app.database_url, &["admin", "reset-password", ADMIN_EMAIL]).await;
    // On PostgreSQL the running servers hear of it at once (their open terminals and streams
    // are checked again now, not at the next minute's check).
    if app.database_url.starts_with("postgres") {
        let start = std::time::Instant::now();
        while app.services().policy.epoch() == epoch {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(3),
                "the running server did not hear of the reset"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let link = stdout
        .lines()
        .find(|l| l.contains("/set-password?token="))
        .expect("a link")
        .trim()
        .to_owned();
    let token = link.split("token=").nth(1).unwrap();
    // The old session ended; the link sets a new password.
    c.get("/api/v1/me").await.assert_status(401);
    let r = c
        .post_form(
            "/sfn/set_password",
            &[
                ("token", token),
                ("new_password", "from the reset link"),
                ("confirm_password", "from the reset link"),
            ],
        )
        .await;
    assert_eq!(r.headers["location"], "/login?password_set=1");
    c.login(ADMIN_EMAIL, "from the reset link")
        .await
        .assert_status(200);
    let out = warden(
        &app.database_url,
        &["admin", "reset-password", "ghost@example.com"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user"));
}

/// The operator's reset is for an account that may be in someone else's hands: it ends the
/// API keys and kubeconfigs of whoever held it (in the reset's transaction, audited as
/// Warden's), so a key made with the stolen password does not come back once the owner uses
/// the link. `--keep-api-keys` keeps them, for a forgotten password.
#[tokio::test]
async fn the_operators_reset_ends_what_outlives_the_password() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let sally = app.user_client(&admin, "sally@example.com").await;
    let taken = sally.create_api_key(json!({"name": "the thief's"})).await;
    let bare = app.client_without_origin();
    bare.get_bearer("/api/v1/me", &taken)
        .await
        .assert_status(200);
    let out = warden(
        &app.database_url,
        &["admin", "reset-password", "sally@example.com"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("API keys revoked: 1."), "{stdout}");
    assert!(
        stdout.contains("Kubeconfig credentials revoked: 0."),
        "{stdout}"
    );
    let token = stdout
        .lines()
        .find_map(|l| l.split("token=").nth(1))
        .expect("a link")
        .trim()
        .to_owned();
    bare.get_bearer("/api/v1/me", &taken)
        .await
        .assert_status(401);
    assert!(crate::auth::set_password_with_link(&app, &token, "sally's own new password").await);
    bare.get_bearer("/api/v1/me", &taken)
        .await
        .assert_status(401);
    let events = admin
        .get("/api/v1/audit/events?limit=50")
        .await
        .assert_status(200)
        .json();
    for action in [
        "api_key.revoke_all",
        "kubeconfig.revoke",
        "user.reset_password",
    ] {
        assert!(
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action && e["actor"] == "system"),
            "{action}: {events}"
        );
    }
    // Run by a `warden` of another release than the database's schema: refused, nothing
    // migrated (an incident's command never upgrades the schema under running servers).
    {
        use warden_migrations::MigratorTrait;
        let db = &app.services().db;
        warden_migrations::Migrator::down(db, Some(1))
            .await
            .unwrap();
        let out = warden(
            &app.database_url,
            &["admin", "reset-password", "sally@example.com"],
        )
        .await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("schema is older than this"), "{err}");
        assert_eq!(
            warden_migrations::Migrator::get_pending_migrations_read_only(db)
                .await
                .unwrap()
                .len(),
            1,
            "the command migrated"
        );
        warden_migrations::Migrator::up(db, None).await.unwrap();
    }
    // A forgotten password: the key is kept when asked.
    let sally = app.client();
    sally
        .login("sally@example.com", "sally's own new password")
        .await
        .assert_status(200);
    let kept = sally.create_api_key(json!({"name": "laptop"})).await;
    let out = warden(
        &app.database_url,
        &[
            "admin",
            "reset-password",
            "sally@example.com",
            "--keep-api-keys",
            "--keep-kubeconfigs",
        ],
    )
    .await;
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("API keys kept"), "{stdout}");
    bare.get_bearer("/api/v1/me", &kept)
        .await
        .assert_status(200);
}

/// A taken account's kubeconfig, in use (its admission cached by the gateway) and holding a
/// watch open, is cut by the operator's reset run beside the server, on SQLite as on
/// PostgreSQL: the reset moves the shared epoch in its transaction and the server re-reads it.
#[tokio::test]
async fn the_operators_reset_cuts_a_kubeconfig_in_use() {
    use std::time::{Duration, Instant};
    use warden_server::gateway::testkit::Kubectl;
    let (app, admin) = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_REPLICA_EPOCH_RECHECK_MS".to_owned(),
        "300".to_owned(),
    )]))
    .await
    .with_admin()
    .await;
    admin
        .post("/api/v1/projects", json!({"name": "alpha"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), "alpha-1", "alpha", &[], &["team"])
        .await;
    let email = "taken@example.com";
    let user = app.user_client(&admin, email).await;
    admin
        .bind_user(email, "NAMESPACE_READ_ONLY", "alpha", &["team"])
        .await;
    let kubeconfig = user.get("/api/v1/kubeconfig").await.assert_status(200).body;
    let kubectl = Kubectl::new(&dir.path().join("taken"), &kubeconfig);
    kubectl
        .run(&["get", "configmaps", "-n", "team"])
        .await
        .expect_ok();
    let _watch = kubectl
        .command(&["get", "configmaps", "-n", "team", "-w", "-o", "name"])
        .spawn()
        .expect("a watch");
    let opened = Instant::now();
    while app.gateway().live.len() == 0 {
        assert!(
            opened.elapsed() < Duration::from_secs(20),
            "no watch opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = warden(&app.database_url, &["admin", "reset-password", email]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Kubeconfig credentials revoked: 1."));
    let reset = Instant::now();
    loop {
        let out = kubectl.run(&["get", "configmaps", "-n", "team"]).await;
        if !out.ok() {
            assert!(
                out.stderr.contains("Unauthorized") || out.stderr.contains("revoked"),
                "{}",
                out.stderr
            );
            break;
        }
        assert!(
            reset.elapsed() < Duration::from_secs(10),
            "the revoked kubeconfig still works after the reset"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while app.gateway().live.len() > 0 {
        assert!(
            reset.elapsed() < Duration::from_secs(10),
            "the watch outlived the reset"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unreachable_database_is_a_clear_error_not_a_panic() {
    let out = warden(
        "postgres://warden:secret-pw@127.0.0.1:1/warden",
        &["migrate"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(
        !err.contains("secret-pw"),
        "the password must not be printed: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_configuration_is_reported_with_its_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("migrate")
        .env("WARDEN_HTTP_ADDR", "not an address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_HTTP_ADDR"));
}

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--help")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "migrate", "audit", "admin"] {
        assert!(s.contains(sub), "{s}");
    }
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        let out = warden(&app.database_url, &["migrate"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
