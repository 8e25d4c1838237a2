//! kubectl settings (credential validity, its maximum, the service accounts' idle time, the
//! recent sign-in a download needs) at the organization, user and cluster levels.

use super::*;

const ORG_LEVEL: &str = "org";

/// The key of a level's row: `org`, or the scope and the subject's id.
fn level_id(scope: KubectlSettingsScope, subject: Option<&str>) -> String {
    match subject {
        Some(s) => format!("{}:{s}", scope.as_str()),
        None => ORG_LEVEL.to_owned(),
    }
}

/// Before a cluster is deleted: its own kubectl safeguards go with it (a cluster imported again
/// gets a new id and none of them), so deleting one that has any is the organization's call
/// (`settings.write`), as lifting them is. Refused in words and audited.
pub(crate) async fn refuse_dropping_with_cluster(
    svc: &Services,
    who: &Principal,
    cluster_id: &str,
    cluster_name: &str,
) -> DomainResult<()> {
    let id = level_id(KubectlSettingsScope::Cluster, Some(cluster_id));
    let Some(row) = kubectl_settings::Entity::find_by_id(id)
        .one(&svc.db)
        .await?
    else {
        return Ok(());
    };
    let set = to_settings(&row);
    let none = EffectiveKubectlSettings::default();
    let safeguards = looser(
        &none,
        &EffectiveKubectlSettings::combine(
            &KubectlSettings::default(),
            &KubectlSettings::default(),
            &set,
        ),
    );
    if !safeguards.is_empty()
        && !svc
            .policy
            .effective(who.user_id)
            .await?
            .holds(Permission::SettingsWrite, &crate::access::Target::Org)
    {
        let reason = format!(
            "cluster {cluster_name} has kubectl safeguards of its own ({}), which deleting it drops: that takes settings.write",
            safeguards.join(", ")
        );
        svc.audit_denied(who, "cluster.delete", "cluster", cluster_name, &reason)
            .await?;
        return Err(DomainError::forbidden(reason));
    }
    Ok(())
}

/// A deleted cluster's own kubectl settings go with it.
pub(crate) async fn delete_with_cluster<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
) -> DomainResult<()> {
    kubectl_settings::Entity::delete_by_id(level_id(
        KubectlSettingsScope::Cluster,
        Some(cluster_id),
    ))
    .exec(db)
    .await?;
    Ok(())
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
        Some(u) => {
            load_level(db, &level_id(KubectlSettingsScope::User, Some(u)))
                .await?
                .0
        }
        None => KubectlSettings::default(),
    };
    let cluster = match cluster_id {
        Some(c) => {
            load_level(db, &level_id(KubectlSettingsScope::Cluster, Some(c)))
                .await?
                .0
        }
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
    scope: KubectlSettingsScope,
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
                scope: KubectlSettingsScope::Organization,
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
            let user = crate::identity::users::find(svc, u).await?;
            // Another person's kubectl (turned off, keystrokes recorded, one-minute
            // kubeconfigs) is theirs as a whole: only someone holding everything they hold
            // may set it.
            if write {
                crate::admin::bindings::refuse_takeover(
                    svc,
                    who,
                    &user,
                    "kubectl_settings.update",
                    "change the kubectl settings of",
                )
                .await?;
            }
            Ok(ResolvedLevel {
                scope: KubectlSettingsScope::User,
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
                scope: KubectlSettingsScope::Cluster,
                subject_id: Some(c.id.to_string()),
                subject_name: Some(c.name),
                project: Some(c.owner),
            })
        }
    }
}

/// The safeguards of `a` that are looser than `b`'s: a switch `b` turns on that `a` turns off, a
/// time or a count `a` allows longer or more of.
fn looser(a: &EffectiveKubectlSettings, b: &EffectiveKubectlSettings) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (name, a, b) in [
        (
            "require_recent_sign_in",
            a.require_recent_sign_in,
            b.require_recent_sign_in,
        ),
        ("disable_cli", a.disable_cli, b.disable_cli),
        (
            "secrets_org_admins_only",
            a.secrets_org_admins_only,
            b.secrets_org_admins_only,
        ),
        (
            "terminal_record_input",
            a.terminal_record_input,
            b.terminal_record_input,
        ),
    ] {
        if b && !a {
            out.push(name);
        }
    }
    for (name, a, b) in [
        (
            "recent_sign_in_secs",
            a.recent_sign_in_secs,
            b.recent_sign_in_secs,
        ),
        ("sa_idle_secs", a.sa_idle_secs, b.sa_idle_secs),
        (
            "terminal_idle_secs",
            a.terminal_idle_secs,
            b.terminal_idle_secs,
        ),
        (
            "terminal_max_secs",
            a.terminal_max_secs,
            b.terminal_max_secs,
        ),
        (
            "terminal_max_concurrent",
            a.terminal_max_concurrent,
            b.terminal_max_concurrent,
        ),
        // A kubeconfig that lives longer than the organization says.
        (
            "credential_validity_secs",
            a.credential_validity_secs,
            b.credential_validity_secs,
        ),
    ] {
        if a > b {
            out.push(name);
        }
    }
    out
}

