//! Defaulting and the status a "running" cluster would report, per kind.

use serde_json::{json, Map, Value};

use crate::resources::ResourceDef;

/// RFC 3339 timestamp with second precision, as the apiserver writes them.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

pub fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

/// The 5-character suffix of generateName.
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| char::from(ALPHA[rng.gen_range(0..ALPHA.len())]))
        .collect()
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.to_string(), v);
    }
}

fn default_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_containers(spec: &mut Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Pod spec defaults (also used for deployment templates).
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    set_default(spec, "serviceAccountName", json!(sa));
    set_default(spec, "serviceAccount", json!(sa));
    set_default(
        spec,
        "tolerations",
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]),
    );
    default_containers(spec);
}

/// The status of a pod whose containers all run.
pub fn running_pod_status(pod: &Value, node_ip: &str, pod_ip: &str) -> Value {
    let now = now_rfc3339();
    let started = pod
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or(&now)
        .to_string();
    let statuses = |list: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                        let full = if image.contains('/') {
                            image.to_string()
                        } else {
                            format!("docker.io/library/{image}")
                        };
                        json!({
                            "name": c.get("name").cloned().unwrap_or(Value::Null),
                            "image": full,
                            "imageID": format!("{}@sha256:{}", full.split(':').next().unwrap_or(&full), random_hex(64)),
                            "containerID": format!("containerd://{}", random_hex(64)),
                            "ready": true,
                            "started": true,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": started}},
                            "lastState": {},
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": started});
    let mut status = json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "containerStatuses": statuses("containers"),
        "qosClass": qos_class(pod),
    });
    let init = statuses("initContainers");
    if !init.is_empty() {
        status["initContainerStatuses"] = Value::Array(
            init.into_iter()
                .map(|mut s| {
                    s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}});
                    s["started"] = json!(false);
                    s
                })
                .collect(),
        );
    }
    status
}

fn qos_class(pod: &Value) -> &'static str {
    let cs = pod.pointer("/spec/containers").and_then(Value::as_array);
    let any_resources = cs.is_some_and(|cs| {
        cs.iter().any(|c| {
            c.get("resources")
                .and_then(Value::as_object)
                .is_some_and(|r| !r.is_empty())
        })
    });
    if any_resources {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// Defaults applied on create (after metadata is set), per kind. `alloc` hands out IPs.
pub fn on_create(res: &ResourceDef, obj: &mut Value, alloc: &mut dyn FnMut(&str) -> String) {
    match (res.group, res.plural) {
        ("", "namespaces") => {
            let name = obj
                .pointer("/metadata/name")
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(labels) = obj.get_mut("metadata").and_then(|m| obj_mut(m, "labels")) {
                labels.insert("kubernetes.io/metadata.name".into(), name);
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => {
            let node = alloc("node");
            if let Some(spec) = obj_mut(obj, "spec") {
                default_pod_spec(spec);
                set_default(spec, "nodeName", json!(node));
            }
            let node_name = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let node_ip = alloc(&format!("node-ip:{node_name}"));
            let pod_ip = alloc("pod-ip");
            obj["status"] = running_pod_status(obj, &node_ip, &pod_ip);
        }
        ("", "services") => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "type", json!(ty));
                set_default(spec, "sessionAffinity", json!("None"));
                if ty != "ExternalName" {
                    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
                    if !headless {
                        set_default(spec, "clusterIP", json!(alloc("service-ip")));
                    }
                    let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
                    set_default(spec, "clusterIPs", json!([ip]));
                    set_default(spec, "ipFamilies", json!(["IPv4"]));
                    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if ty == "NodePort" || ty == "LoadBalancer" {
                    set_default(spec, "externalTrafficPolicy", json!("Cluster"));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        let port = p.get("port").cloned().unwrap_or(Value::Null);
                        set_default(p, "targetPort", port);
                        if ty == "NodePort" || ty == "LoadBalancer" {
                            set_default(
                                p,
                                "nodePort",
                                json!(alloc("node-port").parse::<u32>().unwrap_or(30000)),
                            );
                        }
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "secrets") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
            }
            fold_string_data(obj);
        }
        ("apps", "deployments") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
                if let Some(t) = spec.get_mut("template") {
                    if let Some(ts) = obj_mut(t, "spec") {
                        default_pod_spec(ts);
                    }
                }
            }
            obj["status"] = deployment_status(obj);
        }
        _ => {}
    }
}

/// Defaults applied on update.
pub fn on_update(res: &ResourceDef, obj: &mut Value) {
    match (res.group, res.plural) {
        ("", "secrets") => fold_string_data(obj),
        ("apps", "deployments") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                if let Some(t) = spec.get_mut("template") {
                    if let Some(ts) = obj_mut(t, "spec") {
                        default_pod_spec(ts);
                    }
                }
            }
        }
        ("", "pods") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_containers(spec);
            }
        }
        _ => {}
    }
}

/// `stringData` is write-only: merged into `data` (base64) and dropped.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                let s = v.as_str().unwrap_or_default();
                d.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())),
                );
            }
        }
    }
}

/// A deployment status as if its controller had rolled out every replica.
pub fn deployment_status(obj: &Value) -> Value {
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let now = now_rfc3339();
    let mut s = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}-{}\" has successfully progressed.", &random_hex(10))}
        ]
    });
    if replicas == 0 {
        if let Some(m) = s.as_object_mut() {
            m.remove("readyReplicas");
            m.remove("availableReplicas");
            m.remove("updatedReplicas");
        }
    }
    s
}
