//! Sign-in, sessions, lockout, forced password change, CSRF. Runs on SQLite, and on
//! PostgreSQL when WARDEN_TEST_DATABASE_URL is set.

use serde_json::json;
use warden_server::testing::{Client, TestApp, ADMIN_EMAIL, ADMIN_PASSWORD, USER_PASSWORD};

const NEW_PASSWORD: &str = "the admin's new password";

#[tokio::test]
async fn right_password_signs_in_and_forces_a_change() {
    let app = TestApp::spawn().await;
    let c = app.client();
    let r = c
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(200);
    assert_eq!(r.json()["must_change_password"], true);
    assert_eq!(r.json()["user"]["email"], ADMIN_EMAIL);
    let cookie_header = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(cookie_header.contains("warden_session="), "{cookie_header}");
    assert!(cookie_header.contains("HttpOnly"), "{cookie_header}");
    assert!(cookie_header.contains("SameSite=Lax"), "{cookie_header}");

    // /me works while the change is pending; everything else answers 403 password_change_required.
    c.get("/api/v1/me").await.assert_status(200);
    let r = c.get("/api/v1/audit/events").await.assert_status(403);
    assert_eq!(r.error_code(), "password_change_required");

    // The policy applies.
    let r = c
        .post(
            "/api/v1/me/password",
            json!({"current_password": ADMIN_PASSWORD, "new_password": "short"}),
        )
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["new_password"]
        .as_str()
        .unwrap()
        .contains("12"));
    let r = c
        .post(
            "/api/v1/me/password",
            json!({"current_password": ADMIN_PASSWORD, "new_password": ADMIN_EMAIL}),
        )
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["new_password"]
        .as_str()
        .unwrap()
        .contains("email"));
    let r = c
        .post(
            "/api/v1/me/password",
            json!({"current_password": "not the password", "new_password": NEW_PASSWORD}),
        )
        .await
        .assert_status(422);
    assert!(r.json()["error"]["fields"]["current_password"].is_string());

    c.post(
        "/api/v1/me/password",
        json!({"current_password": ADMIN_PASSWORD, "new_password": NEW_PASSWORD}),
    )
    .await
    .assert_status(204);
    let me = c.get("/api/v1/me").await.assert_status(200).json();
    assert_eq!(me["must_change_password"], false);
    assert!(me["org_permissions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "user.write"));
    c.get("/api/v1/audit/events").await.assert_status(200);

    // The old password no longer works; the new one does.
    let c2 = app.client();
    c2.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(401);
    c2.login(ADMIN_EMAIL, NEW_PASSWORD).await.assert_status(200);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    let c = app.client();
    let wrong = c
        .login(ADMIN_EMAIL, "wrong password!!")
        .await
        .assert_status(401);
    let unknown = c
        .login("nobody@example.com", "wrong password!!")
        .await
        .assert_status(401);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.error_code(), "invalid_credentials");
    assert!(c.session_cookie().is_none());
    c.get("/api/v1/me").await.assert_status(401);

    // Both attempts are in the audit log, as denied sign-ins.
    let (_, admin) = TestApp::spawn().await.with_admin().await;
    drop(admin);
    let events = warden_domain::audit::search(&app.services().db, &Default::default(), None)
        .await
        .unwrap();
    let denied: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.action == "sign_in" && e.outcome == warden_domain::dto::Outcome::Denied)
        .collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied.iter().any(|e| e.actor == "nobody@example.com"));
}

#[tokio::test]
async fn lockout_after_five_failures_then_expiry() {
    let app = TestApp::spawn().await;
    let c = app.client();
    for _ in 0..4 {
        c.login(ADMIN_EMAIL, "wrong password!!")
            .await
            .assert_status(401);
    }
    let r = c
        .login(ADMIN_EMAIL, "wrong password!!")
        .await
        .assert_status(429);
    assert_eq!(r.error_code(), "locked");
    // Even the right password is refused while locked.
    c.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(429);
    // An unknown email locks the same way: the lockout reveals nothing.
    for _ in 0..4 {
        c.login("ghost@example.com", "wrong password!!")
            .await
            .assert_status(401);
    }
    c.login("ghost@example.com", "wrong password!!")
        .await
        .assert_status(429);

    app.clock.advance_secs(14 * 60);
    c.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(429);
    app.clock.advance_secs(2 * 60);
    c.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(200);
}

/// A burst of concurrent wrong guesses for one account: every guess is counted before its
/// password is checked, so at most `lockout_threshold` (5) passwords are checked in the window
/// and the rest are refused as locked. (Counted after the check, every guess of the burst was
/// checked against the real password.)
#[tokio::test]
async fn concurrent_wrong_guesses_get_at_most_five_password_checks() {
    const GUESSES: usize = 120;
    let app = TestApp::spawn().await;
    // One failure already in the window.
    app.client()
        .login(ADMIN_EMAIL, "wrong guess first")
        .await
        .assert_status(401);

    let clients: Vec<_> = (0..GUESSES).map(|_| app.client()).collect();
    let guesses: Vec<String> = (0..GUESSES)
        .map(|i| format!("wrong guess {i:03}"))
        .collect();
    let answers = futures::future::join_all(
        clients
            .iter()
            .zip(&guesses)
            .map(|(c, guess)| c.login(ADMIN_EMAIL, guess)),
    )
    .await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for r in &answers {
        *by_status.entry(r.status).or_default() += 1;
    }
    // What a client sees: three more "invalid" answers, then the fifth failure locks.
    let invalid = by_status.get(&401).copied().unwrap_or(0);
    assert!(invalid <= 3, "answers by status: {by_status:?}");
    assert_eq!(
        invalid + by_status.get(&429).copied().unwrap_or(0),
        GUESSES,
        "answers by status: {by_status:?}"
    );
    assert!(answers
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.error_code() == "locked"));

    // The account is locked: even the right password is refused.
    let r = app
        .client()
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(429);
    assert_eq!(r.error_code(), "locked");

    // Every attempt was counted, the refused ones included.
    use sea_orm::EntityTrait;
    let throttle = warden_domain::entities::login_throttle::Entity::find_by_id(ADMIN_EMAIL)
        .one(&app.services().db)
        .await
        .unwrap()
        .expect("a throttle row");
    assert_eq!(throttle.failures as usize, 1 + GUESSES + 1);
    assert!(throttle.locked_until.is_some());

    // The audit log says which attempts had their password checked: five in all.
    let q = warden_domain::dto::AuditQuery {
        action: Some("sign_in".into()),
        outcome: Some("denied".into()),
        limit: Some(500),
        ..Default::default()
    };
    let events = warden_domain::audit::search(&app.services().db, &q, None)
        .await
        .unwrap()
        .items;
    let reason = |e: &warden_domain::dto::AuditEventDto| e.reason.clone().unwrap_or_default();
    let checked = events
        .iter()
        .filter(|e| reason(e).starts_with("invalid credentials"))
        .count();
    let refused = events
        .iter()
        .filter(|e| reason(e).ends_with("password not checked"))
        .count();
    // Unauthenticated refusals beyond the first of each minute are counted in one summary row
    // (with their reasons), not written one by one.
    app.clock.advance_secs(61);
    app.services().flush_refusals().await.unwrap();
    let q = warden_domain::dto::AuditQuery {
        action: Some("sign_in.sampled".into()),
        ..Default::default()
    };
    let summaries = warden_domain::audit::search(&app.services().db, &q, None)
        .await
        .unwrap()
        .items;
    let (mut checked_more, mut refused_more, mut suppressed) = (0, 0, 0);
    for s in &summaries {
        suppressed += s.details["suppressed"].as_u64().unwrap() as usize;
        for r in s.details["reasons"].as_array().unwrap() {
            let (text, n) = (r["value"].as_str().unwrap(), r["count"].as_u64().unwrap());
            if text.starts_with("invalid credentials") {
                checked_more += n as usize;
            } else if text.ends_with("password not checked") {
                refused_more += n as usize;
            }
        }
    }
    let checked = checked + checked_more;
    assert!(
        checked <= 5,
        "{checked} passwords were checked, at most 5 may be"
    );
    assert_eq!(
        (checked + refused + refused_more, events.len() + suppressed),
        (1 + GUESSES + 1, 1 + GUESSES + 1)
    );
}

