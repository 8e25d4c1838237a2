//! Roles: the immutable built-ins and validated custom roles.

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

use crate::access::{Action, Principal};
use crate::dto::{CreateRoleRequest, Page, PermissionDto, RoleDto, UpdateRoleRequest};
use crate::entities::{bindings, roles};
use crate::error::{DomainError, DomainResult, OnConstraint};
use crate::ids::RoleId;
use crate::permissions::{Permission, Scope};
use crate::Services;

pub fn permissions_of(m: &roles::Model) -> Vec<String> {
    serde_json::from_str(&m.permissions).unwrap_or_default()
}

pub fn to_dto(m: &roles::Model) -> RoleDto {
    RoleDto {
        id: m.id.clone(),
        name: m.name.clone(),
        scope: Scope::from_stored(&m.scope),
        description: m.description.clone(),
        builtin: m.builtin,
        permissions: permissions_of(m),
    }
}

pub async fn find<C: ConnectionTrait>(db: &C, name_or_id: &str) -> DomainResult<roles::Model> {
    roles::Entity::find()
        .filter(
            roles::Column::Name
                .eq(name_or_id)
                .or(roles::Column::Id.eq(name_or_id)),
        )
        .all(db)
        .await?
        .into_iter()
        // A name equal to another row's id (refused since, see `admin::refuse_id_shaped`) is
        // the name: the gate asked about the name as given.
        .min_by_key(|m| m.name != name_or_id)
        .ok_or_else(|| DomainError::not_found("role"))
}

pub fn catalogue() -> Vec<PermissionDto> {
    Permission::ALL
        .iter()
        .map(|p| PermissionDto {
            name: p.name().into(),
            area: p.area().into(),
            scope: p.min_scope(),
            description: p.description().into(),
        })
        .collect()
}

/// Role definitions are not secret: any signed-in user may read them (people choosing a role
/// for a project member need to see what it grants).
pub async fn list(svc: &Services, _who: &Principal) -> DomainResult<Page<RoleDto>> {
    let rows = roles::Entity::find()
        .order_by_desc(roles::Column::Builtin)
        .order_by_asc(roles::Column::Name)
        .all(&svc.db)
        .await?;
    Ok(Page {
        items: rows.iter().map(to_dto).collect(),
        next: None,
    })
}

pub async fn get(svc: &Services, _who: &Principal, name_or_id: &str) -> DomainResult<RoleDto> {
    Ok(to_dto(&find(&svc.db, name_or_id).await?))
}

fn validate_name(name: &str) -> DomainResult<String> {
    let n = name.trim();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && n.as_bytes()[0].is_ascii_alphabetic();
    if !ok {
        return Err(DomainError::invalid(
            "name",
            "must be 1-64 letters, digits, '_' or '-', starting with a letter",
        ));
    }
    Ok(n.to_owned())
}

