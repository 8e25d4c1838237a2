//! The REST API under `/api/v1`: thin handlers over the domain layer.

mod audit;
pub mod auth;
pub mod error;
mod session_routes;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(session_routes::login))
        .route("/auth/logout", post(session_routes::logout))
        .route("/me", get(session_routes::me))
        .route("/me/password", post(session_routes::change_password))
        .route("/audit/events", get(audit::list_audit_events))
        .route("/audit/export", get(audit::export_audit_events))
        .fallback(|| async { error::ApiError::not_found("endpoint") })
}
