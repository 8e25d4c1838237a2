//! The kubeconfig a user downloads: one cluster and one context per cluster they reach (the
//! server is the gateway's `/clusters/<name>`, the gateway CA embedded), one user entry with the
//! short-lived client certificate. Cluster and context entries are named `warden-<cluster>`, so
//! they do not collide with others when merged into an existing `~/.kube/config`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

pub struct KubeconfigInput<'a> {
    pub gateway_url: &'a str,
    /// The CA kubectl must trust for the gateway; `None`: the system's trust store (an
    /// operator-provided, publicly trusted certificate).
    pub gateway_ca_pem: Option<&'a str>,
    /// The clusters, in order; the first is the current context.
    pub clusters: &'a [KubeconfigCluster],
    /// The name of the user entry (the user's service account name: recognisable, stable).
    pub user: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    /// When the credential expires (RFC 3339), written as a comment.
    pub expires_at: &'a str,
}

/// One cluster of a kubeconfig.
pub struct KubeconfigCluster {
    pub name: String,
    /// The context's namespace (kubectl's `default` when absent): set when the user's grant
    /// on the cluster is one namespace, so `kubectl get pods` works without `-n`.
    pub namespace: Option<String>,
}

/// The name of a cluster's entry and context in Warden's kubeconfigs.
pub fn context_name(cluster: &str) -> String {
    format!("warden-{cluster}")
}

/// The kubeconfig YAML, usable by kubectl as is.
pub fn render(i: &KubeconfigInput<'_>) -> String {
    let base = i.gateway_url.trim_end_matches('/');
    let clusters: Vec<_> = i
        .clusters
        .iter()
        .map(|c| {
            let mut cluster = json!({"server": format!("{base}/clusters/{}", c.name)});
            if let Some(ca) = i.gateway_ca_pem {
                cluster["certificate-authority-data"] = json!(B64.encode(ca));
            }
            json!({"name": context_name(&c.name), "cluster": cluster})
        })
        .collect();
    let contexts: Vec<_> = i
        .clusters
        .iter()
        .map(|c| {
            let mut ctx = json!({"cluster": context_name(&c.name), "user": i.user});
            if let Some(ns) = &c.namespace {
                ctx["namespace"] = json!(ns);
            }
            json!({"name": context_name(&c.name), "context": ctx})
        })
        .collect();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": i.clusters.first().map(|c| context_name(&c.name)).unwrap_or_default(),
        "clusters": clusters,
        "contexts": contexts,
        "users": [{
            "name": i.user,
            "user": {
                "client-certificate-data": B64.encode(i.cert_pem),
                "client-key-data": B64.encode(i.key_pem),
            }
        }],
    });
    let yaml = serde_yaml::to_string(&doc).unwrap_or_default();
    format!(
        "# Warden kubeconfig for {user}. The credential expires at {exp}; download a new one then.\n\
         # Every request goes through Warden's gateway, which checks and audits it.\n{yaml}",
        user = i.user,
        exp = i.expires_at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_context_per_cluster() {
        let y = render(&KubeconfigInput {
            gateway_url: "https://gw.example.com:8443/",
            gateway_ca_pem: Some("CA"),
            clusters: &[
                KubeconfigCluster {
                    name: "prod".into(),
                    namespace: Some("apple".into()),
                },
                KubeconfigCluster {
                    name: "dev".into(),
                    namespace: None,
                },
            ],
            user: "u-sally-example-com",
            cert_pem: "C",
            key_pem: "K",
            expires_at: "2026-01-01T00:00:00Z",
        });
        let v: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(v["current-context"], "warden-prod");
        assert_eq!(v["contexts"][0]["context"]["namespace"], "apple");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "warden-prod");
        assert!(v["contexts"][1]["context"].get("namespace").is_none());
        assert_eq!(
            v["clusters"][1]["cluster"]["server"],
            "https://gw.example.com:8443/clusters/dev"
        );
        assert_eq!(v["contexts"][0]["context"]["user"], "u-sally-example-com");
        assert_eq!(v["users"].as_sequence().unwrap().len(), 1);
    }
}
