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
    /// The Kubernetes API gateway (its listener is started by `warden serve` and `TestApp`).
    pub gateway: Arc<crate::gateway::Gateway>,
    /// Live agent tunnels, by cluster; `clusters.client(name)` is a `kube::Client` through one.
    pub clusters: Arc<crate::tunnel::ClusterConnections>,
    /// Per-source limits on sign-in and the agent endpoint.
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
    /// This replica among those sharing a PostgreSQL database (`None` on SQLite).
    pub replicas: Option<Arc<crate::replicas::Replicas>>,
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
