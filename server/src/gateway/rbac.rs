//! Per-user service accounts on the clusters and their RBAC, reconciled (not appended) from the
//! user's current grants before a request is forwarded.
//!
//! On each cluster, in `warden-system`: a ServiceAccount per user (`u-<email slug>-<random>`, new
//! at creation and whenever the user's rights shrink), a Secret
//! `<sa>-anchor` its tokens are bound to, and bindings to Warden's ClusterRoles:
//!
//! | grant | binding | rules |
//! |---|---|---|
//! | `kubectl.fullaccess` | ClusterRoleBinding `<sa>.full-access` -> `warden-full-access` | every verb on every resource and non-resource URL |
//! | `kubectl.cluster.write` | ClusterRoleBinding `<sa>.cluster-write` -> `warden-cluster-write` | get list watch create update patch delete deletecollection on every resource (not escalate, bind, impersonate, approve, sign); GET on non-resource URLs |
//! | `kubectl.cluster.read` | ClusterRoleBinding `<sa>.cluster-read` -> `warden-cluster-read` | `read_rules()`: get list watch without secrets, the connect subresources, RoleBindings and ClusterRoleBindings |
//! | `kubectl.namespace.write` in N | RoleBinding `<sa>.namespace-write` in N -> `warden-namespace-write` | `namespace_write_rules()`: the read rules, plus the write verbs on the core workload resources (secrets and exec included, `serviceaccounts/token` not) and on apps, batch, autoscaling, policy, networking, discovery, events, coordination; never write on the namespace itself, its quotas, limit ranges or RBAC |
//! | `kubectl.namespace.read` in N | RoleBinding `<sa>.namespace-read` in N -> `warden-namespace-read` | `read_rules()` |
//!
//! A RoleBinding in N also applies to the Namespace object N itself (the API server resolves
//! `/api/v1/namespaces/N` to namespace N), so a namespace role must never hold `*` resources
//! or write verbs on `namespaces`: that would let a namespace admin relabel (Pod Security) or
//! delete their namespace.
//!
//! Every object carries `app.kubernetes.io/managed-by=warden` and `warden.dev/user-id`.

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use warden_domain::ids::ClusterId;
use warden_domain::kubectl::KubeAccess;

pub const NAMESPACE: &str = "warden-system";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const USER_LABEL: &str = "warden.dev/user-id";
pub const SA_LABEL: &str = "warden.dev/service-account";
const FIELD_MANAGER: &str = "warden";
/// Re-check a service account that was reconciled longer ago than this, even if nothing changed.
const RECHECK: Duration = Duration::from_secs(600);
/// Bumped whenever the ClusterRoles' rules change, so they are re-applied.
const ROLES_VERSION: &str = "3";

/// Warden's ClusterRoles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum WardenRole {
    FullAccess,
    ClusterWrite,
    ClusterRead,
    NamespaceWrite,
    NamespaceRead,
}

impl WardenRole {
    pub const ALL: [WardenRole; 5] = [
        WardenRole::FullAccess,
        WardenRole::ClusterWrite,
        WardenRole::ClusterRead,
        WardenRole::NamespaceWrite,
        WardenRole::NamespaceRead,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            WardenRole::FullAccess => "full-access",
            WardenRole::ClusterWrite => "cluster-write",
            WardenRole::ClusterRead => "cluster-read",
            WardenRole::NamespaceWrite => "namespace-write",
            WardenRole::NamespaceRead => "namespace-read",
        }
    }

    pub fn cluster_role(self) -> String {
        format!("warden-{}", self.suffix())
    }

    fn rules(self) -> Vec<PolicyRule> {
        let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let urls = |paths: &[&str], verbs: &[&str]| PolicyRule {
            non_resource_urls: Some(paths.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        match self {
            WardenRole::FullAccess => vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
            // Discovery, OpenAPI, version and health: not the control plane's files and
            // internals (`/logs/`, `/debug/pprof`, `/metrics`), which only full access reads.
            WardenRole::ClusterWrite => vec![
                rule(&["*"], &["*"], WRITE_VERBS),
                urls(CLUSTER_WRITE_NON_RESOURCE_URLS, &["get"]),
            ],
            WardenRole::NamespaceWrite => namespace_write_rules(),
            WardenRole::ClusterRead => read_rules(Bindings::Hidden),
            WardenRole::NamespaceRead => read_rules(Bindings::Readable),
        }
    }
}

/// The verbs of the write roles (no `escalate`, `bind`, `impersonate`, `approve`, `sign`).
/// The non-resource URLs a cluster-wide writer may get: what a kubectl user needs
/// (`warden_domain::access::kube::user_non_resource_path` says the same at the gate).
const CLUSTER_WRITE_NON_RESOURCE_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
    "/healthz",
    "/healthz/*",
    "/livez",
    "/livez/*",
    "/readyz",
    "/readyz/*",
    "/.well-known/openid-configuration",
    "/openid/v1/jwks",
];

