//! Identity providers (OpenID Connect), as organization administrators manage them. The client
//! secret is write-only: sealed with the master key when one is set, never returned.

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::json;
use std::collections::BTreeMap;

use super::ts;
use crate::access::{Action, Principal};
use crate::bootstrap::ALL_USERS_GROUP;
use crate::dto::{
    CreateIdentityProviderRequest, GroupMappingMode, IdentityProviderDto, IdentityProviderTest,
    Page, UpdateIdentityProviderRequest,
};
use crate::entities::{groups, identity_providers};
use crate::error::{DomainError, DomainResult};
use crate::identity::sso::{self, Provider};
use crate::ids::TokenId;
use crate::permissions::Permission;
use crate::Services;

const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// When a provider stops vouching for its users (turned off, deleted, pointed at another
/// issuer), what it vouched for ends with it, in the change's transaction: the sessions of
/// everyone linked to it, and for those who had no other way in (no password, no other
/// provider) the API keys and kubeconfigs made through it. With `unlink`, the links go too
/// (a new issuer's subjects are not the old one's people). Returns what ended, for the audit.
async fn end_what_it_vouched_for<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    tx: &C,
    who: &Principal,
    provider_id: &str,
    unlink: bool,
) -> DomainResult<serde_json::Value> {
    use crate::entities::{user_identities, users};
    use sea_orm::{PaginatorTrait, QuerySelect};
    let linked: Vec<String> = user_identities::Entity::find()
        .select_only()
        .column(user_identities::Column::UserId)
        .filter(user_identities::Column::ProviderId.eq(provider_id.to_owned()))
        .into_tuple()
        .all(tx)
        .await?;
    let (mut ended, mut revoked) = (Vec::new(), Vec::new());
    for uid in linked
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let Some(u) = users::Entity::find_by_id(uid.clone()).one(tx).await? else {
            continue;
        };
        crate::identity::sessions::delete_user_sessions(
            tx,
            crate::identity::accounts::user_id(&u)?,
        )
        .await?;
        ended.push(u.email.clone());
        let other_links = user_identities::Entity::find()
            .filter(user_identities::Column::UserId.eq(uid.clone()))
            .filter(user_identities::Column::ProviderId.ne(provider_id.to_owned()))
            .count(tx)
            .await?;
        if u.password_hash.is_none() && other_links == 0 {
            crate::identity::users::revoke_credentials_in(svc, tx, who, &u).await?;
            revoked.push(u.email.clone());
        }
    }
    if unlink {
        user_identities::Entity::delete_many()
            .filter(user_identities::Column::ProviderId.eq(provider_id.to_owned()))
            .exec(tx)
            .await?;
    }
    Ok(json!({"sessions_ended": ended, "credentials_revoked": revoked, "unlinked": unlink}))
}

fn to_dto(svc: &Services, m: &identity_providers::Model) -> IdentityProviderDto {
    let p = Provider::from_model(m);
    IdentityProviderDto {
        id: m.id.clone(),
        name: m.name.clone(),
        display_name: m.display_name.clone(),
        issuer: m.issuer.clone(),
        client_id: m.client_id.clone(),
        client_secret_set: !m.client_secret.is_empty(),
        scopes: p.scopes,
        email_claim: m.email_claim.clone(),
        name_claim: m.name_claim.clone(),
        groups_claim: m.groups_claim.clone(),
        allowed_domains: p.allowed_domains,
        group_mapping_mode: GroupMappingMode::from_stored(&m.group_mapping_mode),
        group_mapping: match p.mapping {
            sso::GroupMapping::Explicit(t) => t,
            sso::GroupMapping::ByName => BTreeMap::new(),
        },
        auto_provision: m.auto_provision,
        link_existing_users: m.link_existing_users,
        enabled: m.enabled,
        trust_provider_mfa: m.trust_provider_mfa,
        callback_url: sso::callback_url(&svc.public_url, &m.name),
        created_at: ts(m.created_at),
        updated_at: ts(m.updated_at),
    }
}

