//! Clusters: import, list, change, delete; the one-time bootstrap tokens and the agent manifest.
//!
//! A cluster belongs to one project and may be shared with others. `cluster.read` on the owning
//! project (or on a project it is shared with) lets a caller see it; `cluster.write` on the
//! owning project lets them import, change, delete it and download its manifest. Every change is
//! audited with before and after values; the agent's side (registration, connection, heartbeats)
//! lives in [`agents`].
//!
//! The aggregate's files: this one (settings, the read model and the administrator's use cases),
//! [`validation`] (a cluster's fields), [`enrolment`] (bootstrap tokens, the connect page and
//! the agent manifest), [`agents`] (the agent's side: registration, tunnels' credentials,
//! heartbeats) and [`reads`] (the namespaces and pods a user may see, read as that user).

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::access::{Action, Principal};
use crate::admin::ts;
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
use crate::ids::ClusterId;
use crate::permissions::Permission;
use crate::secrets::{random_token, sha256_hex};
use crate::types::{label_key_ok, label_name_ok, DnsLabel};
use crate::Services;

pub mod agents;
pub mod enrolment;
pub mod reads;
mod validation;

use enrolment::mint;
pub use enrolment::{
    bootstrap, connect, connect_warnings, download_manifest, is_loopback_url, manifest,
    unsafe_import_as_system, DownloadRefused,
};
pub use validation::{check_description, check_labels, check_proxy};

/// How long a bootstrap token in a manifest is accepted.
pub const AGENT_TOKEN_TTL_SECS: i64 = 24 * 3600;
/// How long a one-time manifest URL works.
pub const MANIFEST_URL_TTL_SECS: i64 = 3600;
/// Status changes kept per cluster.
pub const HISTORY_KEEP: usize = 50;

pub const PURPOSE_AGENT: &str = "agent";
pub const PURPOSE_MANIFEST: &str = "manifest";
/// A bootstrap token, and a manifest link, of an administrator's explicit new registration
/// (`POST /api/v1/clusters/{name}/bootstrap`): the only ones that may register another agent
/// key for a cluster whose agent still holds its credential (a reinstalled agent). Tokens
/// minted on the way (the connect page, a manifest download) never replace a registered agent.
pub const PURPOSE_AGENT_REPLACE: &str = "agent.replace";
pub const PURPOSE_MANIFEST_REPLACE: &str = "manifest.replace";
/// Every purpose of a bootstrap token, and of a manifest link.
pub const AGENT_PURPOSES: [&str; 2] = [PURPOSE_AGENT, PURPOSE_AGENT_REPLACE];
pub const MANIFEST_PURPOSES: [&str; 2] = [PURPOSE_MANIFEST, PURPOSE_MANIFEST_REPLACE];

