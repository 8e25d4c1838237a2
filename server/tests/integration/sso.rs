//! Single sign-on with OpenID Connect against a real provider: the npm package `oidc-provider`
//! started by `end2end/oidc/provider.mjs` on loopback, one per test. Runs on SQLite, and on
//! PostgreSQL when WARDEN_TEST_DATABASE_URL is set.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_server::testing::{Client, Resp, TestApp, ADMIN_EMAIL, USER_PASSWORD};

const PROVIDER: &str = "test";
/// The first admin's password after `with_admin` changed it.
const ADMIN_NEW_PASSWORD: &str = "the admin's new password";
const SECRET_MARKER: &str = "a-master-key-for-the-sso-tests";

/// The test provider: a node process, ended when the value is dropped.
struct OidcProvider {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl OidcProvider {
    async fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../end2end/oidc/provider.mjs");
        let mut child = tokio::process::Command::new("node")
            .args([script, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node end2end/oidc/provider.mjs (run npm ci first)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the test provider did not start within 30 s")
            .expect("read the provider's stdout")
            .expect("the test provider exited (is oidc-provider installed? npm ci)");
        let url = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        OidcProvider {
            _child: child,
            url,
            http,
        }
    }

    /// Dynamic client registration (RFC 7591): a confidential client for this Warden.
    async fn register_client(&self, redirect_uri: &str) -> (String, String) {
        let r: Value = self
            .http
            .post(format!("{}/reg", self.url))
            .json(&json!({"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_basic"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("registration answer");
        (
            r["client_id"].as_str().expect("client_id").to_owned(),
            r["client_secret"]
                .as_str()
                .expect("client_secret")
                .to_owned(),
        )
    }

    async fn set_user(&self, login: &str, email: &str, groups: &[&str]) {
        let r = self
            .http
            .put(format!("{}/__admin/users/{login}", self.url))
            .json(&json!({"email": email, "name": login, "groups": groups}))
            .send()
            .await
            .expect("set user");
        assert_eq!(r.status().as_u16(), 204);
    }

    /// A user whose sign-in at the provider says it used `amr` (RFC 8176) methods.
    async fn set_user_amr(&self, login: &str, email: &str, amr: &[&str]) {
        let r = self
            .http
            .put(format!("{}/__admin/users/{login}", self.url))
            .json(&json!({"email": email, "name": login, "groups": [], "amr": amr}))
            .send()
            .await
            .expect("set user");
        assert_eq!(r.status().as_u16(), 204);
    }

    /// A user whose email the provider says it has not verified.
    async fn set_unverified_user(&self, login: &str, email: &str) {
        let r = self
            .http
            .put(format!("{}/__admin/users/{login}", self.url))
            .json(&json!({"email": email, "name": login, "groups": [], "email_verified": false}))
            .send()
            .await
            .expect("set user");
        assert_eq!(r.status().as_u16(), 204);
    }

    async fn tamper(&self, client_id: &str, how: Value) {
        let mut body = how;
        body["client_id"] = json!(client_id);
        let r = self
            .http
            .post(format!("{}/__admin/tamper", self.url))
            .json(&body)
            .send()
            .await
            .expect("tamper");
        assert_eq!(r.status().as_u16(), 204);
    }

    /// Sign in at the provider as `login`, from the authorization URL Warden redirected to, and
    /// return the URL the provider sends the browser back to (Warden's callback).
    async fn authorize(&self, authorize_url: &str, login: &str) -> String {
        // A fresh browser at the provider each time.
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut url = authorize_url.to_owned();
        for _ in 0..10 {
            if !url.starts_with(&self.url) {
                return url;
            }
            let r = browser.get(&url).send().await.expect("provider request");
            match r.status().as_u16() {
                302 | 303 => {
                    let loc = r.headers()["location"]
                        .to_str()
                        .expect("location")
                        .to_owned();
                    url = if loc.starts_with('/') {
                        format!("{}{loc}", self.url)
                    } else {
                        loc
                    };
                }
                200 if url.contains("/interaction/") => {
                    let r = browser
                        .post(format!("{url}/login"))
                        .form(&[("login", login)])
                        .send()
                        .await
                        .expect("login");
                    assert_eq!(r.status().as_u16(), 303, "provider login refused");
                    let loc = r.headers()["location"]
                        .to_str()
                        .expect("location")
                        .to_owned();
                    url = if loc.starts_with('/') {
                        format!("{}{loc}", self.url)
                    } else {
                        loc
                    };
                }
                s => panic!(
                    "unexpected provider answer {s} at {url}: {}",
                    r.text().await.unwrap_or_default()
                ),
            }
        }
        panic!("the provider never sent the browser back");
    }
}

fn master_key_env() -> BTreeMap<String, String> {
    BTreeMap::from([("WARDEN_MASTER_KEY".to_owned(), SECRET_MARKER.to_owned())])
}

/// Register a client at the provider for `app` and add the provider to Warden.
async fn add_provider(app: &TestApp, admin: &Client, op: &OidcProvider, extra: Value) -> String {
    let callback = format!("{}/api/v1/auth/oidc/{PROVIDER}/callback", app.url);
    let (client_id, secret) = op.register_client(&callback).await;
    let mut body = json!({
        "name": PROVIDER,
        "display_name": "Test IdP",
        "issuer": op.url,
        "client_id": client_id,
        "client_secret": secret,
        "scopes": ["openid", "email", "profile", "groups"],
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let r = admin
        .post("/api/v1/identity-providers", body)
        .await
        .assert_status(201)
        .json();
    assert_eq!(r["callback_url"], callback);
    client_id
}

fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Start at Warden, sign in at the provider as `login`, and come back: Warden's answer to the
/// callback.
async fn sso_sign_in(app: &TestApp, c: &Client, op: &OidcProvider, login: &str) -> Resp {
    let callback = start_and_authorize(c, op, login).await;
    c.get(callback.strip_prefix(&app.url).expect("callback at Warden"))
        .await
}

async fn start_and_authorize(c: &Client, op: &OidcProvider, login: &str) -> String {
    let r = c
        .get(&format!("/api/v1/auth/oidc/{PROVIDER}/login"))
        .await
        .assert_status(303);
    let authorize = location(&r);
    assert!(authorize.starts_with(&op.url), "{authorize}");
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    assert!(authorize.contains("nonce="), "{authorize}");
    op.authorize(&authorize, login).await
}

#[track_caller]
fn assert_refused(r: &Resp, code: &str) {
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(location(r), format!("/login?sso_error={code}"));
}

async fn audit(admin: &Client, query: &str, min: usize) -> Vec<Value> {
    for _ in 0..100 {
        let r = admin
            .get(&format!("/api/v1/audit/events?{query}"))
            .await
            .assert_status(200)
            .json();
        let items = r["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= min {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {min} audit events for {query}");
}

async fn groups_of(admin: &Client, email: &str) -> Vec<String> {
    let u = admin
        .get(&format!("/api/v1/users/{email}"))
        .await
        .assert_status(200)
        .json();
    let mut g: Vec<String> = u["user"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    g.sort();
    g
}

/// Groups `developers` (PROJECT_READ_ONLY on a new project `dev`) and `others` (no grant).
async fn developers_read_dev(admin: &Client, others: &[&str]) {
    for g in std::iter::once(&"developers").chain(others) {
        admin
            .post("/api/v1/groups", json!({"name": g}))
            .await
            .assert_status(201);
    }
    admin
        .post("/api/v1/projects", json!({"name": "dev"}))
        .await
        .assert_status(201);
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "developers"}, "role": "PROJECT_READ_ONLY", "project": "dev"}),
        )
        .await
        .assert_status(201);
}

#[tokio::test]
async fn sso_sign_in_provisions_the_user_with_mapped_groups_and_resyncs_them_at_every_sign_in() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    developers_read_dev(&admin, &["ops"]).await;
    let client_id = add_provider(&app, &admin, &op, json!({})).await;

    // The client secret is write-only and sealed at rest.
    let dto = admin
        .get(&format!("/api/v1/identity-providers/{PROVIDER}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(dto["client_secret_set"], true);
    assert!(dto.get("client_secret").is_none(), "{dto}");
    use sea_orm::{ConnectionTrait, Statement};
    let db = &app.services().db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT client_secret FROM identity_providers".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: String = row.try_get("", "client_secret").unwrap();
    assert!(stored.starts_with("warden-sealed:v1:"), "{stored}");

    // The sign-in page offers the provider.
    let anon = app.client();
    let list = anon
        .get("/api/v1/auth/providers")
        .await
        .assert_status(200)
        .json();
    assert_eq!(list[0]["display_name"], "Test IdP");
    assert_eq!(list[0]["login_url"], "/api/v1/auth/oidc/test/login");

    op.set_user(
        "alice",
        "alice@example.com",
        &["developers", "not-in-warden"],
    )
    .await;
    let alice = app.client();
    let callback = start_and_authorize(&alice, &op, "alice").await;
    let pre_session = alice.session_cookie().expect("a pre-session cookie");
    let r = alice.get(callback.strip_prefix(&app.url).unwrap()).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(location(&r), "/");
    // The session id rotates at sign-in.
    let session = alice.session_cookie().expect("a session");
    assert_ne!(session, pre_session);
    let me = alice.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(me["must_change_password"], false);
    let u = admin
        .get("/api/v1/users/alice@example.com")
        .await
        .assert_status(200)
        .json();
    assert_eq!(u["user"]["origin"], "sso");
    let alice_id = u["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        groups_of(&admin, "alice@example.com").await,
        ["All Users", "developers"]
    );
    alice.get("/api/v1/projects/dev").await.assert_status(200);
    // SSO users have no local password.
    app.client()
        .login("alice@example.com", "any password at all")
        .await
        .assert_status(401);

    let ev: Vec<Value> = audit(
        &admin,
        "action=sign_in&outcome=allowed&actor=alice@example.com",
        1,
    )
    .await
    .into_iter()
    .filter(|e| e["action"] == "sign_in")
    .collect();
    assert_eq!(ev[0]["kind"], "sign_in");
    assert_eq!(ev[0]["details"]["provider"], PROVIDER);
    assert_eq!(ev[0]["details"]["user_created"], true);
    assert_eq!(ev[0]["details"]["groups_added"], json!(["developers"]));

    // The provider moves alice from developers to ops: at her next sign-in Warden follows, and
    // her access with it.
    op.set_user("alice", "alice@example.com", &["ops"]).await;
    let again = app.client();
    let r = sso_sign_in(&app, &again, &op, "alice").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    assert_eq!(
        groups_of(&admin, "alice@example.com").await,
        ["All Users", "ops"]
    );
    let r = again.get("/api/v1/projects/dev").await;
    assert!(
        r.status == 403 || r.status == 404,
        "{} {}",
        r.status,
        r.body
    );
    // Matched by the provider's subject: the same user, not a new one.
    let me = again.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["user"]["id"], alice_id);
    let ev = audit(&admin, "action=sign_in.groups&actor=alice@example.com", 2).await;
    assert_eq!(ev[0]["details"]["groups_added"], json!(["ops"]));
    assert_eq!(ev[0]["details"]["groups_removed"], json!(["developers"]));
    // The account made at the first sign-in is in the log, written with it (one transaction).
    let made = audit(&admin, "action=sign_in.account&actor=alice@example.com", 1).await;
    assert_eq!(made.len(), 1, "{made:#?}");
    assert_eq!(made[0]["details"]["user_created"], true);

    // A token whose claims came only from userinfo (the ID token lacks email and groups).
    op.set_user("alice", "alice@example.com", &["developers"])
        .await;
    op.tamper(
        &client_id,
        json!({"drop_claims": ["email", "groups", "email_verified"]}),
    )
    .await;
    let third = app.client();
    let r = sso_sign_in(&app, &third, &op, "alice").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    assert_eq!(
        groups_of(&admin, "alice@example.com").await,
        ["All Users", "developers"]
    );
}

#[tokio::test]
async fn sso_refuses_tampered_state_replayed_codes_and_bad_id_tokens() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let client_id = add_provider(&app, &admin, &op, json!({})).await;
    op.set_user("bob", "bob@example.com", &[]).await;

    // A tampered state.
    let c = app.client();
    let callback = start_and_authorize(&c, &op, "bob").await;
    let tampered = callback.replace("state=", "state=x");
    let r = c.get(tampered.strip_prefix(&app.url).unwrap()).await;
    assert_refused(&r, "state");
    c.get("/api/v1/me").await.assert_status(401);
    // The sign-in in progress is used up by the refusal: the genuine callback fails too.
    let r = c.get(callback.strip_prefix(&app.url).unwrap()).await;
    assert_refused(&r, "state");

    // A callback with no sign-in started in this browser (login CSRF).
    let stranger = app.client();
    let callback = start_and_authorize(&app.client(), &op, "bob").await;
    let r = stranger.get(callback.strip_prefix(&app.url).unwrap()).await;
    assert_refused(&r, "state");

    // A replayed code: once in the same browser (the sign-in in progress is gone), then with a
    // fresh sign-in's state (the provider refuses the used code).
    let c = app.client();
    let callback = start_and_authorize(&c, &op, "bob").await;
    let path = callback.strip_prefix(&app.url).unwrap().to_owned();
    let r = c.get(&path).await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let r = c.get(&path).await;
    assert_refused(&r, "state");
    let replayer = app.client();
    let fresh = start_and_authorize(&replayer, &op, "bob").await;
    let state = fresh
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let code = path
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let r = replayer
        .get(&format!(
            "/api/v1/auth/oidc/{PROVIDER}/callback?code={code}&state={state}"
        ))
        .await;
    assert_refused(&r, "token");
    replayer.get("/api/v1/me").await.assert_status(401);

    // ID tokens the provider signs but Warden must refuse.
    let mut refused = 5;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (what, how, expected) in [
        (
            "wrong nonce",
            json!({"claims": {"nonce": "not-the-nonce-warden-sent"}}),
            "nonce mismatch",
        ),
        (
            "other audience",
            json!({"claims": {"aud": "another-client", "azp": "another-client"}}),
            "Invalid audiences",
        ),
        (
            "several audiences",
            json!({"claims": {"aud": [client_id, "another-client"]}}),
            "Invalid audiences",
        ),
        (
            "expired",
            json!({"claims": {"exp": now - 120, "iat": now - 900}}),
            "ID token expired",
        ),
        (
            "issued in the future",
            json!({"claims": {"iat": now + 3600, "exp": now + 7200}}),
            "issued in the future",
        ),
        (
            "other issuer",
            json!({"claims": {"iss": "http://127.0.0.1:1"}}),
            "Invalid issuer",
        ),
        // Signed by a key the provider does not publish: refused after fetching its keys again.
        (
            "unknown kid",
            json!({"unknown_key": true}),
            "No matching key",
        ),
    ] {
        op.tamper(&client_id, how).await;
        let c = app.client();
        let r = sso_sign_in(&app, &c, &op, "bob").await;
        assert_eq!(r.status, 303, "{what}: {}", r.body);
        assert_eq!(location(&r), "/login?sso_error=token", "{what}");
        c.get("/api/v1/me").await.assert_status(401);
        refused += 1;
        let ev = audit(&admin, "action=sign_in&outcome=denied", refused).await;
        let reason = ev[0]["reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains(expected), "{what}: {reason}");
    }
    // Every refusal is audited, with the provider and the reason.
    let ev = audit(&admin, "action=sign_in&outcome=denied", 12).await;
    assert!(ev
        .iter()
        .all(|e| e["details"]["provider"] == PROVIDER && e["kind"] == "sign_in"));
    assert!(
        ev.iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("nonce")),
        "{ev:?}"
    );
    // Nothing secret in the audit log: no code, no token.
    let text = serde_json::to_string(&ev).unwrap();
    assert!(!text.contains(code), "{text}");
}

#[tokio::test]
async fn sso_refuses_other_domains_deactivated_users_and_unknown_accounts() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let client_id = add_provider(
        &app,
        &admin,
        &op,
        json!({"allowed_domains": ["example.com"]}),
    )
    .await;

    op.set_user("mallory", "mallory@elsewhere.org", &[]).await;
    let r = sso_sign_in(&app, &app.client(), &op, "mallory").await;
    assert_refused(&r, "domain");
    // An allowed domain admits a new account only for an email the provider says it verified:
    // not when it says it did not, nor when it says nothing (providers where people set their
    // own email would let anyone claim the domain).
    op.set_unverified_user("frank", "frank@example.com").await;
    let r = sso_sign_in(&app, &app.client(), &op, "frank").await;
    assert_refused(&r, "email_unverified");
    op.set_user("frank", "frank@example.com", &[]).await;
    op.tamper(&client_id, json!({"drop_claims": ["email_verified"]}))
        .await;
    let r = sso_sign_in(&app, &app.client(), &op, "frank").await;
    assert_refused(&r, "email_unverified");
    admin
        .get("/api/v1/users/frank@example.com")
        .await
        .assert_status(404);
    let r = sso_sign_in(&app, &app.client(), &op, "frank").await;
    assert_eq!(location(&r), "/", "{}", r.body);

    // Deactivating a user in Warden wins over the provider.
    op.set_user("carol", "carol@example.com", &[]).await;
    let carol = app.client();
    let r = sso_sign_in(&app, &carol, &op, "carol").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    admin
        .patch(
            "/api/v1/users/carol@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    carol.get("/api/v1/me").await.assert_status(401);
    // (The browser is not told whether an account exists for the email: the audit is.)
    let r = sso_sign_in(&app, &app.client(), &op, "carol").await;
    assert_refused(&r, "no_account");

    // A local account with the same email is linked only when the provider allows it.
    admin
        .post("/api/v1/users", json!({"email": "dave@example.com", "name": "Dave", "password": "dave's first password"}))
        .await
        .assert_status(201);
    op.set_user("dave", "dave@example.com", &[]).await;
    let r = sso_sign_in(&app, &app.client(), &op, "dave").await;
    assert_refused(&r, "no_account");
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"link_existing_users": true}),
        )
        .await
        .assert_status(200);
    // ...and only for an email the provider says it verified: refused when it says it did not,
    // and when it says nothing.
    op.set_unverified_user("dave", "dave@example.com").await;
    let r = sso_sign_in(&app, &app.client(), &op, "dave").await;
    assert_refused(&r, "email_unverified");
    op.set_user("dave", "dave@example.com", &[]).await;
    op.tamper(&client_id, json!({"drop_claims": ["email_verified"]}))
        .await;
    let r = sso_sign_in(&app, &app.client(), &op, "dave").await;
    assert_refused(&r, "no_account");
    let r = sso_sign_in(&app, &app.client(), &op, "dave").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let dave = admin
        .get("/api/v1/users/dave@example.com")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        dave["user"]["origin"], "local",
        "a linked account stays what it was"
    );

