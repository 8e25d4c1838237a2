//! Errors.
//!
//! [`Status`] is the one error type of the request path: it is a Kubernetes `metav1.Status`
//! failure (code, reason, message, details) and renders exactly as a real apiserver would.
//! [`Error`] is the library's start-up / helper error.

use serde_json::{json, Value};

use crate::resources::ResourceDef;

/// A Kubernetes API failure, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Result alias for request-path code.
pub type ApiResult<T> = std::result::Result<T, Status>;

impl Status {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Status {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `pods "x" not found` (404 NotFound).
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.qualified(), name),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// `namespaces "x" not found` for a missing namespace.
    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .with_details(json!({"name": ns, "kind": "namespaces"}))
    }

    /// 404 for a path the server does not serve.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// `pods "x" already exists` (409 AlreadyExists).
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.qualified(), name),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// The optimistic-concurrency conflict (409 Conflict).
    pub fn conflict(res: &ResourceDef, name: &str) -> Self {
        Self::conflict_msg(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A 409 Conflict with a custom reason text.
    pub fn conflict_msg(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                res.qualified(),
                name,
                why
            ),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
    }

    /// A server-side apply conflict (409 Conflict with field-manager causes).
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// `Pod "X" is invalid: field: ...` (422 Invalid).
    pub fn invalid(res: &ResourceDef, name: &str, errs: Vec<FieldError>) -> Self {
        let kind = res.qualified_kind();
        let msg = if errs.len() == 1 {
            format!("{} \"{}\" is invalid: {}", kind, name, errs[0].render())
        } else {
            let all: Vec<String> = errs.iter().map(FieldError::render).collect();
            format!("{} \"{}\" is invalid: [{}]", kind, name, all.join(", "))
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.detail_message(), "field": e.field}))
            .collect();
        Self::new(422, "Invalid", msg).with_details(json!({
            "name": name, "group": res.group, "kind": res.kind, "causes": causes
        }))
    }

    /// 403 Forbidden for a resource (`pods "x" is forbidden: ...`).
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = if resource.is_empty() {
            String::new()
        } else if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let message = if qualified.is_empty() {
            format!("forbidden: {why}")
        } else if name.is_empty() {
            format!("{qualified} is forbidden: {why}")
        } else {
            format!("{qualified} \"{name}\" is forbidden: {why}")
        };
        Self::new(403, "Forbidden", message)
            .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_supported(res: &ResourceDef, action: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "{action} is not supported on resources of kind \"{}\"",
                res.qualified()
            ),
        )
        .with_details(json!({"group": res.group, "kind": res.plural}))
    }

    /// 410 Expired (too old resource version / continue token).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({ct}) - accepted media types include: application/json, application/yaml"),
        )
    }

    /// 500 InternalError; the cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            500,
            "InternalError",
            "Internal error occurred: an internal error occurred in kubesim",
        )
        .with_details(json!({"causes": [{"message": "an internal error occurred in kubesim"}]}))
    }

    /// 500 InternalError with a message that is meant for the client.
    pub fn internal_msg(message: impl Into<String>) -> Self {
        let m = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {m}"),
        )
        .with_details(json!({"causes": [{"message": m}]}))
    }

    /// The `Status` object as JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

/// One field validation error (`field.Error` in the apiserver).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueRequired",
            value: None,
            detail: detail.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueForbidden",
            value: None,
            detail: detail.into(),
        }
    }
    pub fn unsupported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        FieldError {
            field: field.into(),
            reason: "FieldValueNotSupported",
            value: Some(value.to_string()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueDuplicate",
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }

    fn type_text(&self) -> &'static str {
        match self.reason {
            "FieldValueInvalid" => "Invalid value",
            "FieldValueRequired" => "Required value",
            "FieldValueForbidden" => "Forbidden",
            "FieldValueNotSupported" => "Unsupported value",
            "FieldValueDuplicate" => "Duplicate value",
            _ => "Invalid value",
        }
    }

    /// The cause message (without the field).
    fn detail_message(&self) -> String {
        let mut s = self.type_text().to_string();
        if let Some(v) = &self.value {
            s.push_str(&format!(": \"{v}\""));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field: Invalid value: "x": detail`.
    pub fn render(&self) -> String {
        format!("{}: {}", self.field, self.detail_message())
    }
}

/// Library error (start-up, certificates, files).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("state file: {0}")]
    State(String),
    #[error(transparent)]
    Api(#[from] Status),
    #[error("{0}")]
    Other(String),
}

/// Library result alias.
pub type Result<T> = std::result::Result<T, Error>;
