use sea_orm::entity::prelude::*;

/// One issued kubeconfig credential (a client certificate), by serial number.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kube_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub serial: String,
    pub user_id: String,
    pub session_type: String,
    pub cluster: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Downloaded without a fresh second factor by someone whose roles only read: the gateway
    /// refuses writes, exec and secrets on it, whatever roles its holder gains later.
    pub read_only: bool,
    /// The API key it was downloaded with: it ends with that key (revoked with it, never past
    /// its expiry).
    pub api_key_id: Option<String>,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::UserId",
        to = "super::users::Column::Id"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
