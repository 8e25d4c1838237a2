//! Enrolment: a cluster's one-time bootstrap tokens, the connect page and the agent manifest
//! (served once through a one-time URL), and the demo's import as the system.

use super::*;

/// A fresh one-time manifest URL and the manifest it serves (for callers allowed to import).
/// One manifest is pending per cluster: the tokens of earlier ones not yet used are revoked
/// (the audit event counts them).
pub async fn bootstrap(
    svc: &Services,
    who: &Principal,
    name: &str,
) -> DomainResult<ClusterBootstrap> {
    new_registration(svc, who, name, true).await
}

/// A new manifest (and link) for the cluster, revoking those still pending; with `replaces`,
/// an administrator's explicit new registration, which may register another agent key.
async fn new_registration(
    svc: &Services,
    who: &Principal,
    name: &str,
    replaces: bool,
) -> DomainResult<ClusterBootstrap> {
    let (c, owner) = load_writable(svc, who, name).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let revoked = revoke_pending(&tx, &c.id, svc.clock.now().millis()).await?;
    svc.clusters.forget(&c.id);
    let boot = mint(
        svc,
        &tx,
        Some(who.user_id.to_string()),
        &c,
        &owner,
        true,
        None,
        replaces,
    )
    .await?;
    let event = cluster_event(
        who,
        "cluster.bootstrap_token",
        &c.name,
        &owner,
        Outcome::Allowed,
    )
    .details(json!({ "revoked_tokens": revoked }));
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    Ok(boot)
}

/// Revoke a cluster's bootstrap tokens (manifest links and agent tokens) not yet used: they
/// expire now. Answers how many.
async fn revoke_pending<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    now: i64,
) -> DomainResult<u64> {
    let done = cluster_bootstrap_tokens::Entity::update_many()
        .col_expr(
            cluster_bootstrap_tokens::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(cluster_bootstrap_tokens::Column::ClusterId.eq(cluster_id))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .filter(cluster_bootstrap_tokens::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    Ok(done.rows_affected)
}

/// What the connect page shows: the cluster's one pending manifest. Viewing it again shows the
/// same link while it is live; a new one is minted only when none is pending (nothing to show
/// and nothing to revoke), else the caller asks for one with [`bootstrap`].
pub async fn connect(svc: &Services, who: &Principal, name: &str) -> DomainResult<ClusterConnect> {
    let (c, _) = load_writable(svc, who, name).await?;
    let now = svc.clock.now().millis();
    let warnings = connect_warnings(svc);
    let live = cluster_bootstrap_tokens::Entity::find()
        .filter(cluster_bootstrap_tokens::Column::ClusterId.eq(c.id.clone()))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .filter(cluster_bootstrap_tokens::Column::ExpiresAt.gt(now))
        .all(&svc.db)
        .await?;
    if let Some((hash, boot)) = svc.clusters.latest(&c.id) {
        if live
            .iter()
            .any(|t| MANIFEST_PURPOSES.contains(&t.purpose.as_str()) && t.token_hash == hash)
        {
            return Ok(ClusterConnect {
                bootstrap: Some(boot),
                pending: None,
                warnings,
            });
        }
    }
    if !live.is_empty() {
        let issued = live.iter().map(|t| t.created_at).max().unwrap_or(now);
        let until = live.iter().map(|t| t.expires_at).max().unwrap_or(now);
        return Ok(ClusterConnect {
            bootstrap: None,
            pending: Some(PendingManifest {
                issued_at: ts(issued),
                expires_at: ts(until),
            }),
            warnings,
        });
    }
    Ok(ClusterConnect {
        // Opening the page is no decision to replace a registered agent.
        bootstrap: Some(new_registration(svc, who, name, false).await?),
        pending: None,
        warnings,
    })
}

/// Whether a URL's host is a loopback (or unspecified) address, unreachable from a cluster.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => false,
    }
}

