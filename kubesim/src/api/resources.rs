//! Resource endpoints: CRUD, status and scale subresources, and routing to the others.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method};
use hyper::upgrade::OnUpgrade;
use serde_json::{json, Value};

use super::body::{self, Resp};
use super::{decode_body, table, Ctx};
use crate::admission::Op;
use crate::error::{ApiResult, Status};
use crate::ops::{DeleteOpts, ListQuery, PatchType, Validation, WriteOpts, WriteResult};
use crate::resources::{self, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};

fn method_not_allowed() -> Status {
    Status {
        code: 405,
        reason: "MethodNotAllowed",
        message: "the server does not allow this method on the requested resource".into(),
        details: Some(json!({})),
    }
}

pub async fn dispatch(ctx: Ctx, body: Bytes, on_upgrade: Option<OnUpgrade>) -> ApiResult<Resp> {
    let info = &ctx.info;
    let res = resources::lookup(&info.group, &info.version, &info.resource)
        .ok_or_else(Status::path_not_found)?;
    let is_ns_resource = res.plural == "namespaces" && res.group.is_empty();
    if info.parts.len() > 3 {
        return Err(Status::path_not_found());
    }
    // A name in the path (not one a list's `metadata.name=` field selector gave the request
    // for authorization) needs a namespace for a namespaced kind.
    if res.namespaced && info.namespace.is_empty() && info.parts.len() >= 2 {
        return Err(Status::path_not_found());
    }
    // Across all namespaces the API server routes only list and watch (`installer.go`): a
    // `DELETE /api/v1/configmaps` or `POST /api/v1/pods` there is 405, never a deletion in
    // every namespace.
    if res.namespaced
        && info.namespace.is_empty()
        && !matches!(info.verb.as_str(), "list" | "watch")
    {
        return Err(method_not_allowed());
    }
    if !res.namespaced && !info.namespace.is_empty() && !is_ns_resource {
        return Err(Status::path_not_found());
    }
    let ns = if res.namespaced {
        info.namespace.clone()
    } else {
        String::new()
    };
    let name = info.name.clone();
    let sub = info.subresource.clone();
    if !sub.is_empty() && res.subresource(&sub).is_none() {
        return Err(Status::path_not_found());
    }
    let verb = info.verb.clone();
    if sub.is_empty() && !res.verbs.contains(&verb.as_str()) {
        return Err(method_not_allowed());
    }
    match (verb.as_str(), sub.as_str()) {
        ("get", "") => get(&ctx, res, &ns, &name),
        ("list", "") => list(&ctx, res, &ns),
        ("watch", "") => super::watch::watch(&ctx, res, &ns),
        ("create", "") if !res.stored => super::reviews::create_review(&ctx, res, &ns, &body),
        ("create", "") => create(&ctx, res, &ns, &body),
        ("update", "") => update(&ctx, res, &ns, &name, &body, false),
        ("patch", "") => patch(&ctx, res, &ns, &name, &body, false),
        ("delete", "") => delete(&ctx, res, &ns, &name, &body),
        ("deletecollection", "") => delete_collection(&ctx, res, &ns, &body),
        ("get", "status") => get(&ctx, res, &ns, &name),
        ("update", "status") => update(&ctx, res, &ns, &name, &body, true),
        ("patch", "status") => patch(&ctx, res, &ns, &name, &body, true),
        ("get", "scale") | ("update", "scale") | ("patch", "scale") => {
            scale(&ctx, res, &ns, &name, &body)
        }
        ("create", "token") => {
            admit_subresource(&ctx, Op::Create, res, &ns, &name)?;
            super::reviews::token_request(&ctx, &ns, &name, &body)
        }
        ("get", "log") => super::pods::logs(&ctx, &ns, &name).await,
        ("get", "exec") | ("create", "exec") | ("get", "attach") | ("create", "attach") => {
            admit_subresource(&ctx, Op::Connect, res, &ns, &name)?;
            super::pods::remote_command(&ctx, &ns, &name, &sub, on_upgrade).await
        }
        _ => Err(method_not_allowed()),
    }
}