const WRITE_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Write access within a namespace, enumerated (bound by a RoleBinding in N, these rules also
/// govern the Namespace object N): everything `read_rules()` gives, plus the write verbs on the
/// core workload resources and on every resource of the workload API groups. Not included:
/// `serviceaccounts/token` (tokens for any service account of the namespace), and write on
/// `namespaces` (Pod Security labels, deletion), `resourcequotas`, `limitranges`, `roles`,
/// `rolebindings`, `endpoints` and `endpointslices`, which stay read-only (as in Kubernetes'
/// own `edit` and `admin` since 1.22, CVE-2021-25740: a Service's endpoints set by hand can
/// point a controller at another namespace's pods or at the control plane).
fn namespace_write_rules() -> Vec<PolicyRule> {
    const CORE: &[&str] = &[
        "pods",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "pods/eviction",
        "services",
        "services/proxy",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "persistentvolumeclaims",
        "events",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "podtemplates",
    ];
    const GROUPS: &[&str] = &[
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "events.k8s.io",
        "coordination.k8s.io",
    ];
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut rules = read_rules(Bindings::Readable);
    rules.push(PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(strings(CORE)),
        verbs: strings(WRITE_VERBS),
        ..Default::default()
    });
    rules.push(PolicyRule {
        api_groups: Some(strings(GROUPS)),
        resources: Some(vec!["*".into()]),
        verbs: strings(WRITE_VERBS),
        ..Default::default()
    });
    rules
}

/// Whether a read role may read RoleBindings and ClusterRoleBindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bindings {
    /// Bound in one namespace: its RoleBindings show who else works there, which its members
    /// may know (as in Kubernetes' `admin`).
    Readable,
    /// Bound cluster-wide: the bindings of every namespace and the ClusterRoleBindings would
    /// name every Warden user of the cluster (their service accounts carry their email) and
    /// their level, the cluster administrators first. Kubernetes' own `view` leaves RBAC out
    /// for the same reason; roles and cluster roles (what rights exist) stay readable.
    Hidden,
}

/// Read access without secrets, exec, attach, port-forward or proxy: RBAC cannot subtract,
/// so the core resources are listed one by one (secrets and the connect subresources left
/// out), and other API groups are listed by name (no `*` group, which would include core).
/// RBAC is listed by resource, its bindings as `bindings` says.
fn read_rules(bindings: Bindings) -> Vec<PolicyRule> {
    const CORE: &[&str] = &[
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "serviceaccounts",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "persistentvolumes",
        "persistentvolumes/status",
        "events",
        "limitranges",
        "resourcequotas",
        "resourcequotas/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "podtemplates",
        "namespaces",
        "namespaces/status",
        "nodes",
        "nodes/status",
        "componentstatuses",
    ];
    const GROUPS: &[&str] = &[
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "storage.k8s.io",
        "apiextensions.k8s.io",
        "coordination.k8s.io",
        "scheduling.k8s.io",
        "node.k8s.io",
        "admissionregistration.k8s.io",
        "certificates.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "metrics.k8s.io",
        "gateway.networking.k8s.io",
    ];
    let verbs = vec!["get".to_string(), "list".into(), "watch".into()];
    let mut rbac = vec!["roles".to_string(), "clusterroles".into()];
    if bindings == Bindings::Readable {
        rbac.extend(["rolebindings".to_string(), "clusterrolebindings".into()]);
    }
    vec![
        PolicyRule {
            api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
            resources: Some(rbac),
            verbs: verbs.clone(),
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(CORE.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.clone(),
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(GROUPS.iter().map(|s| s.to_string()).collect()),
            resources: Some(vec!["*".into()]),
            verbs,
            ..Default::default()
        },
    ]
}

/// The RBAC a user's grants call for on one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Desired {
    pub cluster_roles: BTreeSet<WardenRole>,
    /// namespace -> role
    pub namespace_roles: BTreeMap<String, WardenRole>,
}

