//! Admission. kubesim has no CEL engine: it stores ValidatingAdmissionPolicies and their
//! bindings as given, and enforces one policy natively, Warden's `warden-system-guard` (the
//! agent manifest's, `domain/src/agent_protocol.rs`), while that policy and a binding of it
//! with `validationActions: [Deny]` are stored. The rules below mirror the policy's
//! `matchConstraints`, `matchConditions` and `validations` one by one; like the apiserver,
//! admission policies never apply to admission policy objects themselves, and reads are never
//! admitted (admission sees writes and CONNECT only).

use serde_json::Value;

use crate::error::{ApiResult, Status};
use crate::rbac::{self, Attributes, UserInfo};
use crate::resources::ResourceDef;
use crate::store::db::{Db, Key};

pub const GUARD: &str = "warden-system-guard";
const NS: &str = "warden-system";
const AGENT: &str = "system:serviceaccount:warden-system:warden-agent";
const GROUP: &str = "admissionregistration.k8s.io";

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    Connect,
}

/// One write as admission sees it (`res` is the parent resource of a subresource).
pub struct Request<'a> {
    pub op: Op,
    pub res: &'a ResourceDef,
    pub ns: &'a str,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old: Option<&'a Value>,
}

/// The binding that makes the guard deny, if the policy and such a binding are stored.
fn guard_binding(db: &Db) -> Option<String> {
    db.get(&Key::new(
        &format!("validatingadmissionpolicies.{GROUP}"),
        "",
        GUARD,
    ))?;
    db.list(&format!("validatingadmissionpolicybindings.{GROUP}"), None)
        .0
        .into_iter()
        .find(|b| {
            b.pointer("/spec/policyName").and_then(Value::as_str) == Some(GUARD)
                && b.pointer("/spec/validationActions")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "Deny"))
        })
        .and_then(|b| {
            b.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

fn is_rbac(res: &ResourceDef, plurals: &[&str]) -> bool {
    res.group == rbac::RBAC_GROUP && plurals.contains(&res.plural)
}

/// `matchConstraints.resourceRules`.
fn matches(r: &Request) -> bool {
    if r.res.namespaced {
        return true;
    }
    if r.res.group.is_empty() && r.res.plural == "namespaces" {
        return matches!(r.op, Op::Update | Op::Delete) && r.name == NS;
    }
    is_rbac(r.res, &["clusterroles", "clusterrolebindings"]) && r.op != Op::Connect
}

/// A subject of `warden-system` (one of its service accounts, or a group holding them, down
/// to every authenticated identity).
fn names_warden_subject(obj: Option<&Value>) -> bool {
    let Some(subjects) = obj
        .and_then(|o| o.get("subjects"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    subjects.iter().any(|s| {
        let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
        match field("kind") {
            "ServiceAccount" => field("namespace") == NS,
            "User" => field("name").starts_with(&format!("system:serviceaccount:{NS}:")),
            // Every authenticated identity includes Warden's service accounts.
            "Group" => [
                "system:authenticated".to_string(),
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{NS}"),
            ]
            .contains(&field("name").to_string()),
            _ => false,
        }
    })
}

/// `validations`: the message of the first that fails.
fn violation(user: &UserInfo, r: &Request) -> Option<String> {
    let in_ns = if r.res.namespaced {
        r.ns == NS
    } else {
        r.res.group.is_empty() && r.res.plural == "namespaces" && r.name == NS
    };
    if in_ns {
        return Some(format!(
            "namespace {NS} belongs to the Warden agent: no one else may write there"
        ));
    }
    if is_rbac(r.res, &["rolebindings", "clusterrolebindings"])
        && (names_warden_subject(r.object) || names_warden_subject(r.old))
    {
        return Some(format!(
            "the service accounts of {NS} are bound by the Warden agent only"
        ));
    }
    if is_rbac(r.res, &["clusterroles"]) && r.name.starts_with("warden-") {
        return Some("Warden's ClusterRoles (warden-*) are kept by the Warden agent only".into());
    }
    let field = |p: &str| r.object.and_then(|o| o.pointer(p)).and_then(Value::as_str);
    if is_rbac(r.res, &["rolebindings", "clusterrolebindings"])
        && field("/roleRef/kind") == Some("ClusterRole")
        && field("/roleRef/name").is_some_and(|n| n.starts_with("warden-"))
    {
        return Some("Warden's ClusterRoles (warden-*) are bound by the Warden agent only".into());
    }
    if r.res.group.is_empty()
        && r.res.plural == "secrets"
        && field("/type") == Some("kubernetes.io/service-account-token")
    {
        return Some("long-lived service account tokens are made by cluster administrators only: one would outlive every Warden grant".into());
    }
    if r.res.group == rbac::RBAC_GROUP
        && user
            .name
            .starts_with(&format!("system:serviceaccount:{NS}:"))
    {
        return Some("roles and bindings are made by the Warden agent, not with a Warden user's grant: one made by hand would outlive the grant".into());
    }
    if r.res.group.is_empty()
        && r.res.plural == "services"
        && user
            .name
            .starts_with(&format!("system:serviceaccount:{NS}:"))
        && r.object
            .and_then(|o| o.pointer("/spec/externalIPs"))
            .and_then(Value::as_array)
            .is_some_and(|ips| !ips.is_empty())
    {
        return Some("a Service's externalIPs take the traffic of those addresses, other teams' included (CVE-2020-8554): set by cluster administrators only".into());
    }
    if user
        .name
        .starts_with(&format!("system:serviceaccount:{NS}:"))
        && pod_specs(r, r.object) != pod_specs(r, r.old)
        && pod_specs(r, r.object).is_some_and(|spec| !baseline(spec))
    {
        return Some(BASELINE_MESSAGE.into());
    }
    if user
        .name
        .starts_with(&format!("system:serviceaccount:{NS}:"))
        && r.res.group == "apps"
        && r.res.plural == "controllerrevisions"
        && r.op != Op::Delete
    {
        return Some(REVISION_MESSAGE.into());
    }
    None
}

/// The policy's refusal of a ControllerRevision written with a Warden user's grant.
const REVISION_MESSAGE: &str = "controller revisions are written by the workload controllers: one written by hand holds a pod template the guard never saw, which a StatefulSet or DaemonSet would run";
const BASELINE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The policy's refusal of a pod that Pod Security's `baseline` refuses.
const BASELINE_MESSAGE: &str = "a Warden user's grant runs no pod that Pod Security's baseline refuses (host namespaces, hostPath volumes, privileged containers, added capabilities, host ports, unconfined profiles): each is a way onto the node, for cluster administrators only";
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const BASELINE_SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The pod spec a write's object carries (the policy's `newPodSpecs`/`oldPodSpecs`): a Pod's,
/// a PodTemplate's, a workload's template's, a CronJob's job template's.
fn pod_specs<'a>(r: &Request, obj: Option<&'a Value>) -> Option<&'a Value> {
    let obj = obj?;
    let (g, p) = (r.res.group, r.res.plural);
    let path = match (g, p) {
        ("", "pods") => "/spec",
        ("", "podtemplates") => "/template/spec",
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs")
        | ("", "replicationcontrollers") => "/spec/template/spec",
        ("batch", "cronjobs") => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    };
    obj.pointer(path)
}

/// Whether Pod Security's `baseline` admits the pod spec (the policy's two pod validations).
fn baseline(spec: &Value) -> bool {
    let on = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_bool) == Some(true);
    let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let list = |v: &Value, p: &str| -> Vec<Value> {
        v.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let confined = |ctx: Option<&Value>| {
        let Some(ctx) = ctx else { return true };
        text(ctx, "/seccompProfile/type").as_deref() != Some("Unconfined")
            && text(ctx, "/appArmorProfile/type").as_deref() != Some("Unconfined")
            && !on(ctx, "/windowsOptions/hostProcess")
            && text(ctx, "/seLinuxOptions/user")
                .unwrap_or_default()
                .is_empty()
            && text(ctx, "/seLinuxOptions/role")
                .unwrap_or_default()
                .is_empty()
            && text(ctx, "/seLinuxOptions/type")
                .filter(|t| !t.is_empty())
                .is_none_or(|t| BASELINE_SELINUX_TYPES.contains(&t.as_str()))
    };
    let pod_ok = !on(spec, "/hostNetwork")
        && !on(spec, "/hostPID")
        && !on(spec, "/hostIPC")
        && !list(spec, "/volumes")
            .iter()
            .any(|v| v.get("hostPath").is_some())
        && list(spec, "/securityContext/sysctls").iter().all(|s| {
            s.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| BASELINE_SYSCTLS.contains(&n))
        })
        && confined(spec.get("securityContext"));
    let containers = ["/containers", "/initContainers", "/ephemeralContainers"]
        .into_iter()
        .flat_map(|p| list(spec, p));
    pod_ok
        && containers.into_iter().all(|c| {
            let ctx = c.get("securityContext");
            !list(&c, "/ports").iter().any(|p| {
                p.get("hostPort")
                    .and_then(Value::as_i64)
                    .is_some_and(|h| h != 0)
            }) && ctx.is_none_or(|ctx| {
                !on(ctx, "/privileged")
                    && list(ctx, "/capabilities/add").iter().all(|cap| {
                        cap.as_str()
                            .is_some_and(|cap| BASELINE_CAPABILITIES.contains(&cap))
                    })
                    && text(ctx, "/procMount").is_none_or(|m| m == "Default")
            }) && confined(ctx)
        })
}

