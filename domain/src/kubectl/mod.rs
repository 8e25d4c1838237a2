//! Kubeconfigs and kubectl access: which clusters a user reaches through kubectl and with what
//! rights, issued credentials and their revocation, kubectl settings at the organization, user
//! and cluster levels, and the bookkeeping of the per-user service accounts on the clusters.
//!
//! The Kubernetes API gateway (server) signs the credentials and enforces all this on every
//! request; this module decides and records. Its files: this one (the clusters and the
//! identity a user has through kubectl), [`settings`] (validity and idle limits at the
//! organization, user and cluster levels), [`credentials`] (issuing, checking and revoking
//! kubeconfig credentials) and [`service_accounts`] (the per-user accounts on the clusters).

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::access::{Action, Principal};
use crate::admin::ts;
use crate::audit::{AuditEvent, AuditKind, Outcome, SessionType};
use crate::clock::Timestamp;
use crate::entities::{
    cluster_shares, clusters, kube_credentials, kube_service_accounts, kube_users,
    kubectl_settings, projects, users,
};
use crate::error::{DomainError, DomainResult};
use crate::ids::UserId;
use crate::kubeconfig::{
    EffectiveKubectlSettings, KubeconfigRevoked, KubectlSettings, KubectlSettingsDto,
    KubectlSettingsScope, MyKubeCluster, MyKubectl, UpdateKubectlSettingsRequest,
    MAX_DURATION_SECS, MIN_DURATION_SECS,
};
use crate::permissions::Permission;
use crate::secrets::sha256_hex;
use crate::Services;

mod credentials;
pub mod downloads;
mod service_accounts;
pub(crate) mod settings;

pub use credentials::{
    access_in_words, credential_status, issue, issue_web_shell, my_kubectl, revoke,
    revoke_credential, IssuedCredential, KubeconfigRefused,
};
pub(crate) use credentials::{revoke_in, revoke_made_with_keys};
pub use service_accounts::{
    forget_service_account, record_service_account, service_account_of, service_accounts,
    touch_service_account,
};
pub use settings::{effective_settings, get_settings, update_settings, SettingsLevel};

// ---- clusters as kubectl sees them ----

pub use crate::access::kube::{kube_access, KubeAccess, KubeCluster, KubeLevel};

async fn kube_clusters_where<C: ConnectionTrait>(
    db: &C,
    name: Option<&str>,
) -> DomainResult<Vec<KubeCluster>> {
    let names: HashMap<String, String> = projects::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let mut q = clusters::Entity::find().order_by_asc(clusters::Column::Name);
    if let Some(n) = name {
        q = q.filter(clusters::Column::Name.eq(n));
    }
    let rows = q.all(db).await?;
    let ids: Vec<String> = rows.iter().map(|c| c.id.clone()).collect();
    let mut shares: HashMap<String, Vec<String>> = HashMap::new();
    for s in cluster_shares::Entity::find()
        .filter(cluster_shares::Column::ClusterId.is_in(ids))
        .all(db)
        .await?
    {
        if let Some(p) = names.get(&s.project_id) {
            shares.entry(s.cluster_id).or_default().push(p.clone());
        }
    }
    rows.into_iter()
        .map(|c| {
            let mut shared_with = shares.remove(&c.id).unwrap_or_default();
            shared_with.sort();
            Ok(KubeCluster {
                owner: names.get(&c.project_id).cloned().unwrap_or_default(),
                id: crate::ids::ClusterId::parse(&c.id).ok_or_else(|| {
                    DomainError::Internal(format!("cluster {} has a malformed id", c.name))
                })?,
                name: c.name,
                shared_with,
                status: crate::dto::ClusterStatus::from_stored(&c.status),
            })
        })
        .collect()
}

/// One cluster by name.
pub async fn kube_cluster<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> DomainResult<Option<KubeCluster>> {
    Ok(kube_clusters_where(db, Some(name))
        .await?
        .into_iter()
        .next())
}

/// Every cluster.
pub async fn kube_clusters<C: ConnectionTrait>(db: &C) -> DomainResult<Vec<KubeCluster>> {
    kube_clusters_where(db, None).await
}

// ---- per-user kubectl identity ----

/// `u-` and the email with every run of characters outside `[a-z0-9]` turned into one `-`,
/// at most 56 characters (room for a collision suffix within 63).
pub fn service_account_base(email: &str) -> String {
    let mut out = String::from("u-");
    let mut dash = false;
    for c in email.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash {
            out.push('-');
            dash = true;
        }
        if out.len() >= 56 {
            break;
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// The user's kubectl identity, created at first need. The service account name is the email
/// slug; when another user already holds it, a short hash of the user id makes it unique.
pub async fn kube_user<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    email: &str,
    now: Timestamp,
) -> DomainResult<kube_users::Model> {
    if let Some(k) = kube_users::Entity::find_by_id(user_id.to_owned())
        .one(db)
        .await?
    {
        return Ok(k);
    }
    let base = service_account_base(email);
    let hashed = format!("{base}-{}", &sha256_hex(user_id.as_bytes())[..6]);
    for name in [base, hashed] {
        let taken = kube_users::Entity::find()
            .filter(kube_users::Column::SaName.eq(name.clone()))
            .one(db)
            .await?
            .is_some();
        if taken {
            continue;
        }
        let row = kube_users::Model {
            user_id: user_id.to_owned(),
            sa_name: name,
            revoked_before: None,
            created_at: now.millis(),
            updated_at: now.millis(),
        };
        match kube_users::ActiveModel::from(row.clone()).insert(db).await {
            Ok(m) => return Ok(m),
            Err(e) => {
                // Raced with another request for the same user: use theirs.
                if let Some(k) = kube_users::Entity::find_by_id(user_id.to_owned())
                    .one(db)
                    .await?
                {
                    return Ok(k);
                }
                tracing::warn!(error = %e, "service account name taken; trying the next one");
            }
        }
    }
    Err(DomainError::Internal(format!(
        "no free service account name for user {user_id}"
    )))
}

/// A user id from its text form, for the gateway (which reads it from a certificate).
pub fn parse_user_id(s: &str) -> Option<UserId> {
    UserId::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account_base("john@example.com"),
            "u-john-example-com"
        );
        assert_eq!(
            service_account_base("John.Doe+k8s@Example.COM"),
            "u-john-doe-k8s-example-com"
        );
        assert!(service_account_base(&format!("{}@x.io", "a".repeat(100))).len() <= 56);
    }
}