/// What the wizard says plainly about this installation's settings.
pub fn connect_warnings(svc: &Services) -> Vec<ConnectWarning> {
    let settings = svc.clusters.settings();
    let mut out = Vec::new();
    if is_loopback_url(&svc.public_url) {
        out.push(ConnectWarning {
            code: "loopback_url".into(),
            message: format!(
                "Warden's public URL is {}, a loopback address: an agent in a real cluster cannot reach it (only an agent on this machine can, such as the demo's). Set WARDEN_PUBLIC_URL to an address the cluster reaches (e.g. https://warden.example.com), restart Warden, then ask for a new link.",
                svc.public_url
            ),
        });
    }
    if settings.agent_image == ClusterSettings::default().agent_image {
        out.push(ConnectWarning {
            code: "unpublished_image".into(),
            message: format!(
                "The manifest names the agent image {}, Warden's default, which is not published. Build it with `docker build -f agent/Dockerfile -t REGISTRY/warden-agent:TAG .`, push it where the cluster can pull it, set WARDEN_AGENT_IMAGE to it, restart Warden, then ask for a new link.",
                settings.agent_image
            ),
        });
    }
    out
}

/// The agent manifest with a fresh bootstrap token (`GET /api/v1/clusters/{name}/manifest`).
pub async fn manifest(svc: &Services, who: &Principal, name: &str) -> DomainResult<String> {
    let (c, owner) = load_writable(svc, who, name).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    // One pending manifest per cluster, as with a new bootstrap token: every earlier download
    // (copies in a pipeline, a wiki, a chat) could otherwise register the cluster first, with
    // its own key, until the real one does.
    let revoked = revoke_pending(&tx, &c.id, svc.clock.now().millis()).await?;
    let boot = mint(
        svc,
        &tx,
        Some(who.user_id.to_string()),
        &c,
        &owner,
        false,
        None,
        false,
    )
    .await?;
    let event = cluster_event(who, "cluster.manifest", &c.name, &owner, Outcome::Allowed)
        .details(json!({ "revoked_tokens": revoked }));
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    Ok(boot.manifest)
}

/// A fresh bootstrap token: an independent random value, never derived from anything else
/// (in particular not from a manifest URL's token, which travels in URLs and shell history).
fn new_agent_token() -> String {
    format!("{BOOTSTRAP_TOKEN_PREFIX}{}", random_token(32))
}

/// Store the hash of a one-time token of `purpose` for cluster `c`.
async fn insert_token<C: ConnectionTrait>(
    db: &C,
    c: &clusters::Model,
    purpose: &str,
    token: &str,
    expires_at: i64,
    created_by: Option<String>,
    now: i64,
) -> DomainResult<()> {
    cluster_bootstrap_tokens::ActiveModel::from(cluster_bootstrap_tokens::Model {
        id: uuid::Uuid::new_v4().to_string(),
        cluster_id: c.id.clone(),
        purpose: purpose.into(),
        token_hash: sha256_hex(token.as_bytes()),
        expires_at,
        used_at: None,
        used_fingerprint: None,
        created_by,
        created_at: now,
    })
    .insert(db)
    .await?;
    Ok(())
}

fn render(
    svc: &Services,
    c: &clusters::Model,
    project: &str,
    token: &str,
    expires: i64,
    warden_url: Option<&str>,
) -> DomainResult<String> {
    let settings = svc.clusters.settings();
    let proxy = stored_proxy(&settings, c)?;
    Ok(agent_protocol::render_manifest(&ManifestParams {
        cluster: &c.name,
        project,
        warden_url: warden_url.unwrap_or(&svc.public_url).trim_end_matches('/'),
        bootstrap_token: token,
        bootstrap_expires_at: &ts(expires),
        warden_ca_pem: settings.warden_ca_pem.as_deref(),
        image: &settings.agent_image,
        proxy: &proxy,
        allow_insecure_http: settings.allow_insecure_http,
    }))
}

