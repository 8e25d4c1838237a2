//! RequestInfo: what a URL and method mean (kube-apiserver's RequestInfoFactory).

use std::collections::HashMap;

use http::Method;

use crate::rbac::Attributes;
use crate::selectors::FieldSelector;

#[derive(Debug, Clone, Default)]
pub struct ReqInfo {
    pub resource_request: bool,
    pub path: String,
    pub verb: String,
    pub api_prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub parts: Vec<String>,
}

/// A boolean query parameter as the apiserver's parameter codec reads it
/// (`Convert_Slice_string_To_bool`): absent, `0` or `false` in any case is false; anything
/// else is true, `?watch=yes` and a bare `?watch` included.
pub fn query_bool(v: Option<&str>) -> bool {
    v.is_some_and(|s| s != "0" && !s.eq_ignore_ascii_case("false"))
}

pub fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> ReqInfo {
    // Like Go's `URL.Path`, which the apiserver routes and authorizes on: decoded first, then
    // split, so `%2F` separates segments as `/` does.
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned();
    let mut ri = ReqInfo {
        path: path.clone(),
        verb: method.as_str().to_lowercase(),
        ..Default::default()
    };
    let mut parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if parts.len() < 3 || (parts[0] != "api" && parts[0] != "apis") {
        return ri;
    }
    ri.api_prefix = parts.remove(0);
    if ri.api_prefix == "apis" {
        if parts.len() < 3 {
            return ri;
        }
        ri.group = parts.remove(0);
    }
    ri.resource_request = true;
    ri.version = parts.remove(0);
    let mut watch_prefix = false;
    if parts.first().is_some_and(|p| p == "watch") {
        parts.remove(0);
        watch_prefix = true;
        ri.verb = "watch".into();
    } else {
        ri.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .into();
    }
    if parts.first().is_some_and(|p| p == "namespaces") && parts.len() > 1 {
        ri.namespace = parts[1].clone();
        if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
            parts.drain(..2);
        }
    }
    ri.parts = parts.clone();
    if parts.len() >= 3 {
        ri.subresource = parts[2].clone();
    }
    if parts.len() >= 2 {
        ri.name = parts[1].clone();
    }
    if !parts.is_empty() {
        ri.resource = parts[0].clone();
    }
    if ri.name.is_empty() && ri.verb == "get" {
        ri.verb = if query_bool(query.get("watch").map(String::as_str)) {
            "watch"
        } else {
            "list"
        }
        .into();
    }
    // Only a list or watch that got its verb from `?watch` (requestinfo.go's `Verb == "get"`
    // branch) names its object by `fieldSelector=metadata.name=`; one through the deprecated
    // `/watch/` prefix stays unnamed, so a rule limited by `resourceNames` does not allow it.
    let listing = (ri.verb == "watch" || ri.verb == "list") && !watch_prefix;
    if listing && ri.name.is_empty() {
        if let Some(n) = query
            .get("fieldSelector")
            .and_then(|fs| FieldSelector::parse(fs, "").ok())
            .and_then(|sel| sel.exact_name().map(str::to_string))
        {
            if !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('%') {
                ri.name = n;
            }
        }
    }
    if ri.name.is_empty() && ri.verb == "delete" {
        ri.verb = "deletecollection".into();
    }
    ri
}

impl ReqInfo {
    pub fn attributes(&self) -> Attributes {
        Attributes {
            verb: self.verb.clone(),
            resource_request: self.resource_request,
            api_group: self.group.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            path: self.path.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: Method, path: &str, q: &[(&str, &str)]) -> ReqInfo {
        let q = q
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(&m, path, &q)
    }

    #[test]
    fn request_info() {
        let r = p(Method::GET, "/api/v1/namespaces/default/pods", &[]);
        assert_eq!(
            (r.verb.as_str(), r.namespace.as_str(), r.resource.as_str()),
            ("list", "default", "pods")
        );
        let r = p(Method::GET, "/api/v1/namespaces/default/pods/x/exec", &[]);
        assert_eq!(
            (r.verb.as_str(), r.name.as_str(), r.subresource.as_str()),
            ("get", "x", "exec")
        );
        let r = p(Method::GET, "/api/v1/namespaces/foo", &[]);
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.namespace.as_str()),
            ("namespaces", "foo", "foo")
        );
        let r = p(Method::GET, "/apis/apps/v1", &[]);
        assert!(!r.resource_request);
        let r = p(Method::DELETE, "/api/v1/namespaces/a/configmaps", &[]);
        assert_eq!(r.verb, "deletecollection");
        let r = p(
            Method::GET,
            "/api/v1/namespaces/a/pods",
            &[("watch", "true"), ("fieldSelector", "metadata.name=x")],
        );
        assert_eq!((r.verb.as_str(), r.name.as_str()), ("watch", "x"));
        let r = p(
            Method::GET,
            "/api/v1/namespaces/a/pods",
            &[("fieldSelector", "metadata.name=x")],
        );
        assert_eq!((r.verb.as_str(), r.name.as_str()), ("list", "x"));
    }

    /// The deprecated `/watch/` path prefix sets the verb itself: upstream reads a
    /// `metadata.name` field selector only for a GET turned into list or watch, so such a
    /// watch is authorized without a name.
    #[test]
    fn watch_prefix_takes_no_name_from_the_field_selector() {
        let r = p(
            Method::GET,
            "/api/v1/watch/namespaces/a/pods",
            &[("fieldSelector", "metadata.name=x")],
        );
        assert_eq!(
            (
                r.verb.as_str(),
                r.namespace.as_str(),
                r.resource.as_str(),
                r.name.as_str()
            ),
            ("watch", "a", "pods", "")
        );
    }

    /// The path is decoded before it is split (Go's `URL.Path`): `%2F` separates segments.
    #[test]
    fn encoded_slashes_separate_segments() {
        let r = p(Method::GET, "/api/v1/namespaces/default%2Fconfigmaps", &[]);
        assert_eq!(
            (
                r.verb.as_str(),
                r.namespace.as_str(),
                r.resource.as_str(),
                r.name.as_str()
            ),
            ("list", "default", "configmaps", "")
        );
        assert_eq!(r.path, "/api/v1/namespaces/default/configmaps");
        let r = p(
            Method::GET,
            "/api/v1/namespaces/default/configmaps%2Fcm1",
            &[],
        );
        assert_eq!(
            (
                r.verb.as_str(),
                r.namespace.as_str(),
                r.resource.as_str(),
                r.name.as_str()
            ),
            ("get", "default", "configmaps", "cm1")
        );
        let r = p(Method::DELETE, "/api/v1/namespaces%2Fdev", &[]);
        assert_eq!(
            (r.verb.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("delete", "dev", "dev")
        );
    }
}
