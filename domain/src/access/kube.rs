//! The gate's decision for Kubernetes: what a user may do on one cluster through kubectl, the
//! gateway or a web terminal, and why not. The gateway asks it for every request, the terminal
//! when it opens and on every frame after the authorization epoch moved, and a live stream at
//! each re-check, so all three end exactly when the same request would now be refused.
//!
//! The rights come from the user's effective bindings (their own and their groups') on the
//! projects that own or share the cluster. Beyond what the cluster's RBAC enforces, Warden
//! itself refuses what no grant covers, so a stale or lagging cluster-side RBAC never lets more
//! through than the bindings say: a namespaced request where the user has no right, a write
//! where they may only read, exec/attach/port-forward/proxy and secrets for read-only grants,
//! and secrets to non-administrators when the organization says so.

use std::collections::BTreeSet;

use super::Effective;
use crate::permissions::{Permission, Scope};

/// A cluster with the projects that own and share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeCluster {
    pub id: crate::ids::ClusterId,
    pub name: String,
    pub owner: String,
    pub shared_with: Vec<String>,
    pub status: crate::dto::ClusterStatus,
}

impl KubeCluster {
    /// The owner first, then the projects it is shared with.
    pub fn projects(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.owner).chain(self.shared_with.iter())
    }
}

/// The rights a user's bindings give on one cluster, computed from the access policy's
/// effective bindings (the user's own and their groups').
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeAccess {
    /// `kubectl.fullaccess`.
    pub full: bool,
    /// `kubectl.cluster.write`, or a namespace write permission granted to a whole project.
    pub cluster_write: bool,
    /// `kubectl.cluster.read`, or a namespace read permission granted to a whole project.
    pub cluster_read: bool,
    /// `kubectl.namespace.write` in these namespaces.
    pub namespace_write: BTreeSet<String>,
    /// `kubectl.namespace.read` in these namespaces.
    pub namespace_read: BTreeSet<String>,
    /// `kubeconfig.read` through a binding that reaches this cluster.
    pub kubeconfig_read: bool,
    /// An organization-scope binding grants `kubectl.fullaccess` (an organization admin).
    pub org_admin: bool,
    /// The project through which the strongest right comes (the owner when it grants any).
    pub project: Option<String>,
    /// The bindings that grant the rights, in words (for the audit log).
    pub via: Vec<String>,
}

/// What a request may do in one namespace (or cluster-wide, for `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KubeLevel {
    None,
    Read,
    Write,
}

impl KubeAccess {
    /// Whether any kubectl permission reaches the cluster.
    pub fn any(&self) -> bool {
        self.full
            || self.cluster_write
            || self.cluster_read
            || !self.namespace_write.is_empty()
            || !self.namespace_read.is_empty()
    }

    /// Whether the user may use kubectl on the cluster at all (and find it in a kubeconfig).
    pub fn usable(&self) -> bool {
        self.any() && self.kubeconfig_read
    }

    /// The level in `namespace` (`None`: a cluster-scoped request or one across namespaces).
    pub fn level(&self, namespace: Option<&str>) -> KubeLevel {
        if self.full || self.cluster_write {
            return KubeLevel::Write;
        }
        if let Some(ns) = namespace {
            if self.namespace_write.contains(ns) {
                return KubeLevel::Write;
            }
            if self.cluster_read || self.namespace_read.contains(ns) {
                return KubeLevel::Read;
            }
            return KubeLevel::None;
        }
        if self.cluster_read {
            KubeLevel::Read
        } else {
            KubeLevel::None
        }
    }
}

impl KubeAccess {
    /// The one namespace the rights cover, when they cover exactly one and nothing
    /// cluster-wide (a kubeconfig's context defaults to it).
    pub fn only_namespace(&self) -> Option<String> {
        if self.full || self.cluster_write || self.cluster_read {
            return None;
        }
        let mut all = self
            .namespace_write
            .iter()
            .chain(self.namespace_read.iter());
        match (all.next(), all.next()) {
            (Some(ns), None) => Some(ns.clone()),
            _ => None,
        }
    }

    /// The rights in words, for refusals ("write in namespace apple; read on the whole
    /// cluster").
    pub fn in_words(&self) -> String {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if self.full {
            parts.push("full access to the cluster".to_owned());
        } else if self.cluster_write {
            parts.push("write on the whole cluster".to_owned());
        } else if self.cluster_read {
            parts.push("read on the whole cluster".to_owned());
        }
        let plural = |s: &BTreeSet<String>| {
            if s.len() > 1 {
                "namespaces"
            } else {
                "namespace"
            }
        };
        if !self.namespace_write.is_empty() && !self.full && !self.cluster_write {
            parts.push(format!(
                "write in {} {}",
                plural(&self.namespace_write),
                list(&self.namespace_write)
            ));
        }
        if !self.namespace_read.is_empty() && !self.full && !self.cluster_read {
            parts.push(format!(
                "read in {} {}",
                plural(&self.namespace_read),
                list(&self.namespace_read)
            ));
        }
        if parts.is_empty() {
            return "no kubectl access".into();
        }
        let mut s = parts.join("; ");
        if let Some(p) = &self.project {
            s.push_str(&format!(" (project {p})"));
        }
        s
    }
}

