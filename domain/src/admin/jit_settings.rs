//! The organization's just-in-time settings: roles that must be bound with an expiry (and its
//! maximum), how long a pending access request lives, two approvals for write roles, and the
//! webhook that hears about requests. One row; defaults when absent.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, Set,
};
use serde_json::json;
use std::collections::BTreeMap;

use crate::access::{Action, Principal};
use crate::clock::Timestamp;
use crate::dto::{JitSettingsDto, RequiredExpiry, UpdateJitSettingsRequest};
use crate::entities::{bindings, cluster_shares, clusters, jit_settings, roles};
use crate::error::{DomainError, DomainResult};
use crate::permissions::Permission;
use crate::types::LabelSelector;
use crate::Services;

const ROW: i32 = 1;
/// A pending request lapses after a day unless the organization says otherwise.
pub const DEFAULT_REQUEST_TTL_SECS: i64 = 24 * 3600;

pub async fn load<C: sea_orm::ConnectionTrait>(db: &C) -> DomainResult<JitSettingsDto> {
    Ok(match jit_settings::Entity::find_by_id(ROW).one(db).await? {
        Some(m) => JitSettingsDto {
            required_expiry: serde_json::from_str(&m.required_expiry).unwrap_or_default(),
            request_ttl_secs: m.request_ttl_secs,
            two_approvals_for_write: m.two_approvals_for_write,
            webhook_url: m.webhook_url,
            break_glass_roles: serde_json::from_str(&m.break_glass).unwrap_or_default(),
            webhook_signing_secret: None,
        },
        None => JitSettingsDto {
            required_expiry: vec![],
            request_ttl_secs: DEFAULT_REQUEST_TTL_SECS,
            two_approvals_for_write: false,
            webhook_url: None,
            break_glass_roles: vec![],
            webhook_signing_secret: None,
        },
    })
}

/// What the webhook URL is sealed for (its path is often its credential: a Slack-style hook).
const WEBHOOK_PURPOSE: &str = "jit_settings.webhook_url";

/// [`load`], with the webhook URL opened (it is sealed at rest).
pub async fn load_open<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    db: &C,
) -> DomainResult<JitSettingsDto> {
    let mut s = load(db).await?;
    if let Some(url) = s.webhook_url.take() {
        s.webhook_url = Some(open_webhook(svc, &url)?);
    }
    Ok(s)
}

fn open_webhook(svc: &Services, stored: &str) -> DomainResult<String> {
    if !crate::secrets::Sealer::is_sealed(stored) {
        return Ok(stored.to_owned());
    }
    let plain = svc
        .sso
        .sealer()
        .ok_or_else(|| DomainError::Internal("the webhook URL is sealed and no key is set".into()))?
        .open(WEBHOOK_PURPOSE, stored)
        .map_err(|e| DomainError::Internal(format!("the webhook URL cannot be opened: {e}")))?;
    String::from_utf8(plain)
        .map_err(|_| DomainError::Internal("the webhook URL is not text".into()))
}

fn seal_webhook(svc: &Services, url: Option<&str>) -> Option<String> {
    url.map(|u| match svc.sso.sealer() {
        Some(s) => s.seal(WEBHOOK_PURPOSE, u.as_bytes()),
        None => u.to_owned(),
    })
}

/// Seal a webhook URL an older Warden stored plain (at start).
pub async fn seal_plaintext(svc: &Services) -> DomainResult<u64> {
    if svc.sso.sealer().is_none() {
        return Ok(0);
    }
    let Some(m) = jit_settings::Entity::find_by_id(ROW).one(&svc.db).await? else {
        return Ok(0);
    };
    match &m.webhook_url {
        Some(url) if !crate::secrets::Sealer::is_sealed(url) => {
            let n = jit_settings::Entity::update_many()
                .col_expr(
                    jit_settings::Column::WebhookUrl,
                    sea_orm::sea_query::Expr::value(seal_webhook(svc, Some(url))),
                )
                .filter(jit_settings::Column::Id.eq(ROW))
                .filter(jit_settings::Column::WebhookUrl.eq(url.clone()))
                .exec(&svc.db)
                .await?
                .rows_affected;
            Ok(n)
        }
        _ => Ok(0),
    }
}

