use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub status: String,
    pub origin: String,
    pub must_change_password: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
    /// Bumped whenever every session of the user must end; sessions carry the value they
    /// were made with.
    pub session_generation: i64,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::access_requests::Entity")]
    AccessRequests,
    #[sea_orm(has_many = "super::api_keys::Entity")]
    ApiKeys,
    #[sea_orm(has_many = "super::bindings::Entity")]
    Bindings,
    #[sea_orm(has_many = "super::group_members::Entity")]
    GroupMembers,
    #[sea_orm(has_many = "super::kube_credentials::Entity")]
    KubeCredentials,
    #[sea_orm(has_many = "super::kube_users::Entity")]
    KubeUsers,
    #[sea_orm(has_many = "super::mfa_recovery_codes::Entity")]
    MfaRecoveryCodes,
    #[sea_orm(has_many = "super::one_time_tokens::Entity")]
    OneTimeTokens,
    #[sea_orm(has_many = "super::user_identities::Entity")]
    UserIdentities,
    #[sea_orm(has_many = "super::user_mfa::Entity")]
    UserMfa,
}

impl Related<super::access_requests::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AccessRequests.def()
    }
}

impl Related<super::api_keys::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKeys.def()
    }
}

impl Related<super::bindings::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Bindings.def()
    }
}

impl Related<super::group_members::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::GroupMembers.def()
    }
}

impl Related<super::kube_credentials::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::KubeCredentials.def()
    }
}

impl Related<super::kube_users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::KubeUsers.def()
    }
}

impl Related<super::mfa_recovery_codes::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MfaRecoveryCodes.def()
    }
}

impl Related<super::one_time_tokens::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::OneTimeTokens.def()
    }
}

impl Related<super::user_identities::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::UserIdentities.def()
    }
}

impl Related<super::user_mfa::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::UserMfa.def()
    }
}

/// Users and groups are many-to-many, through `group_members`.
impl Related<super::groups::Entity> for Entity {
    fn to() -> RelationDef {
        super::group_members::Relation::Group.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::group_members::Relation::User.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}
