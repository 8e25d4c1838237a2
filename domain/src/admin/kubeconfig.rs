//! Kubeconfigs and kubectl access: which clusters a user reaches through kubectl and with what
//! rights, issued credentials and their revocation, kubectl settings at the organization, user
//! and cluster levels, and the bookkeeping of the per-user service accounts on the clusters.
//!
//! The Kubernetes API gateway (server) signs the credentials and enforces all this on every
//! request; this module decides and records.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ts;
use crate::access::{Action, Principal};
use crate::audit::{AuditEvent, AuditKind, Outcome, SessionType};
use crate::clock::Timestamp;
use crate::entities::{
    cluster_shares, clusters, kube_credentials, kube_service_accounts, kube_users,
    kubectl_settings, projects, users,
};
use crate::error::{DomainError, DomainResult};
use crate::ids::UserId;
use crate::kubeconfig::{
    EffectiveKubectlSettings, KubeconfigRevoked, KubectlSettings, KubectlSettingsDto,
    MyKubeCluster, MyKubectl, UpdateKubectlSettingsRequest, MAX_DURATION_SECS, MIN_DURATION_SECS,
};
use crate::permissions::Permission;
use crate::secrets::sha256_hex;
use crate::Services;

// ---- clusters as kubectl sees them ----

pub use crate::access::kube::{kube_access, KubeAccess, KubeCluster, KubeLevel};

async fn kube_clusters_where<C: ConnectionTrait>(
    db: &C,
    name: Option<&str>,
) -> DomainResult<Vec<KubeCluster>> {
    let names: HashMap<String, String> = projects::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let mut q = clusters::Entity::find().order_by_asc(clusters::Column::Name);
    if let Some(n) = name {
        q = q.filter(clusters::Column::Name.eq(n));
    }
    let rows = q.all(db).await?;
    let ids: Vec<String> = rows.iter().map(|c| c.id.clone()).collect();
    let mut shares: HashMap<String, Vec<String>> = HashMap::new();
    for s in cluster_shares::Entity::find()
        .filter(cluster_shares::Column::ClusterId.is_in(ids))
        .all(db)
        .await?
    {
        if let Some(p) = names.get(&s.project_id) {
            shares.entry(s.cluster_id).or_default().push(p.clone());
        }
    }
    Ok(rows
        .into_iter()
        .map(|c| {
            let mut shared_with = shares.remove(&c.id).unwrap_or_default();
            shared_with.sort();
            KubeCluster {
                owner: names.get(&c.project_id).cloned().unwrap_or_default(),
                id: c.id,
                name: c.name,
                shared_with,
                status: crate::dto::ClusterStatus::from_stored(&c.status),
            }
        })
        .collect())
}

/// One cluster by name.
pub async fn kube_cluster<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> DomainResult<Option<KubeCluster>> {
    Ok(kube_clusters_where(db, Some(name))
        .await?
        .into_iter()
        .next())
}

/// Every cluster.
pub async fn kube_clusters<C: ConnectionTrait>(db: &C) -> DomainResult<Vec<KubeCluster>> {
    kube_clusters_where(db, None).await
}

// ---- per-user kubectl identity ----

