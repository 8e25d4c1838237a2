//! The domain layer's one error type.

use crate::types::InvalidValue;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{what} not found")]
    NotFound { what: String },
    /// A uniqueness or reference conflict; `field` names the offending input.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// The caller may not do this. The reason is for the audit log, not for the caller.
    #[error("forbidden")]
    Forbidden { reason: String },
    /// Input that breaks a rule; `fields` maps each field to what is wrong with it.
    #[error("invalid input")]
    Invalid { fields: BTreeMap<String, String> },
    #[error("authentication required")]
    Unauthenticated,
    #[error("password change required")]
    PasswordChangeRequired,
    /// The caller's last second factor is too old for this (step-up): they confirm it is them
    /// with a fresh code first ([`crate::identity::mfa::STEP_UP_MESSAGE`]).
    #[error("a fresh second factor is required")]
    StepUpRequired,
    /// The caller signs in through an identity provider that has not vouched for them for
    /// longer than the deployment allows credentials used without a session to go on.
    #[error("a sign-in through the identity provider is due")]
    ProviderSignInRequired,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            fields: BTreeMap::from([(field.to_owned(), message.into())]),
        }
    }
    pub fn invalid_value(field: &str, e: InvalidValue) -> Self {
        Self::invalid(field, e.0)
    }
    pub fn conflict(field: &str, message: impl Into<String>) -> Self {
        Self::Conflict {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::Forbidden {
            reason: reason.into(),
        }
    }
}

/// Translate a violation of a named unique constraint into a `Conflict` on `field`.
pub trait OnConstraint<T> {
    fn on_unique(self, constraint: &str, field: &str, message: &str) -> DomainResult<T>;
}

impl<T> OnConstraint<T> for Result<T, sea_orm::DbErr> {
    fn on_unique(self, constraint: &str, field: &str, message: &str) -> DomainResult<T> {
        self.map_err(|e| {
            let text = e.to_string();
            // SQLite names the columns ("UNIQUE constraint failed: users.email"); PostgreSQL
            // names the constraint. Match either.
            let column = constraint.trim_start_matches("uq_").replacen('_', ".", 1);
            if text.contains(constraint) || text.contains(&column) {
                DomainError::conflict(field, message)
            } else {
                DomainError::Db(e)
            }
        })
    }
}
