//! What Warden and its agent agree on: the connect endpoint and its headers, the control
//! messages that travel beside the multiplexed streams, the keys of the agent's Secret, and
//! the manifest that installs the agent. Plain data: compiled into the server, the console
//! and the `warden-agent` binary alike.
//!
//! The tunnel: the agent first asks `POST /agent/v1/challenge` (with the same `Authorization`)
//! for a one-time nonce, then dials `GET /agent/v1/connect` (WebSocket) with
//! `Authorization: Bearer <bootstrap token | agent credential>`,
//! `X-Warden-Fingerprint: <UID of kube-system>` (a label that keeps one manifest from
//! registering two clusters, not a secret), `X-Warden-Agent-Key` (its Ed25519 public key),
//! `X-Warden-Nonce` and `X-Warden-Proof` (its signature over [`proof_message`]). A refusal is an
//! ordinary HTTP error with the REST error envelope. Once upgraded, binary messages carry a yamux session (Warden opens
//! one stream per Kubernetes API request; the agent proxies it to its API server) and text
//! messages carry the JSON control messages below.

use serde::{Deserialize, Serialize};

use crate::dto::{ClusterFacts, ProxySettings};

/// The WebSocket endpoint agents dial, relative to `WARDEN_PUBLIC_URL`.
pub const CONNECT_PATH: &str = "/agent/v1/connect";
/// One-time manifest downloads: `GET {MANIFEST_PATH}/{token}`.
pub const MANIFEST_PATH: &str = "/agent/v1/manifests";

pub const HEADER_FINGERPRINT: &str = "x-warden-fingerprint";
pub const HEADER_CLUSTER: &str = "x-warden-cluster";
pub const HEADER_AGENT_VERSION: &str = "x-warden-agent-version";
/// The agent's Ed25519 public key (32 bytes, base64url without padding).
pub const HEADER_AGENT_KEY: &str = "x-warden-agent-key";
/// The nonce from `POST /agent/v1/challenge`.
pub const HEADER_NONCE: &str = "x-warden-nonce";
/// The agent's Ed25519 signature over [`proof_message`] (base64url without padding).
pub const HEADER_PROOF: &str = "x-warden-proof";
/// On a tunnelled request: "run this with the agent's own identity" (Warden's management
/// calls). Without it, a request must carry a user's bearer token or the agent refuses it. The
/// gateway strips every `x-warden-*` header a client sends, so only Warden can set it.
pub const HEADER_MANAGEMENT: &str = "x-warden-management";
pub const MANAGEMENT_VALUE: &str = "agent";

/// One-time challenges: `POST {CHALLENGE_PATH}` with the agent's bearer secret answers
/// [`Challenge`].
pub const CHALLENGE_PATH: &str = "/agent/v1/challenge";
/// What a proof is for: part of every signed message, so a signature made for anything else
/// (another protocol, another version) never passes.
pub const PROOF_CONTEXT: &str = "warden-agent-connect-v1";
/// How long a challenge nonce may be used.
pub const CHALLENGE_TTL_SECS: u64 = 60;

/// The answer to `POST /agent/v1/challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, base64url; usable once, for [`CHALLENGE_TTL_SECS`].
    pub nonce: String,
    /// The cluster the presented secret belongs to (its id, not its name).
    pub cluster_id: String,
    /// [`PROOF_CONTEXT`].
    pub context: String,
}

/// The bytes an agent signs to prove it holds its key: context, nonce and cluster id, each
/// length-prefixed so no two different triples give the same message.
pub fn proof_message(context: &str, nonce: &str, cluster_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + context.len() + nonce.len() + cluster_id.len());
    for part in [context, nonce, cluster_id] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    m
}

/// Bounds on what an agent sends Warden.
pub mod limits {
    /// Largest control (text) message, a heartbeat with its facts included.
    pub const MAX_CONTROL_MESSAGE: usize = 256 * 1024;
    /// Control messages allowed per heartbeat interval (a heartbeat, the first facts at once,
    /// a draining notice, slack for jitter); more closes the tunnel as a flood.
    pub const MAX_CONTROL_MESSAGES_PER_INTERVAL: u32 = 8;
    pub const MAX_NODES: usize = 500;
    pub const MAX_NAMESPACES: usize = 1000;
    /// Versions (`v1.32.0`, kubelet and agent versions).
    pub const MAX_VERSION_LEN: usize = 64;
    /// A node name is a DNS subdomain (253), a namespace a DNS label (63).
    pub const MAX_NODE_NAME: usize = 253;
    pub const MAX_NAMESPACE_NAME: usize = 63;
    /// Largest response body Warden reads for one of its own management calls.
    pub const MAX_MANAGEMENT_RESPONSE: usize = 16 * 1024 * 1024;
}

