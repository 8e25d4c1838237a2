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
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("the JSON body does not match: {}", e.body_text()),
                ),
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
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("bad query parameters: {}", rej.body_text()),
            )),
        }
    }
}
