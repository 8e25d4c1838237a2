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
use warden_domain::admin::jit_settings::WebhookNetworks;
use warden_domain::admin::{access_requests, bindings, jit_settings, webhook_outbox};
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
    let http = webhook_client(services);
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
/// it was set (`jit_settings::webhook_url_problem`), where it redirects to was not. Every
/// address a name resolves to is judged by the operator's networks before it is dialled
/// ([`GuardedResolver`]); a URL naming an address is judged in [`deliver_due`].
pub fn webhook_client(svc: &Services) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver {
            networks: svc.jit.networks(),
        }))
        .build()
        .unwrap_or_default()
}

/// Resolves a webhook's host and keeps only the addresses webhooks may be posted to: a name
/// that resolves (or comes to resolve) to a private or metadata address is not dialled there.
struct GuardedResolver {
    networks: WebhookNetworks,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let networks = self.networks.clone();
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let mut why = None;
            let allowed: Vec<std::net::SocketAddr> = found
                .filter(|a| match networks.refuses(a.ip()) {
                    None => true,
                    Some(w) => {
                        why = Some(w);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = why.unwrap_or("has no address");
                return Err(format!("the webhook's host resolves to an address that {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An error and its causes in one line (reqwest's own says only "error sending request").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
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
    let networks = svc.jit.networks();
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
            let error = if let Some(why) = networks.problem(&d.url) {
                Some(format!("not posted: the webhook URL {why}"))
            } else {
                let body = serde_json::to_vec(&d.payload).unwrap_or_default();
                let mut req = http
                    .post(&d.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json");
                // Signed (Standard Webhooks), so the receiver can tell Warden's deliveries from
                // anyone else's who learns the URL, and refuse a replayed one.
                if let Some(secret) = jit_settings::webhook_signing_secret(svc, &d.url) {
                    let ts = svc.clock.now().millis() / 1000;
                    if let Some(sig) = jit_settings::webhook_signature(&secret, &d.id, ts, &body) {
                        req = req
                            .header("webhook-id", &d.id)
                            .header("webhook-timestamp", ts.to_string())
                            .header("webhook-signature", sig);
                    }
                }
                let outcome = req.body(body).send().await;
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
                    Err(e) => Some(error_chain(&e.without_url())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;
    use std::str::FromStr;

    /// A name is judged on what it resolves to when dialled (here `localhost`, which the
    /// resolver itself does not treat specially): refused unless the operator listed the
    /// network, and then only the listed addresses are dialled.
    #[tokio::test]
    async fn a_name_resolving_into_wardens_networks_is_not_dialled_unless_listed() {
        let name = || reqwest::dns::Name::from_str("localhost").unwrap();
        let closed = GuardedResolver {
            networks: WebhookNetworks::default(),
        };
        let err = match closed.resolve(name()).await {
            Ok(addrs) => panic!("dialled {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("WARDEN_WEBHOOK_ALLOWED_NETWORKS"), "{err}");
        let open = GuardedResolver {
            networks: WebhookNetworks::new(vec!["127.0.0.0/8".parse().unwrap()]),
        };
        let addrs: Vec<_> = open.resolve(name()).await.expect("allowed").collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{addrs:?}"
        );
    }

    #[test]
    fn the_causes_of_an_error_are_kept() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::new(std::io::ErrorKind::Other, inner);
        assert_eq!(error_chain(&outer), "connection refused");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let w = Wrap(std::io::Error::other(
            "the webhook's host resolves to an address that is bad",
        ));
        assert_eq!(
            error_chain(&w),
            "error sending request: the webhook's host resolves to an address that is bad"
        );
    }
}