/// Prefix of bootstrap tokens (one-time, in manifests).
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "wdb_";
/// Prefix of agent credentials (long-lived, issued at registration).
pub const CREDENTIAL_PREFIX: &str = "wdc_";

/// Refusal codes in the error envelope of a refused connection. An agent treats every one of
/// them as final: retrying cannot succeed.
pub mod refusal {
    pub const UNKNOWN_TOKEN: &str = "unknown_token";
    pub const TOKEN_USED: &str = "token_used";
    pub const TOKEN_EXPIRED: &str = "token_expired";
    pub const FINGERPRINT_MISMATCH: &str = "fingerprint_mismatch";
    pub const CREDENTIAL_REVOKED: &str = "credential_revoked";
    pub const CLUSTER_DELETED: &str = "cluster_deleted";
    pub const BAD_REQUEST: &str = "bad_request";
    /// No valid proof of the agent's key (no challenge, a bad signature, no key header).
    pub const PROOF_REQUIRED: &str = "proof_required";
    /// The key presented is not the one registered for the cluster (or another key holds its
    /// live tunnel).
    pub const KEY_MISMATCH: &str = "key_mismatch";
    /// The cluster was registered before agents had keys: it must be registered again with a
    /// new manifest.
    pub const KEY_REQUIRED: &str = "key_required";
    /// The challenge nonce is unknown, used or expired (HTTP 409: the agent asks again).
    pub const CHALLENGE_EXPIRED: &str = "challenge_expired";
}

/// Whether `s` is a DNS-1123 label (namespace names): lowercase alphanumerics and `-`, not
/// starting or ending with `-`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain (node names): dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Whether `s` is a plausible version string: printable ASCII without spaces, bounded.
pub fn is_version(s: &str) -> bool {
    !s.is_empty() && s.len() <= limits::MAX_VERSION_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Check the facts an agent reports: sizes and shapes. `Err` says what is wrong; Warden
/// then keeps the previous facts.
pub fn validate_facts(f: &ClusterFacts) -> Result<(), String> {
    if f.nodes.len() > limits::MAX_NODES {
        return Err(format!(
            "{} nodes listed (at most {})",
            f.nodes.len(),
            limits::MAX_NODES
        ));
    }
    if f.namespaces.len() > limits::MAX_NAMESPACES {
        return Err(format!(
            "{} namespaces listed (at most {})",
            f.namespaces.len(),
            limits::MAX_NAMESPACES
        ));
    }
    for v in [&f.kubernetes_version, &f.agent_version]
        .into_iter()
        .flatten()
    {
        if !is_version(v) {
            return Err("a version is not a short printable string".into());
        }
    }
    for n in &f.nodes {
        if !is_dns_subdomain(&n.name) {
            return Err("a node name is not a DNS subdomain".into());
        }
        if n.kubelet_version.as_deref().is_some_and(|v| !is_version(v)) {
            return Err("a kubelet version is not a short printable string".into());
        }
    }
    if !f.namespaces.iter().all(|n| is_dns_label(n)) {
        return Err("a namespace name is not a DNS label".into());
    }
    Ok(())
}

/// Warden -> agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message after the upgrade. `credential` is set when the agent proved a bootstrap
    /// token: it must keep it and use it from now on.
    Welcome {
        cluster: String,
        credential: Option<String>,
        heartbeat_interval_ms: u64,
    },
    /// Warden closes the tunnel for good (the cluster was deleted, the credential revoked).
    /// The agent stops and tells how to remove it.
    Revoked { code: String, message: String },
    /// Warden closes the tunnel for a passing reason (shutting down, replaced by a newer
    /// connection, missed heartbeats); the agent reconnects.
    Closing { reason: String },
}

/// Agent -> Warden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Sent every heartbeat interval whatever the API server does; `facts` when the agent has
    /// read new ones (it reads them in the background, so a slow API server does not delay
    /// heartbeats).
    Heartbeat {
        #[serde(default)]
        facts: Option<ClusterFacts>,
    },
    /// The agent is shutting down: no new streams, it finishes the open ones.
    Draining,
}

