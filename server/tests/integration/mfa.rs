//! Multi-factor authentication (TOTP): enrolment, sign-in with a code, replay, the ±1 step
//! window, recovery codes, lockout and an administrator's reset. Runs on SQLite, and on
//! PostgreSQL when WARDEN_TEST_DATABASE_URL is set.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use warden_server::testing::{Client, Resp, TestApp, USER_PASSWORD};

pub(crate) const EMAIL: &str = "mia@example.com";

fn now_secs(app: &TestApp) -> u64 {
    (app.services().clock.now().millis() / 1000) as u64
}

pub(crate) fn code(app: &TestApp, secret: &str, offset_steps: i64) -> String {
    let at = now_secs(app) as i64 + offset_steps * 30;
    warden_domain::identity::mfa::code_at(secret, at as u64).expect("a code")
}

/// Enrol `c`'s user; returns the secret and the recovery codes.
pub(crate) async fn enrol(app: &TestApp, c: &Client) -> (String, Vec<String>) {
    let e = c
        .post("/api/v1/me/mfa/totp", json!({}))
        .await
        .assert_status(201)
        .json();
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(e["otpauth_url"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"), "{e}");
    // Nothing changes until a first code confirms it.
    assert_eq!(c.get("/api/v1/me/mfa").await.json()["enabled"], false);
    c.post("/api/v1/me/mfa/totp/confirm", json!({"code": "000000"}))
        .await
        .assert_status(422);
    let r = c
        .post(
            "/api/v1/me/mfa/totp/confirm",
            json!({"code": code(app, &secret, 0)}),
        )
        .await
        .assert_status(200)
        .json();
    let codes: Vec<String> = r["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let status = c.get("/api/v1/me/mfa").await.assert_status(200).json();
    assert_eq!(status, json!({"enabled": true, "recovery_codes_left": 10}));
    (secret, codes)
}

/// What the enrolment of `c`'s user answered about their API keys (after [`enrol`]): read
/// back from the audit event.
async fn keys_revoked_at_enrolment(admin: &Client, email: &str) -> Value {
    let items = audit(admin, "action=mfa.enrol&outcome=allowed", 1).await;
    let ev = items
        .iter()
        .find(|e| e["actor"] == email)
        .unwrap_or_else(|| panic!("no enrolment of {email}: {items:?}"));
    ev["details"]["api_keys_revoked"].clone()
}

/// A step-up with a fresh code (the clock moved on by a TOTP step first, so the code is not
/// the one used last), answered 204.
pub(crate) async fn step_up(app: &TestApp, c: &Client, secret: &str) {
    app.clock.advance_secs(30);
    c.post(
        "/api/v1/auth/step-up",
        json!({"code": code(app, secret, 0)}),
    )
    .await
    .assert_status(204);
}

pub(crate) async fn password_step(app: &TestApp) -> Client {
    let c = app.client();
    let r = c.login(EMAIL, USER_PASSWORD).await.assert_status(401);
    assert_eq!(r.error_code(), "mfa_required");
    // Not signed in yet.
    c.get("/api/v1/me").await.assert_status(401);
    c
}

/// The error code of opening a terminal (from our origin, without a WebSocket upgrade).
async fn terminal_refusal(app: &TestApp, c: &Client) -> String {
    let r = c
        .http
        .get(format!("{}/api/v1/terminal/ws?cluster=none", app.url))
        .header("origin", &app.url)
        .send()
        .await
        .expect("request");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn audit(admin: &Client, query: &str, min: usize) -> Vec<Value> {
    for _ in 0..100 {
        let items = admin
            .get(&format!("/api/v1/audit/events?{query}"))
            .await
            .assert_status(200)
            .json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if items.len() >= min {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {min} audit events for {query}");
}

#[tokio::test]
async fn totp_enrolment_sign_in_replay_window_and_recovery_codes() {
    let env = BTreeMap::from([(
        "WARDEN_MASTER_KEY".to_owned(),
        "mfa test master key".to_owned(),
    )]);
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    let mia = app.user_client(&admin, EMAIL).await;
    let (secret, recovery) = enrol(&app, &mia).await;
    // Enrolled once: a second enrolment is refused.
    mia.post("/api/v1/me/mfa/totp", json!({}))
        .await
        .assert_status(409);

    // The secret is sealed at rest.
    use sea_orm::{ConnectionTrait, Statement};
    let db = &app.services().db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT secret FROM user_mfa".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: String = row.try_get("", "secret").unwrap();
    assert!(stored.starts_with("warden-sealed:v1:") && !stored.contains(&secret));
    // Recovery codes are long, and stored keyed: a copy of the database alone cannot test
    // guesses against them (no plain SHA-256 of any code is there).
    let hashes: Vec<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT code_hash FROM mfa_recovery_codes".to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("", "code_hash").unwrap())
        .collect();
    assert_eq!(hashes.len(), 10);
    for code in &recovery {
        let plain: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        assert_eq!(plain.len(), 16, "{code}");
        let unkeyed = warden_domain::secrets::sha256_hex(plain.to_ascii_lowercase().as_bytes());
        assert!(!hashes.contains(&unkeyed), "{code}");
    }

    // The confirmation's code cannot sign in again (replay), the next step's can.
    let c = password_step(&app).await;
    let r = c
        .post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(401);
    assert_eq!(r.error_code(), "invalid_code");
    c.get("/api/v1/me").await.assert_status(401);
    app.clock.advance_secs(30);
    let pre = c.session_cookie();
    let me = c
        .post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(me["user"]["email"], EMAIL);
    assert_ne!(c.session_cookie(), pre, "the session id rotates at sign-in");
    c.get("/api/v1/me").await.assert_status(200);

    // ±1 step: the previous step's code passes (when not used yet), two steps back does not.
    app.clock.advance_secs(90);
    let c = password_step(&app).await;
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, -2)}))
        .await
        .assert_status(401);
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, -1)}))
        .await
        .assert_status(200);
    // The same step again does not pass; a later one does.
    let c = password_step(&app).await;
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, -1)}))
        .await
        .assert_status(401);
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(200);

    // A recovery code works once, in any case and with or without its dash.
    let c = password_step(&app).await;
    c.post(
        "/api/v1/auth/mfa",
        json!({"code": recovery[0].to_uppercase().replace('-', "")}),
    )
    .await
    .assert_status(200);
    let c = password_step(&app).await;
    c.post("/api/v1/auth/mfa", json!({"code": recovery[0]}))
        .await
        .assert_status(401);
    assert_eq!(
        c.get("/api/v1/me/mfa").await.status,
        401,
        "still not signed in"
    );
    assert_eq!(
        mia.get("/api/v1/me/mfa").await.json()["recovery_codes_left"],
        9
    );

    // A second step without a first one gets nowhere.
    app.client()
        .post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 1)}))
        .await
        .assert_status(401);

    // Audited with the method; no code in the audit log.
    let ev = audit(
        &admin,
        &format!("action=sign_in&actor={EMAIL}&outcome=allowed"),
        1,
    )
    .await;
    let methods: Vec<&str> = ev
        .iter()
        .filter(|e| e["action"] == "sign_in")
        .filter_map(|e| e["details"]["mfa"].as_str())
        .collect();
    assert!(
        methods.contains(&"totp") && methods.contains(&"recovery_code"),
        "{methods:?}"
    );
    let all = admin.get("/api/v1/audit/events?limit=500").await.body;
    assert!(!all.contains(&recovery[1]) && !all.contains(&secret));
}

