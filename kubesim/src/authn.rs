//! Authentication (client certificates, static tokens, service-account tokens) and
//! impersonation, in kube-apiserver's order.

use std::collections::BTreeMap;

use base64::Engine;
use http::HeaderMap;
use serde_json::{json, Value};

use crate::core::Core;
use crate::error::{ApiResult, Status};
use crate::rbac::{self, Attributes, UserInfo};
use crate::store::db::Key;
use crate::tokens::ISSUER;

/// The audiences the API server accepts.
pub const API_AUDIENCES: &[&str] = &[ISSUER];

const WS_BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// The bearer token of a request (Authorization header or WebSocket subprotocol).
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = v.splitn(2, ' ');
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            let t = parts.next().unwrap_or("").trim();
            if !t.is_empty() {
                return Some(t.to_string());
            }
        }
    }
    for v in headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
        for p in v.to_str().unwrap_or("").split(',') {
            if let Some(enc) = p.trim().strip_prefix(WS_BEARER_PREFIX) {
                if let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(enc.trim_end_matches('='))
                {
                    if let Ok(s) = String::from_utf8(raw) {
                        return Some(s);
                    }
                }
            }
        }
    }
    None
}

/// Who is calling: a verified client certificate wins, then a bearer token; no credential
/// is `system:anonymous`. A bad token is 401.
pub fn authenticate(
    core: &Core,
    cert: Option<&(String, Vec<String>)>,
    headers: &HeaderMap,
) -> ApiResult<UserInfo> {
    if let Some((cn, groups)) = cert {
        let g: Vec<&str> = groups.iter().map(String::as_str).collect();
        return Ok(UserInfo::new(cn, &g));
    }
    match bearer_token(headers) {
        Some(t) => authenticate_token(core, &t, API_AUDIENCES)
            .map(|(u, _)| u)
            .map_err(|_| Status::unauthorized()),
        None => Ok(UserInfo::anonymous()),
    }
}

/// Validate a bearer token against the accepted audiences.
pub fn authenticate_token(
    core: &Core,
    token: &str,
    audiences: &[&str],
) -> Result<(UserInfo, Vec<String>), String> {
    if token == core.admin_token {
        return Ok((
            UserInfo::new("kubesim-admin", &["system:masters"]),
            audiences.iter().map(|s| s.to_string()).collect(),
        ));
    }
    if let Some(u) = core
        .static_tokens
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(token)
    {
        return Ok((u.clone(), audiences.iter().map(|s| s.to_string()).collect()));
    }
    let claims = core.signer.verify(token).ok_or("invalid bearer token")?;
    validate_sa_claims(core, &claims, audiences)
}

fn validate_sa_claims(
    core: &Core,
    c: &Value,
    audiences: &[&str],
) -> Result<(UserInfo, Vec<String>), String> {
    if c.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("invalid issuer".into());
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = c.get("exp").and_then(Value::as_i64).ok_or("no exp")?;
    if now >= exp {
        return Err("service account token has expired".into());
    }
    if c.get("nbf")
        .and_then(Value::as_i64)
        .is_some_and(|nbf| now < nbf)
    {
        return Err("token not valid yet".into());
    }
    let token_aud: Vec<String> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let matched: Vec<String> = token_aud
        .iter()
        .filter(|a| audiences.contains(&a.as_str()))
        .cloned()
        .collect();
    if matched.is_empty() {
        return Err("token audiences do not match".into());
    }
    let k = c.get("kubernetes.io").ok_or("no kubernetes.io claim")?;
    let ns = k
        .get("namespace")
        .and_then(Value::as_str)
        .ok_or("no namespace")?;
    let sa_name = k
        .pointer("/serviceaccount/name")
        .and_then(Value::as_str)
        .ok_or("no sa")?;
    let sa_uid = k
        .pointer("/serviceaccount/uid")
        .and_then(Value::as_str)
        .ok_or("no sa uid")?;
    let sa = core
        .db
        .get(&Key::new("serviceaccounts", ns, sa_name))
        .ok_or("service account deleted")?;
    if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(sa_uid) {
        return Err("service account UID does not match".into());
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, res, scoped) in [
        ("pod", "pods", true),
        ("secret", "secrets", true),
        ("node", "nodes", false),
    ] {
        if let Some(b) = k.get(kind) {
            let name = b.get("name").and_then(Value::as_str).unwrap_or("");
            let uid = b.get("uid").and_then(Value::as_str).unwrap_or("");
            let obj = core
                .db
                .get(&Key::new(res, if scoped { ns } else { "" }, name))
                .ok_or_else(|| format!("{kind} bound to the token was deleted"))?;
            if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return Err(format!("{kind} bound to the token has a different UID"));
            }
            if kind != "secret" {
                extra.insert(
                    format!("authentication.kubernetes.io/{kind}-name"),
                    vec![name.to_string()],
                );
                extra.insert(
                    format!("authentication.kubernetes.io/{kind}-uid"),
                    vec![uid.to_string()],
                );
            }
        }
    }
    if let Some(jti) = c.get("jti").and_then(Value::as_str) {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={jti}")],
        );
    }
    Ok((
        UserInfo {
            name: format!("system:serviceaccount:{ns}:{sa_name}"),
            uid: sa_uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
            extra,
        },
        matched,
    ))
}

