//! Groups and their members.

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::HashMap;

use crate::access::{Action, Principal};
use crate::bootstrap::ALL_USERS_GROUP;
use crate::dto::{CreateGroupRequest, GroupDto, GroupRef, Page, UpdateGroupRequest, UserSummary};
use crate::entities::{bindings, group_members, groups, users};
use crate::error::{DomainError, DomainResult, OnConstraint};
use crate::ids::GroupId;
use crate::permissions::Permission;
use crate::types::Email;
use crate::Services;

pub async fn find<C: ConnectionTrait>(db: &C, name_or_id: &str) -> DomainResult<groups::Model> {
    groups::Entity::find()
        .filter(
            groups::Column::Name
                .eq(name_or_id)
                .or(groups::Column::Id.eq(name_or_id)),
        )
        .all(db)
        .await?
        .into_iter()
        // A name equal to another row's id (refused since, see `admin::refuse_id_shaped`) is
        // the name: the gate asked about the name as given.
        .min_by_key(|m| m.name != name_or_id)
        .ok_or_else(|| DomainError::not_found("group"))
}

async fn members<C: ConnectionTrait>(db: &C, group_id: &str) -> DomainResult<Vec<UserSummary>> {
    let ids: Vec<String> = group_members::Entity::find()
        .filter(group_members::Column::GroupId.eq(group_id))
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    let rows = users::Entity::find()
        .filter(users::Column::Id.is_in(ids))
        .order_by_asc(users::Column::Email)
        .all(db)
        .await?;
    Ok(rows
        .iter()
        .map(crate::identity::accounts::summary)
        .collect())
}

async fn to_dto<C: ConnectionTrait>(db: &C, g: &groups::Model) -> DomainResult<GroupDto> {
    let members = members(db, &g.id).await?;
    Ok(GroupDto {
        id: g.id.clone(),
        name: g.name.clone(),
        description: g.description.clone(),
        builtin: g.builtin,
        member_count: members.len() as u64,
        members,
    })
}

fn validate_name(name: &str) -> DomainResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "name",
            "must be 1 to 128 characters with no control characters",
        ));
    }
    Ok(n.to_owned())
}

pub async fn list(svc: &Services, who: &Principal) -> DomainResult<Page<GroupDto>> {
    svc.gate(who, Action::org(Permission::GroupRead)).await?;
    let rows = groups::Entity::find()
        .order_by_asc(groups::Column::Name)
        .all(&svc.db)
        .await?;
    // The member counts in one query; the members themselves are on each group's page (the
    // list would carry every membership of the organization).
    use sea_orm::sea_query::Expr;
    use sea_orm::QuerySelect;
    let counts: HashMap<String, i64> = group_members::Entity::find()
        .select_only()
        .column(group_members::Column::GroupId)
        .column_as(Expr::col(group_members::Column::UserId).count(), "n")
        .group_by(group_members::Column::GroupId)
        .into_tuple::<(String, i64)>()
        .all(&svc.db)
        .await?
        .into_iter()
        .collect();
    let items = rows
        .into_iter()
        .map(|g| GroupDto {
            member_count: std::cmp::max(counts.get(&g.id).copied().unwrap_or(0), 0) as u64,
            id: g.id,
            name: g.name,
            description: g.description,
            builtin: g.builtin,
            members: vec![],
        })
        .collect();
    Ok(Page { items, next: None })
}

/// Every group's id, name and whether it is built in, sorted by name: what a form's group
/// choice needs, without [`list`]'s member counts. Same permission as the list.
pub async fn refs(svc: &Services, who: &Principal) -> DomainResult<Vec<GroupRef>> {
    use sea_orm::QuerySelect;
    svc.gate(who, Action::org(Permission::GroupRead)).await?;
    let rows: Vec<(String, String, bool)> = groups::Entity::find()
        .select_only()
        .columns([
            groups::Column::Id,
            groups::Column::Name,
            groups::Column::Builtin,
        ])
        .order_by_asc(groups::Column::Name)
        .into_tuple()
        .all(&svc.db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, builtin)| GroupRef { id, name, builtin })
        .collect())
}

