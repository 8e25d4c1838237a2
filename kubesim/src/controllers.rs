//! What kube-controller-manager would do for Deployments, so that a simulated cluster behaves
//! as people expect when they try it (`Options::controllers`, on in Warden's demo): a
//! Deployment gets `spec.replicas` pods from its template (named `<deployment>-<template
//! hash>-<random>`, labelled with `pod-template-hash`, owned by the Deployment), a deleted pod
//! is replaced, a scale changes their number, a new template replaces them (all at once: no
//! surge), and deleting the Deployment deletes its pods (the garbage collector's cascade).
//!
//! Simplified on purpose: no ReplicaSet objects (the pods are owned by the Deployment
//! directly), no rollout strategy or history, and the Deployment's status is the simulator's
//! usual "everything ready". Off by default, so tests see exactly the objects they create.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::core::Core;
use crate::ops::{DeleteOpts, WriteOpts};
use crate::resources::{self, ResourceDef};
use crate::store::db::EventKind;

const MANAGER: &str = "kube-controller-manager";
/// The characters of generated name suffixes (Kubernetes' `SafeEncodeString`: no vowels, no
/// look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn deployments() -> &'static ResourceDef {
    resources::lookup("apps", "v1", "deployments").expect("deployments are served")
}

fn pods() -> &'static ResourceDef {
    resources::lookup("", "v1", "pods").expect("pods are served")
}

/// Run the controllers until the simulator shuts down.
pub fn spawn(core: Arc<Core>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deploy_res = deployments().qualified();
        let pod_res = pods().qualified();
        // Subscribed before the first pass, so no change in between is missed.
        let mut rx = match core.db.subscribe(&deploy_res, None, None) {
            Ok(s) => s.rx,
            Err(_) => return,
        };
        let mut shutdown = core.shutdown.subscribe();
        resync(&core);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = shutdown.changed() => return,
            };
            match ev {
                Ok(ev) if ev.key.res == deploy_res => match ev.kind {
                    EventKind::Deleted => delete_owned(&core, &ev.key.ns, uid_of(&ev.object)),
                    _ => reconcile(&core, &ev.object),
                },
                // A pod of a Deployment deleted: the Deployment makes another.
                Ok(ev) if ev.key.res == pod_res && matches!(ev.kind, EventKind::Deleted) => {
                    if let Some(owner) = owner_deployment(&ev.object) {
                        if let Ok(d) = core.get(deployments(), &ev.key.ns, &owner) {
                            reconcile(&core, &d);
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => resync(&core),
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Every Deployment reconciled (at start, and when events were missed).
fn resync(core: &Arc<Core>) {
    for d in core.db.list(&deployments().qualified(), None).0 {
        reconcile(core, &d);
    }
}

fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn owner_deployment(pod: &Value) -> Option<String> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["controller"] == true)
        .and_then(|o| o["name"].as_str())
        .map(str::to_owned)
}

/// The pods of namespace `ns` whose controller is the object with `uid`.
fn owned_pods(core: &Core, ns: &str, uid: &str) -> Vec<Value> {
    core.db
        .list(&pods().qualified(), Some(ns))
        .0
        .into_iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|o| o["uid"] == uid && o["controller"] == true)
                })
        })
        .collect()
}

fn delete_pod(core: &Arc<Core>, pod: &Value) {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = core.delete(pods(), ns, name, &DeleteOpts::default());
}

/// The garbage collector: a deleted Deployment's pods go with it.
fn delete_owned(core: &Arc<Core>, ns: &str, uid: &str) {
    if uid.is_empty() {
        return;
    }
    for p in owned_pods(core, ns, uid) {
        delete_pod(core, &p);
    }
}

/// A stable short hash of a pod template, in the characters Kubernetes uses.
pub fn template_hash(template: &Value) -> String {
    // FNV-1a over the template's JSON (serde_json writes object keys in order).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..10)
        .map(|i| SAFE[((h >> (i * 6)) % SAFE.len() as u64) as usize] as char)
        .collect()
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| SAFE[rng.gen_range(0..SAFE.len())] as char)
        .collect()
}

/// Make the Deployment's pods what its spec says.
fn reconcile(core: &Arc<Core>, deployment: &Value) {
    let md = &deployment["metadata"];
    if md.get("deletionTimestamp").is_some() {
        return;
    }
    let (Some(ns), Some(name), uid) = (
        md["namespace"].as_str(),
        md["name"].as_str(),
        uid_of(deployment),
    ) else {
        return;
    };
    if uid.is_empty() {
        return;
    }
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let want = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let hash = template_hash(&template);
    let mut current = Vec::new();
    for p in owned_pods(core, ns, uid) {
        let same = p
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str)
            == Some(hash.as_str());
        if same {
            current.push(p);
        } else {
            // An older template: replaced.
            delete_pod(core, &p);
        }
    }
    // Too many: the newest go first.
    current.sort_by(|a, b| {
        let t = |p: &Value| {
            p.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        t(a).cmp(&t(b))
    });
    while current.len() > want {
        if let Some(p) = current.pop() {
            delete_pod(core, &p);
        }
    }
    let taken: BTreeSet<String> = core
        .db
        .list(&pods().qualified(), Some(ns))
        .0
        .iter()
        .filter_map(|p| {
            p.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    for _ in current.len()..want {
        let mut pod_name = format!("{name}-{hash}-{}", random_suffix());
        while taken.contains(&pod_name) {
            pod_name = format!("{name}-{hash}-{}", random_suffix());
        }
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        labels["pod-template-hash"] = json!(hash);
        let mut annotations = template
            .pointer("/metadata/annotations")
            .cloned()
            .filter(Value::is_object);
        let mut metadata = json!({
            "name": pod_name,
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        });
        if let Some(a) = annotations.take() {
            metadata["annotations"] = a;
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        let o = WriteOpts {
            field_manager: MANAGER.into(),
            ..Default::default()
        };
        if let Err(e) = core.create(pods(), ns, pod, &o) {
            tracing::warn!(deployment = name, namespace = ns, error = %e.message, "cannot create a pod of the deployment");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}});
        let b = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:2"}]}});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
        assert!(template_hash(&a).bytes().all(|c| SAFE.contains(&c)));
    }
}