    // Without auto-provisioning, unknown people get no account.
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"auto_provision": false}),
        )
        .await
        .assert_status(200);
    op.set_user("erin", "erin@example.com", &[]).await;
    let r = sso_sign_in(&app, &app.client(), &op, "erin").await;
    assert_refused(&r, "no_account");
    let users = admin
        .get("/api/v1/users?q=erin")
        .await
        .assert_status(200)
        .json();
    assert_eq!(users["items"].as_array().unwrap().len(), 0);

    // An error at the provider comes back as a clear refusal, never a 500.
    let c = app.client();
    let r = c
        .get(&format!("/api/v1/auth/oidc/{PROVIDER}/login"))
        .await
        .assert_status(303);
    let state = location(&r)
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let r = c
        .get(&format!("/api/v1/auth/oidc/{PROVIDER}/callback?error=access_denied&error_description=no&state={state}"))
        .await;
    assert_refused(&r, "denied");
    let r = c.get("/api/v1/auth/oidc/nobody/login").await;
    assert_refused(&r, "unknown_provider");
    let ev = audit(&admin, "action=sign_in&outcome=denied", 5).await;
    let failures: Vec<&str> = ev
        .iter()
        .filter_map(|e| e["details"]["failure"].as_str())
        .collect();
    for f in [
        "domain",
        "deactivated",
        "link_refused",
        "no_account",
        "denied",
    ] {
        assert!(failures.contains(&f), "{f} not in {failures:?}");
    }
}

