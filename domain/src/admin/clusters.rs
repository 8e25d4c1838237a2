//! Clusters: import, list, change, delete; the one-time bootstrap tokens and the agent manifest.
//!
//! A cluster belongs to one project and may be shared with others. `cluster.read` on the owning
//! project (or on a project it is shared with) lets a caller see it; `cluster.write` on the
//! owning project lets them import, change, delete it and download its manifest. Every change is
//! audited with before and after values; the agent's side (registration, connection, heartbeats)
//! lives in [`crate::agents`].

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::ts;
use crate::access::{Action, Principal};
use crate::agent_protocol::{self, ManifestParams, BOOTSTRAP_TOKEN_PREFIX, CLEANUP_COMMAND};
use crate::audit::{AuditEvent, AuditKind, Outcome};
use crate::dto::{
    cluster_status, ClusterBootstrap, ClusterConnect, ClusterDetail, ClusterDto, ClusterFacts,
    ClusterQuery, ClusterStatus, ClusterStatusChange, ConnectWarning, CreateClusterRequest,
    CreatedCluster, Page, PendingManifest, ProxySettings, UpdateClusterRequest,
};
use crate::entities::{
    cluster_agent_credentials, cluster_bootstrap_tokens, cluster_shares, cluster_status_history,
    clusters, projects,
};
use crate::error::{DomainError, DomainResult, OnConstraint};
use crate::permissions::Permission;
use crate::secrets::{random_token, sha256_hex};
use crate::types::{label_key_ok, label_name_ok, DnsLabel};
use crate::Services;

/// How long a bootstrap token in a manifest is accepted.
pub const AGENT_TOKEN_TTL_SECS: i64 = 24 * 3600;
/// How long a one-time manifest URL works.
pub const MANIFEST_URL_TTL_SECS: i64 = 3600;
/// Status changes kept per cluster.
pub const HISTORY_KEEP: usize = 50;

pub const PURPOSE_AGENT: &str = "agent";
pub const PURPOSE_MANIFEST: &str = "manifest";

/// The server's live tunnels, as the domain needs them.
pub trait ClusterRuntime: Send + Sync {
    /// Whether an agent tunnel for the cluster is open in this process.
    fn is_connected(&self, cluster_id: &str) -> bool;
    /// Close the cluster's tunnel now, telling the agent why (its credential is revoked).
    fn revoke(&self, cluster_id: &str, code: &str, message: &str);
    /// Close the cluster's tunnel so that the agent reconnects at once (its credential stays
    /// valid), e.g. to pick up a new name.
    fn reconnect(&self, _cluster_id: &str, _reason: &str) {}
}

/// Settings of the cluster feature, set once at start-up.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The agent image written into manifests.
    pub agent_image: String,
    /// PEM of the CA that signs `WARDEN_PUBLIC_URL`'s certificate, written into manifests.
    pub warden_ca_pem: Option<String>,
    /// How often agents send a heartbeat.
    pub heartbeat_interval: Duration,
    /// A cluster without a heartbeat for this long is `disconnected`.
    pub heartbeat_timeout: Duration,
    /// Manifests let agents dial a plain `http://` Warden on another host.
    pub allow_insecure_http: bool,
    /// Seals the proxy settings (they may hold a password) at rest (`WARDEN_MASTER_KEY`).
    pub sealer: Option<crate::secrets::Sealer>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            agent_image: format!(
                "ghcr.io/warden-dev/warden-agent:{}",
                env!("CARGO_PKG_VERSION")
            ),
            warden_ca_pem: None,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            allow_insecure_http: false,
            sealer: None,
        }
    }
}

/// What the cluster use cases need from the running server; empty until start-up sets it.
#[derive(Default)]
pub struct ClusterHooks {
    runtime: OnceLock<Arc<dyn ClusterRuntime>>,
    settings: OnceLock<ClusterSettings>,
    /// Per cluster id: the latest manifest link this process issued (the hash of its token and
    /// what the connect page shows), so that viewing the page again shows it again instead of
    /// minting another. Only ever served while the link's row is live in the database.
    latest: std::sync::Mutex<HashMap<String, (String, ClusterBootstrap)>>,
}

impl ClusterHooks {
    pub fn set_runtime(&self, runtime: Arc<dyn ClusterRuntime>) {
        let _ = self.runtime.set(runtime);
    }
    pub fn set_settings(&self, settings: ClusterSettings) {
        let _ = self.settings.set(settings);
    }
    pub fn settings(&self) -> ClusterSettings {
        self.settings.get().cloned().unwrap_or_default()
    }
    pub fn runtime(&self) -> Option<&Arc<dyn ClusterRuntime>> {
        self.runtime.get()
    }
    fn remember(&self, cluster_id: &str, url_hash: String, boot: ClusterBootstrap) {
        if let Ok(mut m) = self.latest.lock() {
            m.insert(cluster_id.to_owned(), (url_hash, boot));
        }
    }
    fn latest(&self, cluster_id: &str) -> Option<(String, ClusterBootstrap)> {
        self.latest.lock().ok()?.get(cluster_id).cloned()
    }
    fn forget(&self, cluster_id: &str) {
        if let Ok(mut m) = self.latest.lock() {
            m.remove(cluster_id);
        }
    }
}