/// `u-` and the email with every run of characters outside `[a-z0-9]` turned into one `-`,
/// at most 56 characters (room for a collision suffix within 63).
pub fn service_account_base(email: &str) -> String {
    let mut out = String::from("u-");
    let mut dash = false;
    for c in email.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash {
            out.push('-');
            dash = true;
        }
        if out.len() >= 56 {
            break;
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// The user's kubectl identity, created at first need. The service account name is the email
/// slug; when another user already holds it, a short hash of the user id makes it unique.
pub async fn kube_user<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    email: &str,
    now: Timestamp,
) -> DomainResult<kube_users::Model> {
    if let Some(k) = kube_users::Entity::find_by_id(user_id.to_owned())
        .one(db)
        .await?
    {
        return Ok(k);
    }
    let base = service_account_base(email);
    let hashed = format!("{base}-{}", &sha256_hex(user_id.as_bytes())[..6]);
    for name in [base, hashed] {
        let taken = kube_users::Entity::find()
            .filter(kube_users::Column::SaName.eq(name.clone()))
            .one(db)
            .await?
            .is_some();
        if taken {
            continue;
        }
        let row = kube_users::Model {
            user_id: user_id.to_owned(),
            sa_name: name,
            revoked_before: None,
            created_at: now.millis(),
            updated_at: now.millis(),
        };
        match kube_users::ActiveModel::from(row.clone()).insert(db).await {
            Ok(m) => return Ok(m),
            Err(e) => {
                // Raced with another request for the same user: use theirs.
                if let Some(k) = kube_users::Entity::find_by_id(user_id.to_owned())
                    .one(db)
                    .await?
                {
                    return Ok(k);
                }
                tracing::warn!(error = %e, "service account name taken; trying the next one");
            }
        }
    }
    Err(DomainError::Internal(format!(
        "no free service account name for user {user_id}"
    )))
}

// ---- settings ----

const ORG_LEVEL: &str = "org";

fn level_id(scope: &str, subject: Option<&str>) -> String {
    match subject {
        Some(s) => format!("{scope}:{s}"),
        None => ORG_LEVEL.to_owned(),
    }
}

fn to_settings(m: &kubectl_settings::Model) -> KubectlSettings {
    KubectlSettings {
        credential_validity_secs: m.validity_secs,
        max_credential_validity_secs: m.max_validity_secs,
        sa_idle_secs: m.sa_idle_secs,
        require_recent_sign_in: m.require_recent_sign_in,
        recent_sign_in_secs: m.recent_sign_in_secs,
        disable_cli: m.disable_cli,
        secrets_org_admins_only: m.secrets_org_admins_only,
        terminal_idle_secs: m.terminal_idle_secs,
        terminal_max_secs: m.terminal_max_secs,
        terminal_max_concurrent: m.terminal_max_concurrent,
        terminal_record_input: m.terminal_record_input,
    }
}

async fn load_level<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> DomainResult<(KubectlSettings, Option<i64>)> {
    Ok(
        match kubectl_settings::Entity::find_by_id(id.to_owned())
            .one(db)
            .await?
        {
            Some(m) => (to_settings(&m), Some(m.updated_at)),
            None => (KubectlSettings::default(), None),
        },
    )
}

/// The settings that apply to `user` on `cluster` (either may be absent).
pub async fn effective_settings<C: ConnectionTrait>(
    db: &C,
    user_id: Option<&str>,
    cluster_id: Option<&str>,
) -> DomainResult<EffectiveKubectlSettings> {
    let org = load_level(db, ORG_LEVEL).await?.0;
    let user = match user_id {
        Some(u) => load_level(db, &level_id("user", Some(u))).await?.0,
        None => KubectlSettings::default(),
    };
    let cluster = match cluster_id {
        Some(c) => load_level(db, &level_id("cluster", Some(c))).await?.0,
        None => KubectlSettings::default(),
    };
    Ok(EffectiveKubectlSettings::combine(&org, &user, &cluster))
}

/// Which level a settings call addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsLevel {
    Organization,
    /// A user, by email or id.
    User(String),
    /// A cluster, by name.
    Cluster(String),
}

struct ResolvedLevel {
    scope: &'static str,
    subject_id: Option<String>,
    subject_name: Option<String>,
    project: Option<String>,
}