#[tokio::test]
async fn failures_outside_the_window_do_not_lock() {
    let app = TestApp::spawn().await;
    let c = app.client();
    for _ in 0..4 {
        c.login(ADMIN_EMAIL, "wrong password!!")
            .await
            .assert_status(401);
    }
    app.clock.advance_secs(16 * 60);
    c.login(ADMIN_EMAIL, "wrong password!!")
        .await
        .assert_status(401);
    c.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn session_id_rotates_at_sign_in_and_sign_out_kills_it() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let first = c.session_cookie().expect("cookie");
    c.login(ADMIN_EMAIL, NEW_PASSWORD).await.assert_status(200);
    let second = c.session_cookie().expect("cookie");
    assert_ne!(first, second, "the session id must change at sign-in");

    // A planted (fixated) cookie is not adopted as the signed-in session.
    let victim = app.client();
    victim.set_session_cookie("attacker-chosen-id");
    victim
        .login(ADMIN_EMAIL, NEW_PASSWORD)
        .await
        .assert_status(200);
    assert_ne!(victim.session_cookie().unwrap(), "attacker-chosen-id");

    c.post("/api/v1/auth/logout", json!({}))
        .await
        .assert_status(204);
    c.get("/api/v1/me").await.assert_status(401);
    // Replaying the old cookie does not work: the session was deleted server-side.
    c.set_session_cookie(&second);
    c.get("/api/v1/me").await.assert_status(401);
}

#[tokio::test]
async fn idle_and_absolute_timeouts() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    app.clock.advance_secs(29 * 60);
    c.get("/api/v1/me").await.assert_status(200);
    app.clock.advance_secs(31 * 60);
    c.get("/api/v1/me").await.assert_status(401);

    // Absolute: active every 20 minutes, the session still ends after 12 hours.
    c.login(ADMIN_EMAIL, NEW_PASSWORD).await.assert_status(200);
    for _ in 0..35 {
        app.clock.advance_secs(20 * 60);
        c.get("/api/v1/me").await.assert_status(200);
    }
    app.clock.advance_secs(20 * 60);
    c.get("/api/v1/me").await.assert_status(401);
}

/// A page that refreshes itself (the Clusters page, every few seconds) is no activity: a
/// console left open on a shared workstation still signs itself out when idle. The same calls
/// made by the person (a first load, a navigation) keep it alive.
#[tokio::test]
async fn a_pages_background_refresh_does_not_keep_the_session_alive() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let sfn = |name: &'static str, form: Vec<(&'static str, &'static str)>| {
        c.http
            .post(format!("{}/sfn/{name}", app.url))
            .header("origin", app.url.clone())
            .form(&form)
            .send()
    };
    // Someone at the keyboard: 31 minutes of loads, every 30 s, keep the session.
    for _ in 0..62 {
        app.clock.advance_secs(30);
        let r = sfn("list_clusters", vec![]).await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    c.get("/api/v1/me").await.assert_status(200);
    // Nobody there: the page's own refreshes, for 31 minutes, do not.
    let mut refused = false;
    for i in 0..62 {
        app.clock.advance_secs(30);
        let what = if i % 2 == 0 {
            "list_clusters"
        } else {
            "get_cluster"
        };
        let form = if what == "get_cluster" {
            vec![("name", "nowhere"), ("poll", "true")]
        } else {
            vec![("poll", "true")]
        };
        let r = sfn(what, form).await.unwrap();
        refused |= r.status() == 401;
    }
    assert!(refused, "the refreshes were never refused");
    c.get("/api/v1/me").await.assert_status(401);
}

#[tokio::test]
async fn csrf_requires_our_origin_for_cookie_authenticated_writes() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let cookie = c.session_cookie().unwrap();
    let bare = app.client_without_origin();
    bare.set_session_cookie(&cookie);
    let r = bare
        .post(
            "/api/v1/me/password",
            json!({"current_password": NEW_PASSWORD, "new_password": "yet another password"}),
        )
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "csrf");
    // A foreign Origin is refused too, also on server functions.
    let r = bare
        .http
        .post(format!("{}/sfn/logout", app.url))
        .header("origin", "https://evil.example")
        .header("cookie", format!("warden_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Reads need no Origin.
    bare.get("/api/v1/me").await.assert_status(200);
    // The same-origin client still works.
    c.post(
        "/api/v1/me/password",
        json!({"current_password": NEW_PASSWORD, "new_password": "yet another password"}),
    )
    .await
    .assert_status(204);
}

/// The token of a set-password link in an answer that carries one (a user made without a
/// password, a reset).
pub(crate) fn link_token(answer: &serde_json::Value) -> String {
    answer["set_password_url"]
        .as_str()
        .expect("a set-password link")
        .split("token=")
        .nth(1)
        .expect("a token in the link")
        .to_owned()
}

/// `by` makes an account without a password; its set-password link's token.
pub(crate) async fn create_user_with_link(by: &Client, email: &str, name: &str) -> String {
    let r = by
        .post("/api/v1/users", json!({"email": email, "name": name}))
        .await
        .assert_status(201);
    link_token(&r.json())
}

/// Set a password with a set-password link's token through the console's form (as a browser
/// without JavaScript does); whether it was set.
pub(crate) async fn set_password_with_link(app: &TestApp, token: &str, password: &str) -> bool {
    let r = app
        .client()
        .post_form(
            "/sfn/set_password",
            &[
                ("token", token),
                ("new_password", password),
                ("confirm_password", password),
            ],
        )
        .await;
    r.headers
        .get("location")
        .is_some_and(|l| l == "/login?password_set=1")
}

/// A set-password link sets nothing once its account is deactivated (its password would be
/// the live one the day the account is reactivated), and stays ended after a reactivation.
#[tokio::test]
async fn deactivation_ends_the_accounts_set_password_links() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let token = create_user_with_link(&admin, "leaver@example.com", "Leaver").await;
    let leaked = "a leaked link's password";
    for status in ["deactivated", "active"] {
        admin
            .patch(
                "/api/v1/users/leaver@example.com",
                json!({"status": status}),
            )
            .await
            .assert_status(200);
        assert!(
            !set_password_with_link(&app, &token, leaked).await,
            "the link set a password ({status})"
        );
        app.client()
            .login("leaver@example.com", leaked)
            .await
            .assert_status(401);
    }
}

#[tokio::test]
async fn admin_reset_password_link_forces_a_new_password() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let email = warden_domain::types::Email::parse(ADMIN_EMAIL).unwrap();
    let token = warden_domain::identity::authn::admin_reset_password(
        app.services(),
        None,
        &email,
        Default::default(),
    )
    .await
    .unwrap()
    .token;
    // Sessions ended; the old password stopped working.
    c.get("/api/v1/me").await.assert_status(401);
    c.login(ADMIN_EMAIL, NEW_PASSWORD).await.assert_status(401);

    // The set-password page is a server-rendered form that works without JavaScript.
    let page = c
        .get(&format!("/set-password?token={token}"))
        .await
        .assert_status(200);
    assert!(
        page.body.contains("action=\"/sfn/set_password\""),
        "{}",
        page.body
    );
    let r = c
        .post_form(
            "/sfn/set_password",
            &[
                ("token", &token),
                ("new_password", "short"),
                ("confirm_password", "short"),
            ],
        )
        .await;
    assert!(r.status == 302 || r.status == 303, "{}", r.status);
    let back = r.headers["location"].to_str().unwrap().to_owned();
    assert!(back.contains("err.new_password"), "{back}");
    // The page shows it (signed for this browser, which has no session yet).
    let page = c.get(&back).await;
    assert_eq!(
        page.status,
        200,
        "{back}: {:?}",
        page.headers.get("location")
    );
    assert!(
        page.body.contains("class=\"field-error\"") || page.body.contains("role=\"alert\""),
        "{}",
        page.body
    );
    let r = c
        .post_form(
            "/sfn/set_password",
            &[
                ("token", &token),
                ("new_password", "a brand new password"),
                ("confirm_password", "a brand new password"),
            ],
        )
        .await;
    assert_eq!(r.headers["location"], "/login?password_set=1");
    // One use only.
    let r = c
        .post_form(
            "/sfn/set_password",
            &[
                ("token", &token),
                ("new_password", "another new password"),
                ("confirm_password", "another new password"),
            ],
        )
        .await;
    assert!(r.headers["location"]
        .to_str()
        .unwrap()
        .contains("err.token"));
    c.login(ADMIN_EMAIL, "a brand new password")
        .await
        .assert_status(200);
}

