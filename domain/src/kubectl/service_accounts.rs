//! The per-user service accounts on the clusters: the records that say which exist, for whom,
//! with which fingerprint and when they were last used.

use super::*;
use crate::ids::ClusterId;

/// Remember that the service account exists on the cluster with this RBAC.
pub async fn record_service_account<C: ConnectionTrait>(
    db: &C,
    cluster_id: ClusterId,
    user_id: &str,
    sa_name: &str,
    rbac_hash: &str,
    now: Timestamp,
) -> DomainResult<()> {
    let existing =
        kube_service_accounts::Entity::find_by_id((cluster_id.to_string(), user_id.to_owned()))
            .one(db)
            .await?;
    match existing {
        Some(m) => {
            let mut a = m.into_active_model();
            a.sa_name = Set(sa_name.to_owned());
            a.rbac_hash = Set(rbac_hash.to_owned());
            a.reconciled_at = Set(now.millis());
            a.last_used_at = Set(now.millis());
            a.last_error = Set(None);
            a.update(db).await?;
        }
        None => {
            kube_service_accounts::ActiveModel::from(kube_service_accounts::Model {
                cluster_id: cluster_id.to_string(),
                user_id: user_id.to_owned(),
                sa_name: sa_name.to_owned(),
                rbac_hash: rbac_hash.to_owned(),
                created_at: now.millis(),
                reconciled_at: now.millis(),
                last_used_at: now.millis(),
                last_error: None,
            })
            .insert(db)
            .await?;
        }
    }
    Ok(())
}

/// The service account on record for the user on the cluster.
pub async fn service_account_of<C: ConnectionTrait>(
    db: &C,
    cluster_id: ClusterId,
    user_id: &str,
) -> DomainResult<Option<kube_service_accounts::Model>> {
    Ok(
        kube_service_accounts::Entity::find_by_id((cluster_id.to_string(), user_id.to_owned()))
            .one(db)
            .await?,
    )
}

/// Note a use of the service account (for idle removal).
pub async fn touch_service_account<C: ConnectionTrait>(
    db: &C,
    cluster_id: ClusterId,
    user_id: &str,
    now: Timestamp,
) -> DomainResult<()> {
    kube_service_accounts::Entity::update_many()
        .col_expr(
            kube_service_accounts::Column::LastUsedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(kube_service_accounts::Column::ClusterId.eq(cluster_id.to_string()))
        .filter(kube_service_accounts::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn forget_service_account<C: ConnectionTrait>(
    db: &C,
    cluster_id: ClusterId,
    user_id: &str,
) -> DomainResult<()> {
    kube_service_accounts::Entity::delete_by_id((cluster_id.to_string(), user_id.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn service_accounts<C: ConnectionTrait>(
    db: &C,
) -> DomainResult<Vec<kube_service_accounts::Model>> {
    Ok(kube_service_accounts::Entity::find().all(db).await?)
}