async fn resolve_level(
    svc: &Services,
    who: &Principal,
    level: &SettingsLevel,
    write: bool,
) -> DomainResult<ResolvedLevel> {
    match level {
        SettingsLevel::Organization => {
            let p = if write {
                Permission::SettingsWrite
            } else {
                Permission::SettingsRead
            };
            svc.gate(who, Action::org(p)).await?;
            Ok(ResolvedLevel {
                scope: "organization",
                subject_id: None,
                subject_name: None,
                project: None,
            })
        }
        SettingsLevel::User(u) => {
            let own = u == &who.email || u == &who.user_id.to_string();
            if write || !own {
                let p = if write {
                    Permission::KubeconfigWrite
                } else {
                    Permission::UserRead
                };
                svc.gate(who, Action::org(p)).await?;
            }
            let user = super::users::find(svc, u).await?;
            Ok(ResolvedLevel {
                scope: "user",
                subject_id: Some(user.id),
                subject_name: Some(user.email),
                project: None,
            })
        }
        SettingsLevel::Cluster(name) => {
            let p = if write {
                Permission::ClusterWrite
            } else {
                Permission::ClusterRead
            };
            let Some(c) = kube_cluster(&svc.db, name).await? else {
                svc.gate(who, Action::org(p)).await?;
                return Err(DomainError::not_found("cluster"));
            };
            svc.gate(who, Action::project(p, c.owner.clone())).await?;
            Ok(ResolvedLevel {
                scope: "cluster",
                subject_id: Some(c.id),
                subject_name: Some(c.name),
                project: Some(c.owner),
            })
        }
    }
}

async fn settings_dto<C: ConnectionTrait>(
    db: &C,
    l: &ResolvedLevel,
) -> DomainResult<KubectlSettingsDto> {
    let id = level_id(
        if l.scope == "organization" {
            ORG_LEVEL
        } else {
            l.scope
        },
        l.subject_id.as_deref(),
    );
    let (settings, updated) = load_level(db, &id).await?;
    let effective = match l.scope {
        "user" => effective_settings(db, l.subject_id.as_deref(), None).await?,
        "cluster" => effective_settings(db, None, l.subject_id.as_deref()).await?,
        _ => effective_settings(db, None, None).await?,
    };
    let inherited = match l.scope {
        "organization" => EffectiveKubectlSettings::default(),
        _ => effective_settings(db, None, None).await?,
    };
    Ok(KubectlSettingsDto {
        scope: l.scope.to_owned(),
        subject: l.subject_name.clone(),
        settings,
        effective,
        inherited,
        updated_at: updated.map(ts),
    })
}

pub async fn get_settings(
    svc: &Services,
    who: &Principal,
    level: SettingsLevel,
) -> DomainResult<KubectlSettingsDto> {
    let l = resolve_level(svc, who, &level, false).await?;
    settings_dto(&svc.db, &l).await
}

fn check_duration(
    fields: &mut BTreeMap<String, String>,
    name: &str,
    v: Option<Option<i64>>,
) -> Option<Option<i64>> {
    if let Some(Some(s)) = v {
        if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&s) {
            fields.insert(
                name.to_owned(),
                format!("must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS} seconds"),
            );
        }
    }
    v
}