/// Admission of a subresource request (a TokenRequest, exec, attach): no object to look at.
fn admit_subresource(ctx: &Ctx, op: Op, res: &ResourceDef, ns: &str, name: &str) -> ApiResult<()> {
    crate::admission::admit(
        &ctx.core.db,
        &ctx.user,
        &crate::admission::Request {
            op,
            res,
            ns,
            name,
            object: None,
            old: None,
        },
    )
}

fn accept(ctx: &Ctx) -> &str {
    ctx.header("accept")
}

pub fn write_opts(ctx: &Ctx) -> ApiResult<WriteOpts> {
    let validation = match ctx.q("fieldValidation") {
        None | Some("") | Some("Warn") => Validation::Warn,
        Some("Strict") => Validation::Strict,
        Some("Ignore") => Validation::Ignore,
        Some(other) => {
            return Err(Status::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )))
        }
    };
    let dry_run = match ctx.q("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(Status::bad_request(format!(
                "unsupported dryRun value {other:?}: only All is supported"
            )))
        }
    };
    let ua_manager = ctx
        .header("user-agent")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let field_manager = match ctx.q("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => ua_manager,
    };
    if field_manager.len() > 128 {
        return Err(Status::bad_request(
            "fieldManager: Too long: may not be longer than 128",
        ));
    }
    Ok(WriteOpts {
        dry_run,
        field_manager,
        validation,
        user: Some(ctx.user.clone()),
    })
}

fn with_warnings(mut r: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

fn object_response(ctx: &Ctx, res: &ResourceDef, code: u16, obj: &Value) -> Resp {
    if table::wants_table(accept(ctx)) && ctx.method == Method::GET {
        let t = table::table(
            res,
            std::slice::from_ref(obj),
            json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}),
            ctx.q("includeObject").unwrap_or("Metadata"),
            true,
        );
        return body::json_typed(code, table::TABLE_CONTENT_TYPE, &t);
    }
    body::json(code, obj)
}

fn get(ctx: &Ctx, res: &'static ResourceDef, ns: &str, name: &str) -> ApiResult<Resp> {
    let obj = ctx.core.get(res, ns, name)?;
    Ok(object_response(ctx, res, 200, &obj))
}

pub fn list_query(ctx: &Ctx, res: &ResourceDef) -> ApiResult<ListQuery> {
    Ok(ListQuery {
        labels: LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(ctx.q("fieldSelector").unwrap_or(""), res.plural)?,
        limit: ctx.q("limit").and_then(|l| l.parse().ok()),
        continue_token: ctx
            .q("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    })
}

fn list(ctx: &Ctx, res: &'static ResourceDef, ns: &str) -> ApiResult<Resp> {
    let q = list_query(ctx, res)?;
    let ns = if ns.is_empty() { None } else { Some(ns) };
    let list = ctx.core.list(res, ns, &q)?;
    if table::wants_table(accept(ctx)) {
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let t = table::table(
            res,
            &items,
            list.get("metadata").cloned().unwrap_or(json!({})),
            ctx.q("includeObject").unwrap_or("Metadata"),
            true,
        );
        return Ok(body::json_typed(200, table::TABLE_CONTENT_TYPE, &t));
    }
    Ok(body::json(200, &list))
}

fn body_value(ctx: &Ctx, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(Status::bad_request("the body of the request was empty"));
    }
    decode_body(ctx.header("content-type"), body)
}

fn created(ctx: &Ctx, res: &ResourceDef, r: WriteResult) -> Resp {
    let code = if r.created { 201 } else { 200 };
    with_warnings(object_response(ctx, res, code, &r.object), &r.warnings)
}

fn create(ctx: &Ctx, res: &'static ResourceDef, ns: &str, body: &[u8]) -> ApiResult<Resp> {
    let obj = body_value(ctx, body)?;
    let o = write_opts(ctx)?;
    let r = ctx.core.create(res, ns, obj, &o)?;
    Ok(created(ctx, res, r))
}

fn update(
    ctx: &Ctx,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    body: &[u8],
    status_only: bool,
) -> ApiResult<Resp> {
    let obj = body_value(ctx, body)?;
    let o = write_opts(ctx)?;
    let r = ctx.core.update(res, ns, name, obj, status_only, &o)?;
    Ok(created(ctx, res, r))
}

pub fn patch_type(ct: &str) -> ApiResult<PatchType> {
    match ct.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        other => Err(Status {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"),
            details: None,
        }),
    }
}

fn decode_patch(ptype: PatchType, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(Status::bad_request("the body of the request was empty"));
    }
    match ptype {
        PatchType::Apply => {
            let y: serde_yaml::Value = serde_yaml::from_slice(body)
                .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
            serde_json::to_value(y)
                .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("error decoding patch: invalid JSON: {e}"))),
    }
}