#[tokio::test]
async fn identity_providers_are_for_organization_admins_and_their_secret_is_write_only() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    let body = json!({"name": "corp", "issuer": op.url, "client_id": "warden", "client_secret": "s3cret-value"});

    let user = app.user_client(&admin, "user@example.com").await;
    user.get("/api/v1/identity-providers")
        .await
        .assert_status(403);
    user.post("/api/v1/identity-providers", body.clone())
        .await
        .assert_status(403);

    // CSRF: a cookie-authenticated write from another origin is refused; the callback (a GET
    // from the provider) is not a write.
    let cross = app.client_without_origin();
    cross
        .login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);
    let r = cross.post("/api/v1/identity-providers", body.clone()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "csrf");

    let bad = admin
        .post("/api/v1/identity-providers", json!({"name": "Bad Name", "issuer": "ftp://x", "client_id": "c", "client_secret": "s"}))
        .await
        .assert_status(422)
        .json();
    assert!(bad["error"]["fields"]["name"].is_string(), "{bad}");
    let insecure = admin
        .post("/api/v1/identity-providers", json!({"name": "plain", "issuer": "http://idp.example.com", "client_id": "c", "client_secret": "s"}))
        .await
        .assert_status(422)
        .json();
    assert!(
        insecure["error"]["fields"]["issuer"].is_string(),
        "{insecure}"
    );
    // The group mapping mode is one of two words; another is refused by name, and nothing is
    // created.
    let mut unknown_mode = body.clone();
    unknown_mode["group_mapping_mode"] = json!("by_email");
    let unknown_mode = admin
        .post("/api/v1/identity-providers", unknown_mode)
        .await
        .assert_status(422)
        .json();
    let said = unknown_mode["error"]["fields"]["group_mapping_mode"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("by_email"), "{unknown_mode}");

    let created = admin
        .post("/api/v1/identity-providers", body.clone())
        .await
        .assert_status(201)
        .json();
    assert!(!created.to_string().contains("s3cret-value"));
    assert_eq!(created["scopes"], json!(["openid", "email", "profile"]));
    assert_eq!(created["display_name"], "corp");
    admin
        .post("/api/v1/identity-providers", body.clone())
        .await
        .assert_status(409);

    // An empty secret keeps the stored one; a new one is sealed again.
    let sealed = || async {
        use sea_orm::{ConnectionTrait, Statement};
        let db = &app.services().db;
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT client_secret FROM identity_providers WHERE name = 'corp'".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<String>("", "client_secret").unwrap()
    };
    let first = sealed().await;
    assert!(first.starts_with("warden-sealed:v1:") && !first.contains("s3cret"));
    admin
        .patch(
            "/api/v1/identity-providers/corp",
            json!({"client_secret": "", "display_name": "Corp SSO"}),
        )
        .await
        .assert_status(200);
    assert_eq!(sealed().await, first);
    let r = admin
        .patch(
            "/api/v1/identity-providers/corp",
            json!({"client_secret": "another-secret"}),
        )
        .await
        .assert_status(200);
    assert!(!r.body.contains("another-secret"));
    assert_ne!(sealed().await, first);

    // Test runs discovery and says what it found, or the error in words.
    let t = admin
        .post("/api/v1/identity-providers/corp/test", json!({}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["token_endpoint"], format!("{}/token", op.url));
    assert!(t["signing_keys"].as_u64().unwrap() >= 1);
    admin
        .patch(
            "/api/v1/identity-providers/corp",
            json!({"issuer": "http://127.0.0.1:9", "client_secret": "that issuer's own secret"}),
        )
        .await
        .assert_status(200);
    let t = admin
        .post("/api/v1/identity-providers/corp/test", json!({}))
        .await
        .assert_status(200)
        .json();
    assert_eq!(t["ok"], false);
    assert!(
        t["message"].as_str().unwrap().contains("discovery failed"),
        "{t}"
    );

    // Audited, without the secret.
    let ev = audit(&admin, "action=identity_provider.", 4).await;
    assert!(!serde_json::to_string(&ev).unwrap().contains("secret-value"));
    assert!(!serde_json::to_string(&ev)
        .unwrap()
        .contains("another-secret"));

    admin
        .delete("/api/v1/identity-providers/corp")
        .await
        .assert_status(204);
    admin
        .get("/api/v1/identity-providers/corp")
        .await
        .assert_status(404);
    let list = app
        .client()
        .get("/api/v1/auth/providers")
        .await
        .assert_status(200)
        .json();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn local_passwords_can_be_limited_to_break_glass_administrators() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let bob_before = app.user_client(&admin, "bob@example.com").await;
    let _carol = app.user_client(&admin, "carol@example.com").await;
    let restrict = json!({"local_sign_in": "break_glass_only", "break_glass_users": [ADMIN_EMAIL]});
    // Keys made with a password (bob's could be made by whoever phished it) and by the
    // administrator, a break-glass account.
    let bob_key = bob_before.create_api_key(json!({"name": "bob's"})).await;
    let admin_key = admin.create_api_key(json!({"name": "admin's"})).await;

    // Never a lockout: not without an enabled identity provider.
    let r = admin
        .patch("/api/v1/settings", restrict.clone())
        .await
        .assert_status(422);
    assert!(
        r.json()["error"]["fields"]["local_sign_in"].is_string(),
        "{}",
        r.body
    );
    add_provider(&app, &admin, &op, json!({})).await;
    // Break-glass accounts are organization administrators with a local password.
    let r = admin
        .patch(
            "/api/v1/settings",
            json!({"local_sign_in": "break_glass_only", "break_glass_users": ["bob@example.com"]}),
        )
        .await
        .assert_status(422);
    assert!(
        r.json()["error"]["fields"]["break_glass_users"].is_string(),
        "{}",
        r.body
    );
    admin
        .patch(
            "/api/v1/settings",
            json!({"local_sign_in": "break_glass_only", "break_glass_users": []}),
        )
        .await
        .assert_status(422);
    let s = admin
        .patch("/api/v1/settings", restrict)
        .await
        .assert_status(200)
        .json();
    assert_eq!(s["local_sign_in"], "break_glass_only");
    assert_eq!(s["break_glass_users"], json!([ADMIN_EMAIL]));
    // The session bob signed in with his password before ends with it; the administrator's
    // (a break-glass account) does not.
    bob_before.get("/api/v1/me").await.assert_status(401);
    admin.get("/api/v1/me").await.assert_status(200);
    // So with the keys: bob's password key no longer opens anything (the provider has never
    // vouched for him); the break-glass administrator's still does.
    let bare = app.client();
    for path in ["/api/v1/me", "/api/v1/kubeconfig"] {
        let r = bare.get_bearer(path, &bob_key).await.assert_status(401);
        assert_eq!(r.error_code(), "provider_sign_in_required", "{path}");
    }
    bare.get_bearer("/api/v1/me", &admin_key)
        .await
        .assert_status(200);

    // A normal user's password is refused, with a clear code (a wrong one stays invalid).
    let r = app
        .client()
        .login("bob@example.com", USER_PASSWORD)
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "local_sign_in_disabled");
    let r = app
        .client()
        .login("bob@example.com", "not bob's password")
        .await
        .assert_status(401);
    assert_eq!(r.error_code(), "invalid_credentials");
    // The break-glass administrator's works.
    let glass = app.client();
    glass
        .login(ADMIN_EMAIL, ADMIN_NEW_PASSWORD)
        .await
        .assert_status(200);
    glass.get("/api/v1/me").await.assert_status(200);
    // Single sign-on still works, for bob too.
    op.set_user("bob", "bob@example.com", &[]).await;
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"link_existing_users": true}),
        )
        .await
        .assert_status(200);
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "bob").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    c.get("/api/v1/me").await.assert_status(200);

    // The last enabled provider can be neither disabled nor removed while it holds.
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"enabled": false}),
        )
        .await
        .assert_status(409);
    admin
        .delete(&format!("/api/v1/identity-providers/{PROVIDER}"))
        .await
        .assert_status(409);

    let ev = audit(&admin, "action=sign_in&outcome=denied", 1).await;
    let refusal = ev
        .iter()
        .find(|e| e["details"]["failure"] == "local_sign_in_disabled")
        .unwrap_or_else(|| panic!("no local_sign_in_disabled refusal in {ev:?}"));
    assert_eq!(refusal["actor"], "bob@example.com", "{refusal}");
    audit(&admin, "action=settings.update", 1).await;

    // Back to everyone: carol's password works again. Bob's account went to the provider
    // when it was linked by its email, its password with it.
    admin
        .patch("/api/v1/settings", json!({"local_sign_in": "everyone"}))
        .await
        .assert_status(200);
    app.client()
        .login("carol@example.com", USER_PASSWORD)
        .await
        .assert_status(200);
    app.client()
        .login("bob@example.com", USER_PASSWORD)
        .await
        .assert_status(401);
}