#[tokio::test]
async fn sign_in_form_works_without_javascript() {
    let app = TestApp::spawn().await;
    let c = app.client();
    // Console pages send signed-out browsers to the sign-in page.
    let r = c.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/login");
    let page = c.get("/login").await.assert_status(200);
    assert!(page.body.contains("action=\"/sfn/login\""));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("'nonce-"), "{csp}");
    // Sockets to our own origin only: no bare ws:/wss: (any host).
    assert!(
        csp.contains("connect-src 'self';") && !csp.contains("ws:"),
        "{csp}"
    );

    let r = c
        .post_form(
            "/sfn/login",
            &[("email", ADMIN_EMAIL), ("password", "wrong password!!")],
        )
        .await;
    assert_eq!(r.headers["location"], "/login?error=invalid");
    let page = c.get("/login?error=invalid").await.assert_status(200);
    assert!(page.body.contains("Invalid email or password."));

    let r = c
        .post_form(
            "/sfn/login",
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(r.headers["location"], "/change-password");
    // The forced change is enforced on every console page.
    let r = c.get("/").await;
    assert_eq!(r.headers["location"], "/change-password");
    let r = c
        .post_form(
            "/sfn/change_password",
            &[
                ("current_password", ADMIN_PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("confirm_password", "different password"),
            ],
        )
        .await;
    let back = r.headers["location"].to_str().unwrap().to_owned();
    assert!(back.contains("err.confirm_password"), "{back}");
    assert_eq!(c.get(&back).await.status, 200, "{back}");
    let r = c
        .post_form(
            "/sfn/change_password",
            &[
                ("current_password", ADMIN_PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("confirm_password", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.headers["location"], "/?password_changed=1");
    let home = c.get("/").await.assert_status(200);
    assert!(home.body.contains("Welcome"), "{}", home.body);
}

#[tokio::test]
async fn deactivated_users_lose_their_session() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    use sea_orm::{ConnectionTrait, Statement};
    let db = &app.services().db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE users SET status = 'deactivated'".to_owned(),
    ))
    .await
    .unwrap();
    c.get("/api/v1/me").await.assert_status(401);
    c.login(ADMIN_EMAIL, NEW_PASSWORD).await.assert_status(401);
}

/// An Authorization header earns the CSRF exemption only when it is a valid API key, and
/// never on the console's server functions.
#[tokio::test]
async fn a_bogus_bearer_does_not_skip_the_csrf_check() {
    let (app, c) = TestApp::spawn().await.with_admin().await;
    let cookie = c.session_cookie().unwrap();
    let forged = |path: &str| {
        c.http
            .post(format!("{}{path}", app.url))
            .header("origin", "https://evil.example")
            .header("authorization", "Bearer not-a-key")
            .header("cookie", format!("warden_session={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
    };
    let r = forged("/sfn/logout").send().await.unwrap();
    assert_eq!(r.status(), 403, "a server function behind a bogus bearer");
    let r = forged("/api/v1/projects")
        .header("content-type", "application/json")
        .body(r#"{"name":"csrf-made"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Still signed in, nothing created.
    c.get("/api/v1/me").await.assert_status(200);
    c.get("/api/v1/projects/csrf-made").await.assert_status(404);

    // A real API key needs no Origin.
    let key = c.create_api_key(json!({"name": "ci"})).await;
    let bare = app.client_without_origin();
    bare.post_bearer("/api/v1/projects", &key, json!({"name": "by-key"}))
        .await
        .assert_status(201);
    // ...but not on a server function, where the cookie is what authenticates.
    let r = bare
        .http
        .post(format!("{}/sfn/logout", app.url))
        .header("authorization", format!("Bearer {key}"))
        .header("origin", "https://evil.example")
        .header("cookie", format!("warden_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    c.get("/api/v1/me").await.assert_status(200);
}

/// A flood of sign-ins from one address is cut with 429 and Retry-After; other addresses and
/// other routes are not affected; the refusals are counted in /metrics.
#[tokio::test]
async fn sign_in_floods_are_rate_limited_per_source() {
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_RATE_LIMIT_SIGN_IN".to_owned(),
        "5".to_owned(),
    )]))
    .await;
    let c = app.client();
    let attempts = futures::future::join_all(
        (0..40).map(|_| c.login("nobody@example.com", "wrong password, wrong")),
    )
    .await;
    // (Past five failures the account lock answers too; the limit comes before it.)
    let limited: Vec<_> = attempts
        .iter()
        .filter(|r| r.error_code() == "rate_limited")
        .collect();
    let checked = attempts.len() - limited.len();
    assert!(
        checked <= 5,
        "{checked} sign-ins were checked past a burst of 5"
    );
    assert!(limited.len() >= 35, "only {} refused", limited.len());
    let r = limited[0];
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // The console's sign-in server function shares the limit.
    let r = c
        .post_form(
            "/sfn/login",
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429);
    // Other routes are not limited.
    c.get("/healthz").await.assert_status(200);
    c.get("/api/v1/me").await.assert_status(401);
    let metrics = c.get("/metrics").await.assert_status(200).body;
    let n =
        warden_server::testing::metric(&metrics, "warden_rate_limited_total{class=\"sign_in\"}")
            .expect("the counter");
    assert!(n >= 36.0, "{n}");
}

/// With WARDEN_METRICS_TOKEN set, /metrics needs it.
#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    let token = "metrics-token-0123456789";
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_METRICS_TOKEN".to_owned(),
        token.to_owned(),
    )]))
    .await;
    let c = app.client();
    let r = c.get("/metrics").await.assert_status(401);
    assert!(r.headers.contains_key("www-authenticate"));
    assert!(!r.body.contains("warden_http_requests_total"));
    c.get_bearer("/metrics", "metrics-token-012345678X")
        .await
        .assert_status(401);
    let r = c.get_bearer("/metrics", token).await.assert_status(200);
    assert!(r.body.contains("warden_http_requests_total"), "{}", r.body);
    // Health stays open for probes.
    c.get("/healthz").await.assert_status(200);
    // With the token, through a proxy too.
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", app.url))
        .bearer_auth(token)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Without a metrics token, /metrics answers a scraper that reaches Warden directly, not a
/// request that came through a proxy (an Ingress publishing the console to everyone).
#[tokio::test]
async fn without_a_token_the_metrics_are_not_served_through_a_proxy() {
    let app = TestApp::spawn().await;
    app.client().get("/metrics").await.assert_status(200);
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;proto=https"),
    ] {
        let r = reqwest::Client::new()
            .get(format!("{}/metrics", app.url))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("warden_http_requests_total"), "{body}");
    }
}

/// Whoever reads the sessions table (a backup, a read-only role) finds no cookie to replay:
/// rows are keyed by the SHA-256 of the session id, and a row's key sent as a cookie is no
/// session.
#[tokio::test]
async fn the_sessions_table_holds_no_cookie_to_replay() {
    use sea_orm::{ConnectionTrait, Statement};
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let cookie = admin.session_cookie().expect("a session cookie");
    let db = &app.services().db;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, data FROM sessions",
        ))
        .await
        .unwrap();
    assert!(!rows.is_empty());
    let digest = warden_domain::secrets::sha256_hex(cookie.as_bytes());
    let mut found = false;
    for r in &rows {
        let id: String = r.try_get("", "id").unwrap();
        let data: String = r.try_get("", "data").unwrap();
        assert!(!id.contains(&cookie) && !data.contains(&cookie), "{id}");
        found |= id == digest;
        let replay = app.client();
        replay.set_session_cookie(&id);
        replay.get("/api/v1/me").await.assert_status(401);
    }
    assert!(found, "the admin's session is keyed by its digest");
    admin.get("/api/v1/me").await.assert_status(200);
    admin.post("/api/v1/auth/logout", json!({})).await;
    let left = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id FROM sessions WHERE id = '{digest}'"),
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "sign-out deletes the row");
}

/// A session written back after the user's sessions were ended (by a request that held it
/// while the password changed, or a sign-in that checked the old password) stays dead.
#[tokio::test]
async fn a_session_written_back_after_a_password_change_stays_dead() {
    use sea_orm::{ConnectionTrait, Statement};
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let user = app.user_client(&admin, "sally@example.com").await;
    let old_cookie = user.session_cookie().unwrap();
    let db = &app.services().db;
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id, data, expires_at, user_id FROM sessions",
        ))
        .await
        .unwrap();
    let saved: Vec<(String, String, i64, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "id").unwrap(),
                r.try_get("", "data").unwrap(),
                r.try_get("", "expires_at").unwrap(),
                r.try_get("", "user_id").unwrap(),
            )
        })
        .collect();
    // The administrator resets Sally's password: her sessions end.
    admin
        .post("/api/v1/users/sally@example.com/reset-password", json!({}))
        .await
        .assert_status(200);
    user.get("/api/v1/me").await.assert_status(401);
    // A racing request writes the old rows back, as they were.
    for (id, data, expires_at, user_id) in saved {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DatabaseBackend::Postgres => "INSERT INTO sessions (id, data, expires_at, user_id) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                _ => "INSERT OR IGNORE INTO sessions (id, data, expires_at, user_id) VALUES (?, ?, ?, ?)",
            },
            [id.into(), data.into(), expires_at.into(), user_id.into()],
        ))
        .await
        .unwrap();
    }
    let replay = app.client();
    replay.set_session_cookie(&old_cookie);
    replay.get("/api/v1/me").await.assert_status(401);
    // The administrator's own session (written back too) was not ended: it still works.
    admin.get("/api/v1/me").await.assert_status(200);
    // The reset is on record as the administrator's, from where they asked it (it commits
    // with the reset itself).
    let ev = admin
        .get("/api/v1/audit/events?action=user.reset_password")
        .await
        .json();
    let ev = &ev["items"][0];
    assert_eq!(ev["actor"], ADMIN_EMAIL, "{ev}");
    assert_eq!(ev["session_type"], "browser", "{ev}");
    assert_eq!(ev["source_ip"], "127.0.0.1", "{ev}");
    assert_eq!(ev["resource_name"], "sally@example.com", "{ev}");
}