/// Admit a write by `user`, or refuse it as the apiserver does (403, the policy and binding
/// named in the message).
pub fn admit(db: &Db, user: &UserInfo, r: &Request) -> ApiResult<()> {
    if r.res.group == GROUP || !matches(r) {
        return Ok(());
    }
    let Some(binding) = guard_binding(db) else {
        return Ok(());
    };
    // matchConditions: the agent, and whoever may escalate every ClusterRole.
    if user.name == AGENT {
        return Ok(());
    }
    let escalate = Attributes::resource("escalate", rbac::RBAC_GROUP, "clusterroles", "", "", "");
    if rbac::authorize(db, user, &escalate).allowed {
        return Ok(());
    }
    match violation(user, r) {
        None => Ok(()),
        Some(message) => Err(Status::forbidden(
            r.res.group,
            r.res.plural,
            r.name,
            &format!(
                "ValidatingAdmissionPolicy '{GUARD}' with binding '{binding}' denied request: {message}"
            ),
        )),
    }
}

/// The policy as Warden ships it, evaluated by a CEL interpreter, against kubesim's native
/// rules: for every request below, both refuse with the same message or both admit. A rule
/// changed on one side only, or an expression that does not evaluate, fails here.
#[cfg(test)]
mod policy_tests {
    use std::collections::HashMap;

