//! The Warden server: start-up, state, layers, and the routes that are not Leptos pages
//! (REST API, health, metrics). The console's pages and server functions live in `app`.

pub mod api;
pub mod cluster_reads;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod gateway;
pub mod jit;
pub mod live;
pub mod metrics;
pub mod middleware;
pub mod probe;
pub mod ratelimit;
pub mod replicas;
pub mod siem;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod terminal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tunnel;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, handle_server_fns_with_context, LeptosRoutes};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::SessionManagerLayer;
use warden_domain::identity::sessions::DbSessionStore;

use crate::state::AppState;

/// What every page and server function finds in its context; pages also the split bundle's
/// manifest (`split`), for the preloads of the lazy page they render.
fn leptos_context(
    state: &AppState,
    split: Option<leptos::WasmSplitManifest>,
) -> impl Fn() + Clone + Send + Sync + 'static {
    let services = state.services.clone();
    move || {
        provide_context(services.clone());
        leptos::nonce::provide_nonce();
        if let Some(split) = &split {
            provide_context(split.clone());
        }
    }
}

async fn server_fn_handler(State(state): State<AppState>, req: Request<Body>) -> impl IntoResponse {
    handle_server_fns_with_context(leptos_context(&state, None), req).await
}

/// Server functions' answers get the status their error deserves, and a plain form its way
/// back (`app::ssr::settle`): leptos routes each server function itself, so this wraps them
/// all.
async fn settle_server_fns(
    State(state): State<AppState>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !req.uri().path().starts_with("/sfn/") {
        return next.run(req).await;
    }
    let cookie = middleware::session_cookie_value(
        req.headers(),
        middleware::session_cookie(state.config.http.tls()),
    );
    let res = settle_server_fn(req, next).await;
    sign_form_errors(&state, &cookie, res)
}

/// A plain form sent back to its page with errors: they are signed for this browser's
/// session cookie (see `middleware::unsigned_form_errors`). (A form whose failure starts or
/// rotates the session would lose its errors: none does; sign-in failures say `?error=`.)
fn sign_form_errors(
    state: &AppState,
    cookie: &str,
    mut res: axum::response::Response,
) -> axum::response::Response {
    if !res.status().is_redirection() {
        return res;
    }
    let signed = res
        .headers()
        .get(axum::http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|to| app::ssr::sign_outcome(&state.services, cookie, to))
        .and_then(|to| axum::http::HeaderValue::from_str(&to).ok());
    if let Some(to) = signed {
        res.headers_mut().insert(axum::http::header::LOCATION, to);
    }
    res
}

async fn settle_server_fn(
    req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    const MAX_FORM: usize = 256 * 1024;
    let (parts, body) = req.into_parts();
    let urlencoded = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // A plain form's body is kept to give its page back what was typed if it fails.
    if app::ssr::plain_form_of(&parts) && urlencoded {
        let Ok(form) = axum::body::to_bytes(body, MAX_FORM).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response();
        };
        let res = next
            .run(Request::from_parts(parts.clone(), Body::from(form.clone())))
            .await;
        return app::ssr::settle(&parts, Some(&form), res).await;
    }
    let res = next.run(Request::from_parts(parts.clone(), body)).await;
    app::ssr::settle(&parts, None, res).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.services.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// `/pkg/<version>/<file>` is `<file>` of the current bundle, cached for good when `<version>`
/// is the current one (a page of an older build asking for its old version gets today's files,
/// revalidated); any other `/pkg` address is revalidated (`no-cache`).
async fn versioned_assets(
    version: String,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path().to_owned();
    let (rest, current) = match path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(v, _)| {
            (v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit())) || *v == "unbuilt"
        }) {
        Some((v, rest)) => (Some(format!("/{rest}")), v == version),
        None => (None, false),
    };
    if let Some(rest) = rest {
        let mut parts = req.uri().clone().into_parts();
        let pq = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest,
        };
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    let mut res = next.run(req).await;
    let cache = if current && res.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = res.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static(cache),
    );
    // Every answer here depends on Accept-Encoding (a precompressed file, compressed on the
    // fly, or plain): caches between must keep them apart.
    let varies = headers.get_all(axum::http::header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
    });
    if !varies {
        headers.append(
            axum::http::header::VARY,
            axum::http::HeaderValue::from_static("accept-encoding"),
        );
    }
    res
}