/// A reset can also end what outlives the password: API keys and kubeconfigs.
#[tokio::test]
async fn a_reset_can_revoke_api_keys_and_kubeconfigs() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let sally = app.user_client(&admin, "sally@example.com").await;
    let key = sally.create_api_key(json!({"name": "laptop"})).await;
    let bare = app.client_without_origin();
    // A reset without options leaves the key working (the administrator chose so)...
    admin
        .post("/api/v1/users/sally@example.com/reset-password", json!({}))
        .await
        .assert_status(200);
    bare.get_bearer("/api/v1/me", &key).await.assert_status(200);
    // ...unknown options are refused, and nothing happens...
    admin
        .post(
            "/api/v1/users/sally@example.com/reset-password",
            json!({"revoke_everything": true}),
        )
        .await
        .assert_status(422);
    bare.get_bearer("/api/v1/me", &key).await.assert_status(200);
    // ...and with them, the key stops at once and the kubeconfigs are revoked.
    admin
        .post(
            "/api/v1/users/sally@example.com/reset-password",
            json!({"revoke_api_keys": true, "revoke_kubeconfigs": true}),
        )
        .await
        .assert_status(200);
    bare.get_bearer("/api/v1/me", &key).await.assert_status(401);
    let events = admin
        .get("/api/v1/audit/events?limit=20")
        .await
        .assert_status(200)
        .json();
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"api_key.revoke_all"), "{actions:?}");
    assert!(actions.contains(&"kubeconfig.revoke"), "{actions:?}");
}

/// A flood of failed sign-ins (from anywhere: the per-source limit is raised here) is counted
/// in full, but only the first of each minute are written one row each; the rest become one
/// summary row saying how many, from where and claiming whom.
#[tokio::test]
async fn failed_sign_ins_beyond_the_sample_are_counted_not_written_one_by_one() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use warden_domain::audit::RefusalSampler;
    use warden_domain::entities::audit_events;
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_RATE_LIMIT_SIGN_IN".to_owned(),
        "100000".to_owned(),
    )]))
    .await;
    let c = app.client();
    let flood = RefusalSampler::PER_WINDOW as usize + 12;
    for i in 0..flood {
        c.login(&format!("guess{i}@example.com"), "wrong password!!")
            .await
            .assert_status(401);
    }
    let db = &app.services().db;
    let rows = |action: &'static str| async move {
        audit_events::Entity::find()
            .filter(audit_events::Column::Action.eq(action))
            .all(db)
            .await
            .unwrap()
    };
    assert_eq!(
        rows("sign_in").await.len(),
        RefusalSampler::PER_WINDOW as usize
    );
    let metrics = c.get("/metrics").await.assert_status(200).body;
    assert!(
        metrics.contains(&format!(
            "warden_unauthenticated_refusals_total{{action=\"sign_in\"}} {flood}"
        )),
        "{metrics}"
    );
    // The window ends: its summary is written.
    assert!(rows("sign_in.sampled").await.is_empty());
    app.clock.advance_secs(61);
    app.services().flush_refusals().await.unwrap();
    let summary = rows("sign_in.sampled").await;
    assert_eq!(summary.len(), 1);
    let details: serde_json::Value = serde_json::from_str(&summary[0].details).unwrap();
    assert_eq!(details["suppressed"], 12);
    assert_eq!(details["sources"][0]["value"], "127.0.0.1");
    assert_eq!(details["sources"][0]["count"], 12);
    assert_eq!(details["claimed"].as_array().unwrap().len(), 10);
    assert_eq!(summary[0].outcome, "denied");
    // A new window writes in full again.
    c.login("late@example.com", "wrong password!!")
        .await
        .assert_status(401);
    assert_eq!(
        rows("sign_in").await.len(),
        RefusalSampler::PER_WINDOW as usize + 1
    );
    // A password typed into the email field is not what the log keeps.
    c.login("Tr0ub4dor&3-typed-too-early", "wrong password!!")
        .await;
    let all = rows("sign_in").await;
    assert!(
        all.iter()
            .all(|r| !r.actor_name.contains("Tr0ub4dor") && !r.details.contains("Tr0ub4dor")),
        "the log keeps what was typed in the email field"
    );
    assert!(all
        .iter()
        .any(|r| r.actor_name.contains("not an email address (27 characters")));
    assert!(matches!(
        warden_domain::audit::verify_chain(db).await.unwrap(),
        warden_domain::audit::ChainStatus::Intact { .. }
    ));
}

/// A signed-in user holding a new organization role `role` of `permissions`: a delegated
/// administrator.
pub(crate) async fn delegate(
    app: &TestApp,
    admin: &warden_server::testing::Client,
    email: &str,
    role: &str,
    permissions: &[&str],
) -> warden_server::testing::Client {
    admin
        .post(
            "/api/v1/roles",
            json!({"name": role, "scope": "organization", "permissions": permissions}),
        )
        .await
        .assert_status(201);
    let user = app.user_client(admin, email).await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": email}, "role": role}),
        )
        .await
        .assert_status(201);
    user
}

/// What a user manager made for a newcomer (a set-password link, or a first password they
/// chose) is checked again when it is used: an administrator promoted the newcomer before they
/// used it, so it lets nobody in (the user manager would otherwise sign in as an
/// administrator). The owner asks an administrator for a new link, which works; an
/// administrator's own link for the same account works; a newcomer who stays a newcomer
/// uses the user manager's link.
#[tokio::test]
async fn a_credential_made_by_a_user_manager_does_not_outlive_their_rights() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mallory = delegate(
        &app,
        &admin,
        "mallory@example.com",
        "USER_MANAGER",
        &["user.read", "user.write"],
    )
    .await;
    let kept = create_user_with_link(&mallory, "newcomer@example.com", "Newcomer").await;
    mallory
        .post(
            "/api/v1/users",
            json!({"email": "second@example.com", "name": "Second", "password": "mallory chose this one"}),
        )
        .await
        .assert_status(201);
    let stays = create_user_with_link(&mallory, "intern@example.com", "Intern").await;
    for who in ["newcomer@example.com", "second@example.com"] {
        admin
            .post(
                "/api/v1/bindings",
                json!({"subject": {"kind": "user", "name": who}, "role": "ADMIN"}),
            )
            .await
            .assert_status(201);
    }
    assert!(!set_password_with_link(&app, &kept, "mallory's new admin password").await);
    app.client()
        .login("newcomer@example.com", "mallory's new admin password")
        .await
        .assert_status(401);
    let r = app
        .client()
        .login("second@example.com", "mallory chose this one")
        .await
        .assert_status(403)
        .json();
    assert_eq!(r["error"]["code"], "password_needs_reset", "{r}");
    let refused = admin
        .get("/api/v1/audit/events?action=password.set_with_link&outcome=denied")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        refused["items"][0]["actor"], "mallory@example.com",
        "{refused}"
    );
    // An administrator's link works; the intern's (still a newcomer) from mallory works.
    let fresh = admin
        .post(
            "/api/v1/users/newcomer@example.com/reset-password",
            json!({}),
        )
        .await
        .assert_status(200)
        .json();
    assert!(set_password_with_link(&app, &link_token(&fresh), "the newcomer's own password").await);
    app.client()
        .login("newcomer@example.com", "the newcomer's own password")
        .await
        .assert_status(200);
    assert!(set_password_with_link(&app, &stays, "the intern's own password").await);
    // Once its owner replaced it, a password is theirs: promotions do not touch it.
    let intern = app.client();
    intern
        .login("intern@example.com", "the intern's own password")
        .await
        .assert_status(200);
}