#[tokio::test]
async fn wrong_codes_lock_the_account_and_an_admin_reset_removes_the_factor() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mia = app.user_client(&admin, EMAIL).await;
    let (secret, _) = enrol(&app, &mia).await;
    app.clock.advance_secs(30);

    let c = password_step(&app).await;
    for _ in 0..5 {
        c.post("/api/v1/auth/mfa", json!({"code": "123456"})).await;
    }
    // Locked: even the right code is refused now.
    let r = c
        .post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    c.get("/api/v1/me").await.assert_status(401);
    let ev = audit(
        &admin,
        &format!("action=sign_in&outcome=denied&actor={EMAIL}"),
        5,
    )
    .await;
    assert!(ev
        .iter()
        .any(|e| e["reason"].as_str().unwrap_or("").contains("second factor")));

    // Only administrators reset someone's second factor; the user then signs in with the
    // password alone, and the reset is audited.
    mia.delete(&format!("/api/v1/users/{EMAIL}/mfa"))
        .await
        .assert_status(403);
    admin
        .delete(&format!("/api/v1/users/{EMAIL}/mfa"))
        .await
        .assert_status(204);
    admin
        .delete(&format!("/api/v1/users/{EMAIL}/mfa"))
        .await
        .assert_status(404);
    audit(&admin, "action=user.mfa.reset", 1).await;
    app.clock.advance_secs(3600);
    app.client()
        .login(EMAIL, USER_PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn the_organization_policy_sends_who_must_enrol_to_enrolment() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .patch("/api/v1/settings", json!({"mfa_policy": "sometimes"}))
        .await
        .assert_status(422);
    let s = admin
        .patch("/api/v1/settings", json!({"mfa_policy": "admins"}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["mfa_policy"], "admins");

    // The administrator must enrol before anything else; the console sends them there.
    let r = admin.get("/api/v1/projects").await.assert_status(403);
    assert_eq!(r.error_code(), "mfa_enrolment_required");
    admin.get("/api/v1/me").await.assert_status(200);
    let r = admin.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/me/mfa");
    // A user without organization-wide rights is not asked.
    mia.get("/api/v1/projects").await.assert_status(200);

    enrol(&app, &admin).await;
    admin.get("/api/v1/projects").await.assert_status(200);

    // Everyone: now mia too.
    admin
        .patch("/api/v1/settings", json!({"mfa_policy": "everyone"}))
        .await
        .assert_status(200);
    let r = mia.get("/api/v1/projects").await.assert_status(403);
    assert_eq!(r.error_code(), "mfa_enrolment_required");
    enrol(&app, &mia).await;
    mia.get("/api/v1/projects").await.assert_status(200);
}

#[tokio::test]
async fn a_kubeconfig_or_terminal_for_a_role_that_writes_asks_for_a_fresh_second_factor() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": EMAIL}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201);
    let (secret, _) = enrol(&app, &mia).await;
    // Enrolling in this session did not prove a second factor at sign-in: a fresh one is due.
    let r = mia.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");

    // Signed in with a code: fresh for an hour.
    app.clock.advance_secs(30);
    let c = password_step(&app).await;
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(200);
    let r = c.get("/api/v1/kubeconfig").await;
    assert_ne!(r.error_code(), "step_up_required", "{}", r.body);
    // Past the step-up check (refused later: no WebSocket upgrade).
    assert_eq!(terminal_refusal(&app, &c).await, "invalid");

    // An hour later (the session kept alive), the kubeconfig and the terminal ask again.
    for _ in 0..3 {
        app.clock.advance_secs(1201);
        c.get("/api/v1/me").await.assert_status(200);
        admin.get("/api/v1/me").await.assert_status(200);
    }
    let r = c.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");
    assert_eq!(terminal_refusal(&app, &c).await, "step_up_required");
    c.post("/api/v1/auth/step-up", json!({"code": "000000"}))
        .await
        .assert_status(401);
    c.post(
        "/api/v1/auth/step-up",
        json!({"code": code(&app, &secret, 0)}),
    )
    .await
    .assert_status(204);
    let r = c.get("/api/v1/kubeconfig").await;
    assert_ne!(r.error_code(), "step_up_required", "{}", r.body);
    audit(&admin, "action=mfa.step_up&outcome=allowed", 1).await;

    // A role that only reads is not asked.
    admin
        .delete(&format!(
            "/api/v1/bindings/{}",
            admin.get("/api/v1/bindings").await.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["role"] == "NAMESPACE_ADMIN")
                .unwrap()["id"]
                .as_str()
                .unwrap()
        ))
        .await
        .assert_status(204);
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": EMAIL}, "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201);
    for _ in 0..3 {
        app.clock.advance_secs(1201);
        c.get("/api/v1/me").await.assert_status(200);
        admin.get("/api/v1/me").await.assert_status(200);
    }
    let r = c.get("/api/v1/kubeconfig").await;
    assert_ne!(r.error_code(), "step_up_required", "{}", r.body);
}