pub async fn get(svc: &Services, who: &Principal, name_or_id: &str) -> DomainResult<GroupDto> {
    svc.gate(who, Action::org(Permission::GroupRead)).await?;
    let g = find(&svc.db, name_or_id).await?;
    to_dto(&svc.db, &g).await
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateGroupRequest,
) -> DomainResult<GroupDto> {
    svc.gate(who, Action::org(Permission::GroupWrite)).await?;
    let name = validate_name(&req.name)?;
    super::refuse_id_shaped(&name)?;
    if super::name_taken_ignoring_case::<groups::Entity, _>(&svc.db, groups::Column::Name, &name)
        .await?
    {
        return Err(DomainError::conflict(
            "name",
            "a group with this name already exists (names ignore letter case)",
        ));
    }
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let g = groups::ActiveModel::from(groups::Model {
        id: GroupId::new().to_string(),
        name,
        description: req
            .description
            .unwrap_or_default()
            .trim()
            .chars()
            .take(1024)
            .collect(),
        builtin: false,
        created_at: now,
        updated_at: now,
    })
    .insert(&tx)
    .await
    .on_unique(
        "uq_groups_name",
        "name",
        "a group with this name already exists",
    )?;
    let dto = to_dto(&tx, &g).await?;
    svc.audit_change(
        &tx,
        who,
        "group.create",
        "group",
        &g.name,
        None,
        None,
        Some(json!(dto)),
    )
    .await?;
    tx.commit().await?;
    Ok(dto)
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    name_or_id: &str,
    req: UpdateGroupRequest,
) -> DomainResult<GroupDto> {
    svc.gate(who, Action::org(Permission::GroupWrite)).await?;
    let g = find(&svc.db, name_or_id).await?;
    let before = json!({"description": g.description});
    let mut a = g.into_active_model();
    if let Some(d) = req.description {
        a.description = Set(d.trim().chars().take(1024).collect());
    }
    a.updated_at = Set(svc.clock.now().millis());
    let tx = crate::audit::begin_change(&svc.db).await?;
    let g = a.update(&tx).await?;
    svc.audit_change(
        &tx,
        who,
        "group.update",
        "group",
        &g.name,
        None,
        Some(before),
        Some(json!({"description": g.description})),
    )
    .await?;
    tx.commit().await?;
    to_dto(&svc.db, &g).await
}

