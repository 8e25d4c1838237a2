//! Object operations with apiserver semantics: create, get, list, update, patch, apply,
//! delete and deletecollection, including metadata handling, defaulting, validation,
//! optimistic concurrency, RBAC escalation checks and the side effects (namespace contents,
//! pod processes).

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::admission::{self, Op};
use crate::core::Core;
use crate::defaults;
use crate::error::{ApiResult, FieldError, Status};
use crate::patch;
use crate::rbac::{self, Attributes, UserInfo};
use crate::resources::{self, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::db::{Entry, Key, Write};
use crate::validate;

/// `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    Ignore,
    Warn,
    Strict,
}

/// Options common to writes.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub field_manager: String,
    pub validation: Validation,
    /// The requester (None: the simulator itself, never denied).
    pub user: Option<UserInfo>,
}

impl Default for WriteOpts {
    fn default() -> Self {
        WriteOpts {
            dry_run: false,
            field_manager: "kubesim".into(),
            validation: Validation::Warn,
            user: None,
        }
    }
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// Patch flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// List parameters.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// Delete parameters.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub dry_run: bool,
    /// The requester (None: the simulator itself, never refused by admission).
    pub user: Option<UserInfo>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

const META_KEYS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn top_level_keys(res: &ResourceDef) -> Option<&'static [&'static str]> {
    Some(match (res.group, res.plural) {
        ("", "configmaps") => &["data", "binaryData", "immutable"],
        ("", "secrets") => &["data", "stringData", "type", "immutable"],
        ("", "serviceaccounts") => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        ("", "pods")
        | ("", "services")
        | ("", "namespaces")
        | ("", "nodes")
        | ("apps", _)
        | ("networking.k8s.io", "ingresses")
        | ("networking.k8s.io", "networkpolicies")
        | ("policy", "poddisruptionbudgets") => &["spec", "status"],
        ("rbac.authorization.k8s.io", "roles") => &["rules"],
        ("rbac.authorization.k8s.io", "clusterroles") => &["rules", "aggregationRule"],
        ("rbac.authorization.k8s.io", _) => &["subjects", "roleRef"],
        _ => return None,
    })
}

/// Unknown top-level and metadata fields; removed from the object, reported per `validation`.
fn prune_unknown(res: &ResourceDef, obj: &mut Value, v: Validation) -> ApiResult<Vec<String>> {
    let mut unknown = Vec::new();
    if let Some(allowed) = top_level_keys(res) {
        if let Some(m) = obj.as_object_mut() {
            let bad: Vec<String> = m
                .keys()
                .filter(|k| !["apiVersion", "kind", "metadata"].contains(&k.as_str()))
                .filter(|k| !allowed.contains(&k.as_str()))
                .cloned()
                .collect();
            for k in bad {
                m.remove(&k);
                unknown.push(k);
            }
        }
    }
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let bad: Vec<String> = md
            .keys()
            .filter(|k| !META_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in bad {
            md.remove(&k);
            unknown.push(format!("metadata.{k}"));
        }
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|k| format!("unknown field \"{k}\""))
        .collect();
    match v {
        Validation::Strict if !msgs.is_empty() => Err(Status::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            res.kind,
            res.version,
            res.kind,
            msgs.join(", ")
        ))),
        Validation::Warn => Ok(msgs),
        _ => Ok(Vec::new()),
    }
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn ns_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn rv_of(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let m = obj
        .as_object_mut()
        .ok_or_else(|| Status::bad_request("the body of the request is not an object"))?;
    let md = m.entry("metadata").or_insert_with(|| json!({}));
    if !md.is_object() {
        return Err(Status::bad_request(
            "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta",
        ));
    }
    md.as_object_mut()
        .ok_or_else(|| Status::bad_request("metadata is not an object"))
}

