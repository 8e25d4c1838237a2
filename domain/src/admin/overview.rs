//! The console's landing page: the clusters the caller may read (those needing attention
//! first), recent denials and activity for callers who may read the audit log, and the first
//! steps of a fresh installation for organization administrators.

use sea_orm::{EntityTrait, PaginatorTrait};

use crate::access::{Action, Principal};
use crate::dto::{AuditQuery, ClusterQuery, GettingStarted, Overview, OverviewCluster};
use crate::entities::{clusters, kube_credentials, projects, users};
use crate::error::DomainResult;
use crate::permissions::Permission;
use crate::Services;

/// The overview, each part through the gate that guards it.
pub async fn overview(svc: &Services, who: &Principal) -> DomainResult<Overview> {
    let mut out = Overview::default();
    // Clusters: exactly those the cluster list shows the caller.
    let page = crate::clusters::list(
        svc,
        who,
        &ClusterQuery {
            limit: Some(500),
            ..Default::default()
        },
    )
    .await?;
    let mut all: Vec<OverviewCluster> = page
        .items
        .into_iter()
        .map(|c| OverviewCluster {
            name: c.name,
            project: c.project,
            status: c.status,
            status_reason: c.status_reason,
            last_seen: c.last_seen,
        })
        .collect();
    for c in &all {
        *out.cluster_counts.entry(c.status).or_default() += 1;
    }
    all.sort_by(|a, b| {
        a.status
            .attention()
            .cmp(&b.status.attention())
            .then_with(|| a.name.cmp(&b.name))
    });
    all.truncate(Overview::CLUSTERS_SHOWN);
    out.clusters = all;

    // Ask the gate only of callers who hold some right to it: asking for others would write a
    // denial on every visit to the landing page.
    let eff = svc.policy.effective(who.user_id).await?;
    let may_read_audit = eff.active
        && eff
            .bindings
            .iter()
            .any(|b| b.permissions.contains(&Permission::AuditRead));
    if may_read_audit {
        if let Ok(scope) = crate::access::audit_scope(&svc.policy, who).await {
            let now = svc.clock.now();
            let denials = crate::audit::search_in(
                &svc.db,
                &AuditQuery {
                    outcome: Some("denied".into()),
                    limit: Some(Overview::EVENTS_SHOWN),
                    ..Default::default()
                },
                &scope,
                now,
            )
            .await?;
            let activity = crate::audit::search_in(
                &svc.db,
                &AuditQuery {
                    limit: Some(Overview::EVENTS_SHOWN),
                    ..Default::default()
                },
                &scope,
                now,
            )
            .await?;
            out.recent_denials = Some(denials.items);
            out.recent_activity = Some(activity.items);
        }
    }

    let org = eff.org_permissions();
    if eff.active
        && org.contains(&Permission::ProjectCreate)
        && org.contains(&Permission::UserWrite)
    {
        svc.gate(who, Action::org(Permission::ProjectCreate))
            .await?;
        svc.gate(who, Action::org(Permission::UserWrite)).await?;
        out.getting_started = Some(GettingStarted {
            cluster_imported: clusters::Entity::find().count(&svc.db).await? > 0,
            // The installation starts with the project `default`.
            project_created: projects::Entity::find().count(&svc.db).await? > 1,
            // ... and with its first administrator.
            people_added: users::Entity::find().count(&svc.db).await? > 1,
            kubeconfig_downloaded: kube_credentials::Entity::find().count(&svc.db).await? > 0,
        });
    }
    Ok(out)
}