async fn find(svc: &Services, name_or_id: &str) -> DomainResult<identity_providers::Model> {
    identity_providers::Entity::find()
        .filter(
            identity_providers::Column::Name
                .eq(name_or_id)
                .or(identity_providers::Column::Id.eq(name_or_id)),
        )
        .all(&svc.db)
        .await?
        .into_iter()
        // A name equal to another row's id (refused since, see `admin::refuse_id_shaped`) is
        // the name: the gate asked about the name as given.
        .min_by_key(|m| m.name != name_or_id)
        .ok_or_else(|| DomainError::not_found("identity provider"))
}

fn validate_name(raw: &str) -> DomainResult<String> {
    let n = raw.trim();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-');
    if !ok {
        return Err(DomainError::invalid(
            "name",
            "must be 1 to 64 lowercase letters, digits or dashes, not starting with a dash",
        ));
    }
    Ok(n.to_owned())
}

fn validate_text(field: &str, raw: &str, max: usize, may_be_empty: bool) -> DomainResult<String> {
    let s = raw.trim();
    if (!may_be_empty && s.is_empty()) || s.chars().count() > max || s.chars().any(char::is_control)
    {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be {} to {max} characters with no control characters",
                if may_be_empty { 0 } else { 1 }
            ),
        ));
    }
    Ok(s.to_owned())
}

/// `https://…`, or `http://` on a loopback host (development and tests).
fn validate_issuer(raw: &str) -> DomainResult<String> {
    let s = raw.trim().trim_end_matches('/');
    let bad = || {
        DomainError::invalid(
            "issuer",
            "must be an https:// URL (http:// only on 127.0.0.1 or localhost), without query or fragment",
        )
    };
    let url = openidconnect::url::Url::parse(s).map_err(|_| bad())?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.query().is_some() || url.fragment().is_some() || url.host().is_none() {
        return Err(bad());
    }
    Ok(s.to_owned())
}

fn validate_scopes(raw: Option<Vec<String>>) -> DomainResult<String> {
    let mut scopes: Vec<String> = match raw {
        Some(v) => v
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_owned)
            .collect(),
        None => DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    };
    if scopes.iter().any(|s| {
        s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    }) {
        return Err(DomainError::invalid(
            "scopes",
            "scopes are printable ASCII words",
        ));
    }
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".to_owned());
    }
    scopes.dedup();
    Ok(scopes.join(" "))
}

/// Seal the client secrets stored plain (by a Warden that had no key to seal them with).
/// Returns how many.
pub async fn seal_plaintext(svc: &Services) -> DomainResult<u64> {
    if svc.sso.sealer().is_none() {
        return Ok(0);
    }
    let mut n = 0;
    for m in identity_providers::Entity::find().all(&svc.db).await? {
        if m.client_secret.is_empty() || crate::secrets::Sealer::is_sealed(&m.client_secret) {
            continue;
        }
        identity_providers::Entity::update_many()
            .col_expr(
                identity_providers::Column::ClientSecret,
                sea_orm::sea_query::Expr::value(seal(svc, &m.id, &m.client_secret)),
            )
            .filter(identity_providers::Column::Id.eq(m.id.clone()))
            .filter(identity_providers::Column::ClientSecret.eq(m.client_secret.clone()))
            .exec(&svc.db)
            .await?;
        svc.sso.forget(&m.id);
        n += 1;
    }
    Ok(n)
}

