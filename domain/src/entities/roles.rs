use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "roles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub scope: String,
    pub description: String,
    pub builtin: bool,
    /// JSON array of permission names.
    pub permissions: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::access_requests::Entity")]
    AccessRequests,
    #[sea_orm(has_many = "super::bindings::Entity")]
    Bindings,
}

impl Related<super::access_requests::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AccessRequests.def()
    }
}

impl Related<super::bindings::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Bindings.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