/// The clusters a binding in `project_id` reaches (owned or shared), or every cluster for an
/// organization binding (`None`): name and labels.
async fn clusters_reached<C: ConnectionTrait>(
    db: &C,
    project_id: Option<&str>,
) -> DomainResult<Vec<(String, BTreeMap<String, String>)>> {
    let rows = match project_id {
        None => clusters::Entity::find().all(db).await?,
        Some(p) => {
            let shared: Vec<String> = cluster_shares::Entity::find()
                .filter(cluster_shares::Column::ProjectId.eq(p))
                .all(db)
                .await?
                .into_iter()
                .map(|s| s.cluster_id)
                .collect();
            clusters::Entity::find()
                .filter(
                    Condition::any()
                        .add(clusters::Column::ProjectId.eq(p))
                        .add(clusters::Column::Id.is_in(shared)),
                )
                .all(db)
                .await?
        }
    };
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|c| (c.name, serde_json::from_str(&c.labels).unwrap_or_default()))
        .collect();
    out.sort();
    Ok(out)
}

/// The selectors of required-expiry rules that match a cluster labelled `before` and not one
/// labelled `after`: a relabelling that takes the cluster out of the organization's rule.
pub async fn selectors_left<C: ConnectionTrait>(
    db: &C,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> DomainResult<Vec<String>> {
    let s = load(db).await?;
    let mut out: Vec<String> = s
        .required_expiry
        .iter()
        .filter_map(|r| r.cluster_selector.as_deref())
        .filter(|sel| match LabelSelector::parse(sel) {
            Ok(sel) => sel.matches(before) && !sel.matches(after),
            // A stored selector that no longer parses matches every cluster: never left.
            Err(_) => false,
        })
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The strictest rule of `settings` that applies to a binding of `role` in `project_id`
/// (`None`: organization scope), with the cluster that makes it apply (none for a rule without
/// a selector).
async fn applicable_rule<C: ConnectionTrait>(
    db: &C,
    settings: &JitSettingsDto,
    role: &str,
    project_id: Option<&str>,
) -> DomainResult<Option<(RequiredExpiry, Option<String>)>> {
    let mut reached: Option<Vec<(String, BTreeMap<String, String>)>> = None;
    let mut best: Option<(RequiredExpiry, Option<String>)> = None;
    for rule in settings
        .required_expiry
        .iter()
        .filter(|r| r.role.eq_ignore_ascii_case(role))
    {
        let cluster = match rule.cluster_selector.as_deref() {
            None => None,
            Some(sel) => {
                // A stored selector was validated when saved; one that no longer parses
                // matches every cluster (fail closed).
                let sel = LabelSelector::parse(sel).ok();
                if reached.is_none() {
                    reached = Some(clusters_reached(db, project_id).await?);
                }
                let hit = reached
                    .as_ref()
                    .into_iter()
                    .flatten()
                    .find(|(_, labels)| sel.as_ref().is_none_or(|s| s.matches(labels)));
                match hit {
                    Some((name, _)) => Some(name.clone()),
                    None => continue,
                }
            }
        };
        if best
            .as_ref()
            .is_none_or(|(b, _)| rule.max_secs < b.max_secs)
        {
            best = Some((rule.clone(), cluster));
        }
    }
    Ok(best)
}

/// Why a binding of `role` in `project_id` (`None`: organization scope) ending at
/// `expires_at` breaks the organization's required-expiry policy, if it does.
pub async fn required_expiry_violation<C: ConnectionTrait>(
    db: &C,
    settings: &JitSettingsDto,
    role: &str,
    project_id: Option<&str>,
    expires_at: Option<i64>,
    now: Timestamp,
) -> DomainResult<Option<String>> {
    let Some((rule, cluster)) = applicable_rule(db, settings, role, project_id).await? else {
        return Ok(None);
    };
    let max = crate::dto::jit_duration(rule.max_secs);
    let where_ = match (&rule.cluster_selector, cluster) {
        (Some(sel), Some(c)) => format!(" where it reaches a cluster matching {sel} ({c})"),
        _ => String::new(),
    };
    Ok(match expires_at {
        None => Some(format!(
            "the organization requires an expiry for role {role}{where_} (at most {max})"
        )),
        Some(t) if t - now.millis() > rule.max_secs * 1000 + 1000 => Some(format!(
            "role {role} may be granted for at most {max}{where_}"
        )),
        Some(_) => None,
    })
}

/// The longest `role` may be granted for in `project_id` under the organization's
/// required-expiry rules (`None`: no rule applies), without saying which rule or cluster made
/// it apply: what a requester, who may not read the settings or see the project's clusters,
/// is told.
pub async fn requestable_max_secs<C: ConnectionTrait>(
    db: &C,
    role: &str,
    project_id: &str,
) -> DomainResult<Option<i64>> {
    let s = load(db).await?;
    Ok(applicable_rule(db, &s, role, Some(project_id))
        .await?
        .map(|(rule, _)| rule.max_secs))
}

/// `Ok(Err(message))` when the organization requires an expiry for `role` in `project_id`
/// and `expires_at` is missing or beyond the maximum.
pub async fn check_required_expiry<C: ConnectionTrait>(
    db: &C,
    role: &str,
    project_id: Option<&str>,
    expires_at: Option<i64>,
    now: Timestamp,
) -> DomainResult<Result<(), String>> {
    let s = load(db).await?;
    Ok(
        match required_expiry_violation(db, &s, role, project_id, expires_at, now).await? {
            Some(m) => Err(m),
            None => Ok(()),
        },
    )
}

/// Live bindings that break `settings`' required-expiry policy as the database stands (inside
/// the caller's transaction): binding id -> description and why.
pub async fn violations<C: ConnectionTrait>(
    db: &C,
    settings: &JitSettingsDto,
    now: Timestamp,
) -> DomainResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if settings.required_expiry.is_empty() {
        return Ok(out);
    }
    let role_ids: Vec<String> = roles::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .filter(|r| {
            settings
                .required_expiry
                .iter()
                .any(|x| x.role.eq_ignore_ascii_case(&r.name))
        })
        .map(|r| r.id)
        .collect();
    let rows = bindings::Entity::find()
        .filter(bindings::Column::RoleId.is_in(role_ids))
        .filter(super::bindings::live(now))
        .all(db)
        .await?;
    if rows.is_empty() {
        return Ok(out);
    }
    let names = super::bindings::Names::load(db, &rows).await?;
    for b in rows {
        let dto = names.dto(&b);
        if let Some(why) = required_expiry_violation(
            db,
            settings,
            &dto.role,
            b.project_id.as_deref(),
            b.expires_at,
            now,
        )
        .await?
        {
            let held = match b.expires_at {
                None => "without an expiry".to_owned(),
                Some(t) => format!("until {}", Timestamp(t).rfc3339()),
            };
            out.insert(
                b.id.clone(),
                format!(
                    "{} {held} (binding {}): {why}",
                    super::bindings::describe(&dto),
                    b.id
                ),
            );
        }
    }
    Ok(out)
}

/// The fail-closed guard for changes that bring clusters into projects (a cluster imported,
/// shared, moved or labelled): `before` are the violations before the change, taken in the same
/// transaction; standing bindings that the change would newly put beyond the policy refuse it,
/// naming them (`Conflict` on `field`).
pub async fn refuse_new_violations<C: ConnectionTrait>(
    db: &C,
    before: &BTreeMap<String, String>,
    now: Timestamp,
    field: &str,
) -> DomainResult<()> {
    let s = load(db).await?;
    let after = violations(db, &s, now).await?;
    let new: Vec<&String> = after
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .map(|(_, d)| d)
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    Err(DomainError::conflict(
        field,
        format!(
            "refused: the organization requires an expiry for these roles on the matching clusters, and this change would bring them under that rule while these bindings stand beyond it; give them an expiry within the maximum or remove them first: {}",
            new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        ),
    ))
}

/// The violations as the policy stands now, for [`refuse_new_violations`].
pub async fn current_violations<C: ConnectionTrait>(
    db: &C,
    now: Timestamp,
) -> DomainResult<BTreeMap<String, String>> {
    let s = load(db).await?;
    violations(db, &s, now).await
}

/// A webhook URL as shown and audited: its scheme and host, the rest masked. The path of a
/// Slack-style hook *is* its credential: whoever reads it can post as Warden.
pub fn redact_webhook(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return "***".to_owned();
    };
    let rest = &url[s + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{}://{host}/***", &url[..s])
}

fn redacted(mut s: JitSettingsDto) -> JitSettingsDto {
    s.webhook_url = s.webhook_url.as_deref().map(redact_webhook);
    s.webhook_signing_secret = None;
    s
}

/// The key Warden signs deliveries to webhook `url` with: `whsec_` and 32 bytes in base64
/// (Standard Webhooks), derived from the master key and the URL, so a new URL (or a new query
/// token in it) has a new key. `None` without a master key: deliveries then go unsigned.
pub fn webhook_signing_secret(svc: &Services, url: &str) -> Option<String> {
    use base64::Engine;
    let mac = svc
        .at_rest()?
        .mac("jit_settings.webhook_signing", url.as_bytes());
    let raw = hex::decode(mac).ok()?;
    Some(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// The `webhook-signature` header of a delivery (Standard Webhooks `v1`): HMAC-SHA256 with the
/// secret's key over `{id}.{timestamp}.{body}`, in base64.
pub fn webhook_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_")?).ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(format!("{id}.{timestamp}.").as_bytes());
    ctx.update(body);
    Some(format!("v1,{}", b64.encode(ctx.sign().as_ref())))
}

/// The first safeguard `after` loosens compared with `before`, if any: the second approval
/// turned off, an expiry rule removed, lengthened or narrowed to other clusters, the webhook
/// (where alerts go) changed or cleared, or requests left pending for longer.
fn loosened(before: &JitSettingsDto, after: &JitSettingsDto) -> Option<&'static str> {
    if before.two_approvals_for_write && !after.two_approvals_for_write {
        return Some("two_approvals_for_write");
    }
    let kept = |b: &RequiredExpiry| {
        after.required_expiry.iter().any(|r| {
            r.role == b.role && r.cluster_selector == b.cluster_selector && r.max_secs <= b.max_secs
        })
    };
    if !before.required_expiry.iter().all(kept) {
        return Some("required_expiry");
    }
    if before.webhook_url.is_some() && after.webhook_url != before.webhook_url {
        return Some("webhook_url");
    }
    if after.request_ttl_secs > before.request_ttl_secs {
        return Some("request_ttl_secs");
    }
    None
}

pub async fn get(svc: &Services, who: &Principal) -> DomainResult<JitSettingsDto> {
    svc.gate(who, Action::org(Permission::SettingsRead)).await?;
    Ok(redacted(load_open(svc, &svc.db).await?))
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    req: UpdateJitSettingsRequest,
) -> DomainResult<JitSettingsDto> {
    svc.gate(who, Action::org(Permission::SettingsWrite))
        .await?;
    let before = load_open(svc, &svc.db).await?;
    let mut s = before.clone();
    let mut fields = std::collections::BTreeMap::new();
    if let Some(rules) = req.required_expiry {
        s.required_expiry = role_rules(svc, rules, "required_expiry", &mut fields).await?;
    }
    if let Some(rules) = req.break_glass_roles {
        s.break_glass_roles = role_rules(svc, rules, "break_glass_roles", &mut fields).await?;
        if s.break_glass_roles
            .iter()
            .any(|r| r.max_secs > MAX_BREAK_GLASS_SECS)
        {
            fields.insert(
                "break_glass_roles".to_owned(),
                "break-glass access lasts at most a day".to_owned(),
            );
        }
    }
    if let Some(v) = req.request_ttl_secs {
        if !(60..=30 * 24 * 3600).contains(&v) {
            fields.insert(
                "request_ttl_secs".to_owned(),
                "must be between 60 and 30 days".to_owned(),
            );
        }
        s.request_ttl_secs = v;
    }
    if let Some(v) = req.two_approvals_for_write {
        s.two_approvals_for_write = v;
    }
    let mut named_webhook = false;
    if let Some(url) = req.webhook_url {
        let url = url.trim().to_owned();
        if before
            .webhook_url
            .as_deref()
            .is_some_and(|old| redact_webhook(old) == url)
        {
            // The masked value shown, sent back unchanged: the stored URL stays.
        } else if url.is_empty() {
            s.webhook_url = None;
        } else if let Some(why) = svc.jit.networks().problem(&url) {
            fields.insert("webhook_url".to_owned(), why.to_owned());
        } else {
            // Named in full (not the masked value shown): its signing key is shown with the
            // answer, to whoever could name it.
            named_webhook = true;
            s.webhook_url = Some(url);
        }
    }
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    // Loosening a safeguard (the two-person rule, an expiry cap, where alerts go, how long a
    // request waits) takes holding everything, as the organization's laxer sign-in rules do:
    // else `settings.write` alone could switch the second approval off, approve an
    // accomplice's request alone and switch it back on. Stricter ones stay settings.write's.
    if let Some(field) = loosened(&before, &s) {
        super::bindings::refuse_unless_everything_held(
            svc,
            who,
            "loosening just-in-time access's safeguards lets requests through that they stop",
            "settings.jit.update",
            "settings",
            field,
        )
        .await?;
    }
    // A break-glass role is taken without approval on any project: making one is handing it out
    // everywhere, so it takes holding what it grants organization-wide (else `settings.write`
    // alone would make PROJECT_ADMIN everyone's for the asking, the caller's first).
    let mut handouts = Vec::new();
    for r in &s.break_glass_roles {
        // A rule already there, no longer than it was, hands out nothing new; a longer one
        // hands the role out for longer, as a new rule would.
        if before
            .break_glass_roles
            .iter()
            .any(|b| b.role == r.role && r.max_secs <= b.max_secs)
        {
            continue;
        }
        let role = super::roles::find(&svc.db, &r.role).await?;
        handouts.push(super::bindings::Handout::break_glass(
            &role.name,
            super::bindings::granted_by(&role),
        ));
    }
    super::bindings::refuse_escalation(
        svc,
        who,
        &handouts,
        "settings.jit.update",
        "settings",
        "break_glass_roles",
    )
    .await?;
    let now = svc.clock.now().millis();
    let rules = serde_json::to_string(&s.required_expiry).unwrap_or_else(|_| "[]".into());
    let glass = serde_json::to_string(&s.break_glass_roles).unwrap_or_else(|_| "[]".into());
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Fail closed: a rule that standing bindings already break is refused, naming them, rather
    // than saved as a promise the bindings do not keep.
    let already = violations(&tx, &before, svc.clock.now()).await?;
    let broken: Vec<String> = violations(&tx, &s, svc.clock.now())
        .await?
        .into_iter()
        .filter(|(id, _)| !already.contains_key(id))
        .map(|(_, d)| d)
        .collect();
    if !broken.is_empty() {
        return Err(DomainError::conflict(
            "required_expiry",
            format!(
                "refused: standing bindings break this rule; give them an expiry within the maximum or remove them first: {}",
                broken.join("; ")
            ),
        ));
    }
    match jit_settings::Entity::find_by_id(ROW).one(&tx).await? {
        Some(m) => {
            let mut a = m.into_active_model();
            a.required_expiry = Set(rules);
            a.request_ttl_secs = Set(s.request_ttl_secs);
            a.two_approvals_for_write = Set(s.two_approvals_for_write);
            a.webhook_url = Set(seal_webhook(svc, s.webhook_url.as_deref()));
            a.break_glass = Set(glass);
            a.updated_at = Set(now);
            a.update(&tx).await?;
        }
        None => {
            jit_settings::ActiveModel::from(jit_settings::Model {
                id: ROW,
                required_expiry: rules,
                request_ttl_secs: s.request_ttl_secs,
                two_approvals_for_write: s.two_approvals_for_write,
                webhook_url: seal_webhook(svc, s.webhook_url.as_deref()),
                break_glass: glass,
                updated_at: now,
            })
            .insert(&tx)
            .await?;
        }
    }
    svc.audit_change(
        &tx,
        who,
        "settings.jit.update",
        "settings",
        "just-in-time access",
        None,
        Some(json!(redacted(before))),
        Some(json!(redacted(s.clone()))),
    )
    .await?;
    tx.commit().await?;
    let signing = named_webhook
        .then(|| {
            s.webhook_url
                .as_deref()
                .and_then(|u| webhook_signing_secret(svc, u))
        })
        .flatten();
    let mut out = redacted(s);
    out.webhook_signing_secret = signing;
    Ok(out)
}

/// Break-glass access lasts at most this long.
pub const MAX_BREAK_GLASS_SECS: i64 = 24 * 3600;

/// Role rules (`{"role", "max_secs"}`) with their roles resolved to their canonical names; bad
/// ones are reported under `field`.
async fn role_rules(
    svc: &Services,
    rules: Vec<RequiredExpiry>,
    field: &str,
    fields: &mut std::collections::BTreeMap<String, String>,
) -> DomainResult<Vec<RequiredExpiry>> {
    let mut out: Vec<RequiredExpiry> = Vec::new();
    for r in rules {
        let selector = match r
            .cluster_selector
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(_) if field != "required_expiry" => {
                fields.insert(
                    field.to_owned(),
                    "a cluster selector applies to required expiry only".to_owned(),
                );
                continue;
            }
            Some(raw) => match LabelSelector::parse(raw) {
                Ok(sel) => Some(sel.to_string()),
                Err(e) => {
                    fields.insert(
                        field.to_owned(),
                        format!("cluster selector {raw:?} of role {}: {e}", r.role.trim()),
                    );
                    continue;
                }
            },
        };
        match super::roles::find(&svc.db, r.role.trim()).await {
            Ok(role) if (60..=super::bindings::MAX_EXPIRY_SECS).contains(&r.max_secs) => {
                out.retain(|o| !(o.role == role.name && o.cluster_selector == selector));
                out.push(RequiredExpiry {
                    role: role.name,
                    max_secs: r.max_secs,
                    cluster_selector: selector,
                });
            }
            Ok(_) => {
                fields.insert(
                    field.to_owned(),
                    "max_secs must be between 60 and a year".to_owned(),
                );
            }
            Err(DomainError::NotFound { .. }) => {
                fields.insert(field.to_owned(), format!("no role named {:?}", r.role));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_urls_show_scheme_and_host_only() {
        assert_eq!(
            super::redact_webhook("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            super::redact_webhook("https://user:pw@example.com:8443?token=abc"),
            "https://example.com:8443/***"
        );
        assert_eq!(super::redact_webhook("http://h"), "http://h/***");
    }
}

/// What is wrong with a webhook URL, if anything. Warden posts every access request there,
/// from inside the network it runs in, so a settings writer must not aim it at what only that
/// network reaches in the clear: `https://` (plain `http://` only to a loopback address, as
/// the SIEM stream's webhook), and never a link-local address or a cloud's metadata host (the
/// instance's credentials). Deliveries follow no redirect either (`server::jit`).
pub fn webhook_url_problem(url: &str) -> Option<&'static str> {
    use std::net::IpAddr;
    if url.len() > 2000 {
        return Some("must be at most 2000 characters");
    }
    let Ok(u) = openidconnect::url::Url::parse(url) else {
        return Some("must be an https:// URL");
    };
    let ip = match u.host() {
        Some(openidconnect::url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(openidconnect::url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        Some(openidconnect::url::Host::Domain(_)) => None,
        None => return Some("must be an https:// URL"),
    };
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    let loopback = host == "localhost" || ip.is_some_and(|ip| ip.is_loopback());
    let link_local = match ip {
        Some(IpAddr::V4(a)) => a.is_link_local() || a.is_unspecified(),
        Some(IpAddr::V6(a)) => {
            (a.segments()[0] & 0xffc0) == 0xfe80
                || a.is_unspecified()
                || a.to_ipv4_mapped().is_some_and(|m| m.is_link_local())
        }
        None => false,
    };
    if link_local || host == "metadata.google.internal" || host == "metadata" {
        return Some("must not be a link-local address or a cloud metadata host");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some("must not carry a user name or password (put a token in the path or query)");
    }
    match u.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some("must be https:// (plain http:// only to a loopback address)"),
        _ => Some("must be an https:// URL"),
    }
}

/// Where webhooks may be posted, by address (`WARDEN_WEBHOOK_ALLOWED_NETWORKS`). Public
/// addresses are; addresses of Warden's own networks (loopback, private, shared and reserved
/// ranges) only inside a network the operator listed, since a settings writer would otherwise
/// reach what only Warden's host or network reaches (its metrics, its replicas' port, the
/// cluster's services) and read the answers' statuses in the audit log; link-local, multicast
/// and unspecified addresses (a cloud's metadata service) never. The check is made on the URL
/// when it is set, and on every address its name resolves to when a delivery is posted
/// (`server::jit`), so a name that later resolves elsewhere does not get through either.
#[derive(Debug, Clone, Default)]
pub struct WebhookNetworks {
    allowed: std::sync::Arc<Vec<ipnet::IpNet>>,
}

impl WebhookNetworks {
    pub fn new(allowed: Vec<ipnet::IpNet>) -> Self {
        Self {
            allowed: std::sync::Arc::new(allowed),
        }
    }

    /// Why a webhook is not posted to `ip`, if it is not.
    pub fn refuses(&self, ip: std::net::IpAddr) -> Option<&'static str> {
        let ip = canonical_ip(ip);
        if never_posted_to(ip) {
            return Some(
                "is a link-local, multicast or unspecified address (where a cloud's metadata service answers)",
            );
        }
        if local_address(ip) && !self.allowed.iter().any(|n| n.contains(&ip)) {
            return Some(
                "is an address of Warden's own networks (loopback or private); the operator allows such receivers with WARDEN_WEBHOOK_ALLOWED_NETWORKS",
            );
        }
        None
    }

    /// What is wrong with a webhook URL, if anything: its form ([`webhook_url_problem`]), then
    /// its host's address when the URL names one ([`Self::url_problem`]).
    pub fn problem(&self, url: &str) -> Option<&'static str> {
        webhook_url_problem(url).or_else(|| self.url_problem(url))
    }

    /// Why a webhook URL's host is not posted to, judged on what the URL says (an address, or
    /// `localhost`); a name is judged on its addresses at each delivery.
    pub fn url_problem(&self, url: &str) -> Option<&'static str> {
        use std::net::{IpAddr, Ipv4Addr};
        let u = openidconnect::url::Url::parse(url).ok()?;
        let ip = match u.host()? {
            openidconnect::url::Host::Ipv4(a) => IpAddr::V4(a),
            openidconnect::url::Host::Ipv6(a) => IpAddr::V6(a),
            openidconnect::url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    return None;
                }
            }
        };
        self.refuses(ip)
    }
}