fn validate_domains(raw: Vec<String>) -> DomainResult<String> {
    let mut out = Vec::new();
    for d in raw.iter().flat_map(|d| d.split([',', ' '])) {
        let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
        if d.is_empty() {
            continue;
        }
        let ok = d.len() <= 253
            && d.contains('.')
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !ok {
            return Err(DomainError::invalid(
                "allowed_domains",
                format!("{d} is not a domain name"),
            ));
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(serde_json::to_string(&out).unwrap_or_else(|_| "[]".into()))
}

async fn validate_mapping(
    svc: &Services,
    table: &BTreeMap<String, String>,
) -> DomainResult<String> {
    let names: Vec<String> = groups::Entity::find()
        .all(&svc.db)
        .await?
        .into_iter()
        .map(|g| g.name.to_lowercase())
        .collect();
    for (from, to) in table {
        if from.trim().is_empty() || from.len() > 256 {
            return Err(DomainError::invalid(
                "group_mapping",
                "a provider group name is empty or too long",
            ));
        }
        if to.eq_ignore_ascii_case(ALL_USERS_GROUP) {
            return Err(DomainError::invalid(
                "group_mapping",
                "every user is in All Users already; it cannot be mapped",
            ));
        }
        if !names.contains(&to.to_lowercase()) {
            return Err(DomainError::invalid(
                "group_mapping",
                format!("there is no Warden group named {to}"),
            ));
        }
    }
    Ok(serde_json::to_string(table).unwrap_or_else(|_| "{}".into()))
}

fn seal(svc: &Services, provider_id: &str, secret: &str) -> String {
    match svc.sso.sealer() {
        Some(s) => s.seal(&sso::secret_purpose(provider_id), secret.as_bytes()),
        None => secret.to_owned(),
    }
}

fn validate_secret(raw: &str) -> DomainResult<String> {
    if raw.is_empty() || raw.len() > 4096 || raw.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "client_secret",
            "must be 1 to 4096 characters",
        ));
    }
    Ok(raw.to_owned())
}

pub async fn list(svc: &Services, who: &Principal) -> DomainResult<Page<IdentityProviderDto>> {
    svc.gate(who, Action::org(Permission::IdpRead)).await?;
    let rows = identity_providers::Entity::find()
        .order_by_asc(identity_providers::Column::Name)
        .all(&svc.db)
        .await?;
    Ok(Page {
        items: rows.iter().map(|m| to_dto(svc, m)).collect(),
        next: None,
    })
}

pub async fn get(svc: &Services, who: &Principal, name: &str) -> DomainResult<IdentityProviderDto> {
    svc.gate(who, Action::org(Permission::IdpRead)).await?;
    Ok(to_dto(svc, &find(svc, name).await?))
}