// ---- conversions ----

/// Project id -> name.
pub(crate) async fn project_names<C: ConnectionTrait>(
    db: &C,
) -> DomainResult<HashMap<String, String>> {
    Ok(projects::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect())
}

/// Cluster id -> ids of the projects it is shared with.
async fn shares<C: ConnectionTrait>(db: &C) -> DomainResult<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for s in cluster_shares::Entity::find().all(db).await? {
        out.entry(s.cluster_id).or_default().push(s.project_id);
    }
    Ok(out)
}

/// What [`to_dto`] needs for `rows` only: the names of their owning and sharing projects,
/// and their shares (two keyed queries, whatever the size of the organization).
async fn names_and_shares_of<C: ConnectionTrait>(
    db: &C,
    rows: &[clusters::Model],
) -> DomainResult<(HashMap<String, String>, HashMap<String, Vec<String>>)> {
    let mut shares: HashMap<String, Vec<String>> = HashMap::new();
    let mut project_ids: BTreeSet<String> = rows.iter().map(|c| c.project_id.clone()).collect();
    for chunk in rows.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|c| c.id.clone()).collect();
        for s in cluster_shares::Entity::find()
            .filter(cluster_shares::Column::ClusterId.is_in(ids))
            .all(db)
            .await?
        {
            project_ids.insert(s.project_id.clone());
            shares.entry(s.cluster_id).or_default().push(s.project_id);
        }
    }
    let project_ids: Vec<String> = project_ids.into_iter().collect();
    let mut names = HashMap::new();
    for chunk in project_ids.chunks(1000) {
        names.extend(
            projects::Entity::find()
                .filter(projects::Column::Id.is_in(chunk.to_vec()))
                .all(db)
                .await?
                .into_iter()
                .map(|p| (p.id, p.name)),
        );
    }
    Ok((names, shares))
}

/// `http://user:secret@host` as `http://user:***@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..s], &url[at + 1..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

const PROXY_PURPOSE: &str = "clusters.proxy";

/// The proxy settings as stored: sealed with the master key when one is set (a proxy URL may
/// carry a password), plain JSON otherwise.
fn seal_proxy(settings: &ClusterSettings, p: &ProxySettings) -> String {
    let json = serde_json::to_string(p).unwrap_or_else(|_| "{}".into());
    match &settings.sealer {
        Some(sealer) => sealer.seal(PROXY_PURPOSE, json.as_bytes()),
        None => json,
    }
}

/// The proxy settings of a cluster, opened. A sealed value that cannot be opened (no or
/// another master key) reads as no proxy, and says so in the log.
fn stored_proxy(settings: &ClusterSettings, m: &clusters::Model) -> ProxySettings {
    if !crate::secrets::Sealer::is_sealed(&m.proxy) {
        return serde_json::from_str(&m.proxy).unwrap_or_default();
    }
    let opened = settings
        .sealer
        .as_ref()
        .ok_or_else(|| "WARDEN_MASTER_KEY is not set".to_owned())
        .and_then(|s| s.open(PROXY_PURPOSE, &m.proxy).map_err(|e| e.to_string()));
    match opened {
        Ok(json) => serde_json::from_slice(&json).unwrap_or_default(),
        Err(e) => {
            tracing::error!(cluster = %m.name, error = %e, "cannot open the cluster's sealed proxy settings");
            ProxySettings::default()
        }
    }
}

/// A proxy URL sent back as the API showed it (`user:***@host`) keeps the stored password.
fn keep_masked(new: &Option<String>, old: &Option<String>) -> Option<String> {
    match (new, old) {
        (Some(n), Some(o)) if n.contains(":***@") && redact_url(o) == n.trim() => Some(o.clone()),
        _ => new.clone(),
    }
}

fn to_dto(
    settings: &ClusterSettings,
    m: &clusters::Model,
    names: &HashMap<String, String>,
    shares: &HashMap<String, Vec<String>>,
) -> ClusterDto {
    let facts: ClusterFacts = serde_json::from_str(&m.facts).unwrap_or_default();
    let mut proxy = stored_proxy(settings, m);
    proxy.http_proxy = proxy.http_proxy.as_deref().map(redact_url);
    proxy.https_proxy = proxy.https_proxy.as_deref().map(redact_url);
    let mut shared_with: Vec<String> = shares
        .get(&m.id)
        .map(|ids| ids.iter().filter_map(|id| names.get(id).cloned()).collect())
        .unwrap_or_default();
    shared_with.sort();
    ClusterDto {
        id: m.id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        labels: serde_json::from_str(&m.labels).unwrap_or_default(),
        project: names.get(&m.project_id).cloned().unwrap_or_default(),
        shared_with,
        status: ClusterStatus::from_stored(&m.status),
        status_reason: m.status_reason.clone(),
        last_seen: m.last_seen.map(ts),
        registered_at: m.registered_at.map(ts),
        connected_at: m.connected_at.map(ts),
        kubernetes_version: m.kubernetes_version.clone(),
        node_count: m.node_count,
        agent_version: m.agent_version.clone(),
        fingerprint: m.fingerprint.clone(),
        namespaces: facts.namespaces,
        nodes: facts.nodes,
        proxy,
        created_at: ts(m.created_at),
        updated_at: ts(m.updated_at),
    }
}