/// The user's kubectl rights on `cluster`, through the projects that own or share it (and the
/// organization). A deactivated user has none.
pub fn kube_access(eff: &Effective, cluster: &KubeCluster) -> KubeAccess {
    let mut a = KubeAccess::default();
    if !eff.active {
        return a;
    }
    let mut best: Option<(u8, usize, String)> = None;
    let projects: Vec<&String> = cluster.projects().collect();
    for b in &eff.bindings {
        let project_rank = match (b.scope, &b.project) {
            (Scope::Organization, _) => None,
            (_, Some(p)) => match projects.iter().position(|x| *x == p) {
                Some(i) => Some(i),
                None => continue,
            },
            (_, None) => continue,
        };
        let mut strength = 0u8;
        for p in &b.permissions {
            let s = match (p, b.scope) {
                (Permission::KubectlFullaccess, _) => {
                    a.full = true;
                    if b.scope == Scope::Organization {
                        a.org_admin = true;
                    }
                    5
                }
                (Permission::KubectlClusterWrite, _) => {
                    a.cluster_write = true;
                    4
                }
                (Permission::KubectlClusterRead, _) => {
                    a.cluster_read = true;
                    2
                }
                (Permission::KubectlNamespaceWrite, Scope::Namespace) => {
                    a.namespace_write.extend(b.namespaces.iter().cloned());
                    3
                }
                (Permission::KubectlNamespaceRead, Scope::Namespace) => {
                    a.namespace_read.extend(b.namespaces.iter().cloned());
                    1
                }
                // A namespace permission granted to a whole project or the organization
                // reaches every namespace of the cluster. Write so granted would be a
                // cluster-wide write (roles no longer carry it: `permissions::NAMESPACE_WRITE_WIDE`);
                // a role stored before that grants the read it includes, no more.
                (Permission::KubectlNamespaceWrite, _) => {
                    a.cluster_read = true;
                    2
                }
                (Permission::KubectlNamespaceRead, _) => {
                    a.cluster_read = true;
                    2
                }
                (Permission::KubeconfigRead, _) => {
                    a.kubeconfig_read = true;
                    0
                }
                _ => 0,
            };
            strength = strength.max(s);
        }
        if strength > 0 {
            a.via.push(format!(
                "role {} ({}) via {}",
                b.role,
                match &b.project {
                    Some(p) => format!("project {p}"),
                    None => "organization".to_owned(),
                },
                b.via
            ));
            let rank = project_rank.unwrap_or(0);
            let project = b.project.clone().unwrap_or_else(|| cluster.owner.clone());
            let better = match &best {
                None => true,
                Some((s, r, _)) => strength > *s || (strength == *s && rank < *r),
            };
            if better {
                best = Some((strength, rank, project));
            }
        }
    }
    if a.cluster_write {
        a.cluster_read = true;
    }
    a.namespace_read = a
        .namespace_read
        .difference(&a.namespace_write)
        .cloned()
        .collect();
    a.project = best.map(|(_, _, p)| p);
    a
}

/// What a person asks of a cluster: one Kubernetes API request (through the gateway or a
/// terminal's kubectl), or the opening of a terminal (a pod exec is a connect in its
/// namespace; the kubectl shell asks only for the cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeIntent {
    /// The RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; connections are `create`).
    pub verb: String,
    pub api_group: String,
    /// `pods`, `pods/exec`, ... (`None`: a non-resource request such as discovery).
    pub resource: Option<String>,
    pub namespace: Option<String>,
    /// Whether it addresses a resource (not discovery, `/version`, `/healthz`...).
    pub resource_request: bool,
    /// exec, attach, port-forward or proxy: an interactive connection into a workload.
    pub connect: bool,
    /// Anything about core secrets.
    pub secrets: bool,
    /// The path of a non-resource request (`/version`, `/logs/...`).
    pub non_resource_path: Option<String>,
}

/// The first segments of the non-resource paths a kubectl user needs: discovery, the OpenAPI
/// documents, the version, health, and the service-account issuer's public keys. Others serve
/// the control plane's own files and internals (`/logs/` is the node's `/var/log`, audit logs
/// included; `/debug/pprof`; `/metrics`; `/configz`; `/flowcontrol`), which only full access
/// reaches.
const USER_NON_RESOURCE_ROOTS: &[&str] = &[
    "",
    "api",
    "apis",
    "openapi",
    "version",
    "healthz",
    "livez",
    "readyz",
    ".well-known",
    "openid",
];

/// Whether a non-resource path is one a kubectl user needs (see [`USER_NON_RESOURCE_ROOTS`]).
pub fn user_non_resource_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    USER_NON_RESOURCE_ROOTS.contains(&first)
}

impl KubeIntent {
    /// A kubectl shell on the cluster: only the right to use kubectl there.
    pub fn shell() -> Self {
        Self::default()
    }

    /// An exec into a pod of `namespace`.
    pub fn pod_exec(namespace: &str) -> Self {
        Self {
            verb: "create".into(),
            resource: Some("pods/exec".into()),
            namespace: Some(namespace.into()),
            resource_request: true,
            connect: true,
            ..Self::default()
        }
    }