    use cel::{Context, Program, Value as Cel};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::resources::{lookup, ResourceDef};

    struct Policy {
        rules: Vec<Value>,
        variables: Vec<(String, Program)>,
        validations: Vec<(Program, String)>,
    }

    fn policy() -> Policy {
        let yaml = warden_domain::agent_protocol::guard_policy("");
        let doc = serde_yaml::Deserializer::from_str(&yaml).next().unwrap();
        let doc = Value::deserialize(doc).unwrap();
        let compile = |e: &Value| {
            let src = e.as_str().unwrap();
            Program::compile(src).unwrap_or_else(|err| panic!("{src}: {err:?}"))
        };
        let spec = &doc["spec"];
        Policy {
            rules: spec["matchConstraints"]["resourceRules"]
                .as_array()
                .unwrap()
                .clone(),
            variables: spec["variables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        compile(&v["expression"]),
                    )
                })
                .collect(),
            validations: spec["validations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        compile(&v["expression"]),
                        v["message"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        }
    }

    struct Case {
        what: &'static str,
        user: &'static str,
        op: Op,
        res: &'static ResourceDef,
        sub: &'static str,
        ns: &'static str,
        name: &'static str,
        object: Option<Value>,
        old: Option<Value>,
    }

    fn op_name(op: Op) -> &'static str {
        match op {
            Op::Create => "CREATE",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Connect => "CONNECT",
        }
    }

    /// `matchConstraints.resourceRules`, as the apiserver matches them.
    fn rule_matches(rule: &Value, c: &Case) -> bool {
        let has = |k: &str, v: &str| {
            rule[k]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "*" || x == v))
        };
        // The apiserver's `splitResource` and matcher: `*` is every resource without a
        // subresource, `*/*` every resource with or without one.
        let resource_ok = rule["resources"].as_array().unwrap().iter().any(|r| {
            let r = r.as_str().unwrap();
            let (res, sub) = r.split_once('/').unwrap_or((r, ""));
            (res == "*" || res == c.res.plural) && (sub == "*" || sub == c.sub)
        });
        let names_ok = rule["resourceNames"]
            .as_array()
            .is_none_or(|n| n.iter().any(|x| x == c.name));
        let scope_ok = match rule["scope"].as_str() {
            Some("Namespaced") => c.res.namespaced,
            Some("Cluster") => !c.res.namespaced,
            _ => true,
        };
        has("apiGroups", c.res.group)
            && has("operations", op_name(c.op))
            && resource_ok
            && names_ok
            && scope_ok
    }

    fn cel_verdict(p: &Policy, c: &Case) -> Option<String> {
        if c.res.group == GROUP || !p.rules.iter().any(|r| rule_matches(r, c)) {
            return None;
        }
        let mut ctx = Context::default();
        ctx.add_variable(
            "request",
            json!({
                "operation": op_name(c.op),
                "userInfo": {"username": c.user},
                "resource": {"group": c.res.group, "version": c.res.version, "resource": c.res.plural},
                "subResource": c.sub,
                "namespace": c.ns,
                "name": c.name,
            }),
        )
        .unwrap();
        ctx.add_variable("object", c.object.clone().unwrap_or(Value::Null))
            .unwrap();
        ctx.add_variable("oldObject", c.old.clone().unwrap_or(Value::Null))
            .unwrap();
        let mut vars: HashMap<String, Cel> = HashMap::new();
        for (name, program) in &p.variables {
            let v = program
                .execute(&ctx)
                .unwrap_or_else(|e| panic!("{}: variable {name}: {e:?}", c.what));
            vars.insert(name.clone(), v);
            ctx.add_variable_from_value("variables", vars.clone());
        }
        for (program, message) in &p.validations {
            match program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Some(message.clone()),
                other => panic!("{}: {message}: {other:?}", c.what),
            }
        }
        None
    }

    fn native_verdict(c: &Case) -> Option<String> {
        let r = Request {
            op: c.op,
            res: c.res,
            ns: c.ns,
            name: c.name,
            object: c.object.as_ref(),
            old: c.old.as_ref(),
        };
        if r.res.group == GROUP || !matches(&r) {
            return None;
        }
        violation(&UserInfo::new(c.user, &[]), &r)
    }

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        lookup(group, "v1", plural).unwrap_or_else(|| panic!("{group}/{plural}"))
    }

    /// A namespaced kind kubesim does not serve, for the policy's sake.
    fn unserved(group: &'static str, plural: &'static str) -> &'static ResourceDef {
        let base = def("apps", "deployments");
        Box::leak(Box::new(ResourceDef {
            group,
            plural,
            ..*base
        }))
    }

    const WRITER: &str = "system:serviceaccount:warden-system:u-writer-example-com-x1";
    const OTHER: &str = "system:serviceaccount:team:deployer";

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team"}, "spec": spec})
    }

    fn container(extra: Value) -> Value {
        let mut c = json!({"name": "c", "image": "busybox"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn with_template(kind: &str, spec: Value) -> Value {
        let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": spec});
        match kind {
            "CronJob" => {
                json!({"kind": kind, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}})
            }
            "PodTemplate" => json!({"kind": kind, "template": template}),
            _ => json!({"kind": kind, "spec": {"replicas": 1, "template": template}}),
        }
    }

    fn create(
        what: &'static str,
        user: &'static str,
        res: &'static ResourceDef,
        object: Value,
    ) -> Case {
        Case {
            what,
            user,
            op: Op::Create,
            res,
            sub: "",
            ns: "team",
            name: "x",
            object: Some(object),
            old: None,
        }
    }

    #[test]
    fn the_shipped_policy_and_kubesim_agree() {
        let p = policy();
        let pods = def("", "pods");
        let plain = json!({"containers": [container(json!({}))]});
        let privileged =
            json!({"containers": [container(json!({"securityContext": {"privileged": true}}))]});
        let baseline = Some(BASELINE_MESSAGE.to_string());
        let mut cases: Vec<(Case, Option<String>)> = vec![
            (create("a plain pod", WRITER, pods, pod(plain.clone())), None),
            (create("a privileged pod", WRITER, pods, pod(privileged.clone())), baseline.clone()),
            (
                "a hostPath volume",
                json!({"containers": [container(json!({}))], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
                true,
            )
                .into_case(pods),
            (
                "an emptyDir volume",
                json!({"containers": [container(json!({}))], "volumes": [{"name": "tmp", "emptyDir": {}}]}),
                false,
            )
                .into_case(pods),
            ("the host's network", json!({"hostNetwork": true, "containers": [container(json!({}))]}), true).into_case(pods),
            ("the host's PIDs", json!({"hostPID": true, "containers": [container(json!({}))]}), true).into_case(pods),
            ("the host's IPC", json!({"hostIPC": true, "containers": [container(json!({}))]}), true).into_case(pods),
            ("hostNetwork false", json!({"hostNetwork": false, "containers": [container(json!({}))]}), false).into_case(pods),
            (
                "an added SYS_ADMIN",
                json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}))]}),
                true,
            )
                .into_case(pods),
            (
                "CAP_SYS_ADMIN spelt the runtime's way",
                json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["CAP_SYS_ADMIN"]}}}))]}),
                true,
            )
                .into_case(pods),
            (
                "baseline's capabilities, and dropping all",
                json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"], "drop": ["ALL"]}}}))]}),
                false,
            )
                .into_case(pods),
            (
                "a host port",
                json!({"containers": [container(json!({"ports": [{"containerPort": 80, "hostPort": 8080}]}))]}),
                true,
            )
                .into_case(pods),
            (
                "a container port",
                json!({"containers": [container(json!({"ports": [{"containerPort": 80}]}))]}),
                false,
            )
                .into_case(pods),
            (
                "an unmasked /proc",
                json!({"containers": [container(json!({"securityContext": {"procMount": "Unmasked"}}))]}),
                true,
            )
                .into_case(pods),
            (
                "unconfined seccomp for the pod",
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [container(json!({}))]}),
                true,
            )
                .into_case(pods),
            (
                "the runtime's seccomp profile",
                json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": true}, "containers": [container(json!({"securityContext": {"allowPrivilegeEscalation": false}}))]}),
                false,
            )
                .into_case(pods),
            (
                "unconfined AppArmor for a container",
                json!({"containers": [container(json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}))]}),
                true,
            )
                .into_case(pods),
            (
                "a Windows host process",
                json!({"securityContext": {"windowsOptions": {"hostProcess": true}}, "containers": [container(json!({}))]}),
                true,
            )
                .into_case(pods),
            (
                "SELinux's super-privileged type",
                json!({"containers": [container(json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}))]}),
                true,
            )
                .into_case(pods),
            (
                "SELinux's container type and a level",
                json!({"securityContext": {"seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"}}, "containers": [container(json!({}))]}),
                false,
            )
                .into_case(pods),
            (
                "an SELinux user",
                json!({"securityContext": {"seLinuxOptions": {"user": "system_u"}}, "containers": [container(json!({}))]}),
                true,
            )
                .into_case(pods),
            (
                "an unsafe sysctl",
                json!({"securityContext": {"sysctls": [{"name": "kernel.core_pattern", "value": "|/x"}]}, "containers": [container(json!({}))]}),
                true,
            )
                .into_case(pods),
            (
                "a safe sysctl",
                json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}, "containers": [container(json!({}))]}),
                false,
            )
                .into_case(pods),
            (
                "a privileged init container",
                json!({"containers": [container(json!({}))], "initContainers": [container(json!({"securityContext": {"privileged": true}}))]}),
                true,
            )
                .into_case(pods),
            (create("a privileged pod by someone else's service account", OTHER, pods, pod(privileged.clone())), None),
            (
                Case {
                    what: "a privileged ephemeral container",
                    user: WRITER,
                    op: Op::Update,
                    res: pods,
                    sub: "ephemeralcontainers",
                    ns: "team",
                    name: "p",
                    object: Some(pod(json!({"containers": [container(json!({}))], "ephemeralContainers": [container(json!({"name": "debug", "securityContext": {"privileged": true}}))]}))),
                    old: Some(pod(plain.clone())),
                },
                baseline.clone(),
            ),
            (
                Case {
                    what: "relabelling an administrator's privileged pod",
                    user: WRITER,
                    op: Op::Update,
                    res: pods,
                    sub: "",
                    ns: "team",
                    name: "p",
                    object: Some(pod(privileged.clone())),
                    old: Some(pod(privileged.clone())),
                },
                None,
            ),
            (
                Case {
                    what: "deleting an administrator's privileged pod",
                    user: WRITER,
                    op: Op::Delete,
                    res: pods,
                    sub: "",
                    ns: "team",
                    name: "p",
                    object: None,
                    old: Some(pod(privileged.clone())),
                },
                None,
            ),
            (
                Case {
                    what: "scaling an administrator's privileged Deployment",
                    user: WRITER,
                    op: Op::Update,
                    res: def("apps", "deployments"),
                    sub: "",
                    ns: "team",
                    name: "d",
                    object: Some({
                        let mut d = with_template("Deployment", privileged.clone());
                        d["spec"]["replicas"] = json!(3);
                        d
                    }),
                    old: Some(with_template("Deployment", privileged.clone())),
                },
                None,
            ),
            (
                Case {
                    what: "making a Deployment's template privileged",
                    user: WRITER,
                    op: Op::Update,
                    res: def("apps", "deployments"),
                    sub: "",
                    ns: "team",
                    name: "d",
                    object: Some(with_template("Deployment", privileged.clone())),
                    old: Some(with_template("Deployment", plain.clone())),
                },
                baseline.clone(),
            ),
            (create("a plain Deployment", WRITER, def("apps", "deployments"), with_template("Deployment", plain.clone())), None),
        ];
        for (kind, group, plural) in [
            ("Deployment", "apps", "deployments"),
            ("StatefulSet", "apps", "statefulsets"),
            ("DaemonSet", "apps", "daemonsets"),
            ("ReplicaSet", "apps", "replicasets"),
            ("Job", "batch", "jobs"),
            ("CronJob", "batch", "cronjobs"),
            ("ReplicationController", "", "replicationcontrollers"),
            ("PodTemplate", "", "podtemplates"),
        ] {
            let res = lookup(group, "v1", plural).unwrap_or_else(|| unserved(group, plural));
            let host = json!({"hostPID": true, "containers": [container(json!({}))]});
            cases.push((
                create(
                    Box::leak(format!("a {kind} on the host's PIDs").into_boxed_str()),
                    WRITER,
                    res,
                    with_template(kind, host),
                ),
                baseline.clone(),
            ));
            cases.push((
                create(
                    Box::leak(format!("a plain {kind}").into_boxed_str()),
                    WRITER,
                    res,
                    with_template(kind, plain.clone()),
                ),
                None,
            ));
        }
        // A ControllerRevision holds a template a StatefulSet or DaemonSet would run.
        let revisions = unserved("apps", "controllerrevisions");
        cases.push((
            create(
                "a controller revision",
                WRITER,
                revisions,
                json!({"kind": "ControllerRevision", "revision": 9, "data": {"spec": {"template": {"spec": privileged.clone()}}}}),
            ),
            Some(REVISION_MESSAGE.to_string()),
        ));
        cases.push((
            Case {
                what: "deleting a controller revision",
                op: Op::Delete,
                object: None,
                old: Some(json!({"kind": "ControllerRevision", "revision": 1})),
                ..create("", WRITER, revisions, json!({}))
            },
            None,
        ));
        cases.push((
            create(
                "a controller revision by the cluster's own controller",
                OTHER,
                revisions,
                json!({"kind": "ControllerRevision", "revision": 9}),
            ),
            None,
        ));
        // The rules that came before, for the record.
        let ns_message = Some(format!(
            "namespace {NS} belongs to the Warden agent: no one else may write there"
        ));
        let namespaces = def("", "namespaces");
        cases.extend([
            (
                Case { what: "a pod in warden-system", ns: NS, ..create("", OTHER, pods, pod(plain.clone())) },
                ns_message.clone(),
            ),
            (
                Case {
                    what: "the warden-system namespace's status",
                    user: OTHER,
                    op: Op::Update,
                    res: namespaces,
                    sub: "status",
                    ns: "",
                    name: NS,
                    object: Some(json!({"metadata": {"name": NS}})),
                    old: Some(json!({"metadata": {"name": NS}})),
                },
                ns_message.clone(),
            ),
            (
                Case {
                    what: "finalizing the warden-system namespace",
                    user: OTHER,
                    op: Op::Update,
                    res: namespaces,
                    sub: "finalize",
                    ns: "",
                    name: NS,
                    object: Some(json!({"metadata": {"name": NS}})),
                    old: Some(json!({"metadata": {"name": NS}})),
                },
                ns_message.clone(),
            ),
            (
                Case {
                    what: "another namespace's labels",
                    user: OTHER,
                    op: Op::Update,
                    res: namespaces,
                    sub: "",
                    ns: "",
                    name: "team",
                    object: Some(json!({"metadata": {"name": "team"}})),
                    old: Some(json!({"metadata": {"name": "team"}})),
                },
                None,
            ),
            (
                create("a Service with externalIPs", WRITER, def("", "services"), json!({"spec": {"externalIPs": ["10.0.0.1"]}})),
                Some("a Service's externalIPs take the traffic of those addresses, other teams' included (CVE-2020-8554): set by cluster administrators only".into()),
            ),
            (
                create("a token Secret", OTHER, def("", "secrets"), json!({"type": "kubernetes.io/service-account-token"})),
                Some("long-lived service account tokens are made by cluster administrators only: one would outlive every Warden grant".into()),
            ),
            (
                create(
                    "binding the agent elsewhere",
                    OTHER,
                    def("rbac.authorization.k8s.io", "rolebindings"),
                    json!({"roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "ServiceAccount", "name": "warden-agent", "namespace": NS}]}),
                ),
                Some(format!("the service accounts of {NS} are bound by the Warden agent only")),
            ),
            (
                create(
                    "a Role with a Warden user's grant",
                    WRITER,
                    def("rbac.authorization.k8s.io", "roles"),
                    json!({"rules": []}),
                ),
                Some("roles and bindings are made by the Warden agent, not with a Warden user's grant: one made by hand would outlive the grant".into()),
            ),
            (
                Case {
                    what: "a warden-* ClusterRole",
                    user: OTHER,
                    op: Op::Update,
                    res: def("rbac.authorization.k8s.io", "clusterroles"),
                    sub: "",
                    ns: "",
                    name: "warden-cluster-read",
                    object: Some(json!({"rules": []})),
                    old: Some(json!({"rules": []})),
                },
                Some("Warden's ClusterRoles (warden-*) are kept by the Warden agent only".into()),
            ),
            (
                Case {
                    what: "exec in a pod of one's own",
                    user: WRITER,
                    op: Op::Connect,
                    res: pods,
                    sub: "exec",
                    ns: "team",
                    name: "p",
                    object: Some(json!({"kind": "PodExecOptions", "command": ["sh"]})),
                    old: None,
                },
                None,
            ),
        ]);
        for (c, want) in &cases {
            let cel = cel_verdict(&p, c);
            let native = native_verdict(c);
            assert_eq!(&cel, want, "the shipped policy: {}", c.what);
            assert_eq!(&native, want, "kubesim: {}", c.what);
        }
    }

    trait IntoCase {
        fn into_case(self, pods: &'static ResourceDef) -> (Case, Option<String>);
    }

    impl IntoCase for (&'static str, Value, bool) {
        fn into_case(self, pods: &'static ResourceDef) -> (Case, Option<String>) {
            let (what, spec, refused) = self;
            (
                create(what, WRITER, pods, pod(spec)),
                refused.then(|| BASELINE_MESSAGE.to_string()),
            )
        }
    }
}
