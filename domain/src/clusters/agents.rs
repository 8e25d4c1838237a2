//! The agent's side of a cluster: registration with a one-time bootstrap token, reconnection
//! with its long-lived credential, heartbeats, and the status they drive.
//!
//! Registration binds the cluster to a *fingerprint* (the UID of its `kube-system` namespace).
//! A token or credential presented with another fingerprint is refused: one manifest cannot
//! register two clusters. The fingerprint is a label, not a secret: what identifies the agent
//! is its Ed25519 key pair, generated in the cluster at its first start. Registration (with the
//! bootstrap token) records the public key; every connection proves possession of the private
//! key by signing a one-time challenge ([`crate::agent_protocol::proof_message`]). A credential
//! presented with another key is refused, and so is a registration from another key while the
//! cluster's tunnel is live. Every admission and refusal is audited (kind `agent`).

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use serde_json::json;

use crate::agent_protocol::{
    proof_message, refusal, BOOTSTRAP_TOKEN_PREFIX, CLEANUP_COMMAND, CREDENTIAL_PREFIX,
    PROOF_CONTEXT,
};
use crate::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestMeta, SessionType};
use crate::clock::Timestamp;
use crate::clusters::{AGENT_PURPOSES, HISTORY_KEEP, PURPOSE_AGENT};
use crate::dto::{cluster_status, ClusterFacts, GuardStatus};
use crate::entities::{
    cluster_agent_credentials, cluster_bootstrap_tokens, cluster_status_history, clusters, projects,
};
use crate::error::{DomainError, DomainResult};
use crate::ids::ClusterId;
use crate::secrets::{random_token, sha256_hex};
use crate::Services;
use std::collections::HashMap;

/// What an agent presents when it dials in.
#[derive(Debug, Clone)]
pub struct AgentHello {
    /// A bootstrap token (`wdb_…`) or an agent credential (`wdc_…`).
    pub secret: String,
    /// UID of the cluster's `kube-system` namespace.
    pub fingerprint: String,
    /// The cluster name the agent was configured with (informational).
    pub cluster: Option<String>,
    pub agent_version: Option<String>,
    pub meta: RequestMeta,
    /// The agent's Ed25519 public key (base64url, `X-Warden-Agent-Key`).
    pub key: Option<String>,
    /// Its signature over [`proof_message`] for `challenge` (base64url, `X-Warden-Proof`).
    pub proof: Option<String>,
    /// The challenge named by `X-Warden-Nonce`, taken (once) from the issuer's store; `None`
    /// when the agent sent no nonce.
    pub challenge: Option<ChallengeCheck>,
}

/// What the issuer of challenges knows about a nonce an agent presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeCheck {
    /// Issued for this cluster (by id), unused and fresh; now used up.
    Issued { nonce: String, cluster_id: String },
    /// Unknown, used or expired (e.g. issued by a Warden process that has restarted since).
    Stale,
}

/// At most this many challenges are outstanding (an agent asks one per connection attempt).
pub const MAX_OUTSTANDING_CHALLENGES: u64 = 10_000;
/// At most this many per cluster: asking for one more drops the cluster's oldest. An agent
/// answers its challenge within moments, so whoever holds a cluster's secret without its key
/// and asks for challenges over and over only ever displaces their own: the real agent still
/// gets one (a cap that refused instead would let them keep it out).
pub const MAX_OUTSTANDING_CHALLENGES_PER_CLUSTER: u64 = 16;

/// A one-time challenge for an agent of `cluster_id`, kept in the database (only its SHA-256)
/// so the agent may connect through any replica; `None` when too many are outstanding in all.
pub async fn issue_challenge(svc: &Services, cluster_id: &str) -> DomainResult<Option<String>> {
    use crate::entities::agent_challenges as ch;
    use sea_orm::{PaginatorTrait, QueryOrder, QuerySelect};
    let now = svc.clock.now();
    ch::Entity::delete_many()
        .filter(ch::Column::ExpiresAt.lte(now.millis()))
        .exec(&svc.db)
        .await?;
    if ch::Entity::find().count(&svc.db).await? >= MAX_OUTSTANDING_CHALLENGES {
        return Ok(None);
    }
    let nonce = random_token(32);
    let hash = sha256_hex(nonce.as_bytes());
    ch::ActiveModel {
        nonce_hash: Set(hash.clone()),
        cluster_id: Set(cluster_id.to_owned()),
        expires_at: Set(now
            .plus_secs(crate::agent_protocol::CHALLENGE_TTL_SECS as i64)
            .millis()),
    }
    .insert(&svc.db)
    .await?;
    // The cluster's oldest beyond its limit go. Run after every insert, the last of a burst
    // sees every row the others inserted, so no more than the limit stay.
    // (A handful of rows: the limit, and those of a burst.)
    let older: Vec<String> = ch::Entity::find()
        .select_only()
        .column(ch::Column::NonceHash)
        .filter(ch::Column::ClusterId.eq(cluster_id))
        .order_by_desc(ch::Column::ExpiresAt)
        .order_by_desc(ch::Column::NonceHash)
        .into_tuple::<String>()
        .all(&svc.db)
        .await?
        .into_iter()
        .skip(MAX_OUTSTANDING_CHALLENGES_PER_CLUSTER as usize)
        .collect();
    if !older.is_empty() {
        ch::Entity::delete_many()
            .filter(ch::Column::NonceHash.is_in(older))
            .exec(&svc.db)
            .await?;
    }
    // Counted again with ours in: of a burst that all counted before any inserted, those that
    // find the limit passed take theirs back, so it holds whatever the timing.
    if ch::Entity::find().count(&svc.db).await? > MAX_OUTSTANDING_CHALLENGES {
        ch::Entity::delete_by_id(hash).exec(&svc.db).await?;
        return Ok(None);
    }
    Ok(Some(nonce))
}