/// A bound object reference for a TokenRequest.
#[derive(Debug, Clone)]
pub struct BoundObject {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// Issue a service-account token (TokenRequest). Returns the token and its expiry (unix).
pub fn issue_sa_token(
    core: &Core,
    ns: &str,
    sa_name: &str,
    audiences: &[String],
    expiration_seconds: i64,
    bound: Option<&BoundObject>,
) -> ApiResult<(String, i64)> {
    let sa_res = crate::resources::lookup("", "v1", "serviceaccounts")
        .ok_or_else(|| Status::internal("no sa resource"))?;
    let sa = core.get(sa_res, ns, sa_name)?;
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = now + expiration_seconds;
    let jti = uuid::Uuid::new_v4().to_string();
    let aud: Vec<String> = if audiences.is_empty() {
        API_AUDIENCES.iter().map(|s| s.to_string()).collect()
    } else {
        audiences.to_vec()
    };
    let mut k = json!({
        "namespace": ns,
        "serviceaccount": {"name": sa_name, "uid": sa_uid},
    });
    if let Some(b) = bound {
        let key = b.kind.to_lowercase();
        k[key] = json!({"name": b.name, "uid": b.uid});
    }
    let claims = json!({
        "aud": aud,
        "exp": exp,
        "iat": now,
        "iss": ISSUER,
        "jti": jti,
        "kubernetes.io": k,
        "nbf": now,
        "sub": format!("system:serviceaccount:{ns}:{sa_name}"),
    });
    let token = core.signer.sign(&claims).map_err(Status::internal)?;
    Ok((token, exp))
}

/// The namespace and name of a service account's username (`serviceaccount.SplitUsername`):
/// exactly `system:serviceaccount:<namespace>:<name>` with a valid namespace (a DNS label) and
/// service-account name (a DNS subdomain). Any other name, `system:serviceaccount:x` or
/// `system:serviceaccount:a:b:c` included, is a plain user's, so impersonating it takes
/// `impersonate` on `users`, not the narrower grant on `serviceaccounts`.
fn split_service_account_username(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("system:serviceaccount:")?;
    let mut parts = rest.split(':');
    let (ns, sa) = (parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !crate::validate::is_dns1123_label(ns)
        || !crate::validate::is_dns1123_subdomain(sa)
    {
        return None;
    }
    Some((ns, sa))
}

/// Apply `Impersonate-*` headers: every requested identity needs the `impersonate` verb.
pub fn impersonate(core: &Core, user: UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let name = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let uid = headers
        .get("impersonate-uid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers.iter() {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-") {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .to_string();
            if let Ok(v) = v.to_str() {
                extra.entry(key).or_default().push(v.to_string());
            }
        }
    }
    if name.is_none() && groups.is_empty() && uid.is_none() && extra.is_empty() {
        return Ok(user);
    }
    let Some(name) = name else {
        return Err(Status::internal_msg(format!(
            "requested [{}] without impersonating a user",
            groups
                .iter()
                .map(|g| format!("{{Group  {g}  }}"))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    };
    let check = |a: Attributes| -> ApiResult<()> {
        if rbac::authorize(&core.db, &user, &a).allowed {
            Ok(())
        } else {
            Err(Status::forbidden(
                &a.api_group,
                &a.resource,
                &a.name,
                &a.forbidden_message(&user.name),
            ))
        }
    };
    let mut new_groups = groups.clone();
    if let Some((ns, sa)) = split_service_account_username(&name) {
        check(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            "",
            ns,
            sa,
        ))?;
        if groups.is_empty() {
            new_groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
    } else {
        check(Attributes::resource(
            "impersonate",
            "",
            "users",
            "",
            "",
            &name,
        ))?;
    }
    for g in &groups {
        check(Attributes::resource("impersonate", "", "groups", "", "", g))?;
    }
    if let Some(u) = &uid {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            "",
            u,
        ))?;
    }
    for (k, vs) in &extra {
        for v in vs {
            check(Attributes::resource(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                k,
                "",
                v,
            ))?;
        }
    }
    if name == "system:anonymous" {
        if !new_groups.iter().any(|g| g == "system:unauthenticated") {
            new_groups.push("system:unauthenticated".into());
        }
    } else if !new_groups
        .iter()
        .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
    {
        new_groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name,
        uid: uid.unwrap_or_default(),
        groups: new_groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::split_service_account_username as split;

    #[test]
    fn service_account_usernames_split_only_when_valid() {
        assert_eq!(
            split("system:serviceaccount:default:robot"),
            Some(("default", "robot"))
        );
        assert_eq!(
            split("system:serviceaccount:kube-system:a.b"),
            Some(("kube-system", "a.b"))
        );
        for name in [
            "robot",
            "system:serviceaccount:",
            "system:serviceaccount:x",
            "system:serviceaccount::robot",
            "system:serviceaccount:default:",
            "system:serviceaccount:ns:a:b",
            "system:serviceaccount:Default:robot",
            "system:serviceaccount:a.b:robot",
            "system:serviceaccount:default:Robot",
        ] {
            assert_eq!(split(name), None, "{name}");
        }
    }
}
