//! The console's landing page (an overview, each part only for those who may see it) and the
//! import wizard's connect page (one pending manifest per cluster; it tells the truth about
//! loopback URLs and unpublished agent images).

use serde_json::{json, Value};
use warden_server::testing::{Client, TestApp};

/// A server function as the browser's JavaScript calls it (URL-encoded in, JSON out).
async fn sfn(app: &TestApp, c: &Client, name: &str, fields: &[(&str, &str)]) -> Value {
    let r = c
        .http
        .post(format!("{}/sfn/{name}", app.url))
        .header("origin", app.url.clone())
        .form(fields)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{name}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn count(admin: &Client, query: &str) -> usize {
    admin
        .get(&format!("/api/v1/audit/events?{query}&limit=500"))
        .await
        .assert_status(200)
        .json()["items"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default()
}

#[tokio::test]
async fn the_home_page_is_an_overview_for_what_each_user_may_see() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    // A fresh installation, as its administrator: the checklist, no clusters yet, audit panels.
    let home = admin.get("/").await.assert_status(200).body;
    assert!(home.contains("Welcome"), "{home}");
    assert!(home.contains("data-testid=\"getting-started\""), "{home}");
    assert!(
        home.contains("data-testid=\"start-cluster\" data-done=\"false\""),
        "{home}"
    );
    assert!(home.contains("No clusters yet"), "{home}");
    assert!(home.contains("data-testid=\"overview-import\""), "{home}");
    assert!(home.contains("data-testid=\"recent-activity\""), "{home}");
    assert!(home.contains("data-testid=\"recent-denials\""), "{home}");
    assert!(home.contains("data-testid=\"my-grants\""), "{home}");
    assert!(home.contains("across the whole organization"), "{home}");

    // Two clusters, one connected in the past and now pending is not possible here: both pend.
    for name in ["zeta", "alpha"] {
        admin
            .post(
                "/api/v1/clusters",
                json!({"name": name, "project": "default"}),
            )
            .await
            .assert_status(201);
    }
    let home = admin.get("/").await.assert_status(200).body;
    assert!(home.contains("2 clusters: 2 pending."), "{home}");
    let (a, z) = (
        home.find("overview-cluster-alpha").unwrap(),
        home.find("overview-cluster-zeta").unwrap(),
    );
    assert!(a < z, "same status: by name");
    assert!(home.contains("href=\"/clusters/alpha/connect\""), "{home}");
    assert!(
        home.contains("data-testid=\"start-cluster\" data-done=\"true\""),
        "{home}"
    );
    assert!(home.contains("cluster.create"), "recent activity: {home}");

    // A user without roles: no checklist, no audit panels, an empty state that says what to do,
    // and the visit writes no denial.
    let member = app.user_client(&admin, "member@example.com").await;
    let denials = count(&admin, "outcome=denied").await;
    let home = member.get("/").await.assert_status(200).body;
    assert!(home.contains("Welcome"), "{home}");
    assert!(!home.contains("getting-started"), "{home}");
    assert!(!home.contains("recent-denials"), "{home}");
    assert!(!home.contains("recent-activity"), "{home}");
    assert!(home.contains("No clusters are visible to you"), "{home}");
    assert!(!home.contains("overview-cluster-alpha"), "{home}");
    assert_eq!(count(&admin, "outcome=denied").await, denials);

    // Read-only in the project: its clusters, still no checklist.
    admin
        .post(
            "/api/v1/bindings",
            json!({"subject": {"kind": "user", "name": "member@example.com"}, "role": "PROJECT_READ_ONLY", "project": "default"}),
        )
        .await
        .assert_status(201);
    let home = member.get("/").await.assert_status(200).body;
    assert!(home.contains("overview-cluster-alpha"), "{home}");
    assert!(home.contains("href=\"/clusters/alpha\""), "{home}");
    assert!(!home.contains("getting-started"), "{home}");
    assert!(home.contains("in project default"), "{home}");
    assert_eq!(count(&admin, "outcome=denied").await, denials);

    // The overview as a server function: the same gates.
    let o = sfn(&app, &member, "get_overview", &[]).await;
    assert!(o["getting_started"].is_null(), "{o}");
    assert_eq!(o["clusters"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_connect_page_shows_one_pending_manifest_until_a_new_link_is_asked_for() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let created = admin
        .post(
            "/api/v1/clusters",
            json!({"name": "edge", "project": "default"}),
        )
        .await
        .assert_status(201)
        .json();
    let first_url = created["manifest_url"].as_str().unwrap().to_owned();
    let minted = || count(&admin, "action=cluster.bootstrap_token");

    // Viewing the page, again and again: the link the import issued, no new token.
    let before = minted().await;
    for _ in 0..3 {
        let c = sfn(&app, &admin, "connect_cluster", &[("name", "edge")]).await;
        assert_eq!(c["bootstrap"]["manifest_url"], first_url.as_str(), "{c}");
        assert!(c["pending"].is_null());
    }
    assert_eq!(minted().await, before);

    // The wizard says plainly that a loopback URL and the default image will not do.
    let c = sfn(&app, &admin, "connect_cluster", &[("name", "edge")]).await;
    let codes: Vec<&str> = c["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["loopback_url", "unpublished_image"], "{c}");
    assert!(c["warnings"][0]["message"]
        .as_str()
        .unwrap()
        .contains("WARDEN_PUBLIC_URL"));
    assert!(c["warnings"][1]["message"]
        .as_str()
        .unwrap()
        .contains("WARDEN_AGENT_IMAGE"));

    // A new link on request: the earlier one stops working, and the audit event says so.
    let fresh = sfn(&app, &admin, "bootstrap_cluster", &[("name", "edge")]).await;
    let second_url = fresh["manifest_url"].as_str().unwrap().to_owned();
    assert_ne!(second_url, first_url);
    assert_eq!(reqwest::get(&first_url).await.unwrap().status(), 410);
    let events = admin
        .get("/api/v1/audit/events?action=cluster.bootstrap_token&limit=1")
        .await
        .json();
    assert_eq!(
        events["items"][0]["details"]["revoked_tokens"], 2,
        "{events}"
    );
    let c = sfn(&app, &admin, "connect_cluster", &[("name", "edge")]).await;
    assert_eq!(c["bootstrap"]["manifest_url"], second_url.as_str());

    // The link used (kubectl apply), the agent not yet there: the page does not mint another
    // (that would revoke the manifest on its way); it says one is pending.
    assert_eq!(reqwest::get(&second_url).await.unwrap().status(), 200);
    let before = minted().await;
    let c = sfn(&app, &admin, "connect_cluster", &[("name", "edge")]).await;
    assert!(c["bootstrap"].is_null(), "{c}");
    assert!(c["pending"]["expires_at"].is_string(), "{c}");
    assert_eq!(minted().await, before);

    // Nothing pending any more (a day later): the page issues a new one.
    app.clock.advance_secs(25 * 3600);
    admin
        .login(
            warden_server::testing::ADMIN_EMAIL,
            "the admin's new password",
        )
        .await
        .assert_status(200);
    let c = sfn(&app, &admin, "connect_cluster", &[("name", "edge")]).await;
    assert!(c["bootstrap"]["manifest_url"].is_string(), "{c}");
    assert_eq!(minted().await, before + 1);

    // Only for those who may import: a member gets 403 and no link.
    let member = app.user_client(&admin, "member@example.com").await;
    let r = member
        .http
        .post(format!("{}/sfn/connect_cluster", app.url))
        .header("origin", app.url.clone())
        .form(&[("name", "edge")])
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("manifest"), "{body}");
}

#[tokio::test]
async fn the_import_form_reports_every_error_at_once() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let r = admin
        .http
        .post(format!("{}/sfn/import_cluster", app.url))
        .header("origin", app.url.clone())
        .form(&[
            ("name", "Not A Label"),
            ("project", "default"),
            ("labels", "novalue"),
            ("https_proxy", "not a url"),
        ])
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    for field in ["name", "labels", "proxy.https_proxy"] {
        assert!(body.contains(&format!("\"{field}\"")), "{field}: {body}");
    }
    // The form's name field carries the browser's checks.
    let page = admin.get("/clusters/new").await.assert_status(200).body;
    assert!(page.contains("maxlength=\"63\""), "{page}");
    assert!(page.contains("pattern=\"[a-z0-9]"), "{page}");
}

/// A server function that fails before it can say how (an early `?`: not signed in, a field
/// refused before the domain is asked) answers the status its error deserves, not the
/// server-function layer's default 500; a plain form (no JavaScript) goes back to its page
/// with the error beside the field (or to the sign-in page), not to a page of JSON.
#[tokio::test]
async fn a_server_function_failing_early_answers_its_status_and_a_plain_form_goes_back() {
    let (app, admin) = TestApp::spawn().await.with_admin().await;
    let anonymous = app.client();
    let post = |c: &Client, name: &str, fields: &[(&str, &str)]| {
        c.http
            .post(format!("{}/sfn/{name}", app.url))
            .header("origin", app.url.clone())
            .form(fields)
            .send()
    };
    // Not signed in: 401, for a read and for a change.
    for name in ["audit_viewer", "delete_binding"] {
        let r = post(&anonymous, name, &[("id", "x")]).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{name}");
    }
    // An expiry refused before the domain is asked: 422 with the field.
    let binding = [
        ("subject_kind", "user"),
        ("subject_name", warden_server::testing::ADMIN_EMAIL),
        ("role", "PROJECT_READ_ONLY"),
        ("project", "default"),
        ("expires", "custom"),
        ("expires_custom_hours", "99999999"),
    ];
    let r = post(&admin, "create_binding", &binding).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("expires_at"));
    // The same as a plain form: back to the page it came from, the error beside the field.
    let r = admin
        .http
        .post(format!("{}/sfn/create_binding", app.url))
        .header("origin", app.url.clone())
        .header("referer", format!("{}/projects/default", app.url))
        .header("accept", "text/html")
        .form(&binding)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to.starts_with("/projects/default?form=create_binding&err.expires_at="),
        "{to}"
    );
    // A plain form the domain refuses goes back with what was typed, and the page shows it;
    // a password never travels in the address.
    let plain = |c: &Client, name: &str, referer: &str, fields: &[(&str, &str)]| {
        c.http
            .post(format!("{}/sfn/{name}", app.url))
            .header("origin", app.url.clone())
            .header("referer", format!("{}{referer}", app.url))
            .header("accept", "text/html")
            .form(fields)
            .send()
    };
    let r = post(&admin, "create_group", &[("name", "Kept-Words")])
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = plain(
        &admin,
        "create_group",
        "/groups",
        &[
            ("name", "kept-words"),
            ("description", "words we typed & more"),
        ],
    )
    .await
    .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to.starts_with("/groups?form=create_group&err.name="),
        "{to}"
    );
    assert!(to.contains("val.name=kept-words"), "{to}");
    assert!(
        to.contains("val.description=words%20we%20typed%20%26%20more"),
        "{to}"
    );
    let page = admin
        .http
        .get(format!("{}{to}", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("value=\"words we typed &amp; more\""),
        "the description is lost"
    );
    assert!(page.contains("already exists"), "the error is missing");
    let signed_for_admin = to.clone();
    let r = plain(
        &admin,
        "create_user",
        "/users/new",
        &[
            ("email", "not an email"),
            ("name", "Typed Name"),
            ("mode", "password"),
            ("password", "a-secret-pass-123"),
        ],
    )
    .await
    .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("err.email="), "{to}");
    assert!(to.contains("val.name=Typed%20Name"), "{to}");
    assert!(
        !to.contains("secret-pass") && !to.contains("password="),
        "{to}"
    );
    // Nor a proxy's password: the import form refused (its labels), what was typed comes back
    // without the proxy URLs.
    let r = plain(
        &admin,
        "import_cluster",
        "/clusters/new",
        &[
            ("name", "typed-cluster"),
            ("project", "default"),
            ("labels", "not a label"),
            ("https_proxy", "http://ops:proxy-s3cret@proxy.internal:3128"),
        ],
    )
    .await
    .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("err.labels="), "{to}");
    assert!(to.contains("val.name=typed-cluster"), "{to}");
    assert!(
        !to.contains("s3cret") && !to.contains("proxy.internal"),
        "{to}"
    );
    // The page that shows what was typed is kept out of the browser's caches (pages may show
    // a bootstrap token or a set-password link once).
    let r = admin
        .http
        .get(format!("{}{to}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    // A link made by someone else fills in no proxy (it would aim the new cluster's agent at
    // theirs); the shareable fields it names are filled in.
    // Followed by hand: (status, where to, page).
    let visit = |who: &Client, path: String| {
        let url = format!("{}{path}", app.url);
        let http = who.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let to = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (status, to, r.text().await.unwrap())
        }
    };
    let (status, to, _) = visit(
        &admin,
        "/clusters/new?form=import_cluster&err.labels=x&err._=Your%20session%20expired%3A%20call%20IT%20on%20555-0100&val.name=linked-name&val.https_proxy=http%3A%2F%2Fattacker.example%3A3128".into(),
    )
    .await;
    // Nor does it put its words on Warden's page as Warden's: errors in an address are shown
    // only as Warden signed them, for this browser and for a few minutes; the page is sent to
    // the same address without them.
    assert_eq!(status, 303);
    let to = to.unwrap();
    assert!(!to.contains("err.") && !to.contains("555-0100"), "{to}");
    let (status, _, page) = visit(&admin, to).await;
    assert_eq!(status, 200);
    assert!(!page.contains("555-0100"), "a crafted error was shown");
    assert!(
        page.contains("value=\"linked-name\""),
        "the typed name is lost"
    );
    assert!(
        !page.contains("attacker.example"),
        "a proxy was filled in from a link"
    );
    let (status, _, page) = visit(&admin, signed_for_admin.clone()).await;
    assert_eq!(status, 200);
    assert!(page.contains("already exists"));
    // The same signed address in another browser, or later, shows no error.
    let stranger = app.user_client(&admin, "stranger@example.com").await;
    let (status, to, _) = visit(&stranger, signed_for_admin.clone()).await;
    assert_eq!(status, 303, "another browser's error was shown");
    assert!(!to.unwrap().contains("err."));
    // Keys encoded (`err%2E_`, as the page decodes them), a trailing slash (another route to
    // the same page), a HEAD: the same.
    for (path, head) in [
        ("/groups?form=create_group&err%2E_=Call%20555-0100", false),
        ("/groups/?form=create_group&err._=Call%20555-0100", false),
        ("/groups?form=create_group&err._=Call%20555-0100", true),
    ] {
        let url = format!("{}{path}", app.url);
        let r = if head {
            admin.http.head(url).send().await.unwrap()
        } else {
            admin.http.get(url).send().await.unwrap()
        };
        assert_eq!(r.status().as_u16(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            !to.contains("555-0100") && to.starts_with("/groups"),
            "{path}: {to}"
        );
    }
    // Never to another site: `//evil.example` is a path here, not a host.
    let (status, to, _) = visit(&admin, "//evil.example/x?err._=hi".into()).await;
    assert_eq!(status, 303);
    assert_eq!(to.as_deref(), Some("/"));
    app.clock.advance_secs(11 * 60);
    let (status, to, _) = visit(&admin, signed_for_admin.clone()).await;
    assert_eq!(status, 303, "a stale error was shown");
    let to = to.unwrap();
    assert!(to.starts_with("/groups") && !to.contains("err."), "{to}");
    // Not signed in, as a plain form: to the sign-in page, not a page of JSON.
    let r = anonymous
        .http
        .post(format!("{}/sfn/delete_binding", app.url))
        .header("origin", app.url.clone())
        .header("accept", "text/html")
        .form(&[("id", "x")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    // (Without a page to return to, the overview, which sends them to sign in.)
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to == "/login" || to == "/", "{to}");
    // An answer that set its own status is left alone: a binding that does not exist.
    let r = post(
        &admin,
        "delete_binding",
        &[("id", "00000000-0000-0000-0000-000000000000")],
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
