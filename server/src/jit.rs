//! Just-in-time access in the running server (issue 17):
//!
//! - the expiry job: every second of Warden's clock it ends the bindings whose time is up
//!   (audited as `binding.expired`; the authorization epoch moves, so every live stream and
//!   terminal that depended on one is re-checked at once and ends with "your access ...
//!   expired at ...", and the sweeper removes the service account of a user left with no
//!   grant on a cluster) and lapses pending access requests nobody decided in time;
//! - the webhook worker: request events, queued in the database outbox by the transaction that
//!   records them, posted as JSON with a Slack-compatible `text`, retried with exponential
//!   backoff for a bounded number of attempts (the give-up is audited), across restarts.

use std::sync::{Arc, Weak};
use std::time::Duration;
use warden_domain::admin::{access_requests, bindings, webhook_outbox};
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
            if svc.jobs.run("grant_expiry") {
                run_once(&svc).await;
            }
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

/// Start the webhook worker: it delivers the outbox's due deliveries when an event wakes it
/// and at least every second (so retries fall due on Warden's clock), until the services are
/// dropped.
pub fn spawn_webhooks(services: &Arc<Services>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Services> = Arc::downgrade(services);
    let waker = services.jit.waker();
    let http = webhook_client();
    tokio::spawn(async move {
        loop {
            {
                let Some(svc) = weak.upgrade() else { return };
                if svc.jobs.run("webhook_delivery") {
                    deliver_due(&svc, &http).await;
                }
            }
            tokio::select! {
                _ = waker.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

/// The HTTP client for webhook deliveries. It follows no redirect: the URL was checked when
/// it was set (`jit_settings::webhook_url_problem`), where it redirects to was not.
pub fn webhook_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// A `Retry-After` in seconds (the HTTP-date form is read as "a while": `None`).
fn retry_after_secs(h: &reqwest::header::HeaderMap) -> Option<i64> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
}

/// One pass over the outbox: post every due delivery once; a failure is scheduled again with
/// backoff, or given up (and audited) after the last attempt. Returns how many were accepted.
pub async fn deliver_due(svc: &Services, http: &reqwest::Client) -> usize {
    let mut accepted = 0;
    loop {
        let batch = match webhook_outbox::claim_due(svc, 50).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the webhook outbox");
                return accepted;
            }
        };
        if batch.is_empty() {
            return accepted;
        }
        let mut batch = batch.into_iter();
        while let Some(d) = batch.next() {
            // A URL stored before the rule of what a webhook may be: checked again, not posted.
            let error = if let Some(why) =
                warden_domain::admin::jit_settings::webhook_url_problem(&d.url)
            {
                Some(format!("not posted: the webhook URL {why}"))
            } else {
                let outcome = http.post(&d.url).json(&d.payload).send().await;
                // The URL may carry a token: errors are stripped of it, and it is never logged.
                match outcome {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                        // Slow down as asked: this delivery and the rest of the batch wait
                        // (no attempt counted), and this pass ends.
                        let wait = retry_after_secs(r.headers()).unwrap_or(30);
                        tracing::debug!(wait, "the webhook receiver asked to slow down");
                        for d in std::iter::once(d).chain(batch) {
                            if let Err(e) = webhook_outbox::throttled(svc, &d, wait).await {
                                tracing::warn!(error = %e, "could not reschedule a webhook delivery");
                            }
                        }
                        return accepted;
                    }
                    Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                    Err(e) => Some(e.without_url().to_string()),
                }
            };
            let attempt = d.attempts + 1;
            match error {
                None => {
                    accepted += 1;
                    if let Err(e) = webhook_outbox::delivered(svc, &d).await {
                        tracing::warn!(error = %e, "could not record a webhook delivery");
                    }
                }
                Some(error) => match webhook_outbox::failed(svc, &d, &error).await {
                    Ok(true) => tracing::warn!(
                        webhook.event = %d.event,
                        webhook.attempts = attempt,
                        %error,
                        "webhook delivery failed; giving up"
                    ),
                    Ok(false) => tracing::debug!(
                        webhook.event = %d.event,
                        webhook.attempts = attempt,
                        %error,
                        "webhook delivery failed; will retry"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not record a webhook failure"),
                },
            }
        }
    }
}
