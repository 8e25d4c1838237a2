//! Projects.

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;

use super::ts;
use crate::access::{Action, Principal};
use crate::dto::{
    CreateProjectRequest, Page, ProjectCounts, ProjectDto, ProjectQuery, UpdateProjectRequest,
};
use crate::entities::projects;
use crate::error::{DomainError, DomainResult, OnConstraint};
use crate::ids::ProjectId;
use crate::permissions::Permission;
use crate::types::DnsLabel;
use crate::Services;
use std::collections::HashMap;

pub fn to_dto(m: &projects::Model) -> ProjectDto {
    ProjectDto {
        id: m.id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        created_at: ts(m.created_at),
        updated_at: ts(m.updated_at),
        counts: None,
    }
}

/// Clusters and members of each project in `ids`, counted by the database (three grouped
/// queries, whatever the number of projects).
pub async fn counts<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
    now_ms: i64,
) -> DomainResult<HashMap<String, ProjectCounts>> {
    use crate::entities::{bindings, cluster_shares, clusters};
    use sea_orm::sea_query::Expr;
    use sea_orm::QuerySelect;
    let mut out: HashMap<String, ProjectCounts> = ids
        .iter()
        .map(|id| (id.clone(), ProjectCounts::default()))
        .collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let owned: Vec<(String, i64)> = clusters::Entity::find()
        .select_only()
        .column(clusters::Column::ProjectId)
        .column_as(Expr::col(clusters::Column::Id).count(), "n")
        .filter(clusters::Column::ProjectId.is_in(ids.iter().cloned()))
        .group_by(clusters::Column::ProjectId)
        .into_tuple()
        .all(db)
        .await?;
    for (p, n) in owned {
        out.entry(p).or_default().clusters_owned = n as u32;
    }
    let shared: Vec<(String, i64)> = cluster_shares::Entity::find()
        .select_only()
        .column(cluster_shares::Column::ProjectId)
        .column_as(Expr::col(cluster_shares::Column::ClusterId).count(), "n")
        .filter(cluster_shares::Column::ProjectId.is_in(ids.iter().cloned()))
        .group_by(cluster_shares::Column::ProjectId)
        .into_tuple()
        .all(db)
        .await?;
    for (p, n) in shared {
        out.entry(p).or_default().clusters_shared = n as u32;
    }
    let members: Vec<(Option<String>, i64, i64)> = bindings::Entity::find()
        .select_only()
        .column(bindings::Column::ProjectId)
        .column_as(
            Expr::col(bindings::Column::UserId).count_distinct(),
            "users",
        )
        .column_as(
            Expr::col(bindings::Column::GroupId).count_distinct(),
            "groups",
        )
        .filter(bindings::Column::ProjectId.is_in(ids.iter().cloned()))
        // Grants that ended at their expiry are history, not members.
        .filter(
            bindings::Column::ExpiresAt
                .is_null()
                .or(bindings::Column::ExpiresAt.gt(now_ms)),
        )
        .group_by(bindings::Column::ProjectId)
        .into_tuple()
        .all(db)
        .await?;
    for (p, users, groups) in members {
        if let Some(p) = p {
            let c = out.entry(p).or_default();
            c.member_users = users as u32;
            c.member_groups = groups as u32;
        }
    }
    Ok(out)
}

fn with_counts(mut dto: ProjectDto, counts: &HashMap<String, ProjectCounts>) -> ProjectDto {
    dto.counts = Some(counts.get(&dto.id).copied().unwrap_or_default());
    dto
}

/// A project by name or id.
pub async fn find<C: ConnectionTrait>(db: &C, name_or_id: &str) -> DomainResult<projects::Model> {
    projects::Entity::find()
        .filter(
            projects::Column::Name
                .eq(name_or_id)
                .or(projects::Column::Id.eq(name_or_id)),
        )
        .all(db)
        .await?
        .into_iter()
        // A name equal to another row's id (refused since, see `admin::refuse_id_shaped`) is
        // the name: the gate asked about the name as given.
        .min_by_key(|m| m.name != name_or_id)
        .ok_or_else(|| DomainError::not_found("project"))
}

fn check_description(d: &str) -> DomainResult<String> {
    let d = d.trim();
    if d.chars().count() > 1024 || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(
            "description",
            "must be at most 1024 characters without control characters",
        ));
    }
    Ok(d.to_owned())
}

/// The projects the caller can see.
/// The projects the caller can see, as a condition (the list's and the names' one rule).
/// An organization-wide `project.read` sees them all: no list of names to send.
async fn visible(svc: &Services, who: &Principal) -> DomainResult<sea_orm::Condition> {
    let eff = svc.policy.effective(who.user_id).await?;
    let all = sea_orm::Condition::all();
    Ok(
        if eff.active && eff.org_permissions().contains(&Permission::ProjectRead) {
            all
        } else {
            all.add(projects::Column::Name.is_in(eff.visible_projects()))
        },
    )
}

