//! The RBAC authorizer: roles, cluster roles and their bindings as stored, evaluated like
//! kube-apiserver's RBAC plugin (plus the `system:masters` privileged group), and the
//! escalation / bind checks applied when roles and bindings are written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::selectors::LabelSelector;
use crate::store::db::{Db, Key};

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// An authenticated user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> UserInfo {
        let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        if name != "system:anonymous" && !g.iter().any(|x| x == "system:authenticated") {
            g.push("system:authenticated".into());
        }
        UserInfo {
            name: name.to_string(),
            uid: String::new(),
            groups: g,
            extra: BTreeMap::new(),
        }
    }

    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = Value::String(self.uid.clone());
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::to_value(&self.extra).unwrap_or(Value::Null);
        }
        v
    }
}

/// What a request wants to do (authorizer.Attributes).
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Self {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// The apiserver's forbidden text (`User "x" cannot list resource "pods" in API group "" in the namespace "default"`).
    pub fn forbidden_message(&self, user: &str) -> String {
        if !self.resource_request {
            return format!(
                "User \"{}\" cannot {} path \"{}\"",
                user, self.verb, self.path
            );
        }
        let mut res = self.resource.clone();
        if !self.subresource.is_empty() {
            res = format!("{res}/{}", self.subresource);
        }
        if self.namespace.is_empty() {
            format!(
                "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" at the cluster scope",
                user, self.verb, res, self.api_group
            )
        } else {
            format!(
                "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                user, self.verb, res, self.api_group, self.namespace
            )
        }
    }
}

/// One policy rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}` (rbacv1helpers.CompactString).
    pub fn compact_string(&self) -> String {
        let q = |v: &Vec<String>| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:[{}]", q(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:[{}]", q(&self.resources)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!("NonResourceURLs:[{}]", q(&self.non_resource_urls)));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("ResourceNames:[{}]", q(&self.resource_names)));
        }
        parts.push(format!("Verbs:[{}]", q(&self.verbs)));
        format!("{{{}}}", parts.join(", "))
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verbs.iter().any(|v| v == "*" || *v == a.verb) {
            return false;
        }
        if !a.resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|u| url_matches(u, &a.path));
        }
        if !self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group)
        {
            return false;
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let res_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        });
        if !res_ok {
            return false;
        }
        self.resource_names.is_empty() || self.resource_names.contains(&a.name)
    }
}

fn url_matches(rule: &str, path: &str) -> bool {
    if rule == "*" || rule == path {
        return true;
    }
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => false,
    }
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

struct Binding {
    kind: &'static str,
    name: String,
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Value>,
}