/// Mint a bootstrap token (and, with `with_url`, a one-time manifest URL standing for it).
pub(super) async fn mint<C: ConnectionTrait>(
    svc: &Services,
    db: &C,
    created_by: Option<String>,
    c: &clusters::Model,
    project: &str,
    with_url: bool,
    warden_url: Option<&str>,
    replaces: bool,
) -> DomainResult<ClusterBootstrap> {
    let (agent_purpose, manifest_purpose) = if replaces {
        (PURPOSE_AGENT_REPLACE, PURPOSE_MANIFEST_REPLACE)
    } else {
        (PURPOSE_AGENT, PURPOSE_MANIFEST)
    };
    let now = svc.clock.now();
    let agent_expires = now.plus_secs(AGENT_TOKEN_TTL_SECS).millis();
    let url_expires = now.plus_secs(MANIFEST_URL_TTL_SECS).millis();
    // The manifest shown next to a URL and the one the URL serves carry two different,
    // independent bootstrap tokens: the URL's manifest gets its own at download time.
    let url_token = with_url.then(|| random_token(32));
    let agent_token = new_agent_token();
    insert_token(
        db,
        c,
        agent_purpose,
        &agent_token,
        agent_expires,
        created_by.clone(),
        now.millis(),
    )
    .await?;
    if let Some(u) = &url_token {
        insert_token(
            db,
            c,
            manifest_purpose,
            u,
            url_expires,
            created_by.clone(),
            now.millis(),
        )
        .await?;
    }
    let url_hash = url_token.as_ref().map(|u| sha256_hex(u.as_bytes()));
    let manifest_url = url_token
        .map(|u| {
            format!(
                "{}{}/{u}",
                svc.public_url.trim_end_matches('/'),
                agent_protocol::MANIFEST_PATH
            )
        })
        .unwrap_or_default();
    let boot = ClusterBootstrap {
        apply_command: if manifest_url.is_empty() {
            String::new()
        } else {
            format!("kubectl apply -f {manifest_url}")
        },
        manifest_url,
        manifest_url_expires_at: ts(url_expires),
        bootstrap_expires_at: ts(agent_expires),
        manifest: render(svc, c, project, &agent_token, agent_expires, warden_url)?,
    };
    if let Some(hash) = url_hash {
        svc.clusters.remember(&c.id, hash, boot.clone());
    }
    Ok(boot)
}

/// Why a manifest download was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadRefused {
    /// Unknown token: 404.
    Unknown,
    /// Used or expired: 410.
    Gone(String),
}

/// Serve a manifest for a one-time URL token, without a session: the token authorizes only this
/// download, once, before it expires. Audited (kind `agent`).
pub async fn download_manifest(
    svc: &Services,
    url_token: &str,
    meta: crate::audit::RequestMeta,
) -> DomainResult<Result<String, DownloadRefused>> {
    let now = svc.clock.now().millis();
    let row = cluster_bootstrap_tokens::Entity::find()
        .filter(cluster_bootstrap_tokens::Column::TokenHash.eq(sha256_hex(url_token.as_bytes())))
        .filter(cluster_bootstrap_tokens::Column::Purpose.is_in(MANIFEST_PURPOSES))
        .one(&svc.db)
        .await?;
    let cluster = match &row {
        Some(r) => {
            clusters::Entity::find_by_id(r.cluster_id.clone())
                .one(&svc.db)
                .await?
        }
        None => None,
    };
    let names = project_names(&svc.db).await?;
    let audit = |outcome: Outcome, reason: Option<String>| {
        let name = cluster
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "unknown".into());
        let mut ev = AuditEvent::new(
            AuditKind::Agent,
            crate::audit::Actor::Anonymous {
                claimed: "manifest URL".into(),
            },
            crate::audit::SessionType::Api,
            "agent.manifest_download",
            outcome,
        )
        .resource("cluster", name.clone())
        .request(meta.clone());
        if let Some(c) = &cluster {
            ev.cluster = Some(c.name.clone());
            if let Some(p) = names.get(&c.project_id) {
                ev = ev.project(p.clone());
            }
        }
        if let Some(r) = reason {
            ev = ev.reason(r);
        }
        ev
    };
    let (Some(row), Some(c)) = (row.clone(), cluster.clone()) else {
        // Anyone can ask with made-up links: sampled, as the other anonymous refusals.
        svc.record_refusal(audit(
            Outcome::Denied,
            Some("unknown manifest token".into()),
        ))
        .await?;
        return Ok(Err(DownloadRefused::Unknown));
    };
    if row.used_at.is_some() {
        let msg = "this manifest link was already used; links work once. Ask for a new one in the console or download the manifest there".to_owned();
        svc.record_refusal(audit(Outcome::Denied, Some(msg.clone())))
            .await?;
        return Ok(Err(DownloadRefused::Gone(msg)));
    }
    if row.expires_at <= now {
        let msg = "this manifest link has expired; ask for a new one in the console".to_owned();
        svc.record_refusal(audit(Outcome::Denied, Some(msg.clone())))
            .await?;
        return Ok(Err(DownloadRefused::Gone(msg)));
    }
    // The redemption, the bootstrap token it mints and its audit event commit together: a
    // link is never spent without a trace, nor a token minted that nobody can account for.
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Mark it used only if nobody raced us to it.
    let done = cluster_bootstrap_tokens::Entity::update_many()
        .col_expr(
            cluster_bootstrap_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(cluster_bootstrap_tokens::Column::Id.eq(row.id.clone()))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .exec(&tx)
        .await?;
    if done.rows_affected != 1 {
        tx.rollback().await?;
        let msg = "this manifest link was already used; links work once".to_owned();
        svc.record_refusal(audit(Outcome::Denied, Some(msg.clone())))
            .await?;
        return Ok(Err(DownloadRefused::Gone(msg)));
    }
    // A fresh, independent bootstrap token for the manifest this link serves.
    let agent_token = new_agent_token();
    let expires = svc.clock.now().plus_secs(AGENT_TOKEN_TTL_SECS).millis();
    // A replacement link's manifest replaces, as the link does.
    let agent_purpose = if row.purpose == PURPOSE_MANIFEST_REPLACE {
        PURPOSE_AGENT_REPLACE
    } else {
        PURPOSE_AGENT
    };
    insert_token(
        &tx,
        &c,
        agent_purpose,
        &agent_token,
        expires,
        row.created_by.clone(),
        now,
    )
    .await?;
    crate::audit::append(&tx, svc.clock.now(), vec![audit(Outcome::Allowed, None)]).await?;
    tx.commit().await?;
    let project = names.get(&c.project_id).cloned().unwrap_or_default();
    Ok(Ok(render(svc, &c, &project, &agent_token, expires, None)?))
}