/// Use up a challenge: the cluster it was issued for, if it is known and fresh. Taking it is
/// deleting its row: of two replicas presented the same nonce, one deletes it and the other
/// finds nothing.
pub async fn take_challenge(svc: &Services, nonce: &str) -> DomainResult<ChallengeCheck> {
    use crate::entities::agent_challenges as ch;
    let hash = sha256_hex(nonce.as_bytes());
    let Some(row) = ch::Entity::find_by_id(hash.clone()).one(&svc.db).await? else {
        return Ok(ChallengeCheck::Stale);
    };
    let taken = ch::Entity::delete_by_id(hash).exec(&svc.db).await?;
    if taken.rows_affected != 1 || row.expires_at <= svc.clock.now().millis() {
        return Ok(ChallengeCheck::Stale);
    }
    Ok(ChallengeCheck::Issued {
        nonce: nonce.to_owned(),
        cluster_id: row.cluster_id,
    })
}

/// A short, stable name for a public key in audit rows and messages: the first 16 hex digits
/// of its SHA-256.
pub fn key_id(key_b64: &str) -> String {
    sha256_hex(key_b64.as_bytes())[..16].to_owned()
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim().trim_end_matches('='))
        .ok()
}

/// Whether `key_b64` is a well-formed Ed25519 public key (32 bytes, base64url).
fn valid_key(key_b64: &str) -> bool {
    key_b64.len() <= 64 && decode_b64(key_b64).is_some_and(|k| k.len() == 32)
}

/// Whether `proof_b64` is `key_b64`'s Ed25519 signature over the challenge's proof message.
pub fn verify_proof(key_b64: &str, nonce: &str, cluster_id: &str, proof_b64: &str) -> bool {
    let (Some(key), Some(sig)) = (decode_b64(key_b64), decode_b64(proof_b64)) else {
        return false;
    };
    if key.len() != 32 || sig.len() != 64 {
        return false;
    }
    let msg = proof_message(PROOF_CONTEXT, nonce, cluster_id);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
        .verify(&msg, &sig)
        .is_ok()
}

/// Before a challenge is issued: the cluster (id) the bootstrap token or agent credential
/// belongs to. An unknown secret is refused, and so is one that could never connect (a used or
/// expired bootstrap token, a revoked credential, a deleted cluster's), with the reason the
/// connection would give: a dead secret gets no challenge to hold (audited, action
/// `agent.challenge`).
pub async fn challenge(
    svc: &Services,
    secret: &str,
    fingerprint: Option<String>,
    agent_version: Option<String>,
    meta: RequestMeta,
) -> DomainResult<Result<String, Refusal>> {
    let fingerprint = fingerprint.filter(|f| valid_fingerprint(f));
    let (cluster, refusal) = match challenge_cluster(svc, secret, fingerprint.as_deref()).await? {
        ChallengeFor::Cluster(id) => return Ok(Ok(id)),
        ChallengeFor::Dead(cluster, refusal) => (cluster, refusal),
        ChallengeFor::Unknown => (
            None,
            Refusal::new(
                401,
                refusal::UNKNOWN_TOKEN,
                "unknown or revoked bootstrap token or agent credential. Download a new manifest for this cluster in Warden and apply it",
            ),
        ),
    };
    let hello = AgentHello {
        secret: String::new(),
        fingerprint: fingerprint.unwrap_or_default(),
        cluster: None,
        agent_version,
        meta,
        key: None,
        proof: None,
        challenge: None,
    };
    let ctx = Ctx {
        svc,
        hello: &hello,
        action: "agent.challenge",
    };
    Ok(ctx
        .refuse(cluster.as_ref(), refusal)
        .await?
        .map(|a| a.cluster_id.to_string()))
}

/// Whom a secret may ask a challenge for.
pub enum ChallengeFor {
    /// A live bootstrap token or agent credential of this cluster (id).
    Cluster(String),
    /// A known secret that can no longer connect, and why.
    Dead(Option<clusters::Model>, Refusal),
    Unknown,
}

/// The cluster (id) a bootstrap token or agent credential belongs to, for a challenge, or why
/// the secret can no longer connect, checked in the order the connection checks it (the
/// Kubernetes cluster it comes from first, when the agent says: a manifest applied to the wrong
/// cluster is told so, rather than that its token was used).
pub async fn challenge_cluster(
    svc: &Services,
    secret: &str,
    fingerprint: Option<&str>,
) -> DomainResult<ChallengeFor> {
    let secret = secret.trim();
    let hash = sha256_hex(secret.as_bytes());
    if secret.starts_with(CREDENTIAL_PREFIX) {
        let Some((cred, cluster)) = credential_of(svc, secret).await? else {
            return Ok(ChallengeFor::Unknown);
        };
        Ok(match cluster {
            None => ChallengeFor::Dead(None, credential_of_deleted_cluster(&cred)),
            Some(c) if fingerprint.is_some_and(|fp| fp != cred.fingerprint) => {
                let r =
                    credential_elsewhere(&c, &cred.fingerprint, fingerprint.unwrap_or_default());
                ChallengeFor::Dead(Some(c), r)
            }
            Some(c) if cred.revoked_at.is_some() => {
                let r = credential_revoked(&cred, &c);
                ChallengeFor::Dead(Some(c), r)
            }
            Some(c) => ChallengeFor::Cluster(c.id),
        })
    } else if secret.starts_with(BOOTSTRAP_TOKEN_PREFIX) {
        let Some(token) = cluster_bootstrap_tokens::Entity::find()
            .filter(cluster_bootstrap_tokens::Column::TokenHash.eq(hash))
            .filter(cluster_bootstrap_tokens::Column::Purpose.is_in(AGENT_PURPOSES))
            .one(&svc.db)
            .await?
        else {
            return Ok(ChallengeFor::Unknown);
        };
        let Some(cluster) = clusters::Entity::find_by_id(token.cluster_id.clone())
            .one(&svc.db)
            .await?
        else {
            return Ok(ChallengeFor::Dead(None, token_of_deleted_cluster()));
        };
        if let (Some(bound), Some(fp)) = (cluster.fingerprint.as_deref(), fingerprint) {
            if bound != fp {
                let r = manifest_elsewhere(&cluster, bound, fp);
                return Ok(ChallengeFor::Dead(Some(cluster), r));
            }
        }
        if let Some(r) = token_spent(&token, &cluster, svc.clock.now().millis()) {
            return Ok(ChallengeFor::Dead(Some(cluster), r));
        }
        // A manifest made after registration (a CI log, a chat) gets no challenge: its
        // holder could otherwise keep the real agent's challenges taken and register their own
        // key at the next blip of its tunnel.
        if token.purpose == PURPOSE_AGENT && registered(&svc.db, &cluster).await? {
            let r = already_registered(&cluster);
            return Ok(ChallengeFor::Dead(Some(cluster), r));
        }
        Ok(ChallengeFor::Cluster(cluster.id))
    } else {
        Ok(ChallengeFor::Unknown)
    }
}

