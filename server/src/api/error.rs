//! The REST error envelope: `{"error": {"code", "message", "fields"}}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeMap;
use warden_domain::DomainError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first")
    }
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you do not have permission to do this",
        )
    }
    pub fn password_change_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "password_change_required",
            "change your password first (POST /api/v1/me/password)",
        )
    }
    pub fn mfa_enrolment_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "mfa_enrolment_required",
            "set up two-factor authentication first (POST /api/v1/me/mfa/totp)",
        )
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound { what } => ApiError::not_found(&what),
            DomainError::Conflict { field, message } => {
                let mut err = ApiError::new(StatusCode::CONFLICT, "conflict", message.clone());
                if let Some(f) = field {
                    err.fields.insert(f, message);
                }
                err
            }
            DomainError::Forbidden { reason } => {
                tracing::info!(%reason, "forbidden");
                ApiError::forbidden()
            }
            DomainError::Invalid { fields } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid",
                message: "the request has invalid fields".into(),
                fields,
            },
            DomainError::Unauthenticated => ApiError::unauthenticated(),
            DomainError::PasswordChangeRequired => ApiError::password_change_required(),
            DomainError::ProviderSignInRequired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "provider_sign_in_required",
                "your identity provider has not vouched for you recently: sign in to the Warden console through it, then retry",
            ),
            DomainError::StepUpRequired => ApiError::new(
                StatusCode::FORBIDDEN,
                "step_up_required",
                warden_domain::identity::mfa::STEP_UP_MESSAGE,
            ),
            DomainError::Db(e) => {
                tracing::error!(error = %e, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; it has been logged",
                )
            }
            DomainError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; it has been logged",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "fields": self.fields}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body whose every failure answers with the error envelope: 400 for malformed JSON or
/// invalid UTF-8, 415 without a JSON content type, 413 when too large, 422 for wrong types,
/// missing or unknown fields.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(match rej {
                JsonRejection::JsonDataError(e) => {
                    let mut err = ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!("the JSON body does not match: {}", e.body_text()),
                    );
                    // The field at fault, as the domain's validation names its fields
                    // (`subject.kind`), when the body got one field wrong.
                    if let Some((field, problem)) = data_error_field(&e) {
                        err.fields.insert(field, problem);
                    }
                    err
                }
                JsonRejection::JsonSyntaxError(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("malformed JSON: {}", e.body_text()),
                ),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with Content-Type: application/json",
                ),
                JsonRejection::BytesRejection(e) => {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            "the request body is too large",
                        )
                    } else {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "the request body could not be read",
                        )
                    }
                }
                other => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", other.body_text()),
            }),
        }
    }
}

/// The path of the field a JSON body got wrong (`subject.kind`, `namespaces[2]`) and what is
/// wrong with it, without the position in the text; `None` at the body's top level (the
/// message says it all).
fn data_error_field(e: &axum::extract::rejection::JsonDataError) -> Option<(String, String)> {
    use std::error::Error as _;
    let inner = e
        .source()?
        .source()?
        .downcast_ref::<serde_path_to_error::Error<serde_json::Error>>()?;
    let path = inner.path().to_string();
    if path.is_empty() || path == "." {
        return None;
    }
    let problem = inner.inner().to_string();
    let problem = match problem.rsplit_once(" at line ") {
        Some((p, _)) => p.to_owned(),
        None => problem,
    };
    Some((path, problem))
}

/// Query parameters whose failures answer with the error envelope (422 naming the problem).
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // What axum's `Query` does, with the parameter at fault named in `fields` (as a JSON
        // body's field is): `?status=up` answers `fields.status`.
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(ApiQuery)
            .map_err(|e| {
                let problem = e.inner().to_string();
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("bad query parameters: {problem}"),
                );
                let field = e.path().to_string();
                if !field.is_empty() && field != "." {
                    err.fields.insert(field, problem);
                }
                err
            })
    }
}

/// Every error the REST API answers is the envelope, also those made below the handlers (a
/// wrong method, a body over the limit, a path parameter that is not UTF-8): a failure that is
/// not JSON is rewritten into the envelope, its text kept as the message, its headers (`Allow`,
/// `Retry-After`, `WWW-Authenticate`) kept.
pub async fn envelope(req: Request, next: axum::middleware::Next) -> Response {
    // Applied to the whole application (a body over the limit is refused before routing), for
    // the REST API's paths only; the terminal's WebSocket refusals are JSON already.
    let api = req.uri().path() == "/api/v1" || req.uri().path().starts_with("/api/v1/");
    let res = next.run(req).await;
    if !api {
        return res;
    }
    let status = res.status();
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty() && !t.starts_with('<'));
    let (code, default): (&'static str, &str) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthenticated", "sign in first"),
        StatusCode::FORBIDDEN => ("forbidden", "you do not have permission to do this"),
        StatusCode::NOT_FOUND => ("not_found", "endpoint not found"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method (see the Allow header)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid", "the request has invalid fields"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
        s if s.is_server_error() => ("internal", "internal error; it has been logged"),
        _ => ("bad_request", "the request cannot be served"),
    };
    let message = match (status.is_server_error(), text) {
        (false, Some(t)) => t,
        _ => default.to_owned(),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (k, v) in out.headers().iter() {
        parts.headers.insert(k.clone(), v.clone());
    }
    *out.headers_mut() = parts.headers;
    out
}
