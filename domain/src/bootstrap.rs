//! First start: the organization, the built-in roles, the `default` project, the built-in
//! groups and the first administrator. Idempotent: a later start changes nothing but the
//! built-in roles' permission lists (so an upgrade can extend them).

use sea_orm::{
    ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel, PaginatorTrait, Set,
    TransactionTrait,
};

use crate::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType, SharedAuditSink};
use crate::clock::Timestamp;
use crate::entities::{bindings, group_members, groups, organization, projects, roles};
use crate::error::DomainResult;
use crate::identity::{accounts as users, password};
use crate::ids::{BindingId, GroupId, OrgId, ProjectId, RoleId};
use crate::permissions::BUILTIN_ROLES;
use crate::secrets::{generate_password, Secret};
use crate::settings::{self, OrgSettings};
use crate::types::{DisplayName, Email};

pub const DEFAULT_PROJECT: &str = "default";
pub const ORG_ADMINS_GROUP: &str = "Organization Admins";
pub const ALL_USERS_GROUP: &str = "All Users";

pub struct BootstrapInput {
    pub admin_email: Email,
    /// `None`: generate one and return it to be printed once.
    pub admin_password: Option<Secret>,
}

#[derive(Debug)]
pub enum BootstrapOutcome {
    AlreadyInitialised,
    Initialised {
        admin_email: Email,
        generated_password: Option<Secret>,
    },
}

pub async fn seed_builtin_roles<C: sea_orm::ConnectionTrait>(
    db: &C,
    now: Timestamp,
) -> DomainResult<()> {
    use sea_orm::{ColumnTrait, QueryFilter};
    for r in BUILTIN_ROLES {
        let perms =
            serde_json::to_string(&r.permissions.iter().map(|p| p.name()).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into());
        match roles::Entity::find()
            .filter(roles::Column::Name.eq(r.name))
            .one(db)
            .await?
        {
            Some(existing) => {
                if existing.permissions != perms || existing.description != r.description {
                    let mut a = existing.into_active_model();
                    a.permissions = Set(perms);
                    a.description = Set(r.description.to_owned());
                    a.builtin = Set(true);
                    a.updated_at = Set(now.millis());
                    a.update(db).await?;
                }
            }
            None => {
                roles::ActiveModel::from(roles::Model {
                    id: RoleId::new().to_string(),
                    name: r.name.to_owned(),
                    scope: r.scope.as_str().to_owned(),
                    description: r.description.to_owned(),
                    builtin: true,
                    permissions: perms,
                    created_at: now.millis(),
                    updated_at: now.millis(),
                })
                .insert(db)
                .await?;
            }
        }
    }
    Ok(())
}

pub async fn run(
    db: &DatabaseConnection,
    audit: &SharedAuditSink,
    input: BootstrapInput,
    now: Timestamp,
) -> DomainResult<BootstrapOutcome> {
    let tx = db.begin().await?;
    seed_builtin_roles(&tx, now).await?;
    if organization::Entity::find().count(&tx).await? > 0 {
        tx.commit().await?;
        return Ok(BootstrapOutcome::AlreadyInitialised);
    }

    organization::ActiveModel::from(organization::Model {
        id: OrgId::new().to_string(),
        name: "Warden".into(),
        created_at: now.millis(),
    })
    .insert(&tx)
    .await?;
    settings::save(&tx, &OrgSettings::default(), now).await?;

    projects::ActiveModel::from(projects::Model {
        id: ProjectId::new().to_string(),
        name: DEFAULT_PROJECT.into(),
        description: "The default project".into(),
        created_at: now.millis(),
        updated_at: now.millis(),
        approver_group_id: None,
    })
    .insert(&tx)
    .await?;

    let mut group_ids = Vec::new();
    for (name, desc) in [
        (ORG_ADMINS_GROUP, "Organization administrators (role ADMIN)"),
        (ALL_USERS_GROUP, "Every user of the organization"),
    ] {
        let g = groups::ActiveModel::from(groups::Model {
            id: GroupId::new().to_string(),
            name: name.into(),
            description: desc.into(),
            builtin: true,
            created_at: now.millis(),
            updated_at: now.millis(),
        })
        .insert(&tx)
        .await?;
        group_ids.push(g.id);
    }

    use sea_orm::{ColumnTrait, QueryFilter};
    let admin_role = roles::Entity::find()
        .filter(roles::Column::Name.eq("ADMIN"))
        .one(&tx)
        .await?
        .ok_or_else(|| crate::DomainError::Internal("ADMIN role missing".into()))?;
    bindings::ActiveModel::from(bindings::Model {
        id: BindingId::new().to_string(),
        subject_kind: crate::dto::SubjectKind::Group.as_str().into(),
        user_id: None,
        group_id: Some(group_ids[0].clone()),
        role_id: admin_role.id,
        project_id: None,
        namespaces: "[]".into(),
        created_at: now.millis(),
        expires_at: None,
        expiry_recorded_at: None,
        access_request_id: None,
    })
    .insert(&tx)
    .await?;

    let (pw, generated) = match input.admin_password {
        Some(p) => (p, None),
        None => {
            let p = Secret::new(generate_password());
            (p.clone(), Some(p))
        }
    };
    let hash = password::hash(pw.expose()).await?;
    let admin = users::create(
        &tx,
        users::NewUser {
            email: input.admin_email.clone(),
            name: DisplayName::parse("Administrator").expect("valid"),
            password_hash: Some(hash),
            must_change_password: true,
            password_set_by: None,
        },
        now,
    )
    .await?;
    for gid in &group_ids {
        group_members::ActiveModel::from(group_members::Model {
            group_id: gid.clone(),
            user_id: admin.id.clone(),
            created_at: now.millis(),
        })
        .insert(&tx)
        .await?;
    }
    tx.commit().await?;

    audit
        .record(
            AuditEvent::new(
                AuditKind::System,
                Actor::System,
                SessionType::System,
                "organization.initialise",
                Outcome::Allowed,
            )
            .resource("user", input.admin_email.as_str())
            .details(serde_json::json!({
                "project": DEFAULT_PROJECT,
                "groups": [ORG_ADMINS_GROUP, ALL_USERS_GROUP],
                "admin": input.admin_email.as_str(),
            })),
        )
        .await?;
    Ok(BootstrapOutcome::Initialised {
        admin_email: input.admin_email,
        generated_password: generated,
    })
}