/// The DTO of one cluster.
pub async fn dto_of(svc: &Services, m: &clusters::Model) -> DomainResult<ClusterDto> {
    dto_in(svc, &svc.db, m).await
}

/// The DTO of one cluster as `db` (e.g. a transaction that changed it) sees it.
async fn dto_in<C: ConnectionTrait>(
    svc: &Services,
    db: &C,
    m: &clusters::Model,
) -> DomainResult<ClusterDto> {
    Ok(to_dto(
        &svc.clusters.settings(),
        m,
        &project_names(db).await?,
        &shares(db).await?,
    ))
}

pub async fn find<C: ConnectionTrait>(db: &C, name: &str) -> DomainResult<clusters::Model> {
    clusters::Entity::find()
        .filter(clusters::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| DomainError::not_found("cluster"))
}

/// Names of clusters owned by a project.
pub async fn names_owned_by<C: ConnectionTrait>(
    db: &C,
    project_id: &str,
) -> DomainResult<Vec<String>> {
    Ok(clusters::Entity::find()
        .filter(clusters::Column::ProjectId.eq(project_id))
        .order_by_asc(clusters::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect())
}

// ---- validation ----

pub fn check_description(d: &str) -> DomainResult<String> {
    let d = d.trim();
    if d.chars().count() > 1024 || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(
            "description",
            "must be at most 1024 characters without control characters",
        ));
    }
    Ok(d.to_owned())
}