#[tokio::test]
async fn a_provider_trusted_for_mfa_vouches_for_the_second_factor_and_otherwise_warden_asks_its_own(
) {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    add_provider(&app, &admin, &op, json!({})).await;
    let p = admin
        .get(&format!("/api/v1/identity-providers/{PROVIDER}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(p["trust_provider_mfa"], false, "off by default");

    // Sam enrols Warden's authenticator after a first single sign-on.
    op.set_user_amr("sam", "sam@example.com", &["pwd", "otp"])
        .await;
    let sam = app.client();
    let r = sso_sign_in(&app, &sam, &op, "sam").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let (secret, _) = crate::mfa::enrol(&app, &sam).await;

    // Untrusted provider: its `amr` does not count, Warden asks its own code.
    app.clock.advance_secs(30);
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "sam").await;
    assert_eq!(location(&r), "/login/mfa", "{}", r.body);
    c.get("/api/v1/me").await.assert_status(401);
    c.post(
        "/api/v1/auth/mfa",
        json!({"code": crate::mfa::code(&app, &secret, 0)}),
    )
    .await
    .assert_status(200);
    c.get("/api/v1/me").await.assert_status(200);

    // Trusted, and the provider says a second factor was used: signed in at once.
    let p = admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"trust_provider_mfa": true}),
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(p["trust_provider_mfa"], true);
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "sam").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    c.get("/api/v1/me").await.assert_status(200);
    // Trusted, but a password alone: Warden's code again.
    op.set_user_amr("sam", "sam@example.com", &["pwd"]).await;
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "sam").await;
    assert_eq!(location(&r), "/login/mfa", "{}", r.body);

    let ev = audit(&admin, "action=sign_in.oidc", 2).await;
    assert!(ev.iter().all(|e| e["details"]["second_factor_due"] == true));
    let ev = audit(&admin, "action=sign_in&outcome=allowed", 1).await;
    assert!(
        ev.iter().any(|e| e["details"]["provider_mfa"] == true
            && e["details"]["amr"] == json!(["pwd", "otp"])),
        "{ev:?}"
    );

    // The MFA policy covers single sign-on users too: one the provider vouched for owes nothing,
    // one it did not must enrol in Warden. (The administrator enrols first.)
    crate::mfa::enrol(&app, &admin).await;
    admin
        .patch("/api/v1/settings", json!({"mfa_policy": "everyone"}))
        .await
        .assert_status(200);
    op.set_user_amr("tom", "tom@example.com", &["pwd", "hwk"])
        .await;
    let tom = app.client();
    let r = sso_sign_in(&app, &tom, &op, "tom").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    tom.get("/api/v1/projects").await.assert_status(200);
    op.set_user_amr("uma", "uma@example.com", &["pwd"]).await;
    let uma = app.client();
    let r = sso_sign_in(&app, &uma, &op, "uma").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let r = uma.get("/api/v1/projects").await.assert_status(403);
    assert_eq!(r.error_code(), "mfa_enrolment_required");
    // A passwordless sign-in at the provider with a code alone is one factor.
    op.set_user_amr("vic", "vic@example.com", &["sms"]).await;
    let vic = app.client();
    let r = sso_sign_in(&app, &vic, &op, "vic").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let r = vic.get("/api/v1/projects").await.assert_status(403);
    assert_eq!(r.error_code(), "mfa_enrolment_required");
}