/// The agent credential `secret` is, and its cluster (none once the cluster was deleted).
async fn credential_of(
    svc: &Services,
    secret: &str,
) -> DomainResult<Option<(cluster_agent_credentials::Model, Option<clusters::Model>)>> {
    let Some(cred) = cluster_agent_credentials::Entity::find()
        .filter(cluster_agent_credentials::Column::SecretHash.eq(sha256_hex(secret.as_bytes())))
        .one(&svc.db)
        .await?
    else {
        return Ok(None);
    };
    let cluster = match &cred.cluster_id {
        Some(id) => {
            clusters::Entity::find_by_id(id.clone())
                .one(&svc.db)
                .await?
        }
        None => None,
    };
    Ok(Some((cred, cluster)))
}

fn credential_of_deleted_cluster(cred: &cluster_agent_credentials::Model) -> Refusal {
    Refusal::new(
        403,
        refusal::CLUSTER_DELETED,
        format!("the cluster {} was deleted from Warden and this agent's credential is revoked. Remove the agent with: {CLEANUP_COMMAND}", cred.cluster_name),
    )
}

fn credential_revoked(
    cred: &cluster_agent_credentials::Model,
    cluster: &clusters::Model,
) -> Refusal {
    Refusal::new(
        403,
        refusal::CREDENTIAL_REVOKED,
        format!(
            "this agent credential for cluster {} was revoked ({}). Download a new manifest for the cluster in Warden and apply it",
            cluster.name,
            cred.revoked_reason.as_deref().unwrap_or("revoked")
        ),
    )
}

fn credential_elsewhere(cluster: &clusters::Model, registered: &str, fp: &str) -> Refusal {
    Refusal::new(
        403,
        refusal::FINGERPRINT_MISMATCH,
        format!(
            "this agent credential belongs to cluster {} registered from another Kubernetes cluster (kube-system UID {}…), not this one ({}…). Import this cluster separately in Warden and apply its own manifest",
            cluster.name,
            short(registered),
            short(fp)
        ),
    )
}

fn manifest_elsewhere(cluster: &clusters::Model, bound: &str, fp: &str) -> Refusal {
    Refusal::new(
        403,
        refusal::FINGERPRINT_MISMATCH,
        format!(
            "this manifest belongs to cluster {}, which is already registered from another Kubernetes cluster (kube-system UID {}…); this one is {}…. A manifest registers one cluster only: import this cluster separately in Warden and apply its own manifest",
            cluster.name,
            short(bound),
            short(fp)
        ),
    )
}

/// Whether the cluster is registered to an agent key whose credential still stands: then no
/// bootstrap token may register another agent until an administrator revokes that one.
async fn registered<C: ConnectionTrait>(db: &C, cluster: &clusters::Model) -> DomainResult<bool> {
    use sea_orm::PaginatorTrait;
    if cluster.agent_public_key.is_none() {
        // Registered before agents had keys: a new manifest registers it again.
        return Ok(false);
    }
    Ok(cluster_agent_credentials::Entity::find()
        .filter(cluster_agent_credentials::Column::ClusterId.eq(cluster.id.clone()))
        .filter(cluster_agent_credentials::Column::RevokedAt.is_null())
        .count(db)
        .await?
        > 0)
}

fn already_registered(cluster: &clusters::Model) -> Refusal {
    Refusal::new(
        403,
        refusal::KEY_MISMATCH,
        format!(
            "cluster {} is registered to an agent (key {}) that still holds its credential; a manifest cannot replace it. If that agent is gone for good (reinstalled, its key lost), revoke it in Warden first (the cluster's page, or POST /api/v1/clusters/{}/agent/revoke), then apply a new manifest",
            cluster.name,
            cluster.agent_public_key.as_deref().map(key_id).unwrap_or_default(),
            cluster.name
        ),
    )
}

fn token_of_deleted_cluster() -> Refusal {
    Refusal::new(
        403,
        refusal::CLUSTER_DELETED,
        "the cluster of this bootstrap token was deleted from Warden",
    )
}

/// Why a bootstrap token can no longer register its cluster: used, or expired.
fn token_spent(
    token: &cluster_bootstrap_tokens::Model,
    cluster: &clusters::Model,
    now: i64,
) -> Option<Refusal> {
    if let Some(used) = token.used_at {
        return Some(Refusal::new(
            403,
            refusal::TOKEN_USED,
            format!(
                "this bootstrap token was already used (at {}); tokens work once. Download a new manifest for cluster {} in Warden and apply it",
                Timestamp(used).rfc3339(),
                cluster.name
            ),
        ));
    }
    (token.expires_at <= now).then(|| {
        Refusal::new(
            403,
            refusal::TOKEN_EXPIRED,
            format!(
                "this bootstrap token expired at {}. Download a new manifest for cluster {} in Warden and apply it",
                Timestamp(token.expires_at).rfc3339(),
                cluster.name
            ),
        )
    })
}

/// An admitted agent.
#[derive(Debug, Clone)]
pub struct Admission {
    pub cluster_id: ClusterId,
    pub cluster: String,
    pub project: String,
    pub credential_id: String,
    /// Set at registration: the credential the agent must keep. Shown only this once.
    pub new_credential: Option<String>,
    /// The public key the agent proved it holds (base64url).
    pub key: String,
}

/// A refused agent: the HTTP status, a stable code (see [`refusal`]) and a message for the
/// agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

fn valid_fingerprint(f: &str) -> bool {
    !f.is_empty() && f.len() <= 64 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The first characters of a fingerprint, for messages.
fn short(f: &str) -> &str {
    f.get(..8).unwrap_or(f)
}

struct Ctx<'a> {
    svc: &'a Services,
    hello: &'a AgentHello,
    action: &'static str,
}