/// The values a user's own row sets that exempt them from the organization: a switch set off
/// (it outlasts the organization turning it on later), a time or count not shorter than the
/// organization's. Only `settings.write` grants exemptions; `kubeconfig.write` adds
/// restrictions.
fn exemptions(row: &KubectlSettings, org: &EffectiveKubectlSettings) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (name, v) in [
        ("require_recent_sign_in", row.require_recent_sign_in),
        ("disable_cli", row.disable_cli),
        ("secrets_org_admins_only", row.secrets_org_admins_only),
        ("terminal_record_input", row.terminal_record_input),
    ] {
        if v == Some(false) {
            out.push(name);
        }
    }
    for (name, v, o) in [
        (
            "recent_sign_in_secs",
            row.recent_sign_in_secs,
            org.recent_sign_in_secs,
        ),
        ("sa_idle_secs", row.sa_idle_secs, org.sa_idle_secs),
        (
            "terminal_idle_secs",
            row.terminal_idle_secs,
            org.terminal_idle_secs,
        ),
        (
            "terminal_max_secs",
            row.terminal_max_secs,
            org.terminal_max_secs,
        ),
        (
            "terminal_max_concurrent",
            row.terminal_max_concurrent,
            org.terminal_max_concurrent,
        ),
        (
            "credential_validity_secs",
            row.credential_validity_secs,
            org.credential_validity_secs,
        ),
    ] {
        if v.is_some_and(|v| v >= o) {
            out.push(name);
        }
    }
    out
}

async fn settings_dto<C: ConnectionTrait>(
    db: &C,
    l: &ResolvedLevel,
) -> DomainResult<KubectlSettingsDto> {
    let id = level_id(l.scope, l.subject_id.as_deref());
    let (settings, updated) = load_level(db, &id).await?;
    let effective = match l.scope {
        KubectlSettingsScope::User => effective_settings(db, l.subject_id.as_deref(), None).await?,
        KubectlSettingsScope::Cluster => {
            effective_settings(db, None, l.subject_id.as_deref()).await?
        }
        KubectlSettingsScope::Organization => effective_settings(db, None, None).await?,
    };
    let inherited = match l.scope {
        KubectlSettingsScope::Organization => EffectiveKubectlSettings::default(),
        _ => effective_settings(db, None, None).await?,
    };
    Ok(KubectlSettingsDto {
        scope: l.scope,
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
    if l.scope != KubectlSettingsScope::Organization
        && matches!(req.max_credential_validity_secs, Some(Some(_)))
    {
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
    if l.scope == KubectlSettingsScope::Cluster
        && matches!(req.terminal_max_concurrent, Some(Some(_)))
    {
        fields.insert(
            "terminal_max_concurrent".into(),
            "is set for the organization or a user: it counts a person's terminals on every cluster".into(),
        );
    }
    if l.scope == KubectlSettingsScope::Cluster
        && matches!(req.credential_validity_secs, Some(Some(_)))
    {
        fields.insert(
            "credential_validity_secs".into(),
            "is set for the organization or a user: a kubeconfig holds one credential for every cluster".into(),
        );
    }
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    let before = settings_dto(&svc.db, &l).await?;
    let id = level_id(l.scope, l.subject_id.as_deref());
    let now = svc.clock.now().millis();
    let existing = kubectl_settings::Entity::find_by_id(id.clone())
        .one(&svc.db)
        .await?;
    let mut m = existing.clone().unwrap_or(kubectl_settings::Model {
        id: id.clone(),
        scope: l.scope.as_str().to_owned(),
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
    // Exempting a user or a cluster from a safeguard is the organization's call
    // (`settings.write`): `kubeconfig.write` (a user's level) and a project's `cluster.write`
    // (its cluster's) only add restrictions. Refused: anything that applies more loosely than
    // it did before the change (lifting a restriction an administrator put on one user or
    // cluster, or widening one), and, on a user's level, a new value that would outlast the
    // organization tightening later (a switch set off, a time not shorter than the
    // organization's).
    if l.scope != KubectlSettingsScope::Organization {
        let mut newly = looser(&after.effective, &before.effective);
        if l.scope == KubectlSettingsScope::User {
            let had = exemptions(&before.settings, &before.inherited);
            for f in exemptions(&after.settings, &after.inherited) {
                if !had.contains(&f) && !newly.contains(&f) {
                    newly.push(f);
                }
            }
        }
        if !newly.is_empty()
            && !svc
                .policy
                .effective(who.user_id)
                .await?
                .holds(Permission::SettingsWrite, &crate::access::Target::Org)
        {
            drop(tx);
            let reason = format!(
                "loosening kubectl safeguards for a {} ({}) takes settings.write",
                l.scope.as_str(),
                newly.join(", ")
            );
            svc.audit_denied(
                who,
                "kubectl_settings.update",
                &format!("kubectl_settings.{}", l.scope.as_str()),
                l.subject_name.as_deref().unwrap_or_default(),
                &reason,
            )
            .await?;
            return Err(DomainError::forbidden(reason));
        }
    }
    svc.audit_change(
        &tx,
        who,
        "kubectl_settings.update",
        &format!("kubectl_settings.{}", l.scope.as_str()),
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
