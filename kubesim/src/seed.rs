//! What a fresh cluster has: system namespaces, nodes, the `kubernetes` service, default
//! service accounts and CA config maps, and the bootstrap RBAC roles and bindings.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::core::{Core, NODES};
use crate::error::{Error, Result};
use crate::ops::WriteOpts;
use crate::resources;

fn create(core: &Arc<Core>, api_version: &str, kind: &str, ns: &str, obj: Value) -> Result<()> {
    let res = resources::by_kind(api_version, kind)
        .ok_or_else(|| Error::Other(format!("unknown seed kind {kind}")))?;
    let o = WriteOpts {
        field_manager: "kube-apiserver".into(),
        ..Default::default()
    };
    match core.create(res, ns, obj, &o) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::Api(e)),
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            READ,
        ),
        rule(&[""], &["namespaces"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
    ]
}

fn edit_rules() -> Vec<Value> {
    let mut r = vec![
        rule(
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
            READ,
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
    ];
    r.extend(view_rules());
    r
}

fn admin_rules() -> Vec<Value> {
    let mut r = vec![
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
        rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        ),
    ];
    r.extend(edit_rules());
    r
}

fn cluster_role(name: &str, rules: Vec<Value>, aggregate_label: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        },
        "rules": rules,
    });
    if let Some(l) = aggregate_label {
        v["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {l: "true"}}]});
    }
    v
}

/// A role labelled `label: "true"` (to be aggregated by the role that selects it).
fn labelled(mut role: Value, label: &str) -> Value {
    role["metadata"]["labels"][label] = json!("true");
    role
}

fn cluster_binding(name: &str, role: &str, subjects: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// Seed a fresh simulator.
pub fn seed(core: &Arc<Core>) -> Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create(core, "v1", "Namespace", "", obj.take())?;
    }
    // kube-system's UID is the cluster's fingerprint: make it the configured one.
    if let Some(uid) = &core.opts.kube_system_uid {
        let key = crate::store::db::Key::new("namespaces", "", "kube-system");
        let uid = uid.clone();
        core.db.write(&key, |cur| {
            Ok(match cur {
                Some(e) => {
                    let mut e = e.clone();
                    e.obj["metadata"]["uid"] = json!(uid);
                    crate::store::db::Write::Put(e)
                }
                None => crate::store::db::Write::Noop,
            })
        })?;
    }
    for (i, (name, ip)) in NODES.iter().enumerate() {
        let mut labels = json!({
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
        });
        if i == 0 {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        let now = crate::defaults::now_rfc3339();
        let cond = |t: &str, status: &str, reason: &str, msg: &str| json!({"type": t, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": reason, "message": msg});
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": format!("10.244.{i}.0/24"), "podCIDRs": [format!("10.244.{i}.0/24")], "providerID": format!("kubesim://{name}")},
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "capacity": {"cpu": "2", "ephemeral-storage": "102400000Ki", "hugepages-2Mi": "0", "memory": "8148040Ki", "pods": "110"},
                "allocatable": {"cpu": "2", "ephemeral-storage": "102400000Ki", "hugepages-2Mi": "0", "memory": "8148040Ki", "pods": "110"},
                "conditions": [
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": uuid::Uuid::new_v4().to_string(),
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "kernelVersion": "6.1.0-kubesim",
                    "kubeProxyVersion": "v1.32.0",
                    "kubeletVersion": "v1.32.0",
                    "machineID": crate::defaults::random_hex(32),
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "systemUUID": uuid::Uuid::new_v4().to_string()
                }
            }
        });
        if i == 0 {
            node["spec"]["taints"] =
                json!([{"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane"}]);
        }
        create(core, "v1", "Node", "", node)?;
    }
    create(
        core,
        "v1",
        "Service",
        "default",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}], "type": "ClusterIP"}
        }),
    )?;

    let roles = vec![
        cluster_role(
            "cluster-admin",
            vec![
                json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
            None,
        ),
        // admin, edit and view as a real cluster has them: each aggregates the roles labelled
        // for it (edit is labelled for admin, view for edit), and the
        // `system:aggregate-to-*` roles bring the rules. Their stored rules are what the
        // aggregation controller would have written.
        cluster_role(
            "admin",
            admin_rules(),
            Some("rbac.authorization.k8s.io/aggregate-to-admin"),
        ),
        labelled(
            cluster_role(
                "edit",
                edit_rules(),
                Some("rbac.authorization.k8s.io/aggregate-to-edit"),
            ),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        labelled(
            cluster_role(
                "view",
                view_rules(),
                Some("rbac.authorization.k8s.io/aggregate-to-view"),
            ),
            "rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        labelled(
            cluster_role("system:aggregate-to-admin", admin_rules(), None),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        labelled(
            cluster_role("system:aggregate-to-edit", edit_rules(), None),
            "rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        labelled(
            cluster_role("system:aggregate-to-view", view_rules(), None),
            "rbac.authorization.k8s.io/aggregate-to-view",
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
            None,
        ),
        cluster_role(
            "system:discovery",
            vec![
                json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
            ],
            None,
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![
                json!({"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
            ],
            None,
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
            None,
        ),
    ];
    for r in roles {
        create(core, "rbac.authorization.k8s.io/v1", "ClusterRole", "", r)?;
    }
    let group =
        |g: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g});
    let bindings = vec![
        cluster_binding(
            "cluster-admin",
            "cluster-admin",
            json!([group("system:masters")]),
        ),
        cluster_binding(
            "system:basic-user",
            "system:basic-user",
            json!([group("system:authenticated")]),
        ),
        cluster_binding(
            "system:discovery",
            "system:discovery",
            json!([group("system:authenticated")]),
        ),
        cluster_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            json!([
                group("system:authenticated"),
                group("system:unauthenticated")
            ]),
        ),
    ];
    for b in bindings {
        create(
            core,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            b,
        )?;
    }
    Ok(())
}

/// What the controllers put in every new namespace: the `default` service account and the
/// `kube-root-ca.crt` config map.
pub fn namespace_contents(core: &Arc<Core>, ns: &str) {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": core.ca.cert_pem()},
    });
    for (av, kind, obj) in [("v1", "ServiceAccount", sa), ("v1", "ConfigMap", cm)] {
        if let Err(e) = create(core, av, kind, ns, obj) {
            tracing::warn!(namespace = ns, kind, error = %e, "cannot seed namespace contents");
        }
    }
}