pub async fn update_settings(
    svc: &Services,
    who: &Principal,
    level: SettingsLevel,
    req: UpdateKubectlSettingsRequest,
) -> DomainResult<KubectlSettingsDto> {
    let l = resolve_level(svc, who, &level, true).await?;
    let mut fields = BTreeMap::new();
    check_duration(
        &mut fields,
        "credential_validity_secs",
        req.credential_validity_secs,
    );
    check_duration(
        &mut fields,
        "max_credential_validity_secs",
        req.max_credential_validity_secs,
    );
    check_duration(&mut fields, "sa_idle_secs", req.sa_idle_secs);
    check_duration(&mut fields, "recent_sign_in_secs", req.recent_sign_in_secs);
    if l.scope != "organization" && matches!(req.max_credential_validity_secs, Some(Some(_))) {
        fields.insert(
            "max_credential_validity_secs".into(),
            "is set for the whole organization only".into(),
        );
    }
    let in_range = |fields: &mut BTreeMap<String, String>,
                    name: &str,
                    v: Option<Option<i64>>,
                    range: std::ops::RangeInclusive<i64>,
                    unit: &str| {
        if let Some(Some(x)) = v {
            if !range.contains(&x) {
                fields.insert(
                    name.to_owned(),
                    format!(
                        "must be between {} and {} {unit}",
                        range.start(),
                        range.end()
                    ),
                );
            }
        }
    };
    in_range(
        &mut fields,
        "terminal_idle_secs",
        req.terminal_idle_secs,
        crate::kubeconfig::TERMINAL_IDLE_RANGE,
        "seconds",
    );
    in_range(
        &mut fields,
        "terminal_max_secs",
        req.terminal_max_secs,
        crate::kubeconfig::TERMINAL_MAX_RANGE,
        "seconds",
    );
    in_range(
        &mut fields,
        "terminal_max_concurrent",
        req.terminal_max_concurrent,
        crate::kubeconfig::TERMINAL_CONCURRENT_RANGE,
        "terminals",
    );
    if l.scope == "cluster" && matches!(req.terminal_max_concurrent, Some(Some(_))) {
        fields.insert(
            "terminal_max_concurrent".into(),
            "is set for the organization or a user: it counts a person's terminals on every cluster".into(),
        );
    }
    if l.scope == "cluster" && matches!(req.credential_validity_secs, Some(Some(_))) {
        fields.insert(
            "credential_validity_secs".into(),
            "is set for the organization or a user: a kubeconfig holds one credential for every cluster".into(),
        );
    }
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    let before = settings_dto(&svc.db, &l).await?;
    let id = level_id(
        if l.scope == "organization" {
            ORG_LEVEL
        } else {
            l.scope
        },
        l.subject_id.as_deref(),
    );
    let now = svc.clock.now().millis();
    let existing = kubectl_settings::Entity::find_by_id(id.clone())
        .one(&svc.db)
        .await?;
    let mut m = existing.clone().unwrap_or(kubectl_settings::Model {
        id: id.clone(),
        scope: l.scope.to_owned(),
        subject_id: l.subject_id.clone(),
        validity_secs: None,
        max_validity_secs: None,
        sa_idle_secs: None,
        require_recent_sign_in: None,
        recent_sign_in_secs: None,
        disable_cli: None,
        secrets_org_admins_only: None,
        updated_at: now,
        terminal_idle_secs: None,
        terminal_max_secs: None,
        terminal_max_concurrent: None,
        terminal_record_input: None,
    });
    if let Some(v) = req.credential_validity_secs {
        m.validity_secs = v;
    }
    if let Some(v) = req.max_credential_validity_secs {
        m.max_validity_secs = v;
    }
    if let Some(v) = req.sa_idle_secs {
        m.sa_idle_secs = v;
    }
    if let Some(v) = req.require_recent_sign_in {
        m.require_recent_sign_in = v;
    }
    if let Some(v) = req.recent_sign_in_secs {
        m.recent_sign_in_secs = v;
    }
    if let Some(v) = req.disable_cli {
        m.disable_cli = v;
    }
    if let Some(v) = req.secrets_org_admins_only {
        m.secrets_org_admins_only = v;
    }
    if let Some(v) = req.terminal_idle_secs {
        m.terminal_idle_secs = v;
    }
    if let Some(v) = req.terminal_max_secs {
        m.terminal_max_secs = v;
    }
    if let Some(v) = req.terminal_max_concurrent {
        m.terminal_max_concurrent = v;
    }
    if let Some(v) = req.terminal_record_input {
        m.terminal_record_input = v;
    }
    m.updated_at = now;
    let tx = crate::audit::begin_change(&svc.db).await?;
    if existing.is_some() {
        let mut a = m.clone().into_active_model();
        a.validity_secs = Set(m.validity_secs);
        a.max_validity_secs = Set(m.max_validity_secs);
        a.sa_idle_secs = Set(m.sa_idle_secs);
        a.require_recent_sign_in = Set(m.require_recent_sign_in);
        a.recent_sign_in_secs = Set(m.recent_sign_in_secs);
        a.disable_cli = Set(m.disable_cli);
        a.secrets_org_admins_only = Set(m.secrets_org_admins_only);
        a.terminal_idle_secs = Set(m.terminal_idle_secs);
        a.terminal_max_secs = Set(m.terminal_max_secs);
        a.terminal_max_concurrent = Set(m.terminal_max_concurrent);
        a.terminal_record_input = Set(m.terminal_record_input);
        a.updated_at = Set(now);
        a.update(&tx).await?;
    } else {
        kubectl_settings::ActiveModel::from(m).insert(&tx).await?;
    }
    let after = settings_dto(&tx, &l).await?;
    svc.audit_change(
        &tx,
        who,
        "kubectl_settings.update",
        &format!("kubectl_settings.{}", l.scope),
        l.subject_name.as_deref().unwrap_or("organization"),
        l.project.as_deref(),
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    tx.commit().await?;
    // Settings change gateway decisions: make every cached decision stale.
    svc.policy.bump();
    Ok(after)
}

// ---- issuing credentials ----

/// A credential to put in a kubeconfig. The server signs it (serial, subject, expiry).
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    /// Hex; also the X.509 serial number.
    pub serial: String,
    pub user_id: String,
    pub session_type: SessionType,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// The clusters it reaches now, by name order.
    pub clusters: Vec<KubeCluster>,
    /// The user's service account name (for the kubeconfig's user entry).
    pub sa_name: String,
}