impl Ctx<'_> {
    /// The agent's version as it says, when it looks like one.
    fn agent_version(&self) -> Option<&str> {
        self.hello
            .agent_version
            .as_deref()
            .filter(|v| crate::agent_protocol::is_version(v))
    }

    /// The event of this attempt. Until a secret names its cluster, the caller is anonymous:
    /// the cluster it claims is only a claim (kept in the details), never the event's actor.
    async fn event(
        &self,
        cluster: Option<&clusters::Model>,
        outcome: Outcome,
        reason: Option<String>,
        mut details: serde_json::Value,
    ) -> DomainResult<AuditEvent> {
        let (actor, name) = match cluster {
            Some(c) => (
                Actor::Agent {
                    cluster: c.name.clone(),
                },
                c.name.clone(),
            ),
            None => {
                if let (Some(claimed), Some(d)) = (&self.hello.cluster, details.as_object_mut()) {
                    let claimed: String = claimed.chars().take(64).collect();
                    d.insert("claimed_cluster".into(), json!(claimed));
                }
                (
                    Actor::Anonymous {
                        claimed: "agent".into(),
                    },
                    "unknown".to_owned(),
                )
            }
        };
        let session = match cluster {
            Some(_) => SessionType::Agent,
            None => SessionType::Api,
        };
        let mut ev = AuditEvent::new(AuditKind::Agent, actor, session, self.action, outcome)
            .resource("cluster", name)
            .request(self.hello.meta.clone())
            .details(details);
        if let Some(c) = cluster {
            ev.cluster = Some(c.name.clone());
            if let Some(p) = project_name(&self.svc.db, &c.project_id).await? {
                ev = ev.project(p);
            }
        }
        if let Some(r) = reason {
            ev = ev.reason(r);
        }
        Ok(ev)
    }

    async fn audit(
        &self,
        cluster: Option<&clusters::Model>,
        outcome: Outcome,
        reason: Option<String>,
        details: serde_json::Value,
    ) -> DomainResult<()> {
        let ev = self.event(cluster, outcome, reason, details).await?;
        // Anonymous refusals go through the sampler: a flood of them is counted, not stored.
        self.svc.record_refusal(ev).await
    }

    async fn refuse(
        &self,
        cluster: Option<&clusters::Model>,
        r: Refusal,
    ) -> DomainResult<Result<Admission, Refusal>> {
        tracing::warn!(
            code = r.code,
            cluster = cluster.map(|c| c.name.as_str()).unwrap_or("unknown"),
            "agent refused: {}",
            r.message
        );
        self.audit(
            cluster,
            Outcome::Denied,
            Some(format!("{}: {}", r.code, r.message)),
            json!({
                "code": r.code,
                "fingerprint": self.hello.fingerprint,
                "agent_version": self.agent_version(),
                "agent_key": self.hello.key.as_deref().filter(|k| valid_key(k)).map(key_id),
            }),
        )
        .await?;
        Ok(Err(r))
    }
}

/// A key and its signature over a challenge.
struct Proof {
    key: String,
    sig: String,
    nonce: String,
    cluster_id: String,
}

impl Proof {
    /// Whether the signature is `key`'s over this challenge, issued for `cluster`.
    fn holds_for(&self, key: &str, cluster: &clusters::Model) -> bool {
        self.cluster_id == cluster.id && verify_proof(key, &self.nonce, &cluster.id, &self.sig)
    }
}

/// Admit or refuse an agent. Database failures are errors; refusals are values.
pub async fn admit(svc: &Services, hello: AgentHello) -> DomainResult<Result<Admission, Refusal>> {
    let secret = hello.secret.trim().to_owned();
    let action = if secret.starts_with(CREDENTIAL_PREFIX) {
        "agent.connect"
    } else {
        "agent.bootstrap"
    };
    let ctx = Ctx {
        svc,
        hello: &hello,
        action,
    };
    if !valid_fingerprint(&hello.fingerprint) {
        return ctx
            .refuse(None, Refusal::new(400, refusal::BAD_REQUEST, "the agent sent no valid cluster fingerprint (X-Warden-Fingerprint: the UID of the kube-system namespace)"))
            .await;
    }
    if !(secret.starts_with(CREDENTIAL_PREFIX) || secret.starts_with(BOOTSTRAP_TOKEN_PREFIX)) {
        return ctx
            .refuse(
                None,
                Refusal::new(
                    401,
                    refusal::UNKNOWN_TOKEN,
                    "the agent presented neither a bootstrap token nor an agent credential",
                ),
            )
            .await;
    }
    // No key, no proof: an agent from before agents had keys, or someone replaying a secret.
    let proof = match (&hello.key, &hello.proof, &hello.challenge) {
        (Some(key), Some(sig), Some(ChallengeCheck::Issued { nonce, cluster_id }))
            if valid_key(key) =>
        {
            Proof {
                key: key.trim().to_owned(),
                sig: sig.trim().to_owned(),
                nonce: nonce.clone(),
                cluster_id: cluster_id.clone(),
            }
        }
        (Some(_), Some(_), Some(ChallengeCheck::Stale)) => {
            return ctx
                .refuse(
                    None,
                    Refusal::new(
                        409,
                        refusal::CHALLENGE_EXPIRED,
                        "the challenge nonce is unknown, used or expired; ask for a new one",
                    ),
                )
                .await;
        }
        _ => {
            return ctx
                .refuse(
                    None,
                    Refusal::new(
                        401,
                        refusal::PROOF_REQUIRED,
                        "the agent must prove its key: send X-Warden-Agent-Key, and X-Warden-Nonce and X-Warden-Proof for a challenge from POST /agent/v1/challenge. An agent older than this Warden must be upgraded",
                    ),
                )
                .await;
        }
    };
    if secret.starts_with(CREDENTIAL_PREFIX) {
        admit_credential(&ctx, &secret, &proof).await
    } else if secret.starts_with(BOOTSTRAP_TOKEN_PREFIX) {
        admit_bootstrap(&ctx, &secret, &proof).await
    } else {
        ctx.refuse(
            None,
            Refusal::new(
                401,
                refusal::UNKNOWN_TOKEN,
                "the agent presented neither a bootstrap token nor an agent credential",
            ),
        )
        .await
    }
}