/// With the email read from another claim (`email_claim: preferred_username`, which on some
/// providers the user chooses), the provider's `email_verified` says nothing of it: an insider
/// who verified their own mailbox at the provider and named themselves after a colleague's
/// email is not linked to the colleague's account. The same claim holding the verified email
/// itself links as before.
#[tokio::test]
async fn an_email_from_another_claim_is_not_taken_as_verified() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let client_id = add_provider(
        &app,
        &admin,
        &op,
        json!({"email_claim": "preferred_username", "link_existing_users": true}),
    )
    .await;
    admin
        .post("/api/v1/users", json!({"email": "dave@example.com", "name": "Dave", "password": "dave's first password"}))
        .await
        .assert_status(201);
    op.set_user("mallory", "mallory@evil.example", &[]).await;
    op.tamper(
        &client_id,
        json!({"claims": {"preferred_username": "dave@example.com"}}),
    )
    .await;
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "mallory").await;
    assert_refused(&r, "no_account");
    c.get("/api/v1/me").await.assert_status(401);

    // Dave himself, whose preferred_username is his verified email: linked.
    op.set_user("dave", "dave@example.com", &[]).await;
    op.tamper(
        &client_id,
        json!({"claims": {"preferred_username": "dave@example.com"}}),
    )
    .await;
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "dave").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let me = c.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["user"]["email"], "dave@example.com", "{me}");
}

