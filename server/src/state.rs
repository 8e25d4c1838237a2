//! What every handler can reach.

use axum::extract::FromRef;
use leptos::prelude::LeptosOptions;
use std::sync::Arc;
use warden_domain::Services;

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub config: Arc<Config>,
    pub leptos_options: LeptosOptions,
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos_options.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}
