//! The console's error type: what a server function can answer. The UI can tell
//! not-found from forbidden from conflict; internal details never reach the browser.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    #[error("Please sign in.")]
    Unauthenticated,
    #[error("You must change your password first.")]
    PasswordChangeRequired,
    #[error("You do not have permission to do this.")]
    Forbidden,
    /// The caller's last second factor is too old for this: a fresh code first (step-up).
    #[error("Confirm it is you with a code from your authenticator app first.")]
    StepUpRequired,
    #[error("{0} not found.")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("Please correct the highlighted fields.")]
    Invalid { fields: BTreeMap<String, String> },
    /// A refusal whose reason is about the caller's own access (e.g. "you have no access to
    /// pods in namespace apple"), safe and useful to show.
    #[error("{0}")]
    Refused(String),
    /// Something outside Warden (a cluster) cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    #[error("Something went wrong on our side. It has been logged.")]
    Internal,
    #[error("{0}")]
    ServerFn(ServerFnErrorErr),
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;
    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::ServerFn(value)
    }
}

impl AppError {
    /// The value of a choice field (a `<select>`): empty is none; anything the field does not
    /// offer is that field's error, `offered` saying what it takes.
    pub fn choice<T>(
        field: &str,
        value: &str,
        parse: impl Fn(&str) -> Option<T>,
        offered: &str,
    ) -> Result<Option<T>, AppError> {
        if value.is_empty() {
            return Ok(None);
        }
        parse(value)
            .map(Some)
            .ok_or_else(|| AppError::invalid(field, offered))
    }

    /// One field's error.
    pub fn invalid(field: &str, message: &str) -> Self {
        AppError::Invalid {
            fields: [(field.to_owned(), message.to_owned())].into(),
        }
    }

    /// The message for one form field, if the error names it.
    pub fn field(&self, name: &str) -> Option<String> {
        match self {
            AppError::Invalid { fields } => fields.get(name).cloned(),
            AppError::Conflict {
                field: Some(f),
                message,
            } if f == name => Some(message.clone()),
            _ => None,
        }
    }
}

#[cfg(feature = "ssr")]
impl From<warden_domain::clusters::reads::ReadError> for AppError {
    fn from(e: warden_domain::clusters::reads::ReadError) -> Self {
        use warden_domain::clusters::reads::ReadError as R;
        match e {
            R::Forbidden(m) | R::NotFound(m) | R::Invalid(m) => AppError::Refused(m),
            R::Unavailable(m) => AppError::Unavailable(m),
        }
    }
}

#[cfg(feature = "ssr")]
impl From<warden_domain::DomainError> for AppError {
    fn from(e: warden_domain::DomainError) -> Self {
        use warden_domain::DomainError as D;
        match e {
            D::NotFound { what } => AppError::NotFound(what),
            D::Conflict { field, message } => AppError::Conflict { field, message },
            D::Forbidden { reason } => {
                tracing::info!(%reason, "forbidden");
                AppError::Forbidden
            }
            D::Invalid { fields } => AppError::Invalid { fields },
            D::Unauthenticated | D::ProviderSignInRequired => AppError::Unauthenticated,
            D::PasswordChangeRequired => AppError::PasswordChangeRequired,
            D::StepUpRequired => AppError::StepUpRequired,
            D::Db(e) => {
                tracing::error!(error = %e, "database error");
                AppError::Internal
            }
            D::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                AppError::Internal
            }
        }
    }
}