    /// What a role that only reads never does: a change (self-reviews aside), an
    /// interactive connection, anything about secrets.
    pub fn beyond_reading(&self) -> bool {
        (self.writes() && !self.self_review()) || self.connect || self.secrets
    }

    fn writes(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// The self-reviews every user may create (`kubectl auth can-i`, `whoami`).
    fn self_review(&self) -> bool {
        matches!(
            self.api_group.as_str(),
            "authorization.k8s.io" | "authentication.k8s.io"
        ) && self
            .resource
            .as_deref()
            .is_some_and(|r| r.starts_with("self") || r == "localsubjectaccessreviews")
    }

    fn in_words(&self) -> String {
        let what = self.resource.as_deref().unwrap_or("resources");
        format!("{} {what}", self.verb)
    }

    /// Why a stream of this request (a watch, a follow) may not run on `access`, when it may
    /// not. A request across namespaces or of cluster-scoped objects is left to the
    /// cluster's RBAC when it is made; but the API server authorizes a watch once, when it
    /// starts, and a grant removed later in Warden (with the RBAC it gave) does not end it.
    /// So Warden holds such a stream to its own grants for as long as it lasts.
    pub fn stream_refusal(&self, access: &KubeAccess) -> Option<String> {
        (self.resource_request && self.namespace.is_none() && access.level(None) == KubeLevel::None)
            .then(|| {
                format!(
                    "{} across namespaces needs read on the whole cluster; Warden grants you {}",
                    self.in_words(),
                    access.in_words()
                )
            })
    }
}

/// Warden's namespace on every cluster (the agent, users' service accounts).
pub const WARDEN_NAMESPACE: &str = "warden-system";

/// Organization rules the decision applies beyond the bindings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KubeRules {
    /// Only organization administrators may touch secrets through Warden.
    pub secrets_org_admins_only: bool,
}

/// Why the gate refuses a Kubernetes request or terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeDenied {
    /// What the person is told.
    pub message: String,
    /// The detail for the audit log, when it says more than the message.
    pub reason: Option<String>,
    /// The project the refusal is about.
    pub project: String,
    /// The user holds no kubectl right on the cluster any more: their identity there goes.
    pub lost_cluster: bool,
    /// The refusal may name the cluster's project (a link to request access there): only to
    /// someone whose grant on it just expired. Anyone else is told what they would be told of
    /// a cluster that does not exist, so cluster names and owners cannot be enumerated.
    pub names_owner: bool,
    /// A namespace no grant reaches, and the built-in role that would allow the request: what
    /// a pre-filled access request asks for.
    pub could_request: Option<(String, &'static str)>,
}

/// A refusal the cluster made (its RBAC said no to what the gate let through, e.g. a
/// cluster-scoped read for a namespace grant), in the person's words instead of the cluster's
/// words about a service account.
pub fn cluster_refusal(
    email: &str,
    cluster: &str,
    intent: &KubeIntent,
    access: &KubeAccess,
) -> String {
    let place = match &intent.namespace {
        Some(ns) => format!("in namespace {ns} of cluster {cluster}"),
        None => format!("on cluster {cluster}"),
    };
    let mut s = format!(
        "{email} cannot {} {place}: Warden grants you {}",
        intent.in_words(),
        access.in_words()
    );
    if let Some(p) = &access.project {
        s.push_str(&format!(". Ask a project administrator of {p} for more"));
    }
    s
}

/// The gate's answer for `intent` on `cluster`: the user's rights there, or why not.
/// When the user's access to `cluster` is gone because a binding expired: what to tell them
/// ("your access (role R on project P) expired at T").
fn expired_grant(eff: &Effective, cluster: &KubeCluster) -> Option<String> {
    if eff.expired.is_empty() || !kube_access(&eff.with_expired(), cluster).usable() {
        return None;
    }
    let projects: Vec<&String> = cluster.projects().collect();
    eff.expired_covering(|b| {
        b.project.is_none() || b.project.as_ref().is_some_and(|p| projects.contains(&p))
    })
    .map(|b| b.expired_reason())
}

/// Whether `cluster` is, to this user, as a cluster that does not exist: no kubectl access
/// there, and none that just expired (which is told as such). Checks that would answer
/// differently for a cluster that exists (its settings, a credential's limits) come after
/// this one, so nobody learns which cluster names exist.
pub fn unknown_to(eff: &Effective, cluster: &KubeCluster) -> bool {
    !kube_access(eff, cluster).usable() && expired_grant(eff, cluster).is_none()
}

