//! A minimal OpenAPI v3 surface: enough for kubectl to know that every served kind accepts
//! the `fieldValidation` query parameter (so it validates server-side and needs no schema),
//! without declaring strategic-merge request bodies (so `kubectl apply` computes its patches
//! from its compiled-in types). `/openapi/v2` is an empty document (no paths, no
//! definitions): kubectl then skips client-side schema checks for kinds it cannot find, as
//! it does on a real cluster, and reports unknown kinds through its REST mapping.

use serde_json::{json, Map, Value};

use crate::resources::{self, RESOURCES};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// The document for one group/version.
pub fn gv_document(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut any = false;
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        any = true;
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let prefix = format!("/{}", gv_path(group, version));
        let (collection, item) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
            )
        };
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}}
            })
        };
        let write_params = || {
            vec![
                query_param("dryRun"),
                query_param("fieldManager"),
                query_param("fieldValidation"),
            ]
        };
        let mut coll = Map::new();
        if r.verbs.contains(&"create") {
            coll.insert("post".into(), op("post", write_params()));
        }
        if r.verbs.contains(&"list") {
            coll.insert("get".into(), op("list", vec![]));
        }
        paths.insert(collection, Value::Object(coll));
        if r.stored {
            let mut patch_params = write_params();
            patch_params.push(query_param("force"));
            let mut it = Map::new();
            it.insert("get".into(), op("get", vec![]));
            it.insert("put".into(), op("put", write_params()));
            it.insert("patch".into(), op("patch", patch_params));
            it.insert("delete".into(), op("delete", vec![query_param("dryRun")]));
            paths.insert(item, Value::Object(it));
        }
    }
    if !any {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

fn hash(v: &Value) -> String {
    use sha2::Digest;
    let d = sha2::Sha512::digest(v.to_string().as_bytes());
    d.iter().take(64).map(|b| format!("{b:02X}")).collect()
}

/// `/openapi/v3`: the index of group/version documents.
pub fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in resources::group_versions() {
        if let Some(doc) = gv_document(g, v) {
            let p = gv_path(g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v2`: an empty Swagger document (protobuf when asked for, else JSON).
pub fn v2(accept: &str) -> super::body::Resp {
    if accept.contains("protobuf") {
        let mut r = http::Response::new(super::body::Body::Full(Some(bytes::Bytes::new())));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ),
        );
        return r;
    }
    super::body::json(
        200,
        &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": {}, "definitions": {}}),
    )
}
