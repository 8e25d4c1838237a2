//! `TestApp`: the production router on a fresh database (a temporary SQLite file, or a fresh
//! PostgreSQL database when `WARDEN_TEST_DATABASE_URL` is set), on a loopback port, with a
//! clock the test controls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, ORIGIN};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use warden_domain::clock::{ManualClock, SharedClock};

use crate::config::Config;
use crate::state::AppState;

pub const ADMIN_EMAIL: &str = "admin@warden.local";
pub const ADMIN_PASSWORD: &str = "first-admin-password";

pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub database_url: String,
    /// `https://127.0.0.1:PORT`: the Kubernetes API gateway (TLS; kubeconfigs point here).
    pub gateway_url: String,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    _gateway: crate::gateway::GatewayHandle,
    /// On PostgreSQL: the `application_name` this app's connections carry.
    pg_tag: Option<String>,
    /// On PostgreSQL: the database this app created, dropped with it (a suite run creates
    /// hundreds; left behind they fill the disk of a machine that runs it again and again).
    pg_database: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        // Every integration test runs in one process: connections a finished test's pool still
        // holds (its tasks die with the test's runtime, but not always everything that holds
        // the pool) would add up past PostgreSQL's connection limit. End this app's own.
        let database = self.pg_database.take();
        if let (Some(tag), Ok(base)) = (
            self.pg_tag.take(),
            std::env::var("WARDEN_TEST_DATABASE_URL"),
        ) {
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(admin) = Database::connect(&base).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                 WHERE application_name = '{tag}' AND pid <> pg_backend_pid()"
                            ))
                            .await;
                        if let Some(db) = database {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                                ))
                                .await;
                        }
                        admin.close().await.ok();
                    }
                });
            })
            .join();
        }
    }
}

/// A port nobody listens on now, for a server the test starts later.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up here), not
/// from a bind to port 0: the kernel hands out an ephemeral port as the local end of any
/// outgoing connection too, so a port read from port 0 and bound again later could meanwhile
/// be the local port of one of the other tests' connections, and the later bind fails with
/// "Address already in use". Below that range only listeners compete, and the ports here are
/// handed out once per process (a counter, started at an offset of the process id) and
/// checked on every address.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

/// The value of one series in a Prometheus text (`/metrics`): `series` is its name with its
/// labels as Warden writes them (`warden_audit_queue_depth`,
/// `warden_background_job_runs_total{job="grant_expiry"}`); `None` when it is absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The URL with `application_name=<tag>` (PostgreSQL only), so a test app's connections can be
/// found and ended when it is dropped.
fn tag_connections(url: &str, tag: &str) -> String {
    if !url.starts_with("postgres") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={tag}")
}

/// A fresh database URL: a new PostgreSQL database when `WARDEN_TEST_DATABASE_URL` is set,
/// else a SQLite file in `dir`.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match std::env::var("WARDEN_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&base)
                .await
                .expect("connect to WARDEN_TEST_DATABASE_URL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (prefix, _) = base
                .rsplit_once('/')
                .expect("a postgres URL ending in /DBNAME");
            format!("{prefix}/{name}")
        }
        _ => format!("sqlite://{}/warden.db?mode=rwc", dir.display()),
    }
}

/// The generated at-rest key (`master.key`) of the first Warden started on each database
/// without `WARDEN_MASTER_KEY`: a second one on the same database (a restart in a fresh data
/// directory, another replica) is given it, as a deployment's would find it in its data
/// directory. Without it, Warden refuses to start (the database's key check does not open).
static GENERATED_KEYS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, String>>,
> = std::sync::LazyLock::new(Default::default);

