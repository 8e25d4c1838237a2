//! Validation with the apiserver's field paths and messages (the common rules only).

use serde_json::Value;

use crate::error::FieldError;
use crate::resources::{NameRule, ResourceDef};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

/// Errors for an object name under a naming rule (field `metadata.name`).
pub fn name_errors(rule: NameRule, name: &str, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                errs.push(FieldError::invalid(
                    field,
                    name,
                    "must be no more than 253 characters",
                ));
            }
            if !name.split('.').all(is_dns1123_label) {
                errs.push(FieldError::invalid(field, name, SUBDOMAIN_MSG));
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                errs.push(FieldError::invalid(
                    field,
                    name,
                    "must be no more than 63 characters",
                ));
            }
            if !is_dns1123_label(&name[..name.len().min(63)]) || name.is_empty() {
                errs.push(FieldError::invalid(field, name, LABEL_MSG));
            }
        }
        NameRule::Dns1035 => {
            if name.len() > 63 {
                errs.push(FieldError::invalid(
                    field,
                    name,
                    "must be no more than 63 characters",
                ));
            }
            if !is_dns1035_label(&name[..name.len().min(63)]) {
                errs.push(FieldError::invalid(field, name, DNS1035_MSG));
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                errs.push(FieldError::invalid(
                    field,
                    name,
                    format!("may not be '{name}'"),
                ));
            }
            for bad in ["/", "%"] {
                if name.contains(bad) {
                    errs.push(FieldError::invalid(
                        field,
                        name,
                        format!("may not contain '{bad}'"),
                    ));
                }
            }
        }
    }
    errs
}

fn valid_qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns1123_subdomain) && valid_label_value(name) && !name.is_empty()
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

fn valid_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && k != "."
        && k != ".."
}

fn metadata_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = obj.pointer("/metadata/labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if !valid_qualified_name(k) {
                        errs.push(FieldError::invalid(
                            "metadata.labels",
                            k,
                            QUALIFIED_NAME_MSG,
                        ));
                    }
                    match v.as_str() {
                        Some(s) if !valid_label_value(s) => {
                            errs.push(FieldError::invalid("metadata.labels", s, LABEL_VALUE_MSG))
                        }
                        Some(_) => {}
                        None => errs.push(FieldError::invalid(
                            "metadata.labels",
                            &v.to_string(),
                            "label values must be strings",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => errs.push(FieldError::invalid(
                "metadata.labels",
                &labels.to_string(),
                "must be a map of strings",
            )),
        }
    }
    if let Some(m) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for k in m.keys() {
            if !valid_qualified_name(k) {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    k,
                    QUALIFIED_NAME_MSG,
                ));
            }
        }
    }
    errs
}