/// Labels follow Kubernetes' rules: `[prefix/]name` keys, values of at most 63 characters.
pub fn check_labels(labels: &BTreeMap<String, String>) -> DomainResult<BTreeMap<String, String>> {
    if labels.len() > 64 {
        return Err(DomainError::invalid("labels", "at most 64 labels"));
    }
    for (k, v) in labels {
        if !label_key_ok(k) {
            return Err(DomainError::invalid(
                "labels",
                format!("label key {k:?} must be [prefix/]name: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ));
        }
        if !(v.is_empty() || label_name_ok(v)) {
            return Err(DomainError::invalid(
                "labels",
                format!("label value {v:?} must be empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ));
        }
    }
    Ok(labels.clone())
}

fn clean(o: &Option<String>) -> Option<String> {
    o.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub fn check_proxy(p: &ProxySettings) -> DomainResult<ProxySettings> {
    let mut fields = BTreeMap::new();
    let out = ProxySettings {
        http_proxy: clean(&p.http_proxy),
        https_proxy: clean(&p.https_proxy),
        no_proxy: clean(&p.no_proxy),
        ca_pem: p
            .ca_pem
            .as_ref()
            .map(|s| s.trim().to_owned() + "\n")
            .filter(|s| !s.trim().is_empty()),
    };
    for (field, v) in [
        ("proxy.http_proxy", &out.http_proxy),
        ("proxy.https_proxy", &out.https_proxy),
    ] {
        if let Some(v) = v {
            let host = v
                .strip_prefix("http://")
                .map(|r| r.rsplit('@').next().unwrap_or_default());
            let ok = v.len() <= 1024
                && !v.chars().any(|c| c.is_control() || c.is_whitespace())
                && host.is_some_and(|h| !h.is_empty() && !h.starts_with(':'));
            if !ok {
                fields.insert(
                    field.to_owned(),
                    "must be an http://host:port URL (an HTTP proxy that supports CONNECT)"
                        .to_owned(),
                );
            }
        }
    }
    if let Some(n) = &out.no_proxy {
        if n.len() > 2048 || n.chars().any(|c| c.is_control()) {
            fields.insert(
                "proxy.no_proxy".into(),
                "must be a comma-separated list of hosts of at most 2048 characters".into(),
            );
        }
    }
    if let Some(ca) = &out.ca_pem {
        if ca.len() > 65_536
            || !ca.contains("-----BEGIN CERTIFICATE-----")
            || !ca.contains("-----END CERTIFICATE-----")
        {
            fields.insert(
                "proxy.ca_pem".into(),
                "must be one or more PEM certificates".into(),
            );
        }
    }
    if fields.is_empty() {
        Ok(out)
    } else {
        Err(DomainError::Invalid { fields })
    }
}

// ---- access ----

/// Projects where `who` may read clusters.
async fn readable_projects(svc: &Services, who: &Principal) -> DomainResult<BTreeSet<String>> {
    let eff = svc.policy.effective(who.user_id).await?;
    Ok(eff
        .all_projects
        .iter()
        .filter(|p| {
            eff.decide(&Action::project(Permission::ClusterRead, p.as_str()))
                .is_ok()
        })
        .cloned()
        .collect())
}

/// Load a cluster for reading: allowed through the owning project or any project it is shared
/// with. A caller who may read no cluster of the organization hears 403 whether or not it
/// exists; the gate audits every refusal.
async fn load_readable(
    svc: &Services,
    who: &Principal,
    name: &str,
) -> DomainResult<(
    clusters::Model,
    HashMap<String, String>,
    HashMap<String, Vec<String>>,
)> {
    let Some(c) = clusters::Entity::find()
        .filter(clusters::Column::Name.eq(name))
        .one(&svc.db)
        .await?
    else {
        let eff = svc.policy.effective(who.user_id).await?;
        if !eff.org_permissions().contains(&Permission::ClusterRead) {
            svc.gate(who, Action::org(Permission::ClusterRead)).await?;
        }
        return Err(DomainError::not_found("cluster"));
    };
    let (names, shares) = names_and_shares_of(&svc.db, std::slice::from_ref(&c)).await?;
    let owner = names.get(&c.project_id).cloned().unwrap_or_default();
    let readable = readable_projects(svc, who).await?;
    let via = std::iter::once(owner.clone())
        .chain(
            shares
                .get(&c.id)
                .into_iter()
                .flatten()
                .filter_map(|id| names.get(id).cloned()),
        )
        .find(|p| readable.contains(p))
        .unwrap_or(owner);
    svc.gate(who, Action::project(Permission::ClusterRead, via))
        .await?;
    Ok((c, names, shares))
}

/// Load a cluster for changing: `cluster.write` on the owning project.
async fn load_writable(
    svc: &Services,
    who: &Principal,
    name: &str,
) -> DomainResult<(clusters::Model, String)> {
    let names = project_names(&svc.db).await?;
    let Some(c) = clusters::Entity::find()
        .filter(clusters::Column::Name.eq(name))
        .one(&svc.db)
        .await?
    else {
        let eff = svc.policy.effective(who.user_id).await?;
        if !eff.org_permissions().contains(&Permission::ClusterWrite) {
            svc.gate(who, Action::org(Permission::ClusterWrite)).await?;
        }
        return Err(DomainError::not_found("cluster"));
    };
    let owner = names.get(&c.project_id).cloned().unwrap_or_default();
    svc.gate(
        who,
        Action::project(Permission::ClusterWrite, owner.clone()),
    )
    .await?;
    Ok((c, owner))
}

/// Resolve the projects to share with: they must exist and be visible to the caller.
async fn resolve_shares(
    svc: &Services,
    who: &Principal,
    owner_id: &str,
    wanted: &[String],
) -> DomainResult<Vec<projects::Model>> {
    let eff = svc.policy.effective(who.user_id).await?;
    let visible: BTreeSet<String> = eff.visible_projects().into_iter().collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        let name = name.trim();
        if !seen.insert(name.to_owned()) {
            continue;
        }
        let p = projects::Entity::find()
            .filter(projects::Column::Name.eq(name))
            .one(&svc.db)
            .await?;
        match p {
            Some(p) if visible.contains(&p.name) => {
                if p.id != owner_id {
                    out.push(p);
                }
            }
            _ => {
                return Err(DomainError::invalid(
                    "shared_with",
                    format!("unknown project {name:?}"),
                ))
            }
        }
    }
    Ok(out)
}

async fn replace_shares<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    projects: &[projects::Model],
    now: i64,
) -> DomainResult<()> {
    cluster_shares::Entity::delete_many()
        .filter(cluster_shares::Column::ClusterId.eq(cluster_id))
        .exec(db)
        .await?;
    for p in projects {
        cluster_shares::ActiveModel::from(cluster_shares::Model {
            cluster_id: cluster_id.to_owned(),
            project_id: p.id.clone(),
            created_at: now,
        })
        .insert(db)
        .await?;
    }
    Ok(())
}

/// An audit event about a cluster, with its cluster and project columns set.
fn cluster_event(
    who: &Principal,
    action: &str,
    cluster: &str,
    project: &str,
    outcome: Outcome,
) -> AuditEvent {
    let mut ev = AuditEvent::new(
        AuditKind::Console,
        who.actor(),
        who.session_type,
        action,
        outcome,
    )
    .resource("cluster", cluster)
    .project(project)
    .request(who.request.clone());
    ev.cluster = Some(cluster.to_owned());
    ev
}

// ---- use cases ----

/// The clusters the caller can see (owned by or shared with a project where they hold
/// `cluster.read`), filtered.
/// The clusters the caller can see, as a condition: an organization-wide `cluster.read` sees
/// every cluster; anyone else those owned by or shared with a project where they hold it.
/// `None`: none at all.
async fn visible(svc: &Services, who: &Principal) -> DomainResult<Option<sea_orm::Condition>> {
    let eff = svc.policy.effective(who.user_id).await?;
    if eff.active && eff.org_permissions().contains(&Permission::ClusterRead) {
        return Ok(Some(sea_orm::Condition::all()));
    }
    let readable: Vec<String> = readable_projects(svc, who).await?.into_iter().collect();
    if readable.is_empty() {
        return Ok(None);
    }
    Ok(Some(sea_orm::Condition::all().add(held_by(readable))))
}

/// Owned by, or shared with, one of the projects named `names`.
fn held_by(names: Vec<String>) -> sea_orm::Condition {
    use sea_orm::sea_query::{Expr, Query};
    let project_ids = |names: Vec<String>| {
        Query::select()
            .column(projects::Column::Id)
            .from(projects::Entity)
            .and_where(Expr::col(projects::Column::Name).is_in(names))
            .to_owned()
    };
    sea_orm::Condition::any()
        .add(clusters::Column::ProjectId.in_subquery(project_ids(names.clone())))
        .add(
            clusters::Column::Id.in_subquery(
                Query::select()
                    .column(cluster_shares::Column::ClusterId)
                    .from(cluster_shares::Entity)
                    .and_where(
                        Expr::col(cluster_shares::Column::ProjectId)
                            .in_subquery(project_ids(names)),
                    )
                    .to_owned(),
            ),
        )
}

/// The names of the clusters the caller can see, sorted: what a form's cluster choice needs,
/// without [`list`]'s projects, shares and facts.
pub async fn names(svc: &Services, who: &Principal) -> DomainResult<Vec<String>> {
    use sea_orm::QuerySelect;
    let Some(cond) = visible(svc, who).await? else {
        return Ok(vec![]);
    };
    Ok(clusters::Entity::find()
        .select_only()
        .column(clusters::Column::Name)
        .filter(cond)
        .order_by_asc(clusters::Column::Name)
        .into_tuple()
        .all(&svc.db)
        .await?)
}

pub async fn list(
    svc: &Services,
    who: &Principal,
    q: &ClusterQuery,
) -> DomainResult<Page<ClusterDto>> {
    use sea_orm::sea_query::{Expr, LikeExpr};
    use sea_orm::QuerySelect;
    let after = super::cursor::decode("clusters", q.cursor.as_deref())?;
    let limit = super::cursor::limit(q.limit);
    let Some(mut cond) = visible(svc, who).await? else {
        return Ok(Page {
            items: vec![],
            next: None,
        });
    };
    if let Some(p) = q.project.as_deref().filter(|p| !p.is_empty()) {
        cond = cond.add(held_by(vec![p.to_owned()]));
    }
    if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
        let status = ClusterStatus::parse(s).ok_or_else(|| {
            DomainError::invalid("status", "one of pending, connected, disconnected")
        })?;
        cond = cond.add(clusters::Column::Status.eq(status.as_str()));
    }
    let label = q
        .label
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
            None => (l.to_owned(), None),
        });
    if let Some((k, v)) = &label {
        // Labels are stored as a JSON object: `"k":` (and `"k":"v"`) occur in it exactly when
        // the label is there (quotes inside keys and values are escaped). Checked again below.
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let needle = match v {
            Some(v) => format!("{}:{}", json(k), json(v)),
            None => format!("{}:", json(k)),
        };
        cond = cond.add(
            Expr::col(clusters::Column::Labels)
                .like(LikeExpr::new(super::cursor::contains_pattern(&needle)).escape('\\')),
        );
    }
    if let Some(c) = super::cursor::contains_any(
        q.q.as_deref(),
        [
            Expr::col(clusters::Column::Name).into(),
            Expr::col(clusters::Column::Description).into(),
        ],
    ) {
        cond = cond.add(c);
    }
    if let Some(a) = after {
        cond = cond.add(clusters::Column::Name.gt(a));
    }
    let mut rows = clusters::Entity::find()
        .filter(cond)
        .order_by_asc(clusters::Column::Name)
        .limit(limit + 1)
        .all(&svc.db)
        .await?;
    let next = super::cursor::page(&mut rows, limit, "clusters", |c| &c.name);
    let (names, shares) = names_and_shares_of(&svc.db, &rows).await?;
    let settings = svc.clusters.settings();
    let items = rows
        .iter()
        .map(|c| to_dto(&settings, c, &names, &shares))
        .filter(|d| match &label {
            Some((k, v)) => match (d.labels.get(k), v) {
                (None, _) => false,
                (Some(actual), Some(v)) => actual == v,
                _ => true,
            },
            None => true,
        })
        .collect();
    Ok(Page { items, next })
}

pub async fn get(svc: &Services, who: &Principal, name: &str) -> DomainResult<ClusterDetail> {
    let (c, names, shares) = load_readable(svc, who, name).await?;
    let history = cluster_status_history::Entity::find()
        .filter(cluster_status_history::Column::ClusterId.eq(c.id.clone()))
        .order_by_desc(cluster_status_history::Column::At)
        .all(&svc.db)
        .await?
        .into_iter()
        .take(HISTORY_KEEP)
        .map(|h| ClusterStatusChange {
            status: ClusterStatus::from_stored(&h.status),
            reason: h.reason,
            at: ts(h.at),
        })
        .collect();
    Ok(ClusterDetail {
        cluster: to_dto(&svc.clusters.settings(), &c, &names, &shares),
        history,
        cleanup_command: CLEANUP_COMMAND.to_owned(),
    })
}

/// Import a cluster: `cluster.write` on the project. Answers with a one-time manifest URL.
pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateClusterRequest,
) -> DomainResult<CreatedCluster> {
    let project_name = req.project.trim().to_owned();
    svc.gate(
        who,
        Action::project(Permission::ClusterWrite, project_name.clone()),
    )
    .await?;
    let mut fields = BTreeMap::new();
    let name = DnsLabel::parse(req.name.trim())
        .map_err(|e| fields.insert("name".to_owned(), e.0))
        .ok();
    let description = check_description(req.description.as_deref().unwrap_or(""))
        .map_err(|e| merge(&mut fields, e))
        .ok();
    let labels = check_labels(&req.labels.clone().unwrap_or_default())
        .map_err(|e| merge(&mut fields, e))
        .ok();
    let proxy = check_proxy(&req.proxy.clone().unwrap_or_default())
        .map_err(|e| merge(&mut fields, e))
        .ok();
    let project = projects::Entity::find()
        .filter(projects::Column::Name.eq(project_name.as_str()))
        .one(&svc.db)
        .await?;
    if project.is_none() {
        fields.insert(
            "project".into(),
            format!("unknown project {project_name:?}"),
        );
    }
    let (Some(name), Some(description), Some(labels), Some(proxy), Some(project)) =
        (name, description, labels, proxy, project)
    else {
        return Err(DomainError::Invalid { fields });
    };
    let shared = resolve_shares(
        svc,
        who,
        &project.id,
        &req.shared_with.clone().unwrap_or_default(),
    )
    .await?;
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let standing = super::jit_settings::current_violations(&tx, svc.clock.now()).await?;
    let m = clusters::ActiveModel::from(clusters::Model {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        description,
        labels: serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into()),
        project_id: project.id.clone(),
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
        proxy: seal_proxy(&svc.clusters.settings(), &proxy),
        created_at: now,
        updated_at: now,
        agent_public_key: None,
        agent_key_registered_at: None,
    })
    .insert(&tx)
    .await
    .on_unique(
        "uq_clusters_name",
        "name",
        "a cluster with this name already exists",
    )?;
    replace_shares(&tx, &m.id, &shared, now).await?;
    // A cluster that brings a project under a required-expiry rule with standing bindings
    // beyond it is refused (fail closed), naming them.
    super::jit_settings::refuse_new_violations(
        &tx,
        &standing,
        svc.clock.now(),
        if shared.is_empty() {
            "labels"
        } else {
            "shared_with"
        },
    )
    .await?;
    let boot = mint(
        svc,
        &tx,
        Some(who.user_id.to_string()),
        &m,
        &project.name,
        true,
        None,
    )
    .await?;
    let dto = dto_in(svc, &tx, &m).await?;
    let event = cluster_event(
        who,
        "cluster.create",
        &m.name,
        &project.name,
        Outcome::Allowed,
    )
    .details(json!({"before": null, "after": dto}));
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(CreatedCluster {
        cluster: dto,
        manifest_url: boot.manifest_url,
        manifest_url_expires_at: boot.manifest_url_expires_at,
        bootstrap_expires_at: boot.bootstrap_expires_at,
        apply_command: boot.apply_command,
    })
}