#[tokio::test]
async fn the_step_up_age_is_an_organization_setting() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let s = admin
        .get("/api/v1/settings")
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["step_up_max_age_minutes"], 60);
    for bad in [0, 1441] {
        let r = admin
            .patch("/api/v1/settings", json!({"step_up_max_age_minutes": bad}))
            .await
            .assert_status(422);
        assert!(
            r.json()["error"]["fields"]["step_up_max_age_minutes"].is_string(),
            "{}",
            r.body
        );
    }
    let s = admin
        .patch("/api/v1/settings", json!({"step_up_max_age_minutes": 5}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["step_up_max_age_minutes"], 5);
    audit(&admin, "action=settings.update", 1).await;

    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": EMAIL}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201);
    let (secret, _) = enrol(&app, &mia).await;
    app.clock.advance_secs(30);
    let c = password_step(&app).await;
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(200);
    let r = c.get("/api/v1/kubeconfig").await;
    assert_ne!(r.error_code(), "step_up_required", "{}", r.body);
    // Four minutes later: still fresh.
    app.clock.advance_secs(240);
    let r = c.get("/api/v1/kubeconfig").await;
    assert_ne!(r.error_code(), "step_up_required", "{}", r.body);
    // Past five minutes: asked again, though the hour of the default is far.
    app.clock.advance_secs(61);
    let r = c.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");
    assert_eq!(terminal_refusal(&app, &c).await, "step_up_required");
}

