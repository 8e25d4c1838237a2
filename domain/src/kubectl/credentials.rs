//! Kubeconfig credentials: issuing them (kubectl and the web shell), what a user holds, checking
//! one on a request and revoking them.

use super::*;

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
        AuditEvent::by(who, AuditKind::Console, "kubeconfig.download", outcome)
            .resource("kubeconfig", who.email.clone())
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
    // Made with an API key, it lives no longer than the key (and is revoked with it).
    let mut expires_at = now.plus_secs(settings.credential_validity_secs);
    if let Some(key) = &who.api_key {
        expires_at = Timestamp(expires_at.millis().min(key.expires_at));
    }
    let ku = kube_user(&svc.db, &who.user_id.to_string(), &who.email, now).await?;
    // Without a fresh second factor (where one is due), only someone whose roles read gets a
    // kubeconfig (the step-up is asked for roles that write), and it stays a reader's: the
    // gateway refuses writes, exec and secrets on it whatever roles its holder gains later.
    let read_only = crate::identity::mfa::second_factor_is_stale(svc, who).await?;
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
        read_only,
        api_key_id: who.api_key.as_ref().map(|k| k.id.clone()),
    })
    .insert(&tx)
    .await?;
    let mut ev = event(Outcome::Allowed).details(json!({
        "serial": serial,
        "session_type": session_type.as_str(),
        "read_only": read_only,
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
/// `read_only`: opened without a fresh second factor by someone whose roles read (see
/// [`issue`]).
pub async fn issue_web_shell<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    cluster: &str,
    now: Timestamp,
    expires_at: Timestamp,
    read_only: bool,
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
        read_only,
        api_key_id: None,
    })
    .insert(db)
    .await?;
    Ok(serial)
}

/// Revoke, inside `tx`, the kubeconfig credentials downloaded with these API keys (the keys
/// being revoked): a leaked key's kubeconfigs end with it. Returns how many.
pub async fn revoke_made_with_keys<C: ConnectionTrait>(
    db: &C,
    key_ids: &[String],
    now: Timestamp,
) -> DomainResult<u64> {
    if key_ids.is_empty() {
        return Ok(0);
    }
    Ok(kube_credentials::Entity::update_many()
        .col_expr(
            kube_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_credentials::Column::ApiKeyId.is_in(key_ids.iter().cloned()))
        .filter(kube_credentials::Column::RevokedAt.is_null())
        .exec(db)
        .await?
        .rows_affected)
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
        console_url: svc.public_url.trim_end_matches('/').to_owned(),
        cli_builds: svc.cli.builds().await,
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
            crate::identity::users::find(svc, u).await?
        }
    };
    let now = svc.clock.now();
    // One transaction that holds the audit chain's lock from its start (on SQLite, the write
    // lock: a read-then-write transaction would fail when another writer commits in between).
    let tx = crate::audit::begin_change(&svc.db).await?;
    let done = revoke_in(&tx, Some(who), &target, now).await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(KubeconfigRevoked {
        user: target.email,
        revoked_before: now.rfc3339(),
        credentials_revoked: done,
    })
}

/// Revoke every kubeconfig credential of `target` issued until `now`, inside `tx`, with its
/// audit event: what an explicit revocation and a deactivation both do. Returns how many live
/// credentials it ended. `who`: the person who asked; none: the operator's command line.
pub(crate) async fn revoke_in<C: ConnectionTrait>(
    tx: &C,
    who: Option<&Principal>,
    target: &users::Model,
    now: Timestamp,
) -> DomainResult<u64> {
    kube_user(tx, &target.id, &target.email, now).await?;
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
        .exec(tx)
        .await?;
    let done = kube_credentials::Entity::update_many()
        .col_expr(
            kube_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_credentials::Column::UserId.eq(target.id.clone()))
        .filter(kube_credentials::Column::RevokedAt.is_null())
        .filter(kube_credentials::Column::ExpiresAt.gt(now.millis()))
        .exec(tx)
        .await?;
    crate::audit::append(
        tx,
        now,
        vec![AuditEvent::by_or_system(
            who,
            AuditKind::Console,
            "kubeconfig.revoke",
            Outcome::Allowed,
        )
        .resource("kubeconfig", target.email.clone())
        .details(json!({
            "user": target.email,
            "revoked_before": now.rfc3339(),
            "credentials_revoked": done.rows_affected,
        }))],
    )
    .await?;
    Ok(done.rows_affected)
}