/// Delegated user administration cannot take an account over: resetting a password or a
/// second factor, deactivating, reactivating or deleting someone takes holding everything
/// they hold (a user manager would otherwise reset an administrator's password and sign in
/// as them).
#[tokio::test]
async fn a_user_manager_cannot_take_over_an_account_that_holds_more() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let mallory = delegate(
        &app,
        &admin,
        "mallory@example.com",
        "USER_MANAGER",
        &["user.read", "user.write"],
    )
    .await;
    // A developer with a project role, and a newcomer who holds nothing yet.
    let _dev = app.user_client(&admin, "dev@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "dev@example.com"}, "role": "PROJECT_READ_ONLY", "project": "default"}),
        )
        .await
        .assert_status(201);
    let _new = app.user_client(&admin, "newcomer@example.com").await;

    for target in [ADMIN_EMAIL, "dev@example.com"] {
        let refused = mallory
            .post(&format!("/api/v1/users/{target}/reset-password"), json!({}))
            .await
            .assert_status(403)
            .body;
        assert!(!refused.contains("set-password"), "{refused}");
        mallory
            .delete(&format!("/api/v1/users/{target}/mfa"))
            .await
            .assert_status(403);
        mallory
            .patch(
                &format!("/api/v1/users/{target}"),
                json!({"status": "deactivated"}),
            )
            .await
            .assert_status(403);
        mallory
            .delete(&format!("/api/v1/users/{target}"))
            .await
            .assert_status(403);
    }
    // The administrator's session lives on (a reset would have ended it), still active.
    admin.get("/api/v1/me").await.assert_status(200);
    // A deactivated administrator is not reactivated (nor reset) by the user manager either.
    let _second = app.user_client(&admin, "second-admin@example.com").await;
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "second-admin@example.com"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(201);
    admin
        .patch(
            "/api/v1/users/second-admin@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    mallory
        .patch(
            "/api/v1/users/second-admin@example.com",
            json!({"status": "active"}),
        )
        .await
        .assert_status(403);
    mallory
        .post(
            "/api/v1/users/second-admin@example.com/reset-password",
            json!({}),
        )
        .await
        .assert_status(403);
    // Someone who holds nothing more than the manager: their job, done.
    mallory
        .post(
            "/api/v1/users/newcomer@example.com/reset-password",
            json!({}),
        )
        .await
        .assert_status(200);
    mallory
        .patch(
            "/api/v1/users/newcomer@example.com",
            json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    // The administrator, who holds everything, resets anyone.
    admin
        .post("/api/v1/users/dev@example.com/reset-password", json!({}))
        .await
        .assert_status(200);
    // Each refusal is audited with its reason.
    let actions = denied_actions(&admin, "mallory@example.com", "which you do not").await;
    for a in [
        "user.reset_password",
        "user.mfa.reset",
        "user.update",
        "user.delete",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }
}

/// An identity provider decides who signs in as whom (account links by email, group mapping
/// onto the administrators' group, a vouched second factor): `idp.write` alone does not let
/// anyone configure one; it takes everything an organization-wide grant carries.
#[tokio::test]
async fn idp_write_alone_cannot_configure_a_sign_in_provider() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let ivan = delegate(
        &app,
        &admin,
        "ivan@example.com",
        "IDP_MANAGER",
        &["idp.read", "idp.write"],
    )
    .await;
    let body = json!({
        "name": "corp", "issuer": "https://idp.example.com", "client_id": "warden",
        "client_secret": "s3cret-value", "link_existing_users": true, "trust_provider_mfa": true,
        "group_mapping_mode": "explicit", "group_mapping": {"it": "Organization Admins"}
    });
    ivan.post("/api/v1/identity-providers", body.clone())
        .await
        .assert_status(403);
    ivan.get("/api/v1/identity-providers")
        .await
        .assert_status(200);
    admin
        .post("/api/v1/identity-providers", body)
        .await
        .assert_status(201);
    ivan.patch(
        "/api/v1/identity-providers/corp",
        json!({"issuer": "https://evil.example.com"}),
    )
    .await
    .assert_status(403);
    ivan.delete("/api/v1/identity-providers/corp")
        .await
        .assert_status(403);
    let actions = denied_actions(&admin, "ivan@example.com", "").await;
    for a in [
        "identity_provider.create",
        "identity_provider.update",
        "identity_provider.delete",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }
}

/// Guessing the current password where it is changed counts toward the account's lockout, as
/// at sign-in: a stolen API key or an unattended session cannot guess it at full speed.
#[tokio::test]
async fn guesses_of_the_current_password_lock_the_account_as_sign_in_does() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let sally = app.user_client(&admin, "sally@example.com").await;
    let change = |current: &str| json!({"current_password": current, "new_password": "a brand new password 2026"});
    // A key (stolen, with the password) cannot change it: that would end the owner's sessions
    // and keep them out while the key works on. Refused before anything is checked, audited.
    let key = sally.create_api_key(json!({"name": "script"})).await;
    app.client()
        .post_bearer("/api/v1/me/password", &key, change(USER_PASSWORD))
        .await
        .assert_status(403);
    sally.get("/api/v1/me").await.assert_status(200);
    let actions = denied_actions(&admin, "sally@example.com", "from a signed-in session").await;
    assert_eq!(actions, vec!["password.change"], "{actions:?}");
    for i in 0..5 {
        let r = sally
            .post("/api/v1/me/password", change(&format!("guess {i}")))
            .await
            .assert_status(422);
        assert!(
            r.body.contains("is not your current password"),
            "{}",
            r.body
        );
    }
    // Locked: even the right password is not checked now...
    let r = sally
        .post("/api/v1/me/password", change(USER_PASSWORD))
        .await
        .assert_status(422);
    assert!(r.body.contains("too many wrong passwords"), "{}", r.body);
    // ...and the lockout is the account's: sign-in is refused too.
    let fresh = app.client();
    let r = fresh
        .post(
            "/api/v1/auth/login",
            json!({"email": "sally@example.com", "password": USER_PASSWORD}),
        )
        .await;
    assert_ne!(r.status, 200, "{}", r.body);
    let denied = admin
        .get("/api/v1/audit/events?action=password.change&outcome=denied&limit=20")
        .await
        .assert_status(200)
        .json();
    assert!(
        denied["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or_default().contains("locked")),
        "{denied:#}"
    );
}

/// The actions of `actor`'s denied audit events whose reason contains `reason`.
async fn denied_actions(admin: &Client, actor: &str, reason: &str) -> Vec<String> {
    let denied = admin
        .get(&format!(
            "/api/v1/audit/events?outcome=denied&actor={actor}&limit=100"
        ))
        .await
        .assert_status(200)
        .json();
    denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().unwrap_or_default().contains(reason))
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// `settings.write` alone cannot make a role break-glass (taken without approval on any
/// project, the caller's first): that takes holding what it grants organization-wide.
#[tokio::test]
async fn a_settings_editor_cannot_make_a_role_they_do_not_hold_break_glass() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let setty = delegate(
        &app,
        &admin,
        "setty@example.com",
        "SETTINGS_EDITOR",
        &["settings.read", "settings.write"],
    )
    .await;
    setty
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "PROJECT_ADMIN", "max_secs": 3600}]}),
        )
        .await
        .assert_status(403);
    let jit = admin.get("/api/v1/settings/jit").await.json();
    assert_eq!(jit["break_glass_roles"], json!([]), "{jit}");
    // Other settings stay theirs to change.
    setty
        .patch("/api/v1/settings/jit", json!({"request_ttl_secs": 7200}))
        .await
        .assert_status(200);
    // The administrator may; the editor may then leave the list as it is.
    admin
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "PROJECT_ADMIN", "max_secs": 3600}]}),
        )
        .await
        .assert_status(200);
    setty
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "PROJECT_ADMIN", "max_secs": 1800}]}),
        )
        .await
        .assert_status(200);
    // ...shorten it (above), but not stretch it: longer is handing the role out anew.
    setty
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "PROJECT_ADMIN", "max_secs": 86400}]}),
        )
        .await
        .assert_status(403);
    let jit = admin.get("/api/v1/settings/jit").await.json();
    assert_eq!(jit["break_glass_roles"][0]["max_secs"], 1800, "{jit}");
    let actions = denied_actions(&admin, "setty@example.com", "break-glass role").await;
    assert_eq!(
        actions,
        vec!["settings.jit.update", "settings.jit.update"],
        "{actions:?}"
    );
}