/// Check that a body is of the resource's kind and version.
pub fn check_kind(res: &ResourceDef, obj: &Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(Status::bad_request(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            match obj {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "value",
            }
        )));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(Status::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            obj
        )));
    }
    if av.is_empty() {
        return Err(Status::bad_request(format!(
            "Object 'apiVersion' is missing in '{}'",
            obj
        )));
    }
    let expected = res.api_version();
    if av != expected {
        return Err(Status::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({expected})"
        )));
    }
    if kind != res.kind {
        return Err(Status::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    Ok(())
}

fn validate_secret_data(obj: &Value) -> ApiResult<()> {
    if let Some(d) = obj.get("data").and_then(Value::as_object) {
        for v in d.values() {
            let s = v.as_str().unwrap_or("");
            if base64::engine::general_purpose::STANDARD.decode(s).is_err() {
                return Err(Status::bad_request(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0",
                ));
            }
        }
    }
    Ok(())
}

impl Core {
    pub fn key(res: &ResourceDef, ns: &str, name: &str) -> Key {
        Key::new(&res.qualified(), if res.namespaced { ns } else { "" }, name)
    }

    fn ensure_namespace(&self, res: &ResourceDef, ns: &str) -> ApiResult<()> {
        if res.namespaced && self.db.get(&Key::new("namespaces", "", ns)).is_none() {
            return Err(Status::namespace_not_found(ns));
        }
        Ok(())
    }

    pub fn get(&self, res: &ResourceDef, ns: &str, name: &str) -> ApiResult<Value> {
        self.db
            .get(&Self::key(res, ns, name))
            .ok_or_else(|| Status::not_found(res, name))
    }

    /// A list object (`PodList`), filtered and paginated.
    pub fn list(&self, res: &ResourceDef, ns: Option<&str>, q: &ListQuery) -> ApiResult<Value> {
        let ns = if res.namespaced { ns } else { None };
        let (items, rv) = self.db.list(&res.qualified(), ns);
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|o| q.labels.matches(o) && q.fields.matches(o))
            .collect();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        let mut list_rv = rv;
        if let Some(tok) = &q.continue_token {
            let (start, tok_rv) = decode_continue(tok)?;
            list_rv = tok_rv;
            meta["resourceVersion"] = json!(tok_rv.to_string());
            items.retain(|o| format!("{}/{}", ns_of(o), name_of(o)) > start);
        }
        if let Some(limit) = q.limit.filter(|l| *l > 0) {
            if items.len() > limit {
                let rest = items.len() - limit;
                items.truncate(limit);
                if let Some(last) = items.last() {
                    let start = format!("{}/{}", ns_of(last), name_of(last));
                    meta["continue"] = json!(encode_continue(&start, list_rv));
                }
                if q.labels.is_empty() && q.fields.is_empty() {
                    meta["remainingItemCount"] = json!(rest);
                }
            }
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": items,
        }))
    }

    /// RBAC escalation / bind checks for writes of roles and bindings.
    /// Admission of a write by the requester (`o.user`; the simulator itself is never refused).
    fn admit(
        &self,
        o: &WriteOpts,
        op: Op,
        res: &ResourceDef,
        ns: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let Some(user) = &o.user else {
            return Ok(());
        };
        let name = object.or(old).map(name_of).unwrap_or("");
        admission::admit(
            &self.db,
            user,
            &admission::Request {
                op,
                res,
                ns,
                name,
                object,
                old,
            },
        )
    }

    /// RBAC's own escalation checks on writing a role or a binding. `request_name` is the name
    /// in the request's URL, which the `escalate` check is asked with, as the apiserver does
    /// (`RoleEscalationAuthorized` takes `RequestInfo.Name`): empty for a create (POST), so an
    /// `escalate` rule limited by `resourceNames` never allows creating a role. `old` is the
    /// object an update replaces.
    fn check_rbac_write(
        &self,
        user: &UserInfo,
        res: &ResourceDef,
        ns: &str,
        obj: &Value,
        old: Option<&Value>,
        request_name: &str,
    ) -> ApiResult<()> {
        if res.group != rbac::RBAC_GROUP || rbac::is_master(user) {
            return Ok(());
        }
        let name = name_of(obj);
        let scope_ns = if res.namespaced { ns } else { "" };
        let granted_rules: Vec<rbac::Rule> = match res.plural {
            "roles" | "clusterroles" => {
                let a = Attributes::resource(
                    "escalate",
                    rbac::RBAC_GROUP,
                    res.plural,
                    "",
                    scope_ns,
                    request_name,
                );
                if rbac::authorize(&self.db, user, &a).allowed {
                    return Ok(());
                }
                obj.get("rules")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(rbac::Rule::from_json).collect())
                    .unwrap_or_default()
            }
            "rolebindings" | "clusterrolebindings" => {
                let kind = obj
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let role = obj
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let (role_res, role_ns) = if kind == "ClusterRole" {
                    ("clusterroles", "")
                } else {
                    ("roles", scope_ns)
                };
                let a =
                    Attributes::resource("bind", rbac::RBAC_GROUP, role_res, "", scope_ns, role);
                if rbac::authorize(&self.db, user, &a).allowed {
                    return Ok(());
                }
                let role_def = resources::lookup(rbac::RBAC_GROUP, "v1", role_res)
                    .ok_or_else(|| Status::internal("rbac resources missing"))?;
                let role_obj = self
                    .db
                    .get(&Self::key(role_def, role_ns, role))
                    .ok_or_else(|| Status::not_found(role_def, role))?;
                // What the binding grants is what authorization will grant through it: for an
                // aggregated ClusterRole the union the aggregation controller would have written
                // into `rules`, which the simulator only computes (so the stored `rules` may
                // lack what a newly labelled role brings).
                if role_res == "clusterroles" {
                    rbac::cluster_role_rules(&self.db, &role_obj)
                } else {
                    role_obj
                        .get("rules")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().map(rbac::Rule::from_json).collect())
                        .unwrap_or_default()
                }
            }
            _ => return Ok(()),
        };
        let held = rbac::rules_for(&self.db, user, scope_ns);
        let missing = rbac::covers(&held, &granted_rules);
        if missing.is_empty() {
            // An aggregation rule can gather anything (and stop a role from ever being
            // tightened): setting, changing or removing one takes `*` on `*.*` and on every
            // non-resource URL (clusterrole/policybased/storage.go, `fullAuthority`).
            let aggregates = res.plural == "clusterroles"
                && (rbac::has_aggregation_rule(obj) || old.is_some_and(rbac::has_aggregation_rule));
            if aggregates && !rbac::covers(&held, &rbac::full_authority()).is_empty() {
                return Err(Status::forbidden(
                    res.group,
                    res.plural,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            return Ok(());
        }
        let groups: Vec<String> = user.groups.iter().map(|g| format!("\"{g}\"")).collect();
        let lines: Vec<String> = missing.iter().map(rbac::Rule::compact_string).collect();
        Err(Status::forbidden(
            res.group,
            res.plural,
            name,
            &format!(
                "user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
                user.name,
                groups.join(" "),
                lines.join("\n")
            ),
        ))
    }

    /// Metadata, defaults and validation for a new object.
    fn prepare_create(
        &self,
        res: &ResourceDef,
        ns: &str,
        mut obj: Value,
        o: &WriteOpts,
    ) -> ApiResult<(Value, Vec<String>)> {
        check_kind(res, &obj)?;
        let warnings = prune_unknown(res, &mut obj, o.validation)?;
        if res.plural == "secrets" {
            validate_secret_data(&obj)?;
        }
        let generation = res.generation;
        let md = meta_mut(&mut obj)?;
        if res.namespaced {
            match md.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(Status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    md.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            md.remove("namespace");
        }
        if md
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            return Err(Status::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = md
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = if name.is_empty() {
            match md.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => format!("{g}{}", defaults::random_suffix()),
                _ => String::new(),
            }
        } else {
            name
        };
        md.insert("name".into(), json!(name));
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generation",
        ] {
            md.remove(k);
        }
        md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        md.insert("creationTimestamp".into(), json!(defaults::now_rfc3339()));
        if generation {
            md.insert("generation".into(), json!(1));
        }
        if name.is_empty() {
            return Err(Status::invalid(
                res,
                "",
                vec![FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        let mut errs = validate::name_errors(res.name_rule, &name, "metadata.name");
        if let Some(m) = obj.as_object_mut() {
            if res.has_status && res.plural != "nodes" {
                m.remove("status");
            }
        }
        defaults::on_create(res, &mut obj, &mut |w| self.alloc(w));
        errs.extend(validate::validate(res, &obj, None));
        if !errs.is_empty() {
            return Err(Status::invalid(res, &name, errs));
        }
        Ok((obj, warnings))
    }

    /// Create an object.
    pub fn create(
        self: &Arc<Self>,
        res: &'static ResourceDef,
        ns: &str,
        obj: Value,
        o: &WriteOpts,
    ) -> ApiResult<WriteResult> {
        self.ensure_namespace(res, ns)?;
        let (obj, warnings) = self.prepare_create(res, ns, obj, o)?;
        if let Some(u) = &o.user {
            self.check_rbac_write(u, res, ns, &obj, None, "")?;
        }
        self.admit(o, Op::Create, res, ns, Some(&obj), None)?;
        let key = Self::key(res, ns, name_of(&obj));
        if o.dry_run {
            if self.db.get(&key).is_some() {
                return Err(Status::already_exists(res, name_of(&obj)));
            }
            return Ok(WriteResult {
                object: obj,
                created: true,
                warnings,
            });
        }
        let manager = o.field_manager.clone();
        let av = res.api_version();
        let written = self.db.write(&key, |cur| {
            if cur.is_some() {
                return Err(Status::already_exists(res, &key.name));
            }
            let managers = patch::track_update(None, &obj, &Default::default(), &manager, &av);
            Ok(Write::Put(Entry {
                obj: obj.clone(),
                managers,
            }))
        })?;
        let object = written.new.unwrap_or(obj);
        self.after_create(res, &object);
        Ok(WriteResult {
            object,
            created: true,
            warnings,
        })
    }

    fn after_create(self: &Arc<Self>, res: &ResourceDef, obj: &Value) {
        match (res.group, res.plural) {
            ("", "namespaces") => {
                let ns = name_of(obj).to_string();
                crate::seed::namespace_contents(self, &ns);
            }
            ("", "pods") => self.runtime.start_pod(self, obj),
            _ => {}
        }
    }

    /// Merge a new object body over the stored one for an update (metadata the client cannot
    /// change, status handling, defaults, generation, validation).
    fn prepare_update(
        &self,
        res: &ResourceDef,
        old: &Value,
        mut new: Value,
        status_only: bool,
        o: &WriteOpts,
    ) -> ApiResult<(Value, Vec<String>)> {
        check_kind(res, &new)?;
        let warnings = prune_unknown(res, &mut new, o.validation)?;
        if res.plural == "secrets" {
            validate_secret_data(&new)?;
        }
        let name = name_of(old).to_string();
        if status_only {
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            new = merged;
        }
        {
            let md = meta_mut(&mut new)?;
            let old_md = old.get("metadata").and_then(Value::as_object);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "namespace",
            ] {
                match old_md.and_then(|m| m.get(k)) {
                    Some(v) => {
                        md.insert(k.into(), v.clone());
                    }
                    None => {
                        md.remove(k);
                    }
                }
            }
            md.remove("managedFields");
            md.remove("selfLink");
            md.insert("name".into(), json!(name));
        }
        if res.has_status && !status_only {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        defaults::on_update(res, &mut new);
        if res.generation && !status_only {
            let strip = |v: &Value| {
                let mut c = v.clone();
                if let Some(m) = c.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                c
            };
            if strip(old) != strip(&new) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                new["metadata"]["generation"] = json!(g + 1);
            }
        }
        if res.group == "apps" && res.plural == "deployments" && !status_only {
            new["status"] = defaults::deployment_status(&new);
        }
        if res.plural == "namespaces" {
            // The name label is managed by the apiserver.
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        let errs = validate::validate(res, &new, Some(old));
        if !errs.is_empty() {
            return Err(Status::invalid(res, &name, errs));
        }
        Ok((new, warnings))
    }

    /// Replace an object (PUT). `status_only` for the status subresource.
    pub fn update(
        self: &Arc<Self>,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        body: Value,
        status_only: bool,
        o: &WriteOpts,
    ) -> ApiResult<WriteResult> {
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if body_name != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if res.namespaced {
            if let Some(bns) = body.pointer("/metadata/namespace").and_then(Value::as_str) {
                if !bns.is_empty() && bns != ns {
                    return Err(Status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        let key = Self::key(res, ns, name);
        let cur = self
            .db
            .get_entry(&key)
            .ok_or_else(|| Status::not_found(res, name))?;
        let want_rv = rv_of(&body).to_string();
        if !want_rv.is_empty() && want_rv != rv_of(&cur.obj) {
            return Err(Status::conflict(res, name));
        }
        let (new, warnings) = self.prepare_update(res, &cur.obj, body, status_only, o)?;
        if let Some(u) = &o.user {
            self.check_rbac_write(u, res, ns, &new, Some(&cur.obj), name_of(&new))?;
        }
        self.admit(o, Op::Update, res, ns, Some(&new), Some(&cur.obj))?;
        if o.dry_run {
            return Ok(WriteResult {
                object: new,
                created: false,
                warnings,
            });
        }
        let object = self.commit_update(res, &key, &cur, new, &o.field_manager)?;
        Ok(WriteResult {
            object,
            created: false,
            warnings,
        })
    }

    /// Write an updated object if the stored one is still the one it was computed from.
    fn commit_update(
        &self,
        res: &ResourceDef,
        key: &Key,
        base: &Entry,
        new: Value,
        manager: &str,
    ) -> ApiResult<Value> {
        let base_rv = rv_of(&base.obj).to_string();
        let av = res.api_version();
        let written = self.db.write(key, |cur| {
            let Some(cur) = cur else {
                return Err(Status::not_found(res, &key.name));
            };
            if rv_of(&cur.obj) != base_rv {
                return Err(Status::conflict(res, &key.name));
            }
            let managers = patch::track_update(Some(&cur.obj), &new, &cur.managers, manager, &av);
            Ok(Write::Put(Entry {
                obj: new.clone(),
                managers,
            }))
        })?;
        Ok(written.new.unwrap_or(new))
    }

    /// Patch an object (every patch type; apply may create).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        self: &Arc<Self>,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        force: bool,
        status_only: bool,
        o: &WriteOpts,
    ) -> ApiResult<WriteResult> {
        if ptype == PatchType::Apply {
            return self.apply(res, ns, name, body, force, o);
        }
        let key = Self::key(res, ns, name);
        for _attempt in 0..8 {
            let cur = self
                .db
                .get_entry(&key)
                .ok_or_else(|| Status::not_found(res, name))?;
            let mut patched = cur.obj.clone();
            match ptype {
                PatchType::Merge => patch::merge_patch(&mut patched, body),
                PatchType::Strategic => {
                    if !body.is_object() {
                        return Err(Status::bad_request(format!(
                            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                            if body.is_array() { "array" } else { "value" }
                        )));
                    }
                    patch::strategic_merge(&mut patched, body)
                }
                PatchType::Json => patch::json_patch(&mut patched, body).map_err(|e| Status {
                    code: 422,
                    reason: "Invalid",
                    message: e,
                    details: None,
                })?,
                PatchType::Apply => {}
            }
            // A resourceVersion in the patch is a precondition.
            let precondition = rv_of(&patched) != rv_of(&cur.obj);
            if precondition {
                return Err(Status::conflict(res, name));
            }
            if name_of(&patched) != name {
                return Err(Status::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&patched)
                )));
            }
            let (new, warnings) = self.prepare_update(res, &cur.obj, patched, status_only, o)?;
            if let Some(u) = &o.user {
                self.check_rbac_write(u, res, ns, &new, Some(&cur.obj), name_of(&new))?;
            }
            self.admit(o, Op::Update, res, ns, Some(&new), Some(&cur.obj))?;
            if o.dry_run {
                return Ok(WriteResult {
                    object: new,
                    created: false,
                    warnings,
                });
            }
            match self.commit_update(res, &key, &cur, new, &o.field_manager) {
                Ok(object) => {
                    return Ok(WriteResult {
                        object,
                        created: false,
                        warnings,
                    })
                }
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Status::conflict(res, name))
    }

    /// The request was authorized as a `patch`; one that creates the object must also be
    /// allowed to `create` it, or `patch` alone would make objects (handlers/patch.go wraps
    /// the create validation in `withAuthorization` with verb `create`). The refusal is
    /// `NewForbidden` with the authorizer's reason, as there (RBAC's is usually empty).
    fn authorize_create_on_patch(
        &self,
        user: &UserInfo,
        res: &ResourceDef,
        ns: &str,
        name: &str,
    ) -> ApiResult<()> {
        let scope_ns = if res.namespaced { ns } else { "" };
        let a = Attributes::resource("create", res.group, res.plural, "", scope_ns, name);
        let decision = rbac::authorize(&self.db, user, &a);
        if decision.allowed {
            return Ok(());
        }
        Err(Status::forbidden(
            res.group,
            res.plural,
            name,
            &decision.reason,
        ))
    }

    /// Server-side apply.
    fn apply(
        self: &Arc<Self>,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        config: &Value,
        force: bool,
        o: &WriteOpts,
    ) -> ApiResult<WriteResult> {
        check_kind(res, config)?;
        if name_of(config) != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(config)
            )));
        }
        if o.field_manager.is_empty() {
            return Err(Status::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut config = config.clone();
        if let Some(md) = config.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
                "generation",
            ] {
                md.remove(k);
            }
            if res.namespaced {
                md.insert("namespace".into(), json!(ns));
            }
        }
        let key = Self::key(res, ns, name);
        let av = res.api_version();
        for _attempt in 0..8 {
            let cur = self.db.get_entry(&key);
            let Some(cur) = cur else {
                // Apply creates.
                self.ensure_namespace(res, ns)?;
                let (obj, warnings) = self.prepare_create(res, ns, config.clone(), o)?;
                if let Some(u) = &o.user {
                    self.check_rbac_write(u, res, ns, &obj, None, name_of(&obj))?;
                    self.authorize_create_on_patch(u, res, ns, name)?;
                }
                self.admit(o, Op::Create, res, ns, Some(&obj), None)?;
                if o.dry_run {
                    return Ok(WriteResult {
                        object: obj,
                        created: true,
                        warnings,
                    });
                }
                let applied = patch::server_side_apply(
                    None,
                    &Default::default(),
                    &config,
                    &o.field_manager,
                    &av,
                    true,
                )
                .map_err(|_| Status::internal("apply on create conflicted"))?;
                let managers = applied.managers;
                let written = self.db.write(&key, |c| {
                    if c.is_some() {
                        return Err(Status::conflict(res, name));
                    }
                    Ok(Write::Put(Entry {
                        obj: obj.clone(),
                        managers,
                    }))
                });
                match written {
                    Ok(w) => {
                        let object = w.new.unwrap_or(obj);
                        self.after_create(res, &object);
                        return Ok(WriteResult {
                            object,
                            created: true,
                            warnings,
                        });
                    }
                    Err(e) if e.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            };
            let applied = patch::server_side_apply(
                Some(&cur.obj),
                &cur.managers,
                &config,
                &o.field_manager,
                &av,
                force,
            )
            .map_err(|conflicts| {
                let causes = conflicts
                    .iter()
                    .map(|c| patch::conflict_cause(c, &cur.managers))
                    .collect();
                Status::apply_conflict(patch::conflict_message(&conflicts, &cur.managers), causes)
            })?;
            let (new, warnings) = self.prepare_update(res, &cur.obj, applied.object, false, o)?;
            if let Some(u) = &o.user {
                self.check_rbac_write(u, res, ns, &new, Some(&cur.obj), name_of(&new))?;
            }
            self.admit(o, Op::Update, res, ns, Some(&new), Some(&cur.obj))?;
            if o.dry_run {
                return Ok(WriteResult {
                    object: new,
                    created: false,
                    warnings,
                });
            }
            let base_rv = rv_of(&cur.obj).to_string();
            let managers = applied.managers;
            let written = self.db.write(&key, |c| match c {
                Some(c) if rv_of(&c.obj) == base_rv => Ok(Write::Put(Entry {
                    obj: new.clone(),
                    managers,
                })),
                _ => Err(Status::conflict(res, name)),
            });
            match written {
                Ok(w) => {
                    return Ok(WriteResult {
                        object: w.new.unwrap_or(new),
                        created: false,
                        warnings,
                    })
                }
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Status::conflict(res, name))
    }

    /// Delete an object; returns the response body (the object or a Success status).
    pub fn delete(
        self: &Arc<Self>,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        d: &DeleteOpts,
    ) -> ApiResult<Value> {
        if res.plural == "namespaces" && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(Status::forbidden(
                "",
                "namespaces",
                name,
                "this namespace may not be deleted",
            ));
        }
        let key = Self::key(res, ns, name);
        if let (Some(user), Some(cur)) = (&d.user, self.db.get(&key)) {
            admission::admit(
                &self.db,
                user,
                &admission::Request {
                    op: Op::Delete,
                    res,
                    ns,
                    name,
                    object: None,
                    old: Some(&cur),
                },
            )?;
        }
        let check = |cur: &Value| -> ApiResult<()> {
            let uid = cur
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(p) = &d.precondition_uid {
                if p != uid {
                    return Err(Status::conflict_msg(
                        res,
                        name,
                        &format!("Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"),
                    ));
                }
            }
            if let Some(p) = &d.precondition_rv {
                if p != rv_of(cur) {
                    return Err(Status::conflict_msg(
                        res,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {}",
                            rv_of(cur)
                        ),
                    ));
                }
            }
            Ok(())
        };
        if d.dry_run {
            let cur = self.get(res, ns, name)?;
            check(&cur)?;
            return Ok(delete_response(res, &cur));
        }
        if res.plural == "namespaces" {
            // Mark it terminating first, then remove its contents, then the namespace.
            let cur = self.get(res, ns, name)?;
            check(&cur)?;
            let mut terminating = cur.clone();
            terminating["metadata"]["deletionTimestamp"] = json!(defaults::now_rfc3339());
            terminating["status"]["phase"] = json!("Terminating");
            let _ = self.db.write(&key, |c| match c {
                Some(e) => Ok(Write::Put(Entry {
                    obj: terminating.clone(),
                    managers: e.managers.clone(),
                })),
                None => Ok(Write::Noop),
            });
            self.delete_namespace_contents(name);
        }
        let written = self.db.write(&key, |cur| match cur {
            None => Err(Status::not_found(res, name)),
            Some(e) => {
                check(&e.obj)?;
                Ok(Write::Delete)
            }
        })?;
        let mut obj = written.new.unwrap_or(Value::Null);
        self.after_delete(res, &obj);
        if res.plural == "pods" || res.plural == "namespaces" {
            obj["metadata"]["deletionTimestamp"] = json!(defaults::now_rfc3339());
            if res.plural == "pods" {
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
        }
        Ok(delete_response(res, &obj))
    }

    fn after_delete(&self, res: &ResourceDef, obj: &Value) {
        if res.plural == "pods" && res.group.is_empty() {
            self.runtime.stop_pod(
                ns_of(obj),
                name_of(obj),
                obj.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
        }
    }

    fn delete_namespace_contents(&self, ns: &str) {
        for res in resources::RESOURCES
            .iter()
            .filter(|r| r.namespaced && r.stored)
        {
            for key in self.db.keys(&res.qualified(), Some(ns)) {
                if let Ok(w) = self.db.write(&key, |c| {
                    Ok(if c.is_some() {
                        Write::Delete
                    } else {
                        Write::Noop
                    })
                }) {
                    if let Some(obj) = w.new {
                        self.after_delete(res, &obj);
                    }
                }
            }
        }
    }

    /// Delete every object matching a list query; returns the list of deleted objects.
    pub fn delete_collection(
        self: &Arc<Self>,
        res: &'static ResourceDef,
        ns: Option<&str>,
        q: &ListQuery,
        d: &DeleteOpts,
    ) -> ApiResult<Value> {
        let mut q = q.clone();
        q.limit = None;
        q.continue_token = None;
        let list = self.list(res, ns, &q)?;
        let mut deleted = Vec::new();
        for item in list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = name_of(&item).to_string();
            let ins = ns_of(&item).to_string();
            match self.delete(res, &ins, &name, d) {
                Ok(_) => deleted.push(item),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": self.db.resource_version().to_string()},
            "items": deleted,
        }))
    }

    /// Update a pod's status from the runtime (container exit).
    pub fn set_container_terminated(
        self: &Arc<Self>,
        ns: &str,
        pod: &str,
        uid: &str,
        container: &str,
        code: i32,
    ) {
        let Some(res) = resources::lookup("", "v1", "pods") else {
            return;
        };
        let key = Self::key(res, ns, pod);
        let _ = self.db.write(&key, |cur| {
            let Some(e) = cur else {
                return Ok(Write::Noop);
            };
            if e.obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return Ok(Write::Noop);
            }
            let mut obj = e.obj.clone();
            let now = defaults::now_rfc3339();
            let mut all_done = true;
            let mut all_ok = true;
            if let Some(cs) = obj
                .pointer_mut("/status/containerStatuses")
                .and_then(Value::as_array_mut)
            {
                for c in cs.iter_mut() {
                    if c.get("name").and_then(Value::as_str) == Some(container) {
                        let started = c
                            .pointer("/state/running/startedAt")
                            .cloned()
                            .unwrap_or(json!(now));
                        c["state"] = json!({"terminated": {
                            "exitCode": code,
                            "reason": if code == 0 { "Completed" } else { "Error" },
                            "startedAt": started,
                            "finishedAt": now,
                            "containerID": c.get("containerID").cloned().unwrap_or(Value::Null),
                        }});
                        c["ready"] = json!(false);
                        c["started"] = json!(false);
                    }
                    match c
                        .pointer("/state/terminated/exitCode")
                        .and_then(Value::as_i64)
                    {
                        Some(0) => {}
                        Some(_) => all_ok = false,
                        None => all_done = false,
                    }
                }
            }
            let policy = obj
                .pointer("/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Always")
                .to_string();
            if all_done && (policy == "Never" || (policy == "OnFailure" && all_ok)) {
                obj["status"]["phase"] = json!(if all_ok { "Succeeded" } else { "Failed" });
            }
            if let Some(conds) = obj
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                for c in conds.iter_mut() {
                    let t = c.get("type").and_then(Value::as_str).unwrap_or("");
                    if t == "Ready" || t == "ContainersReady" {
                        c["status"] = json!("False");
                        c["lastTransitionTime"] = json!(now);
                        c["reason"] = json!(if all_done {
                            "PodCompleted"
                        } else {
                            "ContainersNotReady"
                        });
                    }
                }
            }
            Ok(Write::Put(Entry {
                obj,
                managers: e.managers.clone(),
            }))
        });
    }
}

fn delete_response(res: &ResourceDef, obj: &Value) -> Value {
    if matches!(
        res.plural,
        "pods" | "namespaces" | "services" | "deployments"
    ) {
        return obj.clone();
    }
    let mut details = json!({
        "name": name_of(obj),
        "kind": res.plural,
        "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    });
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

fn encode_continue(start: &str, rv: u64) -> String {
    let tok = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(tok.to_string())
}

fn decode_continue(tok: &str) -> ApiResult<(String, u64)> {
    let bad = || Status::bad_request(format!("continue key is not valid: {tok}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(tok)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .trim_end_matches('\u{0}')
        .to_string();
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    Ok((start, rv))
}