fn bindings(db: &Db, ns: &str) -> Vec<Binding> {
    let mut out = Vec::new();
    let (crbs, _) = db.list(&format!("clusterrolebindings.{RBAC_GROUP}"), None);
    let rbs = if ns.is_empty() {
        Vec::new()
    } else {
        db.list(&format!("rolebindings.{RBAC_GROUP}"), Some(ns)).0
    };
    for (kind, list) in [("ClusterRoleBinding", crbs), ("RoleBinding", rbs)] {
        for b in list {
            out.push(Binding {
                kind,
                name: b
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                namespace: b
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                role_kind: b
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                role_name: b
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                subjects: b
                    .get("subjects")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// The subject of a binding that matches the user, rendered for the allow reason.
fn matching_subject(user: &UserInfo, subjects: &[Value], binding_ns: &str) -> Option<String> {
    for s in subjects {
        let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        match kind {
            "User" if user.name == name => return Some(format!("User \"{name}\"")),
            "Group" if user.groups.iter().any(|g| g == name) => {
                return Some(format!("Group \"{name}\""))
            }
            "ServiceAccount" => {
                let ns = s
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                if user.name == format!("system:serviceaccount:{ns}:{name}") {
                    return Some(format!("ServiceAccount \"{name}/{ns}\""));
                }
            }
            _ => {}
        }
    }
    None
}

fn role_rules(db: &Db, kind: &str, name: &str, ns: &str) -> Option<Vec<Rule>> {
    if kind == "ClusterRole" {
        let key = Key::new(&format!("clusterroles.{RBAC_GROUP}"), "", name);
        return db.get(&key).map(|r| cluster_role_rules(db, &r));
    }
    db.get(&Key::new(&format!("roles.{RBAC_GROUP}"), ns, name))
        .map(|r| stored_rules(&r))
}

fn stored_rules(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// Whether a ClusterRole gathers others' rules (`hasAggregationRule`: at least one selector).
pub fn has_aggregation_rule(role: &Value) -> bool {
    role.pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty())
}

/// A ClusterRole's rules. One with an aggregation rule has the rules of every other ClusterRole
/// its selectors match: kube-controller-manager's clusterrole-aggregation controller writes
/// that union into `rules`, replacing what was there; the simulator computes it when it
/// authorizes instead (following aggregated roles that aggregate in turn), so `rules` as
/// stored are not what an aggregated role grants.
pub fn cluster_role_rules(db: &Db, role: &Value) -> Vec<Rule> {
    let mut seen = BTreeSet::new();
    gathered_rules(db, role, &mut seen)
}

fn gathered_rules(db: &Db, role: &Value, seen: &mut BTreeSet<String>) -> Vec<Rule> {
    if !has_aggregation_rule(role) {
        return stored_rules(role);
    }
    let name = role
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !seen.insert(name.clone()) {
        return vec![];
    }
    let selectors: Vec<LabelSelector> = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(LabelSelector::from_object).collect())
        .unwrap_or_default();
    let (all, _) = db.list(&format!("clusterroles.{RBAC_GROUP}"), None);
    let mut out: Vec<Rule> = Vec::new();
    for other in &all {
        let other_name = other.pointer("/metadata/name").and_then(Value::as_str);
        if other_name == Some(name.as_str()) || !selectors.iter().any(|s| s.matches(other)) {
            continue;
        }
        for r in gathered_rules(db, other, seen) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

pub fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

/// Authorize one request.
pub fn authorize(db: &Db, user: &UserInfo, a: &Attributes) -> Decision {
    if is_master(user) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut errors = Vec::new();
    for b in bindings(db, &a.namespace) {
        let Some(subject) = matching_subject(user, &b.subjects, &b.namespace) else {
            continue;
        };
        let Some(rules) = role_rules(db, &b.role_kind, &b.role_name, &b.namespace) else {
            let what = if b.role_kind == "ClusterRole" {
                "clusterrole"
            } else {
                "role"
            };
            errors.push(format!("{what}.{RBAC_GROUP} \"{}\" not found", b.role_name));
            continue;
        };
        if rules.iter().any(|r| r.allows(a)) {
            let binding = if b.kind == "RoleBinding" {
                format!("RoleBinding \"{}/{}\"", b.name, b.namespace)
            } else {
                format!("ClusterRoleBinding \"{}\"", b.name)
            };
            return Decision {
                allowed: true,
                reason: format!(
                    "RBAC: allowed by {} of {} \"{}\" to {}",
                    binding, b.role_kind, b.role_name, subject
                ),
            };
        }
    }
    Decision {
        allowed: false,
        reason: if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: [{}]", errors.join(", "))
        },
    }
}

/// `*` on every resource of every group and on every non-resource URL: what cluster-admin holds
/// (`fullAuthority` in the apiserver's RBAC storage).
pub fn full_authority() -> Vec<Rule> {
    vec![
        Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Default::default()
        },
        Rule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Default::default()
        },
    ]
}

/// Every rule that applies to the user in a namespace (cluster-wide rules included).
pub fn rules_for(db: &Db, user: &UserInfo, ns: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    if is_master(user) {
        out.extend(full_authority());
    }
    for b in bindings(db, ns) {
        if matching_subject(user, &b.subjects, &b.namespace).is_some() {
            if let Some(rules) = role_rules(db, &b.role_kind, &b.role_name, &b.namespace) {
                out.extend(rules);
            }
        }
    }
    out
}

/// Whether `owner` rules cover every permission in `servant`; returns the uncovered rules
/// broken down to single verbs/resources (rbac validation.Covers).
pub fn covers(owner: &[Rule], servant: &[Rule]) -> Vec<Rule> {
    let mut missing = Vec::new();
    for s in servant {
        for atom in breakdown(s) {
            if !owner.iter().any(|o| rule_covers(o, &atom)) {
                missing.push(atom);
            }
        }
    }
    missing
}

fn breakdown(r: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    if !r.non_resource_urls.is_empty() {
        for u in &r.non_resource_urls {
            for v in &r.verbs {
                out.push(Rule {
                    verbs: vec![v.clone()],
                    non_resource_urls: vec![u.clone()],
                    ..Default::default()
                });
            }
        }
        return out;
    }
    let groups = if r.api_groups.is_empty() {
        vec![String::new()]
    } else {
        r.api_groups.clone()
    };
    for g in &groups {
        for res in &r.resources {
            for v in &r.verbs {
                if r.resource_names.is_empty() {
                    out.push(Rule {
                        verbs: vec![v.clone()],
                        api_groups: vec![g.clone()],
                        resources: vec![res.clone()],
                        ..Default::default()
                    });
                } else {
                    for n in &r.resource_names {
                        out.push(Rule {
                            verbs: vec![v.clone()],
                            api_groups: vec![g.clone()],
                            resources: vec![res.clone()],
                            resource_names: vec![n.clone()],
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    out
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x == "*" || x == item)
}

fn rule_covers(owner: &Rule, atom: &Rule) -> bool {
    let verb = &atom.verbs[0];
    if !has(&owner.verbs, verb) {
        return false;
    }
    if !atom.non_resource_urls.is_empty() {
        let url = &atom.non_resource_urls[0];
        return owner.non_resource_urls.iter().any(|o| {
            o == "*" || o == url || (o.ends_with('*') && url.starts_with(&o[..o.len() - 1]))
        });
    }
    let group = &atom.api_groups[0];
    let res = &atom.resources[0];
    if !has(&owner.api_groups, group) {
        return false;
    }
    let res_ok = owner.resources.iter().any(|o| {
        o == "*"
            || o == res
            || res
                .split_once('/')
                .is_some_and(|(_, sub)| *o == format!("*/{sub}"))
    });
    if !res_ok {
        return false;
    }
    if owner.resource_names.is_empty() {
        return true;
    }
    atom.resource_names
        .first()
        .is_some_and(|n| owner.resource_names.contains(n))
}