fn containers_errors(spec: Option<&Value>, base: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        errs.push(FieldError::required(format!("{base}.containers"), ""));
        return errs;
    };
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let f = format!("{base}.containers[{i}]");
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(format!("{f}.name"), "")),
            Some(n) => {
                if !is_dns1123_label(n) {
                    errs.push(FieldError::invalid(format!("{f}.name"), n, LABEL_MSG));
                }
                if seen.contains(&n) {
                    errs.push(FieldError::duplicate(format!("{f}.name"), n));
                }
                seen.push(n);
            }
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(format!("{f}.image"), ""));
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, p) in ports.iter().enumerate() {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        format!("{f}.ports[{j}].containerPort"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    errs
}

fn rules_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(rules) = obj.get("rules").and_then(Value::as_array) {
        for (i, r) in rules.iter().enumerate() {
            if r.get("verbs")
                .and_then(Value::as_array)
                .is_none_or(|v| v.is_empty())
            {
                errs.push(FieldError::required(
                    format!("rules[{i}].verbs"),
                    "verbs must contain at least one value",
                ));
            }
            let has_urls = r
                .get("nonResourceURLs")
                .and_then(Value::as_array)
                .is_some_and(|v| !v.is_empty());
            let has_res = r
                .get("resources")
                .and_then(Value::as_array)
                .is_some_and(|v| !v.is_empty());
            if has_urls && has_res {
                errs.push(FieldError::invalid(
                    format!("rules[{i}].nonResourceURLs"),
                    "",
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            if has_urls && obj.get("kind").and_then(Value::as_str) == Some("Role") {
                errs.push(FieldError::invalid(
                    format!("rules[{i}].nonResourceURLs"),
                    "",
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !has_urls && !has_res {
                errs.push(FieldError::required(
                    format!("rules[{i}].resources"),
                    "resource rules must supply at least one resource",
                ));
            }
            if has_res
                && r.get("apiGroups")
                    .and_then(Value::as_array)
                    .is_none_or(|v| v.is_empty())
            {
                errs.push(FieldError::required(
                    format!("rules[{i}].apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
        }
    }
    errs
}

fn binding_errors(obj: &Value, cluster: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let role_ref = obj.get("roleRef");
    let kind = role_ref
        .and_then(|r| r.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let allowed: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    if !allowed.contains(&kind) {
        errs.push(FieldError::unsupported("roleRef.kind", kind, allowed));
    }
    let group = role_ref
        .and_then(|r| r.get("apiGroup"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if group != "rbac.authorization.k8s.io" {
        errs.push(FieldError::unsupported(
            "roleRef.apiGroup",
            group,
            &["rbac.authorization.k8s.io"],
        ));
    }
    if role_ref
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required("roleRef.name", ""));
    }
    if let Some(subjects) = obj.get("subjects").and_then(Value::as_array) {
        for (i, s) in subjects.iter().enumerate() {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(format!("subjects[{i}].name"), ""));
            }
            match kind {
                "User" | "Group" => {}
                "ServiceAccount" => {
                    if cluster
                        && s.get("namespace")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                    {
                        errs.push(FieldError::required(format!("subjects[{i}].namespace"), ""));
                    }
                }
                other => errs.push(FieldError::unsupported(
                    format!("subjects[{i}].kind"),
                    other,
                    &["ServiceAccount", "User", "Group"],
                )),
            }
        }
    }
    errs
}

/// Kind-specific validation of an object about to be stored. `old` is set on updates.
pub fn validate(res: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = metadata_errors(obj);
    match (res.group, res.plural) {
        ("", "pods") => {
            errs.extend(containers_errors(obj.get("spec"), "spec"));
            if let Some(old) = old {
                if pod_spec_changed_illegally(old, obj) {
                    errs.push(FieldError::forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    ));
                }
            }
        }
        ("apps", "deployments") => {
            let spec = obj.get("spec");
            let sel = spec
                .and_then(|s| s.pointer("/selector/matchLabels"))
                .and_then(Value::as_object);
            let has_expr = spec
                .and_then(|s| s.pointer("/selector/matchExpressions"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if sel.is_none_or(|m| m.is_empty()) && !has_expr {
                errs.push(FieldError::required("spec.selector", ""));
            } else if let Some(sel) = sel {
                let labels = spec
                    .and_then(|s| s.pointer("/template/metadata/labels"))
                    .and_then(Value::as_object);
                let ok = sel
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if !ok {
                    let shown = labels
                        .map(|l| {
                            let parts: Vec<String> =
                                l.iter().map(|(k, v)| format!("\"{}\":{}", k, v)).collect();
                            format!("map[string]string{{{}}}", parts.join(", "))
                        })
                        .unwrap_or_else(|| "map[string]string(nil)".into());
                    errs.push(FieldError {
                        field: "spec.template.metadata.labels".into(),
                        reason: "FieldValueInvalid",
                        value: None,
                        detail: format!("{shown}: `selector` does not match template `labels`"),
                    });
                }
            }
            if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64) {
                if r < 0 {
                    errs.push(FieldError::invalid(
                        "spec.replicas",
                        &r.to_string(),
                        "must be greater than or equal to 0",
                    ));
                }
            }
            errs.extend(containers_errors(
                spec.and_then(|s| s.pointer("/template/spec")),
                "spec.template.spec",
            ));
            if let Some(old) = old {
                if old.pointer("/spec/selector") != obj.pointer("/spec/selector") {
                    errs.push(FieldError {
                        field: "spec.selector".into(),
                        reason: "FieldValueInvalid",
                        value: None,
                        detail: "field is immutable".into(),
                    });
                }
            }
        }
        ("", "services") => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let allowed = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
            if !allowed.contains(&ty) {
                errs.push(FieldError::unsupported("spec.type", ty, &allowed));
            }
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
            if ty != "ExternalName" && ports.is_none_or(|p| p.is_empty()) {
                errs.push(FieldError::required("spec.ports", ""));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].port"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let Some(old) = old {
                let a = old.pointer("/spec/clusterIP");
                let b = obj.pointer("/spec/clusterIP");
                if b.is_some() && a != b {
                    errs.push(FieldError {
                        field: "spec.clusterIPs[0]".into(),
                        reason: "FieldValueInvalid",
                        value: None,
                        detail: "may not change once set".into(),
                    });
                }
            }
        }
        ("networking.k8s.io", "ingresses") => errs.extend(ingress_errors(obj)),
        ("policy", "poddisruptionbudgets") => errs.extend(pdb_errors(obj)),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            let rules = obj
                .pointer("/spec/matchConstraints/resourceRules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, rule) in rules.iter().enumerate() {
                let resources = rule
                    .get("resources")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                errs.extend(rule_resources_errors(
                    &resources,
                    &format!("spec.matchConstraints.resourceRules[{i}].resources"),
                ));
            }
        }
        // The one field each must carry (apis/storage/validation).
        ("storage.k8s.io", "storageclasses") => {
            if obj
                .get("provisioner")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required("provisioner", ""));
            }
        }
        ("storage.k8s.io", "csistoragecapacities") => {
            if obj
                .get("storageClassName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required("storageClassName", ""));
            }
        }
        ("networking.k8s.io", "networkpolicies") => errs.extend(network_policy_errors(obj)),
        ("", "configmaps") | ("", "secrets") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for k in m.keys() {
                        if !valid_config_key(k) {
                            errs.push(FieldError::invalid(
                                format!("{field}[{k}]"),
                                k,
                                CONFIG_KEY_MSG,
                            ));
                        }
                    }
                }
            }
            if let Some(old) = old {
                if old.get("immutable") == Some(&Value::Bool(true))
                    && (old.get("data") != obj.get("data")
                        || old.get("binaryData") != obj.get("binaryData"))
                {
                    errs.push(FieldError::forbidden(
                        "data",
                        "field is immutable when `immutable` is set",
                    ));
                }
                if res.plural == "secrets" && old.get("type") != obj.get("type") {
                    errs.push(FieldError {
                        field: "type".into(),
                        reason: "FieldValueInvalid",
                        value: obj.get("type").and_then(Value::as_str).map(str::to_string),
                        detail: "field is immutable".into(),
                    });
                }
            }
        }
        ("rbac.authorization.k8s.io", "roles") | ("rbac.authorization.k8s.io", "clusterroles") => {
            errs.extend(rules_errors(obj))
        }
        ("rbac.authorization.k8s.io", "rolebindings") => {
            errs.extend(binding_errors(obj, false));
            if let Some(old) = old {
                if old.get("roleRef") != obj.get("roleRef") {
                    errs.push(FieldError {
                        field: "roleRef".into(),
                        reason: "FieldValueInvalid",
                        value: None,
                        detail: "cannot change roleRef".into(),
                    });
                }
            }
        }
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            errs.extend(binding_errors(obj, true));
            if let Some(old) = old {
                if old.get("roleRef") != obj.get("roleRef") {
                    errs.push(FieldError {
                        field: "roleRef".into(),
                        reason: "FieldValueInvalid",
                        value: None,
                        detail: "cannot change roleRef".into(),
                    });
                }
            }
        }
        _ => {}
    }
    errs
}