/// A browser session whose second factor is stale cannot get round the step-up a kubeconfig
/// asks for by minting an API key (keys are never asked for one): the key takes the same fresh
/// factor, and the refusal is audited.
#[tokio::test]
async fn a_stale_session_cannot_mint_an_api_key_to_skip_the_step_up() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": EMAIL}, "role": "NAMESPACE_ADMIN", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201);
    let (secret, _) = enrol(&app, &mia).await;
    let r = mia.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");
    let r = mia
        .post("/api/v1/api-keys", json!({"name": "round the step-up"}))
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "step_up_required", "{}", r.body);
    assert!(mia.get("/api/v1/api-keys").await.json()["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let denied = audit(&admin, "action=api_key.create&outcome=denied", 1).await;
    assert_eq!(denied[0]["actor"], EMAIL);
    assert!(
        denied[0]["reason"].as_str().unwrap().contains("step-up"),
        "{}",
        denied[0]
    );

    // A fresh code, then the key; the key downloads the kubeconfig as the session now would.
    step_up(&app, &mia, &secret).await;
    let key = mia
        .create_api_key(json!({"name": "after the step-up"}))
        .await;
    let r = app.client().get_bearer("/api/v1/kubeconfig", &key).await;
    assert_ne!(r.error_code(), "step_up_required", "{}", r.body);

    // The factor goes stale again: no more keys (even for someone who only reads today: a key
    // outlives the roles it was made under).
    for _ in 0..3 {
        app.clock.advance_secs(1201);
        mia.get("/api/v1/me").await.assert_status(200);
        admin.get("/api/v1/me").await.assert_status(200);
    }
    let r = mia
        .post("/api/v1/api-keys", json!({"name": "later"}))
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");
}

/// The organization's MFA policy binds API keys as it binds sessions: a key made before the
/// policy asked its owner for a second factor stops working until they enrol one, and the key
/// alone cannot enrol an authenticator of its holder's choosing on the account.
#[tokio::test]
async fn a_key_made_before_the_mfa_policy_waits_for_its_owners_enrolment() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mia = app.user_client(&admin, EMAIL).await;
    let key = mia.create_api_key(json!({"name": "script"})).await;
    let bare = app.client();
    bare.get_bearer("/api/v1/projects", &key)
        .await
        .assert_status(200);
    admin
        .patch("/api/v1/settings", json!({"mfa_policy": "everyone"}))
        .await
        .assert_status(200);
    enrol(&app, &admin).await;
    let r = bare
        .get_bearer("/api/v1/projects", &key)
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "mfa_enrolment_required");
    let r = bare.get_bearer("/api/v1/kubeconfig", &key).await;
    assert_eq!(r.error_code(), "mfa_enrolment_required", "{}", r.body);

    // The key's holder tries to enrol a device of their own on mia's account.
    bare.post_bearer("/api/v1/me/mfa/totp", &key, json!({}))
        .await
        .assert_status(403);
    bare.post_bearer(
        "/api/v1/me/mfa/totp/confirm",
        &key,
        json!({"code": "000000"}),
    )
    .await
    .assert_status(403);
    assert_eq!(mia.get("/api/v1/me/mfa").await.json()["enabled"], false);
    let denied = audit(&admin, "action=mfa.enrol&outcome=denied", 2).await;
    assert!(denied.iter().all(|e| e["actor"] == EMAIL), "{denied:?}");

    // Mia enrols from her session. The key was made with her password alone (whoever knew it
    // then could have made it), and keys are never asked for a step-up: it ends with the
    // enrolment, audited; the answer says so. A key she makes now works.
    enrol(&app, &mia).await;
    bare.get_bearer("/api/v1/projects", &key)
        .await
        .assert_status(401);
    assert_eq!(keys_revoked_at_enrolment(&admin, EMAIL).await, json!(1));
    let revoked = audit(&admin, "action=api_key.revoke_all", 1).await;
    assert!(revoked.iter().any(|e| e["actor"] == EMAIL), "{revoked:?}");
    let keys = mia.get("/api/v1/api-keys").await.assert_status(200).json();
    assert!(
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked"] == true),
        "{keys}"
    );
}

