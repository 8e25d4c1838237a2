//! Which kinds a cluster serves in namespaces, as its own discovery documents say
//! (`/api/<version>`, `/apis/<group>/<version>`), kept a while per cluster and API version.
//!
//! The gateway needs it for one decision: a list or watch across every namespace, by someone
//! short of full access, is narrowed to every namespace but Warden's own. That narrowing is a
//! field selector on `metadata.namespace`, which only namespaced kinds take; and which kinds
//! are namespaced is the cluster's to say (its custom resources, its aggregated APIs such as
//! `metrics.k8s.io`), not a list kept in Warden.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_domain::ids::ClusterId;

use super::transport::{ClusterRef, SharedTransport};

/// How long a discovery document is trusted.
const FRESH: Duration = Duration::from_secs(600);
/// A kind missing from a document older than this is looked up again (installed since).
const RECHECK_MISSING: Duration = Duration::from_secs(15);

type Key = (ClusterId, String);

struct Document {
    fetched: Instant,
    /// resource (plural) -> namespaced
    namespaced: Arc<HashMap<String, bool>>,
}

/// Discovery documents per cluster and API version.
#[derive(Default)]
pub struct Scopes {
    documents: Mutex<HashMap<Key, Document>>,
}

impl Scopes {
    /// Whether `resource` of `group`/`version` is namespaced on `cluster`: `None` when the
    /// cluster does not say (its discovery failed, or it does not serve that kind). Read with
    /// Warden's own identity there (discovery is open to every authenticated caller anyway).
    pub async fn namespaced(
        &self,
        transport: &SharedTransport,
        cluster: &ClusterRef,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Option<bool> {
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        let key = (cluster.id, api_version.clone());
        if let Some((age, doc)) = self.cached(&key) {
            match doc.get(resource) {
                Some(n) => return Some(*n),
                None if age < RECHECK_MISSING => return None,
                None => {}
            }
        }
        let Some(doc) = fetch(transport, cluster, group, &api_version).await else {
            return built_in_scope(group, version, resource);
        };
        let doc = Arc::new(doc);
        let found = doc.get(resource).copied();
        if let Ok(mut m) = self.documents.lock() {
            m.retain(|_, d| d.fetched.elapsed() < FRESH);
            m.insert(
                key,
                Document {
                    fetched: Instant::now(),
                    namespaced: doc,
                },
            );
        }
        found
    }

    fn cached(&self, key: &Key) -> Option<(Duration, Arc<HashMap<String, bool>>)> {
        let m = self.documents.lock().ok()?;
        let d = m.get(key)?;
        let age = d.fetched.elapsed();
        (age < FRESH).then(|| (age, d.namespaced.clone()))
    }
}

/// The scope of a core (`v1`) kind that every Kubernetes serves the same way, for when the
/// cluster's discovery cannot answer: Nodes and Namespaces refuse a `metadata.namespace`
/// field selector, so narrowing their lists blindly would break `kubectl get nodes` whenever
/// discovery hiccups. Every other kind stays unknown (`None`: narrowed, closed).
fn built_in_scope(group: &str, version: &str, resource: &str) -> Option<bool> {
    (group.is_empty()
        && version == "v1"
        && matches!(
            resource,
            "nodes" | "namespaces" | "persistentvolumes" | "componentstatuses"
        ))
    .then_some(false)
}

async fn fetch(
    transport: &SharedTransport,
    cluster: &ClusterRef,
    group: &str,
    api_version: &str,
) -> Option<HashMap<String, bool>> {
    let client = match transport.client(cluster).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(cluster = %cluster.name, error = %e, "cannot reach the cluster for its discovery document");
            return None;
        }
    };
    let list = if group.is_empty() {
        client.list_core_api_resources(api_version).await
    } else {
        client.list_api_group_resources(api_version).await
    };
    match list {
        Ok(list) => Some(
            list.resources
                .into_iter()
                .filter(|r| !r.name.contains('/'))
                .map(|r| (r.name, r.namespaced))
                .collect(),
        ),
        Err(e) => {
            tracing::info!(cluster = %cluster.name, api_version, error = %e, "the cluster's discovery document cannot be read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::built_in_scope;

    #[test]
    fn without_discovery_only_core_cluster_scoped_kinds_are_known() {
        for r in [
            "nodes",
            "namespaces",
            "persistentvolumes",
            "componentstatuses",
        ] {
            assert_eq!(built_in_scope("", "v1", r), Some(false), "{r}");
            // The same name in another group is that group's to say.
            assert_eq!(built_in_scope("example.com", "v1", r), None, "{r}");
        }
        for r in [
            "pods",
            "serviceaccounts",
            "secrets",
            "events",
            "nodes/status",
        ] {
            assert_eq!(built_in_scope("", "v1", r), None, "{r}");
        }
        assert_eq!(built_in_scope("", "v2", "nodes"), None);
    }
}