/// Names of the objects the manifest creates.
pub const NAMESPACE: &str = "warden-system";
pub const SERVICE_ACCOUNT: &str = "warden-agent";
pub const SECRET: &str = "warden-agent";
pub const DEPLOYMENT: &str = "warden-agent";
pub const CLUSTER_ROLE: &str = "warden-agent";
/// The ValidatingAdmissionPolicy (and its binding) that keeps `warden-system` to the agent.
pub const GUARD_POLICY: &str = "warden-system-guard";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "warden";

/// Keys of the agent's Secret.
pub mod secret_keys {
    pub const WARDEN_URL: &str = "WARDEN_URL";
    pub const CLUSTER: &str = "WARDEN_CLUSTER";
    pub const BOOTSTRAP_TOKEN: &str = "WARDEN_BOOTSTRAP_TOKEN";
    /// PEM: the CA that signs Warden's certificate (https only).
    pub const WARDEN_CA: &str = "WARDEN_CA";
    pub const HTTP_PROXY: &str = "HTTP_PROXY";
    pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
    pub const NO_PROXY: &str = "NO_PROXY";
    pub const PROXY_CA: &str = "PROXY_CA";
    /// Written by the agent after registration.
    pub const CREDENTIAL: &str = "WARDEN_AGENT_CREDENTIAL";
    /// Written by the agent at its first start: the 32-byte seed of its Ed25519 key
    /// (base64url). It never leaves the cluster; Warden keeps only the public key.
    pub const AGENT_KEY: &str = "WARDEN_AGENT_KEY";
    /// `true` when Warden's URL is plain `http://` to a host other than this machine: the
    /// agent refuses such a URL unless told so (its secrets would travel in the clear).
    pub const ALLOW_INSECURE_HTTP: &str = "WARDEN_ALLOW_INSECURE_HTTP";
}

/// The command that removes everything the manifest created.
pub const CLEANUP_COMMAND: &str = "kubectl delete validatingadmissionpolicybinding,validatingadmissionpolicy -l app.kubernetes.io/managed-by=warden && kubectl delete namespace warden-system --ignore-not-found && kubectl delete clusterrole,clusterrolebinding -l app.kubernetes.io/managed-by=warden";

/// What goes into one manifest.
#[derive(Debug, Clone)]
pub struct ManifestParams<'a> {
    pub cluster: &'a str,
    pub project: &'a str,
    pub warden_url: &'a str,
    pub bootstrap_token: &'a str,
    pub bootstrap_expires_at: &'a str,
    pub warden_ca_pem: Option<&'a str>,
    pub image: &'a str,
    pub proxy: &'a ProxySettings,
    /// The operator allowed agents to dial a plain `http://` Warden on another host
    /// (`WARDEN_AGENT_ALLOW_INSECURE_HTTP`); without it such an agent refuses to start.
    pub allow_insecure_http: bool,
}

/// Headers that belong to one HTTP/1.1 connection, not to the request: neither end of the
/// tunnel forwards them (an upgrade keeps `Connection` and `Upgrade` itself).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// A Kubernetes `Status` failure body, which kubectl and client-go print the message of.
pub fn kube_status(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code,
    })
}

