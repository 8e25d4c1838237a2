//! What the agent knows about its cluster: its fingerprint (the UID of `kube-system`) and the
//! facts it reports with each heartbeat.

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams};
use warden_domain::dto::{ClusterFacts, NodeFact};

/// UID of the `kube-system` namespace: stable for the life of a cluster, different between
/// clusters.
pub async fn fingerprint(kube: &kube::Client) -> Result<String, kube::Error> {
    let ns: Api<Namespace> = Api::all(kube.clone());
    let ks = ns.get("kube-system").await?;
    Ok(ks.metadata.uid.unwrap_or_default())
}

/// Version, nodes and namespaces, as far as the agent can read them. A part that cannot be
/// read is left out rather than failing the heartbeat.
pub async fn gather(kube: &kube::Client) -> ClusterFacts {
    let mut facts = ClusterFacts {
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        ..Default::default()
    };
    match kube.apiserver_version().await {
        Ok(v) => facts.kubernetes_version = Some(v.git_version),
        Err(e) => tracing::debug!(error = %e, "cannot read the Kubernetes version"),
    }
    let nodes: Api<Node> = Api::all(kube.clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) => {
            facts.node_count = list.items.len() as u32;
            facts.nodes = list
                .items
                .iter()
                .take(500)
                .map(|n| NodeFact {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    ready: n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        }),
                    kubelet_version: n
                        .status
                        .as_ref()
                        .and_then(|s| s.node_info.as_ref())
                        .map(|i| i.kubelet_version.clone()),
                })
                .collect();
        }
        Err(e) => tracing::debug!(error = %e, "cannot list nodes"),
    }
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    match namespaces.list(&ListParams::default()).await {
        Ok(list) => {
            facts.namespace_count = list.items.len() as u32;
            let mut names: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect();
            names.sort();
            names.truncate(1000);
            facts.namespaces = names;
        }
        Err(e) => tracing::debug!(error = %e, "cannot list namespaces"),
    }
    facts
}
