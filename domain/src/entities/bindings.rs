use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bindings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub subject_kind: String,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub role_id: String,
    pub project_id: Option<String>,
    /// JSON array of namespace names (empty unless the role is namespace-scoped).
    pub namespaces: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