/// Why a download was refused (already audited); the message is for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigRefused {
    pub code: &'static str,
    pub message: String,
}

/// A fresh serial: 16 random bytes, the first below 0x80 and not zero (a positive DER INTEGER
/// without padding).
fn new_serial() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[0] = (b[0] & 0x7f) | 0x01;
    hex::encode(b)
}

/// Issue a kubeconfig credential for the caller: needs `kubeconfig.read`; lists every cluster
/// the caller reaches through `kubeconfig.read` and a `kubectl.*` permission (only `cluster`
/// when given). Audited (`kubeconfig.download`).
pub async fn issue(
    svc: &Services,
    who: &Principal,
    cluster: Option<&str>,
    session_type: SessionType,
) -> DomainResult<Result<IssuedCredential, KubeconfigRefused>> {
    let eff = svc.policy.effective(who.user_id).await?;
    let has_read = eff.active
        && eff
            .bindings
            .iter()
            .any(|b| b.permissions.contains(&Permission::KubeconfigRead));
    if !has_read {
        // Let the gate deny (and audit) it.
        svc.gate(who, Action::org(Permission::KubeconfigRead))
            .await?;
    }
    let all = kube_clusters(&svc.db).await?;
    let mut reachable: Vec<KubeCluster> = all
        .into_iter()
        .filter(|c| kube_access(&eff, c).usable())
        .collect();
    let event = |outcome: Outcome| {
        AuditEvent::new(
            AuditKind::Console,
            who.actor(),
            who.session_type,
            "kubeconfig.download",
            outcome,
        )
        .resource("kubeconfig", who.email.clone())
        .request(who.request.clone())
    };
    if let Some(name) = cluster {
        reachable.retain(|c| c.name == name);
        if reachable.is_empty() {
            svc.audit
                .record(
                    event(Outcome::Denied)
                        .reason(format!("no kubectl access to a cluster named {name:?}")),
                )
                .await?;
            return Err(DomainError::not_found("cluster"));
        }
    }
    let settings = effective_settings(&svc.db, Some(&who.user_id.to_string()), None).await?;
    if settings.disable_cli {
        let message =
            "kubectl access is disabled for you by your organization's settings".to_owned();
        svc.audit
            .record(event(Outcome::Denied).reason(message.clone()))
            .await?;
        return Ok(Err(KubeconfigRefused {
            code: "kubectl_disabled",
            message,
        }));
    }
    let now = svc.clock.now();
    let expires_at = now.plus_secs(settings.credential_validity_secs);
    let ku = kube_user(&svc.db, &who.user_id.to_string(), &who.email, now).await?;
    let serial = new_serial();
    let tx = crate::audit::begin_change(&svc.db).await?;
    kube_credentials::ActiveModel::from(kube_credentials::Model {
        serial: serial.clone(),
        user_id: who.user_id.to_string(),
        session_type: session_type.as_str().to_owned(),
        cluster: cluster.map(str::to_owned),
        issued_at: now.millis(),
        expires_at: expires_at.millis(),
        revoked_at: None,
    })
    .insert(&tx)
    .await?;
    let mut ev = event(Outcome::Allowed).details(json!({
        "serial": serial,
        "session_type": session_type.as_str(),
        "clusters": reachable.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "expires_at": expires_at.rfc3339(),
    }));
    if let [only] = reachable.as_slice() {
        ev.cluster = Some(only.name.clone());
        ev = ev.project(only.owner.clone());
    }
    crate::audit::append(&tx, now, vec![ev]).await?;
    tx.commit().await?;
    Ok(Ok(IssuedCredential {
        serial,
        user_id: who.user_id.to_string(),
        session_type,
        issued_at: now,
        expires_at,
        clusters: reachable,
        sa_name: ku.sa_name,
    }))
}