/// An insider who administers the users of a provider (a partner's tenant, a second IdP) makes
/// a user there with the email of a Warden account. Linking by email hands over no account
/// with organization-wide rights (break-glass accounts are among them), nor one linked to
/// another provider; and the provider's word for a second factor does not replace
/// the account's own on the sign-in that links it.
#[tokio::test]
async fn a_providers_administrator_cannot_take_over_accounts_by_their_email() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    add_provider(
        &app,
        &admin,
        &op,
        json!({"link_existing_users": true, "trust_provider_mfa": true}),
    )
    .await;
    // The organization administrator: refused, and no link is left behind.
    op.set_user_amr("evil-admin", ADMIN_EMAIL, &["mfa"]).await;
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "evil-admin").await;
    assert_refused(&r, "no_account");
    c.get("/api/v1/me").await.assert_status(401);
    let refused = audit(&admin, "action=sign_in&outcome=denied", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| e["details"]["failure"] == "link_refused"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("organization-wide rights"))),
        "{refused:#?}"
    );
    // A plain local account is linked, but the provider's `amr` does not stand in for the
    // account's own second factor on that first sign-in.
    let bob = app.user_client(&admin, "bob@example.com").await;
    let (secret, _) = crate::mfa::enrol(&app, &bob).await;
    op.set_user_amr("bob-there", "bob@example.com", &["mfa"])
        .await;
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "bob-there").await;
    assert_ne!(
        location(&r),
        "/",
        "the provider's amr stood in for bob's own code"
    );
    c.get("/api/v1/me").await.assert_status(401);
    // Whoever holds that provider account but not bob's code: a wrong code, then a sign-in
    // again. No link was left behind by the first try, so the `amr` still stands in for
    // nothing.
    c.post("/api/v1/auth/mfa", json!({"code": "000000"}))
        .await
        .assert_status(401);
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "bob-there").await;
    assert_ne!(
        location(&r),
        "/",
        "a failed second factor left the link, and the provider's amr then stood in for it"
    );
    c.get("/api/v1/me").await.assert_status(401);
    // Bob himself gives his code: linked now, and from then on the trusted provider's `amr`
    // counts as his second factor.
    app.clock.advance_secs(30);
    c.post(
        "/api/v1/auth/mfa",
        json!({"code": crate::mfa::code(&app, &secret, 0)}),
    )
    .await
    .assert_status(200);
    c.get("/api/v1/me").await.assert_status(200);
    let linked = audit(
        &admin,
        "action=sign_in&actor=bob@example.com&outcome=allowed",
        1,
    )
    .await;
    assert!(
        linked
            .iter()
            .any(|e| e["details"]["account_linked"] == true),
        "{linked:#?}"
    );
    let c = app.client();
    let r = sso_sign_in(&app, &c, &op, "bob-there").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    c.get("/api/v1/me").await.assert_status(200);
}

/// Turning a provider off ends what it vouched for: the sessions of the people linked to it,
/// and the API keys and kubeconfigs of those who had no other way in. Pointing it at another
/// issuer takes that issuer's own client secret and unlinks the old subjects.
#[tokio::test]
async fn turning_a_provider_off_ends_its_sign_ins_and_another_issuer_is_another_provider() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    add_provider(&app, &admin, &op, json!({})).await;
    op.set_user("zoe", "zoe@example.com", &[]).await;
    let zoe = app.client();
    let r = sso_sign_in(&app, &zoe, &op, "zoe").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    zoe.get("/api/v1/me").await.assert_status(200);
    let key = zoe.create_api_key(json!({"name": "ci"})).await;
    let by_key = app.client();
    by_key
        .get_bearer("/api/v1/me", &key)
        .await
        .assert_status(200);

    // Another issuer without its own secret: refused, nothing changed.
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"issuer": "https://idp2.example.com"}),
        )
        .await
        .assert_status(422);
    zoe.get("/api/v1/me").await.assert_status(200);

    // Turned off: zoe's session and key end with it.
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"enabled": false}),
        )
        .await
        .assert_status(200);
    zoe.get("/api/v1/me").await.assert_status(401);
    by_key
        .get_bearer("/api/v1/me", &key)
        .await
        .assert_status(401);
    let changes = audit(&admin, "action=identity_provider.update", 1).await;
    assert!(
        changes
            .iter()
            .any(|e| e["details"]["after"]["ended"]["sessions_ended"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "zoe@example.com"))),
        "{changes:#?}"
    );

    // Another issuer, with its secret: the old subjects are unlinked.
    admin
        .patch(
            &format!("/api/v1/identity-providers/{PROVIDER}"),
            json!({"issuer": "https://idp2.example.com", "client_secret": "the new issuer's secret"}),
        )
        .await
        .assert_status(200);
    let changes = audit(&admin, "action=identity_provider.update", 2).await;
    assert!(
        changes
            .iter()
            .any(|e| e["details"]["after"]["ended"]["unlinked"] == true),
        "{changes:#?}"
    );
}