/// Whether `url` is `http://` to a host other than the loopback interface.
pub fn is_insecure_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    !(host == "localhost" || host == "::1" || host.starts_with("127."))
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The agent manifest: Namespace, ServiceAccount, the least RBAC it needs (each rule says why),
/// the Secret with its bootstrap settings, and the Deployment. Every object carries
/// `app.kubernetes.io/managed-by=warden`.
pub fn render_manifest(p: &ManifestParams<'_>) -> String {
    use secret_keys as k;
    let labels = format!(
        "  labels:\n    {MANAGED_BY_LABEL}: {MANAGED_BY_VALUE}\n    app.kubernetes.io/name: warden-agent\n    warden.dev/cluster: {}\n",
        q(p.cluster)
    );
    let mut data: Vec<(&str, String)> = vec![
        (k::WARDEN_URL, p.warden_url.to_owned()),
        (k::CLUSTER, p.cluster.to_owned()),
        (k::BOOTSTRAP_TOKEN, p.bootstrap_token.to_owned()),
    ];
    let insecure = is_insecure_remote(p.warden_url);
    if insecure && p.allow_insecure_http {
        data.push((k::ALLOW_INSECURE_HTTP, "true".to_owned()));
    }
    if let Some(ca) = p.warden_ca_pem.filter(|c| !c.trim().is_empty()) {
        data.push((k::WARDEN_CA, ca.to_owned()));
    }
    let proxy = p.proxy;
    for (key, v) in [
        (k::HTTP_PROXY, &proxy.http_proxy),
        (k::HTTPS_PROXY, &proxy.https_proxy),
        (k::NO_PROXY, &proxy.no_proxy),
        (k::PROXY_CA, &proxy.ca_pem),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.trim().is_empty()) {
            data.push((key, v.clone()));
        }
    }
    let string_data: String = data
        .iter()
        .map(|(key, v)| format!("  {key}: {}\n", q(v)))
        .collect();
    let warning = match (insecure, p.allow_insecure_http) {
        (true, true) => "# WARNING: Warden's URL is plain http:// to another host, so the bootstrap token and the\n# agent's credential cross the network in the clear. Serve Warden over https://.\n",
        (true, false) => "# WARNING: Warden's URL is plain http:// to another host. The agent refuses to send its\n# secrets in the clear and will not start: serve Warden over https:// (WARDEN_PUBLIC_URL).\n",
        _ => "",
    };
    format!(
        r#"# The Warden agent for cluster {cluster} (project {project}).
{warning}#
# Install:   kubectl apply -f <this file>
# The agent dials out to {url} (no inbound port is opened on the cluster). At its first start
# it generates a key pair and keeps the private key in the Secret below (it never leaves the
# cluster); it registers the public key with the one-time bootstrap token below (bound to this
# cluster's kube-system UID, so this file cannot register a second cluster), and from then on
# proves that key, with the credential Warden gives it, on every connection. The bootstrap
# token is accepted until {expires} and only once.
# Remove:    {cleanup}
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
{labels}---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {sa}
  namespace: {ns}
{labels}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {cr}
{labels}rules:
  # Read the kube-system namespace's UID (this cluster's fingerprint, bound at registration),
  # report the namespace names with each heartbeat, and check that warden-system exists.
  - apiGroups: [""]
    resources: ["namespaces"]
    verbs: ["get", "list"]
  # Report the number, names and readiness of nodes with each heartbeat.
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["list"]
  # Warden gives each user their own service account whose rights follow the user's grants
  # (kubectl.* permissions) through Warden's ClusterRoles (warden-full-access,
  # warden-cluster-write, warden-cluster-read, warden-namespace-write, warden-namespace-read).
  # It keeps those five roles up to date; "escalate" and "bind" are limited to them by name.
  # Whoever may change Warden's roles can grant cluster-wide access: this is the one powerful
  # right the agent holds, because Warden grants kubectl.fullaccess.
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["clusterroles"]
    verbs: ["create"]
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["clusterroles"]
    resourceNames: ["warden-full-access", "warden-cluster-write", "warden-cluster-read", "warden-namespace-write", "warden-namespace-read"]
    verbs: ["get", "patch", "update", "escalate", "bind"]
  # Bind users' service accounts to those roles, cluster-wide or in granted namespaces, and
  # remove bindings that no longer match a user's grants.
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["clusterrolebindings", "rolebindings"]
    verbs: ["get", "list", "create", "patch", "update", "delete"]
  # Report whether the admission guard below is in force (read only, by name).
  - apiGroups: ["admissionregistration.k8s.io"]
    resources: ["validatingadmissionpolicies", "validatingadmissionpolicybindings"]
    resourceNames: ["{guard_name}"]
    verbs: ["get"]
  # The version (GET /version) and discovery need no rule: every authenticated client may
  # read them.
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {cr}
{labels}roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {cr}
subjects:
  - kind: ServiceAccount
    name: {sa}
    namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {sa}
  namespace: {ns}
{labels}rules:
  # Its own Secret (bootstrap settings; the agent's private key and credential are written back
  # into it) and the anchor Secrets that users' service-account tokens are bound to; all in
  # warden-system only.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "create", "patch", "delete"]
  # The users' service accounts, kept in warden-system, created and removed as users gain
  # and lose access.
  - apiGroups: [""]
    resources: ["serviceaccounts"]
    verbs: ["get", "list", "create", "patch", "delete"]
  # Short-lived tokens for those service accounts (TokenRequest, bound to each user's anchor
  # Secret). A user's request is sent with the user's token only, so the cluster's RBAC decides
  # what it may do; the agent cannot impersonate anyone.
  - apiGroups: [""]
    resources: ["serviceaccounts/token"]
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {sa}
  namespace: {ns}
{labels}roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {sa}
subjects:
  - kind: ServiceAccount
    name: {sa}
    namespace: {ns}
---
# Bootstrap settings. The agent adds {cred_key} here after registering.
apiVersion: v1
kind: Secret
metadata:
  name: {secret}
  namespace: {ns}
{labels}type: Opaque
stringData:
{string_data}---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {deploy}
  namespace: {ns}
{labels}spec:
  replicas: 1
  # One agent per cluster: a new one starts after the old one has drained.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/name: warden-agent
  template:
    metadata:
      labels:
        {MANAGED_BY_LABEL}: {MANAGED_BY_VALUE}
        app.kubernetes.io/name: warden-agent
    spec:
      serviceAccountName: {sa}
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: agent
          image: {image}
          args: ["--in-cluster"]
          env:
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: WARDEN_AGENT_SECRET
              value: {secret}
          resources:
            requests:
              cpu: 10m
              memory: 32Mi
            limits:
              memory: 256Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
---
{guard}"#,
        guard = guard_policy(&labels),
        guard_name = GUARD_POLICY,
        cluster = p.cluster,
        project = p.project,
        url = p.warden_url,
        expires = p.bootstrap_expires_at,
        cleanup = CLEANUP_COMMAND,
        ns = NAMESPACE,
        sa = SERVICE_ACCOUNT,
        cr = CLUSTER_ROLE,
        secret = SECRET,
        deploy = DEPLOYMENT,
        cred_key = k::CREDENTIAL,
        image = q(p.image),
    )
}