/// `settings.write` alone tightens just-in-time access but does not loosen it: switching the
/// second approval off (to approve an accomplice alone, then on again), removing or stretching
/// an expiry cap, or leaving requests pending longer takes holding everything.
#[tokio::test]
async fn a_settings_editor_cannot_loosen_just_in_time_safeguards() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .patch(
            "/api/v1/settings/jit",
            json!({
                "two_approvals_for_write": true,
                "request_ttl_secs": 3600,
                "required_expiry": [{"role": "PROJECT_ADMIN", "max_secs": 7200}],
            }),
        )
        .await
        .assert_status(200);
    let setty = delegate(
        &app,
        &admin,
        "setty@example.com",
        "SETTINGS_EDITOR",
        &["settings.read", "settings.write"],
    )
    .await;
    for laxer in [
        json!({"two_approvals_for_write": false}),
        json!({"required_expiry": []}),
        json!({"required_expiry": [{"role": "PROJECT_ADMIN", "max_secs": 86400}]}),
        json!({"required_expiry": [{"role": "PROJECT_ADMIN", "max_secs": 7200, "cluster_selector": "env=lab"}]}),
        json!({"request_ttl_secs": 7200}),
    ] {
        setty
            .patch("/api/v1/settings/jit", laxer.clone())
            .await
            .assert_status(403);
    }
    let jit = admin.get("/api/v1/settings/jit").await.json();
    assert_eq!(jit["two_approvals_for_write"], true, "{jit}");
    assert_eq!(jit["request_ttl_secs"], 3600, "{jit}");
    assert_eq!(jit["required_expiry"][0]["max_secs"], 7200, "{jit}");
    // Stricter stays theirs: a shorter cap, a new one, a shorter wait; the same values again.
    setty
        .patch(
            "/api/v1/settings/jit",
            json!({
                "two_approvals_for_write": true,
                "request_ttl_secs": 1800,
                "required_expiry": [
                    {"role": "PROJECT_ADMIN", "max_secs": 3600},
                    {"role": "NAMESPACE_ADMIN", "max_secs": 3600},
                ],
            }),
        )
        .await
        .assert_status(200);
    let actions = denied_actions(&admin, "setty@example.com", "safeguards").await;
    assert_eq!(actions.len(), 5, "{actions:?}");
    assert!(actions.iter().all(|a| a == "settings.jit.update"));
    // The administrator may loosen them.
    admin
        .patch(
            "/api/v1/settings/jit",
            json!({"two_approvals_for_write": false, "required_expiry": [], "request_ttl_secs": 86400}),
        )
        .await
        .assert_status(200);
}

/// Taking a grant away is bounded as handing it out is: a user manager removes what they
/// hold themselves, not an administrator's ADMIN binding.
#[tokio::test]
async fn a_user_manager_cannot_strip_an_administrators_binding() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let uma = delegate(
        &app,
        &admin,
        "uma@example.com",
        "USER_MANAGER",
        &["user.read", "user.write", "project.read"],
    )
    .await;
    let second = app.user_client(&admin, "second-admin@example.com").await;
    let admin_binding = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "second-admin@example.com"}, "role": "ADMIN"}),
        )
        .await
        .assert_status(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    uma.delete(&format!("/api/v1/bindings/{admin_binding}"))
        .await
        .assert_status(403);
    second.get("/api/v1/settings").await.assert_status(200);
    // A binding of what uma holds herself: hers to remove.
    admin
        .post(
            "/api/v1/roles",
            json!({"name": "DIRECTORY_READER", "scope": "organization", "permissions": ["user.read"]}),
        )
        .await
        .assert_status(201);
    let reader = admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "second-admin@example.com"}, "role": "DIRECTORY_READER"}),
        )
        .await
        .assert_status(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    uma.delete(&format!("/api/v1/bindings/{reader}"))
        .await
        .assert_status(204);
    let actions = denied_actions(&admin, "uma@example.com", "the granter does not hold").await;
    assert_eq!(actions, vec!["binding.delete"], "{actions:?}");
}

/// `kubeconfig.write` sets a user's kubectl settings, but loosening a safeguard the
/// organization set (keystroke recording, secrets for administrators only...) takes
/// `settings.write`: an editor cannot switch them off for themselves.
#[tokio::test]
async fn a_kubeconfig_editor_cannot_loosen_the_organizations_safeguards() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let kim = delegate(
        &app,
        &admin,
        "kim@example.com",
        "KUBECONFIG_EDITOR",
        &["user.read", "kubeconfig.write"],
    )
    .await;
    admin
        .patch(
            "/api/v1/kubectl/settings",
            json!({"terminal_record_input": true, "secrets_org_admins_only": true, "terminal_idle_secs": 600, "credential_validity_secs": 3600}),
        )
        .await
        .assert_status(200);
    let _other = app.user_client(&admin, "other@example.com").await;
    for loosen in [
        json!({"terminal_record_input": false}),
        json!({"secrets_org_admins_only": false}),
        json!({"terminal_idle_secs": 3600}),
        // A kubeconfig living longer than the organization's hour.
        json!({"credential_validity_secs": 86400}),
    ] {
        for whom in ["kim@example.com", "other@example.com"] {
            kim.patch(
                &format!("/api/v1/users/{whom}/kubectl-settings"),
                loosen.clone(),
            )
            .await
            .assert_status(403);
        }
    }
    let me = admin
        .get("/api/v1/users/kim@example.com/kubectl-settings")
        .await
        .json();
    assert_eq!(me["effective"]["terminal_record_input"], true, "{me}");
    assert_eq!(me["effective"]["secrets_org_admins_only"], true, "{me}");
    // Tightening is theirs: a shorter idle time.
    kim.patch(
        "/api/v1/users/other@example.com/kubectl-settings",
        json!({"terminal_idle_secs": 300}),
    )
    .await
    .assert_status(200);
    // The administrator (settings.write) may loosen for a user.
    admin
        .patch(
            "/api/v1/users/other@example.com/kubectl-settings",
            json!({"terminal_record_input": false}),
        )
        .await
        .assert_status(200);
    kim.patch(
        "/api/v1/users/other@example.com/kubectl-settings",
        json!({"credential_validity_secs": 1800}),
    )
    .await
    .assert_status(200);
    let actions = denied_actions(&admin, "kim@example.com", "takes settings.write").await;
    assert_eq!(actions.len(), 8, "{actions:?}");
}

/// `kubeconfig.write` only adds restrictions: it cannot lift one an administrator put on a user
/// (its holder's own included), widen one an administrator granted, or pin today's values so
/// that the organization tightening later passes its holder by; and it cannot touch the kubectl
/// of someone holding more than its holder (their kubectl off, their keystrokes recorded).
#[tokio::test]
async fn a_kubeconfig_editor_only_adds_restrictions_and_only_to_those_below_them() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let kim = delegate(
        &app,
        &admin,
        "kim@example.com",
        "KUBECONFIG_EDITOR",
        &["user.read", "kubeconfig.write"],
    )
    .await;
    let _other = app.user_client(&admin, "other@example.com").await;
    // The administrator restricts kim and another user.
    let restriction = json!({"disable_cli": true, "secrets_org_admins_only": true,
        "terminal_record_input": true, "credential_validity_secs": 3600});
    for whom in ["kim@example.com", "other@example.com"] {
        admin
            .patch(
                &format!("/api/v1/users/{whom}/kubectl-settings"),
                restriction.clone(),
            )
            .await
            .assert_status(200);
    }
    let mut refused = 0;
    for whom in ["kim@example.com", "other@example.com"] {
        for lift in [
            json!({"disable_cli": null}),
            json!({"disable_cli": false}),
            json!({"secrets_org_admins_only": null}),
            json!({"terminal_record_input": false}),
            json!({"credential_validity_secs": null}),
        ] {
            kim.patch(&format!("/api/v1/users/{whom}/kubectl-settings"), lift)
                .await
                .assert_status(403);
            refused += 1;
        }
        let s = admin
            .get(&format!("/api/v1/users/{whom}/kubectl-settings"))
            .await
            .json();
        for f in [
            "disable_cli",
            "secrets_org_admins_only",
            "terminal_record_input",
        ] {
            assert_eq!(s["effective"][f], true, "{f}: {s}");
        }
        assert_eq!(s["effective"]["credential_validity_secs"], 3600, "{s}");
    }
    // Pinning today's values on a user with no restriction: an exemption from the
    // organization's next tightening.
    let _third = app.user_client(&admin, "third@example.com").await;
    for pin in [
        json!({"disable_cli": false}),
        json!({"secrets_org_admins_only": false}),
        json!({"require_recent_sign_in": false}),
        json!({"terminal_idle_secs": 900}),
    ] {
        kim.patch("/api/v1/users/third@example.com/kubectl-settings", pin)
            .await
            .assert_status(403);
        refused += 1;
    }
    // A value the administrator granted above the organization's is not widened further.
    admin
        .patch(
            "/api/v1/users/third@example.com/kubectl-settings",
            json!({"terminal_idle_secs": 1200}),
        )
        .await
        .assert_status(200);
    kim.patch(
        "/api/v1/users/third@example.com/kubectl-settings",
        json!({"terminal_idle_secs": 86400}),
    )
    .await
    .assert_status(403);
    refused += 1;
    // Narrowing it is theirs, and so is a new restriction.
    kim.patch(
        "/api/v1/users/third@example.com/kubectl-settings",
        json!({"terminal_idle_secs": 600, "disable_cli": true}),
    )
    .await
    .assert_status(200);
    let actions = denied_actions(&admin, "kim@example.com", "takes settings.write").await;
    assert_eq!(actions.len(), refused, "{actions:?}");
    // The administrator's own kubectl is out of kim's reach, even to restrict it.
    for restrict in [
        json!({"disable_cli": true}),
        json!({"terminal_record_input": true}),
    ] {
        kim.patch(
            "/api/v1/users/admin@warden.local/kubectl-settings",
            restrict,
        )
        .await
        .assert_status(403);
    }
    let s = admin
        .get("/api/v1/users/admin@warden.local/kubectl-settings")
        .await
        .json();
    assert_eq!(s["effective"]["disable_cli"], false, "{s}");
    assert_eq!(s["effective"]["terminal_record_input"], false, "{s}");
    let actions = denied_actions(&admin, "kim@example.com", "change the kubectl settings of").await;
    assert_eq!(actions.len(), 2, "{actions:?}");
}

