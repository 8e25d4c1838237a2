//! The `wardenctl` builds Warden serves (`WARDEN_CLI_DIR`): to signed-in users only, nothing
//! else from that directory, with their digests, and on *My tools*.

use std::collections::BTreeMap;
use warden_domain::secrets::sha256_hex;
use warden_server::testing::TestApp;

fn serving(dir: &std::path::Path) -> BTreeMap<String, String> {
    BTreeMap::from([("WARDEN_CLI_DIR".to_owned(), dir.display().to_string())])
}

#[tokio::test]
async fn signed_in_users_download_the_builds_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let builds = dir.path().join("builds");
    std::fs::create_dir(&builds).unwrap();
    std::fs::write(builds.join("wardenctl-linux-amd64"), "the linux build").unwrap();
    std::fs::write(
        builds.join("wardenctl-windows-amd64.exe"),
        "the windows build",
    )
    .unwrap();
    std::fs::write(
        builds.join("warden.env"),
        "WARDEN_MASTER_KEY=not for download",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wardenctl-darwin-arm64"),
        "outside the directory",
    )
    .unwrap();
    let (app, admin) = TestApp::spawn_with(serving(&builds))
        .await
        .with_admin()
        .await;

    // Nobody signed in gets anything, not even the list.
    let anonymous = app.client();
    for path in [
        "/api/v1/downloads/wardenctl",
        "/api/v1/downloads/wardenctl/linux-amd64",
    ] {
        anonymous.get(path).await.assert_status(401);
    }

    // A user with no role at all may download them.
    let sally = app.user_client(&admin, "sally@example.com").await;
    let list = sally
        .get("/api/v1/downloads/wardenctl")
        .await
        .assert_status(200)
        .json();
    let platforms: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux-amd64", "windows-amd64"], "{list}");
    let linux = &list[0];
    assert_eq!(linux["sha256"], sha256_hex(b"the linux build"));
    assert_eq!(linux["size"], 15);
    assert_eq!(linux["file_name"], "wardenctl");
    assert_eq!(list[1]["file_name"], "wardenctl.exe");

    let r = sally
        .get(linux["url"].as_str().unwrap())
        .await
        .assert_status(200);
    assert_eq!(r.body, "the linux build");
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(header("content-type"), "application/octet-stream");
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"wardenctl\""
    );
    assert_eq!(header("x-checksum-sha256"), sha256_hex(b"the linux build"));
    let r = sally
        .get("/api/v1/downloads/wardenctl/windows-amd64")
        .await
        .assert_status(200);
    assert_eq!(r.body, "the windows build");

    // Only a build: no other file of the directory, nothing outside it.
    for platform in [
        "linux-arm64",
        "darwin-arm64",
        "warden.env",
        "..%2Fwardenctl-darwin-arm64",
        "linux-amd64%2F..%2Fwarden.env",
        "..",
        "wardenctl-linux-amd64",
    ] {
        let r = sally
            .get(&format!("/api/v1/downloads/wardenctl/{platform}"))
            .await;
        assert_eq!(r.status, 404, "{platform}: {}", r.body);
        assert!(!r.body.contains("not for download") && !r.body.contains("outside"));
    }

    // My tools offers them, with their digests.
    let page = sally.get("/me/tools").await.assert_status(200).body;
    assert!(
        page.contains("data-testid=\"wardenctl-download-linux-amd64\""),
        "{page}"
    );
    assert!(page.contains("/api/v1/downloads/wardenctl/windows-amd64"));
    assert!(page.contains(&sha256_hex(b"the linux build")));
    assert!(!page.contains("wardenctl-from-source"));

    // Deactivated, she gets nothing more.
    admin
        .patch(
            "/api/v1/users/sally@example.com",
            serde_json::json!({"status": "deactivated"}),
        )
        .await
        .assert_status(200);
    for path in [
        "/api/v1/downloads/wardenctl",
        "/api/v1/downloads/wardenctl/linux-amd64",
    ] {
        sally.get(path).await.assert_status(401);
    }
}

#[tokio::test]
async fn a_warden_serving_no_builds_says_how_to_install_one() {
    let (app, admin) = TestApp::spawn_with(BTreeMap::from([(
        "WARDEN_CLI_DIR".to_owned(),
        String::new(),
    )]))
    .await
    .with_admin()
    .await;
    let list = admin
        .get("/api/v1/downloads/wardenctl")
        .await
        .assert_status(200)
        .json();
    assert_eq!(list, serde_json::json!([]));
    admin
        .get("/api/v1/downloads/wardenctl/linux-amd64")
        .await
        .assert_status(404);
    let page = admin.get("/me/tools").await.assert_status(200).body;
    assert!(page.contains("wardenctl-from-source"), "{page}");
    assert!(page.contains("cargo install --path cli --locked"));
    drop(app);
}
