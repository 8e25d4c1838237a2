//! Server-side helpers for server functions: the services handle, the session, the request
//! metadata, and the one way to get an authenticated [`Principal`].

use std::sync::Arc;
use tower_sessions::Session;
use warden_domain::access::{Action, Grant, Principal};
use warden_domain::audit::RequestMeta;
use warden_domain::Services;

use crate::error::AppError;

pub fn services() -> Result<Arc<Services>, AppError> {
    leptos::prelude::use_context::<Arc<Services>>().ok_or_else(|| {
        tracing::error!("Services missing from the Leptos context");
        AppError::Internal
    })
}

pub async fn session() -> Result<Session, AppError> {
    leptos_axum::extract::<Session>().await.map_err(|e| {
        tracing::error!(error = ?e, "no session layer");
        AppError::Internal
    })
}

pub fn request_meta() -> RequestMeta {
    let Some(parts) = leptos::prelude::use_context::<http::request::Parts>() else {
        return RequestMeta::default();
    };
    request_meta_from_parts(&parts)
}

pub fn request_meta_from_parts(parts: &http::request::Parts) -> RequestMeta {
    request_meta_of(&parts.method, &parts.uri, &parts.headers, &parts.extensions)
}

/// Audit metadata of a request: method, path, source address, user agent, request id.
pub fn request_meta_of(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> RequestMeta {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    RequestMeta {
        method: Some(method.to_string()),
        // The path as the client sent it (a nested router sees it without its prefix), with
        // credentials in it redacted.
        path: Some(
            warden_domain::audit::loggable_path(
                extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or(uri.path(), |o| o.0.path()),
            )
            .into_owned(),
        ),
        source_ip: extensions
            .get::<warden_domain::audit::ClientIp>()
            .map(|c| c.0)
            .or_else(|| {
                extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip())
            })
            .map(|ip| ip.to_string()),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
    }
}

/// The signed-in principal, allowed to act (no forced password change pending).
pub async fn principal() -> Result<Principal, AppError> {
    allowed_to_act(principal_allow_password_change().await?)
}

/// `p`, unless a password change or the MFA policy's enrolment must come first.
fn allowed_to_act(p: Principal) -> Result<Principal, AppError> {
    if p.must_change_password {
        return Err(AppError::PasswordChangeRequired);
    }
    if p.must_enrol_mfa {
        return Err(AppError::Refused(
            "Set up two-factor authentication first (Two-factor authentication, in your menu)."
                .into(),
        ));
    }
    Ok(p)
}

/// [`principal`] for a page's background refresh: the same checks, but no activity (the
/// session still idles out while a page polls).
pub async fn principal_polling() -> Result<Principal, AppError> {
    let svc = services()?;
    let session = session().await?;
    allowed_to_act(
        warden_domain::identity::authn::principal_from_session_polling(
            &svc,
            &session,
            request_meta(),
        )
        .await?,
    )
}

/// The signed-in principal, even while the MFA policy still asks them to enrol (the enrolment
/// server functions).
pub async fn principal_enrolling() -> Result<Principal, AppError> {
    let p = principal_allow_password_change().await?;
    if p.must_change_password {
        return Err(AppError::PasswordChangeRequired);
    }
    Ok(p)
}

/// The signed-in principal, even while a password change is pending.
pub async fn principal_allow_password_change() -> Result<Principal, AppError> {
    let svc = services()?;
    let session = session().await?;
    Ok(
        warden_domain::identity::authn::principal_from_session(&svc, &session, request_meta())
            .await?,
    )
}

/// Authenticate, then ask the gate. The one way a server function gets a [`Grant`].
pub async fn authorize(action: Action) -> Result<(Principal, Grant), AppError> {
    let p = principal().await?;
    let svc = services()?;
    match svc.policy.authorize(&p, action).await {
        Ok(g) => Ok((p, g)),
        Err(_) => Err(AppError::Forbidden),
    }
}

/// Whether this server-function call is a plain HTML form post (the page has not hydrated, or
/// JavaScript is off). The browser then needs a redirect; the hydrated client wants the value.
pub fn plain_form() -> bool {
    leptos::prelude::use_context::<http::request::Parts>().is_some_and(|p| plain_form_of(&p))
}

