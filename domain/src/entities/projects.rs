use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "projects")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The group whose members approve access requests (`None`: the project's admins).
    pub approver_group_id: Option<String>,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::access_requests::Entity")]
    AccessRequests,
    #[sea_orm(has_many = "super::bindings::Entity")]
    Bindings,
    #[sea_orm(has_many = "super::cluster_shares::Entity")]
    ClusterShares,
    #[sea_orm(has_many = "super::clusters::Entity")]
    Clusters,
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

impl Related<super::cluster_shares::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ClusterShares.def()
    }
}

impl Related<super::clusters::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Clusters.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