/// A key made while the organization asked for no second factor, by whoever had the owner's
/// password then, does not come back with full rights once the owner enrols: it ends at the
/// enrolment, and with it the kubeconfigs made with it (their streams cut).
#[tokio::test]
async fn a_key_made_before_enrolment_ends_with_it() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .bind_user(EMAIL, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    let key = mia.create_api_key(json!({"name": "someone's"})).await;
    let bare = app.client();
    bare.get_bearer("/api/v1/kubeconfig", &key)
        .await
        .assert_status(200);
    let live_with_key = || async {
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        use warden_domain::entities::kube_credentials as kc;
        kc::Entity::find()
            .filter(kc::Column::ApiKeyId.is_not_null())
            .filter(kc::Column::RevokedAt.is_null())
            .count(&app.services().db)
            .await
            .unwrap()
    };
    assert_eq!(live_with_key().await, 1);
    enrol(&app, &mia).await;
    assert_eq!(
        live_with_key().await,
        0,
        "the key's kubeconfig ends with it"
    );
    bare.get_bearer("/api/v1/kubeconfig", &key)
        .await
        .assert_status(401);
    bare.get_bearer("/api/v1/projects", &key)
        .await
        .assert_status(401);
    assert_eq!(keys_revoked_at_enrolment(&admin, EMAIL).await, json!(1));
    // Enrolling again later (after a reset) with no keys revokes nothing and says so.
    let eve = app.user_client(&admin, "eve@example.com").await;
    enrol(&app, &eve).await;
    assert_eq!(
        keys_revoked_at_enrolment(&admin, "eve@example.com").await,
        json!(0)
    );
}

/// A step-up proves a second factor in one's own browser session. An insider who finds a
/// colleague's console open (their session cookie) and sends the step-up with their own API
/// key and their own code does not make the colleague's session fresh: the colleague's write
/// kubeconfig (and a new API key for them) still asks for the colleague's own code.
#[tokio::test]
async fn a_step_up_with_someone_elses_key_does_not_freshen_a_session() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .bind_user(EMAIL, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    enrol(&app, &mia).await;
    let r = mia.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");

    let eve = app.user_client(&admin, "eve@example.com").await;
    let (secret, _) = enrol(&app, &eve).await;
    step_up(&app, &eve, &secret).await;
    let key = eve.create_api_key(json!({"name": "eve's"})).await;

    // Mia's browser (her cookie), Eve's key and Eve's code.
    app.clock.advance_secs(30);
    mia.post_bearer(
        "/api/v1/auth/step-up",
        &key,
        json!({"code": code(&app, &secret, 0)}),
    )
    .await
    .assert_status(401);
    let r = mia.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");
    let denied = admin
        .get("/api/v1/audit/events?action=mfa.step_up&outcome=denied")
        .await
        .assert_status(200)
        .json();
    assert!(
        denied["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("one's own browser session")),
        "{denied}"
    );
}

/// An authenticator in someone else's hands may have made credentials that outlive its reset:
/// the reset can take the user's API keys and kubeconfigs with it. Without the options the
/// keys stay (a lost phone); an unknown option is refused with nothing reset; revoking
/// kubeconfigs takes `kubeconfig.write`, so a user manager asking for it changes nothing.
#[tokio::test]
async fn a_second_factor_reset_can_take_the_credentials_made_with_it() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let with_key = |email: &'static str| {
        let (app, admin) = (&app, &admin);
        async move {
            let c = app.user_client(admin, email).await;
            let (secret, _) = enrol(app, &c).await;
            step_up(app, &c, &secret).await;
            c.create_api_key(json!({"name": "laptop"})).await
        }
    };
    let mia_key = with_key(EMAIL).await;
    let ned_key = with_key("ned@example.com").await;
    let bare = app.client_without_origin();
    let gus = crate::auth::delegate(
        &app,
        &admin,
        "gus@example.com",
        "USER_MANAGER",
        &["user.read", "user.write"],
    )
    .await;

    gus.delete(&format!(
        "/api/v1/users/{EMAIL}/mfa?revoke_kubeconfigs=true"
    ))
    .await
    .assert_status(403);
    let r = admin
        .delete(&format!("/api/v1/users/{EMAIL}/mfa?revoke_everything=true"))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    bare.get_bearer("/api/v1/me", &mia_key)
        .await
        .assert_status(200);

    // A lost phone: the key stays.
    admin
        .delete("/api/v1/users/ned@example.com/mfa")
        .await
        .assert_status(204);
    bare.get_bearer("/api/v1/me", &ned_key)
        .await
        .assert_status(200);

    // A taken one: the key stops at once, the kubeconfigs are revoked, all of it audited.
    // (Mia's factor was still there: the refusals above changed nothing.)
    admin
        .delete(&format!(
            "/api/v1/users/{EMAIL}/mfa?revoke_api_keys=true&revoke_kubeconfigs=true"
        ))
        .await
        .assert_status(204);
    bare.get_bearer("/api/v1/me", &mia_key)
        .await
        .assert_status(401);
    bare.get_bearer("/api/v1/me", &ned_key)
        .await
        .assert_status(200);
    let reset = audit(&admin, "action=user.mfa.reset", 2).await;
    assert!(
        reset.iter().any(
            |e| e["resource_name"] == EMAIL && e["details"]["after"]["revoke_api_keys"] == true
        ),
        "{reset:?}"
    );
    audit(&admin, "action=api_key.revoke_all", 1).await;
    audit(&admin, "action=kubeconfig.revoke", 1).await;
}