/// The ValidatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1, GA in
/// Kubernetes 1.30) that keep `warden-system`, Warden's ClusterRoles and the bindings of
/// Warden's service accounts to the agent. They deny, to everyone but the agent and whoever may
/// `escalate` every ClusterRole (cluster-admin intent: such a user can grant themselves
/// anything anyway):
/// every write in `warden-system` (pods, Secrets, service accounts and their tokens, roles and
/// bindings, the Deployment, exec and attach) and to the Namespace itself; any binding, in any
/// namespace, that names or named a subject of `warden-system`; any write to a `warden-*`
/// ClusterRole; any binding to a `warden-*` ClusterRole (a service account of one's own bound
/// to `warden-cluster-write` would keep a cluster writer's rights after Warden revoked them);
/// any long-lived token Secret (`kubernetes.io/service-account-token`: a credential for a
/// service account that no Warden revocation reaches); any role or binding written with a Warden
/// user's service account (below cluster-admin intent: a copy of `warden-cluster-write` bound
/// to a service account of one's own would do what the `warden-*` rule stops); any Service with
/// `externalIPs` written with a Warden user's service account (CVE-2020-8554: it intercepts the
/// traffic of those addresses, on clusters without the `DenyServiceExternalIPs` plugin); any pod
/// or pod template written with a Warden user's service account that Pod Security's `baseline`
/// would refuse (host namespaces, `hostPath`, privileged containers, added capabilities, host
/// ports, unconfined profiles: each a way onto the node, and from the node to the agent's
/// token, where the cluster enforces no Pod Security). Admission never sees reads (RBAC keeps Secrets of `warden-system` from users),
/// and Kubernetes never applies admission policies to policy objects themselves.
/// kubesim enforces the same rules natively (`kubesim/src/admission.rs`).
pub fn guard_policy(labels: &str) -> String {
    format!(
        r#"# Keeps warden-system to the agent: see the README ("The manifest"). Needs Kubernetes 1.30.
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
{labels}spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      # Every write in every namespace: warden-system itself, and role bindings elsewhere.
      - apiGroups: ["*"]
        apiVersions: ["*"]
        operations: ["CREATE", "UPDATE", "DELETE", "CONNECT"]
        # Every resource and every subresource: the API server allows "*/*" only alone.
        resources: ["*/*"]
        scope: "Namespaced"
      # The namespace object (labels such as Pod Security, deletion).
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["UPDATE", "DELETE"]
        resources: ["namespaces", "namespaces/status", "namespaces/finalize"]
        resourceNames: ["{ns}"]
      # Warden's ClusterRoles and cluster-wide bindings.
      - apiGroups: ["rbac.authorization.k8s.io"]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE", "DELETE"]
        resources: ["clusterroles", "clusterrolebindings"]
  matchConditions:
    - name: not-the-agent
      expression: "request.userInfo.username != 'system:serviceaccount:{ns}:{sa}'"
    - name: not-cluster-admin
      expression: "!authorizer.group('rbac.authorization.k8s.io').resource('clusterroles').check('escalate').allowed()"
  variables:
    - name: isBinding
      expression: >-
        request.resource.group == 'rbac.authorization.k8s.io' &&
        request.resource.resource in ['rolebindings', 'clusterrolebindings']
    - name: isWardenUser
      expression: "request.userInfo.username.startsWith('system:serviceaccount:{ns}:')"
    # The pod specs a write carries (a pod's, a workload's template), none when unchanged by
    # an update (scaling an administrator's workload is no new pod).
    - name: newPodSpecs
      expression: >-
        {new_specs}
    - name: oldPodSpecs
      expression: >-
        {old_specs}
    - name: podSpecs
      expression: "variables.newPodSpecs == variables.oldPodSpecs ? [] : variables.newPodSpecs"
    - name: containers
      expression: >-
        variables.podSpecs.size() == 0 ? [] :
        (has(variables.podSpecs[0].containers) ? variables.podSpecs[0].containers : []) +
        (has(variables.podSpecs[0].initContainers) ? variables.podSpecs[0].initContainers : []) +
        (has(variables.podSpecs[0].ephemeralContainers) ? variables.podSpecs[0].ephemeralContainers : [])
  validations:
    - expression: >-
        request.namespace != '{ns}' &&
        !(request.resource.group == '' && request.resource.resource == 'namespaces' && request.name == '{ns}')
      reason: Forbidden
      message: "namespace {ns} belongs to the Warden agent: no one else may write there"
    - expression: >-
        !variables.isBinding ||
        !((object != null && has(object.subjects) && object.subjects.exists(s,
            (s.kind == 'ServiceAccount' && has(s.namespace) && s.namespace == '{ns}') ||
            (s.kind == 'User' && s.name.startsWith('system:serviceaccount:{ns}:')) ||
            (s.kind == 'Group' && s.name in ['system:authenticated', 'system:serviceaccounts', 'system:serviceaccounts:{ns}']))) ||
          (oldObject != null && has(oldObject.subjects) && oldObject.subjects.exists(s,
            (s.kind == 'ServiceAccount' && has(s.namespace) && s.namespace == '{ns}') ||
            (s.kind == 'User' && s.name.startsWith('system:serviceaccount:{ns}:')) ||
            (s.kind == 'Group' && s.name in ['system:authenticated', 'system:serviceaccounts', 'system:serviceaccounts:{ns}']))))
      reason: Forbidden
      message: "the service accounts of {ns} are bound by the Warden agent only"
    - expression: >-
        !(request.resource.group == 'rbac.authorization.k8s.io' &&
          request.resource.resource == 'clusterroles' && request.name.startsWith('warden-'))
      reason: Forbidden
      message: "Warden's ClusterRoles (warden-*) are kept by the Warden agent only"
    - expression: >-
        !variables.isBinding || object == null ||
        !(object.roleRef.kind == 'ClusterRole' && object.roleRef.name.startsWith('warden-'))
      reason: Forbidden
      message: "Warden's ClusterRoles (warden-*) are bound by the Warden agent only"
    - expression: >-
        !(request.resource.group == '' && request.resource.resource == 'secrets' &&
          object != null && has(object.type) && object.type == 'kubernetes.io/service-account-token')
      reason: Forbidden
      message: "long-lived service account tokens are made by cluster administrators only: one would outlive every Warden grant"
    - expression: >-
        !(request.resource.group == 'rbac.authorization.k8s.io' &&
          request.userInfo.username.startsWith('system:serviceaccount:{ns}:'))
      reason: Forbidden
      message: "roles and bindings are made by the Warden agent, not with a Warden user's grant: one made by hand would outlive the grant"
    - expression: >-
        !(request.resource.group == '' && request.resource.resource == 'services' &&
          request.userInfo.username.startsWith('system:serviceaccount:{ns}:') &&
          object != null && has(object.spec) && has(object.spec.externalIPs) &&
          size(object.spec.externalIPs) > 0)
      reason: Forbidden
      message: "a Service's externalIPs take the traffic of those addresses, other teams' included (CVE-2020-8554): set by cluster administrators only"
    - expression: >-
        !variables.isWardenUser || variables.podSpecs.all(s,
          !(has(s.hostNetwork) && s.hostNetwork) && !(has(s.hostPID) && s.hostPID) &&
          !(has(s.hostIPC) && s.hostIPC) &&
          !(has(s.volumes) && s.volumes.exists(v, has(v.hostPath))) &&
          !(has(s.securityContext) && has(s.securityContext.sysctls) &&
            s.securityContext.sysctls.exists(x, !(x.name in [{sysctls}]))) &&
          !(has(s.securityContext) && {pod_context}))
      reason: Forbidden
      message: "{pod_message}"
    - expression: >-
        !variables.isWardenUser || variables.containers.all(c,
          !(has(c.ports) && c.ports.exists(p, has(p.hostPort) && p.hostPort != 0)) &&
          !(has(c.securityContext) && (
            (has(c.securityContext.privileged) && c.securityContext.privileged) ||
            (has(c.securityContext.capabilities) && has(c.securityContext.capabilities.add) &&
              c.securityContext.capabilities.add.exists(x, !(x in [{caps}]))) ||
            (has(c.securityContext.procMount) && c.securityContext.procMount != 'Default') ||
            {container_context})))
      reason: Forbidden
      message: "{pod_message}"
    - expression: >-
        !(variables.isWardenUser && request.resource.group == 'apps' &&
          request.resource.resource == 'controllerrevisions' && request.operation != 'DELETE')
      reason: Forbidden
      message: "{revision_message}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
{labels}spec:
  policyName: {name}
  validationActions: [Deny]
"#,
        name = GUARD_POLICY,
        ns = NAMESPACE,
        sa = SERVICE_ACCOUNT,
        new_specs = pod_specs_cel("object"),
        old_specs = pod_specs_cel("oldObject"),
        pod_context = unconfined_cel("s.securityContext"),
        container_context = unconfined_cel("c.securityContext"),
        caps = BASELINE_CAPABILITIES
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", "),
        pod_message = BASELINE_MESSAGE,
        sysctls = BASELINE_SYSCTLS
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", "),
        revision_message = REVISION_MESSAGE,
    )
}