impl Desired {
    pub fn from_access(a: &KubeAccess) -> Self {
        let mut d = Desired::default();
        if a.full {
            d.cluster_roles.insert(WardenRole::FullAccess);
            return d;
        }
        if a.cluster_write {
            d.cluster_roles.insert(WardenRole::ClusterWrite);
            return d;
        }
        if a.cluster_read {
            d.cluster_roles.insert(WardenRole::ClusterRead);
        }
        // Warden's own namespace is never granted (bindings naming it are refused; one stored
        // before that rule binds nothing).
        for ns in a.namespace_write.iter().filter(|n| *n != NAMESPACE) {
            d.namespace_roles
                .insert(ns.clone(), WardenRole::NamespaceWrite);
        }
        if !a.cluster_read {
            for ns in a.namespace_read.iter().filter(|n| *n != NAMESPACE) {
                d.namespace_roles
                    .entry(ns.clone())
                    .or_insert(WardenRole::NamespaceRead);
            }
        }
        d
    }

    /// A fingerprint of the RBAC (and of Warden's role definitions): what was applied is
    /// current while this does not change.
    pub fn fingerprint(&self) -> String {
        let body = serde_json::to_vec(&(ROLES_VERSION, self)).unwrap_or_default();
        hex::encode(Sha256::digest(body))
    }

    /// Whether `self` grants everything `before` granted (nothing was taken away).
    pub fn keeps_all_of(&self, before: &Desired) -> bool {
        before.cluster_roles.is_subset(&self.cluster_roles)
            && before
                .namespace_roles
                .iter()
                .all(|(ns, r)| self.namespace_roles.get(ns) == Some(r))
    }
}

/// A fresh service account name for a user on a cluster: their base name (`u-<email slug>`)
/// and a random suffix, new at every creation, so a name is never used for two users (a
/// deleted user's leftovers cannot reach whoever later gets the same email) nor for two
/// generations of one user's rights.
pub fn fresh_service_account_name(base: &str) -> String {
    use rand::Rng;
    let suffix: u32 = rand::thread_rng().gen_range(0..0x100_0000);
    format!("{base}-{suffix:06x}")
}

pub fn binding_name(sa: &str, role: WardenRole) -> String {
    format!("{sa}.{}", role.suffix())
}

pub fn anchor_name(sa: &str) -> String {
    format!("{sa}-anchor")
}

fn meta(name: &str, namespace: Option<&str>, user_id: &str, sa: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.to_owned(), "warden".to_owned()),
            (USER_LABEL.to_owned(), user_id.to_owned()),
            (SA_LABEL.to_owned(), sa.to_owned()),
        ])),
        ..Default::default()
    }
}

fn subject(sa: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: sa.to_owned(),
        namespace: Some(NAMESPACE.to_owned()),
        ..Default::default()
    }]
}

fn role_ref(role: WardenRole) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: role.cluster_role(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// What a reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub applied: bool,
    pub removed_bindings: Vec<String>,
    /// Granted namespaces that do not exist on the cluster (Warden does not create them).
    pub missing_namespaces: Vec<String>,
}

/// Why a user's RBAC could not be put in place.
#[derive(Debug)]
pub enum RbacError {
    /// The cluster refused or failed a call.
    Kube(kube::Error),
    /// A binding made outside Warden names the user's service account beside other subjects.
    /// Warden may neither edit it (that takes `bind` on its role) nor delete it (it grants
    /// others too), so the user is refused until a cluster administrator removes it.
    Shared { binding: String },
}

impl std::fmt::Display for RbacError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RbacError::Kube(e) => write!(f, "{e}"),
            RbacError::Shared { binding } => write!(
                f,
                "the binding {binding}, made outside Warden, gives your service account rights beside other subjects; a cluster administrator must remove your service account from it"
            ),
        }
    }
}