/// A reader's kubeconfig downloaded without a fresh second factor (the step-up is asked of
/// roles that write only) stays a reader's: once its holder is granted a role that writes (an
/// approved request, break-glass), it still reads, but it neither writes, execs nor reads
/// secrets; a kubeconfig downloaded after a step-up does. (It used to gain every write of the
/// new role, for up to a week, without any second factor.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_readers_kubeconfig_from_a_stale_session_stays_a_readers() {
    use warden_server::gateway::testkit::Kubectl;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, _agent) = app
        .cluster_with_agent(&admin, dir.path(), "prod-1", "dev", &[], &["apple"])
        .await;
    let mia = app.user_client(&admin, EMAIL).await;
    admin
        .bind_user(EMAIL, "NAMESPACE_READ_ONLY", "dev", &["apple"])
        .await;
    let (secret, _) = enrol(&app, &mia).await;
    // Enrolling here proved no second factor at sign-in: the session is stale, and a reader
    // is not asked for a step-up.
    let stale = mia.get("/api/v1/kubeconfig").await.assert_status(200).body;
    let old = Kubectl::new(&dir.path().join("old"), &stale);
    old.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();

    // Mia is granted a role that writes.
    admin
        .bind_user(EMAIL, "NAMESPACE_ADMIN", "dev", &["apple"])
        .await;
    old.run(&["get", "configmaps", "-n", "apple"])
        .await
        .expect_ok();
    old.run(&["create", "configmap", "-n", "apple", "from-the-old-one"])
        .await
        .expect_err("without a fresh second factor");
    old.run(&["get", "secrets", "-n", "apple"])
        .await
        .expect_err("without a fresh second factor");
    // `kubectl auth can-i` (a self-review) still answers.
    old.run(&["auth", "can-i", "list", "pods", "-n", "apple"])
        .await
        .expect_ok();
    // A kubeconfig now asks for a step-up; after it, the new one writes.
    let r = mia.get("/api/v1/kubeconfig").await.assert_status(403);
    assert_eq!(r.error_code(), "step_up_required");
    step_up(&app, &mia, &secret).await;
    let fresh = mia.get("/api/v1/kubeconfig").await.assert_status(200).body;
    Kubectl::new(&dir.path().join("fresh"), &fresh)
        .run(&["create", "configmap", "-n", "apple", "from-the-new-one"])
        .await
        .expect_ok();
    let denied = audit(&admin, "outcome=denied&kind=kube_api", 2).await;
    assert!(
        denied.iter().any(|e| e["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("read-only credential")),
        "{denied:?}"
    );
}

/// The stored authenticator secret (one user enrolled).
async fn stored_secret(app: &TestApp) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let db = &app.services().db;
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT secret FROM user_mfa".to_owned(),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "secret")
    .unwrap()
}