fn patch(
    ctx: &Ctx,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    body: &[u8],
    status_only: bool,
) -> ApiResult<Resp> {
    let ptype = patch_type(ctx.header("content-type"))?;
    let value = decode_patch(ptype, body)?;
    let mut o = write_opts(ctx)?;
    if ptype == PatchType::Apply {
        o.field_manager = ctx.q("fieldManager").unwrap_or("").to_string();
    } else if ctx.q("force").is_some() {
        return Err(Status::bad_request(
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    let force = ctx.q_bool("force");
    let r = ctx
        .core
        .patch(res, ns, name, ptype, &value, force, status_only, &o)?;
    Ok(created(ctx, res, r))
}

fn delete_opts(ctx: &Ctx, body: &[u8]) -> ApiResult<DeleteOpts> {
    let mut d = DeleteOpts {
        dry_run: ctx.q("dryRun") == Some("All"),
        user: Some(ctx.user.clone()),
        ..Default::default()
    };
    if !body.is_empty() {
        let v = decode_body(ctx.header("content-type"), body)?;
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            d.dry_run = true;
        }
        d.precondition_uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        d.precondition_rv = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(d)
}

fn delete(
    ctx: &Ctx,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<Resp> {
    let d = delete_opts(ctx, body)?;
    let out = ctx.core.delete(res, ns, name, &d)?;
    Ok(body::json(200, &out))
}

fn delete_collection(
    ctx: &Ctx,
    res: &'static ResourceDef,
    ns: &str,
    body: &[u8],
) -> ApiResult<Resp> {
    let d = delete_opts(ctx, body)?;
    let q = list_query(ctx, res)?;
    let ns = if ns.is_empty() { None } else { Some(ns) };
    let out = ctx.core.delete_collection(res, ns, &q, &d)?;
    Ok(body::json(200, &out))
}

fn scale_of(obj: &Value) -> Value {
    let sel: Vec<String> = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
            "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": sel.join(","),
        }
    })
}

fn scale(
    ctx: &Ctx,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    body: &[u8],
) -> ApiResult<Resp> {
    let core: &Arc<crate::core::Core> = &ctx.core;
    let cur = core.get(res, ns, name)?;
    if ctx.method == Method::GET {
        return Ok(body::json(200, &scale_of(&cur)));
    }
    let mut s = scale_of(&cur);
    if ctx.method == Method::PUT {
        s = body_value(ctx, body)?;
    } else {
        let ptype = patch_type(ctx.header("content-type"))?;
        let p = decode_patch(ptype, body)?;
        match ptype {
            PatchType::Json => crate::patch::json_patch(&mut s, &p).map_err(Status::bad_request)?,
            PatchType::Merge => crate::patch::merge_patch(&mut s, &p),
            _ => crate::patch::strategic_merge(&mut s, &p),
        }
    }
    let replicas = s
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(Status::invalid(
            res,
            name,
            vec![crate::error::FieldError::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let want_rv = s
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut updated = cur.clone();
    updated["spec"]["replicas"] = json!(replicas);
    if !want_rv.is_empty() {
        updated["metadata"]["resourceVersion"] = json!(want_rv);
    }
    let o = write_opts(ctx)?;
    let r = core.update(res, ns, name, updated, false, &o)?;
    Ok(body::json(200, &scale_of(&r.object)))
}