/// An IPv6 address that carries an IPv4 one (mapped, or NAT64's well-known prefix) is that
/// IPv4 address: it is where the packets go.
fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr};
    match ip {
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = a.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        v4 => v4,
    }
}

fn never_posted_to(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.octets()[0] == 0
        }
        std::net::IpAddr::V6(a) => {
            (a.segments()[0] & 0xffc0) == 0xfe80 || a.is_unspecified() || a.is_multicast()
        }
    }
}

fn local_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            let [o0, o1, o2, _] = a.octets();
            a.is_loopback()
                || a.is_private()
                || (o0 == 100 && (o1 & 0xc0) == 64) // shared address space (carrier NAT)
                || (o0 == 192 && o1 == 0 && o2 == 0) // IETF protocol assignments
                || (o0 == 198 && (o1 & 0xfe) == 18) // benchmarking
                || a.is_documentation()
                || o0 >= 240 // reserved
        }
        std::net::IpAddr::V6(a) => {
            let s0 = a.segments()[0];
            a.is_loopback()
                || (s0 & 0xfe00) == 0xfc00 // unique local
                || (s0 & 0xffc0) == 0xfec0 // site-local (deprecated, still routed somewhere)
                || (s0 == 0x2001 && a.segments()[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod webhook_url_tests {
    use super::webhook_url_problem;

    #[test]
    fn webhook_urls_stay_out_of_the_metadata_service_and_the_clear() {
        for ok in [
            "https://hooks.example.com/warden?token=x",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/hook",
        ] {
            assert_eq!(webhook_url_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://hooks.example.com/warden",
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254/",
            "https://[fe80::1]/",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://user:pw@hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://0.0.0.0/",
            "not a url",
        ] {
            assert!(webhook_url_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn webhook_networks_keep_out_of_wardens_own_unless_listed() {
        use super::WebhookNetworks;
        let none = WebhookNetworks::default();
        let some = WebhookNetworks::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
        ]);
        for (url, closed, listed) in [
            ("https://hooks.example.com/x", true, true),
            ("https://203.0.113.7/x", false, false), // documentation range
            ("https://8.8.8.8/x", true, true),
            ("https://[2606:4700::1111]/x", true, true),
            ("http://127.0.0.1:9/x", false, true),
            ("http://localhost:9/x", false, true),
            ("http://api.localhost:9/x", false, true),
            ("http://127.0.0.2:9/x", false, false),
            ("https://10.42.1.1/x", false, true),
            ("https://10.43.1.1/x", false, false),
            ("https://172.16.0.1/x", false, false),
            ("https://192.168.0.1/x", false, false),
            ("https://100.64.0.1/x", false, false),
            ("https://[::1]/x", false, false),
            ("https://[::ffff:127.0.0.1]/x", false, true),
            ("https://[::ffff:10.42.0.9]/x", false, true),
            ("https://[fd12::1]/x", false, false),
            ("https://[64:ff9b::7f00:1]/x", false, true),
        ] {
            assert_eq!(
                none.url_problem(url).is_none(),
                closed,
                "{url} without networks"
            );
            assert_eq!(
                some.url_problem(url).is_none(),
                listed,
                "{url} with networks"
            );
        }
        // Never, even when listed: the metadata service's link-local range, multicast, zero.
        let all = WebhookNetworks::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
        for url in [
            "https://169.254.169.254/",
            "https://[::ffff:169.254.169.254]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[fe80::1]/",
            "https://224.0.0.1/",
            "https://0.0.0.0/",
            "https://[::]/",
            "https://[ff02::1]/",
        ] {
            assert!(all.url_problem(url).is_some(), "{url}");
        }
    }
}