/// Serve the console (the whole HTTP application: console, REST API, agents' tunnels, web
/// terminals) on `listener` until `shutdown` resolves, then let open connections finish.
///
/// - `TCP_NODELAY` on every socket: agents' tunnels and web terminals arrive here, and small
///   frames must not wait for Nagle's algorithm.
/// - A request's head must arrive within `header_timeout` (HTTP/1, hyper's
///   `header_read_timeout`), or the connection is closed. `axum::serve` runs hyper without a
///   timer, so a client sending half a request line (or nothing) held its socket for ever: a
///   few thousand anonymous sockets exhausted the process's file descriptors, and with them
///   the console, the API, the agents' reconnections and the gateway.
/// - Each request sees the peer's address as axum's `ConnectInfo<SocketAddr>`.
pub async fn serve_console(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(20)));
    let builder = std::sync::Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "the console cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a console connection");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(req)
            },
        );
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // The first byte, within the timeout: hyper reads a request's head under its timer,
            // but the auto builder's protocol sniffing before it waits without one.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "a console connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

pub fn build_router(state: AppState) -> Router {
    let routes = generate_route_list(app::App);
    let options = state.leptos_options.clone();
    let split = startup::split_manifest(&state.config.site_root, &options.site_pkg_dir);
    let ctx = leptos_context(&state, split);
    let store = DbSessionStore::new(state.services.db.clone(), state.services.clock.clone());
    let sessions = SessionManagerLayer::new(store)
        .with_name(middleware::session_cookie(state.config.http.tls()))
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.config.http.tls())
        .with_path("/");

    let request_id = axum::http::HeaderName::from_static("x-request-id");
    // The console's bundle (WASM, JS, CSS), compressed (brotli or gzip, as the browser
    // accepts): the release build's precompressed files (`warden.wasm.br`, `.gz`: brotli at
    // its best quality, once, at build time) when present, else compressed on the fly. Pages
    // link it under `/pkg/<version>/` (a digest of the bundle): there it is cached for good
    // (`immutable`); anywhere else under `/pkg` it is revalidated. Only these static files are
    // compressed: pages and API answers carry secrets next to reflected input.
    let version = options
        .site_pkg_dir
        .strip_prefix("pkg/")
        .unwrap_or_default()
        .to_owned();
    let pkg = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(move |req, next| {
            versioned_assets(version.clone(), req, next)
        }))
        .layer(CompressionLayer::new().br(true).gzip(true))
        .service(
            ServeDir::new(state.config.site_root.join("pkg"))
                .precompressed_br()
                .precompressed_gzip(),
        );
    // The terminal's xterm.js (copied from node_modules by `./x`; its file names carry no
    // digest): compressed, and revalidated rather than fetched again at each terminal.
    let xterm = ServiceBuilder::new()
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-cache"),
        ))
        .layer(CompressionLayer::new().br(true).gzip(true))
        .service(ServeDir::new(state.config.site_root.join("xterm")));
    Router::new()
        .nest_service("/pkg", pkg)
        .nest_service("/xterm", xterm)
        .route("/sfn/{*fn_name}", post(server_fn_handler))
        .leptos_routes_with_context(&state, routes, ctx.clone(), move || app::shell(options.clone()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), settle_server_fns))
        .nest(
            "/api/v1",
            api::router().merge(terminal::routes()),
        )
        .nest("/agent/v1", tunnel::endpoint::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render_protected))
        .fallback(leptos_axum::file_and_error_handler_with_context::<AppState, _>(ctx, app::shell))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::unsigned_form_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::console_guard))
        .layer(sessions)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::csrf))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::sane_request_id))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let path = warden_domain::audit::loggable_path(req.uri().path());
                    tracing::info_span!("http", method = %req.method(), path = %path, request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(axum::middleware::from_fn(api::error::envelope))
                .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
                .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::security_headers))
                .layer(axum::extract::DefaultBodyLimit::max(state.config.http.body_limit))
                .layer(RequestBodyLimitLayer::new(state.config.http.body_limit)),
        )
        .with_state(state)
}