/// Where people may create or name groups at the provider, mapping by name must not hand out
/// what a Warden group named alike holds: groups with an organization-wide grant, a role that
/// writes anywhere (a project's administrators) and a project's approver group are neither
/// joined nor left by name (an explicit table may name them); a group that only reads, or
/// holds nothing, still is.
#[tokio::test]
async fn by_name_never_hands_out_organization_rights_or_approver_groups() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    for g in [
        "platform-admins",
        "prod-approvers",
        "developers",
        "ops",
        "prod-admins",
        "prod-readers",
    ] {
        admin
            .post("/api/v1/groups", json!({"name": g}))
            .await
            .assert_status(201);
    }
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "group", "name": "platform-admins"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(201);
    admin
        .post("/api/v1/projects", json!({"name": "prod"}))
        .await
        .assert_status(201);
    admin
        .put(
            "/api/v1/projects/prod/approver-group",
            json!({"group": "prod-approvers"}),
        )
        .await
        .assert_status(200);
    // A project's administrators write to its clusters; its readers only read.
    for (g, role) in [
        ("prod-admins", "PROJECT_ADMIN"),
        ("prod-readers", "PROJECT_READ_ONLY"),
    ] {
        admin
            .post(
                "/api/v1/bindings",
                json!({"subject": {"kind": "group", "name": g}, "role": role, "project": "prod"}),
            )
            .await
            .assert_status(201);
    }
    add_provider(&app, &admin, &op, json!({})).await;
    // A member who made groups named like Warden's at the provider.
    op.set_user(
        "eve",
        "eve@example.com",
        &[
            "Platform-Admins",
            "prod-approvers",
            "developers",
            "prod-admins",
            "prod-readers",
        ],
    )
    .await;
    let eve = app.client();
    let r = sso_sign_in(&app, &eve, &op, "eve").await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(location(&r), "/");
    let groups = groups_of(&admin, "eve@example.com").await;
    assert!(groups.contains(&"developers".to_owned()), "{groups:?}");
    assert!(
        !groups.contains(&"platform-admins".to_owned()),
        "{groups:?}"
    );
    assert!(!groups.contains(&"prod-approvers".to_owned()), "{groups:?}");
    assert!(!groups.contains(&"prod-admins".to_owned()), "{groups:?}");
    assert!(groups.contains(&"prod-readers".to_owned()), "{groups:?}");
    let me = eve.get("/api/v1/me").await.assert_status(200).json();
    assert!(
        me["org_permissions"]
            .as_array()
            .is_none_or(|p| !p.iter().any(|x| x == "user.write")),
        "{me}"
    );
    eve.get("/api/v1/users").await.assert_status(403);
    // What an administrator gave by hand to a guarded group stays through the next sign-in.
    admin
        .post(
            "/api/v1/groups/prod-approvers/members",
            json!({"user": "eve@example.com"}),
        )
        .await
        .assert_status(201);
    op.set_user("eve", "eve@example.com", &[]).await;
    let again = app.client();
    let r = sso_sign_in(&app, &again, &op, "eve").await;
    assert_eq!(r.status, 303, "{}", r.body);
    let groups = groups_of(&admin, "eve@example.com").await;
    assert!(groups.contains(&"prod-approvers".to_owned()), "{groups:?}");
    assert!(!groups.contains(&"developers".to_owned()), "{groups:?}");
}

/// An explicit table may map a provider's group onto Organization Admins, and the provider
/// decides membership at every sign-in: but the last administrator signing in without that
/// group keeps it (audited), or the organization would be left with no one to administer it.
/// With another administrator there, the provider's word applies. Nor can administrators who
/// sign in only through the provider turn it off.
#[tokio::test]
async fn the_providers_groups_never_take_the_last_administrator_away() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    add_provider(
        &app,
        &admin,
        &op,
        json!({"group_mapping_mode": "explicit", "group_mapping": {"it-admins": "Organization Admins"}}),
    )
    .await;
    let admins = "Organization Admins".to_owned();
    let sign_in = |groups: &'static [&'static str]| {
        let (app, op) = (&app, &op);
        async move {
            op.set_user("alice", "alice@example.com", groups).await;
            let c = app.client();
            let r = sso_sign_in(app, &c, op, "alice").await;
            assert_eq!(r.status, 303, "{}", r.body);
            assert_eq!(location(&r), "/");
            c
        }
    };
    sign_in(&["it-admins"]).await;
    assert!(groups_of(&admin, "alice@example.com")
        .await
        .contains(&admins));
    // Another administrator is there: the provider's word applies.
    sign_in(&[]).await;
    assert!(!groups_of(&admin, "alice@example.com")
        .await
        .contains(&admins));
    let alice = sign_in(&["it-admins"]).await;
    assert!(groups_of(&admin, "alice@example.com")
        .await
        .contains(&admins));
    alice.get("/api/v1/users").await.assert_status(200);
    // The first administrator steps down; alice is the last.
    admin
        .delete(&format!(
            "/api/v1/groups/Organization%20Admins/members/{ADMIN_EMAIL}"
        ))
        .await
        .assert_status(200);
    let alice = sign_in(&[]).await;
    assert!(groups_of(&alice, "alice@example.com")
        .await
        .contains(&admins));
    alice.get("/api/v1/users").await.assert_status(200);
    let kept = audit(&alice, "action=sign_in.groups&actor=alice@example.com", 4).await;
    assert_eq!(
        kept[0]["details"]["groups_kept"],
        json!(["Organization Admins"]),
        "{:#}",
        kept[0]
    );
    assert_eq!(kept[0]["details"]["groups_removed"], json!([]));

    // Nor can the last administrator turn the provider off or delete it: every administrator
    // signs in only through it, and no one could administer again. With an administrator who
    // has a local password back, they can.
    let provider = format!("/api/v1/identity-providers/{PROVIDER}");
    let r = alice.patch(&provider, json!({"enabled": false})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    alice.delete(&provider).await.assert_status(409);
    for action in ["identity_provider.update", "identity_provider.delete"] {
        let refused = audit(&alice, &format!("action={action}&outcome=denied"), 1).await;
        assert!(
            refused[0]["reason"]
                .as_str()
                .unwrap()
                .contains("every administrator signs in only through this identity provider"),
            "{}",
            refused[0]
        );
    }
    let p = alice.get(&provider).await.assert_status(200).json();
    assert_eq!(p["enabled"], true, "{p}");
    alice
        .post(
            "/api/v1/groups/Organization%20Admins/members",
            json!({"user": ADMIN_EMAIL}),
        )
        .await
        .assert_status(201);
    alice
        .patch(&provider, json!({"enabled": false}))
        .await
        .assert_status(200);
}