async fn admit_credential(
    ctx: &Ctx<'_>,
    secret: &str,
    proof: &Proof,
) -> DomainResult<Result<Admission, Refusal>> {
    let svc = ctx.svc;
    let fp = ctx.hello.fingerprint.as_str();
    let Some((cred, cluster)) = credential_of(svc, secret).await? else {
        return ctx
            .refuse(None, Refusal::new(401, refusal::UNKNOWN_TOKEN, "unknown agent credential. Download a new manifest for this cluster in Warden and apply it"))
            .await;
    };
    let Some(cluster) = cluster else {
        return ctx.refuse(None, credential_of_deleted_cluster(&cred)).await;
    };
    if cred.fingerprint != fp {
        return ctx
            .refuse(
                Some(&cluster),
                credential_elsewhere(&cluster, &cred.fingerprint, fp),
            )
            .await;
    }
    if cred.revoked_at.is_some() {
        return ctx
            .refuse(Some(&cluster), credential_revoked(&cred, &cluster))
            .await;
    }
    // The credential alone proves nothing: the agent must hold the key registered with it.
    let Some(registered) = cluster.agent_public_key.clone() else {
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    403,
                    refusal::KEY_REQUIRED,
                    format!(
                        "cluster {} was registered before agents had keys, so this credential alone no longer admits an agent. Download a new manifest for the cluster in Warden and apply it",
                        cluster.name
                    ),
                ),
            )
            .await;
    };
    if registered != proof.key {
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    403,
                    refusal::KEY_MISMATCH,
                    format!(
                        "this agent's key ({}) is not the one registered for cluster {} ({}). Only the agent that registered the cluster may use its credential",
                        key_id(&proof.key),
                        cluster.name,
                        key_id(&registered)
                    ),
                ),
            )
            .await;
    }
    if !proof.holds_for(&registered, &cluster) {
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    403,
                    refusal::PROOF_REQUIRED,
                    "the proof of the agent's key does not verify",
                ),
            )
            .await;
    }
    let now = svc.clock.now().millis();
    let mut a = cred.clone().into_active_model();
    a.last_used_at = Set(Some(now));
    a.update(&svc.db).await?;
    ctx.audit(
        Some(&cluster),
        Outcome::Allowed,
        None,
        json!({"fingerprint": fp, "agent_version": ctx.agent_version(), "agent_key": key_id(&registered)}),
    )
    .await?;
    Ok(Ok(admitted(svc, cluster, cred.id, None, registered).await?))
}