/// Pod spec changes beyond images, activeDeadlineSeconds, tolerations and the grace period.
/// An Ingress backend: a service (name and a port by number or name) or a resource.
fn ingress_backend_errors(b: &Value, base: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (b.get("service"), b.get("resource")) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            base.to_owned(),
            "",
            "cannot set both resource and service backends",
        )),
        (None, None) => errs.push(FieldError::required(
            base.to_owned(),
            "resource or service must be specified",
        )),
        (Some(svc), None) => {
            let name = svc.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{base}.service.name"), ""));
            } else if !is_dns1035_label(name) {
                errs.push(FieldError::invalid(
                    format!("{base}.service.name"),
                    name,
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
                ));
            }
            let port = svc.get("port");
            let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64);
            let pname = port.and_then(|p| p.get("name")).and_then(Value::as_str);
            match (number, pname) {
                (Some(_), Some(_)) => errs.push(FieldError::invalid(
                    format!("{base}.service.port"),
                    "",
                    "cannot set both port name & port number",
                )),
                (None, None) => errs.push(FieldError::required(
                    format!("{base}.service.port"),
                    "port name or number is required",
                )),
                (Some(n), None) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                    format!("{base}.service.port.number"),
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                )),
                _ => {}
            }
        }
        (None, Some(_)) => {}
    }
    errs
}