/// Linking an existing account by its email (no second factor of its own) hands it to the
/// provider: someone who made it before its owner came (a user manager, with a password they
/// chose and a key they minted) keeps no way in.
#[tokio::test]
async fn linking_by_email_ends_the_accounts_local_password_sessions_and_keys() {
    let op = OidcProvider::start().await;
    let (app, admin) = TestApp::spawn_with(master_key_env())
        .await
        .with_admin()
        .await;
    let mallory = crate::auth::delegate(
        &app,
        &admin,
        "mallory@example.com",
        "USER_MANAGER",
        &["user.read", "user.write"],
    )
    .await;
    // Mallory makes Jane's account before Jane starts, signs in to it and mints a key.
    mallory
        .post(
            "/api/v1/users",
            json!({"email": "jane@example.com", "name": "Jane", "password": "mallory knows this one"}),
        )
        .await
        .assert_status(201);
    let as_jane = app.client();
    as_jane
        .login("jane@example.com", "mallory knows this one")
        .await
        .assert_status(200);
    as_jane
        .post(
            "/api/v1/me/password",
            json!({"current_password": "mallory knows this one", "new_password": "mallory's second choice"}),
        )
        .await
        .assert_status(204);
    let as_jane = app.client();
    as_jane
        .login("jane@example.com", "mallory's second choice")
        .await
        .assert_status(200);
    let key = as_jane
        .create_api_key(json!({"name": "later", "expires_in_days": 365}))
        .await;
    as_jane
        .get_bearer("/api/v1/me", &key)
        .await
        .assert_status(200);
    // And Joe's, with no password: the set-password link is kept for later.
    let joe_link = crate::auth::create_user_with_link(&mallory, "joe@example.com", "Joe").await;
    add_provider(&app, &admin, &op, json!({"link_existing_users": true})).await;
    // Joe's first sign-in through the provider links his account, and ends the kept link.
    op.set_user("joe-idp", "joe@example.com", &[]).await;
    let joe = app.client();
    let r = sso_sign_in(&app, &joe, &op, "joe-idp").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let chosen = "mallory's kept link";
    assert!(
        !crate::auth::set_password_with_link(&app, &joe_link, chosen).await,
        "the kept link set a password"
    );
    app.client()
        .login("joe@example.com", chosen)
        .await
        .assert_status(401);
    joe.get("/api/v1/me").await.assert_status(200);
    let linked = audit(&admin, "action=sign_in.account&actor=joe@example.com", 1).await;
    assert_eq!(
        linked[0]["details"]["ended"]["set_password_links"], 1,
        "{linked:#?}"
    );
    // Jane's first sign-in through the provider links the account.
    op.set_user("jane-idp", "jane@example.com", &[]).await;
    let jane = app.client();
    let r = sso_sign_in(&app, &jane, &op, "jane-idp").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    jane.get("/api/v1/me").await.assert_status(200);
    // Mallory's ways in are gone.
    as_jane.get("/api/v1/me").await.assert_status(401);
    as_jane
        .get_bearer("/api/v1/me", &key)
        .await
        .assert_status(401);
    app.client()
        .login("jane@example.com", "mallory's second choice")
        .await
        .assert_status(401);
    let linked = audit(&admin, "action=sign_in.account&actor=jane@example.com", 1).await;
    assert_eq!(linked[0]["details"]["account_linked"], true, "{linked:#?}");
    assert_eq!(
        linked[0]["details"]["ended"]["local_password"], true,
        "{linked:#?}"
    );
    // Her next sign-in through the provider is an ordinary one.
    let again = app.client();
    let r = sso_sign_in(&app, &again, &op, "jane-idp").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    again.get("/api/v1/me").await.assert_status(200);
}

/// A provider vouches for its user (that they still exist there, and their groups) only at a
/// sign-in through it: an API key or a kubeconfig of someone linked to a provider stops when
/// that word is older than `WARDEN_SSO_REVALIDATE_HOURS`, so someone the provider dropped, or
/// took out of a group, who never signs in through it again does not keep the group's rights.
/// A sign-in through the provider brings them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_does_not_outlive_the_providers_word_about_its_owner() {
    use warden_server::gateway::testkit::Kubectl;
    use warden_server::gateway::transport::{DirectCredential, DirectEndpoint};
    let op = OidcProvider::start().await;
    let mut env = master_key_env();
    env.insert("WARDEN_SSO_REVALIDATE_HOURS".into(), "1".into());
    let (app, admin) = TestApp::spawn_with(env).await.with_admin().await;
    developers_read_dev(&admin, &[]).await;
    let sim = kubesim::KubeSim::start().await.expect("kubesim");
    app.import_direct_cluster(
        "dev-1",
        "dev",
        &[],
        DirectEndpoint {
            url: sim.url().to_owned(),
            ca_pem: sim.ca_pem().to_owned(),
            credential: DirectCredential::Bearer(sim.admin_token().to_owned()),
        },
    )
    .await;
    add_provider(&app, &admin, &op, json!({})).await;
    op.set_user("dev1", "dev1@example.com", &["developers"])
        .await;
    let dev1 = app.client();
    let r = sso_sign_in(&app, &dev1, &op, "dev1").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    let key = dev1
        .create_api_key(json!({"name": "ci", "expires_in_days": 30}))
        .await;
    let kubeconfig = dev1
        .get_bearer("/api/v1/kubeconfig", &key)
        .await
        .assert_status(200)
        .body;
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&dir.path().join("dev1"), &kubeconfig);
    k.run(&["get", "pods", "-A"]).await.expect_ok();
    dev1.get_bearer("/api/v1/projects", &key)
        .await
        .assert_status(200);

    // The provider drops them from the group; they never sign in through it again.
    op.set_user("dev1", "dev1@example.com", &[]).await;
    app.clock.advance_secs(3_700);
    let r = dev1.get_bearer("/api/v1/projects", &key).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.error_code(), "provider_sign_in_required");
    let out = k.run(&["get", "pods", "-A"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("identity provider"), "{}", out.stderr);

    // A sign-in through the provider: its word is fresh, and it says no group.
    let again = app.client();
    let r = sso_sign_in(&app, &again, &op, "dev1").await;
    assert_eq!(location(&r), "/", "{}", r.body);
    again
        .get_bearer("/api/v1/me", &key)
        .await
        .assert_status(200);
    let out = k.run(&["get", "pods", "-A"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    let admin = app.client();
    admin
        .login(ADMIN_EMAIL, ADMIN_NEW_PASSWORD)
        .await
        .assert_status(200);
    assert!(!groups_of(&admin, "dev1@example.com")
        .await
        .contains(&"developers".to_owned()));
}