/// Membership of a project's approver group is as good as `project.write` there (an approver
/// hands out the project's roles): a group manager cannot join it, and a user manager cannot
/// take over one of its members.
#[tokio::test]
async fn approving_for_a_project_counts_as_administering_it() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    admin
        .post("/api/v1/projects", json!({"name": "prod"}))
        .await
        .assert_status(201);
    admin
        .post("/api/v1/groups", json!({"name": "prod-approvers"}))
        .await
        .assert_status(201);
    let _ann = app.user_client(&admin, "ann@example.com").await;
    admin
        .post(
            "/api/v1/groups/prod-approvers/members",
            json!({"user": "ann@example.com"}),
        )
        .await
        .assert_status(201);
    admin
        .put(
            "/api/v1/projects/prod/approver-group",
            json!({"group": "prod-approvers"}),
        )
        .await
        .assert_status(200);
    let gus = delegate(
        &app,
        &admin,
        "gus@example.com",
        "GROUP_MANAGER",
        &["group.read", "group.write", "user.read", "user.write"],
    )
    .await;
    // The group itself has no binding: only its approval power is at stake.
    gus.post(
        "/api/v1/groups/prod-approvers/members",
        json!({"user": "gus@example.com"}),
    )
    .await
    .assert_status(403);
    gus.post("/api/v1/users/ann@example.com/reset-password", json!({}))
        .await
        .assert_status(403);
    gus.delete("/api/v1/users/ann@example.com/mfa")
        .await
        .assert_status(403);
    // A group that approves for no project is theirs to fill.
    admin
        .post("/api/v1/groups", json!({"name": "book-club"}))
        .await
        .assert_status(201);
    gus.post(
        "/api/v1/groups/book-club/members",
        json!({"user": "gus@example.com"}),
    )
    .await
    .assert_status(201);
    let actions = denied_actions(&admin, "gus@example.com", "approver of access requests").await;
    for a in ["group.member.add", "user.reset_password", "user.mfa.reset"] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }
}

/// A break-glass role is anyone's for the taking on any project: widening it takes holding
/// what is added organization-wide, even while it is bound nowhere.
#[tokio::test]
async fn a_role_editor_cannot_widen_a_break_glass_role() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    for name in ["ONCALL", "UNUSED"] {
        admin
            .post(
                "/api/v1/roles",
                json!({"name": name, "scope": "project", "permissions": ["project.read"]}),
            )
            .await
            .assert_status(201);
    }
    admin
        .patch(
            "/api/v1/settings/jit",
            json!({"break_glass_roles": [{"role": "ONCALL", "max_secs": 3600}]}),
        )
        .await
        .assert_status(200);
    let rory = delegate(
        &app,
        &admin,
        "rory@example.com",
        "ROLE_EDITOR",
        &["role.read", "role.write"],
    )
    .await;
    rory.patch(
        "/api/v1/roles/ONCALL",
        json!({"permissions": ["project.read", "kubectl.fullaccess"]}),
    )
    .await
    .assert_status(403);
    let role = admin.get("/api/v1/roles/ONCALL").await.json();
    assert!(!role.to_string().contains("kubectl.fullaccess"), "{role}");
    // An unbound role that is not break-glass grants nothing: checked when it is bound.
    rory.patch(
        "/api/v1/roles/UNUSED",
        json!({"permissions": ["project.read", "kubectl.fullaccess"]}),
    )
    .await
    .assert_status(200);
    let actions = denied_actions(&admin, "rory@example.com", "break-glass role").await;
    assert_eq!(actions, vec!["role.update"], "{actions:?}");
}

/// Shortening the audit log's retention erases everyone's record, the caller's included:
/// `settings.write` alone may keep events longer, not shorter.
/// `settings.write` alone cannot decide who signs in: limiting local passwords to a list
/// (which ends every other administrator's session and names the editor the only way in), or
/// a laxer second-factor rule, takes everything, as an identity provider's settings do.
#[tokio::test]
async fn a_settings_editor_cannot_change_who_signs_in_or_weaken_the_second_factor() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let setty = delegate(
        &app,
        &admin,
        "setty@example.com",
        "SETTINGS_EDITOR",
        &["settings.read", "settings.write"],
    )
    .await;
    for change in [
        json!({"break_glass_users": ["setty@example.com"]}),
        json!({"local_sign_in": "break_glass_only", "break_glass_users": ["setty@example.com"]}),
        json!({"local_sign_in": "break_glass_only"}),
    ] {
        setty
            .patch("/api/v1/settings", change.clone())
            .await
            .assert_status(403);
    }
    let now = admin
        .get("/api/v1/settings")
        .await
        .assert_status(200)
        .json();
    assert_eq!(now["local_sign_in"], "everyone", "{now}");
    assert_eq!(now["break_glass_users"], json!([]), "{now}");
    // A stricter second factor is theirs to ask for; a laxer one is not.
    let (admin_secret, _) = crate::mfa::enrol(&app, &admin).await;
    crate::mfa::enrol(&app, &setty).await;
    setty
        .patch("/api/v1/settings", json!({"mfa_policy": "everyone"}))
        .await
        .assert_status(200);
    for laxer in ["admins", "nobody"] {
        setty
            .patch("/api/v1/settings", json!({"mfa_policy": laxer}))
            .await
            .assert_status(403);
    }
    // Laxer lockouts, step-up and sessions help whoever is after another administrator's
    // account: not theirs either.
    for laxer in [
        json!({"lockout_threshold": 100}),
        json!({"lockout_window_minutes": 1}),
        json!({"lockout_minutes": 1}),
        json!({"step_up_max_age_minutes": 1440}),
        json!({"session_idle_minutes": 1440}),
        json!({"session_absolute_hours": 720}),
    ] {
        setty
            .patch("/api/v1/settings", laxer.clone())
            .await
            .assert_status(403);
    }
    // The rest stays theirs (stricter ones included); the administrator may do both.
    setty
        .patch(
            "/api/v1/settings",
            json!({"session_idle_minutes": 20, "lockout_threshold": 4, "step_up_max_age_minutes": 10}),
        )
        .await
        .assert_status(200);
    let s = admin
        .get("/api/v1/settings")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        (
            s["lockout_threshold"].as_i64(),
            s["lockout_minutes"].as_i64(),
            s["step_up_max_age_minutes"].as_i64()
        ),
        (Some(4), Some(15), Some(10)),
        "{s}"
    );
    // A laxer rule gives access away: from the administrator's stale session, a fresh code
    // first.
    let laxer = json!({"mfa_policy": "nobody", "break_glass_users": ["admin@warden.local"]});
    let r = admin
        .patch("/api/v1/settings", laxer.clone())
        .await
        .assert_status(403);
    assert_eq!(r.error_code(), "step_up_required", "{}", r.body);
    crate::mfa::step_up(&app, &admin, &admin_secret).await;
    admin
        .patch("/api/v1/settings", laxer)
        .await
        .assert_status(200);
    let denied = denied_actions(&admin, "setty@example.com", "who may sign in").await;
    assert_eq!(denied.len(), 5, "{denied:?}");
}