fn merge(fields: &mut BTreeMap<String, String>, e: DomainError) {
    if let DomainError::Invalid { fields: f } = e {
        fields.extend(f);
    }
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    name: &str,
    req: UpdateClusterRequest,
) -> DomainResult<ClusterDto> {
    let (c, owner) = load_writable(svc, who, name).await?;
    // A remembered manifest names the cluster, its project and its proxy as they were.
    svc.clusters.forget(&c.id);
    let rename = match req.name.as_deref().map(str::trim) {
        Some(n) if n != c.name => {
            Some(DnsLabel::parse(n).map_err(|e| DomainError::invalid("name", e.0))?)
        }
        _ => None,
    };
    let before = dto_of(svc, &c).await?;
    let mut owner_id = c.project_id.clone();
    let mut new_owner = owner.clone();
    if let Some(p) = req
        .project
        .as_deref()
        .map(str::trim)
        .filter(|p| *p != owner)
    {
        svc.gate(who, Action::project(Permission::ClusterWrite, p))
            .await?;
        let project = projects::Entity::find()
            .filter(projects::Column::Name.eq(p))
            .one(&svc.db)
            .await?
            .ok_or_else(|| DomainError::invalid("project", format!("unknown project {p:?}")))?;
        owner_id = project.id;
        new_owner = project.name;
    }
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let standing = super::jit_settings::current_violations(&tx, svc.clock.now()).await?;
    let id = c.id.clone();
    let current = c.clone();
    let mut a = c.into_active_model();
    if let Some(n) = &rename {
        a.name = Set(n.to_string());
    }
    a.project_id = Set(owner_id.clone());
    if let Some(d) = &req.description {
        a.description = Set(check_description(d)?);
    }
    if let Some(l) = &req.labels {
        a.labels = Set(serde_json::to_string(&check_labels(l)?).unwrap_or_else(|_| "{}".into()));
    }
    if let Some(p) = &req.proxy {
        let settings = svc.clusters.settings();
        let old = stored_proxy(&settings, &current);
        let p = ProxySettings {
            http_proxy: keep_masked(&p.http_proxy, &old.http_proxy),
            https_proxy: keep_masked(&p.https_proxy, &old.https_proxy),
            ..p.clone()
        };
        a.proxy = Set(seal_proxy(&settings, &check_proxy(&p)?));
    }
    a.updated_at = Set(now);
    let m = a.update(&tx).await.on_unique(
        "uq_clusters_name",
        "name",
        "a cluster with this name already exists",
    )?;
    if let Some(wanted) = &req.shared_with {
        let shared = resolve_shares(svc, who, &owner_id, wanted).await?;
        replace_shares(&tx, &id, &shared, now).await?;
    } else {
        // An owner needs no share (a no-op unless the cluster moved to a project it was shared with).
        cluster_shares::Entity::delete_many()
            .filter(cluster_shares::Column::ClusterId.eq(id.clone()))
            .filter(cluster_shares::Column::ProjectId.eq(owner_id.clone()))
            .exec(&tx)
            .await?;
    }
    // Labelled, shared or moved into a project with standing bindings a required-expiry rule
    // would now cover beyond its maximum: refused (fail closed), naming them.
    super::jit_settings::refuse_new_violations(
        &tx,
        &standing,
        svc.clock.now(),
        if req.shared_with.is_some() {
            "shared_with"
        } else if req.labels.is_some() {
            "labels"
        } else {
            "project"
        },
    )
    .await?;
    let after = dto_in(svc, &tx, &m).await?;
    let event = cluster_event(who, "cluster.update", &m.name, &new_owner, Outcome::Allowed)
        .details(json!({"before": before, "after": after}));
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    svc.policy.bump();
    if rename.is_some() {
        // The live tunnel carries the old name: the agent reconnects under the new one (its
        // credential is bound to the cluster, not the name).
        if let Some(rt) = svc.clusters.runtime() {
            rt.reconnect(&m.id, &format!("the cluster was renamed to {}", m.name));
        }
    }
    Ok(after)
}