impl std::error::Error for RbacError {}

impl From<kube::Error> for RbacError {
    fn from(e: kube::Error) -> Self {
        RbacError::Kube(e)
    }
}

/// Applies users' RBAC to clusters and remembers what it applied.
#[derive(Default)]
pub struct Reconciler {
    applied: Mutex<HashMap<(ClusterId, String), Applied>>,
}

/// What was last applied for a user on a cluster.
struct Applied {
    fingerprint: String,
    /// The service account it was applied to, and what it was.
    sa: String,
    desired: Desired,
    at: Instant,
    /// The authorization epoch at which this was applied or last confirmed against the
    /// database's record. Another replica may remove the service account (its sweeper, a
    /// user losing every grant) and moves the epoch when it does: an entry from an older
    /// epoch is trusted only after the record is read again.
    epoch: u64,
    /// Granted namespaces the cluster did not have then.
    missing: BTreeSet<String>,
}

/// While a granted namespace is missing, look again this often (it may have been created).
const RECHECK_MISSING: Duration = Duration::from_secs(3);
/// A request into a namespace that was missing reconciles again, at most this often.
const RECHECK_MISSING_TARGET: Duration = Duration::from_secs(1);

impl Reconciler {
    /// The service account of the user on the cluster when `fingerprint` is what was last
    /// applied to it, recently, and the authorization epoch that was confirmed at. A request
    /// into `namespace` that was missing then makes it stale sooner: a grant works as soon as
    /// its namespace is created, not at the next periodic reconcile.
    pub fn is_current(
        &self,
        cluster_id: ClusterId,
        user_id: &str,
        fingerprint: &str,
        namespace: Option<&str>,
    ) -> Option<(String, u64)> {
        let m = self.applied.lock().ok()?;
        let a = m.get(&(cluster_id, user_id.to_owned()))?;
        let limit = if namespace.is_some_and(|ns| a.missing.contains(ns)) {
            RECHECK_MISSING_TARGET
        } else if !a.missing.is_empty() {
            RECHECK_MISSING
        } else {
            RECHECK
        };
        (a.fingerprint == fingerprint && a.at.elapsed() < limit).then(|| (a.sa.clone(), a.epoch))
    }

    /// What was applied for the user on the cluster is still what the database records at
    /// `epoch` (see [`Applied::epoch`]).
    pub fn confirm(&self, cluster_id: ClusterId, user_id: &str, epoch: u64) {
        if let Ok(mut m) = self.applied.lock() {
            if let Some(a) = m.get_mut(&(cluster_id, user_id.to_owned())) {
                a.epoch = a.epoch.max(epoch);
            }
        }
    }

    /// What was last applied for the user on the cluster by this process: the service account
    /// and its RBAC.
    pub fn last_applied(&self, cluster_id: ClusterId, user_id: &str) -> Option<(String, Desired)> {
        let m = self.applied.lock().ok()?;
        let a = m.get(&(cluster_id, user_id.to_owned()))?;
        Some((a.sa.clone(), a.desired.clone()))
    }

    /// Whether `namespace` is granted to the user but was missing on the cluster at the last
    /// reconcile.
    pub fn is_missing(&self, cluster_id: ClusterId, user_id: &str, namespace: &str) -> bool {
        self.applied.lock().ok().is_some_and(|m| {
            m.get(&(cluster_id, user_id.to_owned()))
                .is_some_and(|a| a.missing.contains(namespace))
        })
    }

    /// Forget what was applied (the next request reconciles again).
    pub fn invalidate(&self, cluster_id: ClusterId, user_id: &str) {
        if let Ok(mut m) = self.applied.lock() {
            m.remove(&(cluster_id, user_id.to_owned()));
        }
    }

    pub fn invalidate_cluster(&self, cluster_id: ClusterId) {
        if let Ok(mut m) = self.applied.lock() {
            m.retain(|(c, _), _| *c != cluster_id);
        }
    }

