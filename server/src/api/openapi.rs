//! The REST API's route table. One list drives both the axum router and the OpenAPI 3.0
//! document at `GET /api/v1/openapi.json`, so the document cannot drift from the code:
//! request and response schemas come from the DTO types themselves (schemars).

use axum::Router;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::Schema;
use serde_json::{json, Map, Value};

use crate::state::AppState;

pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub status: u16,
    pub request: Option<SchemaFn>,
    pub response: Option<SchemaFn>,
    pub query: Option<SchemaFn>,
    pub public: bool,
}

/// The error envelope every failure answers with (documentation only).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct ErrorBody {
    code: String,
    message: String,
    fields: std::collections::BTreeMap<String, String>,
}

/// Declare endpoints once: `METHOD "path" => handler, tag, summary, status, req?, resp?, query?, public?`.
#[macro_export]
macro_rules! endpoints {
    ($( $method:ident $path:literal => $handler:expr, $tag:literal, $summary:literal, $status:literal
        $(, req = $req:ty)? $(, resp = $resp:ty)? $(, query = $query:ty)? $(, public = $public:literal)? ; )*) => {
        pub fn documented_router() -> axum::Router<$crate::state::AppState> {
            let mut r = axum::Router::new();
            $( r = r.route($path, axum::routing::$method($handler)); )*
            r
        }
        pub fn operations() -> Vec<$crate::api::openapi::Operation> {
            vec![$(
                $crate::api::openapi::Operation {
                    method: stringify!($method),
                    path: $path,
                    tag: $tag,
                    summary: $summary,
                    status: $status,
                    request: None::<$crate::api::openapi::SchemaFn> $( .or(Some((|g: &mut schemars::generate::SchemaGenerator| g.subschema_for::<$req>()) as $crate::api::openapi::SchemaFn)) )?,
                    response: None::<$crate::api::openapi::SchemaFn> $( .or(Some((|g: &mut schemars::generate::SchemaGenerator| g.subschema_for::<$resp>()) as $crate::api::openapi::SchemaFn)) )?,
                    query: None::<$crate::api::openapi::SchemaFn> $( .or(Some((|g: &mut schemars::generate::SchemaGenerator| g.root_schema_for::<$query>()) as $crate::api::openapi::SchemaFn)) )?,
                    public: false $( || $public )?,
                }
            ),*]
        }
    };
}

/// A query type's fields as OpenAPI parameters (its root schema: transforms applied).
fn query_parameters(schema: Schema) -> Vec<Value> {
    let Some(obj) = schema.as_object() else {
        return vec![];
    };
    let Some(properties) = obj.get("properties").and_then(Value::as_object) else {
        return vec![];
    };
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    properties
        .iter()
        .map(|(name, s)| {
            let mut sv = s.clone();
            // Optional fields come out as ["string","null"]; parameters are simply optional.
            if let Some(t) = sv.get("type").and_then(|t| t.as_array()).and_then(|a| a.iter().find(|x| *x != "null")).cloned() {
                sv["type"] = t;
            }
            if let Some(o) = sv.as_object_mut() {
                o.remove("nullable");
                o.remove("default");
            }
            json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": sv})
        })
        .collect()
}

/// A schema used in place (a request or response body) in its OpenAPI 3.0 form: the settings'
/// transforms, which the generator applies itself only to root schemas and definitions.
fn in_place(gen: &mut SchemaGenerator, mut schema: Schema) -> Schema {
    for t in gen.transforms_mut() {
        t.transform(&mut schema);
    }
    schema
}

pub fn document(ops: &[Operation]) -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let error_ref = gen.subschema_for::<ErrorEnvelope>();
    let error_ref = in_place(&mut gen, error_ref);
    let mut paths = Map::new();
    for op in ops {
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(q) = op.query {
            parameters.extend(query_parameters(q(&mut gen)));
        }
        let mut o = json!({
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": format!("{}_{}", op.method, op.path.trim_matches('/').replace(['/', '{', '}', '-'], "_")),
            "parameters": parameters,
            "responses": {
                "4XX": {"description": "error", "content": {"application/json": {"schema": error_ref}}},
                "5XX": {"description": "internal error", "content": {"application/json": {"schema": error_ref}}},
            },
        });
        let ok = match op.response {
            Some(r) => {
                let schema = r(&mut gen);
                let schema = in_place(&mut gen, schema);
                json!({"description": "success", "content": {"application/json": {"schema": schema}}})
            }
            None => json!({"description": "success, no content"}),
        };
        o["responses"][op.status.to_string()] = ok;
        if let Some(r) = op.request {
            let schema = r(&mut gen);
            let schema = in_place(&mut gen, schema);
            o["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        if op.public {
            o["security"] = json!([]);
        }
        let entry = paths
            .entry(format!("/api/v1{}", op.path))
            .or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    let schemas = Value::Object(gen.take_definitions(true));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Warden API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Zero-trust access to Kubernetes clusters. Errors: {\"error\": {\"code\", \"message\", \"fields\"}}. Authenticate with the session cookie (state-changing requests must carry an Origin equal to the server's) or Authorization: Bearer <API key>."
        },
        "servers": [{"url": "/"}],
        "security": [{"session": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": crate::middleware::SESSION_COOKIE,
                    "description": format!("{} when Warden is served over TLS", crate::middleware::SECURE_SESSION_COOKIE)},
                "apiKey": {"type": "http", "scheme": "bearer"}
            }
        }
    })
}

pub fn with_openapi(router: Router<AppState>, ops: Vec<Operation>) -> Router<AppState> {
    let doc = std::sync::Arc::new(document(&ops));
    router.route(
        "/openapi.json",
        axum::routing::get(move || async move { axum::Json((*doc).clone()) }),
    )
}