/// Without `WARDEN_MASTER_KEY`, secrets in the database are sealed all the same: with a key
/// generated into the data directory (mode 0600), so a copy of the database alone (a backup,
/// a read-only role) holds none of them. One stored plain by an older Warden is sealed at the
/// next start, and keeps working.
#[tokio::test]
async fn without_a_master_key_secrets_are_sealed_with_a_generated_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = warden_server::testing::fresh_database_url(dir.path()).await;
    let data = dir.path().join("data");
    let (mut first, admin) = TestApp::spawn_on_data_dir(&db, &data)
        .await
        .with_admin()
        .await;
    let mia = first.user_client(&admin, EMAIL).await;
    let (secret, _) = enrol(&first, &mia).await;
    let stored = stored_secret(&first).await;
    assert!(
        stored.starts_with("warden-sealed:v1:") && !stored.contains(&secret),
        "{stored}"
    );
    let key = data.join("master.key");
    let meta = std::fs::metadata(&key).expect("a generated master key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let generated = std::fs::read_to_string(&key).unwrap();

    // An older Warden's plain secret.
    {
        use sea_orm::{ConnectionTrait, Statement};
        let conn = &first.services().db;
        conn.execute_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("UPDATE user_mfa SET secret = '{secret}'"),
        ))
        .await
        .unwrap();
    }
    first.keep_database();
    drop(first);
    let app = TestApp::spawn_on_data_dir(&db, &data).await;
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        generated,
        "the key was generated again"
    );
    let stored = stored_secret(&app).await;
    assert!(
        stored.starts_with("warden-sealed:v1:") && !stored.contains(&secret),
        "{stored}"
    );
    let c = password_step(&app).await;
    app.clock.advance_secs(30);
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(200);
    c.get("/api/v1/me").await.assert_status(200);

    // The operator moves to WARDEN_MASTER_KEY with a fresh value, as if the generated key had
    // sealed nothing: Warden refuses to start, says why, and points at the generated key,
    // rather than starting and failing at every second factor.
    let env = std::collections::BTreeMap::from([
        ("WARDEN_DATABASE_URL".to_owned(), db.clone()),
        ("WARDEN_DATA_DIR".to_owned(), data.display().to_string()),
        (
            "WARDEN_MASTER_KEY".to_owned(),
            "a-fresh-key-of-the-operators-own-making".to_owned(),
        ),
        ("WARDEN_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("WARDEN_GATEWAY_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    let start = || async {
        let config = warden_server::config::Config::from_source(&env).expect("config");
        let clock: warden_domain::clock::SharedClock =
            std::sync::Arc::new(warden_domain::clock::SystemClock);
        match warden_server::startup::prepare(config, clock).await {
            Ok(_) => panic!("Warden started with a key that opens none of its secrets"),
            Err(e) => format!("{e:#}"),
        }
    };
    let err = start().await;
    assert!(
        err.contains("is not the one this database's secrets were sealed with")
            && err.contains(&format!("WARDEN_MASTER_KEY_FILE={}", key.display())),
        "{err}"
    );
    // A database from before the key check (no check yet), upgraded with the wrong key: the
    // secrets sealed before decide, and the wrong key is not taken as the database's.
    {
        use sea_orm::{ConnectionTrait, Statement};
        let conn = &app.services().db;
        conn.execute_raw(Statement::from_string(
            conn.get_database_backend(),
            "DELETE FROM key_check",
        ))
        .await
        .unwrap();
    }
    let err = start().await;
    assert!(
        err.contains("is not the one this database's secrets were sealed with"),
        "{err}"
    );
    // Nothing was sealed with the wrong key: the second factor still works.
    let c = password_step(&app).await;
    app.clock.advance_secs(30);
    c.post("/api/v1/auth/mfa", json!({"code": code(&app, &secret, 0)}))
        .await
        .assert_status(200);
}

/// An administrator whose authenticator is lost, with no other administrator to remove it:
/// the operator's reset removes it too when asked (`--reset-mfa`), in the reset's transaction,
/// audited as Warden's; without the flag the second factor stays.
#[tokio::test]
async fn the_operators_reset_can_remove_a_lost_second_factor() {
    use sea_orm::{ConnectionTrait, Statement};
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mia = app.user_client(&admin, EMAIL).await;
    enrol(&app, &mia).await;
    let authenticators = || async {
        let db = &app.services().db;
        db.query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT user_id FROM user_mfa".to_owned(),
        ))
        .await
        .unwrap()
        .len()
    };
    assert_eq!(authenticators().await, 1);
    let out = crate::support::warden(&app.database_url, &["admin", "reset-password", EMAIL]).await;
    assert!(out.status.success());
    assert_eq!(authenticators().await, 1, "removed without --reset-mfa");
    let out = crate::support::warden(
        &app.database_url,
        &["admin", "reset-password", EMAIL, "--reset-mfa"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Second factor removed"), "{stdout}");
    assert_eq!(authenticators().await, 0);
    let events = admin
        .get("/api/v1/audit/events?action=user.mfa.reset")
        .await
        .assert_status(200)
        .json();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "system" && e["resource_name"] == EMAIL),
        "{events}"
    );
}

/// A refusal for want of a fresh second factor.
#[track_caller]
fn asks_for_step_up(r: &Resp) {
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error_code(), "step_up_required", "{}", r.body);
}

/// The latest denial of each action, each refused for want of a step-up.
async fn denied_for_step_up(admin: &Client, actions: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for action in actions {
        let items = audit(admin, &format!("action={action}&outcome=denied"), 1).await;
        assert!(
            items[0]["reason"].as_str().unwrap().contains("step-up"),
            "{action}: {}",
            items[0]
        );
        out.push(items[0].clone());
    }
    out
}

