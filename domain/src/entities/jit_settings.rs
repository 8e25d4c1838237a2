use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jit_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// JSON array of `{"role": NAME, "max_secs": N}`.
    pub required_expiry: String,
    pub request_ttl_secs: i64,
    pub two_approvals_for_write: bool,
    pub webhook_url: Option<String>,
    /// JSON array of `{"role": NAME, "max_secs": N}`: break-glass roles.
    pub break_glass: String,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
