//! Label and field selectors, with the apiserver's syntax and error messages.

use serde_json::Value;

use crate::error::{ApiResult, Status};

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),!f`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Req>,
}

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(crate::validate::is_dns1123_subdomain)
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()))
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> ApiResult<LabelSelector> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        let bad = |why: String| Status::bad_request(format!("unable to parse requirement: {why}"));
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(Status::bad_request(format!(
                    "found '', expected: identifier in selector \"{s}\""
                )));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some(idx) = p.find(" notin ") {
                let (k, rest) = p.split_at(idx);
                Req::NotIn(k.trim().to_string(), parse_set(&rest[7..], s)?)
            } else if let Some(idx) = p.find(" in ") {
                let (k, rest) = p.split_at(idx);
                Req::In(k.trim().to_string(), parse_set(&rest[4..], s)?)
            } else {
                Req::Exists(p.to_string())
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) => (k, vec![v.as_str()]),
                Req::In(k, vs) | Req::NotIn(k, vs) => (k, vs.iter().map(String::as_str).collect()),
                Req::Exists(k) | Req::NotExists(k) => (k, vec![]),
            };
            if !valid_label_key(key) {
                return Err(bad(format!(
                    "key: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                )));
            }
            for v in values {
                if !valid_label_value(v) {
                    return Err(bad(format!(
                        "values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                    )));
                }
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`), as
    /// `LabelSelectorAsSelector` reads it: `None` when it cannot be read (an unknown operator,
    /// `In` without values), which selects nothing; `{}` selects everything.
    pub fn from_object(v: &Value) -> Option<LabelSelector> {
        let v = v.as_object()?;
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels") {
            for (k, val) in m.as_object()? {
                reqs.push(Req::Eq(k.clone(), val.as_str()?.to_string()));
            }
        }
        if let Some(exprs) = v.get("matchExpressions") {
            for e in exprs.as_array()? {
                let key = e.get("key")?.as_str()?.to_string();
                let values: Vec<String> = match e.get("values") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(vs) => vs
                        .as_array()?
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<_>>()?,
                };
                reqs.push(match e.get("operator")?.as_str()? {
                    "In" if !values.is_empty() => Req::In(key, values),
                    "NotIn" if !values.is_empty() => Req::NotIn(key, values),
                    "Exists" if values.is_empty() => Req::Exists(key),
                    "DoesNotExist" if values.is_empty() => Req::NotExists(key),
                    _ => return None,
                });
            }
        }
        Some(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

fn parse_set(s: &str, whole: &str) -> ApiResult<Vec<String>> {
    let t = s.trim();
    let inner = t
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| {
            Status::bad_request(format!(
                "unable to parse requirement: found '{t}', expected: '(' in selector \"{whole}\""
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect())
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parse and check the fields against those the resource supports.
    pub fn parse(s: &str, plural: &str) -> ApiResult<FieldSelector> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in s.split(',') {
            let p = part.trim();
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(Status::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{p}'"
                )));
            };
            let k = k.trim();
            if !supported_field(plural, k) {
                return Err(Status::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The value of an exact `metadata.name=` requirement.
    pub fn exact_name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(k, eq, _)| k == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, eq, v)| {
            let actual = field_value(obj, k);
            (actual == *v) == *eq
        })
    }
}

fn supported_field(plural: &str, field: &str) -> bool {
    if field == "metadata.name" {
        return true;
    }
    // Every kind takes `metadata.namespace` (`DefaultMetaV1FieldSelectorConversion`; on a
    // cluster-scoped kind it is the empty string) but Nodes and Namespaces, whose own
    // conversions (`AddFieldLabelConversionsForNode`/`ForNamespace`) refuse it.
    if field == "metadata.namespace" {
        return !matches!(plural, "nodes" | "namespaces");
    }
    match plural {
        "pods" => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "secrets" => field == "type",
        "namespaces" => field == "status.phase",
        "nodes" => field == "spec.unschedulable",
        "events" => {
            field.starts_with("involvedObject.")
                || matches!(field, "reason" | "reportingComponent" | "source" | "type")
        }
        "services" => field == "spec.clusterIP" || field == "spec.type",
        _ => false,
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => {
                return match field {
                    "spec.hostNetwork" | "spec.unschedulable" => "false".into(),
                    _ => String::new(),
                }
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        assert!(LabelSelector::parse("app=web").unwrap().matches(&o));
        assert!(LabelSelector::parse("app==web,tier").unwrap().matches(&o));
        assert!(!LabelSelector::parse("app!=web").unwrap().matches(&o));
        assert!(LabelSelector::parse("app in (web, db)")
            .unwrap()
            .matches(&o));
        assert!(!LabelSelector::parse("app notin (web)").unwrap().matches(&o));
        assert!(LabelSelector::parse("!missing").unwrap().matches(&o));
        assert!(LabelSelector::parse("app=we b").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=a", "pods")
            .unwrap()
            .matches(&o));
        assert!(FieldSelector::parse("status.phase!=Pending", "pods")
            .unwrap()
            .matches(&o));
        assert!(FieldSelector::parse("spec.foo=a", "pods").is_err());
        // As the API server: every kind but Nodes and Namespaces takes metadata.namespace.
        for plural in ["pods", "clusterroles", "storageclasses", ""] {
            assert!(FieldSelector::parse("metadata.namespace!=x", plural).is_ok());
        }
        for plural in ["nodes", "namespaces"] {
            assert!(FieldSelector::parse("metadata.namespace!=x", plural).is_err());
            assert!(FieldSelector::parse("metadata.name=x", plural).is_ok());
        }
    }
}
