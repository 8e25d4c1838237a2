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
    None
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
