//! Server-side printing: `meta.k8s.io/v1` Tables with the columns kube-apiserver prints.

use serde_json::{json, Value};

use crate::resources::ResourceDef;

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|a| {
        let a = a.replace(' ', "");
        a.contains("as=Table")
            && a.contains("g=meta.k8s.io")
            && (a.contains("v=v1;") || a.ends_with("v=v1") || a.contains("v=v1,"))
    })
}

/// `5s`, `3m10s`, `2d`: k8s.io/apimachinery duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    else {
        return "<unknown>".into();
    };
    match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
        Ok(t) => human_duration((time::OffsetDateTime::now_utc() - t).whole_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn col(name: &str, ty: &str, format: &str, desc: &str, priority: i32) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

fn name_col() -> Value {
    col("Name", "string", "name", "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", 0)
}

fn age_col() -> Value {
    col("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", 0)
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn len_of(v: &Value, p: &str) -> usize {
    match v.pointer(p) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn none_if_empty(x: String) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x
    }
}

/// Column definitions for a resource.
pub fn columns(res: &ResourceDef) -> Vec<Value> {
    match (res.group, res.plural) {
        ("", "pods") => vec![
            name_col(),
            col("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
            col("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
            col("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
            age_col(),
            col("IP", "string", "", "The IP address assigned to the pod", 1),
            col("Node", "string", "", "The name of the node assigned to the pod", 1),
            col("Nominated Node", "string", "", "The name of the node nominated by the scheduler", 1),
            col("Readiness Gates", "string", "", "The readiness gates of the pod", 1),
        ],
        ("", "namespaces") => vec![name_col(), col("Status", "string", "", "The status of the namespace", 0), age_col()],
        ("", "services") => vec![
            name_col(),
            col("Type", "string", "", "The type of the service", 0),
            col("Cluster-IP", "string", "", "The cluster IP of the service", 0),
            col("External-IP", "string", "", "The external IP of the service", 0),
            col("Port(s)", "string", "", "The ports of the service", 0),
            age_col(),
            col("Selector", "string", "", "The selector of the service", 1),
        ],
        ("", "configmaps") => vec![name_col(), col("Data", "integer", "", "The number of keys in the config map", 0), age_col()],
        ("", "secrets") => vec![
            name_col(),
            col("Type", "string", "", "The type of the secret", 0),
            col("Data", "integer", "", "The number of keys in the secret", 0),
            age_col(),
        ],
        ("", "serviceaccounts") => vec![name_col(), col("Secrets", "integer", "", "The number of secrets", 0), age_col()],
        ("", "nodes") => vec![
            name_col(),
            col("Status", "string", "", "The status of the node", 0),
            col("Roles", "string", "", "The roles of the node", 0),
            age_col(),
            col("Version", "string", "", "Kubelet Version reported by the node.", 0),
            col("Internal-IP", "string", "", "List of internal IPs that are assigned to the node.", 1),
            col("External-IP", "string", "", "List of external IPs that are assigned to the node.", 1),
            col("OS-Image", "string", "", "OS Image reported by the node.", 1),
            col("Kernel-Version", "string", "", "Kernel Version reported by the node.", 1),
            col("Container-Runtime", "string", "", "Container Runtime Version reported by the node.", 1),
        ],
        ("apps", "deployments") => vec![
            name_col(),
            col("Ready", "string", "", "Number of the pod with ready state", 0),
            col("Up-to-date", "string", "", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
            col("Available", "string", "", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
            age_col(),
            col("Containers", "string", "", "Names of each container in the template.", 1),
            col("Images", "string", "", "Images referenced by each container in the template.", 1),
            col("Selector", "string", "", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
        ],
        ("rbac.authorization.k8s.io", "roles") | ("rbac.authorization.k8s.io", "clusterroles") => vec![
            name_col(),
            col("Created At", "date", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
        ],
        ("rbac.authorization.k8s.io", "rolebindings") | ("rbac.authorization.k8s.io", "clusterrolebindings") => vec![
            name_col(),
            col("Role", "string", "", "Role of the binding.", 0),
            age_col(),
            col("Users", "string", "", "Users in the binding.", 1),
            col("Groups", "string", "", "Groups in the binding.", 1),
            col("ServiceAccounts", "string", "", "ServiceAccounts in the binding.", 1),
        ],
        ("", "events") => vec![
            col("Last Seen", "string", "", "Time when this Event was last observed.", 0),
            col("Type", "string", "", "Type of this event (Normal, Warning).", 0),
            col("Reason", "string", "", "Short, machine understandable string that gives the reason for the transition.", 0),
            col("Object", "string", "", "The object this Event is about.", 0),
            col("Message", "string", "", "A human-readable description of the status of this operation.", 0),
        ],
        _ => vec![name_col(), col("Created At", "date", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0)],
    }
}

fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = s(p, "/status/phase").to_string();
    if let Some(r) = p.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    for c in p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(w) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = w.to_string();
        } else if let Some(t) = c.pointer("/state/terminated") {
            if let Some(r) = t.get("reason").and_then(Value::as_str) {
                reason = r.to_string();
            } else {
                reason = format!(
                    "ExitCode:{}",
                    t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                );
            }
        }
    }
    reason
}

/// The cells of one row.
pub fn cells(res: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    match (res.group, res.plural) {
        ("", "pods") => {
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = len_of(o, "/spec/containers");
            let ready = statuses
                .map(|a| {
                    a.iter()
                        .filter(|c| c.get("ready") == Some(&json!(true)))
                        .count()
                })
                .unwrap_or(0);
            let restarts: i64 = statuses
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                        .sum()
                })
                .unwrap_or(0);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age(o)),
                json!(none_if_empty(s(o, "/status/podIP").to_string())),
                json!(none_if_empty(s(o, "/spec/nodeName").to_string())),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        ("", "namespaces") => vec![name, json!(s(o, "/status/phase")), json!(age(o))],
        ("", "services") => {
            let ty = s(o, "/spec/type");
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) if ty == "NodePort" || ty == "LoadBalancer" => {
                            format!("{port}:{np}/{proto}")
                        }
                        _ => format!("{port}/{proto}"),
                    }
                })
                .collect();
            let selector: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            let external = match ty {
                "ExternalName" => s(o, "/spec/externalName").to_string(),
                "LoadBalancer" => "<pending>".into(),
                _ => "<none>".into(),
            };
            vec![
                name,
                json!(ty),
                json!(none_if_empty(s(o, "/spec/clusterIP").to_string())),
                json!(external),
                json!(none_if_empty(ports.join(","))),
                json!(age(o)),
                json!(none_if_empty(selector.join(","))),
            ]
        }
        ("", "configmaps") => vec![
            name,
            json!(len_of(o, "/data") + len_of(o, "/binaryData")),
            json!(age(o)),
        ],
        ("", "secrets") => vec![
            name,
            json!(s(o, "/type")),
            json!(len_of(o, "/data")),
            json!(age(o)),
        ],
        ("", "serviceaccounts") => vec![name, json!(len_of(o, "/secrets")), json!(age(o))],
        ("", "nodes") => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!("Ready"))))
                .and_then(|c| c.get("status").and_then(Value::as_str))
                == Some("True");
            let mut status = if ready {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x.get("type") == Some(&json!(t))))
                    .and_then(|x| x.get("address").and_then(Value::as_str))
                    .unwrap_or("<none>")
                    .to_string()
            };
            vec![
                name,
                json!(status),
                json!(none_if_empty(roles.join(","))),
                json!(age(o)),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(o, "/status/nodeInfo/osImage")),
                json!(s(o, "/status/nodeInfo/kernelVersion")),
                json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        ("apps", "deployments") => {
            let replicas = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let st = |k: &str| {
                o.pointer(&format!("/status/{k}"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            };
            let containers = o
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array);
            let names: Vec<&str> = containers
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            let images: Vec<&str> = containers
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("image").and_then(Value::as_str))
                .collect();
            let sel: Vec<String> = o
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(format!("{}/{}", st("readyReplicas"), replicas)),
                json!(st("updatedReplicas")),
                json!(st("availableReplicas")),
                json!(age(o)),
                json!(names.join(",")),
                json!(images.join(",")),
                json!(sel.join(",")),
            ]
        }
        ("rbac.authorization.k8s.io", "roles") | ("rbac.authorization.k8s.io", "clusterroles") => {
            vec![name, json!(s(o, "/metadata/creationTimestamp"))]
        }
        ("rbac.authorization.k8s.io", "rolebindings")
        | ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            let subj = |kind: &str| {
                let v: Vec<String> = o
                    .get("subjects")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|x| x.get("kind") == Some(&json!(kind)))
                    .map(|x| {
                        let n = x.get("name").and_then(Value::as_str).unwrap_or("");
                        match x.get("namespace").and_then(Value::as_str) {
                            Some(ns) if kind == "ServiceAccount" => format!("{ns}/{n}"),
                            _ => n.to_string(),
                        }
                    })
                    .collect();
                v.join(", ")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                json!(age(o)),
                json!(subj("User")),
                json!(subj("Group")),
                json!(subj("ServiceAccount")),
            ]
        }
        ("", "events") => vec![
            json!(age(o)),
            json!(s(o, "/type")),
            json!(s(o, "/reason")),
            json!(format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            )),
            json!(s(o, "/message")),
        ],
        _ => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
    }
}

fn row(res: &ResourceDef, o: &Value, include: &str) -> Value {
    let object = match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        }),
    };
    let mut r = json!({"cells": cells(res, o)});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A Table for objects; `list_meta` for lists, `with_columns` false for later watch events.
pub fn table(
    res: &ResourceDef,
    objs: &[Value],
    list_meta: Value,
    include: &str,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = objs.iter().map(|o| row(res, o, include)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = Value::Array(columns(res));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(3600 * 30), "30h");
        assert_eq!(human_duration(3600 * 24 * 3), "3d");
    }

    #[test]
    fn table_accept() {
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
    }
}