/// Acting on someone else's account as a whole (its password, its second factor, its status,
/// its existence) from a console whose second factor is stale (left open, its cookie taken)
/// takes a fresh code first: each is refused (403 `step_up_required`, audited) and changes
/// nothing until a step-up; then it goes through. One's own session with a fresh code, or an
/// administrator without an authenticator, is not asked.
#[tokio::test]
async fn acting_on_another_account_from_a_stale_session_takes_a_step_up() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mia = app.user_client(&admin, EMAIL).await;
    enrol(&app, &mia).await;
    let (secret, _) = enrol(&app, &admin).await;
    let user = format!("/api/v1/users/{EMAIL}");
    let reset = format!("{user}/reset-password");
    let mfa = format!("{user}/mfa");
    asks_for_step_up(&admin.post(&reset, json!({})).await);
    asks_for_step_up(&admin.delete(&mfa).await);
    asks_for_step_up(&admin.patch(&user, json!({"status": "deactivated"})).await);
    asks_for_step_up(&admin.delete(&user).await);
    // Nothing changed: mia still signs in, with her second factor, and her session holds.
    mia.get("/api/v1/me").await.assert_status(200);
    assert_eq!(mia.get("/api/v1/me/mfa").await.json()["enabled"], true);
    let denied = denied_for_step_up(
        &admin,
        &[
            "user.reset_password",
            "user.mfa.reset",
            "user.update",
            "user.delete",
        ],
    )
    .await;
    assert!(
        denied.iter().all(|e| e["resource_name"] == EMAIL),
        "{denied:?}"
    );

    // A fresh code, and each goes through.
    step_up(&app, &admin, &secret).await;
    admin.post(&reset, json!({})).await.assert_status(200);
    admin.delete(&mfa).await.assert_status(204);
    admin
        .patch(&user, json!({"status": "deactivated"}))
        .await
        .assert_status(200);
    // Stale again later (a stricter age, so the session is still alive): asked again.
    admin
        .patch("/api/v1/settings", json!({"step_up_max_age_minutes": 10}))
        .await
        .assert_status(200);
    app.clock.advance_secs(11 * 60);
    admin.delete(&user).await.assert_status(403);
    step_up(&app, &admin, &secret).await;
    admin.delete(&user).await.assert_status(204);
}

/// Handing out access from a stale console session takes a step-up too: a grant, a place in a
/// group that holds grants, a loosened safeguard (a longer step-up age included). Refused
/// (403 `step_up_required`, audited), nothing changes; taking access away is not asked; after
/// a fresh code each goes through.
#[tokio::test]
async fn handing_out_access_from_a_stale_session_takes_a_step_up() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    let mia = app.user_client(&admin, EMAIL).await;
    let reader = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": EMAIL}, "role": "NAMESPACE_READ_ONLY", "project": "dev", "namespaces": ["apple"]}),
        )
        .await
        .assert_status(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (secret, _) = enrol(&app, &admin).await;
    let admin_grant = json!({"subject": {"kind": "user", "name": EMAIL}, "role": "ADMIN"});
    let admins = "/api/v1/groups/Organization%20Admins/members";
    let longer = json!({"step_up_max_age_minutes": 1440});
    asks_for_step_up(&admin.post("/api/v1/bindings", admin_grant.clone()).await);
    asks_for_step_up(&admin.post(admins, json!({"user": EMAIL})).await);
    asks_for_step_up(&admin.patch("/api/v1/settings", longer.clone()).await);
    // Nothing was given: mia holds no organization right, the age is as it was.
    mia.get("/api/v1/users").await.assert_status(403);
    assert_eq!(
        admin.get("/api/v1/settings").await.json()["step_up_max_age_minutes"],
        60
    );
    denied_for_step_up(
        &admin,
        &["binding.create", "group.member.add", "settings.update"],
    )
    .await;
    // Taking access away is not asked.
    admin
        .delete(&format!("/api/v1/bindings/{reader}"))
        .await
        .assert_status(204);

    step_up(&app, &admin, &secret).await;
    admin
        .post("/api/v1/bindings", admin_grant)
        .await
        .assert_status(201);
    admin
        .post(admins, json!({"user": EMAIL}))
        .await
        .assert_status(201);
    admin
        .patch("/api/v1/settings", longer)
        .await
        .assert_status(200);
    mia.get("/api/v1/users").await.assert_status(200);
}