/// An identity provider decides who signs in as whom: it links accounts by email, maps its
/// groups onto Warden's (the organization administrators' included) and may vouch for the
/// second factor. So changing one takes everything an organization-wide grant can carry, not
/// `idp.write` alone (no escalation through delegated administration). A refusal is audited.
async fn refuse_unless_all_held(
    svc: &Services,
    who: &Principal,
    action: &str,
    name: &str,
) -> DomainResult<()> {
    super::bindings::refuse_unless_everything_held(
        svc,
        who,
        "an identity provider decides who signs in as whom, groups and second factor included",
        action,
        "identity_provider",
        name,
    )
    .await
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateIdentityProviderRequest,
) -> DomainResult<IdentityProviderDto> {
    svc.gate(who, Action::org(Permission::IdpWrite)).await?;
    refuse_unless_all_held(svc, who, "identity_provider.create", req.name.trim()).await?;
    let name = validate_name(&req.name)?;
    let display_name = validate_text(
        "display_name",
        req.display_name.as_deref().unwrap_or(&name),
        128,
        false,
    )?;
    let issuer = validate_issuer(&req.issuer)?;
    let client_id = validate_text("client_id", &req.client_id, 512, false)?;
    let secret = validate_secret(&req.client_secret)?;
    let scopes = validate_scopes(req.scopes)?;
    let claim = |field: &str, v: Option<String>, default: &str, may_be_empty: bool| {
        validate_text(field, v.as_deref().unwrap_or(default), 128, may_be_empty)
    };
    let email_claim = claim("email_claim", req.email_claim, "email", false)?;
    let name_claim = claim("name_claim", req.name_claim, "name", false)?;
    let groups_claim = claim("groups_claim", req.groups_claim, "groups", true)?;
    let allowed_domains = validate_domains(req.allowed_domains.unwrap_or_default())?;
    let mode = req.group_mapping_mode.unwrap_or_default();
    let mapping = validate_mapping(svc, &req.group_mapping.unwrap_or_default()).await?;
    let conflict =
        || DomainError::conflict("name", "an identity provider with this name already exists");
    if identity_providers::Entity::find()
        .filter(identity_providers::Column::Name.eq(name.clone()))
        .one(&svc.db)
        .await?
        .is_some()
    {
        return Err(conflict());
    }
    let id = TokenId::new().to_string();
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = identity_providers::ActiveModel::from(identity_providers::Model {
        client_secret: seal(svc, &id, &secret),
        id,
        name,
        display_name,
        issuer,
        client_id,
        scopes,
        email_claim,
        name_claim,
        groups_claim,
        allowed_domains,
        group_mapping_mode: mode.as_str().to_owned(),
        group_mapping: mapping,
        auto_provision: req.auto_provision.unwrap_or(true),
        link_existing_users: req.link_existing_users.unwrap_or(false),
        enabled: req.enabled.unwrap_or(true),
        trust_provider_mfa: req.trust_provider_mfa.unwrap_or(false),
        created_at: now,
        updated_at: now,
    })
    .insert(&tx)
    .await
    // A concurrent create with the same name (SQLite names the column, PostgreSQL the index).
    .map_err(|e| {
        let text = e.to_string();
        if text.contains("uq_identity_providers_name") || text.contains("identity_providers.name") {
            conflict()
        } else {
            DomainError::Db(e)
        }
    })?;
    let dto = to_dto(svc, &m);
    svc.audit_change(
        &tx,
        who,
        "identity_provider.create",
        "identity_provider",
        &m.name,
        None,
        None,
        Some(json!(dto)),
    )
    .await?;
    tx.commit().await?;
    Ok(dto)
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    name: &str,
    req: UpdateIdentityProviderRequest,
) -> DomainResult<IdentityProviderDto> {
    svc.gate(who, Action::org(Permission::IdpWrite)).await?;
    let m = find(svc, name).await?;
    refuse_unless_all_held(svc, who, "identity_provider.update", &m.name).await?;
    let before = to_dto(svc, &m);
    let secret_changed = req.client_secret.as_deref().is_some_and(|s| !s.is_empty());
    let issuer_changed = match &req.issuer {
        Some(v) => validate_issuer(v)? != m.issuer,
        None => false,
    };
    // Another issuer is another provider: its client secret is its own (the stored one is
    // never sent to it), and the subjects it names are not the old one's people.
    if issuer_changed && !secret_changed {
        return Err(DomainError::invalid(
            "client_secret",
            "a new issuer needs the client secret it gave Warden: the stored secret is never sent to another issuer",
        ));
    }
    let mut a = m.clone().into_active_model();
    if let Some(v) = req.display_name {
        a.display_name = Set(validate_text("display_name", &v, 128, false)?);
    }
    if let Some(v) = req.issuer {
        a.issuer = Set(validate_issuer(&v)?);
    }
    if let Some(v) = req.client_id {
        a.client_id = Set(validate_text("client_id", &v, 512, false)?);
    }
    if let Some(v) = req.client_secret.filter(|s| !s.is_empty()) {
        a.client_secret = Set(seal(svc, &m.id, &validate_secret(&v)?));
    }
    if req.scopes.is_some() {
        a.scopes = Set(validate_scopes(req.scopes)?);
    }
    if let Some(v) = req.email_claim {
        a.email_claim = Set(validate_text("email_claim", &v, 128, false)?);
    }
    if let Some(v) = req.name_claim {
        a.name_claim = Set(validate_text("name_claim", &v, 128, false)?);
    }
    if let Some(v) = req.groups_claim {
        a.groups_claim = Set(validate_text("groups_claim", &v, 128, true)?);
    }
    if let Some(v) = req.allowed_domains {
        a.allowed_domains = Set(validate_domains(v)?);
    }
    if req.group_mapping_mode.is_some() || req.group_mapping.is_some() {
        let mode = req
            .group_mapping_mode
            .unwrap_or_else(|| GroupMappingMode::from_stored(&m.group_mapping_mode));
        let table = match req.group_mapping {
            Some(t) => t,
            None => serde_json::from_str(&m.group_mapping).unwrap_or_default(),
        };
        a.group_mapping = Set(validate_mapping(svc, &table).await?);
        a.group_mapping_mode = Set(mode.as_str().to_owned());
    }
    if let Some(v) = req.auto_provision {
        a.auto_provision = Set(v);
    }
    if let Some(v) = req.link_existing_users {
        a.link_existing_users = Set(v);
    }
    if let Some(v) = req.enabled {
        a.enabled = Set(v);
    }
    if let Some(v) = req.trust_provider_mfa {
        a.trust_provider_mfa = Set(v);
    }
    a.updated_at = Set(svc.clock.now().millis());
    let org = crate::settings::load(&svc.db).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let turned_off = m.enabled && req.enabled == Some(false);
    let tx = if turned_off {
        super::org_settings::ensure_sign_in_remains(&tx, &org, &m.id).await?;
        keep_an_administrator_signing_in(svc, tx, who, "identity_provider.update", &m, &org).await?
    } else {
        tx
    };
    let ended = if turned_off || issuer_changed {
        Some(end_what_it_vouched_for(svc, &tx, who, &m.id, issuer_changed).await?)
    } else {
        None
    };
    let m = a.update(&tx).await?;
    let after = to_dto(svc, &m);
    let mut details_after = json!(after);
    if secret_changed {
        details_after["client_secret"] = json!("(changed)");
    }
    if let Some(e) = &ended {
        details_after["ended"] = e.clone();
    }
    svc.audit_change(
        &tx,
        who,
        "identity_provider.update",
        "identity_provider",
        &m.name,
        None,
        Some(json!(before)),
        Some(details_after),
    )
    .await?;
    tx.commit().await?;
    svc.sso.forget(&m.id);
    if ended.is_some() {
        svc.policy.bump();
    }
    Ok(after)
}

