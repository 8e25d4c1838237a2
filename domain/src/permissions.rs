//! The fixed permission catalogue and the built-in roles. Names are stable: they appear in
//! the API, in custom roles stored in the database, and (for `kubectl.*`) turn into
//! Kubernetes RBAC on the clusters.

use serde::{Deserialize, Serialize};

/// Where a role (and so a binding) applies (stored as its `as_str`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Organization,
    Project,
    Namespace,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Organization, Scope::Project, Scope::Namespace];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Organization => "organization",
            Scope::Project => "project",
            Scope::Namespace => "namespace",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "organization" => Some(Scope::Organization),
            "project" => Some(Scope::Project),
            "namespace" => Some(Scope::Namespace),
            _ => None,
        }
    }

    /// A stored value read back (validated when written); anything unknown reads as the
    /// narrowest scope.
    pub fn from_stored(s: &str) -> Self {
        Self::parse(s).unwrap_or(Scope::Namespace)
    }

    /// In words, for people.
    pub const fn label(self) -> &'static str {
        match self {
            Scope::Organization => "Organization",
            Scope::Project => "Project",
            Scope::Namespace => "Namespace",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! permissions {
    ($( $variant:ident => $name:literal, $area:literal, $scope:ident, $desc:literal; )*) => {
        /// One permission of the catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Permission { $( #[serde(rename = $name)] $variant, )* }

        impl Permission {
            pub const ALL: &'static [Permission] = &[ $( Permission::$variant, )* ];
            pub fn name(self) -> &'static str { match self { $( Permission::$variant => $name, )* } }
            /// The area the console groups this permission under.
            pub fn area(self) -> &'static str { match self { $( Permission::$variant => $area, )* } }
            /// The narrowest scope a role needs to carry this permission.
            pub fn min_scope(self) -> Scope { match self { $( Permission::$variant => Scope::$scope, )* } }
            pub fn description(self) -> &'static str { match self { $( Permission::$variant => $desc, )* } }
            pub fn parse(s: &str) -> Option<Self> { match s { $( $name => Some(Permission::$variant), )* _ => None } }
        }
    };
}

// min_scope: Organization = only an organization-scoped role may carry it;
// Project = organization or project roles; Namespace = any role.
permissions! {
    ProjectRead => "project.read", "Projects", Namespace, "See the project and its members";
    ProjectWrite => "project.write", "Projects", Project, "Change the project, its members and their roles";
    ProjectCreate => "project.create", "Projects", Organization, "Create and delete projects";
    ClusterRead => "cluster.read", "Clusters", Namespace, "See clusters and their status";
    ClusterWrite => "cluster.write", "Clusters", Project, "Import, change and delete clusters";
    UserRead => "user.read", "Users", Organization, "See users";
    UserWrite => "user.write", "Users", Organization, "Create, change, deactivate and delete users";
    GroupRead => "group.read", "Groups", Organization, "See groups and members";
    GroupWrite => "group.write", "Groups", Organization, "Create, change and delete groups and members";
    RoleRead => "role.read", "Roles", Organization, "See roles";
    RoleWrite => "role.write", "Roles", Organization, "Create, change and delete custom roles";
    AuditRead => "audit.read", "Audit", Project, "Read the audit log";
    KubeconfigRead => "kubeconfig.read", "Kubeconfig", Namespace, "Download one's own kubeconfig";
    KubeconfigWrite => "kubeconfig.write", "Kubeconfig", Organization, "Revoke other users' kubeconfigs";
    SettingsRead => "settings.read", "Settings", Organization, "See organization settings";
    SettingsWrite => "settings.write", "Settings", Organization, "Change organization settings";
    IdpRead => "idp.read", "Identity providers", Organization, "See identity providers";
    IdpWrite => "idp.write", "Identity providers", Organization, "Change identity providers";
    KubectlFullaccess => "kubectl.fullaccess", "kubectl", Project, "Full access to the cluster";
    KubectlClusterWrite => "kubectl.cluster.write", "kubectl", Project, "Write everything in the cluster";
    KubectlClusterRead => "kubectl.cluster.read", "kubectl", Project, "Read everything in the cluster (no secrets, no exec)";
    KubectlNamespaceWrite => "kubectl.namespace.write", "kubectl", Namespace, "Write in the granted namespaces";
    KubectlNamespaceRead => "kubectl.namespace.read", "kubectl", Namespace, "Read in the granted namespaces (no secrets, no exec)";
}

impl Permission {
    pub fn is_kubectl(self) -> bool {
        self.name().starts_with("kubectl.")
    }
    /// Whether holding `self` includes what `other` allows (kubectl permissions nest:
    /// fullaccess > cluster.write > cluster.read > namespace.read, and
    /// cluster.write > namespace.write > namespace.read).
    pub fn implies(self, other: Permission) -> bool {
        use Permission::*;
        if self == other {
            return true;
        }
        match self {
            KubectlFullaccess => matches!(
                other,
                KubectlClusterWrite
                    | KubectlClusterRead
                    | KubectlNamespaceWrite
                    | KubectlNamespaceRead
            ),
            KubectlClusterWrite => matches!(
                other,
                KubectlClusterRead | KubectlNamespaceWrite | KubectlNamespaceRead
            ),
            KubectlClusterRead => matches!(other, KubectlNamespaceRead),
            KubectlNamespaceWrite => matches!(other, KubectlNamespaceRead),
            _ => false,
        }
    }

    /// Whether a role of `scope` may carry this permission.
    pub fn allowed_in(self, scope: Scope) -> bool {
        scope <= self.min_scope()
    }
}

/// A built-in role: name, scope, permissions. Immutable.
pub struct BuiltinRole {
    pub name: &'static str,
    pub scope: Scope,
    pub description: &'static str,
    pub permissions: &'static [Permission],
}

use Permission::*;

pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "ADMIN",
        scope: Scope::Organization,
        description: "Organization administrator: everything, on every project and cluster",
        permissions: &[
            ProjectRead, ProjectWrite, ProjectCreate, ClusterRead, ClusterWrite, UserRead, UserWrite,
            GroupRead, GroupWrite, RoleRead, RoleWrite, AuditRead, KubeconfigRead, KubeconfigWrite,
            SettingsRead, SettingsWrite, IdpRead, IdpWrite, KubectlFullaccess,
        ],
    },
    BuiltinRole {
        name: "ADMIN_READ_ONLY",
        scope: Scope::Organization,
        description: "Organization auditor: reads everything, changes nothing",
        permissions: &[
            ProjectRead, ClusterRead, UserRead, GroupRead, RoleRead, AuditRead, KubeconfigRead,
            SettingsRead, IdpRead, KubectlClusterRead,
        ],
    },
    BuiltinRole {
        name: "PROJECT_ADMIN",
        scope: Scope::Project,
        description: "Project administrator: the project, its members and clusters, full kubectl access",
        permissions: &[
            ProjectRead, ProjectWrite, ClusterRead, ClusterWrite, AuditRead, KubeconfigRead, KubectlFullaccess,
        ],
    },
    BuiltinRole {
        name: "PROJECT_READ_ONLY",
        scope: Scope::Project,
        description: "Project reader: sees the project and reads its clusters",
        permissions: &[ProjectRead, ClusterRead, AuditRead, KubeconfigRead, KubectlClusterRead],
    },
    BuiltinRole {
        name: "CLUSTER_ADMIN",
        scope: Scope::Project,
        description: "Cluster administrator: full kubectl access to the project's clusters; cannot import or delete them",
        permissions: &[ProjectRead, ClusterRead, AuditRead, KubeconfigRead, KubectlFullaccess],
    },
    BuiltinRole {
        name: "NAMESPACE_ADMIN",
        scope: Scope::Namespace,
        description: "Reads and writes in the granted namespaces",
        permissions: &[ProjectRead, ClusterRead, KubeconfigRead, KubectlNamespaceRead, KubectlNamespaceWrite],
    },
    BuiltinRole {
        name: "NAMESPACE_READ_ONLY",
        scope: Scope::Namespace,
        description: "Reads in the granted namespaces",
        permissions: &[ProjectRead, ClusterRead, KubeconfigRead, KubectlNamespaceRead],
    },
];

pub fn builtin_role(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Some(*p));
            assert!(seen.insert(p.name()));
        }
    }

    #[test]
    fn builtin_roles_respect_their_scope() {
        for r in BUILTIN_ROLES {
            for p in r.permissions {
                assert!(
                    p.allowed_in(r.scope),
                    "{} carries {} above its scope",
                    r.name,
                    p.name()
                );
            }
        }
    }
}

/// Why a project or organization role may not carry `kubectl.namespace.write`: held for a whole
/// project it would reach every namespace, and on a cluster that is a cluster-wide write
/// (the Namespace objects, RBAC, quotas, endpoints, nodes: everything the namespace role leaves
/// out on purpose). Write across a project's clusters is `kubectl.cluster.write`, which says so.
pub const NAMESPACE_WRITE_WIDE: &str = "kubectl.namespace.write is granted namespace by namespace (a namespace role); for write across whole clusters choose kubectl.cluster.write, which also writes cluster-wide objects";