/// A credential for one web terminal's kubectl shell: it reaches `cluster` only, carries the
/// session type `web_shell`, and lives no longer than the terminal (`expires_at`); the
/// terminal revokes it when it ends ([`revoke_credential`]). Not a download: the terminal's
/// own `terminal.open` event records it.
pub async fn issue_web_shell<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    cluster: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> DomainResult<String> {
    let serial = new_serial();
    kube_credentials::ActiveModel::from(kube_credentials::Model {
        serial: serial.clone(),
        user_id: user_id.to_owned(),
        session_type: SessionType::WebShell.as_str().to_owned(),
        cluster: Some(cluster.to_owned()),
        issued_at: now.millis(),
        expires_at: expires_at.millis(),
        revoked_at: None,
    })
    .insert(db)
    .await?;
    Ok(serial)
}

/// Revoke one credential (a web terminal's, when the terminal ends).
pub async fn revoke_credential<C: ConnectionTrait>(
    db: &C,
    serial: &str,
    now: Timestamp,
) -> DomainResult<()> {
    kube_credentials::Entity::update_many()
        .col_expr(
            kube_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_credentials::Column::Serial.eq(serial))
        .filter(kube_credentials::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// The caller's rights on a cluster in words.
pub fn access_in_words(a: &KubeAccess) -> String {
    if a.full {
        return "full access".into();
    }
    let mut parts = Vec::new();
    if a.cluster_write {
        parts.push("write in every namespace".to_owned());
    } else if a.cluster_read {
        parts.push("read in every namespace".to_owned());
    }
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    if !a.cluster_write && !a.namespace_write.is_empty() {
        parts.push(format!("write in {}", list(&a.namespace_write)));
    }
    if !a.cluster_read && !a.namespace_read.is_empty() {
        parts.push(format!("read in {}", list(&a.namespace_read)));
    }
    parts.join("; ")
}

/// What the caller reaches with kubectl (no permission needed beyond being signed in: it is
/// the caller's own access; an empty list when they have none).
pub async fn my_kubectl(svc: &Services, who: &Principal) -> DomainResult<MyKubectl> {
    let eff = svc.policy.effective(who.user_id).await?;
    let mut out = Vec::new();
    for c in kube_clusters(&svc.db).await? {
        let a = kube_access(&eff, &c);
        if !a.usable() {
            continue;
        }
        out.push(MyKubeCluster {
            status: c.status,
            project: a.project.clone().unwrap_or_else(|| c.owner.clone()),
            access: access_in_words(&a),
            name: c.name,
        });
    }
    let now = svc.clock.now();
    let user_id = who.user_id.to_string();
    let sa = kube_users::Entity::find_by_id(user_id.clone())
        .one(&svc.db)
        .await?;
    let revoked_before = sa
        .as_ref()
        .and_then(|k| k.revoked_before)
        .unwrap_or(i64::MIN);
    let live: Vec<kube_credentials::Model> = kube_credentials::Entity::find()
        .filter(kube_credentials::Column::UserId.eq(user_id.clone()))
        .filter(kube_credentials::Column::RevokedAt.is_null())
        .filter(kube_credentials::Column::ExpiresAt.gt(now.millis()))
        .all(&svc.db)
        .await?
        .into_iter()
        .filter(|c| c.issued_at >= revoked_before)
        .collect();
    let settings = effective_settings(&svc.db, Some(&user_id), None).await?;
    Ok(MyKubectl {
        email: who.email.clone(),
        service_account: match sa {
            Some(k) => k.sa_name,
            None => service_account_base(&who.email),
        },
        clusters: out,
        active_credentials: live.len() as u64,
        latest_expiry: live
            .iter()
            .map(|c| c.expires_at)
            .max()
            .map(|t| Timestamp(t).rfc3339()),
        credential_validity_secs: settings.credential_validity_secs,
        cli_disabled: settings.disable_cli,
    })
}

// ---- checking and revoking credentials ----

/// The credential's record, or why it is refused in words for the caller (kubectl prints it).
pub async fn credential_status<C: ConnectionTrait>(
    db: &C,
    serial: &str,
    user_id: &str,
    now: Timestamp,
) -> DomainResult<Result<kube_credentials::Model, String>> {
    let Some(c) = kube_credentials::Entity::find_by_id(serial.to_owned())
        .one(db)
        .await?
    else {
        return Ok(Err(
            "this credential is unknown to Warden; download a new kubeconfig".into(),
        ));
    };
    if c.user_id != user_id {
        return Ok(Err(
            "this credential does not belong to its subject; download a new kubeconfig".into(),
        ));
    }
    if let Some(at) = c.revoked_at {
        return Ok(Err(format!(
            "this kubeconfig was revoked at {}; download a new one",
            Timestamp(at).rfc3339()
        )));
    }
    let revoked_before = kube_users::Entity::find_by_id(user_id.to_owned())
        .one(db)
        .await?
        .and_then(|k| k.revoked_before);
    if let Some(before) = revoked_before.filter(|b| c.issued_at < *b) {
        return Ok(Err(format!(
            "this kubeconfig was revoked at {}; download a new one",
            Timestamp(before).rfc3339()
        )));
    }
    if c.expires_at <= now.millis() {
        return Ok(Err(format!(
            "this kubeconfig expired at {}; download a new one",
            Timestamp(c.expires_at).rfc3339()
        )));
    }
    Ok(Ok(c))
}

/// Revoke every credential issued so far to a user: `who` themselves, or anyone with
/// `kubeconfig.write`. Takes effect at the next request. Audited (`kubeconfig.revoke`).
pub async fn revoke(
    svc: &Services,
    who: &Principal,
    user: Option<&str>,
) -> DomainResult<KubeconfigRevoked> {
    let target = match user {
        None => users::Entity::find_by_id(who.user_id.to_string())
            .one(&svc.db)
            .await?
            .ok_or(DomainError::Unauthenticated)?,
        Some(u) => {
            svc.gate(who, Action::org(Permission::KubeconfigWrite))
                .await?;
            super::users::find(svc, u).await?
        }
    };
    let now = svc.clock.now();
    // One transaction that holds the audit chain's lock from its start (on SQLite, the write
    // lock: a read-then-write transaction would fail when another writer commits in between).
    let tx = crate::audit::begin_change(&svc.db).await?;
    kube_user(&tx, &target.id, &target.email, now).await?;
    kube_users::Entity::update_many()
        .col_expr(
            kube_users::Column::RevokedBefore,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .col_expr(
            kube_users::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_users::Column::UserId.eq(target.id.clone()))
        .exec(&tx)
        .await?;
    let done = kube_credentials::Entity::update_many()
        .col_expr(
            kube_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_credentials::Column::UserId.eq(target.id.clone()))
        .filter(kube_credentials::Column::RevokedAt.is_null())
        .filter(kube_credentials::Column::ExpiresAt.gt(now.millis()))
        .exec(&tx)
        .await?;
    crate::audit::append(
        &tx,
        now,
        vec![AuditEvent::new(
            AuditKind::Console,
            who.actor(),
            who.session_type,
            "kubeconfig.revoke",
            Outcome::Allowed,
        )
        .resource("kubeconfig", target.email.clone())
        .request(who.request.clone())
        .details(json!({
            "user": target.email,
            "revoked_before": now.rfc3339(),
            "credentials_revoked": done.rows_affected,
        }))],
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(KubeconfigRevoked {
        user: target.email,
        revoked_before: now.rfc3339(),
        credentials_revoked: done.rows_affected,
    })
}

// ---- the per-user service accounts on clusters ----

/// Remember that the service account exists on the cluster with this RBAC.
pub async fn record_service_account<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    user_id: &str,
    sa_name: &str,
    rbac_hash: &str,
    now: Timestamp,
) -> DomainResult<()> {
    let existing =
        kube_service_accounts::Entity::find_by_id((cluster_id.to_owned(), user_id.to_owned()))
            .one(db)
            .await?;
    match existing {
        Some(m) => {
            let mut a = m.into_active_model();
            a.sa_name = Set(sa_name.to_owned());
            a.rbac_hash = Set(rbac_hash.to_owned());
            a.reconciled_at = Set(now.millis());
            a.last_used_at = Set(now.millis());
            a.last_error = Set(None);
            a.update(db).await?;
        }
        None => {
            kube_service_accounts::ActiveModel::from(kube_service_accounts::Model {
                cluster_id: cluster_id.to_owned(),
                user_id: user_id.to_owned(),
                sa_name: sa_name.to_owned(),
                rbac_hash: rbac_hash.to_owned(),
                created_at: now.millis(),
                reconciled_at: now.millis(),
                last_used_at: now.millis(),
                last_error: None,
            })
            .insert(db)
            .await?;
        }
    }
    Ok(())
}

/// The service account on record for the user on the cluster.
pub async fn service_account_of<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    user_id: &str,
) -> DomainResult<Option<kube_service_accounts::Model>> {
    Ok(
        kube_service_accounts::Entity::find_by_id((cluster_id.to_owned(), user_id.to_owned()))
            .one(db)
            .await?,
    )
}

/// Note a use of the service account (for idle removal).
pub async fn touch_service_account<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    user_id: &str,
    now: Timestamp,
) -> DomainResult<()> {
    kube_service_accounts::Entity::update_many()
        .col_expr(
            kube_service_accounts::Column::LastUsedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_service_accounts::Column::ClusterId.eq(cluster_id))
        .filter(kube_service_accounts::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn forget_service_account<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    user_id: &str,
) -> DomainResult<()> {
    kube_service_accounts::Entity::delete_by_id((cluster_id.to_owned(), user_id.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn service_accounts<C: ConnectionTrait>(
    db: &C,
) -> DomainResult<Vec<kube_service_accounts::Model>> {
    Ok(kube_service_accounts::Entity::find().all(db).await?)
}

/// A user id from its text form, for the gateway (which reads it from a certificate).
pub fn parse_user_id(s: &str) -> Option<UserId> {
    UserId::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account_base("john@example.com"),
            "u-john-example-com"
        );
        assert_eq!(
            service_account_base("John.Doe+k8s@Example.COM"),
            "u-john-doe-k8s-example-com"
        );
        assert!(service_account_base(&format!("{}@x.io", "a".repeat(100))).len() <= 56);
    }
}