/// Import (or find) a cluster as the system, without asking the gate, and mint a manifest for
/// it whose agent dials `warden_url`. Only for the demo cluster that `WARDEN_DEMO=true` starts
/// in process; never reachable from a request.
pub async fn unsafe_import_as_system(
    svc: &Services,
    name: &str,
    project: &str,
    description: &str,
    warden_url: &str,
) -> DomainResult<String> {
    let name = DnsLabel::parse(name).map_err(|e| DomainError::invalid_value("name", e))?;
    let p = projects::Entity::find()
        .filter(projects::Column::Name.eq(project))
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("project"))?;
    let existing = clusters::Entity::find()
        .filter(clusters::Column::Name.eq(name.as_str()))
        .one(&svc.db)
        .await?;
    let c = match existing {
        Some(c) => c,
        None => {
            let now = svc.clock.now().millis();
            let m = clusters::ActiveModel::from(clusters::Model {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_string(),
                description: description.to_owned(),
                labels: serde_json::to_string(&BTreeMap::from([("warden.dev/demo", "true")]))
                    .unwrap_or_else(|_| "{}".into()),
                project_id: p.id.clone(),
                status: cluster_status::PENDING.into(),
                status_reason: Some("waiting for the agent's first connection".into()),
                last_seen: None,
                registered_at: None,
                connected_at: None,
                kubernetes_version: None,
                node_count: None,
                agent_version: None,
                fingerprint: None,
                facts: "{}".into(),
                proxy: "{}".into(),
                created_at: now,
                updated_at: now,
                agent_public_key: None,
                agent_key_registered_at: None,
            })
            .insert(&svc.db)
            .await
            .on_unique(
                "uq_clusters_name",
                "name",
                "a cluster with this name already exists",
            )?;
            let dto = dto_of(svc, &m).await?;
            let mut ev = AuditEvent::new(
                AuditKind::System,
                crate::audit::Actor::System,
                crate::audit::SessionType::System,
                "cluster.create",
                Outcome::Allowed,
            )
            .resource("cluster", m.name.clone())
            .project(p.name.clone())
            .details(json!({"before": null, "after": dto, "demo": true}));
            ev.cluster = Some(m.name.clone());
            svc.audit.record(ev).await?;
            svc.policy.bump();
            m
        }
    };
    let project_name = project_names(&svc.db)
        .await?
        .get(&c.project_id)
        .cloned()
        .unwrap_or_else(|| p.name.clone());
    Ok(mint(
        svc,
        &svc.db,
        None,
        &c,
        &project_name,
        false,
        Some(warden_url),
        false,
    )
    .await?
    .manifest)
}