pub fn decide_kube(
    eff: &Effective,
    email: &str,
    cluster: &KubeCluster,
    intent: &KubeIntent,
    rules: KubeRules,
) -> Result<KubeAccess, KubeDenied> {
    let access = kube_access(eff, cluster);
    let project = access
        .project
        .clone()
        .unwrap_or_else(|| cluster.owner.clone());
    let deny = |message: String| KubeDenied {
        message,
        reason: None,
        project: project.clone(),
        lost_cluster: false,
        names_owner: false,
        could_request: None,
    };
    if !access.usable() {
        // A grant that just expired says so (a binding is kept a day after its expiry), and
        // where to ask again; anyone else hears what an unknown cluster's name gets.
        let expired = expired_grant(eff, cluster);
        let names_owner = expired.is_some();
        let message = expired.unwrap_or_else(|| {
            format!(
                "you have no kubectl access to a cluster named {}",
                cluster.name
            )
        });
        return Err(KubeDenied {
            reason: Some(format!(
                "no binding grants kubeconfig.read and a kubectl permission through project {} or a project it is shared with",
                cluster.owner
            )),
            lost_cluster: true,
            names_owner,
            ..deny(message)
        });
    }
    let level = access.level(intent.namespace.as_deref());
    if intent.connect && level == KubeLevel::Read {
        return Err(deny(
            "read-only access never allows exec, attach, port-forward or proxy".into(),
        ));
    }
    if intent.secrets && level == KubeLevel::Read {
        return Err(deny("read-only access never allows secrets".into()));
    }
    if intent.secrets && rules.secrets_org_admins_only && !access.org_admin {
        return Err(deny(
            "only organization administrators may access secrets through Warden (organization setting)".into(),
        ));
    }
    // Warden's own namespace on the cluster (the agent and its credential, every user's
    // service account) is out of reach of every grant short of full access, reads included;
    // so are secrets of all namespaces at once (they include the agent's credential). Full
    // access only reads it through Warden: no Secrets, no tokens of its service accounts, no
    // exec or attach into the agent, no change. Those would let one user act in the cluster as
    // another (every user's service account lives there) or as the agent, out of Warden's
    // sight; a cluster administrator changes the agent with its manifest, outside Warden.
    if intent.resource_request {
        let verb = intent.in_words();
        if intent.namespace.as_deref() == Some(WARDEN_NAMESPACE) {
            if !access.full {
                return Err(deny(format!(
                    "{email} cannot {verb} in namespace {WARDEN_NAMESPACE} of cluster {}: it is Warden's own namespace, which only full access reaches",
                    cluster.name
                )));
            }
            if intent.writes() || intent.connect || intent.secrets {
                return Err(deny(format!(
                    "{email} cannot {verb} in namespace {WARDEN_NAMESPACE} of cluster {}: it belongs to the Warden agent, and through Warden even full access only reads it (no secrets, tokens, exec or changes); change the agent with its manifest",
                    cluster.name
                )));
            }
        }
        if intent.secrets && intent.namespace.is_none() {
            return Err(deny(format!(
                "{email} cannot {verb} of all namespaces at once on cluster {}: they include the Warden agent's ({WARDEN_NAMESPACE}), which no one reads through Warden; ask namespace by namespace",
                cluster.name
            )));
        }
    }
    // The control plane's own files and internals, below full access.
    if !intent.resource_request && !access.full {
        if let Some(path) = intent
            .non_resource_path
            .as_deref()
            .filter(|p| !user_non_resource_path(p))
        {
            return Err(deny(format!(
                "{email} cannot {} {path} on cluster {}: it serves the control plane's own files and internals (logs, profiles, metrics); that takes full access",
                intent.verb, cluster.name
            )));
        }
    }
    // A namespaced request where no grant reaches: refused here, in the person's words, and
    // never left to the cluster's RBAC (which may still hold what a revoked grant gave).
    if let (true, Some(ns), KubeLevel::None) =
        (intent.resource_request, intent.namespace.as_deref(), level)
    {
        let role = if intent.writes() || intent.connect {
            "NAMESPACE_ADMIN"
        } else {
            "NAMESPACE_READ_ONLY"
        };
        return Err(KubeDenied {
            reason: Some(format!("no kubectl grant reaches namespace {ns}")),
            could_request: Some((ns.to_owned(), role)),
            ..deny(format!(
                "{email} cannot {} in namespace {ns} of cluster {}: Warden grants you {}. Ask a project administrator of {project} for more",
                intent.in_words(),
                cluster.name,
                access.in_words(),
            ))
        });
    }
    // Two doors to other identities, which only full access opens: a token for any service
    // account (kube-system's controllers hold cluster-admin-like rights, and a token is used
    // out of Warden's sight), and a node's kubelet API (exec into any pod on the node, which
    // admission never sees). A cluster-wide write grant stops short of both.
    if !access.full && intent.resource_request && intent.api_group.is_empty() {
        let door = match intent.resource.as_deref() {
            Some("serviceaccounts/token") if intent.writes() => {
                Some("a service account's token is its identity, used out of Warden's sight")
            }
            Some("nodes/proxy") => {
                Some("a node's kubelet API runs commands in any pod on it, out of the cluster's admission")
            }
            _ => None,
        };
        if let Some(why) = door {
            return Err(deny(format!(
                "{email} cannot {} on cluster {}: {why}; that takes full access",
                intent.in_words(),
                cluster.name
            )));
        }
    }
    // The cluster's own system namespaces hold the controllers' service accounts (some may
    // `escalate` ClusterRoles): a pod made there to run as one, or an exec into one, hands out
    // its token, and with it the cluster. A cluster-wide write grant stops short of them; an
    // administrator may still grant one by name (confirmed as a system namespace).
    if !access.full
        && intent.resource_request
        && (intent.writes() || intent.connect)
        && !intent.self_review()
    {
        if let Some(ns) = intent
            .namespace
            .as_deref()
            .filter(|ns| crate::dto::SYSTEM_NAMESPACES.contains(ns))
            .filter(|ns| !access.namespace_write.contains(*ns))
        {
            return Err(deny(format!(
                "{email} cannot {} in namespace {ns} of cluster {}: the cluster's system namespaces hold its controllers' service accounts (a pod run as one hands out its token); that takes full access, or a grant on {ns} itself",
                intent.in_words(),
                cluster.name
            )));
        }
    }
    if intent.resource_request && intent.writes() && !intent.self_review() {
        let place = match &intent.namespace {
            Some(ns) => format!("in namespace {ns} of cluster {}", cluster.name),
            None => format!("on cluster {}", cluster.name),
        };
        let refuse = |why: String| {
            deny(format!(
                "{email} cannot {} {place}: {why}",
                intent.in_words()
            ))
        };
        // The Namespace object is the cluster's, not the namespace's: a RoleBinding in N
        // matches `PATCH /api/v1/namespaces/N` on a real API server, and a label there can turn
        // pod security off. Changing it takes write access to the whole cluster.
        let namespace_object = intent
            .resource
            .as_deref()
            .is_some_and(|r| r == "namespaces" || r.starts_with("namespaces/"));
        let level = if namespace_object {
            access.level(None)
        } else {
            level
        };
        // Warden's own namespace on the cluster (the agent, its credential, every user's
        // service account) and the admission rules that guard it are out of reach of every
        // grant short of full access: a cluster-wide write grant could otherwise delete the
        // guard policy's binding, then take the agent's namespace.
        if !access.full {
            let admission = intent.api_group == "admissionregistration.k8s.io"
                && intent.resource.as_deref().is_some_and(|r| {
                    r.starts_with("validatingadmissionpolic")
                        || r.starts_with("mutatingadmissionpolic")
                        || r.starts_with("validatingwebhookconfigurations")
                        || r.starts_with("mutatingwebhookconfigurations")
                });
            if admission {
                return Err(refuse(
                    "admission policies and webhooks guard the cluster (Warden's namespace included); changing them takes full access".into(),
                ));
            }
            // Roles and bindings made by hand would outlive the grant they were made with (a
            // copy of Warden's own ClusterRole, bound to a service account of one's own, keeps
            // a writer's rights after Warden revoked them): on the cluster, RBAC is Warden's
            // to make, below full access.
            // Identities and traffic of others: a certificate signing request for a kubelet's
            // client signer is approved by the cluster itself (a node's identity, for a year,
            // out of Warden's sight); an APIService decides where a whole API's requests go,
            // bodies included.
            if intent.api_group == "certificates.k8s.io" {
                return Err(refuse(
                    "certificate signing requests mint identities (a kubelet's client certificate is approved by the cluster itself and used out of Warden's sight); that takes full access".into(),
                ));
            }
            if intent.api_group == "apiregistration.k8s.io" {
                return Err(refuse(
                    "an APIService decides where a whole API's requests go, their bodies included; that takes full access".into(),
                ));
            }
            if intent.api_group == "rbac.authorization.k8s.io" {
                return Err(refuse(
                    "roles and bindings on the cluster are made by Warden (one made by hand would outlive the grant it was made with); that takes full access".into(),
                ));
            }
        }
        match level {
            KubeLevel::Write => {}
            KubeLevel::Read => {
                return Err(refuse(format!(
                    "read-only access never allows {}",
                    intent.verb
                )))
            }
            KubeLevel::None if namespace_object => {
                return Err(refuse(
                    "a namespace grant does not reach the Namespace object itself (that takes write access to the whole cluster)".into(),
                ))
            }
            KubeLevel::None => {
                return Err(refuse(format!(
                    "Warden grants you {}. Ask a project administrator of {project} for more",
                    access.in_words()
                )))
            }
        }
    }
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::ResolvedBinding;
    use Permission::*;

    #[test]
    fn users_reach_discovery_and_health_not_the_control_planes_internals() {
        for ok in [
            "/",
            "/api",
            "/apis/apps/v1",
            "/openapi/v3",
            "/version",
            "/healthz",
            "/readyz/etcd",
            "/.well-known/openid-configuration",
        ] {
            assert!(user_non_resource_path(ok), "{ok}");
        }
        for no in [
            "/logs/",
            "/logs/kube-apiserver-audit.log",
            "/debug/pprof/profile",
            "/metrics",
            "/configz",
            "/flowcontrol",
            "/apisx",
        ] {
            assert!(!user_non_resource_path(no), "{no}");
        }
    }

    #[test]
    fn a_stream_across_namespaces_needs_read_on_the_whole_cluster() {
        let watch_all = KubeIntent {
            verb: "watch".into(),
            resource: Some("configmaps".into()),
            resource_request: true,
            ..KubeIntent::default()
        };
        let one_namespace = KubeAccess {
            namespace_write: ["apple".to_owned()].into(),
            ..KubeAccess::default()
        };
        let why = watch_all.stream_refusal(&one_namespace).expect("refused");
        assert!(why.contains("across namespaces"), "{why}");
        let whole = KubeAccess {
            cluster_read: true,
            ..KubeAccess::default()
        };
        assert_eq!(watch_all.stream_refusal(&whole), None);
        // In a namespace, and discovery, it is the usual decision's business.
        let in_apple = KubeIntent {
            namespace: Some("apple".into()),
            ..watch_all.clone()
        };
        assert_eq!(in_apple.stream_refusal(&one_namespace), None);
        assert_eq!(KubeIntent::default().stream_refusal(&one_namespace), None);
    }

    fn binding(
        scope: Scope,
        project: Option<&str>,
        ns: &[&str],
        perms: &[Permission],
    ) -> ResolvedBinding {
        ResolvedBinding {
            binding_id: "b".into(),
            role: "R".into(),
            scope,
            permissions: perms.iter().copied().collect(),
            project: project.map(str::to_owned),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            via: "user".into(),
            expires_at: None,
        }
    }

    fn cluster() -> KubeCluster {
        KubeCluster {
            id: crate::ids::ClusterId::new(),
            name: "prod".into(),
            owner: "production".into(),
            shared_with: vec!["dev".into()],
            status: crate::dto::ClusterStatus::Connected,
        }
    }

    #[test]
    fn namespace_admin_through_a_sharing_project() {
        let eff = Effective {
            active: true,
            bindings: vec![
                binding(
                    Scope::Namespace,
                    Some("dev"),
                    &["apple"],
                    &[KubeconfigRead, KubectlNamespaceRead, KubectlNamespaceWrite],
                ),
                binding(
                    Scope::Namespace,
                    Some("dev"),
                    &["banana"],
                    &[KubeconfigRead, KubectlNamespaceRead],
                ),
                binding(
                    Scope::Project,
                    Some("other"),
                    &[],
                    &[KubeconfigRead, KubectlFullaccess],
                ),
            ],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        let a = kube_access(&eff, &cluster());
        assert!(a.usable() && !a.full && !a.cluster_read);
        assert_eq!(a.level(Some("apple")), KubeLevel::Write);
        assert_eq!(a.level(Some("banana")), KubeLevel::Read);
        assert_eq!(a.level(Some("default")), KubeLevel::None);
        assert_eq!(a.level(None), KubeLevel::None);
        assert_eq!(a.project.as_deref(), Some("dev"));
        assert!(a.namespace_read.contains("banana") && !a.namespace_read.contains("apple"));
    }

    #[test]
    fn org_and_owner_grants() {
        let eff = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Organization,
                None,
                &[],
                &[KubeconfigRead, KubectlFullaccess],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        let a = kube_access(&eff, &cluster());
        assert!(a.full && a.org_admin && a.usable());
        assert_eq!(a.project.as_deref(), Some("production"));
        let inactive = Effective {
            active: false,
            ..eff
        };
        assert!(!kube_access(&inactive, &cluster()).any());
    }

    fn sally() -> Effective {
        Effective {
            active: true,
            bindings: vec![
                binding(
                    Scope::Namespace,
                    Some("dev"),
                    &["apple"],
                    &[KubeconfigRead, KubectlNamespaceRead, KubectlNamespaceWrite],
                ),
                binding(
                    Scope::Namespace,
                    Some("dev"),
                    &["banana"],
                    &[KubeconfigRead, KubectlNamespaceRead],
                ),
            ],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        }
    }

    fn ask(verb: &str, resource: &str, ns: Option<&str>) -> KubeIntent {
        KubeIntent {
            verb: verb.into(),
            resource: Some(resource.into()),
            namespace: ns.map(str::to_owned),
            resource_request: true,
            connect: resource.ends_with("/exec"),
            secrets: resource == "secrets",
            ..KubeIntent::default()
        }
    }

    fn decide(eff: &Effective, intent: &KubeIntent) -> Result<KubeAccess, KubeDenied> {
        decide_kube(
            eff,
            "sally@example.com",
            &cluster(),
            intent,
            KubeRules::default(),
        )
    }

    #[test]
    fn a_namespace_grant_reaches_its_namespace_and_nothing_else() {
        let eff = sally();
        assert!(decide(&eff, &ask("delete", "pods", Some("apple"))).is_ok());
        assert!(decide(&eff, &KubeIntent::pod_exec("apple")).is_ok());
        assert!(decide(&eff, &ask("list", "pods", Some("banana"))).is_ok());
        // Cluster-scoped reads go to the cluster, whose RBAC answers (discovery, `get ns`).
        assert!(decide(&eff, &ask("list", "namespaces", None)).is_ok());
        assert!(decide(&eff, &KubeIntent::shell()).is_ok());
        let d = decide(&eff, &ask("list", "pods", Some("kube-system"))).unwrap_err();
        assert_eq!(
            d.message,
            "sally@example.com cannot list pods in namespace kube-system of cluster prod: Warden grants you write in namespace apple; read in namespace banana (project dev). Ask a project administrator of dev for more"
        );
        assert!(!d.lost_cluster);
        assert_eq!(d.project, "dev");
        let d = decide(&eff, &KubeIntent::pod_exec("default")).unwrap_err();
        assert!(d
            .message
            .contains("cannot create pods/exec in namespace default"));
        // Not the Namespace object of her own namespace, nor anything cluster-wide.
        let d = decide(&eff, &ask("patch", "namespaces", Some("apple"))).unwrap_err();
        assert!(
            d.message.contains("does not reach the Namespace object"),
            "{}",
            d.message
        );
        assert!(decide(&eff, &ask("delete", "namespaces", Some("apple"))).is_err());
        assert!(decide(&eff, &ask("update", "namespaces/finalize", Some("apple"))).is_err());
        let d = decide(&eff, &ask("create", "clusterrolebindings", None)).unwrap_err();
        assert!(
            d.message
                .contains("cannot create clusterrolebindings on cluster prod: Warden grants you"),
            "{}",
            d.message
        );
        let mut whoami = ask("create", "selfsubjectreviews", None);
        whoami.api_group = "authentication.k8s.io".into();
        assert!(decide(&eff, &whoami).is_ok());
    }

    #[test]
    fn wardens_namespace_and_its_guard_need_full_access() {
        let writer = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Project,
                Some("production"),
                &[],
                &[KubeconfigRead, KubectlClusterRead, KubectlClusterWrite],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        assert!(decide(&writer, &ask("create", "configmaps", Some("default"))).is_ok());
        assert!(decide(&writer, &ask("list", "secrets", Some("default"))).is_ok());
        for intent in [
            ask("list", "secrets", Some(WARDEN_NAMESPACE)),
            ask("get", "pods", Some(WARDEN_NAMESPACE)),
            ask("create", "pods", Some(WARDEN_NAMESPACE)),
            ask("create", "serviceaccounts/token", Some(WARDEN_NAMESPACE)),
            ask("patch", "namespaces", Some(WARDEN_NAMESPACE)),
            ask("list", "secrets", None),
            ask("watch", "secrets", None),
        ] {
            let d = decide(&writer, &intent).unwrap_err();
            assert!(
                d.message.contains(WARDEN_NAMESPACE),
                "{intent:?}: {}",
                d.message
            );
        }
        for resource in [
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicies",
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
        ] {
            let mut i = ask("delete", resource, None);
            i.api_group = "admissionregistration.k8s.io".into();
            let d = decide(&writer, &i).unwrap_err();
            assert!(d.message.contains("takes full access"), "{}", d.message);
            i.verb = "list".into();
            assert!(decide(&writer, &i).is_ok(), "reading them is fine");
        }
        // Other identities (any service account's token, a node's kubelet) take full access.
        for intent in [
            ask("create", "serviceaccounts/token", Some("kube-system")),
            ask("create", "serviceaccounts/token", Some("default")),
            ask("get", "nodes/proxy", None),
            ask("create", "nodes/proxy", None),
        ] {
            let d = decide(&writer, &intent).unwrap_err();
            assert!(
                d.message.contains("that takes full access"),
                "{intent:?}: {}",
                d.message
            );
        }
        assert!(decide(&writer, &ask("get", "serviceaccounts", Some("kube-system"))).is_ok());
        assert!(decide(&writer, &ask("get", "nodes", None)).is_ok());
        // The system namespaces (pods run as a controller's service account) and RBAC (a role
        // of one's own outlives the grant) take full access; reading them does not.
        let mut exec = ask("create", "pods/exec", Some("kube-system"));
        exec.connect = true;
        for mut intent in [
            ask("create", "pods", Some("kube-system")),
            ask("patch", "deployments", Some("kube-public")),
            exec,
            ask("create", "clusterroles", None),
            ask("create", "clusterrolebindings", None),
            ask("create", "rolebindings", Some("default")),
            ask("patch", "roles", Some("default")),
        ] {
            if intent
                .resource
                .as_deref()
                .is_some_and(|r| r.contains("role"))
            {
                intent.api_group = "rbac.authorization.k8s.io".into();
            }
            let d = decide(&writer, &intent).unwrap_err();
            assert!(
                d.message.contains("that takes full access"),
                "{intent:?}: {}",
                d.message
            );
            intent.verb = "get".into();
            intent.connect = false;
            assert!(decide(&writer, &intent).is_ok(), "{intent:?}");
        }
        // A namespace write granted to a whole project (a role stored before roles stopped
        // carrying it so) reads the cluster, and writes nothing.
        let wide = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Project,
                Some("production"),
                &[],
                &[KubeconfigRead, KubectlNamespaceWrite],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        assert!(decide(&wide, &ask("list", "pods", Some("default"))).is_ok());
        assert!(decide(&wide, &ask("create", "pods", Some("default"))).is_err());
        assert!(decide(&wide, &ask("patch", "namespaces", Some("default"))).is_err());
        // Full access is the cluster, but through Warden it only reads Warden's namespace
        // (no secrets, tokens, exec or changes), and no one lists secrets of every namespace.
        let full = Effective {
            bindings: vec![binding(
                Scope::Organization,
                None,
                &[],
                &[KubeconfigRead, KubectlFullaccess],
            )],
            ..writer
        };
        for intent in [
            ask("get", "pods", Some(WARDEN_NAMESPACE)),
            ask("list", "serviceaccounts", Some(WARDEN_NAMESPACE)),
            ask("get", "pods/log", Some(WARDEN_NAMESPACE)),
            ask("watch", "events", Some(WARDEN_NAMESPACE)),
            ask("get", "namespaces", Some(WARDEN_NAMESPACE)),
            ask("list", "secrets", Some("default")),
            ask("create", "serviceaccounts/token", Some("default")),
            ask("get", "nodes/proxy", None),
            ask("delete", "clusterrolebindings", None),
        ] {
            assert!(decide(&full, &intent).is_ok(), "{intent:?}");
        }
        let exec = KubeIntent::pod_exec(WARDEN_NAMESPACE);
        for intent in [
            ask("list", "secrets", Some(WARDEN_NAMESPACE)),
            ask("get", "secrets", Some(WARDEN_NAMESPACE)),
            ask("create", "serviceaccounts/token", Some(WARDEN_NAMESPACE)),
            ask("delete", "serviceaccounts", Some(WARDEN_NAMESPACE)),
            ask("create", "pods", Some(WARDEN_NAMESPACE)),
            ask("patch", "deployments", Some(WARDEN_NAMESPACE)),
            ask("create", "rolebindings", Some(WARDEN_NAMESPACE)),
            ask("delete", "namespaces", Some(WARDEN_NAMESPACE)),
            ask("deletecollection", "pods", Some(WARDEN_NAMESPACE)),
            exec,
            ask("list", "secrets", None),
            ask("watch", "secrets", None),
        ] {
            let d = decide(&full, &intent).unwrap_err();
            assert!(
                d.message.contains(WARDEN_NAMESPACE),
                "{intent:?}: {}",
                d.message
            );
        }
    }

    #[test]
    fn read_only_never_writes_execs_or_reads_secrets() {
        let eff = sally();
        let d = decide(&eff, &ask("patch", "configmaps", Some("banana"))).unwrap_err();
        assert!(
            d.message.contains("read-only access never allows patch"),
            "{}",
            d.message
        );
        let d = decide(&eff, &KubeIntent::pod_exec("banana")).unwrap_err();
        assert_eq!(
            d.message,
            "read-only access never allows exec, attach, port-forward or proxy"
        );
        let d = decide(&eff, &ask("get", "secrets", Some("banana"))).unwrap_err();
        assert_eq!(d.message, "read-only access never allows secrets");
        // A cluster reader may still ask what they may do.
        let reader = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Project,
                Some("production"),
                &[],
                &[KubeconfigRead, KubectlClusterRead],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        let mut review = ask("create", "selfsubjectaccessreviews", None);
        review.api_group = "authorization.k8s.io".into();
        assert!(decide(&reader, &review).is_ok());
        assert!(decide(&reader, &ask("create", "namespaces", None)).is_err());
        assert!(decide(&reader, &ask("list", "pods", Some("anything"))).is_ok());
    }

    #[test]
    fn an_expired_grant_says_when_it_ended() {
        let mut gone = binding(
            Scope::Namespace,
            Some("dev"),
            &["apple"],
            &[KubeconfigRead, KubectlNamespaceWrite],
        );
        gone.role = "NAMESPACE_ADMIN".into();
        gone.expires_at = Some(0);
        let eff = Effective {
            active: true,
            bindings: vec![],
            all_projects: vec![],
            expired: vec![gone],
            valid_until: i64::MAX,
        };
        let d = decide(&eff, &ask("list", "pods", Some("apple"))).unwrap_err();
        assert!(d.lost_cluster);
        assert_eq!(
            d.message,
            "your access (role NAMESPACE_ADMIN on namespaces apple of project dev) expired at 1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn no_grant_on_the_cluster_means_its_identity_goes() {
        let eff = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Project,
                Some("elsewhere"),
                &[],
                &[KubeconfigRead, KubectlFullaccess],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        let d = decide(&eff, &KubeIntent::shell()).unwrap_err();
        assert!(d.lost_cluster);
        // Told what an unknown cluster's name gets: no owner, no link.
        assert_eq!(
            d.message,
            "you have no kubectl access to a cluster named prod"
        );
        assert!(!d.names_owner);
        let inactive = Effective {
            active: false,
            ..sally()
        };
        assert!(
            decide(&inactive, &ask("list", "pods", Some("apple")))
                .unwrap_err()
                .lost_cluster
        );
    }

    #[test]
    fn secrets_for_organization_administrators_only_when_the_organization_says_so() {
        let admin_of_project = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Project,
                Some("production"),
                &[],
                &[KubeconfigRead, KubectlFullaccess],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        let rules = KubeRules {
            secrets_org_admins_only: true,
        };
        let secrets = ask("get", "secrets", Some("apple"));
        assert!(decide_kube(
            &admin_of_project,
            "p@x",
            &cluster(),
            &secrets,
            KubeRules::default()
        )
        .is_ok());
        assert!(
            decide_kube(&admin_of_project, "p@x", &cluster(), &secrets, rules)
                .unwrap_err()
                .message
                .starts_with("only organization administrators")
        );
        let org_admin = Effective {
            active: true,
            bindings: vec![binding(
                Scope::Organization,
                None,
                &[],
                &[KubeconfigRead, KubectlFullaccess],
            )],
            all_projects: vec![],
            expired: vec![],
            valid_until: i64::MAX,
        };
        assert!(decide_kube(&org_admin, "a@x", &cluster(), &secrets, rules).is_ok());
    }
}
