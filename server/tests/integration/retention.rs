//! Audit retention: the organization setting, the batched deletion that keeps the chain
//! verifiable from a signed checkpoint, and what verification refuses afterwards.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Statement,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use warden_domain::audit::retention::{self, CheckpointKey};
use warden_domain::audit::{
    verify_chain_with, Actor, AuditEvent, AuditKind, ChainStatus, Outcome, SessionType,
};
use warden_domain::entities::{audit_checkpoints, audit_events};
use warden_server::testing::{Client, TestApp};

const MASTER_KEY: &str = "retention test master key";
const DAY_SECS: i64 = 86_400;

fn master_key_env() -> BTreeMap<String, String> {
    BTreeMap::from([("WARDEN_MASTER_KEY".to_owned(), MASTER_KEY.to_owned())])
}

fn event(n: usize) -> AuditEvent {
    AuditEvent::new(
        AuditKind::KubeApi,
        Actor::System,
        SessionType::Cli,
        "kube.get",
        Outcome::Allowed,
    )
    .resource("pods", format!("pod-{n}"))
}

/// An app with `old` events written 10 days ago (besides those of its start and sign-in), then
/// `new` events, with a retention of 7 days: returns the ids of the new events.
async fn aged_app(old: usize, new: usize) -> (TestApp, Client, Vec<String>) {
    aged_app_with(master_key_env(), old, new).await
}

async fn aged_app_with(
    env: BTreeMap<String, String>,
    old: usize,
    new: usize,
) -> (TestApp, Client, Vec<String>) {
    let mut env = env;
    // Retention shorter than the default floor, to age events by days.
    env.insert("WARDEN_AUDIT_RETENTION_MIN_DAYS".to_owned(), "1".to_owned());
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    let svc = app.services().clone();
    for n in 0..old {
        svc.audit.record(event(n)).await.unwrap();
    }
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 7}))
        .await
        .assert_status(200);
    app.clock.advance_secs(10 * DAY_SECS);
    let mut ids = Vec::new();
    for n in 0..new {
        let e = event(1000 + n);
        ids.push(e.id.to_string());
        svc.audit.record(e).await.unwrap();
    }
    (app, admin, ids)
}

fn key(app: &TestApp) -> &CheckpointKey {
    app.services().retention.key().expect("a checkpoint key")
}

async fn verify(app: &TestApp) -> ChainStatus {
    verify_chain_with(&app.services().db, Some(key(app)))
        .await
        .unwrap()
}

fn warden_verify(database_url: &str, master_key: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    warden_verify_in(database_url, dir.path(), Some(master_key))
}

fn warden_verify_in(
    database_url: &str,
    data_dir: &std::path::Path,
    master_key: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(["audit", "verify"])
        .env("WARDEN_DATABASE_URL", database_url)
        .env("WARDEN_DATA_DIR", data_dir)
        .env("WARDEN_LOG", "error");
    if let Some(k) = master_key {
        cmd.env("WARDEN_MASTER_KEY", k);
    }
    cmd.output().expect("run warden")
}

async fn exec(app: &TestApp, sql: &str) {
    let db = &app.services().db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn the_retention_setting_is_validated_and_clearable() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let s = admin
        .get("/api/v1/settings")
        .await
        .assert_status(200)
        .json();
    assert!(
        s["audit_retention_days"].is_null(),
        "keep forever by default: {s}"
    );
    // Below the deployment's floor (WARDEN_AUDIT_RETENTION_MIN_DAYS, 30 by default): one
    // administrator cannot erase the last month from the console.
    let r = admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 29}))
        .await
        .assert_status(422)
        .json();
    assert!(
        r["error"]["fields"]["audit_retention_days"]
            .as_str()
            .unwrap()
            .contains("at least 30 days"),
        "{r}"
    );
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 30}))
        .await
        .assert_status(200);
    for bad in [json!(0), json!(-1), json!(36_501)] {
        let r = admin
            .patch("/api/v1/settings", json!({ "audit_retention_days": bad }))
            .await
            .assert_status(422);
        assert!(
            r.json()["error"]["fields"]["audit_retention_days"].is_string(),
            "{}",
            r.json()
        );
    }
    let s = admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 36_500}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["audit_retention_days"], 36_500);
    // Absent: unchanged; null: keep forever again.
    let s = admin
        .patch("/api/v1/settings", json!({"lockout_threshold": 6}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["audit_retention_days"], 36_500);
    let s = admin
        .patch("/api/v1/settings", json!({"audit_retention_days": null}))
        .await
        .assert_status(200)
        .json();
    assert!(s["audit_retention_days"].is_null(), "{s}");
    // The console form: a number sets it, an empty field keeps events forever, 0 is refused.
    let page = admin.get("/settings").await.assert_status(200);
    assert!(
        page.body.contains("name=\"audit_retention_days\""),
        "the settings form has the field"
    );
    let form = |days: &'static str| {
        vec![
            ("organization_name", "Warden"),
            ("session_idle_minutes", "30"),
            ("session_absolute_hours", "12"),
            ("lockout_threshold", "5"),
            ("lockout_window_minutes", "15"),
            ("lockout_minutes", "15"),
            ("mfa_policy", "nobody"),
            ("audit_retention_days", days),
        ]
    };
    admin.post_form("/sfn/update_settings", &form("90")).await;
    let s = admin.get("/api/v1/settings").await.json();
    assert_eq!(s["audit_retention_days"], 90);
    let r = admin.post_form("/sfn/update_settings", &form("0")).await;
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .contains("err.audit_retention_days"),
        "{:?}",
        r.headers
    );
    admin.post_form("/sfn/update_settings", &form("")).await;
    let s = admin.get("/api/v1/settings").await.json();
    assert!(s["audit_retention_days"].is_null(), "{s}");

    // Off: a run deletes nothing.
    app.clock.advance_secs(400 * DAY_SECS);
    assert_eq!(retention::run(app.services()).await.unwrap(), None);
}