/// Check a custom role's scope and permissions; returns the canonical permission list.
pub fn validate_permissions(scope: Scope, names: &[String]) -> DomainResult<Vec<String>> {
    let mut problems = Vec::new();
    let mut set = BTreeSet::new();
    for n in names {
        match Permission::parse(n) {
            None => problems.push(format!("unknown permission {n:?}")),
            Some(p) if !p.allowed_in(scope) => problems.push(format!(
                "{} needs a role of {} scope; a {} role cannot carry it",
                p.name(),
                p.min_scope().as_str(),
                scope.as_str()
            )),
            Some(p) => {
                set.insert(p);
            }
        }
    }
    if scope != Scope::Namespace && set.contains(&Permission::KubectlNamespaceWrite) {
        problems.push(crate::permissions::NAMESPACE_WRITE_WIDE.into());
    }
    if set.is_empty() && problems.is_empty() {
        problems.push("choose at least one permission".into());
    }
    if scope == Scope::Namespace
        && !set.contains(&Permission::KubectlNamespaceRead)
        && !set.contains(&Permission::KubectlNamespaceWrite)
    {
        problems.push(
            "a namespace role must carry kubectl.namespace.read or kubectl.namespace.write".into(),
        );
    }
    if !problems.is_empty() {
        return Err(DomainError::Invalid {
            fields: BTreeMap::from([("permissions".to_owned(), problems.join("; "))]),
        });
    }
    // Catalogue order, for stable output.
    Ok(Permission::ALL
        .iter()
        .filter(|p| set.contains(p))
        .map(|p| p.name().to_owned())
        .collect())
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateRoleRequest,
) -> DomainResult<RoleDto> {
    svc.gate(who, Action::org(Permission::RoleWrite)).await?;
    let name = validate_name(&req.name)?;
    super::refuse_id_shaped(&name)?;
    if super::name_taken_ignoring_case::<roles::Entity, _>(&svc.db, roles::Column::Name, &name)
        .await?
    {
        return Err(DomainError::conflict(
            "name",
            "a role with this name already exists (names ignore letter case)",
        ));
    }
    let scope = req.scope;
    let perms = validate_permissions(scope, &req.permissions)?;
    // The just-in-time settings name break-glass roles: a role made under such a name is
    // anyone's on any project for the taking, as widening one is (`update`).
    if super::jit_settings::load(&svc.db)
        .await?
        .break_glass_roles
        .iter()
        .any(|r| r.role.eq_ignore_ascii_case(&name))
    {
        let granted: Vec<Permission> = perms
            .iter()
            .filter_map(|n| Permission::parse(n))
            .filter(|p| p.allowed_in(scope))
            .collect();
        super::bindings::refuse_escalation(
            svc,
            who,
            &[super::bindings::Handout::break_glass(&name, granted)],
            "role.create",
            "role",
            &name,
        )
        .await?;
    }
    let now = svc.clock.now().millis();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = roles::ActiveModel::from(roles::Model {
        id: RoleId::new().to_string(),
        name,
        scope: scope.as_str().into(),
        description: req
            .description
            .unwrap_or_default()
            .trim()
            .chars()
            .take(1024)
            .collect(),
        builtin: false,
        permissions: serde_json::to_string(&perms).unwrap_or_else(|_| "[]".into()),
        created_at: now,
        updated_at: now,
    })
    .insert(&tx)
    .await
    .on_unique(
        "uq_roles_name",
        "name",
        "a role with this name already exists",
    )?;
    let dto = to_dto(&m);
    svc.audit_change(
        &tx,
        who,
        "role.create",
        "role",
        &m.name,
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
    req: UpdateRoleRequest,
) -> DomainResult<RoleDto> {
    svc.gate(who, Action::org(Permission::RoleWrite)).await?;
    let m = find(&svc.db, name_or_id).await?;
    if m.builtin {
        return Err(DomainError::conflict(
            "name",
            "built-in roles cannot be changed; create a custom role instead",
        ));
    }
    let scope = Scope::parse(&m.scope)
        .ok_or_else(|| DomainError::Internal("role with a bad scope".into()))?;
    let perms = match &req.permissions {
        Some(p) => Some(validate_permissions(scope, p)?),
        None => None,
    };
    if let Some(perms) = &perms {
        // No escalation: what the role would newly grant, the editor must hold wherever the
        // role is bound (an unbound role grants nothing; binding it is checked then).
        let old = super::bindings::granted_by(&m);
        let added: Vec<Permission> = perms
            .iter()
            .filter_map(|n| Permission::parse(n))
            .filter(|p| !old.iter().any(|o| o.implies(*p)))
            .collect();
        if !added.is_empty() {
            let uses = bindings::Entity::find()
                .filter(bindings::Column::RoleId.eq(m.id.clone()))
                .all(&svc.db)
                .await?;
            let mut handouts = super::bindings::handouts(&svc.db, &uses, Some(&added)).await?;
            if super::jit_settings::load(&svc.db)
                .await?
                .break_glass_roles
                .iter()
                .any(|r| r.role == m.name)
            {
                handouts.push(super::bindings::Handout::break_glass(
                    &m.name,
                    added.clone(),
                ));
            }
            super::bindings::refuse_escalation(svc, who, &handouts, "role.update", "role", &m.name)
                .await?;
        }
    }
    let before = to_dto(&m);
    let mut a = m.into_active_model();
    if let Some(perms) = &perms {
        a.permissions = Set(serde_json::to_string(perms).unwrap_or_else(|_| "[]".into()));
    }
    if let Some(d) = req.description {
        a.description = Set(d.trim().chars().take(1024).collect());
    }
    a.updated_at = Set(svc.clock.now().millis());
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Narrowing the role the last administrator holds it through would leave none.
    let had = perms.is_some() && super::bindings::has_administrator(&tx, svc.clock.now()).await?;
    let m = a.update(&tx).await?;
    let after = to_dto(&m);
    svc.audit_change(
        &tx,
        who,
        "role.update",
        "role",
        &m.name,
        None,
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    let tx =
        super::bindings::keep_an_administrator(svc, tx, had, who, "role.update", "role", &m.name)
            .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(after)
}

pub async fn delete(svc: &Services, who: &Principal, name_or_id: &str) -> DomainResult<()> {
    svc.gate(who, Action::org(Permission::RoleWrite)).await?;
    let m = find(&svc.db, name_or_id).await?;
    if m.builtin {
        return Err(DomainError::conflict(
            "name",
            "built-in roles cannot be deleted",
        ));
    }
    // Settings name break-glass roles: deleting one would leave its name for the taking (a role
    // made under it, with whatever it grants, is break-glass at once).
    if super::jit_settings::load(&svc.db)
        .await?
        .break_glass_roles
        .iter()
        .any(|r| r.role.eq_ignore_ascii_case(&m.name))
    {
        return Err(DomainError::conflict(
            "name",
            format!(
                "{} is a break-glass role in the just-in-time settings; remove it from there first",
                m.name
            ),
        ));
    }
    // Read inside the deletion's transaction: a binding of the role made meanwhile (binding
    // changes take the same lock first) is seen, not deleted with the role unsaid.
    let tx = crate::audit::begin_change(&svc.db).await?;
    let uses = bindings::Entity::find()
        .filter(bindings::Column::RoleId.eq(m.id.clone()))
        .filter(super::bindings::live(svc.clock.now()))
        .all(&tx)
        .await?;
    if !uses.is_empty() {
        let list = super::bindings::describe_all(&tx, &uses).await?;
        return Err(DomainError::conflict(
            "name",
            format!(
                "the role is used by {} binding(s): {}",
                uses.len(),
                list.join("; ")
            ),
        ));
    }
    let before = to_dto(&m);
    // Expired bindings of the role (kept only to explain their expiry) go with it.
    bindings::Entity::delete_many()
        .filter(bindings::Column::RoleId.eq(m.id.clone()))
        .exec(&tx)
        .await?;
    roles::Entity::delete_by_id(m.id.clone()).exec(&tx).await?;
    svc.audit_change(
        &tx,
        who,
        "role.delete",
        "role",
        &m.name,
        None,
        Some(json!(before)),
        None,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(())
}