/// Delete a cluster: revoke its agent credentials and close its tunnel at once (a connected
/// agent is told why and stops). An agent that is not connected cannot be told: the deletion
/// goes ahead all the same (the credential is dead either way), and the answer is the command
/// that removes the agent from the cluster. `force` marks a cluster known to be gone (audited as
/// `cluster.force_delete`).
pub async fn delete(
    svc: &Services,
    who: &Principal,
    name: &str,
    force: bool,
) -> DomainResult<String> {
    let (c, owner) = load_writable(svc, who, name).await?;
    let agent_connected = c.status == cluster_status::CONNECTED;
    let before = dto_of(svc, &c).await?;
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    cluster_agent_credentials::Entity::update_many()
        .col_expr(
            cluster_agent_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .col_expr(
            cluster_agent_credentials::Column::RevokedReason,
            sea_orm::sea_query::Expr::value("the cluster was deleted"),
        )
        .filter(cluster_agent_credentials::Column::ClusterId.eq(c.id.clone()))
        .filter(cluster_agent_credentials::Column::RevokedAt.is_null())
        .exec(&tx)
        .await?;
    cluster_agent_credentials::Entity::update_many()
        .col_expr(
            cluster_agent_credentials::Column::ClusterId,
            sea_orm::sea_query::Expr::value(Option::<String>::None),
        )
        .filter(cluster_agent_credentials::Column::ClusterId.eq(c.id.clone()))
        .exec(&tx)
        .await?;
    svc.clusters.forget(&c.id);
    cluster_bootstrap_tokens::Entity::delete_many()
        .filter(cluster_bootstrap_tokens::Column::ClusterId.eq(c.id.clone()))
        .exec(&tx)
        .await?;
    cluster_shares::Entity::delete_many()
        .filter(cluster_shares::Column::ClusterId.eq(c.id.clone()))
        .exec(&tx)
        .await?;
    cluster_status_history::Entity::delete_many()
        .filter(cluster_status_history::Column::ClusterId.eq(c.id.clone()))
        .exec(&tx)
        .await?;
    clusters::Entity::delete_by_id(c.id.clone())
        .exec(&tx)
        .await?;
    let event = cluster_event(
        who,
        if force {
            "cluster.force_delete"
        } else {
            "cluster.delete"
        },
        &c.name,
        &owner,
        Outcome::Allowed,
    )
    .details(json!({"before": before, "after": null, "agent_connected": agent_connected}));
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    if let Some(rt) = svc.clusters.runtime() {
        rt.revoke(
            &c.id,
            agent_protocol::refusal::CLUSTER_DELETED,
            &format!(
                "the cluster {} was deleted from Warden; remove the agent with: {CLEANUP_COMMAND}",
                c.name
            ),
        );
    }
    svc.policy.bump();
    Ok(CLEANUP_COMMAND.to_owned())
}

/// A fresh one-time manifest URL and the manifest it serves (for callers allowed to import).
/// One manifest is pending per cluster: the tokens of earlier ones not yet used are revoked
/// (the audit event counts them).
pub async fn bootstrap(
    svc: &Services,
    who: &Principal,
    name: &str,
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
            .any(|t| t.purpose == PURPOSE_MANIFEST && t.token_hash == hash)
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
        bootstrap: Some(bootstrap(svc, who, name).await?),
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
    let boot = mint(
        svc,
        &tx,
        Some(who.user_id.to_string()),
        &c,
        &owner,
        false,
        None,
    )
    .await?;
    let event = cluster_event(who, "cluster.manifest", &c.name, &owner, Outcome::Allowed);
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
) -> String {
    let settings = svc.clusters.settings();
    agent_protocol::render_manifest(&ManifestParams {
        cluster: &c.name,
        project,
        warden_url: warden_url.unwrap_or(&svc.public_url).trim_end_matches('/'),
        bootstrap_token: token,
        bootstrap_expires_at: &ts(expires),
        warden_ca_pem: settings.warden_ca_pem.as_deref(),
        image: &settings.agent_image,
        proxy: &stored_proxy(&settings, c),
        allow_insecure_http: settings.allow_insecure_http,
    })
}

/// Mint a bootstrap token (and, with `with_url`, a one-time manifest URL standing for it).
async fn mint<C: ConnectionTrait>(
    svc: &Services,
    db: &C,
    created_by: Option<String>,
    c: &clusters::Model,
    project: &str,
    with_url: bool,
    warden_url: Option<&str>,
) -> DomainResult<ClusterBootstrap> {
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
        PURPOSE_AGENT,
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
            PURPOSE_MANIFEST,
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
        manifest: render(svc, c, project, &agent_token, agent_expires, warden_url),
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
        .filter(cluster_bootstrap_tokens::Column::Purpose.eq(PURPOSE_MANIFEST))
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
        svc.audit
            .record(audit(
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
    // Mark it used only if nobody raced us to it.
    let done = cluster_bootstrap_tokens::Entity::update_many()
        .col_expr(
            cluster_bootstrap_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(cluster_bootstrap_tokens::Column::Id.eq(row.id.clone()))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .exec(&svc.db)
        .await?;
    if done.rows_affected != 1 {
        let msg = "this manifest link was already used; links work once".to_owned();
        svc.record_refusal(audit(Outcome::Denied, Some(msg.clone())))
            .await?;
        return Ok(Err(DownloadRefused::Gone(msg)));
    }
    // A fresh, independent bootstrap token for the manifest this link serves.
    let agent_token = new_agent_token();
    let expires = svc.clock.now().plus_secs(AGENT_TOKEN_TTL_SECS).millis();
    insert_token(
        &svc.db,
        &c,
        PURPOSE_AGENT,
        &agent_token,
        expires,
        row.created_by.clone(),
        now,
    )
    .await?;
    svc.audit.record(audit(Outcome::Allowed, None)).await?;
    let project = names.get(&c.project_id).cloned().unwrap_or_default();
    Ok(Ok(render(svc, &c, &project, &agent_token, expires, None)))
}

/// Audit events about one cluster, newest first, for callers who may read the audit log.
pub async fn recent_events(
    svc: &Services,
    who: &Principal,
    name: &str,
    limit: u64,
) -> DomainResult<Vec<crate::dto::AuditEventDto>> {
    let (c, _, _) = load_readable(svc, who, name).await?;
    // Ask the audit scope only of callers who may read some of the log: asking for others
    // would write a denial on every page view.
    let eff = svc.policy.effective(who.user_id).await?;
    if !eff.active
        || !eff
            .bindings
            .iter()
            .any(|b| b.permissions.contains(&Permission::AuditRead))
    {
        return Ok(vec![]);
    }
    let scope = match crate::access::audit_scope(&svc.policy, who).await {
        Ok(s) => s,
        Err(_) => return Ok(vec![]),
    };
    let q = crate::dto::AuditQuery {
        cluster: Some(c.name),
        limit: Some(limit),
        ..Default::default()
    };
    Ok(crate::audit::search(&svc.db, &q, scope.as_deref())
        .await?
        .items)
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
    )
    .await?
    .manifest)
}
