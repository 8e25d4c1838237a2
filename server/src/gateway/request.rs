//! What a Kubernetes API request is about, read from its method, path and query the way the
//! API server's request-info resolver does: verb, API group and version, namespace, resource,
//! subresource and name.

use http::Method;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeRequest {
    /// get, list, watch, create, update, patch, delete, deletecollection (exec, attach,
    /// port-forward and proxy are `create`, as RBAC sees them); for non-resource URLs the
    /// lower-case HTTP method.
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: Option<String>,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub name: Option<String>,
    /// Whether it addresses a resource (not discovery, `/version`, `/healthz`...).
    pub resource_request: bool,
    /// The path of a non-resource request (`/version`, `/logs/...`), decoded.
    pub path: Option<String>,
}

impl KubeRequest {
    /// `pods/exec`, `pods`, or the path for non-resource requests.
    pub fn resource_kind(&self) -> Option<String> {
        match (&self.resource, &self.subresource) {
            (Some(r), Some(s)) => Some(format!("{r}/{s}")),
            (Some(r), None) => Some(r.clone()),
            _ => None,
        }
    }

    /// exec, attach, port-forward or proxy: an interactive connection into a workload.
    pub fn is_connect(&self) -> bool {
        matches!(
            (self.resource.as_deref(), self.subresource.as_deref()),
            (
                Some("pods"),
                Some("exec" | "attach" | "portforward" | "proxy")
            ) | (Some("services" | "nodes"), Some("proxy"))
        )
    }

    /// What the request asks, as the authorization gate sees it.
    pub fn intent(&self) -> warden_domain::access::kube::KubeIntent {
        warden_domain::access::kube::KubeIntent {
            verb: self.verb.clone(),
            api_group: self.api_group.clone(),
            resource: self.resource_kind(),
            namespace: self.namespace.clone(),
            resource_request: self.resource_request,
            connect: self.is_connect(),
            secrets: self.is_secrets(),
            non_resource_path: if self.resource_request {
                None
            } else {
                self.path.clone()
            },
        }
    }

    /// Anything about secrets (core group).
    pub fn is_secrets(&self) -> bool {
        self.resource_request
            && self.api_group.is_empty()
            && self.resource.as_deref() == Some("secrets")
    }
}

/// A boolean query parameter as the API server reads it (apimachinery's
/// `Convert_Slice_string_To_bool` on the key's first value): absent, `0` or `false` in any case
/// is false; anything else is true, `?watch=yes`, `?follow=` and a bare `?watch` included.
/// Reading it more strictly than the cluster would let a watch or a followed log through as a
/// plain list or get, never registered as a live stream, never cut on revocation.
pub(crate) fn query_flag(query: Option<&str>, key: &str) -> bool {
    query
        .and_then(|q| form_urlencoded_pairs(q).find(|(k, _)| k == key))
        .is_some_and(|(_, v)| v != "0" && !v.eq_ignore_ascii_case("false"))
}

impl KubeRequest {
    /// A list or watch of a kind across every namespace (or of a cluster-scoped kind: which
    /// it is, the cluster's discovery says; see [`super::discovery`]).
    pub fn lists_across_namespaces(&self) -> bool {
        self.resource_request
            && self.namespace.is_none()
            && self.subresource.is_none()
            && self.name.is_none()
            && self.resource.is_some()
            && matches!(self.verb.as_str(), "list" | "watch")
    }
}

/// `query` with the field selector `metadata.namespace!=<namespace>` added (to the first
/// `fieldSelector`, which is the one the API server reads, or as a new one).
pub(crate) fn excluding_namespace(query: Option<&str>, namespace: &str) -> String {
    let not_there = format!("metadata.namespace!={namespace}");
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let mut done = false;
    let mut out: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            if done || decode(k, true) != "fieldSelector" {
                return p.to_owned();
            }
            done = true;
            let v = decode(v, true);
            if v.trim().is_empty() {
                format!("fieldSelector={}", enc(&not_there))
            } else {
                format!("fieldSelector={}", enc(&format!("{v},{not_there}")))
            }
        })
        .collect();
    if !done {
        out.push(format!("fieldSelector={}", enc(&not_there)));
    }
    out.join("&")
}

