//! Just-in-time access in the running server (issue 17):
//!
//! - the expiry job: every second of Warden's clock it ends the bindings whose time is up
//!   (audited as `binding.expired`; the authorization epoch moves, so every live stream and
//!   terminal that depended on one is re-checked at once and ends with "your access ...
//!   expired at ...", and the sweeper removes the service account of a user left with no
//!   grant on a cluster) and lapses pending access requests nobody decided in time;
//! - the webhook notifier: request events posted as JSON with a Slack-compatible `text`,
//!   retried with backoff.

use std::sync::{Arc, Weak};
use std::time::Duration;
use warden_domain::admin::{access_requests, bindings};
use warden_domain::Services;

/// Start the expiry job. It stops when the services are dropped.
pub fn spawn(services: &Arc<Services>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Services> = Arc::downgrade(services);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(svc) = weak.upgrade() else { return };
            run_once(&svc).await;
        }
    })
}

/// One pass: end expired grants, lapse expired requests.
pub async fn run_once(svc: &Services) {
    match bindings::expire_due(svc).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(grants = n, "time-bound grants expired"),
        Err(e) => tracing::warn!(error = %e, "could not end expired grants"),
    }
    if let Err(e) = access_requests::expire_due(svc).await {
        tracing::warn!(error = %e, "could not lapse expired access requests");
    }
}

/// Posts request events to the organization's webhook.
pub struct WebhookNotifier {
    http: reqwest::Client,
    /// Waits between attempts (the first attempt is immediate).
    backoff: Vec<Duration>,
}

impl WebhookNotifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            backoff: [1, 2, 4, 8, 16]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        })
    }
}

impl access_requests::Notifier for WebhookNotifier {
    fn notify(&self, url: String, payload: serde_json::Value) {
        let http = self.http.clone();
        let backoff = self.backoff.clone();
        tokio::spawn(async move {
            let mut waits = backoff.into_iter();
            loop {
                let outcome = http.post(&url).json(&payload).send().await;
                let error = match outcome {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => format!("status {}", r.status()),
                    Err(e) => e.to_string(),
                };
                match waits.next() {
                    Some(w) => {
                        tracing::debug!(%error, "webhook delivery failed; retrying");
                        tokio::time::sleep(w).await;
                    }
                    None => {
                        // The URL may carry a token: never logged.
                        tracing::warn!(%error, "webhook delivery failed; giving up");
                        return;
                    }
                }
            }
        });
    }
}