/// The guard's refusal of a ControllerRevision written with a Warden user's grant: it holds a
/// pod template the guard never saw, which a StatefulSet or DaemonSet controller would run (a
/// status pointing at it, a pod deleted) under the controller's own name.
pub const REVISION_MESSAGE: &str = "controller revisions are written by the workload controllers: one written by hand holds a pod template the guard never saw, which a StatefulSet or DaemonSet would run";

/// The sysctls Pod Security's `baseline` allows (Kubernetes 1.32).
pub const BASELINE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The guard's refusal of a pod that Pod Security's `baseline` would refuse.
pub const BASELINE_MESSAGE: &str = "a Warden user's grant runs no pod that Pod Security's baseline refuses (host namespaces, hostPath volumes, privileged containers, added capabilities, host ports, unconfined profiles): each is a way onto the node, for cluster administrators only";

/// The capabilities Pod Security's `baseline` lets a container add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The SELinux types Pod Security's `baseline` allows.
pub const BASELINE_SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// CEL: the pod spec `root` (`object` or `oldObject`) carries, as a list of none or one: a
/// Pod's (any subresource whose object is a Pod: status, ephemeral containers), a
/// PodTemplate's, a workload's template's (Deployment, ReplicaSet, StatefulSet, DaemonSet,
/// Job, ReplicationController), a CronJob's job template's.
fn pod_specs_cel(root: &str) -> String {
    let path = |p: &str| {
        let mut cond = vec![format!("{root} != null")];
        let mut at = root.to_string();
        for part in p.split('.') {
            at = format!("{at}.{part}");
            cond.push(format!("has({at})"));
        }
        (cond.join(" && "), at)
    };
    let (pod, pod_at) = path("spec");
    let (tpl, tpl_at) = path("template.spec");
    let (wl, wl_at) = path("spec.template.spec");
    let (cj, cj_at) = path("spec.jobTemplate.spec.template.spec");
    format!(
        "(request.resource.group == '' && request.resource.resource == 'pods' && {pod}) ? [{pod_at}] :
                 (request.resource.group == '' && request.resource.resource == 'podtemplates' && {tpl}) ? [{tpl_at}] :
                 (((request.resource.group == 'apps' && request.resource.resource in ['deployments', 'replicasets', 'statefulsets', 'daemonsets']) ||
                   (request.resource.group == 'batch' && request.resource.resource == 'jobs') ||
                   (request.resource.group == '' && request.resource.resource == 'replicationcontrollers')) && {wl}) ? [{wl_at}] :
                 (request.resource.group == 'batch' && request.resource.resource == 'cronjobs' && {cj}) ? [{cj_at}] : []"
    )
}