async fn admit_bootstrap(
    ctx: &Ctx<'_>,
    secret: &str,
    proof: &Proof,
) -> DomainResult<Result<Admission, Refusal>> {
    let svc = ctx.svc;
    let fp = ctx.hello.fingerprint.as_str();
    let now = svc.clock.now().millis();
    let Some(token) = cluster_bootstrap_tokens::Entity::find()
        .filter(cluster_bootstrap_tokens::Column::TokenHash.eq(sha256_hex(secret.as_bytes())))
        .filter(cluster_bootstrap_tokens::Column::Purpose.is_in(AGENT_PURPOSES))
        .one(&svc.db)
        .await?
    else {
        return ctx
            .refuse(
                None,
                Refusal::new(401, refusal::UNKNOWN_TOKEN, "unknown bootstrap token: the cluster may have been deleted from Warden. Download a new manifest in Warden and apply it"),
            )
            .await;
    };
    let Some(cluster) = clusters::Entity::find_by_id(token.cluster_id.clone())
        .one(&svc.db)
        .await?
    else {
        return ctx.refuse(None, token_of_deleted_cluster()).await;
    };
    if let Some(bound) = cluster.fingerprint.as_deref().filter(|b| *b != fp) {
        return ctx
            .refuse(Some(&cluster), manifest_elsewhere(&cluster, bound, fp))
            .await;
    }
    if let Some(r) = token_spent(&token, &cluster, now) {
        return ctx.refuse(Some(&cluster), r).await;
    }
    // The key to register: the agent proves it holds it before anything is spent.
    if !proof.holds_for(&proof.key, &cluster) {
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    403,
                    refusal::PROOF_REQUIRED,
                    "the proof of the agent's key does not verify",
                ),
            )
            .await;
    }
    // Another key holds the cluster's live tunnel: never swap it out silently. (Once that
    // tunnel is gone, a new manifest may register a new key: a reinstalled agent.)
    let live = svc
        .clusters
        .runtime()
        .zip(ClusterId::parse(&cluster.id))
        .is_some_and(|(r, id)| r.is_connected(id));
    if let Some(current) = cluster
        .agent_public_key
        .as_deref()
        .filter(|k| *k != proof.key && live)
    {
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    409,
                    refusal::KEY_MISMATCH,
                    format!(
                        "cluster {} has a live tunnel from another agent key ({}); this agent's key is {}. Stop the other agent first",
                        cluster.name,
                        key_id(current),
                        key_id(&proof.key)
                    ),
                ),
            )
            .await;
    }
    // Nor while the other key's credential stands: only an administrator's revocation frees
    // a registered cluster for a new key.
    if token.purpose == PURPOSE_AGENT
        && cluster
            .agent_public_key
            .as_deref()
            .is_some_and(|k| k != proof.key)
        && registered(&svc.db, &cluster).await?
    {
        return ctx
            .refuse(Some(&cluster), already_registered(&cluster))
            .await;
    }
    // The registration and its audit event commit together.
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Use the token only if nobody raced us to it (nor to its expiry: a revocation).
    let used = cluster_bootstrap_tokens::Entity::update_many()
        .col_expr(
            cluster_bootstrap_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .col_expr(
            cluster_bootstrap_tokens::Column::UsedFingerprint,
            sea_orm::sea_query::Expr::value(fp),
        )
        .filter(cluster_bootstrap_tokens::Column::Id.eq(token.id.clone()))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .filter(cluster_bootstrap_tokens::Column::ExpiresAt.gt(now))
        .exec(&tx)
        .await?;
    if used.rows_affected != 1 {
        tx.rollback().await?;
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    403,
                    refusal::TOKEN_USED,
                    "this bootstrap token was just used by another agent; tokens work once",
                ),
            )
            .await;
    }
    // Bind the fingerprint, unless another registration bound a different one meanwhile.
    let bound = clusters::Entity::update_many()
        .col_expr(
            clusters::Column::Fingerprint,
            sea_orm::sea_query::Expr::value(fp),
        )
        .col_expr(
            clusters::Column::RegisteredAt,
            sea_orm::sea_query::Expr::value(cluster.registered_at.unwrap_or(now)),
        )
        .col_expr(
            clusters::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .col_expr(
            clusters::Column::AgentPublicKey,
            sea_orm::sea_query::Expr::value(proof.key.clone()),
        )
        .col_expr(
            clusters::Column::AgentKeyRegisteredAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(clusters::Column::Id.eq(cluster.id.clone()))
        .filter(
            clusters::Column::Fingerprint
                .is_null()
                .or(clusters::Column::Fingerprint.eq(fp)),
        )
        .exec(&tx)
        .await?;
    if bound.rows_affected != 1 {
        tx.rollback().await?;
        return ctx
            .refuse(
                Some(&cluster),
                Refusal::new(
                    403,
                    refusal::FINGERPRINT_MISMATCH,
                    format!(
                        "cluster {} was just registered from another Kubernetes cluster",
                        cluster.name
                    ),
                ),
            )
            .await;
    }
    // A re-registration (same cluster, new manifest) replaces the previous credentials.
    cluster_agent_credentials::Entity::update_many()
        .col_expr(
            cluster_agent_credentials::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .col_expr(
            cluster_agent_credentials::Column::RevokedReason,
            sea_orm::sea_query::Expr::value("replaced by a new registration"),
        )
        .filter(cluster_agent_credentials::Column::ClusterId.eq(cluster.id.clone()))
        .filter(cluster_agent_credentials::Column::RevokedAt.is_null())
        .exec(&tx)
        .await?;
    // And ends every other token of the cluster not used yet (manifests downloaded before,
    // one-time download links): a spare manifest left in a CI log or a chat must not register
    // a second agent, which the next blip of the real agent's tunnel would let take over.
    cluster_bootstrap_tokens::Entity::update_many()
        .col_expr(
            cluster_bootstrap_tokens::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(cluster_bootstrap_tokens::Column::ClusterId.eq(cluster.id.clone()))
        .filter(cluster_bootstrap_tokens::Column::UsedAt.is_null())
        .filter(cluster_bootstrap_tokens::Column::ExpiresAt.gt(now))
        .exec(&tx)
        .await?;
    let credential = format!("{CREDENTIAL_PREFIX}{}", random_token(32));
    let cred = cluster_agent_credentials::ActiveModel::from(cluster_agent_credentials::Model {
        id: uuid::Uuid::new_v4().to_string(),
        cluster_id: Some(cluster.id.clone()),
        cluster_name: cluster.name.clone(),
        secret_hash: sha256_hex(credential.as_bytes()),
        fingerprint: fp.to_owned(),
        created_at: now,
        last_used_at: Some(now),
        revoked_at: None,
        revoked_reason: None,
    })
    .insert(&tx)
    .await?;
    let event = ctx
        .event(
            Some(&cluster),
            Outcome::Allowed,
            None,
            json!({
                "fingerprint": fp,
                "agent_version": ctx.agent_version(),
                "credential": cred.id,
                "first_registration": cluster.fingerprint.is_none(),
                "agent_key": key_id(&proof.key),
                "previous_agent_key": cluster.agent_public_key.as_deref().map(key_id),
            }),
        )
        .await?;
    crate::audit::append(&tx, svc.clock.now(), vec![event]).await?;
    tx.commit().await?;
    Ok(Ok(admitted(
        svc,
        cluster,
        cred.id,
        Some(credential),
        proof.key.clone(),
    )
    .await?))
}

/// The name of a project, by id.
async fn project_name<C: ConnectionTrait>(
    db: &C,
    project_id: &str,
) -> DomainResult<Option<String>> {
    Ok(projects::Entity::find_by_id(project_id.to_owned())
        .one(db)
        .await?
        .map(|p| p.name))
}

/// An admitted agent of `cluster`, with the name of the cluster's project.
async fn admitted(
    svc: &Services,
    cluster: clusters::Model,
    credential_id: String,
    new_credential: Option<String>,
    key: String,
) -> DomainResult<Admission> {
    Ok(Admission {
        project: project_name(&svc.db, &cluster.project_id)
            .await?
            .unwrap_or_default(),
        cluster_id: ClusterId::parse(&cluster.id).ok_or_else(|| {
            DomainError::Internal(format!("cluster {} has a malformed id", cluster.name))
        })?,
        cluster: cluster.name,
        credential_id,
        new_credential,
        key,
    })
}

/// Change a cluster's status, recording the change in its history (and the audit log for
/// connections and disconnections). Returns whether anything changed.
pub async fn set_status(
    svc: &Services,
    cluster_id: &str,
    status: &str,
    reason: &str,
) -> DomainResult<bool> {
    let Some(c) = clusters::Entity::find_by_id(cluster_id.to_owned())
        .one(&svc.db)
        .await?
    else {
        return Ok(false);
    };
    if c.status == status {
        return Ok(false);
    }
    let now = svc.clock.now().millis();
    let name = c.name.clone();
    let project_id = c.project_id.clone();
    let mut a = c.into_active_model();
    a.status = Set(status.to_owned());
    a.status_reason = Set(Some(reason.to_owned()));
    if status == cluster_status::CONNECTED {
        a.connected_at = Set(Some(now));
    }
    a.updated_at = Set(now);
    a.update(&svc.db).await?;
    record_history(&svc.db, cluster_id, status, reason, now).await?;
    let action = if status == cluster_status::CONNECTED {
        "agent.connected"
    } else {
        "agent.disconnected"
    };
    let mut ev = AuditEvent::new(
        AuditKind::Agent,
        Actor::Agent {
            cluster: name.clone(),
        },
        SessionType::Agent,
        action,
        Outcome::Allowed,
    )
    .resource("cluster", name.clone())
    .reason(reason);
    ev.cluster = Some(name);
    if let Some(p) = project_name(&svc.db, &project_id).await? {
        ev = ev.project(p);
    }
    svc.audit.record(ev).await?;
    Ok(true)
}

async fn record_history<C: ConnectionTrait>(
    db: &C,
    cluster_id: &str,
    status: &str,
    reason: &str,
    now: i64,
) -> DomainResult<()> {
    cluster_status_history::ActiveModel::from(cluster_status_history::Model {
        id: uuid::Uuid::new_v4().to_string(),
        cluster_id: cluster_id.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        at: now,
    })
    .insert(db)
    .await?;
    let old: Vec<String> = cluster_status_history::Entity::find()
        .filter(cluster_status_history::Column::ClusterId.eq(cluster_id))
        .order_by_desc(cluster_status_history::Column::At)
        .all(db)
        .await?
        .into_iter()
        .skip(HISTORY_KEEP)
        .map(|h| h.id)
        .collect();
    if !old.is_empty() {
        cluster_status_history::Entity::delete_many()
            .filter(cluster_status_history::Column::Id.is_in(old))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// The audit action for a change of a cluster's admission guard from `was` to `now`: a guard
/// no longer in force (from any state, the first report included), or one in force again
/// after it was not. An agent that stops reporting it (an older one) says nothing.
fn guard_change(was: Option<GuardStatus>, now: Option<GuardStatus>) -> Option<&'static str> {
    match (was, now) {
        (_, None) => None,
        (w, n) if w == n => None,
        (Some(_), Some(GuardStatus::Enforced)) => Some("agent.guard_restored"),
        (None, Some(GuardStatus::Enforced)) => None,
        (_, Some(_)) => Some("agent.guard_weakened"),
    }
}

/// The audit event of a change of `c`'s admission guard to `now_is` (`action`: see
/// [`guard_change`]).
async fn guard_event(
    svc: &Services,
    c: &clusters::Model,
    action: &str,
    now_is: Option<GuardStatus>,
) -> DomainResult<AuditEvent> {
    let mut ev = AuditEvent::new(
        AuditKind::Agent,
        Actor::Agent {
            cluster: c.name.clone(),
        },
        SessionType::Agent,
        action,
        Outcome::Allowed,
    )
    .resource("cluster", c.name.clone())
    .reason(format!(
        "the admission guard warden-system-guard is {}",
        now_is.map_or("unknown", GuardStatus::describe)
    ))
    .details(json!({"guard": now_is}));
    ev.cluster = Some(c.name.clone());
    if let Some(p) = project_name(&svc.db, &c.project_id).await? {
        ev = ev.project(p);
    }
    Ok(ev)
}

/// Heartbeats of many clusters at once (see the server's heartbeat writer), in one
/// transaction: new facts with one `UPDATE` per cluster that brought some, the time of the
/// others with one `UPDATE` per 500 clusters, so a thousand agents cost one commit a second
/// instead of a thousand. A cluster among them that was not `connected` becomes so (after the
/// commit, audited) if its tunnel is still live (`is_live`): a heartbeat stored just after its
/// tunnel closed must not undo the disconnection. Facts that break the bounds are never
/// stored (the caller audits them). A change of a cluster's admission guard is audited in the
/// same transaction as the facts that report it.
pub async fn record_heartbeats(
    svc: &Services,
    beats: &[(ClusterId, Option<ClusterFacts>)],
    is_live: &(dyn Fn(ClusterId) -> bool + Sync),
) -> DomainResult<()> {
    use sea_orm::sea_query::Expr;
    use sea_orm::QuerySelect;
    let now = svc.clock.now().millis();
    let mut plain: Vec<String> = Vec::new();
    // What the clusters bringing facts reported before: a change of their admission guard is
    // audited.
    let bringing: Vec<String> = beats
        .iter()
        .filter(|(_, f)| f.is_some())
        .map(|(id, _)| id.to_string())
        .collect();
    let mut before: HashMap<String, clusters::Model> = HashMap::new();
    for chunk in bringing.chunks(500) {
        before.extend(
            clusters::Entity::find()
                .filter(clusters::Column::Id.is_in(chunk.to_vec()))
                .all(&svc.db)
                .await?
                .into_iter()
                .map(|c| (c.id.clone(), c)),
        );
    }
    // Their audit events are appended first in the same transaction (the chain locked before
    // any cluster row, as every audited change does): the facts and the event of their change
    // are stored together or not at all.
    let mut guard_events = Vec::new();
    for (id, facts) in beats {
        let Some(facts) = facts
            .as_ref()
            .filter(|f| crate::agent_protocol::validate_facts(f).is_ok())
        else {
            continue;
        };
        if let Some(c) = before.get_mut(&id.to_string()) {
            let was = serde_json::from_str::<ClusterFacts>(&c.facts)
                .ok()
                .and_then(|f| f.guard);
            if let Some(action) = guard_change(was, facts.guard) {
                guard_events.push(guard_event(svc, c, action, facts.guard).await?);
            }
            // A later beat of the same cluster in this batch is compared with this one.
            c.facts = serde_json::to_string(facts).unwrap_or_else(|_| "{}".into());
        }
    }
    let audited = !guard_events.is_empty();
    let txn = svc.db.begin().await?;
    crate::audit::append(&txn, svc.clock.now(), guard_events).await?;
    for (id, facts) in beats {
        let Some(facts) = facts
            .as_ref()
            .filter(|f| crate::agent_protocol::validate_facts(f).is_ok())
        else {
            plain.push(id.to_string());
            continue;
        };
        let short = |v: &Option<String>| v.as_ref().map(|v| v.chars().take(64).collect::<String>());
        clusters::Entity::update_many()
            .col_expr(clusters::Column::LastSeen, Expr::value(now))
            .col_expr(
                clusters::Column::KubernetesVersion,
                Expr::value(short(&facts.kubernetes_version)),
            )
            .col_expr(
                clusters::Column::NodeCount,
                Expr::value(std::cmp::min(facts.node_count, i32::MAX as u32) as i32),
            )
            .col_expr(
                clusters::Column::AgentVersion,
                Expr::value(short(&facts.agent_version)),
            )
            .col_expr(
                clusters::Column::Facts,
                Expr::value(serde_json::to_string(facts).unwrap_or_else(|_| "{}".into())),
            )
            .filter(clusters::Column::Id.eq(id.to_string()))
            .exec(&txn)
            .await?;
    }
    plain.sort();
    plain.dedup();
    for chunk in plain.chunks(500) {
        clusters::Entity::update_many()
            .col_expr(clusters::Column::LastSeen, Expr::value(now))
            .filter(clusters::Column::Id.is_in(chunk.to_vec()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    if audited {
        crate::audit::notify_committed();
    }
    let mut all: Vec<ClusterId> = beats.iter().map(|(id, _)| *id).collect();
    all.sort();
    all.dedup();
    for chunk in all.chunks(500) {
        let not_connected: Vec<String> = clusters::Entity::find()
            .select_only()
            .column(clusters::Column::Id)
            .filter(clusters::Column::Id.is_in(chunk.iter().map(ClusterId::to_string)))
            .filter(clusters::Column::Status.ne(cluster_status::CONNECTED))
            .into_tuple()
            .all(&svc.db)
            .await?;
        // A stored id that is not one is never a live tunnel's.
        for id in not_connected
            .into_iter()
            .filter(|id| ClusterId::parse(id).is_some_and(is_live))
        {
            set_status(svc, &id, cluster_status::CONNECTED, "heartbeat received").await?;
        }
    }
    Ok(())
}

/// Which of these agent credentials are still valid (not revoked, bound to a cluster): one
/// query per 500 for a group of heartbeats.
pub async fn valid_credentials(
    svc: &Services,
    credential_ids: &[&str],
) -> DomainResult<std::collections::HashSet<String>> {
    let mut valid = std::collections::HashSet::new();
    for chunk in credential_ids.chunks(500) {
        for c in cluster_agent_credentials::Entity::find()
            .filter(cluster_agent_credentials::Column::Id.is_in(chunk.iter().copied()))
            .filter(cluster_agent_credentials::Column::RevokedAt.is_null())
            .filter(cluster_agent_credentials::Column::ClusterId.is_not_null())
            .all(&svc.db)
            .await?
        {
            valid.insert(c.id);
        }
    }
    Ok(valid)
}

/// Why a credential found invalid (by [`valid_credentials`]) stopped working, as the refusal
/// its agent is sent: the cluster was deleted (the agent should be removed) or the credential
/// was revoked (a new manifest is needed). Rare path: one read.
pub async fn credential_refusal(svc: &Services, credential_id: &str) -> DomainResult<Refusal> {
    let cred = cluster_agent_credentials::Entity::find_by_id(credential_id.to_owned())
        .one(&svc.db)
        .await?;
    let cluster = match cred.as_ref().and_then(|c| c.cluster_id.clone()) {
        Some(id) => clusters::Entity::find_by_id(id).one(&svc.db).await?,
        None => None,
    };
    Ok(match (cred, cluster) {
        (Some(c), Some(cluster)) if c.revoked_at.is_some() => Refusal::new(
            403,
            refusal::CREDENTIAL_REVOKED,
            format!(
                "the agent credential of cluster {} was revoked ({}). Download a new manifest for the cluster in Warden and apply it",
                cluster.name,
                c.revoked_reason.as_deref().unwrap_or("revoked")
            ),
        ),
        (Some(c), Some(cluster)) => Refusal::new(
            403,
            refusal::CREDENTIAL_REVOKED,
            format!(
                "the agent credential of cluster {} is no longer valid ({}). Download a new manifest for the cluster in Warden and apply it",
                cluster.name,
                c.revoked_reason.as_deref().unwrap_or("revoked")
            ),
        ),
        (cred, _) => Refusal::new(
            403,
            refusal::CLUSTER_DELETED,
            format!(
                "the cluster {} was deleted from Warden and this agent's credential is revoked. Remove the agent with: {CLEANUP_COMMAND}",
                cred.map(|c| c.cluster_name).unwrap_or_else(|| "of this agent".into())
            ),
        ),
    })
}

/// Clusters marked `connected` whose agent has no tunnel in `live`: mark them `disconnected`
/// (after a restart of Warden, or a tunnel lost without notice).
/// `is_live` is asked after the rows are read, so a tunnel registered meanwhile counts as live.
pub async fn mark_unconnected(
    svc: &Services,
    is_live: &(dyn Fn(&str) -> bool + Sync),
    reason: &str,
) -> DomainResult<Vec<String>> {
    let rows = clusters::Entity::find()
        .filter(clusters::Column::Status.eq(cluster_status::CONNECTED))
        .all(&svc.db)
        .await?;
    let mut changed = Vec::new();
    for c in rows.into_iter().filter(|c| !is_live(&c.id)) {
        if set_status(svc, &c.id, cluster_status::DISCONNECTED, reason).await? {
            changed.push(c.name);
        }
    }
    Ok(changed)
}

/// The cluster an agent connection belongs to, by id.
pub async fn cluster_name(svc: &Services, cluster_id: &str) -> DomainResult<Option<String>> {
    Ok(clusters::Entity::find_by_id(cluster_id.to_owned())
        .one(&svc.db)
        .await?
        .map(|c| c.name))
}

/// Record what an admitted agent did wrong on its tunnel (oversize or malformed facts, a
/// heartbeat flood), as a denied audit event (kind `agent`) on its cluster.
pub async fn audit_violation(
    svc: &Services,
    cluster_id: &str,
    action: &'static str,
    reason: &str,
) -> DomainResult<()> {
    let Some(c) = clusters::Entity::find_by_id(cluster_id.to_owned())
        .one(&svc.db)
        .await?
    else {
        return Ok(());
    };
    tracing::warn!(cluster = %c.name, action, "agent misbehaved: {reason}");
    let mut ev = AuditEvent::new(
        AuditKind::Agent,
        Actor::Agent {
            cluster: c.name.clone(),
        },
        SessionType::Agent,
        action,
        Outcome::Denied,
    )
    .resource("cluster", c.name.clone())
    .reason(reason);
    ev.cluster = Some(c.name.clone());
    if let Some(p) = project_name(&svc.db, &c.project_id).await? {
        ev = ev.project(p);
    }
    svc.audit.record(ev).await
}