/// `networking.k8s.io/v1` Ingress, as the apiserver's validation checks it.
fn ingress_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec");
    let rules = spec
        .and_then(|s| s.get("rules"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let default = spec.and_then(|s| s.get("defaultBackend"));
    if rules.is_empty() && default.is_none() {
        errs.push(FieldError::invalid(
            "spec.rules",
            "[]",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(d) = default {
        errs.extend(ingress_backend_errors(d, "spec.defaultBackend"));
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(host) = rule.get("host").and_then(Value::as_str) {
            let plain = host.strip_prefix("*.").unwrap_or(host);
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.push(FieldError::invalid(
                    format!("spec.rules[{i}].host"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            } else if !is_dns1123_subdomain(plain) {
                errs.push(FieldError::invalid(
                    format!("spec.rules[{i}].host"),
                    host,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                ));
            }
        }
        let paths = rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if rule.get("http").is_some() && paths.is_empty() {
            errs.push(FieldError::required(
                format!("spec.rules[{i}].http.paths"),
                "",
            ));
        }
        for (j, p) in paths.iter().enumerate() {
            let base = format!("spec.rules[{i}].http.paths[{j}]");
            let allowed = ["Exact", "ImplementationSpecific", "Prefix"];
            match p.get("pathType").and_then(Value::as_str) {
                None => errs.push(FieldError::required(
                    format!("{base}.pathType"),
                    "pathType must be specified",
                )),
                Some(t) if !allowed.contains(&t) => errs.push(FieldError::unsupported(
                    format!("{base}.pathType"),
                    t,
                    &allowed,
                )),
                Some(t) => {
                    let path = p.get("path").and_then(Value::as_str).unwrap_or("");
                    if t != "ImplementationSpecific" && !path.starts_with('/') {
                        errs.push(FieldError::invalid(
                            format!("{base}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
            }
            match p.get("backend") {
                Some(b) => errs.extend(ingress_backend_errors(b, &format!("{base}.backend"))),
                None => errs.push(FieldError::required(format!("{base}.backend"), "")),
            }
        }
    }
    errs
}

/// `networking.k8s.io/v1` NetworkPolicy: known policy types, ports by number or name with a
/// known protocol.
fn network_policy_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec");
    if spec.and_then(|s| s.get("podSelector")).is_none() {
        errs.push(FieldError::required("spec.podSelector", ""));
    }
    let allowed = ["Egress", "Ingress"];
    for (i, t) in spec
        .and_then(|s| s.get("policyTypes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let t = t.as_str().unwrap_or("");
        if !allowed.contains(&t) {
            errs.push(FieldError::unsupported(
                format!("spec.policyTypes[{i}]"),
                t,
                &allowed,
            ));
        }
    }
    for dir in ["ingress", "egress"] {
        for (i, rule) in spec
            .and_then(|s| s.get(dir))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, p) in rule
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let base = format!("spec.{dir}[{i}].ports[{j}]");
                let protocols = ["SCTP", "TCP", "UDP"];
                if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
                    if !protocols.contains(&proto) {
                        errs.push(FieldError::unsupported(
                            format!("{base}.protocol"),
                            proto,
                            &protocols,
                        ));
                    }
                }
                match p.get("port") {
                    Some(Value::Number(n)) if !n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) => {
                        errs.push(FieldError::invalid(
                            format!("{base}.port"),
                            &n.to_string(),
                            "must be between 1 and 65535, inclusive",
                        ))
                    }
                    Some(Value::String(name)) if !is_dns1123_label(name) || name.len() > 15 => {
                        errs.push(FieldError::invalid(
                            format!("{base}.port"),
                            name,
                            "must be a valid port name (at most 15 characters, lower case alphanumerics and '-')",
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    errs
}

/// `policy/v1` PodDisruptionBudget: one of minAvailable / maxUnavailable (a count or a
/// percentage), and a valid selector.
fn pdb_errors(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec");
    let min = spec.and_then(|s| s.get("minAvailable"));
    let max = spec.and_then(|s| s.get("maxUnavailable"));
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            "",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (field, v) in [("spec.minAvailable", min), ("spec.maxUnavailable", max)] {
        let Some(v) = v else { continue };
        let ok = match v {
            Value::Number(n) => n.as_i64().is_some_and(|n| n >= 0),
            Value::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p <= 100),
            _ => false,
        };
        if !ok {
            errs.push(FieldError::invalid(
                field,
                &v.to_string(),
                "must be a non-negative integer or a percentage between 0% and 100%",
            ));
        }
    }
    if let Some(sel) = spec
        .and_then(|s| s.pointer("/selector/matchLabels"))
        .and_then(Value::as_object)
    {
        for (k, v) in sel {
            let v = v.as_str().unwrap_or("");
            if !valid_qualified_name(k) || !valid_label_value(v) {
                errs.push(FieldError::invalid(
                    format!("spec.selector.matchLabels[{k}]"),
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
    }
    errs
}

fn pod_spec_changed_illegally(old: &Value, new: &Value) -> bool {
    let scrub = |v: &Value| {
        let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
        for list in ["containers", "initContainers"] {
            if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("image");
                    }
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            m.remove("terminationGracePeriodSeconds");
        }
        s
    };
    scrub(old) != scrub(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_errors(NameRule::Subdomain, "a.b-c", "metadata.name").is_empty());
        assert!(!name_errors(NameRule::Subdomain, "Bad_Name", "metadata.name").is_empty());
        assert!(!name_errors(NameRule::Label, "a.b", "metadata.name").is_empty());
        assert!(!name_errors(NameRule::Dns1035, "1abc", "metadata.name").is_empty());
        assert!(!name_errors(NameRule::PathSegment, "a/b", "metadata.name").is_empty());
        assert!(name_errors(NameRule::PathSegment, "system:x", "metadata.name").is_empty());
    }
}

/// The resources of an admission rule, as the apiserver's `validateResources` checks them
/// (pkg/apis/admissionregistration/validation): `*/*` only alone, `*` with no plain resource
/// beside it, no `x/*` with `x/y`, no `*/y` with `x/y`.
fn rule_resources_errors(resources: &[Value], field: &str) -> Vec<FieldError> {
    use std::collections::BTreeSet;
    let mut errs = Vec::new();
    if resources.is_empty() {
        errs.push(FieldError::required(field, ""));
    }
    let mut with_wildcard_sub: BTreeSet<String> = BTreeSet::new();
    let mut with_wildcard_res: BTreeSet<String> = BTreeSet::new();
    let (mut double, mut single, mut plain) = (false, false, false);
    for (i, r) in resources.iter().enumerate() {
        let r = r.as_str().unwrap_or("");
        if r.is_empty() {
            errs.push(FieldError::required(format!("{field}[{i}]"), ""));
            continue;
        }
        double |= r == "*/*";
        single |= r == "*";
        let Some((res, sub)) = r.split_once('/') else {
            // As the apiserver has it: the last plain entry decides.
            plain = r != "*";
            continue;
        };
        if with_wildcard_sub.contains(res) {
            errs.push(FieldError::invalid(
                format!("{field}[{i}]"),
                r,
                &format!("if '{res}/*' is present, must not specify {r}"),
            ));
        }
        if with_wildcard_res.contains(sub) {
            errs.push(FieldError::invalid(
                format!("{field}[{i}]"),
                r,
                &format!("if '*/{sub}' is present, must not specify {r}"),
            ));
        }
        if sub == "*" {
            with_wildcard_sub.insert(res.to_owned());
        }
        if res == "*" {
            with_wildcard_res.insert(sub.to_owned());
        }
    }
    let all = serde_json::to_string(resources).unwrap_or_default();
    if resources.len() > 1 && double {
        errs.push(FieldError::invalid(
            field,
            &all,
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if single && plain {
        errs.push(FieldError::invalid(
            field,
            &all,
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
    errs
}

#[cfg(test)]
mod rule_resources_tests {
    use super::*;

    /// The apiserver's own cases (validation_test.go): `*/*` only alone, `*` beside no plain
    /// resource, no overlap of `x/*` or `*/y` with `x/y`.
    #[test]
    fn admission_rule_resources_as_the_apiserver_checks_them() {
        let errs = |r: &[&str]| {
            let v: Vec<Value> = r.iter().map(|s| Value::from(*s)).collect();
            rule_resources_errors(&v, "r").len()
        };
        assert_eq!(errs(&["*/*"]), 0);
        assert_eq!(errs(&["*", "*/scale"]), 0);
        assert_eq!(errs(&["pods", "pods/exec"]), 0);
        assert_eq!(errs(&["*", "*/*"]), 1);
        assert_eq!(errs(&["*/*", "a"]), 1);
        assert_eq!(errs(&["*", "pods"]), 1);
        assert_eq!(errs(&["pods/*", "pods/exec"]), 1);
        assert_eq!(errs(&["*/exec", "pods/exec"]), 1);
        assert_eq!(errs(&[]), 1);
    }
}
