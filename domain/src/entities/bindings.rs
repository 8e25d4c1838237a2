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
    /// When the grant ends (ms); `None`: until removed.
    pub expires_at: Option<i64>,
    /// When Warden ended the grant at its expiry and audited it.
    pub expiry_recorded_at: Option<i64>,
    /// The access request whose approval created the binding.
    pub access_request_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
