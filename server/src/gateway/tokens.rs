//! Service-account tokens from the TokenRequest API: short-lived (one hour), bound to a
//! per-user Secret (deleting it kills them), cached until 80 % of their life has passed. Legacy
//! token Secrets are never used.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a requested token lives.
pub const TOKEN_TTL_SECS: i64 = 3600;

#[derive(Default)]
pub struct TokenCache {
    /// (cluster, namespace/name) -> (token, refresh after). The cluster as the transport names
    /// it for good: its id through agents' tunnels (a name can be renamed or reused), its
    /// registered name for direct clusters (whose registration forgets its tokens).
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl TokenCache {
    /// A valid token for `namespace/name` on `cluster`, from the cache or a new TokenRequest.
    pub async fn token(
        &self,
        client: &kube::Client,
        cluster: &str,
        namespace: &str,
        name: &str,
        bound_secret: Option<&str>,
    ) -> Result<String, kube::Error> {
        let key = (cluster.to_owned(), format!("{namespace}/{name}"));
        if let Ok(m) = self.tokens.lock() {
            if let Some((t, refresh)) = m.get(&key) {
                if Instant::now() < *refresh {
                    return Ok(t.clone());
                }
            }
        }
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: None,
                attestations: None,
                expiration_seconds: Some(TOKEN_TTL_SECS),
                bound_object_ref: bound_secret.map(|s| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(s.to_owned()),
                    uid: None,
                }),
            }),
            ..Default::default()
        };
        let started = Instant::now();
        let out = api
            .create_token_request(name, &PostParams::default(), &req)
            .await?;
        let status = out.status.unwrap_or_default();
        let token = status.token.unwrap_or_default();
        // Refresh at 80 % of the life the API server granted.
        let granted = status
            .expiration_timestamp
            .map(|t| t.0.as_second())
            .unwrap_or(jiff_now_secs() + TOKEN_TTL_SECS)
            .saturating_sub(jiff_now_secs())
            .clamp(60, TOKEN_TTL_SECS);
        let refresh = started + Duration::from_secs((granted as u64) * 4 / 5);
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(key, (token.clone(), refresh));
        }
        Ok(token)
    }

    pub fn forget(&self, cluster: &str, service_account: &str) {
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|(c, sa), _| {
                !(c == cluster && sa.rsplit('/').next() == Some(service_account))
            });
        }
    }

    pub fn forget_cluster(&self, cluster: &str) {
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|(c, _), _| c != cluster);
        }
    }
}

fn jiff_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
