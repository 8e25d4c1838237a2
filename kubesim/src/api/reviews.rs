//! Virtual create-only resources: access reviews, rules reviews, SelfSubjectReview,
//! TokenReview, and the serviceaccounts/token subresource (TokenRequest).

use serde_json::{json, Value};

use super::body::{self, Resp};
use super::{decode_body, Ctx};
use crate::authn::{self, BoundObject};
use crate::error::{ApiResult, FieldError, Status};
use crate::rbac::{self, Attributes, UserInfo};
use crate::resources::{self, ResourceDef};

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn attributes_from_spec(spec: &Value) -> ApiResult<Attributes> {
    if let Some(r) = spec.get("resourceAttributes") {
        let g = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Attributes {
            verb: g("verb"),
            resource_request: true,
            api_group: g("group"),
            resource: g("resource"),
            subresource: g("subresource"),
            namespace: g("namespace"),
            name: g("name"),
            path: String::new(),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes") {
        let g = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Attributes {
            verb: g("verb"),
            resource_request: false,
            path: g("path"),
            ..Default::default()
        });
    }
    Err(Status::bad_request(
        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

fn review_response(res: &ResourceDef, mut obj: Value, decision: rbac::Decision) -> Resp {
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    obj["status"] = status;
    obj["apiVersion"] = json!(res.api_version());
    obj["kind"] = json!(res.kind);
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    body::json(201, &obj)
}

pub fn create_review(
    ctx: &Ctx,
    res: &'static ResourceDef,
    ns: &str,
    raw: &[u8],
) -> ApiResult<Resp> {
    if raw.is_empty() {
        return Err(Status::bad_request("the body of the request was empty"));
    }
    let obj = decode_body(ctx.header("content-type"), raw)?;
    crate::ops::check_kind(res, &obj)?;
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let db = &ctx.core.db;
    match res.plural {
        "selfsubjectaccessreviews" => {
            let a = attributes_from_spec(&spec)?;
            let d = rbac::authorize(db, &ctx.user, &a);
            Ok(review_response(res, obj, d))
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let mut a = attributes_from_spec(&spec)?;
            if res.plural == "localsubjectaccessreviews" {
                if !a.namespace.is_empty() && a.namespace != ns {
                    return Err(Status::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
                a.namespace = ns.to_string();
            }
            let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
            let groups = strs(spec.get("groups"));
            if user.is_empty() && groups.is_empty() {
                return Err(Status::invalid(
                    res,
                    "",
                    vec![FieldError::invalid(
                        "spec.user",
                        "",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            let extra = spec
                .get("extra")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), strs(Some(v)))).collect())
                .unwrap_or_default();
            let u = UserInfo {
                name: user.to_string(),
                uid: spec
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                groups,
                extra,
            };
            let d = rbac::authorize(db, &u, &a);
            Ok(review_response(res, obj, d))
        }
        "selfsubjectrulesreviews" => {
            let target_ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            let rules = rbac::rules_for(db, &ctx.user, target_ns);
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for r in rules {
                if r.non_resource_urls.is_empty() {
                    let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                    if !r.resource_names.is_empty() {
                        v["resourceNames"] = json!(r.resource_names);
                    }
                    resource_rules.push(v);
                } else {
                    non_resource_rules
                        .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
                }
            }
            let mut out = obj.clone();
            out["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
            out["metadata"] = json!({"creationTimestamp": null});
            Ok(body::json(201, &out))
        }
        "selfsubjectreviews" => {
            let mut out = obj.clone();
            out["metadata"] = json!({"creationTimestamp": null});
            out["status"] = json!({"userInfo": ctx.user.to_json()});
            Ok(body::json(201, &out))
        }
        "tokenreviews" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            let auds = strs(spec.get("audiences"));
            let auds_ref: Vec<&str> = if auds.is_empty() {
                authn::API_AUDIENCES.to_vec()
            } else {
                auds.iter().map(String::as_str).collect()
            };
            let mut out = obj.clone();
            out["metadata"] = json!({"creationTimestamp": null});
            out["status"] = match authn::authenticate_token(&ctx.core, token, &auds_ref) {
                Ok((u, matched)) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": matched})
                }
                Err(e) => json!({"user": {}, "error": format!("[invalid bearer token, {e}]")}),
            };
            Ok(body::json(201, &out))
        }
        _ => Err(Status::path_not_found()),
    }
}

/// POST serviceaccounts/NAME/token.
pub fn token_request(ctx: &Ctx, ns: &str, sa: &str, raw: &[u8]) -> ApiResult<Resp> {
    let tr_res = ResourceDef::token_request();
    let body = if raw.is_empty() {
        json!({})
    } else {
        decode_body(ctx.header("content-type"), raw)?
    };
    let sa_res =
        resources::lookup("", "v1", "serviceaccounts").ok_or_else(|| Status::internal("no sa"))?;
    let sa_obj = ctx.core.get(sa_res, ns, sa)?;
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let exp = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if exp < 600 {
        return Err(Status::invalid(
            tr_res,
            sa,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                &exp.to_string(),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if exp > 1 << 32 {
        return Err(Status::invalid(
            tr_res,
            sa,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                &exp.to_string(),
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let audiences = strs(spec.get("audiences"));
    let mut bound = None;
    if let Some(b) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
        let (plural, scoped) = match kind {
            "Pod" => ("pods", true),
            "Secret" => ("secrets", true),
            "Node" => ("nodes", false),
            other => {
                return Err(Status::invalid(
                    tr_res,
                    sa,
                    vec![FieldError::unsupported(
                        "spec.boundObjectRef.kind",
                        other,
                        &["Pod", "Node", "Secret"],
                    )],
                ));
            }
        };
        let r =
            resources::lookup("", "v1", plural).ok_or_else(|| Status::internal("no bound res"))?;
        let obj = ctx.core.get(r, if scoped { ns } else { "" }, name)?;
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(want) = b
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
        {
            if want != uid {
                return Err(Status::conflict_msg(r, name, &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated")));
            }
        }
        bound = Some(BoundObject {
            kind: kind.to_string(),
            name: name.to_string(),
            uid,
        });
    }
    let (token, exp_unix) =
        authn::issue_sa_token(&ctx.core, ns, sa, &audiences, exp, bound.as_ref())?;
    let exp_ts = time::OffsetDateTime::from_unix_timestamp(exp_unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let auds: Vec<String> = if audiences.is_empty() {
        authn::API_AUDIENCES.iter().map(|s| s.to_string()).collect()
    } else {
        audiences
    };
    let mut out_spec = json!({"audiences": auds, "expirationSeconds": exp, "boundObjectRef": null});
    if let Some(b) = &bound {
        out_spec["boundObjectRef"] =
            json!({"kind": b.kind, "apiVersion": "v1", "name": b.name, "uid": b.uid});
    }
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": sa, "namespace": ns, "creationTimestamp": sa_obj.pointer("/metadata/creationTimestamp")},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": exp_ts}
    });
    Ok(body::json(201, &out))
}