/// The server's live tunnels, as the domain needs them.
pub trait ClusterRuntime: Send + Sync {
    /// Whether an agent tunnel for the cluster is open in this process.
    fn is_connected(&self, cluster_id: ClusterId) -> bool;
    /// Close the cluster's tunnel now, telling the agent why (its credential is revoked).
    fn revoke(&self, cluster_id: ClusterId, code: &str, message: &str);
    /// Close the cluster's tunnel so that the agent reconnects at once (its credential stays
    /// valid), e.g. to pick up a new name.
    fn reconnect(&self, _cluster_id: ClusterId, _reason: &str) {}
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

/// A URL as it may be shown: `http://user:secret@host` as `http://user:***@host`, a bare
/// `http://token@host` as `http://***@host` (a proxy's token is often the user name), and a
/// query string as `?***`.
pub fn redact_url(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = (&url[..s], &url[s + 3..]);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***@{}", &authority[at + 1..]),
            None => format!("***@{}", &authority[at + 1..]),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// What a cluster's sealed proxy settings were sealed for before they were bound to their
/// cluster: opened only at start, to seal them again bound (`seal_plaintext_proxies`).
const LEGACY_PROXY_PURPOSE: &str = "clusters.proxy";

/// What a cluster's proxy settings are sealed for: that cluster only, so a value copied into
/// another cluster's row (by someone who can write the database) opens nowhere.
/// Whether `sealer` opens a cluster's stored proxy settings (bound to the cluster, or sealed
/// before binding).
pub(crate) fn proxy_opens(sealer: &crate::secrets::Sealer, cluster_id: &str, stored: &str) -> bool {
    sealer.open(&proxy_purpose(cluster_id), stored).is_ok()
        || sealer.open(LEGACY_PROXY_PURPOSE, stored).is_ok()
}

fn proxy_purpose(cluster_id: &str) -> String {
    format!("clusters.proxy:{cluster_id}")
}

/// The proxy settings as stored: sealed with the master key when one is set (a proxy URL may
/// carry a password), bound to the cluster; plain JSON otherwise.
fn seal_proxy(settings: &ClusterSettings, cluster_id: &str, p: &ProxySettings) -> String {
    let json = serde_json::to_string(p).unwrap_or_else(|_| "{}".into());
    match &settings.sealer {
        Some(sealer) => sealer.seal(&proxy_purpose(cluster_id), json.as_bytes()),
        None => json,
    }
}

/// Seal the clusters' proxy settings stored plain (by a Warden that had no key to seal them
/// with), and seal again, bound to their cluster, those sealed before values were bound.
/// Returns how many.
pub async fn seal_plaintext_proxies(svc: &Services) -> DomainResult<u64> {
    let settings = svc.clusters.settings();
    let Some(sealer) = settings.sealer.as_ref() else {
        return Ok(0);
    };
    let mut n = 0;
    for m in clusters::Entity::find().all(&svc.db).await? {
        if m.proxy.is_empty() {
            continue;
        }
        let proxy = if !crate::secrets::Sealer::is_sealed(&m.proxy) {
            serde_json::from_str(&m.proxy).unwrap_or_default()
        } else if sealer.open(&proxy_purpose(&m.id), &m.proxy).is_ok() {
            continue;
        } else {
            match sealer.open(LEGACY_PROXY_PURPOSE, &m.proxy) {
                Ok(json) => serde_json::from_slice::<ProxySettings>(&json).unwrap_or_default(),
                // Not this cluster's, or another key's: left as it is, and refused when used.
                Err(_) => continue,
            }
        };
        let sealed = seal_proxy(&settings, &m.id, &proxy);
        clusters::Entity::update_many()
            .col_expr(
                clusters::Column::Proxy,
                sea_orm::sea_query::Expr::value(sealed),
            )
            .filter(clusters::Column::Id.eq(m.id.clone()))
            .filter(clusters::Column::Proxy.eq(m.proxy.clone()))
            .exec(&svc.db)
            .await?;
        n += 1;
    }
    Ok(n)
}

/// The proxy settings of a cluster, opened. A sealed value that cannot be opened (no or
/// another master key, or sealed for another cluster) is an error, said in the log: a
/// manifest is never rendered without the proxy its cluster needs, nor with another's.
fn stored_proxy(settings: &ClusterSettings, m: &clusters::Model) -> DomainResult<ProxySettings> {
    if !crate::secrets::Sealer::is_sealed(&m.proxy) {
        return Ok(serde_json::from_str(&m.proxy).unwrap_or_default());
    }
    let opened = settings
        .sealer
        .as_ref()
        .ok_or_else(|| "WARDEN_MASTER_KEY is not set".to_owned())
        .and_then(|s| {
            s.open(&proxy_purpose(&m.id), &m.proxy)
                .map_err(|e| e.to_string())
        });
    match opened {
        Ok(json) => Ok(serde_json::from_slice(&json).unwrap_or_default()),
        Err(e) => {
            tracing::error!(cluster = %m.name, error = %e, "cannot open the cluster's sealed proxy settings");
            Err(DomainError::Internal(format!(
                "the proxy settings of cluster {} cannot be opened with this master key (set them again)",
                m.name
            )))
        }
    }
}

/// A proxy URL sent back as the API showed it (`user:***@host`, `***@host`, `?***`) keeps the
/// stored secret.
fn keep_masked(new: &Option<String>, old: &Option<String>) -> Option<String> {
    match (new, old) {
        (Some(n), Some(o)) if n.contains("***") && redact_url(o) == n.trim() => Some(o.clone()),
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
    // Shown only: a value that cannot be opened shows as none (its use is refused).
    let mut proxy = stored_proxy(settings, m).unwrap_or_default();
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
        guard: facts.guard,
        proxy,
        created_at: ts(m.created_at),
        updated_at: ts(m.updated_at),
    }
}

/// The projects a cluster is shared with, as far as the reader may see projects: a namespace
/// reader of one sharing project learns the owner (whose cluster it is), not the other
/// projects it is shared with, which the project list hides from them.
async fn hide_unseen_shares(
    svc: &Services,
    who: &Principal,
    dtos: &mut [ClusterDto],
) -> DomainResult<()> {
    let visible = svc.policy.effective(who.user_id).await?.visible_projects();
    for d in dtos {
        d.shared_with.retain(|p| visible.contains(p));
    }
    Ok(())
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
/// Sharing a cluster into a project lets that project's grants reach it: a project it is not
/// shared with yet (not in `current`, by id) takes `cluster.write` there, as moving the cluster
/// does; the owner's administrators alone cannot decide it for the other project.
async fn resolve_shares(
    svc: &Services,
    who: &Principal,
    owner_id: &str,
    wanted: &[String],
    current: &BTreeSet<String>,
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
                    if !current.contains(&p.id) {
                        svc.gate(
                            who,
                            Action::project(Permission::ClusterWrite, p.name.clone()),
                        )
                        .await?;
                    }
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
    let mut ev = AuditEvent::by(who, AuditKind::Console, action, outcome)
        .resource("cluster", cluster)
        .project(project);
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
    let after = crate::admin::cursor::decode("clusters", q.cursor.as_deref())?;
    let limit = crate::admin::cursor::limit(q.limit);
    let Some(mut cond) = visible(svc, who).await? else {
        return Ok(Page {
            items: vec![],
            next: None,
        });
    };
    if let Some(p) = q.project.as_deref().filter(|p| !p.is_empty()) {
        cond = cond.add(held_by(vec![p.to_owned()]));
    }
    if let Some(status) = q.status {
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
                .like(LikeExpr::new(crate::admin::cursor::contains_pattern(&needle)).escape('\\')),
        );
    }
    if let Some(c) = crate::admin::cursor::contains_any(
        q.q.as_deref(),
        [
            Expr::col(clusters::Column::Name),
            Expr::col(clusters::Column::Description),
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
    let next = crate::admin::cursor::page(&mut rows, limit, "clusters", |c| &c.name);
    let (names, shares) = names_and_shares_of(&svc.db, &rows).await?;
    let settings = svc.clusters.settings();
    let mut items: Vec<ClusterDto> = rows
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
    hide_unseen_shares(svc, who, &mut items).await?;
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
    let mut cluster = [to_dto(&svc.clusters.settings(), &c, &names, &shares)];
    hide_unseen_shares(svc, who, &mut cluster).await?;
    let [cluster] = cluster;
    Ok(ClusterDetail {
        cluster,
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
        &BTreeSet::new(),
    )
    .await?;
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let standing = crate::admin::jit_settings::current_violations(&tx, svc.clock.now()).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let m = clusters::ActiveModel::from(clusters::Model {
        proxy: seal_proxy(&svc.clusters.settings(), &id, &proxy),
        id,
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
    crate::admin::jit_settings::refuse_new_violations(
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
        false,
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
    // The organization's required-expiry rules pick clusters by label: taking a cluster out
    // of one is the organization's call (settings.write), not its project's, or a project
    // administrator could relabel a cluster, bind without an expiry, and label it back.
    if let Some(l) = &req.labels {
        let old_labels: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&c.labels).unwrap_or_default();
        let left =
            crate::admin::jit_settings::selectors_left(&svc.db, &old_labels, &check_labels(l)?)
                .await?;
        if !left.is_empty() {
            svc.gate(who, Action::org(Permission::SettingsWrite))
                .await
                .map_err(|e| match e {
                    DomainError::Forbidden { .. } => DomainError::conflict(
                        "labels",
                        format!(
                            "these labels take cluster {} out of the organization's required-expiry rule ({}); only someone who may change the organization's settings may do that",
                            c.name,
                            left.join(", ")
                        ),
                    ),
                    e => e,
                })?;
        }
    }
    // Shares are decided (and any refusal audited) before the change's transaction.
    let shared = match &req.shared_with {
        Some(wanted) => {
            let current: BTreeSet<String> = cluster_shares::Entity::find()
                .filter(cluster_shares::Column::ClusterId.eq(c.id.clone()))
                .all(&svc.db)
                .await?
                .into_iter()
                .map(|s| s.project_id)
                .collect();
            Some(resolve_shares(svc, who, &owner_id, wanted, &current).await?)
        }
        None => None,
    };
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let standing = crate::admin::jit_settings::current_violations(&tx, svc.clock.now()).await?;
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
        // A stored value that cannot be opened keeps no secret: what is sent is what is set.
        let old = stored_proxy(&settings, &current).unwrap_or_default();
        let p = ProxySettings {
            http_proxy: keep_masked(&p.http_proxy, &old.http_proxy),
            https_proxy: keep_masked(&p.https_proxy, &old.https_proxy),
            ..p.clone()
        };
        a.proxy = Set(seal_proxy(&settings, &current.id, &check_proxy(&p)?));
    }
    a.updated_at = Set(now);
    let m = a.update(&tx).await.on_unique(
        "uq_clusters_name",
        "name",
        "a cluster with this name already exists",
    )?;
    if let Some(shared) = &shared {
        replace_shares(&tx, &id, shared, now).await?;
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
    crate::admin::jit_settings::refuse_new_violations(
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
    let details = json!({"before": before, "after": after});
    let mut events =
        vec![
            cluster_event(who, "cluster.update", &m.name, &new_owner, Outcome::Allowed)
                .details(details.clone()),
        ];
    if new_owner != owner {
        // Moved to another project: the project it left sees that in its own log too.
        events.push(
            cluster_event(who, "cluster.update", &m.name, &owner, Outcome::Allowed)
                .details(details),
        );
    }
    crate::audit::append(&tx, svc.clock.now(), events).await?;
    tx.commit().await?;
    svc.policy.bump();
    if rename.is_some() {
        // The live tunnel carries the old name: the agent reconnects under the new one (its
        // credential is bound to the cluster, not the name).
        if let (Some(rt), Some(id)) = (svc.clusters.runtime(), ClusterId::parse(&m.id)) {
            rt.reconnect(id, &format!("the cluster was renamed to {}", m.name));
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
    crate::kubectl::settings::refuse_dropping_with_cluster(svc, who, &c.id, &c.name).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    crate::kubectl::settings::delete_with_cluster(&tx, &c.id).await?;
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
    if let (Some(rt), Some(id)) = (svc.clusters.runtime(), ClusterId::parse(&c.id)) {
        rt.revoke(
            id,
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

/// Revoke a cluster's agent, for a credential or key that may have leaked: every credential of
/// the cluster stops working at once, its tunnel closes (the agent is told why, on this replica;
/// on another, at the agent's next heartbeat), and every manifest not applied yet expires. The
/// cluster stays, with its project, sharing and settings; a new manifest connects it again (with
/// a new key if need be: no tunnel is live). Returns how many credentials were revoked.
pub async fn revoke_agent(svc: &Services, who: &Principal, name: &str) -> DomainResult<u64> {
    let (c, owner) = load_writable(svc, who, name).await?;
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let revoked = cluster_agent_credentials::Entity::update_many()
        .col_expr(
            cluster_agent_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .col_expr(
            cluster_agent_credentials::Column::RevokedReason,
            sea_orm::sea_query::Expr::value("revoked in Warden by an administrator"),
        )
        .filter(cluster_agent_credentials::Column::ClusterId.eq(c.id.clone()))
        .filter(cluster_agent_credentials::Column::RevokedAt.is_null())
        .exec(&tx)
        .await?
        .rows_affected;
    let expired = cluster_bootstrap_tokens::Entity::update_many()
        .col_expr(
            cluster_bootstrap_tokens::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(cluster_bootstrap_tokens::Column::ClusterId.eq(c.id.clone()))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .filter(cluster_bootstrap_tokens::Column::ExpiresAt.gt(now))
        .exec(&tx)
        .await?
        .rows_affected;
    let event = cluster_event(
        who,
        "cluster.agent_revoke",
        &c.name,
        &owner,
        Outcome::Allowed,
    )
    .details(json!({
        "credentials_revoked": revoked,
        "manifests_expired": expired,
        "agent_connected": c.status == cluster_status::CONNECTED,
    }));
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    if let (Some(rt), Some(id)) = (svc.clusters.runtime(), ClusterId::parse(&c.id)) {
        rt.revoke(
            id,
            agent_protocol::refusal::CREDENTIAL_REVOKED,
            &format!(
                "the agent credential of cluster {} was revoked in Warden; apply a new manifest for the cluster to connect it again",
                c.name
            ),
        );
    }
    svc.policy.bump();
    Ok(revoked)
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
    Ok(
        crate::audit::search_in(&svc.db, &q, &scope, svc.clock.now())
            .await?
            .items,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        for (url, shown) in [
            ("http://proxy:3128", "http://proxy:3128"),
            ("http://bob:hunter2@proxy:3128", "http://bob:***@proxy:3128"),
            (
                "http://ghp_S3cr3tT0ken@proxy.corp:3128",
                "http://***@proxy.corp:3128",
            ),
            ("http://a:b@proxy/p?token=x", "http://a:***@proxy/p?***"),
            (
                "postgres://w:pw@db/warden?sslpassword=x",
                "postgres://w:***@db/warden?***",
            ),
            // An `@` after the host is not a user name.
            ("http://proxy:3128/x@y", "http://proxy:3128/x@y"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        // A URL sent back masked keeps the stored one.
        let old = Some("http://tok@proxy:1".to_owned());
        assert_eq!(keep_masked(&Some("http://***@proxy:1".into()), &old), old);
        let new = Some("http://other@proxy:1".to_owned());
        assert_eq!(keep_masked(&new, &old), new);
    }
}