#[tokio::test]
async fn a_settings_editor_cannot_shorten_the_audit_retention() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let setty = delegate(
        &app,
        &admin,
        "setty@example.com",
        "SETTINGS_EDITOR",
        &["settings.read", "settings.write"],
    )
    .await;
    setty
        .patch("/api/v1/settings", json!({"audit_retention_days": 40}))
        .await
        .assert_status(403);
    assert_eq!(
        admin.get("/api/v1/settings").await.json()["audit_retention_days"],
        serde_json::Value::Null
    );
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 30}))
        .await
        .assert_status(200);
    setty
        .patch("/api/v1/settings", json!({"audit_retention_days": 60}))
        .await
        .assert_status(200);
    setty
        .patch("/api/v1/settings", json!({"audit_retention_days": 45}))
        .await
        .assert_status(403);
    setty
        .patch("/api/v1/settings", json!({"audit_retention_days": null}))
        .await
        .assert_status(200);
    // Nor can a full administrator go below the deployment's floor (30 days by default).
    admin
        .patch("/api/v1/settings", json!({"audit_retention_days": 29}))
        .await
        .assert_status(422);
    let actions = denied_actions(&admin, "setty@example.com", "audit retention").await;
    assert_eq!(actions.len(), 2, "{actions:?}");
}

/// A set-password link is used once, also when its uses race: of eight submissions sent at
/// the same instant with different passwords, one sets the password; the others are refused,
/// and only the winner's password signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_password_link_used_by_racing_requests_sets_one_password() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let token = create_user_with_link(&admin, "race@example.com", "Race").await;
    let clients: Vec<_> = (0..8).map(|_| app.client()).collect();
    let tries = clients.iter().enumerate().map(|(i, c)| {
        let token = token.clone();
        async move {
            let password = format!("racing password number {i}");
            let r = c
                .post_form(
                    "/sfn/set_password",
                    &[
                        ("token", &token),
                        ("new_password", &password),
                        ("confirm_password", &password),
                    ],
                )
                .await;
            let set = r
                .headers
                .get("location")
                .is_some_and(|l| l == "/login?password_set=1");
            (password, set)
        }
    });
    let results = futures::future::join_all(tries).await;
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, set)| *set)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    app.client()
        .login("race@example.com", winners[0])
        .await
        .assert_status(200);
    // (A few losers only: wrong passwords count towards the lockout.)
    for (password, _) in results.iter().filter(|(_, set)| !*set).take(2) {
        app.client()
            .login("race@example.com", password)
            .await
            .assert_status(401);
    }
}

/// Over TLS (an https public URL, TLS ended by the proxy in front), the session cookie is
/// `__Host-` prefixed: Secure, for `/`, no Domain, so no sibling subdomain can set one in
/// front of it; the unprefixed name is not read.
#[tokio::test]
async fn over_tls_the_session_cookie_is_host_only() {
    let public = "https://warden.example.com";
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_PUBLIC_URL".to_owned(),
        public.to_owned(),
    )]))
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/auth/login", app.url))
        .header("origin", public)
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("warden_session="))
        .expect("a session cookie")
        .to_owned();
    assert!(set.starts_with("__Host-warden_session="), "{set}");
    assert!(set.contains("Secure") && set.contains("Path=/"), "{set}");
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
    let value = set
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap();
    let me = |cookie: String| {
        http.get(format!("{}/api/v1/me", app.url))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(
        me(format!("__Host-warden_session={value}"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        me(format!("warden_session={value}"))
            .await
            .unwrap()
            .status(),
        401
    );
}

/// Behind a trusted proxy, every audit event records the client's address, not the proxy's:
/// an administrator's change as much as a sign-in.
#[tokio::test]
async fn behind_a_trusted_proxy_every_event_records_the_client() {
    let (app, admin) = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_TRUSTED_PROXIES".to_owned(),
        "127.0.0.0/8,::1".to_owned(),
    )]))
    .await
    .with_admin()
    .await;
    let key = admin.create_api_key(json!({"name": "ops"})).await;
    reqwest::Client::new()
        .post(format!("{}/api/v1/projects", app.url))
        .bearer_auth(&key)
        .header("x-forwarded-for", "203.0.113.50")
        .json(&json!({"name": "through-the-proxy"}))
        .send()
        .await
        .expect("request")
        .error_for_status()
        .expect("created");
    let page = admin
        .get("/api/v1/audit/events?action=project.create")
        .await
        .assert_status(200)
        .json();
    let ev = &page["items"][0];
    assert_eq!(ev["resource_name"], "through-the-proxy", "{ev}");
    assert_eq!(ev["source_ip"], "203.0.113.50", "{ev}");
}

/// A sign-in from `ip` (through a trusted proxy's `X-Forwarded-For`): its status.
async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", app.url))
        .header("origin", &app.url)
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Wrong passwords lock out the network they come from, not the account for everyone: a
/// stranger cannot lock the administrator (the break-glass account, say) out with five
/// guesses from anywhere. An IPv6 host counts by its /64. Guessing spread over many networks
/// is still bounded: ten times the threshold, from everywhere together, locks the account.
#[tokio::test]
async fn a_stranger_cannot_lock_someone_out_from_elsewhere() {
    let app = TestApp::spawn_with(std::collections::BTreeMap::from([(
        "WARDEN_TRUSTED_PROXIES".to_owned(),
        "127.0.0.1,::1".to_owned(),
    )]))
    .await;
    let from =
        |ip: &'static str, password: &'static str| login_from(&app, ip, ADMIN_EMAIL, password);
    for _ in 0..4 {
        assert_eq!(from("203.0.113.7", "wrong password!!").await, 401);
    }
    assert_eq!(from("203.0.113.7", "wrong password!!").await, 429);
    assert_eq!(from("203.0.113.7", ADMIN_PASSWORD).await, 429);
    // The administrator, elsewhere, signs in.
    assert_eq!(from("198.51.100.9", ADMIN_PASSWORD).await, 200);
    // An IPv6 attacker moving within their /64 stays locked; another /64 is not.
    for _ in 0..5 {
        from("2001:db8:1:2::1", "wrong password!!").await;
    }
    assert_eq!(from("2001:db8:1:2::99", ADMIN_PASSWORD).await, 429);
    assert_eq!(from("2001:db8:1:3::1", ADMIN_PASSWORD).await, 200);

    // Fifty failures from ten networks lock the account everywhere...
    const NETS: [&str; 10] = [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
        "192.0.2.6",
        "192.0.2.7",
        "192.0.2.8",
        "192.0.2.9",
        "192.0.2.10",
    ];
    for ip in NETS {
        for _ in 0..5 {
            from(ip, "wrong password!!").await;
        }
    }
    assert_eq!(from("198.51.100.20", ADMIN_PASSWORD).await, 429);
    // ...until the lock ends. Counters that no longer count are swept (anonymous attempts at
    // made-up emails would otherwise pile up).
    app.clock.advance_secs(16 * 60);
    use sea_orm::{EntityTrait, PaginatorTrait};
    let db = &app.services().db;
    let rows = || warden_domain::entities::login_throttle::Entity::find().count(db);
    assert!(rows().await.unwrap() >= 13);
    let org = warden_domain::settings::load(db).await.unwrap();
    warden_domain::identity::login::sweep(db, &org, app.services().clock.now())
        .await
        .unwrap();
    assert_eq!(rows().await.unwrap(), 0);
    assert_eq!(from("198.51.100.20", ADMIN_PASSWORD).await, 200);
}

/// The GETs that mint credentials refuse what a browser says another site started (a link or
/// redirect carries the session cookie, SameSite=Lax): no kubeconfig credential or bootstrap
/// token is made in the user's name by a page elsewhere. The console's own links, typed URLs
/// and kubectl or curl (no `Sec-Fetch-Site`) are served.
#[tokio::test]
async fn a_page_elsewhere_cannot_mint_credentials_with_the_users_cookie() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let cookie = admin.session_cookie().expect("a session cookie");
    let get = |path: &'static str, site: Option<&'static str>| {
        let (url, cookie) = (app.url.clone(), cookie.clone());
        async move {
            let mut r = reqwest::Client::new()
                .get(format!("{url}{path}"))
                .header("cookie", format!("warden_session={cookie}"));
            if let Some(s) = site {
                r = r.header("sec-fetch-site", s);
            }
            let r = r.send().await.expect("request");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    for path in ["/api/v1/kubeconfig", "/api/v1/clusters/prod-1/manifest"] {
        for site in ["cross-site", "same-site"] {
            let (status, body) = get(path, Some(site)).await;
            assert_eq!(status, 403, "{path} {site}: {body}");
            assert!(body.contains("\"csrf\""), "{body}");
        }
        for site in [Some("same-origin"), Some("none"), None] {
            let (status, body) = get(path, site).await;
            assert_ne!(status, 403, "{path} {site:?}: {body}");
        }
    }
}