    /// Warden's ClusterRoles, re-applied at every reconcile (server-side apply: a no-op when
    /// they are as Warden wants them, a repair when someone edited them).
    async fn ensure_roles(&self, client: &kube::Client) -> Result<(), kube::Error> {
        let api: Api<ClusterRole> = Api::all(client.clone());
        for role in WardenRole::ALL {
            let mut m = ObjectMeta {
                name: Some(role.cluster_role()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.to_owned(),
                    "warden".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "warden.dev/description".to_owned(),
                    format!(
                        "Warden's {} role, bound to users' service accounts by Warden",
                        role.suffix()
                    ),
                )])),
                ..Default::default()
            };
            m.labels
                .get_or_insert_with(Default::default)
                .insert("warden.dev/roles-version".into(), ROLES_VERSION.into());
            let cr = ClusterRole {
                metadata: m,
                rules: Some(role.rules()),
                aggregation_rule: None,
            };
            api.patch(&role.cluster_role(), &apply(), &Patch::Apply(&cr))
                .await?;
        }
        Ok(())
    }

    async fn ensure_namespace(&self, client: &kube::Client) -> Result<(), kube::Error> {
        let api: Api<Namespace> = Api::all(client.clone());
        match api.get(NAMESPACE).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(NAMESPACE.into()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY.to_owned(),
                            "warden".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &ns).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Bring the cluster in line with `desired` for the user: service account, anchor Secret,
    /// bindings added, stale bindings removed. `epoch` is the authorization epoch read before
    /// the service account's record was.
    #[allow(clippy::too_many_arguments)]
    pub async fn reconcile(
        &self,
        client: &kube::Client,
        cluster_id: ClusterId,
        user_id: &str,
        email: &str,
        sa: &str,
        desired: &Desired,
        epoch: u64,
    ) -> Result<Changes, RbacError> {
        let mut changes = Changes {
            applied: true,
            ..Default::default()
        };
        self.ensure_namespace(client).await?;
        self.ensure_roles(client).await?;
        let mut sa_meta = meta(sa, Some(NAMESPACE), user_id, sa);
        // Who this is, for whoever reads the cluster's own audit log or RBAC.
        sa_meta.annotations = Some(BTreeMap::from([
            ("warden.dev/email".to_owned(), email.to_owned()),
            ("warden.dev/user-id".to_owned(), user_id.to_owned()),
        ]));
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
        sas.patch(
            sa,
            &apply(),
            &Patch::Apply(&ServiceAccount {
                metadata: sa_meta,
                automount_service_account_token: Some(false),
                ..Default::default()
            }),
        )
        .await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let mut anchor_meta = meta(&anchor_name(sa), Some(NAMESPACE), user_id, sa);
        anchor_meta.annotations = Some(BTreeMap::from([(
            "warden.dev/purpose".to_owned(),
            "the tokens Warden requests for this service account are bound to this object: deleting it invalidates them. It holds no credential.".to_owned(),
        )]));
        secrets
            .patch(
                &anchor_name(sa),
                &apply(),
                &Patch::Apply(&Secret {
                    metadata: anchor_meta,
                    type_: Some("Opaque".into()),
                    ..Default::default()
                }),
            )
            .await?;

        // Cluster-wide bindings. Found by subject, not by Warden's label: a binding anyone made
        // for this service account (or for every service account of Warden's namespace) is
        // Warden's business, and what Warden does not want goes.
        let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
        let wanted: BTreeMap<String, WardenRole> = desired
            .cluster_roles
            .iter()
            .map(|r| (binding_name(sa, *r), *r))
            .collect();
        for b in crbs.list(&ListParams::default()).await? {
            if !names_us(b.subjects.as_deref(), sa) {
                continue;
            }
            let name = b.metadata.name.clone().unwrap_or_default();
            if wanted.contains_key(&name) && is_ours(&b.metadata, user_id) {
                continue;
            }
            if strip_us(b.subjects.as_deref(), sa).is_some() {
                return Err(RbacError::Shared { binding: name });
            }
            delete_ok(crbs.delete(&name, &DeleteParams::default()).await)?;
            changes.removed_bindings.push(name);
        }
        for (name, role) in &wanted {
            crbs.patch(
                name,
                &apply(),
                &Patch::Apply(&ClusterRoleBinding {
                    metadata: meta(name, None, user_id, sa),
                    role_ref: role_ref(*role),
                    subjects: Some(subject(sa)),
                }),
            )
            .await?;
        }
        // Namespace bindings.
        let all_rbs: Api<RoleBinding> = Api::all(client.clone());
        let wanted: BTreeMap<(String, String), WardenRole> = desired
            .namespace_roles
            .iter()
            .map(|(ns, r)| ((ns.clone(), binding_name(sa, *r)), *r))
            .collect();
        for b in all_rbs.list(&ListParams::default()).await? {
            if !names_us(b.subjects.as_deref(), sa) {
                continue;
            }
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let name = b.metadata.name.clone().unwrap_or_default();
            if wanted.contains_key(&(ns.clone(), name.clone())) && is_ours(&b.metadata, user_id) {
                continue;
            }
            if strip_us(b.subjects.as_deref(), sa).is_some() {
                return Err(RbacError::Shared {
                    binding: format!("{ns}/{name}"),
                });
            }
            let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
            delete_ok(api.delete(&name, &DeleteParams::default()).await)?;
            changes.removed_bindings.push(format!("{ns}/{name}"));
        }
        for ((ns, name), role) in &wanted {
            let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
            let rb = RoleBinding {
                metadata: meta(name, Some(ns), user_id, sa),
                role_ref: role_ref(*role),
                subjects: Some(subject(sa)),
            };
            match api.patch(name, &apply(), &Patch::Apply(&rb)).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => changes.missing_namespaces.push(ns.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        if let Ok(mut m) = self.applied.lock() {
            m.insert(
                (cluster_id, user_id.to_owned()),
                Applied {
                    fingerprint: desired.fingerprint(),
                    sa: sa.to_owned(),
                    desired: desired.clone(),
                    at: Instant::now(),
                    epoch,
                    missing: changes.missing_namespaces.iter().cloned().collect(),
                },
            );
        }
        Ok(changes)
    }

    /// Remove the user's service account and everything bound to it from the cluster.
    pub async fn remove(
        &self,
        client: &kube::Client,
        cluster_id: ClusterId,
        user_id: &str,
        sa: &str,
    ) -> Result<(), kube::Error> {
        self.invalidate(cluster_id, user_id);
        self.remove_account(client, sa).await
    }

    /// Remove a service account and everything bound to it alone (a binding shared with
    /// others loses nothing but stays).
    pub async fn remove_account(&self, client: &kube::Client, sa: &str) -> Result<(), kube::Error> {
        let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
        for b in crbs.list(&ListParams::default()).await? {
            if !names_us(b.subjects.as_deref(), sa) {
                continue;
            }
            let name = b.metadata.name.clone().unwrap_or_default();
            // A binding shared with others stays (the service account goes below).
            if strip_us(b.subjects.as_deref(), sa).is_none() {
                delete_ok(crbs.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        let all_rbs: Api<RoleBinding> = Api::all(client.clone());
        for b in all_rbs.list(&ListParams::default()).await? {
            if !names_us(b.subjects.as_deref(), sa) {
                continue;
            }
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let name = b.metadata.name.clone().unwrap_or_default();
            if strip_us(b.subjects.as_deref(), sa).is_none() {
                let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
                delete_ok(api.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        delete_ok(
            secrets
                .delete(&anchor_name(sa), &DeleteParams::default())
                .await,
        )?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
        delete_ok(sas.delete(sa, &DeleteParams::default()).await)?;
        Ok(())
    }
}

/// The group every service account of Warden's namespace is in: a binding to it reaches every
/// user's service account, so Warden never wants one.
const NAMESPACE_SA_GROUP: &str = "system:serviceaccounts:warden-system";

/// Whether `subject` is the user's service account or the group of all of Warden's.
fn is_us(subject: &Subject, sa: &str) -> bool {
    match subject.kind.as_str() {
        "ServiceAccount" => subject.name == sa && subject.namespace.as_deref() == Some(NAMESPACE),
        // `system:serviceaccount:<ns>:<name>` as a user name is the same identity.
        "User" => subject.name == format!("system:serviceaccount:{NAMESPACE}:{sa}"),
        "Group" => subject.name == NAMESPACE_SA_GROUP,
        _ => false,
    }
}

/// Whether a binding names the user's service account (or every service account of Warden's
/// namespace) among its subjects.
fn names_us(subjects: Option<&[Subject]>, sa: &str) -> bool {
    subjects.unwrap_or_default().iter().any(|s| is_us(s, sa))
}

/// The subjects left once the user's are taken out; `None` when none are left.
fn strip_us(subjects: Option<&[Subject]>, sa: &str) -> Option<Vec<Subject>> {
    let rest: Vec<Subject> = subjects
        .unwrap_or_default()
        .iter()
        .filter(|s| !is_us(s, sa))
        .cloned()
        .collect();
    (!rest.is_empty()).then_some(rest)
}

/// Whether a binding is one Warden made for this user (its name alone proves nothing: anyone
/// who may create bindings can pick it).
fn is_ours(meta: &ObjectMeta, user_id: &str) -> bool {
    let labels = meta.labels.as_ref();
    labels.and_then(|l| l.get(USER_LABEL)).map(String::as_str) == Some(user_id)
        && labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some("warden")
}

fn delete_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {

    /// A cluster-wide writer gets discovery and health, not the control plane's files and
    /// internals (`/logs/`, `/debug/pprof`, `/metrics`): the same paths the gate lets through.
    #[test]
    fn cluster_write_gets_only_the_non_resource_urls_a_user_needs() {
        let rules = WardenRole::ClusterWrite.rules();
        let urls: Vec<&String> = rules
            .iter()
            .filter_map(|r| r.non_resource_urls.as_ref())
            .flatten()
            .collect();
        assert!(!urls.is_empty());
        for u in urls {
            assert!(!u.starts_with('*'), "{u}");
            assert!(
                warden_domain::access::kube::user_non_resource_path(u.trim_end_matches('*')),
                "{u}"
            );
        }
    }

    use super::*;

    #[test]
    fn desired_rbac_follows_the_strongest_grant() {
        let mut a = KubeAccess::default();
        a.namespace_write.insert("apple".into());
        a.namespace_read.insert("banana".into());
        let d = Desired::from_access(&a);
        assert!(d.cluster_roles.is_empty());
        assert_eq!(
            d.namespace_roles.get("apple"),
            Some(&WardenRole::NamespaceWrite)
        );
        assert_eq!(
            d.namespace_roles.get("banana"),
            Some(&WardenRole::NamespaceRead)
        );
        let mut own = a.clone();
        own.namespace_write.insert(NAMESPACE.into());
        own.namespace_read.insert(NAMESPACE.into());
        assert_eq!(
            Desired::from_access(&own),
            d,
            "Warden's own namespace is never bound"
        );
        a.cluster_read = true;
        let d2 = Desired::from_access(&a);
        assert_eq!(d2.cluster_roles, BTreeSet::from([WardenRole::ClusterRead]));
        assert_eq!(d2.namespace_roles.len(), 1, "read is covered cluster-wide");
        assert_ne!(d.fingerprint(), d2.fingerprint());
        a.full = true;
        let d3 = Desired::from_access(&a);
        assert_eq!(d3.cluster_roles, BTreeSet::from([WardenRole::FullAccess]));
        assert!(d3.namespace_roles.is_empty());
    }

    /// Whether `rules` allow `verb` on `group`/`resource`, evaluated as RBAC does.
    fn allows(rules: &[PolicyRule], verb: &str, group: &str, resource: &str) -> bool {
        let has = |list: &[String], x: &str| list.iter().any(|v| v == "*" || v == x);
        rules.iter().any(|r| {
            has(&r.verbs, verb)
                && has(r.api_groups.as_deref().unwrap_or_default(), group)
                && has(r.resources.as_deref().unwrap_or_default(), resource)
        })
    }

    #[test]
    fn namespace_write_stays_within_the_namespace() {
        let rules = WardenRole::NamespaceWrite.rules();
        for r in &rules {
            assert!(
                r.api_groups
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .all(|g| g != "*"),
                "no rule on every group: {r:?}"
            );
            if r.api_groups.as_deref() == Some(&[String::new()][..]) {
                assert!(
                    r.resources
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .all(|x| x != "*"),
                    "core resources are enumerated: {r:?}"
                );
            }
            assert!(r.non_resource_urls.is_none(), "{r:?}");
            assert!(r.resource_names.is_none(), "{r:?}");
            assert!(
                r.verbs.iter().all(|v| WRITE_VERBS.contains(&v.as_str())),
                "{r:?}"
            );
        }
        // Workloads: everything a namespace admin does.
        for (group, resource) in [
            ("", "pods"),
            ("", "pods/exec"),
            ("", "pods/portforward"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "services"),
            ("", "serviceaccounts"),
            ("apps", "deployments"),
            ("apps", "deployments/scale"),
            ("batch", "cronjobs"),
            ("networking.k8s.io", "networkpolicies"),
            ("policy", "poddisruptionbudgets"),
        ] {
            for verb in WRITE_VERBS {
                assert!(
                    allows(&rules, verb, group, resource),
                    "{verb} {group}/{resource}"
                );
            }
        }
        // The namespace itself, its quotas and limits, and RBAC: read only.
        for (group, resource) in [
            ("", "namespaces"),
            ("", "namespaces/status"),
            ("", "resourcequotas"),
            ("", "limitranges"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
        ] {
            assert!(
                allows(&rules, "get", group, resource),
                "get {group}/{resource}"
            );
            assert!(
                allows(&rules, "list", group, resource),
                "list {group}/{resource}"
            );
            for verb in ["create", "update", "patch", "delete", "deletecollection"] {
                assert!(
                    !allows(&rules, verb, group, resource),
                    "{verb} {group}/{resource}"
                );
            }
        }
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!allows(&rules, verb, "", "namespaces/finalize"), "{verb}");
        }
        // No tokens for the namespace's service accounts, no escalation.
        assert!(!allows(&rules, "create", "", "serviceaccounts/token"));
        // Endpoints are read, not written (CVE-2021-25740: a Service pointed at another
        // namespace's pods, or the control plane, through a controller acting for it).
        for verb in ["create", "update", "patch", "delete"] {
            assert!(!allows(&rules, verb, "", "endpoints"), "{verb}");
            assert!(
                !allows(&rules, verb, "discovery.k8s.io", "endpointslices"),
                "{verb}"
            );
        }
        assert!(allows(&rules, "list", "", "endpoints"));
        assert!(allows(&rules, "list", "discovery.k8s.io", "endpointslices"));
        for verb in ["escalate", "bind", "impersonate", "approve", "sign"] {
            assert!(
                !allows(&rules, verb, "rbac.authorization.k8s.io", "roles"),
                "{verb}"
            );
            assert!(!allows(&rules, verb, "", "serviceaccounts"), "{verb}");
        }
        // Read access is never narrower than the namespace read-only role's.
        for r in read_rules(Bindings::Readable) {
            assert!(rules.contains(&r), "{r:?}");
        }
    }

    #[test]
    fn the_cluster_wide_read_role_does_not_list_who_holds_what() {
        let cluster = WardenRole::ClusterRead.rules();
        let namespace = WardenRole::NamespaceRead.rules();
        for kind in ["rolebindings", "clusterrolebindings"] {
            for verb in ["get", "list", "watch"] {
                assert!(
                    !allows(&cluster, verb, "rbac.authorization.k8s.io", kind),
                    "{verb} {kind}"
                );
            }
            assert!(allows(
                &namespace,
                "list",
                "rbac.authorization.k8s.io",
                kind
            ));
        }
        for kind in ["roles", "clusterroles"] {
            assert!(allows(&cluster, "list", "rbac.authorization.k8s.io", kind));
        }
    }

    #[test]
    fn read_roles_never_grant_secrets_or_connect() {
        for r in read_rules(Bindings::Hidden)
            .into_iter()
            .chain(read_rules(Bindings::Readable))
        {
            let res = r.resources.unwrap_or_default();
            if r.api_groups.as_deref() == Some(&[String::new()][..]) {
                assert!(!res.iter().any(|x| x == "secrets"
                    || x == "*"
                    || x.ends_with("/exec")
                    || x.ends_with("/attach")
                    || x.ends_with("/portforward")
                    || x.ends_with("/proxy")));
            } else {
                assert!(!r
                    .api_groups
                    .unwrap_or_default()
                    .iter()
                    .any(|g| g.is_empty() || g == "*"));
            }
            assert!(r
                .verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str())));
        }
    }
}
