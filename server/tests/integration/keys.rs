//! The master key and the data key: a new database gets a data key of its own, sealed with
//! the master key; `warden keys rotate` seals it with a new master key, after which the old
//! one starts nothing and opens nothing, while what was sealed and signed before (second
//! factors, the audit log's seals) keeps working, and running servers go on. Runs on SQLite,
//! and on PostgreSQL when WARDEN_TEST_DATABASE_URL is set.

use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Command, Output};
use warden_domain::secrets::Secret;
use warden_server::testing::{Client, TestApp};

use crate::mfa::{code, enrol, password_step, EMAIL};

const FIRST: &str = "the-first-master-key-of-this-test-0123456789";
const SECOND: &str = "the-second-master-key-of-this-test-987654321";

/// `warden <args>` on `database_url` and `data_dir`, with `env` added.
fn warden(
    database_url: &str,
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WARDEN_DATABASE_URL", database_url)
        .env("WARDEN_DATA_DIR", data_dir)
        .env("WARDEN_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run warden")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `warden serve` would say starting with `env` on the database (it must refuse).
async fn refused_start(env: BTreeMap<String, String>) -> String {
    let config = warden_server::config::Config::from_source(&env).expect("config");
    let clock: warden_domain::clock::SharedClock =
        std::sync::Arc::new(warden_domain::clock::SystemClock);
    match warden_server::startup::prepare(config, clock).await {
        Ok(_) => panic!("Warden started with a master key that no longer opens its data key"),
        Err(e) => format!("{e:#}"),
    }
}

/// The key check row as stored.
async fn key_check(app: &TestApp) -> (String, Option<String>) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = &app.services().db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT sealed, data_key FROM key_check WHERE id = 1",
        ))
        .await
        .unwrap()
        .expect("a key check");
    (
        row.try_get("", "sealed").unwrap(),
        row.try_get("", "data_key").unwrap(),
    )
}

/// The user of [`EMAIL`] signs in with their password and a code of the authenticator
/// whose secret is `secret`.
async fn signs_in_with_a_code(app: &TestApp, secret: &str) {
    let c = password_step(app).await;
    app.clock.advance_secs(30);
    c.post("/api/v1/auth/mfa", json!({"code": code(app, secret, 0)}))
        .await
        .assert_status(200);
    c.get("/api/v1/me").await.assert_status(200);
}