/// The projects the caller can see, a page at a time (keyset on the name), with their counts
/// (for that page only).
pub async fn list(
    svc: &Services,
    who: &Principal,
    q: &ProjectQuery,
) -> DomainResult<Page<ProjectDto>> {
    use sea_orm::sea_query::Expr;
    use sea_orm::QuerySelect;
    let after = super::cursor::decode("projects", q.cursor.as_deref())?;
    let limit = super::cursor::limit(q.limit);
    let mut cond = visible(svc, who).await?;
    if let Some(c) = super::cursor::contains_any(
        q.q.as_deref(),
        [
            Expr::col(projects::Column::Name),
            Expr::col(projects::Column::Description),
        ],
    ) {
        cond = cond.add(c);
    }
    if let Some(a) = after {
        cond = cond.add(projects::Column::Name.gt(a));
    }
    let mut rows = projects::Entity::find()
        .filter(cond)
        .order_by_asc(projects::Column::Name)
        .limit(limit + 1)
        .all(&svc.db)
        .await?;
    let next = super::cursor::page(&mut rows, limit, "projects", |p| &p.name);
    let ids: Vec<String> = rows.iter().map(|p| p.id.clone()).collect();
    let counts = counts(&svc.db, &ids, svc.clock.now().millis()).await?;
    Ok(Page {
        items: rows
            .iter()
            .map(|p| with_counts(to_dto(p), &counts))
            .collect(),
        next,
    })
}

/// The names of the projects the caller can see, sorted: what a form's project choice needs,
/// without [`list`]'s counts (which cost a grouped scan of bindings and clusters).
pub async fn names(svc: &Services, who: &Principal) -> DomainResult<Vec<String>> {
    use sea_orm::QuerySelect;
    Ok(projects::Entity::find()
        .select_only()
        .column(projects::Column::Name)
        .filter(visible(svc, who).await?)
        .order_by_asc(projects::Column::Name)
        .into_tuple()
        .all(&svc.db)
        .await?)
}

/// The project `name_or_id`, once the gate allows `permission` on it: refused before saying
/// whether it exists (the gate decides on the name asked for).
pub(crate) async fn find_gated(
    svc: &Services,
    who: &Principal,
    name_or_id: &str,
    permission: Permission,
) -> DomainResult<projects::Model> {
    let p = find(&svc.db, name_or_id).await;
    let name = p
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_else(|_| name_or_id.to_owned());
    svc.gate(who, Action::project(permission, name)).await?;
    p
}

pub async fn get(svc: &Services, who: &Principal, name_or_id: &str) -> DomainResult<ProjectDto> {
    let p = find_gated(svc, who, name_or_id, Permission::ProjectRead).await?;
    let counts = counts(
        &svc.db,
        std::slice::from_ref(&p.id),
        svc.clock.now().millis(),
    )
    .await?;
    Ok(with_counts(to_dto(&p), &counts))
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateProjectRequest,
) -> DomainResult<ProjectDto> {
    svc.gate(who, Action::org(Permission::ProjectCreate))
        .await?;
    let name =
        DnsLabel::parse(req.name.trim()).map_err(|e| DomainError::invalid_value("name", e))?;
    super::refuse_id_shaped(&name.to_string())?;
    let description = check_description(req.description.as_deref().unwrap_or(""))?;
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = projects::ActiveModel::from(projects::Model {
        id: ProjectId::new().to_string(),
        name: name.to_string(),
        description,
        created_at: now,
        updated_at: now,
        approver_group_id: None,
    })
    .insert(&tx)
    .await
    .on_unique(
        "uq_projects_name",
        "name",
        "a project with this name already exists",
    )?;
    let dto = to_dto(&m);
    svc.audit_change(
        &tx,
        who,
        "project.create",
        "project",
        &m.name,
        Some(&m.name),
        None,
        Some(json!(dto)),
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(dto)
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    name_or_id: &str,
    req: UpdateProjectRequest,
) -> DomainResult<ProjectDto> {
    let p = find(&svc.db, name_or_id).await;
    let name = p
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_else(|_| name_or_id.to_owned());
    svc.gate(who, Action::project(Permission::ProjectWrite, name))
        .await?;
    let p = p?;
    let before = to_dto(&p);
    let mut a = p.into_active_model();
    if let Some(d) = req.description {
        a.description = Set(check_description(&d)?);
    }
    a.updated_at = Set(svc.clock.now().millis());
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = a.update(&tx).await?;
    let after = to_dto(&m);
    svc.audit_change(
        &tx,
        who,
        "project.update",
        "project",
        &m.name,
        Some(&m.name),
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Delete a project. Refused while clusters belong to it.
pub async fn delete(svc: &Services, who: &Principal, name_or_id: &str) -> DomainResult<()> {
    svc.gate(who, Action::org(Permission::ProjectCreate))
        .await?;
    let p = find(&svc.db, name_or_id).await?;
    if p.name == crate::bootstrap::DEFAULT_PROJECT {
        return Err(DomainError::conflict(
            "name",
            "the default project cannot be deleted",
        ));
    }
    let clusters = crate::admin::projects::cluster_names(&svc.db, &p.id).await?;
    if !clusters.is_empty() {
        return Err(DomainError::conflict(
            "name",
            format!(
                "the project still owns clusters: {}; delete or move them first",
                clusters.join(", ")
            ),
        ));
    }
    let tx = crate::audit::begin_change(&svc.db).await?;
    let before = to_dto(&p);
    projects::Entity::delete_by_id(p.id.clone())
        .exec(&tx)
        .await?;
    svc.audit_change(
        &tx,
        who,
        "project.delete",
        "project",
        &p.name,
        Some(&p.name),
        Some(json!(before)),
        None,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(())
}

/// Names of clusters owned by a project.
pub async fn cluster_names<C: ConnectionTrait>(
    db: &C,
    project_id: &str,
) -> DomainResult<Vec<String>> {
    crate::clusters::names_owned_by(db, project_id).await
}