#[tokio::test]
async fn retention_deletes_old_events_in_batches_and_verify_still_passes() {
    let (app, _admin, new_ids) = aged_app(25, 5).await;
    let svc = app.services().clone();
    let db = &svc.db;
    let now = svc.clock.now().millis();
    let cutoff = now - 7 * DAY_SECS * 1000;
    let old = audit_events::Entity::find()
        .filter(audit_events::Column::At.lt(cutoff))
        .count(db)
        .await
        .unwrap();
    assert!(old > 25, "{old}");
    // Two terminal recordings: one begun before the cutoff (it goes with its events), one
    // after (it stays).
    use warden_domain::recordings::store;
    for (id, started) in [("rec-old", cutoff - 1), ("rec-new", cutoff + 1)] {
        for seq in 0..3 {
            store::append(
                db,
                None,
                id,
                seq,
                started,
                b"[0.1, \"o\", \"x\"]\n".to_vec(),
            )
            .await
            .unwrap();
        }
    }

    let run = retention::run_batched(&svc, 10)
        .await
        .unwrap()
        .expect("a run");
    assert_eq!(run.deleted, old);
    assert_eq!(run.recordings_deleted, 3, "{run:?}");
    assert!(store::page(db, None, "rec-old", -1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store::page(db, None, "rec-new", -1, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(run.batches >= 3, "{run:?}");
    assert_eq!(run.cutoff, cutoff);
    let left_old = audit_events::Entity::find()
        .filter(audit_events::Column::At.lt(cutoff))
        .count(db)
        .await
        .unwrap();
    assert_eq!(left_old, 0);
    for id in &new_ids {
        assert!(
            audit_events::Entity::find()
                .filter(audit_events::Column::Id.eq(id.as_str()))
                .one(db)
                .await
                .unwrap()
                .is_some(),
            "the newer event {id} is kept"
        );
    }
    let first = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(first.seq), run.chain_start_seq);
    let checkpoints = retention::checkpoints(db).await.unwrap();
    assert_eq!(checkpoints.len() as u32, run.batches);
    assert_eq!(checkpoints.last().unwrap().seq, run.checkpoint_seq);
    assert_eq!(checkpoints.last().unwrap().hash, first.prev_hash);

    // The run is audited: how many, and where the chain now begins.
    let ev = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("audit.retention"))
        .one(db)
        .await
        .unwrap()
        .expect("the run's event");
    let details: serde_json::Value = serde_json::from_str(&ev.details).unwrap();
    assert_eq!(details["deleted"], run.deleted);
    assert_eq!(details["checkpoint_seq"], run.checkpoint_seq);
    assert_eq!(details["chain_start_seq"], first.seq);
    assert_eq!(details["retention_days"], 7);

    match verify(&app).await {
        ChainStatus::Intact { rows } => {
            assert_eq!(rows, audit_events::Entity::find().count(db).await.unwrap())
        }
        broken => panic!("{broken:?}"),
    }
    let out = warden_verify(&app.database_url, MASTER_KEY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("audit log intact"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checkpoint"), "{stdout}");
    // The master key decides: another one cannot vouch for the checkpoints.
    let out = warden_verify(&app.database_url, "another master key");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT verified") && err.contains("data key") || err.contains("forged"),
        "{err}"
    );

    // Nothing older is left: the next run does nothing and writes nothing.
    let before = audit_events::Entity::find().count(db).await.unwrap();
    assert_eq!(retention::run_batched(&svc, 10).await.unwrap(), None);
    assert_eq!(
        audit_events::Entity::find().count(db).await.unwrap(),
        before
    );

    // Later, the next run continues from the previous checkpoint and verification follows.
    app.clock.advance_secs(30 * DAY_SECS);
    svc.audit.record(event(9999)).await.unwrap();
    let second = retention::run_batched(&svc, 1000)
        .await
        .unwrap()
        .expect("a second run");
    assert_eq!(second.deleted, before);
    assert_eq!(second.batches, 1);
    assert!(matches!(verify(&app).await, ChainStatus::Intact { .. }));
}

#[tokio::test]
async fn after_retention_tampering_and_forged_checkpoints_are_found() {
    let (app, _admin, _) = aged_app(12, 3).await;
    let svc = app.services().clone();
    let db = &svc.db;
    // A copy of the last row retention will delete, to bring back later.
    let doomed = audit_events::Entity::find()
        .filter(audit_events::Column::At.lt(svc.clock.now().millis() - 7 * DAY_SECS * 1000))
        .order_by_desc(audit_events::Column::Seq)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let run = retention::run_batched(&svc, 5).await.unwrap().unwrap();
    assert!(matches!(verify(&app).await, ChainStatus::Intact { .. }));

    // Without the key, checkpoints cannot be trusted: verification says so.
    assert!(verify_chain_with(db, None).await.is_err());

    // A retained row edited.
    let start = run.chain_start_seq.unwrap();
    exec(
        &app,
        &format!("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = {start}"),
    )
    .await;
    match verify(&app).await {
        ChainStatus::Broken { seq, .. } => assert_eq!(seq, start),
        ok => panic!("an edited row passed: {ok:?}"),
    }
    exec(
        &app,
        &format!("UPDATE audit_events SET reason = NULL WHERE seq = {start}"),
    )
    .await;
    assert!(matches!(verify(&app).await, ChainStatus::Intact { .. }));

    // A deleted row brought back altered, before the checkpoint.
    let mut altered = doomed.clone();
    altered.reason = Some("rewritten history".into());
    audit_events::ActiveModel::from(altered)
        .insert(db)
        .await
        .unwrap();
    match verify(&app).await {
        ChainStatus::Broken { .. } => {}
        ok => panic!("a reappeared, altered row passed: {ok:?}"),
    }
    audit_events::Entity::delete_by_id(doomed.seq)
        .exec(db)
        .await
        .unwrap();
    assert!(matches!(verify(&app).await, ChainStatus::Intact { .. }));

    // Someone with database access deletes the first retained row and moves the checkpoint to
    // hide it: the checkpoint's signature no longer matches.
    let first = audit_events::Entity::find_by_id(start)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    audit_events::Entity::delete_by_id(start)
        .exec(db)
        .await
        .unwrap();
    match verify(&app).await {
        ChainStatus::Broken { problem, .. } => {
            assert!(problem.contains("checkpoint"), "{problem}")
        }
        ok => panic!("a deleted retained row passed: {ok:?}"),
    }
    // Without the key, a forger can only write a MAC of the right shape.
    let forged_mac = "ab".repeat(32);
    audit_checkpoints::ActiveModel::from(audit_checkpoints::Model {
        seq: first.seq,
        hash: first.hash.clone(),
        deleted: 1,
        at: svc.clock.now().millis(),
        mac: forged_mac,
    })
    .insert(db)
    .await
    .unwrap();
    match verify(&app).await {
        ChainStatus::Broken { problem, .. } => assert!(problem.contains("forged"), "{problem}"),
        ok => panic!("a forged checkpoint passed: {ok:?}"),
    }
    let out = warden_verify(&app.database_url, MASTER_KEY);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TAMPERED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting every checkpoint does not help either: the chain then starts mid-air.
    exec(&app, "DELETE FROM audit_checkpoints").await;
    assert!(matches!(verify(&app).await, ChainStatus::Broken { .. }));
}

/// Without a master key, checkpoints are signed with a key generated into the data directory:
/// `warden audit verify` with that directory proves the chain, without it it says what is
/// missing.
#[tokio::test]
async fn without_a_master_key_the_data_directory_key_signs_checkpoints() {
    let (app, _admin, _) = aged_app_with(BTreeMap::new(), 3, 2).await;
    let data_dir = app.state.config.data_dir.clone();
    let key_file = data_dir.join(warden_server::startup::CHECKPOINT_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    retention::run(app.services())
        .await
        .unwrap()
        .expect("a run");
    assert!(matches!(verify(&app).await, ChainStatus::Intact { .. }));
    let out = warden_verify_in(&app.database_url, &data_dir, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let out = warden_verify_in(&app.database_url, elsewhere.path(), None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit-checkpoint.key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's way from the generated key to an explicit master key
/// (`WARDEN_MASTER_KEY_FILE` at the generated `master.key`): at the first start with it, what
/// the data directory's `audit-checkpoint.key` signed (checkpoints, seals, the witness) is
/// signed again with the master key's, audited, and the file retired. The log then verifies
/// with the master key alone (a replica without this data directory, `warden audit verify`),
/// and a MAC of the old key (an old copy of the file) is a forgery again.
#[tokio::test]
async fn moving_to_an_explicit_master_key_keeps_earlier_checkpoints_and_seals() {
    let dir = tempfile::tempdir().unwrap();
    let db = warden_server::testing::fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let floor = BTreeMap::from([("WARDEN_AUDIT_RETENTION_MIN_DAYS".to_owned(), "1".to_owned())]);
    let (mut first, admin) = TestApp::spawn_on_data_dir_with(&db, &data, floor.clone())
        .await
        .with_admin()
        .await;
    for n in 0..3 {
        first.services().audit.record(event(n)).await.unwrap();
    }
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 7}))
        .await
        .assert_status(200);
    first.clock.advance_secs(10 * DAY_SECS);
    first.services().audit.record(event(1000)).await.unwrap();
    retention::run(first.services())
        .await
        .unwrap()
        .expect("a run");
    warden_domain::audit::seals::seal(first.services())
        .await
        .unwrap();
    assert!(matches!(verify(&first).await, ChainStatus::Intact { .. }));
    let old_file = data.join(warden_server::startup::CHECKPOINT_KEY_FILE);
    assert!(old_file.exists());
    let old_mac = retention::checkpoints(&first.services().db).await.unwrap()[0]
        .mac
        .clone();
    first.keep_database();
    drop(first);

    let master = data.join(warden_server::startup::MASTER_KEY_FILE);
    let master_key = std::fs::read_to_string(&master).unwrap();
    let mut env = floor;
    env.insert(
        "WARDEN_MASTER_KEY_FILE".to_owned(),
        master.display().to_string(),
    );
    let mut app = TestApp::spawn_on_data_dir_with(&db, &data, env).await;
    app.drop_database_on_exit();
    assert!(!old_file.exists(), "the earlier key was not retired");
    assert!(data
        .join(warden_server::startup::RETIRED_CHECKPOINT_KEY_FILE)
        .exists());
    // The seal outside the database was signed again too, and is taken.
    assert!(app.services().retention.last_seal().is_some());
    assert!(
        matches!(verify(&app).await, ChainStatus::Intact { .. }),
        "{:?}",
        verify(&app).await
    );
    let resigned: i64 = crate::support::sql_i64(
        &app.services().db,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'audit.checkpoints.signed_again'",
    )
    .await;
    assert_eq!(resigned, 1);
    // The master key alone verifies the log: with this data directory, and without it.
    let elsewhere = tempfile::tempdir().unwrap();
    for data_dir in [data.as_path(), elsewhere.path()] {
        let out = warden_verify_in(&app.database_url, data_dir, Some(master_key.trim()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A checkpoint made now is signed with the master key's.
    app.clock.advance_secs(30 * DAY_SECS);
    app.services().audit.record(event(2000)).await.unwrap();
    retention::run(app.services())
        .await
        .unwrap()
        .expect("a run");
    let checkpoints = retention::checkpoints(&app.services().db).await.unwrap();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    // Signed with the key derived from the data key that the master key opens.
    let data_key = warden_server::startup::data_key(
        &app.services().db,
        &warden_domain::secrets::Secret::new(master_key.trim()),
    )
    .await
    .unwrap();
    assert!(checkpoints
        .iter()
        .all(|c| CheckpointKey::from_master(&data_key).verifies(c)));
    assert!(matches!(verify(&app).await, ChainStatus::Intact { .. }));
    // What the old key signs is no longer taken.
    exec(
        &app,
        &format!(
            "UPDATE audit_checkpoints SET mac = '{old_mac}' WHERE seq = {}",
            checkpoints[0].seq
        ),
    )
    .await;
    assert!(matches!(verify(&app).await, ChainStatus::Broken { .. }));
}