/// Before a Warden starts on `database_url` with `data_dir`: the database's generated key, if
/// one is known and the directory has none.
pub fn share_generated_key(database_url: &str, data_dir: &std::path::Path) {
    let known = GENERATED_KEYS
        .lock()
        .ok()
        .and_then(|k| k.get(database_url).cloned());
    let path = data_dir.join(crate::startup::MASTER_KEY_FILE);
    if let (Some(key), false) = (known, path.exists()) {
        std::fs::create_dir_all(data_dir).expect("data dir");
        std::fs::write(&path, key).expect("write the generated key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
        }
    }
}

/// After a Warden started on `database_url` with `data_dir`: remember its generated key (the
/// first one on the database is the database's).
pub fn remember_generated_key(database_url: &str, data_dir: &std::path::Path) {
    if let Ok(key) = std::fs::read_to_string(data_dir.join(crate::startup::MASTER_KEY_FILE)) {
        if let Ok(mut k) = GENERATED_KEYS.lock() {
            k.entry(database_url.to_owned()).or_insert(key);
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(BTreeMap::new()).await
    }

    /// Spawn with extra configuration (environment-style keys).
    pub async fn spawn_with(extra: BTreeMap<String, String>) -> Self {
        Self::spawn_inner(None, extra, false).await
    }

    /// Spawn on a database another app used (a restart): from [`fresh_database_url`], kept
    /// when this app is dropped unless [`drop_database_on_exit`](Self::drop_database_on_exit).
    pub async fn spawn_on(database_url: &str) -> Self {
        Self::spawn_inner(Some(database_url.to_owned()), BTreeMap::new(), false).await
    }

    /// [`TestApp::spawn_on`] with extra configuration (environment-style keys).
    pub async fn spawn_on_with(database_url: &str, extra: BTreeMap<String, String>) -> Self {
        Self::spawn_inner(Some(database_url.to_owned()), extra, false).await
    }

    /// Spawn on an existing database and data directory: Warden started again on what another
    /// one (another process, maybe killed) left. On PostgreSQL, a `warden_test_` database is
    /// dropped with this app (unless [`TestApp::keep_database`]).
    pub async fn spawn_on_data_dir(database_url: &str, data_dir: &std::path::Path) -> Self {
        Self::spawn_on_data_dir_with(database_url, data_dir, BTreeMap::new()).await
    }

    /// [`Self::spawn_on_data_dir`], with more environment.
    pub async fn spawn_on_data_dir_with(
        database_url: &str,
        data_dir: &std::path::Path,
        mut env: BTreeMap<String, String>,
    ) -> Self {
        env.insert("WARDEN_DATA_DIR".to_owned(), data_dir.display().to_string());
        Self::spawn_inner(Some(database_url.to_owned()), env, true).await
    }

    /// Drop this app's PostgreSQL database with it (the last app of a restart test).
    pub fn drop_database_on_exit(&mut self) {
        self.pg_database = self
            .database_url
            .starts_with("postgres")
            .then(|| {
                self.database_url
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .filter(|name| name.starts_with("warden_test_"));
    }

    /// `given`: a database another app made (kept when this one is dropped, unless
    /// `drop_given`); otherwise a fresh one, dropped with this app.
    async fn spawn_inner(
        given: Option<String>,
        extra: BTreeMap<String, String>,
        drop_given: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = given.is_some() && !drop_given;
        let database_url = match given {
            Some(u) => u,
            None => fresh_database_url(dir.path()).await,
        };
        let pg_database = database_url
            .starts_with("postgres")
            .then(|| {
                database_url
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .filter(|name| name.starts_with("warden_test_") && !kept);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let gateway_url = format!(
            "https://{}",
            gateway_listener.local_addr().expect("gateway addr")
        );
        let mut env: BTreeMap<String, String> = BTreeMap::from([
            (
                "WARDEN_GATEWAY_ADDR".into(),
                gateway_listener
                    .local_addr()
                    .expect("gateway addr")
                    .to_string(),
            ),
            ("WARDEN_GATEWAY_PUBLIC_URL".into(), gateway_url.clone()),
            ("WARDEN_DATABASE_URL".into(), database_url.clone()),
            (
                "WARDEN_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("WARDEN_HTTP_ADDR".into(), addr.to_string()),
            ("WARDEN_PUBLIC_URL".into(), url.clone()),
            ("WARDEN_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("WARDEN_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            // Tests sign in far more often than people; the limit's own tests set it low.
            ("WARDEN_RATE_LIMIT_SIGN_IN".into(), "100000".into()),
            (
                "WARDEN_SITE_ROOT".into(),
                dir.path().join("site").display().to_string(),
            ),
            // No wardenctl builds (the default, the test binary's directory, is not a place
            // of builds); the downloads' tests name theirs.
            ("WARDEN_CLI_DIR".into(), String::new()),
            // The tests' webhook receivers listen on this host's loopback; the webhook
            // networks' own test sets none.
            ("WARDEN_WEBHOOK_ALLOWED_NETWORKS".into(), "127.0.0.1".into()),
        ]);
        env.extend(extra);
        let pg_tag = env
            .get("WARDEN_DATABASE_URL")
            .filter(|u| u.starts_with("postgres"))
            .map(|_| format!("warden_test_{}", uuid::Uuid::new_v4().simple()));
        if let Some(tag) = &pg_tag {
            let url = tag_connections(&env["WARDEN_DATABASE_URL"], tag);
            env.insert("WARDEN_DATABASE_URL".into(), url);
        }
        let data_dir = std::path::PathBuf::from(&env["WARDEN_DATA_DIR"]);
        share_generated_key(&database_url, &data_dir);
        let config = Config::from_source(&env).expect("test config");
        let clock = ManualClock::new();
        let shared: SharedClock = clock.clone();
        let state = crate::startup::prepare(config, shared)
            .await
            .expect("prepare");
        remember_generated_key(&database_url, &data_dir);
        let router = crate::build_router(state.clone());
        let gateway = crate::gateway::start(state.gateway.clone(), gateway_listener)
            .expect("start the gateway");
        let header_timeout = state.config.http.header_timeout;
        let server = tokio::spawn(crate::serve_console(
            listener,
            router,
            header_timeout,
            std::future::pending(),
        ));
        TestApp {
            addr,
            url,
            state,
            clock,
            database_url,
            gateway_url,
            _dir: dir,
            server,
            _gateway: gateway,
            pg_tag,
            pg_database,
        }
    }

    /// Keep this app's PostgreSQL database when the app is dropped (a test that starts another
    /// Warden on it afterwards).
    pub fn keep_database(&mut self) {
        self.pg_database = None;
    }

    /// A spawned app with the first admin's password already changed and signed in.
    pub async fn with_admin(self) -> (Self, Client) {
        let c = self.client();
        c.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .assert_status(200);
        c.post("/api/v1/me/password", serde_json::json!({"current_password": ADMIN_PASSWORD, "new_password": "the admin's new password"}))
            .await
            .assert_status(204);
        (self, c)
    }

    /// A browser-like client: keeps cookies and sends our Origin on writes.
    pub fn client(&self) -> Client {
        Client::new(&self.url, true)
    }

    /// A client that sends no Origin header (a cross-site or scripted caller).
    pub fn client_without_origin(&self) -> Client {
        Client::new(&self.url, false)
    }

    pub fn services(&self) -> &Arc<warden_domain::Services> {
        &self.state.services
    }
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
    send_origin: bool,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    #[track_caller]
    pub fn assert_status(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Client {
    /// A browser-like client of a Warden at `base` (e.g. a `warden serve` child process).
    pub fn for_url(base: &str) -> Self {
        Self::new(base, true)
    }

    /// A client of the Warden at `base` (another process, say); `send_origin`: like a browser.
    pub fn new(base: &str, send_origin: bool) -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Client {
            base: base.to_owned(),
            http,
            jar,
            send_origin,
        }
    }

    fn origin_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if self.send_origin {
            h.insert(ORIGIN, HeaderValue::from_str(&self.base).expect("origin"));
        }
        h
    }

    async fn finish(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A GET; one that gets no answer within 30 s is sent once more (an SSR render has been
    /// seen, rarely and not reproducibly, to never answer under the whole suite's load: the
    /// second request shows whether the server still serves, instead of the suite hanging).
    pub async fn get(&self, path: &str) -> Resp {
        let url = format!("{}{path}", self.base);
        let once = || {
            tokio::time::timeout(std::time::Duration::from_secs(30), async {
                Self::finish(self.http.get(&url).send().await.expect("request")).await
            })
        };
        match once().await {
            Ok(r) => r,
            Err(_) => {
                eprintln!("GET {path}: no whole answer within 30 s; asking again");
                once()
                    .await
                    .unwrap_or_else(|_| panic!("GET {path}: no whole answer twice within 30 s"))
            }
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.origin_headers())
            .json(&body)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.origin_headers())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    /// Submit an HTML form the way a browser without JavaScript does.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.origin_headers())
            .header("accept", "text/html")
            .form(fields)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/api/v1/auth/login",
            serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    /// The current value of the session cookie, if any.
    pub fn session_cookie(&self) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let url: reqwest::Url = self.base.parse().ok()?;
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split(';')
            .map(str::trim)
            .find_map(|c| {
                c.strip_prefix(&format!("{}=", crate::middleware::SESSION_COOKIE))
                    .map(str::to_owned)
            })
    }

    /// Replace the session cookie (to replay an old one).
    pub fn set_session_cookie(&self, value: &str) {
        let url: reqwest::Url = self.base.parse().expect("url");
        self.jar.add_cookie_str(
            &format!("{}={value}; Path=/", crate::middleware::SESSION_COOKIE),
            &url,
        );
    }
}

impl TestApp {
    /// As `admin`: create a user with a first password, then sign them in and complete the
    /// forced change. Returns their signed-in client.
    pub async fn user_client(&self, admin: &Client, email: &str) -> Client {
        admin
            .post("/api/v1/users", serde_json::json!({"email": email, "name": email.split('@').next().unwrap_or(email), "password": "first password for tests"}))
            .await
            .assert_status(201);
        let c = self.client();
        c.login(email, "first password for tests")
            .await
            .assert_status(200);
        c.post("/api/v1/me/password", serde_json::json!({"current_password": "first password for tests", "new_password": USER_PASSWORD}))
            .await
            .assert_status(204);
        c
    }
}

/// The password `user_client` leaves its users with.
pub const USER_PASSWORD: &str = "a user's own password";

impl Client {
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        let r = self
            .http
            .patch(format!("{}{path}", self.base))
            .headers(self.origin_headers())
            .json(&body)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .headers(self.origin_headers())
            .json(&body)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .headers(self.origin_headers())
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    /// Create an API key as this client (`POST /api/v1/api-keys` with `request`, expecting
    /// 201) and return its secret.
    pub async fn create_api_key(&self, request: Value) -> String {
        self.post("/api/v1/api-keys", request)
            .await
            .assert_status(201)
            .json()["secret"]
            .as_str()
            .expect("the new key's secret")
            .to_owned()
    }

    /// Revoke the caller's API key named `name` (answered 204).
    pub async fn revoke_api_key(&self, name: &str) {
        let keys = self.get("/api/v1/api-keys").await.assert_status(200).json();
        let id = keys["items"]
            .as_array()
            .and_then(|a| a.iter().find(|k| k["name"] == name))
            .and_then(|k| k["id"].as_str())
            .expect("the key's id")
            .to_owned();
        self.delete(&format!("/api/v1/api-keys/{id}"))
            .await
            .assert_status(204);
    }

    /// A GET with `Authorization: Bearer`.
    pub async fn get_bearer(&self, path: &str, token: &str) -> Resp {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }

    pub async fn post_bearer(&self, path: &str, token: &str, body: Value) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        Self::finish(r).await
    }
}