/// Whether the request is a plain HTML form post: its `Accept` asks for a page.
pub fn plain_form_of(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Percent-encode a query-string component.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The name of the server function being called (`create_project` for `/sfn/create_project`).
fn endpoint() -> String {
    leptos::prelude::use_context::<http::request::Parts>()
        .and_then(|p| p.uri.path().rsplit('/').next().map(str::to_owned))
        .unwrap_or_default()
}

/// The page a plain form was posted from: its path and query, without the parameters a
/// previous answer or an open confirmation step added. Only same-site paths are used.
fn referring_page() -> String {
    referring_page_of(leptos::prelude::use_context::<http::request::Parts>().as_ref())
}

/// [`referring_page`] of a request's parts.
fn referring_page_of(parts: Option<&http::request::Parts>) -> String {
    let Some(referer) = parts.and_then(|p| {
        p.headers
            .get(http::header::REFERER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }) else {
        return "/".into();
    };
    let Ok(uri) = referer.parse::<http::Uri>() else {
        return "/".into();
    };
    let path = uri.path();
    if !path.starts_with('/') || path.starts_with("//") {
        return "/".into();
    }
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| {
            // Judged decoded, as the page reads it (`err%2E_` is `err._`).
            let raw = kv.split('=').next().unwrap_or_default();
            let key: String = form_urlencoded::parse(raw.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            let key = key.as_str();
            !key.is_empty()
                && !key.starts_with("err.")
                && !key.starts_with(crate::ui::TYPED_PREFIX)
                && !matches!(
                    key,
                    crate::ui::FORM_PARAM
                        | crate::ui::OK_PARAM
                        | crate::ui::SIG_PARAM
                        | "confirm"
                        | "target"
                )
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

fn with_params(page: &str, params: &[(String, String)]) -> String {
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let sep = if page.contains('?') { '&' } else { '?' };
    format!("{page}{sep}{}", q.join("&"))
}

/// Finish a form's server function.
///
/// On success with `then`, both the plain browser and the hydrated client go to `then`.
/// A plain post otherwise returns to the page it came from: with `ok=FORM` on success, or with
/// `form=FORM&err.FIELD=message` (`err._` for a message without a field) on failure, which the
/// page renders next to the fields. The hydrated client reads the result from the action.
pub fn finish<T>(result: Result<T, AppError>, then: Option<String>) -> Result<T, AppError> {
    let plain = plain_form();
    match (&result, then) {
        (Ok(_), Some(to)) => leptos_axum::redirect(&to),
        (Ok(_), None) if plain => leptos_axum::redirect(&with_params(
            &referring_page(),
            &[(crate::ui::OK_PARAM.into(), endpoint())],
        )),
        (Err(e), _) if plain => {
            leptos_axum::redirect(&error_page(&referring_page(), &endpoint(), e));
        }
        (Err(e), _) => set_error_status(e),
        _ => {}
    }
    result
}

/// Finish a read: a failed call over HTTP (`/sfn/...`) answers with the status its error
/// deserves (403, 404...), not the default 500; while a page renders, nothing changes.
pub fn answer<T>(result: Result<T, AppError>) -> Result<T, AppError> {
    let over_http = leptos::prelude::use_context::<http::request::Parts>()
        .is_some_and(|p| p.uri.path().starts_with("/sfn/"));
    if let (Err(e), true) = (&result, over_http) {
        set_error_status(e);
    }
    result
}

/// A page whose main content was refused or does not exist answers 403 or 404 (it still
/// renders its friendly message), so scripts, crawlers and monitors are not told 200.
pub fn page_status(e: &AppError) {
    let status = match e {
        AppError::Forbidden | AppError::Refused(_) => http::StatusCode::FORBIDDEN,
        AppError::NotFound(_) => http::StatusCode::NOT_FOUND,
        _ => return,
    };
    if let Some(res) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(status);
    }
}

/// Where a plain form that failed with `e` goes: the page it came from, with
/// `form=ENDPOINT&err.FIELD=message` for the page to show beside the fields.
fn error_page(page: &str, endpoint: &str, e: &AppError) -> String {
    let errors = crate::ui::FormErrors::from_app(e);
    let mut params = vec![(crate::ui::FORM_PARAM.to_owned(), endpoint.to_owned())];
    if let Some(g) = errors.general {
        params.push(("err._".into(), g));
    }
    params.extend(
        errors
            .fields
            .into_iter()
            .map(|(k, v)| (format!("err.{k}"), v)),
    );
    with_params(page, &params)
}

/// A server function's answer as it leaves. One that failed before it could say how (an
/// early `?`: not signed in, a field refused before the domain was asked) has the
/// server-function layer's defaults: 500, or for a plain form (no JavaScript) a redirect to
/// the page with the error in leptos' own `__err` parameter, which Warden's pages do not
/// read (the error was lost). It gets the status its error deserves (401, 403, 404, 409,
/// 422; 500 stays for an internal error), and a plain form goes back to its page with the
/// error beside the fields, as [`finish`] sends it (not signed in: to the sign-in page).
/// Answers that already have their status pass unchanged.
///
/// A plain form sent back with its errors also gets what was typed into it (`form`, the
/// posted body), so that the page shows it again and nothing typed is lost: each field as
/// `val.FIELD`, except secrets (passwords, tokens, keys, codes), which are never put in an
/// address.
pub async fn settle(
    parts: &http::request::Parts,
    form: Option<&[u8]>,
    res: axum::response::Response,
) -> axum::response::Response {
    const MAX: usize = 64 * 1024;
    if res.status().is_redirection() {
        let error = res
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(leptos_form_error);
        let res = match error {
            Some(e) => plain_form_back(parts, &e),
            None => res,
        };
        return match form {
            Some(form) => with_typed(res, form),
            None => res,
        };
    }
    if res.status() != http::StatusCode::INTERNAL_SERVER_ERROR
        || !res.headers().contains_key("serverfnerror")
    {
        return res;
    }
    let (mut head, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX).await else {
        head.headers.remove(http::header::CONTENT_LENGTH);
        return axum::response::Response::from_parts(head, axum::body::Body::empty());
    };
    let Ok(e) = serde_json::from_slice::<AppError>(&bytes) else {
        return axum::response::Response::from_parts(head, axum::body::Body::from(bytes));
    };
    if plain_form_of(parts) {
        let res = plain_form_back(parts, &e);
        return match form {
            Some(form) => with_typed(res, form),
            None => res,
        };
    }
    if let Some(status) = error_status(&e) {
        head.status = status;
    }
    axum::response::Response::from_parts(head, axum::body::Body::from(bytes))
}

// ---- a plain form's errors in an address, signed ----
//
// A plain form that fails goes back to its page with the errors in the address
// (`form=F&err.FIELD=message`), and the page shows them as Warden's words. A link crafted with
// `err._=Your session expired, call ...` would show anyone who follows it the crafter's words
// on Warden's page. So the errors Warden puts in an address are signed (`sig`: an expiry and a
// MAC over the errors, the expiry and the browser's session cookie), and a page asked for with
// errors that are not is sent to the same address without them.

/// How long a signed form result stays good (the redirect follows at once).
const OUTCOME_TTL_MS: i64 = 10 * 60 * 1000;

fn outcome_key(svc: &warden_domain::Services) -> warden_domain::secrets::Sealer {
    static FALLBACK: std::sync::OnceLock<warden_domain::secrets::Sealer> =
        std::sync::OnceLock::new();
    match svc.at_rest() {
        Some(s) => s.clone(),
        // No master key: a key of this process (a restart only drops pending form results).
        None => FALLBACK
            .get_or_init(|| {
                warden_domain::secrets::Sealer::new(&warden_domain::secrets::Secret::new(
                    warden_domain::secrets::random_token(32),
                ))
            })
            .clone(),
    }
}

/// The form result in `query` as signed: `form` and every `err.*`, in order, decoded; `None`
/// when it carries no error.
fn outcome_material(query: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut errors = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k.starts_with("err.") || k == crate::ui::FORM_PARAM {
            errors |= k.starts_with("err.");
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
    }
    errors.then_some(out)
}

fn outcome_mac(key: &warden_domain::secrets::Sealer, cookie: &str, exp: i64, m: &[u8]) -> String {
    let mut data = Vec::with_capacity(m.len() + cookie.len() + 24);
    data.extend_from_slice(cookie.as_bytes());
    data.push(0);
    data.extend_from_slice(exp.to_string().as_bytes());
    data.push(0);
    data.extend_from_slice(m);
    key.mac("form-outcome", &data)
}

/// `location` with its form errors signed for the browser holding session cookie `cookie`
/// (empty: none); unchanged when it carries no error.
pub fn sign_outcome(svc: &warden_domain::Services, cookie: &str, location: &str) -> Option<String> {
    let query = location.split_once('?').map(|(_, q)| q)?;
    let m = outcome_material(query)?;
    let exp = svc.clock.now().millis() + OUTCOME_TTL_MS;
    let sig = format!("{exp}.{}", outcome_mac(&outcome_key(svc), cookie, exp, &m));
    Some(with_params(location, &[(crate::ui::SIG_PARAM.into(), sig)]))
}

/// Where a page asked for at `path?query` goes instead when it carries form errors Warden did
/// not sign for this browser (or signed too long ago): the same address without the errors.
pub fn unsigned_outcome(
    svc: &warden_domain::Services,
    cookie: &str,
    path: &str,
    query: &str,
) -> Option<String> {
    let m = outcome_material(query)?;
    let signed = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == crate::ui::SIG_PARAM)
        .map(|(_, v)| v.into_owned())
        .last()
        .and_then(|sig| {
            let (exp, mac) = sig.split_once('.')?;
            let exp: i64 = exp.parse().ok()?;
            (svc.clock.now().millis() < exp
                && warden_domain::secrets::ct_eq(
                    mac,
                    &outcome_mac(&outcome_key(svc), cookie, exp, &m),
                ))
            .then_some(())
        })
        .is_some();
    if signed {
        return None;
    }
    let kept: Vec<String> = form_urlencoded::parse(query.as_bytes())
        // What was typed stays (a shared link may fill in a form's shareable fields).
        .filter(|(k, _)| !k.starts_with("err.") && k != crate::ui::SIG_PARAM)
        .map(|(k, v)| format!("{}={}", encode(&k), encode(&v)))
        .collect();
    // Never `//host` (or `/\host`), which a browser would take for another site.
    let path = if path.starts_with("//") || path.contains('\\') {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    Some(if kept.is_empty() {
        path
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

use crate::ui::shareable_field;

/// A redirect back to a form with its errors (`form=` and `err.*` in its address) also
/// carries the shareable fields of the posted `form` as `val.FIELD` (see [`settle`]); any
/// other answer passes unchanged.
fn with_typed(mut res: axum::response::Response, form: &[u8]) -> axum::response::Response {
    const MAX_VALUE: usize = 2000;
    let Some(to) = res
        .headers()
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
    else {
        return res;
    };
    let query = to.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let keys: Vec<&str> = query
        .split('&')
        .filter_map(|kv| kv.split('=').next())
        .collect();
    let failed =
        keys.contains(&crate::ui::FORM_PARAM) && keys.iter().any(|k| k.starts_with("err."));
    if !failed {
        return res;
    }
    let typed: Vec<(String, String)> = form_urlencoded::parse(form)
        .filter(|(k, v)| shareable_field(k) && !v.is_empty() && v.len() <= MAX_VALUE)
        .map(|(k, v)| (format!("{}{k}", crate::ui::TYPED_PREFIX), v.into_owned()))
        .collect();
    if typed.is_empty() {
        return res;
    }
    let to = with_params(to, &typed);
    if let Ok(v) = http::HeaderValue::from_str(&to) {
        res.headers_mut().insert(http::header::LOCATION, v);
    }
    res
}

/// A plain form that failed with `e`: back to its page with the error (see [`settle`]).
fn plain_form_back(parts: &http::request::Parts, e: &AppError) -> axum::response::Response {
    let to = if *e == AppError::Unauthenticated {
        "/login".to_owned()
    } else {
        let endpoint = parts.uri.path().rsplit('/').next().unwrap_or_default();
        error_page(&referring_page_of(Some(parts)), endpoint, e)
    };
    axum::response::IntoResponse::into_response(axum::response::Redirect::to(&to))
}

/// The error in a redirect's `__err` parameter (leptos' answer to a failed plain form: the
/// error's JSON, base64, percent-encoded).
fn leptos_form_error(location: &str) -> Option<AppError> {
    use base64::Engine;
    let query = location.split_once('?')?.1;
    let value = query.split('&').find_map(|kv| kv.strip_prefix("__err="))?;
    let mut bytes = Vec::with_capacity(value.len());
    let mut it = value.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hex = [it.next()?, it.next()?];
                bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    let json = base64::engine::general_purpose::STANDARD
        .decode(&bytes)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&bytes))
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// The status an error deserves over HTTP; `None` for an internal error (500).
fn error_status(e: &AppError) -> Option<http::StatusCode> {
    Some(match e {
        AppError::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        AppError::PasswordChangeRequired
        | AppError::Forbidden
        | AppError::StepUpRequired
        | AppError::Refused(_) => http::StatusCode::FORBIDDEN,
        AppError::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        AppError::NotFound(_) => http::StatusCode::NOT_FOUND,
        AppError::Conflict { .. } => http::StatusCode::CONFLICT,
        AppError::Invalid { .. } => http::StatusCode::UNPROCESSABLE_ENTITY,
        AppError::ServerFn(_) => http::StatusCode::BAD_REQUEST,
        AppError::Internal => return None,
    })
}

/// Answer a failed server-function call with the status its error deserves (not the default
/// 500), so metrics and logs tell a refused or invalid request from a fault.
fn set_error_status(e: &AppError) {
    let Some(status) = error_status(e) else {
        return;
    };
    if let Some(res) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(status);
    }
}

fn flash_key(kind: &str) -> String {
    format!("warden.flash.{kind}")
}

/// How long a plain form's one-time secret waits for the page it redirects to.
const FLASH_TTL_MS: i64 = 5 * 60 * 1000;

/// A one-time secret kept for the next page: sealed with the master key (the session row is
/// in the database, and its backups), and dropped unread once [`FLASH_TTL_MS`] has passed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Flash {
    value: String,
    until: i64,
}

fn flash_purpose(kind: &str) -> String {
    format!("session-flash:{kind}")
}

/// Keep a one-time secret (a set-password link, an API key) in the session for the next page
/// a plain form lands on. The hydrated client gets it from the action instead, so it is never
/// stored then.
pub async fn flash_for_plain_form(kind: &str, value: &str) -> Result<(), AppError> {
    if !plain_form() {
        return Ok(());
    }
    let svc = services()?;
    let value = match svc.at_rest() {
        Some(sealer) => sealer.seal(&flash_purpose(kind), value.as_bytes()),
        None => value.to_owned(),
    };
    let flash = Flash {
        value,
        until: svc.clock.now().millis() + FLASH_TTL_MS,
    };
    session()
        .await?
        .insert(&flash_key(kind), flash)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not store a flash message");
            AppError::Internal
        })
}

/// Take (and forget) the one-time secret of this kind, if a plain form left one (and it has
/// not waited too long).
pub async fn take_flash(kind: &str) -> Result<Option<String>, AppError> {
    let flash = match session().await?.remove::<Flash>(&flash_key(kind)).await {
        Ok(f) => f,
        // Left by an older Warden in another shape: dropped, not shown.
        Err(tower_sessions::session::Error::SerdeJson(_)) => None,
        Err(e) => {
            tracing::error!(error = %e, "could not read a flash message");
            return Err(AppError::Internal);
        }
    };
    let Some(flash) = flash else {
        return Ok(None);
    };
    let svc = services()?;
    if svc.clock.now().millis() >= flash.until {
        return Ok(None);
    }
    match svc.at_rest() {
        Some(sealer) => match sealer.open(&flash_purpose(kind), &flash.value) {
            Ok(plain) => Ok(String::from_utf8(plain).ok()),
            Err(_) => Ok(None),
        },
        None => Ok(Some(flash.value)),
    }
}
