use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "access_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub requester_id: String,
    pub project_id: String,
    pub role_id: String,
    /// JSON array of namespace names (empty unless the role is namespace-scoped).
    pub namespaces: String,
    pub cluster: Option<String>,
    pub duration_secs: i64,
    pub reason: String,
    /// `pending`, `approved`, `denied`, `cancelled`, `expired`, `revoked`.
    pub status: String,
    /// JSON array of `{"user_id","email","comment","at"}`.
    pub approvals: String,
    pub created_at: i64,
    /// A pending request lapses at this time (ms).
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
    pub binding_id: Option<String>,
    pub grant_expires_at: Option<i64>,
    /// Taken without approval (a break-glass role).
    pub break_glass: bool,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::RequesterId",
        to = "super::users::Column::Id"
    )]
    Requester,
    #[sea_orm(
        belongs_to = "super::projects::Entity",
        from = "Column::ProjectId",
        to = "super::projects::Column::Id"
    )]
    Project,
    #[sea_orm(
        belongs_to = "super::roles::Entity",
        from = "Column::RoleId",
        to = "super::roles::Column::Id"
    )]
    Role,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Requester.def()
    }
}

impl Related<super::projects::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Project.def()
    }
}

impl Related<super::roles::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Role.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