async fn rotations(admin: &Client) -> Vec<serde_json::Value> {
    admin
        .get("/api/v1/audit/events?action=keys.master_rotated")
        .await
        .assert_status(200)
        .json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_master_key_rotates_and_the_old_one_opens_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = warden_server::testing::fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let with_key = |key: &str| BTreeMap::from([("WARDEN_MASTER_KEY".to_owned(), key.to_owned())]);

    // A new database: its data key is its own, not the master key, sealed with it.
    let (mut app, admin) = TestApp::spawn_on_data_dir_with(&db, &data, with_key(FIRST))
        .await
        .with_admin()
        .await;
    let (check, sealed_data_key) = key_check(&app).await;
    assert!(
        sealed_data_key
            .as_deref()
            .is_some_and(warden_domain::secrets::Sealer::is_sealed),
        "{sealed_data_key:?}"
    );
    let data_key = warden_server::startup::data_key(&app.services().db, &Secret::new(FIRST))
        .await
        .expect("the master key opens the data key");
    assert_ne!(data_key.expose(), FIRST);
    assert!(
        warden_domain::secrets::Sealer::new(&Secret::new(FIRST))
            .open("warden.key_check", &check)
            .is_err(),
        "the check is sealed with the data key, not the master key"
    );
    let mia = app.user_client(&admin, EMAIL).await;
    let (secret, _) = enrol(&app, &mia).await;
    signs_in_with_a_code(&app, &secret).await;

    // Refused, with nothing changed: no new key, a word for a key, the current key again, a
    // current key that is not this database's.
    let before = key_check(&app).await;
    let out = warden(
        &db,
        &data,
        &["keys", "rotate"],
        &[("WARDEN_MASTER_KEY", FIRST)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("WARDEN_NEW_MASTER_KEY"),
        "{}",
        said(&out)
    );
    let out = warden(
        &db,
        &data,
        &["keys", "rotate"],
        &[
            ("WARDEN_MASTER_KEY", FIRST),
            ("WARDEN_NEW_MASTER_KEY", "changeme"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("too short"), "{}", said(&out));
    let out = warden(
        &db,
        &data,
        &["keys", "rotate"],
        &[
            ("WARDEN_MASTER_KEY", FIRST),
            ("WARDEN_NEW_MASTER_KEY", FIRST),
        ],
    );
    assert!(!out.status.success());
    assert!(said(&out).contains("is the current one"), "{}", said(&out));
    let out = warden(
        &db,
        &data,
        &["keys", "rotate"],
        &[
            ("WARDEN_MASTER_KEY", "a-key-this-database-never-saw-0000"),
            ("WARDEN_NEW_MASTER_KEY", SECOND),
        ],
    );
    assert!(!out.status.success());
    assert!(
        said(&out).contains("does not open this database's data key"),
        "{}",
        said(&out)
    );
    assert_eq!(key_check(&app).await, before);
    assert!(rotations(&admin).await.is_empty());

    // The rotation, while this server runs (from a file, as a secret store mounts it).
    let new_key_file = dir.path().join("new-master-key");
    std::fs::write(&new_key_file, format!("{SECOND}\n")).unwrap();
    let out = warden(
        &db,
        &data,
        &["keys", "rotate"],
        &[
            ("WARDEN_MASTER_KEY", FIRST),
            ("WARDEN_NEW_MASTER_KEY_FILE", new_key_file.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(!said(&out).contains(SECOND) && !said(&out).contains(FIRST));
    let (check_now, sealed_now) = key_check(&app).await;
    assert_eq!(check_now, check, "what the data key seals is unchanged");
    assert_ne!(sealed_now, sealed_data_key);
    // The running server goes on: its second factors open, its audit log takes the event.
    signs_in_with_a_code(&app, &secret).await;
    let events = rotations(&admin).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "system");
    assert_eq!(events[0]["details"]["data_key_was_master"], false);
    assert!(!events[0].to_string().contains(FIRST) && !events[0].to_string().contains(SECOND));
    app.keep_database();
    drop(app);

    // The old key starts nothing and verifies nothing; the new one does both.
    let env = BTreeMap::from([
        ("WARDEN_DATABASE_URL".to_owned(), db.clone()),
        ("WARDEN_DATA_DIR".to_owned(), data.display().to_string()),
        ("WARDEN_MASTER_KEY".to_owned(), FIRST.to_owned()),
        ("WARDEN_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("WARDEN_GATEWAY_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    let err = refused_start(env).await;
    assert!(
        err.contains("is not the one this database's secrets were sealed with")
            && err.contains("warden keys rotate"),
        "{err}"
    );
    let out = warden(
        &db,
        &data,
        &["audit", "verify"],
        &[("WARDEN_MASTER_KEY", FIRST)],
    );
    assert!(!out.status.success(), "{}", said(&out));
    let out = warden(
        &db,
        &data,
        &["audit", "verify"],
        &[("WARDEN_MASTER_KEY", SECOND)],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("audit log intact"), "{}", said(&out));
    let mut app = TestApp::spawn_on_data_dir_with(&db, &data, with_key(SECOND)).await;
    app.drop_database_on_exit();
    // Past every code the apps before used (each starts its clock at the real time).
    app.clock.advance_secs(600);
    signs_in_with_a_code(&app, &secret).await;
    assert!(
        warden_server::startup::data_key(&app.services().db, &Secret::new(FIRST))
            .await
            .is_err()
    );
    assert_eq!(
        warden_server::startup::data_key(&app.services().db, &Secret::new(SECOND))
            .await
            .expect("the new key opens the data key")
            .expose(),
        data_key.expose()
    );
}

/// A database set up before data keys (its data key is its master key; here the generated
/// `master.key`): the rotation seals that key with the new one and says what it means; from
/// then on Warden starts only with the new key, and everything sealed before still opens.
#[tokio::test]
async fn a_database_from_before_data_keys_rotates_from_its_generated_key() {
    use sea_orm::{ConnectionTrait, Statement};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = warden_server::testing::fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let (mut app, admin) = TestApp::spawn_on_data_dir(&db, &data)
        .await
        .with_admin()
        .await;
    let generated = std::fs::read_to_string(data.join("master.key")).unwrap();
    let mia = app.user_client(&admin, EMAIL).await;
    // As an older release left it: the secret sealed with the generated key itself, the
    // check too, no data key.
    let (secret, _) = enrol(&app, &mia).await;
    let generated_key = Secret::new(generated.trim());
    let sealer = warden_domain::secrets::Sealer::new(&generated_key);
    let conn = &app.services().db;
    let user_id: String = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT user_id FROM user_mfa",
        ))
        .await
        .unwrap()
        .expect("an authenticator")
        .try_get("", "user_id")
        .unwrap();
    let old_seal = sealer.seal(&format!("user_mfa.secret:{user_id}"), secret.as_bytes());
    for sql in [
        format!("UPDATE user_mfa SET secret = '{old_seal}'"),
        format!(
            "UPDATE key_check SET data_key = NULL, sealed = '{}'",
            sealer.seal("warden.key_check", b"the key that seals Warden's secrets")
        ),
    ] {
        conn.execute_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .unwrap();
    }
    app.keep_database();
    drop(app);
    let mut app = TestApp::spawn_on_data_dir(&db, &data).await;
    app.clock.advance_secs(600);
    signs_in_with_a_code(&app, &secret).await;
    let admin = app.client();
    admin
        .login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);

    let out = warden(
        &db,
        &data,
        &["keys", "rotate"],
        &[("WARDEN_NEW_MASTER_KEY", SECOND)],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("before data keys"), "{}", said(&out));
    assert!(said(&out).contains("move "), "{}", said(&out));
    let (_, data_key) = key_check(&app).await;
    assert!(data_key.is_some());
    let events = rotations(&admin).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["details"]["data_key_was_master"], true);
    assert_eq!(events[0]["details"]["previous"], "generated");
    app.keep_database();
    drop(app);

    // The generated key starts nothing now; the new one does, and opens what it sealed.
    let env = BTreeMap::from([
        ("WARDEN_DATABASE_URL".to_owned(), db.clone()),
        ("WARDEN_DATA_DIR".to_owned(), data.display().to_string()),
        ("WARDEN_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("WARDEN_GATEWAY_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    let err = refused_start(env).await;
    assert!(err.contains("warden keys rotate"), "{err}");
    let mut app = TestApp::spawn_on_data_dir_with(
        &db,
        &data,
        BTreeMap::from([("WARDEN_MASTER_KEY".to_owned(), SECOND.to_owned())]),
    )
    .await;
    app.drop_database_on_exit();
    app.clock.advance_secs(1200);
    signs_in_with_a_code(&app, &secret).await;
}
