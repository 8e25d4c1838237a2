//! Cross-cutting HTTP layers: CSRF (Origin check), security headers, and the console's
//! sign-in redirect. None of them authorizes anything: that is the gate's job.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use crate::api::error::ApiError;
use crate::config::origin_of;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "warden_session";
/// The session cookie's name over TLS: a browser takes a `__Host-` cookie only when it is
/// Secure, for `/`, and without a Domain, so no sibling subdomain (another app on
/// `*.example.com`, a taken-over one) can set it in front of Warden's (login forgery).
pub const SECURE_SESSION_COOKIE: &str = "__Host-warden_session";

/// The session cookie's name, for a console served over TLS or not.
pub fn session_cookie(tls: bool) -> &'static str {
    if tls {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The value of session cookie `name` in `headers` (`Cookie`), or "" without one.
pub fn session_cookie_value(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
        .unwrap_or_default()
}

/// A console page asked for with form errors in its address that Warden did not put there for
/// this browser (a crafted link: `?form=x&err._=Call +1 555 ...`, its keys encoded or not) goes
/// to the same address without them, so Warden's pages only ever show Warden's words
/// (`app::ssr::unsigned_outcome`). On every page route, the fallback's too (`/page/`).
pub async fn unsigned_form_errors(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let page = !["/api/", "/agent/", "/sfn/", "/pkg/"]
        .iter()
        .any(|p| path.starts_with(p));
    if page && matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Some(query) = req.uri().query() {
            let cookie =
                session_cookie_value(req.headers(), session_cookie(state.config.http.tls()));
            if let Some(to) = app::ssr::unsigned_outcome(&state.services, &cookie, path, query) {
                return Redirect::to(&to).into_response();
            }
        }
    }
    next.run(req).await
}

fn has_session_cookie(req: &Request) -> bool {
    req.headers().get_all(header::COOKIE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(';').any(|c| {
                    let c = c.trim();
                    c.starts_with(&format!("{SESSION_COOKIE}="))
                        || c.starts_with(&format!("{SECURE_SESSION_COOKIE}="))
                })
            })
            .unwrap_or(false)
    })
}

/// An API key the CSRF layer already verified: the REST extractors use it as is.
#[derive(Clone)]
pub struct VerifiedApiKey(pub warden_domain::access::Principal);

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// CSRF: a state-changing request from a browser must come from our own origin. A request
/// authenticated by a valid API key needs no check (browsers never attach an `Authorization`
/// header cross-site without a CORS preflight, which this server does not grant); any other
/// `Authorization` header earns nothing, and server functions (`/sfn/*`, the console's own
/// calls) are always checked. A cookie-authenticated request without `Origin` or `Referer`
/// is refused.
///
/// Two GETs mint credentials (a kubeconfig's, a cluster manifest's bootstrap token): a
/// cross-site navigation carries the session cookie (SameSite=Lax), so those are refused when
/// the browser says the request comes from another site (`Sec-Fetch-Site`); kubectl, curl and
/// wardenctl send no such header, and the console's own links are `same-origin`.
pub async fn csrf(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        if mints_on_get(req.uri().path()) && from_another_site(req.headers()) {
            tracing::warn!(path = %warden_domain::audit::loggable_path(req.uri().path()), "cross-site credential request refused");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "cross-site request refused: open this link from Warden's console",
            )
            .into_response();
        }
        return next.run(req).await;
    }
    let expected = state.config.http.public_origin();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(origin_of);
    let referer = req
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .map(origin_of);
    let mut api_key = false;
    if !req.uri().path().starts_with("/sfn/") {
        if let Some(token) = bearer(req.headers()).map(str::to_owned) {
            let meta =
                app::ssr::request_meta_of(req.method(), req.uri(), req.headers(), req.extensions());
            if let Ok(p) = warden_domain::identity::authn::principal_from_api_key(
                &state.services,
                &token,
                meta,
            )
            .await
            {
                req.extensions_mut().insert(VerifiedApiKey(p));
                api_key = true;
            }
        }
    }
    let same_origin = match (origin, referer) {
        (Some(o), _) => o == expected,
        (None, Some(r)) => r == expected,
        (None, None) => !has_session_cookie(&req),
    };
    if api_key || same_origin {
        return next.run(req).await;
    }
    tracing::warn!(path = %warden_domain::audit::loggable_path(req.uri().path()), "cross-site request refused");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "cross-site request refused: Origin does not match this server",
    )
    .into_response()
}

/// The GETs that mint a credential.
fn mints_on_get(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == "/api/v1/kubeconfig"
        || path
            .strip_prefix("/api/v1/clusters/")
            .is_some_and(|rest| rest.ends_with("/manifest") && rest.matches('/').count() == 1)
}

/// The browser says the request was started by another site (a link, a redirect, a form).
fn from_another_site(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("cross-site") || v.eq_ignore_ascii_case("same-site")
        })
}

/// A request id given by the client (a proxy's correlation id) is kept when it looks like one:
/// at most 128 characters of letters, digits and `-_.:`. Anything else is dropped and Warden
/// makes its own, so a header cannot store megabytes in the audit log or pose as another
/// request's id with odd characters.
pub async fn sane_request_id(mut req: Request, next: Next) -> Response {
    let ok = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    };
    let headers = req.headers_mut();
    if headers.get_all("x-request-id").iter().count() > 1
        || headers.get("x-request-id").is_some_and(|v| !ok(v))
    {
        headers.remove("x-request-id");
    }
    next.run(req).await
}

/// Security headers on every response. Console pages set their own CSP with a nonce.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // Pages and answers may hold what is shown once (a bootstrap token, a set-password link,
    // a new API key): kept out of the browser's caches and its back-forward cache, unless the
    // answer says otherwise (the hashed assets under /pkg are immutable).
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'",
    ));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if state.config.http.tls() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    res
}

/// Paths served without a session: sign-in pages, assets, APIs (which answer 401 themselves).
fn is_public(path: &str) -> bool {
    const PREFIXES: &[&str] = &["/pkg/", "/xterm/", "/sfn/", "/api/", "/assets/", "/agent/"];
    const EXACT: &[&str] = &[
        "/login",
        "/login/mfa",
        "/set-password",
        "/healthz",
        "/readyz",
        "/metrics",
        "/favicon.ico",
    ];
    EXACT.contains(&path) || PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Console pages: send signed-out browsers to the sign-in page and browsers with a pending
/// forced password change to the change page. A convenience for people; every server
/// function still authenticates and authorizes on its own.
pub async fn console_guard(
    State(state): State<AppState>,
    session: Session,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if req.method() != Method::GET || is_public(&path) {
        return next.run(req).await;
    }
    let meta = app::ssr::request_meta_of(req.method(), req.uri(), req.headers(), req.extensions());
    match warden_domain::identity::authn::principal_from_session(&state.services, &session, meta)
        .await
    {
        Ok(p) if p.must_change_password && path != "/change-password" => {
            Redirect::to("/change-password").into_response()
        }
        Ok(p) if p.must_enrol_mfa && !p.must_change_password && path != "/me/mfa" => {
            Redirect::to("/me/mfa").into_response()
        }
        Ok(_) => next.run(req).await,
        Err(_) => Redirect::to("/login").into_response(),
    }
}