fn form_urlencoded_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k, true), decode(v, true))
    })
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a request to the API server (`path` without the gateway's `/clusters/<name>`).
pub fn parse(method: &Method, path: &str, query: Option<&str>) -> KubeRequest {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode(s, false))
        .collect();
    // The apiserver's verb for a non-resource path is the method in lower case; a method of
    // the client's invention is "unknown" (the verb names audit actions and metric series:
    // a closed set).
    let non_resource = || KubeRequest {
        verb: match *method {
            Method::GET => "get",
            Method::HEAD => "head",
            Method::POST => "post",
            Method::PUT => "put",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            Method::OPTIONS => "options",
            _ => "unknown",
        }
        .to_owned(),
        path: Some(format!("/{}", segs.join("/"))),
        ..Default::default()
    };
    let (group, version, mut rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 2 => (String::new(), segs[1].clone(), &segs[2..]),
        Some("apis") if segs.len() >= 3 => (segs[1].clone(), segs[2].clone(), &segs[3..]),
        _ => return non_resource(),
    };
    if rest.is_empty() {
        // Discovery of a group version.
        return non_resource();
    }
    let mut watch_prefix = false;
    if rest[0] == "watch" {
        watch_prefix = true;
        rest = &rest[1..];
    }
    let mut r = KubeRequest {
        api_group: group,
        api_version: version,
        resource_request: true,
        ..Default::default()
    };
    let parts: &[String] = if rest.first().map(String::as_str) == Some("namespaces") {
        match rest.len() {
            1 => rest,
            2 => {
                r.namespace = Some(rest[1].clone());
                rest
            }
            _ if matches!(rest[2].as_str(), "status" | "finalize") => {
                r.namespace = Some(rest[1].clone());
                rest
            }
            _ => {
                r.namespace = Some(rest[1].clone());
                &rest[2..]
            }
        }
    } else {
        rest
    };
    r.resource = parts.first().cloned();
    r.name = parts.get(1).cloned();
    r.subresource = parts.get(2).cloned();
    let watch = watch_prefix || query_flag(query, "watch");
    r.verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if r.name.is_some() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if r.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
    .to_owned();
    if r.is_connect() {
        r.verb = "create".into();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_but_one() {
        let ex = |q| excluding_namespace(q, "warden-system");
        assert_eq!(
            ex(None),
            "fieldSelector=metadata.namespace%21%3Dwarden-system"
        );
        assert_eq!(
            ex(Some("limit=500&watch=1")),
            "limit=500&watch=1&fieldSelector=metadata.namespace%21%3Dwarden-system"
        );
        assert_eq!(
            ex(Some("fieldSelector=status.phase%3DRunning&limit=5")),
            "fieldSelector=status.phase%3DRunning%2Cmetadata.namespace%21%3Dwarden-system&limit=5"
        );
        // The API server reads the first `fieldSelector` only: that is the one narrowed.
        assert_eq!(
            ex(Some("fieldSelector=&fieldSelector=x%3Dy")),
            "fieldSelector=metadata.namespace%21%3Dwarden-system&fieldSelector=x%3Dy"
        );
        let all =
            |path: &str, q: Option<&str>| parse(&Method::GET, path, q).lists_across_namespaces();
        assert!(all("/api/v1/serviceaccounts", None));
        assert!(all("/api/v1/pods", Some("watch=1")));
        assert!(all("/apis/apps/v1/deployments", None));
        assert!(all("/apis/example.com/v1/widgets", None));
        assert!(all("/apis/metrics.k8s.io/v1beta1/pods", None));
        assert!(!all("/api/v1/namespaces/apple/pods", None));
        assert!(!all("/api/v1/namespaces/apple", None));
        assert!(!all("/api/v1/pods/web", None));
        assert!(!all("/api/v1/namespaces/apple/pods/web/log", None));
        assert!(!all("/api", None));
    }

    /// A non-resource path's verb is the method in lower case, from a closed set: a method of
    /// the client's invention does not become an audit action or a metric series of its own.
    #[test]
    fn a_made_up_method_is_an_unknown_verb() {
        let verb = |m: &str, path: &str| {
            parse(&Method::from_bytes(m.as_bytes()).unwrap(), path, None).verb
        };
        assert_eq!(verb("GET", "/version"), "get");
        assert_eq!(verb("POST", "/apis"), "post");
        assert_eq!(verb("HEAD", "/healthz"), "head");
        assert_eq!(verb("AAAA0001", "/x"), "unknown");
        assert_eq!(verb("AAAA0002", "/api"), "unknown");
        assert_eq!(verb("AAAA0003", "/api/v1/pods"), "unknown");
    }

    /// The apiserver's table (`Convert_Slice_string_To_bool`, first value wins): a watch asked
    /// as `?watch=yes` is a watch.
    #[test]
    fn boolean_parameters_read_as_the_api_server_reads_them() {
        for (q, want) in [
            ("watch=true", true),
            ("watch=1", true),
            ("watch=yes", true),
            ("watch=TRUE", true),
            ("watch=t", true),
            ("watch=", true),
            ("watch", true),
            ("w%61tch=on", true),
            ("watch=false", false),
            ("watch=FALSE", false),
            ("watch=0", false),
            ("limit=5", false),
            ("watch=0&watch=1", false),
            ("watch=yes&watch=false", true),
        ] {
            assert_eq!(query_flag(Some(q), "watch"), want, "{q}");
            let r = parse(&Method::GET, "/api/v1/namespaces/apple/secrets", Some(q));
            assert_eq!(r.verb, if want { "watch" } else { "list" }, "{q}");
        }
        assert!(!query_flag(None, "watch"));
    }

    #[test]
    fn parses_like_the_api_server() {
        let r = parse(
            &Method::GET,
            "/api/v1/namespaces/apple/pods",
            Some("limit=500"),
        );
        assert_eq!(
            (
                r.verb.as_str(),
                r.namespace.as_deref(),
                r.resource.as_deref()
            ),
            ("list", Some("apple"), Some("pods"))
        );
        let r = parse(
            &Method::GET,
            "/api/v1/namespaces/apple/pods",
            Some("watch=true&resourceVersion=1"),
        );
        assert_eq!(r.verb, "watch");
        let r = parse(
            &Method::GET,
            "/api/v1/namespaces/apple/pods/web/exec",
            Some("command=sh&tty=true"),
        );
        assert_eq!(
            (r.verb.as_str(), r.subresource.as_deref(), r.name.as_deref()),
            ("create", Some("exec"), Some("web"))
        );
        assert!(r.is_connect());
        let r = parse(
            &Method::GET,
            "/api/v1/namespaces/apple/pods/web/log",
            Some("follow=true"),
        );
        assert_eq!(
            (r.verb.as_str(), r.subresource.as_deref()),
            ("get", Some("log"))
        );
        assert!(!r.is_connect());
        let r = parse(&Method::GET, "/api/v1/namespaces", None);
        assert_eq!(
            (r.verb.as_str(), r.resource.as_deref(), r.namespace),
            ("list", Some("namespaces"), None)
        );
        let r = parse(&Method::DELETE, "/api/v1/namespaces/apple", None);
        assert_eq!(
            (r.verb.as_str(), r.resource.as_deref(), r.name.as_deref()),
            ("delete", Some("namespaces"), Some("apple"))
        );
        let r = parse(
            &Method::POST,
            "/apis/apps/v1/namespaces/apple/deployments",
            None,
        );
        assert_eq!(
            (r.api_group.as_str(), r.resource.as_deref(), r.verb.as_str()),
            ("apps", Some("deployments"), "create")
        );
        let r = parse(&Method::GET, "/api/v1/secrets", None);
        assert!(r.is_secrets() && r.namespace.is_none());
        let r = parse(
            &Method::GET,
            "/api/v1/watch/namespaces/apple/configmaps/x",
            None,
        );
        assert_eq!((r.verb.as_str(), r.name.as_deref()), ("watch", Some("x")));
        let r = parse(&Method::GET, "/apis", None);
        assert!(!r.resource_request);
        let r = parse(&Method::GET, "/version", None);
        assert_eq!(r.verb, "get");
        assert_eq!(decode("a%2Fb+c", true), "a/b c");
        assert_eq!(decode("a+b%", false), "a+b%");
    }
}
