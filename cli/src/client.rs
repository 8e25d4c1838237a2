//! Warden's REST API (`/api/v1`) as `wardenctl` calls it: with the API key in
//! `Authorization: Bearer` (never in a URL, never printed), or, only while `wardenctl login`
//! creates that key, with the session cookie of a sign-in and the `Origin` Warden's CSRF check
//! asks of cookie-authenticated writes. Every failure carries the API's own error code and
//! message.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use warden_domain::dto::Page;

/// What went wrong talking to Warden.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Warden answered with an error (its envelope's code and message).
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        fields: Option<Value>,
    },
    #[error("cannot reach Warden at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Warden's answer was not what wardenctl expected: {0}")]
    Unexpected(String),
}

impl ApiError {
    /// The API's error code (`forbidden`, `not_found`, `mfa_required`, …), when Warden answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// How requests authenticate.
#[derive(Clone)]
enum Auth {
    /// `Authorization: Bearer <key>`.
    ApiKey(String),
    /// The cookie jar of a sign-in (login only), with the `Origin` of Warden's URL on writes.
    Session,
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl Api {
    fn build(base: &str, auth: Auth) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| {
            anyhow::anyhow!(
                "{base} is not a URL ({e}); give Warden's address, e.g. https://warden.example.com"
            )
        })?;
        // Passwords, codes and API keys travel in these requests: in the clear only to this
        // machine.
        let allowed = match parsed.scheme() {
            "https" => true,
            "http" => is_loopback(&parsed),
            _ => false,
        };
        if !allowed {
            anyhow::bail!(
                "{base}: Warden's URL starts with https:// (or http:// on a loopback address: passwords and API keys must not cross a network in the clear)"
            );
        }
        let http = reqwest::Client::builder()
            .cookie_store(matches!(auth, Auth::Session))
            .user_agent(concat!("wardenctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            // Warden's API never redirects these calls: following one would resend a sign-in
            // body (password, second-factor code) or the API key to wherever it points,
            // plain http included.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { base, http, auth })
    }

    /// A client that authenticates with an API key.
    pub fn with_key(base: &str, key: &str) -> anyhow::Result<Self> {
        Self::build(base, Auth::ApiKey(key.to_owned()))
    }

    /// A client that keeps the session cookie of a sign-in (for `wardenctl login`).
    pub fn with_session(base: &str) -> anyhow::Result<Self> {
        Self::build(base, Auth::Session)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        match &self.auth {
            Auth::ApiKey(k) => rb = rb.bearer_auth(k),
            Auth::Session if method != reqwest::Method::GET => {
                rb = rb.header(reqwest::header::ORIGIN, origin_of(&self.base))
            }
            _ => {}
        }
        rb
    }

    /// Send, and turn an error answer into [`ApiError::Api`].
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> ApiResult<reqwest::Response> {
        let resp = rb.send().await.map_err(|source| ApiError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("elsewhere")
                .to_owned();
            return Err(ApiError::Unexpected(format!(
                "{} answered with a redirect to {to}, which wardenctl does not follow (it would carry your password or key there): check the Warden URL",
                self.base
            )));
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(error_of(status, &body))
    }

    async fn json_of<T: DeserializeOwned>(resp: reqwest::Response) -> ApiResult<T> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Unexpected(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Unexpected(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> ApiResult<T> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        Self::json_of(resp).await
    }

    /// GET with query parameters (empty values left out).
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> ApiResult<T> {
        let query: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        let resp = self
            .send(self.request(reqwest::Method::GET, path).query(&query))
            .await?;
        Self::json_of(resp).await
    }

    /// A GET answered with text (YAML manifests, kubeconfigs), and the raw response for streams.
    pub async fn get_raw(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> ApiResult<reqwest::Response> {
        let query: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        self.send(self.request(reqwest::Method::GET, path).query(&query))
            .await
    }

    /// The audit log's live tail (Server-Sent Events), after `after` (its `seq`) when given.
    pub async fn tail(
        &self,
        query: &[(&str, String)],
        after: Option<i64>,
    ) -> ApiResult<reqwest::Response> {
        let mut rb = self
            .request(reqwest::Method::GET, "/api/v1/audit/tail")
            .query(query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(seq) = after {
            rb = rb.header("last-event-id", seq.to_string());
        }
        self.send(rb).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ApiResult<T> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await?;
        Self::json_of(resp).await
    }

    /// A POST whose answer has no body (204) or one that is not needed.
    pub async fn post_empty<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> ApiResult<()> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
            .map(drop)
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ApiResult<T> {
        let resp = self
            .send(self.request(reqwest::Method::PATCH, path).json(body))
            .await?;
        Self::json_of(resp).await
    }

    /// A DELETE answered with the changed object (e.g. a group after removing a member).
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> ApiResult<T> {
        let resp = self
            .send(self.request(reqwest::Method::DELETE, path))
            .await?;
        Self::json_of(resp).await
    }

    pub async fn delete(&self, path: &str) -> ApiResult<()> {
        self.send(self.request(reqwest::Method::DELETE, path))
            .await
            .map(drop)
    }

    /// Every item of a paged list, following `next` (at most `max` items).
    pub async fn list_all(
        &self,
        path: &str,
        query: &[(&str, String)],
        max: usize,
    ) -> ApiResult<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut q = query.to_vec();
            q.push(("cursor", cursor.clone()));
            let page: Page<Value> = self.get_query(path, &q).await?;
            items.extend(page.items);
            match page.next {
                Some(next) if items.len() < max && !next.is_empty() => cursor = next,
                _ => break,
            }
        }
        items.truncate(max);
        Ok(items)
    }
}

/// Whether a URL names this machine: `localhost`, or a loopback address (127.0.0.0/8, ::1).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host[:port]` of a URL, as browsers send it in `Origin`.
fn origin_of(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => base.to_owned(),
    }
}

/// An error answer as [`ApiError::Api`]: the envelope `{"error": {"code", "message",
/// "fields"}}` when there is one, else the status and the start of the body.
pub fn error_of(status: u16, body: &str) -> ApiError {
    let envelope = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    match envelope {
        Some(e) => ApiError::Api {
            status,
            code: e["code"].as_str().unwrap_or("error").to_owned(),
            message: e["message"].as_str().unwrap_or("").to_owned(),
            fields: e.get("fields").filter(|f| !f.is_null()).cloned(),
        },
        None => ApiError::Api {
            status,
            code: "http_error".into(),
            message: body.chars().take(200).collect::<String>().trim().to_owned(),
            fields: None,
        },
    }
}

/// A path segment (a name, an email, an id) escaped for the URL: `/` and `%` can never change
/// which resource is addressed.
pub fn seg(s: &str) -> String {
    // `.` and `..` would be resolved away by URL parsing.
    if s == "." || s == ".." {
        return s.replace('.', "%2E");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_keep_the_apis_code_and_message() {
        let e = error_of(
            403,
            r#"{"error":{"code":"forbidden","message":"you may not","fields":{"name":"taken"}}}"#,
        );
        assert_eq!(e.code(), Some("forbidden"));
        assert_eq!(e.to_string(), "you may not (403 forbidden)");
        let e = error_of(502, "<html>bad gateway</html>");
        assert_eq!(e.code(), Some("http_error"));
    }

    #[test]
    fn path_segments_cannot_address_another_resource() {
        assert_eq!(seg("a@b.c"), "a@b.c");
        assert_eq!(seg("../admin"), "..%2Fadmin");
        assert_eq!(seg("x%2Fy"), "x%252Fy");
        assert_eq!(seg("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(seg(".."), "%2E%2E");
    }

    #[test]
    fn plain_http_is_for_this_machine_only() {
        for ok in [
            "https://warden.example.com",
            "http://127.0.0.1:3000",
            "http://127.9.9.9",
            "http://localhost:3000/",
            "http://[::1]:3000",
        ] {
            assert!(Api::with_key(ok, "k").is_ok(), "{ok}");
        }
        for bad in [
            "http://warden.example.com",
            "http://10.0.0.5:3000",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "ftp://127.0.0.1",
            "http://[::2]",
        ] {
            let e = Api::with_key(bad, "k").err().expect(bad).to_string();
            assert!(e.contains("https://"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_origin_of_a_url_is_its_scheme_host_and_port() {
        assert_eq!(origin_of("http://127.0.0.1:3000/"), "http://127.0.0.1:3000");
        assert_eq!(origin_of("https://w.example/base"), "https://w.example");
    }
}