pub async fn delete(svc: &Services, who: &Principal, name_or_id: &str) -> DomainResult<()> {
    svc.gate(who, Action::org(Permission::GroupWrite)).await?;
    let g = find(&svc.db, name_or_id).await?;
    if g.builtin {
        return Err(DomainError::conflict(
            "name",
            format!("{} is built in and cannot be deleted", g.name),
        ));
    }
    // What holds the group is read inside the deletion's transaction: a binding or an approver
    // role given to it meanwhile (their changes take the same lock first) is seen, not removed
    // with the group unsaid.
    let tx = crate::audit::begin_change(&svc.db).await?;
    let uses = bindings::Entity::find()
        .filter(bindings::Column::GroupId.eq(g.id.clone()))
        .filter(super::bindings::live(svc.clock.now()))
        .all(&tx)
        .await?;
    if !uses.is_empty() {
        let list = super::bindings::describe_all(&tx, &uses).await?;
        return Err(DomainError::conflict(
            "name",
            format!(
                "the group is used by {} binding(s): {}; remove them first",
                uses.len(),
                list.join("; ")
            ),
        ));
    }
    // A project's approver group decides its access requests: deleting it would take that
    // power from every member at once (which removing them one by one is bounded against),
    // and leave the project pointing at nothing.
    let approves: Vec<String> = crate::entities::projects::Entity::find()
        .filter(crate::entities::projects::Column::ApproverGroupId.eq(g.id.clone()))
        .all(&tx)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    if !approves.is_empty() {
        return Err(DomainError::conflict(
            "name",
            format!(
                "the group approves access requests for project(s) {}; choose another approver group there first",
                approves.join(", ")
            ),
        ));
    }
    let before = to_dto(&tx, &g).await?;
    groups::Entity::delete_by_id(g.id.clone()).exec(&tx).await?;
    svc.audit_change(
        &tx,
        who,
        "group.delete",
        "group",
        &g.name,
        None,
        Some(json!(before)),
        None,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(())
}

pub async fn add_member(
    svc: &Services,
    who: &Principal,
    group: &str,
    email: &str,
) -> DomainResult<GroupDto> {
    svc.gate(who, Action::org(Permission::GroupWrite)).await?;
    let g = find(&svc.db, group).await?;
    // No escalation: a new member gets what the group's bindings grant, so the one adding
    // them (themselves included) must hold all of it where it applies.
    let uses = bindings::Entity::find()
        .filter(bindings::Column::GroupId.eq(g.id.clone()))
        .filter(super::bindings::live(svc.clock.now()))
        .all(&svc.db)
        .await?;
    let mut handouts = super::bindings::handouts(&svc.db, &uses, None).await?;
    // And the approval of access requests for the projects it approves for.
    handouts
        .extend(super::bindings::approver_handouts(&svc.db, std::slice::from_ref(&g.id)).await?);
    super::bindings::refuse_escalation(svc, who, &handouts, "group.member.add", "group", &g.name)
        .await?;
    let email = Email::parse(email).map_err(|e| DomainError::invalid_value("user", e))?;
    let u = crate::identity::accounts::find_by_email(&svc.db, &email)
        .await?
        .ok_or_else(|| DomainError::not_found("user"))?;
    let exists = group_members::Entity::find_by_id((g.id.clone(), u.id.clone()))
        .one(&svc.db)
        .await?;
    if exists.is_some() {
        return Err(DomainError::conflict(
            "user",
            format!("{email} is already a member of {}", g.name),
        ));
    }
    let tx = crate::audit::begin_change(&svc.db).await?;
    group_members::ActiveModel::from(group_members::Model {
        group_id: g.id.clone(),
        user_id: u.id.clone(),
        created_at: svc.clock.now().millis(),
    })
    .insert(&tx)
    .await?;
    svc.audit_change(
        &tx,
        who,
        "group.member.add",
        "group",
        &g.name,
        None,
        None,
        Some(json!({"member": email.as_str()})),
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    to_dto(&svc.db, &g).await
}

pub async fn remove_member(
    svc: &Services,
    who: &Principal,
    group: &str,
    email: &str,
) -> DomainResult<GroupDto> {
    svc.gate(who, Action::org(Permission::GroupWrite)).await?;
    let g = find(&svc.db, group).await?;
    if g.name == ALL_USERS_GROUP {
        return Err(DomainError::conflict(
            "user",
            "every user belongs to All Users; deactivate the user instead",
        ));
    }
    let email = Email::parse(email).map_err(|e| DomainError::invalid_value("user", e))?;
    let u = crate::identity::accounts::find_by_email(&svc.db, &email)
        .await?
        .ok_or_else(|| DomainError::not_found("user"))?;
    // Taking a membership away is bounded as handing it out is (`add_member`): someone who
    // manages groups removes a developer from a team, not every administrator from
    // Organization Admins. One's own membership is one's own to give up.
    let uses = bindings::Entity::find()
        .filter(bindings::Column::GroupId.eq(g.id.clone()))
        .filter(super::bindings::live(svc.clock.now()))
        .all(&svc.db)
        .await?;
    if u.id != who.user_id.to_string() {
        let mut held = super::bindings::handouts(&svc.db, &uses, None).await?;
        held.extend(
            super::bindings::approver_handouts(&svc.db, std::slice::from_ref(&g.id)).await?,
        );
        let held: Vec<_> = held
            .into_iter()
            .map(super::bindings::Handout::taken_away)
            .collect();
        super::bindings::refuse_escalation(
            svc,
            who,
            &held,
            "group.member.remove",
            "group",
            &g.name,
        )
        .await?;
    }
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Only an administrator's leaving can leave the organization without one.
    let had = super::bindings::administers_in(
        &tx,
        crate::identity::accounts::user_id(&u)?,
        svc.clock.now(),
    )
    .await?;
    let r = group_members::Entity::delete_by_id((g.id.clone(), u.id.clone()))
        .exec(&tx)
        .await?;
    if r.rows_affected == 0 {
        return Err(DomainError::not_found("membership"));
    }
    svc.audit_change(
        &tx,
        who,
        "group.member.remove",
        "group",
        &g.name,
        None,
        Some(json!({"member": email.as_str()})),
        None,
    )
    .await?;
    let tx = super::bindings::keep_an_administrator(
        svc,
        tx,
        had,
        who,
        "group.member.remove",
        "group",
        &g.name,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    to_dto(&svc.db, &g).await
}
