//! The resource types kubesim serves: one static table that drives discovery, OpenAPI,
//! routing, validation and table printing.

/// How names of a kind are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// A path segment (RBAC objects).
    PathSegment,
}

/// A subresource served under a resource.
#[derive(Debug)]
pub struct SubDef {
    pub name: &'static str,
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub verbs: &'static [&'static str],
}

/// One resource type.
#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [SubDef],
    /// False for virtual create-only kinds (reviews): nothing is stored.
    pub stored: bool,
    pub name_rule: NameRule,
    /// Updates of the main resource keep the stored status (status subresource).
    pub has_status: bool,
    /// metadata.generation is maintained.
    pub generation: bool,
}

const STD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const CREATE_ONLY: &[&str] = &["create"];
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];

const fn sub(name: &'static str, kind: &'static str, verbs: &'static [&'static str]) -> SubDef {
    SubDef {
        name,
        kind,
        group: "",
        version: "",
        verbs,
    }
}

pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        verbs: NS_VERBS,
        subresources: &[
            sub("finalize", "Namespace", &["update"]),
            sub("status", "Namespace", GET_PATCH_UPDATE),
        ],
        stored: true,
        name_rule: NameRule::Label,
        has_status: true,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        verbs: STD,
        subresources: &[
            sub("attach", "PodAttachOptions", &["create", "get"]),
            sub("exec", "PodExecOptions", &["create", "get"]),
            sub("log", "Pod", &["get"]),
            sub("status", "Pod", GET_PATCH_UPDATE),
        ],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        verbs: STD,
        subresources: &[sub("status", "Service", GET_PATCH_UPDATE)],
        stored: true,
        name_rule: NameRule::Dns1035,
        has_status: true,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        verbs: STD,
        subresources: &[SubDef {
            name: "token",
            kind: "TokenRequest",
            group: "authentication.k8s.io",
            version: "v1",
            verbs: &["create"],
        }],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        verbs: STD,
        subresources: &[sub("status", "Node", GET_PATCH_UPDATE)],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: false,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        verbs: STD,
        subresources: &[
            SubDef {
                name: "scale",
                kind: "Scale",
                group: "autoscaling",
                version: "v1",
                verbs: GET_PATCH_UPDATE,
            },
            sub("status", "Deployment", GET_PATCH_UPDATE),
        ],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: true,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        categories: &["all"],
        verbs: STD,
        subresources: &[
            SubDef {
                name: "scale",
                kind: "Scale",
                group: "autoscaling",
                version: "v1",
                verbs: GET_PATCH_UPDATE,
            },
            sub("status", "StatefulSet", GET_PATCH_UPDATE),
        ],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: true,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::PathSegment,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::PathSegment,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::PathSegment,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::PathSegment,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: &[],
        stored: false,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: &[],
        stored: false,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: &[],
        stored: false,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: &[],
        stored: false,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: &[],
        stored: false,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: &[],
        stored: false,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    // Stored as given; `crate::admission` enforces Warden's guard policy natively (no CEL).
    ResourceDef {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingadmissionpolicies",
        singular: "validatingadmissionpolicy",
        kind: "ValidatingAdmissionPolicy",
        namespaced: false,
        short_names: &[],
        categories: &["api-extensions"],
        verbs: STD,
        subresources: &[sub("status", "ValidatingAdmissionPolicy", GET_PATCH_UPDATE)],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: true,
    },
    ResourceDef {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingadmissionpolicybindings",
        singular: "validatingadmissionpolicybinding",
        kind: "ValidatingAdmissionPolicyBinding",
        namespaced: false,
        short_names: &[],
        categories: &["api-extensions"],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: true,
    },
    ResourceDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        short_names: &["ing"],
        categories: &[],
        verbs: STD,
        subresources: &[sub("status", "Ingress", GET_PATCH_UPDATE)],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: true,
    },
    ResourceDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: true,
    },
    ResourceDef {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        verbs: STD,
        subresources: &[sub("status", "PodDisruptionBudget", GET_PATCH_UPDATE)],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: true,
        generation: true,
    },
    // Storage: a cluster-scoped kind and a namespaced one outside the kinds every
    // Kubernetes client knows by heart (what is namespaced is learnt from discovery).
    ResourceDef {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        singular: "storageclass",
        kind: "StorageClass",
        namespaced: false,
        short_names: &["sc"],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
    ResourceDef {
        group: "storage.k8s.io",
        version: "v1",
        plural: "csistoragecapacities",
        singular: "csistoragecapacity",
        kind: "CSIStorageCapacity",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: STD,
        subresources: &[],
        stored: true,
        name_rule: NameRule::Subdomain,
        has_status: false,
        generation: false,
    },
];

/// API groups in discovery order (the core group first, served under `/api`).
pub const GROUPS: &[&str] = &[
    "",
    "apps",
    "rbac.authorization.k8s.io",
    "authorization.k8s.io",
    "authentication.k8s.io",
    "admissionregistration.k8s.io",
    "networking.k8s.io",
    "policy",
    "storage.k8s.io",
];

impl ResourceDef {
    /// `pods`, `deployments.apps`: the form used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod`, `Deployment.apps`: the form used in Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `v1`, `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection path for a namespace (or the cluster).
    pub fn collection_path(&self, ns: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match ns {
            Some(ns) if self.namespaced => format!("{prefix}/namespaces/{ns}/{}", self.plural),
            _ => format!("{prefix}/{}", self.plural),
        }
    }

    pub fn subresource(&'static self, name: &str) -> Option<&'static SubDef> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// The resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource for an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// A resource by a user-friendly name: `pods`, `pod`, `po`, `deployments.apps`, `Deployment`.
pub fn by_name(name: &str) -> Option<&'static ResourceDef> {
    let (base, group) = match name.split_once('.') {
        Some((b, g)) => (b, Some(g)),
        None => (name, None),
    };
    RESOURCES.iter().find(|r| {
        group.is_none_or(|g| g == r.group)
            && (r.plural == base
                || r.singular == base
                || r.kind.eq_ignore_ascii_case(base)
                || r.short_names.contains(&base))
    })
}

/// Whether a group/version is served.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for g in GROUPS {
        for r in RESOURCES.iter().filter(|r| r.group == *g) {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
    }
    out
}

/// `("apps", "v1")` from `apps/v1`, `("", "v1")` from `v1`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

static TOKEN_REQUEST: ResourceDef = ResourceDef {
    group: "authentication.k8s.io",
    version: "v1",
    plural: "tokenrequests",
    singular: "tokenrequest",
    kind: "TokenRequest",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: &["create"],
    subresources: &[],
    stored: false,
    name_rule: NameRule::Subdomain,
    has_status: false,
    generation: false,
};

impl ResourceDef {
    /// The TokenRequest kind (served only as serviceaccounts/token), for error messages.
    pub fn token_request() -> &'static ResourceDef {
        &TOKEN_REQUEST
    }
}