/// Turning a provider off, or deleting it, never leaves the organization with administrators
/// none of whom can sign in any more (each signing in only through it): then no one could
/// give administration to anyone again. `tx` is the change's, before the change; given back
/// when someone administering can still sign in (or no one administers), else rolled back and
/// the change refused (409, audited).
async fn keep_an_administrator_signing_in(
    svc: &Services,
    tx: crate::audit::ChangeTx,
    who: &Principal,
    action: &str,
    m: &identity_providers::Model,
    org: &crate::settings::OrgSettings,
) -> DomainResult<crate::audit::ChangeTx> {
    let now = svc.clock.now();
    if !super::bindings::has_administrator(&tx, now).await?
        || super::bindings::has_administrator_signing_in_without(&tx, now, org, &m.id).await?
    {
        return Ok(tx);
    }
    tx.rollback().await?;
    let reason = "every administrator signs in only through this identity provider: without it no one could administer the organization; give an administrator a local password or another provider first";
    svc.audit_denied(who, action, "identity_provider", &m.name, reason)
        .await?;
    Err(DomainError::conflict("enabled", reason))
}

pub async fn delete(svc: &Services, who: &Principal, name: &str) -> DomainResult<()> {
    svc.gate(who, Action::org(Permission::IdpWrite)).await?;
    let m = find(svc, name).await?;
    refuse_unless_all_held(svc, who, "identity_provider.delete", &m.name).await?;
    let before = to_dto(svc, &m);
    let org = crate::settings::load(&svc.db).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let tx = if m.enabled {
        super::org_settings::ensure_sign_in_remains(&tx, &org, &m.id).await?;
        keep_an_administrator_signing_in(svc, tx, who, "identity_provider.delete", &m, &org).await?
    } else {
        tx
    };
    let ended = end_what_it_vouched_for(svc, &tx, who, &m.id, true).await?;
    identity_providers::Entity::delete_by_id(m.id.clone())
        .exec(&tx)
        .await?;
    svc.audit_change(
        &tx,
        who,
        "identity_provider.delete",
        "identity_provider",
        &m.name,
        None,
        Some(json!(before)),
        Some(json!({ "ended": ended })),
    )
    .await?;
    tx.commit().await?;
    svc.sso.forget(&m.id);
    svc.policy.bump();
    Ok(())
}

/// "Test": run discovery against the provider's issuer.
pub async fn test(
    svc: &Services,
    who: &Principal,
    name: &str,
) -> DomainResult<IdentityProviderTest> {
    svc.gate(who, Action::org(Permission::IdpWrite)).await?;
    let m = find(svc, name).await?;
    svc.sso.forget(&m.id);
    Ok(sso::test_issuer(svc, &m.issuer).await)
}