/// CEL: the security context `ctx` asks what `baseline` refuses (unconfined seccomp or
/// AppArmor, a Windows host process, an SELinux user, role or type of its own).
fn unconfined_cel(ctx: &str) -> String {
    let types = BASELINE_SELINUX_TYPES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "((has({ctx}.seccompProfile) && has({ctx}.seccompProfile.type) && {ctx}.seccompProfile.type == 'Unconfined') ||
                       (has({ctx}.appArmorProfile) && has({ctx}.appArmorProfile.type) && {ctx}.appArmorProfile.type == 'Unconfined') ||
                       (has({ctx}.windowsOptions) && has({ctx}.windowsOptions.hostProcess) && {ctx}.windowsOptions.hostProcess) ||
                       (has({ctx}.seLinuxOptions) && ((has({ctx}.seLinuxOptions.user) && {ctx}.seLinuxOptions.user != '') ||
                         (has({ctx}.seLinuxOptions.role) && {ctx}.seLinuxOptions.role != '') ||
                         (has({ctx}.seLinuxOptions.type) && {ctx}.seLinuxOptions.type != '' && !({ctx}.seLinuxOptions.type in [{types}])))))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_quotes_values_and_labels_every_object() {
        let proxy = ProxySettings {
            https_proxy: Some("http://proxy:3128".into()),
            ..Default::default()
        };
        let m = render_manifest(&ManifestParams {
            cluster: "prod-1",
            project: "default",
            warden_url: "https://warden.example.com",
            bootstrap_token: "wdb_abc\"x",
            bootstrap_expires_at: "2026-01-01T00:00:00Z",
            warden_ca_pem: Some("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"),
            image: "warden-agent:0.1.0",
            proxy: &proxy,
            allow_insecure_http: false,
        });
        assert!(m.contains("WARDEN_BOOTSTRAP_TOKEN: \"wdb_abc\\\"x\""));
        assert!(m.contains("HTTPS_PROXY: \"http://proxy:3128\""));
        assert!(!m.contains("WARDEN_ALLOW_INSECURE_HTTP"));
        assert!(!m.contains("WARNING"));
        assert!(!m.contains("HTTP_PROXY:"));
        assert_eq!(m.matches("\nkind: ").count(), 10, "{m}");
        // Ten objects and the pod template.
        assert_eq!(
            m.matches("app.kubernetes.io/managed-by: warden").count(),
            11
        );
    }

    #[test]
    fn plain_http_to_another_host_is_flagged() {
        assert!(!is_insecure_remote("https://warden.example.com"));
        assert!(!is_insecure_remote("http://127.0.0.1:3000"));
        assert!(!is_insecure_remote("http://localhost:3000/x"));
        assert!(!is_insecure_remote("http://[::1]:3000"));
        assert!(is_insecure_remote("http://warden.internal:3000"));
        assert!(is_insecure_remote("http://10.0.0.5"));
        let proxy = ProxySettings::default();
        let m = render_manifest(&ManifestParams {
            cluster: "c",
            project: "p",
            warden_url: "http://warden.internal:3000",
            bootstrap_token: "wdb_x",
            bootstrap_expires_at: "2026-01-01T00:00:00Z",
            warden_ca_pem: None,
            image: "i",
            proxy: &proxy,
            allow_insecure_http: false,
        });
        // Fail closed: no opt-in unless the operator gave it.
        assert!(!m.contains("WARDEN_ALLOW_INSECURE_HTTP"));
        assert!(m.contains("will not start"));
        let m = render_manifest(&ManifestParams {
            cluster: "c",
            project: "p",
            warden_url: "http://warden.internal:3000",
            bootstrap_token: "wdb_x",
            bootstrap_expires_at: "2026-01-01T00:00:00Z",
            warden_ca_pem: None,
            image: "i",
            proxy: &proxy,
            allow_insecure_http: true,
        });
        assert!(m.contains("WARDEN_ALLOW_INSECURE_HTTP: \"true\""));
        assert!(m.contains("# WARNING: Warden's URL is plain http://"));
    }
}
